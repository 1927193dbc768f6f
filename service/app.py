"""The Starlette application: routes, middleware, error handlers and the lifespan."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import Route

from service import sessions
from service.api import filters, health, jobs, sync
from service.api import session as session_api
from service.api import status as status_api
from service.api import webhook as webhook_api
from service.api.context import WebContext
from service.auth import SessionAuthMiddleware
from service.auth_failures import AuthFailureLimiter
from service.body_limit import MAX_BODY_BYTES, BodyLimitMiddleware
from service.clock import Clock, SystemClock
from service.config import Settings
from service.db import bind_database
from service.errors import EXCEPTION_HANDLERS
from service.inbox_writer import InboxWriter
from service.openapi import openapi_json
from service.passwords import AdminPassword

log = logging.getLogger(__name__)

ROUTES = [
    # First: the busiest route is matched without trying the others.
    Route("/webhooks/pipedrive", webhook_api.pipedrive_webhook, methods=["POST"]),
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/api/session", session_api.login, methods=["POST"]),
    Route("/api/session", session_api.logout, methods=["DELETE"]),
    Route("/api/filters", filters.list_filters, methods=["GET"]),
    Route("/api/filters/refresh", filters.refresh_filters, methods=["POST"]),
    Route("/api/filters/{id:id}/sync", sync.sync_filter, methods=["POST"]),
    Route("/api/sync", sync.sync_all, methods=["POST"]),
    Route("/api/jobs", jobs.list_jobs, methods=["GET"]),
    Route("/api/jobs/{id:id}", jobs.get_job, methods=["GET"]),
    Route("/api/status", status_api.get_status, methods=["GET"]),
]


class QueueEnqueuer:
    """Enqueues sync jobs and drain hints on the huey queue of ``QUEUE_URL``, opened on
    first use.

    Opened lazily so that an app which never starts a job (tests, a read-only admin)
    creates no queue file.
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._tasks: Any = None

    def _queue(self) -> Any:
        with self._lock:
            if self._tasks is None:
                # Imported here: the worker side is only needed once a job is started.
                from workers.queue import build_huey
                from workers.tasks import register_tasks

                huey = build_huey(self.settings.queue_url)
                self._tasks = register_tasks(huey, self.settings, self.clock)
            return self._tasks

    def __call__(self, job_id: int) -> None:
        """Put ``job_id`` on the queue for a worker (blocking)."""
        self._queue().run_sync_job(job_id)

    def hint_drain(self) -> None:
        """Ask a worker to drain the inbox once the coalesce window has passed (blocking;
        the inbox writer calls it at most once a second)."""
        self._queue().drain_inbox.schedule(delay=self.settings.sync_coalesce_seconds)


def create_app(
    settings: Settings,
    clock: Clock | None = None,
    enqueue_job: Callable[[int], None] | None = None,
    enqueue_drain: Callable[[], None] | None = None,
) -> Starlette:
    """Build the web app for ``settings``; the database is bound when its lifespan starts.

    ``enqueue_job`` puts a job id on the worker queue; by default the huey queue of
    ``settings.queue_url``. ``enqueue_drain`` hints the worker to drain the webhook inbox
    after a delivery is committed; by default through the same queue, when ``enqueue_job``
    is the default too.
    """
    clock = clock or SystemClock()
    if enqueue_job is None:
        queue = QueueEnqueuer(settings, clock)
        enqueue_job = queue
        enqueue_drain = enqueue_drain or queue.hint_drain
    password = AdminPassword(settings.admin_password, settings.admin_password_hash)

    writer = InboxWriter(settings.database_path, enqueue_drain)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(bind_database, settings.database_path)
        if await run_in_threadpool(sessions.end_sessions_if_password_changed, password):
            log.warning("the admin password changed: every session was ended")
        writer.start()
        log.info("web ready", extra={"database": str(settings.database_path)})
        try:
            yield
        finally:
            # Requests have ended: commit anything still queued, then close.
            await run_in_threadpool(writer.stop)

    app = Starlette(
        routes=ROUTES,
        middleware=[
            # First: an oversize body is refused before anything reads it or authenticates.
            Middleware(
                BodyLimitMiddleware,
                max_bytes=MAX_BODY_BYTES,
                prefix_limits={"/webhooks/": webhook_api.MAX_WEBHOOK_BODY_BYTES},
                body_timeout=settings.request_body_timeout_seconds,
            ),
            # Guards /api only; the webhook route authenticates with HTTP Basic itself.
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
    app.state.context = WebContext(
        settings=settings,
        clock=clock,
        password=password,
        enqueue_job=enqueue_job,
        inbox_writer=writer,
        webhook_auth_failures=AuthFailureLimiter(clock),
    )
    return app
