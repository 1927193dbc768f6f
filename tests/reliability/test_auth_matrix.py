"""Issue 6, "Auth and secrets": rows S9-S13 of the test matrix (``reference/reliability.md``),
each asserted by name against the real app in this process (under a TestClient, on the
test database; the Pipedrive fake over real HTTP where an API is needed).

S9 sessions, S10 the cookie, S11 CSRF, S12 login throttling, S13 secrets in logs, error
bodies and the status. ``test_secrets.py`` repeats S13 against the real processes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import ipaddress
import json
import logging
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from service import sessions
from service.app import create_app
from service.auth import COOKIE_NAME
from service.clock import ManualClock
from service.config import Settings
from service.logs import TOKEN_PATTERN, configure_logging
from service.passwords import AdminPassword
from service.throttle import MAX_FAILURES, WINDOW_SECONDS
from tests.conftest import ADMIN_PASSWORD, login
from tests.fakes import RunningFake

DAY = 24 * 3600
WEBHOOK = "/webhooks/pipedrive"
OUR_ORIGIN = "http://testserver"


# --- helpers ----------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a session token."""
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> str:
    """An HTTP Basic Authorization value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def session_rows(path: Path) -> list[tuple[str, int]]:
    """(id, expires_at) of every row of the session table, read directly."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT id, expires_at FROM session ORDER BY id").fetchall()


def bytes_read_elsewhere(path: Path) -> bytes:
    """The bytes of ``path``, read by a child process.

    Hazard: this process has the file open through SQLite. Closing any other descriptor of
    it here (``Path.read_bytes``) drops every POSIX lock the process holds on it, so the
    next process to close the database thinks it is the last, checkpoints and resets the
    WAL under our open connections, and the file ends up "malformed" (SQLite's
    howtocorrupt.html, 2.2).
    """
    reader = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    done = subprocess.run(
        [sys.executable, "-c", reader, str(path)], capture_output=True, check=True, timeout=30
    )
    return done.stdout


def random_part(token: str) -> bytes:
    """The random bytes behind a token's ``pbs_`` prefix (base64url without padding)."""
    assert token.startswith(sessions.TOKEN_PREFIX), token
    text = token.removeprefix(sessions.TOKEN_PREFIX)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_cookie(set_cookie: str) -> tuple[str, str, dict[str, str]]:
    """Name, value and attributes (lower-cased names) of a ``Set-Cookie`` value."""
    first, *attributes = (part.strip() for part in set_cookie.split(";"))
    name, _, value = first.partition("=")
    parsed = {}
    for attribute in attributes:
        key, _, attribute_value = attribute.partition("=")
        parsed[key.lower()] = attribute_value
    return name, value, parsed


def session_cookie_of(response: httpx2.Response) -> tuple[str, dict[str, str]]:
    """The session cookie a response sets: its value and attributes (exactly one)."""
    cookies = [
        parse_cookie(value)
        for value in response.headers.get_list("set-cookie")
        if value.startswith(f"{COOKIE_NAME}=")
    ]
    assert len(cookies) == 1, response.headers
    _, value, attributes = cookies[0]
    return value, attributes


def assert_session_cookie_attributes(attributes: dict[str, str], secure: bool) -> None:
    """HttpOnly, SameSite=Lax, Path=/, and Secure exactly when expected."""
    assert "httponly" in attributes, attributes
    assert attributes.get("samesite") == "Lax", attributes
    assert attributes.get("path") == "/", attributes
    assert ("secure" in attributes) is secure, attributes


def app_client(settings: Settings, clock: ManualClock, **kwargs: Any) -> TestClient:
    """A TestClient of a new app on ``settings`` (enter it to run the lifespan)."""
    return TestClient(create_app(settings, clock, enqueue_job=lambda job_id: None), **kwargs)


# --- S9: sessions -----------------------------------------------------------------------


def test_S9_tokens_carry_at_least_120_random_bits_from_a_csprng(client: TestClient) -> None:
    """Every token has >= 120 bits behind its prefix, all distinct and evenly spread, and
    none is derived from the ``random`` module: reseeding it identically does not repeat a
    token (a Mersenne-Twister token would)."""
    state = random.getstate()
    try:
        random.seed(1234)
        first = login(client)
        random.seed(1234)
        second = login(client)
    finally:
        random.setstate(state)
    assert first != second
    tokens = [first, second] + [login(client) for _ in range(62)]
    assert len(set(tokens)) == len(tokens)
    raws = [random_part(token) for token in tokens]
    assert min(len(raw) for raw in raws) * 8 >= 120
    # Every byte position varies across the tokens (no constant or counter-like chunk)...
    for position in range(min(len(raw) for raw in raws)):
        assert len({raw[position] for raw in raws}) > 1, position
    # ... and the bits are balanced (64 x 256 bits: 0.45-0.55 is over ten standard deviations).
    ones = sum(bin(byte).count("1") for raw in raws for byte in raw)
    assert 0.45 < ones / sum(8 * len(raw) for raw in raws) < 0.55
    # The shape log redaction recognises wherever a token might leak (S13).
    assert all(TOKEN_PATTERN.fullmatch(token) for token in tokens)


def test_S9_only_the_tokens_hash_is_stored(client: TestClient, clean_db: Path) -> None:
    """The session row's id is SHA-256(token); the token is nowhere in the database (not in
    a dump, not in the file or its WAL), and the stored hash is not a credential."""
    token = login(client)
    ((stored_id, _),) = session_rows(clean_db)
    assert stored_id == hashlib.sha256(token.encode()).hexdigest()
    random_text = token.removeprefix(sessions.TOKEN_PREFIX)
    with contextlib.closing(sqlite3.connect(clean_db)) as connection:
        dump = "\n".join(connection.iterdump())
    assert token not in dump and random_text not in dump
    for path in (clean_db, clean_db.with_name(clean_db.name + "-wal")):
        if path.exists():
            assert random_text.encode() not in bytes_read_elsewhere(path), path
    client.cookies.clear()
    assert client.get("/api/jobs", headers=bearer(stored_id)).status_code == 401
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200


def test_S9_expiry_slides_with_use_and_an_idle_session_dies(
    client: TestClient, clock: ManualClock, clean_db: Path
) -> None:
    """30 days; a use with more than 15 days left changes nothing, a use with less pushes
    it to 30 days from that use; left unused past its expiry it is refused and removed."""
    token = login(client)
    client.cookies.clear()
    ((_, issued),) = session_rows(clean_db)
    assert issued == clock.now() + 30 * DAY
    clock.advance(14 * DAY)
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    assert session_rows(clean_db)[0][1] == issued
    clock.advance(2 * DAY)
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    ((_, slid),) = session_rows(clean_db)
    assert slid == clock.now() + 30 * DAY > issued
    clock.advance(30 * DAY - 1)
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 200  # slides again
    clock.advance(30 * DAY)
    assert client.get("/api/jobs", headers=bearer(token)).status_code == 401
    assert session_rows(clean_db) == []


def test_S9_each_login_starts_a_new_session(client: TestClient, clean_db: Path) -> None:
    """A login never reuses the session the client already holds (no fixation): a new
    token, a new row, a new cookie; the sessions end independently."""
    first = login(client)
    assert client.cookies.get(COOKIE_NAME) == first
    response = client.post("/api/session", json={"password": ADMIN_PASSWORD})  # cookie sent
    assert response.status_code == 201
    second = response.json()["token"]
    assert second != first
    assert session_cookie_of(response)[0] == second
    assert len(session_rows(clean_db)) == 2
    client.cookies.clear()
    assert client.delete("/api/session", headers=bearer(first)).status_code == 204
    assert client.get("/api/jobs", headers=bearer(first)).status_code == 401
    assert client.get("/api/jobs", headers=bearer(second)).status_code == 200


def test_S9_old_tokens_are_invalid_after_the_admin_password_changes(
    settings: Settings, clock: ManualClock, clean_db: Path
) -> None:
    """A restart with the same password keeps sessions; one with a new password ends them
    all, by bearer and by cookie, and only the new password logs in."""
    with app_client(settings, clock) as client:
        token = login(client)
    assert not sessions.end_sessions_if_password_changed(AdminPassword(plain=ADMIN_PASSWORD))
    with app_client(settings, clock) as client:
        assert client.get("/api/jobs", headers=bearer(token)).status_code == 200
    changed = dataclasses.replace(settings, admin_password="another-admin-password-S9")
    with app_client(changed, clock, cookies={COOKIE_NAME: token}) as client:
        by_cookie = client.get("/api/jobs")
        assert by_cookie.status_code == 401
        assert session_cookie_of(by_cookie)[1].get("max-age") == "0"  # the cookie is cleared
        client.cookies.clear()
        assert client.get("/api/jobs", headers=bearer(token)).status_code == 401
        assert session_rows(clean_db) == []
        old = client.post("/api/session", json={"password": ADMIN_PASSWORD})
        assert old.status_code == 401
        assert login(client, "another-admin-password-S9")


# --- S10: the cookie --------------------------------------------------------------------


def test_S10_the_cookie_is_httponly_samesite_lax_path_root(client: TestClient) -> None:
    """Over plain http: HttpOnly, SameSite=Lax, Path=/, and not Secure (it would never be
    sent back)."""
    response = client.post("/api/session", json={"password": ADMIN_PASSWORD})
    value, attributes = session_cookie_of(response)
    assert value == response.json()["token"]
    assert_session_cookie_attributes(attributes, secure=False)
    assert attributes["max-age"] == str(30 * DAY)


def test_S10_the_cookie_is_secure_over_https(settings: Settings, clock: ManualClock) -> None:
    """A login that came over https gets a Secure cookie, the logout's clearing one too."""
    with app_client(settings, clock, base_url="https://testserver") as client:
        response = client.post("/api/session", json={"password": ADMIN_PASSWORD})
        assert_session_cookie_attributes(session_cookie_of(response)[1], secure=True)
        logout = client.delete("/api/session", headers={"Origin": "https://testserver"})
        assert logout.status_code == 204
        assert_session_cookie_attributes(session_cookie_of(logout)[1], secure=True)


def test_S10_secure_behind_a_trusted_proxy_only(settings: Settings, clock: ManualClock) -> None:
    """``X-Forwarded-Proto: https`` from a trusted proxy makes the cookie Secure; the same
    header from any other peer is ignored."""
    proxied = dataclasses.replace(settings, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    forwarded = {"X-Forwarded-Proto": "https"}
    with app_client(proxied, clock, client=("127.0.0.1", 5000)) as client:
        response = client.post("/api/session", json={"password": ADMIN_PASSWORD}, headers=forwarded)
        assert_session_cookie_attributes(session_cookie_of(response)[1], secure=True)
    with app_client(proxied, clock, client=("203.0.113.7", 5000)) as client:
        response = client.post("/api/session", json={"password": ADMIN_PASSWORD}, headers=forwarded)
        assert_session_cookie_attributes(session_cookie_of(response)[1], secure=False)


def test_S10_cookies_the_auth_layer_sets_are_secure_under_an_https_public_url(
    settings: Settings, clock: ManualClock
) -> None:
    """With ``PUBLIC_URL`` https (a TLS proxy that is not in TRUSTED_PROXIES), the cookie the
    auth middleware renews on a sliding use, and the one it clears on a dead session, are
    Secure and keep HttpOnly, SameSite=Lax, Path=/."""
    public = dataclasses.replace(settings, public_url="https://sync.example.com")
    with app_client(public, clock) as client:
        token = login(client)
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, token)
        clock.advance(20 * DAY)
        renewed = client.get("/api/jobs")
        assert renewed.status_code == 200
        value, attributes = session_cookie_of(renewed)
        assert value == token
        assert_session_cookie_attributes(attributes, secure=True)
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, token + "x")
        dead = client.get("/api/jobs")
        assert dead.status_code == 401
        assert_session_cookie_attributes(session_cookie_of(dead)[1], secure=True)


def test_S10_the_login_cookie_is_secure_under_an_https_public_url(
    settings: Settings, clock: ManualClock
) -> None:
    """The login's cookie (and the logout's clearing one) are Secure when ``PUBLIC_URL`` is
    https, even though the proxy in front is not trusted to say so."""
    public = dataclasses.replace(settings, public_url="https://sync.example.com")
    with app_client(public, clock) as client:
        response = client.post("/api/session", json={"password": ADMIN_PASSWORD})
        assert_session_cookie_attributes(session_cookie_of(response)[1], secure=True)
        # By bearer: the client rightly keeps a Secure cookie to itself over plain http.
        logout = client.delete("/api/session", headers=bearer(response.json()["token"]))
        assert logout.status_code == 204
        assert_session_cookie_attributes(session_cookie_of(logout)[1], secure=True)


# --- S11: CSRF --------------------------------------------------------------------------

FILTER_ID = 7


class Enqueued:
    """Records the job ids the app puts on the queue."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def __call__(self, job_id: int) -> None:
        self.ids.append(job_id)


@pytest.fixture
def enqueued() -> Enqueued:
    """The job ids the S11 app enqueued."""
    return Enqueued()


@pytest.fixture
def cookie_client(
    settings: Settings, clock: ManualClock, clean_db: Path, enqueued: Enqueued
) -> Iterator[TestClient]:
    """An app with one refreshed filter, and a client logged in by cookie only."""
    with contextlib.closing(sqlite3.connect(clean_db, isolation_level=None)) as connection:
        connection.execute(
            "INSERT INTO filters (id, name, type, brevo_list_id) VALUES (?, 'S11', 'people', 11)",
            (FILTER_ID,),
        )
    with TestClient(create_app(settings, clock, enqueue_job=enqueued)) as client:
        login(client)
        assert client.cookies.get(COOKIE_NAME)
        yield client


def jobs_of(path: Path) -> int:
    """How many sync jobs exist."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        count: int = connection.execute("SELECT COUNT(*) FROM sync_jobs").fetchone()[0]
        return count


SYNC = f"/api/filters/{FILTER_ID}/sync"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": OUR_ORIGIN, "Sec-Fetch-Site": "cross-site"},
        {"Origin": OUR_ORIGIN, "Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "http://testserver:8080"},
        {"Origin": "null"},
        {"Origin": "not a url"},
        {"Referer": "https://evil.example/form"},
        {},
        {"Origin": "https://evil.example", "Content-Type": "text/plain"},
    ],
    ids=[
        "sec-fetch-cross-site",
        "sec-fetch-same-site",
        "foreign-origin",
        "lookalike-origin",
        "other-port",
        "null-origin",
        "garbled-origin",
        "foreign-referer",
        "no-origin",
        "foreign-text-plain",
    ],
)
def test_S11_a_cross_site_cookie_post_is_refused_with_403(
    cookie_client: TestClient, clean_db: Path, enqueued: Enqueued, headers: dict[str, str]
) -> None:
    """A cross-site ``Sec-Fetch-Site``, a foreign, garbled or missing ``Origin``: 403 before
    the route runs (no job), and the session itself survives."""
    response = cookie_client.post(SYNC, headers=headers, content=b"force=true")
    assert response.status_code == 403, response.text
    assert response.json() == {"error": "cross-origin request refused"}
    assert jobs_of(clean_db) == 0 and enqueued.ids == []
    assert cookie_client.get("/api/jobs").status_code == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_S11_a_form_body_is_refused_with_415(
    cookie_client: TestClient, clean_db: Path, enqueued: Enqueued, content_type: str
) -> None:
    """The bodies a cross-site form can send without a preflight are refused even from our
    own origin (defence in depth should the Origin check ever be fooled): 415, no job."""
    response = cookie_client.post(
        SYNC,
        headers={"Origin": OUR_ORIGIN, "Content-Type": content_type},
        content=b"force=true",
    )
    assert response.status_code == 415, response.text
    assert set(response.json()) == {"error"}
    assert jobs_of(clean_db) == 0 and enqueued.ids == []


def test_S11_our_own_origin_with_json_or_no_body_is_served(
    cookie_client: TestClient, clean_db: Path, enqueued: Enqueued
) -> None:
    """The checks refuse only what they should: from our origin, a write with no body or a
    JSON body goes through (the control for the two tests above)."""
    response = cookie_client.post(
        SYNC, headers={"Origin": OUR_ORIGIN, "Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 202, response.text
    assert jobs_of(clean_db) == 1 and len(enqueued.ids) == 1
    logout = cookie_client.request(
        "DELETE",
        "/api/session",
        headers={"Origin": OUR_ORIGIN, "Content-Type": "application/json; charset=utf-8"},
        content=b"{}",
    )
    assert logout.status_code == 204


# --- S12: login throttling --------------------------------------------------------------

WRONG = "wrong-password-S12"


class CountingVerify:
    """Wraps the app's ``AdminPassword.verify`` and counts the calls that reach it."""

    def __init__(self, password: AdminPassword) -> None:
        self.verify = password.verify
        self.calls = 0

    def __call__(self, candidate: str) -> bool:
        self.calls += 1
        return self.verify(candidate)


@pytest.fixture
def hashed_settings(settings: Settings) -> Settings:
    """Settings with ``ADMIN_PASSWORD_HASH`` (argon2id): every verify is a real argon2 run."""
    return dataclasses.replace(
        settings, admin_password=None, admin_password_hash=PasswordHasher().hash(ADMIN_PASSWORD)
    )


@pytest.fixture
def throttled_app(
    hashed_settings: Settings, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, CountingVerify]]:
    """The app with the argon2 password, and the counter of password checks it makes."""
    app = create_app(hashed_settings, clock, enqueue_job=lambda job_id: None)
    password = app.state.context.password
    counter = CountingVerify(password)
    monkeypatch.setattr(password, "verify", counter)
    with TestClient(app) as client:
        yield client, counter


def attempt(client: TestClient, password: str) -> httpx2.Response:
    """One login attempt."""
    return client.post("/api/session", json={"password": password})


def test_S12_a_throttled_client_never_reaches_the_password_check(
    throttled_app: tuple[TestClient, CountingVerify],
) -> None:
    """Ten failures cost ten argon2 checks; after that every attempt, the right password
    included, is 429 and costs none (a flood burns no CPU on hashing)."""
    client, verify = throttled_app
    assert [attempt(client, WRONG).status_code for _ in range(MAX_FAILURES)] == [401] * 10
    assert verify.calls == MAX_FAILURES
    later = [attempt(client, password) for password in [ADMIN_PASSWORD, WRONG] * 10]
    assert [response.status_code for response in later] == [429] * 20
    assert verify.calls == MAX_FAILURES


def test_S12_the_429_says_when_to_retry_and_lifts_then(
    throttled_app: tuple[TestClient, CountingVerify], clock: ManualClock
) -> None:
    """429 with ``Retry-After`` in whole seconds; once that has passed the right password
    logs in."""
    client, _ = throttled_app
    for _ in range(MAX_FAILURES):
        attempt(client, WRONG)
    response = attempt(client, ADMIN_PASSWORD)
    assert response.status_code == 429
    wait = int(response.headers["retry-after"])
    assert wait == WINDOW_SECONDS
    clock.advance(wait - 1)
    assert attempt(client, ADMIN_PASSWORD).headers["retry-after"] == "1"
    clock.advance(1)
    assert attempt(client, ADMIN_PASSWORD).status_code == 201


def test_S12_failures_say_nothing_about_what_was_wrong(
    throttled_app: tuple[TestClient, CountingVerify], settings: Settings, clock: ManualClock
) -> None:
    """Every wrong admin password gets the same 401 body (empty, short, long, one character
    off, other case); the 429 names no candidate; and the webhook answers a wrong user, a
    wrong password and a garbled header identically."""
    client, _ = throttled_app
    near_miss = ADMIN_PASSWORD[:-1] + ("x" if ADMIN_PASSWORD[-1] != "x" else "y")
    candidates = ["", "short", "x" * 500, near_miss, ADMIN_PASSWORD.upper(), " " + ADMIN_PASSWORD]
    bodies = {attempt(client, candidate).text for candidate in candidates}
    assert bodies == {json.dumps({"error": "invalid password"}, separators=(",", ":"))}
    for _ in range(MAX_FAILURES):
        attempt(client, WRONG)
    throttled = attempt(client, near_miss)
    assert throttled.status_code == 429
    assert near_miss not in throttled.text and "password" not in throttled.text

    hooked = dataclasses.replace(settings, webhook_user="hook-user", webhook_password="hook-pass")
    with app_client(hooked, clock) as hook:
        answers = set()
        for authorization in (
            basic("hook-user", "wrong-pass"),
            basic("wrong-user", "hook-pass"),
            basic("wrong-user", "wrong-pass"),
            "Basic !!!",
        ):
            response = hook.post(
                WEBHOOK,
                content=b"{}",
                headers={"Authorization": authorization, "Content-Type": "application/json"},
            )
            assert response.status_code == 401
            answers.add((response.text, response.headers["www-authenticate"]))
        assert len(answers) == 1


# --- S13: secrets -----------------------------------------------------------------------

S13 = {
    "admin_password": "S13-admin-Quartz-7741-password",
    "pipedrive_api_token": "S13pdtoken0123456789abcdef0123456789abcdef",
    "brevo_api_key": "xkeysib-S13-brevo-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "webhook_password": "S13-hook-Basalt-9902-secret",
}
HOOK_USER = "s13-hook-user"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Logging configured as a ``pbsync`` process configures it (JSON lines, secrets
    redacted), at DEBUG, into a buffer; the previous handlers come back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging("DEBUG", list(S13.values()), stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def forbidden_forms(secret: str) -> set[str]:
    """A secret as it could leak: itself, URL-encoded, JSON-escaped and base64-encoded."""
    return {
        secret,
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        base64.b64encode(secret.encode()).decode(),
    }


def test_S13_secrets_stay_out_of_logs_error_bodies_and_the_status(
    settings: Settings,
    clock: ManualClock,
    pipedrive_fake: RunningFake,
    log_stream: io.StringIO,
) -> None:
    """Logins good and bad, wrong tokens, webhooks with good, wrong and garbled credentials,
    Pipedrive refusing the token and answering 500, the status: no API key, password or
    session token appears in a log line, an error body or the status document."""
    configured = dataclasses.replace(
        settings,
        admin_password=S13["admin_password"],
        pipedrive_api_token=S13["pipedrive_api_token"],
        pipedrive_base_url=pipedrive_fake.url,
        brevo_api_key=S13["brevo_api_key"],
        webhook_user=HOOK_USER,
        webhook_password=S13["webhook_password"],
    )
    near_miss = S13["admin_password"][:-1] + "X"
    wrong_hook = S13["webhook_password"] + "-wrong"
    answers: list[tuple[str, httpx2.Response]] = []

    def call(what: str, response: httpx2.Response) -> httpx2.Response:
        answers.append((what, response))
        return response

    with app_client(configured, clock) as client:
        call("bad login", client.post("/api/session", json={"password": near_miss}))
        issued = call(
            "login", client.post("/api/session", json={"password": S13["admin_password"]})
        )
        assert issued.status_code == 201
        token = issued.json()["token"]
        client.cookies.clear()
        auth = bearer(token)
        wrong_token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        call("wrong token", client.get("/api/jobs", headers=bearer(wrong_token)))
        call("wrong scheme", client.get("/api/jobs", headers={"Authorization": f"Token {token}"}))
        call(
            "basic admin",
            client.get("/api/jobs", headers={"Authorization": basic("admin", near_miss)}),
        )
        json_type = {"Content-Type": "application/json"}
        good_hook = {"Authorization": basic(HOOK_USER, S13["webhook_password"]), **json_type}
        delivery = {"meta": {"id": "s13-1", "entity": "person", "action": "change"}, "data": {}}
        call("webhook", client.post(WEBHOOK, json=delivery, headers=good_hook))
        for authorization in (basic(HOOK_USER, wrong_hook), basic("x", S13["webhook_password"])):
            call(
                "webhook wrong",
                client.post(
                    WEBHOOK, json=delivery, headers={"Authorization": authorization, **json_type}
                ),
            )
        garbled = {"Authorization": "Basic " + S13["webhook_password"], **json_type}
        call("webhook garbled", client.post(WEBHOOK, json=delivery, headers=garbled))
        call("webhook bad json", client.post(WEBHOOK, content=b"{", headers=good_hook))
        call(
            "webhook text",
            client.post(
                WEBHOOK, content=b"{}", headers={**good_hook, "Content-Type": "text/plain"}
            ),
        )
        pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "not-the-service"})
        refused = call("refresh refused", client.post("/api/filters/refresh", headers=auth))
        assert refused.status_code == 502, refused.text
        pipedrive_fake.control(
            "PUT", "/_sandbox/settings", json={"token": S13["pipedrive_api_token"]}
        )
        # The service holds a refused credential back for a while (R12), then tries again.
        clock.advance(2 * 3600)
        pipedrive_fake.control(
            "PUT",
            "/_sandbox/faults",
            json={"faults": [{"kind": "500", "path": "/v1/filters", "count": 1}], "latency": []},
        )
        refreshed = call("refresh", client.post("/api/filters/refresh", headers=auth))
        assert refreshed.status_code == 200, refreshed.text
        status = call("status", client.get("/api/status", headers=auth))
        assert status.status_code == 200
        call("unknown", client.get("/api/nope", headers=auth))
        call("logout", client.delete("/api/session", headers=auth))
        call("after logout", client.get("/api/status", headers=auth))

    secrets = [*S13.values(), near_miss, wrong_hook, token, wrong_token]
    forbidden = set().union(*(forbidden_forms(secret) for secret in secrets))
    forbidden |= {
        token.removeprefix(sessions.TOKEN_PREFIX),
        base64.b64encode(f"{HOOK_USER}:{S13['webhook_password']}".encode()).decode(),
        base64.b64encode(f"{HOOK_USER}:{wrong_hook}".encode()).decode(),
    }
    logged = log_stream.getvalue()
    # The log check is not vacuous: the events above were logged.
    for message in ("admin login failed", "webhook authentication failed", "api call retried"):
        assert message in logged, message
    for line in logged.splitlines():
        assert not [form for form in forbidden if form in line], line
    for what, response in answers:
        text = response.text
        headers = dict(response.headers)
        if what == "login":
            # The one place the token belongs: the login's own body and cookie.
            text = text.replace(token, "")
            headers.pop("set-cookie")
        assert not [form for form in forbidden if form in text], (what, text)
        assert not [form for form in forbidden if form in str(headers)], (what, headers)
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}, (what, text)


def test_S13_a_credential_logged_in_any_shape_is_redacted(log_stream: io.StringIO) -> None:
    """Should code ever log a header, the redaction step still removes the credential: an
    Authorization value under its name, on its own in a field, inside a message or a dict,
    a token in a URL; configured secrets in clear. Ordinary words stay readable."""
    hook_basic = base64.b64encode(f"{HOOK_USER}:{S13['webhook_password']}".encode()).decode()
    other_basic = base64.b64encode(b"someone:a-password-we-never-configured").decode()
    opaque = "opaque-bearer-value-0123456789"
    log = logging.getLogger("s13")
    log.warning("refused", extra={"header": f"Basic {hook_basic}"})
    log.warning("refused %s", f"basic {other_basic}")
    log.warning(
        "headers %s", {"Authorization": f"Bearer {opaque}", "api-key": S13["brevo_api_key"]}
    )
    log.warning(
        "called", extra={"url": f"https://x.example/v1?api_token={S13['pipedrive_api_token']}"}
    )
    log.warning("basic checks passed for %s", "the bearer of good news")
    text = log_stream.getvalue()
    for leaked in (
        hook_basic,
        other_basic,
        opaque,
        S13["brevo_api_key"],
        S13["pipedrive_api_token"],
    ):
        assert leaked not in text, leaked
    assert "basic checks passed for the bearer of good news" in text
