"""Debounce and the stuck-input guard, on a controllable clock (mock pins do not bounce by themselves)."""

from __future__ import annotations

import asyncio
from typing import Any

from gpiozero import DigitalInputDevice
from gpiozero.pins.mock import MockFactory

from panel.door import DebouncedInput
from panel.platform import FakeClock, InputConfig


async def make(**kw: Any) -> tuple[DebouncedInput, Any, FakeClock, list[Any]]:
    factory = MockFactory()
    cfg = InputConfig.model_validate({"pin": 17, "debounce_ms": 30, **kw})
    pull_up = {"up": True, "down": False, "none": None}[cfg.pull]
    dev = DigitalInputDevice("GPIO17", pull_up=pull_up, active_state=True if pull_up is None else None,
                             pin_factory=factory)
    clock = FakeClock()
    seen: list[Any] = []
    inp = DebouncedInput("b", dev, cfg, clock, asyncio.get_running_loop(), lambda a: seen.append(("change", a)),
                         lambda stuck, s: seen.append(("stuck", stuck)))
    return inp, factory.pin("GPIO17"), clock, seen


async def hop() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_bounces_settle_into_one_change() -> None:
    inp, pin, clock, seen = await make()
    for level in (0, 1, 0, 1, 0):  # a bouncy press to ground, 5 ms apart
        pin.drive_low() if level == 0 else pin.drive_high()
        await hop()
        clock.advance(0.005)
    assert seen == []
    clock.advance(0.03)
    assert seen == [("change", True)] and inp.active


async def test_a_glitch_shorter_than_debounce_is_ignored() -> None:
    inp, pin, clock, seen = await make()
    pin.drive_low()
    await hop()
    clock.advance(0.01)
    pin.drive_high()
    await hop()
    clock.advance(0.1)
    assert seen == [] and not inp.active


async def test_zero_debounce_is_immediate() -> None:
    _, pin, _, seen = await make(debounce_ms=0)
    pin.drive_low()
    await hop()
    assert seen == [("change", True)]


async def test_stuck_input_is_reported_and_its_release_is_only_a_recovery() -> None:
    inp, pin, clock, seen = await make(stuck_s=10)
    pin.drive_low()
    await hop()
    clock.advance(0.03)
    clock.advance(9.9)
    assert seen == [("change", True)]
    clock.advance(0.2)
    assert seen == [("change", True), ("stuck", True)] and inp.stuck
    pin.drive_high()
    await hop()
    clock.advance(0.03)
    assert seen == [("change", True), ("stuck", True), ("stuck", False)] and not inp.stuck


async def test_level_at_start_is_the_resting_state_not_an_event() -> None:
    factory = MockFactory()
    pin = factory.pin("GPIO17")
    cfg = InputConfig.model_validate({"pin": 17, "pull": "up", "active": "high", "stuck_s": 5})
    dev = DigitalInputDevice("GPIO17", pull_up=True, pin_factory=factory)  # mock pull-up: reads high = active
    clock = FakeClock()
    seen: list[Any] = []
    inp = DebouncedInput("door", dev, cfg, clock, asyncio.get_running_loop(), seen.append,
                         lambda stuck, s: seen.append(("stuck", stuck)))
    assert inp.active and seen == []
    clock.advance(5.1)  # active since boot counts towards stuck
    assert seen == [("stuck", True)]
    assert pin.state == 1


async def test_active_high_with_pull_up_reads_an_open_contact_as_active() -> None:
    inp, pin, clock, seen = await make(pull="up", active="high")
    pin.drive_low()  # contact closed to ground: at rest
    await hop()
    clock.advance(0.05)
    assert not inp.active
    pin.drive_high()  # contact opened
    await hop()
    clock.advance(0.05)
    assert inp.active and seen[-1] == ("change", True)
