"""The ``pbsync`` command: ``serve`` (web and worker together), ``web``, ``worker``,
``check`` (are the credentials and the Brevo account ready?), and ``webhooks install`` /
``webhooks status`` (the service's webhooks in Pipedrive)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service.config import ConfigError, Role, Settings, load_settings
from service.logs import configure_logging
from service.schema import SchemaError, migrate
from service.shutdown import ShutdownRequests

if TYPE_CHECKING:
    from service.clients.pipedrive import PipedriveClient

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
    from service.http_deadlines import head_deadline_protocol

    settings = _start("web")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # uvicorn's h11 protocol, with a deadline for each request head (slow clients).
        http=head_deadline_protocol(settings.request_header_timeout_seconds),
        # No WebSocket route: an upgrade request is served as plain HTTP.
        ws="none",
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

    settings = _settings("tool")
    failed = _prepare_tool(settings)
    if failed is not None:
        return failed
    return print_lines(run_check(settings), lambda line: print(line, flush=True))


def _prepare_tool(settings: Settings) -> int | None:
    """Configure logging and bind the database for a tool command; its exit status (1)
    when the database cannot be used, else None."""
    from service.db import bind_database

    configure_logging(settings.log_level, settings.secrets())
    try:
        # The clients count their calls and pace themselves in the database.
        bind_database(settings.database_path)
    except SchemaError as exc:
        print(f"pbsync: {exc}", file=sys.stderr)
        return 1
    return None


def _webhook_client(settings: Settings) -> PipedriveClient | int:
    """The Pipedrive client of a ``webhooks`` command, or its exit status when it cannot
    have one (2: no token, 1: the database cannot be used)."""
    from service.clients.factory import pipedrive_client

    if not settings.pipedrive_api_token:
        print("pbsync: PIPEDRIVE_API_TOKEN is not set", file=sys.stderr)
        return 2
    failed = _prepare_tool(settings)
    return failed if failed is not None else pipedrive_client(settings)


def _webhook_url(args: argparse.Namespace, settings: Settings) -> str | None:
    from service.webhooks_install import webhook_url

    url: str | None = args.url
    if url is None and settings.public_url:
        url = webhook_url(settings.public_url)
    return url


def cmd_webhooks_install(args: argparse.Namespace) -> int:
    """Register the service's webhooks in Pipedrive, idempotently; one line per webhook.

    Exits 0 on success, 1 when Pipedrive fails, 2 when the settings are incomplete.
    """
    from urllib.parse import urlsplit

    from service.webhooks_install import InstallFailed, install_lines, install_webhooks

    settings = _settings("tool")
    url = _webhook_url(args, settings)
    problems: list[str] = []
    if url is None:
        problems.append(
            "no webhook URL: set PUBLIC_URL to the https address Pipedrive reaches (webhooks "
            "go to PUBLIC_URL/webhooks/pipedrive) or pass --url"
        )
    elif urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        problems.append("--url must be an absolute http(s) URL")
    unset = [
        name
        for name, value in (
            ("WEBHOOK_USER", settings.webhook_user),
            ("WEBHOOK_PASSWORD", settings.webhook_password),
        )
        if not value
    ]
    if unset:
        verb = "is" if len(unset) == 1 else "are"
        problems.append(
            f"{' and '.join(unset)} {verb} not set: Pipedrive must send the HTTP Basic "
            "credentials the service checks"
        )
    if problems:
        print(f"pbsync: {'; '.join(problems)}", file=sys.stderr)
        return 2
    assert url is not None and settings.webhook_user and settings.webhook_password
    client = _webhook_client(settings)
    if isinstance(client, int):
        return client
    try:
        result = install_webhooks(
            client, url, settings.webhook_user, settings.webhook_password, replace=args.replace
        )
    except InstallFailed as exc:
        for line in install_lines(exc.done):
            print(line, flush=True)
        print(
            f"pbsync: {exc}; the lines above are what was done before: run pbsync webhooks "
            "install again to finish",
            file=sys.stderr,
        )
        return 1
    except (ValueError, KeyError, TypeError):
        print("pbsync: PIPEDRIVE_BASE_URL does not answer like the Pipedrive API", file=sys.stderr)
        return 1
    for line in install_lines(result):
        print(line, flush=True)
    if urlsplit(url).scheme != "https":
        print("note: the URL is not https: Pipedrive would send the webhook password in clear")
    return 0


def cmd_webhooks_status(args: argparse.Namespace) -> int:
    """Say for each object whether our webhook is registered, active and pointed at the
    configured URL. Exits 0 once Pipedrive answered, 1 when it failed."""
    from service.clients.errors import ApiError
    from service.webhooks_install import status_lines, webhook_status

    settings = _settings("tool")
    url = _webhook_url(args, settings)
    client = _webhook_client(settings)
    if isinstance(client, int):
        return client
    try:
        statuses = webhook_status(client, url, settings.webhook_user)
    except ApiError as exc:
        print(f"pbsync: {exc}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, TypeError):
        print("pbsync: PIPEDRIVE_BASE_URL does not answer like the Pipedrive API", file=sys.stderr)
        return 1
    for line in status_lines(statuses, url):
        print(line, flush=True)
    if url is None:
        print("note: PUBLIC_URL is not set: no configured URL to compare with (or pass --url)")
    return 0


def _add_webhooks_parser(commands: Any) -> None:
    webhooks = commands.add_parser(
        "webhooks", help="register the service's webhooks in Pipedrive, or show how they stand"
    )
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True)
    install = actions.add_parser(
        "install", help="create or fix our webhooks (person, deal, organization); idempotent"
    )
    install.add_argument(
        "--url", help="where Pipedrive sends them (default: PUBLIC_URL/webhooks/pipedrive)"
    )
    install.add_argument(
        "--replace",
        action="store_true",
        help="replace ours even when they match (after changing WEBHOOK_PASSWORD)",
    )
    install.set_defaults(handler=cmd_webhooks_install)
    status = actions.add_parser("status", help="show our webhooks in Pipedrive")
    status.add_argument(
        "--url", help="the URL to compare with (default: PUBLIC_URL/webhooks/pipedrive)"
    )
    status.set_defaults(handler=cmd_webhooks_status)


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
    _add_webhooks_parser(commands)
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
