"""The specs compiled for validation: routes, openapi-core validators, $ref resolution."""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.request import (
    V30RequestBodyValidator,
    V30RequestParametersValidator,
)
from openapi_core.validation.request.exceptions import (
    MissingParameter,
    MissingRequiredParameter,
)
from openapi_core.validation.response import V30ResponseValidator

from sandbox.contract.keys import KeyWalker
from sandbox.contract.specs import SPEC_FILES, SpecName, load_spec, pointer_tokens

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True, order=True)
class OperationRef:
    """One operation of a spec: the API, method, path template (relative to the server)."""

    api: SpecName
    method: str
    template: str
    operation_id: str | None

    @property
    def label(self) -> str:
        """``api METHOD /template``."""
        return f"{self.api} {self.method} {self.template}"


@dataclass(frozen=True)
class _Route:
    template: str
    regex: re.Pattern[str]
    groups: tuple[tuple[str, str], ...]
    variables: int


def _route(template: str) -> _Route:
    parts: list[str] = []
    groups: list[tuple[str, str]] = []
    for index, piece in enumerate(re.split(r"(\{[^}]+\})", template)):
        if piece.startswith("{") and piece.endswith("}"):
            # Parameter names such as {channel-id} are not valid regex group names.
            group = f"p{index}"
            groups.append((group, piece[1:-1]))
            parts.append(f"(?P<{group}>[^/]+)")
        else:
            parts.append(re.escape(piece))
    return _Route(template, re.compile("".join(parts) + "$"), tuple(groups), len(groups))


def normalise_template(template: str) -> str:
    """A template with its parameter names blanked, to compare templates."""
    return re.sub(r"\{[^}]+\}", "{}", template)


class _ParametersValidator(V30RequestParametersValidator):
    """openapi-core's parameter check, skipping the parameters a request does not send.

    openapi-core reads a dozen spec nodes and builds a deserializer for every declared
    parameter before finding it absent: about 0.7 ms each, and GET /api/v2/persons declares
    15. Overrides a private method: should it be renamed, this only gets slower again.
    """

    def _get_parameter(self, parameters: RequestParameters, param: Any) -> Any:
        spec = param.read_value()
        if isinstance(spec, dict) and "name" in spec and spec.get("style") != "deepObject":
            name, place = spec["name"], spec.get("in", "")
            if name not in getattr(parameters, place, {}):
                if spec.get("required"):
                    raise MissingRequiredParameter(name, place)
                raise MissingParameter(name, place)
        return super()._get_parameter(parameters, param)


class CompiledSpec:
    """One spec, compiled for validation: routes, openapi-core validators, a lock."""

    def __init__(self, name: SpecName, overlay: bool) -> None:
        self.name = name
        self.document = load_spec(name, overlay=overlay)
        self.prefix = SPEC_FILES[name].prefix
        server = urlsplit(self.document["servers"][0]["url"])
        self.host_url = f"{server.scheme}://{server.netloc}"
        # Skip openapi-core's spec check (seconds per spec); a test validates the documents.
        app = OpenAPI.from_dict(self.document, config=Config(spec_validator_cls=None))
        self.parameters_validator = _ParametersValidator(app.spec)
        self.body_validator = V30RequestBodyValidator(app.spec)
        self.response_validator = V30ResponseValidator(app.spec)
        # openapi-core keeps caches on shared objects; one exchange at a time per spec.
        self.lock = threading.Lock()
        routes = [_route(t) for t in self.document["paths"]]
        # The most concrete template first, as openapi-core orders them.
        self.routes = sorted(routes, key=lambda r: r.variables)
        self.by_template = {normalise_template(t): t for t in self.document["paths"]}
        self.walker = KeyWalker(self.resolve)

    def resolve(self, node: Any) -> Any:
        """``node`` with local ``$ref``s followed."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise ValueError(f"{self.name}: unsupported $ref {ref!r}")
            node = self.document
            for token in pointer_tokens(ref[1:]):
                node = node[int(token)] if isinstance(node, list) else node[token]
            seen += 1
            if seen > 50:
                raise ValueError(f"{self.name}: $ref loop at {ref}")
        return node

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        """The operation object for ``method`` on ``template``, if the spec has one."""
        item = self.document["paths"].get(template)
        op = item.get(method.lower()) if isinstance(item, dict) else None
        return op if isinstance(op, dict) else None

    def ref(self, method: str, template: str) -> OperationRef:
        """The OperationRef of ``method`` on ``template``."""
        op = self.operation(method, template) or {}
        op_id = op.get("operationId")
        return OperationRef(self.name, method.upper(), template, op_id if op_id else None)

    def operations(self) -> list[OperationRef]:
        """Every operation of the spec."""
        return [
            self.ref(method, template)
            for template, item in self.document["paths"].items()
            for method in item
            if method in METHODS
        ]


_compile_lock = threading.Lock()


@functools.cache
def _compiled_unlocked(name: SpecName, overlay: bool) -> CompiledSpec:
    return CompiledSpec(name, overlay)


def compiled(name: SpecName, overlay: bool) -> CompiledSpec:
    """The compiled spec, built once per process (and per overlay choice)."""
    # Building a spec takes a second or more; two threads must not both build it.
    with _compile_lock:
        return _compiled_unlocked(name, overlay)
