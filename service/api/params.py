"""Reading request parameters strictly: a bad query value is a 400 that names the
parameter, and an id in a path is at most 19 ASCII digits."""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.requests import Request

from service.errors import ApiError

# SQLite integers are signed 64-bit; a larger id cannot exist and would overflow a query.
MAX_ID = 2**63 - 1
# ASCII digits only: str.isdigit() also takes "²" or "٣", which int() refuses or reads.
_INTEGER = re.compile(r"-?[0-9]{1,19}")


class IdConvertor(IntegerConvertor):
    """``{name:id}`` in a route path: an integer of at most 19 digits.

    Starlette's ``int`` takes any run of digits, and past 4,300 of them ``int()`` raises
    (CPython's limit on integer strings), which would answer 500; a longer run simply
    matches no route (404). An id of 19 digits may still exceed ``MAX_ID``: the handler
    answers 404 for it.
    """

    regex = "[0-9]{1,19}"


register_url_convertor("id", IdConvertor())


def int_param(
    request: Request, name: str, minimum: int = 1, maximum: int = MAX_ID, default: int | None = None
) -> int | None:
    """An integer query parameter within ``[minimum, maximum]``, or ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise ApiError(400, f"{name} must be an integer")
    value = int(raw)
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
    """A boolean query parameter (``true``, ``false``, ``1`` or ``0``, in any letter case),
    or ``default``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ApiError(400, f"{name} must be true, false, 1 or 0")
