"""What an offer costs the event loop, next to a browser's offer measured in the same run.

Run from the repository root:  .venv/bin/python bench/bench_sdp.py [--n 30]

Each offer goes the way a WHEP or MQTT offer goes (``MediaService.open_session`` on a whole simulated
panel with media, then the session is ended), timed on the loop; it runs in a network namespace of its
own (tests/netns.py), so aioice gathers nothing of the machine's and the figures are the SDP work, not
the network's. Cases:

1. baseline: a browser-like offer (audio, video, data channel);
2. the largest offer the bounds let through: 8 media sections (panel/sdp.py);
3. 600 minimal media sections in 64 KiB: refused by the bounds before aiortc sees it;
4. the same 600 sections handed to aiortc directly (setRemoteDescription and createAnswer on a bare
   RTCPeerConnection), which is what the panel did before the bounds (issue 9: ~0.4 s of loop each).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from panel.media.errors import SessionRefused  # noqa: E402
from panel.media.tokens import Grant  # noqa: E402
from tests.media_rig import media_of, start_panel_inprocess  # noqa: E402
from tests.netns import contained  # noqa: E402
from tests.sdp_fuzz_driver import AIORTC_OFFER  # noqa: E402


def sections(n: int) -> str:
    offer = AIORTC_OFFER.replace("\n", "\r\n")
    # ICE credentials and the fingerprint at session level, where every section inherits them.
    creds = "".join(line + "\r\n" for line in offer.split("\r\n")[:30]
                    if line.startswith(("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup")))
    head = offer[:offer.index("m=audio")].replace("a=group:BUNDLE 0 1 2\r\n", creds)
    audio = ("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\na=recvonly\r\na=rtcp-mux\r\n"
             "a=rtpmap:0 PCMU/8000\r\n")
    return head + "".join(audio.format(i=i) for i in range(n))


async def through_panel(media: Any, sdp: str) -> tuple[float, str]:
    grant = Grant(token_id="bench", kind="monitor", subject="bench", view_only=True)
    started = time.perf_counter()
    try:
        session = await media.open_session(sdp, grant, who="bench", origin="whep", ice_servers=None)
    except SessionRefused as e:
        return time.perf_counter() - started, e.code
    took = time.perf_counter() - started
    await media.end_session(session.id, "whep_delete")
    return took, "ok"


async def bare_aiortc(sdp: str) -> tuple[float, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    started = time.perf_counter()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.createAnswer()
        outcome = "applied"
    except Exception as e:  # measuring, whatever aiortc makes of it
        outcome = type(e).__name__
    took = time.perf_counter() - started
    await pc.close()
    return took, outcome


async def run(n: int) -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        panel = await start_panel_inprocess(Path(tmp))
        media = media_of(panel)
        cases: list[tuple[str, Callable[[], Awaitable[tuple[float, str]]]]] = [
            ("browser offer (baseline)", lambda: through_panel(media, AIORTC_OFFER.replace("\n", "\r\n"))),
            ("8 sections (the bound)", lambda: through_panel(media, sections(8))),
            ("600 sections, bounded", lambda: through_panel(media, sections(600))),
            ("600 sections, bare aiortc", lambda: bare_aiortc(sections(600)))]
        for _, case in cases:  # warm-up
            await case()
        times: dict[str, list[float]] = {name: [] for name, _ in cases}
        outcomes: dict[str, str] = {}
        for _ in range(n):  # interleaved, so every case sees the same load on a shared machine
            for name, case in cases:
                took, outcomes[name] = await case()
                times[name].append(took)
        await panel.stop("bench over")
    base = statistics.median(times[cases[0][0]])
    print(f"{'case':28} {'outcome':16} {'median ms':>10} {'p99 ms':>8} {'x baseline':>10}")
    for name, _ in cases:
        t = sorted(times[name])
        p99 = t[min(len(t) - 1, round(0.99 * (len(t) - 1)))]
        print(f"{name:28} {outcomes[name]:16} {statistics.median(t) * 1000:10.2f} {p99 * 1000:8.2f} "
              f"{statistics.median(t) / base:10.2f}")
    print(f"({n} rounds; sizes: 8 sections {len(sections(8))} B, 600 sections {len(sections(600))} B)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    with contained("bench-sdp"):
        asyncio.run(run(args.n))


if __name__ == "__main__":
    main()
