"""Reading query parameters strictly: a bad value is a 400 that names the parameter."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request

from service.errors import ApiError

# SQLite integers are signed 64-bit; a larger id cannot exist and would overflow a query.
MAX_ID = 2**63 - 1


def int_param(
    request: Request, name: str, minimum: int = 1, maximum: int = MAX_ID, default: int | None = None
) -> int | None:
    """An integer query parameter within ``[minimum, maximum]``, or ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.lstrip("-").isdigit() or len(text) > 20:
        raise ApiError(400, f"{name} must be an integer")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ApiError(400, f"{name} must be between {minimum} and {maximum}")
    return value


def choice_param(request: Request, name: str, choices: Sequence[str]) -> str | None:
    """A query parameter that must be one of ``choices``, or None when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if raw not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)}")
    return raw


_TRUE = ("true", "1")
_FALSE = ("false", "0")


def bool_param(request: Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter (``true``, ``false``, ``1`` or ``0``), or ``default``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ApiError(400, f"{name} must be true, false, 1 or 0")
