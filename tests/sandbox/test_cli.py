"""``pbsync sandbox`` and ``./scripts/run --sandbox``: the fakes and the service brought up
by one command, on loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port, healthy, process_env, wait_for


@pytest.mark.integration
def test_sandbox_both_serves_each_fake_and_checks_the_token(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "sandbox", "both", "--token", "pd-T"]
        + ["--brevo-token", "bv-T"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        pipedrive, brevo = urls["pipedrive"], urls["brevo"]
        ok = httpx.get(f"{pipedrive}/v1/filters", headers={"x-api-token": "pd-T"})
        assert ok.status_code == 200 and ok.json()["success"] is True
        assert httpx.get(f"{pipedrive}/v1/filters", headers={"x-api-token": "x"}).status_code == 401
        lists = httpx.get(f"{brevo}/contacts/lists", headers={"api-key": "bv-T"})
        assert lists.status_code == 200
        refused = httpx.get(f"{brevo}/contacts/lists", headers={"api-key": "pd-T"})
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthorized"
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(10) == 0
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.integration
def test_scripts_run_sandbox_brings_up_the_fakes_and_the_service(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    env.pop("ADMIN_PASSWORD")
    ports = {"PORT": free_port(), "SANDBOX_PIPEDRIVE_PORT": free_port()}
    ports["SANDBOX_BREVO_PORT"] = free_port()
    env.update({key: str(port) for key, port in ports.items()})
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            [str(REPO / "scripts" / "run"), "--sandbox"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: healthy(str(ports["PORT"])), timeout=60)
        text = log.read_text()
        assert "admin password:" in text
        password = text.split("admin password: ", 1)[1].split(")", 1)[0]
        login = httpx.post(
            f"http://127.0.0.1:{ports['PORT']}/api/session", json={"password": password}
        )
        assert login.status_code == 201
        hooks = httpx.get(
            f"http://127.0.0.1:{ports['SANDBOX_PIPEDRIVE_PORT']}/v1/webhooks",
            headers={"x-api-token": "sandbox-pipedrive-token"},
        ).json()["data"]
        assert {h["event_object"] for h in hooks} == {"person", "deal", "organization"}
        assert {h["subscription_url"] for h in hooks} == {
            f"http://127.0.0.1:{ports['PORT']}/webhooks/pipedrive"
        }
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(30)
    for port in ports.values():
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
