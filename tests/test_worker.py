"""The worker process (workers/worker.py) and its periodic loop (workers/periodic.py)."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.clock import ManualClock
from service.config import Settings
from service.jobs import get_job
from service.schema import migrate
from tests.conftest import Started, json_lines, process_env, start_pbsync, wait_for
from tests.sync.conftest import (
    add_filter,
    delivery_body,
    object_event,
    person_event,
    store_delivery,
)
from workers.periodic import Duty, PeriodicLoop, claim_duty
from workers.tasks import Tasks
from workers.worker import DRAIN_EVERY_SECONDS, worker_duties

DUTY = "remove_expired_sessions"


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Send SIGTERM and return the exit status (fails the test after ``timeout`` seconds)."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def session_ids(path: Path) -> set[str]:
    """The ids in the session table, read through a fresh connection."""
    connection = sqlite3.connect(path, timeout=5)
    try:
        return {row[0] for row in connection.execute('SELECT id FROM "session"')}
    finally:
        connection.close()


@pytest.mark.integration
def test_expired_session_removed_by_the_periodic_loop_within_seconds(
    tmp_path: Path, started: Started
) -> None:
    """A running worker deletes an expired session within seconds, keeps a live one, and
    exits 0 on SIGTERM."""
    database = tmp_path / "app.db"
    env = process_env(tmp_path, SESSION_CLEANUP_SECONDS="1")
    assert env["DATABASE_URL"] == f"sqlite:///{database}"
    migrate(database)
    now = int(time.time())
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute('INSERT INTO "user" (id, password_hash) VALUES (?, NULL)', ("u1",))
        connection.executemany(
            'INSERT INTO "session" (id, user_id, expires_at) VALUES (?, ?, ?)',
            [("expired", "u1", now - 60), ("live", "u1", now + 30 * 24 * 3600)],
        )
    finally:
        connection.close()
    assert session_ids(database) == {"expired", "live"}

    worker = start_pbsync("worker", env, tmp_path / "worker.log")
    started.processes.append(worker)
    wait_for(lambda: "expired" not in session_ids(database), timeout=10)
    assert session_ids(database) == {"live"}
    assert worker.poll() is None, "the worker died while running"
    assert stop(worker) == 0


@pytest.mark.integration
def test_two_workers_run_the_duty_once_per_period(tmp_path: Path, started: Started) -> None:
    """Two workers on one database run a 2 s duty at most once per period between them."""
    env = process_env(tmp_path, SESSION_CLEANUP_SECONDS="2")
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    began = time.monotonic()
    for log in logs:
        started.processes.append(start_pbsync("worker", env, log))
    time.sleep(7)
    dead = [
        log
        for log, worker in zip(logs, started.processes, strict=True)
        if worker.poll() is not None
    ]
    assert not dead, "a worker died while running:\n" + "\n".join(
        log.read_text(errors="replace")[-3000:] for log in dead
    )
    assert [stop(worker) for worker in started.processes] == [0, 0]
    elapsed = time.monotonic() - began

    runs = sorted(
        datetime.fromisoformat(entry["ts"]).timestamp()
        for log in logs
        for entry in json_lines(log)
        if entry.get("message") == "periodic duty due" and entry.get("duty") == DUTY
    )
    assert len(runs) >= 2, runs
    # Claims are made on integer seconds at least ``every`` (2) apart, read once a second, so
    # two runs are always more than 1 s apart; a second run in the same period would not be.
    gaps = [later - earlier for earlier, later in zip(runs, runs[1:], strict=False)]
    assert min(gaps) > 0.9, gaps
    assert len(runs) <= elapsed / 2 + 2, (len(runs), elapsed)

    connection = sqlite3.connect(tmp_path / "app.db", timeout=5)
    try:
        rows = connection.execute(
            "SELECT name FROM periodic_duties WHERE name = ?", (DUTY,)
        ).fetchall()
    finally:
        connection.close()
    assert rows == [(DUTY,)]


def test_claim_duty_gives_each_period_to_one_holder(clean_db: Path) -> None:
    """The first claim wins, later claims in the same period lose, the next period is free."""
    assert claim_duty("d", 60, 1000, "a") is True
    assert claim_duty("d", 60, 1000, "b") is False
    assert claim_duty("d", 60, 1059, "b") is False
    assert claim_duty("d", 60, 1060, "b") is True


def test_periodic_loop_survives_a_failing_duty(clean_db: Path) -> None:
    """A duty that raises is not reported as run, and the other duty still runs."""
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    clock = ManualClock(start=1000)
    loop = PeriodicLoop(
        [Duty("broken", 60, broken), Duty("healthy", 60, lambda: ran.append("healthy"))],
        clock,
        "holder",
    )
    assert loop.tick() == ["healthy"]
    assert ran == ["healthy"]
    clock.advance(60)
    assert loop.tick() == ["healthy"]
    assert ran == ["healthy", "healthy"]


class FakeTasks:
    """Stands in for the huey task wrappers: records what the duties enqueue."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.refreshes = 0

    def tasks(self) -> Tasks:
        def refresh() -> None:
            self.refreshes += 1

        return Tasks(
            remove_expired_sessions=lambda: None,
            run_sync_job=self.jobs.append,
            refresh_filters=refresh,
            drain_inbox=lambda: None,
        )


def test_the_worker_loop_drains_the_inbox_every_second(
    clean_db: Path, settings: Settings, clock: ManualClock
) -> None:
    """The drain is a quiet duty of every second; a burst is routed once it has waited the
    coalesce window, and its filter's incremental job is enqueued (and a filter delivery
    asks for a refresh)."""
    add_filter(41, "Drained", "people", brevo_list_id=7)
    fake = FakeTasks()
    configured = replace(settings, sync_coalesce_seconds=3.0)
    loop = PeriodicLoop(
        [d for d in worker_duties(configured, fake.tasks(), clock) if d.name == "drain_inbox"],
        clock,
        "holder",
    )
    (duty,) = loop.duties
    assert (duty.every, duty.quiet) == (DRAIN_EVERY_SECONDS, True) and DRAIN_EVERY_SECONDS == 1
    at = datetime.fromtimestamp(clock.now() - 50, UTC)
    store_delivery(delivery_body(person_event(7, "ada@example.com", at=at)), clock.now())
    store_delivery(delivery_body(object_event("filter", 41, at=at)), clock.now())

    assert loop.tick() == ["drain_inbox"]
    assert loop.tick() == []  # once per second
    assert (fake.jobs, fake.refreshes) == ([], 0)  # the burst is still gathering
    clock.advance(2)
    assert loop.tick() == ["drain_inbox"]
    assert fake.jobs == []
    clock.advance(1)
    assert loop.tick() == ["drain_inbox"]

    (job_id,) = fake.jobs
    job = get_job(job_id)
    assert job is not None
    assert (job.filter_id, job.kind, job.trigger) == (41, "incremental", "webhook")
    assert fake.refreshes == 1
    clock.advance(1)
    assert loop.tick() == ["drain_inbox"]
    assert (len(fake.jobs), fake.refreshes) == (1, 1)


def test_a_quiet_duty_logs_its_runs_at_debug_only(
    clean_db: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    loop = PeriodicLoop(
        [Duty("loud", 60, lambda: None), Duty("hushed", 1, lambda: None, quiet=True)],
        clock,
        "holder",
    )
    with caplog.at_level(logging.DEBUG, logger="workers.periodic"):
        assert loop.tick() == ["loud", "hushed"]
    levels = {
        r.duty: r.levelno  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "periodic duty due"
    }
    assert levels == {"loud": logging.INFO, "hushed": logging.DEBUG}
