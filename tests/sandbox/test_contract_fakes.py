"""The ordinary contract check at work: every client operation validated against the
specs through the fakes, drift in a fake caught, and webhook deliveries shaped like the
real examples."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.contract import ContractLedger, compare_shapes, load_example
from sandbox.server import ThreadedServer
from service.clients import brevo, pipedrive
from service.clients.brevo import BrevoClient, BrevoLimits, ContactRow
from service.clients.http import ClientPolicy
from service.clients.pipedrive import PipedriveClient
from service.clients.usage import MemoryUsage
from tests.conftest import wait_for
from tests.fakes import RunningFake

POLICY = ClientPolicy(max_attempts=2, backoff_base=0.01)


def pipedrive_client(fake: RunningFake) -> PipedriveClient:
    return PipedriveClient(
        fake.url, "token", usage=MemoryUsage(), policy=POLICY, requests_per_second=1000
    )


def brevo_client(fake: RunningFake) -> BrevoClient:
    limits = BrevoLimits(1000, 360_000, first_poll_seconds=0.05, max_poll_seconds=0.1)
    return BrevoClient(fake.url + "/v3", "key", usage=MemoryUsage(), policy=POLICY, limits=limits)


def test_every_client_operation_is_validated_against_the_spec(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake, contract_ledger: ContractLedger
) -> None:
    pd = pipedrive_client(pipedrive_fake)
    pd.list_filters("people")
    pd.get_filter(3)
    list(pd.iter_members("people", 2))
    list(pd.iter_members("deals", 4))
    pd.persons_by_ids([1, 2, 3])
    list(pd.iter_persons(datetime.now(UTC) - timedelta(days=1), page_size=100))
    hook = pd.create_webhook("https://sync.example/webhooks/pipedrive", "*", "person", "pbsync")
    pd.list_webhooks()
    pd.delete_webhook(hook.id)

    bv = brevo_client(brevo_fake)
    folder = bv.create_folder("Pipedrive")
    bv.list_folders()
    list_id = bv.create_list("Everyone (Pipedrive #1)", folder)
    bv.rename_list(list_id, "All (Pipedrive #1)")
    bv.get_list(list_id)
    bv.import_contacts(list_id, [ContactRow("ann@example.org", {"FIRSTNAME": "Ann"})])
    bv.upsert_contact("bob@example.org", {"LASTNAME": "Bo"})
    bv.add_to_list(list_id, ["bob@example.org"])
    bv.remove_from_list(list_id, ["bob@example.org"])
    bv.update_contact("ann@example.org", {"FIRSTNAME": "Anne"})
    bv.get_contact("ann@example.org")
    bv.list_attributes()

    coverage = contract_ledger.coverage()
    validator = contract_ledger.validator
    for operation in pipedrive.OPERATIONS + brevo.OPERATIONS:
        ref = validator.resolve_operation(operation.api, operation.method, operation.template)
        assert ref is not None, f"{operation.name} is not in the {operation.api} spec"
        assert coverage[ref].exchanges > 0, f"{operation.name} was never validated"


def test_the_spec_token_costs_are_the_clients(contract_ledger: ContractLedger) -> None:
    for operation in pipedrive.OPERATIONS:
        ref = contract_ledger.validator.resolve_operation(
            "pipedrive", operation.method, operation.template
        )
        assert ref is not None
        spec = contract_ledger.validator.api(ref.api).document
        cost = spec["paths"][ref.template][ref.method.lower()]["x-token-cost"]
        assert operation.cost == cost, operation.name


def test_drift_in_the_pipedrive_fake_is_caught(
    pipedrive_fake: RunningFake, contract_ledger: ContractLedger
) -> None:
    pipedrive_fake.control("PUT", "/_sandbox/drift", json={"enabled": True})
    pd = pipedrive_client(pipedrive_fake)
    pd.persons_by_ids([1])
    messages = [v.message for v in contract_ledger.take_violations()]
    assert any("email_addresses" in m for m in messages), messages
    assert any(
        "'1' is not of type 'integer'" in m or "not of type 'integer'" in m for m in messages
    ), messages


def test_drift_in_the_brevo_fake_is_caught(
    brevo_fake: RunningFake, contract_ledger: ContractLedger
) -> None:
    bv = brevo_client(brevo_fake)
    list_id = bv.create_list("Drift", bv.create_folder("Pipedrive"))
    brevo_fake.control("PUT", "/_sandbox/drift", json={"enabled": True})
    bv.get_list(list_id)  # the client copes; the contract check does not let it pass
    messages = [v.message for v in contract_ledger.take_violations()]
    assert any("folder_id" in m for m in messages), messages
    assert any("totalSubscribers" in m for m in messages), messages


class Receiver:
    """A webhook receiver on loopback that keeps what it was sent."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, Any]] = []
        self.status = 200
        app = Starlette(routes=[Route("/hook", self.receive, methods=["POST"])])
        self.server = ThreadedServer(app).start()

    async def receive(self, request: Request) -> JSONResponse:
        self.deliveries.append((request.headers.get("authorization", ""), await request.json()))
        return JSONResponse({}, status_code=self.status)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.stop()


def test_a_person_update_arrives_shaped_like_the_official_v2_example(
    pipedrive_fake: RunningFake, receiver: Receiver
) -> None:
    pd = pipedrive_client(pipedrive_fake)
    pd.create_webhook(receiver.server.url + "/hook", "*", "person", "pbsync", "hook", "s3cret")
    pipedrive_fake.control("PATCH", "/_sandbox/persons/5", json={"first_name": "Renamed"})
    wait_for(lambda: receiver.deliveries, timeout=10)
    authorization, body = receiver.deliveries[0]
    assert authorization == "Basic " + base64.b64encode(b"hook:s3cret").decode()
    example = load_example("v2_change_person")
    assert compare_shapes(body, example, open_paths={"data.custom_fields", "previous"}) == []
    assert body["meta"]["action"] == "change" and body["data"]["first_name"] == "Renamed"
    json.dumps(body)


def test_a_receiver_answering_500_gets_the_retries(
    pipedrive_fake: RunningFake, receiver: Receiver
) -> None:
    receiver.status = 500
    pd = pipedrive_client(pipedrive_fake)
    pd.create_webhook(receiver.server.url + "/hook", "*", "person", "pbsync")
    pipedrive_fake.control("PATCH", "/_sandbox/persons/6", json={"last_name": "Retried"})
    wait_for(lambda: len(receiver.deliveries) == 4, timeout=20)
    attempts = [body["meta"]["attempt"] for _, body in receiver.deliveries]
    assert attempts == [1, 2, 3, 4]
    assert len({body["meta"]["id"] for _, body in receiver.deliveries}) == 1
