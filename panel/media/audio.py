"""Microphone and speaker: sounddevice (PortAudio) devices chosen by name, a synthetic tone, a recording
sink, and the output mixer that puts the resident's voice (and, later, feedback tones) on the speaker.

Audio inside the panel is 48 kHz mono signed 16-bit in 20 ms blocks (960 samples): what Opus uses, so
WebRTC needs no resampling on the way out.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np

from .capture import DeviceCapture, HealthReport
from .errors import DeviceError

log = logging.getLogger(__name__)

RATE = 48_000
BLOCK = 960  # 20 ms
BLOCK_S = BLOCK / RATE
TIME_BASE = fractions.Fraction(1, RATE)


@dataclass(slots=True)
class AudioChunk:
    samples: np.ndarray  # int16, mono, BLOCK samples
    mono: float  # capture time


def make_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


def tone(freq_hz: float, level: float, start_sample: int, count: int = BLOCK) -> np.ndarray:
    t = (np.arange(count) + start_sample) / RATE
    return (np.sin(2 * math.pi * freq_hz * t) * level * 32767).astype(np.int16)


class ToMono:
    """Any decoded audio frame (aiortc's Opus decoder gives 48 kHz stereo) to 48 kHz mono int16."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        if frame.sample_rate == RATE and frame.format.name == "s16" and frame.layout.name in ("mono", "stereo"):
            arr = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                arr = ((arr[0::2].astype(np.int32) + arr[1::2]) // 2).astype(np.int16)
            return arr
        return np.concatenate([f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)] or
                              [np.zeros(0, np.int16)])


# ---------------------------------------------------------------------------------------------------
# Sources


class ToneSource:
    """A sine tone in real time: the simulated microphone."""

    def __init__(self, freq_hz: float, level: float) -> None:
        self.name = f"synthetic {freq_hz:g} Hz"
        self.freq_hz, self.level = freq_hz, level

    async def run(self, emit: Callable[[AudioChunk], None]) -> None:
        n = 0
        start = time.monotonic()
        while True:
            delay = start + n * BLOCK_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                skipped = int(-delay / BLOCK_S)
                n += skipped  # the loop stalled: drop the backlog rather than play it late
            emit(AudioChunk(tone(self.freq_hz, self.level, n * BLOCK), time.monotonic()))
            n += 1


def find_device(name: str, direction: str) -> int:
    """The index of the PortAudio device whose name is ``name`` (or contains it, case-insensitively)."""
    sd = _sounddevice()
    key = "max_input_channels" if direction == "input" else "max_output_channels"
    try:
        devices = [d for d in sd.query_devices() if d[key] > 0]
    except Exception as e:
        raise DeviceError(f"cannot list audio devices: {e}") from None
    for d in devices:
        if d["name"] == name:
            return int(d["index"])
    matches = [d for d in devices if name.lower() in d["name"].lower()]
    if len(matches) == 1:
        return int(matches[0]["index"])
    names = ", ".join(repr(d["name"]) for d in devices) or "none"
    if matches:
        raise DeviceError(f"audio {direction} {name!r} matches several devices ({', '.join(repr(d['name']) for d in matches)}); "
                          "use the full name")
    raise DeviceError(f"no audio {direction} device named {name!r}; available: {names}")


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise DeviceError(f"sounddevice (PortAudio) is not usable: {e}; install libportaudio2") from None
    return sounddevice


class SoundDeviceInput:
    """A microphone through PortAudio; blocks arrive in PortAudio's thread and are handed to the loop."""

    def __init__(self, device_name: str) -> None:
        self.name = device_name

    async def run(self, emit: Callable[[AudioChunk], None]) -> None:
        sd = _sounddevice()
        index = find_device(self.name, "input")
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
            chunk = AudioChunk(indata[:, 0].copy(), time.monotonic())
            loop.call_soon_threadsafe(emit, chunk)

        def on_finished() -> None:
            loop.call_soon_threadsafe(finished.set)

        try:
            stream = sd.InputStream(device=index, samplerate=RATE, channels=1, dtype="int16", blocksize=BLOCK,
                                    callback=callback, finished_callback=on_finished)
        except Exception as e:
            raise DeviceError(f"cannot open microphone {self.name!r}: {e}") from None
        with stream:
            await finished.wait()
        raise DeviceError(f"microphone {self.name!r} stopped")


# ---------------------------------------------------------------------------------------------------
# Sinks


Played = Callable[[np.ndarray], None]


class Sink(Protocol):
    """Where the mixer's output goes. ``on_played`` (the echo canceller's reference) gets exactly what
    reaches the loudspeaker: for a sound device, what its callback hands to PortAudio, silence included."""

    name: str
    on_played: Played | None

    def write(self, block: np.ndarray) -> None: ...


class RecordingSink:
    """Keeps the last ``seconds`` of what the speaker would play: the simulated speaker."""

    name = "record"

    def __init__(self, seconds: float = 30.0) -> None:
        self._blocks: collections.deque[np.ndarray] = collections.deque(maxlen=max(1, int(seconds / BLOCK_S)))
        self.written = 0
        self.on_played: Played | None = None

    def write(self, block: np.ndarray) -> None:
        self._blocks.append(block)
        self.written += len(block)
        if self.on_played is not None:
            self.on_played(block)

    def samples(self, last_s: float | None = None) -> np.ndarray:
        blocks = list(self._blocks)
        if last_s is not None:
            blocks = blocks[-max(1, int(last_s / BLOCK_S)):]
        return np.concatenate(blocks) if blocks else np.zeros(0, np.int16)

    def clear(self) -> None:
        self._blocks.clear()


class NullSink:
    name = "none"

    def __init__(self) -> None:
        self.on_played: Played | None = None

    def write(self, block: np.ndarray) -> None:
        pass  # nothing is played, so there is nothing to cancel either


class SoundDeviceOutput:
    """A speaker through PortAudio, fed from a short thread-safe buffer (silence when it runs dry).

    It runs as the "source" of a ``DeviceCapture`` so a failing speaker is reported and retried like
    any device; ``run`` emits once when the stream is open.
    """

    MAX_BUFFER = RATE // 5  # 200 ms: more would only add latency

    def __init__(self, device_name: str) -> None:
        self.name = device_name
        self._lock = threading.Lock()
        self._buf: collections.deque[np.ndarray] = collections.deque()
        self._buffered = 0
        self.open = False
        self.on_played: Played | None = None

    def write(self, block: np.ndarray) -> None:
        if not self.open:
            return
        with self._lock:
            self._buf.append(block)
            self._buffered += len(block)
            while self._buffered > self.MAX_BUFFER and self._buf:
                self._buffered -= len(self._buf.popleft())

    def _fill(self, out: np.ndarray) -> None:
        need, pos = len(out), 0
        with self._lock:
            while pos < need and self._buf:
                block = self._buf[0]
                take = min(need - pos, len(block))
                out[pos:pos + take, 0] = block[:take]
                pos += take
                self._buffered -= take
                if take == len(block):
                    self._buf.popleft()
                else:
                    self._buf[0] = block[take:]
        out[pos:, 0] = 0
        if self.on_played is not None:
            self.on_played(out[:, 0])

    async def run(self, emit: Callable[[bool], None]) -> None:
        sd = _sounddevice()
        index = find_device(self.name, "output")
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def callback(outdata: np.ndarray, frames: int, t: Any, status: Any) -> None:
            self._fill(outdata)

        def on_finished() -> None:  # PortAudio's C caller wants None back, not call_soon's handle
            loop.call_soon_threadsafe(finished.set)

        try:
            stream = sd.OutputStream(device=index, samplerate=RATE, channels=1, dtype="int16", blocksize=BLOCK,
                                     callback=callback, finished_callback=on_finished)
        except Exception as e:
            raise DeviceError(f"cannot open speaker {self.name!r}: {e}") from None
        with stream:
            self.open = True
            emit(True)
            try:
                await finished.wait()
            finally:
                self.open = False
        raise DeviceError(f"speaker {self.name!r} stopped")


class SpeakerSink:
    """The speaker device, opened and retried by a ``DeviceCapture``; writes while it is down are dropped."""

    def __init__(self, device_name: str, report: HealthReport) -> None:
        self.name = device_name
        self.output = SoundDeviceOutput(device_name)
        self.capture: DeviceCapture[bool] = DeviceCapture("speaker", device_name, lambda: self.output, report)

    @property
    def on_played(self) -> Played | None:
        return self.output.on_played

    @on_played.setter
    def on_played(self, played: Played | None) -> None:
        self.output.on_played = played

    def write(self, block: np.ndarray) -> None:
        self.output.write(block)


# ---------------------------------------------------------------------------------------------------
# The output mixer


class MixerInput:
    """One named voice into the mixer (a session's received audio, later the feedback tones)."""

    MAX_BUFFER = RATE // 5  # 200 ms: a source running ahead is cut back rather than delayed

    def __init__(self, name: str, gain: float = 1.0) -> None:
        self.name = name
        self.gain = gain
        self._buf: collections.deque[np.ndarray] = collections.deque()
        self._buffered = 0
        self.written = 0

    def write(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        self._buf.append(samples.astype(np.int16, copy=False))
        self._buffered += len(samples)
        self.written += len(samples)
        while self._buffered > self.MAX_BUFFER and len(self._buf) > 1:
            self._buffered -= len(self._buf.popleft())

    def read(self, count: int) -> np.ndarray | None:
        if not self._buffered:
            return None
        out = np.zeros(count, np.int32)
        pos = 0
        while pos < count and self._buf:
            block = self._buf[0]
            take = min(count - pos, len(block))
            out[pos:pos + take] = block[:take]
            pos += take
            self._buffered -= take
            if take == len(block):
                self._buf.popleft()
            else:
                self._buf[0] = block[take:]
        return out


class OutputMixer:
    """Sums its named inputs every 20 ms and writes the result to the sink; idle without inputs."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.inputs: dict[str, MixerInput] = {}
        self._task: asyncio.Task[None] | None = None

    def add_input(self, name: str, gain: float = 1.0) -> MixerInput:
        if name in self.inputs:
            raise ValueError(f"mixer input {name!r} exists already")
        inp = self.inputs[name] = MixerInput(name, gain)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audio-mixer")
        return inp

    def remove_input(self, name: str) -> None:
        self.inputs.pop(name, None)
        if not self.inputs and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        n = 0
        start = time.monotonic()
        while True:
            n += 1
            delay = start + n * BLOCK_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                start, n = time.monotonic(), 0
            mixed = np.zeros(BLOCK, np.int32)
            for inp in list(self.inputs.values()):
                block = inp.read(BLOCK)
                if block is not None:
                    mixed += (block * inp.gain).astype(np.int32) if inp.gain != 1.0 else block
            self.sink.write(np.clip(mixed, -32768, 32767).astype(np.int16))

    async def close(self) -> None:
        self.inputs.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def dominant_frequency(samples: np.ndarray, rate: int = RATE) -> float:
    """The strongest frequency in ``samples`` (Hz), for checks that a tone arrived."""
    x = samples.astype(np.float64)
    if len(x) < 256:
        return 0.0
    x = (x - x.mean()) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[:3] = 0
    return float(np.argmax(spectrum) * rate / len(x))
