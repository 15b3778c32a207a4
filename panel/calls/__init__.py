"""Calls: the call state machine and call log, the participant list and call links, and the one
service every adapter (HTTP, MQTT) acts on calls through (``CallService``).
"""


from ._actions import (
    BACKEND,
    CREDENTIAL_EXPIRED,
    CREDENTIAL_REVOKED,
    RESERVED_PREFIXES,
    Actor,
    CallService,
    GuestIssuer,
    Invitation,
    MuteState,
)
from ._links import CallLinks, Link, LinkRefused, Subscription
from ._participants import NAME_MAX, Participants
from ._service import MAX_ACTOR_LEN, MAX_PER_PAGE, TRANSITIONS, Call, CallManager

__all__ = [
    "Actor",
    "BACKEND",
    "CREDENTIAL_EXPIRED",
    "CREDENTIAL_REVOKED",
    "Call",
    "CallService",
    "GuestIssuer",
    "Invitation",
    "MuteState",
    "RESERVED_PREFIXES",
    "CallLinks",
    "CallManager",
    "Link",
    "LinkRefused",
    "MAX_ACTOR_LEN",
    "MAX_PER_PAGE",
    "NAME_MAX",
    "Participants",
    "Subscription",
    "TRANSITIONS",
]
