"""Issue 6, "Crash loop" (matrix R3 and R7): twenty rounds of SIGKILL at a random moment.

One real ``pbsync web`` and one real ``pbsync worker`` (``tests/integration/conftest.py``)
run against the session's fakes for the whole test, with four linked filters (three people
filters by "Customer tier", one deal filter by title) holding a few tens of persons. Each
round, from a seed of its own (printed, and named in every assertion message):

- a webhook flood: joins, tier moves, renames, email changes, deletions, merges and deal
  changes made through the fake Pipedrive's control API at a fixed pace; the fake sends a
  real v2 delivery of each to the service (a webhook registered for the round);
- a full resync requested through the admin API at a random point of the flood (every
  linked filter, or one), running beside the incremental jobs;
- at a random moment of the flood, SIGKILL of the web or of the worker (seeded choice),
  and a restart of that process alone. While the web is down the flood makes a few more
  changes (``DOWN_CHANGES``), whose deliveries are refused, then waits: Pipedrive bans a
  webhook after ten failed first attempts and drops its events (matrix R14, the catch-up
  resync's subject, not this one's). The fake retries the refused deliveries and those cut
  off by the kill, on a schedule shortened to a tenth (after 0.3, 3.3 and 18.3 s) so that
  the restart fits in it.

Then the round waits (bounded) until every delivery of the round was acknowledged or
given up by the fake, and the service is quiet (no pending delivery, no routed change,
no job processing), and asserts:

- every delivery the fake saw acknowledged with a 2xx, over all rounds so far, has its
  inbox row (``v2:<meta.id>``), ``processed`` or ``ignored``;
- each linked list equals its filter's valid emails as the fake evaluates it (not as the
  service's ledger says);
- no filter is locked: no job ``processing`` (the row is the lock), and every failed job
  failed because its worker was killed;
- ``PRAGMA integrity_check`` is ``ok`` on the database and on the queue file.

Should the fake give up a delivery (a restart slower than its retries), that change never
reached the service and only a resync can bring it: the round says so, and runs one
before checking the lists. ``CRASH_LOOP_SEED`` repeats a run (the first line printed).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.brevo.model import valid_email as brevo_accepts
from sandbox.contract import ContractLedger
from sandbox.pipedrive.events import ChangeEvent
from sandbox.pipedrive.fields import TIER_KEY
from sandbox.recording import Exchange
from tests.conftest import Started, healthy, start_pbsync
from tests.fake_control import Brevo, Pipedrive
from tests.fakes import RunningFake
from tests.integration.conftest import Service, StartService
from workers.sync.sweeper import WORKER_STOPPED

pytestmark = [pytest.mark.integration, pytest.mark.long]

# The integration fixture that starts the real web and worker (its conftest does not reach
# this directory).

ROUNDS = 20
TIERS = ("CrashA", "CrashB", "CrashC")
DEAL_PREFIX = "Crash"
PERSONS = 30  # at the start, spread over the tiers and no tier
DEALS = 8
FLOOD_CHANGES = 14  # changes per round
FLOOD_RATE = 8.0  # changes per second
DOWN_CHANGES = 4  # changes made while the web is down (with those cut off, under ten)
HOOK_USER = "pipedrive-crash"
HOOK_PASSWORD = "crash-loop-hook-secret"
SERVICE_ENV = {
    "WEBHOOK_USER": HOOK_USER,
    "WEBHOOK_PASSWORD": HOOK_PASSWORD,
    "SYNC_COALESCE_SECONDS": "0.5",
    "JOB_STALE_SECONDS": "3",
}
RETRY_SCALE = 0.1  # the fake retries a delivery after 0.3, 3.3 and 18.3 s
SETTLE_SECONDS = 60.0  # a round's bound: the last retry at 18.3 s, a stale job at 3 s, a resync
START_SECONDS = 30.0
# Changes of a round by kind, drawn with these weights.
KINDS = {
    "join": 3,
    "move": 4,
    "rename": 2,
    "email": 2,
    "delete": 1,
    "merge": 1,
    "deal_title": 2,
    "deal_new": 1,
}
MIN_PERSONS = 12  # deletions and merges keep at least this many persons


# --- the data the rounds change ----------------------------------------------------------


@dataclass
class World:
    """What the test knows of the fake's data: the persons and deals it made and changes."""

    persons: dict[int, str | None] = field(default_factory=dict)  # person -> tier
    titles: dict[int, str] = field(default_factory=dict)  # deal -> title
    made: int = 0  # emails handed out: each address is used once

    def email(self) -> str:
        """A fresh address no person ever had."""
        self.made += 1
        return f"p{self.made}@crash.example.com"


def seed_world(control: httpx.Client, rng: random.Random) -> World:
    """The starting persons (each with a fresh email, some in no tier) and deals."""
    world = World()
    for n in range(PERSONS):
        tier = rng.choice([*TIERS, None])
        person_id = _create_person(control, world, f"Start{n}", tier)
        world.persons[person_id] = tier
    for n in range(DEALS):
        person_id = rng.choice(sorted(world.persons))
        title = f"{DEAL_PREFIX} {n}" if n % 2 == 0 else f"Cold {n}"
        _create_deal(control, world, person_id, title)
    return world


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 400, f"{response.request.url}: {response.text}"
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def _create_person(control: httpx.Client, world: World, name: str, tier: str | None) -> int:
    body: dict[str, Any] = {"first_name": name, "last_name": "Crash", "emails": [world.email()]}
    if tier is not None:
        body["custom_fields"] = {TIER_KEY: tier}
    return int(_ok(control.post("/_sandbox/persons", json=body))["id"])


def _create_deal(control: httpx.Client, world: World, person_id: int, title: str) -> int:
    body = {"title": title, "person_id": person_id, "status": "open"}
    deal_id = int(_ok(control.post("/_sandbox/deals", json=body))["id"])
    world.titles[deal_id] = title
    return deal_id


@dataclass(frozen=True)
class Change:
    """One change of a flood: a kind and what the round's rng picked for it."""

    kind: str
    pick: int  # picks the record (a person or a deal), modulo what exists then
    tier: str | None = None  # the tier of a join or a move


def plan_flood(rng: random.Random, count: int) -> list[Change]:
    """``count`` changes drawn from ``KINDS``."""
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=count)
    return [Change(k, rng.randrange(10**6), rng.choice([*TIERS, None])) for k in kinds]


def apply_change(control: httpx.Client, world: World, change: Change, label: str) -> str:
    """Make ``change`` in the fake (which delivers its webhook); a short description."""
    persons = sorted(world.persons)
    person = persons[change.pick % len(persons)]
    kind = change.kind
    if kind in ("delete", "merge") and len(persons) <= MIN_PERSONS:
        kind = "join"
    if kind == "join":
        person = _create_person(control, world, f"Join{label}", change.tier)
        world.persons[person] = change.tier
    elif kind == "move":
        tier = change.tier if change.tier != world.persons[person] else None
        _ok(control.patch(f"/_sandbox/persons/{person}", json={"custom_fields": {TIER_KEY: tier}}))
        world.persons[person] = tier
    elif kind == "rename":
        _ok(control.patch(f"/_sandbox/persons/{person}", json={"first_name": f"Re{label}"}))
    elif kind == "email":
        _ok(control.patch(f"/_sandbox/persons/{person}", json={"emails": [world.email()]}))
    elif kind == "delete":
        _ok(control.delete(f"/_sandbox/persons/{person}"))
        del world.persons[person]
    elif kind == "merge":
        # Into the next person: its emails and deals join that one, which keeps its tier.
        into = persons[(change.pick + 1) % len(persons)]
        _ok(control.post(f"/_sandbox/persons/{person}/merge", json={"into": into}))
        del world.persons[person]
        return f"{kind} {person} into {into}"
    elif kind == "deal_title":
        deal = sorted(world.titles)[change.pick % len(world.titles)]
        listed = world.titles[deal].startswith(DEAL_PREFIX)
        title = f"Cold {label}" if listed else f"{DEAL_PREFIX} {label}"
        _ok(control.patch(f"/_sandbox/deals/{deal}", json={"title": title}))
        world.titles[deal] = title
        return f"{kind} {deal}"
    else:  # deal_new
        deal = _create_deal(control, world, person, f"{DEAL_PREFIX} {label}")
        return f"{kind} {deal} of {person}"
    return f"{kind} {person}"


# --- the service's processes ---------------------------------------------------------------


def restart(service: Service, started: Started, role: str) -> float:
    """SIGKILL the service's ``role`` process, start a new one, and wait until it is up
    (the web answers ``/healthz``); the seconds that took."""
    killed_at = time.monotonic()
    if role == "worker":
        assert service.stop_worker(signal.SIGKILL) == -signal.SIGKILL
        started.processes.append(service.start_worker())
        return time.monotonic() - killed_at
    (web,) = [p for p in service.processes if isinstance(p.args, list) and p.args[-1] == "web"]
    web.send_signal(signal.SIGKILL)
    assert web.wait(10) == -signal.SIGKILL
    service.processes.remove(web)
    web = start_pbsync("web", service.env, service.tmp_path / "web.log")
    service.processes.append(web)
    started.processes.append(web)
    deadline = time.monotonic() + START_SECONDS
    while not healthy(service.env["PORT"]):
        service.check_alive()
        assert time.monotonic() < deadline, f"the web not healthy again\n{service.logs()}"
        time.sleep(0.05)
    return time.monotonic() - killed_at


def integrity(path: Path) -> list[tuple[Any, ...]]:
    """``PRAGMA integrity_check`` of the SQLite file at ``path``."""
    connection = sqlite3.connect(path, timeout=10)
    try:
        return connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()


def backlog(service: Service) -> tuple[int, int, int]:
    """(pending deliveries, routed changes, jobs processing), read in one snapshot."""
    row = service.query(
        "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending'), "
        "(SELECT COUNT(*) FROM filter_changes), "
        "(SELECT COUNT(*) FROM sync_jobs WHERE status = 'processing')"
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


# --- the fake's webhook deliveries ---------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Where the deliveries of one webhook stand: events acknowledged with a 2xx, events
    the fake gave up on, events still to be (re)tried, and events tried more than once."""

    acknowledged: set[str]
    given_up: set[str]
    waiting: int
    retried: int


def delivery_outcome(deliveries: list[dict[str, Any]], webhook_id: int, published: int) -> Outcome:
    """The outcome of ``webhook_id``'s deliveries, ``published`` events having been made
    since it was registered (each is delivered to it once, with retries)."""
    attempts: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        if d["webhook_id"] == webhook_id:
            attempts.setdefault(d["event_id"], []).append(d)
    acknowledged, given_up = set(), set()
    for event_id, tries in attempts.items():
        if any(t["status"] is not None and 200 <= t["status"] < 300 for t in tries):
            acknowledged.add(event_id)
        elif max(t["attempt"] for t in tries) == 4 or any(
            t["status"] is None and t["error"] and "webhook" in t["error"] for t in tries
        ):
            given_up.add(event_id)  # the fourth attempt failed, or the webhook was banned
    waiting = published - len(acknowledged) - len(given_up)
    retried = sum(1 for tries in attempts.values() if len(tries) > 1)
    return Outcome(acknowledged, given_up, waiting, retried)


def acknowledged_everywhere(deliveries: list[dict[str, Any]]) -> set[str]:
    """Event ids of every delivery acknowledged with a 2xx, of any webhook."""
    return {
        d["event_id"] for d in deliveries if d["status"] is not None and 200 <= d["status"] < 300
    }


# --- fixtures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """A write call the service made to Brevo, for the message of a failed list check."""

    at: float
    method: str
    path: str
    status: int
    body: str


@pytest.fixture
def brevo_writes(monkeypatch: pytest.MonkeyPatch) -> list[Write]:
    """The Brevo write calls of the test, recorded by tapping the contract ledger every
    fake reports its exchanges to."""
    writes: list[Write] = []
    original = ContractLedger.__call__

    def tap(self: ContractLedger, exchange: Exchange) -> None:
        if exchange.path.startswith("/v3/") and exchange.method != "GET":
            body = exchange.request_body.decode("utf-8", "replace")
            writes.append(Write(time.time(), exchange.method, exchange.path, exchange.status, body))
        original(self, exchange)

    monkeypatch.setattr(ContractLedger, "__call__", tap)
    return writes


# --- the loop ------------------------------------------------------------------------------


@dataclass
class Loop:
    """The service, the fakes and what the rounds share."""

    service: Service
    started: Started
    pipedrive: Pipedrive
    brevo: Brevo
    published: list[ChangeEvent]
    world: World
    lists: dict[int, int]  # filter -> Brevo list
    token: str
    writes: list[Write]
    webhook_id: int | None = None
    timings: list[float] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    healed: list[int] = field(default_factory=list)
    figures: Callable[[str], None] = print  # where each round's outcome is recorded

    def subscribe(self) -> int:
        """A webhook of its own for the round (its ban counter starts at 0), the last
        round's removed (it has nothing left to send: that round waited for it)."""
        if self.webhook_id is not None:
            response = httpx.delete(
                f"{self.pipedrive.fake.url}/v1/webhooks/{self.webhook_id}",
                headers={"x-api-token": self.token},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        self.webhook_id = self.pipedrive.add_webhook(
            self.service.base + "/webhooks/pipedrive",
            version="2.0",
            user=HOOK_USER,
            password=HOOK_PASSWORD,
            token=self.token,
        )
        return self.webhook_id

    def wait(self, what: Callable[[], str | None], timeout: float, tag: str) -> None:
        """Poll ``what`` (None: done; else what is still missing) until done."""
        deadline = time.monotonic() + timeout
        missing = what()
        while missing is not None:
            assert time.monotonic() < deadline, (
                f"{tag}: {missing} after {timeout} s\n{self.service.logs()}"
            )
            self.service.check_alive()
            time.sleep(0.1)
            missing = what()

    def round(self, number: int, seed: int) -> None:
        """One round: flood, resync, kill, restart, settle, check."""
        tag = f"round {number} seed {seed}"
        rng = random.Random(seed)
        target = rng.choice(("web", "worker"))
        changes = plan_flood(rng, FLOOD_CHANGES)
        flood_seconds = len(changes) / FLOOD_RATE
        kill_at = rng.uniform(0.0, flood_seconds)
        resync_at = rng.randrange(len(changes))
        resync_filter = rng.choice([None, *self.lists])
        print(
            f"{tag}: kill the {target} at {kill_at:.2f} s of a {flood_seconds:.2f} s flood; "
            f"resync {'every filter' if resync_filter is None else resync_filter} "
            f"before change {resync_at}",
            flush=True,
        )
        started_round = time.monotonic()
        webhook_id = self.subscribe()
        first_event = len(self.published)
        web_up = threading.Event()
        web_up.set()
        flood = Flood(self, changes, resync_at, resync_filter, web_up, f"r{number}")
        flood.start()
        time.sleep(max(0.0, flood.began + kill_at - time.monotonic()))
        if target == "web":
            web_up.clear()
        down = restart(self.service, self.started, target)
        web_up.set()
        self.kills[target] += 1
        flood.join(tag)

        def deliveries_done() -> str | None:
            outcome = delivery_outcome(
                self.pipedrive.deliveries(), webhook_id, len(self.published) - first_event
            )
            return f"{outcome.waiting} deliveries still to try" if outcome.waiting else None

        self.wait(deliveries_done, SETTLE_SECONDS, tag)
        outcome = delivery_outcome(
            self.pipedrive.deliveries(), webhook_id, len(self.published) - first_event
        )
        self.wait(lambda: self.busy(), SETTLE_SECONDS, tag)
        if outcome.given_up:
            # Changes the service never heard of: only a resync brings them.
            print(f"{tag}: {len(outcome.given_up)} deliveries given up by the fake; resync")
            self.healed.append(number)
            response = self.service.request("POST", "/api/sync")
            assert response.status_code == 202, f"{tag}: {response.text}"
            self.wait(lambda: self.busy(), SETTLE_SECONDS, tag)
        self.check(tag)
        took = time.monotonic() - started_round
        self.timings.append(took)
        self.figures(
            f"{tag}: {flood.made} changes, {len(outcome.acknowledged)} deliveries acknowledged "
            f"({outcome.retried} after a retry; {flood.while_down} changes made while the web "
            f"was down), {target} back in {down:.2f} s, settled and checked {took:.1f} s after "
            f"the start; {flood.note}"
        )

    def story(self, filter_id: int, emails: set[str]) -> str:
        """What led to a wrong list: the Brevo writes naming ``emails``, the filter's jobs,
        the ledger rows and the deliveries naming them (for a failure's message)."""
        lines = ["Brevo writes naming them:"]
        for w in self.writes:
            if any(e in w.path or e in w.body or e.replace("@", "%40") in w.path for e in emails):
                lines.append(f"  {w.at:.3f} {w.method} {w.path} -> {w.status} {w.body[:300]}")
        lines.append(f"jobs of filter {filter_id}:")
        lines += [
            f"  {row}"
            for row in self.service.query(
                'SELECT id, kind, "trigger", status, created_at, claimed_at, completed_at, '
                "total_fetched, total_added, total_updated, total_removed, error_message "
                "FROM sync_jobs WHERE filter_id = ? ORDER BY id",
                filter_id,
            )
        ]
        lines.append("ledger rows of them:")
        marks = ", ".join("?" * len(emails))
        lines += [
            f"  {row}"
            for row in self.service.query(
                f"SELECT * FROM memberships WHERE email IN ({marks})", *sorted(emails)
            )
        ]
        lines.append("deliveries naming them:")
        for email in sorted(emails):
            lines += [
                f"  {row}"
                for row in self.service.query(
                    "SELECT id, object, action, entity_id, status, received_at, occurred_at "
                    "FROM inbox WHERE payload LIKE ?",
                    f"%{email}%",
                )
            ]
        return "\n".join(lines) + "\n" + self.service.logs()

    def busy(self) -> str | None:
        """What the service still has to do, or None when it is quiet."""
        pending, changes, processing = backlog(self.service)
        if pending or changes or processing:
            return f"{pending} pending, {changes} routed changes, {processing} jobs processing"
        return None

    def check(self, tag: str) -> None:
        """The round's assertions (see the module docstring)."""
        service = self.service
        acknowledged = acknowledged_everywhere(self.pipedrive.deliveries())
        stored = dict(service.query("SELECT event_key, status FROM inbox"))
        missing = sorted(e for e in acknowledged if f"v2:{e}" not in stored)
        assert not missing, f"{tag}: acknowledged deliveries not in the inbox: {missing}"
        unapplied = {
            e: stored[f"v2:{e}"]
            for e in acknowledged
            if stored[f"v2:{e}"] not in ("processed", "ignored")
        }
        assert not unapplied, f"{tag}: acknowledged deliveries not processed: {unapplied}"

        for filter_id, list_id in self.lists.items():
            want = [e for e in self.pipedrive.filter_emails(filter_id) if brevo_accepts(e)]
            have = self.brevo.emails(list_id)
            assert have == want, (
                f"{tag}: list {list_id} of filter {filter_id}: "
                f"missing {sorted(set(want) - set(have))}, extra {sorted(set(have) - set(want))}"
                f"\n{self.story(filter_id, set(want) ^ set(have))}"
            )

        locked = service.query("SELECT id, filter_id FROM sync_jobs WHERE status = 'processing'")
        assert not locked, f"{tag}: filters still locked by jobs {locked}"
        failures = service.query(
            "SELECT id, kind, error_message FROM sync_jobs WHERE status = 'failed' "
            "AND (error_message IS NULL OR error_message != ?)",
            WORKER_STOPPED,
        )
        assert not failures, f"{tag}: jobs failed for another reason: {failures}"

        for path in (service.database, service.tmp_path / "queue.db"):
            assert integrity(path) == [("ok",)], f"{tag}: {path.name} integrity_check"


class Flood:
    """The round's changes, made by a thread at ``FLOOD_RATE`` a second; while the web is
    down it makes ``DOWN_CHANGES`` of them, then waits. The admin's resync is requested
    (with the web up) before change ``resync_at``."""

    def __init__(
        self,
        loop: Loop,
        changes: list[Change],
        resync_at: int,
        resync_filter: int | None,
        web_up: threading.Event,
        label: str,
    ) -> None:
        self.loop = loop
        self.changes = changes
        self.resync_at = resync_at
        self.resync_filter = resync_filter
        self.web_up = web_up
        self.label = label
        self.made = 0
        self.while_down = 0
        self.note = ""
        self.began = time.monotonic()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def start(self) -> None:
        """Begin the flood."""
        self.began = time.monotonic()
        self._thread.start()

    def join(self, tag: str) -> None:
        """Wait for the flood's end; fail when it failed."""
        self._thread.join(60)
        assert not self._thread.is_alive(), f"{tag}: the flood did not end"
        if self.error is not None:
            raise AssertionError(f"{tag}: the flood failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.loop.pipedrive.fake.url, timeout=10) as control,
                httpx.Client(
                    base_url=self.loop.service.base,
                    headers=self.loop.service.http.headers,
                    timeout=10,
                ) as admin,
            ):
                for n, change in enumerate(self.changes):
                    time.sleep(max(0.0, self.began + n / FLOOD_RATE - time.monotonic()))
                    if not self.web_up.is_set():
                        if self.while_down < DOWN_CHANGES:
                            self.while_down += 1
                        else:
                            self.web_up.wait(START_SECONDS)
                    if n == self.resync_at:
                        self.web_up.wait(START_SECONDS)
                        self.note = self._resync(admin)
                    apply_change(control, self.loop.world, change, f"{self.label}c{n}")
                    self.made += 1
        except BaseException as exc:  # reported by join() in the test's thread
            self.error = exc

    def _resync(self, admin: httpx.Client) -> str:
        path = (
            "/api/sync"
            if self.resync_filter is None
            else (f"/api/filters/{self.resync_filter}/sync")
        )
        try:
            response = admin.post(path)
        except httpx.TransportError as exc:
            # The web was killed while it answered: the jobs may exist or not.
            return f"resync request cut off ({type(exc).__name__})"
        assert response.status_code in (202, 409), response.text
        body = response.json()
        if "jobs" in body:
            return f"resync: {len(body['jobs'])} jobs, busy {body['busy']}"
        return f"resync: {response.status_code} {body.get('job', {}).get('kind')}"


@pytest.mark.timeout(900)
def test_twenty_rounds_of_sigkill_lose_no_acknowledged_delivery_and_leave_no_lock(
    start_service: StartService,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
    published: list[ChangeEvent],
    brevo_writes: list[Write],
    started: Started,
    figures: Callable[[str], None],
) -> None:
    """R3 and R7: after every SIGKILL of the web or the worker during a webhook flood and
    a full resync, and a restart, nothing acknowledged is lost, every list equals its
    filter, no filter is locked and both SQLite files pass ``integrity_check``."""
    base_seed = int(os.environ.get("CRASH_LOOP_SEED") or random.randrange(2**31))
    print(f"\ncrash loop: CRASH_LOOP_SEED={base_seed}", flush=True)
    figures(f"crash loop: CRASH_LOOP_SEED={base_seed}")
    seeds = random.Random(base_seed)
    began = time.monotonic()
    pipedrive, brevo = Pipedrive(pipedrive_fake), Brevo(brevo_fake)
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"retry_scale": RETRY_SCALE})
    service = start_service(**SERVICE_ENV)
    with httpx.Client(base_url=pipedrive_fake.url, timeout=10) as control:
        world = seed_world(control, random.Random(seeds.getrandbits(32)))
    filters = [pipedrive.people_filter(f"Crash {tier}", tier) for tier in TIERS]
    filters.append(pipedrive.deal_filter("Crash deals", DEAL_PREFIX))
    service.refresh()
    lists = {}
    for filter_id in filters:
        job = service.sync(filter_id)
        assert job["status"] == "completed", job
        lists[filter_id] = service.filters()[filter_id]["brevo_list_id"]
    loop = Loop(
        service,
        started,
        pipedrive,
        brevo,
        published,
        world,
        lists,
        token=service.env["PIPEDRIVE_API_TOKEN"],
        writes=brevo_writes,
        figures=figures,
    )
    loop.check(f"before the rounds (CRASH_LOOP_SEED={base_seed})")
    set_up = time.monotonic() - began

    for number in range(1, ROUNDS + 1):
        loop.round(number, seeds.getrandbits(32))

    total = time.monotonic() - began
    jobs = Counter(
        f"{kind} {trigger} {status}"
        for kind, trigger, status in service.query('SELECT kind, "trigger", status FROM sync_jobs')
    )
    figures(
        f"crash loop: {ROUNDS} rounds ({dict(loop.kills)} killed) in {total:.0f} s "
        f"(set-up {set_up:.1f} s; rounds {min(loop.timings):.1f}-{max(loop.timings):.1f} s); "
        f"resynced after given-up deliveries in rounds {loop.healed or 'none'}; "
        f"jobs {dict(jobs)}"
    )
    assert set(loop.kills) == {"web", "worker"}, f"CRASH_LOOP_SEED={base_seed}: {loop.kills}"
