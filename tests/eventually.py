"""The one way a test waits for something to happen: poll a predicate until it holds or time runs out.

A test asserts on state reached by other tasks, threads or processes; a fixed ``sleep`` would either
be too short on a loaded machine (flaky) or too long everywhere else (slow). ``eventually`` returns
as soon as the predicate holds and, on timeout, fails with what it waited for and the state worth
seeing. Sleeps that *are* the stimulus (holding a button for 80 ms) are not waits and stay sleeps.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL_S = 0.01


def _failure(what: str, timeout: float, last: object, detail: Callable[[], object] | None) -> AssertionError:
    message = f"{what} not reached within {timeout:g} s (last: {last!r})"
    if detail is not None:
        message += f"; {detail()}"
    return AssertionError(message)


async def eventually(predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, what: str = "condition", *,
                     interval: float = INTERVAL_S, detail: Callable[[], object] | None = None) -> T:
    """The predicate's first truthy result, polled every ``interval`` s on the running loop.

    ``predicate`` may return an awaitable (e.g. a page.evaluate) and may raise to fail at once (the
    process under test died); ``detail`` adds the state to show on timeout (the outbox status)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise _failure(what, timeout, result, detail)
        await asyncio.sleep(interval)


def eventually_sync(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition", *,
                    interval: float = INTERVAL_S, detail: Callable[[], object] | None = None) -> T:
    """``eventually`` for code without an event loop (threads, subprocesses): blocks the caller."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _failure(what, timeout, result, detail)
        time.sleep(interval)
