"""The catch-up full resync of every linked filter (``FULL_RESYNC_SECONDS``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from service import jobs

log = logging.getLogger(__name__)


def schedule_full_resyncs(now: int, enqueue_job: Callable[[int], None]) -> list[int]:
    """Create and enqueue a ``schedule`` job for every linked filter not already syncing."""
    created = []
    for filter_id in jobs.linked_filter_ids():
        try:
            job = jobs.create_job(filter_id, "full", "schedule", False, now)
        except (jobs.FilterBusy, jobs.FilterDeleted, jobs.FilterNotFound):
            continue  # a running job will do; a filter deleted meanwhile is not synced
        enqueue_job(job.id)
        created.append(job.id)
    return created
