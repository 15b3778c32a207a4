"""Self-test over the API, run by the daemon on its live hardware (``panel selftest`` is the offline
version for a stopped daemon).

The same checks and the same PASS/WARN/FAIL/SKIP rows as ``panel selftest``: storage writable (a real
durable commit), each input's level, the tamper switch, and, only when asked, a short pulse of each
relay through ``Door.unlock``, so the pulse is authorised, tamper-checked and in the access log
(cause ``installer``) like any other release.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..door import Requester, UnlockRequest
from ..errors import UnlockRefused
from ..platform import SelftestRow as Row
from ..platform import check_storage, format_table
from .deps import Caller, PanelDep
from .errors import ApiError

if TYPE_CHECKING:
    from .deps import Panel

router = APIRouter(prefix="/api/v1", tags=["selftest"])

PULSE_S = 0.5


class SelftestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" is not a number, "yes" not a boolean

    pulse_relays: bool = Field(False, description="pulse each relay for 0.5 s: this releases the door")
    relays: list[str] | None = Field(None, max_length=16, description="only these relays (default: all)")


class RowOut(BaseModel):
    check: str
    result: Literal["PASS", "WARN", "FAIL", "SKIP"]
    detail: str


class SelftestResult(BaseModel):
    code: str = Field(description="ok when nothing failed, selftest_failed otherwise")
    message: str
    passed: bool
    rows: list[RowOut]
    table: str = Field(description="the rows as panel selftest prints them")
    duration_s: float


async def _pulse(panel: Panel, relay_id: str, actor: str) -> Row:
    name = f"relay {relay_id}"
    dev = panel.hw.relays[relay_id]
    try:
        # Through the one door service like every other release: authorised, tamper-checked, journalled.
        await panel.door.open(UnlockRequest(Requester("installer", actor), method="api", relay=relay_id,
                                            duration_s=PULSE_S))
    except UnlockRefused as e:
        return Row(name, "FAIL", f"not pulsed: {e.code}: {e}")
    energised = bool(dev.value)
    waited = 0.0
    while dev.value and waited < PULSE_S + 2:
        await asyncio.sleep(0.05)
        waited += 0.05
    if energised and not dev.value:
        return Row(name, "PASS", f"energised and released again after about {PULSE_S:g} s (access log: cause "
                                 "installer); listen for the click and the lock")
    return Row(name, "FAIL", f"did not follow (energised={energised}, still on={bool(dev.value)}); check the pin and "
                             "the relay board")


@router.post("/selftest", response_model=SelftestResult, summary="Run the self-test on the live panel (installer)",
             responses={401: {"description": "no, unknown, expired or revoked credential"},
                        404: {"description": "a relay named in relays does not exist"}})
async def selftest(panel: PanelDep, who: Caller, body: SelftestBody | None = None) -> SelftestResult:
    body = body or SelftestBody()
    started = time.monotonic()
    rows: list[Row] = [await asyncio.to_thread(check_storage, panel.cfg)]
    try:
        await panel.store.write(lambda tx: tx.set_kv("selftest_last", {"at": time.time(), "by": who.actor}))
        rows.append(Row("database", "PASS", "a durable write to the store succeeded"))
    except Exception as e:  # the self-test reports failures, it does not fail itself
        rows.append(Row("database", "FAIL", f"cannot write to the store: {e}"))
    relays = body.relays if body.relays is not None else list(panel.door.relays)
    unknown = [r for r in relays if r not in panel.door.relays]
    if unknown:
        raise ApiError("unknown_relay", f"relays: there is no relay {unknown[0]!r}; this panel has "
                       f"{', '.join(panel.door.relays)}")
    for rid in relays:
        if body.pulse_relays:
            rows.append(await _pulse(panel, rid, who.actor))
        else:
            on = panel.door.relays[rid].energised
            rows.append(Row(f"relay {rid}", "SKIP", f"not pulsed (pulse_relays is false); now "
                                                    f"{'energised' if on else 'off'}"))
    for name, inp in panel.inputs.items():
        if name == "tamper":
            continue
        if inp.stuck:
            rows.append(Row(name, "FAIL", f"stuck active (GPIO{inp.cfg.pin}); check the wiring"))
        elif inp.active and name.startswith(("button:", "exit_button")):
            rows.append(Row(name, "WARN", f"reads pressed at rest (GPIO{inp.cfg.pin}); check the wiring or the "
                                          "pull/active setting"))
        else:
            rows.append(Row(name, "PASS", f"{'active' if inp.active else 'at rest'} (GPIO{inp.cfg.pin})"))
    if "door_contact" not in panel.inputs:
        rows.append(Row("door_contact", "SKIP", "not configured: forced-open and held-open cannot be detected"))
    tamper = panel.inputs.get("tamper")
    if tamper is None:
        rows.append(Row("tamper switch", "SKIP", "not configured"))
    elif tamper.active:
        rows.append(Row("tamper switch", "FAIL", "reads tampered; close the housing and check the switch"))
    else:
        blocked = panel.door.tamper_blocked
        rows.append(Row("tamper switch", "WARN" if blocked else "PASS",
                        "at rest" + ("; a tamper block is still active (POST /api/v1/tamper/clear)" if blocked else "")))
    failed = sum(r.result == "FAIL" for r in rows)
    return SelftestResult(code="ok" if not failed else "selftest_failed",
                          message=f"selftest {'PASS' if not failed else 'FAIL'} ({failed} failed)", passed=not failed,
                          rows=[RowOut(check=r.check, result=r.result, detail=r.detail) for r in rows],
                          table=format_table(rows), duration_s=round(time.monotonic() - started, 3))
