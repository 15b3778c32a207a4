"""Sources and sinks: H.264 pass-through from a file and from a process pipe (no decoding, no
re-encoding), a new viewer's catch-up, VP8 software encoding, devices that fail and recover, and the
small pieces (Annex-B splitting, the test pattern, tokens, offers, config)."""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import time
from pathlib import Path

import numpy as np
import pytest

from panel.daemon import Panel
from panel.errors import ConfigError
from panel.media.annexb import AccessUnitSplitter
from panel.media.audio import dominant_frequency
from panel.media.encoder import EncoderSettings, VideoEncoder
from panel.media.errors import SessionRefused, TokenRefused
from panel.media.pattern import PatternPainter, read_frame_stamp
from panel.media.sessions import check_offer
from panel.media.sources import TIME_BASE
from panel.media.tokens import TokenStore
from panel.media.tracks import PacketVideoTrack
from panel.platform import parse_config

from .eventually import eventually
from .media_resident import Resident
from .media_rig import (
    INSTALLER,
    media_config,
    media_of,
    ring,
    speaker,
    start_panel_inprocess,
)
from .support import config_dict

FILE_FRAMES, GOP = 60, 15


def pattern_h264(path: Path, frames: int = FILE_FRAMES, gop: int = GOP) -> list[bytes]:
    """An Annex-B file of the test pattern (counters 0..frames-1), as a camera's encoder would write it."""
    encoder = VideoEncoder(EncoderSettings("h264", 320, 240, 15, 300, gop))
    painter = PatternPainter(320, 240)
    data = b""
    for i in range(frames):
        frame = painter.paint(i, time.time())
        frame.pts, frame.time_base = i * 6000, TIME_BASE
        data += b"".join(bytes(p) for p in encoder.encode(frame, False))
    path.write_bytes(data)
    return _split(data)


def _split(data: bytes) -> list[bytes]:
    s = AccessUnitSplitter()
    return [au.data for au in s.feed(data) + s.flush()]


def events(panel: Panel, prefix: str) -> list[dict[str, object]]:
    rows = panel.store.read_sync(lambda c: c.execute(
        "SELECT type, data FROM events WHERE type LIKE ? ORDER BY seq", (prefix + "%",)).fetchall())
    return [{"type": r[0], **json.loads(r[1])} for r in rows]


async def watch(panel: Panel, resident: Resident, token: str = INSTALLER) -> None:
    media = media_of(panel)
    session = await media.sessions.create(await resident.offer(), media.tokens.verify(token))
    await resident.accept(session.answer_sdp)


async def test_h264_file_is_passed_through_untouched(tmp_path: Path) -> None:
    file = tmp_path / "camera.h264"
    units = set(pattern_h264(file))
    panel = await start_panel_inprocess(tmp_path, media_config(video={"source": "h264_file", "file": str(file)}))
    try:
        media = media_of(panel)
        stream = media.hub.video
        assert stream is not None and stream.passthrough
        first = Resident(audio="recvonly", datachannel=False)
        await watch(panel, first)
        await first.wait_pictures(20)
        counters = first.counters()
        assert all(0 <= c < FILE_FRAMES for c in counters)
        assert (np.diff(counters) % FILE_FRAMES == 1).mean() >= 0.8, counters
        # Nothing was decoded or encoded: every packet sent is byte for byte one of the file's pictures.
        assert stream.encoder is None and stream.encoded == 0
        track = next(t for t in media.sessions.live_tracks.live() if isinstance(t, PacketVideoTrack))
        assert track.last_item is not None and bytes(track.last_item.packet) in units

        # A viewer joining mid-GOP is handed the current GOP at once (catch-up), squeezed into the
        # time before the newest picture, instead of waiting for the next keyframe.
        await eventually(lambda: 2 <= len(stream.last_gop()) < GOP, what="mid-GOP")
        gop = stream.last_gop()
        feed = stream.subscribe()
        replay = [feed.get_nowait() for _ in range(len(gop))]
        assert replay[0] is not None and replay[0].keyframe and not any(r.keyframe for r in replay[1:])
        assert [bytes(r.packet) for r in replay] == [bytes(g.packet) for g in gop]
        pts = [r.packet.pts for r in replay]
        assert pts == sorted(set(pts)) and pts[-1] == gop[-1].packet.pts
        feed.close()
        second = Resident(audio="recvonly", datachannel=False)
        await watch(panel, second)
        await second.wait_pictures(5)
        await first.close()
        await second.close()
    finally:
        await panel.stop("test over")


async def test_h264_pipe_that_fails_first_is_reported_retried_and_recovers(tmp_path: Path) -> None:
    file = tmp_path / "camera.h264"
    pattern_h264(file)
    marker = tmp_path / "second-start"
    script = (f"if [ -e {shlex.quote(str(marker))} ]; then exec ffmpeg -loglevel error -re -framerate 15 "
              f"-stream_loop -1 -i {shlex.quote(str(file))} -c copy -f h264 -; "
              f"else touch {shlex.quote(str(marker))}; echo 'camera is busy' >&2; exit 3; fi")
    panel = await start_panel_inprocess(tmp_path, media_config(video={"source": "h264_pipe",
                                                                      "command": ["sh", "-c", script]}))
    try:
        resident = Resident(audio="recvonly", datachannel=False)
        await watch(panel, resident)
        await resident.wait_pictures(10, timeout=15)
        assert all(0 <= c < FILE_FRAMES for c in resident.counters())
        await eventually(lambda: len(events(panel, "media.")) >= 2, what="health events")
        lost, recovered = events(panel, "media.")[:2]
        assert lost["type"] == "media.device_lost" and lost["device"] == "camera"
        assert "exited with status 3" in str(lost["error"]) and "camera is busy" in str(lost["error"])
        assert recovered["type"] == "media.device_recovered" and recovered["name"] == lost["name"]
        assert media_of(panel).hub.video.encoded == 0  # type: ignore[union-attr]
        await resident.close()
        await eventually(lambda: not media_of(panel).hub.video.capture.running, what="camera process stopped")  # type: ignore[union-attr]
    finally:
        await panel.stop("test over")


async def test_a_missing_camera_is_reported_and_the_call_goes_on_with_audio(tmp_path: Path) -> None:
    # Not simulated: a simulated panel replaces a V4L2 camera by the test pattern.
    panel = await start_panel_inprocess(tmp_path, media_config(video={"source": "v4l2", "device": "/dev/video77"}),
                                        simulate=False, tamper=None)  # mock pins rest at their pull level
    try:
        guid = await ring(panel)
        media = media_of(panel)
        resident = Resident(tone_hz=1000)
        session = await media.sessions.create(await resident.offer(),
                                              media.tokens.verify(media.issue_call_token(guid, "alice")))
        await resident.accept(session.answer_sdp)
        await resident.wait_audio(1.0)
        assert dominant_frequency(resident.received_audio(1.0)) == pytest.approx(440, abs=5)
        await eventually(lambda: len(speaker(panel).samples()) >= 24_000, what="resident audio on the speaker")
        await eventually(lambda: panel.calls.current.state == "connected", what="call connected")
        lost = await eventually(lambda: events(panel, "media.device_lost"), what="device_lost")
        assert lost[0]["device"] == "camera" and "/dev/video77 does not exist" in str(lost[0]["error"])
        await resident.wait_channel_open()
        resident.send({"type": "video.request"})
        decline = await resident.wait_message(lambda m: m["type"] == "video.decline")
        assert decline["reason"] == "camera_unavailable"
        # The door does not care.
        grant = await panel.door.unlock(cause="call", actor="alice", method="data_channel", call_guid=guid)
        assert grant is not None and panel.hw.relays["main"].value
        await resident.close()
    finally:
        await panel.stop("test over")


async def test_a_missing_microphone_is_reported_and_the_resident_is_still_heard(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media_config(audio={"input": "No Such Microphone"}),
                                        simulate=False, tamper=None)
    try:
        guid = await ring(panel)
        media = media_of(panel)
        resident = Resident(tone_hz=1000)
        session = await media.sessions.create(await resident.offer(),
                                              media.tokens.verify(media.issue_call_token(guid, "alice")))
        await resident.accept(session.answer_sdp)
        await resident.wait_pictures(3)
        await eventually(lambda: len(speaker(panel).samples()) >= 24_000, what="resident audio on the speaker")
        assert dominant_frequency(speaker(panel).samples(0.5)) == pytest.approx(1000, abs=5)
        lost = await eventually(lambda: events(panel, "media.device_lost"), what="device_lost")
        assert lost[0]["device"] == "microphone" and "No Such Microphone" in str(lost[0]["error"])
        await resident.close()
    finally:
        await panel.stop("test over")


async def test_vp8_software_encoding_keeps_keyframes_rare(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media_config(video={"codec": "vp8"}))
    try:
        resident = Resident(audio="recvonly", datachannel=False)
        await watch(panel, resident)
        await resident.wait_pictures(30)
        assert (np.diff(resident.counters()) > 0).all()
        encoder = media_of(panel).hub.video.encoder  # type: ignore[union-attr]
        assert encoder is not None and encoder.frames >= 30
        # PyAV marks raw frames as I; without clearing it every VP8 frame would be a keyframe.
        assert encoder.keyframes <= 3
        await resident.close()
    finally:
        await panel.stop("test over")


# -- the small pieces -----------------------------------------------------------------------------------


def test_annexb_splitter_finds_every_picture_whatever_the_chunking(tmp_path: Path) -> None:
    units = pattern_h264(tmp_path / "a.h264", frames=30)
    data = (tmp_path / "a.h264").read_bytes()
    rng = random.Random(7)
    for _ in range(5):
        splitter, out, i = AccessUnitSplitter(), [], 0
        out += splitter.feed(b"\x17\x42 junk before the first start code")
        while i < len(data):
            n = rng.randint(1, 3000)
            out += splitter.feed(data[i:i + n])
            i += n
        out += splitter.flush()
        assert [au.data for au in out] == units and len(out) == 30
        assert [i for i, au in enumerate(out) if au.keyframe] == [0, 15]


def test_annexb_splitter_refuses_non_annexb_input() -> None:
    with pytest.raises(ValueError, match="Annex-B"):
        AccessUnitSplitter().feed(b"\x00\x00\x00\x18ftypmp42" + bytes(range(1, 256)) * 20_000)


def test_pattern_survives_encoding_and_refuses_other_pictures() -> None:
    painter = PatternPainter(640, 480)
    frame = painter.paint(123_456, 1_700_000_000.25)
    stamp = read_frame_stamp(frame)
    assert stamp is not None and stamp.counter == 123_456 and stamp.wall_ms32 == (1_700_000_000_250 & 0xFFFF_FFFF)
    assert stamp.age_ms(1_700_000_000.75) == 500
    blank = np.full((480, 640), 128, np.uint8)
    from panel.media.pattern import read_stamp
    assert read_stamp(blank) is None


def test_tokens_expire_and_revoke_with_precise_reasons() -> None:
    now = [100.0]
    store = TokenStore(ttl_s=30, clock=lambda: now[0], installer_token="i" * 20)
    token, grant = store.issue("call", subject="alice", call_guid="g1")
    assert store.verify(token) == grant and not token.startswith(grant.token_id)
    ended: list[str] = []
    store.on_revoke(lambda g: ended.append(g.token_id))
    now[0] += 31
    with pytest.raises(TokenRefused) as e:
        store.verify(token)
    assert e.value.code == "token_expired"
    other, g2 = store.issue("call", subject="bob", call_guid="g1")
    _, g3 = store.issue("monitor", subject="bob")
    assert [g.token_id for g in store.revoke_call("g1")] == [grant.token_id, g2.token_id]
    assert ended == [grant.token_id, g2.token_id]
    with pytest.raises(TokenRefused, match="its call ended"):
        store.verify(other)
    assert store.revoke_subject("bob") == [g3]
    for bad, code in ((None, "unauthenticated"), ("", "unauthenticated"), ("pmt_x", "invalid_token")):
        with pytest.raises(TokenRefused) as e:
            store.verify(bad)
        assert e.value.code == code
    assert store.verify("i" * 20).kind == "monitor"
    with pytest.raises(ValueError):
        store.issue("call", subject="x")


def test_offers_are_checked_with_clear_messages() -> None:
    with pytest.raises(SessionRefused, match="must start with"):
        check_offer("<html>")
    with pytest.raises(SessionRefused, match="no a=fingerprint"):
        check_offer("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
                    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n")


def test_media_config_errors_name_the_key() -> None:
    cfg = parse_config(config_dict(media={}))
    assert cfg.media is not None and cfg.media.video.source == "synthetic" and cfg.media.ice_servers == []
    assert parse_config(config_dict()).media is None
    with pytest.raises(ConfigError) as e:
        parse_config(config_dict(media={"video": {"width": 321, "source": "usb"},
                                        "ice_servers": [{"urls": ["stun:ok:3478", "http://x"]}]}))
    text = str(e.value)
    assert "media.video.width: 321 is not allowed; expected an even number of pixels" in text
    assert "media.video.source: \"usb\" is not allowed" in text
    assert "media.ice_servers[0].urls[1]" in text and "STUN/TURN URL" in text
    with pytest.raises(ConfigError, match=r"media\.video\.file: is required when media\.video\.source is"):
        parse_config(config_dict(media={"video": {"source": "h264_file"}}))


async def test_tracks_feed_a_shared_stream_without_a_session(tmp_path: Path) -> None:
    """The hub API the snapshot/MJPEG work builds on: latest_frame and decode_latest."""
    panel = await start_panel_inprocess(tmp_path)
    try:
        stream = media_of(panel).hub.video
        assert stream is not None and stream.latest_frame() is None
        feed = stream.subscribe()
        first = await asyncio.wait_for(feed.get(), 5)
        assert first.keyframe
        raw = stream.latest_frame()
        assert raw is not None and read_frame_stamp(raw.frame) is not None
        picture = await stream.decode_latest()
        assert picture is not None and picture.width == 320
        feed.close()
        await eventually(lambda: not stream.capture.running, what="capture released")
    finally:
        await panel.stop("test over")


def test_a_slow_viewer_is_cut_back_to_the_next_keyframe() -> None:
    """A feed that overflows drops to the next keyframe (a picture without its predecessors cannot be
    decoded) and asks for one; the other viewers' feeds are untouched."""
    from panel.media.capture import Subscription
    from panel.media.sources import EncodedFrame, is_key, make_packet

    def item(seq: int, key: bool) -> EncodedFrame:
        return EncodedFrame(make_packet(b"\x00\x00\x00\x01" + bytes([0x65 if key else 0x41, 0x88]), seq), key, seq,
                            0.0, 0.0)

    asked: list[int] = []
    slow: Subscription[EncodedFrame] = Subscription(3, "resync", is_key=is_key)
    slow.on_resync = lambda: asked.append(1)
    slow.put(item(0, False))
    assert len(slow) == 0, "nothing before the first keyframe"
    for seq, key in [(1, True), (2, False), (3, False), (4, False)]:
        slow.put(item(seq, key))
    assert len(slow) == 0 and slow.waiting_for_key and asked == [1]
    slow.put(item(5, False))
    slow.put(item(6, True))
    slow.put(item(7, False))
    assert [slow.get_nowait().seq for _ in range(2)] == [6, 7]  # type: ignore[union-attr]
