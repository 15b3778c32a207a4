"""The access service: decides whether a credential presented at the door may open it, and asks the door.

Every release by PIN, code, QR or card goes through ``AccessService.present`` and from there through
the door's one release API (``_release``: the only call into the door in this package), so the door's
own rules (journalled before the relay moves, tamper block, ``max_on_s``) hold for it as for any other
release. This service adds its own, in this order:

1. a source (the keypad, a reader, the camera) blocked after ``max_failures`` wrong credentials in a
   row refuses everything until ``block_s`` has passed (``access.blocked`` when it starts);
2. while the door's tamper block is active no credential is even looked at (nothing to learn by guessing);
3. the secret is looked up (constant time per credential, ``_codes.py``): unknown counts a failure;
4. a recognised credential must be inside its window, have uses left and be valid for this door;
5. the door releases; ``access.granted`` names the owner and the label, never the secret. A duress PIN
   releases exactly like its owner's PIN, plus a silent ``access.duress`` that only the backend sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ..door import Requester, UnlockRequest
from ..errors import AccessError, UnlockRefused
from ..events import (
    AccessBlocked,
    AccessDenied,
    AccessDenyReason,
    AccessDuress,
    AccessGranted,
    AccessMethod,
)
from ..platform import AccessConfig, Clock, Config, Journal, Tx
from ._codes import MAX_CARD_LENGTH, MAX_CODE_LENGTH, Credential, Credentials, Kind, normalise_card

if TYPE_CHECKING:
    from ..door import Door

log = logging.getLogger(__name__)

OutcomeKind = Literal["granted", "denied", "blocked"]
DEFAULT_LABELS: dict[Kind, str] = {"pin": "PIN", "duress": "PIN", "code": "code", "card": "card"}


@dataclass(frozen=True)
class Outcome:
    outcome: OutcomeKind
    reason: AccessDenyReason | None = None
    access_id: str | None = None
    owner: str | None = None
    label: str | None = None
    block_left_s: float | None = None  # blocked: how long the block still lasts
    source: str | None = None  # where the credential was presented (the reader answers its own)


@dataclass
class _Throttle:
    failures: int = 0
    blocked_until: float | None = None


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class AccessService:
    def __init__(self, cfg: Config, door: Door, journal: Journal, clock: Clock, creds: Credentials,
                 feedback: Callable[[Outcome], None] = lambda _o: None) -> None:
        self.cfg = cfg
        self.acfg: AccessConfig = cfg.access
        self.door = door
        self.journal = journal
        self.clock = clock
        self.creds = creds
        self.feedback = feedback
        self._throttle: dict[str, _Throttle] = {}
        self._learning: asyncio.Future[str] | None = None  # an installer waits for a card to enrol
        self.card_readers = 0  # set by whoever wires the readers (the daemon)

    # -- presenting ----------------------------------------------------------------------------------
    async def present(self, method: Literal["keypad", "qr", "card"], secret: str, *, source: str,
                      relay: str | None = None) -> Outcome:
        """A credential presented at the door: open it, or refuse and say why (journalled either way)."""
        relay_id = relay or self.door.main_relay
        shown: AccessMethod = "pin" if method == "keypad" else method  # refined once recognised
        th = self._throttle.setdefault(source, _Throttle())
        now = self.clock.monotonic()
        if th.blocked_until is not None:
            if now < th.blocked_until:
                return self._deny(shown, "blocked", source, relay_id, failures=th.failures)
            th.blocked_until, th.failures = None, 0
        if self.door.tamper_blocked or self.door.tamper_active:
            return self._deny(shown, "tamper_blocked", source, relay_id)
        if method == "card":
            secret = normalise_card(secret)
            cred = self.creds.find("card", secret) if 0 < len(secret) <= MAX_CARD_LENGTH else None
        elif len(secret) < self.acfg.min_code_length:
            return self._failed(shown, "too_short", source, relay_id, th)
        else:
            cred = self.creds.find("keypad", secret) if len(secret) <= MAX_CODE_LENGTH else None
        if cred is None:
            return self._failed(shown, "unknown_credential", source, relay_id, th)
        if method == "keypad":
            shown = "code" if cred.kind == "code" else "pin"
        elif method == "qr" and cred.kind != "code":
            # A QR carries a temporary code; a PIN held up to the camera is still only a PIN's digits.
            return self._failed(shown, "unknown_credential", source, relay_id, th)
        wall = self.clock.wall()
        reason: AccessDenyReason | None = None
        if cred.valid_from is not None and wall < cred.valid_from:
            reason = "not_yet_valid"
        elif cred.valid_until is not None and wall >= cred.valid_until:
            reason = "expired"
        elif cred.uses_left == 0:
            reason = "used_up"
        elif relay_id not in cred.doors:
            reason = "wrong_door"
        if reason is not None:
            # Not a guess, so not counted; but not a reset either: an expired code typed between guesses
            # must not let the guessing go on.
            return self._deny(shown, reason, source, relay_id, cred=cred, failures=th.failures)
        outcome = await self._grant(shown, cred, source, relay_id)
        if outcome.outcome == "granted":
            th.failures = 0
        return outcome

    async def card(self, number: str, *, source: str, relay: str | None = None) -> Outcome | None:
        """A card at a reader: enrolled if an installer is waiting to learn one, else presented."""
        if self._learning is not None and not self._learning.done():
            self._learning.set_result(number)
            return None
        return await self.present("card", number, source=source, relay=relay)

    async def learn_card(self, *, owner: str, label: str, by: str, timeout_s: float,
                         doors: list[str] | None = None) -> Credential:
        """Enrol the next card presented at a reader (the installer holds the resident's card to it)."""
        if not self.card_readers:
            raise AccessError("not_configured", "this panel has no card reader (access.osdp); enrol the card by "
                              "its number instead (POST /api/v1/access/cards)")
        if self._learning is not None and not self._learning.done():
            raise AccessError("learning_busy", "a card is being learnt already; present it, or wait for that "
                              "request to time out")
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._learning = fut
        try:
            number = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise AccessError("no_card", f"no card was presented at a reader within {timeout_s:g} s") from None
        finally:
            self._learning = None
        return await self.enrol_card(owner=owner, number=number, label=label, by=by, doors=doors)

    async def _grant(self, method: AccessMethod, cred: Credential, source: str, relay_id: str) -> Outcome:
        spent = self.creds.spend(cred) if cred.max_uses is not None else cred
        label = DEFAULT_LABELS["pin"] if cred.kind == "duress" else cred.label
        # A duress release must look like the PIN's wherever the panel shows it, the access log included.
        pins = self.creds.live(owner=cred.owner, kind="pin") if cred.kind == "duress" else []
        logged_id = pins[0].id if pins else cred.id

        def extra(tx: Tx, event_id: str) -> None:
            Credentials.write_use(tx, cred, event_id, label, logged_id)

        try:
            access_id = await self._release(method, cred.owner, relay_id, extra)
        except UnlockRefused as e:
            if spent is not cred:
                self.creds.unspend(cred)
            why: AccessDenyReason = "tamper_blocked" if e.code == "tamper_blocked" else "door_refused"
            return self._deny(method, why, source, relay_id, cred=cred)
        self.journal.record(AccessGranted(access_id=access_id, relay=relay_id, method=method, owner=cred.owner,
                                          label=label, source=source,
                                          uses_left=spent.uses_left if cred.kind != "duress" else None),
                            key="door")
        if cred.kind == "duress":
            self.journal.record(AccessDuress(access_id=access_id, relay=relay_id, owner=cred.owner, source=source),
                                key="door")
        outcome = Outcome("granted", access_id=access_id, owner=cred.owner, label=label, source=source)
        self._show(outcome)
        return outcome

    async def _release(self, method: AccessMethod, owner: str, relay_id: str,
                       extra: Callable[[Tx, str], None]) -> str:
        """The one call into the door from this package: the door service decides, like for every channel."""
        grant = await self.door.open(UnlockRequest(Requester.access(owner), method=method, relay=relay_id),
                                     extra=extra)
        return grant.info.access_id

    def _failed(self, method: AccessMethod, reason: AccessDenyReason, source: str, relay_id: str,
                th: _Throttle) -> Outcome:
        th.failures += 1
        out = self._deny(method, reason, source, relay_id, failures=th.failures,
                         show=th.failures < self.acfg.max_failures)
        if th.failures >= self.acfg.max_failures:
            th.blocked_until = self.clock.monotonic() + self.acfg.block_s
            log.warning("access source blocked", extra={"source": source, "failures": th.failures})
            self.journal.record(AccessBlocked(source=source, failures=th.failures, block_s=self.acfg.block_s,
                                              until=iso(self.clock.wall() + self.acfg.block_s)), key="door")
            blocked = Outcome("blocked", reason="blocked", block_left_s=self.acfg.block_s, source=source)
            self._show(blocked)
            return blocked
        return out

    def _deny(self, method: AccessMethod, reason: AccessDenyReason, source: str, relay_id: str | None, *,
              cred: Credential | None = None, failures: int = 0, show: bool = True) -> Outcome:
        label = None if cred is None else (DEFAULT_LABELS["pin"] if cred.kind == "duress" else cred.label)
        self.journal.record(AccessDenied(method=method, reason=reason, source=source, relay=relay_id,
                                         owner=cred.owner if cred else None, label=label, failures=failures),
                            key="door")
        out = Outcome("blocked" if reason == "blocked" else "denied", reason=reason,
                      owner=cred.owner if cred else None, label=label,
                      block_left_s=self.blocked(source) if reason == "blocked" else None, source=source)
        if show:
            self._show(out)
        return out

    def _show(self, outcome: Outcome) -> None:
        try:
            self.feedback(outcome)
        except Exception:  # a light or a speaker must never decide a door
            log.exception("access feedback failed")

    def blocked_sources(self) -> dict[str, float]:
        """Every blocked source with the seconds it stays blocked."""
        return {src: left for src in self._throttle if (left := self.blocked(src) or 0) > 0}

    def blocked(self, source: str) -> float | None:
        """Seconds the source stays blocked, or None."""
        th = self._throttle.get(source)
        if th is None or th.blocked_until is None:
            return None
        left = th.blocked_until - self.clock.monotonic()
        return round(left, 3) if left > 0 else None

    # -- managing ----------------------------------------------------------------------------------
    async def set_pin(self, *, owner: str, pin: str, by: str, duress: bool = False,
                      doors: list[str] | None = None) -> Credential:
        """A resident's PIN (or duress PIN); a new one replaces the old."""
        kind: Kind = "duress" if duress else "pin"
        self._check_code(pin, "pin")
        other = self.creds.live(owner=owner, kind="pin" if duress else "duress")
        if other and self.creds.digest("code", pin) == other[0].digest:
            raise AccessError("code_unavailable", "the duress PIN must differ from the PIN (and the other way "
                              "round); choose another")
        return await self.creds.add(kind=kind, owner=owner, label=DEFAULT_LABELS[kind], secret=pin,
                                    doors=self._doors(doors), valid_from=None, valid_until=None, max_uses=None,
                                    created=self.clock.wall(), created_by=by, replaces=kind)

    async def create_code(self, *, owner: str, by: str, label: str, code: str | None = None,
                          valid_from: float | None = None, valid_until: float | None = None,
                          max_uses: int | None = None, doors: list[str] | None = None) -> tuple[Credential, str]:
        """A temporary code (also shown as a QR); returns it with its secret, which is never readable again."""
        if code is None:
            code = self.creds.new_code(self.acfg.code_length)
        self._check_code(code, "code")
        if valid_from is not None and valid_until is not None and valid_until <= valid_from:
            raise AccessError("bad_window", f"valid_until ({iso(valid_until)}) is not after valid_from "
                              f"({iso(valid_from)}); a code's window must end after it starts")
        if valid_until is not None and valid_until <= self.clock.wall():
            raise AccessError("bad_window", f"valid_until ({iso(valid_until)}) is in the past; the code could "
                              "never be used")
        if max_uses is not None and not 1 <= max_uses <= 10_000:
            raise AccessError("bad_uses", f"max_uses {max_uses} is not allowed; expected 1 to 10000, or none "
                              "for no limit")
        cred = await self.creds.add(kind="code", owner=owner, label=label, secret=code, doors=self._doors(doors),
                                    valid_from=valid_from, valid_until=valid_until, max_uses=max_uses,
                                    created=self.clock.wall(), created_by=by)
        return cred, code

    async def enrol_card(self, *, owner: str, number: str, label: str, by: str,
                         doors: list[str] | None = None) -> Credential:
        card = normalise_card(number)
        if not 4 <= len(card) <= MAX_CARD_LENGTH:
            raise AccessError("bad_card", "the card number must have 4 to 64 hex digits (as the reader reports it)")
        return await self.creds.add(kind="card", owner=owner, label=label, secret=card, doors=self._doors(doors),
                                    valid_from=None, valid_until=None, max_uses=None, created=self.clock.wall(),
                                    created_by=by)

    async def revoke(self, cred_id: str, *, owner: str | None = None) -> Credential:
        """Revoke a credential; ``owner`` set: only one of theirs (a resident revoking their own)."""
        cred = self.creds.get(cred_id)
        if cred is not None and owner is not None and cred.owner != owner:
            cred = None  # the same answer as for none at all: ids of others are not confirmed
        if cred is None:
            raise AccessError("unknown_credential", f"there is no credential {cred_id!r} of yours")
        return await self.creds.revoke(cred_id, self.clock.wall())

    def _check_code(self, code: str, what: str) -> None:
        if not code.isascii() or not code.isdigit():
            raise AccessError("code_not_digits", f"{what}: only the digits 0-9 (a keypad has no other keys)")
        if len(code) < self.acfg.min_code_length:
            raise AccessError("code_too_short", f"{what}: {len(code)} digits is too short; at least "
                              f"{self.acfg.min_code_length} (access.min_code_length)")
        if len(code) > MAX_CODE_LENGTH:
            raise AccessError("code_too_long", f"{what}: at most {MAX_CODE_LENGTH} digits")

    def _doors(self, doors: list[str] | None) -> tuple[str, ...]:
        if not doors:
            return (self.door.main_relay,)
        unknown = [d for d in doors if d not in self.door.relays]
        if unknown:
            raise AccessError("unknown_door", f"doors: {', '.join(map(repr, unknown))} is not a relay of this "
                              f"panel; expected some of {', '.join(self.door.relays)}")
        return tuple(dict.fromkeys(doors))
