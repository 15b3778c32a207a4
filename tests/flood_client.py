"""A connection flood from one loopback address, as a process of its own (no GIL shared with the test).

Holds ``--connections`` TCP connections to the panel's API from ``--source`` (another 127.x address
than the test's own clients): a third send nothing, a third half a request, a third a line that is not
HTTP at all. A connection the panel closes is opened again after about ``--reconnect-s``, so the pressure
lasts. The process runs at nice 10: on the wall the attacker's work is done on its own machine. Prints
``READY <json>`` once every connection has been tried, and the final counts as one JSON line when its
stdin closes.

    python -m tests.flood_client --port 8080 [--source 127.0.0.2] [--connections 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import sys
from dataclasses import asdict, dataclass

HALF_REQUEST = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
GARBAGE = b"\x16\x03\x01 not http\r\n\r\n"  # answered 400 and closed: one log line each, unless limited


@dataclass
class Counts:
    attempts: int = 0
    connected: int = 0
    failed: int = 0  # refused, reset before it could be used, or timed out
    closed_by_panel: int = 0
    held: int = 0
    max_held: int = 0
    first_round: int = 0  # connections tried at least once


async def hold(i: int, host: str, port: int, source: str, reconnect_s: float, counts: Counts,
               tried: asyncio.Event, total: int, stop: asyncio.Event) -> None:
    first = True
    pace = random.Random(i)  # deterministic: the same flood every run
    while not stop.is_set():
        counts.attempts += 1
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(source, 0)), 5)
        except (OSError, TimeoutError):
            counts.failed += 1
        else:
            counts.connected += 1
            counts.held += 1
            counts.max_held = max(counts.max_held, counts.held)
        if first:
            first = False
            counts.first_round += 1
            if counts.first_round == total:
                tried.set()
        if writer is not None:
            try:
                if i % 3:
                    writer.write(HALF_REQUEST if i % 3 == 1 else GARBAGE)
                await reader.read()  # until the panel closes it; sends nothing more
            except OSError:
                pass
            finally:
                counts.held -= 1
                if not stop.is_set():
                    counts.closed_by_panel += 1
                writer.close()
        with contextlib.suppress(TimeoutError):
            # The attacker's pace (not a wait for anything), jittered: 2,000 clocks do not tick together.
            await asyncio.wait_for(stop.wait(), reconnect_s * pace.uniform(0.5, 1.5))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default="127.0.0.2")
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--reconnect-s", type=float, default=0.5)
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} < {want}: cannot hold {args.connections} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # On the wall the attacker is another machine: its own work must not take the panel's CPU here.
    os.nice(10)
    counts = Counts()
    tried, stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()
    stdin = sys.stdin.fileno()
    loop.add_reader(stdin, lambda: None if os.read(stdin, 1 << 16) else stdin_closed.set())
    tasks = [asyncio.create_task(hold(i, args.host, args.port, args.source, args.reconnect_s, counts, tried,
                                      args.connections, stop)) for i in range(args.connections)]
    await tried.wait()
    print("READY " + json.dumps(asdict(counts)), flush=True)
    await stdin_closed.wait()
    stop.set()
    final = asdict(counts)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(final), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
