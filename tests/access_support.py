"""A rig with the access service started (keypad on mock pins), and helpers to type on it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from panel.access import AccessService, MockMatrix

from .api_support import api_rig
from .rig import Rig

KEYPAD = {"rows": [5, 6, 12, 13], "cols": [16, 19, 21], "scan_ms": 10, "debounce_scans": 2}
ACCESS: dict[str, Any] = {"keypad": KEYPAD, "max_failures": 3, "block_s": 30, "key_timeout_s": 5}
STATUS_LIGHT = {"id": "status", "pin": 25, "role": "status"}


async def access_rig(tmp_path: Path, access: dict[str, Any] | None = None, **sections: Any) -> Rig:
    sections.setdefault("lights", [{"id": "door", "pin": 20, "role": "door"}, STATUS_LIGHT])
    rig = api_rig(tmp_path, access=access if access is not None else ACCESS, **sections)
    await rig.panel.lifecycle.start(rig.panel.access_component())
    return rig


def service(rig: Rig) -> AccessService:
    assert rig.panel.access is not None
    return rig.panel.access


def keys(rig: Rig) -> MockMatrix:
    assert rig.panel.keypad_sim is not None
    return rig.panel.keypad_sim


async def scans(rig: Rig, n: int) -> None:
    """Let the keypad scan ``n`` times on the fake clock (each sleep is one timer, one scan)."""
    period = rig.cfg.access.keypad.scan_ms / 1000 if rig.cfg.access.keypad else 0.01
    for _ in range(n):
        rig.clock.advance(period)
        for _ in range(3):
            await asyncio.sleep(0)


async def type_keys(rig: Rig, text: str, held_scans: int = 3, gap_scans: int = 3) -> None:
    """Press and release each key through the matrix, as fingers would; then let the entry settle."""
    m = keys(rig)
    for k in text:
        m.press(k)
        await scans(rig, held_scans)
        m.release(k)
        await scans(rig, gap_scans)
    await rig.settle()
