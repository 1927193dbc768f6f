"""Admin sessions: token, storage, sliding expiry, logout, password change."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from starlette.testclient import TestClient

from service import sessions
from service.app import create_app
from service.clock import ManualClock
from service.config import Settings
from service.passwords import AdminPassword
from tests.conftest import ADMIN_PASSWORD, login

DAY = 24 * 3600


def session_rows(path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT id, user_id, expires_at FROM session").fetchall()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_returns_a_long_random_token_and_stores_only_its_hash(
    client: TestClient, clean_db: Path, clock: ManualClock
) -> None:
    """201 with a token of >= 128 random bits; the row id is its SHA-256 hex."""
    response = client.post("/api/session", json={"password": ADMIN_PASSWORD})
    assert response.status_code == 201
    body = response.json()
    token = body["token"]
    assert token.startswith("pbs_") and len(token) - 4 >= 43  # 32 bytes in base64url
    ((row_id, _, expires_at),) = session_rows(clean_db)
    assert row_id == hashlib.sha256(token.encode()).hexdigest()
    assert token not in row_id and expires_at == clock.now() + 30 * DAY
    assert body["expires_at"] == "2030-04-16T17:46:40Z"
    with sqlite3.connect(clean_db) as connection:
        dump = "\n".join(connection.iterdump())
    assert token not in dump and token[4:] not in dump


def test_each_login_gets_its_own_session_and_one_admin_user(
    client: TestClient, clean_db: Path
) -> None:
    """No session fixation: a new token per login; the admin user is created once."""
    first, second = login(client), login(client)
    assert first != second
    rows = session_rows(clean_db)
    assert len(rows) == 2 and len({row[1] for row in rows}) == 1
    with sqlite3.connect(clean_db) as connection:
        users = connection.execute('SELECT id, password_hash FROM "user"').fetchall()
    assert len(users) == 1 and users[0][1].startswith("$argon2id$")
    assert len(users[0][0]) == 36  # a UUID


def test_the_cookie_is_httponly_samesite_lax_path_root(client: TestClient) -> None:
    """Over http the cookie is not Secure (it could never be sent back)."""
    response = client.post("/api/session", json={"password": ADMIN_PASSWORD})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"pbsync_session={response.json()['token']};")
    for part in ("HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={30 * DAY}"):
        assert part in cookie
    assert "Secure" not in cookie


def test_the_cookie_is_secure_over_https(settings: Settings, clock: ManualClock) -> None:
    """A request that came over https gets a Secure cookie."""
    with TestClient(create_app(settings, clock), base_url="https://testserver") as client:
        response = client.post("/api/session", json={"password": ADMIN_PASSWORD})
    assert "Secure" in response.headers["set-cookie"].split("; ")


def test_bearer_and_cookie_both_authenticate(client: TestClient) -> None:
    """Either way of presenting the token works."""
    token = login(client)
    client.cookies.clear()
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    client.cookies.set("pbsync_session", token)
    assert client.get("/api/jobs").status_code == 200
    client.cookies.clear()
    assert client.get("/api/jobs").status_code == 401


def test_a_wrong_token_or_scheme_is_refused(client: TestClient) -> None:
    """Unknown tokens, other schemes and empty values are 401 with WWW-Authenticate."""
    token = login(client)
    client.cookies.clear()
    for header in (f"Bearer {token}x", f"Basic {token}", "Bearer ", token, f"Token {token}"):
        response = client.get("/api/jobs", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json() == {"error": "authentication required"}
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_session_slides_when_under_half_its_life_remains(
    client: TestClient, clock: ManualClock, clean_db: Path
) -> None:
    """Used with more than 15 days left: unchanged. With less: pushed to 30 days from now."""
    token = login(client)
    client.cookies.clear()
    issued = session_rows(clean_db)[0][2]
    clock.advance(14 * DAY)
    client.get("/api/jobs", headers=bearer(token))
    assert session_rows(clean_db)[0][2] == issued
    clock.advance(2 * DAY)  # 14 days left now
    client.get("/api/jobs", headers=bearer(token))
    assert session_rows(clean_db)[0][2] == clock.now() + 30 * DAY


def test_a_sliding_cookie_session_gets_a_fresh_cookie(
    client: TestClient, clock: ManualClock
) -> None:
    """The browser learns the new expiry."""
    login(client)
    assert client.get("/api/jobs").headers.get("set-cookie") is None
    clock.advance(20 * DAY)
    response = client.get("/api/jobs")
    assert response.status_code == 200
    assert f"Max-Age={30 * DAY}" in response.headers["set-cookie"]


def test_an_expired_session_is_refused_and_removed(
    client: TestClient, clock: ManualClock, clean_db: Path
) -> None:
    """Exactly at expiry the session is over, and its row goes."""
    token = login(client)
    client.cookies.clear()
    clock.advance(30 * DAY - 1)
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    # That use extended it; let it run out unused.
    clock.advance(30 * DAY)
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 401
    assert session_rows(clean_db) == []


def test_logout_removes_the_row_and_the_token_stops_working(
    client: TestClient, clean_db: Path
) -> None:
    """DELETE /api/session answers 204, clears the cookie, and the token is dead."""
    token, other = login(client), login(client)
    client.cookies.clear()
    response = client.delete("/api/session", headers=bearer(token))
    assert response.status_code == 204
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 401
    assert client.get("/api/jobs", headers=bearer(other)).status_code == 200
    assert len(session_rows(clean_db)) == 1


def test_delete_expired_sessions(clean_db: Path, clock: ManualClock) -> None:
    """The periodic task's work: expired rows go, live ones stay."""
    password = AdminPassword(plain=ADMIN_PASSWORD)
    sessions.create_session(password, clock.now() - 31 * DAY)
    live = sessions.create_session(password, clock.now())
    assert sessions.delete_expired_sessions(clock.now()) == 1
    assert sessions.validate_session(live.token, clock.now()) is not None
    assert len(session_rows(clean_db)) == 1


def test_changing_the_admin_password_ends_every_session(
    settings: Settings, clock: ManualClock, clean_db: Path
) -> None:
    """A restart with another password logs everyone out; the same password does not."""
    with TestClient(create_app(settings, clock)) as client:
        token = login(client)
    with TestClient(create_app(settings, clock)) as client:
        assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    changed = Settings(admin_password="a-brand-new-password", database_url=settings.database_url)
    with TestClient(create_app(changed, clock)) as client:
        assert client.get("/api/jobs", headers=bearer(token)).status_code == 401
        assert session_rows(clean_db) == []
        assert client.post("/api/session", json={"password": ADMIN_PASSWORD}).status_code == 401
        assert login(client, "a-brand-new-password")


def test_login_with_an_argon2_hash_configured(clean_db: Path, clock: ManualClock) -> None:
    """ADMIN_PASSWORD_HASH works instead of the clear password."""
    from argon2 import PasswordHasher

    hashed = PasswordHasher().hash("hashed-admin-password")
    settings = Settings(admin_password_hash=hashed, database_url=f"sqlite:///{clean_db}")
    with TestClient(create_app(settings, clock)) as client:
        assert client.post("/api/session", json={"password": "nope-nope-nope"}).status_code == 401
        assert login(client, "hashed-admin-password")


JSON = {"content-type": "application/json"}


def test_login_body_errors(client: TestClient) -> None:
    """Wrong content type 415; not JSON, wrong shape 400; wrong password 401, all JSON."""
    cases = [
        ({"content": b'{"password": "x"}', "headers": {"content-type": "text/plain"}}, 415),
        (
            {
                "content": b"password=x",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            415,
        ),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"[" * 5000, "headers": {"content-type": "application/json"}}, 400),
        ({"json": ["password"]}, 400),
        ({"json": {"password": 12345678901234}}, 400),
        ({"json": {"pass": ADMIN_PASSWORD}}, 400),
        ({"json": {"password": "wrong password here"}}, 401),
        ({"json": {"password": ""}}, 401),
        ({"content": b'{"password": "\\ud800 lone"}', "headers": JSON}, 401),
    ]
    for kwargs, status in cases:
        response = client.post("/api/session", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, kwargs
        assert set(response.json()) == {"error"}
