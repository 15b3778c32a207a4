"""Tasks started where nobody can await them: a pin callback, a close that must not hold up its caller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    """Keeps fire-and-forget tasks alive until they finish and logs the ones that fail.

    The event loop holds only weak references to tasks, so a task nobody keeps can be garbage-collected
    before it finishes (a session half closed, an unlock never journaled), and an exception in it is
    reported, if at all, only when it is collected. The owner can also wait for what is still running
    when it stops.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("%s: %s failed", self.owner, what, exc_info=e)

    def __len__(self) -> int:
        return len(self._tasks)

    def cancel(self) -> None:
        """Cancel every task running now (the owner stops)."""
        for task in list(self._tasks):
            task.cancel()

    async def wait(self) -> None:
        """Wait for every task running now (their failures are logged, not raised)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
