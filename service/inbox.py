"""The webhook inbox: every delivery committed durably before it is answered.

The write goes through its own short-lived sqlite3 connection opened with
``synchronous=FULL`` rather than through Pony. Pony keeps one connection per thread and
shares it with every other ``db_session`` of that thread; switching it to FULL and back
for one insert would leak FULL (or NORMAL) into unrelated work whenever a switch was
skipped, and Pony may already hold a transaction open there, inside which the setting
cannot be trusted to apply. A dedicated connection makes the durability of this one
commit obvious and independent of anything else, for well under a millisecond of setup
(the commit's fsync costs more). WAL with FULL syncs the log on every commit, so an
answered delivery survives a power loss (``reference/reliability.md`` section 4).

The web process writes through ``service.inbox_writer``, which commits the deliveries that
arrive together in one synced transaction. Reads (``find``) use Pony like the rest of the
service.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service import schema
from service.db import InboxEvent, db, db_session
from service.webhooks import Delivery

Outcome = Literal["received", "duplicate", "ignored"]

_INSERT = (
    "INSERT INTO inbox (event_key, version, object, action, entity_id, occurred_at, "
    "received_at, status, reason, payload) VALUES {rows}"
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_STORED = "SELECT event_key FROM inbox WHERE event_key IN ({keys})"
# Rows per statement: 10 parameters each, well under SQLite's parameter limit.
_ROWS_PER_STATEMENT = 256


@dataclass(frozen=True)
class InboxRow:
    """One stored delivery."""

    id: int
    event_key: str
    version: str | None
    object: str | None
    action: str | None
    entity_id: int | None
    occurred_at: int | None
    received_at: int
    status: str
    reason: str | None
    payload: str


def ingest_connection(path: Path) -> sqlite3.Connection:
    """A new autocommit connection to ``path`` with the service's PRAGMAs and FULL sync."""
    return schema.connect(path, synchronous="FULL")


def store_many(
    connection: sqlite3.Connection, deliveries: Sequence[tuple[Delivery, int]]
) -> list[Outcome]:
    """Commit each (delivery, received_at) to the inbox in one transaction; blocking.

    ``connection`` is an ``ingest_connection``: the commit is synced before this returns,
    so every delivery it covers may be acknowledged. Each outcome is "duplicate" when a
    delivery with its key was already stored (earlier, or earlier in this group; nothing is
    written for it), else "received" (pending) or "ignored". Raises ``sqlite3.Error`` when
    the group could not be committed: then none of it was.
    """
    if not connection.in_transaction and len(deliveries) <= _ROWS_PER_STATEMENT:
        # The common case, no delivery stored before: one statement, its own synced
        # transaction. Each step into SQLite gives up the GIL and must win it back from the
        # event loop, so one step per group costs far less than the four of a transaction.
        # A duplicate key fails the statement whole (nothing of it is written); the
        # transaction below then tells the duplicates apart.
        try:
            connection.execute(_insert(len(deliveries)), _row_params(deliveries))
        except sqlite3.IntegrityError:
            pass
        else:
            return [_stored_outcome(delivery) for delivery, _ in deliveries]
    outcomes: list[Outcome] = []
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Few statements per group, whatever its size. Under the write lock, what is
        # stored cannot change meanwhile.
        keys = [delivery.event_key for delivery, _ in deliveries]
        stored: set[str] = set()
        for start in range(0, len(keys), _ROWS_PER_STATEMENT):
            chunk_keys = keys[start : start + _ROWS_PER_STATEMENT]
            query = _STORED.format(keys=", ".join("?" * len(chunk_keys)))
            stored.update(row[0] for row in connection.execute(query, chunk_keys))
        new: list[tuple[Delivery, int]] = []
        for delivery, received_at in deliveries:
            if delivery.event_key in stored:
                outcomes.append("duplicate")
                continue
            stored.add(delivery.event_key)  # a second copy in this group is a duplicate
            new.append((delivery, received_at))
            outcomes.append(_stored_outcome(delivery))
        for start in range(0, len(new), _ROWS_PER_STATEMENT):
            chunk = new[start : start + _ROWS_PER_STATEMENT]
            connection.execute(_insert(len(chunk)), _row_params(chunk))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return outcomes


def _insert(rows: int) -> str:
    return _INSERT.format(rows=", ".join([_ROW] * rows))


def _row_params(deliveries: Sequence[tuple[Delivery, int]]) -> list[object]:
    params: list[object] = []
    for delivery, received_at in deliveries:
        params += (
            delivery.event_key,
            delivery.version,
            delivery.object,
            delivery.action,
            delivery.entity_id,
            delivery.occurred_at,
            received_at,
            delivery.status,
            delivery.reason,
            delivery.payload,
        )
    return params


def _stored_outcome(delivery: Delivery) -> Outcome:
    return "received" if delivery.status == "pending" else "ignored"


def store(path: Path, delivery: Delivery, received_at: int) -> Outcome:
    """Commit one ``delivery`` to the inbox of the database at ``path`` on a connection of
    its own; blocking. Outcomes and errors as ``store_many``."""
    connection = ingest_connection(path)
    try:
        return store_many(connection, [(delivery, received_at)])[0]
    finally:
        connection.close()


@db_session
def find(event_key: str) -> InboxRow | None:
    """The stored delivery with ``event_key``, if any."""
    row = InboxEvent.get(event_key=event_key)
    if row is None:
        return None
    return InboxRow(
        id=row.id,
        event_key=row.event_key,
        version=row.version,
        object=row.object,
        action=row.action,
        entity_id=row.entity_id,
        occurred_at=row.occurred_at,
        received_at=row.received_at,
        status=row.status,
        reason=row.reason,
        payload=row.payload,
    )


KEEP_SECONDS = 7 * 24 * 3600
PRUNE_BATCH = 5000


@db_session
def _prune_batch(before: int, limit: int) -> int:
    cursor = db.execute(
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox "
        "WHERE status IN ('processed', 'ignored') AND received_at < $before LIMIT $limit)"
    )
    return int(cursor.rowcount)


def prune(now: int, keep_seconds: int = KEEP_SECONDS, batch: int = PRUNE_BATCH) -> int:
    """Delete deliveries that were processed or ignored more than ``keep_seconds`` ago.

    Pending ones are never pruned, however old. Batches keep each write transaction short,
    so webhook intake is never held up behind a large delete.
    """
    before = now - keep_seconds
    total = 0
    while True:
        deleted = _prune_batch(before, batch)
        total += deleted
        if deleted < batch:
            return total
