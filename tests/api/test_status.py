"""GET /api/status: inbox, queue, jobs, worker liveness and API usage in one answer."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.api_usage import DatabaseUsage
from service.app import create_app
from service.auth_pause import Credential, record_refusal
from service.clients.errors import ApiAuthError
from service.clients.usage import CallKey, RateFigures
from service.clock import ManualClock, to_iso
from service.config import Settings
from service.openapi import DOCUMENT
from tests.api.test_sync import matches_schema
from tests.conftest import login
from workers.periodic import PeriodicLoop
from workers.queue import build_huey


def status_schema() -> dict[str, Any]:
    operation = DOCUMENT["paths"]["/api/status"]["get"]
    schema: dict[str, Any] = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return schema


@pytest.fixture
def queue_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture
def app_client(settings: Settings, clock: ManualClock, queue_url: str) -> Iterator[TestClient]:
    settings = dataclasses.replace(settings, queue_url=queue_url)
    app = create_app(settings, clock, enqueue_job=lambda job_id: None)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def auth(app_client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(app_client)}"}


def get_status(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    response = client.get("/api/status", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    matches_schema(body, status_schema())
    return body


def test_without_a_session_the_status_is_refused(app_client: TestClient) -> None:
    response = app_client.get("/api/status")
    assert response.status_code == 401
    assert "error" in response.json()
    bad = app_client.get("/api/status", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_an_empty_installation(
    app_client: TestClient, auth: dict[str, str], clock: ManualClock
) -> None:
    body = get_status(app_client, auth)
    assert body["checked_at"] == to_iso(clock.now())
    assert body["inbox"] == {
        "pending": 0,
        "ignored": 0,
        "processed": 0,
        "oldest_pending_age_seconds": None,
        "last_webhook_at": None,
    }
    assert body["queue"] == {"depth": 0, "error": None}
    assert body["jobs"] == {
        "processing": 0,
        "oldest_processing_job_id": None,
        "oldest_processing_age_seconds": None,
    }
    assert body["workers"] == []
    for api in ("pipedrive", "brevo"):
        assert body["apis"][api]["calls_last_hour"] == 0
        assert body["apis"][api]["calls_by_status"] == {}
        assert body["apis"][api]["rate_limit"] is None
        assert body["apis"][api]["auth_pause"] is None


def test_a_busy_installation(
    app_client: TestClient,
    auth: dict[str, str],
    clock: ManualClock,
    clean_db: Path,
    queue_url: str,
) -> None:
    now = clock.now()
    with sqlite3.connect(clean_db) as connection:
        connection.executemany(
            "INSERT INTO inbox (event_key, received_at, status, payload) VALUES (?, ?, ?, '{}')",
            [
                ("a", now - 700, "pending"),
                ("b", now - 20, "pending"),
                ("c", now - 900, "ignored"),
                ("d", now - 3, "processed"),
            ],
        )
        connection.execute("INSERT INTO filters (id, name, type) VALUES (1, 'f', 'people')")
        connection.execute(
            "INSERT INTO sync_jobs (id, filter_id, status, created_at) "
            "VALUES (9, 1, 'processing', ?)",
            (now - 42,),
        )
    connection.close()
    PeriodicLoop([], clock, "worker-host:4242").tick()
    usage = DatabaseUsage()
    usage.record_call(CallKey("pipedrive", "GET", "/api/v2/persons", 200), now - 60)
    usage.record_call(CallKey("pipedrive", "GET", "/api/v2/persons", 429), now - 50)
    usage.record_call(CallKey("brevo", "GET", "/contacts/lists/{listId}", 200), now - 9000)
    usage.record_figures("pipedrive", RateFigures(80, 60, 2.0, 30000, 12345), now - 50)
    usage.record_figures("brevo", RateFigures(10, 8, 1.0), now - 9000)

    huey = build_huey(queue_url)

    @huey.task()  # type: ignore[untyped-decorator]
    def noop() -> None:
        pass

    noop()
    noop()

    body = get_status(app_client, auth)
    assert body["inbox"] == {
        "pending": 2,
        "ignored": 1,
        "processed": 1,
        "oldest_pending_age_seconds": 700,
        "last_webhook_at": to_iso(now - 3),
    }
    assert body["queue"] == {"depth": 2, "error": None}
    assert body["jobs"] == {
        "processing": 1,
        "oldest_processing_job_id": 9,
        "oldest_processing_age_seconds": 42,
    }
    assert body["workers"] == [
        {
            "holder": "worker-host:4242",
            "last_heartbeat_at": to_iso(now),
            "heartbeat_age_seconds": 0,
            "alive": True,
        }
    ]
    pipedrive = body["apis"]["pipedrive"]
    assert pipedrive["calls_last_hour"] == 2
    assert pipedrive["calls_by_status"] == {"200": 1, "429": 1}
    assert pipedrive["rate_limit"] == {
        "limit": 80,
        "remaining": 60,
        "reset_seconds": 2.0,
        "observed_at": to_iso(now - 50),
        "daily_limit": 30000,
        "daily_remaining": 12345,
    }
    brevo = body["apis"]["brevo"]
    assert brevo["calls_last_hour"] == 0  # its only call was two and a half hours ago
    assert brevo["rate_limit"]["remaining"] == 8
    assert "daily_limit" not in brevo["rate_limit"]

    clock.advance(60)
    later = get_status(app_client, auth)
    assert later["workers"][0]["alive"] is False
    assert later["inbox"]["oldest_pending_age_seconds"] == 760
    assert later["jobs"]["oldest_processing_age_seconds"] == 102


def test_a_refused_credential_is_shown_without_the_credential(
    app_client: TestClient, auth: dict[str, str], clock: ManualClock
) -> None:
    """R12: the pause is on the status page, naming the variable to fix; the credential's
    fingerprint is not (S13: nothing derived from a secret is shown)."""
    refused = ApiAuthError("pipedrive", "GET /v1/filters", "unauthorized access", 401)
    record_refusal(Credential("pipedrive", "fedcba9876543210"), refused, clock.now())
    body = get_status(app_client, auth)
    assert body["apis"]["pipedrive"]["auth_pause"] == {
        "active": True,
        "status": 401,
        "error": "pipedrive GET /v1/filters answered 401: unauthorized access",
        "variable": "PIPEDRIVE_API_TOKEN",
        "refused_at": to_iso(clock.now()),
        "paused_until": to_iso(clock.now() + 60),
        "backoff_seconds": 60.0,
    }
    assert body["apis"]["brevo"]["auth_pause"] is None
    assert "fedcba9876543210" not in str(body)


def test_an_unreadable_queue_still_answers_200(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a queue" * 500)
    settings = dataclasses.replace(settings, queue_url=f"sqlite:///{broken}")
    with TestClient(create_app(settings, clock, enqueue_job=lambda job_id: None)) as client:
        auth = {"Authorization": f"Bearer {login(client)}"}
        body = get_status(client, auth)
    assert body["queue"]["depth"] is None
    assert body["queue"]["error"].startswith("the queue could not be read")
