"""The directory of units and residents kept on the panel, and how a resident's phone signs in.

Units come from the button map (``buttons[].unit``); residents are kept in the store, per unit. Adding a
resident (or asking for a new link) makes a **sign-in code**: 128 random bits, single use, valid
``SIGNIN_TTL_S``. The code rides in a link's fragment (``/resident#signin=<code>``), which browsers never
send to a server, so it reaches no access log, proxy or ``Referer``; the panel keeps only its SHA-256.
Redeeming it (``POST /api/v1/auth/signin``) spends it and issues a resident credential scoped to the
resident's unit, one per device: these are the resident's *sessions*. Removing a resident revokes every
session and every unspent code at once.

The rules live here; the HTTP routes (panel/api/directory.py) and the MQTT commands
(panel/link/_control.py) only translate. The credentials themselves belong to the API's token store,
reached through the ``Credentials`` protocol (the directory sits below the API and never imports it).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import DirectoryError
from ..events import (
    DirectoryResidentAdded,
    DirectoryResidentRemoved,
    DirectoryResidentRenamed,
    DirectorySignedIn,
    DirectorySignedOut,
)
from ..platform import Clock, Config, Journal, Store, Tx

log = logging.getLogger(__name__)

SIGNIN_TTL_S = 15 * 60.0  # long enough to scan the QR code at the handover, short enough not to linger
SESSION_TTL_S = 365 * 86_400.0  # a phone stays signed in for a year, or until revoked
RESIDENT_PREFIX = "r-"
SIGNIN_PATH = "/resident#signin="
MAX_RESIDENTS = 5000


class Issued(Protocol):
    """What the token store says about a credential it issued (the API's ``Principal`` fits)."""

    @property
    def token_id(self) -> str: ...
    @property
    def created(self) -> float: ...
    @property
    def expires(self) -> float | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def device(self) -> str | None: ...


class Credentials(Protocol):
    """The part of the API's token store the directory needs: issue, list and revoke resident credentials."""

    async def issue_resident(
        self, *, subject: str, name: str, unit_id: str, device: str, ttl_s: float, issued_by: str
    ) -> tuple[str, Issued]: ...
    def sessions_of(self, subject: str) -> Sequence[Issued]: ...
    async def revoke_ids(self, token_ids: list[str]) -> int: ...

    async def rename_subject(self, subject: str, name: str) -> None: ...


@dataclass(frozen=True)
class Unit:
    id: str
    label: str
    buttons: tuple[str, ...]


@dataclass(frozen=True)
class Resident:
    id: str
    unit_id: str
    name: str
    created: float
    created_by: str


@dataclass(frozen=True)
class SignInLink:
    """A single-use sign-in code for one resident. ``path`` is what a page appends to the panel's origin."""

    code: str
    resident: Resident
    expires: float

    @property
    def path(self) -> str:
        return SIGNIN_PATH + self.code


@dataclass(frozen=True)
class Session:
    """One signed-in device of a resident: the credential's public id, never its secret."""

    token_id: str
    device: str
    created: float
    expires: float | None


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def _resident(row: sqlite3.Row) -> Resident:
    return Resident(
        id=row["id"], unit_id=row["unit_id"], name=row["name"], created=row["created"], created_by=row["created_by"]
    )


class Directory:
    """Units (from the config in force) and residents (in the store); the only place their rules live."""

    def __init__(self, config: Callable[[], Config], store: Store, clock: Clock, journal: Journal) -> None:
        self._config = config
        self.store = store
        self.clock = clock
        self.journal = journal  # every change is an event (directory.*), in the transaction that makes it
        self._credentials: Credentials | None = None

    def attach(self, credentials: Credentials) -> None:
        """The API's token store, once the API is built (until then sign-ins answer directory_unavailable)."""
        self._credentials = credentials

    def _creds(self) -> Credentials:
        if self._credentials is None:
            raise DirectoryError("directory_unavailable", "the panel's credentials are starting; try again shortly")
        return self._credentials

    # -- units -----------------------------------------------------------------------------------------
    def units(self) -> list[Unit]:
        """Every unit on the button map, in the order of its first button."""
        found: dict[str, tuple[str, list[str]]] = {}
        for b in self._config().buttons:
            buttons = found.setdefault(b.unit.id, (b.unit.label, []))[1]
            buttons.append(b.id)
        return [Unit(id=uid, label=label, buttons=tuple(btns)) for uid, (label, btns) in found.items()]

    def unit(self, unit_id: str) -> Unit:
        for u in self.units():
            if u.id == unit_id:
                return u
        known = ", ".join(u.id for u in self.units()) or "none"
        raise DirectoryError(
            "unknown_unit",
            f"there is no unit {unit_id!r} on the button map (units: {known}); "
            "add a button for it (buttons[].unit) first",
        )

    # -- residents -------------------------------------------------------------------------------------
    async def residents(self, unit_id: str | None = None) -> list[Resident]:
        def q(conn: sqlite3.Connection) -> list[Resident]:
            sql = "SELECT * FROM residents WHERE revoked IS NULL"
            args: tuple[str, ...] = ()
            if unit_id is not None:
                sql, args = sql + " AND unit_id = ?", (unit_id,)
            return [_resident(r) for r in conn.execute(sql + " ORDER BY unit_id, name, created", args)]

        return await self.store.read(q)

    async def resident(self, resident_id: str) -> Resident:
        def q(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM residents WHERE id = ? AND revoked IS NULL", (resident_id,)
            ).fetchone()
            return row

        row = await self.store.read(q)
        if row is None:
            raise DirectoryError(
                "unknown_resident",
                f"there is no resident {resident_id!r} in the directory "
                "(removed, or never added); list them with GET /api/v1/directory",
            )
        return _resident(row)

    async def add(self, unit_id: str, name: str, *, by: str) -> SignInLink:
        """A new resident of ``unit_id`` with a first sign-in link, in one transaction."""
        self.unit(unit_id)
        now = self.clock.wall()
        resident = Resident(
            id=RESIDENT_PREFIX + secrets.token_hex(6), unit_id=unit_id, name=name, created=now, created_by=by
        )
        code = secrets.token_urlsafe(16)

        count = await self.store.read(
            lambda c: int(c.execute("SELECT count(*) FROM residents WHERE revoked IS NULL").fetchone()[0])
        )
        if count >= MAX_RESIDENTS:
            raise DirectoryError(
                "too_many_residents", f"the directory holds {MAX_RESIDENTS} residents already; remove some first"
            )

        def write(tx: Tx, _event_id: str) -> None:
            tx.execute(
                "INSERT INTO residents(id, unit_id, name, created, created_by) VALUES (?,?,?,?,?)",
                (resident.id, unit_id, name, now, by),
            )
            self._insert_code(tx, code, resident.id, now)

        await self.journal.record(
            DirectoryResidentAdded(resident=resident.id, unit_id=unit_id, name=name, by=by), extra=write
        )
        return SignInLink(code=code, resident=resident, expires=now + SIGNIN_TTL_S)

    async def find(self, unit_id: str, name: str) -> Resident | None:
        """The live resident of that unit with that name, if any (the demo re-uses its resident)."""
        for r in await self.residents(unit_id):
            if r.name == name:
                return r
        return None

    async def new_link(self, resident_id: str, *, by: str) -> SignInLink:
        """Another single-use sign-in link (a new phone, or the last link expired). Earlier links stay valid
        until they are used or expire."""
        resident = await self.resident(resident_id)
        now = self.clock.wall()
        code = secrets.token_urlsafe(16)
        await self.store.write(lambda tx: self._insert_code(tx, code, resident.id, now))
        log.info("sign-in link issued", extra={"resident": resident.id, "by": by})
        return SignInLink(code=code, resident=resident, expires=now + SIGNIN_TTL_S)

    def _insert_code(self, tx: Tx, code: str, resident_id: str, now: float) -> None:
        tx.execute(
            "INSERT INTO signin_codes(digest, resident_id, created, expires) VALUES (?,?,?,?)",
            (_digest(code), resident_id, now, now + SIGNIN_TTL_S),
        )
        # Spent and expired codes are of no use: trim them as we go.
        tx.execute("DELETE FROM signin_codes WHERE expires < ?", (now - 86_400,))

    async def rename(self, resident_id: str, name: str, *, by: str) -> Resident:
        resident = await self.resident(resident_id)

        def write(tx: Tx, _event_id: str) -> None:
            tx.execute("UPDATE residents SET name = ? WHERE id = ?", (name, resident.id))

        await self.journal.record(
            DirectoryResidentRenamed(resident=resident.id, unit_id=resident.unit_id, name=name, by=by), extra=write
        )
        if self._credentials is not None:
            await self._credentials.rename_subject(resident.id, name)
        return Resident(
            id=resident.id,
            unit_id=resident.unit_id,
            name=name,
            created=resident.created,
            created_by=resident.created_by,
        )

    async def remove(self, resident_id: str, *, by: str) -> tuple[Resident, int]:
        """Remove a resident: every session ends at once and every unspent link stops working.
        Returns the resident and how many sessions ended."""
        resident = await self.resident(resident_id)
        creds = self._creds()
        sessions = [s.token_id for s in creds.sessions_of(resident.id)]
        now = self.clock.wall()

        def write(tx: Tx, _event_id: str) -> None:
            # Their unspent codes stay (until trimmed) only to answer resident_revoked rather than invalid.
            tx.execute("UPDATE residents SET revoked = ? WHERE id = ?", (now, resident.id))

        await self.journal.record(
            DirectoryResidentRemoved(
                resident=resident.id, unit_id=resident.unit_id, name=resident.name, by=by, sessions_ended=len(sessions)
            ),
            extra=write,
        )
        return resident, await creds.revoke_ids(sessions)

    # -- sessions ----------------------------------------------------------------------------------------
    def sessions(self, resident: Resident) -> list[Session]:
        if self._credentials is None:
            return []
        return [
            Session(token_id=p.token_id, device=p.device or "", created=p.created, expires=p.expires)
            for p in self._credentials.sessions_of(resident.id)
        ]

    async def end_session(self, resident_id: str, token_id: str, *, by: str) -> Resident:
        resident = await self.resident(resident_id)
        creds = self._creds()
        if token_id not in {s.token_id for s in creds.sessions_of(resident.id)}:
            raise DirectoryError("unknown_token", f"{resident.name} has no session {token_id!r} (it ended already?)")
        await creds.revoke_ids([token_id])
        await self.journal.record(
            DirectorySignedOut(
                resident=resident.id, unit_id=resident.unit_id, name=resident.name, token_id=token_id, by=by
            )
        )
        return resident

    async def redeem(self, code: str, device: str) -> tuple[str, Resident, Issued]:
        """Spend a sign-in code: a resident credential for this device (its secret, the resident, what it is).

        The code is marked spent in the same transaction that finds it, so two devices racing with one
        link get one credential; if issuing then fails the code is given back (nothing half-done)."""
        creds = self._creds()
        now = self.clock.wall()
        d = _digest(code)

        def spend(tx: Tx) -> sqlite3.Row:
            row: sqlite3.Row | None = tx.execute(
                "SELECT c.used, c.expires, r.* FROM signin_codes c LEFT JOIN residents r ON r.id = c.resident_id "
                "WHERE c.digest = ?",
                (d,),
            ).fetchone()
            if row is None:
                raise DirectoryError(
                    "signin_code_invalid",
                    "this sign-in link is not one this panel issued (it may "
                    "be cut off); scan the QR code again or ask for a new link",
                )
            if row["revoked"] is not None or row["id"] is None:
                raise DirectoryError(
                    "resident_revoked",
                    "this resident was removed from the panel's directory; ask the installer or the building manager",
                )
            if row["used"] is not None:
                raise DirectoryError(
                    "signin_code_used",
                    "this sign-in link was used already (each works once); "
                    "ask the installer or the building manager for a new one",
                )
            if now >= row["expires"]:
                raise DirectoryError(
                    "signin_code_expired",
                    "this sign-in link has expired (links work for "
                    f"{int(SIGNIN_TTL_S // 60)} minutes); ask for a new one",
                )
            tx.execute("UPDATE signin_codes SET used = ? WHERE digest = ?", (now, d))
            return row

        row = await self.store.write(spend)
        resident = _resident(row)
        try:
            secret, issued = await creds.issue_resident(
                subject=resident.id,
                name=resident.name,
                unit_id=resident.unit_id,
                device=device,
                ttl_s=SESSION_TTL_S,
                issued_by="signin-link",
            )
        except BaseException:
            await self.store.write(lambda tx: tx.execute("UPDATE signin_codes SET used = NULL WHERE digest = ?", (d,)))
            raise
        await self.journal.record(
            DirectorySignedIn(
                resident=resident.id,
                unit_id=resident.unit_id,
                name=resident.name,
                device=device,
                token_id=issued.token_id,
            )
        )
        return secret, resident, issued
