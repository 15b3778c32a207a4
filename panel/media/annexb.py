"""Split an H.264 Annex-B byte stream into access units (one picture each) without decoding it.

Cameras with a hardware encoder (``rpicam-vid --inline -o -``, a V4L2 H.264 node) write a raw byte
stream; WebRTC needs it cut per picture. The cut is made at the start of the next picture (an access
unit delimiter, SPS, PPS or SEI after a slice, or a slice whose ``first_mb_in_slice`` is 0), so an
access unit is complete only once the next one begins: the cost is one frame interval of latency.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x00\x00\x01"
NAL_SLICE, NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD = 1, 5, 6, 7, 8, 9
_VCL = (NAL_SLICE, NAL_IDR)
_STARTS_AU = (NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD)
MAX_AU_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AccessUnit:
    data: bytes  # Annex-B, every NAL unit with a 4-byte start code
    keyframe: bool  # holds an IDR slice (and, with --inline, its SPS/PPS)
    has_sps: bool


class AnnexBError(ValueError):
    pass


class AccessUnitSplitter:
    """Feed bytes in any chunking; get whole access units out, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._nals: list[bytes] = []  # NAL units (no start code) of the access unit being built
        self._has_vcl = False
        self._junk = 0

    def feed(self, data: bytes) -> list[AccessUnit]:
        self._buf += data
        out: list[AccessUnit] = []
        buf = self._buf
        first = buf.find(START)
        if first < 0:
            # Keep a possible partial start code; anything before the first start code is junk.
            self._junk += max(0, len(buf) - 3)
            del buf[:max(0, len(buf) - 3)]
            if self._junk > MAX_AU_BYTES:
                raise AnnexBError(f"no H.264 start code in the first {self._junk} bytes; is the input H.264 Annex-B "
                                  "(raw .h264, MPEG-TS) rather than MP4 or MJPEG?")
            return out
        self._junk = 0
        pos = first + 3
        while True:
            nxt = buf.find(START, pos)
            if nxt < 0:
                break
            end = nxt
            # A 4-byte start code's leading zero belongs to the start code, not to the NAL.
            while end > pos and buf[end - 1] == 0:
                end -= 1
            self._add_nal(bytes(buf[pos:end]), out)
            pos = nxt + 3
        del buf[:pos - 3]
        if len(buf) > MAX_AU_BYTES:
            raise AnnexBError(f"no H.264 start code in {len(buf)} bytes; is the input H.264 Annex-B "
                              "(raw .h264, MPEG-TS) rather than MP4 or MJPEG?")
        return out

    def flush(self) -> list[AccessUnit]:
        """The rest, at the end of a file."""
        out: list[AccessUnit] = []
        buf = self._buf
        if buf.startswith(START) and len(buf) > 3:
            self._add_nal(bytes(buf[3:]).rstrip(b"\x00"), out)
        self._buf = bytearray()
        au = self._take()
        if au is not None:
            out.append(au)
        return out

    def _add_nal(self, nal: bytes, out: list[AccessUnit]) -> None:
        if not nal:
            return
        kind = nal[0] & 0x1F
        starts = kind in _STARTS_AU or (kind in _VCL and len(nal) > 1 and nal[1] & 0x80)
        if starts and self._has_vcl:
            au = self._take()
            if au is not None:
                out.append(au)
        self._nals.append(nal)
        if kind in _VCL:
            self._has_vcl = True

    def _take(self) -> AccessUnit | None:
        nals, self._nals, self._has_vcl = self._nals, [], False
        if not any(n[0] & 0x1F in _VCL for n in nals):
            return None
        kinds = {n[0] & 0x1F for n in nals}
        data = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
        return AccessUnit(data, NAL_IDR in kinds, NAL_SPS in kinds)
