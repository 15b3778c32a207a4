"""A simulated door housing for echo tests and benchmarks: speech made by espeak-ng, and the path from the
panel's speaker back into its microphone.

The echo path is what a real housing does to the sound, each part on purpose: the loudspeaker's
nonlinearity (soft clipping, ``tanh``), the delay of the devices' buffers and of the air (30-150 ms),
a decaying room response (a direct path followed by exponentially decaying reflections, fixed by a seed),
the speaker's and the microphone's clocks running ``drift_ppm`` apart (the microphone resamples the
sound at 1 + ppm·10⁻⁶ of the speaker's rate), and noise at the microphone. ``Room`` does the same on a
stream, block by block, for the end-to-end run where the panel's speaker and microphone are this room.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from panel.media.audio import BLOCK, BLOCK_S, RATE, AudioChunk


def speech(text: str, voice: str = "en", words_per_minute: int = 160) -> np.ndarray:
    """``text`` spoken by espeak-ng, as 48 kHz mono float in [-1, 1] (its own rate is 22.05 kHz)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng; scripts/test installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True,
                       capture_output=True)
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            raw = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    frame = av.AudioFrame.from_ndarray(raw.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    out = np.concatenate(parts).astype(np.float64)
    return out / max(float(np.max(np.abs(out))), 1e-9)


@dataclass(frozen=True)
class EchoPath:
    delay_ms: float = 80.0
    decay_ms: float = 60.0  # reflections fall by 60 dB over 6.9 times this (RT60 ≈ 415 ms at 60)
    direct_to_reverb_db: float = 10.0  # the speaker sits a few cm from the microphone: the direct path dominates
    echo_gain: float = 0.5  # direct path's gain: a speaker a few cm from the microphone is loud
    clip_drive: float = 2.0  # the loudspeaker's soft clipping: tanh(drive·x)/drive
    drift_ppm: float = 100.0
    noise_dbfs: float = -60.0
    seed: int = 7

    def impulse_response(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        delay = int(self.delay_ms * RATE / 1000)
        tail_len = int(self.decay_ms * 7 * RATE / 1000)
        t = np.arange(tail_len) / RATE
        tail = rng.standard_normal(tail_len) * np.exp(-t / (self.decay_ms / 1000))
        tail *= math.sqrt(10 ** (-self.direct_to_reverb_db / 10) / float(np.sum(np.square(tail))))
        ir = np.zeros(delay + tail_len)
        ir[delay] = 1.0
        ir[delay + int(0.002 * RATE):] += tail[: tail_len - int(0.002 * RATE)]
        return ir * self.echo_gain

    def loudspeaker(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(self.clip_drive * x) / self.clip_drive

    def drifted(self, x: np.ndarray, n_out: int | None = None) -> np.ndarray:
        """``x`` (speaker clock) as sampled by the microphone's clock."""
        n_out = len(x) if n_out is None else n_out
        pos = np.arange(n_out) * (1 + self.drift_ppm * 1e-6)
        out: np.ndarray = np.interp(pos, np.arange(len(x)), x, right=0.0)
        return out

    def noise(self, n: int, seed_offset: int = 0) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1 + seed_offset)
        return rng.standard_normal(n) * 10 ** (self.noise_dbfs / 20)

    def echo(self, played: np.ndarray) -> np.ndarray:
        """What the microphone picks up of ``played`` (the speaker's signal, float, full scale 1)."""
        return self.drifted(fft_convolve(self.loudspeaker(played), self.impulse_response())[: len(played)])


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    size = 1 << (len(x) + len(h) - 1).bit_length()
    out: np.ndarray = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x) + len(h) - 1]
    return out


def to_int16(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    return out


class Room:
    """The echo path on a stream: the panel's speaker sink writes blocks in, its microphone reads blocks out
    (the echo of what was played, plus ``near`` speech, plus noise). What the speaker played reaches the
    microphone in order, resampled by the clock drift; a microphone that reads before the speaker wrote
    hears silence there, as a real one would hear a speaker that had nothing to play."""

    name = "room"

    def __init__(self, path: EchoPath, near: np.ndarray | None = None) -> None:
        self.path = path
        self.ir = path.impulse_response()
        self._wet = np.zeros(0)  # the speaker's sound after loudspeaker and room, not yet heard
        self._tail = np.zeros(len(self.ir) - 1)
        self._pos = 0.0  # fractional read position in _wet (the microphone's clock)
        self.near = np.zeros(0) if near is None else near
        self.mic_pos = 0
        self.on_played: Callable[[np.ndarray], None] | None = None

    # the speaker side: a sink for the panel's mixer
    def write(self, block: np.ndarray) -> None:
        if self.on_played is not None:
            self.on_played(block)
        y = fft_convolve(self.path.loudspeaker(block.astype(np.float64) / 32768), self.ir)
        y[: len(self._tail)] += self._tail
        self._wet = np.concatenate([self._wet, y[: len(block)]])
        self._tail = y[len(block):]

    # the microphone side
    def read(self, count: int = BLOCK) -> np.ndarray:
        step = 1 + self.path.drift_ppm * 1e-6
        pos = self._pos + np.arange(count) * step
        usable = pos < len(self._wet) - 1
        echo = np.zeros(count)
        echo[usable] = np.interp(pos[usable], np.arange(len(self._wet)), self._wet) if usable.any() else 0.0
        self._pos = float(pos[usable][-1] + step) if usable.any() else self._pos
        drop = int(self._pos) - 1
        if drop > 0:
            self._wet, self._pos = self._wet[drop:], self._pos - drop
        near = self.near[self.mic_pos:self.mic_pos + count]
        near = np.pad(near, (0, count - len(near)))
        noise = self.path.noise(count, self.mic_pos)
        self.mic_pos += count
        return to_int16(echo + near + noise)


class RoomMicrophone:
    """The panel's microphone in the room: a block every 20 ms on its own clock (a ``Source``)."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.name = "room"

    async def run(self, emit: Callable[[AudioChunk], None]) -> None:
        start, n = time.monotonic(), 0
        while True:
            delay = start + n * BLOCK_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            emit(AudioChunk(self.room.read(BLOCK), time.monotonic()))
            n += 1


class ClipSource:
    """A recording played in real time, then silence: a resident speaking into their phone (a ``Source``)."""

    def __init__(self, clip: np.ndarray, start_s: float = 0.0) -> None:
        self.clip = np.pad(to_int16(clip), (int(start_s * RATE), 0))
        self.name = "clip"
        self.started: float | None = None

    async def run(self, emit: Callable[[AudioChunk], None]) -> None:
        start, n = time.monotonic(), 0
        self.started = start
        while True:
            delay = start + n * BLOCK_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            block = self.clip[n * BLOCK:(n + 1) * BLOCK]
            emit(AudioChunk(np.pad(block, (0, BLOCK - len(block))), time.monotonic()))
            n += 1


def erle_db(mic: np.ndarray, out: np.ndarray, from_s: float = 1.0, active: np.ndarray | None = None) -> float:
    """Echo return loss enhancement: the microphone's energy over the output's, from ``from_s`` on, on the
    samples where ``active`` (the far end speaks) if given."""
    start, n = int(from_s * RATE), min(len(mic), len(out))
    m, o = mic[start:n].astype(np.float64), out[start:n].astype(np.float64)
    if active is not None:
        m, o = m[active[start:n]], o[active[start:n]]
    return 10 * math.log10(float(np.mean(m**2)) / max(float(np.mean(o**2)), 1e-9))


def speaking(x: np.ndarray, threshold_db: float = -40.0, window_s: float = 0.05) -> np.ndarray:
    """Where ``x`` (float, full scale 1) carries speech: its short-term level within ``threshold_db`` of the peak."""
    w = int(window_s * RATE)
    level = np.sqrt(np.convolve(x**2, np.ones(w) / w, mode="same"))
    return np.asarray(level > float(level.max()) * 10 ** (threshold_db / 20))


def correlation(x: np.ndarray, clean: np.ndarray, max_lag_ms: float = 40.0) -> float:
    """Pearson correlation of ``x`` with ``clean`` at the lag (up to ``max_lag_ms`` either way) where they match
    best: the processing delays its output by a constant 7-15 ms, which is latency, not damage."""
    n = min(len(x), len(clean))
    a, b = x[:n].astype(np.float64), clean[:n].astype(np.float64)
    size = 1 << (2 * n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    m = int(max_lag_ms * RATE / 1000)
    lags = np.concatenate([np.arange(0, m + 1), np.arange(-m, 0)])
    lag = int(lags[int(np.argmax(np.concatenate([xc[: m + 1], xc[-m:]])))])
    xa, cb = (a[lag:], b[: n - lag]) if lag >= 0 else (a[: n + lag], b[-lag:])
    return float(np.corrcoef(xa, cb)[0, 1])
