"""``panel selftest``: exercise what the installer wired and print a pass/fail table.

Run it with the daemon stopped (the daemon holds the GPIO lines). Each relay is pulsed only after
the installer confirms, because a pulse releases a real door.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gpiozero import DigitalInputDevice

from ..errors import HardwareError
from ._config import Config, InputConfig
from ._files import private_dir
from ._gpio import Hardware, make_pin_factory

Result = Literal["PASS", "WARN", "FAIL", "SKIP"]
PULSE_S = 0.5


@dataclass(frozen=True)
class Row:
    check: str
    result: Result
    detail: str


def _level(dev: DigitalInputDevice) -> int:
    return int(dev.pin.state)


def _is_active(dev: DigitalInputDevice, cfg: InputConfig) -> bool:
    return _level(dev) == (1 if cfg.active == "high" else 0)


def run_selftest(cfg: Config, *, simulate: bool, confirm: Callable[[str], bool]) -> list[Row]:
    rows: list[Row] = []
    rows.append(check_storage(cfg))
    try:
        factory = make_pin_factory("mock" if simulate else cfg.gpio.pin_factory)
        hw = Hardware.build(cfg, factory)
    except HardwareError as e:
        rows.append(Row("gpio", "FAIL", f"{e} (is the panel service still running? stop it first)"))
        return rows
    rows.append(Row("gpio", "PASS", f"pin factory {'mock' if simulate else cfg.gpio.pin_factory} opened"))
    try:
        for r in cfg.door.relays:
            name = f"relay {r.id}"
            if not confirm(f"Pulse relay {r.id} (GPIO{r.pin}) for {PULSE_S} s? This releases the door."):
                rows.append(Row(name, "SKIP", "not confirmed"))
                continue
            dev = hw.relays[r.id]
            on_level = 1 if r.active == "high" else 0
            dev.on()
            energised = int(dev.pin.state) == on_level
            time.sleep(PULSE_S)
            dev.off()
            released = int(dev.pin.state) != on_level
            if energised and released:
                rows.append(Row(name, "PASS", f"GPIO{r.pin} went {'high' if on_level else 'low'} for {PULSE_S} s "
                                              "and back; listen for the relay click and the lock"))
            else:
                rows.append(Row(name, "FAIL", f"GPIO{r.pin} did not follow (energised={energised}, "
                                              f"released={released}); check the pin number and the relay board"))
        for b in cfg.buttons:
            dev = hw.buttons[b.id]
            if _is_active(dev, b):
                rows.append(Row(f"button {b.id}", "WARN", f"reads pressed at rest (GPIO{b.pin} level {_level(dev)}); "
                                                          "check the wiring or the pull/active setting"))
            else:
                rows.append(Row(f"button {b.id}", "PASS", f"at rest (GPIO{b.pin} level {_level(dev)}); "
                                                          f"rings unit {b.unit.label}"))
        if cfg.door.contact is not None and hw.contact is not None:
            is_open = _is_active(hw.contact, cfg.door.contact)
            rows.append(Row("door contact", "WARN" if is_open else "PASS",
                            f"door reads {'open' if is_open else 'closed'} (GPIO{cfg.door.contact.pin} level "
                            f"{_level(hw.contact)})" + ("; close the door, or check the contact" if is_open else "")))
        else:
            rows.append(Row("door contact", "SKIP", "not configured: forced-open and held-open cannot be detected"))
        if cfg.door.exit_button is not None and hw.exit_button is not None:
            pressed = _is_active(hw.exit_button, cfg.door.exit_button)
            rows.append(Row("exit button", "WARN" if pressed else "PASS",
                            f"{'reads pressed' if pressed else 'at rest'} (GPIO{cfg.door.exit_button.pin} "
                            f"level {_level(hw.exit_button)})"))
        else:
            rows.append(Row("exit button", "SKIP", "not configured"))
        if cfg.tamper is not None and hw.tamper is not None:
            tampered = _is_active(hw.tamper, cfg.tamper)
            rows.append(Row("tamper switch", "FAIL" if tampered else "PASS",
                            ("reads tampered; close the housing and check the switch" if tampered else "at rest")
                            + f" (GPIO{cfg.tamper.pin} level {_level(hw.tamper)})"))
        else:
            rows.append(Row("tamper switch", "SKIP", "not configured"))
        for light in cfg.lights:
            led = hw.lights[light.id]
            led.on()
            lit = bool(led.value)
            time.sleep(0.2)
            led.off()
            rows.append(Row(f"light {light.id}", "PASS" if lit else "FAIL",
                            f"GPIO{light.pin} switched on for 0.2 s; check that it lit"))
    finally:
        hw.close()
    return rows


def check_storage(cfg: Config) -> Row:
    d = cfg.storage.dir
    try:
        private_dir(d)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".selftest-") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
        return Row("storage", "PASS", f"{d} is writable")
    except OSError as e:
        return Row("storage", "FAIL", f"{d} is not writable ({e.strerror}); create it and give it to the service user")


def format_table(rows: list[Row]) -> str:
    w1 = max(len("CHECK"), *(len(r.check) for r in rows))
    lines = [f"{'CHECK':<{w1}}  RESULT  DETAIL"]
    lines += [f"{r.check:<{w1}}  {r.result:<6}  {r.detail}" for r in rows]
    fails = sum(r.result == "FAIL" for r in rows)
    warns = sum(r.result == "WARN" for r in rows)
    lines.append(f"selftest: {'FAIL' if fails else 'PASS'} ({fails} failed, {warns} warnings)")
    return "\n".join(lines)
