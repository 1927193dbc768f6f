"""Issue 6, "Storage faults": rows R1 and R4 of the test matrix (``reference/reliability.md``).

R1: a webhook is answered 2xx only after its inbox commit. The faults are real SQLite
faults on the real database file, not mocks: another connection holding the write lock
longer than the busy timeout (SQLITE_BUSY), and a database that may not grow (``PRAGMA
max_page_count`` on the writer's connection, so SQLite itself raises SQLITE_FULL "database
or disk is full"). Each must answer 503 and store nothing, not even part of a group, and
the app must recover by itself once the fault clears. R4: the ingest connection's settings.

The app runs in this process under a TestClient; its inbox writer thread
(``service.inbox_writer``) commits through ``inbox.ingest_connection`` and
``inbox.store_many``, which the tests wrap only to apply the fault and to watch which
deliveries shared a commit.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from service import inbox
from service.app import create_app
from service.clock import ManualClock
from service.config import Settings
from service.inbox_writer import InboxWriter
from service.schema import BUSY_TIMEOUT_MS
from service.webhooks import Delivery
from tests.conftest import wait_for
from tests.test_inbox_writer import Hints

USER = "pipedrive"
PASSWORD = "storage-faults-hook-password"
PATH = "/webhooks/pipedrive"
HEADERS = {
    "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    "Content-Type": "application/json",
}
EXAMPLE = Path(__file__).resolve().parents[2] / "specs/pipedrive/examples"
NOT_STORED = {"error": "the delivery could not be stored; try again"}
# Bigger than a page (4 KiB): every such delivery needs new pages of its own.
LARGE = 20_000


def delivery_body(event_id: str, padding: int = 0) -> bytes:
    """A real v2 person delivery (Pipedrive's documented example) with its own event id,
    and ``padding`` characters more in its data."""
    body: dict[str, Any] = copy.deepcopy(_TEMPLATE)
    body["meta"]["id"] = event_id
    body["data"]["s_padding"] = "p" * padding
    return json.dumps(body).encode()


_TEMPLATE: dict[str, Any] = json.loads(
    (EXAMPLE / "v2_change_person.pipedrive-docs.json").read_text("utf-8")
)


def stored(path: Path) -> dict[str, str]:
    """Event id -> payload of every inbox row, read through a connection of the test's."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
        rows = connection.execute("SELECT payload FROM inbox").fetchall()
    return {json.loads(payload)["meta"]["id"]: payload for (payload,) in rows}


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of the database."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
        result: str = connection.execute("PRAGMA integrity_check").fetchone()[0]
        return result


def post_together(client: TestClient, bodies: Sequence[bytes]) -> list[httpx2.Response]:
    """Post every body at the same moment, one thread each; the answers in order."""
    barrier = threading.Barrier(len(bodies))

    def post(body: bytes) -> httpx2.Response:
        barrier.wait()
        return client.post(PATH, content=body, headers=HEADERS)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def post_in_background(
    pool: ThreadPoolExecutor, client: TestClient, bodies: Sequence[bytes]
) -> list[Future[httpx2.Response]]:
    """Start posting each body from a thread of ``pool``; their future answers."""
    return [pool.submit(client.post, PATH, content=body, headers=HEADERS) for body in bodies]


# --- fixtures ---------------------------------------------------------------------------


@dataclasses.dataclass
class Group:
    """One commit the inbox writer attempted: its deliveries' event ids, and its error."""

    event_ids: list[str]
    error: BaseException | None = None


class Groups:
    """Watches ``inbox.store_many``: which deliveries each commit covered, and how it ended."""

    def __init__(self) -> None:
        self.real = inbox.store_many
        self.seen: list[Group] = []

    def __call__(
        self, connection: sqlite3.Connection, deliveries: Sequence[tuple[Delivery, int]]
    ) -> list[inbox.Outcome]:
        group = Group([json.loads(d.payload)["meta"]["id"] for d, _ in deliveries])
        self.seen.append(group)
        try:
            return self.real(connection, deliveries)
        except BaseException as exc:
            group.error = exc
            raise


class DiskFull:
    """Wraps ``inbox.ingest_connection``: while ``full``, a new connection may grow the
    database by ``headroom`` pages at most (``PRAGMA max_page_count``), so a write that
    needs more makes SQLite raise SQLITE_FULL. The writer opens a new connection after
    every failed commit, so clearing ``full`` clears the fault for the next commit."""

    def __init__(self) -> None:
        self.real = inbox.ingest_connection
        self.full = False
        self.headroom = 0

    def __call__(self, path: Path) -> sqlite3.Connection:
        connection = self.real(path)
        if self.full:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages + self.headroom}")
        return connection


@pytest.fixture
def compact_db(clean_db: Path) -> Path:
    """The test database without free pages (earlier tests' deletes leave some, and SQLite
    fills them before it grows the file, which would hide a page limit)."""
    with contextlib.closing(
        sqlite3.connect(clean_db, isolation_level=None, timeout=30)
    ) as connection:
        connection.execute("VACUUM")
        assert connection.execute("PRAGMA freelist_count").fetchone()[0] == 0
    return clean_db


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> Groups:
    """The commits of the test's inbox writer."""
    watcher = Groups()
    monkeypatch.setattr(inbox, "store_many", watcher)
    return watcher


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> DiskFull:
    """The switch of a full disk, on the writer's connections."""
    fault = DiskFull()
    monkeypatch.setattr(inbox, "ingest_connection", fault)
    return fault


class Arrivals:
    """Counts the deliveries handed to an app's inbox writer (wraps its ``store``), so a
    test knows they are queued behind a commit that waits."""

    def __init__(self, writer: InboxWriter) -> None:
        self.real = writer.store
        self.count = 0
        self._lock = threading.Lock()

    async def __call__(self, delivery: Delivery, received_at: int) -> inbox.Outcome:
        with self._lock:
            self.count += 1
        return await self.real(delivery, received_at)

    def wait(self, count: int) -> None:
        """Return once ``count`` deliveries arrived, and they had a moment to be queued."""
        wait_for(lambda: self.count >= count, timeout=10, interval=0.01)
        time.sleep(0.1)


@pytest.fixture
def hook(settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    """The app with webhook credentials under a TestClient."""
    configured = dataclasses.replace(settings, webhook_user=USER, webhook_password=PASSWORD)
    app = create_app(configured, clock, enqueue_job=lambda job_id: None, enqueue_drain=Hints())
    with TestClient(app) as client:
        yield client


@pytest.fixture
def arrivals(hook: TestClient, monkeypatch: pytest.MonkeyPatch) -> Arrivals:
    """The deliveries that reached the hook app's inbox writer."""
    writer = hook.app.state.context.inbox_writer  # type: ignore[attr-defined]
    counter = Arrivals(writer)
    monkeypatch.setattr(writer, "store", counter)
    return counter


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock (``BEGIN IMMEDIATE``)."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


# --- R4 ---------------------------------------------------------------------------------


def test_R4_the_ingest_connection_is_wal_with_full_sync_and_a_busy_timeout(
    clean_db: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings, clock: ManualClock
) -> None:
    """The connection the writer really commits through (read in its own thread, right
    after it opened it) and a new ``ingest_connection``: journal_mode=wal, synchronous=FULL
    (2), busy_timeout >= 5000 ms."""
    names = ("journal_mode", "synchronous", "busy_timeout")
    seen: list[dict[str, Any]] = []
    real = inbox.ingest_connection

    def reading(path: Path) -> sqlite3.Connection:
        connection = real(path)
        seen.append({name: connection.execute(f"PRAGMA {name}").fetchone()[0] for name in names})
        return connection

    monkeypatch.setattr(inbox, "ingest_connection", reading)
    configured = dataclasses.replace(settings, webhook_user=USER, webhook_password=PASSWORD)
    with TestClient(create_app(configured, clock, enqueue_job=lambda job_id: None)) as client:
        response = client.post(PATH, content=delivery_body("r4"), headers=HEADERS)
        assert response.status_code == 200, response.text
    direct = real(clean_db)
    try:
        seen.append({name: direct.execute(f"PRAGMA {name}").fetchone()[0] for name in names})
    finally:
        direct.close()
    assert len(seen) == 2
    for pragmas in seen:
        assert pragmas["journal_mode"] == "wal", pragmas
        assert pragmas["synchronous"] == 2, pragmas
        assert pragmas["busy_timeout"] >= 5000, pragmas
    assert list(stored(clean_db)) == ["r4"]


# --- R1: database locked ----------------------------------------------------------------


def test_R1_a_lock_held_past_the_busy_timeout_answers_503_and_stores_nothing(
    hook: TestClient, clean_db: Path, groups: Groups, arrivals: Arrivals
) -> None:
    """Another connection holds the write lock on the real file for longer than the busy
    timeout. One delivery, then three more queued behind it (one commit of their own):
    each commit waits the timeout out and fails with SQLITE_BUSY, every delivery gets 503
    (never 200) and leaves no row. Once the lock is gone the same app, without a restart,
    stores and acknowledges new deliveries and Pipedrive's retries of the refused ones."""
    refused = [f"locked-{n}" for n in range(4)]
    with write_lock(clean_db) as holder, ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        first = post_in_background(pool, hook, [delivery_body(refused[0])])
        arrivals.wait(1)
        rest = post_in_background(pool, hook, [delivery_body(e) for e in refused[1:]])
        answers = [future.result() for future in first + rest]
        waited = time.monotonic() - started
        assert [a.status_code for a in answers] == [503] * 4, [a.text for a in answers]
        assert all(a.json() == NOT_STORED for a in answers)
        # Each commit waited the busy timeout out rather than failing at once.
        assert waited >= 2 * 0.9 * BUSY_TIMEOUT_MS / 1000
        # Read inside the holder's transaction: nothing of them was committed.
        assert holder.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 0
    assert [sorted(g.event_ids) for g in groups.seen] == [refused[:1], refused[1:]]
    for group in groups.seen:
        assert isinstance(group.error, sqlite3.OperationalError), group
        assert group.error.sqlite_errorname == "SQLITE_BUSY", group
    assert stored(clean_db) == {}

    fresh = [f"after-{n}" for n in range(3)]
    answers = post_together(hook, [delivery_body(e) for e in fresh + refused])
    assert [a.status_code for a in answers] == [200] * 7, [a.text for a in answers]
    assert all(a.json() == {"status": "received"} for a in answers)
    assert sorted(stored(clean_db)) == sorted(fresh + refused)
    assert integrity(clean_db) == "ok"


# --- R1: disk full ----------------------------------------------------------------------


def test_R1_a_full_disk_answers_503_and_stores_nothing(
    hook: TestClient, compact_db: Path, groups: Groups, disk: DiskFull
) -> None:
    """With no room to grow, SQLite raises SQLITE_FULL: every delivery gets 503 and no row
    (not a truncated payload, not one of a group) is stored. Once space is back the app
    stores the same deliveries whole, without a restart."""
    disk.full = True
    event_ids = [f"full-{n}" for n in range(5)]
    bodies = [delivery_body(event_id, LARGE) for event_id in event_ids]
    answers = post_together(hook, bodies)
    assert [a.status_code for a in answers] == [503] * 5, [a.text for a in answers]
    assert all(a.json() == NOT_STORED for a in answers)
    assert groups.seen and all(
        isinstance(g.error, sqlite3.OperationalError)
        and g.error.sqlite_errorname == "SQLITE_FULL"
        and str(g.error) == "database or disk is full"
        for g in groups.seen
    ), [(g.event_ids, repr(g.error)) for g in groups.seen]
    assert stored(compact_db) == {}
    assert integrity(compact_db) == "ok"

    disk.full = False
    answers = post_together(hook, bodies)
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    rows = stored(compact_db)
    assert sorted(rows) == sorted(event_ids)
    assert all(rows[e].encode() == body for e, body in zip(event_ids, bodies, strict=True))


def test_R1_a_group_that_runs_out_of_space_midway_is_all_or_nothing(
    hook: TestClient, compact_db: Path, groups: Groups, disk: DiskFull, arrivals: Arrivals
) -> None:
    """Room for two large deliveries per connection. While a lock holds the writer, one
    delivery is followed by three queued behind it: the first commit fits (200, stored);
    the group of three does not, though its first delivery alone would (SQLITE_FULL on
    that same connection): all three 503, none stored. A fresh connection then has room
    again: the next delivery is stored."""
    disk.full = True
    disk.headroom = 12  # a 20 kB delivery takes 5 pages: one group of three needs 15
    event_ids = [f"room-{n}" for n in range(4)]
    bodies = [delivery_body(event_id, LARGE) for event_id in event_ids]
    with ThreadPoolExecutor(4) as pool:
        with write_lock(compact_db):
            first = post_in_background(pool, hook, bodies[:1])
            arrivals.wait(1)
            rest = post_in_background(pool, hook, bodies[1:])
            arrivals.wait(4)
        answers = [future.result() for future in first + rest]
    assert [a.status_code for a in answers] == [200, 503, 503, 503], [a.text for a in answers]
    assert [sorted(g.event_ids) for g in groups.seen] == [event_ids[:1], event_ids[1:]]
    error = groups.seen[1].error
    assert isinstance(error, sqlite3.OperationalError), error
    assert error.sqlite_errorname == "SQLITE_FULL"
    assert stored(compact_db) == {"room-0": bodies[0].decode()}

    again = hook.post(PATH, content=bodies[1], headers=HEADERS)
    assert again.status_code == 200, again.text
    assert sorted(stored(compact_db)) == ["room-0", "room-1"]
    assert integrity(compact_db) == "ok"
