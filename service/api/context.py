"""What every endpoint of one app shares: settings, clock, the admin password and the queue."""

from __future__ import annotations

from collections.abc import Callable
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
    # Puts a sync job's id on the worker queue; blocking, so call it from a thread.
    enqueue_job: Callable[[int], None]
    # Hints the worker to drain the webhook inbox, after a delivery is committed; blocking.
    # None until the drain exists: the rows wait in the inbox meanwhile.
    enqueue_drain: Callable[[], None] | None = None


def web_context(request: Request) -> WebContext:
    """The ``WebContext`` of the app serving ``request``."""
    context = request.app.state.context
    assert isinstance(context, WebContext)
    return context
