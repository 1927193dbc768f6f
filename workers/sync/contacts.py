"""What the sync sends for a member: the normalised email and the attributes, and their hash."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_EMAIL_LENGTH = 254
# Deliberately plain: one @, no spaces, a dot in the domain. Brevo is the final judge and
# the ledger remembers what it rejects.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def valid_email(value: str | None) -> str | None:
    """The email trimmed and lower-cased when it looks deliverable, else None."""
    if not value:
        return None
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        return None
    return email


def contact_attributes(first_name: str | None, last_name: str | None) -> dict[str, Any]:
    """The Brevo attributes: FIRSTNAME and LASTNAME, only when known (an empty value would
    erase what Brevo holds)."""
    values = {"FIRSTNAME": first_name, "LASTNAME": last_name}
    return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class Member:
    """One member entity of a filter (a person, or a deal with its person)."""

    entity_id: int
    person_id: int | None
    email: str | None
    first_name: str | None
    last_name: str | None
    # Pipedrive's update_time (unix seconds) of the person data, when known.
    updated_at: int | None = None

    def attributes(self) -> dict[str, Any]:
        """The member's Brevo attributes (``contact_attributes``)."""
        return contact_attributes(self.first_name, self.last_name)

    def attrs_hash(self) -> str | None:
        """A hash of the email and attributes; a change means Brevo must hear of it."""
        if self.email is None:
            return None
        text = self.email + "\n" + json.dumps(self.attributes(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def contact_row_json(email: str, first_name: str | None, last_name: str | None) -> bytes:
    """One import row, encoded: ``{"email": ..., "attributes": {...}}``."""
    attributes = contact_attributes(first_name, last_name)
    return json.dumps({"email": email, "attributes": attributes}, separators=(",", ":")).encode()
