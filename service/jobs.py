"""Sync jobs as the API shows them, read from the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pony.orm import desc

from service.clock import to_iso
from service.db import SyncJob, db_session

JOB_STATUSES = ("processing", "completed", "failed")
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
