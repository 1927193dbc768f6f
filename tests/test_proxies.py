"""Client address and scheme: proxies are believed only when trusted."""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers

from service.proxies import client_address, request_scheme

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def headers(**values: str) -> Headers:
    return Headers({k.replace("_", "-"): v for k, v in values.items()})


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    """X-Forwarded-For from anyone else is ignored."""
    assert client_address("203.0.113.5", headers(x_forwarded_for="1.1.1.1"), ()) == "203.0.113.5"
    assert client_address("203.0.113.5", headers(x_forwarded_for="1.1.1.1"), TRUSTED) == (
        "203.0.113.5"
    )


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    """A client can write anything on the left; the proxies append on the right."""
    chain = headers(x_forwarded_for="6.6.6.6, 198.51.100.7, 10.0.0.2")
    assert client_address("10.0.0.1", chain, TRUSTED) == "198.51.100.7"


def test_a_chain_of_only_trusted_hops_gives_the_leftmost() -> None:
    """All hops are ours: the first one is the best we know."""
    assert client_address("10.0.0.1", headers(x_forwarded_for="10.0.0.9"), TRUSTED) == "10.0.0.9"
    assert client_address("10.0.0.1", headers(), TRUSTED) == "10.0.0.1"


def test_garbage_hops_are_not_trusted() -> None:
    """A malformed entry counts as a client address, never as a proxy."""
    assert client_address("::1", headers(x_forwarded_for="not-an-ip"), TRUSTED) == "not-an-ip"


def test_scheme_from_a_trusted_proxy_only() -> None:
    """X-Forwarded-Proto decides Secure cookies only when a trusted proxy sent it."""
    forwarded = headers(x_forwarded_proto="https")
    assert request_scheme("http", "10.0.0.1", forwarded, TRUSTED) == "https"
    assert request_scheme("http", "203.0.113.5", forwarded, TRUSTED) == "http"
    assert request_scheme("http", "10.0.0.1", headers(x_forwarded_proto="gopher"), TRUSTED) == (
        "http"
    )
    assert request_scheme("https", None, headers(), ()) == "https"
