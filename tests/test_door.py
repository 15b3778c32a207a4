"""The door: releases, the contact, the exit button and the tamper block, on mock pins and a fake clock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from panel.daemon import Panel
from panel.door import Requester, UnlockRequest
from panel.errors import ConfigError, UnlockRefused
from panel.platform import Store, parse_config

from .rig import Rig, make_config
from .support import config_dict, start_panel


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(make_config(tmp_path))
    yield r
    await r.close()


async def test_release_is_journalled_before_the_relay_moves(tmp_path: Path) -> None:
    seen_at_commit: list[int] = []

    class ObservingStore(Store):
        # Records the relay pin level the moment each transaction has committed.
        def _write(self, fn: Any) -> Any:
            result = super()._write(fn)
            seen_at_commit.append(rig.relay_pin().state)
            return result

    class ObservingPanel(Panel):
        store_class = ObservingStore

    rig = Rig(make_config(tmp_path), panel_class=ObservingPanel)
    seen_at_commit.clear()
    await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    assert rig.relay_on()
    assert seen_at_commit[0] == 0, "the relay moved before the unlock was on disk"
    [row] = rig.access_log()
    assert (row["cause"], row["actor"], row["method"], row["relay"], row["duration_s"]) == (
        "remote", "backend", "mqtt", "main", 2.0)
    [ev] = rig.events("door.unlocked")
    assert ev["access_id"] == row["id"] and row["event_id"]
    await rig.close()


async def test_monostable_pulse_and_locked_event(rig: Rig) -> None:
    await rig.door.unlock(cause="call", actor="resident-8", method="api", call_guid="g-1")
    assert rig.relay_on()
    await rig.advance(1.99)
    assert rig.relay_on()
    await rig.advance(0.02)
    assert not rig.relay_on()
    [locked] = rig.events("door.locked")
    assert locked["reason"] == "timeout" and locked["on_s"] == pytest.approx(2.0, abs=0.01)
    assert rig.access_log()[0]["call_guid"] == "g-1"
    assert [s.state for s in rig.relay_pin().states] == [False, True, False]


async def test_duration_bounds_and_unknown_relay_are_refused_and_nothing_moves(rig: Rig) -> None:
    for kwargs, code in (({"duration_s": 0.1}, "bad_duration"), ({"duration_s": 7}, "bad_duration"),
                         ({"relay": "gate"}, "unknown_relay")):
        with pytest.raises(UnlockRefused) as exc:
            await rig.door.unlock(cause="remote", actor="backend", method="mqtt", **kwargs)
        assert exc.value.code == code
    await rig.settle()
    assert not rig.relay_on() and rig.access_log() == []
    assert [e["code"] for e in rig.events("door.unlock_refused")] == ["bad_duration", "bad_duration", "unknown_relay"]
    assert [s.state for s in rig.relay_pin().states] == [False]


async def test_bistable_holds_until_released(tmp_path: Path) -> None:
    data = config_dict()
    data["door"]["relays"][0] = {"id": "main", "pin": 26, "mode": "bistable", "hold_s": 2, "max_on_s": 600}
    rig = Rig(make_config(tmp_path, data))
    await rig.door.unlock(cause="remote", actor="backend", method="api")
    await rig.advance(300)
    assert rig.relay_on()
    assert rig.door.release()
    await rig.settle()
    assert not rig.relay_on()
    assert rig.events("door.locked")[0]["reason"] == "released"
    await rig.door.unlock(cause="remote", actor="backend", method="api")
    await rig.advance(600.01)
    assert not rig.relay_on() and rig.events("door.locked")[1]["reason"] == "max_on"
    await rig.close()


async def test_opening_during_a_release_relocks_and_names_the_grant(rig: Rig) -> None:
    await rig.door.unlock(cause="call", actor="resident-8", method="api", call_guid="g-2")
    await rig.drive(rig.cfg.door.contact, True)
    assert not rig.relay_on(), "relock_on_open should have de-energised the strike"
    [opened] = rig.events("door.opened")
    assert opened["authorised"] and opened["grant"]["call_guid"] == "g-2"
    assert rig.events("door.locked")[0]["reason"] == "relock_on_open"
    assert rig.events("door.forced_open") == []
    await rig.drive(rig.cfg.door.contact, False)
    assert rig.events("door.closed")[0]["open_s"] == pytest.approx(0.02, abs=0.01)


async def test_opening_without_a_release_is_forced_open_but_grace_counts(rig: Rig) -> None:
    await rig.drive(rig.cfg.door.contact, True)
    assert rig.events("door.forced_open") and rig.events("door.opened")[0]["authorised"] is False
    await rig.drive(rig.cfg.door.contact, False)
    await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    await rig.advance(2.0 + 2.5)  # the release ended 2.5 s ago; grace is 3 s
    await rig.drive(rig.cfg.door.contact, True)
    assert rig.events("door.opened")[-1]["authorised"] is True
    assert len(rig.events("door.forced_open")) == 1
    await rig.drive(rig.cfg.door.contact, False)
    await rig.advance(10)
    await rig.drive(rig.cfg.door.contact, True)
    assert len(rig.events("door.forced_open")) == 2


async def test_held_open_is_raised_once_then_closed(rig: Rig) -> None:
    await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    await rig.drive(rig.cfg.door.contact, True)
    await rig.advance(29.9)
    assert rig.events("door.held_open") == []
    await rig.advance(0.2)
    await rig.advance(100)
    [held] = rig.events("door.held_open")
    assert held["limit_s"] == 30 and rig.door.state()["held_open"]
    await rig.drive(rig.cfg.door.contact, False)
    assert rig.events("door.closed")[0]["open_s"] > 130 and not rig.door.state()["held_open"]


async def test_exit_button_opens_locally_and_is_logged(rig: Rig) -> None:
    await rig.drive(rig.cfg.door.exit_button, True)
    await rig.settle()
    assert rig.relay_on()
    [row] = rig.access_log()
    assert (row["cause"], row["method"], row["actor"]) == ("exit_button", "exit_button", "exit_button")
    await rig.drive(rig.cfg.door.exit_button, False)


async def test_tamper_blocks_remote_unlocks_until_cleared(rig: Rig) -> None:
    await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    await rig.drive(rig.cfg.tamper, True)
    assert not rig.relay_on(), "tamper must drop a remote release at once"
    assert rig.events("door.locked")[0]["reason"] == "tamper"
    with pytest.raises(UnlockRefused) as exc:
        await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    assert exc.value.code == "tamper_blocked"
    with pytest.raises(UnlockRefused) as exc:
        await rig.door.clear_tamper("installer")
    assert exc.value.code == "tamper_active"
    await rig.drive(rig.cfg.tamper, False)
    with pytest.raises(UnlockRefused):  # the housing is closed again but the block stays
        await rig.door.unlock(cause="call", actor="resident-8", method="api", call_guid="g")
    await rig.settle()
    assert [s.state for s in rig.relay_pin().states] == [False, True, False]
    # The exit button still lets people out (exit_button_overrides_tamper = true).
    await rig.drive(rig.cfg.door.exit_button, True)
    assert rig.relay_on()
    await rig.drive(rig.cfg.door.exit_button, False)
    await rig.advance(3)
    await rig.door.clear_tamper("installer")
    await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    assert rig.relay_on()
    types = rig.types()
    assert types.count("panel.tamper") == 2 and "panel.tamper_cleared" in types


async def test_tamper_block_survives_a_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    rig = Rig(cfg)
    await rig.drive(cfg.tamper, True)
    await rig.drive(cfg.tamper, False)
    await rig.close()
    rig = Rig(cfg)
    assert rig.door.tamper_blocked
    with pytest.raises(UnlockRefused):
        await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    await rig.door.clear_tamper("installer")
    await rig.close()
    rig = Rig(cfg)
    assert not rig.door.tamper_blocked
    await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    assert rig.relay_on()
    await rig.close()


async def test_exit_button_obeys_tamper_when_override_is_off(tmp_path: Path) -> None:
    data = config_dict()
    data["door"]["exit_button_overrides_tamper"] = False
    rig = Rig(make_config(tmp_path, data))
    await rig.drive(rig.cfg.tamper, True)
    await rig.drive(rig.cfg.door.exit_button, True)
    assert not rig.relay_on()
    assert rig.events("door.unlock_refused")[0]["cause"] == "exit_button"
    await rig.close()


async def test_tamper_tripping_while_the_release_is_being_written_moves_nothing(rig: Rig) -> None:
    task = asyncio.ensure_future(rig.door.unlock(cause="remote", actor="backend", method="mqtt"))
    await asyncio.sleep(0)  # the unlock has submitted its record and is waiting for the disk
    rig.door.tamper_changed(True)
    with pytest.raises(UnlockRefused) as exc:
        await task
    assert exc.value.code == "tamper_blocked"
    await rig.settle()
    assert [s.state for s in rig.relay_pin().states] == [False]
    # Its door.unlocked was already on disk: it gets its door.locked, so no backend sees it in force.
    [unlocked] = rig.events("door.unlocked")
    [locked] = rig.events("door.locked")
    assert (locked["access_id"], locked["reason"], locked["on_s"]) == (unlocked["access_id"], "tamper", 0)
    assert rig.store.get_kv("door_grant:main") is None


async def test_tamper_active_at_boot_is_reported_and_blocks(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    rig = Rig(cfg)
    rig.pin(cfg.tamper.pin).drive_high()  # housing opened while the panel was down
    await rig.close()
    # A fresh panel whose tamper pin reads active before inputs are wired (no resting in between).
    from panel.auth import Secrets
    from panel.daemon import Panel
    from panel.platform import FakeClock

    class Tampered(Panel):
        def _rest_simulated_inputs(self) -> None:
            super()._rest_simulated_inputs()
            self.hw.factory.pin(f"GPIO{cfg.tamper.pin}").drive_high()

    p = Tampered(cfg, Secrets(), simulate=True, clock=FakeClock())
    p.build_core()
    await p.journal.flush()
    assert p.door.tamper_active and p.door.tamper_blocked
    with pytest.raises(UnlockRefused):
        await p.door.unlock(cause="remote", actor="backend", method="mqtt")
    await p.stop("test")


async def test_state_reports_relays_grants_and_inputs(rig: Rig) -> None:
    await rig.door.unlock(cause="call", actor="resident-8", method="api", call_guid="g-9")
    await rig.advance(0.5)
    state = rig.door.state()
    main = state["relays"]["main"]
    assert main["energised"] and main["remaining_s"] == pytest.approx(1.5, abs=0.01)
    assert main["grant"]["call_guid"] == "g-9"
    full = await rig.panel.state()
    assert set(full["inputs"]) >= {"button:b303", "door_contact", "exit_button", "tamper"}


@pytest.mark.parametrize("requester, method", [
    (Requester("guest", "guest-1"), "api"),  # a guest invited into a call
    (Requester("viewer", "viewer-1", subject="viewer-1", unit_id="303"), "api"),
    (Requester("", "nobody"), "mqtt"),
    (Requester("exit_button", "exit_button"), "api"),  # a role that exists on one channel only
    (Requester("homeassistant", "homeassistant"), "api"),
])
async def test_roles_the_door_does_not_know_or_that_speak_on_another_channel_are_refused(
        rig: Rig, requester: Requester, method: str) -> None:
    with pytest.raises(UnlockRefused) as exc:
        await rig.door.open(UnlockRequest(requester, method=method))  # type: ignore[arg-type]
    assert exc.value.code == "not_allowed_for_role"
    await rig.settle()
    [refused] = rig.events("door.unlock_refused")
    assert (refused["code"], refused["actor"], refused["method"]) == ("not_allowed_for_role", requester.actor, method)
    assert [s.state for s in rig.relay_pin().states] == [False] and rig.access_log() == []


async def test_only_the_backend_names_another_actor(rig: Rig) -> None:
    installer = Requester("installer", "installer")
    with pytest.raises(UnlockRefused) as exc:
        await rig.door.open(UnlockRequest(installer, method="api", on_behalf_of="resident-1"))
    assert exc.value.code == "not_allowed_for_role"
    grant = await rig.door.open(UnlockRequest(Requester.backend(), method="mqtt", on_behalf_of="resident-1"))
    assert (grant.info.actor, grant.info.cause, grant.duration_s) == ("resident-1", "remote", 2)


def test_a_unit_naming_a_relay_the_door_does_not_have_is_a_config_error() -> None:
    data = config_dict()
    data["buttons"][1]["unit"]["relays"] = ["main", "gate"]
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert exc.value.problems == ["buttons[1].unit.relays[1]: there is no relay 'gate'; expected one of 'main'"]
    data["buttons"][1]["unit"]["relays"] = []
    with pytest.raises(ConfigError, match=r"unit\.relays"):
        parse_config(data)


async def test_a_release_that_ended_normally_is_not_closed_again_at_the_next_start(tmp_path: Path) -> None:
    rig = Rig(make_config(tmp_path))
    await rig.door.unlock(cause="remote", actor="backend", method="mqtt")
    assert rig.store.get_kv("door_grant:main")["access_id"] == rig.access_log()[0]["id"]
    await rig.advance(2.01)
    assert rig.store.get_kv("door_grant:main") is None
    await rig.close()
    again = Rig(make_config(tmp_path))
    await again.settle()
    assert again.door.recovered == []
    assert [e["reason"] for e in again.events("door.locked")] == ["timeout"]
    await again.close()


@pytest.mark.slow
def test_a_release_cut_by_sigkill_gets_its_door_locked_at_the_next_start(tmp_path: Path) -> None:
    data = config_dict()
    data["door"]["relays"][0].update(hold_s=30, max_on_s=60)  # still in force when the process dies
    p = start_panel(tmp_path, data)
    db = tmp_path / "state" / "panel.db"

    def events(type_: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return [json.loads(r[0]) for r in conn.execute("SELECT data FROM events WHERE type=? ORDER BY seq",
                                                             (type_,))]
        finally:
            conn.close()

    try:
        out = p.api("POST", "/api/v1/sim/exit").json()
        assert "door.unlocked" in [e["type"] for e in out["events"]]
        assert p.api("GET", "/api/v1/sim/state").json()["door"]["relays"]["main"]["energised"] is True
    finally:
        p.kill()
    [unlocked] = events("door.unlocked")
    assert events("door.locked") == []  # the backend would see the door released forever
    p.start()
    try:
        [locked] = events("door.locked")
        assert (locked["relay"], locked["reason"], locked["access_id"]) == ("main", "restart", unlocked["access_id"])
        assert 0 <= locked["on_s"] <= 30  # unknown exactly: no longer than its grant, nor than until now
        assert p.api("GET", "/api/v1/sim/state").json()["door"]["relays"]["main"]["energised"] is False
    finally:
        assert p.stop() == 0
    # Paired once: a second start has nothing left to close.
    p.start()
    try:
        assert len(events("door.locked")) == 1
    finally:
        assert p.stop() == 0
