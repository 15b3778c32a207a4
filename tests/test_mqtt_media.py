"""WebRTC signalled over the MQTT control channel: a resident's offer in as an ``offer`` command, the
panel's answer out in its reply, the session ended with ``hangup``.

Everything is real: Mosquitto (TLS, ACL) from tests/mosquitto.py with the backend as an MQTT 5 client,
the whole simulated panel in-process (synthetic camera with a frame counter, 440 Hz microphone,
recording speaker, the real call logic), an aiortc peer as the resident (tests/media_resident.py),
STUN responders, and headless Chromium for the browser test. The module runs in the panel side of a veth
pair of its own (tests/netns.py), broker included, and the STUN responders on the other side: aioice
gathers the pair's address, and nothing reaches the machine's LAN address (nor the srflx addresses the
responders make up, which have no route there).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aioice import stun

from panel.auth import Secrets
from panel.daemon import Panel
from panel.link import (
    MAX_OFFER_PAYLOAD,
    MAX_SDP_BYTES,
    CommandRefused,
    HangupCommand,
    OfferCommand,
    check_sdp,
    decode,
    parse,
    signed,
)
from panel.media.audio import dominant_frequency
from panel.platform import parse_config

from .browser import chromium
from .eventually import eventually
from .media_resident import Resident
from .media_rig import (
    INSTALLER,
    Resources,
    assert_no_leaks,
    media_config,
    media_of,
    ring,
    speaker,
)
from .mosquitto import Broker, Client
from .netns import Pair, veth_pair
from .support import config_dict

A = "panel-a"
KEY = "m" * 24 + "-command-key"
PANEL_TONE = 440.0
RESIDENT_TONE = 1000.0
# What each STUN responder tells the panel its address is: a srflx candidate with it in the answer
# proves which server the session actually asked.
CONFIGURED_MAPPED = "203.0.113.1"
OFFERED_MAPPED = "203.0.113.2"


class Synced:
    """The ClockSync interface: the clock is synchronised (freshness rests on ``exp``)."""

    def synchronized(self) -> bool:
        return True


@dataclass
class StunResponder(asyncio.DatagramProtocol):
    """A UDP STUN server answering Binding with a fixed XOR-MAPPED-ADDRESS (aioice's own messages)."""

    mapped: str
    requests: int = 0
    transport: Any = field(default=None, repr=False)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        self.requests += 1
        if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
            return
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = (self.mapped, addr[1])
        self.transport.sendto(bytes(response), addr)

    @property
    def url(self) -> str:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"stun:{host}:{port}"


async def stun_responder(mapped: str, pair: Pair) -> StunResponder:
    loop = asyncio.get_running_loop()
    with pair.servers.entered():  # its socket lives on the servers' side
        _, protocol = await loop.create_datagram_endpoint(lambda: StunResponder(mapped),
                                                          local_addr=(pair.check(pair.servers.address), 0))
    return protocol


def srflx(sdp: str) -> set[str]:
    return set(re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ srflx", sdp, re.M))


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with veth_pair("mqttm") as made, made.panel.entered():
        yield made


@pytest.fixture(scope="module")
def broker(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    # Started in the panel's namespace: its loopback, where the panel and the backend connect.
    with Broker(tmp_path_factory.mktemp("broker"), panels=[A]) as b:
        yield b


@pytest.fixture
async def configured_stun(pair: Pair) -> AsyncIterator[StunResponder]:
    server = await stun_responder(CONFIGURED_MAPPED, pair)
    yield server
    server.transport.close()


@pytest.fixture
async def offered_stun(pair: Pair) -> AsyncIterator[StunResponder]:
    server = await stun_responder(OFFERED_MAPPED, pair)
    yield server
    server.transport.close()


async def start_panel(tmp_path: Path, broker: Broker, media: dict[str, Any] | None) -> Panel:
    data = config_dict(media=media, mqtt=broker.mqtt_config(A, require_signed_commands=True))
    data["panel"] = {"id": A, "name": "Entrance A"}
    data["storage"] = {"dir": str(tmp_path / "state")}
    secrets = Secrets(mqtt_password=broker.passwords[A], command_key=KEY, installer_token=INSTALLER)
    panel = Panel(parse_config(data), secrets, simulate=True, clock_sync=Synced())
    await panel.start()
    try:
        await eventually(lambda: panel.mqtt is not None and panel.mqtt.connected, 10, "the panel connected to MQTT")
    except BaseException:
        await panel.stop("test failed")
        raise
    return panel


@pytest.fixture
async def panel(tmp_path: Path, broker: Broker, configured_stun: StunResponder) -> AsyncIterator[Panel]:
    p = await start_panel(tmp_path, broker, media_config(ice_servers=[{"urls": [configured_stun.url]}]))
    media = media_of(p)
    await media.sessions.ice.probe_now()  # the configured server is known to answer before the first offer
    yield p
    await p.stop("test over")


@pytest.fixture
async def backend(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker) as c:
        yield c


def command(cmd: str, *, key: str | None = KEY, exp_in: float = 10, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": str(uuid.uuid4()), "cmd": cmd, "exp": round(time.time() + exp_in, 3), **fields}
    return signed(key, A, body) if key is not None else body


async def settled(client: Client) -> Resources:
    """Tasks and fds once the broker has gone quiet: aiomqtt makes a task per message it waits for, so
    counting while messages are in flight would count one too few."""
    seen = -1
    while seen != len(client.messages):
        seen = len(client.messages)
        await asyncio.sleep(0.2)  # quiet is "nothing new for a while": the window is the condition
    return Resources.now()


def call_statuses(panel: Panel, guid: str) -> list[tuple[str, str, str | None]]:
    rows = panel.store.read_sync(lambda c: c.execute(
        "SELECT data FROM events WHERE type='call.status_updated' ORDER BY seq").fetchall())
    out = []
    for d in (json.loads(r[0]) for r in rows):
        if d["guid"] == guid:
            out.append((d["status"], d["reason"], d.get("who")))
    return out


# -- the wire format -----------------------------------------------------------------------------------------

OFFER_SDP = ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
             "c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
             "a=fingerprint:sha-256 00:11\r\na=rtpmap:111 opus/48000/2\r\n")


def test_an_offer_parses_with_its_defaults_and_a_hangup_names_its_session() -> None:
    c = parse({"id": "offer-0001", "exp": 1767225630, "cmd": "offer", "who": "alice", "sdp": OFFER_SDP})
    assert isinstance(c, OfferCommand) and c.mode == "answer" and c.call_guid is None and c.ice_servers is None
    c = parse({"id": "offer-0002", "exp": 1767225630, "cmd": "offer", "who": "alice", "sdp": OFFER_SDP,
               "mode": "monitor", "ice_servers": [{"urls": "stun:stun.example.net:3478"},
                                                  {"urls": ["turn:t.example.net:3478?transport=udp"],
                                                   "username": "u", "credential": "p"}]})
    assert isinstance(c, OfferCommand) and c.mode == "monitor" and c.ice_servers is not None
    assert c.ice_servers[1].credential == "p"
    h = parse({"id": "hangup-0001", "exp": 1767225630, "cmd": "hangup", "session": "AbC-123_xyz45678"})
    assert isinstance(h, HangupCommand) and h.session == "AbC-123_xyz45678"


@pytest.mark.parametrize("sdp, says", [
    ("", "empty"),
    ("hello, panel", "v=0"),
    (" v=0\r\n", "v=0"),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nthis is no sdp line\r\nm=audio 9 RTP/AVP 0\r\n", "line 4"),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\n\r\nm=audio 9 RTP/AVP 0\r\n", "line 4"),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\na=x\x00y\r\nm=audio 9 RTP/AVP 0\r\n", "line 4"),
    ("v=0\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\n", "origin"),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nm=audio 9 RTP/AVP 0\r\n", "session name"),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", "no audio or video"),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\n" + "a=x-pad:" + "p" * MAX_SDP_BYTES + "\r\n",
     f"at most {MAX_SDP_BYTES}"),
    ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=\ud800\r\nm=audio 9 RTP/AVP 0\r\n", "surrogate"),
])
def test_what_is_not_an_sdp_offer_is_refused_bad_sdp_saying_why(sdp: str, says: str) -> None:
    with pytest.raises(CommandRefused) as e:
        check_sdp(sdp)
    assert e.value.code == "bad_sdp" and says in str(e.value), str(e.value)


def test_real_offers_pass_the_sdp_check() -> None:
    check_sdp(OFFER_SDP)
    check_sdp(OFFER_SDP.replace("\r\n", "\n"))  # bare LF line ends, as RFC 8866 tolerates


def test_payload_bounds_are_per_command() -> None:
    small = {"id": "status-0001", "exp": 1767225630, "cmd": "status", "pad": "x" * 5000}
    with pytest.raises(CommandRefused, match="at most 4096"):
        decode(json.dumps(small).encode())
    big_offer = {"id": "offer-0003", "exp": 1767225630, "cmd": "offer", "who": "a", "sdp": OFFER_SDP + "a=x:" + "p" * 50_000}
    assert decode(json.dumps(big_offer).encode())["cmd"] == "offer"  # large, but an offer may be
    huge = {**big_offer, "sdp": "p" * MAX_OFFER_PAYLOAD}
    with pytest.raises(CommandRefused, match=f"{MAX_OFFER_PAYLOAD} for an offer"):
        decode(json.dumps(huge).encode())
    with pytest.raises(CommandRefused, match="call_guid: only an answer"):
        parse({"id": "offer-0004", "exp": 1767225630, "cmd": "offer", "who": "a", "sdp": OFFER_SDP,
               "mode": "monitor", "call_guid": "g-1"})


# -- end to end over the broker --------------------------------------------------------------------------------


async def test_an_offer_over_mqtt_answers_the_call_media_flows_both_ways_and_hangup_ends_it(
        panel: Panel, backend: Client, configured_stun: StunResponder) -> None:
    before = await settled(backend)
    media = media_of(panel)
    guid = await ring(panel)
    alice = Resident(tone_hz=RESIDENT_TONE)
    offer = command("offer", who="alice", sdp=await alice.offer())
    reply = await backend.request(A, offer, timeout=10)
    assert reply["code"] == "ok", reply
    replayed = await backend.request(A, offer)  # the same command captured and sent again
    assert replayed["code"] == "replayed" and len(media.sessions.sessions) == 1, replayed
    assert (reply["cmd"], reply["role"], reply["call_guid"]) == ("offer", "answerer", guid)
    session = media.sessions.get(reply["session"])
    assert session is not None and session.origin == "mqtt" and session.who == "alice"
    assert reply["sdp"] == session.answer_sdp and reply["sdp"].startswith("v=0")
    # Without ice_servers in the offer the configured STUN server was used (its srflx is in the answer).
    assert srflx(reply["sdp"]) == {CONFIGURED_MAPPED}
    await alice.accept(reply["sdp"])

    await alice.wait_pictures(15)
    counters = alice.counters()
    assert (np.diff(counters) > 0).all(), f"frame counters must increase: {counters}"
    await alice.wait_audio(1.0)
    assert dominant_frequency(alice.received_audio(1.0)) == pytest.approx(PANEL_TONE, abs=5)
    sink = speaker(panel)
    await eventually(lambda: len(sink.samples()) >= 48_000, what="a second of the resident's voice on the speaker")
    assert dominant_frequency(sink.samples(1.0)) == pytest.approx(RESIDENT_TONE, abs=5)
    await eventually(lambda: panel.calls.current is not None and panel.calls.current.state == "connected",
                     what="the call connected")
    assert ("connected", "media_connected", None) in call_statuses(panel, guid)
    assert panel.calls.current.answered_by == "alice"

    # A second resident's answer for the same call is refused, naming the first; nothing changes.
    bob = Resident(tone_hz=700.0)
    statuses = call_statuses(panel, guid)
    refused = await backend.request(A, command("offer", who="bob", call_guid=guid, sdp=await bob.offer()))
    assert refused["code"] == "already_answered", refused
    assert "alice" in refused["message"] and set(refused) == {"code", "message", "id", "cmd"}
    assert list(media.sessions.sessions) == [session.id]
    assert call_statuses(panel, guid) == statuses and panel.calls.current.state == "connected"
    await bob.close()

    # The backend hangs up for alice: her session ends, and the call with it.
    await alice.wait_channel_open()
    done = await backend.request(A, command("hangup", session=session.id))
    assert done["code"] == "ok", done
    assert (done["session"], done["call_guid"]) == (session.id, guid)
    assert done["call"]["status"] == "ended" and done["call"]["guid"] == guid
    assert not media.sessions.sessions and panel.calls.current is None
    assert call_statuses(panel, guid)[-1] == ("ended", "hangup", "alice")
    end = await alice.wait_message(lambda m: m["type"] == "end")
    assert end["reason"] == "remote_end"
    again = await backend.request(A, command("hangup", session=session.id))
    assert again["code"] == "unknown_session", again
    await alice.close()
    await assert_no_leaks(before, panel)


async def test_bad_offers_are_refused_with_their_codes_and_create_nothing(panel: Panel, backend: Client) -> None:
    media = media_of(panel)
    guid = await ring(panel)
    resident = Resident()
    sdp = await resident.offer()
    await resident.close()
    status = await backend.request(A, command("status"))
    assert status["code"] == "ok"
    no_ufrag = "".join(line for line in sdp.splitlines(True) if not line.startswith("a=ice-ufrag"))
    padded = sdp + "".join(f"a=x-pad:{i:06d}{'p' * 1000}\r\n" for i in range(70))  # ~70 KiB: over 64, under 96
    state_before = panel.calls.current.state
    statuses = call_statuses(panel, guid)
    cases: list[tuple[str, dict[str, Any] | bytes, str]] = [
        ("bad_sdp", command("offer", who="alice", sdp="this is not an offer"), "v=0"),
        ("bad_sdp", command("offer", who="alice", sdp=sdp.replace("\r\nm=audio", "\r\nwhat=audio", 1)), "line"),
        ("bad_sdp", command("offer", who="alice", sdp=no_ufrag), "ice-ufrag"),  # refused by the media layer
        # aiortc failed on it deep inside (internal_error on main): refused before it gets there
        ("bad_sdp", command("offer", who="alice", sdp=re.sub(r"a=(sendrecv|recvonly)\r\n", "", sdp)), "direction"),
        ("bad_sdp", command("offer", who="alice", sdp=padded), f"at most {MAX_SDP_BYTES}"),
        ("malformed", command("offer", who="alice", sdp=sdp + "a=x:" + "p" * MAX_OFFER_PAYLOAD + "\r\n"),
         "for an offer"),
        ("malformed", command("offer", who="alice", sdp=sdp, ice_servers=[{"url": "stun:x.example:3478"}]),
         "ice_servers.0.url"),
        ("malformed", command("offer", who="", sdp=sdp), "who"),
        ("unsigned", command("offer", key=None, who="alice", sdp=sdp), "sig"),
        ("bad_signature", {**command("offer", who="alice", sdp=sdp), "who": "mallory"}, "signature"),
        ("expired", command("offer", exp_in=-1, who="alice", sdp=sdp), "expired"),
        ("replayed", signed(KEY, A, {"id": status["id"], "cmd": "offer", "exp": time.time() + 10, "who": "alice",
                                     "sdp": sdp}), status["id"]),
        ("bad_ice_servers", command("offer", who="alice", sdp=sdp, ice_servers=[{"urls": "turn:192.0.2.9:3478"}]),
         "username"),
        ("bad_ice_servers", command("offer", who="alice", sdp=sdp, ice_servers=[{"urls": "https://x.example"}]),
         "stun:/turn:"),
        ("unknown_call", command("offer", who="alice", sdp=sdp, call_guid="no-such-call"), "no-such-call"),
        ("unknown_session", command("hangup", session="AAAAAAAAAAAAAAAA"), "AAAAAAAAAAAAAAAA"),
    ]
    for code, body, says in cases:
        reply = await backend.request(A, body, timeout=10)
        assert reply["code"] == code, (code, says, reply)
        assert says in reply["message"], (code, reply["message"])
        assert "sdp" not in reply and "session" not in reply
        assert not media.sessions.sessions and not media.sessions.ended, (code, media.sessions.ended)
        assert not media.sessions.live_tracks.live() and not media.hub.mixer.inputs
        assert panel.calls.current is not None and panel.calls.current.state == state_before, code
        assert call_statuses(panel, guid) == statuses, code
    # Bigger than the panel's MQTT Maximum Packet Size: the broker never hands it over (no reply) and
    # the link stays up.
    since = len(backend.messages)
    await backend.publish(f"panels/{A}/commands", json.dumps(command("status", pad="x" * 200_000)))
    assert await backend.quiet(backend.on(f"panels/{A}/replies/#"), 0.5, since) == []
    assert panel.mqtt is not None and panel.mqtt.connected
    assert (await backend.request(A, command("status")))["code"] == "ok"


async def test_live_view_uses_the_offers_ice_servers_and_the_call_ending_ends_the_answer(
        panel: Panel, backend: Client, offered_stun: StunResponder) -> None:
    before = await settled(backend)
    media = media_of(panel)
    viewer = Resident(audio="recvonly")
    reply = await backend.request(A, command("offer", who="concierge", mode="monitor", sdp=await viewer.offer(),
                                             ice_servers=[{"urls": offered_stun.url}]), timeout=10)
    assert reply["code"] == "ok", reply
    assert (reply["role"], reply["call_guid"]) == ("viewer", None)
    assert srflx(reply["sdp"]) == {OFFERED_MAPPED}, "the offer's servers replace the configured ones"
    assert panel.calls.current is None, "a live view makes no call"
    await viewer.accept(reply["sdp"])
    await viewer.wait_pictures(5)
    assert (np.diff(viewer.counters()) > 0).all()

    # An empty list: no STUN/TURN at all for this session (host candidates only).
    guid = await ring(panel)
    alice = Resident()
    answer = await backend.request(A, command("offer", who="alice", sdp=await alice.offer(), ice_servers=[]),
                                   timeout=10)
    assert answer["code"] == "ok" and answer["role"] == "answerer", answer
    assert srflx(answer["sdp"]) == set() and "typ host" in answer["sdp"]
    await alice.accept(answer["sdp"])
    await alice.wait_pictures(3)
    await eventually(lambda: panel.calls.current is not None and panel.calls.current.state == "connected",
                     what="the call connected")
    await alice.wait_channel_open()

    # The backend ends the call: the answering session ends with it, the live view goes on.
    ended = await backend.request(A, command("end", who="alice", call_guid=guid))
    assert ended["code"] == "ok", ended
    message = await alice.wait_message(lambda m: m["type"] == "end")
    assert message["reason"] == "call_ended"
    await eventually(lambda: answer["session"] not in media.sessions.sessions, what="the answering session ended")
    assert list(media.sessions.sessions) == [reply["session"]]
    count = len(viewer.counters())
    await viewer.wait_pictures(count + 3)

    done = await backend.request(A, command("hangup", session=reply["session"]))
    assert done["code"] == "ok" and done["call"] is None and done["call_guid"] is None, done
    await alice.close()
    await viewer.close()
    await assert_no_leaks(before, panel)


async def test_without_media_or_without_monitor_offers_are_refused_and_create_nothing(
        tmp_path: Path, broker: Broker, backend: Client) -> None:
    sdp = OFFER_SDP
    bare = await start_panel(tmp_path / "bare", broker, None)
    try:
        guid = await ring(bare)
        statuses = call_statuses(bare, guid)
        reply = await backend.request(A, command("offer", who="alice", sdp=sdp))
        assert reply["code"] == "media_unavailable" and "[media]" in reply["message"], reply
        reply = await backend.request(A, command("hangup", session="AAAAAAAAAAAAAAAA"))
        assert reply["code"] == "media_unavailable", reply
        assert bare.calls.current is not None and bare.calls.current.answered_by is None
        assert call_statuses(bare, guid) == statuses
    finally:
        await bare.stop("test over")
    no_monitor = await start_panel(tmp_path / "no-monitor", broker, media_config(monitor=False))
    try:
        resident = Resident()
        reply = await backend.request(A, command("offer", who="concierge", mode="monitor",
                                                 sdp=await resident.offer(), ice_servers=[]), timeout=10)
        await resident.close()
        assert reply["code"] == "monitor_disabled" and "media.monitor" in reply["message"], reply
        assert not media_of(no_monitor).sessions.sessions and not media_of(no_monitor).sessions.ended
        reply = await backend.request(A, command("offer", who="alice", sdp=sdp))
        assert reply["code"] == "no_call" and "monitor" in reply["message"], reply
    finally:
        await no_monitor.stop("test over")


# -- a browser as the resident, through the backend and the broker ---------------------------------------------


# The resident's page: it makes the offer and takes the answer; in between, the offer travels as the
# resident's app would send it, to the backend, which relays it to the panel as an MQTT command.
MAKE_OFFER = """async () => {
  const pc = new RTCPeerConnection({iceServers: []});
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  pc.addTransceiver(mic.getAudioTracks()[0], {direction: 'sendrecv'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  const video = document.createElement('video');
  video.autoplay = true; video.muted = true; video.playsInline = true;
  document.body.appendChild(video);
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => {
      const t = setTimeout(resolve, 2000);
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); } };
    });
  }
  window.pc = pc;
  return pc.localDescription.sdp;
}"""
TAKE_ANSWER = "async (sdp) => { await window.pc.setRemoteDescription({type: 'answer', sdp}); return true; }"
RENDERED = """() => {
  const v = document.querySelector('video');
  const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  return {width: v ? v.videoWidth : 0, height: v ? v.videoHeight : 0, frames: q ? q.totalVideoFrames : 0,
          state: window.pc ? window.pc.connectionState : null};
}"""


@pytest.mark.browser
async def test_chromium_resident_through_the_backend_and_the_broker(panel: Panel, backend: Client) -> None:
    media = media_of(panel)
    guid = await ring(panel)
    sink = speaker(panel)
    async with chromium() as browser:
        page = await browser.new_page()
        try:
            # Any page of the panel's origin: getUserMedia needs a secure context (loopback HTTP is one).
            assert panel.api is not None
            await page.goto(f"http://127.0.0.1:{panel.api.bound_port}/api/v1/health")
            offer = await page.evaluate(MAKE_OFFER)
            # The backend relays it: an `offer` command for the ringing call, with no STUN/TURN on loopback.
            reply = await backend.request(A, command("offer", who="carol", call_guid=guid, sdp=offer, ice_servers=[]),
                                          timeout=10)
            assert reply["code"] == "ok" and reply["role"] == "answerer", reply
            assert await page.evaluate(TAKE_ANSWER, reply["sdp"])

            async def rendered() -> dict[str, Any] | None:
                r: dict[str, Any] = await page.evaluate(RENDERED)
                return r if r["width"] > 0 and r["frames"] >= 10 else None

            r = await eventually(rendered, 15, "10 frames rendered", interval=0.1)
            assert (r["width"], r["height"]) == (320, 240)
            await eventually(lambda: panel.calls.current is not None and panel.calls.current.state == "connected",
                             what="the call connected by the browser's audio")
            assert panel.calls.current.answered_by == "carol"
            # Chromium's fake microphone beeps; the beeps must reach the panel's speaker.
            await eventually(lambda: float(np.abs(sink.samples(3.0).astype(np.int32)).max(initial=0)) > 1000,
                             timeout=8, what="the browser's microphone on the panel's speaker")
            done = await backend.request(A, command("hangup", session=reply["session"]))
            assert done["code"] == "ok" and done["call"]["status"] == "ended", done
            assert not media.sessions.sessions
        finally:
            await page.close()
