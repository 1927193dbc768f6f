"""Issue 5, "Done when": the webhook-driven incremental sync under load, on a Pipedrive
token budget that runs low and then out, and against a Pipedrive that ignores
``updated_since``.

Every test runs the real ``pbsync web`` and ``pbsync worker`` (see ``conftest.py``) with a
v2 webhook registered in the fake Pipedrive, so each change made through the fake's
control API reaches the service as a real delivery. Calls are counted by the fakes
(``/_sandbox/usage``, before and after) and by the service's jobs (``GET /api/jobs``):
every bound is derived from the counts of changes and jobs of the run, and printed
(``pytest -s`` shows the figures).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
import pytest

from sandbox.brevo import BrevoFakeConfig
from sandbox.pipedrive.fields import TIER_KEY, condition, groups
from sandbox.pipedrive.limits import TOKEN_COSTS
from service.clients.pipedrive import PAGE_SIZE as PIPEDRIVE_PAGE
from tests.fake_control import Brevo, Pipedrive
from tests.fakes import RunningFake
from tests.integration.conftest import Service, StartService
from workers.sync.incremental import SINCE_MARGIN_SECONDS

pytestmark = pytest.mark.integration

T = TypeVar("T")

WEBHOOK_USER = "pipedrive-hooks"
WEBHOOK_PASSWORD = "load-test-webhook-secret"
BREVO_BATCH = 150  # Brevo takes at most 150 emails per list add or remove call
CONVERGE_TIMEOUT = 90.0
# A token that is not the service's: "another integration" spending the company budget.
OTHER_TOKEN = "another-integration"
FILTERS_LIST_COST = TOKEN_COSTS[("GET", "/v1/filters")]
LIST_CALL_COST = TOKEN_COSTS[("GET", "/api/v2/persons")]


# --- the service and the fakes -------------------------------------------------------------


def start(start_service: StartService, **env: str) -> Service:
    """The service, with webhook credentials (and ``env``)."""
    return start_service(WEBHOOK_USER=WEBHOOK_USER, WEBHOOK_PASSWORD=WEBHOOK_PASSWORD, **env)


def register_webhook(pipedrive: Pipedrive, service: Service) -> None:
    """Register the service's webhook (v2, every object and action) in the fake Pipedrive
    with the service's API token, as ``pbsync webhooks install`` would."""
    pipedrive.add_webhook(
        service.base + "/webhooks/pipedrive",
        version="2.0",
        user=WEBHOOK_USER,
        password=WEBHOOK_PASSWORD,
        token=service.env["PIPEDRIVE_API_TOKEN"],
    )


def link_filters(service: Service, filter_ids: Iterable[int]) -> dict[int, int]:
    """Refresh, then fully sync each filter once: its Brevo list id, by filter id."""
    service.refresh()
    lists: dict[int, int] = {}
    for filter_id in filter_ids:
        job = service.sync(filter_id)
        assert job["status"] == "completed", job
        list_id = service.filters()[filter_id]["brevo_list_id"]
        assert isinstance(list_id, int)
        lists[filter_id] = list_id
    return lists


def status(service: Service) -> dict[str, Any]:
    """``GET /api/status``."""
    response = service.request("GET", "/api/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_until(service: Service, what: str, predicate: Callable[[], T], timeout: float) -> T:
    """Poll ``predicate`` until it is truthy; fail with the service's logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        service.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{service.logs()}")
        time.sleep(0.2)


def all_applied(service: Service, deliveries: int) -> bool:
    """At least ``deliveries`` deliveries are in the inbox and all of them are applied: none
    pending, no routed change waiting, no job running."""
    found = status(service)
    inbox = found["inbox"]
    received = inbox["pending"] + inbox["processed"] + inbox["ignored"]
    return bool(
        received >= deliveries
        and inbox["pending"] == 0
        and found["sync"]["changes_waiting"] == 0
        and found["jobs"]["processing"] == 0
    )


def last_job_id(service: Service) -> int:
    """The newest job's id (0 when there is none)."""
    response = service.request("GET", "/api/jobs", params={"limit": 1})
    assert response.status_code == 200, response.text
    jobs = response.json()["jobs"]
    return int(jobs[0]["id"]) if jobs else 0


def jobs_of(service: Service, filter_id: int, after_id: int = 0) -> list[dict[str, Any]]:
    """The filter's jobs newer than ``after_id``, oldest first (``GET /api/jobs?filter_id=``)."""
    response = service.request("GET", "/api/jobs", params={"filter_id": filter_id, "limit": 200})
    assert response.status_code == 200, response.text
    jobs = [j for j in response.json()["jobs"] if j["id"] > after_id]
    return sorted(jobs, key=lambda j: j["id"])


def incremental_jobs(service: Service, filter_id: int, after_id: int) -> list[dict[str, Any]]:
    """The filter's incremental jobs newer than ``after_id``, each asserted completed."""
    jobs = jobs_of(service, filter_id, after_id)
    assert all(j["kind"] == "incremental" and j["trigger"] == "webhook" for j in jobs), jobs
    failed = [j for j in jobs if j["status"] != "completed"]
    assert not failed, f"{failed}\n{service.logs()}"
    return jobs


def inbox_span(service: Service, after_inbox_id: int = 0) -> int:
    """Seconds between the first and the last delivery received after ``after_inbox_id``."""
    first, last = service.query(
        "SELECT MIN(received_at), MAX(received_at) FROM inbox WHERE id > ?", after_inbox_id
    )[0]
    return int(last) - int(first)


def last_inbox_id(service: Service) -> int:
    """The newest inbox row's id (0 when empty)."""
    return int(service.query("SELECT COALESCE(MAX(id), 0) FROM inbox")[0][0])


def service_statuses(service: Service, api: str) -> Counter[int]:
    """Answers the service got from ``api``, by HTTP status (its ``api_calls`` table)."""
    rows = service.query(
        "SELECT status, SUM(calls) FROM api_calls WHERE api = ? GROUP BY status", api
    )
    return Counter({int(s): int(n) for s, n in rows})


def windows_spanned(span_seconds: int, window: float) -> int:
    """How many coalesce windows deliveries spread over ``span_seconds`` can open at most.

    The drain routes once the oldest pending delivery has waited the window, so two
    routings are at least a window apart; times are whole seconds, hence one more.
    """
    return math.floor(span_seconds / window) + 2


# --- usage as the fakes count it -------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Calls the fakes answered so far: Pipedrive's by operation (charged ones only),
    Brevo's by operation and status."""

    pipedrive: Counter[str]
    brevo: dict[str, Counter[str]]

    @classmethod
    def read(cls, pipedrive: RunningFake, brevo: RunningFake) -> Usage:
        """Both fakes' ``/_sandbox/usage`` now."""
        calls = pipedrive.control("GET", "/_sandbox/usage").json()["calls"]
        by_status = brevo.control("GET", "/_sandbox/usage").json()["calls"]
        return cls(Counter(calls), {op: Counter(statuses) for op, statuses in by_status.items()})

    def since(self, before: Usage) -> Usage:
        """The calls answered between ``before`` and this reading."""
        brevo = {
            op: statuses - before.brevo.get(op, Counter()) for op, statuses in self.brevo.items()
        }
        return Usage(self.pipedrive - before.pipedrive, {op: c for op, c in brevo.items() if c})

    def brevo_calls(self) -> Counter[str]:
        """Brevo calls by operation, whatever their status."""
        return Counter({op: sum(statuses.values()) for op, statuses in self.brevo.items()})

    def brevo_status(self, status: int) -> int:
        """Brevo answers with this status."""
        return sum(statuses[str(status)] for statuses in self.brevo.values())


def tokens_used(pipedrive: RunningFake) -> int:
    """Tokens the fake Pipedrive's budget has spent in its current day."""
    used: int = pipedrive.control("GET", "/_sandbox/usage").json()["tokens_used"]
    return used


def spend_tokens(pipedrive: RunningFake, until_used: int) -> int:
    """Spend the company budget with another token's calls until ``until_used`` is nearly
    reached (less than one call away); returns the tokens used then."""
    with httpx.Client(base_url=pipedrive.url, headers={"x-api-token": OTHER_TOKEN}) as client:
        while (used := tokens_used(pipedrive)) + FILTERS_LIST_COST <= until_used:
            answer = client.get("/v1/filters")
            if answer.status_code == 429:  # the burst window of that token: wait it out
                time.sleep(float(answer.headers.get("retry-after", "1")))
            else:
                assert answer.status_code == 200, answer.text
    return used


def pipedrive_settings(pipedrive: RunningFake, **settings: Any) -> dict[str, Any]:
    """``PUT /_sandbox/settings`` on the fake Pipedrive; the settings after it."""
    shown: dict[str, Any] = pipedrive.control("PUT", "/_sandbox/settings", json=settings).json()
    return shown


# --- what the lists must hold ----------------------------------------------------------


def lists_equal_filters(pipedrive: Pipedrive, brevo: Brevo, lists: dict[int, int]) -> bool:
    """Every list holds exactly its filter's members' emails."""
    return all(brevo.emails(lst) == pipedrive.filter_emails(f) for f, lst in lists.items())


def brevo_names(brevo: RunningFake, emails: Iterable[str]) -> dict[str, tuple[Any, Any] | None]:
    """FIRSTNAME and LASTNAME of each contact in the fake Brevo (None: no such contact),
    read from the fake's store in one go."""
    store = brevo.app.state.fake.store
    store.settle()
    with store.lock:
        found: dict[str, tuple[Any, Any] | None] = {}
        for email in emails:
            contact = store.by_email(email)
            found[email] = (
                None
                if contact is None
                else (contact.attributes.get("FIRSTNAME"), contact.attributes.get("LASTNAME"))
            )
    return found


def names_shown(brevo: RunningFake, wanted: dict[str, tuple[str, str]]) -> list[str]:
    """The emails whose Brevo contact does not show the wanted (first, last) names yet."""
    found = brevo_names(brevo, wanted)
    return [email for email, names in wanted.items() if found[email] != names]


def paced(actions: Sequence[Callable[[], None]], per_second: float) -> float:
    """Run ``actions`` one after the other at ``per_second``; the seconds it took."""
    began = time.monotonic()
    for index, action in enumerate(actions):
        delay = began + index / per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        action()
    return time.monotonic() - began


class Crowd:
    """Persons a test makes and changes through the fake's control API (over one kept-alive
    connection, so that a burst goes at the rate asked): their emails, the names their
    contacts must end with, and how many changes (deliveries, once the webhook is
    registered) were sent since ``watch``."""

    def __init__(self, pipedrive: Pipedrive, label: str) -> None:
        self.pipedrive = pipedrive
        self.label = label
        self.http = httpx.Client(base_url=pipedrive.fake.url + "/_sandbox", timeout=10)
        self.emails: dict[int, str] = {}
        self.names: dict[str, tuple[str, str]] = {}
        self.sent = 0

    def close(self) -> None:
        """Close the connection."""
        self.http.close()

    def _send(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.request(method, path, json=body)
        assert response.status_code < 400, f"{method} {path}: {response.text}"
        self.sent += 1
        answer: dict[str, Any] = response.json()
        return answer

    def watch(self) -> None:
        """Count changes from now on (the webhook is registered)."""
        self.sent = 0

    def add(self, first: str, tier: str | None) -> int:
        """A new person (last name: the label) with a unique email, in ``tier``."""
        email = f"{self.label}-{len(self.emails)}@{self.label}.example.com"
        body: dict[str, Any] = {"first_name": first, "last_name": self.label, "emails": [email]}
        if tier is not None:
            body["custom_fields"] = {TIER_KEY: tier}
        person_id = int(self._send("POST", "/persons", body)["id"])
        self.emails[person_id] = email
        self.names[email] = (first, self.label)
        return person_id

    def rename(self, person_id: int, first: str) -> None:
        """Change the person's first name."""
        self._send("PATCH", f"/persons/{person_id}", {"first_name": first})
        self.names[self.emails[person_id]] = (first, self.label)

    def set_tier(self, person_id: int, tier: str | None) -> None:
        """Move the person to ``tier`` (None: none)."""
        self._send("PATCH", f"/persons/{person_id}", {"custom_fields": {TIER_KEY: tier}})

    def names_wrong(self, brevo: RunningFake, filter_ids: Iterable[int]) -> list[str]:
        """The filters' members whose Brevo contact does not show their names yet."""
        current = {e for f in filter_ids for e in self.pipedrive.filter_emails(f)}
        return names_shown(brevo, {e: n for e, n in self.names.items() if e in current})


def tier_prefix_conditions(prefix: str) -> dict[str, Any]:
    """People filter conditions: the "Customer tier" starts with ``prefix``."""
    return groups([condition("person", TIER_KEY, "LIKE '$%'", prefix)])


def iso_seconds(value: str) -> float:
    """An ISO 8601 time of the admin API as unix seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def pipedrive(pipedrive_fake: RunningFake) -> Pipedrive:
    """The fake Pipedrive's control API."""
    return Pipedrive(pipedrive_fake)


@pytest.fixture
def brevo(brevo_fake: RunningFake) -> Brevo:
    """The fake Brevo's control API."""
    return Brevo(brevo_fake)


@pytest.fixture
def crowd_of(pipedrive: Pipedrive) -> Iterator[Callable[[str], Crowd]]:
    """Makes ``Crowd``s (by label), closed at the end of the test."""
    made: list[Crowd] = []

    def make(label: str) -> Crowd:
        made.append(Crowd(pipedrive, label))
        return made[-1]

    yield make
    for crowd in made:
        crowd.close()


# --- 1. a burst of membership changes ----------------------------------------------------


TIERS = ("LoadA", "LoadB", "LoadC")
PER_TIER = 50
CHANGES_PER_SECOND = 100.0
NEXT_TIER = {tier: TIERS[(t + 1) % len(TIERS)] for t, tier in enumerate(TIERS)}


def test_a_burst_of_300_membership_changes_takes_a_few_calls_per_window(
    start_service: StartService,
    crowd_of: Callable[[str], Crowd],
    pipedrive: Pipedrive,
    brevo: Brevo,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
) -> None:
    """150 persons, 50 in each of 3 tier filters, all also in a fourth linked filter (any
    "Load" tier), so every contact is in Brevo before and after. Each person moves to the
    next tier (a leave and a join: 300 membership changes) at 100 changes a second, with
    the default 2 s coalesce window. The lists end equal to their filters, with at most 2
    Pipedrive calls per touched filter per window (plus further pages), and per list and
    kind of Brevo operation at most ceil(changes/150) calls per window."""
    service = start(start_service)
    configured = status(service)["sync"]["configured_coalesce_seconds"]
    crowd = crowd_of("burst")
    tiers = {tier: pipedrive.people_filter(f"Load tier {tier}", tier) for tier in TIERS}
    anchor = pipedrive.filter("Load anyone", "people", tier_prefix_conditions("Load"))
    persons = {
        tier: [crowd.add(f"P{t}x{i}", tier) for i in range(PER_TIER)]
        for t, tier in enumerate(TIERS)
    }
    lists = link_filters(service, [*tiers.values(), anchor])
    assert lists_equal_filters(pipedrive, brevo, lists)
    before_members = {f: set(pipedrive.filter_emails(f)) for f in lists}
    assert len(before_members[anchor]) == len(TIERS) * PER_TIER
    register_webhook(pipedrive, service)
    crowd.watch()
    first_job = last_job_id(service)
    before = Usage.read(pipedrive_fake, brevo_fake)

    # Each tier's persons move to the next tier, the tiers interleaved so that every list
    # has joins and leaves all through the burst.
    moves: list[Callable[[], None]] = [
        partial(crowd.set_tier, persons[tier][k], NEXT_TIER[tier])
        for k in range(PER_TIER)
        for tier in TIERS
    ]
    took = paced(moves, CHANGES_PER_SECOND / 2)  # a move is a leave and a join

    wait_until(
        service,
        "the lists equal their filters",
        lambda: all_applied(service, crowd.sent) and lists_equal_filters(pipedrive, brevo, lists),
        CONVERGE_TIMEOUT,
    )
    used = Usage.read(pipedrive_fake, brevo_fake).since(before)

    after_members = {f: set(pipedrive.filter_emails(f)) for f in lists}
    changes = {f: len(before_members[f] ^ after_members[f]) for f in lists}
    assert sum(changes.values()) == 2 * len(moves) == 300
    assert changes[anchor] == 0
    jobs = {f: incremental_jobs(service, f, first_job) for f in lists}
    span = inbox_span(service)
    windows = windows_spanned(span, configured)

    # Pipedrive: at most 2 calls per touched filter per window, plus further pages.
    pages = sum(j["total_fetched"] // PIPEDRIVE_PAGE for js in jobs.values() for j in js)
    pipedrive_bound = sum(2 * len(js) for js in jobs.values()) + pages
    pipedrive_calls = sum(used.pipedrive.values())
    # Brevo, per kind of operation: at most ceil(c/150) calls per list and window where
    # the list had c changes; over W windows holding C changes in all, that is at most
    # min(C, ceil(C/150) + W - 1) for the list. The fake counts by operation, not by
    # list, so each operation's count is held to the sum over the lists.
    brevo_bound = sum(
        min(changes[f], math.ceil(changes[f] / BREVO_BATCH) + len(jobs[f]) - 1) for f in lists
    )
    brevo_calls = used.brevo_calls()
    print(
        f"\n[burst] {2 * len(moves)} membership changes sent in {took:.1f} s; deliveries "
        f"spread over {span} s: at most {windows} windows of {configured} s"
    )
    for f in lists:
        print(
            f"[burst] filter {f}: {changes[f]} changes, {len(jobs[f])} incremental jobs, "
            f"fetched {[j['total_fetched'] for j in jobs[f]]}, "
            f"added {[j['total_added'] for j in jobs[f]]}, "
            f"removed {[j['total_removed'] for j in jobs[f]]}"
        )
    print(f"[burst] Pipedrive calls {dict(used.pipedrive)}: {pipedrive_calls} <= {pipedrive_bound}")
    print(f"[burst] Brevo calls {dict(brevo_calls)}: each <= {brevo_bound}")
    print(f"[burst] naive: {2 * len(moves)} Pipedrive reads and as many Brevo writes")

    for f, js in jobs.items():
        assert 1 <= len(js) <= windows, (f, len(js), windows)
    assert pipedrive_calls <= pipedrive_bound, used.pipedrive
    over = {op: n for op, n in brevo_calls.items() if n > brevo_bound}
    assert not over, (over, brevo_bound)
    assert used.brevo_status(429) == 0
    assert service_statuses(service, "pipedrive")[429] == 0


# --- 2. a burst of name changes under the rate limits --------------------------------------


NAMES_TIERS = ("LoadNamesA", "LoadNamesB")
NAMES_PER_TIER = 500
MAX_429 = 5


def test_a_burst_of_1000_name_changes_converges_within_the_rate_limits(
    start_service: StartService,
    crowd_of: Callable[[str], Crowd],
    pipedrive: Pipedrive,
    brevo: Brevo,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
) -> None:
    """1,000 persons in 2 linked filters are renamed as fast as the control API takes it,
    with Brevo's rate limits (10 contact calls a second, 100 other calls an hour) and
    Pipedrive's burst limit on: every contact ends with its new name, and the fakes
    answered at most a handful of 429s."""
    service = start(start_service)
    crowd = crowd_of("names")
    filters = [pipedrive.people_filter(f"Load names {tier}", tier) for tier in NAMES_TIERS]
    persons = [crowd.add(f"Old{i}", tier) for tier in NAMES_TIERS for i in range(NAMES_PER_TIER)]
    lists = link_filters(service, filters)
    assert lists_equal_filters(pipedrive, brevo, lists)
    register_webhook(pipedrive, service)
    crowd.watch()
    limits = BrevoFakeConfig()  # the fake's defaults are Brevo's documented limits
    brevo_fake.control(
        "PUT",
        "/_sandbox/settings",
        json={
            "contacts_rate": limits.contacts_rate,
            "processes_per_hour": limits.processes_per_hour,
        },
    )
    assert limits.contacts_rate > 0 and limits.processes_per_hour > 0
    assert pipedrive_fake.control("GET", "/_sandbox/settings").json()["burst_limit"] > 0
    first_job = last_job_id(service)
    before = Usage.read(pipedrive_fake, brevo_fake)
    pipedrive_before = service_statuses(service, "pipedrive")

    began = time.monotonic()
    for n, person_id in enumerate(persons):
        crowd.rename(person_id, f"New{n}")
    sent = time.monotonic() - began
    wait_until(
        service,
        "every contact shows its new name",
        lambda: all_applied(service, crowd.sent) and not crowd.names_wrong(brevo_fake, filters),
        CONVERGE_TIMEOUT,
    )
    converged = time.monotonic() - began
    used = Usage.read(pipedrive_fake, brevo_fake).since(before)

    jobs = {f: incremental_jobs(service, f, first_job) for f in filters}
    pipedrive_429 = service_statuses(service, "pipedrive")[429] - pipedrive_before[429]
    brevo_429 = used.brevo_status(429)
    print(
        f"\n[names] {crowd.sent} renames sent in {sent:.1f} s, all shown in Brevo after "
        f"{converged:.1f} s"
    )
    print(f"[names] incremental jobs per filter: { {f: len(js) for f, js in jobs.items()} }")
    print(f"[names] Pipedrive calls {dict(used.pipedrive)}; 429 answers: {pipedrive_429}")
    print(f"[names] Brevo calls {dict(used.brevo)}; 429 answers: {brevo_429}")
    assert crowd.sent == len(persons) == len(NAMES_TIERS) * NAMES_PER_TIER
    assert lists_equal_filters(pipedrive, brevo, lists)
    assert sum(j["total_updated"] for js in jobs.values() for j in js) == len(persons)
    assert pipedrive_429 <= MAX_429 and brevo_429 <= MAX_429


# --- 3. the budget runs low, then out ----------------------------------------------------


BUDGET_TIER = "LoadBudget"
BUDGET = 2000
LEFT_SHARE = 0.065  # of the budget, left to the service: the window must widen 5 times
RESET_SECONDS = 8


def test_a_low_budget_widens_the_window_and_a_spent_one_pauses_until_the_reset(
    start_service: StartService,
    crowd_of: Callable[[str], Crowd],
    pipedrive: Pipedrive,
    brevo: Brevo,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
) -> None:
    """With 6.5 % of the token budget left the coalesce window widens at least five times
    and the jobs come a widened window apart. Then the budget is spent in the middle of a
    burst, with a budget day of 8 s: the job waits with a note instead of failing, the
    fake answers at most a couple of 429s, and after the reset every change is applied."""
    service = start(start_service, SYNC_COALESCE_SECONDS="0.5", JOB_STALE_SECONDS="3")
    configured = status(service)["sync"]["configured_coalesce_seconds"]
    assert configured == 0.5
    crowd = crowd_of("budget")
    filter_id = pipedrive.people_filter("Load budget", BUDGET_TIER)
    members = [crowd.add(f"B{i}", BUDGET_TIER) for i in range(12)]
    outsiders = [crowd.add(f"O{i}", None) for i in range(6)]
    lists = link_filters(service, [filter_id])
    register_webhook(pipedrive, service)
    crowd.watch()

    # (a) Another integration spent all but 6.5 %; the service sees it on its next call.
    spend_tokens(pipedrive_fake, until_used=int(BUDGET * (1 - LEFT_SHARE)))
    pipedrive_settings(pipedrive_fake, daily_token_budget=BUDGET)
    crowd.rename(members[0], "Seen")
    widened: float = wait_until(
        service,
        "the window widened five times",
        lambda: (w := status(service)["sync"]["coalesce_seconds"]) >= 5 * configured and w,
        30,
    )
    wait_until(service, "the first change applied", lambda: all_applied(service, crowd.sent), 30)
    first_job = last_job_id(service)
    first_inbox = last_inbox_id(service)
    stream = [partial(crowd.rename, members[1 + i % 6], f"Stream{i}") for i in range(14)]
    streamed = paced(stream, 2.0)
    wait_until(
        service,
        "the stream applied",
        lambda: all_applied(service, crowd.sent) and not crowd.names_wrong(brevo_fake, [filter_id]),
        60,
    )
    spaced = incremental_jobs(service, filter_id, first_job)
    span = inbox_span(service, first_inbox)
    created = [iso_seconds(j["created_at"]) for j in spaced]
    gaps = [round(b - a) for a, b in zip(created, created[1:], strict=False)]
    print(
        f"\n[budget] window {configured} s widened to {widened:.2f} s "
        f"({widened / configured:.1f}x) with {LEFT_SHARE:.1%} of the budget left"
    )
    print(
        f"[budget] {len(stream)} changes over {streamed:.1f} s (deliveries over {span} s): "
        f"{len(spaced)} jobs, {gaps} s apart; at most {windows_spanned(span, widened)} "
        f"windows of {widened:.2f} s (of {configured} s: {windows_spanned(span, configured)})"
    )
    assert 1 <= len(spaced) <= windows_spanned(span, widened)

    # (b) A fresh budget, seen by the service on a filter refresh; then a burst during
    # which another integration spends the budget, whose day now ends in 8 s.
    pipedrive_fake.control("POST", "/_sandbox/budget/reset")
    service.refresh()
    wait_until(
        service,
        "the window back to the configured one",
        lambda: status(service)["sync"]["coalesce_seconds"] == configured,
        10,
    )
    before_429 = service_statuses(service, "pipedrive")[429]
    burst_job = last_job_id(service)
    for person_id in outsiders[:3]:
        crowd.set_tier(person_id, BUDGET_TIER)
    crowd.set_tier(members[11], None)
    crowd.rename(members[10], "Burst")
    wait_until(
        service, "the burst's first part applied", lambda: all_applied(service, crowd.sent), 30
    )
    shown = pipedrive_settings(
        pipedrive_fake,
        daily_token_budget=tokens_used(pipedrive_fake) + LIST_CALL_COST // 2,
        budget_reset_seconds=RESET_SECONDS,
    )
    assert shown["budget_reset_seconds"] == RESET_SECONDS
    for person_id in outsiders[3:]:
        crowd.set_tier(person_id, BUDGET_TIER)
    crowd.set_tier(members[9], None)
    crowd.rename(members[8], "Spent")
    waiting: list[dict[str, Any]] = wait_until(
        service,
        "a job waiting for the budget",
        lambda: [
            j
            for j in jobs_of(service, filter_id, burst_job)
            if (j["note"] or "").startswith("Waiting")
        ],
        30,
    )
    paused_until = status(service)["sync"]["pipedrive_paused_until"]
    # Changes that arrive during the pause wait with the rest.
    crowd.set_tier(members[7], None)
    crowd.rename(members[6], "DuringPause")
    wait_until(
        service,
        "everything applied after the reset",
        lambda: (
            all_applied(service, crowd.sent)
            and lists_equal_filters(pipedrive, brevo, lists)
            and not crowd.names_wrong(brevo_fake, [filter_id])
        ),
        60,
    )
    jobs = incremental_jobs(service, filter_id, burst_job)  # all completed, none failed
    throttled = service_statuses(service, "pipedrive")[429] - before_429
    resumed = next(j for j in jobs if j["id"] == waiting[0]["id"])
    print(
        f"[budget] spent: job {resumed['id']} noted {waiting[0]['note']!r}, paused until "
        f"{paused_until}, completed at {resumed['completed_at']}; {len(jobs)} jobs in the "
        f"burst; Pipedrive answered 429 {throttled} times"
    )
    assert paused_until is not None
    assert iso_seconds(resumed["completed_at"]) >= iso_seconds(paused_until)
    assert 1 <= throttled <= 2


# --- 4. a Pipedrive that ignores updated_since ---------------------------------------------


IGNORE_TIER = "LoadIgnore"
IGNORE_MEMBERS = 70


def test_joins_and_leaves_converge_when_pipedrive_ignores_updated_since(
    start_service: StartService,
    crowd_of: Callable[[str], Crowd],
    pipedrive: Pipedrive,
    brevo: Brevo,
    pipedrive_fake: RunningFake,
    brevo_fake: RunningFake,
) -> None:
    """With the fake ignoring ``updated_since``, joins (a move and a new person), leaves
    and a rename still converge, and each job says the filter was listed whole."""
    service = start(start_service, SYNC_COALESCE_SECONDS="0.5")
    crowd = crowd_of("ignore")
    filter_id = pipedrive.people_filter("Load ignore", IGNORE_TIER)
    members = [crowd.add(f"I{i}", IGNORE_TIER) for i in range(IGNORE_MEMBERS)]
    outsiders = [crowd.add(f"X{i}", None) for i in range(3)]
    lists = link_filters(service, [filter_id])
    register_webhook(pipedrive, service)
    crowd.watch()
    first_job = last_job_id(service)
    pipedrive_settings(pipedrive_fake, ignore_updated_since=True)

    for person_id in outsiders:
        crowd.set_tier(person_id, IGNORE_TIER)
    leavers = members[-3:]
    for person_id in leavers:
        crowd.set_tier(person_id, None)
    crowd.rename(members[1], "Renamed")
    crowd.add("Newcomer", IGNORE_TIER)
    wait_until(
        service,
        "the list equals the filter",
        lambda: (
            all_applied(service, crowd.sent)
            and lists_equal_filters(pipedrive, brevo, lists)
            and not crowd.names_wrong(brevo_fake, [filter_id])
        ),
        CONVERGE_TIMEOUT,
    )

    # A listing that ignored updated_since is told apart by members last updated before
    # the changes, less the margin the service asks for: the fake hands out update times
    # a second apart, so the first of the 70 members is old enough.
    state = pipedrive_fake.app.state.fake
    with state.lock:
        oldest_member = state.data.persons[members[0]].update_time
        first_change = state.data.persons[outsiders[0]].update_time
    assert oldest_member < first_change - timedelta(seconds=SINCE_MARGIN_SECONDS)
    jobs = incremental_jobs(service, filter_id, first_job)
    print(
        f"\n[ignored] {crowd.sent} changes, {len(jobs)} jobs: notes "
        f"{[j['note'] for j in jobs]}, fetched {[j['total_fetched'] for j in jobs]}"
    )
    assert jobs
    for job in jobs:
        assert "listed whole" in (job["note"] or ""), job
        assert job["total_fetched"] >= IGNORE_MEMBERS - len(leavers), job
