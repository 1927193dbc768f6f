"""Configuration: the one module that reads the environment (and the ``.env`` file).

Names and defaults are those of DESIGN section 6. ``load_settings`` checks everything at
once and raises ``ConfigError`` whose message is one line naming every problem, so a
process can exit at start with that line.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Role = Literal["web", "worker", "serve", "tool"]

MIN_ADMIN_PASSWORD_LENGTH = 12
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Bounds of the slow-client deadlines (REQUEST_HEADER/BODY_TIMEOUT_SECONDS), in seconds.
MIN_REQUEST_TIMEOUT = 0.1
MAX_REQUEST_TIMEOUT = 3600.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """The configuration is incomplete or invalid; ``str()`` is one line naming every problem."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, parsed and checked."""

    admin_password: str | None = field(default=None, repr=False)
    admin_password_hash: str | None = field(default=None, repr=False)
    pipedrive_api_token: str | None = field(default=None, repr=False)
    pipedrive_base_url: str = "https://api.pipedrive.com"
    brevo_api_key: str | None = field(default=None, repr=False)
    brevo_base_url: str = "https://api.brevo.com/v3"
    brevo_folder_id: int | None = None
    webhook_user: str | None = None
    webhook_password: str | None = field(default=None, repr=False)
    database_url: str = "sqlite:///data/app.db"
    queue_url: str = "sqlite:///data/queue.db"
    host: str = "127.0.0.1"
    port: int = 8000
    sync_coalesce_seconds: float = 2.0
    filter_refresh_seconds: int = 300
    full_resync_seconds: int = 86400
    removal_brake_ratio: float = 0.3
    removal_brake_min: int = 50
    job_stale_seconds: int = 30
    session_cleanup_seconds: int = 300
    public_url: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    request_header_timeout_seconds: float = 10.0
    request_body_timeout_seconds: float = 30.0
    api_read_timeout_seconds: float = 30.0
    log_level: str = "INFO"

    @property
    def database_path(self) -> Path:
        """The absolute path of the SQLite database file."""
        return sqlite_path(self.database_url)

    def secrets(self) -> list[str]:
        """Every configured secret value, for the log redaction step."""
        values = [
            self.admin_password,
            self.admin_password_hash,
            self.pipedrive_api_token,
            self.brevo_api_key,
            self.webhook_password,
        ]
        return [v for v in values if v]


def sqlite_path(url: str) -> Path:
    """Turn ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` into an absolute path.

    Relative paths are resolved against the working directory here, once, because Pony
    resolves them against the module that calls ``bind()``.
    """
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not an sqlite:/// URL: {url}")
    return Path(url[len("sqlite:///") :]).expanduser().resolve()


def read_env_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines from a ``.env`` file; a missing file is an empty mapping."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


class _Reader:
    """Collects values and every problem found, so all are reported together."""

    def __init__(self, source: Mapping[str, str]) -> None:
        self.source = source
        self.missing: list[str] = []
        self.invalid: list[str] = []

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.source.get(name, "").strip()
        return value if value else default

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.invalid.append(f"{name} must be an integer")
            return default
        if value < minimum:
            self.invalid.append(f"{name} must be at least {minimum}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.invalid.append(f"{name} must be a number")
            return default
        if not low <= value <= high:
            self.invalid.append(f"{name} must be between {low:g} and {high:g}")
            return default
        return value

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        assert value is not None
        if urlsplit(value).scheme not in schemes:
            self.invalid.append(f"{name} must start with one of {', '.join(schemes)}")
        return value


def load_settings(
    role: Role,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
) -> Settings:
    """Read and check the settings a process of ``role`` needs.

    Variables set in ``environ`` (default: the process environment) win over ``env_file``.
    """
    source: dict[str, str] = read_env_file(env_file) if env_file is not None else {}
    source.update(os.environ if environ is None else environ)
    r = _Reader(source)

    admin_password = r.text("ADMIN_PASSWORD")
    admin_password_hash = r.text("ADMIN_PASSWORD_HASH")
    if role in ("web", "serve") and not admin_password and not admin_password_hash:
        r.missing.append("ADMIN_PASSWORD (or ADMIN_PASSWORD_HASH)")
    if admin_password and len(admin_password) < MIN_ADMIN_PASSWORD_LENGTH:
        r.invalid.append(f"ADMIN_PASSWORD must be at least {MIN_ADMIN_PASSWORD_LENGTH} characters")
    if admin_password and admin_password_hash:
        r.invalid.append("set ADMIN_PASSWORD or ADMIN_PASSWORD_HASH, not both")
    if admin_password_hash and not admin_password_hash.startswith("$argon2id$"):
        r.invalid.append("ADMIN_PASSWORD_HASH must be an argon2id hash ($argon2id$...)")

    folder = r.text("BREVO_FOLDER_ID")
    brevo_folder_id: int | None = None
    if folder is not None:
        brevo_folder_id = r.integer("BREVO_FOLDER_ID", 0, minimum=1) or None

    database_url = r.url("DATABASE_URL", "sqlite:///data/app.db", ("sqlite",))
    if database_url.startswith("sqlite:") and not database_url.startswith("sqlite:///"):
        r.invalid.append("DATABASE_URL must look like sqlite:///path/to/app.db")
    queue_url = r.url("QUEUE_URL", "sqlite:///data/queue.db", ("sqlite", "redis", "rediss"))
    if queue_url.startswith("sqlite:") and not queue_url.startswith("sqlite:///"):
        r.invalid.append("QUEUE_URL must look like sqlite:///path/to/queue.db or redis://host")

    public_url = r.text("PUBLIC_URL")
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            r.invalid.append("PUBLIC_URL must be an absolute http(s) URL")
        public_url = public_url.rstrip("/")

    proxies: list[IPNetwork] = []
    for item in (r.text("TRUSTED_PROXIES") or "").split(","):
        if item.strip():
            try:
                proxies.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                r.invalid.append(f"TRUSTED_PROXIES entry {item.strip()!r} is not an address")

    log_level = (r.text("LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        r.invalid.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        log_level = "INFO"

    settings = Settings(
        admin_password=admin_password,
        admin_password_hash=admin_password_hash,
        pipedrive_api_token=r.text("PIPEDRIVE_API_TOKEN"),
        pipedrive_base_url=r.url(
            "PIPEDRIVE_BASE_URL", "https://api.pipedrive.com", ("http", "https")
        ).rstrip("/"),
        brevo_api_key=r.text("BREVO_API_KEY"),
        brevo_base_url=r.url(
            "BREVO_BASE_URL", "https://api.brevo.com/v3", ("http", "https")
        ).rstrip("/"),
        brevo_folder_id=brevo_folder_id,
        webhook_user=r.text("WEBHOOK_USER"),
        webhook_password=r.text("WEBHOOK_PASSWORD"),
        database_url=database_url,
        queue_url=queue_url,
        host=r.text("HOST", "127.0.0.1") or "127.0.0.1",
        port=r.integer("PORT", 8000, minimum=0),
        sync_coalesce_seconds=r.number("SYNC_COALESCE_SECONDS", 2.0, 0.0, 3600.0),
        filter_refresh_seconds=r.integer("FILTER_REFRESH_SECONDS", 300, minimum=1),
        full_resync_seconds=r.integer("FULL_RESYNC_SECONDS", 86400, minimum=1),
        removal_brake_ratio=r.number("REMOVAL_BRAKE_RATIO", 0.3, 0.0, 1.0),
        removal_brake_min=r.integer("REMOVAL_BRAKE_MIN", 50, minimum=0),
        job_stale_seconds=r.integer("JOB_STALE_SECONDS", 30, minimum=1),
        session_cleanup_seconds=r.integer("SESSION_CLEANUP_SECONDS", 300, minimum=1),
        public_url=public_url,
        trusted_proxies=tuple(proxies),
        request_header_timeout_seconds=r.number(
            "REQUEST_HEADER_TIMEOUT_SECONDS", 10.0, MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT
        ),
        request_body_timeout_seconds=r.number(
            "REQUEST_BODY_TIMEOUT_SECONDS", 30.0, MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT
        ),
        api_read_timeout_seconds=r.number("API_READ_TIMEOUT_SECONDS", 30.0, 0.1, 600.0),
        log_level=log_level,
    )
    if settings.port > 65535:
        r.invalid.append("PORT must be at most 65535")

    problems = []
    if r.missing:
        problems.append("missing required settings: " + ", ".join(r.missing))
    problems.extend(r.invalid)
    if problems:
        raise ConfigError("; ".join(problems))
    return settings
