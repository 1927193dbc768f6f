"""Token costs, the daily token budget, and the rate-limit headers of every API answer."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sandbox.windows import WindowState

# Each operation's x-token-cost in the official specs (a test checks them against it).
TOKEN_COSTS: dict[tuple[str, str], int] = {
    ("GET", "/v1/filters"): 20,
    ("GET", "/v1/filters/{id}"): 2,
    ("GET", "/v1/webhooks"): 10,
    ("POST", "/v1/webhooks"): 10,
    ("DELETE", "/v1/webhooks/{id}"): 6,
    ("GET", "/api/v2/persons"): 10,
    ("GET", "/api/v2/persons/{id}"): 1,
    ("GET", "/api/v2/deals"): 10,
    ("GET", "/api/v2/deals/{id}"): 1,
}
WINDOW_SECONDS = 2.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TokenBudget:
    """The company's daily token budget and per-operation call counts; resets at UTC
    midnight, or when told, or (with ``set_period``) every so many seconds."""

    def __init__(self, budget: int, now: Callable[[], datetime] = _utc_now) -> None:
        self._lock = threading.Lock()
        self._now = now
        self.budget = budget
        self.used = 0
        self.calls: Counter[str] = Counter()
        self._day = now().date()
        # A short "day" for tests: its length in seconds and when the current one began.
        self._period: float | None = None
        self._period_start = now()

    def _roll(self) -> datetime:
        # Refill when the day (or the short period) the budget counts has ended; the lock
        # is held. Returns the moment it checked, for the caller's own arithmetic.
        now = self._now()
        if self._period is None:
            if now.date() != self._day:
                self._day, self.used = now.date(), 0
            return now
        elapsed = (now - self._period_start).total_seconds()
        if elapsed >= self._period:
            ended = math.floor(elapsed / self._period)
            self._period_start += timedelta(seconds=ended * self._period)
            self.used = 0
        return now

    def set_period(self, seconds: float | None) -> None:
        """Make the budget's day ``seconds`` long, starting now (it refills at the end of
        each); None: back to days ending at UTC midnight. What is used so far stays used."""
        if seconds is not None and not seconds > 0:
            raise ValueError("the period must be a positive number of seconds")
        with self._lock:
            now = self._now()
            self._period = None if seconds is None else float(seconds)
            self._period_start = now
            self._day = now.date()

    @property
    def period(self) -> float | None:
        """The short day's length in seconds, or None when the budget resets at midnight."""
        with self._lock:
            return self._period

    def spend(self, cost: int, operation: str) -> bool:
        """Charge ``cost`` for one call; False (nothing charged) when the rest of today's
        budget does not cover it."""
        with self._lock:
            self._roll()
            if self.used + cost > self.budget:
                return False
            self.used += cost
            self.calls[operation] += 1
            return True

    def remaining(self) -> int:
        """Tokens left today."""
        with self._lock:
            self._roll()
            return max(0, self.budget - self.used)

    def seconds_to_reset(self) -> int:
        """Whole seconds (rounded up, at least 1) until the budget refills: the end of the
        short period when one is set, else UTC midnight."""
        with self._lock:
            now = self._roll()
            if self._period is not None:
                end = self._period_start + timedelta(seconds=self._period)
            else:
                end = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return max(1, math.ceil((end - now).total_seconds()))

    def reset(self, counts: bool = False) -> None:
        """Refill the budget (a short period starts again now); with ``counts`` forget the
        call counts too."""
        with self._lock:
            self.used = 0
            self._period_start = self._now()
            if counts:
                self.calls.clear()

    def to_json(self) -> dict[str, object]:
        """The body of ``GET /_sandbox/usage``."""
        with self._lock:
            self._roll()
            return {
                "tokens_used": self.used,
                "daily_token_budget": self.budget,
                "calls": dict(self.calls),
            }


def rate_headers(window: WindowState, budget: TokenBudget) -> dict[str, str]:
    """The burst-window and daily-budget headers every API answer carries."""
    return {
        "x-ratelimit-limit": str(window.limit),
        "x-ratelimit-remaining": str(window.remaining),
        "x-ratelimit-reset": str(window.reset_seconds),
        "x-daily-ratelimit-token-limit": str(budget.budget),
        "x-daily-ratelimit-token-remaining": str(budget.remaining()),
    }
