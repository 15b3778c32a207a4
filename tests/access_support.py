"""A rig with the access service started (keypad on mock pins), and helpers to type on it."""

from __future__ import annotations

import asyncio
import os
import pty
import tty
from pathlib import Path
from typing import Any

from panel.access import AccessService, MockMatrix
from panel.daemon import Panel

from .api_support import api_rig
from .rig import Rig

KEYPAD = {"rows": [5, 6, 12, 13], "cols": [16, 19, 21], "scan_ms": 10, "debounce_scans": 2}
ACCESS: dict[str, Any] = {"keypad": KEYPAD, "max_failures": 3, "block_s": 30, "key_timeout_s": 5}
STATUS_LIGHT = {"id": "status", "pin": 25, "role": "status"}
SCBK = "000102030405060708090a0b0c0d0e0f"
ADDRESS = 101


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


class PtyReader:
    """A card reader: libosdp's peripheral (PD) on the master side of a pseudo-terminal pair; the panel
    opens the slave side (``device``) as its RS-485 port."""

    def __init__(self, scbk: str = SCBK, address: int = ADDRESS) -> None:
        import osdp

        self.osdp = osdp
        self.master, self.slave = pty.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.device = os.ttyname(self.slave)
        master = self.master
        os.set_blocking(master, False)

        class Channel(osdp.Channel):  # type: ignore[misc]
            def read(self, n: int) -> bytes:
                try:
                    return os.read(master, n)
                except OSError:
                    return b""

            def write(self, buf: bytes) -> int:
                try:
                    return os.write(master, buf)
                except OSError:
                    return 0

            def flush(self) -> None:
                return None

        caps = osdp.PDCapabilities([(osdp.Capability.CommunicationSecurity, 1, 1), (osdp.Capability.Readers, 1, 1),
                                    (osdp.Capability.CardDataFormat, 1, 1), (osdp.Capability.LEDControl, 1, 1),
                                    (osdp.Capability.AudibleControl, 1, 1)])
        self.pd = osdp.PeripheralDevice(osdp.PDInfo(address, Channel(), scbk=bytes.fromhex(scbk)), caps,
                                        log_level=osdp.LogLevel.Error)
        self.pd.start()

    def present(self, number: str) -> None:
        data = bytes.fromhex(number)
        self.pd.submit_event({"event": self.osdp.Event.CardRead, "reader_no": 0,
                              "format": self.osdp.CardFormat.Unspecified, "direction": 0, "length": len(data) * 8,
                              "data": data})

    def keys(self, keys: bytes) -> None:
        self.pd.submit_event({"event": self.osdp.Event.KeyPress, "reader_no": 0, "data": keys})

    def close(self) -> None:
        self.pd.stop()
        os.close(self.master)
        os.close(self.slave)


async def press_keys(panel: Panel, keys: str) -> None:
    """Fingers on the simulated matrix: each key held 40 ms, then 40 ms apart (input, not a wait)."""
    assert panel.keypad_sim is not None
    for k in keys:
        panel.keypad_sim.press(k)
        await asyncio.sleep(0.04)
        panel.keypad_sim.release(k)
        await asyncio.sleep(0.04)
