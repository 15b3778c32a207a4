"""Logs over the API: the access log (paged, filtered), and the event history pulled by long-poll or
streamed as server-sent events, both resuming after an event id (like 2N's log subscription).

The event history is the journal itself (the ``events`` table, in commit order), so a client that
resumes from the last id it saw gets every event after it, none twice, across panel restarts too.
Waiting costs no thread: a waiter sleeps on an asyncio event the journal sets after each commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ..events import Cause, Method
from ..platform import EventRow, SlotRefused
from ..platform import iso8601 as iso
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import ApiAuth, Principal
from .roles import caller, client_address
from .scope import event_in_scope, slot_tier
from .state import ApiState

if TYPE_CHECKING:
    from .deps import Panel

router = APIRouter(prefix="/api/v1", tags=["logs"])

Caller = Annotated[Principal, Depends(caller)]
MAX_PAGE = 100
MAX_EVENTS = 500
MAX_WAIT_S = 30.0
KEEPALIVE_S = 15.0
_TYPE_RE = re.compile(r"^[a-z_]+(\.[a-z_]+)?(\.\*)?$|^[a-z_]+\.\*$")
_401 = {"description": "no, unknown, expired or revoked credential"}




# -- access log --------------------------------------------------------------------------------------

class AccessEntry(BaseModel):
    id: str = Field(description="the access id, as in door.unlocked")
    time: str
    relay: str
    cause: str
    actor: str
    method: str
    call_guid: str | None
    duration_s: float
    event_id: str = Field(description="the door.unlocked event of this release")
    label: str | None = Field(None, description="pin, code, qr, card: the credential's label (never its secret)")
    credential_id: str | None = Field(None, description="pin, code, qr, card: the credential used")


class AccessPage(OkBody):
    page: int
    per_page: int
    total: int
    entries: list[AccessEntry] = Field(description="newest first")


@router.get("/logs/access", response_model=AccessPage, summary="The access log: every release, newest first",
            responses={401: _401})
async def access_log(panel: PanelDep, who: Caller, page: int = Query(1, ge=1, le=100_000),
                     per_page: int = Query(20, ge=1, le=MAX_PAGE),
                     call_guid: str | None = Query(None, max_length=64), actor: str | None = Query(None, max_length=128),
                     cause: Cause | None = None, method: Method | None = None,
                     relay: str | None = Query(None, max_length=64),
                     since: datetime | None = Query(None, description="ISO 8601; entries at or after"),
                     until: datetime | None = Query(None, description="ISO 8601; entries before")) -> AccessPage:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("call_guid", call_guid), ("actor", actor), ("cause", cause), ("method", method),
                          ("relay", relay)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    for op, when, name in ((">=", since, "since"), ("<", until, "until")):
        if when is not None:
            if when.tzinfo is None:
                raise ApiError("invalid_request", f"{name}: give a time zone, e.g. 2025-03-14T09:00:00Z")
            clauses.append(f"time {op} ?")
            params.append(when.timestamp())
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""

    def q(conn: sqlite3.Connection) -> tuple[int, list[sqlite3.Row]]:
        total = conn.execute(f"SELECT count(*) FROM access_log{where}", params).fetchone()[0]
        rows = conn.execute(f"SELECT * FROM access_log{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                            (*params, per_page, (page - 1) * per_page)).fetchall()
        return int(total), rows

    total, rows = await panel.store.read(q)
    entries = [AccessEntry(id=r["id"], time=iso(r["time"]) or "", relay=r["relay"], cause=r["cause"], actor=r["actor"],
                           method=r["method"], call_guid=r["call_guid"], duration_s=r["duration_s"],
                           event_id=r["event_id"], label=r["label"], credential_id=r["credential_id"])
               for r in rows]
    return AccessPage(message=f"{len(entries)} of {total} entries", page=page, per_page=per_page, total=total,
                      entries=entries)


# -- event history ---------------------------------------------------------------------------------------

class EventOut(BaseModel):
    seq: int = Field(description="position in the panel's history (grows by commit order)")
    id: str = Field(description="the event id; resume after it with after=<id> or Last-Event-ID")
    type: str
    key: str = Field(description="call guid, 'door' or 'panel': events of one key are in order")
    time: str
    data: dict[str, Any] = Field(description="the event's data (docs/events.md)")


class EventPage(OkBody):
    events: list[EventOut]
    last_id: str | None = Field(description="pass as after= to continue; the same as sent when nothing new")
    more: bool = Field(description="true if more events are already waiting (ask again at once)")


def _out(row: EventRow) -> EventOut:
    return EventOut(seq=row.seq, id=row.id, type=row.type, key=row.key, time=iso(row.time) or "", data=row.data)


def _types(types: list[str] | None) -> list[str]:
    out: list[str] = []
    for t in types or []:
        for part in t.split(","):
            part = part.strip()
            if not part:
                continue
            if not _TYPE_RE.match(part) or len(part) > 64:
                raise ApiError("invalid_request", f"type: {part!r} is not an event type or a prefix like "
                               "\"call.*\" (docs/events.md lists them)")
            out.append(part)
    return out


async def _cursor(panel: Panel, after: str | None) -> int:
    """The seq after which to continue: after an event id; "0" or omitted means from the oldest kept;
    "now" means from the next event."""
    if after is None or after == "0":
        return 0
    if after == "now":
        return int(await panel.store.read(lambda c: c.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]))
    row = await panel.store.read(lambda c: c.execute("SELECT seq FROM events WHERE id=?", (after,)).fetchone())
    if row is None:
        raise ApiError("unknown_event", f"after: there is no event {after!r} in this panel's history (it may "
                       "have been trimmed, or the panel was reset); start again with after=0 or after=now")
    return int(row[0])


async def _read(panel: Panel, seq: int, limit: int, types: list[str]) -> list[EventRow]:
    def q(conn: sqlite3.Connection) -> list[EventRow]:
        where, params = _type_filter(types)
        sql = "SELECT * FROM events" + (where + " AND" if where else " WHERE") + " seq > ? ORDER BY seq LIMIT ?"
        return [EventRow.from_row(r) for r in conn.execute(sql, (*params, seq, limit))]
    return await panel.store.read(q)


STREAM_CODES = {"full": "too_many_streams", "credential": "too_many_streams_for_credential",
                "address": "too_many_streams_from_address", "reserved": "streams_reserved"}


def _type_filter(types: list[str]) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause (or "") for event types and prefixes like call.*, with its parameters."""
    if not types:
        return "", ()
    ors: list[str] = []
    params: list[Any] = []
    for t in types:
        if t.endswith(".*"):
            ors.append("type LIKE ? ESCAPE '\\'")
            params.append(t[:-1].replace("_", r"\_") + "%")
        else:
            ors.append("type = ?")
            params.append(t)
    return " WHERE (" + " OR ".join(ors) + ")", tuple(params)


class _Waiters:
    """Open long-polls and streams: bounded (api.streams), each woken by the journal's commits and by
    revocations."""

    def __init__(self, state: ApiState) -> None:
        self.slots = state.streams

    @classmethod
    def for_panel(cls, panel: Panel) -> _Waiters:
        assert panel.api_state is not None, "the API's state is made with its app"
        return cls(panel.api_state)

    @property
    def open(self) -> int:
        return self.slots.held

    def check(self, who: Principal, address: str) -> None:
        """Refuse now, with the bound it hits, what ``slot`` would refuse."""
        try:
            self.slots.check(who.token_id, address, slot_tier(who))
        except SlotRefused as e:
            raise ApiError(STREAM_CODES[e.reason], f"{e}; or try again shortly", headers={"Retry-After": "5"}) from None

    @contextlib.contextmanager
    def slot(self, panel: Panel, auth: ApiAuth, who: Principal, address: str) -> Any:
        self.check(who, address)
        held = self.slots.take(who.token_id, address, slot_tier(who))
        wake = asyncio.Event()
        revoked = {"yes": False}

        def on_event(_row: EventRow) -> None:
            wake.set()

        def on_revoke(p: Principal) -> None:
            if p.token_id == who.token_id:
                revoked["yes"] = True
                wake.set()

        stop_events = panel.journal.subscribe(on_event)
        stop_revokes = auth.tokens.on_revoke(on_revoke)
        try:
            yield wake, (lambda: revoked["yes"] or not auth.tokens.is_live(who))
        finally:
            stop_events()
            stop_revokes()
            self.slots.release(held)


async def _scoped(panel: Panel, who: Principal, seq: int, limit: int, types: list[str]) -> tuple[list[EventRow], int, bool]:
    """Up to ``limit`` events after ``seq`` the caller may see; the seq scanned up to; whether more wait."""
    rows = await _read(panel, seq, limit, types)
    last = rows[-1].seq if rows else seq
    more = len(rows) == limit
    return [r for r in rows if event_in_scope(who, r, panel.calls)], last, more


def _auth(request: Request) -> ApiAuth:
    return request.app.state.auth  # type: ignore[no-any-return]


class EventLogPage(OkBody):
    page: int
    per_page: int
    total: int
    events: list[EventOut] = Field(description="newest first")


@router.get("/logs/events", response_model=EventLogPage, summary="The event history in pages, newest first "
            "(installer, backend)", responses={401: _401})
async def event_log(panel: PanelDep, who: Caller, page: int = Query(1, ge=1, le=100_000),
                    per_page: int = Query(20, ge=1, le=MAX_PAGE),
                    type: list[str] | None = Query(None, description="event types or prefixes like call.*; "
                                                   "repeatable")) -> EventLogPage:
    types = _types(type)

    def q(conn: sqlite3.Connection) -> tuple[int, list[EventRow]]:
        where, params = _type_filter(types)
        (total,) = conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()
        rows = conn.execute(f"SELECT * FROM events{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                            (*params, per_page, (page - 1) * per_page)).fetchall()
        return int(total), [EventRow.from_row(r) for r in rows]

    total, rows = await panel.store.read(q)
    return EventLogPage(message=f"{len(rows)} of {total} events", page=page, per_page=per_page, total=total,
                        events=[_out(r) for r in rows])


@router.get("/events", response_model=EventPage, summary="Event history after an event id (long-poll with wait_s)",
            responses={401: _401, 404: {"description": "after names no event in the history"},
                       429: {"description": "too many open long-polls and streams"}})
async def events(request: Request, panel: PanelDep, who: Caller,
                 after: str | None = Query(None, max_length=64, description="an event id, \"0\" (oldest) or \"now\""),
                 type: list[str] | None = Query(None, description="event types or prefixes like call.*; repeatable"),
                 limit: int = Query(100, ge=1, le=MAX_EVENTS),
                 wait_s: float = Query(0, ge=0, le=MAX_WAIT_S, description="wait up to this long for a first event")
                 ) -> EventPage:
    types = _types(type)
    seq = await _cursor(panel, after)
    last_id = after if after not in (None, "0", "now") else None
    rows, last, more = await _scoped(panel, who, seq, limit, types)
    if not rows and wait_s > 0:
        deadline = asyncio.get_running_loop().time() + wait_s
        with _Waiters.for_panel(panel).slot(panel, _auth(request), who, client_address(request)) as (wake, gone):
            while not rows and not gone():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), left)
                rows, last, more = await _scoped(panel, who, last, limit, types)
    if rows:
        last_id = rows[-1].id
    elif last > seq:  # scanned past events the caller may not see: move its cursor on anyway
        last_id = await panel.store.read(lambda c: c.execute("SELECT id FROM events WHERE seq=?", (last,)).fetchone()[0])
    return EventPage(message=f"{len(rows)} event(s)", events=[_out(r) for r in rows], last_id=last_id, more=more)


def _sse(row: EventRow) -> bytes:
    data = json.dumps(_out(row).model_dump(), separators=(",", ":"))
    return f"id: {row.id}\nevent: {row.type}\ndata: {data}\n\n".encode()


async def _stream(panel: Panel, auth: ApiAuth, who: Principal, address: str, seq: int, types: list[str],
                  is_disconnected: Callable[[], Any]) -> AsyncIterator[bytes]:
    waiters = _Waiters.for_panel(panel)
    try:
        waiters.check(who, address)
    except ApiError as e:  # taken between the route's check and the first byte: say so in the stream
        yield f"event: error\ndata: {json.dumps({'code': e.code, 'message': e.message})}\n\n".encode()
        return
    with waiters.slot(panel, auth, who, address) as (wake, gone):
        yield b"retry: 2000\n\n"
        while True:
            wake.clear()
            rows, seq, more = await _scoped(panel, who, seq, MAX_EVENTS, types)
            for row in rows:
                yield _sse(row)
            if gone():
                yield b"event: revoked\ndata: {\"code\":\"token_revoked\",\"message\":\"the credential of this stream " \
                      b"was revoked or expired\"}\n\n"
                return
            if more:
                continue
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
            except TimeoutError:
                if await is_disconnected():
                    return
                yield b": keepalive\n\n"


@router.get("/events/stream", summary="Server-sent events: the history after Last-Event-ID, then live",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "SSE: `id` is the event id, `event` its type, `data` the event as in "
                                            "GET /api/v1/events"},
                       401: _401, 404: {"description": "Last-Event-ID/after names no event in the history"},
                       429: {"description": "too many open long-polls and streams"}})
async def stream(request: Request, panel: PanelDep, who: Caller,
                 after: str | None = Query(None, max_length=64, description="used when Last-Event-ID is absent; "
                                                                            "default: now"),
                 type: list[str] | None = Query(None, description="event types or prefixes like call.*; repeatable"),
                 last_event_id: str | None = Header(None, max_length=64)) -> StreamingResponse:
    types = _types(type)
    seq = await _cursor(panel, last_event_id or after or "now")
    address = client_address(request)
    _Waiters.for_panel(panel).check(who, address)
    return StreamingResponse(_stream(panel, _auth(request), who, address, seq, types, request.is_disconnected),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

