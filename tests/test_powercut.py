"""Power cuts at random instants while presses, releases and webhook deliveries are written.

The store lives on tests/lazyfs.py, a FUSE file system that keeps every write in memory until it is fsynced
and, at a cut, throws away whatever was not (what LazyFS does for Jepsen). A kill -9 alone cannot show this:
the OS page cache survives it. Each cycle forks a fresh panel core (tests/powercut_writer.py), kills it at a
random instant, cuts the power under it, and checks the disk as the next boot finds it:

- ``PRAGMA integrity_check`` is ok;
- every event the panel acknowledged (committed, then acted on) is there, and no relay moved without its
  access-log row;
- every webhook the backend received is an event on the disk (nothing was sent before it was durable);
- at the end the outbox resumes and delivers everything, repeating an event only under its own id.

``PANEL_POWERCUT_CUTS`` sets the number of cuts (200 in the suite).
"""

from __future__ import annotations

import base64
import collections
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from .eventually import eventually_sync
from .support import ROOT
from .webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CUTS = int(os.environ.get("PANEL_POWERCUT_CUTS", "200"))
# A cut lands anywhere from the fork (the store opening, recovering, migrating) to well into the writes.
CUT_WITHIN_S = 0.25


class Lines:
    """A child process's stdout, one line at a time, read on a thread so a wait can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.q.put(line.rstrip("\n"))
        self.q.put("")  # EOF

    def next(self, timeout_s: float = 30.0) -> str:
        line = self.q.get(timeout=timeout_s)
        if line == "":
            raise AssertionError("the process ended")
        return line

    def until(self, prefix: str) -> list[str]:
        """Every line before the first one starting with ``prefix`` (which is returned last)."""
        seen = []
        while True:
            line = self.next()
            seen.append(line)
            if line.startswith(prefix):
                return seen


class Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def lazyfs(tmp_path: Path) -> Iterator[tuple[Path, Process]]:
    mount = tmp_path / "disk"
    mount.mkdir()
    fs = Process(["tests.lazyfs", str(mount)], tmp_path / "lazyfs.log")
    try:
        assert fs.lines.next() == "ready", (tmp_path / "lazyfs.log").read_text()
        yield mount, fs
    finally:
        fs.close()
        subprocess.run(["fusermount3", "-u", "-z", str(mount)], capture_output=True, check=False)


@dataclass
class Disk:
    """What the next boot finds on the disk."""

    integrity: str
    events: dict[str, str] = field(default_factory=dict)  # id -> type
    access_rows: int = 0
    unlocked_access_ids: list[str] = field(default_factory=list)


def read_disk(db: Path) -> Disk:
    if not db.exists():
        return Disk("ok")
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "events" not in tables:  # cut before the first migration committed
            return Disk(integrity)
        return Disk(integrity, dict(conn.execute("SELECT id, type FROM events").fetchall()),
                    conn.execute("SELECT count(*) FROM access_log").fetchone()[0],
                    [r[0] for r in conn.execute(
                        "SELECT json_extract(data, '$.access_id') FROM events WHERE type = 'door.unlocked'")])
    finally:
        conn.close()


def test_nothing_acknowledged_is_lost_at_a_power_cut(lazyfs: tuple[Path, Process], tmp_path: Path) -> None:
    mount, fs = lazyfs
    secret = "whsec_" + base64.b64encode(random.Random(7).randbytes(32)).decode()
    state = mount / "state"
    db = state / "panel.db"
    rng = random.Random(20261130)
    acked: dict[str, str] = {}
    relay_moves = 0
    lost_bytes = 0
    cut_before_ready = 0
    with WebhookReceiver([secret]) as receiver:
        writers = Process(["tests.powercut_writer", str(state), receiver.url, secret], tmp_path / "writer.log")
        try:
            for cut in range(CUTS):
                writers.send(f"run {cut}")
                pid = int(writers.lines.until("pid ")[-1].split()[1])
                # the cut's instant: a random time, not a wait for something to happen
                time.sleep(rng.uniform(0, CUT_WITHIN_S))
                os.kill(pid, signal.SIGKILL)
                writers.send(f"reap {pid}")
                said = writers.lines.until(f"reaped {pid}")
                fs.send("cut")
                lost_bytes += int(fs.lines.next().split()[1])
                cut_before_ready += "ready" not in said
                for line in said:
                    kind, *rest = line.split()
                    if kind == "event":
                        acked[rest[0]] = rest[1]
                    elif kind == "relay":
                        relay_moves += 1

                disk = read_disk(db)
                assert disk.integrity == "ok", f"cut {cut}: {disk.integrity}"
                missing = {i: t for i, t in acked.items() if i not in disk.events}
                assert not missing, f"cut {cut}: acknowledged events lost: {missing}"
                assert disk.access_rows >= relay_moves, (
                    f"cut {cut}: the relay moved {relay_moves} times, the access log holds {disk.access_rows}")
                with receiver.lock:
                    sent = {r.id for r in receiver.records if r.verified}
                assert sent <= disk.events.keys(), f"cut {cut}: sent, then lost: {sent - disk.events.keys()}"

            # Power stays on: the outbox resumes and delivers every event the cuts left on the disk.
            writers.send("run -1")
            pid = int(writers.lines.until("pid ")[-1].split()[1])

            def delivered_all() -> tuple[Disk, collections.Counter[str]] | None:
                with receiver.lock:
                    got = collections.Counter(r.id for r in receiver.records if r.verified and r.id)
                disk = read_disk(db)
                return (disk, got) if disk.events.keys() <= got.keys() else None

            final = eventually_sync(delivered_all, timeout=60, what="every event on the disk delivered",
                                    interval=0.1)
            assert final is not None
            disk, got = final
            os.kill(pid, signal.SIGKILL)
            writers.send(f"reap {pid}")
            writers.lines.until(f"reaped {pid}")
        finally:
            writers.close()

    assert got.keys() <= disk.events.keys(), "the backend received events the panel never recorded"
    # A retry repeats an event under its own id; a record written twice would carry one grant under two ids.
    assert len(disk.unlocked_access_ids) == len(set(disk.unlocked_access_ids))
    assert relay_moves > CUTS // 10 and len(acked) > CUTS, "the cuts found too little being written"
    assert lost_bytes > 0 and cut_before_ready > 0, "no cut caught unsynced data or an opening store"
    retries = sum(n - 1 for n in got.values())
    print(f"\npower cuts: {CUTS}, {cut_before_ready} before the panel was ready; {len(acked)} events and "
          f"{relay_moves} relay moves acknowledged, all found; {lost_bytes} unsynced bytes thrown away; "
          f"{len(got)} events delivered, {retries} same-id retries")
