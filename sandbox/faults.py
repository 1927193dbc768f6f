"""Injected faults and latency, shared by both fakes.

A ``FaultPlan`` holds rules set through a fake's control API. Each rule matches requests by
method and path pattern (``fnmatch``) and fires either with a probability or for the next
``count`` matching requests. ``FaultMiddleware`` applies the plan in front of a fake's API
routes; the control routes (``/_sandbox``) are never faulted.
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FaultKind = Literal["429", "500", "timeout", "drop"]
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "500", "timeout", "drop")
CONTROL_PREFIX = "/_sandbox"


@dataclass
class FaultRule:
    """One way of failing the requests that match ``method`` and ``path``."""

    kind: FaultKind
    path: str = "*"
    method: str = "*"
    probability: float = 0.0
    count: int | None = None

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to a request."""
        return (self.method in ("*", method)) and fnmatch.fnmatchcase(path, self.path)


@dataclass
class LatencyRule:
    """A delay added before the requests that match ``method`` and ``path`` are answered."""

    seconds: float
    path: str = "*"
    method: str = "*"

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to a request."""
        return (self.method in ("*", method)) and fnmatch.fnmatchcase(path, self.path)


class FaultPlanError(ValueError):
    """A fault plan sent to the control API is malformed; ``str()`` says how."""


class FaultPlan:
    """The faults and latency a fake currently injects; thread-safe, seeded for repeatability."""

    def __init__(self, seed: int = 0, hang_seconds: float = 30.0) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.hang_seconds = hang_seconds
        self.faults: list[FaultRule] = []
        self.latency: list[LatencyRule] = []
        self.injected: Counter[str] = Counter()

    def replace(self, faults: list[FaultRule], latency: list[LatencyRule]) -> None:
        """Put a new set of rules in place of the old one."""
        with self._lock:
            self.faults = faults
            self.latency = latency

    def clear(self) -> None:
        """Inject nothing from now on."""
        self.replace([], [])

    def pick(self, method: str, path: str) -> FaultKind | None:
        """The fault to inject into this request, if any; counted rules are used up."""
        with self._lock:
            for rule in self.faults:
                if not rule.matches(method, path):
                    continue
                if rule.count is not None:
                    if rule.count <= 0:
                        continue
                    rule.count -= 1
                    self.injected[rule.kind] += 1
                    return rule.kind
                if rule.probability > 0 and self._random.random() < rule.probability:
                    self.injected[rule.kind] += 1
                    return rule.kind
            return None

    def delay(self, method: str, path: str) -> float:
        """Seconds to wait before answering this request."""
        with self._lock:
            return sum(r.seconds for r in self.latency if r.matches(method, path))

    def to_json(self) -> dict[str, Any]:
        """The plan as the control API shows it."""
        with self._lock:
            return {
                "faults": [asdict(r) for r in self.faults],
                "latency": [asdict(r) for r in self.latency],
                "hang_seconds": self.hang_seconds,
                "injected": dict(self.injected),
            }

    def load_json(self, payload: Any) -> None:
        """Replace the plan from a control-API body; raise ``FaultPlanError`` when malformed.

        Body: ``{"faults": [{"kind", "path", "method", "probability" | "count"}],
        "latency": [{"seconds", "path", "method"}], "hang_seconds": s, "seed": n}``, every
        key optional; a ``seed`` starts the probability draws afresh, so a test gets the
        same draws whatever ran before it.
        """
        if not isinstance(payload, dict):
            raise FaultPlanError("the body must be a JSON object")
        faults = [_fault_rule(item) for item in _items(payload, "faults")]
        latency = [_latency_rule(item) for item in _items(payload, "latency")]
        hang = payload.get("hang_seconds", self.hang_seconds)
        if not isinstance(hang, int | float) or isinstance(hang, bool) or hang < 0:
            raise FaultPlanError("hang_seconds must be a non-negative number")
        seed = payload.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise FaultPlanError("seed must be an integer")
        self.hang_seconds = float(hang)
        if seed is not None:
            with self._lock:
                self._random.seed(seed)
        self.replace(faults, latency)


def _items(payload: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = payload.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise FaultPlanError(f"{key} must be a list of objects")
    return cast(list[dict[str, Any]], items)


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key, "*")
    if not isinstance(value, str) or not value:
        raise FaultPlanError(f"{key} must be a non-empty string")
    return value.upper() if key == "method" and value != "*" else value


def _fault_rule(item: dict[str, Any]) -> FaultRule:
    kind = item.get("kind")
    if kind not in FAULT_KINDS:
        raise FaultPlanError(f"kind must be one of {', '.join(FAULT_KINDS)}")
    probability = item.get("probability", 0.0)
    count = item.get("count")
    if not isinstance(probability, int | float) or not 0 <= probability <= 1:
        raise FaultPlanError("probability must be a number from 0 to 1")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise FaultPlanError("count must be a non-negative integer")
    if count is None and probability == 0:
        raise FaultPlanError("a fault needs a probability or a count")
    return FaultRule(
        kind=cast(FaultKind, kind),
        path=_text(item, "path"),
        method=_text(item, "method"),
        probability=float(probability),
        count=count,
    )


def _latency_rule(item: dict[str, Any]) -> LatencyRule:
    seconds = item.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise FaultPlanError("seconds must be a non-negative number")
    return LatencyRule(
        seconds=float(seconds), path=_text(item, "path"), method=_text(item, "method")
    )


class DroppedConnection(Exception):
    """Raised after the response has started, so the server closes the connection mid-answer."""


ErrorResponder = Callable[[FaultKind, Scope], Awaitable[Response] | Response]


class FaultMiddleware:
    """Applies a ``FaultPlan`` to every request outside the control routes.

    ``respond`` builds the fake's own 429 or 500 answer (each API has its error format and
    headers). A timeout receives the request, holds it for ``hang_seconds``, then runs it
    and answers normally, so a client with a shorter read timeout sees a timeout though the
    request was applied; a drop starts the response and then breaks it off before the
    request is run, so the client sees the connection closed.
    """

    def __init__(self, app: ASGIApp, plan: FaultPlan, respond: ErrorResponder) -> None:
        self.app = app
        self.plan = plan
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        delay = self.plan.delay(method, path)
        if delay:
            await asyncio.sleep(delay)
        kind = self.plan.pick(method, path)
        if kind is None:
            await self.app(scope, receive, send)
        elif kind == "timeout":
            # Received whole before the wait, as by a slow server: the request is applied
            # even when the client gave up on the answer (the ambiguous case for a write).
            replay = await _buffered(receive)
            await asyncio.sleep(self.plan.hang_seconds)
            await self.app(scope, replay, send)
        elif kind == "drop":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise DroppedConnection(f"sandbox dropped {method} {path} on purpose")
        else:
            response = self.respond(kind, scope)
            if not isinstance(response, Response):
                response = await response
            await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    """Receive the whole request body."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _buffered(receive: Receive) -> Receive:
    """Receive the whole request body now; a ``receive`` that hands it over again, then
    whatever comes next (the disconnect)."""
    body = await _read_body(receive)
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
