"""The ``pbsync`` command: ``serve`` (web and worker together), ``web``, ``worker``, and
``check`` (are the credentials and the Brevo account ready?)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from service.config import ConfigError, Role, Settings, load_settings
from service.logs import configure_logging
from service.schema import SchemaError, migrate
from service.shutdown import ShutdownRequests

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
    shutdown = ShutdownRequests().install()
    import uvicorn

    from service.app import create_app

    settings = _start("web")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=20,
    )
    server = uvicorn.Server(config)
    # A signal before uvicorn's own handlers are in place makes it exit right after start-up.
    # After a graceful stop uvicorn re-raises the signal it caught; it reaches this handler
    # again instead of killing the process, so a graceful stop exits 0.
    shutdown.on_request(lambda: setattr(server, "should_exit", True))
    server.run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the huey consumer and the periodic loop until SIGTERM."""
    shutdown = ShutdownRequests().install()
    from workers.worker import run_worker

    run_worker(_start("worker"), shutdown=shutdown)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the web and the worker as children; one Ctrl-C or SIGTERM stops both."""
    from service.supervisor import Supervisor

    settings = _start("serve")
    log.info("serving", extra={"url": f"http://{settings.host}:{settings.port}"})
    return Supervisor().run()


def cmd_check(args: argparse.Namespace) -> int:
    """Check the credentials and the Brevo account; one line per check on stdout.

    Exits 0 when every check passed, 1 otherwise (2 when the settings are invalid).
    """
    from service.check import print_lines, run_check
    from service.db import bind_database

    settings = _settings("tool")
    configure_logging(settings.log_level, settings.secrets())
    try:
        # The clients count their calls and pace themselves in the database.
        bind_database(settings.database_path)
    except SchemaError as exc:
        print(f"pbsync: {exc}", file=sys.stderr)
        return 1
    return print_lines(run_check(settings), lambda line: print(line, flush=True))


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
    commands.add_parser(
        "check", help="check the API credentials, the Brevo folder and attributes"
    ).set_defaults(handler=cmd_check)
    from sandbox.cli import add_parser as add_sandbox_parser

    add_sandbox_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pbsync`` console script."""
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
