"""workers/sync/full_resync.py, apply.py, lists.py and ledger.py: full resyncs run in this
process (``run_job``) against the fake Pipedrive and the fake Brevo over HTTP.

Each test builds a small filter in the fake Pipedrive (a people filter of the persons of
one "tier", or a deal filter of deals by title), mirrors it with ``refresh_filters`` and
syncs it; Brevo's side is read back from the fake's control API and from the exchanges the
fakes recorded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from service import jobs
from service.clients.errors import ApiError
from tests.sync.conftest import (
    MARKETING_FOLDER,
    Exchanges,
    World,
    body_of,
    carries,
    completed,
    counts,
)
from workers.sync.claims import claim_job, fail_job, finish_job, new_token
from workers.sync.full_resync import DRY_RUN_NOTE, FullResync

REFUSED = "rex..dots@fr.example.com"  # looks like an email to us; Brevo refuses it


def people_filter(
    world: World, tier: str, *people: tuple[str, str | None]
) -> tuple[int, dict[str, int]]:
    """A people filter of ``tier`` with these (first name, email) persons, mirrored into
    the database: its id and the persons' ids by first name."""
    filter_id = world.pipedrive.people_filter(f"Full resync {tier}", tier)
    ids = {
        first: world.pipedrive.person(first, "Test", *([email] if email else []), tier=tier)
        for first, email in people
    }
    world.refresh()
    return filter_id, ids


def renames(exchanges: Exchanges, mark: int = 0) -> list[str]:
    """The contacts renamed through ``PUT /contacts/{identifier}`` with an ``EMAIL``."""
    return [
        e.path.rsplit("/", 1)[1]
        for e in exchanges.since(mark)
        if e.method == "PUT"
        and e.path.startswith("/v3/contacts/")
        and not e.path.startswith("/v3/contacts/lists")
        and "EMAIL" in (body_of(e) or {}).get("attributes", {})
    ]


def writes_carrying(exchanges: Exchanges, email: str, mark: int = 0) -> list[str]:
    """``METHOD path status`` of the Brevo writes since ``mark`` that name ``email``."""
    return [
        f"{e.method} {e.path} {e.status}"
        for e in exchanges.since(mark)
        if e.path.startswith("/v3/") and e.method != "GET" and carries(e, email)
    ]


# --- rejected addresses ----------------------------------------------------------------


def test_refused_address_is_skipped_and_not_sent_again_until_the_person_changes(
    world: World, exchanges: Exchanges
) -> None:
    filter_id, ids = people_filter(
        world, "REJ", ("Olga", "olga@fr.example.com"), ("Rex", REFUSED), ("Nora", None)
    )
    first = completed(world.sync(filter_id))
    assert counts(first) == (3, 1, 0, 0, 2)
    assert writes_carrying(exchanges, REFUSED) == ["POST /v3/contacts 400"]
    assert world.ledger(filter_id)[ids["Rex"]] == (REFUSED, "rejected", 0)
    list_id = world.list_id(filter_id)
    assert world.brevo.emails(list_id) == ["olga@fr.example.com"]

    mark = exchanges.mark()
    second = completed(world.sync(filter_id))
    assert counts(second) == (3, 0, 0, 0, 2)
    assert [e for e in exchanges.since(mark) if e.method != "GET"] == []

    world.pipedrive.update_person(ids["Rex"], first_name="Rexford")
    mark = exchanges.mark()
    third = completed(world.sync(filter_id))
    assert counts(third) == (3, 0, 0, 0, 2)
    assert writes_carrying(exchanges, REFUSED, mark) == ["POST /v3/contacts 400"]
    assert world.ledger(filter_id)[ids["Rex"]] == (REFUSED, "rejected", 0)


def test_email_change_to_a_refused_address_is_skipped_and_the_old_one_removed(
    world: World, exchanges: Exchanges
) -> None:
    filter_id, ids = people_filter(world, "REFCHG", ("Pat", "pat@fr.example.com"))
    completed(world.sync(filter_id))
    world.pipedrive.update_person(ids["Pat"], emails=[REFUSED])

    job = completed(world.sync(filter_id))

    assert counts(job) == (1, 0, 0, 1, 1)
    assert world.brevo.emails(world.list_id(filter_id)) == []  # Pat no longer has that address
    assert world.brevo.contact("pat@fr.example.com") is not None  # renamed nowhere
    assert world.ledger(filter_id)[ids["Pat"]] == (REFUSED, "rejected", 0)
    mark = exchanges.mark()
    assert counts(completed(world.sync(filter_id))) == (1, 0, 0, 0, 1)
    assert [e for e in exchanges.since(mark) if e.method != "GET"] == []


# --- email changes -----------------------------------------------------------------------


def test_email_change_renames_a_contact_this_service_created_in_place(
    world: World, exchanges: Exchanges
) -> None:
    filter_id, ids = people_filter(world, "REN", ("Pat", "pat@fr.example.com"))
    completed(world.sync(filter_id))
    list_id = world.list_id(filter_id)
    created = world.brevo.contact("pat@fr.example.com")
    assert created is not None
    assert world.ledger(filter_id)[ids["Pat"]] == ("pat@fr.example.com", "listed", 1)

    world.pipedrive.update_person(ids["Pat"], emails=["pat.new@fr.example.com"])
    mark = exchanges.mark()
    job = completed(world.sync(filter_id))

    assert counts(job) == (1, 0, 1, 0, 0)
    assert renames(exchanges, mark) == ["pat@fr.example.com"]
    writes = [f"{e.method} {e.path}" for e in exchanges.since(mark) if e.method != "GET"]
    assert writes == ["PUT /v3/contacts/pat@fr.example.com"]  # nothing else: no remove, no add
    assert world.brevo.contact("pat@fr.example.com") is None
    renamed = world.brevo.contact("pat.new@fr.example.com")
    assert renamed is not None and renamed["id"] == created["id"]
    assert world.brevo.emails(list_id) == ["pat.new@fr.example.com"]
    assert world.ledger(filter_id)[ids["Pat"]] == ("pat.new@fr.example.com", "listed", 1)


def test_email_change_replaces_a_contact_this_service_may_not_rename(
    world: World, exchanges: Exchanges
) -> None:
    """Three members change their address; none of their contacts may be renamed in
    place: Hank's existed before this service (someone's, in their list 1), Sid's address
    is also another person's in another filter, Bea's contact was blocklisted. Each gets
    the new address upserted and the old one taken out of this list only."""
    world.brevo.add_by_hand("hank@fr.example.com", 1)
    filter_id, ids = people_filter(
        world,
        "REPLACE",
        ("Hank", "hank@fr.example.com"),
        ("Sid", "sid@fr.example.com"),
        ("Bea", "bea@fr.example.com"),
    )
    other_filter, _ = people_filter(world, "REPLACE-B", ("Sal", "sid@fr.example.com"))
    assert counts(completed(world.sync(filter_id))) == (3, 3, 0, 0, 0)
    assert counts(completed(world.sync(other_filter))) == (1, 1, 0, 0, 0)
    world.brevo.blocklist("bea@fr.example.com")
    assert {e: created for e, _, created in world.ledger(filter_id).values()} == {
        "hank@fr.example.com": 0,  # Brevo answered 204: it existed
        "sid@fr.example.com": 1,
        "bea@fr.example.com": 1,
    }
    for name in ("Hank", "Sid", "Bea"):
        world.pipedrive.update_person(ids[name], emails=[f"{name.lower()}.new@fr.example.com"])

    mark = exchanges.mark()
    job = completed(world.sync(filter_id))

    assert counts(job) == (3, 0, 3, 0, 0)
    assert renames(exchanges, mark) == []
    list_id = world.list_id(filter_id)
    assert world.brevo.emails(list_id) == [
        "bea.new@fr.example.com",
        "hank.new@fr.example.com",
        "sid.new@fr.example.com",
    ]
    old = {}
    for name in ("Hank", "Sid", "Bea"):
        contact = world.brevo.contact(f"{name.lower()}@fr.example.com")
        assert contact is not None, f"{name}'s old contact must survive: others use it"
        assert list_id not in contact["listIds"]
        assert world.brevo.contact(f"{name.lower()}.new@fr.example.com") is not None
        old[name] = contact
    assert 1 in old["Hank"]["listIds"]
    assert world.list_id(other_filter) in old["Sid"]["listIds"]
    assert world.brevo.emails(world.list_id(other_filter)) == ["sid@fr.example.com"]
    assert old["Bea"]["emailBlacklisted"] is True
    assert all("emailBlacklisted" not in (body_of(e) or {}) for e in exchanges.brevo_writes())
    assert world.ledger(filter_id)[ids["Hank"]] == ("hank.new@fr.example.com", "listed", 1)


def test_email_change_of_a_person_in_two_filters_renames_once_and_both_follow(
    world: World, exchanges: Exchanges
) -> None:
    """The same person in two filters is one identity: its contact is renamed in place,
    and the other filter's next sync finds the new address without a trace of the old."""
    filter_id, ids = people_filter(world, "TWO", ("Tea", "tea@fr.example.com"))
    other_filter = world.pipedrive.people_filter("Full resync TWO too", "TWO")
    world.refresh()
    completed(world.sync(filter_id))
    assert counts(completed(world.sync(other_filter))) == (1, 1, 0, 0, 0)
    created = world.brevo.contact("tea@fr.example.com")
    assert created is not None

    world.pipedrive.update_person(ids["Tea"], emails=["tea.new@fr.example.com"])
    mark = exchanges.mark()
    assert counts(completed(world.sync(filter_id))) == (1, 0, 1, 0, 0)
    assert renames(exchanges, mark) == ["tea@fr.example.com"]
    other = completed(world.sync(other_filter))

    assert counts(other) == (1, 0, 1, 0, 0)
    assert world.brevo.contact("tea@fr.example.com") is None
    renamed = world.brevo.contact("tea.new@fr.example.com")
    assert renamed is not None and renamed["id"] == created["id"]
    for each in (filter_id, other_filter):
        assert world.brevo.emails(world.list_id(each)) == ["tea.new@fr.example.com"]
        assert world.ledger(each)[ids["Tea"]][:2] == ("tea.new@fr.example.com", "listed")


def test_deal_given_to_another_person_leaves_the_first_persons_contact_alone(
    world: World, exchanges: Exchanges
) -> None:
    p = world.pipedrive
    filter_id = p.deal_filter("Full resync reassigned", "DR-")
    anna = p.person("Anna", "Alpha", "anna@dr.example.com")
    cleo = p.person("Cleo", "Gamma", "cleo@dr.example.com")
    deal = p.deal("DR-1", anna)
    p.deal("DR-2", cleo)
    world.refresh()
    completed(world.sync(filter_id))
    before = world.brevo.contact("anna@dr.example.com")
    assert before is not None
    bert = p.person("Bert", "Beta", "bert@dr.example.com")
    p.fake.control("PATCH", f"/_sandbox/deals/{deal}", json={"person_id": bert})

    mark = exchanges.mark()
    job = completed(world.sync(filter_id))

    assert renames(exchanges, mark) == []
    after = world.brevo.contact("anna@dr.example.com")
    assert after is not None, "Anna's contact was renamed to Bert's address"
    assert after["id"] == before["id"]
    assert after["attributes"]["FIRSTNAME"] == "Anna"
    bert_contact = world.brevo.contact("bert@dr.example.com")
    assert bert_contact is not None and bert_contact["id"] != before["id"]
    assert world.brevo.emails(world.list_id(filter_id)) == [
        "bert@dr.example.com",
        "cleo@dr.example.com",
    ]
    assert counts(job) == (2, 1, 0, 1, 0)


# --- nothing to do, removals ---------------------------------------------------------------


def test_second_run_after_a_completed_run_sends_nothing(world: World, exchanges: Exchanges) -> None:
    filter_id, _ = people_filter(
        world,
        "QUIET",
        ("Ada", "ada@fr.example.com"),
        ("Tom", "twins@fr.example.com"),
        ("Tim", "  TWINS@fr.example.com "),
        ("Nil", None),
        ("Rex", REFUSED),
        ("Ivy", "not-an-email"),
    )
    first = completed(world.sync(filter_id))
    assert counts(first) == (6, 2, 0, 0, 3)  # the twins are one contact
    writes = world.brevo.writes()
    ledger = world.ledger(filter_id)

    mark = exchanges.mark()
    second = completed(world.sync(filter_id))

    assert counts(second) == (6, 0, 0, 0, 3)
    assert world.brevo.writes() == writes
    assert [f"{e.method} {e.path}" for e in exchanges.since(mark) if e.path.startswith("/v3")] == [
        f"GET /v3/contacts/lists/{world.list_id(filter_id)}"
    ]
    assert world.ledger(filter_id) == ledger


def test_members_that_left_are_removed_unless_another_member_maps_the_email(
    world: World,
) -> None:
    filter_id, ids = people_filter(
        world,
        "LEAVE",
        ("Ann", "ann@fr.example.com"),
        ("Bob", "bob@fr.example.com"),
        ("Cat", "cat@fr.example.com"),
        ("Cal", "cat@fr.example.com"),
    )
    assert counts(completed(world.sync(filter_id))) == (4, 3, 0, 0, 0)
    list_id = world.list_id(filter_id)
    world.pipedrive.set_tier(ids["Ann"], None)
    world.pipedrive.set_tier(ids["Cat"], None)

    job = completed(world.sync(filter_id))

    assert counts(job) == (2, 0, 0, 1, 0)
    assert world.brevo.emails(list_id) == ["bob@fr.example.com", "cat@fr.example.com"]
    assert world.brevo.contact("ann@fr.example.com") is not None  # out of the list only
    assert sorted(world.ledger(filter_id)) == sorted([ids["Bob"], ids["Cal"]])


# --- the list ----------------------------------------------------------------------------


def test_list_deleted_in_brevo_is_recreated_with_a_note(world: World) -> None:
    filter_id, _ = people_filter(
        world, "GONE", ("Gus", "gus@fr.example.com"), ("Gil", "gil@fr.example.com")
    )
    completed(world.sync(filter_id))
    old_list = world.list_id(filter_id)
    world.brevo.delete_list(old_list)

    job = completed(world.sync(filter_id))

    new_list = world.list_id(filter_id)
    assert new_list != old_list
    assert job.note == (
        f"Brevo list {old_list} was deleted in Brevo: created list {new_list} and filled it again."
    )
    assert counts(job) == (2, 2, 0, 0, 0)
    assert world.brevo.emails(new_list) == ["gil@fr.example.com", "gus@fr.example.com"]
    brevo_list = world.brevo.list(new_list)
    assert brevo_list["name"] == f"Full resync GONE (Pipedrive #{filter_id})"
    assert brevo_list["folderId"] == MARKETING_FOLDER
    assert world.brevo.api("GET", f"/contacts/lists/{old_list}").status_code == 404
    # The next run finds the new list and has nothing to say.
    assert completed(world.sync(filter_id)).note is None


def test_renamed_filter_renames_the_list_at_the_next_sync(
    world: World, exchanges: Exchanges
) -> None:
    filter_id, _ = people_filter(world, "NAME", ("Nia", "nia@fr.example.com"))
    completed(world.sync(filter_id))
    list_id = world.list_id(filter_id)
    world.pipedrive.update_filter(filter_id, name="  Renamed filter ")
    world.refresh()  # the refresh in these tests has no Brevo client: the list keeps its name
    assert world.brevo.list(list_id)["name"] == f"Full resync NAME (Pipedrive #{filter_id})"

    mark = exchanges.mark()
    job = completed(world.sync(filter_id))

    assert counts(job) == (1, 0, 0, 0, 0)
    assert world.brevo.list(list_id)["name"] == f"Renamed filter (Pipedrive #{filter_id})"
    writes = [(e.method, e.path, body_of(e)) for e in exchanges.since(mark) if e.method != "GET"]
    assert writes == [
        (
            "PUT",
            f"/v3/contacts/lists/{list_id}",
            {"name": f"Renamed filter (Pipedrive #{filter_id})"},
        )
    ]
    assert world.list_id(filter_id) == list_id


def test_list_deleted_during_a_run_does_not_mark_its_contacts_rejected(world: World) -> None:
    filter_id, _ = people_filter(
        world, "MIDRUN", ("Mae", "mae@fr.example.com"), ("Max", "max@fr.example.com")
    )
    world.clock.advance(5)
    job = claim_job(
        jobs.create_job(filter_id, "full", "admin", False, world.clock.now()).id,
        new_token(),
        world.clock.now(),
    )
    assert job is not None
    deleted: list[int] = []

    def delete_the_list_once() -> None:
        # Called while members are read: after the list was made, before anything is sent.
        if not deleted:
            deleted.append(world.list_id(filter_id))
            world.brevo.delete_list(deleted[0])

    try:
        FullResync.for_settings(job, world.settings, world.clock.now, delete_the_list_once).run()
        finish_job(job.id, job.token, world.clock.now())
    except ApiError as exc:
        fail_job(job.id, job.token, world.clock.now(), str(exc))
    assert deleted

    completed(world.sync(filter_id))
    assert world.list_id(filter_id) != deleted[0]
    assert world.brevo.emails(world.list_id(filter_id)) == [
        "mae@fr.example.com",
        "max@fr.example.com",
    ]


# --- failures, the brake, dry runs -------------------------------------------------------


def test_failing_brevo_call_fails_the_job_and_keeps_only_confirmed_batches(
    world: World, exchanges: Exchanges, contract_ledger: Any
) -> None:
    """A failed import fails the job with Brevo's message; the removals confirmed before
    it stay in the ledger, the import's contacts do not. The next run sends what was left,
    by an import whose skipped row is remembered as rejected: not sent again until the
    person changes."""
    filter_id, ids = people_filter(
        world,
        "FAIL",
        ("Ann", "ann@fr.example.com"),
        ("Bob", "bob@fr.example.com"),
        ("Cat", "cat@fr.example.com"),
        ("Dan", "dan@fr.example.com"),
    )
    completed(world.sync(filter_id))
    list_id = world.list_id(filter_id)
    world.pipedrive.set_tier(ids["Cat"], None)
    world.pipedrive.set_tier(ids["Dan"], None)
    joined = {
        f"new{i:02d}@fr.example.com": world.pipedrive.person(
            f"New{i:02d}", "Test", f"new{i:02d}@fr.example.com", tier="FAIL"
        )
        for i in range(1, 22)
    }
    # The import (21 new contacts) fails; the removal batch before it succeeds. An import
    # is not idempotent: the client does not send it again.
    world.brevo.faults({"kind": "500", "method": "POST", "path": "/v3/contacts/import", "count": 1})

    job = world.sync(filter_id)

    assert job.status == "failed"
    assert job.error_message == "brevo POST /contacts/import answered 500: Internal server error"
    assert counts(job) == (23, 0, 0, 2, 0)  # the confirmed removal batch is counted
    assert world.brevo.emails(list_id) == ["ann@fr.example.com", "bob@fr.example.com"]
    assert world.ledger(filter_id) == {
        ids["Ann"]: ("ann@fr.example.com", "listed", 1),
        ids["Bob"]: ("bob@fr.example.com", "listed", 1),
    }
    assert world.query("SELECT COUNT(*) FROM sync_members") == [(0,)]
    # The fault answered before the fake read the body, so the recorded request has none.
    violations = contract_ledger.take_violations()
    assert violations and all(
        "POST /contacts/import" in str(v) and "Missing required request body" in str(v)
        for v in violations
    ), violations

    skipped = "new07@fr.example.com"
    world.brevo.reject_imports_of(skipped)
    retried = completed(world.sync(filter_id))
    assert counts(retried) == (23, 20, 0, 0, 1)
    assert world.brevo.emails(list_id) == sorted(
        ["ann@fr.example.com", "bob@fr.example.com", *(e for e in joined if e != skipped)]
    )
    ledger = world.ledger(filter_id)
    assert ledger[joined[skipped]] == (skipped, "rejected", 0)
    # The import created them: read back with their creation time, so they are ours.
    assert {ledger[p] for e, p in joined.items() if e != skipped} == {
        (e, "listed", 1) for e in joined if e != skipped
    }

    mark = exchanges.mark()
    assert counts(completed(world.sync(filter_id))) == (23, 0, 0, 0, 1)
    assert [e for e in exchanges.since(mark) if e.method != "GET"] == []

    world.pipedrive.update_person(joined[skipped], last_name="Renamed")
    mark = exchanges.mark()
    changed = completed(world.sync(filter_id))
    assert counts(changed) == (23, 1, 0, 0, 0)  # one by one: Brevo takes it this time
    assert writes_carrying(exchanges, skipped, mark) == ["POST /v3/contacts 201"]
    assert world.ledger(filter_id)[joined[skipped]] == (skipped, "listed", 1)


def test_many_rows_missing_from_a_read_back_are_sent_again_not_remembered_as_rejected(
    world: World, exchanges: Exchanges
) -> None:
    """More than 20 rows of an import missing from the list say more about the read-back
    than the rows: they stay unconfirmed, the job says so, and the next run sends them."""
    people = [(f"Mis{i:02d}", f"mis{i:02d}@fr.example.com") for i in range(1, 26)]
    filter_id, _ = people_filter(world, "MISS", *people)
    missing = [email for _, email in people[:21]]
    world.brevo.reject_imports_of(*missing)

    first = completed(world.sync(filter_id))
    assert counts(first) == (25, 4, 0, 0, 0)
    assert first.note is not None and "sends them again" in first.note
    assert all(state == "listed" for _, state, _ in world.ledger(filter_id).values())
    assert len(world.ledger(filter_id)) == 4

    world.brevo.reject_imports_of()
    mark = exchanges.mark()
    second = completed(world.sync(filter_id))
    assert counts(second) == (25, 21, 0, 0, 0)
    assert all(writes_carrying(exchanges, email, mark) for email in missing)
    assert world.brevo.emails(world.list_id(filter_id)) == sorted(e for _, e in people)


def test_brevo_refusing_the_list_fails_the_job_with_its_message(world: World) -> None:
    world.settings = replace(world.settings, brevo_folder_id=987654)
    filter_id, _ = people_filter(world, "FOLDER", ("Flo", "flo@fr.example.com"))
    job = world.sync(filter_id)
    assert job.status == "failed"
    assert job.error_message == (
        "brevo POST /contacts/lists answered 404: Folder ID does not exist"
    )
    assert world.query("SELECT brevo_list_id FROM filters WHERE id = ?", filter_id) == [(None,)]
    assert world.ledger(filter_id) == {}


def test_brake_holds_an_emptied_filter_and_a_mass_removal_until_forced(
    world: World, exchanges: Exchanges
) -> None:
    world.settings = replace(world.settings, removal_brake_ratio=0.3, removal_brake_min=3)
    people = [(n, f"{n.lower()}@fr.example.com") for n in ("Ann", "Bob", "Cat", "Dan")]
    filter_id, ids = people_filter(world, "BRAKE", *people)
    completed(world.sync(filter_id))
    list_id = world.list_id(filter_id)
    ledger = world.ledger(filter_id)
    for name, _ in people:
        world.pipedrive.set_tier(ids[name], None)

    mark = exchanges.mark()
    emptied = world.sync(filter_id)
    world.pipedrive.set_tier(ids["Ann"], "BRAKE")
    held = world.sync(filter_id)

    assert emptied.status == "failed"
    assert emptied.error_message is not None
    assert emptied.error_message.startswith(
        "safety brake: the filter is empty but its list holds 4 contacts"
    )
    assert held.status == "failed"
    assert held.error_message is not None
    assert held.error_message.startswith("safety brake: the sync would remove 3 of 4 contacts")
    assert "force=true" in emptied.error_message and "force=true" in held.error_message
    assert counts(held) == (1, 0, 0, 0, 0)
    assert [e for e in exchanges.since(mark) if e.method != "GET"] == []
    assert world.ledger(filter_id) == ledger
    assert len(world.brevo.emails(list_id)) == 4

    forced = completed(world.sync(filter_id, forced=True))
    assert forced.forced is True
    assert counts(forced) == (1, 0, 0, 3, 0)
    assert world.brevo.emails(list_id) == ["ann@fr.example.com"]


def test_dry_run_counts_without_sending_anything(world: World, exchanges: Exchanges) -> None:
    filter_id, ids = people_filter(
        world, "DRY", ("Ann", "ann@fr.example.com"), ("Bob", "bob@fr.example.com")
    )
    never_synced = world.pipedrive.people_filter("Full resync DRY too", "DRY")
    world.refresh()
    completed(world.sync(filter_id))
    world.pipedrive.set_tier(ids["Bob"], None)
    world.pipedrive.person("Cid", "Test", "cid@fr.example.com", tier="DRY")
    world.pipedrive.person("Dee", "Test", tier="DRY")
    world.pipedrive.update_person(ids["Ann"], first_name="Anne")
    ledger = world.ledger(filter_id)

    mark = exchanges.mark()
    dry = completed(world.sync(filter_id, kind="dry_run"))
    fresh = completed(world.sync(never_synced, kind="dry_run"))

    assert [
        e for e in exchanges.since(mark) if e.path.startswith("/v3") and e.method != "GET"
    ] == []
    assert (dry.kind, dry.note) == ("dry_run", DRY_RUN_NOTE)
    assert counts(dry) == (3, 1, 1, 1, 1)
    assert counts(fresh) == (3, 2, 0, 0, 1)
    assert world.ledger(filter_id) == ledger
    assert world.query("SELECT brevo_list_id FROM filters WHERE id = ?", never_synced) == [(None,)]
    # The dry run does not count as the filter's previous full resync.
    assert counts(completed(world.sync(filter_id))) == (3, 1, 1, 1, 1)


def test_dry_run_of_a_deleted_list_counts_the_refill(world: World, exchanges: Exchanges) -> None:
    filter_id, _ = people_filter(
        world, "DRYGONE", ("Ann", "ann@fr.example.com"), ("Bob", "bob@fr.example.com")
    )
    completed(world.sync(filter_id))
    list_id = world.list_id(filter_id)
    world.brevo.delete_list(list_id)

    mark = exchanges.mark()
    dry = completed(world.sync(filter_id, kind="dry_run"))

    assert counts(dry) == (2, 2, 0, 0, 0)
    assert [
        e for e in exchanges.since(mark) if e.path.startswith("/v3") and e.method != "GET"
    ] == []
    assert world.list_id(filter_id) == list_id  # nothing recreated
    assert counts(completed(world.sync(filter_id))) == counts(dry)


def test_dry_run_of_a_deleted_list_counts_what_the_sync_then_does(world: World) -> None:
    filter_id, _ = people_filter(world, "DRYREJ", ("Ann", "ann@fr.example.com"), ("Rex", REFUSED))
    assert counts(completed(world.sync(filter_id))) == (2, 1, 0, 0, 1)
    world.brevo.delete_list(world.list_id(filter_id))

    dry = completed(world.sync(filter_id, kind="dry_run"))
    real = completed(world.sync(filter_id))

    assert counts(real) == (2, 1, 0, 0, 1)
    assert counts(dry) == counts(real)


def test_contacts_sent_but_never_confirmed_leave_the_list_once_their_members_left(
    world: World,
) -> None:
    """Brevo took the import, but the job ended before the ledger recorded it (here the
    read-back fails; a killed worker is the same): the sends were written down first, so
    once those persons leave the filter the next run takes them out, and the one who
    stayed is confirmed."""
    people = [(f"Imp{i:02d}", f"imp{i:02d}@fr.example.com") for i in range(25)]
    filter_id, ids = people_filter(world, "SENT", *people)
    read_back = "/v3/contacts/lists/*/contacts"
    world.brevo.faults({"kind": "500", "method": "GET", "path": read_back, "count": 5})

    failed = world.sync(filter_id)

    assert failed.status == "failed" and "500" in (failed.error_message or "")
    list_id = world.list_id(filter_id)
    assert len(world.brevo.emails(list_id)) == 25  # in Brevo's list, unknown to the ledger
    assert world.ledger(filter_id) == {}
    world.brevo.faults()
    for first, _ in people[1:]:
        world.pipedrive.set_tier(ids[first], None)

    job = completed(world.sync(filter_id))

    # 24 taken out (counted: Brevo had them in the list), the one member sent again.
    assert counts(job) == (1, 1, 0, 24, 0)
    assert world.brevo.emails(list_id) == ["imp00@fr.example.com"]
    assert world.query("SELECT COUNT(*) FROM brevo_sends") == [(0,)]
