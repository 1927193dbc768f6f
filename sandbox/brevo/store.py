"""The fake's data in memory: folders, lists, contacts and processes, their ids and
indexes, and the background processes that fall due.

Every public method takes the store's lock, so the server thread and a test inspecting
``app.state.fake.store`` see consistent data. Callers that need several steps to be
atomic hold ``store.lock`` (re-entrant) around them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from sandbox.brevo.errors import FOLDER_NOT_FOUND, LIST_NOT_FOUND, not_found
from sandbox.brevo.model import (
    ATTRIBUTES,
    Contact,
    ContactList,
    Folder,
    Process,
    epoch_ms,
    normal_email,
)

IDENTIFIER_TYPES = (
    "email_id",
    "phone_id",
    "contact_id",
    "ext_id",
    "whatsapp_id",
    "landline_number_id",
)
_ATTRIBUTE_OF_TYPE = {"phone_id": "SMS", "whatsapp_id": "WHATSAPP", "landline_number_id": ""}


class Store:
    """All records of one fake account."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.now = now
        self.folders: dict[int, Folder] = {}
        self.lists: dict[int, ContactList] = {}
        self.contacts: dict[int, Contact] = {}
        self.processes: dict[int, Process] = {}
        self.import_rejects: set[str] = set()
        # The contact attributes the account defines: name -> type (text, date, float, boolean).
        self.attributes: dict[str, str] = dict(ATTRIBUTES)
        self._by_email: dict[str, int] = {}
        self._by_ext_id: dict[str, int] = {}
        # Bumped whenever a contact's modifiedAt moves (``stamp``).
        self.modifications = 0
        # Per list: the members and the modification count a listing was made for, its
        # ``modifiedSince``, and the listing. Reading a large list back page by page
        # selects and sorts it once, not once per page.
        self._listings: dict[int, tuple[frozenset[int], int, int | None, list[Contact]]] = {}
        self._last_id = {"folder": 0, "list": 0, "contact": 0, "process": 0}

    def now_ms(self) -> int:
        """The current time in epoch milliseconds."""
        return epoch_ms(self.now())

    def _new_id(self, kind: str) -> int:
        self._last_id[kind] += 1
        return self._last_id[kind]

    # Folders and lists.

    def add_folder(self, name: str, created_ms: int | None = None) -> Folder:
        """Create a folder."""
        with self.lock:
            folder = Folder(self._new_id("folder"), name, created_ms or self.now_ms())
            self.folders[folder.id] = folder
            return folder

    def folder(self, folder_id: int, message: str = FOLDER_NOT_FOUND) -> Folder:
        """The folder, or a 404 ``BrevoError`` with ``message``."""
        with self.lock:
            if folder_id not in self.folders:
                raise not_found(message)
            return self.folders[folder_id]

    def delete_folder(self, folder_id: int) -> None:
        """Delete a folder and all its lists."""
        with self.lock:
            self.folder(folder_id, "Folder ID not found")
            for lst in [x for x in self.lists.values() if x.folder_id == folder_id]:
                del self.lists[lst.id]
            del self.folders[folder_id]

    def add_list(self, name: str, folder_id: int, created_ms: int | None = None) -> ContactList:
        """Create a list in an existing folder."""
        with self.lock:
            self.folder(folder_id)
            lst = ContactList(self._new_id("list"), name, folder_id, created_ms or self.now_ms())
            self.lists[lst.id] = lst
            return lst

    def get_list(self, list_id: int) -> ContactList:
        """The list, or a 404 ``BrevoError``."""
        with self.lock:
            if list_id not in self.lists:
                raise not_found(LIST_NOT_FOUND)
            return self.lists[list_id]

    def delete_list(self, list_id: int) -> None:
        """Delete a list; its contacts stay in the account."""
        with self.lock:
            self.get_list(list_id)
            del self.lists[list_id]

    def list_ids_of(self, contact: Contact) -> list[int]:
        """The ids of the lists the contact is in, ascending."""
        with self.lock:
            return sorted(x.id for x in self.lists.values() if contact.id in x.members)

    def members(self, lst: ContactList, modified_since: int | None = None) -> list[Contact]:
        """The list's contacts, oldest first; only those modified after
        ``modified_since`` (epoch ms) when given. The caller may change the list."""
        with self.lock:
            # A contact's creation time never changes and its id is never reused, so a
            # listing made for the same members and modifications is still right.
            cached = self._listings.get(lst.id)
            if (
                cached is None
                or cached[1] != self.modifications
                or cached[2] != modified_since
                or cached[0] != lst.members
            ):
                found = [self.contacts[i] for i in lst.members]
                if modified_since is not None:
                    found = [c for c in found if c.modified_ms > modified_since]
                found.sort(key=lambda c: (c.created_ms, c.id))
                cached = (frozenset(lst.members), self.modifications, modified_since, found)
                self._listings[lst.id] = cached
            return list(cached[3])

    # Contacts.

    def add_contact(
        self, email: str | None, created_ms: int | None = None, modified_ms: int | None = None
    ) -> Contact:
        """Create a contact (the email must be free and normalised)."""
        with self.lock:
            created = created_ms or self.now_ms()
            contact = Contact(self._new_id("contact"), email, created, modified_ms or created)
            self.contacts[contact.id] = contact
            if email is not None:
                self._by_email[email] = contact.id
            return contact

    def stamp(self, contact: Contact, at_ms: int) -> None:
        """Set a contact's ``modifiedAt``."""
        with self.lock:
            contact.modified_ms = at_ms
            self.modifications += 1

    def by_email(self, email: str) -> Contact | None:
        """The contact with this address (compared case-insensitively)."""
        with self.lock:
            found = self._by_email.get(normal_email(email))
            return self.contacts[found] if found is not None else None

    def by_ext_id(self, ext_id: str) -> Contact | None:
        """The contact with this EXT_ID."""
        with self.lock:
            found = self._by_ext_id.get(ext_id)
            return self.contacts[found] if found is not None else None

    def by_attribute(self, name: str, value: str) -> Contact | None:
        """The contact whose attribute ``name`` equals ``value`` (SMS...)."""
        with self.lock:
            if not name:
                return None
            for contact in self.contacts.values():
                if contact.attributes.get(name) == value:
                    return contact
            return None

    def set_email(self, contact: Contact, email: str) -> None:
        """Give a contact a new (free, normalised) address."""
        with self.lock:
            if contact.email is not None:
                self._by_email.pop(contact.email, None)
            contact.email = email
            self._by_email[email] = contact.id

    def set_ext_id(self, contact: Contact, ext_id: str | None) -> None:
        """Set or clear a contact's EXT_ID attribute, keeping the index."""
        with self.lock:
            if contact.ext_id is not None:
                self._by_ext_id.pop(contact.ext_id, None)
            if ext_id:
                contact.attributes["EXT_ID"] = ext_id
                self._by_ext_id[ext_id] = contact.id
            else:
                contact.attributes.pop("EXT_ID", None)

    def delete_contact(self, contact: Contact) -> None:
        """Delete a contact from the account and every list."""
        with self.lock:
            self.set_ext_id(contact, None)
            if contact.email is not None:
                self._by_email.pop(contact.email, None)
            for lst in self.lists.values():
                lst.members.discard(contact.id)
            del self.contacts[contact.id]

    def lookup(self, identifier: str, identifier_type: str | None) -> Contact | None:
        """The contact an API ``{identifier}`` names; without a type, an id, an email or an
        SMS value, as Brevo guesses."""
        with self.lock:
            kind = identifier_type or _guess(identifier)
            if kind == "email_id":
                return self.by_email(identifier)
            if kind == "contact_id":
                return self.contacts.get(int(identifier)) if identifier.isdigit() else None
            if kind == "ext_id":
                return self.by_ext_id(identifier)
            return self.by_attribute(_ATTRIBUTE_OF_TYPE.get(kind, ""), identifier)

    def in_lists(self, list_ids: Iterable[int]) -> list[ContactList]:
        """The lists with these ids, or a 404 ``BrevoError`` for the first missing one."""
        with self.lock:
            return [self.get_list(i) for i in list_ids]

    # Processes.

    def add_process(self, name: str, seconds: float, apply: Callable[[int], None]) -> Process:
        """Start a process that completes (and applies) ``seconds`` from now."""
        with self.lock:
            now = self.now_ms()
            process = Process(self._new_id("process"), name, now, now + int(seconds * 1000), apply)
            self.processes[process.id] = process
            return process

    def settle(self) -> None:
        """Apply every process that has fallen due, in due order, at its due time.

        Called before each request is handled, so nothing observes a state in which a
        process is due but not applied.
        """
        with self.lock:
            now = self.now_ms()
            due = [p for p in self.processes.values() if not p.applied and p.due_ms <= now]
            for process in sorted(due, key=lambda p: (p.due_ms, p.id)):
                if process.apply is not None:
                    process.apply(process.due_ms)
                process.applied = True


def _guess(identifier: str) -> str:
    if identifier.isdigit():
        return "contact_id"
    if "@" in identifier:
        return "email_id"
    return "phone_id"
