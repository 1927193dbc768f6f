"""Data changes and the webhook bodies (v1 and v2) that announce them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.pipedrive.model import (
    ADMIN_USER_ID,
    COMPANY_ID,
    HOST,
    USERS,
    Webhook,
    iso_millis,
)

V1_ACTIONS = {"create": "added", "change": "updated", "delete": "deleted"}


@dataclass(frozen=True)
class ChangeEvent:
    """One change of one record, with its object in both webhook versions' shapes.

    ``action`` is the v2 action (create, change, delete); ``v1_action`` the v1 one (added,
    updated, deleted, merged). ``v2_previous`` holds only the changed fields on a change.
    """

    entity: str
    entity_id: int
    action: str
    v1_action: str
    at: datetime
    v2_data: dict[str, Any] | None
    v2_previous: dict[str, Any] | None
    v1_current: dict[str, Any] | None
    v1_previous: dict[str, Any] | None
    merged_to_id: int | None = None
    merged_from_id: int | None = None
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def webhook_matches(webhook: Webhook, event: ChangeEvent) -> bool:
    """Whether ``webhook`` subscribes to ``event`` (``*`` matches any object or action)."""
    action = event.action if webhook.version == "2.0" else event.v1_action
    return webhook.event_object in ("*", event.entity) and webhook.event_action in ("*", action)


def v2_body(event: ChangeEvent, webhook: Webhook, event_id: str, attempt: int) -> dict[str, Any]:
    """A webhooks v2 delivery: ``meta`` ids are strings, ``data`` ids integers.

    ``meta`` has exactly the keys of the official examples (the docs' skeleton also lists
    ``permitted_user_ids``, which the examples lack), plus ``merged_to_id`` or
    ``merged_from_id`` on the two deliveries of a merge."""
    meta: dict[str, Any] = {
        "action": event.action,
        "company_id": str(COMPANY_ID),
        "correlation_id": event.correlation_id,
        "entity_id": str(event.entity_id),
        "entity": event.entity,
        "id": event_id,
        "is_bulk_edit": False,
        "timestamp": iso_millis(event.at),
        "type": "general",
        "user_id": str(ADMIN_USER_ID),
        "version": "2.0",
        "webhook_id": str(webhook.id),
        "webhook_owner_id": str(webhook.user_id),
        "change_source": "api",
        "attempt": attempt,
        "host": HOST,
    }
    if event.merged_to_id is not None:
        meta["merged_to_id"] = str(event.merged_to_id)
    if event.merged_from_id is not None:
        meta["merged_from_id"] = str(event.merged_from_id)
    return {"data": event.v2_data, "previous": event.v2_previous, "meta": meta}


def v1_body(event: ChangeEvent, webhook: Webhook, attempt: int) -> dict[str, Any]:
    """A webhooks v1 delivery: ``retry`` counts from 0, ``event`` is e.g. ``updated.person``."""
    seconds = event.at.timestamp()
    meta = {
        "action": event.v1_action,
        "change_source": "api",
        "company_id": COMPANY_ID,
        "host": HOST,
        "id": event.entity_id,
        "is_bulk_update": False,
        "matches_filters": {"current": []},
        "object": event.entity,
        "permitted_user_ids": list(USERS),
        "pipedrive_service_name": False,
        "timestamp": int(seconds),
        "timestamp_micro": int(seconds * 1_000_000),
        "prepublish_timestamp": int(seconds * 1000),
        "trans_pending": False,
        "user_id": ADMIN_USER_ID,
        "v": 1,
        "webhook_id": str(webhook.id),
    }
    return {
        "v": 1,
        "matches_filters": {"current": []},
        "meta": meta,
        "current": event.v1_current,
        "previous": event.v1_previous,
        "retry": attempt - 1,
        "event": f"{event.v1_action}.{event.entity}",
    }
