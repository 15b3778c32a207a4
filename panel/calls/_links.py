"""Call links: a signed, expiring, revocable link to one call, which lets someone preview it and join.

The life of a link (the call SDK's getCallLink / subscribeCall / joinCall / unsubscribeCall):

1. **Get.** During an answered call the resident who answered (or the backend, or the installer)
   asks for a link. It is ``cl1.<link id>.<call guid>.<expiry>.<mac>``: HMAC-SHA256 with a random key
   the panel makes once and keeps in its store, over the link id, the call and the expiry (wall
   clock, ``links.ttl_s``). The page URL carries it after ``#``, so it never reaches a server log.
2. **Subscribe.** The page sends the link (as a bearer credential) and a display name; it gets a
   subscription secret, the call and the participant list, and then long-polls the list.
3. **Join.** With the subscription the page sends a WebRTC offer; the media session manager answers it
   as a *participant* of that call (camera, entrance microphone, and its voice to the speaker).
4. **Leave** (or the page closes, or its connection drops): the guest leaves the list.

A link opens only while it is unexpired, unrevoked and its call is live; revoking it (``DELETE``)
ends its previews and its guests' sessions at once. A guest never answers, ends or opens anything:
the door stays with the resident who answered. The links and subscriptions live in memory; after a
restart there is no call, so nothing is left for them to open.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PanelError
from ..events import CallLinkCreated, CallLinkRevoked, Participant
from ..platform import Background, Config, LinksConfig
from ..platform import iso8601 as iso
from ._participants import NameRefused, Participants, clean_name

if TYPE_CHECKING:
    from ..platform import EventRow
    from ._service import Call

log = logging.getLogger(__name__)

PREFIX = "cl1"
KEY_KV = "call_link_key"
SUB_PREFIX = "cls_"
MAX_LINKS_PER_CALL = 32
MAX_TOKEN_LEN = 256
REMEMBER_ENDED = 512  # ended subscriptions remembered, to tell "the call ended" from "unknown"
_TOKEN_RE = re.compile(r"^cl1\.([0-9a-f]{12})\.([A-Za-z0-9-]{1,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{20,64})$")
CALL_END_STATES = frozenset({"ended", "declined", "canceled", "missed", "failed"})




class LinkRefused(PanelError):
    """A call-link request refused; ``code`` is stable (its HTTP status is in panel/errors.py), the message
    says what to do."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


@dataclass
class Link:
    id: str
    call_guid: str
    created: float
    expires: float
    created_by: str
    invited: str | None = None
    revoked: float | None = None
    revoked_by: str | None = None

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "call_guid": self.call_guid, "created_at": iso(self.created),
                "expires_at": iso(self.expires), "created_by": self.created_by, "invited": self.invited,
                "revoked": self.revoked is not None}


@dataclass
class Subscription:
    id: str  # the participant id others see once joined
    link: Link
    name: str
    last_seen: float
    session: Any = None  # the media SessionHandle while joined (media/service.py)
    joined: bool = False
    watchers: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def call_guid(self) -> str:
        return self.link.call_guid

    def participant(self) -> Participant:
        return Participant(id=self.id, name=self.name, kind="guest", via="link")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class CallLinks:
    def __init__(self, cfg: LinksConfig, calls: Any, journal: Any, participants: Participants,
                 media: Callable[[], Any], now: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.calls = calls
        self.journal = journal
        self.participants = participants
        self.media = media  # the running MediaService or None (media may start late or not at all)
        self.now = now
        self.monotonic = monotonic
        self._key: bytes | None = None
        self._key_lock = asyncio.Lock()
        self.links: dict[str, Link] = {}
        self._subs: dict[str, Subscription] = {}  # digest of the subscription secret -> subscription
        self._ended: OrderedDict[str, tuple[str, str]] = OrderedDict()  # digest -> (code, message)
        self._unsubscribe = journal.subscribe(self.on_event)
        self._closers = Background("call links")  # guests' sessions, closed without holding up the caller


    def reconfigure(self, cfg: Config) -> None:
        """Take changed live keys (links.ttl_s, max_participants, max_previews, idle_s): new links,
        joins and previews follow them; a link already handed out keeps its expiry."""
        self.cfg = cfg.links

    # -- the signing key -------------------------------------------------------------------------------
    async def key(self) -> bytes:
        if self._key is not None:
            return self._key
        async with self._key_lock:
            if self._key is None:
                self._key = await self.journal.store.secret_key(KEY_KV)
        return self._key

    def _mac(self, key: bytes, link_id: str, guid: str, exp: int) -> str:
        import base64

        digest = hmac.new(key, f"call-link:{link_id}:{guid}:{exp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    # -- getting a link ----------------------------------------------------------------------------------
    def _live_answered(self, guid: str) -> Call:
        call = self.calls.current
        if call is None or call.guid != guid:
            known = self.calls.get(guid)
            if known is not None:
                raise LinkRefused("call_over", f"call {guid} is over ({known.state}); links are for a call in "
                                  "progress")
            raise LinkRefused("unknown_call", f"there is no call {guid!r} in progress on this panel")
        if not call.answered:
            raise LinkRefused("not_answered", f"call {guid} is {call.state}; answer it before sharing a link")
        return call  # type: ignore[no-any-return]

    async def create(self, guid: str, by: str, invited: str | None = None) -> tuple[str, Link]:
        if not self.cfg.enabled:
            raise LinkRefused("links_disabled", "call links are off on this panel (links.enabled)")
        self._live_answered(guid)
        key = await self.key()
        self._live_answered(guid)  # the call may have ended while the key was read
        live = [lk for lk in self.links.values() if lk.call_guid == guid and lk.revoked is None]
        if len(live) >= MAX_LINKS_PER_CALL:
            raise LinkRefused("too_many_links", f"call {guid} has {len(live)} live links, the most allowed; "
                              "revoke one (DELETE /api/v1/calls/{guid}/links/{link_id})")
        now = self.now()
        link = Link(id=secrets.token_hex(6), call_guid=guid, created=now, expires=int(now + self.cfg.ttl_s),
                    created_by=by, invited=invited)
        exp = int(link.expires)
        token = f"{PREFIX}.{link.id}.{guid}.{exp}.{self._mac(key, link.id, guid, exp)}"
        self.links[link.id] = link
        await self.journal.record(CallLinkCreated(guid=guid, link_id=link.id, by=by, expires_at=iso(link.expires),
                                                  invited=invited), key=guid)
        log.info("call link %s for call %s by %s", link.id, guid, by,
                 extra={"call": guid, "link_id": link.id, "by": by})
        return token, link

    def url(self, token: str) -> str:
        return f"{self.cfg.base_url or ''}/link#{token}"

    def list(self, guid: str) -> list[Link]:
        return [lk for lk in self.links.values() if lk.call_guid == guid]

    async def revoke(self, guid: str, link_id: str, by: str) -> Link:
        link = self.links.get(link_id)
        if link is None or link.call_guid != guid:
            raise LinkRefused("unknown_link", f"call {guid} has no link {link_id!r}")
        if link.revoked is not None:
            return link
        link.revoked, link.revoked_by = self.now(), by
        # In memory first: the very next request with the link, or with one of its previews, is refused.
        for digest, sub in list(self._subs.items()):
            if sub.link is link:
                self._end(digest, sub, "link_revoked", "link_revoked",
                          f"the call link {link.id} was revoked by {by}")
        await self.journal.record(CallLinkRevoked(guid=guid, link_id=link.id, by=by), key=guid)
        log.info("call link %s revoked by %s", link.id, by, extra={"call": guid, "link_id": link.id})
        return link

    # -- opening a link ----------------------------------------------------------------------------------
    async def verify(self, token: str | None) -> Link:
        """The link ``token`` stands for, if it may be used now; else LinkRefused saying why not."""
        m = _TOKEN_RE.match(token or "") if token and len(token) <= MAX_TOKEN_LEN else None
        if m is None:
            raise LinkRefused("invalid_link", "this is not a call link of this panel; ask the resident for a "
                              "new link")
        link_id, guid, exp = m.group(1), m.group(2), int(m.group(3))
        if not hmac.compare_digest(self._mac(await self.key(), link_id, guid, exp), m.group(4)):
            raise LinkRefused("invalid_link", "the call link is damaged or not from this panel; ask the resident "
                              "for a new link")
        link = self.links.get(link_id)
        call = self.calls.current
        if link is None or link.call_guid != guid:
            if call is None or call.guid != guid or not call.live:
                raise LinkRefused("call_over", "the call this link was for is over")
            raise LinkRefused("invalid_link", "the panel no longer knows this link; ask for a new one")
        if link.revoked is not None:
            raise LinkRefused("link_revoked", "this call link was revoked; ask the resident for a new one")
        if self.now() >= link.expires:
            raise LinkRefused("link_expired", f"this call link expired at {iso(link.expires)}; ask the resident "
                              "for a new one")
        if call is None or call.guid != guid or not call.live:
            raise LinkRefused("call_over", "the call this link was for is over")
        return link

    async def subscribe(self, token: str | None, name: Any) -> tuple[str, Subscription]:
        link = await self.verify(token)
        try:
            shown = clean_name(name)
        except NameRefused as e:
            raise LinkRefused("invalid_name", f"name: {e}") from None
        self.sweep()
        open_ = sum(1 for s in self._subs.values() if s.call_guid == link.call_guid)
        if open_ >= self.cfg.max_previews:
            raise LinkRefused("too_many_previews", f"{open_} previews of this call are open, the most allowed "
                              f"(links.max_previews); try again when one closes", retry_after_s=10)
        secret = SUB_PREFIX + secrets.token_urlsafe(24)
        sub = Subscription(id="p_" + secrets.token_urlsafe(6), link=link, name=shown, last_seen=self.monotonic())
        self._subs[_digest(secret)] = sub
        log.info("call %s: preview %s opened through link %s", link.call_guid, sub.id, link.id,
                 extra={"call": link.call_guid, "participant": sub.id, "link_id": link.id})
        return secret, sub

    def subscription(self, secret: str | None) -> Subscription:
        """The live subscription of ``secret`` (and it is seen now), or LinkRefused."""
        if not secret or not secret.startswith(SUB_PREFIX) or len(secret) > MAX_TOKEN_LEN:
            raise LinkRefused("invalid_subscription", "send the subscription from POST /api/v1/link/subscribe as "
                              "Authorization: Bearer <subscription>")
        digest = _digest(secret)
        sub = self._open_sub(digest, "this preview is not open (it was closed, or the panel restarted); open the "
                             "link again")
        link = sub.link
        if link.revoked is not None:  # ended by revoke() already; kept for safety
            raise LinkRefused("link_revoked", "this call link was revoked")
        if not self.participants.live(sub.call_guid):
            self._end(digest, sub, "call_ended", "call_over", "the call is over")
            raise LinkRefused("call_over", "the call is over")
        sub.last_seen = self.monotonic()
        return sub

    def _end(self, digest: str, sub: Subscription, reason: str, code: str, message: str) -> None:
        """Close a subscription: out of the call (if it had joined), its session ended, remembered as ended."""
        self._subs.pop(digest, None)
        self._ended[digest] = (code, message)
        while len(self._ended) > REMEMBER_ENDED:
            self._ended.popitem(last=False)
        self._drop(sub, reason)

    def _drop(self, sub: Subscription, reason: str) -> None:
        if sub.joined:
            sub.joined = False
            self.participants.leave(sub.call_guid, sub.id, reason)
        session, sub.session = sub.session, None
        media = self.media()
        if session is not None and media is not None:
            media.end_session_soon(session.id, reason)

    def sweep(self) -> None:
        """Drop previews whose page stopped asking (closed without saying so) and has no live session."""
        limit = self.monotonic() - self.cfg.idle_s
        media = self.media()
        for digest, sub in list(self._subs.items()):
            if sub.last_seen < limit and (sub.session is None or media is None
                                          or media.session_info(sub.session.id) is None):
                self._end(digest, sub, "page_closed", "invalid_subscription",
                          "this preview was idle too long and was closed; open the link again")

    # -- joining and leaving -----------------------------------------------------------------------------
    async def join(self, secret: str | None, offer: str) -> tuple[Subscription, Any]:
        sub = self.subscription(secret)
        if sub.joined:
            raise LinkRefused("already_joined", "this preview has joined the call already; leave first")
        if self.now() >= sub.link.expires:
            raise LinkRefused("link_expired", f"this call link expired at {iso(sub.link.expires)}; ask the "
                              "resident for a new one")
        if self.participants.guests(sub.call_guid) >= self.cfg.max_participants:
            raise LinkRefused("too_many_participants", f"{self.cfg.max_participants} people have joined this "
                              "call through links, the most allowed (links.max_participants); try again when someone "
                              "leaves")
        media = self.media()
        if media is None:
            raise LinkRefused("media_unavailable", "media is not running on this panel, so nobody can join a "
                              "call from a browser", retry_after_s=60)
        from ..media.errors import SessionRefused

        sub.joined = True  # held while negotiating, so a second join of the same preview is refused
        try:
            session = await media.join_as_guest(offer, call_guid=sub.call_guid, participant_id=sub.id,
                                                link_id=sub.link.id)
        except SessionRefused as e:
            sub.joined = False
            raise LinkRefused(e.code, str(e), e.retry_after_s) from None
        except BaseException:
            sub.joined = False
            raise
        if _digest(secret or "") not in self._subs:  # revoked or ended while negotiating
            sub.joined = False
            await media.end_session(session.id, "link_revoked")
            raise LinkRefused("call_over", "the call ended or the link was revoked while joining")
        sub.session = session
        self.participants.join(sub.call_guid, sub.participant(), sub.link.id)
        task = asyncio.ensure_future(self._watch(sub, session, media))
        sub.watchers.add(task)
        task.add_done_callback(sub.watchers.discard)
        return sub, session

    async def _watch(self, sub: Subscription, session: Any, media: Any) -> None:
        """A guest whose session ends (connection lost, page gone) is out of the call."""
        await media.wait_closed(session.id)
        if sub.session is session:
            sub.session = None
            if sub.joined:
                sub.joined = False
                self.participants.leave(sub.call_guid, sub.id, "session_ended")

    def _open_sub(self, digest: str, not_open: str) -> Subscription:
        """The open subscription of ``digest``; one that ended says how (call over, revoked), else not open."""
        sub = self._subs.get(digest)
        if sub is None:
            ended = self._ended.get(digest)
            if ended is not None:
                raise LinkRefused(*ended)
            raise LinkRefused("invalid_subscription", not_open)
        return sub

    async def leave(self, secret: str | None, reason: str = "left") -> Subscription:
        """Unsubscribe: out of the call if joined, the session ended, the preview closed."""
        if not secret or not secret.startswith(SUB_PREFIX):
            raise LinkRefused("invalid_subscription", "send the subscription as Authorization: Bearer")
        digest = _digest(secret)
        sub = self._open_sub(digest, "this preview is not open")
        session = sub.session
        media = self.media()
        self._end(digest, sub, reason, "invalid_subscription", "this preview was closed (left)")
        if session is not None and media is not None:
            await media.wait_closed(session.id)
        return sub

    # -- the call ends -------------------------------------------------------------------------------------
    def on_event(self, row: EventRow) -> None:
        if row.type != "call.status_updated" or row.data.get("status") not in CALL_END_STATES:
            return
        guid = str(row.data.get("guid"))
        for digest, sub in list(self._subs.items()):
            if sub.call_guid == guid:
                self._end(digest, sub, "call_ended", "call_over", "the call is over")
        for link_id, link in list(self.links.items()):
            if link.call_guid == guid:
                del self.links[link_id]  # a token for it now says call_over

    def close(self) -> None:
        self._unsubscribe()
