"""Work against an API that refused the service's credential (401 or 403) pauses instead of
failing again and again.

A refused credential stays refused until someone fixes the setting, so every job, retry
and schedule that calls the API meanwhile only adds a failure (and, for Pipedrive, spends
tokens). The job that meets the refusal fails at once with a message naming the variable to
fix, and the pause is recorded in ``api_rate_limits`` against the credential's fingerprint
(``service.clients.credentials``): every process holding that credential holds off, and a
process started with another one is not held. While the pause holds, work that needs the
API does not call it: a job waits unclaimed with a "Waiting" note, as for Pipedrive's spent
budget, and the filter refresh skips.

When the pause ends, one piece of work tries the credential again (the probe) while the
rest keeps waiting: an answer that accepts it ends the pause; another refusal doubles it
(``FIRST_BACKOFF_SECONDS``, twice that, ... at most ``MAX_BACKOFF_SECONDS``); a probe that
never reached the API hands the try on to the next job at once. An answer accepting a new
credential ends the pause of the old one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from service.clients.credentials import ACCEPTANCE, Acceptance, fingerprint
from service.clients.errors import ApiAuthError
from service.clock import to_iso
from service.config import Settings
from service.db import db, db_session, db_write_session

API_NAMES = {"pipedrive": "Pipedrive", "brevo": "Brevo"}
# The setting that holds each API's credential: what the operator has to fix.
API_VARIABLES = {"pipedrive": "PIPEDRIVE_API_TOKEN", "brevo": "BREVO_API_KEY"}
FIRST_BACKOFF_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 3600.0

_COLUMNS = (
    "api, auth_fingerprint, auth_status, auth_error, auth_refused_at, auth_backoff_seconds, "
    "auth_paused_until"
)


@dataclass(frozen=True)
class Credential:
    """A credential the service sends to one API, named by its fingerprint."""

    api: str
    fingerprint: str


def configured_credentials(settings: Settings) -> list[Credential]:
    """The credentials the settings hold (those that are set)."""
    found = [("pipedrive", settings.pipedrive_api_token), ("brevo", settings.brevo_api_key)]
    return [Credential(api, fingerprint(secret)) for api, secret in found if secret]


@dataclass(frozen=True)
class AuthPause:
    """An API's refusal of one credential, and until when nothing uses it."""

    api: str
    fingerprint: str
    status: int | None
    error: str
    refused_at: float
    backoff_seconds: float
    paused_until: float

    @property
    def name(self) -> str:
        """The API's name as messages show it ("Brevo")."""
        return API_NAMES.get(self.api, self.api)

    @property
    def variable(self) -> str:
        """The setting to fix ("BREVO_API_KEY")."""
        return API_VARIABLES.get(self.api, "the API credential")

    def holds(self, now: float) -> bool:
        """Whether the credential must not be used at ``now``."""
        return self.paused_until > now

    def _refused(self) -> str:
        status = f" ({self.status})" if self.status else ""
        return f"{self.name} refused {self.variable}{status}"

    def failure_message(self) -> str:
        """The error of the job that met the refusal: what happened and what to fix."""
        return (
            f"{self._refused()}: {self.error}. Set {self.variable} to a valid credential and "
            f"restart the service. Meanwhile jobs that need {self.name} wait; one tries again "
            f"after {to_iso(int(self.paused_until))}."
        )

    def note(self) -> str:
        """The note of a job that waits for the credential to be fixed."""
        return (
            f"Waiting: {self._refused()}; fix {self.variable}. The job runs once {self.name} "
            f"accepts it; the next try is after {to_iso(int(self.paused_until))}."
        )

    def skip_message(self) -> str:
        """Why work was not attempted at all."""
        return (
            f"{self._refused()}; not called again before {to_iso(int(self.paused_until))}. "
            f"Fix {self.variable}."
        )


@dataclass(frozen=True)
class Admission:
    """What the recorded pauses say about work that needs some credentials."""

    # A pause that holds: the work must not call the API.
    waiting: AuthPause | None = None
    # Credentials whose pause ended: this work tries them again, the rest keeps waiting.
    probes: tuple[Credential, ...] = ()
    # Paused credentials of the same APIs that the work's credentials replace.
    replaced: tuple[Credential, ...] = ()


def _pause(row: Sequence[Any]) -> AuthPause:
    api, print_, status, error, refused_at, backoff, until = row
    return AuthPause(
        api=str(api),
        fingerprint=str(print_),
        status=None if status is None else int(status),
        error=str(error or ""),
        refused_at=float(refused_at or 0.0),
        backoff_seconds=float(backoff or FIRST_BACKOFF_SECONDS),
        paused_until=float(until or 0.0),
    )


def _read_pauses() -> dict[str, AuthPause]:
    rows = db.select(f"{_COLUMNS} FROM api_rate_limits WHERE auth_fingerprint IS NOT NULL")
    return {str(row[0]): _pause(row) for row in rows}


@db_session
def recorded_pauses() -> dict[str, AuthPause]:
    """Every recorded refusal, by API, whether its pause still holds or not."""
    return _read_pauses()


def admit(credentials: Iterable[Credential], now: float) -> Admission:
    """Whether work that needs ``credentials`` may call the APIs at ``now``.

    A pause that holds for one of them makes the work wait. A pause that ended makes this
    work the probe: the pause is held again for the probe's duration, so no other work
    tries at the same time, until ``settle`` or ``record_refusal`` says how it went.
    Without any recorded pause this is one read.
    """
    wanted = list(credentials)
    pauses = recorded_pauses()
    if not pauses:
        return Admission()
    due: list[Credential] = []
    replaced: list[Credential] = []
    for credential in wanted:
        pause = pauses.get(credential.api)
        if pause is None:
            continue
        if pause.fingerprint != credential.fingerprint:
            replaced.append(Credential(pause.api, pause.fingerprint))
        elif pause.holds(now):
            return Admission(waiting=pause)
        else:
            due.append(credential)
    if not due:
        return Admission(replaced=tuple(replaced))
    return _take_probes(due, tuple(replaced), now)


@db_write_session
def _take_probes(due: list[Credential], replaced: tuple[Credential, ...], now: float) -> Admission:
    # Under the write lock: two workers finding the same pause ended cannot both probe.
    pauses = _read_pauses()
    probes = []
    for credential in due:
        pause = pauses.get(credential.api)
        if pause is None or pause.fingerprint != credential.fingerprint:
            continue  # cleared meanwhile: nothing to try
        if pause.holds(now):
            return Admission(waiting=pause)  # another worker took the probe
        probes.append(credential)
    for credential in probes:
        db.execute(
            "UPDATE api_rate_limits SET auth_paused_until = $now + auth_backoff_seconds "
            "WHERE api = $api AND auth_fingerprint = $fp",
            {"now": now, "api": credential.api, "fp": credential.fingerprint},
        )
    return Admission(probes=tuple(probes), replaced=replaced)


@db_write_session
def record_refusal(
    credential: Credential, error: ApiAuthError, now: float, probing: bool = False
) -> AuthPause:
    """Record that the API refused ``credential`` at ``now``; the pause now in force.

    A first refusal pauses for ``FIRST_BACKOFF_SECONDS``; a refused probe doubles the
    previous pause (at most ``MAX_BACKOFF_SECONDS``). A refusal met by other work while the
    pause was already recorded (jobs that started before it) leaves the pause as it is.
    """
    params = {"api": credential.api, "fp": credential.fingerprint, "now": now}
    db.execute(
        "INSERT INTO api_rate_limits (api, observed_at) VALUES ($api, $now) "
        "ON CONFLICT (api) DO NOTHING",
        params,
    )
    current = _read_pauses().get(credential.api)
    same = current is not None and current.fingerprint == credential.fingerprint
    if same and not probing:
        assert current is not None
        return current
    if same and current is not None:
        backoff = min(MAX_BACKOFF_SECONDS, current.backoff_seconds * 2)
        refused_at = current.refused_at
    else:
        backoff, refused_at = FIRST_BACKOFF_SECONDS, now
    pause = AuthPause(
        api=credential.api,
        fingerprint=credential.fingerprint,
        status=error.status,
        error=str(error),
        refused_at=refused_at,
        backoff_seconds=backoff,
        paused_until=now + backoff,
    )
    db.execute(
        "UPDATE api_rate_limits SET auth_fingerprint = $fp, auth_status = $status, "
        "auth_error = $error, auth_refused_at = $refused_at, auth_backoff_seconds = $backoff, "
        "auth_paused_until = $until WHERE api = $api",
        {
            **params,
            "status": pause.status,
            "error": pause.error,
            "refused_at": pause.refused_at,
            "backoff": pause.backoff_seconds,
            "until": pause.paused_until,
        },
    )
    return pause


def settle(
    admission: Admission, accepted: set[str], now: float, refused: str | None = None
) -> None:
    """Close what ``admit`` opened, once the work is over.

    ``accepted`` names the APIs that accepted the work's credential (``Watch``);
    ``refused`` the API whose refusal ended it (``record_refusal`` records that one). A
    probed credential that was accepted ends its pause, and so does a replaced one whose
    API accepted the new credential; a probe that got no answer hands the try on at once.
    """
    probes = [c for c in admission.probes if c.api != refused]
    ended = [c for c in probes if c.api in accepted]
    ended += [c for c in admission.replaced if c.api in accepted and c.api != refused]
    handed_on = [c for c in probes if c.api not in accepted]
    if ended or handed_on:
        _settle(ended, handed_on, now)


@db_session
def _settle(ended: list[Credential], handed_on: list[Credential], now: float) -> None:
    # Each write names the fingerprint: a pause recorded since for another one stays.
    for credential in ended:
        db.execute(
            "UPDATE api_rate_limits SET auth_fingerprint = NULL, auth_status = NULL, "
            "auth_error = NULL, auth_refused_at = NULL, auth_backoff_seconds = NULL, "
            "auth_paused_until = NULL WHERE api = $api AND auth_fingerprint = $fp",
            {"api": credential.api, "fp": credential.fingerprint},
        )
    for credential in handed_on:
        db.execute(
            "UPDATE api_rate_limits SET auth_paused_until = $now "
            "WHERE api = $api AND auth_fingerprint = $fp AND auth_paused_until > $now",
            {"api": credential.api, "fp": credential.fingerprint, "now": now},
        )


class Watch:
    """Which APIs accepted their credential in this process since the watch began: the
    answers the clients counted (``service.clients.credentials``)."""

    def __init__(
        self, credentials: Iterable[Credential], acceptance: Acceptance | None = None
    ) -> None:
        self.acceptance = acceptance if acceptance is not None else ACCEPTANCE
        self._start = {c: self.acceptance.count(c.api, c.fingerprint) for c in credentials}

    def accepted(self) -> set[str]:
        """The APIs that accepted their credential since the watch began."""
        return {
            c.api
            for c, start in self._start.items()
            if self.acceptance.count(c.api, c.fingerprint) > start
        }
