"""The app as a whole: body limit, JSON errors, health, and the OpenAPI document."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from starlette.routing import Route
from starlette.testclient import TestClient

from service.app import ROUTES, create_app
from service.body_limit import MAX_BODY_BYTES
from service.clock import ManualClock
from service.config import Settings
from tests.conftest import ADMIN_PASSWORD, login
from workers.queue import build_huey
from workers.tasks import register_tasks


def test_a_declared_body_over_1_mib_is_refused_before_reading(client: TestClient) -> None:
    """Content-Length over the limit: 413 on any route, authenticated or not."""
    big = b"x" * (MAX_BODY_BYTES + 1)
    for method, path in [("POST", "/api/session"), ("GET", "/api/jobs"), ("GET", "/healthz")]:
        response = client.request(
            method, path, content=big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, path
        assert response.json() == {"error": "request body too large"}


def test_a_chunked_body_over_1_mib_is_refused_while_reading(client: TestClient) -> None:
    """Without Content-Length the bytes are counted as they arrive."""

    def chunks() -> Iterator[bytes]:
        yield b'{"password": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}'

    response = client.post(
        "/api/session", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large"}


def test_a_body_at_the_limit_is_read(client: TestClient) -> None:
    """Exactly 1 MiB is allowed (and here is simply a wrong password)."""
    padding = MAX_BODY_BYTES - len(b'{"password": ""}')
    body = b'{"password": "' + b"a" * padding + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = client.post(
        "/api/session", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    """404 and 405 keep the JSON error shape; 405 says what is allowed."""
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "not found"}
    wrong = client.put("/healthz")
    assert wrong.status_code == 405 and wrong.json() == {"error": "method not allowed"}
    assert "GET" in wrong.headers["allow"]


def test_healthz_needs_no_auth(client: TestClient) -> None:
    """A load balancer can probe it."""
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_openapi_document_is_valid(client: TestClient) -> None:
    """It validates as OpenAPI 3.1."""
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def routes_in_app() -> set[tuple[str, str]]:
    found = set()
    for route in ROUTES:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method.lower(), re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)))
    return found


def test_openapi_describes_every_route_and_only_those(client: TestClient) -> None:
    """A route added without its description fails here."""
    document = client.get("/openapi.json").json()
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert described == routes_in_app()


@pytest.mark.parametrize(("method", "path"), sorted(routes_in_app()))
def test_every_operation_declares_its_responses_and_parameters(
    client: TestClient, method: str, path: str
) -> None:
    """Parameters of the path are declared; each operation lists its error responses."""
    operation = client.get("/openapi.json").json()["paths"][path][method]
    declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
    assert declared == set(re.findall(r"\{(\w+)\}", path))
    assert any(code.startswith("2") for code in operation["responses"])
    if path.startswith("/api/") and operation.get("security") != []:
        assert "401" in operation["responses"]
        if method != "get":
            # Cookie-authenticated writes: another origin, or a body that is not JSON.
            assert {"403", "415"} <= set(operation["responses"])
    assert "413" in operation["responses"]  # the body limit holds on every route
    if "requestBody" in operation:
        assert {"400", "408", "415"} <= set(operation["responses"])


@pytest.mark.parametrize(("method", "path"), sorted(routes_in_app()))
def test_every_error_is_declared_as_the_json_error(
    client: TestClient, method: str, path: str
) -> None:
    """Each 4xx and 5xx answer is ``{"error": ...}`` (a 409 may add the running job)."""
    document = client.get("/openapi.json").json()
    for status, response in document["paths"][path][method]["responses"].items():
        if status.startswith(("4", "5")):
            schema = response["content"]["application/json"]["schema"]
            assert schema["$ref"] in ("#/components/schemas/Error", "#/components/schemas/Conflict")


def test_server_errors_are_json_without_details(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected failure is a plain 500 body, never a trace or a secret."""
    from service import jobs

    def broken(*args: object) -> None:
        raise RuntimeError(f"boom with {ADMIN_PASSWORD}")

    monkeypatch.setattr(jobs, "list_jobs", broken)
    token = client.post("/api/session", json={"password": ADMIN_PASSWORD}).json()["token"]
    with TestClient(client.app, raise_server_exceptions=False) as raw:
        response = raw.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}


def test_jobs_go_on_the_huey_queue_of_queue_url_opened_on_first_use(
    settings: Settings, clock: ManualClock, clean_db: Path, tmp_path: Path
) -> None:
    """Without an injected enqueue function the app uses QUEUE_URL, and only once needed."""
    queue_file = tmp_path / "queue" / "queue.db"
    queued = replace(settings, queue_url=f"sqlite:///{queue_file}")
    with sqlite3.connect(clean_db) as connection:
        connection.execute("INSERT INTO filters (id, name, type) VALUES (1, 'A', 'people')")
    with TestClient(create_app(queued, clock)) as client:
        token = login(client)
        assert not queue_file.exists()
        response = client.post("/api/filters/1/sync", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202
    huey = build_huey(queued.queue_url)
    register_tasks(huey, queued, clock)
    (task,) = huey.pending()
    assert (task.name, task.args) == ("run_sync_job", (response.json()["job"]["id"],))
