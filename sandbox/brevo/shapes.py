"""JSON shapes of the API's answers, as the spec's schemas declare them
(``getContactDetails``, ``getList``, ``getExtendedList``, ``getFolder``, ``getProcess``...).
"""

from __future__ import annotations

from typing import Any

from sandbox.brevo.model import Contact, ContactList, Folder, Process, iso_ms
from sandbox.brevo.store import Store


def contact_json(store: Store, contact: Contact, extended: bool = False) -> dict[str, Any]:
    """``getContactDetails``; ``getExtendedContactDetails`` (with ``statistics``) when
    ``extended``."""
    body: dict[str, Any] = {}
    if contact.email is not None:
        body["email"] = contact.email
    body.update(
        id=contact.id,
        emailBlacklisted=contact.email_blacklisted,
        smsBlacklisted=contact.sms_blacklisted,
        createdAt=iso_ms(contact.created_ms),
        modifiedAt=iso_ms(contact.modified_ms),
        listIds=store.list_ids_of(contact),
        listUnsubscribed=[],
        attributes=dict(contact.attributes),
    )
    if extended:
        body["statistics"] = {}
    return body


def _totals(store: Store, contact_ids: set[int]) -> dict[str, int]:
    blocked = sum(1 for i in contact_ids if store.contacts[i].email_blacklisted)
    return {
        "totalBlacklisted": blocked,
        "totalSubscribers": len(contact_ids) - blocked,
        "uniqueSubscribers": len(contact_ids),
    }


def list_json(store: Store, lst: ContactList, folder_id: bool = True) -> dict[str, Any]:
    """``getList`` (with ``folderId``, as ``getLists`` requires, unless told not to)."""
    body: dict[str, Any] = {"id": lst.id, "name": lst.name, **_totals(store, lst.members)}
    if folder_id:
        body["folderId"] = lst.folder_id
    return body


def extended_list_json(store: Store, lst: ContactList, drift: bool = False) -> dict[str, Any]:
    """``getExtendedList``. With ``drift``, ``folderId`` is renamed ``folder_id`` and
    ``totalSubscribers`` is a string: a contract test must notice both."""
    body = list_json(store, lst)
    body.update(createdAt=iso_ms(lst.created_ms), campaignStats=[], dynamicList=False)
    if drift:
        body["folder_id"] = body.pop("folderId")
        body["totalSubscribers"] = str(body["totalSubscribers"])
    return body


def folder_json(store: Store, folder: Folder) -> dict[str, Any]:
    """``getFolder``: totals over the unique contacts of the folder's lists."""
    members: set[int] = set()
    for lst in store.lists.values():
        if lst.folder_id == folder.id:
            members |= lst.members
    return {"id": folder.id, "name": folder.name, **_totals(store, members)}


def process_json(process: Process, now_ms: int) -> dict[str, Any]:
    """``getProcess`` (no ``export_url``: imports have none)."""
    return {"id": process.id, "status": process.status(now_ms), "name": process.name}


def attributes_json(defined: dict[str, str]) -> dict[str, Any]:
    """``getAttributes`` for the attributes an account defines (name -> type)."""
    return {
        "attributes": [
            {"name": name, "category": "normal", "type": kind} for name, kind in defined.items()
        ]
    }
