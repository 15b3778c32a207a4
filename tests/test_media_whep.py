"""WHEP over the real HTTP API (uvicorn on a free port, httpx), with a real aiortc resident: the
happy path, every refusal, the session limit, and a peer that vanishes (kill -9) mid-call."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCRtpReceiver

from panel.daemon import Panel

from .eventually import eventually
from .media_resident import Resident
from .media_rig import (
    INSTALLER,
    Resources,
    api,
    assert_no_leaks,
    media_config,
    media_of,
    ring,
    speaker,
    start_panel_inprocess,
)
from .support import ROOT

WHEP = "/api/v1/media/whep"


def sdp_headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path, media_config(max_sessions=2))
    yield p
    await p.stop("test over")


async def test_whep_session_201_location_answer_and_delete(panel: Panel) -> None:
    before = Resources.now()
    resident = Resident(audio="recvonly", datachannel=False)
    async with api(panel) as c:
        options = await c.options(WHEP)
        assert options.status_code == 204 and options.headers["accept-post"] == "application/sdp"
        r = await c.post(WHEP, content=await resident.offer(), headers=sdp_headers(INSTALLER))
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "application/sdp"
        location = r.headers["location"]
        assert location.startswith(WHEP + "/") and r.text.startswith("v=0")
        assert "Location" in r.headers["access-control-expose-headers"]
        await resident.accept(r.text)
        await resident.wait_pictures(5)
        assert (await c.patch(location, content="a=candidate:1", headers={
            "Content-Type": "application/trickle-ice-sdpfrag", "Authorization": f"Bearer {INSTALLER}"})).status_code == 405
        listing = (await c.get("/api/v1/media/sessions", headers={"Authorization": f"Bearer {INSTALLER}"})).json()
        assert [s["session"] for s in listing["sessions"]] == [location.rsplit("/", 1)[1]]
        assert listing["devices"]["camera"]["state"] == "running"
        d = await c.delete(location, headers={"Authorization": f"Bearer {INSTALLER}"})
        assert d.status_code == 200
        assert media_of(panel).sessions.sessions == {}
        again = await c.delete(location, headers={"Authorization": f"Bearer {INSTALLER}"})
        assert again.status_code == 404 and again.json()["code"] == "unknown_session"
    await resident.close()
    await assert_no_leaks(before, panel)


async def test_whep_refusals_are_specific_and_change_nothing(panel: Panel) -> None:
    media = media_of(panel)
    offer = await Resident().offer()
    async with api(panel) as c:
        r = await c.post(WHEP, content=offer, headers={"Content-Type": "text/plain",
                                                       "Authorization": f"Bearer {INSTALLER}"})
        assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
        r = await c.post(WHEP, content="hello, panel", headers=sdp_headers(INSTALLER))
        assert r.status_code == 400 and r.json() == {
            "code": "invalid_sdp", "message": "the body is not an SDP offer: it must start with \"v=0\""}
        r = await c.post(WHEP, content="", headers=sdp_headers(INSTALLER))
        assert r.status_code == 400 and "empty" in r.json()["message"]
        no_media = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        r = await c.post(WHEP, content=no_media, headers=sdp_headers(INSTALLER))
        assert r.status_code == 400 and "no audio or video" in r.json()["message"]
        no_ice = "\r\n".join(line for line in offer.split("\r\n") if not line.startswith("a=ice-"))
        r = await c.post(WHEP, content=no_ice, headers=sdp_headers(INSTALLER))
        assert r.status_code == 400 and "ice-ufrag" in r.json()["message"]

        r = await c.post(WHEP, content=offer, headers=sdp_headers(None))
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await c.post(WHEP, content=offer, headers=sdp_headers("pmt_not-a-real-token"))
        assert r.status_code == 401 and r.json()["code"] == "invalid_token"
        guid = await ring(panel)
        expired, _ = media.tokens.issue("call", subject="alice", call_guid=guid, ttl_s=0.05)
        await asyncio.sleep(0.1)  # the token's lifetime running out is the condition
        r = await c.post(WHEP, content=offer, headers=sdp_headers(expired))
        assert r.status_code == 401 and r.json()["code"] == "token_expired"
        revoked, grant = media.tokens.issue("call", subject="alice", call_guid=guid)
        media.tokens.revoke(grant.token_id)
        r = await c.post(WHEP, content=offer, headers=sdp_headers(revoked))
        assert r.status_code == 401 and r.json()["code"] == "token_revoked"
        vp8_only = Resident(audio="recvonly", datachannel=False)
        for t in vp8_only.pc.getTransceivers():
            if t.kind == "video":
                t.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                                       if c.mimeType == "video/VP8"])
        r = await c.post(WHEP, content=await vp8_only.offer(), headers=sdp_headers(INSTALLER))
        assert r.status_code == 400 and r.json()["code"] == "no_common_codec" and "H264" in r.json()["message"]
    await vp8_only.close()
    assert media.sessions.sessions == {} and panel.calls.current.state == "ringing"


async def test_too_many_sessions_is_503_and_a_call_outranks_live_view(panel: Panel) -> None:
    before = Resources.now()
    media = media_of(panel)
    viewers = [Resident(audio="recvonly", datachannel=False) for _ in range(3)]
    async with api(panel) as c:
        for v in viewers[:2]:
            r = await c.post(WHEP, content=await v.offer(), headers=sdp_headers(INSTALLER))
            assert r.status_code == 201
            await v.accept(r.text)
        r = await c.post(WHEP, content=await viewers[2].offer(), headers=sdp_headers(INSTALLER))
        assert r.status_code == 503 and r.json()["code"] == "too_many_sessions"
        assert r.headers["retry-after"] == "10" and "max_sessions = 2" in r.json()["message"]
        assert len(media.sessions.sessions) == 2
        # A resident answering a call gets a slot: the oldest live view makes room.
        guid = await ring(panel)
        resident = Resident()
        r = await c.post(WHEP, content=await resident.offer(), headers=sdp_headers(media.issue_call_token(guid, "alice")))
        assert r.status_code == 201, r.text
        await resident.accept(r.text)
        await resident.wait_pictures(3)
        assert ("preempted_by_call" in [reason for _, reason in media.sessions.ended])
    for v in [*viewers, resident]:
        await v.close()
    await assert_no_leaks(before, panel)


async def test_a_vanished_peer_is_cleaned_up_and_fails_the_call(panel: Panel) -> None:
    before = Resources.now()
    media = media_of(panel)
    guid = await ring(panel)
    url = f"http://127.0.0.1:{panel.api.bound_port}{WHEP}"  # type: ignore[union-attr]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.media_peer_process", url, media.issue_call_token(guid, "alice"),
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert first.startswith("session "), first
        second = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert second.startswith("pictures "), second
        await eventually(lambda: panel.calls.current.state == "connected", what="call connected")
        await eventually(lambda: len(speaker(panel).samples()) > 4800, what="resident audio on the speaker")
        proc.send_signal(signal.SIGKILL)  # no goodbye: no DTLS close, no RTCP BYE
        await proc.wait()
        # media.peer_timeout_s is 2 here: the session goes long before aiortc's ~30 s consent timeout.
        await eventually(lambda: not media.sessions.sessions, timeout=6, what="session cleaned up")
        assert media.sessions.ended[-1][1] == "peer_timeout"
        assert panel.calls.current is None
        rows = panel.store.read_sync(lambda c: c.execute(
            "SELECT data FROM events WHERE type='call.status_updated' ORDER BY seq DESC LIMIT 1").fetchall())
        last = json.loads(rows[0][0])
        assert (last["status"], last["reason"]) == ("failed", "media_lost")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await assert_no_leaks(before, panel)


async def test_without_media_whep_says_so_and_the_door_works(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media=None)
    try:
        assert panel.media is None
        async with api(panel) as c:
            r = await c.post(WHEP, content=await Resident().offer(), headers=sdp_headers(INSTALLER))
            assert r.status_code == 503 and r.json()["code"] == "media_unavailable" and r.headers["retry-after"]
        grant = await panel.door.unlock(cause="remote", actor="backend", method="api")
        assert grant is not None and panel.hw.relays["main"].value
    finally:
        await panel.stop("test over")


async def test_an_api_resident_credential_answers_and_its_revocation_ends_the_session(panel: Panel) -> None:
    """Credentials issued on the API (POST /api/v1/auth/tokens) work for WHEP like the media's own."""
    await ring(panel)
    media = media_of(panel)
    resident = Resident(tone_hz=1000)
    async with api(panel) as c:
        issued = await c.post("/api/v1/auth/tokens", headers={"Authorization": f"Bearer {INSTALLER}"},
                              json={"role": "resident", "subject": "alice", "unit_id": "303", "ttl_s": 600})
        assert issued.status_code == 201, issued.text
        token, token_id = issued.json()["token"], issued.json()["credential"]["token_id"]
        r = await c.post(WHEP, content=await resident.offer(), headers=sdp_headers(token))
        assert r.status_code == 201, r.text
        await resident.accept(r.text)
        await resident.wait_pictures(3)
        session = media.sessions.get(r.headers["location"].rsplit("/", 1)[1])
        assert session is not None and session.role == "answerer" and session.who == "alice"
        await eventually(lambda: panel.calls.current.state == "connected", what="call connected")
        revoked = await c.delete(f"/api/v1/auth/tokens/{token_id}", headers={"Authorization": f"Bearer {INSTALLER}"})
        assert revoked.status_code == 200, revoked.text
        await eventually(lambda: session.state == "closed", timeout=2, what="session ended by the revocation")
        assert session.close_reason == "revoked"
    await resident.close()
