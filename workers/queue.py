"""The huey queue, built from ``QUEUE_URL``, and a consumer that stops gracefully on SIGTERM.

huey deletes a message before it runs, so the queue is only a hint: the database holds the
truth and every task must be safe to run again (DESIGN section 3).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from huey import Huey, SqliteHuey
from huey.consumer import ConsumerStopped
from huey.signals import SIGNAL_INTERRUPTED

from service.config import sqlite_path
from service.shutdown import ShutdownRequests

log = logging.getLogger(__name__)

QUEUE_NAME = "pbsync"
CONSUMER_THREADS = 4
# Below a supervisor's usual 30 s kill deadline, so a running task can finish first.
SHUTDOWN_TIMEOUT_SECONDS = 25


class QueueConfigError(Exception):
    """``QUEUE_URL`` names a queue this installation cannot open."""


def build_huey(queue_url: str) -> Huey:
    """The huey instance for ``queue_url``: SqliteHuey for ``sqlite:///``, RedisHuey for redis."""
    if queue_url.startswith("sqlite:///"):
        path = sqlite_path(queue_url)
        path.parent.mkdir(parents=True, exist_ok=True)
        huey: Huey = SqliteHuey(QUEUE_NAME, filename=str(path), results=False)
    elif queue_url.startswith(("redis://", "rediss://")):
        try:
            from huey import RedisHuey
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise QueueConfigError(
                "QUEUE_URL is redis:// but the redis package is not installed: "
                "pip install 'pipedrive-brevo-sync[redis]'"
            ) from exc
        huey = RedisHuey(QUEUE_NAME, url=queue_url, results=False)
    else:
        raise QueueConfigError("QUEUE_URL must start with sqlite:/// or redis://")

    @huey.signal(SIGNAL_INTERRUPTED)  # type: ignore[untyped-decorator]
    def _requeue_interrupted(signal: str, task: Any, *args: Any) -> None:
        # A task cut off by shutdown goes back on the queue instead of being lost.
        log.warning("task interrupted by shutdown, requeued", extra={"task": task.name})
        huey.enqueue(task)

    return huey


def run_consumer(huey: Huey, shutdown: ShutdownRequests, threads: int = CONSUMER_THREADS) -> None:
    """Run a consumer until SIGTERM (graceful: running tasks finish) or SIGINT (immediate).

    This is ``Consumer.run`` except that a stop requested while the consumer was starting,
    before its own signal handlers existed, is honoured as a graceful stop, and SIGHUP
    stops rather than re-executes the process.
    """
    consumer = huey.create_consumer(
        workers=threads,
        worker_type="thread",
        # Periodic work runs from the worker's own loop, which runs each duty once across workers.
        periodic=False,
        graceful_signal="TERM",
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        max_delay=1.0,
    )
    consumer.start()  # from here on huey's own handlers receive the signals
    if shutdown.requested:
        consumer.stop(graceful=True)
    else:
        health_check_at = time.monotonic()
        while True:
            try:
                health_check_at = consumer.loop(health_check_at)
            except ConsumerStopped:
                break
    huey.notify_interrupted_tasks()
    log.info("consumer stopped")
