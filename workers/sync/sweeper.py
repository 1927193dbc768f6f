"""The sweeper: frees filters whose worker died and re-drives jobs whose message was lost.

A claimed job with no heartbeat for ``JOB_STALE_SECONDS`` is marked ``failed`` ("worker
stopped during the job") and, in the same transaction, its filter gets a new job with the
trigger ``recovery``, so the filter is never left locked and the work is finished by the
next run. The dead worker's token now matches no ``processing`` row, so none of its late
writes land. An unclaimed job older than that was probably lost with its queue message
(huey deletes a message before running it): it is enqueued again; a duplicate message is
harmless because only one task can claim the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from service.db import db, db_session

log = logging.getLogger(__name__)

WORKER_STOPPED = "worker stopped during the job"


@dataclass
class SweepResult:
    """What one sweep did."""

    failed: list[int] = field(default_factory=list)
    recovery_jobs: list[int] = field(default_factory=list)
    redriven: list[int] = field(default_factory=list)


@db_session
def _fail_stale_job(job_id: int, now: int, stale_before: int) -> tuple[bool, int | None]:
    """Fail one stale job and create its recovery job: (failed it, the new job's id)."""
    cursor = db.execute(
        "UPDATE sync_jobs SET status = 'failed', completed_at = $now, "
        "error_message = $WORKER_STOPPED "
        "WHERE id = $job_id AND status = 'processing' AND claimed_at IS NOT NULL "
        "AND heartbeat_at < $stale_before"
    )
    if cursor.rowcount != 1:
        return False, None  # it beat again, or finished, since it was listed
    db.execute("DELETE FROM sync_members WHERE job_id = $job_id")
    kind, forced, filter_id = db.select(
        "kind, forced, filter_id FROM sync_jobs WHERE id = $job_id"
    )[0]
    if kind == "dry_run":
        return True, None  # nothing was meant to change: the admin runs it again if still wanted
    if kind == "incremental":
        return True, None  # its changes still wait: the drain starts a new incremental job
    cursor = db.execute(
        'INSERT INTO sync_jobs (filter_id, status, created_at, kind, "trigger", forced) '
        "SELECT id, 'processing', $now, 'full', 'recovery', $forced FROM filters "
        "WHERE id = $filter_id AND deleted_at IS NULL "
        "ON CONFLICT DO NOTHING RETURNING id"
    )
    created = cursor.fetchone()
    return True, (int(created[0]) if created else None)


@db_session
def _stale_job_ids(stale_before: int) -> list[int]:
    rows = db.select(
        "id FROM sync_jobs WHERE status = 'processing' AND claimed_at IS NOT NULL "
        "AND heartbeat_at < $stale_before ORDER BY id"
    )
    return [int(r) for r in rows]


@db_session
def _take_lost_jobs(now: int, stale_before: int) -> list[int]:
    """Unclaimed jobs created before ``stale_before`` and not re-driven since; marks them."""
    rows = db.select(
        "id FROM sync_jobs WHERE status = 'processing' AND claimed_at IS NULL "
        "AND created_at < $stale_before "
        "AND (heartbeat_at IS NULL OR heartbeat_at < $stale_before) ORDER BY id"
    )
    ids = [int(r) for r in rows]
    for job_id in ids:  # noqa: B007 - bound into the SQL by Pony's $name syntax
        # An unclaimed job has no heartbeat; the column records when it was last re-driven.
        db.execute("UPDATE sync_jobs SET heartbeat_at = $now WHERE id = $job_id")
    return ids


def sweep(now: int, stale_seconds: int, enqueue_job: Callable[[int], None]) -> SweepResult:
    """Fail stale jobs (creating their recovery jobs) and re-enqueue lost ones."""
    result = SweepResult()
    stale_before = now - stale_seconds
    for job_id in _stale_job_ids(stale_before):
        failed, recovery = _fail_stale_job(job_id, now, stale_before)
        if not failed:
            continue
        result.failed.append(job_id)
        log.warning(WORKER_STOPPED, extra={"job_id": job_id, "recovery_job_id": recovery})
        if recovery is not None:
            result.recovery_jobs.append(recovery)
            enqueue_job(recovery)
    for job_id in _take_lost_jobs(now, stale_before):
        log.warning("job never claimed, enqueued again", extra={"job_id": job_id})
        result.redriven.append(job_id)
        enqueue_job(job_id)
    return result
