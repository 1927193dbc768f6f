"""The filter's Brevo list: created on the first sync (in ``BREVO_FOLDER_ID`` or a folder
named "Pipedrive"), recreated when someone deleted it in Brevo, renamed to follow the filter."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from service.clients.brevo import DEFAULT_FOLDER_NAME, BrevoClient
from service.clients.errors import ApiNotFound
from service.db import Filter, db_session
from service.list_names import brevo_list_name
from workers.sync.claims import ClaimedJob, check_claim

log = logging.getLogger(__name__)

# Two jobs of this worker process creating the first list at once would make two folders.
_folder_lock = threading.Lock()


@dataclass(frozen=True)
class TargetList:
    """The list a job writes to; ``replaced`` names a list that was deleted in Brevo."""

    id: int
    replaced: int | None = None

    def note(self) -> str | None:
        """What the job says about a recreated list."""
        if self.replaced is None:
            return None
        return (
            f"Brevo list {self.replaced} was deleted in Brevo: created list {self.id} "
            "and filled it again."
        )


def folder_for_lists(brevo: BrevoClient, folder_id: int | None) -> int:
    """``BREVO_FOLDER_ID``, else the folder named "Pipedrive", created on first need."""
    if folder_id is not None:
        return folder_id
    with _folder_lock:
        found = _named_folders(brevo)
        if found:
            return found[0]
        created = brevo.create_folder(DEFAULT_FOLDER_NAME)
        # Another worker process may have created one at the same moment: every process
        # settles on the oldest, so the lists still share one folder.
        return min(_named_folders(brevo) or [created])


def _named_folders(brevo: BrevoClient) -> list[int]:
    """The ids of the folders named "Pipedrive", oldest first."""
    return sorted(f.id for f in brevo.list_folders() if f.name == DEFAULT_FOLDER_NAME)


@db_session
def _store_list_id(job_id: int, token: str, filter_id: int, list_id: int) -> None:
    check_claim(job_id, token)
    Filter.get(id=filter_id).brevo_list_id = list_id


def ensure_list(brevo: BrevoClient, job: ClaimedJob, folder_id: int | None) -> TargetList:
    """The filter's list, created or recreated as needed, with the filter's current name."""
    name = brevo_list_name(job.filter_name, job.filter_id)
    if job.brevo_list_id is not None:
        try:
            current = brevo.get_list(job.brevo_list_id)
        except ApiNotFound:
            log.warning("brevo list deleted in Brevo", extra={"list_id": job.brevo_list_id})
        else:
            if current.name != name:
                brevo.rename_list(current.id, name)
            return TargetList(current.id)
    list_id = brevo.create_list(name, folder_for_lists(brevo, folder_id))
    # Stored at once: a crash after this point must not create a second list next time.
    _store_list_id(job.id, job.token, job.filter_id, list_id)
    log.info("brevo list created", extra={"list_id": list_id})
    return TargetList(list_id, replaced=job.brevo_list_id)
