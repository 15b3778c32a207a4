"""Downloading a release: HTTPS only (loopback may be plain HTTP), bounded, resumable, fsync'd.

The partial file is named by the signed SHA-256, so a download cut off (network, kill -9, power) resumes
where it stopped with a ``Range`` request when the same release is asked for again, and a file left by
another release is never mistaken for this one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx

from ..platform import private_dir
from ._release import UpdateError

log = logging.getLogger(__name__)


def check_url(url: str) -> None:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise UpdateError("update_download_failed", f"the release URL must be https:// (got {parts.scheme or 'none'}://)")


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open_at(path: Path, offset: int) -> BinaryIO:
    f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
    f.seek(offset)
    f.truncate()
    return f


def _sync_and_close(f: BinaryIO) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()


async def download(url: str, dest: Path, size: int, *, verify: ssl.SSLContext | str | bool = True,
                   attempts: int = 4, timeout_s: float = 30.0) -> Path:
    """Fetch ``url`` into ``dest`` until it holds exactly ``size`` bytes; never writes more than ``size``."""
    check_url(url)
    # Every file operation runs in a worker thread: a slow SD card must not stall the door's event loop.
    await asyncio.to_thread(private_dir, dest.parent)
    last = "no attempt"
    async with httpx.AsyncClient(verify=verify, timeout=timeout_s, follow_redirects=False) as client:
        for attempt in range(1, attempts + 1):
            have = await asyncio.to_thread(_size_of, dest)
            if have > size:
                await asyncio.to_thread(dest.unlink)
                have = 0
            if have == size:
                return dest
            headers = {"Range": f"bytes={have}-"} if have else {}
            in_body = False
            try:
                async with client.stream("GET", url, headers=headers) as r:
                    if r.status_code == 200 and have:
                        have = 0  # the server ignored the range: start over
                    elif r.status_code not in (200, 206):
                        last = f"HTTP {r.status_code}"
                        if 400 <= r.status_code < 500 and r.status_code != 416:
                            break
                        continue
                    length = r.headers.get("content-length")
                    if length is not None and length.isdigit() and have + int(length) > size:
                        raise UpdateError("update_too_large", f"the server offers {have + int(length)} bytes; "
                                          f"the release is signed as {size}")
                    in_body = True
                    f = await asyncio.to_thread(_open_at, dest, have)
                    try:
                        # As it arrives (no re-chunking): what came before a cut is kept for the resume.
                        async for chunk in r.aiter_raw():
                            have += len(chunk)
                            if have > size:
                                raise UpdateError("update_too_large", f"the server sent more than the signed "
                                                  f"{size} bytes")
                            await asyncio.to_thread(f.write, chunk)
                    finally:
                        await asyncio.to_thread(_sync_and_close, f)
            except httpx.HTTPError as e:
                last = (f"the connection ended after {have} of {size} bytes ({type(e).__name__})" if in_body
                        else f"{type(e).__name__}: {e}")
                log.warning("release download interrupted", extra={"attempt": attempt, "error": last, "have": have})
                continue
            if have == size:
                return dest
            last = f"the connection ended after {have} of {size} bytes"
            log.warning("release download short", extra={"attempt": attempt, "have": have, "size": size})
    got = await asyncio.to_thread(_size_of, dest)
    if got and got != size and "ended after" in last:
        raise UpdateError("update_size_mismatch", f"the download stopped at {got} of the signed "
                          f"{size} bytes after {attempts} attempts ({last})")
    raise UpdateError("update_download_failed", f"the release could not be downloaded: {last}")
