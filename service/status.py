"""What ``GET /api/status`` reports: the webhook inbox, the incremental sync (its coalesce
window and whether Pipedrive work waits for the token budget), the queue, running jobs,
worker liveness and each API's recent usage, last rate-limit figures and, when it refused
the service's credential, the pause of the work that needs it.

Every function here blocks (database or queue reads): call them from a thread. Times come
from the caller's clock as unix seconds and leave as ISO 8601 UTC strings.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from service import api_usage
from service.auth_pause import AuthPause, recorded_pauses
from service.budget import budget_state
from service.clients.usage import RateFigures
from service.clock import to_iso
from service.config import sqlite_path
from service.db import db, db_session
from workers.periodic import FORGET_HEARTBEAT_SECONDS, TICK_SECONDS

log = logging.getLogger(__name__)

INBOX_STATUSES = ("pending", "ignored", "processed")
APIS = ("pipedrive", "brevo")
# A worker is alive while its periodic loop's last heartbeat is this recent (15 ticks).
WORKER_ALIVE_SECONDS = int(15 * TICK_SECONDS)
RECENT_CALLS_SECONDS = 3600

_queues: dict[str, Any] = {}
_queues_lock = threading.Lock()


def _age(now: int, then: int | None) -> int | None:
    return None if then is None else max(0, now - then)


@db_session
def inbox_status(now: int) -> dict[str, Any]:
    """Deliveries by status, how long the oldest pending one waits, and the latest one."""
    # One pass over the (status, received_at) index, which covers the query.
    rows = db.select(
        "SELECT status, COUNT(*), MIN(received_at), MAX(received_at) FROM inbox GROUP BY status"
    )
    counts = dict.fromkeys(INBOX_STATUSES, 0)
    oldest_pending: int | None = None
    latest: int | None = None
    for status, count, oldest, newest in rows:
        counts[status] = int(count)
        if status == "pending":
            oldest_pending = int(oldest)
        latest = int(newest) if latest is None else max(latest, int(newest))
    return {
        **counts,
        "oldest_pending_age_seconds": _age(now, oldest_pending),
        "last_webhook_at": to_iso(latest),
    }


@db_session
def jobs_status(now: int) -> dict[str, Any]:
    """How many jobs are processing, and the oldest of them."""
    count = int(db.select("SELECT COUNT(*) FROM sync_jobs WHERE status = 'processing'")[0])
    oldest = db.select(
        "SELECT id, created_at FROM sync_jobs WHERE status = 'processing' "
        "ORDER BY created_at, id LIMIT 1"
    )
    job_id, created_at = (int(oldest[0][0]), int(oldest[0][1])) if oldest else (None, None)
    return {
        "processing": count,
        "oldest_processing_job_id": job_id,
        "oldest_processing_age_seconds": _age(now, created_at),
    }


@db_session
def workers_status(now: int) -> list[dict[str, Any]]:
    """Each worker process heard from in the last day, most recent heartbeat first."""
    since = now - FORGET_HEARTBEAT_SECONDS  # noqa: F841 - bound by Pony's $name syntax
    rows = db.select(
        "SELECT holder, beat_at FROM worker_heartbeats WHERE beat_at >= $since "
        "ORDER BY beat_at DESC, holder"
    )
    workers = []
    for holder, beat_at in rows:
        age = _age(now, int(beat_at))
        assert age is not None
        workers.append(
            {
                "holder": holder,
                "last_heartbeat_at": to_iso(int(beat_at)),
                "heartbeat_age_seconds": age,
                "alive": age <= WORKER_ALIVE_SECONDS,
            }
        )
    return workers


def _rate_limit(api: str, figures: RateFigures, observed_at: float) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "limit": figures.limit,
        "remaining": figures.remaining,
        "reset_seconds": figures.reset_seconds,
        "observed_at": to_iso(int(observed_at)),
    }
    if api == "pipedrive":
        # Pipedrive's daily token budget (x-daily-requests-left and its limit).
        shown["daily_limit"] = figures.daily_limit
        shown["daily_remaining"] = figures.daily_remaining
    return shown


def _auth_pause(pause: AuthPause, now: int) -> dict[str, Any]:
    return {
        "active": pause.holds(now),
        "status": pause.status,
        "error": pause.error,
        "variable": pause.variable,
        "refused_at": to_iso(int(pause.refused_at)),
        "paused_until": to_iso(int(pause.paused_until)),
        "backoff_seconds": pause.backoff_seconds,
    }


@db_session
def apis_status(now: int) -> dict[str, Any]:
    """Per API: calls of the last hour (in total and by status), the last rate figures, and
    the recorded refusal of its credential (``auth_pause``: ``active`` while no work may
    call it; once it is over, the next job tries the credential again).

    Calls are counted per clock hour, so the count covers the hour holding ``now - 3600``
    and every later one: at least the last hour, at most two.
    """
    since = now - RECENT_CALLS_SECONDS
    counted_since = since // api_usage.HOUR * api_usage.HOUR
    by_status: dict[str, dict[str, int]] = {api: {} for api in APIS}
    for count in api_usage.calls_since(since):
        if count.api in by_status:
            statuses = by_status[count.api]
            statuses[str(count.status)] = statuses.get(str(count.status), 0) + count.calls
    figures = api_usage.rate_figures()
    pauses = recorded_pauses()
    apis: dict[str, Any] = {}
    for api in APIS:
        seen = figures.get(api)
        pause = pauses.get(api)
        apis[api] = {
            "calls_last_hour": sum(by_status[api].values()),
            "calls_by_status": dict(sorted(by_status[api].items())),
            "calls_counted_since": to_iso(counted_since),
            "rate_limit": None if seen is None else _rate_limit(api, *seen),
            "auth_pause": None if pause is None else _auth_pause(pause, now),
        }
    return apis


def queue_depth(queue_url: str) -> int:
    """How many messages wait on the huey queue of ``queue_url``.

    A SQLite queue file that does not exist yet holds nothing, and is not created here.
    """
    if queue_url.startswith("sqlite:///") and not sqlite_path(queue_url).exists():
        return 0
    with _queues_lock:
        huey = _queues.get(queue_url)
        if huey is None:
            # Imported here, as the web side does for enqueueing: only needed once asked.
            from workers.queue import build_huey

            huey = _queues[queue_url] = build_huey(queue_url)
    return int(huey.pending_count())


def queue_status(queue_url: str) -> dict[str, Any]:
    """The queue's depth, or why it could not be read: the status page still answers."""
    try:
        return {"depth": queue_depth(queue_url), "error": None}
    except Exception as exc:
        log.warning("status: the queue could not be read", exc_info=True)
        return {"depth": None, "error": f"the queue could not be read: {type(exc).__name__}: {exc}"}


@db_session
def sync_status(now: int, base_window: float) -> dict[str, Any]:
    """The incremental sync: routed changes waiting for a job, the coalesce window as the
    budget has widened it, and until when Pipedrive work waits for the budget's reset."""
    budget = budget_state(base_window, now)
    waiting = int(db.select("SELECT COUNT(*) FROM filter_changes")[0])
    return {
        "changes_waiting": waiting,
        "configured_coalesce_seconds": base_window,
        "coalesce_seconds": budget.coalesce_seconds,
        "pipedrive_paused_until": (
            to_iso(int(budget.paused_until)) if budget.paused_until is not None else None
        ),
    }


@db_session
def _database_status(now: int, base_window: float) -> dict[str, Any]:
    # Every database figure read in one session.
    return {
        "inbox": inbox_status(now),
        "sync": sync_status(now, base_window),
        "jobs": jobs_status(now),
        "workers": workers_status(now),
        "apis": apis_status(now),
    }


def collect(queue_url: str, now: int, base_window: float = 2.0) -> dict[str, Any]:
    """The whole status document at ``now``; ``base_window`` is SYNC_COALESCE_SECONDS."""
    database = _database_status(now, base_window)
    return {
        "checked_at": to_iso(now),
        "inbox": database["inbox"],
        "sync": database["sync"],
        "queue": queue_status(queue_url),
        "jobs": database["jobs"],
        "workers": database["workers"],
        "apis": database["apis"],
    }
