"""workers/sync/lists.py: the filter's Brevo list, created on the first sync in the
configured folder or in one folder named "Pipedrive", named after the filter and its id."""

from __future__ import annotations

from dataclasses import replace

from tests.sync.conftest import MARKETING_FOLDER, World, completed
from workers.sync.lists import TargetList


def folders_named(world: World, name: str) -> list[int]:
    response = world.brevo.api("GET", "/contacts/folders", params={"limit": 50, "offset": 0})
    assert response.status_code == 200, response.text
    return [f["id"] for f in response.json().get("folders", []) if f["name"] == name]


def test_first_syncs_put_their_lists_in_one_pipedrive_folder(world: World) -> None:
    world.settings = replace(world.settings, brevo_folder_id=None)
    first = world.pipedrive.people_filter("Same name", "LISTS")
    second = world.pipedrive.people_filter("Same name", "LISTS")
    world.pipedrive.person("Liz", "Test", "liz@lists.example.com", tier="LISTS")
    world.refresh()
    assert folders_named(world, "Pipedrive") == []

    completed(world.sync(first))
    completed(world.sync(second))

    folders = folders_named(world, "Pipedrive")
    assert len(folders) == 1
    lists = [world.brevo.list(world.list_id(f)) for f in (first, second)]
    assert [b["name"] for b in lists] == [
        f"Same name (Pipedrive #{first})",
        f"Same name (Pipedrive #{second})",
    ]
    assert {b["folderId"] for b in lists} == set(folders)
    assert world.list_id(first) != world.list_id(second)


def test_configured_folder_is_used_and_no_folder_is_made(world: World) -> None:
    filter_id = world.pipedrive.people_filter("Configured", "LISTCFG")
    world.refresh()
    completed(world.sync(filter_id))
    assert world.brevo.list(world.list_id(filter_id))["folderId"] == MARKETING_FOLDER
    assert folders_named(world, "Pipedrive") == []


def test_target_list_note_only_when_replaced() -> None:
    assert TargetList(5).note() is None
    assert TargetList(6, replaced=5).note() == (
        "Brevo list 5 was deleted in Brevo: created list 6 and filled it again."
    )


def test_of_several_pipedrive_folders_the_oldest_takes_the_lists(world: World) -> None:
    """Two worker processes racing to make the folder leave two; every process then
    settles on the oldest one."""
    world.settings = replace(world.settings, brevo_folder_id=None)
    made = [
        world.brevo.api("POST", "/contacts/folders", json={"name": "Pipedrive"}).json()["id"]
        for _ in range(2)
    ]
    filter_id = world.pipedrive.people_filter("Raced", "LISTRACE")
    world.refresh()
    completed(world.sync(filter_id))
    assert world.brevo.list(world.list_id(filter_id))["folderId"] == min(made)
