"""The shared HTTP policy, driven through httpx.MockTransport for exact control of answers."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from service.clients.credentials import Acceptance, fingerprint
from service.clients.errors import (
    ApiAuthError,
    ApiBudgetExhausted,
    ApiNotFound,
    ApiRateLimited,
    ApiRequestError,
    ApiUnavailable,
)
from service.clients.http import ApiHttp, ClientPolicy, Operation, RateHeaders, server_time
from service.clients.usage import CallKey, MemoryUsage

SECRET = "sk-live-very-secret-key"
HEADERS = RateHeaders("x-rl-limit", "x-rl-remaining", "x-rl-reset", None, "x-daily-remaining")
GET = Operation("brevo", "GET", "/things/{id}")
POST = Operation("brevo", "POST", "/things", idempotent=False)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Sleeps that are recorded instead of slept, and a clock they move."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make(
    handler: Handler, recorder: Recorder, policy: ClientPolicy | None = None
) -> tuple[ApiHttp, MemoryUsage]:
    usage = MemoryUsage()
    http = ApiHttp(
        "brevo",
        "https://api.example/v3",
        {"api-key": SECRET},
        usage=usage,
        rate_headers=HEADERS,
        policy=policy or ClientPolicy(max_attempts=4, backoff_base=1.0, backoff_cap=8.0),
        pool=httpx.Client(transport=httpx.MockTransport(handler)),
        now=recorder.clock,
        sleep=recorder.sleep,
        draw=lambda: 1.0,
    )
    return http, usage


def answers(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler giving ``responses`` in order (an exception is raised instead)."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def call(http: ApiHttp, operation: Operation = GET) -> httpx.Response:
    return http.call(operation, pacer=http.pacer("b", 0.0), path={"id": "a/b c"})


def test_path_parameters_are_quoted_and_the_key_sent_in_its_header() -> None:
    handler, seen = answers(httpx.Response(200, json={}))
    http, _ = make(handler, Recorder())
    call(http)
    assert seen[0].url.raw_path == b"/v3/things/a%2Fb%20c"
    assert seen[0].headers["api-key"] == SECRET


def test_5xx_is_retried_with_exponential_backoff_then_succeeds() -> None:
    handler, seen = answers(
        httpx.Response(500), httpx.Response(502), httpx.Response(503), httpx.Response(200, json={})
    )
    recorder = Recorder()
    http, usage = make(handler, recorder)
    assert call(http).status_code == 200
    assert recorder.waits == [1.0, 2.0, 4.0]
    assert usage.calls[CallKey("brevo", "GET", "/things/{id}", 500)] == 1
    assert usage.calls[CallKey("brevo", "GET", "/things/{id}", 200)] == 1


def test_full_jitter_draws_between_zero_and_the_exponential_bound() -> None:
    policy = ClientPolicy(backoff_base=0.5, backoff_cap=20.0)
    assert policy.backoff(1, lambda: 0.0) == 0.0
    assert policy.backoff(3, lambda: 0.5) == 1.0
    assert policy.backoff(10, lambda: 1.0) == 20.0


def test_429_waits_at_least_the_reset_header() -> None:
    limited = httpx.Response(429, headers={"x-rl-reset": "7", "x-rl-remaining": "0"})
    handler, _ = answers(limited, httpx.Response(200, json={}))
    recorder = Recorder()
    http, usage = make(handler, recorder)
    call(http)
    assert recorder.waits == [7.0]
    assert usage.figures["brevo"].remaining == 0


def test_429_asking_longer_than_the_policy_allows_raises_rate_limited() -> None:
    handler, seen = answers(httpx.Response(429, headers={"retry-after": "3600"}))
    http, _ = make(handler, Recorder())
    with pytest.raises(ApiRateLimited) as caught:
        call(http)
    assert caught.value.retry_after == 3600
    assert len(seen) == 1


def test_an_exhausted_daily_budget_is_not_retried() -> None:
    spent = httpx.Response(429, headers={"x-daily-remaining": "0", "x-rl-reset": "1"})
    handler, seen = answers(spent)
    http, _ = make(handler, Recorder())
    with pytest.raises(ApiBudgetExhausted):
        call(http)
    assert len(seen) == 1


def test_timeouts_and_dropped_connections_are_retried() -> None:
    handler, seen = answers(
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected"),
        httpx.Response(200, json={}),
    )
    http, usage = make(handler, Recorder())
    assert call(http).status_code == 200
    assert len(seen) == 3
    assert usage.calls[CallKey("brevo", "GET", "/things/{id}", 0)] == 2


def test_attempts_exhausted_raise_unavailable_with_the_count() -> None:
    handler, seen = answers(*[httpx.Response(503, json={"message": "down"})] * 4)
    http, _ = make(handler, Recorder())
    with pytest.raises(ApiUnavailable) as caught:
        call(http)
    assert len(seen) == 4
    assert caught.value.attempts == 4
    assert caught.value.api_message == "down"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_raised_at_once(status: int) -> None:
    body = {"code": "unauthorized", "message": f"Key not found: {SECRET}"}
    handler, seen = answers(httpx.Response(status, json=body))
    http, _ = make(handler, Recorder())
    with pytest.raises(ApiAuthError) as caught:
        call(http)
    assert len(seen) == 1
    assert caught.value.code == "unauthorized"
    assert SECRET not in str(caught.value)
    assert "GET /things/{id}" in str(caught.value)


def test_other_4xx_carry_the_api_message_and_are_not_retried() -> None:
    handler, seen = answers(
        httpx.Response(400, json={"success": False, "error": "limit too big"}),
        httpx.Response(404, json={"code": "document_not_found", "message": "List ID not found"}),
    )
    http, _ = make(handler, Recorder())
    with pytest.raises(ApiRequestError, match="limit too big"):
        call(http)
    with pytest.raises(ApiNotFound, match="List ID not found"):
        call(http)
    assert len(seen) == 2


def test_a_non_idempotent_request_is_not_resent_after_a_read_timeout_or_5xx() -> None:
    handler, seen = answers(httpx.ReadTimeout("slow"), httpx.Response(500))
    http, _ = make(handler, Recorder())
    with pytest.raises(ApiUnavailable):
        call(http, POST)
    with pytest.raises(ApiUnavailable):
        call(http, POST)
    assert len(seen) == 2


def test_a_non_idempotent_request_is_resent_when_it_never_left() -> None:
    handler, seen = answers(
        httpx.ConnectError("refused"), httpx.Response(429), httpx.Response(201, json={})
    )
    http, _ = make(handler, Recorder())
    assert call(http, POST).status_code == 201
    assert len(seen) == 3


def test_a_transport_error_message_holds_no_url_or_key() -> None:
    handler, _ = answers(*[httpx.ConnectError(f"failed https://x/?k={SECRET}")] * 4)
    http, _ = make(handler, Recorder())
    with pytest.raises(ApiUnavailable) as caught:
        call(http)
    assert SECRET not in str(caught.value)
    assert "ConnectError" in str(caught.value)


def test_a_429_holds_the_pacing_bucket_for_every_caller_of_the_store() -> None:
    handler, _ = answers(httpx.Response(429, headers={"x-rl-reset": "5"}), httpx.Response(200))
    recorder = Recorder()
    http, usage = make(handler, recorder)
    pacer = http.pacer("shared", 0.0)
    http.call(GET, pacer=pacer, path={"id": 1})
    # Another process sharing the store would find the bucket held until the reset passed.
    assert usage.reserve("shared", 0.0, 1000.0) >= 1005.0


def test_a_pre_encoded_body_is_sent_as_is_with_the_json_content_type() -> None:
    handler, seen = answers(httpx.Response(201, json={}))
    http, _ = make(handler, Recorder())
    body = b'{"jsonBody":[{"email":"a@x.org"}]}'
    http.call(POST, pacer=http.pacer("b", 0.0), content=body)
    assert seen[0].content == body
    assert seen[0].headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        http.call(POST, pacer=http.pacer("b", 0.0), content=body, json={"a": 1})
    assert len(seen) == 1


def test_a_body_in_parts_is_sent_whole_and_again_on_a_retry() -> None:
    handler, seen = answers(httpx.Response(429, headers={"x-rl-reset": "0"}), httpx.Response(201))
    http, _ = make(handler, Recorder())
    rows = bytearray(b'[{"email":"a@x.org"}' + b',{"email":"b@x.org"}' * 20_000 + b"]")
    http.call(POST, pacer=http.pacer("b", 0.0), content=(b'{"jsonBody":', rows, b"}"))
    assert len(seen) == 2
    for request in seen:
        assert request.headers["content-length"] == str(len(rows) + 13)
        assert json.loads(request.read())["jsonBody"][-1] == {"email": "b@x.org"}


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 05 May 2026 10:00:07 GMT", 1777975207.0),
        ("Tue, 05 May 2026 10:00:07 -0000", 1777975207.0),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_server_time_reads_the_date_header(date: str | None, expected: float | None) -> None:
    headers = {} if date is None else {"date": date}
    assert server_time(httpx.Response(200, headers=headers)) == expected


def test_answers_that_accept_the_key_are_counted_under_its_fingerprint() -> None:
    """What ``service.auth_pause`` reads to tell a probe the API took the key again: a 2xx
    or another 4xx counts, a 401, a 5xx or a dropped connection does not."""
    recorder = Recorder()
    handler, _ = answers(
        httpx.Response(401, json={"message": "Key not found"}),
        httpx.Response(503),
        httpx.ConnectError("refused"),
        httpx.Response(200, json={}),
        httpx.Response(404, json={"message": "no such thing"}),
    )
    http, _ = make(handler, recorder, ClientPolicy(max_attempts=3, backoff_base=0.0))
    http.acceptance = acceptance = Acceptance()
    assert http.fingerprint == fingerprint(SECRET)
    with pytest.raises(ApiAuthError):
        call(http)
    call(http)  # a 503 and a dropped connection, then a 200
    assert acceptance.count("brevo", fingerprint(SECRET)) == 1
    with pytest.raises(ApiNotFound):
        call(http)
    assert acceptance.count("brevo", fingerprint(SECRET)) == 2
