"""Authentication of every ``/api`` route, in one place so a new route cannot forget it.

A session token arrives as ``Authorization: Bearer <token>`` or in the session cookie.
Cookie-authenticated writes must come from our own origin (CSRF) and carry no body but
JSON: a cross-site form can send ``text/plain``, urlencoded or multipart bodies without a
preflight, never ``application/json``. Bearer tokens are not sent by browsers on their own,
so they need no such checks. Only ``POST /api/session`` (the login) is open.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import sessions
from service.clock import Clock, http_date
from service.config import IPNetwork
from service.errors import error_response
from service.origin import is_same_origin
from service.proxies import request_scheme

COOKIE_NAME = "pbsync_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_ROUTES = frozenset({("POST", "/api/session")})


def is_protected(method: str, path: str) -> bool:
    """Tell whether a request needs a session: every ``/api`` route but the login."""
    return (path == "/api" or path.startswith("/api/")) and (method, path) not in OPEN_ROUTES


def cookie_is_secure(scheme: str, public_url: str | None) -> bool:
    """Whether the session cookie gets ``Secure``: the request came over https (directly or
    through a trusted proxy), or the service is published at an https ``PUBLIC_URL``."""
    return scheme == "https" or (public_url or "").lower().startswith("https://")


def is_json_or_bodiless(headers: Headers) -> bool:
    """Tell whether a write declares a JSON body or none at all (no ``Content-Type``)."""
    content_type = headers.get("content-type")
    if content_type is None:
        return True
    return content_type.split(";")[0].strip().lower() == "application/json"


def session_cookie(token: str, expires_at: int, now: int, secure: bool) -> str:
    """The ``Set-Cookie`` value that hands the browser its session."""
    parts = [
        f"{COOKIE_NAME}={token}",
        "Path=/",
        f"Max-Age={max(0, expires_at - now)}",
        f"Expires={http_date(expires_at)}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clearing_cookie(secure: bool) -> str:
    """The ``Set-Cookie`` value that removes the session cookie."""
    parts = [f"{COOKIE_NAME}=", "Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def token_from(headers: Headers, cookies: dict[str, str]) -> tuple[str | None, bool]:
    """The presented token and whether it came from the cookie."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), False
        return None, False
    cookie = cookies.get(COOKIE_NAME)
    return (cookie, True) if cookie else (None, False)


class SessionAuthMiddleware:
    """Require a valid session on protected routes; put it in ``scope["state"]["session"]``."""

    def __init__(
        self,
        app: ASGIApp,
        clock: Clock,
        public_url: str | None,
        trusted_proxies: Sequence[IPNetwork],
    ) -> None:
        self.app = app
        self.clock = clock
        self.public_url = public_url
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate the request or answer 401/403 without calling the route."""
        if scope["type"] != "http" or not is_protected(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        peer = connection.client.host if connection.client else None
        scheme = request_scheme(scope["scheme"], peer, connection.headers, self.trusted_proxies)
        secure = cookie_is_secure(scheme, self.public_url)
        token, via_cookie = token_from(connection.headers, connection.cookies)
        now = self.clock.now()
        session = await run_in_threadpool(sessions.validate_session, token, now) if token else None
        if session is None:
            headers = {"WWW-Authenticate": 'Bearer realm="pbsync"'}
            if via_cookie:
                headers["Set-Cookie"] = clearing_cookie(secure)
            await error_response(401, "authentication required", headers)(scope, receive, send)
            return
        if via_cookie and scope["method"] not in SAFE_METHODS:
            if not is_same_origin(connection.headers, self.public_url, scheme):
                await error_response(403, "cross-origin request refused")(scope, receive, send)
                return
            if not is_json_or_bodiless(connection.headers):
                await error_response(415, "send the body as application/json")(scope, receive, send)
                return
        scope.setdefault("state", {})["session"] = session

        # A logout clears the cookie itself; an extension there would set it again.
        logout = (scope["method"], scope["path"]) == ("DELETE", "/api/session")
        if not (via_cookie and session.extended) or logout:
            await self.app(scope, receive, send)
            return

        cookie = session_cookie(token or "", session.expires_at, now, secure)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode("latin-1")))
            await send(message)

        await self.app(scope, receive, send_with_cookie)
