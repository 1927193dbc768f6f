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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from pony import orm

from sandbox.contract.ledger import ContractLedger
from sandbox.pipedrive.fields import TIER_KEY
from sandbox.recording import Exchange
from service import jobs
from service.clients.factory import pipedrive_client
from service.clock import ManualClock
from service.config import Settings
from service.db import Filter, bound_path
from service.filter_refresh import refresh_filters
from tests.fakes import RunningFake
from workers.sync.runner import run_job

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The Brevo demo account's "Marketing" folder: lists go there, so no folder is created.
MARKETING_FOLDER = 2


# --- recording the fakes' exchanges -----------------------------------------------------


OTHER_BREVO_USER = "someone-else"  # the api-key of calls a test makes to Brevo's API itself


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


# --- the fake Pipedrive -----------------------------------------------------------------


def tier_conditions(tier: str) -> dict[str, Any]:
    """People filter conditions: the custom field "Customer tier" (9011) equals ``tier``."""
    return {
        "glue": "and",
        "conditions": [
            {
                "glue": "and",
                "conditions": [
                    {"object": "person", "field_id": "9011", "operator": "=", "value": tier}
                ],
            },
            {"glue": "or", "conditions": []},
        ],
    }


def title_conditions(prefix: str) -> dict[str, Any]:
    """Deal filter conditions: the deal's title (12451) starts with ``prefix``."""
    return {
        "glue": "and",
        "conditions": [
            {
                "glue": "and",
                "conditions": [
                    {
                        "object": "deal",
                        "field_id": "12451",
                        "operator": "LIKE '$%'",
                        "value": prefix,
                    }
                ],
            },
            {"glue": "or", "conditions": []},
        ],
    }


class Pipedrive:
    """The fake Pipedrive's control API."""

    def __init__(self, fake: RunningFake) -> None:
        self.fake = fake

    def person(self, first: str, last: str | None, *emails: str, tier: str | None = None) -> int:
        """Create a person (``tier`` puts it in that tier's people filter)."""
        body: dict[str, Any] = {"first_name": first, "last_name": last, "emails": list(emails)}
        if tier is not None:
            body["custom_fields"] = {TIER_KEY: tier}
        person_id: int = self.fake.control("POST", "/_sandbox/persons", json=body).json()["id"]
        return person_id

    def update_person(self, person_id: int, **body: Any) -> None:
        self.fake.control("PATCH", f"/_sandbox/persons/{person_id}", json=body)

    def set_tier(self, person_id: int, tier: str | None) -> None:
        self.update_person(person_id, custom_fields={TIER_KEY: tier})

    def filter(self, name: str, type_: str, conditions: dict[str, Any]) -> int:
        body = {"name": name, "type": type_, "conditions": conditions}
        filter_id: int = self.fake.control("POST", "/_sandbox/filters", json=body).json()["id"]
        return filter_id

    def people_filter(self, name: str, tier: str) -> int:
        """A people filter of the persons in ``tier``."""
        return self.filter(name, "people", tier_conditions(tier))

    def deal_filter(self, name: str, prefix: str) -> int:
        """A deal filter of the deals whose title starts with ``prefix``."""
        return self.filter(name, "deals", title_conditions(prefix))

    def update_filter(self, filter_id: int, **body: Any) -> None:
        self.fake.control("PATCH", f"/_sandbox/filters/{filter_id}", json=body)

    def delete_filter(self, filter_id: int) -> None:
        self.fake.control("DELETE", f"/_sandbox/filters/{filter_id}")

    def deal(self, title: str, person_id: int | None) -> int:
        body = {"title": title, "person_id": person_id, "status": "open"}
        deal_id: int = self.fake.control("POST", "/_sandbox/deals", json=body).json()["id"]
        return deal_id

    def calls(self) -> dict[str, int]:
        """API calls answered since the reset, by ``METHOD /path``."""
        calls: dict[str, int] = self.fake.control("GET", "/_sandbox/usage").json()["calls"]
        return calls


# --- the fake Brevo ---------------------------------------------------------------------


class Brevo:
    """The fake Brevo: its control API, and its API as another Brevo user would call it."""

    def __init__(self, fake: RunningFake) -> None:
        self.fake = fake

    def emails(self, list_id: int) -> list[str]:
        """The list's member emails, sorted."""
        emails: list[str] = self.fake.control("GET", f"/_sandbox/lists/{list_id}/emails").json()[
            "emails"
        ]
        return emails

    def contact(self, email: str) -> dict[str, Any] | None:
        """The contact, or None when Brevo has none with this address."""
        response = httpx.get(
            self.fake.url + "/_sandbox/contacts", params={"email": email}, timeout=10
        )
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        contact: dict[str, Any] = response.json()
        return contact

    def add_by_hand(self, email: str, *list_ids: int) -> None:
        """A contact someone made in Brevo (in these lists)."""
        body = {"email": email, "attributes": {"FIRSTNAME": "Hand"}, "listIds": list(list_ids)}
        self.fake.control("POST", "/_sandbox/contacts", json=body)

    def blocklist(self, email: str) -> None:
        self.fake.control("PUT", f"/_sandbox/contacts/{email}/blocklist", json={"blocked": True})

    def reject_imports_of(self, *emails: str) -> None:
        self.fake.control("PUT", "/_sandbox/import-rejects", json={"emails": list(emails)})

    def faults(self, *faults: dict[str, Any]) -> None:
        self.fake.control("PUT", "/_sandbox/faults", json={"faults": list(faults), "latency": []})

    def calls(self) -> dict[str, dict[str, int]]:
        """API calls answered since the reset: ``{"METHOD /template": {"status": n}}``."""
        calls: dict[str, dict[str, int]] = self.fake.control("GET", "/_sandbox/usage").json()[
            "calls"
        ]
        return calls

    def writes(self) -> int:
        """Write calls (POST, PUT, DELETE) the fake's API has answered since the reset."""
        return sum(
            sum(by_status.values())
            for operation, by_status in self.calls().items()
            if operation.split(" ", 1)[0] in WRITE_METHODS
        )

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the Brevo API itself (as someone using Brevo would make it)."""
        return httpx.request(
            method,
            self.fake.url + "/v3" + path,
            headers={"api-key": OTHER_BREVO_USER},
            timeout=10,
            **kwargs,
        )

    def list(self, list_id: int) -> dict[str, Any]:
        response = self.api("GET", f"/contacts/lists/{list_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def delete_list(self, list_id: int) -> None:
        response = self.api("DELETE", f"/contacts/lists/{list_id}")
        assert response.status_code == 204, response.text


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
        pipedrive_api_token="pd-sync-tests",
        pipedrive_base_url=pipedrive_fake.url,
        brevo_api_key="xkeysib-sync-tests",
        brevo_base_url=brevo_fake.url + "/v3",
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
