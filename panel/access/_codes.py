"""Credentials: resident PINs and duress PINs, temporary codes, cards, kept as keyed digests.

Only ``HMAC-SHA256(panel key, namespace || secret)`` of each secret is stored (the key is made once
per panel, ``Store.secret_key``), never the secret: a copied database gives no codes, and no code
can be brute-forced offline without the key, which lives in the same file only as a hex string
(``kv``) -- a factory reset erases both. Keypad codes (PINs, duress PINs, temporary codes) share
one namespace, since they are typed on the same keys; cards have their own.

Lookups run against the live credentials held in memory, comparing every digest with
``hmac.compare_digest`` and never stopping at the first match, so the time a lookup takes says
nothing about which (or whether a) credential matched. Nothing here logs or returns a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import AccessError
from ..platform import Store, Tx

Kind = Literal["pin", "duress", "code", "card"]
KINDS: tuple[Kind, ...] = ("pin", "duress", "code", "card")
KEY_NAME = "access_credential_key"
MAX_CODE_LENGTH = 12
MAX_CARD_LENGTH = 64
# What a temporary code's QR carries: the prefix keeps any other QR code held up to the camera from being
# taken for a typed code.
QR_PREFIX = "panel-access:"


@dataclass(frozen=True)
class Credential:
    id: str
    kind: Kind
    owner: str
    label: str
    digest: bytes = field(repr=False)
    doors: tuple[str, ...]
    valid_from: float | None
    valid_until: float | None
    max_uses: int | None
    uses: int
    created: float
    created_by: str

    @property
    def uses_left(self) -> int | None:
        return None if self.max_uses is None else max(0, self.max_uses - self.uses)

    def public(self) -> dict[str, Any]:
        """What the API and MQTT show: everything but the digest."""
        return {"id": self.id, "kind": self.kind, "owner": self.owner, "label": self.label, "doors": list(self.doors),
                "valid_from": self.valid_from, "valid_until": self.valid_until, "max_uses": self.max_uses,
                "uses": self.uses, "uses_left": self.uses_left, "created": self.created,
                "created_by": self.created_by}

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> Credential:
        return cls(r["id"], r["kind"], r["owner"], r["label"], bytes.fromhex(r["digest"]),
                   tuple(json.loads(r["doors"])), r["valid_from"], r["valid_until"], r["max_uses"], r["uses"],
                   r["created"], r["created_by"])


def _namespace(kind: Kind) -> bytes:
    return b"card\0" if kind == "card" else b"keypad\0"


def normalise_card(number: str) -> str:
    """A card number as readers report it differs only in case and separators; compare its hex digits."""
    return "".join(ch for ch in number.lower() if ch in "0123456789abcdef")


class Credentials:
    """The live credentials, in memory, and their rows in the store."""

    def __init__(self, store: Store, key: bytes) -> None:
        self.store = store
        self._key = key
        self._live: dict[str, Credential] = {}

    @classmethod
    async def open(cls, store: Store) -> Credentials:
        creds = cls(store, await store.secret_key(KEY_NAME))
        rows = await store.read(lambda c: c.execute(
            "SELECT * FROM access_credentials WHERE revoked IS NULL").fetchall())
        creds._live = {r["id"]: Credential.from_row(r) for r in rows}
        return creds

    # -- secrets ------------------------------------------------------------------------------------
    def digest(self, kind: Kind, secret: str) -> bytes:
        return hmac.new(self._key, _namespace(kind) + secret.encode(), hashlib.sha256).digest()

    def find(self, kind: Literal["keypad", "card"], secret: str) -> Credential | None:
        """The live credential whose secret this is, comparing against every one in constant time each."""
        probe = self.digest("card" if kind == "card" else "code", secret)
        found: Credential | None = None
        for cred in self._live.values():
            if (cred.kind == "card") == (kind == "card") and hmac.compare_digest(cred.digest, probe):
                found = cred  # no break: every lookup compares against all of them
        return found

    @staticmethod
    def new_code(length: int) -> str:
        return "".join(secrets.choice("0123456789") for _ in range(length))

    # -- reading ------------------------------------------------------------------------------------
    def get(self, cred_id: str) -> Credential | None:
        return self._live.get(cred_id)

    def live(self, owner: str | None = None, kind: Kind | None = None) -> list[Credential]:
        return sorted((c for c in self._live.values() if (owner is None or c.owner == owner)
                       and (kind is None or c.kind == kind)), key=lambda c: (c.created, c.id))

    # -- writing ------------------------------------------------------------------------------------
    async def add(self, *, kind: Kind, owner: str, label: str, secret: str, doors: tuple[str, ...],
                  valid_from: float | None, valid_until: float | None, max_uses: int | None, created: float,
                  created_by: str, replaces: Kind | None = None) -> Credential:
        """Store a new credential (a resident's new PIN replaces their old one in the same transaction).

        A secret equal to another live one is refused (for a card: enrolled to someone else): the
        keypad could not tell whose it is."""
        digest = self.digest(kind, secret)
        cred = Credential(uuid.uuid4().hex[:16], kind, owner, label, digest, doors, valid_from, valid_until,
                          max_uses, 0, created, created_by)
        old = [c for c in self._live.values() if replaces is not None and c.owner == owner and c.kind == replaces]
        # A used-up or expired code still holds its secret; a new credential with it retires the old one.
        old += [c for c in self._live.values() if c not in old and c.kind != "card"
                and (c.uses_left == 0 or (c.valid_until is not None and c.valid_until <= created))
                and hmac.compare_digest(c.digest, digest)]
        clash = next((c for c in self._live.values()
                      if (c.kind == "card") == (kind == "card") and hmac.compare_digest(c.digest, digest)
                      and c not in old), None)
        if clash is not None:
            if kind == "card":
                # Only installers and the backend enrol cards, and they see every owner anyway.
                raise AccessError("card_enrolled", f"this card is enrolled already, to {clash.owner} as "
                                  f"{clash.label!r} ({clash.id}); revoke that enrolment first")
            # Saying whose it is would tell a resident another resident's PIN.
            raise AccessError("code_unavailable", "this code cannot be used; choose another")

        def write(tx: Tx) -> None:
            for c in old:
                tx.execute("UPDATE access_credentials SET revoked=? WHERE id=?", (created, c.id))
            tx.execute("INSERT INTO access_credentials(id, kind, owner, label, digest, doors, valid_from, "
                       "valid_until, max_uses, uses, created, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (cred.id, kind, owner, label, digest.hex(), json.dumps(list(doors)), valid_from,
                        valid_until, max_uses, 0, created, created_by))

        await self.store.write(write)
        for c in old:
            self._live.pop(c.id, None)
        self._live[cred.id] = cred
        return cred

    async def revoke(self, cred_id: str, when: float) -> Credential:
        cred = self._live.get(cred_id)
        if cred is None:
            raise AccessError("unknown_credential", f"there is no live credential {cred_id!r}; list them with "
                              "GET /api/v1/access/credentials")
        await self.store.write(lambda tx: tx.execute(
            "UPDATE access_credentials SET revoked=? WHERE id=? AND revoked IS NULL", (when, cred_id)))
        self._live.pop(cred_id, None)
        return cred

    def spend(self, cred: Credential) -> Credential:
        """Count one use in memory now (before any await, so two entries cannot both take the last use);
        ``write_use`` makes it durable in the release's own transaction."""
        # A used-up code stays known (a courier trying it again is told "used up", not "wrong code").
        spent = replace(cred, uses=cred.uses + 1)
        if cred.id in self._live:
            self._live[cred.id] = spent
        return spent

    def unspend(self, cred: Credential) -> None:
        """The release that took a use was refused by the door: give the use back (unless revoked since)."""
        current = self._live.get(cred.id)
        if current is not None:
            self._live[cred.id] = replace(current, uses=max(0, current.uses - 1))

    @staticmethod
    def write_use(tx: Tx, cred: Credential, access_event_id: str, label: str, logged_id: str) -> None:
        """In the release's transaction: count the use, and name the credential in the access log
        (``logged_id``: a duress PIN's release names its owner's PIN, so the log looks the same)."""
        tx.execute("UPDATE access_credentials SET uses = uses + 1 WHERE id=?", (cred.id,))
        tx.execute("UPDATE access_log SET credential_id=?, label=? WHERE event_id=?",
                   (logged_id, label, access_event_id))
