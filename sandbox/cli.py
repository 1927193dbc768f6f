"""``pbsync sandbox pipedrive|brevo|both``: run the fakes on loopback ports."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from starlette.applications import Starlette

from sandbox.server import ThreadedServer


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sandbox`` command and its options to ``pbsync``'s parser."""
    parser = commands.add_parser("sandbox", help="run the fake Pipedrive and Brevo APIs")
    parser.add_argument("api", nargs="?", default="both", choices=("pipedrive", "brevo", "both"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="the port (pipedrive's for both)")
    parser.add_argument("--brevo-port", type=int, default=0, help="brevo's port, with both")
    parser.add_argument(
        "--token", default=None, help="accept only this token (pipedrive's for both)"
    )
    parser.add_argument("--brevo-token", default=None, help="accept only this key, with both")
    parser.add_argument("--seed", type=int, default=1, help="seed of the demo data")
    parser.add_argument(
        "--retry-scale",
        type=float,
        default=1.0,
        help="multiplies Pipedrive's webhook retry delays (3, 30, 150 s)",
    )
    parser.set_defaults(handler=run)


def _pipedrive(args: argparse.Namespace) -> Starlette:
    from sandbox.pipedrive import PipedriveFakeConfig, create_app

    return create_app(
        PipedriveFakeConfig(token=args.token, seed=args.seed, retry_scale=args.retry_scale)
    )


def _brevo(args: argparse.Namespace) -> Starlette:
    from sandbox.brevo import BrevoFakeConfig, create_app

    token = args.brevo_token if args.api == "both" else args.token
    return create_app(BrevoFakeConfig(token=token, seed=args.seed))


def run(args: argparse.Namespace) -> int:
    """Serve the chosen fake(s) until SIGINT or SIGTERM; print where they listen as JSON."""
    servers: dict[str, ThreadedServer] = {}
    if args.api in ("pipedrive", "both"):
        servers["pipedrive"] = ThreadedServer(_pipedrive(args), args.host, args.port)
    if args.api in ("brevo", "both"):
        port = args.brevo_port if args.api == "both" else args.port
        servers["brevo"] = ThreadedServer(_brevo(args), args.host, port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    for server in servers.values():
        server.start()
    urls = {name: server.url for name, server in servers.items()}
    if "brevo" in urls:
        urls["brevo"] += "/v3"
    print(json.dumps({"message": "sandbox listening", **urls}), file=sys.stdout, flush=True)
    stop.wait()
    for server in servers.values():
        server.stop()
    return 0
