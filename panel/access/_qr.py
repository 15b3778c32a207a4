"""QR codes at the camera: a temporary code shown as a QR (on a phone, on paper) opens the door.

The scanner reads the camera's one shared capture (``DeviceCapture``: never a second open of the
device) and only while someone is at the panel: a press or a keypad touch opens a window of
``access.qr_window_s``; outside it the scanner holds no subscription and costs nothing. Each picture's
luma plane goes to zxing-cpp (QR only) in a worker thread, one picture at a time: pictures that arrive
while one is being read are dropped, never queued. A QR carries ``panel-access:<code>``; anything else
is ignored. The same code is presented once per ``REPEAT_S`` however many frames show it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._codes import QR_PREFIX

if TYPE_CHECKING:  # numpy, av and zxing-cpp come with the media and access extras: imported where used
    import numpy as np

log = logging.getLogger(__name__)

REPEAT_S = 5.0  # one QR held up for seconds is one presentation
PASSTHROUGH_QUEUE = 30  # encoded pictures queued for the decoder (2 s at 15 fps) before a resync
QUIET_ZONE = 4  # modules of white around a printed QR code, as the standard asks


def qr_picture(payload: str, scale: int = 6) -> np.ndarray:
    """A grey picture of a QR code for ``payload`` with its quiet zone (for the synthetic camera)."""
    import numpy as np
    import zxingcpp

    img = np.array(zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.QRCode).to_image(scale=scale))
    return np.pad(img, QUIET_ZONE * scale, constant_values=255)


def read_qr(luma: np.ndarray) -> list[str]:
    import zxingcpp

    qr_only = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    return [r.text for r in zxingcpp.read_barcodes(luma, formats=qr_only) if r.valid]


def luma_of(frame: Any) -> np.ndarray:
    """The luma plane of a picture: all zxing needs (a QR code is black and white)."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    return frame.to_ndarray()[:frame.height]  # type: ignore[no-any-return]


class _Decoder:
    """Decodes pass-through H.264 for the scanner, in a worker thread, one batch at a time."""

    def __init__(self) -> None:
        import av

        self.ctx = av.CodecContext.create("h264", "r")

    def read(self, items: list[Any]) -> tuple[list[str], float]:
        import av

        c0 = time.thread_time()
        last = None
        for item in items:
            try:
                for frame in self.ctx.decode(av.Packet(bytes(item.packet))):
                    last = frame
            except av.FFmpegError:
                continue  # a damaged picture: the next keyframe repairs the stream
        texts = read_qr(luma_of(last)) if last is not None else []
        return texts, time.thread_time() - c0


class QrScanner:
    """Looks for codes in the camera's pictures for ``window_s`` after each ``wake``."""

    def __init__(self, video: Callable[[], Any], window_s: float, on_code: Callable[[str], Awaitable[Any]]) -> None:
        self.video = video  # the media hub's VideoStream, or None while media is not running
        self.window_s = window_s
        self.on_code = on_code
        self._until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._recent: dict[str, float] = {}
        self.frames = 0  # pictures read (for the benchmark and the installer)
        self.cpu_s = 0.0  # thread CPU spent reading them

    @property
    def scanning(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Someone is at the panel: look for QR codes for the next ``window_s``."""
        self._until = time.monotonic() + self.window_s
        if self.scanning:
            return
        stream = self.video()
        if stream is None:
            return  # no camera (yet): nothing to scan
        # Subscribed here, at the press, so the camera starts now rather than a loop turn later.
        if getattr(stream, "passthrough", False):
            # Already-encoded H.264 (a Pi camera through rpicam-vid): every picture is decoded here, from a
            # keyframe on, so none may be dropped between; on overflow wait for the next keyframe.
            sub = stream.capture.subscribe(maxsize=PASSTHROUGH_QUEUE, overflow="resync",
                                           is_key=lambda item: bool(item.keyframe))
            stream.request_keyframe()
        else:
            sub = stream.capture.subscribe(maxsize=1, overflow="latest")
        self._task = asyncio.get_running_loop().create_task(self._run(stream, sub), name="qr-scanner")

    async def _run(self, stream: Any, sub: Any) -> None:
        from ..media.capture import SubscriptionClosed

        decoder = _Decoder() if getattr(stream, "passthrough", False) else None
        try:
            while (left := self._until - time.monotonic()) > 0:
                try:
                    item = await asyncio.wait_for(sub.get(), left)
                except TimeoutError:
                    break
                if decoder is not None:
                    # Everything queued meanwhile is decoded in one go; only the newest picture is read.
                    items = [item, *iter(sub.get_nowait, None)]
                    texts, cpu = await asyncio.to_thread(decoder.read, items)
                else:
                    texts, cpu = await asyncio.to_thread(self._read, self._luma(item))
                self.frames += 1
                self.cpu_s += cpu
                for text in texts:
                    await self._found(text)
        except SubscriptionClosed:
            pass  # the media layer is stopping
        except Exception:
            log.exception("QR scanner failed; it starts again with the next press")
        finally:
            sub.close()

    @staticmethod
    def _read(luma: np.ndarray) -> tuple[list[str], float]:
        c0 = time.thread_time()
        return read_qr(luma), time.thread_time() - c0

    @staticmethod
    def _luma(item: Any) -> np.ndarray:
        return luma_of(item.frame)

    async def _found(self, text: str) -> None:
        if not text.startswith(QR_PREFIX):
            return
        code = text[len(QR_PREFIX):]
        now = time.monotonic()
        self._recent = {c: t for c, t in self._recent.items() if now - t < REPEAT_S}
        if code in self._recent:
            return
        self._recent[code] = now
        await self.on_code(code)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
