"""GET /api/jobs and GET /api/jobs/{id}: shapes, filters, the cursor, and bad input."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed(path: Path, jobs: list[tuple[int, str]]) -> None:
    """Insert filters 1 and 2 and the given (filter_id, status) jobs, oldest first."""
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO filters (id, name, type) VALUES (1, 'A', 'people')")
        connection.execute("INSERT INTO filters (id, name, type) VALUES (2, 'B', 'deals')")
        for n, (filter_id, status) in enumerate(jobs):
            connection.execute(
                "INSERT INTO sync_jobs (filter_id, status, created_at, completed_at, "
                "total_fetched, total_added, total_updated, total_removed, total_skipped, "
                'error_message, kind, "trigger", forced) '
                "VALUES (?, ?, ?, ?, 10, 4, 3, 2, 1, ?, 'incremental', 'webhook', 1)",
                (
                    filter_id,
                    status,
                    1_900_000_000 + n,
                    None if status == "processing" else 1_900_000_100 + n,
                    "boom" if status == "failed" else None,
                ),
            )


def test_empty(client: TestClient, auth: dict[str, str]) -> None:
    """The first-run answer of the README."""
    response = client.get("/api/jobs", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"jobs": [], "next_before_id": None}


def test_job_shape(client: TestClient, auth: dict[str, str], clean_db: Path) -> None:
    """Every field of DESIGN section 6, times as ISO 8601 UTC."""
    seed(clean_db, [(1, "failed")])
    (job,) = client.get("/api/jobs", headers=auth).json()["jobs"]
    assert job == {
        "id": job["id"],
        "filter_id": 1,
        "kind": "incremental",
        "trigger": "webhook",
        "status": "failed",
        "forced": True,
        "created_at": "2030-03-17T17:46:40Z",
        "completed_at": "2030-03-17T17:48:20Z",
        "total_fetched": 10,
        "total_added": 4,
        "total_updated": 3,
        "total_removed": 2,
        "total_skipped": 1,
        "error_message": "boom",
        "note": None,
    }
    assert client.get(f"/api/jobs/{job['id']}", headers=auth).json() == {"job": job}


def test_newest_first_and_the_cursor_walks_every_job_once(
    client: TestClient, auth: dict[str, str], clean_db: Path
) -> None:
    """Pages of `limit`, next_before_id until null, no job twice or missed."""
    seed(clean_db, [(1 + n % 2, "completed") for n in range(7)])
    seen: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        params: dict[str, int] = {"limit": 3}
        if before is not None:
            params["before_id"] = before
        body = client.get("/api/jobs", params=params, headers=auth).json()
        seen.extend(job["id"] for job in body["jobs"])
        pages += 1
        before = body["next_before_id"]
        if before is None:
            break
    assert pages == 3 and len(seen) == 7
    assert seen == sorted(seen, reverse=True)


def test_a_full_last_page_says_there_is_no_next(
    client: TestClient, auth: dict[str, str], clean_db: Path
) -> None:
    """next_before_id is null when exactly `limit` jobs remain."""
    seed(clean_db, [(1, "completed")] * 4)
    first = client.get("/api/jobs", params={"limit": 2}, headers=auth).json()
    second = client.get(
        "/api/jobs", params={"limit": 2, "before_id": first["next_before_id"]}, headers=auth
    ).json()
    assert len(second["jobs"]) == 2 and second["next_before_id"] is None


def test_default_limit_is_50(client: TestClient, auth: dict[str, str], clean_db: Path) -> None:
    """Without limit a page holds 50."""
    seed(clean_db, [(1, "completed")] * 55)
    body = client.get("/api/jobs", headers=auth).json()
    assert len(body["jobs"]) == 50 and body["next_before_id"] is not None


def test_filter_by_filter_and_status(
    client: TestClient, auth: dict[str, str], clean_db: Path
) -> None:
    """filter_id and status narrow the list, together too."""
    seed(clean_db, [(1, "completed"), (2, "failed"), (1, "failed"), (2, "processing")])

    def pairs(**params: str | int) -> list[tuple[int, str]]:
        jobs = client.get("/api/jobs", params=params, headers=auth).json()["jobs"]
        return [(j["filter_id"], j["status"]) for j in jobs]

    assert pairs(filter_id=1) == [(1, "failed"), (1, "completed")]
    assert pairs(status="failed") == [(1, "failed"), (2, "failed")]
    assert pairs(filter_id=2, status="processing") == [(2, "processing")]
    assert pairs(filter_id=99) == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=1.5",
        "status=queued",
        "status=",
        "filter_id=x",
        "filter_id=0",
        "before_id=-5",
        "before_id=99999999999999999999999",
        "filter_id=9223372036854775808",
    ],
)
def test_bad_query_values_are_400(client: TestClient, auth: dict[str, str], query: str) -> None:
    """A clear message naming the parameter, never a 500."""
    response = client.get(f"/api/jobs?{query}", headers=auth)
    assert response.status_code == 400
    assert response.json()["error"].startswith(query.split("=")[0])


def test_limits_at_the_bounds_are_accepted(client: TestClient, auth: dict[str, str]) -> None:
    """1 and 200 are valid limits; the largest id is a valid cursor."""
    for query in ("limit=1", "limit=200", "before_id=9223372036854775807"):
        assert client.get(f"/api/jobs?{query}", headers=auth).status_code == 200


@pytest.mark.parametrize("job_id", ["12345", "0", "99999999999999999999999999"])
def test_unknown_job_is_404(client: TestClient, auth: dict[str, str], job_id: str) -> None:
    """Unknown or impossible ids: 404 with the JSON error shape."""
    response = client.get(f"/api/jobs/{job_id}", headers=auth)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_a_non_numeric_job_id_is_404(client: TestClient, auth: dict[str, str]) -> None:
    """No such route."""
    assert client.get("/api/jobs/abc", headers=auth).status_code == 404
