"""Structured logging: one JSON object per line, with job and filter context, secrets redacted.

``configure_logging`` is called once per process. ``log_context(job_id=..., filter_id=...)``
adds those ids to every line logged inside it (context variables, so it follows threads
started with a copied context and async tasks). Every line passes a redaction step that
replaces configured secrets and anything shaped like a session token.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "[redacted]"

# Session tokens carry a recognisable prefix so they can be found wherever they leak.
TOKEN_PATTERN = re.compile(r"pbs_[A-Za-z0-9_\-]{16,}")
# Credentials in headers or URLs, whatever their value.
CREDENTIAL_PATTERNS = (
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?\s*(?:bearer|basic)\s+)[^\s\"',;]+"),
    re.compile(r"(?i)((?:api[_-]?token|api[_-]?key|password|token)=)[^&\s\"']+"),
    # An Authorization value on its own (a header logged as a field, not under its name):
    # the base64 of "user:password" is none of the configured secrets as such.
    re.compile(r"(?i)(\b(?:basic|bearer)\s+)[A-Za-z0-9+/_.~\-]{16,}=*"),
)

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pbsync_log_context", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``
# (uvicorn's ``color_message`` is the plain message with terminal colours, so it is dropped).
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)


class Redactor:
    """Replaces known secret values and token-shaped strings in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Add secret values to redact from now on (longest first, so none is half-replaced)."""
        with self._lock:
            known = set(self._secrets)
            for secret in secrets:
                # Very short values would redact ordinary words; config refuses them anyway.
                if secret and len(secret) >= 4 and secret not in known:
                    known.add(secret)
            self._secrets = sorted(known, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret replaced by ``[redacted]``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = TOKEN_PATTERN.sub(REDACTED, text)
        for pattern in CREDENTIAL_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text


redactor = Redactor()


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (such as ``job_id`` and ``filter_id``) to every line logged inside."""
    current = _context.get() or {}
    token = _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields ``log_context`` has set for the current thread or task."""
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line, after redaction."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a redacted JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(current_context())
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        return self.redactor.redact(self._redact_values(line, entry))

    def _redact_values(self, line: str, entry: dict[str, Any]) -> str:
        # A secret containing a quote or backslash is escaped in the JSON text and would not
        # match there, so redact the values first and re-encode when anything changed.
        redacted = {
            k: self.redactor.redact(v) if isinstance(v, str) else v for k, v in entry.items()
        }
        if redacted == entry:
            return line
        return json.dumps(redacted, default=str, ensure_ascii=False)


def configure_logging(
    level: str = "INFO", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Send every logger's output through one JSON handler on ``stream`` (default stderr)."""
    redactor.add(*secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redactor))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Servers and libraries log through the root handler, never their own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "huey", "httpx"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
