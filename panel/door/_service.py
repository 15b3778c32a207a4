"""The door: releases (grants), the door contact, the exit button and the tamper block.

Every release anyone asks for (HTTP, MQTT, Home Assistant, the exit button) comes in as an
``UnlockRequest`` to ``Door.open``, which decides it: the adapters only translate. Rules it enforces:
- roles are an allowlist (``ROLES``); any other role is refused ``not_allowed_for_role``;
- a resident opens only during the call they answered (within their credential's unit and call
  scope), only the relays of that call's unit (``UnitConfig.relays``), for the relay's own time;
- only the backend names someone else as the actor; a named call must be answered; an installer's,
  the backend's or Home Assistant's open during an answered call belongs to that call;
- Home Assistant opens only with ``mqtt.homeassistant_allow_open``;
- every refusal is journalled as ``door.unlock_refused``, one shape whatever the channel or the check;
- a release is journalled (access log + ``door.unlocked``) and on disk *before* the relay moves;
- the relay is energised only while a grant is in force, never past ``max_on_s``;
- while a tamper block is active no release happens (the exit button aside when configured), and
  the block survives restarts until an installer clears it with the tamper switch at rest;
- the door opening with no grant in force is ``door.forced_open``; staying open past
  ``held_open_s`` is ``door.held_open``;
- a grant in force is on disk (``door_grant:<relay>``, written with its ``door.unlocked``); one that
  a dead process left behind gets its ``door.locked`` (reason ``restart``) at the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CallError, UnlockRefused
from ..events import (
    Cause,
    DoorClosed,
    DoorForcedOpen,
    DoorHeldOpen,
    DoorLocked,
    DoorOpened,
    DoorUnlocked,
    DoorUnlockRefused,
    GrantInfo,
    LockReason,
    Method,
    PanelTamper,
    PanelTamperCleared,
)
from ..platform import (
    AccessRow,
    Clock,
    Config,
    Extra,
    Journal,
    RelayConfig,
    TimerHandle,
    Tx,
)
from ._relay import Relay
from ._request import ACCESS_METHODS, ROLES, Requester, UnlockRequest

if TYPE_CHECKING:
    from ..calls import Call

log = logging.getLogger(__name__)

TAMPER_KEY = "tamper_block"
GRANT_KEY = "door_grant:"  # + relay id: the grant in force on that relay, until its door.locked

# What a release by each role is, in the access log.
_CAUSE: dict[str, Cause] = {"resident": "call", "installer": "installer", "backend": "remote",
                            "homeassistant": "remote", "exit_button": "exit_button"}
# Roles that exist only on one channel: nobody else can speak for them.
_CHANNEL: dict[str, Method] = {"exit_button": "exit_button", "homeassistant": "mqtt"}


class CallLookup(Protocol):
    """What the door needs of the call manager (panel/calls)."""

    def active_call_for_unlock(self, guid: str | None) -> Call: ...


@dataclass(frozen=True)
class Grant:
    info: GrantInfo
    granted_at: float
    until: float
    duration_s: float  # what the relay actually got (a bistable relay already on is capped at max_on_s)

    @property
    def local(self) -> bool:
        return self.info.cause == "exit_button"


class Door:
    def __init__(self, cfg: Config, relays: dict[str, Relay], journal: Journal, clock: Clock,
                 calls: CallLookup | None = None) -> None:
        self.cfg = cfg
        # Set by the composition root once the call manager exists; None: a panel without calls.
        self.calls = calls
        self.door_cfg = cfg.door
        self.relays = relays
        self.journal = journal
        self.clock = clock
        self.main_relay = cfg.door.relays[0].id
        self.grants: dict[str, Grant] = {}
        self.last_grant_end: float | None = None
        self.last_grant: GrantInfo | None = None
        self.is_open = False
        self.opened_at: float | None = None
        self._held_timer: TimerHandle | None = None
        self.held_open = False
        self.tamper_active = False
        block = journal.store.get_kv(TAMPER_KEY, {"blocked": False})
        self.tamper_blocked: bool = bool(block.get("blocked"))
        self._unlock_lock = asyncio.Lock()
        for relay in relays.values():
            relay._on_off = self._relay_off
        self.recovered = self._recover()

    def _recover(self) -> list[str]:
        """Pair every release a dead process left in force with its ``door.locked`` (reason
        ``restart``): the relays were driven off before the door was built. A short read on the
        loop at boot, like the tamper block; the writes are queued (``journal.flush`` awaits them)."""
        rows = self.journal.store.read_sync(lambda c: c.execute(
            "SELECT key, value FROM kv WHERE key LIKE ? ORDER BY key", (GRANT_KEY + "%",)).fetchall())
        closed = []
        now = self.clock.wall()
        for _key, value in rows:
            g = json.loads(value)
            # Unknown: how long it really stayed on. At most its duration, and no longer than until now.
            on_s = round(min(float(g["duration_s"]), max(0.0, now - float(g["at"]))), 3)
            log.warning("relay %s was released when the panel stopped; journalling its lock", g["relay"],
                        extra={"relay": g["relay"], "access_id": g["access_id"]})
            self.journal.record(DoorLocked(relay=g["relay"], reason="restart", on_s=on_s, access_id=g["access_id"]),
                                key=g.get("call_guid") or "door", extra=self._forget(g["relay"], g["access_id"]))
            closed.append(str(g["access_id"]))
        return closed

    # -- requests -----------------------------------------------------------------------------------
    async def open(self, req: UnlockRequest, *, extra: Extra | None = None) -> Grant:
        """Decide a release for whoever asks and carry it out; ``UnlockRefused`` (journalled) if not.

        ``extra``: more rows in the release's own transaction (see ``unlock``)."""
        who = req.requester
        cause = _CAUSE.get(who.role, "remote")
        relay_id, guid = req.relay, req.call_guid

        def refuse(code: str, message: str) -> Any:
            return self._refused(cause, who.actor, req.method, relay_id or self.main_relay, guid, code, message)

        if who.role not in ROLES:
            refuse("not_allowed_for_role", f"role {who.role!r} may not open the door; the door opens for "
                   + ", ".join(ROLES))
        if who.role in _CHANNEL and req.method != _CHANNEL[who.role]:
            refuse("not_allowed_for_role", f"role {who.role!r} opens only over {_CHANNEL[who.role]}")
        if (who.role == "access") != (req.method in ACCESS_METHODS):
            refuse("not_allowed_for_role", f"a {req.method} release is asked for by the access service alone")
        if who.role == "access":
            cause = req.method  # type: ignore[assignment]  # pin, code, qr, card: Cause has each
        if who.role == "homeassistant" and not self.cfg.mqtt.homeassistant_allow_open:
            refuse("ha_open_disabled", "Home Assistant may not open this door; set "
                   "mqtt.homeassistant_allow_open = true to allow it (see docs/mqtt.md)")
        if req.on_behalf_of is not None and who.role != "backend":
            refuse("not_allowed_for_role", "actor: only the backend names someone else as the actor")
        if relay_id is not None and relay_id not in self.relays:
            refuse("unknown_relay", f"relay: there is no relay {relay_id!r}; this panel has "
                   + ", ".join(self.relays))
        actor = req.on_behalf_of or who.actor
        duration = req.duration_s
        if who.role == "resident":
            if req.duration_s is not None or req.hold:
                refuse("not_allowed_for_role", "duration_s: a resident opens for the relay's own hold time and "
                       "holds no relay; omit it")
            call = self._call(guid, refuse)
            guid = call.guid
            if not (who.call_guid in (None, call.guid) and who.unit_id in (None, call.unit_id)) \
                    or call.answered_by is None or call.answered_by != who.subject:
                refuse("not_your_call", f"call {call.guid} was answered by {call.answered_by}; a resident opens "
                       "the door only during the call they answered")
            allowed = self.unit_relays(call)
            relay_id = relay_id or allowed[0]
            if relay_id not in allowed:
                refuse("relay_not_allowed", f"relay: a resident opens only the relays of unit {call.unit_id} "
                       f"({', '.join(allowed)}), not {relay_id!r}")
        elif who.role in ("exit_button", "access"):
            guid = None  # a release at the door belongs to no call
        elif guid is not None:
            guid = self._call(guid, refuse).guid
            cause = "call"
        elif who.role != "installer":
            # The backend's (or Home Assistant's) open during an answered call belongs to that call.
            try:
                guid = self.calls.active_call_for_unlock(None).guid if self.calls is not None else None
            except CallError:
                guid = None
            if guid is not None:
                cause = "call"
        if req.hold and duration is None:
            duration = self.cfg.relay(relay_id or self.main_relay).max_on_s
        return await self.unlock(cause=cause, actor=actor, method=req.method, relay=relay_id, call_guid=guid,
                                 duration_s=duration, extra=extra)

    def _call(self, guid: str | None, refuse: Any) -> Call:
        """The answered call a release belongs to (``None``: the one in progress), or refuse."""
        if self.calls is None:
            refuse("calls_unavailable", "this panel runs without calls; omit call_guid")
        assert self.calls is not None
        try:
            return self.calls.active_call_for_unlock(guid)
        except CallError as e:
            refuse(e.code, str(e))
            raise  # refuse always raises

    def unit_relays(self, call: Call) -> list[str]:
        """The relays a resident answering ``call`` may open: its unit's, as configured."""
        try:
            unit = self.cfg.button(call.button).unit
        except KeyError:  # the button left the configuration while the call was live
            return [self.main_relay]
        return list(unit.relays) if unit.relays else [self.main_relay]

    def refused(self, req: UnlockRequest, code: str, message: str) -> None:
        """Journal a refusal decided before the door was asked (a channel's own checks: schema,
        signature, freshness, replay), in the same shape as the door's own."""
        cause = _CAUSE.get(req.requester.role, "remote")
        if req.call_guid is not None and cause != "exit_button":
            cause = "call"
        try:
            self._refused(cause, req.on_behalf_of or req.requester.actor, req.method, req.relay or self.main_relay,
                          req.call_guid, code, message)
        except UnlockRefused:
            pass

    def reconfigure(self, cfg: Config) -> None:
        """Take changed live keys (door.*, door.relays[].hold_s) from the config service; the next
        release and the next door opening use them."""
        self.cfg = cfg
        self.door_cfg = cfg.door
        for rid, relay in self.relays.items():
            relay.reconfigure(cfg.relay(rid))

    # -- releases ---------------------------------------------------------------------------------
    async def unlock(self, *, cause: Cause, actor: str, method: Method, relay: str | None = None,
                     call_guid: str | None = None, duration_s: float | None = None,
                     extra: Extra | None = None) -> Grant:
        """Release the lock. Raises ``UnlockRefused`` (and journals why) if it may not.

        The mechanism under ``open``: it checks the relay, the duration and the tamper block, not
        who asks. Requests from outside go through ``open``; only the installer's self-test pulse
        and tests call this directly.

        ``extra`` writes more rows in the release's own transaction (e.g. the MQTT command id that
        asked for it, so replay protection costs no second disk commit on the unlock path)."""
        async with self._unlock_lock:
            rcfg = self._refuse_if_not_allowed(cause, actor, method, relay, call_guid, duration_s)
            seconds = self._duration(rcfg, duration_s)
            info = GrantInfo(access_id=str(uuid.uuid4()), relay=rcfg.id, cause=cause, actor=actor,
                             method=method, call_guid=call_guid)
            event = DoorUnlocked(**info.model_dump(), duration_s=seconds, mode=rcfg.mode)
            wall = self.clock.wall()

            in_force = {"access_id": info.access_id, "relay": rcfg.id, "call_guid": call_guid, "at": wall,
                        "duration_s": seconds}

            def access(tx: Tx, event_id: str) -> None:
                tx.insert_access(AccessRow(info.access_id, wall, rcfg.id, cause, actor, method, call_guid,
                                           seconds, event_id))
                # Replaces a grant this one extends: the relay's one door.locked will name this one.
                tx.set_kv(GRANT_KEY + rcfg.id, in_force)
                if extra is not None:
                    extra(tx, event_id)

            await self.journal.record(event, key=call_guid or "door", extra=access)
            # The world may have changed while the record was being written.
            if self._blocked_for(cause):
                # Its door.unlocked is on disk: pair it, so no backend sees this release in force.
                self.journal.record(DoorLocked(relay=rcfg.id, reason="tamper", on_s=0.0, access_id=info.access_id),
                                    key=call_guid or "door", extra=self._forget(rcfg.id, info.access_id))
                self._refused(cause, actor, method, rcfg.id, call_guid, "tamper_blocked",
                              "the tamper switch tripped while the release was being recorded; nothing moved")
            relay_obj = self.relays[rcfg.id]
            now = self.clock.monotonic()
            deadline = relay_obj.energise(seconds)
            grant = Grant(info, now, deadline, round(deadline - now, 3))
            self.grants[rcfg.id] = grant
            log.info("door released", extra={"relay": rcfg.id, "cause": cause, "actor": actor, "call": call_guid})
            return grant

    def _refuse_if_not_allowed(self, cause: Cause, actor: str, method: Method, relay: str | None,
                               call_guid: str | None, duration_s: float | None) -> RelayConfig:
        relay_id = relay or self.main_relay
        try:
            rcfg = self.cfg.relay(relay_id)
        except KeyError:
            known = ", ".join(r.id for r in self.door_cfg.relays)
            self._refused(cause, actor, method, None, call_guid, "unknown_relay",
                          f"there is no relay {relay_id!r}; this panel has {known}")
        if duration_s is not None and not (0.5 <= duration_s <= rcfg.max_on_s):
            self._refused(cause, actor, method, rcfg.id, call_guid, "bad_duration",
                          f"duration_s {duration_s} is not allowed; expected seconds between 0.5 and "
                          f"{rcfg.max_on_s:g} for relay {rcfg.id!r}")
        if self._blocked_for(cause):
            self._refused(cause, actor, method, rcfg.id, call_guid, "tamper_blocked",
                          "remote unlocks are blocked since the tamper switch tripped; an installer must "
                          "check the panel and clear the block")
        return rcfg

    def _duration(self, rcfg: RelayConfig, duration_s: float | None) -> float:
        if duration_s is not None:
            return duration_s
        return rcfg.max_on_s if rcfg.mode == "bistable" else rcfg.hold_s

    def _blocked_for(self, cause: Cause) -> bool:
        if not (self.tamper_blocked or self.tamper_active):
            return False
        return not (cause == "exit_button" and self.door_cfg.exit_button_overrides_tamper)

    def _refused(self, cause: Cause, actor: str, method: Method, relay: str | None, call_guid: str | None,
                 code: str, message: str) -> Any:
        log.warning("unlock refused: %s", message, extra={"code": code, "actor": actor, "method": method})
        self.journal.record(DoorUnlockRefused(relay=relay, cause=cause, actor=actor, method=method,
                                              call_guid=call_guid, code=code, message=message),
                            key=call_guid or "door")
        raise UnlockRefused(code, message)

    def release(self, relay: str | None = None, reason: LockReason = "released") -> bool:
        """End a release early (bistable hold, or a call that ended). True if a relay was on."""
        relay_obj = self.relays.get(relay or self.main_relay)
        if relay_obj is None or not relay_obj.energised:
            return False
        relay_obj.de_energise(reason)
        return True

    def _relay_off(self, relay: Relay, reason: LockReason, on_s: float) -> None:
        grant = self.grants.pop(relay.id, None)
        if relay.id == self.main_relay and grant is not None:
            self.last_grant_end = self.clock.monotonic()
            self.last_grant = grant.info
        access_id = grant.info.access_id if grant else None
        self.journal.record(DoorLocked(relay=relay.id, reason=reason, on_s=round(on_s, 3), access_id=access_id),
                            key=(grant.info.call_guid if grant and grant.info.call_guid else "door"),
                            extra=self._forget(relay.id, access_id))

    @staticmethod
    def _forget(relay_id: str, access_id: str | None) -> Extra:
        """Drop the on-disk record of a grant in force, in its door.locked's transaction."""
        def forget(tx: Tx, _id: str) -> None:
            # Only this grant's record: a newer one for the relay may be committing ahead of this.
            tx.execute("DELETE FROM kv WHERE key=? AND json_extract(value, '$.access_id') IS ?",
                       (GRANT_KEY + relay_id, access_id))
        return forget

    def all_off(self, reason: LockReason) -> None:
        for relay in self.relays.values():
            if relay.energised:
                relay.de_energise(reason)
            else:
                relay.device.off()

    # -- door contact -------------------------------------------------------------------------------
    def contact_changed(self, is_open: bool) -> None:
        if is_open == self.is_open:
            return
        now = self.clock.monotonic()
        self.is_open = is_open
        if is_open:
            self.opened_at = now
            grant = self.grants.get(self.main_relay)
            info = grant.info if grant is not None else None
            if info is None and self.last_grant_end is not None and now - self.last_grant_end <= self.door_cfg.open_grace_s:
                info = self.last_grant
            self.journal.record(DoorOpened(authorised=info is not None, grant=info),
                                key=(info.call_guid if info and info.call_guid else "door"))
            if info is None:
                since = None if self.last_grant_end is None else round(now - self.last_grant_end, 3)
                self.journal.record(DoorForcedOpen(since_last_release_s=since), key="door")
            if grant is not None and self.door_cfg.relock_on_open and self.cfg.relay(self.main_relay).mode == "monostable":
                self.relays[self.main_relay].de_energise("relock_on_open")
            self._held_timer = self.clock.call_at(now + self.door_cfg.held_open_s, self._held)
        else:
            open_s = now - (self.opened_at or now)
            self.opened_at = None
            self.held_open = False
            if self._held_timer is not None:
                self._held_timer.cancel()
                self._held_timer = None
            self.journal.record(DoorClosed(open_s=round(open_s, 3)), key="door")

    def _held(self) -> None:
        self._held_timer = None
        if self.is_open and self.opened_at is not None:
            self.held_open = True
            self.journal.record(DoorHeldOpen(open_s=round(self.clock.monotonic() - self.opened_at, 3),
                                             limit_s=self.door_cfg.held_open_s), key="door")

    # -- exit button --------------------------------------------------------------------------------
    async def exit_pressed(self) -> Grant | None:
        try:
            return await self.open(UnlockRequest(Requester.exit_button(), method="exit_button"))
        except UnlockRefused:
            return None

    # -- tamper -------------------------------------------------------------------------------------
    def tamper_changed(self, active: bool) -> None:
        if active == self.tamper_active:
            return
        self.tamper_active = active
        if active:
            self.tamper_blocked = True
            for relay_id, grant in list(self.grants.items()):
                if not (grant.local and self.door_cfg.exit_button_overrides_tamper):
                    self.relays[relay_id].de_energise("tamper")
        self.journal.record(PanelTamper(active=active, blocked=self.tamper_blocked), key="panel",
                            extra=lambda tx, _id: tx.set_kv(TAMPER_KEY, {"blocked": self.tamper_blocked}))

    async def clear_tamper(self, actor: str) -> None:
        if self.tamper_active:
            raise UnlockRefused("tamper_active", "the tamper switch still reads tampered; close the housing "
                                "and check the switch before clearing the block")
        if not self.tamper_blocked:
            return
        self.tamper_blocked = False
        await self.journal.record(PanelTamperCleared(actor=actor), key="panel",
                                  extra=lambda tx, _id: tx.set_kv(TAMPER_KEY, {"blocked": False}))

    # -- introspection ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        return {
            "open": self.is_open,
            "open_s": round(now - self.opened_at, 3) if self.opened_at is not None else None,
            "held_open": self.held_open,
            "tamper": {"active": self.tamper_active, "blocked": self.tamper_blocked},
            "relays": {
                rid: {
                    # The pin, not our bookkeeping: the guard thread may have cut it while the loop lagged.
                    "energised": r.energised and bool(r.device.value),
                    "guard_trips": r.guard.tripped,
                    "remaining_s": round(max(0.0, r.deadline - now), 3) if r.deadline is not None else None,
                    "mode": r.cfg.mode,
                    "grant": self.grants[rid].info.model_dump() if rid in self.grants else None,
                }
                for rid, r in self.relays.items()
            },
        }

    def healthy(self) -> bool:
        return all(r.healthy() for r in self.relays.values())
