"""The MQTT control channel against a real Mosquitto (TLS, per-device credentials, ACL).

The panel runs in-process (``Panel`` with gpiozero's MockFactory and the real store), so the relay
is observed on its mock pin; one test runs ``panel run --simulate`` as a subprocess to SIGKILL it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from panel.auth import Secrets
from panel.daemon import Panel
from panel.link import signed
from panel.platform import parse_config

from .eventually import eventually
from .mosquitto import HA_USER, Broker, Client, TestCA
from .support import config_dict, start_panel

KEY = "k" * 24 + "-command-key"
A, B = "panel-a", "panel-b"


class FakeClockSync:
    """The ClockSync interface with a switch."""

    def __init__(self, synced: bool = True) -> None:
        self.synced = synced

    def synchronized(self) -> bool:
        return self.synced


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(tmp_path_factory.mktemp("broker"), panels=[A, B]) as b:
        yield b


def panel_config(broker: Broker, state: Path, panel_id: str = A, *, cert: bool = False, **mqtt: Any) -> dict[str, Any]:
    data = config_dict(mqtt=broker.mqtt_config(panel_id, cert=cert, **mqtt))
    data["panel"] = {"id": panel_id, "name": f"Entrance {panel_id}"}
    data["storage"] = {"dir": str(state)}
    return data


async def start(data: dict[str, Any], broker: Broker, *, synced: bool = True, key: str | None = KEY,
                connect: bool = True) -> Panel:
    pid = data["panel"]["id"]
    secrets = Secrets(mqtt_password=broker.passwords.get(pid), command_key=key)
    panel = Panel(parse_config(data), secrets, simulate=True, clock_sync=FakeClockSync(synced))
    await panel.start()
    if connect:
        await eventually(lambda: panel.mqtt is not None and panel.mqtt.connected, 10, "the panel never connected")
    return panel


@pytest.fixture
async def panel(broker: Broker, tmp_path: Path) -> AsyncIterator[Panel]:
    p = await start(panel_config(broker, tmp_path / "state", require_signed_commands=True), broker)
    yield p
    await p.stop("test over")


@pytest.fixture
async def backend(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker) as c:
        yield c


def cmd(cmd: str = "open", *, panel: str = A, key: str | None = KEY, exp_in: float | None = 10, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": str(uuid.uuid4()), "cmd": cmd, **fields}
    if exp_in is not None:
        body["exp"] = round(time.time() + exp_in, 3)
    return signed(key, panel, body) if key is not None else body


def relay_pin(panel: Panel, relay: str = "main") -> Any:
    return panel.hw.factory.pin(f"GPIO{panel.cfg.relay(relay).pin}")


def access_log(panel: Panel) -> list[dict[str, Any]]:
    return panel.store.read_sync(lambda c: [dict(r) for r in c.execute("SELECT * FROM access_log ORDER BY seq")])


def events(panel: Panel, type_: str) -> list[dict[str, Any]]:
    rows = panel.store.read_sync(lambda c: c.execute("SELECT data FROM events WHERE type=? ORDER BY seq",
                                                     (type_,)).fetchall())
    return [json.loads(r[0]) for r in rows]


# -- commands ----------------------------------------------------------------------------------------


async def test_open_command_energises_the_relay_and_is_acknowledged(panel: Panel, backend: Client) -> None:
    pin = relay_pin(panel)
    assert pin.state is False
    reply = await backend.request(A, cmd(actor="resident-7", duration_s=3))
    assert reply["code"] == "ok", reply
    assert reply["relay"] == "main" and reply["duration_s"] == 3 and reply["cause"] == "remote"
    assert pin.state is True
    [row] = access_log(panel)
    assert (row["method"], row["cause"], row["actor"], row["id"]) == ("mqtt", "remote", "resident-7", reply["access_id"])
    spent = panel.store.read_sync(lambda c: c.execute("SELECT event_id FROM seen_commands WHERE id=?",
                                                      (reply["id"],)).fetchone())
    assert spent is not None and spent[0] == row["event_id"]  # the id was spent in the unlock's transaction
    door = await backend.wait_for(lambda m: m.topic.matches(f"panels/{A}/state/door") and json.loads(m.payload)["released"])
    assert json.loads(door.payload)["relays"]["main"]["energised"] is True


async def test_every_bad_command_is_refused_with_its_code_and_the_relay_never_moves(
        panel: Panel, backend: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    pin = relay_pin(panel)
    pin.clear_states()
    status = await backend.request(A, cmd("status"))
    assert status["code"] == "ok"
    used_id = status["id"]
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("malformed", b"{not json", {}),
        ("malformed", b"[1, 2]", {}),
        ("malformed", cmd(extra_field=1), {}),
        ("malformed", signed(KEY, A, {"cmd": "open", "exp": time.time() + 10}), {}),  # no id
        ("malformed", cmd(exp_in=None) | {"exp": (time.time() + 10) * 1000}, {}),  # exp in milliseconds
        ("unsupported_command", cmd("explode"), {}),
        ("retained", cmd(), {"retain": True}),
        ("unsigned", cmd(key=None), {}),
        ("bad_signature", cmd(key="another-key-entirely-wrong"), {}),
        ("bad_signature", cmd(panel=B), {}),  # signed for another panel
        ("bad_signature", cmd() | {"actor": "changed-after-signing"}, {}),
        ("expired", cmd(exp_in=-1), {}),
        ("expiry_too_far", cmd(exp_in=3600), {}),
        ("missing_expiry", cmd(exp_in=None), {}),
        ("stale_nonce", cmd(nonce="0" * 32), {}),
        ("replayed", signed(KEY, A, {"id": used_id, "cmd": "open", "exp": time.time() + 10}), {}),
        ("bad_duration", cmd(duration_s=600), {}),
        ("unknown_relay", cmd(relay="garage"), {}),
        ("unknown_call", cmd(call_guid="no-such-call"), {}),
        ("bad_response_topic", cmd(), {"response_topic": f"panels/{A}/state/door", "reply_on": f"panels/{A}/replies"}),
    ]
    for code, body, kw in cases:
        reply = await backend.request(A, body, **kw)
        assert reply["code"] == code, (code, body, reply)
        assert reply["message"], reply
    # clear the retained command so that no later subscriber meets it
    await backend.publish(f"panels/{A}/commands", b"", retain=True)

    # tamper last: the block outlives the switch
    tamper = panel.cfg.tamper
    assert tamper is not None
    panel.hw.factory.pin(f"GPIO{tamper.pin}").drive_high()
    await eventually(lambda: panel.door.tamper_blocked, 2, "tamper never registered")
    reply = await backend.request(A, cmd())
    assert reply["code"] == "tamper_blocked", reply

    assert [s.state for s in pin.states] == [False], "the relay moved"
    assert access_log(panel) == []
    refused = [c for c in caplog.records if c.getMessage().startswith("command refused")]
    logged = {getattr(r, "code", None) for r in refused}
    assert {c for c, _, _ in cases} - logged == set()
    assert "tamper_blocked" in {e["code"] for e in events(panel, "door.unlock_refused")}


# Every one of these was accepted by lax validation (``"1"`` -> 1.0, ``true`` -> 1.0) and moved the relay,
# while the HTTP route refused the same body: one strict schema for both channels now.
@pytest.mark.parametrize("fields, field", [
    ({"duration_s": "1"}, "duration_s"),
    ({"duration_s": True}, "duration_s"),
    ({"exp": "EXP"}, "exp"),  # a fresh expiry, as a string
    ({"exp": True}, "exp"),
    ({"nonce": 12345678}, "nonce"),
    ({"relay": ["main"]}, "relay"),
    ({"call_guid": 7}, "call_guid"),
    ({"actor": 7}, "actor"),
])
async def test_open_with_a_loosely_typed_field_is_malformed_naming_it_and_nothing_moves(
        panel: Panel, backend: Client, fields: dict[str, Any], field: str) -> None:
    pin = relay_pin(panel)
    pin.clear_states()
    if fields.get("exp") == "EXP":
        fields = {"exp": str(round(time.time() + 10))}
    body = cmd(exp_in=None if "exp" in fields else 10, **fields)  # signed as sent: only the schema refuses it
    reply = await backend.request(A, body)
    assert reply["code"] == "malformed", reply
    assert reply["message"].startswith(f"{field}: "), reply
    assert [s.state for s in pin.states] == [False], "the relay moved"
    assert access_log(panel) == []
    await panel.journal.flush()
    [refused] = events(panel, "door.unlock_refused")
    assert (refused["code"], refused["method"], refused["relay"]) == ("malformed", "mqtt", "main")
    assert refused["message"].startswith(f"{field}: ")


async def test_open_with_a_duplicate_key_is_malformed_and_nothing_moves(panel: Panel, backend: Client) -> None:
    pin = relay_pin(panel)
    pin.clear_states()
    good = cmd(relay="main")
    text = json.dumps(good)
    # The same command with the relay named twice: json.loads alone would keep the second.
    doubled = text[:-1] + ', "relay": "gate"}'
    reply = await backend.request(A, doubled.encode())
    assert (reply["code"], reply["id"]) == ("malformed", good["id"]), reply
    assert reply["message"].startswith("relay: duplicate key"), reply
    nested = text[:-1] + ', "x": {"a": 1, "a": 2}}'
    reply = await backend.request(A, nested.encode())
    assert reply["code"] == "malformed" and reply["message"].startswith("x.a: duplicate key"), reply
    assert [s.state for s in pin.states] == [False], "the relay moved"
    await panel.journal.flush()
    assert [e["code"] for e in events(panel, "door.unlock_refused")] == ["malformed", "malformed"]
    assert (await backend.request(A, good))["code"] == "ok"  # the command itself was fine


async def test_open_reply_reports_the_duration_the_relay_was_granted(broker: Broker, backend: Client,
                                                                     tmp_path: Path) -> None:
    data = panel_config(broker, tmp_path / "state")
    data["door"]["relays"].append({"id": "gate", "pin": 19, "mode": "bistable", "hold_s": 5, "max_on_s": 60})
    panel = await start(data, broker)
    try:
        first = await backend.request(A, cmd(relay="gate", duration_s=50))
        assert (first["code"], first["duration_s"]) == ("ok", 50), first
        # Already on: the relay's max_on_s counts from the first energise, so this one gets < 60 s.
        second = await backend.request(A, cmd(relay="gate", duration_s=60))
        assert second["code"] == "ok", second
        remaining = panel.door.state()["relays"]["gate"]["remaining_s"]
        assert second["duration_s"] < 60 and second["duration_s"] == pytest.approx(remaining, abs=0.5)
        assert f"for {second['duration_s']:g} s" in second["message"]
    finally:
        await panel.stop("test over")


async def test_commands_must_be_signed_unless_the_config_says_otherwise(broker: Broker, backend: Client,
                                                                        tmp_path: Path) -> None:
    data = panel_config(broker, tmp_path / "state")
    del data["mqtt"]["require_signed_commands"]  # the default, as a config that does not mention it gets
    panel = await start(data, broker)
    try:
        pin = relay_pin(panel)
        pin.clear_states()
        reply = await backend.request(A, cmd(key=None))
        assert reply["code"] == "unsigned", reply
        assert [s.state for s in pin.states] == [False] and access_log(panel) == [], "an unsigned open moved the relay"
        assert (await backend.request(A, cmd()))["code"] == "ok"  # the same command, signed
    finally:
        await panel.stop("test over")


async def test_replayed_ids_are_remembered_across_a_restart(broker: Broker, backend: Client, tmp_path: Path) -> None:
    data = panel_config(broker, tmp_path / "state")
    command = cmd(exp_in=30)
    first = await start(data, broker)
    try:
        assert (await backend.request(A, command))["code"] == "ok"
    finally:
        await first.stop("restart")
    second = await start(data, broker)
    try:
        relay_pin(second).clear_states()
        reply = await backend.request(A, command)
        assert reply["code"] == "replayed", reply
        assert [s.state for s in relay_pin(second).states] == [False]
        assert len(access_log(second)) == 1  # the first panel's release only
    finally:
        await second.stop("test over")


async def test_before_time_sync_only_commands_echoing_the_nonce_are_accepted(
        broker: Broker, backend: Client, tmp_path: Path) -> None:
    panel = await start(panel_config(broker, tmp_path / "state", command_max_age_s=5), broker, synced=False)
    try:
        sync = panel.clock_sync
        assert isinstance(sync, FakeClockSync)
        # (an earlier panel-a's retained state may arrive first: wait for this one's)
        fresh = await backend.wait_for(lambda m: m.topic.matches(f"panels/{A}/state/freshness")
                                       and json.loads(m.payload)["period_s"] == 5)
        state = json.loads(fresh.payload)
        assert state["clock_synced"] is False and len(state["nonce"]) >= 16

        reply = await backend.request(A, cmd(exp_in=10))  # a perfectly good exp means nothing yet
        assert reply["code"] == "clock_unsynced", reply
        assert relay_pin(panel).state is False
        assert (await backend.request(A, cmd(exp_in=None, nonce="f" * 32)))["code"] == "stale_nonce"

        reply = await backend.request(A, cmd(exp_in=None, nonce=state["nonce"]))
        assert reply["code"] == "ok", reply
        assert relay_pin(panel).state is True

        sync.synced = True  # NTP arrives: exp is checked from now on, and the state topic says so
        status = await backend.request(A, cmd("status", exp_in=10))
        assert status["code"] == "ok" and status["state"]["freshness"]["clock_synced"] is True
        await backend.wait_for(lambda m: m.topic.matches(f"panels/{A}/state/freshness")
                               and json.loads(m.payload)["clock_synced"] is True)
        assert (await backend.request(A, cmd("status", exp_in=-5)))["code"] == "expired"
    finally:
        await panel.stop("test over")


async def test_sensorberg_alias_opens_and_ends_the_call(panel: Panel, backend: Client) -> None:
    def alias(action: str, value: Any) -> dict[str, Any]:
        return signed(KEY, A, {"id": str(uuid.uuid4()), "exp": time.time() + 10, "action": action, "value": value})

    reply = await backend.request(A, alias("open", "true"))
    assert reply["code"] == "ok" and reply["cmd"] == "open", reply
    assert relay_pin(panel).state is True
    assert (await backend.request(A, alias("call", "false")))["code"] == "no_call"
    assert (await backend.request(A, alias("call", "true")))["code"] == "unsupported_command"

    await press(panel, "b303")
    assert (await backend.request(A, cmd("answer", who="resident-1")))["code"] == "ok"
    reply = await backend.request(A, alias("call", False))
    assert reply["code"] == "ok" and reply["cmd"] == "end", reply
    assert reply["call"]["status"] == "ended"


async def press(panel: Panel, button_id: str) -> None:
    b = panel.cfg.button(button_id)
    pin = panel.hw.factory.pin(f"GPIO{b.pin}")
    pin.drive_low()
    await eventually(lambda: panel.calls.current is not None, 2, "the press made no call")
    pin.drive_high()


async def test_first_answer_wins_and_the_door_opens_for_the_call(panel: Panel, backend: Client) -> None:
    await press(panel, "b303")
    guid = panel.calls.current.guid  # type: ignore[union-attr]
    # Not answered yet: the door does not open for this call.
    assert (await backend.request(A, cmd(call_guid=guid)))["code"] == "not_answered"
    first, second = await asyncio.gather(backend.request(A, cmd("answer", who="alice")),
                                         backend.request(A, cmd("answer", who="bob")))
    codes = sorted([first["code"], second["code"]])
    assert codes == ["already_answered", "ok"], (first, second)
    winner = first if first["code"] == "ok" else second
    loser = second if winner is first else first
    who = winner["call"]["answered_by"]
    assert who in ("alice", "bob") and who in loser["message"]
    answered = [e for e in events(panel, "call.status_updated") if e["status"] == "connecting"]
    assert [e["answered_by"] for e in answered] == [who]
    call_state = await backend.wait_for(lambda m: m.topic.matches(f"panels/{A}/state/call")
                                        and json.loads(m.payload)["status"] == "connected")
    assert json.loads(call_state.payload)["call"]["answered_by"] == who

    reply = await backend.request(A, cmd(actor=who))  # no guid: belongs to the answered call
    assert reply["code"] == "ok" and reply["cause"] == "call" and reply["call_guid"] == guid
    assert access_log(panel)[-1]["call_guid"] == guid
    assert (await backend.request(A, cmd("end", who=who)))["code"] == "ok"
    assert (await backend.request(A, cmd("decline", who="bob", call_guid=guid)))["code"] == "call_over"


# -- the broker: ACL, identity, TLS, restarts, last will ----------------------------------------


FORGED = b'{"name": "forged by panel-b"}'


async def test_a_panel_cannot_read_or_write_another_panels_topics(broker: Broker, panel: Panel,
                                                                  backend: Client) -> None:
    assert await backend.retained(f"panels/{A}/status") == b"online"  # positive control: A's state is there
    async with Client(broker, B, subscribe=(f"panels/{A}/#", "panels/#", "homeassistant/#")) as b:
        relay_pin(panel).clear_states()
        since = len(backend.messages)
        await b.publish(f"panels/{A}/commands", json.dumps(cmd()))
        await b.publish(f"panels/{A}/status", b"offline", retain=True)
        await b.publish(f"panels/{A}/ha/lock/set", b"OPEN")
        await b.publish(f"homeassistant/lock/{A}/door/config", FORGED, retain=True)
        # live traffic of A while B listens: a command, its reply, state changes and events
        assert (await backend.request(A, cmd("status")))["code"] == "ok"
        contact = panel.cfg.door.contact
        assert contact is not None
        panel.hw.factory.pin(f"GPIO{contact.pin}").drive_high()  # the door is forced open
        await backend.wait_for(lambda m: m.topic.matches(f"panels/{A}/events/door.forced_open"), since=since)
        seen_by_b = await b.quiet(lambda m: f"/{A}/" in str(m.topic) or str(m.topic).endswith(f"/{A}"), 0.7)
        assert seen_by_b == [], [str(m.topic) for m in seen_by_b]
        leaked = [m for m in backend.messages[since:] if str(m.topic) in (
            f"panels/{A}/status", f"panels/{A}/ha/lock/set") or (str(m.topic) == f"panels/{A}/commands"
                                                              and b'"open"' in m.payload)]
        assert leaked == [], [(str(m.topic), m.payload) for m in leaked]
        # ...while B may use its own subtree
        await b.publish(f"panels/{B}/status", b"online", retain=True)
        await backend.wait_for(lambda m: m.topic.matches(f"panels/{B}/status"), since=since)
    assert [s.state for s in relay_pin(panel).states] == [False]
    assert await backend.retained(f"panels/{A}/status") == b"online"
    # B's forged discovery did not land. The broker outlives this test, so A's own discovery config may
    # be retained there from another test (Home Assistant's): only B's payload would be wrong.
    assert await backend.retained(f"homeassistant/lock/{A}/door/config", timeout=0.5) != FORGED


async def test_client_certificate_identity_works_and_is_confined_by_the_acl(broker: Broker, backend: Client,
                                                                            tmp_path: Path) -> None:
    panel = await start(panel_config(broker, tmp_path / "state", cert=True), broker)
    try:
        reply = await backend.request(A, cmd())
        assert reply["code"] == "ok" and relay_pin(panel).state is True
    finally:
        await panel.stop("test over")
    # panel-b's certificate gives the user name panel-b: it cannot read panel-a's topics
    async with Client(broker, B, subscribe=(f"panels/{A}/#",), cert=broker.client_certs[B]) as b:
        assert await b.quiet(lambda m: True, 0.5) == []


@pytest.mark.parametrize("problem", ["unknown_ca", "wrong_password"])
async def test_the_link_refuses_an_unverified_broker_and_says_why(broker: Broker, tmp_path: Path, problem: str) -> None:
    data = panel_config(broker, tmp_path / "state")
    key: dict[str, Any] = {}
    if problem == "unknown_ca":
        data["mqtt"]["ca_file"] = str(TestCA(tmp_path, "Some other CA").path)
    pid = data["panel"]["id"]
    secrets = Secrets(mqtt_password="not-the-password" if problem == "wrong_password" else broker.passwords[pid],
                      command_key=KEY, **key)
    panel = Panel(parse_config(data), secrets, simulate=True, clock_sync=FakeClockSync())
    await panel.start()
    try:
        assert panel.mqtt is not None
        await eventually(lambda: panel.mqtt is not None and panel.mqtt.last_error is not None, 5, "no error reported")
        assert not panel.mqtt.connected
        error = panel.mqtt.last_error or ""
        assert ("certificate" if problem == "unknown_ca" else "credentials") in error, error
        assert (await panel.health())["checks"]["mqtt"]["connected"] is False
    finally:
        await panel.stop("test over")


async def test_a_broker_restart_is_survived(tmp_path: Path) -> None:
    with Broker(tmp_path / "broker", panels=[A]) as own:
        panel = await start(panel_config(own, tmp_path / "state", reconnect_max_s=1), own)
        try:
            async with Client(own) as backend:
                assert (await backend.request(A, cmd()))["code"] == "ok"
            own.restart()  # retained messages are gone with it
            assert panel.mqtt is not None
            await eventually(lambda: panel.mqtt is not None and panel.mqtt.connects >= 2 and panel.mqtt.connected, 10,
                        "the panel did not reconnect")
            async with Client(own) as backend:
                status = await backend.retained(f"panels/{A}/status", timeout=3)
                door = await backend.retained(f"panels/{A}/state/door", timeout=3)
                assert status == b"online" and door is not None  # published again after the restart
                reply = await backend.request(A, cmd(duration_s=1))
                assert reply["code"] == "ok", reply
                assert len(access_log(panel)) == 2
        finally:
            await panel.stop("test over")


def test_the_last_will_says_offline_when_the_panel_is_killed(broker: Broker, tmp_path: Path) -> None:
    data = panel_config(broker, tmp_path / "state", panel_id=B)
    data["log"] = {"level": "info", "format": "json"}
    proc = start_panel(tmp_path, data, env={"PANEL_SECRET_MQTT_PASSWORD": broker.passwords[B]})

    async def watch() -> None:
        async with Client(broker, subscribe=(f"panels/{B}/status",)) as backend:
            await backend.wait_for(lambda m: m.payload == b"online", 15)
            since = len(backend.messages)
            proc.kill()
            msg = await backend.wait_for(lambda m: True, 5, since)
            assert msg.payload == b"offline"
            assert await backend.retained(f"panels/{B}/status") == b"offline"

    try:
        asyncio.run(watch())
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


# -- Home Assistant ------------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_open", [True, False])
async def test_home_assistant_discovery_and_lock(broker: Broker, backend: Client, tmp_path: Path,
                                                 allow_open: bool) -> None:
    panel = await start(panel_config(broker, tmp_path / "state", homeassistant_discovery=True,
                                     homeassistant_allow_open=allow_open), broker)
    try:
        async with Client(broker, HA_USER, subscribe=("homeassistant/#", f"panels/{A}/doorbell")) as ha:
            # Connected is not yet published: a config that arrives live (not retained) is not the answer
            event = json.loads(await eventually(lambda: ha.retained(f"homeassistant/event/{A}/doorbell/config"), 10,
                                                "the doorbell's discovery config retained"))
            assert event["event_types"] == ["ring"] and event["device_class"] == "doorbell"
            assert event["availability"][0]["topic"] == f"panels/{A}/status"
            call = json.loads(await eventually(lambda: ha.retained(f"homeassistant/sensor/{A}/call/config"), 10,
                                               "the call sensor's discovery config retained"))
            assert call["state_topic"] == f"panels/{A}/state/call"
            lock_topic = f"homeassistant/lock/{A}/door/config"
            if allow_open:
                lock_cfg = json.loads(await eventually(lambda: ha.retained(lock_topic), 10,
                                                       "the lock's discovery config retained"))
                assert lock_cfg["payload_open"] == "OPEN" and lock_cfg["command_topic"] == f"panels/{A}/ha/lock/set"
            else:
                await eventually(lambda: ha.retained(f"homeassistant/binary_sensor/{A}/door_lock/config"), 10,
                                 "the door-lock sensor's discovery config retained")

                async def no_lock() -> bool:  # a lock entity retained by an earlier panel is cleared
                    return await ha.retained(lock_topic, timeout=0.5) is None

                await eventually(no_lock, 10, "no lock entity")

            pin = relay_pin(panel)
            pin.clear_states()
            await ha.publish(f"panels/{A}/ha/lock/set", b"OPEN")
            if allow_open:
                await eventually(lambda: pin.state is True, 3, "HA's OPEN did not release the door")
                assert access_log(panel)[-1]["actor"] == "homeassistant"
            else:
                await eventually(lambda: any(e["code"] == "ha_open_disabled" for e in events(panel, "door.unlock_refused")),
                            3, "the refusal was not journalled")
                assert [s.state for s in pin.states] == [False]

            await press(panel, "b304")
            bell = await ha.wait_for(ha.on(f"panels/{A}/doorbell"))
            ring = json.loads(bell.payload)
            assert ring["event_type"] == "ring" and ring["unit"]["id"] == "304"
    finally:
        await panel.stop("test over")


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mqtt, where", [
    ({"host": "broker.example", "tls": False, "username": "p"}, "mqtt.tls"),
    ({"host": "broker.example"}, "mqtt.username"),
    ({"host": "broker.example", "username": "p", "cert_file": "/etc/panel/c.pem"}, "mqtt.cert_file"),
    ({"host": "broker.example", "username": "p", "homeassistant_discovery": True, "homeassistant_allow_open": True,
      "require_signed_commands": True}, "mqtt.homeassistant_allow_open"),
    ({"host": "broker.example", "username": "p", "homeassistant_allow_open": True}, "mqtt.homeassistant_allow_open"),
    # signed commands are the default, and Home Assistant cannot sign
    ({"host": "broker.example", "username": "p", "homeassistant_discovery": True, "homeassistant_allow_open": True},
     "mqtt.homeassistant_allow_open"),
    ({"host": "broker.example", "username": "p", "topic_prefix": "panels/#"}, "mqtt.topic_prefix"),
])
def test_unsafe_mqtt_settings_are_refused_by_the_config_check(mqtt: dict[str, Any], where: str) -> None:
    from panel.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config(config_dict(mqtt=mqtt))
    assert [p for p in exc.value.problems if p.startswith(where + ":")], exc.value.problems


@pytest.mark.parametrize("problem", ["no_password", "missing_ca", "no_command_key"])
async def test_missing_credentials_or_tls_files_stop_the_start(broker: Broker, tmp_path: Path, problem: str) -> None:
    from panel.errors import ConfigError

    data = panel_config(broker, tmp_path / "state")
    if problem == "missing_ca":
        data["mqtt"]["ca_file"] = str(tmp_path / "nowhere.pem")
    if problem == "no_command_key":  # signed commands required (the default) and nothing to check them with
        data["mqtt"]["require_signed_commands"] = True
    secrets = Secrets(mqtt_password=None if problem == "no_password" else broker.passwords[A])
    panel = Panel(parse_config(data), secrets, simulate=True, clock_sync=FakeClockSync())
    match = {"no_password": "mqtt_password", "missing_ca": "ca_file", "no_command_key": "command_key"}[problem]
    try:
        with pytest.raises(ConfigError, match=match):
            await panel.start()
    finally:
        await panel.stop("start failed")


def test_reconnect_backoff_is_capped_and_jittered() -> None:
    import random

    from panel.link import BACKOFF_FIRST_S, backoff_s

    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(10.0, BACKOFF_FIRST_S * 2 ** attempt)
        delays = {backoff_s(attempt, 10.0, rng) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered, not one fixed value
    assert max(backoff_s(a, 10.0, rng) for a in range(40)) <= 10.0
