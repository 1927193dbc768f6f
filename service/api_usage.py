"""The API clients' shared usage kept in the database, so every process sees it: call
counters by hour, the last rate-limit figures of each API, and pacing slots.

Each method is its own short transaction and never spans an HTTP call.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.clients.usage import CallKey, RateFigures
from service.db import ApiCall, ApiRateLimit, db, db_session

HOUR = 3600


@dataclass(frozen=True)
class CallCount:
    """Calls to one operation with one status since some moment."""

    api: str
    method: str
    path: str
    status: int
    calls: int


class DatabaseUsage:
    """A ``service.clients.usage.UsageStore`` in the service's database."""

    @db_session
    def record_call(self, key: CallKey, at: float) -> None:
        """Count one call in its hour."""
        api, method, path, status = key.api, key.method, key.path, key.status  # noqa: F841
        hour = int(at) // HOUR * HOUR  # noqa: F841 - bound by Pony's $name syntax
        db.execute(
            "INSERT INTO api_calls (api, method, path, status, hour, calls) "
            "VALUES ($api, $method, $path, $status, $hour, 1) "
            "ON CONFLICT (api, method, path, status, hour) DO UPDATE SET calls = calls + 1"
        )

    @db_session
    def record_figures(self, api: str, figures: RateFigures, at: float) -> None:
        """Remember the latest figures ``api`` reported."""
        row = ApiRateLimit.get(api=api)
        values = {
            "limit": figures.limit,
            "remaining": figures.remaining,
            "reset_seconds": figures.reset_seconds,
            "daily_limit": figures.daily_limit,
            "daily_remaining": figures.daily_remaining,
            "observed_at": at,
        }
        if row is None:
            ApiRateLimit(api=api, **values)
        else:
            row.set(**values)

    @db_session
    def reserve(self, bucket: str, interval: float, now: float, burst: int = 0) -> float:
        """Take the next free slot of ``bucket``; one UPDATE, so processes never share one."""
        db.execute("INSERT OR IGNORE INTO api_pacing (bucket, next_at) VALUES ($bucket, $now)")
        cursor = db.execute(
            "UPDATE api_pacing SET next_at = MAX(next_at, $now) + $interval "
            "WHERE bucket = $bucket RETURNING next_at"
        )
        # next_at was MAX(old, now); a burst may go up to burst slots before it.
        due = float(cursor.fetchone()[0]) - interval
        return max(now, due - burst * interval)

    @db_session
    def hold(self, bucket: str, until: float) -> None:
        """Let no call of ``bucket`` go before ``until``."""
        db.execute(
            "INSERT INTO api_pacing (bucket, next_at) VALUES ($bucket, $until) "
            "ON CONFLICT (bucket) DO UPDATE SET next_at = MAX(next_at, excluded.next_at)"
        )


@db_session
def calls_since(since: float) -> list[CallCount]:
    """Calls counted in the hours from the one holding ``since`` on, by operation and status."""
    hour = int(since) // HOUR * HOUR
    rows = ApiCall.select(lambda c: c.hour >= hour)
    totals: dict[tuple[str, str, str, int], int] = {}
    for row in rows:
        key = (row.api, row.method, row.path, row.status)
        totals[key] = totals.get(key, 0) + row.calls
    return [CallCount(*key, calls=n) for key, n in sorted(totals.items())]


@db_session
def rate_figures() -> dict[str, tuple[RateFigures, float]]:
    """The last figures each API reported, with when they were seen.

    Read as plain rows, not entities: the status page reads in one session, where the
    budget has loaded the Pipedrive row already, and Pony refuses to load an entity again
    once another process (a worker's call) has changed it meanwhile.
    """
    rows = db.select(
        'SELECT api, "limit", remaining, reset_seconds, daily_limit, daily_remaining, '
        "observed_at FROM api_rate_limits"
    )
    return {
        str(api): (RateFigures(limit, remaining, reset, daily_limit, daily_remaining), observed)
        for api, limit, remaining, reset, daily_limit, daily_remaining, observed in rows
    }
