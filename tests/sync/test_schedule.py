"""workers/sync/schedule.py: the catch-up full resync of every linked filter."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pony import orm

from service import jobs
from service.clock import ManualClock
from service.db import SyncJob
from tests.sync.conftest import add_filter, job_row, jobs_of, soft_delete_filter
from workers.sync.schedule import latest_slot, phase, schedule_full_resyncs


def test_every_linked_idle_filter_gets_a_schedule_job(clean_db: Path, clock: ManualClock) -> None:
    idle, busy, deleted, unlinked = 71, 72, 73, 74
    add_filter(idle, brevo_list_id=1)
    add_filter(busy, brevo_list_id=2)
    add_filter(deleted, brevo_list_id=3)
    add_filter(unlinked)
    soft_delete_filter(deleted, clock.now())
    running = jobs.create_job(busy, "full", "admin", False, clock.now()).id
    enqueued: list[int] = []

    created = schedule_full_resyncs(clock.now(), enqueued.append)

    assert created == enqueued and len(created) == 1
    row = job_row(created[0])
    assert (row["filter_id"], row["kind"], row["trigger"], row["forced"]) == (
        idle,
        "full",
        "schedule",
        0,
    )
    assert [j["id"] for j in jobs_of(busy)] == [running]
    assert jobs_of(deleted) == [] and jobs_of(unlinked) == []
    # Scheduled again while the first is still running: nothing new.
    assert schedule_full_resyncs(clock.now() + 1, enqueued.append) == []


DAY = 86_400


def test_catch_ups_are_spread_over_the_period() -> None:
    """Filters with neighbouring ids get phases far apart: no hour holds many more than
    its share."""
    hours = Counter(phase(filter_id, DAY) // 3600 for filter_id in range(1, 241))
    assert len(hours) == 24
    assert max(hours.values()) <= 2 * 240 // 24


def test_a_filter_is_due_once_per_period_at_its_own_slot(
    clean_db: Path, clock: ManualClock
) -> None:
    filter_id = add_filter(81, brevo_list_id=1)
    first = jobs.create_job(filter_id, "full", "admin", False, clock.now())
    finish(first.id, clock.now())
    slot = latest_slot(filter_id, DAY, clock.now()) + DAY  # the next slot after the sync
    enqueued: list[int] = []

    assert schedule_full_resyncs(slot - 1, enqueued.append, DAY) == []
    [due] = schedule_full_resyncs(slot, enqueued.append, DAY)
    assert enqueued == [due] and job_row(due)["trigger"] == "schedule"
    finish(due, slot)
    # Done for this period, whatever the time of day; due again at the next slot.
    assert schedule_full_resyncs(slot + DAY - 1, enqueued.append, DAY) == []
    assert len(schedule_full_resyncs(slot + DAY, enqueued.append, DAY)) == 1


def test_an_admin_resync_after_the_slot_counts_as_the_catch_up(
    clean_db: Path, clock: ManualClock
) -> None:
    filter_id = add_filter(82, brevo_list_id=1)
    slot = latest_slot(filter_id, DAY, clock.now())
    admin = jobs.create_job(filter_id, "full", "admin", False, slot + 10)
    finish(admin.id, slot + 20)
    enqueued: list[int] = []
    assert schedule_full_resyncs(slot + 30, enqueued.append, DAY) == []


def finish(job_id: int, now: int) -> None:
    """Mark a job completed, as its worker would."""
    with orm.db_session:
        SyncJob.get(id=job_id).set(status="completed", completed_at=now)
