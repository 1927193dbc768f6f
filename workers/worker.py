"""``pbsync worker``: the huey consumer plus the periodic loop, in one process."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from service.clock import Clock, SystemClock
from service.config import Settings
from service.db import bind_database
from service.shutdown import ShutdownRequests
from workers.periodic import Duty, PeriodicLoop
from workers.queue import build_huey, run_consumer
from workers.tasks import register_tasks

log = logging.getLogger(__name__)


def worker_duties(settings: Settings, enqueue_session_cleanup: Callable[[], None]) -> list[Duty]:
    """The periodic duties of the worker loop."""
    return [
        Duty("remove_expired_sessions", settings.session_cleanup_seconds, enqueue_session_cleanup),
    ]


def run_worker(settings: Settings, shutdown: ShutdownRequests, clock: Clock | None = None) -> None:
    """Bind the database, start the periodic loop and consume the queue until stopped."""
    clock = clock or SystemClock()
    bind_database(settings.database_path)
    huey = build_huey(settings.queue_url)
    tasks = register_tasks(huey, settings, clock)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    loop = PeriodicLoop(worker_duties(settings, tasks.remove_expired_sessions), clock, holder)
    loop.start()
    log.info("worker ready", extra={"holder": holder})
    try:
        run_consumer(huey, shutdown)
    finally:
        loop.stop()
        log.info("worker stopped", extra={"holder": holder})
