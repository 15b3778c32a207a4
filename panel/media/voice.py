"""The entrance microphone as one stream for every listener: echo-cancelled and Opus-encoded once.

``VoiceStream`` reads the shared microphone capture while anybody listens, runs the echo canceller
(panel/media/echo.py) and one Opus encoder on each 20 ms block in one worker thread (the two cost
about 0.3 ms a block here, several times that on a Pi: off the event loop), and hands the same packets
to every session's ``MicrophoneTrack``; aiortc's sender only packetizes them. The installer's level
meter reads the raw capture, before any of this.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from .audio import BLOCK, RATE, TIME_BASE, AudioChunk, make_frame
from .capture import DeviceCapture, Fanout, Subscription, SubscriptionClosed
from .echo import EchoCanceller

log = logging.getLogger(__name__)

# A listener further behind than this many packets (200 ms) loses the oldest: late voice is worse than none.
FEED_DEPTH = 10
# One 20 ms Opus frame of silence (CELT, full band, mono): what a muted microphone sends, so the
# receiver's clock keeps running without encoding anything.
OPUS_SILENCE = b"\xf8\xff\xfe"


@dataclass(slots=True, frozen=True)
class VoicePacket:
    data: bytes
    samples: int  # how much sound the packet holds (BLOCK)
    mono: float  # capture time of the block


class OpusEncoder:
    """libopus through PyAV, mono 48 kHz in 20 ms frames, tuned for voice."""

    def __init__(self, bitrate_kbps: int) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.format = "s16"
        ctx.layout = "mono"
        ctx.sample_rate = RATE
        ctx.time_base = TIME_BASE
        ctx.options = {"application": "voip", "frame_duration": "20"}
        self._ctx = ctx
        self._pts = 0

    def encode(self, samples: np.ndarray) -> list[bytes]:
        packets = self._ctx.encode(make_frame(samples, self._pts))
        self._pts += len(samples)
        return [bytes(p) for p in packets]


class VoiceStream:
    """The processed, encoded microphone, shared; runs only while somebody listens."""

    def __init__(self, microphone: DeviceCapture[AudioChunk], echo: EchoCanceller | None, bitrate_kbps: int) -> None:
        self.microphone = microphone
        self.echo = echo
        self.bitrate_kbps = bitrate_kbps
        self._fanout: Fanout[VoicePacket] = Fanout(self._run, "voice-stream")
        self.blocks = 0
        self.packets = 0
        self.process_cpu_s = 0.0
        # Called on the loop with every processed block (what the listeners hear, before encoding).
        self.taps: list[Callable[[np.ndarray], None]] = []

    def subscribe(self) -> Subscription[VoicePacket]:
        return self._fanout.add(Subscription(FEED_DEPTH, "drop_oldest", self._fanout.remove))

    @property
    def listeners(self) -> int:
        return len(self._fanout.feeds)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # One thread: the echo canceller and the encoder are stateful and not thread-safe.
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voice")
        sub = self.microphone.subscribe(maxsize=FEED_DEPTH, overflow="drop_oldest")
        try:
            encoder = await loop.run_in_executor(executor, OpusEncoder, self.bitrate_kbps)
            if self.echo is not None:
                # What the speaker played before this microphone run was never heard by it.
                await loop.run_in_executor(executor, self.echo.reset)
            dropped = 0
            while True:
                chunk = await sub.get()
                if self.echo is not None and sub.dropped > dropped:
                    # Microphone blocks lost on a busy loop: drop the speaker's samples they would have
                    # been paired with, or the reference runs ahead of the microphone for good.
                    self.echo.reference.take((sub.dropped - dropped) * BLOCK)
                    dropped = sub.dropped
                processed, packets, cpu = await loop.run_in_executor(executor, self._work, encoder, chunk.samples)
                self.process_cpu_s += cpu
                self.blocks += 1
                for tap in list(self.taps):
                    tap(processed)
                for data in packets:
                    self.packets += 1
                    self._fanout.put(VoicePacket(data, BLOCK, chunk.mono))
        except SubscriptionClosed:
            return
        finally:
            sub.close()
            executor.shutdown(wait=False)

    def _work(self, encoder: OpusEncoder, samples: np.ndarray) -> tuple[np.ndarray, list[bytes], float]:
        t0 = time.thread_time()
        processed = self.echo.process(samples) if self.echo is not None else samples
        packets = encoder.encode(processed)
        return processed, packets, time.thread_time() - t0

    async def close(self) -> None:
        await self._fanout.close()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"listeners": self.listeners, "blocks": self.blocks, "packets": self.packets,
                               "opus_kbps": self.bitrate_kbps}
        if self.echo is not None:
            out["echo"] = self.echo.status()
        return out
