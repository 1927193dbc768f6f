"""A worker killed with SIGKILL in the middle of a 20,000-member resync: the filter is
freed within JOB_STALE_SECONDS plus one sweep, and the automatic re-run writes only what
was left and converges (issue 4, "Done when")."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.pipedrive import PipedriveFakeConfig
from sandbox.pipedrive import create_app as pipedrive_app
from sandbox.pipedrive.fields import condition, groups
from sandbox.server import ThreadedServer
from tests.conftest import ADMIN_PASSWORD, Started, process_env, start_pbsync, wait_for
from tests.fakes import RunningFake

pytestmark = pytest.mark.integration

MEMBERS = 20_000
STALE_SECONDS = 3
SWEEP_SECONDS = 1  # workers.worker.sweep_every(3)


@pytest.fixture
def big_pipedrive(contract_ledger: Any) -> Iterator[str]:
    """A Pipedrive fake of its own with 20,000 persons, all in filter 1."""
    server = ThreadedServer(
        pipedrive_app(PipedriveFakeConfig(persons=MEMBERS), sink=contract_ledger)
    ).start()
    try:
        yield server.url
    finally:
        server.stop()


def _api(port: str, token: str, method: str, path: str) -> httpx.Response:
    return httpx.request(
        method,
        f"http://127.0.0.1:{port}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _job(port: str, token: str, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = _api(port, token, "GET", f"/api/jobs/{job_id}").json()["job"]
    return job


def _done(port: str, token: str, job_id: int, timeout: float) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (j := _job(port, token, job_id))["status"] != "processing" and j,
        timeout=timeout,
        interval=0.1,
    )


def _list_emails(brevo: RunningFake, list_id: int) -> set[str]:
    return set(brevo.control("GET", f"/_sandbox/lists/{list_id}/emails").json()["emails"])


def test_a_killed_worker_frees_the_filter_and_the_rerun_writes_only_what_was_left(
    tmp_path: Path, big_pipedrive: str, brevo_fake: RunningFake, started: Started
) -> None:
    """SIGKILL after a confirmed removal batch; the recovery job finishes the rest exactly."""
    env = process_env(
        tmp_path,
        PIPEDRIVE_API_TOKEN="pd-token",
        PIPEDRIVE_BASE_URL=big_pipedrive,
        BREVO_API_KEY="brevo-key",
        BREVO_BASE_URL=brevo_fake.url + "/v3",
        JOB_STALE_SECONDS=str(STALE_SECONDS),
        REMOVAL_BRAKE_RATIO="0.5",
        FILTER_REFRESH_SECONDS="3600",
    )
    port = env["PORT"]
    web = start_pbsync("web", env, tmp_path / "web.log")
    worker = start_pbsync("worker", env, tmp_path / "worker-1.log")
    started.processes += [web, worker]
    wait_for(lambda: _healthy(port), timeout=20)
    token = httpx.post(
        f"http://127.0.0.1:{port}/api/session", json={"password": ADMIN_PASSWORD}, timeout=10
    ).json()["token"]
    assert _api(port, token, "POST", "/api/filters/refresh").status_code == 200

    fill = _api(port, token, "POST", "/api/filters/1/sync").json()["job"]
    fill = _done(port, token, fill["id"], timeout=90)
    assert fill["status"] == "completed", fill
    members = httpx.get(f"{big_pipedrive}/_sandbox/filters/1/members", timeout=30).json()
    assert fill["total_fetched"] == MEMBERS
    list_id = next(
        f["brevo_list_id"]
        for f in _api(port, token, "GET", "/api/filters").json()["filters"]
        if f["id"] == 1
    )
    assert _list_emails(brevo_fake, list_id) == set(members["emails"])

    # A third of the members leave at once; each removal call is slowed so the kill lands
    # between confirmed batches.
    narrowed = groups([condition("person", "owner_id", "!=", "1001")])
    httpx.patch(
        f"{big_pipedrive}/_sandbox/filters/1", json={"conditions": narrowed}, timeout=10
    ).raise_for_status()
    remaining = httpx.get(f"{big_pipedrive}/_sandbox/filters/1/members", timeout=30).json()
    leaving = set(members["emails"]) - set(remaining["emails"])
    assert len(leaving) > 10 * 150
    brevo_fake.control(
        "PUT",
        "/_sandbox/faults",
        json={"latency": [{"seconds": 0.1, "path": "/v3/contacts/lists/*/contacts/remove"}]},
    )

    resync = _api(port, token, "POST", "/api/filters/1/sync").json()["job"]
    wait_for(
        lambda: _job(port, token, resync["id"])["total_removed"] > 0, timeout=60, interval=0.02
    )
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = time.monotonic()
    time.sleep(0.5)  # a removal already received by the fake finishes there
    in_brevo = _list_emails(brevo_fake, list_id)
    removed_before_kill = len(set(members["emails"]) - in_brevo)
    assert 0 < removed_before_kill < len(leaving)

    # A new worker's sweeper declares the job dead and starts its recovery.
    started.processes.append(start_pbsync("worker", env, tmp_path / "worker-2.log"))
    dead = _done(port, token, resync["id"], timeout=STALE_SECONDS + SWEEP_SECONDS + 10)
    freed_after = time.monotonic() - killed_at
    assert dead["status"] == "failed"
    assert dead["error_message"] == "worker stopped during the job"
    assert freed_after <= STALE_SECONDS + SWEEP_SECONDS + 3  # + worker start-up
    jobs = _api(port, token, "GET", "/api/jobs?filter_id=1").json()["jobs"]
    recovery = next(j for j in jobs if j["trigger"] == "recovery")
    recovery = _done(port, token, recovery["id"], timeout=60)

    assert recovery["status"] == "completed", recovery
    assert recovery["kind"] == "full"
    assert recovery["total_fetched"] == len(remaining["ids"])
    assert recovery["total_added"] == 0
    assert recovery["total_updated"] == 0
    assert recovery["total_removed"] == len(leaving) - removed_before_kill
    assert _list_emails(brevo_fake, list_id) == set(remaining["emails"])


def _healthy(port: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
