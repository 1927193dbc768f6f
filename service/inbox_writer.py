"""The web process's inbox writer: one thread that commits webhook deliveries in groups.

Each delivery must be durably committed before it is answered, and a synced commit costs
the same for one row as for a hundred. Deliveries that arrive while a commit is under way
wait in a queue and share the next one, so intake grows with concurrency instead of
queueing on SQLite's write lock (whose busy wait sleeps in growing steps rather than
waking when the lock frees). One connection is kept open for the thread's life: opening
one and setting its PRAGMAs costs more than the commit itself.

A request hands its delivery over and awaits a future that the writer settles once the
group's commit returned (or failed: then nothing of the group was written and each
request answers 503). After a commit that stored a pending delivery, ``after_commit`` (the
drain hint, a write to the queue) is called from a second thread, at most once a second,
so that neither the event loop nor the next commit waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from service import inbox
from service.webhooks import Delivery

log = logging.getLogger(__name__)

MAX_GROUP = 256  # deliveries per commit; a group of 256 bodies stays a few MB at most
# A burst needs one drain hint, not one per commit: the worker's own loop drains every
# second anyway, the hint only spares it the wait. Waking the hint thread costs the event
# loop a hand-over of the GIL, so the writer wakes it no more often than this.
HINT_EVERY_SECONDS = 1.0


class _Pending(NamedTuple):
    delivery: Delivery
    received_at: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[inbox.Outcome]


def _notify(
    group: list[_Pending], outcomes: list[inbox.Outcome | None], error: BaseException | None
) -> None:
    """Settle the group's futures, with one wake-up of each event loop they belong to."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, inbox.Outcome | None]]] = {}
    for pending, outcome in zip(group, outcomes, strict=True):
        by_loop.setdefault(pending.loop, []).append((pending, outcome))
    for loop, settled in by_loop.items():
        # A closed loop raises RuntimeError: nobody waits for these answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, settled, error)


def _settle(
    settled: list[tuple[_Pending, inbox.Outcome | None]], error: BaseException | None
) -> None:
    for pending, outcome in settled:
        if pending.future.done():  # the client went away and the request was cancelled
            continue
        if error is not None:
            pending.future.set_exception(error)
        else:
            assert outcome is not None
            pending.future.set_result(outcome)


class InboxWriter:
    """Commits deliveries to the inbox of the database at ``path``, in groups."""

    def __init__(self, path: Path, after_commit: Callable[[], None] | None = None) -> None:
        self.path = path
        self.after_commit = after_commit
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None
        self._hint_wanted = threading.Event()
        self._last_hint = -math.inf
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._hinter = threading.Thread(target=self._hint, name="inbox-hint", daemon=True)

    def start(self) -> None:
        """Start the writer thread (and the thread that passes on drain hints); an app
        whose lifespan runs again starts fresh threads."""
        if self._thread.is_alive():
            return
        self._stopping.clear()
        self._hint_wanted.clear()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._hinter = threading.Thread(target=self._hint, name="inbox-hint", daemon=True)
        self._thread.start()
        if self.after_commit is not None:
            self._hinter.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the threads and close the connection."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._stopping.set()
        self._hint_wanted.set()
        if self._hinter.is_alive():
            self._hinter.join(timeout)

    async def store(self, delivery: Delivery, received_at: int) -> inbox.Outcome:
        """Commit ``delivery``; the outcome once it is durable. Raises ``sqlite3.Error``
        when it could not be committed, ``RuntimeError`` when the writer is not running."""
        if not self._thread.is_alive():
            raise RuntimeError("the inbox writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[inbox.Outcome] = loop.create_future()
        self._queue.put(_Pending(delivery, received_at, loop, future))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            # No wait for company before committing: what arrived during the last commit
            # is the group. Measured, a 0.5 ms wait (PostgreSQL's commit_delay) made groups
            # larger but cost more in GIL hand-overs than it saved.
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True  # commit this group, then stop
                    break
                group.append(item)
            self._commit(group)
        self._reset_connection()

    def _commit(self, group: list[_Pending]) -> None:
        try:
            if self._connection is None:
                self._connection = inbox.ingest_connection(self.path)
            outcomes = inbox.store_many(
                self._connection, [(p.delivery, p.received_at) for p in group]
            )
        except Exception as exc:
            log.error("inbox commit failed: %s", type(exc).__name__, exc_info=True)
            self._reset_connection()
            _notify(group, [None] * len(group), exc)
            return
        _notify(group, list(outcomes), None)
        if "received" in outcomes:
            moment = time.monotonic()
            if moment - self._last_hint >= HINT_EVERY_SECONDS:
                self._last_hint = moment
                self._hint_wanted.set()

    def _hint(self) -> None:
        assert self.after_commit is not None
        while True:
            self._hint_wanted.wait()
            self._hint_wanted.clear()
            if self._stopping.is_set():
                return
            try:
                self.after_commit()
            except Exception:
                # The rows are committed; the worker's loop drains them without the hint.
                log.warning("could not enqueue the inbox drain", exc_info=True)

    def _reset_connection(self) -> None:
        """Drop the connection after a failure: the next group opens a fresh one."""
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
