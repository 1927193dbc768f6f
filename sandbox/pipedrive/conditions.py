"""Evaluating filter conditions the way the fake defines Pipedrive to: every condition of
the ``and`` group, and any of the ``or`` group (or that group is empty).

A condition on a related object holds when any related record satisfies it: for a
person, any of its live deals or its organization; for a deal, its person or its
organization. With no related record only ``IS NULL`` holds. Each condition is checked
on its own, so two deal conditions may be met by two different deals. Text compares
case-insensitively; dates compare by UTC day (``YYYY-MM-DD``); a field holding a list
(emails, labels) matches when any element does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.pipedrive.fields import BY_ID, TIER_KEY
from sandbox.pipedrive.model import Dataset, Deal, Filter, Organization, Person, primary_email

Record = Person | Organization | Deal
Scalar = str | int | float


def _day(value: Any) -> str | None:
    return value.strftime("%Y-%m-%d") if value is not None else None


PERSON_VALUES: dict[str, Callable[[Person], Any]] = {
    "name": lambda p: p.name,
    "first_name": lambda p: p.first_name,
    "last_name": lambda p: p.last_name,
    "email": lambda p: [e.value for e in p.emails],
    "phone": lambda p: [e.value for e in p.phones],
    "org_id": lambda p: p.org_id,
    "owner_id": lambda p: p.owner_id,
    "label_ids": lambda p: p.label_ids,
    "add_time": lambda p: _day(p.add_time),
    "update_time": lambda p: _day(p.update_time),
    TIER_KEY: lambda p: p.custom.get(TIER_KEY),
}
ORGANIZATION_VALUES: dict[str, Callable[[Organization], Any]] = {
    "name": lambda o: o.name,
    "address_country": lambda o: o.country,
    "owner_id": lambda o: o.owner_id,
    "add_time": lambda o: _day(o.add_time),
    "update_time": lambda o: _day(o.update_time),
}
DEAL_VALUES: dict[str, Callable[[Deal], Any]] = {
    "title": lambda d: d.title,
    "value": lambda d: d.value,
    "currency": lambda d: d.currency,
    "status": lambda d: d.status,
    "stage_id": lambda d: d.stage_id,
    "pipeline_id": lambda d: d.pipeline_id,
    "person_id": lambda d: d.person_id,
    "org_id": lambda d: d.org_id,
    "owner_id": lambda d: d.owner_id,
    "add_time": lambda d: _day(d.add_time),
    "update_time": lambda d: _day(d.update_time),
    "won_time": lambda d: _day(d.won_time),
    "lost_time": lambda d: _day(d.lost_time),
    "expected_close_date": lambda d: d.expected_close_date,
    "label_ids": lambda d: d.label_ids,
}


@dataclass
class Members:
    """A filter's members as the fake evaluates it.

    ``ids`` are the matching entities (persons, deals or organizations); ``person_ids``
    the live persons behind them; ``emails`` those persons' primary emails, trimmed,
    lower-cased, without empties or duplicates, sorted.
    """

    type: str
    ids: list[int] = field(default_factory=list)
    person_ids: list[int] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The body of ``GET /_sandbox/filters/{id}/members``."""
        return {
            "type": self.type,
            "ids": self.ids,
            "person_ids": self.person_ids,
            "emails": self.emails,
        }


class Relations:
    """Who is related to whom, indexed once per evaluation."""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.deals_of_person: dict[int, list[Deal]] = defaultdict(list)
        self.deals_of_org: dict[int, list[Deal]] = defaultdict(list)
        self.persons_of_org: dict[int, list[Person]] = defaultdict(list)
        for deal in data.live_deals():
            if deal.person_id is not None:
                self.deals_of_person[deal.person_id].append(deal)
            if deal.org_id is not None:
                self.deals_of_org[deal.org_id].append(deal)
        for person in data.live_persons():
            if person.org_id is not None:
                self.persons_of_org[person.org_id].append(person)

    def related(self, record: Record, object_: str) -> list[Record]:
        """The records of kind ``object_`` a condition on ``record`` is checked against."""
        data = self.data
        found: list[Record] = []
        if isinstance(record, Person):
            if object_ == "person":
                found = [record]
            elif object_ == "deal":
                found = list(self.deals_of_person.get(record.id, []))
            elif (org := data.organization(record.org_id)) is not None:
                found = [org]
        elif isinstance(record, Deal):
            if object_ == "deal":
                found = [record]
            elif object_ == "person" and (person := data.person(record.person_id)):
                found = [person]
            elif object_ == "organization" and (org := data.organization(record.org_id)):
                found = [org]
        elif object_ == "organization":
            found = [record]
        elif object_ == "person":
            found = list(self.persons_of_org.get(record.id, []))
        elif object_ == "deal":
            found = list(self.deals_of_org.get(record.id, []))
        return found


def _values(record: Record, code: str) -> list[Scalar]:
    if isinstance(record, Person):
        raw = PERSON_VALUES[code](record)
    elif isinstance(record, Deal):
        raw = DEAL_VALUES[code](record)
    else:
        raw = ORGANIZATION_VALUES[code](record)
    items = raw if isinstance(raw, list) else [raw]
    return [v for v in items if v is not None and v != ""]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(element: Scalar, wanted: str) -> int:
    """-1, 0 or 1 as ``element`` sorts before, with or after ``wanted``."""
    if isinstance(element, int | float) and (number := _number(wanted)) is not None:
        left: Any = float(element)
        right: Any = number
    else:
        left, right = str(element).strip().casefold(), wanted.strip().casefold()
    return int(left > right) - int(left < right)


def _holds(operator: str, values: list[Scalar], wanted: str | None) -> bool:
    if operator == "IS NULL":
        return not values
    if operator == "IS NOT NULL":
        return bool(values)
    if wanted is None or not values:
        return False
    texts = [str(v).strip().casefold() for v in values]
    needle = wanted.strip().casefold()
    if operator == "LIKE '$%'":
        return any(t.startswith(needle) for t in texts)
    if operator == "LIKE '%$%'":
        return any(needle in t for t in texts)
    if operator == "NOT LIKE '$%'":
        return not any(t.startswith(needle) for t in texts)
    if operator == "!=":
        return all(_compare(v, wanted) != 0 for v in values)
    tests: dict[str, Callable[[int], bool]] = {
        "=": lambda c: c == 0,
        "<": lambda c: c < 0,
        ">": lambda c: c > 0,
        "<=": lambda c: c <= 0,
        ">=": lambda c: c >= 0,
    }
    return any(tests[operator](_compare(v, wanted)) for v in values)


def _condition_holds(cond: dict[str, Any], record: Record, relations: Relations) -> bool:
    code = BY_ID[cond["field_id"]].code
    related = relations.related(record, cond["object"])
    if not related:
        return _holds(cond["operator"], [], cond["value"])
    return any(_holds(cond["operator"], _values(r, code), cond["value"]) for r in related)


def matches(conditions: dict[str, Any], record: Record, relations: Relations) -> bool:
    """Whether ``record`` satisfies normalised filter ``conditions``."""
    all_of, any_of = (g["conditions"] for g in conditions["conditions"])
    if not all(_condition_holds(c, record, relations) for c in all_of):
        return False
    return not any_of or any(_condition_holds(c, record, relations) for c in any_of)


def matching_records(data: Dataset, filter_: Filter) -> list[Record]:
    """The live records of the filter's type that satisfy it, by id."""
    relations = Relations(data)
    records: list[Record]
    if filter_.type == "people":
        records = list(data.live_persons())
    elif filter_.type == "deals":
        records = list(data.live_deals())
    else:
        records = [o for _, o in sorted(data.organizations.items()) if not o.deleted]
    return [r for r in records if matches(filter_.conditions, r, relations)]


def filter_members(data: Dataset, filter_: Filter) -> Members:
    """The filter's members, their persons and those persons' primary emails."""
    records = matching_records(data, filter_)
    persons: dict[int, Person] = {}
    for record in records:
        if isinstance(record, Person):
            persons[record.id] = record
        elif isinstance(record, Deal) and (person := data.person(record.person_id)):
            persons[person.id] = person
    emails = {e for p in persons.values() if (e := primary_email(p)) is not None}
    return Members(
        type=filter_.type,
        ids=[r.id for r in records],
        person_ids=sorted(persons),
        emails=sorted(emails),
    )
