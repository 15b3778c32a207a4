"""The backend manages PINs, codes and cards over MQTT (real Mosquitto, signed commands): a courier code
pushed to the panel opens the door when typed on the keypad (mock pins, scanned in real time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from panel.daemon import Panel

from .access_support import ACCESS, press_keys
from .eventually import eventually
from .mosquitto import Broker, Client
from .test_mqtt import A, broker, cmd, events, panel_config, relay_pin, start  # noqa: F401 (fixture)


@pytest.fixture
async def panel(broker: Broker, tmp_path: Path) -> AsyncIterator[Panel]:  # noqa: F811
    data = panel_config(broker, tmp_path / "state", require_signed_commands=True)
    data["access"] = ACCESS
    p = await start(data, broker)
    yield p
    await p.stop("test over")


@pytest.fixture
async def backend(broker: Broker) -> AsyncIterator[Client]:  # noqa: F811
    async with Client(broker) as c:
        yield c



async def test_backend_pushes_a_courier_code_and_the_courier_types_it(panel: Panel, backend: Client) -> None:
    reply = await backend.request(A, cmd("access_code", owner="alice", label="DHL Tuesday", max_uses=1,
                                         valid_until=4_000_000_000))
    assert reply["code"] == "ok", reply
    code = reply["access_code"]
    [cred] = reply["credentials"]
    assert (cred["owner"], cred["label"], cred["uses_left"], cred["kind"]) == ("alice", "DHL Tuesday", 1, "code")
    assert reply["qr_payload"].endswith(code)
    await press_keys(panel, code + "#")
    await eventually(lambda: relay_pin(panel).state, 5, "the courier code never opened the door")
    await eventually(lambda: bool(events(panel, "access.granted")), 5, "no access.granted")
    [granted] = events(panel, "access.granted")
    assert (granted["owner"], granted["label"], granted["method"]) == ("alice", "DHL Tuesday", "code")
    listed = await backend.request(A, cmd("access_list", owner="alice"))
    assert listed["code"] == "ok" and listed["credentials"][0]["uses_left"] == 0
    assert "access_code" not in listed or listed["access_code"] is None
    revoked = await backend.request(A, cmd("access_revoke", credential=cred["id"]))
    assert revoked["code"] == "ok"
    assert (await backend.request(A, cmd("access_list")))["credentials"] == []


async def test_bad_access_commands_get_specific_codes_and_change_nothing(panel: Panel, backend: Client) -> None:
    cases = [
        (cmd("access_pin", owner="bob", pin="12"), "code_too_short"),
        (cmd("access_code", owner="bob", label="x", valid_from=3_000_000_000, valid_until=2_000_000_000),
         "bad_window"),
        (cmd("access_code", owner="bob", label="x", doors=["garage"]), "unknown_door"),
        (cmd("access_revoke", credential="nope"), "unknown_credential"),
        (cmd("access_pin", owner="bob", pin="12ab"), "malformed"),
    ]
    for body, code in cases:
        reply = await backend.request(A, body)
        assert reply["code"] == code, (body, reply)
    assert (await backend.request(A, cmd("access_card", owner="bob", number="04a22b91")))["code"] == "ok"
    reply = await backend.request(A, cmd("access_card", owner="carol", number="04:A2:2B:91"))
    assert reply["code"] == "card_enrolled"
    listed = await backend.request(A, cmd("access_list"))
    assert [c["owner"] for c in listed["credentials"]] == ["bob"]
