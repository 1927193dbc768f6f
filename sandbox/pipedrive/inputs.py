"""Checking the JSON bodies of the control API and applying them to records.

Every function raises ``InputError`` (answered 400) for a malformed body and
``NotFound`` (404) when a body refers to a record that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox.pipedrive.fields import TIER_KEY, ConditionError, normalize_conditions
from sandbox.pipedrive.model import (
    ADMIN_USER_ID,
    LABELS,
    USERS,
    Dataset,
    Deal,
    Email,
    Filter,
    Organization,
    Person,
)

PERSON_KEYS = frozenset(
    [
        "name",
        "first_name",
        "last_name",
        "emails",
        "phones",
        "org_id",
        "owner_id",
        "label_ids",
        "custom_fields",
    ]
)
DEAL_KEYS = frozenset(
    [
        "title",
        "value",
        "currency",
        "status",
        "stage_id",
        "pipeline_id",
        "person_id",
        "org_id",
        "owner_id",
        "label_ids",
        "expected_close_date",
        "lost_reason",
    ]
)
ORGANIZATION_KEYS = frozenset(["name", "country", "owner_id"])
FILTER_KEYS = frozenset(
    ["name", "type", "conditions", "active_flag", "temporary_flag", "visible_to"]
)
DEAL_STATUSES = ("open", "won", "lost")
FILTER_TYPES = ("people", "deals", "org")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


class InputError(ValueError):
    """A control-API body is malformed; ``str()`` says how."""


class NotFound(LookupError):
    """A control-API request names a record that does not exist; ``str()`` says which."""


def body_object(payload: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """``payload`` as a JSON object holding only ``allowed`` keys."""
    if not isinstance(payload, dict):
        raise InputError("the body must be a JSON object")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise InputError(
            f"unknown keys: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return payload


def _text(value: Any, name: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} must be a non-empty string" + (" or null" if nullable else ""))
    return value


def _required_text(value: Any, name: str) -> str:
    text = _text(value, name)
    assert text is not None
    return text


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer")
    return value


def _owner(value: Any) -> int:
    owner = _int(value, "owner_id")
    if owner not in USERS:
        raise InputError(f"owner_id must be one of {', '.join(map(str, USERS))}")
    return owner


def _labels(value: Any) -> list[int]:
    if not isinstance(value, list) or any(v not in LABELS or v is True for v in value):
        raise InputError(f"label_ids must be a list of label ids ({', '.join(map(str, LABELS))})")
    return list(value)


def _entries(value: Any, name: str) -> list[Email]:
    """Strings (the first one primary) or ``{value, primary?, label?}`` objects, kept as given."""
    if not isinstance(value, list):
        raise InputError(f"{name} must be a list")
    entries: list[Email] = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            entries.append(Email(item, index == 0, "work"))
        elif isinstance(item, dict) and isinstance(item.get("value"), str):
            primary, label = item.get("primary", False), item.get("label", "work")
            if not isinstance(primary, bool) or not isinstance(label, str):
                raise InputError(f"{name}: primary must be a boolean and label a string")
            entries.append(Email(item["value"], primary, label))
        else:
            raise InputError(f"{name} items must be strings or objects with a string value")
    return entries


def _reference(
    value: Any, name: str, kind: str, find: Callable[[int], object | None]
) -> int | None:
    """An optional id (``org_id``, ``person_id``) of a ``kind`` of record that must exist."""
    if value is None:
        return None
    record_id = _int(value, name)
    if find(record_id) is None:
        raise NotFound(f"{kind} {record_id} not found")
    return record_id


def _custom(value: Any) -> dict[str, str | None]:
    if not isinstance(value, dict) or set(value) - {TIER_KEY}:
        raise InputError(f"custom_fields may only hold {TIER_KEY} (Customer tier)")
    return {k: _text(v, k, nullable=True) for k, v in value.items()}


def apply_person(person: Person, body: dict[str, Any], data: Dataset) -> None:
    """Apply a checked create/update body to ``person``; a new first or last name renames."""
    if "first_name" in body:
        person.first_name = _required_text(body["first_name"], "first_name")
    if "last_name" in body:
        person.last_name = _text(body["last_name"], "last_name", nullable=True)
    if "name" in body:
        person.name = _required_text(body["name"], "name")
    elif "first_name" in body or "last_name" in body:
        person.name = " ".join(p for p in (person.first_name, person.last_name) if p)
    if "emails" in body:
        person.emails = _entries(body["emails"], "emails")
    if "phones" in body:
        person.phones = _entries(body["phones"], "phones")
    if "org_id" in body:
        person.org_id = _reference(body["org_id"], "org_id", "organization", data.organization)
    if "owner_id" in body:
        person.owner_id = _owner(body["owner_id"])
    if "label_ids" in body:
        person.label_ids = _labels(body["label_ids"])
    if "custom_fields" in body:
        person.custom = {**person.custom, **_custom(body["custom_fields"])}


def new_person(person_id: int, body: dict[str, Any], data: Dataset, now: datetime) -> Person:
    """A person from a create body; ``name`` or ``first_name`` is required. A name alone
    is split into first and last name, as Pipedrive does."""
    if "name" not in body and "first_name" not in body:
        raise InputError("a person needs a name or a first_name")
    first, _, last = str(body.get("name", "")).strip().partition(" ")
    names = {"first_name": first, "last_name": last.strip() or None}
    person = Person(
        id=person_id,
        name="",
        first_name=first,
        last_name=None,
        emails=[],
        phones=[],
        org_id=None,
        owner_id=ADMIN_USER_ID,
        label_ids=[],
        add_time=now,
        update_time=now,
        custom={TIER_KEY: None},
    )
    apply_person(person, {**names, **body} if "first_name" not in body else body, data)
    return person


def apply_deal(deal: Deal, body: dict[str, Any], data: Dataset, now: datetime) -> None:
    """Apply a checked create/update body to ``deal``; a status change sets its times."""
    if "title" in body:
        deal.title = _required_text(body["title"], "title")
    if "value" in body:
        value = body["value"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InputError("value must be a non-negative number")
        deal.value = float(value)
    if "currency" in body:
        currency = _required_text(body["currency"], "currency")
        if len(currency) != 3:
            raise InputError("currency must be a 3-letter code")
        deal.currency = currency.upper()
    for key in ("stage_id", "pipeline_id"):
        if key in body:
            setattr(deal, key, _int(body[key], key))
    if "person_id" in body:
        deal.person_id = _reference(body["person_id"], "person_id", "person", data.person)
    if "org_id" in body:
        deal.org_id = _reference(body["org_id"], "org_id", "organization", data.organization)
    if "owner_id" in body:
        deal.owner_id = _owner(body["owner_id"])
    if "label_ids" in body:
        deal.label_ids = _labels(body["label_ids"])
    if "expected_close_date" in body:
        date = body["expected_close_date"]
        if date is not None and not (isinstance(date, str) and DATE.match(date)):
            raise InputError("expected_close_date must be YYYY-MM-DD or null")
        deal.expected_close_date = date
    if "lost_reason" in body:
        deal.lost_reason = _text(body["lost_reason"], "lost_reason", nullable=True)
    if "status" in body and body["status"] != deal.status:
        _set_status(deal, body["status"], now)


def _set_status(deal: Deal, status: Any, now: datetime) -> None:
    if status not in DEAL_STATUSES:
        raise InputError(f"status must be one of {', '.join(DEAL_STATUSES)}")
    deal.status = status
    deal.won_time = now if status == "won" else None
    deal.lost_time = now if status == "lost" else None
    if status != "lost":
        deal.lost_reason = None


def new_deal(deal_id: int, body: dict[str, Any], data: Dataset, now: datetime) -> Deal:
    """A deal from a create body; ``title`` is required."""
    if "title" not in body:
        raise InputError("a deal needs a title")
    deal = Deal(
        id=deal_id,
        title="",
        value=0.0,
        currency="EUR",
        status="open",
        stage_id=1,
        pipeline_id=1,
        person_id=None,
        org_id=None,
        owner_id=ADMIN_USER_ID,
        add_time=now,
        update_time=now,
    )
    apply_deal(deal, body, data, now)
    return deal


def apply_organization(org: Organization, body: dict[str, Any]) -> None:
    """Apply a checked create/update body to ``org``."""
    if "name" in body:
        org.name = _required_text(body["name"], "name")
    if "country" in body:
        org.country = _text(body["country"], "country", nullable=True)
    if "owner_id" in body:
        org.owner_id = _owner(body["owner_id"])


def new_organization(org_id: int, body: dict[str, Any], now: datetime) -> Organization:
    """An organization from a create body; ``name`` is required."""
    if "name" not in body:
        raise InputError("an organization needs a name")
    org = Organization(org_id, "", None, ADMIN_USER_ID, now, now)
    apply_organization(org, body)
    return org


def apply_filter(filter_: Filter, body: dict[str, Any]) -> None:
    """Apply a checked create/update body to ``filter_`` (its type cannot change)."""
    if "type" in body and body["type"] != filter_.type:
        raise InputError("a filter's type cannot change")
    if "name" in body:
        name = _required_text(body["name"], "name")
        if len(name) > 255:
            raise InputError("name must be at most 255 characters")
        filter_.name = name
    if "conditions" in body:
        try:
            filter_.conditions = normalize_conditions(body["conditions"], filter_.type)
        except ConditionError as exc:
            raise InputError(str(exc)) from exc
    if "active_flag" in body:
        if not isinstance(body["active_flag"], bool):
            raise InputError("active_flag must be a boolean")
        filter_.active_flag = body["active_flag"]
    if "temporary_flag" in body:
        if body["temporary_flag"] is not None and not isinstance(body["temporary_flag"], bool):
            raise InputError("temporary_flag must be a boolean or null")
        filter_.temporary_flag = body["temporary_flag"]
    if "visible_to" in body:
        if body["visible_to"] not in ("1", "3", "5", "7"):
            raise InputError("visible_to must be one of '1', '3', '5', '7'")
        filter_.visible_to = body["visible_to"]


def new_filter(filter_id: int, body: dict[str, Any], now: datetime) -> Filter:
    """A filter from a create body; ``name``, ``type`` and ``conditions`` are required."""
    missing = [k for k in ("name", "type", "conditions") if k not in body]
    if missing:
        raise InputError(f"a filter needs {', '.join(missing)}")
    if body["type"] not in FILTER_TYPES:
        raise InputError(f"type must be one of {', '.join(FILTER_TYPES)}")
    filter_ = Filter(filter_id, "", body["type"], {}, now, now)
    apply_filter(filter_, body)
    return filter_
