"""The huey instance built from QUEUE_URL, and the tasks registered on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from huey import RedisHuey, SqliteHuey
from huey.signals import SIGNAL_INTERRUPTED

from service import sessions
from service.clock import ManualClock
from service.config import Settings
from service.passwords import AdminPassword
from tests.conftest import ADMIN_PASSWORD
from workers.queue import QueueConfigError, build_huey
from workers.tasks import register_tasks


def test_sqlite_url_builds_sqlite_huey_on_its_own_file(tmp_path: Path) -> None:
    """A separate file from the app database, created with its folder; results off."""
    huey = build_huey(f"sqlite:///{tmp_path / 'q' / 'queue.db'}")
    assert isinstance(huey, SqliteHuey) and huey.results is False
    register_tasks(huey, Settings()).remove_expired_sessions()
    assert huey.pending_count() == 1
    assert (tmp_path / "q" / "queue.db").exists()


def test_redis_url_builds_redis_huey() -> None:
    """Scale-out uses the same code on Redis (no connection is made until used)."""
    huey = build_huey("redis://127.0.0.1:6390/0")
    assert isinstance(huey, RedisHuey) and huey.results is False


def test_other_urls_are_refused() -> None:
    """A clear error, not a stack trace from huey."""
    with pytest.raises(QueueConfigError, match="sqlite:///"):
        build_huey("amqp://localhost")


def test_a_task_interrupted_by_shutdown_is_requeued(tmp_path: Path) -> None:
    """huey loses a message it deleted; the interrupted signal puts it back."""
    huey = build_huey(f"sqlite:///{tmp_path / 'queue.db'}")
    tasks = register_tasks(huey, Settings())
    tasks.remove_expired_sessions()
    task = huey.dequeue()
    assert huey.pending_count() == 0
    huey._emit(SIGNAL_INTERRUPTED, task)
    assert huey.pending_count() == 1


def test_remove_expired_sessions_task(clean_db: Path, tmp_path: Path) -> None:
    """Run through huey's own dequeue and execute, with an injected clock."""
    clock = ManualClock()
    password = AdminPassword(plain=ADMIN_PASSWORD)
    old = sessions.create_session(password, clock.now())
    clock.advance(31 * 24 * 3600)
    new = sessions.create_session(password, clock.now())
    huey = build_huey(f"sqlite:///{tmp_path / 'queue.db'}")
    register_tasks(huey, Settings(), clock).remove_expired_sessions()
    huey.execute(huey.dequeue())
    assert sessions.validate_session(old.token, clock.now()) is None
    assert sessions.validate_session(new.token, clock.now()) is not None


def test_refresh_task_without_a_token_logs_what_is_missing(
    clean_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A setup without PIPEDRIVE_API_TOKEN is a warning naming it, not a crashed task."""
    huey = build_huey(f"sqlite:///{tmp_path / 'queue.db'}")
    register_tasks(huey, Settings()).refresh_filters()
    with caplog.at_level("WARNING", logger="workers.tasks"):
        huey.execute(huey.dequeue())
    [record] = [r for r in caplog.records if r.getMessage() == "filter refresh failed"]
    assert "PIPEDRIVE_API_TOKEN" in record.__dict__["error"]
