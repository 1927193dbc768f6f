"""The filter refresh: Pipedrive's people and deal filters mirrored into ``filters``.

Upserts by Pipedrive id, soft-deletes filters that vanished upstream (their Brevo lists
are left alone), renames the Brevo list of a renamed linked filter, and schedules a full
resync of a linked filter whose conditions changed; when given the webhook target, it also
registers again our webhooks that Pipedrive deleted. No database session is held across an
HTTP call: the database work is done in short sessions between the calls.

While Pipedrive refuses the token (``service.auth_pause``) the refresh makes no call; once
the pause ends it may be the one that tries the token again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.auth_pause import Credential, Watch, admit, record_refusal, settle
from service.clients.brevo import BrevoClient
from service.clients.errors import ApiAuthError, ApiAuthPaused, ApiError, ApiNotFound
from service.clients.pipedrive import (
    LIST_FILTERS,
    FilterType,
    PipedriveClient,
    PipedriveFilter,
)
from service.db import Filter, db_write_session
from service.filter_conditions import related_objects
from service.filters import FilterView, list_filters
from service.jobs import FilterBusy, Job, create_job
from service.list_names import brevo_list_name
from service.webhooks_install import WebhookTarget, ensure_webhooks

log = logging.getLogger(__name__)

FILTER_TYPES: tuple[FilterType, ...] = ("people", "deals")


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh found: every known filter afterwards, and what it changed."""

    filters: list[FilterView]
    created: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class _Rename:
    filter_id: int
    list_id: int
    name: str


@dataclass(frozen=True)
class _ListingChanges:
    created: int
    updated: int
    deleted: int
    renames: list[_Rename]
    # Linked filters whose conditions must be fetched, with the update_time they were listed at.
    to_check: list[tuple[int, str | None]]


def conditions_hash(conditions: Any) -> str:
    """SHA-256 hex of the conditions as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(conditions, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stored_name(upstream: PipedriveFilter) -> str:
    # ``filters.name`` is NOT NULL and Pony refuses an empty Required string.
    return upstream.name.strip() or f"Pipedrive filter {upstream.id}"


def _fetch_upstream(pipedrive: PipedriveClient, now: int) -> dict[int, PipedriveFilter]:
    """The people and deal filters that exist upstream, temporary and inactive ones left out.

    Both listings are read before anything is written, so a failed call changes nothing.
    Raises ``ApiAuthPaused``, without a call, while Pipedrive's refusal of the token holds.
    """
    credential = Credential(pipedrive.http.api, pipedrive.http.fingerprint)
    admission = admit([credential], now)
    if admission.waiting is not None:
        refusal = admission.waiting
        raise ApiAuthPaused(refusal.api, LIST_FILTERS.name, refusal.skip_message(), refusal.status)
    watch = Watch([credential], pipedrive.http.acceptance)
    refused: str | None = None
    try:
        return _list_upstream(pipedrive)
    except ApiAuthError as exc:
        refused = exc.api
        record_refusal(credential, exc, now, probing=credential in admission.probes)
        raise
    finally:
        settle(admission, watch.accepted(), now, refused)


def _list_upstream(pipedrive: PipedriveClient) -> dict[int, PipedriveFilter]:
    found: dict[int, PipedriveFilter] = {}
    for filter_type in FILTER_TYPES:
        for upstream in pipedrive.list_filters(filter_type):
            if upstream.type != filter_type or upstream.temporary or not upstream.active:
                continue
            found[upstream.id] = upstream
    return found


# The web's refresh and the worker's periodic one may run at once: two refreshes must
# never decide from the same stale read (two inserts of one id, two resync jobs).
@db_write_session
def _apply_listing(upstream: dict[int, PipedriveFilter], now: int) -> _ListingChanges:
    created = updated = deleted = 0
    renames: list[_Rename] = []
    to_check: list[tuple[int, str | None]] = []
    stored = {row.id: row for row in Filter.select()}
    for filter_id, item in sorted(upstream.items()):
        name = _stored_name(item)
        row = stored.get(filter_id)
        if row is None:
            Filter(id=filter_id, name=name, type=item.type, update_time=item.update_time)
            created += 1
            continue
        changed = False
        if row.deleted_at is not None:
            row.deleted_at = None
            changed = True
        linked = row.brevo_list_id is not None
        if row.name != name:
            row.name = name
            changed = True
            if linked:
                renames.append(_Rename(filter_id, row.brevo_list_id, name))
        if row.type != item.type:
            row.type = item.type
            changed = True
        if row.update_time != item.update_time:
            changed = True
            if linked:
                # Written with the conditions hash, once they are read: should that read
                # fail, the next refresh still sees the new update_time and reads them again.
                to_check.append((filter_id, item.update_time))
            else:
                row.update_time = item.update_time
        elif linked and (row.conditions_hash is None or row.related_objects is None):
            to_check.append((filter_id, item.update_time))
        if changed:
            updated += 1
    for filter_id, row in stored.items():
        if filter_id not in upstream and row.deleted_at is None:
            row.deleted_at = now
            deleted += 1
    return _ListingChanges(created, updated, deleted, renames, to_check)


@db_write_session
def _record_conditions(
    filter_id: int, update_time: str | None, digest: str, related: str, now: int
) -> Job | None:
    """Store the filter's new conditions hash; the full resync job when they changed.

    The job and the hash are committed together. When the filter is busy nothing is stored,
    so the next refresh tries again rather than losing the change.
    """
    row = Filter.get(id=filter_id)
    if row is None or row.deleted_at is not None or row.brevo_list_id is None:
        return None
    previous = row.conditions_hash
    job: Job | None = None
    if previous is not None and previous != digest:
        try:
            job = create_job(filter_id, "full", "filter_changed", False, now)
        except FilterBusy as busy:
            log.info(
                "filter conditions changed while a job runs; the next refresh schedules the resync",
                extra={"filter_id": filter_id, "job_id": busy.job.id},
            )
            return None
    row.conditions_hash = digest
    row.related_objects = related
    row.update_time = update_time
    return job


def _check_conditions(
    pipedrive: PipedriveClient,
    filter_id: int,
    update_time: str | None,
    now: int,
    enqueue_job: Callable[[int], None],
) -> None:
    try:
        detail = pipedrive.get_filter(filter_id)
    except ApiNotFound:
        # Deleted between the listing and this read: the next refresh soft-deletes it.
        log.info("filter vanished during the refresh", extra={"filter_id": filter_id})
        return
    related = related_objects(detail.conditions, detail.type)
    digest = conditions_hash(detail.conditions)
    job = _record_conditions(filter_id, update_time, digest, related, now)
    if job is None:
        return
    log.info(
        "filter conditions changed: full resync scheduled",
        extra={"filter_id": filter_id, "job_id": job.id},
    )
    try:
        enqueue_job(job.id)
    except Exception:
        # The job row exists; the worker's sweeper enqueues unclaimed jobs (DESIGN section 3).
        log.exception(
            "could not enqueue the resync job; the worker's sweeper will",
            extra={"filter_id": filter_id, "job_id": job.id},
        )


def _rename_list(brevo: BrevoClient | None, rename: _Rename) -> None:
    extra = {"filter_id": rename.filter_id, "list_id": rename.list_id}
    if brevo is None:
        log.warning("filter renamed but BREVO_API_KEY is not set: list not renamed", extra=extra)
        return
    list_name = brevo_list_name(rename.name, rename.filter_id)
    try:
        brevo.rename_list(rename.list_id, list_name)
    except ApiError as exc:
        log.warning("renaming the filter's Brevo list failed: %s", exc, extra=extra)
        return
    log.info("brevo list renamed after its filter", extra={**extra, "list_name": list_name})


def _ensure_webhooks(pipedrive: PipedriveClient, target: WebhookTarget) -> None:
    try:
        ensure_webhooks(pipedrive, target)
    except ApiError as exc:
        log.warning("checking the pipedrive webhooks failed: %s", exc)
    except Exception:
        log.exception("checking the pipedrive webhooks failed")


def refresh_filters(
    pipedrive: PipedriveClient,
    brevo: BrevoClient | None,
    now: int,
    enqueue_job: Callable[[int], None],
    webhooks: WebhookTarget | None = None,
) -> RefreshResult:
    """Mirror Pipedrive's people and deal filters into the database (DESIGN section 5).

    Raises the client's ``ApiError`` when Pipedrive cannot be read (``ApiAuthPaused``, with
    no call made, while Pipedrive's refusal of the token holds); Brevo failures (a list
    rename) are logged and do not fail the refresh. ``brevo`` None skips renames. With
    ``webhooks``, our webhooks that Pipedrive deleted are registered again (a failure there
    is logged and does not fail the refresh either).
    """
    upstream = _fetch_upstream(pipedrive, now)
    changes = _apply_listing(upstream, now)
    for filter_id, update_time in changes.to_check:
        _check_conditions(pipedrive, filter_id, update_time, now, enqueue_job)
    for rename in changes.renames:
        _rename_list(brevo, rename)
    if webhooks is not None:
        _ensure_webhooks(pipedrive, webhooks)
    log.info(
        "filters refreshed",
        extra={
            "filters_created": changes.created,
            "filters_updated": changes.updated,
            "filters_deleted": changes.deleted,
            "upstream": len(upstream),
        },
    )
    return RefreshResult(list_filters(), changes.created, changes.updated, changes.deleted)
