"""The full resync of one filter: page its members, plan against the ledger, apply the
difference in confirmed batches (DESIGN section 5).

Nothing is sent before the whole plan is known, so the safety brake can hold a run that
would remove too much before any write. A dry run stops after the plan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from service.clients.errors import ApiNotFound
from service.db import db, db_session
from workers.sync import ledger
from workers.sync.apply import Applier
from workers.sync.claims import Totals, record_totals, set_note
from workers.sync.conditions import learn_related_objects
from workers.sync.contacts import Member
from workers.sync.job_run import JobRun
from workers.sync.members import DealMembers, people_members
from workers.sync.plan import make_plan, stage

log = logging.getLogger(__name__)

# Persons changed a little before the previous resync started are read again, in case
# Pipedrive's clock and ours disagree.
PERSONS_MARGIN_SECONDS = 300
DRY_RUN_NOTE = "Dry run: the counts are what a sync would do; nothing was sent to Brevo."


class BrakeHeld(Exception):
    """The safety brake stopped the run; ``str()`` gives the counts and what to do."""


@db_session
def previous_full_start(filter_id: int) -> int | None:
    """When the filter's last completed full resync started, if it had one."""
    found = db.select(
        "MAX(created_at) FROM sync_jobs WHERE filter_id = $filter_id "
        "AND status = 'completed' AND kind = 'full'"
    )
    return int(found[0]) if found and found[0] is not None else None


class FullResync(JobRun):
    """One full resync (or dry run) of one claimed job."""

    def _members(self) -> Iterable[list[Member]]:
        if self.job.filter_type == "deals":
            started = previous_full_start(self.job.filter_id)
            since = (
                datetime.fromtimestamp(started - PERSONS_MARGIN_SECONDS, UTC)
                if started is not None
                else None
            )
            return DealMembers(self.pipedrive, self.job.filter_id, since, self.job.id)
        return people_members(self.pipedrive, self.job.filter_id)

    def _list_gone(self) -> bool:
        """Whether the filter's Brevo list was deleted in Brevo (a read, for a dry run)."""
        if self.job.brevo_list_id is None:
            return False
        try:
            self.brevo.get_list(self.job.brevo_list_id)
        except ApiNotFound:
            return True
        return False

    def run(self) -> None:
        """Run the job to the end; raises ``BrakeHeld``, ``ClaimLost`` or an ``ApiError``."""
        job = self.job
        dry_run = job.kind == "dry_run"
        target = None
        list_gone = dry_run and self._list_gone()
        if not dry_run:
            learn_related_objects(self.pipedrive, job)
            target = self.target_list()
        started = time.monotonic()
        for page in self._members():
            self.check()
            stage(job.id, job.token, page)
        staged = time.monotonic()
        plan = make_plan(job.id, job.token, job.filter_id, list_gone)
        log.info(
            "sync planned",
            extra={
                "read_seconds": round(staged - started, 2),
                "plan_seconds": round(time.monotonic() - staged, 2),
                "fetched": plan.fetched,
                "skipped": plan.skipped,
                "adds": plan.adds,
                "updates": plan.updates,
                "removals": plan.removals,
                "list_size": plan.list_size,
            },
        )
        if dry_run:
            record_totals(
                job.id,
                job.token,
                Totals(plan.fetched, plan.adds, plan.updates, plan.removals, plan.skipped),
            )
            set_note(job.id, job.token, DRY_RUN_NOTE)
            return
        record_totals(job.id, job.token, Totals(fetched=plan.fetched, skipped=plan.skipped))
        reason = plan.brake_reason(self.brake_ratio, self.brake_min)
        if reason is not None and not job.forced:
            raise BrakeHeld(reason)
        assert target is not None
        applier = Applier(self.brevo, job, target.id, self.now, self.check)
        applier.apply()
        settling = time.monotonic()
        ledger.settle_ledger(job.id, job.token, job.filter_id, self.now())
        log.info("ledger settled", extra={"seconds": round(time.monotonic() - settling, 2)})
