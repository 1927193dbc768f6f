"""Brevo's two rate-limit buckets and the ``x-sib-ratelimit-*`` headers.

``/v3/contacts/*`` allows ``contacts_rate`` requests per 1 s window; every other endpoint
(``/v3/processes`` among them) ``processes_per_hour`` per hour window, the hour lasting
``3600 / time_scale`` seconds. Every API answer carries the limit, the remaining count and
the seconds until reset of the bucket the request fell in.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox.brevo.config import BrevoFakeConfig
from sandbox.windows import RateWindow, WindowState

CONTACTS_PREFIX = "/v3/contacts"
UNLIMITED = 1_000_000


def bucket_of(path: str) -> str:
    """``contacts`` or ``other``: the bucket a request path counts against."""
    if path == CONTACTS_PREFIX or path.startswith(CONTACTS_PREFIX + "/"):
        return "contacts"
    return "other"


def rate_headers(limit: int, remaining: int, reset_seconds: int) -> list[tuple[bytes, bytes]]:
    """The three ``x-sib-ratelimit-*`` headers, raw."""
    return [
        (b"x-sib-ratelimit-limit", str(limit).encode()),
        (b"x-sib-ratelimit-remaining", str(remaining).encode()),
        (b"x-sib-ratelimit-reset", str(reset_seconds).encode()),
    ]


class Limits:
    """The fake's buckets; ``configure`` rebuilds them (forgetting counts) from settings."""

    def __init__(self, config: BrevoFakeConfig, now: Callable[[], float] = time.monotonic):
        self._now = now
        self._lock = threading.Lock()
        self.configure(config)

    def configure(self, config: BrevoFakeConfig) -> None:
        """Apply the rate settings of ``config``; every window starts afresh."""
        with self._lock:
            hour = 3600.0 / config.time_scale
            self.windows = {
                "contacts": RateWindow(config.contacts_rate, 1.0, self._now),
                "other": RateWindow(config.processes_per_hour, hour, self._now),
            }
            self._other_start = 0.0
            self._other_used = 0

    def hit(self, path: str) -> WindowState:
        """Count a request to ``path`` in its bucket."""
        bucket = bucket_of(path)
        with self._lock:
            window = self.windows[bucket]
            state = window.hit()
            if bucket == "other" and state.allowed:
                used = state.limit - state.remaining
                if used == 1:
                    self._other_start = self._now()
                self._other_used = used
            return state

    def exhausted(self, path: str) -> list[tuple[bytes, bytes]]:
        """Headers for a 429 the fault plan injects (nothing counted)."""
        window = self.windows[bucket_of(path)]
        return rate_headers(window.limit or UNLIMITED, 0, max(1, math.ceil(window.seconds)))

    def processes_window(self) -> dict[str, Any]:
        """The "other" bucket now: its limit, calls used in the current window, seconds
        left in it."""
        with self._lock:
            window = self.windows["other"]
            left = self._other_start + window.seconds - self._now()
            used = self._other_used if left > 0 else 0
            return {
                "limit": window.limit,
                "used": used,
                "window_seconds": window.seconds,
                "reset_seconds": max(0.0, round(left, 3)) if used else 0.0,
            }
