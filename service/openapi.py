"""The OpenAPI 3.1 description of every route, served at ``GET /openapi.json``.

Written out by hand rather than parsed from docstrings so that every parameter, body and
response is declared; a test checks it covers exactly the app's routes and validates.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from service.api.params import MAX_ID
from service.api.responses import JsonResponse
from service.jobs import DEFAULT_PAGE, JOB_KINDS, JOB_STATUSES, JOB_TRIGGERS, MAX_PAGE


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_COUNT = {"type": "integer", "minimum": 0}
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_TOO_LARGE = {"413": _error("Request body over 1 MiB")}
_AUTH_ERRORS = {
    "401": {
        **_error("No valid session (a stale session cookie is cleared)"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    **_TOO_LARGE,
}
_WRITE_ERRORS = {
    **_AUTH_ERRORS,
    "403": _error("Cookie-authenticated request from another origin"),
    "415": _error("Cookie-authenticated request with a body that is not application/json"),
}
_TOO_SLOW = {"408": _error("The request body did not arrive in time; the connection is closed")}
_FILTER_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The Pipedrive filter id",
    "schema": _ID,
}
# true, false, 1 or 0, in any letter case (service.api.params.bool_param).
_BOOLEAN = {
    "type": "string",
    "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$",
    "examples": ["true", "false", "1", "0"],
    "default": "false",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Job": {
        "type": "object",
        "required": [
            "id",
            "filter_id",
            "kind",
            "trigger",
            "status",
            "forced",
            "created_at",
            "completed_at",
            "total_fetched",
            "total_added",
            "total_updated",
            "total_removed",
            "total_skipped",
            "error_message",
            "note",
        ],
        "properties": {
            "id": _ID,
            "filter_id": _ID,
            "kind": {"type": "string", "enum": list(JOB_KINDS)},
            "trigger": {"type": "string", "enum": list(JOB_TRIGGERS)},
            "status": {"type": "string", "enum": list(JOB_STATUSES)},
            "forced": {"type": "boolean"},
            "created_at": _TIME,
            "completed_at": _NULLABLE_TIME,
            "total_fetched": _COUNT,
            "total_added": _COUNT,
            "total_updated": _COUNT,
            "total_removed": _COUNT,
            "total_skipped": _COUNT,
            "error_message": {"type": ["string", "null"]},
            "note": {
                "type": ["string", "null"],
                "description": "What the job noticed that the admin should know",
            },
        },
    },
    "Conflict": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "job": {**_ref("Job"), "description": "The running job, when one is running"},
        },
    },
    "Filter": {
        "type": "object",
        "required": ["id", "name", "type", "brevo_list_id", "deleted_at", "last_job"],
        "properties": {
            "id": _ID,
            "name": {"type": "string"},
            "type": {"type": ["string", "null"], "enum": ["people", "deals", None]},
            "brevo_list_id": {"type": ["integer", "null"]},
            "deleted_at": _NULLABLE_TIME,
            "last_job": {"oneOf": [_ref("Job"), {"type": "null"}]},
        },
    },
    "RateLimit": {
        "type": ["object", "null"],
        "description": "The last rate-limit figures the API reported; null when never seen",
        "required": ["limit", "remaining", "reset_seconds", "observed_at"],
        "properties": {
            "limit": {"type": ["integer", "null"], "description": "Requests per window"},
            "remaining": {"type": ["integer", "null"], "description": "Left in the window"},
            "reset_seconds": {
                "type": ["number", "null"],
                "description": "Seconds from observed_at until the window resets",
            },
            "observed_at": _TIME,
            "daily_limit": {
                "type": ["integer", "null"],
                "description": "Pipedrive only: the daily token budget",
            },
            "daily_remaining": {
                "type": ["integer", "null"],
                "description": "Pipedrive only: what is left of the daily token budget",
            },
        },
    },
    "ApiUsage": {
        "type": "object",
        "required": [
            "calls_last_hour",
            "calls_by_status",
            "calls_counted_since",
            "rate_limit",
            "auth_pause",
        ],
        "properties": {
            "calls_last_hour": {
                **_COUNT,
                "description": (
                    "Calls counted since calls_counted_since: calls are counted per clock hour, "
                    "so this covers the last hour and up to one hour more"
                ),
            },
            "calls_by_status": {
                "type": "object",
                "description": "The same calls by HTTP status (0: no response)",
                "propertyNames": {"pattern": "^[0-9]{1,3}$"},
                "additionalProperties": _COUNT,
            },
            "calls_counted_since": _TIME,
            "rate_limit": _ref("RateLimit"),
            "auth_pause": _ref("AuthPause"),
        },
    },
    "AuthPause": {
        "type": ["object", "null"],
        "description": (
            "The API's refusal (401/403) of the service's credential and the pause of the work "
            "that needs it; null when none is recorded"
        ),
        "required": [
            "active",
            "status",
            "error",
            "variable",
            "refused_at",
            "paused_until",
            "backoff_seconds",
        ],
        "properties": {
            "active": {
                "type": "boolean",
                "description": "True while no work calls the API; once false, the next job "
                "tries the credential again",
            },
            "status": {
                "type": ["integer", "null"],
                "description": "The status it was refused with (401 or 403)",
            },
            "error": {
                "type": "string",
                "description": "The refusal as the job that met it reported it",
            },
            "variable": {
                "type": "string",
                "enum": ["PIPEDRIVE_API_TOKEN", "BREVO_API_KEY"],
                "description": "The setting to fix",
            },
            "refused_at": _TIME,
            "paused_until": _TIME,
            "backoff_seconds": {
                "type": "number",
                "minimum": 0,
                "description": "The current wait between tries; doubles after each refused "
                "try, at most 3600",
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["checked_at", "inbox", "sync", "queue", "jobs", "workers", "apis"],
        "properties": {
            "checked_at": _TIME,
            "inbox": {
                "type": "object",
                "description": "The webhook inbox",
                "required": [
                    "pending",
                    "ignored",
                    "processed",
                    "oldest_pending_age_seconds",
                    "last_webhook_at",
                ],
                "properties": {
                    "pending": _COUNT,
                    "ignored": _COUNT,
                    "processed": _COUNT,
                    "oldest_pending_age_seconds": {
                        "type": ["integer", "null"],
                        "minimum": 0,
                        "description": "Since the oldest pending delivery was received",
                    },
                    "last_webhook_at": {
                        **_NULLABLE_TIME,
                        "description": "When the latest delivery was received",
                    },
                },
            },
            "sync": {
                "type": "object",
                "description": "The webhook-driven incremental sync",
                "required": [
                    "changes_waiting",
                    "configured_coalesce_seconds",
                    "coalesce_seconds",
                    "pipedrive_paused_until",
                ],
                "properties": {
                    "changes_waiting": {
                        **_COUNT,
                        "description": "Routed webhook changes not yet applied by a job",
                    },
                    "configured_coalesce_seconds": {
                        "type": "number",
                        "minimum": 0,
                        "description": "SYNC_COALESCE_SECONDS",
                    },
                    "coalesce_seconds": {
                        "type": "number",
                        "minimum": 0,
                        "description": (
                            "How long a burst of events is gathered now: the configured "
                            "window, widened while less than half of Pipedrive's daily "
                            "token budget is left"
                        ),
                    },
                    "pipedrive_paused_until": {
                        **_NULLABLE_TIME,
                        "description": (
                            "While Pipedrive's daily token budget is spent: when its work resumes"
                        ),
                    },
                },
            },
            "queue": {
                "type": "object",
                "required": ["depth", "error"],
                "properties": {
                    "depth": {
                        "type": ["integer", "null"],
                        "minimum": 0,
                        "description": "Messages waiting on the QUEUE_URL queue, if readable",
                    },
                    "error": {
                        "type": ["string", "null"],
                        "description": "Why the queue could not be read",
                    },
                },
            },
            "jobs": {
                "type": "object",
                "required": [
                    "processing",
                    "oldest_processing_job_id",
                    "oldest_processing_age_seconds",
                ],
                "properties": {
                    "processing": _COUNT,
                    "oldest_processing_job_id": {"oneOf": [_ID, {"type": "null"}]},
                    "oldest_processing_age_seconds": {
                        "type": ["integer", "null"],
                        "minimum": 0,
                        "description": "Since the oldest processing job was created",
                    },
                },
            },
            "workers": {
                "type": "array",
                "description": "Worker processes heard from in the last day, latest first",
                "items": {
                    "type": "object",
                    "required": ["holder", "last_heartbeat_at", "heartbeat_age_seconds", "alive"],
                    "properties": {
                        "holder": {"type": "string", "description": "host:pid"},
                        "last_heartbeat_at": _TIME,
                        "heartbeat_age_seconds": _COUNT,
                        "alive": {
                            "type": "boolean",
                            "description": "The last heartbeat is at most 15 seconds old",
                        },
                    },
                },
            },
            "apis": {
                "type": "object",
                "required": ["pipedrive", "brevo"],
                "properties": {"pipedrive": _ref("ApiUsage"), "brevo": _ref("ApiUsage")},
            },
        },
    },
    "Login": {
        "type": "object",
        "required": ["password"],
        "properties": {"password": {"type": "string"}},
        "additionalProperties": True,
        "description": "Other members are ignored",
    },
    "Session": {
        "type": "object",
        "required": ["token", "expires_at"],
        "properties": {"token": {"type": "string"}, "expires_at": _TIME},
    },
}

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness of the web process and its database",
            "security": [],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": ["ok"]}},
                    },
                    "Healthy",
                ),
                "503": _error("The database does not answer"),
                **_TOO_LARGE,
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI document"),
                **_TOO_LARGE,
            },
        }
    },
    "/webhooks/pipedrive": {
        "post": {
            "summary": "Receive a Pipedrive webhook delivery (v1 or v2)",
            "description": (
                "Authenticated with HTTP Basic (WEBHOOK_USER, WEBHOOK_PASSWORD), not a session. "
                "The delivery is committed to the inbox before the answer. A redelivery of a "
                "stored event is a duplicate; valid JSON about objects the sync does not use, "
                "or without the ids it needs, is stored as ignored and still answered 200."
            ),
            "security": [{"webhookBasic": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": True,
                            "description": "A webhooks v2 {meta, data, previous} or v1 "
                            "{v, meta, current, previous, retry, event} body; any other JSON "
                            "object (nested at most 64 levels) is stored as ignored",
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {
                                "type": "string",
                                "enum": ["received", "duplicate", "ignored"],
                            }
                        },
                    },
                    "Stored (received: for the sync; ignored: kept, not used), or already stored",
                ),
                "400": _error("Not UTF-8, not JSON, not an object, or nested over 64 levels"),
                "401": {
                    **_error("Missing or wrong HTTP Basic credentials"),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                },
                "413": _error("Request body over 256 KiB"),
                "415": _error("The body is not application/json"),
                "429": {
                    **_error(
                        "Too many failed authentications from this address; refused before "
                        "the credentials are compared"
                    ),
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                },
                **_TOO_SLOW,
                "503": _error(
                    "Webhook credentials not configured, or the delivery could not be stored"
                ),
            },
        }
    },
    "/api/session": {
        "post": {
            "summary": "Log in with the admin password",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Login")}},
            },
            "responses": {
                "201": {
                    **_json(_ref("Session"), "Logged in; the token is also set as a cookie"),
                    "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
                },
                "400": _error('The body is not {"password": "..."}'),
                "401": _error("Wrong password"),
                "413": _error("Request body over 1 MiB"),
                "415": _error("The body is not JSON"),
                "429": {
                    **_error("Too many failed logins from this address"),
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                },
                **_TOO_SLOW,
            },
        },
        "delete": {
            "summary": "Log out (end this session)",
            "responses": {
                "204": {
                    "description": "Logged out; the session cookie is cleared",
                    "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
                },
                **_WRITE_ERRORS,
            },
        },
    },
    "/api/filters": {
        "get": {
            "summary": "Every known Pipedrive filter with its latest job",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["filters"],
                        "properties": {"filters": {"type": "array", "items": _ref("Filter")}},
                    },
                    "The filters",
                ),
                **_AUTH_ERRORS,
            },
        }
    },
    "/api/filters/refresh": {
        "post": {
            "summary": "Read Pipedrive's people and deal filters now",
            "description": (
                "Upserts the filters by Pipedrive id (temporary and inactive ones skipped), "
                "soft-deletes those that vanished (their Brevo lists are left alone), renames "
                "the Brevo list of a renamed linked filter, and schedules a full resync of a "
                "linked filter whose conditions changed."
            ),
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["filters", "created", "updated", "deleted"],
                        "properties": {
                            "filters": {"type": "array", "items": _ref("Filter")},
                            "created": _COUNT,
                            "updated": _COUNT,
                            "deleted": _COUNT,
                        },
                    },
                    "Every known filter after the refresh, and what it changed",
                ),
                "409": _error("PIPEDRIVE_API_TOKEN is not set"),
                "502": _error("Pipedrive failed or refused the token"),
                **_WRITE_ERRORS,
            },
        }
    },
    "/api/filters/{id}/sync": {
        "post": {
            "summary": "Start a full resync (or a dry run) of one filter",
            "parameters": [
                _FILTER_ID,
                {
                    "name": "force",
                    "in": "query",
                    "description": "Run past the safety brake on mass removals",
                    "schema": _BOOLEAN,
                },
                {
                    "name": "dry_run",
                    "in": "query",
                    "description": "Compute what a full resync would change, without writing",
                    "schema": _BOOLEAN,
                },
            ],
            "responses": {
                "202": _json(
                    {"type": "object", "required": ["job"], "properties": {"job": _ref("Job")}},
                    "The job, queued for a worker",
                ),
                "400": _error("force or dry_run is not true, false, 1 or 0"),
                "404": _error("No such filter"),
                "409": _json(
                    _ref("Conflict"),
                    "The filter is already being synced (the body carries the running job), "
                    "was deleted in Pipedrive, or has not been refreshed yet",
                ),
                **_WRITE_ERRORS,
            },
        }
    },
    "/api/sync": {
        "post": {
            "summary": "Start a full resync of every linked filter",
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["jobs", "busy"],
                        "properties": {
                            "jobs": {"type": "array", "items": _ref("Job")},
                            "busy": {
                                "type": "array",
                                "items": _ID,
                                "description": "Filters left alone: a job already runs",
                            },
                        },
                    },
                    "The jobs started",
                ),
                **_WRITE_ERRORS,
            },
        }
    },
    "/api/jobs": {
        "get": {
            "summary": "Sync jobs, newest first",
            "parameters": [
                {"name": "filter_id", "in": "query", "schema": _ID},
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(JOB_STATUSES)},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_PAGE,
                        "default": DEFAULT_PAGE,
                    },
                },
                {
                    "name": "before_id",
                    "in": "query",
                    "description": "Only older jobs: the next_before_id of the previous page",
                    "schema": _ID,
                },
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["jobs", "next_before_id"],
                        "properties": {
                            "jobs": {"type": "array", "items": _ref("Job")},
                            "next_before_id": {"type": ["integer", "null"]},
                        },
                    },
                    "A page of jobs",
                ),
                "400": _error("A query value is invalid"),
                **_AUTH_ERRORS,
            },
        }
    },
    "/api/jobs/{id}": {
        "get": {
            "summary": "One sync job",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": _ID}],
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["job"], "properties": {"job": _ref("Job")}},
                    "The job",
                ),
                "404": _error("No such job"),
                **_AUTH_ERRORS,
            },
        }
    },
    "/api/status": {
        "get": {
            "summary": "Inbox, queue, jobs, worker liveness and API usage at a glance",
            "description": (
                "Never fails because the queue cannot be read: queue.depth is then null and "
                "queue.error says why."
            ),
            "responses": {
                "200": _json(_ref("Status"), "The status"),
                **_AUTH_ERRORS,
            },
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "pipedrive-brevo-sync",
        "version": "0.1.0",
        "description": "Admin API of the service keeping Brevo lists equal to Pipedrive filters.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "pbsync_session"},
            "webhookBasic": {"type": "http", "scheme": "basic"},
        },
    },
    "security": [{"bearer": []}, {"cookie": []}],
}


async def openapi_json(request: Request) -> JsonResponse:
    """Serve the OpenAPI document."""
    return JsonResponse(DOCUMENT)
