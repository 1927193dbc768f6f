"""The worker's own periodic loop: second granularity, each duty run once across workers.

huey's periodic tasks fire at most once a minute and on every consumer. This loop ticks
every second in every worker; a duty runs in the worker that atomically moves its
``next_run_at`` forward in the database, so two workers never run one duty twice in a period.
Each tick also records the worker's heartbeat (``worker_heartbeats``): its liveness on the
status page.
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
# A worker whose heartbeat is older than this is forgotten (the status page stops listing it).
FORGET_HEARTBEAT_SECONDS = 86400


@dataclass(frozen=True)
class Duty:
    """Something to do every ``every`` seconds, once across all workers."""

    name: str
    every: int
    run: Callable[[], None]
    quiet: bool = False  # log its runs at DEBUG only


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


@db_session
def record_heartbeat(holder: str, now: int) -> None:
    """Record that ``holder``'s loop ticked at ``now``; forget workers silent for a day."""
    forget_before = now - FORGET_HEARTBEAT_SECONDS  # noqa: F841 - bound by Pony's $name syntax
    db.execute(
        "INSERT INTO worker_heartbeats (holder, beat_at) VALUES ($holder, $now) "
        "ON CONFLICT (holder) DO UPDATE SET beat_at = MAX(beat_at, excluded.beat_at)"
    )
    db.execute("DELETE FROM worker_heartbeats WHERE beat_at < $forget_before")


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
        """Record this worker's heartbeat, then run every duty that is due now.

        Returns the names of the duties this worker ran.
        """
        self._beat()
        ran = []
        for duty in self.duties:
            try:
                if not claim_duty(duty.name, duty.every, self.clock.now(), self.holder):
                    continue
                # A duty due every second (the drain) would flood the log.
                level = logging.DEBUG if duty.quiet else logging.INFO
                log.log(
                    level, "periodic duty due", extra={"duty": duty.name, "holder": self.holder}
                )
                duty.run()
                ran.append(duty.name)
                # A duty may take a while (API calls): show the worker is still alive after it.
                self._beat()
            except Exception:
                # One failing duty (or a locked database) must not stop the others or the loop.
                log.exception("periodic duty failed", extra={"duty": duty.name})
        return ran

    def _beat(self) -> None:
        try:
            record_heartbeat(self.holder, self.clock.now())
        except Exception:
            # A locked database must not stop the duties or the loop; the next tick retries.
            log.exception("could not record the worker heartbeat", extra={"holder": self.holder})

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(TICK_SECONDS)
