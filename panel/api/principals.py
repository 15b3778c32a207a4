"""Who is calling: bearer credentials of the local API and the principal each one stands for.

Three kinds of bearer credential, all sent as ``Authorization: Bearer <secret>`` (never in a URL):

- ``session``: the installer's login session (``POST /api/v1/auth/login``), expires after
  ``api.session_ttl_s``, ends at logout and whenever the installer password changes;
- ``token``: issued by the installer or the backend (``POST /api/v1/auth/tokens``) for a viewer,
  a resident or a backend, with an expiry, optionally scoped to a unit and/or one call; or minted by
  an invite (``POST /api/v1/calls/{guid}/invite``) for a guest of one call;
- ``static``: ``installer_token`` from the secrets file, for automation (role installer).

The panel keeps only a SHA-256 of each secret (they are 256-bit random strings, so a fast hash is
enough), persisted in the store with what it grants, and a copy in memory: checking a request is
a dictionary lookup, and a revocation is effective before the response that confirms it is sent.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..auth import CredentialInfo, InstallerCredential
from ..calls import RESERVED_PREFIXES as _RESERVED_PREFIXES
from ..calls import RESERVED_SUBJECTS as RESERVED_SUBJECTS
from .errors import ApiError
from .limits import LoginThrottle, RateLimiter

if TYPE_CHECKING:
    from ..daemon import Panel
    from ..platform import Config, Store, Tx

log = logging.getLogger(__name__)

Role = Literal["viewer", "resident", "installer", "backend", "guest"]
# ``guest``: minted only by an invite into one call (panel/calls CallService.invite): view and talk in
# that call, nothing else. Nobody issues it through /auth/tokens, and the door refuses it.
ROLES: tuple[Role, ...] = ("viewer", "resident", "installer", "backend", "guest")
Kind = Literal["session", "token", "static"]
TOKEN_PREFIX = "pnl_"
# Who may issue a token of which role (nobody issues installer credentials: the installer logs in).
ISSUABLE: dict[Role, frozenset[Role]] = {
    "installer": frozenset({"viewer", "resident", "backend"}),
    "backend": frozenset({"viewer", "resident"}),
}
# Names the panel uses for itself in logs and calls; a token subject must not pretend to be one.
# Prefixes the panel's own actors use (``backend:<subject>``, ``guest:<id>``, ``res:<id>``): panel/calls.
RESERVED_PREFIXES = _RESERVED_PREFIXES
MAX_LIVE_TOKENS = 10_000  # issued tokens; installer login sessions are counted apart (MAX_INSTALLER_SESSIONS)
# Installer sessions live outside the token cap, so no issuer can lock the installer out; at this many the
# oldest session gives way to a new login rather than refusing it.
MAX_INSTALLER_SESSIONS = 32
REMEMBER_REVOKED_S = 3600.0  # a revoked token is remembered this long, to say "revoked" rather than "invalid"


@dataclass(frozen=True)
class Principal:
    token_id: str  # public handle: safe to log and to name in a revocation
    kind: Kind
    role: Role
    subject: str
    issued_by: str
    created: float
    expires: float | None
    name: str | None = None
    unit_id: str | None = None
    call_guid: str | None = None
    generation: int | None = None  # installer sessions: the password generation they were opened with
    device: str | None = None  # a resident's sign-in by link: the browser and system, e.g. "Chrome on Android"

    @property
    def actor(self) -> str:
        """How this caller is named in the access log, the call log and the events."""
        if self.role == "installer":
            return "installer-token" if self.kind == "static" else "installer"
        if self.role == "backend":
            return f"backend:{self.subject}"
        return self.subject

    def describe(self) -> str:
        return f"{self.kind} {self.token_id} ({self.role} {self.subject})"


class AuthError(ApiError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message,
                         headers={"WWW-Authenticate": f'Bearer realm="panel", error="{_www_error(code)}"'})


def _www_error(code: str) -> str:
    return "invalid_request" if code == "unauthenticated" else "invalid_token"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class _Entry:
    principal: Principal
    revoked: float | None = None


class TokenStore:
    """Sessions and issued tokens: in memory for checking, in the store for surviving restarts."""

    def __init__(self, store: Store, now: Callable[[], float] = time.time, per_issuer: int = MAX_LIVE_TOKENS) -> None:
        self.store = store
        self.now = now
        self.per_issuer = per_issuer  # api.tokens_per_issuer
        self._by_digest: dict[str, _Entry] = {}
        self._by_id: dict[str, str] = {}
        self._listeners: list[Callable[[Principal], None]] = []

    def load(self) -> None:
        """Read the live credentials (once, at start)."""
        now = self.now()

        def q(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute("SELECT * FROM api_tokens WHERE revoked IS NULL AND expires > ?", (now,)).fetchall()

        for row in self.store.read_sync(q):
            p = Principal(token_id=row["id"], kind=row["kind"], role=row["role"], subject=row["subject"],
                          issued_by=row["issued_by"], created=row["created"], expires=row["expires"], name=row["name"],
                          unit_id=row["unit_id"], call_guid=row["call_guid"], generation=row["generation"],
                          device=row["device"])
            self._by_digest[row["digest"]] = _Entry(p)
            self._by_id[p.token_id] = row["digest"]

    def on_revoke(self, fn: Callable[[Principal], None]) -> Callable[[], None]:
        """``fn`` runs (on the loop) for every revoked credential, e.g. to end its open streams."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def live_count(self, *, kind: Kind | None = None, issued_by: str | None = None) -> int:
        now = self.now()
        return sum(1 for e in self._by_digest.values() if e.revoked is None and (e.principal.expires or 0) > now
                   and (kind is None or e.principal.kind == kind)
                   and (issued_by is None or e.principal.issued_by == issued_by))

    async def issue(self, *, kind: Kind, role: Role, subject: str, issued_by: str, ttl_s: float,
                    name: str | None = None, unit_id: str | None = None, call_guid: str | None = None,
                    generation: int | None = None, device: str | None = None) -> tuple[str, Principal]:
        self._forget_old()
        if kind == "session":
            await self._make_room_for_session()
        elif self.live_count(kind="token") >= MAX_LIVE_TOKENS:
            raise ApiError("too_many_tokens", f"{MAX_LIVE_TOKENS} credentials are live; revoke some "
                           "(DELETE /api/v1/auth/tokens/{id}) or let them expire")
        elif self.live_count(kind="token", issued_by=issued_by) >= self.per_issuer:
            raise ApiError("issuer_quota_reached", f"{issued_by} holds {self.per_issuer} live credentials, the most "
                           "one issuer may (api.tokens_per_issuer); revoke some (DELETE /api/v1/auth/tokens/{id}) "
                           "or let them expire")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.now()
        p = Principal(token_id=secrets.token_hex(8), kind=kind, role=role, subject=subject, issued_by=issued_by,
                      created=now, expires=now + ttl_s, name=name, unit_id=unit_id, call_guid=call_guid,
                      generation=generation, device=device)
        d = digest(secret)

        def write(tx: Tx) -> None:
            tx.execute("INSERT INTO api_tokens(id, digest, kind, role, subject, name, unit_id, call_guid, issued_by,"
                       " created, expires, generation, device) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (p.token_id, d, kind, role, subject, name, unit_id, call_guid, issued_by, now, p.expires,
                        generation, device))
            # Expired and long-revoked rows are of no use to anyone: trim them as we go.
            tx.execute("DELETE FROM api_tokens WHERE expires < ? OR revoked < ?", (now - 86_400, now - 86_400))

        await self.store.write(write)
        self._by_digest[d] = _Entry(p)
        self._by_id[p.token_id] = d
        return secret, p

    async def _make_room_for_session(self) -> None:
        sessions = [p for p in self.list() if p.kind == "session"]
        if len(sessions) >= MAX_INSTALLER_SESSIONS:
            oldest = sessions[: len(sessions) - MAX_INSTALLER_SESSIONS + 1]
            log.info("%d installer sessions are open: the oldest gives way to a new login", len(sessions))
            await self.revoke([p.token_id for p in oldest])

    def lookup(self, secret: str) -> Principal:
        """The principal for a presented secret, or AuthError saying precisely why not."""
        entry = self._by_digest.get(digest(secret))
        if entry is None:
            raise AuthError("invalid_token", "the credential is not valid on this panel; log in again or ask for a "
                            "new token")
        p = entry.principal
        if entry.revoked is not None:
            raise AuthError("token_revoked", f"the {p.kind} {p.token_id} was revoked; log in again or ask for a new "
                            "token")
        if p.expires is not None and self.now() >= p.expires:
            raise AuthError("token_expired", f"the {p.kind} {p.token_id} expired; log in again or ask for a new token")
        return p

    def get(self, token_id: str) -> Principal | None:
        d = self._by_id.get(token_id)
        entry = self._by_digest.get(d) if d is not None else None
        if entry is None or entry.revoked is not None:
            return None
        return entry.principal

    def is_live(self, p: Principal) -> bool:
        if p.kind == "static":
            return True
        current = self.get(p.token_id)
        return current is not None and (current.expires is None or self.now() < current.expires)

    def list(self, *, roles: frozenset[Role] | None = None, subject: str | None = None) -> list[Principal]:
        now = self.now()
        out = [e.principal for e in self._by_digest.values()
               if e.revoked is None and (e.principal.expires or 0) > now
               and (roles is None or e.principal.role in roles) and (subject is None or e.principal.subject == subject)]
        return sorted(out, key=lambda p: p.created)

    # builtins.list: inside this class ``list`` is the method above
    async def revoke(self, token_ids: builtins.list[str]) -> builtins.list[Principal]:
        """Revoke now (in memory first, so the very next request is refused), then on disk."""
        now = self.now()
        done: builtins.list[Principal] = []
        for token_id in token_ids:
            d = self._by_id.get(token_id)
            entry = self._by_digest.get(d) if d is not None else None
            if entry is None or entry.revoked is not None:
                continue
            entry.revoked = now
            done.append(entry.principal)
        for p in done:
            for fn in list(self._listeners):
                try:
                    fn(p)
                except Exception:
                    log.exception("revocation listener failed")
        if done:
            ids = [p.token_id for p in done]
            await self.store.write(lambda tx: tx.execute(
                f"UPDATE api_tokens SET revoked=? WHERE id IN ({','.join('?' * len(ids))})", (now, *ids)))
            for p in done:
                log.info("credential revoked", extra={"token_id": p.token_id, "role": p.role, "subject": p.subject})
        return done

    # -- the directory's view (panel/directory Credentials): a resident's devices are their sessions ------
    async def issue_resident(self, *, subject: str, name: str, unit_id: str, device: str, ttl_s: float,
                             issued_by: str) -> tuple[str, Principal]:
        return await self.issue(kind="token", role="resident", subject=subject, issued_by=issued_by, ttl_s=ttl_s,
                                name=name, unit_id=unit_id, device=device)

    def sessions_of(self, subject: str) -> builtins.list[Principal]:
        return self.list(roles=frozenset({"resident"}), subject=subject)

    async def revoke_ids(self, token_ids: builtins.list[str]) -> int:
        return len(await self.revoke(token_ids))

    async def rename_subject(self, subject: str, name: str) -> None:
        """A resident renamed: their live credentials carry the new name (pages show it at once)."""
        await self.store.write(lambda tx: tx.execute("UPDATE api_tokens SET name=? WHERE subject=? AND role=?",
                                                     (name, subject, "resident")))
        for entry in self._by_digest.values():
            p = entry.principal
            if p.subject == subject and p.role == "resident":
                entry.principal = dataclasses.replace(p, name=name)

    def _forget_old(self) -> None:
        now = self.now()
        for d, entry in list(self._by_digest.items()):
            ended = entry.revoked if entry.revoked is not None else entry.principal.expires
            if ended is not None and now - ended > REMEMBER_REVOKED_S:
                del self._by_digest[d]
                self._by_id.pop(entry.principal.token_id, None)


def announce_initial_password(password: str | None, cred: InstallerCredential) -> None:
    """Tell the installer a password was generated: on the terminal (if any) the password itself, in
    the log only where to read it (journald keeps logs for months; the log never holds a secret)."""
    if password is None:
        return
    if sys.stderr.isatty():
        print(f"\n  Installer password for this panel: {password}\n  (shown once; change it after the first "
              "login)\n", file=sys.stderr, flush=True)
    log.warning("no installer password was set: a unique one was generated. Read it with `panel credentials "
                "show-initial --config <config file>` (works until it is first used) and change it after the "
                "first login", extra={"file": str(cred.initial_path)})


class ApiAuth:
    """Everything the API needs to tell who is calling: installer password, tokens, throttles."""

    def __init__(self, panel: Panel) -> None:
        api = panel.cfg.api
        self.panel = panel
        self.installer = InstallerCredential(panel.cfg.storage.dir)
        self.static_token: str | None = panel.secrets.installer_token
        # expiry on the panel's clock
        self.tokens = TokenStore(panel.store, now=panel.clock.wall, per_issuer=api.tokens_per_issuer)
        self.tokens.load()
        self.session_ttl_s = api.session_ttl_s
        self.login = LoginThrottle(api.login_backoff_s, api.login_lockout_after)
        self.mutations = RateLimiter(api.mutations_per_minute, now=panel.clock.monotonic)
        # scrypt costs 16 MiB and tens of ms: two checks at a time bound both, whatever arrives.
        self.hashing = asyncio.Semaphore(2)
        self._generation: tuple[float, int, int] | None = None  # (checked at, file mtime_ns, generation)
        self._announce(self.installer.ensure())
        config = getattr(panel, "config", None)
        if config is not None:
            config.subscribe(("api",), self.reconfigure, "API sessions and limits")

    def reconfigure(self, cfg: Config) -> None:
        """Live api.* keys: new sessions get the new lifetime; the throttles keep their per-address
        counts and apply the new rates from the next request."""
        api = cfg.api
        self.session_ttl_s = api.session_ttl_s
        self.tokens.per_issuer = api.tokens_per_issuer
        self.login.base_s, self.login.lockout_after = api.login_backoff_s, api.login_lockout_after
        self.mutations.rate = api.mutations_per_minute / 60.0
        self.mutations.burst = float(max(5, api.mutations_per_minute // 4))

    @classmethod
    def for_panel(cls, panel: Panel) -> ApiAuth:
        """One per panel, however many apps are made for it (tests make several)."""
        if panel.api_auth is None:
            panel.api_auth = auth = cls(panel)
            # A revoked answerer's credential ends the call it answered (docs/calls.md).
            auth.tokens.on_revoke(lambda p: panel.call_service.credential_revoked(p.token_id))
            panel.directory.attach(auth.tokens)  # residents' sign-ins issue and revoke credentials here
        return panel.api_auth

    def _announce(self, password: str | None) -> None:
        announce_initial_password(password, self.installer)

    # -- checking a request ------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Principal | None:
        """None if no credential was sent; the principal; or AuthError."""
        if not authorization:
            return None
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthError("unauthenticated", "send Authorization: Bearer <token>; get a token with POST "
                            "/api/v1/auth/login")
        if self.static_token is not None and hmac.compare_digest(secret.encode("utf-8", "surrogatepass"),
                                                                  self.static_token.encode()):
            return Principal(token_id="installer-token", kind="static", role="installer", subject="installer",
                             issued_by="secrets file", created=0.0, expires=None)
        p = self.tokens.lookup(secret)
        if p.kind == "session" and p.role == "installer" and p.generation != self.generation():
            raise AuthError("token_revoked", f"the session {p.token_id} was opened with a password that has since "
                            "changed; log in again")
        return p

    def generation(self) -> int:
        """The installer password's generation; re-read when its file changed (``panel credentials``
        may change it while the panel runs). A stat at most once a second."""
        now = time.monotonic()
        cached = self._generation
        if cached is not None and now - cached[0] < 1.0:
            return cached[2]
        try:
            mtime = os.stat(self.installer.path).st_mtime_ns
        except OSError:
            mtime = -1
        if cached is not None and cached[1] == mtime:
            self._generation = (now, mtime, cached[2])
            return cached[2]
        info = self.installer.info()
        gen = info.generation if info is not None else 0
        self._generation = (now, mtime, gen)
        return gen

    def set_generation(self, info: CredentialInfo) -> None:
        try:
            mtime = os.stat(self.installer.path).st_mtime_ns
        except OSError:
            mtime = -1
        self._generation = (time.monotonic(), mtime, info.generation)

    async def check_password(self, password: str) -> CredentialInfo | None:
        async with self.hashing:
            return await asyncio.to_thread(self.installer.verify, password)

    async def open_session(self, generation: int) -> tuple[str, Principal]:
        return await self.tokens.issue(kind="session", role="installer", subject="installer", issued_by="login",
                                       ttl_s=self.session_ttl_s, generation=generation)

