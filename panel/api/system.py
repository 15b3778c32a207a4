"""Health and state: what an installer, a monitoring system and the backend poll."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from .deps import Installer, PanelDep

router = APIRouter(prefix="/api/v1", tags=["system"])


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float
    simulated: bool
    checks: dict[str, Any]
    components: dict[str, dict[str, Any]]


class State(BaseModel):
    panel: dict[str, str]
    simulated: bool
    door: dict[str, Any]
    inputs: dict[str, Any]
    backlog: int


class Ok(BaseModel):
    code: str = "ok"
    message: str


@router.get("/health", response_model=Health, summary="Liveness and health checks")
async def health(panel: PanelDep) -> Health:
    return Health(**await panel.health())


@router.get("/state", response_model=State, summary="Door, relays, inputs and tamper state")
async def state(panel: PanelDep) -> State:
    return State(**await panel.state())


@router.post("/tamper/clear", response_model=Ok, summary="Clear the tamper block (installer)",
             responses={401: {"description": "no or wrong installer token"},
                        409: {"description": "the tamper switch is still active"}})
async def clear_tamper(panel: PanelDep, who: Installer) -> Ok:
    await panel.door.clear_tamper(actor=who)
    return Ok(message="tamper block cleared; remote unlocks are allowed again")
