"""The MJPEG live stream (``multipart/x-mixed-replace``) for clients that can only show a web view.

One producer runs while anybody watches: it takes the camera's pictures at ``media.mjpeg.max_fps`` at
most, has each encoded once (``JpegFrames``, shared with snapshots) and offers the same bytes to
every viewer. A viewer holds at most one picture waiting: a slow client gets the newest picture when
it is ready for one and skips the rest (counted in ``dropped``), so nothing queues up without bound.
A viewer ends when its client disconnects, its credential is revoked, its call ends, or the panel
stops; the producer stops with the last viewer.

Pass-through cameras are decoded (in the JPEG thread) only while an MJPEG viewer watches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import av
from av.video.codeccontext import VideoCodecContext
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..platform import MjpegConfig, Slot, SlotLimits, SlotRefused, Slots, SlotTier, TimerHandle
from .capture import Subscription, SubscriptionClosed
from .errors import MediaError
from .jpeg import Jpeg, JpegFrames, Picture
from .sources import EncodedFrame, RawFrame, is_key

log = logging.getLogger(__name__)

BOUNDARY = "panelframe"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
# A new viewer is shown the last picture at once if it is at most this old.
FRESH_S = 1.0


class MjpegRefused(MediaError):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def part(jpeg: bytes) -> bytes:
    """One multipart part: boundary, headers, the JPEG."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg + b"\r\n")


class MjpegViewer:
    """One HTTP client: a single slot holding the newest picture it has not taken yet."""

    def __init__(self, streamer: MjpegStreamer, token_id: str, call_guid: str | None, who: str,
                 idle_only: bool = False, slot: Slot | None = None) -> None:
        self.streamer = streamer
        self.slot = slot  # its place in the streamer's slots
        self.token_id = token_id
        self.call_guid = call_guid
        self.who = who
        self.idle_only = idle_only  # a live view that must not look into a call: it ends when one begins
        self.expiry: TimerHandle | None = None  # its credential's expiry ends it
        self.started_mono = time.monotonic()
        self._slot: Jpeg | None = None
        self._wake = asyncio.Event()
        self.sent = 0
        self.dropped = 0
        self.closed = False
        self.close_reason: str | None = None

    def offer(self, jpeg: Jpeg) -> None:
        if self.closed:
            return
        if self._slot is not None:
            self.dropped += 1  # the client has not taken the last one: it is slow, skip a picture
        self._slot = jpeg
        self._wake.set()

    async def next(self) -> Jpeg | None:
        """The next picture, or None once the viewer is closed."""
        while self._slot is None and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        if self.closed:
            return None
        jpeg, self._slot = self._slot, None
        return jpeg

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self.expiry is not None:
            self.expiry.cancel()
        self._slot = None
        self._wake.set()
        self.streamer._remove(self)

    def info(self) -> dict[str, Any]:
        return {"who": self.who, "token": self.token_id, "call": self.call_guid, "sent": self.sent,
                "dropped": self.dropped, "age_s": round(time.monotonic() - self.started_mono, 3)}


class _Decoder:
    """A persistent H.264 decoder for the pass-through camera (used in the JPEG thread only)."""

    def __init__(self, codec: str) -> None:
        self.ctx = cast(VideoCodecContext, av.CodecContext.create(codec, "r"))

    def decode(self, item: EncodedFrame) -> av.VideoFrame | None:
        last = None
        try:
            for frame in self.ctx.decode(av.Packet(bytes(item.packet))):
                last = frame
        except av.FFmpegError as e:
            log.debug("MJPEG: cannot decode picture %s: %s", item.seq, e)
        return last


VIEWER_CODES = {"full": "too_many_viewers", "credential": "too_many_viewers_for_credential",
                "address": "too_many_viewers_from_address", "reserved": "viewers_reserved"}


def _limits(cfg: MjpegConfig) -> SlotLimits:
    return SlotLimits(total=cfg.max_viewers, per_credential=cfg.max_viewers_per_credential,
                      per_address=cfg.max_viewers_per_address,
                      reserved_residents=min(cfg.viewers_reserved, cfg.max_viewers - 1))


class MjpegStreamer:
    def __init__(self, jpegs: JpegFrames, cfg: MjpegConfig) -> None:
        self.jpegs = jpegs
        self.slots = Slots(_limits(cfg), "MJPEG viewers")
        self.cfg = cfg
        self.interval = 1.0 / cfg.max_fps
        self.viewers: list[MjpegViewer] = []
        self._task: asyncio.Task[None] | None = None
        self.last: Jpeg | None = None
        self.published = 0
        self.ended: list[tuple[str, str]] = []  # (who, reason) of the last viewers, for status and tests

    # -- viewers -----------------------------------------------------------------------------------------
    @property
    def cfg(self) -> MjpegConfig:
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: MjpegConfig) -> None:  # the max_viewers* keys are live
        self._cfg = cfg
        self.slots.limits = _limits(cfg)

    def add_viewer(self, token_id: str, call_guid: str | None, who: str, *, idle_only: bool = False,
                   address: str | None = None, tier: SlotTier = "other") -> MjpegViewer:
        try:
            slot = self.slots.take(token_id, address, tier)
        except SlotRefused as e:
            hint = f" (media.mjpeg.max_viewers = {self.cfg.max_viewers})" if e.reason == "full" else ""
            raise MjpegRefused(VIEWER_CODES[e.reason], f"{e}{hint}; try again later") from None
        viewer = MjpegViewer(self, token_id, call_guid, who, idle_only, slot)
        self.viewers.append(viewer)
        if self.last is not None and time.monotonic() - self.last.mono <= FRESH_S:
            viewer.offer(self.last)
        if self._task is None or self._task.done():
            run = self._run_passthrough if self.jpegs.passthrough else self._run_raw
            self._task = asyncio.get_running_loop().create_task(run(), name="mjpeg")
        return viewer

    def _remove(self, viewer: MjpegViewer) -> None:
        if viewer.slot is not None:
            self.slots.release(viewer.slot)
            viewer.slot = None
        if viewer in self.viewers:
            self.viewers.remove(viewer)
            self.ended.append((viewer.who, viewer.close_reason or "closed"))
            del self.ended[:-50]
        if not self.viewers and self._task is not None:
            self._task.cancel()
            self._task = None

    def revoke(self, token_id: str) -> int:
        """A credential was revoked: its viewers end at once."""
        gone = [v for v in self.viewers if v.token_id == token_id]
        for v in gone:
            v.close("revoked")
        return len(gone)

    def call_started(self) -> int:
        """A call began: live views that may not show its visitor end."""
        gone = [v for v in self.viewers if v.idle_only]
        for v in gone:
            v.close("call_started")
        return len(gone)

    def call_ended(self, guid: str) -> int:
        gone = [v for v in self.viewers if v.call_guid == guid]
        for v in gone:
            v.close("call_ended")
        return len(gone)

    # -- the producer --------------------------------------------------------------------------------------
    def _due(self, mono: float, next_due: float) -> bool:
        # A quarter interval of slack: a camera's timing jitters, and 15 fps capped to 5 must give 5.
        return mono >= next_due - self.interval / 4

    def _next_due(self, mono: float, due: float) -> float:
        # On schedule: the next slot (no drift). Behind by a whole interval (start, a stalled camera):
        # start the schedule again from this picture.
        return due + self.interval if mono - due < self.interval else mono + self.interval

    async def _publish(self, picture: Picture | RawFrame) -> None:
        try:
            jpeg = await self.jpegs.encode(picture)
        except MediaError as e:
            log.warning("MJPEG picture not encoded: %s", e)
            return
        self.last = jpeg
        self.published += 1
        for viewer in list(self.viewers):
            viewer.offer(jpeg)

    async def _run_raw(self) -> None:
        sub: Subscription[RawFrame] = self.jpegs.stream.capture.subscribe(maxsize=1, overflow="latest")
        next_due = 0.0
        try:
            while True:
                raw = await sub.get()
                if not self._due(raw.mono, next_due):
                    continue
                next_due = self._next_due(raw.mono, next_due)
                await self._publish(raw)
        except SubscriptionClosed:
            return
        finally:
            sub.close()

    async def _run_passthrough(self) -> None:
        stream = self.jpegs.stream
        sub: Subscription[EncodedFrame] = stream.capture.subscribe(maxsize=60, overflow="resync", is_key=is_key)
        stream.request_keyframe()
        decoder = await self.jpegs.run(_Decoder, stream.codec)
        next_due = 0.0
        try:
            while True:
                item = await sub.get()
                frame = await self.jpegs.run(decoder.decode, item)
                if frame is None or not self._due(item.mono, next_due):
                    continue
                next_due = self._next_due(item.mono, next_due)
                await self._publish(Picture(frame, item.seq, item.mono, item.wall))
        except SubscriptionClosed:
            return
        finally:
            sub.close()

    # -- HTTP ------------------------------------------------------------------------------------------------
    def response(self, viewer: MjpegViewer) -> MjpegResponse:
        return MjpegResponse(viewer)

    def status(self) -> dict[str, Any]:
        return {"viewers": [v.info() for v in self.viewers], "published": self.published,
                "max_fps": self.cfg.max_fps, "encodes": self.jpegs.encodes}

    async def close(self) -> None:
        for v in list(self.viewers):
            v.close("shutdown")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class MjpegResponse(Response):
    """An ASGI response that streams one viewer's pictures until it ends, watching for the client
    going away even while no picture is due (a lost camera must not leave a viewer behind)."""

    media_type = CONTENT_TYPE

    def __init__(self, viewer: MjpegViewer) -> None:
        super().__init__(status_code=200, media_type=CONTENT_TYPE)
        self.viewer = viewer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        viewer = self.viewer

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    viewer.close("client_gone")
                    return

        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", CONTENT_TYPE.encode()), (b"cache-control", b"no-store, no-cache"),
                (b"pragma", b"no-cache"), (b"x-accel-buffering", b"no")]})
            while True:
                jpeg = await viewer.next()
                if jpeg is None:
                    break
                await send({"type": "http.response.body", "body": part(jpeg.data), "more_body": True})
                viewer.sent += 1
            if viewer.close_reason != "client_gone":
                await send({"type": "http.response.body", "body": f"--{BOUNDARY}--\r\n".encode(), "more_body": False})
        except OSError:  # the client went away mid-send (uvicorn raises ClientDisconnected, an OSError)
            pass
        finally:
            viewer.close(viewer.close_reason or "client_gone")
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
