"""The keypad: a GPIO matrix scanned through gpiozero, and the entry rules every keypad shares.

At rest every row is driven low and the loop sleeps until a column edge says a key went down; then
scanning drives one row low at a time and reads the columns (pulled up): a held key joins its row to
its column, so that column reads low. A key counts once it is seen in ``debounce_scans`` scans in
a row, and again only after it was seen released as long; one key at a time (a second key held
with the first is ignored, as on a phone keypad).

Entry rules (``KeyEntry``), for the matrix and for a reader's own keys alike: digits collect; ``#``
submits; ``*`` clears; an entry whose last key is older than ``key_timeout_s`` is forgotten before
the next key counts. Nothing here knows any code: a submitted entry goes to the access service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice, OutputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPin

from ..errors import HardwareError
from ..platform import Clock, KeypadConfig
from ._codes import MAX_CODE_LENGTH

log = logging.getLogger(__name__)

IDLE_AFTER_SCANS = 20  # back to sleeping on the edges after this many scans without a key


class KeyEntry:
    """Collects keys into an entry; ``submit`` gets each entry ended with ``#`` (the secret: never logged)."""

    def __init__(self, clock: Clock, timeout_s: float, submit: Callable[[str], None],
                 touched: Callable[[], None] = lambda: None) -> None:
        self.clock = clock
        self.timeout_s = timeout_s
        self.submit = submit
        self.touched = touched
        self._digits: list[str] = []
        self._last: float | None = None

    @property
    def pending(self) -> int:
        """How many digits are waiting (for the installer page: never which)."""
        return len(self._digits)

    def key(self, key: str) -> None:
        now = self.clock.monotonic()
        if self._last is not None and now - self._last > self.timeout_s:
            self._digits.clear()  # a half-typed code left at the door is not the next visitor's prefix
        self._last = now
        self.touched()
        if key == "*":
            self._digits.clear()
        elif key == "#":
            entry = "".join(self._digits)
            self._digits.clear()
            if entry:
                self.submit(entry)
        elif key.isdigit() and len(key) == 1:
            # Past the longest code the entry can only be wrong; keep counting so it fails as one.
            if len(self._digits) <= MAX_CODE_LENGTH:
                self._digits.append(key)
        else:
            log.debug("keypad: ignored key %r", key)

    def type(self, keys: str) -> None:
        for k in keys:
            self.key(k)


class MatrixKeypad:
    """A row/column keypad on GPIO pins; ``run`` scans it until cancelled."""

    def __init__(self, cfg: KeypadConfig, factory: Factory, clock: Clock, on_key: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.clock = clock
        self.on_key = on_key
        self.rows: list[OutputDevice] = []
        self.cols: list[DigitalInputDevice] = []
        try:
            for pin in cfg.rows:
                # Idle high (off); a scanned row is driven low (on).
                self.rows.append(OutputDevice(f"GPIO{pin}", active_high=False, initial_value=False,
                                              pin_factory=factory))
            for pin in cfg.cols:
                self.cols.append(DigitalInputDevice(f"GPIO{pin}", pull_up=True, bounce_time=None,
                                                    pin_factory=factory))
        except Exception as e:
            self.close()
            raise HardwareError(f"access.keypad: cannot use its pins ({e}); is another program using them?") from e
        self._seen: str | None = None  # what the last scan saw
        self._count = 0  # scans in a row that saw it
        self._down: str | None = None  # the key counted as held

    def scan(self) -> str | None:
        """One pass over the matrix: the first key found held, or None."""
        found: str | None = None
        for r, row in enumerate(self.rows):
            row.on()
            try:
                for c, col in enumerate(self.cols):
                    if found is None and col.is_active:
                        found = self.cfg.keys[r][c]
            finally:
                row.off()
        return found

    def step(self) -> None:
        key = self.scan()
        if key == self._seen:
            self._count += 1
        else:
            self._seen, self._count = key, 1
        if self._count < self.cfg.debounce_scans or key == self._down:
            return
        if key is not None and self._down is not None:
            return  # another key while one is held: wait for the release
        self._down = key
        if key is not None:
            self.on_key(key)

    async def run(self) -> None:
        """Sleep on the column edges while nobody touches the keypad; scan while someone does.

        At rest every row is driven low, so any key pulls its column low and the edge wakes the loop;
        then the rows are scanned one at a time every ``scan_ms`` until no key has been seen for
        ``IDLE_AFTER_SCANS`` scans. An idle keypad costs no CPU at all."""
        period = self.cfg.scan_ms / 1000
        loop = asyncio.get_running_loop()
        touched = asyncio.Event()

        def edge() -> None:  # gpiozero's callback thread (lgpio), or the caller's (mock pins)
            loop.call_soon_threadsafe(touched.set)

        for col in self.cols:
            col.when_activated = edge
        try:
            while True:
                self._rows(True)
                touched.clear()
                if not any(col.is_active for col in self.cols):
                    await touched.wait()
                self._rows(False)
                quiet = 0
                while quiet < IDLE_AFTER_SCANS:
                    self.step()
                    quiet = 0 if (self._seen is not None or self._down is not None) else quiet + 1
                    await self.clock.sleep(period)
        finally:
            for col in self.cols:
                col.when_activated = None

    def _rows(self, on: bool) -> None:
        for row in self.rows:
            row.on() if on else row.off()

    def close(self) -> None:
        for dev in [*self.rows, *self.cols]:
            try:
                dev.close()
            except Exception:
                log.exception("could not close a keypad pin")


class _RowPin(MockPin):  # type: ignore[misc]
    """A mock row pin that, like the wires of a real matrix, pulls down the columns of its held keys."""

    matrix: MockMatrix | None = None

    def _change_state(self, value: bool) -> bool:
        changed = bool(super()._change_state(value))
        if self.matrix is not None:
            self.matrix.update()
        return changed


class MockMatrix:
    """The keys of a simulated keypad, for tests, ``panel sim keypad`` and the installer page.

    ``install`` must run before the keypad's devices are made on the ``MockFactory``: it makes the row
    pins :class:`_RowPin`, so scanning through gpiozero reads held keys exactly as it would on the wall."""

    def __init__(self, cfg: KeypadConfig, factory: MockFactory) -> None:
        self.cfg = cfg
        self.factory = factory
        self.held: set[tuple[int, int]] = set()
        self.row_pins: list[Any] = []
        for pin in cfg.rows:
            p = factory.pin(f"GPIO{pin}", pin_class=_RowPin)
            if not isinstance(p, _RowPin):
                raise RuntimeError(f"GPIO{pin} was made before the mock keypad; install it first")
            p.matrix = self
            self.row_pins.append(p)
        self.col_pins = [factory.pin(f"GPIO{pin}") for pin in cfg.cols]

    def where(self, key: str) -> tuple[int, int]:
        for r, legend in enumerate(self.cfg.keys):
            if key in legend:
                return r, legend.index(key)
        raise KeyError(key)

    def press(self, key: str) -> None:
        self.held.add(self.where(key))
        self.update()

    def release(self, key: str) -> None:
        self.held.discard(self.where(key))
        self.update()

    def update(self) -> None:
        for c, col in enumerate(self.col_pins):
            if col.function != "input":
                continue
            low = any((r, c) in self.held and not row.state for r, row in enumerate(self.row_pins)
                      if row.function == "output")
            col.drive_low() if low else col.drive_high()
