"""The bad-input cases S1 and S3 to S7 of the reliability matrix (``reference/reliability.md``,
section 6 and the matrix at its end), one test per case, named by its id.

Everything goes through the whole app: a TestClient, or for S3 a real uvicorn server on a
loopback port spoken to over a raw socket, so that what the server reads is under test.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sandbox.server import ThreadedServer
from service.api import webhook as webhook_api
from service.api.responses import render_json
from service.app import create_app
from service.clock import ManualClock
from service.config import Settings
from service.logs import JsonFormatter, Redactor
from tests.api.test_webhook import PATH, example, stored
from tests.conftest import login

USER = "pipedrive"
# A colon (RFC 7617: only the first one separates the user) and an umlaut (non-ASCII:
# hmac.compare_digest refuses such a str, so the comparison must be on bytes).
PASSWORD = "Pässwort:mit:Doppelpunkt-7781"
PERSON = "v2_change_person.pipedrive-docs.json"


def basic(user: str | bytes, password: str | bytes, encoding: str = "utf-8") -> str:
    """A Basic Authorization header; str parts are encoded with ``encoding``."""
    raw_user = user.encode(encoding) if isinstance(user, str) else user
    raw_password = password.encode(encoding) if isinstance(password, str) else password
    return "Basic " + base64.b64encode(raw_user + b":" + raw_password).decode()


RIGHT = {"Authorization": basic(USER, PASSWORD), "Content-Type": "application/json"}


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    """Settings with the webhook credentials."""
    return replace(settings, webhook_user=USER, webhook_password=PASSWORD)


@pytest.fixture
def hook(hook_settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    """The app with webhook credentials; a server error is answered, not raised, so that
    the tests see the status a client would."""
    app = create_app(hook_settings, clock, enqueue_job=lambda job_id: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def person_delivery(**meta: Any) -> dict[str, Any]:
    """The real v2 person change with ``meta`` merged in (None removes a field)."""
    body: dict[str, Any] = json.loads(example(PERSON))
    for name, value in meta.items():
        if value is None:
            body["meta"].pop(name, None)
        else:
            body["meta"][name] = value
    return body


# --- S1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-at-all").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff\x00").decode(),
        "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "Digest username=pipedrive",
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        basic(USER.upper(), PASSWORD),
        basic(USER, "Pässwort"),  # the password up to its first colon
        basic(USER, "Passwort:mit:Doppelpunkt-7781"),  # "a" for "ä"
        basic(USER, PASSWORD, encoding="latin-1"),  # the right text, other bytes
        basic(USER, PASSWORD + ":"),
        basic(f"{USER}:{PASSWORD}", ""),
    ],
)
def test_S1_missing_garbled_or_wrong_basic_credentials_get_401(
    hook: TestClient, clean_db: Path, authorization: str | None
) -> None:
    """401 with a Basic challenge and the JSON error, never a 500, nothing stored."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = hook.post(PATH, content=example(PERSON), headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Basic realm="pipedrive-webhooks"'
    assert response.json() == {"error": "valid HTTP Basic credentials are required"}
    assert stored(clean_db) == []


def test_S1_a_password_with_colons_and_an_umlaut_is_accepted(
    hook: TestClient, clean_db: Path
) -> None:
    """Split on the first colon only, the UTF-8 bytes compared: the right password works,
    whatever the letter case of the scheme."""
    response = hook.post(PATH, content=example(PERSON), headers=RIGHT)
    assert response.status_code == 200 and response.json() == {"status": "received"}
    lower = {**RIGHT, "Authorization": "basic " + RIGHT["Authorization"].split(" ", 1)[1]}
    again = hook.post(PATH, content=example("v2_create_person.pipedrive-docs.json"), headers=lower)
    assert again.status_code == 200 and again.json() == {"status": "received"}
    assert len(stored(clean_db)) == 2


def test_S1_credentials_are_compared_as_bytes_in_constant_time(
    hook: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt compares both the user and the password, each with
    ``hmac.compare_digest`` on bytes: a wrong user does not skip the password, so the time
    does not tell which part was wrong."""
    calls: list[tuple[type, type]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    attempts = [
        basic(USER, PASSWORD),
        basic("someone-else", PASSWORD),
        basic(USER, "wrong"),
        basic("x", "y"),
    ]
    statuses = [
        hook.post(PATH, content=example(PERSON), headers={**RIGHT, "Authorization": value})
        for value in attempts
    ]
    assert [response.status_code for response in statuses] == [200, 401, 401, 401]
    assert calls == [(bytes, bytes)] * 2 * len(attempts)


# --- S3 ---------------------------------------------------------------------------------


@pytest.fixture
def served(hook_settings: Settings, clock: ManualClock) -> Iterator[ThreadedServer]:
    """The app behind a real uvicorn server on a loopback port."""
    app = create_app(hook_settings, clock, enqueue_job=lambda job_id: None)
    server = ThreadedServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def head(server: ThreadedServer, lines: list[str]) -> bytes:
    """A request head to ``PATH`` with ``lines`` as extra headers."""
    return (
        "\r\n".join([f"POST {PATH} HTTP/1.1", f"Host: {server.host}:{server.port}", *lines, "", ""])
    ).encode("latin-1")


def read_response(sock: socket.socket, timeout: float) -> tuple[int, bytes, float]:
    """The status, body and arrival time of the response on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed without a response: {data!r}"
        data += chunk
    arrived = time.monotonic()
    head_part, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head_part.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the middle of the response"
        body += chunk
    return int(head_part.split(b" ", 2)[1]), body[:length], arrived


@pytest.mark.integration
@pytest.mark.parametrize("authorization", [RIGHT["Authorization"], None])
def test_S3_an_oversized_content_length_gets_413_without_the_body_being_read(
    served: ThreadedServer, clean_db: Path, authorization: str | None
) -> None:
    """100 MB announced, not one byte of it sent: the answer comes at once, so the server
    never waited for the body; before authentication too."""
    lines = ["Content-Type: application/json", "Content-Length: 104857600"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sent = time.monotonic()
        sock.sendall(head(served, lines))
        status, body, arrived = read_response(sock, timeout=10)
    assert status == 413
    assert json.loads(body) == {"error": "request body too large"}
    assert arrived - sent < 5
    assert stored(clean_db) == []


@pytest.mark.integration
def test_S3_a_chunked_body_over_the_cap_gets_413_while_it_is_still_coming(
    served: ThreadedServer, clean_db: Path
) -> None:
    """A chunked body never finished: once the bytes received pass 256 KiB the server
    answers 413 instead of waiting for (and buffering) the rest."""
    lines = [
        f"Authorization: {RIGHT['Authorization']}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    ]
    chunk = b"[" * 65536
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sock.sendall(head(served, lines))
        for _ in range(webhook_api.MAX_WEBHOOK_BODY_BYTES // len(chunk) + 1):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        # No closing 0-length chunk: a server waiting for the end would never answer.
        status, body, _ = read_response(sock, timeout=10)
    assert status == 413
    assert json.loads(body) == {"error": "request body too large"}
    assert stored(clean_db) == []


# --- S4 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json-patch+json",
        "json",
        "",
    ],
)
def test_S4_a_wrong_content_type_gets_415(
    hook: TestClient, clean_db: Path, content_type: str | None
) -> None:
    """The body is a real delivery and the credentials are right: the type alone is wrong."""
    headers = {"Authorization": RIGHT["Authorization"]}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = hook.post(PATH, content=example(PERSON), headers=headers)
    assert response.status_code == 415
    assert response.json() == {"error": "send the delivery as application/json"}
    assert stored(clean_db) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_S4_other_methods_get_405_with_allow(hook: TestClient, clean_db: Path, method: str) -> None:
    """Whatever the body and credentials: 405, ``Allow: POST``, the JSON error."""
    response = hook.request(method, PATH, content=example(PERSON), headers=RIGHT)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"error": "method not allowed"}
    assert stored(clean_db) == []


# --- S5 ---------------------------------------------------------------------------------


def deep(depth: int, opening: bytes) -> bytes:
    """An object whose member nests arrays or objects to ``depth`` levels in all."""
    closing = b"]" if opening == b"[" else b"}"
    inner = b'{"a":' if opening == b"{" else b"["
    body = inner * (depth - 1) + (b"1" if opening == b"{" else b"") + closing * (depth - 1)
    return b'{"deep": ' + body + b"}"


REAL = example(PERSON)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"meta": }', "the body is not valid JSON"),
        (b"{'meta': {}}", "the body is not valid JSON"),
        (REAL[: len(REAL) // 2], "the body is not valid JSON"),
        (REAL.rstrip()[:-1], "the body is not valid JSON"),  # the closing brace cut
        (b"", "the body is not valid JSON"),
        (b'{"a": 1}{"b": 2}', "the body is not valid JSON"),
        (b'{"a": "\x00"}', "the body is not valid JSON"),  # a raw control character
        (b'{"meta": "\xff"}', "the body is not valid UTF-8"),
        (b'{"meta": "\xc0\xaf"}', "the body is not valid UTF-8"),  # an overlong "/"
        (b'{"meta": "\xed\xa0\x80"}', "the body is not valid UTF-8"),  # a raw surrogate
        (b"\xff\xfe{\x00}\x00", "the body is not valid UTF-8"),  # UTF-16
        (b'{"x": NaN}', "the body is not valid JSON"),
        (b'{"x": Infinity}', "the body is not valid JSON"),
        (b'{"x": -Infinity}', "the body is not valid JSON"),
        (b'{"meta": {"id": ' + b"9" * 5_000 + b"}}", "the body is not valid JSON"),
        (b'{"x": -' + b"1" * 5_000 + b"}", "the body is not valid JSON"),
        (deep(1_000, b"["), "the JSON is nested deeper than 64 levels"),
        (deep(1_000, b"{"), "the JSON is nested deeper than 64 levels"),
        (deep(65, b"["), "the JSON is nested deeper than 64 levels"),
        (b"[" * 200_000, "the JSON is nested deeper than 64 levels"),
        (b"[]", "the body must be a JSON object"),
        (b'"meta"', "the body must be a JSON object"),
        (b"null", "the body must be a JSON object"),
    ],
)
def test_S5_bodies_that_are_not_a_json_object_get_400_never_500(
    hook: TestClient, clean_db: Path, body: bytes, error: str
) -> None:
    """Authenticated, JSON declared, and still refused, with the reason; nothing stored."""
    response = hook.post(PATH, content=body, headers=RIGHT)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": error}
    assert stored(clean_db) == []


def test_S5_the_limits_themselves_are_accepted(hook: TestClient, clean_db: Path) -> None:
    """64 levels, and an integer of 4,300 digits (CPython's limit), are JSON we take."""
    assert hook.post(PATH, content=deep(64, b"["), headers=RIGHT).status_code == 200
    huge = b'{"x": ' + b"9" * 4_300 + b"}"
    assert hook.post(PATH, content=huge, headers=RIGHT).status_code == 200
    assert len(stored(clean_db)) == 2


# --- S6 ---------------------------------------------------------------------------------

ODD = {
    "lone surrogate": "\ud800",
    "low surrogate": "\udc00",
    "NUL": "\x00",
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "byte order mark": "\ufeff",
    "line separator": "\u2028",
    "C1 control": "\x85",
    "language tag": "\U000e0001",
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_S6_odd_characters_are_stored_exactly(
    hook: TestClient,
    clean_db: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    """In a person's name (used by the sync: received), in the event id and in the object
    (not usable: ignored, with the reason), escaped in the JSON or raw in UTF-8 where
    UTF-8 can hold them: 200, and the payload stored is the body's text, byte for byte.
    The log lines about them show no such character raw."""
    caplog.set_level(logging.INFO)
    odd = ODD[name]
    bodies: list[bytes] = []
    for ensure_ascii in (True, False):
        if not ensure_ascii and 0xD800 <= ord(odd) <= 0xDFFF:
            continue  # raw in UTF-8 it cannot be: S5 refuses those bytes
        for meta in ({}, {"id": f"evt{odd}"}, {"entity": f"person{odd}"}):
            body = person_delivery(**meta)
            body["meta"]["id"] = body["meta"].get("id", "") + f"-{len(bodies)}"
            body["data"]["first_name"] = f"Ann{odd}e"
            bodies.append(json.dumps(body, ensure_ascii=ensure_ascii).encode())
    answers = [hook.post(PATH, content=body, headers=RIGHT) for body in bodies]
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    rows = stored(clean_db)
    assert [row["payload"].encode() for row in rows] == bodies
    assert all(json.loads(row["payload"])["data"]["first_name"] == f"Ann{odd}e" for row in rows)
    assert (answers[0].json()["status"], rows[0]["status"]) == ("received", "pending")
    ignored = [row["reason"] for row in rows if row["status"] == "ignored"]
    # An id or an object name with an invisible character is not a name the sync knows.
    assert all(reason in ("no event id (meta.id)", "no object (meta.entity)") for reason in ignored)
    formatter = JsonFormatter(Redactor())
    lines = [formatter.format(record) for record in caplog.records]
    assert any("webhook stored" in line for line in lines)
    assert all(line.isprintable() for line in lines), lines


def test_S6_a_byte_order_mark_before_the_body_is_tolerated(
    hook: TestClient, clean_db: Path
) -> None:
    """RFC 8259 lets a parser ignore it: 200, and the text after it is what is stored."""
    response = hook.post(PATH, content=b"\xef\xbb\xbf" + REAL, headers=RIGHT)
    assert response.status_code == 200 and response.json() == {"status": "received"}
    (row,) = stored(clean_db)
    assert row["payload"] == REAL.decode("utf-8")


def test_S6_odd_characters_are_escaped_in_the_json_apis(hook: TestClient, clean_db: Path) -> None:
    """A filter name, a job's error and note holding every odd character SQLite can store
    come back from /api/filters and /api/jobs equal, and written as escapes: the raw
    answer has no invisible, bidi or control character. /api/status, after deliveries
    full of them, answers too. A lone surrogate, which no UTF-8 text can hold, is
    rendered as its escape rather than failing the answer."""
    storable = "".join(value for value in ODD.values() if not 0xD800 <= ord(value) <= 0xDFFF)
    text = f"A{storable}Z ä"
    with sqlite3.connect(clean_db) as connection:
        connection.execute(
            "INSERT INTO filters (id, name, type, brevo_list_id) VALUES (1, ?, 'people', 9)",
            (text,),
        )
        connection.execute(
            "INSERT INTO sync_jobs (filter_id, status, error_message, note, created_at) "
            "VALUES (1, 'failed', ?, ?, 1)",
            (text, text),
        )
    for odd in ODD.values():
        body = person_delivery(id=f"e{ord(odd)}", entity=f"person{odd}")
        assert hook.post(PATH, content=json.dumps(body), headers=RIGHT).status_code == 200
    auth = {"Authorization": f"Bearer {login(hook)}"}
    (job_id,) = [job["id"] for job in hook.get("/api/jobs", headers=auth).json()["jobs"]]
    answers = {
        path: hook.get(path, headers=auth)
        for path in ("/api/filters", "/api/jobs", f"/api/jobs/{job_id}", "/api/status")
    }
    for path, answer in answers.items():
        assert answer.status_code == 200, (path, answer.text)
        assert answer.content.decode("utf-8").isprintable(), path
    assert answers["/api/filters"].json()["filters"][0]["name"] == text
    (job,) = answers["/api/jobs"].json()["jobs"]
    assert job["error_message"] == text and job["note"] == text
    assert answers[f"/api/jobs/{job_id}"].json()["job"] == job
    assert answers["/api/status"].json()["inbox"]["ignored"] == len(ODD)
    assert b"\\u202e" in answers["/api/jobs"].content and "ä" in answers["/api/jobs"].text

    rendered = render_json({"error": f"x{ODD['lone surrogate']}y"})
    assert rendered == b'{"error":"x\\ud800y"}'


# --- S7 ---------------------------------------------------------------------------------

V1 = json.loads(example("v1_updated_person.pipedream.json"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "not a Pipedrive webhook delivery (neither v1 nor v2)"),
        ({"hello": "world"}, "not a Pipedrive webhook delivery (neither v1 nor v2)"),
        (
            {"meta": "not an object", "data": {}},
            "not a Pipedrive webhook delivery (neither v1 nor v2)",
        ),
        ({"meta": [], "data": {}}, "not a Pipedrive webhook delivery (neither v1 nor v2)"),
        (person_delivery(entity=None), "no object (meta.entity)"),
        (person_delivery(entity=7), "no object (meta.entity)"),
        (person_delivery(entity=["person"]), "no object (meta.entity)"),
        (person_delivery(entity="activity"), "object 'activity' is not used by the sync"),
        (person_delivery(entity="x" * 65), "no object (meta.entity)"),
        (person_delivery(id=None), "no event id (meta.id)"),
        (person_delivery(id={"nested": 1}), "no event id (meta.id)"),
        (person_delivery(id=""), "no event id (meta.id)"),
        (person_delivery(entity_id=None), "no entity id (meta.entity_id)"),
        (person_delivery(entity_id="abc"), "no entity id (meta.entity_id)"),
        (person_delivery(entity_id=-8), "no entity id (meta.entity_id)"),
        (person_delivery(entity_id=8.5), "no entity id (meta.entity_id)"),
        (person_delivery(entity_id=True), "no entity id (meta.entity_id)"),
        (person_delivery(entity_id=2**64), "no entity id (meta.entity_id)"),
        (person_delivery(entity_id="²"), "no entity id (meta.entity_id)"),
        (person_delivery(action="frobnicate"), "unknown action 'frobnicate'"),
        (person_delivery(action=None), "no action (meta.action)"),
        (person_delivery(action=False), "no action (meta.action)"),
        ({**V1, "meta": {**V1["meta"], "object": "note"}}, "object 'note' is not used by the sync"),
        ({**V1, "meta": {**V1["meta"], "id": None}}, "no entity id (meta.id)"),
        ({**V1, "meta": {**V1["meta"], "action": "exploded"}}, "unknown action 'exploded'"),
    ],
)
def test_S7_valid_json_the_sync_cannot_use_is_stored_as_ignored_with_the_reason(
    hook: TestClient, clean_db: Path, body: dict[str, Any], reason: str
) -> None:
    """Authenticated valid JSON with missing fields, wrong types or an unknown object: 200
    (a 4xx would count toward a ban of the webhook), kept as ignored with the reason."""
    raw = json.dumps(body).encode()
    response = hook.post(PATH, content=raw, headers=RIGHT)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ignored"}
    (row,) = stored(clean_db)
    assert (row["status"], row["reason"]) == ("ignored", reason)
    assert row["payload"].encode() == raw


# --- after the intake: the drain must survive what the intake accepted -------------------


def drain_after(hook: TestClient, clock: ManualClock, clean_db: Path, odd: dict[str, Any]) -> None:
    """Deliver ``odd`` and a plain change for a linked people filter, then drain."""
    from workers.sync.drain import drain

    with sqlite3.connect(clean_db) as connection:
        connection.execute(
            "INSERT INTO filters (id, name, type, brevo_list_id) VALUES (1, 'A', 'people', 5)"
        )
    for body in (odd, person_delivery(id="plain-change")):
        response = hook.post(PATH, content=json.dumps(body), headers=RIGHT)
        assert response.json() == {"status": "received"}
    clock.advance(100)
    drain(clock.now(), 2.0, lambda job_id: None, lambda: None)
    assert [row["status"] for row in stored(clean_db)] == ["processed", "processed"]


def test_S6_a_lone_surrogate_in_a_name_does_not_stop_the_drain(
    hook: TestClient, clock: ManualClock, clean_db: Path
) -> None:
    """Stored exactly at the intake (above), and then routed like any other change."""
    body = person_delivery(id="odd-name")
    body["data"]["first_name"] = "Ann\ud800"
    body["data"]["emails"] = [{"value": "ann@example.com", "primary": True, "label": "work"}]
    drain_after(hook, clock, clean_db, body)


def test_S7_a_merged_to_id_of_other_digits_does_not_stop_the_drain(
    hook: TestClient, clock: ManualClock, clean_db: Path
) -> None:
    """A delete whose ``meta.merged_to_id`` is not a number is routed as a plain delete."""
    body = json.loads(example("v2_delete_person.pipedrive-docs.json"))
    body["meta"]["merged_to_id"] = "²"
    drain_after(hook, clock, clean_db, body)
