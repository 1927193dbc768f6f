"""The field catalogue filter conditions refer to, and the validation of conditions given
to the control API.

Pipedrive names a field in a condition by a numeric string ``field_id``; with
``include_field_code=true`` it adds the field's key as ``field_code``. The ids here are
the sandbox's own, stable across seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FieldKind = Literal["text", "number", "date", "list"]

TIER_KEY = "8c3a1f5e2b9d4c6a7e0f1b2c3d4e5f6a7b8c9d0e"
"""The 40-character key of the persons' custom field "Customer tier"."""

OPERATORS = (
    "=",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "IS NULL",
    "IS NOT NULL",
    "LIKE '$%'",
    "LIKE '%$%'",
    "NOT LIKE '$%'",
)
NULL_OPERATORS = ("IS NULL", "IS NOT NULL")
MAX_CONDITIONS = 16
RELATED_OBJECTS = ("person", "organization", "deal")
OBJECTS_BY_TYPE = {"people": "person", "deals": "deal", "org": "organization"}


@dataclass(frozen=True)
class Field:
    """One filterable field: its id, the object it belongs to, its key and how it compares."""

    id: str
    object: str
    code: str
    kind: FieldKind


FIELDS: tuple[Field, ...] = (
    Field("9001", "person", "name", "text"),
    Field("9002", "person", "first_name", "text"),
    Field("9003", "person", "last_name", "text"),
    Field("9004", "person", "email", "list"),
    Field("9005", "person", "phone", "list"),
    Field("9006", "person", "org_id", "number"),
    Field("9007", "person", "owner_id", "number"),
    Field("9008", "person", "label_ids", "list"),
    Field("9009", "person", "add_time", "date"),
    Field("9010", "person", "update_time", "date"),
    Field("9011", "person", TIER_KEY, "text"),
    Field("4001", "organization", "name", "text"),
    Field("4002", "organization", "address_country", "text"),
    Field("4003", "organization", "owner_id", "number"),
    Field("4004", "organization", "add_time", "date"),
    Field("4005", "organization", "update_time", "date"),
    Field("12451", "deal", "title", "text"),
    Field("12452", "deal", "value", "number"),
    Field("12453", "deal", "currency", "text"),
    Field("12454", "deal", "status", "text"),
    Field("12455", "deal", "stage_id", "number"),
    Field("12456", "deal", "pipeline_id", "number"),
    Field("12457", "deal", "person_id", "number"),
    Field("12458", "deal", "org_id", "number"),
    Field("12459", "deal", "owner_id", "number"),
    Field("12460", "deal", "add_time", "date"),
    Field("12461", "deal", "update_time", "date"),
    Field("12462", "deal", "won_time", "date"),
    Field("12463", "deal", "lost_time", "date"),
    Field("12464", "deal", "expected_close_date", "date"),
    Field("12465", "deal", "label_ids", "list"),
)
BY_ID = {f.id: f for f in FIELDS}
BY_CODE = {(f.object, f.code): f for f in FIELDS}


class ConditionError(ValueError):
    """Filter conditions given to the control API are malformed; ``str()`` says how."""


def condition(object_: str, code: str, operator: str, value: str | None = None) -> dict[str, Any]:
    """A normalised condition on the field ``code`` of ``object_`` (for seeding)."""
    return {
        "object": object_,
        "field_id": BY_CODE[(object_, code)].id,
        "operator": operator,
        "value": value,
        "extra_value": None,
        "json_value_flag": False,
    }


def groups(
    all_of: list[dict[str, Any]], any_of: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The two-group structure: every ``all_of`` condition and (any ``any_of`` one, or none)."""
    return {
        "glue": "and",
        "conditions": [
            {"glue": "and", "conditions": all_of},
            {"glue": "or", "conditions": any_of or []},
        ],
    }


def normalize_conditions(raw: Any, filter_type: str) -> dict[str, Any]:
    """Check conditions sent to the control API and return them in Pipedrive's form.

    Accepts the structure of ``GET /v1/filters/{id}``; a condition may name its field by
    ``field_id`` or by ``field_code``. Raises ``ConditionError``.
    """
    if not isinstance(raw, dict) or raw.get("glue", "and") != "and":
        raise ConditionError("conditions must be an object with glue 'and'")
    outer = raw.get("conditions")
    if not isinstance(outer, list) or len(outer) != 2:
        raise ConditionError("conditions must hold exactly two groups (glue 'and', 'or')")
    normalized: list[list[dict[str, Any]]] = []
    for group, glue in zip(outer, ("and", "or"), strict=True):
        if not isinstance(group, dict) or group.get("glue") != glue:
            raise ConditionError(
                f"the {'first' if glue == 'and' else 'second'} group must have glue '{glue}'"
            )
        items = group.get("conditions", [])
        if not isinstance(items, list):
            raise ConditionError("a group's conditions must be a list")
        normalized.append([_condition(item, filter_type) for item in items])
    if sum(len(g) for g in normalized) > MAX_CONDITIONS:
        raise ConditionError(f"a filter has at most {MAX_CONDITIONS} conditions")
    return groups(normalized[0], normalized[1])


def _condition(item: Any, filter_type: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ConditionError("a condition must be an object")
    object_ = item.get("object")
    if object_ not in RELATED_OBJECTS:
        raise ConditionError(f"object must be one of {', '.join(RELATED_OBJECTS)}")
    if filter_type not in OBJECTS_BY_TYPE:
        raise ConditionError(f"filters of type {filter_type!r} cannot be evaluated")
    field = _field(item, object_)
    operator = item.get("operator")
    if operator not in OPERATORS:
        raise ConditionError(f"operator must be one of {', '.join(OPERATORS)}")
    value = _text(item.get("value"), "value")
    if value is None and operator not in NULL_OPERATORS:
        raise ConditionError(f"operator {operator} needs a value")
    return {
        "object": object_,
        "field_id": field.id,
        "operator": operator,
        "value": None if operator in NULL_OPERATORS else value,
        "extra_value": _text(item.get("extra_value"), "extra_value"),
        "json_value_flag": False,
    }


def _field(item: dict[str, Any], object_: str) -> Field:
    if "field_id" in item:
        field = BY_ID.get(str(item["field_id"]))
    else:
        field = BY_CODE.get((object_, str(item.get("field_code"))))
    if field is None or field.object != object_:
        raise ConditionError(
            f"unknown {object_} field: give a field_id or field_code from the sandbox's catalogue"
        )
    return field


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConditionError(f"{name} must be a string, a number or null")
    return str(value)


def with_field_codes(conditions: dict[str, Any]) -> dict[str, Any]:
    """A copy of normalised conditions where each condition also carries ``field_code``."""
    return groups(
        *(
            [{**c, "field_code": BY_ID[c["field_id"]].code} for c in g["conditions"]]
            for g in conditions["conditions"]
        )
    )
