"""Video sources: what produces pictures (``RawFrame``) or already-encoded H.264 (``EncodedFrame``).

Every source has ``name`` and ``async run(emit)``: it produces items until cancelled and raises
``DeviceError`` (with a message for the installer) when the device fails; ``DeviceCapture`` does the
sharing, reporting and retrying. Timestamps are on one 90 kHz clock (``pts_now``) for the life of the
process, so a restarted device does not make viewers' timestamps jump back.

Pass-through sources (``H264PipeSource``, ``H264FileSource``, ``V4l2H264Source``) never decode: each
access unit becomes one ``av.Packet`` that aiortc packetizes as is.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import fractions
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np

from ..platform import VideoConfig
from .annexb import NAL_IDR, AccessUnitSplitter
from .capture import run_in_thread
from .errors import DeviceError
from .pattern import PatternPainter

log = logging.getLogger(__name__)

CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
_EPOCH = time.monotonic()
MAX_FILE_BYTES = 256 * 1024 * 1024


def pts_now(mono: float | None = None) -> int:
    return round(((time.monotonic() if mono is None else mono) - _EPOCH) * CLOCK_RATE)


@dataclass(slots=True)
class RawFrame:
    frame: av.VideoFrame  # yuv420p
    seq: int
    mono: float  # capture time, monotonic
    wall: float  # capture time, wall clock (for the record and for glass-to-glass on one host)


@dataclass(slots=True)
class EncodedFrame:
    packet: av.Packet[Any]  # one access unit, Annex-B for H.264
    keyframe: bool
    seq: int
    mono: float
    wall: float


def is_key(item: EncodedFrame) -> bool:
    return item.keyframe


def make_packet(data: bytes, pts: int) -> av.Packet[Any]:
    packet = av.Packet(data)
    packet.pts = packet.dts = pts
    packet.time_base = TIME_BASE
    return packet


def has_idr(data: bytes) -> bool:
    """Whether an Annex-B access unit holds an IDR slice."""
    pos = data.find(b"\x00\x00\x01")
    while 0 <= pos < len(data) - 3:
        if data[pos + 3] & 0x1F == NAL_IDR:
            return True
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return False


# ---------------------------------------------------------------------------------------------------
# Raw pictures


class SyntheticVideoSource:
    """The test pattern at the configured size and rate, paced by the event loop's clock.

    ``hold_up(picture)`` shows a grey picture in the middle of every frame from then on (``None`` takes
    it away): a QR code held up to the simulated camera, for tests and the demo (panel/access)."""

    held: ClassVar[np.ndarray | None] = None

    @classmethod
    def hold_up(cls, picture: np.ndarray | None) -> None:
        cls.held = picture

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.name = f"synthetic {width}x{height}@{fps}"
        self.width, self.height, self.fps = width, height, fps

    async def run(self, emit: Callable[[RawFrame], None]) -> None:
        painter = PatternPainter(self.width, self.height)
        interval = 1.0 / self.fps
        seq = 0
        next_at = time.monotonic()
        while True:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                next_at = time.monotonic()  # fell behind (a stalled loop): skip rather than burst
            mono, wall = time.monotonic(), time.time()
            frame = painter.paint(seq, wall, SyntheticVideoSource.held)
            frame.pts = pts_now(mono)
            frame.time_base = TIME_BASE
            emit(RawFrame(frame, seq, mono, wall))
            seq += 1
            next_at += interval


class V4l2VideoSource:
    """A V4L2 webcam (MJPEG or YUYV) through PyAV, decoded in its own thread to yuv420p."""

    def __init__(self, device: str, input_format: str, width: int, height: int, fps: int) -> None:
        self.name = device
        self.device, self.input_format = device, input_format
        self.width, self.height, self.fps = width, height, fps

    def _open(self) -> av.container.InputContainer:
        if not Path(self.device).exists():
            raise DeviceError(f"{self.device} does not exist; is the camera plugged in? (ls /dev/video*)")
        try:
            return av.open(self.device, format="v4l2", options={
                "video_size": f"{self.width}x{self.height}", "framerate": str(self.fps),
                "input_format": self.input_format})
        except (av.FFmpegError, OSError) as e:
            raise DeviceError(f"cannot open {self.device} as {self.input_format} {self.width}x{self.height}@"
                              f"{self.fps}: {e}; check `v4l2-ctl -d {self.device} --list-formats-ext` and that "
                              "the service user is in the video group") from None

    async def run(self, emit: Callable[[RawFrame], None]) -> None:
        def work(stop: threading.Event, deliver: Callable[[RawFrame], None]) -> None:
            container = self._open()
            try:
                stream = container.streams.video[0]
                seq = 0
                for packet in container.demux(stream):
                    if stop.is_set():
                        return
                    for frame in packet.decode():
                        mono, wall = time.monotonic(), time.time()
                        if frame.format.name != "yuv420p" or frame.width != self.width or frame.height != self.height:
                            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
                        frame.pts = pts_now(mono)
                        frame.time_base = TIME_BASE
                        deliver(RawFrame(frame, seq, mono, wall))
                        seq += 1
                raise DeviceError(f"{self.device} stopped delivering pictures")
            except (av.FFmpegError, OSError) as e:
                raise DeviceError(f"{self.device} failed: {e}") from None
            finally:
                container.close()

        await run_in_thread(work, emit, f"v4l2:{self.device}")


# ---------------------------------------------------------------------------------------------------
# Already-encoded H.264 (pass-through)


def default_camera_command(cfg: VideoConfig) -> list[str]:
    """rpicam-vid writing H.264 Annex-B to stdout: inline SPS/PPS on every keyframe (a viewer can join
    at any keyframe), a short GOP, baseline profile (every browser decodes it), flushed per frame."""
    return ["rpicam-vid", "-t", "0", "-n", "--codec", "h264", "--inline", "--flush", "--profile", "baseline",
            "--width", str(cfg.width), "--height", str(cfg.height), "--framerate", str(cfg.fps),
            "--intra", str(max(1, round(cfg.gop_s * cfg.fps))), "-o", "-"]


class H264PipeSource:
    """A command printing H.264 Annex-B on stdout (e.g. ``rpicam-vid ... -o -``); one process per capture."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.name = " ".join(command)

    async def run(self, emit: Callable[[EncodedFrame], None]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise DeviceError(f"{self.command[0]} not found; install it (rpicam-apps) or set "
                              "media.video.command") from None
        except PermissionError:
            raise DeviceError(f"{self.command[0]} is not executable by the service user") from None
        assert proc.stdout is not None and proc.stderr is not None
        tail: collections.deque[str] = collections.deque(maxlen=8)
        stderr_task = asyncio.ensure_future(_collect_lines(proc.stderr, tail))
        splitter = AccessUnitSplitter()
        seq = 0
        try:
            while True:
                chunk = await proc.stdout.read(65536)
                if not chunk:
                    break
                for au in splitter.feed(chunk):
                    mono, wall = time.monotonic(), time.time()
                    emit(EncodedFrame(make_packet(au.data, pts_now(mono)), au.keyframe, seq, mono, wall))
                    seq += 1
            code = await proc.wait()
            await asyncio.wait_for(stderr_task, 1.0)
            raise DeviceError(f"{self.command[0]} exited with status {code}"
                              + (f": {' | '.join(tail)}" if tail else ""))
        finally:
            await _end_process(proc)
            stderr_task.cancel()
            with contextlib.suppress(BaseException):
                await stderr_task


async def _collect_lines(stream: asyncio.StreamReader, tail: collections.deque[str]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").strip()
        if text:
            tail.append(text[:200])


async def _end_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    # The pipes' transports close once the process is reaped and they hit EOF; make sure of it.
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


class H264FileSource:
    """Loops a recorded H.264 stream in real time: Annex-B ``.h264``, or MPEG-TS (demuxed, not decoded).
    MP4 holds length-prefixed NAL units, not Annex-B: convert it with
    ``ffmpeg -i in.mp4 -c copy -bsf:v h264_mp4toannexb out.h264``."""

    def __init__(self, path: Path, fps: int) -> None:
        self.path = path
        self.name = str(path)
        self.fps = fps

    def _load(self) -> tuple[list[tuple[bytes, bool]], float]:
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise DeviceError(f"cannot read {self.path}: {e.strerror}; check media.video.file") from None
        if size > MAX_FILE_BYTES:
            raise DeviceError(f"{self.path} is {size // 2**20} MiB; keep a looped test file under "
                              f"{MAX_FILE_BYTES // 2**20} MiB")
        head = self.path.read_bytes()[:188 * 3]
        is_ts = len(head) >= 377 and head[0] == 0x47 and head[188] == 0x47
        interval = 1.0 / self.fps
        units: list[tuple[bytes, bool]] = []
        if is_ts:
            try:
                with av.open(str(self.path)) as container:
                    stream = container.streams.video[0]
                    if stream.codec_context.name != "h264":
                        raise DeviceError(f"{self.path} holds {stream.codec_context.name}, not H.264")
                    if stream.average_rate:
                        interval = 1.0 / float(stream.average_rate)
                    for packet in container.demux(stream):
                        if packet.size:
                            data = bytes(packet)
                            units.append((data, bool(packet.is_keyframe) or has_idr(data)))
            except av.FFmpegError as e:
                raise DeviceError(f"cannot demux {self.path}: {e}") from None
        else:
            splitter = AccessUnitSplitter()
            try:
                aus = splitter.feed(self.path.read_bytes()) + splitter.flush()
            except ValueError as e:
                raise DeviceError(f"{self.path}: {e}") from None
            units = [(au.data, au.keyframe) for au in aus]
        first_key = next((i for i, (_, key) in enumerate(units) if key), None)
        if first_key is None:
            raise DeviceError(f"{self.path} holds no H.264 keyframe; is it an H.264 Annex-B or MPEG-TS file?")
        return units[first_key:], interval

    async def run(self, emit: Callable[[EncodedFrame], None]) -> None:
        units, interval = await asyncio.to_thread(self._load)
        seq = 0
        next_at = time.monotonic()
        while True:
            for data, key in units:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -interval:
                    next_at = time.monotonic()
                mono, wall = time.monotonic(), time.time()
                emit(EncodedFrame(make_packet(data, pts_now(mono)), key, seq, mono, wall))
                seq += 1
                next_at += interval


# VIDIOC_S_CTRL with V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME (linux/videodev2.h, linux/v4l2-controls.h).
VIDIOC_S_CTRL = 0xC008561C
V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME = 0x009909E5


class V4l2H264Source:
    """A V4L2 node that delivers H.264 (UVC H.264 cameras, a Pi's encoder), passed through.
    A new viewer asks the device for a keyframe (V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME), where supported."""

    def __init__(self, device: str, width: int, height: int, fps: int) -> None:
        self.name = device
        self.device, self.width, self.height, self.fps = device, width, height, fps

    def request_keyframe(self) -> bool:
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            fcntl.ioctl(fd, VIDIOC_S_CTRL, struct.pack("Ii", V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    async def run(self, emit: Callable[[EncodedFrame], None]) -> None:
        def work(stop: threading.Event, deliver: Callable[[EncodedFrame], None]) -> None:
            if not Path(self.device).exists():
                raise DeviceError(f"{self.device} does not exist; is the camera plugged in? (ls /dev/video*)")
            try:
                container = av.open(self.device, format="v4l2", options={
                    "video_size": f"{self.width}x{self.height}", "framerate": str(self.fps), "input_format": "h264"})
            except (av.FFmpegError, OSError) as e:
                raise DeviceError(f"cannot open {self.device} for H.264 {self.width}x{self.height}@{self.fps}: {e}; "
                                  f"check `v4l2-ctl -d {self.device} --list-formats-ext`") from None
            try:
                seq = 0
                for packet in container.demux(container.streams.video[0]):
                    if stop.is_set():
                        return
                    if not packet.size:
                        continue
                    mono, wall = time.monotonic(), time.time()
                    data = bytes(packet)
                    deliver(EncodedFrame(make_packet(data, pts_now(mono)), bool(packet.is_keyframe) or has_idr(data),
                                         seq, mono, wall))
                    seq += 1
                raise DeviceError(f"{self.device} stopped delivering pictures")
            except (av.FFmpegError, OSError) as e:
                raise DeviceError(f"{self.device} failed: {e}") from None
            finally:
                container.close()

        await run_in_thread(work, emit, f"v4l2-h264:{self.device}")


VideoSource = SyntheticVideoSource | V4l2VideoSource | H264PipeSource | H264FileSource | V4l2H264Source


def passes_through(cfg: VideoConfig) -> bool:
    """Whether this source delivers H.264 that is sent without decoding."""
    return cfg.source in ("h264_pipe", "h264_file") or (cfg.source == "v4l2" and cfg.input_format == "h264")


def make_video_source(cfg: VideoConfig) -> Callable[[], VideoSource]:
    """A factory for the configured source (the capture calls it again on every retry)."""
    if cfg.source == "synthetic":
        return lambda: SyntheticVideoSource(cfg.width, cfg.height, cfg.fps)
    if cfg.source == "v4l2":
        if cfg.input_format == "h264":
            return lambda: V4l2H264Source(cfg.device, cfg.width, cfg.height, cfg.fps)
        return lambda: V4l2VideoSource(cfg.device, cfg.input_format, cfg.width, cfg.height, cfg.fps)
    if cfg.source == "h264_pipe":
        command = cfg.command or default_camera_command(cfg)
        return lambda: H264PipeSource(command)
    if cfg.source == "h264_file":
        if cfg.file is None:
            raise DeviceError("media.video.source is h264_file but media.video.file is not set")
        path = cfg.file
        return lambda: H264FileSource(path, cfg.fps)
    raise DeviceError(f"media.video.source {cfg.source!r} has no picture")


def source_name(cfg: VideoConfig) -> str:
    if cfg.source == "synthetic":
        return f"synthetic {cfg.width}x{cfg.height}@{cfg.fps}"
    if cfg.source == "v4l2":
        return cfg.device
    if cfg.source == "h264_pipe":
        return " ".join(cfg.command or default_camera_command(cfg))
    return str(cfg.file)
