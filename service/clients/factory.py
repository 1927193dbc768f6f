"""The clients as the service runs them: configured from the settings, counting into the
database so every process shares the counters, the figures and the pacing."""

from __future__ import annotations

from service.api_usage import DatabaseUsage
from service.clients.brevo import BrevoClient
from service.clients.http import ClientPolicy
from service.clients.pipedrive import PipedriveClient
from service.clients.usage import UsageStore
from service.config import Settings


class MissingCredential(Exception):
    """The setting a client needs is empty; ``str()`` names it."""


def pipedrive_client(settings: Settings, usage: UsageStore | None = None) -> PipedriveClient:
    """A Pipedrive client for ``settings`` (the database must be bound)."""
    if not settings.pipedrive_api_token:
        raise MissingCredential("PIPEDRIVE_API_TOKEN is not set")
    return PipedriveClient(
        settings.pipedrive_base_url,
        settings.pipedrive_api_token,
        usage=usage or DatabaseUsage(),
        policy=_policy(settings),
    )


def brevo_client(settings: Settings, usage: UsageStore | None = None) -> BrevoClient:
    """A Brevo client for ``settings`` (the database must be bound)."""
    if not settings.brevo_api_key:
        raise MissingCredential("BREVO_API_KEY is not set")
    return BrevoClient(
        settings.brevo_base_url,
        settings.brevo_api_key,
        usage=usage or DatabaseUsage(),
        policy=_policy(settings),
    )


def _policy(settings: Settings) -> ClientPolicy:
    return ClientPolicy(read_timeout=settings.api_read_timeout_seconds)
