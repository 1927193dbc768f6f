"""API routes for imports and processes (``/v3/contacts/import``, ``/v3/processes``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.brevo.errors import BrevoError
from sandbox.brevo.imports import start_import
from sandbox.brevo.params import json_object, page, paging, path_id
from sandbox.brevo.shapes import process_json
from sandbox.brevo.state import fake_of


async def import_contacts(request: Request) -> Response:
    """``POST /contacts/import``: 202 ``{"processId"}``; the rows land when it completes."""
    fake = fake_of(request)
    body = await json_object(request)
    process_id = start_import(fake.store, body, fake.config.import_seconds)
    return JSONResponse({"processId": process_id}, status_code=202)


async def get_processes(request: Request) -> Response:
    """``GET /processes``."""
    store = fake_of(request).store
    limit, offset, desc = paging(request, 50, 10)
    with store.lock:
        now = store.now_ms()
        processes = sorted(store.processes.values(), key=lambda p: p.id)
        shown = [process_json(p, now) for p in page(processes, limit, offset, desc)]
        return JSONResponse({"processes": shown, "count": len(processes)})


async def get_process(request: Request) -> Response:
    """``GET /processes/{processId}``; an unknown id is the spec's 404 example."""
    store = fake_of(request).store
    with store.lock:
        process = store.processes.get(path_id(request, "processId"))
        if process is None:
            raise BrevoError(404, "invalid_parameter", "processId is invalid")
        return JSONResponse(process_json(process, store.now_ms()))


IMPORT_ROUTES = [Route("/v3/contacts/import", import_contacts, methods=["POST"])]
PROCESS_ROUTES = [
    Route("/v3/processes", get_processes, methods=["GET"]),
    Route("/v3/processes/{processId}", get_process, methods=["GET"]),
]
