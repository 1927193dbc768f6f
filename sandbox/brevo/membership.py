"""``POST /contacts/lists/{listId}/contacts/add`` and ``.../remove``.

The body holds exactly one of ``emails``, ``ids``, ``extIds`` (1 to 150 items), or for
remove ``{"all": true}``, which empties the list in a background process. Identifiers
that name no contact, or a contact already in (add) or not in (remove) the list, are
listed under ``failure``. When none succeeded Brevo answers 400 "Contact already in list
and/or does not exist"; that is confirmed for a single email only, so the fake's
``all_failed_400`` setting can turn it off (then 201 with an empty ``success``).
Blocklisted contacts join and leave lists like any other: the flag is untouched.
"""

from __future__ import annotations

from typing import Any

from sandbox.brevo.errors import NOTHING_APPLIED, BrevoError, invalid, missing
from sandbox.brevo.model import Contact, ContactList
from sandbox.brevo.store import Store

MAX_IDENTIFIERS = 150
REMOVE_ALL_PROCESS = "REMOVE_LIST_CONTACTS"
_KINDS: dict[str, type] = {"emails": str, "ids": int, "extIds": str}


def _find(store: Store, key: str, value: Any) -> Contact | None:
    if key == "emails":
        return store.by_email(value)
    if key == "ids":
        return store.contacts.get(value)
    return store.by_ext_id(value)


def _identifiers(body: dict[str, Any], key: str) -> list[Any]:
    values = body[key]
    kind = _KINDS[key]
    if not isinstance(values, list) or not values:
        raise invalid(f"{key} must be a non-empty array")
    if len(values) > MAX_IDENTIFIERS:
        raise BrevoError(400, "out_of_range", f"{key} can contain at most {MAX_IDENTIFIERS} items")
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise invalid(f"{key} must contain only {'integers' if kind is int else 'strings'}")
    return values


def change_membership(
    store: Store,
    lst: ContactList,
    body: dict[str, Any],
    add: bool,
    all_failed_400: bool,
    process_seconds: float,
) -> dict[str, Any]:
    """Apply an add or remove call; return the 201 body (``postContactInfo``)."""
    keys = [k for k in (*_KINDS, "all") if k in body and (k != "all" or not add)]
    if not keys:
        raise missing("emails, ids or extIds is required" + ("" if add else " (or all)"))
    if len(keys) > 1:
        raise invalid("Only one of emails, ids, extIds or all can be passed")
    if keys[0] == "all":
        if body["all"] is not True:
            raise invalid("all must be true")
        return _remove_all(store, lst, process_seconds)
    key = keys[0]
    values = _identifiers(body, key)
    success: list[Any] = []
    failure: list[Any] = []
    with store.lock:
        for value in values:
            contact = _find(store, key, value)
            if contact is None or (contact.id in lst.members) == add:
                failure.append(value)
                continue
            if add:
                lst.members.add(contact.id)
            else:
                lst.members.discard(contact.id)
            success.append(value)
    if not success and all_failed_400:
        raise invalid(NOTHING_APPLIED)
    return {"contacts": {"success": success, "failure": failure}}


def _remove_all(store: Store, lst: ContactList, seconds: float) -> dict[str, Any]:
    with store.lock:
        leaving = set(lst.members)

        def apply(at_ms: int) -> None:
            lst.members.difference_update(leaving)

        process = store.add_process(REMOVE_ALL_PROCESS, seconds, apply)
    return {"contacts": {"total": len(leaving), "processId": process.id}}
