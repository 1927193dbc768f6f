"""The fake's state: seeded data, webhooks, settings, usage, faults and the delivery log,
behind one lock. Every data change goes through here, bumps ``update_time`` and is
announced to the listeners (the webhook dispatcher) as ``ChangeEvent``s."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from copy import deepcopy
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sandbox.faults import FaultPlan
from sandbox.pipedrive import inputs, payload_data
from sandbox.pipedrive.conditions import Members, filter_members
from sandbox.pipedrive.config import PipedriveFakeConfig
from sandbox.pipedrive.events import V1_ACTIONS, ChangeEvent
from sandbox.pipedrive.inputs import InputError, NotFound
from sandbox.pipedrive.limits import WINDOW_SECONDS, TokenBudget
from sandbox.pipedrive.listing import Listings
from sandbox.pipedrive.model import Dataset, Deal, Filter, Organization, Person, Stamps, Webhook
from sandbox.pipedrive.seed import seed_dataset
from sandbox.pipedrive.shapes import deal_v2, filter_v1, person_v2
from sandbox.settings import Check, checked_settings, is_integer, is_number
from sandbox.windows import RateWindow

Record = Person | Deal | Organization
Listener = Callable[[list[ChangeEvent]], None]
# Kept by the token budget rather than the config: a short budget "day" for tests.
BUDGET_RESET = "budget_reset_seconds"
# Faults of the webhook deliveries: a reset puts them back to what the fake started with.
DELIVERY_FAULTS = (
    "delivery_duplicate_ratio",
    "delivery_drop_ratio",
    "delivery_delay_max_ms",
    "delivery_seed",
)


def _is_ratio(value: Any) -> bool:
    return is_number(value) and 0 <= value <= 1


SETTINGS: dict[str, Check] = {
    "ignore_updated_since": (lambda v: isinstance(v, bool), "a boolean"),
    "daily_token_budget": (lambda v: is_integer(v) and v >= 0, "a non-negative integer"),
    "burst_limit": (lambda v: is_integer(v) and v >= 0, "a non-negative integer"),
    "retry_scale": (lambda v: is_number(v) and v >= 0, "a non-negative number"),
    "delivery_timeout": (lambda v: is_number(v) and v > 0, "a positive number"),
    "token": (
        lambda v: v is None or (isinstance(v, str) and bool(v)),
        "a non-empty string or null",
    ),
    BUDGET_RESET: (lambda v: v is None or (is_number(v) and v > 0), "a positive number or null"),
    "delivery_duplicate_ratio": (_is_ratio, "a number from 0 to 1"),
    "delivery_drop_ratio": (_is_ratio, "a number from 0 to 1"),
    "delivery_delay_max_ms": (lambda v: is_integer(v) and v >= 0, "a non-negative integer"),
    "delivery_seed": (is_integer, "an integer"),
}


def organization_json(org: Organization) -> dict[str, Any]:
    """An organization as the control API answers it."""
    return payload_data.organization_webhook_v2(org)


class PipedriveState:
    """Everything the fake knows; safe to use from the server loop and from test threads."""

    def __init__(self, config: PipedriveFakeConfig) -> None:
        if config.persons < 1:
            raise ValueError("the fake needs at least one person")
        self.config = replace(config)
        self.lock = threading.RLock()
        self._delivery_defaults = {key: getattr(config, key) for key in DELIVERY_FAULTS}
        # Draws whether each delivery is dropped, duplicated or delayed (``delivery_seed``).
        self.delivery_random = random.Random(config.delivery_seed)
        self.faults = FaultPlan(seed=config.fault_seed)
        self._hang_seconds = self.faults.hang_seconds
        self.window = RateWindow(config.burst_limit, WINDOW_SECONDS)
        self.budget = TokenBudget(config.daily_token_budget)
        self.listeners: list[Listener] = []
        self.reset_hooks: list[Callable[[], None]] = []
        self.webhooks: dict[int, Webhook] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.drift = False
        # Moves on every data change; cached listings of an older revision are stale.
        self.revision = 0
        self.listings = Listings()
        self.data = Dataset()
        self.stamps = Stamps(datetime.now(UTC))
        self._next_webhook_id = 1
        self.reset(config.seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the data; forget webhooks, faults (the delivery faults go back to the
        configured ones), usage, deliveries, drift and a short budget day
        (``budget_reset_seconds``)."""
        with self.lock:
            for key, value in self._delivery_defaults.items():
                setattr(self.config, key, value)
            self.delivery_random.seed(self.config.delivery_seed)
            self.config.seed = self.config.seed if seed is None else seed
            self.data = seed_dataset(self.config.seed, self.config.persons)
            self.revision += 1
            records: list[Record | Filter] = [
                *self.data.persons.values(),
                *self.data.deals.values(),
                *self.data.organizations.values(),
                *self.data.filters.values(),
            ]
            self.stamps = Stamps(max(r.update_time for r in records))
            self.webhooks.clear()
            self._next_webhook_id = 1
            self.deliveries.clear()
            self.faults.clear()
            self.faults.injected.clear()
            self.faults.hang_seconds = self._hang_seconds
            self.budget.reset(counts=True)
            self.budget.set_period(None)
            self.window.reset()
            self.drift = False
        for hook in self.reset_hooks:
            hook()

    def authorized(self, token: str) -> bool:
        """Whether ``token`` (the ``x-api-token`` header) is accepted."""
        expected = self.config.token
        return bool(token) and (expected is None or token == expected)

    def settings_json(self) -> dict[str, Any]:
        """The settings ``PUT /_sandbox/settings`` changes."""
        with self.lock:
            shown = {key: getattr(self.config, key) for key in SETTINGS if key != BUDGET_RESET}
            shown[BUDGET_RESET] = self.budget.period
            return shown

    def apply_settings(self, body: Any) -> dict[str, Any]:
        """Change some settings; raise ``InputError`` when one is unknown or ill-typed."""
        try:
            body = checked_settings(body, SETTINGS)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        with self.lock:
            for key, value in body.items():
                if key == BUDGET_RESET:
                    # The short day starts now, each time the setting is applied.
                    self.budget.set_period(value)
                else:
                    setattr(self.config, key, value)
                if key == "delivery_seed":
                    # Applying a seed, even the same one, starts its draws again.
                    self.delivery_random.seed(value)
            self.budget.budget = self.config.daily_token_budget
            self.window.limit = self.config.burst_limit
        return self.settings_json()

    def filter(self, filter_id: int) -> Filter:
        """The live filter with this id; ``NotFound`` otherwise."""
        with self.lock:
            found = self.data.filters.get(filter_id)
            if found is None or found.deleted:
                raise NotFound(f"filter {filter_id} not found")
            return found

    def members(self, filter_id: int) -> Members:
        """The filter's members as the fake evaluates it (``NotFound`` for no such filter)."""
        with self.lock:
            return filter_members(self.data, self.filter(filter_id))

    # --- data changes --------------------------------------------------------------

    def _publish(self, events: list[ChangeEvent]) -> None:
        for listener in list(self.listeners):
            listener(events)

    def _store(self, entity: str) -> dict[int, Any]:
        stores: dict[str, dict[int, Any]] = {
            "person": self.data.persons,
            "deal": self.data.deals,
            "organization": self.data.organizations,
        }
        return stores[entity]

    def _live(self, entity: str, record_id: int) -> Any:
        record = self._store(entity).get(record_id)
        if record is None or getattr(record, "deleted", False):
            raise NotFound(f"{entity} {record_id} not found")
        return record

    def _event(
        self,
        action: str,
        before: Record | None,
        after: Record | None,
        at: datetime | None = None,
        **extra: Any,
    ) -> ChangeEvent:
        record = after or before
        assert record is not None
        v2, v1 = _SHAPES[type(record)]
        data = None if action == "delete" or after is None else v2(after)
        if action == "create" or before is None:
            previous = None
        elif data is None:
            previous = v2(before)
        else:
            previous = payload_data.changed_fields(v2(before), data)
        return ChangeEvent(
            entity=_ENTITY[type(record)],
            entity_id=record.id,
            action=action,
            v1_action=extra.pop("v1_action", V1_ACTIONS[action]),
            at=at or record.update_time,
            v2_data=data,
            v2_previous=previous,
            v1_current=v1(after, self.data) if after is not None and action != "delete" else None,
            v1_previous=v1(before, self.data) if before is not None else None,
            **extra,
        )

    def _change(self, entity: str, record_id: int, apply: Callable[[Any, datetime], None]) -> Any:
        with self.lock:
            record = self._live(entity, record_id)
            changed = deepcopy(record)
            now = self.stamps.next()
            apply(changed, now)
            if changed == record:
                return record
            changed.update_time = now
            self._store(entity)[record_id] = changed
            self.revision += 1
            event = self._event("change", record, changed)
        self._publish([event])
        return changed

    def _create(self, entity: str, make: Callable[[int, datetime], Record]) -> Any:
        with self.lock:
            store = self._store(entity)
            record = make(max(store, default=0) + 1, self.stamps.next())
            store[record.id] = record
            self.revision += 1
            event = self._event("create", None, record)
        self._publish([event])
        return record

    def _delete(self, entity: str, record_id: int) -> None:
        with self.lock:
            record = self._live(entity, record_id)
            gone = replace(record, deleted=True, update_time=self.stamps.next())
            self._store(entity)[record_id] = gone
            self.revision += 1
            event = self._event("delete", record, None, at=gone.update_time)
        self._publish([event])

    def create_person(self, body: Any) -> dict[str, Any]:
        """Add a person (control API); answer its API v2 shape."""
        checked = inputs.body_object(body, inputs.PERSON_KEYS)
        person = self._create(
            "person", lambda pid, now: inputs.new_person(pid, checked, self.data, now)
        )
        return person_v2(person)

    def update_person(self, person_id: int, body: Any) -> dict[str, Any]:
        """Change a person's fields; a change announces itself only when something differs."""
        checked = inputs.body_object(body, inputs.PERSON_KEYS)
        person = self._change(
            "person", person_id, lambda p, _: inputs.apply_person(p, checked, self.data)
        )
        return person_v2(person)

    def delete_person(self, person_id: int) -> None:
        """Delete a person (kept, flagged; no longer listed)."""
        self._delete("person", person_id)

    def merge_persons(self, person_id: int, into: Any) -> dict[str, Any]:
        """Merge ``person_id`` into ``into``: emails, phones and labels join the survivor,
        deals move to it, the merged person is deleted."""
        if isinstance(into, bool) or not isinstance(into, int):
            raise InputError("into must be a person id")
        if into == person_id:
            raise InputError("a person cannot be merged into itself")
        with self.lock:
            gone, keep = self._live("person", person_id), self._live("person", into)
            now = self.stamps.next()
            survivor = deepcopy(keep)
            known = {e.value.strip().lower() for e in survivor.emails}
            survivor.emails += [
                replace(e, primary=False)
                for e in gone.emails
                if e.value.strip().lower() not in known
            ]
            survivor.phones += [replace(p, primary=False) for p in gone.phones]
            survivor.org_id = survivor.org_id or gone.org_id
            survivor.label_ids = sorted({*survivor.label_ids, *gone.label_ids})
            survivor.update_time = now
            self.data.persons[into] = survivor
            self.data.persons[person_id] = replace(gone, deleted=True, update_time=now)
            self.revision += 1
            events = [
                self._event("delete", gone, None, at=now, merged_to_id=into),
                self._event("change", keep, survivor, v1_action="merged", merged_from_id=gone.id),
            ]
            for deal in self.data.live_deals():
                if deal.person_id == person_id:
                    moved = replace(deal, person_id=into, update_time=self.stamps.next())
                    self.data.deals[deal.id] = moved
                    events.append(self._event("change", deal, moved))
        self._publish(events)
        return person_v2(survivor)

    def create_deal(self, body: Any) -> dict[str, Any]:
        """Add a deal (control API); answer its API v2 shape."""
        checked = inputs.body_object(body, inputs.DEAL_KEYS)
        deal = self._create("deal", lambda did, now: inputs.new_deal(did, checked, self.data, now))
        return deal_v2(deal)

    def update_deal(self, deal_id: int, body: Any) -> dict[str, Any]:
        """Change a deal's fields; its person's ``update_time`` does not move."""
        checked = inputs.body_object(body, inputs.DEAL_KEYS)
        deal = self._change(
            "deal", deal_id, lambda d, now: inputs.apply_deal(d, checked, self.data, now)
        )
        return deal_v2(deal)

    def delete_deal(self, deal_id: int) -> None:
        """Delete a deal (kept, flagged; no longer listed)."""
        self._delete("deal", deal_id)

    def create_organization(self, body: Any) -> dict[str, Any]:
        """Add an organization (control API)."""
        checked = inputs.body_object(body, inputs.ORGANIZATION_KEYS)
        org = self._create(
            "organization", lambda oid, now: inputs.new_organization(oid, checked, now)
        )
        return organization_json(org)

    def update_organization(self, org_id: int, body: Any) -> dict[str, Any]:
        """Change an organization; its persons' ``update_time`` does not move."""
        checked = inputs.body_object(body, inputs.ORGANIZATION_KEYS)
        org = self._change(
            "organization", org_id, lambda o, _: inputs.apply_organization(o, checked)
        )
        return organization_json(org)

    def create_filter(self, body: Any) -> dict[str, Any]:
        """Add a filter (no webhook: Pipedrive sends none for filters)."""
        checked = inputs.body_object(body, inputs.FILTER_KEYS)
        with self.lock:
            filter_id = max(self.data.filters, default=0) + 1
            made = inputs.new_filter(filter_id, checked, self.stamps.next())
            self.data.filters[filter_id] = made
            self.revision += 1
            return filter_v1(made, conditions=True, field_codes=True)

    def update_filter(self, filter_id: int, body: Any) -> dict[str, Any]:
        """Rename a filter or change its conditions or flags."""
        checked = inputs.body_object(body, inputs.FILTER_KEYS)
        with self.lock:
            changed = deepcopy(self.filter(filter_id))
            inputs.apply_filter(changed, checked)
            changed.update_time = self.stamps.next()
            self.data.filters[filter_id] = changed
            self.revision += 1
            return filter_v1(changed, conditions=True, field_codes=True)

    def delete_filter(self, filter_id: int) -> None:
        """Delete a filter: it leaves the listing and its id answers 404."""
        with self.lock:
            self.filter(filter_id).deleted = True
            self.revision += 1

    # --- webhooks --------------------------------------------------------------------

    def add_webhook(self, **fields: Any) -> Webhook:
        """Register a webhook from checked fields."""
        with self.lock:
            webhook = Webhook(id=self._next_webhook_id, add_time=self.stamps.next(), **fields)
            self._next_webhook_id += 1
            self.webhooks[webhook.id] = webhook
            return webhook

    def remove_webhook(self, webhook_id: int) -> bool:
        """Unregister a webhook; False when there is none with this id."""
        with self.lock:
            return self.webhooks.pop(webhook_id, None) is not None

    def record_delivery(self, entry: dict[str, Any]) -> None:
        """Append one delivery attempt to the log ``GET /_sandbox/deliveries`` shows."""
        with self.lock:
            self.deliveries.append(entry)


_ENTITY: dict[type, str] = {Person: "person", Deal: "deal", Organization: "organization"}
_SHAPES: dict[
    type, tuple[Callable[[Any], dict[str, Any]], Callable[[Any, Dataset], dict[str, Any]]]
] = {
    Person: (payload_data.person_webhook_v2, payload_data.person_webhook_v1),
    Deal: (payload_data.deal_webhook_v2, payload_data.deal_webhook_v1),
    Organization: (payload_data.organization_webhook_v2, payload_data.organization_webhook_v1),
}
