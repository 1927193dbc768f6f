"""The fake's records (folders, lists, contacts, processes), the contact attributes the
account defines, and Brevo's time and email formats."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass
class Folder:
    """A contact folder."""

    id: int
    name: str
    created_ms: int


@dataclass
class ContactList:
    """A contact list; ``members`` holds contact ids."""

    id: int
    name: str
    folder_id: int
    created_ms: int
    members: set[int] = field(default_factory=set)


@dataclass
class Contact:
    """A contact. ``attributes`` holds defined attributes only, EXT_ID and SMS among them;
    the email lives in ``email`` (lower-cased: Brevo's identity is case-insensitive)."""

    id: int
    email: str | None
    created_ms: int
    modified_ms: int
    attributes: dict[str, Any] = field(default_factory=dict)
    email_blacklisted: bool = False
    sms_blacklisted: bool = False

    @property
    def ext_id(self) -> str | None:
        """The EXT_ID attribute, Brevo's external identifier."""
        value = self.attributes.get("EXT_ID")
        return value if isinstance(value, str) else None


@dataclass
class Process:
    """A background process. It is ``queued``, then ``in_process``, and ``completed`` at
    ``due_ms``, when ``apply`` (given that time) makes its effect."""

    id: int
    name: str
    created_ms: int
    due_ms: int
    apply: Callable[[int], None] | None = None
    applied: bool = False

    def status(self, now_ms: int) -> str:
        """What ``GET /processes/{id}`` says at ``now_ms``."""
        if self.applied or now_ms >= self.due_ms:
            return "completed"
        queued_until = self.created_ms + (self.due_ms - self.created_ms) // 4
        return "queued" if now_ms < queued_until else "in_process"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# name -> type, as GET /contacts/attributes lists them (all in category "normal").
ATTRIBUTES: dict[str, str] = {
    "EMAIL": "text",
    "FIRSTNAME": "text",
    "LASTNAME": "text",
    "SMS": "text",
    "EXT_ID": "text",
    "COMPANY": "text",
    "DOB": "date",
    "OPT_IN": "boolean",
}

# Deliberately loose: one "@", no spaces, a dot in the domain. Non-ASCII local parts pass
# (Brevo's exact rule is unknown; the Pipedrive demo data has umlauts in addresses).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def normal_email(value: str) -> str:
    """An address as Brevo identifies it: trimmed and lower-cased."""
    return value.strip().lower()


def valid_email(value: str) -> bool:
    """Whether ``value`` (normalised) is an address Brevo would accept."""
    return bool(_EMAIL.match(value)) and ".." not in value


def accepts(kind: str, value: Any) -> bool:
    """Whether an attribute of type ``kind`` takes ``value`` (others are ignored)."""
    if kind == "text":
        return isinstance(value, str)
    if kind == "date":
        return isinstance(value, str) and bool(_DATE.match(value))
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as Brevo writes times: ``2024-05-01T10:00:00.000Z``."""
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time(text: str) -> int | None:
    """A ``modifiedSince``-style time (UTC ``...Z`` or with an offset) as epoch ms; None
    when it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def epoch_ms(seconds: float) -> int:
    """Epoch seconds as whole milliseconds (Brevo keeps times to the millisecond)."""
    return int(seconds * 1000)
