"""The door never depends on the API's resources: a connection flood from one address (issue 9).

A real `panel run --simulate` process with a Raspberry Pi's 1,024 file descriptors (soft and hard, so
it cannot raise them), a real webhook receiver, and 2,000 connections from 127.0.0.2, idle, half-sent
or not HTTP at all, held (and re-opened a second after the panel closes one) by a process of their own.
Meanwhile, from 127.0.0.1: presses produce ``call.created`` quickly, the exit button releases the door,
authenticated requests on new connections are answered within 2 s, and the flood makes the panel log
less than 1 MB a minute. Before the fix (checked against main), the flood took every descriptor: the
first press under it got no answer within 2 s while asyncio logged every failed accept (42-55 MB of
log in the few seconds the test lasted).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.platform import ButtonConfig

from .support import ROOT, PanelProcess, config_dict, free_port, write_config
from .webhook_receiver import ReceiverProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FLOOD = 2000
PRESSES = 51  # p99 of 51 is the second slowest: one hiccup of a shared machine does not decide it alone
PI_NOFILE = 1024  # the default soft limit; the flood alone is twice that
BASELINE = 10  # presses without the flood, to see what this machine can do right now
QUIET_S = 2.0  # seconds of flood with nothing else going on, to measure what it makes the panel log


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(0.99 * len(s)) - 1))]


def created_after(before: int) -> Any:
    return lambda recs: any(r["type"] == "call.created" for r in recs[before:])


async def presses(pins: httpx.AsyncClient, receiver: ReceiverProcess, url: str, auth: dict[str, str], n: int,
                  answered: list[float]) -> list[float]:
    """Press -> ``call.created`` at the receiver, ``n`` times; each call is ended by an authenticated
    request on a connection of its own (its time goes to ``answered``)."""
    latencies: list[float] = []
    for _ in range(n):
        before = len(receiver.records)
        t0 = time.monotonic()
        r = await pins.post("/api/v1/sim/buttons/b303/press")
        assert r.status_code == 200, r.text
        await receiver.wait(created_after(before), 5)
        created = next(x for x in receiver.records[before:] if x["type"] == "call.created")
        assert created["verified"]
        latencies.append(created["at"] - t0)
        assert (await pins.post("/api/v1/sim/buttons/b303/release")).status_code == 200
        # Opened now (during the flood, if any) and answered within 2 s, or the client's timeout raises.
        t0 = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=2.0, headers=auth) as api:
            r = await api.post("/api/v1/calls/end", json={"call_guid": created["guid"]})
        answered.append(time.monotonic() - t0)
        assert r.status_code == 200, r.text
    return latencies


@dataclass
class FloodRun:
    baseline: list[float]  # press -> call.created without the flood, same panel, same machine, just before
    latencies: list[float]  # ...and during it
    answered: list[float]  # authenticated requests on new connections during the flood
    logged: int  # bytes the panel logged during QUIET_S of flood alone
    window: float
    exit_events: list[str]
    relay_on: bool
    counts: dict[str, int]  # the flood client's
    log: str = field(repr=False)


async def run_flood(work: Path, connections: int = FLOOD, n: int = PRESSES, quiet_s: float = QUIET_S,
                    baseline: int = BASELINE) -> FloodRun:
    """A panel with a Pi's descriptors, ``n`` presses, then ``connections`` from 127.0.0.2 and ``n`` presses
    and an exit-button press during them (also bench/bench_flood.py)."""
    hook_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    token = secrets.token_urlsafe(32)
    receiver = await ReceiverProcess([hook_secret]).start()
    port = free_port()
    cfg = config_dict(webhooks={"url": receiver.url, "timeout_s": 5, "max_backoff_s": 1})
    for button in cfg["buttons"]:
        button["debounce_ms"] = ButtonConfig.model_fields["debounce_ms"].default  # as shipped
    # The connection defaults, nothing tuned (the test runs on main too); the test's own client ends a
    # call per press, faster than the default rate limit for changing requests allows.
    cfg["api"] = {"listen": f"127.0.0.1:{port}", "mutations_per_minute": 100_000}
    panel = PanelProcess(write_config(work, cfg), port, {"PANEL_SECRET_WEBHOOK_SECRETS": hook_secret,
                                                        "PANEL_SECRET_INSTALLER_TOKEN": token},
                         nofile=PI_NOFILE)
    flood: asyncio.subprocess.Process | None = None
    auth = {"Authorization": f"Bearer {token}"}
    # The presses stand in for the GPIO pins: they go over a connection opened before the flood, so what
    # they measure is the press, not the queue in front of the API's accept.
    pins = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0)
    try:
        await asyncio.to_thread(panel.start)
        await receiver.wait(lambda recs: any(r["type"] == "panel.online" for r in recs), 20)
        assert (await pins.get("/api/v1/sim/state")).status_code == 200
        before = await presses(pins, receiver, panel.url, auth, baseline, [])
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.flood_client", "--port", str(port), "--source", "127.0.0.2",
            "--connections", str(connections), "--reconnect-s", "1", cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert flood.stdout is not None and flood.stdin is not None
        ready = await asyncio.wait_for(flood.stdout.readline(), 60)
        assert ready.startswith(b"READY"), ready
        assert panel.log_path is not None
        # The flood alone for a while: what it makes the panel log (the presses below log their calls).
        log_from, t_from = panel.log_path.stat().st_size, time.monotonic()
        await asyncio.sleep(quiet_s)  # the stimulus lasting, not a wait for something
        window = time.monotonic() - t_from
        logged = panel.log_path.stat().st_size - log_from

        answered: list[float] = []
        latencies = await presses(pins, receiver, panel.url, auth, n, answered)
        r = await pins.post("/api/v1/sim/exit")
        assert r.status_code == 200, r.text

        flood.stdin.close()
        counts = json.loads(await asyncio.wait_for(flood.stdout.readline(), 20))
        await flood.wait()
        flood = None
    finally:
        if flood is not None:
            flood.kill()
            await flood.wait()
        await pins.aclose()
        await asyncio.to_thread(panel.stop)
        await receiver.stop()
    return FloodRun(before, latencies, answered, logged, window, [e["type"] for e in r.json()["events"]],
                    r.json()["pins"]["relay:main"]["energised"], counts, panel.log())


async def test_a_flood_of_2000_connections_from_one_address_leaves_the_door_working(tmp_path: Path) -> None:
    run = await run_flood(tmp_path)
    # The 100 ms, on a machine that can keep it without a flood; a machine already slower than
    # half that (other work on its cores) is held to twice its own figure without the flood instead.
    limit = max(0.100, 2 * p99(run.baseline))
    figures = (f"press->call.created p99 {p99(run.latencies) * 1000:.1f} ms (median "
               f"{median(run.latencies) * 1000:.1f} ms; without the flood p99 {p99(run.baseline) * 1000:.1f}, "
               f"median {median(run.baseline) * 1000:.1f} ms), API max {max(run.answered) * 1000:.0f} ms, flood "
               f"alone logged {run.logged} B in {run.window:.1f} s, flood client {run.counts}")
    print(figures)
    assert run.counts["first_round"] == FLOOD and run.counts["attempts"] >= FLOOD, figures
    assert p99(run.latencies) < limit, figures
    assert max(run.answered) < 2.0, figures
    assert "door.unlocked" in run.exit_events and run.relay_on, "the exit button released the door"
    assert run.logged / run.window * 60 < 1_000_000, figures
    refusals = [json.loads(line[3:]) for line in run.log.splitlines() if "API connections refused" in line]
    assert refusals and refusals[0]["client"] == "127.0.0.2", "the per-client limit is what held the flood off"
