"""Simulation routes: drive gpiozero's mock pins of a panel running with --simulate.

They exist only in simulation (the router is not mounted otherwise) and go through the real input
path (mock pin -> gpiozero -> debounce -> door/call logic), so what works here works on the wall.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from .deps import PanelDep
from .errors import ApiError, OkBody

if TYPE_CHECKING:
    from .deps import Panel

router = APIRouter(prefix="/api/v1/sim", tags=["simulation"])


class Strict(BaseModel):
    # strict: "yes" is not a boolean and "2" is not a number; a malformed request changes nothing.
    model_config = ConfigDict(extra="forbid", strict=True)


class SimHoldBody(Strict):
    seconds: float = Field(2.0, gt=0, le=600, description="how long to hold the button")


class TamperBody(Strict):
    active: bool = True


class KeypadBody(Strict):
    keys: str = Field(min_length=1, max_length=64, pattern=r"^[0-9*#]+$", description="keys to press in turn, "
                      "e.g. \"1234#\"")
    held_ms: int = Field(40, ge=1, le=2000, description="how long each key is held (and the gap after it)")


class CameraQrBody(Strict):
    payload: str | None = Field(None, min_length=1, max_length=256, description="what the QR code carries, e.g. "
                                "\"panel-access:480913\" (a code's qr.payload); null takes the picture away")


class StallBody(Strict):
    seconds: float = Field(gt=0, le=30, description="how long to block the event loop")


class FaultBody(Strict):
    component: str = Field("sim-fault", pattern=r"^sim-[a-z0-9-]{1,32}$",
                           description="name of the supervised component that will crash (sim-...)")
    max_restarts: int = Field(0, ge=0, le=10, description="restarts the supervisor allows before the failure "
                              "is fatal and the panel stops")


class SimulatedFault(RuntimeError):
    """Raised by a component started through the fault route."""


class RecordedEvent(BaseModel):
    seq: int
    id: str
    type: str


class SimResult(OkBody):
    pins: dict[str, Any]
    events: list[RecordedEvent] = Field(
        [], description="events committed to the store while this request ran (each is durable)")


@contextlib.contextmanager
def _recording(panel: Panel) -> Iterator[list[RecordedEvent]]:
    """Collect what the journal commits during a request (other concurrent requests' events included)."""
    got: list[RecordedEvent] = []
    unsubscribe = panel.journal.subscribe(lambda row: got.append(RecordedEvent(seq=row.seq, id=row.id, type=row.type)))
    try:
        yield got
    finally:
        unsubscribe()


def _drive(panel: Panel, where: str, cfg: Any, active: bool) -> None:
    if cfg is None:
        raise ApiError("not_configured", f"this panel has no {where} configured")
    pin = panel.hw.factory.pin(f"GPIO{cfg.pin}")
    level_high = (cfg.active == "high") == active
    pin.drive_high() if level_high else pin.drive_low()


def _button(panel: Panel, button_id: str) -> Any:
    try:
        return panel.cfg.button(button_id)
    except KeyError:
        known = ", ".join(b.id for b in panel.cfg.buttons)
        raise ApiError("unknown_button", f"there is no button {button_id!r}; this panel has {known}") from None


async def _settled(panel: Panel) -> dict[str, Any]:
    # Let the debounce window pass so the caller sees the effect of what it did.
    longest = max([b.debounce_ms for b in panel.cfg.buttons] + [
        i.debounce_ms for i in (panel.cfg.door.contact, panel.cfg.door.exit_button, panel.cfg.tamper) if i])
    await asyncio.sleep(longest / 1000 + 0.02)
    await panel.journal.flush()
    levels: dict[str, Any] = panel.pin_levels()
    return levels


@router.post("/buttons/{button_id}/press", response_model=SimResult)
async def press(button_id: str, panel: PanelDep) -> SimResult:
    cfg = _button(panel, button_id)
    with _recording(panel) as events:
        _drive(panel, f"button {button_id}", cfg, True)
        pins = await _settled(panel)
    return SimResult(message=f"button {button_id} pressed", pins=pins, events=events)


@router.post("/buttons/{button_id}/release", response_model=SimResult)
async def release(button_id: str, panel: PanelDep) -> SimResult:
    cfg = _button(panel, button_id)
    with _recording(panel) as events:
        _drive(panel, f"button {button_id}", cfg, False)
        pins = await _settled(panel)
    return SimResult(message=f"button {button_id} released", pins=pins, events=events)


@router.post("/buttons/{button_id}/hold", response_model=SimResult)
async def hold(button_id: str, panel: PanelDep, body: SimHoldBody | None = None) -> SimResult:
    cfg = _button(panel, button_id)
    seconds = (body or SimHoldBody()).seconds
    with _recording(panel) as events:
        _drive(panel, f"button {button_id}", cfg, True)
        try:
            await asyncio.sleep(seconds)
        finally:  # a client that hangs up must not leave the button pressed
            _drive(panel, f"button {button_id}", cfg, False)
        pins = await _settled(panel)
    return SimResult(message=f"button {button_id} held for {seconds:g} s", pins=pins, events=events)


@router.post("/door/{action}", response_model=SimResult)
async def door(action: Literal["open", "close"], panel: PanelDep) -> SimResult:
    with _recording(panel) as events:
        _drive(panel, "door contact", panel.cfg.door.contact, action == "open")
        pins = await _settled(panel)
    return SimResult(message=f"door contact {action}", pins=pins, events=events)


@router.post("/exit", response_model=SimResult)
async def exit_button(panel: PanelDep) -> SimResult:
    cfg = panel.cfg.door.exit_button
    with _recording(panel) as events:
        _drive(panel, "exit button", cfg, True)
        assert cfg is not None  # _drive refused a panel without one
        try:
            await asyncio.sleep(cfg.debounce_ms / 1000 + 0.05)
        finally:
            _drive(panel, "exit button", cfg, False)
        pins = await _settled(panel)
    return SimResult(message="exit button pressed", pins=pins, events=events)


@router.post("/tamper", response_model=SimResult)
async def tamper(panel: PanelDep, body: TamperBody | None = None) -> SimResult:
    active = (body or TamperBody()).active
    with _recording(panel) as events:
        _drive(panel, "tamper switch", panel.cfg.tamper, active)
        pins = await _settled(panel)
    return SimResult(message=f"tamper switch {'tripped' if active else 'at rest'}", pins=pins, events=events)


@router.post("/keypad", response_model=SimResult, summary="Type on the simulated matrix keypad",
             responses={404: {"description": "this panel has no keypad configured (access.keypad)"}})
async def keypad(body: KeypadBody, panel: PanelDep) -> SimResult:
    matrix = panel.keypad_sim
    kp = panel.cfg.access.keypad
    if matrix is None or kp is None:
        raise ApiError("not_configured", "this panel has no keypad configured (access.keypad)")
    # Through the real path: mock pins -> gpiozero -> the matrix scan -> the entry rules -> access.
    hold = max(body.held_ms / 1000, kp.scan_ms * (kp.debounce_scans + 1) / 1000)
    with _recording(panel) as events:
        for key in body.keys:
            matrix.press(key)
            try:
                await asyncio.sleep(hold)
            finally:
                matrix.release(key)
            await asyncio.sleep(hold)
        await asyncio.sleep(0.05)  # the release the last key asked for is journalled by then
        await panel.journal.flush()
    return SimResult(message=f"typed {len(body.keys)} key(s)", pins=panel.pin_levels(), events=events)


@router.post("/camera/qr", response_model=SimResult, summary="Hold a QR code up to the synthetic camera",
             responses={404: {"description": "QR codes are not available (zxing-cpp missing)"},
                        503: {"description": "no synthetic camera running"}})
async def camera_qr(body: CameraQrBody, panel: PanelDep) -> SimResult:
    from ..media.sources import SyntheticVideoSource

    if body.payload is None:
        SyntheticVideoSource.hold_up(None)
        return SimResult(message="nothing held up to the camera", pins=panel.pin_levels())
    try:
        from ..access import qr_picture

        picture = qr_picture(body.payload)
    except ImportError:
        raise ApiError("not_configured", "QR codes need zxing-cpp: pip install 'panel[access]'") from None
    SyntheticVideoSource.hold_up(picture)
    return SimResult(message="QR code held up to the synthetic camera (press a button or touch the keypad so "
                     "the panel looks)", pins=panel.pin_levels())


@router.get("/pins", response_model=SimResult)
async def pins(panel: PanelDep) -> SimResult:
    return SimResult(message="pin levels", pins=panel.pin_levels())


@router.get("/state", summary="The panel's state, without a credential (simulation only)")
async def sim_state(panel: PanelDep) -> dict[str, Any]:
    # /api/v1/state needs a credential; a simulated panel's harness (panel sim state, tests) reads it here.
    return {"code": "ok", "message": "state", **await panel.state()}


class StallResult(SimResult):
    blocked_from: float = Field(description="time.monotonic() (CLOCK_MONOTONIC, shared by every process on "
                                "the machine) when the loop blocked")
    blocked_until: float = Field(description="time.monotonic() when it ran again")


@router.post("/stall", response_model=StallResult, summary="Block the event loop (watchdog test)")
async def stall(body: StallBody, panel: PanelDep) -> StallResult:
    started = time.monotonic()
    time.sleep(body.seconds)  # noqa: ASYNC251 - deliberately blocking: this route simulates a hung loop
    ended = time.monotonic()
    # Pin levels read before the loop runs again: what threads (the relay guard) did meanwhile.
    return StallResult(message=f"event loop blocked for {body.seconds:g} s", pins=panel.pin_levels(),
                       blocked_from=started, blocked_until=ended)


@router.post("/fault", response_model=SimResult, status_code=202,
             summary="Start a component that always crashes (supervisor test)",
             responses={409: {"description": "a component of that name is already supervised"}})
async def fault(body: FaultBody, panel: PanelDep) -> SimResult:
    if body.component in panel.supervisor.status():
        raise ApiError("component_exists", f"a component named {body.component!r} is already supervised; "
                       "choose another name")

    async def crash() -> None:
        raise SimulatedFault(f"simulated fault in {body.component}")

    panel.supervisor.start(body.component, crash, max_restarts=body.max_restarts, backoff_s=0.05,
                           max_backoff_s=0.2)
    return SimResult(code="accepted", message=f"component {body.component} started; it crashes every time and "
                     f"the panel stops after {body.max_restarts} restart(s)", pins=panel.pin_levels())
