"""workers/sync/runner.py: ``run_job`` claims a job, runs it under a heartbeat and records
how it ended; a second delivery of the same message changes nothing."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from service import jobs
from service.auth_pause import FIRST_BACKOFF_SECONDS, recorded_pauses
from service.budget import paused_until
from service.clients.credentials import fingerprint
from service.clock import ManualClock
from service.config import Settings
from tests.sync.conftest import (
    Deliveries,
    Exchanges,
    World,
    add_filter,
    age_records,
    change_count,
    completed,
    counts,
    job_row,
    jobs_of,
)
from workers.sync.claims import claim_job, new_token
from workers.sync.drain import drain
from workers.sync.incremental import IncrementalSync
from workers.sync.runner import heartbeat_every, paused_note, run_job
from workers.sync.sweeper import WORKER_STOPPED, sweep
from workers.worker import sweep_every

# Nothing listens here: a job that made any API call would fail to connect.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
def offline(settings: Settings) -> Settings:
    """Settings with credentials, pointing at no API at all."""
    return replace(
        settings,
        pipedrive_api_token="pd-offline",
        pipedrive_base_url=NOWHERE,
        brevo_api_key="xkeysib-offline",
        brevo_base_url=NOWHERE + "/v3",
    )


def linked_filter(world: World, tier: str) -> int:
    """A people filter of two persons, synced once."""
    filter_id = world.pipedrive.people_filter(f"Runner {tier}", tier)
    world.pipedrive.person("Ann", "Test", f"ann@{tier.lower()}.example.com", tier=tier)
    world.pipedrive.person("Bob", "Test", f"bob@{tier.lower()}.example.com", tier=tier)
    world.refresh()
    assert counts(completed(world.sync(filter_id))) == (2, 2, 0, 0, 0)
    return filter_id


def test_job_of_a_soft_deleted_filter_fails_with_a_clear_message(
    world: World, exchanges: Exchanges
) -> None:
    filter_id = linked_filter(world, "GONE")
    list_id = world.list_id(filter_id)
    job_id = world.create(filter_id)
    world.pipedrive.delete_filter(filter_id)
    world.refresh()  # the filter vanished upstream: soft-deleted
    assert world.query("SELECT deleted_at FROM filters WHERE id = ?", filter_id) != [(None,)]

    mark = exchanges.mark()
    job = world.run(job_id)

    assert job.status == "failed"
    assert job.error_message == ("the filter was deleted in Pipedrive; its Brevo list is untouched")
    assert job.completed_at == world.clock.now()
    assert exchanges.since(mark) == []  # not a single API call
    assert len(world.brevo.emails(list_id)) == 2
    assert len(world.ledger(filter_id)) == 2


def test_job_of_a_filter_of_unknown_type_fails_with_a_clear_message(
    offline: Settings, clock: ManualClock
) -> None:
    """(Any API call would fail to connect: the message says no call was made.)"""
    add_filter(990, "Never refreshed", type_=None)
    job_id = jobs.create_job(990, "full", "admin", False, clock.now()).id
    run_job(job_id, offline, clock)
    row = job_row(job_id)
    assert (row["status"], row["error_message"], row["completed_at"]) == (
        "failed",
        "the filter's type is unknown: refresh the filters first",
        clock.now(),
    )


def test_missing_credential_fails_the_job_naming_it(offline: Settings, clock: ManualClock) -> None:
    add_filter(991, "No key")
    job_id = jobs.create_job(991, "full", "admin", False, clock.now()).id
    run_job(job_id, replace(offline, brevo_api_key=None), clock)
    assert job_row(job_id)["error_message"] == "BREVO_API_KEY is not set"


def test_pipedrive_error_fails_the_job_with_the_apis_message(world: World) -> None:
    """A filter deleted upstream but not yet refreshed: Pipedrive answers 404."""
    filter_id = linked_filter(world, "NOTFOUND")
    world.pipedrive.delete_filter(filter_id)
    job = world.sync(filter_id)
    assert job.status == "failed"
    assert job.error_message is not None
    assert job.error_message.startswith("pipedrive GET /api/v2/persons answered 404")
    assert len(world.ledger(filter_id)) == 2


def test_a_claimed_job_is_not_run_twice(world: World, exchanges: Exchanges) -> None:
    filter_id = linked_filter(world, "TWICE")
    job_id = jobs_of(filter_id)[-1]["id"]
    done = job_row(job_id)
    ledger = world.ledger(filter_id)

    mark = exchanges.mark()
    world.clock.advance(10)
    again = world.run(job_id)  # the same message delivered again

    assert job_row(job_id) == done
    assert again.status == "completed"
    assert exchanges.since(mark) == []
    assert world.ledger(filter_id) == ledger


def test_a_job_another_worker_holds_is_left_to_it(offline: Settings, clock: ManualClock) -> None:
    add_filter(992, "Held", brevo_list_id=5)
    job_id = jobs.create_job(992, "full", "admin", False, clock.now()).id
    token = new_token()
    assert claim_job(job_id, token, clock.now()) is not None
    held = job_row(job_id)

    clock.advance(10)
    run_job(job_id, offline, clock)  # would fail to connect, were it to run

    assert job_row(job_id) == held
    assert held["claim_token"] == token and held["status"] == "processing"


def test_a_job_taken_over_mid_run_writes_nothing_more(world: World, exchanges: Exchanges) -> None:
    """The sweeper declares the worker dead while it waits on Pipedrive; the heartbeat
    notices, the run stops at its next check, and nothing it does afterwards lands."""
    filter_id = linked_filter(world, "TAKEN")
    world.settings = replace(world.settings, job_stale_seconds=1)  # a beat every 0.5 s
    world.pipedrive.update_person(
        world.pipedrive.person("Cid", "Test", "cid@taken.example.com", tier="TAKEN"),
        last_name="Late",
    )
    world.pipedrive.fake.control(
        "PUT",
        "/_sandbox/faults",
        json={
            "faults": [],
            "latency": [{"seconds": 1.0, "method": "GET", "path": "/api/v2/persons"}],
        },
    )
    ledger = world.ledger(filter_id)
    job_id = world.create(filter_id)
    runner = threading.Thread(target=world.run, args=(job_id,))
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while job_row(job_id)["claimed_at"] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        enqueued: list[int] = []
        result = sweep(world.clock.now() + 10, 1, enqueued.append)
        assert result.failed == [job_id]
        taken_over = exchanges.mark()
    finally:
        runner.join(15)
    assert not runner.is_alive()

    row = job_row(job_id)
    assert (row["status"], row["error_message"]) == ("failed", WORKER_STOPPED)
    late_writes = [e for e in exchanges.since(taken_over) if e.method != "GET"]
    assert late_writes == []
    assert world.ledger(filter_id) == ledger
    assert world.query("SELECT COUNT(*) FROM sync_members") == [(0,)]
    # The recovery job does the work.
    assert enqueued == result.recovery_jobs and len(enqueued) == 1
    world.pipedrive.fake.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})
    recovered = completed(world.run(enqueued[0]))
    assert (recovered.trigger, counts(recovered)) == ("recovery", (3, 1, 0, 0, 0))


def test_heartbeat_and_sweep_fit_in_the_stale_window() -> None:
    for stale in (1, 2, 3, 10, 30, 600):
        assert 3 * heartbeat_every(stale) <= max(stale, 1.5)
        assert 1 <= sweep_every(stale) <= max(1, stale // 3)
    assert heartbeat_every(30) == 10
    assert sweep_every(30) == 5


# --- Pipedrive's daily token budget -------------------------------------------------------


def test_a_spent_budget_gives_the_job_back_until_the_reset_then_it_runs(
    world: World, exchanges: Exchanges, deliveries: Deliveries
) -> None:
    """An incremental job meets the exhausted budget: it is released unclaimed with the
    "Waiting" note, Pipedrive work pauses until the announced reset, a delivery of its
    message meanwhile claims nothing, and once the pause is over it runs."""
    filter_id = linked_filter(world, "BUDGET")
    age_records(world)  # the listing after the pause returns Cid alone
    deliveries.take()
    world.pipedrive.person("Cid", "Test", "cid@budget.example.com", tier="BUDGET")
    world.clock.advance(1)
    deliveries.deliver(world.clock.now())
    world.clock.advance(int(world.settings.sync_coalesce_seconds))
    drained = drain(
        world.clock.now(), world.settings.sync_coalesce_seconds, lambda _: None, lambda: None
    )
    (job_id,) = drained.jobs
    fake = world.pipedrive.fake
    used = fake.control("GET", "/_sandbox/usage").json()["tokens_used"]
    fake.control("PUT", "/_sandbox/settings", json={"daily_token_budget": used})
    mark = exchanges.mark()

    world.run(job_id)

    (refused,) = [e for e in exchanges.since(mark) if e.path.startswith("/api/")]
    assert refused.status == 429
    headers = {k.lower(): v for k, v in refused.response_headers.items()}
    retry_after = float(headers["retry-after"])
    assert retry_after >= float(headers["x-ratelimit-reset"])  # the wait the answer asks for
    until = world.clock.now() + retry_after
    row = job_row(job_id)
    assert (row["status"], row["claimed_at"], row["claim_token"]) == ("processing", None, None)
    assert (row["error_message"], row["completed_at"]) == (None, None)
    assert row["note"] == paused_note(until)
    assert row["note"].startswith("Waiting: ")
    assert paused_until(world.clock.now()) == until
    assert world.query("SELECT COUNT(*) FROM sync_members") == [(0,)]
    assert change_count(filter_id) == 1  # kept for the run after the pause

    # While paused, the job's message (the sweeper re-enqueues it) claims nothing.
    world.clock.advance(int(retry_after) - 1)
    mark = exchanges.mark()
    world.run(job_id)
    assert job_row(job_id)["claimed_at"] is None
    assert exchanges.since(mark) == []

    # The budget has reset by the end of the pause.
    fake.control(
        "PUT",
        "/_sandbox/settings",
        json={"daily_token_budget": fake.defaults["daily_token_budget"]},
    )
    fake.control("POST", "/_sandbox/budget/reset")
    world.clock.advance(2)
    job = completed(world.run(job_id))
    assert (job.kind, counts(job)) == ("incremental", (1, 1, 0, 0, 0))
    assert world.brevo.emails(world.list_id(filter_id)) == [
        "ann@budget.example.com",
        "bob@budget.example.com",
        "cid@budget.example.com",
    ]
    assert change_count(filter_id) == 0


def test_a_job_run_after_the_pause_no_longer_says_it_is_waiting(world: World) -> None:
    filter_id = linked_filter(world, "RESUMED")
    fake = world.pipedrive.fake
    used = fake.control("GET", "/_sandbox/usage").json()["tokens_used"]
    fake.control("PUT", "/_sandbox/settings", json={"daily_token_budget": used})
    job_id = world.create(filter_id)
    world.run(job_id)
    until = paused_until(world.clock.now())
    assert until is not None and job_row(job_id)["note"] == paused_note(until)
    fake.control(
        "PUT",
        "/_sandbox/settings",
        json={"daily_token_budget": fake.defaults["daily_token_budget"]},
    )
    fake.control("POST", "/_sandbox/budget/reset")
    world.clock.advance(int(until - world.clock.now()) + 1)

    job = completed(world.run(job_id))

    assert counts(job) == (2, 0, 0, 0, 0)
    assert job.note is None


def test_a_released_job_is_enqueued_again_by_the_sweeper(world: World) -> None:
    filter_id = linked_filter(world, "REDRIVE")
    fake = world.pipedrive.fake
    used = fake.control("GET", "/_sandbox/usage").json()["tokens_used"]
    fake.control("PUT", "/_sandbox/settings", json={"daily_token_budget": used})
    job_id = world.create(filter_id)
    world.run(job_id)
    released_at = world.clock.now()
    assert job_row(job_id)["claimed_at"] is None

    stale = world.settings.job_stale_seconds
    enqueued: list[int] = []
    assert sweep(released_at + stale, stale, enqueued.append).redriven == []
    assert sweep(released_at + stale + 1, stale, enqueued.append).redriven == [job_id]
    assert enqueued == [job_id]


# --- a poison job (reliability matrix R9) ------------------------------------------------


def test_R9_a_poison_job_fails_with_its_error_and_blocks_no_other_filter(
    world: World, deliveries: Deliveries, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental job that raises every time fails with its error, the filter next to
    it syncs meanwhile, the drain stops retrying after six failures in a row, and the
    admin's full resync runs and clears the way for incremental work again."""
    poison = linked_filter(world, "POISON")
    healthy = linked_filter(world, "HEALTHY")
    age_records(world)
    deliveries.take()
    real_run = IncrementalSync.run

    def crash_on_poison(self: IncrementalSync) -> None:
        if self.job.filter_id == poison:
            raise RuntimeError("a bug")
        real_run(self)

    monkeypatch.setattr(IncrementalSync, "run", crash_on_poison)
    world.pipedrive.person("Dan", "Test", "dan@poison.example.com", tier="POISON")
    world.pipedrive.person("Eve", "Test", "eve@healthy.example.com", tier="HEALTHY")
    world.clock.advance(1)
    deliveries.deliver(world.clock.now())
    stale = world.settings.job_stale_seconds
    failed: list[int] = []
    for _ in range(60):  # simulated minutes: far more than six retries need
        world.clock.advance(int(world.settings.sync_coalesce_seconds) + 1)
        started = drain(
            world.clock.now(),
            world.settings.sync_coalesce_seconds,
            lambda _: None,
            lambda: None,
            retry_after_failure=stale,
        ).jobs
        for job_id in started:
            job = world.run(job_id)
            if job.filter_id == poison:
                assert job.status == "failed"
                assert job.error_message == "internal error (RuntimeError); see the worker log"
                failed.append(job_id)
            else:
                completed(job)
        world.clock.advance(3600)
    assert len(failed) == 6  # then the drain gives up on incremental work
    assert world.brevo.emails(world.list_id(healthy))[-1] == "eve@healthy.example.com"
    assert change_count(poison) > 0  # kept for a full resync
    assert "dan@poison.example.com" not in world.brevo.emails(world.list_id(poison))

    # The admin re-runs the filter: the full resync is not poisoned and syncs Dan.
    job = completed(world.sync(poison))
    assert counts(job) == (3, 1, 0, 0, 0)
    assert "dan@poison.example.com" in world.brevo.emails(world.list_id(poison))


# --- a credential the API refuses (reliability matrix R12) -------------------------------

ROTATED = "xkeysib-rotated"  # the key Brevo accepts once the service's key is revoked


def refuse_service_key(world: World) -> None:
    """Brevo accepts only another key from now on: the service's key is refused (401)."""
    world.brevo.fake.control("PUT", "/_sandbox/settings", json={"token": ROTATED})


def accept_any_key(world: World) -> None:
    """Brevo accepts the service's key again."""
    world.brevo.fake.control("PUT", "/_sandbox/settings", json={"token": None})


def waiting(job_id: int) -> bool:
    """Whether the job is processing, unclaimed, with a "Waiting" note."""
    row = job_row(job_id)
    return (row["status"], row["claim_token"], row["completed_at"]) == (
        "processing",
        None,
        None,
    ) and str(row["note"]).startswith("Waiting: ")


def brevo_exchanges(exchanges: Exchanges, mark: int) -> list[int]:
    """The statuses of the Brevo API calls since ``mark``."""
    return [e.status for e in exchanges.since(mark) if e.path.startswith("/v3/")]


def test_R12_a_refused_brevo_key_fails_the_job_at_once_and_later_jobs_wait_without_a_call(
    world: World, exchanges: Exchanges
) -> None:
    """The first job fails with one Brevo call and a message naming BREVO_API_KEY; the
    pause is recorded against the key's fingerprint; a later job of the filter is not
    claimed and makes no call at all, however often its message comes."""
    filter_id = linked_filter(world, "REFUSED")
    world.pipedrive.person("Cid", "Test", "cid@refused.example.com", tier="REFUSED")
    refuse_service_key(world)
    mark = exchanges.mark()

    job = world.sync(filter_id)

    assert job.status == "failed"
    assert brevo_exchanges(exchanges, mark) == [401]  # no retry
    pause = recorded_pauses()["brevo"]
    key = world.settings.brevo_api_key
    assert key is not None and job.error_message == pause.failure_message()
    assert job.error_message.startswith(
        "Brevo refused BREVO_API_KEY (401): brevo GET /contacts/lists/{listId} answered 401: "
        "Key not found. Set BREVO_API_KEY to a valid credential"
    )
    assert key not in job.error_message
    assert pause.fingerprint == fingerprint(key)
    assert pause.paused_until == world.clock.now() + FIRST_BACKOFF_SECONDS

    later = world.create(filter_id, trigger="schedule")
    mark = exchanges.mark()
    for _ in range(3):  # the sweeper enqueues a waiting job again and again
        world.run(later)
        world.clock.advance(10)
    assert exchanges.since(mark) == []  # not even Pipedrive is asked
    assert waiting(later)
    assert job_row(later)["note"] == pause.note()
    assert "cid@refused.example.com" not in world.brevo.emails(world.list_id(filter_id))


def test_R12_after_the_pause_one_job_probes_and_waits_longer_until_the_key_is_accepted(
    world: World, exchanges: Exchanges
) -> None:
    """A refused probe puts its job back to waiting (not failed) and doubles the pause;
    the probe after the key is accepted again runs the job and ends the pause."""
    filter_id = linked_filter(world, "PROBED")
    world.pipedrive.person("Cid", "Test", "cid@probed.example.com", tier="PROBED")
    refuse_service_key(world)
    assert world.sync(filter_id).status == "failed"
    later = world.create(filter_id)
    world.run(later)
    assert waiting(later)

    world.clock.advance(int(recorded_pauses()["brevo"].paused_until) - world.clock.now())
    mark = exchanges.mark()
    world.run(later)
    assert brevo_exchanges(exchanges, mark) == [401]
    assert waiting(later)
    pause = recorded_pauses()["brevo"]
    assert pause.backoff_seconds == 2 * FIRST_BACKOFF_SECONDS
    assert pause.paused_until == world.clock.now() + 2 * FIRST_BACKOFF_SECONDS
    assert job_row(later)["note"] == pause.note()

    accept_any_key(world)
    world.clock.advance(int(2 * FIRST_BACKOFF_SECONDS) - 1)
    mark = exchanges.mark()
    world.run(later)
    assert exchanges.since(mark) == [] and waiting(later)  # a second early: still paused
    world.clock.advance(1)
    job = completed(world.run(later))
    assert counts(job) == (3, 1, 0, 0, 0)
    assert job.note is None
    assert recorded_pauses() == {}
    assert "cid@probed.example.com" in world.brevo.emails(world.list_id(filter_id))


def test_when_the_pause_ends_only_one_waiting_job_tries_the_key(
    world: World, exchanges: Exchanges
) -> None:
    """Two filters' jobs wait; while the first probes (slowed down by Brevo), the second
    stays unclaimed; once the probe was accepted, the second runs too."""
    first = linked_filter(world, "PROBE1")
    second = linked_filter(world, "PROBE2")
    refuse_service_key(world)
    assert world.sync(first).status == "failed"
    jobs_waiting = [world.create(first), world.create(second)]
    for job_id in jobs_waiting:
        world.run(job_id)
        assert waiting(job_id)
    world.clock.advance(int(recorded_pauses()["brevo"].paused_until) - world.clock.now())
    accept_any_key(world)
    world.brevo.fake.control(
        "PUT", "/_sandbox/faults", json={"faults": [], "latency": [{"seconds": 1.0}]}
    )
    probe = threading.Thread(target=world.run, args=(jobs_waiting[0],))
    probe.start()
    try:
        deadline = time.monotonic() + 5
        while job_row(jobs_waiting[0])["claimed_at"] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        world.run(jobs_waiting[1])
        assert waiting(jobs_waiting[1])
    finally:
        probe.join(30)
    assert not probe.is_alive()
    world.brevo.fake.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})
    probed = jobs.get_job(jobs_waiting[0])
    assert probed is not None
    completed(probed)
    assert recorded_pauses() == {}
    completed(world.run(jobs_waiting[1]))


def test_a_worker_started_with_another_key_is_not_held_and_ends_the_old_pause(
    world: World, exchanges: Exchanges
) -> None:
    filter_id = linked_filter(world, "NEWKEY")
    refuse_service_key(world)
    assert world.sync(filter_id).status == "failed"
    assert "brevo" in recorded_pauses()

    world.settings = replace(world.settings, brevo_api_key=ROTATED)
    job = completed(world.sync(filter_id))
    assert counts(job) == (2, 0, 0, 0, 0)
    assert recorded_pauses() == {}


def test_a_refused_pipedrive_token_fails_the_job_naming_its_variable(
    world: World, exchanges: Exchanges
) -> None:
    filter_id = linked_filter(world, "PDREFUSED")
    world.pipedrive.fake.control("PUT", "/_sandbox/settings", json={"token": "pd-rotated"})
    mark = exchanges.mark()
    job = world.sync(filter_id)
    assert job.status == "failed"
    assert job.error_message is not None
    assert job.error_message.startswith("Pipedrive refused PIPEDRIVE_API_TOKEN (401): pipedrive ")
    pipedrive_calls = [e for e in exchanges.since(mark) if not e.path.startswith("/v3/")]
    assert [e.status for e in pipedrive_calls] == [401]  # no retry
    later = world.create(filter_id)
    mark = exchanges.mark()
    world.run(later)
    assert waiting(later) and "PIPEDRIVE_API_TOKEN" in job_row(later)["note"]
    assert exchanges.since(mark) == []
