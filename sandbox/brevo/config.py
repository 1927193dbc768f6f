"""Settings of the fake Brevo: what ``create_app`` takes and ``PUT /_sandbox/settings``
changes while it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.settings import Check, checked_settings, is_integer, is_number

RATE_SETTINGS = ("contacts_rate", "processes_per_hour", "time_scale")


@dataclass
class BrevoFakeConfig:
    """How the fake Brevo behaves; every field but ``seed`` and ``fault_seed`` may be
    changed at run time through the control API."""

    token: str | None = None
    """``None``: any non-empty ``api-key`` header is accepted; otherwise it must equal this."""
    seed: int = 1
    contacts_rate: int = 10
    """Requests per 1 s window on ``/v3/contacts/*``; 0 means unlimited."""
    processes_per_hour: int = 100
    """Requests per hour window on every other endpoint (``/v3/processes``...)."""
    time_scale: float = 1.0
    """The hour window lasts ``3600 / time_scale`` seconds."""
    import_seconds: float = 1.0
    """How long an import (or a remove-all) stays queued / in_process."""
    all_failed_400: bool = True
    """An add or remove where no identifier could be applied answers 400 instead of 201."""
    fault_seed: int = 0


def _whole(value: Any) -> bool:
    return is_integer(value) and value >= 0


def _number(value: Any) -> bool:
    return is_number(value) and value >= 0


CHECKS: dict[str, Check] = {
    "contacts_rate": (_whole, "a non-negative integer"),
    "processes_per_hour": (_whole, "a non-negative integer"),
    "time_scale": (lambda v: _number(v) and v > 0, "a positive number"),
    "import_seconds": (_number, "a non-negative number"),
    "all_failed_400": (lambda v: isinstance(v, bool), "a boolean"),
    "token": (lambda v: v is None or (isinstance(v, str) and v != ""), "null or a string"),
}


def apply_settings(config: BrevoFakeConfig, payload: Any) -> set[str]:
    """Change the fields ``payload`` names, all or none; return their names.

    Raises ``ValueError`` (its text is the control API's error) for an unknown field or a
    value of the wrong type.
    """
    payload = checked_settings(payload, CHECKS)
    for key, value in payload.items():
        setattr(config, key, float(value) if key in ("time_scale", "import_seconds") else value)
    return set(payload)


def settings_json(config: BrevoFakeConfig) -> dict[str, Any]:
    """The run-time settings as the control API shows them."""
    return {key: getattr(config, key) for key in CHECKS}
