"""Replay protection: command ids are single-use, remembered in the store across restarts, bounded in
number, and forgotten only in ways no clock step can undo.

The check is in memory (loaded at start), so it costs nothing on the unlock path and two copies of a
command arriving back to back cannot both pass while the first is being written. The durable record
of an ``open`` is written in the release's own transaction (``Door.unlock(extra=)``): one disk commit
holds the access record and the spent id, so a crash can never leave a release on disk whose id
could be accepted again.

Forgetting (docs/mqtt.md, "Replay protection"). An id may go once a replay of its command would be
refused by freshness anyway, judged without the wall clock: a Pi has no real-time clock, its wall
clock can step by years when NTP arrives (or back, when NTP corrects it), and an offline site may
never synchronise at all, so pruning by wall-clock age either never happened or could reopen ids.

- An id that came with a ``nonce``: once that nonce is neither the current nor the previous one.
  Nonces rotate on the monotonic clock and are new at every start, so a replay can only be
  ``stale_nonce``. Ids of an earlier boot that had no ``exp`` go at once.
- An id that came with ``exp`` (and a nonce that is still live, or none): ``keep_s`` of *monotonic*
  time after it was spent (``command_max_age_s`` + skew + a margin; an ``exp`` further ahead than
  that was refused ``expiry_too_far``), and an id loaded at start as if spent at the start. Forgetting
  it raises the **expiry floor** to its ``exp``; from then on a command whose ``exp`` is at or below the
  floor is refused ``expired``, whatever the panel's wall clock says. The floor compares the backend's
  own ``exp`` values with each other, so stepping the panel's clock back cannot reopen a forgotten
  id, and the backend's fresh commands (``exp`` ahead of the backend's now) stay above it.

The number in memory is capped (``max_ids``). A claim when full first forgets what may go, then
evicts the oldest (1% of the cap at once) by the same two levers, early: an ``exp`` raises the floor (which may then refuse
the backend's commands made before that one's expiry), a nonce-only id retires both nonces (a new one
is published; commands with the old ones are ``stale_nonce``). Under pressure the panel refuses
commands it would have accepted; it never accepts one it should refuse. Only authenticated, fresh
commands spend ids, so only the backend (or, with unsigned commands allowed, whoever may publish
commands) can fill it.

The store follows memory in ``prune()``: the forgotten rows are deleted and the floor written in one
transaction, so a crash before it leaves the rows on disk (still spent after the restart) and never
a floor without its rows gone, or rows gone without their floor.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..platform import Clock, Store, Tx
from ._commands import CommandRefused
from ._freshness import CLOCK_SKEW_S, Nonces

log = logging.getLogger(__name__)

# Far above what a backend spends (a few commands a minute) inside one window of command_max_age_s
# (+ margin), and a few MB of memory at most.
MAX_SPENT_IDS = 10_000
# Beyond the longest an exp can lie ahead when accepted: covers a panel clock a little ahead of the
# backend's, so the floor stays below the backend's fresh commands.
KEEP_MARGIN_S = 60.0
FLOOR_KEY = "replay_expiry_floor"


@dataclass(frozen=True)
class _Spent:
    at_mono: float
    exp: float | None
    nonce: str | None


class SeenCommands:
    def __init__(self, store: Store, clock: Clock, boot_id: str, nonces: Nonces, max_age_s: float,
                 max_ids: int = MAX_SPENT_IDS) -> None:
        self.store = store
        self.clock = clock
        self.boot_id = boot_id
        self.nonces = nonces
        self.keep_s = max_age_s + CLOCK_SKEW_S + KEEP_MARGIN_S
        self.max_ids = max_ids
        self._ids: OrderedDict[str, _Spent] = OrderedDict()  # oldest first
        self._forgotten: list[str] = []  # gone from memory, still to be deleted from the store
        self.floor: float = float(store.get_kv(FLOOR_KEY, 0.0))
        self._floor_written = self.floor
        rows = store.read_sync(lambda c: c.execute("SELECT id, exp, boot FROM seen_commands ORDER BY rowid").fetchall())
        now = clock.monotonic()
        for cid, exp, boot in rows:
            if exp is None and boot != boot_id:
                self._forgotten.append(cid)  # accepted on a nonce of a boot that is over
            else:
                self._admit(cid, _Spent(now, exp, None))

    def __contains__(self, command_id: str) -> bool:
        return command_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def backlog(self) -> int:
        """Forgotten ids the store still holds (``prune()`` deletes them)."""
        return len(self._forgotten)

    def claim(self, command_id: str, exp: float | None, nonce: str | None) -> None:
        """Mark ``command_id`` spent, or refuse the command (``replayed``, or ``expired`` below the floor).
        Synchronous: no await between the check and the mark."""
        if command_id in self._ids:
            raise CommandRefused("replayed", f"a command with id {command_id!r} was already accepted; every "
                                 "command (and every retry) needs a new id")
        if exp is not None and exp <= self.floor:
            raise CommandRefused("expired", f"exp {exp:.3f} is not after {self.floor:.3f}, the expiry of a "
                                 "command id this panel no longer keeps, so this command may have been accepted "
                                 "already; send a new one with a new id and a later exp")
        self._admit(command_id, _Spent(self.clock.monotonic(), exp, nonce))

    def _admit(self, command_id: str, spent: _Spent) -> None:
        if len(self._ids) >= self.max_ids:
            self.forget_expired()
            # Make room for a few at once, so a sustained flood does not scan every id at every claim.
            while len(self._ids) >= self.max_ids - self.max_ids // 100:
                self._evict(*self._ids.popitem(last=False))
        self._ids[command_id] = spent

    def _evict(self, command_id: str, spent: _Spent) -> None:
        """Forget ``command_id`` before its time, moving the line freshness enforces past it."""
        if spent.exp is not None:
            self.floor = max(self.floor, spent.exp)
        elif spent.nonce is not None and self.nonces.live(spent.nonce):
            self.nonces.retire()
            log.warning("spent command ids are at their cap (%d): the nonces were retired early, commands with "
                        "the old ones are refused stale_nonce", self.max_ids)
        self._forgotten.append(command_id)

    def forget_expired(self) -> int:
        """Forget (in memory) every id a replay of which freshness refuses anyway; see the module doc."""
        now = self.clock.monotonic()
        gone = []
        for cid, spent in self._ids.items():
            if spent.nonce is not None and not self.nonces.live(spent.nonce):
                gone.append(cid)
            elif spent.exp is not None and now >= spent.at_mono + self.keep_s:
                self.floor = max(self.floor, spent.exp)
                gone.append(cid)
        for cid in gone:
            del self._ids[cid]
        self._forgotten.extend(gone)
        return len(gone)

    def writer(self, command_id: str, cmd: str, exp: float | None) -> Callable[[Tx, str | None], None]:
        """The row for ``command_id``, to write inside another transaction (the unlock's)."""
        seen_at, boot = self.clock.wall(), self.boot_id

        def write(tx: Tx, event_id: str | None) -> None:
            tx.execute("INSERT OR IGNORE INTO seen_commands(id, cmd, seen_at, boot, exp, event_id)"
                       " VALUES (?,?,?,?,?,?)", (command_id, cmd, seen_at, boot, exp, event_id))
        return write

    async def record(self, command_id: str, cmd: str, exp: float | None) -> None:
        """Write ``command_id`` in its own transaction (commands that do not open the door)."""
        write = self.writer(command_id, cmd, exp)
        await self.store.write(lambda tx: write(tx, None))

    async def prune(self) -> int:
        """Forget what may go and bring the store in line (deleted rows and the floor, one transaction).
        Returns how many ids were forgotten since the last prune."""
        self.forget_expired()
        gone, floor = self._forgotten, self.floor
        if not gone and floor == self._floor_written:
            return 0
        self._forgotten = []

        def delete(tx: Tx) -> None:
            tx.conn.executemany("DELETE FROM seen_commands WHERE id=?", [(cid,) for cid in gone])
            tx.set_kv(FLOOR_KEY, floor)

        try:
            await self.store.write(delete)
        except Exception:  # housekeeping; the rows stay (still spent) and the next prune tries again
            log.exception("could not prune spent command ids")
            self._forgotten = gone + self._forgotten
            return 0
        self._floor_written = floor
        return len(gone)
