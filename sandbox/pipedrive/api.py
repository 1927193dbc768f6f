"""The Pipedrive API routes the service uses: ``/v1/filters``, ``/v1/webhooks``,
``/api/v2/persons`` and ``/api/v2/deals``.

Each route first checks the ``x-api-token`` header (401), then the per-token burst window
(429), then charges the operation's token cost against the daily budget (429 when spent),
and adds the rate-limit headers to its answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.pipedrive.errors import (
    api_error,
    coded_error,
    unauthorized,
    webhook_error,
)
from sandbox.pipedrive.inputs import NotFound
from sandbox.pipedrive.limits import TOKEN_COSTS, rate_headers
from sandbox.pipedrive.listing import BadQuery, parse_query
from sandbox.pipedrive.shapes import deal_v2, filter_v1, person_v2, webhook_v1
from sandbox.pipedrive.state import PipedriveState
from sandbox.pipedrive.webhooks import MAX_WEBHOOKS, check_webhook, is_banned

Handler = Callable[[Request, PipedriveState], Awaitable[Response]]
FILTER_TYPES = ("deals", "leads", "org", "people", "products", "activity", "projects")
LIST_TYPES = {"persons": "people", "deals": "deals"}
NOT_FOUND_INFO = "Object was not found."


def _guarded(method: str, template: str, handler: Handler) -> Route:
    cost = TOKEN_COSTS[(method, template)]
    operation = f"{method} {template}"

    async def endpoint(request: Request) -> Response:
        state: PipedriveState = request.app.state.fake
        token = request.headers.get("x-api-token", "")
        if not state.authorized(token):
            return unauthorized()
        window = state.window.hit(token)
        if not window.allowed:
            headers = {
                **rate_headers(window, state.budget),
                "retry-after": str(window.reset_seconds),
            }
            return coded_error(429, "Request over limit", headers)
        if not state.budget.spend(cost, operation):
            headers = {
                **rate_headers(window, state.budget),
                "retry-after": str(state.budget.seconds_to_reset()),
            }
            return coded_error(429, "Daily token budget exhausted", headers)
        response = await handler(request, state)
        response.headers.update(rate_headers(window, state.budget))
        return response

    return Route(template, endpoint, methods=[method])


def _path_id(request: Request) -> int | None:
    text = str(request.path_params["id"])
    return int(text) if text.isdigit() else None


async def list_filters(request: Request, state: PipedriveState) -> Response:
    """GET /v1/filters?type=..."""
    wanted = request.query_params.get("type")
    if wanted is not None and wanted not in FILTER_TYPES:
        return api_error(400, f"type must be one of {', '.join(FILTER_TYPES)}")
    with state.lock:
        data = [
            filter_v1(f)
            for _, f in sorted(state.data.filters.items())
            if not f.deleted and wanted in (None, f.type)
        ]
    return JSONResponse({"success": True, "data": data})


async def get_filter(request: Request, state: PipedriveState) -> Response:
    """GET /v1/filters/{id}?include_field_code=true"""
    filter_id = _path_id(request)
    if filter_id is None:
        return api_error(400, "id must be an integer")
    codes = request.query_params.get("include_field_code", "").lower() in ("true", "1")
    try:
        found = state.filter(filter_id)
    except NotFound:
        return api_error(404, "Filter not found")
    with state.lock:
        data = filter_v1(found, conditions=True, field_codes=codes)
    return JSONResponse({"success": True, "data": data})


def _drifted(item: dict[str, Any]) -> dict[str, Any]:
    # Drift mode: one renamed field and one wrongly typed one, for the contract test.
    item = dict(item)
    item["email_addresses"] = item.pop("emails")
    item["id"] = str(item["id"])
    return item


def _lister(kind: str) -> Handler:
    shape = person_v2 if kind == "persons" else deal_v2

    async def handler(request: Request, state: PipedriveState) -> Response:
        try:
            query = parse_query(request.query_params, kind)
        except BadQuery as exc:
            return api_error(400, str(exc))
        with state.lock:
            filter_ = None
            if query.filter_id is not None:
                filter_ = state.data.filters.get(query.filter_id)
                if filter_ is None or filter_.deleted:
                    return api_error(404, "Filter not found", NOT_FOUND_INFO)
                if filter_.type != LIST_TYPES[kind]:
                    message = f"Filter {filter_.id} is not a {LIST_TYPES[kind]} filter"
                    return api_error(400, message)
            honour = filter_ is None or not state.config.ignore_updated_since
            rows, cursor = state.listings.page(
                state.data, state.revision, kind, query, filter_, honour
            )
            items = [shape(row) for row in rows]  # type: ignore[arg-type]
            if kind == "persons" and state.drift:
                items = [_drifted(item) for item in items]
        body = {"success": True, "data": items, "additional_data": {"next_cursor": cursor}}
        return JSONResponse(body)

    return handler


def _getter(kind: str) -> Handler:
    async def handler(request: Request, state: PipedriveState) -> Response:
        record_id = _path_id(request)
        if record_id is None:
            return api_error(400, "Validation failed: id: Expected number, received string")
        with state.lock:
            if kind == "persons":
                person = state.data.person(record_id)
                data = person_v2(person) if person else None
            else:
                deal = state.data.deals.get(record_id)
                data = deal_v2(deal) if deal and not deal.deleted else None
        if data is None:
            return api_error(404, f"{kind[:-1].title()} not found", NOT_FOUND_INFO)
        return JSONResponse({"success": True, "data": data})

    return handler


async def list_webhooks(request: Request, state: PipedriveState) -> Response:
    """GET /v1/webhooks"""
    with state.lock:
        data = [webhook_v1(w, not is_banned(w)) for _, w in sorted(state.webhooks.items())]
    return JSONResponse({"status": "ok", "success": True, "data": data})


async def create_webhook(request: Request, state: PipedriveState) -> Response:
    """POST /v1/webhooks (JSON body)"""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return webhook_error(400, {"body": ["must be valid JSON"]})
    fields, errors = check_webhook(body)
    if errors:
        return webhook_error(400, errors)
    with state.lock:
        if len(state.webhooks) >= MAX_WEBHOOKS:
            return api_error(422, "Webhooks limit reached")
        webhook = state.add_webhook(**fields)
        data = webhook_v1(webhook)
    return JSONResponse({"status": "ok", "success": True, "data": data}, status_code=201)


async def delete_webhook(request: Request, state: PipedriveState) -> Response:
    """DELETE /v1/webhooks/{id}"""
    webhook_id = _path_id(request)
    if webhook_id is None or not state.remove_webhook(webhook_id):
        return webhook_error(404, {"id": ["not found"]})
    return JSONResponse({"status": "ok", "success": True})


def api_routes() -> list[Route]:
    """Every API route, guarded."""
    return [
        _guarded("GET", "/v1/filters", list_filters),
        _guarded("GET", "/v1/filters/{id}", get_filter),
        _guarded("GET", "/v1/webhooks", list_webhooks),
        _guarded("POST", "/v1/webhooks", create_webhook),
        _guarded("DELETE", "/v1/webhooks/{id}", delete_webhook),
        _guarded("GET", "/api/v2/persons", _lister("persons")),
        _guarded("GET", "/api/v2/persons/{id}", _getter("persons")),
        _guarded("GET", "/api/v2/deals", _lister("deals")),
        _guarded("GET", "/api/v2/deals/{id}", _getter("deals")),
    ]
