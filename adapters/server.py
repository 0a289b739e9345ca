"""The syncref server: SpacetimeDB's client API over the reference engine, on aiohttp.

This module is I/O glue and nothing else.  The engine (``reference.engine``) decides every
outcome; the codec (``adapters.wire``/``adapters.bsatn``) turns its abstract messages into
SpacetimeDB's v2/v3 BSATN frames; ``adapters.auth`` verifies and mints JWTs.  What is left here
is the order of things:

* **One writer.**  Every engine call runs on the event loop thread, so reducers execute one at
  a time in commit order.  The group-commit writer (``reference.durability``) runs on its own
  thread; each SQLite COMMIT it finishes is handed back to the loop (``call_soon_threadsafe``),
  which advances the engine's durable offset.  When the engine is ``max_undurable``
  transactions ahead of the disk, calls wait (``_room``), never the other way round.
* **Per connection, three tasks.**  The reader decodes frames into a bounded inbound queue
  (past the bound: close 1013, as SpacetimeDB); the processor feeds that queue to the engine in
  order -- except that a frame arriving while the queue is empty and the call has room in the
  durability window is handed to the engine by the reader itself (ADR-0019: the processor is
  parked on the empty queue then, so the order is the same and the hop through a second task
  is saved); the sender pops whatever the engine has *released* (confirmed reads: only messages
  whose offset is durable) and writes frames.  A keepalive pings and drops a silent peer.
  Writing blocks on a client that does not read; meanwhile the engine's queue for it grows
  and past ``max_queue`` the engine drops it as a ``slow_consumer``.  Nobody else waits.
* **Encode once.**  Equal messages (the same update for subscribers with the same queries)
  share one encoded body and, on v2, one compressed frame (an LRU keyed by the message value);
  rows are encoded once per row object (``wire.RowCache``).
* **Before the upgrade**, in DESIGN §4's order: token (401/400), connection id (400),
  database (404), subprotocol by *server* preference v3 > v2 (400), compatibility window (426).

* **Isolation.**  No single request or client may freeze, exhaust or starve the server.  Every
  resource a client can make the server spend has a bound in :class:`Limits` and a specific
  error past it (docs/protocol.md, "Limits"): open TCP connections (:mod:`adapters.guard`) and
  WebSocket connections per identity, the time to send a request head or body, queued inbound
  messages and bytes (the v3 count is checked *while* decoding), the size of a call's arguments
  (checked before they are parsed), SQL text, statements, rows and answer bytes, query length,
  conjuncts and subscribed queries, and per connection the estimated bytes queued for it and the
  size of any one message (a snapshot no client could decode is refused, never sent).  Processors
  and senders take a bounded batch per turn and then yield, so connections are served round-robin
  and one client's load shows in its own latency first.  Text that UTF-8 cannot carry is refused
  where it enters; a transaction that fails inside the engine is rolled back and answered
  ``InternalError``/500, and the server goes on.  A token that expires closes its connections (a
  websocket token's, when the token it was traded for expires).

HTTP routes answer with SpacetimeDB's status codes (see docs/protocol.md); every error body is
a plain, specific message.  ``GET /metrics`` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import re
import secrets
import sqlite3
import struct
import sys
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, cast

import prometheus_client as prom
from aiohttp import WSMsgType, web
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from adapters import ops, ops_routes, satsjson, wire
from adapters.auth import (
    MAX_TOKEN_CHARS,
    REVOKED_JTI_FILE,
    AuthConfig,
    Authenticator,
    AuthError,
    KeyStore,
    RevocationList,
    Verified,
    identity_from_claims,
)
from adapters.bsatn import BsatnError, TooManyItems, is_column_rows
from adapters.fsutil import make_data_dir
from adapters.gcpolicy import DEFAULT_GC_FREEZE, GcPauses
from adapters.guard import (
    DESCRIPTOR_RESERVE,
    LISTEN_BACKLOG,
    ConnectionGate,
    RateLimitedLog,
    descriptor_budget,
    quiet_loop_errors,
    raise_descriptor_limit,
)
from adapters.moduledef import raw_module_def_v9
from adapters.observe import (
    COUNT_BOUNDS,
    LATENCY_BOUNDS_S,
    CommitClock,
    FastHistogram,
    SendCounts,
    StateCollector,
)
from reference.durability import (
    DamagedLog,
    GroupCommitWriter,
    LogStore,
    UncleanClose,
    restart,
    shutdown,
    snapshot_dir,
    storage_fault,
)
from reference.engine import Engine, InternalError, Read, Scan, Snapshot, limit_exceeded, safe_text
from reference.log import TxRecord
from reference.snapshot import DEFAULT_SNAPSHOT_EVERY, DEFAULT_SNAPSHOT_KEEP, Snapshotter
from spec import contracts
from spec import messages as m
from spec.compat import CompatWindow, rejection_body
from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.messages import TableRows
from spec.policy import Policy
from spec.schema import (
    DEFAULT_DATABASE,
    PROTOCOL_VERSION,
    REDUCER_BY_NAME,
    REDUCERS,
    SCHEMA_VERSION,
    SCOPES,
    TABLE_BY_NAME,
    TABLES,
    Column,
)
from spec.values import ArrayT, row_values

log = logging.getLogger("syncref.server")

SUBPROTOCOLS = ("v3.bsatn.spacetimedb", "v2.bsatn.spacetimedb")  # server preference order
CLOSE_REASON_BYTES = 123
SEND_BATCH = 64  # messages a sender writes per turn (and at most V3_SOFT_CAP bytes, or one larger message)
SEND_BATCH_V3 = 256  # v3: a turn is one frame, so a lagging subscriber's backlog goes out in few large frames
DECODE_TURN = 256  # v3 messages decoded per turn
SCAN_TURN_ROWS = 10_000  # rows a connection's reads examine before its turn ends (engine.rows_examined)
# candidate rows a one-off read (OneOffQuery, a /sql statement) builds and matches, /sql answer rows
# serialized, and OneOffQuery answer / big snapshot rows encoded (_encode_table), before the loop
# goes to others; the read answers the state it was taken at (reference.engine.Read, ADR-0038,
# ADR-0041, ADR-0043)
READ_SLICE_ROWS = 1_000
SWITCH_INTERVAL_S = 0.0001  # the writer thread retakes the lock within this behind a busy loop (Phase 6)
DELIVER_SLICE_S = 0.001  # a delivery pass hands the loop back after this long (ADR-0023) ...
DELIVER_CHECK = 16  # ... looked at every this many connections (a pass over fewer is never cut)
REVOCATION_CHECK_S = 1.0  # how often the revocation list is re-read for open connections
# an open connection's token expiry is re-checked against the wall clock at least this often, so a
# forward step of the wall clock (NTP) closes it within this of passing ``exp``, not after the step
EXPIRY_CHECK_S = 1.0
BODY_CACHE_BYTES = 16 * 1024 * 1024  # the encode-once LRU holds at most this many bytes ...
BODY_CACHE_ITEM_BYTES = 1024 * 1024  # ... of bodies no larger than this
BODY_CACHE_ITEMS = 512  # ... and at most this many of them
LARGE_SHARE_BYTES = 32 * 1024 * 1024  # large update bodies kept for their next receivers (the newest always)
COMMIT_GATHER_S = 0.004  # GroupCommitWriter gather_s (ADR-0014): also capped at half a COMMIT's duration
PROCEDURE_NAME_ECHO = 128  # characters of an unknown procedure's name its ProcedureResult echoes
DELIVERED = (m.TransactionUpdate, m.ReducerResult)  # messages whose commit-to-delivery time is measured


def _cannot_block(transport: asyncio.BaseTransport, size: int) -> bool:
    """Whether writing ``size`` more bytes leaves the transport unpaused, so that aiohttp's
    send returns without waiting for the peer (its drain waits only while the protocol is
    paused: from the high-water mark down to the low one).  Then no send timer is needed."""
    # duck-typed: uvloop's transports are not subclasses of asyncio's (ADR-0014)
    size_of = getattr(transport, "get_write_buffer_size", None)
    limits_of = getattr(transport, "get_write_buffer_limits", None)
    if size_of is None or limits_of is None:
        return False
    buffered = size_of()
    low, high = limits_of()
    return bool(buffered <= low and buffered + size <= high)


def _cut(transport: asyncio.BaseTransport) -> None:
    """Abort ``transport`` (a no-op, or an error ignored, when its connection is already gone)."""
    with contextlib.suppress(Exception):
        cast(asyncio.Transport, transport).abort()


class _Encoded:
    """One entry of the encode-once cache: the message (kept alive, so its id is not reused
    while the entry lives), its BSATN body and its v2 frames by compression."""

    __slots__ = ("body", "frames", "message", "nbytes", "wire")

    def __init__(self, message: m.ServerMessage, body: bytes) -> None:
        self.message = message
        self.body = body
        self.frames: dict[wire.Compression, bytes] = {}
        self.wire: dict[wire.Compression, bytes] = {}  # the frames as whole WebSocket frames
        self.nbytes = len(body)


def _ws_header(n: int) -> int:
    """The header length of an unmasked WebSocket frame of ``n`` bytes in all (header included)."""
    return 2 if n < 128 else 4 if n < 65540 else 10


def _ws_head(n: int) -> bytes:
    """The header of an unmasked, final WebSocket binary frame of an ``n``-byte payload."""
    if n < 126:
        return bytes((0x82, n))
    if n < 65536:
        return struct.pack("!BBH", 0x82, 126, n)
    return struct.pack("!BBQ", 0x82, 127, n)


def ws_binary_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket binary frame carrying ``payload`` (RFC 6455 §5.2: a server
    never masks; lengths over 125 take a 16-bit, over 65535 a 64-bit extended length)."""
    return _ws_head(len(payload)) + payload


def ws_binary_frame_parts(payload: Sequence[bytes]) -> tuple[bytes, ...]:
    """:func:`ws_binary_frame` of the concatenation of ``payload``, as parts (concatenated, the
    same bytes): the header goes in front of the first part, the others are passed through
    uncopied -- a replay's megabytes go to the socket as they were built (ADR-0020 addendum)."""
    head = _ws_head(sum(map(len, payload)))
    if not payload:
        return (head,)
    return (head + payload[0], *payload[1:])


Frame = bytes | tuple[bytes, ...]


class _Compress:
    """A large body (over ``BODY_CACHE_ITEM_BYTES``) whose frame is to be compressed: the sender
    does it in a worker thread before the turn's write, so the event loop is not held (gzip level 1
    of 30 MiB: ~0.8 s; zlib and brotli release the interpreter lock).  Not a value but a job: in a
    delivery pass every receiver of the same large update holds the *same* one (per compression,
    :meth:`SyncServer._large_frame`), the first sender that needs it starts it and the others await
    its result -- one compression, not one per receiver.  ``sized``: told the frame's bytes once
    made (a kept body's job: they count toward ``LARGE_SHARE_BYTES``)."""

    __slots__ = ("compression", "made", "parts", "sized")

    def __init__(self, parts: tuple[bytes, ...], compression: wire.Compression,
                 sized: Callable[[int], None] | None = None) -> None:
        self.parts = parts
        self.compression = compression
        self.made: asyncio.Future[list[bytes]] | None = None
        self.sized = sized

    async def tagged(self) -> list[bytes]:
        """The frame (its tag, the compressed bytes), made in a worker thread on first need.  A
        sender cancelled meanwhile (its connection closed) does not cancel it for the others."""
        if self.made is None:
            self.made = asyncio.ensure_future(asyncio.to_thread(wire.frame_server_parts, self.parts,
                                                                self.compression))
            self.parts = ()  # the worker holds the body while it needs it
            if self.sized is not None:  # (told before the awaiting senders resume: callbacks run in order)
                self.made.add_done_callback(self._made)
        return await asyncio.shield(self.made)

    def _made(self, made: asyncio.Future[list[bytes]]) -> None:
        if self.sized is not None and not made.cancelled() and made.exception() is None:
            self.sized(sum(map(len, made.result())))

    def failed(self) -> bool:
        """It was made and raised (its receivers were closed, :meth:`SyncServer._compress_failed`)."""
        made = self.made
        return made is not None and made.done() and (made.cancelled() or made.exception() is not None)


Pending = Frame | _Compress


class _Large:
    """A large update's body kept for its next receivers, and its compression jobs by compression."""

    __slots__ = ("body", "jobs", "message", "nbytes")

    def __init__(self, message: m.ServerMessage, body: bytes) -> None:
        self.message = message  # kept alive: its id is not reused while the entry lives
        self.body = body
        self.jobs: dict[wire.Compression, _Compress] = {}
        self.nbytes = len(body)  # the body and the compressed frames made of it so far
"""A whole WebSocket frame ready for the socket: its bytes, or parts that concatenate to them."""


def _v3_batches(bodies: Sequence[bytes | tuple[bytes, ...]]) -> list[bytes | tuple[bytes, ...]]:
    """:func:`wire.batch_v3` of bodies some of which are kept as parts: such a body is over the
    soft cap (it is never cached: over ``BODY_CACHE_ITEM_BYTES``), so ``batch_v3`` would send it
    alone; it stays parts, the bodies between such ones are batched as before."""
    out: list[bytes | tuple[bytes, ...]] = []
    run: list[bytes] = []
    for body in bodies:
        if isinstance(body, bytes):
            run.append(body)
            continue
        if sum(map(len, body)) <= wire.V3_SOFT_CAP:
            raise LocalProtocolError("a body kept as parts is always over V3_SOFT_CAP")
        out += wire.batch_v3(run)
        run = []
        out.append(body)
    out += wire.batch_v3(run)
    return out


def write_frames(transport: asyncio.Transport, frames: Sequence[Frame]) -> None:
    """Write a turn's frames in one transport call: frames that are all ``bytes`` joined (one
    small write, as before); a frame kept as parts makes it one ``writelines`` of every piece,
    so its large parts are not copied (uvloop hands them to the kernel as one vector; asyncio's
    transport joins them, one copy)."""
    if len(frames) == 1 and type(frames[0]) is bytes:  # a v3 turn, or one v2 message: as it is
        transport.write(frames[0])
        return
    whole = [f for f in frames if isinstance(f, bytes)]
    if len(whole) == len(frames):
        transport.write(whole[0] if len(whole) == 1 else b"".join(whole))
        return
    transport.writelines([piece for f in frames for piece in ((f,) if isinstance(f, bytes) else f)])


MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound a client can run into, in one place (TOML ``[limits]``; docs/protocol.md
    "Limits" gives each one's error).  All values must be positive."""

    # WebSocket input
    max_message_size: int = 32 * MIB  # inbound WebSocket message (SpacetimeDB: 32 MiB); larger: 1009
    max_inbound_queue: int = 16384  # queued client messages before close 1013
    max_inbound_bytes: int = 64 * MIB  # bytes of queued client frames before close 1013
    # output, per connection
    max_outbound_queue: int = 16384  # engine queue per connection before slow_consumer
    max_outbound_bytes: int = 64 * MIB  # estimated encoded bytes queued for it before slow_consumer
    max_outbound_message_bytes: int = 32 * MIB  # one server message (the decoders' frame limit)
    # durability and fairness
    max_undurable: int = 1024  # committed transactions allowed ahead of the disk
    max_undurable_per_connection: int = 32  # of those, one WebSocket connection's (HTTP: one identity's)
    max_batch_per_turn: int = 4  # messages a connection's processor takes before others get a turn
    # keepalive and timeouts
    ping_interval_s: float = 15.0
    idle_timeout_s: float = 30.0  # nothing received for this long: the connection is dropped
    close_timeout_s: float = 5.0  # a close frame the peer does not take within this: the TCP connection is cut
    send_timeout_s: float = 60.0  # a frame the peer does not take within this: slow_consumer
    header_timeout_s: float = 10.0  # a request head (or the next one on a kept-alive connection) must arrive
    body_timeout_s: float = 30.0  # a request body must arrive within this
    # HTTP bodies, SQL and queries
    max_sql_bytes: int = 64 * 1024
    max_call_body_bytes: int = MIB  # HTTP call body, and a WebSocket CallReducer's BSATN arguments
    max_arg_items: int = 1024  # items of one array argument of a reducer (session 8)
    max_sql_statements: int = 64
    max_sql_rows: int = 100_000
    max_sql_response_bytes: int = 16 * MIB
    max_query_bytes: int = 8 * 1024  # one query string, on every path
    max_query_conjuncts: int = 32
    max_scan_rows: int = 100_000  # rows one request's queries examine, all together (ADR-0004; session 8)
    max_queries_per_connection: int = 64  # subscribed queries, all query sets together
    # connections
    max_connections: int = 1000  # open TCP connections (HTTP and WebSocket), also kept below RLIMIT_NOFILE
    max_connections_per_identity: int = 64  # open WebSocket connections of one identity

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{f.name} must be a positive number, got {value!r}")
        if self.max_outbound_bytes < self.max_outbound_message_bytes:
            raise ValueError("max_outbound_bytes must be at least max_outbound_message_bytes (one message must fit)")
        if self.max_outbound_message_bytes > wire.MAX_FRAME_SIZE:
            raise ValueError(f"max_outbound_message_bytes must be at most {wire.MAX_FRAME_SIZE} "
                             "(the frame size clients decode)")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 3000
    database: str = DEFAULT_DATABASE
    auth: AuthConfig = field(default_factory=AuthConfig)
    window: CompatWindow = field(default_factory=CompatWindow)
    limits: Limits = field(default_factory=Limits)
    policy: Policy | None = None  # None: the data directory's (or the default for a new one)
    sweep_interval_s: float = 1.0
    compact_interval_s: float = 60.0
    clock: Callable[[], int] | None = None  # µs since the epoch; None = wall time (tests inject one)
    contracts: bool | None = None  # hot-path contracts (spec.contracts.hot); None: leave the process switch
    commit_gather_s: float = COMMIT_GATHER_S  # an idle group-commit writer waits this long at most for a round
    event_loop: str = "auto"  # `syncref serve`'s loop: auto (uvloop when installed), uvloop, asyncio (ADR-0014)
    gc_freeze: str = DEFAULT_GC_FREEZE  # `syncref serve`'s cyclic-GC freeze policy: survivors or start (ADR-0036)
    stall_commits_while: Path | None = None  # fault injection ([faults]): the log's COMMIT waits while it exists
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY  # records between state snapshots (ADR-0011); 0: none
    snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP  # snapshots kept in DATA/snapshots, newest first


def cut_reason(text: str) -> str:
    """A close reason cut to 123 bytes of UTF-8 without splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= CLOSE_REASON_BYTES:
        return text
    return data[:CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


def parse_bool(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def select_subprotocol(headers: list[str]) -> str | None:
    offered = {p.strip() for h in headers for p in h.split(",") if p.strip()}
    return next((p for p in SUBPROTOCOLS if p in offered), None)


class _LostDuringUpgrade(web.StreamResponse):
    """What the upgrade handler returns when the client went away while the 101 was written.

    ``WebSocketResponse.prepare`` can fail half-way (the headers' write raises ``ConnectionError``
    after the response took its payload writer, before its WebSocket writer exists); handing that
    response back makes aiohttp's ``finish_response`` call its ``write_eof``, which raises
    ``RuntimeError: Call .prepare() first`` and is logged as an unhandled exception.  This response
    instead fails its ``prepare`` with ``ConnectionResetError``, which ``finish_response`` takes as
    the client having disconnected: it logs the access and drops the connection."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:
        raise ConnectionResetError("the client went away during the WebSocket upgrade")


def _expiry(verified: Verified, leeway_s: float) -> float | None:
    """When a verified token stops being accepted (its ``exp`` plus the leeway), if it expires."""
    exp = verified.raw.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp) + leeway_s
    return None


def _connection_expiry(verified: Verified, leeway_s: float) -> float | None:
    """When a connection opened with a verified token is closed ``token expired``: its connection bound
    (for a websocket token, the bound of the token it was traded for) plus the leeway, if any."""
    return None if verified.connection_exp is None else verified.connection_exp + leeway_s


def now_us() -> int:
    return time.time_ns() // 1000


def wall_time() -> float:
    """The wall clock tokens' ``exp`` is judged against (a seam: tests step it)."""
    return time.time()


class DurabilityFailed(Exception):
    """The commit log cannot be written: nothing more is acknowledged (HTTP 503, close 1011)."""



def _start_failure(data_dir: Path, exc: BaseException) -> DataDirError | None:
    """A start that failed on the disk (full, or an I/O error): one line saying which, that nothing
    acknowledged is lost, and what to do; None when the failure is not the disk's."""
    fault = storage_fault(exc)
    if fault is None:
        return None
    if fault.kind == "full":
        return DataDirError(f"the disk holding {data_dir} is full: the recovery could not be written "
                            f"(nothing acknowledged is lost); {fault.action}")
    return DataDirError(f"the disk holding {data_dir} failed: {fault.what}; nothing was started (nothing acknowledged "
                        f"is lost); {fault.action}")

class DataDirError(Exception):
    """The data directory cannot be created, written, locked or read (an operator error)."""


class KindCounts(Collector):
    """A counter by message kind kept as plain integers (``prometheus_client``'s ``inc`` takes a
    lock, per message on the read path), exposed as ``NAME_total{kind}`` as the counter was."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        out = CounterMetricFamily(self.name, self.documentation, labels=["kind"])
        for kind, n in sorted(self.counts.items()):
            out.add_metric([kind], n)
        yield out


class Metrics:
    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.connections = prom.Gauge("syncref_connections", "Open WebSocket connections", registry=r)
        self.connects = prom.Counter("syncref_connects", "Accepted WebSocket connections", ["protocol"], registry=r)
        self.rejects = prom.Counter("syncref_connect_rejects", "Refused upgrades by HTTP status", ["status"],
                                    registry=r)
        self.closes = prom.Counter("syncref_closes", "Server-initiated closes by cause", ["cause"], registry=r)
        self.committed = prom.Gauge("syncref_committed_offset", "Last committed tx_offset", registry=r)
        self.durable = prom.Gauge("syncref_durable_offset", "Last durable tx_offset", registry=r)
        self.messages_in = KindCounts("syncref_client_messages", "Client messages by kind")
        r.register(self.messages_in)
        self.sends = SendCounts()  # syncref_server_messages, _encode_cache_hits, _frames_sent, _bytes_sent
        r.register(self.sends)
        self.http = prom.Counter("syncref_http_requests", "HTTP requests by route and status", ["route", "status"],
                                 registry=r)
        self.internal = prom.Counter("syncref_internal_errors", "Failures inside the server (rolled back)", ["where"],
                                     registry=r)
        self.refused = prom.Counter("syncref_refused", "Requests refused at a limit", ["limit"], registry=r)
        self.tcp_open = prom.Gauge("syncref_tcp_connections", "Open TCP connections (HTTP and WebSocket)",
                                   registry=r)
        self.match_checks = prom.Counter("syncref_fanout_match_checks",
                                         "(subscription shape, row) pairs matched while fanning out transactions",
                                         registry=r)
        self.contracts = prom.Gauge("syncref_contracts_enabled",
                                    "1 when the engine hot-path contracts are checked (--contracts)", registry=r)
        self.contracts.set_function(lambda: 1.0 if contracts.hot_enabled() else 0.0)
        self.fanout_latency = FastHistogram(
            "syncref_fanout_latency_seconds",
            "From a transaction's commit to a message of it handed to a subscriber's socket", LATENCY_BOUNDS_S)
        self.replay_gap = FastHistogram("syncref_replay_gap_events",
                                        "Events an accepted resume query replays (head seq - watermark)", COUNT_BOUNDS)
        self.batch_records = FastHistogram("syncref_group_commit_batch_records", "Commit records per group COMMIT",
                                           COUNT_BOUNDS)
        for histogram in (self.fanout_latency, self.replay_gap, self.batch_records):
            r.register(histogram)
        self.stale_cursors = prom.Counter("syncref_stale_cursors", "Resume queries refused stale_cursor, by reason",
                                          ["reason"], registry=r)
        self.slow_consumers = prom.Counter("syncref_slow_consumer_disconnects",
                                           "Connections dropped as slow consumers (queue or bytes past the bound, or a "
                                           "frame not taken within send_timeout_s)", registry=r)


@dataclass(frozen=True, slots=True)
class Caller:
    verified: Verified
    token: str  # as presented, or minted for an anonymous caller
    minted: bool


class Session:
    """One WebSocket connection's I/O state (the engine holds its subscriptions and queue)."""

    def __init__(self, conn_id: int, ws: web.WebSocketResponse, version: int, compression: wire.Compression,
                 verified: Verified, connection_id: int, request: web.Request) -> None:
        self.conn_id = conn_id
        self.ws = ws
        self.version = version
        self.compression = compression
        self.verified = verified
        self.connection_id = connection_id
        self.request = request
        self.inbound: deque[tuple[wire.Received, int]] = deque()  # (message, bytes of its frame)
        self.inbound_bytes = 0
        self.inbound_ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.side: deque[bytes] = deque()  # encoded bodies answered by this layer (procedure calls)
        self.call_ts: dict[int, int] = {}  # request_id -> reducer start time, for ReducerResult.timestamp
        self.last_seen = time.monotonic()
        self.closing = False
        self.tasks: list[asyncio.Task[None]] = []
        self.reader: asyncio.Task[None] | None = None
        self.closers: list[asyncio.Future[None]] = []  # closes the engine asked for; awaited, never cancelled
        self.undurable: deque[int] = deque()  # offsets of this connection's commits not yet durable
        self.busy = False  # its sender task is writing a turn: the pump does not write directly
        self.deferred: tuple[list[Pending], int] | None = None  # a turn the pump took that needs compressing
        # the deliveries (commit offset -> messages) of a turn taken but still to compress: observed
        # for the fanout latency when its frames are handed to the transport, not when it was taken
        self.held: dict[int, int] = {}
        self.broken = False  # a message could not be sent (over the bound): closing, nothing more goes out
        self.connected_at_us = now_us()
        # a OneOffQuery's read taken (request id, read), which its processor steps in slices
        # (SyncServer._step_read); nothing of this connection is taken ahead of it (ADR-0038)
        # so is a Subscribe's snapshot or an Unsubscribe's dropped rows over READ_SLICE_ROWS (ADR-0041)
        self.reading: tuple[int, Read | Snapshot] | None = None


class SyncServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # the database's identity, which every /v1/database/:name_or_identity route also takes
        self.database_identity = database_identity(config.database)
        self.metrics = Metrics()
        self.sessions: dict[int, Session] = {}
        self._store: LogStore | None = None
        self._writer: GroupCommitWriter | None = None
        self._snapshots: Snapshotter | None = None
        self._engine: Engine | None = None
        self._runner: web.AppRunner | None = None
        self._auth: Authenticator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._bodies: OrderedDict[object, _Encoded] = OrderedDict()  # the encode-once cache
        self._commits = CommitClock()
        self._records_queued = False  # records handed to the writer since it was last woken
        self._delivered: dict[int, int] = {}  # commit offset -> messages from it handed to sockets, not yet observed
        # v3 turns of shared updates built in this pass: (compression, their ids) -> (the updates,
        # the frames, their payload bytes); the updates are kept so an id is never reused meanwhile
        # (and, for a turn of TransactionUpdates only, their offsets: such a turn is taken as it is)
        self._v3_turns: dict[tuple[wire.Compression, tuple[int, ...]],
                             tuple[tuple[m.ServerMessage, ...], list[Frame], int, tuple[int, ...]]] = {}
        # large updates (bodies over BODY_CACHE_ITEM_BYTES, not kept in the encode-once LRU) recently
        # encoded, for their next receivers: one body and one compression job per compression for all
        # of them -- whether the pass or, later, a backpressured receiver's sender takes the turn.  By
        # id of the message and by id of the body; at most LARGE_SHARE_BYTES of bodies, oldest out first
        self._large: OrderedDict[int, _Large] = OrderedDict()
        self._large_bodies: dict[int, _Large] = {}
        self._large_bytes = 0
        # turns taken as they were since the last flush: id of the turn -> [times taken, the turn]
        self._turn_hits: dict[int, list[Any]] = {}
        self._deliver_scheduled = False  # _deliver is scheduled for the end of this loop iteration
        # the delivery pass under way (ADR-0023): the sessions it visits, in order, and how far it is;
        # _round_again: the engine moved since it started, so another pass follows it
        self._round: list[Session] = []
        self._round_at = 0
        self._round_again = False
        self._pump_scheduled = False  # _pump likewise (calls the reader handled itself: one pump for them all)
        self.taken_by_reader = 0  # messages a reader handed to the engine itself (ADR-0019), not via the queue
        self._in_counts = self.metrics.messages_in.counts  # syncref_client_messages_total{kind}
        self.metrics.registry.register(StateCollector(self._state_metrics))
        self.gc_pauses = GcPauses()  # syncref_gc_pause_seconds{generation}, ..._frozen_objects, ..._thaws (ADR-0036)
        self.metrics.registry.register(self.gc_pauses)
        self._rows = wire.RowCache()
        self._last_now = 0
        self._periodic: list[asyncio.Task[None]] = []
        self.failed: asyncio.Future[BaseException] | None = None
        self.port = config.port
        self._stopped = False
        self.unclean_stop: str | None = None  # why stop() left no clean-shutdown marker (None: it did not)
        self._gate: ConnectionGate | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._body_bytes = 0  # bytes held by the encode-once LRU
        self._match_checks = 0
        self._http_running: dict[str, int] = {}  # identity -> HTTP calls running
        self._http_queues: dict[str, deque[asyncio.Future[None]]] = {}  # identity -> calls waiting their turn
        self.errors = RateLimitedLog(log)
        self.started_at_us = now_us()
        self.batch_sizes: deque[int] = deque(maxlen=ops.BATCH_WINDOW)  # records per recent group commit
        self.recent_errors = ops.RecentErrors()

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "the server is not started"
        return self._engine

    @property
    def auth(self) -> Authenticator:
        assert self._auth is not None, "the server is not started"
        return self._auth

    async def start(self, stop_requested: Callable[[], bool] | None = None) -> None:
        """Open the data directory, recover, bind.  Raises :class:`DataDirError` for an unusable data
        directory and ``OSError`` for a port that cannot be bound (the CLI reports both).
        ``stop_requested`` is asked while the state is rebuilt (:func:`reference.durability.restart`'s
        ``stop``): a yes stops the start with :class:`~reference.durability.RecoveryInterrupted`,
        nothing written and everything opened closed."""
        self._loop = asyncio.get_running_loop()
        self.failed = self._loop.create_future()
        # The group-commit writer thread needs the interpreter lock for a moment per batch -- when
        # woken and when its fsync returns -- and behind a busy event loop (a delivery pass) each
        # waits up to the switch interval: CPython's default 5 ms would delay every COMMIT by up to
        # 10 ms; 0.5 ms still cost ~0.5 ms per wakeup (docs/performance.md, "Phase 6").
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        cfg = self.config
        if cfg.contracts is not None:
            contracts.enable_hot(cfg.contracts)
        try:
            make_data_dir(cfg.data_dir)
            probe = cfg.data_dir / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
            self._auth = Authenticator(cfg.auth, KeyStore.load_or_create(cfg.data_dir),
                                       revocations=RevocationList(cfg.data_dir / REVOKED_JTI_FILE))
            self._store = LogStore.open(cfg.data_dir)
            self._store.stall_while = cfg.stall_commits_while
            self._store.on_mark_error = self._mark_failed
        except DamagedLog as exc:
            raise DataDirError(f"the commit log in {cfg.data_dir} cannot be recovered: {exc} (syncref verify-log "
                               "--data DIR says so too; restore the data directory from a backup)") from exc
        except (OSError, RuntimeError, ValueError, sqlite3.Error) as exc:
            raise _start_failure(cfg.data_dir, exc) or DataDirError(
                f"data directory {cfg.data_dir} is not usable: {exc}") from exc
        try:
            self._writer = GroupCommitWriter(self._store, self._durable_from_thread, gather_s=cfg.commit_gather_s)
            try:
                self._engine = restart(self._store, self._writer, self._tick(), cfg.policy,
                                       max_queue=cfg.limits.max_outbound_queue,
                                       max_undurable=cfg.limits.max_undurable, stop=stop_requested)
            except (ValueError, RuntimeError, sqlite3.Error) as exc:
                failure = _start_failure(cfg.data_dir, exc)
                if failure is not None:
                    raise failure from exc
                raise DataDirError(f"the commit log in {cfg.data_dir} cannot be recovered: {exc} "
                                   "(syncref verify-log --data DIR shows where)") from exc

            recovery = self._store.recovery
            if recovery is not None:
                for line in recovery.lines():
                    log.warning("%s", line)
            self._snapshots = Snapshotter(snapshot_dir(self._store), cfg.snapshot_every, cfg.snapshot_keep,
                                          self._writer.wait_durable,
                                          recovery.snapshot_offset if recovery is not None else 0,
                                          on_error=self._snapshot_failed, log_id=self._store.log_id,
                                          legacy=self._store.legacy_snapshots, on_strangers=self._snapshot_strangers)
            if cfg.snapshot_every:  # views every stream now, before listening: snapshots then view what changed
                self._snapshots.prime(self._engine.db)
            self._engine.on_close = self._engine_closed
            self._engine.on_internal_error = self._internal_error
            self._limit_engine(self._engine)
            quiet_loop_errors(self._loop, self.errors)
            logging.getLogger("syncref").addHandler(self.recent_errors)
            app = web.Application(client_max_size=max(cfg.limits.max_call_body_bytes, cfg.limits.max_sql_bytes),
                                  middlewares=[self._guard])
            self._routes(app)
            # keepalive_timeout: aiohttp closes a connection whose next request head has not arrived
            # within it (from the connection's start, or the end of the previous request) -- the
            # header timeout.  Header fields and the request line fit a 16 KiB token.
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                                         keepalive_timeout=cfg.limits.header_timeout_s,
                                         max_field_size=MAX_TOKEN_CHARS + 1024, max_line_size=MAX_TOKEN_CHARS + 8192)
            await self._runner.setup()
            handler = self._runner.server
            assert handler is not None
            before, after = raise_descriptor_limit(cfg.limits.max_connections + DESCRIPTOR_RESERVE)
            if after > before:
                log.info("descriptor limit (ulimit -n) raised from %d to %d for max_connections %d",
                         before, after, cfg.limits.max_connections)
            cap = descriptor_budget(cfg.limits.max_connections)
            if cap < cfg.limits.max_connections:
                log.warning("max_connections lowered from %d to %d to stay below the descriptor limit "
                            "(ulimit -n)", cfg.limits.max_connections, cap)
            self._gate = ConnectionGate(handler, cap, lambda: self.metrics.refused.labels("max_connections").inc())
            self._listener = await self._loop.create_server(self._gate, cfg.host, cfg.port, reuse_address=True,
                                                            backlog=LISTEN_BACKLOG)
        except BaseException:
            await self._abort_start()
            raise
        sockets: tuple[Any, ...] = tuple(self._listener.sockets or ())
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._metrics_offsets()
        self.gc_pauses.install()  # from here to stop(): a start that failed leaves no hook behind
        self._room.set()
        self._periodic = [asyncio.create_task(self._every(cfg.sweep_interval_s, self._sweep)),
                          asyncio.create_task(self._every(cfg.compact_interval_s, self._compact)),
                          asyncio.create_task(self._watch_writer()),
                          asyncio.create_task(self._watch_revocations())]

    def bound_addresses(self) -> list[str]:
        """The addresses the listener is bound to (what ``config.host`` resolved to)."""
        return [str(sock.getsockname()[0]) for sock in getattr(self._listener, "sockets", None) or ()]

    def _limit_engine(self, engine: Engine) -> None:
        lim = self.config.limits
        engine.max_query_bytes = lim.max_query_bytes
        engine.max_query_conjuncts = lim.max_query_conjuncts
        engine.max_scan_rows = lim.max_scan_rows
        engine.slice_rows = READ_SLICE_ROWS  # big snapshots and dropped rows stepped (_step_read, ADR-0041)
        engine.max_queries_per_connection = lim.max_queries_per_connection
        engine.max_outbound_bytes = lim.max_outbound_bytes
        engine.max_outbound_message_bytes = lim.max_outbound_message_bytes
        sizes = wire.RowSizes()
        engine.measure = lambda message: wire.message_size_bound(message, sizes)
        engine.on_resume = self.metrics.replay_gap.observe
        engine.on_stale = self._stale

    def _stale(self, reasons: tuple[str, ...]) -> None:
        for reason in reasons:
            self.metrics.stale_cursors.labels(reason).inc()

    def _internal_error(self, err: InternalError) -> None:
        """The engine rolled a transaction back: count it and log it (once per kind and interval)."""
        self.metrics.internal.labels("engine").inc()
        self.errors.log(f"engine:{err.name}:{type(err.cause).__name__}", logging.ERROR, err.message,
                        exc_info=err.cause)

    async def _abort_start(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._store is not None:
            self._store.close()

    async def stop(self) -> None:
        """Clean shutdown: close every connection (1001), flush the log, set the clean marker."""
        if self._stopped:
            return
        self._stopped = True
        self.gc_pauses.remove()
        logging.getLogger("syncref").removeHandler(self.recent_errors)
        for task in self._periodic:
            task.cancel()
        if self._listener is not None:
            self._listener.close()
        await asyncio.gather(*(self._close(sess, 1001, "server shutting down", "shutdown")
                               for sess in list(self.sessions.values())), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()  # in-flight HTTP requests get shutdown_timeout, then are cancelled
        self._fail_waiters(DurabilityFailed("the server is shutting down"))
        if self._engine is not None and self._writer is not None and self._store is not None:
            if self._writer.error is None:
                try:
                    shutdown(self._engine, self._writer, self._store)
                except UncleanClose as exc:  # the final head mark failed: closed without the marker (ADR-0039)
                    self.unclean_stop = str(exc)
                    log.error("clean shutdown failed: %s", exc)
                    self._close_failed()
                except Exception as exc:  # the log stays as it is: the next start recovers (unclean)
                    self.unclean_stop = f"{exc!r}; the next start recovers"
                    log.error("clean shutdown failed, the next start will recover: %r", exc)
                    self._close_failed()
            else:
                self.unclean_stop = "the commit-log writer had failed; the next start recovers"
                self._close_failed()

    def _close_failed(self) -> None:
        """Close a store whose writer failed (or whose clean shutdown did): the writer first -- it
        raises its failure, already reported -- so its threads end (the head-mark thread too,
        ADR-0039), then the store, unclean."""
        assert self._writer is not None and self._store is not None
        with contextlib.suppress(Exception):
            self._writer.close()
        self._store.close()

    # --- durability -------------------------------------------------------------------------------

    def _snapshot_failed(self, exc: BaseException) -> None:
        """A snapshot could not be written (its thread): the log is whole, the next one retries."""
        text = str(exc) if isinstance(exc, OSError) else repr(exc)
        log.error("writing a state snapshot failed (the commit log is unaffected; the next snapshot tries again): %s",
                  text)

    def _mark_failed(self, exc: OSError) -> None:
        """The head mark could not be written (the mark thread): the log is whole (ADR-0039)."""
        self.errors.log("head-mark", logging.WARNING, "writing the head mark syncref.head failed (the commit log is "
                        f"unaffected; the older mark stays, a weaker check; retried each second): {exc}")

    def _snapshot_strangers(self, names: list[str]) -> None:
        """Snapshots ``prune`` kept because they are not provably this log's (its thread, ADR-0039)."""
        log.warning("snapshot(s) %s not pruned: not this log's (another log id, an unreadable header, or no id and "
                    "not bound to this log); the next start refuses the directory if they name another log -- "
                    "move them out of DIR/snapshots", ", ".join(names))

    def _durable_from_thread(self, offset: int, batch: Sequence[TxRecord]) -> None:
        self.batch_sizes.append(len(batch))  # deque.append is atomic: safe from the writer thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._durable_advanced, offset, len(batch))

    def _durable_advanced(self, offset: int, records: int = 0) -> None:
        engine = self.engine
        if records:
            self.metrics.batch_records.observe(records)
        if offset > engine.durable:
            engine.advance_durable(offset)
        snaps = self._snapshots
        if snaps is not None and snaps.due(engine.committed) and self._writer is not None \
                and self._writer.error is None:
            snaps.maybe(engine.db, engine.committed, engine.head_hash)  # between transactions: consistent
        self._room.set()
        still = []
        for target, fut in self._waiters:
            if target <= engine.durable:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((target, fut))
        self._waiters = still
        self._pump()

    async def _wait_room(self) -> None:
        while not self.engine.can_commit():
            self._check_writer()
            if self.failed is not None and self.failed.done():
                raise DurabilityFailed(str(self.failed.result()))
            self._room.clear()
            await self._room.wait()

    async def _wait_durable(self, offset: int) -> None:
        """Wait until ``offset`` is durable; :class:`DurabilityFailed` if it never will be."""
        if offset <= self.engine.durable:
            return
        if self.failed is not None and self.failed.done():
            raise DurabilityFailed(str(self.failed.result()))
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((offset, fut))
        await fut

    async def _wait_durable_quietly(self, offset: int) -> None:
        """Wait for ``offset`` to be durable; a durability failure is handled by the caller's
        next check of ``failed``."""
        with contextlib.suppress(DurabilityFailed):
            await self._wait_durable(offset)

    def _check_writer(self) -> None:
        """If the commit-log writer failed: acknowledge nothing more.  Every waiter fails (HTTP
        503), every connection is closed (1011), and ``failed`` tells ``serve`` to stop."""
        assert self._writer is not None
        err = self._writer.error
        if err is None or self.failed is None or self.failed.done():
            return
        fault = storage_fault(err)
        log.error("commit-log writer failed: %s", fault.what if fault is not None else repr(err))
        self.failed.set_result(err)
        self._fail_waiters(DurabilityFailed(str(err)))
        why = fault.what if fault is not None else repr(err)
        for sess in list(self.sessions.values()):
            sess.closers.append(asyncio.ensure_future(self._close(
                sess, m.CLOSE_PROTOCOL, f"durability failure: {why}",
                "durability")))

    def _fail_waiters(self, exc: DurabilityFailed) -> None:
        for _offset, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters = []
        self._room.set()

    async def _watch_writer(self) -> None:
        while self.failed is not None and not self.failed.done():
            await asyncio.sleep(0.05)
            self._check_writer()

    def _pump_soon(self) -> None:
        """:meth:`_pump` once, at the end of this loop iteration, for every engine step taken
        until then (the calls a reader handled directly: their records reach the writer together),
        and the delivery right after it (``deliver_now``): this callback already runs after the
        readers of the iteration, so the pass is not deferred one iteration more -- a resume's
        ``SubscribeApplied`` is written one loop iteration sooner (ADR-0031; a reader takes only a
        frame of one message, so a v3 frame's replies are still one turn)."""
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump, True)

    def _pump(self, deliver_now: bool = False) -> None:
        """After any engine step: hand new commit records to the writer, wake senders (at the end
        of this loop iteration; at once with ``deliver_now``, when no delivery is scheduled)."""
        self._pump_scheduled = False
        engine = self.engine
        self._commits.stamp(engine.committed, time.monotonic())
        records = engine.take_records()
        if records:
            assert self._writer is not None
            try:
                # queued now, the writer woken once at the end of this loop iteration: the commits
                # of one iteration (several connections' calls) share a wakeup and a COMMIT
                self._writer.append(records, wake=False)
                self._records_queued = True
            except Exception as exc:
                # Records the writer refuses can never become durable: nothing more may be
                # acknowledged.  Fail as a write failure does (503s, closes, serve exits 1) rather
                # than leave every later call waiting forever.
                self._writer_refused(exc)
        if not deliver_now and not self._deliver_scheduled and self._loop is not None:
            self._deliver_scheduled = True
            self._loop.call_soon(self._deliver)
        self._metrics_offsets()
        checks = engine.match_checks
        if checks > self._match_checks:
            self.metrics.match_checks.inc(checks - self._match_checks)
        self._match_checks = checks
        if deliver_now and not self._deliver_scheduled:  # (one already scheduled runs as scheduled)
            self._deliver()

    def _deliver(self) -> None:
        """Once per loop iteration in which the engine moved: wake the commit-log writer for the
        records queued (the commits of the iteration share a wakeup and a COMMIT), and start a
        delivery pass (:meth:`_pass`) -- or, when one is under way, have another follow it.
        Deferring this to the end of the iteration lets a v3 connection's replies to one frame go
        out in one frame.

        The writer is woken *before* the pass's writes, although the notify is where the loop
        thread often loses the CPU to it (8-11 % of the loop's lock-holding samples in the
        profiles): the writer needs the interpreter lock only to start, gets it within the switch
        interval (``SWITCH_INTERVAL_S``), and its COMMIT's fsync then runs beside the rest of a
        long pass.  Woken after the writes (tried and measured, ADR-0021), the COMMIT waited for
        the whole pass: at 100 subscribers the median commit-to-receipt latency rose (50 ms against
        31-41 ms with this order, same minutes)."""
        self._deliver_scheduled = False
        if self._writer is not None and self._records_queued:  # only new records need the writer woken
            self._records_queued = False
            self._writer.wake()
        if self._engine is None:
            return
        if self._round_at < len(self._round):  # a pass is under way: it goes on where it is, then again
            self._round_again = True
            return
        self._round = list(self.sessions.values())
        self._round_at = 0
        self._pass()

    def _pass(self) -> None:
        """Send what each connection of the pass may now receive -- written directly while its
        socket takes it (:meth:`_write_now`), else by its sender task -- in the pass's order,
        handing the loop back every ``DELIVER_SLICE_S`` (ADR-0023): the rest of the pass
        continues at the next iteration, after the loop has read what arrived meanwhile (the next
        calls, the writer's durable hand-back).  A long pass (hundreds of subscribers) no longer
        holds the next transaction's read and commit behind it, and the connections it reaches
        late take more updates per write.  Each connection's messages still leave in queue order
        (they come off its queue, whoever writes them); a connection that left meanwhile is
        skipped; a pass asked for while this one ran (``_round_again``) starts from the first
        connection when this one ends, so none waits more than one pass after its update."""
        engine = self._engine
        order = self._round
        n = len(order)
        i = self._round_at
        if engine is None:
            self._round, self._round_at = [], 0
            return
        sessions = self.sessions
        deadline = time.monotonic() + DELIVER_SLICE_S
        try:
            while i < n:
                s = order[i]
                i += 1
                if sessions.get(s.conn_id) is s and (s.side or engine.releasable(s.conn_id)) and (
                        s.busy or not self._write_now(s)):
                    s.wake.set()
                if i % DELIVER_CHECK == 0 and i < n and time.monotonic() >= deadline:
                    break
        finally:
            self._round_at = i
            self._flush_delivered()
            if i >= n:
                self._round, self._round_at = [], 0
                if self._round_again:
                    self._round_again = False
                    self._round = list(sessions.values())
            if self._round:
                self._pass_soon()

    def _pass_soon(self) -> None:
        """The pass goes on at the next loop iteration (now, when no loop runs: a test's rig)."""
        if self._loop is not None:
            self._loop.call_soon(self._pass)
        else:
            self._pass()

    def _writer_refused(self, exc: Exception) -> None:
        if self.failed is None or self.failed.done():
            return
        fault = storage_fault(exc)  # the writer failed on the disk: say so, as _check_writer does
        why = fault.what if fault is not None else f"the commit log refused a record ({exc!r})"
        log.error("the commit-log writer refused records: %s", why)
        self.failed.set_result(exc)
        self._fail_waiters(DurabilityFailed(why))
        for sess in list(self.sessions.values()):
            sess.closers.append(asyncio.ensure_future(self._close(sess, m.CLOSE_PROTOCOL, f"durability failure: {why}",
                                                                  "durability")))

    def _state_metrics(self) -> dict[str, Any]:
        """What :class:`~adapters.observe.StateCollector` reports, computed at scrape time."""
        engine = self._engine
        if engine is None:
            return {"lags": {}, "durability_lag": 0, "outbox_pending": 0}
        lags: dict[int, int] = {}
        sessions = self.sessions
        for cid, conn in engine.conns.items():
            s = sessions.get(cid)
            if s is None:
                continue
            # an update taken off the queue whose frame is still being compressed (``held``) is not
            # delivered yet: it is older than anything still queued
            oldest = min(s.held) if s.held else conn.outbound[0].offset if conn.outbound else None
            lags[cid] = 0 if oldest is None else engine.committed - oldest + 1
        pending = sum(1 for row in engine.db.rows("bridge_outbox") if getattr(row, "status", None) == "pending")
        store = self._store
        return {"lags": lags, "durability_lag": engine.committed - engine.durable, "outbox_pending": pending,
                "wal_checkpoints": store.checkpoints if store is not None else 0,
                "wal_checkpoint_errors": store.checkpoint_errors if store is not None else 0,
                "head_marks": store.marks if store is not None else 0,
                "head_mark_errors": store.mark_errors if store is not None else 0,
                "head_mark_offset": store.marked_offset if store is not None else 0}

    def _metrics_offsets(self) -> None:
        if self._engine is not None:
            self.metrics.committed.set(self._engine.committed)
            self.metrics.durable.set(self._engine.durable)

    def _tick(self) -> int:
        """The reducer clock: wall time in µs, never going backwards."""
        self._last_now = max(self._last_now, (self.config.clock or now_us)())
        if self._engine is not None:
            self._engine.now = self._last_now
        return self._last_now

    async def _every(self, interval: float, step: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            self._check_writer()
            if self.engine.can_commit() and self.failed is not None and not self.failed.done():
                try:
                    step()
                except InternalError as err:  # rolled back; the next period tries again
                    self._internal_error(err)
                self._pump()

    def _sweep(self) -> None:
        self.engine.sweep(self._tick())

    def _compact(self) -> None:
        self.engine.compact(self._tick())

    # --- routes -----------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """The last line: an exception no route turned into a specific answer is a 500 with a
        message (logged once per kind and interval), never a dead request or a dead server."""
        try:
            return await handler(request)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception as exc:
            self.metrics.internal.labels("http").inc()
            self.errors.log(f"http:{type(exc).__name__}", logging.ERROR,
                            f"internal error answering {request.method} {request.path}: {exc!r:.300}",
                            exc_info=exc)
            return _text(500, safe_text(f"internal error: {type(exc).__name__}: {exc}; nothing was written"))

    async def _body_text(self, request: web.Request, what: str) -> str | web.Response:
        """The request body as text: read within ``body_timeout_s`` (else 408), declared charset
        UTF-8 or none (else 415), valid UTF-8 (else 400).  Size is aiohttp's ``client_max_size``."""
        charset = request.charset
        if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
            self.metrics.refused.labels("charset").inc()
            return _text(415, f"unsupported charset {charset[:40]!r}: the {what} must be UTF-8")
        try:
            data = await asyncio.wait_for(request.read(), self.config.limits.body_timeout_s)
        except TimeoutError:
            self.metrics.refused.labels("body_timeout_s").inc()
            return _text(408, f"the request body did not arrive within {self.config.limits.body_timeout_s:g} s")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _text(400, SyncError(ErrorCode.INVALID_ARGUMENT, {
                "argument": "*", "message": f"the {what} is not valid UTF-8: {exc.reason} at byte {exc.start}"}
            ).render())

    def _routes(self, app: web.Application) -> None:
        db = "/v1/database/{name}"
        app.router.add_get("/v1/ping", self._counted("ping", self._ping))
        app.router.add_get("/metrics", self._counted("metrics", self._metrics))
        app.router.add_post("/v1/identity", self._counted("identity", self._identity))
        app.router.add_post("/v1/identity/websocket-token", self._counted("websocket_token", self._ws_token))
        app.router.add_get("/v1/identity/public-key", self._counted("public_key", self._public_key))
        app.router.add_get(db + "/subscribe", self._subscribe)
        app.router.add_post(db + "/call/{reducer}", self._counted("call", self._call))
        app.router.add_post(db + "/sql", self._counted("sql", self._sql))
        app.router.add_get(db + "/schema", self._counted("schema", self._schema))
        app.router.add_get(db + "/identity", self._counted("database_identity", self._db_identity))
        app.router.add_post(db + "/compact", self._counted("compact", self._compact_now))
        ops_routes.install(app, ops_routes.OpsSource(lambda: self.engine, lambda: self.auth, lambda: ops_facts(self)),
                           self._counted)

    def _counted(self, route: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            resp = await handler(request)
            self.metrics.http.labels(route, str(resp.status)).inc()
            return resp
        return wrapped

    async def _ping(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.metrics.connections.set(len(self.sessions))
        self.metrics.tcp_open.set(self._gate.open if self._gate is not None else 0)
        return web.Response(body=prom.generate_latest(self.metrics.registry),
                            headers={"Content-Type": prom.CONTENT_TYPE_LATEST})

    async def _identity(self, _request: web.Request) -> web.Response:
        if not self.config.auth.anonymous_allowed:
            return _text(403, "anonymous identities are disabled on this server: ask its operator for a token "
                              "(syncref token mint)")
        identity, token = self.auth.mint_identity()
        return _json({"identity": identity, "token": token})

    async def _ws_token(self, request: web.Request) -> web.Response:
        try:
            # as SpacetimeDB's SpacetimeAuthRequired: the Bearer header, else ?token=
            token = self.auth.token_from_request(request.headers.get("Authorization"), request.query.get("token"))
            if token is None:
                return _text(401, "Authorization required")
            verified = self.auth.verify(token)
        except AuthError as err:
            return _text(err.status, str(err))
        return _json({"token": self.auth.websocket_token(verified)})

    async def _public_key(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.auth.keys.public_key_pem(), content_type="application/pem-certificate-chain")

    async def _schema(self, request: web.Request) -> web.Response:
        if not self._names_this_database(request.match_info["name"]):
            return _text(404, f"`{request.match_info['name']}` not found")
        version = request.query.get("version")
        if version == "9":  # SpacetimeDB's RawModuleDefV9, which `spacetime call` falls back to
            return _json(raw_module_def_v9())
        if version is not None:  # 10 is not served: a client error, on which `spacetime call` asks for 9
            return _text(400, f"schema version {version[:20]!r} is not served: ask for version=9 "
                              "(RawModuleDefV9), or leave version out for syncref's own JSON")
        return _json(module_schema(self.config.database))

    async def _db_identity(self, request: web.Request) -> web.Response:
        """``GET /v1/database/:name_or_identity/identity``: the database's identity as hex text, as
        SpacetimeDB's ``get_identity`` (``spacetime sql``/``call`` resolve a name here first)."""
        if not self._names_this_database(request.match_info["name"]):
            return _text(404, f"`{request.match_info['name']}` not found")
        return _text(200, self.database_identity)

    def _names_this_database(self, segment: str) -> bool:
        """The path's ``:name_or_identity`` is the served database's name or its identity (64 hex
        digits, any case, after an optional ``0x``: ``from_hex_pad``), as SpacetimeDB's ``NameOrIdentity``."""
        if segment == self.config.database:
            return True
        return segment.removeprefix("0x").lower() == self.database_identity

    def _authenticate(self, request: web.Request) -> Caller | web.Response:
        """The verified caller (minting an identity for a token-less one when that is allowed), or
        the error response."""
        try:
            token = self.auth.token_from_request(request.headers.get("Authorization"), request.query.get("token"))
        except AuthError as err:
            return _text(err.status, str(err))
        minted = token is None
        if token is None:
            if not self.config.auth.anonymous_allowed:
                return _text(401, "Authorization required: send a Bearer token (POST /v1/identity is "
                                  "disabled unless the server allows anonymous identities)")
            _identity, token = self.auth.mint_identity()
        try:
            return Caller(self.auth.verify(token), token, minted)
        except AuthError as err:
            return _text(err.status, str(err))

    def _http_caller(self, request: web.Request) -> Verified | web.Response:
        """The checks the HTTP database routes share, in order: token, database, compatibility."""
        caller = self._authenticate(request)
        if isinstance(caller, web.Response):
            return caller
        if not self._names_this_database(request.match_info["name"]):
            return _text(404, f"`{request.match_info['name']}` not found")
        refused = self._admit(caller.verified)
        return refused if refused is not None else caller.verified

    def _admit(self, verified: Verified) -> web.Response | None:
        err = self.engine.admit(verified.claims, self.config.window)
        if err is None:
            return None
        return web.json_response(rejection_body(err), status=426)

    async def _compact_now(self, request: web.Request) -> web.Response:
        """``POST /v1/database/:name/compact``: run retention (the compaction transaction the schedule
        runs every ``compact_interval_s``) once, now, and answer once it is durable -- for an operator
        and for the conformance kit's retention scenarios (``--compact-cmd``).  Only an admin granted
        every stream (``sync.admin`` and ``*``): 403 for any other token, and nothing runs."""
        verified = self._http_caller(request)
        if isinstance(verified, web.Response):
            return verified
        if ops.ADMIN_SCOPE not in verified.claims.scopes or not ops.is_full(verified.claims):
            return _text(403, f"compaction needs a token with the {ops.ADMIN_SCOPE} scope and the stream grant "
                              "'*' (syncref token mint --scopes sync.admin --streams '*')")
        try:
            await self._wait_room()
            if self.failed is not None and self.failed.done():  # as the schedule: nothing runs once it failed
                raise DurabilityFailed(str(self.failed.result()))
            try:
                wrote = self.engine.compact(self._tick())
            except InternalError as err:  # rolled back; reported as the periodic compaction's would be
                self._internal_error(err)
                return _text(500, err.message)
            self._pump()
            offset = self.engine.committed  # the compaction's (others may commit while it waits)
            await self._wait_durable(offset)
        except DurabilityFailed as exc:
            return _text(503, f"the commit log could not be written: {exc}")
        return web.json_response({"compacted": wrote, "committed_offset": offset})

    # --- HTTP reducer calls and SQL -----------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.Response:
        verified = self._http_caller(request)
        if isinstance(verified, web.Response):
            return verified
        # as SpacetimeDB's `call`: its TypedHeader<ContentType> extractor (400 when the header is
        # missing) and assert_content_type_json (415) run before the reducer is looked up
        if "Content-Type" not in request.headers:
            return _text(400, "Header of type `content-type` was missing")
        if request.content_type != "application/json":
            return _text(415, "Expected request with `Content-Type: application/json`")
        reducer = request.match_info["reducer"]
        rdef = REDUCER_BY_NAME.get(reducer)
        if rdef is None:
            return _text(404, SyncError(ErrorCode.NO_SUCH_REDUCER, {"reducer": reducer}).render())
        text = await self._body_text(request, "call body")
        if isinstance(text, web.Response):
            return text
        most = self.config.limits.max_call_body_bytes
        if len(text.encode("utf-8")) > most:  # aiohttp's cap is max(this, max_sql_bytes)
            self.metrics.refused.labels("max_call_body_bytes").inc()
            return _text(413, f"call body over {most} bytes")
        try:
            body = json.loads(text, object_pairs_hook=_unique_keys)
            over = self._array_over(rdef.args, body)
            if over is not None:  # before its items are converted and checked
                return _text(400, over.render())
            args = satsjson.args_from_json(rdef.args, body)
        except RecursionError:
            return _text(400, SyncError(ErrorCode.INVALID_ARGUMENT, {
                "argument": "*", "message": "the JSON body is nested too deeply"}).render())
        except (ValueError, satsjson.SatsJsonError) as exc:
            return _text(400, SyncError(ErrorCode.INVALID_ARGUMENT, {
                "argument": "*", "message": safe_text(str(exc))}).render())
        async with self._http_share(verified.identity):
            return await self._call_detached(verified, reducer, args)

    def _array_over(self, params: Sequence[Column], body: object) -> SyncError | None:
        """``limit_exceeded`` for an array argument (a ``Vec`` parameter, by position or by name) of
        more than ``max_arg_items`` items, or None (anything else is left to ``args_from_json``)."""
        most = self.config.limits.max_arg_items
        if isinstance(body, dict):  # the arguments by name
            pairs = [(col, body.get(col.name)) for col in params]
        elif isinstance(body, list):
            pairs = list(zip(params, body, strict=False))
        else:
            return None
        for col, value in pairs:
            if isinstance(col.type, ArrayT) and isinstance(value, list) and len(value) > most:
                self.metrics.refused.labels("max_arg_items").inc()
                return limit_exceeded("max_arg_items", most, len(value))
        return None

    @contextlib.asynccontextmanager
    async def _http_share(self, identity: str) -> AsyncIterator[None]:
        """At most ``max_undurable_per_connection`` HTTP calls of one identity run (and wait for
        durability) at once; the others queue here, in arrival order."""
        share = self.config.limits.max_undurable_per_connection
        queue = self._http_queues.setdefault(identity, deque())
        if self._http_running.get(identity, 0) >= share or queue:
            assert self._loop is not None
            ticket: asyncio.Future[None] = self._loop.create_future()
            queue.append(ticket)
            try:
                await ticket
            except BaseException:
                if ticket in queue:
                    queue.remove(ticket)
                elif not ticket.cancelled():  # it was handed the slot: pass it on
                    self._http_release(identity)
                raise
        else:
            self._http_running[identity] = self._http_running.get(identity, 0) + 1
        try:
            yield
        finally:
            self._http_release(identity)

    def _http_release(self, identity: str) -> None:
        queue = self._http_queues.get(identity)
        while queue:
            ticket = queue.popleft()
            if not ticket.done():
                ticket.set_result(None)  # the slot passes to it: the running count stays
                return
        running = self._http_running.get(identity, 0) - 1
        if running > 0:
            self._http_running[identity] = running
        else:
            self._http_running.pop(identity, None)
            self._http_queues.pop(identity, None)

    async def _call_detached(self, verified: Verified, reducer: str, args: tuple[Any, ...]) -> web.Response:
        try:
            await self._wait_room()
            self._tick()
            try:
                offset, ret = self.engine.call_detached(verified.claims, reducer, args)
            except SyncError as err:
                # a failure reveals state (e.g. the head in sequence_conflict): answer once that state is durable
                await self._wait_durable(self.engine.committed)
                return _text(530, err.render())
            except InternalError as err:  # rolled back, logged by the engine's hook; nothing to wait for
                return _text(500, err.message)
            self._pump()
            await self._wait_durable(offset)
        except DurabilityFailed as exc:
            return _text(503, f"the commit log could not be written, so the call is not acknowledged: {exc}")
        headers = {}
        if ret is not None:
            headers["syncref-return-value"] = json.dumps(ret)
        return web.Response(status=200, headers=headers)

    async def _sql(self, request: web.Request) -> web.Response:
        verified = self._http_caller(request)
        if isinstance(verified, web.Response):
            return verified
        lim = self.config.limits
        try:
            confirmed = parse_bool(request.query.get("confirmed"), True)
        except ValueError as exc:
            return _text(400, f"invalid confirmed parameter: {exc}")
        text = await self._body_text(request, "SQL text")
        if isinstance(text, web.Response):
            return text
        if len(text.encode("utf-8")) > lim.max_sql_bytes:
            self.metrics.refused.labels("max_sql_bytes").inc()
            return _text(413, f"SQL text over {lim.max_sql_bytes} bytes")
        statements = split_statements(text)
        if len(statements) > lim.max_sql_statements:
            return self._refuse_sql(limit_exceeded("max_sql_statements", lim.max_sql_statements, len(statements)))
        offset = self.engine.committed
        answers: list[tuple[TableRows, float]] = []
        rows_total = 0
        scan = Scan()  # rows examined by all the statements together (max_scan_rows)
        # Every statement's read is taken now, in this one turn: all of them read the state at
        # `offset`, though their rows are built, matched and serialized a slice at a time with
        # the loop going to others in between (ADR-0038)
        reads: list[tuple[Read, float]] = []
        for stmt in statements:
            started = time.monotonic()
            try:
                reads.append((self.engine.read(verified.claims, stmt, scan), started))
            except SyncError as err:
                if err.code is ErrorCode.LIMIT_EXCEEDED and err.details.get("limit") == "max_scan_rows":
                    return self._refuse_sql(err)
                return _text(400, err.render())
        for read, started in reads:
            while not read.step(READ_SLICE_ROWS):
                await asyncio.sleep(0)
            rows = read.result()
            rows_total += len(rows.inserts)
            if rows_total > lim.max_sql_rows:
                return self._refuse_sql(limit_exceeded("max_sql_rows", lim.max_sql_rows, rows_total))
            answers.append((rows, time.monotonic() - started))
        if not answers:
            return _text(400, SyncError(ErrorCode.INVALID_QUERY, {"message": "no statement", "sql": text}).render())
        steps = sql_answer_steps(answers, lim.max_sql_response_bytes, READ_SLICE_ROWS)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                body = done.value
                break
            await asyncio.sleep(0)
        if isinstance(body, SyncError):
            return self._refuse_sql(body)
        if confirmed:
            try:
                await self._wait_durable(offset)
            except DurabilityFailed as exc:
                return _text(503, f"the commit log could not be written, so this read cannot be confirmed: {exc}")
        return web.Response(body=body, content_type="application/json")

    def _refuse_sql(self, err: SyncError) -> web.Response:
        self.metrics.refused.labels(str(err.details["limit"])).inc()
        return _text(400, err.render())

    # --- WebSocket ------------------------------------------------------------------------------------

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        resp = await self._upgrade(request)
        if resp.status != 101 and not isinstance(resp, web.WebSocketResponse):  # a refusal, not a lost client
            self.metrics.rejects.labels(str(resp.status)).inc()
        return resp

    async def _upgrade(self, request: web.Request) -> web.StreamResponse:
        if self.failed is not None and self.failed.done():
            return _text(503, "the commit log could not be written; the server is stopping")
        caller = self._authenticate(request)
        if isinstance(caller, web.Response):
            return caller
        verified = caller.verified
        raw_cid = request.query.get("connection_id")
        if raw_cid is not None:
            if not re.fullmatch(r"[0-9a-fA-F]{1,32}", raw_cid):
                return _text(400, f"Invalid connection ID: {raw_cid[:40]!r} is not 1 to 32 hex digits (big-endian)")
            connection_id = int(raw_cid, 16)
            if connection_id == 0:
                return _text(400, "Invalid connection ID: the all-zeros ConnectionId is reserved.")
        else:
            connection_id = secrets.randbits(128) or 1
        if not self._names_this_database(request.match_info["name"]):
            return _text(404, f"`{request.match_info['name']}` not found")
        chosen = select_subprotocol(request.headers.getall("Sec-WebSocket-Protocol", []))
        if chosen is None:
            return _text(400, "no valid protocol selected")
        try:
            compression = wire.Compression.parse(request.query.get("compression"))
            confirmed = parse_bool(request.query.get("confirmed"), True)
        except ValueError as exc:
            return _text(400, str(exc))
        refused = self._admit(verified)
        if refused is not None:
            return refused
        lim = self.config.limits
        mine = sum(1 for other in self.sessions.values() if other.verified.identity == verified.identity)
        if mine >= lim.max_connections_per_identity:
            self.metrics.refused.labels("max_connections_per_identity").inc()
            return _text(429, f"too many connections for this identity ({mine} open; limit "
                              f"{lim.max_connections_per_identity}): close one first")
        expires = _expiry(verified, self.config.auth.leeway_s)
        if expires is not None and expires <= wall_time():
            return _text(401, "token expired")
        # aiohttp refuses a message of max_msg_size bytes or more; ours allows exactly max_message_size
        ws = web.WebSocketResponse(protocols=(chosen,), autoping=False, compress=False,
                                   timeout=lim.close_timeout_s, max_msg_size=lim.max_message_size + 1)
        ws.headers["spacetime-identity"] = verified.claims.identity
        if caller.minted:
            ws.headers["spacetime-identity-token"] = caller.token
        try:
            await ws.prepare(request)
        except ConnectionError as exc:  # the client reset the connection during the 101: a plain disconnect
            log.debug("client %s went away during the WebSocket upgrade: %r", request.remote, exc)
            return _LostDuringUpgrade()  # nothing registered; aiohttp drops the connection quietly
        conn_id = self.engine.connect(verified.claims, confirmed)
        version = 3 if chosen.startswith("v3.") else 2
        s = Session(conn_id, ws, version, compression, verified, connection_id, request)
        self.sessions[conn_id] = s
        self.metrics.connects.labels(chosen).inc()
        first = wire.encode_server(wire.InitialConnection(verified.claims.identity, connection_id, caller.token))
        try:
            s.busy = True  # InitialConnection goes first
            await ws.send_bytes(wire.frame_server(first, compression))
            s.busy = False
            s.tasks = [self._supervised(s, "sender", self._sender(s)),
                       self._supervised(s, "processor", self._processor(s)),
                       self._supervised(s, "keepalive", self._keepalive(s))]
            ends = _connection_expiry(verified, self.config.auth.leeway_s)
            if ends is not None:
                s.tasks.append(self._supervised(s, "expire", self._expire(s, ends)))
            s.reader = asyncio.create_task(self._reader(s))
            await s.reader
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # the reader's own bug: this connection is closed 1011, nobody else's
            self._task_failed(s, "reader", exc)
            with contextlib.suppress(Exception):
                await asyncio.gather(*s.closers)
        finally:
            await self._finish(s)
        return ws

    async def _reader(self, s: Session) -> None:
        limit = self.config.limits.max_inbound_queue
        byte_limit = self.config.limits.max_inbound_bytes
        most = self.config.limits.max_queries_per_connection  # a Subscribe over it is not decoded
        batch = self.config.limits.max_batch_per_turn
        frames = 0
        engine = self.engine
        mine = 0  # rows this connection's reads taken here examined since its last yield (not others')
        async for msg in s.ws:
            s.last_seen = time.monotonic()
            frames += 1
            if frames >= batch:  # frames already buffered come back without a pause: give others a turn
                frames = 0
                await asyncio.sleep(0)
                if mine >= SCAN_TURN_ROWS:
                    await asyncio.sleep(0)  # as the processor does: the answer's delivery an iteration apart
                mine = 0
            if msg.type == WSMsgType.BINARY:
                size = len(msg.data)
                if s.inbound_bytes + size > byte_limit:
                    await self._close(s, 1013, "too many requests", "inbound_bytes")
                    return
                # The count is checked while decoding (a frame never decodes past the room left),
                # and a long v3 frame is decoded a turn's worth at a time.  A frame is all or nothing:
                # nothing of it is queued unless all of it decodes.
                decoded: list[wire.Received] = []
                try:
                    if s.version == 2 and len(s.inbound) < limit:  # one message: no generator, no turns
                        decoded.append(wire.decode_client(msg.data, max_queries=most))
                    else:
                        for item in wire.client_frame_messages(msg.data, s.version, limit - len(s.inbound),
                                                               max_queries=most):
                            decoded.append(item)
                            if len(decoded) % DECODE_TURN == 0:
                                await asyncio.sleep(0)
                except wire.TooManyMessages:
                    await self._close(s, 1013, "too many requests", "inbound_queue")
                    return
                except BsatnError as exc:
                    await self._close(s, 1011, f"malformed message: {exc}", "malformed")
                    return
                before = engine.rows_examined
                if len(decoded) == 1 and self._take_now(s, decoded[0]):
                    mine += engine.rows_examined - before
                    if mine >= SCAN_TURN_ROWS:
                        frames = batch  # its reads examined many rows: the next frame waits a turn
                    continue  # handled here: nothing queued ahead of it and nothing to wait for
                s.inbound.append((decoded[0], size))
                s.inbound.extend((x, 0) for x in decoded[1:])
                s.inbound_bytes += size
                s.inbound_ready.set()
            elif msg.type == WSMsgType.TEXT:
                # SpacetimeDB's words (message_handlers_v2.rs, _v3.rs)
                await self._close(s, 1011, f"v{s.version} websocket does not support text messages", "text_frame")
                return
            elif msg.type == WSMsgType.PING:
                await s.ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                continue
            else:  # CLOSE / ERROR (aiohttp closed an oversized message with 1009 itself)
                if msg.type == WSMsgType.ERROR:
                    self.metrics.closes.labels("message_error").inc()
                return

    async def _processor(self, s: Session) -> None:
        """Feed the connection's queue to the engine in order, ``max_batch_per_turn`` messages
        per turn, or fewer once its reads have examined ``SCAN_TURN_ROWS`` rows: then every other
        ready connection runs before this one goes on (round-robin)."""
        engine = self.engine
        batch = self.config.limits.max_batch_per_turn
        share = self.config.limits.max_undurable_per_connection
        while not s.closing:
            await s.inbound_ready.wait()
            s.inbound_ready.clear()
            if s.reading is not None:  # a snapshot the reader's direct path took (_take_now)
                await self._step_read(s)
            taken = 0
            mine = 0  # rows this connection's reads examined this turn (not others', while it waited)
            while s.inbound and not s.closing:
                if self.failed is not None and self.failed.done():
                    return  # nothing more is taken once the log cannot be written
                if taken >= batch:
                    taken = 0
                    self._pump()  # once per turn: its messages' records go to the writer together
                    await asyncio.sleep(0)
                    if mine >= SCAN_TURN_ROWS:
                        # the delivery just scheduled runs in the next loop iteration ahead of its
                        # input and timers, and so would this task: one more iteration apart, the
                        # answer's encoding and the next read's evaluation are two holds, not one
                        await asyncio.sleep(0)
                    mine = 0
                    continue
                first, size = s.inbound[0]
                if isinstance(first, wire.CallReducer):
                    while s.undurable and s.undurable[0] <= engine.durable:
                        s.undurable.popleft()
                    if len(s.undurable) >= share:  # this connection's share of the window is in use
                        taken = 0
                        self._pump()  # before any wait: the records waited on must reach the writer
                        await self._wait_durable_quietly(s.undurable[0])
                        continue
                    if not engine.can_commit():
                        taken = 0
                        self._pump()
                        await self._wait_room()
                        continue
                s.inbound.popleft()
                s.inbound_bytes -= size
                taken += 1
                before, rows_before = engine.committed, engine.rows_examined
                self._dispatch(s, first)
                if s.reading is not None:
                    await self._step_read(s)
                if engine.committed > before and isinstance(first, wire.CallReducer):
                    s.undurable.append(engine.committed)
                mine += engine.rows_examined - rows_before
                if mine >= SCAN_TURN_ROWS:
                    taken = batch  # reads that examined many rows end the turn: others' before the next
            if taken:
                self._pump()
            if mine >= SCAN_TURN_ROWS:
                # the queue ran dry on a heavy turn: the same two yields before parking, or a
                # message queued later in this iteration would wake the processor into the
                # iteration of this turn's delivery (its read and that encoding, one hold)
                await asyncio.sleep(0)
                await asyncio.sleep(0)

    def _take_now(self, s: Session, msg: wire.Received) -> bool:
        """Handle ``msg`` from the reader itself, without the hop through the inbound queue and the
        processor task, when the processor would take it at once: the queue is empty (so the
        processor is parked, waiting for it), the connection is open, the log writable, and a
        call has room in the connection's share and the durability window.
        False: queue it as usual.  Order is kept (nothing is queued ahead of it) and so is
        fairness (the reader yields every ``max_batch_per_turn`` frames, as the processor does)."""
        if s.inbound or s.closing or s.reading is not None or (self.failed is not None and self.failed.done()):
            return False
        if isinstance(msg, wire.OneOffQuery):  # read in slices by the processor (ADR-0038)
            return False
        engine = self.engine
        if isinstance(msg, wire.CallReducer):
            while s.undurable and s.undurable[0] <= engine.durable:
                s.undurable.popleft()
            if len(s.undurable) >= self.config.limits.max_undurable_per_connection or not engine.can_commit():
                return False
            before = engine.committed
            self._dispatch(s, msg)
            if engine.committed > before:
                s.undurable.append(engine.committed)
        else:
            self._dispatch(s, msg)
            if s.reading is not None:  # a big snapshot taken: the processor steps it (ADR-0041)
                s.inbound_ready.set()
        self.taken_by_reader += 1
        self._pump_soon()
        return True

    async def _step_read(self, s: Session) -> None:
        """Step the read :meth:`_dispatch_one` took for ``s`` -- a one-off (``Engine.begin_read``)
        or a big ``Subscribe`` snapshot / ``Unsubscribe``'s dropped rows (``Engine.handle``, its
        ``slice_rows``): every check made, the rows fixed as they were then; its rows are built
        and matched ``READ_SLICE_ROWS`` at a time, the loop going to other clients between
        slices; this connection's later messages wait, and the answer goes out where the read was
        taken (ADR-0038, ADR-0041)."""
        assert s.reading is not None
        request_id, read = s.reading
        try:
            while not read.step(READ_SLICE_ROWS):
                await asyncio.sleep(0)
                if s.closing:
                    return
            if isinstance(read, Read):
                table = await self._encode_answer(s, read)
                if s.closing:
                    return
                self.engine.answer_read(s.conn_id, request_id, read, table)
            else:
                tables = await self._encode_ahead(s, read)
                if s.closing:
                    return
                self.engine.answer_snapshot(s.conn_id, read, tables)
        except Exception as exc:  # a bug: this connection cannot trust its state any more; others go on
            what: wire.Received = wire.OneOffQuery(request_id, "") if isinstance(read, Read) else \
                wire.Subscribe(request_id, read.query_set_id, ())
            self._internal_ws(s, what, exc)
        finally:
            s.reading = None
        self._pump()

    async def _encode_ahead(self, s: Session, snap: Snapshot) -> tuple[TableRows, ...] | None:
        """The rows of a sliced snapshot, each table's row list encoded ``READ_SLICE_ROWS`` rows at
        a time with the loop going to others in between (:meth:`_encode_table`); None once their
        bytes pass ``max_outbound_message_bytes`` (refused whatever the rest: the engine's
        estimate is an upper bound) or the connection closes (ADR-0041)."""
        room = self.config.limits.max_outbound_message_bytes
        out: list[TableRows] = []
        for t in snap.result():
            done = await self._encode_table(s, t, room)
            if done is None:
                return None
            if isinstance(done, wire.EncodedRows):
                room -= wire.rowlist_bytes(done.encoded)
            out.append(done)
        return tuple(out)

    async def _encode_answer(self, s: Session, read: Read) -> TableRows | None:
        """A one-off's answer of more than ``READ_SLICE_ROWS`` rows encoded ahead as a snapshot's
        (:meth:`_encode_table`; the sender then takes its bytes as they are, unhashed); None: left
        to the sender -- a small answer (shared through the body cache, as before), one over
        ``max_outbound_message_bytes`` (the engine refuses it from its estimate, as before) or a
        closed connection's (ADR-0043)."""
        t = read.result()
        if len(t.inserts) + len(t.deletes) <= READ_SLICE_ROWS:
            return None
        done = await self._encode_table(s, t, self.config.limits.max_outbound_message_bytes)
        return done if isinstance(done, wire.EncodedRows) else None

    async def _encode_table(self, s: Session, t: TableRows, room: int) -> TableRows | None:
        """``t``'s row list encoded ``READ_SLICE_ROWS`` rows at a time, the loop going to others
        in between (``wire.snapshot_row_encoder``: what ``wire._snapshot_rowlist`` does in one
        piece, so the bytes are the same), as a ``wire.EncodedRows``; None once its bytes pass
        ``room`` or the connection closes.  Each slice's rows are joined as they are encoded and
        kept as a piece (``wire.rows_from_pieces``: the body takes the pieces as parts, nothing of
        the whole copied in one piece).  A table the wire encodes from the store's columns (a
        stream's frozen view: the one-off of a stream alone, a resume) is encoded from them the
        same way, whole runs of about as many rows a step (``wire.column_row_slices``)
        (ADR-0041, ADR-0043)."""
        enc = wire.snapshot_row_encoder(t, self._rows)
        pieces: list[bytes] = []
        lengths: list[int] = []
        total = 0
        if enc is None:
            for more, sizes in wire.column_row_slices(t, READ_SLICE_ROWS):
                pieces += more
                lengths += sizes
                total += sum(sizes)
                if total > room:
                    return None
                await asyncio.sleep(0)
                if s.closing:
                    return None
            return wire.EncodedRows(t.table, t.inserts, t.deletes, t.event, wire.rows_from_pieces(pieces, lengths))
        rows = (*t.inserts, *t.deletes)
        for at in range(0, len(rows), READ_SLICE_ROWS):
            piece = [enc(row) for row in rows[at:at + READ_SLICE_ROWS]]
            pieces.append(b"".join(piece))
            lengths += map(len, piece)
            total += len(pieces[-1])
            if total > room:
                return None
            await asyncio.sleep(0)
            if s.closing:
                return None
        encoded = wire.rows_from_pieces(pieces, lengths) if lengths else wire.RowList.of(())
        return wire.EncodedRows(t.table, t.inserts, t.deletes, t.event, encoded)

    def _dispatch(self, s: Session, msg: wire.Received) -> None:
        try:
            self._dispatch_one(s, msg)
        except Exception as exc:  # a bug: this connection cannot trust its state any more; others go on
            self._internal_ws(s, msg, exc)
        engine = self._engine
        if engine is not None and engine.committed > self._commits.last:
            # stamped now, not when the turn's _pump runs (after its other messages)
            self._commits.stamp(engine.committed, time.monotonic())

    def _internal_ws(self, s: Session, msg: wire.Received, exc: Exception) -> None:
        """A bug handling ``msg``: logged, counted, and this connection closed 1011."""
        self.metrics.internal.labels("websocket").inc()
        self.errors.log(f"ws:{type(msg).__name__}:{type(exc).__name__}", logging.ERROR,
                        f"internal error handling {type(msg).__name__}: {exc!r:.300}", exc_info=exc)
        s.closers.append(asyncio.ensure_future(self._close(
            s, m.CLOSE_PROTOCOL, safe_text(f"internal error: {type(exc).__name__}"), "internal")))

    def _dispatch_one(self, s: Session, msg: wire.Received) -> None:
        engine = self.engine
        now = self._tick()
        counts = self._in_counts
        if isinstance(msg, wire.OverlongSubscribe):  # a Subscribe whose texts were not decoded
            counts["Subscribe"] = counts.get("Subscribe", 0) + 1
            engine.refuse_overlong(s.conn_id, msg.request_id, msg.query_set_id, msg.count)
            return
        kind = type(msg).__name__
        counts[kind] = counts.get(kind, 0) + 1
        if isinstance(msg, wire.OneOffQuery):  # stepped by the processor (_step_read)
            read = engine.begin_read(s.conn_id, msg.request_id, msg.query_string)
            if read is not None:
                s.reading = (msg.request_id, read)
            return
        if isinstance(msg, wire.CallProcedure):
            if len(s.side) >= self.config.limits.max_outbound_queue:  # its answers are output like any other
                engine.close(s.conn_id, m.SLOW_CONSUMER_REASON)
                return
            name = msg.procedure
            if len(name) > PROCEDURE_NAME_ECHO:
                name = name[:PROCEDURE_NAME_ECHO] + "..."
            s.side.append(wire.encode_server(wire.ProcedureResult(
                wire.ProcedureInternalError(f"no such procedure: {name} (this module defines none)"),
                now, 0, msg.request_id)))
            return
        if isinstance(msg, wire.CallReducer):
            s.call_ts[msg.request_id] = now
            most = self.config.limits.max_call_body_bytes
            if len(msg.args) > most:  # before the arguments are decoded or parsed
                self.metrics.refused.labels("max_call_body_bytes").inc()
                engine.reject(s.conn_id, msg.request_id, limit_exceeded("max_call_body_bytes", most, len(msg.args)))
                return
        try:
            abstract = wire.from_wire(msg, self.config.limits.max_arg_items)
        except TooManyItems as exc:  # before its items are read
            assert isinstance(msg, wire.CallReducer)
            self.metrics.refused.labels("max_arg_items").inc()
            engine.reject(s.conn_id, msg.request_id, limit_exceeded("max_arg_items", self.config.limits.max_arg_items,
                                                                    exc.count))
            return
        except BsatnError as exc:
            assert isinstance(msg, wire.CallReducer)
            engine.reject(s.conn_id, msg.request_id, SyncError(
                ErrorCode.INVALID_ARGUMENT, {"argument": "*", "message": f"malformed BSATN arguments: {exc}"}))
            return
        engine.handle(s.conn_id, abstract)
        if isinstance(abstract, (m.Subscribe, m.Unsubscribe)):
            snap = engine.snapshot_taken(s.conn_id)
            if snap is not None:  # over READ_SLICE_ROWS: stepped by the processor (_step_read, ADR-0041)
                s.reading = (abstract.request_id, snap)

    def _encode(self, s: Session, message: m.ServerMessage) -> tuple[bytes | tuple[bytes, ...], _Encoded | None]:
        """The BSATN body of an engine message, and its cache entry when it is shared.

        The engine hands every subscriber that sees the same rows the *same* ``TransactionUpdate``
        object, so the encoded body is found by identity (no hashing of rows); other messages
        (errors, unsubscribes) are looked up by value.  The entry also keeps the body's framed forms
        per compression, so a v2 frame is compressed once for all its receivers.  A snapshot
        (``SubscribeApplied``) is made by the engine for one subscribe and sent once: it is encoded
        and not kept (kept, a gap replay's 30 KB body, frame and WebSocket frame stayed in the
        cache until 16 MiB of them pushed out the shared updates; its rows are never hashed)."""
        self.metrics.sends.message(type(message).__name__)
        if isinstance(message, m.ReducerResult):
            ts = s.call_ts.pop(message.request_id, self._last_now)
            return wire.encode_reducer_result(message, ts, self._rows), None
        if type(message) is m.SubscribeApplied:  # one receiver: nothing to share
            parts = wire.subscribe_applied_parts(message, self._rows)
            if len(parts) == 1:
                return parts[0], None
            if sum(map(len, parts)) > BODY_CACHE_ITEM_BYTES:
                return tuple(parts), None  # a replay's megabytes: framed as parts (ADR-0020 addendum)
            return b"".join(parts), None
        if type(message) is m.UnsubscribeApplied and message.rows is not None:
            # dropped rows: one receiver, as a snapshot; not kept, and never hashed (a value key
            # would hash every row in one piece: ~33 ms for 30,000 sync_stream rows; ADR-0041)
            parts = wire.encode_server_parts(wire.to_wire(message, cache=self._rows))
            if len(parts) > 1 and sum(map(len, parts)) > BODY_CACHE_ITEM_BYTES:
                return tuple(parts), None
            return b"".join(parts), None
        if type(message) is m.OneOffQueryResult and not isinstance(message.result, str) \
                and (is_column_rows(message.result.inserts) or type(message.result) is wire.EncodedRows):
            # a stream's frozen view, or rows encoded ahead (ADR-0043): one receiver, not kept, not hashed
            parts = wire.encode_server_parts(wire.to_wire(message, cache=self._rows))
            if len(parts) > 1 and sum(map(len, parts)) > BODY_CACHE_ITEM_BYTES:
                return tuple(parts), None
            return b"".join(parts), None
        # by identity: a TransactionUpdate is shared by its subscribers
        key: object = id(message) if isinstance(message, m.TransactionUpdate) else (message,)
        entry = self._bodies.get(key)
        if entry is not None and (entry.message is message or not isinstance(key, int)):
            self._bodies.move_to_end(key)
            self.metrics.sends.encode_hits += 1
            return entry.body, entry
        parts = wire.encode_server_parts(wire.to_wire(message, cache=self._rows))
        if len(parts) > 1 and sum(map(len, parts)) > BODY_CACHE_ITEM_BYTES:
            # a large body is not kept (it would pin memory) nor joined: its parts are framed as
            # they are and go to the socket uncopied (a replay's megabytes, ADR-0020 addendum)
            return tuple(parts), None
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(body) > BODY_CACHE_ITEM_BYTES:  # a large body is not kept: it would pin memory
            return body, None
        if entry is not None:  # an id reused by a newer object: the old entry is stale
            self._body_bytes -= entry.nbytes
        entry = self._bodies[key] = _Encoded(message, body)
        self._body_bytes += entry.nbytes
        while len(self._bodies) > BODY_CACHE_ITEMS or self._body_bytes > BODY_CACHE_BYTES:
            _key, old = self._bodies.popitem(last=False)
            self._body_bytes -= old.nbytes
        return body, entry

    def _frame(self, body: bytes, entry: _Encoded | None, compression: wire.Compression) -> bytes:
        if entry is None:
            return wire.frame_server(body, compression)
        frame = entry.frames.get(compression)
        if frame is None:
            frame = entry.frames[compression] = wire.frame_server(body, compression)
            entry.nbytes += len(frame)
            self._body_bytes += len(frame)
        return frame

    def _turn(self, s: Session) -> tuple[list[Pending], int] | None:
        """Take one turn's messages off the connection's queue as whole WebSocket frames, ready
        for one transport write, and their payload bytes: at most ``SEND_BATCH`` (v3:
        ``SEND_BATCH_V3``) messages and V3_SOFT_CAP bytes (one larger message goes alone).  v2
        sends one frame per message (the frames of a turn are written together, ADR-0018); v3
        puts the whole turn in one frame of several messages.  A subscriber that lags behind
        therefore gets its backlog in few writes, and its queue drains a turn at a time.  None: a
        message was over the one-message bound; the connection is being closed (``broken``) and
        nothing more is sent to it.

        The common message -- a ``TransactionUpdate`` the engine shares between subscribers,
        already encoded for an earlier receiver -- costs a cache lookup by identity and an
        append; its delivery is counted for the latency histogram by offset and observed once
        per offset when the pass ends (:meth:`_flush_delivered`)."""
        v3 = s.version == 3
        turn = SEND_BATCH_V3 if v3 else SEND_BATCH
        compression = s.compression
        bodies: list[bytes | tuple[bytes, ...]] = []  # v3: the turn's message bodies (large ones as parts)
        frames: list[Pending] = []  # the turn's whole WebSocket frames (a large compressed one: still to make)
        size = payload = 0
        body: bytes | tuple[bytes, ...]
        while s.side and len(bodies) + len(frames) < turn:
            body = s.side.popleft()
            if v3:
                bodies.append(body)
            else:
                frame = wire.frame_server(body, compression)
                frames.append(ws_binary_frame(frame))
                payload += len(frame)
            size += len(body)
        taken = len(bodies) + len(frames)
        outs = self.engine.take(s.conn_id, turn - taken, wire.V3_SOFT_CAP, size) if taken < turn else []
        if not outs and not taken:
            return [], 0
        # v3: a turn of shared updates only is one frame every receiver of the same updates gets:
        # built (and compressed) once per pass, found by the updates' identities -- and then taken
        # as it is, nothing per message but the key (ADR-0023); its counters are added at the flush
        v3_ids: list[int] | None = None
        if v3 and not taken:
            messages = [out.message for out in outs]
            v3_ids = list(map(id, messages))
            made = self._v3_turns.get((compression, tuple(v3_ids)))
            if made is not None and made[3] and all(map(operator.is_, made[0], messages)):
                hit = self._turn_hits.get(id(made))
                if hit is None:
                    self._turn_hits[id(made)] = [1, made]
                else:
                    hit[0] += 1
                return list(made[1]), made[2]
        cache = self._bodies
        delivered = self._delivered
        bound = self.config.limits.max_outbound_message_bytes
        shared = 0
        large = False  # a body over BODY_CACHE_ITEM_BYTES is in the turn: framed by _large_frame
        for out in outs:
            message = out.message
            entry = cache.get(id(message)) if type(message) is m.TransactionUpdate else None
            if entry is not None and entry.message is message:  # encoded for an earlier receiver
                cache.move_to_end(id(message))
                shared += 1
                body = entry.body
            elif (big := self._large.get(id(message))) is not None and big.message is message:
                self._large.move_to_end(id(message))
                shared += 1  # a large update encoded for an earlier receiver
                body, entry = big.body, None
            else:
                body, entry = self._encode(s, message)
                if (entry is None and type(message) is m.TransactionUpdate and isinstance(body, bytes)
                        and len(body) > BODY_CACHE_ITEM_BYTES):
                    self._share_large(message, body)
            length = len(body) if isinstance(body, bytes) else sum(map(len, body))
            if length > bound:  # never sent undecodable
                self.metrics.internal.labels("oversize").inc()
                s.broken = True
                s.closers.append(asyncio.ensure_future(self._close(
                    s, m.CLOSE_PROTOCOL, f"internal error: a {length}-byte message is over "
                    "max_outbound_message_bytes", "internal")))
                return None
            if length > BODY_CACHE_ITEM_BYTES and isinstance(body, bytes):
                body = (body,)  # framed (and compressed, off the loop) as a large body kept as parts is
            if v3:
                bodies.append(body)
                if entry is None:
                    v3_ids = None  # not shared: this turn is not kept for others
            elif isinstance(body, tuple):  # a large body's parts, framed without joining them
                payload += self._large_frame(frames, body, compression)
                large = True
            elif entry is not None:
                data = entry.wire.get(compression)
                if data is None:
                    data = self._wire_frame(self._frame(body, entry, compression), entry, compression)
                frames.append(data)
                payload += len(data) - _ws_header(len(data))
            else:
                frame = wire.frame_server(body, compression)
                frames.append(ws_binary_frame(frame))
                payload += len(frame)
            if isinstance(message, DELIVERED):
                delivered[out.offset] = delivered.get(out.offset, 0) + 1
        if shared:
            sends = self.metrics.sends
            sends.encode_hits += shared
            sends.messages["TransactionUpdate"] = sends.messages.get("TransactionUpdate", 0) + shared
        if v3:
            turn_key = None if v3_ids is None else (compression, tuple(v3_ids))
            made = None if turn_key is None else self._v3_turns.get(turn_key)
            if made is not None and all(a is b.message for a, b in zip(made[0], outs, strict=True)):
                frames.extend(made[1])
                payload += made[2]
            else:
                start, before = len(frames), payload
                for batch in _v3_batches(bodies):
                    if isinstance(batch, tuple):  # a large body goes alone, framed as its parts
                        payload += self._large_frame(frames, batch, compression)
                        large = True
                        continue
                    frame = wire.frame_server(batch, compression)
                    frames.append(ws_binary_frame(frame))
                    payload += len(frame)
                if turn_key is not None:
                    # a turn of TransactionUpdates only is taken as it is by the next receivers of
                    # the same updates (above): what it counts per receiver is kept with it
                    # (its bodies are all cached ones, so none is large: no _Compress among its frames)
                    updates_only = all(type(out.message) is m.TransactionUpdate for out in outs)
                    kept = cast(list[Frame], frames[start:])
                    self._v3_turns[turn_key] = (tuple(out.message for out in outs), kept, payload - before,
                                                tuple(out.offset for out in outs) if updates_only else ())
        if large and compression is not wire.Compression.NONE:
            self._hold(s, outs)
        return frames, payload

    def _hold(self, s: Session, outs: Sequence[Any]) -> None:
        """The turn's frames wait for a compression (the sender's, after this): its deliveries move
        from the pass's counts to the connection's (``held``), observed when the sender hands the
        frames to the transport -- the fanout latency includes the wait."""
        delivered, held = self._delivered, s.held
        for out in outs:
            if isinstance(out.message, DELIVERED):
                n = delivered[out.offset] - 1
                if n:
                    delivered[out.offset] = n
                else:
                    del delivered[out.offset]
                held[out.offset] = held.get(out.offset, 0) + 1

    def _share_large(self, message: m.ServerMessage, body: bytes) -> None:
        """Keep a large update's body for its next receivers (:class:`_Large`), the oldest let go
        past ``LARGE_SHARE_BYTES`` (the newest is always kept; a turn holding a job keeps it)."""
        old = self._large.pop(id(message), None)
        if old is not None:  # an id reused by a newer object: the old entry is stale
            self._large_bodies.pop(id(old.body), None)
            self._large_bytes -= old.nbytes
        self._large[id(message)] = self._large_bodies[id(body)] = _Large(message, body)
        self._large_bytes += len(body)
        self._trim_large()

    def _trim_large(self) -> None:
        while self._large_bytes > LARGE_SHARE_BYTES and len(self._large) > 1:
            _key, gone = self._large.popitem(last=False)
            del self._large_bodies[id(gone.body)]
            self._large_bytes -= gone.nbytes

    def _large_made(self, big: _Large, n: int) -> None:
        """A kept body's compressed frame (``n`` bytes) was made: kept with it, it counts toward
        ``LARGE_SHARE_BYTES`` too (for a poorly compressible body, nearly as much again per compression)."""
        if self._large.get(id(big.message)) is not big:
            return  # let go meanwhile: held only by the turns that wait for it
        big.nbytes += n
        self._large_bytes += n
        self._trim_large()

    def _large_frame(self, frames: list[Pending], parts: tuple[bytes, ...], compression: wire.Compression) -> int:
        """Append a large body's frame to the turn: framed now when uncompressed (its parts are not
        copied), else a :class:`_Compress` for the sender to make off the event loop -- for a large
        update's body (:meth:`_share_large`, found by identity) the same job for every receiver with
        this compression.  Returns the payload bytes known now."""
        if compression is wire.Compression.NONE:
            tagged = wire.frame_server_parts(parts, compression)
            frames.append(ws_binary_frame_parts(tagged))
            return sum(map(len, tagged))
        big = self._large_bodies.get(id(parts[0])) if len(parts) == 1 else None
        if big is not None and big.body is parts[0]:
            job = big.jobs.get(compression)
            if job is None or job.failed():  # (a failed one is not handed on: a MemoryError passes)
                job = big.jobs[compression] = _Compress(parts, compression, partial(self._large_made, big))
            frames.append(job)
            return 0
        frames.append(_Compress(parts, compression))
        return 0

    @staticmethod
    async def _compressed(frames: list[Pending]) -> tuple[list[Frame], int]:
        """The turn's frames with each :class:`_Compress` made (in a worker thread, or by the sender of
        another receiver of the same job), and their payload bytes."""
        out: list[Frame] = []
        extra = 0
        for f in frames:
            if isinstance(f, _Compress):
                tagged = await f.tagged()
                out.append(ws_binary_frame_parts(tagged))
                extra += sum(map(len, tagged))
            else:
                out.append(f)
        return out, extra

    def _supervised(self, s: Session, where: str, work: Awaitable[None]) -> asyncio.Task[None]:
        """A per-connection task (sender, processor, keepalive, expiry) that ends with an exception
        is not left dead under a live connection -- one that would read but never answer, or answer
        but never read: :meth:`_task_failed` closes that connection 1011 and the server goes on."""
        task = asyncio.ensure_future(work)

        def ended(t: asyncio.Task[None]) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None and isinstance(exc, Exception):
                self._task_failed(s, where, exc)

        task.add_done_callback(ended)
        return task

    def _task_failed(self, s: Session, where: str, exc: Exception) -> None:
        """One connection's task raised (a bug of ours, not the peer's input): count it in
        ``syncref_internal_errors_total{where}``, log it (rate-limited), and close that connection
        1011 ``internal error: <type>``.  During a close already under way it is only logged."""
        self.errors.log(f"{where}:{type(exc).__name__}", logging.ERROR,
                        f"internal error in a connection's {where}: {exc!r:.300}", exc_info=exc)
        if s.closing:
            return
        self.metrics.internal.labels(where).inc()
        s.broken = True
        s.held.clear()
        s.closers.append(asyncio.ensure_future(self._close(
            s, m.CLOSE_PROTOCOL, safe_text(f"internal error: {type(exc).__name__}"), "internal")))

    def _compress_failed(self, s: Session, exc: Exception) -> None:
        """A frame of the connection's turn could not be made (its compression raised, perhaps in a
        job shared with other receivers, each told the same): the connection cannot get the rest of
        its updates in order, so it is closed 1011 -- not left open with its sender gone."""
        self.metrics.internal.labels("compress").inc()
        self.errors.log(f"compress:{type(exc).__name__}", logging.ERROR,  # (once per job's receivers: rate-limited)
                        f"internal error compressing a frame: {exc!r:.300}", exc_info=exc)
        s.broken = True
        s.held.clear()  # never handed to the transport: not delivered
        s.closers.append(asyncio.ensure_future(self._close(
            s, m.CLOSE_PROTOCOL, safe_text(f"internal error: {type(exc).__name__}"), "internal")))

    def _release_held(self, s: Session) -> None:
        """The connection's held deliveries (:meth:`_hold`) were handed to the transport: observe them."""
        delivered = self._delivered
        for offset, n in s.held.items():
            delivered[offset] = delivered.get(offset, 0) + n
        s.held.clear()
        self._flush_delivered()

    def _flush_delivered(self) -> None:
        """Observe the fanout latency of the messages handed to sockets since the last flush:
        once per commit offset, weighted by how many receivers got a message derived from it;
        and count the v3 turns taken as they were (:meth:`_turn`) as their messages would have been."""
        delivered = self._delivered
        if self._turn_hits:
            sends = self.metrics.sends
            for n, made in self._turn_hits.values():
                offsets = made[3]
                for offset in offsets:
                    delivered[offset] = delivered.get(offset, 0) + n
                sends.encode_hits += n * len(offsets)
                sends.messages["TransactionUpdate"] = sends.messages.get("TransactionUpdate", 0) + n * len(offsets)
            self._turn_hits.clear()
        self._v3_turns.clear()
        if not delivered:
            return
        now = time.monotonic()
        commits = self._commits
        latency = self.metrics.fanout_latency
        for offset, n in delivered.items():
            committed_at = commits.at(offset)
            if committed_at is not None:
                latency.observe(now - committed_at, n)
        delivered.clear()

    def _write_now(self, s: Session) -> bool:
        """Send the connection's released messages from here, without waking its sender task,
        while the socket takes everything at once (nothing is waiting in the transport's
        buffer): each turn's frames in one transport write, in order with everything the sender
        task wrote before.  True when nothing is left to send; False when the sender task must
        take over (the peer is not keeping up, or the connection is closing)."""
        engine = self.engine
        transport = s.request.transport
        sends = self.metrics.sends
        while s.side or engine.releasable(s.conn_id):
            if (s.busy or s.closing or s.broken or s.ws.closed or transport is None or transport.is_closing()
                    or transport.get_write_buffer_size() or s.deferred is not None):
                return False
            turn = self._turn(s)
            if turn is None:
                return True
            frames, payload = turn
            if not all(isinstance(f, bytes | tuple) for f in frames):  # one to compress: the sender's, in order
                s.deferred = turn
                return False
            if frames:
                write_frames(transport, cast(list[Frame], frames))
                sends.writes += 1
                sends.frames += len(frames)
                sends.bytes += payload
        return True

    def _wire_frame(self, frame: bytes, entry: _Encoded | None, compression: wire.Compression) -> bytes:
        """``frame`` as a whole WebSocket binary frame (kept in the cache entry when shared)."""
        if entry is None:
            return ws_binary_frame(frame)
        data = entry.wire.get(compression)
        if data is None:
            data = entry.wire[compression] = ws_binary_frame(frame)
            entry.nbytes += len(data)
            self._body_bytes += len(data)
        return data

    async def _sender(self, s: Session) -> None:
        """Send what the pump could not write directly: one turn at a time, each turn's frames in
        one transport write; then, while the transport is over its high-water mark, wait for the
        peer to take it -- at most ``send_timeout_s``, else the peer is a slow consumer."""
        engine = self.engine
        limits = self.config.limits
        sends = self.metrics.sends
        while not s.closing:
            await s.wake.wait()
            s.wake.clear()
            while not s.closing and not s.broken and (
                    s.deferred is not None or s.side or engine.releasable(s.conn_id)):
                transport = s.request.transport
                if s.ws.closed or transport is None or transport.is_closing():
                    break  # the connection is going: its close path finishes it
                s.busy = True  # the pump's direct writes wait until this turn is written and taken
                try:
                    turn, s.deferred = (s.deferred, None) if s.deferred is not None else (self._turn(s), None)
                    if turn is None:
                        return
                    pending, payload = turn
                    self._flush_delivered()
                    if not pending:
                        continue
                    try:
                        frames, extra = await self._compressed(pending)
                    except Exception as exc:  # (MemoryError, a compressor's bug): this frame cannot go
                        self._compress_failed(s, exc)
                        return
                    payload += extra
                    if s.closing or s.ws.closed or transport.is_closing():
                        s.held.clear()  # never handed to the transport: not delivered
                        break  # it went while the frame was being compressed
                    write_frames(transport, frames)
                    sends.writes += 1
                    sends.frames += len(frames)
                    sends.bytes += payload
                    del frames
                    if s.held:  # the deliveries that waited for the compression: observed now
                        self._release_held(s)
                    try:  # a peer that takes nothing for send_timeout_s holds memory for nobody: drop it
                        if not _cannot_block(transport, 0):
                            async with asyncio.timeout(limits.send_timeout_s):
                                await s.request.writer.drain()
                    except TimeoutError:
                        self.metrics.refused.labels("send_timeout_s").inc()
                        self._tick()
                        engine.close(s.conn_id, m.SLOW_CONSUMER_REASON)
                        self._pump()
                        return
                    except ConnectionError:
                        break  # the peer went away: the reader's end closes the session
                finally:
                    s.busy = False
                await asyncio.sleep(0)  # others' turn before this connection's next batch

    async def _keepalive(self, s: Session) -> None:
        limits = self.config.limits
        while not s.closing:
            await asyncio.sleep(limits.ping_interval_s)
            if time.monotonic() - s.last_seen > limits.idle_timeout_s:
                # as SpacetimeDB: a silent peer is dropped without a close handshake
                self.metrics.closes.labels("idle_timeout").inc()
                s.closing = True
                self._tick()
                self.engine.close(s.conn_id, "idle_timeout")
                self._pump()
                transport = s.request.transport
                if transport is not None:
                    transport.close()  # FIN after what is queued; a peer that never reads it is cut:
                    asyncio.get_running_loop().call_later(limits.close_timeout_s, _cut, transport)
                return
            try:  # aiohttp waits for the socket to drain past its control-frame limit, with no deadline
                async with asyncio.timeout(limits.send_timeout_s):
                    await s.ws.ping()
            except (ConnectionError, RuntimeError):
                pass
            except TimeoutError:  # a peer that does not take a ping is a slow consumer
                self.metrics.refused.labels("send_timeout_s").inc()
                self._tick()
                self.engine.close(s.conn_id, m.SLOW_CONSUMER_REASON)
                self._pump()
                return

    async def _expire(self, s: Session, expires: float) -> None:
        """A connection lives no longer than its token (for a websocket token, the token it was traded
        for): closed 1008 ``token expired`` when it does.  ``expires`` is wall-clock time and the sleep
        is on the loop's monotonic clock, so the wall clock is read again at least every
        :data:`EXPIRY_CHECK_S`: after a forward step (NTP) it closes within that of passing the expiry,
        and after a backward step it waits for the wall clock to get there.  One timer per connection."""
        while (left := expires - wall_time()) > 0:
            await asyncio.sleep(min(left, EXPIRY_CHECK_S))
        await self._close(s, m.CLOSE_POLICY, "token expired: reconnect with a fresh token", "token_expired")

    async def _watch_revocations(self) -> None:
        """Re-read the revocation list every ``REVOCATION_CHECK_S``; close (1008) every connection
        whose token's ``jti`` it now names.  A bad file keeps the last good list and is logged once."""
        told: str | None = None
        revocations = self.auth.revocations
        while True:
            await asyncio.sleep(REVOCATION_CHECK_S)
            changed = revocations.refresh()
            if revocations.problem != told:
                told = revocations.problem
                if told is not None:
                    log.warning("revocation list: %s", told)
            if not changed:
                continue
            for s in list(self.sessions.values()):
                jti = s.verified.raw.get("jti")
                if not s.closing and isinstance(jti, str) and jti in revocations.jtis:
                    # each close in its own task: a peer that takes its close frame slowly (up to
                    # close_timeout_s) holds back neither the other closes nor the next refresh
                    s.closers.append(asyncio.ensure_future(self._close(
                        s, m.CLOSE_POLICY, "token revoked: reconnect with another token", "token_revoked")))

    def _engine_closed(self, conn_id: int, reason: str) -> None:
        """The engine dropped a connection (slow consumer, reused query set id): close its socket."""
        s = self.sessions.get(conn_id)
        if s is None or s.closing:
            return
        if reason == m.SLOW_CONSUMER_REASON:
            self.metrics.slow_consumers.inc()
            code, text, cause = m.CLOSE_POLICY, SyncError(ErrorCode.SLOW_CONSUMER, {
                "max_bytes": self.config.limits.max_outbound_bytes,
                "max_queue": self.config.limits.max_outbound_queue}).render(), "slow_consumer"
        elif reason.startswith(f"{m.CLOSE_POLICY}: "):
            code, text, cause = m.CLOSE_POLICY, reason[len(f"{m.CLOSE_POLICY}: "):], "limit"
        elif reason.startswith(f"{m.CLOSE_PROTOCOL}: "):
            code, text, cause = m.CLOSE_PROTOCOL, reason[len(f"{m.CLOSE_PROTOCOL}: "):], "protocol"
        else:
            code, text, cause = 1000, reason, "engine"
        s.closers.append(asyncio.ensure_future(self._close(s, code, text, cause)))

    async def _close(self, s: Session, code: int, reason: str, cause: str) -> None:
        if s.closing:
            return
        s.closing = True
        self.metrics.closes.labels(cause).inc()
        self._tick()  # the disconnect transaction runs at the time of the close
        self.engine.close(s.conn_id, reason)
        self._pump()
        s.wake.set()
        s.inbound_ready.set()
        reader = s.reader
        if reader is not None and reader is not asyncio.current_task() and not reader.done():
            # Stop reading first, so the close below is the only reader: it sends the close frame
            # and then reads (discarding) until the peer's close.  Closing the socket under frames
            # the peer already sent would reset the connection and lose the close frame.
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        done = False
        try:
            await asyncio.wait_for(s.ws.close(code=code, message=cut_reason(reason).encode("utf-8")),
                                   self.config.limits.close_timeout_s + 1)
            done = True
        except (ConnectionError, RuntimeError, TimeoutError):
            # a peer that does not read cannot take the close frame: drop the TCP connection
            done = True
            transport = s.request.transport
            if transport is not None:
                transport.abort()
        finally:
            # A close can also end cancelled (aiohttp's writer has one drain waiter for every task:
            # cancelling the sender's drain cancels the close's) or with bytes still queued; aiohttp
            # then closes the transport gracefully, which waits for the peer to read them -- for a
            # peer that never reads, forever.  It gets close_timeout_s more, then the TCP connection is cut.
            transport = s.request.transport
            if transport is not None and (not done or transport.get_write_buffer_size()):
                asyncio.get_running_loop().call_later(self.config.limits.close_timeout_s, _cut, transport)

    async def _finish(self, s: Session) -> None:
        s.closing = True
        s.wake.set()
        s.inbound_ready.set()
        for task in s.tasks:
            task.cancel()
        try:
            for task in s.tasks:
                with contextlib.suppress(BaseException):
                    await task
            for closer in s.closers:
                with contextlib.suppress(Exception):
                    await closer
        finally:
            # also when a closer ended cancelled (awaiting it raises CancelledError here): its
            # drain shared aiohttp's one drain waiter with the sender cancelled above (see _close)
            self.sessions.pop(s.conn_id, None)
            if s.conn_id in self.engine.conns:
                self._tick()
                self.engine.close(s.conn_id, "closed")
                self._pump()
            # whatever ended the connection (a close that returned early because another had begun
            # included), its TCP connection does not outlive it by more than close_timeout_s
            transport = s.request.transport
            if transport is not None:
                asyncio.get_running_loop().call_later(self.config.limits.close_timeout_s, _cut, transport)


def sql_answer(answers: list[tuple[TableRows, float]], max_bytes: int) -> bytes | SyncError:
    """The ``/sql`` JSON answer (exactly ``json.dumps`` of the list of statement results),
    serialized row by row and abandoned with ``limit_exceeded`` as soon as it passes
    ``max_bytes``: an answer is never built past its bound."""
    steps = sql_answer_steps(answers, max_bytes, 1 << 62)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def sql_answer_steps(answers: list[tuple[TableRows, float]], max_bytes: int,
                     every: int) -> Generator[None, None, bytes | SyncError]:
    """:func:`sql_answer` as a generator that yields after every ``every`` rows serialized (the
    server gives the loop to others there) and returns the answer."""
    parts: list[bytes] = [b"["]
    done = 0
    size = 1
    for i, (rows, seconds) in enumerate(answers):
        table = TABLE_BY_NAME[rows.table]
        head = json.dumps({"schema": satsjson.product_type(table.columns)})[:-1]
        parts.append((", " if i else "").encode() + head.encode() + b', "rows": [')
        size += len(parts[-1])
        for j, row in enumerate(rows.inserts):
            data = ((", " if j else "") + json.dumps(satsjson.row_to_sql_json(table, row_values(row)))).encode()
            size += len(data)
            if size > max_bytes:
                return limit_exceeded("max_sql_response_bytes", max_bytes, size)
            parts.append(data)
            done += 1
            if done % every == 0:
                yield
        tail = json.dumps({"total_duration_micros": int(seconds * 1e6),
                           "stats": {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0}})
        parts.append(b"], " + tail[1:].encode())
        size += len(parts[-1])
    parts.append(b"]")
    size += 1
    if size > max_bytes:
        return limit_exceeded("max_sql_response_bytes", max_bytes, size)
    return b"".join(parts)


def split_statements(text: str) -> list[str]:
    """Split SQL text on ``;`` outside single-quoted literals (``''`` escapes a quote)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [stmt.strip() for stmt in out if stmt.strip()]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object of the call body, refusing a repeated key as SpacetimeDB's typed seed does (a
    product's ``duplicate field``; a sum's object must hold exactly one field)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r} in a JSON object")
        out[key] = value
    return out


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def _json(data: Any) -> web.Response:
    """A 200 JSON answer whose ``Content-Type`` is exactly ``application/json``, as axum's ``Json``
    writes it: SpacetimeDB's CLI compares the header's value with that string byte for byte
    (cli util.rs ``ensure_content_type``), so aiohttp's ``json_response`` (``; charset=utf-8``)
    fails ``spacetime call``/``describe`` on the schema route."""
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")


DATABASE_ISSUER = "syncref://database"


def database_identity(database: str) -> str:
    """The served database's identity: ``Identity::from_claims(DATABASE_ISSUER, <name>)``, a
    function of the name alone (so it stays across restarts and data directories)."""
    return identity_from_claims(DATABASE_ISSUER, database)


def module_schema(database: str) -> dict[str, Any]:
    """``GET /v1/database/:name/schema``: the module as JSON (documented in docs/protocol.md)."""
    return {
        "database": database,
        "protocol_version": PROTOCOL_VERSION,
        "schema_version": SCHEMA_VERSION,
        "subprotocols": list(SUBPROTOCOLS),
        "tables": [{
            "name": t.name,
            "columns": [{"name": c.name, "type": satsjson.algebraic_type(c.type)} for c in t.columns],
            "product_type": satsjson.product_type(t.columns),
            "primary_key": list(t.primary_key) if t.primary_key else None,
            "unique": [list(u) for u in t.unique],
            "event": t.event,
            "public": t.public,
            "visibility": t.visibility.value,
        } for t in TABLES],
        "reducers": [{
            "name": rd.name,
            "params": satsjson.product_type(rd.args),
        } for rd in REDUCERS],
        "scopes": sorted(SCOPES),
    }


def ops_facts(server: SyncServer) -> ops.ServerFacts:
    """What the operator's page needs from the I/O layer (``adapters.ops.gather`` does the rest)."""
    writer = server._writer
    closes: dict[str, int] = {}
    refused: dict[str, int] = {}
    for metric in server.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "syncref_closes_total":
                closes[sample.labels["cause"]] = int(sample.value)
            elif sample.name == "syncref_refused_total":
                refused[sample.labels["limit"]] = int(sample.value)
    failed = server.failed
    store = server._store
    return ops.ServerFacts(
        database=server.config.database, now_us=now_us(), started_at_us=server.started_at_us,
        sessions=tuple(ops.SessionFacts(s.conn_id, SUBPROTOCOLS[0] if s.version == 3 else SUBPROTOCOLS[1],
                                        s.compression.value, s.connected_at_us) for s in server.sessions.values()),
        batch_sizes=tuple(server.batch_sizes), batches=writer.batches if writer is not None else 0,
        records_written=writer.written if writer is not None else 0,
        tcp_connections=server._gate.open if server._gate is not None else 0,
        closes=closes, refused=refused, errors=tuple(server.recent_errors.entries),
        durability_failed=repr(failed.result()) if failed is not None and failed.done() else None,
        log_id=store.log_id if store is not None else None,
        head_mark_offset=store.marked_offset if store is not None else 0,
        head_marks=store.marks if store is not None else 0,
        head_mark_errors=store.mark_errors if store is not None else 0)
