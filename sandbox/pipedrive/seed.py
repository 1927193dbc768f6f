"""Deterministic demo data: the same seed always gives the same persons, organizations,
deals and filters.

Filters (ids stable across seeds): 1 "Everyone" (every person), 2 "Hot leads" (a label,
a few hundred), 3 "People with an open deal" (a condition on a related deal), 4 "Won
deals" (a deal filter), 5 a temporary people filter, 6 an inactive people filter, 7 an
organization filter, 8 "People at German organizations" (a condition on the related
organization).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.pipedrive.fields import TIER_KEY, condition, groups
from sandbox.pipedrive.model import (
    USERS,
    Dataset,
    Deal,
    Email,
    Filter,
    Organization,
    Person,
)

BASE = datetime(2024, 1, 1, tzinfo=UTC)
FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Felix",
    "Greta",
    "Hugo",
    "Ida",
    "Jonas",
    "Klara",
    "Lukas",
    "Mia",
    "Noah",
    "Olga",
    "Paul",
    "Quinn",
    "Rosa",
    "Sven",
    "Tina",
    "Ugo",
    "Vera",
    "Walter",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Åsa",
    "Jörg",
    "Renée",
    "Chloé",
]
LAST = [
    "Müller",
    "Schmidt",
    "Meyer",
    "Weber",
    "Fischer",
    "Wagner",
    "Becker",
    "Hoffmann",
    "Schulz",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Neumann",
    "Schwarz",
    "Braun",
    "Zimmermann",
    "Krüger",
    "Hartmann",
    "Lange",
    "Smith",
    "Jones",
    "Dubois",
    "Tamm",
    "Kask",
    "Rossi",
    "Silva",
    "Novak",
    "Jensen",
    "O'Brien",
]
COUNTRIES = ("Germany", "France", "Estonia", "United States", "United Kingdom", "Netherlands")
ORG_WORDS = [
    "Acme",
    "Nordwind",
    "Blau",
    "Helix",
    "Sonne",
    "Vektor",
    "Kiri",
    "Polar",
    "Atlas",
    "Quanta",
    "Lumen",
    "Orbit",
]
ORG_SUFFIXES = ("GmbH", "AG", "OÜ", "Ltd", "Inc", "BV", "SAS")
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.de")
ORGANIZATIONS = 60
DEALS = 500


def _when(rng: random.Random, after: datetime, days: int) -> datetime:
    return after + timedelta(seconds=rng.randrange(0, days * 86400))


def _emails(rng: random.Random, pid: int, first: str, last: str | None) -> list[Email]:
    local = f"{first}.{last or 'solo'}{pid}".replace("'", "")
    domain = rng.choice(DOMAINS)
    roll = rng.random()
    if roll < 0.05:
        return []
    address = f"{local}@{domain}".lower()
    if rng.random() < 0.08:
        # Messy but valid: the sync must trim and lower-case before comparing.
        address = f"  {local}@{domain.upper()} "
    if roll < 0.15:
        extra = [Email(f"{local}.{n}@alt.example.com".lower(), False, "home") for n in (1, 2)]
        emails = [Email(address, False, "work"), *extra[: rng.randint(1, 2)]]
        if rng.random() < 0.9:
            rng.shuffle(emails)
            emails[rng.randrange(len(emails))].primary = True
        return emails
    return [Email(address, True, "work")]


def _person(rng: random.Random, pid: int, orgs: int) -> Person:
    first = rng.choice(FIRST)
    last = rng.choice(LAST) if rng.random() > 0.02 else None
    added = _when(rng, BASE, 300)
    labels: list[int] = []
    roll = rng.random()
    if roll < 0.33:
        labels = [1] if rng.random() < 0.8 else [1, 3]
    elif roll < 0.55:
        labels = [2]
    elif roll < 0.7:
        labels = [3]
    phones = [Email(f"+49 30 {rng.randrange(1_000_000, 9_999_999)}", True, "work")]
    return Person(
        id=pid,
        name=f"{first} {last}" if last else first,
        first_name=first,
        last_name=last,
        emails=_emails(rng, pid, first, last),
        phones=phones if rng.random() < 0.5 else [],
        org_id=rng.randint(1, orgs) if rng.random() < 0.85 else None,
        owner_id=rng.choice(list(USERS)),
        label_ids=labels,
        add_time=added,
        update_time=_when(rng, added, 60),
        custom={TIER_KEY: rng.choice(("Gold", "Silver", "Bronze", None))},
    )


def _share_some_emails(rng: random.Random, persons: list[Person]) -> None:
    # A few persons share an address (differently cased): one Brevo contact, two members.
    with_email = [p for p in persons if p.emails]
    for person in rng.sample(with_email, max(1, len(with_email) // 100)):
        other = rng.choice(with_email)
        if other is not person:
            person.emails = [Email(other.emails[0].value.strip().upper(), True, "work")]


def _deal(rng: random.Random, did: int, persons: list[Person], orgs: list[Organization]) -> Deal:
    person = rng.choice(persons) if rng.random() > 0.03 else None
    org_id = person.org_id if person else rng.choice(orgs).id
    status = rng.choices(("open", "won", "lost"), (50, 25, 25))[0]
    pipeline = 1 if rng.random() < 0.7 else 2
    added = _when(rng, BASE, 330)
    updated = _when(rng, added, 30)
    subject = orgs[org_id - 1].name if org_id else (person.name if person else "Walk-in")
    return Deal(
        id=did,
        title=f"{subject} deal #{did}",
        value=float(rng.randrange(100, 50_000, 50)),
        currency="EUR" if rng.random() < 0.8 else "USD",
        status=status,
        stage_id=rng.randint(1, 5) if pipeline == 1 else rng.randint(6, 8),
        pipeline_id=pipeline,
        person_id=person.id if person else None,
        org_id=org_id,
        owner_id=rng.choice(list(USERS)),
        add_time=added,
        update_time=updated,
        label_ids=[],
        expected_close_date=(
            _when(rng, added, 120).strftime("%Y-%m-%d") if rng.random() < 0.6 else None
        ),
        won_time=updated if status == "won" else None,
        lost_time=updated if status == "lost" else None,
        lost_reason=rng.choice(("Price", "Timing", "No budget")) if status == "lost" else None,
    )


def _filters(rng: random.Random) -> list[Filter]:
    def made(fid: int, name: str, type_: str, conditions: dict[str, Any]) -> Filter:
        added = _when(rng, BASE, 30)
        return Filter(fid, name, type_, conditions, added, _when(rng, added, 30))

    filters = [
        made(1, "Everyone", "people", groups([condition("person", "name", "IS NOT NULL")])),
        made(
            2,
            "Hot leads",
            "people",
            groups(
                [
                    condition("person", "label_ids", "=", "1"),
                    condition("person", "email", "IS NOT NULL"),
                ]
            ),
        ),
        made(
            3,
            "People with an open deal",
            "people",
            groups([condition("deal", "status", "=", "open")]),
        ),
        made(4, "Won deals", "deals", groups([condition("deal", "status", "=", "won")])),
        made(
            5,
            "Quick search: Mü",
            "people",
            groups([condition("person", "last_name", "LIKE '$%'", "Mü")]),
        ),
        made(
            6,
            "Gold customers 2023 (inactive)",
            "people",
            groups([condition("person", TIER_KEY, "=", "Gold")]),
        ),
        made(
            7,
            "German organizations",
            "org",
            groups([condition("organization", "address_country", "=", "Germany")]),
        ),
        made(
            8,
            "People at German organizations",
            "people",
            groups([condition("organization", "address_country", "=", "Germany")]),
        ),
    ]
    filters[4].temporary_flag = True
    filters[5].active_flag = False
    filters[0].custom_view_id = 11
    return filters


def seed_dataset(seed: int, persons: int) -> Dataset:
    """The demo data for ``seed`` with ``persons`` persons."""
    rng = random.Random(seed)
    orgs = []
    for oid in range(1, ORGANIZATIONS + 1):
        added = _when(rng, BASE, 200)
        orgs.append(
            Organization(
                id=oid,
                name=f"{rng.choice(ORG_WORDS)} {oid} {rng.choice(ORG_SUFFIXES)}",
                country=rng.choice(COUNTRIES) if rng.random() < 0.9 else None,
                owner_id=rng.choice(list(USERS)),
                add_time=added,
                update_time=_when(rng, added, 60),
            )
        )
    people = [_person(rng, pid, ORGANIZATIONS) for pid in range(1, persons + 1)]
    _share_some_emails(rng, people)
    deals = [_deal(rng, did, people, orgs) for did in range(1, DEALS + 1)]
    return Dataset(
        persons={p.id: p for p in people},
        organizations={o.id: o for o in orgs},
        deals={d.id: d for d in deals},
        filters={f.id: f for f in _filters(rng)},
    )
