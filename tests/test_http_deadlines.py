"""The slow-client deadlines: the request head's (``service.http_deadlines``, on a real
uvicorn server in a thread) and the request body's (``service.body_limit``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from service.body_limit import BodyLimitMiddleware
from service.errors import EXCEPTION_HANDLERS
from service.http_deadlines import HeadDeadlineProtocol, head_deadline_protocol
from tests.conftest import free_port, wait_for

DEADLINE = 0.5
MARGIN = 1.5  # added to a deadline for a cut-off on a busy machine


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def slow(request: Request) -> JSONResponse:
    await asyncio.sleep(DEADLINE * 2)
    return JSONResponse({"status": "slow"})


async def early(request: Request) -> JSONResponse:
    """Answers without reading the body."""
    return JSONResponse({"status": "early"})


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"length": len(await request.body())})


APP = Starlette(
    routes=[
        Route("/ok", ok),
        Route("/slow", slow),
        Route("/early", early, methods=["POST"]),
        Route("/echo", echo, methods=["POST"]),
    ],
    middleware=[Middleware(BodyLimitMiddleware, body_timeout=DEADLINE)],
    exception_handlers=EXCEPTION_HANDLERS,
)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The test app on uvicorn with the head deadline, in a thread of this process."""
    config = uvicorn.Config(
        APP,
        host="127.0.0.1",
        port=free_port(),
        http=head_deadline_protocol(DEADLINE),
        ws="none",
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10, interval=0.05)
        yield config.port
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def connection(port: int) -> Iterator[socket.socket]:
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as sock:
        yield sock


def read_until_closed(
    sock: socket.socket, trickle: bytes = b"", step: float = 0.1
) -> tuple[bytes, float]:
    """Send ``trickle`` a byte every ``step`` seconds while reading; what was received
    and the seconds until the server closed (fails after 10 s)."""
    start = time.monotonic()
    received = b""
    sent = 0
    while time.monotonic() - start < 10:
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
            except OSError:
                return received, time.monotonic() - start
            sent += 1
        if select.select([sock], [], [], step)[0]:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return received, time.monotonic() - start
            received += chunk
    raise AssertionError(f"not closed after 10 s; received {received!r}")


class Answers:
    """Reads the answers of one connection, one at a time (``Content-Length`` bodies)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(4096)
        assert chunk, f"closed; received {self.buffer!r}"
        self.buffer += chunk

    def next(self) -> bytes:
        """The next complete answer."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, _ = self.buffer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        end = len(head) + 4 + length
        while len(self.buffer) < end:
            self._fill()
        answer, self.buffer = self.buffer[:end], self.buffer[end:]
        return answer


def read_answer(sock: socket.socket) -> bytes:
    """One complete answer, on a connection with one request in flight."""
    return Answers(sock).next()


GET_OK = b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n"


def test_the_protocol_class_carries_its_deadline() -> None:
    """Each call makes a class of its own: the default class keeps its deadline."""
    configured = head_deadline_protocol(3.5)
    assert issubclass(configured, HeadDeadlineProtocol) and configured.head_timeout == 3.5
    assert HeadDeadlineProtocol.head_timeout == 10.0


def test_a_head_trickled_past_the_deadline_gets_408_and_is_closed(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """408 in the JSON error format, ``Connection: close``, a warning naming the client."""
    caplog.set_level(logging.INFO)
    with connection(port) as sock:
        received, seconds = read_until_closed(sock, GET_OK)
    assert DEADLINE * 0.9 <= seconds <= DEADLINE + MARGIN
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert b"\r\nconnection: close\r\n" in received
    assert received.endswith(b'\r\n\r\n{"error":"the request head did not arrive in time"}')
    warnings = [r for r in caplog.records if r.getMessage() == "request head timed out"]
    assert [r.__dict__["client"] for r in warnings] == ["127.0.0.1"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(port: int) -> None:
    """Nothing was asked, so nothing is answered."""
    with connection(port) as sock:
        received, seconds = read_until_closed(sock)
    assert received == b""
    assert DEADLINE * 0.9 <= seconds <= DEADLINE + MARGIN


def test_the_deadline_starts_again_after_each_response(port: int) -> None:
    """Requests spaced under the deadline keep the connection for longer than it; once
    idle past it, the connection is closed silently."""
    with connection(port) as sock:
        start = time.monotonic()
        for _ in range(4):
            sock.sendall(GET_OK)
            assert read_answer(sock).endswith(b'{"status":"ok"}')
            time.sleep(DEADLINE * 0.6)
        assert time.monotonic() - start > 2 * DEADLINE
        received, seconds = read_until_closed(sock)
    assert received == b""
    assert seconds <= DEADLINE + MARGIN


def test_an_app_slower_than_the_deadline_still_answers(port: int) -> None:
    """The deadline is the client's: once the head is in, the app takes its time."""
    with connection(port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        assert read_answer(sock).endswith(b'{"status":"slow"}')


def test_pipelined_requests_are_all_answered(port: int) -> None:
    """Heads already buffered when a response ends are served, not timed out."""
    with connection(port) as sock:
        sock.sendall(GET_OK * 3)
        answers = Answers(sock)
        for _ in range(3):
            assert answers.next().endswith(b'{"status":"ok"}')
        assert answers.buffer == b""
        received, _ = read_until_closed(sock)
    assert received == b""


def test_a_body_left_unread_and_trickled_is_cut_off_by_the_next_head_deadline(
    port: int,
) -> None:
    """The app answered without reading; the rest of the body then counts against the
    next head's deadline."""
    with connection(port) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")
        assert read_answer(sock).endswith(b'{"status":"early"}')
        received, seconds = read_until_closed(sock, b"x" * 100)
    assert received == b""
    assert seconds <= DEADLINE + MARGIN


def test_a_body_trickled_past_the_deadline_gets_408_and_is_closed(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """408 in the JSON error format with ``Connection: close``; a warning, no error."""
    caplog.set_level(logging.INFO)
    with connection(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")
        received, seconds = read_until_closed(sock, b"x" * 100)
    assert DEADLINE * 0.9 <= seconds <= DEADLINE + MARGIN
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert b"\r\nconnection: close\r\n" in received
    assert received.endswith(b'\r\n\r\n{"error":"the request body did not arrive in time"}')
    warnings = [r for r in caplog.records if r.getMessage() == "request body timed out"]
    assert [r.__dict__["path"] for r in warnings] == ["/echo"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_body_in_pieces_within_the_deadline_is_read_whole(port: int) -> None:
    """Chunks that keep to the deadline make one body."""
    with connection(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 30\r\n\r\n")
        for _ in range(3):
            time.sleep(DEADLINE / 5)
            sock.sendall(b"x" * 10)
        assert read_answer(sock).endswith(b'{"length":30}')


def test_no_deadline_once_the_body_is_complete() -> None:
    """After the last body byte, a receive waiting for the disconnect is not cut off."""
    messages: list[Message] = [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        if len(messages) == 1:
            await asyncio.sleep(0.2)
        return messages.pop(0)

    seen: list[Message] = []

    async def app(scope: object, receive_: object, send: object) -> None:
        assert callable(receive_)
        seen.append(await receive_())
        seen.append(await receive_())

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    middleware = BodyLimitMiddleware(app, body_timeout=0.05)
    scope = {"type": "http", "path": "/", "headers": [], "client": ("127.0.0.1", 1)}
    asyncio.run(middleware(scope, receive, send))
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]
