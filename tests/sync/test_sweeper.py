"""workers/sync/sweeper.py: jobs of dead workers are failed and their filter synced again;
jobs whose queue message was lost are enqueued again, once per stale window."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service import jobs
from service.clock import ManualClock
from service.db import bound_path
from tests.sync.conftest import (
    add_filter,
    change_count,
    job_row,
    jobs_of,
    soft_delete_filter,
    staged_count,
)
from workers.sync.claims import ClaimedJob, claim_job, finish_job, heartbeat, new_token
from workers.sync.contacts import Member
from workers.sync.drain import start_incremental_jobs
from workers.sync.plan import stage
from workers.sync.sweeper import WORKER_STOPPED, SweepResult, sweep

STALE = 30
PEOPLE = 51
OTHER = 52


@pytest.fixture
def filters(clean_db: Path) -> None:
    add_filter(PEOPLE, "Sweeper", "people", brevo_list_id=3)
    add_filter(OTHER, "Other", "people", brevo_list_id=4)


class Enqueued(list[int]):
    """What the sweeper enqueued, in order."""

    def __call__(self, job_id: int) -> None:
        self.append(job_id)


def started(
    filter_id: int, clock: ManualClock, kind: str = "full", forced: bool = False
) -> ClaimedJob:
    """A job created and claimed now."""
    job_id = jobs.create_job(filter_id, kind, "admin", forced, clock.now()).id
    job = claim_job(job_id, new_token(), clock.now())
    assert job is not None
    return job


@pytest.mark.usefixtures("filters")
@pytest.mark.parametrize("forced", [True, False])
def test_stale_job_is_failed_and_its_filter_synced_again(clock: ManualClock, forced: bool) -> None:
    job = started(PEOPLE, clock, forced=forced)
    stage(
        job.id,
        job.token,
        [Member(1, 1, "a@example.com", "A", None), Member(2, 2, None, None, None)],
    )
    assert staged_count(job.id) == 2
    clock.advance(STALE + 1)
    enqueued = Enqueued()

    result = sweep(clock.now(), STALE, enqueued)

    assert result.failed == [job.id]
    assert result.redriven == []
    row = job_row(job.id)
    assert (row["status"], row["error_message"], row["completed_at"]) == (
        "failed",
        WORKER_STOPPED,
        clock.now(),
    )
    assert staged_count(job.id) == 0
    assert len(result.recovery_jobs) == 1
    recovery = job_row(result.recovery_jobs[0])
    assert enqueued == [recovery["id"]]
    assert recovery["filter_id"] == PEOPLE
    assert (recovery["kind"], recovery["trigger"], recovery["status"]) == (
        "full",
        "recovery",
        "processing",
    )
    assert recovery["forced"] == int(forced)
    assert recovery["created_at"] == clock.now()
    assert recovery["claimed_at"] is None and recovery["claim_token"] is None

    # Swept again at once: nothing more (the recovery job is young and unclaimed).
    assert sweep(clock.now() + 1, STALE, enqueued) == SweepResult()
    assert enqueued == [recovery["id"]]
    # The recovery job can be claimed like any job.
    assert claim_job(recovery["id"], new_token(), clock.now()) is not None


@pytest.mark.usefixtures("filters")
def test_fresh_heartbeat_is_left_alone(clock: ManualClock) -> None:
    job = started(PEOPLE, clock)
    clock.advance(20)
    assert heartbeat(job.id, job.token, clock.now())
    clock.advance(20)  # 40 s since the claim, 20 s since the beat
    enqueued = Enqueued()
    assert sweep(clock.now(), STALE, enqueued) == SweepResult()
    assert enqueued == []
    assert job_row(job.id)["status"] == "processing"
    # Exactly the stale window old is not yet stale; one second more is.
    clock.advance(STALE - 20)
    assert sweep(clock.now(), STALE, enqueued).failed == []
    clock.advance(1)
    assert sweep(clock.now(), STALE, enqueued).failed == [job.id]


@pytest.mark.usefixtures("filters")
def test_only_the_stale_job_is_touched(clock: ManualClock) -> None:
    stale = started(PEOPLE, clock)
    done = started(OTHER, clock)
    finish_job(done.id, done.token, clock.now())
    clock.advance(STALE + 1)
    live = started(OTHER, clock)
    done_row = job_row(done.id)

    result = sweep(clock.now(), STALE, Enqueued())

    assert result.failed == [stale.id]
    assert job_row(live.id)["status"] == "processing"
    assert job_row(done.id) == done_row


@pytest.mark.usefixtures("filters")
def test_stale_dry_run_gets_no_recovery(clock: ManualClock) -> None:
    job = started(PEOPLE, clock, kind="dry_run")
    clock.advance(STALE + 1)
    enqueued = Enqueued()
    result = sweep(clock.now(), STALE, enqueued)
    assert result.failed == [job.id]
    assert result.recovery_jobs == [] and enqueued == []
    assert job_row(job.id)["error_message"] == WORKER_STOPPED
    assert [j["id"] for j in jobs_of(PEOPLE)] == [job.id]


@pytest.mark.usefixtures("filters")
def test_stale_job_of_a_soft_deleted_filter_gets_no_recovery(clock: ManualClock) -> None:
    job = started(PEOPLE, clock)
    soft_delete_filter(PEOPLE, clock.now())
    clock.advance(STALE + 1)
    enqueued = Enqueued()
    result = sweep(clock.now(), STALE, enqueued)
    assert result.failed == [job.id]
    assert result.recovery_jobs == [] and enqueued == []
    assert job_row(job.id)["status"] == "failed"
    assert [j["id"] for j in jobs_of(PEOPLE)] == [job.id]


@pytest.mark.usefixtures("filters")
def test_lost_unclaimed_job_is_enqueued_again_once_per_stale_window(clock: ManualClock) -> None:
    job_id = jobs.create_job(PEOPLE, "full", "webhook", False, clock.now()).id
    enqueued = Enqueued()

    clock.advance(10)
    assert sweep(clock.now(), STALE, enqueued).redriven == []  # young: its message may come
    clock.advance(STALE - 10)
    assert sweep(clock.now(), STALE, enqueued).redriven == []  # exactly the window: not yet
    clock.advance(1)
    assert sweep(clock.now(), STALE, enqueued).redriven == [job_id]
    assert enqueued == [job_id]

    # Swept every few seconds, as the worker does: not enqueued again within the window.
    for _ in range(STALE // 5):
        clock.advance(5)
        assert sweep(clock.now(), STALE, enqueued).redriven == []
    clock.advance(1)
    assert sweep(clock.now(), STALE, enqueued).redriven == [job_id]
    assert enqueued == [job_id, job_id]

    row = job_row(job_id)
    assert (row["status"], row["claimed_at"], row["error_message"]) == ("processing", None, None)
    # Re-driving never counts as a claim: the row is still free for a worker.
    assert claim_job(job_id, new_token(), clock.now()) is not None
    clock.advance(STALE // 2)
    assert sweep(clock.now(), STALE, enqueued).redriven == []
    assert enqueued == [job_id, job_id]


@pytest.mark.usefixtures("filters")
def test_unclaimed_job_is_never_failed(clock: ManualClock) -> None:
    job_id = jobs.create_job(PEOPLE, "full", "admin", False, clock.now()).id
    clock.advance(10 * STALE)
    result = sweep(clock.now(), STALE, Enqueued())
    assert result.failed == [] and result.redriven == [job_id]
    assert job_row(job_id)["status"] == "processing"


@pytest.mark.usefixtures("filters")
def test_stale_incremental_job_gets_no_recovery_and_its_changes_wait(clock: ManualClock) -> None:
    """The changes the dead worker's incremental job held are still routed to the filter:
    the drain starts a new incremental job for them, not the sweeper a full resync."""
    job = started(PEOPLE, clock, kind="incremental")
    path = bound_path()
    assert path is not None
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO filter_changes (filter_id, inbox_id, kind, action, entity_id, "
            "occurred_at) VALUES (?, 1, 'member', 'change', 7, ?)",
            (PEOPLE, clock.now()),
        )
    connection.close()
    clock.advance(STALE + 1)
    enqueued = Enqueued()

    result = sweep(clock.now(), STALE, enqueued)

    assert result.failed == [job.id]
    assert result.recovery_jobs == [] and enqueued == []
    row = job_row(job.id)
    assert (row["status"], row["error_message"]) == ("failed", WORKER_STOPPED)
    assert [j["id"] for j in jobs_of(PEOPLE)] == [job.id]
    assert change_count(PEOPLE) == 1
    # The drain picks the changes up once the pause after a failed incremental job is over.
    assert start_incremental_jobs(clock.now() + STALE - 1, enqueued, STALE) == []
    (again,) = start_incremental_jobs(clock.now() + STALE, enqueued, STALE)
    assert enqueued == [again]
    assert (job_row(again)["kind"], job_row(again)["trigger"]) == ("incremental", "webhook")
