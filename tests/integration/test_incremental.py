"""Issue 5, "Done when": the webhook-driven incremental sync end to end.

Every test runs the real ``pbsync web`` and ``pbsync worker`` (see ``conftest.py``) with a
half-second coalesce window against the session's fakes. Changes are made through the fake
Pipedrive's control API, which sends real v1 or v2 webhook deliveries to the service; the
tests about duplicates and order post deliveries themselves, built exactly as the fake
builds them (``sandbox.pipedrive.events``) from the events it published. Expected lists
come from the fake's own evaluation of the filter, expected counts from its data before
and after each change (``snapshot`` and ``expected`` of ``test_sync``), never from a run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from sandbox.brevo.model import valid_email as brevo_accepts
from sandbox.pipedrive.events import ChangeEvent, v1_body, v2_body
from sandbox.pipedrive.fields import TIER_KEY
from sandbox.pipedrive.model import ADMIN_USER_ID, Webhook
from sandbox.pipedrive.state import PipedriveState
from tests.conftest import ADMIN_PASSWORD, REPO, Started, child_pids, free_port, healthy
from tests.fake_control import Brevo, Pipedrive, tier_conditions
from tests.fakes import RunningFake
from tests.integration.conftest import Service, StartService
from tests.integration.test_sync import Snapshot, expected, snapshot

pytestmark = pytest.mark.integration

TIER = "Incr"
HOOK_USER = "pipedrive-hook"
HOOK_PASSWORD = "hook:pass word"  # a colon and a space: the password is split on the first ":"
FAST = {
    "WEBHOOK_USER": HOOK_USER,
    "WEBHOOK_PASSWORD": HOOK_PASSWORD,
    "SYNC_COALESCE_SECONDS": "0.5",
    "JOB_STALE_SECONDS": "3",
}
CONVERGE_SECONDS = 15.0  # a change reaches the list in about 2 s; the rest is a noisy machine
SETTLE_SECONDS = 20.0
# The incremental run asks for members changed since the oldest change minus this margin
# (workers/sync/incremental.py SINCE_MARGIN_SECONDS): part of what it reads is derived
# from it.
SINCE_MARGIN = timedelta(seconds=60)
T = TypeVar("T")
VERSIONS = pytest.mark.parametrize("version", ["2.0", "1.0"], ids=["v2", "v1"])


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def pipedrive(pipedrive_fake: RunningFake) -> Pipedrive:
    """The fake Pipedrive; persons and people filters are in the tier ``TIER`` by default."""
    return Pipedrive(pipedrive_fake, tier=TIER)


@pytest.fixture
def brevo(brevo_fake: RunningFake) -> Brevo:
    """The fake Brevo."""
    return Brevo(brevo_fake)


@pytest.fixture
def service(start_service: StartService) -> Service:
    """The service with webhook credentials, a 0.5 s coalesce window and 3 s stale jobs."""
    return start_service(**FAST)


@pytest.fixture
def published(pipedrive_fake: RunningFake) -> Iterator[list[ChangeEvent]]:
    """Every change event the fake Pipedrive publishes during the test, in order (its
    listeners run before the control API answers, so a change's events are here as soon
    as the call that made it returned)."""
    state: PipedriveState = pipedrive_fake.app.state.fake
    events: list[ChangeEvent] = []

    def listen(batch: list[ChangeEvent]) -> None:
        events.extend(batch)

    state.listeners.append(listen)
    yield events
    state.listeners.remove(listen)


# --- the service, and waiting for it ----------------------------------------------------


def wait_until(
    service: Service,
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
) -> T:
    """Poll ``predicate`` every 0.1 s until it returns something truthy, and return that;
    fail with ``what`` (called then, when a function) and the logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        service.check_alive()
        time.sleep(0.1)
    said = what() if callable(what) else what
    raise AssertionError(f"{said}: not within {timeout} s\n{service.logs()}")


def count(service: Service, sql: str, *params: Any) -> int:
    """The single integer a counting query returns."""
    return int(service.query(sql, *params)[0][0])


def quiet(service: Service) -> bool:
    """Nothing waits: no pending delivery, no routed change, no job running."""
    return (
        count(service, "SELECT COUNT(*) FROM inbox WHERE status = 'pending'") == 0
        and count(service, "SELECT COUNT(*) FROM filter_changes") == 0
        and count(service, "SELECT COUNT(*) FROM sync_jobs WHERE status = 'processing'") == 0
    )


def settle(service: Service, pipedrive: Pipedrive, deliveries: int) -> None:
    """Wait until the fake saw ``deliveries`` events acknowledged and the service is quiet."""
    wait_until(
        service,
        lambda: pipedrive.delivered_events() >= deliveries and quiet(service),
        SETTLE_SECONDS,
        f"{deliveries} deliveries acknowledged and the service quiet",
    )


def last_job_id(service: Service) -> int:
    """The newest job's id (0 without jobs)."""
    return count(service, "SELECT COALESCE(MAX(id), 0) FROM sync_jobs")


def jobs_after(service: Service, job_id: int) -> list[dict[str, Any]]:
    """The jobs created after ``job_id``, as the admin API shows them, oldest first."""
    ids = [r[0] for r in service.query("SELECT id FROM sync_jobs WHERE id > ? ORDER BY id", job_id)]
    return [service.job(i) for i in ids]


def incremental(job: dict[str, Any]) -> dict[str, Any]:
    """``job``, after asserting it is a webhook-triggered incremental job that completed."""
    assert job["kind"] == "incremental", job
    assert job["trigger"] == "webhook", job
    assert job["status"] == "completed", job
    assert job["error_message"] is None, job
    return job


def link(service: Service, filter_id: int) -> int:
    """Refresh the filters, sync ``filter_id`` once (which links it) and return its list."""
    service.refresh()
    job = service.sync(filter_id)
    assert job["status"] == "completed", job
    list_id = service.filters()[filter_id]["brevo_list_id"]
    assert isinstance(list_id, int), service.filters()[filter_id]
    return list_id


def subscribe(service: Service, pipedrive: Pipedrive, version: str) -> None:
    """Register the service's webhook in the fake Pipedrive, in webhooks ``version``."""
    pipedrive.add_webhook(
        service.base + "/webhooks/pipedrive",
        version=version,
        user=HOOK_USER,
        password=HOOK_PASSWORD,
        token=service.env["PIPEDRIVE_API_TOKEN"],
    )


def listed_emails(pipedrive: Pipedrive, filter_id: int) -> list[str]:
    """The emails the filter's list must hold: the fake's evaluation, as Brevo takes them."""
    return [e for e in pipedrive.filter_emails(filter_id) if brevo_accepts(e)]


# --- deliveries the test posts itself ---------------------------------------------------


def hand_webhook(service: Service, version: str) -> Webhook:
    """A webhook as the fake would register it, for building deliveries by hand."""
    return Webhook(
        id=99,
        subscription_url=service.base + "/webhooks/pipedrive",
        event_action="*",
        event_object="*",
        name="tests",
        version=version,
        user_id=ADMIN_USER_ID,
        http_auth_user=HOOK_USER,
        http_auth_password=HOOK_PASSWORD,
        add_time=datetime.now(UTC),
    )


def delivery(event: ChangeEvent, webhook: Webhook, event_id: str, attempt: int) -> dict[str, Any]:
    """The body the fake sends for ``event`` at ``attempt`` (1 to 4)."""
    if webhook.version == "2.0":
        return v2_body(event, webhook, event_id, attempt)
    return v1_body(event, webhook, attempt)


def post_delivery(service: Service, body: dict[str, Any]) -> str:
    """POST one delivery to the service as Pipedrive does; its answer's status."""
    token = base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()
    response = httpx.post(
        service.base + "/webhooks/pipedrive",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Basic {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


# --- one change at a time, and what it must do ------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One change: the fake's events, the filter before and after, the jobs it ran."""

    events: list[ChangeEvent]
    before: Snapshot
    after: Snapshot
    jobs: list[dict[str, Any]]

    def delta(self) -> tuple[int, int, int]:
        """(added, updated, removed) summed over the jobs."""
        return (
            sum(j["total_added"] for j in self.jobs),
            sum(j["total_updated"] for j in self.jobs),
            sum(j["total_removed"] for j in self.jobs),
        )

    def expected_delta(self) -> tuple[int, int, int]:
        """(added, updated, removed) as the snapshots say a sync must count them."""
        want = expected(self.before, self.after)
        return want.added, want.updated, want.removed


class Flow:
    """A linked filter whose changes are made through the fake and followed to Brevo."""

    def __init__(
        self,
        service: Service,
        pipedrive: Pipedrive,
        brevo: Brevo,
        published: list[ChangeEvent],
        filter_id: int,
    ) -> None:
        self.service = service
        self.pipedrive = pipedrive
        self.brevo = brevo
        self.published = published
        self.filter_id = filter_id
        self.list_id = link(service, filter_id)
        members = pipedrive.fake.control("GET", f"/_sandbox/filters/{filter_id}/members")
        self.own = "person" if members.json()["type"] == "people" else "deal"
        self.unsent = 0  # events published before the webhook existed: never delivered

    def subscribe(self, version: str) -> None:
        """Register the webhook; the events from now on are delivered."""
        subscribe(self.service, self.pipedrive, version)
        self.unsent = len(self.published)

    def wait_list(self) -> list[str]:
        """Wait until the list holds exactly what the filter does now; those emails."""
        want = listed_emails(self.pipedrive, self.filter_id)
        wait_until(
            self.service,
            lambda: self.brevo.emails(self.list_id) == want,
            CONVERGE_SECONDS,
            lambda: f"list {self.list_id} to hold {want}, not {self.brevo.emails(self.list_id)}",
        )
        return want

    def change(self, make: Callable[[], object]) -> Outcome:
        """Make a change, wait until the list shows it and the service is quiet, and check
        that only completed incremental webhook jobs ran for it."""
        before = snapshot(self.pipedrive, self.filter_id)
        first_event = len(self.published)
        last = last_job_id(self.service)
        make()
        events = self.published[first_event:]
        assert events, "the change published no event"
        after = snapshot(self.pipedrive, self.filter_id)
        want = self.wait_list()
        settle(self.service, self.pipedrive, len(self.published) - self.unsent)
        assert self.brevo.emails(self.list_id) == want
        jobs = [incremental(j) for j in jobs_after(self.service, last)]
        assert jobs, "no incremental job ran"
        return Outcome(events, before, after, jobs)

    def reads(self, events: list[ChangeEvent], snap: Snapshot) -> tuple[int, int]:
        """(fetched, skipped) of one incremental job applying ``events``: Pipedrive lists
        the members changed since the oldest created or changed member minus the margin
        (no call when there is none), and those without a usable email are skipped."""
        own = self.own
        times = [e.at for e in events if e.entity == own and e.action != "delete"]
        if not times:
            return 0, 0
        since = min(times) - SINCE_MARGIN
        state: PipedriveState = self.pipedrive.fake.app.state.fake
        with state.lock:
            store = state.data.persons if own == "person" else state.data.deals
            read = [i for i in snap if store[i].update_time >= since]
        return len(read), sum(1 for i in read if snap[i].contact is None)

    def check_one_job(self, outcome: Outcome, delta: tuple[int, int, int]) -> None:
        """One event made one job, whose counts are ``delta`` (added, updated, removed),
        which the snapshots must agree with, and whose reads are as derived."""
        assert len(outcome.events) == 1, outcome.events
        assert len(outcome.jobs) == 1, outcome.jobs
        assert outcome.delta() == outcome.expected_delta() == delta, outcome.jobs
        job = outcome.jobs[0]
        fetched, skipped = self.reads(outcome.events, outcome.after)
        assert (job["total_fetched"], job["total_skipped"]) == (fetched, skipped), job


def names(brevo: Brevo, email: str) -> tuple[Any, Any, bool]:
    """The contact's FIRSTNAME and LASTNAME, and whether it exists."""
    contact = brevo.contact(email)
    if contact is None:
        return None, None, False
    attributes = contact["attributes"]
    return attributes.get("FIRSTNAME"), attributes.get("LASTNAME"), True


# --- 1 and 3. a person's life in a people filter, over v1 and v2 ------------------------


@VERSIONS
def test_a_person_joins_changes_leaves_is_deleted_and_merged_in_a_people_filter(
    version: str,
    service: Service,
    pipedrive: Pipedrive,
    brevo: Brevo,
    published: list[ChangeEvent],
) -> None:
    filter_id = pipedrive.people_filter("Incremental people")
    ann = pipedrive.person("Ann", "Lee", "ann@incr.example.com")
    bob = pipedrive.person("Bob", "Ray", "bob@incr.example.com")
    dan = pipedrive.person("Dan", "Fox", "dan@incr.example.com")
    eve = pipedrive.person("Eve", "Ash", "team@incr.example.com")
    fay = pipedrive.person("Fay", "Ash", "team@incr.example.com")
    flow = Flow(service, pipedrive, brevo, published, filter_id)
    flow.subscribe(version)

    # Joins: a person with a valid email is created in the tier.
    cat_email = "cat@incr.example.com"
    joined = flow.change(lambda: pipedrive.person("Cat", "Sun", cat_email))
    cat = joined.events[0].entity_id
    flow.check_one_job(joined, (1, 0, 0))
    assert names(brevo, cat_email) == ("Cat", "Sun", True)

    # Changes name: the contact's attributes follow; nothing joins or leaves.
    renamed = flow.change(
        lambda: pipedrive.update_person(ann, first_name="Anna", last_name="Lee-Smith")
    )
    flow.check_one_job(renamed, (0, 1, 0))
    assert names(brevo, "ann@incr.example.com") == ("Anna", "Lee-Smith", True)

    # Changes email: the contact (ours alone) is renamed in place, one update.
    moved = flow.change(lambda: pipedrive.update_person(ann, emails=["anna@incr.example.com"]))
    flow.check_one_job(moved, (0, 1, 0))
    assert names(brevo, "anna@incr.example.com") == ("Anna", "Lee-Smith", True)
    assert brevo.contact("ann@incr.example.com") is None, "renamed in place, not replaced"

    # Leaves: out of the tier, out of the list.
    left = flow.change(lambda: pipedrive.set_tier(bob, None))
    flow.check_one_job(left, (0, 0, 1))
    assert "bob@incr.example.com" not in brevo.emails(flow.list_id)

    # Is deleted: removed without asking Pipedrive anything (nothing fetched).
    calls = pipedrive.calls()
    deleted = flow.change(lambda: pipedrive.delete_person(cat))
    flow.check_one_job(deleted, (0, 0, 1))
    assert pipedrive.calls() == calls
    assert cat_email not in brevo.emails(flow.list_id)

    # Is merged (v2: a delete with merged_to_id and a change of the survivor; v1: a
    # delete and a "merged"): one contact stays, the survivor's primary email; the
    # merged-away person's own email leaves the list.
    merged = flow.change(
        lambda: pipedrive.fake.control("POST", f"/_sandbox/persons/{dan}/merge", json={"into": ann})
    )
    assert [(e.action, e.entity_id) for e in merged.events] == [("delete", dan), ("change", ann)]
    if version == "2.0":
        assert merged.events[0].merged_to_id == ann
    else:
        assert merged.events[1].v1_action == "merged"
    assert merged.delta() == merged.expected_delta() == (0, 0, 1), merged.jobs
    assert "dan@incr.example.com" not in brevo.emails(flow.list_id)
    assert "anna@incr.example.com" in brevo.emails(flow.list_id)

    # Is merged into a person with the same email (the survivor's primary): it stays.
    shared = flow.change(
        lambda: pipedrive.fake.control("POST", f"/_sandbox/persons/{eve}/merge", json={"into": fay})
    )
    assert shared.delta() == shared.expected_delta() == (0, 0, 0), shared.jobs
    assert "team@incr.example.com" in brevo.emails(flow.list_id)
    assert brevo.emails(flow.list_id) == sorted(["anna@incr.example.com", "team@incr.example.com"])


# --- 2 and 3. a deal filter, over v1 and v2 ---------------------------------------------


@VERSIONS
def test_deals_enter_and_leave_a_deal_filter_and_person_changes_come_from_the_webhook(
    version: str,
    service: Service,
    pipedrive: Pipedrive,
    brevo: Brevo,
    published: list[ChangeEvent],
) -> None:
    pat = pipedrive.person("Pat", "One", "pat@incr.example.com")
    quinn = pipedrive.person("Quinn", "Two", "quinn@incr.example.com")
    rae = pipedrive.person("Rae", "Three", "rae@incr.example.com")
    pat_deal = pipedrive.deal("Hot: Pat", pat)
    quinn_deal = pipedrive.deal("Cold: Quinn", quinn)
    pipedrive.deal("Hot: Rae", rae)
    filter_id = pipedrive.deal_filter("Incremental deals", "Hot")
    flow = Flow(service, pipedrive, brevo, published, filter_id)
    assert brevo.emails(flow.list_id) == ["pat@incr.example.com", "rae@incr.example.com"]
    flow.subscribe(version)

    # A deal enters the filter: its person's email joins the list.
    entered = flow.change(lambda: pipedrive.update_deal(quinn_deal, title="Hot: Quinn"))
    flow.check_one_job(entered, (1, 0, 0))
    assert names(brevo, "quinn@incr.example.com") == ("Quinn", "Two", True)

    # A deal leaves the filter: its person's email leaves the list.
    left = flow.change(lambda: pipedrive.update_deal(pat_deal, title="Cold: Pat"))
    flow.check_one_job(left, (0, 0, 1))

    # The person behind a deal changes name: the webhook's data is sent, no person is read
    # (the listings above read the deals' persons; this change adds no such call).
    calls = pipedrive.calls()
    assert calls.get("GET /api/v2/persons", 0) > 0, calls
    renamed = flow.change(lambda: pipedrive.update_person(rae, first_name="Raelynn"))
    flow.check_one_job(renamed, (0, 1, 0))
    assert names(brevo, "rae@incr.example.com") == ("Raelynn", "Three", True)
    assert pipedrive.calls().get("GET /api/v2/persons", 0) == calls.get("GET /api/v2/persons", 0)
    assert pipedrive.calls() == calls, "a person's change alone asks Pipedrive nothing"

    # ... and email: the contact is renamed in place, again from the webhook's data.
    moved = flow.change(
        lambda: pipedrive.update_person(quinn, emails=["quinn.new@incr.example.com"])
    )
    flow.check_one_job(moved, (0, 1, 0))
    assert pipedrive.calls() == calls
    assert brevo.contact("quinn@incr.example.com") is None
    assert names(brevo, "quinn.new@incr.example.com") == ("Quinn", "Two", True)


# --- 4. one delivery sent four times ------------------------------------------------------


@VERSIONS
def test_one_delivery_sent_four_times_is_applied_once(
    version: str,
    service: Service,
    pipedrive: Pipedrive,
    brevo: Brevo,
    published: list[ChangeEvent],
) -> None:
    filter_id = pipedrive.people_filter("Incremental retries")
    pipedrive.person("Ann", "Lee", "ann@incr.example.com")
    list_id = link(service, filter_id)
    last = last_job_id(service)
    # No webhook is registered: the test is Pipedrive, sending the event four times.
    first_event = len(published)
    pipedrive.person("Cat", "Sun", "cat@incr.example.com")
    (event,) = published[first_event:]
    webhook, event_id = hand_webhook(service, version), str(uuid.uuid4())
    bodies = [delivery(event, webhook, event_id, attempt) for attempt in (1, 2, 3, 4)]
    if version == "2.0":
        assert [b["meta"]["attempt"] for b in bodies] == [1, 2, 3, 4]
    else:
        assert [b["retry"] for b in bodies] == [0, 1, 2, 3]

    answers = [post_delivery(service, body) for body in bodies]

    assert answers == ["received", "duplicate", "duplicate", "duplicate"]
    want = listed_emails(pipedrive, filter_id)
    assert "cat@incr.example.com" in want
    wait_until(service, lambda: brevo.emails(list_id) == want, CONVERGE_SECONDS, "list")
    settle(service, pipedrive, 0)
    assert service.query("SELECT status FROM inbox") == [("processed",)]
    (job,) = [incremental(j) for j in jobs_after(service, last)]
    assert (job["total_added"], job["total_updated"], job["total_removed"]) == (1, 0, 0), job
    assert brevo.emails(list_id) == want


# --- 5. an out-of-order pair ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_type", "version"),
    # In a deal filter the person's data comes from the deliveries themselves; in a people
    # filter from Pipedrive's answer, whatever order the deliveries come in.
    [("deals", "2.0"), ("deals", "1.0"), ("people", "2.0")],
    ids=["deals-v2", "deals-v1", "people-v2"],
)
def test_an_out_of_order_pair_ends_in_the_newest_state(
    filter_type: str,
    version: str,
    service: Service,
    pipedrive: Pipedrive,
    brevo: Brevo,
    published: list[ChangeEvent],
) -> None:
    pat = pipedrive.person("Pat", "One", "pat@incr.example.com")
    if filter_type == "deals":
        pipedrive.deal("Hot: Pat", pat)
        filter_id = pipedrive.deal_filter("Incremental order", "Hot")
    else:
        filter_id = pipedrive.people_filter("Incremental order")
    list_id = link(service, filter_id)
    assert brevo.emails(list_id) == ["pat@incr.example.com"]
    # Two changes in Pipedrive, A then B; nothing is delivered (no webhook registered).
    first_event = len(published)
    pipedrive.update_person(pat, first_name="Alpha")
    pipedrive.update_person(pat, first_name="Bravo", emails=["bravo@incr.example.com"])
    older, newer = published[first_event:]
    assert older.at < newer.at
    webhook = hand_webhook(service, version)

    # The newer arrives first and is applied...
    last = last_job_id(service)
    assert post_delivery(service, delivery(newer, webhook, str(uuid.uuid4()), 1)) == "received"
    wait_until(
        service,
        lambda: brevo.emails(list_id) == ["bravo@incr.example.com"],
        CONVERGE_SECONDS,
        "the newer change listed",
    )
    settle(service, pipedrive, 0)
    assert names(brevo, "bravo@incr.example.com") == ("Bravo", "One", True)
    (first,) = [incremental(j) for j in jobs_after(service, last)]
    assert (first["total_added"], first["total_updated"], first["total_removed"]) == (0, 1, 0)

    # ... then the older, in a window of its own: it changes nothing.
    last = last_job_id(service)
    assert post_delivery(service, delivery(older, webhook, str(uuid.uuid4()), 1)) == "received"
    wait_until(
        service,
        lambda: (
            count(service, "SELECT COUNT(*) FROM inbox WHERE status = 'processed'") == 2
            and last_job_id(service) > last
            and quiet(service)
        ),
        SETTLE_SECONDS,
        "the older change applied",
    )
    (second,) = [incremental(j) for j in jobs_after(service, last)]
    assert (second["total_added"], second["total_updated"], second["total_removed"]) == (0, 0, 0)
    assert (
        brevo.emails(list_id) == ["bravo@incr.example.com"] == listed_emails(pipedrive, filter_id)
    )
    assert names(brevo, "bravo@incr.example.com") == ("Bravo", "One", True)
    assert brevo.contact("pat@incr.example.com") is None


# --- 6. deliveries while the worker is stopped ------------------------------------------------

MANY = 500


def test_deliveries_acknowledged_while_the_worker_is_stopped_are_applied_once_it_starts(
    service: Service,
    pipedrive: Pipedrive,
    brevo: Brevo,
    published: list[ChangeEvent],
    started: Started,
) -> None:
    filter_id = pipedrive.people_filter("Incremental backlog")
    pipedrive.person("Ann", "Lee", "ann@incr.example.com")
    flow = Flow(service, pipedrive, brevo, published, filter_id)
    flow.subscribe("2.0")
    # A loaded 2-core machine may take longer than the session's 2 s to answer a burst.
    pipedrive.fake.control("PUT", "/_sandbox/settings", json={"delivery_timeout": 10.0})
    assert service.stop_worker() == 0
    last = last_job_id(service)

    with httpx.Client(base_url=pipedrive.fake.url, timeout=10) as control:
        for n in range(MANY):
            body = {
                "first_name": f"Backlog{n}",
                "last_name": "Person",
                "emails": [f"backlog{n}@incr.example.com"],
                "custom_fields": {TIER_KEY: TIER},
            }
            assert control.post("/_sandbox/persons", json=body).status_code == 201

    wait_until(
        service,
        lambda: pipedrive.delivered_events() == MANY,
        60,
        f"{MANY} deliveries acknowledged",
    )
    assert count(service, "SELECT COUNT(*) FROM inbox") == MANY
    assert count(service, "SELECT COUNT(*) FROM inbox WHERE status = 'pending'") == MANY
    assert brevo.emails(flow.list_id) == ["ann@incr.example.com"], "applied without a worker"

    started.processes.append(service.start_worker())

    want = listed_emails(pipedrive, filter_id)
    assert len(want) == MANY + 1
    wait_until(service, lambda: brevo.emails(flow.list_id) == want, 60, "the backlog listed")
    settle(service, pipedrive, MANY)
    jobs = [incremental(j) for j in jobs_after(service, last)]
    assert sum(j["total_added"] for j in jobs) == MANY, jobs
    assert sum(j["total_removed"] + j["total_updated"] for j in jobs) == 0, jobs
    assert count(service, "SELECT COUNT(*) FROM inbox WHERE status = 'processed'") == MANY


# --- 7. a worker killed in the middle of its work ----------------------------------------

BURST = 30  # more than apply.ONE_BY_ONE_MAX: the job sends its contacts by one import


@pytest.mark.parametrize(
    "moment",
    [
        # The job has claimed its row: nothing is sent to Brevo yet.
        "claimed",
        # Brevo has accepted the job's import, the ledger does not know it yet: the most
        # delicate moment (the contacts land in the list, the job never confirms them).
        "sent",
    ],
)
def test_a_worker_killed_with_sigkill_during_an_incremental_job_loses_nothing(
    moment: str,
    service: Service,
    pipedrive: Pipedrive,
    brevo: Brevo,
    published: list[ChangeEvent],
    started: Started,
) -> None:
    filter_id = pipedrive.people_filter("Incremental crash")
    pipedrive.person("Ann", "Lee", "ann@incr.example.com")
    flow = Flow(service, pipedrive, brevo, published, filter_id)
    flow.subscribe("2.0")
    # The burst waits in the inbox, so that one job takes it all (and sends it by import);
    # Brevo is slowed down so that the job is surely mid-way when it is killed.
    service.stop_worker()
    burst = [
        pipedrive.person(f"Burst{n}", "Person", f"burst{n}@incr.example.com") for n in range(BURST)
    ]
    wait_until(service, lambda: pipedrive.delivered_events() == BURST, 30, "the burst stored")
    brevo.fake.control(
        "PUT", "/_sandbox/faults", json={"faults": [], "latency": [{"seconds": 0.3}]}
    )
    started.processes.append(service.start_worker())

    def running_job() -> int | None:
        rows = service.query(
            "SELECT id FROM sync_jobs WHERE kind = 'incremental' AND status = 'processing' "
            "AND claimed_at IS NOT NULL"
        )
        if not rows or (moment == "sent" and not brevo.calls().get("POST /contacts/import")):
            return None
        return int(rows[0][0])

    killed = wait_until(service, running_job, SETTLE_SECONDS, f"an incremental job {moment}")
    assert killed is not None
    assert service.stop_worker(signal.SIGKILL) == -signal.SIGKILL
    brevo.faults()  # no more latency

    # More changes while no worker runs: joins, leaves, an email change, a deletion.
    for n in range(BURST, BURST + 10):
        pipedrive.person(f"Burst{n}", "Person", f"burst{n}@incr.example.com")
    for person in burst[:5]:
        pipedrive.set_tier(person, None)
    pipedrive.update_person(burst[5], emails=["burst5.new@incr.example.com"])
    pipedrive.delete_person(burst[6])
    started.processes.append(service.start_worker())

    want = flow.wait_list()
    settle(service, pipedrive, len(published) - flow.unsent)
    assert brevo.emails(flow.list_id) == want
    assert len(want) == 1 + BURST + 10 - 5 - 1
    assert service.job(killed)["status"] == "failed"
    assert service.job(killed)["error_message"] == "worker stopped during the job"
    assert count(service, "SELECT COUNT(*) FROM inbox WHERE status = 'pending'") == 0
    assert count(service, "SELECT COUNT(*) FROM filter_changes") == 0
    assert count(service, "SELECT COUNT(*) FROM sync_jobs WHERE status = 'processing'") == 0
    last = service.query("SELECT status FROM sync_jobs ORDER BY id DESC LIMIT 1")
    assert last == [("completed",)]


# --- 8. ./scripts/run --sandbox ---------------------------------------------------------


@dataclass
class Sandbox:
    """``./scripts/run --sandbox`` running: the service and the two fakes it started."""

    script: subprocess.Popen[bytes]
    log: Path
    base: str
    pipedrive: str
    brevo: str

    def logs(self) -> str:
        """The end of the script's output (the demo set-up and ``pbsync serve``'s log)."""
        return self.log.read_text("utf-8", errors="replace")[-6000:]

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """Poll ``predicate``; fail with the output when the script exits or time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            assert self.script.poll() is None, f"scripts/run exited\n{self.logs()}"
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout} s\n{self.logs()}")

    def stop(self) -> None:
        """SIGTERM the script (it stops serve and the fakes), then kill what is left."""
        if self.script.poll() is None:
            self.script.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.script.wait(30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.script.pid, signal.SIGKILL)


@pytest.fixture
def sandbox(tmp_path: Path, started: Started) -> Iterator[Sandbox]:
    """``./scripts/run --sandbox`` on free ports with its data under ``tmp_path``, healthy."""
    port, pipedrive_port, brevo_port = free_port(), free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ADMIN_", "PIPEDRIVE_", "BREVO_", "WEBHOOK_", "PUBLIC_URL"))
    }
    env.update(
        PORT=str(port),
        SANDBOX_PIPEDRIVE_PORT=str(pipedrive_port),
        SANDBOX_BREVO_PORT=str(brevo_port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'sandbox.db'}",
        QUEUE_URL=f"sqlite:///{tmp_path / 'sandbox-queue.db'}",
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "run.log"
    with log.open("ab") as output:
        script = subprocess.Popen(
            [str(REPO / "scripts" / "run"), "--sandbox"],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its group: the script, the fakes and serve
        )
    started.processes.append(script)
    running = Sandbox(
        script,
        log,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{pipedrive_port}",
        f"http://127.0.0.1:{brevo_port}",
    )
    try:
        running.wait(lambda: healthy(str(port)), 60, "the service healthy")
        running.wait(lambda: child_pids(log), 10, "serve's children logged")
        started.child_pids.extend(child_pids(log).values())
        yield running
    finally:
        running.stop()


def test_scripts_run_sandbox_lists_a_change_within_ten_seconds(sandbox: Sandbox) -> None:
    # The sandbox registered the service's webhooks in the fake Pipedrive by itself.
    hooks = httpx.get(
        sandbox.pipedrive + "/v1/webhooks",
        headers={"x-api-token": "sandbox-pipedrive-token"},
        timeout=10,
    ).json()["data"]
    assert hooks, "no webhook registered"
    assert {h["subscription_url"] for h in hooks} == {sandbox.base + "/webhooks/pipedrive"}

    # An admin links a filter, as in the UI: a people filter, refreshed and synced once.
    created = httpx.post(
        sandbox.pipedrive + "/_sandbox/filters",
        json={"name": "Sandbox E2E", "type": "people", "conditions": tier_conditions("E2E")},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    filter_id = created.json()["id"]
    session = httpx.post(
        sandbox.base + "/api/session", json={"password": ADMIN_PASSWORD}, timeout=10
    )
    assert session.status_code == 201, session.text
    bearer = {"Authorization": f"Bearer {session.json()['token']}"}
    with httpx.Client(base_url=sandbox.base, headers=bearer, timeout=15) as admin:
        assert admin.post("/api/filters/refresh").status_code == 200
        job_id = admin.post(f"/api/filters/{filter_id}/sync").json()["job"]["id"]

        def job_status() -> str:
            status: str = admin.get(f"/api/jobs/{job_id}").json()["job"]["status"]
            return status

        sandbox.wait(lambda: job_status() != "processing", 30, "the first sync")
        assert job_status() == "completed"
        linked = {f["id"]: f for f in admin.get("/api/filters").json()["filters"]}
        list_id = linked[filter_id]["brevo_list_id"]

    # A change through the fake's control API is in the Brevo list within 10 seconds.
    person = {
        "first_name": "Sandy",
        "last_name": "Box",
        "emails": ["sandy@e2e.example.com"],
        "custom_fields": {TIER_KEY: "E2E"},
    }
    made = httpx.post(sandbox.pipedrive + "/_sandbox/persons", json=person, timeout=10)
    assert made.status_code == 201, made.text

    def listed() -> bool:
        answer = httpx.get(f"{sandbox.brevo}/_sandbox/lists/{list_id}/emails", timeout=10)
        return "sandy@e2e.example.com" in answer.json()["emails"]

    sandbox.wait(listed, 10, "the new person in the fake Brevo list")
