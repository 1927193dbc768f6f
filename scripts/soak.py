"""Soak test: mixed load at a fixed rate against the production setup, then the inbox
ledger, the processes' memory over time, and every error seen.

What runs: the fake Pipedrive (``--persons`` seeded persons, 1,200) and the fake Brevo in
this process (``sandbox.server.ThreadedServer``) with their default, realistic limits and
Pipedrive's real retry schedule (3, 30, 150 s); the real ``pbsync web`` and ``pbsync
worker`` as two processes, configured as in production: every setting at its default
(SYNC_COALESCE_SECONDS 2, JOB_STALE_SECONDS 30, FILTER_REFRESH_SECONDS 300, ...), PUBLIC_URL
the web's loopback address, WEBHOOK_USER / WEBHOOK_PASSWORD set. The service registers its
webhooks itself at its first filter refresh, and ``pbsync webhooks install`` runs before
the load as a deploy would (its lines are printed). Databases, queue and logs live in a
temporary directory (``--keep`` keeps it and prints where; it is kept anyway when a
verdict fails).

Set-up, before the service starts: people filters of the tiers Gold, Silver and Bronze
(the seeded "Customer tier"), a deal filter of the deals whose title starts with "Soak" (30
seeded deals renamed so) and the seeded filter 8 (people at German organizations: its
conditions name organizations, so an organization change lists it whole) are refreshed
and linked by a first full sync each.

The load: ``--rate`` (5) operations a second for ``--minutes`` (10; ``--seconds`` instead
for a short run), on a fixed schedule (operation k is due at start + k / rate, whatever
the answers; the largest lateness is printed), drawn from a mix (``--seed``):

- persons (60 %): created (in a tier or none), renamed, moved between tiers, given a new
  email, deleted, merged into another; made through the fake's control API, which
  delivers a real v2 webhook of each change to the service;
- deals (15 %): created, retitled into or out of the deal filter, given another status,
  deleted;
- organizations (5 %): their country changed (Germany or not), so filter 8 changes;
- deliveries of objects the sync does not use (10 %): an activity, note or product change,
  posted by this script as Pipedrive would (v2, HTTP Basic): answered 200 and stored
  ``ignored``;
- admin API calls (10 %): ``GET /api/status``, ``GET /api/jobs``, ``GET /api/filters``;
  and every ``--resync-every`` seconds (60) a forced full resync of one linked filter, or
  of them all (a filter busy with another job is asked again for up to 20 s).

Then the load stops and the script waits (``--drain-timeout``, 300 s) until the fake has
delivered or given up every event, and the service is quiet: no pending delivery, no
routed change waiting, no job processing. Printed:

- the ledger, ``received = applied + pending + ignored``: received are the events the
  service acknowledged with a 2xx (distinct event ids: the fake's delivery log, plus this
  script's own deliveries), applied the inbox rows ``processed``, pending and ignored the
  rows in those states; exact, and the stored event ids must be the acknowledged ones;
- memory: the VmRSS of the web and of the worker (``/proc/<pid>/status``) when the load
  starts, every ``--sample`` seconds (60) and at the end, with the growth;
- errors: webhook deliveries answered otherwise than 2xx (or not at all) and events the
  fake gave up on, the script's own calls answered unexpectedly (a 5xx, a 4xx other than
  409 busy), failed jobs with their messages, log lines at ERROR or above (or not JSON),
  and a process that exited;
- whether every linked list equals its filter as the fake evaluates it.

Verdict lines; the exit status is 1 when the ledger does not balance, when there was an
error, or when a list differs. ``--json PATH`` also writes the figures as JSON.

Run it from the repository root:

    .venv/bin/python scripts/soak.py [--minutes 10] [--rate 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_full_resync as full  # this script's sibling (scripts/ is on sys.path)
import httpx

from sandbox.brevo import BrevoFakeConfig
from sandbox.brevo import create_app as create_brevo
from sandbox.brevo.model import valid_email
from sandbox.pipedrive import PipedriveFakeConfig
from sandbox.pipedrive import create_app as create_pipedrive
from sandbox.pipedrive.fields import TIER_KEY, condition, groups
from sandbox.pipedrive.state import PipedriveState
from sandbox.server import ThreadedServer

TIERS = ("Gold", "Silver", "Bronze")  # the seeded values of "Customer tier"
DEAL_PREFIX = "Soak"
INITIAL_DEALS = 30
GERMAN_PEOPLE_FILTER = 8  # seeded: persons of organizations in Germany
ADMIN_PASSWORD = "soak-" + secrets.token_hex(12)
PIPEDRIVE_TOKEN = "soak-pd-" + secrets.token_hex(8)
BREVO_KEY = "soak-brevo-" + secrets.token_hex(8)
WEBHOOK_USER = "pipedrive"
WEBHOOK_PASSWORD = secrets.token_hex(16)
MIX = {
    "person_create": 14,
    "person_rename": 12,
    "person_move": 14,
    "person_email": 8,
    "person_delete": 8,
    "person_merge": 4,
    "deal_create": 4,
    "deal_title": 6,
    "deal_status": 3,
    "deal_delete": 2,
    "organization": 5,
    "ignored": 10,
    "admin": 10,
}
IGNORED_OBJECTS = ("activity", "note", "product")
ADMIN_READS = ("/api/status", "/api/jobs", "/api/filters")
RESYNC_PATIENCE_SECONDS = 20.0
MIN_PERSONS = 200  # deletions and merges keep at least this many persons
MB = 1024 / 1e6  # kB of /proc/<pid>/status to MB (10^6 bytes), as bench_full_resync prints
LOG_ERROR_LEVELS = ("ERROR", "CRITICAL")


# --- what is counted ------------------------------------------------------------------------


@dataclass
class Sample:
    """The processes' memory at one moment."""

    at: float  # seconds since the load started
    label: str
    web_mb: float | None
    worker_mb: float | None


@dataclass
class Figures:
    """Everything the run measured (also what ``--json`` writes)."""

    seconds: float = 0.0
    rate: float = 0.0
    seed: int = 0
    operations: dict[str, int] = field(default_factory=dict)
    max_lateness: float = 0.0
    resync_jobs: int = 0
    samples: list[Sample] = field(default_factory=list)
    fake_acknowledged: int = 0
    own_acknowledged: int = 0
    received: int = 0
    applied: int = 0
    pending: int = 0
    ignored: int = 0
    inbox_rows: int = 0
    not_stored: list[str] = field(default_factory=list)
    not_acknowledged: list[str] = field(default_factory=list)
    delivery_attempts: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    drained_after: float | None = None
    list_problems: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        """Whether the ledger balances, counts and event ids alike."""
        return (
            self.received == self.applied + self.pending + self.ignored == self.inbox_rows
            and not self.not_stored
            and not self.not_acknowledged
        )


def rss_mb(pid: int) -> float | None:
    """``VmRSS`` of the process in MB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * MB
    return None


def log_problems(log: Path) -> list[str]:
    """Lines of a service log at ERROR or above, or not JSON at all."""
    problems: list[str] = []
    if not log.exists():
        return problems
    for line in log.read_text("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(f"{log.name}: not JSON: {line[:200]}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{log.name}: not a JSON object: {line[:200]}")
        elif entry.get("level") in LOG_ERROR_LEVELS:
            problems.append(
                f"{log.name}: {entry.get('level')} {entry.get('message')}: {line[:300]}"
            )
    return problems


# --- the fakes and the service ------------------------------------------------------------


class Setup:
    """The fakes, the service's processes, and the admin API."""

    def __init__(self, work: Path, persons: int) -> None:
        self.work = work
        self.pipedrive_app = create_pipedrive(
            PipedriveFakeConfig(token=PIPEDRIVE_TOKEN, persons=persons)
        )
        self.brevo_app = create_brevo(BrevoFakeConfig(token=BREVO_KEY))
        self.state: PipedriveState = self.pipedrive_app.state.fake
        self.pipedrive = ThreadedServer(self.pipedrive_app).start()
        self.brevo = ThreadedServer(self.brevo_app).start()
        self.control = httpx.Client(base_url=self.pipedrive.url, timeout=30)
        self.brevo_control = httpx.Client(base_url=self.brevo.url, timeout=30)
        port = full.free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.env = production_env(work, port, self.pipedrive.url, self.brevo.url)
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.admin = httpx.Client(base_url=self.base, timeout=30)
        self.lists: dict[int, int] = {}

    def start_service(self) -> None:
        """Start web and worker, log in, refresh the filters."""
        self.web = full.start("web", self.env, self.work / "web.log")
        self.worker = full.start("worker", self.env, self.work / "worker.log")
        full.wait_until("the web answers /healthz", self._healthy, 60)
        full.wait_until(
            "the worker is ready", lambda: full.logged(self.work / "worker.log", "worker ready"), 60
        )
        response = self.admin.post("/api/session", json={"password": ADMIN_PASSWORD})
        full.check(response, 201)
        self.admin.headers["Authorization"] = f"Bearer {response.json()['token']}"
        full.check(self.admin.post("/api/filters/refresh"), 200)

    def _healthy(self) -> bool:
        self.check_alive()
        try:
            return self.admin.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def check_alive(self) -> None:
        """``RuntimeError`` when the web or the worker has exited."""
        for name, process in (("web", self.web), ("worker", self.worker)):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the {name} exited ({process.returncode}); see its log")

    def link(self, filter_ids: list[int]) -> None:
        """A first full sync of each filter (it creates the Brevo list)."""
        for filter_id in filter_ids:
            job = full.check(self.admin.post(f"/api/filters/{filter_id}/sync"), 202)["job"]
            while job["status"] == "processing":
                self.check_alive()
                time.sleep(0.2)
                job = full.check(self.admin.get(f"/api/jobs/{job['id']}"), 200)["job"]
            if job["status"] != "completed":
                raise RuntimeError(f"linking filter {filter_id} failed: {job}")
        for item in full.check(self.admin.get("/api/filters"), 200)["filters"]:
            if item["id"] in filter_ids:
                self.lists[item["id"]] = int(item["brevo_list_id"])

    def install_webhooks(self) -> str:
        """``pbsync webhooks install``: the lines it printed."""
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", "webhooks", "install"],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if run.returncode != 0:
            raise RuntimeError(f"pbsync webhooks install failed: {run.stdout}{run.stderr}")
        return run.stdout.strip()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the service's database."""
        connection = sqlite3.connect(f"file:{self.work / 'app.db'}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    def close(self) -> None:
        """Stop the processes (gracefully) and the fakes."""
        for process in (self.worker, self.web):
            if process is not None:
                full.stop(process)
        self.admin.close()
        self.control.close()
        self.brevo_control.close()
        self.pipedrive.stop()
        self.brevo.stop()


def production_env(work: Path, port: int, pipedrive_url: str, brevo_url: str) -> dict[str, str]:
    """The processes' environment: the fakes' addresses and credentials, files under
    ``work``, webhook credentials and PUBLIC_URL; every other setting at its default."""
    env = full.service_env(work, pipedrive_url, brevo_url)
    for tuned in ("FILTER_REFRESH_SECONDS", "FULL_RESYNC_SECONDS", "BREVO_FOLDER_ID"):
        env.pop(tuned, None)
    env.update(
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        PIPEDRIVE_API_TOKEN=PIPEDRIVE_TOKEN,
        BREVO_API_KEY=BREVO_KEY,
        WEBHOOK_USER=WEBHOOK_USER,
        WEBHOOK_PASSWORD=WEBHOOK_PASSWORD,
        PORT=str(port),
        PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    return env


# --- the load -----------------------------------------------------------------------------


class Load:
    """The mixed load: data changes in this thread, deliveries and admin calls in a pool."""

    def __init__(self, setup: Setup, rng: random.Random, resync_every: float) -> None:
        self.setup = setup
        self.rng = rng
        self.resync_every = resync_every
        with setup.state.lock:
            self.persons = sorted(p.id for p in setup.state.data.live_persons())
            self.deals = sorted(d.id for d in setup.state.data.live_deals())
            self.organizations = sorted(setup.state.data.organizations)
        self.made = 0
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.own_acknowledged: set[str] = set()
        self.own_sent: set[str] = set()
        self.resync_jobs = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="soak-calls")
        auth = httpx.BasicAuth(WEBHOOK_USER, WEBHOOK_PASSWORD)
        self._hooks = httpx.Client(base_url=setup.base, auth=auth, timeout=30)
        self._admin = httpx.Client(base_url=setup.base, headers=setup.admin.headers, timeout=60)

    def run(self, seconds: float, rate: float, tick: Callable[[float], None]) -> float:
        """Run the load for ``seconds`` at ``rate`` operations a second, calling ``tick``
        with the elapsed time between operations; the largest lateness."""
        began = time.monotonic()
        lateness = 0.0
        next_resync = self.resync_every
        k = 0
        while (due := k / rate) < seconds:
            wait = began + due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            lateness = max(lateness, -wait)
            if due >= next_resync:
                next_resync += self.resync_every
                target = self.rng.choice([None, *sorted(self.setup.lists)])
                self._submit("resync", functools.partial(self._resync, target))
            self._operation(self.rng.choices(list(MIX), weights=list(MIX.values()))[0])
            tick(time.monotonic() - began)
            k += 1
        self._pool.shutdown(wait=True)
        self._hooks.close()
        self._admin.close()
        return lateness

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def _submit(self, name: str, call: Callable[[], None]) -> None:
        """Run ``call`` in the pool; a transport error is an error of the run."""

        def guarded() -> None:
            try:
                call()
            except httpx.HTTPError as exc:
                self._error(f"{name}: {type(exc).__name__}: {exc}")

        self._pool.submit(guarded)

    def _operation(self, kind: str) -> None:
        # Every random pick is made here, in order, so a seed gives the same run.
        rng = self.rng
        self.counts[kind] += 1
        if kind == "ignored":
            entity, entity_id = rng.choice(IGNORED_OBJECTS), rng.randrange(1, 10**6)
            self._submit(kind, functools.partial(self._ignored_delivery, entity, entity_id))
        elif kind == "admin":
            path = rng.choice(ADMIN_READS)
            self._submit(kind, functools.partial(self._admin_read, path))
        elif kind.startswith("person"):
            self._person(kind)
        elif kind.startswith("deal"):
            self._deal(kind)
        else:
            org = self.rng.choice(self.organizations)
            country = self.rng.choice(("Germany", "France", "Estonia"))
            self._control("PATCH", f"/_sandbox/organizations/{org}", {"country": country})

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        """A change through the fake's control API (it delivers the webhooks)."""
        response = self.setup.control.request(method, path, json=body)
        if response.status_code >= 400:
            raise RuntimeError(f"control {method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def _email(self) -> str:
        self.made += 1
        return f"soak{self.made}.{self.rng.randrange(10**6)}@soak.example.com"

    def _person(self, kind: str) -> None:
        rng = self.rng
        if kind in ("person_delete", "person_merge") and len(self.persons) <= MIN_PERSONS:
            kind = "person_create"
        if kind == "person_create":
            body = {
                "first_name": f"Soak{self.made}",
                "last_name": "Load",
                "emails": [self._email()],
                "custom_fields": {TIER_KEY: rng.choice([*TIERS, None])},
            }
            self.persons.append(int(self._control("POST", "/_sandbox/persons", body)["id"]))
            return
        person = rng.choice(self.persons)
        if kind == "person_rename":
            body = {"first_name": f"Renamed{rng.randrange(10**6)}"}
            self._control("PATCH", f"/_sandbox/persons/{person}", body)
        elif kind == "person_move":
            body = {"custom_fields": {TIER_KEY: rng.choice([*TIERS, None])}}
            self._control("PATCH", f"/_sandbox/persons/{person}", body)
        elif kind == "person_email":
            self._control("PATCH", f"/_sandbox/persons/{person}", {"emails": [self._email()]})
        elif kind == "person_delete":
            self._control("DELETE", f"/_sandbox/persons/{person}")
            self.persons.remove(person)
        else:  # merge
            into = rng.choice([p for p in self.persons if p != person])
            self._control("POST", f"/_sandbox/persons/{person}/merge", {"into": into})
            self.persons.remove(person)

    def _deal(self, kind: str) -> None:
        rng = self.rng
        if kind == "deal_delete" and len(self.deals) <= INITIAL_DEALS:
            kind = "deal_create"
        if kind == "deal_create":
            title = f"{rng.choice([DEAL_PREFIX, 'Other'])} deal {self.made}"
            body = {"title": title, "person_id": rng.choice(self.persons), "status": "open"}
            self.deals.append(int(self._control("POST", "/_sandbox/deals", body)["id"]))
            return
        deal = rng.choice(self.deals)
        if kind == "deal_title":
            title = f"{rng.choice([DEAL_PREFIX, 'Other'])} deal {rng.randrange(10**6)}"
            self._control("PATCH", f"/_sandbox/deals/{deal}", {"title": title})
        elif kind == "deal_status":
            status = rng.choice(("open", "won", "lost"))
            self._control("PATCH", f"/_sandbox/deals/{deal}", {"status": status})
        else:
            self._control("DELETE", f"/_sandbox/deals/{deal}")
            self.deals.remove(deal)

    def _ignored_delivery(self, entity: str, entity_id: int) -> None:
        """A v2 delivery of an object the sync does not use, as Pipedrive sends it."""
        event_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        body = {
            "data": {"id": entity_id, "subject": "Soak", "update_time": now.strftime("%FT%TZ")},
            "previous": {"subject": "Before"},
            "meta": {
                "action": "change",
                "company_id": "7001",
                "correlation_id": str(uuid.uuid4()),
                "entity_id": str(entity_id),
                "entity": entity,
                "id": event_id,
                "is_bulk_edit": False,
                "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "type": "general",
                "user_id": "1001",
                "version": "2.0",
                "webhook_id": "0",
                "webhook_owner_id": "1001",
                "change_source": "app",
                "attempt": 1,
                "host": "soak.pipedrive.example",
            },
        }
        with self._lock:
            self.own_sent.add(event_id)
        response = self._hooks.post("/webhooks/pipedrive", json=body)
        if 200 <= response.status_code < 300:
            with self._lock:
                self.own_acknowledged.add(event_id)
        else:
            self._error(f"ignored delivery answered {response.status_code}: {response.text[:200]}")

    def _admin_read(self, path: str) -> None:
        response = self._admin.get(path)
        if response.status_code != 200:
            self._error(f"GET {path} answered {response.status_code}: {response.text[:200]}")

    def _resync(self, filter_id: int | None) -> None:
        """A forced full resync of one linked filter (None: of them all, those busy with
        another job left out). A busy filter is asked again every half second for a while:
        under load its incremental jobs keep it busy most of the time."""
        deadline = time.monotonic() + RESYNC_PATIENCE_SECONDS
        while True:
            if filter_id is None:
                response = self._admin.post("/api/sync")
            else:
                params = {"force": "true"}
                response = self._admin.post(f"/api/filters/{filter_id}/sync", params=params)
            if response.status_code != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        with self._lock:
            self.counts["resync"] += 1
            if response.status_code == 202:
                body = response.json()
                self.resync_jobs += len(body["jobs"]) if "jobs" in body else 1
        if response.status_code not in (202, 409):
            self._error(f"resync answered {response.status_code}: {response.text[:200]}")


# --- the run ------------------------------------------------------------------------------


def deliveries(setup: Setup) -> list[dict[str, Any]]:
    """Every delivery attempt the fake made."""
    entries: list[dict[str, Any]] = full.check(setup.control.get("/_sandbox/deliveries"), 200)[
        "deliveries"
    ]
    return entries


def acknowledged(entries: list[dict[str, Any]]) -> set[str]:
    """Event ids the service answered with a 2xx."""
    return {e["event_id"] for e in entries if e["status"] is not None and 200 <= e["status"] < 300}


def unfinished(entries: list[dict[str, Any]], published: int) -> int:
    """Deliveries the fake has still to make: events published but not tried yet (each
    goes to one webhook at least), and deliveries neither acknowledged nor given up."""
    tries: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        tries.setdefault(entry["event_id"], []).append(entry)
    waiting = 0
    for attempts in tries.values():
        ok = any(a["status"] is not None and 200 <= a["status"] < 300 for a in attempts)
        # The fourth attempt failed, or the webhook was banned or deleted: given up.
        lost = any(a["status"] is None and "webhook" in (a["error"] or "") for a in attempts)
        if not (ok or lost or max(a["attempt"] for a in attempts) == 4):
            waiting += 1
    return max(0, published - len(tries)) + waiting


def quiet(setup: Setup) -> bool:
    """No pending delivery, no routed change, no job processing."""
    row = setup.query(
        "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending'), "
        "(SELECT COUNT(*) FROM filter_changes), "
        "(SELECT COUNT(*) FROM sync_jobs WHERE status = 'processing')"
    )[0]
    return not any(row)


def list_problems(setup: Setup) -> dict[str, str]:
    """Linked lists that differ from their filter as the fake evaluates it."""
    problems = {}
    for filter_id, list_id in setup.lists.items():
        with setup.state.lock:
            want = {e for e in setup.state.members(filter_id).emails if valid_email(e)}
        response = setup.brevo_control.get(f"/_sandbox/lists/{list_id}/emails")
        have = set(full.check(response, 200)["emails"])
        if have != want:
            problems[str(filter_id)] = (
                f"missing {sorted(want - have)[:5]} ({len(want - have)}), "
                f"extra {sorted(have - want)[:5]} ({len(have - want)})"
            )
    return problems


def prepare(setup: Setup) -> list[int]:
    """The filters to link: the tier filters, a deal filter (seeded deals renamed into it
    first), filter 8. No webhook exists yet, so none of this is delivered."""
    with setup.state.lock:
        filters = {f.name: f.id for f in setup.state.data.filters.values() if not f.deleted}
        deals = [d.id for d in setup.state.data.live_deals() if d.person_id is not None]
    tier_filters = []
    for tier in TIERS:
        name = f"Soak {tier}"
        if name not in filters:
            body = {
                "name": name,
                "type": "people",
                "conditions": groups([condition("person", TIER_KEY, "=", tier)]),
            }
            filters[name] = full.check(setup.control.post("/_sandbox/filters", json=body), 201)[
                "id"
            ]
        tier_filters.append(filters[name])
    for deal in deals[:INITIAL_DEALS]:
        body = {"title": f"{DEAL_PREFIX} seeded {deal}"}
        full.check(setup.control.patch(f"/_sandbox/deals/{deal}", json=body), 200)
    body = {
        "name": "Soak deals",
        "type": "deals",
        "conditions": groups([condition("deal", "title", "LIKE '$%'", DEAL_PREFIX)]),
    }
    deal_filter = full.check(setup.control.post("/_sandbox/filters", json=body), 201)["id"]
    return [*tier_filters, deal_filter, GERMAN_PEOPLE_FILTER]


def run(args: argparse.Namespace, work: Path, figures: Figures) -> None:
    """Set up, load, drain and count; ``figures`` is filled as the run goes."""
    started = time.perf_counter()
    setup = Setup(work, args.persons)
    try:
        filter_ids = prepare(setup)
        setup.start_service()
        setup.link(filter_ids)
        installed = setup.install_webhooks()
        print(
            f"set up in {time.perf_counter() - started:.1f} s: {len(filter_ids)} filters linked"
            f" (lists {setup.lists}); pbsync webhooks install: {installed.splitlines()}",
            flush=True,
        )
        published = [0]
        setup.state.listeners.append(
            lambda events: published.__setitem__(0, published[0] + len(events))
        )

        def sample(at: float, label: str) -> None:
            assert setup.web is not None and setup.worker is not None
            taken = Sample(at, label, rss_mb(setup.web.pid), rss_mb(setup.worker.pid))
            figures.samples.append(taken)
            entries = deliveries(setup)
            print(
                f"[{label:>6}] web {taken.web_mb or 0:.1f} MB, worker {taken.worker_mb or 0:.1f}"
                f" MB; events {published[0]}, acknowledged {len(acknowledged(entries))}",
                flush=True,
            )

        sample(0.0, "start")
        next_sample = [args.sample]

        def tick(elapsed: float) -> None:
            if elapsed >= next_sample[0]:
                minutes, seconds = divmod(int(next_sample[0]), 60)
                sample(elapsed, f"{minutes}:{seconds:02d}")
                next_sample[0] += args.sample
            setup.check_alive()

        load = Load(setup, random.Random(args.seed), args.resync_every)
        figures.max_lateness = load.run(figures.seconds, figures.rate, tick)
        load_ended = time.monotonic()
        figures.operations = dict(load.counts)
        figures.resync_jobs = load.resync_jobs
        figures.errors += load.errors
        print(f"load done: {sum(load.counts.values())} operations {dict(load.counts)}", flush=True)

        deadline = load_ended + args.drain_timeout
        while True:
            setup.check_alive()
            entries = deliveries(setup)
            if not unfinished(entries, published[0]) and quiet(setup):
                figures.drained_after = time.monotonic() - load_ended
                break
            if time.monotonic() > deadline:
                figures.errors.append(f"not drained within {args.drain_timeout:g} s")
                break
            time.sleep(0.5)
        sample(time.monotonic() - load_ended + figures.seconds, "end")
        count(setup, figures, entries, load)
    finally:
        setup.close()
    for name in ("web.log", "worker.log"):
        figures.errors += log_problems(work / name)


def count(setup: Setup, figures: Figures, entries: list[dict[str, Any]], load: Load) -> None:
    """The ledger, the deliveries' statuses, the jobs, the lists and the errors."""
    fake_acks = acknowledged(entries)
    figures.fake_acknowledged = len(fake_acks)
    figures.own_acknowledged = len(load.own_acknowledged)
    received = fake_acks | load.own_acknowledged
    figures.received = len(received)
    by_status = dict(setup.query("SELECT status, COUNT(*) FROM inbox GROUP BY status"))
    figures.applied = int(by_status.get("processed", 0))
    figures.pending = int(by_status.get("pending", 0))
    figures.ignored = int(by_status.get("ignored", 0))
    keys = {str(r[0]) for r in setup.query("SELECT event_key FROM inbox")}
    figures.inbox_rows = len(keys)
    figures.not_stored = sorted(e for e in received if f"v2:{e}" not in keys)
    figures.not_acknowledged = sorted(k for k in keys if k.removeprefix("v2:") not in received)
    attempts = Counter(
        str(e["status"]) if e["status"] is not None else str(e["error"]) for e in entries
    )
    figures.delivery_attempts = dict(attempts)
    for outcome, number in attempts.items():
        if not outcome.isdigit() or not 200 <= int(outcome) < 300:
            figures.errors.append(f"{number} delivery attempts answered {outcome}")
    given_up = {e["event_id"] for e in entries} - fake_acks
    if given_up:
        figures.errors.append(f"{len(given_up)} events the fake gave up delivering")
    figures.jobs = {
        f"{kind} {trigger} {status}": int(n)
        for kind, trigger, status, n in setup.query(
            'SELECT kind, "trigger", status, COUNT(*) FROM sync_jobs GROUP BY 1, 2, 3'
        )
    }
    for job_id, kind, message in setup.query(
        "SELECT id, kind, error_message FROM sync_jobs WHERE status = 'failed'"
    ):
        figures.errors.append(f"job {job_id} ({kind}) failed: {message}")
    figures.list_problems = list_problems(setup)


def report(figures: Figures) -> list[tuple[bool, str]]:
    """Print the figures; the verdicts."""
    f = figures
    print()
    operations = sum(v for k, v in f.operations.items() if k != "resync")
    print(
        f"load: {operations} operations in {f.seconds:g} s at {f.rate:g}/s (seed {f.seed}), "
        f"largest lateness {f.max_lateness:.2f} s: {f.operations}; forced resyncs started "
        f"{f.resync_jobs} jobs"
    )
    print(
        f"deliveries: {f.fake_acknowledged} events acknowledged to the fake Pipedrive, "
        f"{f.own_acknowledged} of this script's own; attempts by answer {f.delivery_attempts}"
    )
    drained = f"{f.drained_after:.1f} s" if f.drained_after is not None else "never"
    print(f"drained {drained} after the load stopped; jobs {f.jobs}")
    ledger = (
        f"received {f.received} = applied {f.applied} + pending {f.pending} + ignored {f.ignored}"
    )
    sum_ok = f.received == f.applied + f.pending + f.ignored
    print(
        f"ledger: {ledger} ({'balanced' if sum_ok else 'DOES NOT BALANCE'}); inbox rows "
        f"{f.inbox_rows}"
    )
    if f.not_stored:
        print(f"  acknowledged but not stored: {f.not_stored[:10]} ({len(f.not_stored)})")
    if f.not_acknowledged:
        print(f"  stored but never acknowledged: {f.not_acknowledged[:10]}")
    print("memory (VmRSS, MB):")
    print(f"  {'at':>8} {'web':>8} {'worker':>8}")
    for s in f.samples:
        print(f"  {s.label:>8} {_mb(s.web_mb)} {_mb(s.worker_mb)}")
    if len(f.samples) >= 2:
        first, last = f.samples[0], f.samples[-1]
        print(
            f"  {'growth':>8} {_growth(first.web_mb, last.web_mb)} "
            f"{_growth(first.worker_mb, last.worker_mb)}"
        )
    if f.list_problems:
        for filter_id, problem in f.list_problems.items():
            print(f"list of filter {filter_id} differs: {problem}")
    print(f"errors: {len(f.errors) or 'none'}")
    for error in f.errors[:50]:
        print(f"  {error}")
    if len(f.errors) > 50:
        print(f"  ... and {len(f.errors) - 50} more")
    return [
        (f.balanced, f"ledger: {ledger}, and the stored event ids are the acknowledged ones"),
        (not f.errors, f"errors: {len(f.errors)}"),
        (not f.list_problems, "lists: every linked list equals its filter"),
    ]


def _mb(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None else f"{'gone':>8}"


def _growth(first: float | None, last: float | None) -> str:
    if first is None or last is None:
        return f"{'?':>8}"
    return f"{last - first:+8.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every verdict passes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--seconds", type=float, help="how long the load runs, in seconds")
    parser.add_argument("--rate", type=float, default=5.0, help="operations per second")
    parser.add_argument("--seed", type=int, default=1, help="picks the operations")
    parser.add_argument("--persons", type=int, default=1200, help="persons in the fake")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between RSS reads")
    parser.add_argument("--resync-every", type=float, default=60.0, help="forced resyncs")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to drain")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    if seconds <= 0 or args.rate <= 0 or args.persons < 2 * MIN_PERSONS or args.sample <= 0:
        parser.error(
            f"the duration, --rate and --sample must be positive, --persons >= {2 * MIN_PERSONS}"
        )
    figures = Figures(seconds=seconds, rate=args.rate, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    verdicts: list[tuple[bool, str]] = []
    try:
        run(args, work, figures)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        figures.errors.append(f"the run broke off: {exc}")
    finally:
        verdicts = report(figures)
        keep = args.keep or not all(ok for ok, _ in verdicts)
        if keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if args.json is not None:
            data = asdict(figures)
            data["balanced"] = figures.balanced
            data["verdicts"] = [{"ok": ok, "text": text} for ok, text in verdicts]
            args.json.write_text(json.dumps(data, indent=2))
    print()
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
