"""service/clients/credentials.py: credential fingerprints, and which answers accept one."""

from __future__ import annotations

import pytest

from service.clients.credentials import FINGERPRINT_CHARS, Acceptance, accepts, fingerprint


def test_a_fingerprint_is_short_stable_and_reveals_nothing_of_the_credential() -> None:
    key = "xkeysib-0123456789abcdef0123456789abcdef-AbCdEf"
    print_ = fingerprint(key)
    assert len(print_) == FINGERPRINT_CHARS
    assert all(c in "0123456789abcdef" for c in print_)
    assert fingerprint(key) == print_
    assert fingerprint(key + "x") != print_
    assert not any(key[i : i + 6] in print_ for i in range(len(key) - 5))


@pytest.mark.parametrize(
    ("status", "accepted"),
    [
        (200, True),
        (201, True),
        (204, True),
        (400, True),
        (404, True),
        (401, False),
        (403, False),
        (429, False),  # a rate limit may come before the credential is looked at
        (500, False),
        (503, False),
        (0, False),  # no answer at all
    ],
)
def test_which_answers_show_the_credential_was_accepted(status: int, accepted: bool) -> None:
    assert accepts(status) is accepted


def test_acceptance_is_counted_per_api_and_credential() -> None:
    acceptance = Acceptance()
    acceptance.record("brevo", "aa", 200)
    acceptance.record("brevo", "aa", 404)
    acceptance.record("brevo", "aa", 401)
    acceptance.record("brevo", "bb", 200)
    acceptance.record("pipedrive", "aa", 500)
    assert acceptance.count("brevo", "aa") == 2
    assert acceptance.count("brevo", "bb") == 1
    assert acceptance.count("pipedrive", "aa") == 0
