"""PINs, codes and cards over the real local API: who may manage whose, the QR a code comes with, and
the specific errors of bad input (that change nothing); the simulated keypad route and CLI path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .access_support import access_rig, service, type_keys
from .api_support import bearer, served, token
from .rig import Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await access_rig(tmp_path)
    yield r
    await r.close()


async def test_resident_sets_their_pin_makes_a_courier_code_and_the_courier_uses_it(rig: Rig) -> None:
    alice = bearer(await token(rig, "resident", "alice"))
    async with served(rig) as c:
        r = await c.post("/api/v1/access/pin", headers=alice, json={"pin": "2580"})
        assert r.status_code == 200, r.text
        assert r.json()["credential"]["owner"] == "alice" and "2580" not in r.text
        r = await c.post("/api/v1/access/codes", headers=alice, json={
            "label": "DHL Tuesday", "valid_until": "2099-01-01T00:00:00Z", "max_uses": 1})
        assert r.status_code == 201, r.text
        body = r.json()
        code = body["access_code"]
        assert body["credential"]["label"] == "DHL Tuesday" and body["credential"]["uses_left"] == 1
        assert body["qr"]["payload"].endswith(code) and body["qr"]["svg"].lstrip().startswith("<?xml")
        listed = (await c.get("/api/v1/access/credentials", headers=alice)).json()["credentials"]
        assert sorted(x["kind"] for x in listed) == ["code", "pin"] and code not in str(listed)
    await type_keys(rig, code + "#")
    assert rig.relay_on()
    [row] = rig.access_log()
    assert (row["method"], row["actor"], row["label"]) == ("code", "alice", "DHL Tuesday")


async def test_residents_see_and_revoke_only_their_own(rig: Rig) -> None:
    alice = bearer(await token(rig, "resident", "alice"))
    bob = bearer(await token(rig, "resident", "bob"))
    installer = bearer(await token(rig, "installer"))
    backend = bearer(await token(rig, "backend", "crm"))
    async with served(rig) as c:
        r = await c.post("/api/v1/access/codes", headers=backend, json={"label": "cleaner", "owner": "bob"})
        assert r.status_code == 201 and r.json()["credential"]["created_by"] == "backend:crm"
        bobs = r.json()["credential"]["id"]
        r = await c.post("/api/v1/access/pin", headers=alice, json={"pin": "1357", "owner": "bob"})
        assert r.status_code == 403 and r.json()["code"] == "not_your_credential"
        r = await c.delete(f"/api/v1/access/credentials/{bobs}", headers=alice)
        assert r.status_code == 404 and r.json()["code"] == "unknown_credential"
        assert (await c.get("/api/v1/access/credentials", headers=alice)).json()["credentials"] == []
        assert len((await c.get("/api/v1/access/credentials", headers=bob)).json()["credentials"]) == 1
        r = await c.post("/api/v1/access/cards", headers=alice, json={"owner": "alice", "number": "04a22b91"})
        assert r.status_code == 403
        r = await c.post("/api/v1/access/cards", headers=installer, json={"owner": "alice", "number": "04:A2:2B:91",
                                                                          "label": "blue fob"})
        assert r.status_code == 201, r.text
        r = await c.post("/api/v1/access/pin", headers=installer, json={"pin": "1357"})
        assert r.status_code == 422 and r.json()["code"] == "owner_required"
        r = await c.post("/api/v1/access/cards/learn", headers=installer, json={"owner": "alice"})
        assert r.status_code == 404 and r.json()["code"] == "not_configured", "no reader: nothing to wait for"
        r = await c.delete(f"/api/v1/access/credentials/{bobs}", headers=bob)
        assert r.status_code == 200 and r.json()["credential"]["id"] == bobs
    assert service(rig).creds.get(bobs) is None


async def test_bad_input_is_refused_specifically_and_changes_nothing(rig: Rig) -> None:
    alice = bearer(await token(rig, "resident", "alice"))
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        assert (await c.post("/api/v1/access/cards", headers=installer,
                             json={"owner": "bob", "number": "04a22b91"})).status_code == 201
        cases = [
            ("/api/v1/access/pin", {"pin": "12"}, 422, "code_too_short"),
            ("/api/v1/access/pin", {"pin": "12a4"}, 422, "code_not_digits"),
            ("/api/v1/access/codes", {"label": "x", "valid_from": "2099-01-02T00:00:00Z",
                                      "valid_until": "2099-01-01T00:00:00Z"}, 422, "bad_window"),
            ("/api/v1/access/codes", {"label": "x", "max_uses": 0}, 422, "bad_uses"),
            ("/api/v1/access/codes", {"label": "x", "doors": ["garage"]}, 422, "unknown_door"),
            ("/api/v1/access/codes", {"label": "x", "max_uses": "2"}, 422, "invalid_request"),
        ]
        for path, body, status, code in cases:
            r = await c.post(path, headers=alice, json=body)
            assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        r = await c.post("/api/v1/access/cards", headers=installer, json={"owner": "alice", "number": "04A22B91"})
        assert (r.status_code, r.json()["code"]) == (409, "card_enrolled")
    assert [c.owner for c in service(rig).creds.live()] == ["bob"]


async def test_sim_keypad_route_types_through_the_matrix(tmp_path: Path) -> None:
    from panel.platform import LoopClock

    rig = await access_rig(tmp_path)
    try:
        # The route waits in real time; run the keypad scan on the loop's clock for it.
        assert rig.panel.keypad is not None
        rig.panel.keypad.clock = LoopClock()
        await service(rig).set_pin(owner="alice", pin="2468", by="installer")
        async with served(rig) as c:
            r = await c.post("/api/v1/sim/keypad", json={"keys": "2468#"})
            assert r.status_code == 200, r.text
            assert "access.granted" in [e["type"] for e in r.json()["events"]]
            r = await c.post("/api/v1/sim/keypad", json={"keys": "12ab"})
            assert r.status_code == 422
        assert rig.relay_on()
    finally:
        await rig.close()
