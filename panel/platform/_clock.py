"""Time behind a narrow interface, so timer logic runs against a controllable clock in tests.

Every timing decision in the panel (debounce, relay hold, held-open, timeouts) is taken in
*monotonic* seconds. Wall-clock time is only ever recorded, never trusted for decisions: a Pi has
no RTC and its wall clock may be years off until NTP has synchronised.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, overload


@overload
def iso8601(t: float) -> str: ...


@overload
def iso8601(t: None) -> None: ...


def iso8601(t: float | None) -> str | None:
    """The one timestamp format on every wire and page: UTC, milliseconds, "Z" (2026-11-30T05:02:34.566Z)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; the time base for every decision."""

    def wall(self) -> float:
        """Seconds since the epoch, for records only."""

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (on the event loop) once ``monotonic()`` reaches ``when``."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (backoffs, periodic work): a fake clock moves it in tests."""


class LoopClock:
    """The real clock: asyncio's loop time is ``time.monotonic``."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        # loop.time() is time.monotonic() for the default loop; convert anyway in case it is not.
        delay = when - time.monotonic()
        return self.loop.call_at(self.loop.time() + max(0.0, delay), callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(order=True)
class _FakeTimer:
    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to; timers fire in order inside ``advance``."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._timers: list[_FakeTimer] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(when, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        """Resolves when ``advance`` moves the clock past now + ``seconds``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_at(self._now + max(0.0, seconds), wake)
        try:
            await fut
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due, each at its own instant."""
        target = self._now + seconds
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.when)
            timer.callback()
        self._now = target

    def step_wall(self, seconds: float) -> None:
        """The wall clock jumps (NTP arriving or correcting, a boot without an RTC); monotonic time does not."""
        self._wall_offset += seconds

    def pending(self) -> int:
        return sum(1 for t in self._timers if not t.cancelled)
