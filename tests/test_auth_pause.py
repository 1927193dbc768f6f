"""service/auth_pause.py: the pause of work against an API that refused the credential, its
probes, its doubling backoff, and what it says."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from service.auth_pause import (
    FIRST_BACKOFF_SECONDS,
    MAX_BACKOFF_SECONDS,
    Admission,
    Credential,
    Watch,
    admit,
    configured_credentials,
    record_refusal,
    recorded_pauses,
    settle,
)
from service.budget import pause_pipedrive, paused_until
from service.clients.credentials import Acceptance, fingerprint
from service.clients.errors import ApiAuthError
from service.clock import to_iso
from service.config import Settings

NOW = 1_900_000_000
SECRET = "xkeysib-0123456789abcdef-secret"
BREVO = Credential("brevo", fingerprint(SECRET))
NEW_BREVO = Credential("brevo", fingerprint("xkeysib-the-new-key"))
PIPEDRIVE = Credential("pipedrive", fingerprint("pd-token"))


def refusal(api: str = "brevo", status: int = 401) -> ApiAuthError:
    """The error a client raises when the API refuses the credential."""
    return ApiAuthError(
        api, "GET /contacts/lists/{listId}", "Key not found", status, "unauthorized"
    )


def test_without_a_recorded_refusal_work_goes_ahead(clean_db: Path) -> None:
    assert admit([BREVO, PIPEDRIVE], NOW) == Admission()
    assert recorded_pauses() == {}


def test_a_first_refusal_pauses_the_credential_for_a_minute(clean_db: Path) -> None:
    pause = record_refusal(BREVO, refusal(), NOW)
    assert (pause.api, pause.fingerprint, pause.status) == ("brevo", BREVO.fingerprint, 401)
    assert pause.error == "brevo GET /contacts/lists/{listId} answered 401: Key not found"
    assert (pause.refused_at, pause.backoff_seconds) == (NOW, FIRST_BACKOFF_SECONDS)
    assert pause.paused_until == NOW + FIRST_BACKOFF_SECONDS
    assert recorded_pauses() == {"brevo": pause}
    # Work that needs Brevo waits until the pause is over; Pipedrive work alone goes on.
    assert admit([PIPEDRIVE, BREVO], NOW + 59) == Admission(waiting=pause)
    assert admit([PIPEDRIVE], NOW + 59) == Admission()


def test_once_the_pause_is_over_one_piece_of_work_probes_and_the_rest_still_waits(
    clean_db: Path,
) -> None:
    record_refusal(BREVO, refusal(), NOW)
    at = NOW + FIRST_BACKOFF_SECONDS
    probe = admit([PIPEDRIVE, BREVO], at)
    assert probe == Admission(probes=(BREVO,))
    # The probe holds the pause for as long again: a second job does not try as well.
    second = admit([BREVO], at)
    assert second.waiting is not None
    assert second.waiting.paused_until == at + FIRST_BACKOFF_SECONDS


def test_a_refused_probe_doubles_the_pause_up_to_an_hour(clean_db: Path) -> None:
    first = record_refusal(BREVO, refusal(), NOW)
    at, backoffs = first.paused_until, []
    for _ in range(8):
        assert admit([BREVO], at).probes == (BREVO,)
        pause = record_refusal(BREVO, refusal(), at, probing=True)
        backoffs.append(pause.backoff_seconds)
        assert pause.paused_until == at + pause.backoff_seconds
        assert pause.refused_at == NOW  # refused since the first time
        at = pause.paused_until
    assert backoffs == [120, 240, 480, 960, 1920, MAX_BACKOFF_SECONDS, 3600, 3600]


def test_a_refusal_met_by_other_work_meanwhile_leaves_the_pause_as_it_is(
    clean_db: Path,
) -> None:
    """Jobs that started before the pause was recorded meet the same refusal: the pause
    must not double once per job."""
    first = record_refusal(BREVO, refusal(), NOW)
    assert record_refusal(BREVO, refusal(status=403), NOW + 1) == first
    assert recorded_pauses()["brevo"] == first


def test_an_accepted_probe_ends_the_pause(clean_db: Path) -> None:
    record_refusal(BREVO, refusal(), NOW)
    at = NOW + FIRST_BACKOFF_SECONDS
    probe = admit([BREVO], at)
    settle(probe, {"brevo"}, at + 3)
    assert recorded_pauses() == {}
    assert admit([BREVO], at + 3) == Admission()


def test_a_probe_that_never_reached_the_api_hands_the_try_on_at_once(clean_db: Path) -> None:
    """A job that failed (or ended) before calling Brevo proves nothing about the key: the
    next job tries, with the same backoff."""
    record_refusal(BREVO, refusal(), NOW)
    at = NOW + FIRST_BACKOFF_SECONDS
    settle(admit([BREVO], at), set(), at + 5)
    pause = recorded_pauses()["brevo"]
    assert (pause.paused_until, pause.backoff_seconds) == (at + 5, FIRST_BACKOFF_SECONDS)
    assert admit([BREVO], at + 5).probes == (BREVO,)


def test_settling_work_that_probed_nothing_writes_nothing(clean_db: Path) -> None:
    paused = record_refusal(BREVO, refusal(), NOW)
    settle(Admission(), {"brevo", "pipedrive"}, NOW + 1)
    assert recorded_pauses() == {"brevo": paused}


def test_another_credential_is_not_held_and_ends_the_old_pause_once_accepted(
    clean_db: Path,
) -> None:
    old = record_refusal(BREVO, refusal(), NOW)
    admitted = admit([NEW_BREVO], NOW + 1)
    assert admitted == Admission(replaced=(BREVO,))
    settle(admitted, set(), NOW + 2)  # it made no Brevo call: nothing is known yet
    assert recorded_pauses() == {"brevo": old}
    settle(admitted, {"brevo"}, NOW + 3)
    assert recorded_pauses() == {}


def test_a_refusal_of_a_new_credential_starts_its_own_first_pause(clean_db: Path) -> None:
    record_refusal(BREVO, refusal(), NOW)
    for _ in range(3):
        at = recorded_pauses()["brevo"].paused_until
        admit([BREVO], at)
        record_refusal(BREVO, refusal(), at, probing=True)
    pause = record_refusal(NEW_BREVO, refusal(), NOW + 5000)
    assert (pause.fingerprint, pause.backoff_seconds) == (NEW_BREVO.fingerprint, 60)
    assert pause.refused_at == NOW + 5000


def test_the_pause_does_not_disturb_the_budget_pause_in_the_same_row(clean_db: Path) -> None:
    until = pause_pipedrive(NOW, 600)
    record_refusal(PIPEDRIVE, refusal("pipedrive"), NOW)
    assert paused_until(NOW + 1) == until
    at = NOW + FIRST_BACKOFF_SECONDS
    settle(admit([PIPEDRIVE], at), {"pipedrive"}, at)
    assert recorded_pauses() == {}
    assert paused_until(NOW + 1) == until


def test_the_database_holds_a_fingerprint_never_the_credential(clean_db: Path) -> None:
    record_refusal(BREVO, refusal(), NOW)
    with sqlite3.connect(clean_db) as connection:
        rows = connection.execute("SELECT * FROM api_rate_limits").fetchall()
    connection.close()
    text = repr(rows)
    assert BREVO.fingerprint in text
    assert SECRET not in text and SECRET[:12] not in text


@pytest.mark.parametrize(
    ("api", "status", "variable", "name"),
    [
        ("brevo", 401, "BREVO_API_KEY", "Brevo"),
        ("pipedrive", 401, "PIPEDRIVE_API_TOKEN", "Pipedrive"),
        ("brevo", 403, "BREVO_API_KEY", "Brevo"),
    ],
)
def test_messages_name_the_api_the_status_and_the_variable_to_fix(
    clean_db: Path, api: str, status: int, variable: str, name: str
) -> None:
    credential = BREVO if api == "brevo" else PIPEDRIVE
    pause = record_refusal(credential, refusal(api, status), NOW)
    until = to_iso(NOW + 60)
    assert pause.failure_message() == (
        f"{name} refused {variable} ({status}): {api} GET /contacts/lists/{{listId}} answered "
        f"{status}: Key not found. Set {variable} to a valid credential and restart the "
        f"service. Meanwhile jobs that need {name} wait; one tries again after {until}."
    )
    assert pause.note().startswith(f"Waiting: {name} refused {variable} ({status}); fix ")
    assert pause.note().endswith(f"the next try is after {until}.")
    assert pause.skip_message() == (
        f"{name} refused {variable} ({status}); not called again before {until}. Fix {variable}."
    )


def test_configured_credentials_are_those_set(settings: Settings) -> None:
    both = replace(settings, pipedrive_api_token="pd-token", brevo_api_key=SECRET)
    assert configured_credentials(both) == [PIPEDRIVE, BREVO]
    assert configured_credentials(replace(both, brevo_api_key=None)) == [PIPEDRIVE]


def test_a_watch_sees_only_answers_that_accepted_the_credential_since_it_began() -> None:
    acceptance = Acceptance()
    acceptance.record("brevo", BREVO.fingerprint, 200)  # before the watch: not seen
    watch = Watch([BREVO, PIPEDRIVE], acceptance)
    assert watch.accepted() == set()
    acceptance.record("brevo", BREVO.fingerprint, 401)
    acceptance.record("brevo", NEW_BREVO.fingerprint, 200)  # another credential
    acceptance.record("pipedrive", PIPEDRIVE.fingerprint, 503)
    assert watch.accepted() == set()
    acceptance.record("pipedrive", PIPEDRIVE.fingerprint, 404)
    assert watch.accepted() == {"pipedrive"}
