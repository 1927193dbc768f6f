"""The ``pbsync`` command running the real service: what reaches its log."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Started,
    child_pids,
    healthy,
    json_lines,
    process_env,
    start_pbsync,
    wait_for,
)

ADMIN = "Admin-Pw-Quokka-Zebra-4417-Xylophone"
WRONG = "Wrong-Pw-Narwhal-Tapioca-9923"
PIPEDRIVE = "pd-token-Marmalade-Okapi-5561"
BREVO = "xkeysib-Brevo-Pangolin-Saffron-7708"
WEBHOOK = "Webhook-Pw-Axolotl-Paprika-3350"


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
    started.child_pids.extend(wait_for(lambda: child_pids(log), timeout=15).values())
    wait_for(lambda: healthy(env["PORT"]), timeout=15, interval=0.2)

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
