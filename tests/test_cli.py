"""The ``pbsync`` command running the real service: what reaches its log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import process_env, start_pbsync, wait_for

ADMIN = "Admin-Pw-Quokka-Zebra-4417-Xylophone"
WRONG = "Wrong-Pw-Narwhal-Tapioca-9923"
PIPEDRIVE = "pd-token-Marmalade-Okapi-5561"
BREVO = "xkeysib-Brevo-Pangolin-Saffron-7708"
WEBHOOK = "Webhook-Pw-Axolotl-Paprika-3350"


class Started:
    """What a test started: the ``serve`` processes and the pids of their children."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.child_pids: list[int] = []


@pytest.fixture
def started() -> Iterator[Started]:
    """Kill whatever is still running at teardown: ``serve`` itself, then each child's group."""
    record = Started()
    try:
        yield record
    finally:
        for process in record.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        for pid in record.child_pids:
            # Each child leads its own process group (start_new_session=True).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


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


def child_pids(log: Path) -> list[int]:
    """The pids ``serve`` logged for its web and worker children, once both are logged."""
    pids = {
        entry["role"]: int(entry["pid"])
        for entry in json_lines(log)
        if entry.get("message") == "started" and "role" in entry
    }
    return list(pids.values()) if set(pids) == {"web", "worker"} else []


def healthy(base: str) -> bool:
    """True when ``/healthz`` answers 200."""
    try:
        return httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.integration
def test_known_secrets_never_reach_a_log_line(tmp_path: Path, started: Started) -> None:
    """Configured secrets, a session token and a wrong password sent in requests never
    appear in the combined log of serve, web and worker, which is JSON lines only."""
    env = process_env(
        tmp_path,
        ADMIN_PASSWORD=ADMIN,
        PIPEDRIVE_API_TOKEN=PIPEDRIVE,
        BREVO_API_KEY=BREVO,
        WEBHOOK_USER="pd",
        WEBHOOK_PASSWORD=WEBHOOK,
        LOG_LEVEL="DEBUG",
    )
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{env['PORT']}"
    serve = start_pbsync("serve", env, log)
    started.processes.append(serve)
    started.child_pids.extend(wait_for(lambda: child_pids(log), timeout=15))
    wait_for(lambda: healthy(base), timeout=15, interval=0.2)

    errors: list[httpx.Response] = []
    with httpx.Client(base_url=base, timeout=5.0) as client:
        response = client.post("/api/session", json={"password": ADMIN})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}

        response = client.post("/api/session", json={"password": WRONG})
        assert response.status_code == 401
        errors.append(response)

        assert client.get("/api/jobs", headers=bearer).status_code == 200

        response = client.get("/api/jobs", params={"before_id": token}, headers=bearer)
        assert response.status_code == 400
        errors.append(response)

        response = client.get("/api/filters", headers={"Cookie": f"pbsync_session={token}"})
        assert response.status_code == 200

        response = client.get("/api/jobs", headers={"Authorization": f"Bearer {BREVO}"})
        assert response.status_code == 401
        errors.append(response)

        assert client.delete("/api/session", headers=bearer).status_code == 204
        response = client.get("/api/jobs", headers=bearer)
        assert response.status_code == 401
        errors.append(response)

    secrets = {
        "admin password": ADMIN,
        "wrong password": WRONG,
        "pipedrive token": PIPEDRIVE,
        "brevo key": BREVO,
        "webhook password": WEBHOOK,
        "session token": token,
    }
    for response in errors:
        leaked = [name for name, value in secrets.items() if value in response.text]
        assert leaked == [], (response.request.url.path, response.text)

    serve.send_signal(signal.SIGTERM)
    assert serve.wait(40) == 0

    text = log.read_text("utf-8")
    assert text.strip(), "the log is empty"
    leaked = [name for name, value in secrets.items() if value in text]
    assert leaked == [], leaked
    for line in text.splitlines():
        if line.strip():
            assert isinstance(json.loads(line), dict), line
    # The requests above were logged (redacted), so the check covered them.
    messages = [entry.get("message", "") for entry in json_lines(log)]
    assert "admin login failed" in messages
    assert any("/api/jobs?before_id=" in message for message in messages)
