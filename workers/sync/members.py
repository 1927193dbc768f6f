"""Reading a filter's members from Pipedrive, page by page, as ``Member`` values.

People filters give persons directly. Deal filters give deals; each deal's person comes
from the ledger when it already holds it, else from ``persons_by_ids`` in full batches of
100, and persons changed since the previous full resync are read fresh. Memory holds one
page and at most one look-up batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from service.clients.pipedrive import Deal, Person, PipedriveClient
from service.db import db, db_session
from workers.sync.contacts import Member, valid_email
from workers.sync.sql import in_list
from workers.sync.webhook_data import unix_time

LOOKUP_BATCH = 100


def person_member(person: Person, entity_id: int | None = None) -> Member:
    """The member a person makes (as itself, or as the person of deal ``entity_id``)."""
    return Member(
        entity_id=person.id if entity_id is None else entity_id,
        person_id=person.id,
        email=valid_email(person.primary_email),
        first_name=person.first_name or None,
        last_name=person.last_name or None,
        updated_at=unix_time(person.update_time),
    )


def people_members(pipedrive: PipedriveClient, filter_id: int) -> Iterator[list[Member]]:
    """The persons of a people filter, a page at a time."""
    for page in pipedrive.iter_members("people", filter_id):
        yield [person_member(p) for p in page.members if isinstance(p, Person)]


@db_session
def known_persons(
    filter_id: int, person_ids: list[int], job_id: int | None = None
) -> dict[int, Member]:
    """What the filter's ledger holds of these persons, and what job ``job_id`` already
    staged of them this run, keyed by person id."""
    ids, params = in_list("p", sorted(set(person_ids)))
    params.update(filter_id=filter_id, job_id=job_id)
    rows = db.select(
        "person_id, email, first_name, last_name, source_time FROM memberships "
        f"WHERE filter_id = $filter_id AND person_id IN {ids}",
        params,
    )
    if job_id is not None:
        rows += db.select(
            "person_id, email, first_name, last_name, source_time FROM sync_members "
            f"WHERE job_id = $job_id AND person_id IN {ids}",
            params,
        )
    return {int(r[0]): Member(0, int(r[0]), r[1], r[2], r[3], r[4]) for r in rows}


class DealMembers:
    """The deals of a deal filter with their persons' emails and names.

    ``updated_since`` lists only the deals changed since then (an incremental run);
    ``ignored_updated_since`` tells afterwards whether Pipedrive ignored it, in which case
    every deal was listed. ``fresh`` holds person data newer than the ledger's (from
    webhook deliveries); it is used where it is not older than what the ledger holds.
    """

    def __init__(
        self,
        pipedrive: PipedriveClient,
        filter_id: int,
        changed_since: datetime | None,
        job_id: int | None = None,
        *,
        updated_since: datetime | None = None,
        fresh: dict[int, Member] | None = None,
    ) -> None:
        self.pipedrive = pipedrive
        self.filter_id = filter_id
        self.changed_since = changed_since
        # The job whose stage holds the pages already yielded: a person met again in a
        # later page is found there instead of being looked up twice.
        self.job_id = job_id
        self.updated_since = updated_since
        self.fresh = fresh or {}
        self.ignored_updated_since = False
        self.lookups = 0

    def _newest(self, known: dict[int, Member]) -> dict[int, Member]:
        """``known`` with the fresh person data wherever it is not older."""
        for person_id, member in self.fresh.items():
            held = known.get(person_id)
            if held is None or not _older(member, held):
                known[person_id] = member
        return known

    def _changed_persons(self) -> dict[int, Member]:
        """Persons updated since the previous full resync that the ledger holds, fresh."""
        if self.changed_since is None:
            return {}
        fresh: dict[int, Member] = {}
        for page in self.pipedrive.iter_persons(self.changed_since):
            known = known_persons(self.filter_id, [p.id for p in page])
            fresh.update({p.id: person_member(p) for p in page if p.id in known})
        return fresh

    def __iter__(self) -> Iterator[list[Member]]:
        changed = self._changed_persons()
        waiting: list[Deal] = []
        unknown: set[int] = set()
        pages = self.pipedrive.iter_members("deals", self.filter_id, self.updated_since)
        for page in pages:
            self.ignored_updated_since |= page.ignored_updated_since
            deals = [d for d in page.members if isinstance(d, Deal)]
            person_ids = [d.person_id for d in deals if d.person_id is not None]
            known = known_persons(self.filter_id, person_ids, self.job_id) if person_ids else {}
            known.update({pid: m for pid, m in changed.items() if pid in known})
            known = self._newest(known)
            ready: list[Member] = []
            for deal in deals:
                if deal.person_id is None:
                    ready.append(Member(deal.id, None, None, None, None))
                elif deal.person_id in known:
                    ready.append(_as_deal(known[deal.person_id], deal))
                else:
                    waiting.append(deal)
                    unknown.add(deal.person_id)
                if len(unknown) >= LOOKUP_BATCH:
                    resolved = self._resolve(waiting, unknown)
                    ready.extend(resolved)
                    # Later deals of this page may share these persons.
                    known.update({m.person_id: m for m in resolved if m.person_id})
                    waiting, unknown = [], set()
            if ready:
                yield ready
        if waiting:
            yield self._resolve(waiting, unknown)

    def _resolve(self, deals: list[Deal], person_ids: set[int]) -> list[Member]:
        self.lookups += 1
        found = {p.id: p for p in self.pipedrive.persons_by_ids(sorted(person_ids))}
        members = []
        for deal in deals:
            person = found.get(deal.person_id) if deal.person_id is not None else None
            if person is None:
                # The person was deleted or is not visible: nothing to send for this deal.
                members.append(Member(deal.id, deal.person_id, None, None, None))
            else:
                members.append(person_member(person, entity_id=deal.id))
        return members


def _older(candidate: Member, held: Member) -> bool:
    """Whether ``candidate``'s person data is older than ``held``'s (unknown times are not)."""
    if candidate.updated_at is None or held.updated_at is None:
        return False
    return candidate.updated_at < held.updated_at


def _as_deal(person: Member, deal: Deal) -> Member:
    return Member(
        deal.id,
        person.person_id,
        person.email,
        person.first_name,
        person.last_name,
        person.updated_at,
    )
