"""Running one sync job in the worker: claim it, keep it alive, run it, record the end.

Called by the huey task with the job id only. A second delivery of the same message
finds the row claimed and does nothing.

When Pipedrive's daily token budget is spent, a job is not failed: Pipedrive work pauses
until the reset the API announced, the job is given back unclaimed (its filter stays
locked, so nothing runs in between), and the sweeper enqueues it again; it is claimed
only once the pause is over.

When an API refuses the credential (401 or 403), the job fails at once, saying which
setting to fix, and work against that API pauses (``service.auth_pause``): later jobs wait
unclaimed the same way, with a note saying why. When the pause ends, one job tries again;
refused again, it goes back to waiting rather than failing, and the pause doubles.
"""

from __future__ import annotations

import logging

from service.auth_pause import (
    Admission,
    Credential,
    Watch,
    admit,
    configured_credentials,
    record_refusal,
    settle,
)
from service.budget import pause_pipedrive, paused_until
from service.clients.errors import ApiAuthError, ApiBudgetExhausted, ApiError
from service.clients.factory import MissingCredential
from service.clock import Clock, to_iso
from service.config import Settings
from service.logs import log_context
from workers.sync.claims import (
    CRASHED_PREFIX,
    WAITING_PREFIX,
    ClaimedJob,
    ClaimLost,
    Heartbeat,
    claim_job,
    fail_job,
    finish_job,
    new_token,
    note_waiting,
    release_job,
)
from workers.sync.full_resync import BrakeHeld, FullResync
from workers.sync.incremental import IncrementalSync

log = logging.getLogger(__name__)


class JobRefused(Exception):
    """The job cannot run as asked; ``str()`` says why."""


class Refused(Exception):
    """An API refused the credential the job sent."""

    def __init__(self, error: ApiAuthError) -> None:
        super().__init__(str(error))
        self.error = error


class Paused(Exception):
    """Pipedrive's budget is spent; the job waits until ``until`` (unix seconds)."""

    def __init__(self, until: float) -> None:
        super().__init__(until)
        self.until = until


def paused_note(until: float) -> str:
    """The job's note while it waits for Pipedrive's budget."""
    return (
        f"{WAITING_PREFIX}Pipedrive's daily API token budget is spent; the job runs again after "
        f"{to_iso(int(until))}."
    )


def heartbeat_every(stale_seconds: int) -> float:
    """How often a running job beats: three beats fit in the stale window."""
    return max(0.5, stale_seconds / 3)


def run_job(job_id: int, settings: Settings, clock: Clock) -> None:
    """Claim and run the job ``job_id``; every outcome ends in the job's row."""
    pause = paused_until(clock.now())
    if pause is not None:
        log.info("job waits for pipedrive's budget", extra={"job_id": job_id, "until": pause})
        return
    credentials = configured_credentials(settings)
    admission = admit(credentials, clock.now())
    if admission.waiting is not None:
        refusal = admission.waiting
        if note_waiting(job_id, refusal.note()):
            log.info(
                "job waits: the api refused the credential",
                extra={"job_id": job_id, "api": refusal.api, "until": refusal.paused_until},
            )
        return
    token = new_token()
    job = claim_job(job_id, token, clock.now())
    if job is None:
        settle(admission, set(), clock.now())  # the next job probes instead
        log.info("job already claimed or finished", extra={"job_id": job_id})
        return
    watch = Watch(credentials)
    with log_context(job_id=job.id, filter_id=job.filter_id):
        log.info("job started", extra={"kind": job.kind, "trigger": job.trigger})
        every = heartbeat_every(settings.job_stale_seconds)
        with Heartbeat(job.id, token, clock.now, every) as beat:
            try:
                message = _run(job, settings, clock, beat)
            except Paused as paused:
                settle(admission, watch.accepted(), clock.now())
                if release_job(job.id, token, clock.now(), paused_note(paused.until)):
                    log.warning("job paused: pipedrive's budget is spent")
                return
            except Refused as refused:
                settle(admission, watch.accepted(), clock.now(), refused.error.api)
                message = _refusal(job, admission, credentials, refused.error, clock)
                if message is None:
                    return
            else:
                settle(admission, watch.accepted(), clock.now())
        try:
            if message is None:
                finish_job(job.id, token, clock.now())
                log.info("job completed")
            elif fail_job(job.id, token, clock.now(), message):
                log.warning("job failed", extra={"error": message})
        except ClaimLost:
            log.warning("job was taken over before it ended; its result is dropped")


def _refusal(
    job: ClaimedJob,
    admission: Admission,
    credentials: list[Credential],
    error: ApiAuthError,
    clock: Clock,
) -> str | None:
    """Record the API's refusal of the job's credential. The job that met it first fails:
    its error message, naming the setting to fix. A probe goes back to waiting (None)."""
    credential = next(c for c in credentials if c.api == error.api)
    probing = credential in admission.probes
    pause = record_refusal(credential, error, clock.now(), probing)
    if not probing:
        return pause.failure_message()
    if release_job(job.id, job.token, clock.now(), pause.note()):
        log.warning(
            "the api still refuses the credential: the job waits",
            extra={"api": pause.api, "until": pause.paused_until},
        )
    return None


def _run(job: ClaimedJob, settings: Settings, clock: Clock, beat: Heartbeat) -> str | None:
    """Run the job; None when it succeeded, else the error message for its row."""
    try:
        if job.filter_deleted:
            raise JobRefused("the filter was deleted in Pipedrive; its Brevo list is untouched")
        if job.filter_type not in ("people", "deals"):
            raise JobRefused("the filter's type is unknown: refresh the filters first")
        if job.kind == "incremental":
            IncrementalSync.for_settings(job, settings, clock.now, beat.check).run()
        else:
            FullResync.for_settings(job, settings, clock.now, beat.check).run()
    except (BrakeHeld, JobRefused, MissingCredential) as exc:
        return str(exc)
    except ApiBudgetExhausted as exc:
        raise Paused(pause_pipedrive(clock.now(), exc.retry_after)) from exc
    except ApiAuthError as exc:
        raise Refused(exc) from exc
    except ApiError as exc:
        return str(exc)
    except ClaimLost:
        return "worker stopped during the job"
    except Exception as exc:
        log.exception("job crashed")
        return f"{CRASHED_PREFIX}{type(exc).__name__}); see the worker log"
    return None
