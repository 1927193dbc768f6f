"""Fixed-window request counters: the rate limits both fakes enforce and report in headers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowState:
    """What one request saw of its window: whether it passed, and the header figures."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


class RateWindow:
    """At most ``limit`` requests per ``seconds`` per key; ``limit`` 0 means unlimited."""

    def __init__(
        self, limit: int, seconds: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self._now = now
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str = "") -> WindowState:
        """Count one request under ``key`` and say whether it is within the limit."""
        now = self._now()
        with self._lock:
            start, used = self._windows.get(key, (now, 0))
            if now - start >= self.seconds:
                start, used = now, 0
            reset = max(1, math.ceil(start + self.seconds - now))
            if self.limit and used >= self.limit:
                self._windows[key] = (start, used)
                return WindowState(False, self.limit, 0, reset)
            used += 1
            self._windows[key] = (start, used)
            limit = self.limit or 1_000_000
            return WindowState(True, limit, max(0, limit - used), reset)

    def reset(self) -> None:
        """Forget every window."""
        with self._lock:
            self._windows.clear()
