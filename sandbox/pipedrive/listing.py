"""``GET /api/v2/persons`` and ``GET /api/v2/deals``: their query parameters, which records
they select, and cursor paging.

The cursor is opaque to clients; like Pipedrive's it is base64url JSON naming the sort
field, the last row's value of it, the direction and the last row's id, so a page
continues after that row however the data changed in between.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.pipedrive.conditions import matching_records
from sandbox.pipedrive.model import Dataset, Deal, Filter, Person, v2_time

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_IDS = 100
SORT_FIELDS = ("id", "update_time", "add_time")
DIRECTIONS = ("asc", "desc")
DEAL_STATUSES = ("open", "won", "lost", "deleted")
NARROWING = {
    "persons": ("owner_id", "org_id", "deal_id"),
    "deals": ("owner_id", "person_id", "org_id", "pipeline_id", "stage_id"),
}
# Whole seconds only: Pipedrive rejects fractional seconds in updated_since.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})\Z")

Row = Person | Deal


class BadQuery(ValueError):
    """A query parameter is malformed; ``str()`` says which and how."""


@dataclass
class ListQuery:
    """A checked list query."""

    filter_id: int | None = None
    ids: list[int] | None = None
    narrow: dict[str, int] = field(default_factory=dict)
    statuses: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort_by: str = "id"
    direction: str = "asc"
    limit: int = DEFAULT_LIMIT
    after: tuple[Any, int] | None = None


def _integer(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not re.fullmatch(r"\d+", text.strip()):
        raise BadQuery(f"Validation failed: {name}: Expected number, received string")
    return int(text)


def _time(params: Mapping[str, str], name: str) -> datetime | None:
    text = params.get(name)
    if text is None:
        return None
    if not RFC3339.match(text):
        raise BadQuery(f"Validation failed: {name}: {text!r} is not a valid datetime")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in allowed:
        raise BadQuery(f"Validation failed: {name}: must be one of {', '.join(allowed)}")
    return value


def parse_query(params: Mapping[str, str], kind: str) -> ListQuery:
    """Check the query of a persons (``kind`` "persons") or deals list; raise ``BadQuery``."""
    query = ListQuery(
        filter_id=_integer(params, "filter_id"),
        since=_time(params, "updated_since"),
        until=_time(params, "updated_until"),
        sort_by=_choice(params, "sort_by", SORT_FIELDS, "id"),
        direction=_choice(params, "sort_direction", DIRECTIONS, "asc"),
    )
    limit = _integer(params, "limit")
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"Validation failed: limit: must be from 1 to {MAX_LIMIT}")
    query.limit = DEFAULT_LIMIT if limit is None else limit
    if "cursor" in params:
        query.after = decode_cursor(params["cursor"], query.sort_by, query.direction)
    if query.filter_id is not None:
        return query  # ids and the narrowing parameters are ignored with a filter
    if "ids" in params:
        parts = [p.strip() for p in params["ids"].split(",") if p.strip()]
        if not all(re.fullmatch(r"\d+", p) for p in parts):
            raise BadQuery("Validation failed: ids: must be comma-separated integers")
        if len(parts) > MAX_IDS:
            raise BadQuery(f"Validation failed: ids: at most {MAX_IDS} ids")
        query.ids = [int(p) for p in parts]
    for name in NARROWING[kind]:
        if (value := _integer(params, name)) is not None:
            query.narrow[name] = value
    if kind == "deals" and "status" in params:
        statuses = [s.strip() for s in params["status"].split(",")]
        if any(s not in DEAL_STATUSES for s in statuses):
            raise BadQuery(f"Validation failed: status: must be of {', '.join(DEAL_STATUSES)}")
        query.statuses = statuses
    return query


def select(
    data: Dataset, kind: str, query: ListQuery, filter_: Filter | None, honour_since: bool
) -> list[Row]:
    """The records a query asks for, before sorting and paging."""
    rows: list[Row]
    if filter_ is not None:
        rows = [r for r in matching_records(data, filter_) if isinstance(r, Person | Deal)]
    elif kind == "persons":
        rows = list(data.live_persons())
        if "deal_id" in query.narrow:
            deal = data.deals.get(query.narrow["deal_id"])
            rows = [p for p in rows if deal is not None and p.id == deal.person_id]
    else:
        statuses = query.statuses or ["open", "won", "lost"]
        rows = [
            d
            for _, d in sorted(data.deals.items())
            if ("deleted" in statuses and d.deleted) or (not d.deleted and d.status in statuses)
        ]
    if filter_ is None:
        if query.ids is not None:
            wanted = set(query.ids)
            rows = [r for r in rows if r.id in wanted]
        for name, value in query.narrow.items():
            if name != "deal_id":
                rows = [r for r in rows if getattr(r, name) == value]
    if honour_since:
        if query.since is not None:
            rows = [r for r in rows if r.update_time >= query.since]
        if query.until is not None:
            rows = [r for r in rows if r.update_time < query.until]
    return rows


def _key(row: Row, sort_by: str) -> tuple[Any, int]:
    if sort_by == "id":
        return (row.id, row.id)
    moment = row.update_time if sort_by == "update_time" else row.add_time
    return (v2_time(moment), row.id)


def page(
    ordered: list[Row], keys: list[tuple[Any, int]], query: ListQuery
) -> tuple[list[Row], str | None]:
    """One page of ``ordered`` (rows in ascending order of ``keys``) in the query's
    direction after its cursor, and the next cursor (None at the end)."""
    limit = query.limit
    if query.direction == "asc":
        start = bisect.bisect_right(keys, query.after) if query.after is not None else 0
        chosen, more = ordered[start : start + limit], start + limit < len(ordered)
    else:
        end = bisect.bisect_left(keys, query.after) if query.after is not None else len(ordered)
        chosen, more = ordered[max(0, end - limit) : end][::-1], end > limit
    if not more:
        return chosen, None
    value, last_id = _key(chosen[-1], query.sort_by)
    return chosen, encode_cursor(query.sort_by, query.direction, value, last_id)


class Listings:
    """Query results selected and sorted once per data revision: paging through a large
    filter evaluates it once, not once per page."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[Any, ...], tuple[list[Row], list[tuple[Any, int]]]]
        self._cache = OrderedDict()

    def page(
        self,
        data: Dataset,
        revision: int,
        kind: str,
        query: ListQuery,
        filter_: Filter | None,
        honour_since: bool,
    ) -> tuple[list[Row], str | None]:
        """One page of the query's answer over ``data`` as it is at ``revision``."""
        key = (
            revision,
            kind,
            query.filter_id,
            None if query.ids is None else tuple(query.ids),
            tuple(sorted(query.narrow.items())),
            None if query.statuses is None else tuple(query.statuses),
            query.since,
            query.until,
            query.sort_by,
            honour_since,
        )
        entry = self._cache.get(key)
        if entry is None:
            rows = select(data, kind, query, filter_, honour_since)
            ordered = sorted(rows, key=lambda r: _key(r, query.sort_by))
            entry = (ordered, [_key(r, query.sort_by) for r in ordered])
            self._cache[key] = entry
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return page(*entry, query)


def encode_cursor(sort_by: str, direction: str, value: Any, last_id: int) -> str:
    """The opaque cursor continuing after the row with ``value`` and ``last_id``."""
    body = {"field": sort_by, "fieldValue": value, "sortDirection": direction, "id": last_id}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, sort_by: str, direction: str) -> tuple[Any, int]:
    """The (sort value, id) a cursor continues after; ``BadQuery`` when it is not one of
    ours or belongs to another sort order."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadQuery("Validation failed: cursor: invalid cursor") from None
    if not isinstance(body, dict):
        raise BadQuery("Validation failed: cursor: invalid cursor")
    value, last_id = body.get("fieldValue"), body.get("id")
    wanted_type = int if sort_by == "id" else str
    if (
        body.get("field") != sort_by
        or body.get("sortDirection") != direction
        or not isinstance(last_id, int)
        or isinstance(last_id, bool)
        or not isinstance(value, wanted_type)
        or isinstance(value, bool)
    ):
        raise BadQuery("Validation failed: cursor: invalid cursor")
    return value, last_id
