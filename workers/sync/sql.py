"""Raw SQL helpers for the engine's bulk statements (Pony's ``$name`` parameters, so the
statements stay portable across Pony's providers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``($p0,$p1,...)`` and its parameters, for ``IN`` with a list of values."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    return "(" + ",".join(f"${n}" for n in names) + ")", dict(zip(names, values, strict=True))


def values_rows(prefix: str, rows: Sequence[Sequence[Any]]) -> tuple[str, dict[str, Any]]:
    """``($p0_0,$p0_1),($p1_0,$p1_1)...`` and its parameters, for a multi-row ``VALUES``."""
    params: dict[str, Any] = {}
    parts = []
    for r, row in enumerate(rows):
        names = [f"{prefix}{r}_{c}" for c in range(len(row))]
        params.update(zip(names, row, strict=True))
        parts.append("(" + ",".join(f"${n}" for n in names) + ")")
    return ",".join(parts), params
