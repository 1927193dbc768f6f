"""What the clients know about the credentials they send: a fingerprint that names one
without revealing it, and whether an API has accepted it in this process.

A fingerprint is a short hash of the credential. It is what the database records about a
refused credential (``service.auth_pause``), so every process that holds the same
credential finds the record and a process given another one does not; the credential
itself is never stored.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter

# Set apart from any other hash of the same secret.
_DOMAIN = b"pipedrive-brevo-sync credential\x00"
FINGERPRINT_CHARS = 16
# Answers that say nothing about the credential: the API may refuse before it looks at it.
_UNDECIDED = frozenset({401, 403, 429})


def fingerprint(credential: str) -> str:
    """A short, stable hash naming ``credential`` (16 hex characters); never the credential."""
    digest = hashlib.sha256(_DOMAIN + credential.encode("utf-8")).hexdigest()
    return digest[:FINGERPRINT_CHARS]


def accepts(status: int) -> bool:
    """Whether an answer with ``status`` shows the API let the credential through: any 2xx,
    3xx or 4xx but 401, 403 and 429 (a 5xx or a rate limit proves nothing)."""
    return 200 <= status < 500 and status not in _UNDECIDED


class Acceptance:
    """Counts, per API and credential fingerprint, the answers that accepted the credential.

    A caller compares two counts (``count`` before and after some work) to learn whether
    the API accepted the credential meanwhile; thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted: Counter[tuple[str, str]] = Counter()

    def record(self, api: str, credential: str, status: int) -> None:
        """Count an answer of ``api`` to the credential fingerprinted ``credential``."""
        if accepts(status):
            with self._lock:
                self._accepted[(api, credential)] += 1

    def count(self, api: str, credential: str) -> int:
        """Answers of ``api`` that accepted the credential so far."""
        with self._lock:
            return self._accepted[(api, credential)]


# The process's record: every client counts into it unless given its own.
ACCEPTANCE = Acceptance()
