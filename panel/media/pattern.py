"""The synthetic camera picture: a moving test pattern that says which frame it is and when it was taken.

The top-left corner holds three rows of 32 black/white blocks: the frame counter, the capture time
(wall clock, milliseconds, low 32 bits) and a check word. Blocks are large and flat, so they survive
a low-bitrate encode; a receiver (a test, the latency benchmark) reads them back with ``read_stamp``.
Below them the same numbers are drawn as digits for people, and a bar sweeps across the picture so
a frozen stream is obvious.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import av
import numpy as np

BITS = 32
ROWS = 3
CHECK_MAGIC = 0xA5C3_5A3C
WHITE, BLACK = 235, 16

_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", ":": "000010000010000", ".": "000000000000010",
    " ": "000000000000000", "#": "101111101111101",
}


def block_size(width: int) -> int:
    """Block edge in pixels: 8 at 320 wide, 16 at 640, 32 at 1280 (always a multiple of 8)."""
    return 8 * max(1, width // 320)


@dataclass(frozen=True)
class Stamp:
    counter: int
    wall_ms32: int

    def age_ms(self, now_wall: float | None = None) -> int:
        """Milliseconds between the capture and ``now_wall`` (wall clock, same host)."""
        now = int((time.time() if now_wall is None else now_wall) * 1000) & 0xFFFF_FFFF
        return (now - self.wall_ms32) & 0xFFFF_FFFF


class PatternPainter:
    """Paints frames of one size; the background is computed once, each frame costs a copy and a few fills."""

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"{width}x{height}: the test pattern needs an even width and height")
        if width < BITS * block_size(width) or height < 160:
            raise ValueError(f"{width}x{height} is too small for the test pattern; use at least 320x240")
        self.width, self.height = width, height
        self.block = block_size(width)
        self.scale = max(2, self.block // 3)
        y = np.linspace(40, 200, width, dtype=np.float32)[None, :].repeat(height, 0)
        self._y = y.astype(np.uint8)
        cw, ch = width // 2, height // 2
        u = np.full((ch, cw), 128, np.uint8)
        v = np.full((ch, cw), 128, np.uint8)
        # Colour bars in the lower third, so a wrong chroma layout is visible at a glance.
        bars = [(90, 240), (54, 34), (240, 110), (16, 146), (166, 16), (202, 222)]
        top = ch * 2 // 3
        for i, (bu, bv) in enumerate(bars):
            x0, x1 = i * cw // len(bars), (i + 1) * cw // len(bars)
            u[top:, x0:x1] = bu
            v[top:, x0:x1] = bv
        self._uv = np.concatenate([u.reshape(-1), v.reshape(-1)]).reshape(height // 2, width)
        self._glyphs = {ch: np.kron(np.array([int(b) for b in bits], np.uint8).reshape(5, 3),
                                    np.ones((self.scale, self.scale), np.uint8)) for ch, bits in _FONT.items()}

    def paint(self, counter: int, wall: float, overlay: np.ndarray | None = None) -> av.VideoFrame:
        """A yuv420p frame showing ``counter`` and the capture time ``wall`` (epoch seconds); ``overlay``
        (a grey picture, e.g. a QR code someone holds up to the camera) is shown in the middle."""
        h, w, b = self.height, self.width, self.block
        buf = np.empty((h * 3 // 2, w), np.uint8)
        y = buf[:h]
        np.copyto(y, self._y)
        buf[h:] = self._uv
        bar = (counter * max(2, w // 90)) % w
        y[ROWS * b + 4 * b:, bar:bar + max(4, w // 40)] = WHITE
        counter &= 0xFFFF_FFFF
        wall_ms32 = int(wall * 1000) & 0xFFFF_FFFF
        for row, value in enumerate((counter, wall_ms32, counter ^ wall_ms32 ^ CHECK_MAGIC)):
            bits = (value >> np.arange(BITS - 1, -1, -1)) & 1
            levels = np.where(bits == 1, WHITE, BLACK).astype(np.uint8)
            y[row * b:(row + 1) * b, :BITS * b] = np.repeat(levels, b)[None, :]
        clock = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"
        self._text(y, f"#{counter:07d}  {clock}", ROWS * b + b // 2)
        if overlay is not None:
            oh, ow = min(overlay.shape[0], h - (ROWS + 4) * b), min(overlay.shape[1], w)
            top, left = max((ROWS + 4) * b, (h - oh) // 2), (w - ow) // 2
            y[top:top + oh, left:left + ow] = overlay[:oh, :ow]
            for plane in (buf[h:h + h // 4], buf[h + h // 4:]):  # no colour over it: U and V, each w/2 x h/2
                plane.reshape(h // 2, w // 2)[top // 2:(top + oh) // 2, left // 2:(left + ow) // 2] = 128
        return av.VideoFrame.from_ndarray(buf, format="yuv420p")

    def _text(self, y: np.ndarray, text: str, top: int) -> None:
        s = self.scale
        x = s * 2
        box = y[top - s:top + 6 * s, :min(self.width, x + len(text) * 4 * s + s)]
        box[:] = BLACK
        for ch in text:
            g = self._glyphs.get(ch)
            if g is not None and x + 3 * s <= self.width:
                region = y[top:top + 5 * s, x:x + 3 * s]
                region[g == 1] = WHITE
            x += 4 * s


def read_stamp(luma: np.ndarray) -> Stamp | None:
    """The counter and capture time painted by ``PatternPainter``, from a frame's luma plane; ``None``
    if the picture does not carry a valid stamp (not the test pattern, or too damaged to trust)."""
    h, w = luma.shape
    b = block_size(w)
    if w < BITS * b or h < ROWS * b:
        return None
    m = b // 4
    words = []
    for row in range(ROWS):
        strip = luma[row * b + m:(row + 1) * b - m, :BITS * b].astype(np.int32)
        cells = strip.reshape(strip.shape[0], BITS, b)[:, :, m:b - m].mean(axis=(0, 2))
        bits = (cells > (WHITE + BLACK) / 2).astype(np.int64)
        words.append(int((bits << np.arange(BITS - 1, -1, -1)).sum()))
    counter, wall_ms32, check = words
    if counter ^ wall_ms32 ^ CHECK_MAGIC != check:
        return None
    return Stamp(counter, wall_ms32)


def read_frame_stamp(frame: av.VideoFrame) -> Stamp | None:
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    return read_stamp(frame.to_ndarray()[:frame.height])
