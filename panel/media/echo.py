"""Echo cancellation and noise suppression for the entrance microphone.

The engine is WebRTC's audio processing module (AEC3, NS, AGC2) through ``pywebrtc-audio``: a small
binding of just that module, with wheels for aarch64 and x86_64, that releases the GIL while it works.
``livekit``'s APM measured about as well but brings a whole SFU client SDK for it (docs/media.md,
Echo cancellation).

The reference is exactly what the speaker played: ``Reference.played`` is called by the sink with
each block it hands to the device (with the silence it plays when nothing comes, for a sound device),
and every microphone block is paired with the oldest played samples not yet used. The pairing itself
carries the buffer latency of both devices; what remains (the sound's path and the devices' own
buffers) is the echo delay, which ``DelayEstimator`` measures from the signals and keeps tracking,
and which AEC3 receives as its delay hint. A reference that runs ahead of the microphone (the two
devices' clocks drift apart) is cut back to ``max_delay_ms``; one that runs dry is filled with silence.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ..platform import EchoConfig
from .audio import RATE

if TYPE_CHECKING:
    from pywebrtc_audio import AudioProcessor

NS_LEVELS = {"low": 0, "moderate": 1, "high": 2, "very_high": 3}

# The delay estimator works on the signals low-passed and decimated to this rate: 0.25 ms resolution is
# plenty for a hint, and a 1.5 s cross-correlation costs about a millisecond every half second.
_EST_RATE = 4000
_EST_STEP = RATE // _EST_RATE
_WINDOW_S = 1.5
_ESTIMATE_EVERY_S = 0.5
# A far-end block quieter than this (dBFS) says nothing about the echo: no estimate, no ERLE figure.
_ACTIVE_DBFS = -50.0


def dbfs(samples: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float64))))) if len(samples) else 0.0
    return 20 * math.log10(max(rms, 1e-9) / 32768)


class Reference:
    """What the speaker played, waiting to be paired with the microphone; thread-safe (the speaker's
    PortAudio callback writes, the echo canceller's thread reads)."""

    def __init__(self, max_delay_ms: int) -> None:
        self.max_samples = RATE * max_delay_ms // 1000
        self._lock = threading.Lock()
        self._blocks: collections.deque[np.ndarray] = collections.deque()
        self._buffered = 0
        self.trimmed = 0  # samples dropped because the speaker ran ahead
        self.starved = 0  # samples of silence used because it had nothing

    def played(self, block: np.ndarray) -> None:
        with self._lock:
            self._blocks.append(np.array(block, dtype=np.int16, copy=True).reshape(-1))
            self._buffered += len(block)
            while self._buffered - len(self._blocks[0]) >= self.max_samples:
                self._buffered -= len(self._blocks[0])
                self.trimmed += len(self._blocks.popleft())

    def take(self, count: int) -> np.ndarray:
        out = np.zeros(count, np.int16)
        pos = 0
        with self._lock:
            while pos < count and self._blocks:
                block = self._blocks[0]
                n = min(count - pos, len(block))
                out[pos:pos + n] = block[:n]
                pos += n
                self._buffered -= n
                if n == len(block):
                    self._blocks.popleft()
                else:
                    self._blocks[0] = block[n:]
            self.starved += count - pos
        return out

    def clear(self) -> None:
        """Forget what was played (and the counts): nobody was listening to pair it with."""
        with self._lock:
            self._blocks.clear()
            self._buffered = self.trimmed = self.starved = 0

    @property
    def buffered_ms(self) -> float:
        return self._buffered * 1000 / RATE


class DelayEstimator:
    """The echo's delay behind the reference, from the cross-correlation of the two signals (whitened,
    GCC-PHAT, so speech's strong low frequencies and the room's reflections do not smear the peak),
    re-estimated every half second while the speaker plays and smoothed over the last few estimates."""

    def __init__(self, max_delay_ms: int) -> None:
        self.max_lag = max_delay_ms * _EST_RATE // 1000
        size = int(_WINDOW_S * _EST_RATE) + self.max_lag
        self._far = np.zeros(size)
        self._near = np.zeros(size)
        self._active = np.zeros(size, bool)
        self._since = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=5)
        self.delay_ms: int | None = None

    @staticmethod
    def _decimate(samples: np.ndarray) -> np.ndarray:
        usable = len(samples) - len(samples) % _EST_STEP
        out: np.ndarray = samples[:usable].astype(np.float64).reshape(-1, _EST_STEP).mean(axis=1)
        return out

    def add(self, far: np.ndarray, near: np.ndarray) -> int | None:
        """Feed one block pair; returns a new estimate (ms) when one was made."""
        f, n = self._decimate(far), self._decimate(near)
        k = len(f)
        self._far = np.roll(self._far, -k)
        self._near = np.roll(self._near, -k)
        self._active = np.roll(self._active, -k)
        self._far[-k:], self._near[-k:] = f, n
        self._active[-k:] = dbfs(far) > _ACTIVE_DBFS
        self._since += k
        if self._since < _ESTIMATE_EVERY_S * _EST_RATE or self._active.mean() < 0.3:
            return None
        self._since = 0
        lag = self._correlate()
        if lag is None:
            return None
        self._recent.append(lag)
        self.delay_ms = round(float(np.median(self._recent)) * 1000 / _EST_RATE)
        return self.delay_ms

    def _correlate(self) -> int | None:
        far = self._far - self._far.mean()
        near = self._near - self._near.mean()
        size = 1 << (len(far) * 2 - 1).bit_length()
        spectrum = np.fft.rfft(near, size) * np.conj(np.fft.rfft(far, size))
        spectrum /= np.abs(spectrum) + 1e-9
        corr = np.fft.irfft(spectrum, size)[: self.max_lag + 1]
        peak = int(np.argmax(corr))
        # A peak that does not stand well out of the rest is noise or double talk: keep the last estimate.
        if corr[peak] < 6 * float(np.std(corr)) + 1e-12:
            return None
        return peak


class EchoCanceller:
    """AEC3 + NS (+ AGC2) on the microphone, paired block by block with what the speaker played.

    Not thread-safe: ``process`` runs in one thread at a time (the voice stream's worker);
    ``reference.played`` may be called from any thread.
    """

    def __init__(self, cfg: EchoConfig) -> None:
        self.cfg = cfg
        self.reference = Reference(cfg.max_delay_ms)
        self.delay = DelayEstimator(cfg.max_delay_ms)
        self.ns = cfg.noise_suppression != "off"
        self._apm: AudioProcessor | None = None
        if cfg.enabled or self.ns or cfg.auto_gain:
            # Imported here so a panel installed without it still runs (without cancellation; the hub says so).
            from pywebrtc_audio import AudioProcessor

            self._apm = AudioProcessor(
                sample_rate=RATE, echo_cancellation=cfg.enabled, noise_suppression=self.ns,
                ns_level=NS_LEVELS.get(cfg.noise_suppression, 1), auto_gain_control=cfg.auto_gain,
                stream_delay_ms=cfg.delay_ms or 0)
        self.blocks = 0
        # Smoothed energies of the microphone and the output while only the speaker plays, for ERLE.
        self._mic_energy = 0.0
        self._out_energy = 0.0

    def process(self, near: np.ndarray) -> np.ndarray:
        far = self.reference.take(len(near))
        if self._apm is None:
            return near
        if self.cfg.enabled:
            estimate = self.delay.add(far, near)
            if estimate is not None and self.cfg.delay_ms is None:
                self._apm.stream_delay_ms = estimate
        out = self._apm.process(near, far)
        self.blocks += 1
        if self.cfg.enabled and dbfs(far) > _ACTIVE_DBFS:
            self._mic_energy = 0.95 * self._mic_energy + 0.05 * float(np.mean(np.square(near.astype(np.float64))))
            self._out_energy = 0.95 * self._out_energy + 0.05 * float(np.mean(np.square(out.astype(np.float64))))
        return out

    def reset(self) -> None:
        """A new stream starts: forget the old reference (it was never heard by this microphone run)."""
        self.reference.clear()
        if self._apm is not None:
            self._apm.reset()

    @property
    def erle_db(self) -> float | None:
        """Echo return loss enhancement while the speaker played: a guide for tuning, not a measurement
        (double talk lowers it, noise suppression adds the noise it removed)."""
        if self._mic_energy <= 0:
            return None
        return round(10 * math.log10(self._mic_energy / max(self._out_energy, 1e-3)), 1)

    def status(self) -> dict[str, Any]:
        return {"enabled": self.cfg.enabled, "noise_suppression": self.cfg.noise_suppression,
                "delay_ms": self.cfg.delay_ms if self.cfg.delay_ms is not None else self.delay.delay_ms,
                "delay_source": "config" if self.cfg.delay_ms is not None else "estimated",
                "erle_db": self.erle_db, "reference_ms": round(self.reference.buffered_ms, 1),
                "reference_trimmed": self.reference.trimmed, "blocks": self.blocks}
