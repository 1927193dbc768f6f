"""Checking a partial settings body sent to a fake's ``PUT /_sandbox/settings``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# A setting's check, and what it wants in words, for the error message.
Check = tuple[Callable[[Any], bool], str]


def is_integer(value: Any) -> bool:
    """A JSON integer (a boolean is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A JSON number (a boolean is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def checked_settings(payload: Any, checks: Mapping[str, Check]) -> dict[str, Any]:
    """``payload`` when every setting it names is known and passes its check; otherwise
    ``ValueError`` whose text is the control API's error, so nothing is half applied."""
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    for key, value in payload.items():
        if key not in checks:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(checks)}")
        check, wanted = checks[key]
        if not check(value):
            raise ValueError(f"{key} must be {wanted}")
    return payload
