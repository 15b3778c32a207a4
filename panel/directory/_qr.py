"""A sign-in link as a QR code: an SVG for the installer page, text for a terminal (segno, pure Python)."""

from __future__ import annotations

import io
from typing import Any


def _make(url: str, error: str) -> Any:
    import segno  # only when a link is made: not on the way to a live door at start

    return segno.make(url, error=error)


def svg_data_uri(url: str) -> str:
    """An ``<img src>`` the page can show under its Content-Security-Policy (img-src data:)."""
    return str(_make(url, "m").svg_data_uri(scale=4, border=2))


def terminal_text(url: str) -> str:
    """The QR code in block characters, for a phone to scan off a terminal (dark on light, compact)."""
    out = io.StringIO()
    _make(url, "l").terminal(out=out, compact=True, border=2)
    return out.getvalue()
