"""workers/sync/members.py: a filter's members read from the fake Pipedrive over HTTP.

Deal filters need each deal's person: looked up in batches of at most 100 when the ledger
does not hold it, taken from the ledger when it does, and read fresh when the person
changed since the previous full resync.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from service.clients.factory import pipedrive_client
from tests.sync.conftest import Exchanges, World, completed, counts
from workers.sync.claims import claim_job
from workers.sync.members import LOOKUP_BATCH, DealMembers, people_members
from workers.sync.plan import stage

WON_DEALS = 4  # seeded deal filter: 135 deals, 121 persons, a few deals without one
PERSONS = "/api/v2/persons"


def lookups(exchanges: Exchanges, mark: int = 0) -> list[list[int]]:
    """The person ids of each ``GET /api/v2/persons?ids=`` call since ``mark``."""
    found = []
    for exchange in exchanges.since(mark):
        if exchange.method == "GET" and exchange.path == PERSONS:
            query = parse_qs(exchange.query)
            if "ids" in query:
                found.append([int(i) for i in query["ids"][0].split(",")])
    return found


def persons_calls(world: World) -> int:
    return world.pipedrive.calls().get(f"GET {PERSONS}", 0)


def test_deal_members_look_up_persons_in_batches_of_at_most_100(
    world: World, exchanges: Exchanges
) -> None:
    state = world.pipedrive.fake.app.state.fake
    with state.lock:
        deal_ids = state.members(WON_DEALS).ids
        person_of = {d: state.data.deals[d].person_id for d in deal_ids}
    wanted = {p for p in person_of.values() if p is not None}
    assert len(wanted) > LOOKUP_BATCH  # the test covers more than one batch

    reader = DealMembers(pipedrive_client(world.settings), WON_DEALS, changed_since=None)
    members = [m for page in reader for m in page]

    batches = lookups(exchanges)
    assert all(len(b) <= LOOKUP_BATCH for b in batches)
    assert len(batches[0]) == LOOKUP_BATCH  # full batches, not one call per page
    assert len(batches) == 2
    assert {p for b in batches for p in b} == wanted
    assert persons_calls(world) == len(batches) == reader.lookups
    assert sorted(m.entity_id for m in members) == sorted(deal_ids)
    assert {m.entity_id: m.person_id for m in members} == person_of
    assert all(m.email is None for m in members if m.person_id is None)


def test_each_person_is_looked_up_once_per_run(world: World, exchanges: Exchanges) -> None:
    """A person with deals on both sides of a batch is found in what the job staged."""
    world.refresh()
    job_id = world.create(WON_DEALS)
    assert claim_job(job_id, "token", world.clock.now()) is not None
    reader = DealMembers(
        pipedrive_client(world.settings), WON_DEALS, changed_since=None, job_id=job_id
    )
    for page in reader:
        stage(job_id, "token", page)
    looked_up = [p for batch in lookups(exchanges) for p in batch]
    assert len(looked_up) == len(set(looked_up))


def test_known_persons_are_not_looked_up_again_on_the_next_sync(
    world: World, exchanges: Exchanges
) -> None:
    """The first sync of a deal filter looks its persons up (and imports its contacts);
    the second takes them from the ledger and sends nothing."""
    world.refresh()
    first = completed(world.sync(WON_DEALS))
    assert first.total_added > 20  # an import
    first_batches = lookups(exchanges)
    assert len(first_batches) == 2 and all(len(b) <= LOOKUP_BATCH for b in first_batches)
    writes = world.brevo.writes()

    mark = exchanges.mark()
    second = completed(world.sync(WON_DEALS))
    assert lookups(exchanges, mark) == []
    changed_reads = [parse_qs(e.query) for e in exchanges.since(mark) if e.path == PERSONS]
    # One read of the persons changed since the previous resync; no look-up by id.
    assert len(changed_reads) == 1 and "updated_since" in changed_reads[0]
    assert world.brevo.writes() == writes
    assert counts(second) == (first.total_fetched, 0, 0, 0, first.total_skipped)


def test_changed_person_is_read_fresh_and_reaches_brevo(world: World, exchanges: Exchanges) -> None:
    p = world.pipedrive
    filter_id = p.deal_filter("Deal members", "DM-")
    anna = p.person("Anna", "Alpha", "anna@dm.example.com")
    bert = p.person("Bert", "Beta", "bert@dm.example.com")
    cleo = p.person("Cleo", "Gamma", "cleo@dm.example.com")
    deals = [p.deal("DM-1", anna), p.deal("DM-2", bert), p.deal("DM-3", cleo)]
    deals.append(p.deal("DM-4", anna))  # a second deal of Anna's
    world.refresh()
    first = completed(world.sync(filter_id))
    assert counts(first) == (4, 3, 0, 0, 0)
    list_id = world.list_id(filter_id)

    p.update_person(anna, first_name="Annabel")
    p.update_person(bert, emails=["bert.new@dm.example.com"])
    mark = exchanges.mark()
    second = completed(world.sync(filter_id))

    assert lookups(exchanges, mark) == []  # the changed persons came with the changes read
    assert counts(second) == (4, 0, 2, 0, 0)
    annabel = world.brevo.contact("anna@dm.example.com")
    assert annabel is not None and annabel["attributes"]["FIRSTNAME"] == "Annabel"
    assert world.brevo.emails(list_id) == [
        "anna@dm.example.com",
        "bert.new@dm.example.com",
        "cleo@dm.example.com",
    ]
    renamed = world.brevo.contact("bert.new@dm.example.com")
    assert renamed is not None and renamed["attributes"]["FIRSTNAME"] == "Bert"
    assert world.brevo.contact("bert@dm.example.com") is None  # renamed in place
    ledger = world.ledger(filter_id)
    assert ledger[deals[0]][0] == ledger[deals[3]][0] == "anna@dm.example.com"
    assert ledger[deals[1]][0] == "bert.new@dm.example.com"
    names = world.query(
        "SELECT DISTINCT first_name FROM memberships WHERE filter_id = ? AND person_id = ?",
        filter_id,
        anna,
    )
    assert names == [("Annabel",)]

    # And nothing more to do afterwards.
    writes = world.brevo.writes()
    assert counts(completed(world.sync(filter_id))) == (4, 0, 0, 0, 0)
    assert world.brevo.writes() == writes


def test_people_members_are_the_filters_persons_with_normalised_emails(world: World) -> None:
    p = world.pipedrive
    filter_id = p.people_filter("People members", "PM")
    mixed = p.person("Mia", "Mixed", "  Mia.Mixed@PM.Example.COM ", tier="PM")
    none = p.person("Nora", None, tier="PM")
    bad = p.person("Ivy", "Invalid", "not-an-email", tier="PM")
    p.person("Out", "Side", "out@pm.example.com", tier="other")

    members = [
        m for page in people_members(pipedrive_client(world.settings), filter_id) for m in page
    ]

    by_id = {m.entity_id: m for m in members}
    assert sorted(by_id) == sorted([mixed, none, bad])
    assert by_id[mixed].email == "mia.mixed@pm.example.com"
    assert (by_id[mixed].first_name, by_id[mixed].last_name) == ("Mia", "Mixed")
    assert by_id[none].email is None and by_id[none].last_name is None
    assert by_id[bad].email is None
    assert all(m.person_id == m.entity_id for m in members)
