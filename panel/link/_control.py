"""Carries out the backend's commands: authenticate, check freshness and replay, act, reply.

Transport-free (panel/link/_mqtt.py feeds it payloads and publishes its replies), so the same
checks apply to every way a command can arrive. The order of the checks is fixed and documented in
docs/mqtt.md; the first that fails decides the reply's code. Until an ``open`` reaches
``Door.open`` nothing here suspends: the unlock waits only for its one durable commit, which also
records the spent command id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..calls import BACKEND, CallService
from ..door import Requester, UnlockRequest
from ..errors import AccessError, CallError, DirectoryError, UnlockRefused
from ..media.errors import SessionRefused
from ..platform import Config, iso8601
from ._commands import (
    REFUSALS,
    AccessCardCommand,
    AccessCodeCommand,
    AccessCommand,
    AccessListCommand,
    AccessPinCommand,
    AccessReply,
    AccessRevokeCommand,
    AnswerCommand,
    AnyCommand,
    CallReply,
    CommandRefused,
    DeclineCommand,
    DirectoryCommand,
    DirectoryListCommand,
    DirectoryReply,
    EndCommand,
    HangupCommand,
    HangupReply,
    OfferCommand,
    OfferReply,
    OpenCommand,
    OpenReply,
    PublishCommand,
    PublishReply,
    Reply,
    ResidentAddCommand,
    ResidentLinkCommand,
    ResidentRemoveCommand,
    ResidentRenameCommand,
    StatusReply,
    UpdateCommand,
    UpdateReply,
    best_effort_ids,
    decode,
    parse,
    verify,
)
from ._freshness import ClockSync, Nonces, check_fresh
from ._topics import (
    CallStateMsg,
    DoorStateMsg,
    FreshnessStateMsg,
    RelayStateMsg,
    TamperStateMsg,
)

if TYPE_CHECKING:
    from ..access import AccessService
    from ..auth import Secrets
    from ..calls import CallManager
    from ..directory import Directory, Resident
    from ..door import Door
    from ..media.service import MediaService
    from ..media.whip import Publishing
    from ..platform import Clock, Journal
    from ..update import UpdateAgent
    from ._replay import SeenCommands

log = logging.getLogger(__name__)


def _open_request(c: OpenCommand) -> UnlockRequest:
    """The MQTT open as the door's request: the backend asks, ``actor`` names on whose behalf."""
    return UnlockRequest(Requester.backend(), method="mqtt", relay=c.relay, call_guid=c.call_guid,
                         duration_s=c.duration_s, on_behalf_of=c.actor)


def _an_open(obj: Any, command: AnyCommand | None) -> bool:
    """A refused payload that meant to be an ``open`` (Sensorberg's open/true too), parsed or not."""
    if command is not None or not isinstance(obj, dict):
        return False
    return obj.get("cmd") == "open" or ("cmd" not in obj and obj.get("action") == "open")


# The media layer's refusal codes where the command channel has its own name for the same thing.
SESSION_CODES = {"invalid_sdp": "bad_sdp", "invalid_ice_servers": "bad_ice_servers"}
# How a hangup ends a session: the peer's side ended it (the answerer's call ends with it, "hangup").
HANGUP_REASON = "remote_end"


class Control:
    def __init__(self, *, cfg: Config, secrets: Secrets, door: Door, calls: CallManager | None, journal: Journal,
                 clock: Clock, clock_sync: ClockSync, seen: SeenCommands, nonces: Nonces,
                 media: Callable[[], MediaService | None] | None = None,
                 call_service: CallService | None = None,
                 access: Callable[[], AccessService | None] | None = None,
                 updates: Callable[[], UpdateAgent | None] | None = None,
                 directory: Directory | None = None,
                 publishing: Callable[[], Publishing | None] | None = None) -> None:
        self.cfg = cfg
        self.call_service = call_service
        self.mqtt = cfg.mqtt  # no mqtt key is live: identity and signing rules stay as started
        self.panel_id = cfg.panel.id
        self.secrets = secrets
        self.door = door
        self.calls = calls
        self.journal = journal
        self.clock = clock
        self.clock_sync = clock_sync
        self.seen = seen
        self.nonces = nonces
        # A getter: the media layer starts after the link is built, and may be absent.
        self.media = media or (lambda: None)
        self.access = access or (lambda: None)  # likewise: started after the link is built
        self.updates = updates or (lambda: None)  # likewise: the update agent starts last
        self.directory = directory
        self.publishing = publishing or (lambda: None)  # likewise: WHIP publishing starts with media

    # -- the backend's commands -------------------------------------------------------------------
    def reconfigure(self, cfg: Config) -> None:
        """Live keys changed (relay hold times, panel name): replies and state read the new config."""
        self.cfg = cfg

    async def execute(self, payload: bytes, *, retained: bool = False,
                      refusal: CommandRefused | None = None) -> Reply:
        """One command in, its reply out. ``refusal``: the transport already knows it must refuse."""
        obj: Any = None
        command: AnyCommand | None = None
        spent = False
        try:
            undecodable: CommandRefused | None = None
            try:
                obj = decode(payload)
            except CommandRefused as e:
                undecodable, obj = e, e.partial
            if refusal is not None:
                raise refusal
            if retained:
                raise CommandRefused("retained", "the command was published retained, so it may be any age; "
                                     "publish commands without the retain flag (and clear this one with an "
                                     "empty retained message)")
            if undecodable is not None:
                raise undecodable
            command = parse(obj)
            self._authenticate(obj)
            check_fresh(command.exp, command.nonce, synced=self.clock_sync.synchronized(), now=self.clock.wall(),
                        nonces=self.nonces, max_age_s=self.mqtt.command_max_age_s)
            self.seen.claim(command.id, command.exp, command.nonce)  # replayed, or below the expiry floor
            spent = True
            return await self._dispatch(command)
        except (CommandRefused, UnlockRefused, CallError, AccessError, DirectoryError) as e:
            return await self._refused(e, obj, command, spent)
        except Exception as e:  # the reply must still go out
            log.exception("command failed")
            return await self._refused(CommandRefused("internal_error", f"the panel could not carry the command "
                                                      f"out ({type(e).__name__}: {e}); see its log"),
                                       obj, command, spent)

    def _authenticate(self, obj: dict[str, Any]) -> None:
        key = self.secrets.command_key
        if "sig" in obj:
            if key is None:
                raise CommandRefused("cannot_verify", "the command is signed but this panel has no command_key; "
                                     "put command_key in its secrets file")
            if not verify(key, self.panel_id, obj):
                raise CommandRefused("bad_signature", "the signature does not verify; sign the canonical form "
                                     "(docs/mqtt.md, Signatures) with this panel's command_key and its id")
        elif self.mqtt.require_signed_commands:
            raise CommandRefused("unsigned", "this panel requires signed commands (mqtt.require_signed_commands); "
                                 "add sig")

    async def _dispatch(self, c: AnyCommand) -> Reply:
        if isinstance(c, OpenCommand):
            return await self._open(c)
        if c.cmd == "status":
            await self.seen.record(c.id, c.cmd, c.exp)
            return StatusReply(code="ok", message="panel state", id=c.id, cmd=c.cmd, state=self.state_topics())
        if isinstance(c, (AccessCodeCommand, AccessPinCommand, AccessCardCommand, AccessRevokeCommand,
                          AccessListCommand)):
            try:
                return await self._access(c)
            finally:
                await self.seen.record(c.id, c.cmd, c.exp)
        if isinstance(c, (ResidentAddCommand, ResidentRenameCommand, ResidentRemoveCommand, ResidentLinkCommand,
                          DirectoryListCommand)):
            try:
                return await self._directory(c)
            finally:
                await self.seen.record(c.id, c.cmd, c.exp)
        if isinstance(c, UpdateCommand):
            try:
                return self._update(c)
            finally:
                await self.seen.record(c.id, c.cmd, c.exp)
        if isinstance(c, PublishCommand):
            try:
                return self._publish(c)
            finally:
                await self.seen.record(c.id, c.cmd, c.exp)
        if isinstance(c, (OfferCommand, HangupCommand)):
            # The spent id's commit runs beside the session's setup instead of ahead of the reply.
            record = asyncio.ensure_future(self.seen.record(c.id, c.cmd, c.exp))
            try:
                return await (self._offer(c) if isinstance(c, OfferCommand) else self._hangup(c))
            finally:
                await record
        assert isinstance(c, (AnswerCommand, DeclineCommand, EndCommand))
        # The backend acts through the same CallService as the API; here the command is only translated.
        self._calls()
        service = self.call_service or CallService(self._calls(), self.media)
        try:
            if isinstance(c, AnswerCommand):
                call = await service.answer(BACKEND, c.call_guid, c.who)
                message = f"call {call.guid} answered by {call.answered_by}"
            elif isinstance(c, DeclineCommand):
                call = await service.decline(BACKEND, c.call_guid, c.who)
                message = f"call {call.guid} declined by {c.who}"
            else:
                call = await service.end(BACKEND, c.call_guid, c.who)
                message = f"call {call.guid} ended by {c.who}"
        finally:
            await self.seen.record(c.id, c.cmd, c.exp)
        return CallReply(code="ok", message=message, id=c.id, cmd=c.cmd, call=call.to_dict())

    async def _open(self, c: OpenCommand) -> OpenReply:
        # The door decides (which call, which relay, how long) and journals a refusal itself.
        grant = await self.door.open(_open_request(c), extra=self.seen.writer(c.id, c.cmd, c.exp))
        info = grant.info
        assert info.cause in ("call", "remote")  # what the door makes of the backend's release
        return OpenReply(code="ok", message=f"door released: relay {info.relay} for {grant.duration_s:g} s",
                         id=c.id, cmd=c.cmd, access_id=info.access_id, relay=info.relay,
                         duration_s=grant.duration_s, cause=info.cause, call_guid=info.call_guid)

    # -- doors without a call (panel/access): the backend manages PINs, codes and cards ---------------
    async def _access(self, c: AccessCommand) -> AccessReply:
        svc = self.access()
        if svc is None:
            raise CommandRefused("access_unavailable", "access is not running on this panel yet; retry shortly")
        by = "backend"
        if isinstance(c, AccessCodeCommand):
            from ..access import QR_PREFIX

            cred, code = await svc.create_code(owner=c.owner, by=by, label=c.label, code=c.code,
                                               valid_from=c.valid_from, valid_until=c.valid_until,
                                               max_uses=c.max_uses, doors=c.doors)
            return AccessReply(code="ok", message=f"code {cred.label!r} made for {cred.owner}", id=c.id, cmd=c.cmd,
                               credentials=[cred.public()], access_code=code, qr_payload=QR_PREFIX + code)
        if isinstance(c, AccessPinCommand):
            cred = await svc.set_pin(owner=c.owner, pin=c.pin, by=by, duress=c.duress)
            what = "duress PIN" if c.duress else "PIN"
            return AccessReply(code="ok", message=f"{what} of {cred.owner} set", id=c.id, cmd=c.cmd,
                               credentials=[cred.public()])
        if isinstance(c, AccessCardCommand):
            cred = await svc.enrol_card(owner=c.owner, number=c.number, label=c.label, by=by)
            return AccessReply(code="ok", message=f"card {cred.label!r} enrolled for {cred.owner}", id=c.id,
                               cmd=c.cmd, credentials=[cred.public()])
        if isinstance(c, AccessRevokeCommand):
            cred = await svc.revoke(c.credential)
            return AccessReply(code="ok", message=f"{cred.kind} {cred.label!r} of {cred.owner} revoked", id=c.id,
                               cmd=c.cmd, credentials=[cred.public()])
        creds = svc.creds.live(owner=c.owner, kind=c.kind)
        return AccessReply(code="ok", message=f"{len(creds)} credential(s)", id=c.id, cmd=c.cmd,
                           credentials=[x.public() for x in creds])

    # -- the directory (panel/directory): for fleets where the backend owns who lives where ---------------
    async def _directory(self, c: DirectoryCommand) -> DirectoryReply:
        d = self.directory
        if d is None:
            raise CommandRefused("directory_unavailable", "this panel runs without its directory; retry shortly")
        by = "backend"

        def out(r: Resident) -> dict[str, Any]:
            return {"id": r.id, "unit_id": r.unit_id, "name": r.name,
                    "sessions": [{"token_id": s.token_id, "device": s.device, "created_at": iso8601(s.created)}
                                 for s in d.sessions(r)]}

        def reply(message: str, residents: list[Resident], path: str | None = None) -> DirectoryReply:
            return DirectoryReply(code="ok", message=message, id=c.id, cmd=c.cmd,
                                  residents=[out(r) for r in residents], signin_path=path)

        if isinstance(c, ResidentAddCommand):
            link = await d.add(c.unit_id, c.name, by=by)
            return reply(f"{c.name} added to unit {c.unit_id}", [link.resident], link.path)
        if isinstance(c, ResidentLinkCommand):
            link = await d.new_link(c.resident, by=by)
            return reply(f"a new sign-in link for {link.resident.name}", [link.resident], link.path)
        if isinstance(c, ResidentRenameCommand):
            r = await d.rename(c.resident, c.name, by=by)
            return reply(f"renamed to {r.name}", [r])
        if isinstance(c, ResidentRemoveCommand):
            r, ended = await d.remove(c.resident, by=by)
            return reply(f"{r.name} removed; {ended} session(s) ended", [r])
        if c.unit_id is not None:
            d.unit(c.unit_id)
        found = await d.residents(c.unit_id)
        return reply(f"{len(found)} resident(s)", found)

    def _publish(self, c: PublishCommand) -> PublishReply:
        """The publisher decides how (backoff, DELETE on stop); the reply says what each target does now."""
        publishing = self.publishing()
        if publishing is None:
            raise CommandRefused("publish_unavailable", "this panel publishes to no SFU: set media.publish.targets "
                                 "(docs/media.md, Publishing to an SFU)")
        try:
            reached = publishing.set(c.action == "start", c.target)
        except KeyError:
            raise CommandRefused("unknown_publish_target", f"there is no publish target {c.target!r}; the panel's "
                                 f"are {', '.join(publishing.publishers)}") from None
        verb = "publishing to" if c.action == "start" else "stopped publishing to"
        return PublishReply(code="ok", message=f"{verb} {', '.join(reached)}", id=c.id, cmd=c.cmd,
                            publishing=publishing.status())

    def _update(self, c: UpdateCommand) -> UpdateReply:
        """The agent decides (signature, version, one at a time); the download runs on after the reply."""
        from ..update import UpdateError, UpdateRequest

        agent = self.updates()
        if agent is None:
            raise CommandRefused("update_disabled", "this panel has no update root (update.root is not set)")
        try:
            agent.request(UpdateRequest(version=c.version, url=c.url, size=c.size, sha256=c.sha256,
                                        signature=c.signature, key_id=c.key_id,
                                        rotation_key=c.rotation.key if c.rotation else None,
                                        rotation_signature=c.rotation.signature if c.rotation else None,
                                        actor="backend", method="mqtt"))
        except UpdateError as e:
            raise CommandRefused(e.code, str(e)) from None
        return UpdateReply(code="ok", message=f"update to {c.version} started; follow the update.* events",
                           id=c.id, cmd=c.cmd, update=agent.status())

    # -- media sessions ---------------------------------------------------------------------------------
    def _media(self) -> MediaService:
        media = self.media()
        if media is None:
            raise CommandRefused("media_unavailable", "this panel runs without media (no [media] section, or its "
                                 "devices or packages failed to start; see its log), so it cannot answer an offer")
        return media

    async def _offer(self, c: OfferCommand) -> OfferReply:
        """Answer a resident's offer: the media layer applies the call rules (first answer wins, the
        call connects when media flows, limits) and sets nothing up when it refuses."""
        media = self._media()
        from ..media.tokens import Grant

        if c.mode == "answer":
            guid = await self._live_call(c.call_guid)
            grant = Grant(token_id="mqtt", kind="call", subject=c.who, call_guid=guid)
        else:
            grant = Grant(token_id="mqtt", kind="monitor", subject=c.who, view_only=True)
        try:
            servers = [s.model_dump(exclude_none=True) for s in c.ice_servers] if c.ice_servers is not None else None
            session = await media.open_session(c.sdp, grant, who=c.who, origin="mqtt", ice_servers=servers)
        except SessionRefused as e:
            code = SESSION_CODES.get(e.code, e.code)
            if code not in REFUSALS:
                raise CommandRefused("media_refused", f"{e.code}: {e}") from None
            raise CommandRefused(code, str(e)) from None
        role: Literal["answerer", "viewer"] = "answerer" if session.role == "answerer" else "viewer"
        what = f"call {session.call_guid}" if session.call_guid else "live view"
        return OfferReply(code="ok", message=f"session {session.id}: {session.who} is {role} of {what}", id=c.id,
                          cmd=c.cmd, sdp=session.answer_sdp, session=session.id, call_guid=session.call_guid,
                          role=role)

    async def _live_call(self, guid: str | None) -> str:
        """The guid of the live call an answer is for (``None``: the call in progress)."""
        calls = self._calls()
        call = calls.current
        if guid is None:
            if call is None or not call.live:
                raise CommandRefused("no_call", "there is no call in progress to answer; for a live view outside a "
                                     "call send mode \"monitor\"")
            return str(call.guid)
        if call is not None and call.guid == guid and call.live:
            return guid
        past = await calls.lookup(guid)
        if past is not None:
            raise CommandRefused("call_over", f"call {guid} is over ({past.state}); its media can no longer be joined")
        raise CommandRefused("unknown_call", f"there is no call {guid!r}")

    async def _hangup(self, c: HangupCommand) -> HangupReply:
        media = self._media()
        session = media.session_info(c.session)
        if session is None:
            raise CommandRefused("unknown_session", f"there is no media session {c.session!r}; it ended already or "
                                 "never existed")
        answerer = session.role == "answerer"
        guid = session.call_guid
        # Returns once the session is down and, for the answerer, its call has ended too.
        await media.end_session(session.id, HANGUP_REASON)
        call = self.calls.get(guid) if guid is not None and self.calls is not None else None
        message = f"session {session.id} ended" + (f"; call {guid} ended by {session.who}"
                                                   if answerer and call is not None and not call.live else "")
        return HangupReply(code="ok", message=message, id=c.id, cmd=c.cmd, session=session.id, call_guid=guid,
                           call=call.to_dict() if call is not None else None)

    def _calls(self) -> CallManager:
        if self.calls is None:
            raise CommandRefused("calls_unavailable", "this panel runs without calls; nothing to answer or end")
        return self.calls

    async def _refused(self, e: CommandRefused | UnlockRefused | CallError | AccessError | DirectoryError, obj: Any,
                       command: AnyCommand | None,
                       spent: bool) -> Reply:
        cid, cmd = (command.id, command.cmd) if command is not None else best_effort_ids(obj)
        message = str(e)
        log.warning("command refused: %s: %s", e.code, message,
                    extra={"code": e.code, "command_id": cid, "cmd": cmd})
        if not isinstance(e, UnlockRefused) and (isinstance(command, OpenCommand) or _an_open(obj, command)):
            # The door journals its own refusals; these are the channel's (schema, auth, freshness,
            # replay), in the door's shape. An open too malformed to read names no relay or actor.
            req = (_open_request(command) if isinstance(command, OpenCommand)
                   else UnlockRequest(Requester.backend(), method="mqtt"))
            try:
                self.door.refused(req, e.code, message)
            except Exception:  # the store itself may be what failed; the reply still goes out
                log.exception("could not journal a refused unlock")
        if spent and command is not None and command.cmd in ("open", "status"):
            # The id passed authentication: it stays spent after a restart too.
            try:
                await self.seen.record(command.id, command.cmd, command.exp)
            except Exception:
                log.exception("could not record a spent command id")
        return Reply(code=e.code, message=message, id=cid, cmd=cmd)

    # -- Home Assistant's lock ----------------------------------------------------------------------
    async def execute_ha(self, payload: bytes, *, retained: bool = False) -> Reply:
        """Home Assistant's plain ``OPEN``/``UNLOCK``/``LOCK``. No id, no expiry, no signature: only the
        broker's ACL and ``mqtt.homeassistant_allow_open`` stand between it and the door."""
        word = payload[:16].decode("utf-8", "replace").strip().upper()
        try:
            if retained:
                raise CommandRefused("retained", "a retained lock command is stale; Home Assistant publishes "
                                     "lock commands without retain unless told otherwise")
            if word in ("OPEN", "UNLOCK"):
                # The door decides, mqtt.homeassistant_allow_open included.
                grant = await self.door.open(UnlockRequest(Requester.homeassistant(), method="mqtt"))
                return Reply(code="ok", message=f"door released for Home Assistant (access {grant.info.access_id})",
                             cmd=word.lower())
            if not self.mqtt.homeassistant_allow_open:
                raise CommandRefused("ha_open_disabled", "Home Assistant may not use this door's lock; set "
                                     "mqtt.homeassistant_allow_open = true to allow it (see docs/mqtt.md)")
            if word == "LOCK":
                released = self.door.release()
                return Reply(code="ok", message="release ended" if released else "the door was not released",
                             cmd="lock")
            raise CommandRefused("unsupported_command", f"Home Assistant sent {word!r}; expected OPEN, UNLOCK "
                                 "or LOCK")
        except (CommandRefused, UnlockRefused, CallError) as e:
            log.warning("Home Assistant lock command refused: %s: %s", e.code, e,
                        extra={"code": e.code, "cmd": word.lower()[:16]})
            if word in ("OPEN", "UNLOCK") and not isinstance(e, UnlockRefused):
                self.door.refused(UnlockRequest(Requester.homeassistant(), method="mqtt"), e.code, str(e))
            return Reply(code=e.code, message=str(e), cmd=word.lower()[:16] or None)

    # -- state ---------------------------------------------------------------------------------------
    def freshness(self) -> FreshnessStateMsg:
        self.nonces.roll()
        return FreshnessStateMsg(clock_synced=self.clock_sync.synchronized(), nonce=self.nonces.current,
                                 period_s=self.nonces.period_s, max_age_s=self.mqtt.command_max_age_s,
                                 boot=self.journal.boot_id)

    def state_topics(self) -> dict[str, Any]:
        """The payload of every retained ``state/<name>`` topic, by name."""
        door = self.door
        relays = {rid: RelayStateMsg(energised=r.energised, mode=r.cfg.mode) for rid, r in door.relays.items()}
        calls: dict[str, Any] = self.calls.state() if self.calls is not None else {"status": "idle", "call": None}
        call: dict[str, Any] | None = calls["call"]
        if call is not None and call.get("ended_at") is None:
            # A live call's duration grows by itself: in a retained state topic it would republish the
            # call every few seconds with nothing having happened (Home Assistant sees every one).
            calls = {**calls, "call": {**call, "duration_s": None}}
        return {
            "door": DoorStateMsg(open=door.is_open if self.cfg.door.contact is not None else None,
                                 held_open=door.held_open, released=relays[door.main_relay].energised,
                                 relays=relays).model_dump(mode="json"),
            "tamper": TamperStateMsg(active=door.tamper_active, blocked=door.tamper_blocked).model_dump(mode="json"),
            "call": CallStateMsg(**calls).model_dump(mode="json"),
            "freshness": self.freshness().model_dump(mode="json"),
        }
