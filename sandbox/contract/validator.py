"""Checking recorded exchanges against the (overlaid) OpenAPI documents.

Beyond the specs, one validation policy applies to the fakes and the clients alike: send and
return only declared fields. The Pipedrive schemas require no property and allow additional
ones, so a renamed field would pass plain schema validation; here every key of a JSON body
that its schema does not declare is reported, as is every query parameter the operation does
not declare. This is a policy for our code, not a change to the spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from werkzeug.datastructures import Headers, ImmutableMultiDict

from sandbox.contract.compiled import (
    METHODS,
    CompiledSpec,
    OperationRef,
    compiled,
    normalise_template,
)
from sandbox.contract.messages import openapi_error_messages, schema_error_text
from sandbox.contract.specs import SPEC_FILES, SpecName, spec_prefixes
from sandbox.recording import Exchange

Where = Literal["request", "response"]

# A status the operation does not declare is still allowed for 4xx/5xx when the body has the
# API's generic error shape. Pipedrive: the union of the error bodies its specs declare
# (failResponse, unathorizedResponse and the v2 404): ``success: false`` and ``error``,
# optionally ``error_info``, ``errorCode``, ``data`` and ``additional_data``.
PIPEDRIVE_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {"type": "string"},
        "error_info": {"type": "string"},
        "errorCode": {"type": "integer"},
        "data": {"type": "object", "nullable": True},
        "additional_data": {"type": "object", "nullable": True},
    },
}
# Brevo: the spec's own errorModel (``code`` from its enum, ``message``), which it declares
# for nearly every error response.
BREVO_ERROR_POINTER = "/components/schemas/errorModel"


@dataclass(frozen=True)
class Violation:
    """One way an exchange departs from the contract.

    ``template`` is the spec's path template (relative to the server), or the exchange's
    own path when no operation matched (then ``operation_id`` is None). ``path`` is always
    the exchange's path.
    """

    operation_id: str | None
    method: str
    template: str
    where: Where
    message: str
    api: SpecName | None = None
    path: str = ""

    def __str__(self) -> str:
        op = f" ({self.operation_id})" if self.operation_id else ""
        api = f"{self.api} " if self.api else ""
        return f"{api}{self.method} {self.template}{op} {self.where}: {self.message}"


@dataclass
class _Request:
    """openapi-core's Request protocol (with SupportsPathPattern), built from an Exchange."""

    host_url: str
    path: str
    path_pattern: str
    method: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str


@dataclass
class _Response:
    """openapi-core's Response protocol, built from an Exchange."""

    status_code: int
    headers: Headers
    content_type: str
    data: bytes | None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";")[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _media_schema(api: CompiledSpec, content: Any, content_type: str) -> Any:
    """The schema of the media type in ``content`` that ``content_type`` selects, if any."""
    if not isinstance(content, dict) or not content:
        return None
    mime = content_type.split(";")[0].strip().lower()
    media = content.get(mime)
    if media is None:
        media = (
            next((m for k, m in content.items() if _is_json(k)), None) if _is_json(mime) else None
        )
    return api.resolve(media).get("schema") if isinstance(media, dict) else None


class ContractValidator:
    """Validates exchanges with the fakes against the overlaid specs (``overlay=False``: the
    raw specs, for comparison). Thread-safe; specs are compiled on first use and cached.

    Routing by path prefix: ``/v1/...`` Pipedrive v1, ``/api/v2/...`` Pipedrive v2, ``/v3/...``
    Brevo; the rest of the path is matched against the spec's templates, the most concrete
    first. Requests: method, path and query parameters, credentials (one of the security
    alternatives the spec accepts, by presence only), header parameters the spec declares,
    the body against its schema; responses: the status must be declared for the operation,
    or be a 4xx/5xx whose body has the API's generic error shape (``PIPEDRIVE_ERROR``, or
    Brevo's errorModel); the body against its schema. JSON bodies are also checked for keys
    their schema does not declare, query strings for undeclared parameters (see module doc).
    """

    def __init__(self, *, overlay: bool = True) -> None:
        self.overlay = overlay

    def api(self, name: SpecName) -> CompiledSpec:
        """The compiled spec ``name``."""
        return compiled(name, self.overlay)

    def _split(self, path: str) -> tuple[SpecName, str] | None:
        for prefix, name in spec_prefixes():
            if path.startswith(prefix + "/"):
                return name, path[len(prefix) :]
        return None

    def _match(
        self, api: CompiledSpec, method: str, rest: str
    ) -> tuple[str, dict[str, str]] | None:
        """The template (with path variables) for ``rest``; the path's first template when
        none has ``method`` (reported as a wrong method)."""
        first: tuple[str, dict[str, str]] | None = None
        for route in api.routes:
            found = route.regex.match(rest)
            if found is None:
                continue
            variables = {name: found.group(group) for group, name in route.groups}
            if api.operation(method, route.template) is not None:
                return route.template, variables
            first = first or (route.template, variables)
        return first

    def identify(self, exchange: Exchange) -> OperationRef | None:
        """The spec operation an exchange belongs to, or None (unknown path or method)."""
        split = self._split(exchange.path)
        if split is None:
            return None
        api = self.api(split[0])
        matched = self._match(api, exchange.method, split[1])
        if matched is None or api.operation(exchange.method, matched[0]) is None:
            return None
        return api.ref(exchange.method, matched[0])

    def resolve_operation(self, api: str, method: str, template: str) -> OperationRef | None:
        """The spec operation a client declares as (api, method, template), or None.

        ``template`` either starts with the fake's path prefix (``/v1``, ``/api/v2``, ``/v3``;
        any ``api``) or is relative to the server of the spec named ``api``. Parameter names
        need not match the spec's.
        """
        split = self._split(template)
        if split is None:
            if api not in SPEC_FILES:
                return None
            split = (api, template)
        spec = self.api(split[0])
        spec_template = spec.by_template.get(normalise_template(split[1]))
        if spec_template is None or spec.operation(method, spec_template) is None:
            return None
        return spec.ref(method, spec_template)

    def operations(self, name: SpecName) -> list[OperationRef]:
        """Every operation of spec ``name``."""
        return self.api(name).operations()

    def validate(self, exchange: Exchange) -> list[Violation]:
        """Every contract violation in one exchange (empty when it is valid)."""
        return self.examine(exchange)[1]

    def examine(self, exchange: Exchange) -> tuple[OperationRef | None, list[Violation]]:
        """The operation an exchange belongs to (None when unknown) and its violations."""
        method = exchange.method.upper()
        split = self._split(exchange.path)
        if split is None:
            return None, [self._unknown(exchange, "no API serves this path prefix")]
        api = self.api(split[0])
        matched = self._match(api, method, split[1])
        if matched is None:
            return None, [self._unknown(exchange, f"no {api.name} operation has this path", api)]
        template, variables = matched
        operation = api.operation(method, template)
        if operation is None:
            methods = sorted(m.upper() for m in api.document["paths"][template] if m in METHODS)
            message = f"{method} is not an operation of {template} (only {', '.join(methods)})"
            return None, [self._unknown(exchange, message, api)]
        ref = api.ref(method, template)
        found: list[tuple[Where, str]] = []
        try:
            with api.lock:
                request = self._request(api, exchange, template, variables)
                found += [
                    ("request", m) for m in self._check_request(api, template, operation, request)
                ]
                found += [
                    ("response", m) for m in self._check_response(api, operation, request, exchange)
                ]
        except Exception as exc:  # a validator crash must be a finding, not a lost exchange
            found.append(("response", f"validator error: {type(exc).__name__}: {exc}"))
        violations = [
            Violation(ref.operation_id, method, template, where, message, api.name, exchange.path)
            for where, message in found
        ]
        return ref, violations

    def _unknown(
        self, exchange: Exchange, message: str, api: CompiledSpec | None = None
    ) -> Violation:
        name = api.name if api else None
        method = exchange.method.upper()
        return Violation(None, method, exchange.path, "request", message, name, exchange.path)

    def _request(
        self, api: CompiledSpec, exchange: Exchange, template: str, variables: dict[str, str]
    ) -> _Request:
        content_type = _header(exchange.request_headers, "content-type") or ""
        parameters = RequestParameters(
            path=variables,
            query=ImmutableMultiDict(parse_qsl(exchange.query, keep_blank_values=True)),
            header=Headers(list(exchange.request_headers.items())),
            cookie=ImmutableMultiDict(),
        )
        return _Request(
            host_url=api.host_url,
            path=exchange.path,
            path_pattern=api.prefix + template,
            method=exchange.method.lower(),
            parameters=parameters,
            body=exchange.request_body or None,
            content_type=content_type,
        )

    def _check_request(
        self, api: CompiledSpec, template: str, operation: dict[str, Any], request: _Request
    ) -> list[str]:
        found = self._check_security(api, operation, request)
        # openapi-core's own security check warns on oauth2 and accepts it unchecked, so
        # security is checked above and only parameters and body go through openapi-core.
        for error in api.parameters_validator.iter_errors(request):
            found += openapi_error_messages("", error)
        found += self._undeclared_query(api, template, operation, request)
        body_spec = api.resolve(operation.get("requestBody"))
        if not isinstance(body_spec, dict):
            if request.body:
                found.append("has a body, but the operation takes none")
            return found
        if request.body and not request.content_type:
            return [*found, "has a body but no content-type"]
        if request.body or body_spec.get("required"):
            for error in api.body_validator.iter_errors(request):
                found += openapi_error_messages("body", error)
        if request.body and _is_json(request.content_type):
            schema = _media_schema(api, body_spec.get("content"), request.content_type)
            found += self._undeclared_body_keys(api, schema, request.body, "body")
        return found

    def _check_security(
        self, api: CompiledSpec, operation: dict[str, Any], request: _Request
    ) -> list[str]:
        requirements = operation.get("security", api.document.get("security"))
        if not requirements:
            return []
        schemes = api.document.get("components", {}).get("securitySchemes", {})
        for requirement in requirements:
            if all(
                self._has_credential(api.resolve(schemes.get(name, {})), request)
                for name in requirement
            ):
                return []
        wanted = " or ".join(" + ".join(r) or "nothing" for r in requirements)
        return [f"no credentials the spec accepts (wanted {wanted})"]

    @staticmethod
    def _has_credential(scheme: Any, request: _Request) -> bool:
        if not isinstance(scheme, dict):
            return False
        headers = request.parameters.header
        kind = scheme.get("type")
        if kind == "apiKey":
            place = scheme.get("in")
            name = scheme.get("name", "")
            if place == "header":
                return name in headers
            return name in (request.parameters.query if place == "query" else {})
        authorization = str(headers.get("Authorization", ""))
        if kind == "http":
            return authorization.lower().startswith(str(scheme.get("scheme", "")).lower() + " ")
        if kind in ("oauth2", "openIdConnect"):
            return authorization.lower().startswith("bearer ")
        return False

    def _undeclared_query(
        self, api: CompiledSpec, template: str, operation: dict[str, Any], request: _Request
    ) -> list[str]:
        item = api.document["paths"][template]
        declared = {
            p.get("name")
            for p in map(
                api.resolve, [*operation.get("parameters", []), *item.get("parameters", [])]
            )
            if isinstance(p, dict) and p.get("in") == "query"
        }
        schemes = api.document.get("components", {}).get("securitySchemes", {})
        declared |= {
            s.get("name")
            for s in map(api.resolve, schemes.values())
            if isinstance(s, dict) and s.get("type") == "apiKey" and s.get("in") == "query"
        }
        return [
            f"query parameter {name!r} is not declared"
            for name in request.parameters.query
            if name not in declared
        ]

    def _undeclared_body_keys(
        self, api: CompiledSpec, schema: Any, body: bytes, label: str
    ) -> list[str]:
        if schema is None:
            return []
        try:
            instance = json.loads(body)
        except ValueError:
            return []  # openapi-core reports the body as invalid
        return [
            f"{label} {path}: undeclared key" for path in api.walker.undeclared(schema, instance)
        ]

    def _check_response(
        self, api: CompiledSpec, operation: dict[str, Any], request: _Request, exchange: Exchange
    ) -> list[str]:
        status = exchange.status
        content_type = _header(exchange.response_headers, "content-type") or ""
        responses = operation.get("responses", {})
        key = next(
            (k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None
        )
        if key is None:
            declared = ", ".join(sorted(responses))
            if status < 400:
                return [f"status {status} is not declared (declared: {declared})"]
            return self._check_generic_error(api, exchange, content_type)
        response = _Response(
            status_code=status,
            headers=Headers(list(exchange.response_headers.items())),
            content_type=content_type,
            data=exchange.response_body or None,
        )
        found: list[str] = []
        for error in api.response_validator.iter_errors(request, response):
            found += openapi_error_messages("body", error)
        declared_response = api.resolve(responses[key])
        content = declared_response.get("content") if isinstance(declared_response, dict) else None
        if not content and exchange.response_body:
            found.append(f"status {status} has no body in the spec, but one was sent")
        if exchange.response_body and _is_json(content_type):
            schema = _media_schema(api, content, content_type)
            found += self._undeclared_body_keys(api, schema, exchange.response_body, "body")
        return found

    def _check_generic_error(
        self, api: CompiledSpec, exchange: Exchange, content_type: str
    ) -> list[str]:
        where = f"undeclared status {exchange.status} needs the generic error body"
        if not _is_json(content_type):
            return [f"{where}, got content-type {content_type or '(none)'}"]
        try:
            body = json.loads(exchange.response_body)
        except ValueError:
            return [f"{where}, got a body that is not JSON"]
        schema = _generic_error_schema(api)
        errors = sorted(
            OAS30ReadValidator(schema, format_checker=oas30_format_checker).iter_errors(body),
            key=lambda e: [str(part) for part in e.absolute_path],
        )
        found = [f"{where}: {schema_error_text(e)}" for e in errors]
        found += [f"{where}: {p}: undeclared key" for p in api.walker.undeclared(schema, body)]
        return found

    def generic_error_schema(self, name: SpecName) -> dict[str, Any]:
        """The body a 4xx/5xx the operation does not declare must have, for spec ``name``."""
        return _generic_error_schema(self.api(name))


def _generic_error_schema(api: CompiledSpec) -> dict[str, Any]:
    if api.name == "brevo":
        schema = api.resolve({"$ref": "#" + BREVO_ERROR_POINTER})
        return schema if isinstance(schema, dict) else {}
    return PIPEDRIVE_ERROR
