"""PATCH /api/v1/config through the config service: every live key reaches every component that uses it
(read back from the components, not from the config), every local-only key is refused with
``config_local_only`` and changes nothing, and over a real broker the MQTT side follows (Home Assistant
discovery republished with the new name, an MQTT open held for the new hold time)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from panel.api.principals import ApiAuth
from panel.auth import Secrets
from panel.daemon import Panel
from panel.link import signed
from panel.platform import key_apply, leaf_keys, parse_config

from .api_support import STATIC_TOKEN, api_rig, bearer, served
from .mosquitto import HA_USER, Broker, Client
from .rig import Rig
from .support import config_dict

INSTALLER = bearer(STATIC_TOKEN)


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text("# installer's note: keep this comment\n" + tomli_w.dumps(data))
    return path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = api_rig(tmp_path, secrets=Secrets(installer_token=STATIC_TOKEN, command_key="k" * 32))
    data = config_dict()
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {**data["api"], "mutations_per_minute": 100_000, "login_backoff_s": 0.05}
    r.panel.config_path = _write(tmp_path / "panel.toml", data)
    yield r
    await r.close()


def generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


# One new value for every live key; the test below fails when a live key is added without being checked.
LIVE_CHANGES: dict[str, Any] = {
    "panel.name": "Back door",
    "panel.board": "pi5-test",
    "buttons[0].unit.id": "903",
    "buttons[0].unit.label": "Flat 9",
    "calls.call_type": "audio",
    "calls.ring_timeout_s": 20,
    "calls.max_call_s": 600,
    "calls.same_button_during_call": "cancel",
    "calls.other_button_during_call": "replace",
    "door.relays[0].hold_s": 3,
    "door.held_open_s": 10,
    "door.open_grace_s": 5,
    "door.relock_on_open": False,
    "lights[0].role": "status",
    "api.session_ttl_s": 600,
    "api.login_backoff_s": 1.5,
    "api.login_lockout_after": 9,
    "api.mutations_per_minute": 6000,
    "api.tokens_per_issuer": 50,
    "log.level": "warning",
    "links.ttl_s": 120,
    "links.max_participants": 5,
    "links.max_previews": 8,
    "links.idle_s": 60,
}


# Live keys of the media section (the rig above has none; the test below runs a panel with media).
MEDIA_LIVE_CHANGES: dict[str, Any] = {
    "media.snapshots.at_press": True,
    "media.snapshots.max_calls": 1,
    "media.snapshots.max_mb": 50,
    "media.snapshots.min_free_mb": 10,
    "media.snapshots.wait_s": 5,
    "media.mjpeg.max_viewers": 1,
    "media.mjpeg.max_viewers_per_credential": 1,
    "media.mjpeg.max_viewers_per_address": 1,
    "media.mjpeg.viewers_reserved": 0,
}


def test_the_live_key_lists_cover_every_live_key() -> None:
    live = {k for k in leaf_keys() if key_apply(k) == "live"}
    assert {generic(k) for k in [*LIVE_CHANGES, *MEDIA_LIVE_CHANGES]} == live


async def test_every_live_key_reaches_every_component_that_uses_it(rig: Rig) -> None:
    links = rig.panel.call_links  # made before the change: it must follow it, not keep a copy
    rig.panel.lights.running(True)
    light = rig.pin(20)  # the "door" light: dark while the door is locked
    assert light.state is False
    root = logging.getLogger()
    level = root.level
    try:
        async with served(rig) as c:
            auth = ApiAuth.for_panel(rig.panel)
            r = await c.patch("/api/v1/config", headers=INSTALLER, json={"set": LIVE_CHANGES})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["changed"] == sorted(LIVE_CHANGES) and body["applied"] == sorted(LIVE_CHANGES)
            assert body["restart_required"] == []
            state = (await c.get("/api/v1/state", headers=INSTALLER)).json()
            assert state["panel"]["name"] == "Back door"
            assert (await c.get("/api/v1/config", headers=INSTALLER)).json()["restart_required"] == []

        # api.*: the running throttles and the session lifetime
        assert auth.session_ttl_s == 600
        assert (auth.login.base_s, auth.login.lockout_after) == (1.5, 9)
        assert auth.mutations.rate == 100.0 and auth.mutations.burst == 1500
        assert auth.tokens.per_issuer == 50
        # log.level
        assert root.level == logging.WARNING
        # links.*
        assert (links.cfg.ttl_s, links.cfg.max_participants, links.cfg.max_previews, links.cfg.idle_s) == (120, 5, 8, 60)
        # lights[0].role: the light now shows "running"
        assert light.state is True

        # door.relays[0].hold_s and door.relock_on_open: the relay holds 3 s although the door opened
        await rig.door.unlock(cause="installer", actor="installer", method="api")
        await rig.drive(rig.cfg.door.contact, True)
        assert rig.relay_on()
        await rig.advance(2.85)
        assert rig.relay_on() and rig.relay_pin().state is True
        await rig.advance(0.2)
        assert not rig.relay_on() and rig.relay_pin().state is False
        # door.held_open_s: raised 10 s after the opening, not 30
        assert rig.events("door.held_open") == []
        await rig.advance(7.0)
        [held] = rig.events("door.held_open")
        assert held["limit_s"] == 10 and held["panel"]["name"] == "Back door"
        await rig.drive(rig.cfg.door.contact, False)
        # door.open_grace_s: an opening 4 s after the release ended still counts as authorised (was 3 s)
        await rig.door.unlock(cause="installer", actor="installer", method="api")
        await rig.advance(3.1)
        await rig.advance(4.0)
        await rig.drive(rig.cfg.door.contact, True)
        assert rig.events("door.opened")[-1]["authorised"] is True and rig.events("door.forced") == []
        await rig.drive(rig.cfg.door.contact, False)

        # buttons[0].unit.*, calls.call_type and panel.*: in the call.created event
        calls = rig.panel.calls
        first = calls.press("b303")
        await rig.settle()
        created = rig.events("call.created")[-1]
        assert created["unit"] == {"id": "903", "label": "Flat 9"} and created["call_type"] == "audio"
        assert created["panel"]["name"] == "Back door"
        assert rig.journal.panel.board == "pi5-test"
        # calls.other_button_during_call = replace; calls.same_button_during_call = cancel
        replaced = calls.press("b304")
        assert replaced.action == "replaced" and replaced.replaced is not None
        assert replaced.replaced.guid == first.call.guid
        assert calls.press("b304").action == "canceled" and calls.current is None
        await rig.settle()
        # calls.ring_timeout_s: missed after 20 s, not 45
        missed = calls.press("b303")
        await rig.settle()
        await rig.advance(19.9)
        assert calls.current is not None and calls.current.guid == missed.call.guid
        await rig.advance(0.2)
        assert calls.current is None
        assert rig.events("call.status_updated")[-1]["status"] == "missed"
        # calls.max_call_s: the policy the call manager runs with
        assert calls.policy.max_call_s == 600
    finally:
        root.setLevel(level)


@pytest.mark.parametrize("key", [k for k in leaf_keys() if key_apply(k) == "local-only"])
async def test_every_local_only_key_is_refused_and_nothing_changes(rig: Rig, key: str) -> None:
    path = rig.panel.config_path
    assert path is not None
    before = path.read_bytes()
    panel = rig.panel
    held = (panel.cfg, panel.door.cfg, panel.door.relays["main"].cfg, panel.calls.cfg, panel.journal.panel,
            dict(panel.lights._by_role))
    concrete = key.replace("[]", "[0]")
    async with served(rig) as c:
        r = await c.patch("/api/v1/config", headers=INSTALLER, json={"set": {concrete: "changed"}})
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "config_local_only" and r.json()["errors"] == [concrete]
        assert concrete in r.json()["message"] and "in the config file on the panel itself" in r.json()["message"]
        r = await c.patch("/api/v1/config", headers=INSTALLER, json={"unset": [concrete]})
        assert r.status_code == 403 and r.json()["code"] == "config_local_only"
    assert path.read_bytes() == before
    assert (panel.cfg, panel.door.cfg, panel.door.relays["main"].cfg, panel.calls.cfg, panel.journal.panel,
            dict(panel.lights._by_role)) == held
    assert all(a is b for a, b in zip(held[:5], (panel.cfg, panel.door.cfg, panel.door.relays["main"].cfg,
                                                  panel.calls.cfg, panel.journal.panel), strict=True))


# The attacks that worked through the old route, with values that would otherwise be valid.
@pytest.mark.parametrize("body, refused", [
    ({"set": {"door.relays[0].pin": 19}}, ["door.relays[0].pin"]),
    ({"set": {"door.relays[0].active": "low", "door.relays[0].boot_pull_verified": True}},
     ["door.relays[0].active", "door.relays[0].boot_pull_verified"]),
    ({"set": {"lights[0].pin": 26}}, ["lights[0].pin"]),  # the strike's pin
    ({"unset": ["tamper"]}, ["tamper"]),
    ({"unset": ["door.contact"]}, ["door.contact"]),
    ({"set": {"media": {"ice_servers": [{"urls": ["turn:evil.example:3478"], "username": "u",
                                         "credential_env": "AWS_SECRET_ACCESS_KEY"}]}}},
     ["media.ice_servers[0].credential_env", "media.ice_servers[0].urls", "media.ice_servers[0].username"]),
    ({"set": {"mqtt.host": "evil.example", "mqtt.username": "x"}}, ["mqtt.host", "mqtt.username"]),
    ({"set": {"storage.history_max_rows": 100}}, ["storage.history_max_rows"]),
    ({"set": {"api.listen": "0.0.0.0:8080"}}, ["api.listen"]),
    ({"set": {"mqtt.require_signed_commands": False}}, ["mqtt.require_signed_commands"]),
    ({"set": {"webhooks.url": "https://evil.example/hook"}}, ["webhooks.url"]),
    ({"set": {"links.base_url": "https://evil.example"}}, ["links.base_url"]),
    # a whole table given as the value: its keys are checked one by one
    ({"set": {"door": {"relays": [{"id": "main", "pin": 19, "hold_s": 2, "max_on_s": 6}], "held_open_s": 30}}},
     ["door.relays[0].pin"]),
    # only a live key named, but the whole table replaced: the listen address it drops is found in the result
    ({"set": {"api": {"session_ttl_s": 600}}}, ["api.listen"]),
    # a restart key that would create a whole local-only table ([media]) is refused for the table
    ({"set": {"media.snapshots.max_calls": 10}}, ["media"]),
    ({"set": {"door.relays[0].pin": 19}, "dry_run": True}, ["door.relays[0].pin"]),
])
async def test_the_old_attacks_are_refused(rig: Rig, body: dict[str, Any], refused: list[str]) -> None:
    path = rig.panel.config_path
    assert path is not None
    before = path.read_bytes()
    cfg = rig.panel.cfg
    async with served(rig) as c:
        r = await c.patch("/api/v1/config", headers=INSTALLER, json=body)
    assert r.status_code == 403 and r.json()["code"] == "config_local_only", r.text
    assert set(refused) <= set(r.json()["errors"]), r.json()
    assert path.read_bytes() == before and rig.panel.cfg is cfg


async def test_restart_keys_are_saved_and_reported_not_applied(rig: Rig) -> None:
    async with served(rig) as c:
        r = await c.patch("/api/v1/config", headers=INSTALLER, json={"set": {
            "webhooks.heartbeat_s": 60, "api.max_body_bytes": 4096, "calls.max_call_s": 100}})
        assert r.status_code == 200, r.text
        assert r.json()["applied"] == ["calls.max_call_s"]
        assert r.json()["restart_required"] == ["api.max_body_bytes", "webhooks.heartbeat_s"]
        assert "applies after restart" in r.json()["message"]
        view = (await c.get("/api/v1/config", headers=INSTALLER)).json()
    assert view["restart_required"] == ["api.max_body_bytes", "webhooks.heartbeat_s"]
    assert "heartbeat_s = 60" in view["toml"] and "keep this comment" in view["toml"]
    assert rig.panel.cfg.webhooks.heartbeat_s == 300 and rig.panel.calls.policy.max_call_s == 100
    assert "door.relays[].hold_s" in view["live_keys"] and "door.relays[].pin" in view["local_only_keys"]
    assert "webhooks.heartbeat_s" in view["restart_keys"]


async def test_a_live_value_that_only_fits_a_pending_restart_value_writes_nothing(rig: Rig) -> None:
    """The old route wrote the file, then failed applying it (500, the file changed, the panel not)."""
    path = rig.panel.config_path
    assert path is not None
    # Edited by hand on the panel and not yet restarted: max_on_s 20 in the file, 6 in force.
    path.write_text(path.read_text().replace("max_on_s = 6", "max_on_s = 20"))
    before = path.read_bytes()
    async with served(rig) as c:
        r = await c.patch("/api/v1/config", headers=INSTALLER, json={"set": {"door.relays[0].hold_s": 10}})
    assert r.status_code == 422 and r.json()["code"] == "config_invalid", r.text
    assert "restart the panel first" in r.json()["message"]
    assert path.read_bytes() == before and rig.door.relays["main"].cfg.hold_s == 2


# -- over a real broker ---------------------------------------------------------------------------------

KEY = "k" * 24 + "-command-key"
A = "panel-a"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(tmp_path_factory.mktemp("broker"), panels=[A]) as b:
        yield b


class SyncedClock:
    """The ClockSync interface, synchronised (signed commands carry ``exp``)."""

    def synchronized(self) -> bool:
        return True


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.01)


async def test_mqtt_follows_a_change_over_the_api(broker: Broker, tmp_path: Path) -> None:
    data = config_dict(mqtt=broker.mqtt_config(A, homeassistant_discovery=True))
    data["panel"] = {"id": A, "name": "Front door"}
    data["storage"] = {"dir": str(tmp_path / "state")}
    secrets = Secrets(mqtt_password=broker.passwords.get(A), command_key=KEY, installer_token=STATIC_TOKEN)
    panel = Panel(parse_config(data), secrets, simulate=True, clock_sync=SyncedClock())
    panel.config_path = _write(tmp_path / "panel.toml", data)
    await panel.start()
    try:
        await _until(lambda: panel.mqtt is not None and panel.mqtt.connected, 10, "the panel never connected")
        topic = f"homeassistant/event/{A}/doorbell/config"
        async with Client(broker, HA_USER, subscribe=("homeassistant/#",)) as ha:
            first = json.loads(await ha.retained(topic) or b"{}")
            assert first["device"]["name"] == "Front door"
            assert panel.api is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{panel.api.bound_port}") as c:
                r = await c.patch("/api/v1/config", headers=INSTALLER, json={"set": {
                    "panel.name": "Back door", "door.relays[0].hold_s": 3}})
                assert r.status_code == 200, r.text
            msg = await ha.wait_for(lambda m: str(m.topic) == topic and json.loads(m.payload)["device"]["name"]
                                    == "Back door", timeout=5)
            assert msg is not None
        # what a Home Assistant starting now reads
        again = json.loads(await Client(broker, HA_USER).retained(topic) or b"{}")
        assert again["device"]["name"] == "Back door"

        pin = panel.hw.factory.pin(f"GPIO{panel.cfg.relay('main').pin}")
        pin.clear_states()
        async with Client(broker) as backend:
            body = signed(KEY, A, {"id": str(uuid.uuid4()), "cmd": "open", "exp": round(time.time() + 10, 3)})
            reply = await backend.request(A, body)
        assert reply["code"] == "ok" and reply["duration_s"] == 3, reply
        await _until(lambda: pin.state is False, 5, "the relay never dropped")
        on, off = next(s.timestamp for s in pin.states if s.state is True), pin.states[-1].timestamp
        assert 2.8 <= off - on <= 3.5  # the relay's actual hold: 3 s, not the 2 s it started with
    finally:
        await panel.stop("test over")


# -- media ------------------------------------------------------------------------------------------------


async def test_live_media_keys_reach_snapshots_and_mjpeg(tmp_path: Path) -> None:
    from panel.media.snapshots import MIB

    from .media_rig import INSTALLER as MEDIA_INSTALLER
    from .media_rig import api, eventually, media_config, ring, start_panel_inprocess

    media = media_config(snapshots={"at_press": False, "max_calls": 5}, mjpeg={"max_viewers": 4})
    panel = await start_panel_inprocess(tmp_path, media)
    data = config_dict(media=media)
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    panel.config_path = _write(tmp_path / "panel.toml", data)
    try:
        visitor = panel.visitor
        assert visitor is not None and visitor.snapshots is not None and visitor.mjpeg is not None
        assert visitor.jpegs is not None
        async with api(panel) as c:
            r = await c.patch("/api/v1/config", headers=bearer(MEDIA_INSTALLER), json={"set": MEDIA_LIVE_CHANGES})
            assert r.status_code == 200, r.text
            assert r.json()["applied"] == sorted(MEDIA_LIVE_CHANGES) and r.json()["restart_required"] == []
        files = visitor.snapshots.files
        assert (files.max_calls, files.max_bytes, files.min_free) == (1, 50 * MIB, 10 * MIB)
        assert visitor.jpegs.wait_s == 5 and visitor.mjpeg.cfg.max_viewers == 1
        limits = visitor.mjpeg.slots.limits
        assert (limits.total, limits.per_credential, limits.per_address, limits.reserved_residents) == (1, 1, 1, 0)
        # at_press was off at start: now every press stores a picture, and only the last call's are kept
        guids = []
        for _ in range(2):
            guid = await ring(panel)
            await eventually(lambda g=guid: any(json.loads(row[0])["guid"] == g for row in panel.store.read_sync(
                lambda conn: conn.execute("SELECT data FROM events WHERE type='call.snapshot'").fetchall())),
                what="call.snapshot")
            await panel.calls.end(guid, "alice")
            guids.append(guid)
        root = panel.cfg.storage.dir / "snapshots"
        assert [p.name for p in root.iterdir()] == [guids[1]]
    finally:
        await panel.stop("test over")
