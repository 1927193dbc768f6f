"""Writes to the membership ledger, each with the job's counters in one transaction that
first checks the claim token, so a job declared dead can no longer change anything.

The ledger records only what Brevo confirmed: a member's email is ``listed`` once Brevo
showed it in the list, ``rejected`` when Brevo refused it (remembered with the attributes
hash, so it is not sent again until the person changes).

What is in flight is written down before it is sent (``brevo_sends``): a worker killed
between Brevo's acceptance and the ledger's record would otherwise leave addresses in the
list that no run knows to take out. Until the ledger settles them, such emails are
removal candidates like listed ones: taken out unless a member still maps them (a
removal of an address that never arrived is counted as absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.db import db, db_session
from workers.sync.claims import Totals, add_totals, check_claim
from workers.sync.sql import in_list

PENDING = "action IN ('add', 'update', 'change') AND done = 0"
# The first staged row of an email is the one sent; the others ride along with it.
FIRST_OF_EMAIL = (
    "NOT EXISTS (SELECT 1 FROM sync_members s2 WHERE s2.job_id = sync_members.job_id "
    "AND s2.email = sync_members.email AND s2.id < sync_members.id "
    "AND s2.action IN ('add', 'update', 'change'))"
)


@dataclass(frozen=True)
class PendingContact:
    """A contact to send: the first staged row of its email."""

    row_id: int
    email: str
    first_name: str | None
    last_name: str | None
    member_only: bool


def adds_and_updates(where: str, params: dict[str, object]) -> tuple[int, int]:
    """Among the staged rows matching ``where``: how many contacts (emails) are added, and
    how many updated (a changed email counts as an update). Inside the caller's session."""
    added, updated = db.select(
        "COALESCE(SUM(kind = 'add'), 0), COALESCE(SUM(kind != 'add'), 0) FROM ("
        " SELECT CASE WHEN MAX(action IN ('change', 'update')) THEN 'update' ELSE 'add' END"
        f" AS kind FROM sync_members WHERE {where} GROUP BY email)",
        params,
    )[0]
    return int(added), int(updated)


@db_session
def pending_contacts(job_id: int, after_id: int, limit: int) -> list[PendingContact]:
    """The next pending contacts to send, by staged row id, one per email.

    ``member_only`` is True when Brevo already confirmed this email with the same
    attributes (for any filter, even one that has dropped it since): the contact exists as
    it should and only needs the list. Never when a member sent with this email is listed
    in the ledger under another address (its email changed, or its deal changed hands):
    confirming rewrites that ledger row, and the old address, no longer listed there,
    would stay in the list for good. Such a contact waits until the removals took the old
    address out.
    """
    rows = db.select(
        "id, email, first_name, last_name, (EXISTS (SELECT 1 FROM memberships m "
        " WHERE m.email = sync_members.email AND m.attrs_hash = sync_members.attrs_hash "
        " AND m.state = 'listed') OR EXISTS (SELECT 1 FROM brevo_contacts c "
        " WHERE c.email = sync_members.email AND c.attrs_hash = sync_members.attrs_hash)) "
        "AND NOT EXISTS (SELECT 1 FROM sync_members s3 JOIN memberships m3 "
        " ON m3.filter_id = (SELECT filter_id FROM sync_jobs WHERE id = $job_id) "
        " AND m3.entity_id = s3.entity_id "
        " WHERE s3.job_id = sync_members.job_id AND s3.email = sync_members.email "
        " AND s3.done = 0 AND m3.state = 'listed' AND m3.email IS NOT s3.email) "
        f"FROM sync_members WHERE job_id = $job_id AND id > $after_id AND {PENDING} "
        f"AND {FIRST_OF_EMAIL} ORDER BY id LIMIT $limit"
    )
    return [PendingContact(int(r[0]), r[1], r[2], r[3], bool(r[4])) for r in rows]


def _pending_of(
    emails: Sequence[str], first_ids: tuple[int, int] | None
) -> tuple[str, dict[str, object]]:
    """The WHERE clause picking the pending staged rows of ``emails`` (or of a row range)."""
    clause = f"job_id = $job_id AND {PENDING}"
    params: dict[str, object] = {}
    if emails:
        listed, params = in_list("e", list(emails))
        clause += f" AND email IN {listed}"
    if first_ids is not None:
        params["lo"], params["hi"] = first_ids
        clause += (
            " AND (SELECT MIN(s2.id) FROM sync_members s2 WHERE s2.job_id = sync_members.job_id"
            " AND s2.email = sync_members.email"
            " AND s2.action IN ('add', 'update', 'change')) BETWEEN $lo AND $hi"
        )
    return clause, params


def _record_members(
    where: str, params: dict[str, object], state: str, created: str, only_changes: bool = False
) -> None:
    """Write the staged rows matching ``where`` into the ledger, one row per member.

    ``state`` and ``created`` are SQL expressions over the staged row. A member keeps its
    ``created_contact`` while it stays listed under the same email.
    """
    changed = (
        " WHERE memberships.email IS NOT excluded.email"
        " OR memberships.attrs_hash IS NOT excluded.attrs_hash"
        " OR memberships.state != excluded.state"
        " OR memberships.person_id IS NOT excluded.person_id"
        " OR memberships.first_name IS NOT excluded.first_name"
        " OR memberships.last_name IS NOT excluded.last_name"
        " OR memberships.source_time IS NOT excluded.source_time"
        if only_changes
        else ""
    )
    db.execute(
        "INSERT INTO memberships (filter_id, entity_id, person_id, email, first_name, "
        "last_name, attrs_hash, state, created_contact, updated_at, source_time) "
        "SELECT $filter_id, entity_id, person_id, email, first_name, last_name, attrs_hash, "
        f"{state}, {created}, $now, source_time FROM sync_members WHERE {where} "
        "ON CONFLICT (filter_id, entity_id) DO UPDATE SET person_id = excluded.person_id, "
        "source_time = excluded.source_time, "
        "first_name = excluded.first_name, last_name = excluded.last_name, "
        "attrs_hash = excluded.attrs_hash, state = excluded.state, "
        "updated_at = excluded.updated_at, "
        "created_contact = CASE WHEN memberships.email = excluded.email "
        " AND memberships.state = 'listed' AND excluded.state = 'listed' "
        " THEN memberships.created_contact ELSE excluded.created_contact END, "
        f"email = excluded.email{changed}",
        params,
    )


def _remember_contacts(where: str, params: dict[str, object]) -> None:
    """Record that Brevo holds the emails of the staged rows matching ``where`` with the
    attributes sent (those of each email's first row)."""
    db.execute(
        "INSERT INTO brevo_contacts (email, attrs_hash, confirmed_at) "
        f"SELECT email, attrs_hash, $now FROM sync_members WHERE {where} AND {FIRST_OF_EMAIL} "
        "ON CONFLICT (email) DO UPDATE SET attrs_hash = excluded.attrs_hash, "
        "confirmed_at = excluded.confirmed_at",
        params,
    )


@db_session
def confirm_sent(
    job_id: int,
    token: str,
    filter_id: int,
    emails: Sequence[str],
    created: Sequence[str],
    now: int,
    first_ids: tuple[int, int] | None = None,
) -> Totals:
    """Record that Brevo shows ``emails`` in the list with the attributes sent.

    ``created`` are those among them this service created. Returns the counts added.
    """
    check_claim(job_id, token)
    if not emails:
        return Totals()
    where, params = _pending_of(emails, first_ids)
    params.update(job_id=job_id, filter_id=filter_id, now=now)
    made, made_params = in_list("c", list(created) or [""])
    params.update(made_params)
    added, updated = adds_and_updates(where, params)
    _remember_contacts(where, params)
    _record_members(where, params, "'listed'", f"email IN {made}")
    db.execute(f"UPDATE sync_members SET done = 1 WHERE {where}", params)
    totals = Totals(added=added, updated=updated)
    add_totals(job_id, token, totals)
    return totals


@db_session
def pending_emails(job_id: int, first_ids: tuple[int, int], limit: int) -> list[str]:
    """Emails of a sent range that Brevo has not confirmed yet (at most ``limit``)."""
    where, params = _pending_of([], first_ids)
    params.update(job_id=job_id, limit=limit)
    rows = db.select(
        f"DISTINCT email FROM sync_members WHERE {where} ORDER BY email LIMIT $limit", params
    )
    return [str(r) for r in rows]


@db_session
def reject_sent(
    job_id: int,
    token: str,
    filter_id: int,
    emails: Sequence[str],
    now: int,
    first_ids: tuple[int, int] | None = None,
) -> int:
    """Record that Brevo refused ``emails`` (or every pending row of a sent range).

    Their members count as skipped; the rejection is remembered with the attributes hash.
    """
    check_claim(job_id, token)
    if not emails and first_ids is None:
        return 0
    where, params = _pending_of(emails, first_ids)
    params.update(job_id=job_id, filter_id=filter_id, now=now)
    count, replaced = db.select(
        "COUNT(*), COUNT(DISTINCT CASE WHEN action = 'change' THEN email END) "
        f"FROM sync_members WHERE {where}",
        params,
    )[0]
    _record_members(where, params, "'rejected'", "0")
    db.execute(f"UPDATE sync_members SET done = 1 WHERE {where}", params)
    # A changed member's old address already left the list (removals go first) and was not
    # counted then, as the change would have counted instead; with the new one refused it
    # is a removal after all.
    add_totals(job_id, token, Totals(removed=int(replaced), skipped=int(count)))
    return int(count)


@dataclass(frozen=True)
class EmailChange:
    """A member whose email changed: the candidate for renaming the contact in place."""

    row_id: int
    ledger_id: int
    old_email: str
    new_email: str
    first_name: str | None
    last_name: str | None
    created_contact: bool
    shared: bool


@db_session
def email_changes(job_id: int, filter_id: int) -> list[EmailChange]:
    """Pending email changes, with whether any other ledger row maps the old email."""
    rows = db.select(
        "s.id, m.id, m.email, s.email, s.first_name, s.last_name, m.created_contact, "
        # Another member of the same person (a second deal, another filter) is the same
        # identity; only another person's row makes the contact shared.
        "EXISTS (SELECT 1 FROM memberships o WHERE o.email = m.email AND o.id != m.id "
        " AND (o.person_id IS NULL OR m.person_id IS NULL OR o.person_id != m.person_id)) "
        "FROM sync_members s JOIN memberships m "
        " ON m.filter_id = $filter_id AND m.entity_id = s.entity_id "
        "WHERE s.job_id = $job_id AND s.action = 'change' AND s.done = 0 "
        "AND m.state = 'listed' AND m.person_id IS s.person_id ORDER BY s.id"
    )
    return [
        EmailChange(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], bool(r[6]), bool(r[7]))
        for r in rows
    ]


@db_session
def confirm_renamed(job_id: int, token: str, filter_id: int, change: EmailChange, now: int) -> None:
    """Record that the contact was renamed in place from the old email to the new one.

    Every member of the filter that moved between the same two addresses (two deals of
    one person, say) moves with it; the contact counts once as updated.
    """
    check_claim(job_id, token)
    params = {
        "job_id": job_id,
        "filter_id": filter_id,
        "old": change.old_email,
        "new": change.new_email,
        "now": now,
    }
    moved = (
        "SELECT s.entity_id FROM sync_members s WHERE s.job_id = $job_id "
        "AND s.action = 'change' AND s.done = 0 AND s.email = $new"
    )
    db.execute(
        "UPDATE memberships SET email = s.email, first_name = s.first_name, "
        "last_name = s.last_name, attrs_hash = s.attrs_hash, person_id = s.person_id, "
        "source_time = s.source_time, updated_at = $now "
        "FROM sync_members AS s WHERE s.job_id = $job_id "
        "AND s.entity_id = memberships.entity_id AND s.action = 'change' AND s.done = 0 "
        "AND s.email = $new AND memberships.filter_id = $filter_id "
        "AND memberships.email = $old AND memberships.state = 'listed'",
        params,
    )
    # The contact's old address is gone from Brevo; its new one holds what was sent.
    db.execute("DELETE FROM brevo_contacts WHERE email = $old", params)
    db.execute(
        "INSERT INTO brevo_contacts (email, attrs_hash, confirmed_at) "
        "SELECT email, attrs_hash, $now FROM sync_members WHERE job_id = $job_id "
        "AND action = 'change' AND done = 0 AND email = $new ORDER BY id LIMIT 1 "
        "ON CONFLICT (email) DO UPDATE SET attrs_hash = excluded.attrs_hash, "
        "confirmed_at = excluded.confirmed_at",
        params,
    )
    db.execute(
        "UPDATE sync_members SET done = 1 WHERE job_id = $job_id AND entity_id IN ("
        f"{moved}) AND EXISTS (SELECT 1 FROM memberships m WHERE m.filter_id = $filter_id "
        "AND m.entity_id = sync_members.entity_id AND m.email = $new)",
        params,
    )
    add_totals(job_id, token, Totals(updated=1))


@db_session
def record_sending(
    job_id: int,
    token: str,
    filter_id: int,
    emails: Sequence[str],
    now: int,
    first_ids: tuple[int, int] | None = None,
) -> None:
    """Write down, before the call, the emails about to be sent to the filter's list:
    ``emails``, or the pending contacts of a staged range (an import)."""
    check_claim(job_id, token)
    params: dict[str, object] = {"job_id": job_id, "filter_id": filter_id, "now": now}
    if first_ids is not None:
        where, more = _pending_of([], first_ids)
        params.update(more)
        db.execute(
            "INSERT INTO brevo_sends (filter_id, job_id, email, sent_at) "
            f"SELECT $filter_id, $job_id, email, $now FROM sync_members WHERE {where} "
            f"AND {FIRST_OF_EMAIL}",
            params,
        )
    if emails:
        listed, more = in_list("e", list(emails))
        params.update(more)
        db.execute(
            "INSERT INTO brevo_sends (filter_id, job_id, email, sent_at) "
            f"SELECT $filter_id, $job_id, value, $now FROM {listed}",
            params,
        )


@db_session
def record_renaming(
    job_id: int, token: str, filter_id: int, old_email: str, new_email: str, now: int
) -> None:
    """Write down, before a contact is renamed in place, that its new address may now be
    in the list of every other filter whose ledger lists the old one: the rename carries
    the contact's list memberships along, and such a filter's member may be leaving it
    (its next removals take the new address out unless a member maps it)."""
    check_claim(job_id, token)
    db.execute(
        "INSERT INTO brevo_sends (filter_id, job_id, email, sent_at) "
        "SELECT DISTINCT filter_id, $job_id, $new_email, $now FROM memberships "
        "WHERE email = $old_email AND state = 'listed' AND filter_id != $filter_id"
    )


@db_session
def forget_renaming(job_id: int, token: str, filter_id: int, new_email: str) -> None:
    """Take back ``record_renaming``: Brevo refused the rename, no list changed."""
    check_claim(job_id, token)
    db.execute(
        "DELETE FROM brevo_sends WHERE job_id = $job_id AND email = $new_email "
        "AND filter_id != $filter_id"
    )


# Emails that may be in the filter's list: confirmed ones, and those sent but not settled.
_MAYBE_LISTED = (
    "SELECT email FROM memberships WHERE filter_id = $filter_id AND state = 'listed' "
    "UNION SELECT email FROM brevo_sends WHERE filter_id = $filter_id"
)


@db_session
def removal_batch(job_id: int, filter_id: int, after: str, limit: int) -> list[str]:
    """The next emails that may be in the filter's list (listed, or sent and never
    settled) that no staged member maps to any more."""
    rows = db.select(
        f"email FROM ({_MAYBE_LISTED}) m WHERE m.email > $after "
        "AND NOT EXISTS (SELECT 1 FROM sync_members s WHERE s.job_id = $job_id "
        " AND s.email = m.email AND s.action != 'skip') ORDER BY m.email LIMIT $limit"
    )
    return [str(r) for r in rows]


@db_session
def confirm_removed(
    job_id: int, token: str, filter_id: int, removed: Sequence[str], absent: Sequence[str]
) -> int:
    """Record that ``removed`` left the list and ``absent`` were no longer in it.

    Only a removal that is not the old address of a changed member counts as removed.
    """
    check_claim(job_id, token)
    counted = 0
    if removed:
        listed, params = in_list("r", list(removed))
        params.update(job_id=job_id, filter_id=filter_id)
        # The old address of a changed member is part of its update, not a removal; an
        # address only sent (never settled) that Brevo took out is one.
        listed_row = (
            "SELECT 1 FROM memberships o WHERE o.filter_id = $filter_id AND o.state = 'listed' "
            "AND o.email = m.email"
        )
        counted = int(
            db.select(
                f"COUNT(*) FROM ({_MAYBE_LISTED}) m WHERE m.email IN {listed} "
                f"AND (NOT EXISTS ({listed_row}) OR EXISTS ({listed_row} "
                " AND NOT EXISTS (SELECT 1 FROM sync_members s WHERE s.job_id = $job_id "
                "  AND s.entity_id = o.entity_id AND s.action = 'change')))",
                params,
            )[0]
        )
    gone = list(removed) + list(absent)
    if gone:
        listed, params = in_list("g", gone)
        params["filter_id"] = filter_id
        db.execute(
            "DELETE FROM memberships WHERE filter_id = $filter_id AND state = 'listed' "
            f"AND email IN {listed}",
            params,
        )
        db.execute(
            f"DELETE FROM brevo_sends WHERE filter_id = $filter_id AND email IN {listed}", params
        )
    add_totals(job_id, token, Totals(removed=counted))
    return counted


@db_session
def settle_ledger(job_id: int, token: str, filter_id: int, now: int) -> None:
    """Bring the ledger in line with the members for everything that needed no Brevo call.

    Members kept as they are get their row (a new deal of a listed person, say); members
    without an email are recorded as skipped; members that left are forgotten (their
    emails were removed above, or another member still maps them).
    """
    check_claim(job_id, token)
    _record_members(
        "job_id = $job_id AND (action = 'keep' OR (action = 'skip' AND email IS NULL))",
        {"job_id": job_id, "filter_id": filter_id, "now": now},
        "CASE WHEN email IS NULL THEN 'skipped' ELSE 'listed' END",
        "0",
        only_changes=True,
    )
    db.execute(
        "DELETE FROM memberships WHERE filter_id = $filter_id AND NOT EXISTS ("
        " SELECT 1 FROM sync_members s WHERE s.job_id = $job_id "
        " AND s.entity_id = memberships.entity_id)"
    )
    # Sends the ledger now accounts for are settled; the others (a read-back that lagged)
    # stay candidates for the next run.
    db.execute(
        "DELETE FROM brevo_sends WHERE filter_id = $filter_id AND EXISTS (SELECT 1 FROM "
        "memberships m WHERE m.filter_id = $filter_id AND m.email = brevo_sends.email "
        "AND m.state IN ('listed', 'rejected'))"
    )


@db_session
def forget_list(job_id: int, token: str, filter_id: int) -> int:
    """Forget every listed email of the filter (its Brevo list is gone); return how many."""
    check_claim(job_id, token)
    cursor = db.execute("DELETE FROM memberships WHERE filter_id = $filter_id AND state = 'listed'")
    db.execute("DELETE FROM brevo_sends WHERE filter_id = $filter_id")
    return int(cursor.rowcount)
