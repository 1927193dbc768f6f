"""The clock and the one place timestamps become ISO strings."""

from __future__ import annotations

import time

from service.clock import ManualClock, SystemClock, http_date, to_iso


def test_system_clock_is_unix_seconds() -> None:
    """An integer within a second of time.time()."""
    now = SystemClock().now()
    assert isinstance(now, int) and abs(now - time.time()) < 2


def test_manual_clock_moves_only_when_told() -> None:
    """advance and set."""
    clock = ManualClock(start=100)
    assert clock.now() == 100
    clock.advance(5)
    assert clock.now() == 105
    clock.set(7)
    assert clock.now() == 7


def test_iso_and_http_dates_are_utc() -> None:
    """Z-suffixed ISO 8601 for the API; RFC 7231 dates for cookies; None stays None."""
    assert to_iso(0) == "1970-01-01T00:00:00Z"
    assert to_iso(1_900_000_000) == "2030-03-17T17:46:40Z"
    assert to_iso(None) is None
    assert http_date(1_900_000_000) == "Sun, 17 Mar 2030 17:46:40 GMT"
