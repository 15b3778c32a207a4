"""Who may see the camera with an API credential, and when (docs/media.md, Who may watch).

One rule for every way of watching (WHEP, MJPEG, a snapshot now), so they cannot drift apart. The
installer and the backend always may; a credential scoped to a unit or a call watches during its own
call, and otherwise only as far as ``media.live_view`` allows: idle live view never looks into another
unit's call unless configured, since that would show the other unit's visitor.
"""

from __future__ import annotations

from typing import Any

from ..platform import LiveViewConfig
from .errors import SessionRefused

UNSCOPED = frozenset({"installer", "backend"})


def watch_call(cfg: LiveViewConfig, *, role: str, unit_id: str | None, call_guid: str | None,
               current: Any) -> str | None:
    """The guid of the call through which this credential watches now (the view ends with that call), or
    None for live view outside any call of its own; ``SessionRefused`` with the reason if it may not watch.
    ``current`` is the call manager's current call (``.guid``, ``.unit_id``, ``.live``) or None."""
    if role in UNSCOPED:
        return None
    live = current if current is not None and current.live else None
    if role == "viewer" and cfg.viewer == "never":
        raise SessionRefused("live_view_not_allowed", "viewers do not see the camera on this panel "
                             "(media.live_view.viewer = \"never\")")
    if live is not None and (call_guid == live.guid or (call_guid is None and unit_id is not None
                                                        and unit_id == live.unit_id)):
        return str(live.guid)
    when = cfg.resident if role == "resident" else cfg.viewer if role == "viewer" else "own_call"
    if call_guid is not None or when != "any_time":
        raise SessionRefused("live_view_not_allowed", f"your {role} credential shows the camera only while "
                             + (f"its call {call_guid}" if call_guid is not None else "a call of its own unit")
                             + " is in progress; there is none now (media.live_view)")
    if live is not None and not cfg.into_other_calls:
        raise SessionRefused("live_view_other_call", "another unit's call is in progress; live view opens again "
                             "when it is over (media.live_view.into_other_calls)")
    return None


def idle_only(cfg: LiveViewConfig, *, role: str, call_guid: str | None) -> bool:
    """Whether a view ``watch_call`` allowed must end when a call begins: a scoped credential's live view
    outside a call, unless it may look into other units' calls."""
    return call_guid is None and role not in UNSCOPED and not cfg.into_other_calls
