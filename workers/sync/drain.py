"""The inbox drain: pending webhook deliveries become filter changes, and every linked filter
with changes gets one incremental job (DESIGN sections 3 and 5).

A burst is gathered for the coalesce window (widened as Pipedrive's budget runs low): the
drain waits until its oldest pending delivery has waited that long, then routes every
pending delivery at once. Routing turns each one into ``filter_changes`` rows for the
linked filters it touches and marks it processed, in one transaction, so a delivery is
routed exactly once however many drains run. A filter's changes stay until a job applied
them: a filter busy with another job (a full resync, say) gets its incremental job after
that one ends, and a failed job's changes are tried again after a pause.

What a delivery touches:
- a person: every linked people filter (as a changed member); every linked deal filter
  whose ledger holds the person (its name and email, from the webhook data);
- a deal: every linked deal filter (as a changed member);
- any object a filter's conditions name besides its own (a people filter on deal or
  organization fields): that filter, listed whole, since the members' ``update_time``
  does not move when a related object changes;
- a filter: a filter refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.budget import budget_state
from service.db import db, db_session, db_write_session
from service.jobs import FilterBusy, FilterDeleted, FilterNotFound, create_job
from service.webhooks import V1_TO_V2_ACTION
from workers.sync.claims import CRASHED_PREFIX
from workers.sync.sql import in_list, json_rows
from workers.sync.webhook_data import PersonData, merged_to, person_data

log = logging.getLogger(__name__)

ROUTE_BATCH = 2000
ROUTED_ACTIONS = frozenset({"create", "change", "delete"})


@dataclass(frozen=True)
class LinkedFilter:
    """A filter the drain routes to: its type and the other objects its conditions name."""

    id: int
    type: str
    related: frozenset[str]


@dataclass(frozen=True)
class PendingDelivery:
    """A pending inbox row, as routing needs it."""

    id: int
    version: str | None
    object: str | None
    action: str | None
    entity_id: int | None
    occurred_at: int
    payload: str


@dataclass(frozen=True)
class Change:
    """One ``filter_changes`` row to insert."""

    filter_id: int
    inbox_id: int
    kind: str
    action: str | None
    entity_id: int | None
    occurred_at: int
    data: PersonData | None = None
    merged_to: int | None = None

    def row(self) -> tuple[object, ...]:
        """The column values, in ``_COLUMNS`` order."""
        data = self.data
        return (
            self.filter_id,
            self.inbox_id,
            self.kind,
            self.action,
            self.entity_id,
            self.occurred_at,
            data.updated_at if data else None,
            data.email if data else None,
            data.first_name if data else None,
            data.last_name if data else None,
            self.merged_to,
        )


_COLUMNS = (
    "filter_id, inbox_id, kind, action, entity_id, occurred_at, data_time, email, "
    "first_name, last_name, merged_to"
)


@dataclass(frozen=True)
class DrainResult:
    """What one drain did."""

    routed: int
    changes: int
    refresh: bool
    jobs: list[int]


@db_session
def linked_filters() -> list[LinkedFilter]:
    """Every linked filter (a Brevo list, not soft-deleted) with a known type."""
    rows = db.select(
        "id, type, related_objects FROM filters WHERE brevo_list_id IS NOT NULL "
        "AND deleted_at IS NULL AND type IN ('people', 'deals') ORDER BY id"
    )
    return [
        LinkedFilter(int(r[0]), str(r[1]), frozenset(filter(None, (r[2] or "").split(","))))
        for r in rows
    ]


@db_session
def oldest_pending() -> int | None:
    """When the oldest pending delivery was received, if there is one."""
    found = db.select("MIN(received_at) FROM inbox WHERE status = 'pending'")
    return int(found[0]) if found and found[0] is not None else None


@db_session
def pending_deliveries(limit: int) -> list[PendingDelivery]:
    """The oldest pending deliveries, by id."""
    rows = db.select(
        "id, version, object, action, entity_id, COALESCE(occurred_at, received_at), payload "
        "FROM inbox WHERE status = 'pending' ORDER BY id LIMIT $limit"
    )
    return [PendingDelivery(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6]) for r in rows]


@db_session
def ledger_persons(filter_ids: Sequence[int], person_ids: Sequence[int]) -> set[tuple[int, int]]:
    """(filter id, person id) pairs of these persons found in these filters' ledgers."""
    if not filter_ids or not person_ids:
        return set()
    filters, params = in_list("f", sorted(set(filter_ids)))
    persons, more = in_list("p", sorted(set(person_ids)))
    params.update(more)
    rows = db.select(
        f"DISTINCT filter_id, person_id FROM memberships WHERE filter_id IN {filters} "
        f"AND person_id IN {persons}",
        params,
    )
    return {(int(r[0]), int(r[1])) for r in rows}


def _action(delivery: PendingDelivery) -> str | None:
    if delivery.version == "1":
        return V1_TO_V2_ACTION.get(delivery.action or "")
    return delivery.action


def route(
    deliveries: Sequence[PendingDelivery],
    filters: Sequence[LinkedFilter],
    in_ledger: set[tuple[int, int]],
) -> tuple[list[Change], bool]:
    """The filter changes these deliveries make, and whether one asks for a filter refresh.

    ``in_ledger`` holds the (deal filter, person) pairs of the persons concerned.
    """
    changes: list[Change] = []
    refresh = False
    for d in deliveries:
        action = _action(d)
        if d.object == "filter":
            refresh = True
            continue
        if d.entity_id is None or action not in ROUTED_ACTIONS:
            continue
        data = person_data(d.version, d.payload) if d.object == "person" else None
        if data is not None and data.person_id != d.entity_id:
            data = None  # a body whose object is not the one its meta names is not trusted
        survivor = merged_to(d.version, d.payload) if action == "delete" else None
        relisted: set[int] = set()
        for f in filters:
            own = "person" if f.type == "people" else "deal"
            if d.object == own:
                changes.append(
                    Change(f.id, d.id, "member", action, d.entity_id, d.occurred_at, data, survivor)
                )
                continue
            if d.object in f.related and f.id not in relisted:
                relisted.add(f.id)
                changes.append(Change(f.id, d.id, "relist", None, None, d.occurred_at))
            # Also when the filter is re-listed: the re-listing takes its deals' persons
            # from the ledger, which this data brings up to date.
            if d.object == "person" and (f.id, d.entity_id) in in_ledger:
                changes.append(
                    Change(f.id, d.id, "person", action, d.entity_id, d.occurred_at, data, survivor)
                )
    return changes, refresh


@db_write_session
def commit_routing(delivery_ids: Sequence[int], changes: Sequence[Change]) -> list[int]:
    """Mark the deliveries processed and insert their changes, in one transaction.

    Only deliveries still pending are taken (another drain may have routed some); their
    ids are returned, and only their changes are written.
    """
    ids, params = in_list("i", list(delivery_ids))
    cursor = db.execute(
        f"UPDATE inbox SET status = 'processed' WHERE id IN {ids} AND status = 'pending' "
        "RETURNING id",
        params,
    )
    taken = {int(r[0]) for r in cursor.fetchall()}
    rows = [c.row() for c in changes if c.inbox_id in taken]
    if rows:
        values, row_params = json_rows("c", rows)
        db.execute(f"INSERT INTO filter_changes ({_COLUMNS}) {values}", row_params)
    return sorted(taken)


def route_pending(now: int, window: float, batch: int = ROUTE_BATCH) -> tuple[int, int, bool]:
    """Route every pending delivery once the oldest has waited ``window`` seconds.

    Returns (deliveries routed, changes written, whether a filter refresh is asked for).
    """
    oldest = oldest_pending()
    if oldest is None or oldest + window > now:
        return 0, 0, False
    filters = linked_filters()
    deal_filters = [f.id for f in filters if f.type == "deals"]
    routed = written = 0
    refresh = False
    while True:
        deliveries = pending_deliveries(batch)
        if not deliveries:
            break
        persons = [d.entity_id for d in deliveries if d.object == "person" and d.entity_id]
        in_ledger = ledger_persons(deal_filters, persons)
        changes, asked = route(deliveries, filters, in_ledger)
        taken = set(commit_routing([d.id for d in deliveries], changes))
        routed += len(taken)
        written += sum(1 for c in changes if c.inbox_id in taken)
        refresh = refresh or asked
        if len(deliveries) < batch:
            break
    return routed, written, refresh


@db_session
def filters_with_changes(now: int, retry_after_failure: int) -> list[int]:
    """Linked filters with changes waiting, no job running, and no incremental retry still
    to wait for (``retry_due``); filters no longer linked lose their changes."""
    unlinked = "SELECT id FROM filters WHERE brevo_list_id IS NULL OR deleted_at IS NOT NULL"
    # Looked for first: this runs every second, and a DELETE takes the write lock even
    # when it removes nothing, holding up webhook intake for no gain.
    if db.select(f"1 FROM filter_changes WHERE filter_id IN ({unlinked}) LIMIT 1"):
        db.execute(f"DELETE FROM filter_changes WHERE filter_id IN ({unlinked})")
    candidates = db.select(
        "DISTINCT c.filter_id FROM filter_changes c WHERE NOT EXISTS ("
        " SELECT 1 FROM sync_jobs j WHERE j.filter_id = c.filter_id AND j.status = 'processing')"
        " ORDER BY c.filter_id"
    )
    due = []
    for filter_id in candidates:
        recent = db.select(
            "kind, status, completed_at, error_message FROM sync_jobs"
            " WHERE filter_id = $filter_id ORDER BY id DESC LIMIT $limit",
            # Enough rows to reach the hour's wait as well as the crash limit.
            {"filter_id": filter_id, "limit": max(MAX_INCREMENTAL_FAILURES, 16)},
        )
        if retry_due(recent, now, retry_after_failure):
            due.append(int(filter_id))
    return due


# After this many incremental jobs of a filter crashed in a row, no more are started: a
# job that raises every time (a poison job, a bug) must not run for ever. The changes wait
# for the next full resync (the catch-up, or the admin's); once one ends, incremental jobs
# resume. Failures the APIs cause (an outage, a refusal) are retried at most an hour
# apart, without end: they heal by themselves.
MAX_INCREMENTAL_FAILURES = 6
MAX_RETRY_SECONDS = 3600


def retry_due(
    recent: Sequence[tuple[str, str, int | None, str | None]], now: int, retry_after_failure: int
) -> bool:
    """Whether a filter whose latest jobs are ``recent`` (kind, status, completed_at,
    error_message; newest first) may get an incremental job now: at once after anything but
    a failed incremental job; after the k-th such failure in a row, ``retry_after_failure``
    * 2^(k-1) seconds later (at most an hour); never after ``MAX_INCREMENTAL_FAILURES``
    crashes in a row."""
    failures = crashes = 0
    for kind, status, _, error in recent:
        if kind != "incremental" or status != "failed":
            break
        failures += 1
        crashes += (error or "").startswith(CRASHED_PREFIX)
    if failures == 0:
        return True
    if crashes >= MAX_INCREMENTAL_FAILURES:
        return False
    last_failed_at = recent[0][2] or 0
    wait = min(MAX_RETRY_SECONDS, retry_after_failure * (1 << (failures - 1)))
    return now >= last_failed_at + wait


def start_incremental_jobs(
    now: int, enqueue_job: Callable[[int], None], retry_after_failure: int = 30
) -> list[int]:
    """Create and enqueue one incremental job per filter with changes waiting."""
    started = []
    for filter_id in filters_with_changes(now, retry_after_failure):
        try:
            job = create_job(filter_id, "incremental", "webhook", False, now)
        except (FilterBusy, FilterDeleted, FilterNotFound):
            continue
        started.append(job.id)
        enqueue_job(job.id)
    return started


def drain(
    now: int,
    base_window: float,
    enqueue_job: Callable[[int], None],
    refresh_filters: Callable[[], None],
    retry_after_failure: int = 30,
) -> DrainResult:
    """Route the pending burst when it is ripe, then start the incremental jobs due.

    A filter whose incremental job failed gets the next one ``retry_after_failure``
    seconds later, then twice as late after each further failure in a row (``retry_due``)."""
    window = budget_state(base_window, now).coalesce_seconds
    routed, changes, refresh = route_pending(now, window)
    if routed:
        log.info(
            "webhook deliveries routed",
            extra={"deliveries": routed, "changes": changes, "window_seconds": window},
        )
    if refresh:
        refresh_filters()
    jobs = start_incremental_jobs(now, enqueue_job, retry_after_failure)
    return DrainResult(routed, changes, refresh, jobs)
