"""Every credential sees and does only what its scope allows (issue 9, item 2): the state filtered to its
unit and call, per-credential and per-address caps on event streams with slots kept for the installer and
residents, per-issuer token quotas with installer logins outside any cap. Media (live view, session caps,
expiry) is in tests/test_scope_media.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import httpx
import pytest

from panel.api import principals
from panel.platform import SlotLimits, SlotRefused, Slots

from .api_support import api_rig, auth_of, bearer, initial_password, served, token
from .rig import Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = api_rig(tmp_path, api={"tokens_per_issuer": 10,
                               "streams": {"total": 8, "per_credential": 2, "per_address": 6,
                                           "reserved_installer": 1, "reserved_residents": 2}})
    yield r
    await r.close()


async def test_state_shows_a_scoped_credential_only_its_own_units_call(rig: Rig) -> None:
    await rig.drive(rig.cfg.buttons[1], True)  # unit 304 rings
    await rig.drive(rig.cfg.buttons[1], False)
    call = rig.panel.calls.current
    assert call is not None and call.unit_id == "304"
    await rig.panel.calls.answer(call.guid, "bob")
    await rig.door.unlock(cause="remote", actor="bob", method="api", call_guid=call.guid)
    await rig.settle()
    async with served(rig) as c:
        async def state(role: str, **scope: str) -> dict[str, object]:
            r = await c.get("/api/v1/state", headers=bearer(await token(rig, role, **scope)))
            assert r.status_code == 200, r.text
            body: dict[str, object] = r.json()
            return body

        for role, scope in (("resident", {"unit_id": "303"}), ("viewer", {"unit_id": "303"}),
                            ("guest", {"call_guid": "another-call"})):
            other = await state(role, **scope)
            text = json.dumps(other)
            assert call.guid not in text and "bob" not in text, f"{role} of 303 sees unit 304's call: {text}"
            assert other["call"] == {"status": "idle", "call": None}
            assert other["access"] is None
            relays = other["door"]["relays"]  # type: ignore[index]
            assert relays["main"]["energised"] is True and relays["main"]["grant"] is None

        own = await state("resident", unit_id="304")
        assert own["call"]["call"]["guid"] == call.guid  # type: ignore[index]
        assert own["call"]["call"]["answered_by"] == "bob"  # type: ignore[index]
        assert own["door"]["relays"]["main"]["grant"]["call_guid"] == call.guid  # type: ignore[index]
        for role in ("installer", "backend"):
            everything = await state(role)
            assert everything["call"]["call"]["guid"] == call.guid  # type: ignore[index]
            assert everything["door"]["relays"]["main"]["grant"]["actor"] == "bob"  # type: ignore[index]
    rig.door.release()
    await rig.settle()


async def _open_stream(c: httpx.AsyncClient, stack: contextlib.AsyncExitStack, secret: str) -> tuple[int, str]:
    """Open an SSE stream and hold it (until ``stack`` closes); its status and refusal code."""
    r = await stack.enter_async_context(c.stream("GET", "/api/v1/events/stream", headers=bearer(secret)))
    if r.status_code != 200:
        await r.aread()
        return r.status_code, r.json()["code"]
    lines = r.aiter_lines()
    assert isinstance(lines, AsyncGenerator)
    # Kept until the stack closes: a collected iterator would close its stream (and free the slot).
    stack.push_async_callback(lines.aclose)
    first = await anext(lines)  # the slot is taken when the stream begins: wait for it
    assert first.startswith("retry:"), first
    return 200, "ok"


async def test_one_credential_cannot_take_every_event_stream(rig: Rig) -> None:
    """api.streams: total 8, 2 per credential, 6 per address, 1 kept for the installer and 2 more for
    residents. Old code: one credential held all 64 streams, so every resident page stopped ringing."""
    viewer_a, viewer_b, viewer_c = [await token(rig, "viewer", f"v{i}") for i in range(3)]
    resident_1, resident_2 = [await token(rig, "resident", f"r{i}") for i in range(2)]
    installer = await token(rig, "installer")
    async with served(rig) as c, contextlib.AsyncExitStack() as stack:
        assert [await _open_stream(c, stack, viewer_a) for _ in range(3)] == [
            (200, "ok"), (200, "ok"), (429, "too_many_streams_for_credential")]
        assert [await _open_stream(c, stack, viewer_b) for _ in range(2)] == [(200, "ok"), (200, "ok")]
        # 3 free, all of them kept: 1 for the installer, 2 for residents
        assert [await _open_stream(c, stack, viewer_c) for _ in range(2)] == [(200, "ok"), (429, "streams_reserved")]
        r = await c.get("/api/v1/events", headers=bearer(viewer_c), params={"after": "now", "wait_s": 1})
        assert (r.status_code, r.json()["code"]) == (429, "streams_reserved")  # long-polls share the bound
        assert await _open_stream(c, stack, resident_1) == (200, "ok")
        assert await _open_stream(c, stack, resident_2) == (429, "too_many_streams_from_address")
        assert await _open_stream(c, stack, installer) == (200, "ok")  # the address cap is not the installer's
        assert rig.panel.api_state is not None and rig.panel.api_state.streams.held == 7
    assert rig.panel.api_state.streams.held == 0


def test_slots_keep_their_reserves_as_floors() -> None:
    slots = Slots(SlotLimits(total=4, per_credential=4, per_address=4, reserved_installer=1,
                             reserved_residents=1), "things")
    slots.take("v1", "a", "other")
    slots.take("v2", "b", "other")
    with pytest.raises(SlotRefused) as refused:
        slots.check("v3", "c", "other")
    assert refused.value.reason == "reserved"
    resident = slots.take("r1", "d", "resident")
    with pytest.raises(SlotRefused) as refused:
        slots.check("r2", "e", "resident")  # the last one is the installer's
    assert refused.value.reason == "reserved"
    installer = slots.take("i", "a", "installer")
    with pytest.raises(SlotRefused) as refused:
        slots.check("i", "a", "installer")
    assert refused.value.reason == "full"
    slots.release(installer)
    slots.release(resident)
    assert slots.held == 2 and slots.count(tier="resident") == 0
    with pytest.raises(SlotRefused):
        slots.check("v3", "c", "other")  # both reserves are unused again


async def test_a_backend_cannot_fill_the_token_cap_or_lock_the_installer_out(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """api.tokens_per_issuer = 10; the panel-wide cap lowered to 13 for the test. Old code: a backend
    credential issued until the 10,000-token cap was full, and then the installer could not log in."""
    monkeypatch.setattr(principals, "MAX_LIVE_TOKENS", 13)
    monkeypatch.setattr(principals, "MAX_INSTALLER_SESSIONS", 2, raising=False)  # (old code had no such bound)
    password = initial_password(rig)  # readable until its first use
    backend = bearer(await token(rig, "backend", "cloud"))  # issued by "test": 1 of the 13
    installer = bearer(await token(rig, "installer"))
    body = {"role": "viewer", "subject": "v", "unit_id": "303", "ttl_s": 600}
    async with served(rig) as c:
        codes = [(await c.post("/api/v1/auth/tokens", headers=backend, json=body)).status_code for _ in range(10)]
        assert codes == [201] * 10
        r = await c.post("/api/v1/auth/tokens", headers=backend, json=body)
        assert (r.status_code, r.json()["code"]) == (409, "issuer_quota_reached")
        assert "backend:cloud" in r.json()["message"]
        assert (await c.post("/api/v1/auth/tokens", headers=installer, json=body)).status_code == 201
        assert (await c.post("/api/v1/auth/tokens", headers=installer, json=body)).status_code == 201
        assert auth_of(rig).tokens.live_count(kind="token") == 13
        r = await c.post("/api/v1/auth/tokens", headers=installer, json=body)
        assert (r.status_code, r.json()["code"]) == (409, "too_many_tokens")
        # Installer logins are outside that cap; at their own bound the oldest session gives way.
        logins = [await c.post("/api/v1/auth/login", json={"password": password}) for _ in range(2)]
        assert [r.status_code for r in logins] == [200, 200]
        assert (await c.get("/api/v1/auth/me", headers=installer)).json()["code"] == "token_revoked"
        newest = bearer(logins[-1].json()["token"])
        assert (await c.get("/api/v1/auth/me", headers=newest)).status_code == 200


def test_stream_reserves_must_leave_slots_for_everyone_else() -> None:
    from panel.errors import ConfigError
    from panel.platform import parse_config

    from .support import config_dict

    data = config_dict()
    data["api"] = {"streams": {"total": 8, "reserved_installer": 4, "reserved_residents": 4}}
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert "api.streams.reserved_residents" in str(e.value)
