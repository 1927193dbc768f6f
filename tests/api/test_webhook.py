"""POST /webhooks/pipedrive: HTTP Basic, the body checks, and every delivery stored once
before the answer; last, the fake Pipedrive delivering to a real ``pbsync web``."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from service import inbox
from service.api.webhook import MAX_WEBHOOK_BODY_BYTES
from service.app import create_app
from service.clients.pipedrive import PipedriveClient
from service.clients.usage import MemoryUsage
from service.clock import ManualClock
from service.config import Settings
from tests.conftest import Started, healthy, process_env, start_pbsync, wait_for
from tests.fakes import RunningFake

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "specs" / "pipedrive" / "examples"
USER = "pipedrive"
PASSWORD = "Hook-Pw:with-colon-Ünïcode-7781"
PATH = "/webhooks/pipedrive"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTH = {"Authorization": basic(USER, PASSWORD), "Content-Type": "application/json"}


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


class Drain:
    """Records drain hints; ``broken`` makes the hint fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.broken = False

    def __call__(self) -> None:
        if self.broken:
            raise ConnectionError("queue unreachable")
        self.calls += 1


@pytest.fixture
def drain() -> Drain:
    return Drain()


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return replace(settings, webhook_user=USER, webhook_password=PASSWORD)


@pytest.fixture
def hook(hook_settings: Settings, clock: ManualClock, drain: Drain) -> Iterator[TestClient]:
    """The app with webhook credentials, under a TestClient (no session anywhere)."""
    app = create_app(hook_settings, clock, enqueue_drain=drain)
    with TestClient(app) as test_client:
        yield test_client


def stored(path: Path) -> list[dict[str, Any]]:
    """The inbox rows, read through a new connection after the answer."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM inbox ORDER BY id")]


def post(client: TestClient, body: bytes | str | Any, **headers: str):
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(PATH, content=content, headers={**AUTH, **headers})


# --- real deliveries --------------------------------------------------------------------

# file -> (version, object, action, entity_id, occurred_at)
EXAMPLE_ROWS = {
    "v2_create_person.pipedrive-docs.json": ("2", "person", "create", 8, 1669295935),
    "v2_change_person.pipedrive-docs.json": ("2", "person", "change", 8, 1669303115),
    "v2_delete_person.pipedrive-docs.json": ("2", "person", "delete", 8, 1669303185),
    "v2_change_deal.pipedrive-docs.json": ("2", "deal", "change", 8, 1669302715),
    "v1_updated_person.pipedream.json": ("1", "person", "updated", 11, 1739827618),
    "v1_updated_deal.jeltev.json": ("1", "deal", "updated", 1, 1718178691),
}


def test_the_real_examples_are_received_and_stored(
    hook: TestClient, clean_db: Path, clock: ManualClock, drain: Drain
) -> None:
    """Each is answered "received" and is on disk with the right fields when answered."""
    for name, expected in EXAMPLE_ROWS.items():
        response = post(hook, example(name))
        assert response.status_code == 200, (name, response.text)
        assert response.json() == {"status": "received"}
        row = stored(clean_db)[-1]
        assert (
            row["version"],
            row["object"],
            row["action"],
            row["entity_id"],
            row["occurred_at"],
        ) == expected, name
        assert (row["status"], row["reason"], row["received_at"]) == ("pending", None, clock.now())
        assert row["payload"] == example(name).decode("utf-8")
    v2_keys = {row["event_key"] for row in stored(clean_db) if row["version"] == "2"}
    assert "v2:5359a602-6d1b-4562-a385-ccaa762bd722" in v2_keys
    # One hint covers a burst: the writer passes on at most one a second.
    assert drain.calls == 1


def test_a_v2_redelivery_is_a_duplicate_stored_once(
    hook: TestClient, clean_db: Path, drain: Drain
) -> None:
    """Attempts 2, 3 and 4 repeat meta.id: answered 200 "duplicate", no second row or hint."""
    body = json.loads(example("v2_change_person.pipedrive-docs.json"))
    assert post(hook, body).json() == {"status": "received"}
    for attempt in (2, 3, 4):
        again = copy.deepcopy(body)
        again["meta"]["attempt"] = attempt
        response = post(hook, again)
        assert response.status_code == 200 and response.json() == {"status": "duplicate"}
    rows = stored(clean_db)
    assert len(rows) == 1 and json.loads(rows[0]["payload"])["meta"]["attempt"] == 1
    assert drain.calls == 1


def test_a_v1_redelivery_is_a_duplicate_stored_once(hook: TestClient, clean_db: Path) -> None:
    """v1 retries 1 to 3 carry the same event under another ``retry``."""
    body = json.loads(example("v1_updated_person.pipedream.json"))
    assert post(hook, body).json() == {"status": "received"}
    for retry in (1, 2, 3):
        response = post(hook, {**body, "retry": retry})
        assert response.json() == {"status": "duplicate"}
    assert len(stored(clean_db)) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"entity": "activity"}, "object 'activity' is not used by the sync"),
        ({"id": None}, "no event id (meta.id)"),
        ({"entity_id": None}, "no entity id (meta.entity_id)"),
    ],
)
def test_deliveries_the_sync_cannot_use_are_stored_as_ignored(
    hook: TestClient, clean_db: Path, drain: Drain, change: dict[str, Any], reason: str
) -> None:
    """200 "ignored", kept with the reason; the drain is not hinted."""
    body = json.loads(example("v2_change_person.pipedrive-docs.json"))
    for name, value in change.items():
        if value is None:
            del body["meta"][name]
        else:
            body["meta"][name] = value
    response = post(hook, body)
    assert response.status_code == 200 and response.json() == {"status": "ignored"}
    (row,) = stored(clean_db)
    assert (row["status"], row["reason"]) == ("ignored", reason)
    assert drain.calls == 0


def test_json_that_is_no_delivery_at_all_is_stored_as_ignored(
    hook: TestClient, clean_db: Path
) -> None:
    """Authenticated but unknown: 200, so Pipedrive never counts it toward a ban."""
    response = post(hook, {"hello": "world"})
    assert response.json() == {"status": "ignored"}
    (row,) = stored(clean_db)
    assert row["version"] is None and "not a Pipedrive webhook" in row["reason"]


def test_a_failing_drain_hint_does_not_fail_the_delivery(
    hook: TestClient, clean_db: Path, drain: Drain
) -> None:
    """The row is committed; the sweeper finds it without the hint."""
    drain.broken = True
    response = post(hook, example("v2_create_person.pipedrive-docs.json"))
    assert response.status_code == 200 and response.json() == {"status": "received"}
    assert len(stored(clean_db)) == 1


def test_a_delivery_that_cannot_be_stored_is_not_acknowledged(
    hook: TestClient, clean_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No commit, no 2xx: 503 so Pipedrive retries."""

    def locked(*args: object) -> str:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(inbox, "store_many", locked)
    response = post(hook, example("v2_create_person.pipedrive-docs.json"))
    assert response.status_code == 503
    assert response.json() == {"error": "the delivery could not be stored; try again"}


def test_the_default_app_hints_the_drain_once_per_second_on_the_queue(
    hook_settings: Settings, clock: ManualClock, clean_db: Path, tmp_path: Path
) -> None:
    """Without an injected hook, a received delivery schedules the huey ``drain_inbox``
    task, delayed by the coalesce window; a burst right after it adds no second hint."""
    from workers.queue import build_huey
    from workers.tasks import register_tasks

    hook_settings = replace(hook_settings, queue_url=f"sqlite:///{tmp_path / 'queue.db'}")
    with TestClient(create_app(hook_settings, clock)) as client:
        first = post(client, example("v2_create_person.pipedrive-docs.json"))
        second = post(client, example("v2_change_person.pipedrive-docs.json"))
    assert first.json() == {"status": "received"} and second.json() == {"status": "received"}
    assert len(stored(clean_db)) == 2
    # huey queues a delayed task with its eta; the consumer holds it until then.
    queue = build_huey(hook_settings.queue_url)
    register_tasks(queue, hook_settings)  # so that the queued messages can be read back
    queued = queue.pending()
    assert [task.name for task in queued] == ["drain_inbox"]
    assert queued[0].eta is not None


# --- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        basic(USER, PASSWORD + "x"),
        basic(USER, PASSWORD.split(":")[0]),  # the part before the password's own colon
        basic(USER, "pässwörd"),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "Basic",
    ],
)
def test_missing_or_wrong_credentials_get_401_with_a_challenge(
    hook: TestClient, clean_db: Path, authorization: str | None
) -> None:
    """Never a 500, never stored; the challenge names the realm."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = hook.post(
        PATH, content=example("v2_create_person.pipedrive-docs.json"), headers=headers
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="pipedrive-webhooks"'
    assert response.json() == {"error": "valid HTTP Basic credentials are required"}
    assert stored(clean_db) == []


def test_the_password_is_never_logged(hook: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the right one nor a wrong one."""
    caplog.set_level(logging.DEBUG)
    post(hook, example("v2_create_person.pipedrive-docs.json"))
    post(hook, b"{}", Authorization=basic(USER, "Wrong-Guess-Pw-1234"))
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "webhook authentication failed" in text
    assert PASSWORD not in text and "Wrong-Guess-Pw-1234" not in text


def test_no_webhook_credentials_configured_is_a_clear_503(
    settings: Settings, clock: ManualClock, clean_db: Path
) -> None:
    """Nothing can be checked, so nothing is accepted; the error says what to set."""
    with TestClient(create_app(replace(settings, webhook_user=USER), clock)) as client:
        response = post(client, example("v2_create_person.pipedrive-docs.json"))
    assert response.status_code == 503
    assert "WEBHOOK_USER and WEBHOOK_PASSWORD" in response.json()["error"]
    assert stored(clean_db) == []


def test_no_session_is_needed_and_a_session_does_not_replace_basic(hook: TestClient) -> None:
    """The /api session middleware leaves the webhook alone, both ways."""
    token = hook.post("/api/session", json={"password": "correct-horse-battery"}).json()["token"]
    response = hook.post(
        PATH,
        content=example("v2_create_person.pipedrive-docs.json"),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 401


# --- the body ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_anything_but_json_gets_415(
    hook: TestClient, clean_db: Path, content_type: str | None
) -> None:
    headers = {"Authorization": AUTH["Authorization"]}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = hook.post(
        PATH, content=example("v2_create_person.pipedrive-docs.json"), headers=headers
    )
    assert response.status_code == 415
    assert response.json() == {"error": "send the delivery as application/json"}
    assert stored(clean_db) == []


def test_json_with_a_charset_is_accepted(hook: TestClient) -> None:
    response = post(
        hook,
        example("v2_create_person.pipedrive-docs.json"),
        **{"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200


def padded(size: int) -> bytes:
    """An ignorable JSON object of exactly ``size`` bytes."""
    head, tail = b'{"pad": "', b'"}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def test_a_body_over_256_kib_gets_413(hook: TestClient, clean_db: Path) -> None:
    """Announced or chunked; exactly 256 KiB still passes."""
    response = post(hook, padded(MAX_WEBHOOK_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large"}

    def chunks() -> Iterator[bytes]:
        body = padded(MAX_WEBHOOK_BODY_BYTES + 1)
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = hook.post(PATH, content=chunks(), headers=AUTH)
    assert response.status_code == 413
    assert stored(clean_db) == []

    response = post(hook, padded(MAX_WEBHOOK_BODY_BYTES))
    assert response.status_code == 200 and response.json() == {"status": "ignored"}


def test_the_oversize_check_comes_before_authentication(hook: TestClient) -> None:
    """An unauthenticated client cannot make us read a big body."""
    response = hook.post(
        PATH,
        content=padded(MAX_WEBHOOK_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_other_routes_keep_the_1_mib_limit(hook: TestClient) -> None:
    """A 300 KiB login body is read (and is a wrong password), not refused."""
    response = hook.post(
        "/api/session",
        content=b'{"password": "' + b"a" * 300_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401


def nested(depth: int) -> bytes:
    return ('{"x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}").encode()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"meta": {', "the body is not valid JSON"),
        (b'{"meta": "\xff"}', "the body is not valid UTF-8"),
        (b'[{"meta": {}}]', "the body must be a JSON object"),
        (nested(65), "the JSON is nested deeper than 64 levels"),
        (b"[" * 100_000, "the JSON is nested deeper than 64 levels"),
    ],
)
def test_bodies_that_are_not_a_json_object_get_400(
    hook: TestClient, clean_db: Path, body: bytes, error: str
) -> None:
    response = post(hook, body)
    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert stored(clean_db) == []


def test_nesting_of_64_levels_is_accepted(hook: TestClient) -> None:
    response = post(hook, nested(64))
    assert response.status_code == 200 and response.json() == {"status": "ignored"}


def test_other_methods_get_a_json_405(hook: TestClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = hook.request(method, PATH, headers=AUTH)
        assert response.status_code == 405, method
        assert response.json() == {"error": "method not allowed"}
        assert response.headers["allow"] == "POST"


# --- S2: a flood of failed authentications --------------------------------------------

ATTACKER = ("203.0.113.7", 40000)
NEIGHBOUR = ("198.51.100.2", 40000)
WRONG = {"Authorization": basic(USER, "Wrong-Guess-Pw-1234"), "Content-Type": "application/json"}


def flood(client: TestClient, times: int) -> list[int]:
    """``times`` deliveries with a wrong password; their statuses."""
    body = example("v2_create_person.pipedrive-docs.json")
    return [client.post(PATH, content=body, headers=WRONG).status_code for _ in range(times)]


def test_S2_a_flood_of_failed_auth_gets_429_for_that_address_only(
    hook_settings: Settings, clock: ManualClock, drain: Drain, clean_db: Path
) -> None:
    """After 20 failures in a minute the address gets 429 with Retry-After and the JSON
    error, even with the right credentials; another address is served (and its wrong
    password still gets 401); once the window frees up the first address is served."""
    app = create_app(hook_settings, clock, enqueue_drain=drain)
    with TestClient(app, client=ATTACKER) as attacker:
        neighbour = TestClient(app, client=NEIGHBOUR)
        assert flood(attacker, 20) == [401] * 20
        refused = flood(attacker, 1)
        response = post(attacker, example("v2_create_person.pipedrive-docs.json"))
        assert refused == [429] and response.status_code == 429
        assert response.headers["retry-after"] == "60"
        assert response.json() == {"error": "too many failed authentications; try again later"}
        assert "www-authenticate" not in response.headers

        response = post(neighbour, example("v2_create_person.pipedrive-docs.json"))
        assert response.status_code == 200 and response.json() == {"status": "received"}
        assert flood(neighbour, 1) == [401]

        clock.advance(45)
        assert post(attacker, b"{}").headers["retry-after"] == "15"
        clock.advance(15)
        response = post(attacker, example("v2_change_person.pipedrive-docs.json"))
        assert response.status_code == 200, response.text
    assert len(stored(clean_db)) == 2


def test_S2_the_refusal_comes_before_the_credentials_are_compared(
    hook: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused address learns nothing from its guesses, and costs no comparison."""
    from service.api import webhook

    compared = 0
    real = webhook.credentials_match

    def counting(*args: Any) -> bool:
        nonlocal compared
        compared += 1
        return real(*args)

    monkeypatch.setattr(webhook, "credentials_match", counting)
    assert flood(hook, 20) == [401] * 20
    assert compared == 20
    assert flood(hook, 5) == [429] * 5
    assert post(hook, b"{}").status_code == 429
    assert compared == 20


def test_S2_the_throttle_is_logged_once_without_secrets(
    hook: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning when the address starts being refused, naming it; no password."""
    caplog.set_level(logging.DEBUG)
    flood(hook, 30)
    throttled = [r for r in caplog.records if r.getMessage() == "webhook authentication throttled"]
    assert len(throttled) == 1
    assert throttled[0].levelno == logging.WARNING
    assert throttled[0].__dict__["client"] == "testclient"
    failed = [r for r in caplog.records if r.getMessage() == "webhook authentication failed"]
    assert len(failed) == 20
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert PASSWORD not in text and "Wrong-Guess-Pw-1234" not in text


def test_S2_behind_a_trusted_proxy_each_client_address_is_counted(
    hook_settings: Settings, clock: ManualClock, drain: Drain
) -> None:
    """The address comes from X-Forwarded-For as for the login throttle: the flooding
    client is refused, Pipedrive behind the same proxy is not."""
    import ipaddress

    proxied = replace(hook_settings, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    app = create_app(proxied, clock, enqueue_drain=drain)
    body = example("v2_create_person.pipedrive-docs.json")
    attacker = {**WRONG, "X-Forwarded-For": "203.0.113.9"}
    pipedrive = {**AUTH, "X-Forwarded-For": "185.166.143.1"}
    with TestClient(app, client=("127.0.0.1", 5000)) as proxy:
        assert [
            proxy.post(PATH, content=body, headers=attacker).status_code for _ in range(21)
        ] == [401] * 20 + [429]
        # A spoofed left-most entry does not help: the proxy appended the real address.
        spoofed = {**attacker, "X-Forwarded-For": "1.2.3.4, 203.0.113.9"}
        assert proxy.post(PATH, content=body, headers=spoofed).status_code == 429
        assert proxy.post(PATH, content=body, headers=pipedrive).status_code == 200


# --- the real thing ---------------------------------------------------------------------


@pytest.mark.integration
def test_the_fake_pipedrive_delivers_to_a_real_web_process(
    tmp_path: Path, started: Started, pipedrive_fake: RunningFake
) -> None:
    """v1 and v2 webhooks registered in the fake through the client; a person changed
    through its control API; both deliveries answered 200 and their rows on disk. A webhook
    with a wrong password is refused with 401."""
    env = process_env(tmp_path, WEBHOOK_USER=USER, WEBHOOK_PASSWORD=PASSWORD)
    web = start_pbsync("web", env, tmp_path / "web.log")
    started.processes.append(web)
    wait_for(lambda: healthy(env["PORT"]) or web.poll() is not None, timeout=20)
    assert web.poll() is None, (tmp_path / "web.log").read_text()

    url = f"http://127.0.0.1:{env['PORT']}{PATH}"
    client = PipedriveClient(pipedrive_fake.url, "pd-token", usage=MemoryUsage())
    v2 = client.create_webhook(url, "*", "person", "sync v2", USER, PASSWORD)
    v1 = client.create_webhook(url, "*", "person", "sync v1", USER, PASSWORD, version="1.0")
    wrong = client.create_webhook(url, "change", "person", "wrong", USER, "not-the-password")

    pipedrive_fake.control("PATCH", "/_sandbox/persons/7", json={"first_name": "Hooked"})

    database = tmp_path / "app.db"

    def rows() -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as connection:
            return connection.execute(
                "SELECT version, object, action, entity_id, status, event_key FROM inbox "
                "ORDER BY version"
            ).fetchall()

    found = wait_for(lambda: rows() if len(rows()) == 2 else None, timeout=15)
    assert [row[:5] for row in found] == [
        ("1", "person", "updated", 7, "pending"),
        ("2", "person", "change", 7, "pending"),
    ]

    def deliveries() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = pipedrive_fake.control("GET", "/_sandbox/deliveries").json()[
            "deliveries"
        ]
        return items

    first_attempts = wait_for(
        lambda: (lambda d: d if len(d) == 3 else None)(
            [d for d in deliveries() if d["attempt"] == 1]
        ),
        timeout=15,
    )
    by_webhook = {d["webhook_id"]: d for d in first_attempts}
    assert by_webhook[v2.id]["status"] == 200 and by_webhook[v1.id]["status"] == 200
    assert by_webhook[wrong.id]["status"] == 401
    assert f"v2:{by_webhook[v2.id]['event_id']}" == found[1][5]
    web.terminate()
    web.wait(15)
