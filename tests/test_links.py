"""Call links, participants and invites over the real API of an in-process panel with media, the guest
being a real aiortc peer on loopback (tests/media_resident.py); and the installer's sound checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.api.principals import ApiAuth
from panel.daemon import Panel
from panel.media.audio import dominant_frequency

from .eventually import eventually
from .media_resident import Resident
from .media_rig import (
    INSTALLER,
    api,
    media_of,
    ring,
    speaker,
    start_panel_inprocess,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start_panel_inprocess(tmp_path, links={"max_participants": 1})
    yield p
    await p.stop("test over")


async def resident_token(panel: Panel, subject: str, **scope: Any) -> str:
    auth = ApiAuth.for_panel(panel)
    secret, _ = await auth.tokens.issue(kind="token", role="resident", subject=subject, issued_by="test",  # type: ignore[arg-type]
                                        ttl_s=3600, **(scope or {"unit_id": "303"}))
    return secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def events_of(panel: Panel, type_: str) -> list[dict[str, Any]]:
    await panel.journal.flush()
    rows = await panel.store.read(lambda c: c.execute("SELECT data FROM events WHERE type=? ORDER BY seq",
                                                      (type_,)).fetchall())
    import json
    return [json.loads(r[0]) for r in rows]


async def answered_call(panel: Panel, who: str = "alice") -> str:
    guid = await ring(panel)
    await panel.calls.answer(guid, who)
    return guid


async def join_guest(c: httpx.AsyncClient, sub: str, guest: Resident) -> httpx.Response:
    r = await c.post("/api/v1/link/join", json={"sdp": await guest.offer()}, headers=bearer(sub))
    if r.status_code == 200:
        await guest.accept(r.json()["sdp"])
    return r


async def test_a_link_previews_joins_talks_and_leaves(panel: Panel) -> None:
    guid = await answered_call(panel)
    alice = await resident_token(panel, "alice")
    bob = await resident_token(panel, "bob")
    async with api(panel) as c:
        # Only the resident who answered (or backend/installer) gets a link.
        r = await c.post(f"/api/v1/calls/{guid}/links", headers=bearer(bob))
        assert (r.status_code, r.json()["code"]) == (403, "not_your_call")
        r = await c.post(f"/api/v1/calls/{guid}/links", headers=bearer(alice))
        assert r.status_code == 201, r.text
        body = r.json()
        link = body["link"]
        assert body["url"] == f"/link#{link}" and link.startswith("cl1.") and guid in link
        assert body["info"]["created_by"] == "alice"

        # Subscribe: the name is cleaned (no control/bidi characters) and kept as text.
        r = await c.post("/api/v1/link/subscribe", json={"name": "  <b>Maria</b>\u202e\x07  "}, headers=bearer(link))
        assert r.status_code == 201, r.text
        sub = r.json()
        assert sub["you"]["name"] == "<b>Maria</b>"
        assert [p["name"] for p in sub["participants"]] == ["alice"]
        assert sub["call"]["guid"] == guid and sub["call"]["unit_label"] == "303"
        for bad in ("", "\u200b\u202e", "x" * 41):
            r = await c.post("/api/v1/link/subscribe", json={"name": bad}, headers=bearer(link))
            assert (r.status_code, r.json()["code"]) in ((422, "invalid_name"), (422, "invalid_request")), bad

        # A long-poll for the list answers as soon as the guest joins.
        waiting = asyncio.ensure_future(c.get(f"/api/v1/link/participants?version={sub['version']}&wait_s=10",
                                              headers=bearer(sub["subscription"])))
        await asyncio.sleep(0.2)  # a window in which nothing may happen
        assert not waiting.done()
        guest = Resident(tone_hz=1000.0)
        sink = speaker(panel)
        try:
            r = await join_guest(c, sub["subscription"], guest)
            assert r.status_code == 200, r.text
            started = time.monotonic()
            listed = (await waiting).json()
            assert time.monotonic() - started < 5
            assert [p["name"] for p in listed["participants"]] == ["alice", "<b>Maria</b>"]
            assert listed["joined"] is True and not listed["ended"]
            # The guest sees the camera and its voice reaches the entrance speaker.
            await guest.wait_pictures(5)
            await eventually(lambda: abs(dominant_frequency(sink.samples(1.0)) - 1000) < 30, timeout=10,
                             what="the guest's 1 kHz tone on the speaker")
            session = media_of(panel).sessions.get(r.json()["session"])
            assert session is not None and session.role == "participant"
            # The call's side sees the same list, names readable by everybody in the call.
            r = await c.get(f"/api/v1/calls/{guid}/participants", headers=bearer(alice))
            assert [p["name"] for p in r.json()["participants"]] == ["alice", "<b>Maria</b>"]
            joined = await events_of(panel, "call.participant_joined")
            assert joined[-1]["participant"]["name"] == "<b>Maria</b>" and joined[-1]["guid"] == guid

            # Leave: out of the list, the session ends, the subscription is closed.
            r = await c.post("/api/v1/link/leave", headers=bearer(sub["subscription"]))
            assert r.status_code == 200, r.text
            await eventually(lambda: session.state == "closed", what="the guest's session closed")
            r = await c.get(f"/api/v1/calls/{guid}/participants", headers=bearer(alice))
            assert [p["name"] for p in r.json()["participants"]] == ["alice"]
            left = await events_of(panel, "call.participant_left")
            assert left[-1]["reason"] == "left" and [p["name"] for p in left[-1]["participants"]] == ["alice"]
            r = await c.get("/api/v1/link/participants", headers=bearer(sub["subscription"]))
            assert r.status_code == 401
            assert panel.calls.current is not None and panel.calls.current.live  # a guest never ends the call
        finally:
            await guest.close()


async def test_revoked_expired_forged_and_full_links_are_refused(panel: Panel) -> None:
    guid = await answered_call(panel)
    alice = await resident_token(panel, "alice")
    async with api(panel) as c:
        link = (await c.post(f"/api/v1/calls/{guid}/links", headers=bearer(alice))).json()
        first = (await c.post("/api/v1/link/subscribe", json={"name": "One"}, headers=bearer(link["link"]))).json()
        second = (await c.post("/api/v1/link/subscribe", json={"name": "Two"}, headers=bearer(link["link"]))).json()
        g1, g2 = Resident(), Resident()
        try:
            assert (await join_guest(c, first["subscription"], g1)).status_code == 200
            r = await join_guest(c, second["subscription"], g2)  # links.max_participants = 1
            assert (r.status_code, r.json()["code"]) == (409, "too_many_participants")
            session = next(s for s in media_of(panel).sessions.sessions.values() if s.role == "participant")
            waiting = asyncio.ensure_future(c.get(f"/api/v1/link/participants?version="
                                                  f"{panel.call_links.participants.version}&wait_s=10",
                                                  headers=bearer(first["subscription"])))
            await asyncio.sleep(0.1)  # the stimulus: the long-poll is waiting before the change

            # Revoking takes effect at once: the open preview, the joined guest and the link itself.
            r = await c.delete(f"/api/v1/calls/{guid}/links/{link['info']['id']}", headers=bearer(alice))
            assert r.status_code == 200, r.text
            r = await waiting
            assert (r.status_code, r.json()["code"]) == (401, "link_revoked")
            await eventually(lambda: session.state == "closed", what="the revoked guest's session closed")
            for sub in (first, second):
                r = await c.get("/api/v1/link/participants", headers=bearer(sub["subscription"]))
                assert (r.status_code, r.json()["code"]) == (401, "link_revoked")
            r = await c.post("/api/v1/link/subscribe", json={"name": "Three"}, headers=bearer(link["link"]))
            assert (r.status_code, r.json()["code"]) == (401, "link_revoked")
            left = await events_of(panel, "call.participant_left")
            assert left[-1]["reason"] == "link_revoked"
            assert [e["link_id"] for e in await events_of(panel, "call.link_revoked")] == [link["info"]["id"]]
        finally:
            await g1.close()
            await g2.close()

        # Expired: the link's clock moves past its expiry.
        fresh = (await c.post(f"/api/v1/calls/{guid}/links", headers=bearer(alice))).json()
        links = panel.call_links
        links.now = lambda: time.time() + panel.cfg.links.ttl_s + 1
        r = await c.post("/api/v1/link/subscribe", json={"name": "Late"}, headers=bearer(fresh["link"]))
        assert (r.status_code, r.json()["code"]) == (401, "link_expired")
        links.now = time.time
        # Forged: any change to the signed part.
        forged = fresh["link"][:-3] + ("AAA" if not fresh["link"].endswith("AAA") else "BBB")
        for bad in (forged, fresh["link"].replace(guid, "00000000-0000-0000-0000-000000000000"), "nonsense", ""):
            r = await c.post("/api/v1/link/subscribe", json={"name": "X"}, headers=bearer(bad) if bad else {})
            assert (r.status_code, r.json()["code"]) == (401, "invalid_link"), bad
        # Neither an API credential nor a link opens the other's routes.
        r = await c.get("/api/v1/link/participants", headers=bearer(alice))
        assert (r.status_code, r.json()["code"]) == (401, "invalid_subscription")
        r = await c.get("/api/v1/state", headers=bearer(fresh["link"]))
        assert r.status_code == 401


async def test_the_end_of_the_call_empties_the_list_and_closes_every_link(panel: Panel) -> None:
    guid = await answered_call(panel)
    async with api(panel) as c:
        r = await c.post(f"/api/v1/calls/{guid}/links", headers=bearer(INSTALLER))
        assert r.status_code == 201 and r.json()["info"]["created_by"] == "installer-token"
        link = r.json()["link"]
        sub = (await c.post("/api/v1/link/subscribe", json={"name": "Maria"}, headers=bearer(link))).json()
        guest = Resident()
        try:
            assert (await join_guest(c, sub["subscription"], guest)).status_code == 200
            version = panel.call_links.participants.version
            waiting = asyncio.ensure_future(c.get(f"/api/v1/link/participants?version={version}&wait_s=10",
                                                  headers=bearer(sub["subscription"])))
            await asyncio.sleep(0.1)  # the stimulus: the long-poll is waiting before the change
            await panel.calls.end(guid, "alice")
            r = await waiting
            assert r.status_code == 200 and r.json()["ended"] is True and r.json()["participants"] == []
            left = await events_of(panel, "call.participant_left")
            assert left[-1]["reason"] == "call_ended" and left[-1]["participants"] == []
            await eventually(lambda: not media_of(panel).sessions.sessions, what="every session closed")
        finally:
            await guest.close()
        r = await c.post("/api/v1/link/subscribe", json={"name": "Late"}, headers=bearer(link))
        assert (r.status_code, r.json()["code"]) == (409, "call_over")
        r = await c.get("/api/v1/link/participants", headers=bearer(sub["subscription"]))
        assert (r.status_code, r.json()["code"]) == (409, "call_over")
        r = await c.post(f"/api/v1/calls/{guid}/links", headers=bearer(INSTALLER))
        assert (r.status_code, r.json()["code"]) == (409, "call_over")


async def test_invite_issues_a_call_scoped_credential_and_a_link(panel: Panel) -> None:
    guid = await ring(panel)
    alice = await resident_token(panel, "alice")
    async with api(panel) as c:
        r = await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": "carol"}, headers=bearer(alice))
        assert (r.status_code, r.json()["code"]) == (403, "not_your_call")  # nobody answered yet
        await panel.calls.answer(guid, "alice")
        r = await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": "carol", "name": "Carol"},
                         headers=bearer(alice))
        assert r.status_code == 201, r.text
        inv = r.json()
        me = (await c.get("/api/v1/auth/me", headers=bearer(inv["token"]))).json()["credential"]
        assert (me["role"], me["subject"], me["call_guid"]) == ("guest", "carol", guid)
        assert (await c.get(f"/api/v1/calls/{guid}", headers=bearer(inv["token"]))).status_code == 200
        r = await c.post("/api/v1/link/subscribe", json={"name": "Carol"}, headers=bearer(inv["link"]))
        assert r.status_code == 201
        invited = await events_of(panel, "call.invited")
        assert invited[-1]["subject"] == "carol" and invited[-1]["by"] == "alice"
        assert invited[-1]["token_id"] == inv["token_id"] and invited[-1]["link_id"] == inv["info"]["id"]
        created = await events_of(panel, "call.link_created")
        assert created[-1]["invited"] == "carol"
        assert inv["token"] not in str(invited) and inv["link"] not in str(created)  # no secret in an event
        r = await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": "panel"}, headers=bearer(alice))
        assert (r.status_code, r.json()["code"]) == (422, "reserved_subject")


async def test_an_invite_cannot_mint_a_second_answerer_or_a_panel_name(panel: Panel) -> None:
    """The answerer's own subject (any case), a participant's, and reserved names are refused; nothing is
    minted for them (old code: a call-scoped *resident* credential for "alice" that opened the door)."""
    guid = await answered_call(panel)
    alice = await resident_token(panel, "alice")
    auth = ApiAuth.for_panel(panel)
    before = len(auth.tokens.list())
    async with api(panel) as c:
        for subject in ("alice", "ALICE"):
            r = await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": subject}, headers=bearer(alice))
            assert (r.status_code, r.json()["code"]) == (422, "invitee_in_call"), subject
        for subject in ("backend:crm", "installer:bob", "Installer", "guest:p_x", "res:alice", "homeassistant"):
            r = await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": subject}, headers=bearer(INSTALLER))
            assert (r.status_code, r.json()["code"]) == (422, "reserved_subject"), subject
        # A guest already in the call (joined through a link) is a participant too.
        inv = (await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": "carol"}, headers=bearer(alice))).json()
        sub = (await c.post("/api/v1/link/subscribe", json={"name": "dave"}, headers=bearer(inv["link"]))).json()
        guest = Resident()
        try:
            assert (await join_guest(c, sub["subscription"], guest)).status_code == 200
            r = await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": "Dave"}, headers=bearer(alice))
            assert (r.status_code, r.json()["code"]) == (422, "invitee_in_call")
            # ... and by the subject the invite named (carol joined as "dave").
            r = await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": "carol"}, headers=bearer(alice))
            assert (r.status_code, r.json()["code"]) == (422, "invitee_in_call")
        finally:
            await guest.close()
    assert len(auth.tokens.list()) == before + 1  # carol's guest credential only
    assert [e["subject"] for e in await events_of(panel, "call.invited")] == ["carol"]


async def test_an_invited_guest_views_but_never_opens_ends_shares_or_invites(panel: Panel) -> None:
    guid = await answered_call(panel)
    alice = await resident_token(panel, "alice")
    async with api(panel) as c:
        inv = (await c.post(f"/api/v1/calls/{guid}/invite", json={"subject": "carol"}, headers=bearer(alice))).json()
        carol = bearer(inv["token"])
        # What a guest may do: see its call and who is in it.
        assert (await c.get(f"/api/v1/calls/{guid}", headers=carol)).status_code == 200
        r = await c.get(f"/api/v1/calls/{guid}/participants", headers=carol)
        assert r.status_code == 200 and [p["name"] for p in r.json()["participants"]] == ["alice"]
        # What it may never do.
        refused = [
            ("POST", "/api/v1/door/open", {"call_guid": guid}),
            ("POST", "/api/v1/calls/end", {"call_guid": guid}),
            ("POST", "/api/v1/calls/decline", {"call_guid": guid}),
            ("POST", "/api/v1/calls/answer", {"call_guid": guid}),
            ("POST", "/api/v1/calls/mute", {"call_guid": guid, "audio": True}),
            ("POST", f"/api/v1/calls/{guid}/links", {}),
            ("POST", f"/api/v1/calls/{guid}/invite", {"subject": "erin"}),
            ("POST", "/api/v1/auth/tokens", {"role": "viewer", "subject": "x", "call_guid": guid}),
        ]
        for method, path, body in refused:
            r = await c.request(method, path, json=body, headers=carol)
            assert (r.status_code, r.json()["code"]) == (403, "forbidden"), (path, r.text)
        assert panel.calls.current is not None and panel.calls.current.state in ("connecting", "connected")
        assert await events_of(panel, "door.unlocked") == []
        assert [e["invited"] for e in await events_of(panel, "call.link_created")] == ["carol"]
        # The invite is revocable like any credential (installer or backend).
        r = await c.delete(f"/api/v1/auth/tokens/{inv['token_id']}", headers=bearer(INSTALLER))
        assert r.status_code == 200, r.text
        assert (await c.get(f"/api/v1/calls/{guid}", headers=carol)).status_code == 401


async def test_installer_sound_checks_reach_the_speaker_and_read_the_microphone(panel: Panel) -> None:
    sink = speaker(panel)
    async with api(panel) as c:
        r = await c.get("/api/v1/media/microphone/level?seconds=0.3", headers=bearer(INSTALLER))
        assert r.status_code == 200, r.text
        level = r.json()
        # The simulated microphone is a 440 Hz tone at 0.3 of full scale: about -13.5 dBFS RMS.
        assert abs(level["dominant_hz"] - 440) < 20 and -16 < level["rms_dbfs"] < -11, level
        r = await c.post("/api/v1/media/speaker/test", json={"hz": 1500, "seconds": 0.6}, headers=bearer(INSTALLER))
        assert r.status_code == 200, r.text
        await eventually(lambda: abs(dominant_frequency(sink.samples(0.4)) - 1500) < 30, timeout=5,
                         what="the test tone on the speaker")
        r = await c.post("/api/v1/media/speaker/test", json={"hz": 1500}, headers=bearer(INSTALLER))
        assert (r.status_code, r.json()["code"]) == (409, "tone_playing")
        await eventually(lambda: "installer:test-tone" not in media_of(panel).hub.mixer.inputs, timeout=5,
                         what="the tone's mixer input removed")
        await ring(panel)
        r = await c.post("/api/v1/media/speaker/test", json={}, headers=bearer(INSTALLER))
        assert (r.status_code, r.json()["code"]) == (409, "call_in_progress")
        alice = await resident_token(panel, "alice")
        r = await c.get("/api/v1/media/microphone/level", headers=bearer(alice))
        assert (r.status_code, r.json()["code"]) == (403, "forbidden")


async def test_pages_are_served_with_a_strict_policy(panel: Panel) -> None:
    async with api(panel) as c:
        for path, marker in (("/resident", "resident.js"), ("/installer", "installer.js"), ("/link", "link.js"),
                             ("/", "/resident")):
            r = await c.get(path)
            assert r.status_code == 200 and marker in r.text, path
            assert r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert "<script>" not in r.text  # no inline script: the policy would block it
        r = await c.get("/web/common.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        for bad in ("/web/..%2Fapi%2Fpages.py", "/web/nope.js", "/web/app.py"):
            r = await c.get(bad)
            assert r.status_code == 404 and r.json()["code"] == "not_found", bad
