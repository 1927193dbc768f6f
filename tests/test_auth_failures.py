"""The in-memory limiter of failed authentications per client address."""

from __future__ import annotations

import pytest

from service.auth_failures import MAX_CLIENTS, MAX_FAILURES, WINDOW_SECONDS, AuthFailureLimiter
from service.clock import ManualClock


@pytest.fixture
def limiter(clock: ManualClock) -> AuthFailureLimiter:
    """Five failures within 60 s refuse an address; at most 100 addresses remembered."""
    return AuthFailureLimiter(clock, max_failures=5, window_seconds=60, max_clients=100)


def fail(limiter: AuthFailureLimiter, client: str, times: int) -> list[bool]:
    return [limiter.record_failure(client) for _ in range(times)]


def test_the_defaults() -> None:
    """20 failures a minute, 10,000 addresses."""
    limiter = AuthFailureLimiter(ManualClock())
    assert (limiter.max_failures, limiter.window_seconds, limiter.max_clients) == (
        MAX_FAILURES,
        WINDOW_SECONDS,
        MAX_CLIENTS,
    )
    assert (MAX_FAILURES, WINDOW_SECONDS, MAX_CLIENTS) == (20, 60, 10_000)


def test_the_nth_failure_in_the_window_refuses_the_address(
    limiter: AuthFailureLimiter, clock: ManualClock
) -> None:
    """Only the failure that starts the refusal says so; the wait counts down."""
    assert fail(limiter, "203.0.113.7", 4) == [False] * 4
    assert limiter.retry_after("203.0.113.7") is None
    assert fail(limiter, "203.0.113.7", 1) == [True]
    assert limiter.retry_after("203.0.113.7") == 60
    clock.advance(45)
    assert limiter.retry_after("203.0.113.7") == 15
    clock.advance(15)
    assert limiter.retry_after("203.0.113.7") is None


def test_other_addresses_are_not_refused(limiter: AuthFailureLimiter) -> None:
    """Per address, nothing shared."""
    fail(limiter, "203.0.113.7", 5)
    assert limiter.retry_after("203.0.113.7") is not None
    assert limiter.retry_after("198.51.100.2") is None
    assert fail(limiter, "198.51.100.2", 4) == [False] * 4
    assert limiter.retry_after("198.51.100.2") is None


def test_the_window_slides(limiter: AuthFailureLimiter, clock: ManualClock) -> None:
    """Refused until the oldest of the counted failures is a window old; then only the
    failures inside the window count."""
    fail(limiter, "203.0.113.7", 3)  # at t
    clock.advance(40)
    fail(limiter, "203.0.113.7", 2)  # at t + 40
    assert limiter.retry_after("203.0.113.7") == 20
    clock.advance(20)
    assert limiter.retry_after("203.0.113.7") is None
    # At t + 60 the window holds the two of t + 40 and these three.
    assert fail(limiter, "203.0.113.7", 3) == [False, False, True]
    assert limiter.retry_after("203.0.113.7") == 40


def test_failures_older_than_the_window_do_not_count(
    limiter: AuthFailureLimiter, clock: ManualClock
) -> None:
    """Four failures long ago and four now refuse nobody, and the stale entry goes."""
    fail(limiter, "203.0.113.7", 4)
    clock.advance(61)
    assert limiter.retry_after("203.0.113.7") is None
    assert len(limiter) == 0
    assert fail(limiter, "203.0.113.7", 4) == [False] * 4
    assert limiter.retry_after("203.0.113.7") is None


def test_a_flood_from_many_addresses_keeps_the_memory_bounded(
    limiter: AuthFailureLimiter, clock: ManualClock
) -> None:
    """At most ``max_clients`` addresses; the one whose last failure is the oldest goes."""
    fail(limiter, "203.0.113.7", 5)
    for n in range(1000):
        clock.advance(0 if n % 100 else 1)
        limiter.record_failure(f"10.0.{n // 256}.{n % 256}")
        assert len(limiter) <= 100
    assert len(limiter) == 100
    assert limiter.retry_after("203.0.113.7") is None  # forgotten first
    # The latest address is remembered: its fifth failure refuses it; an early one is not.
    assert fail(limiter, "10.0.3.231", 4) == [False, False, False, True]
    assert fail(limiter, "10.0.0.0", 4) == [False] * 4


def test_expired_addresses_make_room_before_live_ones(clock: ManualClock) -> None:
    """A refused address is kept while stale ones can go instead."""
    small = AuthFailureLimiter(clock, max_failures=5, window_seconds=60, max_clients=3)
    fail(small, "10.0.0.1", 1)
    fail(small, "10.0.0.2", 1)
    clock.advance(30)
    fail(small, "203.0.113.7", 5)
    clock.advance(31)  # the first two have aged out, the refused one has not
    fail(small, "10.0.0.3", 1)
    fail(small, "10.0.0.4", 1)
    assert small.retry_after("203.0.113.7") == 29
    assert len(small) == 3


def test_the_default_bound_holds_under_a_large_flood() -> None:
    """100,000 addresses, one failure each: 10,000 remembered."""
    limiter = AuthFailureLimiter(ManualClock())
    for n in range(100_000):
        limiter.record_failure(f"2001:db8::{n:x}")
    assert len(limiter) == MAX_CLIENTS


@pytest.mark.parametrize("bad", [{"max_failures": 0}, {"window_seconds": 0}, {"max_clients": 0}])
def test_nonsense_limits_are_refused(bad: dict[str, int]) -> None:
    """A limiter that could never or always refuse is a mistake."""
    with pytest.raises(ValueError):
        AuthFailureLimiter(ManualClock(), **bad)
