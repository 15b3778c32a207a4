"""Calls over the API: the call log (paged, filtered) and answer, decline, end and mute.

Commands go through the CallManager, like the backend's MQTT commands, so the same rules hold
("first answer wins", a second answer gets ``already_answered``). Installers and the backend may act
on any call, naming the resident with ``who``; a resident acts as themself on the calls of their
scope, and ends or mutes only the call they answered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..calls import MAX_ACTOR_LEN, MAX_PER_PAGE, Call
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import Principal
from .roles import caller
from .scope import call_in_scope, require_answered_by, require_call

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
    media: bool = Field(description="true if a media session applied it; false: recorded only (no media layer)")


def _record(d: dict[str, Any]) -> CallRecord:
    return CallRecord.model_validate(d)


@router.get("", response_model=CallPage, summary="The call log, newest first",
            responses={401: _401, 403: _403})
async def history(panel: PanelDep, who: Caller, page: int = Query(1, ge=1, le=100_000),
                  per_page: int = Query(20, ge=1, le=MAX_PER_PAGE), unit_id: str | None = Query(None, max_length=64),
                  status: Status | None = None, transitions: bool = False) -> CallPage:
    if who.role in ("viewer", "resident"):
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
            raise ApiError(403, "not_your_unit", f"unit_id: your credential covers unit {who.unit_id}, not {unit_id}")
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
        raise ApiError(404, "unknown_call", f"there is no call {guid!r} in this panel's call log")
    return CallOne.model_validate({"code": "ok", "message": f"call {guid} ({call['status']})", **call})


def _actor(who: Principal, body: CallCommand) -> str:
    if who.role in ("installer", "backend"):
        return body.who or who.actor
    if body.who is not None and body.who != who.subject:
        raise ApiError(403, "acting_as_other", f"who: a resident acts as themself ({who.subject}); omit who")
    return who.subject


async def _target(panel: Any, who: Principal, guid: str | None) -> Call:
    """The live call named (or in progress), checked against the caller's scope before anything moves."""
    call = panel.calls.current if guid is None else panel.calls.get(guid)
    if call is None:
        # Let the CallManager say precisely why (no call / over / unknown), as it does over MQTT.
        call = await panel.calls.lookup(guid) if guid is not None else None
        if call is None and guid is None:
            raise ApiError(409, "no_call", "there is no call in progress")
        if call is None:
            raise ApiError(404, "unknown_call", f"there is no call {guid!r} on this panel; omit call_guid to mean "
                           "the call in progress")
    if who.role not in ("installer", "backend"):
        require_call(who, call)
    return call  # type: ignore[no-any-return]


_CMD: dict[int | str, dict[str, Any]] = {401: _401, 403: _403, 404: {"description": "unknown call"},
        409: {"description": "no call in progress, the call is over, or already answered by someone else"}}


@router.post("/answer", response_model=CallResult, summary="Answer a ringing call (first answer wins)",
             responses=_CMD)
async def answer(body: CallCommand, panel: PanelDep, who: Caller) -> CallResult:
    target = await _target(panel, who, body.call_guid)
    call = await panel.calls.answer(target.guid, _actor(who, body))
    return CallResult(message=f"call {call.guid} answered by {call.answered_by}", call=_record(call.to_dict()))


@router.post("/decline", response_model=CallResult, summary="Decline a ringing call", responses=_CMD)
async def decline(body: CallCommand, panel: PanelDep, who: Caller) -> CallResult:
    target = await _target(panel, who, body.call_guid)
    actor = _actor(who, body)
    call = await panel.calls.decline(target.guid, actor)
    return CallResult(message=f"call {call.guid} declined by {actor}", call=_record(call.to_dict()))


@router.post("/end", response_model=CallResult, summary="End (hang up) a call", responses=_CMD)
async def end(body: CallCommand, panel: PanelDep, who: Caller) -> CallResult:
    target = await _target(panel, who, body.call_guid)
    if who.role == "resident":
        require_answered_by(who, target)
    actor = _actor(who, body)
    call = await panel.calls.end(target.guid, actor)
    return CallResult(message=f"call {call.guid} ended by {actor}", call=_record(call.to_dict()))


class MuteBoard:
    """What the panel sends muted, per live call. The media layer, when present, applies it
    (``panel.media.set_call_mute(guid, kind, muted)``); without one the state is recorded only."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, bool]] = {}

    @classmethod
    def for_panel(cls, panel: Any) -> MuteBoard:
        board = panel.__dict__.get("_mute_board")
        if board is None:
            board = panel.__dict__["_mute_board"] = cls()
        return board  # type: ignore[no-any-return]


@router.post("/mute", response_model=MuteResult, summary="Mute or unmute the entrance microphone/camera in a call",
             responses={**_CMD, 422: {"description": "neither audio nor video given, or a bad field"}})
async def mute(body: MuteBody, request: Request, panel: PanelDep, who: Caller) -> MuteResult:
    if body.audio is None and body.video is None:
        raise ApiError(422, "invalid_request", "audio: give audio and/or video (true mutes, false unmutes)")
    target = await _target(panel, who, body.call_guid)
    if not target.live:
        raise ApiError(409, "call_over", f"call {target.guid} is over ({target.state})")
    if who.role == "resident":
        require_answered_by(who, target)
    board = MuteBoard.for_panel(panel)
    # Only calls still live are kept: the board never grows past the one call in progress.
    board.calls = {g: v for g, v in board.calls.items() if g == target.guid}
    state = board.calls.setdefault(target.guid, {"audio": False, "video": False})
    media = getattr(panel, "media", None)
    applied = False
    for kind in ("audio", "video"):
        value = getattr(body, kind)
        if value is None:
            continue
        state[kind] = value
        setter = getattr(media, "set_call_mute", None)
        if setter is not None:
            setter(target.guid, kind, value)
            applied = True
    shown = ", ".join(f"{k} {'muted' if v else 'on'}" for k, v in state.items())
    return MuteResult(message=f"call {target.guid}: {shown}" + ("" if applied else " (recorded; no media session "
                      "applied it)"), call_guid=target.guid, muted=dict(state), media=applied)
