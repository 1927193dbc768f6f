"""A request body limit that answers in our JSON error format.

One limit for every route, and smaller ones for paths under given prefixes (the webhook
intake takes at most 256 KiB). Starlette's built-in ``max_body_size`` replaces any
response of a request whose ``Content-Length`` is over the limit with a plain-text 413;
ours answers JSON, refuses an announced oversize body before reading it, and counts the
bytes of chunked bodies.

The body also has a deadline (``body_timeout``, from the request head to its last byte): a
client that trickles its body is answered 408 with ``Connection: close``, so uvicorn
closes the connection. It holds while the app reads the body; a body the app leaves
unread is cut off by the next head's deadline (``service.http_deadlines``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(HTTPException):
    """The body grew past the limit while it was being read."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


class BodyTimedOut(HTTPException):
    """The body did not arrive within its deadline; the connection is closed after the 408."""

    def __init__(self) -> None:
        super().__init__(
            status_code=408,
            detail="the request body did not arrive in time",
            headers={"Connection": "close"},
        )


class BodyLimitMiddleware:
    """Refuse any request body over ``max_bytes`` with 413; ``prefix_limits`` maps a path
    prefix to the limit of the paths under it (the first matching prefix wins). A body not
    received within ``body_timeout`` seconds of the request's start gets 408 (None: no
    deadline)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        prefix_limits: Mapping[str, int] | None = None,
        body_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix_limits = dict(prefix_limits or {})
        self.body_timeout = body_timeout

    def limit_for(self, path: str) -> int:
        """The body limit of requests to ``path``."""
        for prefix, limit in self.prefix_limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the announced length, then count the bytes actually received and watch
        the deadline."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                await error_response(400, "invalid Content-Length")(scope, receive, send)
                return
            if int(declared) > max_bytes:
                await error_response(413, "request body too large")(scope, receive, send)
                return
        received = 0
        deadline: float | None = None
        if self.body_timeout is not None:
            deadline = asyncio.get_running_loop().time() + self.body_timeout

        async def counting_receive() -> Message:
            nonlocal received, deadline
            if deadline is None:
                message = await receive()
            else:
                message = await _receive_by(deadline, receive, scope)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge
                if not message.get("more_body", False):
                    # The body is complete: a later receive waits for a disconnect, on no
                    # deadline.
                    deadline = None
            return message

        await self.app(scope, counting_receive, send)


async def _receive_by(deadline: float, receive: Receive, scope: Scope) -> Message:
    """The next message of ``receive``, or ``BodyTimedOut`` once the loop's clock passes
    ``deadline``. A message already there is returned even past the deadline."""
    try:
        async with asyncio.timeout_at(deadline):
            return await receive()
    except TimeoutError:
        client = scope.get("client")
        log.warning(
            "request body timed out",
            extra={"client": client[0] if client else None, "path": scope["path"]},
        )
        raise BodyTimedOut from None
