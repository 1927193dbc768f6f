"""``GET /api/filters``."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from service import filters


async def list_filters(request: Request) -> JSONResponse:
    """Every known filter with its latest job."""
    views = await run_in_threadpool(filters.list_filters)
    return JSONResponse({"filters": [view.to_json() for view in views]})
