"""Health, state and system info: what an installer, a monitoring system and the backend poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .. import __version__
from ..platform import sysinfo
from ..update import disabled_status
from .deps import Caller, PanelDep
from .errors import OkBody
from .scope import state_in_scope

router = APIRouter(prefix="/api/v1", tags=["system"])

_401 = {"description": "no, unknown, expired or revoked credential"}


class HealthSummary(BaseModel):
    """What anyone on the network may know: whether the panel is well. The detail names endpoints,
    errors and calls, so it needs a credential (GET /api/v1/health/details)."""

    code: str = "ok"
    message: str = "health"
    status: Literal["ok", "degraded"]


class Health(BaseModel):
    code: str = "ok"
    message: str = "health"
    status: Literal["ok", "degraded"]
    version: str
    uptime_s: float
    simulated: bool
    checks: dict[str, Any]
    components: dict[str, dict[str, Any]]


class State(BaseModel):
    code: str = "ok"
    message: str = "state"
    panel: dict[str, str]
    simulated: bool
    door: dict[str, Any]
    call: dict[str, Any] = Field(description="{status: idle|calling|ringing|connecting|connected, call: the call or "
                                 "null}; a viewer, resident or guest sees only a call of its own unit (or its one "
                                 "call): idle otherwise")
    inputs: dict[str, Any]
    backlog: int
    access: dict[str, Any] | None = Field(None, description="doors without a call (docs/access.md): blocked "
                                          "sources, keypad, OSDP reader online/secure channel, QR scanning; "
                                          "null while not running, and for viewers, residents and guests")


class Ok(OkBody):
    pass


class Interface(BaseModel):
    name: str
    mac: str | None
    up: bool
    addresses: list[str]


class Storage(BaseModel):
    dir: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    database_bytes: int


class Tls(BaseModel):
    enabled: bool
    fingerprint_sha256: str | None = Field(None, description="pin this to trust the panel's own certificate")
    not_after: str | None = None
    generated: bool | None = Field(None, description="true: the panel's own self-signed certificate")


class SystemInfo(OkBody):
    model: str = Field(description="the board (device tree model), or the machine type off a Pi")
    firmware_version: str
    panel: dict[str, str | None]
    hostname: str
    os: str
    simulated: bool
    uptime_s: float = Field(description="seconds since the panel daemon started")
    system_uptime_s: float | None = Field(description="seconds since the machine booted")
    boot_id: str
    cpu_temperature_c: float | None = Field(description="None where the machine has no thermal zone")
    load_average: list[float] | None
    memory: dict[str, int] | None
    network: list[Interface]
    storage: Storage
    backlog: int = Field(description="events not yet delivered to the backend")
    tls: Tls
    time: str = Field(description="the panel's wall clock, ISO 8601 UTC")
    update: dict[str, Any] = Field(description="the update agent: phase, running version and slot, trial, last "
                                   "result (as GET /api/v1/update)")


@router.get("/health", response_model=HealthSummary, summary="Liveness: ok or degraded, nothing more (no credential "
            "needed)")
async def health(panel: PanelDep) -> HealthSummary:
    h = await panel.health()
    return HealthSummary(message=f"panel {h['status']}", status=h["status"])


@router.get("/health/details", response_model=Health, summary="Health checks in detail: relays, loop lag, backlog, "
            "webhooks, MQTT, media, components (installer, backend)", responses={401: _401})
async def health_details(panel: PanelDep, who: Caller) -> Health:
    h = await panel.health()
    return Health(message=f"panel {h['status']}", **h)


@router.get("/state", response_model=State, summary="Door, relays, inputs, tamper and call state",
            responses={401: _401})
async def state(panel: PanelDep, who: Caller) -> State:
    return State(**state_in_scope(who, await panel.state()))


@router.get("/system", response_model=SystemInfo, summary="System info: model, firmware, uptime, temperature, "
            "network, storage, backlog", responses={401: _401})
async def system_info(request: Request, panel: PanelDep, who: Caller) -> SystemInfo:
    info = await asyncio.to_thread(sysinfo.snapshot, panel.cfg.storage.dir)
    cert = getattr(request.app.state, "server_cert", None)
    tls = Tls(enabled=cert is not None, fingerprint_sha256=getattr(cert, "fingerprint_sha256", None),
              not_after=getattr(cert, "not_after", None), generated=getattr(cert, "generated", None))
    now = time.time()
    return SystemInfo(
        message=f"{info['model']}, firmware {__version__}", firmware_version=__version__,
        panel={"id": panel.cfg.panel.id, "name": panel.cfg.panel.name, "board": panel.cfg.panel.board},
        simulated=panel.simulated, uptime_s=round(time.monotonic() - panel.started_mono, 3),
        boot_id=panel.journal.boot_id, backlog=await panel.backlog(), tls=tls,
        update=panel.updates.status() if panel.updates is not None else disabled_status(),
        time=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z", **info)


@router.post("/tamper/clear", response_model=Ok, summary="Clear the tamper block (installer)",
             responses={401: _401, 409: {"description": "the tamper switch is still active"}})
async def clear_tamper(panel: PanelDep, who: Caller) -> Ok:
    await panel.door.clear_tamper(actor=who.actor)
    return Ok(message="tamper block cleared; remote unlocks are allowed again")
