"""Crash-safe file writes: a file is either the old one or the new one, never half of each."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable (the directory entry is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """``path`` and every missing parent created 0700, whatever the umask (``mkdir -p`` would give the
    parents the umask's mode: 0755 under the usual 022). Folders that exist are left as they are."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)  # a umask wider than 077 (e.g. 0177) must not narrow it either
    return path


def private_file(path: Path) -> None:
    """Make an existing file owner-only (a file an older firmware or a library created under a loose umask)."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Temp file beside ``path``, fsync, rename over it, fsync the folder. ``mode`` is set exactly
    (the umask neither widens nor narrows it)."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
