"""Who is really asking: the client address and scheme, believing proxies only when trusted."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers

from service.config import IPNetwork


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str | None, headers: Headers, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer, or from ``X-Forwarded-For`` when the peer is a trusted proxy.

    The header is read right to left, skipping trusted proxies, because a client can put
    anything on its left end.
    """
    address = peer or "unknown"
    if not trusted or not _is_trusted(address, trusted):
        return address
    hops = [h.strip() for h in ",".join(headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
        address = hop
    return address


def request_scheme(
    scope_scheme: str, peer: str | None, headers: Headers, trusted: Sequence[IPNetwork]
) -> str:
    """``https`` or ``http``: the connection's, or ``X-Forwarded-Proto`` from a trusted proxy."""
    forwarded = headers.get("x-forwarded-proto")
    if forwarded and peer and trusted and _is_trusted(peer, trusted):
        first = forwarded.split(",")[0].strip().lower()
        if first in ("http", "https"):
            return first
    return "https" if scope_scheme in ("https", "wss") else "http"
