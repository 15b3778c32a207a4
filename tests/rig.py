"""An in-process panel core (store, mock GPIO, journal, door, inputs) on a fake clock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockPin

from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import Config, FakeClock, parse_config

from .support import config_dict


def make_config(tmp_path: Path, data: dict[str, Any] | None = None) -> Config:
    data = data or config_dict()
    data["storage"] = {**data.get("storage", {}), "dir": str(tmp_path / "state")}
    return parse_config(data)


class Rig:
    """A Panel with its core built (no network) on a FakeClock; drive pins, advance time, read the store."""

    def __init__(self, cfg: Config, secrets: Secrets | None = None, panel_class: type[Panel] = Panel) -> None:
        self.cfg = cfg
        self.clock = FakeClock()
        self.panel = panel_class(cfg, secrets or Secrets(), simulate=True, clock=self.clock)
        self.panel.build_core()
        self.door = self.panel.door
        self.journal = self.panel.journal
        self.store = self.panel.store

    def pin(self, bcm: int) -> MockPin:
        return self.panel.hw.factory.pin(f"GPIO{bcm}")  # type: ignore[no-any-return]

    def relay_on(self, relay_id: str = "main") -> bool:
        return bool(self.panel.hw.relays[relay_id].value)

    def relay_pin(self, relay_id: str = "main") -> MockPin:
        return self.pin(self.cfg.relay(relay_id).pin)

    async def drive(self, cfg: Any, active: bool) -> None:
        """Set an input's electrical level, let the edge reach the loop, and let the debounce pass."""
        pin = self.pin(cfg.pin)
        high = (cfg.active == "high") == active
        pin.drive_high() if high else pin.drive_low()
        await asyncio.sleep(0)
        self.clock.advance(cfg.debounce_ms / 1000 + 0.001)
        await self.settle()

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        await self.journal.flush()
        # Tasks started by callbacks (the exit button's unlock) may have queued more writes.
        for _ in range(3):
            await asyncio.sleep(0)
        await self.journal.flush()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()

    def events(self, type_prefix: str = "") -> list[dict[str, Any]]:
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT type, data FROM events WHERE type LIKE ? ORDER BY seq", (type_prefix + "%",)).fetchall())
        return [{"type": r[0], **json.loads(r[1])} for r in rows]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]

    def access_log(self) -> list[dict[str, Any]]:
        return self.store.read_sync(lambda c: [dict(r) for r in c.execute("SELECT * FROM access_log ORDER BY seq")])

    async def close(self) -> None:
        await self.panel.stop("test over")
