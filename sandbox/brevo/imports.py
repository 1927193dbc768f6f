"""``POST /contacts/import``: checked at once, applied later by an ``IMPORTUSER`` process.

Rows come from ``jsonBody`` (``[{"email", "attributes"}]``) or ``fileBody`` (CSV with a
header row, ``;``-separated, an ``EMAIL`` column). ``fileUrl`` is refused: the sandbox
fetches nothing. When the process falls due, each valid row is upserted (attributes the
account does not define are ignored) and added to the import's lists. Rows with a bad
address, an EXT_ID or SMS owned by another contact, or an address the control API put on
the reject list are skipped silently: Brevo's process report has no per-row result.
Touched contacts get ``modifiedAt`` = the completion time, so reading the list back with
``modifiedSince`` = the import's start finds the accepted rows.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from sandbox.brevo.contacts import clean_attributes, existing_lists, write_attributes
from sandbox.brevo.errors import invalid, missing
from sandbox.brevo.model import ContactList, normal_email, valid_email
from sandbox.brevo.params import flag, id_list, optional
from sandbox.brevo.store import Store

IMPORT_PROCESS = "IMPORTUSER"
SOURCES = ("fileUrl", "fileBody", "jsonBody")


@dataclass(frozen=True)
class ImportJob:
    """What an accepted import request will do when its process completes."""

    rows: list[tuple[Any, dict[str, Any]]]
    lists: list[ContactList]
    update_existing: bool
    empty_attributes: bool
    email_blacklist: bool
    sms_blacklist: bool
    rejects: frozenset[str]


def _json_rows(value: Any) -> list[tuple[Any, dict[str, Any]]]:
    if not isinstance(value, list):
        raise invalid("jsonBody must be an array of objects")
    rows: list[tuple[Any, dict[str, Any]]] = []
    for item in value:
        if isinstance(item, dict):
            attributes = item.get("attributes")
            rows.append((item.get("email"), attributes if isinstance(attributes, dict) else {}))
    return rows


def _csv_rows(value: Any) -> list[tuple[Any, dict[str, Any]]]:
    if not isinstance(value, str) or not value.strip():
        raise invalid("fileBody must be a non-empty string")
    lines = csv.reader(io.StringIO(value), delimiter=";")
    header = [name.strip().upper() for name in next(lines)]
    rows: list[tuple[Any, dict[str, Any]]] = []
    for line in lines:
        cells = dict(zip(header, line, strict=False))
        email = cells.pop("EMAIL", None)
        rows.append((email, cells))
    return rows


def _new_list(store: Store, spec: dict[str, Any]) -> ContactList:
    name, folder_id = spec.get("listName"), spec.get("folderId")
    if not isinstance(name, str) or not name:
        raise missing("newList.listName is required")
    if not isinstance(folder_id, int) or isinstance(folder_id, bool):
        raise missing("newList.folderId is required")
    if folder_id not in store.folders:
        raise invalid("Folder ID does not exist")
    return store.add_list(name, folder_id)


def start_import(store: Store, body: dict[str, Any], seconds: float) -> int:
    """Check an import request and start its process; return the process id."""
    sources = [key for key in SOURCES if body.get(key) is not None]
    if not sources:
        raise missing("fileUrl, fileBody or jsonBody is required")
    if len(sources) > 1:
        raise invalid("Only one of fileUrl, fileBody or jsonBody can be passed")
    if sources == ["fileUrl"]:
        raise invalid("fileUrl is not supported by the sandbox; send fileBody or jsonBody")
    rows = _json_rows(body["jsonBody"]) if sources == ["jsonBody"] else _csv_rows(body["fileBody"])
    list_ids = id_list(body, "listIds")
    new_list = optional(body, "newList", dict, "an object")
    optional(body, "notifyUrl", str, "a string")
    update_existing = flag(body, "updateExistingContacts", True)
    empty_attributes = flag(body, "emptyContactsAttributes", False)
    email_blacklist = flag(body, "emailBlacklist", False)
    sms_blacklist = flag(body, "smsBlacklist", False)
    flag(body, "disableNotification", False)
    with store.lock:
        lists = existing_lists(store, list_ids)
        if new_list is not None:
            lists.append(_new_list(store, new_list))
        if not lists:
            raise missing("listIds or newList is required")
        job = ImportJob(
            rows,
            lists,
            update_existing,
            empty_attributes,
            email_blacklist,
            sms_blacklist,
            frozenset(store.import_rejects),
        )
        process = store.add_process(
            IMPORT_PROCESS, seconds, lambda at: apply_import(store, job, at)
        )
        return process.id


def apply_import(store: Store, job: ImportJob, at_ms: int) -> None:
    """Upsert the job's valid rows into its lists, stamped ``at_ms``."""
    with store.lock:
        for email_raw, raw in job.rows:
            if not isinstance(email_raw, str):
                continue
            email = normal_email(email_raw)
            if not valid_email(email) or email in job.rejects:
                continue
            values, clear = clean_attributes(
                raw, keep_empty=job.empty_attributes, defined=store.attributes
            )
            contact = store.by_email(email)
            owners = [store.by_ext_id(values["EXT_ID"])] if values.get("EXT_ID") else []
            if values.get("SMS"):
                owners.append(store.by_attribute("SMS", values["SMS"]))
            if any(o is not None and o is not contact for o in owners):
                continue
            if contact is None:
                contact = store.add_contact(email, at_ms)
                write_attributes(store, contact, values, clear, at_ms)
            elif job.update_existing:
                write_attributes(store, contact, values, clear, at_ms)
            # Only ever sets the flags: a blocklisted contact stays blocklisted.
            if job.email_blacklist:
                contact.email_blacklisted = True
            if job.sms_blacklist:
                contact.sms_blacklisted = True
            for lst in job.lists:
                if lst.id in store.lists:
                    lst.members.add(contact.id)
