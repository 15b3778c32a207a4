"""Outbox drain: events per second delivered from a backlog, next to baselines measured in the same run.

A backlog of N events (default 10,000) is written to a fresh store, then the real Outbox drains it to
the loopback test receiver, which runs in its own process and verifies every signature with the
``standardwebhooks`` library. Two shapes of backlog:

- one key (e.g. a long outage of door events): strictly one delivery at a time, each marked on disk
  (one ``synchronous=FULL`` commit) before the next of that key goes;
- many keys (N/10 calls of 10 events): up to ``max_in_flight`` (4) deliveries at once.

Baselines, same receiver, same body size, same signing: N plain httpx POSTs from one client, one at a
time and 4 at a time, without the store; and the floor of one durable commit per event.

    .venv/bin/python bench/bench_outbox.py [--events 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from panel.events import ButtonPressed, DoorClosed  # noqa: E402
from panel.link import Outbox, Sender, body_of  # noqa: E402
from panel.platform import EventRow, Journal, LoopClock, PanelInfo, Store  # noqa: E402
from tests.eventually import eventually  # noqa: E402
from tests.webhook_receiver import ReceiverProcess  # noqa: E402


async def fill(store: Store, n: int, keys: int) -> None:
    journal = Journal(store, LoopClock(), PanelInfo(id="bench", name="Bench entrance"))
    for i in range(n):
        if keys == 1:
            journal.record(DoorClosed(open_s=float(i)), key="door")
        else:
            guid = f"c1a9e2d4-7b3f-4e21-8f6a-{i % keys:012d}"
            journal.record(ButtonPressed(button="b303", unit_id="303", unit_label="303", outcome="busy",
                                         call_guid=guid), key=guid)
        if i % 500 == 499:
            await journal.flush()
    await journal.flush()


async def drain(rc: ReceiverProcess, secret: str, n: int, keys: int, workdir: Path) -> float:
    store = Store(workdir / f"outbox-{keys}.db")
    await fill(store, n, keys)
    journal = Journal(store, LoopClock(), PanelInfo(id="bench", name="Bench entrance"))
    sender = Sender(rc.url, [secret], timeout_s=10, panel_id="bench")
    outbox = Outbox(store, journal, sender, max_events=10 * n, max_backoff_s=1, max_in_flight=4)
    before = len(rc.records)
    t0 = time.perf_counter()
    task = asyncio.create_task(outbox.run())
    await rc.wait(lambda r: len(r) - before >= n, timeout=600)
    await eventually(lambda: not outbox.backlog, 600, what="outbox drained", interval=0.001)
    elapsed = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sender.aclose()
    undelivered = store.read_sync(lambda c: c.execute("SELECT count(*) FROM events WHERE delivered IS NULL").fetchone()[0])
    store.close()
    got = rc.records[before:]
    assert undelivered == 0, f"{undelivered} events left undelivered"
    assert all(r["verified"] and r["status"] == 200 for r in got), "a delivery failed verification"
    assert len({r["id"] for r in got}) == n, "lost or duplicated events"
    return elapsed


async def plain_posts(rc: ReceiverProcess, secret: str, n: int, concurrency: int) -> float:
    sender = Sender(rc.url, [secret], timeout_s=10, panel_id="bench")  # only for its headers()
    sample = EventRow(0, "", "door.closed", "door", time.time(), "b", 0.0,
                      {"open_s": 1.0, "panel": {"id": "bench", "name": "Bench entrance"}}, None)
    bodies = [body_of(sample) for _ in range(n)]
    before = len(rc.records)
    async with httpx.AsyncClient(timeout=10) as client:
        queue = list(range(n))
        t0 = time.perf_counter()

        async def worker() -> None:
            while queue:
                i = queue.pop()
                msg_id = f"baseline-{i}-{t0}"
                r = await client.post(rc.url, content=bodies[i], headers=sender.headers(msg_id, bodies[i]))
                assert r.status_code == 200, r.status_code

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    await sender.aclose()
    await rc.wait(lambda r: len(r) - before >= n, timeout=60)
    return elapsed


def commit_floor(n: int, workdir: Path) -> float:
    """n single-row UPDATE transactions with synchronous=FULL in WAL mode: the outbox's per-event mark."""
    conn = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t(seq INTEGER PRIMARY KEY, delivered REAL)")
    conn.executemany("INSERT INTO t(seq) VALUES (?)", [(i,) for i in range(n)])
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE t SET delivered=? WHERE seq=?", (time.time(), i))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=10_000)
    args = p.parse_args()
    n = args.events
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    rc = await ReceiverProcess([secret]).start()
    rows: list[tuple[str, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
            work = Path(tmp)
            await plain_posts(rc, secret, min(n, 500), 1)  # warm-up
            rows.append(("baseline: plain POSTs, 1 at a time", await plain_posts(rc, secret, n, 1)))
            rows.append(("baseline: plain POSTs, 4 at a time", await plain_posts(rc, secret, n, 4)))
            rows.append(("floor: one FULL commit per event", await asyncio.to_thread(commit_floor, n, work)))
            rows.append(("outbox: 1 key (serial, mark per event)", await drain(rc, secret, n, 1, work)))
            rows.append((f"outbox: {n // 10} keys, 4 in flight", await drain(rc, secret, n, n // 10, work)))
    finally:
        await rc.stop()

    base1 = rows[0][1]
    base4 = rows[1][1]
    print(f"\nOutbox drain of {n} events to a loopback receiver (separate process, signatures verified)")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    print(f"| {'what':<42} | {'time s':>8} | {'events/s':>9} | {'vs 1-at-a-time POSTs':>20} | {'vs 4-at-a-time POSTs':>20} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 11}|{'-' * 22}|{'-' * 22}|")
    for name, t in rows:
        print(f"| {name:<42} | {t:>8.2f} | {n / t:>9.0f} | {t / base1:>19.2f}x | {t / base4:>19.2f}x |")
    print("\n(time ratios: 1.00x = as fast as the baseline, 2.00x = takes twice as long)")


if __name__ == "__main__":
    asyncio.run(main())
