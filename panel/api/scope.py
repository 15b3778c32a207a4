"""What a scoped credential (viewer, resident, guest) may see: the calls of its unit, or its one call; and
how an API caller becomes the call service's ``Actor`` (the service decides what they may do)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CallError
from .errors import ApiError
from .principals import Principal

if TYPE_CHECKING:
    from ..calls import Actor, CallManager, CallService
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


# -- the call service's view of a caller ------------------------------------------------------------

# The scope refusals the routes have always answered 403, and the invite refusals that are a bad field.
_FORBIDDEN = frozenset({"not_your_call", "acting_as_other", "not_allowed_for_role"})
_BAD_FIELD = frozenset({"reserved_subject", "invitee_in_call", "invalid_mute"})


def actor(panel: Any, p: Principal) -> Actor:
    """The call service's Actor for an API principal (the service, not the route, applies the rules)."""
    from ..calls import Actor
    from .principals import ApiAuth

    left = None if p.expires is None else p.expires - ApiAuth.for_panel(panel).tokens.now()
    return Actor(kind=p.role, name=p.actor, subject=p.subject, unit_id=p.unit_id, call_guid=p.call_guid,
                 credential_id=None if p.kind == "static" else p.token_id, expires_in_s=left)


def call_service(panel: Any) -> CallService:
    """The panel's CallService, wired (once) to the API's credentials and the call links."""
    from ..calls import CallLinks, CallService
    from .principals import RESERVED_SUBJECTS, ApiAuth

    service = CallService.for_calls(panel.calls, lambda: getattr(panel, "media", None),
                                    reserved_subjects=RESERVED_SUBJECTS)
    if not panel.__dict__.get("_call_service_wired"):
        panel.__dict__["_call_service_wired"] = True
        service.links = CallLinks.for_panel(panel)
        # A revoked answerer's credential ends the call it answered (docs/calls.md).
        ApiAuth.for_panel(panel).tokens.on_revoke(lambda p: service.credential_revoked(p.token_id))
    return service


def refused(e: CallError) -> Exception:
    """A call service refusal as the API has always answered it (the CallError handler does the rest)."""
    if e.code in _FORBIDDEN:
        return ApiError(403, e.code, str(e))
    if e.code in _BAD_FIELD:
        return ApiError(422, e.code, str(e))
    return e
