"""The SDP half of the fuzzing (issue 9, item 5), run by tests/test_fuzz_sdp.py in a network namespace of
its own (``unshare --net``, loopback only): every generated offer goes the whole way a WHEP or MQTT
offer goes, ``MediaService.open_session`` on a whole simulated panel with media (synthetic camera, tone
microphone), through the bounds, aiortc's parser, setRemoteDescription, createAnswer and
setLocalDescription. In the namespace aioice finds no address to gather from, so nothing binds to or
sends to this machine's network.

    python -m tests.sdp_fuzz_driver OFFERS RESULT.json

Offers are mutations of two real offers (aiortc's and a browser's): lines dropped, repeated, swapped,
cut or given hostile values, sections repeated, directions and mids removed, candidates and codecs
added, bytes spliced; hypothesis picks the mutations (derandomized, no database) and its seeded random
their places. Writes a JSON summary: offers, outcome codes, errors (anything but a session or a
``SessionRefused`` with a code of the table), the slowest offers, sessions left open.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from panel.errors import CODES
from panel.link import CommandRefused, check_sdp
from panel.media.errors import SessionRefused
from panel.media.tokens import Grant

from .eventually import eventually
from .media_rig import media_of, start_panel_inprocess

AIORTC_OFFER = """v=0
o=- 4005012213 4005012213 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=msid-semantic:WMS *
m=audio 9 UDP/TLS/RTP/SAVPF 96 9 0 8
c=IN IP4 0.0.0.0
a=sendrecv
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:0
a=msid:64ade6d4-0f76-4e51-a6f8-21e0d4acf70f 12d5e3b0-bf16-45b3-b58d-a53f92c62ee3
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc:2026115900 cname:5765a7b3-7f5c-43b7-a9a8-2e0e6be23d51
a=rtpmap:96 opus/48000/2
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=ice-ufrag:XR0t
a=ice-pwd:idJi5LFt7NeWtl7zqyUEWs
a=fingerprint:sha-256 64:49:75:C1:ED:30:06:6E:F1:DF:39:63:8D:2E:ED:05:07:E7:3C:B6:8E:A5:E0:0D:AB:86:0A:48:0C:C5:06:4E
a=setup:actpass
m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100
c=IN IP4 0.0.0.0
a=recvonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:1
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 goog-remb
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=rtpmap:99 H264/90000
a=rtcp-fb:99 nack
a=rtcp-fb:99 nack pli
a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:100 rtx/90000
a=fmtp:100 apt=99
a=ice-ufrag:XR0t
a=ice-pwd:idJi5LFt7NeWtl7zqyUEWs
a=fingerprint:sha-256 64:49:75:C1:ED:30:06:6E:F1:DF:39:63:8D:2E:ED:05:07:E7:3C:B6:8E:A5:E0:0D:AB:86:0A:48:0C:C5:06:4E
a=setup:actpass
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=mid:2
a=sctp-port:5000
a=max-message-size:262144
a=ice-ufrag:XR0t
a=ice-pwd:idJi5LFt7NeWtl7zqyUEWs
a=fingerprint:sha-256 64:49:75:C1:ED:30:06:6E:F1:DF:39:63:8D:2E:ED:05:07:E7:3C:B6:8E:A5:E0:0D:AB:86:0A:48:0C:C5:06:4E
a=setup:actpass
"""

# A browser's: session-level ICE and fingerprint, candidates, end-of-candidates, rtcp-rsize, ssrc groups.
BROWSER_OFFER = """v=0
o=- 7713024119046384432 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS
a=ice-ufrag:Fq7d
a=ice-pwd:Jb2cH9Vt1Lm4Qw8Rz6Xy3Kp0
a=ice-options:trickle
a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3C:6A:4B:2D:12:3A:9E:11:44:80:7F:C2
a=setup:actpass
m=audio 54400 UDP/TLS/RTP/SAVPF 111 63 0 8
c=IN IP4 10.0.2.15
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 10.0.2.15 54400 typ host generation 0 network-id 1
a=candidate:435653019 1 tcp 1518280447 10.0.2.15 9 typ host tcptype active generation 0 network-id 1
a=candidate:2193011372 1 udp 1686052607 203.0.113.7 54400 typ srflx raddr 10.0.2.15 rport 54400 generation 0
a=end-of-candidates
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:- 1c9d27b5-8f3e-4c63-a0b4-9a33e2fb6f1e
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=ssrc:3735928559 cname:Hq2mZ7cX9vB1nL4k
a=ssrc:3735928559 msid:- 1c9d27b5-8f3e-4c63-a0b4-9a33e2fb6f1e
m=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=mid:1
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
"""

BASES = [AIORTC_OFFER.replace("\n", "\r\n"), BROWSER_OFFER.replace("\n", "\r\n")]
VARIANTS = 8  # offers per generated example, each with the example's mutations at other places

VALUES = ["", " ", "0", "-1", "9" * 25, "x", "é", "\ud800", "\t", ":", "::::", "a" * 3000, "IN IP4 x", "IN IP6 ::1",
          "sha-256 zz", "sha-1 00", "UDP/TLS/RTP/SAVPF", "RTP/AVP 0", "96 97", "opus/48000/2", "H264/90000",
          "VP8/90000", "apt=x", "profile-level-id=zz", "packetization-mode=9", "actpass", "active", "holdconn",
          "sendrecv", "inactive", "BUNDLE 0 1 2 3", "1 1 udp 1 10.0.0.1 1 typ host", "x 1 udp x 1.2.3.4 5 typ relay"]
LINES = ["a=sendonly", "a=inactive", "a=recvonly", "a=mid:0", "a=mid:9", "a=rtcp-mux", "a=setup:active",
         "a=candidate:1 1 udp 2130706431 192.0.2.1 9 typ host", "a=candidate:2 1 tcp 1 192.0.2.1 9 typ host tcptype passive",
         "a=rtpmap:120 H264/90000", "a=fmtp:120 packetization-mode=1;profile-level-id=42e01f", "a=ssrc-group:FID 1 2",
         "a=ice-lite", "a=end-of-candidates", "m=audio 9 UDP/TLS/RTP/SAVPF 0", "m=video 9 UDP/TLS/RTP/SAVPF 102",
         "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "b=AS:30", "c=IN IP4 0.0.0.0", "a=x-" + "p" * 500]
OPS = ["drop", "dup", "swap", "value", "insert", "truncate", "lf", "dup_section", "drop_direction", "drop_mid",
       "candidates", "mline", "bytes", "text"]


def _mutate(lines: list[str], op: str, text: str, rnd: random.Random) -> list[str]:
    i = rnd.randrange(len(lines)) if lines else 0
    if not lines:
        return [text]
    if op == "drop":
        return lines[:i] + lines[i + 1:]
    if op == "dup":
        return lines[:i] + [lines[i]] * rnd.randrange(2, 12) + lines[i:]
    if op == "swap":
        j = rnd.randrange(len(lines))
        lines = list(lines)
        lines[i], lines[j] = lines[j], lines[i]
        return lines
    if op == "value":
        key, sep, _ = lines[i].partition(":" if lines[i].startswith("a=") else "=")
        return [*lines[:i], key + (sep or "=") + rnd.choice([*VALUES, text]), *lines[i + 1:]]
    if op == "insert":
        return [*lines[:i], rnd.choice(LINES), *lines[i:]]
    if op == "truncate":
        return [*lines[:i], lines[i][:rnd.randrange(len(lines[i]) + 1)]]
    if op == "dup_section":
        starts = [k for k, line in enumerate(lines) if line.startswith("m=")] or [0]
        s = rnd.choice(starts)
        end = next((k for k in starts if k > s), len(lines))
        return lines[:end] + lines[s:end] * rnd.randrange(1, 12) + lines[end:]
    if op == "drop_direction":
        return [line for line in lines if line not in ("a=sendrecv", "a=recvonly", "a=sendonly", "a=inactive")]
    if op == "drop_mid":
        return [line for line in lines if not line.startswith("a=mid:")]
    if op == "candidates":
        n = rnd.choice([1, 10, 40, 80])
        return lines + [f"a=candidate:{k} 1 udp {2130706431 - k} 192.0.2.{k % 250 + 1} {1024 + k} typ host"
                        for k in range(n)]
    if op == "mline":
        starts = [k for k, line in enumerate(lines) if line.startswith("m=")] or [i]
        k = rnd.choice(starts)
        parts = lines[k].split(" ")
        parts[rnd.randrange(len(parts))] = rnd.choice([*VALUES, text])
        return [*lines[:k], " ".join(parts), *lines[k + 1:]]
    if op == "lf":
        return [line + rnd.choice(["\r", "\n", "\r\r", "\x00", " "]) if rnd.randrange(3) == 0 else line for line in lines]
    if op == "bytes":
        line = lines[i]
        at = rnd.randrange(len(line) + 1)
        return [*lines[:i], line[:at] + rnd.choice(["\x00", "\x7f", "\u2028", "\ufeff", "é", "=", " ", text]) + line[at:]]
    return [*lines[:i], text, *lines[i:]]  # "text": a whole line of generated text


def offers(base: str, ops: list[tuple[str, str]], rnd: random.Random) -> list[str]:
    out = []
    for _ in range(VARIANTS):
        lines = base.split("\r\n")[:-1]
        for op, text in ops:
            lines = _mutate(lines, op, text, rnd)
        out.append("\r\n".join(lines) + rnd.choice(["\r\n", "\n", ""]))
    return out


OP = st.tuples(st.sampled_from(OPS), st.text(max_size=30))
EXAMPLE = st.tuples(st.sampled_from(BASES), st.lists(OP, min_size=1, max_size=4))


def _stage(message: str) -> str:
    """Which layer refused an offer, by its message: the bounds and syntax (panel/sdp.py), aiortc's
    parser, the section checks on the parsed offer, or the WebRTC stack applying it."""
    if "cannot be parsed" in message:
        return "parser"
    if "was refused" in message or "cannot be answered" in message or "no codec" in message:
        return "stack"
    if message.startswith("media section") or message.startswith("a=group") or "no audio or video" in message:
        return "sections"
    return "bounds"


class Outcomes:
    def __init__(self) -> None:
        self.stages: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.slowest: list[tuple[float, int, str]] = []
        self.offers = 0


async def answer(media: Any, sdp: str, out: Outcomes) -> None:
    out.offers += 1
    grant = Grant(token_id="fuzz", kind="monitor", subject="fuzz", view_only=True)
    try:
        check_sdp(sdp)
        link = "pass"
    except CommandRefused as e:
        link = e.code
    started = time.perf_counter()
    try:
        session = await media.open_session(sdp, grant, who="fuzz", origin="whep", ice_servers=None)
    except SessionRefused as e:
        code = e.code
        out.stages[_stage(str(e))] += 1
        if code not in CODES or CODES[code].status >= 500:  # a refusal of the offer, not a failure of the panel
            out.errors.append(f"{code}: {e} for {sdp[:300]!r}")
    except Exception as e:  # what the fuzz is looking for
        code = "crash"
        out.errors.append(f"{type(e).__name__}: {e} for {sdp[:300]!r}")
    else:
        code = "ok"
        await media.end_session(session.id, "whep_delete")
    took = time.perf_counter() - started
    out.slowest = sorted([*out.slowest, (took, len(sdp), code)], reverse=True)[:5]
    out.codes[code] += 1
    if link == "bad_sdp" and code == "ok":
        out.errors.append(f"the MQTT check refused an offer the media layer answered: {sdp[:300]!r}")


def main(count: int, result: Path) -> None:
    out = Outcomes()
    with asyncio.Runner() as runner, tempfile.TemporaryDirectory() as tmp:
        panel = runner.run(start_panel_inprocess(Path(tmp)))
        media = media_of(panel)

        @settings(max_examples=-(-count // VARIANTS), derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(example=EXAMPLE, rnd=st.randoms(use_true_random=True))
        def run(example: tuple[str, list[tuple[str, str]]], rnd: random.Random) -> None:
            base, ops = example
            for sdp in offers(base, ops, rnd):
                runner.run(answer(media, sdp, out))

        started = time.perf_counter()
        run()
        took = time.perf_counter() - started
        runner.run(eventually(lambda: not media.sessions.sessions, 15, "every session closed"))
        left = len(media.sessions.sessions)
        runner.run(panel.stop("fuzz over"))
    result.write_text(json.dumps({"offers": out.offers, "seconds": round(took, 2), "codes": dict(out.codes),
                                  "stages": dict(out.stages),
                                  "errors": out.errors[:50], "slowest": out.slowest, "sessions_left": left}))


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
