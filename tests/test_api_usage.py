"""API usage kept in the database: counters, figures and pacing shared across processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.api_usage import DatabaseUsage, calls_since, rate_figures
from service.clients.usage import CallKey, MemoryUsage, Pacer, RateFigures
from tests.fakes import RunningFake


def test_calls_are_counted_per_operation_status_and_hour(clean_db: Path) -> None:
    usage = DatabaseUsage()
    key = CallKey("brevo", "GET", "/contacts/lists/{listId}", 200)
    usage.record_call(key, 7200.0)
    usage.record_call(key, 7300.0)
    usage.record_call(CallKey("brevo", "GET", "/contacts/lists/{listId}", 429), 7300.0)
    usage.record_call(key, 3599.0)  # an hour earlier
    counts = {(c.status, c.calls) for c in calls_since(7200.0)}
    assert counts == {(200, 2), (429, 1)}
    assert sum(c.calls for c in calls_since(0.0)) == 4


def test_the_last_figures_of_each_api_are_kept(clean_db: Path) -> None:
    usage = DatabaseUsage()
    usage.record_figures("pipedrive", RateFigures(40, 39, 2.0, 30000, 29990), 10.0)
    usage.record_figures("pipedrive", RateFigures(40, 38, 2.0, 30000, 29980), 11.0)
    usage.record_figures("brevo", RateFigures(10, 9, 1.0), 12.0)
    figures = rate_figures()
    assert figures["pipedrive"] == (RateFigures(40, 38, 2.0, 30000, 29980), 11.0)
    assert figures["brevo"][0].remaining == 9


def test_pacing_slots_follow_each_other_and_a_hold_pushes_them_back(clean_db: Path) -> None:
    for usage in (DatabaseUsage(), MemoryUsage()):
        bucket = f"b-{type(usage).__name__}"
        assert usage.reserve(bucket, 0.5, 100.0) == 100.0
        assert usage.reserve(bucket, 0.5, 100.0) == 100.5
        assert usage.reserve(bucket, 0.5, 200.0) == 200.0
        usage.hold(bucket, 300.0)
        usage.hold(bucket, 250.0)  # an earlier hold never shortens a later one
        assert usage.reserve(bucket, 0.5, 200.0) == 300.0


def test_a_burst_goes_at_once_after_a_quiet_spell_and_the_average_rate_holds(
    clean_db: Path,
) -> None:
    for usage in (DatabaseUsage(), MemoryUsage()):
        bucket = f"burst-{type(usage).__name__}"
        # Three at once (one plus a burst of two), then one every 10 s.
        slots = [usage.reserve(bucket, 10.0, 1000.0, burst=2) for _ in range(5)]
        assert slots == [1000.0, 1000.0, 1000.0, 1010.0, 1020.0]
        # After a quiet spell the allowance is back, but never more than the burst.
        later = [usage.reserve(bucket, 10.0, 2000.0, burst=2) for _ in range(4)]
        assert later == [2000.0, 2000.0, 2000.0, 2010.0]


def test_a_hold_keeps_back_even_a_burst() -> None:
    slept: list[float] = []
    pacer = Pacer(MemoryUsage(), "b", 10.0, now=lambda: 100.0, sleep=slept.append, burst=3)
    pacer.hold(30.0)
    pacer.wait()
    assert slept == [30.0]


def test_a_pacer_sleeps_until_its_slot() -> None:
    slept: list[float] = []
    pacer = Pacer(MemoryUsage(), "b", 0.25, now=lambda: 10.0, sleep=slept.append)
    for _ in range(3):
        pacer.wait()
    assert slept == [0.25, 0.5]


RESERVE = """
import json, sys
from pathlib import Path
from service.db import bind_database
from service.api_usage import DatabaseUsage
bind_database(Path(sys.argv[1]))
usage = DatabaseUsage()
print(json.dumps([usage.reserve("shared", 0.01, 0.0) for _ in range(40)]))
"""


def test_processes_sharing_the_database_never_share_a_slot(tmp_path: Path) -> None:
    database = tmp_path / "pacing.db"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RESERVE, str(database)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    slots: list[float] = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        slots.extend(json.loads(out))
    slots.sort()
    assert len(slots) == 120
    assert all(b - a >= 0.01 - 1e-9 for a, b in zip(slots, slots[1:], strict=False))


WORKER = """
import sys
from pathlib import Path
from service.config import Settings
from service.db import bind_database
from service.clients.factory import brevo_client
bind_database(Path(sys.argv[1]))
settings = Settings(brevo_base_url=sys.argv[2], brevo_api_key="key")
client = brevo_client(settings)
for _ in range(int(sys.argv[3])):
    client.list_folders()
"""


@pytest.mark.integration
def test_two_processes_together_stay_under_brevos_rate_and_the_web_sees_their_calls(
    clean_db: Path, brevo_fake: RunningFake
) -> None:
    brevo_fake.control("PUT", "/_sandbox/settings", json={"contacts_rate": 10})
    calls_each = 12
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(clean_db), brevo_fake.url + "/v3", str(calls_each)]
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.wait(60) == 0
    elapsed = time.monotonic() - started
    # 24 calls at 8 a second, shared: the first goes at once, the rest at 1/8 s intervals.
    assert elapsed >= (2 * calls_each - 1) / 8 - 0.1
    fake_calls = brevo_fake.control("GET", "/_sandbox/usage").json()["calls"]
    assert fake_calls["GET /contacts/folders"] == {"200": 2 * calls_each}
    # What the workers did is in the database, for the web process to show.
    counted = {(c.api, c.method, c.path, c.status): c.calls for c in calls_since(time.time() - 60)}
    assert counted == {("brevo", "GET", "/contacts/folders", 200): 2 * calls_each}
    figures, _seen = rate_figures()["brevo"]
    assert figures.limit == 10
