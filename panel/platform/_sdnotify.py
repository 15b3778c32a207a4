"""systemd's notify protocol (READY, STOPPING, WATCHDOG) and the watchdog feeder.

The feeder is a task on the event loop, so a blocked loop stops the pings by itself; on top of that
it only pings while the health check (relay timers on time, guard threads alive) passes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._clock import Clock

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        addr = env.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        self._addr: str | bytes | None = None
        if addr:
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_s: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        if self._sock is None or self._addr is None:
            return
        try:
            self._sock.sendto(message.encode(), self._addr)
        except OSError as e:
            log.warning("sd_notify failed: %s", e)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def feed_watchdog(notifier: Notifier, healthy: Callable[[], bool], clock: Clock | None = None) -> None:
    """Ping the watchdog every half interval while ``healthy()``; a failing check stops the pings."""
    if notifier.watchdog_s is None:
        return
    interval = notifier.watchdog_s / 2
    was_healthy = True
    while True:
        try:
            ok = healthy()
        except Exception:
            log.exception("health check raised; counting it as unhealthy")
            ok = False
        if ok:
            notifier.notify("WATCHDOG=1" if was_healthy else "WATCHDOG=1\nSTATUS=running")
            if not was_healthy:
                log.warning("health check passes again; feeding the systemd watchdog")
        elif was_healthy:
            # STATUS shows in `systemctl status panel` until the watchdog fires.
            notifier.notify("STATUS=unhealthy: a relay timer is late or a relay guard thread died; "
                            "the watchdog is no longer fed")
            log.critical("health check failed; no longer feeding the systemd watchdog, which will restart "
                         "the panel unless the check passes again within %g s", notifier.watchdog_s)
        was_healthy = ok
        await (clock.sleep(interval) if clock is not None else asyncio.sleep(interval))
