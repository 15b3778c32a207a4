"""SDP offers as every channel takes them (WHEP, MQTT ``offer``, a session's renegotiation): bounded and
checked line by line before any parser or the WebRTC stack sees them.

aiortc's parser accepts almost anything and its work grows with what the offer asks for: every media
section becomes a transceiver with its codecs, every candidate a remote candidate ICE pairs with each
of ours. An offer of 600 minimal media sections fits in 64 KiB and held the event loop for 0.58 s
(the door's loop: relay timers, buttons, the watchdog), so each of these is bounded first, in linear
time, with a message that names what is over.
"""

from __future__ import annotations

import re

# A browser's offer is 3-10 KB; a peer that lists every candidate of many interfaces stays well below.
MAX_SDP_BYTES = 64 * 1024
# Chromium's offer with audio, video, a data channel and a dozen candidates is 80-150 lines.
MAX_LINES = 1024
# The longest lines in real offers (a=fmtp, a=ssrc, a=candidate, a=fingerprint:sha-512) are under 200.
MAX_LINE_CHARS = 2048
# The panel answers at most audio, video and a data channel, and keeps them on renegotiation; a few
# more leave room for a peer that offers extra sections (which get inactive answers) without letting
# the per-section cost grow (8 sections: ~5 ms; 600: 0.58 s).
MAX_MEDIA_SECTIONS = 8
# Host, server-reflexive and relay candidates of a few interfaces, per section without BUNDLE: a real
# offer has fewer than 30. Each one is paired with each of the panel's candidates for ICE checks.
MAX_CANDIDATES = 64

_LINE = re.compile(r"^[a-zA-Z]=[^\x00-\x08\x0a-\x1f\x7f]*$")


class SdpRefused(ValueError):
    """The text is not an SDP offer the panel takes; the message says what is wrong, for the peer."""


def offer_lines(text: str) -> list[str]:
    """The offer's lines (line ends removed) once it is within every bound above and has RFC 8866's
    syntax (``v=0`` first, then ``<type>=<value>`` lines) and the least an offer needs: an origin, a
    session name and an audio or video section. Raises ``SdpRefused``; the media layer checks the rest
    (ICE credentials, fingerprints, directions, codecs) on the parsed offer."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise SdpRefused("the SDP contains an unpaired UTF-16 surrogate; SDP is UTF-8 text") from None
    if not text.strip():
        raise SdpRefused("sdp is empty; send the resident's offer (pc.localDescription.sdp)")
    if size > MAX_SDP_BYTES:
        raise SdpRefused(f"the SDP is {size} bytes; at most {MAX_SDP_BYTES} are allowed")
    lines = text.split("\n")
    if lines[-1] in ("", "\r"):
        lines.pop()  # the line break that ends the last line
    if len(lines) > MAX_LINES:
        raise SdpRefused(f"the SDP has {len(lines)} lines; at most {MAX_LINES} are allowed")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if lines[0] != "v=0":
        raise SdpRefused(f"an SDP starts with the line \"v=0\", this one with {lines[0][:40]!r}")
    for n, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_CHARS:
            raise SdpRefused(f"SDP line {n} is {len(line)} characters long; at most {MAX_LINE_CHARS} are allowed")
        if not _LINE.match(line):
            raise SdpRefused(f"SDP line {n} is not <type>=<value> (one letter, '=', printable text): {line[:40]!r}")
    sections = [i for i, line in enumerate(lines) if line.startswith("m=")]
    first_media = sections[0] if sections else len(lines)
    session = {line[0] for line in lines[:first_media]}
    for kind, what in (("o", "origin (o=)"), ("s", "session name (s=)")):
        if kind not in session:
            raise SdpRefused(f"the SDP has no {what} line before its first m= section")
    if not any(line.startswith(("m=audio ", "m=video ")) for line in lines[first_media:]):
        raise SdpRefused("the SDP has no audio or video section (m=audio / m=video)")
    if len(sections) > MAX_MEDIA_SECTIONS:
        raise SdpRefused(f"the SDP has {len(sections)} media sections (m=); at most {MAX_MEDIA_SECTIONS} are "
                         "allowed")
    candidates = sum(line.startswith("a=candidate:") for line in lines)
    if candidates > MAX_CANDIDATES:
        raise SdpRefused(f"the SDP has {candidates} candidates (a=candidate); at most {MAX_CANDIDATES} are allowed")
    return lines
