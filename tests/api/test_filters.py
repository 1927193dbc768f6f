"""GET /api/filters: every filter, soft-deleted ones included, with its latest job."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from starlette.testclient import TestClient


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
