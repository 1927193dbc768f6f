"""Error answers: Brevo's ``{"code", "message"[, "metadata"]}`` on the API, and
``{"error"}`` on the control API."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.faults import CONTROL_PREFIX

NOTHING_APPLIED = "Contact already in list and/or does not exist"
CONTACT_NOT_FOUND = "Contact does not exist"
LIST_NOT_FOUND = "List ID not found"
FOLDER_NOT_FOUND = "Folder ID does not exist"
LIMIT_EXCEEDED = "Limit exceeds max value"


class BrevoError(Exception):
    """An API error, answered as Brevo does."""

    def __init__(
        self, status: int, code: str, message: str, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.metadata = metadata

    def response(self) -> JSONResponse:
        """The JSON answer."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.metadata is not None:
            body["metadata"] = self.metadata
        return JSONResponse(body, status_code=self.status)


def invalid(message: str) -> BrevoError:
    """400 ``invalid_parameter``."""
    return BrevoError(400, "invalid_parameter", message)


def missing(message: str) -> BrevoError:
    """400 ``missing_parameter``."""
    return BrevoError(400, "missing_parameter", message)


def not_found(message: str) -> BrevoError:
    """404 ``document_not_found``."""
    return BrevoError(404, "document_not_found", message)


class ControlError(Exception):
    """A control-API error: bad input (400) or an unknown thing (404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def brevo_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler for ``BrevoError``."""
    assert isinstance(exc, BrevoError)
    return exc.response()


async def control_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler for ``ControlError``."""
    assert isinstance(exc, ControlError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods, in the format of the API or of the control API."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(CONTROL_PREFIX):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    if exc.status_code == 405:
        return BrevoError(405, "method_not_allowed", "Method not allowed").response()
    if exc.status_code == 404:
        return not_found("Not found").response()
    return BrevoError(exc.status_code, "bad_request", str(exc.detail)).response()
