"""Our webhooks in the Pipedrive fake, over real HTTP: install is idempotent and leaves
other webhooks alone, status says how each stands, ensure registers a deleted one again,
and ``pbsync webhooks`` does the same from the command line."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.pipedrive.model import ADMIN_USER_ID
from service.clients.http import ClientPolicy
from service.clients.pipedrive import PipedriveClient, Webhook
from service.clients.usage import MemoryUsage
from service.webhooks_install import (
    EVENT_OBJECTS,
    InstallFailed,
    WebhookTarget,
    ensure_webhooks,
    install_lines,
    install_webhooks,
    is_ours,
    shown_url,
    status_lines,
    webhook_name,
    webhook_status,
)
from tests.conftest import process_env
from tests.fakes import RunningFake

FAST = ClientPolicy(connect_timeout=1.0, read_timeout=2.0, max_attempts=2, backoff_base=0.01)
URL = "https://sync.example.com/webhooks/pipedrive"
OTHER_URL = "https://new.example.com/webhooks/pipedrive"
USER = "pipedrive"
PASSWORD = "Hook-Pw-Tamarind-Lynx-8812"
TOKEN = "pd-token-Webhook-Ibis-2290"


@pytest.fixture
def pipedrive(pipedrive_fake: RunningFake) -> PipedriveClient:
    return PipedriveClient(
        pipedrive_fake.url, TOKEN, usage=MemoryUsage(), policy=FAST, requests_per_second=1000
    )


def calls(client: PipedriveClient, method: str, template: str) -> int:
    usage = client.http.usage
    assert isinstance(usage, MemoryUsage)
    return usage.count("pipedrive", method, template)


def by_object(webhooks: list[Webhook]) -> dict[str, Webhook]:
    return {w.event_object: w for w in webhooks}


def ours(client: PipedriveClient) -> list[Webhook]:
    return [w for w in client.list_webhooks() if is_ours(w)]


def stored_passwords(pipedrive_fake: RunningFake) -> dict[int, Any]:
    """The password the fake keeps for each webhook (the client never reads it)."""
    return {
        webhook_id: webhook.http_auth_password
        for webhook_id, webhook in pipedrive_fake.app.state.fake.webhooks.items()
    }


def plant(pipedrive_fake: RunningFake, **fields: Any) -> Any:
    """Register a webhook in the fake directly (person, ours by its name, unless told)."""
    values: dict[str, Any] = {
        "subscription_url": URL,
        "event_action": "*",
        "event_object": "person",
        "name": "pipedrive-brevo-sync",
        "version": "2.0",
        "user_id": ADMIN_USER_ID,
        "http_auth_user": USER,
        "http_auth_password": "x",
    }
    values.update(fields)
    return pipedrive_fake.app.state.fake.add_webhook(**values)


def ban(pipedrive_fake: RunningFake, webhook_id: int) -> None:
    """Put the webhook in a delivery ban, as ten failed first attempts do: listed inactive."""
    pipedrive_fake.app.state.fake.webhooks[webhook_id].banned_until = time.monotonic() + 3600


def test_install_creates_one_per_object_and_a_second_install_creates_none(
    pipedrive: PipedriveClient, pipedrive_fake: RunningFake
) -> None:
    first = install_webhooks(pipedrive, URL, USER, PASSWORD)
    assert sorted(w.event_object for w in first.created) == sorted(EVENT_OBJECTS)
    assert (first.kept, first.replaced, first.removed) == ([], [], [])
    for webhook in first.created:
        assert webhook.name == webhook_name(webhook.event_object)
        assert webhook.name.startswith("pipedrive-brevo-sync")
        assert (webhook.subscription_url, webhook.event_action, webhook.version) == (
            URL,
            "*",
            "2.0",
        )
        assert webhook.http_auth_user == USER
    assert set(stored_passwords(pipedrive_fake).values()) == {PASSWORD}

    second = install_webhooks(pipedrive, URL, USER, PASSWORD)
    assert second.created == [] and second.replaced == [] and second.removed == []
    assert {w.id for w in second.kept} == {w.id for w in first.created}
    assert calls(pipedrive, "POST", "/v1/webhooks") == 3
    assert calls(pipedrive, "DELETE", "/v1/webhooks/{id}") == 0
    assert len(pipedrive.list_webhooks()) == 3


def test_a_changed_url_replaces_ours_and_leaves_other_webhooks_alone(
    pipedrive: PipedriveClient,
) -> None:
    foreign = pipedrive.create_webhook(URL, "*", "person", "zapier person hook", "zap", "zap-pw")
    first = install_webhooks(pipedrive, URL, USER, PASSWORD)
    assert len(first.created) == 3  # the foreign one, same URL and object, is not ours

    moved = install_webhooks(pipedrive, OTHER_URL, USER, PASSWORD)
    assert moved.created == [] and moved.kept == []
    old = by_object(first.created)
    for replacement in moved.replaced:
        assert replacement.old == old[replacement.new.event_object]
        assert replacement.new.subscription_url == OTHER_URL
        assert replacement.reason == "URL differs"
    assert len(moved.replaced) == 3
    listed = {w.id: w for w in pipedrive.list_webhooks()}
    assert listed[foreign.id] == foreign
    assert not {w.id for w in first.created} & set(listed)
    assert {w.subscription_url for w in listed.values() if is_ours(w)} == {OTHER_URL}

    lines = install_lines(moved)
    assert [line.split()[:2] for line in lines] == [
        ["replaced", "person"],
        ["replaced", "deal"],
        ["replaced", "organization"],
    ]
    assert f"(was webhook {old['person'].id}, {URL}: URL differs)" in lines[0]


def test_a_changed_user_or_a_forced_replace_replaces_ours(
    pipedrive: PipedriveClient, pipedrive_fake: RunningFake
) -> None:
    install_webhooks(pipedrive, URL, USER, PASSWORD)
    renamed = install_webhooks(pipedrive, URL, "pd-hooks", PASSWORD)
    assert {r.reason for r in renamed.replaced} == {"user differs"}
    assert {w.http_auth_user for w in ours(pipedrive)} == {"pd-hooks"}

    # A new password cannot be seen in Pipedrive: --replace sends it anyway.
    forced = install_webhooks(pipedrive, URL, "pd-hooks", "New-Pw-Quail-7781", replace=True)
    assert {r.reason for r in forced.replaced} == {"replace requested"}
    assert set(stored_passwords(pipedrive_fake).values()) == {"New-Pw-Quail-7781"}


def test_duplicates_of_ours_are_removed_and_old_style_ones_kept_or_replaced(
    pipedrive: PipedriveClient, pipedrive_fake: RunningFake
) -> None:
    installed = by_object(install_webhooks(pipedrive, URL, USER, PASSWORD).created)
    extra = pipedrive.create_webhook(URL, "*", "deal", webhook_name("deal"), USER, PASSWORD)
    result = install_webhooks(pipedrive, URL, USER, PASSWORD)
    assert [w.id for w in result.removed] == [extra.id]
    assert {w.id for w in result.kept} == {w.id for w in installed.values()}
    assert result.created == [] and result.replaced == []
    assert f"removed  deal         webhook {extra.id} -> {URL}" in install_lines(result)

    # What an earlier release registered (plain prefix as the name) is ours too: a matching
    # one is kept, a version 1.0 one is replaced.
    pipedrive.delete_webhook(installed["organization"].id)
    pipedrive.delete_webhook(installed["person"].id)
    plain = pipedrive.create_webhook(URL, "*", "organization", "pipedrive-brevo-sync", USER, "x")
    # The spec of POST /v1/webhooks lists only version 2.0 actions: planted in the fake.
    v1 = plant(pipedrive_fake, event_action="added", version="1.0")
    fixed = install_webhooks(pipedrive, URL, USER, PASSWORD)
    assert plain.id in {w.id for w in fixed.kept}
    (replacement,) = fixed.replaced
    assert replacement.old.id == v1.id and replacement.reason == "action differs"
    assert (replacement.new.version, replacement.new.event_action) == ("2.0", "*")
    assert len(ours(pipedrive)) == 3


def test_status_says_for_each_object_how_it_stands(pipedrive: PipedriveClient) -> None:
    missing = webhook_status(pipedrive, URL, USER)
    assert [(s.event_object, s.registered, s.matches) for s in missing] == [
        ("person", False, False),
        ("deal", False, False),
        ("organization", False, False),
    ]
    assert status_lines(missing, URL)[0] == (
        "MISSING  person       no webhook of ours: run pbsync webhooks install"
    )

    installed = by_object(install_webhooks(pipedrive, URL, USER, PASSWORD).created)
    statuses = webhook_status(pipedrive, URL, USER)
    assert all(s.registered and s.active and s.matches for s in statuses)
    assert [s.webhook.subscription_url for s in statuses if s.webhook] == [URL] * 3
    person = installed["person"].id
    assert (
        status_lines(statuses, URL)[0]
        == f"ok       person       webhook {person} -> {URL} (active)"
    )

    elsewhere = webhook_status(pipedrive, OTHER_URL)
    assert [s.matches for s in elsewhere] == [False] * 3
    assert status_lines(elsewhere, OTHER_URL)[1].startswith(
        f"DIFFERS  deal         webhook {installed['deal'].id} -> {URL} "
        f"(URL differs; configured: {OTHER_URL};"
    )
    other_user = webhook_status(pipedrive, URL, "someone-else")
    assert {(s.matches, s.difference) for s in other_user} == {(False, "user differs")}
    unknown = webhook_status(pipedrive, None)
    assert [s.matches for s in unknown] == [None] * 3
    assert "(active; no URL configured to compare)" in status_lines(unknown, None)[2]
    assert calls(pipedrive, "POST", "/v1/webhooks") == 3


def test_ensure_registers_a_deleted_webhook_again_and_says_so(
    pipedrive: PipedriveClient, caplog: pytest.LogCaptureFixture
) -> None:
    target = WebhookTarget(URL, USER, PASSWORD)
    installed = by_object(install_webhooks(pipedrive, URL, USER, PASSWORD).created)
    assert ensure_webhooks(pipedrive, target) == []
    assert (calls(pipedrive, "GET", "/v1/webhooks"), calls(pipedrive, "POST", "/v1/webhooks")) == (
        2,
        3,
    )

    pipedrive.delete_webhook(installed["deal"].id)  # as Pipedrive does after 3 failed days
    with caplog.at_level(logging.WARNING, logger="service.webhooks_install"):
        (created,) = ensure_webhooks(pipedrive, target)
    assert (created.event_object, created.subscription_url, created.http_auth_user) == (
        "deal",
        URL,
        USER,
    )
    (record,) = caplog.records
    assert "registered again" in record.getMessage()
    assert record.event_object == "deal" and record.webhook_id == created.id  # type: ignore[attr-defined]
    assert PASSWORD not in caplog.text
    assert by_object(ours(pipedrive))["deal"].id == created.id
    assert len(ours(pipedrive)) == 3


def test_ensure_removes_a_duplicate_and_only_warns_about_a_different_url(
    pipedrive: PipedriveClient, caplog: pytest.LogCaptureFixture
) -> None:
    install_webhooks(pipedrive, URL, USER, PASSWORD)
    extra = pipedrive.create_webhook(URL, "*", "person", webhook_name("person"), USER, PASSWORD)
    assert ensure_webhooks(pipedrive, WebhookTarget(URL, USER, PASSWORD)) == []
    assert extra.id not in {w.id for w in pipedrive.list_webhooks()}

    with caplog.at_level(logging.WARNING, logger="service.webhooks_install"):
        assert ensure_webhooks(pipedrive, WebhookTarget(OTHER_URL, USER, PASSWORD)) == []
    assert {r.reason for r in caplog.records} == {"URL differs"}  # type: ignore[attr-defined]
    assert len(caplog.records) == 3
    assert {w.subscription_url for w in ours(pipedrive)} == {URL}


def test_an_inactive_webhook_of_ours_is_shown_warned_about_and_replaced_by_install(
    pipedrive: PipedriveClient, pipedrive_fake: RunningFake, caplog: pytest.LogCaptureFixture
) -> None:
    installed = by_object(install_webhooks(pipedrive, URL, USER, PASSWORD).created)
    ban(pipedrive_fake, installed["organization"].id)
    (organization,) = [s for s in webhook_status(pipedrive, URL, USER) if not s.active]
    assert organization.registered and organization.matches
    assert status_lines([organization], URL)[0].startswith("INACTIVE organization webhook")

    with caplog.at_level(logging.WARNING, logger="service.webhooks_install"):
        # Not missing: the refresh only warns (a ban lifts itself after 30 minutes).
        assert ensure_webhooks(pipedrive, WebhookTarget(URL, USER, PASSWORD)) == []
    (record,) = caplog.records
    assert "inactive" in record.getMessage()
    assert record.webhook_id == installed["organization"].id  # type: ignore[attr-defined]

    result = install_webhooks(pipedrive, URL, USER, PASSWORD)
    (replacement,) = result.replaced
    assert replacement.old.id == installed["organization"].id
    assert replacement.reason == "inactive" and replacement.new.is_active
    assert len(result.kept) == 2


def test_a_failed_call_reports_what_was_done_before_it(
    pipedrive: PipedriveClient, pipedrive_fake: RunningFake
) -> None:
    with pytest.raises(InstallFailed) as failed:
        install_webhooks(pipedrive, "ftp://sync.example.com/hook", USER, PASSWORD)
    assert failed.value.error.status == 400
    assert failed.value.done.created == []
    assert "400" in str(failed.value) and PASSWORD not in str(failed.value)

    # Replacing deletes first: a create that fails then leaves the deletion on record.
    installed = by_object(install_webhooks(pipedrive, URL, USER, PASSWORD).created)
    with pytest.raises(InstallFailed) as failed:
        install_webhooks(pipedrive, "ftp://sync.example.com/hook", USER, PASSWORD)
    assert failed.value.done.removed == [installed["person"]]
    assert failed.value.done.replaced == []
    assert install_lines(failed.value.done) == [
        f"removed  person       webhook {installed['person'].id} -> {URL}"
    ]
    assert sorted(w.event_object for w in ours(pipedrive)) == ["deal", "organization"]


def test_shown_urls_drop_credentials() -> None:
    assert shown_url("https://u:secret@host.example/x") == "https://host.example/x"
    assert shown_url(URL) == URL


@pytest.mark.integration
def test_the_cli_installs_twice_shows_status_and_refuses_incomplete_settings(
    tmp_path: Path, pipedrive_fake: RunningFake, contract_ledger: Any
) -> None:
    env = process_env(
        tmp_path,
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=pipedrive_fake.url,
        PUBLIC_URL="https://sync.example.com/",
        WEBHOOK_USER=USER,
        WEBHOOK_PASSWORD=PASSWORD,
    )
    env.pop("ADMIN_PASSWORD")  # a tool needs no admin password

    def run(*args: str, **changes: str | None) -> subprocess.CompletedProcess[str]:
        run_env = dict(env)
        for key, value in changes.items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "webhooks", *args],
            env=run_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert PASSWORD not in done.stdout + done.stderr
        return done

    first = run("install")
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["created", "person"],
        ["created", "deal"],
        ["created", "organization"],
    ]
    assert all(line.endswith(f"-> {URL}") for line in lines), lines

    second = run("install")
    assert second.returncode == 0, second.stderr
    assert [line.split()[0] for line in second.stdout.splitlines()] == ["kept"] * 3

    status = run("status")
    assert status.returncode == 0, status.stderr
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        ["ok", "person"],
        ["ok", "deal"],
        ["ok", "organization"],
    ]

    moved = run("install", "--url", "http://127.0.0.1:9/webhooks/pipedrive")
    assert moved.returncode == 0, moved.stderr
    assert [line.split()[0] for line in moved.stdout.splitlines()[:3]] == ["replaced"] * 3
    assert "not https" in moved.stdout.splitlines()[3]
    assert run("status").stdout.count("DIFFERS") == 3

    no_url = run("install", PUBLIC_URL=None)
    assert no_url.returncode == 2
    assert "set PUBLIC_URL" in no_url.stderr and "--url" in no_url.stderr
    assert no_url.stdout == ""

    no_password = run("install", WEBHOOK_PASSWORD=None)
    assert no_password.returncode == 2
    assert "WEBHOOK_PASSWORD is not set" in no_password.stderr

    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "another-token"})
    refused = run("status")
    assert refused.returncode == 1
    assert "401" in refused.stderr and refused.stdout == ""
    assert run("install").returncode == 1
    # The 401 answers match the spec (error_info through the ERRATA overlay).
    assert contract_ledger.take_violations() == []
