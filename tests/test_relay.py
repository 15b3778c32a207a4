"""The relay: pulses end on time, nothing exceeds max_on_s, and the guard thread cuts a stalled loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory

from panel.door import GUARD_MARGIN_S, Relay
from panel.platform import FakeClock, RelayConfig, TimerHandle

from .eventually import eventually_sync


class StalledClock(FakeClock):
    """A clock whose timers never fire: what the relay sees when the event loop is blocked."""

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return super().call_at(when + 1e9, callback)


def make(clock: FakeClock, **kw: object) -> tuple[Relay, list[tuple[str, float]], object]:
    factory = MockFactory()
    cfg = RelayConfig.model_validate({"id": "main", "pin": 26, "hold_s": 5, "max_on_s": 15, **kw})
    dev = OutputDevice("GPIO26", active_high=cfg.active == "high", initial_value=False, pin_factory=factory)
    offs: list[tuple[str, float]] = []
    relay = Relay(cfg, dev, clock, lambda r, reason, on_s: offs.append((reason, on_s)))
    return relay, offs, factory.pin("GPIO26")


def test_pulse_ends_on_time_and_pin_history_is_off_on_off() -> None:
    clock = FakeClock()
    relay, offs, pin = make(clock)
    relay.energise(5)
    assert pin.state == 1 and relay.energised
    clock.advance(4.99)
    assert pin.state == 1
    clock.advance(0.02)
    assert pin.state == 0 and not relay.energised
    assert [s.state for s in pin.states] == [False, True, False]
    assert offs == [("timeout", pytest.approx(5.0))]
    relay.close()


def test_no_request_exceeds_max_on_even_when_extended() -> None:
    clock = FakeClock()
    relay, offs, pin = make(clock)
    relay.energise(100)
    clock.advance(10)
    relay.energise(100)  # a second release extends, but only up to max_on_s from the first
    clock.advance(5.01)
    assert pin.state == 0
    assert offs[0][1] == pytest.approx(15.0)
    relay.close()


def test_bistable_hold_is_cut_at_max_on_with_reason() -> None:
    clock = FakeClock()
    relay, offs, pin = make(clock, mode="bistable", max_on_s=60)
    relay.energise(60)
    clock.advance(60.01)
    assert pin.state == 0 and offs == [("max_on", pytest.approx(60.0))]
    relay.close()


def test_active_low_relay_is_energised_by_a_low_pin() -> None:
    clock = FakeClock()
    relay, _, pin = make(clock, active="low", pin=5)
    assert pin.state == 1  # off = high for an active-low coil
    relay.energise(1)
    assert pin.state == 0
    clock.advance(1.01)
    assert pin.state == 1
    relay.close()


def test_guard_thread_cuts_the_relay_when_the_loop_is_stalled() -> None:
    clock = StalledClock()
    relay, _, pin = make(clock, hold_s=0.5, max_on_s=1)
    relay.energise(0.3)
    assert pin.state == 1
    eventually_sync(lambda: pin.state == 0, 0.3 + GUARD_MARGIN_S + 1.0, "the guard thread cutting the relay")
    assert relay.guard.tripped == 1
    relay.close()


def test_health_fails_when_the_loop_timer_is_late() -> None:
    clock = StalledClock()
    relay, _, _ = make(clock)
    relay.energise(2)
    assert relay.healthy()
    clock.advance(2 + GUARD_MARGIN_S + 0.1)  # the timer did not fire: the loop is late
    assert not relay.healthy()
    relay.de_energise("released")
    assert relay.healthy()
    relay.close()
    assert not relay.healthy()  # guard thread gone: never claim health without it


def test_de_energise_is_idempotent_and_reports_once() -> None:
    clock = FakeClock()
    relay, offs, pin = make(clock)
    relay.energise(5)
    relay.de_energise("released")
    relay.de_energise("released")
    clock.advance(10)
    assert offs == [("released", 0.0)] and pin.state == 0
    relay.close()
