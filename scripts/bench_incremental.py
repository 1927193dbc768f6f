"""Benchmark of the webhook-driven incremental sync: a burst of changes across linked
filters, through the sandbox fakes and real webhook deliveries.

Setup: the fake Pipedrive is seeded with ``--persons`` (5,000) persons, each in the custom
"Customer tier" Gold, Silver, Bronze or none. The benchmark creates one people filter per
tier (``--people-filters``, 3: Gold, Silver, Bronze) and one deal filter (``--deal-filters``,
1: deals whose title starts with "Bench", 20 of the seeded deals renamed so beforehand),
starts the real ``pbsync web`` and ``pbsync worker`` (SYNC_COALESCE_SECONDS ``--window``,
2 s; JOB_STALE_SECONDS default), refreshes the filters, registers the service's webhook in
the fake (``POST /v1/webhooks``, version 2.0, every object and action, HTTP Basic as
WEBHOOK_USER / WEBHOOK_PASSWORD) and links every filter with a first full sync.

The burst: ``--changes`` K (300) changes made through the fake's control API at ``--rate``
(100) a second, in a shuffled mix; each person or deal is changed once:

- ``move``: a listed person moves to another linked tier (leaves one list, joins another);
- ``join``: a person in no linked tier moves into one (a contact Brevo does not have yet);
- ``leave``: a listed person moves out of every linked tier;
- ``rename``: a listed person gets a new first name (the contact's FIRSTNAME);
- ``email``: a listed person gets a new email (the contact is renamed in place);
- ``delete``: a listed person is deleted;
- ``deal_enter`` / ``deal_leave``: a deal's title gains or loses the "Bench" prefix, so
  its person joins or leaves the deal filter's list.

Changed persons have a valid email no other person has and no deal; changed deals are
their person's only deal, with such an email; so each change has one expected effect.
``--membership-only`` makes every change a ``move`` (the issue's "joins and leaves of
persons already in Brevo").

Measured:

- latency, change to Brevo: from the moment the control call that made a change returned
  to the first poll (every ``--poll`` s, 0.05) of the fake Brevo's state (read in this
  process) that shows the change's whole effect (the email in or out of the list, the new
  FIRSTNAME, the old address gone and the new one listed); p50, p95 (nearest rank) and max;
- calls: what each fake answered from just before the burst until everything settled (its
  usage counters), by operation, cross-checked with the service's ``api_calls`` table;
- windows: the incremental jobs per filter, each one window of one filter, from the
  worker's log ("job started", "incremental sync applied" with its count of routed
  changes). This script reads the service's ``filter_changes`` table at every poll; a
  job takes every routed change of its filter waiting when it starts, so the filter's
  rows in id order split into its jobs' counts: that tells which windows needed a
  Pipedrive listing (a change other than a deletion);
- convergence: every list equals its filter's valid emails as the fake evaluates it
  (``state.members``), every change seen, nothing pending (inbox, routed changes, jobs),
  every delivery acknowledged; within ``--timeout`` (120 s) after the burst.

The lower bound is summed over the windows the service formed (each at least a coalesce
window long, longer while a job of the filter ran). Each change's effect on each list is
counted in the window of the job that made it: the job of that filter running when a poll
first showed the effect (a job lists the members changed since its oldest change, so it
may apply changes made after its window closed, which then cost the next window
nothing). Per window of a filter:

- Pipedrive: 1 list call (``filter_id`` + ``updated_since``) when its routed changes
  hold one other than a deletion (deletions need no call), plus a page per 500 members it
  made effects for, beyond the first; for a deal filter, ``ceil(n / 100)``
  person look-ups for the persons of deals entering it that its ledger does not know;
- Brevo, per list: removals ``ceil(n / 150)`` calls; email changes 2 calls each (read the
  contact, rename it: DESIGN renames in place only a contact that is not blocklisted);
  contacts to send: ``a`` adds (the contact exists in Brevo with the right attributes:
  only the list is needed) and ``u`` upserts (new contact or changed attributes), sent
  the cheaper of two ways the design allows: ``ceil(a / 150)`` add-to-list calls plus
  ``u`` single upserts (``u`` <= 20) or 1 import + 1 process poll + ``ceil(u / 500)``
  read-back pages (``u`` > 20); or, when ``a + u`` > 20, everything in one import
  (``2 + ceil((a + u) / 500)``). At most 20 contacts go one by one: an import needs a
  poll of ``/processes``, which Brevo allows 100 times an hour.

The naive count is 2 x K: one Pipedrive read and one Brevo write per event.

Verdict lines (exit status 1 when one fails):

- converged: every list equals its filter, every change became visible, no job failed;
- calls <= 1.5 x the lower bound. The bound leaves out what a correct engine spends that
  the data alone does not dictate: the list check each writing job makes first (``GET
  /contacts/lists/{id}``: DESIGN recreates a list deleted in Brevo), and a second process
  poll when an import is slower than the client's first wait. Each is one call per window
  and list with Brevo work, and such a window's bound is at least 2 calls (its listing and
  one write; 4 with an import), so together they add at most half.

Latency has no verdict: the issue sets none for a burst, and a mixed burst's is bound by
Brevo's contact-call rate (the "brevo pacing floor" line: the bound's calls on
``/contacts/*`` at the service's 8 a second). A single change reaching Brevo within 10 s
is asserted end to end by ``tests/integration/test_incremental.py``.

With ``--membership-only`` the issue's "Done when" criteria are checked as well (on sums
over windows): Pipedrive calls <= 2 per touched filter per window plus paging, and for each
Brevo operation, calls <= the sum over lists and windows of ``ceil(changes / 150)``.

The fakes run in this process (``sandbox.server.ThreadedServer``) with no latency and their
default, realistic limits (Pipedrive: 100 requests per 2 s, a daily budget of 1,000,000
tokens; Brevo: 10 contacts requests a second, 100 other requests an hour, imports done
after 1 s); ``--unlimited`` lifts them as ``bench_full_resync.py`` does (and 0.05 s
imports). The service's own pacing applies either way. Databases, queue and logs live in a
temporary directory (``--keep`` keeps it and prints where; it is kept anyway when a run
breaks off or a verdict fails).

Run it from the repository root:

    .venv/bin/python scripts/bench_incremental.py [--changes 300] [--rate 100]

It prints figures only; no test asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import bench_full_resync as full  # this script's sibling (scripts/ is on sys.path)
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.brevo import BrevoFakeConfig
from sandbox.brevo import create_app as create_brevo
from sandbox.brevo.model import valid_email
from sandbox.brevo.state import BrevoFake
from sandbox.brevo.store import Store
from sandbox.pipedrive import PipedriveFakeConfig
from sandbox.pipedrive import create_app as create_pipedrive
from sandbox.pipedrive.fields import TIER_KEY, condition, groups
from sandbox.pipedrive.model import Deal, Person, primary_email
from sandbox.pipedrive.state import PipedriveState
from sandbox.server import ThreadedServer
from service.clients.brevo import BrevoLimits

TIERS = ("Gold", "Silver", "Bronze")  # the seeded values of "Customer tier"
DEAL_PREFIX = "Bench"
INITIAL_DEALS = 20  # deals in the deal filter before the burst (more if deal_leave needs)
PAGE_SIZE = 500  # Pipedrive API v2 rows per page
LOOKUP_IDS = 100  # persons per look-up by ids
LIST_BATCH = 150  # emails per Brevo add-to-list or remove call
ONE_BY_ONE_MAX = 20  # contacts sent one call each at most; more go in an import
READ_BACK_PAGE = 500  # list contacts per read-back page
CALLS_RATIO = 1.5
BIG = full.BIG
MIX = {
    "move": 0.40,
    "join": 0.10,
    "leave": 0.10,
    "rename": 0.15,
    "email": 0.10,
    "delete": 0.05,
    "deal_enter": 0.05,
    "deal_leave": 0.05,
}
PERSON_KINDS = ("move", "join", "leave", "rename", "email", "delete")
DEAL_KINDS = ("deal_enter", "deal_leave")
SENDERS = 8  # threads making the changes

Calls = Counter[str]


# --- the changes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One condition the fake Brevo must show: ``email`` in the list or not, and, when
    ``first_name`` is given, the contact's FIRSTNAME."""

    list_id: int
    email: str
    present: bool
    first_name: str | None = None

    def holds(self, store: Store) -> bool:
        """Whether the store shows it now (the caller holds ``store.lock``)."""
        contact = store.by_email(self.email)
        listed = contact is not None and contact.id in store.lists[self.list_id].members
        if listed != self.present:
            return False
        return self.first_name is None or (
            contact is not None and contact.attributes.get("FIRSTNAME") == self.first_name
        )


@dataclass
class Change:
    """One change of the burst: the control call, what it must do in Brevo, and what it
    needs, filter by filter (for the lower bound)."""

    number: int
    kind: str
    entity_id: int  # the person, or the deal for deal kinds
    method: str
    path: str
    body: dict[str, Any] | None
    expects: list[Expect]
    touches: set[int]  # linked filters the drain routes it to
    needs: dict[int, str] = field(default_factory=dict)  # filter -> add/upsert/remove/rename
    listed: set[int] = field(default_factory=set)  # filters whose answer must hold it
    lookup: int | None = None  # the deal filter that must look its person up
    made_at: float | None = None
    seen_at: float | None = None  # the first poll showing every expectation at once
    expect_seen: list[float | None] = field(default_factory=list)  # each one's first poll

    @property
    def latency(self) -> float | None:
        """Seconds from the change to its effect in Brevo (None: never seen)."""
        if self.made_at is None or self.seen_at is None:
            return None
        return self.seen_at - self.made_at


@dataclass
class Setup:
    """The linked filters: people filters by tier, the deal filter, their lists."""

    tiers: dict[int, str]  # people filter -> tier
    deal_filter: int | None
    lists: dict[int, int]  # filter -> Brevo list

    @property
    def filters(self) -> list[int]:
        """Every linked filter, people filters first."""
        return [*self.tiers, *([self.deal_filter] if self.deal_filter is not None else [])]

    def name(self, filter_id: int) -> str:
        """A short name: the tier, or "deals"."""
        return self.tiers.get(filter_id, "deals")


def kind_counts(total: int, kinds: Iterable[str], mix: Mapping[str, float]) -> dict[str, int]:
    """``total`` split among ``kinds`` by their weights in ``mix`` (largest remainders)."""
    weights = {k: mix[k] for k in kinds if mix.get(k, 0) > 0}
    scale = sum(weights.values())
    exact = {k: total * w / scale for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True):
        if sum(counts.values()) >= total:
            break
        counts[k] += 1
    return counts


def contact_matches(store: Store, email: str, person: Person) -> bool:
    """Whether Brevo holds this contact with the person's names (only a list is missing)."""
    with store.lock:
        contact = store.by_email(email)
        if contact is None:
            return False
        return contact.attributes.get("FIRSTNAME") == (
            person.first_name or None
        ) and contact.attributes.get("LASTNAME") == (person.last_name or None)


def plan_burst(
    state: PipedriveState,
    store: Store,
    setup: Setup,
    counts: Mapping[str, int],
    rng: random.Random,
) -> list[Change]:
    """The burst's changes, shuffled; ``RuntimeError`` when the data has too few persons or
    deals to pick from."""
    with state.lock:
        persons = state.data.live_persons()
        deals = state.data.live_deals()
        members = {f: set(state.members(f).ids) for f in setup.filters}
    emails = Counter(e for p in persons if (e := primary_email(p)) is not None)
    deals_of: Counter[int] = Counter(d.person_id for d in deals if d.person_id is not None)

    def usable(person: Person | None) -> str | None:
        email = primary_email(person) if person is not None else None
        if email is None or not valid_email(email) or emails[email] != 1:
            return None
        return email

    with store.lock:
        store.settle()
        in_list = {
            f: {store.contacts[i].email for i in store.lists[lst].members}
            for f, lst in setup.lists.items()
        }
    people = list(setup.tiers)
    by_filter: dict[int | None, list[tuple[Person, str]]] = {f: [] for f in [*people, None]}
    for person in persons:
        email = usable(person)
        if email is None or deals_of[person.id]:
            continue
        homes = [f for f in people if person.id in members[f]]
        if not homes:
            by_filter[None].append((person, email))
        elif len(homes) == 1 and email in in_list[homes[0]]:
            by_filter[homes[0]].append((person, email))
    for pool in by_filter.values():
        rng.shuffle(pool)

    changes: list[Change] = []

    def take(filter_id: int | None, kind: str) -> tuple[Person, str]:
        pool = by_filter[filter_id]
        if not pool:
            where = "in no linked tier" if filter_id is None else f"in {setup.name(filter_id)}"
            raise RuntimeError(f"no person left {where} for a {kind}: lower --changes")
        return pool.pop()

    def listed_filter() -> int:
        left = [f for f in people if by_filter[f]]
        return rng.choice(left) if left else people[0]

    lists = setup.lists
    for kind in PERSON_KINDS:
        for _ in range(counts.get(kind, 0)):
            n = len(changes)
            if kind == "join":
                person, email = take(None, kind)
                target = rng.choice(people)
                body: dict[str, Any] = {"custom_fields": {TIER_KEY: setup.tiers[target]}}
                change = Change(n, kind, person.id, "PATCH", "", body, [], set(people))
                change.expects = [Expect(lists[target], email, True)]
                change.needs = {
                    target: "add" if contact_matches(store, email, person) else "upsert"
                }
                change.listed = {target}
            else:
                home = listed_filter()
                person, email = take(home, kind)
                change = Change(n, kind, person.id, "PATCH", "", None, [], set(people))
                if kind == "move":
                    target = rng.choice([f for f in people if f != home])
                    change.body = {"custom_fields": {TIER_KEY: setup.tiers[target]}}
                    change.expects = [
                        Expect(lists[home], email, False),
                        Expect(lists[target], email, True),
                    ]
                    matches = contact_matches(store, email, person)
                    change.needs = {home: "remove", target: "add" if matches else "upsert"}
                    change.listed = {target}
                elif kind == "leave":
                    change.body = {"custom_fields": {TIER_KEY: None}}
                    change.expects = [Expect(lists[home], email, False)]
                    change.needs = {home: "remove"}
                elif kind == "rename":
                    first = f"Bench{n}"
                    change.body = {"first_name": first}
                    change.expects = [Expect(lists[home], email, True, first)]
                    change.needs = {home: "upsert"}
                    change.listed = {home}
                elif kind == "email":
                    new = f"bench.{n}.{person.id}@renamed.example.org"
                    change.body = {"emails": [new]}
                    change.expects = [
                        Expect(lists[home], email, False),
                        Expect(lists[home], new, True),
                    ]
                    change.needs = {home: "rename"}
                    change.listed = {home}
                else:  # delete
                    change.method = "DELETE"
                    change.expects = [Expect(lists[home], email, False)]
                    change.needs = {home: "remove"}
            change.path = f"/_sandbox/persons/{person.id}"
            changes.append(change)

    if setup.deal_filter is not None:
        changes += deal_changes(
            setup,
            setup.deal_filter,
            persons,
            deals,
            members[setup.deal_filter],
            in_list,
            store,
            counts,
            rng,
            len(changes),
        )
    rng.shuffle(changes)
    for number, change in enumerate(changes):
        change.number = number
    return changes


def deal_changes(
    setup: Setup,
    deal_filter: int,
    persons: list[Person],
    deals: list[Deal],
    inside: set[int],
    in_list: dict[int, set[str | None]],
    store: Store,
    counts: Mapping[str, int],
    rng: random.Random,
    first_number: int,
) -> list[Change]:
    """Deals entering and leaving the deal filter: each the only deal of a person with a
    valid email no other person has."""
    emails = Counter(e for p in persons if (e := primary_email(p)) is not None)
    owners: Counter[int] = Counter(d.person_id for d in deals if d.person_id is not None)
    persons_by_id = {p.id: p for p in persons}
    enter: list[tuple[int, str, Person, str]] = []
    leave: list[tuple[int, str, Person, str]] = []
    for deal in deals:
        owner = persons_by_id.get(deal.person_id) if deal.person_id is not None else None
        address = primary_email(owner) if owner is not None else None
        if owner is None or address is None or not valid_email(address):
            continue
        if emails[address] != 1 or owners[owner.id] != 1:
            continue
        if deal.id in inside:
            if address in in_list[deal_filter]:
                leave.append((deal.id, deal.title, owner, address))
        elif not deal.title.lower().startswith(DEAL_PREFIX.lower()):
            enter.append((deal.id, deal.title, owner, address))
    rng.shuffle(enter)
    rng.shuffle(leave)
    list_id = setup.lists[deal_filter]
    changes: list[Change] = []
    for kind, pool in (("deal_enter", enter), ("deal_leave", leave)):
        for _ in range(counts.get(kind, 0)):
            if not pool:
                raise RuntimeError(f"no deal left for a {kind}: lower --changes")
            deal_id, title, owner, address = pool.pop()
            path = f"/_sandbox/deals/{deal_id}"
            n = first_number + len(changes)
            if kind == "deal_enter":
                body = {"title": f"{DEAL_PREFIX} {title}"}
                change = Change(n, kind, deal_id, "PATCH", path, body, [], {deal_filter})
                change.expects = [Expect(list_id, address, True)]
                matches = contact_matches(store, address, owner)
                change.needs = {deal_filter: "add" if matches else "upsert"}
                change.listed = {deal_filter}
                change.lookup = deal_filter
            else:
                body = {"title": title.removeprefix(f"{DEAL_PREFIX} ")}
                change = Change(n, kind, deal_id, "PATCH", path, body, [], {deal_filter})
                change.expects = [Expect(list_id, address, False)]
                change.needs = {deal_filter: "remove"}
            changes.append(change)
    return changes


# --- watching Brevo and the service ------------------------------------------------------


Row = tuple[int, str, str | None, int | None]  # a filter_changes row: id, kind, action, entity


class Watcher:
    """A thread polling the fake Brevo (for each change's effect) and the service's
    ``filter_changes`` table (the routed changes) every ``interval`` seconds."""

    def __init__(self, store: Store, changes: list[Change], database: Path, interval: float):
        self.store = store
        self.changes = changes
        self.database = database
        self.interval = interval
        self.rows: dict[int, tuple[int, Row]] = {}  # every row seen: id -> (filter, row)
        self.polls = 0
        self.db_errors = 0
        self.wall_offset = time.time() - time.monotonic()
        for change in changes:
            change.expect_seen = [None] * len(change.expects)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Poll once more, then stop."""
        self._stop.set()
        self._thread.join(30)

    def unseen(self) -> int:
        """Changes made whose effect was not seen yet."""
        return sum(1 for c in self.changes if c.made_at is not None and c.seen_at is None)

    def _run(self) -> None:
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
        try:
            while True:
                stopping = self._stop.is_set()
                self._poll(db)
                if stopping:
                    return
                self._stop.wait(self.interval)
        finally:
            db.close()

    def _poll(self, db: sqlite3.Connection) -> None:
        now = time.monotonic()
        self.polls += 1
        with self.store.lock:
            self.store.settle()
            for change in self.changes:
                if change.made_at is None or change.seen_at is not None:
                    continue
                holding = [e.holds(self.store) for e in change.expects]
                for index, holds in enumerate(holding):
                    if holds and change.expect_seen[index] is None:
                        change.expect_seen[index] = now
                if all(holding):
                    change.seen_at = now
        try:
            rows = db.execute(
                "SELECT id, filter_id, kind, action, entity_id FROM filter_changes"
            ).fetchall()
        except sqlite3.Error:
            self.db_errors += 1
            return
        for r in rows:
            self.rows[int(r[0])] = (int(r[1]), (int(r[0]), str(r[2]), r[3], r[4]))


class UpsertLog:
    """ASGI wrapper around the fake Brevo noting the email of every single upsert
    (``POST /v3/contacts``), to tell which changes the service sent one call each."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.emails: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v3/contacts":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def tap() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    with contextlib.suppress(ValueError, AttributeError):
                        email = json.loads(b"".join(chunks)).get("email")
                        if isinstance(email, str):
                            self.emails.append(email.strip().lower())
            return message

        await self.app(scope, tap, send)


# --- the lower bound ---------------------------------------------------------------------


@dataclass
class Bound:
    """The fewest calls a correct engine needs, term by term."""

    lists: int = 0
    pages: int = 0
    lookups: int = 0
    adds: int = 0
    removals: int = 0
    upserts: int = 0
    imports: int = 0
    polls: int = 0
    read_back: int = 0
    renames: int = 0

    @property
    def pipedrive(self) -> int:
        """Pipedrive calls of the bound."""
        return self.lists + self.pages + self.lookups

    @property
    def brevo(self) -> int:
        """Brevo calls of the bound."""
        return (
            self.adds
            + self.removals
            + self.upserts
            + self.imports
            + self.polls
            + self.read_back
            + self.renames
        )

    @property
    def total(self) -> int:
        """All calls of the bound."""
        return self.pipedrive + self.brevo

    def merge(self, other: Bound) -> None:
        """Add ``other``'s terms to this one's."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def describe(self) -> list[str]:
        """The terms, Pipedrive then Brevo."""
        return [
            f"pipedrive {self.pipedrive} = {self.lists} list calls + {self.pages} further pages"
            f" + {self.lookups} person look-ups",
            f"brevo {self.brevo} = {self.adds} add-to-list + {self.removals} removals"
            f" + {self.upserts} single upserts + {self.imports} imports + {self.polls} process"
            f" polls + {self.read_back} read-back pages + {self.renames} for email renames"
            f" (read + rename)",
        ]


def window_bound(changes: list[Change], filter_id: int, has_listing: bool) -> Bound:
    """The bound of one window of one filter, whose changes are ``changes``."""
    need = Counter(c.needs[filter_id] for c in changes if filter_id in c.needs)
    listed = sum(1 for c in changes if filter_id in c.listed)
    lookups = sum(1 for c in changes if c.lookup == filter_id)
    bound = Bound()
    if has_listing:
        bound.lists = 1
        bound.pages = max(0, math.ceil(listed / PAGE_SIZE) - 1)
    bound.lookups = math.ceil(lookups / LOOKUP_IDS)
    bound.removals = math.ceil(need["remove"] / LIST_BATCH)
    bound.renames = 2 * need["rename"]
    adds, upserts = need["add"], need["upsert"]
    split = Bound(adds=math.ceil(adds / LIST_BATCH))
    if upserts <= ONE_BY_ONE_MAX:
        split.upserts = upserts
    else:
        split.imports, split.polls = 1, 1
        split.read_back = math.ceil(upserts / READ_BACK_PAGE)
    best = split
    if adds + upserts > ONE_BY_ONE_MAX:
        together = Bound(imports=1, polls=1, read_back=math.ceil((adds + upserts) / READ_BACK_PAGE))
        if together.brevo < split.brevo:
            best = together
    bound.merge(best)
    return bound


@dataclass
class Job:
    """One incremental job, as the worker logged it: one window of one filter."""

    job_id: int
    filter_id: int
    started: float  # monotonic, like every time here
    ended: float  # when it logged its changes applied
    changes: int  # routed changes it consumed
    rows: list[Row] | None = None  # those changes, when the rows seen add up
    carried: list[Change] = field(default_factory=list)  # changes whose effect it made

    @property
    def lists_members(self) -> bool:
        """Whether its window needs a Pipedrive listing: a change other than a deletion,
        or a relist (assumed when its rows are not known)."""
        if self.rows is None:
            return self.changes > 0
        return any(
            kind == "relist" or (kind == "member" and action != "delete")
            for _, kind, action, _ in self.rows
        )


def incremental_jobs(work: Path, wall_offset: float) -> list[Job]:
    """The incremental jobs the worker logged as applied, by id, with their times."""
    started: dict[int, float] = {}
    jobs: list[Job] = []
    for log in sorted(work.glob("worker-*.log")):
        for line in log.read_text("utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["ts"]).timestamp() - wall_offset
                if entry.get("message") == "job started":
                    started[int(entry["job_id"])] = at
                elif entry.get("message") == "incremental sync applied":
                    job_id, filter_id = int(entry["job_id"]), int(entry["filter_id"])
                    jobs.append(Job(job_id, filter_id, at, at, int(entry["changes"])))
    for job in jobs:
        job.started = started.get(job.job_id, job.ended)
    return sorted(jobs, key=lambda j: j.job_id)


def attach_rows(jobs: list[Job], watcher: Watcher) -> list[int]:
    """Give each job the routed rows it consumed; the filters where that failed.

    A job takes every routed change of its filter waiting when it starts, so a filter's
    rows in id order split into its jobs' logged change counts, job by job. A row no poll
    saw (routed and consumed between two polls) breaks the count for its filter.
    """
    rows_of: dict[int, list[Row]] = {}
    for row_id in sorted(watcher.rows):
        filter_id, row = watcher.rows[row_id]
        rows_of.setdefault(filter_id, []).append(row)
    failed = []
    for filter_id in sorted({j.filter_id for j in jobs} | set(rows_of)):
        rows = rows_of.get(filter_id, [])
        mine = [j for j in jobs if j.filter_id == filter_id]
        if sum(j.changes for j in mine) != len(rows):
            failed.append(filter_id)
            continue
        start = 0
        for job in mine:
            job.rows = rows[start : start + job.changes]
            start += job.changes
    return failed


def attribute(changes: list[Change], jobs: list[Job], setup: Setup, interval: float) -> int:
    """Give each change, for each filter whose list it changes, to the job of that filter
    that made its effect: the first one running when a poll first showed the effect (the
    effect came at most one poll interval earlier; 0.05 s more allowed for a slow poll).
    A change whose effect no poll showed goes to the first job ending after it was made.
    Returns how many (change, filter) pairs found no job at all.
    """
    filter_of = {list_id: f for f, list_id in setup.lists.items()}
    lost = 0
    for change in changes:
        for filter_id in change.needs:
            mine = [j for j in jobs if j.filter_id == filter_id]
            times = [
                change.expect_seen[i] if i < len(change.expect_seen) else None
                for i, e in enumerate(change.expects)
                if filter_of[e.list_id] == filter_id
            ]
            known = [t for t in times if t is not None]
            shown = max(known) if known and len(known) == len(times) else None
            job = pick_job(mine, shown, change.made_at, interval + 0.05)
            if job is None:
                lost += 1
            else:
                job.carried.append(change)
    return lost


def pick_job(jobs: list[Job], shown: float | None, made: float | None, slack: float) -> Job | None:
    """The job that made an effect first shown at ``shown`` (see ``attribute``)."""
    if not jobs:
        return None
    if shown is None:
        later = [j for j in jobs if made is not None and j.ended >= made]
        return later[0] if later else jobs[-1]
    for job in jobs:
        if job.started <= shown <= job.ended + slack:
            return job
    earlier = [j for j in jobs if j.started <= shown]
    return earlier[-1] if earlier else jobs[0]


def lower_bound(jobs: list[Job]) -> tuple[Bound, dict[int, Bound]]:
    """The whole bound and each filter's: the sum of its windows' bounds."""
    total = Bound()
    per_filter: dict[int, Bound] = {}
    for job in jobs:
        bound = window_bound(job.carried, job.filter_id, job.lists_members)
        per_filter.setdefault(job.filter_id, Bound()).merge(bound)
        total.merge(bound)
    return total, per_filter


# --- the run ------------------------------------------------------------------------------


def control(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    """A control API call; ``RuntimeError`` unless it succeeded."""
    response = client.request(method, path, json=body)
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class BenchService(full.Service):
    """The web process, the admin API and the one worker of the run."""

    def filters(self) -> dict[int, dict[str, Any]]:
        """``GET /api/filters`` by id."""
        body = full.check(self.http.get("/api/filters"), 200)
        return {int(f["id"]): f for f in body["filters"]}

    def start_sync(self, filter_id: int) -> int:
        """Request a full resync; its job id."""
        body = full.check(self.http.post(f"/api/filters/{filter_id}/sync"), 202)
        return int(body["job"]["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        """``GET /api/jobs/{id}``."""
        job: dict[str, Any] = full.check(self.http.get(f"/api/jobs/{job_id}"), 200)["job"]
        return job

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the service's database."""
        uri = f"file:{self.database}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            return db.execute(sql, params).fetchall()

    def count(self, sql: str, *params: Any) -> int:
        """The integer a counting query returns."""
        return int(self.query(sql, *params)[0][0])

    def quiet(self) -> bool:
        """No pending delivery, routed change or running job."""
        return (
            self.count("SELECT COUNT(*) FROM inbox WHERE status = 'pending'") == 0
            and self.count("SELECT COUNT(*) FROM filter_changes") == 0
            and self.count("SELECT COUNT(*) FROM sync_jobs WHERE status = 'processing'") == 0
        )


@dataclass
class Options:
    """The command line."""

    persons: int
    changes: int
    rate: float
    people_filters: int
    deal_filters: int
    window: float
    timeout: float
    poll: float
    seed: int
    membership_only: bool
    unlimited: bool


@dataclass
class Outcome:
    """Everything the report prints."""

    options: Options
    setup: Setup
    changes: list[Change]
    counts: dict[str, int]
    burst_seconds: float
    settled_after: float | None
    pipedrive: Calls
    brevo: Calls
    counted: dict[str, Calls]
    failures: Calls  # answers other than 2xx, by API, operation and status
    windows: list[Job]  # the incremental jobs, one window of one filter each
    rows_unknown: list[int]  # filters whose jobs' routed rows are not known
    lost: int  # (change, filter) effects no job was found for
    foreign_rows: int  # routed rows of no change of the burst
    bound: Bound
    per_filter: dict[int, Bound]
    jobs: list[dict[str, Any]]
    list_problems: dict[int, str]
    deliveries: list[dict[str, Any]]
    watcher_polls: int
    log_notes: list[str]
    upserted: list[str]  # emails of single upserts (POST /contacts) during the burst


class Bench:
    """The fakes, the service and one burst."""

    def __init__(self, options: Options, work: Path) -> None:
        self.options = options
        self.work = work
        started = time.perf_counter()
        if options.unlimited:
            pd_config = PipedriveFakeConfig(
                token=full.PIPEDRIVE_TOKEN,
                persons=options.persons,
                daily_token_budget=BIG,
                burst_limit=BIG,
            )
            brevo_config = BrevoFakeConfig(
                token=full.BREVO_KEY, contacts_rate=BIG, processes_per_hour=BIG, import_seconds=0.05
            )
        else:
            pd_config = PipedriveFakeConfig(token=full.PIPEDRIVE_TOKEN, persons=options.persons)
            brevo_config = BrevoFakeConfig(token=full.BREVO_KEY)
        self.pd_app = create_pipedrive(pd_config)
        self.brevo_app = create_brevo(brevo_config)
        self.state: PipedriveState = self.pd_app.state.fake
        brevo_fake: BrevoFake = self.brevo_app.state.fake
        self.brevo_fake = brevo_fake
        self.pipedrive = ThreadedServer(self.pd_app).start()
        self.upserts = UpsertLog(self.brevo_app)
        self.brevo = ThreadedServer(self.upserts).start()
        self.pd_control = httpx.Client(base_url=self.pipedrive.url, timeout=60.0)
        self.brevo_control = httpx.Client(base_url=self.brevo.url, timeout=60.0)
        self.service: BenchService | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        limits = (
            "unlimited (as bench_full_resync.py: no burst, rate or budget limit; imports"
            " take 0.05 s)"
            if options.unlimited
            else (
                f"realistic (the fakes' defaults): pipedrive {pd_config.burst_limit} requests"
                f" per 2 s, {pd_config.daily_token_budget:,} tokens a day; brevo"
                f" {brevo_config.contacts_rate} contacts requests/s,"
                f" {brevo_config.processes_per_hour} other requests/h, imports take"
                f" {brevo_config.import_seconds:g} s"
            )
        )
        print(
            f"[setup] fakes seeded and serving in {time.perf_counter() - started:.1f} s:"
            f" {options.persons} persons; limits {limits}",
            flush=True,
        )

    def close(self) -> None:
        """Stop the worker, the web process and the fakes."""
        if self.worker is not None:
            full.stop(self.worker)
        if self.service is not None:
            self.service.close()
        self.pd_control.close()
        self.brevo_control.close()
        self.pipedrive.stop()
        self.brevo.stop()

    # --- setup -----------------------------------------------------------------------

    def make_filters(self) -> tuple[dict[int, str], int | None]:
        """The people filters (by tier) and the deal filter, with its first deals."""
        tiers: dict[int, str] = {}
        for tier in TIERS[: self.options.people_filters]:
            body = {
                "name": f"Bench tier {tier}",
                "type": "people",
                "conditions": groups([condition("person", TIER_KEY, "=", tier)]),
            }
            tiers[int(control(self.pd_control, "POST", "/_sandbox/filters", body)["id"])] = tier
        deal_filter = None
        if self.options.deal_filters:
            body = {
                "name": "Bench deals",
                "type": "deals",
                "conditions": groups([condition("deal", "title", "LIKE '$%'", DEAL_PREFIX)]),
            }
            deal_filter = int(control(self.pd_control, "POST", "/_sandbox/filters", body)["id"])
            wanted = max(INITIAL_DEALS, 2 * self.options.changes * MIX["deal_leave"])
            with self.state.lock:
                deals = self.state.data.live_deals()
            rng = random.Random(self.options.seed)
            owners = Counter(d.person_id for d in deals)
            candidates = [d for d in deals if d.person_id is not None and owners[d.person_id] == 1]
            for deal in rng.sample(candidates, min(len(candidates), int(wanted))):
                body = {"title": f"{DEAL_PREFIX} {deal.title}"}
                control(self.pd_control, "PATCH", f"/_sandbox/deals/{deal.id}", body)
        return tiers, deal_filter

    def start_service(self) -> BenchService:
        """Web and worker, logged in, once the worker's first duties are done."""
        env = full.service_env(self.work, self.pipedrive.url, self.brevo.url)
        env["SYNC_COALESCE_SECONDS"] = f"{self.options.window:g}"
        service = BenchService(env, self.work)
        self.service = service
        self.worker = service.start_worker("incremental")
        self.wait_quiet()
        return service

    def wait_quiet(self, quiet: float = 2.0, timeout: float = 120.0) -> None:
        """Wait until neither fake has answered an API call for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last = (full.pipedrive_calls(self.pd_control), full.brevo_calls(self.brevo_control))
        still_since = time.monotonic()
        while time.monotonic() - still_since < quiet:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fakes were still being called after {timeout:.0f} s")
            time.sleep(0.2)
            now = (full.pipedrive_calls(self.pd_control), full.brevo_calls(self.brevo_control))
            if now != last:
                last, still_since = now, time.monotonic()

    def link(self, service: BenchService, tiers: dict[int, str], deal_filter: int | None) -> Setup:
        """Refresh, subscribe the webhook, fully sync every filter; the linked setup."""
        started = time.perf_counter()
        service.refresh_filters()
        env = service.env
        response = httpx.post(
            self.pipedrive.url + "/v1/webhooks",
            headers={"x-api-token": full.PIPEDRIVE_TOKEN},
            json={
                "subscription_url": f"http://127.0.0.1:{env['PORT']}/webhooks/pipedrive",
                "event_action": "*",
                "event_object": "*",
                "name": "bench_incremental",
                "version": "2.0",
                "http_auth_user": env["WEBHOOK_USER"],
                "http_auth_password": env["WEBHOOK_PASSWORD"],
            },
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /v1/webhooks: {response.status_code} {response.text}")
        ids = [*tiers, *([deal_filter] if deal_filter is not None else [])]
        jobs = {f: service.start_sync(f) for f in ids}
        for filter_id, job_id in jobs.items():

            def finished(job_id: int = job_id) -> dict[str, Any] | None:
                job = service.job(job_id)
                return job if job["status"] != "processing" else None

            job = full.wait_until(f"the first sync of filter {filter_id}", finished, 600, 0.2)
            if job["status"] != "completed":
                raise RuntimeError(f"the first sync of filter {filter_id}: {job}")
        filters = service.filters()
        lists = {f: int(filters[f]["brevo_list_id"]) for f in ids}
        setup = Setup(tiers, deal_filter, lists)
        sizes = []
        for f in ids:
            with self.state.lock:
                size = len(self.state.members(f).ids)
            sizes.append(f"{f} {setup.name(f)} ({size} members, list {lists[f]})")
        print(
            f"[setup] linked in {time.perf_counter() - started:.1f} s: " + "; ".join(sizes),
            flush=True,
        )
        return setup

    # --- the burst -------------------------------------------------------------------

    def run(self) -> Outcome:
        """Set up, burst, wait until settled, and gather the figures."""
        options = self.options
        tiers, deal_filter = self.make_filters()
        service = self.start_service()
        setup = self.link(service, tiers, deal_filter)
        self.wait_quiet()
        kinds = ["move"] if options.membership_only else list(MIX)
        if len(setup.tiers) < 2:
            kinds = [k for k in kinds if k != "move"] or ["join", "leave"]
        if setup.deal_filter is None:
            kinds = [k for k in kinds if k not in DEAL_KINDS]
        counts = kind_counts(options.changes, kinds, MIX)
        rng = random.Random(options.seed)
        changes = plan_burst(self.state, self.brevo_fake.store, setup, counts, rng)

        pd_before = full.pipedrive_calls(self.pd_control)
        brevo_before = full.brevo_calls(self.brevo_control)
        counted_before = full.ledger_calls(service.database)
        failures_before = failed_calls(service)
        last_job = service.count("SELECT COALESCE(MAX(id), 0) FROM sync_jobs")
        upserts_before = len(self.upserts.emails)
        deliveries_before = len(
            control(self.pd_control, "GET", "/_sandbox/deliveries")["deliveries"]
        )
        watcher = Watcher(self.brevo_fake.store, changes, service.database, options.poll)
        watcher.start()
        try:
            burst_seconds = self.burst(changes)
            settled_after = self.settle(service, setup, changes, watcher, deliveries_before)
        finally:
            watcher.stop()
        pd_used = full.difference(full.pipedrive_calls(self.pd_control), pd_before)
        brevo_used = full.difference(full.brevo_calls(self.brevo_control), brevo_before)
        counted_after = full.ledger_calls(service.database)
        failures = full.difference(failed_calls(service), failures_before)
        counted = {
            api: full.difference(
                counted_after.get(api, Counter()), counted_before.get(api, Counter())
            )
            for api in ("pipedrive", "brevo")
        }
        windows = incremental_jobs(self.work, watcher.wall_offset)
        rows_unknown = attach_rows(windows, watcher)
        lost = attribute(changes, windows, setup, options.poll)
        bound, per_filter = lower_bound(windows)
        touching = {(f, c.entity_id) for c in changes for f in c.touches}
        foreign = sum(
            1
            for job in windows
            for _id, _kind, _action, entity in job.rows or []
            if (job.filter_id, entity) not in touching
        )
        jobs = [
            service.job(int(r[0]))
            for r in service.query("SELECT id FROM sync_jobs WHERE id > ? ORDER BY id", last_job)
        ]
        deliveries = control(self.pd_control, "GET", "/_sandbox/deliveries")["deliveries"]
        return Outcome(
            options=options,
            setup=setup,
            changes=changes,
            counts=counts,
            burst_seconds=burst_seconds,
            settled_after=settled_after,
            pipedrive=pd_used,
            brevo=brevo_used,
            counted=counted,
            failures=failures,
            windows=windows,
            rows_unknown=rows_unknown,
            lost=lost,
            foreign_rows=foreign,
            bound=bound,
            per_filter=per_filter,
            jobs=jobs,
            list_problems=self.list_problems(setup),
            deliveries=deliveries[deliveries_before:],
            watcher_polls=watcher.polls,
            log_notes=log_notes(self.work),
            upserted=self.upserts.emails[upserts_before:],
        )

    def burst(self, changes: list[Change]) -> float:
        """Make the changes at the rate asked (each call from a small pool of threads at
        its due time, so one slow answer does not delay the next); the seconds it took."""
        interval = 1.0 / self.options.rate

        def make(change: Change) -> None:
            control(self.pd_control, change.method, change.path, change.body)
            change.made_at = time.monotonic()

        started = time.monotonic()
        with ThreadPoolExecutor(SENDERS, thread_name_prefix="sender") as pool:
            sent = []
            for change in changes:
                delay = started + change.number * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent.append(pool.submit(make, change))
            for future in sent:
                future.result()
        seconds = time.monotonic() - started
        print(
            f"[burst] {len(changes)} changes in {seconds:.2f} s"
            f" ({len(changes) / seconds if seconds else math.inf:.1f}/s)",
            flush=True,
        )
        return seconds

    def settle(
        self,
        service: BenchService,
        setup: Setup,
        changes: list[Change],
        watcher: Watcher,
        deliveries_before: int,
    ) -> float | None:
        """Wait until everything settled; seconds from the first change (None: timed out)."""
        first = min(c.made_at for c in changes if c.made_at is not None)
        deadline = time.monotonic() + self.options.timeout
        while time.monotonic() < deadline:
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {self.work}")
            if (
                watcher.unseen() == 0
                and self.acknowledged(deliveries_before) >= len(changes)
                and service.quiet()
                and not self.list_problems(setup)
            ):
                return time.monotonic() - first
            time.sleep(0.2)
        return None

    def acknowledged(self, skip: int) -> int:
        """Distinct events the service answered with a 2xx since the burst began."""
        entries = control(self.pd_control, "GET", "/_sandbox/deliveries")["deliveries"][skip:]
        return len({d["event_id"] for d in entries if d["status"] and 200 <= d["status"] < 300})

    def list_problems(self, setup: Setup) -> dict[int, str]:
        """Filters whose list differs from the fake's evaluation: how."""
        problems: dict[int, str] = {}
        store = self.brevo_fake.store
        for filter_id, list_id in setup.lists.items():
            with self.state.lock:
                wanted = {e for e in self.state.members(filter_id).emails if valid_email(e)}
            with store.lock:
                store.settle()
                held = {store.contacts[i].email for i in store.lists[list_id].members}
            if held != wanted:
                problems[filter_id] = f"{len(wanted - held)} missing, {len(held - wanted)} extra"
        return problems


def failed_calls(service: BenchService) -> Calls:
    """The service's calls answered other than 2xx so far (its ``api_calls`` table)."""
    rows = service.query(
        "SELECT api, method, path, status, SUM(calls) FROM api_calls"
        " WHERE status NOT BETWEEN 200 AND 299 GROUP BY api, method, path, status"
    )
    return Counter({f"{r[0]} {r[1]} {r[2]} -> {r[3]}": int(r[4]) for r in rows})


def log_notes(work: Path) -> list[str]:
    """Warnings and errors the service logged, counted by message."""
    seen: Counter[str] = Counter()
    for log in sorted(work.glob("*.log")):
        for line in log.read_text("utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    continue
                level = str(entry.get("level", "")).upper()
                if level in ("WARNING", "ERROR", "CRITICAL"):
                    seen[f"{log.stem}: {level} {entry.get('message')}"] += 1
    return [f"{text} (x{n})" for text, n in seen.most_common()]


# --- report ------------------------------------------------------------------------------


def report(outcome: Outcome) -> list[tuple[bool, str]]:
    """Print the figures; return the verdicts."""
    o = outcome
    setup = o.setup
    k = len(o.changes)
    latencies = [c.latency for c in o.changes if c.latency is not None]
    pd_total = sum(o.pipedrive.values())
    brevo_total = sum(o.brevo.values())
    calls = pd_total + brevo_total
    naive = 2 * k
    incremental = [j for j in o.jobs if j.get("kind") == "incremental"]
    other_jobs = [j for j in o.jobs if j.get("kind") != "incremental"]
    failed = [j for j in o.jobs if j.get("status") != "completed"]

    def row(name: str, value: str) -> None:
        print(f"{name:<28} {value}")

    print()
    row("K (changes)", f"{k}: " + ", ".join(f"{n} {kind}" for kind, n in o.counts.items()))
    row(
        "burst",
        f"{o.burst_seconds:.2f} s ({k / o.burst_seconds if o.burst_seconds else 0:.1f}/s asked"
        f" {o.options.rate:g}/s); coalesce window {o.options.window:g} s",
    )
    windows_of = Counter(j.filter_id for j in o.windows)
    row(
        "windows per filter",
        ", ".join(f"{setup.name(f)} {windows_of[f]}" for f in setup.filters)
        + f" = {len(o.windows)} incremental job{'' if len(o.windows) == 1 else 's'}"
        + (f"; routed rows of no change {o.foreign_rows}" if o.foreign_rows else "")
        + (f"; effects with no job {o.lost}" if o.lost else "")
        + (
            "; rows unknown (a row no poll saw) for "
            + ", ".join(setup.name(f) for f in o.rows_unknown)
            if o.rows_unknown
            else ""
        ),
    )
    row("pipedrive calls", f"{pd_total}: {full.calls_text(o.pipedrive)}")
    row("brevo calls", f"{brevo_total}: {full.calls_text(o.brevo)}")
    mismatches = [
        f"{api} fake {sum(fake.values())} vs api_calls {sum(o.counted[api].values())}"
        for api, fake in (("pipedrive", o.pipedrive), ("brevo", o.brevo))
        if fake != o.counted[api]
    ]
    if mismatches:
        row("cross-check", "DIFFERS: " + "; ".join(mismatches))
        for api in ("pipedrive", "brevo"):
            row(f"  api_calls {api}", full.calls_text(o.counted[api]))
    else:
        row("cross-check", "the service's api_calls table agrees with both fakes")
    row("answers other than 2xx", full.calls_text(o.failures))
    row("lower bound", f"{o.bound.total}")
    for line in o.bound.describe():
        row("", line)
    first = min((c.made_at for c in o.changes if c.made_at is not None), default=0.0)
    for filter_id in setup.filters:
        bound = o.per_filter.get(filter_id, Bound())
        row(
            "",
            f"{setup.name(filter_id)} (filter {filter_id}, list {setup.lists[filter_id]}):"
            f" pipedrive {bound.pipedrive}, brevo {bound.brevo}"
            f" over {windows_of[filter_id]} window{'' if windows_of[filter_id] == 1 else 's'}",
        )
        for number, job in enumerate((j for j in o.windows if j.filter_id == filter_id), 1):
            need = Counter(c.needs[filter_id] for c in job.carried)
            row(
                "",
                f"  window {number} (job {job.job_id}, {job.started - first:.1f}-"
                f"{job.ended - first:.1f} s after the first change): {job.changes} routed"
                f" changes{'' if job.lists_members else ' (deletions only)'}; effects made "
                + (", ".join(f"{n} {kind}" for kind, n in sorted(need.items())) or "none"),
            )
    row("single upserts", upserts_text(o.changes, o.upserted))
    row("naive (2 x K)", f"{naive}")
    ratio = calls / o.bound.total if o.bound.total else math.inf
    row("calls / bound", f"{calls} / {o.bound.total} = {ratio:.2f}")
    row("calls / naive", f"{calls} / {naive} = {calls / naive if naive else math.inf:.3f}")
    if latencies:
        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        row(
            "latency change -> brevo",
            f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s"
            f" ({len(latencies)} of {k} changes seen; {o.watcher_polls} polls)",
        )
        by_kind = {
            kind: [c.latency for c in o.changes if c.kind == kind and c.latency is not None]
            for kind in o.counts
        }
        row(
            "  p50 / max by kind",
            ", ".join(
                f"{kind} {percentile(v, 0.5):.1f}/{max(v):.1f}" for kind, v in by_kind.items() if v
            ),
        )
    else:
        p95 = math.inf
        row("latency change -> brevo", f"no change seen ({k} made)")
    paced = o.bound.brevo - o.bound.polls
    pace = BrevoLimits().contacts_per_second
    row(
        "  brevo pacing floor",
        f"the bound's {paced} calls on /contacts/* at the service's {pace:g}/s take"
        f" {paced / pace:.1f} s: no engine applies the whole burst sooner",
    )
    converged = o.settled_after is not None and not o.list_problems and not failed
    row(
        "converged",
        (
            f"yes, {o.settled_after:.1f} s after the first change"
            if o.settled_after is not None
            else f"NO within {o.options.timeout:g} s"
        )
        + (
            "; lists differ: "
            + ", ".join(f"{setup.name(f)} {p}" for f, p in o.list_problems.items())
            if o.list_problems
            else "; every list equals its filter"
        ),
    )
    statuses = Counter(str(d["status"]) for d in o.deliveries)
    retries = sum(1 for d in o.deliveries if d["attempt"] > 1)
    row(
        "webhook deliveries",
        f"{len(o.deliveries)} attempts, by status {dict(statuses)}, {retries} retries",
    )
    job_statuses = Counter(f"{j.get('kind')} {j.get('status')}" for j in o.jobs)
    row("jobs", ", ".join(f"{n} {s}" for s, n in job_statuses.items()) or "none")
    for shown in {j["id"]: j for j in failed + other_jobs}.values():
        row(
            "",
            f"job {shown['id']} {shown.get('kind')} {shown.get('status')}:"
            f" {shown.get('error_message')}",
        )
    notes = {str(j.get("note")) for j in incremental if j.get("note")}
    for note in notes:
        row("  job note", note)
    for note in o.log_notes:
        row("  log", note)

    verdicts: list[tuple[bool, str]] = [
        (converged, "converged: every list equals its filter, every change seen, no job failed"),
        (
            ratio <= CALLS_RATIO,
            f"calls {calls} <= {CALLS_RATIO} x lower bound {o.bound.total}"
            f" ({CALLS_RATIO * o.bound.total:.0f}): ratio {ratio:.2f}",
        ),
    ]
    if o.options.membership_only:
        verdicts += done_when(o)
    return verdicts


def upserts_text(changes: list[Change], upserted: list[str]) -> str:
    """The single upserts by the kind of change that caused them, and how many were of a
    contact Brevo already held with the right attributes (one add-to-list call per 150
    would have done)."""
    by_email = {e.email: c for c in changes for e in c.expects if e.present}
    kinds: Counter[str] = Counter()
    needless = 0
    for email in upserted:
        change = by_email.get(email)
        kinds[change.kind if change is not None else "no change of the burst"] += 1
        if change is not None and "add" in change.needs.values():
            needless += 1
    by_kind = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
    return (
        f"{len(upserted)} POST /contacts ({by_kind or 'none'}); {needless} of them for a"
        " contact Brevo already held as it should (only the list was missing)"
    )


def done_when(o: Outcome) -> list[tuple[bool, str]]:
    """The issue's criteria for a burst of membership changes, on sums over windows."""
    touched = len(o.windows)
    allowed_pd = 2 * touched + o.bound.pages
    pd_total = sum(o.pipedrive.values())
    allowed_brevo = sum(math.ceil(len(job.carried) / LIST_BATCH) for job in o.windows)
    out = [
        (
            pd_total <= allowed_pd,
            f"done-when: pipedrive calls {pd_total} <= 2 x {touched} touched filter windows"
            f" + {o.bound.pages} pages = {allowed_pd}",
        )
    ]
    for operation, n in o.brevo.most_common():
        out.append(
            (
                n <= allowed_brevo,
                f"done-when: brevo {operation} {n} <= sum of ceil(changes/150) per list per"
                f" window = {allowed_brevo}",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every verdict passes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--persons", type=int, default=5000, help="persons in the fake")
    parser.add_argument("--changes", type=int, default=300, help="K, changes in the burst")
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--people-filters", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--deal-filters", type=int, default=1, choices=(0, 1))
    parser.add_argument("--window", type=float, default=2.0, help="SYNC_COALESCE_SECONDS")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to settle")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls")
    parser.add_argument("--seed", type=int, default=5, help="picks the changed records")
    parser.add_argument("--membership-only", action="store_true", help="moves only")
    parser.add_argument("--unlimited", action="store_true", help="lift the fakes' limits")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.changes < 1 or args.rate <= 0 or args.persons < 100:
        parser.error("--changes and --rate must be positive, --persons at least 100")
    options = Options(
        persons=args.persons,
        changes=args.changes,
        rate=args.rate,
        people_filters=args.people_filters,
        deal_filters=args.deal_filters,
        window=args.window,
        timeout=args.timeout,
        poll=args.poll,
        seed=args.seed,
        membership_only=args.membership_only,
        unlimited=args.unlimited,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    keep = args.keep
    verdicts: list[tuple[bool, str]] = []
    try:
        bench = Bench(options, work)
        try:
            outcome = bench.run()
        finally:
            bench.close()
        verdicts = report(outcome)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        verdicts = [(False, f"the run broke off: {exc}")]
    finally:
        if not all(ok for ok, _ in verdicts):
            keep = True
        if keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for ok, text in verdicts or [(False, "nothing ran")]:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if verdicts and all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
