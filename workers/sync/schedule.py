"""The catch-up full resync of every linked filter, once per ``FULL_RESYNC_SECONDS``,
spread over the period.

Each filter has its own phase in the period (a hash of its id), so a hundred filters
linked in the same minute do not all resync in one minute a day later. A filter is due
when the latest of its slots has passed and no full resync of it started since.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from service import jobs
from service.db import db, db_session

log = logging.getLogger(__name__)

# Knuth's multiplicative hash: consecutive filter ids land far apart in the period.
_SPREAD = 2_654_435_761
# How often the worker looks for due filters: the spread's resolution.
CHECK_SECONDS = 60


def phase(filter_id: int, period: int) -> int:
    """The filter's offset within every period, in seconds."""
    return (filter_id * _SPREAD) % period


def latest_slot(filter_id: int, period: int, now: int) -> int:
    """The filter's most recent catch-up time at or before ``now``."""
    return now - (now - phase(filter_id, period)) % period


@db_session
def last_full_starts() -> dict[int, int]:
    """When each filter's latest full resync (of any trigger) was created."""
    rows = db.select("filter_id, MAX(created_at) FROM sync_jobs WHERE kind = 'full' GROUP BY 1")
    return {int(r[0]): int(r[1]) for r in rows}


def schedule_full_resyncs(
    now: int, enqueue_job: Callable[[int], None], period: int | None = None
) -> list[int]:
    """Create and enqueue a ``schedule`` job for every linked filter that is due (every
    linked filter when ``period`` is None); a filter already syncing is left alone."""
    started = last_full_starts() if period is not None else {}
    created = []
    for filter_id in jobs.linked_filter_ids():
        if period is not None and started.get(filter_id, -1) >= latest_slot(filter_id, period, now):
            continue
        try:
            job = jobs.create_job(filter_id, "full", "schedule", False, now)
        except (jobs.FilterBusy, jobs.FilterDeleted, jobs.FilterNotFound):
            continue  # a running job will do; a filter deleted meanwhile is not synced
        enqueue_job(job.id)
        created.append(job.id)
    return created
