"""The incremental sync of one filter: apply the webhook changes routed to it (DESIGN
section 5), with the same plan and confirmed batches as a full resync.

The stage of an incremental run holds:
- the members Pipedrive lists as changed since the oldest change (``filter_id`` +
  ``updated_since``, minus a margin), read fresh: they are upserted;
- for a deal filter, its deals whose person changed, with the person's data from the
  webhook delivery (never older than what the ledger holds), and the deals of a deleted
  person without an email (or with the survivor's, after a merge);
- every other ledger row, carried over unchanged.
The changed entities that were members and are in none of these are left out, so the plan
removes them, exactly as a full resync would whose listing showed them gone. A filter
whose conditions name other objects, one whose list had to be recreated, and one for which
Pipedrive ignored ``updated_since`` are listed whole instead, without carrying anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from service.clients.pipedrive import Person
from service.db import db, db_session
from workers.sync import ledger
from workers.sync.apply import Applier
from workers.sync.changes import FilterChanges, consume_changes, load_changes
from workers.sync.claims import Totals, check_claim, record_totals, set_note
from workers.sync.contacts import Member
from workers.sync.full_resync import BrakeHeld
from workers.sync.job_run import JobRun
from workers.sync.members import DealMembers, known_persons, person_member
from workers.sync.plan import Plan, clear_stage, make_plan, stage
from workers.sync.sql import in_list

log = logging.getLogger(__name__)

# Members changed a little before the oldest event are asked for too: the event's time and
# the member's update_time are both Pipedrive's, but not necessarily the same second.
SINCE_MARGIN_SECONDS = 60
IGNORED_NOTE = (
    "Pipedrive ignored updated_since for this filter's members; the filter was listed whole."
)
_warned_ignoring: set[int] = set()


@db_session
def carry_ledger(job_id: int, token: str, filter_id: int, changed: Iterable[int]) -> int:
    """Stage the filter's ledger rows as they are, except the ``changed`` entities and those
    already staged; return how many were carried."""
    check_claim(job_id, token)
    cursor = db.execute(
        "INSERT INTO sync_members (job_id, entity_id, person_id, email, first_name, "
        "last_name, attrs_hash, source, source_time) "
        "SELECT $job_id, entity_id, person_id, email, first_name, last_name, attrs_hash, "
        "'ledger', source_time FROM memberships WHERE filter_id = $filter_id "
        "ON CONFLICT (job_id, entity_id) DO NOTHING"
    )
    return int(cursor.rowcount) - _unstage(job_id, "ledger", changed)


def _unstage(job_id: int, source: str, entity_ids: Iterable[int]) -> int:
    """Drop the job's staged rows from ``source`` of these entities; how many went."""
    listed, params = in_list("e", list(entity_ids))
    params.update(job_id=job_id, source=source)
    cursor = db.execute(
        "DELETE FROM sync_members WHERE job_id = $job_id AND source = $source "
        f"AND entity_id IN {listed}",
        params,
    )
    return int(cursor.rowcount)


@db_session
def stage_person_data(
    job_id: int,
    token: str,
    filter_id: int,
    persons: dict[int, Member],
    changed: Iterable[int] = (),
) -> int:
    """Stage the filter's ledger deals of these persons with the given data, where it is
    not older than what the ledger holds and the deal is not staged yet, except the
    ``changed`` deals: Pipedrive's answer decides those (absent from it, they left).

    A value's ``person_id`` may differ from its key: a merged person's deals move to the
    survivor."""
    check_claim(job_id, token)
    staged = 0
    for old_person, member in persons.items():
        params = {
            "job_id": job_id,
            "filter_id": filter_id,
            "old_person": old_person,
            "person_id": member.person_id,
            "email": member.email,
            "first_name": member.first_name,
            "last_name": member.last_name,
            "attrs_hash": member.attrs_hash(),
            "time": member.updated_at,
        }
        cursor = db.execute(
            "INSERT INTO sync_members (job_id, entity_id, person_id, email, first_name, "
            "last_name, attrs_hash, source, source_time) "
            "SELECT $job_id, entity_id, $person_id, $email, $first_name, $last_name, "
            "$attrs_hash, 'webhook', $time FROM memberships "
            "WHERE filter_id = $filter_id AND person_id = $old_person "
            "AND (source_time IS NULL OR $time IS NULL OR source_time <= $time "
            # A different person (a merge's survivor) is not an older version of this one.
            " OR $person_id != $old_person) "
            "ON CONFLICT (job_id, entity_id) DO NOTHING",
            params,
        )
        staged += int(cursor.rowcount)
    # A deal that changed and is not in the listing left the filter (or was deleted) in
    # the same burst as its person's change: the person's data must not bring it back.
    return staged - _unstage(job_id, "webhook", changed)


def _moment(unix: int) -> datetime:
    return datetime.fromtimestamp(max(0, unix), UTC)


class IncrementalSync(JobRun):
    """One incremental job: the filter's waiting changes, applied."""

    def run(self) -> None:
        """Apply the waiting changes; raises ``BrakeHeld`` (a whole listing only),
        ``ClaimLost`` or an ``ApiError``. The changes are consumed only once applied."""
        job = self.job
        changes = load_changes(job.filter_id)
        if changes is None:
            log.info("no changes waiting")
            return
        # A deal filter's changed persons, worked out once: a fallback to a whole listing
        # uses them too, and a merge survivor may cost a Pipedrive look-up.
        persons = self._person_updates(changes) if job.filter_type == "deals" else {}
        whole = changes.relist
        if not whole:
            whole = not self._stage_changes(changes, persons)
            if whole:
                clear_stage(job.id, job.token)
        if whole:
            self._stage_whole(persons)
        plan = make_plan(job.id, job.token, job.filter_id)
        if plan.adds + plan.updates + plan.removals > 0:
            target = self.target_list()
            if target.replaced is not None:
                # The ledger was forgotten with the old list: plan the whole filter again.
                clear_stage(job.id, job.token)
                whole = True
                self._stage_whole(persons)
                plan = make_plan(job.id, job.token, job.filter_id)
            self._apply(plan, whole, changes, target.id)
        else:
            self._record(plan, whole, changes)
        ledger.settle_ledger(job.id, job.token, job.filter_id, self.now())
        consume_changes(job.id, job.token, job.filter_id, changes.upto)
        log.info(
            "incremental sync applied",
            extra={
                "changes": len(changes.rows),
                "whole": whole,
                "fetched": plan.fetched,
                "adds": plan.adds,
                "updates": plan.updates,
                "removals": plan.removals,
            },
        )

    def _record(self, plan: Plan, whole: bool, changes: FilterChanges) -> None:
        job = self.job
        record_totals(job.id, job.token, Totals(fetched=plan.fetched, skipped=plan.skipped))
        reason = plan.brake_reason(self.brake_ratio, self.brake_min) if whole else None
        if reason is not None and not job.forced:
            # Held like a full resync; the changes are spent, as the admin's forced run
            # (or the next catch-up) covers them.
            consume_changes(job.id, job.token, job.filter_id, changes.upto)
            raise BrakeHeld(reason)

    def _apply(self, plan: Plan, whole: bool, changes: FilterChanges, list_id: int) -> None:
        self._record(plan, whole, changes)
        applier = Applier(self.brevo, self.job, list_id, self.now, self.check)
        applier.apply()

    # --- staging -------------------------------------------------------------------------

    def _stage_changes(self, changes: FilterChanges, persons: dict[int, Member]) -> bool:
        """Stage the changed members and carry the rest; False when Pipedrive ignored
        ``updated_since`` and the filter must be listed whole. ``persons``: a deal filter's
        changed persons (``_person_updates``)."""
        job = self.job
        if job.filter_type == "deals":
            honoured = self._stage_deal_changes(changes, persons)
        else:
            honoured = self._stage_people_changes(changes)
        if not honoured:
            if job.filter_id not in _warned_ignoring:
                _warned_ignoring.add(job.filter_id)
                log.warning("pipedrive ignored updated_since; listing the filter whole")
            set_note(job.id, job.token, IGNORED_NOTE)
            return False
        carry_ledger(job.id, job.token, job.filter_id, changes.changed_entities())
        return True

    def _since(self, changes: FilterChanges) -> datetime | None:
        oldest = changes.since()
        return _moment(oldest - SINCE_MARGIN_SECONDS) if oldest is not None else None

    def _stage_people_changes(self, changes: FilterChanges) -> bool:
        since = self._since(changes)
        if since is None:
            return True  # only deletions: nothing to ask Pipedrive
        for page in self.pipedrive.iter_members("people", self.job.filter_id, since):
            self.check()
            if page.ignored_updated_since:
                return False
            members = [person_member(p) for p in page.members if isinstance(p, Person)]
            stage(self.job.id, self.job.token, members)
        return True

    def _stage_deal_changes(self, changes: FilterChanges, persons: dict[int, Member]) -> bool:
        since = self._since(changes)
        if since is not None:
            deals = DealMembers(
                self.pipedrive,
                self.job.filter_id,
                None,
                self.job.id,
                updated_since=since,
                fresh=persons,
            )
            for page in deals:
                self.check()
                if deals.ignored_updated_since:
                    return False
                stage(self.job.id, self.job.token, page)
        stage_person_data(
            self.job.id, self.job.token, self.job.filter_id, persons, changes.changed_entities()
        )
        return True

    def _stage_whole(self, persons: dict[int, Member]) -> None:
        job = self.job
        pages: Iterable[list[Member]]
        if job.filter_type == "deals":
            pages = DealMembers(self.pipedrive, job.filter_id, None, job.id, fresh=persons)
        else:
            pages = (
                [person_member(p) for p in page.members if isinstance(p, Person)]
                for page in self.pipedrive.iter_members("people", job.filter_id)
            )
        for page in pages:
            self.check()
            stage(job.id, job.token, page)

    def _person_updates(self, changes: FilterChanges) -> dict[int, Member]:
        """For a deal filter: the data its deals' changed persons now have, keyed by the
        person as the ledger knows it. A deleted person has no email; a merged one is
        replaced by the survivor."""
        fresh, deleted = changes.persons()
        deleted_at = changes.deleted_at()
        updates = dict(fresh)
        # A survivor deleted in its turn takes nobody's deals: they have no email now.
        survivors = {m for m in deleted.values() if m is not None and m not in deleted}
        found = self._survivors(survivors - set(fresh))
        for person_id, survivor in deleted.items():
            data = None
            if survivor is not None and survivor not in deleted:
                data = fresh.get(survivor) or found.get(survivor)
            # The deletion's time goes to the ledger with the emptied data: a change of the
            # person older than it, delivered late, is then refused as older data.
            updates[person_id] = data or Member(
                person_id, person_id, None, None, None, deleted_at.get(person_id)
            )
        return updates

    def _survivors(self, person_ids: set[int]) -> dict[int, Member]:
        """Merge survivors' data: from the ledger, else from Pipedrive."""
        if not person_ids:
            return {}
        found = known_persons(self.job.filter_id, sorted(person_ids))
        missing = sorted(person_ids - set(found))
        if missing:
            for person in self.pipedrive.persons_by_ids(missing):
                found[person.id] = person_member(person)
        return found
