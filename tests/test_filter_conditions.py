"""service/filter_conditions.py: which other objects a filter's conditions name."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.pipedrive.fields import TIER_KEY, condition, groups
from service.filter_conditions import condition_objects, related_objects


def test_the_objects_of_both_condition_groups_are_found() -> None:
    conditions = groups(
        [condition("person", "name", "IS NOT NULL"), condition("deal", "status", "=", "open")],
        [condition("organization", "address_country", "=", "Germany")],
    )
    assert condition_objects(conditions) == {"person", "deal", "organization"}


@pytest.mark.parametrize(
    ("filter_type", "conditions", "expected"),
    [
        # The seeded filters of the fake: on the filter's own object only, and on others.
        ("people", groups([condition("person", "name", "IS NOT NULL")]), ""),
        ("people", groups([condition("person", TIER_KEY, "=", "Gold")]), ""),
        ("people", groups([condition("deal", "status", "=", "open")]), "deal"),
        (
            "people",
            groups([condition("organization", "address_country", "=", "DE")]),
            "organization",
        ),
        ("deals", groups([condition("deal", "status", "=", "won")]), ""),
        (
            "deals",
            groups(
                [condition("deal", "title", "LIKE '$%'", "A")],
                [
                    condition("person", "name", "IS NOT NULL"),
                    condition("organization", "name", "IS NOT NULL"),
                ],
            ),
            "organization,person",
        ),
        (
            "people",
            groups(
                [condition("person", "email", "IS NOT NULL")],
                [
                    condition("organization", "name", "IS NOT NULL"),
                    condition("deal", "status", "=", "open"),
                ],
            ),
            "deal,organization",
        ),
    ],
)
def test_related_objects_are_the_others_sorted(
    filter_type: str, conditions: dict[str, Any], expected: str
) -> None:
    assert related_objects(conditions, filter_type) == expected


def test_without_a_known_type_every_named_object_counts() -> None:
    conditions = groups([condition("person", "name", "IS NOT NULL")])
    assert related_objects(conditions, None) == "person"
    assert related_objects(conditions, "org") == "person"


@pytest.mark.parametrize(
    "conditions", [None, "deal", 7, [], {}, {"conditions": None}, [None, "x", 3, [[]]]]
)
def test_no_conditions_or_garbage_name_nothing(conditions: Any) -> None:
    assert condition_objects(conditions) == set()
    assert related_objects(conditions, "people") == ""


def test_only_non_empty_string_objects_count() -> None:
    conditions = {
        "conditions": [
            {"object": ""},
            {"object": None},
            {"object": 12},
            {"object": ["deal"]},
            {"object": "organization"},
        ]
    }
    assert condition_objects(conditions) == {"organization"}


def test_a_group_is_an_object_too_when_it_names_one() -> None:
    conditions = {"object": "deal", "conditions": [{"object": "person"}]}
    assert condition_objects(conditions) == {"deal", "person"}


def nested(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
    """``leaf`` under ``depth`` levels of groups."""
    node: dict[str, Any] = leaf
    for _ in range(depth):
        node = {"glue": "and", "conditions": [node]}
    return node


def test_nesting_is_followed_to_a_bounded_depth() -> None:
    """Each group level is two steps (the group, then its list); Pipedrive's own two-level
    structure is well inside the bound, an absurdly deep one stops without recursing on."""
    assert condition_objects(nested(4, {"object": "deal"})) == {"deal"}
    assert condition_objects(nested(5, {"object": "deal"})) == set()
    assert condition_objects(nested(5000, {"object": "deal"})) == set()
