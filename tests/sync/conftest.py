"""Shared fixtures of the sync engine tests: the engine run in this process against the
session's fakes over real HTTP, on the session's test database, with a ``ManualClock``.

``World`` is what a test drives: the fake Pipedrive and the fake Brevo through their
control APIs (and, for Brevo, its API as another Brevo user would call it), the engine
through its public functions (``refresh_filters``, ``create_job``, ``run_job``), and the
database read back with plain SQL. ``exchanges`` records every API exchange the fakes
served during the test, bodies included, so a test can say which write carried what.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pony import orm

from sandbox.contract.ledger import ContractLedger
from sandbox.pipedrive.events import V1_ACTIONS, ChangeEvent, v1_body, v2_body
from sandbox.pipedrive.model import (
    ADMIN_USER_ID,
    Dataset,
    Email,
    Person,
    Webhook,
    v1_time,
    v2_time,
)
from sandbox.pipedrive.payload_data import person_webhook_v1, person_webhook_v2
from sandbox.recording import Exchange
from service import inbox, jobs
from service.clients.factory import pipedrive_client
from service.clock import ManualClock
from service.config import Settings
from service.db import Filter, bound_path
from service.filter_refresh import refresh_filters
from service.webhooks import classify, parse_body
from tests.fake_control import OTHER_BREVO_USER, WRITE_METHODS, Brevo, Pipedrive, service_settings
from tests.fakes import RunningFake
from workers.sync.runner import run_job

# The Brevo demo account's "Marketing" folder: lists go there, so no folder is created.
MARKETING_FOLDER = 2


# --- recording the fakes' exchanges -----------------------------------------------------


class Exchanges:
    """Every API exchange the service had with the fakes since the test began.

    A fake hands an exchange to its recorder once the last byte of the answer is on its
    way, so a client may already have a bodiless answer (a 204) in hand before it is
    recorded. Every reader therefore first waits until the recording has caught up with
    the calls the fakes counted.
    """

    def __init__(self, pipedrive: RunningFake, brevo: RunningFake) -> None:
        self._fakes = (pipedrive, brevo)
        self._all: list[Exchange] = []

    def _counted(self) -> int:
        pipedrive, brevo = (f.control("GET", "/_sandbox/usage").json() for f in self._fakes)
        counted: int = sum(pipedrive["calls"].values()) + sum(
            sum(by_status.values()) for by_status in brevo["calls"].values()
        )
        return counted

    def _settle(self) -> None:
        deadline = time.monotonic() + 5
        while len(self._all) < self._counted():
            assert time.monotonic() < deadline, "the fakes' recording did not catch up"
            time.sleep(0.005)

    @property
    def seen(self) -> list[Exchange]:
        """The service's exchanges so far (not the test's own calls to Brevo)."""
        self._settle()
        return [e for e in self._all if e.request_headers.get("api-key") != OTHER_BREVO_USER]

    def brevo(self) -> list[Exchange]:
        """Brevo API exchanges."""
        return [e for e in self.seen if e.path.startswith("/v3/")]

    def brevo_writes(self) -> list[Exchange]:
        """Brevo API calls that write (POST, PUT, PATCH, DELETE), answered or not."""
        return [e for e in self.brevo() if e.method in WRITE_METHODS]

    def mark(self) -> int:
        """A position to read later exchanges from (``since``)."""
        return len(self.seen)

    def since(self, mark: int) -> list[Exchange]:
        """The exchanges after ``mark``."""
        return self.seen[mark:]

    def record(self, exchange: Exchange) -> None:
        self._all.append(exchange)


@pytest.fixture
def exchanges(
    monkeypatch: pytest.MonkeyPatch, pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> Exchanges:
    """Records the fakes' exchanges by tapping the contract ledger every fake reports to."""
    record = Exchanges(pipedrive_fake, brevo_fake)
    original = ContractLedger.__call__

    def tap(self: ContractLedger, exchange: Exchange) -> None:
        record.record(exchange)
        original(self, exchange)

    monkeypatch.setattr(ContractLedger, "__call__", tap)
    return record


def body_of(exchange: Exchange) -> Any:
    """The JSON request body of an exchange (None when empty)."""
    return json.loads(exchange.request_body) if exchange.request_body else None


def carries(exchange: Exchange, email: str) -> bool:
    """Whether the request (body or path) names ``email``, in any case."""
    text = (exchange.path + exchange.request_body.decode("utf-8", "replace")).lower()
    return email.lower() in text or email.lower().replace("@", "%40") in text


# --- the engine -------------------------------------------------------------------------


@dataclass
class World:
    """The engine, the fakes and the database of one test."""

    settings: Settings
    clock: ManualClock
    database: Path
    pipedrive: Pipedrive
    brevo: Brevo
    enqueued: list[int] = field(default_factory=list)

    def refresh(self) -> None:
        """Mirror the fake's filters into the database (no Brevo renames)."""
        refresh_filters(
            pipedrive_client(self.settings), None, self.clock.now(), self.enqueued.append
        )

    def create(
        self, filter_id: int, kind: str = "full", trigger: str = "admin", forced: bool = False
    ) -> int:
        """A new job of the filter (the clock moves on a few seconds first)."""
        self.clock.advance(5)
        return jobs.create_job(filter_id, kind, trigger, forced, self.clock.now()).id

    def run(self, job_id: int) -> jobs.Job:
        """Run the job in this thread; the job as it ended."""
        run_job(job_id, self.settings, self.clock)
        job = jobs.get_job(job_id)
        assert job is not None
        return job

    def sync(self, filter_id: int, kind: str = "full", forced: bool = False) -> jobs.Job:
        """Create and run a job of the filter."""
        return self.run(self.create(filter_id, kind, forced=forced))

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the test database."""
        connection = sqlite3.connect(self.database, timeout=5)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def list_id(self, filter_id: int) -> int:
        rows = self.query("SELECT brevo_list_id FROM filters WHERE id = ?", filter_id)
        assert rows and isinstance(rows[0][0], int), rows
        return int(rows[0][0])

    def ledger(self, filter_id: int) -> dict[int, tuple[str | None, str, int]]:
        """The filter's ledger: entity id -> (email, state, created_contact)."""
        rows = self.query(
            "SELECT entity_id, email, state, created_contact FROM memberships "
            "WHERE filter_id = ? ORDER BY entity_id",
            filter_id,
        )
        return {int(r[0]): (r[1], str(r[2]), int(r[3])) for r in rows}


def counts(job: jobs.Job) -> tuple[int, int, int, int, int]:
    """A job's counters: (fetched, added, updated, removed, skipped)."""
    return (
        job.total_fetched,
        job.total_added,
        job.total_updated,
        job.total_removed,
        job.total_skipped,
    )


def completed(job: jobs.Job) -> jobs.Job:
    """``job``, after asserting it completed."""
    assert job.status == "completed" and job.error_message is None, job
    return job


@pytest.fixture
def world(
    settings: Settings, clean_db: Path, pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> Iterator[World]:
    """The engine pointed at the fakes, with a manual clock set to the wall clock (the fake
    Pipedrive stamps ``update_time`` by the wall clock, and deal filters compare the two)."""
    configured = replace(
        settings,
        **service_settings(
            pipedrive_fake, brevo_fake, token="pd-sync-tests", key="xkeysib-sync-tests"
        ),
        brevo_folder_id=MARKETING_FOLDER,
    )
    yield World(
        settings=configured,
        clock=ManualClock(start=int(time.time())),
        database=clean_db,
        pipedrive=Pipedrive(pipedrive_fake),
        brevo=Brevo(brevo_fake),
    )


# --- the database alone -----------------------------------------------------------------


def add_filter(
    filter_id: int,
    name: str = "A filter",
    type_: str | None = "people",
    brevo_list_id: int | None = None,
) -> int:
    """A row in ``filters`` as a refresh (and a first sync) would leave it."""
    with orm.db_session:
        Filter(id=filter_id, name=name, type=type_, brevo_list_id=brevo_list_id)
    return filter_id


def soft_delete_filter(filter_id: int, now: int) -> None:
    """Mark the filter vanished upstream, as a refresh would."""
    with orm.db_session:
        Filter.get(id=filter_id).deleted_at = now


def _read(sql: str, *params: Any) -> list[sqlite3.Row]:
    path = bound_path()
    assert path is not None
    connection = sqlite3.connect(path, timeout=5)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def job_row(job_id: int) -> dict[str, Any]:
    """The job's row, every column."""
    rows = _read("SELECT * FROM sync_jobs WHERE id = ?", job_id)
    assert len(rows) == 1
    return dict(rows[0])


def jobs_of(filter_id: int) -> list[dict[str, Any]]:
    """Every job of the filter, oldest first."""
    return [
        dict(r) for r in _read("SELECT * FROM sync_jobs WHERE filter_id = ? ORDER BY id", filter_id)
    ]


def staged_count(job_id: int) -> int:
    """How many members the job has staged."""
    return int(_read("SELECT COUNT(*) FROM sync_members WHERE job_id = ?", job_id)[0][0])


# --- webhook deliveries ------------------------------------------------------------------

# The webhooks the bodies below are addressed to (nothing is sent: the tests store them).
_TEST_WEBHOOKS = {
    version: Webhook(
        id=900 + int(version),
        subscription_url="http://127.0.0.1:9/webhooks/pipedrive",
        event_action="*",
        event_object="*",
        name="sync tests",
        version=f"{version}.0",
        user_id=ADMIN_USER_ID,
        http_auth_user=None,
        http_auth_password=None,
        add_time=datetime(2030, 1, 1, tzinfo=UTC),
    )
    for version in ("1", "2")
}


def delivery_body(event: ChangeEvent, version: str = "2", attempt: int = 1) -> dict[str, Any]:
    """The webhook body the fake Pipedrive sends for ``event`` (``version`` "1" or "2");
    a v2 redelivery (a later ``attempt``) repeats the event id."""
    webhook = _TEST_WEBHOOKS[version]
    if version == "2":
        return v2_body(event, webhook, f"test-{event.correlation_id}", attempt)
    return v1_body(event, webhook, attempt)


def store_delivery(body: dict[str, Any], received_at: int) -> str:
    """Store ``body`` in the inbox as the webhook endpoint would; the outcome."""
    parsed, text = parse_body(json.dumps(body).encode())
    path = bound_path()
    assert path is not None
    return inbox.store(path, classify(parsed, text), received_at)


class Deliveries:
    """The change events the fake Pipedrive announced, turned into stored deliveries when
    the test says so (``deliver``): the webhook endpoint's work without the web process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[ChangeEvent] = []

    def __call__(self, events: list[ChangeEvent]) -> None:
        with self._lock:
            self._events.extend(events)

    def take(self) -> list[ChangeEvent]:
        """The events announced since the last ``take`` (or ``deliver``), oldest first."""
        with self._lock:
            taken, self._events = self._events, []
        return taken

    def deliver(
        self, received_at: int, version: str = "2", events: list[ChangeEvent] | None = None
    ) -> list[ChangeEvent]:
        """Store the bodies of ``events`` (default: those announced since the last take) in
        the inbox, in order; the events stored."""
        chosen = self.take() if events is None else events
        for event in chosen:
            assert store_delivery(delivery_body(event, version), received_at) == "received"
        return chosen


@pytest.fixture
def deliveries(pipedrive_fake: RunningFake) -> Iterator[Deliveries]:
    """Taps the fake Pipedrive's change announcements for the test."""
    state = pipedrive_fake.app.state.fake
    tap = Deliveries()
    state.listeners.append(tap)
    try:
        yield tap
    finally:
        state.listeners.remove(tap)


def age_records(world: World, seconds: int = 3600) -> None:
    """Move the ``update_time`` of every person and deal changed in the last ten minutes
    back by ``seconds``: as if the test's records were last changed long ago, so that an
    ``updated_since`` listing returns only what the test changes afterwards."""
    state = world.pipedrive.fake.app.state.fake
    recent = datetime.now(UTC) - timedelta(minutes=10)
    with state.lock:
        for record in [*state.data.persons.values(), *state.data.deals.values()]:
            if record.update_time >= recent:
                record.update_time -= timedelta(seconds=seconds)
        state.revision += 1  # cached listings are stale


def change_count(filter_id: int | None = None) -> int:
    """Routed changes waiting (for one filter, or for all)."""
    if filter_id is None:
        return int(_read("SELECT COUNT(*) FROM filter_changes")[0][0])
    rows = _read("SELECT COUNT(*) FROM filter_changes WHERE filter_id = ?", filter_id)
    return int(rows[0][0])


def person_event(
    person_id: int,
    *emails: str,
    first: str = "Ada",
    last: str | None = "Test",
    at: datetime,
    action: str = "change",
    merged_to: int | None = None,
    v1_action: str | None = None,
) -> ChangeEvent:
    """The event the fake Pipedrive announces for a person with these emails (the first
    one primary), last changed ``at``; a delete carries no current data."""
    person = Person(
        id=person_id,
        name=f"{first} {last}" if last else first,
        first_name=first,
        last_name=last,
        emails=[Email(e, primary=i == 0) for i, e in enumerate(emails)],
        phones=[],
        org_id=None,
        owner_id=ADMIN_USER_ID,
        label_ids=[],
        add_time=at - timedelta(days=1),
        update_time=at,
    )
    live = action != "delete"
    return ChangeEvent(
        entity="person",
        entity_id=person_id,
        action=action,
        v1_action=v1_action or V1_ACTIONS[action],
        at=at,
        v2_data=person_webhook_v2(person) if live else None,
        v2_previous=None if live else person_webhook_v2(person),
        v1_current=person_webhook_v1(person, Dataset()) if live else None,
        v1_previous=person_webhook_v1(person, Dataset()),
        merged_to_id=merged_to,
    )


def object_event(
    entity: str, entity_id: int, *, at: datetime, action: str = "change"
) -> ChangeEvent:
    """The event of a deal, organization or other object, with a minimal body."""
    live = action != "delete"
    data = {"id": entity_id, "update_time": v2_time(at)}
    return ChangeEvent(
        entity=entity,
        entity_id=entity_id,
        action=action,
        v1_action=V1_ACTIONS[action],
        at=at,
        v2_data=data if live else None,
        v2_previous=None if live else data,
        v1_current={"id": entity_id, "update_time": v1_time(at)} if live else None,
        v1_previous=None,
    )
