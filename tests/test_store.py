"""The durable store: WAL + synchronous=FULL, schema migrations, clear errors on a bad file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from panel.errors import StoreError
from panel.platform import MIGRATIONS, AccessRow, Store


def test_pragmas_and_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    try:
        mode, sync, version = store.read_sync(lambda c: (
            c.execute("PRAGMA journal_mode").fetchone()[0], c.execute("PRAGMA synchronous").fetchone()[0],
            c.execute("PRAGMA user_version").fetchone()[0]))
        assert mode == "wal" and sync == 2 and version == len(MIGRATIONS)  # 2 = FULL
    finally:
        store.close()


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")

    def half(tx: object) -> None:
        tx.insert_access(AccessRow("a1", 1.0, "main", "remote", "x", "api", None, 2.0, "e1"))  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write_sync(half)
    assert store.read_sync(lambda c: c.execute("SELECT count(*) FROM access_log").fetchone()[0]) == 0
    store.close()


def test_reopening_keeps_records_and_does_not_migrate_twice(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    store.write_sync(lambda tx: tx.set_kv("k", {"v": 1}))
    store.close()
    store = Store(tmp_path / "p.db")
    assert store.get_kv("k") == {"v": 1}
    store.close()


def test_a_damaged_file_gets_an_actionable_error(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move the file aside"):
        Store(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer firmware"):
        Store(path)


def test_an_unwritable_directory_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"storage\.dir"):
        Store(blocker / "sub" / "p.db")


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.write_sync(lambda tx: None)
