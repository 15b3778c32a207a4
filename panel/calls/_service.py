"""The call state machine and the call log.

One call at a time: a press creates it, residents answer, decline or end it, the visitor cancels it,
timers miss or end it. Every transition is decided synchronously on the event loop (so "first
answer wins" holds without locks), then written as one transaction holding the event, the call-log
row and the transition row; callers that reply to someone await that write. The rules, the state
diagram and who may trigger what are in docs/calls.md; ``TRANSITIONS`` below is the one table of
allowed moves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import sqlite3
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import CallError
from ..events import (
    ButtonPressed,
    CallCreated,
    CallState,
    CallStatusUpdated,
    CallTimes,
    CallType,
    UnitRef,
)
from ..platform import ButtonConfig, Clock, Config, EventRow, Journal, TimerHandle, Tx
from ..platform import iso8601 as iso

log = logging.getLogger(__name__)

LIVE_STATES: frozenset[CallState] = frozenset({"calling", "ringing", "connecting", "connected"})
ANSWERED_STATES: frozenset[CallState] = frozenset({"connecting", "connected"})
END_STATES: frozenset[CallState] = frozenset({"ended", "declined", "canceled", "missed", "failed"})

# Every allowed move; anything else is a bug and raises. ``None`` is "no call yet".
TRANSITIONS: dict[CallState | None, frozenset[CallState]] = {
    None: frozenset({"calling"}),
    "calling": frozenset({"ringing", "connecting", "declined", "canceled", "missed", "ended", "failed"}),
    "ringing": frozenset({"connecting", "declined", "canceled", "missed", "ended", "failed"}),
    "connecting": frozenset({"connected", "ended", "failed"}),
    "connected": frozenset({"ended", "failed"}),
    **{s: frozenset() for s in END_STATES},
}

# An answer made with a revocable credential ends with it (ended, by the answerer, with these reasons).
CREDENTIAL_REVOKED = "credential_revoked"
CREDENTIAL_EXPIRED = "credential_expired"
# With a media layer attached, an answered call that never gets media fails after this long.
MEDIA_CONNECT_TIMEOUT_S = 30.0
# Finished calls kept in memory, so commands naming a call that just ended get "call_over" at once.
RECENT_CALLS = 256
MAX_ACTOR_LEN = 128
MAX_PER_PAGE = 100
# The call log is trimmed to storage.history_max_rows at start and after every this many calls.
PRUNE_EVERY = 100

PressAction = Literal["created", "ignored", "canceled", "busy", "replaced", "closed"]




@dataclass
class Call:
    guid: str
    button: str
    unit_id: str
    unit_label: str
    call_type: CallType
    state: CallState
    created_at: float  # wall clock, for the record only
    answered_by: str | None = None
    participants: list[str] = field(default_factory=list)
    updated_at: float = 0.0
    answered_at: float | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    ended_by: str | None = None  # who declined, ended, canceled or failed it
    reason: str | None = None
    acknowledged: bool = False  # the backend acknowledged call.created
    # What the panel sends muted in this call (its microphone, its camera); the media layer applies it.
    muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    created_mono: float | None = None  # None for a call read back from the log after a restart

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def answered(self) -> bool:
        return self.state in ANSWERED_STATES

    @property
    def declined_by(self) -> str | None:
        return self.ended_by if self.state == "declined" else None

    def times(self) -> CallTimes:
        return CallTimes(created_at=iso(self.created_at) or "", answered_at=iso(self.answered_at),
                         connected_at=iso(self.connected_at), ended_at=iso(self.ended_at))

    def to_dict(self, now_mono: float | None = None) -> dict[str, Any]:
        """The JSON shape used by state, history and command replies."""
        if self.live and now_mono is not None and self.created_mono is not None:
            duration: float | None = now_mono - self.created_mono
        elif self.ended_at is not None:
            duration = self.ended_at - self.created_at
        else:
            duration = None
        return {
            "guid": self.guid,
            "button": self.button,
            "unit": {"id": self.unit_id, "label": self.unit_label},
            "call_type": self.call_type,
            "status": self.state,
            "answered_by": self.answered_by,
            "declined_by": self.declined_by,
            "ended_by": self.ended_by,
            "reason": self.reason,
            "participants": list(self.participants),
            "muted": dict(self.muted),
            **self.times().model_dump(),
            "duration_s": None if duration is None else round(max(0.0, duration), 3),
        }

    def snapshot(self) -> Call:
        return dataclasses.replace(self, participants=list(self.participants), muted=dict(self.muted))

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Call:
        return cls(guid=row["guid"], button=row["button"], unit_id=row["unit_id"], unit_label=row["unit_label"],
                   call_type=row["call_type"], state=row["state"], created_at=row["created_at"],
                   answered_by=row["answered_by"], participants=[row["answered_by"]] if row["answered_by"] else [],
                   updated_at=row["updated_at"], answered_at=row["answered_at"], connected_at=row["connected_at"],
                   ended_at=row["ended_at"], ended_by=row["ended_by"], reason=row["reason"],
                   acknowledged=row["state"] != "calling")


@dataclass(frozen=True)
class Press:
    """What a button press did. ``call`` is the call created, canceled, or met (ignored/busy)."""

    action: PressAction
    call: Call | None
    replaced: Call | None = None


class CallManager:
    def __init__(self, cfg: Config, journal: Journal, clock: Clock) -> None:
        self.cfg = cfg
        self.policy = cfg.calls
        self.journal = journal
        self.clock = clock
        self.current: Call | None = None
        # Until the media capability attaches itself, an answer connects at once (docs/calls.md).
        self.media_attached = False
        # Without a webhook endpoint nobody can acknowledge call.created: ring at once.
        self.ring_without_ack = cfg.webhooks.url is None
        self._recent: OrderedDict[str, Call] = OrderedDict()
        self._timers: list[TimerHandle] = []
        self._tie: tuple[str, str] | None = None  # (call guid, the credential its answer was made with)
        self._created = 0
        self._closed = False
        self._recovering: list[asyncio.Future[Any]] = []

    def reconfigure(self, cfg: Config) -> None:
        """Take changed live keys (calls.*, buttons[].unit.*): the next press uses them; a call in
        progress keeps the timeouts it started with."""
        self.cfg = cfg
        self.policy = cfg.calls

    # -- lifecycle ----------------------------------------------------------------------------------
    def recover(self) -> list[Call]:
        """Close calls left live by a process that died, as failed with reason "restart", and trim
        the log. Runs once at boot before the buttons are wired (a short read on the loop, like the
        door's tamper block); the writes are queued and ``start``/``journal.flush`` await them."""
        rows = self.journal.store.read_sync(lambda c: c.execute(
            "SELECT * FROM calls WHERE state IN ('calling','ringing','connecting','connected') ORDER BY seq"
        ).fetchall())
        closed = []
        for row in rows:
            if self.current is not None and row["guid"] == self.current.guid:
                continue
            call = Call.from_row(row)
            log.warning("call %s was %s when the panel stopped; closing it as failed", call.guid, call.state,
                        extra={"call": call.guid, "call_state": call.state})
            self._recovering.append(self._transition(call, "failed", who="panel", reason="restart"))
            closed.append(call.snapshot())
        prune = asyncio.wrap_future(self.journal.store.submit_write(self._prune))
        prune.add_done_callback(_log_prune_failure)
        self._recovering.append(prune)
        return closed

    async def start(self) -> list[Call]:
        """``recover`` and wait until its writes are on disk."""
        closed = self.recover()
        pending, self._recovering = self._recovering, []
        await asyncio.gather(*pending)
        return closed

    def close(self, reason: str = "shutdown") -> asyncio.Future[EventRow] | None:
        """Stop taking presses and close a live call as failed; returns the write to await (if any)."""
        self._closed = True
        call = self.current
        if call is None:
            self._cancel_timers()
            return None
        return self._transition(call, "failed", who="panel", reason=reason)

    def attach_media(self, attached: bool = True) -> None:
        """Called by the media layer: from now on an answer waits for ``media_connected``."""
        self.media_attached = attached

    # -- the visitor side -----------------------------------------------------------------------------
    def on_button(self, button_id: str) -> None:
        """The debounced press of a call button (sync: called from the input callback)."""
        try:
            self.press(button_id)
        except CallError as e:
            log.error("button %s: %s", button_id, e, extra={"code": e.code})

    def press(self, button_id: str) -> Press:
        if self._closed:
            log.info("button %s pressed while the panel is stopping; no call", button_id)
            return Press("closed", None)
        try:
            b = self.cfg.button(button_id)
        except KeyError:
            known = ", ".join(x.id for x in self.cfg.buttons)
            raise CallError("unknown_button", f"there is no button {button_id!r}; this panel has {known}") from None
        cur = self.current
        if cur is None:
            return Press("created", self._create(b))
        if cur.unit_id == b.unit.id:
            # A press never ends a conversation: once answered, pressing again is always ignored.
            if cur.answered or self.policy.same_button_during_call == "ignore":
                self._press_refused(b, "ignored", cur)
                return Press("ignored", cur.snapshot())
            self._transition(cur, "canceled", who="visitor", reason="pressed_again")
            return Press("canceled", cur.snapshot())
        # Another visitor must not cut off a conversation: an answered call is never replaced.
        if cur.answered or self.policy.other_button_during_call == "reject":
            self._press_refused(b, "busy", cur)
            return Press("busy", cur.snapshot())
        self._transition(cur, "canceled", who="visitor", reason="replaced")
        return Press("replaced", self._create(b), replaced=cur.snapshot())

    def _press_refused(self, b: ButtonConfig, outcome: Literal["ignored", "busy"], cur: Call) -> None:
        log.info("button %s pressed during call %s (%s): %s", b.id, cur.guid, cur.state, outcome,
                 extra={"call": cur.guid, "outcome": outcome})
        self.journal.record(ButtonPressed(button=b.id, unit_id=b.unit.id, unit_label=b.unit.label, outcome=outcome,
                                          call_guid=cur.guid), key=cur.guid)

    def _create(self, b: ButtonConfig) -> Call:
        wall, mono = self.clock.wall(), self.clock.monotonic()
        call = Call(guid=str(uuid.uuid4()), button=b.id, unit_id=b.unit.id, unit_label=b.unit.label,
                    call_type=self.policy.call_type, state="calling", created_at=wall, updated_at=wall,
                    created_mono=mono)
        self.current = call
        self._created += 1
        prune = self._created % PRUNE_EVERY == 0
        event = CallCreated(guid=call.guid, unit=UnitRef(id=b.unit.id, label=b.unit.label), button=b.id,
                            call_type=call.call_type, status="calling", created_at=iso(wall) or "")
        row = (call.guid, b.id, b.unit.id, b.unit.label, call.call_type, wall, wall)

        def write(tx: Tx, event_id: str) -> None:
            tx.execute("INSERT INTO calls(guid, seq, button, unit_id, unit_label, call_type, state, created_at,"
                       " updated_at) VALUES (?, (SELECT seq FROM events WHERE id=?), ?, ?, ?, ?, 'calling', ?, ?)",
                       (row[0], event_id, *row[1:]))
            tx.execute("INSERT INTO call_transitions(guid, from_state, to_state, time, actor, reason, event_id)"
                       " VALUES (?, NULL, 'calling', ?, 'visitor', 'button', ?)", (call.guid, wall, event_id))

        self.journal.record(event, key=call.guid, extra=write)
        if prune:  # its own transaction, queued after the call: a failed trim must not lose a call
            asyncio.wrap_future(self.journal.store.submit_write(self._prune)).add_done_callback(_log_prune_failure)
        log.info("call %s created: button %s rings unit %s", call.guid, b.id, b.unit.label,
                 extra={"call": call.guid, "unit": b.unit.id})
        # Both timers run from the press, so a backend that never acknowledges cannot hold a call open.
        self._cancel_timers()
        self._timers = [
            self.clock.call_at(mono + self.policy.ring_timeout_s, functools.partial(self._ring_timeout, call.guid)),
            self.clock.call_at(mono + self.policy.max_call_s, functools.partial(self._max_call, call.guid)),
        ]
        if self.ring_without_ack:
            self._transition(call, "ringing", who="panel", reason="no_webhook_endpoint")
        return call

    # -- the backend side ---------------------------------------------------------------------------
    def backend_acknowledged(self, guid: str) -> None:
        """The backend took call.created (2xx): calling -> ringing. Late or repeated acks are no-ops."""
        call = self.current
        if call is None or call.guid != guid:
            log.debug("acknowledgement for call %s which is no longer in progress", guid)
            return
        call.acknowledged = True
        if call.state == "calling":
            self._transition(call, "ringing", who="backend", reason="backend_acknowledged")

    async def answer(self, guid: str | None, who: str) -> Call:
        """First answer wins; a later one by someone else gets ``already_answered`` naming the first."""
        who = _actor(who, "who")
        call = await self._resolve(guid)
        if call.answered:
            if call.answered_by == who:  # the same resident repeating itself: nothing to do
                return call.snapshot()
            raise CallError("already_answered", f"call {call.guid} was already answered by {call.answered_by}")
        futs = [self._transition(call, "connecting", who=who, reason="answered")]
        if self.media_attached:
            self._timers.append(self.clock.call_at(self.clock.monotonic() + MEDIA_CONNECT_TIMEOUT_S,
                                                   functools.partial(self._media_timeout, call.guid)))
        else:
            futs.append(self._transition(call, "connected", who=None, reason="no_media_layer"))
        snap = call.snapshot()
        await asyncio.gather(*futs)
        return snap

    async def decline(self, guid: str | None, who: str) -> Call:
        who = _actor(who, "who")
        call = await self._resolve(guid)
        if call.answered:
            raise CallError("already_answered", f"call {call.guid} was already answered by {call.answered_by}; "
                            "to hang up, end it")
        return await self._finish_with(call, "declined", who=who, reason="declined")

    async def end(self, guid: str | None, who: str, reason: str = "hangup") -> Call:
        who = _actor(who, "who")
        reason = _actor(reason, "reason")
        call = await self._resolve(guid)
        return await self._finish_with(call, "ended", who=who, reason=reason)

    async def cancel(self, guid: str | None, why: str) -> Call:
        """The visitor side gave up: canceled before an answer, ended (by "visitor") after one."""
        why = _actor(why, "why")
        call = await self._resolve(guid)
        return await self._finish_with(call, "ended" if call.answered else "canceled", who="visitor", reason=why)

    async def fail(self, guid: str | None, reason: str) -> Call:
        """Something broke (e.g. the media layer): the call fails with ``reason``."""
        reason = _actor(reason, "reason")
        call = await self._resolve(guid)
        return await self._finish_with(call, "failed", who="panel", reason=reason)

    def tie_credential(self, guid: str, credential_id: str, expires_in_s: float | None) -> None:
        """The answer of live call ``guid`` was made with ``credential_id``: when it is revoked
        (``credential_revoked``) or expires (in ``expires_in_s``; a timer through the clock, cancelled
        with the call's other timers) the call ends as a hang-up by the answerer. The first answer's
        credential holds the call; later ties are ignored."""
        call = self.current
        if call is None or call.guid != guid or not call.answered or self._tie is not None:
            return
        self._tie = (guid, credential_id)
        if expires_in_s is not None:
            self._timers.append(self.clock.call_at(self.clock.monotonic() + max(0.0, expires_in_s),
                                                   lambda: self._credential_expired(guid)))

    def _credential_expired(self, guid: str) -> None:
        self._credential_ended(guid, CREDENTIAL_EXPIRED)

    def credential_revoked(self, credential_id: str) -> asyncio.Future[EventRow] | None:
        """A credential was revoked: the call answered with it ends now (the write is returned)."""
        tie = self._tie
        if tie is None or tie[1] != credential_id:
            return None
        return self._credential_ended(tie[0], CREDENTIAL_REVOKED)

    def _credential_ended(self, guid: str, reason: str) -> asyncio.Future[EventRow] | None:
        call = self.current
        if call is None or call.guid != guid or not call.live or call.answered_by is None:
            return None
        log.info("call %s ends: the answerer's credential is %s", guid, reason.removeprefix("credential_"),
                 extra={"call": guid, "reason": reason})
        return self._transition(call, "ended", who=call.answered_by, reason=reason)

    async def live_call(self, guid: str | None) -> Call:
        """The live call ``guid`` names (``None``: the one in progress), or CallError saying why not."""
        return (await self._resolve(guid)).snapshot()

    def set_muted(self, guid: str, kind: Literal["audio", "video"], muted: bool) -> None:
        """Record what the panel sends muted in the live call ``guid`` (the media layer applies it)."""
        call = self.current
        if call is None or call.guid != guid:
            raise self._not_live_error_sync(guid)
        call.muted[kind] = muted

    def muted(self, guid: str) -> dict[str, bool]:
        call = self.get(guid)
        return dict(call.muted) if call is not None else {"audio": False, "video": False}

    def media_connected(self, guid: str) -> None:
        call = self.current
        if call is None or call.guid != guid:
            raise self._not_live_error_sync(guid)
        if call.state == "connected":
            return
        if call.state != "connecting":
            raise CallError("not_answered", f"call {guid} is {call.state}; media can only connect an answered call")
        self._transition(call, "connected", who=None, reason="media_connected")

    def active_call_for_unlock(self, guid: str | None) -> Call:
        """The answered call an unlock belongs to (``None``: the current one), or CallError."""
        call = self.current
        if guid is None:
            if call is None:
                raise CallError("no_call", "there is no call in progress to open the door for")
        elif call is None or call.guid != guid:
            raise self._not_live_error_sync(guid)
        assert call is not None
        if not call.answered:
            raise CallError("not_answered", f"call {call.guid} is {call.state} and has not been answered; "
                            "answer it before opening the door for it")
        return call.snapshot()

    # -- lookups --------------------------------------------------------------------------------------
    def get(self, guid: str) -> Call | None:
        """The current call or a recently finished one (the last ``RECENT_CALLS``); else None."""
        if self.current is not None and self.current.guid == guid:
            return self.current.snapshot()
        call = self._recent.get(guid)
        return call.snapshot() if call is not None else None

    async def lookup(self, guid: str) -> Call | None:
        """Like ``get``, falling back to the call log for older calls."""
        call = self.get(guid)
        if call is not None:
            return call
        row = await self.journal.store.read(
            lambda c: c.execute("SELECT * FROM calls WHERE guid=?", (guid,)).fetchone())
        return Call.from_row(row) if row is not None else None

    async def history(self, page: int = 1, per_page: int = 20, *, unit_id: str | None = None,
                      status: str | None = None, include_transitions: bool = False) -> list[dict[str, Any]]:
        """The call log, newest first; ``page`` counts from 1."""
        if page < 1:
            raise CallError("invalid_query", f"page {page} is not allowed; pages count from 1")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise CallError("invalid_query", f"per_page {per_page} is not allowed; expected 1 to {MAX_PER_PAGE}")
        where, params = _filters(unit_id, status)

        def q(conn: sqlite3.Connection) -> list[tuple[sqlite3.Row, list[sqlite3.Row]]]:
            rows = conn.execute(f"SELECT * FROM calls{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                (*params, per_page, (page - 1) * per_page)).fetchall()
            return [(row, conn.execute("SELECT * FROM call_transitions WHERE guid=? ORDER BY seq",
                                       (row["guid"],)).fetchall() if include_transitions else [])
                    for row in rows]

        return [self._history_dict(row, transitions, include_transitions)
                for row, transitions in await self.journal.store.read(q)]

    def _history_dict(self, row: sqlite3.Row, transitions: list[sqlite3.Row], include_transitions: bool
                      ) -> dict[str, Any]:
        # The live call's row may lag its in-memory state by one pending write; show the latter.
        live = self.current if self.current is not None and self.current.guid == row["guid"] else None
        d = (live or Call.from_row(row)).to_dict(self.clock.monotonic())
        if include_transitions:
            d["transitions"] = [
                {"from": t["from_state"], "to": t["to_state"], "time": iso(t["time"]), "actor": t["actor"],
                 "reason": t["reason"], "event_id": t["event_id"]} for t in transitions]
        return d

    async def details(self, guid: str) -> dict[str, Any] | None:
        """One call from the log with its transitions (the history shape), or None."""
        def q(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
            row = conn.execute("SELECT * FROM calls WHERE guid=?", (guid,)).fetchone()
            return row, conn.execute("SELECT * FROM call_transitions WHERE guid=? ORDER BY seq", (guid,)).fetchall()

        row, transitions = await self.journal.store.read(q)
        return None if row is None else self._history_dict(row, transitions, include_transitions=True)

    async def count(self, *, unit_id: str | None = None, status: str | None = None) -> int:
        where, params = _filters(unit_id, status)
        return int(await self.journal.store.read(
            lambda c: c.execute(f"SELECT count(*) FROM calls{where}", params).fetchone()[0]))

    def state(self) -> dict[str, Any]:
        """For /api/v1/state and the retained MQTT call state."""
        call = self.current
        return {
            "status": call.state if call is not None else "idle",
            "call": call.to_dict(self.clock.monotonic()) if call is not None else None,
        }

    # -- the machine ----------------------------------------------------------------------------------
    def _transition(self, call: Call, to: CallState, *, who: str | None, reason: str) -> asyncio.Future[EventRow]:
        """Move ``call`` to ``to`` now and write event + call-log rows in one transaction."""
        frm = call.state
        if to not in TRANSITIONS[frm]:
            raise CallError("invalid_transition", f"call {call.guid}: {frm} -> {to} is not a transition")
        wall = self.clock.wall()
        call.state, call.updated_at, call.reason = to, wall, reason
        if to == "connecting":
            call.answered_by, call.answered_at = who, wall
            if who is not None and who not in call.participants:
                call.participants.append(who)
        elif to == "connected":
            call.connected_at = wall
        elif to in END_STATES:
            call.ended_at, call.ended_by = wall, who
            self._retire(call)
        duration = (self.clock.monotonic() - call.created_mono) if call.created_mono is not None else None
        event = CallStatusUpdated(
            guid=call.guid, unit=UnitRef(id=call.unit_id, label=call.unit_label), button=call.button,
            call_type=call.call_type, status=to, previous_status=frm, who=who, answered_by=call.answered_by,
            declined_by=call.declined_by, ended_by=call.ended_by if to in END_STATES else None, reason=reason,
            times=call.times(), duration_s=None if duration is None else round(duration, 3))
        update = (to, wall, call.answered_by, reason, call.answered_at, call.connected_at, call.ended_at,
                  call.ended_by, call.guid)

        def write(tx: Tx, event_id: str) -> None:
            tx.execute("UPDATE calls SET state=?, updated_at=?, answered_by=?, reason=?, answered_at=?,"
                       " connected_at=?, ended_at=?, ended_by=? WHERE guid=?", update)
            tx.execute("INSERT INTO call_transitions(guid, from_state, to_state, time, actor, reason, event_id)"
                       " VALUES (?,?,?,?,?,?,?)", (call.guid, frm, to, wall, who, reason, event_id))

        log.info("call %s: %s -> %s (%s)", call.guid, frm, to, reason,
                 extra={"call": call.guid, "from_state": frm, "to_state": to, "who": who, "reason": reason})
        return self.journal.record(event, key=call.guid, extra=write)

    async def _finish_with(self, call: Call, to: CallState, *, who: str, reason: str) -> Call:
        fut = self._transition(call, to, who=who, reason=reason)
        snap = call.snapshot()
        await fut
        return snap

    def _retire(self, call: Call) -> None:
        if self.current is call:
            self.current = None
            self._tie = None
            self._cancel_timers()
        self._recent[call.guid] = call
        self._recent.move_to_end(call.guid)
        while len(self._recent) > RECENT_CALLS:
            self._recent.popitem(last=False)

    def _cancel_timers(self) -> None:
        for t in self._timers:
            t.cancel()
        self._timers = []

    def _ring_timeout(self, guid: str) -> None:
        call = self.current
        if call is not None and call.guid == guid and call.state in ("calling", "ringing"):
            self._transition(call, "missed", who=None, reason="ring_timeout")

    def _max_call(self, guid: str) -> None:
        call = self.current
        if call is not None and call.guid == guid:
            self._transition(call, "ended", who="panel", reason="max_call_s")

    def _media_timeout(self, guid: str) -> None:
        call = self.current
        if call is not None and call.guid == guid and call.state == "connecting":
            self._transition(call, "failed", who="panel", reason="media_timeout")

    async def _resolve(self, guid: str | None) -> Call:
        """The live call a command names (``None``: the current one). Never suspends when it succeeds,
        so the caller's check-then-transition is atomic on the event loop."""
        call = self.current
        if guid is None:
            if call is None:
                raise CallError("no_call", "there is no call in progress")
            return call
        if call is not None and call.guid == guid:
            return call
        if guid in self._recent:
            raise self._not_live_error_sync(guid)
        past = await self.lookup(guid)
        if past is not None:
            raise _over(past)
        raise _unknown(guid)

    def _not_live_error_sync(self, guid: str) -> CallError:
        past = self._recent.get(guid)
        return _over(past) if past is not None else _unknown(guid)

    def _prune(self, tx: Tx) -> None:
        keep = self.cfg.storage.history_max_rows
        cutoff = "(SELECT seq FROM calls ORDER BY seq DESC LIMIT 1 OFFSET ?)"
        ended = "state IN ('ended','declined','canceled','missed','failed')"
        tx.execute(f"DELETE FROM call_transitions WHERE guid IN (SELECT guid FROM calls WHERE seq <= {cutoff}"
                   f" AND {ended})", (keep,))
        tx.execute(f"DELETE FROM calls WHERE seq <= {cutoff} AND {ended}", (keep,))


def _log_prune_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("could not trim the call log: %s", fut.exception())


def _over(call: Call) -> CallError:
    return CallError("call_over", f"call {call.guid} is over ({call.state}, {call.reason}); nothing changed")


def _unknown(guid: str) -> CallError:
    return CallError("unknown_call", f"there is no call {guid!r} on this panel; omit the guid to mean the call "
                     "in progress")


def _actor(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ACTOR_LEN or not value.isprintable():
        raise CallError("invalid_actor", f"{what} must be 1 to {MAX_ACTOR_LEN} printable characters, e.g. a "
                        "resident id")
    return value.strip()


def _filters(unit_id: str | None, status: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if unit_id is not None:
        clauses.append("unit_id = ?")
        params.append(unit_id)
    if status is not None:
        if status not in TRANSITIONS:
            raise CallError("invalid_query", f"status {status!r} is not a call state; expected one of "
                            + ", ".join(s for s in TRANSITIONS if s))
        clauses.append("state = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
