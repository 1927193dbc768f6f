"""The one place code asks for the time, and the one place timestamps are converted.

The database stores INTEGER unix seconds; the API shows ISO 8601 UTC strings. Code takes a
``Clock`` (or a ``now`` integer it got from one) so tests can pass a ``ManualClock``
instead of patching time.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current time in unix seconds."""

    def now(self) -> int:
        """Return the current time as integer unix seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> int:
        """Return the current time as integer unix seconds."""
        return int(time.time())


class ManualClock:
    """A clock that moves only when told to: for tests."""

    def __init__(self, start: int = 1_800_000_000) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> int:
        """Return the clock's current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: int) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += seconds

    def set(self, timestamp: int) -> None:
        """Set the clock to ``timestamp``."""
        with self._lock:
            self._now = timestamp


def to_iso(timestamp: int | None) -> str | None:
    """Convert unix seconds to an ISO 8601 UTC string such as ``2026-11-23T21:07:40Z``."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(timestamp: int) -> str:
    """Format unix seconds as an HTTP date (for cookie ``Expires``)."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
