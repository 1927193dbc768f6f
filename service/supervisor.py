"""``pbsync serve``: the web and the worker as child processes, stopped together.

Each child runs in its own process group so a terminal's Ctrl-C reaches only this
supervisor, which then asks both children to stop gracefully (SIGTERM: uvicorn finishes
its requests, the huey consumer its running tasks) and waits for them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from service.shutdown import stop_signals_blocked

log = logging.getLogger(__name__)

# Long enough for the consumer's own shutdown timeout to run out first.
STOP_GRACE_SECONDS = 35.0


class Supervisor:
    """Starts the children, forwards a stop request, and reports how they ended."""

    def __init__(self, roles: tuple[str, ...] = ("web", "worker")) -> None:
        self.roles = roles
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "service.cli", role]
        # The child starts with stop signals blocked and unblocks them once it can handle
        # them, so stopping right after start is a graceful stop, not a death by signal.
        with stop_signals_blocked():
            return subprocess.Popen(command, start_new_session=True)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        self._stop.set()

    def run(self) -> int:
        """Run until a signal or a child's exit; return the exit status for ``serve``."""
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        for role in self.roles:
            self.children[role] = self._spawn(role)
            log.info("started", extra={"role": role, "pid": self.children[role].pid})
        failed_role = None
        while not self._stop.is_set():
            for role, child in self.children.items():
                if child.poll() is not None:
                    log.error("child exited", extra={"role": role, "status": child.returncode})
                    failed_role = role
                    self._stop.set()
                    break
            self._stop.wait(0.2)
        statuses = self.stop_children()
        if failed_role is not None:
            return 1
        return 0 if all(status == 0 for status in statuses.values()) else 1

    def stop_children(self, grace: float = STOP_GRACE_SECONDS) -> dict[str, int]:
        """Ask every child to stop, kill those still running after ``grace``; return statuses."""
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        statuses: dict[str, int] = {}
        for role, child in self.children.items():
            try:
                statuses[role] = child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("child did not stop in time, killed", extra={"role": role})
                os.killpg(child.pid, signal.SIGKILL)
                statuses[role] = child.wait()
            log.info("stopped", extra={"role": role, "status": statuses[role]})
        return statuses
