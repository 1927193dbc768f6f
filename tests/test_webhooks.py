"""Parsing webhook bodies and classifying v1 and v2 deliveries (service.webhooks)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from service.webhooks import MAX_DEPTH, BadBody, classify, json_depth, parse_body

EXAMPLES = Path(__file__).resolve().parent.parent / "specs" / "pipedrive" / "examples"


def example(name: str) -> dict[str, Any]:
    """A real delivery body from specs/pipedrive/examples."""
    body: dict[str, Any] = json.loads((EXAMPLES / name).read_text("utf-8"))
    return body


def nested(depth: int) -> str:
    """A JSON object whose nesting is exactly ``depth`` levels."""
    return '{"x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


# file -> (key, version, object, action, entity_id, occurred_at)
EXPECTED = {
    "v2_create_person.pipedrive-docs.json": (
        "v2:5359a602-6d1b-4562-a385-ccaa762bd722",
        "2",
        "person",
        "create",
        8,
        1669295935,  # 2022-11-24T13:18:55.665Z
    ),
    "v2_change_person.pipedrive-docs.json": (
        "v2:7c812ffd-8f50-45ea-a597-b8fcba2da9c0",
        "2",
        "person",
        "change",
        8,
        1669303115,
    ),
    "v2_delete_person.pipedrive-docs.json": (
        "v2:0c73badd-ba9e-43dd-ab86-687b9797f46b",
        "2",
        "person",
        "delete",
        8,
        1669303185,
    ),
    "v2_change_deal.pipedrive-docs.json": (
        "v2:df47d877-b58c-4886-91cd-1aa83e1d7366",
        "2",
        "deal",
        "change",
        8,
        1669302715,
    ),
    "v1_updated_person.pipedream.json": (None, "1", "person", "updated", 11, 1739827618),
    "v1_updated_deal.jeltev.json": (None, "1", "deal", "updated", 1, 1718178691),
}


def test_every_example_file_is_covered() -> None:
    """A new example in specs/ gets an expectation here."""
    assert {path.name for path in EXAMPLES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_deliveries_are_read_right(name: str) -> None:
    """The six real payloads: version, object, action, id and time, and all pending."""
    raw = (EXAMPLES / name).read_bytes()
    body, text = parse_body(raw)
    delivery = classify(body, text)
    key, version, obj, action, entity_id, occurred_at = EXPECTED[name]
    if key is not None:
        assert delivery.event_key == key
    else:
        assert delivery.event_key.startswith("v1:") and len(delivery.event_key) == 3 + 64
    assert (delivery.version, delivery.object, delivery.action) == (version, obj, action)
    assert (delivery.entity_id, delivery.occurred_at) == (entity_id, occurred_at)
    assert (delivery.status, delivery.reason) == ("pending", None)
    assert delivery.payload == raw.decode("utf-8")


def key_of(body: dict[str, Any]) -> str:
    return classify(body, json.dumps(body)).event_key


@pytest.mark.parametrize("attempt", [2, 3, 4])
def test_a_v2_redelivery_has_the_same_key(attempt: int) -> None:
    """Only meta.attempt changes between attempts; meta.id is the key."""
    first = example("v2_change_person.pipedrive-docs.json")
    again = copy.deepcopy(first)
    again["meta"]["attempt"] = attempt
    assert key_of(again) == key_of(first)


@pytest.mark.parametrize("retry", [1, 2, 3])
def test_a_v1_redelivery_has_the_same_key(retry: int) -> None:
    """v1 has no event id; the key ignores ``retry``, the attempt counter."""
    first = example("v1_updated_person.pipedream.json")
    again = copy.deepcopy(first)
    again["retry"] = retry
    assert key_of(again) == key_of(first)


def test_v1_events_that_differ_have_different_keys() -> None:
    """Another time, another object, another action, or another state within one second."""
    base = example("v1_updated_person.pipedream.json")
    variants: list[dict[str, Any]] = []
    for path, value in [
        (("meta", "timestamp_micro"), 1739827618595190),
        (("meta", "id"), 12),
        (("meta", "action"), "merged"),
        (("current", "first_name"), "Other"),
    ]:
        variant = copy.deepcopy(base)
        variant[path[0]][path[1]] = value
        variants.append(variant)
    keys = {key_of(base), *(key_of(v) for v in variants)}
    assert len(keys) == 1 + len(variants)


def test_v1_key_does_not_depend_on_the_webhook() -> None:
    """One event delivered by two of our webhooks is stored once."""
    base = example("v1_updated_deal.jeltev.json")
    other = copy.deepcopy(base)
    other["meta"]["webhook_id"] = "999"
    assert key_of(other) == key_of(base)


def v2(**meta: Any) -> dict[str, Any]:
    body = example("v2_change_person.pipedrive-docs.json")
    for name, value in meta.items():
        if value is None:
            body["meta"].pop(name)
        else:
            body["meta"][name] = value
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (v2(entity="activity"), "object 'activity' is not used by the sync"),
        (v2(entity="lead", entity_id="adf21080-0e10-11eb-879b-05d71fb426ec"), "'lead'"),
        (v2(entity="user"), "object 'user' is not used"),
        (v2(entity=None), "no object (meta.entity)"),
        (v2(id=None), "no event id (meta.id)"),
        (v2(id=""), "no event id (meta.id)"),
        (v2(entity_id=None), "no entity id (meta.entity_id)"),
        (v2(entity_id="abc"), "no entity id (meta.entity_id)"),
        (v2(entity_id="0"), "no entity id"),
        (v2(action="merge"), "unknown action 'merge'"),
        (v2(action=None), "no action (meta.action)"),
        ({"hello": "world"}, "not a Pipedrive webhook delivery"),
        ({"meta": "nope", "data": {}}, "not a Pipedrive webhook delivery"),
    ],
)
def test_deliveries_the_sync_cannot_use_are_ignored_with_a_reason(
    body: dict[str, Any], reason: str
) -> None:
    """Never an exception: stored as ignored, the reason says why."""
    delivery = classify(body, json.dumps(body))
    assert delivery.status == "ignored"
    assert delivery.reason is not None and reason in delivery.reason


def test_v1_deliveries_the_sync_cannot_use_are_ignored() -> None:
    """v1: another object, no object id, an unknown action."""
    base = example("v1_updated_person.pipedream.json")
    cases: list[tuple[str, Any, str]] = [
        ("object", "activity", "object 'activity' is not used"),
        ("id", None, "no entity id (meta.id)"),
        ("action", "archived", "unknown action 'archived'"),
    ]
    for name, value, reason in cases:
        body = copy.deepcopy(base)
        body["meta"][name] = value
        delivery = classify(body, json.dumps(body))
        assert delivery.status == "ignored" and reason in (delivery.reason or ""), name


def test_v1_object_and_action_fall_back_to_the_event_field() -> None:
    """``event: "deleted.person"`` when meta lacks object and action."""
    body = example("v1_updated_person.pipedream.json")
    del body["meta"]["object"], body["meta"]["action"]
    body["event"] = "deleted.person"
    delivery = classify(body, json.dumps(body))
    assert (delivery.object, delivery.action, delivery.status) == ("person", "deleted", "pending")


@pytest.mark.parametrize("obj", ["organization", "filter"])
def test_organizations_and_filters_are_kept_for_the_drain(obj: str) -> None:
    """Organizations appear in filter conditions; a filter object means a refresh."""
    assert classify(v2(entity=obj), "{}").status == "pending"


def test_ignored_deliveries_without_ids_still_collapse_their_redeliveries() -> None:
    """No meta.id: the key is the body without the attempt counter."""
    first, again = v2(id=None), v2(id=None, attempt=3)
    assert key_of(first) == key_of(again) and key_of(first).startswith("body:")


def test_timestamps_as_epoch_numbers_are_read_too() -> None:
    """The docs' v2 user examples send epoch seconds instead of ISO strings."""
    assert classify(v2(timestamp=1669304389), "{}").occurred_at == 1669304389
    assert classify(v2(timestamp="yesterday"), "{}").occurred_at is None


@pytest.mark.parametrize(
    "value", [1e400, -1e400, -5, True, "9999-12-31T23:59:59-23:59", "2024-01-01T00:00:00", [1]]
)
def test_unusable_timestamps_are_left_out_never_raised(value: Any) -> None:
    """Infinity (JSON's 1e400), out-of-range or zoneless times: occurred_at is NULL."""
    delivery = classify(v2(timestamp=value), "{}")
    assert delivery.occurred_at is None and delivery.status == "pending"


# --- parse_body ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"meta": ', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"name": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"name": "\xed\xa0\x80"}', "not valid UTF-8"),  # an encoded surrogate
        ('{"a": 1}'.encode("utf-16"), "not valid UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (nested(MAX_DEPTH + 1).encode(), "nested deeper than 64"),
        (b"[" * 200_000, "nested deeper than 64"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_refused(raw: bytes, message: str) -> None:
    """Each is a BadBody (a 400), never another exception."""
    with pytest.raises(BadBody, match=message):
        parse_body(raw)


def test_nesting_up_to_the_limit_and_a_byte_order_mark_are_accepted() -> None:
    """Depth 64 passes; a UTF-8 BOM is dropped."""
    body, _ = parse_body(nested(MAX_DEPTH).encode())
    assert "x" in body
    body, text = parse_body(b'\xef\xbb\xbf{"a": 1}')
    assert body == {"a": 1} and text == '{"a": 1}'


def test_depth_counts_containers_and_skips_brackets_in_strings() -> None:
    """Brackets inside strings, escaped quotes included, are text."""
    assert json_depth("{}") == 1
    assert json_depth('{"a": [1, {"b": []}]}') == 4
    assert json_depth('{"a": "[[[[\\"[[[{{{"}') == 1
    assert json_depth(nested(65)) == 65


def test_depth_check_is_fast_on_hostile_bodies() -> None:
    """256 KiB of brackets or of escaped quotes is measured in milliseconds, not minutes."""
    for text in ["[" * 262_144, "[]" * 131_072, '"' + '\\"' * 131_000]:
        started = time.perf_counter()
        json_depth(text)
        assert time.perf_counter() - started < 0.5
