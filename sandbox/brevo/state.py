"""``BrevoFake``: everything one running fake holds (``app.state.fake``): settings, data,
fault plan, rate buckets, call counts and the drift switch."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from sandbox.brevo.config import RATE_SETTINGS, BrevoFakeConfig, apply_settings
from sandbox.brevo.limits import Limits
from sandbox.brevo.seed import seed_store
from sandbox.brevo.store import Store
from sandbox.faults import FaultKind, FaultPlan

API_PREFIX = "/v3"
UNAUTHORIZED = {"code": "unauthorized", "message": "Key not found"}
# Brevo's 429 and 5xx bodies are undocumented; the spec types every error as errorModel,
# whose code enum has no rate-limit or server-error value, so the nearest one is used.
TOO_MANY = {"code": "bad_request", "message": "Too many requests: the rate limit is exceeded"}
SERVER_ERROR = {"code": "bad_request", "message": "Internal server error"}


class BrevoFake:
    """The state of one fake Brevo account and its switches."""

    def __init__(self, config: BrevoFakeConfig) -> None:
        self.config = config
        self.store = self.seeded(config.seed)
        self.plan = FaultPlan(seed=config.fault_seed)
        self.limits = Limits(config)
        self.drift = False
        self.api_routes: list[BaseRoute] = []
        self._calls: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    @staticmethod
    def seeded(seed: int) -> Store:
        """A fresh store holding the demo account for ``seed``."""
        store = Store()
        seed_store(store, seed)
        return store

    def reset(self, seed: int | None = None) -> None:
        """Fresh seeded data (and import rejects), call counts and rate windows; settings,
        faults and drift stay as they are."""
        self.store = self.seeded(self.config.seed if seed is None else seed)
        self.limits.configure(self.config)
        with self._lock:
            self._calls.clear()

    def change_settings(self, payload: Any) -> None:
        """Apply a partial settings body (``ValueError`` when malformed)."""
        changed = apply_settings(self.config, payload)
        if changed & set(RATE_SETTINGS):
            self.limits.configure(self.config)

    def authorized(self, key: str | None) -> bool:
        """Whether an ``api-key`` header value opens the API."""
        if not key:
            return False
        return self.config.token is None or key == self.config.token

    def template(self, scope: Scope) -> str:
        """``METHOD /path-template`` of a request, as the spec names the path (no ``/v3``)."""
        partial = None
        for route in self.api_routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return f"{scope['method']} {_spec_path(route)}"
            if match == Match.PARTIAL and partial is None:
                partial = route
        path = _spec_path(partial) if partial is not None else "(unknown)"
        return f"{scope['method']} {path}"

    def count(self, template: str, status: int) -> None:
        """Count one answered API call."""
        with self._lock:
            self._calls[(template, status)] += 1

    def usage(self) -> dict[str, Any]:
        """Calls by template and status, and the processes bucket's current window."""
        with self._lock:
            calls: dict[str, dict[str, int]] = {}
            for (template, status), n in sorted(self._calls.items()):
                calls.setdefault(template, {})[str(status)] = n
        return {
            "calls": calls,
            "processes_window": self.limits.processes_window(),
            "faults_injected": self.plan.to_json()["injected"],
        }

    def fault_response(self, kind: FaultKind, scope: Scope) -> Response:
        """The 429 or 500 the fault plan injects, in Brevo's format."""
        self.count(self.template(scope), 429 if kind == "429" else 500)
        if kind == "429":
            response = JSONResponse(TOO_MANY, status_code=429)
            response.raw_headers.extend(self.limits.exhausted(scope.get("path", "")))
            return response
        return JSONResponse(SERVER_ERROR, status_code=500)


def fake_of(request: Request) -> BrevoFake:
    """The fake serving this request."""
    return cast(BrevoFake, request.app.state.fake)


def _spec_path(route: BaseRoute) -> str:
    path: str = getattr(route, "path", "")
    return path.removeprefix(API_PREFIX)
