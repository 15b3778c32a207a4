"""The systemd notify protocol and watchdog, against a real AF_UNIX datagram socket standing in for systemd.

The watchdog is fed only while the event loop runs and the relay timers are healthy; the relay
guard thread cuts an energised relay even while the loop is blocked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory

from panel.door import GUARD_MARGIN_S, Relay
from panel.platform import LoopClock, Notifier, RelayConfig, TimerHandle, feed_watchdog

from .eventually import eventually, eventually_sync
from .support import PanelProcess, config_dict, start_panel

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() at reception
    text: str


class FakeSystemd:
    """A bound notify socket (abstract namespace, so tmp_path length does not matter) and its messages."""

    def __init__(self) -> None:
        self.name = f"panel-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.05)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return "@" + self.name

    def env(self, watchdog_usec: int) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, "WATCHDOG_USEC": str(watchdog_usec)}

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(Message(time.monotonic(), data.decode()))

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        with self._lock:
            return [m.at for m in self.messages if "WATCHDOG=1" in m.text.split("\n") and since <= m.at <= until]

    def texts(self) -> list[str]:
        with self._lock:
            return [m.text for m in self.messages]

    def wait_for(self, pred: Callable[[str], bool], timeout: float) -> Message:
        def match() -> Message | None:
            with self._lock:
                return next((m for m in self.messages if pred(m.text)), None)

        return eventually_sync(match, timeout, "a matching notify message", detail=lambda: f"got {self.texts()!r}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    s = FakeSystemd()
    yield s
    s.close()


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# -- the feeder on its own -------------------------------------------------------------------------


async def test_feeder_pings_only_while_the_health_check_passes(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.env(200_000))  # ping every 0.1 s
    assert notifier.watchdog_s == pytest.approx(0.2)
    health = {"ok": True}
    task = asyncio.create_task(feed_watchdog(notifier, lambda: health["ok"]))
    try:
        await eventually(lambda: len(systemd.pings()) >= 3, 3, "three pings")

        health["ok"] = False
        await asyncio.sleep(0.15)  # at most one ping was already on its way
        t0 = time.monotonic()
        await asyncio.sleep(0.6)  # six ping periods in which none may come
        assert systemd.pings(since=t0) == [], "the feeder pinged while the health check failed"
        assert not task.done()
        assert sum(t.startswith("STATUS=unhealthy") for t in systemd.texts()) == 1

        health["ok"] = True
        t1 = time.monotonic()
        await eventually(lambda: len(systemd.pings(since=t1)) >= 2, 3, "pings resuming once the check passed again")
        assert systemd.texts().count("WATCHDOG=1\nSTATUS=running") == 1
    finally:
        task.cancel()
        notifier.close()


async def test_a_health_check_that_raises_counts_as_unhealthy(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.env(200_000))

    def broken() -> bool:
        raise RuntimeError("relay state unreadable")

    task = asyncio.create_task(feed_watchdog(notifier, broken))
    try:
        await asyncio.sleep(0.5)  # five ping periods in which none may come
        assert systemd.pings() == []
        assert not task.done(), "the feeder must keep running (and keep not pinging), not crash"
    finally:
        task.cancel()
        notifier.close()


async def test_no_watchdog_configured_means_no_pings_and_no_task() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    await asyncio.wait_for(feed_watchdog(notifier, lambda: True), 1)  # returns at once


def test_watchdog_pid_of_another_process_is_ignored(systemd: FakeSystemd) -> None:
    env = {**systemd.env(1_000_000), "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(env).watchdog_s is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(env).watchdog_s == pytest.approx(1.0)


# -- the relay's part of the health check ------------------------------------------------------------


class LostTimersClock(LoopClock):
    """Real time, but loop timers never fire: what a wedged timer wheel looks like to the relay."""

    class _Never:
        def cancel(self) -> None:
            pass

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return self._Never()


def _relay(clock: LoopClock, max_on_s: float = 1.0) -> tuple[Relay, OutputDevice]:
    factory = MockFactory()
    dev = OutputDevice("GPIO26", initial_value=False, pin_factory=factory)
    cfg = RelayConfig(id="main", pin=26, hold_s=0.5, max_on_s=max_on_s)
    return Relay(cfg, dev, clock, lambda *a: None), dev


async def test_a_late_relay_timer_stops_the_pings_and_the_guard_cuts_the_relay(systemd: FakeSystemd) -> None:
    relay, dev = _relay(LostTimersClock())
    notifier = Notifier(systemd.env(200_000))
    task = asyncio.create_task(feed_watchdog(notifier, relay.healthy))
    try:
        energised_at = time.monotonic()
        relay.energise(0.5)
        assert dev.value == 1 and relay.healthy()
        await eventually(lambda: len(systemd.pings()) >= 2, 3, "two pings")
        assert dev.value == 1

        # The loop timer never fires. The guard thread cuts the coil GUARD_MARGIN_S after the deadline...
        await eventually(lambda: dev.value == 0, 3, what="the guard thread cutting the relay")
        cut_after = time.monotonic() - energised_at
        assert dev.value == 0, "the guard thread did not cut the relay"
        assert cut_after >= 0.5 + GUARD_MARGIN_S - 0.02
        assert relay.guard.tripped == 1
        # ...and the feeder stops: the relay's timer is late, so the daemon is not healthy.
        assert not relay.healthy()
        await asyncio.sleep(0.15)  # at most one ping was already on its way
        t0 = time.monotonic()
        await asyncio.sleep(0.5)  # five ping periods in which none may come
        assert systemd.pings(since=t0) == []
    finally:
        task.cancel()
        notifier.close()
        relay.close()


async def test_a_dead_guard_thread_stops_the_pings(systemd: FakeSystemd) -> None:
    relay, _dev = _relay(LoopClock())
    notifier = Notifier(systemd.env(200_000))
    task = asyncio.create_task(feed_watchdog(notifier, relay.healthy))
    try:
        await eventually(lambda: len(systemd.pings()) >= 2, 3, "two pings")
        relay.guard.stop()
        assert not relay.guard.alive() and not relay.healthy()
        await asyncio.sleep(0.15)  # at most one ping was already on its way
        t0 = time.monotonic()
        await asyncio.sleep(0.5)  # five ping periods in which none may come
        assert systemd.pings(since=t0) == []
    finally:
        task.cancel()
        notifier.close()
        relay.close()


# -- the daemon as systemd runs it -------------------------------------------------------------------

WATCHDOG_USEC = 400_000  # pings every 0.2 s
TOKEN = "installer-token-0123456789"  # reads /api/v1/health/details
INTERVAL_S = WATCHDOG_USEC / 2e6


@pytest.mark.slow
def test_daemon_notifies_ready_pings_stops_pinging_while_blocked_and_says_stopping(
        tmp_path: Path, systemd: FakeSystemd) -> None:
    panel = start_panel(tmp_path, env={**systemd.env(WATCHDOG_USEC), "PANEL_SECRET_INSTALLER_TOKEN": TOKEN})
    try:
        ready = systemd.wait_for(lambda t: "READY=1" in t.split("\n"), timeout=10)
        assert f"MAINPID={panel.proc.pid}" in ready.text.split("\n")

        eventually_sync(lambda: len(systemd.pings(since=ready.at)) >= 3, 5, "three pings after READY")
        before = systemd.pings(since=ready.at)
        gaps = sorted(_gaps(before))
        median = gaps[len(gaps) // 2]
        assert INTERVAL_S * 0.5 <= median <= INTERVAL_S * 2, f"pings every {median:.3f} s, expected ~{INTERVAL_S}"

        r = panel.api("POST", "/api/v1/sim/stall", json={"seconds": 1.5})
        t_done = time.monotonic()
        assert r.status_code == 200, r.text
        # The panel reports the stall on CLOCK_MONOTONIC, which this process shares.
        blocked_from, blocked_until = r.json()["blocked_from"], r.json()["blocked_until"]
        assert blocked_until - blocked_from >= 1.5 and blocked_until <= t_done

        # 0.2 s of slack at the start: a ping sent just before the stall may be read a little late.
        blocked = systemd.pings(since=blocked_from + 0.2, until=blocked_until)
        assert blocked == [], f"pings arrived while the event loop was blocked: {blocked}"

        eventually_sync(lambda: len(systemd.pings(since=t_done)) >= 2, 5, "pings resuming after the loop unblocked")
        longest = max(_gaps(systemd.pings(since=ready.at)))
        assert longest >= 1.3, f"the longest gap between pings was only {longest:.2f} s"
        assert panel.health_details()["checks"]["relays"] is True

        assert "STOPPING=1" not in systemd.texts()
        assert panel.stop(signal.SIGTERM) == 0
        systemd.wait_for(lambda t: t == "STOPPING=1", timeout=1)
    finally:
        panel.stop()


def _log_records(panel: PanelProcess) -> list[dict[str, object]]:
    out = []
    for line in panel.log().splitlines():
        m = re.match(r"^<\d>(\{.*\})$", line)
        if m:
            out.append(json.loads(m.group(1)))
    return out


def _ts(record: dict[str, object]) -> float:
    return datetime.strptime(str(record["ts"]), "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


@pytest.mark.slow
def test_guard_thread_cuts_the_relay_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    cfg = config_dict()
    # The guard cuts 1.5 + 0.25 s after the release; the 2.5 s stall starts well before that.
    cfg["door"]["relays"] = [{"id": "main", "pin": 26, "hold_s": 1.5, "max_on_s": 1.5}]
    panel = start_panel(tmp_path, cfg, env={"PANEL_SECRET_INSTALLER_TOKEN": TOKEN})
    try:
        r = panel.api("POST", "/api/v1/sim/exit")
        assert r.status_code == 200, r.text
        assert r.json()["pins"]["relay:main"] == {"pin": "GPIO26", "level": 1, "energised": True}

        r = panel.api("POST", "/api/v1/sim/stall", json={"seconds": 2.5})
        assert r.status_code == 200, r.text
        blocked_from, blocked_until = r.json()["blocked_from"], r.json()["blocked_until"]
        assert blocked_until - blocked_from >= 2.5
        # Read inside the stalled handler, before the loop could run the relay's own timer: only the
        # guard thread can have switched the pin off.
        assert r.json()["pins"]["relay:main"]["level"] == 0

        after = panel.api("GET", "/api/v1/sim/pins").json()["pins"]["relay:main"]
        assert after["level"] == 0 and after["energised"] is False

        cut = [rec for rec in _log_records(panel) if "cut by the guard thread" in str(rec["msg"])]
        assert len(cut) == 1, panel.log()
        assert cut[0]["level"] == "critical" and cut[0].get("thread") == "relay-guard-main"
        # Log times are wall-clock; the stall's are CLOCK_MONOTONIC, which differ by one offset machine-wide.
        cut_at = _ts(cut[0]) - (time.time() - time.monotonic())
        assert blocked_from - 0.01 < cut_at < blocked_until, "the guard did not act while the loop was blocked"

        # Once the loop runs again, the release ends in the journal as usual.
        locked = eventually_sync(lambda: [rec for rec in _log_records(panel) if rec.get("event") == "door.locked"], 5,
                                 "door.locked in the log", interval=0.05)
        assert locked[0]["data"]["relay"] == "main"  # type: ignore[index]
        assert panel.health_details()["checks"]["relays"] is True
    finally:
        assert panel.stop() == 0
