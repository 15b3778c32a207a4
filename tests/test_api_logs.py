"""The access log (paging, filters) and the event history: pull, long-poll and server-sent events,
each resuming after an event id, scoped for residents, ended at once by a revocation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .api_support import api_rig, auth_of, bearer, served, token
from .rig import Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = api_rig(tmp_path)
    yield r
    await r.close()


async def _release(rig: Rig, **kw: Any) -> None:
    await rig.door.unlock(**{"cause": "remote", "actor": "backend", "method": "mqtt", **kw})
    rig.door.release()
    await rig.settle()


async def test_access_log_pages_and_filters(rig: Rig) -> None:
    await _release(rig, actor="alice")
    await _release(rig, actor="bob", method="api")
    await _release(rig, cause="installer", actor="installer", method="api")
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        page1 = (await c.get("/api/v1/logs/access", headers=installer, params={"per_page": 2})).json()
        page2 = (await c.get("/api/v1/logs/access", headers=installer, params={"per_page": 2, "page": 2})).json()
        assert page1["total"] == page2["total"] == 3
        assert [e["actor"] for e in page1["entries"] + page2["entries"]] == ["installer", "bob", "alice"]
        r = (await c.get("/api/v1/logs/access", headers=installer, params={"method": "api", "cause": "remote"})).json()
        assert [e["actor"] for e in r["entries"]] == ["bob"]
        r = (await c.get("/api/v1/logs/access", headers=installer, params={"actor": "alice"})).json()
        assert r["total"] == 1 and r["entries"][0]["event_id"]
        r = await c.get("/api/v1/logs/access", headers=installer, params={"since": "2020-01-01T00:00:00"})
        assert r.status_code == 422 and "since" in r.json()["message"]
        r = (await c.get("/api/v1/logs/access", headers=installer, params={"until": "2020-01-01T00:00:00Z"})).json()
        assert r["total"] == 0
        r = await c.get("/api/v1/logs/access", headers=installer, params={"cause": "magic"})
        assert r.status_code == 422 and "cause" in r.json()["message"]


async def test_event_pull_resumes_after_an_id(rig: Rig) -> None:
    installer = bearer(await token(rig, "installer"))
    await rig.drive(rig.cfg.tamper, True)
    async with served(rig) as c:
        first = (await c.get("/api/v1/events", headers=installer, params={"after": "0"})).json()
        assert first["code"] == "ok" and first["events"]
        seqs = [e["seq"] for e in first["events"]]
        assert seqs == sorted(seqs)
        cursor = first["last_id"]
        assert (await c.get("/api/v1/events", headers=installer, params={"after": cursor})).json()["events"] == []
        await rig.drive(rig.cfg.tamper, False)
        await c.post("/api/v1/tamper/clear", headers=installer)
        await _release(rig)
        new = (await c.get("/api/v1/events", headers=installer, params={"after": cursor, "type": "door.*"})).json()
        assert [e["type"] for e in new["events"]] == ["door.unlocked", "door.locked"]
        only = (await c.get("/api/v1/events", headers=installer, params={"after": cursor, "type": "door.locked"})).json()
        assert [e["type"] for e in only["events"]] == ["door.locked"]
        pref = (await c.get("/api/v1/events", headers=installer, params={"after": "0", "type": "door.*"})).json()
        assert {e["type"] for e in pref["events"]} == {"door.unlocked", "door.locked"}
        assert [e["type"] for e in first["events"]] == ["panel.tamper"]
        paged = (await c.get("/api/v1/events", headers=installer, params={"after": "0", "limit": 1})).json()
        assert len(paged["events"]) == 1 and paged["more"] is True
        r = await c.get("/api/v1/events", headers=installer, params={"after": "no-such-event"})
        assert r.status_code == 404 and r.json()["code"] == "unknown_event"
        r = await c.get("/api/v1/events", headers=installer, params={"type": "DROP TABLE"})
        assert r.status_code == 422 and "type" in r.json()["message"]


async def test_long_poll_wakes_on_the_next_event(rig: Rig) -> None:
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        r = (await c.get("/api/v1/events", headers=installer, params={"after": "now", "wait_s": 0.2})).json()
        assert r["events"] == []
        waiting = asyncio.create_task(c.get("/api/v1/events", headers=installer,
                                            params={"after": "now", "wait_s": 20, "type": "door.*"}))
        await asyncio.sleep(0.3)  # a window in which nothing may happen
        assert not waiting.done()
        await _release(rig)
        got = (await asyncio.wait_for(waiting, 10)).json()
        assert [e["type"] for e in got["events"]][:1] == ["door.unlocked"]


async def _sse_events(lines: AsyncIterator[str], count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in lines:
        if line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            out.append(current)
            current = {}
            if len(out) >= count:
                return out
    return out


async def test_sse_streams_live_and_resumes_from_last_event_id(rig: Rig) -> None:
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        async with c.stream("GET", "/api/v1/events/stream", headers=installer, params={"type": "door.*"}) as s:
            lines = s.aiter_lines()
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            await _release(rig, actor="first")
            live = await asyncio.wait_for(_sse_events(lines, 2), 10)
        assert [e["event"] for e in live] == ["door.unlocked", "door.locked"]
        assert live[0]["data"]["data"]["actor"] == "first" and live[0]["id"] == live[0]["data"]["id"]
        await _release(rig, actor="while-away")  # the client is disconnected now
        resume = {**installer, "Last-Event-ID": live[-1]["id"]}
        async with c.stream("GET", "/api/v1/events/stream", headers=resume, params={"type": "door.*"}) as s:
            lines = s.aiter_lines()
            missed = await asyncio.wait_for(_sse_events(lines, 2), 10)
        assert [e["data"]["data"].get("actor") for e in missed] == ["while-away", None]
        assert missed[0]["data"]["seq"] > live[-1]["data"]["seq"]
        r = await c.get("/api/v1/events/stream", headers={**installer, "Last-Event-ID": "gone"})
        assert r.status_code == 404 and r.json()["code"] == "unknown_event"


async def test_resident_stream_shows_their_calls_only_and_ends_when_revoked(rig: Rig) -> None:
    resident = await token(rig, "resident", "alice", unit_id="303")
    async with served(rig) as c:
        async with c.stream("GET", "/api/v1/events/stream", headers=bearer(resident)) as s:
            lines = s.aiter_lines()
            await rig.drive(rig.cfg.buttons[1], True)  # unit 304: not alice's
            await rig.drive(rig.cfg.buttons[1], False)
            await rig.panel.calls.end(None, "installer")
            await _release(rig)
            await rig.drive(rig.cfg.buttons[0], True)  # unit 303: rings alice
            await rig.drive(rig.cfg.buttons[0], False)
            got = await asyncio.wait_for(_sse_events(lines, 2), 10)
            assert [e["event"] for e in got] == ["call.created", "call.status_updated"]
            assert {e["data"]["data"]["unit"]["id"] for e in got} == {"303"}
            auth = auth_of(rig)
            await auth.tokens.revoke([auth.tokens.lookup(resident).token_id])
            rest = await asyncio.wait_for(_sse_events(lines, 1), 10)
            assert rest[0]["event"] == "revoked"
        r = await c.get("/api/v1/events", headers=bearer(resident))
        assert r.status_code == 401
