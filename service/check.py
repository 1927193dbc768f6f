"""``pbsync check``: are the credentials and the Brevo account ready for a sync?

Checks the Pipedrive token, the Brevo key, the Brevo folder new lists go to, and the
contact attributes the sync writes (an import silently drops attributes the account does
not define). Each result is one plain line that says what is fine or exactly what to fix;
nothing secret is ever part of one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from service.clients.brevo import DEFAULT_FOLDER_NAME, BrevoClient, Folder
from service.clients.errors import (
    ApiAuthError,
    ApiBudgetExhausted,
    ApiError,
    ApiRequestError,
    ApiUnavailable,
)
from service.clients.factory import MissingCredential, brevo_client, pipedrive_client
from service.clients.usage import UsageStore
from service.config import Settings

Status = Literal["ok", "fail", "skip"]

# The attributes every sync writes (DESIGN: FIRSTNAME and LASTNAME by default).
REQUIRED_ATTRIBUTES = ("FIRSTNAME", "LASTNAME")

PIPEDRIVE_TOKEN_HELP = (
    "copy your API token from Pipedrive > Settings > Personal preferences > API "
    "and set PIPEDRIVE_API_TOKEN"
)
BREVO_KEY_HELP = "create a v3 API key in Brevo > SMTP & API and set BREVO_API_KEY"


@dataclass(frozen=True)
class CheckLine:
    """The outcome of one check: ``ok``, ``fail`` or ``skip`` (not checked because an
    earlier check failed), and the sentence a person reads."""

    name: str
    status: Status
    message: str

    @property
    def ok(self) -> bool:
        """True unless the check failed."""
        return self.status != "fail"

    def render(self) -> str:
        """The line ``pbsync check`` prints: ``ok   <message>``, ``FAIL <message>``..."""
        label = {"ok": "ok", "fail": "FAIL", "skip": "skip"}[self.status]
        return f"{label:<4} {self.message}"


def run_check(settings: Settings, usage: UsageStore | None = None) -> list[CheckLine]:
    """Run every check against the configured APIs and return one line per check.

    The clients count their calls in ``usage`` (default: the database, which must be
    bound). Never raises for an API or credential problem: that is what the lines say.
    """
    lines = [check_pipedrive(settings, usage)]
    lines.extend(check_brevo(settings, usage))
    return lines


def check_pipedrive(settings: Settings, usage: UsageStore | None = None) -> CheckLine:
    """Whether Pipedrive accepts the token: it lists the people filters (20 tokens)."""
    name = "pipedrive token"
    try:
        client = pipedrive_client(settings, usage)
    except MissingCredential:
        return CheckLine(name, "fail", f"PIPEDRIVE_API_TOKEN is not set: {PIPEDRIVE_TOKEN_HELP}")
    try:
        filters = client.list_filters("people")
    except ApiError as exc:
        return CheckLine(name, "fail", _pipedrive_problem(exc, settings))
    except (ValueError, KeyError, TypeError):
        return CheckLine(name, "fail", _not_an_api("Pipedrive", settings.pipedrive_base_url))
    return CheckLine(
        name,
        "ok",
        f"Pipedrive accepted PIPEDRIVE_API_TOKEN ({len(filters)} people filters visible)",
    )


def _pipedrive_problem(exc: ApiError, settings: Settings) -> str:
    if isinstance(exc, ApiAuthError) and exc.status == 401:
        return f"Pipedrive refused PIPEDRIVE_API_TOKEN (401): {PIPEDRIVE_TOKEN_HELP}"
    if isinstance(exc, ApiAuthError):
        return (
            f"Pipedrive refused access to filters ({exc.status}: {exc.api_message}): use the "
            "token of a user who can see the filters to sync"
        )
    if isinstance(exc, ApiBudgetExhausted):
        return (
            "Pipedrive accepted the token but today's API token budget is spent: syncs wait "
            "until it resets (midnight UTC); check again later"
        )
    return _unreachable("Pipedrive", "PIPEDRIVE_BASE_URL", settings.pipedrive_base_url, exc)


def check_brevo(settings: Settings, usage: UsageStore | None = None) -> list[CheckLine]:
    """The Brevo key, the folder for new lists, and each required attribute."""
    needs_key = "not checked: needs a working BREVO_API_KEY"
    skipped = [CheckLine("brevo folder", "skip", f"Brevo folder {needs_key}")]
    skipped += [
        CheckLine(f"brevo attribute {attr}", "skip", f"attribute {attr} {needs_key}")
        for attr in REQUIRED_ATTRIBUTES
    ]
    name = "brevo key"
    try:
        client = brevo_client(settings, usage)
    except MissingCredential:
        return [CheckLine(name, "fail", f"BREVO_API_KEY is not set: {BREVO_KEY_HELP}"), *skipped]
    try:
        attributes = set(client.list_attributes())
    except ApiError as exc:
        return [CheckLine(name, "fail", _brevo_problem(exc, settings)), *skipped]
    except (ValueError, KeyError, TypeError):
        message = _not_an_api("Brevo", settings.brevo_base_url)
        return [CheckLine(name, "fail", message), *skipped]
    lines = [CheckLine(name, "ok", "Brevo accepted BREVO_API_KEY")]
    lines.append(check_folder(client, settings))
    lines.extend(check_attribute(attr, attributes) for attr in REQUIRED_ATTRIBUTES)
    return lines


def _brevo_problem(exc: ApiError, settings: Settings) -> str:
    if isinstance(exc, ApiAuthError) and exc.status == 401:
        return (
            f"Brevo refused BREVO_API_KEY (401): {BREVO_KEY_HELP}; if the key is right, "
            "authorise this server's IP address in Brevo > Security > Authorised IPs "
            f"(Brevo said: {exc.api_message})"
        )
    if isinstance(exc, ApiAuthError):
        return (
            f"Brevo refused the request ({exc.status}: {exc.api_message}): the account behind "
            "BREVO_API_KEY lacks the permission to manage contacts"
        )
    return _unreachable("Brevo", "BREVO_BASE_URL", settings.brevo_base_url, exc)


def check_folder(client: BrevoClient, settings: Settings) -> CheckLine:
    """Whether ``BREVO_FOLDER_ID`` names an existing folder; when unset, whether the
    folder the first sync would otherwise create already exists."""
    name = "brevo folder"
    try:
        folders = client.list_folders()
    except ApiError as exc:
        problem = _brevo_problem(exc, settings)
        return CheckLine(name, "fail", f"could not list Brevo folders: {problem}")
    except (ValueError, KeyError, TypeError):
        return CheckLine(name, "fail", _not_an_api("Brevo", settings.brevo_base_url))
    wanted = settings.brevo_folder_id
    if wanted is not None:
        found = next((f for f in folders if f.id == wanted), None)
        if found is None:
            return CheckLine(
                name,
                "fail",
                f"Brevo folder BREVO_FOLDER_ID={wanted} does not exist: set BREVO_FOLDER_ID to "
                f"the id of a folder in Brevo > Contacts > Lists ({_some(folders)}), or unset "
                f'it to have a folder "{DEFAULT_FOLDER_NAME}" created on the first sync',
            )
        return CheckLine(
            name, "ok", f'Brevo folder {found.id} "{found.name}" exists: new lists go there'
        )
    named = sorted(f.id for f in folders if f.name.strip() == DEFAULT_FOLDER_NAME)
    if named:
        return CheckLine(
            name,
            "ok",
            f'BREVO_FOLDER_ID is not set: the folder "{DEFAULT_FOLDER_NAME}" (id {named[0]}) '
            "exists and will hold new lists",
        )
    return CheckLine(
        name,
        "ok",
        f'BREVO_FOLDER_ID is not set: no folder "{DEFAULT_FOLDER_NAME}" yet; the first sync '
        "creates it (set BREVO_FOLDER_ID to use an existing folder instead)",
    )


def check_attribute(attribute: str, defined: set[str]) -> CheckLine:
    """Whether the account defines ``attribute``."""
    name = f"brevo attribute {attribute}"
    if attribute in defined:
        return CheckLine(name, "ok", f"attribute {attribute} exists in Brevo")
    return CheckLine(
        name,
        "fail",
        f"attribute {attribute} missing in Brevo: create it in Contacts > Settings > Contact "
        "attributes (type text); until then imports silently drop it",
    )


def _some(folders: list[Folder], shown: int = 5) -> str:
    if not folders:
        return "the account has none yet"
    listed = ", ".join(f'{f.id} "{f.name}"' for f in folders[:shown])
    more = f" and {len(folders) - shown} more" if len(folders) > shown else ""
    return f"existing: {listed}{more}"


def _where(url: str) -> str:
    # Only scheme, host and path: a URL could carry credentials in its user part.
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _unreachable(api: str, variable: str, url: str, exc: ApiError) -> str:
    if isinstance(exc, ApiUnavailable):
        return (
            f"{api} did not answer usefully at {_where(url)} ({exc.api_message}): check "
            f"{variable} and the network, then run pbsync check again"
        )
    if isinstance(exc, ApiRequestError):
        return f"{api} answered {exc.status} at {_where(url)} ({exc.api_message}): check {variable}"
    return f"{api} call failed at {_where(url)} ({exc.api_message}): check {variable}"


def _not_an_api(api: str, url: str) -> str:
    variable = "PIPEDRIVE_BASE_URL" if api == "Pipedrive" else "BREVO_BASE_URL"
    return f"{_where(url)} does not answer like the {api} API: check {variable}"


def print_lines(lines: list[CheckLine], write: Callable[[str], object] = print) -> int:
    """Write one line per check; return the exit status: 0 when none failed, else 1."""
    for line in lines:
        write(line.render())
    return 0 if all(line.ok for line in lines) else 1
