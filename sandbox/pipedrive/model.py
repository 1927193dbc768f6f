"""The fake's records (persons, organizations, deals, filters, webhooks), the account's
fixed identities, and the time formats Pipedrive uses."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

COMPANY_ID = 7001
ADMIN_USER_ID = 1001
USERS = {1001: "Ada Admin", 1002: "Ben Sales", 1003: "Cleo Sales"}
HOST = "sandbox.pipedrive.com"
LABELS = {1: "Hot lead", 2: "Warm lead", 3: "Cold lead"}


@dataclass
class Email:
    """An email or phone entry as Pipedrive keeps it: ``{value, primary, label}``."""

    value: str
    primary: bool = False
    label: str = "work"

    def to_json(self) -> dict[str, Any]:
        """The API v2 / webhook v2 form."""
        return {"value": self.value, "primary": self.primary, "label": self.label}


@dataclass
class Person:
    """A person; ``custom`` maps a custom field's 40-character key to its text value."""

    id: int
    name: str
    first_name: str
    last_name: str | None
    emails: list[Email]
    phones: list[Email]
    org_id: int | None
    owner_id: int
    label_ids: list[int]
    add_time: datetime
    update_time: datetime
    custom: dict[str, str | None] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class Organization:
    """An organization; ``country`` is its address country."""

    id: int
    name: str
    country: str | None
    owner_id: int
    add_time: datetime
    update_time: datetime
    deleted: bool = False


@dataclass
class Deal:
    """A deal; ``person_id`` may be None (a deal without a contact person)."""

    id: int
    title: str
    value: float
    currency: str
    status: str
    stage_id: int
    pipeline_id: int
    person_id: int | None
    org_id: int | None
    owner_id: int
    add_time: datetime
    update_time: datetime
    label_ids: list[int] = field(default_factory=list)
    expected_close_date: str | None = None
    won_time: datetime | None = None
    lost_time: datetime | None = None
    lost_reason: str | None = None
    deleted: bool = False


@dataclass
class Filter:
    """A filter; ``conditions`` is the normalised two-group structure of GET /v1/filters/{id}."""

    id: int
    name: str
    type: str
    conditions: dict[str, Any]
    add_time: datetime
    update_time: datetime
    active_flag: bool = True
    temporary_flag: bool | None = None
    user_id: int = ADMIN_USER_ID
    visible_to: str = "7"
    custom_view_id: int | None = None
    deleted: bool = False


@dataclass
class Webhook:
    """A registered webhook, with its delivery statistics and ban state."""

    id: int
    subscription_url: str
    event_action: str
    event_object: str
    name: str
    version: str
    user_id: int
    http_auth_user: str | None
    http_auth_password: str | None
    add_time: datetime
    last_delivery_time: datetime | None = None
    last_http_status: int | None = None
    first_attempt_failures: int = 0
    banned_until: float | None = None


def primary_email(person: Person) -> str | None:
    """The address the sync uses: the one marked primary, else the first; trimmed and
    lower-cased; None when empty."""
    chosen = next((e for e in person.emails if e.primary), None)
    if chosen is None and person.emails:
        chosen = person.emails[0]
    value = chosen.value.strip().lower() if chosen else ""
    return value or None


def v2_time(moment: datetime) -> str:
    """API v2 form, ``2024-05-01T10:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def v1_time(moment: datetime) -> str:
    """API v1 form, ``2024-05-01 10:00:00``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso_millis(moment: datetime) -> str:
    """Millisecond ISO form of webhook timestamps, ``2024-05-01T10:00:00.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class Stamps:
    """Hands out ``update_time`` values: whole seconds, strictly increasing, so two quick
    changes still order (API v2 shows only seconds)."""

    def __init__(self, floor: datetime) -> None:
        self._lock = threading.Lock()
        self._last = floor

    def next(self) -> datetime:
        """A time later than every one handed out before, and not before now."""
        now = datetime.now(UTC).replace(microsecond=0)
        with self._lock:
            self._last = max(now, self._last + timedelta(seconds=1))
            return self._last


@dataclass
class Dataset:
    """Everything the fake's API reads: records by id (deleted ones kept, flagged)."""

    persons: dict[int, Person] = field(default_factory=dict)
    organizations: dict[int, Organization] = field(default_factory=dict)
    deals: dict[int, Deal] = field(default_factory=dict)
    filters: dict[int, Filter] = field(default_factory=dict)

    def live_persons(self) -> list[Person]:
        """Persons not deleted, by id."""
        # Sorting the keys, not the items: 100,000 (id, record) tuples cost ten times more.
        persons = self.persons
        return [p for i in sorted(persons) if not (p := persons[i]).deleted]

    def live_deals(self) -> list[Deal]:
        """Deals not deleted, by id."""
        deals = self.deals
        return [d for i in sorted(deals) if not (d := deals[i]).deleted]

    def person(self, person_id: int | None) -> Person | None:
        """The live person with this id, if any."""
        person = self.persons.get(person_id) if person_id is not None else None
        return person if person is not None and not person.deleted else None

    def organization(self, org_id: int | None) -> Organization | None:
        """The live organization with this id, if any."""
        org = self.organizations.get(org_id) if org_id is not None else None
        return org if org is not None and not org.deleted else None


def json_number(value: float) -> int | float:
    """An amount as Pipedrive writes it: whole numbers without ``.0``."""
    return int(value) if float(value).is_integer() else value
