"""workers/sync/changes.py: a filter's routed changes as an incremental job reads them
(the newest person data wins, deletes and merges), and their token-checked removal."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from service import jobs
from service.clock import ManualClock
from service.db import bound_path
from tests.sync.conftest import add_filter, change_count
from workers.sync.changes import (
    ChangeRow,
    FilterChanges,
    consume_changes,
    load_changes,
    pending_change_count,
)
from workers.sync.claims import ClaimedJob, ClaimLost, claim_job, new_token
from workers.sync.contacts import Member

PERSON = 7
OTHER_PERSON = 8


def row(
    id_: int,
    kind: str = "person",
    action: str | None = "change",
    entity_id: int | None = PERSON,
    occurred_at: int = 1000,
    data_time: int | None = None,
    email: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    merged_to: int | None = None,
) -> ChangeRow:
    return ChangeRow(
        id_,
        kind,
        action,
        entity_id,
        occurred_at,
        data_time,
        email,
        first_name,
        last_name,
        merged_to,
    )


def changes(*rows: ChangeRow) -> FilterChanges:
    return FilterChanges(rows[-1].id, list(rows))


# --- the newest person data -------------------------------------------------------------


def test_newer_data_wins_over_an_older_delivery_that_arrived_later() -> None:
    newer = row(1, data_time=2000, email="new@example.com", first_name="New")
    older = row(2, data_time=1500, email="old@example.com", first_name="Old")
    fresh, deleted = changes(newer, older).persons()
    assert fresh == {PERSON: Member(PERSON, PERSON, "new@example.com", "New", None, 2000)}
    assert deleted == {}


def test_with_equal_update_times_the_later_arrival_wins() -> None:
    first = row(1, data_time=2000, email="first@example.com")
    second = row(2, data_time=2000, email="second@example.com")
    fresh, _ = changes(first, second).persons()
    assert fresh[PERSON].email == "second@example.com"


def test_a_delete_after_the_last_data_removes_the_person() -> None:
    data = row(1, data_time=2000, email="a@example.com")
    delete = row(2, action="delete", occurred_at=2001)
    assert changes(data, delete).persons() == ({}, {PERSON: None})


def test_a_delete_that_arrived_before_older_data_still_wins() -> None:
    delete = row(1, action="delete", occurred_at=2001)
    late_data = row(2, data_time=2000, email="a@example.com")
    assert changes(delete, late_data).persons() == ({}, {PERSON: None})


def test_data_newer_than_a_delete_brings_the_person_back() -> None:
    delete = row(1, action="delete", occurred_at=2000)
    data = row(2, data_time=2005, email="back@example.com", last_name="Back")
    fresh, deleted = changes(delete, data).persons()
    assert fresh == {PERSON: Member(PERSON, PERSON, "back@example.com", None, "Back", 2005)}
    assert deleted == {}


def test_a_merge_names_the_survivor() -> None:
    merged = row(1, action="delete", occurred_at=3000, merged_to=OTHER_PERSON)
    survivor = row(2, entity_id=OTHER_PERSON, data_time=3000, email="keep@example.com")
    fresh, deleted = changes(merged, survivor).persons()
    assert deleted == {PERSON: OTHER_PERSON}
    assert fresh == {
        OTHER_PERSON: Member(OTHER_PERSON, OTHER_PERSON, "keep@example.com", None, None, 3000)
    }


def test_a_change_without_usable_data_is_not_taken_for_data() -> None:
    """A delivery that carried no data (none, or not about this person) changes nothing;
    a person who simply has no email is data (time known, email None)."""
    known = row(1, data_time=2000, email="a@example.com")
    no_data = row(2, occurred_at=2500)
    assert changes(known, no_data).persons()[0][PERSON].email == "a@example.com"
    no_email = row(3, data_time=2600, first_name="Mail-less")
    fresh, _ = changes(known, no_data, no_email).persons()
    assert fresh[PERSON] == Member(PERSON, PERSON, None, "Mail-less", None, 2600)


def test_only_person_changes_count_as_person_data() -> None:
    member = row(1, kind="member", data_time=2000, email="member@example.com")
    relist = row(2, kind="relist", action=None, entity_id=None)
    other = row(3, entity_id=OTHER_PERSON, data_time=2000, email="other@example.com")
    fresh, deleted = changes(member, relist, other).persons()
    assert set(fresh) == {OTHER_PERSON} and deleted == {}


def test_persons_are_ranked_each_on_their_own() -> None:
    rows = [
        row(1, entity_id=1, data_time=300, email="one.new@example.com"),
        row(2, entity_id=2, data_time=100, email="two.old@example.com"),
        row(3, entity_id=1, data_time=200, email="one.old@example.com"),
        row(4, entity_id=2, data_time=400, email="two.new@example.com"),
        row(5, entity_id=3, action="delete", occurred_at=50),
    ]
    fresh, deleted = changes(*rows).persons()
    assert {p: m.email for p, m in fresh.items()} == {
        1: "one.new@example.com",
        2: "two.new@example.com",
    }
    assert deleted == {3: None}


# --- what the job asks Pipedrive ----------------------------------------------------------


def test_only_deletions_need_no_listing() -> None:
    only_deletes = changes(
        row(1, kind="member", action="delete", entity_id=5, occurred_at=900),
        row(2, kind="member", action="delete", entity_id=6, occurred_at=800),
        row(3, kind="person", action="change", entity_id=9, occurred_at=700, data_time=700),
    )
    assert only_deletes.needs_listing() is False
    assert only_deletes.since() is None
    assert only_deletes.relist is False
    assert only_deletes.changed_entities() == {5, 6}


def test_since_is_the_oldest_member_change_that_is_not_a_delete() -> None:
    mixed = changes(
        row(1, kind="member", action="change", entity_id=5, occurred_at=1200),
        row(2, kind="member", action="delete", entity_id=6, occurred_at=1000),
        row(3, kind="member", action="create", entity_id=7, occurred_at=1100),
        row(4, kind="person", action="change", entity_id=9, occurred_at=900, data_time=900),
        row(5, kind="relist", action=None, entity_id=None, occurred_at=800),
    )
    assert mixed.needs_listing() is True
    assert mixed.since() == 1100
    assert mixed.relist is True
    assert [r.id for r in mixed.members()] == [1, 2, 3]
    assert mixed.changed_entities() == {5, 6, 7}


# --- stored changes -----------------------------------------------------------------------

FILTER = 61
OTHER_FILTER = 62


def insert_changes(*rows: tuple[Any, ...]) -> None:
    """filter_changes rows of (filter_id, kind, action, entity_id, occurred_at)."""
    path = bound_path()
    assert path is not None
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO filter_changes (filter_id, inbox_id, kind, action, entity_id, "
            "occurred_at) VALUES (?, 1, ?, ?, ?, ?)",
            rows,
        )
    connection.close()


@pytest.fixture
def claimed(clean_db: Path, clock: ManualClock) -> ClaimedJob:
    add_filter(FILTER, "Changes", "people", brevo_list_id=5)
    add_filter(OTHER_FILTER, "Other", "people", brevo_list_id=6)
    job_id = jobs.create_job(FILTER, "incremental", "webhook", False, clock.now()).id
    job = claim_job(job_id, new_token(), clock.now())
    assert job is not None
    return job


def test_load_changes_reads_the_filters_rows_in_order(claimed: ClaimedJob) -> None:
    assert load_changes(FILTER) is None
    insert_changes(
        (FILTER, "member", "change", 11, 500),
        (OTHER_FILTER, "member", "change", 12, 400),
        (FILTER, "member", "delete", 13, 450),
    )
    loaded = load_changes(FILTER)
    assert loaded is not None
    assert [(r.entity_id, r.action, r.occurred_at) for r in loaded.rows] == [
        (11, "change", 500),
        (13, "delete", 450),
    ]
    assert loaded.upto == loaded.rows[-1].id
    assert pending_change_count() == 3


def test_consume_removes_what_was_loaded_and_nothing_after(claimed: ClaimedJob) -> None:
    insert_changes(
        (FILTER, "member", "change", 11, 500), (OTHER_FILTER, "member", "change", 12, 400)
    )
    loaded = load_changes(FILTER)
    assert loaded is not None
    insert_changes((FILTER, "member", "change", 14, 600))  # routed while the job ran

    assert consume_changes(claimed.id, claimed.token, FILTER, loaded.upto) == 1

    left = load_changes(FILTER)
    assert left is not None and [r.entity_id for r in left.rows] == [14]
    assert change_count(OTHER_FILTER) == 1


def test_consume_by_a_job_that_lost_its_claim_removes_nothing(claimed: ClaimedJob) -> None:
    insert_changes((FILTER, "member", "change", 11, 500))
    loaded = load_changes(FILTER)
    assert loaded is not None
    with pytest.raises(ClaimLost):
        consume_changes(claimed.id, "not-the-token", FILTER, loaded.upto)
    assert change_count(FILTER) == 1
