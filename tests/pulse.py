"""A real PulseAudio for the sound-device tests, with two null sinks standing in for the door's hardware.

- ``door_speaker``: the panel's speaker. Its monitor is where a test hears what the panel played.
- ``door_room``: the air in front of the panel. A test plays into it (a visitor speaking); its monitor
  is the panel's microphone.

PortAudio reaches them through ALSA's pulse plugin (Debian libasound2-plugins), under ALSA names
written to the ``.asoundrc`` of a private HOME (door_speaker, door_mic, door_speaker_monitor,
door_room), each naming this server's socket, so nothing depends on the machine's own sound setup.
PulseAudio refuses to run as root unless it is a system daemon; with HOME and XDG_RUNTIME_DIR of its
own (and no D-Bus, no shared memory) it runs as an ordinary per-user server, warnings aside.
Unloading a sink's module makes the device disappear mid-stream; loading it again brings it back.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from panel.compat import rescan_sound_devices
from panel.media.audio import BLOCK, RATE

from .eventually import eventually

SINKS = ("door_speaker", "door_room")
PCMS = {  # ALSA name -> (PulseAudio device, what the test calls it)
    "door_speaker": "door_speaker",
    "door_mic": "door_room.monitor",
    "door_speaker_monitor": "door_speaker.monitor",
    "door_room": "door_room",
}


class PulseServer:
    def __init__(self) -> None:
        exe = shutil.which("pulseaudio")
        if exe is None or shutil.which("pactl") is None:
            raise RuntimeError("PulseAudio is not installed (Debian pulseaudio, pulseaudio-utils, "
                               "libasound2-plugins; scripts/test installs them)")
        self.exe = exe
        # A short path: a unix socket's path must stay under 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="pa-"))
        self.socket = self.dir / "native"
        self.env = {"HOME": str(self.dir), "XDG_RUNTIME_DIR": str(self.dir), "XDG_CONFIG_HOME": str(self.dir),
                    "PATH": "/usr/bin:/bin", "PULSE_SERVER": f"unix:{self.socket}"}
        self.proc: asyncio.subprocess.Process | None = None
        (self.dir / ".asoundrc").write_text("".join(
            f'pcm.{alsa} {{ type pulse; server "unix:{self.socket}"; device "{device}" }}\n'
            for alsa, device in PCMS.items()))

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.exe, "--daemonize=no", "--exit-idle-time=-1", "-n", "--disable-shm=yes", "--use-pid-file=no",
            "--log-target=stderr", f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            *(f"--load={self._sink_args(name)}" for name in SINKS),
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        answered: bool = await eventually(lambda: self._answers(), 15, "PulseAudio answering on its socket")
        assert answered

    @staticmethod
    def _sink_args(name: str) -> str:
        return f"module-null-sink sink_name={name} rate={RATE} channels=1"

    async def _answers(self) -> bool:
        if self.proc is not None and self.proc.returncode is not None:
            raise AssertionError(f"pulseaudio exited with {self.proc.returncode}")
        return self.socket.exists() and (await self.pactl("info", check=False)) is not None

    async def pactl(self, *args: str, check: bool = True) -> str | None:
        proc = await asyncio.create_subprocess_exec("pactl", "-s", f"unix:{self.socket}", *args, env=self.env,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            if check:
                raise AssertionError(f"pactl {' '.join(args)} failed: {err.decode().strip()}")
            return None
        return out.decode()

    async def unload_sink(self, name: str) -> None:
        """The device disappears (a USB sound card pulled out): its streams fail, opening it fails."""
        modules = await self.pactl("list", "short", "modules") or ""
        ids = [line.split()[0] for line in modules.splitlines() if f"sink_name={name} " in line + " "]
        assert ids, f"no module for sink {name} in:\n{modules}"
        await self.pactl("unload-module", ids[0])

    async def load_sink(self, name: str) -> None:
        await self.pactl("load-module", *self._sink_args(name).split())

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def use_server(server: PulseServer, setenv: Callable[[str, str], Any]) -> None:
    """Point this process's PortAudio at ``server``'s ALSA names (``setenv``: pytest's monkeypatch)."""
    setenv("HOME", str(server.dir))
    assert rescan_sound_devices(), "sounddevice cannot restart PortAudio (panel/compat.py)"


class Listener:
    """A PortAudio input stream in the test (e.g. the speaker's monitor), keeping what it heard."""

    def __init__(self, device: str) -> None:
        import sounddevice

        self.blocks: list[np.ndarray] = []
        self.stream = sounddevice.InputStream(device=device, samplerate=RATE, channels=1, dtype="int16",
                                              blocksize=BLOCK, callback=self._heard)
        self.stream.start()

    def _heard(self, indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        self.blocks.append(indata[:, 0].copy())

    def last(self, seconds: float) -> np.ndarray:
        blocks = self.blocks[-max(1, int(seconds * RATE / BLOCK)):]
        return np.concatenate(blocks) if blocks else np.zeros(0, np.int16)

    def close(self) -> None:
        self.stream.close()


class Speaker:
    """A sine tone played into a device from the test (a visitor speaking into the room)."""

    def __init__(self, device: str, hz: float, level: float = 0.3) -> None:
        import sounddevice

        self.n = 0
        self.hz, self.level = hz, level
        self.stream = sounddevice.OutputStream(device=device, samplerate=RATE, channels=1, dtype="int16",
                                               blocksize=BLOCK, callback=self._play)
        self.stream.start()

    def _play(self, outdata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        t_s = (np.arange(frames) + self.n) / RATE
        outdata[:, 0] = (np.sin(2 * np.pi * self.hz * t_s) * self.level * 32767).astype(np.int16)
        self.n += frames

    def close(self) -> None:
        self.stream.close()
