"""Every /api route needs a session; cookie-authenticated writes must come from our origin."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from service.app import ROUTES, create_app
from service.auth import is_protected
from service.clock import ManualClock
from service.config import Settings
from tests.conftest import login


def api_routes() -> list[tuple[str, str]]:
    """(method, concrete path) of every /api route in the router, login excepted."""
    found = []
    for route in ROUTES:
        assert isinstance(route, Route)
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods or ()):
            if method != "HEAD" and is_protected(method, path):
                found.append((method, path))
    return found


def test_the_enumeration_sees_the_routes() -> None:
    """Guard the guard: the list below is built from the router and is not empty."""
    routes = api_routes()
    assert ("GET", "/api/jobs") in routes and ("DELETE", "/api/session") in routes
    assert ("POST", "/api/session") not in routes


@pytest.mark.parametrize(("method", "path"), api_routes())
def test_every_api_route_answers_401_without_credentials(
    client: TestClient, method: str, path: str
) -> None:
    """A route added later is covered automatically, because the list comes from the router."""
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.json() == {"error": "authentication required"}


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/nope", "/api/jobs/1/x"])
def test_unknown_api_paths_are_401_not_404_without_credentials(
    client: TestClient, path: str
) -> None:
    """Without a session nothing about the API's shape is revealed."""
    assert client.get(path).status_code == 401


def test_open_routes_need_no_session(client: TestClient) -> None:
    """healthz, openapi.json and the login itself."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.post("/api/session", json={"password": "x" * 12}).status_code == 401


def test_cookie_write_from_another_origin_is_refused(client: TestClient) -> None:
    """Origin of another site, a cross-site fetch, or no Origin at all: 403."""
    login(client)  # the client now carries the cookie
    refused = [
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-site"},
        {"Referer": "https://evil.example/page"},
        {},
    ]
    for headers in refused:
        response = client.delete("/api/session", headers=headers)
        assert response.status_code == 403, headers
        assert response.json() == {"error": "cross-origin request refused"}
    assert client.get("/api/jobs").status_code == 200  # the session survived


def test_cookie_write_from_our_own_origin_is_allowed(client: TestClient) -> None:
    """The Host the request reached counts as our origin; Referer works without Origin."""
    login(client)
    response = client.delete(
        "/api/session", headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 204
    login(client)
    assert (
        client.delete("/api/session", headers={"Referer": "http://testserver/ui"}).status_code
        == 204
    )


def test_public_url_is_our_origin_too(settings: Settings, clock: ManualClock) -> None:
    """Behind a proxy the browser's Origin is PUBLIC_URL, not the internal Host."""
    settings = Settings(
        admin_password=settings.admin_password,
        database_url=settings.database_url,
        public_url="https://sync.example.com",
    )
    # The cookie is Secure under an https PUBLIC_URL: the client must speak https to send it.
    with TestClient(create_app(settings, clock), base_url="https://testserver") as client:
        login(client)
        ok = client.delete("/api/session", headers={"Origin": "https://sync.example.com"})
        assert ok.status_code == 204
        login(client)
        bad = client.delete("/api/session", headers={"Origin": "http://sync.example.com"})
        assert bad.status_code == 403


def test_bearer_writes_need_no_origin(client: TestClient) -> None:
    """A bearer token is never sent by a browser on its own, so CSRF cannot use it."""
    token = login(client)
    client.cookies.clear()
    response = client.delete(
        "/api/session",
        headers={"Authorization": f"Bearer {token}", "Origin": "https://evil.example"},
    )
    assert response.status_code == 204


def test_cookie_reads_need_no_origin(client: TestClient) -> None:
    """GET is safe; only writes are checked."""
    login(client)
    assert client.get("/api/jobs", headers={"Origin": "https://evil.example"}).status_code == 200


def test_cookie_post_from_another_origin_is_refused(clean_db: object, clock: ManualClock) -> None:
    """The middleware guards every write method, POST included, whatever the route."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from service import sessions
    from service.auth import COOKIE_NAME, SessionAuthMiddleware
    from service.passwords import AdminPassword

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/api/echo", echo, methods=["POST", "PUT", "PATCH"])],
        middleware=[
            Middleware(SessionAuthMiddleware, clock=clock, public_url=None, trusted_proxies=())
        ],
    )
    issued = sessions.create_session(AdminPassword(plain="x" * 12), clock.now())
    with TestClient(app, cookies={COOKIE_NAME: issued.token}) as client:
        for method in ("POST", "PUT", "PATCH"):
            evil = client.request(method, "/api/echo", headers={"Origin": "https://evil.example"})
            assert evil.status_code == 403, method
            ours = client.request(method, "/api/echo", headers={"Origin": "http://testserver"})
            assert ours.status_code == 200, method
