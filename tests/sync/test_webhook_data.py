"""workers/sync/webhook_data.py: what a stored person delivery says about the person.

Read from the official examples (``specs/pipedrive/examples``) and from bodies the fake
Pipedrive builds (``sandbox/pipedrive/events.py``), in both webhook versions; a garbled
body gives no data and never raises.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox.pipedrive.events import ChangeEvent
from sandbox.pipedrive.model import Dataset, Email, Person
from sandbox.pipedrive.payload_data import person_webhook_v1, person_webhook_v2
from tests.sync.conftest import delivery_body
from workers.sync.webhook_data import PersonData, merged_to, person_data, unix_time

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "pipedrive" / "examples"
CHANGED_AT = datetime(2030, 3, 4, 5, 6, 7, tzinfo=UTC)


def example(name: str) -> str:
    """The text of an official example delivery."""
    return (EXAMPLES / name).read_text("utf-8")


def unix(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


def sandbox_person(
    emails: list[Email], first: str = "Ada", last: str | None = "Lovelace"
) -> Person:
    """A person as the fake keeps it, last changed at ``CHANGED_AT``."""
    return Person(
        id=4711,
        name=f"{first} {last}" if last else first,
        first_name=first,
        last_name=last,
        emails=emails,
        phones=[],
        org_id=None,
        owner_id=1001,
        label_ids=[],
        add_time=datetime(2029, 1, 1, tzinfo=UTC),
        update_time=CHANGED_AT,
    )


def change_event(person: Person, action: str = "change") -> ChangeEvent:
    """The event the fake would announce for ``person``."""
    live = action != "delete"
    return ChangeEvent(
        entity="person",
        entity_id=person.id,
        action=action,
        v1_action={"create": "added", "change": "updated", "delete": "deleted"}[action],
        at=CHANGED_AT,
        v2_data=person_webhook_v2(person) if live else None,
        v2_previous=None if live else person_webhook_v2(person),
        v1_current=person_webhook_v1(person, Dataset()) if live else None,
        v1_previous=person_webhook_v1(person, Dataset()),
    )


def payload(event: ChangeEvent, version: str) -> str:
    return json.dumps(delivery_body(event, version))


# --- the official examples --------------------------------------------------------------


def test_v2_change_example_gives_the_names_and_no_email() -> None:
    assert person_data("2", example("v2_change_person.pipedrive-docs.json")) == PersonData(
        person_id=8,
        email=None,  # "emails": []
        first_name="Sample Person",
        last_name=None,
        updated_at=unix(2022, 11, 24, 15, 18, 35),
    )


def test_v2_create_example_gives_the_person_as_created() -> None:
    assert person_data("2", example("v2_create_person.pipedrive-docs.json")) == PersonData(
        8, None, "Sample", None, unix(2022, 11, 24, 13, 18, 55)
    )


def test_v2_delete_example_carries_no_data_and_no_survivor() -> None:
    text = example("v2_delete_person.pipedrive-docs.json")
    assert person_data("2", text) is None
    assert merged_to("2", text) is None


def test_v1_example_with_the_empty_primary_email_placeholder_has_no_email() -> None:
    """v1 shows "no email" as ``[{"value": "", "primary": true}]``; its time is UTC."""
    assert person_data("1", example("v1_updated_person.pipedream.json")) == PersonData(
        person_id=11,
        email=None,
        first_name="Person Name",
        last_name="Surname",
        updated_at=unix(2025, 2, 17, 21, 26, 58),
    )


def test_the_version_decides_where_the_person_is_read() -> None:
    """A v2 body read as v1 (or the reverse) has no person where that version keeps it."""
    assert person_data("1", example("v2_change_person.pipedrive-docs.json")) is None
    assert person_data("2", example("v1_updated_person.pipedream.json")) is None


# --- bodies the fake builds -------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_primary_email_wins_wherever_it_is_listed(version: str) -> None:
    person = sandbox_person(
        [
            Email("second@example.com", primary=False),
            Email("  Ada.Primary@Example.COM ", primary=True),
            Email("third@example.com", primary=False),
        ]
    )
    assert person_data(version, payload(change_event(person), version)) == PersonData(
        4711, "ada.primary@example.com", "Ada", "Lovelace", int(CHANGED_AT.timestamp())
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_without_a_primary_the_first_listed_email_is_taken(version: str) -> None:
    person = sandbox_person([Email("First@Example.com"), Email("second@example.com")])
    data = person_data(version, payload(change_event(person), version))
    assert data is not None and data.email == "first@example.com"


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_invalid_primary_email_gives_no_email_not_another_address(version: str) -> None:
    """The primary address decides, as in a full resync: when it is not deliverable the
    person has no usable email (the secondary one is not sent instead)."""
    person = sandbox_person(
        [Email("not an email", primary=True), Email("fallback@example.com", primary=False)]
    )
    data = person_data(version, payload(change_event(person), version))
    assert data == PersonData(4711, None, "Ada", "Lovelace", int(CHANGED_AT.timestamp()))


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_person_without_emails_and_last_name(version: str) -> None:
    """The fake shows no emails as ``[]`` (v2) and as the empty primary placeholder (v1)."""
    person = sandbox_person([], first="Solo", last=None)
    body = delivery_body(change_event(person), version)
    if version == "1":
        assert body["current"]["email"] == [{"value": "", "primary": True}]
    data = person_data(version, json.dumps(body))
    assert data == PersonData(4711, None, "Solo", None, int(CHANGED_AT.timestamp()))


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_delete_built_by_the_fake_carries_no_data(version: str) -> None:
    person = sandbox_person([Email("gone@example.com", primary=True)])
    assert person_data(version, payload(change_event(person, "delete"), version)) is None


def test_merged_to_reads_the_survivor_of_a_v2_merge_delete() -> None:
    person = sandbox_person([Email("gone@example.com", primary=True)])
    event = change_event(person, "delete")
    merge = ChangeEvent(**{**event.__dict__, "merged_to_id": 815})
    body = delivery_body(merge, "2")
    assert body["meta"]["merged_to_id"] == "815"  # v2 meta ids are strings
    assert merged_to("2", json.dumps(body)) == 815
    # The same with the id as a number.
    body["meta"]["merged_to_id"] = 815
    assert merged_to("2", json.dumps(body)) == 815
    # v1 has no such field: a v1 merge is told by its "merged" action instead.
    assert merged_to("1", json.dumps(delivery_body(merge, "1"))) is None
    assert merged_to("1", json.dumps(body)) is None


@pytest.mark.parametrize(
    "value", [None, "", "abc", "-5", "12a", -3, 0, True, 1.5, "9" * 40, [815], {"id": 815}]
)
def test_merged_to_ignores_anything_but_a_positive_id(value: Any) -> None:
    body = {"data": None, "meta": {"action": "delete", "merged_to_id": value}}
    assert merged_to("2", json.dumps(body)) is None


def test_merged_to_refuses_a_zero_id_sent_as_a_string() -> None:
    body = {"data": None, "meta": {"action": "delete", "merged_to_id": "0"}}
    assert merged_to("2", json.dumps(body)) is None


# --- garbled bodies ----------------------------------------------------------------------


def v2_with(data: Any) -> str:
    return json.dumps({"data": data, "meta": {"entity": "person", "entity_id": "8"}})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1, 2]",
        '"a string"',
        "null",
        v2_with(None),
        v2_with("a string"),
        v2_with([{"id": 8}]),
        v2_with({"first_name": "No id"}),
        v2_with({"id": None}),
        v2_with({"id": "eight"}),
        v2_with({"id": {"nested": 8}}),
        v2_with({"id": 8, "emails": "ada@example.com"}),
        v2_with({"id": 8, "emails": {"value": "ada@example.com"}}),
        v2_with({"id": 8, "emails": 5}),
    ],
)
def test_a_garbled_v2_body_gives_no_data(text: str) -> None:
    assert person_data("2", text) is None
    assert merged_to("2", text) is None


@pytest.mark.parametrize(
    "current",
    [None, "x", [], {"name": "No id"}, {"id": 11, "email": "ada@example.com"}],
)
def test_a_garbled_v1_body_gives_no_data(current: Any) -> None:
    assert person_data("1", json.dumps({"current": current, "meta": {"id": 11}})) is None


def test_odd_field_values_are_read_leniently() -> None:
    """Entries that are not objects are skipped, empty names are None, an unreadable time
    is unknown; the id may be a numeric string."""
    text = v2_with(
        {
            "id": "8",
            "emails": ["plain@example.com", None, 7, {"value": None}, {"value": "Ok@Example.com"}],
            "first_name": "",
            "last_name": None,
            "update_time": "yesterday",
        }
    )
    assert person_data("2", text) == PersonData(8, "ok@example.com", None, None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-11-24T15:18:35Z", unix(2022, 11, 24, 15, 18, 35)),
        ("2024-06-12 07:51:31", unix(2024, 6, 12, 7, 51, 31)),  # v1: UTC without a zone
        ("2024-06-12T09:51:31+02:00", unix(2024, 6, 12, 7, 51, 31)),
        ("2024-06-12T07:51:31.900Z", unix(2024, 6, 12, 7, 51, 31)),
        ("", None),
        ("yesterday", None),
        ("2024-13-40 99:00:00", None),
        ("2024-06-12 07:51:31" + " " * 30, None),  # too long to be a time
        (1718178691, None),
        (None, None),
        (["2024-06-12 07:51:31"], None),
    ],
)
def test_unix_time_reads_both_versions_formats(text: Any, expected: int | None) -> None:
    assert unix_time(text) == expected
