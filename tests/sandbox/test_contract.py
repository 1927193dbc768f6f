"""Contract validation: the ERRATA overlay (each edit, nothing else, still valid OpenAPI),
the validator on crafted exchanges, the ledger's report, and webhook shape comparison.

The specs are loaded and compiled once per process (functools.cache in the module)."""

from __future__ import annotations

import copy
import datetime
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator

from sandbox.contract import (
    CORRECTIONS,
    OVERLAY,
    SPEC_NAMES,
    ContractLedger,
    ContractValidator,
    OperationRef,
    Violation,
    compare_shapes,
    example_names,
    load_example,
    load_raw_spec,
    load_spec,
    undeclared_keys,
)
from sandbox.contract.specs import SPEC_FILES, SPECS_DIR, escape, overlay_edits, resolve_pointer
from sandbox.recording import Exchange

PD_HEADERS = {"x-api-token": "pd-token", "content-type": "application/json"}
BREVO_HEADERS = {"api-key": "brevo-key", "content-type": "application/json"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="session")
def validator() -> ContractValidator:
    return ContractValidator()


@pytest.fixture(scope="session")
def raw_validator() -> ContractValidator:
    return ContractValidator(overlay=False)


def exchange(
    method: str,
    path: str,
    *,
    query: str = "",
    body: Any = None,
    status: int = 200,
    response: Any = None,
    headers: dict[str, str] | None = None,
    raw_response: bytes | None = None,
) -> Exchange:
    if headers is None:
        headers = BREVO_HEADERS if path.startswith("/v3/") else PD_HEADERS
    response_body = raw_response if raw_response is not None else b""
    if response is not None:
        response_body = json.dumps(response).encode()
    return Exchange(
        method=method,
        path=path,
        query=query,
        request_headers=dict(headers),
        request_body=b"" if body is None else json.dumps(body).encode(),
        status=status,
        response_headers=dict(JSON) if response_body else {},
        response_body=response_body,
    )


def messages(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in violations)


def person(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 7,
        "name": "Ada Lovelace",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "owner_id": 1,
        "org_id": 3,
        "add_time": "2026-01-02T03:04:05Z",
        "update_time": "2026-01-02T03:04:05Z",
        "emails": [{"value": "ada@example.com", "primary": True, "label": "work"}],
        "phones": [],
        "is_deleted": False,
        "visible_to": 3,
    }
    base.update(changes)
    return base


def deal(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 11,
        "title": "Deal",
        "owner_id": 1,
        "person_id": 7,
        "org_id": 3,
        "pipeline_id": 1,
        "stage_id": 2,
        "value": 100,
        "currency": "EUR",
        "status": "open",
    }
    base.update(changes)
    return base


def page(items: list[dict[str, Any]], cursor: str | None = "c2") -> dict[str, Any]:
    return {"success": True, "data": items, "additional_data": {"next_cursor": cursor}}


# --- the overlay ---------------------------------------------------------------------------


def errata_rows() -> set[tuple[str, str]]:
    rows = set()
    for line in (SPECS_DIR / "ERRATA.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0] not in ("spec", "---"):
            rows.add((cells[0], cells[1]))
    return rows


def test_every_errata_row_has_exactly_one_correction() -> None:
    corrections = [(c.spec_label, c.place) for c in CORRECTIONS]
    assert len(corrections) == len(set(corrections))
    assert set(corrections) == errata_rows()


def changed_pointers(raw: Any, patched: Any, pointer: str = "") -> set[str]:
    if type(raw) is not type(patched):
        return {pointer}
    if isinstance(raw, dict):
        found = set()
        for key in raw.keys() | patched.keys():
            child = f"{pointer}/{escape(key)}"
            if key not in raw or key not in patched:
                found.add(child)
            else:
                found |= changed_pointers(raw[key], patched[key], child)
        return found
    if isinstance(raw, list):
        if len(raw) != len(patched):
            return {pointer}
        return {
            p
            for i, (a, b) in enumerate(zip(raw, patched, strict=True))
            for p in changed_pointers(a, b, f"{pointer}/{i}")
        }
    return set() if raw == patched else {pointer}


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_overlay_changes_exactly_its_edits(name: Any) -> None:
    raw, patched = load_raw_spec(name), load_spec(name)
    edits = [edit for _, edit in overlay_edits(name, raw)]
    expected = {p for edit in edits for p in edit.changed_pointers()}
    # An edit inside a subtree that another edit moved shows as part of that move.
    expected = {p for p in expected if not any(p.startswith(f"{q}/") for q in expected)}
    assert changed_pointers(raw, patched) == expected
    if name == "pipedrive-v1":
        # Only the 401 answers that lack error_info (ERRATA), and each gains exactly it.
        assert len(edits) == 6
        assert {(e.op, e.key) for e in edits} == {("set", "error_info")}
    for edit in edits:
        if edit.op == "set":
            assert resolve_pointer(patched, edit.pointer)[edit.key] == edit.value


def test_overlay_edit_counts_and_targets() -> None:
    raw = load_raw_spec("brevo")
    counts = {c.place: len(c.edits(load_raw_spec(c.spec))) for c in OVERLAY if c.edits}
    assert counts["`additional_data.next_cursor` on list endpoints (`/persons`, `/deals`)"] == 2
    # deals: 5 responses x (person_id, org_id); persons: 4 responses x (last_name, org_id)
    assert counts["deal `person_id`, person `last_name`, `org_id`"] == 18
    assert (
        counts["request bodies of `POST /contacts/lists/{listId}/contacts/add` and `/remove`"] == 7
    )
    assert counts["`postContactInfo.contacts.success` / `failure`"] == 2
    assert counts["`postContactInfo.contacts.success` / `failure` string items"] == 2
    empty_204s = [
        (path, method)
        for path, item in raw["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and op.get("responses", {}).get("204", {}).get("content") == {}
    ]
    assert counts["204 responses"] == len(empty_204s) > 40
    patched = load_spec("brevo")
    # A 204 that declares a body other than `content: {}` is not this ERRATA row's business.
    tier = patched["paths"]["/loyalty/tier/programs/{pid}/tiers/{tid}"]["delete"]
    assert "content" in tier["responses"]["204"]
    assert "content" not in patched["paths"]["/contacts/lists/{listId}"]["put"]["responses"]["204"]
    assert "content" in raw["paths"]["/contacts/lists/{listId}"]["put"]["responses"]["204"]


def test_patched_pipedrive_v2_is_valid_openapi_30() -> None:
    errors = [e.message for e in OpenAPIV30SpecValidator(load_spec("pipedrive-v2")).iter_errors()]
    assert errors == []


def leaves(error: Any) -> list[Any]:
    if not error.context:
        return [error]
    return [leaf for sub in error.context for leaf in leaves(sub)]


def test_patched_brevo_is_valid_openapi_30_but_for_its_exponent_maxima() -> None:
    # Pre-existing and not the overlay's: `maximum: 1E+2` is a string to a YAML 1.1 loader
    # (its own ERRATA row). Every error must be explained by one of those.
    exponent = re.compile(r"^'[0-9]E\+[0-9]' is not of type 'number'$")
    errors = list(OpenAPIV30SpecValidator(load_spec("brevo")).iter_errors())
    assert errors
    for error in errors:
        assert any(exponent.match(leaf.message) for leaf in leaves(error)), error.message[:300]


def test_spec_prefixes_match_the_servers() -> None:
    for name in SPEC_NAMES:
        url = load_raw_spec(name)["servers"][0]["url"]
        assert url.endswith(SPEC_FILES[name].prefix)


def test_brevo_yaml_keeps_dates_as_strings_and_response_codes_as_text() -> None:
    raw = load_raw_spec("brevo")
    pointer = "/components/schemas/getAccount/allOf/1/properties/plan/items/properties/startDate"
    assert resolve_pointer(raw, pointer)["example"] == "2016-12-31"

    def walk(node: Any) -> None:
        assert not isinstance(node, datetime.date)
        if isinstance(node, dict):
            assert all(isinstance(key, str) for key in node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(raw)
    assert "201" in raw["paths"]["/contacts/lists/{listId}/contacts/add"]["post"]["responses"]


def test_loaded_specs_are_cached() -> None:
    for name in SPEC_NAMES:
        assert load_spec(name) is load_spec(name)
        assert load_raw_spec(name) is load_spec(name, overlay=False)
    assert load_spec("pipedrive-v1") is not load_raw_spec("pipedrive-v1")
    # The raw documents keep their flaws: the overlay copies what it edits.
    raw = load_raw_spec("pipedrive-v2")["paths"]["/persons"]["get"]
    schema = raw["responses"]["200"]["content"]["application/json"]["schema"]
    assert (
        "nullable"
        not in schema["allOf"][1]["properties"]["additional_data"]["properties"]["next_cursor"]
    )


# Each overlay edit, shown by the validator with and without it.


@pytest.mark.parametrize("path", ["/api/v2/persons", "/api/v2/deals"])
def test_next_cursor_null_accepted_only_with_overlay(
    validator: ContractValidator, raw_validator: ContractValidator, path: str
) -> None:
    item = person() if path.endswith("persons") else deal()
    last_page = exchange("GET", path, query="limit=100", response=page([item], cursor=None))
    assert validator.validate(last_page) == []
    assert "next_cursor" in messages(raw_validator.validate(last_page))


def test_deal_and_person_links_nullable_only_with_overlay(
    validator: ContractValidator, raw_validator: ContractValidator
) -> None:
    deals = exchange("GET", "/api/v2/deals", response=page([deal(person_id=None, org_id=None)]))
    one_person = exchange(
        "GET",
        "/api/v2/persons/7",
        response={"success": True, "data": person(last_name=None, org_id=None)},
    )
    for case, fields in ((deals, ("person_id", "org_id")), (one_person, ("last_name", "org_id"))):
        assert validator.validate(case) == []
        found = messages(raw_validator.validate(case))
        assert all(f"data{'[0]' if case is deals else ''}.{f}" in found for f in fields), found
    # Nothing else became nullable.
    owner = exchange("GET", "/api/v2/deals", response=page([deal(owner_id=None)]))
    assert "data[0].owner_id: None is not of type 'integer'" in messages(validator.validate(owner))


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("add", {"emails": ["a@example.com", "b@example.com"]}),
        ("add", {"ids": [1, 2]}),
        ("add", {"extIds": ["x1"]}),
        ("remove", {"emails": ["a@example.com"]}),
        ("remove", {"all": True}),
    ],
)
def test_list_membership_bodies_valid_only_with_overlay(
    validator: ContractValidator, raw_validator: ContractValidator, action: str, body: Any
) -> None:
    call = exchange(
        "POST",
        f"/v3/contacts/lists/5/contacts/{action}",
        body=body,
        status=201,
        response={"contacts": {"success": [1], "failure": [2]}},
    )
    assert validator.validate(call) == []
    assert "more than one oneOf branch" in messages(raw_validator.validate(call))


def test_list_membership_body_needs_one_key(validator: ContractValidator) -> None:
    call = exchange(
        "POST",
        "/v3/contacts/lists/5/contacts/add",
        body={},
        status=400,
        response={"code": "invalid_parameter", "message": "no contacts"},
    )
    assert "matches no oneOf branch" in messages(validator.validate(call))


def test_contact_info_with_an_empty_array_only_with_overlay(
    validator: ContractValidator, raw_validator: ContractValidator
) -> None:
    call = exchange(
        "POST",
        "/v3/contacts/lists/5/contacts/add",
        body={"emails": ["a@example.com"]},
        status=201,
        response={"contacts": {"success": [], "failure": ["a@example.com"]}},
    )
    assert validator.validate(call) == []
    assert "contacts.success: matches more than one oneOf branch" in messages(
        raw_validator.validate(call)
    )


def test_contact_info_with_ext_ids_only_with_overlay(
    validator: ContractValidator, raw_validator: ContractValidator
) -> None:
    call = exchange(
        "POST",
        "/v3/contacts/lists/5/contacts/add",
        body={"extIds": ["pd-7", "pd-8"]},
        status=201,
        response={"contacts": {"success": ["pd-7"], "failure": ["pd-8"]}},
    )
    assert validator.validate(call) == []
    assert "is not a 'email'" in messages(raw_validator.validate(call))


def test_brevo_204_without_body_only_with_overlay(
    validator: ContractValidator, raw_validator: ContractValidator
) -> None:
    call = exchange("PUT", "/v3/contacts/lists/5", body={"name": "Sync"}, status=204)
    assert validator.validate(call) == []
    assert raw_validator.validate(call) != []
    with_body = exchange(
        "PUT", "/v3/contacts/lists/5", body={"name": "Sync"}, status=204, response={"x": 1}
    )
    assert "no body in the spec" in messages(validator.validate(with_body))


# --- the validator -------------------------------------------------------------------------


def test_v2_persons_page(validator: ContractValidator) -> None:
    call = exchange(
        "GET", "/api/v2/persons", query="limit=100&cursor=c1", response=page([person()])
    )
    assert validator.validate(call) == []
    assert validator.identify(call) == OperationRef("pipedrive-v2", "GET", "/persons", "getPersons")


def test_v2_persons_renamed_field_and_string_id_reported(validator: ContractValidator) -> None:
    renamed = person(id="7", email_addresses=person()["emails"])
    del renamed["emails"]
    violations = validator.validate(exchange("GET", "/api/v2/persons", response=page([renamed])))
    found = messages(violations)
    assert "data[0].email_addresses: undeclared key" in found
    assert "data[0].id: '7' is not of type 'integer'" in found
    assert {(v.operation_id, v.method, v.template, v.where) for v in violations} == {
        ("getPersons", "GET", "/persons", "response")
    }


def test_v1_filters(validator: ContractValidator) -> None:
    good: dict[str, Any] = {
        "success": True,
        "data": [
            {
                "id": 1,
                "name": "Newsletter",
                "type": "people",
                "active_flag": True,
                "visible_to": "3",
                "update_time": None,
            }
        ],
    }
    call = exchange("GET", "/v1/filters", query="type=people", response=good)
    assert validator.validate(call) == []
    assert validator.identify(call) == OperationRef("pipedrive-v1", "GET", "/filters", "getFilters")
    bad = copy.deepcopy(good)
    bad["data"][0]["type"] = "persons"
    bad["data"][0]["filter_name"] = bad["data"][0].pop("name")
    found = messages(
        validator.validate(exchange("GET", "/v1/filters", query="type=person", response=bad))
    )
    assert "query parameter 'type' value: 'person' is not one of" in found
    assert "data[0].type: 'persons' is not one of" in found
    assert "data[0].filter_name: undeclared key" in found


def test_brevo_add_to_list(validator: ContractValidator) -> None:
    emails = [f"c{i}@example.com" for i in range(150)]
    call = exchange(
        "POST",
        "/v3/contacts/lists/5/contacts/add",
        body={"emails": emails},
        status=201,
        response={"contacts": {"success": emails, "failure": []}},
    )
    assert validator.validate(call) == []
    too_many = exchange(
        "POST",
        "/v3/contacts/lists/5/contacts/add",
        body={"emails": [*emails, "one-more@example.com"]},
        status=400,
        response={"code": "invalid_parameter", "message": "at most 150"},
    )
    violations = validator.validate(too_many)
    assert [v.where for v in violations] == ["request"]
    assert "emails: 151 items, at most 150 allowed" in violations[0].message
    assert violations[0].operation_id == "addContactToList"


def test_unknown_paths_and_methods_reported(validator: ContractValidator) -> None:
    for call, text in [
        (exchange("GET", "/v1/personz", response={}), "no pipedrive-v1 operation has this path"),
        (exchange("GET", "/v9/anything", response={}), "no API serves this path prefix"),
        (exchange("PATCH", "/v1/filters", response={}), "PATCH is not an operation of /filters"),
    ]:
        violations = validator.validate(call)
        assert [v.message for v in violations] == [text] or text in violations[0].message
        assert violations[0].operation_id is None and violations[0].template == call.path
        assert validator.identify(call) is None


def test_request_policies(validator: ContractValidator) -> None:
    anonymous = exchange("GET", "/api/v2/persons", headers={}, response=page([person()]))
    assert "no credentials the spec accepts" in messages(validator.validate(anonymous))
    bearer = exchange(
        "GET", "/api/v2/persons", headers={"authorization": "Bearer t"}, response=page([person()])
    )
    assert validator.validate(bearer) == []
    query_token = exchange(
        "GET", "/api/v2/persons", query="api_token=t", headers={}, response=page([person()])
    )
    found = messages(validator.validate(query_token))
    assert "query parameter 'api_token' is not declared" in found
    body_on_get = exchange("GET", "/v1/filters", body={"x": 1}, response={"success": True})
    assert "has a body, but the operation takes none" in messages(validator.validate(body_on_get))
    search = exchange(
        "GET",
        "/api/v2/persons/search",
        query="limit=5",
        response={"success": True, "data": {"items": []}},
    )
    assert "Missing required query parameter: term" in messages(validator.validate(search))
    untyped = exchange(
        "PUT", "/v3/contacts/lists/5", body={"name": "x"}, status=204, headers={"api-key": "k"}
    )
    assert "has a body but no content-type" in messages(validator.validate(untyped))
    bad_path_param = exchange(
        "PUT", "/v3/contacts/lists/abc", body={"name": "x", "nme": 1}, status=204
    )
    found = messages(validator.validate(bad_path_param))
    assert "path parameter 'listId'" in found
    assert "body nme: undeclared key" in found


def test_statuses(validator: ContractValidator) -> None:
    limited = {
        "success": False,
        "error": "Rate limit exceeded",
        "errorCode": 429,
        "error_info": "Please check developers.pipedrive.com",
        "data": None,
        "additional_data": None,
    }
    assert validator.validate(exchange("GET", "/v1/filters", status=429, response=limited)) == []
    odd = exchange("GET", "/v1/filters", status=503, response={"message": "down"})
    found = messages(validator.validate(odd))
    assert "undeclared status 503 needs the generic error body" in found
    assert "message: undeclared key" in found and "'success' is a required property" in found
    brevo_limited = exchange(
        "GET",
        "/v3/contacts/lists/5",
        status=429,
        response={"code": "unauthorized", "message": "slow down"},
    )
    assert validator.validate(brevo_limited) == []
    brevo_odd = exchange(
        "GET",
        "/v3/contacts/lists/5",
        status=429,
        response={"code": "too_many", "message": "slow down"},
    )
    assert "'too_many' is not one of" in messages(validator.validate(brevo_odd))
    accepted = exchange("GET", "/v1/filters", status=202, response={"success": True})
    assert "status 202 is not declared (declared: 200)" in messages(validator.validate(accepted))
    not_json = exchange("GET", "/v1/filters", status=500, raw_response=b"oops")
    assert "needs the generic error body" in messages(validator.validate(not_json))


def test_resolve_operation_takes_both_client_conventions(validator: ContractValidator) -> None:
    expected = OperationRef("pipedrive-v1", "GET", "/filters/{id}", "getFilter")
    assert validator.resolve_operation("pipedrive", "GET", "/v1/filters/{id}") == expected
    assert validator.resolve_operation("pipedrive-v1", "GET", "/filters/{filter}") == expected
    add = validator.resolve_operation("brevo", "POST", "/contacts/lists/{listId}/contacts/add")
    assert add is not None and add.operation_id == "addContactToList"
    assert (
        validator.resolve_operation("brevo", "POST", "/v3/contacts/lists/{id}/contacts/add") == add
    )
    assert validator.resolve_operation("pipedrive", "GET", "/api/v2/nope") is None
    assert validator.resolve_operation("pipedrive", "GET", "/persons") is None


def test_undeclared_keys_walks_compositions() -> None:
    document: dict[str, Any] = {
        "components": {"schemas": {"Named": {"properties": {"name": {"type": "string"}}}}}
    }

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = resolve_pointer(document, node["$ref"][1:])
        return node

    schema = {
        "allOf": [
            {"$ref": "#/components/schemas/Named"},
            {
                "properties": {
                    "tags": {
                        "type": "array",
                        "items": {"oneOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]},
                    }
                }
            },
        ],
        "properties": {
            "free": {"type": "object", "additionalProperties": True, "properties": {"x": {}}},
            "bare": {"type": "object"},
            "map": {"additionalProperties": {"properties": {"v": {}}}},
        },
    }
    instance = {
        "name": "n",
        "tags": [{"a": 1}, {"b": 2, "c": 3}],
        "free": {"anything": 1},
        "bare": {"anything": 1},
        "map": {"k1": {"v": 1}, "k2": {"w": 1}},
        "extra": 1,
    }
    assert sorted(undeclared_keys(resolve, schema, instance)) == ["extra", "map.k2.w", "tags[1].c"]


# --- the ledger ----------------------------------------------------------------------------


def test_ledger_counts_takes_violations_and_reports(
    validator: ContractValidator, tmp_path: Path
) -> None:
    ledger = ContractLedger(validator, background=False)
    ledger(exchange("GET", "/api/v2/persons", response=page([person()])))
    ledger(
        exchange(
            "GET",
            "/api/v2/persons",
            status=429,
            response={"success": False, "error": "Too many requests"},
        )
    )
    ledger(exchange("GET", "/v1/filters/3", response={"success": True, "data": {"id": "3"}}))
    ledger(exchange("GET", "/v1/nowhere", response={}))
    ledger(exchange("GET", "/v1/users/me", response={"success": True, "data": {}}))
    taken = ledger.take_violations()
    assert len(taken) == 2 and ledger.take_violations() == []
    assert len(ledger.violations) == 2

    clients = [
        ("pipedrive", "GET", "/api/v2/persons"),
        ("pipedrive", "GET", "/v1/filters/{id}"),
        ("brevo", "POST", "/contacts/lists/{listId}/contacts/add"),
        ("pipedrive", "GET", "/v1/no-such-thing"),
    ]
    report = ledger.report(clients)
    assert "5 exchanges validated, 1 matching no operation, 2 violations." in report
    assert (
        "| `pipedrive GET /api/v2/persons` | `pipedrive-v2 GET /persons` (getPersons) | 2 "
        "| 200 ×1, 429 ×1 |" in report
    )
    assert (
        "| `pipedrive GET /v1/filters/{id}` | `pipedrive-v1 GET /filters/{id}` (getFilter) | 1 |"
        in report
    )
    assert "(addContactToList) | **0** | - |" in report
    assert "| `pipedrive GET /v1/no-such-thing` | **not in the spec** |" in report
    seen_unused = report.split("## Operations seen that no client declares")[1].split("##")[0]
    assert "`pipedrive-v1 GET /users/me` (getCurrentUser) | 1 | 200 ×1 |" in seen_unused
    assert "getPersons" not in seen_unused
    assert "data.id: '3' is not of type 'integer'" in report
    assert "no pipedrive-v1 operation has this path" in report

    target = tmp_path / "build" / "contract.md"
    ContractLedger(validator, clients).write_report(target)
    assert target.read_text(encoding="utf-8").startswith("# API contract report")
    assert "0 exchanges validated" in target.read_text(encoding="utf-8")


def test_absorbed_snapshots_report_as_one_ledger_would(validator: ContractValidator) -> None:
    """A run split over processes (pytest-xdist) ends in the same report: each worker's
    ledger is sent as a plain snapshot and added to the controller's."""
    exchanges = [
        exchange("GET", "/api/v2/persons", response=page([person()])),
        exchange("GET", "/api/v2/persons", status=429, response={"success": False}),
        exchange("GET", "/v1/filters/3", response={"success": True, "data": {"id": "3"}}),
        exchange("GET", "/v1/nowhere", response={}),
    ]
    whole = ContractLedger(validator, background=False)
    parts = [ContractLedger(validator, background=False) for _ in range(2)]
    for index, one in enumerate(exchanges):
        whole(one)
        parts[index % 2](one)
    merged = ContractLedger(validator, background=False)
    for part in parts:
        snapshot = part.snapshot()
        assert json.loads(json.dumps(snapshot)) == snapshot  # plain data, as execnet sends
        merged.absorb(snapshot)
    clients = [("pipedrive", "GET", "/api/v2/persons"), ("pipedrive", "GET", "/v1/filters/{id}")]
    # The same lines; only the violations' order follows the workers'.
    assert sorted(merged.report(clients).splitlines()) == sorted(whole.report(clients).splitlines())
    assert "4 exchanges validated, 1 matching no operation, 3 violations." in merged.report()
    assert merged.take_violations() == []  # absorbed violations were taken where they arose


def test_ledger_is_thread_safe_and_never_raises(validator: ContractValidator) -> None:
    ledger = ContractLedger(validator)
    call = exchange("GET", "/api/v2/persons", response=page([person()]))
    broken = exchange("GET", "/api/v2/persons", raw_response=b"{not json")
    broken.response_headers = dict(JSON)

    def feed() -> None:
        for _ in range(10):
            ledger(call)
            ledger(broken)

    threads = [threading.Thread(target=feed) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    coverage = ledger.coverage()
    ref = OperationRef("pipedrive-v2", "GET", "/persons", "getPersons")
    assert coverage[ref].exchanges == 120 and coverage[ref].statuses[200] == 120
    assert len(ledger.take_violations()) == coverage[ref].violations >= 60


def test_ledger_worker_ends_when_idle_and_restarts(
    validator: ContractValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sandbox.contract.ledger._IDLE_SECONDS", 0.05)
    ledger = ContractLedger(validator)
    call = exchange("GET", "/api/v2/persons", response=page([person()]))
    ledger(call)
    first = ledger._worker
    assert first is not None
    first.join(timeout=5)
    assert ledger._worker is None
    ledger(call)
    assert (
        ledger.coverage()[OperationRef("pipedrive-v2", "GET", "/persons", "getPersons")].exchanges
        == 2
    )


# --- webhook shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("name", example_names())
def test_each_example_matches_itself(name: str) -> None:
    example = load_example(name)
    assert compare_shapes(example, example) == []
    assert load_example(f"{name}.json") == example


def test_compare_shapes_reports_renames_and_type_changes() -> None:
    example = load_example("v2_change_person")
    actual = copy.deepcopy(example)
    actual["data"]["email_addresses"] = actual["data"].pop("emails")
    actual["meta"]["entity_id"] = int(actual["meta"]["entity_id"])
    assert compare_shapes(actual, example) == [
        "data: missing key 'emails'",
        "data: unexpected key 'email_addresses'",
        "meta.entity_id: expected string, got integer",
    ]


def test_compare_shapes_type_rules() -> None:
    example = {"id": 1, "value": 1.5, "flag": True, "note": None, "tags": [{"a": 1}], "empty": []}
    same = {"id": 2, "value": 3, "flag": False, "note": {"any": "thing"}, "tags": [], "empty": [1]}
    assert compare_shapes(same, example) == []
    wrong = {
        "id": 2.0,
        "value": "3",
        "flag": 1,
        "note": 1,
        "tags": [{"a": 1}, {"a": True}],
        "empty": [],
    }
    assert compare_shapes(wrong, example) == [
        "id: expected integer, got number",
        "value: expected number, got string",
        "flag: expected boolean, got integer",
        "tags[1].a: expected integer, got boolean",
    ]
    assert compare_shapes({**same, "id": None}, example) == ["id: expected integer, got null"]
    assert compare_shapes([1], {"a": 1}) == ["(root): expected object, got array"]


def test_compare_shapes_open_paths() -> None:
    example = {"data": {"custom_fields": {"abc": 1}}, "items": [{"x": {"k": 1}}]}
    actual = {"data": {"custom_fields": {"def": 2}}, "items": [{"x": {"other": 1}}]}
    assert len(compare_shapes(actual, example)) == 4
    assert compare_shapes(actual, example, open_paths={"data.custom_fields", "items[].x"}) == []


def test_load_example_names() -> None:
    assert load_example("v1_updated_deal")["meta"]["object"] == "deal"
    with pytest.raises(KeyError):
        load_example("v3_nothing")
