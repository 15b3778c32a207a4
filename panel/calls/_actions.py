"""The one way to act on a call: answer, decline, end, mute and invite, with who may do which.

The HTTP routes (panel/api/calls.py, panel/api/links.py) and the MQTT control (panel/link/_control.py)
only translate their caller into an ``Actor`` and call this service; the rules live here:

- installer and backend act on any call and may name the resident acting (``who``);
- a resident acts as themself, answers and declines calls of their scope, and ends, mutes and invites
  into only the call they answered;
- a guest (an invited credential, role ``guest``) views and talks in its one call and does nothing
  else here: every command of this service refuses it with ``not_allowed_for_role``;
- viewers only look.

An answer made with an expiring, revocable credential is tied to it: when that credential is revoked
(``credential_revoked``) or expires (a timer through the clock seam) the call ends as a hang-up by the
answerer would, with reason ``credential_revoked`` / ``credential_expired`` (docs/calls.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import CallError
from ..events import CallInvited, CallMuted

if TYPE_CHECKING:
    from ._links import CallLinks, Link
    from ._service import Call, CallManager

log = logging.getLogger(__name__)

ActorKind = Literal["installer", "backend", "resident", "viewer", "guest"]
MuteKind = Literal["audio", "video"]
UNSCOPED: frozenset[str] = frozenset({"installer", "backend"})
# Names a credential must not be minted for: the panel's own actors use them (logs, events, lists).
RESERVED_PREFIXES = ("backend:", "installer:", "guest:", "res:")
# Names the panel's own actors use: no credential may be issued for, or invite, one of them.
RESERVED_SUBJECTS = frozenset({"installer", "installer-token", "panel", "visitor", "backend", "exit_button",
                               "homeassistant", "sim"})
# A guest credential is minted by a callable the API supplies: (subject, name, call guid, issued by,
# lifetime in s) -> (secret, credential id). The calls package never imports the API.
GuestIssuer = Callable[[str, "str | None", str, str, float], Awaitable[tuple[str, str]]]


@dataclass(frozen=True)
class Actor:
    """Who is acting, as the service needs to know it (the API's principal, the MQTT backend)."""

    kind: ActorKind
    name: str  # how logs and events name the caller (installer-token, backend:crm, alice)
    subject: str  # the person or system; residents act as this
    unit_id: str | None = None
    call_guid: str | None = None  # a credential for one call
    credential_id: str | None = None  # revocable credential the caller used, if any
    expires_in_s: float | None = None  # the credential's time left (from the issuer's clock); None: never

    @property
    def unscoped(self) -> bool:
        return self.kind in UNSCOPED

    def covers(self, call: Call) -> bool:
        if self.unscoped:
            return True
        if self.call_guid is not None and self.call_guid != call.guid:
            return False
        if self.unit_id is not None and self.unit_id != call.unit_id:
            return False
        return self.call_guid is not None or self.unit_id is not None


BACKEND = Actor(kind="backend", name="backend", subject="backend")


@dataclass(frozen=True)
class MuteState:
    call_guid: str
    muted: dict[str, bool]
    media: bool  # a media session applied it (False: recorded only, no media running or no session)


@dataclass(frozen=True)
class Invitation:
    token: str  # the guest credential (shown once)
    token_id: str
    link_token: str
    link: Link
    url: str


class CallService:
    """One per panel, built by the composition root and shared by the API and the MQTT control."""

    def __init__(self, calls: CallManager, media: Callable[[], Any], *, links: CallLinks | None = None,
                 reserved_subjects: Collection[str] = RESERVED_SUBJECTS) -> None:
        self.calls = calls
        self.media = media  # the running MediaService or None
        self.reserved_subjects = frozenset(s.lower() for s in reserved_subjects)
        self.links = links

    # -- rules ------------------------------------------------------------------------------------------
    def _acting(self, actor: Actor, who: str | None) -> str:
        if actor.unscoped:
            return who or actor.name
        if who is not None and who != actor.subject:
            raise CallError("acting_as_other", f"who: a {actor.kind} acts as themself ({actor.subject}); omit who")
        return actor.subject

    def _only(self, actor: Actor, kinds: tuple[ActorKind, ...], what: str) -> None:
        if not actor.unscoped and actor.kind not in kinds:
            raise CallError("not_allowed_for_role", f"a {actor.kind} credential may not {what}"
                            + ("; a guest views and talks in the call it was invited into, nothing more"
                               if actor.kind == "guest" else ""))

    def _target(self, actor: Actor, guid: str | None) -> Call | None:
        """The call named (or in progress), checked against the caller's scope before anything moves.
        Unknown and finished calls fall through to the CallManager, which says precisely why."""
        call = self.calls.current if guid is None else self.calls.get(guid)
        if call is not None and not actor.covers(call):
            raise CallError("not_your_call", f"call {call.guid} rings unit {call.unit_id}, which your credential "
                            f"{actor.credential_id or actor.name} does not cover")
        return call

    def _answerer_only(self, actor: Actor, call: Call) -> None:
        if actor.unscoped:
            return
        if call.answered_by != actor.subject:
            who = f"answered by {call.answered_by}" if call.answered_by else "not answered"
            raise CallError("not_your_call", f"call {call.guid} is {who}; only the resident who answered it may "
                            "do this")

    # -- commands ---------------------------------------------------------------------------------------
    async def answer(self, actor: Actor, guid: str | None, who: str | None = None) -> Call:
        self._only(actor, ("resident",), "answer a call")
        target = self._target(actor, guid)
        name = self._acting(actor, who)
        call = await self.calls.answer(target.guid if target is not None else guid, name)
        if call.answered_by == name and not actor.unscoped:
            self._tie_to(actor, call)
        return call

    async def decline(self, actor: Actor, guid: str | None, who: str | None = None) -> Call:
        self._only(actor, ("resident",), "decline a call")
        target = self._target(actor, guid)
        return await self.calls.decline(target.guid if target is not None else guid, self._acting(actor, who))

    async def end(self, actor: Actor, guid: str | None, who: str | None = None, reason: str = "hangup") -> Call:
        self._only(actor, ("resident",), "end a call")
        target = self._target(actor, guid)
        if target is not None:
            self._answerer_only(actor, target)
        return await self.calls.end(target.guid if target is not None else guid, self._acting(actor, who), reason)

    async def mute(self, actor: Actor, guid: str | None, *, audio: bool | None = None,
                   video: bool | None = None) -> MuteState:
        """What the panel sends muted in a live call; the media layer applies it to every session of the call."""
        self._only(actor, ("resident",), "mute a call")
        if audio is None and video is None:
            raise CallError("invalid_mute", "give audio and/or video (true mutes, false unmutes)")
        call = await self._live(actor, guid)
        self._answerer_only(actor, call)
        media = self.media()
        applied = False
        changes: list[tuple[MuteKind, bool | None]] = [("audio", audio), ("video", video)]
        for kind, value in changes:
            if value is None:
                continue
            self.calls.set_muted(call.guid, kind, value)
            if media is not None:
                applied = media.set_call_mute(call.guid, kind, value) > 0 or applied
        muted = self.calls.muted(call.guid)
        # Journalled: the backend hears of it (webhook, MQTT event) and the retained MQTT call state is
        # republished with the new ``muted``.
        await self.calls.journal.record(CallMuted(guid=call.guid, muted=muted, by=actor.name, media=applied),
                                        key=call.guid)
        log.info("call %s: panel sends %s", call.guid, ", ".join(f"{k} {'muted' if v else 'on'}"
                                                                  for k, v in muted.items()),
                 extra={"call": call.guid, "muted": muted, "by": actor.name})
        return MuteState(call.guid, muted, applied)

    async def link_call(self, actor: Actor, guid: str) -> Call:
        """The call whose links ``actor`` may make, list or revoke: the resident who answered it, the backend
        or the installer. (Whether a link can be made now, CallLinks decides: live, answered, limits.)"""
        self._only(actor, ("resident",), "share or manage call links")
        call = self.calls.get(guid) or await self.calls.lookup(guid)
        if call is None:
            raise CallError("unknown_call", f"there is no call {guid!r} on this panel")
        if not actor.covers(call):
            raise CallError("not_your_call", f"call {call.guid} rings unit {call.unit_id}, which your credential "
                            f"{actor.credential_id or actor.name} does not cover")
        self._answerer_only(actor, call)
        return call

    async def invite(self, actor: Actor, guid: str, subject: str, name: str | None, *, issue: GuestIssuer) -> Invitation:
        """Invite someone into the answered call in progress: a guest credential for this call only (view and
        talk; never the door, never end, never links or invites) and a call link for the page."""
        self._only(actor, ("resident",), "invite anyone")
        call = await self._live(actor, guid)
        self._answerer_only(actor, call)
        self._check_invitee(call, subject)
        links = self._links()
        token, link = await links.create(call.guid, actor.name, invited=subject)
        ttl = max(60.0, link.expires - links.now())
        secret, token_id = await issue(subject, name, call.guid, actor.name, ttl)
        await self.calls.journal.record(CallInvited(guid=call.guid, subject=subject, name=name, by=actor.name,
                                                    token_id=token_id, link_id=link.id,
                                                    expires_at=link.info()["expires_at"]), key=call.guid)
        return Invitation(token=secret, token_id=token_id, link_token=token, link=link, url=links.url(token))

    def _check_invitee(self, call: Call, subject: str) -> None:
        low = subject.strip().lower()
        if low in self.reserved_subjects or any(low.startswith(p) for p in RESERVED_PREFIXES):
            raise CallError("reserved_subject", f"subject: {subject!r} is reserved for the panel's own use (names "
                            f"starting {', '.join(RESERVED_PREFIXES)} and {', '.join(sorted(self.reserved_subjects))})")
        present = {p.lower() for p in call.participants}
        if call.answered_by:
            present.add(call.answered_by.lower())
        links = self.links
        if links is not None:
            # Guests in the call: by display name, and by the subject their invite named.
            present |= {p.name.lower() for p in links.participants.list(call.guid)}
            joined = links.participants.guest_links(call.guid)
            present |= {lk.invited.lower() for lk in links.list(call.guid) if lk.invited and lk.id in joined}
        if low in present:
            raise CallError("invitee_in_call", f"subject: {subject!r} is already in call {call.guid}; an invite is "
                            "for someone who is not")

    async def _live(self, actor: Actor, guid: str | None) -> Call:
        target = self._target(actor, guid)
        if target is not None and not target.live:
            raise CallError("call_over", f"call {target.guid} is over ({target.state}, {target.reason}); nothing "
                            "changed")
        # The CallManager says precisely why not (no call, over, unknown) when there is no live call.
        return target if target is not None else await self.calls.live_call(guid)

    def _links(self) -> CallLinks:
        if self.links is None:
            raise CallError("links_unavailable", "call links are not set up on this panel")
        return self.links

    # -- the answerer's credential ------------------------------------------------------------------------
    def _tie_to(self, actor: Actor, call: Call) -> None:
        if actor.credential_id is not None:
            self.calls.tie_credential(call.guid, actor.credential_id, actor.expires_in_s)

    def credential_revoked(self, credential_id: str) -> None:
        """A credential was revoked (sync: the API's revocation listener). If the call in progress was
        answered with it, the call ends now."""
        self.calls.credential_revoked(credential_id)
