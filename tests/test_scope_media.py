"""Live view only for the roles and moments docs/media.md names, never into another unit's call unless
configured; media sessions capped per credential and per address with sessions kept for the installer
and residents; a session ends when its credential expires (issue 9, item 2). A whole simulated panel
with media on a FakeClock (the expiry is a clock timer), real aiortc residents over the real HTTP API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.api.principals import ApiAuth, Role
from panel.auth import Secrets
from panel.daemon import Panel
from panel.media.mjpeg import MjpegStreamer
from panel.platform import FakeClock, parse_config

from .eventually import eventually
from .media_resident import Resident
from .media_rig import INSTALLER, api, media_config, media_of, ring
from .support import config_dict

WHEP = "/api/v1/media/whep"


async def _panel(tmp_path: Path, clock: FakeClock, **media: Any) -> Panel:
    data = config_dict(media=media_config(**media))
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    panel = Panel(parse_config(data), Secrets(installer_token=INSTALLER), simulate=True, clock=clock)
    await panel.start()
    return panel


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def residents() -> AsyncIterator[list[Resident]]:
    made: list[Resident] = []
    yield made
    for r in made:
        await r.close()


async def _credential(panel: Panel, role: Role, subject: str, unit_id: str, ttl_s: float = 3600) -> str:
    secret, _ = await ApiAuth.for_panel(panel).tokens.issue(kind="token", role=role, subject=subject, issued_by="test",
                                                            ttl_s=ttl_s, unit_id=unit_id)
    return secret


def _mjpeg(panel: Panel) -> MjpegStreamer:
    assert panel.visitor is not None and panel.visitor.mjpeg is not None
    return panel.visitor.mjpeg


async def _watch_mjpeg(c: httpx.AsyncClient, stack: contextlib.AsyncExitStack, secret: str) -> tuple[int, str]:
    """Open the MJPEG stream and hold it until ``stack`` closes; its status and refusal code."""
    r = await stack.enter_async_context(c.stream("GET", "/api/v1/video.mjpeg",
                                                 headers={"Authorization": f"Bearer {secret}"}))
    if r.status_code != 200:
        await r.aread()
        return r.status_code, r.json()["code"]
    return 200, "ok"


async def _whep(c: httpx.AsyncClient, residents: list[Resident], secret: str) -> tuple[int, str, httpx.Response]:
    resident = Resident(audio="recvonly", datachannel=False)
    residents.append(resident)
    r = await c.post(WHEP, content=await resident.offer(),
                     headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {secret}"})
    code = r.json()["code"] if r.headers.get("content-type", "").startswith("application/json") else "ok"
    return r.status_code, code, r


async def test_session_caps_reserves_and_no_live_view_into_another_units_call(
        tmp_path: Path, clock: FakeClock, residents: list[Resident]) -> None:
    """4 sessions, 2 per credential, 3 per address, 1 kept for the installer and residents; viewers and
    residents may watch at any time, but not into another unit's call. Old code: any viewer or resident
    got live view at any time, also during another unit's call, and one credential could take every session."""
    panel = await _panel(tmp_path, clock, max_sessions=4, max_sessions_per_credential=2, max_sessions_per_address=3,
                         sessions_reserved=1, live_view={"viewer": "any_time", "resident": "any_time"},
                         mjpeg={"max_viewers": 4, "max_viewers_per_credential": 2, "max_viewers_per_address": 4,
                                "viewers_reserved": 1})
    try:
        media = media_of(panel)
        v1, v2 = [await _credential(panel, "viewer", name, unit_id="303") for name in ("v1", "v2")]
        r303 = await _credential(panel, "resident", "alice", unit_id="303")
        async with api(panel) as c:
            got = [(await _whep(c, residents, v1))[:2] for _ in range(3)]
            assert got == [(201, "ok"), (201, "ok"), (429, "too_many_sessions_for_credential")]
            assert (await _whep(c, residents, v2))[:2] == (201, "ok")
            assert (await _whep(c, residents, v2))[:2] == (503, "sessions_reserved")  # the last one is kept
            assert (await _whep(c, residents, r303))[:2] == (429, "too_many_sessions_from_address")
            assert (await _whep(c, residents, INSTALLER))[:2] == (201, "ok")  # held to the total only
            assert len(media.sessions.sessions) == 4
            viewers = [s for s in media.sessions.sessions.values() if not s.grant.installer]
            mjpeg = _mjpeg(panel)
            async with contextlib.AsyncExitStack() as stack:  # MJPEG viewers: the same caps and reserve
                got = [await _watch_mjpeg(c, stack, secret) for secret in (v1, v1, v1, v2, v2, r303)]
                assert got == [(200, "ok"), (200, "ok"), (429, "too_many_viewers_for_credential"), (200, "ok"),
                               (503, "viewers_reserved"), (200, "ok")]
                assert len(mjpeg.viewers) == 4

                await ring(panel, "b304")  # another unit's call: viewers' live views end, the installer's stays
                await eventually(lambda: all(s.state == "closed" for s in viewers), what="live views ended")
                assert {s.close_reason for s in viewers} == {"call_started"}
                await eventually(lambda: not mjpeg.viewers, what="MJPEG live views ended")
                assert sorted(mjpeg.ended) == [("alice", "call_started"), ("v1", "call_started"),
                                               ("v1", "call_started"), ("v2", "call_started")]
            assert [s.grant.installer for s in media.sessions.sessions.values()] == [True]
            assert (await _whep(c, residents, v1))[:2] == (403, "live_view_other_call")
            assert (await _whep(c, residents, r303))[:2] == (403, "live_view_other_call")
            refused = await c.get("/api/v1/video.mjpeg", headers={"Authorization": f"Bearer {r303}"})
            assert (refused.status_code, refused.json()["code"]) == (403, "live_view_other_call")
    finally:
        await panel.stop("test over")


async def test_by_default_residents_and_viewers_watch_only_during_their_own_call(
        tmp_path: Path, clock: FakeClock, residents: list[Resident]) -> None:
    """Old code: any viewer or resident got WHEP live view at any time, also during another unit's call."""
    panel = await _panel(tmp_path, clock)
    try:
        viewer = await _credential(panel, "viewer", "v1", unit_id="303")
        resident = await _credential(panel, "resident", "alice", unit_id="303")
        async with api(panel) as c:
            for secret in (resident, viewer):
                assert (await _whep(c, residents, secret))[:2] == (403, "live_view_not_allowed")
                r = await c.get("/api/v1/snapshot.jpg", headers={"Authorization": f"Bearer {secret}"})
                assert (r.status_code, r.json()["code"]) == (403, "live_view_not_allowed")
            await ring(panel, "b304")
            for secret in (resident, viewer):
                assert (await _whep(c, residents, secret))[:2] == (403, "live_view_not_allowed")
            assert (await _whep(c, residents, INSTALLER))[:2] == (201, "ok")  # the installer always may
    finally:
        await panel.stop("test over")


async def test_a_session_ends_when_its_credential_expires(
        tmp_path: Path, clock: FakeClock, residents: list[Resident]) -> None:
    """A viewer watching its unit's call: the WHEP session and the MJPEG stream last as long as the
    credential, closed by a timer on the panel's clock at the expiry. Old code: both outlived it."""
    panel = await _panel(tmp_path, clock)
    try:
        media = media_of(panel)
        viewer = await _credential(panel, "viewer", "v1", ttl_s=60, unit_id="303")
        async with api(panel) as c:
            await ring(panel, "b303")
            status, _, r = await _whep(c, residents, viewer)
            assert status == 201, r.text
            session = media.sessions.get(r.headers["location"].rsplit("/", 1)[1])
            assert session is not None and session.role == "viewer" and session.call_guid is not None
            await residents[-1].accept(r.text)
            await residents[-1].wait_pictures(2)
            mjpeg = _mjpeg(panel)
            async with c.stream("GET", "/api/v1/video.mjpeg", headers={"Authorization": f"Bearer {viewer}"}) as picture:
                assert picture.status_code == 200
                await eventually(lambda: len(mjpeg.viewers) == 1, what="the MJPEG viewer")
                clock.advance(59)
                assert session.state != "closed" and len(mjpeg.viewers) == 1
                clock.advance(1.5)
                await eventually(lambda: session.state == "closed", timeout=5, what="session ended at the expiry")
                assert session.close_reason == "credential_expired"
                await picture.aread()  # the stream ends
                assert mjpeg.ended == [("v1", "credential_expired")]
    finally:
        await panel.stop("test over")
