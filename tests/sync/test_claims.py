"""workers/sync/claims.py: a job row is claimed once, kept alive by its heartbeat, and
every later write names the claim token, so a dead worker's late writes are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pony import orm

from service import jobs
from service.clock import ManualClock
from service.db import db
from tests.sync.conftest import add_filter, job_row, staged_count
from workers.sync.claims import (
    ClaimedJob,
    ClaimLost,
    Heartbeat,
    Totals,
    add_totals,
    claim_job,
    fail_job,
    finish_job,
    heartbeat,
    new_token,
    note_waiting,
    record_totals,
    set_note,
)
from workers.sync.contacts import Member
from workers.sync.plan import stage
from workers.sync.sweeper import WORKER_STOPPED, sweep

STALE = 30
FILTER = 41


@pytest.fixture
def job_id(clean_db: Path, clock: ManualClock) -> int:
    """An unclaimed forced full job of a people filter with a Brevo list."""
    add_filter(FILTER, "Claims", "people", brevo_list_id=7)
    return jobs.create_job(FILTER, "full", "admin", True, clock.now()).id


def claimed(job_id: int, clock: ManualClock) -> ClaimedJob:
    job = claim_job(job_id, new_token(), clock.now())
    assert job is not None
    return job


def members(*entity_ids: int) -> list[Member]:
    return [Member(i, i, f"p{i}@example.com", f"P{i}", None) for i in entity_ids]


def test_claim_once_returns_the_job_with_its_filter(job_id: int, clock: ManualClock) -> None:
    token = new_token()
    job = claim_job(job_id, token, clock.now())
    assert job == ClaimedJob(
        id=job_id,
        token=token,
        kind="full",
        trigger="admin",
        forced=True,
        filter_id=FILTER,
        filter_name="Claims",
        filter_type="people",
        brevo_list_id=7,
        filter_deleted=False,
    )
    row = job_row(job_id)
    assert (row["claimed_at"], row["heartbeat_at"], row["claim_token"]) == (
        clock.now(),
        clock.now(),
        token,
    )

    clock.advance(1)
    assert claim_job(job_id, new_token(), clock.now()) is None
    assert claim_job(job_id, token, clock.now()) is None  # not even by the same token
    assert job_row(job_id)["claim_token"] == token
    assert job_row(job_id)["claimed_at"] == clock.now() - 1


def test_claim_of_a_finished_or_unknown_job_returns_none(job_id: int, clock: ManualClock) -> None:
    job = claimed(job_id, clock)
    finish_job(job.id, job.token, clock.now())
    with orm.db_session:
        # A finished job's token cleared by hand still does not make it claimable.
        db.execute("UPDATE sync_jobs SET claim_token = NULL WHERE id = $job_id")
    assert claim_job(job_id, new_token(), clock.now()) is None
    assert claim_job(job_id + 1000, new_token(), clock.now()) is None


def test_new_tokens_differ() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 32 for t in tokens)


def test_heartbeat_true_while_held_false_once_the_sweeper_failed_the_job(
    job_id: int, clock: ManualClock
) -> None:
    job = claimed(job_id, clock)
    clock.advance(10)
    assert heartbeat(job.id, job.token, clock.now()) is True
    assert job_row(job_id)["heartbeat_at"] == clock.now()
    assert heartbeat(job.id, new_token(), clock.now() + 5) is False
    assert job_row(job_id)["heartbeat_at"] == clock.now()  # a stranger's beat changed nothing

    clock.advance(STALE + 1)
    assert sweep(clock.now(), STALE, lambda _: None).failed == [job_id]
    assert heartbeat(job.id, job.token, clock.now()) is False
    row = job_row(job_id)
    assert row["status"] == "failed"
    assert row["heartbeat_at"] == clock.now() - STALE - 1


def test_writes_with_a_wrong_token_are_refused(job_id: int, clock: ManualClock) -> None:
    job = claimed(job_id, clock)
    stage(job.id, job.token, members(1, 2))
    record_totals(job.id, job.token, Totals(fetched=2, added=1))
    wrong = new_token()

    with pytest.raises(ClaimLost), orm.db_session:
        add_totals(job.id, wrong, Totals(fetched=5, added=5, updated=5, removed=5, skipped=5))
    with pytest.raises(ClaimLost):
        record_totals(job.id, wrong, Totals(added=1))
    with pytest.raises(ClaimLost):
        set_note(job.id, wrong, "late note")
    with pytest.raises(ClaimLost):
        stage(job.id, wrong, members(3))
    with pytest.raises(ClaimLost):
        finish_job(job.id, wrong, clock.now())
    assert fail_job(job.id, wrong, clock.now(), "late failure") is False

    row = job_row(job_id)
    assert row["status"] == "processing"
    assert row["error_message"] is None and row["note"] is None and row["completed_at"] is None
    assert (row["total_fetched"], row["total_added"], row["total_updated"]) == (2, 1, 0)
    assert (row["total_removed"], row["total_skipped"]) == (0, 0)

    # The holder's own writes still land.
    set_note(job.id, job.token, "first")
    set_note(job.id, job.token, "second")
    assert job_row(job_id)["note"] == "first second"
    finish_job(job.id, job.token, clock.now())
    row = job_row(job_id)
    assert (row["status"], row["completed_at"], row["error_message"]) == (
        "completed",
        clock.now(),
        None,
    )
    assert staged_count(job_id) == 0


def test_a_dead_workers_late_writes_are_refused(job_id: int, clock: ManualClock) -> None:
    """The sweeper declared the worker dead; when it wakes up, nothing it writes lands."""
    job = claimed(job_id, clock)
    stage(job.id, job.token, members(1))
    clock.advance(STALE + 1)
    result = sweep(clock.now(), STALE, lambda _: None)
    assert result.failed == [job_id] and len(result.recovery_jobs) == 1
    failed_row = job_row(job_id)

    clock.advance(5)
    with pytest.raises(ClaimLost):
        record_totals(job.id, job.token, Totals(fetched=1, added=1))
    with pytest.raises(ClaimLost):
        set_note(job.id, job.token, "late")
    with pytest.raises(ClaimLost):
        stage(job.id, job.token, members(2))
    with pytest.raises(ClaimLost):
        finish_job(job.id, job.token, clock.now())
    assert fail_job(job.id, job.token, clock.now(), "late failure") is False

    assert job_row(job_id) == failed_row
    assert failed_row["error_message"] == WORKER_STOPPED
    assert staged_count(job_id) == 0


def test_fail_job_records_the_message_and_drops_the_stage(job_id: int, clock: ManualClock) -> None:
    job = claimed(job_id, clock)
    stage(job.id, job.token, members(1, 2, 3))
    clock.advance(3)
    assert fail_job(job.id, job.token, clock.now(), "brevo said no") is True
    row = job_row(job_id)
    assert (row["status"], row["completed_at"], row["error_message"]) == (
        "failed",
        clock.now(),
        "brevo said no",
    )
    assert staged_count(job_id) == 0
    assert fail_job(job.id, job.token, clock.now(), "again") is False  # only once
    assert job_row(job_id)["error_message"] == "brevo said no"


def test_fail_job_with_a_wrong_token_leaves_the_holders_stage_alone(
    job_id: int, clock: ManualClock
) -> None:
    job = claimed(job_id, clock)
    stage(job.id, job.token, members(1, 2, 3))
    assert fail_job(job.id, new_token(), clock.now(), "not yours") is False
    assert staged_count(job_id) == 3


def test_heartbeat_thread_beats_and_sets_lost_when_the_row_is_taken_over(
    job_id: int, clock: ManualClock
) -> None:
    job = claimed(job_id, clock)
    with Heartbeat(job.id, job.token, clock.now, every=0.01) as beat:
        clock.advance(7)
        beat_at = clock.now()
        for _ in range(500):
            if job_row(job_id)["heartbeat_at"] == beat_at:
                break
            beat.lost.wait(0.01)
        assert job_row(job_id)["heartbeat_at"] == beat_at
        assert not beat.lost.is_set()
        beat.check()  # still ours: no exception

        # The sweeper, running ahead of this worker's beats, takes the row over.
        assert sweep(clock.now() + STALE + 1, STALE, lambda _: None).failed == [job_id]
        assert beat.lost.wait(5), "the heartbeat did not notice the job was taken over"
        with pytest.raises(ClaimLost):
            beat.check()
    assert job_row(job_id)["status"] == "failed"


def test_heartbeat_thread_stops_on_exit(job_id: int, clock: ManualClock) -> None:
    job = claimed(job_id, clock)
    with Heartbeat(job.id, job.token, clock.now, every=0.01) as beat:
        pass
    assert not beat._thread.is_alive()
    clock.advance(50)
    beat.lost.wait(0.05)
    assert job_row(job_id)["heartbeat_at"] == clock.now() - 50  # no beat after the exit
    assert not beat.lost.is_set()


def test_a_waiting_note_goes_on_an_unclaimed_job_once_and_the_claim_clears_it(
    job_id: int, clock: ManualClock
) -> None:
    note = "Waiting: Brevo refused BREVO_API_KEY (401); fix BREVO_API_KEY."
    assert note_waiting(job_id, note) is True
    assert job_row(job_id)["note"] == note
    assert note_waiting(job_id, note) is False  # already says so: nothing written
    token = new_token()
    assert claim_job(job_id, token, clock.now()) is not None
    assert job_row(job_id)["note"] is None
    assert note_waiting(job_id, note) is False  # a claimed job is running, not waiting
    assert job_row(job_id)["note"] is None
