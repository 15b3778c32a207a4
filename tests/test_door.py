"""The door: releases, the contact, the exit button and the tamper block, on mock pins and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from panel.daemon import Panel
from panel.errors import UnlockRefused
from panel.platform import Store

from .rig import Rig, make_config
from .support import config_dict


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
