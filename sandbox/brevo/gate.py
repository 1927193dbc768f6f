"""The middleware in front of the API routes: settles due processes, checks the
``api-key`` header, counts the request in its rate bucket, answers 429 past the limit,
adds the ``x-sib-ratelimit-*`` headers to every answer, and counts calls for
``GET /_sandbox/usage``.

A request with a missing or wrong key answers 401 before any bucket is touched (no
account to charge), so it carries no rate headers.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.brevo.limits import rate_headers
from sandbox.brevo.state import API_PREFIX, TOO_MANY, UNAUTHORIZED, BrevoFake


class ApiGate:
    """Auth, rate limits and call counting for ``/v3``; other paths (the control API) only
    settle."""

    def __init__(self, app: ASGIApp, fake: BrevoFake) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        self.fake.store.settle()
        if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        template = self.fake.template(scope)
        if not self.fake.authorized(Headers(scope=scope).get("api-key")):
            self.fake.count(template, 401)
            await JSONResponse(UNAUTHORIZED, status_code=401)(scope, receive, send)
            return
        state = self.fake.limits.hit(path)
        extra = rate_headers(state.limit, state.remaining, state.reset_seconds)
        if not state.allowed:
            self.fake.count(template, 429)
            response = JSONResponse(TOO_MANY, status_code=429)
            response.raw_headers.extend(extra)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
                self.fake.count(template, message["status"])
            await send(message)

        await self.app(scope, receive, send_with_headers)
