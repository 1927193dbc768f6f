"""The Brevo client against the Brevo fake, over real HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from service.clients.brevo import (
    BrevoClient,
    BrevoLimits,
    ContactRow,
    ImportStart,
    encode_rows,
    import_body,
    is_duplicate_identifier,
)
from service.clients.errors import ApiAuthError, ApiNotFound, ApiRequestError, ApiUnavailable
from service.clients.http import ClientPolicy
from service.clients.usage import MemoryUsage
from tests.fakes import RunningFake

FAST = ClientPolicy(connect_timeout=1.0, read_timeout=1.0, max_attempts=3, backoff_base=0.05)
QUICK = BrevoLimits(
    contacts_per_second=1000, other_per_hour=36_000, first_poll_seconds=0.2, max_poll_seconds=0.5
)


def client(fake: RunningFake, key: str = "bv-key", **kwargs: object) -> BrevoClient:
    options: dict[str, object] = {"usage": MemoryUsage(), "policy": FAST, "limits": QUICK}
    options.update(kwargs)
    return BrevoClient(fake.url + "/v3", key, **options)  # type: ignore[arg-type]


def calls(bv: BrevoClient, method: str, template: str) -> int:
    usage = bv.http.usage
    assert isinstance(usage, MemoryUsage)
    return usage.count("brevo", method, template)


def emails(count: int, domain: str = "example.org") -> list[str]:
    return [f"person{i}@{domain}" for i in range(count)]


def new_list(bv: BrevoClient, name: str = "Customers (Pipedrive #2)") -> int:
    folder = bv.create_folder("Pipedrive")
    return bv.create_list(name, folder)


def test_folders_lists_and_a_rename(brevo_fake: RunningFake) -> None:
    bv = client(brevo_fake)
    folder = bv.create_folder("Pipedrive")
    assert folder in {f.id for f in bv.list_folders()}
    list_id = bv.create_list("Everyone (Pipedrive #1)", folder)
    bv.rename_list(list_id, "All persons (Pipedrive #1)")
    got = bv.get_list(list_id)
    assert (got.name, got.folder_id) == ("All persons (Pipedrive #1)", folder)
    with pytest.raises(ApiNotFound):
        bv.get_list(987_654)


def test_adding_400_emails_makes_exactly_3_calls(brevo_fake: RunningFake) -> None:
    bv = client(brevo_fake)
    list_id = new_list(bv)
    addresses = emails(400)
    imported = bv.import_contacts(list_id, [ContactRow(e, {}) for e in addresses])
    assert sorted(imported.accepted) == sorted(addresses)
    other = bv.create_list("Other (Pipedrive #9)", bv.list_folders()[0].id)
    before = calls(bv, "POST", "/contacts/lists/{listId}/contacts/add")
    outcome = bv.add_to_list(other, addresses)
    assert calls(bv, "POST", "/contacts/lists/{listId}/contacts/add") - before == 3
    assert sorted(outcome.succeeded) == sorted(addresses)
    assert outcome.failed == []


def test_per_email_failures_are_surfaced(brevo_fake: RunningFake) -> None:
    bv = client(brevo_fake)
    list_id = new_list(bv)
    bv.upsert_contact("known@example.org", {}, [list_id])
    bv.upsert_contact("fresh@example.org", {})
    result = bv.add_to_list(list_id, ["known@example.org", "fresh@example.org", "nobody@x.org"])
    assert result.succeeded == ["fresh@example.org"]
    assert sorted(result.failed) == ["known@example.org", "nobody@x.org"]
    # Nothing applicable at all: Brevo's 400 becomes "all failed", not an error.
    again = bv.add_to_list(list_id, ["known@example.org"])
    assert (again.succeeded, again.failed) == ([], ["known@example.org"])
    removed = bv.remove_from_list(list_id, ["known@example.org", "nobody@x.org"])
    assert (removed.succeeded, removed.failed) == (["known@example.org"], ["nobody@x.org"])


def test_an_import_waits_for_its_process_and_reports_rejected_rows(
    brevo_fake: RunningFake,
) -> None:
    brevo_fake.control("PUT", "/_sandbox/import-rejects", json={"emails": ["bad1@example.org"]})
    brevo_fake.control("PUT", "/_sandbox/settings", json={"import_seconds": 0.5})
    bv = client(brevo_fake)
    list_id = new_list(bv)
    rows = [ContactRow(e, {"FIRSTNAME": "Ann"}) for e in emails(5)]
    rows += [ContactRow("bad1@example.org", {}), ContactRow("not-an-email", {})]
    result = bv.import_contacts(list_id, rows)
    assert result.status == "completed"
    assert sorted(result.accepted) == sorted(emails(5))
    assert sorted(result.rejected) == ["bad1@example.org", "not-an-email"]
    listed = brevo_fake.control("GET", f"/_sandbox/lists/{list_id}/emails").json()["emails"]
    assert listed == sorted(emails(5))


def test_import_polling_stays_under_the_processes_limit(brevo_fake: RunningFake) -> None:
    # The fake allows 5 process reads per 0.5 s window (100 an hour, time scaled by 720).
    brevo_fake.control(
        "PUT",
        "/_sandbox/settings",
        json={"processes_per_hour": 5, "time_scale": 7200, "import_seconds": 1.5},
    )
    limits = BrevoLimits(
        contacts_per_second=1000,
        other_per_hour=5 * 7200 * 0.8,
        other_burst=0,
        first_poll_seconds=0.01,
        max_poll_seconds=0.02,
    )
    bv = client(brevo_fake, limits=limits)
    list_id = new_list(bv)
    result = bv.import_contacts(list_id, [ContactRow("a@example.org", {})])
    assert result.accepted == ["a@example.org"]
    polls = calls(bv, "GET", "/processes/{processId}")
    assert polls >= 3
    usage = bv.http.usage
    assert isinstance(usage, MemoryUsage)
    assert not [k for k in usage.calls if k.status == 429]


def test_an_email_change_goes_through_the_email_attribute(brevo_fake: RunningFake) -> None:
    bv = client(brevo_fake)
    list_id = new_list(bv)
    assert bv.upsert_contact("old@example.org", {"FIRSTNAME": "Al"}, [list_id]) is not None
    assert bv.upsert_contact("old@example.org", {"LASTNAME": "Bo"}) is None  # updated: 204
    bv.update_contact("old@example.org", {"FIRSTNAME": "Alan"}, new_email="new@example.org")
    contacts = [c for page in bv.iter_list_contacts(list_id) for c in page]
    assert [(c.email, c.attributes.get("FIRSTNAME")) for c in contacts] == [
        ("new@example.org", "Alan")
    ]


def test_list_contacts_are_paged_500_at_a_time(brevo_fake: RunningFake) -> None:
    bv = client(brevo_fake)
    list_id = new_list(bv)
    addresses = emails(1100, "paged.org")
    bv.import_contacts(list_id, [ContactRow(e, {}) for e in addresses])
    before = calls(bv, "GET", "/contacts/lists/{listId}/contacts")
    pages = list(bv.iter_list_contacts(list_id))
    assert [len(p) for p in pages] == [500, 500, 100]
    assert calls(bv, "GET", "/contacts/lists/{listId}/contacts") - before == 3
    assert sorted(c.email for p in pages for c in p) == sorted(addresses)


def test_attributes_are_listed(brevo_fake: RunningFake) -> None:
    assert {"FIRSTNAME", "LASTNAME"} <= set(client(brevo_fake).list_attributes())


def test_a_wrong_key_raises_at_once(brevo_fake: RunningFake) -> None:
    brevo_fake.control("PUT", "/_sandbox/settings", json={"token": "right-key"})
    bv = client(brevo_fake, key="wrong-key")
    with pytest.raises(ApiAuthError) as caught:
        bv.list_folders()
    assert "wrong-key" not in str(caught.value)
    assert caught.value.code == "unauthorized"
    assert calls(bv, "GET", "/contacts/folders") == 1


def test_the_contacts_rate_is_respected_by_pacing(brevo_fake: RunningFake) -> None:
    brevo_fake.control("PUT", "/_sandbox/settings", json={"contacts_rate": 10})
    bv = client(brevo_fake, limits=BrevoLimits(contacts_per_second=8))
    started = time.monotonic()
    for _ in range(12):
        bv.list_folders()
    assert time.monotonic() - started >= 11 / 8 - 0.05
    usage = bv.http.usage
    assert isinstance(usage, MemoryUsage)
    assert not [k for k in usage.calls if k.status == 429]


def test_get_contact_shows_one_contact_or_none(brevo_fake: RunningFake) -> None:
    bv = client(brevo_fake)
    list_id = new_list(bv)
    bv.upsert_contact("Cleo@Example.org", {"FIRSTNAME": "Cleo"}, [list_id])
    found = bv.get_contact("cleo@example.org")
    assert found is not None
    assert (found.email, found.list_ids, found.attributes["FIRSTNAME"]) == (
        "cleo@example.org",
        (list_id,),
        "Cleo",
    )
    assert found.created_at is not None and found.created_at.endswith("Z")
    assert bv.get_contact("nobody@example.org") is None


def test_an_import_from_encoded_rows_is_read_back_on_brevos_clock(
    brevo_fake: RunningFake,
) -> None:
    bv = client(brevo_fake)
    list_id = new_list(bv)
    rows = [ContactRow(e, {"FIRSTNAME": "Ann"}) for e in emails(3, "json.org")]
    before = time.time()
    start = bv.start_import_json(list_id, encode_rows(rows))
    # The fake's Date header is its clock in whole seconds, refreshed by uvicorn once a
    # second, so up to about 2 s early; then minus the 2 s margin. Never late.
    assert before - 5 <= start.started_at <= time.time() - 2
    assert bv.wait_for_process(start.process_id) == "completed"
    read_back = [c.email for p in bv.iter_list_contacts(list_id, start.started_at) for c in p]
    assert sorted(read_back) == emails(3, "json.org")


def test_the_import_body_wraps_the_rows_without_parsing_them() -> None:
    rows = b'[{"email":"a@x.org","attributes":{"FIRSTNAME":"J\xc3\xb6rg"}}]'
    body = import_body(7, rows)
    assert body[1] is rows
    assert json.loads(b"".join(body)) == {
        "listIds": [7],
        "updateExistingContacts": True,
        "emptyContactsAttributes": False,
        "disableNotification": True,
        "jsonBody": [{"email": "a@x.org", "attributes": {"FIRSTNAME": "Jörg"}}],
    }
    with pytest.raises(ValueError):
        import_body(7, b'{"email": "a@x.org"}')


def test_without_a_date_header_the_import_start_is_our_clock_minus_the_margin() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, json={"processId": 41})

    bv = BrevoClient(
        "https://brevo.test/v3",
        "key",
        usage=MemoryUsage(),
        pool=httpx.Client(transport=httpx.MockTransport(handler)),
        limits=BrevoLimits(clock_margin_seconds=120),
        now=lambda: 5000.0,
    )
    assert bv.start_import_json(3, b"[]") == ImportStart(41, 4880.0)


def test_an_email_change_onto_a_taken_address_is_recognised(brevo_fake: RunningFake) -> None:
    bv = client(brevo_fake)
    bv.upsert_contact("first@example.org", {})
    bv.upsert_contact("second@example.org", {})
    with pytest.raises(ApiRequestError) as caught:
        bv.update_contact("first@example.org", new_email="second@example.org")
    assert is_duplicate_identifier(caught.value)
    assert caught.value.metadata == {"duplicate_identifiers": ["email"]}
    assert not is_duplicate_identifier(caught.value, "ext_id")
    with pytest.raises(ApiNotFound) as missing:
        bv.update_contact("nobody@example.org", {"FIRSTNAME": "X"})
    assert not is_duplicate_identifier(missing.value)


def test_a_duplicate_without_metadata_is_recognised_by_brevos_wording() -> None:
    op = "PUT /contacts/{identifier}"
    message = "Unable to update contact, email is already associated with another Contact"
    assert is_duplicate_identifier(
        ApiRequestError("brevo", op, message, 400, "duplicate_parameter")
    )
    assert not is_duplicate_identifier(
        ApiRequestError("brevo", op, "Invalid email address", 400, "invalid_parameter")
    )
    assert not is_duplicate_identifier(ValueError("email is already associated"))


def test_a_list_created_though_its_answer_was_lost_is_not_created_twice(
    brevo_fake: RunningFake,
) -> None:
    """Creating a list is not sent twice: a read timeout fails the call, though Brevo goes
    on to create the list (the fake holds the request, then runs it). The next call for
    the same list finds it by name instead of making a second one."""
    bv = client(brevo_fake)
    folder = bv.create_folder("Pipedrive")
    other = bv.create_list("Someone else's (Pipedrive #3)", folder)
    plan = {
        "faults": [{"kind": "timeout", "method": "POST", "path": "/v3/contacts/lists", "count": 1}],
        "hang_seconds": FAST.read_timeout + 0.3,
    }
    brevo_fake.control("PUT", "/_sandbox/faults", json=plan)
    name = "Customers (Pipedrive #3)"
    with pytest.raises(ApiUnavailable):
        bv.create_list(name, folder)
    time.sleep(0.6)  # the held request has run by now
    (created,) = named_lists(brevo_fake, name)

    assert bv.create_list(name, folder) == created
    assert named_lists(brevo_fake, name) == [created]
    assert calls(bv, "POST", "/contacts/lists") == 2  # both lists once, nothing resent
    assert bv.create_list("Someone else's (Pipedrive #3)", folder) == other


def named_lists(fake: RunningFake, name: str) -> list[int]:
    """The ids of the fake's lists called ``name``."""
    store = fake.app.state.fake.store
    with store.lock:
        return sorted(x.id for x in store.lists.values() if x.name == name)
