"""Reading and checking request input: JSON bodies, query parameters, path ids, and the
``limit``/``offset``/``sort`` paging every list endpoint shares."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from starlette.requests import Request

from sandbox.brevo.errors import LIMIT_EXCEEDED, BrevoError, invalid

T = TypeVar("T")
MAX_BODY = 10 * 1024 * 1024


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 ``BrevoError``."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BrevoError(400, "out_of_range", "Maximum allowed body size is 10MB")
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise invalid("Input must be a valid JSON object")
    return body


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def path_id(request: Request, name: str) -> int:
    """A numeric path parameter, or a 400."""
    text = str(request.path_params[name])
    if not text.isdigit():
        raise invalid(f"{name} is invalid")
    return int(text)


def query_int(request: Request, name: str, default: int) -> int:
    """An integer query parameter, or a 400."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise invalid(f"{name} is not a valid integer") from None


def paging(request: Request, max_limit: int, default_limit: int) -> tuple[int, int, bool]:
    """``(limit, offset, descending)`` from the query; over ``max_limit`` is a 400
    ``out_of_range`` as Brevo answers it."""
    limit = query_int(request, "limit", default_limit)
    offset = query_int(request, "offset", 0)
    if limit > max_limit:
        raise BrevoError(400, "out_of_range", LIMIT_EXCEEDED)
    if limit < 0:
        raise BrevoError(400, "out_of_range", "Limit must be positive")
    if offset < 0:
        raise BrevoError(400, "out_of_range", "Offset must be positive")
    sort = request.query_params.get("sort", "desc")
    if sort not in ("asc", "desc"):
        raise invalid("sort must be asc or desc")
    return limit, offset, sort == "desc"


def page(items: Sequence[T], limit: int, offset: int, descending: bool) -> list[T]:
    """One page of ``items`` (given oldest first)."""
    ordered = list(reversed(items)) if descending else list(items)
    return ordered[offset : offset + limit]


def optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``body[key]`` when present and of ``kind`` (bool is never an int), None when absent,
    else a 400."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and kind is int:
        raise invalid(f"{key} must be {what}")
    if not isinstance(value, kind):
        raise invalid(f"{key} must be {what}")
    return value


def flag(body: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean body field, or a 400."""
    value = optional(body, key, bool, "a boolean")
    return default if value is None else bool(value)


def id_list(body: dict[str, Any], key: str) -> list[int]:
    """A list of integers (``listIds``...), empty when absent, or a 400."""
    value = optional(body, key, list, "an array of integers")
    if value is None:
        return []
    if not all(_whole(v) for v in value):
        raise invalid(f"{key} must be an array of integers")
    return list(value)
