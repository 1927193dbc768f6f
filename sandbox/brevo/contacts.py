"""Contact writes: create or upsert (``POST /contacts``), update (``PUT
/contacts/{identifier}``), and the attribute and identifier rules both share.

Rules kept from Brevo: attributes the account does not define, and values of the wrong
type, are ignored; email, EXT_ID and SMS identify a contact, so taking one another contact
owns is a 400 with ``metadata.duplicate_identifiers``; ``emailBlacklisted: true`` blocks a
contact but ``false`` never unblocks one (reported behaviour: the API does not reliably
un-blacklist); changing the address of a blocklisted contact resubscribes it, as Brevo's
documentation of ``updateContact`` warns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.brevo.errors import BrevoError, invalid, missing
from sandbox.brevo.model import Contact, ContactList, accepts, normal_email, valid_email
from sandbox.brevo.params import flag, id_list, optional
from sandbox.brevo.store import Store


def clean_attributes(
    raw: dict[str, Any], keep_empty: bool, defined: Mapping[str, str]
) -> tuple[dict[str, Any], set[str]]:
    """``(values to set, names to clear)`` from a request's ``attributes``: names not in
    ``defined`` (the account's attributes), EMAIL and wrongly typed values are dropped;
    empty values clear only when ``keep_empty``."""
    values: dict[str, Any] = {}
    clear: set[str] = set()
    for key, value in raw.items():
        name = str(key).upper()
        kind = defined.get(name)
        if kind is None or name == "EMAIL":
            continue
        if value is None or value == "":
            if keep_empty:
                clear.add(name)
        elif accepts(kind, value):
            values[name] = value
    return values, clear


def email_attribute(raw: dict[str, Any]) -> Any:
    """The EMAIL entry of ``attributes`` (any case), None when absent."""
    for key, value in raw.items():
        if str(key).upper() == "EMAIL":
            return value
    return None


def checked_email(value: Any) -> str:
    """A normalised valid address, or a 400."""
    if not isinstance(value, str) or not valid_email(normal_email(value)):
        raise invalid("Invalid email address")
    return normal_email(value)


def existing_lists(store: Store, list_ids: list[int]) -> list[ContactList]:
    """The lists, or a 400 naming the first unknown id."""
    for list_id in list_ids:
        if list_id not in store.lists:
            raise invalid(f"Invalid listId: {list_id}")
    return [store.lists[i] for i in list_ids]


def check_identifiers(
    store: Store, contact: Contact | None, email: str | None, values: dict[str, Any], verb: str
) -> None:
    """A 400 ``duplicate_parameter`` when the email, EXT_ID or SMS belongs to another
    contact than ``contact``."""
    owners = {
        "email": store.by_email(email) if email else None,
        "ext_id": store.by_ext_id(values["EXT_ID"]) if values.get("EXT_ID") else None,
        "SMS": store.by_attribute("SMS", values["SMS"]) if values.get("SMS") else None,
    }
    clashes = [name for name, owner in owners.items() if owner is not None and owner is not contact]
    if clashes:
        what = "email is" if clashes == ["email"] else ", ".join(clashes) + " are"
        raise BrevoError(
            400,
            "duplicate_parameter",
            f"Unable to {verb} contact, {what} already associated with another Contact",
            {"duplicate_identifiers": clashes},
        )


def write_attributes(
    store: Store, contact: Contact, values: dict[str, Any], clear: set[str], at_ms: int
) -> None:
    """Set and clear attributes (keeping the EXT_ID index) and stamp ``modifiedAt``."""
    for name in clear:
        if name == "EXT_ID":
            store.set_ext_id(contact, None)
        else:
            contact.attributes.pop(name, None)
    for name, value in values.items():
        if name == "EXT_ID":
            store.set_ext_id(contact, value)
        else:
            contact.attributes[name] = value
    store.stamp(contact, at_ms)


def _block(contact: Contact, email: bool | None, sms: bool | None) -> None:
    # Only ever sets the flags: a blocklisted contact stays blocklisted.
    if email:
        contact.email_blacklisted = True
    if sms:
        contact.sms_blacklisted = True


def create_contact(store: Store, body: dict[str, Any]) -> int | None:
    """``POST /contacts``: the new contact's id, or None when ``updateEnabled`` updated an
    existing one."""
    email_raw = optional(body, "email", str, "a string")
    ext_id = optional(body, "ext_id", str, "a string")
    raw = optional(body, "attributes", dict, "an object") or {}
    list_ids = id_list(body, "listIds")
    update = flag(body, "updateEnabled", False)
    blocked = optional(body, "emailBlacklisted", bool, "a boolean")
    sms_blocked = optional(body, "smsBlacklisted", bool, "a boolean")
    optional(body, "smtpBlacklistSender", list, "an array of strings")
    values, clear = clean_attributes(raw, keep_empty=True, defined=store.attributes)
    if ext_id:
        values["EXT_ID"] = ext_id
    email = checked_email(email_raw) if email_raw else None
    if email is None and not values.get("EXT_ID") and not values.get("SMS"):
        raise missing("Please provide Email or SMS attribute value to create user")
    with store.lock:
        lists = existing_lists(store, list_ids)
        found = (
            (store.by_email(email) if email else None)
            or (store.by_ext_id(values["EXT_ID"]) if values.get("EXT_ID") else None)
            or (store.by_attribute("SMS", values["SMS"]) if values.get("SMS") else None)
        )
        if found is not None and not update:
            raise BrevoError(
                400,
                "duplicate_parameter",
                "Contact already exist",
                {"duplicate_identifiers": ["email" if email else "ext_id"]},
            )
        check_identifiers(store, found, email, values, "update" if found else "create")
        now = store.now_ms()
        contact = found or store.add_contact(email, now)
        if email and contact.email is None:
            store.set_email(contact, email)
        write_attributes(store, contact, values, clear, now)
        _block(contact, blocked, sms_blocked)
        for lst in lists:
            lst.members.add(contact.id)
        return None if found else contact.id


def update_contact(store: Store, contact: Contact, body: dict[str, Any]) -> None:
    """``PUT /contacts/{identifier}``: attributes (EMAIL renames), ext_id, blocklist flags,
    ``listIds`` to join and ``unlinkListIds`` to leave."""
    raw = optional(body, "attributes", dict, "an object") or {}
    ext_id = optional(body, "ext_id", str, "a string")
    blocked = optional(body, "emailBlacklisted", bool, "a boolean")
    sms_blocked = optional(body, "smsBlacklisted", bool, "a boolean")
    join, leave = id_list(body, "listIds"), id_list(body, "unlinkListIds")
    optional(body, "smtpBlacklistSender", list, "an array of strings")
    values, clear = clean_attributes(raw, keep_empty=True, defined=store.attributes)
    if ext_id is not None:
        if ext_id:
            values["EXT_ID"] = ext_id
        else:
            clear.add("EXT_ID")
    new_email = email_attribute(raw)
    email = checked_email(new_email) if new_email not in (None, "") else None
    with store.lock:
        joined, left = existing_lists(store, join), existing_lists(store, leave)
        check_identifiers(store, contact, email, values, "update")
        if email is not None and email != contact.email:
            store.set_email(contact, email)
            contact.email_blacklisted = False
        write_attributes(store, contact, values, clear, store.now_ms())
        _block(contact, blocked, sms_blocked)
        for lst in joined:
            lst.members.add(contact.id)
        for lst in left:
            lst.members.discard(contact.id)
