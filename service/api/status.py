"""``GET /api/status``: how the inbox, queue, jobs, workers and API budgets are doing."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service import status
from service.api.context import web_context
from service.api.responses import JsonResponse


async def get_status(request: Request) -> JsonResponse:
    """The status document; a queue that cannot be read is reported in it, not as an error."""
    context = web_context(request)
    settings = context.settings
    body = await run_in_threadpool(
        status.collect, settings.queue_url, context.clock.now(), settings.sync_coalesce_seconds
    )
    return JsonResponse(body)
