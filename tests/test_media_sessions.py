"""WebRTC sessions end to end: a real aiortc resident on loopback against a whole simulated panel
(synthetic camera with a frame counter, 440 Hz microphone, recording speaker, the real call logic)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from panel.api.principals import ApiAuth
from panel.daemon import Panel
from panel.errors import http_status
from panel.media.audio import dominant_frequency
from panel.media.errors import SessionRefused, TokenRefused
from panel.media.sessions import Session

from .eventually import eventually
from .media_resident import Resident
from .media_rig import (
    Resources,
    api,
    assert_no_leaks,
    media_config,
    media_of,
    ring,
    speaker,
    start_panel_inprocess,
)

PANEL_TONE = 440.0
RESIDENT_TONE = 1000.0


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path)
    yield p
    await p.stop("test over")


async def join(panel: Panel, resident: Resident, token: str, who: str | None = None) -> Session:
    media = media_of(panel)
    session = await media.sessions.create(await resident.offer(), media.tokens.verify(token), who=who)
    await resident.accept(session.answer_sdp)
    return session


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def call_statuses(panel: Panel, guid: str) -> list[tuple[str, str]]:
    rows = panel.store.read_sync(lambda c: c.execute(
        "SELECT data FROM events WHERE type='call.status_updated' ORDER BY seq").fetchall())
    return [(d["status"], d["reason"]) for d in (json.loads(r[0]) for r in rows) if d["guid"] == guid]


async def test_call_carries_the_pattern_and_both_tones_and_connects_the_call(panel: Panel) -> None:
    before = Resources.now()
    guid = await ring(panel)
    media = media_of(panel)
    resident = Resident(tone_hz=RESIDENT_TONE)
    session = await join(panel, resident, media.issue_call_token(guid, "alice"))
    assert session.role == "answerer" and panel.calls.current.state in ("connecting", "connected")

    await resident.wait_pictures(15)
    counters = resident.counters()
    steps = np.diff(counters)
    assert (steps > 0).all(), f"frame counters must increase: {counters}"
    assert (steps == 1).mean() >= 0.8, f"most pictures must arrive, in order: {counters}"
    assert counters[0] < 10, "the first viewer starts with the capture"
    assert all(p.width == 320 for p in resident.pictures)

    await resident.wait_audio(1.0)
    assert dominant_frequency(resident.received_audio(1.0)) == pytest.approx(PANEL_TONE, abs=5)
    sink = speaker(panel)
    await eventually(lambda: len(sink.samples()) >= 48_000, what="a second of the resident's voice on the speaker")
    assert dominant_frequency(sink.samples(1.0)) == pytest.approx(RESIDENT_TONE, abs=5)

    await eventually(lambda: panel.calls.current is not None and panel.calls.current.state == "connected",
                     what="call connected")
    assert ("connected", "media_connected") in call_statuses(panel, guid)
    assert panel.calls.current.answered_by == "alice"

    await resident.close()  # the resident hangs up: its DTLS close reaches the panel
    await eventually(lambda: panel.calls.current is None, what="call ended")
    assert call_statuses(panel, guid)[-1] == ("ended", "hangup")
    assert session.close_reason == "peer_closed"
    await assert_no_leaks(before, panel)


async def test_mute_from_either_side_is_applied_and_reported(panel: Panel) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    resident = Resident(tone_hz=RESIDENT_TONE)
    session = await join(panel, resident, media.issue_call_token(guid, "alice"))
    await resident.wait_pictures(5)
    await resident.wait_channel_open()
    await resident.wait_audio(0.5)

    # The resident turns the panel's camera off: pictures stop, and the state says so.
    resident.send({"type": "mute", "kind": "video", "muted": True, "target": "panel"})
    state = await resident.wait_message(lambda m: m["type"] == "state" and m["muted"]["panel"]["video"])
    assert state["session"] == session.id
    count = len(resident.pictures)
    await asyncio.sleep(0.8)  # a window in which no picture may come
    assert len(resident.pictures) - count <= 2, "pictures kept coming with the camera muted"
    resident.send({"type": "mute", "kind": "video", "muted": False, "target": "panel"})
    await resident.wait_pictures(len(resident.counters()) + 5)

    # The panel mutes its microphone (e.g. a backend command): the resident hears silence.
    session.set_mute("audio", True)
    await resident.wait_message(lambda m: m["type"] == "state" and m["muted"]["panel"]["audio"])
    await eventually(lambda: rms(resident.received_audio(0.3)) < 50, 3, "silence at the resident")
    session.set_mute("audio", False)
    await eventually(lambda: rms(resident.received_audio(0.3)) > 1000, 3, "the panel's microphone again")

    # The resident reports its own microphone muted: kept and reported back.
    resident.send({"type": "mute", "kind": "audio", "muted": True})
    state = await resident.wait_message(lambda m: m["type"] == "state" and m["muted"]["remote"]["audio"])
    assert session.info()["muted"] == {"panel": {"audio": False, "video": False},
                                       "remote": {"audio": True, "video": False},
                                       "call": {"audio": False, "video": False}}
    resident.send({"type": "mute", "kind": "camera", "muted": True})
    error = await resident.wait_message(lambda m: m["type"] == "error")
    assert error["code"] == "invalid_message" and "kind" in error["message"]
    await resident.close()


async def test_api_mute_reaches_every_session_of_the_call_and_unmute_resumes(panel: Panel) -> None:
    """POST /api/v1/calls/mute really stops what the panel sends (old code: a getattr of a method nobody
    had, so the resident kept hearing and seeing the entrance), and a session joining later starts muted."""
    guid = await ring(panel)
    media = media_of(panel)
    resident = Resident(tone_hz=RESIDENT_TONE)
    await join(panel, resident, media.issue_call_token(guid, "alice"))
    await resident.wait_pictures(5)
    await resident.wait_channel_open()
    await eventually(lambda: rms(resident.received_audio(0.3)) > 1000, what="the entrance tone at the resident")
    secret, _ = await ApiAuth.for_panel(panel).tokens.issue(kind="token", role="resident", subject="alice",
                                                            issued_by="test", ttl_s=3600, unit_id="303")
    alice = {"Authorization": f"Bearer {secret}"}
    viewer = Resident(audio="")
    try:
        async with api(panel) as c:
            r = await c.post("/api/v1/calls/mute", headers=alice, json={"audio": True, "video": True})
            assert r.status_code == 200, r.text
            assert r.json()["muted"] == {"audio": True, "video": True} and r.json()["media"] is True
            state = await resident.wait_message(lambda m: m["type"] == "state" and m["muted"]["call"]["audio"]
                                                and m["muted"]["call"]["video"])
            assert state["muted"]["panel"] == {"audio": False, "video": False}  # the session's own switch untouched
            await eventually(lambda: rms(resident.received_audio(0.3)) < 50, what="silence from the muted microphone")
            shown = (await c.get("/api/v1/state", headers=alice)).json()["call"]["call"]
            assert shown["muted"] == {"audio": True, "video": True}
            await panel.journal.flush()
            rows = panel.store.read_sync(lambda c: c.execute(
                "SELECT data FROM events WHERE type='call.muted' ORDER BY seq").fetchall())
            assert [(d["muted"], d["by"], d["media"]) for d in (json.loads(r[0]) for r in rows)] == [
                ({"audio": True, "video": True}, "alice", True)]

            # A viewer joining the muted call gets no pictures either; the resident's audio is the clock.
            await join(panel, viewer, media.issue_call_token(guid, "bob", view_only=True))
            pictures = len(resident.pictures)
            await resident.wait_audio(len(resident.received_audio()) / 48000 + 1.0)
            assert len(resident.pictures) - pictures <= 2, "pictures kept coming with the call's camera muted"
            assert viewer.pictures == [], "a session joining a muted call got pictures"

            r = await c.post("/api/v1/calls/mute", headers=alice, json={"audio": False, "video": False})
            assert r.json()["muted"] == {"audio": False, "video": False}
            await eventually(lambda: rms(resident.received_audio(0.3)) > 1000, what="the tone back after unmute")
            await resident.wait_pictures(len(resident.counters()) + 5)
            await viewer.wait_pictures(3)
    finally:
        await viewer.close()
        await resident.close()


async def test_revoking_the_answerers_credential_ends_its_session_and_the_call(panel: Panel) -> None:
    """The answerer's media runs on their API credential (WHEP); revoking it ends the session *and* the call
    (old code: the session ended and the call stayed connected, without media, until max_call_s)."""
    guid = await ring(panel)
    auth = ApiAuth.for_panel(panel)
    secret, p = await auth.tokens.issue(kind="token", role="resident", subject="alice", issued_by="test",
                                        ttl_s=3600, unit_id="303")
    resident = Resident(tone_hz=RESIDENT_TONE)
    try:
        async with api(panel) as c:
            r = await c.post("/api/v1/media/whep", content=await resident.offer(),
                             headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/sdp"})
            assert r.status_code == 201, r.text
            await resident.accept(r.text)
            await eventually(lambda: panel.calls.current is not None and panel.calls.current.state == "connected",
                             what="call connected")
            session_id = r.headers["location"].rsplit("/", 1)[1]
            await auth.tokens.revoke([p.token_id])
            await eventually(lambda: panel.calls.current is None, what="the call ended with the credential")
            await panel.journal.flush()
            assert call_statuses(panel, guid)[-1] == ("ended", "credential_revoked")
            # Whichever revocation listener runs first, the session goes down with its call.
            await eventually(lambda: media_of(panel).session_info(session_id) is None, what="the session closed")
            assert {reason for sid, reason in media_of(panel).sessions.ended if sid == session_id} & {
                "revoked", "call_ended"}
    finally:
        await resident.close()


async def test_audio_only_start_then_video_and_back_with_renegotiation(panel: Panel) -> None:
    before = Resources.now()
    guid = await ring(panel)
    media = media_of(panel)
    resident = Resident(video="inactive")
    session = await join(panel, resident, media.issue_call_token(guid, "alice"))
    await resident.wait_channel_open()
    await resident.wait_audio(0.5)
    assert resident.pictures == [] and session.info()["video"] == "off"
    assert media.hub.video is not None and media.hub.video.viewers == 0, "no encoding for an audio-only call"

    # Request, cancel.
    resident.send({"type": "video.request"})
    await resident.wait_message(lambda m: m["type"] == "video.accept")
    assert session.video_pending == "remote"
    resident.send({"type": "video.cancel"})
    await eventually(lambda: session.video_pending is None, what="request canceled")

    # Request, accept, renegotiate: video flows.
    resident.send({"type": "video.request"})
    await resident.wait_message(lambda m: m["type"] == "video.accept" and len(resident.messages) > 2)
    await resident.renegotiate(video="recvonly")
    await resident.wait_pictures(5)
    assert session.video_on and session.info()["video"] == "on"
    await resident.wait_message(lambda m: m["type"] == "state" and m["video"] == "on")

    # And back to audio only: the camera stops at once, then the section is renegotiated inactive.
    resident.send({"type": "video.stop"})
    await eventually(lambda: not session.video_on, what="video off")
    count = len(resident.pictures)
    await resident.renegotiate(video="inactive")
    await asyncio.sleep(0.5)  # a window in which no picture may come
    assert len(resident.pictures) - count <= 2
    await eventually(lambda: media.hub.video.viewers == 0, what="the camera stream released")

    # The panel asks for video and the resident declines.
    assert session.request_video()
    await resident.wait_message(lambda m: m["type"] == "video.request")
    resident.send({"type": "video.decline"})
    await eventually(lambda: session.video_pending is None, what="request declined")
    await resident.close()
    await assert_no_leaks(before, panel)


async def test_custom_data_both_ways_and_bad_messages(panel: Panel) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    heard: list[object] = []
    media.sessions.data_listeners.append(lambda s, data: heard.append((s.who, data)))
    resident = Resident()
    session = await join(panel, resident, media.issue_call_token(guid, "alice"))
    await resident.wait_channel_open()

    resident.send({"type": "data", "data": {"text": "coming down", "n": 1}})
    await eventually(lambda: heard, what="custom data at the panel")
    assert heard == [("alice", {"text": "coming down", "n": 1})] and list(session.received) == [heard[0][1]]
    assert session.send_data({"notice": "door opened"})
    msg = await resident.wait_message(lambda m: m["type"] == "data")
    assert msg["data"] == {"notice": "door opened"}

    resident.channel.send("{not json")
    assert (await resident.wait_message(lambda m: m["type"] == "error"))["code"] == "invalid_json"
    resident.send({"type": "teleport"})
    err = await resident.wait_message(lambda m: m["type"] == "error" and m.get("in_reply_to") == "teleport")
    assert err["code"] == "unknown_type"
    await resident.close()


async def test_second_answer_is_refused_with_the_reason(panel: Panel) -> None:
    before = Resources.now()
    guid = await ring(panel)
    media = media_of(panel)
    alice, bob = Resident(), Resident()
    await join(panel, alice, media.issue_call_token(guid, "alice"))
    await alice.wait_audio(0.2)
    with pytest.raises(SessionRefused) as refused:
        await join(panel, bob, media.issue_call_token(guid, "bob"))
    assert refused.value.code == "already_answered" and http_status(refused.value.code) == 409
    assert "already answered by alice" in str(refused.value)
    assert len(media.sessions.sessions) == 1 and panel.calls.current.answered_by == "alice"
    await bob.close()
    await alice.close()
    await eventually(lambda: panel.calls.current is None, what="call ended")
    await assert_no_leaks(before, panel)


async def test_a_resident_whose_answer_was_lost_can_offer_again(panel: Panel) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    before = Resources.now()
    lost = Resident()
    first = await media.sessions.create(await lost.offer(), media.tokens.verify(media.issue_call_token(guid, "alice")))
    # The answer never reaches alice's app, so no media flows; her app retries with a new offer.
    retry = Resident()
    second = await join(panel, retry, media.issue_call_token(guid, "alice"))
    assert second.role == "answerer" and second.id != first.id
    await eventually(lambda: first.state == "closed", what="the stalled session closed")
    assert first.close_reason == "superseded"
    await retry.wait_audio(0.3)
    await eventually(lambda: panel.calls.current.state == "connected", what="connected")
    # Someone else still cannot take the call over, stalled or not.
    bob = Resident()
    with pytest.raises(SessionRefused) as refused:
        await join(panel, bob, media.issue_call_token(guid, "bob"))
    assert refused.value.code == "already_answered"
    assert ("failed", "media_lost") not in call_statuses(panel, guid)
    for r in (bob, retry, lost):
        await r.close()
    await eventually(lambda: panel.calls.current is None, what="call ended")
    await assert_no_leaks(before, panel)


async def test_an_answer_elsewhere_first_refuses_the_session(panel: Panel) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    await panel.calls.answer(guid, "carol")  # e.g. over MQTT, before any media
    resident = Resident()
    with pytest.raises(SessionRefused) as refused:
        await join(panel, resident, media.issue_call_token(guid, "alice"))
    assert refused.value.code == "already_answered" and "carol" in str(refused.value)
    await resident.close()
    # Carol's own media session is the answer she already gave: accepted.
    carol = Resident()
    session = await join(panel, carol, media.issue_call_token(guid, "carol"))
    assert session.role == "answerer"
    await carol.wait_audio(0.3)
    await eventually(lambda: panel.calls.current.state == "connected", what="connected")
    await carol.close()


async def test_join_view_only_when_allowed(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media_config(join_view_only=True))
    try:
        guid = await ring(panel)
        media = media_of(panel)
        alice, bob = Resident(), Resident(tone_hz=2000)
        await join(panel, alice, media.issue_call_token(guid, "alice"))
        viewer = await join(panel, bob, media.issue_call_token(guid, "bob"))
        assert viewer.role == "viewer"
        await bob.wait_pictures(3)
        assert list(media.hub.mixer.inputs) == [f"session:{media.sessions.answerers[guid].id}"], \
            "only the answerer is on the speaker"
        await alice.close()
        await bob.close()
    finally:
        await panel.stop("test over")


async def test_the_panel_ending_the_call_ends_the_session_and_its_token(panel: Panel) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    token = media.issue_call_token(guid, "alice")
    resident = Resident()
    session = await join(panel, resident, token)
    await resident.wait_channel_open()
    await resident.wait_pictures(2)
    await panel.calls.end(guid, "backend", "hangup")
    end = await resident.wait_message(lambda m: m["type"] == "end")
    assert end["reason"] == "call_ended"
    await eventually(lambda: session.state == "closed", what="session closed")
    with pytest.raises(TokenRefused) as refused:
        media.tokens.verify(token)
    assert refused.value.code == "token_revoked" and "call ended" in str(refused.value)
    await resident.close()


async def test_revoking_a_token_ends_its_session_at_once(panel: Panel) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    token, grant = media.tokens.issue("call", subject="alice", call_guid=guid)
    resident = Resident()
    session = await join(panel, resident, token)
    await resident.wait_channel_open()
    media.tokens.revoke(grant.token_id)
    end = await resident.wait_message(lambda m: m["type"] == "end", timeout=2)
    assert end["reason"] == "revoked"
    await eventually(lambda: session.state == "closed", timeout=2, what="session closed")
    await resident.close()


async def test_viewers_share_one_encode(panel: Panel) -> None:
    before = Resources.now()
    media = media_of(panel)
    stream = media.hub.video
    assert stream is not None
    viewers = [Resident(audio="recvonly", datachannel=False) for _ in range(3)]
    for i, v in enumerate(viewers):
        await join(panel, v, "installer-token-0123456789")
        await v.wait_pictures(3)
        assert stream.viewers == i + 1
    for v in viewers:
        await v.wait_pictures(15)
    # One encode per captured picture, however many viewers: never one per viewer.
    assert stream.encoded <= stream.capture.items
    assert stream.encoded >= 0.8 * stream.capture.items
    assert stream.encoder is not None and stream.encoder.keyframes <= 1 + len(viewers) + 2
    # A viewer's picture-loss report (a real RTCP PLI over the wire) makes the shared encoder send
    # a keyframe; aiortc alone would only flag its own (unused) encoder.
    keyframes = stream.encoder.keyframes
    session = next(iter(media.sessions.sessions.values()))
    ssrc = next(t.sender._ssrc for t in session.pc.getTransceivers() if t.kind == "video")
    receiver = next(t.receiver for t in viewers[0].pc.getTransceivers() if t.kind == "video")
    await receiver._send_rtcp_pli(ssrc)
    await eventually(lambda: stream.encoder is not None and stream.encoder.keyframes > keyframes,
                     what="keyframe after PLI")
    for v in viewers:
        await v.close()
    await assert_no_leaks(before, panel)


async def test_mqtt_signalled_offer_gets_an_answer(panel: Panel) -> None:
    guid = await ring(panel)
    media = media_of(panel)
    resident = Resident(tone_hz=RESIDENT_TONE)
    answer = await media.answer_offer(await resident.offer(), call_guid=guid, who="dave", ice_servers=[])
    assert answer.startswith("v=0") and "a=fingerprint" in answer
    await resident.accept(answer)
    await resident.wait_pictures(3)
    await eventually(lambda: panel.calls.current.state == "connected", what="connected")
    assert panel.calls.current.answered_by == "dave"
    with pytest.raises(SessionRefused) as refused:
        await media.answer_offer(await Resident().offer(), call_guid=guid, who="erin",
                                 ice_servers=[{"urls": ["http://not-ice"]}])
    assert refused.value.code == "invalid_ice_servers"
    await resident.close()



async def test_a_call_answered_over_whep_ends_when_the_answerers_credential_expires(panel: Panel) -> None:
    """The call lasts as long as the credential it was answered with (old code: until max_call_s)."""
    guid = await ring(panel)
    secret, _ = await ApiAuth.for_panel(panel).tokens.issue(kind="token", role="resident", subject="alice",
                                                            issued_by="test", ttl_s=4.0, unit_id="303")
    resident = Resident(tone_hz=RESIDENT_TONE)
    try:
        async with api(panel) as c:
            r = await c.post("/api/v1/media/whep", content=await resident.offer(),
                             headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/sdp"})
            assert r.status_code == 201, r.text
            await resident.accept(r.text)
            await eventually(lambda: panel.calls.current is None, timeout=10, what="the call ended at the expiry")
            await panel.journal.flush()
            assert call_statuses(panel, guid)[-1] == ("ended", "credential_expired")
            await eventually(lambda: not media_of(panel).sessions.sessions, what="the call's sessions closed")
    finally:
        await resident.close()


def test_nothing_outside_the_media_package_reaches_into_sessions() -> None:
    """MediaService is the only way in: no module outside panel/media imports sessions.py or walks
    ``media.sessions`` to a Session object."""
    import re
    from pathlib import Path as _Path

    root = _Path(__file__).resolve().parent.parent / "panel"
    pattern = re.compile(r"media\.sessions\b|from \.\.?media\.sessions import|\.sessions\.(create|get|sessions)\b")
    offenders = [f"{path.relative_to(root.parent)}:{n}" for path in root.rglob("*.py")
                 if "media" not in path.relative_to(root).parts[:1]
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == [], f"use MediaService's public methods instead: {offenders}"

async def test_stopping_media_waits_for_a_preempted_session_to_close(tmp_path: Path) -> None:
    # A call preempting a live view closes the viewer in the background, after taking it out of
    # ``sessions``: stopping media must still wait for that close (it was a task nobody held or awaited).
    panel = await start_panel_inprocess(tmp_path, media_config(max_sessions=1))
    try:
        media = media_of(panel)
        viewer = Resident(audio="recvonly", datachannel=False)
        watching = await join(panel, viewer, "installer-token-0123456789")
        # The viewer's close starts only once the answerer's session has closed, so it is the last
        # thing still running when stopping gets to the sessions it knows
        answering: list[Session] = []
        answered = asyncio.Event()
        close = watching.close

        async def close_after_the_answerer(reason: str, *, notify: bool = True) -> None:
            await answered.wait()
            await answering[0].closed.wait()
            await close(reason, notify=notify)

        watching.close = close_after_the_answerer  # type: ignore[method-assign]
        guid = await ring(panel)
        token, _ = media.tokens.issue("call", subject="alice", call_guid=guid)
        resident = Resident()
        answering.append(await join(panel, resident, token))
        answered.set()
        assert watching.id not in media.sessions.sessions and watching.state != "closed"
        await media.sessions.close()
        assert watching.state == "closed"
        assert ("preempted_by_call" in dict(media.sessions.ended).values())
        await viewer.close()
        await resident.close()
    finally:
        await panel.stop("test over")
