"""Every JSON, MQTT and HTTP example in docs/mqtt.md, docs/api.md, docs/webhooks.md and docs/calls.md is
either run against a real panel (with media, over a real Mosquitto and its real HTTP API) or validated
against the models the panel itself uses, so that no example can drift from the code.

- docs/mqtt.md: every ``json command`` block is published as it stands (only its ``id``, ``exp`` and
  ``nonce`` are made current) and must be carried out; the documented ``ok`` replies have exactly the
  fields of the real ones; ``state/...`` and ``call_outcome`` examples are the panel's message models.
- docs/api.md: the error example is provoked on a real panel; the ``http`` examples are sent as written.
- docs/webhooks.md: the TOML is parsed by the config and secrets loaders; the delivery's ``data`` is
  its event's model (its signature is checked in tests/test_webhooks.py).
- docs/calls.md: the call example has exactly the fields of a real call, with their types.
- Every ``GET /api/v1/...`` with a literal query in these pages is answered 200.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.api.errors import ErrorBody
from panel.auth import Secrets, load_secrets
from panel.daemon import Panel
from panel.events import EVENT_MODELS, OutboxOverflow
from panel.link import COMMAND_MODELS, REPLY_MODELS, PublishCommand, Reply, decode, parse
from panel.link._commands import IceServer
from panel.link._topics import CallOutcomeMsg, DoorStateMsg, FreshnessStateMsg
from panel.platform import SecretsConfig, parse_config

from .eventually import eventually
from .media_rig import INSTALLER, media_config
from .mosquitto import Broker, Client
from .support import ROOT, config_dict, write_config
from .test_mqtt import A, FakeClockSync

DOCS = ROOT / "docs"


def blocks(doc: str, lang: str) -> list[tuple[str, str]]:
    """(tag, text) of every fenced block of ``lang`` (```json reply open -> ("reply open", ...))."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    found = re.findall(r"^( *)```" + lang + r"([^\n]*)\n(.*?)\n\1```", text, re.S | re.M)
    # A block inside a list item is indented with it.
    return [(tag.strip(), textwrap.dedent(body)) for _, tag, body in found]


# -- validated against the panel's models ---------------------------------------------------------------


def test_every_json_block_in_mqtt_md_is_a_known_kind_and_valid() -> None:
    kinds: dict[str, Any] = {"state/door": DoorStateMsg, "state/freshness": FreshnessStateMsg,
                             "call_outcome": CallOutcomeMsg}
    seen = set()
    for tag, text in blocks("mqtt.md", "json"):
        body = json.loads(text)
        if tag in kinds:
            kinds[tag].model_validate(body)
        elif tag == "command" or tag == "":  # "" is the signature's worked example, a command too
            parse(decode(text.encode()))
        elif tag.startswith("reply"):
            cmd = tag.removeprefix("reply").strip()
            (REPLY_MODELS[cmd] if cmd and body["code"] == "ok" else Reply).model_validate(body)
        else:
            pytest.fail(f"docs/mqtt.md: a ```json {tag} block this test does not know how to check")
        seen.add(tag.split(" ")[0])
    assert {"state/door", "state/freshness", "call_outcome", "command", "reply", ""} <= seen


def test_webhooks_md_toml_and_delivery_are_what_the_panel_reads_and_sends(tmp_path: Path) -> None:
    [(_, config), (_, secrets)] = blocks("webhooks.md", "toml")
    section = tomllib.loads(config)["webhooks"]
    cfg = parse_config(config_dict(webhooks=section))
    assert cfg.webhooks.url == "https://backend.example/hooks/panel" and cfg.webhooks.max_in_flight == 4
    path = tmp_path / "secrets.toml"
    path.write_text(secrets)
    path.chmod(0o600)
    loaded = load_secrets(SecretsConfig(file=path), env={})
    assert len(loaded.webhook_secrets) == 1
    [(_, http)] = blocks("webhooks.md", "http")
    body = json.loads(http.split("\n\n", 1)[1])
    data = dict(body["data"])
    assert data.pop("panel") == {"id": "lobby-1", "name": "Main entrance"}
    EVENT_MODELS[body["type"]].model_validate(data)


def test_inline_json_examples_are_valid() -> None:
    mqtt = (DOCS / "mqtt.md").read_text(encoding="utf-8")
    [servers] = re.findall(r"the W3C `RTCIceServer` list: `(\[.*?\])`", mqtt)
    for server in json.loads(servers):
        IceServer.model_validate(server)
    webhooks = " ".join((DOCS / "webhooks.md").read_text(encoding="utf-8").split())
    [overflow] = re.findall(r"an `outbox.overflow` event says how many of which type went and the time range: `(\{.*?\})`",
                            webhooks)
    body = json.loads(overflow)
    assert set(body) == set(OutboxOverflow.model_fields) - {"panel"}
    OutboxOverflow.model_validate(body | {"shed_from": "2025-03-14T09:26:53.589Z", "shed_to": "2025-03-14T19:21:53.589Z"})


def test_api_md_error_example_is_an_error_body() -> None:
    [(_, text)] = blocks("api.md", "json")
    ErrorBody.model_validate(json.loads(text))


# -- run against a real panel ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(tmp_path_factory.mktemp("broker"), panels=[A]) as b:
        yield b


@pytest.fixture
async def panel(broker: Broker, tmp_path: Path) -> AsyncIterator[Panel]:
    data = config_dict(media=media_config(), mqtt=broker.mqtt_config(A, homeassistant_discovery=True))
    data["panel"] = {"id": A, "name": "Main entrance"}
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0", "mutations_per_minute": 100_000}
    p = Panel(parse_config(data), Secrets(mqtt_password=broker.passwords[A], installer_token=INSTALLER),
              simulate=True, clock_sync=FakeClockSync(True))
    p.config_path = write_config(tmp_path / "etc", data)  # what the PATCH example edits (dry run)
    await p.start()
    await eventually(lambda: p.mqtt is not None and p.mqtt.connected, 10, "the panel never connected")
    yield p
    await p.stop("test over")


def http(panel: Panel) -> httpx.AsyncClient:
    assert panel.api is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{panel.api.bound_port}", timeout=20,
                             headers={"Authorization": f"Bearer {INSTALLER}"})


async def press(panel: Panel, button: str = "b303") -> str:
    pin = panel.hw.factory.pin(f"GPIO{panel.cfg.button(button).pin}")
    pin.drive_low()
    await eventually(lambda: panel.calls.current is not None, 2, "the press made no call")
    pin.drive_high()
    return str(panel.calls.current.guid)  # type: ignore[union-attr]


def current(example: dict[str, Any], nonce: str) -> dict[str, Any]:
    """The example as a backend would send it now: a new id, a live expiry or the current nonce."""
    body = dict(example, id=f"doc-{uuid.uuid4()}")
    if "exp" in body:
        body["exp"] = round(time.time() + 20, 3)
    if "nonce" in body:
        body["nonce"] = nonce
    return body


async def test_every_mqtt_command_example_is_carried_out_by_a_real_panel(panel: Panel, broker: Broker) -> None:
    commands = [json.loads(text) for tag, text in blocks("mqtt.md", "json") if tag == "command"]
    documented: dict[str, set[str]] = {}
    for tag, text in blocks("mqtt.md", "json"):
        body = json.loads(text)
        if tag.startswith("reply ") and body["code"] == "ok":
            documented[tag.split(" ", 1)[1]] = set(body)
    by_name = {(c.get("cmd") or f"{c['action']}={c['value']}", c.get("mode", "")): c for c in commands}
    assert len(by_name) == len(commands) >= 8
    async with Client(broker) as backend:
        fresh = json.loads(await backend.retained(f"panels/{A}/state/freshness") or b"{}")
        door = json.loads(await backend.retained(f"panels/{A}/state/door") or b"{}")
        DoorStateMsg.model_validate(door)
        FreshnessStateMsg.model_validate(fresh)
        example_door = json.loads(blocks("mqtt.md", "json state/door")[0][1])
        assert set(door) == set(example_door) and set(door["relays"]["main"]) == set(example_door["relays"]["main"])

        async def run(key: tuple[str, str], **replace: Any) -> dict[str, Any]:
            reply = await backend.request(A, current(by_name.pop(key), fresh["nonce"]) | replace, timeout=15)
            assert reply["code"] == "ok", (key, reply)
            cmd = reply["cmd"]
            if cmd in documented:
                assert set(reply) == documented[cmd], (cmd, set(reply) ^ documented[cmd])
            return reply

        async def refused(body: dict[str, Any]) -> dict[str, Any]:
            """The reply to a command, checked against the documented refusal of the same code."""
            reply = await backend.request(A, current(body, fresh["nonce"]), timeout=15)
            [example] = [r for r in refusals if r["code"] == reply["code"] and r["cmd"] == reply["cmd"]]
            assert set(reply) == set(example)
            return reply

        def same(a: str, b: str) -> bool:
            """Equal but for the call guids and the numbers (times) in them."""
            def norm(t: str) -> str:
                return re.sub(r"[0-9]+(\.[0-9]+)?", "N", re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "G", t))
            return norm(a) == norm(b)

        refusals = [json.loads(t) for tag, t in blocks("mqtt.md", "json") if tag.startswith("reply")]
        refusals = [r for r in refusals if r["code"] != "ok"]
        await press(panel)
        answer = by_name[("answer", "")]
        await run(("answer", ""))
        again = await refused(answer | {"who": "bob"})
        assert same(again["message"], next(r["message"] for r in refusals if r["cmd"] == "answer"))
        offer = by_name[("offer", "")]
        answerer = await run(("offer", ""))  # alice's media for the call she answered
        late = await refused(offer | {"who": "bob"})
        assert same(late["message"], next(r["message"] for r in refusals
                                          if r["cmd"] == "offer" and r["code"] == "already_answered"))
        bad = await refused(offer | {"sdp": offer["sdp"].replace("t=0 0\r\n", "t=0 0\r\nhello\r\n", 1)})
        assert bad["message"] == next(r["message"] for r in refusals if r["code"] == "bad_sdp")
        late_open = await backend.request(A, dict(by_name[("open", "")], id=f"doc-{uuid.uuid4()}",
                                                  exp=round(time.time() - 4.21, 3)))
        documented_expired = next(r for r in refusals if r["code"] == "expired")
        assert set(late_open) == set(documented_expired) and same(late_open["message"], documented_expired["message"])
        past = await refused(by_name[("access_code", "")] | {"valid_until": round(time.time() - 3600)})
        assert same(past["message"], next(r["message"] for r in refusals if r["code"] == "bad_window"))
        stranger = await refused(by_name[("resident_add", "")] | {"unit_id": "999"})
        assert same(stranger["message"], next(r["message"] for r in refusals if r["code"] == "unknown_unit"))
        assert len(refusals) == 6  # every documented refusal was provoked above
        made = await run(("access_code", ""))
        assert made["credentials"][0]["label"] == "DHL Tuesday" and made["access_code"].isdigit()
        added = await run(("resident_add", ""))
        assert added["residents"][0]["name"] == "Ana Silva" and added["signin_path"].startswith("/resident#signin=")
        # An update needs a signed release on an HTTPS server: tests/test_update.py carries one out over MQTT;
        # here the documented command is checked against the very model the panel parses it with.
        update = by_name.pop(("update", ""))
        assert COMMAND_MODELS["update"].model_validate(update).cmd == "update"
        # Publishing needs an SFU: tests/test_media_whip.py carries it out against Janus over MQTT.
        publish = by_name.pop(("publish", ""))
        assert PublishCommand.model_validate(publish).action in ("start", "stop")
        viewer = await run(("offer", "monitor"))
        assert (answerer["role"], viewer["role"]) == ("answerer", "viewer")
        await run(("open", ""))
        status = await run(("status", ""))
        example_status = json.loads(next(t for tag, t in blocks("mqtt.md", "json") if tag == "reply status"))
        assert {k: set(v) for k, v in status["state"].items()} == {
            k: set(v) for k, v in example_status["state"].items()}
        await run(("open=true", ""))
        await run(("hangup", ""), session=viewer["session"])
        await run(("call=false", ""))  # the Sensorberg "end"
        assert not by_name, f"examples not run: {list(by_name)}"


async def test_api_md_examples_run_against_a_real_panel(panel: Panel) -> None:
    [(_, text)] = blocks("api.md", "json")
    example = json.loads(text)
    async with http(panel) as c:
        # The error example: a resident opens the door during a call another resident answered.
        tokens = {}
        for who in ("alice", "bob"):
            r = await c.post("/api/v1/auth/tokens", json={"role": "resident", "subject": who, "unit_id": "303"})
            tokens[who] = {"Authorization": f"Bearer {r.json()['token']}"}
        await press(panel)
        assert (await c.post("/api/v1/calls/answer", json={}, headers=tokens["bob"])).status_code == 200
        refused = await c.post("/api/v1/door/open", json={}, headers=tokens["alice"])
        assert refused.status_code == 403
        assert set(refused.json()) == set(example) and refused.json()["code"] == example["code"]
        assert refused.json()["message"].endswith(example["message"].split("; ", 1)[1])

        for tag, block in [*blocks("api.md", "http"), *blocks("calls.md", "http")]:
            head, _, body = block.partition("\n\n")
            method, target, _ = head.splitlines()[0].split(" ", 2)
            r = await c.request(method, target, content=body.encode() if body else None,
                                headers={"Content-Type": "application/json"} if body else None)
            assert r.status_code == int(tag or 200), (head, r.status_code, r.text)


async def test_every_literal_get_in_the_docs_is_answered(panel: Panel) -> None:
    found = []
    for doc in ("api.md", "calls.md", "webhooks.md", "mqtt.md"):
        text = (DOCS / doc).read_text(encoding="utf-8")
        found += [m for m in re.findall(r"`GET (/api/v1/[^`\s]+)`", text) if not re.search(r"[<{|]", m)]
    assert "/api/v1/calls?page=1&per_page=20&unit_id=303&status=missed&transitions=false" in found
    async with http(panel) as c:
        for target in found:
            if "/events/stream" in target or target.endswith("video.mjpeg"):
                continue  # streams never end by design
            r = await c.get(target)
            assert r.status_code == 200, (target, r.status_code, r.text[:300])


async def test_calls_md_call_example_has_the_fields_of_a_real_call(panel: Panel) -> None:
    [(_, text)] = blocks("calls.md", "json")
    example = json.loads(text)
    guid = await press(panel)
    await panel.calls.end(guid, "resident-17")
    async with http(panel) as c:
        real = (await c.get(f"/api/v1/calls/{guid}")).json()
    assert set(example) <= set(real), set(example) - set(real)
    for key, value in example.items():
        assert value is None or real[key] is None or type(value) is type(real[key]), (key, value, real[key])
