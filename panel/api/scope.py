"""What a scoped credential (viewer, resident, guest) may see: the calls of its unit, or its one call; and
how an API caller becomes the call service's ``Actor`` (the service decides what they may do)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CallError
from .principals import Principal

if TYPE_CHECKING:
    from ..calls import Actor, CallManager, CallService
    from ..platform import EventRow
    from .deps import Panel

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

def actor(panel: Panel, p: Principal) -> Actor:
    """The call service's Actor for an API principal (the service, not the route, applies the rules)."""
    from ..calls import Actor
    from .principals import ApiAuth

    left = None if p.expires is None else p.expires - ApiAuth.for_panel(panel).tokens.now()
    return Actor(kind=p.role, name=p.actor, subject=p.subject, unit_id=p.unit_id, call_guid=p.call_guid,
                 credential_id=None if p.kind == "static" else p.token_id, expires_in_s=left)


def call_service(panel: Panel) -> CallService:
    """The panel's one CallService (built by the composition root)."""
    service: CallService = panel.call_service
    return service


def refused(e: CallError) -> Exception:
    """A call service refusal: the one PanelError handler answers it with its status from the table."""
    return e
