"""workers/sync/drain.py: pending deliveries routed into filter changes (once, after the
coalesce window), and one incremental job per linked filter with changes."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox.pipedrive.events import ChangeEvent
from service import jobs
from service.api_usage import DatabaseUsage
from service.clients.usage import RateFigures
from service.db import bound_path
from service.webhooks import classify
from tests.sync.conftest import (
    add_filter,
    change_count,
    delivery_body,
    job_row,
    jobs_of,
    object_event,
    person_event,
    soft_delete_filter,
    store_delivery,
)
from workers.sync.claims import claim_job, fail_job, finish_job, new_token
from workers.sync.drain import (
    Change,
    DrainResult,
    LinkedFilter,
    PendingDelivery,
    commit_routing,
    drain,
    filters_with_changes,
    linked_filters,
    pending_deliveries,
    retry_due,
    route,
    route_pending,
    start_incremental_jobs,
)
from workers.sync.webhook_data import PersonData

NOW = 1_900_000_000
AT = datetime.fromtimestamp(NOW - 100, UTC)  # when the events happened
WINDOW = 5

PEOPLE = LinkedFilter(11, "people", frozenset())
PEOPLE_2 = LinkedFilter(12, "people", frozenset())
DEALS = LinkedFilter(21, "deals", frozenset())
DEALS_2 = LinkedFilter(22, "deals", frozenset())
CROSS = LinkedFilter(13, "people", frozenset({"deal", "organization"}))
FILTERS = [PEOPLE, PEOPLE_2, CROSS, DEALS, DEALS_2]


def pending(event: ChangeEvent, inbox_id: int, version: str = "2") -> PendingDelivery:
    """The pending inbox row the webhook endpoint would store for ``event``."""
    body = delivery_body(event, version)
    text = json.dumps(body)
    d = classify(body, text)
    assert d.status == "pending", d.reason
    return PendingDelivery(
        inbox_id, d.version, d.object, d.action, d.entity_id, d.occurred_at or 0, text
    )


def rows(changes: list[Change]) -> list[tuple[object, ...]]:
    return [c.row() for c in changes]


def data_row(
    filter_id: int,
    inbox_id: int,
    kind: str,
    action: str,
    data: PersonData | None,
    merged: int | None = None,
) -> tuple[object, ...]:
    """The expected change row of a person delivery."""
    return (
        filter_id,
        inbox_id,
        kind,
        action,
        7 if data is None else data.person_id,
        NOW - 100,
        data.updated_at if data else None,
        data.email if data else None,
        data.first_name if data else None,
        data.last_name if data else None,
        merged,
    )


ADA = PersonData(7, "ada@example.com", "Ada", "Test", NOW - 100)


# --- route --------------------------------------------------------------------------------


def test_a_person_event_touches_people_filters_and_deal_filters_holding_the_person() -> None:
    event = person_event(7, " Ada@Example.com ", "other@example.com", at=AT)
    changes, refresh = route([pending(event, 1)], FILTERS, {(DEALS.id, 7), (DEALS_2.id, 99)})
    assert refresh is False
    assert rows(changes) == [
        data_row(PEOPLE.id, 1, "member", "change", ADA),
        data_row(PEOPLE_2.id, 1, "member", "change", ADA),
        data_row(CROSS.id, 1, "member", "change", ADA),
        data_row(DEALS.id, 1, "person", "change", ADA),
    ]


def test_a_deal_event_touches_deal_filters_and_relists_filters_naming_deals() -> None:
    changes, _ = route([pending(object_event("deal", 40, at=AT), 2)], FILTERS, {(DEALS.id, 40)})
    assert rows(changes) == [
        (CROSS.id, 2, "relist", None, None, NOW - 100, None, None, None, None, None),
        (DEALS.id, 2, "member", "change", 40, NOW - 100, None, None, None, None, None),
        (DEALS_2.id, 2, "member", "change", 40, NOW - 100, None, None, None, None, None),
    ]


def test_an_organization_event_only_relists_filters_naming_organizations() -> None:
    deliveries = [
        pending(object_event("organization", 3, at=AT), 3),
        pending(object_event("organization", 4, at=AT), 4),
    ]
    changes, refresh = route(deliveries, FILTERS, set())
    assert refresh is False
    assert [(c.filter_id, c.inbox_id, c.kind) for c in changes] == [
        (CROSS.id, 3, "relist"),
        (CROSS.id, 4, "relist"),
    ]


def test_a_filter_event_asks_for_a_refresh_and_changes_nothing() -> None:
    changes, refresh = route([pending(object_event("filter", 5, at=AT), 5)], FILTERS, set())
    assert (changes, refresh) == ([], True)


@pytest.mark.parametrize(
    ("v1_action", "action"),
    [("added", "create"), ("updated", "change"), ("merged", "change"), ("deleted", "delete")],
)
def test_v1_actions_are_routed_in_v2_words(v1_action: str, action: str) -> None:
    v2_action = "delete" if action == "delete" else "change"
    event = person_event(7, "ada@example.com", at=AT, action=v2_action, v1_action=v1_action)
    changes, _ = route([pending(event, 6, version="1")], [PEOPLE, DEALS], {(DEALS.id, 7)})
    data = None if action == "delete" else ADA
    assert rows(changes) == [
        data_row(PEOPLE.id, 6, "member", action, data),
        data_row(DEALS.id, 6, "person", action, data),
    ]


def test_an_unknown_v1_action_or_a_missing_id_routes_nothing() -> None:
    """(The endpoint stores such deliveries as ignored; the drain does not rely on it.)"""
    event = pending(person_event(7, "ada@example.com", at=AT), 7)
    unknown_v1 = replace(pending(person_event(7, at=AT), 8, version="1"), action="archived")
    without_id = replace(event, id=9, entity_id=None)
    assert route([unknown_v1, without_id], FILTERS, {(DEALS.id, 7)}) == ([], False)


def test_data_naming_another_person_is_not_trusted() -> None:
    """The delivery's meta names person 7 but its body is person 9's: the change is routed
    (7 did change) without any person data."""
    body = delivery_body(person_event(7, "ada@example.com", at=AT))
    body["data"] = delivery_body(person_event(9, "eve@example.com", at=AT))["data"]
    text = json.dumps(body)
    d = classify(body, text)
    delivery = PendingDelivery(11, d.version, d.object, d.action, d.entity_id, NOW - 100, text)
    changes, _ = route([delivery], [PEOPLE, DEALS], {(DEALS.id, 7)})
    assert rows(changes) == [
        data_row(PEOPLE.id, 11, "member", "change", None),
        data_row(DEALS.id, 11, "person", "change", None),
    ]


def test_a_merge_delete_carries_the_survivor() -> None:
    event = person_event(7, at=AT, action="delete", merged_to=9)
    changes, _ = route([pending(event, 12)], [PEOPLE, DEALS], {(DEALS.id, 7)})
    assert rows(changes) == [
        data_row(PEOPLE.id, 12, "member", "delete", None, merged=9),
        data_row(DEALS.id, 12, "person", "delete", None, merged=9),
    ]


def test_a_deal_filter_naming_person_fields_gets_the_person_data_too() -> None:
    deals_on_persons = LinkedFilter(23, "deals", frozenset({"person"}))
    event = person_event(7, "ada@example.com", at=AT)
    changes, _ = route([pending(event, 13)], [deals_on_persons], {(23, 7)})
    assert sorted(c.kind for c in changes) == ["person", "relist"]


# --- route_pending --------------------------------------------------------------------------


def people_and_deals(clean_db: Path) -> None:
    add_filter(PEOPLE.id, "People", "people", brevo_list_id=101)
    add_filter(DEALS.id, "Deals", "deals", brevo_list_id=102)


def statuses() -> list[str]:
    return [r[0] for r in query("SELECT status FROM inbox ORDER BY id")]


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    path = bound_path()
    assert path is not None
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def in_ledger(filter_id: int, deal_id: int, person_id: int) -> None:
    """A ledger row: the deal's person was sent to the filter's list."""
    path = bound_path()
    assert path is not None
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO memberships (filter_id, entity_id, person_id, email, state, updated_at) "
            "VALUES (?, ?, ?, 'p@example.com', 'listed', 1)",
            (filter_id, deal_id, person_id),
        )
    connection.close()


def test_linked_filters_are_those_with_a_list_a_type_and_no_deletion(clean_db: Path) -> None:
    add_filter(1, "Linked people", "people", brevo_list_id=1)
    add_filter(2, "Unlinked", "people", brevo_list_id=None)
    add_filter(3, "Gone", "deals", brevo_list_id=3)
    soft_delete_filter(3, NOW)
    add_filter(4, "Untyped", None, brevo_list_id=4)
    add_filter(5, "Linked deals", "deals", brevo_list_id=5)
    query_rows = "UPDATE filters SET related_objects = 'deal,organization' WHERE id = 1"
    path = bound_path()
    assert path is not None
    with sqlite3.connect(path) as connection:
        connection.execute(query_rows)
    connection.close()
    assert linked_filters() == [
        LinkedFilter(1, "people", frozenset({"deal", "organization"})),
        LinkedFilter(5, "deals", frozenset()),
    ]


def test_the_burst_is_routed_once_its_oldest_delivery_waited_the_window(clean_db: Path) -> None:
    people_and_deals(clean_db)
    in_ledger(DEALS.id, 40, 7)
    store_delivery(delivery_body(person_event(7, "ada@example.com", at=AT)), NOW)
    store_delivery(delivery_body(object_event("deal", 40, at=AT)), NOW + 3)
    store_delivery(delivery_body(object_event("activity", 1, at=AT)), NOW + 3)  # ignored

    assert route_pending(NOW + 4, WINDOW) == (0, 0, False)
    assert statuses() == ["pending", "pending", "ignored"]
    assert change_count() == 0

    # The younger delivery goes with the burst: 2 deliveries, 3 changes.
    assert route_pending(NOW + 5, WINDOW) == (2, 3, False)
    assert statuses() == ["processed", "processed", "ignored"]
    assert query("SELECT filter_id, kind, entity_id, email FROM filter_changes ORDER BY id") == [
        (PEOPLE.id, "member", 7, "ada@example.com"),
        (DEALS.id, "person", 7, "ada@example.com"),
        (DEALS.id, "member", 40, None),
    ]
    # Drained again: nothing is routed twice.
    assert route_pending(NOW + 60, WINDOW) == (0, 0, False)
    assert change_count() == 3


def test_a_delivery_without_an_event_time_counts_from_its_arrival(clean_db: Path) -> None:
    people_and_deals(clean_db)
    body = delivery_body(person_event(7, "ada@example.com", at=AT))
    del body["meta"]["timestamp"]
    store_delivery(body, NOW)
    assert route_pending(NOW + 5, WINDOW) == (1, 1, False)
    assert query("SELECT occurred_at FROM filter_changes") == [(NOW,)]


def test_a_large_backlog_is_routed_in_batches(clean_db: Path) -> None:
    people_and_deals(clean_db)
    for person_id in range(1, 8):
        store_delivery(delivery_body(person_event(person_id, at=AT)), NOW)
    assert route_pending(NOW + 5, WINDOW, batch=3) == (7, 7, False)
    assert statuses() == ["processed"] * 7
    assert [r[0] for r in query("SELECT entity_id FROM filter_changes ORDER BY id")] == list(
        range(1, 8)
    )


def test_a_delivery_another_drain_routed_first_is_not_routed_again(clean_db: Path) -> None:
    """Two drains read the same pending rows; the second one's commit takes none of them."""
    people_and_deals(clean_db)
    store_delivery(delivery_body(person_event(7, at=AT)), NOW)
    store_delivery(delivery_body(object_event("deal", 40, at=AT)), NOW)
    first_read = pending_deliveries(100)
    second_read = pending_deliveries(100)
    first, _ = route(first_read, linked_filters(), set())
    second, _ = route(second_read, linked_filters(), set())
    ids = [d.id for d in first_read]

    assert commit_routing(ids, first) == sorted(ids)
    assert commit_routing([d.id for d in second_read], second) == []
    assert change_count() == len(first) == 2


def test_a_filter_delivery_is_marked_processed_and_asks_for_a_refresh(clean_db: Path) -> None:
    people_and_deals(clean_db)
    store_delivery(delivery_body(object_event("filter", 5, at=AT)), NOW)
    assert route_pending(NOW + 5, WINDOW) == (1, 0, True)
    assert statuses() == ["processed"]


# --- incremental jobs ---------------------------------------------------------------------


def changed(filter_id: int, *entity_ids: int) -> None:
    """Routed member changes of the filter."""
    path = bound_path()
    assert path is not None
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO filter_changes (filter_id, inbox_id, kind, action, entity_id, "
            "occurred_at) VALUES (?, 1, 'member', 'change', ?, ?)",
            [(filter_id, e, NOW - 100) for e in entity_ids],
        )
    connection.close()


class Enqueued(list[int]):
    def __call__(self, job_id: int) -> None:
        self.append(job_id)


def test_one_incremental_job_per_filter_with_changes(clean_db: Path) -> None:
    people_and_deals(clean_db)
    add_filter(PEOPLE_2.id, "Quiet", "people", brevo_list_id=103)
    changed(PEOPLE.id, 1, 2, 3)
    changed(DEALS.id, 40)
    enqueued = Enqueued()

    started = start_incremental_jobs(NOW, enqueued)

    assert len(started) == 2 and enqueued == started
    made = [job_row(j) for j in started]
    assert [(j["filter_id"], j["kind"], j["trigger"], j["status"]) for j in made] == [
        (PEOPLE.id, "incremental", "webhook", "processing"),
        (DEALS.id, "incremental", "webhook", "processing"),
    ]
    assert all(j["created_at"] == NOW and j["forced"] == 0 for j in made)
    assert jobs_of(PEOPLE_2.id) == []
    # While they run, more changes start nothing more.
    changed(PEOPLE.id, 4)
    assert start_incremental_jobs(NOW + 1, enqueued) == []
    assert enqueued == started


def test_a_busy_filter_gets_its_job_after_the_running_one_ends(clean_db: Path) -> None:
    people_and_deals(clean_db)
    full = jobs.create_job(PEOPLE.id, "full", "admin", False, NOW - 10).id
    token = new_token()
    assert claim_job(full, token, NOW - 10) is not None
    changed(PEOPLE.id, 1)
    enqueued = Enqueued()

    assert filters_with_changes(NOW, 30) == []
    assert start_incremental_jobs(NOW, enqueued) == []
    assert change_count(PEOPLE.id) == 1  # kept, not dropped

    finish_job(full, token, NOW + 1)
    (job_id,) = start_incremental_jobs(NOW + 2, enqueued)
    assert enqueued == [job_id]
    assert job_row(job_id)["kind"] == "incremental"


def failed_incremental(filter_id: int, at: int, error: str = "Brevo said no") -> int:
    job_id = jobs.create_job(filter_id, "incremental", "webhook", False, at - 5).id
    token = new_token()
    assert claim_job(job_id, token, at - 5) is not None
    assert fail_job(job_id, token, at, error)
    return job_id


CRASH = "internal error (RuntimeError); see the worker log"


def test_a_failed_incremental_job_delays_the_next_one(clean_db: Path) -> None:
    people_and_deals(clean_db)
    failed_incremental(PEOPLE.id, NOW)
    changed(PEOPLE.id, 1)
    enqueued = Enqueued()

    assert start_incremental_jobs(NOW + 29, enqueued, retry_after_failure=30) == []
    assert filters_with_changes(NOW + 29, 30) == []
    assert filters_with_changes(NOW + 30, 30) == [PEOPLE.id]  # the pause is over
    (job_id,) = start_incremental_jobs(NOW + 30, enqueued, retry_after_failure=30)
    assert enqueued == [job_id]


def test_failures_in_a_row_double_the_wait_and_six_crashes_stop_the_retries(
    clean_db: Path,
) -> None:
    """A job that crashes every time is retried 30, 60, 120, 240, 480 s after each failure,
    then no more: its changes wait for a full resync."""
    people_and_deals(clean_db)
    changed(PEOPLE.id, 1)
    at = NOW
    for failures, wait in enumerate((30, 60, 120, 240, 480), start=1):
        failed_incremental(PEOPLE.id, at, CRASH)
        assert filters_with_changes(at + wait - 1, 30) == [], failures
        assert filters_with_changes(at + wait, 30) == [PEOPLE.id], failures
        at += wait
    failed_incremental(PEOPLE.id, at, CRASH)  # the sixth in a row
    assert filters_with_changes(at + 10 * 86400, 30) == []
    assert change_count(PEOPLE.id) == 1  # kept for the full resync

    full = jobs.create_job(PEOPLE.id, "full", "admin", False, at + 100).id
    token = new_token()
    assert claim_job(full, token, at + 100) is not None
    finish_job(full, token, at + 101)
    assert filters_with_changes(at + 102, 30) == [PEOPLE.id]


def test_retry_due_counts_only_failed_incremental_jobs_in_a_row() -> None:
    failed = ("incremental", "failed", NOW, "brevo POST /contacts answered 503")
    crashed = ("incremental", "failed", NOW, CRASH)
    assert retry_due([], NOW, 30)
    assert retry_due([("full", "failed", NOW, CRASH)], NOW, 30)
    assert not retry_due([failed, failed], NOW + 59, 30)
    assert retry_due([failed, failed, ("incremental", "completed", NOW - 99, None)], NOW + 60, 30)
    assert not retry_due([crashed] * 6, NOW + 10**9, 30)
    # The wait never exceeds an hour, however long the first one.
    assert retry_due([crashed] * 5, NOW + 3600, 1000)


def test_an_api_outage_is_retried_hourly_without_end() -> None:
    """Failures the APIs cause heal by themselves: they never stop the retries."""
    outage = ("incremental", "failed", NOW, "brevo POST /contacts answered 503")
    assert not retry_due([outage] * 6, NOW + 959, 30)  # 30 s doubled five times
    assert retry_due([outage] * 6, NOW + 960, 30)
    assert not retry_due([outage] * 12, NOW + 3599, 30)  # never longer than an hour
    assert retry_due([outage] * 12, NOW + 3600, 30)
    assert retry_due(
        [outage, outage, outage, outage, outage, ("incremental", "failed", NOW, CRASH)],
        NOW + 3600,
        30,
    )


def test_only_the_latest_job_failing_delays(clean_db: Path) -> None:
    """A failed full resync does not delay the incremental work, nor does a failed
    incremental job followed by one that ran."""
    people_and_deals(clean_db)
    full = jobs.create_job(PEOPLE.id, "full", "admin", False, NOW - 5).id
    token = new_token()
    assert claim_job(full, token, NOW - 5) is not None
    assert fail_job(full, token, NOW, "brake")
    failed_incremental(DEALS.id, NOW - 2)
    later = jobs.create_job(DEALS.id, "full", "admin", False, NOW - 1).id
    token = new_token()
    assert claim_job(later, token, NOW - 1) is not None
    finish_job(later, token, NOW)
    changed(PEOPLE.id, 1)
    changed(DEALS.id, 40)

    assert filters_with_changes(NOW + 1, 30) == [PEOPLE.id, DEALS.id]


def test_filters_no_longer_linked_lose_their_changes(clean_db: Path) -> None:
    people_and_deals(clean_db)
    add_filter(31, "Never linked", "people", brevo_list_id=None)
    changed(PEOPLE.id, 1)
    changed(DEALS.id, 40)
    changed(31, 5)
    soft_delete_filter(DEALS.id, NOW)

    assert filters_with_changes(NOW, 30) == [PEOPLE.id]
    assert (change_count(PEOPLE.id), change_count(DEALS.id), change_count(31)) == (1, 0, 0)
    assert jobs_of(DEALS.id) == [] and jobs_of(31) == []


# --- drain --------------------------------------------------------------------------------


def test_drain_routes_the_burst_refreshes_and_starts_the_jobs(clean_db: Path) -> None:
    people_and_deals(clean_db)
    store_delivery(delivery_body(person_event(7, "ada@example.com", at=AT)), NOW)
    store_delivery(delivery_body(object_event("filter", 5, at=AT)), NOW + 1)
    enqueued = Enqueued()
    refreshes: list[int] = []

    early = drain(NOW + 4, WINDOW, enqueued, lambda: refreshes.append(1))
    assert early == DrainResult(0, 0, False, [])

    result = drain(NOW + 5, WINDOW, enqueued, lambda: refreshes.append(1))

    assert (result.routed, result.changes, result.refresh) == (2, 1, True)
    assert refreshes == [1]
    assert len(result.jobs) == 1 and enqueued == result.jobs
    assert job_row(result.jobs[0])["filter_id"] == PEOPLE.id
    assert drain(NOW + 6, WINDOW, enqueued, lambda: refreshes.append(1)) == DrainResult(
        0, 0, False, []
    )
    assert refreshes == [1]


def test_drain_waits_longer_as_pipedrives_budget_runs_low(clean_db: Path) -> None:
    """A quarter of the daily budget left: the burst is gathered twice as long."""
    people_and_deals(clean_db)
    DatabaseUsage().record_figures("pipedrive", RateFigures(80, 80, 2.0, 40000, 10000), NOW)
    store_delivery(delivery_body(person_event(7, at=AT)), NOW)
    enqueued = Enqueued()

    assert drain(NOW + 2 * WINDOW - 1, WINDOW, enqueued, lambda: None).routed == 0
    assert drain(NOW + 2 * WINDOW, WINDOW, enqueued, lambda: None).routed == 1
    assert len(enqueued) == 1
