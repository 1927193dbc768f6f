"""``POST /webhooks/pipedrive``: Pipedrive's webhook deliveries, v1 and v2, into the inbox.

Checks in the order of ``reference/reliability.md`` section 6: the size (the body limit
middleware, 256 KiB here), HTTP Basic (an address with too many recent failures is answered
429 before its credentials are compared: ``service.auth_failures``), the content type, the
body; then the delivery is committed to the inbox (``service.inbox_writer``: deliveries
arriving together share one synced commit) and only then answered 200 ``{"status":
"received" | "duplicate" | "ignored"}``. Authenticated JSON that the sync does not use is
stored as ignored and answered 200: a 4xx would make Pipedrive retry and count toward
banning the webhook. No session is needed here (``service.auth`` guards ``/api`` only).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import sqlite3

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service import inbox
from service.api.context import WebContext, web_context
from service.errors import ApiError
from service.proxies import client_address
from service.webhooks import BadBody, Delivery, classify, parse_body

log = logging.getLogger(__name__)

MAX_WEBHOOK_BODY_BYTES = 256 * 1024
INLINE_PARSE_BYTES = 16 * 1024
REALM = "pipedrive-webhooks"
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}"'}


def basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """The user and password bytes of a ``Basic`` Authorization header, or None when it is
    missing or garbled. Split on the first ":" only: a password may contain colons."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def credentials_match(presented: tuple[bytes, bytes], user: str, password: str) -> bool:
    """Compare both parts in constant time, on bytes (``compare_digest`` refuses non-ASCII
    ``str``); both comparisons always run, so the time tells nothing about which failed."""
    user_ok = hmac.compare_digest(presented[0], user.encode("utf-8"))
    password_ok = hmac.compare_digest(presented[1], password.encode("utf-8"))
    return user_ok & password_ok


def _authenticate(request: Request, context: WebContext) -> None:
    settings = context.settings
    if not settings.webhook_user or not settings.webhook_password:
        # 503, not 401: the request may well be right; this server cannot judge it until
        # configured, and Pipedrive's webhook status then points at the server.
        log.error("webhook refused: WEBHOOK_USER and WEBHOOK_PASSWORD are not configured")
        raise ApiError(
            503, "webhook credentials are not configured (set WEBHOOK_USER and WEBHOOK_PASSWORD)"
        )
    peer = request.client.host if request.client else None
    client = client_address(peer, request.headers, settings.trusted_proxies)
    failures = context.webhook_auth_failures
    # Before the comparison: a refused address learns nothing about its guesses.
    wait = failures.retry_after(client)
    if wait is not None:
        raise ApiError(
            429, "too many failed authentications; try again later", {"Retry-After": str(wait)}
        )
    presented = basic_credentials(request.headers.get("authorization"))
    if presented is None or not credentials_match(
        presented, settings.webhook_user, settings.webhook_password
    ):
        log.warning(
            "webhook authentication failed",
            extra={
                "client": client,
                "credentials": "garbled or missing" if presented is None else "wrong",
            },
        )
        if failures.record_failure(client):
            log.warning(
                "webhook authentication throttled",
                extra={
                    "client": client,
                    "failures": failures.max_failures,
                    "window_seconds": failures.window_seconds,
                },
            )
        raise ApiError(401, "valid HTTP Basic credentials are required", _CHALLENGE)


def _log_stored(delivery: Delivery, outcome: inbox.Outcome) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "event_key": delivery.event_key,
        "version": delivery.version,
        "object": delivery.object,
        "action": delivery.action,
        "entity_id": delivery.entity_id,
        "outcome": outcome,
    }
    if outcome == "ignored":
        fields["reason"] = delivery.reason
    log.info("webhook stored" if outcome != "duplicate" else "webhook duplicate", extra=fields)


# The three answers, encoded once: the intake path is the service's hottest.
_ANSWERS = {
    outcome: json.dumps({"status": outcome}, separators=(",", ":")).encode()
    for outcome in ("received", "duplicate", "ignored")
}


async def pipedrive_webhook(request: Request) -> Response:
    """Store one Pipedrive webhook delivery and answer once it is committed."""
    context = web_context(request)
    _authenticate(request, context)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "send the delivery as application/json")
    raw = await request.body()
    try:
        # A typical delivery (a few KiB) is parsed in well under a millisecond, less than a
        # hand-off to a thread costs; a large one is parsed off the event loop.
        if len(raw) <= INLINE_PARSE_BYTES:
            body, text = parse_body(raw)
        else:
            body, text = await run_in_threadpool(parse_body, raw)
    except BadBody as exc:
        raise ApiError(400, str(exc)) from exc
    delivery = classify(body, text)
    try:
        outcome = await context.inbox_writer.store(delivery, context.clock.now())
    except (sqlite3.Error, RuntimeError) as exc:
        # Not stored, so not acknowledged: Pipedrive retries a non-2xx.
        log.error("webhook not stored: %s", type(exc).__name__)
        raise ApiError(503, "the delivery could not be stored; try again") from exc
    _log_stored(delivery, outcome)
    return Response(_ANSWERS[outcome], media_type="application/json")
