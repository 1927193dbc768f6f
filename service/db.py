"""Pony entities mapped onto ``schema.sql`` (which Pony never creates or alters).

Timestamps are INTEGER unix seconds here (``service.clock`` converts them for the API).
Entities never leave a ``db_session``: the modules that use them return dataclasses.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from pony import orm
from pony.orm import Database, Optional, PrimaryKey, Required, Set, composite_key

from service import schema

db = Database()

P = ParamSpec("P")
R = TypeVar("R")


def db_session(func: Callable[P, R]) -> Callable[P, R]:
    """Pony's ``db_session`` with the function's types kept (Pony has no type hints).

    Only for sync functions: on an ``async def`` it breaks Starlette.
    """
    return cast(Callable[P, R], orm.db_session(func))


def db_write_session(func: Callable[P, R]) -> Callable[P, R]:
    """``db_session`` that takes SQLite's write lock first (``BEGIN IMMEDIATE``).

    For a session that reads and then writes, when another process may do the same at
    once: neither decides from a read the other is about to make stale.
    """
    return cast(Callable[P, R], orm.db_session(immediate=True)(func))


class User(db.Entity):  # type: ignore[name-defined,misc]
    """The single admin user, created on the first login."""

    _table_ = "user"
    id = PrimaryKey(str)
    password_hash = Optional(str, nullable=True)
    sessions = Set("Session")


class Session(db.Entity):  # type: ignore[name-defined,misc]
    """An admin session; ``id`` is the SHA-256 hex of the token."""

    _table_ = "session"
    id = PrimaryKey(str)
    user = Required(User, column="user_id")
    expires_at = Required(int, size=64)


class Filter(db.Entity):  # type: ignore[name-defined,misc]
    """A Pipedrive filter (its ``id`` is Pipedrive's) and the Brevo list it feeds."""

    _table_ = "filters"
    id = PrimaryKey(int, size=64)
    name = Required(str)
    brevo_list_id = Optional(int, size=64)
    deleted_at = Optional(int, size=64)
    type = Optional(str, nullable=True)
    update_time = Optional(str, nullable=True)
    conditions_hash = Optional(str, nullable=True)
    related_objects = Optional(str, nullable=True)
    jobs = Set("SyncJob")
    memberships = Set("Membership")
    changes = Set("FilterChange")
    sends = Set("BrevoSend")


class SyncJob(db.Entity):  # type: ignore[name-defined,misc]
    """One sync of one filter; while ``processing`` it is the filter's lock."""

    _table_ = "sync_jobs"
    id = PrimaryKey(int, auto=True, size=64)
    filter = Required(Filter, column="filter_id")
    status = Required(str)
    created_at = Required(int, size=64)
    completed_at = Optional(int, size=64)
    total_fetched = Optional(int, size=64, default=0)
    total_added = Optional(int, size=64, default=0)
    error_message = Optional(str, nullable=True)
    kind = Required(str, default="full")
    trigger = Required(str, default="admin")
    forced = Required(int, default=0)
    total_updated = Optional(int, size=64, default=0)
    total_removed = Optional(int, size=64, default=0)
    total_skipped = Optional(int, size=64, default=0)
    claimed_at = Optional(int, size=64)
    claim_token = Optional(str, nullable=True)
    heartbeat_at = Optional(int, size=64)
    note = Optional(str, nullable=True)
    staged = Set("SyncMember")


class LoginFailure(db.Entity):  # type: ignore[name-defined,misc]
    """One failed admin login from one client address."""

    _table_ = "login_failures"
    id = PrimaryKey(int, auto=True, size=64)
    client = Required(str)
    failed_at = Required(int, size=64)


class PeriodicDuty(db.Entity):  # type: ignore[name-defined,misc]
    """When a periodic duty of the worker loop is next due, and who ran it last."""

    _table_ = "periodic_duties"
    name = PrimaryKey(str)
    next_run_at = Required(int, size=64)
    last_run_at = Optional(int, size=64)
    last_run_by = Optional(str, nullable=True)


class ApiCall(db.Entity):  # type: ignore[name-defined,misc]
    """Calls to one API operation that ended with one status, within one hour."""

    _table_ = "api_calls"
    id = PrimaryKey(int, auto=True, size=64)
    api = Required(str)
    method = Required(str)
    path = Required(str)
    status = Required(int)
    hour = Required(int, size=64)
    calls = Required(int, size=64, default=0)
    composite_key(api, method, path, status, hour)


class ApiRateLimit(db.Entity):  # type: ignore[name-defined,misc]
    """The last rate-limit figures an API reported."""

    _table_ = "api_rate_limits"
    api = PrimaryKey(str)
    limit = Optional(int, size=64)
    remaining = Optional(int, size=64)
    reset_seconds = Optional(float)
    daily_limit = Optional(int, size=64)
    daily_remaining = Optional(int, size=64)
    observed_at = Required(float)
    paused_until = Optional(float)
    auth_fingerprint = Optional(str, nullable=True)
    auth_status = Optional(int)
    auth_error = Optional(str, nullable=True)
    auth_refused_at = Optional(float)
    auth_backoff_seconds = Optional(float)
    auth_paused_until = Optional(float)


class ApiPacing(db.Entity):  # type: ignore[name-defined,misc]
    """When the next call in a pacing bucket may go out, shared by every process."""

    _table_ = "api_pacing"
    bucket = PrimaryKey(str)
    next_at = Required(float)


class Membership(db.Entity):  # type: ignore[name-defined,misc]
    """The ledger: one member entity of a filter and the email Brevo confirmed for it."""

    _table_ = "memberships"
    id = PrimaryKey(int, auto=True, size=64)
    filter = Required(Filter, column="filter_id")
    entity_id = Required(int, size=64)
    person_id = Optional(int, size=64)
    email = Optional(str, nullable=True)
    first_name = Optional(str, nullable=True)
    last_name = Optional(str, nullable=True)
    attrs_hash = Optional(str, nullable=True)
    state = Required(str)
    created_contact = Required(int, default=0)
    updated_at = Required(int, size=64)
    source_time = Optional(int, size=64)
    composite_key(filter, entity_id)


class SyncMember(db.Entity):  # type: ignore[name-defined,misc]
    """One member a running job read from Pipedrive, and what the plan does with it."""

    _table_ = "sync_members"
    id = PrimaryKey(int, auto=True, size=64)
    job = Required(SyncJob, column="job_id")
    entity_id = Required(int, size=64)
    person_id = Optional(int, size=64)
    email = Optional(str, nullable=True)
    first_name = Optional(str, nullable=True)
    last_name = Optional(str, nullable=True)
    attrs_hash = Optional(str, nullable=True)
    action = Required(str, default="keep")
    done = Required(int, default=0)
    source = Required(str, default="api")
    source_time = Optional(int, size=64)
    composite_key(job, entity_id)


class FilterChange(db.Entity):  # type: ignore[name-defined,misc]
    """A webhook event routed to a linked filter it touches, until a job applies it."""

    _table_ = "filter_changes"
    id = PrimaryKey(int, auto=True, size=64)
    filter = Required(Filter, column="filter_id")
    inbox_id = Required(int, size=64)
    kind = Required(str)
    action = Optional(str, nullable=True)
    entity_id = Optional(int, size=64)
    occurred_at = Required(int, size=64)
    data_time = Optional(int, size=64)
    email = Optional(str, nullable=True)
    first_name = Optional(str, nullable=True)
    last_name = Optional(str, nullable=True)
    merged_to = Optional(int, size=64)


class BrevoContact(db.Entity):  # type: ignore[name-defined,misc]
    """A contact Brevo confirmed, with the attributes hash it confirmed."""

    _table_ = "brevo_contacts"
    email = PrimaryKey(str)
    attrs_hash = Required(str)
    confirmed_at = Required(int, size=64)


class BrevoSend(db.Entity):  # type: ignore[name-defined,misc]
    """An email a job sent to a filter's list, until the ledger settles it."""

    _table_ = "brevo_sends"
    id = PrimaryKey(int, auto=True, size=64)
    filter = Required(Filter, column="filter_id")
    job_id = Required(int, size=64)
    email = Required(str)
    sent_at = Required(int, size=64)


class InboxEvent(db.Entity):  # type: ignore[name-defined,misc]
    """One webhook delivery, stored before it was answered (written by ``service.inbox``)."""

    _table_ = "inbox"
    id = PrimaryKey(int, auto=True, size=64)
    event_key = Required(str, unique=True)
    version = Optional(str, nullable=True)
    object = Optional(str, nullable=True)
    action = Optional(str, nullable=True)
    entity_id = Optional(int, size=64)
    occurred_at = Optional(int, size=64)
    received_at = Required(int, size=64)
    status = Required(str)
    reason = Optional(str, nullable=True)
    payload = Required(str)


class WorkerHeartbeat(db.Entity):  # type: ignore[name-defined,misc]
    """The latest tick of one worker process's periodic loop (written by ``workers.periodic``)."""

    _table_ = "worker_heartbeats"
    holder = PrimaryKey(str)
    beat_at = Required(int, size=64)


@db.on_connect(provider="sqlite")  # type: ignore[untyped-decorator]
def _sqlite_pragmas(database: Any, connection: sqlite3.Connection) -> None:
    schema.apply_pragmas(connection)


_bound_path: Path | None = None
_bind_lock = threading.Lock()


def bind_database(path: Path) -> None:
    """Migrate the file at ``path`` and bind the entities to it, once per process."""
    global _bound_path
    with _bind_lock:
        if _bound_path is not None:
            if _bound_path != path:
                raise RuntimeError(f"database already bound to {_bound_path}, not {path}")
            return
        schema.migrate(path)
        db.bind(provider="sqlite", filename=str(path))
        db.generate_mapping(create_tables=False)
        _bound_path = path


def bound_path() -> Path | None:
    """The file this process is bound to, if any."""
    return _bound_path
