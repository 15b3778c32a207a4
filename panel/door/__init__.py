"""The door: the door service that decides every release, the relays, debounced inputs, status
lights and the feedback they show.
"""


from ._feedback import ToneFeedback, ToneName
from ._inputs import DebouncedInput
from ._lights import Lights
from ._relay import GUARD_MARGIN_S, Relay
from ._service import Door

__all__ = [
    "DebouncedInput",
    "Door",
    "GUARD_MARGIN_S",
    "Lights",
    "Relay",
    "ToneFeedback",
    "ToneName",
]
