"""The ``pbsync`` command: ``serve`` (web and worker together), ``web`` and ``worker``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from service.config import ConfigError, Role, Settings, load_settings
from service.logs import configure_logging
from service.schema import SchemaError, migrate

log = logging.getLogger("pbsync")


def _settings(role: Role) -> Settings:
    try:
        return load_settings(role)
    except ConfigError as exc:
        print(f"pbsync: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _start(role: Role) -> Settings:
    settings = _settings(role)
    configure_logging(settings.log_level, settings.secrets())
    try:
        migrate(settings.database_path)
    except SchemaError as exc:
        print(f"pbsync: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    return settings


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the web app with uvicorn until SIGINT or SIGTERM."""
    import uvicorn

    from service.app import create_app

    settings = _start("web")
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then restores the handlers it found and
    # raises the signal again; with these no-op handlers in place that second raise does not
    # kill the process, so a graceful stop exits 0 instead of dying of the signal.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=20,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the huey consumer and the periodic loop until SIGTERM."""
    from workers.worker import run_worker

    run_worker(_start("worker"))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the web and the worker as children; one Ctrl-C or SIGTERM stops both."""
    from service.supervisor import Supervisor

    settings = _start("serve")
    log.info("serving", extra={"url": f"http://{settings.host}:{settings.port}"})
    return Supervisor().run()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pbsync``."""
    parser = argparse.ArgumentParser(
        prog="pbsync", description="Keep Brevo contact lists equal to Pipedrive filters."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the web and the worker together").set_defaults(
        handler=cmd_serve
    )
    commands.add_parser("web", help="run the web process alone").set_defaults(handler=cmd_web)
    commands.add_parser("worker", help="run the worker process alone").set_defaults(
        handler=cmd_worker
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pbsync`` console script."""
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
