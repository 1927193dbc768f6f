"""Issue 6, "Auth and secrets", row S13 against the real processes: API keys, passwords
and session tokens never appear in a log line, an error body or the status.

The real ``pbsync web`` and ``pbsync worker`` run against the session's fakes with
distinctive secrets made for this run (the fakes accept only the service's keys). The test
logs in (wrongly, then rightly), registers the webhooks with ``pbsync webhooks install``,
lets the fake Pipedrive deliver real webhooks and posts deliveries with wrong or garbled
credentials itself, runs a full and an incremental sync, makes Brevo refuse the key (401)
and fail (500), makes Pipedrive refuse the token and fail for good, runs ``pbsync check``,
reads the status and logs out. Then every line the processes wrote and every response
body must be free of each secret, in clear and in the encoded forms it travels in (the
base64 of the Basic credentials, the ``Bearer`` header, URL and JSON escapes).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from service.schema import migrate
from tests.conftest import Started, healthy, process_env, start_pbsync, wait_for
from tests.fake_control import Brevo, Pipedrive, service_settings
from tests.fakes import RunningFake
from tests.integration.conftest import Service

pytestmark = pytest.mark.integration

HOOK_USER = "pipedrive-s13"
TIER = "Secrets"
QUIET_DUTIES = ("refresh_filters", "full_resync")
FAR_AWAY = 10**7
SETTLE_SECONDS = 20.0


@dataclass(frozen=True)
class RunSecrets:
    """The secrets of one run, distinctive enough to be found anywhere they leak."""

    admin_password: str
    pipedrive_token: str
    brevo_key: str
    webhook_password: str

    @classmethod
    def new(cls) -> RunSecrets:
        """Fresh random values with a recognisable prefix."""
        return cls(
            admin_password=f"S13-admin-{secrets.token_hex(10)}",
            pipedrive_token=f"s13pd{secrets.token_hex(18)}",
            brevo_key=f"xkeysib-s13-{secrets.token_hex(24)}",
            webhook_password=f"S13-hook-{secrets.token_hex(10)}",
        )


def leaked_forms(secret: str) -> set[str]:
    """A secret in the forms it could leak in: clear, URL-encoded, JSON-escaped, base64."""
    return {
        secret,
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        base64.b64encode(secret.encode()).decode(),
    }


def basic_value(user: str, password: str) -> str:
    """The base64 of HTTP Basic credentials."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


class Exchanges:
    """Every response the test received from the service, with what it was for."""

    def __init__(self) -> None:
        self.label = "start"
        self.responses: list[tuple[str, httpx.Response]] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append((self.label, response))

    def client(self, base: str, **kwargs: Any) -> httpx.Client:
        """An HTTP client whose every response is recorded."""
        return httpx.Client(base_url=base, timeout=30.0, event_hooks={"response": [self]}, **kwargs)


def quiet_periodic_duties(database: Path) -> None:
    """Create the schema and push the worker's refresh and catch-up resync far away, so
    that only the test's own calls touch the filters."""
    migrate(database)
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.executemany(
            "INSERT INTO periodic_duties (name, next_run_at) VALUES (?, ?)",
            [(name, int(time.time()) + FAR_AWAY) for name in QUIET_DUTIES],
        )


@dataclass
class Running:
    """The started processes and what the test needs to talk to them."""

    directory: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]
    secrets: RunSecrets

    @property
    def base(self) -> str:
        """The web process's address."""
        return f"http://127.0.0.1:{self.env['PORT']}"

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pbsync <args>`` with the service's environment; output captured."""
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def running(
    tmp_path: Path, started: Started, pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> Running:
    """Web and worker with this run's secrets, at DEBUG, against fakes that accept only the
    service's own Pipedrive token and Brevo key."""
    run_secrets = RunSecrets.new()
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": run_secrets.pipedrive_token})
    brevo_fake.control("PUT", "/_sandbox/settings", json={"token": run_secrets.brevo_key})
    directory = tmp_path / "service"
    directory.mkdir()
    pointed = service_settings(
        pipedrive_fake, brevo_fake, token=run_secrets.pipedrive_token, key=run_secrets.brevo_key
    )
    env = process_env(
        directory,
        **{name.upper(): value for name, value in pointed.items()},
        ADMIN_PASSWORD=run_secrets.admin_password,
        WEBHOOK_USER=HOOK_USER,
        WEBHOOK_PASSWORD=run_secrets.webhook_password,
        SYNC_COALESCE_SECONDS="0.5",
        FILTER_REFRESH_SECONDS=str(FAR_AWAY),
        FULL_RESYNC_SECONDS=str(FAR_AWAY),
        LOG_LEVEL="DEBUG",
    )
    quiet_periodic_duties(directory / "app.db")
    processes = [start_pbsync(role, env, directory / f"{role}.log") for role in ("web", "worker")]
    started.processes.extend(processes)
    wait_for(
        lambda: healthy(env["PORT"]) or any(p.poll() is not None for p in processes), timeout=20
    )
    assert all(p.poll() is None for p in processes), (directory / "web.log").read_text()
    return Running(directory, env, processes, run_secrets)


# --- the exercise -------------------------------------------------------------------------


def settle(service: Service, pipedrive: Pipedrive, deliveries: int) -> None:
    """Wait until the fake saw ``deliveries`` events acknowledged and nothing is pending."""

    def done() -> bool:
        pending = service.query(
            "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending')"
            " + (SELECT COUNT(*) FROM filter_changes)"
            " + (SELECT COUNT(*) FROM sync_jobs WHERE status = 'processing')"
        )[0][0]
        return pipedrive.delivered_events() >= deliveries and pending == 0

    deadline = time.monotonic() + SETTLE_SECONDS
    while not done():
        service.check_alive()
        assert time.monotonic() < deadline, f"not settled\n{service.logs()}"
        time.sleep(0.1)


def test_S13_no_secret_in_any_log_line_error_body_or_status_of_the_real_processes(
    running: Running, pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    """Logins good and bad, webhooks with good, wrong and garbled credentials, a full and an
    incremental sync, Brevo answering 401 and 500, Pipedrive refusing the token and failing,
    ``pbsync webhooks install`` and ``pbsync check``, the status, a logout: then no secret
    in the processes' logs, the tools' output or any response body."""
    run = running.secrets
    near_miss = run.admin_password[:-1] + ("0" if run.admin_password[-1] != "0" else "1")
    wrong_hook_password = run.webhook_password + "-wrong"
    exchanges = Exchanges()
    pipedrive = Pipedrive(pipedrive_fake, tier=TIER)
    brevo = Brevo(brevo_fake)
    hook_url = running.base + "/webhooks/pipedrive"
    json_type = {"Content-Type": "application/json"}
    tool_output: list[str] = []

    with exchanges.client(running.base) as client:
        exchanges.label = "wrong login"
        assert client.post("/api/session", json={"password": near_miss}).status_code == 401
        exchanges.label = "login"
        login = client.post("/api/session", json={"password": run.admin_password})
        assert login.status_code == 201, login.text
        token: str = login.json()["token"]
        wrong_token = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        exchanges.label = "wrong token"
        refused = client.get("/api/jobs", headers={"Authorization": f"Bearer {wrong_token}"})
        assert refused.status_code == 401
        exchanges.label = "cookie status"
        assert client.get("/api/status").status_code == 200  # by the login's cookie

        service = Service(running.directory, running.env, running.processes, token)
        service.http.event_hooks["response"].append(exchanges)
        try:
            # Pipedrive's webhooks, registered by the tool with the webhook password.
            installed = running.tool("webhooks", "install", "--url", hook_url)
            tool_output.append(installed.stdout + installed.stderr)
            assert installed.returncode == 0, installed.stdout + installed.stderr

            exchanges.label = "first sync"
            filter_id = pipedrive.people_filter("Secrets")
            person = pipedrive.person("Ada", "Lovelace", "ada.s13@example.com")
            service.refresh()
            first = service.sync(filter_id)
            assert first["status"] == "completed", first
            settle(service, pipedrive, 1)

            exchanges.label = "incremental sync"
            pipedrive.person("Grace", "Hopper", "grace.s13@example.com")
            pipedrive.set_tier(person, None)
            settle(service, pipedrive, 3)
            incremental = service.query(
                "SELECT COUNT(*) FROM sync_jobs WHERE kind = 'incremental' AND status = ?",
                "completed",
            )[0][0]
            assert incremental >= 1, service.logs()

            exchanges.label = "bad webhooks"
            delivery = {"meta": {"id": "s13-by-hand", "entity": "person", "action": "change"}}
            for authorization in (
                "Basic " + basic_value(HOOK_USER, wrong_hook_password),
                "Basic " + basic_value("someone", run.webhook_password),
                "Basic " + run.webhook_password,
                f"Bearer {token}",
            ):
                response = client.post(
                    hook_url, json=delivery, headers={"Authorization": authorization}
                )
                assert response.status_code == 401, response.text
            assert client.post(hook_url, json=delivery).status_code == 401
            good = {"Authorization": "Basic " + basic_value(HOOK_USER, run.webhook_password)}
            typed = client.post(hook_url, content=b"{}", headers={**good, "Content-Type": "a/b"})
            assert typed.status_code == 415
            broken = client.post(hook_url, content=b"{", headers={**good, **json_type})
            assert broken.status_code == 400

            exchanges.label = "brevo 500"
            brevo.faults({"kind": "500", "path": "/v3/*", "count": 2})
            retried_job = service.sync(filter_id)
            assert retried_job["status"] == "completed", retried_job

            exchanges.label = "pipedrive 500"
            pipedrive_fake.control(
                "PUT",
                "/_sandbox/faults",
                json={
                    "faults": [{"kind": "500", "path": "/v1/filters", "count": 5}],
                    "latency": [],
                },
            )
            answer = service.request("POST", "/api/filters/refresh")
            assert answer.status_code == 502, answer.text
            assert "500" in answer.json()["error"], answer.text
            pipedrive_fake.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})

            checked = running.tool("check")
            tool_output.append(checked.stdout + checked.stderr)
            assert "ok" in checked.stdout, checked.stdout + checked.stderr

            # After a 401 the service holds back the API's work for a while (R12), so
            # the refused keys come after every other call to that API.
            exchanges.label = "brevo 401"
            brevo_fake.control("PUT", "/_sandbox/settings", json={"token": "another-brevo-key"})
            refused_job = service.sync(filter_id)
            assert refused_job["status"] == "failed", refused_job
            assert "401" in (refused_job["error_message"] or ""), refused_job
            brevo_fake.control("PUT", "/_sandbox/settings", json={"token": run.brevo_key})

            exchanges.label = "pipedrive 401"
            pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "another-token"})
            answer = service.request("POST", "/api/filters/refresh")
            assert answer.status_code == 502, answer.text
            pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": run.pipedrive_token})

            exchanges.label = "status"
            status = service.request("GET", "/api/status")
            assert status.status_code == 200
            exchanges.label = "jobs"
            assert service.request("GET", "/api/jobs").status_code == 200
            exchanges.label = "logout"
            assert service.request("DELETE", "/api/session").status_code == 204
            exchanges.label = "after logout"
            assert service.request("GET", "/api/status").status_code == 401
        finally:
            service.stop()

    logs = {
        name: (running.directory / f"{name}.log").read_text("utf-8") for name in ("web", "worker")
    }
    # The check is not vacuous: what the exercise did was logged.
    for name, message in (
        ("web", "admin login failed"),
        ("web", "admin logged in"),
        ("web", "webhook authentication failed"),
        ("web", "webhook stored"),
        ("worker", "api call retried"),
    ):
        assert message in logs[name], (name, message, logs[name][-3000:])

    forbidden: set[str] = set()
    for secret in (
        run.admin_password,
        run.pipedrive_token,
        run.brevo_key,
        run.webhook_password,
        near_miss,
        wrong_hook_password,
        token,
        wrong_token,
    ):
        forbidden |= leaked_forms(secret)
    forbidden |= {
        token.split("_", 1)[1],
        f"Bearer {token}",
        basic_value(HOOK_USER, run.webhook_password),
        basic_value(HOOK_USER, wrong_hook_password),
    }

    def leaks(text: str) -> list[str]:
        return sorted(form for form in forbidden if form in text)

    for name, text in logs.items():
        for number, line in enumerate(text.splitlines(), 1):
            assert not leaks(line), (f"{name}.log:{number}", leaks(line), line)
    for output in tool_output:
        assert not leaks(output), (leaks(output), output)
    for label, response in exchanges.responses:
        body = response.text
        headers = dict(response.headers)
        if label == "login" and response.request.url.path == "/api/session":
            # The one answer the token belongs in: the login's body and cookie.
            body = body.replace(token, "")
            headers.pop("set-cookie")
        assert not leaks(body), (label, response.request.url, leaks(body), body)
        assert not leaks(str(headers)), (label, response.request.url, headers)
    refusals = [response for _, response in exchanges.responses if response.status_code >= 400]
    assert len(refusals) >= 12, len(refusals)
