"""The door: the door service that decides every release, the relays, debounced inputs, status
lights and the feedback they show.
"""


from ._feedback import ToneFeedback, ToneName
from ._inputs import DebouncedInput
from ._lights import Lights
from ._relay import GUARD_MARGIN_S, Relay
from ._request import ROLES, Requester, UnlockRequest
from ._service import Door, Grant
from ._wire import HoldFields, OpenFields, WireModel

__all__ = [
    "DebouncedInput",
    "Door",
    "GUARD_MARGIN_S",
    "Grant",
    "HoldFields",
    "Lights",
    "OpenFields",
    "ROLES",
    "Relay",
    "Requester",
    "ToneFeedback",
    "ToneName",
    "UnlockRequest",
    "WireModel",
]
