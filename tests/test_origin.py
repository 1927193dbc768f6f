"""The same-origin check for cookie-authenticated writes."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from service.origin import is_same_origin


def check(public_url: str | None = None, scheme: str = "http", **values: str) -> bool:
    headers = Headers({k.replace("_", "-"): v for k, v in values.items()})
    return is_same_origin(headers, public_url, scheme)


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("http://svc.local:8000", True),
        ("http://SVC.local:8000", True),
        ("https://svc.local:8000", False),
        ("http://svc.local", False),
        ("http://svc.local:8000.evil.example", False),
        ("http://evil.example", False),
        ("null", False),
        ("", False),
        ("javascript:alert(1)", False),
        ("http://svc.local:99999", False),
    ],
)
def test_origin_must_match_the_host_reached(origin: str, expected: bool) -> None:
    """Scheme, host and port all count; malformed origins fail closed."""
    assert check(host="svc.local:8000", origin=origin) is expected


def test_default_ports_are_equivalent() -> None:
    """https://x and https://x:443 are one origin."""
    assert check(
        "https://sync.example.com",
        "https",
        host="internal:8000",
        origin="https://sync.example.com:443",
    )


def test_referer_is_the_fallback_when_origin_is_absent() -> None:
    """Only its origin part matters."""
    assert check(host="svc.local", referer="http://svc.local/admin?x=1")
    assert not check(host="svc.local", referer="http://evil.example/svc.local")


def test_fetch_metadata_refuses_cross_site_even_with_a_good_origin() -> None:
    """Sec-Fetch-Site other than same-origin or none fails."""
    assert check(host="svc.local", origin="http://svc.local", sec_fetch_site="same-origin")
    assert check(host="svc.local", origin="http://svc.local", sec_fetch_site="none")
    assert not check(host="svc.local", origin="http://svc.local", sec_fetch_site="cross-site")


def test_nothing_claimed_is_refused() -> None:
    """No Origin and no Referer: refused."""
    assert not check(host="svc.local")
