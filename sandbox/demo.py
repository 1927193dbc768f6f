"""Set-up steps of ``scripts/run --sandbox``: wait for the fakes, then register the
service's webhooks in the fake Pipedrive through the real client, as an admin would."""

from __future__ import annotations

import argparse
import sys
import time

import httpx

from service.clients.errors import ApiError
from service.clients.pipedrive import PipedriveClient
from service.clients.usage import MemoryUsage

WEBHOOK_NAME = "pipedrive-brevo-sync"
OBJECTS = ("person", "deal", "organization")


def wait_until_up(urls: list[str], timeout: float = 30.0) -> None:
    """Return once every control API answers; exit with a message after ``timeout``."""
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                if httpx.get(url + "/_sandbox/faults", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"sandbox: nothing answers on {url}")
            time.sleep(0.1)


def register_webhooks(client: PipedriveClient, url: str, user: str, password: str) -> int:
    """Register ours for persons, deals and organizations unless already there; return how
    many were created."""
    existing = {
        (w.event_object, w.subscription_url)
        for w in client.list_webhooks()
        if w.name == WEBHOOK_NAME
    }
    created = 0
    for event_object in OBJECTS:
        if (event_object, url) not in existing:
            client.create_webhook(url, "*", event_object, WEBHOOK_NAME, user, password)
            created += 1
    return created


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.demo --pipedrive URL --brevo URL --webhook-url URL``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo")
    parser.add_argument("--pipedrive", required=True)
    parser.add_argument("--brevo", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--webhook-url", required=True)
    parser.add_argument("--webhook-user", required=True)
    parser.add_argument("--webhook-password", required=True)
    args = parser.parse_args(argv)
    # The control API sits beside Brevo's /v3, not under it.
    wait_until_up([args.pipedrive, args.brevo.rstrip("/").removesuffix("/v3")])
    client = PipedriveClient(args.pipedrive, args.token, usage=MemoryUsage())
    try:
        register_webhooks(client, args.webhook_url, args.webhook_user, args.webhook_password)
    except ApiError as exc:
        sys.exit(f"sandbox: could not register the webhooks: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
