"""The schema against the specification (DESIGN section 4), written out here rather than
parsed from schema.sql, and the migrations from every earlier version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service import schema

# (name, type, not null, default) per column of the four specified tables.
SPECIFIED_COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "user": [("id", "TEXT", False, None)],
    "session": [
        ("id", "TEXT", False, None),
        ("user_id", "TEXT", True, None),
        ("expires_at", "INTEGER", True, None),
    ],
    "filters": [
        ("id", "INTEGER", False, None),
        ("name", "TEXT", True, None),
        ("brevo_list_id", "INTEGER", False, None),
        ("deleted_at", "INTEGER", False, None),
    ],
    "sync_jobs": [
        ("id", "INTEGER", False, None),
        ("filter_id", "INTEGER", True, None),
        ("status", "TEXT", True, None),
        ("created_at", "INTEGER", True, "unixepoch()"),
        ("completed_at", "INTEGER", False, None),
        ("total_fetched", "INTEGER", False, "0"),
        ("total_added", "INTEGER", False, "0"),
        ("error_message", "TEXT", False, None),
    ],
}
PRIMARY_KEYS = {"user": "id", "session": "id", "filters": "id", "sync_jobs": "id"}
# (table, column) -> (referenced table, referenced column, ON DELETE)
FOREIGN_KEYS = {
    ("session", "user_id"): ("user", "id", "NO ACTION"),
    ("sync_jobs", "filter_id"): ("filters", "id", "CASCADE"),
}
SPECIFIED_INDEXES = {
    "idx_session_user_id": ("session", ["user_id"]),
    "idx_session_expires_at": ("session", ["expires_at"]),
    "idx_sync_jobs_filter_id": ("sync_jobs", ["filter_id"]),
    "idx_sync_jobs_status": ("sync_jobs", ["status"]),
    "idx_sync_jobs_created_at": ("sync_jobs", ["created_at"]),
    "idx_filters_deleted_at": ("filters", ["deleted_at"]),
}
# Columns later issues need, which issue 2 asks for by name.
REQUIRED_ADDITIONS = {
    "filters": {"type"},
    "sync_jobs": {"kind", "trigger", "total_updated", "total_removed", "total_skipped"},
}


def _strip(default: str | None) -> str | None:
    if default is None:
        return None
    return default[1:-1] if default.startswith("(") and default.endswith(")") else default


def columns(connection: sqlite3.Connection, table: str) -> dict[str, tuple[str, bool, str | None]]:
    rows = connection.execute(f'PRAGMA table_info("{table}")').fetchall()
    return {row[1]: (row[2].upper(), bool(row[3]), _strip(row[4])) for row in rows}


def shape(connection: sqlite3.Connection) -> dict[str, object]:
    """Everything PRAGMAs say about the schema, for comparing two databases."""
    tables = sorted(
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    )
    result: dict[str, object] = {}
    for table in tables:
        indexes = connection.execute(f'PRAGMA index_list("{table}")').fetchall()
        result[table] = {
            "columns": connection.execute(f'PRAGMA table_info("{table}")').fetchall(),
            "foreign_keys": connection.execute(f'PRAGMA foreign_key_list("{table}")').fetchall(),
            "indexes": sorted(
                (
                    index[1],
                    index[2],
                    index[4],
                    connection.execute(f'PRAGMA index_info("{index[1]}")').fetchall(),
                )
                for index in indexes
            ),
        }
    return result


@pytest.fixture
def fresh(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "fresh.db"
    schema.migrate(path)
    return schema.connect(path)


def test_specified_columns_match_the_specification(fresh: sqlite3.Connection) -> None:
    """Every specified column has its name, type, NOT NULL and default, in order."""
    for table, specified in SPECIFIED_COLUMNS.items():
        actual = columns(fresh, table)
        assert list(actual)[: len(specified)] == [c[0] for c in specified], table
        for name, type_, not_null, default in specified:
            assert actual[name] == (type_, not_null, default), (table, name)


def test_primary_keys_and_autoincrement(fresh: sqlite3.Connection) -> None:
    """The specified primary keys; sync_jobs ids are never reused (AUTOINCREMENT)."""
    for table, key in PRIMARY_KEYS.items():
        rows = fresh.execute(f'PRAGMA table_info("{table}")').fetchall()
        assert [row[1] for row in rows if row[5]] == [key], table
    sql = fresh.execute("SELECT sql FROM sqlite_master WHERE name = 'sync_jobs'").fetchone()[0]
    assert "AUTOINCREMENT" in sql.upper()


def test_foreign_keys_and_their_delete_action(fresh: sqlite3.Connection) -> None:
    """session.user_id -> user.id; sync_jobs.filter_id -> filters.id ON DELETE CASCADE."""
    found = {}
    for table in SPECIFIED_COLUMNS:
        for row in fresh.execute(f'PRAGMA foreign_key_list("{table}")'):
            found[(table, row[3])] = (row[2], row[4], row[6])
    assert found == FOREIGN_KEYS


def test_status_check_allows_only_the_three_statuses(fresh: sqlite3.Connection) -> None:
    """The CHECK on sync_jobs.status."""
    fresh.execute("INSERT INTO filters (id, name) VALUES (1, 'f')")
    for status in ("processing", "completed", "failed"):
        fresh.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (1, ?)", (status,))
        fresh.execute("DELETE FROM sync_jobs")
    for status in ("queued", "PROCESSING", ""):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            fresh.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (1, ?)", (status,))


def test_the_six_specified_indexes(fresh: sqlite3.Connection) -> None:
    """The six indexes exist under their names, on their columns."""
    for name, (table, cols) in SPECIFIED_INDEXES.items():
        info = fresh.execute(f'PRAGMA index_info("{name}")').fetchall()
        assert [row[2] for row in info] == cols, name
        owner = fresh.execute("SELECT tbl_name FROM sqlite_master WHERE name = ?", (name,))
        assert owner.fetchone()[0] == table


def test_added_columns_are_nullable_or_defaulted(fresh: sqlite3.Connection) -> None:
    """Additions never break an insert written for the specified tables."""
    for table, specified in SPECIFIED_COLUMNS.items():
        names = {c[0] for c in specified}
        actual = columns(fresh, table)
        added = {n: v for n, v in actual.items() if n not in names}
        for name, (_, not_null, default) in added.items():
            assert not not_null or default is not None, (table, name)
        assert REQUIRED_ADDITIONS.get(table, set()) <= set(added), table


def test_inserts_written_for_the_specification_still_work(fresh: sqlite3.Connection) -> None:
    """Rows inserted with only the specified columns get the defaults."""
    fresh.execute("INSERT INTO \"user\" (id) VALUES ('u')")
    fresh.execute("INSERT INTO session (id, user_id, expires_at) VALUES ('s', 'u', 1)")
    fresh.execute("INSERT INTO filters (id, name) VALUES (7, 'f')")
    fresh.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (7, 'completed')")
    row = fresh.execute(
        'SELECT created_at, total_fetched, kind, "trigger", forced FROM sync_jobs'
    ).fetchone()
    assert row[0] > 1_700_000_000 and row[1:] == (0, "full", "admin", 0)


def test_deleting_a_filter_deletes_its_jobs(fresh: sqlite3.Connection) -> None:
    """ON DELETE CASCADE, with foreign keys on for the connection."""
    fresh.execute("INSERT INTO filters (id, name) VALUES (1, 'a'), (2, 'b')")
    fresh.execute(
        "INSERT INTO sync_jobs (filter_id, status) VALUES (1, 'completed'), (1, 'failed'), "
        "(2, 'completed')"
    )
    fresh.execute("DELETE FROM filters WHERE id = 1")
    assert fresh.execute("SELECT filter_id FROM sync_jobs").fetchall() == [(2,)]


def test_session_needs_an_existing_user(fresh: sqlite3.Connection) -> None:
    """The session -> user foreign key is enforced."""
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        fresh.execute("INSERT INTO session (id, user_id, expires_at) VALUES ('s', 'nobody', 1)")


def test_one_processing_job_per_filter(fresh: sqlite3.Connection) -> None:
    """The partial unique index makes the job row the filter's lock."""
    fresh.execute("INSERT INTO filters (id, name) VALUES (1, 'a')")
    fresh.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (1, 'processing')")
    fresh.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (1, 'completed')")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        fresh.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (1, 'processing')")


def test_connection_pragmas(fresh: sqlite3.Connection) -> None:
    """WAL, synchronous NORMAL, foreign keys on and a busy timeout of at least 5 s."""
    assert fresh.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert fresh.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert fresh.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert fresh.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_fresh_database_is_at_the_latest_version(fresh: sqlite3.Connection) -> None:
    """A new database records the version it was made at."""
    assert fresh.execute("PRAGMA user_version").fetchone()[0] == schema.latest_version() >= 2


def test_schema_sql_equals_every_migration_applied_in_order(tmp_path: Path) -> None:
    """schema.sql and migrations 1..n describe the same database."""
    from_file, stepped = tmp_path / "file.db", tmp_path / "steps.db"
    schema.migrate(from_file)
    for version in range(1, schema.latest_version() + 1):
        schema.migrate(stepped, target=version)
    assert shape(schema.connect(from_file)) == shape(schema.connect(stepped))


@pytest.mark.parametrize("version", range(1, schema.latest_version()))
def test_upgrade_from_every_earlier_version_keeps_the_data(tmp_path: Path, version: int) -> None:
    """A database made at an older version is brought forward in place, rows intact."""
    path = tmp_path / f"v{version}.db"
    schema.migrate(path, target=version)
    old = schema.connect(path)
    old.execute("INSERT INTO \"user\" (id) VALUES ('admin')")
    old.execute("INSERT INTO session (id, user_id, expires_at) VALUES ('h', 'admin', 99)")
    old.execute("INSERT INTO filters (id, name, brevo_list_id) VALUES (5, 'Leads', 12)")
    old.execute(
        "INSERT INTO sync_jobs (filter_id, status, created_at, total_fetched, total_added) "
        "VALUES (5, 'completed', 100, 3, 2)"
    )
    old.close()

    assert schema.migrate(path) == schema.latest_version()
    upgraded = schema.connect(path)
    assert upgraded.execute("SELECT id, user_id, expires_at FROM session").fetchall() == [
        ("h", "admin", 99)
    ]
    assert upgraded.execute("SELECT id, name, brevo_list_id FROM filters").fetchall() == [
        (5, "Leads", 12)
    ]
    assert upgraded.execute(
        "SELECT filter_id, status, created_at, total_fetched, total_added, kind FROM sync_jobs"
    ).fetchall() == [(5, "completed", 100, 3, 2, "full")]
    fresh = tmp_path / "fresh.db"
    schema.migrate(fresh)
    assert shape(upgraded) == shape(schema.connect(fresh))


def test_upgrade_fails_duplicate_processing_jobs_left_by_version_1(tmp_path: Path) -> None:
    """Version 1 could hold two processing jobs for a filter; the older one is failed."""
    path = tmp_path / "v1.db"
    schema.migrate(path, target=1)
    old = schema.connect(path)
    old.execute("INSERT INTO filters (id, name) VALUES (1, 'a')")
    old.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (1, 'processing')")
    old.execute("INSERT INTO sync_jobs (filter_id, status) VALUES (1, 'processing')")
    old.close()
    schema.migrate(path)
    rows = schema.connect(path).execute("SELECT id, status FROM sync_jobs ORDER BY id").fetchall()
    assert rows == [(1, "failed"), (2, "processing")]


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    """Start runs the migration every time; an up-to-date database is left alone."""
    path = tmp_path / "a.db"
    schema.migrate(path)
    before = shape(schema.connect(path))
    assert schema.migrate(path) == schema.latest_version()
    assert shape(schema.connect(path)) == before


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """Never guess at a schema we do not know."""
    path = tmp_path / "new.db"
    schema.migrate(path)
    schema.connect(path).execute(f"PRAGMA user_version = {schema.latest_version() + 1}")
    with pytest.raises(schema.SchemaError, match="newer than this release"):
        schema.migrate(path)


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    """A file with tables but no version was not made by us and is not overwritten."""
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)")
    with pytest.raises(schema.SchemaError, match="not made by this service"):
        schema.migrate(path)
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]


def test_a_failed_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step is one transaction: a broken step rolls back whole."""
    path = tmp_path / "a.db"
    schema.migrate(path, target=1)
    broken = schema.Migration(2, "0002_broken", "ALTER TABLE filters ADD COLUMN x INTEGER;\nBOGUS;")
    first = schema.migrations()[0]
    monkeypatch.setattr(schema, "migrations", lambda: [first, broken])
    with pytest.raises(sqlite3.OperationalError):
        schema.migrate(path)
    connection = schema.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "x" not in columns(connection, "filters")


@pytest.mark.parametrize("version", [(3, 37, 2), (3, 8, 0), (2, 99, 99)])
def test_sqlite_older_than_3_38_is_refused_plainly(version: tuple[int, int, int]) -> None:
    """unixepoch() needs 3.38; the message says what to do."""
    with pytest.raises(schema.SchemaError, match=r"too old.*3\.38\.0 or later"):
        schema.check_sqlite_version(version)


def test_sqlite_3_38_and_newer_is_accepted() -> None:
    """The boundary and the running library pass."""
    schema.check_sqlite_version((3, 38, 0))
    schema.check_sqlite_version()


class LockedAtFirst:
    """A connection whose WAL switch reports "database is locked" a few times, as SQLite does
    without waiting when two processes upgrade their locks on a new file at once."""

    def __init__(self, failures: int, error: str = "database is locked") -> None:
        self.failures = failures
        self.error = error
        self.statements: list[str] = []

    def execute(self, sql: str) -> None:
        self.statements.append(sql)
        if "journal_mode" in sql and self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError(self.error)


def test_wal_switch_is_retried_while_the_database_is_locked() -> None:
    """The start-up race seen with two workers on a fresh install: retried, not fatal."""
    connection = LockedAtFirst(failures=3)
    schema.apply_pragmas(connection)  # type: ignore[arg-type]
    assert connection.statements.count("PRAGMA journal_mode = WAL") == 4
    assert connection.statements[-2:] == ["PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON"]


def test_other_errors_of_the_wal_switch_are_not_retried() -> None:
    """Only lock contention is worth waiting for."""
    connection = LockedAtFirst(failures=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        schema.apply_pragmas(connection)  # type: ignore[arg-type]
    assert connection.statements.count("PRAGMA journal_mode = WAL") == 1


def test_many_processes_migrating_one_new_database_at_once(tmp_path: Path) -> None:
    """The start-up race of several workers on a fresh install."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from service import schema; "
        "schema.migrate(Path(sys.argv[1]))"
    )
    for round_ in range(5):
        path = tmp_path / f"race{round_}.db"
        children = [
            subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE)
            for _ in range(6)
        ]
        for child in children:
            _, err = child.communicate(timeout=30)
            assert child.returncode == 0, err.decode()
        assert schema.connect(path).execute("PRAGMA user_version").fetchone()[0] == (
            schema.latest_version()
        )
