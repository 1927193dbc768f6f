"""API routes for folders, lists, list contacts and list membership
(``/v3/contacts/folders...``, ``/v3/contacts/lists...``)."""

from __future__ import annotations

from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.brevo.errors import invalid, missing
from sandbox.brevo.membership import change_membership
from sandbox.brevo.model import parse_time
from sandbox.brevo.params import json_object, optional, page, paging, path_id
from sandbox.brevo.shapes import contact_json, extended_list_json, folder_json, list_json
from sandbox.brevo.state import fake_of

FOLDER_ID_NOT_FOUND = "Folder ID not found"


def _id(item: Any) -> int:
    return cast(int, item.id)


def _name(body: dict[str, Any], required: bool = True) -> str | None:
    name = optional(body, "name", str, "a string")
    if required and not name:
        raise missing("name is required")
    return cast(str | None, name)


async def get_folders(request: Request) -> Response:
    """``GET /contacts/folders``."""
    fake = fake_of(request)
    limit, offset, desc = paging(request, 50, 10)
    with fake.store.lock:
        folders = sorted(fake.store.folders.values(), key=lambda f: f.id)
        shown = [folder_json(fake.store, f) for f in page(folders, limit, offset, desc)]
        return JSONResponse({"folders": shown, "count": len(folders)})


async def create_folder(request: Request) -> Response:
    """``POST /contacts/folders``."""
    body = await json_object(request)
    folder = fake_of(request).store.add_folder(cast(str, _name(body)))
    return JSONResponse({"id": folder.id}, status_code=201)


async def get_folder(request: Request) -> Response:
    """``GET /contacts/folders/{folderId}``."""
    store = fake_of(request).store
    with store.lock:
        folder = store.folder(path_id(request, "folderId"), FOLDER_ID_NOT_FOUND)
        return JSONResponse(folder_json(store, folder))


async def update_folder(request: Request) -> Response:
    """``PUT /contacts/folders/{folderId}``."""
    store = fake_of(request).store
    folder = store.folder(path_id(request, "folderId"), FOLDER_ID_NOT_FOUND)
    folder.name = cast(str, _name(await json_object(request)))
    return Response(status_code=204)


async def delete_folder(request: Request) -> Response:
    """``DELETE /contacts/folders/{folderId}``: the folder and all its lists."""
    fake_of(request).store.delete_folder(path_id(request, "folderId"))
    return Response(status_code=204)


async def get_folder_lists(request: Request) -> Response:
    """``GET /contacts/folders/{folderId}/lists``."""
    store = fake_of(request).store
    limit, offset, desc = paging(request, 50, 10)
    with store.lock:
        folder = store.folder(path_id(request, "folderId"), FOLDER_ID_NOT_FOUND)
        lists = sorted((x for x in store.lists.values() if x.folder_id == folder.id), key=_id)
        shown = [list_json(store, x, folder_id=False) for x in page(lists, limit, offset, desc)]
        return JSONResponse({"lists": shown, "count": len(lists)})


async def get_lists(request: Request) -> Response:
    """``GET /contacts/lists``."""
    store = fake_of(request).store
    limit, offset, desc = paging(request, 50, 10)
    with store.lock:
        lists = sorted(store.lists.values(), key=_id)
        shown = [list_json(store, x) for x in page(lists, limit, offset, desc)]
        return JSONResponse({"lists": shown, "count": len(lists)})


async def create_list(request: Request) -> Response:
    """``POST /contacts/lists``: ``name`` and ``folderId`` both required."""
    body = await json_object(request)
    name = _name(body)
    folder_id = optional(body, "folderId", int, "an integer")
    if folder_id is None:
        raise missing("folderId is required")
    lst = fake_of(request).store.add_list(cast(str, name), folder_id)
    return JSONResponse({"id": lst.id}, status_code=201)


async def get_list(request: Request) -> Response:
    """``GET /contacts/lists/{listId}`` (``getExtendedList``)."""
    fake = fake_of(request)
    dates = [request.query_params.get(k) for k in ("startDate", "endDate")]
    if any(dates) and not all(dates):
        raise missing("startDate and endDate must be used together")
    with fake.store.lock:
        lst = fake.store.get_list(path_id(request, "listId"))
        return JSONResponse(extended_list_json(fake.store, lst, drift=fake.drift))


async def update_list(request: Request) -> Response:
    """``PUT /contacts/lists/{listId}``: a new ``name`` or a new ``folderId``, one at a
    time as the spec says."""
    store = fake_of(request).store
    body = await json_object(request)
    with store.lock:
        lst = store.get_list(path_id(request, "listId"))
        name = _name(body, required=False)
        folder_id = optional(body, "folderId", int, "an integer")
        if name is None and folder_id is None:
            raise missing("name or folderId is required")
        if name is not None and folder_id is not None:
            raise invalid("Either name or folderId can be updated at a time")
        if folder_id is not None:
            lst.folder_id = store.folder(folder_id).id
        elif not name:
            raise invalid("name must not be empty")
        else:
            lst.name = name
    return Response(status_code=204)


async def delete_list(request: Request) -> Response:
    """``DELETE /contacts/lists/{listId}``: the contacts stay in the account."""
    fake_of(request).store.delete_list(path_id(request, "listId"))
    return Response(status_code=204)


async def get_list_contacts(request: Request) -> Response:
    """``GET /contacts/lists/{listId}/contacts``: up to 500 a page, by creation (newest
    first unless ``sort=asc``), optionally only those modified after ``modifiedSince``."""
    store = fake_of(request).store
    limit, offset, desc = paging(request, 500, 50)
    since_text = request.query_params.get("modifiedSince")
    since = parse_time(since_text) if since_text else None
    if since_text and since is None:
        raise invalid("modifiedSince is not a valid date-time (YYYY-MM-DDTHH:mm:ss.SSSZ)")
    with store.lock:
        lst = store.get_list(path_id(request, "listId"))
        members = store.members(lst, since)
        shown = [contact_json(store, c) for c in page(members, limit, offset, desc)]
        return JSONResponse({"contacts": shown, "count": len(members)})


async def _membership(request: Request, add: bool) -> Response:
    fake = fake_of(request)
    with fake.store.lock:
        lst = fake.store.get_list(path_id(request, "listId"))
    body = await json_object(request)
    answer = change_membership(
        fake.store, lst, body, add, fake.config.all_failed_400, fake.config.import_seconds
    )
    return JSONResponse(answer, status_code=201)


async def add_contacts(request: Request) -> Response:
    """``POST /contacts/lists/{listId}/contacts/add``."""
    return await _membership(request, add=True)


async def remove_contacts(request: Request) -> Response:
    """``POST /contacts/lists/{listId}/contacts/remove``."""
    return await _membership(request, add=False)


LIST_ROUTES = [
    Route("/v3/contacts/folders", get_folders, methods=["GET"]),
    Route("/v3/contacts/folders", create_folder, methods=["POST"]),
    Route("/v3/contacts/folders/{folderId}", get_folder, methods=["GET"]),
    Route("/v3/contacts/folders/{folderId}", update_folder, methods=["PUT"]),
    Route("/v3/contacts/folders/{folderId}", delete_folder, methods=["DELETE"]),
    Route("/v3/contacts/folders/{folderId}/lists", get_folder_lists, methods=["GET"]),
    Route("/v3/contacts/lists", get_lists, methods=["GET"]),
    Route("/v3/contacts/lists", create_list, methods=["POST"]),
    Route("/v3/contacts/lists/{listId}", get_list, methods=["GET"]),
    Route("/v3/contacts/lists/{listId}", update_list, methods=["PUT"]),
    Route("/v3/contacts/lists/{listId}", delete_list, methods=["DELETE"]),
    Route("/v3/contacts/lists/{listId}/contacts", get_list_contacts, methods=["GET"]),
    Route("/v3/contacts/lists/{listId}/contacts/add", add_contacts, methods=["POST"]),
    Route("/v3/contacts/lists/{listId}/contacts/remove", remove_contacts, methods=["POST"]),
]
