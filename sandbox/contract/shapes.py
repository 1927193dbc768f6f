"""Comparing a payload's shape with a real webhook example (``specs/pipedrive/examples``)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from sandbox.contract.specs import SPECS_DIR

EXAMPLES_DIR = SPECS_DIR / "pipedrive" / "examples"


def example_names() -> list[str]:
    """The example files, without ``.json``."""
    return sorted(path.name.removesuffix(".json") for path in EXAMPLES_DIR.glob("*.json"))


def load_example(name: str) -> Any:
    """An example payload by file name, with or without ``.json``, or by its unique stem
    before the source suffix (``v2_change_person`` for ``v2_change_person.pipedrive-docs``)."""
    stem = name.removesuffix(".json")
    candidates = [n for n in example_names() if n == stem or n.split(".")[0] == stem]
    if len(candidates) != 1:
        known = ", ".join(example_names())
        raise KeyError(f"{name!r} names {len(candidates)} examples (known: {known})")
    return json.loads((EXAMPLES_DIR / f"{candidates[0]}.json").read_text(encoding="utf-8"))


def json_kind(value: Any) -> str:
    """The JSON type of a decoded value: null, boolean, integer, number, string, object, array.

    ``bool`` is checked before ``int`` (it is a subclass); ``number`` means a float.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def compare_shapes(actual: Any, example: Any, *, open_paths: Collection[str] = ()) -> list[str]:
    """Differences in shape between ``actual`` and a real ``example``, one line each.

    Objects must have the same keys at every level. Types must match, with these rules:
    null in the example matches anything (the sample had no value there), but null in
    ``actual`` where the example has a value is a difference; an integer in the example
    needs an integer (Pipedrive's ids, counts and timestamps are integers, a fake sending
    8.0 is wrong), while a float in the example also accepts an integer (whole floats are
    sent without ``.0``); booleans are never numbers. Arrays: when both are non-empty, each
    element of ``actual`` is compared with the example's first element.

    ``open_paths`` names objects whose keys vary by nature (custom fields keyed by hash, a
    ``previous`` with only the changed fields): there only the common keys are compared.
    Paths look like ``data.custom_fields`` and ``data.emails[]`` (any array index).
    """
    differences: list[str] = []
    _compare(actual, example, "", frozenset(open_paths), differences)
    return differences


def _compare(
    actual: Any, example: Any, path: str, open_paths: frozenset[str], out: list[str]
) -> None:
    if example is None:
        return
    expected, got = json_kind(example), json_kind(actual)
    shown = path or "(root)"
    if got != expected and not (expected == "number" and got == "integer"):
        out.append(f"{shown}: expected {expected}, got {got}")
        return
    if isinstance(example, dict):
        if re.sub(r"\[\d+\]", "[]", path) not in open_paths:
            out += [f"{shown}: missing key {k!r}" for k in example if k not in actual]
            out += [f"{shown}: unexpected key {k!r}" for k in actual if k not in example]
        for key in example:
            if key in actual:
                _compare(
                    actual[key], example[key], f"{path}.{key}" if path else key, open_paths, out
                )
    elif isinstance(example, list) and example and actual:
        for index, item in enumerate(actual):
            _compare(item, example[0], f"{path}[{index}]", open_paths, out)
