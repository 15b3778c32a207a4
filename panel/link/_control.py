"""Carries out the backend's commands: authenticate, check freshness and replay, act, reply.

Transport-free (panel/link/_mqtt.py feeds it payloads and publishes its replies), so the same
checks apply to every way a command can arrive. The order of the checks is fixed and documented in
docs/mqtt.md; the first that fails decides the reply's code. Until an ``open`` reaches
``Door.unlock`` nothing here suspends: the unlock waits only for its one durable commit, which also
records the spent command id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..errors import CallError, UnlockRefused
from ..events import DoorUnlockRefused
from ..media.errors import SessionRefused
from ..platform import Config
from ._commands import (
    REFUSALS,
    AnswerCommand,
    AnyCommand,
    CallReply,
    CommandRefused,
    DeclineCommand,
    EndCommand,
    HangupCommand,
    HangupReply,
    OfferCommand,
    OfferReply,
    OpenCommand,
    OpenReply,
    Reply,
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
    from ..auth import Secrets
    from ..calls import CallManager
    from ..door import Door
    from ..media.service import MediaService
    from ..platform import Clock, Journal
    from ..update import UpdateAgent
    from ._replay import SeenCommands

log = logging.getLogger(__name__)

HA_ACTOR = "homeassistant"
# The media layer's refusal codes where the command channel has its own name for the same thing.
SESSION_CODES = {"invalid_sdp": "bad_sdp", "invalid_ice_servers": "bad_ice_servers"}
# How a hangup ends a session: the peer's side ended it (the answerer's call ends with it, "hangup").
HANGUP_REASON = "remote_end"


class Control:
    def __init__(self, *, cfg: Config, secrets: Secrets, door: Door, calls: CallManager | None, journal: Journal,
                 clock: Clock, clock_sync: ClockSync, seen: SeenCommands, nonces: Nonces,
                 media: Callable[[], MediaService | None] | None = None,
                 updates: Callable[[], UpdateAgent | None] | None = None) -> None:
        self.cfg = cfg
        self.mqtt = cfg.mqtt
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
        self.updates = updates or (lambda: None)  # likewise: the update agent starts last

    # -- the backend's commands -------------------------------------------------------------------
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
                undecodable = e
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
            if not self.seen.claim(command.id):
                raise CommandRefused("replayed", f"a command with id {command.id!r} was already accepted; every "
                                     "command (and every retry) needs a new id")
            spent = True
            return await self._dispatch(command)
        except (CommandRefused, UnlockRefused, CallError) as e:
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
        if isinstance(c, UpdateCommand):
            try:
                return self._update(c)
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
        calls = self._calls()
        try:
            if isinstance(c, AnswerCommand):
                call = await calls.answer(c.call_guid, c.who)
                message = f"call {call.guid} answered by {call.answered_by}"
            elif isinstance(c, DeclineCommand):
                call = await calls.decline(c.call_guid, c.who)
                message = f"call {call.guid} declined by {c.who}"
            else:
                call = await calls.end(c.call_guid, c.who)
                message = f"call {call.guid} ended by {c.who}"
        finally:
            await self.seen.record(c.id, c.cmd, c.exp)
        return CallReply(code="ok", message=message, id=c.id, cmd=c.cmd, call=call.to_dict())

    async def _open(self, c: OpenCommand) -> OpenReply:
        cause, guid = self._call_for(c.call_guid)
        grant = await self.door.unlock(cause=cause, actor=c.actor, method="mqtt", relay=c.relay, call_guid=guid,
                                       duration_s=c.duration_s, extra=self.seen.writer(c.id, c.cmd, c.exp))
        rcfg = self.cfg.relay(grant.info.relay)
        # The door's rule for the length of a release (the grant's monotonic deadline is not a duration).
        seconds = c.duration_s if c.duration_s is not None else (
            rcfg.max_on_s if rcfg.mode == "bistable" else rcfg.hold_s)
        return OpenReply(code="ok", message=f"door released: relay {grant.info.relay} for {seconds:g} s",
                         id=c.id, cmd=c.cmd, access_id=grant.info.access_id, relay=grant.info.relay,
                         duration_s=seconds, cause=cause, call_guid=guid)

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
        from ..media.sessions import ice_servers_from_message
        from ..media.tokens import Grant

        if c.mode == "answer":
            guid = await self._live_call(c.call_guid)
            grant = Grant(token_id="mqtt", kind="call", subject=c.who, call_guid=guid)
        else:
            grant = Grant(token_id="mqtt", kind="monitor", subject=c.who, view_only=True)
        try:
            servers = (ice_servers_from_message([s.model_dump(exclude_none=True) for s in c.ice_servers])
                       if c.ice_servers is not None else None)
            session = await media.sessions.create(c.sdp, grant, who=c.who, origin="mqtt", ice_servers=servers)
        except SessionRefused as e:
            code = SESSION_CODES.get(e.code, e.code)
            if code not in REFUSALS:
                raise CommandRefused("media_refused", f"{e.code}: {e}") from None
            raise CommandRefused(code, str(e)) from None
        role = "answerer" if session.role == "answerer" else "viewer"
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
        session = media.sessions.get(c.session)
        if session is None:
            raise CommandRefused("unknown_session", f"there is no media session {c.session!r}; it ended already or "
                                 "never existed")
        answerer = session.role == "answerer"
        guid = session.call_guid
        # Returns once the session is down and, for the answerer, its call has ended too.
        await session.close(HANGUP_REASON)
        call = self.calls.get(guid) if guid is not None and self.calls is not None else None
        message = f"session {session.id} ended" + (f"; call {guid} ended by {session.who}"
                                                   if answerer and call is not None and not call.live else "")
        return HangupReply(code="ok", message=message, id=c.id, cmd=c.cmd, session=session.id, call_guid=guid,
                           call=call.to_dict() if call is not None else None)

    def _calls(self) -> CallManager:
        if self.calls is None:
            raise CommandRefused("calls_unavailable", "this panel runs without calls; nothing to answer or end")
        return self.calls

    def _call_for(self, guid: str | None) -> tuple[Literal["call", "remote"], str | None]:
        """An open names its call, or belongs to the answered call in progress, or is a plain remote open."""
        if self.calls is None:
            if guid is not None:
                raise CommandRefused("calls_unavailable", "this panel runs without calls; omit call_guid")
            return "remote", None
        if guid is not None:
            return "call", self.calls.active_call_for_unlock(guid).guid
        try:
            return "call", self.calls.active_call_for_unlock(None).guid
        except CallError:
            return "remote", None

    async def _refused(self, e: CommandRefused | UnlockRefused | CallError, obj: Any, command: AnyCommand | None,
                       spent: bool) -> Reply:
        cid, cmd = (command.id, command.cmd) if command is not None else best_effort_ids(obj)
        message = str(e)
        log.warning("command refused: %s: %s", e.code, message,
                    extra={"code": e.code, "command_id": cid, "cmd": cmd})
        if isinstance(command, OpenCommand) and not isinstance(e, UnlockRefused):
            # Door.unlock journals its own refusals; these are ours (auth, freshness, replay, call).
            try:
                self.journal.record(DoorUnlockRefused(relay=command.relay, cause="remote", actor=command.actor,
                                                      method="mqtt", call_guid=command.call_guid, code=e.code,
                                                      message=message), key=command.call_guid or "door")
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
            if not self.mqtt.homeassistant_allow_open:
                raise CommandRefused("ha_open_disabled", "Home Assistant may not open this door; set "
                                     "mqtt.homeassistant_allow_open = true to allow it (see docs/mqtt.md)")
            if word in ("OPEN", "UNLOCK"):
                cause, guid = self._call_for(None)
                grant = await self.door.unlock(cause=cause, actor=HA_ACTOR, method="mqtt", call_guid=guid)
                return Reply(code="ok", message=f"door released for Home Assistant (access {grant.info.access_id})",
                             cmd=word.lower())
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
                self.journal.record(DoorUnlockRefused(relay=None, cause="remote", actor=HA_ACTOR, method="mqtt",
                                                      code=e.code, message=str(e)), key="door")
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
        calls = self.calls.state() if self.calls is not None else {"status": "idle", "call": None}
        return {
            "door": DoorStateMsg(open=door.is_open if self.cfg.door.contact is not None else None,
                                 held_open=door.held_open, released=relays[door.main_relay].energised,
                                 relays=relays).model_dump(mode="json"),
            "tamper": TamperStateMsg(active=door.tamper_active, blocked=door.tamper_blocked).model_dump(mode="json"),
            "call": CallStateMsg(**calls).model_dump(mode="json"),
            "freshness": self.freshness().model_dump(mode="json"),
        }
