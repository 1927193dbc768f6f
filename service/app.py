"""The Starlette application: routes, middleware, error handlers and the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import Route

from service import sessions
from service.api import filters, health, jobs
from service.api import session as session_api
from service.api.context import WebContext
from service.auth import SessionAuthMiddleware
from service.body_limit import MAX_BODY_BYTES, BodyLimitMiddleware
from service.clock import Clock, SystemClock
from service.config import Settings
from service.db import bind_database
from service.errors import EXCEPTION_HANDLERS
from service.openapi import openapi_json
from service.passwords import AdminPassword

log = logging.getLogger(__name__)

ROUTES = [
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/api/session", session_api.login, methods=["POST"]),
    Route("/api/session", session_api.logout, methods=["DELETE"]),
    Route("/api/filters", filters.list_filters, methods=["GET"]),
    Route("/api/jobs", jobs.list_jobs, methods=["GET"]),
    Route("/api/jobs/{id:int}", jobs.get_job, methods=["GET"]),
]


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    """Build the web app for ``settings``; the database is bound when its lifespan starts."""
    clock = clock or SystemClock()
    password = AdminPassword(settings.admin_password, settings.admin_password_hash)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(bind_database, settings.database_path)
        if await run_in_threadpool(sessions.end_sessions_if_password_changed, password):
            log.warning("the admin password changed: every session was ended")
        log.info("web ready", extra={"database": str(settings.database_path)})
        yield

    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES),
            Middleware(
                SessionAuthMiddleware,
                clock=clock,
                public_url=settings.public_url,
                trusted_proxies=settings.trusted_proxies,
            ),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.context = WebContext(settings=settings, clock=clock, password=password)
    return app
