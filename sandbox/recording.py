"""Capture of every API exchange a fake serves, for the contract tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.faults import CONTROL_PREFIX


@dataclass
class Exchange:
    """One request to a fake and the answer it gave, as bytes on the wire."""

    method: str
    path: str
    query: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""


ExchangeSink = Callable[[Exchange], None]


class RecordingMiddleware:
    """Hands each completed API exchange (control routes excepted) to ``sink``."""

    def __init__(self, app: ASGIApp, sink: ExchangeSink) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        exchange = Exchange(
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            request_headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            request_body=b"",
        )
        body: list[bytes] = []
        response_body: list[bytes] = []

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.response_headers = {
                    k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                response_body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    exchange.request_body = b"".join(body)
                    exchange.response_body = b"".join(response_body)
                    self.sink(exchange)
            await send(message)

        await self.app(scope, recording_receive, recording_send)
