"""Third-party tooling reads the panel's OpenAPI document as it is, without workarounds:

- openapi-python-client generates a client from the live ``/api/v1/openapi.json`` with no warning
  (nothing dropped), and that client calls every operation of a real panel with media (WHEP, SSE,
  MJPEG and the simulation routes included) and parses every answer;
- Redocly's ``recommended`` lint finds no error (``tools/``, installed by ``npm ci`` from scripts/test);
- schema names are unique and operationIds readable (generators name functions after them).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from panel.api.app import create_app, openapi_document, routes
from panel.api.logs import _Waiters
from panel.api.principals import ApiAuth
from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import parse_config

from .media_resident import Resident
from .media_rig import INSTALLER, api, eventually, media_config
from .support import ROOT, config_dict, write_config

TOOLS = ROOT / "tools"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "panel_api_client"


# -- the document ------------------------------------------------------------------------------------


def _models(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in getattr(tp, "__args__", ()):
        yield from _models(arg)


def test_schema_names_are_unique() -> None:
    """Two models of one name become one schema: a generator then gives one route the other's body."""
    by_name: dict[str, set[type[BaseModel]]] = {}
    for _, _path, route in routes(create_app(None, simulated=True)):
        if not isinstance(route, APIRoute):
            continue
        fields = [route.body_field, route.response_field] if route.body_field else [route.response_field]
        for field in fields:
            if field is None:
                continue
            for model in _models(getattr(field, "type_", None) or field.field_info.annotation):
                by_name.setdefault(model.__name__, set()).add(model)
    # Two classes of one name and one shape (two empty OkBody subclasses) are the same schema.
    clashes = {name: sorted(f"{m.__module__}.{m.__qualname__}" for m in ms) for name, ms in by_name.items()
               if len({json.dumps(m.model_json_schema(), sort_keys=True) for m in ms}) > 1}
    assert not clashes, clashes
    schemas = set(openapi_document()["components"]["schemas"])
    assert {"HoldBody", "SimHoldBody"} <= schemas
    # FastAPI names a schema after its module when two models (nested ones included) share a name; a
    # generator then makes two models of one name and drops every route that uses them.
    assert not [name for name in schemas if "__" in name], sorted(n for n in schemas if "__" in n)


def test_operation_ids_are_readable_and_unique() -> None:
    doc = openapi_document()
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids), ids
    by_route = {f"{m.upper()} {p}": op["operationId"] for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert by_route["POST /api/v1/door/open"] == "door_open"
    assert by_route["POST /api/v1/calls/answer"] == "calls_answer"
    assert by_route["POST /api/v1/media/whep"] == "media_whep_start"
    assert doc["info"]["license"]["name"] == "Apache-2.0" and doc["servers"][0]["url"] == "/"


def test_credentials_are_the_security_scheme_and_whep_speaks_sdp() -> None:
    doc = openapi_document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            headers = {p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"}
            assert not headers & {"authorization", "content-type"}, (method, path, headers)
    whep = doc["paths"]["/api/v1/media/whep"]["post"]
    assert list(whep["requestBody"]["content"]) == ["application/sdp"] and whep["requestBody"]["required"]
    created = whep["responses"]["201"]
    assert list(created["content"]) == ["application/sdp"]
    assert created["headers"]["Location"]["required"] is True
    assert whep["security"] == [{"bearer": []}]


def test_redocly_recommended_lint_has_no_errors(tmp_path: Path) -> None:
    redocly = TOOLS / "node_modules" / ".bin" / "redocly"
    assert redocly.exists(), "Redocly CLI is not installed: run `npm ci` in tools/ (scripts/test does)"
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(openapi_document()))
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true", "NO_COLOR": "1"}
    r = subprocess.run([str(redocly), "lint", str(spec), "--extends", "recommended", "--format", "json"],
                       capture_output=True, text=True, timeout=120, cwd=TOOLS, env=env)
    report = json.loads(r.stdout[r.stdout.index("{"):])
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors == [], json.dumps(errors, indent=1)[:4000]
    assert r.returncode == 0, r.stderr
    assert report["totals"]["errors"] == 0


# -- a generated client against a real panel ----------------------------------------------------------


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    data = config_dict(media=media_config(snapshots={"at_press": True}))  # a call with pictures to fetch
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0", "mutations_per_minute": 100_000}
    p = Panel(parse_config(data), Secrets(installer_token=INSTALLER), simulate=True)
    p.config_path = write_config(tmp_path / "etc", data)  # what PATCH /api/v1/config edits
    await p.start()
    yield p
    await p.stop("test over")


def generate(spec: dict[str, Any], out: Path) -> ModuleType:
    path = out / "openapi.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    r = subprocess.run([str(GENERATOR), "generate", "--path", str(path), "--output-path", str(out / PACKAGE),
                        "--meta", "none", "--config", str(TOOLS / "openapi-python-client.yaml")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # A warning means a piece of the API was left out of the client (a route, a body, a response).
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    sys.path.insert(0, str(out))
    return importlib.import_module(PACKAGE)


class Calls:
    """Every operation of the generated client by operationId, and which of them were called."""

    def __init__(self, package: ModuleType, spec: dict[str, Any]) -> None:
        self.ops: dict[str, Any] = {}
        api_pkg = importlib.import_module(f"{PACKAGE}.api")
        for tag in pkgutil.iter_modules(api_pkg.__path__):
            tag_pkg = importlib.import_module(f"{PACKAGE}.api.{tag.name}")
            for mod in pkgutil.iter_modules(tag_pkg.__path__):
                self.ops[mod.name] = importlib.import_module(f"{PACKAGE}.api.{tag.name}.{mod.name}")
        self.documented = {op["operationId"]: {int(s) for s in op["responses"]}
                           for ops in spec["paths"].values() for op in ops.values()}
        self.called: set[str] = set()
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.types = importlib.import_module(f"{PACKAGE}.types")

    def body(self, name: str, data: dict[str, Any]) -> Any:
        return getattr(self.models, name).from_dict(data)

    async def __call__(self, op: str, expect: int, *args: Any, **kw: Any) -> Any:
        r = await self.ops[op].asyncio_detailed(*args, **kw)
        assert int(r.status_code) == expect, (op, int(r.status_code), r.content[:300])
        assert expect in self.documented[op], f"{op} answered {expect}, which its document does not list"
        if expect < 400 and r.content and r.headers.get("content-type", "").startswith("application/json"):
            assert r.parsed is not None and type(r.parsed).__name__ != "ErrorBody", (op, r.parsed)
        self.called.add(op)
        return r


async def test_a_generated_client_calls_every_route(panel: Panel, tmp_path: Path) -> None:
    assert GENERATOR.exists(), "openapi-python-client is not installed (the test extra has it)"
    async with api(panel) as c:
        spec = (await c.get("/api/v1/openapi.json")).json()
        base = str(c.base_url).rstrip("/")
    gen = generate(spec, tmp_path / "gen")
    try:
        await _every_route(gen, Calls(gen, spec), spec, panel, base)
    finally:
        sys.path.remove(str(tmp_path / "gen"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


async def _every_route(gen: ModuleType, call: Calls, spec: dict[str, Any], panel: Panel, base: str) -> None:
    File = call.types.File
    anon = gen.Client(base_url=base, timeout=None)
    inst = gen.AuthenticatedClient(base_url=base, token=INSTALLER, timeout=None)

    def bearer(token: str) -> Any:
        return gen.AuthenticatedClient(base_url=base, token=token, timeout=None)

    # -- system and the installer's session
    await call("system_health", 200, client=anon)
    await call("system_health_details", 200, client=inst)
    await call("system_state", 200, client=inst)
    await call("system_info", 200, client=inst)
    password = ApiAuth.for_panel(panel).installer.initial_password()
    assert password is not None
    login = await call("auth_login", 200, client=anon, body=call.body("LoginBody", {"password": password}))
    session = bearer(login.parsed.token)
    await call("auth_me", 200, client=session)
    await call("auth_change_password", 200, client=session, body=call.body(
        "PasswordBody", {"current_password": password, "new_password": "a much better passphrase 42"}))
    relogin = await call("auth_login", 200, client=anon, body=call.body(
        "LoginBody", {"password": "a much better passphrase 42"}))
    await call("auth_logout", 200, client=bearer(relogin.parsed.token))

    # -- credentials
    issued = await call("auth_issue_token", 201, client=inst, body=call.body(
        "TokenBody", {"role": "backend", "subject": "backend-1", "ttl_s": 3600}))
    backend = bearer(issued.parsed.token)
    resident_tok = await call("auth_issue_token", 201, client=inst, body=call.body(
        "TokenBody", {"role": "resident", "subject": "alice", "unit_id": "303", "ttl_s": 3600}))
    resident = bearer(resident_tok.parsed.token)
    listed = await call("auth_list_tokens", 200, client=inst)
    assert {c.subject for c in listed.parsed.credentials} >= {"backend-1", "alice"}

    # -- the door and the simulated hardware
    await call("door_open", 200, client=backend, body=call.body("OpenBody", {"duration_s": 1}))
    await call("door_hold", 200, "main", client=backend, body=call.body("HoldBody", {"seconds": 5}))
    await call("door_release", 200, "main", client=backend)
    await call("sim_pins", 200, client=anon)
    await call("sim_state", 200, client=anon)
    await call("sim_door", 200, call.models.SimDoorAction("open"), client=anon)
    await call("sim_door", 200, call.models.SimDoorAction("close"), client=anon)
    await call("sim_exit_button", 200, client=anon)
    await call("sim_tamper", 200, client=anon, body=call.body("TamperBody", {"active": True}))
    await call("sim_tamper", 200, client=anon, body=call.body("TamperBody", {"active": False}))
    await call("system_clear_tamper", 200, client=inst)
    await call("sim_stall", 200, client=anon, body=call.body("StallBody", {"seconds": 0.01}))
    await call("selftest_run", 200, client=inst, body=call.body("SelftestBody", {"pulse_relays": False}))
    await call("config_read", 200, client=inst)
    await call("config_update", 200, client=inst, body=call.body(
        "ConfigPatch", {"set": {"door.held_open_s": 40}, "dry_run": True}))
    assert (await call("config_schema", 200, client=inst)).parsed.pins[0].header > 0
    # -- the directory (panel/directory): a resident, their link traded for a device's credential
    added = await call("directory_add_resident", 201, client=inst, body=call.body(
        "AddResidentFields", {"unit_id": "303", "name": "Ana Silva"}))
    rid = added.parsed.resident.id
    await call("directory_rename_resident", 200, rid, client=backend, body=call.body(
        "RenameResidentFields", {"name": "Ana S."}))
    link = await call("directory_new_link", 201, rid, client=inst)
    code = link.parsed.link.path.split("#signin=")[1]
    await call("directory_signin", 200, client=anon, body=call.body("SignInFields", {"code": code}))
    [unit] = [u for u in (await call("directory_read", 200, client=inst)).parsed.units if u.id == "303"]
    [ana] = unit.residents
    await call("directory_end_session", 200, rid, ana.sessions[0].token_id, client=inst)
    await call("directory_remove_resident", 200, rid, client=inst)

    # -- media outside a call: WHEP live view, pictures, sound
    await call("media_player", 200, client=anon)
    await call("media_whep_options", 204, client=anon)
    offer = await Resident(audio="recvonly", datachannel=False).offer()
    started = await call("media_whep_start", 201, client=inst,
                         # bytes, not a BytesIO: httpx's AsyncClient cannot send a synchronous file
                         body=File(payload=offer.encode(), mime_type="application/sdp"))
    assert started.headers["content-type"] == "application/sdp"
    assert started.parsed.payload.read().startswith(b"v=0")
    session_id = started.headers["location"].rsplit("/", 1)[1]
    await call("media_whep_session_options", 204, session_id, client=anon)
    await call("media_whep_patch", 405, session_id, client=anon)
    status = await call("media_status", 200, client=inst)
    assert session_id in json.dumps(status.parsed.to_dict())
    await call("media_whep_end", 200, session_id, client=inst)
    snap = await call("media_snapshot_now", 200, client=inst)
    assert snap.content.startswith(b"\xff\xd8")
    await call("media_speaker_test", 200, client=inst, body=call.body("ToneBody", {"seconds": 0.2}))
    await call("media_microphone_level", 200, client=inst, seconds=0.1)

    # -- a call: answer, links, pictures, the MJPEG view, end
    await call("sim_press", 200, "b303", client=anon)
    await call("sim_release", 200, "b303", client=anon)
    guid = panel.calls.current.guid  # type: ignore[union-attr]
    await call("calls_list", 200, client=backend)
    await call("calls_get", 200, guid, client=backend)
    await call("calls_answer", 200, client=resident, body=call.body("CallCommand", {"call_guid": guid}))
    await call("calls_mute", 200, client=resident, body=call.body("MuteBody", {"call_guid": guid, "audio": True}))
    link = await call("links_create", 201, guid, client=resident)
    await call("links_list", 200, guid, client=resident)
    await call("links_call_participants", 200, guid, client=resident)
    await call("links_invite", 201, guid, client=resident, body=call.body("InviteBody", {"subject": "bob"}))
    sub = await call("links_subscribe", 201, client=bearer(link.parsed.link),
                     body=call.body("SubscribeBody", {"name": "Grandma"}))
    guest = bearer(sub.parsed.subscription)
    await call("links_participants", 200, client=guest)
    joined = await call("links_join", 200, client=guest, body=call.body(
        "JoinBody", {"sdp": await Resident(datachannel=False).offer()}))
    assert joined.parsed.sdp.startswith("v=0")
    await call("links_leave", 200, client=guest)
    await call("links_revoke", 200, guid, link.parsed.info.id, client=resident)
    await eventually(lambda: panel.store.read_sync(lambda db: db.execute(
        "SELECT 1 FROM events WHERE type='call.snapshot' AND data LIKE ?", (f"%{guid}%",)).fetchone()),
        what="the call's pictures stored")
    pictures = await call("media_call_snapshots", 200, guid, client=resident)
    names = [p["name"] for p in pictures.parsed.to_dict()["pictures"]]
    assert (await call("media_call_snapshot", 200, guid, client=resident)).content.startswith(b"\xff\xd8")
    await call("media_call_picture", 200, guid, names[0], client=resident)
    # The MJPEG view lasts until its call ends; SSE until its credential is revoked.
    viewer = await call("auth_issue_token", 201, client=inst, body=call.body(
        "TokenBody", {"role": "viewer", "subject": "door-tablet", "call_guid": guid, "ttl_s": 600}))
    mjpeg = asyncio.create_task(call("media_mjpeg", 200, client=bearer(viewer.parsed.token)))
    stream = asyncio.create_task(call("logs_stream", 200, client=backend))
    visitor: Any = panel.visitor
    await eventually(lambda: visitor.mjpeg.viewers, what="the MJPEG viewer connected")
    await eventually(lambda: _Waiters.for_panel(panel).open, what="the event stream open")
    await call("calls_end", 200, client=resident, body=call.body("CallCommand", {"call_guid": guid}))
    assert (await asyncio.wait_for(mjpeg, 20)).content.startswith(b"--")
    await call("auth_revoke_token", 200, issued.parsed.credential.token_id, client=inst)
    assert b"call.status_updated" in (await asyncio.wait_for(stream, 20)).content
    # -- doors without a call (docs/access.md) and updates (docs/updates.md)
    await call("access_set_pin", 200, client=resident, body=call.body("PinBody", {"pin": "2468"}))
    made = await call("access_create_code", 201, client=resident, body=call.body(
        "CodeBody", {"label": "DHL Tuesday", "max_uses": 1}))
    await call("access_enrol_card", 201, client=inst, body=call.body("CardBody", {"owner": "alice", "number": "0badc0de"}))
    # This panel has no card reader and no keypad: both say so rather than wait.
    await call("access_learn_card", 404, client=inst, body=call.body("LearnBody", {"owner": "alice", "timeout_s": 0.1}))
    await call("sim_keypad", 404, client=anon, body=call.body("KeypadBody", {"keys": "2468#"}))
    mine = await call("access_list_credentials", 200, client=resident)
    assert {c.kind for c in mine.parsed.credentials} >= {"pin", "code", "card"}
    await call("sim_camera_qr", 200, client=anon, body=call.body("CameraQrBody", {"payload": made.parsed.qr.payload}))
    await call("sim_camera_qr", 200, client=anon, body=call.body("CameraQrBody", {}))
    await call("access_revoke", 200, made.parsed.credential.id, client=resident)
    assert (await call("update_status", 200, client=inst)).parsed.update["enabled"] is False
    await call("update_start", 409, client=inst, body=call.body("UpdateBody", {
        "version": "9.9.9", "url": "https://updates.example.net/panel-9.9.9.tar.gz", "size": 1, "sha256": "0" * 64,
        "signature": "A" * 88}))
    # This panel does not enrol (no enrol.est_url; tests/test_enrol.py has one that does): each route says so.
    for op in ("enrol_status", "enrol_now", "enrol_again"):
        await call(op, 404, client=inst)
    await call("sim_hold", 200, "b304", client=anon, body=call.body("SimHoldBody", {"seconds": 0.1}))
    await call("calls_decline", 200, client=inst, body=call.body("CallCommand", {"who": "installer"}))
    await call("logs_access", 200, client=inst)
    await call("logs_events", 200, client=inst)
    await call("logs_event", 200, client=inst)
    await call("auth_revoke_subject", 200, client=inst, body=call.body("RevokeBody", {"subject": "alice"}))
    # Last: a component that always crashes stops the panel (the supervisor's fatal path).
    await call("sim_fault", 202, client=anon, body=call.body("FaultBody", {"component": "sim-crash", "max_restarts": 0}))
    await asyncio.wait_for(panel.supervisor.failed.wait(), 10)  # what makes the daemon stop
    assert "sim-crash" in (panel.supervisor.failure or "")

    missing = set(call.documented) - call.called
    assert not missing, f"operations the generated client did not call: {sorted(missing)}"
