"""``POST /api/session`` (login) and ``DELETE /api/session`` (logout)."""

from __future__ import annotations

import json
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service import sessions, throttle
from service.api.context import web_context
from service.api.responses import JsonResponse
from service.auth import clearing_cookie, cookie_is_secure, session_cookie
from service.clock import to_iso
from service.errors import ApiError
from service.proxies import client_address, request_scheme

log = logging.getLogger(__name__)


def _is_https(request: Request) -> bool:
    settings = web_context(request).settings
    peer = request.client.host if request.client else None
    scheme = request_scheme(request.url.scheme, peer, request.headers, settings.trusted_proxies)
    return cookie_is_secure(scheme, settings.public_url)


async def _password_from(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "send the password as application/json")
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "the body is not valid JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("password"), str):
        raise ApiError(400, 'the body must be {"password": "..."}')
    password: str = body["password"]
    return password


async def login(request: Request) -> Response:
    """Check the admin password and start a session.

    Throttling is decided before the password is compared, so a flood costs no hashing.
    """
    context = web_context(request)
    peer = request.client.host if request.client else None
    client = client_address(peer, request.headers, context.settings.trusted_proxies)
    now = context.clock.now()
    wait = await run_in_threadpool(throttle.retry_after, client, now)
    if wait is not None:
        log.warning("admin login throttled", extra={"client": client})
        raise ApiError(429, "too many failed logins; try again later", {"Retry-After": str(wait)})
    candidate = await _password_from(request)
    if not await run_in_threadpool(context.password.verify, candidate):
        await run_in_threadpool(throttle.record_failure, client, now)
        log.warning("admin login failed", extra={"client": client})
        raise ApiError(401, "invalid password")
    await run_in_threadpool(throttle.clear, client)
    issued = await run_in_threadpool(sessions.create_session, context.password, now)
    log.info("admin logged in", extra={"client": client})
    response = JsonResponse(
        {"token": issued.token, "expires_at": to_iso(issued.expires_at)}, status_code=201
    )
    response.headers.append(
        "set-cookie", session_cookie(issued.token, issued.expires_at, now, _is_https(request))
    )
    return response


async def logout(request: Request) -> Response:
    """End the session that authenticated this request."""
    session: sessions.ValidSession = request.state.session
    await run_in_threadpool(sessions.delete_session, session.id)
    response = Response(status_code=204)
    response.headers.append("set-cookie", clearing_cookie(_is_https(request)))
    return response
