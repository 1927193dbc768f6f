"""The worker's own periodic loop: second granularity, each duty run once across workers.

huey's periodic tasks fire at most once a minute and on every consumer. This loop ticks
every second in every worker; a duty runs in the worker that atomically moves its
``next_run_at`` forward in the database, so two workers never run one duty twice in a period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.clock import Clock
from service.db import db, db_session

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Duty:
    """Something to do every ``every`` seconds, once across all workers."""

    name: str
    every: int
    run: Callable[[], None]


@db_session
def claim_duty(name: str, every: int, now: int, holder: str) -> bool:
    """Take the duty's run for this period if it is due; True means the caller must run it."""
    db.execute("INSERT OR IGNORE INTO periodic_duties (name, next_run_at) VALUES ($name, $now)")
    next_run_at = now + every  # noqa: F841 - bound into the SQL below by Pony's $name syntax
    cursor = db.execute(
        "UPDATE periodic_duties SET next_run_at = $next_run_at, last_run_at = $now, "
        "last_run_by = $holder WHERE name = $name AND next_run_at <= $now"
    )
    return bool(cursor.rowcount == 1)


class PeriodicLoop:
    """A thread that runs due duties every second until stopped."""

    def __init__(self, duties: Sequence[Duty], clock: Clock, holder: str) -> None:
        self.duties = list(duties)
        self.clock = clock
        self.holder = holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="periodic-loop", daemon=True)

    def start(self) -> None:
        """Start ticking in a background thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking and wait for the current tick to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def tick(self) -> list[str]:
        """Run every duty that is due now; return the names of those this worker ran."""
        ran = []
        for duty in self.duties:
            try:
                if not claim_duty(duty.name, duty.every, self.clock.now(), self.holder):
                    continue
                log.info("periodic duty due", extra={"duty": duty.name, "holder": self.holder})
                duty.run()
                ran.append(duty.name)
            except Exception:
                # One failing duty (or a locked database) must not stop the others or the loop.
                log.exception("periodic duty failed", extra={"duty": duty.name})
        return ran

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(TICK_SECONDS)
