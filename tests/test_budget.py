"""service/budget.py: the coalesce window as Pipedrive's daily token budget runs low, and
the pause of Pipedrive work once it is spent."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.api_usage import DatabaseUsage
from service.budget import (
    DEFAULT_PAUSE_SECONDS,
    FIGURES_VALID_SECONDS,
    LIST_CALL_TOKENS,
    MAX_WINDOW_SECONDS,
    BudgetState,
    budget_state,
    pause_pipedrive,
    paused_until,
    widened_window,
)
from service.clients.usage import RateFigures

NOW = 1_900_000_000
BASE = 2.0


@pytest.mark.parametrize(
    ("limit", "remaining", "expected"),
    [
        (1000, 1000, BASE),
        (1000, 600, BASE),
        (1000, 500, BASE),  # exactly half left: not widened yet
        (1000, 250, 2 * BASE),  # a quarter left: twice the window
        (1000, 125, 4 * BASE),
        (1000, 100, 5 * BASE),
        (1000, LIST_CALL_TOKENS, 1000 / LIST_CALL_TOKENS / 2 * BASE),
        (100_000, LIST_CALL_TOKENS, MAX_WINDOW_SECONDS),  # 5000 x the base: capped
        # Less than one list call left is a spent budget: the pause, not the window, waits.
        (1000, LIST_CALL_TOKENS - 1, BASE),
        (1000, 0, BASE),
        (1000, -20, BASE),
        (1000, 5000, BASE),
    ],
)
def test_the_window_widens_in_inverse_proportion_below_half(
    limit: int, remaining: int, expected: float
) -> None:
    assert widened_window(BASE, limit, remaining) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("limit", "remaining"), [(None, None), (None, 10), (1000, None), (0, 0), (-5, 0)]
)
def test_without_usable_figures_the_window_is_the_configured_one(
    limit: int | None, remaining: int | None
) -> None:
    assert widened_window(BASE, limit, remaining) == BASE


def test_a_window_configured_beyond_the_cap_is_never_narrowed() -> None:
    base = MAX_WINDOW_SECONDS + 100
    assert widened_window(base, 1000, 10) == base


def record(
    daily_limit: int | None, daily_remaining: int | None, at: float, api: str = "pipedrive"
) -> None:
    """Figures as the client records them from an answer's headers."""
    DatabaseUsage().record_figures(api, RateFigures(80, 70, 2.0, daily_limit, daily_remaining), at)


def test_budget_state_without_figures_is_the_configured_window(clean_db: Path) -> None:
    assert budget_state(BASE, NOW) == BudgetState(None, None, None, None, BASE)


def test_budget_state_widens_from_the_recorded_figures(clean_db: Path) -> None:
    record(30000, 7500, NOW - 10.5)
    assert budget_state(BASE, NOW) == BudgetState(30000, 7500, NOW - 10.5, None, 2 * BASE)
    # Brevo's figures (it has no daily budget) are not Pipedrive's.
    record(30000, 30000, NOW - 1, api="brevo")
    assert budget_state(BASE, NOW).coalesce_seconds == 2 * BASE


def test_figures_older_than_a_day_are_ignored(clean_db: Path) -> None:
    observed = NOW - FIGURES_VALID_SECONDS
    record(30000, 3000, observed)
    assert budget_state(BASE, NOW).coalesce_seconds == pytest.approx(5 * BASE)  # a day: still fresh
    stale = budget_state(BASE, NOW + 1)
    assert stale == BudgetState(None, None, observed, None, BASE)


def test_a_pause_lasts_until_the_announced_reset(clean_db: Path) -> None:
    assert paused_until(NOW) is None
    assert pause_pipedrive(NOW, 120.0) == NOW + 120
    assert paused_until(NOW) == NOW + 120
    assert paused_until(NOW + 119) == NOW + 120
    assert paused_until(NOW + 120) is None  # the reset moment: work may go on
    assert paused_until(NOW + 500) is None
    state = budget_state(BASE, NOW + 60)
    assert state.paused_until == NOW + 120
    assert state.coalesce_seconds == BASE  # a pause with no figures does not widen


@pytest.mark.parametrize("retry_after", [None, 0.0, -30.0])
def test_without_a_usable_reset_time_the_pause_has_the_default_length(
    clean_db: Path, retry_after: float | None
) -> None:
    assert pause_pipedrive(NOW, retry_after) == NOW + DEFAULT_PAUSE_SECONDS
    assert paused_until(NOW + DEFAULT_PAUSE_SECONDS - 1) == NOW + DEFAULT_PAUSE_SECONDS


def test_a_pause_keeps_the_figures_and_new_figures_keep_the_pause(clean_db: Path) -> None:
    record(30000, 0, NOW - 1)
    until = pause_pipedrive(NOW, 3600)
    state = budget_state(BASE, NOW + 1)
    assert (state.daily_limit, state.daily_remaining, state.paused_until) == (30000, 0, until)
    assert state.coalesce_seconds == BASE  # spent: the pause waits, not the window
    # A later answer's figures (e.g. another process's call) leave the pause in force.
    record(30000, 0, NOW + 5)
    assert paused_until(NOW + 10) == until
