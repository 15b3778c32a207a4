"""aiortc tracks that hand out what the hub shares, and consumers for what peers send.

``PacketVideoTrack.recv`` returns ``av.Packet``s: aiortc's sender then only packetizes them
(``Encoder.pack``), so N viewers cost one encode. ``MicrophoneTrack`` does the same with the voice
stream's Opus packets (echo-cancelled and encoded once, panel/media/voice.py). Muting keeps the RTP
clock running: a muted microphone sends Opus silence, a muted camera sends nothing and restarts at a
keyframe.

Every received track must be read until it ends, or aiortc buffers it without bound:
``consume_audio`` feeds the speaker mixer, ``consume_video`` discards (the panel has no screen).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .audio import TIME_BASE, MixerInput, ToMono
from .capture import Subscription, SubscriptionClosed
from .hub import VideoStream
from .sources import EncodedFrame
from .voice import OPUS_SILENCE, VoicePacket, VoiceStream

log = logging.getLogger(__name__)


class PacketVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, stream: VideoStream) -> None:
        super().__init__()
        self.stream = stream
        self._feed: Subscription[EncodedFrame] | None = None
        self._unmuted = asyncio.Event()
        self._unmuted.set()
        self.sent = 0
        self.first_sent_mono: float | None = None
        self.last_item: EncodedFrame | None = None

    @property
    def muted(self) -> bool:
        return not self._unmuted.is_set()

    def set_muted(self, muted: bool) -> None:
        if muted:
            self._unmuted.clear()
            # Stop taking pictures at once; if nobody else watches, the stream stops encoding.
            self._close_feed()
        else:
            self._unmuted.set()

    def request_keyframe(self) -> None:
        """The peer lost a picture (PLI/FIR)."""
        self.stream.request_keyframe()

    async def recv(self) -> av.Packet[Any]:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self.muted:
                await self._unmuted.wait()
                continue
            if self._feed is None:
                self._feed = self.stream.subscribe()
            try:
                item = await self._feed.get()
            except SubscriptionClosed:
                self._feed = None
                continue
            if self.muted:
                continue
            self.sent += 1
            if self.first_sent_mono is None:
                self.first_sent_mono = time.monotonic()
            self.last_item = item
            return item.packet

    def _close_feed(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close()

    def stop(self) -> None:
        super().stop()
        self._close_feed()
        self._unmuted.set()  # wake a waiting recv so it sees the track ended


class MicrophoneTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, voice: VoiceStream) -> None:
        super().__init__()
        self.voice = voice
        self._sub: Subscription[VoicePacket] | None = None
        self.muted = False
        self._pts = 0
        self.sent = 0

    def set_muted(self, muted: bool) -> None:
        self.muted = muted

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._sub is None:
            self._sub = self.voice.subscribe()
        try:
            item = await self._sub.get()
        except SubscriptionClosed:
            self.stop()
            raise MediaStreamError from None
        # Each peer's RTP clock counts from its own start; the shared packet carries no timestamp of its own.
        packet = av.Packet(OPUS_SILENCE if self.muted else item.data)
        packet.pts = self._pts
        packet.time_base = TIME_BASE
        self._pts += item.samples
        self.sent += 1
        return packet

    def stop(self) -> None:
        super().stop()
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()


async def consume_audio(track: MediaStreamTrack, into: MixerInput | None,
                        on_first: Callable[[], Any] | None = None) -> int:
    """Read a peer's audio until it ends, into a mixer input (or nowhere). Returns the frames read."""
    to_mono = ToMono()
    frames = 0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return frames
        frames += 1
        if frames == 1 and on_first is not None:
            on_first()
        if into is not None:
            into.write(to_mono(cast(av.AudioFrame, frame)))  # an audio track yields audio frames


async def consume_video(track: MediaStreamTrack, on_frame: Callable[[av.VideoFrame], Any] | None = None) -> int:
    """Read a peer's video until it ends; the panel has no screen, so the pictures are dropped."""
    frames = 0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return frames
        frames += 1
        if on_frame is not None:
            on_frame(cast(av.VideoFrame, frame))  # a video track from a peer yields decoded pictures


def watch(task: asyncio.Task[Any], what: str) -> None:
    """Log a consumer task that died of something unexpected (it would otherwise vanish silently)."""
    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("%s failed: %r", what, t.exception())
    task.add_done_callback(done)
