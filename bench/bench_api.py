"""Does the local API starve the door timers? And what does the auth gate cost per request?

Run from the repository root:  .venv/bin/python bench/bench_api.py [--seconds 4] [--clients 8]

The panel runs in-process (``Panel`` with gpiozero's MockFactory and the real loop clock) with its
API on a free loopback port. A probe on the panel's loop asks for a callback every 10 ms, like the
relay timers do, and records how late each one runs. It measures twice in the same run:

1. baseline: the API idle;
2. load: a separate client process with ``--clients`` concurrent connections cycling through
   authenticated reads (``/state``, ``/events``, ``/calls``, ``/logs/access``, ``/system``) and
   failed logins (throttled per address, as an attacker would meet them).

The client also times two requests in the same run: ``GET /health`` (public: no credential check)
and ``GET /state`` (bearer token through the role gate), so the gate's cost is a ratio to the bare
request. Reported as median/p99/max, and as ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from panel.api.app import ApiServer, create_app  # noqa: E402
from panel.api.principals import ApiAuth  # noqa: E402
from panel.auth import Secrets  # noqa: E402
from panel.daemon import Panel  # noqa: E402
from panel.platform import parse_config  # noqa: E402
from tests.support import config_dict  # noqa: E402

PERIOD_S = 0.01


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def probe(seconds: float) -> list[float]:
    """Lateness (ms) of callbacks asked for every 10 ms on the panel's loop."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        due = loop.time() + PERIOD_S
        fired = loop.create_future()
        loop.call_at(due, lambda fired=fired: fired.done() or fired.set_result(loop.time()))
        late.append((await fired - due) * 1000)
    return late


def client(url: str, token: str, seconds: float, clients: int) -> None:
    """The load: a separate process, so it does not share the panel's loop or GIL."""
    import httpx

    async def main() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"health": [], "state": [], "errors": []}
        auth = {"Authorization": f"Bearer {token}"}
        reads = ["/api/v1/state", "/api/v1/events?after=0&limit=100", "/api/v1/calls", "/api/v1/logs/access",
                 "/api/v1/system"]
        end = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            async def worker(i: int) -> None:
                n = i
                while time.monotonic() < end:
                    n += 1
                    if n % 10 == 0:
                        await c.post("/api/v1/auth/login", json={"password": f"wrong guess {n}"})
                    elif n % 3 == 0:
                        t = time.perf_counter()
                        r = await c.get("/api/v1/health")
                        out["health"].append((time.perf_counter() - t) * 1000)
                    elif n % 3 == 1:
                        t = time.perf_counter()
                        r = await c.get("/api/v1/state", headers=auth)
                        out["state"].append((time.perf_counter() - t) * 1000)
                    else:
                        r = await c.get(reads[n % len(reads)], headers=auth)
                    if r.status_code >= 500:
                        out["errors"].append(r.status_code)
            await asyncio.gather(*(worker(i) for i in range(clients)))
        return out

    print(json.dumps(asyncio.run(main())))


async def bench(seconds: float, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = config_dict()
        data["storage"] = {"dir": tmp}
        data["api"] = {"listen": "127.0.0.1:0", "mutations_per_minute": 100_000}
        data["log"] = {"level": "warning", "format": "json"}
        import logging

        logging.basicConfig(level=logging.ERROR)
        panel = Panel(parse_config(data), Secrets(), simulate=True)
        panel.build_core()
        app = create_app(panel, simulated=False)
        secret, _ = await ApiAuth.for_panel(panel).tokens.issue(kind="token", role="backend", subject="bench",
                                                                issued_by="bench", ttl_s=3600)
        for i in range(50):  # something to read back
            await panel.door.unlock(cause="remote", actor=f"bench-{i}", method="api", duration_s=0.5)
            panel.door.release()
        server = ApiServer(app, "127.0.0.1", 0)
        await server.start()
        serving = asyncio.create_task(server.serve())
        url = f"http://127.0.0.1:{server.bound_port}"
        try:
            idle = await probe(seconds)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", url, "--token", secret, "--seconds", str(seconds),
                "--clients", str(clients), stdout=subprocess.PIPE)
            loaded = await probe(seconds)
            out, _ = await proc.communicate()
            load: dict[str, Any] = json.loads(out)
        finally:
            await server.stop()
            serving.cancel()
            await panel.stop("bench over")
    rows = [("timer lateness, API idle (baseline)", idle), ("timer lateness, API under load", loaded),
            ("GET /api/v1/health (public)", load["health"]), ("GET /api/v1/state (bearer + role gate)", load["state"])]
    print(f"{'measurement':42} {'n':>6} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for name, values in rows:
        print(f"{name:42} {len(values):6d} {statistics.median(values):10.3f} {pct(values, 99):8.3f} {max(values):8.3f}")
    print(f"\ntimer lateness under load / idle: median x{statistics.median(loaded) / statistics.median(idle):.2f}, "
          f"p99 x{pct(loaded, 99) / pct(idle, 99):.2f}")
    print(f"authenticated / public request: median x{statistics.median(load['state']) / statistics.median(load['health']):.2f}")
    print(f"server errors during the load: {len(load['errors'])}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--client")
    p.add_argument("--token")
    args = p.parse_args()
    if args.client:
        client(args.client, args.token, args.seconds, args.clients)
    else:
        asyncio.run(bench(args.seconds, args.clients))


if __name__ == "__main__":
    main()
