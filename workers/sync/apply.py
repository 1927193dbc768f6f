"""Sending a plan to Brevo in confirmed batches: email renames, removals, then contacts.

Each batch is recorded in the ledger (with the job's counters) only once Brevo confirmed
it, so a job that dies leaves the ledger true and the next run sends only what was left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from service.clients.brevo import BrevoClient, BrevoContact
from service.clients.errors import ApiNotFound, ApiRequestError, ApiUnavailable
from workers.sync import ledger
from workers.sync.claims import ClaimedJob, set_note
from workers.sync.contacts import contact_attributes, contact_row_json
from workers.sync.ledger import PendingContact

log = logging.getLogger(__name__)

# Brevo's advice for jsonBody ("a safe limit of around 8 MB"; the hard limit is 10 MB).
IMPORT_MAX_BYTES = 8_000_000
# Up to this many contacts are sent one call each: no import, so no poll of /processes,
# which allows only 100 calls an hour for the whole account.
ONE_BY_ONE_MAX = 20
REMOVE_BATCH = 150
ADD_BATCH = 150
PENDING_PAGE = 1000
# Rows an import's read-back did not show, up to this many, are checked one call each.
VERIFY_MAX = 20


def _created_since(contact: BrevoContact, moment: float) -> bool:
    if not contact.created_at:
        return False
    try:
        created = datetime.fromisoformat(contact.created_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    return created.timestamp() >= moment


class Applier:
    """Applies one job's plan to its Brevo list."""

    def __init__(
        self,
        brevo: BrevoClient,
        job: ClaimedJob,
        list_id: int,
        now: Callable[[], int],
        check: Callable[[], None],
    ) -> None:
        self.brevo = brevo
        self.job = job
        self.list_id = list_id
        self.now = now
        self.check = check

    def rename_changed_emails(self) -> None:
        """Rename contacts in place when a member's email changed and the contact is ours
        alone and not blocklisted; the others are replaced (new address sent, old removed)."""
        done: set[tuple[str, str]] = set()
        for change in ledger.email_changes(self.job.id, self.job.filter_id):
            pair = (change.old_email, change.new_email)
            if not change.created_contact or change.shared or pair in done:
                continue
            self.check()
            contact = self.brevo.get_contact(change.old_email)
            if contact is None or contact.email_blacklisted:
                continue
            attributes = contact_attributes(change.first_name, change.last_name)
            self._sending([change.new_email])
            ledger.record_renaming(
                self.job.id,
                self.job.token,
                self.job.filter_id,
                change.old_email,
                change.new_email,
                self.now(),
            )
            try:
                self.brevo.update_contact(change.old_email, attributes, change.new_email)
            except ApiRequestError as exc:
                # The new address is taken or refused, or the old one is gone: replace it
                # instead; the send that follows records a refusal as a rejection.
                log.info("contact not renamed in place", extra={"reason": exc.api_message})
                # Refused: nothing moved into the other filters' lists.
                ledger.forget_renaming(
                    self.job.id, self.job.token, self.job.filter_id, change.new_email
                )
                continue
            ledger.confirm_renamed(
                self.job.id, self.job.token, self.job.filter_id, change, self.now()
            )
            done.add(pair)

    def remove_departed(self) -> None:
        """Take out, 150 at a time, the listed emails no member maps to any more.

        Passes repeat until one finds nothing: another filter's job renaming a contact in
        place meanwhile adds its new address to the candidates (``ledger.record_renaming``),
        wherever it sorts. Each pass settles every email it took, so the loop ends."""
        while self._removal_pass():
            pass

    def _removal_pass(self) -> bool:
        """One pass over the removal candidates in email order; whether it found any."""
        after = ""
        found = False
        while True:
            self.check()
            batch = ledger.removal_batch(self.job.id, self.job.filter_id, after, REMOVE_BATCH)
            if not batch:
                return found
            found = True
            result = self.brevo.remove_from_list(self.list_id, batch)
            succeeded = {e.strip().lower() for e in result.succeeded}
            removed = [e for e in batch if e in succeeded]
            absent = [e for e in batch if e not in succeeded]
            ledger.confirm_removed(self.job.id, self.job.token, self.job.filter_id, removed, absent)
            after = batch[-1]

    def apply(self) -> None:
        """Apply the job's plan: contacts Brevo already holds as they should be join the
        list first (batched, so a burst of moves between filters shows soonest), then email
        changes, removals, and the other new or changed contacts."""
        self.add_known_contacts()
        self.rename_changed_emails()
        self.remove_departed()
        self.send_contacts()

    def send_contacts(self) -> None:
        """Send new and changed contacts: one by one when few, else by imports."""
        first = ledger.pending_contacts(self.job.id, 0, ONE_BY_ONE_MAX + 1)
        if not first:
            return
        if len(first) <= ONE_BY_ONE_MAX:
            self._send_one_by_one(first)
        else:
            self._import_all()

    def add_known_contacts(self) -> None:
        """Add to the list, 150 per call, the pending contacts Brevo already confirmed with
        the same attributes (``member_only``): no import (nor its process poll, from Brevo's
        hourly budget) is needed for a contact that only joins a list. Those Brevo does not
        take stay pending for the sends that follow."""
        after = 0
        known: list[str] = []
        while True:
            page = ledger.pending_contacts(self.job.id, after, PENDING_PAGE)
            known += [p.email for p in page if p.member_only]
            after = page[-1].row_id if page else after
            # Sent as pages come, so memory holds at most a page and a batch.
            while len(known) >= ADD_BATCH or (known and not page):
                self._add_to_list(known[:ADD_BATCH])
                known = known[ADD_BATCH:]
            if not page:
                return

    def _add_to_list(self, emails: list[str]) -> None:
        self.check()
        self._sending(emails)
        result = self.brevo.add_to_list(self.list_id, emails)
        added = {e.strip().lower() for e in result.succeeded}
        confirmed = sorted(e for e in emails if e in added)
        ledger.confirm_sent(
            self.job.id, self.job.token, self.job.filter_id, confirmed, [], self.now()
        )

    def _sending(self, emails: list[str]) -> None:
        ledger.record_sending(self.job.id, self.job.token, self.job.filter_id, emails, self.now())

    def _send_one_by_one(self, pending: list[PendingContact]) -> None:
        for contact in pending:
            self.check()
            self._sending([contact.email])
            try:
                attributes = contact_attributes(contact.first_name, contact.last_name)
                created = self.brevo.upsert_contact(contact.email, attributes, [self.list_id])
            except ApiRequestError as exc:
                if isinstance(exc, ApiNotFound):
                    raise
                # Brevo answers 400 for a bad list as for a bad address: only once the
                # list is known to exist is the refusal the contact's (else ApiNotFound).
                self.brevo.get_list(self.list_id)
                log.warning("brevo rejected a contact", extra={"reason": exc.api_message})
                ledger.reject_sent(
                    self.job.id, self.job.token, self.job.filter_id, [contact.email], self.now()
                )
                continue
            ledger.confirm_sent(
                self.job.id,
                self.job.token,
                self.job.filter_id,
                [contact.email],
                [contact.email] if created is not None else [],
                self.now(),
            )

    def _import_all(self) -> None:
        after = 0
        while True:
            self.check()
            body, first_ids, after = self._next_import_body(after)
            if first_ids is None:
                return
            self._import(body, first_ids)

    def _next_import_body(self, after: int) -> tuple[bytearray, tuple[int, int] | None, int]:
        """The next import's rows, encoded, up to ``IMPORT_MAX_BYTES``; and their id range."""
        body = bytearray(b"[")
        low: int | None = None
        high = after
        while True:
            page = ledger.pending_contacts(self.job.id, high, PENDING_PAGE)
            if not page:
                break
            for contact in page:
                row = contact_row_json(contact.email, contact.first_name, contact.last_name)
                if low is not None and len(body) + len(row) + 1 > IMPORT_MAX_BYTES:
                    body[-1:] = b"]"
                    return body, (low, high), high
                body += row
                body += b","
                low = contact.row_id if low is None else low
                high = contact.row_id
        if low is None:
            return bytearray(), None, high
        body[-1:] = b"]"
        return body, (low, high), high

    def _import(self, body: bytearray, first_ids: tuple[int, int]) -> None:
        """One import: start, wait, confirm by reading the list back, reject the rest."""
        ledger.record_sending(
            self.job.id, self.job.token, self.job.filter_id, [], self.now(), first_ids
        )
        started = self.brevo.start_import_json(self.list_id, body)
        del body
        status = self.brevo.wait_for_process(started.process_id)
        if status != "completed":
            raise ApiUnavailable(
                "brevo", "POST /contacts/import", f"import process {started.process_id} {status}"
            )
        for page in self.brevo.iter_list_contacts(self.list_id, modified_since=started.started_at):
            self.check()
            emails = [c.email for c in page]
            created = [c.email for c in page if _created_since(c, started.started_at)]
            ledger.confirm_sent(
                self.job.id,
                self.job.token,
                self.job.filter_id,
                emails,
                created,
                self.now(),
                first_ids,
            )
        self._settle_missing(first_ids, started.started_at)

    def _settle_missing(self, first_ids: tuple[int, int], started_at: float) -> None:
        """Decide the rows of an import that the read-back did not show.

        A few are asked about one by one: in the list means confirmed (a read-back that
        lagged), absent means Brevo rejected the row. Many missing rows say more about the
        read-back than about the rows, so they stay pending and the next run sends them
        again rather than remembering them as rejected.
        """
        missing = ledger.pending_emails(self.job.id, first_ids, VERIFY_MAX + 1)
        if len(missing) > VERIFY_MAX:
            log.warning("import rows missing from the read-back", extra={"first_ids": first_ids})
            set_note(
                self.job.id,
                self.job.token,
                "Some imported contacts did not show in the list when it was read back; "
                "the next sync sends them again.",
            )
            return
        for email in missing:
            self.check()
            contact = self.brevo.get_contact(email)
            if contact is not None and self.list_id in contact.list_ids:
                created = [email] if _created_since(contact, started_at) else []
                ledger.confirm_sent(
                    self.job.id, self.job.token, self.job.filter_id, [email], created, self.now()
                )
        rejected = ledger.reject_sent(
            self.job.id, self.job.token, self.job.filter_id, [], self.now(), first_ids
        )
        if rejected:
            log.warning("brevo import rejected rows", extra={"rejected": rejected})
