"""Raw SQL helpers for the engine's bulk statements (Pony's ``$name`` parameters, so the
statements stay portable across Pony's providers).

Hazard: Pony keeps the text of every raw statement it ran, with the code it compiled for
the parameters, for the life of the process (``pony.orm.core.adapted_sql_cache``). A list
written out as ``($p0,$p1,...)`` made a new text for each length, and a statement with two
lists one for each pair of lengths: the worker grew by about 0.5 MB a minute in the soak.
So a list is one parameter, a JSON array that SQLite unpacks with ``json_each``, and each
statement has one text whatever the number of values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _json(value: object) -> str:
    # Not ensure_ascii: a lone surrogate stays in the text, and binding it fails as binding
    # the value itself would, instead of SQLite storing it as invalid UTF-8.
    return json.dumps(value, ensure_ascii=False)


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(SELECT value FROM json_each($name))`` and its parameter, for ``IN`` a list of
    values (numbers or strings)."""
    return f"(SELECT value FROM json_each(${name}))", {name: _json(list(values))}


def json_rows(name: str, rows: Sequence[Sequence[Any]]) -> tuple[str, dict[str, Any]]:
    """``SELECT value ->> 0, value ->> 1, ... FROM json_each($name) WHERE true ORDER BY
    key`` and its parameter: the rows, in order, for ``INSERT INTO t (columns) <this>``.

    ``WHERE true`` lets an upsert clause follow (SQLite's parsing ambiguity).
    """
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        raise ValueError("rows of different widths")
    columns = ", ".join(f"value ->> {c}" for c in range(width))
    select = f"SELECT {columns} FROM json_each(${name}) WHERE true ORDER BY key"
    return select, {name: _json([list(row) for row in rows])}
