"""JSON shapes of the API's answers: API v2 persons and deals, v1 filters and webhooks,
as the official OpenAPI documents declare them.

Keys the spec types as non-nullable are left out rather than sent as null when the
record has no value (a deal not yet won has no ``won_time``), so answers validate
against the spec; ``org_id``, ``last_name`` and ``person_id`` are null when empty, as the
errata in ``specs/ERRATA.md`` allow.
"""

from __future__ import annotations

from typing import Any

from sandbox.pipedrive.fields import with_field_codes
from sandbox.pipedrive.model import (
    COMPANY_ID,
    Deal,
    Filter,
    Person,
    Webhook,
    iso_millis,
    json_number,
    v1_time,
    v2_time,
)

VISIBLE_TO = 3


def person_v2(person: Person) -> dict[str, Any]:
    """A person as ``GET /api/v2/persons`` gives it (contact sync fields left out)."""
    return {
        "id": person.id,
        "name": person.name,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "owner_id": person.owner_id,
        "org_id": person.org_id,
        "add_time": v2_time(person.add_time),
        "update_time": v2_time(person.update_time),
        "emails": [e.to_json() for e in person.emails],
        "phones": [p.to_json() for p in person.phones],
        "is_deleted": person.deleted,
        "visible_to": VISIBLE_TO,
        "label_ids": list(person.label_ids),
        "custom_fields": dict(person.custom),
    }


def deal_v2(deal: Deal) -> dict[str, Any]:
    """A deal as ``GET /api/v2/deals`` gives it."""
    closed = deal.won_time or deal.lost_time
    body: dict[str, Any] = {
        "id": deal.id,
        "title": deal.title,
        "owner_id": deal.owner_id,
        "person_id": deal.person_id,
        "org_id": deal.org_id,
        "pipeline_id": deal.pipeline_id,
        "stage_id": deal.stage_id,
        "value": json_number(deal.value),
        "currency": deal.currency,
        "add_time": v2_time(deal.add_time),
        "update_time": v2_time(deal.update_time),
        "stage_change_time": v2_time(deal.add_time),
        "is_deleted": deal.deleted,
        "is_archived": False,
        "status": deal.status,
        "probability": None,
        "lost_reason": deal.lost_reason,
        "visible_to": VISIBLE_TO,
        "close_time": v2_time(closed) if closed else None,
        "label_ids": list(deal.label_ids),
        "origin": "ManuallyCreated",
        "origin_id": None,
        "channel": None,
        "channel_id": None,
        "custom_fields": {},
    }
    if deal.won_time:
        body["won_time"] = v2_time(deal.won_time)
    if deal.lost_time:
        body["lost_time"] = v2_time(deal.lost_time)
    if deal.expected_close_date:
        body["expected_close_date"] = deal.expected_close_date
    return body


def filter_v1(
    filter_: Filter, conditions: bool = False, field_codes: bool = False
) -> dict[str, Any]:
    """A filter as ``GET /v1/filters`` lists it; with ``conditions`` as ``GET
    /v1/filters/{id}`` gives it."""
    body: dict[str, Any] = {
        "id": filter_.id,
        "name": filter_.name,
        "filter_code": None,
        "is_editable": True,
        "active_flag": filter_.active_flag,
        "type": filter_.type,
        "temporary_flag": filter_.temporary_flag,
        "user_id": filter_.user_id,
        "add_time": v1_time(filter_.add_time),
        "update_time": v1_time(filter_.update_time),
        "visible_to": filter_.visible_to,
        "last_used_time": None,
        "custom_view_id": filter_.custom_view_id,
    }
    if conditions:
        body["conditions"] = (
            with_field_codes(filter_.conditions) if field_codes else filter_.conditions
        )
    return body


def webhook_v1(webhook: Webhook, active: bool = True) -> dict[str, Any]:
    """A webhook as ``GET /v1/webhooks`` lists it."""
    last = webhook.last_delivery_time
    return {
        "id": webhook.id,
        "company_id": COMPANY_ID,
        "owner_id": webhook.user_id,
        "user_id": webhook.user_id,
        "event_action": webhook.event_action,
        "event_object": webhook.event_object,
        "subscription_url": webhook.subscription_url,
        "version": webhook.version,
        "is_active": 1 if active else 0,
        "add_time": iso_millis(webhook.add_time),
        "remove_time": None,
        "type": "general",
        "http_auth_user": webhook.http_auth_user,
        "http_auth_password": webhook.http_auth_password,
        "remove_reason": None,
        "last_delivery_time": iso_millis(last) if last else None,
        "last_http_status": webhook.last_http_status,
        "admin_id": webhook.user_id,
        "name": webhook.name,
    }
