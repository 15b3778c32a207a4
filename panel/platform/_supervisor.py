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
from typing import Literal

from ._clock import Clock, LoopClock

log = logging.getLogger(__name__)

State = Literal["starting", "running", "restarting", "finished", "stopped", "failed"]


@dataclass
class SupervisedTask:
    name: str
    factory: Callable[[], Awaitable[None]]
    max_restarts: int
    window_s: float
    backoff_s: float
    max_backoff_s: float
    task: asyncio.Task[None] | None = None
    crashes: list[float] = field(default_factory=list)  # monotonic times of crashes within the window
    state: State = "starting"
    last_error: str | None = None
    starts: int = 0


class Supervisor:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or LoopClock()
        self.tasks: list[SupervisedTask] = []
        self.failed = asyncio.Event()
        self.failure: str | None = None

    def start(self, name: str, factory: Callable[[], Awaitable[None]], *, max_restarts: int = 5,
              window_s: float = 60.0, backoff_s: float = 0.1, max_backoff_s: float = 10.0) -> SupervisedTask:
        """Run ``factory()`` as a task; restart it when it raises, up to ``max_restarts`` per ``window_s``."""
        if any(c.name == name for c in self.tasks):
            raise ValueError(f"a component named {name!r} is already supervised")
        comp = SupervisedTask(name, factory, max_restarts, window_s, backoff_s, max_backoff_s)
        comp.task = asyncio.create_task(self._run(comp), name=f"component:{name}")
        self.tasks.append(comp)
        return comp

    async def _run(self, comp: SupervisedTask) -> None:
        backoff = comp.backoff_s
        while True:
            comp.state = "running"
            comp.starts += 1
            started = self.clock.monotonic()
            try:
                await comp.factory()
                comp.state = "finished"
                return
            except asyncio.CancelledError:
                comp.state = "stopped"
                raise
            except Exception as e:
                comp.last_error = f"{type(e).__name__}: {e}"
                now = self.clock.monotonic()
                if now - started >= comp.window_s:
                    # It ran well for a whole window: this crash is news, not a crash loop.
                    backoff = comp.backoff_s
                comp.crashes = [t for t in comp.crashes if now - t < comp.window_s] + [now]
                if len(comp.crashes) > comp.max_restarts:
                    comp.state = "failed"
                    self.failure = (f"component {comp.name} failed {len(comp.crashes)} times in "
                                    f"{comp.window_s:g} s; last error: {comp.last_error}")
                    log.critical(self.failure, exc_info=True, extra={"component": comp.name})
                    self.failed.set()
                    return
                comp.state = "restarting"
                delay = backoff * (0.5 + random.random())
                log.error("component %s crashed, restarting in %.2f s", comp.name, delay, exc_info=True,
                          extra={"component": comp.name, "error": comp.last_error,
                                 "crashes": len(comp.crashes)})
                await self.clock.sleep(delay)
                backoff = min(backoff * 2, comp.max_backoff_s)

    def status(self) -> dict[str, dict[str, object]]:
        return {c.name: {"state": c.state, "restarts": max(0, c.starts - 1), "crashes": len(c.crashes),
                         "last_error": c.last_error}
                for c in self.tasks}

    async def cancel(self, *names: str, timeout_s: float = 0.5) -> None:
        """Cancel the named tasks (their owner is stopping) and wait up to ``timeout_s`` for them together."""
        tasks = []
        for comp in self.tasks:
            if comp.name in names and comp.task is not None and not comp.task.done():
                comp.task.cancel()
                tasks.append(comp.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                log.error("task %s did not stop within %.2f s", task.get_name(), timeout_s)

    async def stop(self, timeout_s: float = 1.0, total_s: float | None = None) -> None:
        """Cancel components in reverse start order, each given ``timeout_s`` to finish and all of
        them together at most ``total_s``: a stubborn component must not eat the stop budget."""
        deadline = None if total_s is None else time.monotonic() + total_s
        for comp in reversed(self.tasks):
            task = comp.task
            if task is None or task.done():
                continue
            task.cancel()
            wait_s = timeout_s if deadline is None else max(0.0, min(timeout_s, deadline - time.monotonic()))
            done, _ = await asyncio.wait({task}, timeout=wait_s)
            if not done:
                log.error("component %s did not stop within %.2f s", comp.name, wait_s,
                          extra={"component": comp.name})
            elif not task.cancelled() and task.exception() is not None:
                log.error("component %s failed while stopping", comp.name, exc_info=task.exception(),
                          extra={"component": comp.name})
