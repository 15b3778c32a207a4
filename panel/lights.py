"""Status lights follow the journal: a light never decides anything, it only shows what happened."""

from __future__ import annotations

from gpiozero import LED

from .config import LightConfig
from .store import EventRow


class Lights:
    def __init__(self, cfgs: list[LightConfig], leds: dict[str, LED], main_relay: str) -> None:
        self._by_role: dict[str, list[LED]] = {}
        for cfg in cfgs:
            self._by_role.setdefault(cfg.role, []).append(leds[cfg.id])
        self._main_relay = main_relay

    def _set(self, role: str, mode: str) -> None:
        for led in self._by_role.get(role, []):
            if mode == "on":
                led.on()
            elif mode == "blink":
                led.blink(on_time=0.3, off_time=0.3)
            else:
                led.off()

    def running(self, on: bool) -> None:
        self._set("status", "on" if on else "off")
        if not on:
            self._set("call", "off")
            self._set("door", "off")

    def on_event(self, ev: EventRow) -> None:
        if ev.type == "door.unlocked" and ev.data.get("relay") == self._main_relay:
            self._set("door", "on")
        elif ev.type == "door.locked" and ev.data.get("relay") == self._main_relay:
            self._set("door", "off")
        elif ev.type == "call.status_updated":
            status = ev.data.get("status")
            self._set("call", {"ringing": "blink", "calling": "blink", "connecting": "on",
                               "connected": "on"}.get(str(status), "off"))
