"""The object shapes inside webhook deliveries: ``data``/``previous`` of webhooks v2 and
``current``/``previous`` of webhooks v1, keyed and typed like the real payloads in
``specs/pipedrive/examples/`` (v2 ``visible_to`` is a string there, and v1 objects carry
custom fields as top-level 40-character keys)."""

from __future__ import annotations

from typing import Any

from sandbox.pipedrive.model import (
    COMPANY_ID,
    USERS,
    Dataset,
    Deal,
    Email,
    Organization,
    Person,
    json_number,
    v1_time,
    v2_time,
)

CC_EMAIL = "sandbox@pipedrivemail.com"


# Counters of a v1 person or deal the sandbox keeps no data for: always 0.
ACTIVITY_COUNTS = (
    "email_messages_count",
    "activities_count",
    "done_activities_count",
    "undone_activities_count",
    "files_count",
    "notes_count",
)


def _v1_entries(entries: list[Email]) -> list[dict[str, Any]]:
    # v1 shows an empty list as one empty primary entry, without label.
    if not entries:
        return [{"value": "", "primary": True}]
    return [{"label": e.label, "value": e.value, "primary": e.primary} for e in entries]


def person_webhook_v2(person: Person) -> dict[str, Any]:
    """``data`` of a v2 person delivery."""
    return {
        "add_time": v2_time(person.add_time),
        "custom_fields": {
            key: None if value is None else {"type": "varchar", "value": value}
            for key, value in person.custom.items()
        },
        "emails": [e.to_json() for e in person.emails],
        "first_name": person.first_name,
        "id": person.id,
        "label": person.label_ids[0] if person.label_ids else None,
        "last_name": person.last_name,
        "name": person.name,
        "org_id": person.org_id,
        "owner_id": person.owner_id,
        "phones": [p.to_json() for p in person.phones],
        "update_time": v2_time(person.update_time),
        "visible_to": "3",
    }


def deal_webhook_v2(deal: Deal) -> dict[str, Any]:
    """``data`` of a v2 deal delivery."""
    closed = deal.won_time or deal.lost_time
    return {
        "add_time": v2_time(deal.add_time),
        "channel": None,
        "channel_id": None,
        "close_time": v2_time(closed) if closed else None,
        "creator_user_id": deal.owner_id,
        "currency": deal.currency,
        "custom_fields": {},
        "expected_close_date": deal.expected_close_date,
        "first_won_time": v2_time(deal.won_time) if deal.won_time else None,
        "id": deal.id,
        "label_ids": list(deal.label_ids),
        "lost_reason": deal.lost_reason,
        "lost_time": v2_time(deal.lost_time) if deal.lost_time else None,
        "org_id": deal.org_id,
        "origin": "ManuallyCreated",
        "origin_id": None,
        "owner_id": deal.owner_id,
        "person_id": deal.person_id,
        "pipeline_id": deal.pipeline_id,
        "probability": None,
        "stage_change_time": v2_time(deal.add_time),
        "stage_id": deal.stage_id,
        "status": deal.status,
        "title": deal.title,
        "update_time": v2_time(deal.update_time),
        "value": json_number(deal.value),
        "visible_to": "3",
        "won_time": v2_time(deal.won_time) if deal.won_time else None,
    }


def organization_webhook_v2(org: Organization) -> dict[str, Any]:
    """``data`` of a v2 organization delivery."""
    return {
        "add_time": v2_time(org.add_time),
        "address": {"value": org.country, "country": org.country} if org.country else None,
        "custom_fields": {},
        "id": org.id,
        "label_ids": [],
        "name": org.name,
        "owner_id": org.owner_id,
        "update_time": v2_time(org.update_time),
        "visible_to": "3",
    }


def _deal_counts(data: Dataset, key: str, entity_id: int) -> dict[str, int]:
    statuses = [d.status for d in data.live_deals() if getattr(d, key) == entity_id]
    won, lost = statuses.count("won"), statuses.count("lost")
    return {"open": statuses.count("open"), "won": won, "lost": lost, "closed": won + lost}


def person_webhook_v1(person: Person, data: Dataset) -> dict[str, Any]:
    """``current``/``previous`` of a v1 person delivery."""
    org = data.organizations.get(person.org_id) if person.org_id else None
    counts = _deal_counts(data, "person_id", person.id)
    body: dict[str, Any] = {
        "id": person.id,
        "company_id": COMPANY_ID,
        "owner_id": person.owner_id,
        "owner_name": USERS.get(person.owner_id, ""),
        "org_id": person.org_id,
        "org_name": org.name if org else None,
        "name": person.name,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "first_char": person.name[:1].lower(),
        "email": _v1_entries(person.emails),
        "phone": _v1_entries(person.phones),
        "im": [{"value": "", "primary": True}],
        "label": person.label_ids[0] if person.label_ids else None,
        "label_ids": list(person.label_ids),
        "visible_to": "3",
        "active_flag": not person.deleted,
        "add_time": v1_time(person.add_time),
        "update_time": v1_time(person.update_time),
        "delete_time": v1_time(person.update_time) if person.deleted else None,
        "cc_email": CC_EMAIL,
        "open_deals_count": counts["open"],
        "won_deals_count": counts["won"],
        "lost_deals_count": counts["lost"],
        "closed_deals_count": counts["closed"],
        "followers_count": 1,
    }
    for key in [
        "related_open_deals_count",
        "related_won_deals_count",
        "related_lost_deals_count",
        "related_closed_deals_count",
        "participant_open_deals_count",
        "participant_closed_deals_count",
        *ACTIVITY_COUNTS,
    ]:
        body[key] = 0
    for key in [
        "notes",
        "job_title",
        "birthday",
        "picture_id",
        "picture_128_url",
        "next_activity_date",
        "next_activity_time",
        "next_activity_id",
        "last_activity_date",
        "last_activity_id",
        "last_incoming_mail_time",
        "last_outgoing_mail_time",
        "postal_address",
        "postal_address_subpremise",
        "postal_address_street_number",
        "postal_address_route",
        "postal_address_sublocality",
        "postal_address_locality",
        "postal_address_admin_area_level_1",
        "postal_address_admin_area_level_2",
        "postal_address_country",
        "postal_address_postal_code",
        "postal_address_formatted_address",
    ]:
        body[key] = None
    body.update(person.custom)
    return body


def deal_webhook_v1(deal: Deal, data: Dataset) -> dict[str, Any]:
    """``current``/``previous`` of a v1 deal delivery."""
    person = data.persons.get(deal.person_id) if deal.person_id else None
    org = data.organizations.get(deal.org_id) if deal.org_id else None
    symbol = "€" if deal.currency == "EUR" else "$"
    value = json_number(deal.value)
    closed = deal.won_time or deal.lost_time
    body: dict[str, Any] = {
        "id": deal.id,
        "creator_user_id": deal.owner_id,
        "user_id": deal.owner_id,
        "owner_name": USERS.get(deal.owner_id, ""),
        "person_id": deal.person_id,
        "person_name": person.name if person else None,
        "person_hidden": False,
        "org_id": deal.org_id,
        "org_name": org.name if org else None,
        "org_hidden": False,
        "title": deal.title,
        "value": value,
        "currency": deal.currency,
        "formatted_value": f"{symbol}{value}",
        "weighted_value": value,
        "weighted_value_currency": deal.currency,
        "formatted_weighted_value": f"{symbol}{value}",
        "status": deal.status,
        "stage_id": deal.stage_id,
        "pipeline_id": deal.pipeline_id,
        "stage_order_nr": deal.stage_id,
        "active": deal.status == "open" and not deal.deleted,
        "deleted": deal.deleted,
        "add_time": v1_time(deal.add_time),
        "update_time": v1_time(deal.update_time),
        "stage_change_time": v1_time(deal.add_time),
        "won_time": v1_time(deal.won_time) if deal.won_time else None,
        "first_won_time": v1_time(deal.won_time) if deal.won_time else None,
        "lost_time": v1_time(deal.lost_time) if deal.lost_time else None,
        "close_time": v1_time(closed) if closed else None,
        "lost_reason": deal.lost_reason,
        "expected_close_date": deal.expected_close_date,
        "visible_to": "3",
        "cc_email": CC_EMAIL,
        "origin": "ManuallyCreated",
        "label": ",".join(map(str, deal.label_ids)) or None,
        "followers_count": 1,
        "participants_count": 1 if person else 0,
        "products_count": 0,
    }
    for key in ACTIVITY_COUNTS:
        body[key] = 0
    for key in [
        "channel",
        "channel_id",
        "origin_id",
        "probability",
        "rotten_time",
        "local_won_date",
        "local_lost_date",
        "local_close_date",
        "next_activity_date",
        "next_activity_time",
        "next_activity_id",
        "next_activity_type",
        "next_activity_subject",
        "next_activity_duration",
        "next_activity_note",
        "last_activity_date",
        "last_activity_id",
        "last_incoming_mail_time",
        "last_outgoing_mail_time",
    ]:
        body[key] = None
    return body


def organization_webhook_v1(org: Organization, data: Dataset) -> dict[str, Any]:
    """``current``/``previous`` of a v1 organization delivery."""
    counts = _deal_counts(data, "org_id", org.id)
    return {
        "id": org.id,
        "company_id": COMPANY_ID,
        "owner_id": org.owner_id,
        "owner_name": USERS.get(org.owner_id, ""),
        "name": org.name,
        "first_char": org.name[:1].lower(),
        "address": org.country,
        "address_country": org.country,
        "open_deals_count": counts["open"],
        "won_deals_count": counts["won"],
        "lost_deals_count": counts["lost"],
        "closed_deals_count": counts["closed"],
        "people_count": sum(1 for p in data.live_persons() if p.org_id == org.id),
        "active_flag": not org.deleted,
        "visible_to": "3",
        "label": None,
        "label_ids": [],
        "cc_email": CC_EMAIL,
        "add_time": v1_time(org.add_time),
        "update_time": v1_time(org.update_time),
        "delete_time": v1_time(org.update_time) if org.deleted else None,
    }


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """v2 ``previous`` of a change: the old values of the fields that changed (custom
    fields one by one), ``update_time`` aside, as in the official examples."""
    previous: dict[str, Any] = {}
    for key, old in before.items():
        if key == "update_time" or after.get(key) == old:
            continue
        if key == "custom_fields" and isinstance(old, dict):
            new = after.get(key) or {}
            previous[key] = {k: old.get(k) for k in {*old, *new} if old.get(k) != new.get(k)}
        else:
            previous[key] = old
    return previous
