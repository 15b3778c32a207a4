"""One door relay that can never stay energised past its maximum on-time.

Three independent layers keep the relay from staying on:
1. every energise sets a deadline no later than ``max_on_s`` and a loop timer that de-energises;
2. a guard thread, independent of the event loop, cuts the relay ``GUARD_MARGIN_S`` after the
   deadline in real time even if the loop is blocked or dead;
3. outside the process: systemd's ExecStopPost runs ``panel safe-state``, and the board's
   pull resistor keeps the coil off while no process drives the pin (see hardware/).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gpiozero import OutputDevice

from ..events import LockReason
from ..platform import Clock, RelayConfig, TimerHandle

log = logging.getLogger(__name__)

GUARD_MARGIN_S = 0.25


class HardCutoff:
    """A thread that switches the device off if it is still on past a real-time deadline."""

    def __init__(self, device: OutputDevice, name: str) -> None:
        self._device = device
        self._name = name
        self._cond = threading.Condition()
        self._deadline: float | None = None  # time.monotonic()
        self._stop = False
        self.tripped = 0
        self._thread = threading.Thread(target=self._run, name=f"relay-guard-{name}", daemon=True)
        self._thread.start()

    def arm(self, seconds: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds + GUARD_MARGIN_S
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None
            self._cond.notify()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._deadline = None
                try:
                    self._device.off()
                except Exception:
                    log.exception("relay guard could not switch %s off", self._name)
                self.tripped += 1
                log.critical("relay %s cut by the guard thread: the event loop missed its deadline", self._name)


class Relay:
    def __init__(self, cfg: RelayConfig, device: OutputDevice, clock: Clock,
                 on_off: Callable[[Relay, LockReason, float], None]) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.device = device
        self.clock = clock
        self._on_off = on_off
        self.energised_at: float | None = None
        self.deadline: float | None = None
        self._timer: TimerHandle | None = None
        self.guard = HardCutoff(device, cfg.id)
        device.off()

    def reconfigure(self, cfg: RelayConfig) -> None:
        """Take changed live keys (hold_s); a release in progress keeps the deadline it was given."""
        assert cfg.id == self.id and cfg.pin == self.cfg.pin, "wiring is never changed at run time"
        self.cfg = cfg

    @property
    def energised(self) -> bool:
        return self.energised_at is not None

    def energise(self, seconds: float) -> float:
        """Energise for ``seconds`` (capped at ``max_on_s``, counted from the first energise)."""
        now = self.clock.monotonic()
        if self.energised_at is None:
            self.energised_at = now
        deadline = min(now + seconds, self.energised_at + self.cfg.max_on_s)
        self.deadline = deadline
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_at(deadline, self._expire)
        # Pin first: arming wakes the guard thread, which would otherwise contend for the GIL
        # on the unlock's critical path. The loop timer above already bounds the pulse.
        self.device.on()
        self.guard.arm(deadline - now)
        return deadline

    def _expire(self) -> None:
        self._timer = None
        if self.energised_at is None:
            return
        at_limit = self.deadline is not None and self.deadline >= self.energised_at + self.cfg.max_on_s - 1e-9
        self.de_energise("max_on" if at_limit and self.cfg.mode == "bistable" else "timeout")

    def de_energise(self, reason: LockReason) -> None:
        self.device.off()
        self.guard.disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.energised_at is None:
            return
        on_s = self.clock.monotonic() - self.energised_at
        self.energised_at = None
        self.deadline = None
        self._on_off(self, reason, on_s)

    def healthy(self) -> bool:
        """False when the loop timer is late or the guard thread died: stop feeding the watchdog."""
        if not self.guard.alive():
            return False
        if self.deadline is not None and self.clock.monotonic() > self.deadline + GUARD_MARGIN_S:
            return False
        return True

    def close(self) -> None:
        self.device.off()
        if self._timer is not None:
            self._timer.cancel()
        self.guard.stop()
