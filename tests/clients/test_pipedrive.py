"""The Pipedrive client against the Pipedrive fake, over real HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from service.clients.errors import ApiAuthError, ApiBudgetExhausted, ApiUnavailable
from service.clients.http import ClientPolicy
from service.clients.pipedrive import (
    LIST_PERSONS,
    Deal,
    Person,
    PipedriveClient,
    person_from_json,
)
from service.clients.usage import MemoryUsage
from tests.fakes import RunningFake

FAST = ClientPolicy(connect_timeout=1.0, read_timeout=0.5, max_attempts=3, backoff_base=0.05)


def client(fake: RunningFake, token: str = "pd-token", **kwargs: object) -> PipedriveClient:
    options: dict[str, object] = {
        "usage": MemoryUsage(),
        "policy": FAST,
        "requests_per_second": 500,
    }
    options.update(kwargs)
    return PipedriveClient(fake.url, token, **options)  # type: ignore[arg-type]


def calls(pd: PipedriveClient, template: str = "/api/v2/persons") -> int:
    usage = pd.http.usage
    assert isinstance(usage, MemoryUsage)
    return usage.count("pipedrive", "GET", template)


def test_pages_to_the_last_page_of_a_1200_member_filter(pipedrive_fake: RunningFake) -> None:
    pd = client(pipedrive_fake)
    pages = list(pd.iter_members("people", 1))
    assert [len(p.members) for p in pages] == [500, 500, 200]
    ids = [m.id for p in pages for m in p.members]
    assert len(ids) == len(set(ids)) == 1200
    assert calls(pd) == 3
    assert not any(p.ignored_updated_since for p in pages)


def test_members_match_what_the_fake_itself_evaluates(pipedrive_fake: RunningFake) -> None:
    pd = client(pipedrive_fake)
    for filter_id, kind in ((3, "people"), (4, "deals")):
        expected = pipedrive_fake.control("GET", f"/_sandbox/filters/{filter_id}/members").json()
        members = [m for p in pd.iter_members(kind, filter_id) for m in p.members]  # type: ignore[arg-type]
        assert sorted(m.id for m in members) == sorted(expected["ids"])
        if kind == "deals":
            assert all(isinstance(m, Deal) for m in members)


def test_updated_since_narrows_the_answer_and_a_fake_that_ignores_it_is_detected(
    pipedrive_fake: RunningFake,
) -> None:
    pd = client(pipedrive_fake)
    since = datetime.now(UTC) - timedelta(seconds=5)
    pipedrive_fake.control("PATCH", "/_sandbox/persons/7", json={"first_name": "Changed"})
    pages = list(pd.iter_members("people", 1, updated_since=since))
    changed = [m for p in pages for m in p.members]
    assert [m.id for m in changed] == [7]
    assert isinstance(changed[0], Person) and changed[0].first_name == "Changed"
    assert not pages[0].ignored_updated_since
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"ignore_updated_since": True})
    pages = list(pd.iter_members("people", 1, updated_since=since))
    assert sum(len(p.members) for p in pages) == 1200
    assert pages[0].ignored_updated_since


def test_persons_by_ids_asks_100_at_a_time(pipedrive_fake: RunningFake) -> None:
    pd = client(pipedrive_fake)
    persons = pd.persons_by_ids(list(range(1, 251)) + [5, 999_999])
    assert sorted(p.id for p in persons) == list(range(1, 251))
    assert calls(pd) == 3


def test_filters_and_one_filter_with_its_conditions(pipedrive_fake: RunningFake) -> None:
    pd = client(pipedrive_fake)
    people = pd.list_filters("people")
    deals = pd.list_filters("deals")
    assert {1, 2, 3} <= {f.id for f in people}
    assert all(f.type == "people" for f in people)
    assert 4 in {f.id for f in deals}
    related = pd.get_filter(3)
    assert related.conditions is not None
    assert "deal" in str(related.conditions)


def test_webhooks_are_created_listed_and_deleted(pipedrive_fake: RunningFake) -> None:
    pd = client(pipedrive_fake)
    made = pd.create_webhook(
        "https://sync.example/webhooks/pipedrive", "*", "person", "pbsync", "hook", "pw-123"
    )
    assert made.version == "2.0"
    listed = pd.list_webhooks()
    assert [w.id for w in listed] == [made.id]
    assert listed[0].http_auth_user == "hook"
    pd.delete_webhook(made.id)
    assert pd.list_webhooks() == []


def test_a_wrong_token_raises_at_once_without_retrying(pipedrive_fake: RunningFake) -> None:
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "the-right-one"})
    pd = client(pipedrive_fake, token="a-wrong-one")
    with pytest.raises(ApiAuthError) as caught:
        pd.list_filters("people")
    assert caught.value.status == 401
    assert "a-wrong-one" not in str(caught.value)
    assert calls(pd, "/v1/filters") == 1


def test_a_429_with_a_reset_header_waits_at_least_the_reset(pipedrive_fake: RunningFake) -> None:
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"burst_limit": 2})
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    pd = client(pipedrive_fake, sleep=sleep, policy=ClientPolicy(max_attempts=3))
    started = time.monotonic()
    for _ in range(3):
        pd.list_filters("people")
    elapsed = time.monotonic() - started
    limited = [w for w in waits if w >= 0.5]  # pacing waits are milliseconds
    assert len(limited) == 1
    assert limited[0] >= 1.0
    assert elapsed >= limited[0]
    figures = pd.http.usage.figures["pipedrive"]  # type: ignore[attr-defined]
    assert figures.limit == 2


def test_a_spent_daily_budget_raises_at_once(pipedrive_fake: RunningFake) -> None:
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"daily_token_budget": 25})
    pd = client(pipedrive_fake)
    pd.list_filters("people")  # 20 of the 25 tokens
    with pytest.raises(ApiBudgetExhausted) as caught:
        pd.list_filters("deals")
    assert caught.value.status == 429
    assert calls(pd, "/v1/filters") == 2
    figures = pd.http.usage.figures["pipedrive"]  # type: ignore[attr-defined]
    assert figures.daily_limit == 25


def test_5xx_then_success(pipedrive_fake: RunningFake) -> None:
    faults = {"faults": [{"kind": "500", "path": "/api/v2/persons", "count": 2}]}
    pipedrive_fake.control("PUT", "/_sandbox/faults", json=faults)
    pd = client(pipedrive_fake)
    assert len(pd.persons_by_ids([1, 2])) == 2
    assert calls(pd) == 3


def test_a_timeout_then_success(pipedrive_fake: RunningFake) -> None:
    faults = {"faults": [{"kind": "timeout", "path": "/v1/filters", "count": 1}], "hang_seconds": 2}
    pipedrive_fake.control("PUT", "/_sandbox/faults", json=faults)
    pd = client(pipedrive_fake)
    assert pd.list_filters("people")
    assert calls(pd, "/v1/filters") == 2


def test_a_dropped_connection_then_success(pipedrive_fake: RunningFake) -> None:
    faults = {"faults": [{"kind": "drop", "path": "/v1/webhooks", "count": 1}]}
    pipedrive_fake.control("PUT", "/_sandbox/faults", json=faults)
    pd = client(pipedrive_fake)
    assert pd.list_webhooks() == []
    assert calls(pd, "/v1/webhooks") == 2


def test_attempts_exhausted_raise_the_typed_error(pipedrive_fake: RunningFake) -> None:
    faults = {"faults": [{"kind": "500", "path": "/v1/filters", "probability": 1.0}]}
    pipedrive_fake.control("PUT", "/_sandbox/faults", json=faults)
    pd = client(pipedrive_fake)
    with pytest.raises(ApiUnavailable) as caught:
        pd.list_filters("deals")
    assert caught.value.attempts == FAST.max_attempts
    assert caught.value.status == 500
    assert calls(pd, "/v1/filters") == FAST.max_attempts


def test_person_emails_are_cleaned_with_the_primary_first() -> None:
    person = person_from_json(
        {
            "id": 3,
            "name": "Ann Lee",
            "emails": [
                {"value": "Other@Example.com", "primary": False},
                {"value": "  Ann@Example.COM ", "primary": True},
                {"value": "", "primary": False},
            ],
        }
    )
    assert person == Person(3, "Ann Lee", "", "", ("ann@example.com", "other@example.com"), None)
    assert person.primary_email == "ann@example.com"
    assert LIST_PERSONS.cost == 10


def test_iter_persons_lists_the_persons_changed_since_a_moment(
    pipedrive_fake: RunningFake,
) -> None:
    pd = client(pipedrive_fake)
    since = datetime.now(UTC) - timedelta(seconds=5, microseconds=300)
    pipedrive_fake.control("PATCH", "/_sandbox/persons/7", json={"last_name": "Renamed"})
    pipedrive_fake.control("PATCH", "/_sandbox/persons/9", json={"first_name": "Also"})
    pages = list(pd.iter_persons(since))
    changed = {p.id: p for page in pages for p in page}
    assert sorted(changed) == [7, 9]
    assert changed[7].last_name == "Renamed"
    assert calls(pd) == 1
    everyone = [len(page) for page in pd.iter_persons(datetime(2000, 1, 1, tzinfo=UTC))]
    assert everyone == [500, 500, 200]
    assert calls(pd) == 4
    assert list(pd.iter_persons(datetime.now(UTC) + timedelta(days=1))) == []
