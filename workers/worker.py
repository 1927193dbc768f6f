"""``pbsync worker``: the huey consumer plus the periodic loop, in one process."""

from __future__ import annotations

import logging
import os
import socket

from service import inbox
from service.clock import Clock, SystemClock
from service.config import Settings
from service.db import bind_database
from service.shutdown import ShutdownRequests
from workers.periodic import Duty, PeriodicLoop
from workers.queue import build_huey, run_consumer
from workers.sync.schedule import CHECK_SECONDS, schedule_full_resyncs
from workers.sync.sweeper import sweep
from workers.tasks import Tasks, drain_now, register_tasks

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 3600
# The drain waits out each burst's coalesce window itself; it looks every second.
DRAIN_EVERY_SECONDS = 1


def sweep_every(stale_seconds: int) -> int:
    """How often the sweeper looks for dead workers' jobs: a few times per stale window."""
    return max(1, min(5, stale_seconds // 3))


def worker_duties(settings: Settings, tasks: Tasks, clock: Clock) -> list[Duty]:
    """The periodic duties of the worker loop."""

    def sweep_jobs() -> None:
        sweep(clock.now(), settings.job_stale_seconds, tasks.run_sync_job)

    def prune_inbox() -> None:
        pruned = inbox.prune(clock.now())
        if pruned:
            log.info("inbox pruned", extra={"deleted": pruned})

    def drain_inbox() -> None:
        drain_now(settings, clock, tasks.run_sync_job, tasks.refresh_filters)

    def resync_linked_filters() -> None:
        period = settings.full_resync_seconds
        scheduled = schedule_full_resyncs(clock.now(), tasks.run_sync_job, period)
        if scheduled:
            log.info("scheduled full resyncs", extra={"jobs": scheduled})

    return [
        Duty(
            "remove_expired_sessions",
            settings.session_cleanup_seconds,
            tasks.remove_expired_sessions,
        ),
        Duty("sweep_jobs", sweep_every(settings.job_stale_seconds), sweep_jobs),
        Duty("drain_inbox", DRAIN_EVERY_SECONDS, drain_inbox, quiet=True),
        Duty("refresh_filters", settings.filter_refresh_seconds, tasks.refresh_filters),
        Duty("prune_inbox", PRUNE_EVERY_SECONDS, prune_inbox),
        Duty(
            "full_resync",
            min(CHECK_SECONDS, settings.full_resync_seconds),
            resync_linked_filters,
        ),
    ]


def run_worker(settings: Settings, shutdown: ShutdownRequests, clock: Clock | None = None) -> None:
    """Bind the database, start the periodic loop and consume the queue until stopped."""
    clock = clock or SystemClock()
    bind_database(settings.database_path)
    huey = build_huey(settings.queue_url)
    tasks = register_tasks(huey, settings, clock)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    loop = PeriodicLoop(worker_duties(settings, tasks, clock), clock, holder)
    loop.start()
    log.info("worker ready", extra={"holder": holder})
    try:
        run_consumer(huey, shutdown)
    finally:
        loop.stop()
        log.info("worker stopped", extra={"holder": holder})
