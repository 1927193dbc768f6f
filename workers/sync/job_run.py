"""What every kind of sync run holds: its claimed job, the two clients, the Brevo folder,
the safety brake's settings, the clock and the claim check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

from service.clients.brevo import BrevoClient
from service.clients.factory import brevo_client, pipedrive_client
from service.clients.pipedrive import PipedriveClient
from service.config import Settings
from workers.sync import ledger
from workers.sync.claims import ClaimedJob, set_note
from workers.sync.lists import TargetList, ensure_list


class JobRun:
    """One run of one claimed job; subclasses define ``run``."""

    def __init__(
        self,
        job: ClaimedJob,
        pipedrive: PipedriveClient,
        brevo: BrevoClient,
        *,
        folder_id: int | None,
        brake_ratio: float,
        brake_min: int,
        now: Callable[[], int],
        check: Callable[[], None],
    ) -> None:
        self.job = job
        self.pipedrive = pipedrive
        self.brevo = brevo
        self.folder_id = folder_id
        self.brake_ratio = brake_ratio
        self.brake_min = brake_min
        self.now = now
        self.check = check

    @classmethod
    def for_settings(
        cls, job: ClaimedJob, settings: Settings, now: Callable[[], int], check: Callable[[], None]
    ) -> Self:
        """A run with the clients, folder and brake the settings give."""
        return cls(
            job,
            pipedrive_client(settings),
            brevo_client(settings),
            folder_id=settings.brevo_folder_id,
            brake_ratio=settings.removal_brake_ratio,
            brake_min=settings.removal_brake_min,
            now=now,
            check=check,
        )

    def target_list(self) -> TargetList:
        """The filter's Brevo list (``ensure_list``). When it had been deleted in Brevo and
        was recreated, the ledger's listed emails are forgotten (none is in the new list)
        and the job's note says so."""
        job = self.job
        target = ensure_list(self.brevo, job, self.folder_id)
        if target.replaced is not None:
            ledger.forget_list(job.id, job.token, job.filter_id)
            set_note(job.id, job.token, target.note() or "")
        return target

    def run(self) -> None:
        """Run the job to the end."""
        raise NotImplementedError
