"""Home Assistant over a real Mosquitto: the discovery it reads, the templates it renders, the call
outcomes its automations see, and the birth message that makes the panel announce itself again.

Home Assistant's side is played by the ``homeassistant`` broker user with the ACL of docs/mqtt.md;
its value templates are rendered with Jinja2 as Home Assistant does (``value_json`` = the payload).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest

from panel.daemon import Panel
from panel.link import discovery_messages, installer_url
from panel.platform import parse_config

from .eventually import eventually
from .mosquitto import HA_USER, Broker, Client
from .support import config_dict, free_port
from .test_mqtt import A, cmd, panel_config, press, start

DISCOVERY = f"homeassistant/+/{A}/+/config"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(tmp_path_factory.mktemp("broker"), panels=[A]) as b:
        yield b


@pytest.fixture
async def backend(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker) as c:
        yield c


def ha_config(broker: Broker, state: Path, **extra: Any) -> dict[str, Any]:
    data = panel_config(broker, state, homeassistant_discovery=True)
    data["api"] = {"listen": f"127.0.0.1:{free_port()}"}
    data.update(extra)
    return data


def render(template: str, payload: bytes) -> str:
    """A value template as Home Assistant renders it against an MQTT payload."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value_json=json.loads(payload), value=payload.decode()).strip()


async def discovery(broker: Broker, panel: Panel) -> dict[str, dict[str, Any]]:
    """Every discovery config the broker holds for the panel (as Home Assistant reads them at its
    start), once all that the panel announces are there: the panel is connected before it publishes."""
    wanted = {t for t, c in discovery_messages(panel.cfg, panel.mqtt.topics).items()  # type: ignore[union-attr]
              if c is not None}
    async with Client(broker, HA_USER, subscribe=(DISCOVERY,)) as ha:
        def held() -> dict[str, dict[str, Any]]:
            return {m.topic.value: json.loads(m.payload) for m in ha.messages if m.payload}
        await eventually(lambda: wanted <= set(held()), 10, "the panel's discovery did not all arrive")
        return held()


def entity(configs: dict[str, dict[str, Any]], component: str, object_id: str) -> dict[str, Any] | None:
    return configs.get(f"homeassistant/{component}/{A}/{object_id}/config")


async def test_discovery_has_the_door_contact_problem_sensors_outcome_and_installer_page(
        broker: Broker, tmp_path: Path) -> None:
    data = ha_config(broker, tmp_path / "state")
    panel = await start(data, broker)
    try:
        configs = await discovery(broker, panel)
        async with Client(broker, HA_USER, subscribe=()) as ha:
            door = entity(configs, "binary_sensor", "door")
            held = entity(configs, "binary_sensor", "door_held_open")
            blocked = entity(configs, "binary_sensor", "tamper_blocked")
            outcome = entity(configs, "event", "call_outcome")
            assert door is not None and held is not None and blocked is not None and outcome is not None
            assert door["device_class"] == "door" and door["state_topic"] == f"panels/{A}/state/door"
            assert held["device_class"] == "problem" and blocked["device_class"] == "problem"
            assert blocked["state_topic"] == f"panels/{A}/state/tamper"
            assert {"missed", "declined", "answered", "ended"} <= set(outcome["event_types"])
            assert outcome["state_topic"] == f"panels/{A}/call_outcome"
            port = data["api"]["listen"].rpartition(":")[2]
            assert door["device"]["configuration_url"] == f"http://127.0.0.1:{port}/installer"
            assert len({e["unique_id"] for e in (door, held, blocked, outcome)}) == 4

            # The templates read the real state payloads (closed, then open) as Home Assistant renders them.
            state = await ha.retained(f"panels/{A}/state/door")
            assert state is not None and render(door["value_template"], state) == "OFF"
            contact = panel.hw.factory.pin(f"GPIO{panel.cfg.door.contact.pin}")  # type: ignore[union-attr]
            contact.drive_high()
            await eventually(lambda: panel.door.is_open, 3, "the contact did not read open")
            async with Client(broker, HA_USER, subscribe=(f"panels/{A}/state/door",)) as live:
                opened = await live.wait_for(lambda m: json.loads(m.payload)["open"] is True)
                assert render(door["value_template"], opened.payload) == "ON"
                assert render(held["value_template"], opened.payload) == "OFF"
                held_open = json.loads(opened.payload) | {"held_open": True}
                assert render(held["value_template"], json.dumps(held_open).encode()) == "ON"
            tamper = await ha.retained(f"panels/{A}/state/tamper")
            assert tamper is not None and render(blocked["value_template"], tamper) == "OFF"
            assert render(blocked["value_template"], b'{"active": false, "blocked": true}') == "ON"
    finally:
        await panel.stop("test over")


async def test_a_panel_without_a_contact_has_no_door_sensor_and_clears_an_old_one(
        broker: Broker, tmp_path: Path) -> None:
    panel = await start(ha_config(broker, tmp_path / "state"), broker)
    try:
        assert entity(await discovery(broker, panel), "binary_sensor", "door") is not None
    finally:
        await panel.stop("reconfigured")
    data = ha_config(broker, tmp_path / "state")
    data["door"] = {k: v for k, v in data["door"].items() if k not in ("contact", "held_open_s")}
    old = [f"homeassistant/binary_sensor/{A}/{name}/config" for name in ("door", "door_held_open")]
    # Home Assistant listens from before the restart: it holds the old sensors (retained) until the panel
    # clears them, which a subscription made after the start could see in either order.
    async with Client(broker, HA_USER, subscribe=(DISCOVERY,)) as ha:
        panel = await start(data, broker)
        try:
            def latest() -> dict[str, bytes]:
                return {m.topic.value: bytes(m.payload) for m in ha.messages}

            await eventually(lambda: all(latest().get(t) == b"" for t in old), 10, "the old door sensors cleared")
            configs = await discovery(broker, panel)
            assert entity(configs, "binary_sensor", "door") is None
            assert entity(configs, "binary_sensor", "door_held_open") is None
            assert entity(configs, "binary_sensor", "tamper_blocked") is not None
        finally:
            await panel.stop("test over")


async def test_call_outcomes_reach_home_assistant_as_events(broker: Broker, backend: Client, tmp_path: Path) -> None:
    data = ha_config(broker, tmp_path / "state")
    data["calls"] = {"ring_timeout_s": 5}
    panel = await start(data, broker)
    try:
        outcome = entity(await discovery(broker, panel), "event", "call_outcome")
        assert outcome is not None
        async with Client(broker, HA_USER, subscribe=(f"panels/{A}/call_outcome",)) as ha:

            def seen() -> list[dict[str, Any]]:
                return [json.loads(m.payload) for m in ha.messages if m.topic.matches(f"panels/{A}/call_outcome")]

            await press(panel, "b303")
            guid = panel.calls.current.guid  # type: ignore[union-attr]
            assert (await backend.request(A, cmd("answer", who="alice")))["code"] == "ok"
            assert (await backend.request(A, cmd("end", who="alice")))["code"] == "ok"
            await eventually(lambda: len(seen()) >= 2, 5, "no answered/ended outcome")
            assert [(e["event_type"], e["call_guid"], e["who"]) for e in seen()] == [
                ("answered", guid, "alice"), ("ended", guid, "alice")]

            await press(panel, "b304")
            assert (await backend.request(A, cmd("decline", who="bob")))["code"] == "ok"
            await eventually(lambda: len(seen()) >= 3, 5, "no declined outcome")
            assert seen()[2]["event_type"] == "declined" and seen()[2]["unit"]["id"] == "304"

            await press(panel, "b303")
            await eventually(lambda: len(seen()) >= 4, 15, "no missed outcome after ring_timeout_s")
            assert seen()[3]["event_type"] == "missed" and seen()[3]["who"] is None
            assert all(e["event_type"] in outcome["event_types"] for e in seen())
    finally:
        await panel.stop("test over")


async def test_call_state_is_published_only_when_it_changes(broker: Broker, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The link looks at its state every TICK_S; make that often, so that a payload that changes by
    # itself (a growing duration) would show up many times within the quiet period below.
    monkeypatch.setattr("panel.link._mqtt.TICK_S", 0.05)
    panel = await start(ha_config(broker, tmp_path / "state"), broker)
    try:
        async with Client(broker, HA_USER, subscribe=(f"panels/{A}/state/call",)) as ha:
            await ha.wait_for(lambda m: m.retain)
            await press(panel, "b303")
            ringing = await ha.wait_for(lambda m: json.loads(m.payload)["status"] == "ringing")
            assert json.loads(ringing.payload)["call"]["duration_s"] is None
            since = len(ha.messages)
            assert await ha.quiet(lambda m: True, 0.6, since) == []
    finally:
        await panel.stop("test over")


async def test_home_assistant_birth_message_brings_discovery_again(broker: Broker, tmp_path: Path) -> None:
    panel = await start(ha_config(broker, tmp_path / "state"), broker)
    try:
        every = set(discovery_messages(panel.cfg, panel.mqtt.topics))  # type: ignore[union-attr]
        await discovery(broker, panel)  # the connect's discovery is all out
        async with Client(broker, HA_USER, subscribe=(DISCOVERY,)) as ha:
            since = len(ha.messages)
            await ha.publish("homeassistant/status", b"online")

            def again() -> set[str]:
                return {m.topic.value for m in ha.messages[since:] if not m.retain}
            await eventually(lambda: again() == every, 5, "not all of the discovery was published again")
            since = len(ha.messages)
            await ha.publish("homeassistant/status", b"offline")
            assert await ha.quiet(lambda m: not m.retain, 0.3, since) == []
    finally:
        await panel.stop("test over")


def test_installer_url_uses_the_lan_address_for_a_wildcard_listen_and_links_base_url_first() -> None:
    cfg = parse_config(config_dict(api={"listen": "0.0.0.0:8443"}))
    assert installer_url(cfg, "192.168.1.40") == "https://192.168.1.40:8443/installer"
    cfg6 = parse_config(config_dict(api={"listen": "[::]:8443"}))
    assert installer_url(cfg6, "fd00::17") == "https://[fd00::17]:8443/installer"
    based = parse_config(config_dict(api={"listen": "0.0.0.0:8443"}, links={"base_url": "https://panel.local:8443"}))
    assert installer_url(based, "192.168.1.40") == "https://panel.local:8443/installer"
