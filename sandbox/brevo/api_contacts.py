"""API routes for contacts and attributes (``/v3/contacts``, ``/v3/contacts/{identifier}``,
``/v3/contacts/attributes``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.brevo.contacts import create_contact, update_contact
from sandbox.brevo.errors import CONTACT_NOT_FOUND, invalid, not_found
from sandbox.brevo.model import Contact, parse_time
from sandbox.brevo.params import json_object, page, paging
from sandbox.brevo.shapes import attributes_json, contact_json
from sandbox.brevo.state import fake_of
from sandbox.brevo.store import IDENTIFIER_TYPES, Store


def _since(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if not text:
        return None
    moment = parse_time(text)
    if moment is None:
        raise invalid(f"{name} is not a valid date-time (YYYY-MM-DDTHH:mm:ss.SSSZ)")
    return moment


def _list_ids(request: Request) -> list[int]:
    ids: list[int] = []
    for value in request.query_params.getlist("listIds"):
        for part in value.split(","):
            if not part.strip().isdigit():
                raise invalid("listIds must be integers")
            ids.append(int(part))
    return ids


async def get_contacts(request: Request) -> Response:
    """``GET /contacts``: up to 1000 a page; ``modifiedSince``, ``createdSince`` and
    ``listIds`` filter (``segmentId`` and ``filter`` are not supported)."""
    store = fake_of(request).store
    limit, offset, desc = paging(request, 1000, 50)
    modified, created = _since(request, "modifiedSince"), _since(request, "createdSince")
    list_ids = _list_ids(request)
    for unsupported in ("segmentId", "filter"):
        if request.query_params.get(unsupported):
            raise invalid(f"{unsupported} is not supported by the sandbox")
    with store.lock:
        lists = store.in_lists(list_ids)
        found = sorted(store.contacts.values(), key=lambda c: (c.created_ms, c.id))
        if lists:
            found = [c for c in found if any(c.id in x.members for x in lists)]
        if modified is not None:
            found = [c for c in found if c.modified_ms > modified]
        if created is not None:
            found = [c for c in found if c.created_ms > created]
        shown = [contact_json(store, c) for c in page(found, limit, offset, desc)]
        return JSONResponse({"contacts": shown, "count": len(found)})


async def post_contact(request: Request) -> Response:
    """``POST /contacts``: 201 ``{"id"}`` when created, 204 when ``updateEnabled``
    updated an existing contact."""
    created = create_contact(fake_of(request).store, await json_object(request))
    if created is None:
        return Response(status_code=204)
    return JSONResponse({"id": created}, status_code=201)


def _contact(request: Request, store: Store) -> Contact:
    identifier = str(request.path_params["identifier"])
    kind = request.query_params.get("identifierType")
    if kind is not None and kind not in IDENTIFIER_TYPES:
        raise invalid(f"identifierType must be one of {', '.join(IDENTIFIER_TYPES)}")
    contact = store.lookup(identifier, kind)
    if contact is None:
        raise not_found(CONTACT_NOT_FOUND)
    return contact


async def get_contact(request: Request) -> Response:
    """``GET /contacts/{identifier}`` (``getExtendedContactDetails``; no statistics)."""
    store = fake_of(request).store
    dates = [request.query_params.get(k) for k in ("startDate", "endDate")]
    if any(dates) and not all(dates):
        raise invalid("startDate and endDate must be used together")
    with store.lock:
        return JSONResponse(contact_json(store, _contact(request, store), extended=True))


async def put_contact(request: Request) -> Response:
    """``PUT /contacts/{identifier}``."""
    store = fake_of(request).store
    body = await json_object(request)
    with store.lock:
        update_contact(store, _contact(request, store), body)
    return Response(status_code=204)


async def delete_contact(request: Request) -> Response:
    """``DELETE /contacts/{identifier}``."""
    store = fake_of(request).store
    with store.lock:
        store.delete_contact(_contact(request, store))
    return Response(status_code=204)


async def get_attributes(request: Request) -> Response:
    """``GET /contacts/attributes``."""
    store = fake_of(request).store
    with store.lock:
        return JSONResponse(attributes_json(store.attributes))


# The {identifier} routes come last: "/v3/contacts/lists" etc. would match them too.
CONTACT_ROUTES = [
    Route("/v3/contacts", get_contacts, methods=["GET"]),
    Route("/v3/contacts", post_contact, methods=["POST"]),
    Route("/v3/contacts/attributes", get_attributes, methods=["GET"]),
]
IDENTIFIER_ROUTES = [
    Route("/v3/contacts/{identifier}", get_contact, methods=["GET"]),
    Route("/v3/contacts/{identifier}", put_contact, methods=["PUT"]),
    Route("/v3/contacts/{identifier}", delete_contact, methods=["DELETE"]),
]
