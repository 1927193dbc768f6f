"""Bringing a database file to the current schema, and the connection settings it needs.

A new database gets ``schema.sql``; an older one gets the numbered steps in
``service/migrations/`` in order, each in its own transaction with the version it reaches
recorded in ``PRAGMA user_version``. Nothing is ever dropped or recreated.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

MIN_SQLITE = (3, 38, 0)
BUSY_TIMEOUT_MS = 5000

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.sql"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaError(Exception):
    """The database cannot be brought to the current schema; the message says why."""


@dataclass(frozen=True)
class Migration:
    """One numbered step: the SQL that brings version ``version - 1`` to ``version``."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration step, in version order."""
    steps = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = re.match(r"(\d+)_", path.name)
        if match:
            steps.append(Migration(int(match.group(1)), path.stem, path.read_text("utf-8")))
    numbers = [m.version for m in steps]
    if numbers != list(range(1, len(steps) + 1)):
        raise SchemaError(f"migration numbers must run 1..n without gaps, found {numbers}")
    return steps


def latest_version() -> int:
    """The schema version this release writes."""
    return len(migrations())


def check_sqlite_version(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """Refuse an SQLite too old for ``unixepoch()`` with a plain message."""
    if version < MIN_SQLITE:
        found = ".".join(map(str, version))
        need = ".".join(map(str, MIN_SQLITE))
        raise SchemaError(
            f"SQLite {found} is too old: this service needs SQLite {need} or later "
            "(for unixepoch()). Use a Python built against a newer SQLite."
        )


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    # Switching a new database to WAL needs its write lock, and SQLite does not wait for it
    # (the busy handler is skipped where waiting could deadlock): two processes opening a
    # new file at once saw "database is locked". Retry for as long as busy_timeout would wait.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def apply_pragmas(connection: sqlite3.Connection, synchronous: str = "NORMAL") -> None:
    """Set what every connection needs: WAL, the given sync level, foreign keys, busy timeout."""
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _switch_to_wal(connection)
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute("PRAGMA foreign_keys = ON")


def connect(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with the service's PRAGMAs applied."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    apply_pragmas(connection, synchronous)
    return connection


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (executescript would commit mid-migration)."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") for part in buffer.strip().splitlines() if part.strip()
    ):
        raise SchemaError("a migration ends with an incomplete statement")
    return statements


def _user_tables(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return [row[0] for row in rows]


def migrate(path: Path, target: int | None = None) -> int:
    """Bring the database at ``path`` to ``target`` (default: the latest) and return the version.

    Safe when several processes start at once: the version is read and moved inside one
    ``BEGIN IMMEDIATE`` transaction per step.
    """
    check_sqlite_version()
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = migrations()
    target = len(steps) if target is None else target
    connection = connect(path)
    try:
        while True:
            connection.execute("BEGIN IMMEDIATE")
            try:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > len(steps):
                    raise SchemaError(
                        f"the database {path} is at schema version {version}, newer than this "
                        f"release knows ({len(steps)}); run the newer release"
                    )
                if version >= target:
                    connection.execute("COMMIT")
                    return int(version)
                if version == 0 and _user_tables(connection):
                    raise SchemaError(
                        f"the database {path} has tables but no schema version; "
                        "it was not made by this service"
                    )
                if version == 0 and target == len(steps):
                    sql, reached = SCHEMA_FILE.read_text("utf-8"), len(steps)
                else:
                    sql, reached = steps[version].sql, version + 1
                for statement in split_statements(sql):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {reached}")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
    finally:
        connection.close()
