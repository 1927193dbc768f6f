"""Claiming a job row, keeping it alive, and finishing it, all guarded by the claim token.

The huey message carries only the job id and may be delivered twice, or never (huey
deletes a message before running it). The row decides: a task claims it with a fresh
token, every later write names that token, and a sweeper that declared the worker dead
clears the row's status so the dead worker's late writes match nothing.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from service.db import SyncJob, db, db_session

log = logging.getLogger(__name__)


# The note of a job that waits, unclaimed, for Pipedrive's budget or for a refused
# credential to be fixed (``release_job``, ``note_waiting``) starts so.
WAITING_PREFIX = "Waiting: "
# How the error of a job that raised an unexpected exception (a bug, not an API) begins.
CRASHED_PREFIX = "internal error ("


class ClaimLost(Exception):
    """The job is no longer this worker's: it was declared dead, or it finished elsewhere."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds, with what the engine needs of its filter."""

    id: int
    token: str
    kind: str
    trigger: str
    forced: bool
    filter_id: int
    filter_name: str
    filter_type: str | None
    brevo_list_id: int | None
    filter_deleted: bool


@dataclass
class Totals:
    """The counters a job shows; added to the row as confirmed batches land."""

    fetched: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    skipped: int = 0


def new_token() -> str:
    """A random claim token."""
    return secrets.token_hex(16)


@db_session
def claim_job(job_id: int, token: str, now: int) -> ClaimedJob | None:
    """Take an unclaimed ``processing`` job; None when it is gone, done or someone else's."""
    # A job given back while Pipedrive's budget was spent no longer waits once claimed.
    cursor = db.execute(
        "UPDATE sync_jobs SET claimed_at = $now, claim_token = $token, heartbeat_at = $now, "
        "note = CASE WHEN note LIKE $waiting THEN NULL ELSE note END "
        "WHERE id = $job_id AND status = 'processing' AND claim_token IS NULL",
        {"now": now, "token": token, "job_id": job_id, "waiting": WAITING_PREFIX + "%"},
    )
    if cursor.rowcount != 1:
        return None
    job = SyncJob.get(id=job_id)
    row = job.filter
    return ClaimedJob(
        id=job.id,
        token=token,
        kind=job.kind,
        trigger=job.trigger,
        forced=bool(job.forced),
        filter_id=row.id,
        filter_name=row.name,
        filter_type=row.type,
        brevo_list_id=row.brevo_list_id,
        filter_deleted=row.deleted_at is not None,
    )


def check_claim(job_id: int, token: str) -> None:
    """Raise ``ClaimLost`` unless the job is still ``processing`` under ``token``.

    Call it inside the ``db_session`` that writes, so the check and the write commit together.
    """
    found = db.select(
        "id FROM sync_jobs WHERE id = $job_id AND claim_token = $token AND status = 'processing'"
    )
    if not found:
        raise ClaimLost(f"job {job_id} is no longer held by this worker")


def add_totals(job_id: int, token: str, totals: Totals) -> None:
    """Add ``totals`` to the job's counters (inside the caller's ``db_session``)."""
    fetched, added, updated = totals.fetched, totals.added, totals.updated  # noqa: F841
    removed, skipped = totals.removed, totals.skipped  # noqa: F841 - bound by Pony's $name
    cursor = db.execute(
        "UPDATE sync_jobs SET total_fetched = total_fetched + $fetched, "
        "total_added = total_added + $added, total_updated = total_updated + $updated, "
        "total_removed = total_removed + $removed, total_skipped = total_skipped + $skipped "
        "WHERE id = $job_id AND claim_token = $token AND status = 'processing'"
    )
    if cursor.rowcount != 1:
        raise ClaimLost(f"job {job_id} is no longer held by this worker")


@db_session
def record_totals(job_id: int, token: str, totals: Totals) -> None:
    """Add ``totals`` to the job's counters in a transaction of their own."""
    add_totals(job_id, token, totals)


@db_session
def heartbeat(job_id: int, token: str, now: int) -> bool:
    """Say the job is alive; False when it is no longer this worker's."""
    cursor = db.execute(
        "UPDATE sync_jobs SET heartbeat_at = $now "
        "WHERE id = $job_id AND claim_token = $token AND status = 'processing'"
    )
    return bool(cursor.rowcount == 1)


@db_session
def set_note(job_id: int, token: str, note: str) -> None:
    """Record what the job noticed (appended to any earlier note)."""
    check_claim(job_id, token)
    job = SyncJob.get(id=job_id)
    job.note = f"{job.note} {note}" if job.note else note


@db_session
def finish_job(job_id: int, token: str, now: int) -> None:
    """Mark the job ``completed`` and drop what it staged."""
    check_claim(job_id, token)
    db.execute("DELETE FROM sync_members WHERE job_id = $job_id")
    db.execute(
        "UPDATE sync_jobs SET status = 'completed', completed_at = $now, error_message = NULL "
        "WHERE id = $job_id"
    )


@db_session
def fail_job(job_id: int, token: str, now: int, message: str) -> bool:
    """Mark the job ``failed`` with ``message``; False when it was no longer ours."""
    cursor = db.execute(
        "UPDATE sync_jobs SET status = 'failed', completed_at = $now, error_message = $message "
        "WHERE id = $job_id AND claim_token = $token AND status = 'processing'"
    )
    if cursor.rowcount != 1:
        return False
    db.execute("DELETE FROM sync_members WHERE job_id = $job_id")
    return True


@db_session
def release_job(job_id: int, token: str, now: int, note: str) -> bool:
    """Give the job back unclaimed, its stage dropped, with ``note`` saying why: it runs
    again later (the sweeper enqueues it once the stale window passed). False when it was
    no longer ours."""
    cursor = db.execute(
        "UPDATE sync_jobs SET claimed_at = NULL, claim_token = NULL, heartbeat_at = $now, "
        "note = $note WHERE id = $job_id AND claim_token = $token AND status = 'processing'"
    )
    if cursor.rowcount != 1:
        return False
    db.execute("DELETE FROM sync_members WHERE job_id = $job_id")
    return True


@db_session
def note_waiting(job_id: int, note: str) -> bool:
    """Say why an unclaimed job is not run yet (``note`` starts with ``WAITING_PREFIX``);
    False when the job is claimed, finished or gone, or already says so."""
    cursor = db.execute(
        "UPDATE sync_jobs SET note = $note WHERE id = $job_id AND status = 'processing' "
        "AND claim_token IS NULL AND note IS NOT $note"
    )
    return bool(cursor.rowcount == 1)


class Heartbeat:
    """A thread that beats for one job every ``every`` seconds until stopped.

    It runs beside the job's HTTP calls, so a job waiting on a slow API is not taken for
    dead. When a beat finds the job gone, ``lost`` is set and the engine stops at its
    next check.
    """

    def __init__(self, job_id: int, token: str, now: Callable[[], int], every: float) -> None:
        self.job_id = job_id
        self.token = token
        self.now = now
        self.every = every
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not heartbeat(self.job_id, self.token, self.now()):
                    log.warning("job no longer ours", extra={"job_id": self.job_id})
                    self.lost.set()
                    return
            except Exception:
                # A locked or briefly unavailable database must not end the job: beat again.
                log.exception("heartbeat failed", extra={"job_id": self.job_id})

    def check(self) -> None:
        """Raise ``ClaimLost`` when a beat found the job gone."""
        if self.lost.is_set():
            raise ClaimLost(f"job {self.job_id} is no longer held by this worker")
