"""What a scoped credential (viewer, resident) may see and touch: the calls of its unit, or its one call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .principals import Principal

if TYPE_CHECKING:
    from ..calls import Call, CallManager
    from ..platform import EventRow

UNSCOPED = frozenset({"installer", "backend"})


def call_in_scope(p: Principal, unit_id: str | None, guid: str | None) -> bool:
    if p.role in UNSCOPED:
        return True
    if p.call_guid is not None and p.call_guid != guid:
        return False
    if p.unit_id is not None and p.unit_id != unit_id:
        return False
    return p.call_guid is not None or p.unit_id is not None


def require_call(p: Principal, call: Call) -> None:
    if not call_in_scope(p, call.unit_id, call.guid):
        raise ApiError(403, "not_your_call", f"call {call.guid} rings unit {call.unit_id}, which your credential "
                       f"{p.token_id} does not cover")


def require_answered_by(p: Principal, call: Call) -> None:
    require_call(p, call)
    if call.answered_by != p.subject:
        who = f"answered by {call.answered_by}" if call.answered_by else "not answered"
        raise ApiError(403, "not_your_call", f"call {call.guid} is {who}; only the resident who answered it may do "
                       "this")


def event_in_scope(p: Principal, row: EventRow, calls: CallManager | None) -> bool:
    """Viewers and residents see the call events of their scope and nothing else."""
    if p.role in UNSCOPED:
        return True
    if not row.type.startswith("call."):
        return False
    data: dict[str, Any] = row.data
    guid = data.get("guid") if isinstance(data.get("guid"), str) else row.key
    unit = data.get("unit")
    unit_id = unit.get("id") if isinstance(unit, dict) else None
    if unit_id is None and calls is not None and guid:
        known = calls.get(guid)
        unit_id = known.unit_id if known is not None else None
    return call_in_scope(p, unit_id, guid)
