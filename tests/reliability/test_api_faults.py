"""Issue 6, "API faults" (reliability matrix R10-R13): the real service against APIs that
fail.

Every test runs the real ``pbsync web`` and ``pbsync worker`` against the session's fakes,
with a v2 webhook registered in the fake Pipedrive, so each change made through its control
API reaches the service as a real delivery. Expected lists come from the fake Pipedrive's
own evaluation of each filter; calls are counted by the service itself (``api_calls``:
every attempt, answered or not) and the faults by the fakes (``/_sandbox/faults``).

About read timeouts: a "timeout" fault holds the answer for ``HANG_SECONDS`` and then gives
it. The service runs with a 1 s read timeout (``API_READ_TIMEOUT_SECONDS``), so such a
fault is a real read timeout on the client's side; the test prints how many calls ended
without an answer.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from sandbox.brevo.model import valid_email
from sandbox.faults import FAULT_KINDS
from sandbox.pipedrive.events import ChangeEvent
from service.clients.http import ClientPolicy
from tests.conftest import json_lines
from tests.fake_control import Brevo, Pipedrive
from tests.fakes import RunningFake
from tests.integration.conftest import Service, StartService
from tests.integration.test_incremental_load import register_webhook, start, status, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.long]

ENV = {
    # One window takes the whole burst (three waves 0.7 s apart), in both runs alike: the
    # calls then depend on the faults, not on where windows happen to cut the burst.
    "SYNC_COALESCE_SECONDS": "4",
    "JOB_STALE_SECONDS": "3",
    "API_READ_TIMEOUT_SECONDS": "1",  # see the module docstring
}
POLICY = ClientPolicy()  # the clients' policy as the service runs them
FAULT_SHARE = 0.2
# The fault plan tries its rules one after the other: each fires with this probability,
# so that one of the four fires on FAULT_SHARE of the requests.
PER_KIND = 1 - (1 - FAULT_SHARE) ** (1 / len(FAULT_KINDS))
HANG_SECONDS = 2.0
# The fakes' draws start from this seed (whatever ran before); PBSYNC_FAULT_SEED explores.
FAULT_SEED = int(os.environ.get("PBSYNC_FAULT_SEED", "2"))
# Each fake's 429 asks for this wait (Pipedrive: its 2 s window; Brevo: its 1 s window,
# the hourly one too with the time scale below).
ASKED_WAIT = {"pipedrive": 2.0, "brevo": 1.0}
BREVO_TIME_SCALE = 3600
TIERS = ("FaultA", "FaultB", "FaultC")
MEMBERS = 24  # more than the 20 sent one by one: a first sync imports
SETTLE_SECONDS = 120.0
JOB_SECONDS = 90.0
MAX_CALL_RATIO = 1.5


# --- the fakes -----------------------------------------------------------------------------


# One fault of each kind, each on a path the scenario is sure to call (the first calls of
# it), so every kind is met on both APIs however the random draws fall.
SURE_FAULTS = {
    "pipedrive": [
        {"kind": "429", "method": "GET", "path": "/v1/filters"},
        {"kind": "timeout", "method": "GET", "path": "/v1/filters/*"},
        {"kind": "500", "method": "GET", "path": "/api/v2/persons"},
        {"kind": "drop", "method": "GET", "path": "/api/v2/persons"},
    ],
    "brevo": [
        {"kind": "429", "method": "GET", "path": "/v3/contacts/lists/*"},
        {"kind": "500", "method": "POST", "path": "/v3/contacts/lists/*/contacts/remove"},
        {"kind": "timeout", "method": "PUT", "path": "/v3/contacts/*"},
        {"kind": "drop", "method": "POST", "path": "/v3/contacts"},
    ],
}


def mixed_faults(fake: RunningFake) -> None:
    """Fail FAULT_SHARE of the fake's API requests: 429s, 500s, read timeouts (answers held
    for HANG_SECONDS) and dropped connections, in equal parts; and one of each kind for
    sure (``SURE_FAULTS``). The draws start from ``FAULT_SEED``."""
    sure = [{**rule, "count": 1} for rule in SURE_FAULTS[fake.name]]
    faults = sure + [{"kind": kind, "probability": PER_KIND} for kind in FAULT_KINDS]
    plan = {"faults": faults, "latency": [], "hang_seconds": HANG_SECONDS, "seed": FAULT_SEED}
    fake.control("PUT", "/_sandbox/faults", json=plan)


def injected(fake: RunningFake) -> dict[str, int]:
    """The faults the fake injected since its plan was set, by kind."""
    counts: dict[str, int] = fake.control("GET", "/_sandbox/faults").json()["injected"]
    return counts


# --- the scenario --------------------------------------------------------------------------


@dataclass
class Figures:
    """What one run of the scenario cost and met."""

    calls: dict[str, int]  # API calls the service made, by API (every attempt)
    unanswered: int  # of them, calls that got no answer (timeouts, dropped connections)
    retries: list[dict[str, Any]]  # the "api call retried" log lines
    reruns: int  # full resyncs the admin had to start again
    failed_incremental: int
    injected: dict[str, dict[str, int]]
    seconds: float

    @property
    def total(self) -> int:
        """Calls to both APIs."""
        return sum(self.calls.values())


def listed_emails(pipedrive: Pipedrive, filter_id: int) -> list[str]:
    """The emails the filter's list must hold: the fake's evaluation, as Brevo takes them."""
    return [e for e in pipedrive.filter_emails(filter_id) if valid_email(e)]


def refresh(service: Service, attempts: int = 4) -> None:
    """``POST /api/filters/refresh`` until it succeeds (a 502 when Pipedrive kept failing)."""
    for _ in range(attempts):
        response = service.request("POST", "/api/filters/refresh")
        if response.status_code == 200:
            return
        assert response.status_code == 502, response.text
    raise AssertionError(f"the refresh failed {attempts} times\n{service.logs()}")


def full_sync(service: Service, filter_id: int, attempts: int = 4) -> int:
    """Run a full resync of the filter as the admin does, again a little later after a
    failure (as the admin, or the catch-up resync, would); how many runs failed.

    "A little later": a request whose answer was lost may still be running at the API (a
    held answer runs after HANG_SECONDS), and no client can see what it will have made.
    A job may wait long on Brevo's hourly budget for ``/processes``: once an injected 429
    spent it, the client paces those calls as the real budget requires (40 s apart).
    """
    for failed in range(attempts):
        job = service.wait_job(service.start_sync(filter_id)["id"], JOB_SECONDS)
        if job["status"] == "completed":
            return failed
        print(f"  full resync of {filter_id} failed: {job['error_message']}")
        time.sleep(HANG_SECONDS)
    raise AssertionError(f"{attempts} full resyncs of {filter_id} failed\n{service.logs()}")


def quiet(service: Service, pipedrive: Pipedrive, events: int) -> bool:
    """Every event acknowledged by the service and applied: nothing pending or running."""
    if pipedrive.delivered_events() < events:
        return False
    found = status(service)
    return bool(
        found["inbox"]["pending"] == 0
        and found["sync"]["changes_waiting"] == 0
        and found["jobs"]["processing"] == 0
    )


def make_changes(pipedrive: Pipedrive, persons: dict[str, list[int]]) -> None:
    """A burst of person changes in three waves: joins, leaves, moves between filters,
    renames, email changes, an address Brevo refuses, and deletions."""
    for wave in range(3):
        for index, tier in enumerate(TIERS):
            ids = persons[tier]
            other = TIERS[(index + 1) % len(TIERS)]
            base = 3 * wave
            domain = f"{tier.lower()}.example.com"
            pipedrive.person("New", f"W{wave}", f"new{wave}@{domain}", tier=tier)
            pipedrive.set_tier(ids[base], None)  # leaves
            pipedrive.set_tier(ids[base + 1], other)  # moves to the next filter
            pipedrive.update_person(ids[base + 2], first_name=f"Renamed{wave}")
            pipedrive.update_person(ids[12 + wave], emails=[f"changed{wave}@{domain}"])
            if wave == 1:
                pipedrive.update_person(ids[20], emails=["not an address"])
            if wave == 2:
                pipedrive.delete_person(ids[21])
        time.sleep(0.7)


def take_fault_violations(contract_ledger: Any) -> int:
    """Take the contract violations of requests the fault plan answered (it answers 429
    and 500 without reading the body, so the recorded request has none); fail on any
    other. How many were taken."""
    violations = contract_ledger.take_violations()
    other = [v for v in violations if "Missing required request body" not in str(v)]
    assert other == []
    return len(violations)


def two_synced_filters(
    start_service: StartService, pipedrive: Pipedrive, name: str, tiers: Sequence[str]
) -> tuple[Service, dict[str, int]]:
    """A filter of three persons per tier, the service started with the webhook registered,
    and a full resync of each filter completed; the service and the filters by tier."""
    filters = {tier: pipedrive.people_filter(f"{name} {tier}", tier) for tier in tiers}
    for tier in tiers:
        for i in range(3):
            pipedrive.person(f"P{i}", tier, f"p{i}@{tier.lower()}.example.com", tier=tier)
    service = start(start_service, **ENV)
    register_webhook(pipedrive, service)
    refresh(service)
    for filter_id in filters.values():
        assert full_sync(service, filter_id, attempts=1) == 0
    return service, filters


def run_scenario(
    start_service: StartService,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
    published: list[ChangeEvent],
    faults: bool,
) -> Figures:
    """Link three filters (refresh, a full resync of each), make a burst of person changes
    delivered as webhooks, settle, and check the lists; with ``faults``, both fakes fail a
    fifth of the service's requests from the first call to the last."""
    pipedrive_fake.reset()
    brevo_fake.reset()
    brevo_fake.control("PUT", "/_sandbox/settings", json={"time_scale": BREVO_TIME_SCALE})
    pipedrive, brevo = Pipedrive(pipedrive_fake), Brevo(brevo_fake)
    filters = {tier: pipedrive.people_filter(f"Faults {tier}", tier) for tier in TIERS}
    persons = {
        tier: [
            pipedrive.person(f"P{i}", tier, f"p{i}@{tier.lower()}.example.com", tier=tier)
            for i in range(MEMBERS)
        ]
        for tier in TIERS
    }
    began = time.monotonic()
    service = start(start_service, **ENV)
    register_webhook(pipedrive, service)  # the test's own call: not faulted
    if faults:
        mixed_faults(pipedrive_fake)
        mixed_faults(brevo_fake)
    refresh(service)
    reruns = sum(full_sync(service, filter_id) for filter_id in filters.values())
    published.clear()
    make_changes(pipedrive, persons)
    events = len(published)  # one delivery each, to the one webhook
    wait_until(
        service,
        f"{events} events applied",
        lambda: quiet(service, pipedrive, events),
        SETTLE_SECONDS,
    )
    seconds = time.monotonic() - began
    faulted = {"pipedrive": injected(pipedrive_fake), "brevo": injected(brevo_fake)}
    pipedrive_fake.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})
    brevo_fake.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})

    lists = {tier: service.filters()[filters[tier]]["brevo_list_id"] for tier in TIERS}
    for tier in TIERS:
        assert brevo.emails(lists[tier]) == listed_emails(pipedrive, filters[tier]), tier
        for wave in range(3):  # the renames reached Brevo too
            contact = brevo.contact(f"p{3 * wave + 2}@{tier.lower()}.example.com")
            assert contact is not None
            assert contact["attributes"]["FIRSTNAME"] == f"Renamed{wave}", contact
    assert_no_duplicates(brevo_fake, filters.values())

    calls: dict[str, int] = Counter()
    unanswered = 0
    for api, status_code, count in service.query(
        "SELECT api, status, SUM(calls) FROM api_calls GROUP BY api, status"
    ):
        calls[api] += int(count)
        unanswered += int(count) if status_code == 0 else 0
    failed_incremental = int(
        service.query(
            "SELECT COUNT(*) FROM sync_jobs WHERE kind = 'incremental' AND status = 'failed'"
        )[0][0]
    )
    retries = [
        entry
        for role in ("web", "worker")
        for entry in json_lines(service.tmp_path / f"{role}.log")
        if entry.get("message") == "api call retried"
    ]
    service.stop()
    return Figures(dict(calls), unanswered, retries, reruns, failed_incremental, faulted, seconds)


def assert_no_duplicates(brevo_fake: RunningFake, filter_ids: Any) -> None:
    """No two Brevo contacts share an address (in any case), and each filter has one list."""
    store = brevo_fake.app.state.fake.store
    with store.lock:
        emails = [c.email.lower() for c in store.contacts.values() if c.email]
        names = [contact_list.name for contact_list in store.lists.values()]
    doubled = [email for email, n in Counter(emails).items() if n > 1]
    assert doubled == []
    for filter_id in filter_ids:
        assert sum(name.endswith(f"(Pipedrive #{filter_id})") for name in names) == 1, names


def retry_bound(entry: dict[str, Any]) -> float:
    """The longest wait the policy allows before retrying after ``entry``'s failure."""
    if entry["reason"] == "status 429":
        return POLICY.max_wait
    attempt = int(entry["attempt"])
    return min(POLICY.backoff_cap, POLICY.backoff_base * 2.0 ** (attempt - 1))


def test_R10_R11_mixed_faults_converge_without_duplicates_within_the_retry_bounds(
    start_service: StartService,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
    published: list[ChangeEvent],
    contract_ledger: Any,
    figures: Callable[[str], None],
) -> None:
    """The same scenario, fault-free and then with a fifth of the requests to both APIs
    failing (429, 500, held answers, dropped connections): the lists converge on the
    filters, no contact or list is duplicated, no call is tried more often than the
    policy's attempts, a 429 is retried no sooner than it asked and any other failure
    after a capped full-jitter wait, and the faults cost at most half as many calls again."""
    clean = run_scenario(start_service, pipedrive_fake, brevo_fake, published, faults=False)
    assert take_fault_violations(contract_ledger) == 0
    faulty = run_scenario(start_service, pipedrive_fake, brevo_fake, published, faults=True)
    take_fault_violations(contract_ledger)

    figures(f"fault-free: {clean.total} calls {clean.calls}, {clean.seconds:.1f} s")
    figures(
        f"with faults: {faulty.total} calls {faulty.calls}, {faulty.seconds:.1f} s, "
        f"ratio {faulty.total / clean.total:.2f}; injected {faulty.injected}; "
        f"{len(faulty.retries)} retries; {faulty.unanswered} calls without an answer; "
        f"{faulty.reruns} full resyncs run again; "
        f"{faulty.failed_incremental} incremental jobs failed (and were retried)"
    )
    assert clean.retries == [] and clean.reruns == 0 and clean.failed_incremental == 0
    for api in ("pipedrive", "brevo"):
        kinds = faulty.injected[api]
        assert all(kinds.get(kind, 0) > 0 for kind in FAULT_KINDS), (api, kinds)
    assert faulty.total <= MAX_CALL_RATIO * clean.total

    # R11: the attempt limit holds, and every wait is within the capped full-jitter bound.
    assert faulty.retries, "no call was retried"
    assert max(entry["attempt"] for entry in faulty.retries) < POLICY.max_attempts
    for entry in faulty.retries:
        assert 0 <= entry["wait_seconds"] <= retry_bound(entry) + 0.001, entry
    # R10: a 429 is retried no sooner than the fake's rate-limit headers asked.
    rate_limited = [e for e in faulty.retries if e["reason"] == "status 429"]
    assert {e["api"] for e in rate_limited} == {"pipedrive", "brevo"}
    for entry in rate_limited:
        assert entry["wait_seconds"] >= ASKED_WAIT[entry["api"]], entry


# --- a credential the API refuses (R12) ----------------------------------------------------

SERVICE_KEY = "xkeysib-integration-key"  # the key start_service gives the service
ROTATED_KEY = "xkeysib-rotated-key"
REFUSED_WINDOW_SECONDS = 10.0


def brevo_calls(brevo: Brevo) -> int:
    """Calls the fake Brevo answered since the reset, whatever their status."""
    return sum(brevo.calls().values())


def test_R12_a_refused_brevo_key_fails_the_first_job_and_later_jobs_do_not_hammer_brevo(
    start_service: StartService,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
    figures: Callable[[str], None],
) -> None:
    """Brevo revokes the service's key. The first job fails within seconds, saying which
    setting to fix; for the next REFUSED_WINDOW_SECONDS, with deliveries arriving for both
    filters and the admin asking for resyncs, Brevo sees at most one more call per filter
    (jobs that were running when the first refusal came), and the status page shows the
    pause. A worker started with the right key syncs everything that waited."""
    pipedrive, brevo = Pipedrive(pipedrive_fake), Brevo(brevo_fake)
    tiers = TIERS[:2]
    service, filters = two_synced_filters(start_service, pipedrive, "Refused", tiers)

    brevo_fake.control("PUT", "/_sandbox/settings", json={"token": ROTATED_KEY})
    before = brevo_calls(brevo)
    changed_at = time.monotonic()
    pipedrive.person("First", tiers[0], f"first@{tiers[0].lower()}.example.com", tier=tiers[0])
    failed = wait_until(
        service,
        "the first job failed",
        lambda: [j for j in jobs(service) if j["status"] == "failed"],
        10.0,
    )
    failed_after = time.monotonic() - changed_at
    message = failed[0]["error_message"]
    assert message.startswith("Brevo refused BREVO_API_KEY (401): brevo "), message
    assert "Set BREVO_API_KEY to a valid credential" in message
    assert SERVICE_KEY not in message

    # Deliveries keep coming for both filters, and the admin asks for resyncs.
    deadline = time.monotonic() + REFUSED_WINDOW_SECONDS
    wave = 0
    while time.monotonic() < deadline:
        for tier in tiers:
            domain = f"{tier.lower()}.example.com"
            pipedrive.person("Later", f"W{wave}", f"later{wave}@{domain}", tier=tier)
        for filter_id in filters.values():
            response = service.request("POST", f"/api/filters/{filter_id}/sync")
            assert response.status_code in (202, 409), response.text
        wave += 1
        time.sleep(1.0)
    refused_calls = brevo_calls(brevo) - before
    pause = status(service)["apis"]["brevo"]["auth_pause"]
    figures(
        f"first job failed {failed_after:.1f} s after the change; Brevo calls in the "
        f"{REFUSED_WINDOW_SECONDS:.0f} s after the refusal, with {wave} waves of deliveries "
        f"and resync requests: {refused_calls}"
    )
    assert failed_after < 10.0
    assert 1 <= refused_calls <= len(filters)
    assert pause is not None and pause["active"] is True, pause
    assert (pause["status"], pause["variable"]) == (401, "BREVO_API_KEY")
    assert SERVICE_KEY not in str(status(service))
    waiting = [j for j in jobs(service) if j["status"] == "processing"]
    assert waiting, "no job waits for the key"

    # The key is fixed: a worker started with it runs what waited, and the lists converge.
    service.stop_worker()
    service.env["BREVO_API_KEY"] = ROTATED_KEY
    service.start_worker()
    recovered = time.monotonic()
    wait_until(
        service,
        "the lists caught up",
        lambda: (
            all(
                brevo.emails(service.filters()[f]["brevo_list_id"]) == listed_emails(pipedrive, f)
                for f in filters.values()
            )
            and status(service)["jobs"]["processing"] == 0
        ),
        30.0,
    )
    figures(f"lists caught up {time.monotonic() - recovered:.1f} s after the new worker started")
    assert status(service)["apis"]["brevo"]["auth_pause"] is None


def jobs(service: Service) -> list[dict[str, Any]]:
    """The service's jobs, newest first (``GET /api/jobs``)."""
    response = service.request("GET", "/api/jobs", params={"limit": 200})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["jobs"]
    return found


# --- a sustained outage (R13) ----------------------------------------------------------------

OUTAGE_SECONDS = 15.0


def test_R13_a_sustained_brevo_outage_backs_off_loses_nothing_and_recovers(
    start_service: StartService,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
    contract_ledger: Any,
    figures: Callable[[str], None],
) -> None:
    """Brevo answers 500 to everything for OUTAGE_SECONDS while changes arrive: each call
    gives up after the policy's attempts, each filter's failed incremental jobs are tried
    again further and further apart, and once Brevo is back the lists catch up with every
    change."""
    pipedrive, brevo = Pipedrive(pipedrive_fake), Brevo(brevo_fake)
    tiers = TIERS[:2]
    service, filters = two_synced_filters(start_service, pipedrive, "Outage", tiers)
    first_outage_job = max(j["id"] for j in jobs(service))

    outage = {"faults": [{"kind": "500", "probability": 1.0}], "latency": []}
    brevo_fake.control("PUT", "/_sandbox/faults", json=outage)
    began = time.monotonic()
    for wave in range(2):
        for tier in tiers:
            domain = f"{tier.lower()}.example.com"
            pipedrive.person("During", f"W{wave}", f"during{wave}@{domain}", tier=tier)
        time.sleep(OUTAGE_SECONDS / 2)
    brevo_fake.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})
    take_fault_violations(contract_ledger)
    back = time.monotonic()
    wait_until(
        service,
        "the lists caught up",
        lambda: all(
            brevo.emails(service.filters()[f]["brevo_list_id"]) == listed_emails(pipedrive, f)
            for f in filters.values()
        ),
        60.0,
    )
    caught_up = time.monotonic() - back

    outage_jobs = [j for j in jobs(service) if j["id"] > first_outage_job]
    failed = [j for j in outage_jobs if j["status"] == "failed"]
    retries = [
        entry
        for entry in json_lines(service.tmp_path / "worker.log")
        if entry.get("message") == "api call retried" and entry.get("api") == "brevo"
    ]
    figures(
        f"{len(failed)} incremental jobs failed during the {OUTAGE_SECONDS:.0f} s outage "
        f"({time.monotonic() - began:.0f} s in all); {len(retries)} Brevo retries; the lists "
        f"caught up {caught_up:.1f} s after Brevo came back"
    )
    assert failed, "no job met the outage"
    for job in failed:
        assert job["kind"] == "incremental", job
        assert "answered 500" in job["error_message"], job
    # Each call gives up after the policy's attempts, its waits within the capped bound.
    assert max(entry["attempt"] for entry in retries) == POLICY.max_attempts - 1
    for entry in retries:
        assert 0 <= entry["wait_seconds"] <= retry_bound(entry) + 0.001, entry
    # A filter's failed jobs are tried again further and further apart: JOB_STALE_SECONDS
    # after the first failure, twice that after the second... (the drain's retry_due).
    stale = int(ENV["JOB_STALE_SECONDS"])
    for filter_id in filters.values():
        own = sorted((j for j in outage_jobs if j["filter_id"] == filter_id), key=lambda j: j["id"])
        assert own and own[-1]["status"] == "completed", own
        gaps = [
            iso_seconds(later["created_at"]) - iso_seconds(earlier["completed_at"])
            for earlier, later in zip(own, own[1:], strict=False)
            if earlier["status"] == "failed"
        ]
        figures(f"filter {filter_id}: seconds between a failed job and the next: {gaps}")
        for k, gap in enumerate(gaps):
            assert gap >= stale * 2**k - 1, (filter_id, gaps)  # timestamps are whole seconds


def iso_seconds(moment: str) -> int:
    """Unix seconds of an ISO 8601 UTC time as the API shows it."""
    return int(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp())
