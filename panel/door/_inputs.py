"""Debounced inputs with a stuck-input guard, timed by our clock (gpiozero's mock pins do not bounce).

A GPIO edge (delivered on gpiozero's thread) only hops onto the event loop; there the input waits
until the raw level has been steady for ``debounce_ms`` before it counts. An input that stays active
past ``stuck_s`` is reported stuck and ignored until it goes inactive again, so a jammed call button
does not ring forever and a jammed exit button does not keep the door open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gpiozero import DigitalInputDevice

from ..platform import Clock, InputConfig, TimerHandle

log = logging.getLogger(__name__)


class DebouncedInput:
    def __init__(self, name: str, device: DigitalInputDevice, cfg: InputConfig, clock: Clock,
                 loop: asyncio.AbstractEventLoop, on_change: Callable[[bool], None],
                 on_stuck: Callable[[bool, float], None] | None = None) -> None:
        self.name = name
        self.device = device
        self.cfg = cfg
        self.clock = clock
        self.loop = loop
        self.on_change = on_change
        self.on_stuck = on_stuck
        self._active_level = 1 if cfg.active == "high" else 0
        self._settle_timer: TimerHandle | None = None
        self._stuck_timer: TimerHandle | None = None
        self.stuck = False
        self.changes = 0
        # The level at start is the resting state, not an event: a button held during boot is no press.
        self.active = self.raw_active()
        self.since = clock.monotonic()
        if self.active:
            self._arm_stuck()
        device.when_activated = self._edge
        device.when_deactivated = self._edge

    def raw_active(self) -> bool:
        return bool(self.device.pin.state) == bool(self._active_level)

    def _edge(self) -> None:  # gpiozero's thread (or the caller's, with mock pins)
        try:
            self.loop.call_soon_threadsafe(self._on_edge)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _on_edge(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        delay = self.cfg.debounce_ms / 1000
        if delay <= 0:
            self._settle_timer = None
            self._settle()
        else:
            self._settle_timer = self.clock.call_at(self.clock.monotonic() + delay, self._settle)

    def _settle(self) -> None:
        self._settle_timer = None
        level = self.raw_active()
        if level == self.active:
            return  # a bounce that came back
        self.active = level
        self.since = self.clock.monotonic()
        if self._stuck_timer is not None:
            self._stuck_timer.cancel()
            self._stuck_timer = None
        if not level and self.stuck:
            self.stuck = False
            if self.on_stuck is not None:
                self.on_stuck(False, 0.0)
            return  # the release of a stuck input is its recovery, not an event of its own
        if level:
            self._arm_stuck()
        self.changes += 1
        self.on_change(level)

    def _arm_stuck(self) -> None:
        if self.cfg.stuck_s is None:
            return
        self._stuck_timer = self.clock.call_at(self.since + self.cfg.stuck_s, self._became_stuck)

    def _became_stuck(self) -> None:
        self._stuck_timer = None
        if self.active and not self.stuck:
            self.stuck = True
            log.warning("input %s stuck active", self.name)
            if self.on_stuck is not None:
                self.on_stuck(True, self.clock.monotonic() - self.since)

    def close(self) -> None:
        self.device.when_activated = None
        self.device.when_deactivated = None
        for t in (self._settle_timer, self._stuck_timer):
            if t is not None:
                t.cancel()
