"""A recording sink that validates every exchange as it arrives and keeps coverage."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.contract.compiled import OperationRef
from sandbox.contract.validator import ContractValidator, Violation
from sandbox.recording import Exchange

# (api, METHOD, path template) as the clients declare their operations; see
# ContractValidator.resolve_operation for the accepted forms.
ClientOperation = tuple[str, str, str]
_REPORT_VIOLATION_LIMIT = 200
_IDLE_SECONDS = 2.0


@dataclass
class Coverage:
    """What the ledger saw of one operation."""

    exchanges: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    violations: int = 0


class ContractLedger:
    """Validates each exchange handed to it (a ``RecordingMiddleware`` sink) and remembers
    per-operation counts and every violation. Thread-safe; never raises into the fake.

    By default validation runs on a worker thread: the sink is called inside the fake's
    event loop, and validating a 500-row page takes about 0.1 s, which would stall every
    request to that fake and skew its timing (rate windows, injected latency). The readers
    (``take_violations``, ``violations``, ``coverage``, ``report``) first wait for the
    exchanges handed in so far. ``background=False`` validates inside the call instead.
    """

    def __init__(
        self,
        validator: ContractValidator | None = None,
        client_operations: Iterable[ClientOperation] = (),
        *,
        background: bool = True,
    ) -> None:
        self.validator = validator or ContractValidator()
        self.client_operations = list(client_operations)
        self.background = background
        self._lock = threading.Lock()
        self._coverage: dict[OperationRef, Coverage] = {}
        self._pending: list[Violation] = []
        self._all: list[Violation] = []
        self._exchanges = 0
        self._unmatched = 0
        self._queue_changed = threading.Condition()
        self._backlog: deque[Exchange] = deque()
        self._busy = False
        self._worker: threading.Thread | None = None

    def __call__(self, exchange: Exchange) -> None:
        """Validate and record one exchange (on the worker thread, by default)."""
        if not self.background:
            self._record(exchange)
            return
        with self._queue_changed:
            self._backlog.append(exchange)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="contract-ledger", daemon=True
                )
                self._worker.start()
            self._queue_changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._queue_changed:
                # An idle worker ends, so ledgers left behind by tests hold no thread.
                if not self._queue_changed.wait_for(lambda: bool(self._backlog), _IDLE_SECONDS):
                    self._worker = None
                    return
                exchange = self._backlog.popleft()
                self._busy = True
            try:
                self._record(exchange)
            finally:
                with self._queue_changed:
                    self._busy = False
                    self._queue_changed.notify_all()

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every exchange handed in so far is recorded."""
        with self._queue_changed:
            done = self._queue_changed.wait_for(
                lambda: not self._backlog and not self._busy, timeout
            )
        if not done:
            raise TimeoutError(f"the contract ledger did not catch up within {timeout} s")

    def _record(self, exchange: Exchange) -> None:
        try:
            ref, violations = self.validator.examine(exchange)
        except Exception as exc:  # must not kill the worker or break the fake's response
            ref = None
            message = f"validator error: {type(exc).__name__}: {exc}"
            violations = [Violation(None, exchange.method, exchange.path, "request", message, None)]
        with self._lock:
            self._exchanges += 1
            if ref is None:
                self._unmatched += 1
            else:
                coverage = self._coverage.setdefault(ref, Coverage())
                coverage.exchanges += 1
                coverage.statuses[exchange.status] += 1
                coverage.violations += len(violations)
            self._pending.extend(violations)
            self._all.extend(violations)

    def take_violations(self) -> list[Violation]:
        """The violations recorded since the last call (for a per-test assertion)."""
        self.flush()
        with self._lock:
            taken, self._pending = self._pending, []
            return taken

    @property
    def violations(self) -> list[Violation]:
        """Every violation recorded so far, taken or not."""
        self.flush()
        with self._lock:
            return list(self._all)

    def coverage(self) -> dict[OperationRef, Coverage]:
        """A copy of the per-operation counts."""
        self.flush()
        with self._lock:
            return {
                ref: Coverage(c.exchanges, Counter(c.statuses), c.violations)
                for ref, c in self._coverage.items()
            }

    def snapshot(self) -> dict[str, Any]:
        """What the ledger recorded, as plain lists and dicts: a pytest-xdist worker sends
        it to the controller, which adds every worker's to one ledger with ``absorb``."""
        self.flush()
        with self._lock:
            return {
                "exchanges": self._exchanges,
                "unmatched": self._unmatched,
                "coverage": [
                    [
                        dataclasses.asdict(ref),
                        c.exchanges,
                        [[s, n] for s, n in c.statuses.items()],
                        c.violations,
                    ]
                    for ref, c in self._coverage.items()
                ],
                "violations": [dataclasses.asdict(v) for v in self._all],
            }

    def absorb(self, snapshot: dict[str, Any]) -> None:
        """Add another ledger's ``snapshot()`` to this one's counts and violations (as
        taken ones: no test of this process can assert them)."""
        self.flush()
        with self._lock:
            self._exchanges += snapshot["exchanges"]
            self._unmatched += snapshot["unmatched"]
            for ref_fields, exchanges, statuses, violations in snapshot["coverage"]:
                coverage = self._coverage.setdefault(OperationRef(**ref_fields), Coverage())
                coverage.exchanges += exchanges
                coverage.statuses.update({status: n for status, n in statuses})
                coverage.violations += violations
            self._all.extend(Violation(**fields) for fields in snapshot["violations"])

    def report(self, client_operations: Iterable[ClientOperation] | None = None) -> str:
        """Markdown: each client operation with its exchanges and statuses, the operations
        seen that no client declares, and the violations."""
        clients = self.client_operations if client_operations is None else list(client_operations)
        self.flush()
        with self._lock:
            coverage = dict(self._coverage)
            violations = list(self._all)
            exchanges, unmatched = self._exchanges, self._unmatched
        lines = [
            "# API contract report",
            "",
            f"{exchanges} exchanges validated, {unmatched} matching no operation, "
            f"{len(violations)} violations.",
            "",
            "## Client operations",
            "",
            "| Client operation | Spec operation | Exchanges | Statuses |",
            "|---|---|---:|---|",
        ]
        used: set[OperationRef] = set()
        for api, method, template in clients:
            ref = self.validator.resolve_operation(api, method, template)
            client = f"`{api} {method.upper()} {template}`"
            if ref is None:
                lines.append(f"| {client} | **not in the spec** | - | - |")
                continue
            used.add(ref)
            seen = coverage.get(ref, Coverage())
            count = str(seen.exchanges) if seen.exchanges else "**0**"
            lines.append(f"| {client} | {_spec_label(ref)} | {count} | {_statuses(seen)} |")
        others = sorted(ref for ref in coverage if ref not in used)
        lines += ["", "## Operations seen that no client declares", ""]
        if others:
            lines += ["| Spec operation | Exchanges | Statuses |", "|---|---:|---|"]
            lines += [
                f"| {_spec_label(r)} | {coverage[r].exchanges} | {_statuses(coverage[r])} |"
                for r in others
            ]
        else:
            lines.append("None.")
        lines += ["", f"## Violations ({len(violations)})", ""]
        lines += [f"- {v}" for v in violations[:_REPORT_VIOLATION_LIMIT]] or ["None."]
        if len(violations) > _REPORT_VIOLATION_LIMIT:
            lines.append(f"- ... and {len(violations) - _REPORT_VIOLATION_LIMIT} more")
        return "\n".join(lines) + "\n"

    def write_report(
        self, path: str | Path, client_operations: Iterable[ClientOperation] | None = None
    ) -> None:
        """Write ``report()`` to ``path`` (UTF-8), creating its directory if needed."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.report(client_operations), encoding="utf-8")


def _spec_label(ref: OperationRef) -> str:
    op_id = f" ({ref.operation_id})" if ref.operation_id else ""
    return f"`{ref.label}`{op_id}"


def _statuses(coverage: Coverage) -> str:
    if not coverage.statuses:
        return "-"
    return ", ".join(f"{status} ×{n}" for status, n in sorted(coverage.statuses.items()))
