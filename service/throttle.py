"""Login throttling per client address, kept in the database so it holds across web processes."""

from __future__ import annotations

from service.db import LoginFailure, db_session

MAX_FAILURES = 10
WINDOW_SECONDS = 600


@db_session
def retry_after(client: str, now: int) -> int | None:
    """Seconds until ``client`` may try again, or None when it is not throttled."""
    since = now - WINDOW_SECONDS
    recent = LoginFailure.select(lambda f: f.client == client and f.failed_at > since)
    times = sorted(f.failed_at for f in recent)
    if len(times) < MAX_FAILURES:
        return None
    # The window reopens when enough of the oldest failures have aged out of it.
    oldest_counted: int = times[len(times) - MAX_FAILURES]
    return max(1, oldest_counted + WINDOW_SECONDS - now)


@db_session
def record_failure(client: str, now: int) -> None:
    """Remember a failed login from ``client`` and forget failures older than the window."""
    cutoff = now - WINDOW_SECONDS
    LoginFailure.select(lambda f: f.failed_at <= cutoff).delete(bulk=True)
    LoginFailure(client=client, failed_at=now)


@db_session
def clear(client: str) -> None:
    """Forget ``client``'s failures after a successful login."""
    LoginFailure.select(lambda f: f.client == client).delete(bulk=True)
