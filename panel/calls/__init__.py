"""Calls: the call state machine and call log, the participant list and call links, and the one
service every adapter (HTTP, MQTT) acts on calls through (``CallService``).
"""


from ._actions import (
    BACKEND,
    RESERVED_PREFIXES,
    RESERVED_SUBJECTS,
    Actor,
    CallService,
    GuestIssuer,
    Invitation,
    MuteState,
)
from ._links import CallLinks, Link, LinkRefused, Subscription
from ._participants import NAME_MAX, Participants
from ._service import (
    CREDENTIAL_EXPIRED,
    CREDENTIAL_REVOKED,
    MAX_ACTOR_LEN,
    MAX_PER_PAGE,
    TRANSITIONS,
    Call,
    CallManager,
)

__all__ = [
    "BACKEND",
    "CREDENTIAL_EXPIRED",
    "CREDENTIAL_REVOKED",
    "MAX_ACTOR_LEN",
    "MAX_PER_PAGE",
    "NAME_MAX",
    "RESERVED_PREFIXES",
    "RESERVED_SUBJECTS",
    "TRANSITIONS",
    "Actor",
    "Call",
    "CallLinks",
    "CallManager",
    "CallService",
    "GuestIssuer",
    "Invitation",
    "Link",
    "LinkRefused",
    "MuteState",
    "Participants",
    "Subscription",
]
