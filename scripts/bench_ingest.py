"""Benchmark of webhook intake: ``POST /webhooks/pipedrive`` under load, beside a bare route.

Two servers run side by side in one run, each in its own process on loopback, with the
same uvicorn settings as ``pbsync web`` (``cmd_web``: one process, ``log_config=None``,
``proxy_headers=False``, ``server_header=False``, uvicorn's default loop and its h11
protocol with the request-head deadline of ``service.http_deadlines``, no WebSocket; the
header line names them):

- the service, started as in production (``pbsync web``) with its environment pointing at
  a temporary directory (database migrated at start, ``LOG_LEVEL=WARNING`` so logging
  stays out of the measurement). No worker is started: only intake is measured, and every
  stored delivery stays pending in the inbox (the drain hint the web enqueues, if any,
  lands in the queue file and waits there);
- a bare route: a Starlette app of this script with one ``POST`` route that reads the body
  and answers 200 (``--serve-bare PORT``, a sub-mode of this script).

The load comes from several generator processes (``--generators``, 3) of one asyncio loop
each, with ``--connections`` (8) keep-alive HTTP/1.1 connections per process, one request
in flight per connection, written and parsed by hand on raw asyncio transports so that the
generators stay cheap next to the servers. Every request is the same kind of v2
delivery (``meta.entity`` person, ``meta.action`` change, a unique uuid4 ``meta.id``, so
no delivery is a duplicate) with the service's HTTP Basic credentials and
``Content-Type: application/json``; the bare route gets the very same requests.

Phases, each ``--duration`` seconds (10) after a 1 s warm-up per server:

1. maximum rate, closed loop, against the bare route and then the service: every
   connection sends its next request as soon as the previous one is answered. Printed:
   acknowledged (HTTP 200) deliveries per second inside the window, p50, p99 and max
   latency (from the write of the request to its parsed answer), errors (other statuses,
   lost connections, no answer 10 s after the window), and the ratio service / bare;
2. open loop against the service at a fixed rate of half its measured maximum: sends are
   scheduled evenly (process g of G sends at start + (g + G k) / rate), whatever the
   answers; a send whose time has come while every connection of its process is busy
   waits for the next free one. Latency is measured both from the scheduled time (so a
   stall counts for every delivery it holds back: no coordinated omission) and from the
   actual write; an unanswered or refused delivery counts as an infinite latency.

For every phase: the CPU seconds of each generator process (``getrusage`` inside it) and
its share of the phase's wall time, the CPU seconds of each server process
(``/proc/<pid>/stat`` utime + stime, all its threads), and the whole machine's busy share
(``/proc/stat``). A generator near 100 % would mean it, not the server, set the pace.

After the runs the service is stopped (gracefully) and its ``inbox`` table counted; the
count must equal the 200 answers the service gave in all phases, warm-up included. The
tasks waiting in the queue file (the drain hints) are counted too, for information.

Targets (a verdict line each; the exit status is 1 when one is missed):

- the service acknowledges at least half as many deliveries per second as the bare route;
- p99 acknowledgement latency from the scheduled send < 50 ms in the open-loop phase;
- inbox rows = acknowledged deliveries.

The database lives in a temporary directory (``--dir`` chooses where; the file system
matters, as every acknowledged delivery is a synced commit: the header names it).
``--keep`` keeps the directory (the servers' logs are there); it is kept anyway when a run
breaks off. ``--json PATH`` also writes the figures as JSON.

Run it from the repository root:

    .venv/bin/python scripts/bench_ingest.py [--duration 10] [--generators 3]

It prints figures only; no test asserts timings.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

HOST = "127.0.0.1"
PATH = "/webhooks/pipedrive"
WEBHOOK_USER = "pipedrive"
RATIO_TARGET = 0.5  # service ack/s at least this share of the bare route's
P99_TARGET_MS = 50.0  # at OPEN_LOOP_SHARE of the service's maximum
OPEN_LOOP_SHARE = 0.5
WARM_UP_SECONDS = 1.0
GRACE_SECONDS = 10.0  # answers awaited after a window; later ones count as failures
LEAD_SECONDS = 1.0  # between handing out a phase and its start: time to connect
SERVICE_LOG_LEVEL = "WARNING"
# Every variable service/config.py reads, cleared from the inherited environment.
SERVICE_VARIABLE_PREFIXES = (
    "ADMIN_",
    "REQUEST_",
    "PIPEDRIVE_",
    "BREVO_",
    "WEBHOOK_",
    "DATABASE_URL",
    "QUEUE_URL",
    "PUBLIC_URL",
    "TRUSTED_PROXIES",
    "SYNC_COALESCE_SECONDS",
    "FILTER_REFRESH_SECONDS",
    "FULL_RESYNC_SECONDS",
    "REMOVAL_BRAKE_",
    "JOB_STALE_SECONDS",
    "SESSION_CLEANUP_SECONDS",
    "LOG_LEVEL",
)

T = TypeVar("T")


# --- the generator processes -----------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What one generator process does in one phase (sent to it as a dict)."""

    phase: str
    port: int
    mode: str  # "closed": as fast as answered; "open": on a fixed schedule
    connections: int
    start: float  # time.monotonic() of the window's start (one clock for all processes)
    duration: float
    rate: float  # "open": this process's sends per second
    offset: float  # "open": seconds from start to this process's first send
    authorization: str  # the Authorization header's value
    prefix: str  # makes this process's emails unique


@dataclass
class Tally:
    """What one generator process saw in one phase (sent back as a dict)."""

    sent: int = 0
    ok: int = 0  # 200 answers, whenever they came
    ok_in_window: int = 0  # 200 answers that came inside the window
    statuses: dict[int, int] = field(default_factory=dict)  # answers other than 200
    failures: int = 0  # lost connections, no answer within the grace period
    unsent: int = 0  # "open": due sends still waiting for a connection after the grace
    outcomes: dict[str, int] = field(default_factory=dict)  # the service's "status" field
    latency: list[float] = field(default_factory=list)  # s, write to answer, 200s only
    scheduled: list[float] = field(default_factory=list)  # s, schedule to answer ("open")
    max_lag: float = 0.0  # "open": longest wait of a due send for a free connection
    cpu: float = 0.0  # CPU seconds of the process during the phase
    wall: float = 0.0  # seconds from the start to the last answer or give-up
    late_start: float = 0.0  # seconds the process started after the window's start


class Lost(Exception):
    """The connection closed before the answer was complete."""


def parse_answer(buffer: bytearray) -> tuple[int, bytes, int, bool] | None:
    """The status, body, bytes used and whether the server closes, of the first complete
    HTTP/1.1 answer in ``buffer``; None while incomplete. Only Content-Length bodies (the
    only kind uvicorn sends for a Starlette ``Response``)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise Lost("an answer without Content-Length")
    stop = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
    used = end + 4 + length
    if len(buffer) < used:
        return None
    return status, bytes(buffer[end + 4 : used]), used, b"\r\nconnection: close" in head


class Client(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (always a TCP one here)."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Complete the waiting request once its whole answer is in."""
        self.buffer += data
        try:
            answer = parse_answer(self.buffer)
        except (Lost, ValueError) as exc:
            self._fail(Lost(str(exc)))
            if self.transport is not None:
                self.transport.close()
            return
        if answer is None:
            return
        status, body, used, close = answer
        del self.buffer[:used]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))
        if close and self.transport is not None:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the waiting request, if any."""
        self.closed = True
        self._fail(Lost("connection lost"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write ``request``; the future is its status and body."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        """Close the connection; a waiting request fails."""
        if self.transport is not None:
            self.transport.close()
        self._fail(Lost("closed by the generator"))


async def connect(port: int) -> Client:
    """A new connection to the server on ``port`` (asyncio sets TCP_NODELAY)."""
    _, client = await asyncio.get_running_loop().create_connection(Client, HOST, port)
    return client


BODY = (
    '{"data":{"id":%(id)d,"first_name":"Bench","last_name":"Person %(id)d",'
    '"name":"Bench Person %(id)d","emails":[{"label":"work","value":"%(email)s",'
    '"primary":true}],"org_id":null,"owner_id":1,"visible_to":"3",'
    '"update_time":"%(time)s"},'
    '"previous":{"last_name":"Person"},'
    '"meta":{"action":"change","entity":"person","entity_id":"%(id)d","id":"%(event)s",'
    '"timestamp":"%(time)s","version":"2.0","type":"general","attempt":1,'
    '"company_id":"1","user_id":"1","webhook_id":"1","change_source":"app"}}'
)


def request_maker(job: Job) -> Callable[[], bytes]:
    """Requests for ``job``: each a v2 person change with a new uuid4 ``meta.id``."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{job.port}\r\n"
        f"Authorization: {job.authorization}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode("ascii")
    counter = itertools.count(1)

    def make() -> bytes:
        n = next(counter)
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        )
        body = (
            BODY
            % {
                "id": 1 + n % 1_000_000,
                "email": f"{job.prefix}.{n}@example.com",
                "time": stamp,
                "event": uuid.uuid4(),
            }
        ).encode("ascii")
        return b"%s%d\r\n\r\n%s" % (head, len(body), body)

    return make


def outcome_of(body: bytes) -> str:
    """The service's ``status`` field ("received", "duplicate", ...); "-" when none."""
    at = body.find(b'"status":"')
    if at < 0:
        return "-"
    stop = body.find(b'"', at + 10)
    return body[at + 10 : stop].decode("ascii", "replace")


class Runner:
    """One phase in one generator process."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.tally = Tally()
        self.make = request_maker(job)
        self.end = job.start + job.duration
        self.outcomes: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.latency = array.array("d")
        self.scheduled = array.array("d")
        self.clients: list[Client] = []
        self.giving_up = False

    async def connect(self) -> Client:
        """A new connection, closed when the phase ends."""
        client = await connect(self.job.port)
        self.clients.append(client)
        return client

    async def exchange(self, client: Client, due: float | None) -> Client:
        """Send one delivery on ``client`` and count its answer; the client to use next
        (a new one when this one was lost)."""
        tally = self.tally
        if self.giving_up:  # open loop: a due send still queued after the grace period
            tally.unsent += 1
            self.scheduled.append(math.inf)
            return client
        request = self.make()
        if client.closed:
            client = await self.connect()
        sent = time.monotonic()
        tally.sent += 1
        try:
            status, body = await client.send(request)
        except Lost:
            tally.failures += 1
            if due is not None:
                self.scheduled.append(math.inf)
            if not self.giving_up:
                with contextlib.suppress(OSError):
                    client = await self.connect()
            return client
        done = time.monotonic()
        if status != 200:
            self.statuses[status] += 1
            if due is not None:
                self.scheduled.append(math.inf)
            return client
        tally.ok += 1
        self.outcomes[outcome_of(body)] += 1
        if done <= self.end or due is not None:
            # Open loop: every scheduled send counts, however late its answer.
            tally.ok_in_window += done <= self.end
            self.latency.append(done - sent)
            if due is not None:
                self.scheduled.append(done - due)
        return client

    async def closed_loop(self, client: Client) -> None:
        """Send as soon as answered until the window ends."""
        while time.monotonic() < self.end:
            client = await self.exchange(client, None)

    async def open_loop(self, clients: list[Client]) -> None:
        """Send on the schedule; due sends queue for a free connection."""
        queue: asyncio.Queue[float | None] = asyncio.Queue()

        async def worker(client: Client) -> None:
            while (due := await queue.get()) is not None:
                self.tally.max_lag = max(self.tally.max_lag, time.monotonic() - due)
                client = await self.exchange(client, due)

        workers = [asyncio.create_task(worker(client)) for client in clients]
        interval = 1.0 / self.job.rate
        first = self.job.start + self.job.offset
        for k in itertools.count():
            due = first + k * interval
            if due >= self.end:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.put_nowait(due)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)

    async def run(self) -> Tally:
        """Connect, wait for the start, run the phase, give up on answers after the grace
        period; the tally, CPU and wall time included."""
        job = self.job
        clients = [await self.connect() for _ in range(job.connections)]
        await asyncio.sleep(max(0.0, job.start - time.monotonic()))
        started = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        main: asyncio.Future[Any]
        if job.mode == "open":
            main = asyncio.ensure_future(self.open_loop(clients))
        else:
            main = asyncio.gather(*(self.closed_loop(client) for client in clients))
        # Sending lasts the window; answers are awaited for the grace period after it.
        done, _ = await asyncio.wait([main], timeout=self.end + GRACE_SECONDS - started)
        if not done:
            self.giving_up = True
            for client in self.clients:
                client.close()
            await asyncio.wait([main])
        after = resource.getrusage(resource.RUSAGE_SELF)
        finished = time.monotonic()
        for client in self.clients:
            client.close()
        failure = main.exception()
        if failure is not None:
            raise failure
        tally = self.tally
        tally.cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        tally.wall = finished - started
        tally.late_start = started - job.start
        tally.outcomes = dict(self.outcomes)
        tally.statuses = dict(self.statuses)
        tally.latency = self.latency.tolist()
        tally.scheduled = self.scheduled.tolist()
        return tally


def generator_main(index: int, pipe: multiprocessing.connection.Connection) -> None:
    """A generator process: run each job received on ``pipe``, answer with its tally
    (or ``{"error": ...}``); stop on None or when the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops us
    while True:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        try:
            tally = asyncio.run(Runner(Job(**message)).run())
        except Exception as exc:
            pipe.send({"error": f"generator {index}: {type(exc).__name__}: {exc}"})
        else:
            pipe.send(asdict(tally))


# --- the bare route --------------------------------------------------------------------


def uvicorn_config(app: Any, port: int) -> Any:
    """``cmd_web``'s uvicorn settings (service/cli.py), for the bare route."""
    import uvicorn

    from service.http_deadlines import DEFAULT_HEAD_TIMEOUT, head_deadline_protocol

    return uvicorn.Config(
        app,
        host=HOST,
        port=port,
        http=head_deadline_protocol(DEFAULT_HEAD_TIMEOUT),
        ws="none",
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=20,
    )


def serve_bare(port: int) -> None:
    """Serve the bare route on ``port`` until SIGINT or SIGTERM."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def acknowledge(request: Request) -> Response:
        await request.body()
        return Response(status_code=200)

    app = Starlette(routes=[Route(PATH, acknowledge, methods=["POST"])])
    uvicorn.Server(uvicorn_config(app, port)).run()


# --- processes and measurements of the main process -----------------------------------


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.1
) -> T:
    """Poll ``check()`` until truthy; ``RuntimeError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


def http_status(port: int, request: bytes) -> int | None:
    """The status of the answer to ``request`` on ``port``; None when nothing answers."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(request)
            buffer = bytearray()
            while (answer := parse_answer(buffer)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                buffer += chunk
            return answer[0]
    except (OSError, Lost, ValueError):
        return None


def service_env(work: Path, port: int, password: str) -> dict[str, str]:
    """The environment of ``pbsync web``: files under ``work``, quiet logging."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(SERVICE_VARIABLE_PREFIXES)
    }
    env.update(
        ADMIN_PASSWORD="bench-" + secrets.token_hex(12),
        WEBHOOK_USER=WEBHOOK_USER,
        WEBHOOK_PASSWORD=password,
        DATABASE_URL=f"sqlite:///{work / 'app.db'}",
        QUEUE_URL=f"sqlite:///{work / 'queue.db'}",
        HOST=HOST,
        PORT=str(port),
        LOG_LEVEL=SERVICE_LOG_LEVEL,
        PYTHONUNBUFFERED="1",
    )
    return env


def pbsync_command() -> list[str]:
    """``pbsync`` of this interpreter's environment (the production entry point)."""
    script = Path(sys.executable).with_name("pbsync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def launch(command: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (Ctrl-C reaches us only), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(command),
            env=env,
            cwd=log.parent,  # no .env of the repository is read
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of process ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float, float]:
    """Seconds of all cores so far: total, busy (neither idle, iowait nor steal), steal."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(values[:8])  # guest time is already inside user and nice
    steal = values[7] if len(values) > 7 else 0
    busy = total - values[3] - values[4] - steal
    return total / ticks, busy / ticks, steal / ticks


def file_system(path: Path) -> str:
    """The type and device of the mount holding ``path``."""
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        if str(path).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best[0]):
            best = (mount, kind, device)
    return f"{best[1]} ({best[2]} on {best[0]})"


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p`` percentile of sorted ``values``; nan when empty."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def ms(seconds: float) -> str:
    """Milliseconds, or "inf" / "-"."""
    if math.isnan(seconds):
        return "-"
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.1f}"


class Generators:
    """The generator processes and their pipes."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.processes: list[Any] = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=generator_main, args=(index, theirs), name=f"generator-{index}"
            )
            process.daemon = True
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)

    def send(self, jobs: list[Job]) -> None:
        """Hand out ``jobs``, one per process."""
        for pipe, job in zip(self.pipes, jobs, strict=True):
            pipe.send(asdict(job))

    def collect(self, timeout: float) -> list[Tally]:
        """The tallies of the jobs handed out, in process order."""
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(self.pipes):
            left = deadline - time.monotonic()
            waiting = [p for i, p in enumerate(self.pipes) if i not in answers]
            ready = multiprocessing.connection.wait(waiting, timeout=max(0.0, left))
            if not ready:
                raise RuntimeError(f"the generators did not report within {timeout:.0f} s")
            for pipe in ready:
                assert isinstance(pipe, multiprocessing.connection.Connection)
                try:
                    answers[self.pipes.index(pipe)] = pipe.recv()
                except EOFError as exc:
                    raise RuntimeError("a generator process died") from exc
        errors = [a["error"] for a in answers.values() if "error" in a]
        if errors:
            raise RuntimeError("; ".join(errors))
        return [Tally(**answers[i]) for i in range(len(self.pipes))]

    def close(self, abort: bool = False) -> None:
        """Stop every generator process: at once when ``abort``, else after its job."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(0 if abort else 5)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()


# --- phases ----------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase against one server, every generator's tally merged."""

    name: str
    target: str
    mode: str
    duration: float
    rate: float  # open loop: the scheduled total rate
    tallies: list[Tally]
    server_cpu: float
    server_wall: float
    machine_busy: float  # share of all cores
    machine_steal: float
    latency: list[float] = field(default_factory=list)  # sorted
    scheduled: list[float] = field(default_factory=list)  # sorted

    def __post_init__(self) -> None:
        self.latency = sorted(x for t in self.tallies for x in t.latency)
        self.scheduled = sorted(x for t in self.tallies for x in t.scheduled)

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.tallies)

    @property
    def ok(self) -> int:
        return sum(t.ok for t in self.tallies)

    @property
    def ok_per_second(self) -> float:
        return sum(t.ok_in_window for t in self.tallies) / self.duration

    @property
    def errors(self) -> int:
        return sum(t.failures + t.unsent + sum(t.statuses.values()) for t in self.tallies)

    def error_text(self) -> str:
        statuses: Counter[int] = Counter()
        for t in self.tallies:
            statuses.update({int(k): v for k, v in t.statuses.items()})
        parts = [f"{n} x {status}" for status, n in sorted(statuses.items())]
        failures = sum(t.failures for t in self.tallies)
        if failures:
            parts.append(f"{failures} lost or unanswered")
        unsent = sum(t.unsent for t in self.tallies)
        if unsent:
            parts.append(f"{unsent} never sent (no free connection in time)")
        return ", ".join(parts) or "none"

    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for t in self.tallies:
            total.update(t.outcomes)
        return total

    def generator_text(self) -> str:
        parts = [f"{t.cpu:.2f} s ({t.cpu / t.wall:.0%})" for t in self.tallies if t.wall > 0]
        late = max((t.late_start for t in self.tallies), default=0.0)
        text = ", ".join(parts)
        return text + (f"; started up to {late * 1000:.0f} ms late" if late > 0.05 else "")

    def cpu_text(self) -> str:
        return (
            f"server {self.server_cpu:.2f} s ({self.server_cpu / self.server_wall:.0%});"
            f" generators {self.generator_text()};"
            f" machine busy {self.machine_busy:.0%} of {os.cpu_count()} cores"
            + (f" (steal {self.machine_steal:.0%})" if self.machine_steal >= 0.005 else "")
        )

    def summary(self) -> dict[str, Any]:
        """The figures, for ``--json``."""
        data: dict[str, Any] = {
            "name": self.name,
            "target": self.target,
            "mode": self.mode,
            "duration_s": self.duration,
            "sent": self.sent,
            "acknowledged": self.ok,
            "acknowledged_per_s": self.ok_per_second,
            "errors": self.errors,
            "latency_ms": {
                "p50": percentile(self.latency, 50) * 1000,
                "p99": percentile(self.latency, 99) * 1000,
                "max": (self.latency[-1] if self.latency else math.nan) * 1000,
            },
            "outcomes": dict(self.outcomes()),
            "server_cpu_s": self.server_cpu,
            "server_wall_s": self.server_wall,
            "generator_cpu_s": [t.cpu for t in self.tallies],
            "generator_wall_s": [t.wall for t in self.tallies],
            "machine_busy": self.machine_busy,
        }
        if self.mode == "open":
            data["rate_per_s"] = self.rate
            data["from_schedule_ms"] = {
                "p50": percentile(self.scheduled, 50) * 1000,
                "p99": percentile(self.scheduled, 99) * 1000,
                "max": (self.scheduled[-1] if self.scheduled else math.nan) * 1000,
            }
            data["max_send_lag_ms"] = max(t.max_lag for t in self.tallies) * 1000
        return data


@dataclass
class Bench:
    """The servers and generators of one run."""

    work: Path
    generators: Generators
    connections: int
    authorization: str
    servers: dict[str, subprocess.Popen[bytes]]
    ports: dict[str, int]

    def phase(self, name: str, target: str, mode: str, duration: float, rate: float = 0.0) -> Phase:
        """Run one phase against ``target`` ("bare" or "service")."""
        count = len(self.generators.pipes)
        start = time.monotonic() + LEAD_SECONDS
        jobs = [
            Job(
                phase=name,
                port=self.ports[target],
                mode=mode,
                connections=self.connections,
                start=start,
                duration=duration,
                rate=rate / count,
                offset=index / rate if rate > 0 else 0.0,
                authorization=self.authorization,
                prefix=f"bench-{index}-{secrets.token_hex(4)}",
            )
            for index in range(count)
        ]
        pid = self.servers[target].pid
        self.generators.send(jobs)
        time.sleep(max(0.0, start - time.monotonic()))
        cpu0, machine0, wall0 = process_cpu(pid), machine_cpu(), time.monotonic()
        results = self.generators.collect(duration + GRACE_SECONDS + 60)
        cpu1, machine1, wall1 = process_cpu(pid), machine_cpu(), time.monotonic()
        total = machine1[0] - machine0[0]
        return Phase(
            name=name,
            target=target,
            mode=mode,
            duration=duration,
            rate=rate,
            tallies=results,
            server_cpu=cpu1 - cpu0,
            server_wall=wall1 - wall0,
            machine_busy=(machine1[1] - machine0[1]) / total if total > 0 else math.nan,
            machine_steal=(machine1[2] - machine0[2]) / total if total > 0 else math.nan,
        )


def start_servers(
    work: Path, password: str, servers: dict[str, subprocess.Popen[bytes]]
) -> dict[str, int]:
    """Start the service and the bare route into ``servers`` (filled as they start, so the
    caller can stop them whatever happens); their ports, once both answer."""
    ports = {"service": free_port(), "bare": free_port()}
    env = service_env(work, ports["service"], password)
    servers["service"] = launch(pbsync_command() + ["web"], env, work / "web.log")
    bare_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    bare_env["PYTHONUNBUFFERED"] = "1"
    servers["bare"] = launch(
        [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(ports["bare"])],
        bare_env,
        work / "bare.log",
    )
    probes = {
        "service": f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        "bare": f"POST {PATH} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n".encode(),
    }
    for name, process in servers.items():

        def ready(name: str = name, process: subprocess.Popen[bytes] = process) -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the {name} server exited; see {work}")
            return http_status(ports[name], probes[name]) == 200

        wait_until(f"the {name} server answers", ready, 60)
    return ports


def inbox_counts(database: Path) -> Counter[str]:
    """Rows of the service's inbox by status."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT status, COUNT(*) FROM inbox GROUP BY status").fetchall()
    return Counter({str(status): int(n) for status, n in rows})


def queue_text(queue: Path) -> str:
    """What waits in the huey queue file: the web's drain hints (no worker takes them)."""
    if not queue.exists():
        return "no queue file: the web enqueued nothing"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{queue}?mode=ro", uri=True)) as db:
            counts = {
                table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("task", "schedule")
            }
    except sqlite3.Error as exc:
        return f"queue file unreadable: {exc}"
    return (
        f"{counts['task']} tasks and {counts['schedule']} scheduled ones wait in the queue"
        " (the web's drain hints; no worker runs)"
    )


# --- output ------------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """``value`` with every nan or infinite float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def implementation() -> str:
    """uvicorn's version, the loop its "auto" picks here, and the HTTP protocol."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn {importlib.metadata.version('uvicorn')} (loop {loop}, http h11 with deadline)"


def latency_cells(values: Sequence[float]) -> str:
    return (
        f"{ms(percentile(values, 50)):>7} {ms(percentile(values, 99)):>7}"
        f" {ms(values[-1] if values else math.nan):>7}"
    )


def max_rate_table(phases: Sequence[Phase]) -> list[str]:
    lines = [f"{'target':<8} {'ack/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  errors"]
    for phase in phases:
        lines.append(
            f"{phase.target:<8} {phase.ok_per_second:>8.0f} {latency_cells(phase.latency)}"
            f"  {phase.error_text()}"
        )
    for phase in phases:
        lines.append(f"  {phase.target} CPU: {phase.cpu_text()}")
    return lines


def open_loop_lines(phase: Phase) -> list[str]:
    lag = max(t.max_lag for t in phase.tallies)
    return [
        f"scheduled {len(phase.scheduled)} deliveries at {phase.rate:.0f}/s:"
        f" {phase.ok} acknowledged ({phase.ok_per_second:.0f}/s inside the window),"
        f" errors: {phase.error_text()}",
        f"{'latency from':<16} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}",
        f"{'scheduled send':<16} {latency_cells(phase.scheduled)}",
        f"{'actual send':<16} {latency_cells(phase.latency)}",
        f"longest wait of a due send for a free connection: {lag * 1000:.1f} ms",
        f"CPU: {phase.cpu_text()}",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every target is met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--generators", type=int, default=3, help="generator processes")
    parser.add_argument("--connections", type=int, default=8, help="per generator process")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary dir goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    if args.duration <= 0 or args.generators < 1 or args.connections < 1:
        parser.error("--duration, --generators and --connections must be positive")

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.dir)).resolve()
    password = secrets.token_hex(16)
    token = base64.b64encode(f"{WEBHOOK_USER}:{password}".encode()).decode("ascii")
    generators: Generators | None = None
    servers: dict[str, subprocess.Popen[bytes]] = {}
    keep = args.keep
    broke = True  # until the run ends normally
    met: list[tuple[bool, str]] = []
    report: dict[str, Any] = {}
    try:
        generators = Generators(args.generators)
        ports = start_servers(work, password, servers)
        bench = Bench(work, generators, args.connections, f"Basic {token}", servers, ports)
        print(
            f"{implementation()}, one process per server, Python"
            f" {sys.version.split()[0]}, {os.cpu_count()} cores"
        )
        print(
            f"service: pbsync web, LOG_LEVEL={SERVICE_LOG_LEVEL}, no worker (deliveries"
            f" stay pending), database on {file_system(work)}"
        )
        print(
            f"load: {args.generators} generator processes x {args.connections} keep-alive"
            f" connections, {args.duration:g} s per phase after {WARM_UP_SECONDS:g} s of"
            " warm-up per server",
            flush=True,
        )
        phases: list[Phase] = []
        for target in ("bare", "service"):
            phases.append(bench.phase(f"warm-up {target}", target, "closed", WARM_UP_SECONDS))
            phases.append(bench.phase(f"max {target}", target, "closed", args.duration))
            print(f"  {target}: {phases[-1].ok_per_second:.0f} ack/s", flush=True)
        bare, service = phases[1], phases[3]
        print()
        print(f"1. maximum rate, closed loop, {args.duration:g} s per server")
        for line in max_rate_table([bare, service]):
            print(line)
        ratio = service.ok_per_second / bare.ok_per_second if bare.ok_per_second else 0.0
        print(f"ratio service / bare: {ratio:.2f}")
        outcomes = service.outcomes()
        if set(outcomes) - {"received"}:
            print(f"  the service's answers: {dict(outcomes)}")
        met.append(
            (
                ratio >= RATIO_TARGET,
                f"service {service.ok_per_second:.0f} ack/s >= {RATIO_TARGET:g} x bare route"
                f" {bare.ok_per_second:.0f} ack/s (ratio {ratio:.2f})",
            )
        )

        rate = OPEN_LOOP_SHARE * service.ok_per_second
        print()
        print(f"2. open loop against the service at {OPEN_LOOP_SHARE:g} x its maximum")
        if rate > 0:
            open_phase = bench.phase("open service", "service", "open", args.duration, rate)
            phases.append(open_phase)
            for line in open_loop_lines(open_phase):
                print(line)
            p99 = percentile(open_phase.scheduled, 99)
            met.append(
                (
                    p99 * 1000 < P99_TARGET_MS,
                    f"p99 acknowledgement latency {ms(p99)} ms < {P99_TARGET_MS:g} ms at"
                    f" {rate:.0f}/s (open loop, from the scheduled send)",
                )
            )
        else:
            print("skipped: the service acknowledged nothing")
            met.append((False, "p99 at half the maximum rate: no maximum rate measured"))

        stop(servers["service"])
        acked = {p.name: p.ok for p in phases if p.target == "service"}
        total = sum(acked.values())
        rows = inbox_counts(work / "app.db")
        count = sum(rows.values())
        print()
        parts = " + ".join(f"{n} {name}" for name, n in acked.items())
        print(f"3. inbox: {count} rows ({dict(rows)}); 200 answers: {total} = {parts}")
        print(queue_text(work / "queue.db"))
        relation = "=" if count == total else "!="
        met.append((count == total, f"inbox rows {count} {relation} acknowledged {total}"))
        report = {
            "phases": [p.summary() for p in phases],
            "ratio": ratio,
            "open_loop_rate_per_s": rate,
            "inbox_rows": dict(rows),
            "acknowledged": total,
        }
        broke = False
    except (RuntimeError, OSError, sqlite3.Error) as exc:
        met.append((False, f"the run broke off: {exc}"))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        met.append((False, "interrupted"))
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        if generators is not None:
            generators.close(abort=broke)
        for process in servers.values():
            stop(process)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if keep or broke:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    for ok, text in met:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.json is not None:
        report["verdicts"] = [{"met": ok, "text": text} for ok, text in met]
        args.json.write_text(json.dumps(finite(report), indent=2) + "\n")
    return 0 if met and all(ok for ok, _ in met) else 1


if __name__ == "__main__":
    sys.exit(main())
