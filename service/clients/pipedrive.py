"""The Pipedrive client: filters, filter members (API v2, cursor paging), persons by ids
or changed since a moment, and webhooks. Authenticates with the ``x-api-token`` header."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from service.clients.http import ApiHttp, ClientPolicy, Operation, RateHeaders
from service.clients.usage import UsageStore

log = logging.getLogger(__name__)

API = "pipedrive"
FilterType = Literal["people", "deals"]
PAGE_SIZE = 500
IDS_PER_CALL = 100

# Costs are the spec's x-token-cost of each operation.
LIST_FILTERS = Operation(API, "GET", "/v1/filters", cost=20)
GET_FILTER = Operation(API, "GET", "/v1/filters/{id}", cost=2)
LIST_PERSONS = Operation(API, "GET", "/api/v2/persons", cost=10)
LIST_DEALS = Operation(API, "GET", "/api/v2/deals", cost=10)
LIST_WEBHOOKS = Operation(API, "GET", "/v1/webhooks", cost=10)
CREATE_WEBHOOK = Operation(API, "POST", "/v1/webhooks", idempotent=False, cost=10)
DELETE_WEBHOOK = Operation(API, "DELETE", "/v1/webhooks/{id}", cost=6)
OPERATIONS = (
    LIST_FILTERS,
    GET_FILTER,
    LIST_PERSONS,
    LIST_DEALS,
    LIST_WEBHOOKS,
    CREATE_WEBHOOK,
    DELETE_WEBHOOK,
)

RATE_HEADERS = RateHeaders(
    limit="x-ratelimit-limit",
    remaining="x-ratelimit-remaining",
    reset="x-ratelimit-reset",
    daily_limit="x-daily-ratelimit-token-limit",
    daily_remaining="x-daily-ratelimit-token-remaining",
)


@dataclass(frozen=True)
class PipedriveFilter:
    """A Pipedrive filter; ``conditions`` only when fetched one by one."""

    id: int
    name: str
    type: str
    active: bool
    temporary: bool
    update_time: str | None
    conditions: dict[str, Any] | None = None


@dataclass(frozen=True)
class Person:
    """A person as API v2 gives it: the fields the sync uses."""

    id: int
    name: str
    first_name: str
    last_name: str
    emails: tuple[str, ...]
    update_time: str | None

    @property
    def primary_email(self) -> str | None:
        """The primary email (the first listed is the primary one), trimmed and lower-cased."""
        return self.emails[0] if self.emails else None


@dataclass(frozen=True)
class Deal:
    """A deal as API v2 gives it: the fields the sync uses."""

    id: int
    person_id: int | None
    title: str
    status: str | None
    update_time: str | None


@dataclass(frozen=True)
class MemberPage:
    """One page of a filter's members.

    ``ignored_updated_since`` is True when some row was last updated before the
    ``updated_since`` the page was asked for: the API did not honour it.
    """

    members: list[Person] | list[Deal]
    ignored_updated_since: bool = False


@dataclass(frozen=True)
class Webhook:
    """A webhook registered in Pipedrive (its password is never kept)."""

    id: int
    subscription_url: str
    event_action: str
    event_object: str
    version: str
    name: str | None
    is_active: bool
    http_auth_user: str | None = field(default=None)


def person_from_json(item: dict[str, Any]) -> Person:
    """A ``Person`` from an API v2 person object; emails cleaned, primary first."""
    emails = item.get("emails") or []
    ordered = sorted(
        (e for e in emails if isinstance(e, dict)), key=lambda e: not e.get("primary", False)
    )
    cleaned = [str(e.get("value") or "").strip().lower() for e in ordered]
    return Person(
        id=int(item["id"]),
        name=str(item.get("name") or ""),
        first_name=str(item.get("first_name") or ""),
        last_name=str(item.get("last_name") or ""),
        emails=tuple(e for e in cleaned if e),
        update_time=item.get("update_time"),
    )


def deal_from_json(item: dict[str, Any]) -> Deal:
    """A ``Deal`` from an API v2 deal object."""
    person_id = item.get("person_id")
    return Deal(
        id=int(item["id"]),
        person_id=int(person_id) if isinstance(person_id, int) else None,
        title=str(item.get("title") or ""),
        status=item.get("status"),
        update_time=item.get("update_time"),
    )


def rfc3339(moment: datetime) -> str:
    """``moment`` as the RFC 3339 UTC text API v2 takes (``2024-05-01T10:00:00Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class PipedriveClient:
    """Calls Pipedrive under the shared HTTP policy."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        usage: UsageStore,
        policy: ClientPolicy | None = None,
        pool: httpx.Client | None = None,
        requests_per_second: float = 10.0,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = ApiHttp(
            API,
            base_url,
            {"x-api-token": token},
            usage=usage,
            rate_headers=RATE_HEADERS,
            policy=policy,
            pool=pool,
            now=now,
            sleep=sleep,
        )
        # Pipedrive's burst limit is per token, so one pacing bucket serves every call.
        self.pacer = self.http.pacer("pipedrive", 1.0 / requests_per_second)

    def _get(self, operation: Operation, **kwargs: Any) -> Any:
        response = self.http.call(operation, pacer=self.pacer, **kwargs)
        return response.json()

    def list_filters(self, filter_type: FilterType) -> list[PipedriveFilter]:
        """Every filter of one type (``people`` or ``deals``), without conditions."""
        body = self._get(LIST_FILTERS, params={"type": filter_type})
        return [_filter_from_json(item) for item in body.get("data") or []]

    def get_filter(self, filter_id: int) -> PipedriveFilter:
        """One filter with its ``conditions``."""
        body = self._get(GET_FILTER, path={"id": filter_id})
        return _filter_from_json(body["data"])

    def iter_members(
        self,
        filter_type: FilterType,
        filter_id: int,
        updated_since: datetime | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[MemberPage]:
        """The filter's persons (people filters) or deals (deal filters), page by page."""
        operation = LIST_PERSONS if filter_type == "people" else LIST_DEALS
        parse = person_from_json if filter_type == "people" else deal_from_json
        params: dict[str, Any] = {"filter_id": filter_id, "limit": page_size}
        if updated_since is not None:
            # The API takes whole seconds; rows are checked against what was actually sent.
            updated_since = updated_since.replace(microsecond=0)
            params["updated_since"] = rfc3339(updated_since)
        cursor: str | None = None
        while True:
            page_params = {**params, "cursor": cursor} if cursor else params
            body = self._get(operation, params=page_params)
            rows = body.get("data") or []
            ignored = updated_since is not None and any(
                (t := _parse_time(row.get("update_time"))) is not None and t < updated_since
                for row in rows
            )
            yield MemberPage([parse(row) for row in rows], ignored)  # type: ignore[arg-type]
            cursor = (body.get("additional_data") or {}).get("next_cursor")
            if not cursor:
                return

    def iter_persons(
        self, updated_since: datetime, page_size: int = PAGE_SIZE
    ) -> Iterator[list[Person]]:
        """Every live person updated at or after ``updated_since`` (whole seconds), page by
        page; no filter. Deleted persons are not listed."""
        since = rfc3339(updated_since.replace(microsecond=0))
        params: dict[str, Any] = {"updated_since": since, "limit": page_size}
        cursor: str | None = None
        while True:
            page_params = {**params, "cursor": cursor} if cursor else params
            body = self._get(LIST_PERSONS, params=page_params)
            rows = body.get("data") or []
            if rows:
                yield [person_from_json(row) for row in rows]
            cursor = (body.get("additional_data") or {}).get("next_cursor")
            if not cursor:
                return

    def persons_by_ids(self, ids: Sequence[int]) -> list[Person]:
        """The persons with these ids (deleted or unknown ones are absent), 100 per call."""
        persons: list[Person] = []
        unique = sorted(set(ids))
        for start in range(0, len(unique), IDS_PER_CALL):
            batch = unique[start : start + IDS_PER_CALL]
            params = {"ids": ",".join(map(str, batch)), "limit": IDS_PER_CALL}
            body = self._get(LIST_PERSONS, params=params)
            persons.extend(person_from_json(row) for row in body.get("data") or [])
        return persons

    def list_webhooks(self) -> list[Webhook]:
        """Every webhook registered for this company."""
        body = self._get(LIST_WEBHOOKS)
        return [_webhook_from_json(item) for item in body.get("data") or []]

    def create_webhook(
        self,
        subscription_url: str,
        event_action: str,
        event_object: str,
        name: str,
        http_auth_user: str | None = None,
        http_auth_password: str | None = None,
        version: str = "2.0",
    ) -> Webhook:
        """Register a webhook (``version`` "2.0" unless told otherwise)."""
        payload: dict[str, Any] = {
            "subscription_url": subscription_url,
            "event_action": event_action,
            "event_object": event_object,
            "name": name,
            "version": version,
        }
        if http_auth_user is not None:
            payload["http_auth_user"] = http_auth_user
            payload["http_auth_password"] = http_auth_password or ""
        body = self._get(CREATE_WEBHOOK, json=payload)
        return _webhook_from_json(body["data"])

    def delete_webhook(self, webhook_id: int) -> None:
        """Remove a webhook."""
        self.http.call(DELETE_WEBHOOK, pacer=self.pacer, path={"id": webhook_id})


def _filter_from_json(item: dict[str, Any]) -> PipedriveFilter:
    return PipedriveFilter(
        id=int(item["id"]),
        name=str(item.get("name") or ""),
        type=str(item.get("type") or ""),
        active=bool(item.get("active_flag", True)),
        temporary=bool(item.get("temporary_flag", False)),
        update_time=item.get("update_time"),
        conditions=item.get("conditions"),
    )


def _webhook_from_json(item: dict[str, Any]) -> Webhook:
    return Webhook(
        id=int(item["id"]),
        subscription_url=str(item.get("subscription_url") or ""),
        event_action=str(item.get("event_action") or ""),
        event_object=str(item.get("event_object") or ""),
        version=str(item.get("version") or ""),
        name=item.get("name"),
        is_active=bool(item.get("is_active", True)),
        http_auth_user=item.get("http_auth_user"),
    )
