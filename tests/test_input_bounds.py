"""Every input bounded before it is parsed (issue 9, item 5): the findings one by one, on each channel.

JSON (panel/wire.py, the one parser of the API, MQTT and the media data channel): nesting bounded
before the parser runs, lone surrogates refused naming their path. SDP (panel/sdp.py, every offer):
size, lines, line length, media sections and candidates bounded before aiortc sees the offer, and what
the stack would trip over refused with invalid_sdp (WHEP) / bad_sdp (MQTT). The fuzzing that finds
the ones not listed here is tests/test_fuzz.py and tests/test_fuzz_sdp.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from panel.daemon import Panel
from panel.link import CommandRefused, Reply, check_sdp, reply_bytes
from panel.media.errors import SessionRefused
from panel.media.sessions import check_offer
from panel.sdp import MAX_CANDIDATES, MAX_LINE_CHARS, MAX_LINES, MAX_MEDIA_SECTIONS
from panel.wire import MAX_DEPTH, LoneSurrogate, TooDeep, loads_unique, nesting

from .api_support import STATIC_TOKEN, api_rig, bearer, served
from .media_rig import INSTALLER, api, media_of, start_panel_inprocess
from .sdp_fuzz_driver import AIORTC_OFFER

OFFER = AIORTC_OFFER.replace("\n", "\r\n")

# -- JSON ------------------------------------------------------------------------------------------


def test_nesting_is_counted_without_parsing_and_bounded() -> None:
    assert nesting('{"a": [[1, {"b": []}]]}') == 5
    assert nesting('{"a": "[[[[[[[[", "b": "\\"[[["}') == 1  # brackets inside strings do not count
    assert nesting('"unterminated [[[[ \\" [[[[') == 0
    assert nesting("]]]][[") == 0  # a parser stops at the first "]": it never gets deeper
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads_unique(ok) is not None
    for text in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "[" * 100_000, '{"a":' * 5000):
        with pytest.raises(TooDeep, match=f"at most {MAX_DEPTH}"):
            loads_unique(text)
        with pytest.raises(TooDeep):
            loads_unique(text.encode())


def test_a_lone_surrogate_is_refused_naming_its_path() -> None:
    for text, path in (('{"id": "\\ud800abc"}', "id"), ('{"a": [1, "x\\udfff"]}', "a.1"), ('{"\\ud800": 1}', "(value)"),
                       ('"\\udc00"', "(value)")):
        with pytest.raises(LoneSurrogate) as e:
            loads_unique(text)
        assert str(e.value).startswith(f"{path}: a string holds an unpaired UTF-16 surrogate"), str(e.value)
    assert loads_unique('{"emoji": "\\ud83d\\ude00"}') == {"emoji": "\U0001f600"}  # a pair is text


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[object]:
    rig = api_rig(tmp_path)
    async with served(rig) as c:
        yield c
    await rig.close()


@pytest.mark.parametrize("body, says", [
    (b'{"relay": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests 5001 levels deep"),
    (b'{"a": ' * 3000 + b"1" + b"}" * 3000, "nests 3000 levels deep"),
    (b'{"relay": "\\ud800"}', "relay: a string holds an unpaired UTF-16 surrogate"),
], ids=["deep-arrays", "deep-objects", "lone-surrogate"])
async def test_the_api_refuses_deep_or_surrogate_json_with_422_naming_it(client: object, body: bytes, says: str) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    r = await client.post("/api/v1/door/open", content=body,
                          headers={**bearer(STATIC_TOKEN), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    assert says in r.json()["message"]


# -- SDP -------------------------------------------------------------------------------------------


def _sections(n: int) -> str:
    head = OFFER[:OFFER.index("m=audio")]
    audio = ("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\na=recvonly\r\na=rtcp-mux\r\n"
             "a=rtpmap:0 PCMU/8000\r\n")
    return head.replace("a=group:BUNDLE 0 1 2\r\n", "") + "".join(audio.format(i=i) for i in range(n))


NO_DIRECTION = re.sub(r"a=(sendrecv|recvonly)\r\n", "", OFFER)
CASE_IDS = ["no-direction", "no-mid", "repeated-mid", "bundle-unknown-mid", "600-sections", "9-sections",
            "65-candidates", "too-many-lines", "long-line"]
CASES = [
    # what aiortc could not use: a direction, a mid, a unique mid, a BUNDLE naming sections
    (NO_DIRECTION, "has no direction"),
    (re.sub(r"a=mid:\d\r\n", "", OFFER), "has no a=mid"),
    (OFFER.replace("a=mid:1", "a=mid:0"), "repeats a=mid:0"),
    (OFFER.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 7 0 1 2"), "a=group:BUNDLE names 7"),
    # the bounds: work that grows with the offer
    (_sections(600), "at most"),  # 600 sections fit in 64 KiB and held the loop ~0.6 s on main
    (_sections(MAX_MEDIA_SECTIONS + 1), f"{MAX_MEDIA_SECTIONS + 1} media sections (m=); at most {MAX_MEDIA_SECTIONS}"),
    (OFFER + "".join(f"a=candidate:{i} 1 udp 1 192.0.2.1 {1000 + i} typ host\r\n" for i in range(MAX_CANDIDATES + 1)),
     f"{MAX_CANDIDATES + 1} candidates (a=candidate); at most {MAX_CANDIDATES}"),
    (OFFER + "a=x\r\n" * MAX_LINES, f"lines; at most {MAX_LINES}"),
    (OFFER + "a=x-long:" + "y" * MAX_LINE_CHARS + "\r\n", f"characters long; at most {MAX_LINE_CHARS}"),
]


@pytest.mark.parametrize("sdp, says", CASES, ids=CASE_IDS)
def test_offers_the_stack_cannot_use_are_refused_on_every_channel(sdp: str, says: str) -> None:
    with pytest.raises(SessionRefused) as whep:
        check_offer(sdp)
    assert whep.value.code == "invalid_sdp" and says in str(whep.value), str(whep.value)
    if "at most" in says:  # the bounds are checked before the MQTT command reaches media at all
        with pytest.raises(CommandRefused) as mqtt:
            check_sdp(sdp)
        assert mqtt.value.code == "bad_sdp" and says in str(mqtt.value), str(mqtt.value)


def test_a_reply_that_cannot_be_encoded_still_goes_out() -> None:
    # Every command gets exactly one reply: if the panel ever put text it cannot encode into one, the
    # reply is still published, as internal_error with the id.
    data = json.loads(reply_bytes(Reply(code="ok", message="bad \ud800 text", id="abcd-1234-efgh", cmd="open")))
    assert data == {"code": "internal_error", "message": "the panel could not encode its reply; see its log",
                    "id": "abcd-1234-efgh", "cmd": "open"}


@pytest.fixture
async def media_panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path)
    yield p
    await p.stop("test over")


async def test_whep_answers_bad_offers_400_and_sets_nothing_up(media_panel: Panel) -> None:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {INSTALLER}"}
    async with api(media_panel) as c:
        for sdp, says in CASES[:5]:
            r = await c.post("/api/v1/media/whep", content=sdp, headers=headers)
            assert r.status_code == 400 and r.json()["code"] == "invalid_sdp", r.text
            assert says in r.json()["message"]
    assert media_of(media_panel).sessions.sessions == {}
