"""The call state machine and the call log, on a fake clock and a real store (no mocks)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from panel.calls import BACKEND, TRANSITIONS, Actor, CallManager, CallService
from panel.errors import CallError
from panel.platform import Config, FakeClock, Journal, Store, parse_config

from .support import config_dict, start_panel

RING_S = 30.0
MAX_S = 120.0
WEBHOOK = {"url": "http://127.0.0.1:9/hooks"}  # configured, never contacted: nothing acknowledges


def make_cfg(tmp_path: Path, webhooks: dict[str, Any] | None = None, **calls: Any) -> Config:
    data = config_dict(calls={"ring_timeout_s": RING_S, "max_call_s": MAX_S, "call_type": "video", **calls})
    data["storage"] = {"dir": str(tmp_path / "state")}
    if webhooks is not None:
        data["webhooks"] = webhooks
    return parse_config(data)


@dataclass
class Bench:
    """A CallManager on a FakeClock and a real store, plus readers for what reached the disk."""

    cfg: Config
    clock: FakeClock
    store: Store
    journal: Journal
    calls: CallManager

    @classmethod
    def build(cls, cfg: Config, clock: FakeClock | None = None) -> Bench:
        clock = clock or FakeClock()
        store = Store(cfg.storage.dir / "panel.db")
        journal = Journal(store, clock, cfg.panel, boot_id="test-boot")
        return cls(cfg, clock, store, journal, CallManager(cfg, journal, clock))

    async def settle(self) -> None:
        await asyncio.sleep(0)
        await self.journal.flush()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()

    async def press(self, button: str = "b303") -> None:
        self.calls.on_button(button)
        await self.settle()

    def events(self, type_prefix: str = "call.") -> list[dict[str, Any]]:
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT id, type, key, data FROM events WHERE type LIKE ? ORDER BY seq", (type_prefix + "%",)).fetchall())
        return [{"event_id": r["id"], "type": r["type"], "key": r["key"], **json.loads(r["data"])} for r in rows]

    def statuses(self, guid: str) -> list[str]:
        return [e["status"] for e in self.events() if e["guid"] == guid]

    def row(self, guid: str) -> dict[str, Any]:
        row = self.store.read_sync(lambda c: c.execute("SELECT * FROM calls WHERE guid=?", (guid,)).fetchone())
        assert row is not None, f"no call-log row for {guid}"
        return dict(row)

    def transitions(self, guid: str) -> list[dict[str, Any]]:
        return self.store.read_sync(lambda c: [dict(r) for r in c.execute(
            "SELECT * FROM call_transitions WHERE guid=? ORDER BY seq", (guid,))])

    def assert_log_matches_events(self) -> None:
        """Every call event has exactly one transition row naming it, with the same move, and back."""
        events = self.events()
        rows = self.store.read_sync(lambda c: [dict(r) for r in c.execute("SELECT * FROM call_transitions ORDER BY seq")])
        assert [r["event_id"] for r in rows] == [e["event_id"] for e in events]
        for ev, row in zip(events, rows, strict=True):
            assert ev["key"] == ev["guid"] == row["guid"]
            assert row["to_state"] == ev["status"]
            assert row["from_state"] == ev.get("previous_status")
        for guid in {e["guid"] for e in events}:
            assert self.row(guid)["state"] == self.statuses(guid)[-1]

    async def close(self) -> None:
        await self.journal.flush()
        self.store.close()


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    """No webhook endpoint: calls ring at once."""
    b = Bench.build(make_cfg(tmp_path))
    yield b
    await b.close()


@pytest.fixture
async def acked(tmp_path: Path) -> AsyncIterator[Bench]:
    """A webhook endpoint is configured: calls stay in ``calling`` until acknowledged."""
    b = Bench.build(make_cfg(tmp_path, webhooks=WEBHOOK))
    yield b
    await b.close()


async def ringing_call(b: Bench, button: str = "b303") -> str:
    await b.press(button)
    assert b.calls.current is not None
    if b.calls.current.state == "calling":
        b.calls.backend_acknowledged(b.calls.current.guid)
        await b.settle()
    assert b.calls.current.state == "ringing"
    return b.calls.current.guid


async def expect_error(code: str, coro: Any) -> CallError:
    with pytest.raises(CallError) as info:
        await coro
    assert info.value.code == code, str(info.value)
    return info.value


# -- creation and acknowledgement -----------------------------------------------------------------


async def test_press_creates_a_call_that_waits_for_the_backend(acked: Bench) -> None:
    await acked.press("b303")
    call = acked.calls.current
    assert call is not None and call.state == "calling"
    [created] = acked.events()
    assert created["type"] == "call.created"
    assert created["guid"] == call.guid and created["key"] == call.guid
    assert created["unit"] == {"id": "303", "label": "303"}
    assert created["button"] == "b303" and created["call_type"] == "video" and created["status"] == "calling"
    assert created["panel"] == {"id": "test-panel", "name": "Test entrance"}
    assert created["created_at"] == "2026-01-01T00:00:00.000Z"  # the FakeClock's wall start
    row = acked.row(call.guid)
    assert (row["state"], row["unit_id"], row["button"], row["call_type"]) == ("calling", "303", "b303", "video")
    [t] = acked.transitions(call.guid)
    assert (t["from_state"], t["to_state"], t["actor"], t["reason"]) == (None, "calling", "visitor", "button")
    assert t["event_id"] == created["event_id"]
    assert acked.calls.state()["status"] == "calling"
    acked.assert_log_matches_events()


async def test_acknowledgement_moves_calling_to_ringing_once(acked: Bench) -> None:
    await acked.press()
    guid = acked.calls.current.guid  # type: ignore[union-attr]
    acked.calls.backend_acknowledged(guid)
    acked.calls.backend_acknowledged(guid)  # a retried delivery acknowledges again: no second move
    acked.calls.backend_acknowledged("not-a-call")
    await acked.settle()
    assert acked.statuses(guid) == ["calling", "ringing"]
    ringing = acked.events()[-1]
    assert (ringing["previous_status"], ringing["who"], ringing["reason"]) == ("calling", "backend",
                                                                                "backend_acknowledged")
    assert acked.row(guid)["state"] == "ringing"
    acked.assert_log_matches_events()


async def test_without_a_webhook_endpoint_a_call_rings_at_once(bench: Bench) -> None:
    await bench.press()
    guid = bench.calls.current.guid  # type: ignore[union-attr]
    assert bench.statuses(guid) == ["calling", "ringing"]
    assert bench.events()[-1]["reason"] == "no_webhook_endpoint"
    bench.assert_log_matches_events()


async def test_audio_call_type_comes_from_config(tmp_path: Path) -> None:
    b = Bench.build(make_cfg(tmp_path, call_type="audio"))
    try:
        await b.press()
        assert b.calls.current.call_type == "audio"  # type: ignore[union-attr]
        assert {e["call_type"] for e in b.events()} == {"audio"}
    finally:
        await b.close()


async def test_every_call_gets_a_fresh_guid(bench: Bench) -> None:
    guids = []
    for _ in range(3):
        guids.append(await ringing_call(bench))
        await bench.calls.end(None, "resident-1")
    assert len(set(guids)) == 3


# -- answering: a unit is a ring group -------------------------------------------------------------


async def test_answer_connects_at_once_without_a_media_layer(bench: Bench) -> None:
    guid = await ringing_call(bench)
    call = await bench.calls.answer(guid, "resident-17")
    await bench.settle()
    assert call.state == "connected" and call.answered_by == "resident-17"
    assert call.participants == ["resident-17"]
    assert bench.statuses(guid) == ["calling", "ringing", "connecting", "connected"]
    connecting, connected = bench.events()[-2:]
    assert (connecting["who"], connecting["answered_by"], connecting["reason"]) == ("resident-17", "resident-17",
                                                                                   "answered")
    assert connecting["times"]["answered_at"] is not None
    assert (connected["previous_status"], connected["reason"], connected["answered_by"]) == (
        "connecting", "no_media_layer", "resident-17")
    row = bench.row(guid)
    assert (row["state"], row["answered_by"]) == ("connected", "resident-17")
    assert row["answered_at"] is not None and row["connected_at"] is not None
    state = bench.calls.state()
    assert state["status"] == "connected" and state["call"]["answered_by"] == "resident-17"
    bench.assert_log_matches_events()


async def test_first_answer_wins_and_the_second_is_told_who(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.calls.answer(guid, "resident-17")
    err = await expect_error("already_answered", bench.calls.answer(guid, "resident-42"))
    assert "resident-17" in str(err)
    err = await expect_error("already_answered", bench.calls.answer(None, "resident-42"))
    assert "resident-17" in str(err)
    # The winner repeating its answer is not an error and changes nothing.
    again = await bench.calls.answer(guid, "resident-17")
    await bench.settle()
    assert again.answered_by == "resident-17"
    assert bench.statuses(guid) == ["calling", "ringing", "connecting", "connected"]
    assert bench.row(guid)["answered_by"] == "resident-17"


async def test_simultaneous_answers_have_exactly_one_winner(bench: Bench) -> None:
    guid = await ringing_call(bench)
    who = [f"resident-{i}" for i in range(5)]
    results = await asyncio.gather(*(bench.calls.answer(guid, w) for w in who), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, CallError)]
    assert len(winners) == 1 and len(losers) == 4
    assert all(e.code == "already_answered" and winners[0].answered_by in str(e) for e in losers)
    await bench.settle()
    assert bench.statuses(guid).count("connecting") == 1


async def test_answer_before_the_acknowledgement_is_accepted(acked: Bench) -> None:
    await acked.press()
    guid = acked.calls.current.guid  # type: ignore[union-attr]
    await acked.calls.answer(None, "resident-3")
    acked.calls.backend_acknowledged(guid)  # late: the call is past calling
    await acked.settle()
    assert acked.statuses(guid) == ["calling", "connecting", "connected"]


# -- decline, cancel, end --------------------------------------------------------------------------


async def test_decline_ends_a_ringing_call(bench: Bench) -> None:
    guid = await ringing_call(bench)
    call = await bench.calls.decline(guid, "resident-9")
    await bench.settle()
    assert call.state == "declined" and bench.calls.current is None
    last = bench.events()[-1]
    assert (last["status"], last["previous_status"], last["declined_by"], last["who"]) == (
        "declined", "ringing", "resident-9", "resident-9")
    assert last["times"]["ended_at"] is not None
    row = bench.row(guid)
    assert (row["state"], row["ended_by"], row["reason"]) == ("declined", "resident-9", "declined")
    await expect_error("call_over", bench.calls.decline(guid, "resident-9"))
    await expect_error("no_call", bench.calls.decline(None, "resident-9"))
    bench.assert_log_matches_events()


async def test_decline_after_an_answer_is_refused(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.calls.answer(guid, "resident-1")
    err = await expect_error("already_answered", bench.calls.decline(guid, "resident-2"))
    assert "resident-1" in str(err)
    await bench.settle()
    assert bench.calls.current is not None and bench.calls.current.state == "connected"


async def test_visitor_cancel_before_an_answer(bench: Bench) -> None:
    guid = await ringing_call(bench)
    call = await bench.calls.cancel(guid, "visitor_hung_up")
    await bench.settle()
    assert call.state == "canceled"
    last = bench.events()[-1]
    assert (last["status"], last["who"], last["ended_by"], last["reason"]) == ("canceled", "visitor", "visitor",
                                                                                "visitor_hung_up")
    bench.assert_log_matches_events()


async def test_visitor_cancel_after_an_answer_ends_the_call(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.calls.answer(guid, "resident-1")
    call = await bench.calls.cancel(None, "visitor_hung_up")
    await bench.settle()
    assert call.state == "ended" and call.ended_by == "visitor"
    assert bench.statuses(guid)[-1] == "ended"


async def test_end_from_ringing(bench: Bench) -> None:
    guid = await ringing_call(bench)
    call = await bench.calls.end(guid, "backend")
    await bench.settle()
    assert call.state == "ended"
    last = bench.events()[-1]
    assert (last["previous_status"], last["ended_by"], last["reason"], last["answered_by"]) == (
        "ringing", "backend", "hangup", None)
    bench.assert_log_matches_events()


async def test_end_from_connected(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.calls.answer(guid, "resident-5")
    await bench.advance(12.5)
    call = await bench.calls.end(None, "resident-5")
    await bench.settle()
    assert call.state == "ended"
    last = bench.events()[-1]
    assert (last["previous_status"], last["ended_by"], last["answered_by"]) == ("connected", "resident-5",
                                                                              "resident-5")
    assert last["duration_s"] == pytest.approx(12.5)
    assert bench.row(guid)["ended_at"] - bench.row(guid)["created_at"] == pytest.approx(12.5)
    await expect_error("call_over", bench.calls.end(guid, "resident-5"))
    bench.assert_log_matches_events()


# -- timers -----------------------------------------------------------------------------------------


async def test_ring_timeout_misses_the_call(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.advance(RING_S - 0.01)
    assert bench.calls.current is not None and bench.calls.current.state == "ringing"
    await bench.advance(0.02)
    assert bench.calls.current is None
    last = bench.events()[-1]
    assert (last["status"], last["reason"], last["who"]) == ("missed", "ring_timeout", None)
    assert last["duration_s"] == pytest.approx(RING_S)
    assert bench.row(guid)["state"] == "missed"
    bench.assert_log_matches_events()


async def test_an_unacknowledged_call_still_times_out(acked: Bench) -> None:
    await acked.press()
    guid = acked.calls.current.guid  # type: ignore[union-attr]
    await acked.advance(RING_S + 0.01)
    assert acked.statuses(guid) == ["calling", "missed"]
    assert acked.calls.current is None


async def test_an_answered_call_is_not_missed_but_ends_at_max_call_s(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.advance(5)
    await bench.calls.answer(guid, "resident-1")
    await bench.advance(RING_S)  # past the ring timeout: no effect on an answered call
    assert bench.calls.current is not None and bench.calls.current.state == "connected"
    await bench.advance(MAX_S - RING_S - 5 - 0.01)
    assert bench.calls.current is not None
    await bench.advance(0.02)
    assert bench.calls.current is None
    last = bench.events()[-1]
    assert (last["status"], last["reason"], last["ended_by"]) == ("ended", "max_call_s", "panel")
    assert bench.clock.pending() == 0  # no timer left behind
    bench.assert_log_matches_events()


async def test_a_finished_call_leaves_no_timer(bench: Bench) -> None:
    await ringing_call(bench)
    await bench.calls.decline(None, "resident-1")
    assert bench.clock.pending() == 0
    await bench.advance(MAX_S * 2)
    assert [e["status"] for e in bench.events()][-1] == "declined"


# -- pressing during a call -------------------------------------------------------------------------


async def test_same_button_ignored_by_default(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.press("b303")
    assert bench.calls.current is not None and bench.calls.current.guid == guid
    assert bench.statuses(guid) == ["calling", "ringing"]
    [pressed] = bench.events("button.")
    assert (pressed["outcome"], pressed["call_guid"], pressed["button"]) == ("ignored", guid, "b303")
    assert bench.calls.press("b303").action == "ignored"


async def test_same_button_cancels_when_configured(tmp_path: Path) -> None:
    b = Bench.build(make_cfg(tmp_path, same_button_during_call="cancel"))
    try:
        guid = await ringing_call(b)
        await b.press("b303")
        assert b.calls.current is None
        last = b.events()[-1]
        assert (last["status"], last["who"], last["reason"]) == ("canceled", "visitor", "pressed_again")
        # The next press is a new call.
        await b.press("b303")
        assert b.calls.current is not None and b.calls.current.guid != guid
        b.assert_log_matches_events()
    finally:
        await b.close()


async def test_same_button_never_cancels_an_answered_call(tmp_path: Path) -> None:
    b = Bench.build(make_cfg(tmp_path, same_button_during_call="cancel"))
    try:
        guid = await ringing_call(b)
        await b.calls.answer(guid, "resident-1")
        await b.press("b303")
        assert b.calls.current is not None and b.calls.current.state == "connected"
        assert b.events("button.")[-1]["outcome"] == "ignored"
    finally:
        await b.close()


async def test_other_unit_rejected_as_busy_by_default(bench: Bench) -> None:
    guid = await ringing_call(bench, "b303")
    await bench.press("b304")
    assert bench.calls.current is not None and bench.calls.current.guid == guid
    [pressed] = bench.events("button.")
    assert (pressed["outcome"], pressed["unit_id"], pressed["call_guid"]) == ("busy", "304", guid)
    assert {e["unit"]["id"] for e in bench.events()} == {"303"}


async def test_other_unit_replaces_an_unanswered_call_when_configured(tmp_path: Path) -> None:
    b = Bench.build(make_cfg(tmp_path, other_button_during_call="replace"))
    try:
        old = await ringing_call(b, "b303")
        await b.press("b304")
        new = b.calls.current
        assert new is not None and new.guid != old and new.unit_id == "304"
        assert b.statuses(old)[-1] == "canceled"
        assert b.events()[2]["reason"] == "replaced"  # the old call closes before the new one exists
        assert b.events()[3]["type"] == "call.created" and b.events()[3]["guid"] == new.guid
        # Answered calls are never replaced.
        await b.calls.answer(new.guid, "resident-4")
        await b.press("b303")
        assert b.calls.current is not None and b.calls.current.guid == new.guid
        assert b.events("button.")[-1]["outcome"] == "busy"
        b.assert_log_matches_events()
    finally:
        await b.close()


# -- commands naming calls ---------------------------------------------------------------------------


async def test_commands_without_a_call_or_with_bad_input(bench: Bench) -> None:
    await expect_error("no_call", bench.calls.answer(None, "resident-1"))
    await expect_error("no_call", bench.calls.end(None, "resident-1"))
    await expect_error("unknown_call", bench.calls.answer("0000", "resident-1"))
    guid = await ringing_call(bench)
    await expect_error("unknown_call", bench.calls.end("0000", "resident-1"))
    await expect_error("invalid_actor", bench.calls.answer(guid, ""))
    await expect_error("invalid_actor", bench.calls.answer(guid, "x" * 500))
    await expect_error("invalid_actor", bench.calls.answer(guid, "bad\nname"))
    await bench.settle()
    assert bench.statuses(guid) == ["calling", "ringing"]  # nothing changed


async def test_active_call_for_unlock(bench: Bench) -> None:
    with pytest.raises(CallError) as e:
        bench.calls.active_call_for_unlock(None)
    assert e.value.code == "no_call"
    guid = await ringing_call(bench)
    for ask in (None, guid):
        with pytest.raises(CallError) as e:
            bench.calls.active_call_for_unlock(ask)
        assert e.value.code == "not_answered"
    with pytest.raises(CallError) as e:
        bench.calls.active_call_for_unlock("someone-elses")
    assert e.value.code == "unknown_call"
    await bench.calls.answer(guid, "resident-1")
    assert bench.calls.active_call_for_unlock(None).guid == guid
    assert bench.calls.active_call_for_unlock(guid).answered_by == "resident-1"
    await bench.calls.end(guid, "resident-1")
    with pytest.raises(CallError) as e:
        bench.calls.active_call_for_unlock(guid)
    assert e.value.code == "call_over"
    with pytest.raises(CallError) as e:
        bench.calls.active_call_for_unlock(None)
    assert e.value.code == "no_call"


async def test_media_layer_connects_or_times_out(bench: Bench) -> None:
    bench.calls.attach_media()
    guid = await ringing_call(bench)
    call = await bench.calls.answer(guid, "resident-1")
    assert call.state == "connecting"
    bench.calls.media_connected(guid)
    bench.calls.media_connected(guid)  # repeated: no second move
    await bench.settle()
    assert bench.statuses(guid)[-2:] == ["connecting", "connected"]
    assert bench.events()[-1]["reason"] == "media_connected"
    await bench.calls.end(guid, "resident-1")

    guid = await ringing_call(bench)
    with pytest.raises(CallError) as e:
        bench.calls.media_connected(guid)
    assert e.value.code == "not_answered"
    await bench.calls.answer(guid, "resident-1")
    await bench.advance(31)
    last = bench.events()[-1]
    assert (last["status"], last["reason"]) == ("failed", "media_timeout")
    bench.assert_log_matches_events()


async def test_get_and_lookup(bench: Bench) -> None:
    guid = await ringing_call(bench)
    assert bench.calls.get(guid).state == "ringing"  # type: ignore[union-attr]
    await bench.calls.end(guid, "resident-1")
    assert bench.calls.get(guid).state == "ended"  # type: ignore[union-attr]
    assert bench.calls.get("nope") is None
    assert (await bench.calls.lookup(guid)).state == "ended"  # type: ignore[union-attr]
    assert await bench.calls.lookup("nope") is None


# -- the call log -----------------------------------------------------------------------------------


async def test_history_pages_newest_first_with_filters(bench: Bench) -> None:
    guids = []
    for i in range(5):
        guids.append(await ringing_call(bench, "b303" if i % 2 == 0 else "b304"))
        if i == 4:
            break  # the last one stays live
        await bench.calls.decline(None, f"resident-{i}")
        await bench.advance(1)
    page1 = await bench.calls.history(1, 2)
    page2 = await bench.calls.history(2, 2)
    page3 = await bench.calls.history(3, 2)
    assert [c["guid"] for c in page1 + page2 + page3] == guids[::-1]
    assert len(page3) == 1 and await bench.calls.history(4, 2) == []
    assert page1[0]["status"] == "ringing" and page1[0]["duration_s"] is not None
    assert page1[1]["status"] == "declined" and page1[1]["declined_by"] == "resident-3"
    assert page1[1]["unit"] == {"id": "304", "label": "304"}
    units = await bench.calls.history(1, 10, unit_id="304")
    assert [c["guid"] for c in units] == [guids[3], guids[1]]
    assert await bench.calls.count(unit_id="304") == 2 and await bench.calls.count() == 5
    declined = await bench.calls.history(1, 10, status="declined")
    assert len(declined) == 4
    [with_t] = await bench.calls.history(5, 1, include_transitions=True)
    assert [(t["from"], t["to"]) for t in with_t["transitions"]] == [(None, "calling"), ("calling", "ringing"),
                                                                     ("ringing", "declined")]
    assert with_t["transitions"][-1]["actor"] == "resident-0"
    for bad in [{"page": 0, "per_page": 10}, {"page": 1, "per_page": 0}, {"page": 1, "per_page": 1000}]:
        await expect_error("invalid_query", bench.calls.history(**bad))
    await expect_error("invalid_query", bench.calls.history(1, 10, status="bogus"))


async def test_call_log_is_trimmed_to_history_max_rows(tmp_path: Path) -> None:
    data = config_dict()
    data["storage"] = {"dir": str(tmp_path / "state"), "history_max_rows": 100}
    cfg = parse_config(data)
    b = Bench.build(cfg)
    try:
        for _ in range(60):
            await ringing_call(b)
            await b.calls.end(None, "resident-1")
        await b.calls.start()
        assert await b.calls.count() == 60  # under the limit: nothing trimmed
        # A second manager (the next boot) on the same log: every 100th call of it trims.
        b.calls = CallManager(cfg, b.journal, b.clock)
        for i in range(100):
            await ringing_call(b)
            await b.calls.end(None, "resident-1")
            if i == 98:
                assert await b.calls.count() == 159  # trimming is periodic, not per call
        await b.settle()
        await b.store.write(lambda tx: None)  # the trim is queued behind the last call's writes
        assert await b.calls.count() == 100
        newest = await b.calls.history(1, 100)
        assert newest[0]["guid"] == b.events("call.created")[-1]["guid"]
        orphans = b.store.read_sync(lambda c: c.execute(
            "SELECT count(*) FROM call_transitions WHERE guid NOT IN (SELECT guid FROM calls)").fetchone()[0])
        assert orphans == 0
        assert len(b.events("call.created")) == 160  # the event journal is not the call log's to trim
    finally:
        await b.close()


async def test_start_never_closes_the_call_in_progress(bench: Bench) -> None:
    guid = await ringing_call(bench)
    assert await bench.calls.start() == []
    assert bench.calls.current is not None and bench.calls.current.guid == guid
    assert bench.row(guid)["state"] == "ringing"


# -- stopping and restarting ------------------------------------------------------------------------


async def test_shutdown_fails_a_live_call(bench: Bench) -> None:
    guid = await ringing_call(bench)
    await bench.calls.answer(guid, "resident-1")
    fut = bench.calls.close("shutdown")
    assert fut is not None
    await fut
    last = bench.events()[-1]
    assert (last["status"], last["reason"], last["previous_status"], last["ended_by"]) == (
        "failed", "shutdown", "connected", "panel")
    assert bench.calls.press("b303").action == "closed"
    await bench.settle()
    assert bench.calls.current is None and bench.clock.pending() == 0
    bench.assert_log_matches_events()


async def test_restart_closes_a_zombie_call_as_failed(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    first = Bench.build(cfg)
    guid = await ringing_call(first)
    await first.calls.answer(guid, "resident-8")
    # The process dies: nothing closes the call, the timers die with it.
    first.store.close()

    second = Bench.build(cfg, FakeClock(start=50.0, wall_start=1_767_300_000.0))
    try:
        closed = await second.calls.start()
        assert [c.guid for c in closed] == [guid]
        last = second.events()[-1]
        assert (last["guid"], last["status"], last["previous_status"], last["reason"], last["ended_by"]) == (
            guid, "failed", "connected", "restart", "panel")
        assert last["answered_by"] == "resident-8" and last["duration_s"] is None
        assert last["times"]["created_at"] == "2026-01-01T00:00:00.000Z"
        live = second.store.read_sync(lambda c: c.execute(
            "SELECT count(*) FROM calls WHERE state IN ('calling','ringing','connecting','connected')").fetchone()[0])
        assert live == 0
        [h] = await second.calls.history(1, 10)
        assert (h["status"], h["reason"], h["answered_by"]) == ("failed", "restart", "resident-8")
        # Commands naming it now hear that it is over, from the log.
        await expect_error("call_over", second.calls.end(guid, "resident-8"))
        assert await second.calls.start() == []  # nothing left to close
        second.assert_log_matches_events()
    finally:
        await second.close()


def test_transition_table_is_closed() -> None:
    """Every target is a known state, end states lead nowhere, and every live state can fail."""
    states = {s for s in TRANSITIONS if s is not None}
    for frm, tos in TRANSITIONS.items():
        assert tos <= states
        if frm in ("ended", "declined", "canceled", "missed", "failed"):
            assert not tos
        elif frm is not None:
            assert "failed" in tos and "ended" in tos


# -- the daemon ----------------------------------------------------------------------------------


def _db(path: Path) -> Callable[[str], list[sqlite3.Row]]:
    def q(sql: str) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    return q


TOKEN = "installer-token-for-tests"


@pytest.mark.slow
def test_press_on_a_running_panel_makes_a_call(tmp_path: Path) -> None:
    p = start_panel(tmp_path, env={"PANEL_SECRET_INSTALLER_TOKEN": TOKEN})
    db = _db(tmp_path / "state" / "panel.db")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert p.api("GET", "/api/v1/sim/state").json()["call"] == {"status": "idle", "call": None}
        # Visitors can ring while the tamper block is active.
        assert p.api("POST", "/api/v1/sim/tamper", json={"active": True}).status_code == 200
        r = p.api("POST", "/api/v1/sim/buttons/b303/press")
        assert r.status_code == 200, r.text
        created = [json.loads(row["data"]) for row in db("SELECT data FROM events WHERE type='call.created'")]
        assert len(created) == 1
        assert created[0]["unit"] == {"id": "303", "label": "303"} and created[0]["button"] == "b303"
        guid = created[0]["guid"]
        state = p.api("GET", "/api/v1/sim/state").json()
        assert state["call"]["status"] == "ringing"  # the test config has no webhook endpoint
        assert state["call"]["call"]["guid"] == guid and state["call"]["call"]["unit"]["label"] == "303"
        assert state["door"]["tamper"]["blocked"] is True
        p.api("POST", "/api/v1/sim/buttons/b303/release")
        # The call log over the API, for installers only.
        assert p.api("GET", "/api/v1/calls").status_code == 401
        page = p.api("GET", "/api/v1/calls", params={"per_page": 5}, headers=auth).json()
        assert page["total"] == 1 and [c["guid"] for c in page["calls"]] == [guid]
        one = p.api("GET", f"/api/v1/calls/{guid}", headers=auth).json()
        assert [t["to"] for t in one["transitions"]] == ["calling", "ringing"]
        missing = p.api("GET", "/api/v1/calls/nope", headers=auth)
        assert (missing.status_code, missing.json()["code"]) == (404, "unknown_call")
        bad = p.api("GET", "/api/v1/calls", params={"per_page": 1000}, headers=auth)
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")
    finally:
        assert p.stop() == 0
    # Stopping the daemon closed the call, so the log shows no zombie.
    [row] = db("SELECT state, reason FROM calls")
    assert (row["state"], row["reason"]) == ("failed", "shutdown")


@pytest.mark.slow
def test_a_call_cut_by_sigkill_is_closed_at_the_next_start(tmp_path: Path) -> None:
    p = start_panel(tmp_path)
    db = _db(tmp_path / "state" / "panel.db")
    try:
        assert p.api("POST", "/api/v1/sim/buttons/b304/press").status_code == 200
        assert p.api("GET", "/api/v1/sim/state").json()["call"]["status"] == "ringing"
    finally:
        p.kill()
    [row] = db("SELECT guid, state FROM calls")
    assert row["state"] == "ringing"  # the zombie, until the next start
    p.start()
    try:
        assert p.api("GET", "/api/v1/sim/state").json()["call"] == {"status": "idle", "call": None}
        [after] = db("SELECT guid, state, reason FROM calls")
        assert (after["guid"], after["state"], after["reason"]) == (row["guid"], "failed", "restart")
        last = json.loads(db("SELECT data FROM events WHERE type='call.status_updated' ORDER BY seq DESC LIMIT 1")
                          [0]["data"])
        assert (last["guid"], last["status"], last["previous_status"]) == (row["guid"], "failed", "ringing")
    finally:
        assert p.stop() == 0


# -- the CallService: who may do what (the adapters only translate) --------------------------------------

def _resident(subject: str, **kw: Any) -> Actor:
    return Actor(kind="resident", name=subject, subject=subject, unit_id=kw.pop("unit_id", "303"), **kw)


async def test_the_call_service_refuses_a_guest_everything_whatever_the_adapter(bench: Bench) -> None:
    """Defence in depth behind the role table: an invited guest never answers, declines, ends, mutes or
    invites, even with a credential for exactly this call."""
    service = CallService(bench.calls, lambda: None)
    await bench.press()
    guid = bench.calls.current.guid  # type: ignore[union-attr]
    guest = Actor(kind="guest", name="carol", subject="carol", call_guid=guid, credential_id="t1")

    async def never_issued(*a: Any) -> tuple[str, str]:
        raise AssertionError("a guest must not get a credential minted")

    for attempt in (service.answer(guest, guid), service.decline(guest, guid), service.end(guest, guid),
                    service.mute(guest, guid, audio=True), service.invite(guest, guid, "erin", None, issue=never_issued)):
        with pytest.raises(CallError) as e:
            await attempt
        assert e.value.code == "not_allowed_for_role"
    assert bench.calls.current is not None and bench.calls.current.state == "ringing"
    await service.answer(_resident("alice"), guid)
    for attempt in (service.end(guest, guid), service.mute(guest, guid, video=True)):
        with pytest.raises(CallError) as e:
            await attempt
        assert e.value.code == "not_allowed_for_role"
    assert bench.calls.current is not None and bench.calls.current.live


async def test_the_call_service_scopes_residents_and_lets_the_backend_name_them(bench: Bench) -> None:
    service = CallService(bench.calls, lambda: None)
    await bench.press()
    guid = bench.calls.current.guid  # type: ignore[union-attr]
    with pytest.raises(CallError) as e:
        await service.answer(_resident("zoe", unit_id="999"), guid)
    assert e.value.code == "not_your_call"
    with pytest.raises(CallError) as e:
        await service.answer(_resident("bob"), guid, who="alice")
    assert e.value.code == "acting_as_other"
    call = await service.answer(BACKEND, None, who="alice")
    assert call.answered_by == "alice"
    with pytest.raises(CallError) as e:
        await service.end(_resident("bob"), guid)
    assert e.value.code == "not_your_call"  # only the answerer ends it
    state = await service.mute(_resident("alice"), guid, audio=True)
    assert (state.muted, state.media) == ({"audio": True, "video": False}, False)
    assert bench.calls.state()["call"]["muted"] == {"audio": True, "video": False}
    ended = await service.end(_resident("alice"), guid)
    assert (ended.state, ended.ended_by, ended.reason) == ("ended", "alice", "hangup")
    with pytest.raises(CallError) as e:
        await service.mute(_resident("alice"), guid, audio=False)
    assert e.value.code == "call_over"


async def test_a_tied_credential_ends_only_its_own_call(bench: Bench) -> None:
    """The answerer's credential ties to the call it answered: revoking it ends that call (ended, by the
    answerer, credential_revoked); its expiry timer does not reach a later call."""
    service = CallService(bench.calls, lambda: None)
    await bench.press()
    first = bench.calls.current.guid  # type: ignore[union-attr]
    await service.answer(_resident("alice", credential_id="tok-a", expires_in_s=100), first)
    service.credential_revoked("tok-other")
    assert bench.calls.current is not None
    service.credential_revoked("tok-a")
    await bench.settle()
    assert bench.calls.current is None
    last = bench.events("call.status_updated")[-1]
    assert (last["guid"], last["status"], last["who"], last["reason"]) == (first, "ended", "alice",
                                                                           "credential_revoked")
    await bench.press()
    current = bench.calls.current
    assert current is not None
    second = current.guid
    await service.answer(_resident("bob", credential_id="tok-b", expires_in_s=1000), second)
    await bench.advance(101)  # tok-a's old deadline passes: nothing happens to bob's call
    assert bench.calls.current is not None and bench.calls.current.guid == second
    service.credential_revoked("tok-a")
    assert bench.calls.current is not None
    await bench.advance(MAX_S)  # max_call_s comes before tok-b's expiry
    assert bench.events("call.status_updated")[-1]["reason"] == "max_call_s"
