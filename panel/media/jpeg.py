"""The camera's pictures as JPEG, encoded at most once per picture whoever asks.

Snapshots (at the press, on demand, the pre-press buffer) and every MJPEG viewer share one
``JpegFrames``: a picture is encoded once, in one worker thread, and the bytes are handed to all
of them. Encoding is PyAV's ``mjpeg`` codec on a ``yuvj420p`` copy of the picture (swscale turns the
camera's limited-range YUV into JPEG's full range; about 0.4 ms at 640x480, the encode about 1 ms,
see ``bench/jpeg_encode.py``), so nothing but PyAV is needed.

Pass-through cameras deliver H.264, not pictures: a picture is decoded only when a JPEG is wanted
(the newest GOP, once), never continuously, except while an MJPEG viewer watches (``PictureFeed``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import fractions
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import av
from av.video.codeccontext import VideoCodecContext

from .capture import Subscription, SubscriptionClosed
from .errors import MediaError
from .hub import VideoStream
from .sources import EncodedFrame, RawFrame, is_key

log = logging.getLogger(__name__)

T = TypeVar("T")
# JPEGs of recent pictures kept for consumers that ask for the same picture a little later.
CACHE_PICTURES = 8
MJPEG_TIME_BASE = fractions.Fraction(1, 90_000)


class NoPicture(MediaError):
    """The camera gave no picture in time (unplugged, starting, or there is no camera)."""

    code = "no_picture"


@dataclass(frozen=True, slots=True)
class Jpeg:
    data: bytes
    seq: int  # the camera's picture counter
    mono: float  # capture time (monotonic)
    wall: float  # capture time (wall clock, for the record)
    width: int
    height: int


@dataclass(slots=True)
class Picture:
    """A decoded picture with its capture stamps."""

    frame: av.VideoFrame
    seq: int
    mono: float
    wall: float


def quality_to_qscale(quality: int) -> int:
    """JPEG quality 1-100 (what installers know) to the mjpeg encoder's qscale 31-2 (lower is better)."""
    return max(2, min(31, round(2 + (100 - quality) * 29 / 99)))


class JpegEncoder:
    """Blocking; one thread at a time. Keeps one codec context per picture size."""

    def __init__(self, quality: int) -> None:
        self.qscale = quality_to_qscale(quality)
        self._ctx: Any = None
        self._size: tuple[int, int] | None = None
        self.encoded = 0
        self.cpu_s = 0.0

    def _context(self, width: int, height: int) -> Any:
        if self._ctx is None or self._size != (width, height):
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuvj420p"
            ctx.time_base = MJPEG_TIME_BASE
            # A fixed quantiser: JPEG has no rate control worth having, and every picture looks alike.
            ctx.options = {"qmin": str(self.qscale), "qmax": str(self.qscale)}
            # One thread: slice threads cost more than they save at these sizes, and the encoder must
            # not compete with the video encoder for the Pi's cores (also keeps ``cpu_s`` exact).
            ctx.thread_count = 1
            self._ctx, self._size = ctx, (width, height)
        return self._ctx

    def encode(self, frame: av.VideoFrame) -> bytes:
        t0 = time.thread_time()
        # A new frame (never touch the shared one: the video encoder reads it in its own thread).
        full = frame.reformat(format="yuvj420p")
        full.pts = None
        packets = self._context(full.width, full.height).encode(full)
        data = b"".join(bytes(p) for p in packets)
        if not data:
            raise MediaError("the JPEG encoder returned nothing")
        self.encoded += 1
        self.cpu_s += time.thread_time() - t0
        return data


def decode_gop(items: list[EncodedFrame], codec: str = "h264") -> list[tuple[EncodedFrame, av.VideoFrame]]:
    """Decode encoded pictures from a keyframe on (blocking); each decoded picture with its stamps."""
    ctx = cast(VideoCodecContext, av.CodecContext.create(codec, "r"))
    out: list[tuple[EncodedFrame, av.VideoFrame]] = []
    pending: collections.deque[EncodedFrame] = collections.deque()
    for item in items:
        pending.append(item)
        try:
            frames = ctx.decode(av.Packet(bytes(item.packet)))
        except av.FFmpegError as e:
            log.debug("cannot decode picture %s: %s", item.seq, e)
            continue
        for frame in frames:
            out.append((pending.popleft() if pending else item, frame))
    try:
        for frame in ctx.decode(None):
            out.append((pending.popleft() if pending else items[-1], frame))
    except av.FFmpegError:
        pass
    return out


class JpegFrames:
    """One JPEG per picture for every consumer; the encoding runs in one worker thread."""

    def __init__(self, stream: VideoStream, quality: int, *, wait_s: float = 3.0) -> None:
        self.stream = stream
        self.wait_s = wait_s
        self.encoder = JpegEncoder(quality)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jpeg")
        # Keyed by (counter, capture time): a restarted camera counts from 0 again.
        self._cache: collections.OrderedDict[tuple[int, float], asyncio.Future[Jpeg]] = collections.OrderedDict()
        self.requests = 0
        self._closed = False

    @property
    def encodes(self) -> int:
        return self.encoder.encoded

    @property
    def passthrough(self) -> bool:
        return self.stream.passthrough

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking media work (encode, decode) in the JPEG thread, off the event loop."""
        if self._closed:
            raise MediaError("the JPEG encoder is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def encode(self, picture: Picture | RawFrame) -> Jpeg:
        """The JPEG of ``picture``: encoded once per picture (by its counter), however many ask."""
        self.requests += 1
        key = (picture.seq, picture.mono)
        fut = self._cache.get(key)
        if fut is not None and not (fut.done() and fut.exception() is not None):
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._cache[key] = fut
        while len(self._cache) > CACHE_PICTURES:
            self._cache.popitem(last=False)
        frame = picture.frame
        try:
            data = await self.run(self.encoder.encode, frame)
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e if isinstance(e, Exception) else MediaError("canceled"))
                fut.exception()  # retrieved: nobody else may be waiting
            raise
        jpeg = Jpeg(data, picture.seq, picture.mono, picture.wall, frame.width, frame.height)
        fut.set_result(jpeg)
        return jpeg

    # -- the newest picture ----------------------------------------------------------------------
    async def latest(self, max_age_s: float = 1.0) -> Jpeg:
        """The newest picture as JPEG, waiting up to ``wait_s`` for the camera if it is not running."""
        return await self.encode(await self.latest_picture(max_age_s))

    async def latest_picture(self, max_age_s: float = 1.0) -> Picture:
        if self.passthrough:
            return await self._latest_decoded(max_age_s)
        capture = self.stream.capture
        raw = capture.latest
        if isinstance(raw, RawFrame) and time.monotonic() - raw.mono <= max_age_s:
            return Picture(raw.frame, raw.seq, raw.mono, raw.wall)
        sub: Subscription[RawFrame] = capture.subscribe(maxsize=1, overflow="latest")
        try:
            first = await self._first(sub)
        finally:
            sub.close()
        return Picture(first.frame, first.seq, first.mono, first.wall)

    async def _latest_decoded(self, max_age_s: float) -> Picture:
        gop = self.stream.last_gop()
        if not gop or time.monotonic() - gop[-1].mono > max_age_s:
            gop = await self._fresh_gop()
        decoded = await self.run(decode_gop, gop, self.stream.codec)
        if not decoded:
            raise NoPicture("the camera's H.264 could not be decoded; check the camera's stream")
        item, frame = decoded[-1]
        return Picture(frame, item.seq, item.mono, item.wall)

    async def _fresh_gop(self) -> list[EncodedFrame]:
        """Watch the pass-through camera until a keyframe arrives, and return it (one picture is enough)."""
        capture = self.stream.capture
        sub: Subscription[EncodedFrame] = capture.subscribe(maxsize=120, overflow="resync", is_key=is_key)
        self.stream.request_keyframe()
        try:
            return [await self._first(sub)]
        finally:
            sub.close()

    async def _first(self, sub: Subscription[T]) -> T:
        try:
            return await asyncio.wait_for(sub.get(), self.wait_s)
        except (TimeoutError, SubscriptionClosed):
            capture = self.stream.capture
            why = f": {capture.last_error}" if capture.last_error else ""
            raise NoPicture(f"the camera ({capture.name}) gave no picture within {self.wait_s:g} s{why}") from None

    def status(self) -> dict[str, Any]:
        return {"encodes": self.encodes, "requests": self.requests,
                "encode_ms": round(self.encoder.cpu_s / self.encodes * 1000, 3) if self.encodes else None}

    async def close(self) -> None:
        self._closed = True
        for fut in self._cache.values():
            if not fut.done():
                fut.cancel()
        self._cache.clear()
        self._executor.shutdown(wait=False)
