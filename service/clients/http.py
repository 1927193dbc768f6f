"""The HTTP policy both API clients share.

One connection pool per process; explicit connect and read timeouts; a bounded number of
attempts with exponential backoff and full jitter on 429, 5xx, timeouts and dropped
connections, never shorter than the wait the API's rate-limit headers ask for; typed errors
(``service.clients.errors``) for everything else; and every call counted in a
``UsageStore`` with the rate-limit figures the API reported.

A request that is not idempotent (an import, creating a list or a webhook) is only sent
again when it certainly did not reach the API: a refused connection or a 429.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from service.clients.credentials import ACCEPTANCE, Acceptance, fingerprint
from service.clients.errors import (
    ApiAuthError,
    ApiBudgetExhausted,
    ApiError,
    ApiNotFound,
    ApiRateLimited,
    ApiRequestError,
    ApiUnavailable,
)
from service.clients.usage import CallKey, Pacer, RateFigures, UsageStore

log = logging.getLogger(__name__)

USER_AGENT = "pipedrive-brevo-sync/0.1"


@dataclass(frozen=True)
class Operation:
    """One API operation as the clients call it: method and path template.

    ``cost`` is Pipedrive's ``x-token-cost`` for the operation (0 for Brevo).
    """

    api: str
    method: str
    template: str
    idempotent: bool = True
    cost: int = 0

    @property
    def name(self) -> str:
        """``METHOD /path/{template}``, as logs, errors and counters show it."""
        return f"{self.method} {self.template}"


@dataclass(frozen=True)
class ClientPolicy:
    """Timeouts and retry bounds of one client."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    # A 429 asking for longer than this is raised as ApiRateLimited instead of slept through.
    max_wait: float = 60.0

    def timeout(self) -> httpx.Timeout:
        """The httpx timeout of one attempt."""
        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.read_timeout,
            pool=self.connect_timeout,
        )

    def backoff(self, attempt: int, draw: Callable[[], float]) -> float:
        """Full jitter: a random wait up to ``base * 2**(attempt - 1)``, capped."""
        return draw() * min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))


_pool: httpx.Client | None = None
_pool_lock = threading.Lock()


def shared_pool() -> httpx.Client:
    """The process's one connection pool, made on first use and closed at exit."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = httpx.Client(
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
                headers={"user-agent": USER_AGENT},
                follow_redirects=False,
            )
            atexit.register(_pool.close)
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child must not share the parent's sockets.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool_after_fork)


@dataclass(frozen=True)
class RateHeaders:
    """Which response headers carry an API's rate-limit figures."""

    limit: str
    remaining: str
    reset: str
    daily_limit: str | None = None
    daily_remaining: str | None = None

    def read(self, headers: Mapping[str, str]) -> RateFigures:
        """The figures found in ``headers``."""
        return RateFigures(
            limit=_int(headers.get(self.limit)),
            remaining=_int(headers.get(self.remaining)),
            reset_seconds=_float(headers.get(self.reset)),
            daily_limit=_int(headers.get(self.daily_limit)) if self.daily_limit else None,
            daily_remaining=(
                _int(headers.get(self.daily_remaining)) if self.daily_remaining else None
            ),
        )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


class BodyParts:
    """A request body in parts, sent in slices of 64 KiB; iterable again for a retry.

    httpx sends an iterable body as is when the caller sets Content-Length.
    """

    SLICE = 65_536

    def __init__(self, parts: Sequence[bytes | bytearray]) -> None:
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            view = memoryview(part)
            for start in range(0, len(view), self.SLICE):
                yield bytes(view[start : start + self.SLICE])


class ApiHttp:
    """Sends one API's requests under the shared policy."""

    def __init__(
        self,
        api: str,
        base_url: str,
        auth_headers: Mapping[str, str],
        *,
        usage: UsageStore,
        rate_headers: RateHeaders,
        policy: ClientPolicy | None = None,
        pool: httpx.Client | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
        acceptance: Acceptance | None = None,
    ) -> None:
        self.api = api
        self.base_url = base_url.rstrip("/")
        self._auth_headers = dict(auth_headers)
        self._secrets = [v for v in auth_headers.values() if v]
        # Names the credential the headers carry (their values joined) without holding it.
        self.fingerprint = fingerprint("\n".join(self._secrets))
        self.acceptance = acceptance if acceptance is not None else ACCEPTANCE
        self.usage = usage
        self.rate_headers = rate_headers
        self.policy = policy or ClientPolicy()
        self._pool = pool
        self.now = now
        self.sleep = sleep
        self._draw = draw

    def pacer(self, bucket: str, interval: float, burst: int = 0) -> Pacer:
        """A pacer on this client's store and clock."""
        return Pacer(self.usage, bucket, interval, now=self.now, sleep=self.sleep, burst=burst)

    def url(self, operation: Operation, path: Mapping[str, object] | None = None) -> str:
        """The absolute URL of ``operation`` with its path parameters filled in and quoted."""
        values = {k: quote(str(v), safe="") for k, v in (path or {}).items()}
        return self.base_url + operation.template.format(**values)

    def call(
        self,
        operation: Operation,
        *,
        pacer: Pacer,
        path: Mapping[str, object] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | Sequence[bytes | bytearray] | None = None,
    ) -> httpx.Response:
        """Send ``operation`` and return its 2xx response, retrying within the policy.

        The body is ``json`` (encoded here) or ``content``, an already encoded JSON
        document sent as is, whole or in parts that are sent one after the other without
        being joined (a large body is then never copied); not both.
        """
        if json is not None and content is not None:
            raise ValueError("give json or content, not both")
        url = self.url(operation, path)
        pool = self._pool or shared_pool()
        headers = {**self._auth_headers, "accept": "application/json"}
        body: bytes | BodyParts | None = None
        if content is not None:
            headers["content-type"] = "application/json"
            if isinstance(content, bytes):
                body = content
            else:
                body = BodyParts(content)
                headers["content-length"] = str(len(body))
        attempts = self.policy.max_attempts
        for attempt in range(1, attempts + 1):
            pacer.wait()
            try:
                response = pool.request(
                    operation.method,
                    url,
                    params=params,
                    json=json,
                    content=body,
                    headers=headers,
                    timeout=self.policy.timeout(),
                )
            except httpx.TransportError as exc:
                self.usage.record_call(self._key(operation, 0), self.now())
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                reason = _transport_reason(exc)
                if attempt == attempts or not (operation.idempotent or unsent):
                    raise ApiUnavailable(
                        self.api, operation.name, reason, attempts=attempt
                    ) from None
                self._pause(operation, attempt, reason, self.policy.backoff(attempt, self._draw))
                continue
            self._observe(operation, response)
            if response.is_success:
                return response
            error = self._error(operation, response, attempt)
            retryable = isinstance(error, ApiUnavailable) and not isinstance(
                error, ApiBudgetExhausted
            )
            if not retryable or attempt == attempts:
                raise error
            if isinstance(error, ApiRateLimited):
                wait = max(self.policy.backoff(attempt, self._draw), error.retry_after)
                if wait > self.policy.max_wait:
                    raise ApiRateLimited(
                        self.api, operation.name, error.api_message, wait, attempt
                    ) from None
                pacer.hold(wait)
            elif operation.idempotent:
                wait = self.policy.backoff(attempt, self._draw)
            else:
                raise error
            self._pause(operation, attempt, f"status {response.status_code}", wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _key(self, operation: Operation, status: int) -> CallKey:
        return CallKey(self.api, operation.method, operation.template, status)

    def _observe(self, operation: Operation, response: httpx.Response) -> None:
        at = self.now()
        self.usage.record_call(self._key(operation, response.status_code), at)
        self.acceptance.record(self.api, self.fingerprint, response.status_code)
        figures = self.rate_headers.read(response.headers)
        if not figures.is_empty():
            self.usage.record_figures(self.api, figures, at)

    def _pause(self, operation: Operation, attempt: int, reason: str, wait: float) -> None:
        log.warning(
            "api call retried",
            extra={
                "api": self.api,
                "operation": operation.name,
                "attempt": attempt,
                "reason": reason,
                "wait_seconds": round(wait, 3),
            },
        )
        self.sleep(wait)

    def _error(self, operation: Operation, response: httpx.Response, attempt: int) -> ApiError:
        status = response.status_code
        message, code, metadata = self._api_message(response)
        if status in (401, 403):
            return ApiAuthError(self.api, operation.name, message, status, code)
        if status == 429:
            figures = self.rate_headers.read(response.headers)
            # The daily budget is spent when what is left cannot pay for this call.
            if figures.daily_remaining is not None and figures.daily_remaining < max(
                operation.cost, 1
            ):
                return ApiBudgetExhausted(
                    self.api, operation.name, message, _asked_wait(response, self), attempt
                )
            return ApiRateLimited(
                self.api, operation.name, message, _asked_wait(response, self), attempt
            )
        if status >= 500:
            return ApiUnavailable(self.api, operation.name, message, status, code, attempt)
        if status == 404:
            return ApiNotFound(self.api, operation.name, message, status, code, metadata=metadata)
        return ApiRequestError(self.api, operation.name, message, status, code, metadata=metadata)

    def _api_message(
        self, response: httpx.Response
    ) -> tuple[str, str | None, dict[str, Any] | None]:
        """The API's own error text (Pipedrive ``error``, Brevo ``message``), secrets
        removed, its ``code`` and its ``metadata`` object."""
        try:
            body = response.json()
        except ValueError:
            body = None
        message: str = response.reason_phrase or "no message"
        code: str | None = None
        metadata: dict[str, Any] | None = None
        if isinstance(body, dict):
            for key in ("message", "error"):
                if isinstance(body.get(key), str) and body[key]:
                    message = body[key]
                    break
            if isinstance(body.get("code"), str):
                code = body["code"]
            if isinstance(body.get("metadata"), dict):
                metadata = body["metadata"]
        message = message[:300]
        for secret in self._secrets:
            message = message.replace(secret, "[redacted]")
        return message, code, metadata


def server_time(response: httpx.Response) -> float | None:
    """The API's own clock at the response, from its ``Date`` header (whole seconds, epoch);
    None when the header is missing or unparseable."""
    text = response.headers.get("date")
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        # RFC 5322 "-0000" parses as naive; HTTP dates are always GMT.
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _asked_wait(response: httpx.Response, http: ApiHttp) -> float:
    """The longest wait the response asks for: the rate-limit reset or Retry-After."""
    figures = http.rate_headers.read(response.headers)
    asked = [figures.reset_seconds or 0.0, _float(response.headers.get("retry-after")) or 0.0]
    return max(asked)


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"connection failed ({type(exc).__name__})"
