"""Finding the keys of a JSON document that its schema does not declare.

A validation policy for the fakes and the clients (send and return only declared fields),
not a change to the specs: the Pipedrive schemas require nothing and allow additional
properties, so a renamed field would otherwise pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


def undeclared_keys(resolve: Callable[[Any], Any], schema: Any, instance: Any) -> list[str]:
    """Paths (``data[0].email``) of the object keys in ``instance`` its schema does not declare.

    ``resolve`` follows ``$ref``s. Schema and instance are walked together; the properties of
    ``allOf``/``anyOf``/``oneOf`` branches are merged (a key declared by any branch counts as
    declared). Objects whose schemas declare no ``properties``, or allow additional ones
    (``additionalProperties`` present and not false), are not checked for extra keys.
    """
    return KeyWalker(resolve).undeclared(schema, instance)


@dataclass
class _Shape:
    """What a set of schemas (with their branches) says about an object or array."""

    declared: dict[str, list[Any]]
    extra: list[Any]
    closed: bool
    items: list[Any]


class KeyWalker:
    """``undeclared_keys`` with a memo of the schemas it has seen (keyed by identity, so the
    schemas must stay alive and unchanged while the walker is used: the cached specs do)."""

    def __init__(self, resolve: Callable[[Any], Any]) -> None:
        self.resolve = resolve
        self._shapes: dict[tuple[int, ...], _Shape] = {}
        self._keep: list[list[Any]] = []

    def undeclared(self, schema: Any, instance: Any) -> list[str]:
        """See ``undeclared_keys``."""
        found: list[str] = []
        self._walk([schema], instance, "", found)
        return found

    def _shape(self, schemas: list[Any]) -> _Shape:
        key = tuple(map(id, schemas))
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        declared: dict[str, list[Any]] = {}
        extra: list[Any] = []
        items: list[Any] = []
        has_properties = is_open = False
        for part in self._parts(schemas):
            properties = part.get("properties")
            if isinstance(properties, dict) and properties:
                has_properties = True
                for name, sub in properties.items():
                    declared.setdefault(name, []).append(sub)
            additional = part.get("additionalProperties")
            if additional is not None and additional is not False:
                is_open = True
                if isinstance(additional, dict):
                    extra.append(additional)
            if "items" in part:
                items.append(part["items"])
        shape = _Shape(declared, extra, has_properties and not is_open, items)
        self._shapes[key] = shape
        self._keep.append(schemas)  # keeps the ids in the key from being reused
        return shape

    def _parts(self, schemas: Iterable[Any]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        seen: set[int] = set()
        stack = list(schemas)
        while stack:
            schema = self.resolve(stack.pop())
            if not isinstance(schema, dict) or id(schema) in seen:
                continue
            seen.add(id(schema))
            parts.append(schema)
            for keyword in ("allOf", "anyOf", "oneOf"):
                branches = schema.get(keyword)
                if isinstance(branches, list):
                    stack.extend(branches)
        return parts

    def _walk(self, schemas: list[Any], instance: Any, where: str, found: list[str]) -> None:
        if isinstance(instance, dict):
            shape = self._shape(schemas)
            for key, value in instance.items():
                path = f"{where}.{key}" if where else str(key)
                if key in shape.declared:
                    self._walk(shape.declared[key], value, path, found)
                elif shape.extra:
                    self._walk(shape.extra, value, path, found)
                elif shape.closed:
                    found.append(path)
        elif isinstance(instance, list):
            shape = self._shape(schemas)
            if shape.items:
                for index, value in enumerate(instance):
                    self._walk(shape.items, value, f"{where}[{index}]", found)
