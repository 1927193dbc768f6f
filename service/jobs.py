"""Sync jobs as the API shows them, read from the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pony.orm import desc

from service.clock import to_iso
from service.db import Filter, SyncJob, db, db_session

JOB_STATUSES = ("processing", "completed", "failed")
JOB_KINDS = ("full", "incremental", "dry_run")
JOB_TRIGGERS = ("admin", "webhook", "schedule", "filter_changed", "recovery")
MAX_PAGE = 200
DEFAULT_PAGE = 50


@dataclass(frozen=True)
class Job:
    """One sync job, detached from the database."""

    id: int
    filter_id: int
    kind: str
    trigger: str
    status: str
    forced: bool
    created_at: int
    completed_at: int | None
    total_fetched: int
    total_added: int
    total_updated: int
    total_removed: int
    total_skipped: int
    error_message: str | None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The job's JSON shape (DESIGN section 6), with times as ISO 8601 UTC."""
        return {
            "id": self.id,
            "filter_id": self.filter_id,
            "kind": self.kind,
            "trigger": self.trigger,
            "status": self.status,
            "forced": self.forced,
            "created_at": to_iso(self.created_at),
            "completed_at": to_iso(self.completed_at),
            "total_fetched": self.total_fetched,
            "total_added": self.total_added,
            "total_updated": self.total_updated,
            "total_removed": self.total_removed,
            "total_skipped": self.total_skipped,
            "error_message": self.error_message,
            "note": self.note,
        }


def job_from_row(row: SyncJob) -> Job:
    """Copy a ``SyncJob`` entity into a ``Job`` (inside its ``db_session``)."""
    return Job(
        id=row.id,
        filter_id=row.filter.id,
        kind=row.kind,
        trigger=row.trigger,
        status=row.status,
        forced=bool(row.forced),
        created_at=row.created_at,
        completed_at=row.completed_at,
        total_fetched=row.total_fetched or 0,
        total_added=row.total_added or 0,
        total_updated=row.total_updated or 0,
        total_removed=row.total_removed or 0,
        total_skipped=row.total_skipped or 0,
        error_message=row.error_message,
        note=row.note,
    )


@db_session
def list_jobs(
    filter_id: int | None = None,
    status: str | None = None,
    limit: int = DEFAULT_PAGE,
    before_id: int | None = None,
) -> tuple[list[Job], int | None]:
    """A page of jobs, newest first, and the ``before_id`` of the next page (None at the end)."""
    query = SyncJob.select()
    if filter_id is not None:
        query = query.filter(lambda j: j.filter.id == filter_id)
    if status is not None:
        query = query.filter(lambda j: j.status == status)
    if before_id is not None:
        query = query.filter(lambda j: j.id < before_id)
    rows = list(query.order_by(desc(SyncJob.id)).limit(limit + 1))
    jobs = [job_from_row(row) for row in rows[:limit]]
    next_before_id = jobs[-1].id if len(rows) > limit else None
    return jobs, next_before_id


@db_session
def get_job(job_id: int) -> Job | None:
    """One job by id, or None."""
    row = SyncJob.get(id=job_id)
    return job_from_row(row) if row is not None else None


class FilterNotFound(Exception):
    """No filter has this id."""


class FilterDeleted(Exception):
    """The filter vanished from Pipedrive (soft-deleted); it cannot be synced."""


class FilterBusy(Exception):
    """The filter already has a ``processing`` job, carried in ``job``."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"filter {job.filter_id} is already being synced by job {job.id}")
        self.job = job


@db_session
def create_job(filter_id: int, kind: str, trigger: str, forced: bool, now: int) -> Job:
    """Create a ``processing`` job for the filter: the filter's lock, taken atomically.

    Raises ``FilterNotFound``, ``FilterDeleted``, or ``FilterBusy`` with the running job.
    The partial unique index on ``sync_jobs(filter_id) WHERE status = 'processing'``
    decides between two concurrent requests, in any number of processes.
    """
    row = Filter.get(id=filter_id)
    if row is None:
        raise FilterNotFound(filter_id)
    if row.deleted_at is not None:
        raise FilterDeleted(filter_id)
    forced_flag = int(forced)  # noqa: F841 - bound into the SQL below by Pony's $name syntax
    cursor = db.execute(
        'INSERT INTO sync_jobs (filter_id, status, created_at, kind, "trigger", forced) '
        "VALUES ($filter_id, 'processing', $now, $kind, $trigger, $forced_flag) "
        "ON CONFLICT DO NOTHING RETURNING id"
    )
    inserted = cursor.fetchone()
    if inserted is None:
        running = SyncJob.get(lambda j: j.filter.id == filter_id and j.status == "processing")
        if running is None:  # finished between the insert and this read: try again
            return create_job(filter_id, kind, trigger, forced, now)
        raise FilterBusy(job_from_row(running))
    return job_from_row(SyncJob.get(id=inserted[0]))


@db_session
def linked_filter_ids() -> list[int]:
    """Filters that have a Brevo list and still exist upstream, by id."""
    query = Filter.select(lambda f: f.brevo_list_id is not None and f.deleted_at is None)
    return sorted(f.id for f in query)
