"""The errors the API clients raise.

::

    ApiError                  any failed call; carries the API's own message
    + ApiAuthError            401 or 403: the credential is wrong; never retried
    |   + ApiAuthPaused       no call made: the credential was refused and waits for a retry
    + ApiRequestError         another 4xx the API will answer the same way again
    |   + ApiNotFound         404
    + ApiUnavailable          429, 5xx, timeouts or dropped connections, attempts exhausted
        + ApiRateLimited      the API asks for a longer wait than the client will sleep
            + ApiBudgetExhausted  Pipedrive's daily token budget is spent

Messages name the API, the method and the path template, never a URL with its query
string, a header, a key or a token. ``metadata`` is the error body's ``metadata`` object
when the API sent one (Brevo's ``duplicate_identifiers``).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A call to Pipedrive or Brevo failed."""

    def __init__(
        self,
        api: str,
        operation: str,
        message: str,
        status: int | None = None,
        code: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.api = api
        self.operation = operation
        self.status = status
        self.code = code
        self.api_message = message
        self.metadata: dict[str, Any] = dict(metadata or {})
        answered = f"answered {status}" if status else "failed"
        super().__init__(f"{api} {operation} {answered}: {message}")


class ApiAuthError(ApiError):
    """The API refused the credential (401) or the permission (403)."""


class ApiAuthPaused(ApiAuthError):
    """No call was made: the API refused this credential before, and the service waits
    before trying it again (``service.auth_pause``). ``str()`` is ``message`` as given."""

    def __init__(self, api: str, operation: str, message: str, status: int | None) -> None:
        super().__init__(api, operation, message, status)
        # Not "answered 401": this time nothing was sent.
        self.args = (message,)


class ApiRequestError(ApiError):
    """The API rejected the request itself; sending it again changes nothing."""


class ApiNotFound(ApiRequestError):
    """The object the request names does not exist (404)."""


class ApiUnavailable(ApiError):
    """The API did not answer usefully within the allowed attempts."""

    def __init__(
        self,
        api: str,
        operation: str,
        message: str,
        status: int | None = None,
        code: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(api, operation, message, status, code)
        self.attempts = attempts


class ApiRateLimited(ApiUnavailable):
    """The API asks the client to wait ``retry_after`` seconds, longer than it will sleep."""

    def __init__(
        self, api: str, operation: str, message: str, retry_after: float, attempts: int = 1
    ) -> None:
        super().__init__(api, operation, message, 429, None, attempts)
        self.retry_after = retry_after


class ApiBudgetExhausted(ApiRateLimited):
    """Pipedrive's daily token budget is spent; calls fail until it resets."""
