"""``pbsync check`` against the fakes: good credentials pass; each problem fails with the
advice that fixes it; secrets never show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from sandbox.server import ThreadedServer
from service.check import CheckLine, print_lines, run_check
from service.clients.brevo import BrevoClient
from service.clients.usage import MemoryUsage
from service.config import Settings
from tests.conftest import process_env
from tests.fakes import RunningFake

TOKEN = "pd-token-Quince-Walrus-3391"
KEY = "xkeysib-Check-Heron-Mango-5527"


def settings_for(pipedrive: RunningFake, brevo: RunningFake, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "pipedrive_api_token": TOKEN,
        "pipedrive_base_url": pipedrive.url,
        "brevo_api_key": KEY,
        "brevo_base_url": brevo.url + "/v3",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def check(settings: Settings) -> dict[str, CheckLine]:
    return {line.name: line for line in run_check(settings, usage=MemoryUsage())}


def test_good_credentials_pass_every_check(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    lines = check(settings_for(pipedrive_fake, brevo_fake))
    assert list(lines) == [
        "pipedrive token",
        "brevo key",
        "brevo folder",
        "brevo attribute FIRSTNAME",
        "brevo attribute LASTNAME",
    ]
    assert all(line.status == "ok" for line in lines.values()), lines
    assert "Pipedrive accepted PIPEDRIVE_API_TOKEN" in lines["pipedrive token"].message
    # The demo account has no "Pipedrive" folder: the first sync will create it.
    assert "first sync creates it" in lines["brevo folder"].message
    written: list[str] = []
    assert print_lines(list(lines.values()), written.append) == 0
    assert written[0].startswith("ok   Pipedrive accepted")


def test_an_existing_pipedrive_folder_or_the_configured_one_is_named(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    bv = BrevoClient(brevo_fake.url + "/v3", KEY, usage=MemoryUsage())
    folder = bv.create_folder("Pipedrive")
    unset = check(settings_for(pipedrive_fake, brevo_fake))["brevo folder"]
    assert unset.status == "ok"
    assert f'"Pipedrive" (id {folder}) exists' in unset.message
    chosen = check(settings_for(pipedrive_fake, brevo_fake, brevo_folder_id=2))["brevo folder"]
    assert chosen.status == "ok"
    assert 'folder 2 "Marketing" exists' in chosen.message


def test_a_wrong_token_and_a_wrong_key_fail_with_the_fix(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "another-token"})
    brevo_fake.control("PUT", "/_sandbox/settings", json={"token": "another-key"})
    lines = check(settings_for(pipedrive_fake, brevo_fake))
    token, key = lines["pipedrive token"], lines["brevo key"]
    assert token.status == key.status == "fail"
    assert token.message.startswith("Pipedrive refused PIPEDRIVE_API_TOKEN (401): ")
    assert "Settings > Personal preferences > API" in token.message
    assert key.message.startswith(
        "Brevo refused BREVO_API_KEY (401): create a v3 API key in Brevo > SMTP & API and set "
        "BREVO_API_KEY"
    )
    # What needs the key is not checked, and says so.
    assert lines["brevo folder"].status == "skip"
    assert lines["brevo attribute LASTNAME"].status == "skip"
    rendered = [line.render() for line in lines.values()]
    assert all(TOKEN not in text and KEY not in text for text in rendered)
    assert print_lines(list(lines.values()), lambda _: None) == 1


def test_missing_credentials_are_reported_without_calling_anything(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    settings = settings_for(
        pipedrive_fake, brevo_fake, pipedrive_api_token=None, brevo_api_key=None
    )
    lines = check(settings)
    assert lines["pipedrive token"].status == "fail"
    assert lines["pipedrive token"].message.startswith("PIPEDRIVE_API_TOKEN is not set: ")
    assert lines["brevo key"].message.startswith("BREVO_API_KEY is not set: create a v3 API key")
    assert pipedrive_fake.control("GET", "/_sandbox/usage").json()["calls"] == {}
    assert brevo_fake.control("GET", "/_sandbox/usage").json()["calls"] == {}


def test_a_configured_folder_that_does_not_exist_fails(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    line = check(settings_for(pipedrive_fake, brevo_fake, brevo_folder_id=4242))["brevo folder"]
    assert line.status == "fail"
    assert line.message.startswith("Brevo folder BREVO_FOLDER_ID=4242 does not exist: ")
    assert '1 "Your First Folder", 2 "Marketing"' in line.message


def test_a_missing_attribute_fails_with_where_to_create_it(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    brevo_fake.control("DELETE", "/_sandbox/attributes/LASTNAME")
    lines = check(settings_for(pipedrive_fake, brevo_fake))
    assert lines["brevo attribute FIRSTNAME"].status == "ok"
    missing = lines["brevo attribute LASTNAME"]
    assert missing.status == "fail"
    assert missing.message.startswith(
        "attribute LASTNAME missing in Brevo: create it in Contacts > Settings > Contact "
        "attributes (type text)"
    )


def test_a_base_url_that_is_not_the_api_fails_plainly(
    pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    async def page(request: Request) -> Response:
        if request.url.path.startswith("/missing"):
            return PlainTextResponse("Not Found", status_code=404)
        return HTMLResponse("<html>a web site</html>")

    app = Starlette(routes=[Route("/{path:path}", page)])
    server = ThreadedServer(app).start()
    try:
        settings = settings_for(
            pipedrive_fake,
            brevo_fake,
            pipedrive_base_url=server.url + "/missing",
            brevo_base_url=server.url + "/site",
        )
        lines = check(settings)
    finally:
        server.stop()
    token, key = lines["pipedrive token"], lines["brevo key"]
    assert token.status == key.status == "fail"
    assert token.message == (
        f"Pipedrive answered 404 at {server.url}/missing (Not Found): check PIPEDRIVE_BASE_URL"
    )
    assert key.message == (
        f"{server.url}/site does not answer like the Brevo API: check BREVO_BASE_URL"
    )


@pytest.mark.integration
def test_the_cli_prints_one_line_per_check_and_exits_with_the_outcome(
    tmp_path: Path, pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    env = process_env(
        tmp_path,
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=pipedrive_fake.url,
        BREVO_API_KEY=KEY,
        BREVO_BASE_URL=brevo_fake.url + "/v3",
    )
    env.pop("ADMIN_PASSWORD")  # a tool needs no admin password

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "check"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    passed = run()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    lines = passed.stdout.splitlines()
    assert len(lines) == 5
    assert all(line.startswith("ok   ") for line in lines), lines
    # The calls were counted in the database the command bound.
    assert (tmp_path / "app.db").exists()

    brevo_fake.control("PUT", "/_sandbox/settings", json={"token": "another-key"})
    failed = run()
    assert failed.returncode == 1
    assert "FAIL Brevo refused BREVO_API_KEY (401)" in failed.stdout
    for secret in (TOKEN, KEY):
        assert secret not in failed.stdout + failed.stderr
