"""The huey tasks. Each takes ids, never entities, and is safe to run twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from huey import Huey

from service import sessions
from service.clock import Clock, SystemClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tasks:
    """The task wrappers registered on one huey instance; calling one enqueues it."""

    remove_expired_sessions: Any


def register_tasks(huey: Huey, clock: Clock | None = None) -> Tasks:
    """Register every task on ``huey`` under a stable name and return their wrappers."""
    clock = clock or SystemClock()

    @huey.task(name="remove_expired_sessions")  # type: ignore[untyped-decorator]
    def remove_expired_sessions() -> None:
        removed = sessions.delete_expired_sessions(clock.now())
        log.info("expired sessions removed", extra={"removed": removed})

    return Tasks(remove_expired_sessions=remove_expired_sessions)
