"""Failed authentications per client address, in memory: a flood from one address is
refused before its credentials are compared.

Guards the webhook intake (reliability matrix S2): after ``max_failures`` failures within
``window_seconds`` from one address, that address is refused until the oldest of those
failures has left the window. Unlike the login throttle (``service.throttle``, in the
database, shared by every web process) this lives in one web process's memory: the
webhook's check must cost the authenticated path no more than a dict lookup.

The memory is bounded: at most ``max_clients`` addresses, each with at most
``max_failures`` timestamps. When it is full, addresses whose failures have all left the
window go first, then the one whose last failure is the oldest.

Used from the event loop only, so without a lock.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from service.clock import Clock

MAX_FAILURES = 20
WINDOW_SECONDS = 60
MAX_CLIENTS = 10_000


class AuthFailureLimiter:
    """Counts failed authentications per client address over a sliding window."""

    def __init__(
        self,
        clock: Clock,
        max_failures: int = MAX_FAILURES,
        window_seconds: int = WINDOW_SECONDS,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if max_failures < 1 or window_seconds < 1 or max_clients < 1:
            raise ValueError("max_failures, window_seconds and max_clients must be at least 1")
        self.clock = clock
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        # Address -> its latest failures (unix seconds, oldest first), the address whose
        # last failure is the oldest first.
        self._failures: OrderedDict[str, deque[int]] = OrderedDict()

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._failures)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it is not refused."""
        times = self._failures.get(client)
        if times is None:
            return None
        now = self.clock.now()
        if times[-1] <= now - self.window_seconds:
            del self._failures[client]
            return None
        if len(times) < self.max_failures:
            return None
        # Refused until the oldest of the last max_failures failures leaves the window.
        reopens = times[0] + self.window_seconds
        return reopens - now if reopens > now else None

    def record_failure(self, client: str) -> bool:
        """Remember a failed authentication of ``client``; True when it is the one that
        makes ``client`` refused."""
        now = self.clock.now()
        times = self._failures.get(client)
        if times is None:
            self._make_room(now)
            times = self._failures[client] = deque(maxlen=self.max_failures)
        else:
            self._failures.move_to_end(client)
        times.append(now)
        return len(times) == self.max_failures and times[0] > now - self.window_seconds

    def _make_room(self, now: int) -> None:
        """Forget addresses until one more fits."""
        cutoff = now - self.window_seconds
        while self._failures:
            oldest = next(iter(self._failures.values()))
            if oldest[-1] > cutoff and len(self._failures) < self.max_clients:
                return
            self._failures.popitem(last=False)
