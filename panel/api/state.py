"""What the API keeps for the panel's whole life, beside the credentials (``ApiAuth``).

Made with the first app for a panel (tests make several apps for one panel) and held by the composition
root as ``Panel.api_state``: routes never store anything on the panel themselves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..platform import Config, SlotLimits, Slots


@dataclass
class ApiState:
    streams: Slots  # event streams and long-polls open now (api.streams: total, per credential and address)
    test_tone: asyncio.Task[None] | None = None  # the installer's speaker test, while it plays

    @classmethod
    def for_config(cls, cfg: Config) -> ApiState:
        s = cfg.api.streams
        return cls(streams=Slots(SlotLimits(total=s.total, per_credential=s.per_credential, per_address=s.per_address,
                                            reserved_installer=s.reserved_installer,
                                            reserved_residents=s.reserved_residents), "event streams and long-polls"))
