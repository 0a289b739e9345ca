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
  order; the sender pops whatever the engine has *released* (confirmed reads: only messages
  whose offset is durable) and writes frames.  A keepalive pings and drops a silent peer.
  Writing blocks on a client that does not read; meanwhile the engine's queue for it grows
  and past ``max_queue`` the engine drops it as a ``slow_consumer``.  Nobody else waits.
* **Encode once.**  Equal messages (the same update for subscribers with the same queries)
  share one encoded body and, on v2, one compressed frame (an LRU keyed by the message value);
  rows are encoded once per row object (``wire.RowCache``).
* **Before the upgrade**, in DESIGN §4's order: token (401/400), connection id (400),
  database (404), subprotocol by *server* preference v3 > v2 (400), compatibility window (426).

HTTP routes answer with SpacetimeDB's status codes (see docs/protocol.md); every error body is
a plain, specific message.  ``GET /metrics`` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prometheus_client as prom
from aiohttp import WSMsgType, web

from adapters import satsjson, wire
from adapters.auth import AuthConfig, Authenticator, AuthError, KeyStore, Verified
from adapters.bsatn import BsatnError
from reference.durability import GroupCommitWriter, LogStore, restart, shutdown
from reference.engine import Engine
from spec import messages as m
from spec.compat import CompatWindow, rejection_body
from spec.errors import ErrorCode, SyncError
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
)
from spec.values import row_values

log = logging.getLogger("syncref.server")

SUBPROTOCOLS = ("v3.bsatn.spacetimedb", "v2.bsatn.spacetimedb")  # server preference order
CLOSE_REASON_BYTES = 123


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_size: int = 32 * 1024 * 1024  # inbound WebSocket message (SpacetimeDB: 32 MiB)
    max_inbound_queue: int = 16384  # queued client messages before close 1013
    max_outbound_queue: int = 16384  # engine queue per connection before slow_consumer
    max_undurable: int = 1024  # committed transactions allowed ahead of the disk
    ping_interval_s: float = 15.0
    idle_timeout_s: float = 30.0  # nothing received for this long: the connection is dropped
    close_timeout_s: float = 5.0  # a close frame the peer does not take within this: the TCP connection is cut
    max_sql_bytes: int = 64 * 1024
    max_call_body_bytes: int = 1024 * 1024


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
    stall_commits_while: Path | None = None  # fault injection ([faults]): the log's COMMIT waits while it exists


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


def now_us() -> int:
    return time.time_ns() // 1000


class DurabilityFailed(Exception):
    """The commit log cannot be written: nothing more is acknowledged (HTTP 503, close 1011)."""


class DataDirError(Exception):
    """The data directory cannot be created, written, locked or read (an operator error)."""


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
        self.messages_in = prom.Counter("syncref_client_messages", "Client messages by kind", ["kind"], registry=r)
        self.messages_out = prom.Counter("syncref_server_messages", "Server messages by kind", ["kind"], registry=r)
        self.frames_out = prom.Counter("syncref_frames_sent", "WebSocket frames sent", registry=r)
        self.bytes_out = prom.Counter("syncref_bytes_sent", "Bytes of frames sent", registry=r)
        self.encode_hits = prom.Counter("syncref_encode_cache_hits", "Messages whose bytes were shared", registry=r)
        self.http = prom.Counter("syncref_http_requests", "HTTP requests by route and status", ["route", "status"],
                                 registry=r)


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
        self.inbound: deque[wire.ClientMessage] = deque()
        self.inbound_ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.side: deque[bytes] = deque()  # encoded bodies answered by this layer (procedure calls)
        self.call_ts: dict[int, int] = {}  # request_id -> reducer start time, for ReducerResult.timestamp
        self.last_seen = time.monotonic()
        self.closing = False
        self.tasks: list[asyncio.Task[None]] = []
        self.reader: asyncio.Task[None] | None = None
        self.closers: list[asyncio.Future[None]] = []  # closes the engine asked for; awaited, never cancelled


class SyncServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.sessions: dict[int, Session] = {}
        self._store: LogStore | None = None
        self._writer: GroupCommitWriter | None = None
        self._engine: Engine | None = None
        self._runner: web.AppRunner | None = None
        self._auth: Authenticator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._bodies: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._rows = wire.RowCache()
        self._last_now = 0
        self._periodic: list[asyncio.Task[None]] = []
        self.failed: asyncio.Future[BaseException] | None = None
        self.port = config.port
        self._stopped = False

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "the server is not started"
        return self._engine

    @property
    def auth(self) -> Authenticator:
        assert self._auth is not None, "the server is not started"
        return self._auth

    async def start(self) -> None:
        """Open the data directory, recover, bind.  Raises :class:`DataDirError` for an unusable data
        directory and ``OSError`` for a port that cannot be bound (the CLI reports both)."""
        self._loop = asyncio.get_running_loop()
        self.failed = self._loop.create_future()
        cfg = self.config
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            probe = cfg.data_dir / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
            self._auth = Authenticator(cfg.auth, KeyStore.load_or_create(cfg.data_dir))
            self._store = LogStore.open(cfg.data_dir)
            self._store.stall_while = cfg.stall_commits_while
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataDirError(f"data directory {cfg.data_dir} is not usable: {exc}") from exc
        try:
            self._writer = GroupCommitWriter(self._store, self._durable_from_thread)
            try:
                self._engine = restart(self._store, self._writer, self._tick(), cfg.policy,
                                       max_queue=cfg.limits.max_outbound_queue,
                                       max_undurable=cfg.limits.max_undurable)
            except (ValueError, RuntimeError) as exc:
                raise DataDirError(f"the commit log in {cfg.data_dir} cannot be recovered: {exc} "
                                   "(syncref verify-log --data DIR shows where)") from exc
            self._engine.on_close = self._engine_closed
            app = web.Application(client_max_size=max(cfg.limits.max_call_body_bytes, cfg.limits.max_sql_bytes))
            self._routes(app)
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, cfg.host, cfg.port, reuse_address=True)
            await site.start()
        except BaseException:
            await self._abort_start()
            raise
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._metrics_offsets()
        self._room.set()
        self._periodic = [asyncio.create_task(self._every(cfg.sweep_interval_s, self._sweep)),
                          asyncio.create_task(self._every(cfg.compact_interval_s, self._compact)),
                          asyncio.create_task(self._watch_writer())]

    async def _abort_start(self) -> None:
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
        for task in self._periodic:
            task.cancel()
        for s in list(self.sessions.values()):
            await self._close(s, 1001, "server shutting down", "shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
        if self._engine is not None and self._writer is not None and self._store is not None:
            if self._writer.error is None:
                shutdown(self._engine, self._writer, self._store)
            else:
                self._store.close()

    # --- durability -------------------------------------------------------------------------------

    def _durable_from_thread(self, offset: int, _batch: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._durable_advanced, offset)

    def _durable_advanced(self, offset: int) -> None:
        engine = self.engine
        if offset > engine.durable:
            engine.advance_durable(offset)
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

    def _check_writer(self) -> None:
        """If the commit-log writer failed: acknowledge nothing more.  Every waiter fails (HTTP
        503), every connection is closed (1011), and ``failed`` tells ``serve`` to stop."""
        assert self._writer is not None
        err = self._writer.error
        if err is None or self.failed is None or self.failed.done():
            return
        log.error("commit-log writer failed: %r", err)
        self.failed.set_result(err)
        for _offset, fut in self._waiters:
            if not fut.done():
                fut.set_exception(DurabilityFailed(str(err)))
        self._waiters = []
        self._room.set()
        for sess in list(self.sessions.values()):
            sess.closers.append(asyncio.ensure_future(self._close(
                sess, m.CLOSE_PROTOCOL, f"durability failure: the commit log could not be written ({err!r})",
                "durability")))

    async def _watch_writer(self) -> None:
        while self.failed is not None and not self.failed.done():
            await asyncio.sleep(0.05)
            self._check_writer()

    def _pump(self) -> None:
        """After any engine step: hand new commit records to the writer, wake senders."""
        engine = self.engine
        records = engine.take_records()
        if records:
            assert self._writer is not None
            try:
                self._writer.append(records)
            except Exception:
                self._check_writer()
        for s in self.sessions.values():
            if s.side or engine.releasable(s.conn_id):
                s.wake.set()
        self._metrics_offsets()

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
                step()
                self._pump()

    def _sweep(self) -> None:
        self.engine.sweep(self._tick())

    def _compact(self) -> None:
        self.engine.compact(self._tick())

    # --- routes -----------------------------------------------------------------------------------

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
        return web.Response(body=prom.generate_latest(self.metrics.registry),
                            headers={"Content-Type": prom.CONTENT_TYPE_LATEST})

    async def _identity(self, _request: web.Request) -> web.Response:
        if not self.config.auth.anonymous_allowed:
            return _text(403, "anonymous identities are disabled on this server: ask its operator for a token "
                              "(syncref token mint)")
        identity, token = self.auth.mint_identity()
        return web.json_response({"identity": identity, "token": token})

    async def _ws_token(self, request: web.Request) -> web.Response:
        try:
            token = self.auth.token_from_request(request.headers.get("Authorization"), None)
            if token is None:
                return _text(401, "Authorization required")
            verified = self.auth.verify(token)
        except AuthError as err:
            return _text(err.status, str(err))
        return web.json_response({"token": self.auth.websocket_token(verified.raw)})

    async def _public_key(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.auth.keys.public_key_pem(), content_type="application/pem-certificate-chain")

    async def _schema(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != self.config.database:
            return _text(404, f"`{request.match_info['name']}` not found")
        return web.json_response(module_schema(self.config.database))

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
        if request.match_info["name"] != self.config.database:
            return _text(404, f"`{request.match_info['name']}` not found")
        refused = self._admit(caller.verified)
        return refused if refused is not None else caller.verified

    def _admit(self, verified: Verified) -> web.Response | None:
        err = self.engine.admit(verified.claims, self.config.window)
        if err is None:
            return None
        return web.json_response(rejection_body(err), status=426)

    # --- HTTP reducer calls and SQL -----------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.Response:
        verified = self._http_caller(request)
        if isinstance(verified, web.Response):
            return verified
        reducer = request.match_info["reducer"]
        rdef = REDUCER_BY_NAME.get(reducer)
        if rdef is None:
            return _text(404, SyncError(ErrorCode.NO_SUCH_REDUCER, {"reducer": reducer}).render())
        if request.content_type != "application/json":
            return _text(415, "Expected request with `Content-Type: application/json`")
        try:
            body = json.loads(await request.text())
            args = satsjson.args_from_json(rdef.args, body)
        except (ValueError, satsjson.SatsJsonError) as exc:
            return _text(400, SyncError(ErrorCode.INVALID_ARGUMENT, {"argument": "*", "message": str(exc)}).render())
        try:
            await self._wait_room()
            self._tick()
            try:
                offset, ret = self.engine.call_detached(verified.claims, reducer, args)
            except SyncError as err:
                # a failure reveals state (e.g. the head in sequence_conflict): answer once that state is durable
                await self._wait_durable(self.engine.committed)
                return _text(530, err.render())
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
        try:
            confirmed = parse_bool(request.query.get("confirmed"), True)
        except ValueError as exc:
            return _text(400, f"invalid confirmed parameter: {exc}")
        text = await request.text()
        if len(text.encode("utf-8")) > self.config.limits.max_sql_bytes:
            return _text(413, f"SQL text over {self.config.limits.max_sql_bytes} bytes")
        results = []
        offset = self.engine.committed
        for stmt in split_statements(text):
            started = time.monotonic()
            try:
                rows = self.engine.query(verified.claims, stmt)
            except SyncError as err:
                return _text(400, err.render())
            table = TABLE_BY_NAME[rows.table]
            results.append({
                "schema": satsjson.product_type(table.columns),
                "rows": [satsjson.row_to_json(table, row_values(row)) for row in rows.inserts],
                "total_duration_micros": int((time.monotonic() - started) * 1e6),
                "stats": {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0},
            })
        if not results:
            return _text(400, SyncError(ErrorCode.INVALID_QUERY, {"message": "no statement", "sql": text}).render())
        if confirmed:
            try:
                await self._wait_durable(offset)
            except DurabilityFailed as exc:
                return _text(503, f"the commit log could not be written, so this read cannot be confirmed: {exc}")
        return web.json_response(results)

    # --- WebSocket ------------------------------------------------------------------------------------

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        resp = await self._upgrade(request)
        if resp.status != 101:
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
        if request.match_info["name"] != self.config.database:
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
        ws = web.WebSocketResponse(protocols=(chosen,), autoping=False, compress=False,
                                   timeout=self.config.limits.close_timeout_s,
                                   max_msg_size=self.config.limits.max_message_size)
        ws.headers["spacetime-identity"] = verified.claims.identity
        if caller.minted:
            ws.headers["spacetime-identity-token"] = caller.token
        await ws.prepare(request)
        conn_id = self.engine.connect(verified.claims, confirmed)
        version = 3 if chosen.startswith("v3.") else 2
        s = Session(conn_id, ws, version, compression, verified, connection_id, request)
        self.sessions[conn_id] = s
        self.metrics.connects.labels(chosen).inc()
        first = wire.encode_server(wire.InitialConnection(verified.claims.identity, connection_id, caller.token))
        try:
            await ws.send_bytes(wire.frame_server(first, compression))
            s.tasks = [asyncio.create_task(self._sender(s)), asyncio.create_task(self._processor(s)),
                       asyncio.create_task(self._keepalive(s))]
            s.reader = asyncio.create_task(self._reader(s))
            await s.reader
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await self._finish(s)
        return ws

    async def _reader(self, s: Session) -> None:
        limit = self.config.limits.max_inbound_queue
        async for msg in s.ws:
            s.last_seen = time.monotonic()
            if msg.type == WSMsgType.BINARY:
                try:
                    decoded = wire.decode_client_frame(msg.data, s.version)
                except BsatnError as exc:
                    await self._close(s, 1011, f"malformed message: {exc}", "malformed")
                    return
                s.inbound.extend(decoded)
                if len(s.inbound) > limit:
                    await self._close(s, 1013, "too many requests", "inbound_queue")
                    return
                s.inbound_ready.set()
            elif msg.type == WSMsgType.TEXT:
                await self._close(s, 1011, "v2/v3 websocket does not support text messages", "text_frame")
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
        engine = self.engine
        while not s.closing:
            await s.inbound_ready.wait()
            s.inbound_ready.clear()
            while s.inbound and not s.closing:
                if self.failed is not None and self.failed.done():
                    return  # nothing more is taken once the log cannot be written
                first = s.inbound[0]
                if isinstance(first, wire.CallReducer) and not engine.can_commit():
                    await self._wait_room()
                    continue
                s.inbound.popleft()
                self._dispatch(s, first)
                self._pump()

    def _dispatch(self, s: Session, msg: wire.ClientMessage) -> None:
        engine = self.engine
        now = self._tick()
        kind = type(msg).__name__
        self.metrics.messages_in.labels(kind).inc()
        if isinstance(msg, wire.OneOffQuery):
            engine.one_off(s.conn_id, msg.request_id, msg.query_string)
            return
        if isinstance(msg, wire.CallProcedure):
            s.side.append(wire.encode_server(wire.ProcedureResult(
                wire.ProcedureInternalError(f"no such procedure: {msg.procedure} (this module defines none)"),
                now, 0, msg.request_id)))
            return
        if isinstance(msg, wire.CallReducer):
            s.call_ts[msg.request_id] = now
        try:
            abstract = wire.from_wire(msg)
        except BsatnError as exc:
            assert isinstance(msg, wire.CallReducer)
            engine.reject(s.conn_id, msg.request_id, SyncError(
                ErrorCode.INVALID_ARGUMENT, {"argument": "*", "message": f"malformed BSATN arguments: {exc}"}))
            return
        engine.handle(s.conn_id, abstract)

    def _encode(self, s: Session, message: m.ServerMessage) -> bytes:
        """The BSATN body of an engine message; equal messages share their bytes."""
        kind = type(message).__name__
        self.metrics.messages_out.labels(kind).inc()
        if isinstance(message, m.ReducerResult):
            ts = s.call_ts.pop(message.request_id, self._last_now)
            return wire.encode_server(wire.to_wire(message, timestamp=ts, cache=self._rows))
        key: tuple[object, ...] = (message,)
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
            self.metrics.encode_hits.inc()
            return body
        body = wire.encode_server(wire.to_wire(message, cache=self._rows))
        self._bodies[key] = body
        if len(self._bodies) > 512:
            self._bodies.popitem(last=False)
        return body

    async def _sender(self, s: Session) -> None:
        engine = self.engine
        while not s.closing:
            await s.wake.wait()
            s.wake.clear()
            while not s.closing and (s.side or engine.releasable(s.conn_id)):
                bodies: list[bytes] = []
                while s.side and len(bodies) < 256:
                    bodies.append(s.side.popleft())
                while engine.releasable(s.conn_id) and len(bodies) < 256:
                    bodies.append(self._encode(s, engine.pop(s.conn_id).message))
                frames = ([wire.frame_server(b, s.compression) for b in wire.batch_v3(bodies)] if s.version == 3
                          else [wire.frame_server(b, s.compression) for b in bodies])
                for frame in frames:
                    await s.ws.send_bytes(frame)
                    self.metrics.frames_out.inc()
                    self.metrics.bytes_out.inc(len(frame))

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
                    transport.close()
                return
            with contextlib.suppress(ConnectionError, RuntimeError):
                await s.ws.ping()

    def _engine_closed(self, conn_id: int, reason: str) -> None:
        """The engine dropped a connection (slow consumer, reused query set id): close its socket."""
        s = self.sessions.get(conn_id)
        if s is None or s.closing:
            return
        if reason == m.SLOW_CONSUMER_REASON:
            code, text, cause = m.CLOSE_POLICY, SyncError(ErrorCode.SLOW_CONSUMER, {
                "max_queue": self.config.limits.max_outbound_queue}).render(), "slow_consumer"
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
        try:
            await asyncio.wait_for(s.ws.close(code=code, message=cut_reason(reason).encode("utf-8")),
                                   self.config.limits.close_timeout_s + 1)
        except (ConnectionError, RuntimeError, TimeoutError):
            # a peer that does not read cannot take the close frame: drop the TCP connection
            transport = s.request.transport
            if transport is not None:
                transport.abort()

    async def _finish(self, s: Session) -> None:
        s.closing = True
        s.wake.set()
        s.inbound_ready.set()
        for task in s.tasks:
            task.cancel()
        for task in s.tasks:
            with contextlib.suppress(BaseException):
                await task
        for closer in s.closers:
            with contextlib.suppress(Exception):
                await closer
        self.sessions.pop(s.conn_id, None)
        if s.conn_id in self.engine.conns:
            self._tick()
            self.engine.close(s.conn_id, "closed")
            self._pump()


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


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


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
