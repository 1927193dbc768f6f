"""Pipedrive filters as the API shows them, each with its latest job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pony.orm import desc

from service.clock import to_iso
from service.db import Filter, SyncJob, db_session
from service.jobs import Job, job_from_row


@dataclass(frozen=True)
class FilterView:
    """One filter, detached from the database."""

    id: int
    name: str
    type: str | None
    brevo_list_id: int | None
    deleted_at: int | None
    last_job: Job | None

    def to_json(self) -> dict[str, Any]:
        """The filter's JSON shape (DESIGN section 6)."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "brevo_list_id": self.brevo_list_id,
            "deleted_at": to_iso(self.deleted_at),
            "last_job": self.last_job.to_json() if self.last_job else None,
        }


@db_session
def list_filters() -> list[FilterView]:
    """Every known filter, soft-deleted ones included, by id."""
    views = []
    for row in Filter.select().order_by(Filter.id):
        last = row.jobs.select().order_by(desc(SyncJob.id)).first()
        views.append(
            FilterView(
                id=row.id,
                name=row.name,
                type=row.type,
                brevo_list_id=row.brevo_list_id,
                deleted_at=row.deleted_at,
                last_job=job_from_row(last) if last is not None else None,
            )
        )
    return views
