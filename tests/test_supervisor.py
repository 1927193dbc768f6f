"""``pbsync serve`` (service/supervisor.py): children started, stopped together, bad config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    Started,
    child_pids,
    healthy,
    json_lines,
    process_env,
    start_pbsync,
    wait_for,
)


def gone(pid: int) -> bool:
    """True when no process ``pid`` exists any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stopped_statuses(log: Path) -> dict[str, int]:
    """The exit status ``serve`` logged for each child it stopped."""
    return {
        entry["role"]: entry["status"]
        for entry in json_lines(log)
        if entry.get("message") == "stopped" and "role" in entry
    }


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
    assert serve.wait(40) == 0, log.read_text(errors="replace")[-4000:]

    assert stopped_statuses(log) == {"web": 0, "worker": 0}
    for pid in pids.values():
        wait_for(lambda pid=pid: gone(pid), timeout=5)


@pytest.mark.integration
def test_a_signal_while_the_children_start_still_stops_them_cleanly(
    tmp_path: Path, started: Started
) -> None:
    """SIGTERM right after the children are spawned, before their servers are up, is
    honoured as a graceful stop: no child dies of the signal."""
    env = process_env(tmp_path)
    log = tmp_path / "serve.log"
    serve = start_pbsync("serve", env, log)
    started.processes.append(serve)
    started.child_pids.extend(wait_for(lambda: child_pids(log), timeout=15, interval=0.01).values())
    os.kill(serve.pid, signal.SIGTERM)
    assert serve.wait(40) == 0, log.read_text(errors="replace")[-4000:]
    assert stopped_statuses(log) == {"web": 0, "worker": 0}


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
