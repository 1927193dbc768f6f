"""Structured logs: one JSON object per line, job and filter context, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from service.logs import REDACTED, Redactor, configure_logging, log_context

SECRET = 'api-"key\\with-quotes-1234'


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging("DEBUG", [SECRET, "plain-secret-value"], stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line(stream: io.StringIO) -> None:
    """Even a message with newlines stays on one line."""
    logging.getLogger("x").info("two\nlines %s", "here", extra={"count": 3})
    (entry,) = lines(stream)
    assert entry["message"] == "two\nlines here" and entry["count"] == 3
    assert entry["level"] == "INFO" and entry["logger"] == "x" and "ts" in entry


def test_job_and_filter_context(stream: io.StringIO) -> None:
    """Lines inside log_context carry the ids; nested contexts add up; outside they are gone."""
    log = logging.getLogger("sync")
    with log_context(job_id=41, filter_id=7):
        log.info("start")
        with log_context(step="fetch"):
            log.info("fetching")
    log.info("after")
    start, fetching, after = lines(stream)
    assert (start["job_id"], start["filter_id"]) == (41, 7)
    assert fetching["step"] == "fetch" and fetching["job_id"] == 41
    assert "job_id" not in after


def test_context_does_not_leak_between_threads(stream: io.StringIO) -> None:
    """Two jobs in two threads each log their own ids."""
    log = logging.getLogger("sync")
    barrier = threading.Barrier(2)

    def job(job_id: int) -> None:
        with log_context(job_id=job_id):
            barrier.wait()
            log.info("working")

    threads = [threading.Thread(target=job, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(entry["job_id"] for entry in lines(stream)) == [1, 2]  # type: ignore[type-var]


def test_configured_secrets_are_redacted_everywhere(stream: io.StringIO) -> None:
    """In the message, in extra fields and in a traceback, quotes and backslashes included."""
    log = logging.getLogger("leaky")
    log.info("calling with %s", SECRET, extra={"header": f"api-key: {SECRET}"})
    try:
        raise ValueError("bad key plain-secret-value")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert SECRET not in text and json.dumps(SECRET)[1:-1] not in text
    assert "plain-secret-value" not in text
    assert text.count(REDACTED) >= 3


def test_session_tokens_and_credentials_are_redacted(stream: io.StringIO) -> None:
    """Tokens are recognised by shape; Authorization values and URL credentials by context."""
    log = logging.getLogger("web")
    token = "pbs_" + "A1b2-C3d4_" * 4
    log.info("GET /api/jobs?before_id=%s", token)
    log.info("headers: Authorization: Bearer some-opaque-value")
    log.info("GET https://api.example.com/v1/filters?api_token=abc123&x=1")
    text = stream.getvalue()
    for leaked in (token, "some-opaque-value", "abc123"):
        assert leaked not in text
    assert "x=1" in text


def test_redactor_prefers_the_longest_secret() -> None:
    """A secret that contains another is replaced whole."""
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.redact("key=abcdefgh;") == f"key={REDACTED};"


def test_library_loggers_go_through_the_same_handler(stream: io.StringIO) -> None:
    """uvicorn and huey lines are JSON and redacted too."""
    logging.getLogger("uvicorn.access").info('"GET /x?token=%s HTTP/1.1" 200', "plain-secret-value")
    logging.getLogger("huey").info("task done")
    text = stream.getvalue()
    assert "plain-secret-value" not in text
    assert [entry["logger"] for entry in lines(stream)] == ["uvicorn.access", "huey"]
