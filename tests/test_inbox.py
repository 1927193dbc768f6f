"""Storing deliveries in the inbox (service.inbox): once per event, durably."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from service import inbox
from service.webhooks import Delivery, Status

DELIVERY = Delivery(
    event_key="v2:7c812ffd-8f50-45ea-a597-b8fcba2da9c0",
    version="2",
    object="person",
    action="change",
    entity_id=8,
    occurred_at=1669303115,
    status="pending",
    reason=None,
    payload='{"meta": {}}',
)


def rows(path: Path) -> list[tuple[object, ...]]:
    """Every inbox row, read through a connection of its own."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(
            "SELECT event_key, version, object, action, entity_id, occurred_at, received_at, "
            "status, reason, payload FROM inbox ORDER BY id"
        ).fetchall()


def test_a_delivery_is_stored_with_every_field(clean_db: Path) -> None:
    """A pending delivery is "received"; the row holds what the drain needs."""
    assert inbox.store(clean_db, DELIVERY, 1_900_000_000) == "received"
    assert rows(clean_db) == [
        (
            DELIVERY.event_key,
            "2",
            "person",
            "change",
            8,
            1669303115,
            1_900_000_000,
            "pending",
            None,
            '{"meta": {}}',
        )
    ]


def test_a_second_delivery_with_the_same_key_is_a_duplicate_and_changes_nothing(
    clean_db: Path,
) -> None:
    """ON CONFLICT DO NOTHING: the first row stays as it was."""
    inbox.store(clean_db, DELIVERY, 100)
    later = replace(DELIVERY, payload='{"meta": {"attempt": 2}}')
    assert inbox.store(clean_db, later, 200) == "duplicate"
    (row,) = rows(clean_db)
    assert row[6] == 100 and row[9] == '{"meta": {}}'


def test_an_ignored_delivery_is_stored_with_its_reason(clean_db: Path) -> None:
    """An ignored delivery is kept for the record, with its reason."""
    ignored = replace(
        DELIVERY,
        event_key="v2:other",
        object="activity",
        status="ignored",
        reason="object 'activity' is not used by the sync",
    )
    assert inbox.store(clean_db, ignored, 5) == "ignored"
    assert rows(clean_db)[0][7:9] == ("ignored", "object 'activity' is not used by the sync")


def test_the_ingest_connection_syncs_fully(clean_db: Path) -> None:
    """synchronous=FULL (2) in WAL, with foreign keys and the busy timeout."""
    connection = inbox.ingest_connection(clean_db)
    try:
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    finally:
        connection.close()


def test_the_insert_runs_on_the_full_sync_connection(
    clean_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store writes through ingest_connection, whose setting is FULL at the insert."""
    seen: list[int] = []
    original = inbox.ingest_connection

    def spying(path: Path) -> sqlite3.Connection:
        connection = original(path)
        seen.append(connection.execute("PRAGMA synchronous").fetchone()[0])
        return connection

    monkeypatch.setattr(inbox, "ingest_connection", spying)
    inbox.store(clean_db, DELIVERY, 1)
    assert seen == [2]


def test_find_reads_a_stored_delivery_through_pony(clean_db: Path) -> None:
    """The drain's side: a plain dataclass out of the db_session."""
    inbox.store(clean_db, DELIVERY, 7)
    found = inbox.find(DELIVERY.event_key)
    assert found is not None
    assert (found.status, found.entity_id, found.received_at) == ("pending", 8, 7)
    assert inbox.find("v2:nothing") is None


def test_the_status_check_refuses_unknown_statuses(clean_db: Path) -> None:
    """Only pending, ignored and processed."""
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        inbox.store(clean_db, replace(DELIVERY, status="queued"), 1)  # type: ignore[arg-type]


def test_prune_deletes_only_done_deliveries_older_than_a_week(clean_db: Path) -> None:
    week = inbox.KEEP_SECONDS
    now = 2_000_000_000
    cases: dict[str, tuple[Status, int, str]] = {
        "old-processed": ("pending", now - week - 1, "processed"),
        "old-ignored": ("ignored", now - week - 1, "ignored"),
        "old-pending": ("pending", now - week - 1, "pending"),
        "recent-processed": ("pending", now - week + 1, "processed"),
    }
    for key, (status, received_at, final) in cases.items():
        inbox.store(clean_db, replace(DELIVERY, event_key=key, status=status), received_at)
        with contextlib.closing(sqlite3.connect(clean_db)) as connection, connection:
            connection.execute("UPDATE inbox SET status = ? WHERE event_key = ?", (final, key))

    assert inbox.prune(now, batch=1) == 2  # batches of one: the loop goes on until done
    kept = {row[0] for row in rows(clean_db)}
    assert kept == {"old-pending", "recent-processed"}
