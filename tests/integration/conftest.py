"""The service as the integration tests run it: the real ``pbsync web`` and ``pbsync worker``
processes on a fresh database and queue, pointed at the session's fakes over HTTP, driven
through the admin API."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.schema import migrate
from tests.conftest import ADMIN_PASSWORD, Started, healthy, process_env, start_pbsync, wait_for
from tests.fake_control import service_settings
from tests.fakes import RunningFake

# Periodic duties the tests keep from running on their own: the worker runs every duty at
# its first tick, and a refresh or catch-up resync of its own would race the test's.
QUIET_DUTIES = ("refresh_filters", "full_resync")
FAR_AWAY = 10**7
JOB_TIMEOUT = 30.0


class Service:
    """One running service (web and worker) and what a test asks of it."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str],
        processes: list[subprocess.Popen[bytes]],
        token: str,
    ) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.processes = processes
        self.database = tmp_path / "app.db"
        self.base = f"http://127.0.0.1:{env['PORT']}"
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=15.0
        )

    # --- the admin API -------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One admin API call, authenticated."""
        return self.http.request(method, path, **kwargs)

    def refresh(self) -> dict[str, Any]:
        """``POST /api/filters/refresh``: the filters and the created/updated/deleted counts."""
        response = self.request("POST", "/api/filters/refresh")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def filters(self) -> dict[int, dict[str, Any]]:
        """``GET /api/filters``, keyed by filter id."""
        response = self.request("GET", "/api/filters")
        assert response.status_code == 200, response.text
        return {item["id"]: item for item in response.json()["filters"]}

    def start_sync(
        self, filter_id: int, *, force: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        """``POST /api/filters/{id}/sync``: the job it started (202 asserted)."""
        response = self.request(
            "POST",
            f"/api/filters/{filter_id}/sync",
            params={"force": str(force).lower(), "dry_run": str(dry_run).lower()},
        )
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def job(self, job_id: int) -> dict[str, Any]:
        """``GET /api/jobs/{id}``."""
        response = self.request("GET", f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def wait_job(self, job_id: int, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        """The job once it is no longer ``processing``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] != "processing":
                return job
            self.check_alive()
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still processing after {timeout} s\n{self.logs()}")

    def sync(self, filter_id: int, *, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Start a sync of the filter and return the finished job."""
        job = self.start_sync(filter_id, force=force, dry_run=dry_run)
        return self.wait_job(job["id"])

    # --- the processes -------------------------------------------------------------------

    def check_alive(self) -> None:
        """Fail the test, with the logs, when the web or the worker has exited."""
        dead = [p.args for p in self.processes if p.poll() is not None]
        assert not dead, f"a service process exited: {dead}\n{self.logs()}"

    def logs(self, tail: int = 4000) -> str:
        """The end of the web's and the worker's logs."""
        parts = []
        for name in ("web", "worker"):
            path = self.tmp_path / f"{name}.log"
            text = path.read_text("utf-8", errors="replace") if path.exists() else ""
            parts.append(f"--- {name}.log ---\n{text[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM both processes and wait for them (the ``started`` fixture kills leftovers)."""
        self.http.close()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)

    def worker(self) -> subprocess.Popen[bytes]:
        """The worker process the service runs now."""
        workers = [p for p in self.processes if isinstance(p.args, list) and p.args[-1] == "worker"]
        assert len(workers) == 1, [p.args for p in self.processes]
        return workers[0]

    def stop_worker(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` to the worker, wait until it exited and forget it (``check_alive``
        then looks at the web alone); its exit code."""
        worker = self.worker()
        worker.send_signal(sig)
        code = worker.wait(timeout)
        self.processes.remove(worker)
        return code

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start a new ``pbsync worker`` with the service's environment, logging to the same
        ``worker.log``. Hand it to the ``started`` fixture too, so teardown kills it."""
        worker = start_pbsync("worker", self.env, self.tmp_path / "worker.log")
        self.processes.append(worker)
        return worker

    # --- the service's database ----------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the service's SQLite file."""
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()


def _quiet_periodic_duties(database: Path) -> None:
    """Create the schema and push the refresh and the catch-up resync far into the future."""
    migrate(database)
    connection = sqlite3.connect(database, isolation_level=None, timeout=5)
    try:
        connection.executemany(
            "INSERT INTO periodic_duties (name, next_run_at) VALUES (?, ?)",
            [(name, int(time.time()) + FAR_AWAY) for name in QUIET_DUTIES],
        )
    finally:
        connection.close()


StartService = Callable[..., Service]


@pytest.fixture
def start_service(
    tmp_path: Path,
    started: Started,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
) -> Iterator[StartService]:
    """Start web and worker against the fakes; keyword arguments are extra environment."""
    running: list[Service] = []

    def start(**overrides: str) -> Service:
        directory = tmp_path / f"service-{len(running) + 1}"
        directory.mkdir()
        pointed = service_settings(
            pipedrive_fake, brevo_fake, token="pd-integration-token", key="xkeysib-integration-key"
        )
        env = process_env(
            directory,
            **{name.upper(): value for name, value in pointed.items()},
            FILTER_REFRESH_SECONDS=str(FAR_AWAY),
            FULL_RESYNC_SECONDS=str(FAR_AWAY),
            LOG_LEVEL="INFO",
        )
        env.update(overrides)
        _quiet_periodic_duties(directory / "app.db")
        processes = [
            start_pbsync(role, env, directory / f"{role}.log") for role in ("web", "worker")
        ]
        started.processes.extend(processes)
        wait_for(lambda: healthy(env["PORT"]) or _exited(processes), timeout=20, interval=0.1)
        response = httpx.post(
            f"http://127.0.0.1:{env['PORT']}/api/session",
            json={"password": ADMIN_PASSWORD},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        service = Service(directory, env, processes, response.json()["token"])
        running.append(service)
        service.check_alive()
        return service

    yield start
    for service in running:
        service.stop()


def _exited(processes: list[subprocess.Popen[bytes]]) -> bool:
    return any(p.poll() is not None for p in processes)


@pytest.fixture
def service(start_service: StartService) -> Service:
    """The service with the default settings."""
    return start_service()
