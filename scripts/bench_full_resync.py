"""Benchmark of a full resync: the sync engine against the sandbox fakes, at scale.

What it measures, for each size N (default 10,000 and 100,000 members), in two scenarios:

1. ``fill``: the first sync of Pipedrive filter 1 ("Everyone": every one of the N seeded
   persons) into a Brevo list that does not exist yet;
2. ``resync``: about 5 s later, a second full resync after 1 % churn of N: a third new
   persons joining the filter, a third deleted (leaving it), a third renamed; applied
   through the fake Pipedrive's control API.

For each it prints one line, and a table at the end, with:

- wall seconds, from the sync request (``POST /api/filters/1/sync``) to the job seen
  ``completed`` (``GET /api/jobs/{id}``, polled every 0.1 s);
- the peak RSS of the ``pbsync worker`` process (``VmHWM`` of ``/proc/<pid>/status``); a
  fresh worker is started for each scenario, so the figure is that scenario's own peak
  (the web process stays up for both scenarios of a size);
- the calls each fake answered during the job (its ``/_sandbox/usage``; Brevo's include
  the process polls and the read-back pages), cross-checked against the service's own
  ``api_calls`` table;
- the lower bound of calls any correct engine needs: ``ceil(members / 500)`` member pages
  + person look-ups a deal filter needs (``ceil(unknown persons / 100)``; 0 here, filter 1
  is a people filter) + 1 list creation on the fill + ``ceil(import bytes / 8 MB)``
  imports + ``ceil(imported rows / 500)`` read-back pages + ``ceil(removals / 150)``.
  The import bytes are the compact UTF-8 JSON of ``{"email": e, "attributes":
  {"FIRSTNAME": f, "LASTNAME": l}}`` (empty names left out) for every new or changed
  contact with a valid email, computed from the fake's data; rows are joined by commas
  inside ``[...]``;
- calls / lower bound, and the job's counters (added, updated, removed, skipped: the
  seeded data has persons without an email, which the engine skips and counts), and
  whether the Brevo list then holds exactly the filter's valid emails.

Under each line: the calls by operation, the bound term by term, the cross-check, and
the longest pauses between API requests during the job (client pacing or local work,
named by the request that ended each). A fresh worker runs its due periodic duties at
start (the first one on a database refreshes the filters): the sync is requested only
once neither fake has been called for 2 s, so those calls are not the job's.

Targets (a verdict line each; the exit status is 1 when one is missed, or when a job
fails or leaves the list different from the filter):

- the largest size's worker peak RSS < 200 MB, in both scenarios;
- the largest size's peak no more than 25 MB above the smallest size's, same scenario;
- calls within 1.1x of the lower bound, in every run.

The fakes run in this process (``sandbox.server.ThreadedServer``), with no latency and
limits far above anything the benchmark reaches (burst, daily budget, contacts rate,
processes per hour) and 0.05 s imports. The service's own client pacing (its Pipedrive
requests per second, Brevo's contacts per second and process reads per hour) still
applies: it is part of what is measured. Databases, queue and logs live in a temporary
directory (``--keep`` keeps it and prints where; it is kept anyway when a run breaks
off). ``--timeout`` (1800 s) bounds each job; ``--churn`` (0.01) and ``--settle`` (5 s)
change the second scenario.

Run it from the repository root:

    .venv/bin/python scripts/bench_full_resync.py [--sizes 10000 100000]

It prints figures only; no test asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.brevo import BrevoFakeConfig
from sandbox.brevo import create_app as create_brevo
from sandbox.brevo.model import valid_email
from sandbox.pipedrive import PipedriveFakeConfig
from sandbox.pipedrive import create_app as create_pipedrive
from sandbox.pipedrive.model import Person, primary_email
from sandbox.pipedrive.state import PipedriveState
from sandbox.server import ThreadedServer

REPO = Path(__file__).resolve().parent.parent
FILTER_ID = 1  # "Everyone": every seeded person
PAGE_SIZE = 500  # Pipedrive API v2 members per page
LOOKUP_IDS = 100  # persons per look-up by ids (deal filters)
IMPORT_MAX_BYTES = 8_000_000  # jsonBody bytes per Brevo import
READ_BACK_PAGE = 500  # list contacts per read-back page
REMOVE_BATCH = 150  # emails per remove call
RSS_LIMIT_MB = 200.0
RSS_GROWTH_MB = 25.0
CALLS_RATIO = 1.1
BIG = 1_000_000_000
ADMIN_PASSWORD = "bench-" + secrets.token_hex(12)
PIPEDRIVE_TOKEN = "bench-pd-" + secrets.token_hex(8)
BREVO_KEY = "bench-brevo-" + secrets.token_hex(8)
BREVO_FOLDER_ID = 1  # the fake's seeded "Your First Folder"
SCENARIOS = ("fill", "resync")

T = TypeVar("T")
Calls = Counter[str]
Expected = dict[str, tuple[str | None, str | None]]


# --- what the fake's data says ---------------------------------------------------------


@dataclass
class Snapshot:
    """The filter's members as the fake evaluates them, as the sync must send them."""

    members: int
    skipped: int
    contacts: Expected  # email -> (first name, last name) of its lowest-id member
    shared: set[str]  # emails more than one member has


def snapshot(state: PipedriveState) -> Snapshot:
    """The members of ``FILTER_ID`` right now, straight from the fake's data."""
    with state.lock:
        ids = state.members(FILTER_ID).ids
        persons = [state.data.persons[i] for i in ids]
    contacts: Expected = {}
    shared: set[str] = set()
    skipped = 0
    for person in sorted(persons, key=lambda p: p.id):
        email = primary_email(person)
        if email is None or not valid_email(email):
            skipped += 1
        elif email in contacts:
            shared.add(email)
        else:
            contacts[email] = (person.first_name or None, person.last_name or None)
    return Snapshot(len(persons), skipped, contacts, shared)


def row_bytes(email: str, names: tuple[str | None, str | None]) -> int:
    """Bytes of one import row, compact UTF-8 JSON, empty names left out."""
    attributes = {k: v for k, v in zip(("FIRSTNAME", "LASTNAME"), names, strict=True) if v}
    row = {"email": email, "attributes": attributes}
    return len(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass
class Bound:
    """The fewest calls a correct engine needs for one run, item by item."""

    pages: int
    lookups: int
    list_created: int
    imports: int
    import_bytes: int
    read_back: int
    rows: int
    removals: int
    remove_calls: int

    @property
    def total(self) -> int:
        """All calls of the bound."""
        return (
            self.pages
            + self.lookups
            + self.list_created
            + self.imports
            + self.read_back
            + self.remove_calls
        )

    def describe(self) -> str:
        """One line naming each term."""
        return (
            f"{self.pages} member pages + {self.lookups} person look-ups"
            f" + {self.list_created} list creation + {self.imports} imports"
            f" ({self.import_bytes / 1e6:.2f} MB, {self.rows} rows)"
            f" + {self.read_back} read-back pages + {self.remove_calls} removal calls"
            f" ({self.removals} emails) = {self.total}"
        )


def lower_bound(before: Snapshot | None, after: Snapshot, unknown_persons: int = 0) -> Bound:
    """The bound for syncing ``after`` into a list holding ``before`` (None: no list yet).

    ``unknown_persons``: persons a deal filter's deals name that the ledger does not know
    (0 for a people filter).
    """
    old = before.contacts if before is not None else {}
    rows = {e: names for e, names in after.contacts.items() if old.get(e) != names}
    size = sum(row_bytes(e, names) for e, names in rows.items()) + max(len(rows) - 1, 0)
    size += 2 if rows else 0  # the brackets
    removals = len(set(old) - set(after.contacts))
    return Bound(
        pages=max(1, math.ceil(after.members / PAGE_SIZE)),
        lookups=math.ceil(unknown_persons / LOOKUP_IDS),
        list_created=1 if before is None else 0,
        imports=math.ceil(size / IMPORT_MAX_BYTES),
        import_bytes=size,
        read_back=math.ceil(len(rows) / READ_BACK_PAGE),
        rows=len(rows),
        removals=removals,
        remove_calls=math.ceil(removals / REMOVE_BATCH),
    )


# --- churn -------------------------------------------------------------------------------


@dataclass
class Churn:
    """What the churn did."""

    joined: int = 0
    left: int = 0
    renamed: int = 0
    seconds: float = 0.0


def apply_churn(control: httpx.Client, state: PipedriveState, size: int, share: float) -> Churn:
    """Change ``share`` of ``size`` members through the fake's control API: a third new
    persons, a third deleted, a third renamed. Deleted and renamed persons are picked among
    those whose valid email no other person has, so each is one contact joining, leaving
    or changing."""
    total = round(size * share)
    leave = join = total // 3
    rename = total - leave - join
    now = snapshot(state)
    with state.lock:
        persons: list[Person] = [state.data.persons[i] for i in state.members(FILTER_ID).ids]
    candidates = sorted(
        p.id
        for p in persons
        if (email := primary_email(p)) is not None
        and email in now.contacts
        and email not in now.shared
    )
    picked = random.Random(size).sample(candidates, leave + rename)
    churn = Churn()
    started = time.perf_counter()
    for n in range(join):
        body = {
            "first_name": "Bench",
            "last_name": f"Joiner {n}",
            "emails": [f"bench.joiner.{size}.{n}@example.net"],
        }
        _control(control, "POST", "/_sandbox/persons", body)
        churn.joined += 1
    for person_id in picked[:leave]:
        _control(control, "DELETE", f"/_sandbox/persons/{person_id}")
        churn.left += 1
    for person_id in picked[leave:]:
        body = {"first_name": "Renamed", "last_name": f"Bench {person_id}"}
        _control(control, "PATCH", f"/_sandbox/persons/{person_id}", body)
        churn.renamed += 1
    churn.seconds = time.perf_counter() - started
    return churn


def _control(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    response = client.request(method, path, json=body)
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


# --- counting calls ----------------------------------------------------------------------


def pipedrive_calls(control: httpx.Client) -> Calls:
    """Calls the fake Pipedrive answered so far, by operation (every status)."""
    usage = _control(control, "GET", "/_sandbox/usage")
    return Counter({str(k): int(v) for k, v in usage["calls"].items()})


def brevo_calls(control: httpx.Client) -> Calls:
    """Calls the fake Brevo answered so far, by operation (every status)."""
    usage = _control(control, "GET", "/_sandbox/usage")
    calls: Calls = Counter()
    for template, by_status in usage["calls"].items():
        calls[str(template)] += sum(int(n) for n in by_status.values())
    return calls


def ledger_calls(database: Path) -> dict[str, Calls]:
    """Calls the service counted in its ``api_calls`` table, by API and operation."""
    counted: dict[str, Calls] = {"pipedrive": Counter(), "brevo": Counter()}
    if not database.exists():
        return counted
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout = 5000")
        try:
            rows = db.execute(
                "SELECT api, method, path, SUM(calls) FROM api_calls GROUP BY api, method, path"
            ).fetchall()
        except sqlite3.OperationalError:
            return counted
    for api, method, path, calls in rows:
        counted.setdefault(str(api), Counter())[f"{method} {path}"] += int(calls)
    return counted


def difference(after: Calls, before: Calls) -> Calls:
    """Calls made between two counts."""
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)})


def calls_text(calls: Calls) -> str:
    """``METHOD path n`` pairs, most first."""
    return ", ".join(f"{op} {n}" for op, n in calls.most_common()) or "none"


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(work: Path, pipedrive_url: str, brevo_url: str) -> dict[str, str]:
    """The environment of the ``pbsync`` processes: the fakes, files under ``work``, and no
    periodic refresh or catch-up resync during the run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ADMIN_", "PIPEDRIVE_", "BREVO_", "WEBHOOK_", "PUBLIC_URL"))
    }
    env.update(
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        PIPEDRIVE_API_TOKEN=PIPEDRIVE_TOKEN,
        PIPEDRIVE_BASE_URL=pipedrive_url,
        BREVO_API_KEY=BREVO_KEY,
        BREVO_BASE_URL=brevo_url + "/v3",
        BREVO_FOLDER_ID=str(BREVO_FOLDER_ID),
        WEBHOOK_USER="pipedrive",
        WEBHOOK_PASSWORD=secrets.token_hex(16),
        DATABASE_URL=f"sqlite:///{work / 'app.db'}",
        QUEUE_URL=f"sqlite:///{work / 'queue.db'}",
        HOST="127.0.0.1",
        PORT=str(free_port()),
        FILTER_REFRESH_SECONDS=str(BIG),
        FULL_RESYNC_SECONDS=str(BIG),
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def start(role: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``pbsync <role>``, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", role],
            env=dict(env),
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], grace: float = 40.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_until(
    what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.1
) -> T:
    """Poll ``check()`` until truthy; ``RuntimeError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


def logged(log: Path, message: str) -> bool:
    """Whether a JSON line of ``log`` has this ``message``."""
    if not log.exists():
        return False
    for line in log.read_text("utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("message") == message:
                return True
    return False


def peak_rss_mb(pid: int) -> float:
    """``VmHWM`` of the process, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmHWM for pid {pid}")


def check(response: httpx.Response, *expected: int) -> Any:
    """The JSON body when the status is expected; ``RuntimeError`` otherwise."""
    if response.status_code not in expected:
        request = response.request
        raise RuntimeError(
            f"{request.method} {request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()


class Service:
    """The web process of one size, and the admin API it serves."""

    def __init__(self, env: dict[str, str], work: Path) -> None:
        self.env = env
        self.work = work
        self.database = work / "app.db"
        self.web = start("web", env, work / "web.log")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{env['PORT']}", timeout=60.0)
        try:
            wait_until("the web process answers /healthz", self._healthy, 30)
            response = self.http.post("/api/session", json={"password": ADMIN_PASSWORD})
            check(response, 201)
        except BaseException:
            self.close()
            raise
        self.http.headers["Authorization"] = f"Bearer {response.json()['token']}"

    def _healthy(self) -> bool:
        if self.web.poll() is not None:
            raise RuntimeError(f"the web process exited; see {self.work / 'web.log'}")
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def refresh_filters(self) -> None:
        """``POST /api/filters/refresh``: the service learns Pipedrive's filters."""
        check(self.http.post("/api/filters/refresh"), 200)

    def brevo_list_id(self) -> int | None:
        """The Brevo list of ``FILTER_ID`` as the service records it."""
        body = check(self.http.get("/api/filters"), 200)
        for item in body["filters"]:
            if item["id"] == FILTER_ID:
                return None if item["brevo_list_id"] is None else int(item["brevo_list_id"])
        return None

    def start_worker(self, label: str) -> subprocess.Popen[bytes]:
        """A fresh worker, returned once it logged that it is ready."""
        log = self.work / f"worker-{label}.log"
        worker = start("worker", self.env, log)

        def ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {log}")
            return logged(log, "worker ready")

        wait_until("the worker is ready", ready, 60)
        return worker

    def sync(self, timeout: float) -> tuple[dict[str, Any], float, float]:
        """Request a full resync of ``FILTER_ID`` and wait for its end: the job, when it
        was requested and when it was seen finished (``time.perf_counter()``). A job still
        ``processing`` after ``timeout`` seconds is returned as it stands."""
        started = time.perf_counter()
        job: dict[str, Any] = check(self.http.post(f"/api/filters/{FILTER_ID}/sync"), 202)["job"]
        while job["status"] == "processing" and time.perf_counter() - started < timeout:
            time.sleep(0.1)
            job = check(self.http.get(f"/api/jobs/{job['id']}"), 200)["job"]
        return job, started, time.perf_counter()

    def close(self) -> None:
        """Stop the web process."""
        self.http.close()
        stop(self.web)


# --- one run -----------------------------------------------------------------------------


class Timeline:
    """ASGI wrapper recording when each API request (not the control API) started."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.requests: list[tuple[float, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not path.startswith("/_sandbox"):
            self.requests.append((time.perf_counter(), f"{self.name} {scope['method']} {path}"))
        await self.app(scope, receive, send)


def longest_waits(timelines: list[Timeline], start: float, end: float, count: int = 3) -> list[str]:
    """The longest pauses between the API requests made from ``start`` to ``end``
    (beginning with ``start``, the sync request), with the request that ended each."""
    requests = sorted(r for t in timelines for r in t.requests if start <= r[0] <= end)
    gaps: list[tuple[float, str]] = []
    previous = start
    for at, what in requests:
        gaps.append((at - previous, what))
        previous = at
    gaps.append((end - previous, "job seen completed"))
    gaps.sort(reverse=True)
    return [f"{gap:.1f} s before {what}" for gap, what in gaps[:count] if gap >= 0.5]


@dataclass
class Result:
    """The figures of one scenario at one size."""

    size: int
    scenario: str
    members: int
    wall: float
    rss_mb: float
    pipedrive: Calls
    brevo: Calls
    counted: dict[str, Calls]
    bound: Bound
    job: dict[str, Any]
    expected_skipped: int
    list_problem: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """Calls both fakes answered during the job."""
        return sum(self.pipedrive.values()) + sum(self.brevo.values())

    @property
    def ratio(self) -> float:
        """Calls over the lower bound."""
        return self.calls / self.bound.total if self.bound.total else math.inf

    @property
    def ok(self) -> bool:
        """The job completed and left the list equal to the filter."""
        return self.job.get("status") == "completed" and self.list_problem is None

    def line(self) -> str:
        """The one-line summary printed when the scenario ends."""
        job = self.job
        return (
            f"[{self.size} {self.scenario}] members={self.members} wall={self.wall:.1f}s"
            f" peak_rss={self.rss_mb:.1f}MB pipedrive_calls={sum(self.pipedrive.values())}"
            f" brevo_calls={sum(self.brevo.values())} lower_bound={self.bound.total}"
            f" ratio={self.ratio:.3f} job={job.get('status')} fetched={job.get('total_fetched')}"
            f" added={job.get('total_added')} updated={job.get('total_updated')}"
            f" removed={job.get('total_removed')} skipped={job.get('total_skipped')}"
            f" (expected {self.expected_skipped})"
            f" list={'ok' if self.list_problem is None else self.list_problem}"
        )


class SizeRun:
    """The fakes and the web process of one size, and its two scenarios."""

    def __init__(self, size: int, work: Path, churn: float, settle: float, timeout: float):
        self.size = size
        self.work = work
        self.churn = churn
        self.settle = settle
        self.timeout = timeout
        started = time.perf_counter()
        self.pipedrive_app = create_pipedrive(
            PipedriveFakeConfig(
                token=PIPEDRIVE_TOKEN,
                persons=size,
                daily_token_budget=BIG,
                burst_limit=BIG,
                retry_scale=0.01,
            )
        )
        self.brevo_app = create_brevo(
            BrevoFakeConfig(
                token=BREVO_KEY,
                contacts_rate=BIG,
                processes_per_hour=BIG,
                import_seconds=0.05,
            )
        )
        # Everything seeded so far lives until the end: keep the collector off it.
        gc.collect()
        gc.freeze()
        self.state: PipedriveState = self.pipedrive_app.state.fake
        self.timelines = [
            Timeline(self.pipedrive_app, "pipedrive"),
            Timeline(self.brevo_app, "brevo"),
        ]
        self.pipedrive = ThreadedServer(self.timelines[0]).start()
        self.brevo = ThreadedServer(self.timelines[1]).start()
        self.pd_control = httpx.Client(base_url=self.pipedrive.url, timeout=120.0)
        self.brevo_control = httpx.Client(base_url=self.brevo.url, timeout=120.0)
        print(
            f"[{size}] fakes seeded and serving in {time.perf_counter() - started:.1f} s"
            f" (pipedrive {self.pipedrive.url}, brevo {self.brevo.url}/v3)",
            flush=True,
        )
        try:
            self.service = Service(service_env(work, self.pipedrive.url, self.brevo.url), work)
        except BaseException:
            self._stop_fakes()
            raise
        try:
            self.service.refresh_filters()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the web process and the fakes."""
        self.service.close()
        self._stop_fakes()

    def _stop_fakes(self) -> None:
        self.pd_control.close()
        self.brevo_control.close()
        self.pipedrive.stop()
        self.brevo.stop()
        gc.unfreeze()

    def run(self) -> Iterator[Result]:
        """The fill, then (after ``settle`` seconds and the churn) the resync."""
        first = snapshot(self.state)
        fill = self.scenario("fill", None, first)
        yield fill
        if not fill.ok:
            return
        time.sleep(self.settle)
        churn = apply_churn(self.pd_control, self.state, self.size, self.churn)
        print(
            f"[{self.size}] churn: {churn.joined} joined, {churn.left} deleted,"
            f" {churn.renamed} renamed in {churn.seconds:.1f} s",
            flush=True,
        )
        yield self.scenario("resync", first, snapshot(self.state))

    def wait_quiet(self, quiet: float = 2.0, timeout: float = 120.0) -> None:
        """Wait until neither fake has answered a call for ``quiet`` seconds: the first
        worker on a database runs every periodic duty once at start (a filter refresh among
        them), and those calls are not the job's."""
        deadline = time.monotonic() + timeout
        last = (pipedrive_calls(self.pd_control), brevo_calls(self.brevo_control))
        still_since = time.monotonic()
        while time.monotonic() - still_since < quiet:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fakes were still being called after {timeout:.0f} s")
            time.sleep(0.2)
            now = (pipedrive_calls(self.pd_control), brevo_calls(self.brevo_control))
            if now != last:
                last, still_since = now, time.monotonic()

    def scenario(self, name: str, before: Snapshot | None, after: Snapshot) -> Result:
        """Sync once with a fresh worker and measure it."""
        worker = self.service.start_worker(f"{self.size}-{name}")
        try:
            self.wait_quiet()
            pd_before = pipedrive_calls(self.pd_control)
            brevo_before = brevo_calls(self.brevo_control)
            counted_before = ledger_calls(self.service.database)
            job, started, ended = self.service.sync(self.timeout)
            rss = peak_rss_mb(worker.pid)
            pd_used = difference(pipedrive_calls(self.pd_control), pd_before)
            brevo_used = difference(brevo_calls(self.brevo_control), brevo_before)
            counted_after = ledger_calls(self.service.database)
        finally:
            stop(worker)
        counted = {
            api: difference(counted_after.get(api, Counter()), counted_before.get(api, Counter()))
            for api in ("pipedrive", "brevo")
        }
        result = Result(
            size=self.size,
            scenario=name,
            members=after.members,
            wall=ended - started,
            rss_mb=rss,
            pipedrive=pd_used,
            brevo=brevo_used,
            counted=counted,
            bound=lower_bound(before, after),
            job=job,
            expected_skipped=after.skipped,
            list_problem=self.list_problem(after),
        )
        waits = longest_waits(self.timelines, started, ended)
        if waits:
            result.notes.append("longest waits: " + "; ".join(waits))
        if job.get("status") == "processing":
            result.notes.append(f"job still processing after {self.timeout:.0f} s: stopped")
        elif job.get("status") != "completed":
            result.notes.append(f"job {job.get('status')}: {job.get('error_message')}")
        deliveries = _control(self.pd_control, "GET", "/_sandbox/deliveries")["deliveries"]
        if deliveries:
            result.notes.append(f"{len(deliveries)} webhook deliveries were attempted")
        return result

    def list_problem(self, expected: Snapshot) -> str | None:
        """None when the Brevo list holds exactly the filter's valid emails."""
        list_id = self.service.brevo_list_id()
        if list_id is None:
            return "no-list"
        body = _control(self.brevo_control, "GET", f"/_sandbox/lists/{list_id}/emails")
        held = set(body["emails"])
        wanted = set(expected.contacts)
        if held == wanted:
            return None
        return f"{len(wanted - held)}-missing/{len(held - wanted)}-extra"


# --- report ------------------------------------------------------------------------------


def details(result: Result) -> list[str]:
    """Lines breaking a run's calls down, and the cross-check with ``api_calls``."""
    lines = [
        f"    pipedrive: {calls_text(result.pipedrive)}",
        f"    brevo:     {calls_text(result.brevo)}",
        f"    bound:     {result.bound.describe()}",
    ]
    mismatches = [
        f"{api} fake {sum(fake.values())} vs api_calls {sum(result.counted[api].values())}"
        for api, fake in (("pipedrive", result.pipedrive), ("brevo", result.brevo))
        if fake != result.counted[api]
    ]
    if mismatches:
        lines.append("    cross-check DIFFERS: " + "; ".join(mismatches))
        for api in ("pipedrive", "brevo"):
            lines.append(f"      api_calls {api}: {calls_text(result.counted[api])}")
    else:
        lines.append("    cross-check: the service's api_calls table agrees with the fakes")
    lines.extend(f"    note: {note}" for note in result.notes)
    return lines


def table(results: list[Result]) -> list[str]:
    """The summary table."""
    header = (
        f"{'members':>8} {'scenario':<8} {'wall s':>8} {'peak MB':>8} {'pd calls':>8}"
        f" {'brevo':>7} {'total':>7} {'bound':>7} {'ratio':>6} {'added':>7} {'updated':>7}"
        f" {'removed':>7} {'skipped':>7}  list"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        job = r.job
        lines.append(
            f"{r.members:>8} {r.scenario:<8} {r.wall:>8.1f} {r.rss_mb:>8.1f}"
            f" {sum(r.pipedrive.values()):>8} {sum(r.brevo.values()):>7} {r.calls:>7}"
            f" {r.bound.total:>7} {r.ratio:>6.3f} {job.get('total_added')!s:>7}"
            f" {job.get('total_updated')!s:>7} {job.get('total_removed')!s:>7}"
            f" {job.get('total_skipped')!s:>7}  {r.list_problem or 'ok'}"
        )
    return lines


def verdicts(results: list[Result]) -> list[tuple[bool, str]]:
    """(met, text) for each target."""
    out: list[tuple[bool, str]] = []
    sizes = sorted({r.size for r in results})
    by_key = {(r.size, r.scenario): r for r in results}
    largest, smallest = sizes[-1], sizes[0]
    for scenario in SCENARIOS:
        big = by_key.get((largest, scenario))
        if big is None:
            out.append((False, f"{largest} {scenario}: did not run"))
            continue
        out.append(
            (
                big.rss_mb < RSS_LIMIT_MB,
                f"{largest} {scenario}: worker peak RSS {big.rss_mb:.1f} MB"
                f" < {RSS_LIMIT_MB:.0f} MB",
            )
        )
        small = by_key.get((smallest, scenario))
        if smallest != largest and small is not None:
            growth = big.rss_mb - small.rss_mb
            out.append(
                (
                    growth <= RSS_GROWTH_MB,
                    f"{largest} vs {smallest} {scenario}: peak RSS +{growth:.1f} MB"
                    f" <= {RSS_GROWTH_MB:.0f} MB",
                )
            )
    for r in results:
        out.append(
            (
                r.ratio <= CALLS_RATIO,
                f"{r.size} {r.scenario}: {r.calls} calls / lower bound {r.bound.total}"
                f" = {r.ratio:.3f} <= {CALLS_RATIO}",
            )
        )
    for r in results:
        if not r.ok:
            out.append(
                (
                    False,
                    f"{r.size} {r.scenario}: job {r.job.get('status')}, list "
                    f"{r.list_problem or 'ok'}",
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every target is met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--churn", type=float, default=0.01, help="share of N changed")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between the runs")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per job")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.sizes):
        parser.error("sizes must be positive")

    results: list[Result] = []
    errors: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="bench-resync-"))
    try:
        for size in args.sizes:
            work = base / str(size)
            work.mkdir()
            try:
                run = SizeRun(size, work, args.churn, args.settle, args.timeout)
                try:
                    for result in run.run():
                        results.append(result)
                        print(result.line(), flush=True)
                        for line in details(result):
                            print(line, flush=True)
                finally:
                    run.close()
            except (RuntimeError, OSError, httpx.HTTPError) as exc:
                errors.append(f"{size}: the run broke off: {exc} (logs in {work})")
                print(f"[{size}] the run broke off: {exc}", flush=True)
                args.keep = True
    finally:
        if args.keep:
            print(f"work directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    print()
    for line in table(results):
        print(line)
    print()
    met = verdicts(results) if results else []
    met += [(False, error) for error in errors]
    if not met:
        met = [(False, "nothing ran")]
    for ok, text in met:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in met) else 1


if __name__ == "__main__":
    sys.exit(main())
