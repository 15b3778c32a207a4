"""What the person at the keypad sees: the status light answers every entry.

A release shows itself already (the door light, and the door tone through ``panel/door/_feedback.py``);
a refusal flashes the status light three times, a block blinks it until the block ends. Then the
light is steady again, as it is while the panel runs. A duress PIN shows as an ordinary release.
"""

from __future__ import annotations

import logging
from typing import Any

from ..platform import Clock, LightConfig, TimerHandle
from ._service import Outcome

log = logging.getLogger(__name__)

REFUSED = (0.1, 0.1, 3)  # on, off, times
BLOCKED = (0.25, 0.25)


class AccessFeedback:
    def __init__(self, cfgs: list[LightConfig], leds: dict[str, Any], clock: Clock, block_s: float) -> None:
        self.leds = [leds[c.id] for c in cfgs if c.role == "status"]
        self.clock = clock
        self.block_s = block_s
        self._restore: TimerHandle | None = None
        self.shown: str | None = None  # the last pattern shown (for tests and the installer page)

    def __call__(self, outcome: Outcome) -> None:
        if outcome.outcome == "granted":
            return
        if self._restore is not None:
            self._restore.cancel()
        if outcome.outcome == "blocked":
            on, off = BLOCKED
            for led in self.leds:
                led.blink(on_time=on, off_time=off, n=None)
            until = outcome.block_left_s if outcome.block_left_s is not None else self.block_s
            self.shown = "blocked"
        else:
            on, off, n = REFUSED
            for led in self.leds:
                led.blink(on_time=on, off_time=off, n=n)
            until = (on + off) * n
            self.shown = "refused"
        self._restore = self.clock.call_at(self.clock.monotonic() + until, self._steady)

    def _steady(self) -> None:
        self._restore = None
        self.shown = None
        for led in self.leds:
            led.on()

    def close(self) -> None:
        if self._restore is not None:
            self._restore.cancel()
            self._restore = None
