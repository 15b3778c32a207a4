"""The storage lock (one daemon per ``storage.dir``) and the factory reset.

A factory reset erases what the panel learned and made for itself: the durable store (access log,
call log, event history and undelivered outbox, API sessions and tokens, the tamper block, MQTT
replay memory), the visitor snapshots, the generated HTTPS certificate and key, the enrolled identity and enrolment
code, and the installer credential. The next start makes a new installer password and a new certificate. It does not touch
the config file or the secrets file: they are the installer's (remove them by hand to decommission).
It refuses while a panel process holds the storage lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ._files import fsync_dir, private_dir

LOCK_NAME = "panel.lock"
# Everything under storage.dir the panel makes; a reset removes exactly these.
ERASED_FILES = ("panel.db", "panel.db-wal", "panel.db-shm", "installer.cred", "installer.initial")
ERASED_DIRS = ("snapshots", "tls", "enrolment")


def lock_storage(storage_dir: Path) -> IO[bytes]:
    """Hold ``<storage.dir>/panel.lock`` for the life of the process; OSError if another holds it."""
    private_dir(storage_dir)
    f = os.fdopen(os.open(storage_dir / LOCK_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
    os.fchmod(f.fileno(), 0o600)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise OSError(f"another panel process is using {storage_dir} (it holds {LOCK_NAME}); stop it first "
                      "(systemctl stop panel)") from None
    return f


@dataclass
class ResetReport:
    removed: list[str] = field(default_factory=list)
    undelivered_events: int | None = None


def undelivered(storage_dir: Path) -> int | None:
    """Events the backend has not received yet (lost by a reset); None without a database."""
    import sqlite3

    db = storage_dir / "panel.db"
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM events WHERE delivered IS NULL").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def factory_reset(storage_dir: Path) -> ResetReport:
    """Erase (with the storage lock held, so no daemon runs meanwhile); OSError if a panel is running."""
    report = ResetReport()
    if not storage_dir.exists():
        return report
    lock = lock_storage(storage_dir)
    try:
        report.undelivered_events = undelivered(storage_dir)
        for name in ERASED_FILES:
            path = storage_dir / name
            if path.exists():
                path.unlink()
                report.removed.append(str(path))
        for name in ERASED_DIRS:
            path = storage_dir / name
            if path.exists():
                shutil.rmtree(path)
                report.removed.append(str(path) + "/")
        fsync_dir(storage_dir)
    finally:
        lock.close()
    return report
