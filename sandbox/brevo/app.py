"""``create_app``: the fake Brevo as a Starlette app. The API is under ``/v3`` (a client's
base URL is ``http://host:port/v3``), the control API under ``/_sandbox``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from sandbox.brevo.api_contacts import CONTACT_ROUTES, IDENTIFIER_ROUTES
from sandbox.brevo.api_imports import IMPORT_ROUTES, PROCESS_ROUTES
from sandbox.brevo.api_lists import LIST_ROUTES
from sandbox.brevo.config import BrevoFakeConfig
from sandbox.brevo.control import CONTROL_ROUTES
from sandbox.brevo.errors import (
    BrevoError,
    ControlError,
    brevo_error_handler,
    control_error_handler,
    http_error_handler,
)
from sandbox.brevo.gate import ApiGate
from sandbox.brevo.state import BrevoFake
from sandbox.faults import FaultMiddleware
from sandbox.recording import ExchangeSink, RecordingMiddleware


def create_app(config: BrevoFakeConfig, sink: ExchangeSink | None = None) -> Starlette:
    """The fake, seeded from ``config``; ``sink`` receives every API exchange.

    Middleware, outermost first: recording (when ``sink`` is given), faults, then the
    gate (auth, rate limits, headers). ``app.state.fake`` is the ``BrevoFake``.
    """
    fake = BrevoFake(config)
    api_routes = [
        *LIST_ROUTES,
        *IMPORT_ROUTES,
        *CONTACT_ROUTES,
        *IDENTIFIER_ROUTES,
        *PROCESS_ROUTES,
    ]
    fake.api_routes = list(api_routes)
    middleware = [] if sink is None else [Middleware(RecordingMiddleware, sink=sink)]
    middleware += [
        Middleware(FaultMiddleware, plan=fake.plan, respond=fake.fault_response),
        Middleware(ApiGate, fake=fake),
    ]
    app = Starlette(
        routes=[*api_routes, *CONTROL_ROUTES],
        middleware=middleware,
        exception_handlers={
            BrevoError: brevo_error_handler,
            ControlError: control_error_handler,
            HTTPException: http_error_handler,
        },
    )
    app.state.fake = fake
    return app
