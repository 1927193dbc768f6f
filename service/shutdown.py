"""Stop requests that arrive before a server has installed its own signal handlers.

uvicorn and the huey consumer install their SIGINT/SIGTERM handlers only once they are
running; a signal during start-up would otherwise kill the process with the default
action (or be lost). ``ShutdownRequests`` is installed first thing, remembers such a
signal, and passes it on to whatever registers with ``on_request``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownRequests:
    """Remembers SIGINT and SIGTERM and calls the registered callbacks on each."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def install(self) -> ShutdownRequests:
        """Take over SIGINT and SIGTERM (main thread only) and return self.

        ``pbsync serve`` starts its children with these signals blocked (see
        ``stop_signals_blocked``); unblocking them here delivers one that
        arrived while the interpreter was starting, now that there is a handler for it.
        """
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return bool(self.received)

    def on_request(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every stop signal, and now if one has already arrived."""
        with self._lock:
            self._callbacks.append(callback)
            already = self.requested
        if already:
            callback()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            self.received.append(signum)
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread for the duration of the ``with`` block.

    A child process started inside inherits the blocked mask through exec, so a stop sent
    to it before its ``ShutdownRequests.install()`` waits instead of killing it.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
