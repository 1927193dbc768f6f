"""The control API under ``/_sandbox``: no token, JSON in and out, ``{"error": ...}`` with
400 for a bad body and 404 for an unknown id.

Data (each change bumps ``update_time`` and sends the matching webhooks):

- ``POST /_sandbox/persons`` {name | first_name, last_name?, emails?, phones?, org_id?,
  owner_id?, label_ids?, custom_fields?} → 201 the person (API v2 shape)
- ``PATCH /_sandbox/persons/{id}`` (same keys) · ``DELETE /_sandbox/persons/{id}``
- ``POST /_sandbox/persons/{id}/merge`` {"into": id}
- ``POST /_sandbox/deals`` {title, value?, currency?, status?, stage_id?, pipeline_id?,
  person_id?, org_id?, owner_id?, label_ids?, expected_close_date?, lost_reason?}
- ``PATCH /_sandbox/deals/{id}`` · ``DELETE /_sandbox/deals/{id}``
- ``POST /_sandbox/organizations`` {name, country?, owner_id?} · ``PATCH .../{id}``
- ``POST /_sandbox/filters`` {name, type, conditions, active_flag?, temporary_flag?,
  visible_to?} · ``PATCH /_sandbox/filters/{id}`` · ``DELETE /_sandbox/filters/{id}``
- ``GET /_sandbox/filters/{id}/members`` → {type, ids, person_ids, emails}

Behaviour:

- ``PUT /_sandbox/faults`` (a fault plan) · ``GET /_sandbox/faults``
- ``PUT /_sandbox/settings`` {ignore_updated_since?, daily_token_budget?, burst_limit?,
  retry_scale?, delivery_timeout?, token?, budget_reset_seconds?} · ``GET /_sandbox/settings``
- ``budget_reset_seconds`` (a positive number, or null): the token budget's "day" lasts
  that many seconds, counted from when the setting is applied; the budget refills when
  each one ends, and a 429 for a spent budget says in ``retry-after`` how long until then
  (whole seconds, rounded up, at least 1). Null (the default, and after a reset): days
  end at UTC midnight.
- ``GET /_sandbox/usage`` → {tokens_used, daily_token_budget, calls}
- ``POST /_sandbox/budget/reset`` (a refill; a short day starts again) ·
  ``POST /_sandbox/reset`` {"seed"?}
- ``GET /_sandbox/deliveries`` → {"deliveries": [...]} · ``PUT /_sandbox/drift`` {"enabled"}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.faults import CONTROL_PREFIX, FaultPlanError
from sandbox.pipedrive.errors import control_error
from sandbox.pipedrive.inputs import InputError, NotFound
from sandbox.pipedrive.state import PipedriveState

Action = Callable[[PipedriveState, int | None, Any], Any]


def _route(path: str, method: str, action: Action, status: int = 200) -> Route:
    async def endpoint(request: Request) -> Response:
        state: PipedriveState = request.app.state.fake
        record_id: int | None = None
        if "id" in request.path_params:
            text = str(request.path_params["id"])
            if not text.isdigit():
                return control_error(404, f"no record with id {text!r}")
            record_id = int(text)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            return control_error(400, "the body must be JSON")
        try:
            result = action(state, record_id, body)
        except (InputError, FaultPlanError) as exc:
            return control_error(400, str(exc))
        except NotFound as exc:
            return control_error(404, str(exc))
        return JSONResponse(result, status_code=status)

    return Route(CONTROL_PREFIX + path, endpoint, methods=[method])


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    return body


def _id(record_id: int | None) -> int:
    assert record_id is not None
    return record_id


def _merge(state: PipedriveState, record_id: int | None, body: Any) -> Any:
    return state.merge_persons(_id(record_id), _object(body).get("into"))


def _deleted(delete: Callable[[PipedriveState, int], None]) -> Action:
    def action(state: PipedriveState, record_id: int | None, _: Any) -> Any:
        delete(state, _id(record_id))
        return {"id": record_id, "deleted": True}

    return action


def _faults(state: PipedriveState, _: int | None, body: Any) -> Any:
    state.faults.load_json(body)
    return state.faults.to_json()


def _drift(state: PipedriveState, _: int | None, body: Any) -> Any:
    enabled = _object(body).get("enabled")
    if not isinstance(enabled, bool):
        raise InputError("enabled must be a boolean")
    state.drift = enabled
    return {"enabled": enabled}


def _reset(state: PipedriveState, _: int | None, body: Any) -> Any:
    seed = _object(body).get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError("seed must be an integer")
    state.reset(seed)
    return {"seed": state.config.seed, "persons": state.config.persons}


def _budget_reset(state: PipedriveState, _: int | None, __: Any) -> Any:
    state.budget.reset()
    return state.budget.to_json()


def _deliveries(state: PipedriveState, _: int | None, __: Any) -> Any:
    with state.lock:
        return {"deliveries": list(state.deliveries)}


def control_routes() -> list[Route]:
    """Every ``/_sandbox`` route."""
    s = PipedriveState
    return [
        _route("/persons", "POST", lambda st, _, b: s.create_person(st, b), 201),
        _route("/persons/{id}", "PATCH", lambda st, i, b: s.update_person(st, _id(i), b)),
        _route("/persons/{id}", "DELETE", _deleted(s.delete_person)),
        _route("/persons/{id}/merge", "POST", _merge),
        _route("/deals", "POST", lambda st, _, b: s.create_deal(st, b), 201),
        _route("/deals/{id}", "PATCH", lambda st, i, b: s.update_deal(st, _id(i), b)),
        _route("/deals/{id}", "DELETE", _deleted(s.delete_deal)),
        _route("/organizations", "POST", lambda st, _, b: s.create_organization(st, b), 201),
        _route(
            "/organizations/{id}", "PATCH", lambda st, i, b: s.update_organization(st, _id(i), b)
        ),
        _route("/filters", "POST", lambda st, _, b: s.create_filter(st, b), 201),
        _route("/filters/{id}", "PATCH", lambda st, i, b: s.update_filter(st, _id(i), b)),
        _route("/filters/{id}", "DELETE", _deleted(s.delete_filter)),
        _route("/filters/{id}/members", "GET", lambda st, i, _: st.members(_id(i)).to_json()),
        _route("/faults", "PUT", _faults),
        _route("/faults", "GET", lambda st, _, __: st.faults.to_json()),
        _route("/settings", "PUT", lambda st, _, b: st.apply_settings(b)),
        _route("/settings", "GET", lambda st, _, __: st.settings_json()),
        _route("/usage", "GET", lambda st, _, __: st.budget.to_json()),
        _route("/budget/reset", "POST", _budget_reset),
        _route("/reset", "POST", _reset),
        _route("/deliveries", "GET", _deliveries),
        _route("/drift", "PUT", _drift),
    ]
