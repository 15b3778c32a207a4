"""Replay protection: command ids are single-use, remembered in the store across restarts.

The check is in memory (a set loaded at start), so it costs nothing on the unlock path and two
copies of a command arriving back to back cannot both pass while the first is being written. The
durable record of an ``open`` is written in the release's own transaction (``Door.unlock(extra=)``):
one disk commit holds the access record and the spent id, so a crash can never leave a release
on disk whose id could be accepted again.

Pruning is conservative and only happens while the wall clock is synchronised: an id is forgotten a
day after its ``exp``; ids accepted on a nonce alone (no ``exp``) are forgotten once their boot is
over, because that boot's nonces can never be accepted again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..platform import Clock, Store, Tx

log = logging.getLogger(__name__)

KEEP_AFTER_EXPIRY_S = 86_400.0


class SeenCommands:
    def __init__(self, store: Store, clock: Clock, boot_id: str) -> None:
        self.store = store
        self.clock = clock
        self.boot_id = boot_id
        self._ids: set[str] = set(store.read_sync(lambda c: [r[0] for r in c.execute("SELECT id FROM seen_commands")]))

    def __contains__(self, command_id: str) -> bool:
        return command_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def claim(self, command_id: str) -> bool:
        """Mark ``command_id`` spent; False if it already was. Synchronous: no await between check and set."""
        if command_id in self._ids:
            return False
        self._ids.add(command_id)
        return True

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

    async def prune(self, clock_synced: bool) -> int:
        if not clock_synced:
            return 0
        cutoff, boot = self.clock.wall() - KEEP_AFTER_EXPIRY_S, self.boot_id

        def delete(tx: Tx) -> list[str]:
            where = "(exp IS NOT NULL AND exp < ?) OR (exp IS NULL AND boot != ?)"
            ids = [r[0] for r in tx.execute(f"SELECT id FROM seen_commands WHERE {where}", (cutoff, boot))]
            tx.execute(f"DELETE FROM seen_commands WHERE {where}", (cutoff, boot))
            return ids

        try:
            gone = await self.store.write(delete)
        except Exception:  # pruning is housekeeping; a failure must not stop the link
            log.exception("could not prune seen command ids")
            return 0
        self._ids.difference_update(gone)
        return len(gone)
