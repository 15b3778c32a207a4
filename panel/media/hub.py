"""The media hub: each device captured once, video encoded once, everything fanned out.

``VideoStream`` turns the camera capture into one stream of encoded pictures that every viewer
shares: pass-through sources forward the camera's own H.264 packets; raw sources are encoded once by
``VideoEncoder`` in one thread. A new viewer starts at a keyframe without waiting for the next one:
the encoder makes one at once; a pass-through camera that cannot (a pipe) gets the current GOP
replayed to that viewer only, with timestamps squeezed to just before "now" so its decoder catches
up in one go and shows the live picture.

For snapshots and MJPEG (built on top of this hub): ``latest_frame()`` is the newest raw picture
(raw sources), ``last_gop()`` the packets since the last keyframe (pass-through), and
``decode_latest()`` a decoded picture from either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any, cast

import av
from av.video.codeccontext import VideoCodecContext

from ..events import EventData
from ..platform import MediaConfig
from .audio import (
    AudioChunk,
    NullSink,
    OutputMixer,
    RecordingSink,
    Sink,
    SoundDeviceInput,
    SpeakerSink,
    ToneSource,
)
from .capture import DeviceCapture, Fanout, HealthReport, Subscription, SubscriptionClosed
from .echo import EchoCanceller
from .encoder import Codec, EncoderSettings, VideoEncoder
from .sources import (
    EncodedFrame,
    RawFrame,
    is_key,
    make_packet,
    make_video_source,
    passes_through,
    source_name,
)
from .voice import VoiceStream

log = logging.getLogger(__name__)

# A viewer further behind than this many pictures is cut back to the next keyframe.
FEED_DEPTH = 30
# Keyframe requests closer together than this are merged (several viewers joining, a burst of PLIs).
KEYFRAME_MIN_INTERVAL_S = 0.25
GOP_CACHE_MAX = 300


class VideoStream:
    """The camera as one encoded stream, shared by every viewer."""

    def __init__(self, capture: DeviceCapture[Any], *, passthrough: bool, settings: EncoderSettings | None) -> None:
        self.capture = capture
        self.passthrough = passthrough
        self.settings = settings
        self.codec: Codec = "h264" if passthrough or settings is None else settings.codec
        self._fanout: Fanout[EncodedFrame] = Fanout(self._run, "video-stream")
        self._gop: list[EncodedFrame] = []
        self._keyframe_wanted = False
        self._last_keyframe_request = 0.0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.encoder: VideoEncoder | None = None
        self.encode_cpu_s = 0.0
        self.encoded = 0
        self.published = 0

    # -- viewers --------------------------------------------------------------------------------------
    def subscribe(self) -> Subscription[EncodedFrame]:
        """A feed of encoded pictures that starts at a keyframe."""
        feed: Subscription[EncodedFrame] = Subscription(FEED_DEPTH, "resync", self._fanout.remove, is_key)
        feed.on_resync = self.request_keyframe
        self._fanout.add(feed)
        if self.passthrough:
            if not self._ask_camera_for_keyframe():
                feed.put_front(self._catch_up())
        else:
            self.request_keyframe()
        return feed

    @property
    def viewers(self) -> int:
        return len(self._fanout.feeds)

    def request_keyframe(self) -> None:
        """Make the next picture a keyframe (for every viewer), as soon as the encoder or camera can."""
        if self.passthrough:
            self._ask_camera_for_keyframe()
        else:
            self._keyframe_wanted = True

    def _ask_camera_for_keyframe(self) -> bool:
        now = time.monotonic()
        if now - self._last_keyframe_request < KEYFRAME_MIN_INTERVAL_S:
            return False
        source = self.capture.source
        request = getattr(source, "request_keyframe", None)
        if request is None:
            return False
        self._last_keyframe_request = now
        return bool(request())

    def _catch_up(self) -> list[EncodedFrame]:
        """The current GOP for one new viewer, squeezed to end just before the newest picture's time."""
        gop = list(self._gop)
        if not gop:
            return []
        last = gop[-1].packet.pts or 0
        out = []
        for i, item in enumerate(gop):
            pts = last - (len(gop) - 1 - i)
            out.append(EncodedFrame(make_packet(bytes(item.packet), pts), item.keyframe and i == 0, item.seq,
                                    item.mono, item.wall))
        return out

    # -- for snapshots and MJPEG (consumers other than WebRTC) -----------------------------------------
    def latest_frame(self) -> RawFrame | None:
        """The newest raw picture (raw sources only; pass-through has none without decoding)."""
        item = self.capture.latest
        return item if isinstance(item, RawFrame) else None

    def last_gop(self) -> list[EncodedFrame]:
        """Encoded pictures from the last keyframe to the newest (empty until a viewer started the stream)."""
        return list(self._gop)

    async def decode_latest(self) -> av.VideoFrame | None:
        """The newest picture, decoding the last GOP in a thread when the source is pass-through."""
        raw = self.latest_frame()
        if raw is not None:
            return raw.frame
        gop = self.last_gop()
        if not gop:
            return None
        codec = "h264" if self.codec == "h264" else "vp8"

        def decode() -> av.VideoFrame | None:
            ctx = cast(VideoCodecContext, av.CodecContext.create(codec, "r"))
            last = None
            for item in gop:
                for frame in ctx.decode(av.Packet(bytes(item.packet))):
                    last = frame
            for frame in ctx.decode(None):
                last = frame
            return last

        return await asyncio.to_thread(decode)

    # -- the pump ---------------------------------------------------------------------------------------
    def _publish(self, item: EncodedFrame) -> None:
        if item.keyframe:
            self._gop = [item]
        elif self._gop and len(self._gop) < GOP_CACHE_MAX:
            self._gop.append(item)
        self.published += 1
        self._fanout.put(item)

    async def _run(self) -> None:
        if self.passthrough:
            sub = self.capture.subscribe(maxsize=FEED_DEPTH, overflow="resync", is_key=is_key)
            try:
                while True:
                    self._publish(await sub.get())
            except SubscriptionClosed:
                return
            finally:
                sub.close()
        assert self.settings is not None
        loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="video-encoder")
        self.encoder = encoder = await loop.run_in_executor(self._executor, VideoEncoder, self.settings)
        raw_sub: Subscription[RawFrame] = self.capture.subscribe(maxsize=1, overflow="latest")
        try:
            while True:
                raw = await raw_sub.get()
                keyframe = False
                if self._keyframe_wanted and time.monotonic() - self._last_keyframe_request >= KEYFRAME_MIN_INTERVAL_S:
                    keyframe, self._keyframe_wanted = True, False
                    self._last_keyframe_request = time.monotonic()
                packets, cpu = await loop.run_in_executor(self._executor, _timed_encode, encoder, raw.frame, keyframe)
                self.encode_cpu_s += cpu
                self.encoded += 1
                for packet in packets:
                    self._publish(EncodedFrame(packet, bool(packet.is_keyframe), raw.seq, raw.mono, raw.wall))
        except SubscriptionClosed:
            return
        finally:
            raw_sub.close()
            self.encoder = None
            executor, self._executor = self._executor, None
            executor.submit(encoder.close)
            executor.shutdown(wait=False)

    async def close(self) -> None:
        await self._fanout.close()

    def status(self) -> dict[str, Any]:
        return {"codec": self.codec, "passthrough": self.passthrough, "viewers": self.viewers,
                "encoded": self.encoded, "published": self.published, "gop": len(self._gop)}


def _timed_encode(encoder: VideoEncoder, frame: av.VideoFrame, keyframe: bool) -> tuple[list[av.Packet[Any]], float]:
    t0 = time.thread_time()
    packets = encoder.encode(frame, keyframe)
    return packets, time.thread_time() - t0


class MediaHub:
    """Every media device of the panel, built from ``media`` config; nothing runs until someone subscribes."""

    def __init__(self, cfg: MediaConfig, report: HealthReport) -> None:
        self.cfg = cfg
        self.report = report
        v = cfg.video
        self.video: VideoStream | None = None
        if v.source != "none":
            make = make_video_source(v)
            capture: DeviceCapture[Any] = DeviceCapture("camera", source_name(v), make, report, linger_s=cfg.linger_s)
            passthrough = passes_through(v)
            settings = None if passthrough else EncoderSettings(
                v.codec, v.width, v.height, v.fps, v.bitrate_kbps, max(1, round(v.gop_s * v.fps)))
            self.video = VideoStream(capture, passthrough=passthrough, settings=settings)
        a = cfg.audio
        self.microphone: DeviceCapture[AudioChunk] | None = None
        if a.input == "synthetic":
            self.microphone = DeviceCapture("microphone", f"synthetic {a.tone_hz:g} Hz",
                                            lambda: ToneSource(a.tone_hz, a.tone_level), report, linger_s=cfg.linger_s)
        elif a.input != "none":
            self.microphone = DeviceCapture("microphone", a.input, lambda: SoundDeviceInput(a.input), report,
                                            linger_s=cfg.linger_s)
        self.speaker: Sink
        if a.output == "record":
            self.speaker = RecordingSink()
        elif a.output == "none":
            self.speaker = NullSink()
        else:
            self.speaker = SpeakerSink(a.output, report)
        self.mixer = OutputMixer(self.speaker)
        # The microphone, echo-cancelled against what the speaker plays and encoded once for every listener.
        self.echo: EchoCanceller | None = None
        self.voice: VoiceStream | None = None
        if self.microphone is not None:
            e = a.echo
            if e.enabled or e.noise_suppression != "off" or e.auto_gain:
                try:
                    self.echo = EchoCanceller(e)
                except ImportError as err:
                    log.error("echo cancellation is configured but unavailable (%s): install pywebrtc-audio; "
                              "the microphone goes out unprocessed", err)
                else:
                    self.speaker.on_played = self.echo.reference.played
            self.voice = VoiceStream(self.microphone, self.echo, a.opus_kbps)

    def start(self) -> None:
        """Open what must stay open: the speaker (so a missing one is reported at boot, not mid-call)."""
        if isinstance(self.speaker, SpeakerSink):
            self.speaker.capture.acquire()

    async def close(self) -> None:
        if self.video is not None:
            await self.video.close()
            await self.video.capture.close()
        if self.voice is not None:
            await self.voice.close()
        if self.microphone is not None:
            await self.microphone.close()
        await self.mixer.close()
        if isinstance(self.speaker, SpeakerSink):
            await self.speaker.capture.close()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.video is not None:
            out["camera"] = {**self.video.capture.status(), "stream": self.video.status()}
        if self.microphone is not None:
            out["microphone"] = self.microphone.status()
        if self.voice is not None:
            out["voice"] = self.voice.status()
        out["speaker"] = (self.speaker.capture.status() if isinstance(self.speaker, SpeakerSink)
                          else {"device": "speaker", "name": self.speaker.name, "state": "running"})
        out["mixer_inputs"] = sorted(self.mixer.inputs)
        return out


def ignore_report(event: EventData) -> None:
    log.info("media health: %s", event)

