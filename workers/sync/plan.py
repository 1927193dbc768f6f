"""The plan of a full resync: staged members compared with the ledger, in SQL.

Each staged member gets an action:
- ``skip``: no valid email, or Brevo rejected this very email and attributes before;
- ``keep``: its email is in the list with the same attributes;
- ``update``: its email is in the list, its attributes changed;
- ``change``: its own email changed and the old one leaves the list (renamed or replaced);
- ``add``: its email is not in the list yet.
Removals are the filter's listed emails that no staged member still maps to. Counts are
per contact (email), except ``fetched`` and ``skipped``, which count member entities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.db import db, db_session
from workers.sync.claims import check_claim
from workers.sync.contacts import Member
from workers.sync.ledger import adds_and_updates
from workers.sync.sql import json_rows


@db_session
def stage(job_id: int, token: str, members: Sequence[Member], source: str = "api") -> int:
    """Stage one page of members for the job; return how many were new to the stage.

    ``source`` says where they come from: ``api`` (read from Pipedrive: counted as
    fetched) or ``webhook`` (person data from a delivery).
    """
    check_claim(job_id, token)
    rows = [
        (
            job_id,
            m.entity_id,
            m.person_id,
            m.email,
            m.first_name,
            m.last_name,
            m.attrs_hash(),
            source,
            m.updated_at,
        )
        for m in members
    ]
    if not rows:
        return 0
    values, params = json_rows("v", rows)
    # A member seen twice (a row that moved between pages) is staged once.
    cursor = db.execute(
        "INSERT INTO sync_members (job_id, entity_id, person_id, email, first_name, "
        f"last_name, attrs_hash, source, source_time) {values} "
        "ON CONFLICT (job_id, entity_id) DO NOTHING",
        params,
    )
    return int(cursor.rowcount)


@dataclass(frozen=True)
class Plan:
    """What a full resync will do, counted before anything is sent."""

    fetched: int
    skipped: int
    adds: int
    updates: int
    removals: int
    list_size: int

    def brake_reason(self, ratio: float, minimum: int) -> str | None:
        """Why the safety brake holds this plan, or None when it may go ahead."""
        if self.list_size < minimum or self.list_size == 0:
            return None
        if self.fetched == 0:
            return (
                f"safety brake: the filter is empty but its list holds {self.list_size} "
                "contacts this service added; nothing was applied. Re-run with force=true "
                "to empty the list."
            )
        if self.removals > ratio * self.list_size:
            return (
                f"safety brake: the sync would remove {self.removals} of {self.list_size} "
                f"contacts (more than {ratio:.0%}); nothing was applied "
                f"({self.adds} to add, {self.updates} to update). "
                "Re-run with force=true to apply it."
            )
        return None


@db_session
def make_plan(job_id: int, token: str, filter_id: int, list_gone: bool = False) -> Plan:
    """Give every staged member its action and count the plan.

    ``list_gone``: plan against an empty ledger, as the sync will after recreating a list
    deleted in Brevo (a dry run sees it so without forgetting the ledger).
    """
    check_claim(job_id, token)
    # Listed rows are looked up under this id; with the list gone no filter has it, while
    # the rejections remembered under the real id still hold.
    listed = -1 if list_gone else filter_id  # noqa: F841 - bound by Pony's $name below
    db.execute(
        "UPDATE sync_members SET action = 'skip' WHERE job_id = $job_id AND ("
        " email IS NULL OR EXISTS (SELECT 1 FROM memberships m"
        "  WHERE m.filter_id = $filter_id AND m.entity_id = sync_members.entity_id"
        "  AND m.state = 'rejected' AND m.email = sync_members.email"
        "  AND m.attrs_hash = sync_members.attrs_hash))"
    )
    db.execute(
        "UPDATE sync_members SET action = CASE"
        " WHEN EXISTS (SELECT 1 FROM memberships m WHERE m.filter_id = $listed"
        "  AND m.state = 'listed' AND m.email = sync_members.email) THEN"
        "  CASE WHEN EXISTS (SELECT 1 FROM memberships m WHERE m.filter_id = $listed"
        "   AND m.state = 'listed' AND m.email = sync_members.email"
        "   AND m.attrs_hash = sync_members.attrs_hash) THEN 'keep' ELSE 'update' END"
        " WHEN EXISTS (SELECT 1 FROM memberships m WHERE m.filter_id = $listed"
        "  AND m.entity_id = sync_members.entity_id AND m.state = 'listed'"
        # The same person's new address; a deal given to another person is an add.
        "  AND m.person_id IS sync_members.person_id"
        "  AND m.email IS NOT NULL AND m.email != sync_members.email"
        "  AND NOT EXISTS (SELECT 1 FROM sync_members s WHERE s.job_id = $job_id"
        "   AND s.email = m.email AND s.action != 'skip')) THEN 'change'"
        " ELSE 'add' END "
        "WHERE job_id = $job_id AND action = 'keep'"
    )
    # Rows carried over from the ledger (an incremental run) were not read, nor skipped now.
    fetched, skipped = db.select(
        "COALESCE(SUM(source = 'api'), 0), "
        "COALESCE(SUM(action = 'skip' AND source != 'ledger'), 0) "
        "FROM sync_members WHERE job_id = $job_id"
    )[0]
    adds, updates = adds_and_updates(
        "job_id = $job_id AND action IN ('add', 'update', 'change')", {"job_id": job_id}
    )
    list_size = db.select(
        "COUNT(DISTINCT email) FROM memberships WHERE filter_id = $listed AND state = 'listed'"
    )[0]
    removals = db.select(
        "COUNT(DISTINCT m.email) FROM memberships m "
        "WHERE m.filter_id = $listed AND m.state = 'listed' "
        "AND NOT EXISTS (SELECT 1 FROM sync_members s WHERE s.job_id = $job_id "
        " AND s.email = m.email AND s.action != 'skip') "
        "AND NOT EXISTS (SELECT 1 FROM sync_members s WHERE s.job_id = $job_id "
        " AND s.entity_id = m.entity_id AND s.action = 'change')"
    )[0]
    return Plan(
        fetched=int(fetched),
        skipped=int(skipped),
        adds=int(adds),
        updates=int(updates),
        removals=int(removals),
        list_size=int(list_size),
    )


@db_session
def clear_stage(job_id: int, token: str) -> None:
    """Drop everything the job staged, to stage again from scratch."""
    check_claim(job_id, token)
    db.execute("DELETE FROM sync_members WHERE job_id = $job_id")
