"""An OSDP card reader on RS-485, with the panel as the control panel (CP), through libosdp.

OSDP (IEC 60839-11-5) replaces Wiegand: the bus is supervised (a reader that goes quiet is noticed)
and, with the secure channel, encrypted and authenticated (AES-128 with the secure channel base key
``osdp_scbk`` from the secrets file), so a card number cannot be sniffed or replayed on the wire.
libosdp polls the reader from its own thread; card reads and key presses are handed to the event
loop and go to the access service like any other credential (a reader's keypad feeds the same entry
rules as the GPIO keypad).
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import tty
from collections.abc import Callable
from typing import Any

from ..errors import HardwareError
from ..platform import OsdpConfig

log = logging.getLogger(__name__)

# OSDP keypad data: ASCII digits; '*' is 0x7F and '#' is 0x0D on the wire (some readers send ASCII).
_KEYS = {0x7F: "*", 0x0D: "#", ord("*"): "*", ord("#"): "#", **{ord(str(d)): str(d) for d in range(10)}}
_BAUD = {9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400, 57600: termios.B57600,
         115200: termios.B115200, 230400: termios.B230400}


def open_serial(device: str, baud: int) -> int:
    """The device, raw, non-blocking, at ``baud`` (8N1): what an RS-485 adapter needs."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise HardwareError(f"access.osdp.device: cannot open {device} ({e.strerror}); is the RS-485 adapter "
                            "connected and the service user in the dialout group?") from e
    try:
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[4] = attrs[5] = _BAUD[baud]
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error as e:
        os.close(fd)
        raise HardwareError(f"access.osdp.device: {device} is not a serial port ({e})") from e
    return fd


def card_number(data: bytes) -> str:
    return data.hex()


class OsdpReader:
    """One reader on one bus; ``run`` (a supervised task) keeps the CP polling until cancelled."""

    def __init__(self, cfg: OsdpConfig, scbk: bytes | None, on_card: Callable[[str], None],
                 on_key: Callable[[str], None]) -> None:
        if cfg.secure_channel and scbk is None:
            raise HardwareError("access.osdp.secure_channel is on but the secrets file has no osdp_scbk (32 hex "
                                "digits, the same key the reader is provisioned with)")
        self.cfg = cfg
        self.scbk = scbk if cfg.secure_channel else None
        self.on_card = on_card
        self.on_key = on_key
        self.cp: Any = None
        self._fd: int | None = None

    def _event(self, loop: asyncio.AbstractEventLoop, _pd: int, event: dict[str, Any]) -> int:
        """Runs on libosdp's thread: hand the event to the loop, decide nothing here."""
        import osdp

        kind = event.get("event")
        data = bytes(event.get("data") or b"")
        if kind == osdp.Event.CardRead:
            loop.call_soon_threadsafe(self.on_card, card_number(data))
        elif kind == osdp.Event.KeyPress:
            for b in data:
                key = _KEYS.get(b)
                if key is not None:
                    loop.call_soon_threadsafe(self.on_key, key)
        return 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            import osdp
        except ImportError as e:
            raise HardwareError("access.osdp needs libosdp: pip install 'panel[access]'") from e

        fd = self._fd = open_serial(self.cfg.device, self.cfg.baud)

        class Channel(osdp.Channel):  # type: ignore[misc]
            def read(self, max_bytes: int) -> bytes:
                try:
                    return os.read(fd, max_bytes)
                except (BlockingIOError, InterruptedError):
                    return b""
                except OSError:
                    return b""  # the adapter went away: libosdp marks the reader offline

            def write(self, buf: bytes) -> int:
                try:
                    return os.write(fd, buf)
                except (BlockingIOError, InterruptedError):
                    return 0
                except OSError:
                    return 0

            def flush(self) -> None:
                return None

        flags = [osdp.LibFlag.EnforceSecure] if self.scbk is not None else []
        info = osdp.PDInfo(self.cfg.address, Channel(), scbk=self.scbk, flags=flags, name="reader")
        self.cp = osdp.ControlPanel([info], log_level=osdp.LogLevel.Warning,
                                    event_handler=lambda pd, ev: self._event(loop, pd, ev))
        self.cp.start()

    async def run(self) -> None:
        self.start(asyncio.get_running_loop())
        try:
            await asyncio.Event().wait()  # libosdp's thread does the work
        finally:
            self.close()

    def close(self) -> None:
        if self.cp is not None:
            try:
                self.cp.stop()
            except RuntimeError:
                pass
            self.cp = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def indicate(self, outcome: str, seconds: float | None = None) -> bool:
        """The reader's own light and beeper answer the card holder: green and one beep for a release, red
        and two beeps for a refusal, red for as long as a block lasts. Sent only to a reader that says it
        can (a NAK'd command takes an OSDP reader offline); True if sent."""
        import osdp

        cp = self.cp
        if cp is None:
            return False
        green = outcome == "granted"
        tenths = max(1, min(65535, round((seconds if seconds is not None else (3.0 if green else 1.0)) * 10)))
        sent = False
        try:
            if cp.check_capability(self.cfg.address, osdp.Capability.LEDControl)[0] > 0:
                sent = bool(cp.submit_command(self.cfg.address, {
                    "command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 1, "on_count": 10,
                    "off_count": 0, "on_color": osdp.CommandLEDColor.Green if green else osdp.CommandLEDColor.Red,
                    "off_color": osdp.CommandLEDColor.Black, "timer_count": tenths, "temporary": True}))
            if cp.check_capability(self.cfg.address, osdp.Capability.AudibleControl)[0] > 0:
                cp.submit_command(self.cfg.address, {
                    "command": osdp.Command.Buzzer, "reader": 0, "control_code": 2, "on_count": 2, "off_count": 1,
                    "rep_count": 1 if green else 2})
        except Exception:  # the reader is offline or busy: the panel's own light and speaker still answer
            log.info("could not signal the reader", exc_info=True)
        return sent

    def status(self) -> dict[str, Any]:
        if self.cp is None:
            return {"online": False, "secure_channel": False}
        return {"online": self.cp.is_online(self.cfg.address), "secure_channel": self.cp.is_sc_active(self.cfg.address)}
