"""The shared admin password: checking a login against it, and noticing when it changed."""

from __future__ import annotations

import hashlib
import hmac
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP's minimum argon2id parameters: the stored hash only has to tell whether the configured
# password changed, and it is computed at every first login and at start.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


class AdminPassword:
    """The configured admin password: ``ADMIN_PASSWORD`` in clear or ``ADMIN_PASSWORD_HASH``."""

    def __init__(self, plain: str | None = None, argon2_hash: str | None = None) -> None:
        if bool(plain) == bool(argon2_hash):
            raise ValueError("give exactly one of plain or argon2_hash")
        self._plain = plain
        self._hash = argon2_hash
        self._hash_of_plain: str | None = None
        self._lock = threading.Lock()

    def verify(self, candidate: str) -> bool:
        """Tell whether ``candidate`` is the admin password, in constant time."""
        given = candidate.encode("utf-8", "surrogatepass")
        if self._plain is not None:
            # Digests have one length, so the comparison does not leak the password's length.
            return hmac.compare_digest(
                hashlib.sha256(given).digest(),
                hashlib.sha256(self._plain.encode("utf-8")).digest(),
            )
        assert self._hash is not None
        try:
            return bool(_hasher.verify(self._hash, given))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def storage_hash(self) -> str:
        """An argon2id hash of the password, to store with the admin user."""
        if self._hash is not None:
            return self._hash
        assert self._plain is not None
        with self._lock:
            if self._hash_of_plain is None:
                self._hash_of_plain = _hasher.hash(self._plain)
            return self._hash_of_plain

    def is_stored_as(self, stored_hash: str | None) -> bool:
        """Tell whether ``stored_hash`` (kept with the admin user) is of this same password."""
        if stored_hash is None:
            return False
        if self._hash is not None:
            return hmac.compare_digest(stored_hash.encode(), self._hash.encode())
        assert self._plain is not None
        try:
            return bool(_hasher.verify(stored_hash, self._plain))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
