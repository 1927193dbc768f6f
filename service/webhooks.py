"""Pipedrive webhook bodies: parsing them safely and telling what each delivery is about.

``parse_body`` turns the raw bytes into a JSON object or raises ``BadBody`` (a 400: not
UTF-8, not JSON, not an object, nested too deep). ``classify`` then reads a v1 or v2
delivery (``reference/pipedrive-api.md`` section 1) into a ``Delivery``: its dedupe key,
object, action, entity id and time, and whether the sync needs it (``pending``) or not
(``ignored``, with the reason). ``classify`` never raises: valid JSON that is not what we
expect is stored as ignored and answered 200, so strictness cannot get the webhook banned.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

MAX_DEPTH = 64

# The objects the sync follows. Persons and deals are members of filters; organizations
# appear in filter conditions (a person can enter a filter because its organization
# changed); "filter" is what DESIGN section 6 turns into a filter refresh (Pipedrive sends
# no such event today, but a delivery naming it must not be dropped).
USED_OBJECTS = frozenset({"person", "deal", "organization", "filter"})
V2_ACTIONS = frozenset({"create", "change", "delete"})
V1_ACTIONS = frozenset({"added", "updated", "deleted", "merged"})
# A v1 action in v2's words, for the drain (v1 "merged" is the survivor's change).
V1_TO_V2_ACTION = {"added": "create", "updated": "change", "merged": "change", "deleted": "delete"}

_MAX_NAME = 64  # longest object or action name kept in its own column
_MAX_ID = 2**63 - 1
# A JSON string, escapes included. Unrolled, and an unterminated one runs to the end, so a
# match never fails: linear time even on a body made of escaped quotes.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # opening 2, closing 0; minus 1 each

Status = Literal["pending", "ignored"]


class BadBody(ValueError):
    """The body is not a JSON object we can read; the message says why (answered 400)."""


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery as the inbox stores it."""

    event_key: str
    version: str | None
    object: str | None
    action: str | None
    entity_id: int | None
    occurred_at: int | None
    status: Status
    reason: str | None
    payload: str


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text``, counted without recursion.

    Strings are removed first so brackets inside them do not count; on malformed JSON the
    figure may be off, which does not matter: the parser refuses such a body anyway. The
    running depth is a C-level sum of +1 and -1 steps: about 20 ms for 256 KiB of brackets.
    """
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text)).encode("ascii")
    steps = map(operator.sub, brackets.translate(_STEPS), itertools.repeat(1))
    return max(itertools.accumulate(steps), default=0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every body: ``json.loads`` with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_body(body: bytes) -> tuple[dict[str, Any], str]:
    """The JSON object in ``body`` and its text; ``BadBody`` when it is not one."""
    try:
        # RFC 8259: JSON on the wire is UTF-8 (a byte order mark is tolerated and dropped).
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadBody("the body is not valid UTF-8") from exc
    # Checked before parsing: the parser recurses, and a deep enough body would crash it.
    # A body with fewer opening brackets than the limit cannot nest deeper (the count is a
    # C-level scan, far cheaper than the exact depth, and true of every real delivery).
    if text.count("[") + text.count("{") > MAX_DEPTH and json_depth(text) > MAX_DEPTH:
        raise BadBody(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise BadBody(f"the JSON is nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise BadBody("the body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise BadBody("the body must be a JSON object")
    return value, text


def _name(value: Any) -> str | None:
    """A short object or action name, or None for anything else."""
    if isinstance(value, str) and 0 < len(value) <= _MAX_NAME and value.isprintable():
        return value
    return None


def _entity_id(value: Any) -> int | None:
    """A Pipedrive object id: a positive integer, sent as a number (v1) or a string (v2)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, int) and 0 < value <= _MAX_ID:
        return value
    return None


def _timestamp(value: Any) -> int | None:
    """Unix seconds from an epoch number or an ISO 8601 string (both occur in v2)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # 1e400 parses as infinity, which int() refuses: compare before converting.
        return int(value) if 0 < value < 10**11 else None
    if isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            seconds = int(moment.timestamp())
        except (ValueError, OverflowError):
            return None
        return seconds if moment.tzinfo is not None and 0 < seconds < 10**11 else None
    return None


def _digest(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _fallback_key(body: dict[str, Any]) -> str:
    """A key for a delivery without the fields its real key is made of: a hash of the body
    without the attempt counters, so at least its redeliveries collapse."""
    stripped = {k: v for k, v in body.items() if k != "retry"}
    meta = stripped.get("meta")
    if isinstance(meta, dict):
        stripped["meta"] = {k: v for k, v in meta.items() if k != "attempt"}
    return "body:" + _digest(stripped)


def version_of(body: dict[str, Any]) -> str | None:
    """'2', '1', or None, by the markers of ``reference/pipedrive-api.md`` section 1.3."""
    meta = body.get("meta")
    if not isinstance(meta, dict):
        return None
    if meta.get("version") == "2.0" or ("data" in body and "entity" in meta):
        return "2"
    if body.get("v") == 1 or meta.get("v") == 1 or "current" in body or "object" in meta:
        return "1"
    return None


def classify(body: dict[str, Any], payload: str) -> Delivery:
    """What the delivery ``body`` (whose text is ``payload``) is about; never raises."""
    version = version_of(body)
    if version == "2":
        return _classify_v2(body, payload)
    if version == "1":
        return _classify_v1(body, payload)
    return Delivery(
        _fallback_key(body),
        None,
        None,
        None,
        None,
        None,
        "ignored",
        "not a Pipedrive webhook delivery (neither v1 nor v2)",
        payload,
    )


def _classify_v2(body: dict[str, Any], payload: str) -> Delivery:
    meta: dict[str, Any] = body["meta"]
    raw_id = meta.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    event_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 200 else None
    # meta.id is the event's id: a redelivery (attempt 2-4) repeats it. (The docs' user
    # examples reuse the user id there; users are ignored, so such a clash costs nothing.)
    key = f"v2:{event_id}" if event_id and event_id.isprintable() else _fallback_key(body)
    return _decide(
        key,
        "2",
        _name(meta.get("entity")),
        _name(meta.get("action")),
        V2_ACTIONS,
        _entity_id(meta.get("entity_id")),
        _timestamp(meta.get("timestamp")),
        "no event id (meta.id)" if key.startswith("body:") else None,
        payload,
    )


def _classify_v1(body: dict[str, Any], payload: str) -> Delivery:
    meta: dict[str, Any] = body["meta"]
    obj = _name(meta.get("object"))
    action = _name(meta.get("action"))
    event = body.get("event")
    if (obj is None or action is None) and isinstance(event, str) and "." in event:
        # "updated.person": the same facts, in the body's "event" field.
        action = action or _name(event.split(".", 1)[0])
        obj = obj or _name(event.split(".", 1)[1])
    entity_id = _entity_id(meta.get("id"))  # in v1, meta.id is the object's id
    occurred_at = _timestamp(meta.get("timestamp"))
    # v1 carries no event id. The key names the event by what a redelivery repeats and two
    # events differ in: object, id, action, the microsecond time, and the object's states
    # (which tell apart two changes within one second when only seconds are sent). Not
    # "retry", which counts the attempts, nor "webhook_id", so that one event delivered by
    # two of our webhooks is kept once. A missed duplicate costs one idempotent re-run; a
    # false one would lose an event, so the key errs on the side of telling events apart.
    key = "v1:" + _digest(
        obj,
        meta.get("id"),
        action,
        meta.get("timestamp_micro") or meta.get("timestamp"),
        body.get("current"),
        body.get("previous"),
    )
    return _decide(key, "1", obj, action, V1_ACTIONS, entity_id, occurred_at, None, payload)


def _decide(
    key: str,
    version: str,
    obj: str | None,
    action: str | None,
    actions: frozenset[str],
    entity_id: int | None,
    occurred_at: int | None,
    missing: str | None,
    payload: str,
) -> Delivery:
    """Pending when the sync needs the delivery and it has what the drain needs."""
    field = "meta.entity" if version == "2" else "meta.object"
    id_field = "meta.entity_id" if version == "2" else "meta.id"
    reason: str | None
    if obj is None:
        reason = f"no object ({field})"
    elif obj not in USED_OBJECTS:
        reason = f"object {obj!r} is not used by the sync"
    elif missing is not None:
        reason = missing
    elif entity_id is None:
        reason = f"no entity id ({id_field})"
    elif action not in actions:
        reason = f"unknown action {action!r}" if action else "no action (meta.action)"
    else:
        reason = None
    status: Status = "pending" if reason is None else "ignored"
    return Delivery(key, version, obj, action, entity_id, occurred_at, status, reason, payload)
