"""The outbox: delivers the journal's undelivered events to the backend's webhook endpoint.

Every event is already on disk (the ``events`` table) before this module sees it; delivery only ever
*marks* rows. The rules (docs/webhooks.md says the same for the backend's engineers):

- Order per key. Events share a key when their order matters to the backend: a call's events (and the
  door releases and openings of that call) carry the call guid, other door events ``door``, the rest
  ``panel``. One key's events go one at a time, in the order they were recorded; the next is sent
  only once the previous one got a 2xx *and* that was marked delivered on disk. Different keys do not
  wait for each other: a call whose event the backend keeps rejecting holds up that call only.
- At least once, de-duplicated by ``webhook-id``. A 2xx is marked delivered (``synchronous=FULL``)
  before anything else of that key moves, so after a crash or restart nothing acknowledged is sent
  again -- except an event whose 2xx arrived in the one commit interval before the process died.
- Failures retry forever with exponential backoff and full jitter, capped at
  ``webhooks.max_backoff_s``; ``Retry-After`` is honoured. A failure of the endpoint as a whole
  (no connection, timeout, 3xx, 408, 429, 502-504) pauses every key; any other status retries that
  key only. 410 Gone disables delivery until ``webhooks.url`` changes (persisted across restarts).
- Bounded: when more than ``storage.outbox_max_events`` events are undelivered, the oldest
  undelivered ``panel.heartbeat`` events are deleted (the newest is kept) and an ``outbox.overflow``
  event says what went; if the bound is still exceeded, no event is deleted: new heartbeats are
  refused until the backlog drains, and health reports ``outbox_full``.

Memory is bounded too: at most ``WINDOW`` events are held, at most ``LANE_CAP`` per key; the rest are
read from the store as the queue drains.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..events import OutboxOverflow, PanelHeartbeat, PanelOnline
from ..platform import Clock, EventRow, Journal, LoopClock, Store, Tx, iso8601
from ._webhooks import Attempt, Sender, describe, endpoint_label

log = logging.getLogger(__name__)

BASE_BACKOFF_S = 0.5
LANE_CAP = 64
WINDOW = 2048
PAGE = 256
# Idle safety net: look for rows that reached the table without passing through the journal.
RESCAN_S = 30.0
SHEDDABLE = ("panel.heartbeat",)
DISABLED_KEY = "webhooks.disabled"


def full_jitter(failures: int, base_s: float, cap_s: float) -> float:
    """A uniformly random delay in [0, min(cap, base * 2**(failures-1))] (AWS's "full jitter")."""
    return random.random() * min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), 32))


@dataclass
class Lane:
    """One key's undelivered events, oldest first, delivered by one worker task."""

    key: str
    queue: deque[EventRow] = field(default_factory=deque)
    # True while ``queue`` holds every undelivered event of this key up to the outbox's cursor;
    # False once some were left in the store (the lane was full), to be read by ``refill``.
    complete: bool = True
    last_seq: int = 0
    refilling: bool = False
    missed: bool = False
    failures: int = 0
    retry_at: float | None = None
    last_error: str | None = None
    task: asyncio.Task[None] | None = None


class Outbox:
    def __init__(self, store: Store, journal: Journal, sender: Sender, *, max_events: int, max_backoff_s: float,
                 max_in_flight: int = 4, base_backoff_s: float = BASE_BACKOFF_S,
                 on_delivered: Callable[[EventRow], None] | None = None, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or LoopClock()
        self.store = store
        self.journal = journal
        self.sender = sender
        self.url = sender.url
        self.max_events = max_events
        self.headroom = max(10, max_events // 100)
        self.max_backoff_s = max_backoff_s
        self.base_backoff_s = base_backoff_s
        self.max_in_flight = max_in_flight
        self.on_delivered = on_delivered
        self.ready = False
        self.ready_event = asyncio.Event()
        self.online_sent = False
        self.backlog = 0
        self.disabled: dict[str, Any] | None = None
        self.full = False
        self.delivered = 0
        self.last_success: float | None = None
        self.last_failure: dict[str, Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self._lanes: dict[str, Lane] = {}
        self._loaded = 0
        self._cursor = 0
        self._base_seq = 0
        self._caught_up = False
        self._scanning = False
        self._dirty = False
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._in_flight = 0
        self._endpoint_failures = 0
        self._endpoint_not_before = 0.0
        self._paused_at = 0.0
        self._marks: list[tuple[int, asyncio.Future[None]]] = []
        self._marker: asyncio.Task[None] | None = None
        self._crash: BaseException | None = None
        self._enforcer: asyncio.Task[None] | None = None
        self._early: list[EventRow] | None = []
        # The last rows shed: a scan or refill that read them just before the delete must not queue them.
        self._shed: set[int] = set()

    # -- the component ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled. Raises (for the supervisor to restart it) if the store fails."""
        self._reset()
        self.disabled, self.full = None, False  # both are decided again from the store
        # Subscribe first and hold what arrives until the count is read: no event is counted twice or missed.
        unsubscribe = self.journal.subscribe(self._on_event)
        try:
            await self._prepare()
            early, self._early = self._early or [], None
            for row in early:
                self._on_event(row)
            self.ready = True
            self.ready_event.set()
            await self._enforce_bound()
            while True:
                if self._crash is not None:
                    raise self._crash
                if self.disabled is None:
                    while not self._caught_up and self._loaded + PAGE <= WINDOW:
                        await self._scan()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), RESCAN_S)
                except TimeoutError:
                    self._caught_up = False
        finally:
            self.ready = False
            self.ready_event.clear()
            unsubscribe()
            tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
            for extra in (self._marker, self._enforcer):
                if extra is not None:
                    tasks.append(extra)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            acknowledged, self._marks = [seq for seq, _ in self._marks], []
            if acknowledged:  # 2xx received while stopping: record it, or it would be sent again
                try:
                    self._submit_marks(acknowledged)
                except Exception:
                    log.exception("could not record %d acknowledged deliveries; they will be sent again",
                                  len(acknowledged))

    async def aclose(self) -> None:
        await self.sender.aclose()

    async def _prepare(self) -> None:
        def q(conn: sqlite3.Connection) -> tuple[int, int, Any]:
            count = conn.execute("SELECT count(*) FROM events WHERE delivered IS NULL").fetchone()[0]
            # Rows up to ``top`` are counted here; the journal subscriber counts the ones after it.
            top = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            row = conn.execute("SELECT value FROM kv WHERE key=?", (DISABLED_KEY,)).fetchone()
            return count, top, row[0] if row else None

        count, top, disabled = await self.store.read(q)
        self.backlog, self._base_seq = count, top
        info = json.loads(disabled) if disabled else None
        if info is not None and info.get("url") == self.url:
            self.disabled = info
            log.critical("webhook delivery is disabled: %s answered 410 Gone at %s; %d events wait in the outbox. "
                         "Set webhooks.url to the backend's current endpoint and restart the panel",
                         endpoint_label(self.url), info.get("at"), count,
                         extra={"webhooks": {**info, "url": endpoint_label(self.url)}})  # its path may hold a token
        elif info is not None:
            await self.store.write(lambda tx: tx.execute("DELETE FROM kv WHERE key=?", (DISABLED_KEY,)))
            log.warning("webhooks.url changed since the old endpoint answered 410 Gone; delivering again",
                        extra={"old": endpoint_label(str(info.get("url"))), "new": endpoint_label(self.url)})
        log.info("outbox ready", extra={"backlog": count, "endpoint": endpoint_label(self.url)})

    # -- finding work ---------------------------------------------------------------------------------
    def _on_event(self, row: EventRow) -> None:
        """Journal subscriber: runs on the loop right after each event is on disk."""
        if self._early is not None:
            self._early.append(row)
            return
        if row.seq > self._base_seq:
            self.backlog += 1
        if self.backlog > self.max_events and not self.full:
            self._schedule_enforce()
        if self.disabled is not None:
            return
        if self._caught_up and row.seq > self._cursor:
            if self._loaded < WINDOW:
                self._admit(row)  # the low-latency path: no read, the worker starts at once
                return
            self._caught_up = False
        elif self._scanning:
            self._dirty = True
        self._wake.set()

    async def _scan(self) -> None:
        self._scanning, self._dirty, self._caught_up = True, False, False
        cursor = self._cursor
        try:
            rows = await self.store.read(lambda c: [EventRow.from_row(r) for r in c.execute(
                "SELECT * FROM events WHERE delivered IS NULL AND seq > ? ORDER BY seq LIMIT ?", (cursor, PAGE))])
        finally:
            self._scanning = False
        for row in rows:
            self._admit(row)
        if len(rows) < PAGE and not self._dirty:
            self._caught_up = True

    def _admit(self, row: EventRow) -> None:
        self._cursor = max(self._cursor, row.seq)
        if row.seq in self._shed:
            return
        lane = self._lanes.get(row.key)
        if lane is None:
            lane = self._lanes[row.key] = Lane(row.key)
        if row.seq <= lane.last_seq:
            return
        if lane.refilling:
            lane.missed = True
            return
        if not lane.complete or len(lane.queue) >= LANE_CAP:
            lane.complete = False
            return
        lane.queue.append(row)
        lane.last_seq = row.seq
        self._loaded += 1
        if lane.task is None:
            lane.task = asyncio.create_task(self._work(lane), name=f"outbox:{lane.key}")
            lane.task.add_done_callback(self._worker_done)

    async def _refill(self, lane: Lane) -> None:
        lane.refilling, lane.missed = True, False
        key, after, upto = lane.key, lane.last_seq, self._cursor
        try:
            rows = await self.store.read(lambda c: [EventRow.from_row(r) for r in c.execute(
                "SELECT * FROM events WHERE delivered IS NULL AND key = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?", (key, after, upto, LANE_CAP))])
        finally:
            lane.refilling = False
        for row in rows:
            if row.seq not in self._shed:
                lane.queue.append(row)
                self._loaded += 1
            lane.last_seq = row.seq
        lane.complete = len(rows) < LANE_CAP and not lane.missed

    # -- delivering -----------------------------------------------------------------------------------
    async def _work(self, lane: Lane) -> None:
        try:
            while True:
                if not lane.queue:
                    if lane.complete:
                        return
                    await self._refill(lane)
                    continue
                row = lane.queue[0]
                attempt = await self._attempt(row)
                if attempt.outcome == "delivered":
                    await self._mark_delivered(row)
                    lane.queue.popleft()
                    self._loaded -= 1
                    lane.failures, lane.last_error = 0, None
                    self._delivered(row)
                elif attempt.outcome == "gone":
                    await self._disable(attempt)
                elif attempt.scope == "event":
                    lane.failures += 1
                    lane.last_error = attempt.detail
                    delay = max(attempt.retry_after_s or 0.0,
                                full_jitter(lane.failures, self.base_backoff_s, self.max_backoff_s))
                    lane.retry_at = self.clock.monotonic() + delay
                    try:
                        await self.clock.sleep(delay)
                    finally:
                        lane.retry_at = None
                # an endpoint-wide failure: the gate in _attempt holds every key back
        finally:
            self._loaded -= len(lane.queue)
            lane.queue.clear()
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._crash = task.exception()
            self._wake.set()

    async def _attempt(self, row: EventRow) -> Attempt:
        async with self._slots:
            await self._gate()
            started = self.clock.monotonic()
            self._in_flight += 1
            try:
                attempt = await self.sender.send(row)
            finally:
                self._in_flight -= 1
            if attempt.outcome == "delivered":
                self._endpoint_failures = 0
            else:
                self._failed(row, attempt, started)
            return attempt

    async def _gate(self) -> None:
        while True:
            if self.disabled is not None:
                await asyncio.Event().wait()  # until cancelled: only a new webhooks.url re-enables
            delay = self._endpoint_not_before - self.clock.monotonic()
            if delay <= 0:
                return
            await self.clock.sleep(delay)

    def _failed(self, row: EventRow, attempt: Attempt, started: float) -> None:
        now = self.clock.monotonic()
        self.last_failure = {"at": iso8601(time.time()), "event": row.id, "type": row.type, "key": row.key,
                             **describe(attempt)}
        if attempt.outcome == "retry" and attempt.scope == "endpoint":
            if started >= self._paused_at:  # not a request already in flight when the last failure paused us
                self._endpoint_failures += 1
                self._paused_at = now
            delay = max(attempt.retry_after_s or 0.0,
                        full_jitter(self._endpoint_failures, self.base_backoff_s, self.max_backoff_s))
            self._endpoint_not_before = max(self._endpoint_not_before, now + delay)
            log.warning("webhook endpoint unavailable: %s; pausing %.2f s", attempt.detail, delay,
                        extra={"endpoint": endpoint_label(self.url), "failures": self._endpoint_failures,
                               "event_id": row.id, **describe(attempt)})
        elif attempt.outcome == "retry":
            log.warning("webhook %s for %s refused: %s; retrying this key later", row.type, row.key, attempt.detail,
                        extra={"event_id": row.id, "key": row.key, **describe(attempt)})

    async def _mark_delivered(self, row: EventRow) -> None:
        """Durably mark one row; marks that queue up while a commit runs share the next one."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._marks.append((row.seq, fut))
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._commit_marks(), name="outbox:marks")
        await fut

    def _submit_marks(self, seqs: list[int]) -> concurrent.futures.Future[None]:
        now = time.time()

        def mark(tx: Tx) -> None:
            tx.execute(f"UPDATE events SET delivered = ? WHERE seq IN ({','.join('?' * len(seqs))})", [now, *seqs])

        return self.store.submit_write(mark)

    async def _commit_marks(self) -> None:
        while self._marks:
            batch, self._marks = self._marks, []
            write = self._submit_marks([seq for seq, _ in batch])
            try:
                # shielded: a stop while this commits must not withdraw it (the 2xx was received)
                await asyncio.shield(asyncio.wrap_future(write))
            except Exception as e:
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            except BaseException:
                for _, f in batch:
                    f.cancel()
                raise
            for _, f in batch:
                if not f.done():
                    f.set_result(None)

    def _delivered(self, row: EventRow) -> None:
        if not self._caught_up:
            self._wake.set()  # room in the window: read more of the backlog
        self.backlog = max(0, self.backlog - 1)
        self.delivered += 1
        self.last_success = time.time()
        if self.full and self.backlog <= self.max_events - self.headroom:
            self.full = False
            log.warning("outbox below its limit again (%d of %d); heartbeats resume", self.backlog, self.max_events)
        if self.on_delivered is not None:
            try:
                self.on_delivered(row)
            except Exception:
                log.exception("delivery callback failed", extra={"event_id": row.id, "type": row.type})

    async def _disable(self, attempt: Attempt) -> None:
        if self.disabled is not None:
            return
        info = {"url": self.url, "at": iso8601(time.time()), "status": attempt.status, "detail": attempt.detail}
        self.disabled = info
        await self.store.write(lambda tx: tx.set_kv(DISABLED_KEY, info))
        log.critical("webhook endpoint %s answered 410 Gone: delivery is DISABLED. Events are kept (%d waiting); "
                     "set webhooks.url to the backend's current endpoint and restart the panel to deliver them",
                     endpoint_label(self.url), self.backlog,
                     extra={"webhooks": {**info, "url": endpoint_label(self.url)}})  # its path may hold a token

    # -- the bound --------------------------------------------------------------------------------------
    def accepting(self, event_type: str) -> bool:
        """False for low-value events while the outbox is over its bound (or delivery is disabled)."""
        return event_type not in SHEDDABLE or (not self.full and self.disabled is None)

    def _schedule_enforce(self) -> None:
        if self._enforcer is None or self._enforcer.done():
            self._enforcer = asyncio.create_task(self._enforce_bound(), name="outbox:bound")
            self._enforcer.add_done_callback(self._worker_done)

    async def _enforce_bound(self) -> None:
        over = self.backlog - self.max_events
        if over <= 0:
            return
        target = over + self.headroom  # leave room, so the overflow event itself does not trip the bound
        marks = ",".join("?" * len(SHEDDABLE))
        limit = target + len(SHEDDABLE) + len(self._lanes)

        def candidates(conn: sqlite3.Connection) -> list[tuple[int, str, float]]:
            newest = {s for (s,) in conn.execute(
                f"SELECT max(seq) FROM events WHERE delivered IS NULL AND type IN ({marks}) GROUP BY type", SHEDDABLE)}
            rows = conn.execute(f"SELECT seq, type, time FROM events WHERE delivered IS NULL AND type IN ({marks}) "
                                "ORDER BY seq LIMIT ?", [*SHEDDABLE, limit]).fetchall()
            return [(r[0], r[1], r[2]) for r in rows if r[0] not in newest]  # the newest of each type stays

        rows = await self.store.read(candidates)
        # From here to the delete's submission nothing awaits: a lane's head may be in flight and is
        # never shed; every other victim leaves the in-memory queues before a worker can take it.
        heads = {lane.queue[0].seq for lane in self._lanes.values() if lane.queue}
        victims = {r[0] for r in rows if r[0] not in heads}
        victims = set(sorted(victims)[:target])
        self._shed = victims
        for lane in self._lanes.values():
            if any(r.seq in victims for r in lane.queue):
                kept = deque(r for r in lane.queue if r.seq not in victims)
                self._loaded -= len(lane.queue) - len(kept)
                lane.queue = kept
        seqs = sorted(victims)

        def delete(tx: Tx) -> list[tuple[int, str, float]]:
            gone: list[tuple[int, str, float]] = []
            for i in range(0, len(seqs), 500):
                chunk = seqs[i:i + 500]
                gone += [(r[0], r[1], r[2]) for r in tx.execute(
                    f"DELETE FROM events WHERE delivered IS NULL AND seq IN ({','.join('?' * len(chunk))}) "
                    "RETURNING seq, type, time", chunk)]
            return gone

        gone = await self.store.write(delete) if seqs else []
        counts: dict[str, int] = {}
        for _seq, type_, _t in gone:
            counts[type_] = counts.get(type_, 0) + 1
        self.backlog = max(0, self.backlog - len(gone))
        still_over = self.backlog > self.max_events
        if not gone and not still_over:
            return
        if still_over:
            self.full = True
            log.error("outbox full: %d undelivered events, limit %d; no door, call or tamper event is dropped, "
                      "but heartbeats are refused until the backlog drains (is the backend down? see "
                      "checks.webhooks in /api/v1/health)", self.backlog, self.max_events, extra={"shed": counts})
        else:
            log.warning("outbox over its limit: shed the %d oldest undelivered heartbeats", len(gone),
                        extra={"shed": counts})
        times = [t for _s, _ty, t in gone]
        await self.journal.record(OutboxOverflow(
            limit=self.max_events, backlog=self.backlog, shed=counts,
            shed_from=iso8601(min(times)) if times else None, shed_to=iso8601(max(times)) if times else None,
            refusing=list(SHEDDABLE) if still_over else []), key="panel")

    # -- introspection ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        failing = {k: {"failures": lane.failures, "last_error": lane.last_error,
                       "retry_in_s": round(max(0.0, lane.retry_at - now), 3) if lane.retry_at else None}
                   for k, lane in self._lanes.items() if lane.failures}
        paused = max(0.0, self._endpoint_not_before - now)
        return {
            "endpoint": endpoint_label(self.url),
            "backlog": self.backlog,
            "limit": self.max_events,
            "outbox_full": self.full,
            "disabled": self.disabled,
            "in_flight": self._in_flight,
            "delivered": self.delivered,
            "last_success": iso8601(self.last_success) if self.last_success else None,
            "last_failure": self.last_failure,
            "endpoint_failures": self._endpoint_failures,
            "paused_s": round(paused, 3),
            "failing_keys": dict(list(failing.items())[:10]),
        }

    def healthy(self) -> bool:
        return self.disabled is None and not self.full


# -- heartbeat and online -------------------------------------------------------------------------------
def system_uptime_s() -> float | None:
    try:
        return round(float(Path("/proc/uptime").read_text().split()[0]), 3)
    except (OSError, ValueError, IndexError):
        return None


def online_event(outbox: Outbox, started_mono: float, boot: str) -> PanelOnline:
    return PanelOnline(version=__version__, boot=boot, uptime_s=round(time.monotonic() - started_mono, 3),
                       system_uptime_s=system_uptime_s(), backlog=outbox.backlog)


async def heartbeat(journal: Journal, outbox: Outbox, interval_s: float, started_mono: float) -> None:
    """Record ``panel.online`` once the outbox runs, then ``panel.heartbeat`` every ``interval_s``
    (refused while the outbox is full or disabled)."""
    await outbox.ready_event.wait()
    if not outbox.online_sent:
        await journal.record(online_event(outbox, started_mono, journal.boot_id), key="panel")
        outbox.online_sent = True
    while True:
        await outbox.clock.sleep(interval_s)
        if not outbox.accepting("panel.heartbeat"):
            log.info("heartbeat not recorded: the outbox is %s", "disabled" if outbox.disabled else "full")
            continue
        await journal.record(PanelHeartbeat(version=__version__, boot=journal.boot_id,
                                            uptime_s=round(time.monotonic() - started_mono, 3),
                                            system_uptime_s=system_uptime_s(), backlog=outbox.backlog), key="panel")
