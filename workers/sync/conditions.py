"""Learning a linked filter's related objects (``service.filter_conditions``) at its first
sync, so webhook events of those objects reach it from then on, not only after the next
filter refresh."""

from __future__ import annotations

from service.clients.pipedrive import PipedriveClient
from service.db import Filter, db_session
from service.filter_conditions import related_objects
from workers.sync.claims import ClaimedJob, check_claim


@db_session
def _unknown(filter_id: int) -> bool:
    row = Filter.get(id=filter_id)
    return row is not None and row.related_objects is None


@db_session
def _store(job_id: int, token: str, filter_id: int, related: str) -> None:
    check_claim(job_id, token)
    row = Filter.get(id=filter_id)
    if row is not None:
        row.related_objects = related


def learn_related_objects(pipedrive: PipedriveClient, job: ClaimedJob) -> None:
    """Read the filter's conditions once (one call) when its related objects are unknown,
    so webhook events of those objects reach it from its first sync on."""
    if not _unknown(job.filter_id):
        return
    detail = pipedrive.get_filter(job.filter_id)
    _store(job.id, job.token, job.filter_id, related_objects(detail.conditions, job.filter_type))
