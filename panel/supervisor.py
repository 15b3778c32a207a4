"""Supervises the daemon's long-running tasks: restart with backoff, or fail loudly.

A component that crashes more than ``max_restarts`` times within ``window_s`` is fatal: the
supervisor reports the failure and the daemon stops (relays off) and exits non-zero, so systemd
restarts the whole process rather than leaving a half-working panel.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Component:
    name: str
    factory: Callable[[], Awaitable[None]]
    max_restarts: int
    window_s: float
    task: asyncio.Task[None] | None = None
    restarts: list[float] = field(default_factory=list)
    state: str = "starting"
    last_error: str | None = None


class Supervisor:
    def __init__(self) -> None:
        self.components: list[Component] = []
        self.failed = asyncio.Event()
        self.failure: str | None = None

    def start(self, name: str, factory: Callable[[], Awaitable[None]], *, max_restarts: int = 5,
              window_s: float = 60.0) -> Component:
        comp = Component(name, factory, max_restarts, window_s)
        comp.task = asyncio.create_task(self._run(comp), name=f"component:{name}")
        self.components.append(comp)
        return comp

    async def _run(self, comp: Component) -> None:
        backoff = 0.1
        while True:
            comp.state = "running"
            try:
                await comp.factory()
                comp.state = "finished"
                return
            except asyncio.CancelledError:
                comp.state = "stopped"
                raise
            except Exception as e:
                comp.last_error = f"{type(e).__name__}: {e}"
                now = time.monotonic()
                comp.restarts = [t for t in comp.restarts if now - t < comp.window_s] + [now]
                if len(comp.restarts) > comp.max_restarts:
                    comp.state = "failed"
                    self.failure = (f"component {comp.name} failed {len(comp.restarts)} times in "
                                    f"{comp.window_s:g} s; last error: {comp.last_error}")
                    log.critical(self.failure, exc_info=True)
                    self.failed.set()
                    return
                comp.state = "restarting"
                log.error("component %s crashed, restarting", comp.name, exc_info=True,
                          extra={"component": comp.name, "error": comp.last_error})
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 10.0)

    def status(self) -> dict[str, dict[str, object]]:
        return {c.name: {"state": c.state, "restarts": len(c.restarts), "last_error": c.last_error}
                for c in self.components}

    async def stop(self, timeout_s: float = 1.0) -> None:
        """Cancel components in reverse start order, each given a bounded time to finish."""
        for comp in reversed(self.components):
            if comp.task is None or comp.task.done():
                continue
            comp.task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(comp.task), timeout_s)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            except Exception:
                log.exception("component %s failed while stopping", comp.name)
