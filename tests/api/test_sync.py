"""POST /api/filters/{id}/sync and POST /api/sync: jobs started by the admin."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # openapi-core depends on it
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.clock import ManualClock
from service.config import Settings
from service.jobs import get_job
from service.openapi import DOCUMENT
from tests.conftest import login

# 1 and 2 linked, 3 unlinked, 4 linked but deleted upstream, 5 never refreshed (type NULL).
FILTERS = [
    (1, "Everyone", "people", 11, None),
    (2, "Won deals", "deals", 12, None),
    (3, "Hot leads", "people", None, None),
    (4, "Old", "people", 14, 1_800_000_000),
    (5, "Legacy", None, None, None),
]


class Queue:
    """Records enqueued job ids; ``broken`` makes enqueueing fail."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.broken = False

    def __call__(self, job_id: int) -> None:
        if self.broken:
            raise ConnectionError("queue unreachable")
        self.ids.append(job_id)


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def app_client(settings: Settings, clock: ManualClock, queue: Queue) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock, enqueue_job=queue)) as test_client:
        yield test_client


@pytest.fixture
def auth(app_client: TestClient, clean_db: Path) -> dict[str, str]:
    with sqlite3.connect(clean_db) as connection:
        connection.executemany(
            "INSERT INTO filters (id, name, type, brevo_list_id, deleted_at) "
            "VALUES (?, ?, ?, ?, ?)",
            FILTERS,
        )
    return {"Authorization": f"Bearer {login(app_client)}"}


def matches_schema(body: Any, schema: dict[str, Any]) -> None:
    """Fail unless ``body`` is valid against ``schema`` of the OpenAPI document."""
    jsonschema.validate(body, {**schema, "components": DOCUMENT["components"]})


def response_schema(path: str, status: str) -> dict[str, Any]:
    operation = DOCUMENT["paths"][path]["post"]
    schema: dict[str, Any] = operation["responses"][status]["content"]["application/json"]["schema"]
    return schema


def test_a_full_resync_is_created_and_enqueued(
    app_client: TestClient, auth: dict[str, str], queue: Queue, clock: ManualClock
) -> None:
    response = app_client.post("/api/filters/1/sync", headers=auth)
    assert response.status_code == 202
    job = response.json()["job"]
    assert job["filter_id"] == 1 and job["status"] == "processing"
    assert (job["kind"], job["trigger"], job["forced"]) == ("full", "admin", False)
    assert job["created_at"] == "2030-03-17T17:46:40Z" and job["completed_at"] is None
    assert job["note"] is None
    assert queue.ids == [job["id"]]
    stored = get_job(job["id"])
    assert stored is not None and stored.to_json() == job
    matches_schema(response.json(), response_schema("/api/filters/{id}/sync", "202"))


@pytest.mark.parametrize(
    ("query", "kind", "forced"),
    [
        ("force=true", "full", True),
        ("force=1&dry_run=0", "full", True),
        ("dry_run=true", "dry_run", False),
        ("dry_run=1&force=TRUE", "dry_run", True),
        ("force=false&dry_run=false", "full", False),
    ],
)
def test_force_and_dry_run(
    app_client: TestClient, auth: dict[str, str], query: str, kind: str, forced: bool
) -> None:
    response = app_client.post(f"/api/filters/3/sync?{query}", headers=auth)
    assert response.status_code == 202
    job = response.json()["job"]
    assert (job["kind"], job["forced"], job["trigger"]) == (kind, forced, "admin")


@pytest.mark.parametrize(
    "query", ["force=yes", "force=", "dry_run=2", "dry_run=truee", "force=on", "dry_run=-1"]
)
def test_a_bad_boolean_is_400(
    app_client: TestClient, auth: dict[str, str], queue: Queue, query: str
) -> None:
    response = app_client.post(f"/api/filters/1/sync?{query}", headers=auth)
    assert response.status_code == 400
    name = query.split("=")[0]
    assert response.json() == {"error": f"{name} must be true, false, 1 or 0"}
    assert queue.ids == []


@pytest.mark.parametrize("filter_id", ["99", "0", "99999999999999999999999"])
def test_an_unknown_filter_is_404(
    app_client: TestClient, auth: dict[str, str], filter_id: str
) -> None:
    response = app_client.post(f"/api/filters/{filter_id}/sync", headers=auth)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_a_deleted_filter_is_409(
    app_client: TestClient, auth: dict[str, str], queue: Queue
) -> None:
    response = app_client.post("/api/filters/4/sync", headers=auth)
    assert response.status_code == 409
    assert response.json() == {
        "error": "filter 4 no longer exists in Pipedrive and cannot be synced"
    }
    assert queue.ids == []


def test_a_filter_never_refreshed_is_409(app_client: TestClient, auth: dict[str, str]) -> None:
    """Its type is unknown, so the worker would not know whether to list persons or deals."""
    response = app_client.post("/api/filters/5/sync", headers=auth)
    assert response.status_code == 409
    assert set(response.json()) == {"error"}
    assert "POST /api/filters/refresh" in response.json()["error"]


def test_a_busy_filter_is_409_with_the_running_job(
    app_client: TestClient, auth: dict[str, str], queue: Queue
) -> None:
    running = app_client.post("/api/filters/2/sync", headers=auth).json()["job"]
    response = app_client.post("/api/filters/2/sync?dry_run=true", headers=auth)
    assert response.status_code == 409
    assert response.json() == {"error": "filter 2 is already being synced", "job": running}
    assert queue.ids == [running["id"]]
    matches_schema(response.json(), response_schema("/api/filters/{id}/sync", "409"))


def test_a_failed_enqueue_still_answers_202(
    app_client: TestClient, auth: dict[str, str], queue: Queue
) -> None:
    """The job row exists; the worker's sweeper enqueues it later."""
    queue.broken = True
    response = app_client.post("/api/filters/1/sync", headers=auth)
    assert response.status_code == 202
    stored = get_job(response.json()["job"]["id"])
    assert stored is not None and stored.status == "processing"


def test_sync_all_starts_every_linked_filter_and_names_the_busy_ones(
    app_client: TestClient, auth: dict[str, str], queue: Queue
) -> None:
    busy = app_client.post("/api/filters/2/sync", headers=auth).json()["job"]
    response = app_client.post("/api/sync", headers=auth)
    assert response.status_code == 202
    body = response.json()
    assert [job["filter_id"] for job in body["jobs"]] == [1]
    assert body["busy"] == [2]
    (job,) = body["jobs"]
    assert (job["kind"], job["trigger"], job["forced"]) == ("full", "admin", False)
    assert queue.ids == [busy["id"], job["id"]]
    matches_schema(body, response_schema("/api/sync", "202"))
    again = app_client.post("/api/sync", headers=auth).json()
    assert again == {"jobs": [], "busy": [1, 2]}


def test_sync_all_without_linked_filters(
    app_client: TestClient, clean_db: Path, queue: Queue
) -> None:
    headers = {"Authorization": f"Bearer {login(app_client)}"}
    response = app_client.post("/api/sync", headers=headers)
    assert response.status_code == 202 and response.json() == {"jobs": [], "busy": []}
    assert queue.ids == []


@pytest.mark.parametrize("path", ["/api/filters/1/sync", "/api/sync"])
def test_a_session_is_required(
    app_client: TestClient, auth: dict[str, str], queue: Queue, path: str
) -> None:
    app_client.cookies.clear()  # the login's cookie
    response = app_client.post(path)
    assert response.status_code == 401
    assert queue.ids == []
