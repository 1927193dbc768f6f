"""workers/sync/incremental.py: incremental jobs run in this process (``run_job``) against
the fake Pipedrive and the fake Brevo over HTTP.

Each test links a small filter with a full resync, then changes records through the fake's
control API. The change events the fake announces are stored in the inbox as the webhook
endpoint would store their deliveries (``deliveries``), the drain routes them and starts
the incremental job, and the job runs here. The test's records are aged first
(``age_records``), so an ``updated_since`` listing returns exactly what the test changed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest

from sandbox.pipedrive.fields import condition, groups
from service import jobs
from service.clients.errors import ApiAuthError
from tests.sync.conftest import (
    Deliveries,
    Exchanges,
    World,
    age_records,
    change_count,
    completed,
    counts,
)
from workers.sync.claims import claim_job, fail_job, new_token
from workers.sync.drain import drain
from workers.sync.incremental import IGNORED_NOTE, IncrementalSync

WINDOW = 2
RETRY_AFTER_FAILURE = 30
PERSONS = "GET /api/v2/persons"
DEALS = "GET /api/v2/deals"


# --- helpers ------------------------------------------------------------------------------


def email(first: str, tier: str) -> str:
    return f"{first.lower()}@{tier.lower()}.example.com"


def people_filter(
    world: World, deliveries: Deliveries, tier: str, *firsts: str
) -> tuple[int, dict[str, int]]:
    """A people filter of the persons of ``tier``, linked by a full resync; the persons'
    ids by first name. The announcements of the setup are dropped."""
    filter_id = world.pipedrive.people_filter(f"Incremental {tier}", tier)
    ids = {f: world.pipedrive.person(f, "Test", email(f, tier), tier=tier) for f in firsts}
    age_records(world)
    world.refresh()
    assert counts(completed(world.sync(filter_id))) == (len(firsts), len(firsts), 0, 0, 0)
    deliveries.take()
    return filter_id, ids


def deal_filter(
    world: World, deliveries: Deliveries, prefix: str, *firsts: str
) -> tuple[int, dict[str, int], dict[str, int]]:
    """A deal filter of one deal per person (titles starting with ``prefix``), linked by
    a full resync; person ids and deal ids by first name."""
    filter_id = world.pipedrive.deal_filter(f"Incremental {prefix}", prefix)
    persons = {f: world.pipedrive.person(f, "Test", email(f, prefix), tier=None) for f in firsts}
    deals = {f: world.pipedrive.deal(f"{prefix} {f}", persons[f]) for f in firsts}
    age_records(world)
    world.refresh()
    assert counts(completed(world.sync(filter_id))) == (len(firsts), len(firsts), 0, 0, 0)
    deliveries.take()
    return filter_id, persons, deals


def burst(
    world: World, deliveries: Deliveries, version: str = "2", events: list[Any] | None = None
) -> list[jobs.Job]:
    """Deliver what the fake announced (or ``events``), drain once the window passed, and
    run the jobs the drain started; the jobs as they ended."""
    world.clock.advance(1)
    deliveries.deliver(world.clock.now(), version, events)
    world.clock.advance(WINDOW)
    world.enqueued.clear()
    result = drain(
        world.clock.now(),
        WINDOW,
        world.enqueued.append,
        lambda: None,
        retry_after_failure=RETRY_AFTER_FAILURE,
    )
    assert result.jobs == world.enqueued
    return [world.run(job_id) for job_id in result.jobs]


def one_job(jobs_run: list[jobs.Job]) -> jobs.Job:
    """The only job of a burst, completed, incremental and triggered by the webhook."""
    assert len(jobs_run) == 1, jobs_run
    job = completed(jobs_run[0])
    assert (job.kind, job.trigger) == ("incremental", "webhook")
    return job


class Calls:
    """The fake Pipedrive's API calls made from a point on."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.before = world.pipedrive.calls()

    def made(self) -> dict[str, int]:
        after = self.world.pipedrive.calls()
        return {
            k: v - self.before.get(k, 0) for k, v in after.items() if v != self.before.get(k, 0)
        }


def listing_queries(exchanges: Exchanges, mark: int, path: str) -> list[dict[str, list[str]]]:
    """The query strings of the ``GET path`` calls since ``mark``."""
    return [
        parse_qs(e.query) for e in exchanges.since(mark) if e.method == "GET" and e.path == path
    ]


def attributes(world: World, address: str) -> dict[str, Any]:
    contact = world.brevo.contact(address)
    assert contact is not None, address
    found: dict[str, Any] = contact["attributes"]
    return found


# --- people filters -------------------------------------------------------------------------


def test_people_filter_join_leave_email_and_name_changes_in_one_burst(
    world: World, deliveries: Deliveries, exchanges: Exchanges
) -> None:
    tier = "INCP"
    filter_id, ids = people_filter(world, deliveries, tier, "Ann", "Bob", "Cid", "Fay")
    outsider = world.pipedrive.person("Dan", "Test", email("Dan", tier), tier="ELSEWHERE")
    age_records(world)
    deliveries.take()
    list_id = world.list_id(filter_id)
    created = world.brevo.contact(email("Bob", tier))
    assert created is not None

    world.pipedrive.update_person(ids["Ann"], first_name="Anna")  # name change
    world.pipedrive.update_person(ids["Bob"], emails=["bob.new@incp.example.com"])  # email
    world.pipedrive.set_tier(ids["Cid"], None)  # leaves
    world.pipedrive.set_tier(outsider, tier)  # joins
    eve = world.pipedrive.person("Eve", "Test", email("Eve", tier), tier=tier)  # new
    calls, mark = Calls(world), exchanges.mark()

    job = one_job(burst(world, deliveries))

    # Read from Pipedrive: the four members that changed (Cid is no longer one).
    assert counts(job) == (4, 2, 2, 1, 0)
    assert calls.made() == {PERSONS: 1}
    (query,) = listing_queries(exchanges, mark, "/api/v2/persons")
    assert query["filter_id"] == [str(filter_id)] and "updated_since" in query
    assert world.brevo.emails(list_id) == sorted(
        [
            email("Ann", tier),
            "bob.new@incp.example.com",
            email("Dan", tier),
            email("Eve", tier),
            email("Fay", tier),
        ]
    )
    assert attributes(world, email("Ann", tier))["FIRSTNAME"] == "Anna"
    renamed = world.brevo.contact("bob.new@incp.example.com")
    assert renamed is not None and renamed["id"] == created["id"]  # renamed in place
    assert set(world.ledger(filter_id)) == {ids["Ann"], ids["Bob"], outsider, eve, ids["Fay"]}
    assert change_count(filter_id) == 0


def test_v1_deliveries_are_applied_like_v2(world: World, deliveries: Deliveries) -> None:
    tier = "INCV1"
    filter_id, ids = people_filter(world, deliveries, tier, "Ann", "Bob")
    world.pipedrive.update_person(ids["Ann"], last_name="Changed")
    world.pipedrive.set_tier(ids["Bob"], None)
    cat = world.pipedrive.person("Cat", "Test", email("Cat", tier), tier=tier)

    job = one_job(burst(world, deliveries, version="1"))

    assert counts(job) == (2, 1, 1, 1, 0)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Ann", tier), email("Cat", tier)]
    assert attributes(world, email("Ann", tier))["LASTNAME"] == "Changed"
    assert set(world.ledger(filter_id)) == {ids["Ann"], cat}


def test_only_deletions_make_no_pipedrive_call(world: World, deliveries: Deliveries) -> None:
    tier = "INCDEL"
    filter_id, ids = people_filter(world, deliveries, tier, "Ann", "Bob", "Cat")
    world.pipedrive.delete_person(ids["Ann"])
    world.pipedrive.delete_person(ids["Cat"])
    calls = Calls(world)

    job = one_job(burst(world, deliveries))

    assert counts(job) == (0, 0, 0, 2, 0)
    assert calls.made() == {}
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Bob", tier)]
    assert set(world.ledger(filter_id)) == {ids["Bob"]}


def test_nothing_to_change_writes_nothing_to_brevo(
    world: World, deliveries: Deliveries, exchanges: Exchanges
) -> None:
    """A change of a field the sync does not send (a phone) reads the member and stops."""
    tier = "INCNOP"
    filter_id, ids = people_filter(world, deliveries, tier, "Ann", "Bob")
    world.pipedrive.update_person(ids["Ann"], phones=["+49 30 1234567"])
    mark = exchanges.mark()

    job = one_job(burst(world, deliveries))

    assert counts(job) == (1, 0, 0, 0, 0)
    assert [e for e in exchanges.since(mark) if e.path.startswith("/v3/")] == []
    assert change_count(filter_id) == 0


def test_a_relist_change_lists_the_filter_whole(
    world: World, deliveries: Deliveries, exchanges: Exchanges
) -> None:
    """A people filter on an organization's name: renaming the organization moves persons
    in without touching their update_time, so the event re-lists the filter."""
    fake = world.pipedrive.fake
    first = fake.control("POST", "/_sandbox/organizations", json={"name": "Relist Alpha"}).json()
    other = fake.control("POST", "/_sandbox/organizations", json={"name": "Relist Beta"}).json()
    people = {}
    for name, org in (("Ann", first), ("Bob", other), ("Cat", other)):
        body = {"first_name": name, "last_name": "Test", "emails": [email(name, "relist")]}
        people[name] = fake.control("POST", "/_sandbox/persons", json={**body, "org_id": org["id"]})
    conditions = groups([condition("organization", "name", "=", "Relist Alpha")])
    filter_id = world.pipedrive.filter("Incremental relist", "people", conditions)
    age_records(world)
    world.refresh()
    assert counts(completed(world.sync(filter_id))) == (1, 1, 0, 0, 0)
    assert world.query("SELECT related_objects FROM filters WHERE id = ?", filter_id) == [
        ("organization",)
    ]
    deliveries.take()
    fake.control("PATCH", f"/_sandbox/organizations/{other['id']}", json={"name": "Relist Alpha"})
    mark = exchanges.mark()

    job = one_job(burst(world, deliveries))

    assert counts(job) == (3, 2, 0, 0, 0)
    (query,) = listing_queries(exchanges, mark, "/api/v2/persons")
    assert query["filter_id"] == [str(filter_id)] and "updated_since" not in query
    assert world.brevo.emails(world.list_id(filter_id)) == [
        email(n, "relist") for n in ("Ann", "Bob", "Cat")
    ]


def test_pipedrive_ignoring_updated_since_falls_back_to_a_whole_listing(
    world: World, deliveries: Deliveries
) -> None:
    tier = "INCIGN"
    filter_id, ids = people_filter(world, deliveries, tier, "Ann", "Bob", "Cat")
    world.pipedrive.fake.control("PUT", "/_sandbox/settings", json={"ignore_updated_since": True})
    world.pipedrive.update_person(ids["Bob"], first_name="Bobby")
    calls = Calls(world)

    job = one_job(burst(world, deliveries))

    assert job.note == IGNORED_NOTE
    assert counts(job) == (3, 0, 1, 0, 0)  # the whole filter, read once it was detected
    assert calls.made() == {PERSONS: 2}
    assert world.brevo.emails(world.list_id(filter_id)) == [
        email(n, tier) for n in ("Ann", "Bob", "Cat")
    ]
    assert attributes(world, email("Bob", tier))["FIRSTNAME"] == "Bobby"


def test_a_list_deleted_in_brevo_is_recreated_and_refilled(
    world: World, deliveries: Deliveries
) -> None:
    tier = "INCGONE"
    filter_id, ids = people_filter(world, deliveries, tier, "Ann", "Bob")
    old_list = world.list_id(filter_id)
    world.brevo.delete_list(old_list)
    world.pipedrive.update_person(ids["Ann"], first_name="Annie")

    job = one_job(burst(world, deliveries))

    new_list = world.list_id(filter_id)
    assert new_list != old_list
    assert job.note == (
        f"Brevo list {old_list} was deleted in Brevo: created list {new_list} and filled it again."
    )
    assert counts(job) == (2, 2, 0, 0, 0)
    assert world.brevo.emails(new_list) == [email("Ann", tier), email("Bob", tier)]
    assert attributes(world, email("Ann", tier))["FIRSTNAME"] == "Annie"


def test_changes_stay_when_the_job_fails_midway_and_are_applied_by_the_next(
    world: World, deliveries: Deliveries, contract_ledger: Any
) -> None:
    """Bob leaves and Cat joins; Brevo refuses the key (rotated, say) right after Bob's
    removal was confirmed. The job fails, the changes stay; once the pause after a failure
    is over the next job adds Cat and does not remove anything again."""
    tier = "INCFAIL"
    filter_id, ids = people_filter(world, deliveries, tier, "Ann", "Bob")
    world.pipedrive.set_tier(ids["Bob"], None)
    cat = world.pipedrive.person("Cat", "Test", email("Cat", tier), tier=tier)
    world.clock.advance(1)
    deliveries.deliver(world.clock.now())
    world.clock.advance(WINDOW)
    (job_id,) = drain(world.clock.now(), WINDOW, lambda _: None, lambda: None).jobs
    job = claim_job(job_id, new_token(), world.clock.now())
    assert job is not None
    brevo = world.brevo.fake

    def rotate_the_key_after_the_removal() -> None:
        if any(op.endswith("/contacts/remove") for op in world.brevo.calls()):
            brevo.control("PUT", "/_sandbox/settings", json={"token": "a-rotated-key"})

    run = IncrementalSync.for_settings(
        job, world.settings, world.clock.now, rotate_the_key_after_the_removal
    )
    with pytest.raises(ApiAuthError):
        run.run()
    fail_job(job.id, job.token, world.clock.now(), "Brevo refused the key")
    brevo.control("PUT", "/_sandbox/settings", json={"token": brevo.defaults["token"]})
    # The refusal came before the fake read the body: the recorded request has none.
    violations = contract_ledger.take_violations()
    assert violations and all("POST /contacts" in str(v) for v in violations), violations

    assert world.brevo.emails(world.list_id(filter_id)) == [email("Ann", tier)]
    assert set(world.ledger(filter_id)) == {ids["Ann"]}  # the removal was confirmed
    assert change_count(filter_id) == 2
    # Within the pause after a failure no job starts; after it, the changes are applied.
    world.clock.advance(RETRY_AFTER_FAILURE - WINDOW - 2)
    assert burst(world, deliveries) == []
    world.clock.advance(WINDOW + 2)
    retried = one_job(burst(world, deliveries))
    assert counts(retried) == (1, 1, 0, 0, 0)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Ann", tier), email("Cat", tier)]
    assert set(world.ledger(filter_id)) == {ids["Ann"], cat}
    assert change_count(filter_id) == 0


def test_deal_filter_ignoring_updated_since_falls_back_to_a_whole_listing(
    world: World, deliveries: Deliveries
) -> None:
    prefix = "INCDIGN"
    filter_id, _, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.fake.control("PUT", "/_sandbox/settings", json={"ignore_updated_since": True})
    rex = world.pipedrive.person("Rex", "Test", email("Rex", prefix), tier=None)
    entered = world.pipedrive.deal(f"{prefix} Rex", rex)
    calls = Calls(world)

    job = one_job(burst(world, deliveries))

    assert job.note == IGNORED_NOTE
    assert counts(job) == (3, 1, 0, 0, 0)
    # The ignored answer (detected before Rex was looked up), then the whole listing.
    assert calls.made() == {DEALS: 2, PERSONS: 1}
    assert world.brevo.emails(world.list_id(filter_id)) == [
        email(n, prefix) for n in ("Pia", "Quin", "Rex")
    ]
    assert set(world.ledger(filter_id)) == {deals["Pia"], deals["Quin"], entered}


# --- deal filters ---------------------------------------------------------------------------


def test_deal_filter_takes_person_changes_from_the_webhook_data(
    world: World, deliveries: Deliveries
) -> None:
    prefix = "INCD"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.update_person(
        persons["Pia"], emails=["pia.new@incd.example.com"], first_name="Pippa"
    )
    calls = Calls(world)

    job = one_job(burst(world, deliveries))

    assert counts(job) == (0, 0, 1, 0, 0)
    assert calls.made() == {}  # no deal listing, no person read
    assert world.brevo.emails(world.list_id(filter_id)) == [
        "pia.new@incd.example.com",
        email("Quin", prefix),
    ]
    assert attributes(world, "pia.new@incd.example.com")["FIRSTNAME"] == "Pippa"
    assert world.ledger(filter_id)[deals["Pia"]][0] == "pia.new@incd.example.com"


def test_deals_entering_leaving_and_deleted(world: World, deliveries: Deliveries) -> None:
    prefix = "INCDM"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin", "Sol")
    rex = world.pipedrive.person("Rex", "Test", email("Rex", prefix), tier=None)
    age_records(world)
    deliveries.take()
    world.pipedrive.update_deal(deals["Quin"], title="Elsewhere Quin")  # leaves
    world.pipedrive.fake.control("DELETE", f"/_sandbox/deals/{deals['Sol']}")  # deleted
    entered = world.pipedrive.deal(f"{prefix} Rex", rex)  # enters
    calls = Calls(world)

    job = one_job(burst(world, deliveries))

    # The new deal is listed (Quin's is no longer a member); Rex is looked up once.
    assert counts(job) == (1, 1, 0, 2, 0)
    assert calls.made() == {DEALS: 1, PERSONS: 1}
    assert world.brevo.emails(world.list_id(filter_id)) == [
        email("Pia", prefix),
        email("Rex", prefix),
    ]
    assert set(world.ledger(filter_id)) == {deals["Pia"], entered}


def test_an_older_delivery_never_overwrites_newer_ledger_data(
    world: World, deliveries: Deliveries, exchanges: Exchanges
) -> None:
    prefix = "INCOLD"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia")
    world.pipedrive.update_person(persons["Pia"], first_name="Second")
    world.pipedrive.update_person(persons["Pia"], first_name="Third")
    second, third = deliveries.take()
    assert second.at < third.at

    assert counts(one_job(burst(world, deliveries, events=[third]))) == (0, 0, 1, 0, 0)
    assert attributes(world, email("Pia", prefix))["FIRSTNAME"] == "Third"
    held = world.query(
        "SELECT first_name, source_time FROM memberships WHERE filter_id = ? AND entity_id = ?",
        filter_id,
        deals["Pia"],
    )
    assert held == [("Third", int(third.at.timestamp()))]

    mark = exchanges.mark()
    late = one_job(burst(world, deliveries, events=[second]))

    assert counts(late) == (0, 0, 0, 0, 0)
    assert [e for e in exchanges.since(mark) if e.path.startswith("/v3/")] == []
    assert attributes(world, email("Pia", prefix))["FIRSTNAME"] == "Third"
    assert (
        world.query(
            "SELECT first_name, source_time FROM memberships WHERE filter_id = ? AND entity_id = ?",
            filter_id,
            deals["Pia"],
        )
        == held
    )
    assert change_count(filter_id) == 0


def test_a_merged_persons_deals_move_to_the_survivor(world: World, deliveries: Deliveries) -> None:
    """Only the persons' deliveries (the delete naming the survivor, the survivor's
    change): the merged person's deal takes the survivor's data, with no Pipedrive call,
    and the list ends with the one contact."""
    prefix = "INCMRG"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.fake.control(
        "POST", f"/_sandbox/persons/{persons['Pia']}/merge", json={"into": persons["Quin"]}
    )
    announced = deliveries.take()
    person_events = [e for e in announced if e.entity == "person"]
    assert [(e.action, e.merged_to_id) for e in person_events] == [
        ("delete", persons["Quin"]),
        ("change", None),
    ]
    calls = Calls(world)

    job = one_job(burst(world, deliveries, events=person_events))

    assert calls.made() == {}
    # Pia's deal now carries Quin's address, already listed: Pia's address leaves.
    assert counts(job) == (0, 0, 0, 1, 0)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Quin", prefix)]
    assert world.query(
        "SELECT entity_id, person_id, email FROM memberships WHERE filter_id = ? "
        "ORDER BY entity_id",
        filter_id,
    ) == [
        (deals["Pia"], persons["Quin"], email("Quin", prefix)),
        (deals["Quin"], persons["Quin"], email("Quin", prefix)),
    ]


def test_a_merge_with_every_delivery_ends_with_one_contact(
    world: World, deliveries: Deliveries
) -> None:
    prefix = "INCMRG2"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.fake.control(
        "POST", f"/_sandbox/persons/{persons['Pia']}/merge", json={"into": persons["Quin"]}
    )

    job = one_job(burst(world, deliveries))

    # Pia's deal is listed (it changed hands), with Quin's address: Pia's leaves.
    assert counts(job) == (1, 0, 0, 1, 0)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Quin", prefix)]


def test_a_deleted_persons_email_leaves_the_deal_filters_list(
    world: World, deliveries: Deliveries
) -> None:
    prefix = "INCDPD"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.delete_person(persons["Pia"])
    calls = Calls(world)

    job = one_job(burst(world, deliveries))

    assert calls.made() == {}
    assert counts(job) == (0, 0, 0, 1, 1)  # the deal stays, without an email: skipped
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Quin", prefix)]
    assert world.ledger(filter_id)[deals["Pia"]][0] is None


def test_a_deal_filter_on_person_fields_applies_a_persons_new_email(
    world: World, deliveries: Deliveries
) -> None:
    """A deal filter whose conditions name person fields is re-listed on a person event;
    the person's new address must still reach the list (route gives such a filter no
    person change, so the re-listing takes the ledger's old address)."""
    prefix = "INCDP"
    conditions = groups(
        [
            condition("deal", "title", "LIKE '$%'", prefix),
            condition("person", "name", "IS NOT NULL"),
        ]
    )
    filter_id = world.pipedrive.filter("Incremental deals on persons", "deals", conditions)
    pia = world.pipedrive.person("Pia", "Test", email("Pia", prefix), tier=None)
    world.pipedrive.deal(f"{prefix} Pia", pia)
    age_records(world)
    world.refresh()
    assert counts(completed(world.sync(filter_id))) == (1, 1, 0, 0, 0)
    deliveries.take()
    world.pipedrive.update_person(pia, emails=["pia.moved@incdp.example.com"])

    one_job(burst(world, deliveries))

    assert world.brevo.emails(world.list_id(filter_id)) == ["pia.moved@incdp.example.com"]


def test_a_survivor_deleted_in_the_same_burst_takes_the_merged_deals_address_along(
    world: World, deliveries: Deliveries
) -> None:
    """Pia is merged into Quin, then Quin is deleted, within one burst; the deals'
    deliveries are lost (a ban, say). Neither person exists: no address may stay."""
    prefix = "INCMD"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.fake.control(
        "POST", f"/_sandbox/persons/{persons['Pia']}/merge", json={"into": persons["Quin"]}
    )
    world.pipedrive.delete_person(persons["Quin"])
    person_events = [e for e in deliveries.take() if e.entity == "person"]

    one_job(burst(world, deliveries, events=person_events))

    assert world.brevo.emails(world.list_id(filter_id)) == []


def test_persons_moving_between_filters_join_by_add_to_list_after_leaving_the_other(
    world: World, deliveries: Deliveries, exchanges: Exchanges
) -> None:
    """Brevo confirmed these contacts for the first filter; once that filter's job removed
    them (its ledger forgets them), the second filter still only adds them to its list:
    one add-to-list call for all of them, no upsert, no import."""
    first, ids = people_filter(world, deliveries, "MOVEA", *[f"P{i}" for i in range(25)])
    second, _ = people_filter(world, deliveries, "MOVEB", "Zed")
    for person_id in ids.values():
        world.pipedrive.set_tier(person_id, "MOVEB")
    mark = exchanges.mark()

    world.clock.advance(1)
    deliveries.deliver(world.clock.now(), "2", None)
    world.clock.advance(WINDOW)
    world.enqueued.clear()
    drain(world.clock.now(), WINDOW, world.enqueued.append, lambda: None)
    # The first filter's job runs first: it removes them, and its ledger forgets them.
    by_filter = {jobs.get_job(j).filter_id: j for j in world.enqueued}  # type: ignore[union-attr]
    assert counts(completed(world.run(by_filter[first]))) == (0, 0, 0, 25, 0)
    assert counts(completed(world.run(by_filter[second]))) == (25, 25, 0, 0, 0)

    writes = [(e.method, e.path) for e in exchanges.since(mark) if e.method != "GET"]
    moved = sorted(email(f"P{i}", "MOVEA") for i in range(25))
    assert world.brevo.emails(world.list_id(second)) == sorted([*moved, email("Zed", "MOVEB")])
    assert world.brevo.emails(world.list_id(first)) == []
    second_list = world.list_id(second)
    assert writes.count(("POST", f"/v3/contacts/lists/{second_list}/contacts/add")) == 1
    assert ("POST", "/v3/contacts") not in writes
    assert ("POST", "/v3/contacts/import") not in writes


# --- regressions found by the crash loop (tests/reliability/test_crash_loop.py) ---------
def test_a_deal_leaving_in_the_burst_of_its_persons_change_leaves_the_list(
    world: World, deliveries: Deliveries
) -> None:
    """Fix 1 (incremental.stage_person_data): the person's webhook data must not stage
    back a deal that changed and is absent from Pipedrive's answer."""
    prefix = "INCDX"
    filter_id, persons, deals = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.update_person(persons["Quin"], first_name="Quincy")
    world.pipedrive.update_deal(deals["Quin"], title="Elsewhere Quin")
    for job in burst(world, deliveries):
        completed(job)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Pia", prefix)]


def test_an_email_change_seen_by_two_filters_leaves_no_old_address(
    world: World, deliveries: Deliveries
) -> None:
    """Fix 2 (ledger.pending_contacts): a known new address is not added before the
    removals when confirming it would rewrite a ledger row listed under the old one."""
    world.brevo.add_by_hand(email("Pia", "TWOA"))  # not ours: replaced, not renamed
    first, ids = people_filter(world, deliveries, "TWOA", "Pia", "Quin")
    second = world.pipedrive.people_filter("Everyone TWOA", "TWOA")
    world.refresh()
    completed(world.sync(second))
    age_records(world)
    deliveries.take()
    world.pipedrive.update_person(ids["Pia"], emails=["pia.new@twoa.example.com"])
    for job in burst(world, deliveries):
        completed(job)
    want = ["pia.new@twoa.example.com", email("Quin", "TWOA")]
    assert world.brevo.emails(world.list_id(first)) == want
    assert world.brevo.emails(world.list_id(second)) == want


def test_a_deal_merged_to_a_person_known_elsewhere_drops_the_old_address(
    world: World, deliveries: Deliveries
) -> None:
    """Fix 2 as well: the deal changes hands (merge), the survivor's address is already
    confirmed by another filter; the merged person's address must still leave."""
    prefix = "MRGX"
    _, tiered = people_filter(world, deliveries, "MRGXT", "Rosa")
    filter_id, persons, _ = deal_filter(world, deliveries, prefix, "Walt", "Quin")
    world.pipedrive.fake.control(
        "POST", f"/_sandbox/persons/{persons['Walt']}/merge", json={"into": tiered["Rosa"]}
    )
    for job in burst(world, deliveries):
        completed(job)
    assert world.brevo.emails(world.list_id(filter_id)) == sorted(
        [email("Rosa", "MRGXT"), email("Quin", prefix)]
    )
    world.pipedrive.delete_person(tiered["Rosa"])
    for job in burst(world, deliveries):
        completed(job)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Quin", prefix)]


def test_a_change_arriving_after_the_persons_delete_does_not_bring_it_back(
    world: World, deliveries: Deliveries
) -> None:
    """Fix 3 (changes.deleted_at): a deal filter's ledger keeps the deletion's time, so
    an older change delivered late (a retry after the web was down) is refused."""
    prefix = "LATEDEL"
    filter_id, persons, _ = deal_filter(world, deliveries, prefix, "Pia", "Quin")
    world.pipedrive.update_person(persons["Quin"], first_name="Quincy")
    (change,) = deliveries.take()
    world.pipedrive.delete_person(persons["Quin"])
    (delete,) = deliveries.take()
    for job in burst(world, deliveries, events=[delete]):
        completed(job)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Pia", prefix)]
    for job in burst(world, deliveries, events=[change]):
        completed(job)
    assert world.brevo.emails(world.list_id(filter_id)) == [email("Pia", prefix)]


def test_a_contact_renamed_by_one_filter_leaves_the_list_its_deal_left(
    world: World, deliveries: Deliveries
) -> None:
    """Fix 4 (ledger.record_renaming, Applier.remove_departed): a rename in place moves
    the contact in every list; a filter the person's deal left takes the new address out."""
    p = world.pipedrive
    people = p.people_filter("Rename race people", "RRACE")
    deals = p.deal_filter("Rename race deals", "RR-")
    walt = p.person("Walt", "Test", "walt@rrace.example.com", tier="RRACE")
    pia = p.person("Pia", "Test", "pia@rrace.example.com", tier=None)
    deal = p.deal("RR-1", walt)
    p.deal("RR-2", pia)
    age_records(world)
    world.refresh()
    completed(world.sync(people))
    completed(world.sync(deals))
    deliveries.take()
    p.update_deal(deal, title="Elsewhere")
    p.update_person(walt, emails=["walt.new@rrace.example.com"])
    for job in burst(world, deliveries):
        completed(job)
    assert world.brevo.emails(world.list_id(people)) == ["walt.new@rrace.example.com"]
    assert world.brevo.emails(world.list_id(deals)) == ["pia@rrace.example.com"]
