"""workers/sync/conditions.py: a linked filter's related objects are learned once, at its
first sync, so webhook events of those objects reach it from then on."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from sandbox.pipedrive.fields import TIER_KEY, condition, groups
from service.clients.factory import pipedrive_client
from tests.sync.conftest import World, completed, counts
from workers.sync.claims import ClaimLost, claim_job, new_token
from workers.sync.conditions import learn_related_objects

GET_FILTER = "GET /v1/filters/{id}"


def related(world: World, filter_id: int) -> str | None:
    rows = world.query("SELECT related_objects FROM filters WHERE id = ?", filter_id)
    value: str | None = rows[0][0]
    return value


def cross_filter(world: World, name: str) -> int:
    """A people filter of the persons of tier ``name`` with an open deal or an
    organization (its one member has the deal)."""
    conditions = groups(
        [condition("person", TIER_KEY, "=", name)],
        [
            condition("deal", "status", "=", "open"),
            condition("organization", "name", "IS NOT NULL"),
        ],
    )
    filter_id = world.pipedrive.filter(name, "people", conditions)
    person = world.pipedrive.person("Ola", "Test", f"ola@{name.lower()}.example.com", tier=name)
    world.pipedrive.deal(f"{name} deal", person)
    world.refresh()
    return filter_id


def test_the_first_sync_reads_the_conditions_once(world: World) -> None:
    filter_id = cross_filter(world, "Learned")
    assert related(world, filter_id) is None  # an unlinked filter's conditions are not read

    assert counts(completed(world.sync(filter_id))) == (1, 1, 0, 0, 0)
    assert related(world, filter_id) == "deal,organization"
    assert world.pipedrive.calls().get(GET_FILTER) == 1

    completed(world.sync(filter_id))
    assert world.pipedrive.calls().get(GET_FILTER) == 1  # known: not read again


def test_a_filter_on_its_own_object_only_is_remembered_as_having_none(world: World) -> None:
    filter_id = world.pipedrive.people_filter("Own only", "OWN")
    world.pipedrive.person("Ola", "Test", "ola@own.example.com", tier="OWN")
    world.refresh()
    assert counts(completed(world.sync(filter_id))) == (1, 1, 0, 0, 0)
    assert related(world, filter_id) == ""
    completed(world.sync(filter_id))
    assert world.pipedrive.calls().get(GET_FILTER) == 1


def test_known_related_objects_are_not_read(world: World) -> None:
    filter_id = cross_filter(world, "Known")
    with sqlite3.connect(world.database) as connection:
        connection.execute("UPDATE filters SET related_objects = 'deal' WHERE id = ?", (filter_id,))
    connection.close()
    job_id = world.create(filter_id)
    job = claim_job(job_id, new_token(), world.clock.now())
    assert job is not None

    learn_related_objects(pipedrive_client(world.settings), job)

    assert world.pipedrive.calls().get(GET_FILTER) is None
    assert related(world, filter_id) == "deal"


def test_a_job_that_lost_its_claim_stores_nothing(world: World) -> None:
    filter_id = cross_filter(world, "Lost")
    job_id = world.create(filter_id)
    job = claim_job(job_id, new_token(), world.clock.now())
    assert job is not None

    with pytest.raises(ClaimLost):
        learn_related_objects(pipedrive_client(world.settings), replace(job, token="stolen"))

    assert related(world, filter_id) is None
