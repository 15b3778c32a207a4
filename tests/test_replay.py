"""Spent command ids (panel/link/_replay.py): single-use across restarts, bounded in number, and forgotten
only in ways a step of the wall clock cannot undo, with or without a synchronised clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from panel.link import CLOCK_SKEW_S, KEEP_MARGIN_S, CommandRefused, Nonces, SeenCommands, check_fresh
from panel.platform import FakeClock, Store

MAX_AGE_S = 30.0
KEEP_S = MAX_AGE_S + CLOCK_SKEW_S + KEEP_MARGIN_S
DAY = 86_400.0


class Replay:
    """A store, a fake clock, the nonces and the spent ids, as the MQTT link builds them."""

    def __init__(self, path: Path, boot: str = "boot-1", clock: FakeClock | None = None, max_ids: int = 10_000) -> None:
        self.clock = clock or FakeClock()
        self.store = Store(path)
        self.nonces = Nonces(self.clock, MAX_AGE_S)
        self.seen = SeenCommands(self.store, self.clock, boot, self.nonces, MAX_AGE_S, max_ids=max_ids)

    async def accept(self, cid: str, exp: float | None = None, nonce: str | None = None, *, synced: bool) -> str:
        """What Control does before acting: freshness, then the claim; the code, or "ok" once recorded."""
        try:
            check_fresh(exp, nonce, synced=synced, now=self.clock.wall(), nonces=self.nonces, max_age_s=MAX_AGE_S)
            self.seen.claim(cid, exp, nonce)
        except CommandRefused as e:
            return e.code
        await self.seen.record(cid, "open", exp)
        return "ok"

    def rows(self) -> set[str]:
        return set(self.store.read_sync(lambda c: [r[0] for r in c.execute("SELECT id FROM seen_commands")]))


async def test_spent_ids_stay_spent_across_a_restart(tmp_path: Path) -> None:
    r = Replay(tmp_path / "panel.db")
    exp = r.clock.wall() + 20
    assert await r.accept("cmd-exp-0001", exp, synced=True) == "ok"
    assert await r.accept("cmd-exp-0001", exp, synced=True) == "replayed"
    assert await r.accept("cmd-nonce-01", None, r.nonces.current, synced=False) == "ok"
    r.store.close()

    again = Replay(tmp_path / "panel.db", boot="boot-2", clock=r.clock)
    assert await again.accept("cmd-exp-0001", exp, synced=True) == "replayed"
    # The nonce-only id of the boot that is over goes at the first prune: its nonce can never pass again.
    assert "cmd-nonce-01" not in again.seen and await again.seen.prune() == 1
    assert again.rows() == {"cmd-exp-0001"}
    again.store.close()


async def test_ids_are_pruned_while_the_clock_is_unsynced_and_by_monotonic_time(tmp_path: Path) -> None:
    # On main, ids were pruned only while the clock was synchronised: an offline panel kept every id forever.
    r = Replay(tmp_path / "panel.db")
    for i in range(50):
        assert await r.accept(f"cmd-nonce-{i:03d}", None, r.nonces.current, synced=False) == "ok"
    used = r.nonces.current
    assert len(r.seen) == 50 and await r.seen.prune() == 0  # the nonce is current: a replay could pass
    r.clock.advance(MAX_AGE_S)
    assert await r.seen.prune() == 0  # the previous nonce is still accepted
    r.clock.advance(MAX_AGE_S)
    assert await r.seen.prune() == 50 and len(r.seen) == 0 and r.rows() == set()
    # Forgotten, and still refused: the nonce it carried is gone, whatever the wall clock says.
    r.clock.step_wall(-10 * DAY)
    assert await r.accept("cmd-nonce-000", None, used, synced=False) == "stale_nonce"
    r.store.close()


async def test_a_wall_clock_step_back_cannot_reopen_a_forgotten_id(tmp_path: Path) -> None:
    r = Replay(tmp_path / "panel.db")
    exp = r.clock.wall() + MAX_AGE_S
    assert await r.accept("cmd-exp-0001", exp, synced=True) == "ok"
    r.clock.advance(KEEP_S - 1)
    assert await r.seen.prune() == 0
    r.clock.advance(1)
    assert await r.seen.prune() == 1 and r.rows() == set() and r.seen.floor == exp
    # NTP steps the clock back: by the wall clock the captured command is fresh again (exp 20 s ahead).
    back = KEEP_S - 10
    r.clock.step_wall(-back)
    check_fresh(exp, None, synced=True, now=r.clock.wall(), nonces=r.nonces, max_age_s=MAX_AGE_S)
    assert await r.accept("cmd-exp-0001", exp, synced=True) == "expired"
    # The backend's fresh commands (exp after the forgotten one's, by the backend's clock) are above it.
    r.clock.step_wall(back)
    assert await r.accept("cmd-exp-0002", r.clock.wall() + 10, synced=True) == "ok"
    r.store.close()

    # The floor is durable: written with the deletion, in one transaction.
    again = Replay(tmp_path / "panel.db", boot="boot-2", clock=r.clock)
    again.clock.step_wall(-back)
    assert again.seen.floor == exp
    assert await again.accept("cmd-exp-0001", exp, synced=True) == "expired"
    again.store.close()


async def test_ids_loaded_at_start_are_kept_for_one_window_of_monotonic_time(tmp_path: Path) -> None:
    r = Replay(tmp_path / "panel.db")
    exp = r.clock.wall() + MAX_AGE_S
    assert await r.accept("cmd-exp-0001", exp, synced=True) == "ok"
    r.store.close()
    again = Replay(tmp_path / "panel.db", boot="boot-2", clock=FakeClock(start=5.0, wall_start=r.clock.wall()))
    assert await again.seen.prune() == 0 and "cmd-exp-0001" in again.seen
    again.clock.advance(KEEP_S)
    assert await again.seen.prune() == 1 and again.seen.floor == exp
    again.store.close()


async def test_the_cap_evicts_oldest_first_and_refuses_rather_than_reopens(tmp_path: Path) -> None:
    r = Replay(tmp_path / "panel.db", max_ids=5)
    base = r.clock.wall()
    for i in range(5):
        assert await r.accept(f"cmd-exp-{i:04d}", base + 20 + i, synced=True) == "ok"
    assert await r.accept("cmd-exp-0005", base + 25, synced=True) == "ok"
    assert len(r.seen) == 5 and "cmd-exp-0000" not in r.seen and r.seen.floor == base + 20
    # The evicted command is refused, not reopened, though its exp is still ahead of the clock.
    assert await r.accept("cmd-exp-0000", base + 20, synced=True) == "expired"
    assert await r.accept("cmd-exp-0003", base + 23, synced=True) == "replayed"
    assert await r.seen.prune() == 1 and "cmd-exp-0000" not in r.rows() and len(r.rows()) == 5

    # Nonce-only ids: eviction retires the nonces, so the evicted command's nonce is refused.
    n = Replay(tmp_path / "nonces.db", max_ids=3)
    first = n.nonces.current
    for i in range(3):
        assert await n.accept(f"cmd-nonce-{i:03d}", None, first, synced=False) == "ok"
    assert await n.accept("cmd-nonce-003", None, first, synced=False) == "ok"
    assert n.nonces.current != first and n.nonces.previous is None
    assert await n.accept("cmd-nonce-000", None, first, synced=False) == "stale_nonce"
    assert await n.accept("cmd-nonce-003", None, first, synced=False) == "stale_nonce"
    # Retiring the nonce freed every id spent on it at the next claim that needed room.
    assert await n.accept("cmd-nonce-004", None, n.nonces.current, synced=False) == "ok"
    assert "cmd-nonce-004" in n.seen and len(n.seen) == 1
    r.store.close()
    n.store.close()


async def test_a_store_failure_while_pruning_keeps_the_ids_on_disk(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    r = Replay(tmp_path / "panel.db")
    assert await r.accept("cmd-exp-0001", r.clock.wall() + 10, synced=True) == "ok"
    r.clock.advance(KEEP_S)
    r.store.close()  # the disk went away
    assert await r.seen.prune() == 0 and r.seen.backlog == 1 and "could not prune" in caplog.text
    again = Replay(tmp_path / "panel.db", boot="boot-2", clock=r.clock)
    assert "cmd-exp-0001" in again.seen  # still spent after the restart
    again.store.close()
