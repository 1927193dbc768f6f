"""GET /api/filters (every filter, soft-deleted ones included, with its latest job) and
POST /api/filters/refresh."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.clients import factory
from service.clients.http import ClientPolicy
from service.clients.pipedrive import PipedriveClient
from service.clients.usage import UsageStore
from service.clock import ManualClock
from service.config import Settings
from tests.conftest import login
from tests.fakes import RunningFake


def test_empty(client: TestClient, token: str) -> None:
    """No filters known yet."""
    response = client.get("/api/filters", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json() == {"filters": []}


def test_filters_with_their_last_job(client: TestClient, token: str, clean_db: Path) -> None:
    """The newest job of each filter; null when it has none; deleted_at as ISO."""
    with sqlite3.connect(clean_db) as connection:
        connection.execute(
            "INSERT INTO filters (id, name, type, brevo_list_id) VALUES (7, 'VIP', 'people', 31)"
        )
        connection.execute(
            "INSERT INTO filters (id, name, type, deleted_at) "
            "VALUES (3, 'Old', 'deals', 1900000000)"
        )
        connection.execute(
            "INSERT INTO sync_jobs (filter_id, status, created_at) VALUES (7, 'completed', 1)"
        )
        connection.execute(
            "INSERT INTO sync_jobs (filter_id, status, created_at) VALUES (7, 'failed', 2)"
        )
    body = client.get("/api/filters", headers={"Authorization": f"Bearer {token}"}).json()
    old, vip = body["filters"]
    assert old == {
        "id": 3,
        "name": "Old",
        "type": "deals",
        "brevo_list_id": None,
        "deleted_at": "2030-03-17T17:46:40Z",
        "last_job": None,
    }
    assert (vip["id"], vip["name"], vip["type"], vip["brevo_list_id"]) == (7, "VIP", "people", 31)
    assert vip["deleted_at"] is None
    assert vip["last_job"]["status"] == "failed" and vip["last_job"]["filter_id"] == 7


# POST /api/filters/refresh, against the Pipedrive and Brevo fakes.


@pytest.fixture
def enqueued() -> list[int]:
    return []


def fake_settings(
    settings: Settings, pipedrive_fake: RunningFake | None, brevo_fake: RunningFake | None
) -> Settings:
    changes: dict[str, str] = {}
    if pipedrive_fake is not None:
        changes.update(pipedrive_api_token="pd-token", pipedrive_base_url=pipedrive_fake.url)
    if brevo_fake is not None:
        changes.update(brevo_api_key="bv-key", brevo_base_url=brevo_fake.url + "/v3")
    return replace(settings, **changes)  # type: ignore[arg-type]


@contextlib.contextmanager
def app_with(
    settings: Settings, clock: ManualClock, enqueued: list[int]
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(settings, clock, enqueue_job=enqueued.append)) as test_client:
        token = login(test_client)
        test_client.cookies.clear()
        yield test_client, {"Authorization": f"Bearer {token}"}


@pytest.fixture
def refreshing(
    settings: Settings,
    clock: ManualClock,
    enqueued: list[int],
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with app_with(fake_settings(settings, pipedrive_fake, brevo_fake), clock, enqueued) as pair:
        yield pair


def test_refresh_reads_pipedrive_and_answers_the_filters_with_counts(
    refreshing: tuple[TestClient, dict[str, str]], clean_db: Path
) -> None:
    client, auth = refreshing
    response = client.post("/api/filters/refresh", headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["updated"], body["deleted"]) == (5, 0, 0)
    assert [(f["id"], f["type"]) for f in body["filters"]] == [
        (1, "people"),
        (2, "people"),
        (3, "people"),
        (4, "deals"),
        (8, "people"),
    ]
    listed = client.get("/api/filters", headers=auth).json()
    assert body["filters"] == listed["filters"]
    again = client.post("/api/filters/refresh", headers=auth).json()
    assert (again["created"], again["updated"], again["deleted"]) == (0, 0, 0)


def test_refresh_soft_deletes_and_schedules_a_resync_through_the_queue(
    refreshing: tuple[TestClient, dict[str, str]],
    clean_db: Path,
    pipedrive_fake: RunningFake,
    enqueued: list[int],
    clock: ManualClock,
) -> None:
    client, auth = refreshing
    client.post("/api/filters/refresh", headers=auth)
    with sqlite3.connect(clean_db) as connection:
        connection.execute("UPDATE filters SET brevo_list_id = 77 WHERE id = 1")
    client.post("/api/filters/refresh", headers=auth)  # records filter 1's conditions
    pipedrive_fake.control(
        "PATCH",
        "/_sandbox/filters/1",
        json={
            "conditions": {
                "glue": "and",
                "conditions": [
                    {
                        "glue": "and",
                        "conditions": [
                            {"object": "person", "field_id": "9004", "operator": "IS NOT NULL"}
                        ],
                    },
                    {"glue": "or", "conditions": []},
                ],
            }
        },
    )
    pipedrive_fake.control("DELETE", "/_sandbox/filters/8")
    clock.advance(60)
    body = client.post("/api/filters/refresh", headers=auth).json()
    assert (body["created"], body["updated"], body["deleted"]) == (0, 1, 1)
    by_id = {f["id"]: f for f in body["filters"]}
    assert by_id[8]["deleted_at"] == "2030-03-17T17:47:40Z"
    job = by_id[1]["last_job"]
    assert (job["kind"], job["trigger"], job["status"]) == ("full", "filter_changed", "processing")
    assert enqueued == [job["id"]]


def test_refresh_without_a_pipedrive_token_is_409(
    settings: Settings, clock: ManualClock, enqueued: list[int]
) -> None:
    with app_with(settings, clock, enqueued) as (client, auth):
        response = client.post("/api/filters/refresh", headers=auth)
    assert response.status_code == 409
    assert response.json()["error"].startswith("PIPEDRIVE_API_TOKEN is not set")


def test_refresh_works_without_brevo(
    settings: Settings, clock: ManualClock, enqueued: list[int], pipedrive_fake: RunningFake
) -> None:
    """Brevo is only needed to rename lists."""
    with app_with(fake_settings(settings, pipedrive_fake, None), clock, enqueued) as (
        client,
        auth,
    ):
        response = client.post("/api/filters/refresh", headers=auth)
    assert response.status_code == 200 and response.json()["created"] == 5


def test_a_refused_pipedrive_token_is_502(
    refreshing: tuple[TestClient, dict[str, str]], pipedrive_fake: RunningFake
) -> None:
    client, auth = refreshing
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "the-real-token"})
    response = client.post("/api/filters/refresh", headers=auth)
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(response.json()) == {"error"}
    assert error.startswith("Pipedrive refused the API token (PIPEDRIVE_API_TOKEN)")
    assert "pd-token" not in error
    assert client.get("/api/filters", headers=auth).json() == {"filters": []}


def test_pipedrive_failing_is_502_with_the_clients_message(
    refreshing: tuple[TestClient, dict[str, str]],
    pipedrive_fake: RunningFake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, auth = refreshing
    real = factory.pipedrive_client

    def quick(settings: Settings, usage: UsageStore | None = None) -> PipedriveClient:
        made = real(settings, usage)
        made.http.policy = ClientPolicy(max_attempts=2, backoff_base=0.01)
        return made

    monkeypatch.setattr(factory, "pipedrive_client", quick)
    pipedrive_fake.control(
        "PUT",
        "/_sandbox/faults",
        json={"faults": [{"kind": "500", "path": "/v1/filters", "probability": 1}]},
    )
    response = client.post("/api/filters/refresh", headers=auth)
    assert response.status_code == 502
    assert set(response.json()) == {"error"}
    assert response.json()["error"].startswith("pipedrive GET /v1/filters answered 500: ")


def test_refresh_needs_a_session(refreshing: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = refreshing
    assert client.post("/api/filters/refresh").status_code == 401
