"""The Pony mapping and the database agree in both directions."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from service import schema
from service.db import SyncJob, db, db_session


def mapped_columns(entity: Any) -> dict[str, dict[str, Any]]:
    """Each column an entity maps, with what the mapping says about it."""
    result = {}
    for attr in entity._attrs_:
        if not attr.columns:
            continue
        (column,) = attr.columns
        target = attr.py_type._table_ if hasattr(attr.py_type, "_table_") else None
        result[column] = {
            "not_null": attr.is_required and not attr.nullable,
            "pk": attr.is_pk,
            "references": target,
        }
    return result


@pytest.fixture
def connection(tmp_path: Path, database_file: Path) -> sqlite3.Connection:
    """A fresh database; asking for ``database_file`` makes Pony generate its mapping."""
    path = tmp_path / "map.db"
    schema.migrate(path)
    return schema.connect(path)


def test_every_table_is_mapped_and_every_entity_has_a_table(
    connection: sqlite3.Connection,
) -> None:
    """No table without an entity, no entity without a table."""
    tables = {
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    assert {entity._table_ for entity in db.entities.values()} == tables


@pytest.mark.parametrize("name", sorted(db.entities))
def test_columns_agree_both_ways(connection: sqlite3.Connection, name: str) -> None:
    """Same column names; NOT NULL in the database exactly where the entity requires a value."""
    entity = db.entities[name]
    mapped = mapped_columns(entity)
    info = connection.execute(f'PRAGMA table_info("{entity._table_}")').fetchall()
    columns = {row[1]: row for row in info}
    assert set(mapped) == set(columns)
    for column, row in columns.items():
        is_pk = bool(row[5])
        assert mapped[column]["pk"] == is_pk, column
        if not is_pk:
            # A NOT NULL column with a database default is still required in Python.
            assert mapped[column]["not_null"] == bool(row[3]), column


@pytest.mark.parametrize("name", sorted(db.entities))
def test_foreign_keys_agree_both_ways(connection: sqlite3.Connection, name: str) -> None:
    """Every entity reference is a database foreign key to that table, and nothing more."""
    entity = db.entities[name]
    from_entity = {
        column: spec["references"]
        for column, spec in mapped_columns(entity).items()
        if spec["references"]
    }
    from_database = {
        row[3]: row[2] for row in connection.execute(f'PRAGMA foreign_key_list("{entity._table_}")')
    }
    assert from_entity == from_database


def test_timestamps_and_big_ids_are_64_bit(clean_db: Path) -> None:
    """Pipedrive ids and unix seconds beyond 2**31 round-trip through Pony."""
    from service.db import Filter

    big = 2**40

    @db_session
    def write_and_read() -> tuple[int, int]:
        f = Filter(id=big, name="big")
        job = SyncJob(filter=f, status="completed", created_at=big, completed_at=big + 1)
        job.flush()  # an auto id exists only once the row is written
        return job.id, job.created_at

    job_id, created = write_and_read()
    assert created == big

    @db_session
    def read() -> int:
        value: int = SyncJob.get(id=job_id).completed_at
        return value

    assert read() == big + 1


def test_pony_connections_get_the_pragmas(clean_db: Path) -> None:
    """The on_connect hook applies WAL, NORMAL, foreign keys and the busy timeout."""

    @db_session
    def pragmas() -> list[Any]:
        connection = db.get_connection()
        return [
            connection.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        ]

    assert pragmas() == ["wal", 1, 1, 5000]
