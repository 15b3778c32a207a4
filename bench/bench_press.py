"""Button press -> ``call.created`` received by the backend: median and p99, next to a bare HTTP POST.

The whole panel runs in this process (``Panel`` with gpiozero's MockFactory, its store on disk, the
outbox and the call state machine); the backend is the loopback test receiver in its own process,
verifying every signature with ``standardwebhooks``. A press is the mock pin driven to its active
level; the latency runs from just before that to the moment the receiver read the request
(``time.monotonic()`` is the same clock in both processes on Linux). Between presses the call is
ended and every event delivered, so each press starts from an idle panel.

The baseline, in the same run and to the same receiver: a bare signed POST from a pooled httpx client
(the same one-way measure: before the call -> receiver read it), and one ``synchronous=FULL`` commit
(the press is journalled durably before it is sent).

    .venv/bin/python bench/bench_press.py [--presses 200] [--debounce-ms N]

``--debounce-ms`` is the button's debounce; by default the shipped default for call buttons (10 ms):
a press counts only after the level has been steady that long, so it adds exactly that. Pass 0 to
measure the panel alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from panel.auth import Secrets  # noqa: E402
from panel.daemon import Panel  # noqa: E402
from panel.link import Sender, body_of  # noqa: E402
from panel.platform import ButtonConfig, EventRow, parse_config  # noqa: E402
from tests.eventually import eventually  # noqa: E402
from tests.support import config_dict  # noqa: E402
from tests.webhook_receiver import ReceiverProcess  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


async def presses(rc: ReceiverProcess, secret: str, n: int, debounce_ms: int, work: Path) -> tuple[list[float], int]:
    data = config_dict(webhooks={"url": rc.url, "timeout_s": 5, "max_backoff_s": 1},
                       storage={"dir": str(work / "state")}, log={"level": "warning", "format": "text"})
    for b in data["buttons"]:
        b["debounce_ms"] = debounce_ms
    data["api"] = {"listen": "127.0.0.1:0"}
    cfg = parse_config(data)
    panel = Panel(cfg, Secrets(webhook_secrets=[secret]), simulate=True)
    await panel.start()
    latencies: list[float] = []
    acked = 0
    try:
        await rc.wait(lambda r: any(x["type"] == "panel.online" for x in r), timeout=10)
        button = cfg.buttons[0]
        pin = panel.hw.factory.pin(f"GPIO{button.pin}")
        press, release = (pin.drive_high, pin.drive_low) if button.active == "high" else (pin.drive_low, pin.drive_high)
        for _ in range(n):
            assert panel.outbox is not None
            await eventually(lambda: not panel.outbox.backlog, 30, what="outbox drained", interval=0.001)
            await asyncio.sleep(0.005)
            before = len(rc.records)
            t0 = time.monotonic()
            press()
            await rc.wait(lambda r, before=before: any(x["type"] == "call.created" for x in r[before:]), timeout=10)
            got = next(x for x in rc.records[before:] if x["type"] == "call.created")
            assert got["verified"] and got["status"] == 200
            latencies.append(got["at"] - t0)
            release()
            await asyncio.sleep(debounce_ms / 1000 + 0.01)  # the release must settle, or the next press is a bounce
            call = panel.calls.current
            assert call is not None and call.guid == got["guid"]
            # the 2xx made it ring; wait for that, then hang up so the next press starts a new call
            for _ in range(2000):
                if call.state != "calling":
                    break
                await asyncio.sleep(0.001)
            acked += call.state == "ringing"
            await panel.calls.end(call.guid, "bench")
    finally:
        await panel.stop("bench done")
    return latencies, acked


async def bare_posts(rc: ReceiverProcess, secret: str, n: int) -> list[float]:
    sender = Sender(rc.url, [secret], timeout_s=5, panel_id="bench")
    sample = EventRow(0, "", "call.created", "k", time.time(), "b", 0.0,
                      {"guid": "c1a9e2d4-7b3f-4e21-8f6a-0d5c3b2a1e98", "status": "calling",
                       "panel": {"id": "test-panel", "name": "Test entrance"}}, None)
    body = body_of(sample)
    out: list[float] = []
    async with httpx.AsyncClient(timeout=5) as client:
        for i in range(n + 5):
            await asyncio.sleep(0.005)
            before = len(rc.records)
            msg = f"bare-{i}-{time.time()}"
            headers = sender.headers(msg, body)
            t0 = time.monotonic()
            r = await client.post(rc.url, content=body, headers=headers)
            assert r.status_code == 200
            await rc.wait(lambda recs, before=before: len(recs) > before, timeout=5)
            if i >= 5:  # the first few open the connection
                out.append(rc.records[before]["at"] - t0)
    await sender.aclose()
    return out


def commits(n: int, work: Path) -> list[float]:
    conn = sqlite3.connect(work / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t(x TEXT)")
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 400,))
        conn.execute("COMMIT")
        out.append(time.monotonic() - t0)
    conn.close()
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presses", type=int, default=200)
    p.add_argument("--debounce-ms", type=int, default=ButtonConfig.model_fields["debounce_ms"].default)
    args = p.parse_args()
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    rc = await ReceiverProcess([secret]).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-press-") as tmp:
            work = Path(tmp)
            bare = await bare_posts(rc, secret, args.presses)
            floor = await asyncio.to_thread(commits, args.presses, work)
            lat, acked = await presses(rc, secret, args.presses, args.debounce_ms, work)
    finally:
        await rc.stop()

    def row(name: str, v: list[float]) -> str:
        return (f"| {name:<46} | {len(v):>5} | {statistics.median(v) * 1000:>9.2f} | {pct(v, 99) * 1000:>8.2f} | "
                f"{statistics.median(v) / statistics.median(bare):>12.1f}x |")

    print(f"\nButton press -> call.created received (debounce_ms={args.debounce_ms}); "
          f"{acked}/{len(lat)} calls went calling -> ringing on the 2xx")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    print(f"| {'what':<46} | {'n':>5} | {'median ms':>9} | {'p99 ms':>8} | {'median/bare':>13} |")
    print(f"|{'-' * 48}|{'-' * 7}|{'-' * 11}|{'-' * 10}|{'-' * 15}|")
    print(row("baseline: bare signed POST, one way", bare))
    print(row("floor: one synchronous=FULL commit", floor))
    print(row("press -> call.created at the receiver", lat))
    print("\ntarget (issue 3): median < 20 ms, p99 < 50 ms")


if __name__ == "__main__":
    asyncio.run(main())
