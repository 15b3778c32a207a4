"""Hypothesis drives random sequences of unlocks, time, door, tamper, exit button and restarts.

Invariant after every step: relay energised => a grant is in force for it, its maximum on-time is
not exceeded, and no tamper block is active (unless it is the exit button's grant and the exit
button is configured to override tamper). The tamper block itself is checked against a model.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from panel.errors import UnlockRefused

from .rig import Rig, make_config
from .support import config_dict

EPS = 1e-6


class DoorMachine(RuleBasedStateMachine):
    @initialize(override=st.booleans(), mode=st.sampled_from(["monostable", "bistable"]),
                relock=st.booleans())
    def setup(self, override: bool, mode: str, relock: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="door-sm-"))
        data = config_dict()
        data["door"]["exit_button_overrides_tamper"] = override
        data["door"]["relock_on_open"] = relock
        data["door"]["relays"] = [
            {"id": "main", "pin": 26, "mode": mode, "hold_s": 2, "max_on_s": 8},
            {"id": "gate", "pin": 19, "hold_s": 1, "max_on_s": 3},
        ]
        self.cfg = make_config(self.dir, data)
        self.override = override
        self.rig: Rig = self.run(self._new_rig())
        self.blocked = False  # the model of the durable tamper block
        self.tamper_pin_active = False

    async def _new_rig(self) -> Rig:
        return Rig(self.cfg)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        if hasattr(self, "rig"):
            self.run(self.rig.close())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- rules --------------------------------------------------------------------------------------
    @rule(cause=st.sampled_from(["remote", "call"]), relay=st.sampled_from(["main", "gate"]),
          duration=st.one_of(st.none(), st.floats(0.1, 12)))
    def unlock(self, cause: str, relay: str, duration: float | None) -> None:
        try:
            self.run(self.rig.door.unlock(cause=cause, actor="backend", method="mqtt", relay=relay,  # type: ignore[arg-type]
                                          call_guid="g" if cause == "call" else None, duration_s=duration))
            refused = None
        except UnlockRefused as e:
            refused = e.code
        max_on = self.cfg.relay(relay).max_on_s
        if duration is not None and not (0.5 <= duration <= max_on):
            assert refused == "bad_duration"
        elif self.blocked or self.tamper_pin_active:
            assert refused == "tamper_blocked"
        else:
            assert refused is None and self.rig.relay_on(relay)

    @rule()
    def exit_button(self) -> None:
        self.run(self.rig.drive(self.cfg.door.exit_button, True))
        self.run(self.rig.drive(self.cfg.door.exit_button, False))

    @rule(seconds=st.floats(0, 10))
    def advance(self, seconds: float) -> None:
        self.run(self.rig.advance(seconds))

    @rule(open_=st.booleans())
    def door(self, open_: bool) -> None:
        self.run(self.rig.drive(self.cfg.door.contact, open_))

    @rule(active=st.booleans())
    def tamper(self, active: bool) -> None:
        self.run(self.rig.drive(self.cfg.tamper, active))
        self.tamper_pin_active = active
        if active:
            self.blocked = True

    @rule()
    def clear_tamper(self) -> None:
        try:
            self.run(self.rig.door.clear_tamper("installer"))
            assert not self.tamper_pin_active
            self.blocked = False
        except UnlockRefused as e:
            assert e.code == "tamper_active" and self.tamper_pin_active

    @rule(relay=st.sampled_from(["main", "gate"]))
    def release(self, relay: str) -> None:
        async def release() -> None:
            self.rig.door.release(relay)
            await self.rig.settle()
        self.run(release())

    @precondition(lambda self: hasattr(self, "rig"))
    @rule()
    def restart(self) -> None:
        self.run(self.rig.close())
        self.rig = self.run(self._new_rig())
        if self.tamper_pin_active:
            # The switch is still open after the restart: the new process must see it.
            self.rig.pin(self.cfg.tamper.pin).drive_high()
            self.run(self.rig.settle())
            self.rig.clock.advance(0.05)
            self.run(self.rig.settle())

    # -- the invariant ------------------------------------------------------------------------------
    @invariant()
    def relay_only_with_a_valid_grant(self) -> None:
        if not hasattr(self, "rig"):
            return
        door = self.rig.door
        now = self.rig.clock.monotonic()
        assert door.tamper_blocked == self.blocked
        for rid, relay in door.relays.items():
            if not self.rig.relay_on(rid):
                continue
            grant = door.grants.get(rid)
            assert grant is not None, f"relay {rid} energised without a grant"
            assert now <= grant.until + EPS, f"relay {rid} energised past its grant"
            assert relay.energised_at is not None
            assert now - relay.energised_at <= self.cfg.relay(rid).max_on_s + EPS, "max_on_s exceeded"
            if door.tamper_blocked or door.tamper_active:
                assert grant.local and self.override, "energised while tamper-blocked"


TestDoorInvariants = DoorMachine.TestCase
TestDoorInvariants.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
