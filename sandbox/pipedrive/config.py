"""Settings of the fake Pipedrive: what ``create_app`` takes and ``PUT /_sandbox/settings``
changes while it runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PipedriveFakeConfig:
    """How the fake Pipedrive behaves; every field but ``seed`` and ``persons`` may be
    changed at run time through the control API."""

    token: str | None = None
    """``None``: any non-empty ``x-api-token`` is accepted; otherwise it must equal this."""
    seed: int = 1
    persons: int = 1200
    """Seeded person count; filter 1 ("Everyone") has exactly this many members."""
    daily_token_budget: int = 1_000_000
    burst_limit: int = 100
    """Requests per 2 s window per token; 0 means unlimited."""
    retry_scale: float = 1.0
    """Multiplies the webhook retry delays (3, 30, 150 s) and the 30 min ban."""
    delivery_timeout: float = 10.0
    """Seconds a webhook receiver has to answer."""
    ignore_updated_since: bool = False
    """Ignore ``updated_since``/``updated_until`` on list calls that give ``filter_id``."""
    fault_seed: int = 0
    delivery_duplicate_ratio: float = 0.0
    """Share of deliveries sent once more after a 2xx: the same body and ``meta.id`` with
    the next attempt number, as Pipedrive resends one whose answer it did not see."""
    delivery_drop_ratio: float = 0.0
    """Share of deliveries never sent (logged as dropped), as events lost during a ban."""
    delivery_delay_max_ms: int = 0
    """Each delivery (and each duplicate) waits a random 0 to this many milliseconds
    before it is sent, so deliveries arrive out of order."""
    delivery_seed: int = 0
    """Seed of the drop, duplicate and delay draws (made in the order events happen)."""
