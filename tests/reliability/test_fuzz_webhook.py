"""Hypothesis fuzzing of ``POST /webhooks/pipedrive`` through the whole app.

Each case is one request: a method, an Authorization header (right, wrong or garbled), a
Content-Type, maybe a Content-Length of its own or a chunked body, and a body: arbitrary
bytes, or one of the real deliveries of ``specs/pipedrive/examples`` mutated (values of
the wrong type, missing or unknown fields, huge numbers, deep nesting, odd unicode: lone
surrogates escaped in the JSON or raw in the bytes, NUL, bidi, zero-width, BOM) and then
serialised, truncated or corrupted.

The status each request must get is worked out independently of the service, from the
order of checks of ``reference/reliability.md`` section 6: size, method, HTTP Basic,
Content-Type, then the body must be UTF-8 JSON (a leading BOM tolerated), an object,
nested at most 64 levels, without NaN or Infinity. Then: never a 5xx; a refused request
stores no inbox row; an accepted one stores exactly one row whose payload is the body's
text, or is a duplicate of a stored delivery with the same key.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.api.webhook import MAX_WEBHOOK_BODY_BYTES
from service.app import create_app
from service.auth_failures import WINDOW_SECONDS
from service.clock import ManualClock
from service.config import Settings
from service.webhooks import classify, parse_body
from tests.api.test_webhook import EXAMPLES, PASSWORD, PATH, USER, basic

CASES = 6_000
# With the admin API's fuzzing (tests/reliability/test_fuzz_admin_api.py, at least 4,800
# authenticated cases) this makes the 10,000 authenticated cases of issue 6.
AUTHENTICATED_CASES = 5_200
MAX_DEPTH = 64
ODD_CHARACTERS = [
    "\ud800",  # lone high surrogate: JSON may escape it, UTF-8 cannot encode it
    "\udfff",  # lone low surrogate
    "\x00",
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # byte order mark as a character
    "\u2028",  # line separator
    "\x7f",
    "\x85",
    "ä",
    "\U0001f600",
    "\U000e0001",  # language tag, a format character outside the BMP
    '"',
    "\\",
]
WHITESPACE = [b" ", b"\n", b"\r\n", b"\t \n ", b""]
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
EXAMPLE_BODIES = [json.loads(path.read_bytes()) for path in sorted(EXAMPLES.glob("*.json"))]


# --- what a request is, and what it must get ----------------------------------------------


@dataclass(frozen=True)
class Fuzzed:
    """One request of the fuzzing."""

    method: str
    authorization: str | None
    authorized: bool
    content_type: str | None
    content_length: str | None
    chunked: bool
    body: bytes

    def __repr__(self) -> str:
        body = repr(self.body[:300]) + (
            f"... ({len(self.body)} bytes)" if len(self.body) > 300 else ""
        )
        return (
            f"Fuzzed({self.method} auth={self.authorization!r} ({self.authorized}) "
            f"type={self.content_type!r} length={self.content_length!r} "
            f"chunked={self.chunked} body={body})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints a dataclass field by field (a 256 KiB body in full) otherwise.
        printer.text(repr(self))

    def with_fresh_ids(self, fresh: str) -> Fuzzed:
        """The request with the placeholder event id replaced by ``fresh``."""
        return replace(self, body=self.body.replace(FRESH.encode(), fresh.encode()))

    def headers(self) -> dict[bytes, bytes]:
        """The headers to send, as latin-1 bytes, which is how the server reads them (the
        client adds Content-Length or chunking itself unless the request sets its own)."""
        headers = {
            "Authorization": self.authorization,
            "Content-Type": self.content_type,
            "Content-Length": self.content_length,
        }
        return {
            name.encode(): value.encode("latin-1")
            for name, value in headers.items()
            if value is not None
        }


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def body_is_a_json_object(body: bytes) -> bool:
    """Whether RFC 8259 JSON (UTF-8, BOM tolerated) holding an object nested at most 64
    levels: the oracle, written apart from ``service.webhooks``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and json_depth(value) <= MAX_DEPTH


def expected_status(request: Fuzzed) -> int:
    """The status the request must get, in the order the checks are made."""
    declared = request.content_length
    if declared is None and not request.chunked:
        declared = str(len(request.body))  # the client announces the length it sends
    if declared is not None and not declared.isdigit():
        return 400
    if declared is not None and int(declared) > MAX_WEBHOOK_BODY_BYTES:
        return 413
    if request.method != "POST":
        return 405
    if not request.authorized:
        return 401
    media_type = (request.content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return 415
    # Only now is the body read: a chunked one is counted as it arrives.
    if len(request.body) > MAX_WEBHOOK_BODY_BYTES:
        return 413
    return 200 if body_is_a_json_object(request.body) else 400


# --- strategies ---------------------------------------------------------------------------


def mostly(common: Any, rare: list[Any], weight: int) -> st.SearchStrategy[Any]:
    """``common`` ``2 * weight`` times as often as each of ``rare``. Hypothesis favours the
    ends of a range, so the rare choices sit in the middle."""
    return st.sampled_from([common] * weight + rare + [common] * weight)


odd_text = st.text(st.one_of(st.sampled_from(ODD_CHARACTERS), st.characters()), max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(1, 4_000).map(lambda digits: int("9" * digits)),  # within CPython's limit
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
    st.sampled_from(["person", "deal", "organization", "filter", "activity", "change", "8"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(odd_text, children, max_size=3)
    ),
    max_leaves=6,
)


def containers(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every object and array in ``value``, outermost first."""
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in children:
        if isinstance(child, dict | list):
            yield from containers(child, (*path, key))


# Each example with the paths of its containers, found once: fewer draws per case.
EXAMPLES_WITH_PATHS = [(body, list(containers(body))) for body in EXAMPLE_BODIES]
FRESH = "fresh-event"  # replaced by a new id in each case (see Fuzzed.with_fresh_ids)


@st.composite
def mutated_example(draw: st.DrawFn) -> Any:
    """A real delivery with a few values replaced, removed or added, anywhere in it."""
    original, paths = draw(st.sampled_from(EXAMPLES_WITH_PATHS))
    body = copy.deepcopy(original)
    meta = body.get("meta")
    # Mostly a new event; sometimes one of a few ids, so that redeliveries happen. (v1 has
    # no event id: its events are told apart by their time among others.)
    event = draw(mostly(FRESH, ["e1", "e2", "as is"], 6))
    if event != "as is" and isinstance(meta, dict):
        meta["id" if "entity" in meta else "timestamp_micro"] = event
    for _ in range(draw(st.integers(0, 3))):
        parent = body
        for key in draw(st.sampled_from(paths)):
            if not isinstance(parent, dict | list) or key not in (
                parent if isinstance(parent, dict) else range(len(parent))
            ):
                break  # an earlier mutation removed or replaced it
            parent = parent[key]
        if not isinstance(parent, dict | list):
            continue
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not keys:
            if isinstance(parent, dict):
                parent[draw(odd_text)] = draw(json_values)
            else:
                parent.append(draw(json_values))
        elif action == "delete":
            del parent[draw(st.sampled_from(keys))]
        else:
            parent[draw(st.sampled_from(keys))] = draw(json_values)
    return body


def nested(depth: int, opening: str) -> str:
    """An object whose member nests arrays or objects to ``depth`` levels in all."""
    closing = "]" if opening == "[" else "}"
    inner = '{"a":' if opening == "{" else "["
    return '{"deep": ' + inner * (depth - 1) + "1" * (opening == "{") + closing * (depth - 1) + "}"


@st.composite
def json_text(draw: st.DrawFn) -> str:
    """JSON, or nearly: a value, or a body too deep, with a huge number, or with NaN."""
    kind = draw(mostly("ascii", ["utf-8"] * 4 + ["raw-surrogates", "deep", "huge", "nan"], 3))
    if kind == "deep":
        depth = draw(
            st.one_of(st.sampled_from([MAX_DEPTH, MAX_DEPTH + 1, 1_000]), st.integers(2, 1_200))
        )
        return nested(depth, draw(st.sampled_from("[{")))
    if kind == "huge":
        return '{"meta": {"id": 1}, "n": ' + "7" * draw(st.integers(4_290, 5_000)) + "}"
    if kind == "nan":
        return '{"meta": {}, "x": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])) + "}"
    value = draw(mutated_example() if draw(mostly(True, [False], 1)) else json_values)
    text = json.dumps(value, ensure_ascii=kind == "ascii")
    if kind == "utf-8":
        # Characters as UTF-8, but lone surrogates as escapes (UTF-8 has no form for them).
        text = LONE_SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", text)
    # "raw-surrogates": written out anyway, they make the bytes invalid UTF-8 (400).
    return text


@st.composite
def json_bytes(draw: st.DrawFn) -> bytes:
    """The bytes of a (near-)JSON body, sometimes corrupted."""
    data = draw(json_text()).encode("utf-8", "surrogatepass")
    corruption = draw(mostly(None, ["bom", "bom", "spaces", "truncate", "byte"], 6))
    if corruption == "spaces":  # JSON allows them around the value; stored all the same
        data = draw(st.sampled_from(WHITESPACE)) + data + draw(st.sampled_from(WHITESPACE))
    elif corruption == "bom":
        data = b"\xef\xbb\xbf" + data
    elif corruption == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif corruption == "byte":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at:]
    return data


# (header, whether it carries the right credentials); the password holds ":" and "Ü".
AUTHORIZATIONS = [
    (basic(USER, PASSWORD), True),
    ("basic " + basic(USER, PASSWORD).split(" ", 1)[1], True),  # the scheme is case-blind
    (basic(USER, "wrong"), False),
    (basic("someone", PASSWORD), False),
    (basic(USER, PASSWORD.split(":")[0]), False),
    (basic(USER, PASSWORD + ":"), False),
    ("Basic " + f"{USER}:{PASSWORD}".encode("latin-1").hex(), False),
    ("Basic !!!not-base64!!!", False),
    ("Basic", False),
    ("Bearer pbs_not-a-session-token-at-all", False),
    (None, False),
]
CONTENT_TYPES = [
    "application/json",
    "Application/JSON; charset=utf-8",
    "application/json;charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/jsonp",
    "",
    None,
]
# Only digits or plainly not: a header such as "²" (isdigit() in latin-1) never gets past
# a real server (h11 and httptools require ASCII digits), so it is left out here.
CONTENT_LENGTHS = ["abc", "-1", "1e3", "99999999999"]


# What a header value can hold: latin-1 without control characters.
header_text = st.text(st.characters(max_codepoint=255, exclude_categories=["Cc"]), max_size=40)


@st.composite
def requests_to_the_webhook(draw: st.DrawFn) -> Fuzzed:
    """A request of any kind, mostly authenticated POSTs of JSON."""
    method = draw(mostly("POST", ["GET", "PUT", "DELETE", "PATCH"], 14))
    if draw(mostly(True, [False], 5)):
        authorization, authorized = AUTHORIZATIONS[0]
    else:
        authorization, authorized = draw(
            st.one_of(
                st.sampled_from(AUTHORIZATIONS),
                header_text.map(lambda text: (text.strip() or None, False)),
            )
        )
    content_type = (
        "application/json"
        if draw(mostly(True, [False], 2))
        else draw(st.one_of(st.sampled_from(CONTENT_TYPES), header_text))
    )
    content_length = draw(mostly(None, CONTENT_LENGTHS, 30))
    # Hypothesis starts from the smallest draws: the common case is the smallest here.
    if draw(mostly(False, [True], 100)):
        body = b'{"pad": "' + b"a" * MAX_WEBHOOK_BODY_BYTES + b'"}'
    else:
        body = draw(json_bytes() if draw(mostly(True, [False], 8)) else st.binary(max_size=300))
    chunked = content_length is None and draw(mostly(False, [True], 5))
    return Fuzzed(method, authorization, authorized, content_type, content_length, chunked, body)


# --- the test -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the fuzzing ran into."""

    cases: int = 0
    authenticated: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_answer: dict[str, int] = field(default_factory=dict)

    def add(self, request: Fuzzed, status: int, answer: str | None) -> None:
        """Count one case."""
        self.cases += 1
        self.authenticated += request.authorized
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if answer is not None:
            self.by_answer[answer] = self.by_answer.get(answer, 0) + 1


class Inbox:
    """Reads the inbox rows stored after a given one, over its own connection."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.last_id = 0

    def new_rows(self) -> list[tuple[int, str, str, str | None, str]]:
        """The rows stored since the last call: id, key, status, reason, payload."""
        rows = self.connection.execute(
            "SELECT id, event_key, status, reason, payload FROM inbox WHERE id > ? ORDER BY id",
            (self.last_id,),
        ).fetchall()
        if rows:
            self.last_id = rows[-1][0]
        return rows

    def payload_of(self, event_key: str) -> str | None:
        """The payload stored under ``event_key``, if any."""
        row = self.connection.execute(
            "SELECT payload FROM inbox WHERE event_key = ?", (event_key,)
        ).fetchone()
        return row[0] if row else None


@dataclass
class Webhook:
    """The app under a TestClient, its clock and a reader of its inbox."""

    client: TestClient
    clock: ManualClock
    inbox: Inbox


@pytest.fixture
def webhook(settings: Settings, clock: ManualClock, clean_db: Path) -> Iterator[Webhook]:
    """The app with webhook credentials, its lifespan running for the whole fuzzing."""
    configured = replace(settings, webhook_user=USER, webhook_password=PASSWORD)
    app = create_app(configured, clock, enqueue_drain=lambda: None)
    inbox = Inbox(clean_db)
    with TestClient(app) as client, contextlib.closing(inbox.connection):
        yield Webhook(client, clock, inbox)


def send(client: TestClient, request: Fuzzed) -> Any:
    """Send the request as it is, the body chunked when asked."""
    content: bytes | Iterator[bytes] = request.body
    if request.chunked:
        content = iter([request.body[:100], request.body[100:]])
    return client.request(request.method, PATH, content=content, headers=request.headers())


def check_stored(webhook: Webhook, request: Fuzzed, status: int, answer: str | None) -> None:
    """Nothing stored for a refusal; one exact row, or a duplicate's key, for a 200."""
    rows = webhook.inbox.new_rows()
    if status != 200:
        assert rows == [], f"a refused request ({status}) stored {rows}"
        return
    text = request.body.decode("utf-8").removeprefix("\ufeff")
    key = classify(*parse_body(request.body)).event_key
    if answer == "duplicate":
        assert rows == []
        assert webhook.inbox.payload_of(key) is not None
        return
    assert len(rows) == 1, rows
    _, event_key, row_status, reason, payload = rows[0]
    assert payload == text
    assert event_key == key
    if answer == "received":
        assert (row_status, reason) == ("pending", None)
    else:
        assert answer == "ignored" and row_status == "ignored" and reason


TALLY = Tally()


@pytest.mark.long
@settings(
    max_examples=CASES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(request=requests_to_the_webhook())
def test_the_webhook_survives_fuzzing(webhook: Webhook, request: Fuzzed) -> None:
    """Never a 5xx; the status the checks' order calls for; only accepted deliveries are
    stored, exactly as sent."""
    # Every case starts with the address in good standing (S2 tests the throttle).
    webhook.clock.advance(WINDOW_SECONDS + 1)
    request = request.with_fresh_ids(f"evt-{webhook.clock.now()}")
    started = time.monotonic()
    response = send(webhook.client, request)
    elapsed = time.monotonic() - started
    assert response.status_code < 500, response.text
    assert response.status_code == expected_status(request), (response.text, request)
    assert elapsed < 10, f"the request took {elapsed:.1f} s"
    answer = response.json()["status"] if response.status_code == 200 else None
    if response.status_code == 405:
        assert response.headers["allow"] == "POST"
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Basic ")
    check_stored(webhook, request, response.status_code, answer)
    TALLY.add(request, response.status_code, answer)


def test_the_fuzzing_ran_its_cases(figures: Callable[[str], None]) -> None:
    """Hypothesis ran every case it was asked for (none were discarded), at least
    ``AUTHENTICATED_CASES`` of them with the right credentials. The figures go to the
    run's summary."""
    if TALLY.cases == 0:
        pytest.skip("the fuzzing test was not run")
    figures(f"webhook fuzzing: {TALLY}")
    assert TALLY.cases >= CASES
    assert TALLY.authenticated >= AUTHENTICATED_CASES
