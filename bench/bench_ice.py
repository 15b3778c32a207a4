"""Session setup time with STUN/TURN servers that answer, answer slowly, or not at all.

Setup time = ``MediaService.answer_offer`` (the MQTT-signalled path: offer in, answer with all
candidates out), next to a bare aiortc answerer given the same servers in the same run (aiortc alone:
setRemoteDescription + createAnswer + setLocalDescription, where aioice waits up to 5 s for a server).

The bench runs in the panel side of a veth pair of its own (tests/netns.py, needs root and iproute2)
and its servers on the other side, so it never binds to or sends to this machine's LAN address (aioice
gathers from the non-loopback addresses of its namespace: the pair's). Servers:
- a STUN responder built with aioice's message code (a real Binding success);
- the same responder answering 1.2 s late ("slow");
- a blackhole: a UDP socket that receives and never answers;
- a real TURN server (coturn, long-term credentials), if ``turnserver`` is installed.

"known" servers were probed by the panel's ICE monitor before the offer (the steady state); "first
sight" servers are named in the offer message and never seen before (a fresh blackhole port per
trial), so only the gathering budget protects the session.

    .venv/bin/python bench/bench_ice.py [--trials 15] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aioice import stun  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from panel.media.service import MediaService  # noqa: E402
from panel.media.sessions import ice_servers_from_message  # noqa: E402
from panel.platform import parse_config  # noqa: E402
from tests.media_resident import Resident  # noqa: E402
from tests.netns import Namespace, Pair, available, veth_pair  # noqa: E402
from tests.support import config_dict  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


class Stun(asyncio.DatagramProtocol):
    def __init__(self, delay_s: float | None) -> None:
        self.delay_s = delay_s  # None: never answer
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.delay_s is None:
            return
        request = stun.parse_message(data)
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        asyncio.get_running_loop().call_later(self.delay_s, self.transport.sendto, bytes(response), addr)


async def stun_server(pair: Pair, delay_s: float | None) -> str:
    host = pair.check(pair.servers.address)
    with pair.servers.entered():  # the socket lives on the servers' side, polled from here
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: Stun(delay_s),
                                                                                 local_addr=(host, 0))
    return f"stun:{host}:{transport.get_extra_info('sockname')[1]}"


def start_coturn(servers: Namespace, workdir: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]] | None:
    binary = shutil.which("turnserver")
    if binary is None:
        return None
    host, port = servers.address, 3478  # the namespace is the bench's own: the standard port is free
    password = secrets.token_urlsafe(12)
    proc = servers.popen(
        [binary, "-n", f"--listening-ip={host}", f"--listening-port={port}", f"--relay-ip={host}", "--lt-cred-mech",
         f"--user=panel:{password}", "--realm=bench", "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780",
         f"--pidfile={workdir / 'turn.pid'}", "--log-file=stdout"], log=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return proc, {"urls": [f"turn:{host}:{port}?transport=udp"], "username": "panel", "credential": password}
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


async def bare_answer(servers: list[dict[str, Any]]) -> tuple[float, str]:
    resident = Resident(audio="", datachannel=False)
    offer = await resident.offer()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers_from_message(servers)))
    try:
        started = time.monotonic()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        took = time.monotonic() - started
        return took, pc.localDescription.sdp
    finally:
        await pc.close()
        await resident.close()


async def panel_answer(media: MediaService, servers: list[dict[str, Any]] | None) -> tuple[float, str]:
    resident = Resident(audio="", datachannel=False)
    offer = await resident.offer()
    try:
        started = time.monotonic()
        answer = await media.answer_offer(offer, who="bench", ice_servers=servers)
        took = time.monotonic() - started
    finally:
        await resident.close()
        for session in list(media.sessions.sessions.values()):
            await session.close("bench")
    return took, answer


def kinds(sdp: str) -> str:
    found = {k for k in ("srflx", "relay") if f" typ {k}" in sdp}
    return "+".join(sorted(found)) or "host only"


async def measure(fn: Callable[[], Awaitable[tuple[float, str]]], trials: int) -> tuple[list[float], str]:
    times, last = [], ""
    for _ in range(trials):
        took, last = await fn()
        times.append(took * 1000)
    return times, kinds(last)


async def main(args: argparse.Namespace, pair: Pair) -> None:
    host = pair.servers.address
    workdir = Path(tempfile.mkdtemp(prefix="bench-ice-"))
    reachable = await stun_server(pair, 0.0)
    slow = await stun_server(pair, 1.2)
    blackhole = await stun_server(pair, None)
    coturn = start_coturn(pair.servers, workdir)
    turn = coturn[1] if coturn else None

    def config_for(servers: list[dict[str, Any]]) -> MediaService:
        media = {"video": {"width": 320, "height": 240, "fps": 15}, "audio": {"input": "none", "output": "none"},
                 "linger_s": 0, "tones": {"enabled": False}, "snapshots": {"at_press": False},
                 "ice_gather_budget_s": args.budget, "ice_probe_interval_s": 3600,
                 "ice_servers": [{k: v for k, v in s.items() if k != "credential"}
                                 | ({"credential_env": "BENCH_TURN_PASSWORD"} if "credential" in s else {})
                                 for s in servers]}
        cfg = parse_config(config_dict(media=media)).media
        assert cfg is not None
        return MediaService(cfg, report=lambda e: None)

    if turn:
        os.environ["BENCH_TURN_PASSWORD"] = turn["credential"]
    rows: list[tuple[str, str, str, str, str]] = []

    def row(case: str, panel: tuple[list[float], str], bare: tuple[list[float], str] | None) -> None:
        p = f"{statistics.median(panel[0]):.0f} / {pct(panel[0], 95):.0f} ms"
        if bare is None:
            rows.append((case, p, panel[1], "-", "-"))
            return
        b = f"{statistics.median(bare[0]):.0f} / {pct(bare[0], 95):.0f} ms"
        if len(bare[0]) == 1:
            b = f"{bare[0][0]:.0f} ms (1 run)"
        ratio = statistics.median(panel[0]) / statistics.median(bare[0])
        rows.append((case, p, panel[1], f"{b}, {bare[1]}", f"{ratio:.2g}"))

    cases: list[tuple[str, list[dict[str, Any]], int]] = [
        ("no ICE servers", [], args.trials),
        ("STUN reachable", [{"urls": [reachable]}], args.trials),
    ]
    if turn:
        cases.append(("TURN reachable (coturn, udp)", [turn], args.trials))
    cases += [
        ("STUN answering in 1.2 s, known", [{"urls": [slow]}], 2),
        ("STUN unreachable, known", [{"urls": [blackhole]}], 1),
        ("STUN unreachable + STUN reachable, known", [{"urls": [blackhole]}, {"urls": [reachable]}], 1),
    ]
    print(f"ICE setup benchmark: gathering budget {args.budget} s, {args.trials} trials, servers on {host} "
          f"(a veth pair of the bench's own)", flush=True)
    for case, servers, bare_trials in cases:
        media = config_for(servers)
        media.start()
        await media.sessions.ice.probe_now()
        states = ", ".join(s["state"] for s in media.status()["ice"]["servers"]) or "-"
        panel = await measure(functools.partial(panel_answer, media, None), args.trials)
        await media.stop()
        bare = await measure(functools.partial(bare_answer, servers), bare_trials)
        row(f"{case} [{states}]", panel, bare)
        print(f"  {case}: done", flush=True)

    # First sight: servers named in the offer, never probed (a new blackhole each trial).
    media = config_for([])
    media.start()

    async def first_sight() -> tuple[float, str]:
        return await panel_answer(media, [{"urls": [await stun_server(pair, None)]}])

    row("STUN unreachable, first sight (in the offer)", await measure(first_sight, args.trials), None)
    await media.stop()

    if coturn:
        coturn[0].terminate()
        coturn[0].wait(5)
    print()
    heads = ("case [probe state]", "panel answer_offer median / p95", "panel candidates", "bare aiortc", "ratio")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |")


def run() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--budget", type=float, default=0.5, help="media.ice_gather_budget_s")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    why = available()
    if why is not None:
        sys.exit(f"bench_ice needs network namespaces: {why}")
    # The whole loop runs in the panel's namespace: its worker threads start there too.
    with veth_pair("bench-ice") as pair, pair.panel.entered():
        asyncio.run(main(args, pair))


if __name__ == "__main__":
    run()
