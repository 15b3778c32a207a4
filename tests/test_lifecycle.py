"""The one component lifecycle: declared order (as documented), relays off first, a bounded stop, no
component created behind the composition root's back."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from panel.daemon import STOP_BUDGET_S, Panel
from panel.platform import BaseComponent, Hooks, Lifecycle, StopReason

from .media_rig import INSTALLER, api, start_panel_inprocess

ROOT = Path(__file__).resolve().parents[1]


def documented_order() -> list[str]:
    """The component column of the lifecycle table in docs/architecture.md."""
    text = (ROOT / "docs/architecture.md").read_text()
    table = text[text.index("### One lifecycle"):text.index("The backend link, the API and media")]
    return re.findall(r"^\| \d+ \| `([a-z_]+)` \|", table, flags=re.M)


async def test_components_start_in_the_documented_order_and_stop_relays_first(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path)
    try:
        names = panel.lifecycle.names()
        # webhooks, mqtt, publishing and update are not configured here: every other documented component runs,
        # in order
        assert names == [n for n in documented_order() if n not in ("webhooks", "mqtt", "publishing", "update")]
        async with api(panel) as client:
            r = await client.post("/api/v1/door/open", json={}, headers={"Authorization": f"Bearer {INSTALLER}"})
            assert r.status_code == 200, r.text
        assert panel.hw.relays["main"].value
        order: list[str] = []
        # The mock pin, not the device: the device is closed by the gpio component's own stop.
        strike = panel.hw.factory.pin(f"GPIO{panel.cfg.relay('main').pin}")
        on_level = panel.cfg.relay("main").active == "high"
        # Watch the first thing each phase does: the relay must be off before any component stops.
        for comp in panel.lifecycle.components:
            original = comp.stop

            async def spy(comp: object = comp, original: object = original) -> None:
                order.append(f"stop:{comp.name}:relay={'on' if bool(strike.state) == on_level else 'off'}")  # type: ignore[attr-defined]
                await original()  # type: ignore[operator]

            comp.stop = spy  # type: ignore[method-assign]
    finally:
        await panel.stop("test over")
    assert order[0].startswith("stop:housekeeping") and order[-1].startswith("stop:store")
    assert all(o.endswith("relay=off") for o in order), order


async def test_a_release_in_force_is_locked_with_reason_shutdown_before_panel_stopped(tmp_path: Path) -> None:
    panel = await start_panel_inprocess(tmp_path, media=None)
    await panel.door.unlock(cause="installer", actor="installer", method="api")
    db = panel.cfg.storage.dir / "panel.db"
    await panel.stop("test over")
    import sqlite3

    with sqlite3.connect(db) as c:
        rows = [(t, d) for t, d in c.execute("SELECT type, data FROM events ORDER BY seq")]
    types = [t for t, _ in rows]
    assert types.index("door.locked") < types.index("panel.stopped")
    assert json.loads(rows[types.index("door.locked")][1])["reason"] == "shutdown"


async def test_a_stop_that_hangs_is_cut_at_its_share_of_the_budget() -> None:
    lc = Lifecycle()
    stopped: list[str] = []

    class Hangs(BaseComponent):
        name = "hangs"
        stop_cap_s = 0.3

        async def stop(self) -> None:
            await asyncio.Event().wait()  # never returns by itself

    await lc.start(Hooks("first", on_stop=lambda: stopped.append("first")))
    await lc.start(Hangs())
    t0 = time.monotonic()
    await lc.stop(time.monotonic() + STOP_BUDGET_S)
    took = time.monotonic() - t0
    assert stopped == ["first"], "the component started before the hanging one was not stopped"
    assert 0.25 <= took < 1.0


async def test_stopping_runs_in_start_order_and_a_failure_does_not_skip_the_rest() -> None:
    lc = Lifecycle()
    seen: list[str] = []

    def boom(_r: StopReason) -> None:
        raise RuntimeError("cannot reach safe state")

    lc.add_started(Hooks("door", on_stopping=lambda r: seen.append(f"door:{r.failed}")))
    lc.add_started(Hooks("broken", on_stopping=boom))
    lc.add_started(Hooks("api", on_stopping=lambda r: seen.append("api")))
    lc.stopping(StopReason("component x failed", failed=True))
    assert seen == ["door:True", "api"]


async def test_a_component_name_is_started_once() -> None:
    lc = Lifecycle()
    await lc.start(Hooks("door"))
    with pytest.raises(ValueError, match="door"):
        await lc.start(Hooks("door"))


async def test_routes_store_nothing_on_the_panel(tmp_path: Path) -> None:
    """Every attribute of the composition root is declared by it; using the API adds none."""
    panel = await start_panel_inprocess(tmp_path)
    declared = set(vars(panel))
    try:
        headers = {"Authorization": f"Bearer {INSTALLER}"}
        async with api(panel) as client:
            for path in ("/api/v1/state", "/api/v1/health", "/api/v1/calls", "/api/v1/events", "/api/v1/access",
                         "/api/v1/config", "/api/v1/system", "/api/v1/auth/tokens"):
                r = await client.get(path, headers=headers)
                assert r.status_code < 500, (path, r.text)
            press = panel.calls.press("b303")
            assert press.call is not None
            await panel.journal.flush()
            r = await client.post(f"/api/v1/calls/{press.call.guid}/links", headers=headers, json={})
            assert r.status_code < 500, r.text
    finally:
        await panel.stop("test over")
    assert set(vars(panel)) == declared, set(vars(panel)) ^ declared
    assert not [k for k in vars(panel) if k.startswith("_") and k not in
                {"_background", "_stopped", "_core_built"}], "a private attribute was stored on the panel"


def test_panel_declares_its_components_as_typed_attributes() -> None:
    hints = Panel.__init__.__code__.co_varnames
    assert "cfg" in hints
    source = (ROOT / "panel/daemon.py").read_text()
    for attr in ("store", "hw", "journal", "door", "lights", "calls", "participants", "call_links", "api",
                 "api_auth", "outbox", "mqtt", "media", "visitor"):
        assert re.search(rf"self\.{attr}: [A-Za-z]", source), f"Panel.{attr} is not declared with a type"
