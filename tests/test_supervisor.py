"""``pbsync serve`` (service/supervisor.py): children started, stopped together, bad config."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import process_env, start_pbsync, wait_for


class Started:
    """What a test started: the ``serve`` processes and the pids of their children."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.child_pids: list[int] = []


@pytest.fixture
def started() -> Iterator[Started]:
    """Kill whatever is still running at teardown: ``serve`` itself, then each child's group."""
    record = Started()
    try:
        yield record
    finally:
        for process in record.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        for pid in record.child_pids:
            # Each child leads its own process group (start_new_session=True).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects logged in ``path``, one per line; other lines are skipped."""
    entries = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def healthy(port: str) -> bool:
    """True when ``/healthz`` answers 200."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
    except httpx.TransportError:
        return False
    return response.status_code == 200


def child_pids(log: Path) -> dict[str, int]:
    """The pids ``serve`` logged for its web and worker children, once both are logged."""
    pids = {
        entry["role"]: int(entry["pid"])
        for entry in json_lines(log)
        if entry.get("message") == "started" and "role" in entry
    }
    return pids if set(pids) == {"web", "worker"} else {}


def gone(pid: int) -> bool:
    """True when no process ``pid`` exists any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_to_serve_stops_both_children(
    tmp_path: Path, started: Started, sig: signal.Signals
) -> None:
    """A signal sent to ``serve`` alone stops web and worker gracefully (status 0 each) and
    ``serve`` exits 0, leaving no child behind."""
    env = process_env(tmp_path)
    log = tmp_path / "serve.log"
    serve = start_pbsync("serve", env, log)
    started.processes.append(serve)
    pids = wait_for(lambda: child_pids(log), timeout=15)
    started.child_pids.extend(pids.values())
    wait_for(lambda: healthy(env["PORT"]), timeout=15, interval=0.2)
    assert serve.poll() is None
    # The children are in their own process groups, so only serve receives this signal.
    assert os.getpgid(pids["web"]) == pids["web"] != os.getpgid(serve.pid)
    assert os.getpgid(pids["worker"]) == pids["worker"]

    os.kill(serve.pid, sig)
    assert serve.wait(40) == 0

    stopped = {
        entry["role"]: entry["status"]
        for entry in json_lines(log)
        if entry.get("message") == "stopped" and "role" in entry
    }
    assert stopped == {"web": 0, "worker": 0}
    for pid in pids.values():
        wait_for(lambda pid=pid: gone(pid), timeout=5)


def run_serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``pbsync serve`` to its end with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def output_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The non-empty lines ``result`` wrote to stdout and stderr."""
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.mark.integration
def test_serve_without_admin_password_exits_2_with_one_line(tmp_path: Path) -> None:
    """With neither ADMIN_PASSWORD nor ADMIN_PASSWORD_HASH, serve refuses to start: status 2
    and a single line naming ADMIN_PASSWORD."""
    env = process_env(tmp_path)
    del env["ADMIN_PASSWORD"]
    assert not any(key.startswith("ADMIN_") for key in env)
    result = run_serve(env, tmp_path)
    assert result.returncode == 2
    lines = output_lines(result)
    assert len(lines) == 1, lines
    assert "ADMIN_PASSWORD" in lines[0]
    assert not (tmp_path / "app.db").exists()


@pytest.mark.integration
def test_serve_with_short_admin_password_exits_2_with_one_line(tmp_path: Path) -> None:
    """An ADMIN_PASSWORD under 12 characters is refused: status 2, one line saying 12
    characters, and the password itself is not printed."""
    short = "Sh0rt-Pw9x"
    assert len(short) < 12
    env = process_env(tmp_path, ADMIN_PASSWORD=short)
    result = run_serve(env, tmp_path)
    assert result.returncode == 2
    lines = output_lines(result)
    assert len(lines) == 1, lines
    assert "ADMIN_PASSWORD" in lines[0] and "12 characters" in lines[0]
    assert short not in result.stdout + result.stderr
