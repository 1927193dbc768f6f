"""Stop signals caught from the first line of a process and handed to the server later."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from service.shutdown import ShutdownRequests


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_before_registration_reaches_a_later_callback(restore_handlers: None) -> None:
    """A stop during start-up is not lost and does not kill the process."""
    shutdown = ShutdownRequests().install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert shutdown.requested and shutdown.received == [signal.SIGTERM]
    calls: list[str] = []
    shutdown.on_request(lambda: calls.append("stop"))
    assert calls == ["stop"]


def test_signals_after_registration_call_back_each_time(restore_handlers: None) -> None:
    """Both SIGINT and SIGTERM are handled."""
    shutdown = ShutdownRequests().install()
    calls: list[str] = []
    shutdown.on_request(lambda: calls.append("stop"))
    assert calls == [] and not shutdown.requested
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    assert calls == ["stop", "stop"]
    assert shutdown.received == [signal.SIGINT, signal.SIGTERM]
