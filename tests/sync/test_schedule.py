"""workers/sync/schedule.py: the catch-up full resync of every linked filter."""

from __future__ import annotations

from pathlib import Path

from service import jobs
from service.clock import ManualClock
from tests.sync.conftest import add_filter, job_row, jobs_of, soft_delete_filter
from workers.sync.schedule import schedule_full_resyncs


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
