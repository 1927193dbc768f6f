"""Token costs, the daily token budget, and the rate-limit headers of every API answer."""

from __future__ import annotations

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
    midnight or when told."""

    def __init__(self, budget: int, now: Callable[[], datetime] = _utc_now) -> None:
        self._lock = threading.Lock()
        self._now = now
        self.budget = budget
        self.used = 0
        self.calls: Counter[str] = Counter()
        self._day = now().date()

    def _roll(self) -> None:
        today = self._now().date()
        if today != self._day:
            self._day, self.used = today, 0

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
        """Seconds until the budget refills (UTC midnight)."""
        now = self._now()
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return max(1, int((midnight - now).total_seconds()))

    def reset(self, counts: bool = False) -> None:
        """Refill the budget; with ``counts`` forget the call counts too."""
        with self._lock:
            self.used = 0
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
