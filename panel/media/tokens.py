"""Session credentials: short-lived bearer tokens scoped to one call (or to live view), revocable.

A token is a random string; the panel keeps only its SHA-256, with what it grants (``Grant``). It may
be used to start sessions until it expires (``media.token_ttl_s``); a call's tokens are revoked when
the call ends, and revoking a token ends every session started with it at once (listeners registered
with ``on_revoke`` do that). The store is in memory: after a restart there is no call, so no token
has anything left to grant.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..platform import SlotTier
from .errors import TokenRefused

Kind = Literal["call", "monitor"]
TOKEN_PREFIX = "pmt_"
FORGET_AFTER_S = 3600.0  # how long an expired or revoked token is remembered (for a precise error)


def slot_tier(*, installer: bool, in_call: bool, resident: bool) -> SlotTier:
    """Which reserve of the media slots (sessions, MJPEG viewers) a watcher may use: calls and residents
    are what the panel is for, so they may use those kept from others' live views."""
    return "installer" if installer else "resident" if in_call or resident else "other"


@dataclass(frozen=True)
class Grant:
    token_id: str  # a short public handle, safe to log and to name in a revocation
    kind: Kind
    subject: str | None  # who holds it: a resident id, "installer", "backend"; None: named at use
    call_guid: str | None = None
    view_only: bool = False
    expires_mono: float | None = None  # None: does not expire (the installer token)
    installer: bool = False  # the installer's credential: may see and end every session
    # A guest of the call besides its answerer (call links): sees the camera, hears the entrance and
    # talks to the visitor; never answers or ends the call.
    talk: bool = False
    # When the credential behind the grant stops working (an API credential's expiry, on the monotonic
    # clock): its sessions, and a call answered with it, end then. None: only a revocation ends them.
    lasts_until_mono: float | None = None
    # A resident's live view outside a call: it may use the sessions kept for residents (media.sessions_reserved).
    resident: bool = False
    # A viewer's or resident's live view, which must not look into a call (of another unit: its own would
    # have given a call grant): it ends when a call begins (media.live_view.into_other_calls).
    idle_only: bool = False

    @property
    def tier(self) -> SlotTier:
        return slot_tier(installer=self.installer, in_call=self.kind == "call", resident=self.resident)


@dataclass
class _Entry:
    grant: Grant
    revoked_mono: float | None = None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 installer_token: str | None = None) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._installer = installer_token
        self._by_digest: dict[bytes, _Entry] = {}
        self._by_id: dict[str, bytes] = {}
        self._listeners: list[Callable[[Grant], None]] = []

    def on_revoke(self, fn: Callable[[Grant], None]) -> None:
        self._listeners.append(fn)

    def issue(self, kind: Kind, *, subject: str | None, call_guid: str | None = None, ttl_s: float | None = None,
              view_only: bool = False) -> tuple[str, Grant]:
        """A new token and what it grants. Call tokens name their call."""
        if kind == "call" and not call_guid:
            raise ValueError("a call token needs the call's guid")
        self._forget_old()
        token = TOKEN_PREFIX + secrets.token_urlsafe(24)
        grant = Grant(token_id=secrets.token_hex(6), kind=kind, subject=subject, call_guid=call_guid,
                      view_only=view_only, expires_mono=self.clock() + (self.ttl_s if ttl_s is None else ttl_s))
        digest = _digest(token)
        self._by_digest[digest] = _Entry(grant)
        self._by_id[grant.token_id] = digest
        return token, grant

    def verify(self, token: str | None) -> Grant:
        """What ``token`` grants now, or ``TokenRefused`` saying precisely why not."""
        if not token:
            raise TokenRefused("unauthenticated", "send Authorization: Bearer <session token>")
        if self._installer is not None and hmac.compare_digest(token.encode(), self._installer.encode()):
            return Grant(token_id="installer", kind="monitor", subject="installer", view_only=True, installer=True)
        entry = self._by_digest.get(_digest(token))
        if entry is None:
            raise TokenRefused("invalid_token", "the session token is not valid on this panel; get a fresh one "
                                                "for the call")
        if entry.revoked_mono is not None:
            raise TokenRefused("token_revoked", f"the session token {entry.grant.token_id} was revoked"
                               + (" (its call ended)" if entry.grant.call_guid else ""))
        if entry.grant.expires_mono is not None and self.clock() >= entry.grant.expires_mono:
            raise TokenRefused("token_expired", f"the session token {entry.grant.token_id} expired; tokens may be "
                               f"used for {self.ttl_s:g} s after they are issued")
        return entry.grant

    def revoke(self, token_id: str) -> Grant | None:
        """Revoke one token by its public id; its sessions end at once. None if unknown."""
        digest = self._by_id.get(token_id)
        entry = self._by_digest.get(digest) if digest is not None else None
        if entry is None or entry.revoked_mono is not None:
            return None
        entry.revoked_mono = self.clock()
        for fn in list(self._listeners):
            fn(entry.grant)
        return entry.grant

    def revoked_elsewhere(self, token_id: str) -> None:
        """A credential this store did not issue (an API token) was revoked: end what it started."""
        gone = Grant(token_id=token_id, kind="monitor", subject=None)
        for fn in list(self._listeners):
            fn(gone)

    def revoke_call(self, call_guid: str) -> list[Grant]:
        return [g for g in (self.revoke(e.grant.token_id) for e in list(self._by_digest.values())
                            if e.grant.call_guid == call_guid and e.revoked_mono is None) if g is not None]

    def revoke_subject(self, subject: str) -> list[Grant]:
        """A resident logged out: every token of theirs stops working, their sessions end."""
        return [g for g in (self.revoke(e.grant.token_id) for e in list(self._by_digest.values())
                            if e.grant.subject == subject and e.revoked_mono is None) if g is not None]

    def _forget_old(self) -> None:
        now = self.clock()
        for digest, entry in list(self._by_digest.items()):
            ended = entry.revoked_mono if entry.revoked_mono is not None else entry.grant.expires_mono
            if ended is not None and now - ended > FORGET_AFTER_S:
                del self._by_digest[digest]
                self._by_id.pop(entry.grant.token_id, None)
