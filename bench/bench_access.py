"""Doors without a call: how fast each credential opens the door, next to the MQTT unlock, and what
looking for QR codes costs the camera side.

Run from the repository root:  .venv/bin/python bench/bench_access.py [--n 100] [--qr-n 20]

One in-process panel (``Panel``, gpiozero's MockFactory, the real store) with every part real:
a Mosquitto broker (tests/mosquitto.py) for the MQTT path, a matrix keypad on mock pins scanned
through gpiozero (``access.keypad``, 10 ms scans, 2-scan debounce), an OSDP reader (libosdp's
peripheral on a pseudo-terminal pair, secure channel on), and the synthetic camera at 640x480, 15 fps
with zxing-cpp reading its shared capture. Every row ends when the relay's mock pin went high, read
from the pin's own state log (observing adds nothing to the path).

Rows, interleaved within each round so all see the same load:
1. MQTT ``open`` command published -> relay (bench_unlock's path);
2. last key (``#`` pressed, after the PIN's digits) -> relay; the goal is p99 < 50 ms;
3. card presented at the reader (the PD queues the card read) -> relay;
4. QR code held up to the camera (someone pressed a button) -> relay; the goal is median < 500 ms.
Then the camera-side CPU: process CPU seconds per second with the camera feed held by an idle
subscriber, and with the QR scanner reading it (goal: at most 0.05 CPU-s/s more).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_unlock import KEY, PANEL, Synced, Unlock, pct  # noqa: E402

from panel.access import QR_PREFIX, qr_picture  # noqa: E402
from panel.auth import Secrets  # noqa: E402
from panel.daemon import Panel  # noqa: E402
from panel.media.sources import SyntheticVideoSource  # noqa: E402
from panel.platform import parse_config  # noqa: E402
from tests.access_support import ADDRESS, KEYPAD, SCBK, PtyReader  # noqa: E402
from tests.mosquitto import Broker  # noqa: E402
from tests.support import config_dict  # noqa: E402

GAP_S = 0.03
WARMUP = 5
HOLD_S = 0.03  # a finger on a key (three scans), and the gap after it
CPU_WINDOW_S = 5.0


def energised_after(pin: Any, cleared: float, t0: float) -> float | None:
    states = pin.states[1:]
    first = next((i for i, s in enumerate(states) if s.state), None)
    if first is None:
        return None
    return cleared + sum(s.timestamp for s in states[:first + 1]) - t0


class Rows:
    def __init__(self, panel: Panel, reader: PtyReader) -> None:
        self.panel = panel
        self.reader = reader
        self.pin = panel.hw.factory.pin(f"GPIO{panel.cfg.door.relays[0].pin}")

    async def _until_energised(self, t0: float, cleared: float, what: str, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            took = energised_after(self.pin, cleared, t0)
            if took is not None:
                return took
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: the relay never energised")
            await asyncio.sleep(0.001)

    async def _reset(self) -> None:
        self.panel.door.release()
        await self.panel.journal.flush()

    async def keypad(self, pin: str) -> float:
        m = self.panel.keypad_sim
        assert m is not None
        for k in pin:
            m.press(k)
            await asyncio.sleep(HOLD_S)
            m.release(k)
            await asyncio.sleep(HOLD_S)
        cleared = time.monotonic()
        self.pin.clear_states()
        t0 = time.monotonic()
        m.press("#")
        try:
            return await self._until_energised(t0, cleared, "keypad")
        finally:
            m.release("#")
            await asyncio.sleep(HOLD_S)
            await self._reset()

    async def card(self, number: str) -> float:
        cleared = time.monotonic()
        self.pin.clear_states()
        t0 = time.monotonic()
        self.reader.present(number)
        try:
            return await self._until_energised(t0, cleared, "card")
        finally:
            await self._reset()

    async def qr(self) -> float:
        assert self.panel.access is not None
        _, code = await self.panel.access.create_code(owner="bench", by="bench", label="qr")
        picture = qr_picture(QR_PREFIX + code)
        self.panel.someone_at_panel()
        cleared = time.monotonic()
        self.pin.clear_states()
        t0 = time.monotonic()
        SyntheticVideoSource.hold_up(picture)
        try:
            return await self._until_energised(t0, cleared, "qr")
        finally:
            SyntheticVideoSource.hold_up(None)
            await self._reset()


async def cpu_per_s(seconds: float) -> float:
    c0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return (time.process_time() - c0) / (time.monotonic() - t0)


async def measure(broker: Broker, directory: Path, n: int, qr_n: int) -> dict[str, Any]:
    reader = PtyReader()
    data = config_dict(mqtt=broker.mqtt_config(PANEL, require_signed_commands=True),
                       media={"video": {"width": 640, "height": 480, "fps": 15}, "linger_s": 0,
                              "tones": {"enabled": False}, "snapshots": {"at_press": False}},
                       access={"keypad": KEYPAD, "osdp": {"device": reader.device, "address": ADDRESS},
                               "qr": True, "qr_window_s": 120})
    data["panel"] = {"id": PANEL, "name": "Bench"}
    data["storage"] = {"dir": str(directory / "state")}
    data["door"]["relays"][0].update(hold_s=5, max_on_s=10)
    panel = Panel(parse_config(data), Secrets(mqtt_password=broker.passwords[PANEL], command_key=KEY,
                                              osdp_scbk=SCBK), simulate=True, clock_sync=Synced())
    await panel.start()
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"mqtt": [], "keypad": [], "card": [], "qr": []}
    try:
        deadline = time.monotonic() + 10
        while not (panel.mqtt and panel.mqtt.connected and panel.osdp and panel.osdp.status()["secure_channel"]):
            if time.monotonic() > deadline:
                raise RuntimeError("the panel did not connect to the broker or the reader")
            await asyncio.sleep(0.01)
        assert panel.access is not None and panel.media is not None and panel.qr is not None
        await panel.access.set_pin(owner="bench", pin="2468", by="bench")
        await panel.access.enrol_card(owner="bench", number="04a22b91", label="fob", by="bench")
        unlock, rows = Unlock(broker, panel, loop), Rows(panel, reader)
        try:
            for i in range(n + WARMUP):
                samples = {"mqtt": await unlock.sample()}
                await asyncio.sleep(GAP_S)
                samples["keypad"] = await rows.keypad("2468")
                await asyncio.sleep(GAP_S)
                samples["card"] = await rows.card("04a22b91")
                await asyncio.sleep(GAP_S)
                if i >= WARMUP:
                    for k, v in samples.items():
                        out[k].append(v)
            for _ in range(qr_n):
                out["qr"].append(await rows.qr())
                await asyncio.sleep(GAP_S)
        finally:
            unlock.close()
        # Camera-side CPU: the same feed held by an idle subscriber, then read by the scanner as well.
        panel.qr.close()
        video = panel.media.hub.video
        assert video is not None
        idle = video.capture.subscribe()
        try:
            await asyncio.sleep(1.0)
            out["cpu_idle"] = await cpu_per_s(CPU_WINDOW_S)
            frames0, scan0 = panel.qr.frames, panel.qr.cpu_s
            panel.someone_at_panel()
            await asyncio.sleep(0.5)
            out["cpu_scan"] = await cpu_per_s(CPU_WINDOW_S)
            out["zxing_cpu_per_s"] = (panel.qr.cpu_s - scan0) / (CPU_WINDOW_S + 0.5)
            out["scan_fps"] = (panel.qr.frames - frames0) / (CPU_WINDOW_S + 0.5)
        finally:
            idle.close()
        return out
    finally:
        await panel.stop("bench over")
        reader.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help=f"samples per row (after {WARMUP} warm-up rounds)")
    ap.add_argument("--qr-n", type=int, default=20, help="QR samples")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    directory = Path(tempfile.mkdtemp(prefix="bench-access-"))
    (directory / "state").mkdir(parents=True, exist_ok=True)
    with Broker(directory / "broker", panels=[PANEL]) as broker:
        res = asyncio.run(measure(broker, directory, args.n, args.qr_n))
    ms = 1000.0
    print(f"\nbench_access: n={args.n} per row (QR: {args.qr_n}); one panel, one run; {directory}\n")
    print(f"{'path':<56} {'median ms':>10} {'p99 ms':>9} {'max ms':>9}")
    for key, name in (("mqtt", "MQTT open command -> relay"), ("keypad", "keypad: last key (#) -> relay"),
                      ("card", "OSDP card presented (secure channel) -> relay"),
                      ("qr", "QR code held up to the camera -> relay")):
        v = res[key]
        print(f"{name:<56} {statistics.median(v) * ms:>10.3f} {pct(v, 0.99) * ms:>9.3f} {max(v) * ms:>9.3f}")
    kp99 = pct(res["keypad"], 0.99) * ms
    qmed = statistics.median(res["qr"]) * ms
    extra = res["cpu_scan"] - res["cpu_idle"]
    print(f"\ncamera side, 640x480 at 15 fps: idle feed {res['cpu_idle']:.4f} CPU-s/s; scanning for QR codes "
          f"{res['cpu_scan']:.4f} CPU-s/s ({extra:+.4f}); zxing itself {res['zxing_cpu_per_s']:.4f} CPU-s/s at "
          f"{res['scan_fps']:.1f} pictures/s")
    print(f"\ngoals: keypad p99 < 50 ms: {kp99:.1f} ms {'met' if kp99 < 50 else 'MISSED'}; QR median < 500 ms: "
          f"{qmed:.1f} ms {'met' if qmed < 500 else 'MISSED'}; scanning <= 0.05 CPU-s/s over idle: "
          f"{extra:+.4f} {'met' if extra <= 0.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
