"""``/v1/webhooks``: checking a new webhook the way the spec describes, and the answers."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from sandbox.pipedrive.model import ADMIN_USER_ID, USERS, Webhook

MAX_WEBHOOKS = 40
VERSIONS = ("1.0", "2.0")
ACTIONS = {
    "2.0": ("create", "change", "delete", "*"),
    "1.0": ("added", "updated", "deleted", "merged", "*"),
}
OBJECTS_V2 = (
    "activity",
    "deal",
    "lead",
    "note",
    "organization",
    "person",
    "pipeline",
    "product",
    "stage",
    "user",
    "*",
)
OBJECTS = {"2.0": OBJECTS_V2, "1.0": (*OBJECTS_V2, "activityType")}


def check_webhook(body: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The fields of a new webhook from a ``POST /v1/webhooks`` body, and the errors by
    field (empty when the body is valid)."""
    if not isinstance(body, dict):
        return {}, {"body": ["must be a JSON object"]}
    errors: dict[str, list[str]] = {}
    version = body.get("version", "2.0")
    if version not in VERSIONS:
        errors["version"] = [f"must be one of {', '.join(VERSIONS)}"]
        version = "2.0"
    url = body.get("subscription_url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        errors["subscription_url"] = ["invalid or non-reachable URL"]
    for key, allowed in (("event_action", ACTIONS[version]), ("event_object", OBJECTS[version])):
        if body.get(key) not in allowed:
            errors[key] = [f"must be one of {', '.join(allowed)}"]
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > 255:
        errors["name"] = ["required, a string of at most 255 characters"]
    user_id = body.get("user_id", ADMIN_USER_ID)
    if isinstance(user_id, bool) or user_id not in USERS:
        errors["user_id"] = ["must be the id of a user of this company"]
    for key in ("http_auth_user", "http_auth_password"):
        if body.get(key) is not None and not isinstance(body.get(key), str):
            errors[key] = ["must be a string or null"]
    fields = {
        "subscription_url": url,
        "event_action": body.get("event_action"),
        "event_object": body.get("event_object"),
        "name": name,
        "version": version,
        "user_id": user_id,
        "http_auth_user": body.get("http_auth_user") or None,
        "http_auth_password": body.get("http_auth_password") or None,
    }
    return fields, errors


def is_banned(webhook: Webhook, now: float | None = None) -> bool:
    """Whether the webhook is in a delivery ban (it lifts itself once the time is past)."""
    if webhook.banned_until is None:
        return False
    if (time.monotonic() if now is None else now) >= webhook.banned_until:
        webhook.banned_until = None
        webhook.first_attempt_failures = 0
        return False
    return True
