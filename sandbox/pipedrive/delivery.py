"""Webhook deliveries: each change is POSTed as JSON to every matching webhook, with
Pipedrive's retry schedule and ban, as asyncio tasks on the server's loop.

A delivery succeeds on any 2xx within ``delivery_timeout``; otherwise it is retried after
3, 30 and 150 s (times ``retry_scale``), four attempts in all. Ten failed first attempts
ban the webhook for 30 minutes (times ``retry_scale``); events that arrive meanwhile,
and retries still pending, are lost, as Pipedrive documents.

Delivery faults, off by default and drawn from ``delivery_seed`` in the order the events
happen: a delivery may be dropped (never sent), delayed by a random time before it is
sent (which reorders deliveries), or, once answered with a 2xx, sent once more with the
same ``meta.id`` and the next attempt number, as Pipedrive resends a delivery whose answer
it did not see.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from sandbox.pipedrive.events import ChangeEvent, v1_body, v2_body, webhook_matches
from sandbox.pipedrive.model import Webhook, iso_millis
from sandbox.pipedrive.state import PipedriveState
from sandbox.pipedrive.webhooks import is_banned

log = logging.getLogger(__name__)

RETRY_DELAYS = (3.0, 30.0, 150.0)
BAN_AFTER = 10
BAN_SECONDS = 1800.0
DROPPED = "dropped by the sandbox (delivery_drop_ratio)"


@dataclass(frozen=True)
class DeliveryFaults:
    """What the delivery faults do to one delivery."""

    drop: bool = False
    delay: float = 0.0
    """Seconds to wait before the first attempt."""
    duplicate_after: float | None = None
    """Seconds after the 2xx to send the delivery again; None: sent once."""


def draw_faults(state: PipedriveState) -> DeliveryFaults:
    """The faults of the next delivery, drawn from the state's seeded generator; no draw
    at all while every delivery fault is off. Call with the state's lock held."""
    config = state.config
    if not (
        config.delivery_drop_ratio
        or config.delivery_duplicate_ratio
        or config.delivery_delay_max_ms
    ):
        return DeliveryFaults()
    draw = state.delivery_random
    # Every draw is made whatever the earlier ones gave, so one setting's change does not
    # shift another's sequence.
    drop = draw.random() < config.delivery_drop_ratio
    delay = draw.uniform(0, config.delivery_delay_max_ms) / 1000
    duplicate = draw.random() < config.delivery_duplicate_ratio
    duplicate_delay = draw.uniform(0, config.delivery_delay_max_ms) / 1000
    return DeliveryFaults(drop, delay, duplicate_delay if duplicate else None)


class Dispatcher:
    """Sends the state's change events to its webhooks; started and stopped by the app's
    lifespan. Events published from another thread are handed to the loop safely."""

    def __init__(self, state: PipedriveState) -> None:
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Batches handed to the loop from another thread and not scheduled yet.
        self._handed = 0
        self._handed_lock = threading.Lock()
        state.listeners.append(self.publish)
        state.reset_hooks.append(self.cancel_all)

    async def start(self) -> None:
        """Begin accepting events on the running loop."""
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Cancel pending deliveries and close the HTTP client."""
        self._loop = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def cancel_all(self) -> None:
        """Drop every pending delivery (a sandbox reset)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in list(self._tasks)])

    def publish(self, events: list[ChangeEvent]) -> None:
        """Schedule the deliveries ``events`` call for; callable from any thread."""
        loop = self._loop
        if loop is None:
            log.warning("sandbox pipedrive: %d event(s) not delivered, not serving", len(events))
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._schedule(events)
        else:
            with self._handed_lock:
                self._handed += 1
            try:
                loop.call_soon_threadsafe(self._schedule_handed, events)
            except RuntimeError:
                with self._handed_lock:
                    self._handed -= 1

    def pending(self) -> int:
        """Deliveries not finished yet (waiting, being sent, or between retries), counting a
        batch of events still on its way to the loop as one; callable from any thread."""
        with self._handed_lock:
            return self._handed + len(self._tasks)

    def _schedule_handed(self, events: list[ChangeEvent]) -> None:
        try:
            self._schedule(events)
        finally:
            with self._handed_lock:
                self._handed -= 1

    def _schedule(self, events: list[ChangeEvent]) -> None:
        with self.state.lock:
            targets = [
                (webhook, event, draw_faults(self.state))
                for event in events
                for webhook in self.state.webhooks.values()
                if webhook_matches(webhook, event)
            ]
        for webhook, event, faults in targets:
            task = asyncio.get_running_loop().create_task(self._deliver(webhook, event, faults))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _log(
        self,
        webhook: Webhook,
        event: ChangeEvent,
        event_id: str,
        attempt: int,
        status: int | None,
        error: str | None,
    ) -> None:
        self.state.record_delivery(
            {
                "webhook_id": webhook.id,
                "event_id": event_id,
                "event": f"{event.action}.{event.entity}",
                "entity_id": event.entity_id,
                "attempt": attempt,
                "status": status,
                "error": error,
                "at": iso_millis(datetime.now(UTC)),
            }
        )

    def _body(self, webhook: Webhook, event: ChangeEvent, event_id: str, attempt: int) -> bytes:
        body: dict[str, Any] = (
            v2_body(event, webhook, event_id, attempt)
            if webhook.version == "2.0"
            else v1_body(event, webhook, attempt)
        )
        return json.dumps(body, ensure_ascii=False).encode()

    async def _deliver(self, webhook: Webhook, event: ChangeEvent, faults: DeliveryFaults) -> None:
        event_id = str(uuid.uuid4())
        if faults.drop:
            self._log(webhook, event, event_id, 1, None, DROPPED)
            return
        if faults.delay:
            await asyncio.sleep(faults.delay)
        for attempt in range(1, len(RETRY_DELAYS) + 2):
            if attempt > 1:
                await asyncio.sleep(RETRY_DELAYS[attempt - 2] * self.state.config.retry_scale)
            with self.state.lock:
                gone = self.state.webhooks.get(webhook.id) is not webhook
                banned = not gone and is_banned(webhook)
            if gone or banned:
                reason = "webhook deleted" if gone else "webhook banned; event lost"
                self._log(webhook, event, event_id, attempt, None, reason)
                return
            status, error = await self._post(webhook, self._body(webhook, event, event_id, attempt))
            self._log(webhook, event, event_id, attempt, status, error)
            with self.state.lock:
                webhook.last_delivery_time = datetime.now(UTC)
                webhook.last_http_status = status
                succeeded = status is not None and 200 <= status < 300
                if not succeeded and attempt == 1:
                    webhook.first_attempt_failures += 1
                    if webhook.first_attempt_failures >= BAN_AFTER:
                        webhook.banned_until = (
                            time.monotonic() + BAN_SECONDS * self.state.config.retry_scale
                        )
            if succeeded:
                if faults.duplicate_after is not None and attempt <= len(RETRY_DELAYS):
                    await self._send_again(webhook, event, event_id, attempt + 1, faults)
                return

    async def _send_again(
        self,
        webhook: Webhook,
        event: ChangeEvent,
        event_id: str,
        attempt: int,
        faults: DeliveryFaults,
    ) -> None:
        """The duplicate of an acknowledged delivery: one more send, logged like any."""
        await asyncio.sleep(faults.duplicate_after or 0.0)
        with self.state.lock:
            if self.state.webhooks.get(webhook.id) is not webhook:
                return
        status, error = await self._post(webhook, self._body(webhook, event, event_id, attempt))
        self._log(webhook, event, event_id, attempt, status, error)

    async def _post(self, webhook: Webhook, body: bytes) -> tuple[int | None, str | None]:
        if self._loop is None:
            return None, "sandbox not serving"
        if self._client is None:
            # Made on first use: building its TLS context costs tens of milliseconds.
            self._client = httpx.AsyncClient(headers={"user-agent": "Pipedrive-Webhook"})
        client = self._client
        headers = {"content-type": "application/json"}
        if webhook.http_auth_user is not None:
            pair = f"{webhook.http_auth_user}:{webhook.http_auth_password or ''}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            response = await client.post(
                webhook.subscription_url,
                content=body,
                headers=headers,
                timeout=self.state.config.delivery_timeout,
                follow_redirects=False,
            )
        except httpx.TimeoutException:
            return None, "timeout"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None


def dispatcher_of(state: PipedriveState) -> Dispatcher | None:
    """The dispatcher sending ``state``'s deliveries (it listens to the state's changes),
    for a test that waits until none is pending."""
    for listener in state.listeners:
        owner = getattr(listener, "__self__", None)
        if isinstance(owner, Dispatcher):
            return owner
    return None
