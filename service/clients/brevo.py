"""The Brevo client: folders, lists, list membership in batches of 150, contacts, imports
confirmed by reading the list back, and list contacts page by page. Authenticates with
the ``api-key`` header.

Imports are read back with ``modifiedSince`` on Brevo's own clock (its ``Date`` header at
the start of the import), so the skew between our clock and Brevo's does not matter.

Brevo limits ``/v3/contacts/*`` to 10 requests a second and every other endpoint, among
them ``/v3/processes``, to 100 an hour, per account. Two pacing buckets in the shared
usage store keep every process of the service under both.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from service.clients.errors import ApiNotFound, ApiRequestError, ApiUnavailable
from service.clients.http import ApiHttp, ClientPolicy, Operation, RateHeaders, server_time
from service.clients.usage import Pacer, UsageStore

log = logging.getLogger(__name__)

API = "brevo"
BATCH_SIZE = 150
PAGE_SIZE = 500
FOLDER_PAGE_SIZE = 50
# The folder new lists go to when BREVO_FOLDER_ID is not set (created on the first sync).
DEFAULT_FOLDER_NAME = "Pipedrive"
# Brevo's answer when no identifier of an add or remove call could be applied.
NOTHING_APPLIED = "contact already in list and/or does not exist"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# Brevo's Date header has whole seconds: a moment read from it is up to a second early or
# late, and the import began a little before the answer was dated.
DATE_MARGIN_SECONDS = 2.0

LIST_FOLDERS = Operation(API, "GET", "/contacts/folders")
CREATE_FOLDER = Operation(API, "POST", "/contacts/folders", idempotent=False)
CREATE_LIST = Operation(API, "POST", "/contacts/lists", idempotent=False)
GET_LIST = Operation(API, "GET", "/contacts/lists/{listId}")
LIST_FOLDER_LISTS = Operation(API, "GET", "/contacts/folders/{folderId}/lists")
UPDATE_LIST = Operation(API, "PUT", "/contacts/lists/{listId}")
LIST_CONTACTS = Operation(API, "GET", "/contacts/lists/{listId}/contacts")
ADD_TO_LIST = Operation(API, "POST", "/contacts/lists/{listId}/contacts/add")
REMOVE_FROM_LIST = Operation(API, "POST", "/contacts/lists/{listId}/contacts/remove")
CREATE_CONTACT = Operation(API, "POST", "/contacts")
GET_CONTACT = Operation(API, "GET", "/contacts/{identifier}")
UPDATE_CONTACT = Operation(API, "PUT", "/contacts/{identifier}")
IMPORT_CONTACTS = Operation(API, "POST", "/contacts/import", idempotent=False)
GET_PROCESS = Operation(API, "GET", "/processes/{processId}")
LIST_ATTRIBUTES = Operation(API, "GET", "/contacts/attributes")
OPERATIONS = (
    LIST_FOLDERS,
    CREATE_FOLDER,
    CREATE_LIST,
    GET_LIST,
    LIST_FOLDER_LISTS,
    UPDATE_LIST,
    LIST_CONTACTS,
    ADD_TO_LIST,
    REMOVE_FROM_LIST,
    CREATE_CONTACT,
    GET_CONTACT,
    UPDATE_CONTACT,
    IMPORT_CONTACTS,
    GET_PROCESS,
    LIST_ATTRIBUTES,
)

RATE_HEADERS = RateHeaders(
    limit="x-sib-ratelimit-limit",
    remaining="x-sib-ratelimit-remaining",
    reset="x-sib-ratelimit-reset",
)


@dataclass(frozen=True)
class BrevoLimits:
    """How fast this service may call Brevo, below the account's limits (other
    integrations share them)."""

    contacts_per_second: float = 8.0
    other_per_hour: float = 100.0
    # Calls of the hourly bucket that may go at once after a quiet spell: an import's
    # first poll need not wait 36 s behind the previous import's. The steady rate is
    # lowered to match, so no hour ever holds more than ``other_per_hour``.
    other_burst: int = 10
    first_poll_seconds: float = 2.0
    max_poll_seconds: float = 60.0
    import_timeout_seconds: float = 1800.0
    # When Brevo's answer has no Date header, imported contacts are read back modified
    # since the import started by our clock minus this margin (our clock against Brevo's).
    clock_margin_seconds: float = 120.0


@dataclass(frozen=True)
class Folder:
    """A Brevo contact folder."""

    id: int
    name: str


@dataclass(frozen=True)
class BrevoList:
    """A Brevo contact list."""

    id: int
    name: str
    folder_id: int | None
    total_subscribers: int | None


@dataclass(frozen=True)
class BrevoContact:
    """A contact as a list page or ``get_contact`` shows it."""

    id: int
    email: str
    email_blacklisted: bool
    modified_at: str | None
    list_ids: tuple[int, ...]
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None


@dataclass(frozen=True)
class MembershipResult:
    """Emails an add or remove applied, and those Brevo refused (absent, or already in/out)."""

    succeeded: list[str]
    failed: list[str]


@dataclass(frozen=True)
class ContactRow:
    """One contact to import: an email and its attributes (FIRSTNAME, LASTNAME...)."""

    email: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ImportStart:
    """A started import: its process, and the moment to read the list back from.

    ``started_at`` is epoch seconds on Brevo's clock (its ``Date`` header minus
    ``DATE_MARGIN_SECONDS``), or on ours minus ``BrevoLimits.clock_margin_seconds`` when
    Brevo sent no usable Date; pass it as ``modified_since`` to ``iter_list_contacts``.
    """

    process_id: int
    started_at: float


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the rows found in the list afterwards, and the ones missing."""

    process_id: int
    status: str
    accepted: list[str]
    rejected: list[str]


def brevo_time(moment: float) -> str:
    """Epoch seconds as the UTC text Brevo's ``modifiedSince`` takes."""
    dt = datetime.fromtimestamp(moment, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def is_duplicate_identifier(exc: BaseException, identifier: str = "email") -> bool:
    """True when ``exc`` is Brevo refusing a contact write because ``identifier`` (``email``,
    ``ext_id``, ``SMS``) belongs to another contact (an email change onto a taken address).

    Brevo has answered such clashes with ``duplicate_parameter`` and with
    ``invalid_parameter``, so ``metadata.duplicate_identifiers`` decides, not the code.
    """
    if not isinstance(exc, ApiRequestError) or isinstance(exc, ApiNotFound):
        return False
    clashes = exc.metadata.get("duplicate_identifiers")
    if isinstance(clashes, list):
        return identifier.lower() in {str(c).lower() for c in clashes}
    # No metadata: fall back on Brevo's documented wording.
    text = exc.api_message.lower()
    return (exc.code or "").lower() == "duplicate_parameter" and (
        f"{identifier.lower()} is already associated" in text
    )


def import_body(
    list_id: int, rows_json: bytes | bytearray
) -> tuple[bytes, bytes | bytearray, bytes]:
    """The ``POST /contacts/import`` body around ``rows_json``, an encoded JSON array of
    ``{"email", "attributes"}`` objects, in three parts sent one after the other: the rows,
    up to 8 MB, are neither parsed again nor copied."""
    if rows_json[:1] != b"[" or rows_json[-1:] != b"]":
        raise ValueError("rows_json must be an encoded JSON array")
    head = (
        b'{"listIds":[%d],"updateExistingContacts":true,"emptyContactsAttributes":false,'
        b'"disableNotification":true,"jsonBody":' % list_id
    )
    return head, rows_json, b"}"


def encode_rows(rows: Sequence[ContactRow]) -> bytes:
    """``rows`` as the encoded ``jsonBody`` array an import takes."""
    items = [{"email": r.email, "attributes": r.attributes} for r in rows]
    return json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()


def _batches(items: Sequence[str], size: int = BATCH_SIZE) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class BrevoClient:
    """Calls Brevo under the shared HTTP policy."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        usage: UsageStore,
        policy: ClientPolicy | None = None,
        limits: BrevoLimits | None = None,
        pool: httpx.Client | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = ApiHttp(
            API,
            base_url,
            {"api-key": api_key},
            usage=usage,
            rate_headers=RATE_HEADERS,
            policy=policy,
            pool=pool,
            now=now,
            sleep=sleep,
        )
        self.limits = limits or BrevoLimits()
        self.contacts_pacer = self.http.pacer(
            "brevo-contacts", 1.0 / self.limits.contacts_per_second
        )
        self.other_pacer = self.http.pacer(
            "brevo-other",
            3600.0 / (self.limits.other_per_hour - self.limits.other_burst - 1),
            burst=self.limits.other_burst,
        )

    def _pacer(self, operation: Operation) -> Pacer:
        return (
            self.contacts_pacer if operation.template.startswith("/contacts") else self.other_pacer
        )

    def _call(self, operation: Operation, **kwargs: Any) -> httpx.Response:
        return self.http.call(operation, pacer=self._pacer(operation), **kwargs)

    def list_folders(self) -> list[Folder]:
        """Every contact folder of the account."""
        folders: list[Folder] = []
        offset = 0
        while True:
            params = {"limit": FOLDER_PAGE_SIZE, "offset": offset, "sort": "asc"}
            body = self._call(LIST_FOLDERS, params=params).json()
            page = body.get("folders") or []
            folders.extend(Folder(int(f["id"]), str(f.get("name") or "")) for f in page)
            offset += len(page)
            if len(page) < FOLDER_PAGE_SIZE or offset >= int(body.get("count") or 0):
                return folders

    def create_folder(self, name: str) -> int:
        """Create a folder; return its id."""
        return int(self._call(CREATE_FOLDER, json={"name": name}).json()["id"])

    def create_list(self, name: str, folder_id: int) -> int:
        """Create a list in a folder, unless the folder already holds one of that name;
        return its id.

        Creating is not idempotent and never sent twice, yet its answer can be lost (a read
        timeout, a dropped connection) after Brevo created the list, maybe only later. The
        call after such a failure finds that list by its name (names carry the filter id)
        instead of making a second one.
        """
        try:
            found = self.find_list(name, folder_id)
        except ApiNotFound:
            found = None  # no such folder: the create below says so in Brevo's words
        if found is not None:
            log.warning(
                "list found already made: an earlier answer was lost", extra={"list_id": found}
            )
            return found
        body = {"name": name, "folderId": folder_id}
        return int(self._call(CREATE_LIST, json=body).json()["id"])

    def find_list(self, name: str, folder_id: int) -> int | None:
        """The newest list of the folder called exactly ``name``, or None."""
        offset = 0
        while True:
            params = {"limit": FOLDER_PAGE_SIZE, "offset": offset, "sort": "desc"}
            page_body = self._call(
                LIST_FOLDER_LISTS, path={"folderId": folder_id}, params=params
            ).json()
            page = page_body.get("lists") or []
            for item in page:
                if item.get("name") == name:
                    return int(item["id"])
            offset += len(page)
            if len(page) < FOLDER_PAGE_SIZE or offset >= int(page_body.get("count") or 0):
                return None

    def get_list(self, list_id: int) -> BrevoList:
        """One list; raises ``ApiNotFound`` when it was deleted."""
        body = self._call(GET_LIST, path={"listId": list_id}).json()
        return BrevoList(
            id=int(body["id"]),
            name=str(body.get("name") or ""),
            folder_id=body.get("folderId"),
            total_subscribers=body.get("totalSubscribers"),
        )

    def rename_list(self, list_id: int, name: str) -> None:
        """Give a list a new name."""
        self._call(UPDATE_LIST, path={"listId": list_id}, json={"name": name})

    def add_to_list(self, list_id: int, emails: Sequence[str]) -> MembershipResult:
        """Put existing contacts in a list, 150 per call."""
        return self._membership(ADD_TO_LIST, list_id, emails)

    def remove_from_list(self, list_id: int, emails: Sequence[str]) -> MembershipResult:
        """Take contacts out of a list, 150 per call; the contacts themselves stay."""
        return self._membership(REMOVE_FROM_LIST, list_id, emails)

    def _membership(
        self, operation: Operation, list_id: int, emails: Sequence[str]
    ) -> MembershipResult:
        succeeded: list[str] = []
        failed: list[str] = []
        for batch in _batches(emails):
            try:
                body = self._call(operation, path={"listId": list_id}, json={"emails": batch})
            except ApiRequestError as exc:
                if exc.status == 400 and exc.api_message.strip().lower() == NOTHING_APPLIED:
                    failed.extend(batch)
                    continue
                raise
            contacts = body.json().get("contacts") or {}
            succeeded.extend(str(e) for e in contacts.get("success") or [])
            failed.extend(str(e) for e in contacts.get("failure") or [])
        return MembershipResult(succeeded, failed)

    def upsert_contact(
        self, email: str, attributes: dict[str, Any], list_ids: Sequence[int] = ()
    ) -> int | None:
        """Create the contact, or update it if it exists (``updateEnabled``).

        Returns the new contact's id when Brevo created it (201), None when an existing
        contact was updated (204): that is how a caller tells created from updated.
        """
        payload: dict[str, Any] = {"email": email, "attributes": attributes, "updateEnabled": True}
        if list_ids:
            payload["listIds"] = list(list_ids)
        response = self._call(CREATE_CONTACT, json=payload)
        return int(response.json()["id"]) if response.status_code == 201 else None

    def get_contact(self, email: str) -> BrevoContact | None:
        """The contact with this address, None when Brevo has none."""
        try:
            response = self._call(
                GET_CONTACT, path={"identifier": email}, params={"identifierType": "email_id"}
            )
        except ApiNotFound:
            return None
        return _contact_from_json(response.json())

    def update_contact(
        self,
        email: str,
        attributes: dict[str, Any] | None = None,
        new_email: str | None = None,
    ) -> None:
        """Change a contact's attributes, and its address through ``EMAIL`` when given.

        Raises ``ApiNotFound`` when the contact does not exist, and an ``ApiRequestError``
        for which ``is_duplicate_identifier`` is True when ``new_email`` belongs to another
        contact.
        """
        values = dict(attributes or {})
        if new_email is not None:
            values["EMAIL"] = new_email
        self._call(
            UPDATE_CONTACT,
            path={"identifier": email},
            params={"identifierType": "email_id"},
            json={"attributes": values},
        )

    def iter_list_contacts(
        self, list_id: int, modified_since: float | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[list[BrevoContact]]:
        """A list's contacts, oldest first, page by page."""
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": page_size, "offset": offset, "sort": "asc"}
            if modified_since is not None:
                params["modifiedSince"] = brevo_time(modified_since)
            body = self._call(LIST_CONTACTS, path={"listId": list_id}, params=params).json()
            page = [_contact_from_json(c) for c in body.get("contacts") or []]
            if page:
                yield page
            offset += len(page)
            if len(page) < page_size or offset >= int(body.get("count") or 0):
                return

    def list_attributes(self) -> list[str]:
        """The names of the contact attributes defined in the account."""
        body = self._call(LIST_ATTRIBUTES).json()
        return [str(a.get("name")) for a in body.get("attributes") or []]

    def start_import_json(self, list_id: int, rows_json: bytes | bytearray) -> ImportStart:
        """Start an import of ``rows_json`` (an encoded JSON array of ``{"email",
        "attributes"}``, at most 8 MB) into the list, updating existing contacts without
        emptying attributes and without notifying the account."""
        body = import_body(list_id, rows_json)
        local = self.http.now()
        response = self._call(IMPORT_CONTACTS, content=body)
        brevo_now = server_time(response)
        if brevo_now is None:
            started_at = local - self.limits.clock_margin_seconds
        else:
            started_at = brevo_now - DATE_MARGIN_SECONDS
        return ImportStart(int(response.json()["processId"]), started_at)

    def process_status(self, process_id: int) -> str:
        """The status Brevo gives the process: queued, in_process, completed..."""
        body = self._call(GET_PROCESS, path={"processId": process_id}).json()
        return str(body.get("status") or "")

    def import_contacts(self, list_id: int, rows: Sequence[ContactRow]) -> ImportResult:
        """Import ``rows`` into the list, wait for the process, and confirm by reading back.

        Brevo reports no per-row result, so the rows found in the list among its contacts
        modified since the import started are the accepted ones; the others were rejected.
        Polling backs off and goes through the pacing bucket of ``/processes``, which
        allows only 100 calls an hour per account.
        """
        started = self.http.now()
        start = self.start_import_json(list_id, encode_rows(rows))
        status = self.wait_for_process(start.process_id, started)
        if status != "completed":
            raise ApiUnavailable(
                API, IMPORT_CONTACTS.name, f"import process {start.process_id} ended {status}"
            )
        wanted = {r.email.lower() for r in rows}
        found: set[str] = set()
        for page in self.iter_list_contacts(list_id, modified_since=start.started_at):
            found.update(c.email for c in page if c.email in wanted)
        accepted = [r.email for r in rows if r.email.lower() in found]
        rejected = [r.email for r in rows if r.email.lower() not in found]
        return ImportResult(start.process_id, status, accepted, rejected)

    def wait_for_process(self, process_id: int, started: float | None = None) -> str:
        """Poll the process until it ends; return its last status (completed, failed,
        cancelled).

        ``started`` is when the work began by our clock (``http.now()``; default: now);
        past it plus ``limits.import_timeout_seconds`` ``ApiUnavailable`` is raised. Polls
        back off from ``first_poll_seconds`` to ``max_poll_seconds``.
        """
        wait = self.limits.first_poll_seconds
        deadline = (self.http.now() if started is None else started) + (
            self.limits.import_timeout_seconds
        )
        while True:
            self.http.sleep(wait)
            status = self.process_status(process_id)
            if status in TERMINAL_STATUSES:
                return status
            if self.http.now() >= deadline:
                raise ApiUnavailable(
                    API, GET_PROCESS.name, f"import process {process_id} still {status}"
                )
            wait = min(wait * 2, self.limits.max_poll_seconds)


def _contact_from_json(item: dict[str, Any]) -> BrevoContact:
    return BrevoContact(
        id=int(item["id"]),
        email=str(item.get("email") or "").strip().lower(),
        email_blacklisted=bool(item.get("emailBlacklisted", False)),
        modified_at=item.get("modifiedAt"),
        list_ids=tuple(int(i) for i in item.get("listIds") or []),
        attributes=dict(item.get("attributes") or {}),
        created_at=item.get("createdAt"),
    )
