"""``GET /api/jobs`` and ``GET /api/jobs/{id}``."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service import jobs
from service.api.params import MAX_ID, choice_param, int_param
from service.api.responses import JsonResponse
from service.errors import ApiError


async def list_jobs(request: Request) -> JsonResponse:
    """A page of jobs, newest first, optionally of one filter or one status."""
    filter_id = int_param(request, "filter_id")
    status = choice_param(request, "status", jobs.JOB_STATUSES)
    limit = int_param(request, "limit", 1, jobs.MAX_PAGE, jobs.DEFAULT_PAGE)
    before_id = int_param(request, "before_id")
    assert limit is not None
    page, next_before_id = await run_in_threadpool(
        jobs.list_jobs, filter_id, status, limit, before_id
    )
    return JsonResponse({"jobs": [job.to_json() for job in page], "next_before_id": next_before_id})


async def get_job(request: Request) -> JsonResponse:
    """One job by id."""
    job_id: int = request.path_params["id"]
    job = await run_in_threadpool(jobs.get_job, job_id) if 0 < job_id <= MAX_ID else None
    if job is None:
        raise ApiError(404, f"no job {job_id}")
    return JsonResponse({"job": job.to_json()})
