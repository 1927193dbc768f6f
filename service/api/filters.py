"""``GET /api/filters`` and ``POST /api/filters/refresh``."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service import filters
from service.api.context import WebContext, web_context
from service.api.responses import JsonResponse
from service.clients import factory
from service.clients.errors import ApiAuthError
from service.clients.errors import ApiError as ClientApiError
from service.errors import ApiError
from service.filter_refresh import RefreshResult
from service.filter_refresh import refresh_filters as run_refresh
from service.webhooks_install import WebhookTarget

log = logging.getLogger(__name__)


async def list_filters(request: Request) -> JsonResponse:
    """Every known filter with its latest job."""
    views = await run_in_threadpool(filters.list_filters)
    return JsonResponse({"filters": [view.to_json() for view in views]})


def _refresh(context: WebContext) -> RefreshResult:
    settings = context.settings
    pipedrive = factory.pipedrive_client(settings)
    brevo = factory.brevo_client(settings) if settings.brevo_api_key else None
    webhooks = WebhookTarget.from_settings(settings)
    return run_refresh(pipedrive, brevo, context.clock.now(), context.enqueue_job, webhooks)


async def refresh_filters(request: Request) -> JsonResponse:
    """Read Pipedrive's filters now: the filters as ``GET /api/filters`` shows them, and counts.

    Without ``PIPEDRIVE_API_TOKEN`` the answer is 409: the request is fine but the service
    is not configured for it, which the admin fixes (retrying would not help, as a 5xx
    suggests). Pipedrive failing is 502 with the client's message (it never holds a secret).
    """
    context = web_context(request)
    try:
        result = await run_in_threadpool(_refresh, context)
    except factory.MissingCredential as exc:
        raise ApiError(409, f"{exc}: the service cannot read Pipedrive's filters") from exc
    except ApiAuthError as exc:
        log.warning("filter refresh: Pipedrive refused the token", extra={"error": str(exc)})
        raise ApiError(
            502, f"Pipedrive refused the API token (PIPEDRIVE_API_TOKEN): {exc}"
        ) from exc
    except ClientApiError as exc:
        log.warning("filter refresh failed", extra={"error": str(exc)})
        raise ApiError(502, str(exc)) from exc
    return JsonResponse(
        {
            "filters": [view.to_json() for view in result.filters],
            "created": result.created,
            "updated": result.updated,
            "deleted": result.deleted,
        }
    )
