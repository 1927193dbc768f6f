"""service/status.py: the figures of GET /api/status, and the heartbeats the worker loop records."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from service import status
from service.api_usage import DatabaseUsage
from service.auth_pause import Credential, record_refusal
from service.budget import pause_pipedrive
from service.clients.errors import ApiAuthError
from service.clients.usage import CallKey, RateFigures
from service.clock import ManualClock, to_iso
from workers.periodic import FORGET_HEARTBEAT_SECONDS, Duty, PeriodicLoop, record_heartbeat
from workers.queue import build_huey

NOW = 1_900_000_000


def insert_inbox(path: Path, rows: list[tuple[str, str, int]]) -> None:
    """Inbox rows of (event_key, status, received_at)."""
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO inbox (event_key, version, object, action, entity_id, occurred_at, "
            "received_at, status, payload) VALUES (?, '2', 'person', 'change', 7, ?, ?, ?, '{}')",
            [(key, received_at - 5, received_at, state) for key, state, received_at in rows],
        )
    connection.close()


def insert_jobs(path: Path, jobs: list[tuple[int, int, str, int]]) -> None:
    """Filters and their jobs: (job id, filter id, status, created_at)."""
    with sqlite3.connect(path) as connection:
        for _, filter_id, _, _ in jobs:
            connection.execute(
                "INSERT OR IGNORE INTO filters (id, name, type) VALUES (?, 'f', 'people')",
                (filter_id,),
            )
        connection.executemany(
            "INSERT INTO sync_jobs (id, filter_id, status, created_at) VALUES (?, ?, ?, ?)", jobs
        )
    connection.close()


def heartbeat_holders(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT holder FROM worker_heartbeats ORDER BY holder").fetchall()
    connection.close()
    return [row[0] for row in rows]


def test_an_empty_database_gives_zeros_and_nulls(clean_db: Path, tmp_path: Path) -> None:
    body = status.collect(f"sqlite:///{tmp_path / 'queue.db'}", NOW, 1.5)
    assert body == {
        "checked_at": to_iso(NOW),
        "inbox": {
            "pending": 0,
            "ignored": 0,
            "processed": 0,
            "oldest_pending_age_seconds": None,
            "last_webhook_at": None,
        },
        "sync": {
            "changes_waiting": 0,
            "configured_coalesce_seconds": 1.5,
            "coalesce_seconds": 1.5,
            "pipedrive_paused_until": None,
        },
        "queue": {"depth": 0, "error": None},
        "jobs": {
            "processing": 0,
            "oldest_processing_job_id": None,
            "oldest_processing_age_seconds": None,
        },
        "workers": [],
        "apis": {
            api: {
                "calls_last_hour": 0,
                "calls_by_status": {},
                "calls_counted_since": to_iso((NOW - 3600) // 3600 * 3600),
                "rate_limit": None,
                "auth_pause": None,
            }
            for api in ("pipedrive", "brevo")
        },
    }
    # Reading the status of a queue that was never used does not create its file.
    assert not (tmp_path / "queue.db").exists()


def test_inbox_counts_oldest_pending_age_and_last_webhook(clean_db: Path) -> None:
    clock = ManualClock(start=NOW)
    insert_inbox(
        clean_db,
        [
            ("p1", "pending", NOW - 300),
            ("p2", "pending", NOW - 90),
            ("p3", "pending", NOW - 10),
            ("i1", "ignored", NOW - 1000),
            ("i2", "ignored", NOW - 2),  # the latest delivery is an ignored one
            ("d1", "processed", NOW - 5000),
            ("d2", "processed", NOW - 4000),
            ("d3", "processed", NOW - 3000),
            ("d4", "processed", NOW - 400),
        ],
    )
    assert status.inbox_status(clock.now()) == {
        "pending": 3,
        "ignored": 2,
        "processed": 4,
        "oldest_pending_age_seconds": 300,
        "last_webhook_at": to_iso(NOW - 2),
    }
    clock.advance(60)
    assert status.inbox_status(clock.now())["oldest_pending_age_seconds"] == 360


def test_no_pending_delivery_has_no_age_but_a_last_webhook(clean_db: Path) -> None:
    insert_inbox(clean_db, [("d1", "processed", NOW - 50), ("i1", "ignored", NOW - 70)])
    inbox = status.inbox_status(NOW)
    assert inbox["pending"] == 0
    assert inbox["oldest_pending_age_seconds"] is None
    assert inbox["last_webhook_at"] == "2030-03-17T17:45:50Z"


def test_processing_jobs_are_counted_with_the_oldest_age(clean_db: Path) -> None:
    insert_jobs(
        clean_db,
        [
            (1, 1, "completed", NOW - 9000),
            (2, 1, "processing", NOW - 120),
            (3, 2, "processing", NOW - 45),
            (4, 3, "failed", NOW - 8000),
        ],
    )
    assert status.jobs_status(NOW) == {
        "processing": 2,
        "oldest_processing_job_id": 2,
        "oldest_processing_age_seconds": 120,
    }


def test_a_tick_of_the_periodic_loop_records_a_live_heartbeat(clean_db: Path) -> None:
    clock = ManualClock(start=NOW)
    PeriodicLoop([], clock, "host-a:11").tick()
    assert status.workers_status(clock.now()) == [
        {
            "holder": "host-a:11",
            "last_heartbeat_at": to_iso(NOW),
            "heartbeat_age_seconds": 0,
            "alive": True,
        }
    ]
    clock.advance(status.WORKER_ALIVE_SECONDS)
    assert status.workers_status(clock.now())[0]["alive"] is True


def test_a_stale_heartbeat_is_not_alive(clean_db: Path) -> None:
    clock = ManualClock(start=NOW - 600)
    PeriodicLoop([], clock, "host-a:11").tick()  # a worker that stopped 10 minutes ago
    clock.set(NOW - 16)
    PeriodicLoop([], clock, "host-b:22").tick()  # one silent for just over 15 s
    clock.set(NOW)
    PeriodicLoop([], clock, "host-c:33").tick()  # a live one
    workers = status.workers_status(NOW)
    assert [(w["holder"], w["heartbeat_age_seconds"], w["alive"]) for w in workers] == [
        ("host-c:33", 0, True),
        ("host-b:22", 16, False),
        ("host-a:11", 600, False),
    ]


def test_each_tick_moves_the_heartbeat_on(clean_db: Path) -> None:
    clock = ManualClock(start=NOW)
    loop = PeriodicLoop([], clock, "w:1")
    loop.tick()
    clock.advance(30)
    assert status.workers_status(clock.now())[0]["alive"] is False
    loop.tick()
    assert status.workers_status(clock.now())[0] == {
        "holder": "w:1",
        "last_heartbeat_at": to_iso(NOW + 30),
        "heartbeat_age_seconds": 0,
        "alive": True,
    }


def test_a_long_duty_is_followed_by_a_heartbeat(clean_db: Path) -> None:
    clock = ManualClock(start=NOW)

    def slow_duty() -> None:
        clock.advance(40)  # a duty that took 40 s, e.g. waiting on a rate limit

    PeriodicLoop([Duty("slow", 3600, slow_duty)], clock, "w:2").tick()
    assert status.workers_status(clock.now())[0]["last_heartbeat_at"] == to_iso(NOW + 40)


def test_workers_silent_for_a_day_are_forgotten(clean_db: Path) -> None:
    record_heartbeat("old:1", NOW - FORGET_HEARTBEAT_SECONDS - 1)
    record_heartbeat("recent:2", NOW - FORGET_HEARTBEAT_SECONDS)
    # Not listed even before a worker forgets it...
    assert [w["holder"] for w in status.workers_status(NOW)] == ["recent:2"]
    # ...and removed by the next heartbeat of any worker.
    record_heartbeat("new:3", NOW)
    assert heartbeat_holders(clean_db) == ["new:3", "recent:2"]


def test_an_older_heartbeat_never_moves_one_back(clean_db: Path) -> None:
    record_heartbeat("w:1", NOW)
    record_heartbeat("w:1", NOW - 30)
    assert status.workers_status(NOW)[0]["last_heartbeat_at"] == to_iso(NOW)


def test_api_calls_of_the_last_hour_and_the_last_rate_figures(clean_db: Path) -> None:
    usage = DatabaseUsage()
    persons = CallKey("pipedrive", "GET", "/api/v2/persons", 200)
    usage.record_call(persons, NOW - 7300)  # two hours ago: not counted
    usage.record_call(CallKey("pipedrive", "GET", "/api/v2/persons", 429), NOW - 7300)
    usage.record_call(persons, NOW - 1800)
    usage.record_call(persons, NOW - 5)
    usage.record_call(CallKey("pipedrive", "GET", "/api/v2/deals", 200), NOW - 5)
    usage.record_call(CallKey("pipedrive", "GET", "/api/v2/deals", 429), NOW - 4)
    usage.record_call(CallKey("brevo", "POST", "/contacts/import", 0), NOW - 3)
    usage.record_figures("pipedrive", RateFigures(80, 75, 2.0, 30000, 29000), NOW - 100.7)
    usage.record_figures("pipedrive", RateFigures(80, 71, 1.5, 30000, 28996), NOW - 4.2)

    apis = status.apis_status(NOW)
    assert apis["pipedrive"] == {
        "calls_last_hour": 4,
        "calls_by_status": {"200": 3, "429": 1},
        "calls_counted_since": to_iso((NOW - 3600) // 3600 * 3600),
        "rate_limit": {
            "limit": 80,
            "remaining": 71,
            "reset_seconds": 1.5,
            "observed_at": to_iso(NOW - 5),
            "daily_limit": 30000,
            "daily_remaining": 28996,
        },
        "auth_pause": None,
    }
    assert apis["brevo"]["calls_last_hour"] == 1
    assert apis["brevo"]["calls_by_status"] == {"0": 1}
    assert apis["brevo"]["rate_limit"] is None

    usage.record_figures("brevo", RateFigures(10, 9, None), NOW - 1)
    # Brevo has no daily token budget: the figures carry no daily fields.
    assert status.apis_status(NOW)["brevo"]["rate_limit"] == {
        "limit": 10,
        "remaining": 9,
        "reset_seconds": None,
        "observed_at": to_iso(NOW - 1),
    }
    # Two hours on, every call counted above has aged out.
    assert status.apis_status(NOW + 7200)["pipedrive"]["calls_last_hour"] == 0


def test_sync_counts_waiting_changes_and_shows_the_widened_window_and_the_pause(
    clean_db: Path,
) -> None:
    insert_jobs(clean_db, [(1, 31, "completed", NOW - 60), (2, 32, "completed", NOW - 60)])
    with sqlite3.connect(clean_db) as connection:
        connection.executemany(
            "INSERT INTO filter_changes (filter_id, inbox_id, kind, action, entity_id, "
            "occurred_at) VALUES (?, 1, 'member', 'change', ?, ?)",
            [(31, 7, NOW - 9), (31, 8, NOW - 8), (32, 7, NOW - 9)],
        )
    connection.close()
    # A fifth of the daily budget left: the window is 2.5 times the configured one.
    DatabaseUsage().record_figures("pipedrive", RateFigures(80, 80, 2.0, 30000, 6000), NOW - 1)
    assert status.sync_status(NOW, 2.0) == {
        "changes_waiting": 3,
        "configured_coalesce_seconds": 2.0,
        "coalesce_seconds": 5.0,
        "pipedrive_paused_until": None,
    }

    until = pause_pipedrive(NOW, 3600)
    assert status.sync_status(NOW + 10, 2.0)["pipedrive_paused_until"] == to_iso(int(until))
    assert status.sync_status(int(until), 2.0)["pipedrive_paused_until"] is None


def test_a_refused_credential_shows_its_pause_until_it_is_over(clean_db: Path) -> None:
    refused = ApiAuthError("brevo", "GET /contacts/lists/{listId}", "Key not found", 401)
    record_refusal(Credential("brevo", "0123456789abcdef"), refused, NOW - 20)
    apis = status.apis_status(NOW)
    assert apis["pipedrive"]["auth_pause"] is None
    assert apis["brevo"]["auth_pause"] == {
        "active": True,
        "status": 401,
        "error": "brevo GET /contacts/lists/{listId} answered 401: Key not found",
        "variable": "BREVO_API_KEY",
        "refused_at": to_iso(NOW - 20),
        "paused_until": to_iso(NOW + 40),
        "backoff_seconds": 60.0,
    }
    # Over, but recorded until a job tried the key again: the next job does.
    assert status.apis_status(NOW + 40)["brevo"]["auth_pause"]["active"] is False


def test_queue_depth_counts_the_messages_waiting_in_a_sqlite_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    huey = build_huey(url)

    @huey.task()  # type: ignore[untyped-decorator]
    def noop() -> None:
        pass

    noop()
    noop()
    assert status.queue_status(url) == {"depth": 2, "error": None}
    huey.dequeue()
    assert status.queue_status(url) == {"depth": 1, "error": None}


def test_an_unreadable_queue_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "queue.db").write_bytes(b"this is not a database" * 100)
    queue = status.queue_status(f"sqlite:///{tmp_path / 'queue.db'}")
    assert queue["depth"] is None
    assert "DatabaseError" in queue["error"]
    queue = status.queue_status("memcached://nowhere")
    assert queue["depth"] is None
    assert "QUEUE_URL" in queue["error"]
