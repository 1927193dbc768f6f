"""Configuration: names and defaults of DESIGN section 6, one-line errors, .env precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Role, load_settings, read_env_file

GOOD = {"ADMIN_PASSWORD": "correct-horse-battery"}


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every default of the table, with only the admin password set."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings("web", GOOD, env_file=None)
    assert settings.pipedrive_base_url == "https://api.pipedrive.com"
    assert settings.brevo_base_url == "https://api.brevo.com/v3"
    assert settings.brevo_folder_id is None
    assert settings.database_url == "sqlite:///data/app.db"
    assert settings.database_path == tmp_path / "data" / "app.db"
    assert settings.queue_url == "sqlite:///data/queue.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.sync_coalesce_seconds == 2
    assert settings.filter_refresh_seconds == 300
    assert settings.full_resync_seconds == 86400
    assert (settings.removal_brake_ratio, settings.removal_brake_min) == (0.3, 50)
    assert settings.job_stale_seconds == 30
    assert settings.public_url is None and settings.trusted_proxies == ()
    assert settings.request_header_timeout_seconds == 10
    assert settings.request_body_timeout_seconds == 30
    assert settings.api_read_timeout_seconds == 30
    assert settings.log_level == "INFO"


def test_every_name_is_read() -> None:
    """Each variable of DESIGN section 6 reaches its setting."""
    env = {
        "ADMIN_PASSWORD": "correct-horse-battery",
        "PIPEDRIVE_API_TOKEN": "pd-token",
        "PIPEDRIVE_BASE_URL": "http://127.0.0.1:9001/",
        "BREVO_API_KEY": "brevo-key",
        "BREVO_BASE_URL": "http://127.0.0.1:9002/v3",
        "BREVO_FOLDER_ID": "12",
        "WEBHOOK_USER": "pd",
        "WEBHOOK_PASSWORD": "hook-password",
        "DATABASE_URL": "sqlite:////srv/app.db",
        "QUEUE_URL": "redis://localhost:6379/0",
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "SYNC_COALESCE_SECONDS": "0.5",
        "FILTER_REFRESH_SECONDS": "60",
        "FULL_RESYNC_SECONDS": "3600",
        "REMOVAL_BRAKE_RATIO": "0.5",
        "REMOVAL_BRAKE_MIN": "10",
        "JOB_STALE_SECONDS": "45",
        "PUBLIC_URL": "https://sync.example.com/",
        "TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16",
        "REQUEST_HEADER_TIMEOUT_SECONDS": "2.5",
        "REQUEST_BODY_TIMEOUT_SECONDS": "120",
        "API_READ_TIMEOUT_SECONDS": "1.5",
        "LOG_LEVEL": "debug",
    }
    s = load_settings("serve", env, env_file=None)
    assert (s.pipedrive_api_token, s.brevo_api_key, s.webhook_password) == (
        "pd-token",
        "brevo-key",
        "hook-password",
    )
    assert s.pipedrive_base_url == "http://127.0.0.1:9001"
    assert s.brevo_base_url == "http://127.0.0.1:9002/v3" and s.brevo_folder_id == 12
    assert s.webhook_user == "pd" and s.database_path == Path("/srv/app.db")
    assert s.queue_url == "redis://localhost:6379/0"
    assert (s.host, s.port, s.sync_coalesce_seconds) == ("0.0.0.0", 9000, 0.5)
    assert (s.filter_refresh_seconds, s.full_resync_seconds) == (60, 3600)
    assert (s.removal_brake_ratio, s.removal_brake_min, s.job_stale_seconds) == (0.5, 10, 45)
    assert s.public_url == "https://sync.example.com"
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.1/32", "192.168.0.0/16"]
    assert (s.request_header_timeout_seconds, s.request_body_timeout_seconds) == (2.5, 120)
    assert s.api_read_timeout_seconds == 1.5
    assert s.log_level == "DEBUG"
    assert sorted(s.secrets()) == sorted(
        ["correct-horse-battery", "pd-token", "brevo-key", "hook-password"]
    )


def test_missing_password_is_named_in_one_line() -> None:
    role: Role
    """The web and serve need the admin password; the message names it."""
    for role in ("web", "serve"):
        with pytest.raises(ConfigError) as caught:
            load_settings(role, {}, env_file=None)
        message = str(caught.value)
        assert "\n" not in message
        assert message == "missing required settings: ADMIN_PASSWORD (or ADMIN_PASSWORD_HASH)"


def test_the_worker_does_not_need_the_admin_password() -> None:
    """It never checks a login."""
    assert load_settings("worker", {}, env_file=None).admin_password is None


def test_every_problem_is_reported_at_once() -> None:
    """One line, all problems, so a user fixes them in one go."""
    env = {"ADMIN_PASSWORD": "short", "PORT": "http", "LOG_LEVEL": "loud", "TRUSTED_PROXIES": "x"}
    with pytest.raises(ConfigError) as caught:
        load_settings("web", env, env_file=None)
    message = str(caught.value)
    assert "\n" not in message
    for expected in ("at least 12 characters", "PORT", "LOG_LEVEL", "TRUSTED_PROXIES"):
        assert expected in message
    assert "short" not in message.replace("ADMIN_PASSWORD", "")  # the value is never echoed


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"ADMIN_PASSWORD": "eleven-char"}, "at least 12 characters"),
        ({"ADMIN_PASSWORD_HASH": "$2b$12$bcrypt"}, "argon2id"),
        (
            {"ADMIN_PASSWORD": "correct-horse-battery", "ADMIN_PASSWORD_HASH": "$argon2id$x"},
            "not both",
        ),
        ({**GOOD, "DATABASE_URL": "postgres://db/app"}, "DATABASE_URL"),
        ({**GOOD, "DATABASE_URL": "sqlite://relative"}, "DATABASE_URL"),
        ({**GOOD, "QUEUE_URL": "amqp://x"}, "QUEUE_URL"),
        ({**GOOD, "PUBLIC_URL": "sync.example.com"}, "PUBLIC_URL"),
        ({**GOOD, "REMOVAL_BRAKE_RATIO": "1.5"}, "REMOVAL_BRAKE_RATIO"),
        ({**GOOD, "PORT": "70000"}, "PORT"),
        ({**GOOD, "JOB_STALE_SECONDS": "0"}, "JOB_STALE_SECONDS"),
        ({**GOOD, "BREVO_FOLDER_ID": "abc"}, "BREVO_FOLDER_ID"),
        (
            {**GOOD, "REQUEST_HEADER_TIMEOUT_SECONDS": "ten"},
            "REQUEST_HEADER_TIMEOUT_SECONDS must be a number",
        ),
        (
            {**GOOD, "REQUEST_HEADER_TIMEOUT_SECONDS": "0"},
            "REQUEST_HEADER_TIMEOUT_SECONDS must be between 0.1 and 3600",
        ),
        (
            {**GOOD, "REQUEST_BODY_TIMEOUT_SECONDS": "-5"},
            "REQUEST_BODY_TIMEOUT_SECONDS must be between 0.1 and 3600",
        ),
        (
            {**GOOD, "REQUEST_BODY_TIMEOUT_SECONDS": "nan"},
            "REQUEST_BODY_TIMEOUT_SECONDS must be between 0.1 and 3600",
        ),
        (
            {**GOOD, "REQUEST_BODY_TIMEOUT_SECONDS": "86400"},
            "REQUEST_BODY_TIMEOUT_SECONDS must be between 0.1 and 3600",
        ),
        (
            {**GOOD, "API_READ_TIMEOUT_SECONDS": "0"},
            "API_READ_TIMEOUT_SECONDS must be between 0.1 and 600",
        ),
    ],
)
def test_invalid_values_are_refused(env: dict[str, str], fragment: str) -> None:
    """Each bad value gets a message naming the variable."""
    with pytest.raises(ConfigError, match=fragment):
        load_settings("web", env, env_file=None)


def test_a_12_character_password_is_accepted() -> None:
    """The boundary."""
    assert load_settings("web", {"ADMIN_PASSWORD": "x" * 12}, env_file=None).admin_password


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    """A .env fills in; the same name in the environment takes precedence."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n"
        "export ADMIN_PASSWORD='from-the-dot-env-file'\n"
        'PORT="9100"\n'
        "LOG_LEVEL=WARNING\n"
        "not a line\n"
    )
    settings = load_settings("web", {"PORT": "9200"}, env_file=env_file)
    assert settings.admin_password == "from-the-dot-env-file"
    assert settings.port == 9200 and settings.log_level == "WARNING"


def test_a_missing_env_file_is_fine(tmp_path: Path) -> None:
    """Nothing to read is not an error."""
    assert read_env_file(tmp_path / "absent") == {}


def test_secrets_are_not_in_the_repr() -> None:
    """A settings object printed in a traceback shows no secret."""
    env = {**GOOD, "PIPEDRIVE_API_TOKEN": "pd-token-value", "BREVO_API_KEY": "brevo-key-value"}
    text = repr(load_settings("web", env, env_file=None))
    for secret in ("correct-horse-battery", "pd-token-value", "brevo-key-value"):
        assert secret not in text
