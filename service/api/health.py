"""``GET /healthz``: unauthenticated liveness, including a database round trip."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.api.responses import JsonResponse
from service.db import db, db_session
from service.errors import error_response

log = logging.getLogger(__name__)


@db_session
def _database_answers() -> bool:
    return bool(db.select("SELECT 1"))


async def healthz(request: Request) -> JsonResponse:
    """200 when the web process and its database answer, else 503."""
    try:
        await run_in_threadpool(_database_answers)
    except Exception:
        log.exception("health check: the database did not answer")
        return error_response(503, "database unavailable")
    return JsonResponse({"status": "ok"})
