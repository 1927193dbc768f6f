"""The service's webhooks in Pipedrive: install them, say how they stand, keep them there.

Ours are the webhooks whose name starts with ``OUR_NAME_PREFIX``: one per object the sync
follows (person, deal, organization), every action, version 2.0, HTTP Basic with
``WEBHOOK_USER``/``WEBHOOK_PASSWORD``. Webhooks with any other name are never touched.

- ``install_webhooks`` (``pbsync webhooks install``) is idempotent: it creates the missing
  ones, keeps those that match, and replaces (deletes, then creates) ours whose URL, user,
  action or version differ from the configuration, or that are inactive.
- ``webhook_status`` (``pbsync webhooks status``) says how each stands.
- ``ensure_webhooks`` runs with every filter refresh: Pipedrive deletes a webhook after
  three days without a successful delivery, so one that vanished is registered again.
  It costs one list call when nothing is missing.

Pipedrive never shows a webhook's password to compare, so after changing
``WEBHOOK_PASSWORD`` run ``pbsync webhooks install --replace``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from service.clients.errors import ApiError, ApiNotFound
from service.clients.pipedrive import PipedriveClient, Webhook
from service.config import Settings

log = logging.getLogger(__name__)

OUR_NAME_PREFIX = "pipedrive-brevo-sync"
EVENT_OBJECTS: tuple[str, ...] = ("person", "deal", "organization")
EVENT_ACTION = "*"
VERSION = "2.0"
WEBHOOK_PATH = "/webhooks/pipedrive"

Write = Callable[[str], object]


@dataclass(frozen=True)
class WebhookTarget:
    """Where Pipedrive is to send our webhooks, and the HTTP Basic credentials it sends."""

    url: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookTarget | None:
        """The target the settings describe; None unless PUBLIC_URL, WEBHOOK_USER and
        WEBHOOK_PASSWORD are all set."""
        if not (settings.public_url and settings.webhook_user and settings.webhook_password):
            return None
        return cls(
            webhook_url(settings.public_url), settings.webhook_user, settings.webhook_password
        )


@dataclass(frozen=True)
class Replacement:
    """One of ours that was deleted, the webhook created in its place, and why."""

    old: Webhook
    new: Webhook
    reason: str


@dataclass(frozen=True)
class InstallResult:
    """What ``install_webhooks`` did: ``removed`` are webhooks of ours it deleted without
    creating one in their place (duplicates; or, after a failed create, the replaced one)."""

    created: list[Webhook] = field(default_factory=list)
    kept: list[Webhook] = field(default_factory=list)
    replaced: list[Replacement] = field(default_factory=list)
    removed: list[Webhook] = field(default_factory=list)


class InstallFailed(Exception):
    """A Pipedrive call failed during the install; ``done`` is what was done before it."""

    def __init__(self, error: ApiError, done: InstallResult) -> None:
        super().__init__(str(error))
        self.error = error
        self.done = done


@dataclass(frozen=True)
class WebhookStatus:
    """How one of our objects stands in Pipedrive. ``webhook`` is ours for the object (the
    matching one if any), None when none is registered; ``matches`` is None when there was
    no URL to compare with; ``difference`` says why it does not match."""

    event_object: str
    webhook: Webhook | None
    matches: bool | None
    duplicates: int = 0
    difference: str | None = None

    @property
    def registered(self) -> bool:
        """Whether a webhook of ours exists for this object."""
        return self.webhook is not None

    @property
    def active(self) -> bool:
        """Whether it exists and Pipedrive calls it as active."""
        return self.webhook is not None and self.webhook.is_active


def webhook_url(public_url: str) -> str:
    """The webhook endpoint under ``PUBLIC_URL``."""
    return public_url.rstrip("/") + WEBHOOK_PATH


def webhook_name(event_object: str) -> str:
    """The name our webhook for ``event_object`` gets in Pipedrive."""
    return f"{OUR_NAME_PREFIX} {event_object}"


def is_ours(webhook: Webhook) -> bool:
    """Whether this service registered the webhook (its name starts with our prefix)."""
    return (webhook.name or "").startswith(OUR_NAME_PREFIX)


def _ours_by_object(webhooks: list[Webhook]) -> dict[str, list[Webhook]]:
    found: dict[str, list[Webhook]] = {event_object: [] for event_object in EVENT_OBJECTS}
    for webhook in sorted(webhooks, key=lambda w: w.id):
        if is_ours(webhook) and webhook.event_object in found:
            found[webhook.event_object].append(webhook)
    return found


def _difference(webhook: Webhook, url: str, user: str | None) -> str | None:
    """Why ``webhook`` does not match the configuration, or None when it does."""
    if webhook.subscription_url != url:
        return "URL differs"
    if user is not None and webhook.http_auth_user != user:
        return "user differs"
    if webhook.event_action != EVENT_ACTION:
        return "action differs"
    if webhook.version != VERSION:
        return "version differs"
    return None


def _create(pipedrive: PipedriveClient, event_object: str, target: WebhookTarget) -> Webhook:
    return pipedrive.create_webhook(
        target.url,
        EVENT_ACTION,
        event_object,
        webhook_name(event_object),
        target.user,
        target.password,
        VERSION,
    )


def _delete(pipedrive: PipedriveClient, webhook: Webhook) -> None:
    with contextlib.suppress(ApiNotFound):  # already gone: what was wanted
        pipedrive.delete_webhook(webhook.id)


def install_webhooks(
    pipedrive: PipedriveClient, url: str, user: str, password: str, *, replace: bool = False
) -> InstallResult:
    """Make our webhooks match the configuration; running it twice changes nothing.

    Per object: ours that match (and are active) are kept, extra copies deleted; otherwise
    ours are deleted and one is created. ``replace`` replaces matching ones too (after a
    password change). Raises ``InstallFailed`` with what was done when a call fails.
    """
    target = WebhookTarget(url, user, password)
    result = InstallResult()
    try:
        ours = _ours_by_object(pipedrive.list_webhooks())
        for event_object, existing in ours.items():
            _install_one(pipedrive, event_object, existing, target, replace, result)
    except ApiError as exc:
        raise InstallFailed(exc, result) from exc
    log.info(
        "pipedrive webhooks installed",
        extra={
            "subscription_url": url,
            "webhooks_created": len(result.created),
            "webhooks_kept": len(result.kept),
            "webhooks_replaced": len(result.replaced),
            "webhooks_removed": len(result.removed),
        },
    )
    return result


def _install_one(
    pipedrive: PipedriveClient,
    event_object: str,
    existing: list[Webhook],
    target: WebhookTarget,
    replace: bool,
    result: InstallResult,
) -> None:
    good = [
        w
        for w in existing
        if w.is_active and _difference(w, target.url, target.user) is None and not replace
    ]
    if good:
        result.kept.append(good[0])
        for duplicate in existing:
            if duplicate is not good[0]:
                _delete(pipedrive, duplicate)
                result.removed.append(duplicate)
        return
    if not existing:
        result.created.append(_create(pipedrive, event_object, target))
        return
    first = existing[0]
    reason = "replace requested" if replace else "inactive"
    reason = _difference(first, target.url, target.user) or reason
    for webhook in existing:
        _delete(pipedrive, webhook)
        # Recorded at once, so that a failed create still reports the deletion.
        result.removed.append(webhook)
    new = _create(pipedrive, event_object, target)
    result.removed.remove(first)
    result.replaced.append(Replacement(first, new, reason))


def webhook_status(
    pipedrive: PipedriveClient, url: str | None, user: str | None = None
) -> list[WebhookStatus]:
    """For each of our objects: our webhook (the matching one first), whether it matches
    ``url`` (and ``user`` when given), and how many more of ours there are for it."""
    statuses: list[WebhookStatus] = []
    for event_object, existing in _ours_by_object(pipedrive.list_webhooks()).items():
        if not existing:
            statuses.append(WebhookStatus(event_object, None, None if url is None else False))
            continue
        if url is None:
            best = next((w for w in existing if w.is_active), existing[0])
            statuses.append(WebhookStatus(event_object, best, None, len(existing) - 1))
            continue
        matching = [w for w in existing if _difference(w, url, user) is None]
        best = next((w for w in matching if w.is_active), (matching or existing)[0])
        difference = None if matching else _difference(best, url, user)
        statuses.append(
            WebhookStatus(event_object, best, bool(matching), len(existing) - 1, difference)
        )
    return statuses


def ensure_webhooks(pipedrive: PipedriveClient, target: WebhookTarget) -> list[Webhook]:
    """Register again each of our webhooks that is missing (Pipedrive deletes one after
    three days of failed deliveries) and return those created; one list call when none is.

    Extra copies of a matching webhook (two refreshes racing) are deleted. Ours that differ
    from the configuration or are inactive are only logged: ``pbsync webhooks install``
    replaces them.
    """
    created: list[Webhook] = []
    for event_object, existing in _ours_by_object(pipedrive.list_webhooks()).items():
        if not existing:
            webhook = _create(pipedrive, event_object, target)
            created.append(webhook)
            log.warning(
                "pipedrive webhook was missing (Pipedrive deletes one after three days of "
                "failed deliveries): registered again",
                extra={
                    "event_object": event_object,
                    "webhook_id": webhook.id,
                    "subscription_url": target.url,
                },
            )
            continue
        matching = [w for w in existing if _difference(w, target.url, target.user) is None]
        matching.sort(key=lambda w: (not w.is_active, w.id))  # keep an active one
        for duplicate in matching[1:]:
            _delete(pipedrive, duplicate)
            log.info(
                "duplicate pipedrive webhook deleted",
                extra={"event_object": event_object, "webhook_id": duplicate.id},
            )
        if not matching:
            log.warning(
                "pipedrive webhook differs from the configuration: run pbsync webhooks install",
                extra={
                    "event_object": event_object,
                    "webhook_id": existing[0].id,
                    "reason": _difference(existing[0], target.url, target.user),
                },
            )
        elif not matching[0].is_active:
            log.warning(
                "pipedrive webhook is inactive: check that Pipedrive can reach the service",
                extra={"event_object": event_object, "webhook_id": matching[0].id},
            )
    return created


def shown_url(url: str) -> str:
    """``url`` without any user or password part, for printing."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def install_lines(result: InstallResult) -> list[str]:
    """One line per webhook ``pbsync webhooks install`` created, kept, replaced or removed."""
    lines: list[str] = []
    for label, webhooks in (("created", result.created), ("kept", result.kept)):
        lines.extend(
            f"{label:<8} {w.event_object:<12} webhook {w.id} -> {shown_url(w.subscription_url)}"
            for w in webhooks
        )
    lines.extend(
        f"{'replaced':<8} {r.new.event_object:<12} webhook {r.new.id} -> "
        f"{shown_url(r.new.subscription_url)} (was webhook {r.old.id}, "
        f"{shown_url(r.old.subscription_url)}: {r.reason})"
        for r in result.replaced
    )
    lines.extend(
        f"{'removed':<8} {w.event_object:<12} webhook {w.id} -> {shown_url(w.subscription_url)}"
        for w in result.removed
    )
    order = {name: index for index, name in enumerate(EVENT_OBJECTS)}
    return sorted(lines, key=lambda line: order.get(line.split()[1], len(order)))


def status_lines(statuses: list[WebhookStatus], url: str | None) -> list[str]:
    """One line per object for ``pbsync webhooks status``: ``ok``, ``DIFFERS``,
    ``INACTIVE`` or ``MISSING`` with what to do."""
    lines: list[str] = []
    for status in statuses:
        webhook = status.webhook
        if webhook is None:
            lines.append(
                f"{'MISSING':<8} {status.event_object:<12} no webhook of ours: "
                "run pbsync webhooks install"
            )
            continue
        where = f"webhook {webhook.id} -> {shown_url(webhook.subscription_url)}"
        if status.matches is False:
            label = "DIFFERS"
            note = (
                f"{status.difference or 'differs'}; configured: {shown_url(url or '')}; "
                "run pbsync webhooks install"
            )
        elif not webhook.is_active:
            label = "INACTIVE"
            note = "Pipedrive stopped calling it; run pbsync webhooks install"
        else:
            label = "ok"
            note = "active" if status.matches else "active; no URL configured to compare"
        extra = f"; {status.duplicates} more of ours" if status.duplicates else ""
        lines.append(f"{label:<8} {status.event_object:<12} {where} ({note}{extra})")
    return lines
