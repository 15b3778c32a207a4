"""One lifecycle for every part of the daemon: start in a declared order, stop in reverse within one budget.

A component is anything the composition root (``panel/daemon.py``) starts. Stopping has two phases:

1. ``stopping(reason)`` on every started component, in *start* order, synchronously and at once: this is
   where a component refuses new work and reaches its safe state (the door's relays go off here, and the
   door starts first, so nothing can come before it);
2. ``stop()`` on every started component in *reverse* start order, each awaited for at most its own
   ``stop_cap_s`` and never past what is left of the shared budget, so no slow part can push the stop
   past the budget or keep a later (more fundamental) part from closing.

``health()`` is what the component says about itself for ``/api/v1/health`` and the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopReason:
    """Why the daemon stops: ``failed`` (a component failed, or the start did) locks with reason ``error``."""

    text: str
    failed: bool = False


@runtime_checkable
class Component(Protocol):
    name: str
    stop_cap_s: float

    async def start(self) -> None: ...

    def stopping(self, reason: StopReason) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class BaseComponent:
    """No-op defaults, so a component implements only the hooks it needs."""

    name: str = "component"
    stop_cap_s: float = 0.5

    async def start(self) -> None:
        return None

    def stopping(self, reason: StopReason) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"ok": True}


@dataclass
class Hooks(BaseComponent):
    """A component made of callables: for parts whose classes predate the lifecycle or need no class."""

    name: str = "component"
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stopping: Callable[[StopReason], None] | None = None
    on_stop: Callable[[], Awaitable[None]] | Callable[[], None] | None = None
    on_health: Callable[[], dict[str, Any]] | None = None
    stop_cap_s: float = 0.5

    async def start(self) -> None:
        if self.on_start is not None:
            await self.on_start()

    def stopping(self, reason: StopReason) -> None:
        if self.on_stopping is not None:
            self.on_stopping(reason)

    async def stop(self) -> None:
        if self.on_stop is not None:
            result = self.on_stop()
            if result is not None:
                await result

    def health(self) -> dict[str, Any]:
        return self.on_health() if self.on_health is not None else {"ok": True}


@dataclass
class Lifecycle:
    """The started components, in start order, and the one way to stop them."""

    components: list[Component] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    async def start(self, component: Component) -> Component:
        """Start one component; it is stopped with the others even when a later one fails to start."""
        if any(c.name == component.name for c in self.components):
            raise ValueError(f"a component named {component.name!r} is started already")
        t0 = time.monotonic()
        await component.start()
        self.timings_ms[component.name] = round((time.monotonic() - t0) * 1000, 3)
        self.components.append(component)
        return component

    def add_started(self, component: Component) -> Component:
        """Register a component whose construction started it (the synchronous door core)."""
        if any(c.name == component.name for c in self.components):
            raise ValueError(f"a component named {component.name!r} is started already")
        self.components.append(component)
        return component

    def names(self) -> list[str]:
        return [c.name for c in self.components]

    def stopping(self, reason: StopReason) -> None:
        for comp in self.components:
            try:
                comp.stopping(reason)
            except Exception:
                # One part failing to reach its safe state must not keep the next from reaching its own.
                log.exception("%s failed while stopping", comp.name, extra={"component": comp.name})

    async def stop(self, deadline: float) -> None:
        """Reverse order; each within ``min(stop_cap_s, what is left until deadline)`` (monotonic seconds)."""
        for comp in reversed(self.components):
            left = max(0.05, min(comp.stop_cap_s, deadline - time.monotonic()))
            try:
                await asyncio.wait_for(comp.stop(), left)
            except TimeoutError:
                log.error("%s did not stop within %.2f s", comp.name, left, extra={"component": comp.name})
            except Exception:
                log.exception("%s did not stop cleanly", comp.name, extra={"component": comp.name})
        self.components.clear()

    def health(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for comp in self.components:
            try:
                out[comp.name] = comp.health()
            except Exception as e:
                out[comp.name] = {"ok": False, "error": type(e).__name__}
        return out
