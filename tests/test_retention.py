"""History stays bounded: old access rows and delivered events go, undelivered events never do."""

from __future__ import annotations

from pathlib import Path

from panel.platform import AccessRow, Store, prune


def fill(store: Store, n: int, delivered_upto: int) -> None:
    def write(tx: object) -> None:
        for i in range(n):
            tx.insert_event(id=f"e{i}", type="door.locked", key="door", time=float(i), boot="b", mono=float(i),  # type: ignore[attr-defined]
                            data={})
            tx.insert_access(AccessRow(f"a{i}", float(i), "main", "remote", "x", "api", None, 1.0, f"e{i}"))  # type: ignore[attr-defined]
        tx.execute("UPDATE events SET delivered = 1 WHERE seq <= ?", (delivered_upto,))  # type: ignore[attr-defined]
    store.write_sync(write)


def counts(store: Store) -> tuple[int, int, int]:
    return store.read_sync(lambda c: (
        c.execute("SELECT count(*) FROM access_log").fetchone()[0],
        c.execute("SELECT count(*) FROM events").fetchone()[0],
        c.execute("SELECT min(seq) FROM events WHERE delivered IS NULL").fetchone()[0]))


def test_keeps_the_newest_rows_and_every_undelivered_event(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    fill(store, 300, delivered_upto=120)
    removed = store.write_sync(lambda tx: prune(tx, 100, events_are_history=False))
    access, events, first_undelivered = counts(store)
    assert access == 100 and removed[0] == 200
    # Only delivered events older than the newest 100 may go: seqs 1-120 are delivered, so 1-120 go.
    assert removed[1] == 120 and events == 180 and first_undelivered == 121
    store.close()


def test_without_a_webhook_endpoint_events_are_plain_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    fill(store, 250, delivered_upto=0)
    store.write_sync(lambda tx: prune(tx, 100, events_are_history=True))
    newest = store.read_sync(lambda c: [r[0] for r in c.execute("SELECT id FROM events ORDER BY seq")])
    assert len(newest) == 100 and newest[0] == "e150" and newest[-1] == "e249"
    store.close()
