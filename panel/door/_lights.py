"""Status lights follow the journal: a light never decides anything, it only shows what happened.

Roles (``lights[].role``): ``status`` is lit while the panel runs; ``door`` is lit while the main
relay is released; ``call`` shows the call's state with the patterns below (the table of which
state shows which pattern is ``panel.feedback.CALL_FEEDBACK``), and while the door is released
during a call it shows the door pattern instead, then the call's again.
"""

from __future__ import annotations

from gpiozero import LED

from ..platform import EventRow, LightConfig
from ._feedback import LightPattern, call_light_pattern

# pattern -> (on_time, off_time, number of blinks or None for "until changed"); "steady"/"off" are not blinks
BLINKS: dict[str, tuple[float, float, int | None]] = {
    "slow_blink": (0.5, 0.5, None),  # ringing: someone is being called
    "fast_blink": (0.15, 0.15, None),  # answered, the conversation is being set up
    "flash": (0.1, 0.1, 15),  # nobody answered: 3 s of quick flashes, then dark
    "door": (0.7, 0.1, None),  # the door is released: mostly lit, short gaps
}


class Lights:
    def __init__(self, cfgs: list[LightConfig], leds: dict[str, LED], main_relay: str) -> None:
        self._leds = leds
        self._by_role: dict[str, list[LED]] = {}
        for cfg in cfgs:
            self._by_role.setdefault(cfg.role, []).append(leds[cfg.id])
        self._main_relay = main_relay
        self.call_pattern: LightPattern = "off"
        self.door_released = False
        self.shown: dict[str, str] = {}  # role -> pattern now shown (for state and tests)

    def reconfigure(self, cfgs: list[LightConfig]) -> None:
        """A light changed role (``lights[].role``): each light shows at once what its new role shows now."""
        self._by_role = {}
        for cfg in cfgs:
            self._by_role.setdefault(cfg.role, []).append(self._leds[cfg.id])
        shown, self.shown = self.shown, {}
        for led in self._leds.values():
            led.off()
        for role, mode in shown.items():
            self._set(role, mode)

    def _set(self, role: str, mode: str) -> None:
        if self.shown.get(role) == mode and mode != "flash":
            return  # re-starting a blink would make it stutter
        self.shown[role] = mode
        for led in self._by_role.get(role, []):
            if mode in ("on", "steady"):
                led.on()
            elif mode in BLINKS:
                on_time, off_time, n = BLINKS[mode]
                led.blink(on_time=on_time, off_time=off_time, n=n)
            else:
                led.off()

    def _show_call(self) -> None:
        self._set("call", "door" if self.door_released else self.call_pattern)

    def running(self, on: bool) -> None:
        self._set("status", "on" if on else "off")
        if not on:
            self.call_pattern, self.door_released = "off", False
            self._set("call", "off")
            self._set("door", "off")

    def on_event(self, ev: EventRow) -> None:
        if ev.type == "door.unlocked" and ev.data.get("relay") == self._main_relay:
            self.door_released = True
            self._set("door", "on")
            self._show_call()
        elif ev.type == "door.locked" and ev.data.get("relay") == self._main_relay:
            self.door_released = False
            self._set("door", "off")
            self._show_call()
        elif ev.type in ("call.created", "call.status_updated"):
            self.call_pattern = call_light_pattern(ev.data.get("status"))
            self._show_call()
