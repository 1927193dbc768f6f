"""The official OpenAPI documents, loaded once per process, with the ERRATA overlay applied.

``specs/ERRATA.md`` lists the known flaws of the vendored specs. ``CORRECTIONS`` says how
each row is honoured: most by a small overlay of explicit edits applied to the loaded
document, the YAML one by the loader, one needs nothing. The overlay changes nothing else.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

SpecName = Literal["pipedrive-v1", "pipedrive-v2", "brevo"]
SPEC_NAMES: tuple[SpecName, ...] = get_args(SpecName)

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"


@dataclass(frozen=True)
class SpecFile:
    """Where a spec lives and the path prefix its server URL puts before every template."""

    file: Path
    prefix: str


SPEC_FILES: dict[SpecName, SpecFile] = {
    "pipedrive-v1": SpecFile(SPECS_DIR / "pipedrive" / "openapi.yaml", "/v1"),
    "pipedrive-v2": SpecFile(SPECS_DIR / "pipedrive" / "openapi-v2.yaml", "/api/v2"),
    "brevo": SpecFile(SPECS_DIR / "brevo" / "swagger_definition_v3.yml", "/v3"),
}

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _SpecLoader(yaml.CSafeLoader):
    """CSafeLoader without timestamp resolution, and with integer mapping keys as text.

    ERRATA (Brevo v3, the YAML file): unquoted example dates stay strings.
    ERRATA (Brevo v3, response codes written unquoted): Brevo writes ``201:``, which YAML reads as
    integer keys. JSON, and so OpenAPI tooling, only has string keys; the spec validator
    crashes on them and no response would be found. Only response-code keys are integers in
    the vendored files (checked by a test).
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        if any(type(key) is int for key in mapping):
            return {str(k) if type(k) is int else k: v for k, v in mapping.items()}
        return mapping


@functools.cache
def load_raw_spec(name: SpecName) -> dict[str, Any]:
    """The spec as the file says it (loader rules only, no overlay); cached, do not mutate."""
    with SPEC_FILES[name].file.open("rb") as handle:
        document = yaml.load(handle, Loader=_SpecLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{name}: the spec is not a mapping")
    return document


_overlay_lock = threading.Lock()


def load_spec(name: SpecName, *, overlay: bool = True) -> dict[str, Any]:
    """The spec with the ERRATA overlay applied (or without, for comparison).

    Cached per process and shared: treat it as read-only. The overlaid document shares
    every unpatched subtree with ``load_raw_spec(name)``.
    """
    if not overlay:
        return load_raw_spec(name)
    # functools.cache does not stop two threads from building the same document at once.
    with _overlay_lock:
        return _overlaid(name)


@functools.cache
def _overlaid(name: SpecName) -> dict[str, Any]:
    return apply_overlay(name, load_raw_spec(name))


# --- the overlay ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One change to the object at ``pointer`` (a JSON pointer), with its precondition.

    ``set``: ``key`` must be absent; it is set to ``value``.
    ``delete``: ``key`` must hold exactly ``value``; it is removed.
    ``rename``: ``key`` must be present and ``value`` (the new key) absent; the entry moves.
    """

    pointer: str
    op: Literal["set", "delete", "rename"]
    key: str
    value: Any = None

    def changed_pointers(self) -> tuple[str, ...]:
        """The JSON pointers whose value this edit changes."""
        if self.op == "rename":
            return (f"{self.pointer}/{escape(self.key)}", f"{self.pointer}/{escape(self.value)}")
        return (f"{self.pointer}/{escape(self.key)}",)


@dataclass(frozen=True)
class Correction:
    """How one ERRATA row is honoured; ``edits`` is None when no overlay edit is needed."""

    spec_label: str
    place: str
    spec: SpecName
    summary: str
    edits: Callable[[Mapping[str, Any]], list[Edit]] | None = None


class OverlayError(RuntimeError):
    """An overlay edit does not fit the document (the vendored spec changed)."""


def escape(token: str) -> str:
    """One JSON-pointer reference token."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    """The key a JSON-pointer reference token names."""
    return token.replace("~1", "/").replace("~0", "~")


def pointer_tokens(pointer: str) -> list[str]:
    """The keys of a JSON pointer such as ``/paths/~1persons/get``."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"not a JSON pointer: {pointer!r}")
    return [unescape(token) for token in pointer[1:].split("/")]


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` in ``document``."""
    node = document
    for token in pointer_tokens(pointer):
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _fixed(*edits: Edit) -> Callable[[Mapping[str, Any]], list[Edit]]:
    return lambda _document: list(edits)


def _v2_data(path: str, method: str, *, listing: bool) -> str:
    """The schema of ``data`` (of its items for a listing) in a v2 200 response."""
    base = (
        f"/paths/{escape(path)}/{method}/responses/200/content/application~1json"
        "/schema/allOf/1/properties/data"
    )
    return f"{base}/items" if listing else base


def _nullable(schema_pointer: str, *properties: str) -> list[Edit]:
    return [
        Edit(f"{schema_pointer}/properties/{name}", "set", "nullable", True) for name in properties
    ]


# Every v2 response that carries deal or person objects (listings, one, created, updated).
_DEAL_SCHEMAS = (
    _v2_data("/deals", "get", listing=True),
    _v2_data("/deals/archived", "get", listing=True),
    _v2_data("/deals/{id}", "get", listing=False),
    _v2_data("/deals", "post", listing=False),
    _v2_data("/deals/{id}", "patch", listing=False),
)
_PERSON_SCHEMAS = (
    _v2_data("/persons", "get", listing=True),
    _v2_data("/persons/{id}", "get", listing=False),
    _v2_data("/persons", "post", listing=False),
    _v2_data("/persons/{id}", "patch", listing=False),
)
_NEXT_CURSORS = tuple(
    f"/paths/{escape(path)}/get/responses/200/content/application~1json/schema/allOf/1"
    "/properties/additional_data/properties/next_cursor"
    for path in ("/persons", "/deals")
)


def _brevo_empty_204s(document: Mapping[str, Any]) -> list[Edit]:
    edits = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            response = operation.get("responses", {}).get("204")
            if isinstance(response, dict) and response.get("content") == {}:
                pointer = f"/paths/{escape(path)}/{method}/responses/204"
                edits.append(Edit(pointer, "delete", "content", {}))
    return edits


def _pipedrive_401_error_info(document: Mapping[str, Any]) -> list[Edit]:
    edits = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            response = operation.get("responses", {}).get("401")
            schema = (
                (response or {}).get("content", {}).get("application/json", {}).get("schema", {})
            )
            if schema.get("title") == "unathorizedResponse":
                pointer = (
                    f"/paths/{escape(path)}/{method}/responses/401/content/application~1json"
                    "/schema/properties"
                )
                edits.append(Edit(pointer, "set", "error_info", {"type": "string"}))
    return edits


def _required_own_key(*branches: tuple[str, str]) -> list[Edit]:
    return [
        Edit(f"/components/schemas/{schema}", "set", "required", [key]) for schema, key in branches
    ]


_CONTACT_INFO = "/components/schemas/postContactInfo/properties/contacts/properties"

CORRECTIONS: tuple[Correction, ...] = (
    Correction(
        "Pipedrive v2",
        "`additional_data.next_cursor` on list endpoints (`/persons`, `/deals`)",
        "pipedrive-v2",
        "next_cursor of GET /persons and GET /deals is nullable",
        _fixed(*(Edit(p, "set", "nullable", True) for p in _NEXT_CURSORS)),
    ),
    Correction(
        "Pipedrive v2",
        "deal `person_id`, person `last_name`, `org_id`",
        "pipedrive-v2",
        "person_id and org_id of deals, last_name and org_id of persons, in every response "
        "that returns them, are nullable",
        _fixed(
            *(e for s in _DEAL_SCHEMAS for e in _nullable(s, "person_id", "org_id")),
            *(e for s in _PERSON_SCHEMAS for e in _nullable(s, "last_name", "org_id")),
        ),
    ),
    Correction(
        "Pipedrive v1",
        "the 401 answer `unathorizedResponse` (`/webhooks`, `/users/...`)",
        "pipedrive-v1",
        "every unathorizedResponse 401 schema gains the string property error_info",
        _pipedrive_401_error_info,
    ),
    Correction(
        "Brevo v3",
        "request bodies of `POST /contacts/lists/{listId}/contacts/add` and `/remove`",
        "brevo",
        "each oneOf branch schema of the add/remove bodies requires its own key",
        _fixed(
            *_required_own_key(
                ("addContactToListByEmails", "emails"),
                ("addContactToListByIDs", "ids"),
                ("addContactToListByExtIDs", "extIds"),
                ("removeContactFromListByEmails", "emails"),
                ("removeContactFromListByIDs", "ids"),
                ("removeContactFromListByAll", "all"),
                ("removeContactFromListByExtIDs", "extIds"),
            )
        ),
    ),
    Correction(
        "Brevo v3",
        "`postContactInfo.contacts.success` / `failure`",
        "brevo",
        "contacts.success and contacts.failure are anyOf, not oneOf",
        _fixed(
            Edit(f"{_CONTACT_INFO}/success", "rename", "oneOf", "anyOf"),
            Edit(f"{_CONTACT_INFO}/failure", "rename", "oneOf", "anyOf"),
        ),
    ),
    Correction(
        "Brevo v3",
        "`postContactInfo.contacts.success` / `failure` string items",
        "brevo",
        "the string items of success and failure lose `format: email` (extIds are strings too)",
        _fixed(
            # After the anyOf correction above: edits apply in the order of CORRECTIONS.
            Edit(f"{_CONTACT_INFO}/success/anyOf/0/items", "delete", "format", "email"),
            Edit(f"{_CONTACT_INFO}/failure/anyOf/0/items", "delete", "format", "email"),
        ),
    ),
    Correction(
        "Brevo v3",
        "204 responses",
        "brevo",
        "every 204 response declaring `content: {}` loses it (no body)",
        _brevo_empty_204s,
    ),
    Correction(
        "Brevo v3",
        "the YAML file",
        "brevo",
        "loader rule, not an edit: no timestamp resolution (see _SpecLoader)",
    ),
    Correction(
        "Brevo v3",
        "`GET /processes/{processId}`",
        "brevo",
        "a design note (confirm imports by reading the list back): nothing to patch",
    ),
    Correction(
        "Brevo v3",
        "response codes written unquoted (`201:`, `204:`...)",
        "brevo",
        "loader rule, not an edit: integer mapping keys read back as text (see _SpecLoader)",
    ),
    Correction(
        "Brevo v3",
        "`maximum: 1E+2` and `5E+1` in the sender and email-campaign schemas",
        "brevo",
        "nothing to patch: unused operations; the whole-document check accepts exactly these",
    ),
)

OVERLAY: tuple[Correction, ...] = tuple(c for c in CORRECTIONS if c.edits is not None)


def overlay_edits(name: SpecName, document: Mapping[str, Any]) -> Iterator[tuple[Correction, Edit]]:
    """Each overlay edit for spec ``name``, with the correction it belongs to."""
    for correction in OVERLAY:
        if correction.spec == name and correction.edits is not None:
            for edit in correction.edits(document):
                yield correction, edit


class _CopyOnWrite:
    """Edits a document without touching it: copies only the containers on edited paths."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.root = dict(document)
        self._owned = {id(self.root)}

    def own(self, pointer: str) -> Any:
        node: Any = self.root
        for token in pointer_tokens(pointer):
            key: Any = int(token) if isinstance(node, list) else token
            child = node[key]
            if not isinstance(child, dict | list):
                raise OverlayError(f"{pointer}: {token!r} is not an object or array")
            if id(child) not in self._owned:
                child = copy.copy(child)
                node[key] = child
                self._owned.add(id(child))
            node = child
        return node


def apply_overlay(name: SpecName, document: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with the overlay of spec ``name``; ``document`` is unchanged."""
    editor = _CopyOnWrite(document)
    for correction, edit in overlay_edits(name, document):
        try:
            _apply(editor.own(edit.pointer), edit)
        except (KeyError, IndexError, OverlayError) as exc:
            raise OverlayError(f"{correction.place}: {edit}: {exc}") from exc
    return editor.root


def _apply(node: Any, edit: Edit) -> None:
    if not isinstance(node, dict):
        raise OverlayError("the target is not an object")
    if edit.op == "set":
        if edit.key in node:
            raise OverlayError(f"{edit.key!r} is already set")
        node[edit.key] = copy.deepcopy(edit.value)
    elif edit.op == "delete":
        if edit.key not in node or node[edit.key] != edit.value:
            raise OverlayError(f"{edit.key!r} is not {edit.value!r}")
        del node[edit.key]
    else:
        if edit.key not in node or edit.value in node:
            raise OverlayError(f"cannot rename {edit.key!r} to {edit.value!r}")
        node[edit.value] = node.pop(edit.key)


def spec_prefixes() -> Sequence[tuple[str, SpecName]]:
    """(path prefix, spec) pairs, longest prefix first."""
    pairs = [(f.prefix, name) for name, f in SPEC_FILES.items()]
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)
