"""The door: releases (grants), the door contact, the exit button and the tamper block.

Rules this module enforces, whatever asks:
- a release is journalled (access log + ``door.unlocked``) and on disk *before* the relay moves;
- the relay is energised only while a grant is in force, never past ``max_on_s``;
- while a tamper block is active no release happens (the exit button aside when configured), and
  the block survives restarts until an installer clears it with the tamper switch at rest;
- the door opening with no grant in force is ``door.forced_open``; staying open past
  ``held_open_s`` is ``door.held_open``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import UnlockRefused
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

log = logging.getLogger(__name__)

TAMPER_KEY = "tamper_block"


@dataclass(frozen=True)
class Grant:
    info: GrantInfo
    granted_at: float
    until: float

    @property
    def local(self) -> bool:
        return self.info.cause == "exit_button"


class Door:
    def __init__(self, cfg: Config, relays: dict[str, Relay], journal: Journal, clock: Clock) -> None:
        self.cfg = cfg
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

        ``extra`` writes more rows in the release's own transaction (e.g. the MQTT command id that
        asked for it, so replay protection costs no second disk commit on the unlock path)."""
        async with self._unlock_lock:
            rcfg = self._refuse_if_not_allowed(cause, actor, method, relay, call_guid, duration_s)
            seconds = self._duration(rcfg, duration_s)
            info = GrantInfo(access_id=str(uuid.uuid4()), relay=rcfg.id, cause=cause, actor=actor,
                             method=method, call_guid=call_guid)
            event = DoorUnlocked(**info.model_dump(), duration_s=seconds, mode=rcfg.mode)
            wall = self.clock.wall()

            def access(tx: Tx, event_id: str) -> None:
                tx.insert_access(AccessRow(info.access_id, wall, rcfg.id, cause, actor, method, call_guid,
                                           seconds, event_id))
                if extra is not None:
                    extra(tx, event_id)

            await self.journal.record(event, key=call_guid or "door", extra=access)
            # The world may have changed while the record was being written.
            if self._blocked_for(cause):
                self._refused(cause, actor, method, rcfg.id, call_guid, "tamper_blocked",
                              "the tamper switch tripped while the release was being recorded; nothing moved")
            relay_obj = self.relays[rcfg.id]
            deadline = relay_obj.energise(seconds)
            grant = Grant(info, self.clock.monotonic(), deadline)
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
        self.journal.record(DoorLocked(relay=relay.id, reason=reason, on_s=round(on_s, 3),
                                       access_id=grant.info.access_id if grant else None),
                            key=(grant.info.call_guid if grant and grant.info.call_guid else "door"))

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
            return await self.unlock(cause="exit_button", actor="exit_button", method="exit_button")
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
