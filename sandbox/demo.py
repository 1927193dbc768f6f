"""Set-up steps of ``scripts/run --sandbox``: wait for the fakes, then register the
service's webhooks in the fake Pipedrive as ``pbsync webhooks install`` does."""

from __future__ import annotations

import argparse
import sys
import time

import httpx

from service.clients.pipedrive import PipedriveClient
from service.clients.usage import MemoryUsage
from service.webhooks_install import InstallFailed, install_webhooks


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
        install_webhooks(client, args.webhook_url, args.webhook_user, args.webhook_password)
    except InstallFailed as exc:
        sys.exit(f"sandbox: could not register the webhooks: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
