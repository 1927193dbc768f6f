"""What every endpoint of one app shares: settings, clock and the admin password."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from service.clock import Clock
from service.config import Settings
from service.passwords import AdminPassword


@dataclass(frozen=True)
class WebContext:
    """The shared state of one web app."""

    settings: Settings
    clock: Clock
    password: AdminPassword


def web_context(request: Request) -> WebContext:
    """The ``WebContext`` of the app serving ``request``."""
    context = request.app.state.context
    assert isinstance(context, WebContext)
    return context
