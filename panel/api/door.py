"""The door over the API: open (release), and hold/release a relay.

Every release goes through ``Door.unlock``: journalled with its cause, actor, method and call in the
access log before the relay moves, refused while a tamper block is active (409 ``tamper_blocked``),
never longer than the relay's ``max_on_s``. A resident may open only during the call they answered;
installers and the backend may open at any time. Refusals decided here are journalled like the
door's own (``door.unlock_refused``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from ..errors import CallError
from ..events import Cause, DoorUnlockRefused
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import Principal
from .roles import caller

router = APIRouter(prefix="/api/v1/door", tags=["door"])

Caller = Annotated[Principal, Depends(caller)]
RelayId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Actor = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" is not a number, "yes" not a boolean


class OpenBody(Strict):
    relay: RelayId | None = Field(None, description="which relay; default: the door's first relay")
    call_guid: str | None = Field(None, min_length=1, max_length=64,
                                  description="the call this release belongs to; residents: omit for the call "
                                              "they answered")
    duration_s: float | None = Field(None, ge=0.5, le=43_200, description="installer/backend: seconds (at most the "
                                     "relay's max_on_s); default: the relay's hold_s")
    actor: Actor | None = Field(None, description="backend: on whose behalf (a resident id); logged as the actor")


class HoldBody(Strict):
    seconds: float | None = Field(None, ge=0.5, le=43_200, description="how long to hold the relay energised; "
                                  "default and limit: the relay's max_on_s")
    call_guid: str | None = Field(None, min_length=1, max_length=64)


class Released(OkBody):
    access_id: str = Field(description="the access-log entry of this release")
    relay: str
    duration_s: float
    cause: Cause
    actor: str
    call_guid: str | None = None


class RelayOff(OkBody):
    relay: str
    was_energised: bool


_401 = {"description": "no, unknown, expired or revoked credential"}
_OPEN: dict[int | str, dict[str, Any]] = {401: _401, 403: {"description": "the credential may not open now (e.g. not your call)"},
         404: {"description": "unknown relay or call"},
         409: {"description": "tamper block active, no answered call, or the call is over"},
         422: {"description": "a field is invalid (e.g. duration_s beyond the relay's max_on_s)"}}


def _refuse(panel: Any, who: Principal, relay: str | None, call_guid: str | None, cause: Cause, status: int,
            code: str, message: str) -> ApiError:
    """Journal a refusal decided by the API (the door journals its own) and return the error to raise."""
    panel.journal.record(DoorUnlockRefused(relay=relay, cause=cause, actor=who.actor, method="api",
                                           call_guid=call_guid, code=code, message=message), key=call_guid or "door")
    return ApiError(status, code, message)


def _relay(panel: Any, relay_id: str | None) -> str:
    rid = relay_id or panel.door.main_relay
    if rid not in panel.door.relays:
        known = ", ".join(panel.door.relays)
        raise ApiError(404, "unknown_relay", f"relay: there is no relay {rid!r}; this panel has {known}")
    return rid


def _call_status(code: str) -> int:
    return {"unknown_call": 404}.get(code, 409)


@router.post("/open", response_model=Released, summary="Open the door (release the lock)", responses=_OPEN)
async def open_door(body: OpenBody, panel: PanelDep, who: Caller) -> Released:
    relay = _relay(panel, body.relay)
    cause: Cause
    guid: str | None = body.call_guid
    if who.role == "resident":
        cause = "call"
        if body.duration_s is not None or body.actor is not None:
            raise _refuse(panel, who, relay, guid, cause, 403, "not_allowed_for_role", "duration_s/actor: a resident opens for "
                          "the relay's hold time, as themself; omit them")
        try:
            call = panel.calls.active_call_for_unlock(guid)
        except CallError as e:
            raise _refuse(panel, who, relay, guid, cause, _call_status(e.code), e.code, str(e)) from None
        guid = call.guid
        if not (who.call_guid in (None, call.guid) and who.unit_id in (None, call.unit_id)) \
                or call.answered_by != who.subject:
            raise _refuse(panel, who, relay, guid, cause, 403, "not_your_call",
                          f"call {call.guid} was answered by {call.answered_by}; a resident opens the door only "
                          "during the call they answered")
        actor = who.subject
    else:
        if body.actor is not None and who.role != "backend":
            raise ApiError(403, "not_allowed_for_role", "actor: only the backend names someone else as the actor")
        actor = body.actor or who.actor
        cause, guid = _installer_or_backend_cause(panel, who, guid, relay)
    grant = await panel.door.unlock(cause=cause, actor=actor, method="api", relay=relay, call_guid=guid,
                                    duration_s=body.duration_s)
    seconds = round(grant.until - grant.granted_at, 3)
    return Released(message=f"door released: relay {grant.info.relay} for {seconds:g} s", access_id=grant.info.access_id,
                    relay=grant.info.relay, duration_s=seconds, cause=cause, actor=actor, call_guid=guid)


def _installer_or_backend_cause(panel: Any, who: Principal, guid: str | None, relay: str) -> tuple[Cause, str | None]:
    """A named call must be answered; the backend's open during an answered call belongs to it (as over
    MQTT); otherwise it is a remote (backend) or installer release."""
    plain: Cause = "installer" if who.role == "installer" else "remote"
    try:
        if guid is not None:
            return "call", panel.calls.active_call_for_unlock(guid).guid
        if who.role == "backend":
            return "call", panel.calls.active_call_for_unlock(None).guid
    except CallError as e:
        if guid is not None:
            raise _refuse(panel, who, relay, guid, "call", _call_status(e.code), e.code, str(e)) from None
    return plain, None


@router.post("/relays/{relay_id}/hold", response_model=Released, summary="Hold a relay energised (bistable hold; "
             "monostable up to max_on_s)", responses=_OPEN)
async def hold(panel: PanelDep, who: Caller, relay_id: str = Path(max_length=64),
               body: HoldBody | None = None) -> Released:
    body = body or HoldBody()
    relay = _relay(panel, relay_id)
    rcfg = panel.cfg.relay(relay)
    cause, guid = _installer_or_backend_cause(panel, who, body.call_guid, relay)
    seconds = body.seconds if body.seconds is not None else rcfg.max_on_s
    grant = await panel.door.unlock(cause=cause, actor=who.actor, method="api", relay=relay, call_guid=guid,
                                    duration_s=seconds)
    held = round(grant.until - grant.granted_at, 3)
    return Released(message=f"relay {relay} held for up to {held:g} s (max_on_s {rcfg.max_on_s:g}); POST "
                    f".../relays/{relay}/release ends it", access_id=grant.info.access_id, relay=relay,
                    duration_s=held, cause=cause, actor=who.actor, call_guid=guid)


@router.post("/relays/{relay_id}/release", response_model=RelayOff, summary="Release a held relay (lock again)",
             responses={401: _401, 404: {"description": "unknown relay"}})
async def release(panel: PanelDep, who: Caller, relay_id: str = Path(max_length=64)) -> RelayOff:
    relay = _relay(panel, relay_id)
    was_on = panel.door.release(relay, "released")
    await panel.journal.flush()
    return RelayOff(message=f"relay {relay} {'de-energised' if was_on else 'was not energised'}", relay=relay,
                    was_energised=was_on)
