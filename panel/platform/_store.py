"""The durable store: one SQLite database in WAL mode with ``synchronous=FULL``.

Every write is a transaction that has reached the disk (fsync) before its future resolves, so a
record that was acknowledged survives kill -9 and power cuts. All SQLite work happens on one
dedicated thread: the event loop never blocks on the disk, and submission order is commit order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreError
from ._files import private_dir, private_file

log = logging.getLogger(__name__)
T = TypeVar("T")

# Each entry migrates the schema from version i to i+1; never edit a released entry, append one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        type       TEXT NOT NULL,
        key        TEXT NOT NULL,
        time       REAL NOT NULL,
        boot       TEXT NOT NULL,
        mono       REAL NOT NULL,
        data       TEXT NOT NULL,
        delivered  REAL
    );
    CREATE INDEX events_undelivered ON events(seq) WHERE delivered IS NULL;
    CREATE INDEX events_type ON events(type, seq);
    CREATE TABLE access_log (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        time       REAL NOT NULL,
        relay      TEXT NOT NULL,
        cause      TEXT NOT NULL,
        actor      TEXT NOT NULL,
        method     TEXT NOT NULL,
        call_guid  TEXT,
        duration_s REAL NOT NULL,
        event_id   TEXT NOT NULL
    );
    CREATE INDEX access_log_call ON access_log(call_guid);
    CREATE TABLE calls (
        guid        TEXT PRIMARY KEY,
        seq         INTEGER NOT NULL,
        button      TEXT NOT NULL,
        unit_id     TEXT NOT NULL,
        unit_label  TEXT NOT NULL,
        call_type   TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        answered_by TEXT,
        reason      TEXT,
        snapshot    TEXT
    );
    CREATE INDEX calls_seq ON calls(seq);
    CREATE TABLE call_transitions (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        guid       TEXT NOT NULL REFERENCES calls(guid),
        from_state TEXT,
        to_state   TEXT NOT NULL,
        time       REAL NOT NULL,
        actor      TEXT,
        reason     TEXT
    );
    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # call log: the times of each phase, who ended a call, and the event each transition became
    """
    ALTER TABLE calls ADD COLUMN answered_at REAL;
    ALTER TABLE calls ADD COLUMN connected_at REAL;
    ALTER TABLE calls ADD COLUMN ended_at REAL;
    ALTER TABLE calls ADD COLUMN ended_by TEXT;
    ALTER TABLE call_transitions ADD COLUMN event_id TEXT;
    CREATE INDEX call_transitions_guid ON call_transitions(guid, seq);
    CREATE INDEX calls_live ON calls(state) WHERE state IN ('calling', 'ringing', 'connecting', 'connected');
    """,
    # outbox: one key's undelivered events in order, and the oldest undelivered of a type (shedding)
    """
    CREATE INDEX events_undelivered_key ON events(key, seq) WHERE delivered IS NULL;
    CREATE INDEX events_undelivered_type ON events(type, seq) WHERE delivered IS NULL;
    """,
    # MQTT replay protection: every command id that passed authentication, kept past its expiry
    """
    CREATE TABLE seen_commands (
        id        TEXT PRIMARY KEY,
        cmd       TEXT NOT NULL,
        seen_at   REAL NOT NULL,
        boot      TEXT NOT NULL,
        exp       REAL,
        event_id  TEXT
    );
    CREATE INDEX seen_commands_exp ON seen_commands(exp);
    """,
    # local API credentials: login sessions and issued tokens (only a SHA-256 of each secret)
    """
    CREATE TABLE api_tokens (
        id         TEXT PRIMARY KEY,
        digest     TEXT NOT NULL UNIQUE,
        kind       TEXT NOT NULL,
        role       TEXT NOT NULL,
        subject    TEXT NOT NULL,
        name       TEXT,
        unit_id    TEXT,
        call_guid  TEXT,
        issued_by  TEXT NOT NULL,
        created    REAL NOT NULL,
        expires    REAL NOT NULL,
        revoked    REAL,
        generation INTEGER
    );
    CREATE INDEX api_tokens_subject ON api_tokens(subject);
    CREATE INDEX access_log_time ON access_log(time);
    """,
    # doors without a call (panel/access): PINs, temporary codes and cards, only a keyed digest of each
    # secret; the access log names the credential and its label
    """
    CREATE TABLE access_credentials (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        owner       TEXT NOT NULL,
        label       TEXT NOT NULL,
        digest      TEXT NOT NULL,
        doors       TEXT NOT NULL,
        valid_from  REAL,
        valid_until REAL,
        max_uses    INTEGER,
        uses        INTEGER NOT NULL DEFAULT 0,
        created     REAL NOT NULL,
        created_by  TEXT NOT NULL,
        revoked     REAL
    );
    CREATE UNIQUE INDEX access_credentials_live ON access_credentials(digest) WHERE revoked IS NULL;
    CREATE INDEX access_credentials_owner ON access_credentials(owner);
    ALTER TABLE access_log ADD COLUMN credential_id TEXT;
    ALTER TABLE access_log ADD COLUMN label TEXT;
    """,
    # the directory (panel/directory): residents per unit, and their single-use sign-in codes (a SHA-256
    # of each code only; the code itself rides in a link's fragment and is never stored)
    """
    CREATE TABLE residents (
        id         TEXT PRIMARY KEY,
        unit_id    TEXT NOT NULL,
        name       TEXT NOT NULL,
        created    REAL NOT NULL,
        created_by TEXT NOT NULL,
        revoked    REAL
    );
    CREATE INDEX residents_unit ON residents(unit_id);
    ALTER TABLE api_tokens ADD COLUMN device TEXT;
    CREATE TABLE signin_codes (
        digest      TEXT PRIMARY KEY,
        resident_id TEXT NOT NULL,
        created     REAL NOT NULL,
        expires     REAL NOT NULL,
        used        REAL
    );
    """,
]


@dataclass(frozen=True)
class EventRow:
    seq: int
    id: str
    type: str
    key: str
    time: float
    boot: str
    mono: float
    data: dict[str, Any]
    delivered: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> EventRow:
        return cls(row["seq"], row["id"], row["type"], row["key"], row["time"], row["boot"], row["mono"],
                   json.loads(row["data"]), row["delivered"])


@dataclass(frozen=True)
class AccessRow:
    id: str
    time: float
    relay: str
    cause: str
    actor: str
    method: str
    call_guid: str | None
    duration_s: float
    event_id: str


class Tx:
    """What a write transaction may do. Lives only on the store thread, inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def insert_event(self, *, id: str, type: str, key: str, time: float, boot: str, mono: float,
                     data: dict[str, Any]) -> int:
        cur = self.conn.execute(
            "INSERT INTO events(id, type, key, time, boot, mono, data) VALUES (?,?,?,?,?,?,?)",
            (id, type, key, time, boot, mono, json.dumps(data, separators=(",", ":"), sort_keys=True)))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def insert_access(self, rec: AccessRow) -> None:
        self.conn.execute(
            "INSERT INTO access_log(id, time, relay, cause, actor, method, call_guid, duration_s, event_id)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (rec.id, rec.time, rec.relay, rec.cause, rec.actor, rec.method, rec.call_guid, rec.duration_s,
             rec.event_id))

    def set_kv(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                          (key, json.dumps(value)))

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        try:
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    # -- lifecycle (store thread) ---------------------------------------------------------------
    def _open(self) -> None:
        self._thread = threading.current_thread()
        try:
            private_dir(self.path.parent)
            # Owner-only whatever the umask: SQLite gives the -wal and -shm files the database's own mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            for part in ("", "-wal", "-shm", "-journal"):
                private_file(Path(f"{self.path}{part}"))
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the database {self.path}: {e}; check that storage.dir exists "
                             "and is writable by the service user") from e
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: the file system does not support SQLite WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"{self.path} is damaged ({check}); stop the panel, move the file aside and "
                                 "start again to begin with an empty history")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"{self.path} was written by a newer firmware (schema {version}); "
                                 "install that firmware again or move the file aside")
            for i in range(version, len(MIGRATIONS)):
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _split_sql(MIGRATIONS[i]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={i + 1}")
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{self.path} is not a usable panel database ({e}); stop the panel, move the "
                             "file aside and start again") from e
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    # -- access -----------------------------------------------------------------------------------
    def submit_write(self, fn: Callable[[Tx], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` in one durable transaction; the future resolves once it is on disk."""
        if self._closed:
            raise StoreError("the store is closed")
        return self._executor.submit(self._write, fn)

    def submit_read(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise StoreError("the store is closed")
        return self._executor.submit(self._read, fn)

    async def write(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.wrap_future(self.submit_write(fn))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self.submit_read(fn))

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        return self.submit_write(fn).result()

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.submit_read(fn).result()

    def _write(self, fn: Callable[[Tx], T]) -> T:
        conn = self._require()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(Tx(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"cannot write to {self.path}: {e}; is the disk full or read-only?") from e
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._require())

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    # -- common queries -----------------------------------------------------------------------------
    async def secret_key(self, name: str) -> bytes:
        """A random 256-bit key kept in the store under ``name``, made on first use (signing links,
        snapshot URLs): it survives restarts, so anything signed before still verifies."""
        def get_or_make(tx: Tx) -> str:
            row = tx.execute("SELECT value FROM kv WHERE key=?", (name,)).fetchone()
            if row is not None:
                return str(json.loads(row[0]))
            value = secrets.token_hex(32)
            tx.set_kv(name, value)
            return value
        return bytes.fromhex(await self.write(get_or_make))

    def get_kv(self, key: str, default: Any = None) -> Any:
        def q(conn: sqlite3.Connection) -> Any:
            row = conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
            return default if row is None else json.loads(row[0])
        return self.read_sync(q)

    async def events_after(self, seq: int, limit: int = 100, types: list[str] | None = None) -> list[EventRow]:
        def q(conn: sqlite3.Connection) -> list[EventRow]:
            sql = "SELECT * FROM events WHERE seq > ?"
            params: list[Any] = [seq]
            if types:
                sql += f" AND type IN ({','.join('?' * len(types))})"
                params += types
            sql += " ORDER BY seq LIMIT ?"
            params.append(limit)
            return [EventRow.from_row(r) for r in conn.execute(sql, params)]
        return await self.read(q)

    async def access_log(self, limit: int = 50, before_seq: int | None = None) -> list[dict[str, Any]]:
        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = "SELECT * FROM access_log"
            params: list[Any] = []
            if before_seq is not None:
                sql += " WHERE seq < ?"
                params.append(before_seq)
            sql += " ORDER BY seq DESC LIMIT ?"
            params.append(limit)
            return [dict(r) for r in conn.execute(sql, params)]
        return await self.read(q)


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
