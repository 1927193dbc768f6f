"""``create_app``: the fake Pipedrive as a Starlette app.

Middleware, outermost first: the exchange recorder (when a sink is given), the fault
injector (whose 429 and 500 answers are in Pipedrive's format, with rate-limit headers),
then the routes. The lifespan starts and stops the webhook dispatcher.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from sandbox.faults import CONTROL_PREFIX, ErrorResponder, FaultKind, FaultMiddleware
from sandbox.pipedrive.api import api_routes
from sandbox.pipedrive.config import PipedriveFakeConfig
from sandbox.pipedrive.control import control_routes
from sandbox.pipedrive.delivery import Dispatcher
from sandbox.pipedrive.errors import api_error, coded_error, control_error
from sandbox.pipedrive.limits import WINDOW_SECONDS
from sandbox.pipedrive.state import PipedriveState
from sandbox.recording import ExchangeSink, RecordingMiddleware


def _fault_responder(state: PipedriveState) -> ErrorResponder:
    def respond(kind: FaultKind, scope: Scope) -> Response:
        if kind != "429":
            return coded_error(500, "Internal server error")
        limit = state.config.burst_limit or 1_000_000
        reset = str(int(WINDOW_SECONDS))
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": reset,
            "x-daily-ratelimit-token-limit": str(state.budget.budget),
            "x-daily-ratelimit-token-remaining": str(state.budget.remaining()),
            "retry-after": reset,
        }
        return coded_error(429, "Request over limit", headers)

    return respond


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    message = "Not found" if status == 404 else "Method not allowed"
    if request.url.path.startswith(CONTROL_PREFIX):
        return control_error(status, message)
    return api_error(status, message)


def create_app(config: PipedriveFakeConfig, sink: ExchangeSink | None = None) -> Starlette:
    """The fake Pipedrive; ``app.state.fake`` is its ``PipedriveState``."""
    state = PipedriveState(config)
    dispatcher = Dispatcher(state)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.stop()

    middleware = [] if sink is None else [Middleware(RecordingMiddleware, sink=sink)]
    middleware.append(
        Middleware(FaultMiddleware, plan=state.faults, respond=_fault_responder(state))
    )
    app = Starlette(
        routes=[*api_routes(), *control_routes()],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.fake = state
    app.state.dispatcher = dispatcher
    return app
