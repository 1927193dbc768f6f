"""Pipedrive's error bodies: API v1 and v2, the 401/429/500 answers, the webhooks API's
own form, and the control API's ``{"error": ...}``."""

from __future__ import annotations

from starlette.responses import JSONResponse

ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."


def api_error(status: int, message: str, info: str = ERROR_INFO) -> JSONResponse:
    """An error of API v1 or v2 (an unknown filter, a malformed parameter): the generic
    form the specs declare, ``success``, ``error``, ``error_info``, ``data``,
    ``additional_data``. (Real v2 errors also carry a ``code`` such as
    ``ERR_SCHEMA_VALIDATION_FAILED``; the specs do not declare it, so it is left out.)"""
    body = {
        "success": False,
        "error": message,
        "error_info": info,
        "data": None,
        "additional_data": None,
    }
    return JSONResponse(body, status_code=status)


def coded_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The form of 401, 429 and 500 answers: ``success``, ``error``, ``errorCode``."""
    body = {
        "success": False,
        "error": message,
        "errorCode": status,
        "error_info": ERROR_INFO,
        "data": None,
        "additional_data": None,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def unauthorized() -> JSONResponse:
    """401 for a missing, empty or wrong ``x-api-token``."""
    body = {
        "success": False,
        "error": "unauthorized access",
        "errorCode": 401,
        "error_info": ERROR_INFO,
    }
    return JSONResponse(body, status_code=401)


def webhook_error(status: int, errors: dict[str, list[str]]) -> JSONResponse:
    """The webhooks API's own error form: ``status``, ``success``, ``errors`` by field."""
    body = {"status": "error", "success": False, "errors": errors}
    return JSONResponse(body, status_code=status)


def control_error(status: int, message: str) -> JSONResponse:
    """A control-API error."""
    return JSONResponse({"error": message}, status_code=status)
