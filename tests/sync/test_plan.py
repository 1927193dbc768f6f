"""workers/sync/plan.py: staged members compared with the ledger, each given an action,
the plan counted per contact, and the safety brake's verdict."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from pony import orm

from service import jobs
from service.clock import ManualClock
from service.db import db
from tests.sync.conftest import add_filter
from workers.sync import ledger
from workers.sync.claims import ClaimedJob, ClaimLost, claim_job, finish_job, new_token
from workers.sync.contacts import Member
from workers.sync.plan import Plan, make_plan, stage

FILTER = 61
OTHER = 62
DEALS = 63


@pytest.fixture(autouse=True)
def filters(clean_db: Path) -> None:
    add_filter(FILTER, "Plan", "people", brevo_list_id=1)
    add_filter(OTHER, "Other", "people", brevo_list_id=2)
    add_filter(DEALS, "Deals", "deals", brevo_list_id=3)


def person(pid: int, email: str | None, first: str | None = None, last: str = "Test") -> Member:
    return Member(pid, pid, email, first or f"P{pid}", last)


def claimed(filter_id: int, clock: ManualClock) -> ClaimedJob:
    clock.advance(10)
    job_id = jobs.create_job(filter_id, "full", "admin", False, clock.now()).id
    job = claim_job(job_id, new_token(), clock.now())
    assert job is not None
    return job


def previous_sync(
    filter_id: int,
    clock: ManualClock,
    members: Sequence[Member],
    rejected: Sequence[str] = (),
) -> None:
    """A completed sync as Brevo would have confirmed it: every contact listed (created by
    this service), except the emails in ``rejected``, which Brevo refused."""
    job = claimed(filter_id, clock)
    stage(job.id, job.token, members)
    make_plan(job.id, job.token, filter_id)
    pending = [p.email for p in ledger.pending_contacts(job.id, 0, 1000)]
    accepted = [e for e in pending if e not in rejected]
    ledger.reject_sent(job.id, job.token, filter_id, list(rejected), clock.now())
    ledger.confirm_sent(job.id, job.token, filter_id, accepted, accepted, clock.now())
    ledger.settle_ledger(job.id, job.token, filter_id, clock.now())
    finish_job(job.id, job.token, clock.now())


def planned(
    filter_id: int, clock: ManualClock, members: Sequence[Member]
) -> tuple[Plan, dict[int, str]]:
    """The plan of a new job staging ``members`` (in pages of two), and each entity's action."""
    job = claimed(filter_id, clock)
    for start in range(0, len(members), 2):
        stage(job.id, job.token, members[start : start + 2])
    plan = make_plan(job.id, job.token, filter_id)
    with orm.db_session:
        rows = db.select(
            "entity_id, action FROM sync_members WHERE job_id = $job_id ORDER BY entity_id",
            {"job_id": job.id},
        )
    finish_job(job.id, job.token, clock.now())
    return plan, {int(r[0]): str(r[1]) for r in rows}


def test_first_plan_adds_every_contact_once_and_skips_members_without_email(
    clock: ManualClock,
) -> None:
    plan, actions = planned(
        FILTER,
        clock,
        [
            person(1, "a@example.com"),
            person(2, "shared@example.com", "Sam"),
            person(3, "shared@example.com", "Sue"),  # same email, other person
            person(4, None),
        ],
    )
    assert actions == {1: "add", 2: "add", 3: "add", 4: "skip"}
    assert plan == Plan(fetched=4, skipped=1, adds=2, updates=0, removals=0, list_size=0)


def test_actions_and_counts_against_the_ledger(clock: ManualClock) -> None:
    previous_sync(
        FILTER,
        clock,
        [
            person(1, "keep@example.com"),
            person(2, "update@example.com", "Bert"),
            person(3, "old@example.com"),
            person(4, "leaves@example.com"),
            person(5, "rejected@example.com", "Rex"),
            person(6, None),
            person(7, "twice@example.com", "Tom"),
            person(8, "twice@example.com", "Tim"),
        ],
        rejected=["rejected@example.com"],
    )
    plan, actions = planned(
        FILTER,
        clock,
        [
            person(1, "keep@example.com"),
            person(2, "update@example.com", "Berthold"),
            person(3, "new@example.com"),
            # 4 left the filter
            person(5, "rejected@example.com", "Rex"),  # Brevo refused exactly this before
            person(6, None),
            person(7, "twice@example.com", "Tom"),  # 8 left, 7 still maps the email
            person(9, "added@example.com"),
            person(10, "together@example.com", "Ann"),
            person(11, "together@example.com", "Ben"),
            person(12, "keep@example.com", "P1"),  # new member, a listed email, same names
        ],
    )
    assert actions == {
        1: "keep",
        2: "update",
        3: "change",
        5: "skip",
        6: "skip",
        7: "keep",
        9: "add",
        10: "add",
        11: "add",
        12: "keep",
    }
    assert plan == Plan(
        fetched=10,
        skipped=2,
        adds=2,  # added@, together@ (two persons, one contact)
        updates=2,  # update@ (names), old@ -> new@ (email change)
        removals=1,  # leaves@; old@ goes with the change, twice@ is still mapped
        list_size=5,  # keep, update, old, leaves, twice (rejected@ was never listed)
    )


def test_list_size_counts_listed_contacts_not_rows(clock: ManualClock) -> None:
    previous_sync(
        FILTER,
        clock,
        [person(1, "a@example.com"), person(2, "a@example.com"), person(3, "b@example.com")],
    )
    plan, _ = planned(FILTER, clock, [person(1, "a@example.com"), person(3, "b@example.com")])
    assert (plan.list_size, plan.removals) == (2, 0)


def test_rejected_email_is_planned_again_once_the_person_changes(clock: ManualClock) -> None:
    previous_sync(FILTER, clock, [person(5, "r@example.com", "Rex")], rejected=["r@example.com"])
    plan, actions = planned(FILTER, clock, [person(5, "r@example.com", "Rexford")])
    assert actions == {5: "add"}
    assert (plan.adds, plan.skipped) == (1, 0)


def test_email_change_to_an_address_another_member_keeps_is_not_a_change(
    clock: ManualClock,
) -> None:
    """When the old address stays in the list (another member maps it), the member's new
    address is simply added."""
    previous_sync(FILTER, clock, [person(1, "one@example.com"), person(2, "one@example.com")])
    plan, actions = planned(
        FILTER, clock, [person(1, "one@example.com"), person(2, "two@example.com")]
    )
    assert actions == {1: "keep", 2: "add"}
    assert (plan.adds, plan.updates, plan.removals) == (1, 0, 0)


def test_two_deals_of_one_person_changing_address_are_one_change(clock: ManualClock) -> None:
    previous_sync(DEALS, clock, [Member(d, 10, "anna@example.com", "Anna", None) for d in (1, 2)])
    plan, actions = planned(
        DEALS, clock, [Member(d, 10, "anna.new@example.com", "Anna", None) for d in (1, 2)]
    )
    assert actions == {1: "change", 2: "change"}
    assert (plan.adds, plan.updates, plan.removals) == (0, 1, 0)


def test_a_deal_moved_to_another_person_is_not_an_email_change(clock: ManualClock) -> None:
    previous_sync(DEALS, clock, [Member(1, 10, "anna@example.com", "Anna", None)])
    plan, actions = planned(DEALS, clock, [Member(1, 20, "bert@example.com", "Bert", None)])
    assert actions == {1: "add"}
    assert (plan.adds, plan.updates, plan.removals) == (1, 0, 1)


def test_another_filters_ledger_does_not_count(clock: ManualClock) -> None:
    previous_sync(OTHER, clock, [person(1, "a@example.com"), person(2, "b@example.com")])
    plan, actions = planned(FILTER, clock, [person(1, "a@example.com")])
    assert actions == {1: "add"}
    assert plan == Plan(fetched=1, skipped=0, adds=1, updates=0, removals=0, list_size=0)


def test_stage_counts_only_new_members_and_keeps_the_first(clock: ManualClock) -> None:
    job = claimed(FILTER, clock)
    assert stage(job.id, job.token, [person(1, "a@example.com"), person(2, None)]) == 2
    # A member that moved between pages comes again: staged once, as first seen.
    assert stage(job.id, job.token, [person(2, "late@example.com"), person(3, None)]) == 1
    assert stage(job.id, job.token, []) == 0
    plan = make_plan(job.id, job.token, FILTER)
    assert (plan.fetched, plan.skipped, plan.adds) == (3, 2, 1)


def test_plan_refuses_a_job_that_is_not_held(clock: ManualClock) -> None:
    job = claimed(FILTER, clock)
    with pytest.raises(ClaimLost):
        stage(job.id, new_token(), [person(1, "a@example.com")])
    with pytest.raises(ClaimLost):
        make_plan(job.id, new_token(), FILTER)


# --- the safety brake --------------------------------------------------------------------


def plan_of(list_size: int, removals: int, fetched: int = 10) -> Plan:
    return Plan(
        fetched=fetched, skipped=0, adds=1, updates=2, removals=removals, list_size=list_size
    )


def test_brake_holds_a_plan_removing_more_than_the_ratio() -> None:
    reason = plan_of(list_size=100, removals=31).brake_reason(0.3, 50)
    assert reason is not None
    assert "remove 31 of 100" in reason and "30%" in reason and "force" in reason
    assert "1 to add, 2 to update" in reason


def test_brake_lets_the_ratio_itself_through() -> None:
    assert plan_of(list_size=100, removals=30).brake_reason(0.3, 50) is None
    assert plan_of(list_size=100, removals=0).brake_reason(0.3, 50) is None


def test_brake_holds_an_empty_filter_whose_list_was_large() -> None:
    reason = plan_of(list_size=60, removals=60, fetched=0).brake_reason(0.3, 50)
    assert reason is not None
    assert "empty" in reason and "60" in reason and "force" in reason


@pytest.mark.parametrize(("list_size", "fetched"), [(49, 0), (49, 10), (0, 0)])
def test_no_brake_below_the_minimum(list_size: int, fetched: int) -> None:
    plan = plan_of(list_size=list_size, removals=list_size, fetched=fetched)
    assert plan.brake_reason(0.3, 50) is None


def test_brake_on_a_real_plan(clock: ManualClock) -> None:
    previous_sync(FILTER, clock, [person(i, f"p{i}@example.com") for i in range(1, 5)])
    plan, _ = planned(FILTER, clock, [person(1, "p1@example.com")])
    assert (plan.list_size, plan.removals) == (4, 3)
    reason = plan.brake_reason(0.5, 4)
    assert reason is not None and "remove 3 of 4" in reason
    assert plan.brake_reason(0.75, 4) is None
    assert plan.brake_reason(0.5, 5) is None  # below the minimum

    empty, _ = planned(OTHER, clock, [])
    assert empty.brake_reason(0.5, 4) is None  # another filter's list is not this one's
    previous_sync(OTHER, clock, [person(i, f"p{i}@example.com") for i in range(1, 5)])
    empty, _ = planned(OTHER, clock, [])
    assert (empty.fetched, empty.removals, empty.list_size) == (0, 4, 4)
    reason = empty.brake_reason(0.5, 4)
    assert reason is not None and "empty" in reason
