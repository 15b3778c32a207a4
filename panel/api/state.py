"""What the API keeps for the panel's whole life, beside the credentials (``ApiAuth``).

Made with the first app for a panel (tests make several apps for one panel) and held by the composition
root as ``Panel.api_state``: routes never store anything on the panel themselves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class ApiState:
    open_streams: int = 0  # event streams and long-polls open now (bounded by logs.MAX_WAITERS)
    test_tone: asyncio.Task[None] | None = None  # the installer's speaker test, while it plays
