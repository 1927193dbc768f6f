"""CSRF defence for cookie-authenticated writes: the request must come from our own origin."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default_port = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default_port
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def is_same_origin(headers: Headers, public_url: str | None, scheme: str) -> bool:
    """Tell whether a write came from the service's own origin.

    Our origin is ``PUBLIC_URL`` when set, and the Host the request reached. A browser's
    ``Sec-Fetch-Site`` other than ``same-origin`` fails; otherwise ``Origin`` (or, when a
    browser sent none, ``Referer``) must parse to one of our origins. A request with
    neither is refused.
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    claimed = headers.get("origin")
    if claimed is None or claimed == "null":
        claimed = headers.get("referer")
    if not claimed:
        return False
    origin = _origin_of(claimed)
    if origin is None:
        return False
    ours = set()
    if public_url:
        ours.add(_origin_of(public_url))
    host = headers.get("host")
    if host:
        ours.add(_origin_of(f"{scheme}://{host}"))
    return origin in ours
