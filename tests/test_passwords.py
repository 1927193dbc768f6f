"""The admin password: constant-time checks and noticing a change."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from service.passwords import AdminPassword

PLAIN = "correct-horse-battery"


def test_plain_password_verifies_exactly() -> None:
    """Only the exact password; case, padding and prefixes fail; non-ASCII does not crash."""
    password = AdminPassword(plain=PLAIN)
    assert password.verify(PLAIN)
    for wrong in ("", PLAIN.upper(), PLAIN + " ", PLAIN[:-1], "ä" * 30, "\ud800"):
        assert not password.verify(wrong)


def test_non_ascii_passwords_work() -> None:
    """Compared as UTF-8 bytes, so "ä" is a password character, not a 500."""
    password = AdminPassword(plain="pässwörd-ümläut")
    assert password.verify("pässwörd-ümläut") and not password.verify("passwort-umlaut")


def test_argon2_hash_verifies_and_garbage_hashes_fail_closed() -> None:
    """A configured hash checks logins; a corrupt one refuses every login."""
    password = AdminPassword(argon2_hash=PasswordHasher().hash("hashed-secret-1"))
    assert password.verify("hashed-secret-1") and not password.verify("hashed-secret-2")
    assert not AdminPassword(argon2_hash="$argon2id$garbage").verify("anything-at-all")


def test_the_stored_hash_recognises_the_same_password_only() -> None:
    """What ends sessions on a password change."""
    password = AdminPassword(plain=PLAIN)
    stored = password.storage_hash()
    assert stored.startswith("$argon2id$") and PLAIN not in stored
    assert password.storage_hash() == stored  # computed once
    assert AdminPassword(plain=PLAIN).is_stored_as(stored)
    assert not AdminPassword(plain="another-password").is_stored_as(stored)
    assert not password.is_stored_as(None) and not password.is_stored_as("not a hash")
    configured = PasswordHasher().hash("x" * 12)
    assert AdminPassword(argon2_hash=configured).is_stored_as(configured)
    assert not AdminPassword(argon2_hash=configured).is_stored_as(stored)


def test_exactly_one_source_is_required() -> None:
    """Neither or both is a programming error."""
    with pytest.raises(ValueError):
        AdminPassword()
    with pytest.raises(ValueError):
        AdminPassword(plain=PLAIN, argon2_hash="$argon2id$x")
