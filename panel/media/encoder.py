"""The software video encoder: one per stream, never one per viewer.

libx264 runs with ``ultrafast``/``zerolatency`` (aiortc's own H.264 encoder leaves x264 on "medium",
about 4x the CPU) and a baseline profile every browser decodes; libvpx (VP8) runs in realtime mode.
Keyframes come every ``gop_s`` and at once on request (a new viewer, a viewer's PLI/FIR): the other
viewers see one extra keyframe, nothing else. VP8 frames have their picture type cleared unless a
keyframe is wanted, or libvpx would make every frame a keyframe (PyAV marks raw frames ``I``).
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass
from typing import Any, Literal

import av
from av.video.frame import PictureType

from .sources import TIME_BASE

log = logging.getLogger(__name__)

Codec = Literal["h264", "vp8"]


@dataclass(frozen=True)
class EncoderSettings:
    codec: Codec
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    gop_frames: int

    @property
    def vbv(self) -> str:
        # A one-second rate buffer: a keyframe may be large, but the stream never queues seconds of video.
        return f"vbv-maxrate={self.bitrate_kbps}:vbv-bufsize={self.bitrate_kbps}"

    def ffmpeg_args(self) -> list[str]:
        """The same encoder settings as ffmpeg arguments (the benchmark's baseline)."""
        if self.codec == "h264":
            return ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
                    "-b:v", f"{self.bitrate_kbps}k", "-x264-params", self.vbv, "-g", str(self.gop_frames)]
        return ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-lag-in-frames", "0",
                "-b:v", f"{self.bitrate_kbps}k", "-g", str(self.gop_frames)]


class VideoEncoder:
    """Blocking; call ``encode`` from one thread at a time (the stream's encoder thread)."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.frames = 0
        self.keyframes = 0
        self._ctx = self._open()

    def _open(self) -> av.video.codeccontext.VideoCodecContext:
        s = self.settings
        ctx = av.CodecContext.create("libx264" if s.codec == "h264" else "libvpx", "w")
        ctx.width, ctx.height, ctx.pix_fmt = s.width, s.height, "yuv420p"
        ctx.time_base = TIME_BASE
        # Rate control needs the real frame rate; with only a 90 kHz time base x264 assumes 90000 fps
        # and spends almost nothing per frame (a grey picture).
        ctx.framerate = fractions.Fraction(s.fps)
        ctx.bit_rate = s.bitrate_kbps * 1000
        ctx.gop_size = s.gop_frames
        if s.codec == "h264":
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "forced-idr": "1",
                           "x264-params": s.vbv}
        else:
            ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1"}
        return ctx

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[av.Packet[Any]]:
        s = self.settings
        if frame.width != s.width or frame.height != s.height or frame.format.name != "yuv420p":
            pts, tb = frame.pts, frame.time_base
            frame = frame.reformat(width=s.width, height=s.height, format="yuv420p")
            frame.pts, frame.time_base = pts, tb
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        packets = self._ctx.encode(frame)
        self.frames += 1
        for p in packets:
            if p.time_base is None:
                p.time_base = TIME_BASE
            if p.is_keyframe:
                self.keyframes += 1
        return packets

    def close(self) -> None:
        try:
            self._ctx.close()  # type: ignore[attr-defined]
        except (AttributeError, av.FFmpegError):
            pass
