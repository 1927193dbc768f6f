"""Login throttling: ten failures from one address in ten minutes, decided before comparing."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from service import throttle
from service.app import create_app
from service.clock import ManualClock
from service.config import Settings
from service.passwords import AdminPassword
from tests.conftest import ADMIN_PASSWORD


def fail(client: TestClient, times: int, **headers: str) -> list[int]:
    return [
        client.post(
            "/api/session", json={"password": "wrong-password!"}, headers=headers
        ).status_code
        for _ in range(times)
    ]


def test_the_eleventh_attempt_is_429_with_retry_after(
    client: TestClient, clock: ManualClock
) -> None:
    """Ten failures answer 401; then even the right password gets 429 until the window moves."""
    assert fail(client, 10) == [401] * 10
    response = client.post("/api/session", json={"password": ADMIN_PASSWORD})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "600"
    assert response.json() == {"error": "too many failed logins; try again later"}
    clock.advance(599)
    retry = client.post("/api/session", json={"password": ADMIN_PASSWORD})
    assert retry.status_code == 429 and retry.headers["retry-after"] == "1"
    clock.advance(1)
    assert client.post("/api/session", json={"password": ADMIN_PASSWORD}).status_code == 201


def test_failures_spread_over_more_than_ten_minutes_do_not_throttle(
    client: TestClient, clock: ManualClock
) -> None:
    """Only failures within the window count."""
    for _ in range(20):
        assert fail(client, 1) == [401]
        clock.advance(61)


def test_throttling_is_decided_before_the_password_is_compared(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throttled client costs no password check at all."""
    fail(client, 10)
    calls: list[str] = []
    original = AdminPassword.verify

    def counting_verify(self: AdminPassword, candidate: str) -> bool:
        calls.append(candidate)
        return original(self, candidate)

    monkeypatch.setattr(AdminPassword, "verify", counting_verify)
    assert fail(client, 5) == [429] * 5
    assert calls == []


def test_a_success_clears_the_failures(client: TestClient) -> None:
    """The admin who mistypes nine times and then logs in starts afresh."""
    fail(client, 9)
    assert client.post("/api/session", json={"password": ADMIN_PASSWORD}).status_code == 201
    assert fail(client, 9) == [401] * 9


def test_throttling_is_per_address(settings: Settings, clock: ManualClock) -> None:
    """Another address is not locked out by the first one's failures."""
    app = create_app(settings, clock)
    with TestClient(app, client=("10.0.0.1", 1000)) as attacker:
        fail(attacker, 10)
        assert fail(attacker, 1) == [429]
    with TestClient(app, client=("10.0.0.2", 1000)) as admin:
        assert admin.post("/api/session", json={"password": ADMIN_PASSWORD}).status_code == 201


def test_forwarded_for_is_ignored_from_an_untrusted_peer(client: TestClient) -> None:
    """Otherwise an attacker could rotate X-Forwarded-For to escape the throttle."""
    for n in range(10):
        fail(client, 1, **{"X-Forwarded-For": f"192.0.2.{n}"})
    assert fail(client, 1, **{"X-Forwarded-For": "192.0.2.200"}) == [429]


def test_forwarded_for_is_believed_from_a_trusted_proxy(
    settings: Settings, clock: ManualClock
) -> None:
    """Behind a trusted proxy each real client is throttled on its own address."""
    import ipaddress

    proxied = Settings(
        admin_password=settings.admin_password,
        database_url=settings.database_url,
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    with TestClient(create_app(proxied, clock), client=("127.0.0.1", 5000)) as client:
        assert fail(client, 10, **{"X-Forwarded-For": "203.0.113.9"}) == [401] * 10
        assert fail(client, 1, **{"X-Forwarded-For": "203.0.113.9"}) == [429]
        # A spoofed left-most entry does not help: the proxy appended the real address.
        assert fail(client, 1, **{"X-Forwarded-For": "1.2.3.4, 203.0.113.9"}) == [429]
        assert fail(client, 1, **{"X-Forwarded-For": "203.0.113.10"}) == [401]


def test_old_failures_are_pruned(clean_db: object, clock: ManualClock) -> None:
    """The table does not grow without bound."""
    from service.db import LoginFailure, db_session

    for n in range(5):
        throttle.record_failure(f"10.0.0.{n}", clock.now())
    clock.advance(throttle.WINDOW_SECONDS + 1)
    throttle.record_failure("10.0.0.99", clock.now())

    @db_session
    def clients() -> list[str]:
        return [f.client for f in LoginFailure.select()]

    assert clients() == ["10.0.0.99"]
