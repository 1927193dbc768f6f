"""Slow clients (reliability matrix S8) against the real ``pbsync web``: a request head or
body trickled a byte at a time is cut off within its deadline, while other clients are
served meanwhile and keep-alive connections keep working.

One web process serves the module, with deadlines of 1 s (``REQUEST_HEADER_TIMEOUT_SECONDS``
and ``REQUEST_BODY_TIMEOUT_SECONDS``); the clients talk raw sockets.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import healthy, json_lines, process_env, start_pbsync, wait_for

pytestmark = pytest.mark.integration

DEADLINE = 1.0
# Added to a deadline for the cut-off: the server's timer, the client's polling step and
# a busy machine.
MARGIN = 1.5
TRICKLE_SECONDS = 0.3
USER = "pipedrive"
PASSWORD = "Hook-Pw-Slow-Loris-3319"
AUTHORIZATION = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
DELIVERY = (
    b'{"meta": {"version": "2.0", "entity": "person", "action": "change", "id": "%s",'
    b' "entity_id": "7", "timestamp": "2026-11-24T10:00:00.000Z"}, "data": {"id": 7}}'
)


@dataclass
class Web:
    """The running web process of this module."""

    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def connect(self) -> socket.socket:
        """A new raw connection to the web."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def errors_logged(self) -> list[dict[str, object]]:
        """The log entries at ERROR level or above."""
        return [e for e in json_lines(self.log) if e.get("level") in ("ERROR", "CRITICAL")]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """``pbsync web`` with webhook credentials and 1 s deadlines."""
    directory = tmp_path_factory.mktemp("slow-clients")
    env = process_env(
        directory,
        WEBHOOK_USER=USER,
        WEBHOOK_PASSWORD=PASSWORD,
        REQUEST_HEADER_TIMEOUT_SECONDS=str(DEADLINE),
        REQUEST_BODY_TIMEOUT_SECONDS=str(DEADLINE),
        LOG_LEVEL="INFO",
    )
    log = directory / "web.log"
    process = start_pbsync("web", env, log)
    try:
        wait_for(lambda: healthy(env["PORT"]) or process.poll() is not None, timeout=20)
        assert process.poll() is None, log.read_text()
        yield Web(int(env["PORT"]), log, process)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Trickle:
    """What a client sending ``data`` one byte every ``TRICKLE_SECONDS`` saw."""

    sent: int = 0
    received: bytes = b""
    closed_after: float | None = None  # seconds from connecting to the server's close
    done: threading.Event = field(default_factory=threading.Event)


def trickle(sock: socket.socket, data: bytes, outcome: Trickle, patience: float = 10.0) -> None:
    """Send ``data`` a byte at a time, reading whatever comes back, until the server
    closes the connection or ``patience`` seconds have passed (``closed_after`` stays
    None). Nothing sent (``data`` empty): just wait for the close."""
    start = time.monotonic()
    try:
        while time.monotonic() - start < patience:
            if outcome.sent < len(data):
                try:
                    sock.send(data[outcome.sent : outcome.sent + 1])
                except OSError:  # broken pipe or reset: the server has closed
                    outcome.closed_after = time.monotonic() - start
                    return
                outcome.sent += 1
            readable, _, _ = select.select([sock], [], [], TRICKLE_SECONDS)
            if readable:
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    outcome.closed_after = time.monotonic() - start
                    return
                outcome.received += chunk
    finally:
        sock.close()
        outcome.done.set()


def start_trickle(web: Web, data: bytes) -> Trickle:
    """A new connection trickling ``data`` in a thread of its own."""
    outcome = Trickle()
    sock = web.connect()
    threading.Thread(target=trickle, args=(sock, data, outcome), daemon=True).start()
    return outcome


def webhook_post(client: httpx.Client) -> httpx.Response:
    """One authenticated delivery, answered once it is stored."""
    body = DELIVERY % str(time.monotonic_ns()).encode()
    return client.post(
        "/webhooks/pipedrive",
        content=body,
        headers={"Authorization": AUTHORIZATION, "Content-Type": "application/json"},
    )


def serve_meanwhile(web: Web, slow: list[Trickle]) -> list[tuple[str, int, float, bool]]:
    """Normal requests (``/healthz`` and an authenticated webhook, alternately, each on a
    new connection) until every slow client is done: (path, status, seconds, whether all
    slow clients were still connected when it was answered)."""
    answers = []
    deadline = time.monotonic() + 15
    with httpx.Client(
        base_url=f"http://127.0.0.1:{web.port}",
        timeout=10,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        while not all(s.done.is_set() for s in slow) and time.monotonic() < deadline:
            for path in ("/healthz", "/webhooks/pipedrive"):
                began = time.monotonic()
                response = client.get(path) if path == "/healthz" else webhook_post(client)
                held = not any(s.done.is_set() for s in slow)
                answers.append((path, response.status_code, time.monotonic() - began, held))
            time.sleep(0.05)
    return answers


def assert_served_promptly(answers: list[tuple[str, int, float, bool]]) -> None:
    """Every normal request answered 200 within a second, some while every slow client
    still held its connection."""
    assert answers
    assert all(status == 200 for _, status, _, _ in answers), answers
    assert max(seconds for _, _, seconds, _ in answers) < 1.0, answers
    assert any(held for *_, held in answers), answers


def test_S8_slow_headers_are_cut_off_and_others_are_served(web: Web) -> None:
    """Clients trickling their request head a byte every 0.3 s, and one that sends nothing,
    are closed within the deadline plus a margin (the trickling ones answered 408 in the
    JSON error format); meanwhile /healthz and authenticated webhooks are answered
    promptly."""
    head = b"GET /healthz HTTP/1.1\r\nHost: slow.example\r\nUser-Agent: slowloris\r\n\r\n"
    slow = [start_trickle(web, head) for _ in range(4)]
    silent = start_trickle(web, b"")

    answers = serve_meanwhile(web, [*slow, silent])

    for outcome in [*slow, silent]:
        assert outcome.done.wait(15)
        assert outcome.closed_after is not None, "never cut off"
        assert DEADLINE * 0.9 <= outcome.closed_after <= DEADLINE + MARGIN, outcome
    for outcome in slow:
        assert outcome.sent < len(head)
        assert outcome.received.startswith(b"HTTP/1.1 408 "), outcome.received
        assert b"connection: close" in outcome.received.lower()
        assert outcome.received.endswith(b'{"error":"the request head did not arrive in time"}')
    assert silent.received == b""
    assert_served_promptly(answers)
    assert web.errors_logged() == []


def test_S8_a_slow_body_gets_408_and_the_connection_closes(web: Web) -> None:
    """An authenticated webhook whose body trickles a byte every 0.3 s is answered 408
    ``{"error": ...}`` with ``Connection: close`` and closed, within the deadline plus a
    margin; no 500 and no error logged; others are served meanwhile."""
    body = DELIVERY % b"slow-body"
    head = (
        b"POST /webhooks/pipedrive HTTP/1.1\r\nHost: slow.example\r\n"
        b"Authorization: " + AUTHORIZATION.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    slow = []
    for _ in range(3):
        sock = web.connect()
        sock.sendall(head)
        outcome = Trickle()
        threading.Thread(target=trickle, args=(sock, body, outcome), daemon=True).start()
        slow.append(outcome)

    answers = serve_meanwhile(web, slow)

    for outcome in slow:
        assert outcome.done.wait(15)
        assert outcome.closed_after is not None, "never cut off"
        assert DEADLINE * 0.9 <= outcome.closed_after <= DEADLINE + MARGIN, outcome
        assert outcome.sent < len(body)
        status_line, _, rest = outcome.received.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout", outcome.received
        assert b"connection: close" in rest.lower()
        assert rest.endswith(b'{"error":"the request body did not arrive in time"}'), rest
    assert_served_promptly(answers)
    assert web.errors_logged() == []
    assert not any(b" 500" in line for line in web.log.read_bytes().splitlines())


def test_S8_an_idle_keep_alive_connection_still_works(web: Web) -> None:
    """A normal client keeps its connection across requests with pauses shorter than the
    deadline, for longer than the deadline in all; an idle connection is then closed
    quietly, without an unasked-for answer."""
    request = b"GET /healthz HTTP/1.1\r\nHost: normal.example\r\n\r\n"
    with contextlib.closing(web.connect()) as sock:
        started = time.monotonic()
        for _ in range(4):
            sock.sendall(request)
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert answer.endswith(b'{"status":"ok"}')
            time.sleep(DEADLINE * 0.5)
        assert time.monotonic() - started > 1.5 * DEADLINE
        sock.settimeout(DEADLINE + MARGIN)
        assert sock.recv(4096) == b""  # idle past the deadline: closed, nothing sent


def read_answer(sock: socket.socket) -> bytes:
    """One complete answer with a ``Content-Length`` body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body
