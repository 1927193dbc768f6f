"""The huey tasks. Each takes ids, never entities, and is safe to run twice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from huey import Huey

from service import sessions
from service.clock import Clock, SystemClock
from service.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tasks:
    """The task wrappers registered on one huey instance; calling one enqueues it."""

    remove_expired_sessions: Any
    run_sync_job: Any
    refresh_filters: Any
    drain_inbox: Any


def register_tasks(huey: Huey, settings: Settings, clock: Clock | None = None) -> Tasks:
    """Register every task on ``huey`` under a stable name and return their wrappers.

    The web process registers them too, only to enqueue: the bodies run in the worker.
    """
    clock = clock or SystemClock()

    @huey.task(name="remove_expired_sessions")  # type: ignore[untyped-decorator]
    def remove_expired_sessions() -> None:
        removed = sessions.delete_expired_sessions(clock.now())
        log.info("expired sessions removed", extra={"removed": removed})

    @huey.task(name="run_sync_job")  # type: ignore[untyped-decorator]
    def run_sync_job(job_id: int) -> None:
        # Imported here so the web process, which only enqueues, does not load the engine.
        from workers.sync.runner import run_job

        run_job(job_id, settings, clock)

    @huey.task(name="refresh_filters")  # type: ignore[untyped-decorator]
    def refresh_filters() -> None:
        from service.budget import pause_pipedrive, paused_until
        from service.clients.errors import ApiBudgetExhausted, ApiError
        from service.clients.factory import MissingCredential, brevo_client, pipedrive_client
        from service.filter_refresh import refresh_filters as refresh
        from service.webhooks_install import WebhookTarget

        if paused_until(clock.now()) is not None:
            log.info("filter refresh skipped: pipedrive's daily token budget is spent")
            return
        try:
            brevo = brevo_client(settings) if settings.brevo_api_key else None
            webhooks = WebhookTarget.from_settings(settings)
            refresh(pipedrive_client(settings), brevo, clock.now(), run_sync_job, webhooks)
        except (MissingCredential, ApiError) as exc:
            # Expected while the setup is incomplete or Pipedrive is down: say it plainly;
            # the next period tries again.
            log.warning("filter refresh failed", extra={"error": str(exc)})
            if isinstance(exc, ApiBudgetExhausted):
                pause_pipedrive(clock.now(), exc.retry_after)

    @huey.task(name="drain_inbox")  # type: ignore[untyped-decorator]
    def drain_inbox() -> None:
        # A hint from the web after a delivery; the worker loop drains every second anyway.
        drain_now(settings, clock, run_sync_job, refresh_filters)

    return Tasks(
        remove_expired_sessions=remove_expired_sessions,
        run_sync_job=run_sync_job,
        refresh_filters=refresh_filters,
        drain_inbox=drain_inbox,
    )


def drain_now(
    settings: Settings,
    clock: Clock,
    run_sync_job: Callable[[int], None],
    refresh_filters: Callable[[], None],
) -> None:
    """Drain the webhook inbox once (``workers.sync.drain``)."""
    from workers.sync.drain import drain

    drain(
        clock.now(),
        settings.sync_coalesce_seconds,
        run_sync_job,
        refresh_filters,
        retry_after_failure=settings.job_stale_seconds,
    )
