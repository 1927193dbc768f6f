"""Readable one-line messages for openapi-core and jsonschema errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openapi_core.validation.request.exceptions import ParameterValidationError
from openapi_core.validation.schemas.exceptions import InvalidSchemaValue

_MESSAGE_LIMIT = 240


def json_path(parts: Iterable[Any]) -> str:
    """``data[0].id`` for the path parts ``("data", 0, "id")``; ``(root)`` for none."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def short(text: str) -> str:
    """``text`` cut to a readable length."""
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def schema_error_text(error: Any, at_root: str = "(root)") -> str:
    """One line for a jsonschema ValidationError (untyped library, hence Any)."""
    at = json_path(error.absolute_path) if error.absolute_path else at_root
    if error.validator in ("maxItems", "minItems") and isinstance(error.instance, list):
        bound = "at most" if error.validator == "maxItems" else "at least"
        return f"{at}: {len(error.instance)} items, {bound} {error.validator_value} allowed"
    if error.validator in ("oneOf", "anyOf"):
        if not error.context:
            return f"{at}: matches more than one {error.validator} branch"
        per_branch: dict[Any, str] = {}
        for sub in error.context:
            branch = sub.relative_schema_path[0] if sub.relative_schema_path else "?"
            per_branch.setdefault(branch, schema_error_text(sub))
        reasons = "; ".join(f"branch {b}: {text}" for b, text in per_branch.items())
        return f"{at}: matches no {error.validator} branch ({reasons})"
    return f"{at}: {short(error.message)}"


def openapi_error_messages(label: str, exc: BaseException) -> list[str]:
    """Readable lines for an openapi-core error, one per schema error where there are some."""
    if isinstance(exc, ParameterValidationError):
        label = f"{exc.location} parameter {exc.name!r}"
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, InvalidSchemaValue):
        cause = cause.__cause__
    if isinstance(cause, InvalidSchemaValue):
        errors = [e for e in cause.schema_errors if hasattr(e, "absolute_path")]
        if errors:
            root = "value" if isinstance(exc, ParameterValidationError) else "(root)"
            return [f"{label} {schema_error_text(e, root)}".strip() for e in errors]
    text = str(exc if not isinstance(exc, ParameterValidationError) else exc.__cause__ or exc)
    if exc.__cause__ is not None and str(exc.__cause__) not in text:
        text = f"{text}: {exc.__cause__}"
    return [short(f"{label}: {text}" if label else text)]
