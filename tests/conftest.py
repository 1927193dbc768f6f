"""Shared fixtures: one SQLite file per test run (Pony binds once per process), wiped
before each test that asks for it; a manual clock; the app under a TestClient; and helpers
that start the real ``pbsync`` processes on loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import freezegun
import httpx
import pytest
from starlette.testclient import TestClient

from service.clock import ManualClock
from service.config import Settings
from service.db import bind_database, bound_path
from tests.fakes import (
    BREVO_SETTINGS,
    PIPEDRIVE_SETTINGS,
    RunningFake,
    fake_fixture,
    start_fake,
)

# openapi-spec-validator picks jsonschema-rs when it is installed (schemathesis brings it);
# its errors come without the leaf structure the spec tests read (tests/sandbox), so every
# test uses the jsonschema backend, as a clone without schemathesis would. Set before any
# validator is built: the validator keeps the backend it was first built with.
os.environ.setdefault("OPENAPI_SPEC_VALIDATOR_SCHEMA_VALIDATOR_BACKEND", "jsonschema")

# freezegun ignores threads by default, which is where Pony code runs (reference P24).
freezegun.configure(
    default_ignore_list=[m for m in freezegun.config.DEFAULT_IGNORE_LIST if m != "threading"]
)

ADMIN_PASSWORD = "correct-horse-battery"
REPO = Path(__file__).resolve().parent.parent
TABLES = (
    "brevo_sends",
    "brevo_contacts",
    "filter_changes",
    "sync_members",
    "memberships",
    "sync_jobs",
    "filters",
    "session",
    "user",
    "login_failures",
    "periodic_duties",
    "api_calls",
    "api_rate_limits",
    "api_pacing",
    "inbox",
    "worker_heartbeats",
)


@pytest.fixture(scope="session")
def database_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one database file this test process binds Pony to."""
    path = bound_path() or tmp_path_factory.mktemp("db") / "app.db"
    bind_database(path)
    return path


@pytest.fixture
def clean_db(database_file: Path) -> Path:
    """The bound database, emptied of rows."""
    with contextlib.closing(sqlite3.connect(database_file, isolation_level=None)) as connection:
        for table in TABLES:
            connection.execute(f'DELETE FROM "{table}"')
    return database_file


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock(start=1_900_000_000)


@pytest.fixture
def settings(clean_db: Path) -> Settings:
    """Settings pointing at the test database, with a queue file beside it (not the
    default ``data/queue.db`` of the working directory)."""
    return Settings(
        admin_password=ADMIN_PASSWORD,
        database_url=f"sqlite:///{clean_db}",
        queue_url=f"sqlite:///{clean_db.parent / 'queue.db'}",
    )


@pytest.fixture
def client(settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    """The web app under a TestClient, lifespan run."""
    from service.app import create_app

    with TestClient(create_app(settings, clock)) as test_client:
        yield test_client


def login(client: TestClient, password: str = ADMIN_PASSWORD) -> str:
    """Log in and return the session token."""
    response = client.post("/api/session", json={"password": password})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture
def token(client: TestClient) -> str:
    """A valid session token."""
    return login(client)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """An environment for a real ``pbsync`` process with its own files under ``tmp_path``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ADMIN_", "PIPEDRIVE_", "BREVO_", "WEBHOOK_"))
    }
    env.update(
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
        QUEUE_URL=f"sqlite:///{tmp_path / 'queue.db'}",
        HOST="127.0.0.1",
        PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def start_pbsync(role: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``pbsync <role>`` with output (stdout and stderr) going to ``log_path``."""
    # The child keeps its own copy of the file handle; ours is closed at once.
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", role],
            env=env,
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects logged in ``path``, one per line; other lines are skipped."""
    entries = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def healthy(port: str) -> bool:
    """True when the web process on ``port`` answers ``/healthz`` with 200."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
    except httpx.TransportError:
        return False
    return response.status_code == 200


def child_pids(log: Path) -> dict[str, int]:
    """The pids ``serve`` logged for its web and worker children, once both are logged."""
    pids = {
        entry["role"]: int(entry["pid"])
        for entry in json_lines(log)
        if entry.get("message") == "started" and "role" in entry
    }
    return pids if set(pids) == {"web", "worker"} else {}


class Started:
    """What a test started: ``pbsync`` processes, and the pids of ``serve``'s children."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.child_pids: list[int] = []


@pytest.fixture
def started() -> Iterator[Started]:
    """Kill whatever is still running at teardown: the processes, then each child's group."""
    record = Started()
    try:
        yield record
    finally:
        for process in record.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        for pid in record.child_pids:
            # Each child of serve leads its own process group (start_new_session=True).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


# The fakes, served once per session; each test gets them reset, and every exchange with
# them is validated against the official specifications (see tests/fakes.py).


CONTRACT_REPORT = REPO / "build" / "contract-report.md"
_contract_summary: list[str] = []
_worker_ledgers: list[dict[str, Any]] = []  # on the pytest-xdist controller


@pytest.fixture(scope="session")
def contract_ledger(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Validates every exchange with the fakes; writes the coverage report at the end."""
    from sandbox.contract import ContractLedger

    ledger = ContractLedger()
    yield ledger
    worker_output = getattr(request.config, "workeroutput", None)
    if worker_output is None:
        write_contract_report(ledger)
    else:  # a pytest-xdist worker: the controller writes one report for the whole run
        worker_output["contract_ledger"] = ledger.snapshot()


def write_contract_report(ledger: Any) -> None:
    """Write the report of ``ledger`` and keep its totals for the terminal summary."""
    from service.clients import brevo, pipedrive

    operations = [(op.api, op.method, op.template) for op in pipedrive.OPERATIONS]
    operations += [(op.api, op.method, op.template) for op in brevo.OPERATIONS]
    ledger.write_report(CONTRACT_REPORT, operations)
    totals = ledger.report(operations).splitlines()[2]
    # Each test fails on a violation it did not take itself, so any left here were
    # provoked and asserted on purpose (the drift checks).
    _contract_summary.append(
        f"{totals} Any violation here was provoked and asserted by a drift check. "
        f"Report: {CONTRACT_REPORT.relative_to(REPO)}"
    )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Keep what a pytest-xdist worker's contract ledger recorded."""
    snapshot = getattr(node, "workeroutput", {}).get("contract_ledger")
    if snapshot is not None:
        _worker_ledgers.append(snapshot)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On the pytest-xdist controller, one contract report from every worker's ledger."""
    if not _worker_ledgers:
        return
    from sandbox.contract import ContractLedger

    merged = ContractLedger()
    for snapshot in _worker_ledgers:
        merged.absorb(snapshot)
    write_contract_report(merged)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a run where two tests share a node id: pytest-xdist would run one of them."""
    shared = sorted(nodeid for nodeid, n in Counter(i.nodeid for i in items).items() if n > 1)
    if shared:
        raise pytest.UsageError(f"tests sharing a node id (only one would run): {shared}")


# A test hands figures it measured to ``figures``; they are printed together at the end of
# the run, passed or failed, also from pytest-xdist workers (whose output is not shown).
FIGURES = "figures"


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a line for the run's "figures" summary."""

    def record(line: str) -> None:
        request.node.user_properties.append((FIGURES, line))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the tests measured, and what the contract check covered."""
    measured = [
        (report.nodeid, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", ())
        if key == FIGURES
    ]
    if measured:
        terminalreporter.section(FIGURES)
        shown = None
        for nodeid, value in sorted(measured, key=lambda pair: pair[0]):
            if nodeid != shown:
                terminalreporter.write_line(nodeid)
                shown = nodeid
            terminalreporter.write_line(f"  {value}")
    for line in _contract_summary:
        terminalreporter.write_line(f"API contract: {line}")


@pytest.fixture(scope="session")
def pipedrive_session(contract_ledger: Any) -> Iterator[RunningFake]:
    """The Pipedrive fake of this test session."""
    from sandbox.pipedrive import PipedriveFakeConfig, create_app

    config = PipedriveFakeConfig(retry_scale=0.01, delivery_timeout=2.0)
    app = create_app(config, sink=contract_ledger)
    yield from start_fake("pipedrive", app, config, PIPEDRIVE_SETTINGS)


@pytest.fixture(scope="session")
def brevo_session(contract_ledger: Any) -> Iterator[RunningFake]:
    """The Brevo fake of this test session."""
    from sandbox.brevo import BrevoFakeConfig, create_app

    config = BrevoFakeConfig(contacts_rate=0, processes_per_hour=0, import_seconds=0.2)
    app = create_app(config, sink=contract_ledger)
    yield from start_fake("brevo", app, config, BREVO_SETTINGS)


pipedrive_fake = pytest.fixture(fake_fixture("pipedrive_session"), name="pipedrive_fake")
brevo_fake = pytest.fixture(fake_fixture("brevo_session"), name="brevo_fake")
