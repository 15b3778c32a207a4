"""Keeps the on-device history bounded: the access log and the delivered event history.

The call log trims itself (panel/calls/_service.py) and the outbox bounds what is still undelivered
(panel/link/_outbox.py). What is left is history that has served its purpose: access-log rows and events
the backend has acknowledged, of which the newest ``storage.history_max_rows`` are kept for the
local API's event pull and logs (2N keeps 500; we keep far more because SQLite makes it cheap).
Without a webhook endpoint nothing is ever "delivered", so then events are history as they are written.
"""

from __future__ import annotations

import asyncio
import logging

from ._clock import Clock
from ._store import Store, Tx

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0


def prune(tx: Tx, keep: int, *, events_are_history: bool) -> tuple[int, int]:
    """Delete all but the newest ``keep`` rows of each history; returns (access rows, events) removed."""
    access = tx.execute(
        "DELETE FROM access_log WHERE seq <= (SELECT max(seq) FROM access_log) - ?", (keep,)).rowcount
    done = "" if events_are_history else " AND delivered IS NOT NULL"
    events = tx.execute(
        f"DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ?{done}", (keep,)).rowcount
    return access, events


async def keep_history_bounded(store: Store, keep: int, *, events_are_history: bool,
                               interval_s: float = INTERVAL_S, clock: Clock | None = None) -> None:
    while True:
        access, events = await store.write(lambda tx: prune(tx, keep, events_are_history=events_are_history))
        if access or events:
            log.info("history trimmed", extra={"access_rows": access, "events": events, "keep": keep})
        await (clock.sleep(interval_s) if clock is not None else asyncio.sleep(interval_s))
