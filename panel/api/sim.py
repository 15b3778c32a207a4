"""Simulation routes: drive gpiozero's mock pins of a panel running with --simulate.

They exist only in simulation (the router is not mounted otherwise) and go through the real input
path (mock pin -> gpiozero -> debounce -> door/call logic), so what works here works on the wall.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from .deps import PanelDep
from .errors import ApiError

router = APIRouter(prefix="/api/v1/sim", tags=["simulation"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HoldBody(Strict):
    seconds: float = Field(2.0, gt=0, le=600, description="how long to hold the button")


class TamperBody(Strict):
    active: bool = True


class StallBody(Strict):
    seconds: float = Field(gt=0, le=30, description="how long to block the event loop")


class SimResult(BaseModel):
    code: str = "ok"
    message: str
    pins: dict[str, Any]


def _drive(panel: Any, where: str, cfg: Any, active: bool) -> None:
    if cfg is None:
        raise ApiError(404, "not_configured", f"this panel has no {where} configured")
    pin = panel.hw.factory.pin(f"GPIO{cfg.pin}")
    level_high = (cfg.active == "high") == active
    pin.drive_high() if level_high else pin.drive_low()


def _button(panel: Any, button_id: str) -> Any:
    try:
        return panel.cfg.button(button_id)
    except KeyError:
        known = ", ".join(b.id for b in panel.cfg.buttons)
        raise ApiError(404, "unknown_button", f"there is no button {button_id!r}; this panel has {known}") from None


async def _settled(panel: Any) -> dict[str, Any]:
    # Let the debounce window pass so the caller sees the effect of what it did.
    longest = max([b.debounce_ms for b in panel.cfg.buttons] + [
        i.debounce_ms for i in (panel.cfg.door.contact, panel.cfg.door.exit_button, panel.cfg.tamper) if i])
    await asyncio.sleep(longest / 1000 + 0.02)
    await panel.journal.flush()
    return panel.pin_levels()


@router.post("/buttons/{button_id}/press", response_model=SimResult)
async def press(button_id: str, panel: PanelDep) -> SimResult:
    _drive(panel, f"button {button_id}", _button(panel, button_id), True)
    return SimResult(message=f"button {button_id} pressed", pins=await _settled(panel))


@router.post("/buttons/{button_id}/release", response_model=SimResult)
async def release(button_id: str, panel: PanelDep) -> SimResult:
    _drive(panel, f"button {button_id}", _button(panel, button_id), False)
    return SimResult(message=f"button {button_id} released", pins=await _settled(panel))


@router.post("/buttons/{button_id}/hold", response_model=SimResult)
async def hold(button_id: str, panel: PanelDep, body: HoldBody | None = None) -> SimResult:
    cfg = _button(panel, button_id)
    seconds = (body or HoldBody()).seconds
    _drive(panel, f"button {button_id}", cfg, True)
    await asyncio.sleep(seconds)
    _drive(panel, f"button {button_id}", cfg, False)
    return SimResult(message=f"button {button_id} held for {seconds:g} s", pins=await _settled(panel))


@router.post("/door/{action}", response_model=SimResult)
async def door(action: Literal["open", "close"], panel: PanelDep) -> SimResult:
    _drive(panel, "door contact", panel.cfg.door.contact, action == "open")
    return SimResult(message=f"door contact {action}", pins=await _settled(panel))


@router.post("/exit", response_model=SimResult)
async def exit_button(panel: PanelDep) -> SimResult:
    cfg = panel.cfg.door.exit_button
    _drive(panel, "exit button", cfg, True)
    await asyncio.sleep(cfg.debounce_ms / 1000 + 0.05)
    _drive(panel, "exit button", cfg, False)
    return SimResult(message="exit button pressed", pins=await _settled(panel))


@router.post("/tamper", response_model=SimResult)
async def tamper(panel: PanelDep, body: TamperBody | None = None) -> SimResult:
    active = (body or TamperBody()).active
    _drive(panel, "tamper switch", panel.cfg.tamper, active)
    return SimResult(message=f"tamper switch {'tripped' if active else 'at rest'}", pins=await _settled(panel))


@router.get("/pins", response_model=SimResult)
async def pins(panel: PanelDep) -> SimResult:
    return SimResult(message="pin levels", pins=panel.pin_levels())


@router.post("/stall", response_model=SimResult, summary="Block the event loop (watchdog test)")
async def stall(body: StallBody, panel: PanelDep) -> SimResult:
    time.sleep(body.seconds)  # deliberately blocking: this route simulates a hung loop
    return SimResult(message=f"event loop blocked for {body.seconds:g} s", pins=panel.pin_levels())
