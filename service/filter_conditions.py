"""Which other objects a filter's conditions name: a people filter on deal or organization
fields changes membership when those objects change, without the person's ``update_time``
moving, so their webhook events must re-list it (DESIGN section 5)."""

from __future__ import annotations

from typing import Any

OWN_OBJECT = {"people": "person", "deals": "deal"}
_MAX_DEPTH = 8


def condition_objects(conditions: Any, depth: int = 0) -> set[str]:
    """Every ``object`` named by a condition in Pipedrive's nested condition groups."""
    found: set[str] = set()
    if depth > _MAX_DEPTH:
        return found
    if isinstance(conditions, dict):
        name = conditions.get("object")
        if isinstance(name, str) and name:
            found.add(name)
        found |= condition_objects(conditions.get("conditions"), depth + 1)
    elif isinstance(conditions, list):
        for item in conditions:
            found |= condition_objects(item, depth + 1)
    return found


def related_objects(conditions: Any, filter_type: str | None) -> str:
    """The objects other than the filter's own that its conditions name, comma-separated
    and sorted ("" when none)."""
    own = OWN_OBJECT.get(filter_type or "")
    return ",".join(sorted(condition_objects(conditions) - {own}))
