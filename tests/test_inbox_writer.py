"""The inbox writer: deliveries arriving together share one synced commit, each gets its
own outcome, and a failed commit answers every delivery of its group with the error."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from service import inbox
from service.inbox_writer import InboxWriter
from service.webhooks import Delivery
from tests.conftest import wait_for


def delivery(key: str, status: str = "pending") -> Delivery:
    """A delivery with event key ``key``."""
    payload = '{"k": "' + key + '"}'
    return Delivery(key, "2", "person", "change", 7, 1, status, None, payload)  # type: ignore[arg-type]


def rows(path: Path) -> list[tuple[str, str]]:
    """(event_key, status) of every inbox row, by id."""
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT event_key, status FROM inbox ORDER BY id").fetchall()


class Hints:
    """Counts drain hints."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def hints() -> Hints:
    """The drain hint the writer calls."""
    return Hints()


@pytest.fixture
def writer(clean_db: Path, hints: Hints) -> Iterator[InboxWriter]:
    """A running writer on the test database."""
    running = InboxWriter(clean_db, hints)
    running.start()
    yield running
    running.stop()


async def store_all(writer: InboxWriter, deliveries: Sequence[Delivery]) -> list[object]:
    """Hand every delivery to the writer at once; each outcome or error, in order."""
    return list(
        await asyncio.gather(
            *(writer.store(d, 1_900_000_001) for d in deliveries), return_exceptions=True
        )
    )


def test_concurrent_deliveries_share_commits_and_each_gets_its_outcome(
    writer: InboxWriter, clean_db: Path, hints: Hints, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    real = inbox.store_many

    def counting(connection: sqlite3.Connection, items: Sequence[tuple[Delivery, int]]) -> Any:
        groups.append(len(items))
        return real(connection, items)

    monkeypatch.setattr(inbox, "store_many", counting)
    batch = [delivery(f"v2:{i}") for i in range(200)]
    batch += [delivery("v2:5"), delivery("v2:ignored", status="ignored")]
    outcomes = asyncio.run(store_all(writer, batch))
    assert outcomes == ["received"] * 200 + ["duplicate", "ignored"]
    assert len(rows(clean_db)) == 201
    assert sum(groups) == 202
    # 202 deliveries handed over at once cannot take 202 commits: they queue behind the
    # first commit and share the next ones.
    assert len(groups) < 202
    # The hint is passed on by a thread of its own: at least one arrives, never more than
    # one per commit.
    wait_for(lambda: hints.calls >= 1, timeout=5)
    assert hints.calls <= len(groups)


def test_a_failed_commit_fails_its_whole_group_and_stores_nothing(
    writer: InboxWriter, clean_db: Path, hints: Hints, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = inbox.store_many

    def disk_full(connection: sqlite3.Connection, items: Sequence[tuple[Delivery, int]]) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(inbox, "store_many", disk_full)
    outcomes = asyncio.run(store_all(writer, [delivery("v2:a"), delivery("v2:b")]))
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    assert rows(clean_db) == [] and hints.calls == 0
    monkeypatch.setattr(inbox, "store_many", real)
    # The writer recovers by itself once the fault clears.
    assert asyncio.run(store_all(writer, [delivery("v2:a")])) == ["received"]
    assert rows(clean_db) == [("v2:a", "pending")]


def test_a_group_whose_transaction_breaks_midway_is_rolled_back(clean_db: Path) -> None:
    connection = inbox.ingest_connection(clean_db)
    try:
        broken = Delivery("v2:x", "9", "person", "change", 1, 1, "pending", None, "{}")
        with pytest.raises(sqlite3.IntegrityError):
            # version '9' breaks the CHECK constraint after the first row went in.
            inbox.store_many(connection, [(delivery("v2:first"), 1), (broken, 1)])
        assert not connection.in_transaction
    finally:
        connection.close()
    assert rows(clean_db) == []


def test_store_after_stop_is_refused(clean_db: Path) -> None:
    stopped = InboxWriter(clean_db)
    with pytest.raises(RuntimeError):
        asyncio.run(stopped.store(delivery("v2:z"), 1))
    assert rows(clean_db) == []


def test_a_writer_stopped_and_started_again_stores_again(clean_db: Path) -> None:
    """An app's lifespan may run more than once (a second test client, say)."""
    writer = InboxWriter(clean_db)
    writer.start()
    assert asyncio.run(store_all(writer, [delivery("v2:one")])) == ["received"]
    writer.stop()
    writer.start()
    try:
        assert asyncio.run(store_all(writer, [delivery("v2:two")])) == ["received"]
    finally:
        writer.stop()
    assert rows(clean_db) == [("v2:one", "pending"), ("v2:two", "pending")]
