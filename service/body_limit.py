"""A request body limit that answers in our JSON error format.

One limit for every route, and smaller ones for paths under given prefixes (the webhook
intake takes at most 256 KiB). Starlette's built-in ``max_body_size`` replaces any
response of a request whose ``Content-Length`` is over the limit with a plain-text 413;
ours answers JSON, refuses an announced oversize body before reading it, and counts the
bytes of chunked bodies.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(HTTPException):
    """The body grew past the limit while it was being read."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


class BodyLimitMiddleware:
    """Refuse any request body over ``max_bytes`` with 413; ``prefix_limits`` maps a path
    prefix to the limit of the paths under it (the first matching prefix wins)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        prefix_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix_limits = dict(prefix_limits or {})

    def limit_for(self, path: str) -> int:
        """The body limit of requests to ``path``."""
        for prefix, limit in self.prefix_limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the announced length, then count the bytes actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "invalid Content-Length")(scope, receive, send)
                return
            if int(declared) > max_bytes:
                await error_response(413, "request body too large")(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge
            return message

        await self.app(scope, counting_receive, send)
