"""The fake Brevo's control API, under ``/_sandbox`` (no ``api-key``; never faulted, never
rate-limited, never recorded). Bodies and answers are JSON; bad input answers 400
``{"error"}``, an unknown list, contact or route 404 ``{"error"}``.

- ``GET /_sandbox/lists/{id}/emails`` → ``{"emails": [...]}``: the list's members, sorted.
- ``GET /_sandbox/contacts?email=`` → the contact as the API shows it (``listIds``,
  ``emailBlacklisted``, ``attributes``...).
- ``POST /_sandbox/contacts`` ``{"email", "attributes"?, "listIds"?, "emailBlacklisted"?}``
  → a contact "hand-added" in Brevo's UI: 201 when created, 200 when it existed (then it
  joins the lists, gains the attributes, and the flag is set as given).
- ``PUT /_sandbox/contacts/{email}/blocklist`` ``{"blocked": bool}`` → the contact.
- ``PUT /_sandbox/attributes/{name}`` ``{"type"}`` defines a contact attribute (``text``,
  ``date``, ``float``, ``boolean``); ``DELETE /_sandbox/attributes/{name}`` removes one
  and its values from every contact (EMAIL cannot go). Both answer ``{"attributes":
  {name: type}}``.
- ``GET|PUT /_sandbox/import-rejects`` ``{"emails": [...]}``: rows with these addresses
  are skipped silently by imports started from now on.
- ``GET|PUT /_sandbox/settings``: partial update of ``contacts_rate``,
  ``processes_per_hour``, ``time_scale``, ``import_seconds``, ``all_failed_400``,
  ``token``; a rate setting restarts the rate windows.
- ``GET|PUT /_sandbox/faults``: the ``FaultPlan`` (see ``sandbox.faults``).
- ``GET /_sandbox/usage`` → ``{"calls": {"GET /contacts/lists/{listId}": {"200": n}},
  "processes_window": {"limit", "used", "window_seconds", "reset_seconds"},
  "faults_injected": {...}}``; templates are the spec's paths (without ``/v3``).
- ``POST /_sandbox/reset`` ``{"seed"?}``: fresh seeded data, no import rejects, zero
  counts, fresh rate windows (settings, faults and drift are kept).
- ``GET|PUT /_sandbox/drift`` ``{"enabled": bool}``: while on, ``GET
  /v3/contacts/lists/{id}`` answers ``folder_id`` instead of ``folderId`` and
  ``totalSubscribers`` as a string, for the contract tests to catch.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.brevo.config import settings_json
from sandbox.brevo.contacts import check_identifiers, clean_attributes, write_attributes
from sandbox.brevo.errors import BrevoError, ControlError
from sandbox.brevo.model import Contact, normal_email, valid_email
from sandbox.brevo.shapes import contact_json
from sandbox.brevo.state import fake_of
from sandbox.brevo.store import Store
from sandbox.faults import CONTROL_PREFIX, FaultPlanError


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ControlError(400, "the body must be a JSON object")
    return body


def _email(value: Any) -> str:
    if not isinstance(value, str) or not valid_email(normal_email(value)):
        raise ControlError(400, "email must be a valid address")
    return normal_email(value)


def _contact(store: Store, email: Any) -> Contact:
    contact = store.by_email(_email(email))
    if contact is None:
        raise ControlError(404, f"no contact {email}")
    return contact


async def list_emails(request: Request) -> Response:
    """The sorted member emails of a list."""
    store = fake_of(request).store
    text = str(request.path_params["listId"])
    with store.lock:
        lst = store.lists.get(int(text)) if text.isdigit() else None
        if lst is None:
            raise ControlError(404, f"no list {text}")
        emails = sorted(c.email for c in store.members(lst) if c.email is not None)
    return JSONResponse({"emails": emails})


async def get_contact(request: Request) -> Response:
    """A contact by ``?email=``."""
    store = fake_of(request).store
    with store.lock:
        contact = _contact(store, request.query_params.get("email"))
        return JSONResponse(contact_json(store, contact))


async def add_contact(request: Request) -> Response:
    """Create (201) or update (200) a contact as someone in Brevo's UI would."""
    store = fake_of(request).store
    body = await _body(request)
    email = _email(body.get("email"))
    attributes, list_ids, blocked = (
        body.get(k) for k in ("attributes", "listIds", "emailBlacklisted")
    )
    if not isinstance(attributes, dict | None) or not isinstance(list_ids, list | None):
        raise ControlError(400, "attributes must be an object and listIds an array")
    if not isinstance(blocked, bool | None):
        raise ControlError(400, "emailBlacklisted must be a boolean")
    with store.lock:
        lists = [store.lists.get(i) if isinstance(i, int) else None for i in list_ids or []]
        if None in lists:
            raise ControlError(404, "listIds names an unknown list")
        found = store.by_email(email)
        values, _ = clean_attributes(attributes or {}, keep_empty=False, defined=store.attributes)
        try:
            check_identifiers(store, found, None, values, "add")
        except BrevoError as exc:
            raise ControlError(400, exc.message) from None
        contact = found or store.add_contact(email)
        write_attributes(store, contact, values, set(), store.now_ms())
        if blocked is not None:
            contact.email_blacklisted = blocked
        for lst in lists:
            if lst is not None:
                lst.members.add(contact.id)
        return JSONResponse(contact_json(store, contact), status_code=201 if found is None else 200)


async def set_blocklist(request: Request) -> Response:
    """Block or unblock a contact (``emailBlacklisted``)."""
    store = fake_of(request).store
    blocked = (await _body(request)).get("blocked")
    if not isinstance(blocked, bool):
        raise ControlError(400, "blocked must be a boolean")
    with store.lock:
        contact = _contact(store, request.path_params["email"])
        contact.email_blacklisted = blocked
        return JSONResponse(contact_json(store, contact))


ATTRIBUTE_TYPES = ("text", "date", "float", "boolean")


async def attribute(request: Request) -> Response:
    """Define (PUT) or remove (DELETE) a contact attribute of the account."""
    store = fake_of(request).store
    name = str(request.path_params["name"]).strip().upper()
    if not name:
        raise ControlError(400, "the attribute needs a name")
    if request.method == "PUT":
        kind = (await _body(request)).get("type", "text")
        if kind not in ATTRIBUTE_TYPES:
            raise ControlError(400, f"type must be one of {', '.join(ATTRIBUTE_TYPES)}")
        with store.lock:
            store.attributes[name] = kind
    else:
        if name == "EMAIL":
            raise ControlError(400, "EMAIL cannot be removed")
        with store.lock:
            if name not in store.attributes:
                raise ControlError(404, f"no attribute {name}")
            del store.attributes[name]
            for contact in store.contacts.values():
                if name == "EXT_ID":
                    store.set_ext_id(contact, None)
                else:
                    contact.attributes.pop(name, None)
    with store.lock:
        return JSONResponse({"attributes": dict(store.attributes)})


async def import_rejects(request: Request) -> Response:
    """Show or replace the addresses future imports skip."""
    store = fake_of(request).store
    if request.method == "PUT":
        emails = (await _body(request)).get("emails")
        if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
            raise ControlError(400, "emails must be an array of strings")
        store.import_rejects = {normal_email(e) for e in emails}
    return JSONResponse({"emails": sorted(store.import_rejects)})


async def settings(request: Request) -> Response:
    """Show or partially change the run-time settings."""
    fake = fake_of(request)
    if request.method == "PUT":
        try:
            fake.change_settings(await _body(request))
        except ValueError as exc:
            raise ControlError(400, str(exc)) from None
    return JSONResponse(settings_json(fake.config))


async def faults(request: Request) -> Response:
    """Show or replace the fault plan."""
    plan = fake_of(request).plan
    if request.method == "PUT":
        try:
            plan.load_json(await _body(request))
        except FaultPlanError as exc:
            raise ControlError(400, str(exc)) from None
    return JSONResponse(plan.to_json())


async def usage(request: Request) -> Response:
    """Calls served, by template and status, and the processes window."""
    return JSONResponse(fake_of(request).usage())


async def reset(request: Request) -> Response:
    """Fresh seeded data and counters."""
    seed = (await _body(request)).get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ControlError(400, "seed must be an integer")
    fake_of(request).reset(seed)
    return JSONResponse(
        {"reset": True, "seed": fake_of(request).config.seed if seed is None else seed}
    )


async def drift(request: Request) -> Response:
    """Show or switch the response drift of ``GET /v3/contacts/lists/{id}``."""
    fake = fake_of(request)
    if request.method == "PUT":
        enabled = (await _body(request)).get("enabled")
        if not isinstance(enabled, bool):
            raise ControlError(400, "enabled must be a boolean")
        fake.drift = enabled
    return JSONResponse({"enabled": fake.drift})


P = CONTROL_PREFIX
CONTROL_ROUTES = [
    Route(f"{P}/lists/{{listId}}/emails", list_emails, methods=["GET"]),
    Route(f"{P}/contacts", get_contact, methods=["GET"]),
    Route(f"{P}/contacts", add_contact, methods=["POST"]),
    Route(f"{P}/contacts/{{email}}/blocklist", set_blocklist, methods=["PUT"]),
    Route(f"{P}/attributes/{{name}}", attribute, methods=["PUT", "DELETE"]),
    Route(f"{P}/import-rejects", import_rejects, methods=["GET", "PUT"]),
    Route(f"{P}/settings", settings, methods=["GET", "PUT"]),
    Route(f"{P}/faults", faults, methods=["GET", "PUT"]),
    Route(f"{P}/usage", usage, methods=["GET"]),
    Route(f"{P}/reset", reset, methods=["POST"]),
    Route(f"{P}/drift", drift, methods=["GET", "PUT"]),
]
