"""A deadline for the request head, on uvicorn's h11 protocol: slow clients are cut off.

uvicorn (0.54, h11) arms its keep-alive timer only after a response, and any byte that
arrives cancels it; a fresh connection has no timer at all. A client that trickles its
request head a byte at a time would hold its connection forever (slowloris).
``HeadDeadlineProtocol`` is uvicorn's ``H11Protocol`` with one more timer: the complete
head of a request must arrive within ``head_timeout`` seconds of the connection's start,
or of the end of the previous response on a keep-alive connection (together with the rest
of a request body the app did not read). When it passes, a client caught in the middle of
a head gets a 408 and the connection is closed; an idle connection is closed silently, as
uvicorn's keep-alive timeout does. The body has its own deadline, at the ASGI level
(``service.body_limit``).

It relies on these internals of ``uvicorn.protocols.http.h11_impl.H11Protocol`` (read in
uvicorn 0.54): the hooks ``connection_made``, ``connection_lost``, ``handle_events`` (runs
after every read and after each response, and parses the heads) and
``on_response_complete`` (called once a response has been sent); ``self.cycle``, replaced
by a new ``RequestResponseCycle`` for every request head parsed; ``self.conn`` (the
``h11.Connection``), ``self.transport``, ``self.loop`` and ``self.client``.
``tests/test_http_deadlines.py`` runs it on a real uvicorn server, so an upgrade of uvicorn
that moves these shows there. A WebSocket upgrade hands the transport to another protocol
and is not covered: ``pbsync web`` serves no WebSocket (``ws="none"``).
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

DEFAULT_HEAD_TIMEOUT = 10.0

_TIMEOUT_BODY = json.dumps(
    {"error": "the request head did not arrive in time"}, separators=(",", ":")
).encode()
_TIMEOUT_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_TIMEOUT_BODY)).encode()),
    (b"connection", b"close"),
]


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request head is late."""

    head_timeout: float = DEFAULT_HEAD_TIMEOUT

    # The timer of the head awaited now, and the cycle that was current when it was armed:
    # the head has arrived once uvicorn has made a new cycle.
    _head_timer: asyncio.TimerHandle | None = None
    _awaited_after: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection and the deadline of its first head."""
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """Parse what arrived; a new request head met the deadline."""
        super().handle_events()
        if self._head_timer is not None and self.cycle is not self._awaited_after:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        """After a response, the next head (and any unread body before it) has a deadline."""
        answered = self.cycle
        super().on_response_complete()
        # A pipelined head already parsed by uvicorn has made a new cycle: nothing to await.
        if self.cycle is answered and not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._cancel_head_timer()
        self._awaited_after = self.cycle
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        conn = self.conn
        started, _ = conn.trailing_data
        if started and conn.their_state is h11.IDLE and conn.our_state is h11.IDLE:
            log.warning(
                "request head timed out",
                extra={
                    "client": self.client[0] if self.client else None,
                    "head_timeout_seconds": self.head_timeout,
                },
            )
            self.transport.write(_timeout_answer(conn))
        self.transport.close()


def _timeout_answer(conn: h11.Connection) -> bytes:
    """A 408 in the project's JSON error format, or nothing when h11 refuses to send one."""
    try:
        parts = [
            conn.send(
                h11.Response(status_code=408, headers=_TIMEOUT_HEADERS, reason=b"Request Timeout")
            ),
            conn.send(h11.Data(data=_TIMEOUT_BODY)),
            conn.send(h11.EndOfMessage()),
        ]
    except h11.LocalProtocolError:
        return b""
    return b"".join(part or b"" for part in parts)


def head_deadline_protocol(head_timeout: float) -> type[HeadDeadlineProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with a head deadline of
    ``head_timeout`` seconds."""

    class ConfiguredHeadDeadlineProtocol(HeadDeadlineProtocol):
        pass

    ConfiguredHeadDeadlineProtocol.head_timeout = head_timeout
    return ConfiguredHeadDeadlineProtocol
