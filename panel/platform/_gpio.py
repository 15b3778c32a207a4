"""GPIO devices built from config with an explicit gpiozero pin factory.

This is the only module that touches gpiozero devices' construction; logic modules get the devices
(or the pin-level view of them) and never pick a pin factory themselves.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from gpiozero import LED, DigitalInputDevice, OutputDevice
from gpiozero.pins import Factory

from ..errors import HardwareError
from ._config import Config, InputConfig

log = logging.getLogger(__name__)


def make_pin_factory(name: str) -> Factory:
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory
            return MockFactory()
        if name == "lgpio":
            # lgpio creates its notification pipes in the working directory, which the service
            # user may not be able to write (e.g. `sudo -u panel panel selftest` from a home dir).
            os.environ.setdefault("LG_WD", tempfile.gettempdir())
            from gpiozero.pins.lgpio import LGPIOFactory
            return LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory
            return RPiGPIOFactory()
        if name == "native":
            from gpiozero.pins.native import NativeFactory
            return NativeFactory()
    except ImportError as e:
        raise HardwareError(
            f"gpio.pin_factory = \"{name}\" needs a Python module that is not installed ({e.name}); on "
            "Raspberry Pi OS run: sudo apt install python3-lgpio, or run with --simulate") from e
    except Exception as e:  # the libraries raise their own types for "no GPIO chip" and the like
        raise HardwareError(
            f"gpio.pin_factory = \"{name}\" could not open the GPIO chip ({e}); is this a Raspberry Pi and is "
            "the service user in the gpio group? Use --simulate to run without hardware") from e
    raise HardwareError(f"unknown pin factory {name!r}")


def input_device(cfg: InputConfig, factory: Factory, where: str) -> DigitalInputDevice:
    pull_up: bool | None = {"up": True, "down": False, "none": None}[cfg.pull]
    try:
        # Our own debounce (inputs.py) decides; gpiozero's is off and its idea of "active" is not used.
        return DigitalInputDevice(f"GPIO{cfg.pin}", pull_up=pull_up,
                                  active_state=True if pull_up is None else None,
                                  bounce_time=None, pin_factory=factory)
    except Exception as e:
        raise HardwareError(f"{where}: cannot use GPIO{cfg.pin} as an input ({e}); is another program using it?") from e


@dataclass
class Hardware:
    """Every GPIO device the panel drives, by role."""

    factory: Factory
    relays: dict[str, OutputDevice] = field(default_factory=dict)
    buttons: dict[str, DigitalInputDevice] = field(default_factory=dict)
    contact: DigitalInputDevice | None = None
    exit_button: DigitalInputDevice | None = None
    tamper: DigitalInputDevice | None = None
    lights: dict[str, LED] = field(default_factory=dict)

    @classmethod
    def build(cls, cfg: Config, factory: Factory) -> Hardware:
        hw = cls(factory)
        try:
            # Relays first, driven to their off level, so nothing else can fail while one floats.
            for i, r in enumerate(cfg.door.relays):
                try:
                    hw.relays[r.id] = OutputDevice(f"GPIO{r.pin}", active_high=r.active == "high",
                                                   initial_value=False, pin_factory=factory)
                except Exception as e:
                    raise HardwareError(f"door.relays[{i}]: cannot drive GPIO{r.pin} ({e})") from e
            for i, b in enumerate(cfg.buttons):
                hw.buttons[b.id] = input_device(b, factory, f"buttons[{i}]")
            if cfg.door.contact is not None:
                hw.contact = input_device(cfg.door.contact, factory, "door.contact")
            if cfg.door.exit_button is not None:
                hw.exit_button = input_device(cfg.door.exit_button, factory, "door.exit_button")
            if cfg.tamper is not None:
                hw.tamper = input_device(cfg.tamper, factory, "tamper")
            for i, light in enumerate(cfg.lights):
                try:
                    hw.lights[light.id] = LED(f"GPIO{light.pin}", active_high=light.active == "high",
                                              initial_value=False, pin_factory=factory)
                except Exception as e:
                    raise HardwareError(f"lights[{i}]: cannot drive GPIO{light.pin} ({e})") from e
        except BaseException:
            hw.close()
            raise
        return hw

    def all_off(self) -> None:
        """Every relay to its off level. Safe to call from any thread, any number of times."""
        for dev in self.relays.values():
            if dev.closed:
                continue
            try:
                dev.off()
            except Exception:
                log.exception("could not switch a relay off")

    def close(self) -> None:
        self.all_off()
        devices: list[Any] = [*self.relays.values(), *self.buttons.values(), self.contact, self.exit_button,
                              self.tamper, *self.lights.values()]
        for dev in devices:
            if dev is not None:
                try:
                    dev.close()
                except Exception:
                    log.exception("could not close a GPIO device")
