"""What every endpoint of one app shares: settings, clock, the admin password, the queue,
the inbox writer and the webhook's failed-authentication limiter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from service.auth_failures import AuthFailureLimiter
from service.clock import Clock
from service.config import Settings
from service.inbox_writer import InboxWriter
from service.passwords import AdminPassword


@dataclass(frozen=True)
class WebContext:
    """The shared state of one web app."""

    settings: Settings
    clock: Clock
    password: AdminPassword
    # Puts a sync job's id on the worker queue; blocking, so call it from a thread.
    enqueue_job: Callable[[int], None]
    # Commits webhook deliveries to the inbox, several per synced commit.
    inbox_writer: InboxWriter
    # Failed webhook authentications per client address (429 after a flood).
    webhook_auth_failures: AuthFailureLimiter


def web_context(request: Request) -> WebContext:
    """The ``WebContext`` of the app serving ``request``."""
    context = request.app.state.context
    assert isinstance(context, WebContext)
    return context
