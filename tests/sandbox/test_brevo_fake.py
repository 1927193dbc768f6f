"""The fake Brevo over real HTTP: Brevo's formats, limits and quirks, and its control API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sandbox.brevo import BrevoFake, BrevoFakeConfig, create_app
from sandbox.brevo.model import Process
from sandbox.contract import ContractLedger
from sandbox.recording import Exchange
from sandbox.server import ThreadedServer

NOTHING_APPLIED = "Contact already in list and/or does not exist"


class Fake:
    """A fake served on loopback: ``api`` talks to ``/v3`` with a key, ``control`` to
    ``/_sandbox``."""

    def __init__(self, config: BrevoFakeConfig, sink: Any = None) -> None:
        self.app = create_app(config, sink)
        self.server = ThreadedServer(self.app).start()
        self.api = httpx.Client(base_url=self.server.url + "/v3", headers={"api-key": "k"})
        self.raw = httpx.Client(base_url=self.server.url)

    @property
    def state(self) -> BrevoFake:
        fake: BrevoFake = self.app.state.fake
        return fake

    def control(self, method: str, path: str, json: Any = None) -> Any:
        response = self.raw.request(method, "/_sandbox" + path, json=json)
        assert response.status_code < 400, response.text
        return response.json()

    def new_list(self, name: str = "Sync target") -> int:
        response = self.api.post("/contacts/lists", json={"name": name, "folderId": 1})
        assert response.status_code == 201, response.text
        list_id: int = response.json()["id"]
        return list_id

    def members(self, list_id: int) -> list[str]:
        emails: list[str] = self.control("GET", f"/lists/{list_id}/emails")["emails"]
        return emails

    def wait_for(self, process_id: int, timeout: float = 5.0) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.api.get(f"/processes/{process_id}").json()["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == "completed":
                return seen
            time.sleep(0.02)
        raise AssertionError(f"process {process_id} still {seen}")

    def import_rows(self, list_id: int, rows: list[dict[str, Any]], **options: Any) -> int:
        body = {"jsonBody": rows, "listIds": [list_id], "disableNotification": True, **options}
        response = self.api.post("/contacts/import", json=body)
        assert response.status_code == 202, response.text
        process_id: int = response.json()["processId"]
        self.wait_for(process_id)
        return process_id

    def close(self) -> None:
        self.api.close()
        self.raw.close()
        self.server.stop()


def emails(count: int, domain: str = "example.org") -> list[str]:
    return [f"person{i}@{domain}" for i in range(count)]


DEFAULTS: dict[str, Any] = {
    "token": None,
    "contacts_rate": 0,
    "processes_per_hour": 0,
    "time_scale": 1.0,
    "import_seconds": 0.05,
    "all_failed_400": True,
}


@pytest.fixture(scope="module")
def module_ledger() -> ContractLedger:
    """This module's own contract check: its requests are often wrong on purpose, which
    the session's report of client traffic should not count."""
    return ContractLedger()


@pytest.fixture(scope="module")
def served(module_ledger: ContractLedger) -> Iterator[Fake]:
    running = Fake(BrevoFakeConfig(**DEFAULTS), sink=module_ledger)
    yield running
    running.close()


@pytest.fixture
def fake(served: Fake, module_ledger: ContractLedger) -> Iterator[Fake]:
    """The module's fake, with fresh data, default settings, no faults and no drift.

    Its answers are validated against the specs like every fake's; the requests here are
    sometimes wrong on purpose, the answers never may be.
    """
    served.control("POST", "/reset", {})
    served.control("PUT", "/settings", DEFAULTS)
    served.control("PUT", "/faults", {"faults": [], "latency": []})
    served.control("PUT", "/drift", {"enabled": False})
    module_ledger.take_violations()
    yield served
    answers = [v for v in module_ledger.take_violations() if v.where == "response"]
    assert not answers, "\n".join(map(str, answers))


# Auth and error format.


def test_a_missing_or_wrong_key_gets_brevos_401(fake: Fake) -> None:
    fake.control("PUT", "/settings", {"token": "right-key"})
    for headers in ({}, {"api-key": "wrong"}, {"api-key": ""}):
        response = fake.raw.get("/v3/contacts/lists", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"code": "unauthorized", "message": "Key not found"}
    assert fake.raw.get("/v3/contacts/lists", headers={"api-key": "right-key"}).status_code == 200
    assert fake.raw.get("/_sandbox/settings").json()["token"] == "right-key"


def test_unknown_routes_answer_in_each_apis_format(fake: Fake) -> None:
    assert fake.api.get("/nothing/here").json()["code"] == "document_not_found"
    assert fake.api.patch("/contacts/lists/1").json()["code"] == "method_not_allowed"
    unknown = fake.raw.get("/_sandbox/nothing")
    assert unknown.status_code == 404 and "error" in unknown.json()


# Folders and lists.


def test_folders_page_at_most_50_and_hold_their_lists(fake: Fake) -> None:
    over = fake.api.get("/contacts/folders", params={"limit": 51})
    assert (over.status_code, over.json()["code"]) == (400, "out_of_range")
    created = fake.api.post("/contacts/folders", json={"name": "Pipedrive"})
    assert created.status_code == 201
    folder_id = created.json()["id"]
    page = fake.api.get("/contacts/folders", params={"limit": 50, "sort": "asc"}).json()
    assert [f["id"] for f in page["folders"]] == [1, 2, folder_id] and page["count"] == 3
    fake.api.post("/contacts/lists", json={"name": "In it", "folderId": folder_id})
    lists = fake.api.get(f"/contacts/folders/{folder_id}/lists").json()
    assert [x["name"] for x in lists["lists"]] == ["In it"]
    assert fake.api.get("/contacts/folders/999").status_code == 404


def test_creating_a_list_needs_a_name_and_an_existing_folder(fake: Fake) -> None:
    for body in ({"name": "No folder"}, {"folderId": 1}):
        response = fake.api.post("/contacts/lists", json=body)
        assert (response.status_code, response.json()["code"]) == (400, "missing_parameter")
    unknown = fake.api.post("/contacts/lists", json={"name": "X", "folderId": 999})
    assert unknown.status_code == 404
    assert unknown.json() == {"code": "document_not_found", "message": "Folder ID does not exist"}
    list_id = fake.new_list("Customers (Pipedrive #2)")
    body = fake.api.get(f"/contacts/lists/{list_id}").json()
    assert (body["name"], body["folderId"], body["uniqueSubscribers"]) == (
        "Customers (Pipedrive #2)",
        1,
        0,
    )
    assert fake.api.get("/contacts/lists").status_code == 200


def test_a_list_is_renamed_or_moved_one_field_at_a_time_and_deleted(fake: Fake) -> None:
    list_id = fake.new_list()
    assert fake.api.put(f"/contacts/lists/{list_id}", json={"name": "Renamed"}).status_code == 204
    assert fake.api.put(f"/contacts/lists/{list_id}", json={"folderId": 2}).status_code == 204
    both = fake.api.put(f"/contacts/lists/{list_id}", json={"name": "A", "folderId": 1})
    assert both.status_code == 400
    body = fake.api.get(f"/contacts/lists/{list_id}").json()
    assert (body["name"], body["folderId"]) == ("Renamed", 2)
    assert fake.api.delete(f"/contacts/lists/{list_id}").status_code == 204
    gone = fake.api.get(f"/contacts/lists/{list_id}")
    assert gone.status_code == 404
    assert gone.json() == {"code": "document_not_found", "message": "List ID not found"}


# Membership.


def test_add_takes_exactly_one_kind_of_1_to_150_identifiers(fake: Fake) -> None:
    list_id = fake.new_list()
    url = f"/contacts/lists/{list_id}/contacts/add"
    too_many = fake.api.post(url, json={"emails": emails(151)})
    assert (too_many.status_code, too_many.json()["code"]) == (400, "out_of_range")
    bodies: list[dict[str, Any]] = [{}, {"emails": []}, {"emails": ["a@x.org"], "ids": [1]}]
    for body in [*bodies, {"ids": ["1"]}, {"ids": [True]}, {"emails": "a@x.org"}]:
        assert fake.api.post(url, json=body).status_code == 400, body
    assert fake.api.post(url, json={"all": True}).status_code == 400
    assert fake.api.post("/contacts/lists/999/contacts/add", json={"ids": [1]}).status_code == 404


def test_400_emails_go_in_with_3_calls_and_failures_are_listed(fake: Fake) -> None:
    source = fake.new_list("Source")
    addresses = emails(400)
    fake.import_rows(source, [{"email": e, "attributes": {}} for e in addresses])
    target = fake.new_list("Target")
    succeeded: list[str] = []
    failed: list[str] = []
    batches = [addresses[:150], addresses[150:300], addresses[300:] + ["ghost@example.org"]]
    for batch in batches:
        response = fake.api.post(f"/contacts/lists/{target}/contacts/add", json={"emails": batch})
        assert response.status_code == 201
        body = response.json()
        succeeded += body["contacts"]["success"]
        failed += body["contacts"]["failure"]
    assert sorted(succeeded) == sorted(addresses) and failed == ["ghost@example.org"]
    assert fake.members(target) == sorted(addresses)
    usage = fake.control("GET", "/usage")["calls"]
    assert usage["POST /contacts/lists/{listId}/contacts/add"] == {"201": 3}


def test_unknown_and_already_present_contacts_fail_per_identifier(fake: Fake) -> None:
    list_id = fake.new_list()
    fake.api.post("/contacts", json={"email": "known@example.org", "listIds": [list_id]})
    fresh = fake.api.post("/contacts", json={"email": "Fresh@Example.org", "ext_id": "pd-7"})
    fresh_id = fresh.json()["id"]
    url = f"/contacts/lists/{list_id}/contacts"
    added = fake.api.post(
        f"{url}/add", json={"emails": ["known@example.org", "FRESH@example.org", "no@x.org"]}
    ).json()["contacts"]
    assert added == {"success": ["FRESH@example.org"], "failure": ["known@example.org", "no@x.org"]}
    removed = fake.api.post(f"{url}/remove", json={"ids": [fresh_id, 99_999]}).json()
    assert removed == {"contacts": {"success": [fresh_id], "failure": [99_999]}}
    by_ext = fake.api.post(f"{url}/add", json={"extIds": ["pd-7", "pd-8"]}).json()
    assert by_ext == {"contacts": {"success": ["pd-7"], "failure": ["pd-8"]}}


def test_nothing_applicable_is_a_400_unless_switched_off(fake: Fake) -> None:
    list_id = fake.new_list()
    fake.api.post("/contacts", json={"email": "in@example.org", "listIds": [list_id]})
    url = f"/contacts/lists/{list_id}/contacts"
    for path, body in (
        ("add", {"emails": ["in@example.org"]}),
        ("add", {"emails": ["in@example.org", "nobody@example.org"]}),
        ("remove", {"emails": ["nobody@example.org"]}),
    ):
        response = fake.api.post(f"{url}/{path}", json=body)
        assert response.status_code == 400
        assert response.json() == {"code": "invalid_parameter", "message": NOTHING_APPLIED}
    fake.control("PUT", "/settings", {"all_failed_400": False})
    response = fake.api.post(f"{url}/add", json={"emails": ["in@example.org"]})
    assert response.status_code == 201
    assert response.json() == {"contacts": {"success": [], "failure": ["in@example.org"]}}


def test_remove_all_empties_the_list_in_a_process(fake: Fake) -> None:
    list_id = fake.new_list()
    fake.import_rows(list_id, [{"email": e} for e in emails(5)])
    response = fake.api.post(f"/contacts/lists/{list_id}/contacts/remove", json={"all": True})
    assert response.status_code == 201
    contacts = response.json()["contacts"]
    assert contacts["total"] == 5
    fake.wait_for(contacts["processId"])
    assert fake.members(list_id) == []
    assert fake.control("GET", "/contacts?email=person0@example.org")["listIds"] == []


# List contacts.


def test_list_contacts_page_up_to_500_by_creation(fake: Fake) -> None:
    list_id = fake.new_list()
    addresses = emails(620, "paged.org")
    fake.import_rows(list_id, [{"email": e} for e in addresses])
    url = f"/contacts/lists/{list_id}/contacts"
    over = fake.api.get(url, params={"limit": 501})
    assert over.status_code == 400
    assert over.json() == {"code": "out_of_range", "message": "Limit exceeds max value"}
    first = fake.api.get(url, params={"limit": 500, "sort": "asc"}).json()
    second = fake.api.get(url, params={"limit": 500, "offset": 500, "sort": "asc"}).json()
    assert (len(first["contacts"]), len(second["contacts"]), first["count"]) == (500, 120, 620)
    assert [c["email"] for c in first["contacts"] + second["contacts"]] == addresses
    newest = fake.api.get(url).json()
    assert len(newest["contacts"]) == 50 and newest["contacts"][0]["email"] == addresses[-1]
    assert fake.api.get("/contacts/lists/999/contacts").status_code == 404
    bad = fake.api.get(url, params={"modifiedSince": "yesterday"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_parameter")


# Contacts.


def test_create_contact_is_201_then_duplicate_or_204_with_update_enabled(fake: Fake) -> None:
    list_id = fake.new_list()
    body = {"email": "Ann@Example.org", "attributes": {"FIRSTNAME": "Ann", "NOT_DEFINED": "x"}}
    created = fake.api.post("/contacts", json=body)
    assert created.status_code == 201 and isinstance(created.json()["id"], int)
    again = fake.api.post("/contacts", json=body)
    assert again.status_code == 400
    assert again.json()["code"] == "duplicate_parameter"
    assert again.json()["message"] == "Contact already exist"
    update = {"email": "ann@example.org", "attributes": {"LASTNAME": "Lee"}, "listIds": [list_id]}
    updated = fake.api.post("/contacts", json={**update, "updateEnabled": True})
    assert (updated.status_code, updated.content) == (204, b"")
    contact = fake.api.get("/contacts/ANN@example.org").json()
    assert contact["attributes"] == {"FIRSTNAME": "Ann", "LASTNAME": "Lee"}
    assert contact["listIds"] == [list_id] and contact["email"] == "ann@example.org"
    assert fake.api.get(f"/contacts/{contact['id']}").json()["email"] == "ann@example.org"
    missing = fake.api.post("/contacts", json={"attributes": {"FIRSTNAME": "Nobody"}})
    assert (missing.status_code, missing.json()["code"]) == (400, "missing_parameter")


def test_an_email_changes_through_the_email_attribute_unless_taken(fake: Fake) -> None:
    list_id = fake.new_list()
    fake.api.post("/contacts", json={"email": "old@example.org", "listIds": [list_id]})
    fake.api.post("/contacts", json={"email": "taken@example.org"})
    clash = fake.api.put(
        "/contacts/old@example.org",
        params={"identifierType": "email_id"},
        json={"attributes": {"EMAIL": "TAKEN@example.org"}},
    )
    assert clash.status_code == 400
    assert clash.json()["code"] == "duplicate_parameter"
    assert clash.json()["metadata"] == {"duplicate_identifiers": ["email"]}
    renamed = fake.api.put(
        "/contacts/old@example.org", json={"attributes": {"EMAIL": "new@example.org"}}
    )
    assert renamed.status_code == 204
    gone = fake.api.get("/contacts/old@example.org")
    assert gone.status_code == 404
    assert gone.json() == {"code": "document_not_found", "message": "Contact does not exist"}
    assert fake.members(list_id) == ["new@example.org"]
    bad = fake.api.put("/contacts/new@example.org", json={"attributes": {"EMAIL": "nope"}})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_parameter")
    wrong_type = fake.api.get("/contacts/new@example.org", params={"identifierType": "x"})
    assert wrong_type.status_code == 400


def test_put_joins_and_leaves_lists(fake: Fake) -> None:
    one, two = fake.new_list("One"), fake.new_list("Two")
    fake.api.post("/contacts", json={"email": "a@example.org", "listIds": [one]})
    moved = fake.api.put("/contacts/a@example.org", json={"listIds": [two], "unlinkListIds": [one]})
    assert moved.status_code == 204
    assert (fake.members(one), fake.members(two)) == ([], ["a@example.org"])
    listed = fake.api.get("/contacts", params={"listIds": two, "sort": "asc"}).json()
    assert [c["email"] for c in listed["contacts"]] == ["a@example.org"]
    assert fake.api.get("/contacts", params={"limit": 1001}).status_code == 400
    assert fake.api.delete("/contacts/a@example.org").status_code == 204
    assert fake.api.get("/contacts/a@example.org").status_code == 404


def test_blocklisted_contacts_stay_blocklisted(fake: Fake) -> None:
    list_id = fake.new_list()
    fake.control("POST", "/contacts", {"email": "blocked@example.org", "emailBlacklisted": True})
    fake.import_rows(list_id, [{"email": "blocked@example.org", "attributes": {"FIRSTNAME": "B"}}])
    fake.api.post("/contacts", json={"email": "blocked@example.org", "updateEnabled": True})
    fake.api.put(
        "/contacts/blocked@example.org",
        json={"attributes": {"LASTNAME": "Q"}, "emailBlacklisted": False},
    )
    other = fake.new_list("Other")
    added = fake.api.post(
        f"/contacts/lists/{other}/contacts/add", json={"emails": ["blocked@example.org"]}
    )
    assert added.json()["contacts"]["success"] == ["blocked@example.org"]
    contact = fake.control("GET", "/contacts?email=blocked@example.org")
    assert contact["emailBlacklisted"] is True
    assert contact["attributes"] == {"FIRSTNAME": "B", "LASTNAME": "Q"}
    assert contact["listIds"] == [list_id, other]
    # Brevo documents that changing a blocklisted contact's address resubscribes it.
    fake.api.put("/contacts/blocked@example.org", json={"attributes": {"EMAIL": "b2@x.org"}})
    assert fake.control("GET", "/contacts?email=b2@x.org")["emailBlacklisted"] is False


def test_attributes_are_listed(fake: Fake) -> None:
    body = fake.api.get("/contacts/attributes").json()
    assert {"FIRSTNAME", "LASTNAME", "EMAIL"} <= {a["name"] for a in body["attributes"]}


def test_the_control_api_removes_and_defines_attributes(fake: Fake) -> None:
    fake.control("POST", "/contacts", {"email": "lea@example.org", "attributes": {"LASTNAME": "L"}})
    left = fake.control("DELETE", "/attributes/lastname")["attributes"]
    assert "LASTNAME" not in left and "FIRSTNAME" in left
    names = {a["name"] for a in fake.api.get("/contacts/attributes").json()["attributes"]}
    assert "LASTNAME" not in names
    assert "LASTNAME" not in fake.control("GET", "/contacts?email=lea@example.org")["attributes"]
    # An undefined attribute is ignored by writes, as Brevo does.
    body = {"email": "new@example.org", "attributes": {"FIRSTNAME": "N", "LASTNAME": "M"}}
    assert fake.api.post("/contacts", json=body).status_code == 201
    assert fake.control("GET", "/contacts?email=new@example.org")["attributes"] == {
        "FIRSTNAME": "N"
    }
    assert (
        fake.control("PUT", "/attributes/LASTNAME", {"type": "text"})["attributes"]["LASTNAME"]
        == "text"
    )
    assert fake.raw.delete("/_sandbox/attributes/EMAIL").status_code == 400
    assert fake.raw.delete("/_sandbox/attributes/NOPE").status_code == 404
    assert fake.raw.put("/_sandbox/attributes/X", json={"type": "blob"}).status_code == 400
    fake.control("DELETE", "/attributes/COMPANY")
    fake.control("POST", "/reset", {})
    names = {a["name"] for a in fake.api.get("/contacts/attributes").json()["attributes"]}
    assert {"LASTNAME", "COMPANY"} <= names


# Imports and processes.


def test_an_import_is_queued_then_completed_and_rejected_rows_are_absent(fake: Fake) -> None:
    fake.control("PUT", "/settings", {"import_seconds": 0.6})
    fake.control("PUT", "/import-rejects", {"emails": ["Rejected@example.org"]})
    list_id = fake.new_list()
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    time.sleep(0.01)
    good = emails(5)
    rows = [{"email": e, "attributes": {"FIRSTNAME": "Ann", "UNKNOWN": 1}} for e in good]
    rows += [{"email": "rejected@example.org"}, {"email": "not-an-email"}, {"attributes": {}}]
    response = fake.api.post(
        "/contacts/import", json={"jsonBody": rows, "listIds": [list_id], "emailBlacklist": False}
    )
    assert response.status_code == 202
    process_id = response.json()["processId"]
    seen = fake.wait_for(process_id)
    # A slow machine may miss "queued" (the first quarter); the order never changes.
    assert seen in (["queued", "in_process", "completed"], ["in_process", "completed"])
    process = fake.api.get(f"/processes/{process_id}").json()
    assert process == {"id": process_id, "status": "completed", "name": "IMPORTUSER"}
    assert fake.members(list_id) == sorted(good)
    since = fake.api.get(
        f"/contacts/lists/{list_id}/contacts", params={"modifiedSince": started, "limit": 500}
    ).json()
    assert sorted(c["email"] for c in since["contacts"]) == sorted(good)
    assert {c["attributes"]["FIRSTNAME"] for c in since["contacts"]} == {"Ann"}
    later = {"modifiedSince": "2999-01-01T00:00:00.000Z"}
    assert fake.api.get(f"/contacts/lists/{list_id}/contacts", params=later).json()["count"] == 0
    listed = fake.api.get("/processes", params={"limit": 50}).json()
    assert process_id in [p["id"] for p in listed["processes"]]


def test_an_import_takes_a_csv_file_body_and_checks_its_request(fake: Fake) -> None:
    list_id = fake.new_list()
    csv_body = "EMAIL;FIRSTNAME;LASTNAME\ncsv1@example.org;Cy;Sv\ncsv2@example.org;;\n"
    response = fake.api.post("/contacts/import", json={"fileBody": csv_body, "listIds": [list_id]})
    fake.wait_for(response.json()["processId"])
    assert fake.members(list_id) == ["csv1@example.org", "csv2@example.org"]
    assert fake.control("GET", "/contacts?email=csv1@example.org")["attributes"] == {
        "FIRSTNAME": "Cy",
        "LASTNAME": "Sv",
    }
    for body in (
        {"jsonBody": [{"email": "a@b.org"}]},
        {"listIds": [list_id]},
        {"jsonBody": [], "fileBody": "EMAIL\n", "listIds": [list_id]},
        {"jsonBody": [{"email": "a@b.org"}], "listIds": [999]},
    ):
        assert fake.api.post("/contacts/import", json=body).status_code == 400, body
    assert fake.api.get("/processes/999").status_code == 404


def test_processes_allow_n_calls_per_scaled_hour(fake: Fake) -> None:
    fake.control("PUT", "/settings", {"processes_per_hour": 3, "time_scale": 7200})
    answers = [fake.api.get("/processes") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-sib-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[3].headers["x-sib-ratelimit-limit"] == "3"
    assert set(answers[3].json()) == {"code", "message"}
    window = fake.control("GET", "/usage")["processes_window"]
    assert (window["limit"], window["used"], window["window_seconds"]) == (3, 3, 0.5)
    # The contacts bucket is separate.
    assert fake.api.get("/contacts/lists").status_code == 200
    time.sleep(0.55)
    assert fake.api.get("/processes").status_code == 200


# Rate limit of /contacts and its headers.


def test_contacts_rate_is_enforced_and_every_answer_has_the_headers(fake: Fake) -> None:
    fake.control("PUT", "/settings", {"contacts_rate": 3})
    answers = [
        fake.api.get("/contacts/lists"),
        fake.api.get("/contacts/lists/999"),
        fake.api.post("/contacts/lists", json={}),
        fake.api.get("/contacts/lists"),
    ]
    assert [a.status_code for a in answers] == [200, 404, 400, 429]
    for answer in answers:
        assert answer.headers["x-sib-ratelimit-limit"] == "3"
        assert int(answer.headers["x-sib-ratelimit-reset"]) >= 1
    assert [a.headers["x-sib-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert fake.control("GET", "/usage")["calls"]["GET /contacts/lists"] == {"200": 1, "429": 1}


# Faults, drift, recording and the control API.


def test_faults_come_in_brevos_format_and_bad_plans_are_refused(fake: Fake) -> None:
    plan = {"faults": [{"kind": "429", "path": "/v3/contacts/lists", "count": 1}]}
    fake.control("PUT", "/faults", plan)
    faulted = fake.api.get("/contacts/lists")
    assert faulted.status_code == 429 and set(faulted.json()) == {"code", "message"}
    assert faulted.headers["x-sib-ratelimit-remaining"] == "0"
    assert fake.api.get("/contacts/lists").status_code == 200
    assert fake.control("GET", "/faults")["injected"] == {"429": 1}
    bad = fake.raw.put("/_sandbox/faults", json={"faults": [{"kind": "boom"}]})
    assert bad.status_code == 400 and "kind" in bad.json()["error"]


def test_drift_breaks_the_list_shape_until_switched_off(
    fake: Fake, module_ledger: ContractLedger
) -> None:
    fake.control("PUT", "/drift", {"enabled": True})
    drifted = fake.api.get("/contacts/lists/1").json()
    assert "folderId" not in drifted and drifted["folder_id"] == 1
    assert isinstance(drifted["totalSubscribers"], str)
    caught = " | ".join(v.message for v in module_ledger.take_violations())
    assert "'folderId' is a required property" in caught
    assert "folder_id: undeclared key" in caught
    assert "is not of type 'integer'" in caught
    assert fake.control("PUT", "/drift", {"enabled": False}) == {"enabled": False}
    assert fake.api.get("/contacts/lists/1").json()["folderId"] == 1


def test_api_exchanges_are_recorded_and_control_calls_are_not() -> None:
    exchanges: list[Exchange] = []
    served = Fake(BrevoFakeConfig(contacts_rate=0), sink=exchanges.append)
    try:
        served.api.get("/contacts/lists")
        served.control("GET", "/usage")
    finally:
        served.close()
    assert [(e.method, e.path, e.status) for e in exchanges] == [("GET", "/v3/contacts/lists", 200)]
    assert exchanges[0].response_headers["x-sib-ratelimit-limit"] == "1000000"


def test_the_control_api_hand_adds_blocks_resets_and_refuses_bad_input(fake: Fake) -> None:
    added = fake.raw.post(
        "/_sandbox/contacts",
        json={"email": "Hand@Example.org", "listIds": [1], "attributes": {"FIRSTNAME": "H"}},
    )
    assert added.status_code == 201 and added.json()["email"] == "hand@example.org"
    assert "hand@example.org" in fake.members(1)
    blocked = fake.control("PUT", "/contacts/hand@example.org/blocklist", {"blocked": True})
    assert blocked["emailBlacklisted"] is True
    for method, path, body in (
        ("PUT", "/settings", {"contacts_rate": -1}),
        ("PUT", "/settings", {"colour": "blue"}),
        ("PUT", "/drift", {"enabled": "yes"}),
        ("PUT", "/import-rejects", {"emails": "a@b.org"}),
        ("POST", "/contacts", {"email": "not-an-email"}),
        ("GET", "/contacts", None),
    ):
        response = fake.raw.request(method, "/_sandbox" + path, json=body)
        assert response.status_code == 400 and "error" in response.json(), path
    assert fake.raw.get("/_sandbox/lists/999/emails").status_code == 404
    assert fake.raw.get("/_sandbox/contacts", params={"email": "no@x.org"}).status_code == 404
    seeded = fake.members(1)
    fake.control("POST", "/reset", {})
    assert "hand@example.org" not in fake.members(1)
    assert fake.members(1) == [e for e in seeded if e != "hand@example.org"]
    assert fake.control("GET", "/usage")["calls"] == {}
    fake.control("POST", "/reset", {"seed": 2})
    assert fake.members(1) != seeded


def test_a_process_is_queued_for_its_first_quarter_then_in_process_until_due() -> None:
    process = Process(1, "IMPORTUSER", created_ms=1000, due_ms=2000)
    assert [process.status(t) for t in (1000, 1249, 1250, 1999, 2000)] == [
        "queued",
        "queued",
        "in_process",
        "in_process",
        "completed",
    ]


def test_the_seed_has_blocklisted_and_hand_added_contacts(fake: Fake) -> None:
    store = fake.state.store
    assert len(store.contacts) == 300
    assert any(c.email_blacklisted for c in store.contacts.values())
    assert all(store.lists[i].members for i in (1, 2, 3))
    again = BrevoFake(BrevoFakeConfig()).store
    assert [c.email for c in again.contacts.values()] == [c.email for c in store.contacts.values()]
