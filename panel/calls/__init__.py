"""Calls: the call state machine and call log, the participant list and call links.
"""


from ._links import CallLinks, Link, LinkRefused, Subscription
from ._participants import NAME_MAX, Participants
from ._service import MAX_ACTOR_LEN, MAX_PER_PAGE, TRANSITIONS, Call, CallManager

__all__ = [
    "Call",
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
