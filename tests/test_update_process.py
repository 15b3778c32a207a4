"""Updates with real processes: the launcher (``panel/update/_boot.py``, what systemd's ExecStart runs) and the
daemon it execs, restarted whenever it exits as ``Restart=always`` does, a real HTTPS release server, real
releases. A release whose health check fails, one that crashes at start, and ``kill -9`` at random instants
of download, install, switch and trial: each time the door is served again, by the old or the new release,
never by half of one, and the events say what happened."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.update import load_state

from .support import ROOT, config_dict, free_port, write_config
from .update_support import (
    CRASHES_AT_START,
    HEALTH_FAILS,
    Release,
    ReleaseServer,
    Vendor,
    make_release,
    release_server,
)

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

LAUNCHER = ROOT / "panel" / "update" / "_boot.py"
TOKEN = "installer-update-token-0123456789"


class Service:
    """What systemd does for panel.service in these tests: run the launcher, and start it again whenever the
    process ends (``Restart=always``), until told to stop."""

    def __init__(self, directory: Path, root: Path, server: ReleaseServer, vendor: Vendor, **update: Any) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.root = root
        self.port = free_port()
        secrets = directory / "secrets.toml"
        secrets.write_text(f'installer_token = "{TOKEN}"\n')
        secrets.chmod(0o600)
        cfg = config_dict(secrets={"file": "secrets.toml"},
                          update={"root": str(root), "keys_dir": str(vendor.keys_dir), "ca_file": str(server.ca),
                                  "commit_after_s": 1, "health_deadline_s": 5, "max_boots": 2, **update})
        cfg["api"] = {"listen": f"127.0.0.1:{self.port}"}
        self.config = write_config(directory, cfg)
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []
        self.starts = 0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.log_path = directory / "service.log"

    def _loop(self) -> None:
        with open(self.log_path, "ab") as log:
            while not self._stop.is_set():
                self.proc = subprocess.Popen(
                    [sys.executable, str(LAUNCHER), "--root", str(self.root), "--", "run", "--config",
                     str(self.config), "--simulate"], stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
                self.starts += 1
                self._started.set()
                self.exits.append(self.proc.wait())

    def start(self) -> Service:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self._thread.join(15)

    def kill9(self) -> None:
        assert self.proc is not None
        with_pid = self.proc.pid
        try:
            os.kill(with_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=5)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.port}{path}", json=body,
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)

    def until(self, what: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 40) -> dict[str, Any]:
        """Poll GET /api/v1/update until ``pred`` holds (connection errors while it restarts are expected)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                r = self.get("/api/v1/update")
                if r.status_code == 200:
                    last = r.json()["update"]
                    if pred(last):
                        return last
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not {what} within {timeout} s; last: {last}\n{self.log()}")

    def events(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.dir / 'state' / 'panel.db'}?mode=ro", uri=True, timeout=5)
        try:
            return [{"id": i, "type": t, **json.loads(d)} for i, t, d in
                    conn.execute("SELECT id, type, data FROM events ORDER BY seq")]
        finally:
            conn.close()

    def relay_energised(self) -> bool:
        return bool(httpx.get(f"http://127.0.0.1:{self.port}/api/v1/sim/pins", timeout=5)
                    .json()["pins"]["relay:main"]["energised"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("releases")
    with release_server(base) as server:
        vendor = Vendor.make(base / "keys")
        releases = {"good": make_release(base, "2.0.0"), "next": make_release(base, "3.0.0"),
                    "unhealthy": make_release(base, "2.1.0", replace=HEALTH_FAILS),
                    "crashing": make_release(base, "2.2.0", replace=CRASHES_AT_START)}
        yield {"server": server, "vendor": vendor, "releases": releases}


@pytest.fixture
def service(tmp_path: Path, world: dict[str, Any]) -> Iterator[Service]:
    svc = Service(tmp_path, tmp_path / "opt", world["server"], world["vendor"]).start()
    yield svc
    svc.stop()


def idle(u: dict[str, Any]) -> bool:
    return bool(u["phase"] == "idle" and u["trial"] is None)


def send(service: Service, world: dict[str, Any], name: str, **over: Any) -> httpx.Response:
    release: Release = world["releases"][name]
    return service.post("/api/v1/update", release.command(world["server"], world["vendor"].key, **over))


def test_an_update_commits_and_the_new_release_serves_the_door(service: Service, world: dict[str, Any]) -> None:
    before = service.until("up", idle)
    factory = before["running"]["version"]
    assert before["running"]["slot"] == "factory"
    r = send(service, world, "good")
    assert r.status_code == 200, r.text
    after = service.until("committed", lambda u: u["running"]["version"] == "2.0.0" and idle(u))
    assert after["running"]["slot"] == "a" and after["active_slot"] == "a"
    assert after["last"]["result"] == "committed"
    assert (service.root / "current").resolve() == (service.root / "slots" / "a").resolve()
    health = service.get("/api/v1/health/details").json()
    assert health["version"] == "2.0.0"
    assert service.post("/api/v1/sim/exit").status_code == 200 and service.relay_energised()
    updates = [(e["type"], e.get("version")) for e in service.events() if e["type"].startswith("update.")]
    assert updates == [("update.started", "2.0.0"), ("update.verified", "2.0.0"), ("update.installed", "2.0.0"),
                       ("update.committed", "2.0.0")]
    committed = next(e for e in service.events() if e["type"] == "update.committed")
    assert committed["from_version"] == factory
    # The old release stopped in order (relays off) and the new one started: a clean stop, exit code 0.
    assert service.exits[:1] == [0]


def test_a_release_that_fails_its_health_check_is_rolled_back_by_itself(service: Service,
                                                                         world: dict[str, Any]) -> None:
    factory = service.until("up", idle)["running"]["version"]
    assert send(service, world, "unhealthy").status_code == 200
    service.until("on trial", lambda u: u["running"]["version"] == "2.1.0", timeout=20)
    back = service.until("rolled back", lambda u: u["running"]["version"] == factory and idle(u)
                         and (u["last"] or {}).get("result") == "rolled_back")
    assert back["running"]["slot"] == "factory"
    rolled = [e for e in service.events() if e["type"] == "update.rolled_back"]
    assert len(rolled) == 1 and rolled[0]["version"] == "2.1.0" and rolled[0]["to_version"] == factory
    assert rolled[0]["reason"].startswith("health check failed: door:"), rolled[0]
    assert 1 in service.exits, "the failed trial exits non-zero so systemd restarts it"
    assert not service.relay_energised()


def test_a_release_that_crashes_at_start_is_rolled_back_by_the_boot_counter(service: Service,
                                                                            world: dict[str, Any]) -> None:
    factory = service.until("up", idle)["running"]["version"]
    assert send(service, world, "crashing").status_code == 200
    back = service.until("rolled back", lambda u: u["running"]["version"] == factory and idle(u)
                         and (u["last"] or {}).get("result") == "rolled_back")
    assert back["running"]["slot"] == "factory"
    rolled = [e for e in service.events() if e["type"] == "update.rolled_back"]
    assert len(rolled) == 1 and rolled[0]["version"] == "2.2.0" and rolled[0]["boots"] == 2
    assert rolled[0]["reason"].startswith("crashed or hung at start 2 times")
    assert service.exits.count(0) == 1 and sum(1 for c in service.exits if c not in (0,)) >= 2, service.exits
    assert "this release crashes at start" in service.log()


def test_kill_9_at_random_instants_of_an_update_never_leaves_the_door_unserved(service: Service,
                                                                               world: dict[str, Any]) -> None:
    seed = int(os.environ.get("UPDATE_KILL_SEED", "20261130"))
    rng = random.Random(seed)
    world["server"].faults.rate_bps = 1_000_000  # a slow link: the download is a window worth hitting
    factory = service.until("up", idle)["running"]["version"]
    known = {factory, "2.0.0", "3.0.0"}
    # The windows, measured once here on this machine: request -> the old process exits (download, verify,
    # install, switch), and request -> committed (plus the restart and the trial).
    t0 = time.monotonic()
    starts = service.starts
    assert send(service, world, "good").status_code == 200
    while service.starts == starts and time.monotonic() - t0 < 30:
        time.sleep(0.005)
    switch_window = time.monotonic() - t0
    service.until("committed", lambda u: u["running"]["version"] == "2.0.0" and idle(u))
    window = time.monotonic() - t0
    seen_ids: set[str] = {e["id"] for e in service.events()}
    outcomes: list[str] = []
    for round_ in range(10):
        state = service.until("settled", idle)
        running = state["running"]["version"]
        target = "next" if running != "3.0.0" else "good"
        first_new = len(service.events())
        r = send(service, world, target, force=True)
        assert r.status_code == 200, r.text
        # Choosing the instant of the power cut (not waiting for anything): even rounds within download,
        # verify, install and switch; odd rounds anywhere up to the commit (restart and trial included).
        at = rng.uniform(0, switch_window if round_ % 2 == 0 else window)
        time.sleep(at)
        service.kill9()
        after = service.until("back and settled", idle, timeout=60)
        version = after["running"]["version"]
        assert version in known, after
        slot = after["running"]["slot"]
        if slot != "factory":
            meta = json.loads((service.root / "slots" / slot / "release.json").read_text())
            assert meta["version"] == version, "a slot runs the release it says it holds"
        assert load_state(service.root)["trial"] is None
        json.loads((service.root / "update-state.json").read_text())  # never torn
        assert not service.relay_energised(), "the relay is off after the kill"
        assert service.post("/api/v1/sim/exit").status_code == 200 and service.relay_energised(), \
            "the door is served"
        events = service.events()
        ids = {e["id"] for e in events}
        assert seen_ids <= ids, "an event was lost"
        seen_ids = ids
        said = [e["type"][7:] + (f"({e['code']}, {e['stage']})" if e["type"] == "update.failed" else "")
                for e in events[first_new:] if e["type"].startswith("update.")]
        # The events end with what happened: committed, rolled back, or failed as interrupted before the switch.
        assert said[0] == "started" and (said[-1] in ("committed", "rolled_back")
                                         or said[-1].startswith("failed(update_interrupted")), said
        if said[-1] in ("committed", "rolled_back"):
            assert "installed" in said
        else:
            assert version == running, "interrupted before the switch: the release that ran runs"
        outcomes.append(f"kill at {at:.2f}s: events {'/'.join(said)} -> running {version}")
    types = [e["type"] for e in service.events() if e["type"].startswith("update.")]
    assert types.count("update.started") == 11
    print(f"\nseed {seed}, switch window {switch_window:.2f} s, commit window {window:.2f} s:\n  "
          + "\n  ".join(outcomes))
    # And the panel still updates cleanly afterwards.
    world["server"].faults.rate_bps = None
    running = service.until("settled", idle)["running"]["version"]
    target = "next" if running != "3.0.0" else "good"
    assert send(service, world, target, force=True).status_code == 200
    service.until("committed", lambda u: u["running"]["version"] == world["releases"][target].version and idle(u))


@pytest.mark.parametrize("stage", ["download", "install", "switch"])
def test_kill_9_at_each_stage_of_an_update(service: Service, world: dict[str, Any], stage: str) -> None:
    """Deterministic companions of the random kills: the process is killed as soon as the update state on disk
    says the stage began (``switch``: the trial is written, before the restart)."""
    world["server"].faults.rate_bps = 2_000_000  # the download lasts long enough to be caught in it
    try:
        factory = service.until("up", idle)["running"]["version"]
        state_file = service.root / "update-state.json"

        def at_stage() -> bool:
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                return False
            if stage == "switch":
                return isinstance(state.get("trial"), dict)
            return bool((state.get("pending") or {}).get("stage") == stage)

        assert send(service, world, "good").status_code == 200
        deadline = time.monotonic() + 30
        while not at_stage():
            assert time.monotonic() < deadline, f"never saw the {stage} stage"
            time.sleep(0.001)
        service.kill9()
        after = service.until("back and settled", idle, timeout=60)
        said = [(e["type"], e.get("code"), e.get("stage")) for e in service.events() if e["type"].startswith("update.")]
        if stage == "switch":
            # The trial was on disk: the next start runs it, and it commits.
            assert after["running"] == {"version": "2.0.0", "slot": "a"}
            assert said[-1][0] == "update.committed"
        else:
            assert after["running"] == {"version": factory, "slot": "factory"}
            assert said[-1] == ("update.failed", "update_interrupted", stage), said
            assert not (service.root / "slots" / "a.new").exists()
        assert not service.relay_energised()
        assert service.post("/api/v1/sim/exit").status_code == 200 and service.relay_energised()
    finally:
        world["server"].faults.rate_bps = None
