"""Button press -> ``call.created`` during a connection flood from one address, next to the same panel
without it (issue 9).

The panel runs as a process with a Raspberry Pi's 1,024 file descriptors; the backend is the loopback
test receiver; the flood is ``tests/flood_client.py`` (idle, half-sent and non-HTTP connections from
127.0.0.2, re-opened about a second after the panel closes them, at nice 10). The baseline is the same
panel, in the same run, before the flood starts. Each press's call is ended by an authenticated request
on a new connection, whose time is the "API" row.

    .venv/bin/python bench/bench_flood.py [--presses 200] [--connections 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_flood import p99, run_flood  # noqa: E402


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presses", type=int, default=200)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--quiet-s", type=float, default=10.0, help="flood alone, to measure what it makes the panel log")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        run = await run_flood(Path(tmp), args.connections, args.presses, args.quiet_s, baseline=args.presses)
    base = statistics.median(run.baseline)

    def row(name: str, v: list[float]) -> str:
        return (f"| {name:<44} | {len(v):>5} | {statistics.median(v) * 1000:>9.2f} | {p99(v) * 1000:>8.2f} | "
                f"{statistics.median(v) / base:>15.2f}x |")

    print(f"\nPress -> call.created with {args.connections} connections from one address "
          f"(panel RLIMIT_NOFILE 1024); flood client: {run.counts}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    print(f"| {'what':<44} | {'n':>5} | {'median ms':>9} | {'p99 ms':>8} | {'median/baseline':>16} |")
    print(f"|{'-' * 46}|{'-' * 7}|{'-' * 11}|{'-' * 10}|{'-' * 18}|")
    print(row("baseline: press -> call.created, no flood", run.baseline))
    print(row("press -> call.created during the flood", run.latencies))
    print(row("API: authenticated request, new connection", run.answered))
    print(f"\nlogged by the flood alone: {run.logged} bytes in {run.window:.1f} s "
          f"= {run.logged / run.window * 60 / 1e6:.3f} MB a minute")
    print(f"exit button during the flood: {'released' if run.relay_on else 'NOT released'}")
    print("\ntarget (issue 9): p99 < 100 ms, API < 2 s, log < 1 MB a minute")


if __name__ == "__main__":
    asyncio.run(main())
