"""Calls over the API: the call log (paged, filtered) and answer, decline, end and mute.

Commands go through the CallService (panel/calls), like the backend's MQTT commands, so the same
rules hold ("first answer wins", a second answer gets ``already_answered``). Installers and the
backend may act on any call, naming the resident with ``who``; a resident acts as themself on the
calls of their scope, and ends or mutes only the call they answered; a guest does none of this.
These routes only translate.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from ..calls import MAX_ACTOR_LEN, MAX_PER_PAGE
from ..errors import CallError
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import Principal
from .roles import caller
from .scope import actor, call_in_scope, call_service, refused

router = APIRouter(prefix="/api/v1/calls", tags=["calls"])

Status = Literal["calling", "ringing", "connecting", "connected", "ended", "declined", "canceled", "missed", "failed"]
Caller = Annotated[Principal, Depends(caller)]
_401 = {"description": "no, unknown, expired or revoked credential"}
_403 = {"description": "the credential's role or scope does not cover this call"}


class Transition(BaseModel):
    model_config = ConfigDict(extra="allow")

    to: str
    time: str | None
    actor: str | None
    reason: str | None


class CallRecord(BaseModel):
    """One call as the call log shows it (docs/calls.md). ``snapshot`` is the visitor's picture when
    one was taken (see docs/media.md); fields added by later capabilities pass through."""

    model_config = ConfigDict(extra="allow")

    guid: str
    button: str
    unit: dict[str, str]
    call_type: str
    status: Status
    answered_by: str | None = None
    declined_by: str | None = None
    ended_by: str | None = None
    reason: str | None = None
    participants: list[str] = []
    created_at: str
    answered_at: str | None = None
    connected_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    snapshot: Any = Field(None, description="the visitor's picture taken at the press, if any")
    transitions: list[dict[str, Any]] | None = None


class CallPage(OkBody):
    page: int
    per_page: int
    total: int = Field(description="calls matching the filters, all pages")
    calls: list[CallRecord] = Field(description="newest first")


class CallOne(CallRecord):
    """One call: the call-log fields at the top level, with ``code`` and ``message``."""

    code: str = "ok"
    message: str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" is not a number, "yes" not a boolean


Who = Annotated[str, Field(min_length=1, max_length=MAX_ACTOR_LEN, pattern=r"^[^\x00-\x1f\x7f]+$")]
Guid = Annotated[str, Field(min_length=1, max_length=64)]


class CallCommand(Strict):
    call_guid: Guid | None = Field(None, description="the call; omit for the call in progress")
    who: Who | None = Field(None, description="installer/backend: the resident acting (default: the caller); "
                                              "residents always act as themselves")


class MuteBody(CallCommand):
    audio: bool | None = Field(None, description="mute (true) or unmute (false) the entrance microphone toward the "
                                                 "call; omit to leave as is")
    video: bool | None = Field(None, description="mute or unmute the camera toward the call; omit to leave as is")


class CallResult(OkBody):
    call: CallRecord


class MuteResult(OkBody):
    call_guid: str
    muted: dict[str, bool] = Field(description="what the panel sends muted in this call: {audio, video}")
    media: bool = Field(description="true if it reached at least one media session of the call; false: recorded "
                                    "only (no media layer, or no session yet: sessions that join later start "
                                    "muted)")


def _record(d: dict[str, Any]) -> CallRecord:
    return CallRecord.model_validate(d)


@router.get("", response_model=CallPage, summary="The call log, newest first",
            responses={401: _401, 403: _403})
async def history(panel: PanelDep, who: Caller, page: int = Query(1, ge=1, le=100_000),
                  per_page: int = Query(20, ge=1, le=MAX_PER_PAGE), unit_id: str | None = Query(None, max_length=64),
                  status: Status | None = None, transitions: bool = False) -> CallPage:
    if who.role in ("viewer", "resident", "guest"):
        if who.call_guid is not None:  # a one-call credential sees that call only
            d = await panel.calls.details(who.call_guid)
            rows = [d] if d is not None and (status is None or d["status"] == status) \
                and (unit_id is None or d["unit"]["id"] == unit_id) else []
            if not transitions:
                for r in rows:
                    r.pop("transitions", None)
            shown = rows if page == 1 else []
            return CallPage(message=f"{len(shown)} of {len(rows)} calls", page=page, per_page=per_page,
                            total=len(rows), calls=[_record(r) for r in shown])
        if unit_id is not None and unit_id != who.unit_id:
            raise ApiError("not_your_unit", f"unit_id: your credential covers unit {who.unit_id}, not {unit_id}")
        unit_id = who.unit_id
    calls = await panel.calls.history(page, per_page, unit_id=unit_id, status=status, include_transitions=transitions)
    total = await panel.calls.count(unit_id=unit_id, status=status)
    return CallPage(message=f"{len(calls)} of {total} calls", page=page, per_page=per_page, total=total,
                    calls=[_record(c) for c in calls])


@router.get("/{guid}", response_model=CallOne, summary="One call with its transitions",
            responses={401: _401, 404: {"description": "unknown call (or not in the credential's scope)"}})
async def one(guid: str, panel: PanelDep, who: Caller) -> CallOne:
    call = await panel.calls.details(guid)
    if call is None or not call_in_scope(who, call["unit"]["id"], call["guid"]):
        raise ApiError("unknown_call", f"there is no call {guid!r} in this panel's call log")
    return CallOne.model_validate({"code": "ok", "message": f"call {guid} ({call['status']})", **call})


_CMD: dict[int | str, dict[str, Any]] = {401: _401, 403: _403, 404: {"description": "unknown call"},
        409: {"description": "no call in progress, the call is over, or already answered by someone else"}}


# The routes only translate: the CallService (panel/calls) decides who may do what to which call.
@router.post("/answer", response_model=CallResult, summary="Answer a ringing call (first answer wins)",
             responses=_CMD)
async def answer(body: CallCommand, panel: PanelDep, who: Caller) -> CallResult:
    try:
        call = await call_service(panel).answer(actor(panel, who), body.call_guid, body.who)
    except CallError as e:
        raise refused(e) from None
    return CallResult(message=f"call {call.guid} answered by {call.answered_by}", call=_record(call.to_dict()))


@router.post("/decline", response_model=CallResult, summary="Decline a ringing call", responses=_CMD)
async def decline(body: CallCommand, panel: PanelDep, who: Caller) -> CallResult:
    try:
        call = await call_service(panel).decline(actor(panel, who), body.call_guid, body.who)
    except CallError as e:
        raise refused(e) from None
    return CallResult(message=f"call {call.guid} declined by {call.ended_by}", call=_record(call.to_dict()))


@router.post("/end", response_model=CallResult, summary="End (hang up) a call", responses=_CMD)
async def end(body: CallCommand, panel: PanelDep, who: Caller) -> CallResult:
    try:
        call = await call_service(panel).end(actor(panel, who), body.call_guid, body.who)
    except CallError as e:
        raise refused(e) from None
    return CallResult(message=f"call {call.guid} ended by {call.ended_by}", call=_record(call.to_dict()))


@router.post("/mute", response_model=MuteResult, summary="Mute or unmute the entrance microphone/camera in a call",
             responses={**_CMD, 422: {"description": "neither audio nor video given, or a bad field"}})
async def mute(body: MuteBody, panel: PanelDep, who: Caller) -> MuteResult:
    if body.audio is None and body.video is None:
        raise ApiError("invalid_request", "audio: give audio and/or video (true mutes, false unmutes)")
    try:
        state = await call_service(panel).mute(actor(panel, who), body.call_guid, audio=body.audio, video=body.video)
    except CallError as e:
        raise refused(e) from None
    shown = ", ".join(f"{k} {'muted' if v else 'on'}" for k, v in state.muted.items())
    return MuteResult(message=f"call {state.call_guid}: {shown}" + ("" if state.media else " (recorded; no media "
                      "session applied it)"), call_guid=state.call_guid, muted=state.muted, media=state.media)
