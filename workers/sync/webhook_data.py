"""What a stored person delivery says about the person: the email and names the sync sends,
the version of that data, and the survivor of a merge.

v2 puts the person in ``data`` (``emails``, ISO ``update_time``) and, on a delete caused by
a merge, the survivor in ``meta.merged_to_id``; v1 puts it in ``current`` (``email``, a
``YYYY-MM-DD HH:MM:SS`` UTC ``update_time``). A delete carries no current data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.clients.pipedrive import person_from_json
from workers.sync.contacts import valid_email


@dataclass(frozen=True)
class PersonData:
    """The person as the delivery shows it."""

    person_id: int
    email: str | None
    first_name: str | None
    last_name: str | None
    updated_at: int | None


def unix_time(text: Any) -> int | None:
    """Unix seconds of a Pipedrive ``update_time`` (v2 ISO or v1 ``date time``, UTC)."""
    if not isinstance(text, str) or not text or len(text) > 40:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _body(payload: str) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def person_data(version: str | None, payload: str) -> PersonData | None:
    """The person's current data in a stored delivery, or None when it carries none
    (a delete) or it is not usable."""
    body = _body(payload)
    item = body.get("data") if version == "2" else body.get("current")
    if not isinstance(item, dict):
        return None
    if version != "2":
        # v1 names the list "email"; the v2 reader takes "emails".
        item = {**item, "emails": item.get("email")}
    if not isinstance(item.get("emails"), list | None):
        return None
    try:
        person = person_from_json(item)
    except (KeyError, TypeError, ValueError):
        return None
    return PersonData(
        person_id=person.id,
        email=valid_email(_storable(person.primary_email)),
        first_name=_storable(person.first_name) or None,
        last_name=_storable(person.last_name) or None,
        updated_at=unix_time(person.update_time),
    )


def _storable(text: str | None) -> str | None:
    """``text`` with any lone surrogate (JSON allows one as an escape, UTF-8 does not)
    replaced: SQLite refuses such a string, which would stop the drain on every run."""
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8")


def merged_to(version: str | None, payload: str) -> int | None:
    """On a v2 delete caused by a merge, the id of the surviving person."""
    if version != "2":
        return None
    meta = _body(payload).get("meta")
    value = meta.get("merged_to_id") if isinstance(meta, dict) else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value) or None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
