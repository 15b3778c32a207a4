"""Feedback tones for the visitor, generated with numpy (nothing shipped as files) and played through
the speaker's output mixer, where they are summed with the resident's voice (saturating, never
wrapping: ``OutputMixer`` adds in int32 and clips to int16).

Each tone is a list of segments (a frequency, or a pause) rendered once into samples with 5 ms
raised-cosine edges, so starting and stopping never clicks. A ``TonePlayer`` plays one tone at a
time on its own mixer input: playing another replaces it at once (ringback stops when the call is
answered); a one-shot tone removes its input when done, so an idle panel's mixer sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from ..door import ToneName
from ..platform import TonesConfig
from .audio import BLOCK, BLOCK_S, RATE, MixerInput, OutputMixer

log = logging.getLogger(__name__)

TONE_NAMES: tuple[ToneName, ...] = ("ringback", "answered", "door", "unanswered", "refused", "blocked")
FADE_S = 0.005
# Blocks written ahead of the mixer: enough to ride out loop jitter, little enough to stop at once.
LEAD_BLOCKS = 3


@dataclass(frozen=True)
class Segment:
    hz: float | None  # None: silence
    seconds: float


@dataclass(frozen=True)
class Tone:
    name: ToneName
    segments: tuple[Segment, ...]
    loop: bool = False

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.segments)


def tones_from_config(cfg: TonesConfig) -> dict[ToneName, Tone]:
    """The tones. Ringback follows the config; the others are fixed so visitors learn them."""
    return {
        # The network's "it is ringing at the other end" cadence (425 Hz, 1 s on, 4 s off in Europe).
        "ringback": Tone("ringback", (Segment(cfg.ringback_hz, cfg.ringback_on_s), Segment(None, cfg.ringback_off_s)),
                         loop=True),
        # Rising: someone is there.
        "answered": Tone("answered", (Segment(660, 0.12), Segment(None, 0.03), Segment(880, 0.12),
                                      Segment(None, 0.03), Segment(1320, 0.22))),
        # Three short high beeps: push the door now.
        "door": Tone("door", (Segment(1760, 0.08), Segment(None, 0.07), Segment(1760, 0.08), Segment(None, 0.07),
                              Segment(1760, 0.08))),
        # Falling: nobody is coming.
        "unanswered": Tone("unanswered", (Segment(880, 0.25), Segment(None, 0.05), Segment(660, 0.25),
                                          Segment(None, 0.05), Segment(440, 0.5))),
        # Two low buzzes: that code or card does not open this door (panel/access).
        "refused": Tone("refused", (Segment(330, 0.15), Segment(None, 0.08), Segment(330, 0.15))),
        # One long low buzz: the keypad or reader is blocked after too many wrong codes.
        "blocked": Tone("blocked", (Segment(220, 0.8),)),
    }


def render(tone: Tone, level: float, rate: int = RATE) -> np.ndarray:
    """One pass of ``tone`` as int16 samples at ``level`` (1 = full scale)."""
    parts = []
    phase = 0.0
    fade = int(FADE_S * rate)
    for seg in tone.segments:
        n = round(seg.seconds * rate)
        if seg.hz is None or n == 0:
            parts.append(np.zeros(n, np.float32))
            continue
        t = np.arange(n, dtype=np.float64)
        wave = np.sin(phase + 2 * math.pi * seg.hz * t / rate)
        phase = (phase + 2 * math.pi * seg.hz * n / rate) % (2 * math.pi)
        f = min(fade, n // 2)
        if f:
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, f))
            wave[:f] *= ramp
            wave[-f:] *= ramp[::-1]
        parts.append(wave.astype(np.float32))
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return to_int16(samples * level)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float (-1..1) to int16, saturating: a sum over full scale clips instead of wrapping round."""
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)


class TonePlayer:
    """Plays one tone at a time into its own input of the output mixer."""

    def __init__(self, mixer: OutputMixer, cfg: TonesConfig, input_name: str = "tones") -> None:
        self.mixer = mixer
        self.level = cfg.level
        self.input_name = input_name
        self.tones = tones_from_config(cfg)
        self._rendered = {name: render(tone, self.level) for name, tone in self.tones.items()}
        self._task: asyncio.Task[None] | None = None
        self.playing: ToneName | None = None
        self.played: list[tuple[ToneName, float]] = []  # (tone, monotonic start), the last few

    def play(self, name: ToneName) -> None:
        """Start ``name`` now, replacing whatever this player was playing."""
        self.stop()
        self.playing = name
        self.played.append((name, time.monotonic()))
        del self.played[:-20]
        self._task = asyncio.get_running_loop().create_task(self._run(name), name=f"tone:{name}")

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self.playing = None
        # A new input, not the old one with its blocks written ahead: the old tone stops at once.
        self.mixer.remove_input(self.input_name)

    async def _run(self, name: ToneName) -> None:
        samples = self._rendered[name]
        loop = self.tones[name].loop
        inp: MixerInput = self.mixer.add_input(self.input_name)
        pos, written = 0, 0
        start = time.monotonic()
        try:
            while True:
                # Keep LEAD_BLOCKS ahead of real time; the mixer reads one block per 20 ms.
                due = int((time.monotonic() - start) / BLOCK_S) + LEAD_BLOCKS
                while written < due:
                    block = samples[pos:pos + BLOCK]
                    pos += len(block)
                    if len(block) < BLOCK:
                        if not loop:
                            if len(block):
                                inp.write(block)
                            await asyncio.sleep(LEAD_BLOCKS * BLOCK_S + BLOCK_S)  # let the mixer play it out
                            return
                        pos = BLOCK - len(block)
                        block = np.concatenate([block, samples[:pos]])
                    inp.write(block)
                    written += 1
                await asyncio.sleep(BLOCK_S)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                self.playing = None
                if self.mixer.inputs.get(self.input_name) is inp:
                    self.mixer.remove_input(self.input_name)

    async def close(self) -> None:
        task = self._task
        self.stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
