"""The filter refresh against the Pipedrive and Brevo fakes, over real HTTP."""

from __future__ import annotations

import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service.auth_pause import FIRST_BACKOFF_SECONDS, recorded_pauses
from service.clients.brevo import BrevoClient, BrevoLimits
from service.clients.errors import ApiAuthError, ApiAuthPaused
from service.clients.http import ClientPolicy
from service.clients.pipedrive import PipedriveClient
from service.clients.usage import MemoryUsage
from service.clock import to_iso
from service.filter_refresh import RefreshResult, conditions_hash, refresh_filters
from service.jobs import create_job, list_jobs
from tests.fakes import RunningFake

FAST = ClientPolicy(connect_timeout=1.0, read_timeout=2.0, max_attempts=2, backoff_base=0.01)
QUICK = BrevoLimits(contacts_per_second=1000, other_per_hour=360_000)
NOW = 1_900_000_000
# The fake's seeded filters that a refresh keeps: people 1, 2, 3, 8 and deals 4.
# 5 is temporary, 6 inactive and 7 an organization filter.
SEEDED = {1: "people", 2: "people", 3: "people", 4: "deals", 8: "people"}


class Refresher:
    """Runs refreshes with clients on the fakes and records what was enqueued."""

    def __init__(self, pipedrive_fake: RunningFake, brevo_fake: RunningFake) -> None:
        self.pipedrive = PipedriveClient(
            pipedrive_fake.url,
            "pd-token",
            usage=MemoryUsage(),
            policy=FAST,
            requests_per_second=1000,
        )
        self.brevo = BrevoClient(
            brevo_fake.url + "/v3", "bv-key", usage=MemoryUsage(), policy=FAST, limits=QUICK
        )
        self.pipedrive_fake = pipedrive_fake
        self.enqueued: list[int] = []

    def __call__(self, now: int = NOW, with_brevo: bool = True) -> RefreshResult:
        brevo = self.brevo if with_brevo else None
        return refresh_filters(self.pipedrive, brevo, now, self.enqueued.append)

    def pipedrive_calls(self, template: str) -> int:
        usage = self.pipedrive.http.usage
        assert isinstance(usage, MemoryUsage)
        return usage.count("pipedrive", "GET", template)

    def brevo_calls(self, method: str, template: str) -> int:
        usage = self.brevo.http.usage
        assert isinstance(usage, MemoryUsage)
        return usage.count("brevo", method, template)

    def edit_upstream(self, filter_id: int, **changes: Any) -> None:
        self.pipedrive_fake.control("PATCH", f"/_sandbox/filters/{filter_id}", json=changes)

    def edit_conditions(self, filter_id: int) -> None:
        """Change the value of the filter's first condition."""
        conditions = self.pipedrive.get_filter(filter_id).conditions
        assert conditions is not None
        first = conditions["conditions"][0]["conditions"][0]
        first["value"] = "2" if first["value"] != "2" else "3"
        self.edit_upstream(filter_id, conditions=conditions)


@pytest.fixture
def refresh(clean_db: Path, pipedrive_fake: RunningFake, brevo_fake: RunningFake) -> Refresher:
    return Refresher(pipedrive_fake, brevo_fake)


def rows(path: Path) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        found = connection.execute("SELECT * FROM filters").fetchall()
    return {row["id"]: dict(row) for row in found}


def link(path: Path, refresh: Refresher, filter_id: int) -> int:
    """Give the filter a Brevo list, as its first sync would; return the list id."""
    name = rows(path)[filter_id]["name"]
    folder = refresh.brevo.create_folder("Pipedrive")
    list_id = refresh.brevo.create_list(f"{name} (Pipedrive #{filter_id})", folder)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE filters SET brevo_list_id = ? WHERE id = ?", (list_id, filter_id)
        )
    return list_id


def finish_jobs(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE sync_jobs SET status = 'completed', completed_at = 1")


def test_the_first_refresh_creates_people_and_deal_filters_only(
    refresh: Refresher, clean_db: Path
) -> None:
    """Temporary, inactive and organization filters are skipped; a second refresh is a no-op."""
    first = refresh()
    assert (first.created, first.updated, first.deleted) == (5, 0, 0)
    assert {view.id: view.type for view in first.filters} == SEEDED
    stored = rows(clean_db)
    assert stored[1]["name"] == "Everyone" and stored[4]["type"] == "deals"
    assert all(row["update_time"] for row in stored.values())
    assert all(
        row["deleted_at"] is None and row["conditions_hash"] is None for row in stored.values()
    )
    again = refresh()
    assert (again.created, again.updated, again.deleted) == (0, 0, 0)
    assert refresh.enqueued == []
    # Nothing is linked: no filter's conditions were read.
    assert refresh.pipedrive_calls("/v1/filters/{id}") == 0


def test_new_renamed_activated_and_deleted_filters_are_counted(
    refresh: Refresher, clean_db: Path
) -> None:
    refresh()
    refresh.pipedrive_fake.control(
        "POST",
        "/_sandbox/filters",
        json={
            "name": "Brand new",
            "type": "deals",
            "conditions": {
                "glue": "and",
                "conditions": [
                    {
                        "glue": "and",
                        "conditions": [
                            {
                                "object": "deal",
                                "field_id": "12454",
                                "operator": "=",
                                "value": "lost",
                            }
                        ],
                    },
                    {"glue": "or", "conditions": []},
                ],
            },
        },
    )
    refresh.edit_upstream(2, name="Warm leads")
    refresh.edit_upstream(6, active_flag=True)
    refresh.pipedrive_fake.control("DELETE", "/_sandbox/filters/8")
    result = refresh(now=NOW + 60)
    assert (result.created, result.updated, result.deleted) == (2, 1, 1)
    stored = rows(clean_db)
    assert stored[9]["name"] == "Brand new" and stored[9]["type"] == "deals"
    assert stored[2]["name"] == "Warm leads"
    assert stored[6]["deleted_at"] is None
    assert stored[8]["deleted_at"] == NOW + 60
    views = {view.id: view for view in result.filters}
    assert views[8].deleted_at == NOW + 60 and views[2].name == "Warm leads"
    # An unlinked filter's rename touches no Brevo list.
    assert refresh.brevo_calls("PUT", "/contacts/lists/{listId}") == 0


def test_a_filter_that_vanishes_is_soft_deleted_and_its_list_left_alone(
    refresh: Refresher, clean_db: Path, brevo_fake: RunningFake
) -> None:
    """Made temporary upstream, then back: soft-deleted, then undeleted (counted as updated)."""
    refresh()
    list_id = link(clean_db, refresh, 2)
    brevo_fake.control(
        "POST", "/_sandbox/contacts", json={"email": "a@x.org", "listIds": [list_id]}
    )
    refresh()
    refresh.edit_upstream(2, temporary_flag=True)
    gone = refresh(now=NOW + 10)
    assert (gone.created, gone.updated, gone.deleted) == (0, 0, 1)
    assert rows(clean_db)[2]["deleted_at"] == NOW + 10
    assert rows(clean_db)[2]["brevo_list_id"] == list_id
    assert refresh.brevo.get_list(list_id).name == "Hot leads (Pipedrive #2)"
    assert brevo_fake.control("GET", f"/_sandbox/lists/{list_id}/emails").json() == {
        "emails": ["a@x.org"]
    }
    # Still gone: not deleted again.
    assert refresh(now=NOW + 20).deleted == 0
    refresh.edit_upstream(2, temporary_flag=False)
    back = refresh(now=NOW + 30)
    assert (back.created, back.updated, back.deleted) == (0, 1, 0)
    assert rows(clean_db)[2]["deleted_at"] is None
    assert rows(clean_db)[2]["brevo_list_id"] == list_id
    # The conditions did not change: no resync.
    assert refresh.enqueued == [] and list_jobs()[0] == []


def test_renaming_a_linked_filter_renames_its_brevo_list(
    refresh: Refresher, clean_db: Path
) -> None:
    refresh()
    list_id = link(clean_db, refresh, 3)
    refresh.edit_upstream(3, name="Open deal people")
    result = refresh()
    assert result.updated == 1
    assert refresh.brevo.get_list(list_id).name == "Open deal people (Pipedrive #3)"
    assert rows(clean_db)[3]["name"] == "Open deal people"
    assert refresh.brevo_calls("PUT", "/contacts/lists/{listId}") == 1
    # A rename is no condition change.
    assert refresh.enqueued == []


def test_a_failed_brevo_rename_is_logged_and_the_refresh_succeeds(
    refresh: Refresher,
    clean_db: Path,
    brevo_fake: RunningFake,
    caplog: pytest.LogCaptureFixture,
    contract_ledger: Any,
) -> None:
    refresh()
    list_id = link(clean_db, refresh, 3)
    brevo_fake.control(
        "PUT",
        "/_sandbox/faults",
        json={"faults": [{"kind": "500", "method": "PUT", "path": "/v3/*", "probability": 1}]},
    )
    refresh.edit_upstream(3, name="Open deal people")
    with caplog.at_level(logging.WARNING, logger="service.filter_refresh"):
        result = refresh()
    assert result.updated == 1 and rows(clean_db)[3]["name"] == "Open deal people"
    (record,) = [r for r in caplog.records if r.name == "service.filter_refresh"]
    assert record.filter_id == 3 and record.list_id == list_id  # type: ignore[attr-defined]
    assert "500" in record.getMessage()
    assert refresh.brevo_calls("PUT", "/contacts/lists/{listId}") == FAST.max_attempts
    # The recorder sees no request body when a fault answers before the body is read.
    provoked = {v.message for v in contract_ledger.take_violations()}
    assert provoked <= {"body: Missing required request body"}


def test_without_brevo_a_rename_is_stored_and_logged(
    refresh: Refresher, clean_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refresh()
    link(clean_db, refresh, 3)
    refresh.edit_upstream(3, name="Open deal people")
    with caplog.at_level(logging.WARNING, logger="service.filter_refresh"):
        assert refresh(with_brevo=False).updated == 1
    assert rows(clean_db)[3]["name"] == "Open deal people"
    assert [r.filter_id for r in caplog.records] == [3]  # type: ignore[attr-defined]


def test_a_condition_edit_of_a_linked_filter_schedules_one_full_resync(
    refresh: Refresher, clean_db: Path
) -> None:
    refresh()
    link(clean_db, refresh, 2)
    refresh()  # the first look at a linked filter only records its conditions
    stored_hash = rows(clean_db)[2]["conditions_hash"]
    assert stored_hash == conditions_hash(refresh.pipedrive.get_filter(2).conditions)
    assert refresh.enqueued == []
    refresh.edit_conditions(2)
    result = refresh(now=NOW + 5)
    assert result.updated == 1
    (job,) = list_jobs()[0]
    assert (job.filter_id, job.kind, job.trigger, job.forced, job.status) == (
        2,
        "full",
        "filter_changed",
        False,
        "processing",
    )
    assert job.created_at == NOW + 5
    assert refresh.enqueued == [job.id]
    assert rows(clean_db)[2]["conditions_hash"] != stored_hash
    views = {view.id: view for view in result.filters}
    assert views[2].last_job == job
    # Seen once: the next refresh schedules nothing more.
    finish_jobs(clean_db)
    assert refresh().updated == 0
    assert refresh.enqueued == [job.id] and len(list_jobs()[0]) == 1


def test_a_condition_edit_of_an_unlinked_filter_schedules_nothing(
    refresh: Refresher, clean_db: Path
) -> None:
    refresh()
    refresh.edit_conditions(2)
    assert refresh().updated == 1
    assert refresh.enqueued == [] and list_jobs()[0] == []
    assert refresh.pipedrive_calls("/v1/filters/{id}") == 1  # edit_conditions' own read
    assert rows(clean_db)[2]["conditions_hash"] is None


def test_an_edit_while_the_filter_is_busy_is_scheduled_by_a_later_refresh(
    refresh: Refresher, clean_db: Path
) -> None:
    """A running job may have read the old definition: the change is not dropped."""
    refresh()
    link(clean_db, refresh, 4)
    refresh()
    running = create_job(4, "incremental", "webhook", False, NOW)
    refresh.edit_conditions(4)
    refresh()
    assert refresh.enqueued == [] and [j.id for j in list_jobs()[0]] == [running.id]
    finish_jobs(clean_db)
    refresh()
    newest = list_jobs()[0][0]
    assert (newest.filter_id, newest.trigger) == (4, "filter_changed")
    assert refresh.enqueued == [newest.id]


def test_a_failing_enqueue_keeps_the_job_for_the_sweeper(
    refresh: Refresher, clean_db: Path
) -> None:
    refresh()
    link(clean_db, refresh, 2)
    refresh()
    refresh.edit_conditions(2)

    def broken(job_id: int) -> None:
        raise ConnectionError("queue down")

    result = refresh_filters(refresh.pipedrive, refresh.brevo, NOW, broken)
    assert result.updated == 1
    (job,) = list_jobs()[0]
    assert job.trigger == "filter_changed" and job.status == "processing"


def test_a_refused_token_raises_and_changes_nothing(
    refresh: Refresher, clean_db: Path, pipedrive_fake: RunningFake
) -> None:
    refresh()
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "the-real-one"})
    before = rows(clean_db)
    with pytest.raises(ApiAuthError):
        refresh(now=NOW + 100)
    assert rows(clean_db) == before


def test_while_pipedrive_refuses_the_token_the_refresh_makes_no_call(
    refresh: Refresher, pipedrive_fake: RunningFake
) -> None:
    """The refused refresh pauses Pipedrive work; refreshes meanwhile skip without a call;
    the first one after the pause tries again (refused: the pause doubles), and once the
    token is accepted the pause ends."""
    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": "the-real-one"})
    with pytest.raises(ApiAuthError) as refused:
        refresh(now=NOW)
    assert not isinstance(refused.value, ApiAuthPaused)
    assert refresh.pipedrive_calls("/v1/filters") == 1
    until = NOW + int(FIRST_BACKOFF_SECONDS)

    with pytest.raises(ApiAuthPaused) as skipped:
        refresh(now=until - 1)
    assert str(skipped.value) == (
        f"Pipedrive refused PIPEDRIVE_API_TOKEN (401); not called again before "
        f"{to_iso(until)}. Fix PIPEDRIVE_API_TOKEN."
    )
    assert refresh.pipedrive_calls("/v1/filters") == 1

    with pytest.raises(ApiAuthError) as probed:
        refresh(now=until)
    assert not isinstance(probed.value, ApiAuthPaused)
    assert refresh.pipedrive_calls("/v1/filters") == 2
    assert recorded_pauses()["pipedrive"].paused_until == until + 2 * FIRST_BACKOFF_SECONDS

    pipedrive_fake.control("PUT", "/_sandbox/settings", json={"token": None})
    result = refresh(now=until + 2 * int(FIRST_BACKOFF_SECONDS))
    assert {f.id for f in result.filters} == set(SEEDED)
    assert recorded_pauses() == {}


def test_two_refreshes_at_once_create_each_filter_once(
    refresh: Refresher, clean_db: Path, pipedrive_fake: RunningFake, brevo_fake: RunningFake
) -> None:
    """The web's refresh and the worker's may overlap: neither fails, nothing is counted twice."""
    other = Refresher(pipedrive_fake, brevo_fake)
    start = threading.Barrier(2)

    def run(refresher: Refresher) -> RefreshResult:
        start.wait()
        return refresher()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [refresh, other]))
    assert sum(r.created for r in results) == 5
    assert sorted(rows(clean_db)) == sorted(SEEDED)


# Re-registration of our webhooks (Pipedrive deletes one after three days of failed
# deliveries): the refresh checks them when given the target.

HOOK_URL = "https://sync.example.com/webhooks/pipedrive"


def test_a_refresh_with_the_webhook_target_registers_a_deleted_webhook_again(
    refresh: Refresher, caplog: pytest.LogCaptureFixture
) -> None:
    from service.webhooks_install import WebhookTarget, install_webhooks, is_ours

    target = WebhookTarget(HOOK_URL, "pipedrive", "Hook-Pw-Refresh-4471")
    installed = install_webhooks(refresh.pipedrive, target.url, target.user, target.password)
    person = next(w for w in installed.created if w.event_object == "person")
    refresh.pipedrive.delete_webhook(person.id)

    with caplog.at_level(logging.WARNING):
        result = refresh_filters(
            refresh.pipedrive, refresh.brevo, NOW, refresh.enqueued.append, webhooks=target
        )
    assert result.created == 5
    ours = [w for w in refresh.pipedrive.list_webhooks() if is_ours(w)]
    assert sorted(w.event_object for w in ours) == ["deal", "organization", "person"]
    (record,) = caplog.records
    assert record.name == "service.webhooks_install" and "registered again" in record.message
    assert record.event_object == "person"  # type: ignore[attr-defined]

    # Nothing missing: one list call and nothing else.
    listed = refresh.pipedrive_calls("/v1/webhooks")
    refresh_filters(refresh.pipedrive, refresh.brevo, NOW, refresh.enqueued.append, target)
    assert refresh.pipedrive_calls("/v1/webhooks") == listed + 1
    assert len([w for w in refresh.pipedrive.list_webhooks() if is_ours(w)]) == 3


def test_without_the_webhook_target_the_refresh_does_not_look_at_webhooks(
    refresh: Refresher,
) -> None:
    refresh()
    assert refresh.pipedrive_calls("/v1/webhooks") == 0


def test_a_failed_webhook_check_is_logged_and_the_refresh_succeeds(
    refresh: Refresher, clean_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from service.webhooks_install import WebhookTarget

    # Pipedrive refuses to register a non-http URL (400).
    target = WebhookTarget("ftp://sync.example.com/hook", "pipedrive", "Hook-Pw-Refresh-4471")
    with caplog.at_level(logging.WARNING, logger="service.filter_refresh"):
        result = refresh_filters(
            refresh.pipedrive, refresh.brevo, NOW, refresh.enqueued.append, webhooks=target
        )
    assert result.created == 5 and sorted(rows(clean_db)) == sorted(SEEDED)
    (record,) = [r for r in caplog.records if r.name == "service.filter_refresh"]
    assert record.message.startswith("checking the pipedrive webhooks failed: ")
    assert "400" in record.message and "Hook-Pw-Refresh-4471" not in caplog.text


def test_the_first_look_at_a_linked_filter_stores_its_related_objects(
    refresh: Refresher, clean_db: Path
) -> None:
    """Seeded: 3 is a people filter on deal fields, 8 on organization fields, 2 on the
    person's own fields only, 4 a deal filter on deal fields."""
    refresh()
    for filter_id in (2, 3, 4, 8):
        link(clean_db, refresh, filter_id)
    refresh()
    stored = rows(clean_db)
    assert {f: stored[f]["related_objects"] for f in (1, 2, 3, 4, 8)} == {
        1: None,  # not linked: its conditions were not read
        2: "",
        3: "deal",
        4: "",
        8: "organization",
    }
    assert refresh.pipedrive_calls("/v1/filters/{id}") == 4
    assert refresh.enqueued == []


def test_a_linked_filter_seen_before_related_objects_existed_is_read_once_more(
    refresh: Refresher, clean_db: Path
) -> None:
    """A database from before version 7 knows the conditions hash but not the related
    objects: the next refresh reads the conditions again, fills them in and schedules
    nothing (the conditions did not change)."""
    refresh()
    link(clean_db, refresh, 3)
    refresh()
    with sqlite3.connect(clean_db) as connection:
        connection.execute("UPDATE filters SET related_objects = NULL WHERE id = 3")
    connection.close()
    stored_hash = rows(clean_db)[3]["conditions_hash"]

    result = refresh(now=NOW + 5)

    assert result.updated == 0
    assert rows(clean_db)[3]["related_objects"] == "deal"
    assert rows(clean_db)[3]["conditions_hash"] == stored_hash
    assert refresh.pipedrive_calls("/v1/filters/{id}") == 2
    assert refresh.enqueued == [] and list_jobs()[0] == []
    refresh(now=NOW + 10)
    assert refresh.pipedrive_calls("/v1/filters/{id}") == 2  # known now: not read again
