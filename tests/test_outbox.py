"""The outbox in-process: a real store on disk, the real journal, a real HTTP receiver on loopback.

Ground truth for "what should have arrived, in which order" is the panel's own events table.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from panel.events import (
    ButtonPressed,
    DoorClosed,
    EventData,
    InputRecovered,
    PanelHeartbeat,
)
from panel.link import DISABLED_KEY, Outbox, Sender, heartbeat
from panel.platform import EventRow, Journal, LoopClock, PanelInfo, Store

from .eventually import eventually
from .webhook_receiver import Rule, WebhookReceiver

pytestmark = pytest.mark.timeout(60)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def event_for(i: int, key: str) -> EventData:
    """A real event of the kind that travels under ``key``; call keys carry the guid in the body."""
    if key == "door":
        return DoorClosed(open_s=float(i))
    if key == "panel":
        return InputRecovered(input=f"button:b{i}")
    return ButtonPressed(button="b303", unit_id="303", unit_label="303", outcome="busy", call_guid=key)


def heartbeat_event(i: int) -> PanelHeartbeat:
    return PanelHeartbeat(version="test", boot="boot", uptime_s=float(i), system_uptime_s=None, backlog=i)


class Rig:
    """Store + journal + outbox over one database file, which survives ``stop``/``start``."""

    def __init__(self, tmp: Path, receiver: WebhookReceiver, secret: str) -> None:
        self.db = tmp / "panel.db"
        self.receiver = receiver
        self.secrets = [secret]
        self.url = receiver.url
        self.store: Store | None = None
        self.journal: Journal
        self.outbox: Outbox
        self.task: asyncio.Task[None] | None = None
        self.delivered_calls: list[tuple[EventRow, float | None]] = []

    def open(self) -> Journal:
        self.store = Store(self.db)
        self.journal = Journal(self.store, LoopClock(), PanelInfo(id="rig", name="Rig"))
        return self.journal

    async def start(self, *, max_events: int = 10_000, max_in_flight: int = 4, timeout_s: float = 1.0,
                    on_delivered: Callable[[EventRow], None] | None = None) -> Outbox:
        if self.store is None:
            self.open()
        assert self.store is not None
        sender = Sender(self.url, self.secrets, timeout_s=timeout_s, panel_id="rig")
        self.outbox = Outbox(self.store, self.journal, sender, max_events=max_events, max_backoff_s=0.2,
                             base_backoff_s=0.05, max_in_flight=max_in_flight, on_delivered=on_delivered)
        self.task = asyncio.create_task(self.outbox.run())
        await asyncio.wait_for(self.outbox.ready_event.wait(), 5)
        return self.outbox

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
            await self.outbox.aclose()
        if self.store is not None:
            await self.journal.flush()
            self.store.close()
            self.store = None

    def rows(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db) as c:
            c.row_factory = sqlite3.Row
            return [dict(r) for r in c.execute("SELECT seq, id, type, key, delivered, data FROM events ORDER BY seq")]

    async def until(self, cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """``eventually``, showing the receiver's and the outbox's state when it times out."""
        await eventually(cond, timeout, what, detail=lambda: f"receiver has {len(self.receiver.snapshot())} "
                         f"requests, outbox: {self.outbox.status()}")


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def receiver(secret: str):
    rc = WebhookReceiver([secret]).start()
    yield rc
    rc.stop()


@pytest.fixture
async def rig(tmp_path: Path, receiver: WebhookReceiver, secret: str):
    r = Rig(tmp_path, receiver, secret)
    yield r
    await r.stop()


def assert_order_per_key(rig: Rig, receiver: WebhookReceiver) -> None:
    """Each key's events reached the backend (first arrivals) in the order they were recorded."""
    arrived = [r.id for r in receiver.unique()]
    position = {eid: i for i, eid in enumerate(arrived)}
    by_key: dict[str, list[str]] = {}
    for row in rig.rows():
        if row["delivered"] is not None:
            by_key.setdefault(row["key"], []).append(row["id"])
    for key, ids in by_key.items():
        assert all(i in position for i in ids), f"key {key}: delivered in the store but never accepted"
        assert sorted(ids, key=position.__getitem__) == ids, f"key {key} arrived out of order"


async def test_every_event_arrives_once_in_order_per_key(rig: Rig, receiver: WebhookReceiver) -> None:
    await rig.start(max_in_flight=4)
    keys = ["door", "panel", "call-1", "call-2", "call-3"]
    for i in range(100):
        rig.journal.record(event_for(i, keys[i % len(keys)]), key=keys[i % len(keys)])
    await rig.journal.flush()
    await rig.until(lambda: len(receiver.unique()) == 100 and rig.outbox.backlog == 0, what="100 deliveries")

    rows = rig.rows()
    assert [r["id"] for r in rows if r["delivered"] is None] == []
    assert {r.id for r in receiver.unique()} == {r["id"] for r in rows}
    assert len(receiver.snapshot()) == 100, "an always-ok receiver got a duplicate"
    assert all(r.verified for r in receiver.snapshot())
    for got in receiver.unique():
        doc = json.loads(got.body)
        stored = next(r for r in rows if r["id"] == got.id)
        assert doc["type"] == stored["type"] and doc["data"] == json.loads(stored["data"])
        assert doc["timestamp"].endswith("Z")
    assert_order_per_key(rig, receiver)


async def test_a_failing_key_holds_up_only_itself(rig: Rig, receiver: WebhookReceiver) -> None:
    receiver.rules.append(Rule(lambda doc: doc.get("data", {}).get("call_guid") == "call-bad", 500))
    await rig.start()
    bad = [rig.journal.record(event_for(i, "call-bad"), key="call-bad") for i in range(3)]
    others = []
    for i in range(8):
        key = "door" if i % 2 else "call-ok"
        others.append(rig.journal.record(event_for(i, key), key=key))
    await rig.journal.flush()
    bad_ids = [f.result().id for f in bad]
    other_ids = {f.result().id for f in others}

    await rig.until(lambda: other_ids <= {r.id for r in receiver.unique()}, what="the healthy keys")
    await rig.until(lambda: sum(r.id == bad_ids[0] for r in receiver.snapshot()) >= 3, what="retries of the bad head")
    tried = {r.id for r in receiver.snapshot()}
    assert bad_ids[1] not in tried and bad_ids[2] not in tried, "sent past a failing head of its key"
    failing = rig.outbox.status()["failing_keys"]
    assert "call-bad" in failing and failing["call-bad"]["failures"] >= 2
    assert "HTTP 500" in failing["call-bad"]["last_error"]

    receiver.rules.clear()
    await rig.until(lambda: set(bad_ids) <= {r.id for r in receiver.unique()}, what="the bad key after recovery")
    arrived = [r.id for r in receiver.unique() if r.id in bad_ids]
    assert arrived == bad_ids
    assert_order_per_key(rig, receiver)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(rig: Rig, receiver: WebhookReceiver, form: str) -> None:
    # max_backoff_s is 0.2 s here: a retry a second later can only come from Retry-After. An HTTP-date
    # has whole seconds, so "2 s from now" means between 1 and 2 s.
    receiver.set_mode("throttle", retry_after="1" if form == "seconds" else "date+2")
    await rig.start()
    fut = rig.journal.record(DoorClosed(open_s=1.0), key="door")
    await rig.until(lambda: len(receiver.snapshot()) >= 1 and receiver.snapshot()[0].answered_at > 0, what="the 429")
    receiver.set_mode("ok")
    await rig.until(lambda: len(receiver.accepted()) == 1, timeout=10, what="the retry")
    first, second = receiver.snapshot()[:2]
    assert first.status == 429 and second.status == 200 and first.id == second.id == (await fut).id
    gap = second.at - first.answered_at
    assert gap >= 0.95, f"retried {gap:.3f} s after a 429 asking for 1 s or more"
    assert len(receiver.snapshot()) == 2


async def test_outage_modes_lose_nothing_and_duplicates_are_identical(rig: Rig, receiver: WebhookReceiver) -> None:
    await rig.start(timeout_s=0.3)
    keys = ["door", "panel", "call-1"]
    n = 0

    async def burst(count: int) -> None:
        nonlocal n
        for _ in range(count):
            rig.journal.record(event_for(n, keys[n % 3]), key=keys[n % 3])
            n += 1
        await rig.journal.flush()

    for mode, kw in [("ok", {}), ("error", {}), ("down", {}), ("slow", {"slow_s": 0.45}), ("throttle", {"retry_after": "0"}),
                     ("redirect", {}), ("error", {})]:
        receiver.set_mode(mode, **kw)
        await burst(6)
        await asyncio.sleep(0.35)  # the stimulus: each failure mode lasts a while
    receiver.set_mode("ok")
    await rig.until(lambda: rig.outbox.backlog == 0, timeout=20, what="the backlog to drain")

    rows = rig.rows()
    assert all(r["delivered"] is not None for r in rows)
    assert {r.id for r in receiver.unique()} == {r["id"] for r in rows}
    assert_order_per_key(rig, receiver)
    statuses = {r.status for r in receiver.snapshot()}
    assert {500, 429, 302, 200} <= statuses, statuses
    assert any(r.mode == "slow" for r in receiver.snapshot()), "the slow phase never saw a request"
    bodies: dict[str, str] = {}
    for r in receiver.snapshot():
        assert bodies.setdefault(r.id or "", r.body) == r.body, "a retry changed the body of an event"
    assert receiver.others == [], "a redirect was followed"


async def test_redirect_is_a_failure_and_is_not_followed(rig: Rig, receiver: WebhookReceiver) -> None:
    receiver.set_mode("redirect")
    await rig.start()
    rig.journal.record(DoorClosed(open_s=1.0), key="door")
    await rig.until(lambda: len(receiver.snapshot()) >= 2, what="two attempts")
    assert receiver.others == []
    assert rig.rows()[0]["delivered"] is None
    assert "redirects" in rig.outbox.status()["last_failure"]["detail"]


async def test_restart_sends_nothing_acknowledged_again(rig: Rig, receiver: WebhookReceiver) -> None:
    await rig.start()
    for i in range(30):
        rig.journal.record(event_for(i, ["door", "call-9"][i % 2]), key=["door", "call-9"][i % 2])
    await rig.journal.flush()
    await rig.until(lambda: rig.outbox.backlog == 0, what="first drain")
    await rig.stop()
    assert all(r["delivered"] is not None for r in rig.rows())

    receiver.set_mode("error")
    rig.open()
    for i in range(10):
        rig.journal.record(event_for(i, "door"), key="door")
    await rig.journal.flush()
    await rig.start()
    await rig.until(lambda: sum(r.status == 500 for r in receiver.snapshot()) >= 1, what="a failure")
    await rig.stop()  # a restart in the middle of an outage

    receiver.set_mode("ok")
    rig.open()
    await rig.start()
    await rig.until(lambda: rig.outbox.backlog == 0 and len(receiver.unique()) == 40, what="second drain")
    accepted = [r.id for r in receiver.accepted()]
    assert len(accepted) == len(set(accepted)) == 40, "an acknowledged event was sent again"
    assert_order_per_key(rig, receiver)


async def test_gone_disables_until_the_url_changes(rig: Rig, receiver: WebhookReceiver) -> None:
    receiver.set_mode("gone")
    await rig.start()
    rig.journal.record(DoorClosed(open_s=1.0), key="door")
    await rig.until(lambda: rig.outbox.disabled is not None, what="disabled")
    status = rig.outbox.status()
    assert status["disabled"]["status"] == 410 and not rig.outbox.healthy()
    assert not rig.outbox.accepting("panel.heartbeat")
    for i in range(3):
        rig.journal.record(event_for(i, "call-1"), key="call-1")
    await rig.journal.flush()
    await asyncio.sleep(0.3)  # a window in which nothing more may be delivered
    assert len(receiver.snapshot()) == 1
    await rig.stop()

    receiver.set_mode("ok")
    rig.open()
    await rig.start()  # same URL: stays disabled across a restart
    await asyncio.sleep(0.3)  # a window in which nothing may be delivered
    assert rig.outbox.disabled is not None and len(receiver.snapshot()) == 1
    assert rig.outbox.backlog == 4
    await rig.stop()

    rig.url = receiver.url + "?v=2"  # the installer points the panel at the backend's new endpoint
    rig.open()
    await rig.start()
    await rig.until(lambda: rig.outbox.backlog == 0, what="delivery to the new URL")
    assert rig.outbox.disabled is None and len(receiver.unique()) == 4
    assert rig.store is not None and rig.store.get_kv(DISABLED_KEY) is None


async def test_bound_sheds_oldest_heartbeats_and_records_what_went(rig: Rig, receiver: WebhookReceiver) -> None:
    # An outage filled the outbox while the panel was down; it starts with 35 undelivered events, limit 30.
    journal = rig.open()
    hb = [journal.record(heartbeat_event(i), key="panel") for i in range(25)]
    doors = [journal.record(event_for(i, "door"), key="door") for i in range(10)]
    await journal.flush()
    receiver.set_mode("down")
    outbox = await rig.start(max_events=30)  # headroom: max(10, 1%) -> shed 35 - 30 + 10 = 15
    await rig.until(lambda: any(r["type"] == "outbox.overflow" for r in rig.rows()), what="the overflow event")

    rows = rig.rows()
    left = {r["id"] for r in rows}
    assert {f.result().id for f in doors} <= left, "a door event was shed"
    hb_ids = [f.result().id for f in hb]
    shed = [i for i in hb_ids if i not in left]
    assert len(shed) == 15 and shed == hb_ids[:15], "not the oldest heartbeats"
    assert hb_ids[-1] in left
    overflow = json.loads(next(r for r in rows if r["type"] == "outbox.overflow")["data"])
    assert overflow["shed"] == {"panel.heartbeat": 15} and overflow["limit"] == 30 and overflow["refusing"] == []
    assert overflow["shed_from"] <= overflow["shed_to"]  # 15 heartbeats may share a millisecond
    assert outbox.backlog == 35 - 15 + 1 == len([r for r in rows if r["delivered"] is None])
    assert not outbox.full and outbox.accepting("panel.heartbeat")

    receiver.set_mode("ok")
    await rig.until(lambda: outbox.backlog == 0, what="drain")
    assert {r.id for r in receiver.unique()} == left


async def test_full_outbox_keeps_everything_refuses_heartbeats_and_alarms(rig: Rig, receiver: WebhookReceiver) -> None:
    journal = rig.open()
    for i in range(25):
        journal.record(event_for(i, "door"), key="door")
    await journal.flush()
    receiver.set_mode("down")
    outbox = await rig.start(max_events=20)
    await rig.until(lambda: outbox.full and any(r["type"] == "outbox.overflow" for r in rig.rows()),
                    what="the full alarm and its event")
    assert not outbox.accepting("panel.heartbeat") and outbox.accepting("door.forced_open")
    assert not outbox.healthy() and outbox.status()["outbox_full"] is True
    rows = rig.rows()
    assert len([r for r in rows if r["type"] == "door.closed"]) == 25, "an event was dropped"
    overflow = json.loads(next(r for r in rows if r["type"] == "outbox.overflow")["data"])
    assert overflow["shed"] == {} and overflow["refusing"] == ["panel.heartbeat"]

    # heartbeats are refused while full: none is recorded
    beat = asyncio.create_task(heartbeat(journal, outbox, 0.02, time.monotonic()))
    await asyncio.sleep(0.2)  # ten heartbeat periods in which none may be recorded
    assert [r["type"] for r in rig.rows()].count("panel.heartbeat") == 0

    receiver.set_mode("ok")
    await rig.until(lambda: not outbox.full, what="the alarm to clear")
    await rig.until(lambda: any(r.type == "panel.heartbeat" for r in receiver.unique()), what="heartbeats again")
    beat.cancel()
    await asyncio.gather(beat, return_exceptions=True)


async def test_online_then_heartbeats_with_version_uptime_and_backlog(rig: Rig, receiver: WebhookReceiver) -> None:
    outbox = await rig.start()
    beat = asyncio.create_task(heartbeat(rig.journal, outbox, 0.05, time.monotonic() - 5))
    try:
        await rig.until(lambda: sum(r.type == "panel.heartbeat" for r in receiver.unique()) >= 2, what="heartbeats")
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
    got = receiver.unique()
    assert got[0].type == "panel.online"
    for r in got:
        data = json.loads(r.body)["data"]
        assert data["version"] and data["uptime_s"] >= 5 and data["backlog"] >= 0
        assert data["panel"] == {"id": "rig", "name": "Rig"}
        assert data["system_uptime_s"] is None or data["system_uptime_s"] > 0


async def test_delivered_callback_runs_after_the_mark_is_on_disk(rig: Rig, receiver: WebhookReceiver) -> None:
    seen: list[tuple[str, float | None]] = []

    def on_delivered(row: EventRow) -> None:
        assert rig.store is not None
        delivered = rig.store.read_sync(lambda c: c.execute("SELECT delivered FROM events WHERE seq=?",
                                                            (row.seq,)).fetchone()[0])
        seen.append((row.id, delivered))

    await rig.start(on_delivered=on_delivered)
    ids = [(await rig.journal.record(event_for(i, "call-5"), key="call-5")).id for i in range(3)]
    await rig.until(lambda: len(seen) == 3, what="three callbacks")
    assert [s[0] for s in seen] == ids
    assert all(d is not None for _, d in seen)


async def test_backlog_counts_events_recorded_before_and_while_running(rig: Rig, receiver: WebhookReceiver) -> None:
    receiver.set_mode("down")
    journal = rig.open()
    for i in range(7):
        journal.record(event_for(i, "door"), key="door")
    await journal.flush()
    outbox = await rig.start()
    for i in range(5):
        journal.record(event_for(i, "call-2"), key="call-2")
    await journal.flush()
    await eventually(lambda: outbox.backlog == 12, 2, "the outbox counting the new events")
    assert outbox.backlog == 12 == len([r for r in rig.rows() if r["delivered"] is None])
    receiver.set_mode("ok")
    await rig.until(lambda: outbox.backlog == 0, what="drain")
    assert len(receiver.unique()) == 12
