"""The door and calls over the API: a resident opens only during the call they answered, every release
is in the access log naming call, actor and method; relay hold/release; answer/decline/end/mute."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .api_support import api_rig, auth_of, bearer, served, token
from .rig import Rig
from .support import BASE_CONFIG

GATE = {"id": "gate", "pin": 19, "mode": "bistable", "hold_s": 5, "max_on_s": 60}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    door = copy.deepcopy(BASE_CONFIG["door"])
    door["relays"].append(GATE)
    r = api_rig(tmp_path, door=door)
    yield r
    await r.close()


async def _ring(rig: Rig, button: int = 0) -> str:
    await rig.drive(rig.cfg.buttons[button], True)
    await rig.drive(rig.cfg.buttons[button], False)
    call = rig.panel.calls.current
    assert call is not None and call.state == "ringing"
    return call.guid


async def test_resident_opens_only_during_the_call_they_answered(rig: Rig) -> None:
    alice, bob = bearer(await token(rig, "resident", "alice")), bearer(await token(rig, "resident", "bob"))
    carol = bearer(await token(rig, "resident", "carol", unit_id="304"))
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        r = await c.post("/api/v1/door/open", headers=alice, json={})
        assert r.status_code == 409 and r.json()["code"] == "no_call"
        guid = await _ring(rig)
        r = await c.post("/api/v1/door/open", headers=alice, json={})
        assert r.status_code == 409 and r.json()["code"] == "not_answered"
        r = await c.post("/api/v1/calls/answer", headers=carol, json={})
        assert r.status_code == 403 and r.json()["code"] == "not_your_call"
        r = await c.post("/api/v1/calls/answer", headers=alice, json={"call_guid": guid})
        assert r.status_code == 200 and r.json()["call"]["answered_by"] == "alice"
        r = await c.post("/api/v1/calls/answer", headers=bob, json={})
        assert r.status_code == 409 and r.json()["code"] == "already_answered" and "alice" in r.json()["message"]
        r = await c.post("/api/v1/door/open", headers=bob, json={})
        assert r.status_code == 403 and r.json()["code"] == "not_your_call"
        r = await c.post("/api/v1/door/open", headers=alice, json={"duration_s": 30})
        assert r.status_code == 403 and r.json()["code"] == "not_allowed_for_role"
        assert not rig.relay_on()
        r = await c.post("/api/v1/door/open", headers=alice, json={})
        assert r.status_code == 200, r.text
        assert r.json()["cause"] == "call" and r.json()["call_guid"] == guid and r.json()["actor"] == "alice"
        assert rig.relay_on() and rig.relay_pin().state == 1
        log = (await c.get("/api/v1/logs/access", headers=installer, params={"call_guid": guid})).json()
        assert log["total"] == 1
        entry = log["entries"][0]
        assert (entry["cause"], entry["actor"], entry["method"], entry["call_guid"], entry["relay"]) == \
            ("call", "alice", "api", guid, "main")
        assert entry["id"] == r.json()["access_id"]
    refusals = [(e["actor"], e["code"]) for e in rig.events("door.unlock_refused")]
    assert refusals == [("alice", "no_call"), ("alice", "not_answered"), ("bob", "not_your_call"),
                        ("alice", "not_allowed_for_role")]


async def test_tamper_blocks_every_remote_open(rig: Rig) -> None:
    alice = bearer(await token(rig, "resident", "alice"))
    async with served(rig) as c:
        await _ring(rig)
        assert (await c.post("/api/v1/calls/answer", headers=alice, json={})).status_code == 200
        await rig.drive(rig.cfg.tamper, True)
        for who in (alice, bearer(await token(rig, "installer")), bearer(await token(rig, "backend", "crm"))):
            r = await c.post("/api/v1/door/open", headers=who, json={})
            assert r.status_code == 409 and r.json()["code"] == "tamper_blocked", r.text
        assert not rig.relay_on()
        assert rig.access_log() == []


async def test_installer_and_backend_open_without_a_call_and_backend_ties_to_the_call(rig: Rig) -> None:
    async with served(rig) as c:
        r = await c.post("/api/v1/door/open", headers=bearer(await token(rig, "installer")), json={"duration_s": 1})
        assert r.status_code == 200 and (r.json()["cause"], r.json()["actor"]) == ("installer", "installer")
        assert r.json()["duration_s"] == 1
        backend = bearer(await token(rig, "backend", "crm"))
        r = await c.post("/api/v1/door/open", headers=backend, json={"actor": "resident-17"})
        assert r.status_code == 200 and (r.json()["cause"], r.json()["actor"]) == ("remote", "resident-17")
        guid = await _ring(rig)
        r = await c.post("/api/v1/calls/answer", headers=backend, json={"who": "resident-17"})
        assert r.json()["call"]["answered_by"] == "resident-17"
        r = await c.post("/api/v1/door/open", headers=backend, json={})
        assert r.status_code == 200 and (r.json()["cause"], r.json()["call_guid"]) == ("call", guid)
        r = await c.post("/api/v1/door/open", headers=backend, json={"relay": "nope"})
        assert r.status_code == 404 and r.json()["code"] == "unknown_relay"
        r = await c.post("/api/v1/door/open", headers=backend, json={"duration_s": 7})  # main: max_on_s 6
        assert r.status_code == 422 and r.json()["code"] == "bad_duration"
        r = await c.post("/api/v1/door/open", headers=backend, json={"duration_s": "3"})
        assert r.status_code == 422 and r.json()["code"] == "invalid_request" and "duration_s" in r.json()["message"]
    causes = [(a["cause"], a["actor"], a["call_guid"]) for a in rig.access_log()]
    assert causes == [("installer", "installer", None), ("remote", "resident-17", None), ("call", "backend:crm", guid)]


async def test_relay_hold_and_release(rig: Rig) -> None:
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        r = await c.post("/api/v1/door/relays/gate/hold", headers=installer)
        assert r.status_code == 200 and r.json()["duration_s"] == 60  # bistable: held up to max_on_s
        assert rig.relay_on("gate")
        state = (await c.get("/api/v1/state", headers=installer)).json()
        assert state["door"]["relays"]["gate"]["energised"] is True
        await rig.advance(30)
        assert rig.relay_on("gate")
        r = await c.post("/api/v1/door/relays/gate/release", headers=installer)
        assert r.status_code == 200 and r.json()["was_energised"] is True
        assert not rig.relay_on("gate")
        r = await c.post("/api/v1/door/relays/gate/release", headers=installer)
        assert r.json()["was_energised"] is False
        # monostable: a hold is bounded by max_on_s
        r = await c.post("/api/v1/door/relays/main/hold", headers=installer, json={"seconds": 60})
        assert r.status_code == 422 and r.json()["code"] == "bad_duration" and "6" in r.json()["message"]
        r = await c.post("/api/v1/door/relays/main/hold", headers=installer, json={})
        assert r.status_code == 200 and r.json()["duration_s"] == 6
        await rig.advance(6.01)
        assert not rig.relay_on()
        r = await c.post("/api/v1/door/relays/nope/hold", headers=installer, json={})
        assert r.status_code == 404 and r.json()["code"] == "unknown_relay"
    locked = [(e["relay"], e["reason"]) for e in rig.events("door.locked")]
    assert ("gate", "released") in locked and ("main", "timeout") in locked


async def test_decline_end_and_mute(rig: Rig) -> None:
    alice, bob = bearer(await token(rig, "resident", "alice")), bearer(await token(rig, "resident", "bob"))
    async with served(rig) as c:
        guid = await _ring(rig)
        r = await c.post("/api/v1/calls/decline", headers=bob, json={"who": "alice"})
        assert r.status_code == 403 and r.json()["code"] == "acting_as_other"
        r = await c.post("/api/v1/calls/decline", headers=bob, json={})
        assert r.status_code == 200 and r.json()["call"]["status"] == "declined"
        assert r.json()["call"]["declined_by"] == "bob"
        r = await c.post("/api/v1/calls/answer", headers=alice, json={"call_guid": guid})
        assert r.status_code == 409 and r.json()["code"] == "call_over"
        guid = await _ring(rig)
        assert (await c.post("/api/v1/calls/answer", headers=alice, json={})).status_code == 200
        r = await c.post("/api/v1/calls/mute", headers=alice, json={})
        assert r.status_code == 422 and "audio" in r.json()["message"]
        r = await c.post("/api/v1/calls/mute", headers=bob, json={"audio": True})
        assert r.status_code == 403 and r.json()["code"] == "not_your_call"
        r = await c.post("/api/v1/calls/mute", headers=alice, json={"audio": True})
        assert r.status_code == 200 and r.json()["muted"] == {"audio": True, "video": False}
        # No media layer in this rig: the call records it (media sessions that join later start muted;
        # tests/test_media_sessions.py proves the microphone and camera really stop).
        assert r.json()["media"] is False
        assert rig.panel.calls.current is not None and rig.panel.calls.current.muted == {"audio": True, "video": False}
        r = await c.post("/api/v1/calls/mute", headers=alice, json={"video": True, "audio": False})
        assert r.json()["muted"] == {"audio": False, "video": True}
        r = await c.get("/api/v1/state", headers=alice)
        assert r.json()["call"]["call"]["muted"] == {"audio": False, "video": True}
        await rig.settle()
        assert [(e["guid"], e["muted"], e["by"], e["media"]) for e in rig.events("call.muted")] == [
            (guid, {"audio": True, "video": False}, "alice", False), (guid, {"audio": False, "video": True}, "alice", False)]
        r = await c.post("/api/v1/calls/end", headers=bob, json={})
        assert r.status_code == 403 and r.json()["code"] == "not_your_call"
        r = await c.post("/api/v1/calls/end", headers=alice, json={})
        assert r.status_code == 200 and r.json()["call"]["status"] == "ended" and r.json()["call"]["ended_by"] == "alice"
        r = await c.post("/api/v1/door/open", headers=alice, json={"call_guid": guid})
        assert r.status_code == 409 and r.json()["code"] == "call_over"
        r = await c.post("/api/v1/calls/end", headers=alice, json={})
        assert r.status_code == 409 and r.json()["code"] == "no_call"


async def test_call_history_is_scoped_to_the_credential(rig: Rig) -> None:
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        g303 = await _ring(rig, 0)
        await rig.panel.calls.end(None, "installer")
        g304 = await _ring(rig, 1)
        await rig.panel.calls.end(None, "installer")
        everything = (await c.get("/api/v1/calls", headers=installer)).json()
        assert everything["total"] == 2 and [x["guid"] for x in everything["calls"]] == [g304, g303]
        viewer = bearer(await token(rig, "viewer", "v", unit_id="304"))
        mine = (await c.get("/api/v1/calls", headers=viewer)).json()
        assert mine["total"] == 1 and mine["calls"][0]["guid"] == g304
        r = await c.get("/api/v1/calls", headers=viewer, params={"unit_id": "303"})
        assert r.status_code == 403 and r.json()["code"] == "not_your_unit"
        assert (await c.get(f"/api/v1/calls/{g303}", headers=viewer)).status_code == 404
        assert (await c.get(f"/api/v1/calls/{g304}", headers=viewer)).json()["transitions"]
        g = await _ring(rig, 0)
        one_call = bearer(await token(rig, "resident", "guest", call_guid=g))
        only = (await c.get("/api/v1/calls", headers=one_call)).json()
        assert [x["guid"] for x in only["calls"]] == [g]
        r = await c.get("/api/v1/calls", headers=installer, params={"per_page": 1, "page": 2, "status": "ended"})
        assert r.json()["total"] == 2 and len(r.json()["calls"]) == 1 and r.json()["calls"][0]["guid"] == g303
        r = await c.get("/api/v1/calls", headers=installer, params={"per_page": 1000})
        assert r.status_code == 422 and "per_page" in r.json()["message"]


async def test_a_resident_who_answered_a_call_cannot_release_another_relay(rig: Rig) -> None:
    alice = bearer(await token(rig, "resident", "alice"))  # unit 303: no relays configured, so the door's first
    async with served(rig) as c:
        guid = await _ring(rig)
        assert (await c.post("/api/v1/calls/answer", headers=alice, json={})).status_code == 200
        # The attack: the answered call of 303 was a key to every relay.
        r = await c.post("/api/v1/door/open", headers=alice, json={"relay": "gate"})
        assert r.status_code == 403 and r.json()["code"] == "relay_not_allowed", r.text
        assert "gate" in r.json()["message"] and "303" in r.json()["message"]
        assert [s.state for s in rig.relay_pin("gate").states] == [False]
        r = await c.post("/api/v1/door/open", headers=alice, json={})  # their own door still opens
        assert r.status_code == 200 and (r.json()["relay"], r.json()["call_guid"]) == ("main", guid)
    await rig.settle()
    [refused] = rig.events("door.unlock_refused")
    assert (refused["actor"], refused["relay"], refused["code"], refused["call_guid"]) == \
        ("alice", "gate", "relay_not_allowed", guid)
    assert [(a["actor"], a["relay"]) for a in rig.access_log()] == [("alice", "main")]


async def test_a_resident_releases_the_relays_configured_for_their_unit(tmp_path: Path) -> None:
    door = copy.deepcopy(BASE_CONFIG["door"])
    door["relays"].append(GATE)
    buttons = copy.deepcopy(BASE_CONFIG["buttons"])
    buttons[1]["unit"]["relays"] = ["gate"]  # 304's residents open the gate; 303's the door (the default)
    rig = api_rig(tmp_path, door=door, buttons=buttons)
    try:
        dave = bearer(await token(rig, "resident", "dave", unit_id="304"))
        async with served(rig) as c:
            await rig.drive(rig.cfg.buttons[1], True)
            await rig.drive(rig.cfg.buttons[1], False)
            assert (await c.post("/api/v1/calls/answer", headers=dave, json={})).status_code == 200
            r = await c.post("/api/v1/door/open", headers=dave, json={"relay": "main"})
            assert r.status_code == 403 and r.json()["code"] == "relay_not_allowed", r.text
            r = await c.post("/api/v1/door/open", headers=dave, json={})  # the unit's first relay
            assert r.status_code == 200 and r.json()["relay"] == "gate" and r.json()["actor"] == "dave", r.text
            assert rig.relay_on("gate")
        await rig.settle()
        refusals = [(e["actor"], e["relay"], e["code"], e["method"]) for e in rig.events("door.unlock_refused")]
        assert refusals == [("dave", "main", "relay_not_allowed", "api")]
        assert [(a["actor"], a["relay"]) for a in rig.access_log()] == [("dave", "gate")]
        assert [s.state for s in rig.relay_pin("main").states] == [False]
    finally:
        await rig.close()


@pytest.mark.parametrize("body, field", [
    ({"duration_s": True}, "duration_s"),
    ({"duration_s": "1"}, "duration_s"),
    ({"relay": 1}, "relay"),
    ({"call_guid": True}, "call_guid"),
    ({"relay": "main", "turbo": 1}, "turbo"),
])
async def test_open_body_with_a_loosely_typed_or_unknown_field_is_refused_naming_it(
        rig: Rig, body: dict[str, object], field: str) -> None:
    backend = bearer(await token(rig, "backend", "crm"))
    async with served(rig) as c:
        r = await c.post("/api/v1/door/open", headers=backend, json=body)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
        assert r.json()["errors"][0].startswith(f"{field}: "), r.json()
    await rig.settle()
    assert [s.state for s in rig.relay_pin().states] == [False]
    [refused] = rig.events("door.unlock_refused")
    assert (refused["code"], refused["actor"], refused["method"]) == ("invalid_request", "backend:crm", "api")
    assert refused["message"].startswith(f"{field}: ")


@pytest.mark.parametrize("path", ["/api/v1/door/open", "/api/v1/door/relays/gate/hold"])
async def test_a_duplicate_json_key_is_refused_naming_it_and_nothing_moves(rig: Rig, path: str) -> None:
    installer = bearer(await token(rig, "installer"))
    doubled = b'{"call_guid": null, "relay": "main", "relay": "gate"}' if path.endswith("open") else \
        b'{"seconds": 1, "seconds": 60}'
    async with served(rig) as c:
        r = await c.post(path, headers={**installer, "content-type": "application/json"}, content=doubled)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
        key = "relay" if path.endswith("open") else "seconds"
        assert r.json()["errors"] == [f"{key}: duplicate key; every key may appear once in an object"]
        nested = b'{"a": [{"b": 1, "b": 2}]}'
        r = await c.post(path, headers={**installer, "content-type": "application/json"}, content=nested)
        assert r.status_code == 422 and r.json()["errors"][0].startswith("a.0.b: duplicate key"), r.text
        # The same body without the duplicate is fine.
        r = await c.post(path, headers=installer, json={"relay": "gate"} if path.endswith("open") else {"seconds": 1})
        assert r.status_code == 200, r.text
    assert [s.state for s in rig.relay_pin("main").states] == [False]
    assert [a["relay"] for a in rig.access_log()] == ["gate"]


async def test_revoking_the_answerers_credential_ends_the_call_as_a_hangup(rig: Rig) -> None:
    """Old code: the call stayed live (and the door openable for it) until max_call_s."""
    secret, p = await auth_of(rig).tokens.issue(kind="token", role="resident", subject="alice", issued_by="test",
                                                ttl_s=3600, unit_id="303")
    other, _ = await auth_of(rig).tokens.issue(kind="token", role="resident", subject="bob", issued_by="test",
                                               ttl_s=3600, unit_id="303")
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        guid = await _ring(rig)
        assert (await c.post("/api/v1/calls/answer", headers=bearer(secret), json={})).status_code == 200
        # Revoking someone else's credential changes nothing.
        await auth_of(rig).tokens.revoke([auth_of(rig).tokens.lookup(other).token_id])
        assert rig.panel.calls.current is not None and rig.panel.calls.current.live
        r = await c.delete(f"/api/v1/auth/tokens/{p.token_id}", headers=installer)
        assert r.status_code == 200, r.text
        # Ended before the revocation's response came back.
        assert rig.panel.calls.current is None
        await rig.settle()
        last = rig.events("call.status_updated")[-1]
        assert (last["guid"], last["status"], last["who"], last["reason"]) == (guid, "ended", "alice",
                                                                               "credential_revoked")
        r = await c.post("/api/v1/door/open", headers=installer, json={"call_guid": guid})
        assert (r.status_code, r.json()["code"]) == (409, "call_over")


async def test_the_answerers_credential_expiring_ends_the_call(rig: Rig) -> None:
    """A timer through the clock seam, from the answer; old code: live until max_call_s (300 s)."""
    secret, _ = await auth_of(rig).tokens.issue(kind="token", role="resident", subject="alice", issued_by="test",
                                                ttl_s=120, unit_id="303")
    async with served(rig) as c:
        guid = await _ring(rig)
        assert (await c.post("/api/v1/calls/answer", headers=bearer(secret), json={})).status_code == 200
        await rig.advance(110)
        assert rig.panel.calls.current is not None and rig.panel.calls.current.guid == guid
        await rig.advance(15)
        assert rig.panel.calls.current is None
        last = rig.events("call.status_updated")[-1]
        assert (last["guid"], last["status"], last["who"], last["reason"]) == (guid, "ended", "alice",
                                                                               "credential_expired")
        # The next call is not touched by the old timer, and an installer's answer ties to nothing.
        guid2 = await _ring(rig)
        r = await c.post("/api/v1/calls/answer", headers=bearer(await token(rig, "installer")), json={"who": "carol"})
        assert r.status_code == 200
        await rig.advance(200)
        assert rig.events("call.status_updated")[-1]["reason"] != "credential_expired"
        assert rig.events("call.status_updated")[-1]["guid"] == guid2
