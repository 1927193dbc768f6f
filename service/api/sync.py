"""``POST /api/filters/{id}/sync`` and ``POST /api/sync``: start sync jobs by hand."""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service import jobs
from service.api.context import web_context
from service.api.params import MAX_ID, bool_param
from service.api.responses import JsonResponse
from service.db import Filter, db_session
from service.errors import ApiError
from service.jobs import FilterBusy, FilterDeleted, FilterNotFound, Job

log = logging.getLogger(__name__)


class FilterNotRefreshed(Exception):
    """The filter's type is unknown: no filter refresh has seen it yet."""


@db_session
def _check_refreshed(filter_id: int) -> None:
    row = Filter.get(id=filter_id)
    if row is not None and row.deleted_at is None and row.type is None:
        raise FilterNotRefreshed(filter_id)


def _enqueue(enqueue_job: Callable[[int], None], job: Job) -> None:
    try:
        enqueue_job(job.id)
    except Exception:
        # The job row is committed and stays processing: the worker's sweeper enqueues jobs
        # no worker claimed (DESIGN section 3), so the request still succeeds.
        log.exception(
            "could not enqueue the sync job; the worker's sweeper will",
            extra={"job_id": job.id, "filter_id": job.filter_id},
        )


def start_job(
    enqueue_job: Callable[[int], None],
    filter_id: int,
    kind: str,
    forced: bool,
    now: int,
) -> Job:
    """Create an admin job for the filter and enqueue it (blocking: run it in a thread).

    Raises ``FilterNotFound``, ``FilterDeleted``, ``FilterNotRefreshed`` or ``FilterBusy``.
    """
    _check_refreshed(filter_id)
    job = jobs.create_job(filter_id, kind, "admin", forced, now)
    _enqueue(enqueue_job, job)
    log.info(
        "sync job started by the admin",
        extra={"job_id": job.id, "filter_id": filter_id, "kind": kind, "forced": forced},
    )
    return job


def start_all(enqueue_job: Callable[[int], None], now: int) -> tuple[list[Job], list[int]]:
    """A full admin job for every linked filter; the ids of those already running.

    Filters deleted meanwhile, or never refreshed, are left out (and logged).
    """
    started: list[Job] = []
    busy: list[int] = []
    for filter_id in jobs.linked_filter_ids():
        try:
            started.append(start_job(enqueue_job, filter_id, "full", False, now))
        except FilterBusy:
            busy.append(filter_id)
        except (FilterNotFound, FilterDeleted, FilterNotRefreshed) as exc:
            log.warning(
                "linked filter not synced: %s",
                type(exc).__name__,
                extra={"filter_id": filter_id},
            )
    return started, busy


async def sync_filter(request: Request) -> JsonResponse:
    """Start a full resync (or a dry run) of one filter: 202 with the job."""
    context = web_context(request)
    filter_id: int = request.path_params["id"]
    force = bool_param(request, "force")
    dry_run = bool_param(request, "dry_run")
    if not 0 < filter_id <= MAX_ID:
        raise ApiError(404, f"no filter {filter_id}")
    kind = "dry_run" if dry_run else "full"
    try:
        job = await run_in_threadpool(
            start_job, context.enqueue_job, filter_id, kind, force, context.clock.now()
        )
    except FilterNotFound as exc:
        raise ApiError(404, f"no filter {filter_id}") from exc
    except FilterDeleted as exc:
        raise ApiError(
            409, f"filter {filter_id} no longer exists in Pipedrive and cannot be synced"
        ) from exc
    except FilterNotRefreshed as exc:
        raise ApiError(
            409,
            f"filter {filter_id} has not been seen by a filter refresh yet: "
            "refresh filters first (POST /api/filters/refresh)",
        ) from exc
    except FilterBusy as exc:
        raise ApiError(
            409, f"filter {filter_id} is already being synced", job=exc.job.to_json()
        ) from exc
    return JsonResponse({"job": job.to_json()}, status_code=202)


async def sync_all(request: Request) -> JsonResponse:
    """Start a full resync of every linked filter: 202 with the jobs and the busy filters."""
    context = web_context(request)
    started, busy = await run_in_threadpool(start_all, context.enqueue_job, context.clock.now())
    return JsonResponse({"jobs": [job.to_json() for job in started], "busy": busy}, status_code=202)
