"""Fixtures of the reliability suites: the integration suite's real processes, and the
change events the fake Pipedrive announces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.pipedrive.events import ChangeEvent
from sandbox.pipedrive.state import PipedriveState
from tests.fakes import RunningFake
from tests.integration.conftest import service, start_service

__all__ = ["published", "service", "start_service"]  # the last two: the integration fixtures


@pytest.fixture
def published(pipedrive_fake: RunningFake) -> Iterator[list[ChangeEvent]]:
    """Every change event the fake Pipedrive announces during the test, in order."""
    state: PipedriveState = pipedrive_fake.app.state.fake
    events: list[ChangeEvent] = []
    state.listeners.append(events.extend)
    yield events
    state.listeners.remove(events.extend)
