"""Learning a linked filter's related objects (``service.filter_conditions``) at its first
sync, so webhook events of those objects reach it from then on, not only after the next
filter refresh; and the definition that sync lists, so that the refresh after it knows an
edit made in between for one (``service.filter_refresh`` schedules a resync only when the
conditions differ from a hash it already holds)."""

from __future__ import annotations

from service.clients.pipedrive import PipedriveClient
from service.db import Filter, db_session
from service.filter_conditions import related_objects
from service.filter_refresh import conditions_hash
from workers.sync.claims import ClaimedJob, check_claim


@db_session
def _unknown(filter_id: int) -> bool:
    row = Filter.get(id=filter_id)
    return row is not None and row.related_objects is None


@db_session
def _store(job_id: int, token: str, filter_id: int, related: str, digest: str) -> None:
    check_claim(job_id, token)
    row = Filter.get(id=filter_id)
    if row is not None:
        row.related_objects = related
        # A refresh that stored one meanwhile read the conditions after this sync did.
        if row.conditions_hash is None:
            row.conditions_hash = digest


def learn_related_objects(pipedrive: PipedriveClient, job: ClaimedJob) -> None:
    """Read the filter's conditions once (one call) when its related objects are unknown,
    so webhook events of those objects reach it from its first sync on, and keep their
    hash as the definition this sync lists: without it, an edit made before the next
    refresh would be taken for the filter's first known definition and never synced."""
    if not _unknown(job.filter_id):
        return
    detail = pipedrive.get_filter(job.filter_id)
    related = related_objects(detail.conditions, job.filter_type)
    _store(job.id, job.token, job.filter_id, related, conditions_hash(detail.conditions))
