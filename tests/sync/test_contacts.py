"""workers/sync/contacts.py: what is sent for a member (the normalised email, the attributes)
and the hash that tells whether Brevo must hear of a change."""

from __future__ import annotations

import json

import pytest

from workers.sync.contacts import MAX_EMAIL_LENGTH, Member, contact_row_json, valid_email

DOMAIN = "@example.com"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("anna@example.com", "anna@example.com"),
        ("  Mia.Mixed@Example.COM ", "mia.mixed@example.com"),
        ("\tTAB@EXAMPLE.ORG\n", "tab@example.org"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_valid_email_is_trimmed_and_lower_cased(raw: str, normalised: str) -> None:
    assert valid_email(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "no-at-sign.example.com",
        "@example.com",
        "local@",
        "two@@example.com",
        "a@b@example.com",
        "space inside@example.com",
        "anna@example com",
        "anna@localhost",
        "anna@example.",
        "anna@example.com.",
        "anna@.",
    ],
)
def test_valid_email_rejects_what_does_not_look_deliverable(raw: str | None) -> None:
    assert valid_email(raw) is None


def test_valid_email_length_limit_counts_the_trimmed_address() -> None:
    longest = "a" * (MAX_EMAIL_LENGTH - len(DOMAIN)) + DOMAIN
    assert len(longest) == MAX_EMAIL_LENGTH == 254
    assert valid_email(longest) == longest
    # Surrounding spaces do not count against the limit; one more character does.
    assert valid_email(f"  {longest.upper()}  ") == longest
    assert valid_email("a" + longest) is None


def member(
    email: str | None = "anna@example.com",
    first: str | None = "Anna",
    last: str | None = "Alpha",
    entity_id: int = 1,
    person_id: int | None = 1,
) -> Member:
    return Member(entity_id, person_id, email, first, last)


def test_attributes_are_the_names_and_leave_out_empty_ones() -> None:
    assert member().attributes() == {"FIRSTNAME": "Anna", "LASTNAME": "Alpha"}
    # An empty value would erase what Brevo holds: it is not sent at all.
    assert member(last=None).attributes() == {"FIRSTNAME": "Anna"}
    assert member(first="", last="").attributes() == {}


def test_attrs_hash_changes_with_the_email_and_each_name() -> None:
    base = member().attrs_hash()
    assert base is not None
    assert member().attrs_hash() == base  # stable
    variants = [
        member(email="anna.new@example.com"),
        member(first="Annabel"),
        member(last="Beta"),
        member(last=None),
        member(first="Alpha", last="Anna"),  # swapped names are a change
    ]
    hashes = [v.attrs_hash() for v in variants]
    assert base not in hashes
    assert len(set(hashes)) == len(hashes)


def test_attrs_hash_treats_an_empty_name_as_no_name() -> None:
    assert member(first="", last="").attrs_hash() == member(first=None, last=None).attrs_hash()
    assert member(last="").attrs_hash() == member(last=None).attrs_hash()


def test_attrs_hash_depends_only_on_what_is_sent() -> None:
    """Two deals of one person (different entity ids) send the same contact: one hash."""
    assert member(entity_id=10, person_id=1).attrs_hash() == member(entity_id=11).attrs_hash()


def test_attrs_hash_is_none_without_an_email() -> None:
    assert member(email=None).attrs_hash() is None


def test_contact_row_json_is_an_import_row_without_empty_names() -> None:
    row = json.loads(contact_row_json("anna@example.com", "Anna", None))
    assert row == {"email": "anna@example.com", "attributes": {"FIRSTNAME": "Anna"}}
    assert b" " not in contact_row_json("anna@example.com", "Anna", "Alpha")
