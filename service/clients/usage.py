"""What the clients share across calls and processes: call counters, the last rate-limit
figures each API reported, and request pacing.

``UsageStore`` is the interface; ``MemoryUsage`` keeps it in one process (tools and tests),
``service.api_usage.DatabaseUsage`` keeps it in the database so every process sees it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateFigures:
    """Rate-limit figures read from one response's headers; None where the API sent none."""

    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None
    daily_limit: int | None = None
    daily_remaining: int | None = None

    def is_empty(self) -> bool:
        """True when the response carried no rate-limit header at all."""
        return self == RateFigures()


@dataclass(frozen=True)
class CallKey:
    """What a call counter counts: one API operation ending with one status (0: no answer)."""

    api: str
    method: str
    path: str
    status: int


class UsageStore(Protocol):
    """Counters, figures and pacing, shared by every client that uses the same store."""

    def record_call(self, key: CallKey, at: float) -> None:
        """Count one call."""

    def record_figures(self, api: str, figures: RateFigures, at: float) -> None:
        """Remember the latest rate-limit figures of ``api``."""

    def reserve(self, bucket: str, interval: float, now: float, burst: int = 0) -> float:
        """Take the next free slot of ``bucket``; return its time.

        Slots are ``interval`` apart on average; up to ``burst`` calls beyond the first may
        go at once after a quiet spell (the generic cell rate algorithm).
        """
        ...

    def hold(self, bucket: str, until: float) -> None:
        """Let no call of ``bucket`` go before ``until`` (after a 429 or an empty window)."""


class MemoryUsage:
    """A ``UsageStore`` for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[CallKey] = Counter()
        self.figures: dict[str, RateFigures] = {}
        self._next_at: dict[str, float] = {}

    def record_call(self, key: CallKey, at: float) -> None:
        """Count one call."""
        with self._lock:
            self.calls[key] += 1

    def record_figures(self, api: str, figures: RateFigures, at: float) -> None:
        """Remember the latest rate-limit figures of ``api``."""
        with self._lock:
            self.figures[api] = figures

    def reserve(self, bucket: str, interval: float, now: float, burst: int = 0) -> float:
        """Take the next free slot of ``bucket``; return its time."""
        with self._lock:
            due = self._next_at.get(bucket, now)
            self._next_at[bucket] = max(due, now) + interval
            return max(now, due - burst * interval)

    def hold(self, bucket: str, until: float) -> None:
        """Let no call of ``bucket`` go before ``until``."""
        with self._lock:
            self._next_at[bucket] = max(self._next_at.get(bucket, until), until)

    def count(self, api: str, method: str, path: str) -> int:
        """Calls made to one operation, whatever their status."""
        with self._lock:
            return sum(
                n for k, n in self.calls.items() if (k.api, k.method, k.path) == (api, method, path)
            )


class Pacer:
    """Spaces the calls of one bucket ``interval`` seconds apart on average, across every
    process that shares the store; ``burst`` more may go at once after a quiet spell."""

    def __init__(
        self,
        store: UsageStore,
        bucket: str,
        interval: float,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        burst: int = 0,
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.interval = interval
        self.burst = burst
        self._now = now
        self._sleep = sleep

    def wait(self) -> None:
        """Block until this call's slot comes."""
        now = self._now()
        slot = self.store.reserve(self.bucket, self.interval, now, self.burst)
        if slot > now:
            self._sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """Keep every call of the bucket back for ``seconds`` from now."""
        # Past the burst allowance too, so not even a burst goes before the time is up.
        self.store.hold(self.bucket, self._now() + seconds + self.burst * self.interval)
