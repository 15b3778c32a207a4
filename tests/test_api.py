"""The local API skeleton in-process: health, state, the installer-only tamper clear, uniform errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from panel.api.app import create_app
from panel.auth import Secrets

from .rig import Rig, make_config

TOKEN = "installer-token-0123456789"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(make_config(tmp_path), Secrets(installer_token=TOKEN))
    yield r
    await r.close()


def client(rig: Rig, simulated: bool = True) -> httpx.AsyncClient:
    app = create_app(rig.panel, simulated=simulated)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://panel")


async def test_health_and_state(rig: Rig) -> None:
    async with client(rig) as c:
        assert set((await c.get("/api/v1/health")).json()) == {"code", "message", "status"}
        h = (await c.get("/api/v1/health/details", headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert h["status"] in ("ok", "degraded") and h["checks"]["relays"] is True and h["simulated"] is True
        await rig.door.unlock(cause="remote", actor="backend", method="api")
        assert (await c.get("/api/v1/state")).status_code == 401  # state names residents: credential needed
        s = (await c.get("/api/v1/state", headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert s["door"]["relays"]["main"]["energised"] is True
        assert s["panel"] == {"id": "test-panel", "name": "Test entrance"}


async def test_tamper_clear_needs_the_installer_token(rig: Rig) -> None:
    await rig.drive(rig.cfg.tamper, True)
    await rig.drive(rig.cfg.tamper, False)
    async with client(rig) as c:
        r = await c.post("/api/v1/tamper/clear")
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await c.post("/api/v1/tamper/clear", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})
        assert r.status_code == 401 and rig.door.tamper_blocked
        r = await c.post("/api/v1/tamper/clear", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["code"] == "ok"
        assert not rig.door.tamper_blocked


async def test_tamper_clear_refused_while_the_switch_is_open(rig: Rig) -> None:
    await rig.drive(rig.cfg.tamper, True)
    async with client(rig) as c:
        r = await c.post("/api/v1/tamper/clear", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409 and r.json()["code"] == "tamper_active"
    assert rig.door.tamper_blocked


async def test_simulation_routes_exist_only_in_simulation(rig: Rig) -> None:
    async with client(rig, simulated=False) as c:
        r = await c.post("/api/v1/sim/buttons/b303/press")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    async with client(rig, simulated=True) as c:
        r = await c.get("/api/v1/sim/pins")
        assert r.status_code == 200 and "relay:main" in r.json()["pins"]


async def test_errors_are_uniform(rig: Rig) -> None:
    async with client(rig) as c:
        r = await c.post("/api/v1/sim/buttons/nope/press")
        assert r.status_code == 404 and r.json()["code"] == "unknown_button" and "b303" in r.json()["message"]
        r = await c.post("/api/v1/sim/buttons/b303/hold", json={"seconds": -1})
        assert r.status_code == 422 and r.json()["code"] == "invalid_request" and "seconds" in r.json()["message"]
        r = await c.get("/api/v1/nothing-here")
        assert r.status_code == 404 and set(r.json()) >= {"code", "message"}


async def test_without_installer_token_only_real_credentials_pass(tmp_path: Path) -> None:
    rig = Rig(make_config(tmp_path), Secrets())
    async with client(rig) as c:
        r = await c.post("/api/v1/tamper/clear", headers={"Authorization": "Bearer anything-at-all-123"})
        assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    await rig.close()


async def test_door_light_follows_the_relay(rig: Rig) -> None:
    led_pin = rig.pin(20)
    await rig.door.unlock(cause="remote", actor="backend", method="api")
    await rig.settle()
    assert led_pin.state == 1
    await rig.advance(2.01)
    assert led_pin.state == 0
