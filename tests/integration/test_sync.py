"""Issue 4, "Done when": the full resync end to end.

Every test runs the real ``pbsync web`` and ``pbsync worker`` on a fresh database (see
``conftest.py``), drives them through the admin API only, changes the world through the
fakes' control APIs, and reads the outcome back from the fakes. Expected counts are
derived from the fake Pipedrive's data (``snapshot`` and ``expected``), never copied from
a run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.brevo.model import valid_email as brevo_accepts
from sandbox.pipedrive.model import Person, primary_email
from tests.fake_control import WRITE_METHODS, Brevo, Pipedrive, tier_conditions, title_conditions
from tests.fakes import RunningFake
from tests.integration.conftest import Service, StartService

pytestmark = pytest.mark.integration

# "Looks like x@y.z": what the service sends at all (Brevo may still refuse it).
LOOKS_LIKE_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
TIER = "ITest"


# --- the fakes ----------------------------------------------------------------------------


@pytest.fixture
def pipedrive(pipedrive_fake: RunningFake) -> Pipedrive:
    """The fake Pipedrive; persons and people filters are in the tier ``TIER`` by default."""
    return Pipedrive(pipedrive_fake, tier=TIER)


@pytest.fixture
def brevo(brevo_fake: RunningFake) -> Brevo:
    """The fake Brevo."""
    return Brevo(brevo_fake)


# --- what the sync must do, derived from the fake Pipedrive's data -----------------------


@dataclass(frozen=True)
class Entity:
    """A member entity (a person, or a deal) as the sync must see it."""

    email: str | None  # the person's primary email, trimmed and lower-cased, if it looks valid
    names: tuple[str | None, str | None]

    @property
    def contact(self) -> str | None:
        """The Brevo contact it makes: None when skipped (no valid email, or Brevo refuses it)."""
        return self.email if self.email is not None and brevo_accepts(self.email) else None


Snapshot = dict[int, Entity]


def _entity(person: Person | None) -> Entity:
    if person is None:
        return Entity(None, (None, None))
    raw = primary_email(person)
    email = raw.strip().lower() if raw else None
    if email is not None and not LOOKS_LIKE_EMAIL.fullmatch(email):
        email = None
    return Entity(email, (person.first_name or None, person.last_name or None))


def snapshot(pipedrive: Pipedrive, filter_id: int) -> Snapshot:
    """The filter's member entities now, as the fake evaluates it."""
    state = pipedrive.fake.app.state.fake
    with state.lock:
        members = state.members(filter_id)
        found: Snapshot = {}
        for entity_id in members.ids:
            if members.type == "deals":
                person = state.data.person(state.data.deals[entity_id].person_id)
            else:
                person = state.data.person(entity_id)
            found[entity_id] = _entity(person)
    return found


def contacts(snap: Snapshot) -> dict[str, set[tuple[str | None, str | None]]]:
    """The contacts a list synced from ``snap`` holds, with the names their members give."""
    found: dict[str, set[tuple[str | None, str | None]]] = {}
    for entity in snap.values():
        if entity.contact is not None:
            found.setdefault(entity.contact, set()).add(entity.names)
    return found


@dataclass(frozen=True)
class Totals:
    fetched: int
    added: int
    updated: int
    removed: int
    skipped: int


def totals(job: dict[str, Any]) -> Totals:
    """A job's counters."""
    return Totals(
        job["total_fetched"],
        job["total_added"],
        job["total_updated"],
        job["total_removed"],
        job["total_skipped"],
    )


def expected(before: Snapshot, after: Snapshot) -> Totals:
    """What a full resync must report when the list was last synced from ``before`` and the
    filter now holds ``after``: contacts counted once per email, an email change of a
    member counted as one update, and entities without a usable email as skipped."""
    old, new = contacts(before), contacts(after)
    moved = [
        (before[eid].contact, entity.contact)
        for eid, entity in after.items()
        if eid in before
        and before[eid].contact is not None
        and entity.contact is not None
        and before[eid].contact != entity.contact
        and before[eid].contact not in new
        and entity.contact not in old
    ]
    moved_from = {old_email for old_email, _ in moved}
    moved_to = {new_email for _, new_email in moved}
    added = sum(1 for email in new if email not in old and email not in moved_to)
    changed = sum(1 for email, names in new.items() if email in old and not names <= old[email])
    return Totals(
        fetched=len(after),
        added=added,
        updated=len(moved_to) + changed,
        removed=len(set(old) - set(new) - moved_from),
        skipped=sum(1 for entity in after.values() if entity.contact is None),
    )


def completed(job: dict[str, Any], kind: str = "full") -> dict[str, Any]:
    """``job``, after asserting it completed without error."""
    assert job["status"] == "completed", job
    assert job["error_message"] is None, job
    assert job["kind"] == kind, job
    return job


def service_brevo_writes(service: Service) -> int:
    """Brevo write calls as the service counted them (its ``api_calls`` table)."""
    marks = ", ".join("?" for _ in WRITE_METHODS)
    rows = service.query(
        "SELECT COALESCE(SUM(calls), 0) FROM api_calls "
        f"WHERE api = 'brevo' AND method IN ({marks})",
        *WRITE_METHODS,
    )
    return int(rows[0][0])


def list_id_of(service: Service, filter_id: int) -> int:
    list_id = service.filters()[filter_id]["brevo_list_id"]
    assert isinstance(list_id, int), service.filters()[filter_id]
    return list_id


def linked_filter(
    service: Service, pipedrive: Pipedrive, name: str, people: Iterable[tuple[str, str, str]]
) -> tuple[int, dict[str, int], Snapshot]:
    """A new people filter with these (key, first name, email or "") persons (last name
    "Test"), refreshed and synced once: its id, the persons' ids by key, and what was synced."""
    filter_id = pipedrive.people_filter(name)
    ids = {
        key: pipedrive.person(first, "Test", *([email] if email else []))
        for key, first, email in people
    }
    service.refresh()
    synced = snapshot(pipedrive, filter_id)
    job = completed(service.sync(filter_id))
    assert totals(job) == expected({}, synced)
    return filter_id, ids, synced


SMALL = [
    ("anna", "Anna", "anna@itest.example.com"),
    ("bert", "Bert", "bert@itest.example.com"),
    ("cleo", "Cleo", "cleo@itest.example.com"),
]


# --- 1. the first sync ---------------------------------------------------------------


def test_first_sync_creates_the_list_in_a_pipedrive_folder_with_the_valid_emails(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """The first sync of "Hot leads" (seeded, plus awkward persons) creates its list in a
    new "Pipedrive" folder, by an import, holding exactly the filter's valid emails; a
    second filter's list goes in the same folder."""
    hot = 2  # "Hot leads": label 1 and an email
    pipedrive.person("Ivy", "Invalid", "not-an-email", labels=[1], tier=None)
    pipedrive.person("Dora", "Dots", "dora..dots@itest.example.com", labels=[1], tier=None)
    pipedrive.person("Mia", "Mixed", "  Mia.Mixed@ITest.Example.COM ", labels=[1], tier=None)
    pipedrive.person("Tom", "Twin", "twins@itest.example.com", labels=[1], tier=None)
    pipedrive.person("Tim", "Twin", "TWINS@itest.example.com", labels=[1], tier=None)
    assert brevo.folders_named("Pipedrive") == []

    refreshed = service.refresh()
    assert refreshed["created"] == pipedrive.syncable_filter_count()
    assert service.filters()[hot]["brevo_list_id"] is None

    synced = snapshot(pipedrive, hot)
    want = expected({}, synced)
    # The test covers what it claims: an import (over 20 contacts), skips of both kinds.
    assert want.added > 20 and want.skipped >= 2, want
    job = completed(service.sync(hot))
    assert job["trigger"] == "admin" and job["forced"] is False
    assert totals(job) == want
    assert brevo.calls().get("POST /contacts/import") == 1

    list_id = list_id_of(service, hot)
    assert service.filters()[hot]["last_job"]["id"] == job["id"]
    folders = brevo.folders_named("Pipedrive")
    assert len(folders) == 1
    brevo_list = brevo.list(list_id)
    assert brevo_list["name"] == "Hot leads (Pipedrive #2)"
    assert brevo_list["folderId"] == folders[0]
    assert brevo.emails(list_id) == sorted(contacts(synced))
    mia = brevo.contact("mia.mixed@itest.example.com")
    assert mia is not None
    assert mia["attributes"].get("FIRSTNAME") == "Mia"
    assert mia["attributes"].get("LASTNAME") == "Mixed"
    assert list_id in mia["listIds"]

    # A second filter: its list is created in the same folder.
    second = pipedrive.people_filter("Integration small")
    for key, first, email in SMALL:
        pipedrive.person(first, key.title(), email)
    assert service.refresh()["created"] == 1
    small = snapshot(pipedrive, second)
    assert totals(completed(service.sync(second))) == expected({}, small)
    second_list = brevo.list(list_id_of(service, second))
    assert second_list["name"] == f"Integration small (Pipedrive #{second})"
    assert second_list["folderId"] == folders[0]
    assert brevo.folders_named("Pipedrive") == folders
    assert brevo.emails(second_list["id"]) == sorted(contacts(small))


def test_first_sync_uses_the_configured_folder(
    start_service: StartService, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """With ``BREVO_FOLDER_ID`` set, the list goes in that folder and no folder is made."""
    marketing = 2  # the Brevo demo account's "Marketing" folder
    service = start_service(BREVO_FOLDER_ID=str(marketing))
    filter_id, _, synced = linked_filter(service, pipedrive, "Configured folder", SMALL)
    brevo_list = brevo.list(list_id_of(service, filter_id))
    assert brevo_list["folderId"] == marketing
    assert brevo_list["name"] == f"Configured folder (Pipedrive #{filter_id})"
    assert brevo.folders_named("Pipedrive") == []
    assert brevo.emails(brevo_list["id"]) == sorted(contacts(synced))


# --- 2. nothing changed, nothing written ------------------------------------------------


def test_second_sync_without_upstream_change_writes_nothing_to_brevo(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A resync with no upstream change makes no POST/PUT/DELETE to Brevo, reports nothing
    added, updated or removed, and counts the same skips (a rejection is remembered)."""
    people = [
        *SMALL,
        ("dora", "Dora", "dora..dots@itest.example.com"),  # Brevo refuses it
        ("ivy", "Ivy", "ivy-at-nowhere"),  # no valid email
        ("tom", "Tom", "twins@itest.example.com"),
        ("tim", "Tim", " Twins@ITest.example.com"),  # the same contact as Tom
        ("nemo", "Nemo", ""),  # no email at all
    ]
    filter_id, _, synced = linked_filter(service, pipedrive, "No change", people)
    before = brevo.writes()
    assert before > 0
    counted = service_brevo_writes(service)
    assert counted > 0

    job = completed(service.sync(filter_id))
    assert totals(job) == expected(synced, synced)
    assert (job["total_added"], job["total_updated"], job["total_removed"]) == (0, 0, 0)
    assert job["total_skipped"] == 3
    assert brevo.writes() == before
    assert service_brevo_writes(service) == counted  # the service's own counters agree
    assert brevo.emails(list_id_of(service, filter_id)) == sorted(contacts(synced))


# --- 3. upstream changes ----------------------------------------------------------------


def test_resync_after_upstream_changes_makes_the_list_equal_again(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A person joins, one leaves, one changes email, one changes name, one is deleted: the
    resync makes the list equal with exact counts, renaming the changed email in place. A
    contact that existed in Brevo before is not renamed: the new address is added instead."""
    people = [
        ("keep", "Kim", "kim@itest.example.com"),
        ("leave", "Leo", "leo@itest.example.com"),
        ("move", "Max", "max.old@itest.example.com"),
        ("rename", "Nia", "nia@itest.example.com"),
        ("delete", "Dan", "dan@itest.example.com"),
        ("theirs", "Pia", "pia.old@itest.example.com"),
    ]
    brevo.add_by_hand("pia.old@itest.example.com")  # another team's contact
    filter_id, ids, before = linked_filter(service, pipedrive, "Upstream changes", people)
    list_id = list_id_of(service, filter_id)
    old_max = brevo.contact("max.old@itest.example.com")
    assert old_max is not None

    pipedrive.person("Jo", "Test", "jo@itest.example.com")
    pipedrive.set_tier(ids["leave"], "Other")
    pipedrive.update_person(ids["move"], emails=["Max.New@itest.example.com"])
    pipedrive.update_person(ids["rename"], first_name="Nina")
    pipedrive.delete_person(ids["delete"])
    pipedrive.update_person(ids["theirs"], emails=["pia.new@itest.example.com"])
    after = snapshot(pipedrive, filter_id)
    want = expected(before, after)
    assert want == Totals(fetched=5, added=1, updated=3, removed=2, skipped=0)

    job = completed(service.sync(filter_id))
    assert totals(job) == want
    assert brevo.emails(list_id) == sorted(contacts(after))

    # Renamed in place: the same contact under its new address, the old one gone.
    assert brevo.contact("max.old@itest.example.com") is None
    new_max = brevo.contact("max.new@itest.example.com")
    assert new_max is not None
    assert new_max["id"] == old_max["id"]
    assert new_max["attributes"].get("FIRSTNAME") == "Max"
    assert list_id in new_max["listIds"]
    nina = brevo.contact("nia@itest.example.com")
    assert nina is not None and nina["attributes"].get("FIRSTNAME") == "Nina"
    # Not ours: the old contact stays as it was, out of our list; the new one is added.
    old_pia = brevo.contact("pia.old@itest.example.com")
    new_pia = brevo.contact("pia.new@itest.example.com")
    assert old_pia is not None and new_pia is not None
    assert old_pia["id"] != new_pia["id"]
    assert list_id not in old_pia["listIds"] and list_id in new_pia["listIds"]
    # Those who left keep their (account-wide) contact; only our list lost them.
    for email in ("leo@itest.example.com", "dan@itest.example.com"):
        contact = brevo.contact(email)
        assert contact is not None and list_id not in contact["listIds"]


# --- 4. deal filters ---------------------------------------------------------------------


def test_deal_filter_removes_a_person_only_when_none_of_its_deals_is_left(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A deal filter lists each deal's person; a deal leaving removes its person's email,
    unless another deal of the same person is still in the filter."""
    ann = pipedrive.person("Ann", "Deal", "ann@itest.example.com")
    bob = pipedrive.person("Bob", "Deal", "bob@itest.example.com")
    cat = pipedrive.person("Cat", "Deal", "cat@itest.example.com")
    nobody = pipedrive.person("Ned", "Deal")  # no email
    filter_id = pipedrive.filter("ITest deals", "deals", title_conditions("ITest deal"))
    ann_deal = pipedrive.deal("ITest deal Ann", ann)
    pipedrive.deal("ITest deal Bob", bob)
    pipedrive.deal("ITest deal Cat 1", cat)
    cat_second = pipedrive.deal("ITest deal Cat 2", cat)
    pipedrive.deal("ITest deal Ned", nobody)
    pipedrive.deal("ITest deal walk-in", None)
    service.refresh()
    assert service.filters()[filter_id]["type"] == "deals"

    first = snapshot(pipedrive, filter_id)
    assert sorted(first) == sorted(pipedrive.member_ids(filter_id))
    want = expected({}, first)
    assert want == Totals(fetched=6, added=3, updated=0, removed=0, skipped=2)
    assert totals(completed(service.sync(filter_id))) == want
    list_id = list_id_of(service, filter_id)
    assert brevo.emails(list_id) == sorted(contacts(first))

    # Ann's only deal leaves: her email goes. Bob's name changes: his contact follows.
    pipedrive.update_deal(ann_deal, title="Closed: Ann")
    pipedrive.update_person(bob, last_name="Dealmaker")
    second = snapshot(pipedrive, filter_id)
    want = expected(first, second)
    assert want == Totals(fetched=5, added=0, updated=1, removed=1, skipped=2)
    assert totals(completed(service.sync(filter_id))) == want
    assert brevo.emails(list_id) == sorted(contacts(second))
    bob_contact = brevo.contact("bob@itest.example.com")
    assert bob_contact is not None and bob_contact["attributes"].get("LASTNAME") == "Dealmaker"

    # One of Cat's two deals leaves: she stays.
    pipedrive.update_deal(cat_second, title="Closed: Cat")
    third = snapshot(pipedrive, filter_id)
    want = expected(second, third)
    assert want == Totals(fetched=4, added=0, updated=0, removed=0, skipped=2)
    assert totals(completed(service.sync(filter_id))) == want
    assert "cat@itest.example.com" in brevo.emails(list_id)
    assert brevo.emails(list_id) == sorted(contacts(third))


# --- 5. and 6. what Brevo's users did stays ----------------------------------------------


def test_contact_added_by_hand_in_brevo_stays_and_is_not_counted(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A contact someone put in the list in Brevo survives a resync that removes others."""
    filter_id, ids, before = linked_filter(service, pipedrive, "Hand added", SMALL)
    list_id = list_id_of(service, filter_id)
    brevo.add_by_hand("hand.added@elsewhere.example.org", list_id)
    pipedrive.set_tier(ids["bert"], "Other")
    after = snapshot(pipedrive, filter_id)
    want = expected(before, after)
    assert want.removed == 1

    assert totals(completed(service.sync(filter_id))) == want
    assert brevo.emails(list_id) == sorted([*contacts(after), "hand.added@elsewhere.example.org"])


def test_blocklisted_contact_stays_blocklisted(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """Contacts blocklisted in Brevo stay blocklisted through resyncs, when their person's
    name changes and when their person's email changes (the contact is then not renamed,
    which would resubscribe it: the new address is added and the old one leaves the list)."""
    filter_id, ids, before = linked_filter(service, pipedrive, "Blocklist", SMALL)
    list_id = list_id_of(service, filter_id)
    brevo.blocklist("anna@itest.example.com")
    brevo.blocklist("bert@itest.example.com")
    writes = brevo.writes()
    job = completed(service.sync(filter_id))
    assert totals(job) == expected(before, before)
    assert brevo.writes() == writes

    pipedrive.update_person(ids["anna"], first_name="Annabel")
    pipedrive.update_person(ids["bert"], emails=["bert.new@itest.example.com"])
    after = snapshot(pipedrive, filter_id)
    want = expected(before, after)
    assert want == Totals(fetched=3, added=0, updated=2, removed=0, skipped=0)
    assert totals(completed(service.sync(filter_id))) == want
    assert brevo.emails(list_id) == sorted(contacts(after))

    anna = brevo.contact("anna@itest.example.com")
    assert anna is not None
    assert anna["emailBlacklisted"] is True
    assert anna["attributes"].get("FIRSTNAME") == "Annabel"
    old_bert = brevo.contact("bert@itest.example.com")
    assert old_bert is not None, "a blocklisted contact was renamed (which resubscribes it)"
    assert old_bert["emailBlacklisted"] is True
    assert list_id not in old_bert["listIds"]
    new_bert = brevo.contact("bert.new@itest.example.com")
    assert new_bert is not None and list_id in new_bert["listIds"]


# --- 7. and 8. the filter refresh -------------------------------------------------------


def test_filter_deleted_in_pipedrive_is_soft_deleted_and_its_list_left_alone(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """The refresh marks a vanished filter deleted, its Brevo list keeps its members, and
    the filter can no longer be synced."""
    filter_id, _, synced = linked_filter(service, pipedrive, "Soon gone", SMALL)
    list_id = list_id_of(service, filter_id)
    writes = brevo.writes()

    pipedrive.delete_filter(filter_id)
    refreshed = service.refresh()
    assert (refreshed["created"], refreshed["updated"], refreshed["deleted"]) == (0, 0, 1)
    row = service.filters()[filter_id]
    assert row["deleted_at"] is not None
    assert row["brevo_list_id"] == list_id
    assert brevo.list(list_id)["name"] == f"Soon gone (Pipedrive #{filter_id})"
    assert brevo.emails(list_id) == sorted(contacts(synced))

    for params in ({}, {"dry_run": "true"}, {"force": "true"}):
        response = service.request("POST", f"/api/filters/{filter_id}/sync", params=params)
        assert response.status_code == 409, response.text
        assert response.json()["error"]
    response = service.request("POST", "/api/sync")
    assert response.status_code == 202, response.text
    assert response.json() == {"jobs": [], "busy": []}
    assert brevo.writes() == writes


def test_renamed_filter_renames_its_list(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A refresh renames the list of a renamed linked filter, with no resync; a change of
    its conditions then queues one (trigger ``filter_changed``)."""
    filter_id, _, synced = linked_filter(service, pipedrive, "Old name", SMALL)
    list_id = list_id_of(service, filter_id)

    pipedrive.update_filter(filter_id, name="New name")
    refreshed = service.refresh()
    assert (refreshed["created"], refreshed["updated"], refreshed["deleted"]) == (0, 1, 0)
    assert service.filters()[filter_id]["name"] == "New name"
    assert brevo.list(list_id)["name"] == f"New name (Pipedrive #{filter_id})"
    jobs = service.request("GET", "/api/jobs", params={"filter_id": filter_id}).json()["jobs"]
    assert len(jobs) == 1, jobs

    pipedrive.update_filter(filter_id, conditions=tier_conditions("Other"))
    pipedrive.person("Otto", "Other", "otto@itest.example.com", tier="Other")
    after = snapshot(pipedrive, filter_id)
    service.refresh()
    jobs = service.request("GET", "/api/jobs", params={"filter_id": filter_id}).json()["jobs"]
    assert len(jobs) == 2, jobs
    assert jobs[0]["trigger"] == "filter_changed"
    job = completed(service.wait_job(jobs[0]["id"]))
    # Three of three removed is past the brake only from REMOVAL_BRAKE_MIN (50) contacts.
    assert totals(job) == expected(synced, after)
    assert brevo.emails(list_id) == sorted(contacts(after))


# --- 9. the safety brake -----------------------------------------------------------------


def test_safety_brake_holds_mass_removals_until_forced(
    start_service: StartService, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """Removing more than 30 % of the list fails with the counts and changes nothing; with
    force it is applied. A filter found empty is held too."""
    service = start_service(REMOVAL_BRAKE_MIN="5")
    people = [(f"p{n}", f"Person{n}", f"person{n}@itest.example.com") for n in range(10)]
    filter_id, ids, synced = linked_filter(service, pipedrive, "Brake", people)
    list_id = list_id_of(service, filter_id)
    listed = brevo.emails(list_id)
    assert len(listed) == 10

    for key in ("p0", "p1", "p2"):
        pipedrive.set_tier(ids[key], "Other")
    pipedrive.delete_person(ids["p3"])
    after = snapshot(pipedrive, filter_id)
    want = expected(synced, after)
    assert want.removed == 4  # more than 0.3 x 10

    writes = brevo.writes()
    held = service.sync(filter_id)
    assert held["status"] == "failed", held
    message = held["error_message"]
    assert re.search(r"\b4\b", message) and re.search(r"\b10\b", message), message
    assert "force" in message
    assert held["total_removed"] == 0
    assert brevo.writes() == writes
    assert brevo.emails(list_id) == listed

    forced = completed(service.sync(filter_id, force=True))
    assert forced["forced"] is True
    assert totals(forced) == want
    assert brevo.emails(list_id) == sorted(contacts(after))

    # Everyone left: an empty filter is held as well.
    for key in ("p4", "p5", "p6", "p7", "p8", "p9"):
        pipedrive.set_tier(ids[key], "Other")
    empty = snapshot(pipedrive, filter_id)
    assert empty == {}
    writes = brevo.writes()
    held = service.sync(filter_id)
    assert held["status"] == "failed", held
    assert "empty" in held["error_message"] and re.search(r"\b6\b", held["error_message"])
    assert brevo.writes() == writes
    assert brevo.emails(list_id) == sorted(contacts(after))

    forced = completed(service.sync(filter_id, force=True))
    assert totals(forced) == expected(after, empty)
    assert brevo.emails(list_id) == []


# --- 10. dry runs --------------------------------------------------------------------------


def test_dry_run_counts_what_the_sync_then_does_and_changes_nothing(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A dry run reports the counts of the real sync that follows, as a ``dry_run`` job,
    without any write to Brevo; before the first sync it creates no list either."""
    filter_id = pipedrive.people_filter("Dry run")
    ids = {key: pipedrive.person(first, "Test", email) for key, first, email in SMALL}
    service.refresh()
    first = snapshot(pipedrive, filter_id)
    dry = completed(service.sync(filter_id, dry_run=True), kind="dry_run")
    assert totals(dry) == expected({}, first)
    assert dry["note"]
    assert service.filters()[filter_id]["brevo_list_id"] is None
    assert brevo.writes() == 0

    assert totals(completed(service.sync(filter_id))) == expected({}, first)
    list_id = list_id_of(service, filter_id)
    listed = brevo.emails(list_id)

    pipedrive.person("Dee", "Test", "dee@itest.example.com")
    pipedrive.set_tier(ids["anna"], "Other")
    pipedrive.update_person(ids["bert"], first_name="Bertram")
    pipedrive.update_person(ids["cleo"], emails=["cleo.new@itest.example.com"])
    after = snapshot(pipedrive, filter_id)
    want = expected(first, after)
    assert want == Totals(fetched=3, added=1, updated=2, removed=1, skipped=0)

    writes = brevo.writes()
    for _ in range(2):  # a dry run leaves the same work for the next one
        dry = completed(service.sync(filter_id, dry_run=True), kind="dry_run")
        assert totals(dry) == want
        assert brevo.writes() == writes
        assert brevo.emails(list_id) == listed

    assert totals(completed(service.sync(filter_id))) == want
    assert brevo.emails(list_id) == sorted(contacts(after))


# --- 11. one job per filter --------------------------------------------------------------


def test_second_sync_of_a_busy_filter_gets_409_with_the_running_job(
    service: Service, pipedrive: Pipedrive, brevo_fake: RunningFake
) -> None:
    """While a job of the filter runs (Brevo made slow), another request gets 409 with the
    running job, and ``POST /api/sync`` lists the filter as busy."""
    filter_id, _, synced = linked_filter(service, pipedrive, "Busy", SMALL)
    brevo_fake.control(
        "PUT",
        "/_sandbox/faults",
        json={"latency": [{"seconds": 3, "method": "GET", "path": "/v3/contacts/lists/*"}]},
    )
    running = service.start_sync(filter_id)
    assert running["status"] == "processing"

    for params in ({}, {"dry_run": "true"}, {"force": "true"}):
        response = service.request("POST", f"/api/filters/{filter_id}/sync", params=params)
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["error"]
        assert body["job"]["id"] == running["id"]
        assert body["job"]["status"] == "processing"
    response = service.request("POST", "/api/sync")
    assert response.status_code == 202, response.text
    assert response.json() == {"jobs": [], "busy": [filter_id]}

    assert service.job(running["id"])["status"] == "processing", "Brevo was not slow enough"
    assert totals(completed(service.wait_job(running["id"]))) == expected(synced, synced)

    # Free again: ``POST /api/sync`` starts a job for it.
    brevo_fake.control("PUT", "/_sandbox/faults", json={"faults": [], "latency": []})
    response = service.request("POST", "/api/sync")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["busy"] == [] and [job["filter_id"] for job in body["jobs"]] == [filter_id]
    job = completed(service.wait_job(body["jobs"][0]["id"]))
    assert totals(job) == expected(synced, synced)


# --- 12. a list deleted in Brevo ----------------------------------------------------------


def test_list_deleted_in_brevo_is_recreated_and_refilled(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A resync of a filter whose list was deleted in Brevo creates a new one, fills it,
    and says so in the job's note."""
    filter_id, _, synced = linked_filter(service, pipedrive, "Deleted list", SMALL)
    old_list = list_id_of(service, filter_id)
    folder = brevo.list(old_list)["folderId"]
    assert brevo.api("DELETE", f"/contacts/lists/{old_list}").status_code == 204

    # A dry run sees the list gone and counts the refill the sync then does.
    dry = completed(service.sync(filter_id, dry_run=True), kind="dry_run")
    assert totals(dry) == expected({}, synced)
    assert list_id_of(service, filter_id) == old_list

    job = completed(service.sync(filter_id))
    assert totals(job) == expected({}, synced)
    new_list = list_id_of(service, filter_id)
    assert new_list != old_list
    assert job["note"] and str(old_list) in job["note"] and "deleted" in job["note"]
    assert brevo.api("GET", f"/contacts/lists/{old_list}").status_code == 404
    recreated = brevo.list(new_list)
    assert recreated["name"] == f"Deleted list (Pipedrive #{filter_id})"
    assert recreated["folderId"] == folder
    assert brevo.emails(new_list) == sorted(contacts(synced))


# --- an email change Brevo refuses ---


def test_email_changed_to_an_address_brevo_refuses_is_skipped(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A member whose new address Brevo refuses (the rename of a contact we created fails)
    is skipped, its old address leaves the list, and the job completes."""
    filter_id, ids, before = linked_filter(service, pipedrive, "Refused rename", SMALL)
    list_id = list_id_of(service, filter_id)
    pipedrive.update_person(ids["anna"], emails=["anna..new@itest.example.com"])
    after = snapshot(pipedrive, filter_id)
    want = expected(before, after)
    assert want == Totals(fetched=3, added=0, updated=0, removed=1, skipped=1)

    assert totals(completed(service.sync(filter_id))) == want
    assert brevo.emails(list_id) == sorted(contacts(after))


def test_replaced_email_refused_by_brevo_counts_the_removal(
    service: Service, pipedrive: Pipedrive, brevo: Brevo
) -> None:
    """A blocklisted contact is not renamed; when Brevo refuses the new address, the old
    one still left the list, and that counts as removed."""
    filter_id, ids, before = linked_filter(service, pipedrive, "Refused replace", SMALL)
    list_id = list_id_of(service, filter_id)
    brevo.blocklist("bert@itest.example.com")
    pipedrive.update_person(ids["bert"], emails=["bert..new@itest.example.com"])
    after = snapshot(pipedrive, filter_id)
    want = expected(before, after)
    assert want == Totals(fetched=3, added=0, updated=0, removed=1, skipped=1)

    job = completed(service.sync(filter_id))
    assert brevo.emails(list_id) == sorted(contacts(after))
    assert totals(job) == want
