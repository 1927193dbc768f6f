"""Errors as JSON: ``{"error": "..."}`` with the right status, and never a secret or a trace."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.api.responses import JsonResponse

log = logging.getLogger(__name__)

_REASONS = {
    400: "bad request",
    401: "authentication required",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request body too large",
    415: "unsupported media type",
    429: "too many requests",
}


class ApiError(Exception):
    """Raised by an endpoint to answer ``{"error": message}`` with ``status``."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JsonResponse:
    """A JSON error response."""
    return JsonResponse({"error": message, **extra}, status_code=status, headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Render an ``ApiError``."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers, **exc.extra)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Render Starlette's own HTTP errors (404, 405, 413...) as JSON, keeping their headers."""
    assert isinstance(exc, HTTPException)
    message = _REASONS.get(exc.status_code) or (exc.detail or "error")
    return error_response(exc.status_code, message, dict(exc.headers or {}))


async def handle_server_error(request: Request, exc: Exception) -> Response:
    """Log an unexpected failure and answer 500 without details."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_server_error,
}
