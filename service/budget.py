"""Pipedrive's daily token budget as the sync spends it: how long a burst of webhook events
is gathered, and whether Pipedrive work waits for the budget to reset.

Every list call costs tokens against a company-wide daily budget, and an exhausted budget
answers 429 to every call until it resets (``reference/pipedrive-api.md`` section 5). The
figures come from the answers' ``x-daily-ratelimit-token-*`` headers, which the client
stores (``api_rate_limits``). While more than half the budget is left the window is the
configured one; below that it widens in inverse proportion to what is left, so a burst
costs fewer calls the lower the budget runs. Once a call finds the budget spent, Pipedrive
work pauses until the reset the API announced.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.db import ApiRateLimit, db_session

API = "pipedrive"
WIDEN_BELOW = 0.5  # share of the daily budget left under which the window widens
MAX_WINDOW_SECONDS = 300.0
# Figures older than this may belong to a budget that has reset since.
FIGURES_VALID_SECONDS = 86400
# When the API gives no usable reset time, Pipedrive work is retried after this long.
DEFAULT_PAUSE_SECONDS = 600.0
LIST_CALL_TOKENS = 10  # what one page of filter members costs (API v2 list)


@dataclass(frozen=True)
class BudgetState:
    """The budget as last seen, and what the sync does about it."""

    daily_limit: int | None
    daily_remaining: int | None
    observed_at: float | None
    paused_until: float | None
    coalesce_seconds: float


def widened_window(base: float, daily_limit: int | None, daily_remaining: int | None) -> float:
    """The coalesce window for a budget with ``daily_remaining`` of ``daily_limit`` left."""
    if not daily_limit or daily_limit <= 0 or daily_remaining is None:
        return base
    if daily_remaining < LIST_CALL_TOKENS:
        # Spent, or as good as: the next call's 429 tells when the budget resets, and the
        # pause lasts exactly that long. A wide window here would outlast the reset.
        return base
    share = daily_remaining / daily_limit
    if share >= WIDEN_BELOW:
        return base
    widened = base * WIDEN_BELOW / max(share, 1e-6)
    return max(base, min(widened, MAX_WINDOW_SECONDS))


@db_session
def budget_state(base_window: float, now: float) -> BudgetState:
    """The Pipedrive budget figures, the pause if one is in force, and the window."""
    row = ApiRateLimit.get(api=API)
    if row is None:
        return BudgetState(None, None, None, None, base_window)
    fresh = now - row.observed_at <= FIGURES_VALID_SECONDS
    limit = row.daily_limit if fresh else None
    remaining = row.daily_remaining if fresh else None
    paused = row.paused_until if row.paused_until is not None and row.paused_until > now else None
    return BudgetState(
        limit,
        remaining,
        row.observed_at,
        paused,
        widened_window(base_window, limit, remaining),
    )


def paused_until(now: float) -> float | None:
    """Until when Pipedrive work waits (the budget is spent), or None when it may go on."""
    return budget_state(0.0, now).paused_until


@db_session
def pause_pipedrive(now: float, retry_after: float | None) -> float:
    """Record that the budget is spent; Pipedrive work waits ``retry_after`` seconds (the
    API's announced reset). Returns the end of the pause."""
    wait = retry_after if retry_after is not None and retry_after > 0 else DEFAULT_PAUSE_SECONDS
    until = now + wait
    row = ApiRateLimit.get(api=API)
    if row is None:
        ApiRateLimit(api=API, observed_at=now, paused_until=until)
    else:
        row.paused_until = until
    return until
