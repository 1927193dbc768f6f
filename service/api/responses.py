"""JSON responses that show every invisible or control character as an escape.

Names, error messages and notes come from Pipedrive, Brevo and webhook deliveries, and may
hold bidi overrides, zero-width characters, byte order marks or lone surrogates. JSON allows
most of them raw, where they can reorder or hide text in whatever shows the answer (a
terminal, a log viewer); a lone surrogate cannot be encoded as UTF-8 at all, which would make
rendering fail. So every character ``str.isprintable`` refuses is written as its ``\\uXXXX``
escape: the parsed value is unchanged, and readable letters such as "ü" stay as they are.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


def _escape(char: str) -> str:
    # ensure_ascii writes the escape, as a surrogate pair above U+FFFF.
    return json.dumps(char)[1:-1]


def render_json(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON with non-printable characters escaped."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # Outside strings compact JSON has no whitespace, so only string content is escaped.
    if not text.isprintable():
        text = "".join(char if char.isprintable() else _escape(char) for char in text)
    return text.encode("utf-8")


class JsonResponse(JSONResponse):
    """A ``JSONResponse`` rendered by ``render_json``."""

    def render(self, content: Any) -> bytes:
        """The body bytes."""
        return render_json(content)
