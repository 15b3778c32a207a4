"""The event journal: every event is committed to the store, then fanned out in-process.

``record`` submits the write at once (store order is submission order) and returns a future that
resolves when the event is on disk. Callers that must not act before the record is durable (an
unlock) await it; callers in synchronous GPIO callbacks may fire and forget: the write is already
queued, failures are logged, and ``flush`` waits for every outstanding write at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..events import EVENT_TYPES, EventData
from ._clock import Clock
from ._config import Config, PanelInfo
from ._store import EventRow, Store, Tx

log = logging.getLogger(__name__)

Subscriber = Callable[[EventRow], None]
Extra = Callable[[Tx, str], None]


def read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return uuid.uuid4().hex



def _loggable(data: dict[str, Any]) -> dict[str, Any]:
    """The event's data for the log line, without the query of any URL in it: a call.snapshot's URL is
    signed (``?exp=&sig=``) and opens a visitor's picture for days; the event itself still carries it."""
    return {k: v.partition("?")[0] + "?..." if isinstance(v, str) and "?" in v and v.startswith(("/", "http"))
            else v for k, v in data.items()}

class Journal:
    def __init__(self, store: Store, clock: Clock, panel: PanelInfo, boot_id: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.panel = panel
        self.boot_id = boot_id or read_boot_id()
        self._subscribers: list[Subscriber] = []
        self._pending: set[asyncio.Future[EventRow]] = set()
        # Records may be made from plain callbacks; their futures belong to the daemon's loop.
        self.loop = asyncio.get_running_loop()

    def reconfigure(self, cfg: Config) -> None:
        """panel.name or panel.board changed: every event from now on carries the new name."""
        self.panel = cfg.panel

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def record(self, data: EventData, *, key: str = "panel", extra: Extra | None = None) -> asyncio.Future[EventRow]:
        """Commit one event (and ``extra`` rows in the same transaction); resolves once durable."""
        type_ = EVENT_TYPES[type(data)]
        event_id = str(uuid.uuid4())
        payload = data.model_dump(mode="json")
        payload["panel"] = {"id": self.panel.id, "name": self.panel.name}
        time, mono, boot = self.clock.wall(), self.clock.monotonic(), self.boot_id

        def write(tx: Tx) -> EventRow:
            seq = tx.insert_event(id=event_id, type=type_, key=key, time=time, boot=boot, mono=mono, data=payload)
            if extra is not None:
                extra(tx, event_id)
            return EventRow(seq, event_id, type_, key, time, boot, mono, payload, None)

        fut = asyncio.wrap_future(self.store.submit_write(write), loop=self.loop)
        self._pending.add(fut)
        fut.add_done_callback(self._written)
        return fut

    def _written(self, fut: asyncio.Future[EventRow]) -> None:
        self._pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.critical("event not recorded: %s", exc, extra={"error": repr(exc)})
            return
        row = fut.result()
        log.info("event %s", row.type, extra={"event": row.type, "event_id": row.id, "data": _loggable(row.data)})
        for fn in list(self._subscribers):
            try:
                fn(row)
            except Exception:
                log.exception("event subscriber failed")

    async def flush(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
