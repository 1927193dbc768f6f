"""sandbox/faults.py: seeded draws, and injected faults as a client meets them: a 429 or
500 that ran nothing, a held answer to a request that is applied all the same, a dropped
connection that ran nothing. Served over real HTTP by a tiny app behind the exchange
recorder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from sandbox.faults import FaultKind, FaultMiddleware, FaultPlan, FaultPlanError
from sandbox.recording import Exchange, RecordingMiddleware
from sandbox.server import ThreadedServer


@dataclass
class Served:
    """A tiny API behind the fault plan and the recorder: what it applied and recorded."""

    url: str
    plan: FaultPlan
    applied: list[bytes] = field(default_factory=list)
    recorded: list[Exchange] = field(default_factory=list)


@pytest.fixture
def served() -> Iterator[Served]:
    plan = FaultPlan(seed=3)
    applied: list[bytes] = []
    recorded: list[Exchange] = []

    async def things(request: Request) -> Response:
        applied.append(await request.body())
        return JSONResponse({"ok": True}, status_code=201)

    def respond(kind: FaultKind, scope: Scope) -> Response:
        return JSONResponse({"error": kind}, status_code=int(kind))

    app = Starlette(
        routes=[Route("/things", things, methods=["POST"])],
        middleware=[
            Middleware(RecordingMiddleware, sink=recorded.append),
            Middleware(FaultMiddleware, plan=plan, respond=respond),
        ],
    )
    server = ThreadedServer(app).start()
    try:
        yield Served(server.url, plan, applied, recorded)
    finally:
        server.stop()


def test_a_seed_in_the_plan_starts_the_draws_afresh() -> None:
    plan = FaultPlan(seed=0)
    body = {"faults": [{"kind": "500", "probability": 0.5}], "seed": 11}
    plan.load_json(body)
    first = [plan.pick("GET", "/x") for _ in range(40)]
    plan.load_json({"faults": [{"kind": "500", "probability": 0.5}]})
    assert [plan.pick("GET", "/x") for _ in range(40)] != first  # no seed: draws go on
    plan.load_json(body)
    assert [plan.pick("GET", "/x") for _ in range(40)] == first
    assert {None, "500"} == set(first)
    for bad in ("7", 1.5, True):
        with pytest.raises(FaultPlanError, match="seed must be an integer"):
            plan.load_json({"seed": bad})


@pytest.mark.parametrize("kind", ["429", "500"])
def test_an_injected_error_runs_nothing(served: Served, kind: str) -> None:
    served.plan.load_json({"faults": [{"kind": kind, "count": 1}]})
    response = httpx.post(served.url + "/things", content=b'{"name": "x"}', timeout=5)
    assert response.status_code == int(kind)
    assert served.applied == []
    assert [e.status for e in served.recorded] == [int(kind)]


def test_a_held_request_is_applied_though_the_client_gave_up(served: Served) -> None:
    served.plan.load_json({"faults": [{"kind": "timeout", "count": 1}], "hang_seconds": 0.5})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(served.url + "/things", content=b'{"name": "late"}', timeout=0.2)
    deadline = time.monotonic() + 5
    while not served.applied and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served.applied == [b'{"name": "late"}']


def test_a_dropped_connection_is_not_applied(served: Served) -> None:
    served.plan.load_json({"faults": [{"kind": "drop", "count": 1}]})
    with pytest.raises(httpx.TransportError):
        httpx.post(served.url + "/things", content=b"{}", timeout=5)
    assert served.applied == []
    assert httpx.post(served.url + "/things", content=b"{}", timeout=5).status_code == 201
    assert served.applied == [b"{}"]
