"""The Pipedrive and Brevo fakes as the tests use them: served over real HTTP on loopback,
once per test session, with every API exchange validated against the official specs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.server import ThreadedServer

# Settings a test may change through the control API; each fixture puts them back.
PIPEDRIVE_SETTINGS = (
    "ignore_updated_since",
    "daily_token_budget",
    "burst_limit",
    "retry_scale",
    "delivery_timeout",
    "token",
)
BREVO_SETTINGS = (
    "contacts_rate",
    "processes_per_hour",
    "time_scale",
    "import_seconds",
    "all_failed_400",
    "token",
)


@dataclass
class RunningFake:
    """A fake served in this process: its base URL, its app, and its control API."""

    name: str
    server: ThreadedServer
    app: Starlette
    defaults: dict[str, Any]
    # One kept-alive client for the control API: a new connection per call costs tens of
    # milliseconds, which would cap how fast a test can change the fake's data.
    _client: httpx.Client = field(
        default_factory=lambda: httpx.Client(timeout=10), repr=False, compare=False
    )

    @property
    def url(self) -> str:
        """Where the fake listens (Brevo's API is under ``/v3`` of it)."""
        return self.server.url

    def control(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """Call the control API; a 4xx or 5xx fails the test at once."""
        response = self._client.request(method, self.url + path, json=json)
        assert response.status_code < 400, f"{method} {path}: {response.text}"
        return response

    def reset(self) -> None:
        """Fresh seeded data, no faults, and the settings the fake started with."""
        self.control("POST", "/_sandbox/reset", json={})
        self.control("PUT", "/_sandbox/settings", json=self.defaults)
        self.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})
        self.control("PUT", "/_sandbox/drift", json={"enabled": False})


def start_fake(
    name: str, app: Starlette, config: Any, keys: tuple[str, ...]
) -> Iterator[RunningFake]:
    """Serve ``app`` until the session ends."""
    server = ThreadedServer(app).start()
    defaults = {key: getattr(config, key) for key in keys}
    fake = RunningFake(name, server, app, defaults)
    try:
        yield fake
    finally:
        fake._client.close()
        server.stop()


def fake_fixture(
    session_fixture: str,
) -> Callable[[pytest.FixtureRequest], Iterator[RunningFake]]:
    """A per-test fixture: the session's fake, reset before the test, its exchanges checked
    against the specs after it."""

    def fixture(request: pytest.FixtureRequest) -> Iterator[RunningFake]:
        fake: RunningFake = request.getfixturevalue(session_fixture)
        ledger = request.getfixturevalue("contract_ledger")
        fake.reset()
        ledger.take_violations()
        yield fake
        violations = ledger.take_violations()
        assert not violations, "\n".join(str(v) for v in violations)

    return fixture
