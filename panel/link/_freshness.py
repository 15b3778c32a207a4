"""Is a command fresh? Without trusting a wall clock that may be years off at boot.

A Raspberry Pi has no real-time clock: until NTP has synchronised, ``time.time()`` is whatever the
last shutdown saved (or 1970). So freshness has two modes (docs/mqtt.md, "Freshness"):

- clock synchronised: the command's absolute expiry ``exp`` must lie in the future and no further
  ahead than ``command_max_age_s`` (+ a small skew allowance), so a captured command is useless
  after at most that long;
- clock not synchronised: ``exp`` means nothing, so the command must echo a nonce the panel
  publishes (retained) on ``state/freshness``. Nonces are random, new at every boot and rotated
  every ``command_max_age_s`` by the *monotonic* clock; the current and the previous one are
  accepted. A command captured earlier (in this boot or before a reboot) carries a nonce the panel
  no longer accepts.

In both modes a nonce that is present must be accepted, and ids are single-use (panel/link/_replay.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..platform import Clock
from ._commands import CommandRefused

log = logging.getLogger(__name__)

# Commands may say they expire a little further ahead than command_max_age_s: the backend's clock
# and ours differ by this much at most once both are synchronised.
CLOCK_SKEW_S = 5.0

TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"
STA_UNSYNC = 0x0040
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


class ClockSync(Protocol):
    """Whether the wall clock has been synchronised (NTP/GPS) since boot."""

    def synchronized(self) -> bool: ...


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; the trailing padding is part of the kernel ABI.
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


class KernelClockSync:
    """The kernel's NTP status (adjtimex with modes=0 only reads), or systemd-timesyncd's flag file.

    systemd-timesyncd, chrony and ntpd all clear STA_UNSYNC once they discipline the clock;
    timesyncd also touches ``/run/systemd/timesync/synchronized`` (on tmpfs, so it means "this boot").
    Either is enough. Reading costs one system call, so it is asked at every command.
    """

    def __init__(self, flag: Path = TIMESYNCD_FLAG) -> None:
        self.flag = flag
        self._adjtimex: Any = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            self._adjtimex = libc.adjtimex
        except (OSError, AttributeError):
            log.warning("adjtimex is not available; clock synchronisation is read from %s only", flag)

    def kernel_synchronized(self) -> bool | None:
        if self._adjtimex is None:
            return None
        tx = _Timex()
        state = self._adjtimex(ctypes.byref(tx))
        if state < 0:
            return None
        return state != TIME_ERROR and not tx.status & STA_UNSYNC

    def synchronized(self) -> bool:
        return bool(self.kernel_synchronized()) or self.flag.exists()


class Nonces:
    """Random nonces, new at every start and rotated every ``period_s`` of monotonic time."""

    def __init__(self, clock: Clock, period_s: float, token: Callable[[], str] = lambda: secrets.token_hex(16)) -> None:
        self.clock = clock
        self.period_s = period_s
        self._token = token
        self.current = token()
        self.previous: str | None = None
        self._next = clock.monotonic() + period_s

    def roll(self) -> bool:
        """Rotate if a period has passed; True if the nonce changed."""
        now = self.clock.monotonic()
        if now < self._next:
            return False
        # Idle for more than a period: the previous nonce is too old to keep as well.
        self.previous = self.current if now < self._next + self.period_s else None
        self.current = self._token()
        self._next = now + self.period_s
        return True

    def live(self, nonce: str) -> bool:
        """Whether a command carrying ``nonce`` could still pass (replay pruning; public values, so no
        constant-time comparison is needed here)."""
        self.roll()
        return nonce == self.current or nonce == self.previous

    def retire(self) -> None:
        """Draw a new nonce now and accept no earlier one (spent ids evicted under pressure)."""
        self.previous = None
        self.current = self._token()
        self._next = self.clock.monotonic() + self.period_s

    def expires_in(self) -> float:
        return max(0.0, self._next - self.clock.monotonic())

    def accepts(self, nonce: str) -> bool:
        self.roll()
        # As bytes: compare_digest refuses str with non-ASCII characters (TypeError) instead of
        # answering "no"; surrogatepass so that any text at all compares.
        given = nonce.encode("utf-8", "surrogatepass")
        return secrets.compare_digest(given, self.current.encode()) or (
            self.previous is not None and secrets.compare_digest(given, self.previous.encode()))


def check_fresh(exp: float | None, nonce: str | None, *, synced: bool, now: float, nonces: Nonces,
                max_age_s: float) -> None:
    """Raise ``CommandRefused`` unless the command is fresh by the rules above."""
    if nonce is not None and not nonces.accepts(nonce):
        raise CommandRefused("stale_nonce", "the nonce is not the panel's current one (it rotates every "
                             f"{max_age_s:g} s and at every restart); read state/freshness and send a new command")
    if not synced:
        if nonce is None:
            raise CommandRefused("clock_unsynced", "the panel's clock is not synchronised yet, so exp cannot be "
                                 "checked; echo the nonce from the retained state/freshness topic")
        return
    if exp is None:
        if nonce is None:
            raise CommandRefused("missing_expiry", "a command needs exp (absolute expiry, Unix seconds) or the "
                                 "panel's current nonce")
        return
    if exp <= now:
        raise CommandRefused("expired", f"the command expired {now - exp:.3f} s ago (exp {exp:.3f}, panel time "
                             f"{now:.3f}); send a new one with a new id")
    if exp > now + max_age_s + CLOCK_SKEW_S:
        raise CommandRefused("expiry_too_far", f"exp is {exp - now:.3f} s ahead; at most {max_age_s:g} s "
                             "(mqtt.command_max_age_s) is allowed, so captured commands go stale quickly")
