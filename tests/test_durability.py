"""kill -9 at random instants while events are being written: nothing acknowledged is lost, nothing is corrupt.

A record is acknowledged when the simulation request that produced it returned 200: the response
lists the events the journal committed while the request ran. A SIGKILL keeps the OS page cache, so power
cuts are tests/test_powercut.py's, on a file system that throws away what was not fsynced.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from .eventually import eventually_sync
from .support import PanelProcess, start_panel

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

KILLS = int(os.environ.get("PANEL_DURABILITY_KILLS", "20"))
# On a loaded machine each restart costs more; stop early past the budget, but never below MIN_KILLS.
BUDGET_S = float(os.environ.get("PANEL_DURABILITY_BUDGET_S", "35"))
MIN_KILLS = min(KILLS, 10)


@dataclass
class Acks:
    events: dict[str, str] = field(default_factory=dict)  # acknowledged event id -> type
    requests_ok: int = 0
    requests_cut: int = 0  # requests in flight when the process died
    unexpected: list[str] = field(default_factory=list)  # non-200 answers (asserted in the main thread)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Writers:
    """Client threads driving writes through the simulation API until told to stop."""

    SCRIPTS: ClassVar[dict[str, list[str]]] = {
        "exit": ["/api/v1/sim/exit"],  # door.unlocked + access_log row in one transaction
        "buttons": ["/api/v1/sim/buttons/b303/press", "/api/v1/sim/buttons/b303/release",
                    "/api/v1/sim/buttons/b304/press", "/api/v1/sim/buttons/b304/release"],
        "door": ["/api/v1/sim/door/open", "/api/v1/sim/door/close"],
    }

    def __init__(self, url: str, acks: Acks) -> None:
        self.url = url
        self.acks = acks
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(paths,), daemon=True)
                        for paths in self.SCRIPTS.values()]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _run(self, paths: list[str]) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            i = 0
            while not self.stop.is_set():
                try:
                    r = client.post(paths[i % len(paths)])
                except httpx.HTTPError:
                    with self.acks.lock:
                        self.acks.requests_cut += 1
                    return  # the process is gone
                i += 1
                if r.status_code != 200:
                    with self.acks.lock:
                        self.acks.unexpected.append(f"{r.request.url.path}: {r.status_code} {r.text[:200]}")
                    continue
                with self.acks.lock:
                    self.acks.requests_ok += 1
                    for ev in r.json()["events"]:
                        self.acks.events[ev["id"]] = ev["type"]


def check_store(db: Path, acks: Acks) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        events = {id_: (type_, json.loads(data)) for id_, type_, data in
                  conn.execute("SELECT id, type, data FROM events")}
        with acks.lock:
            acked = dict(acks.events)
        missing = {i: t for i, t in acked.items() if i not in events}
        assert not missing, f"{len(missing)} acknowledged event(s) lost: {list(missing.items())[:5]}"
        for i, t in acked.items():
            assert events[i][0] == t

        access = conn.execute("SELECT id, event_id FROM access_log").fetchall()
        unlocked = {i: d for i, (t, d) in events.items() if t == "door.unlocked"}
        for access_id, event_id in access:
            assert event_id in unlocked, f"access_log row {access_id} names event {event_id}, which is missing"
            assert unlocked[event_id]["access_id"] == access_id
        # Same transaction: every recorded release has its access-log row, and no row is doubled.
        assert sorted(d["access_id"] for d in unlocked.values()) == sorted(a for a, _ in access)
        seqs = [s for (s,) in conn.execute("SELECT seq FROM events ORDER BY seq")]
        assert len(seqs) == len(set(seqs)) == len(events)
        return {"events": len(events), "access_log": len(access)}
    finally:
        conn.close()


def test_every_acknowledged_record_survives_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("PANEL_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    acks = Acks()
    panel = start_panel(tmp_path)
    db = tmp_path / "state" / "panel.db"
    started = time.monotonic()
    kills = 0
    try:
        for round_ in range(KILLS):
            if kills >= MIN_KILLS and time.monotonic() - started > BUDGET_S:
                break
            with Writers(panel.url, acks):
                # Writes are flowing once the first one of this round is acknowledged; kill at a
                # random instant after that.
                ok_before = acks.requests_ok
                eventually_sync(lambda ok_before=ok_before: acks.requests_ok != ok_before, 10, "a write acknowledged",
                                interval=0.005)
                time.sleep(rng.uniform(0, 0.3))  # the stimulus: a random instant for the kill
                panel.kill()
            kills += 1
            assert not acks.unexpected, acks.unexpected
            # Restart on the same config and port; the daemon's own open runs quick_check and WAL recovery.
            panel = PanelProcess(panel.config_path, panel.port).start()
            try:
                counts = check_store(db, acks)
            except AssertionError as e:
                raise AssertionError(f"round {round_} (PANEL_TEST_SEED={seed}): {e}") from None
        assert panel.api("GET", "/api/v1/health").status_code == 200
    finally:
        panel.stop()
    types = set(acks.events.values())
    # The test must have exercised something: many acknowledged writes, releases among them, and
    # requests cut off by the kills.
    assert kills >= MIN_KILLS
    assert acks.requests_ok >= kills and len(acks.events) >= kills, (acks.requests_ok, len(acks.events), seed)
    assert "door.unlocked" in types, types
    assert acks.requests_cut >= kills, (acks.requests_cut, seed)
    assert counts["access_log"] >= 1
    print(f"seed={seed} kills={kills} acknowledged={len(acks.events)} requests_ok={acks.requests_ok} "
          f"cut={acks.requests_cut} stored={counts}")
