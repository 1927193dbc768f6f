"""scripts/bench_ingest.py: its requests are real, distinct v2 deliveries, its answer parser
reads uvicorn's answers, and a very short run ends with the inbox equal to the 200s."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from service.webhooks import classify, parse_body

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_ingest.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ingest", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script()


def test_requests_are_distinct_pending_v2_person_changes(bench: ModuleType) -> None:
    job = bench.Job(
        phase="t",
        port=8000,
        mode="closed",
        connections=1,
        start=0.0,
        duration=1.0,
        rate=0.0,
        offset=0.0,
        authorization="Basic eDp5",
        prefix="t.0",
    )
    make = bench.request_maker(job)
    keys = set()
    for _ in range(3):
        request = make()
        head, _, body = request.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /webhooks/pipedrive HTTP/1.1\r\n")
        assert b"\r\nContent-Type: application/json" in head
        assert f"Content-Length: {len(body)}".encode() in head
        delivery = classify(*parse_body(body))
        assert (delivery.version, delivery.object, delivery.action) == ("2", "person", "change")
        assert delivery.status == "pending" and delivery.entity_id is not None
        keys.add(delivery.event_key)
    assert len(keys) == 3


def test_parse_answer_waits_for_the_whole_body(bench: ModuleType) -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 21\r\ncontent-type: application/json\r\n\r\n"
    body = b'{"status":"received"}'
    assert bench.parse_answer(bytearray(answer + body[:5])) is None
    status, parsed, used, close = bench.parse_answer(bytearray(answer + body + b"HTTP/1.1"))
    assert (status, parsed, used, close) == (200, body, len(answer + body), False)
    assert bench.outcome_of(parsed) == "received"


@pytest.mark.integration
def test_a_short_run_stores_every_acknowledged_delivery(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--duration", "0.5", "--generators", "1"]
    command += ["--connections", "2", "--dir", str(tmp_path), "--json", str(report_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    report = json.loads(report_path.read_text())
    assert report["acknowledged"] > 0
    assert sum(report["inbox_rows"].values()) == report["acknowledged"]
    assert [p["name"] for p in report["phases"]] == [
        "warm-up bare",
        "max bare",
        "warm-up service",
        "max service",
        "open service",
    ]
    assert "PASS  inbox rows" in run.stdout
