"""A filter's routed webhook changes as an incremental job reads them, and their removal
once the job applied them (token-checked, so a job declared dead removes nothing)."""

from __future__ import annotations

from dataclasses import dataclass

from service.db import db, db_session
from workers.sync.claims import check_claim
from workers.sync.contacts import Member


@dataclass(frozen=True)
class ChangeRow:
    """One routed change (a ``filter_changes`` row)."""

    id: int
    kind: str
    action: str | None
    entity_id: int | None
    occurred_at: int
    data_time: int | None
    email: str | None
    first_name: str | None
    last_name: str | None
    merged_to: int | None


@dataclass(frozen=True)
class FilterChanges:
    """Everything waiting for one filter, up to the row ``upto``."""

    upto: int
    rows: list[ChangeRow]

    @property
    def relist(self) -> bool:
        """Whether some change asks for the filter to be listed whole."""
        return any(r.kind == "relist" for r in self.rows)

    def members(self) -> list[ChangeRow]:
        """Changes of the filter's own member entities (persons or deals)."""
        return [r for r in self.rows if r.kind == "member"]

    def changed_entities(self) -> set[int]:
        """The member entities that changed."""
        return {r.entity_id for r in self.members() if r.entity_id is not None}

    def needs_listing(self) -> bool:
        """Whether Pipedrive must be asked: a member was created or changed (a deleted
        entity is simply gone from every list)."""
        return any(r.action != "delete" for r in self.members())

    def since(self) -> int | None:
        """The oldest member change's time."""
        times = [r.occurred_at for r in self.members() if r.action != "delete"]
        return min(times) if times else None

    def persons(self) -> tuple[dict[int, Member], dict[int, int | None]]:
        """For a deal filter: the persons behind its deals that changed, with the newest
        data of each, and the deleted ones with their merge survivor (None when simply
        deleted).

        Data is ranked by its ``update_time`` (then by arrival), so an older delivery that
        arrived late does not win; a person's latest change decides.
        """
        fresh: dict[int, Member] = {}
        deleted: dict[int, int | None] = {}
        for person_id, r in self._latest().items():
            if r.action == "delete":
                deleted[person_id] = r.merged_to
            else:
                fresh[person_id] = Member(
                    entity_id=person_id,
                    person_id=person_id,
                    email=r.email,
                    first_name=r.first_name,
                    last_name=r.last_name,
                    updated_at=r.data_time,
                )
        return fresh, deleted

    def deleted_at(self) -> dict[int, int]:
        """When each person ``persons`` reports deleted was deleted (the delete's time):
        person data older than that, arriving later, must not bring the person back."""
        return {
            person_id: r.occurred_at
            for person_id, r in self._latest().items()
            if r.action == "delete"
        }

    def _latest(self) -> dict[int, ChangeRow]:
        """Each changed person's deciding change: the newest by data time (a deletion's
        own time when it carries none), then by arrival."""
        latest: dict[int, tuple[tuple[int, int], ChangeRow]] = {}
        for r in self.rows:
            if r.kind != "person" or r.entity_id is None:
                continue
            if r.action != "delete" and r.data_time is None and r.email is None:
                continue  # a change whose delivery carried no usable data
            rank = (r.data_time if r.data_time is not None else r.occurred_at, r.id)
            previous = latest.get(r.entity_id)
            if previous is not None and rank < previous[0]:
                continue
            latest[r.entity_id] = (rank, r)
        return {person_id: r for person_id, (_, r) in latest.items()}


@db_session
def load_changes(filter_id: int) -> FilterChanges | None:
    """The filter's waiting changes, or None when there are none."""
    rows = db.select(
        "id, kind, action, entity_id, occurred_at, data_time, email, first_name, last_name, "
        "merged_to FROM filter_changes WHERE filter_id = $filter_id ORDER BY id"
    )
    if not rows:
        return None
    changes = [ChangeRow(*r) for r in rows]
    return FilterChanges(changes[-1].id, changes)


@db_session
def consume_changes(job_id: int, token: str, filter_id: int, upto: int) -> int:
    """Delete the filter's changes up to ``upto``: the job applied them."""
    check_claim(job_id, token)
    cursor = db.execute("DELETE FROM filter_changes WHERE filter_id = $filter_id AND id <= $upto")
    return int(cursor.rowcount)


@db_session
def pending_change_count() -> int:
    """How many routed changes wait for a job, across filters."""
    return int(db.select("COUNT(*) FROM filter_changes")[0])
