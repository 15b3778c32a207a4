"""What a scoped credential (viewer, resident, guest) may see: the calls of its unit, or its one call; and
how an API caller becomes the call service's ``Actor`` (the service decides what they may do)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CallError
from ..platform import SlotTier
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


def state_in_scope(p: Principal, state: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/state as ``p`` may see it: a scoped caller sees the call of its own unit (or its one
    call) and nothing of another's (guid, answerer, participants, the door grant it holds); the panel is
    idle to it otherwise. Access blocks (which sources are locked out) are for the installer and backend."""
    if p.role in UNSCOPED:
        return state
    call = (state.get("call") or {}).get("call")
    unit = call.get("unit") if isinstance(call, dict) else None
    visible = isinstance(call, dict) and call_in_scope(p, unit.get("id") if isinstance(unit, dict) else None,
                                                       call.get("guid"))
    guid = call.get("guid") if visible and isinstance(call, dict) else None

    def grant(relay: dict[str, Any]) -> Any:
        held = relay.get("grant")
        return held if guid is not None and isinstance(held, dict) and held.get("call_guid") == guid else None

    door = {**state["door"], "relays": {rid: {**relay, "grant": grant(relay)}
                                        for rid, relay in state["door"].get("relays", {}).items()}}
    return {**state, "door": door, "call": state["call"] if visible else {"status": "idle", "call": None},
            "access": None}


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


def slot_tier(p: Principal) -> SlotTier:
    """Which reserve of a bounded resource (event streams, media sessions) a caller may use."""
    return "installer" if p.role == "installer" else "resident" if p.role == "resident" else "other"
