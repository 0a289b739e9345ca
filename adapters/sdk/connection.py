"""The connection: SpacetimeDB's v2/v3 client protocol over ``websockets``, reconnecting.

A :class:`Connection` is a thin asyncio shell around the sans-I/O
:class:`~adapters.sdk.session.Session`.  It does what the official SDKs do at connect, and then
keeps the connection alive:

1. with a long-lived token (a string, or a provider function asked at every connect; :meth:`Connection.set_token`
   replaces it for the next one), ``POST /v1/identity/websocket-token`` (Bearer) for a token usable 60 s; the
   connection it opens lasts as long as the long-lived token (``oa_conn_exp``, docs/protocol.md).  Without
   one, the first connect is anonymous and every reconnect presents the token it was minted: one identity;
2. open ``ws[s]://host/v1/database/<db>/subscribe?token=..&compression=Gzip|None|Brotli
   [&confirmed=true|false]`` offering ``v3.bsatn.spacetimedb`` and/or ``v2.bsatn.spacetimedb``
   (the server picks by *its* preference; a server that echoes none is spoken to in v2, as the
   TypeScript SDK does);
3. wait for ``InitialConnection`` (identity, connection id, token), then (re)subscribe every
   pending query set and release waiting calls.

Three tasks per connection: the supervisor (connect, serve, back off, reconnect), the reader
(decode frames, feed the session, resolve calls) and the writer (send in order; in v3 everything
queued at that moment goes out as one frame).  A malformed server frame closes the socket with
1002 and the naming message; a close from the server (1011 with its reason, 1013 "too many
requests", a ``slow_consumer`` drop) is reported to ``on_disconnect`` as a :class:`DisconnectInfo`.
Then the supervisor waits :class:`~adapters.sdk.backoff.Backoff` and reconnects; a refusal that
retrying cannot fix (HTTP 400/401/403/404/426, before the upgrade) stops it and is raised from
:meth:`Connection.connect` and from every waiting call.

Calls: ``await conn.call(reducer, *args)`` encodes the arguments with :mod:`adapters.bsatn` (a
wrong argument is a :class:`~spec.errors.LocalProtocolError` before anything is sent), starts the
connection if :meth:`Connection.connect` was not called yet and waits for it, and returns a
:class:`ReducerOutcome` with the decoded return value (``append_sync_event``'s seq), or raises
:class:`~adapters.sdk.errors.ReducerError` (with the parsed :class:`~spec.errors.SyncError`),
:class:`~adapters.sdk.errors.ReducerInternalError`, :class:`~adapters.sdk.errors.CallTimeout` or
:class:`~adapters.sdk.errors.ConnectionLost` (the call may have run; calls are idempotent by key,
so retry).  The backoff's RNG and the sleep are
injectable, so tests control time.

Ids: each ``Connection`` numbers its request ids and query set ids from a random u32
(``first_id``, drawn with :mod:`secrets` unless given), not from 1.  Ids are unique within one
connection object already; the random start makes an answer addressed to an *earlier* client
process of the same identity (a restarted application whose old subscribe reached the server
late, or was replayed by a middlebox) match nothing pending here, instead of being taken for
the new process's query set 1.  The chaos run's long profile found exactly that (a stale answer
for a previous process's subscribe, read as this process's, made it rebootstrap needlessly).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from adapters import wire
from adapters.bsatn import BsatnError, decode_ret, encode_args
from adapters.guard import RateLimitedLog
from adapters.sdk.backoff import Backoff
from adapters.sdk.cache import ClientCache
from adapters.sdk.callbacks import Callbacks
from adapters.sdk.errors import (
    CallTimeout,
    ConnectError,
    ConnectionClosed,
    ConnectionLost,
    ReducerError,
    ReducerInternalError,
    TokenUnavailable,
)
from adapters.sdk.session import (
    U32_MAX,
    CallDone,
    EndCallback,
    ErrorCallback,
    Queries,
    Session,
    Subscription,
    SubState,
    TablesCallback,
)
from spec.errors import LocalProtocolError, RemoteProtocolError
from spec.schema import DEFAULT_DATABASE
from spec.values import is_id

__all__ = ["V2", "V3", "ConnectInfo", "Connection", "DisconnectInfo", "ReducerOutcome", "TokenProvider"]

log = logging.getLogger("syncref.sdk.connection")

V3 = "v3.bsatn.spacetimedb"
V2 = "v2.bsatn.spacetimedb"
VERSIONS: Mapping[str, int] = {V3: 3, V2: 2}
PERMANENT_STATUS = frozenset({400, 401, 403, 404, 426})
V3_FRAME_CAP = 256 * 1024
CONNECT_WARN_AFTER = 3  # failed connect attempts in a row before they are a WARNING (before: INFO, a restart)
CONNECT_WARN_INTERVAL_S = 30.0  # then at most one such warning this often
_DEFAULT: Any = object()


TokenProvider = Callable[[], "str | Awaitable[str]"]


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    identity: str
    connection_id: int
    token: str
    protocol: str
    version: int


@dataclass(frozen=True, slots=True)
class DisconnectInfo:
    code: int | None  # the close code received (None: the socket died without one)
    reason: str
    error: BaseException | None  # what ended it on this side (a malformed frame, a transport error)
    will_reconnect: bool

    @property
    def slow_consumer(self) -> bool:
        return "slow_consumer" in self.reason


@dataclass(frozen=True, slots=True)
class ReducerOutcome:
    reducer: str
    value: object  # the decoded return value (None for reducers that return nothing)
    timestamp: int  # µs, the reducer's start time as the server reports it
    request_id: int


def _detached(error: BaseException | None) -> BaseException | None:
    """``error`` without its tracebacks (and those of its causes), once it has been logged: a kept
    traceback keeps its frames' locals alive -- the reader's last frame, up to 32 MiB a disconnect."""
    seen: set[int] = set()
    exc = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__
    return error


def _urls(url: str, database: str) -> tuple[str, str]:
    """(http base, ws subscribe url without query) from an http(s) or ws(s) base URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise LocalProtocolError(f"not an http(s) or ws(s) URL: {url!r}")
    base = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    ws_scheme = "wss" if scheme == "https" else "ws"
    db = urllib.parse.quote(database, safe="")
    return base, f"{ws_scheme}://{parts.netloc}{parts.path.rstrip('/')}/v1/database/{db}/subscribe"


class Connection:
    """One logical client connection (many sockets over its life); see the module essay."""

    def __init__(self, url: str, database: str = DEFAULT_DATABASE, token: str | TokenProvider | None = None, *,
                 protocols: Sequence[str] = (V3, V2), compression: wire.Compression | str = wire.Compression.GZIP,
                 confirmed: bool | None = None, exchange_token: bool = True, reconnect: bool = True,
                 backoff: Backoff | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 call_timeout: float | None = 30.0, open_timeout: float = 10.0, ping_interval: float | None = 20.0,
                 on_connect: Callable[[ConnectInfo], object] | None = None,
                 on_disconnect: Callable[[DisconnectInfo], object] | None = None,
                 on_connect_error: Callable[[BaseException, float], object] | None = None,
                 cache: ClientCache | None = None, first_id: int | None = None,
                 healthy_after: float = 10.0) -> None:
        unknown = [p for p in protocols if p not in VERSIONS]
        if not protocols or unknown:
            raise LocalProtocolError(f"protocols must be a non-empty subset of {sorted(VERSIONS)}, got {protocols}")
        if not is_id(database):  # what a server serves: a name, or its identity (64 hex digits, optional 0x)
            hint = " (the second argument is the database: pass the token as token=...)" if len(database) > 128 \
                or database.count(".") == 2 else ""
            shown = repr(database[:24]) + ("..." if len(database) > 24 else "")  # (a token: its header only)
            raise LocalProtocolError(f"not a database name (1-128 characters of [A-Za-z0-9._:-]): {shown}{hint}")
        self.http_base, self.ws_url = _urls(url, database)
        self.database = database
        self._token_source: str | TokenProvider | None = None
        self.long_token: str | None = None  # the long-lived token the last (re)connect presented (or will)
        if token is not None:
            self.set_token(token)
        self.protocols = tuple(protocols)
        self.compression = wire.Compression(compression)
        self.confirmed, self.exchange_token, self.reconnect = confirmed, exchange_token, reconnect
        self.backoff = backoff if backoff is not None else Backoff()
        self.sleep = sleep
        self.call_timeout, self.open_timeout, self.ping_interval = call_timeout, open_timeout, ping_interval
        self.healthy_after = healthy_after  # a connection up this long resets the backoff counter
        self.on_connect, self.on_disconnect, self.on_connect_error = on_connect, on_disconnect, on_connect_error
        if first_id is not None and not 0 <= first_id <= U32_MAX:
            raise LocalProtocolError(f"first_id must be a u32, got {first_id}")
        self.first_id = first_id if first_id is not None else secrets.randbelow(U32_MAX + 1)
        self.session = Session(cache, first_id=self.first_id)
        self.info: ConnectInfo | None = None
        self.connects = 0
        self.disconnects: list[DisconnectInfo] = []  # the last ``max_disconnects_kept``, oldest first
        self.max_disconnects_kept = 64
        self._ws: ClientConnection | None = None
        self._out: asyncio.Queue[wire.ClientMessage] | None = None
        self._calls: dict[int, asyncio.Future[ReducerOutcome]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._fatal: BaseException | None = None
        self._minted_token: str | None = None  # the token minted for an anonymous connect, presented on reconnect
        self._fatal_tb: TracebackType | None = None  # where it was raised first (each raise starts from there)
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []
        self.close_flush_timeout = 2.0  # seconds close() gives the close hooks (pending acks) to finish
        self._http: aiohttp.ClientSession | None = None
        self._connect_log = RateLimitedLog(log, CONNECT_WARN_INTERVAL_S)
        self._callbacks = Callbacks(log)  # on_connect, on_disconnect, on_connect_error: plain or async def

    # --- properties ------------------------------------------------------------------------------

    def set_token(self, token: str | TokenProvider) -> None:
        """Replace the long-lived token: a string, or a provider (a function returning one, or an awaitable
        of one) called at every (re)connect.  The open connection is kept (the server ends it when the token
        it was opened with expires, 1008 ``token expired``); the next connect presents the new one.  A long-
        running application rotates its token this way, before the old one runs out."""
        if isinstance(token, str):
            if not token:
                raise LocalProtocolError("token must be a non-empty string (or a provider of one)")
            self.long_token = token
        elif not callable(token):
            raise LocalProtocolError(f"token must be a string or a function returning one, got {type(token).__name__}")
        self._token_source = token

    async def _long_token(self) -> str | None:
        """The long-lived token for this connect: the provider's answer (called now), the one set, or for an
        anonymous connection after its first connect, the token it was minted (the same identity)."""
        source = self._token_source
        if source is None:
            return self._minted_token
        if isinstance(source, str):
            return source
        try:
            token: object = source()
            if inspect.isawaitable(token):
                token = await token
        except Exception as exc:  # an auth service that is down: retried like a refused connect
            raise TokenUnavailable(f"the token provider raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(token, str) or not token:
            raise LocalProtocolError(f"the token provider must return a non-empty string, got {token!r:.40}")
        self.long_token = token
        return token

    @property
    def cache(self) -> ClientCache:
        return self.session.cache

    @property
    def connected(self) -> bool:
        return self.session.is_connected

    @property
    def closing(self) -> bool:
        """True once the application called :meth:`close`: what ends now ends normally."""
        return self._closing

    @property
    def fatal(self) -> BaseException | None:
        """Why the connection gave up for good (a permanent refusal such as 401 ``token revoked``, or
        reconnect off and the connection lost); None while it is alive or after a plain :meth:`close`."""
        return self._fatal

    @property
    def identity(self) -> str | None:
        return None if self.info is None else self.info.identity

    @property
    def protocol(self) -> str | None:
        return None if self.info is None else self.info.protocol

    # --- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> ConnectInfo:
        """Start (if needed) and wait for a connection; raises a permanent refusal."""
        self._start()
        await self._wait_connected()
        assert self.info is not None
        return self.info

    def _start(self) -> None:
        if self._task is None:
            self._check_open()
            self._task = asyncio.create_task(self._supervise(), name=f"syncref-sdk:{self.ws_url}")

    def add_close_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` at the start of :meth:`close`, while the connection still works (a stream
        consumer flushes its pending acks); together the hooks get ``close_flush_timeout`` seconds."""
        self._close_hooks.append(hook)

    def remove_close_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(ValueError):
            self._close_hooks.remove(hook)

    async def close(self) -> None:
        """Close for good: no reconnect, every subscription ends, waiting calls raise ConnectionClosed.
        Close hooks run first (bounded by ``close_flush_timeout``); a normal close logs nothing above
        debug level."""
        hooks, self._close_hooks = list(self._close_hooks), []
        if hooks and not self._closing and self.connected:
            try:
                async with asyncio.timeout(self.close_flush_timeout):
                    await asyncio.gather(*(hook() for hook in hooks), return_exceptions=True)
            except TimeoutError:
                log.debug("close hooks did not finish within %.1f s", self.close_flush_timeout)
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, "client closed"), 5)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.session.close()
        self._fail_calls(list(self._calls), ConnectionClosed("connection closed"))
        self._wake()
        await self._callbacks.drain(self.close_flush_timeout)  # async callbacks still running (the last on_disconnect)
        await self._close_http()

    async def _close_http(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def __aenter__(self) -> Connection:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def abort(self) -> None:
        """Drop the socket without a close handshake (a network failure, for tests and chaos)."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # --- subscriptions ---------------------------------------------------------------------------

    def subscribe(self, queries: Queries, *, cached: bool = True, on_applied: TablesCallback | None = None,
                  on_update: TablesCallback | None = None, on_error: ErrorCallback | None = None,
                  on_end: EndCallback | None = None) -> Subscription:
        """Subscribe a query set now (or on the next connection; the connection is started if it was not);
        it is resubscribed after reconnects."""
        self._check_open()
        sub = Subscription(queries, cached=cached, on_applied=on_applied, on_update=on_update,
                           on_error=on_error, on_end=on_end)
        sub.owner = self._unsubscribe
        self._send(self.session.subscribe(sub))
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # outside a running loop: it starts at connect() or the first call
            pass
        else:
            self._start()  # as call() does
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._send(self.session.unsubscribe(sub))

    async def applied(self, sub: Subscription, timeout: float | None = None) -> Subscription:
        """Wait until ``sub`` is applied; raises its SubscriptionFailed, or ConnectionClosed if it ended."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def watch(s: Subscription) -> None:
            if not fut.done() and s.state is not SubState.PENDING:
                fut.set_result(None)

        sub.watchers.append(watch)
        try:
            watch(sub)
            async with asyncio.timeout(timeout):
                await fut
        finally:
            sub.watchers.remove(watch)
        if sub.state is SubState.FAILED:
            assert sub.error is not None
            raise sub.error.with_traceback(None)  # (raised at every call: see _check_open)
        if sub.state is SubState.ENDED:
            raise ConnectionClosed(f"{sub!r} ended before it was applied")
        return sub

    # --- calls -----------------------------------------------------------------------------------

    async def call(self, reducer: str, *args: object, timeout: float | None = _DEFAULT) -> ReducerOutcome:
        """Call a reducer; see the module essay for what it returns and raises."""
        self._check_open()
        data = encode_args(reducer, tuple(args))
        limit = self.call_timeout if timeout is _DEFAULT else timeout
        loop = asyncio.get_running_loop()
        rid: int | None = None
        self._start()
        try:
            async with asyncio.timeout(limit):
                await self._wait_connected()
                msg = self.session.call(reducer, data)
                rid = msg.request_id
                fut: asyncio.Future[ReducerOutcome] = loop.create_future()
                self._calls[rid] = fut
                self._send([msg])
                return await fut
        except TimeoutError:
            if rid is not None:
                self.session.forget_call(rid)
                self._calls.pop(rid, None)
            raise CallTimeout(reducer, limit if limit is not None else 0.0) from None

    # --- internals: waiting ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise ConnectionClosed("this connection was closed")
        if self._fatal is not None:  # one stored error, raised again and again: each raise starts from its own
            raise self._fatal.with_traceback(self._fatal_tb)  # traceback (else it grows by every caller's frames)

    async def _wait_connected(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.session.is_connected:
            self._check_open()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _fail_calls(self, request_ids: Sequence[int], error: BaseException) -> None:
        for rid in request_ids:
            fut = self._calls.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_exception(error)

    # --- internals: the supervisor ---------------------------------------------------------------

    async def _supervise(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                try:
                    ws, version, first = await self._open()
                except ConnectError as exc:
                    if exc.permanent:
                        self._give_up(exc)
                        await self._close_http()  # nothing more to exchange: no unclosed session left behind
                        return
                    attempt = await self._back_off(attempt, exc)
                    continue
                except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake, RemoteProtocolError,
                        aiohttp.ClientError, websockets.exceptions.ConnectionClosed, TokenUnavailable) as exc:
                    attempt = await self._back_off(attempt, exc)
                    continue
                except LocalProtocolError as exc:  # a token provider that returned no token: caller misuse
                    self._give_up(exc)
                    await self._close_http()
                    return
                opened = asyncio.get_running_loop().time()
                info = await self._serve(ws, version, first)
                if asyncio.get_running_loop().time() - opened >= self.healthy_after:
                    attempt = 0  # it was healthy: a drop now is retried quickly
                self.disconnects.append(info)
                del self.disconnects[:-self.max_disconnects_kept]
                self._callbacks.run("on_disconnect", self.on_disconnect, info)
                if self._closing:
                    return
                if not self.reconnect:
                    self._give_up(ConnectionLost(f"connection lost ({info.code} {info.reason}); reconnect is off"))
                    await self._close_http()
                    return
                attempt = await self._back_off(attempt, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: make it visible to everyone waiting
            log.exception("connection supervisor crashed")
            self._give_up(exc)

    async def _back_off(self, attempt: int, error: BaseException | None) -> int:
        delay = self.backoff.delay(attempt)
        if error is not None:
            if attempt + 1 >= CONNECT_WARN_AFTER:  # not a blip: say so where a default logging setup shows it
                self._connect_log.log("connect", logging.WARNING, f"cannot connect to {self.ws_url}: "
                                      f"{attempt + 1} attempts in a row failed, still retrying (last: "
                                      f"{type(error).__name__}: {error})")
            log.info("connect attempt %d failed (%s: %s); retrying in %.2f s", attempt + 1, type(error).__name__,
                     error, delay)
            self._callbacks.run("on_connect_error", self.on_connect_error, error, delay)
        await self.sleep(delay)
        return attempt + 1

    def _give_up(self, error: BaseException) -> None:
        if not self._closing:  # said once: a consumer alone has no call to raise it from
            log.warning("giving up on %s: %s", self.ws_url, str(error))  # (a kept record must not pin its frames)
        self._fatal, self._fatal_tb = error, error.__traceback__
        self.session.close()
        self._fail_calls(list(self._calls), error)
        self._wake()

    async def _ws_token(self) -> str | None:
        long_token = await self._long_token()
        if long_token is None or not self.exchange_token:
            return long_token
        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = f"{self.http_base}/v1/identity/websocket-token"
        timeout = aiohttp.ClientTimeout(total=self.open_timeout)
        async with self._http.post(url, headers={"Authorization": f"Bearer {long_token}"},
                                   timeout=timeout) as resp:
            raw = await resp.read()  # the peer's bytes: a proxy's Latin-1 error page is a refusal, not a crash
            if resp.status // 100 != 2:
                raise ConnectError(resp.status, f"websocket-token: {raw.decode('utf-8', 'replace')[:300]}",
                                   permanent=resp.status in PERMANENT_STATUS)
        try:
            body = raw.decode("utf-8")
            token = json.loads(body)["token"]
        except (ValueError, KeyError, TypeError):
            raise RemoteProtocolError(f"websocket-token answer without a token: {raw[:200]!r}") from None
        if not isinstance(token, str):
            raise RemoteProtocolError("websocket-token answer: token is not a string")
        return token

    def _uri(self, token: str | None) -> str:
        params = {"compression": self.compression.value}
        if token is not None:
            params["token"] = token
        if self.confirmed is not None:
            params["confirmed"] = "true" if self.confirmed else "false"
        return f"{self.ws_url}?{urllib.parse.urlencode(params)}"

    async def _open(self) -> tuple[ClientConnection, int, list[wire.ServerMessage]]:
        token = await self._ws_token()
        try:
            ws = await ws_connect(self._uri(token), subprotocols=[websockets.Subprotocol(p) for p in self.protocols],
                                  compression=None, max_size=wire.MAX_FRAME_SIZE + 1,  # + the compression tag
                                  open_timeout=self.open_timeout,
                                  ping_interval=self.ping_interval, proxy=None)
        except websockets.exceptions.InvalidStatus as exc:
            status = exc.response.status_code
            body = (exc.response.body or b"").decode("utf-8", "replace")
            raise ConnectError(status, body[:300] or exc.response.reason_phrase,
                               permanent=status in PERMANENT_STATUS) from None
        try:
            chosen = ws.subprotocol or V2
            version = VERSIONS.get(chosen)
            if version is None:
                raise RemoteProtocolError(f"server chose an unknown subprotocol {chosen!r}")
            frame = await asyncio.wait_for(ws.recv(), self.open_timeout)
            if isinstance(frame, str):
                raise RemoteProtocolError("text frame from the server")
            msgs = wire.decode_server_frame(frame, version)
            first = msgs[0]
            if not isinstance(first, wire.InitialConnection):
                raise RemoteProtocolError(f"first server message is {type(first).__name__}, not InitialConnection")
            self.info = ConnectInfo(first.identity, first.connection_id, first.token, chosen, version)
            if self._token_source is None and self._minted_token is None and first.token:
                self._minted_token = first.token  # an anonymous connect: keep the identity it was given
            return ws, version, msgs[1:]
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1002, "bad handshake"), 2)
            raise

    async def _serve(self, ws: ClientConnection, version: int, first: list[wire.ServerMessage]) -> DisconnectInfo:
        out: asyncio.Queue[wire.ClientMessage] = asyncio.Queue()
        self._ws, self._out = ws, out
        write_failed: list[BaseException] = []
        writer = asyncio.create_task(self._write(ws, out, version, write_failed), name="syncref-sdk-writer")
        self.connects += 1
        error: BaseException | None = None
        try:
            self._send(self.session.connected())
            self._wake()
            if self.info is not None:
                self._callbacks.run("on_connect", self.on_connect, self.info)
            for msg in first:
                self._dispatch(msg)
            async for frame in ws:
                if isinstance(frame, str):
                    raise RemoteProtocolError("text frame from the server")
                for msg in wire.decode_server_frame(frame, version):
                    self._dispatch(msg)
        except websockets.exceptions.ConnectionClosed:
            pass
        except RemoteProtocolError as exc:
            error = exc
            log.warning("closing: %s", exc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1002, str(exc).encode()[:123].decode("utf-8", "ignore")), 2)
        except Exception as exc:
            error = exc
            log.exception("reader failed")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1011, "client error"), 2)
        finally:
            self._ws = self._out = None
            lost = self.session.disconnected()
            self._fail_calls(lost, ConnectionLost("connection lost before the result arrived"))
            self._fail_calls(list(self._calls), ConnectionLost("connection lost before the result arrived"))
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    if not self._closing:
                        raise  # cancelled from outside (the loop shutting down): end, do not reconnect
                    task.uncancel()  # close(): record this disconnect, then the supervisor returns
            except Exception:
                log.debug("the writer ended with an error", exc_info=True)
            if error is None and write_failed:  # logged by the writer; the disconnect reports it
                error = write_failed[0]
        code = ws.close_code
        return DisconnectInfo(code, ws.close_reason or "", _detached(error), self.reconnect and not self._closing)

    async def _write(self, ws: ClientConnection, out: asyncio.Queue[wire.ClientMessage], version: int,
                     failed: list[BaseException]) -> None:
        try:
            await self._write_loop(ws, out, version)
        except Exception as exc:  # a writer that died alone would leave the socket up and every later message unsent
            log.exception("writer failed: closing the connection")
            failed.append(exc)  # (the reader's teardown may cancel this task during the close)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1011, "client error"), 2)

    async def _write_loop(self, ws: ClientConnection, out: asyncio.Queue[wire.ClientMessage], version: int) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            while True:
                batch = [wire.encode_client(await out.get())]
                while not out.empty():
                    batch.append(wire.encode_client(out.get_nowait()))
                if version == 2:
                    for body in batch:
                        await ws.send(body)
                    continue
                frame: list[bytes] = []
                size = 0
                for body in batch:
                    if frame and size + len(body) > V3_FRAME_CAP:
                        await ws.send(b"".join(frame))
                        frame, size = [], 0
                    frame.append(body)
                    size += len(body)
                await ws.send(b"".join(frame))

    def _send(self, msgs: Sequence[wire.ClientMessage]) -> None:
        if msgs and self._out is not None:
            for m in msgs:
                self._out.put_nowait(m)

    # --- internals: incoming ---------------------------------------------------------------------

    def _dispatch(self, msg: wire.ServerMessage) -> None:
        for done in self.session.receive(msg):
            self._resolve(done)

    def _resolve(self, done: CallDone) -> None:
        fut = self._calls.pop(done.request_id, None)
        if fut is None or fut.done() or done.reducer is None:
            return
        reducer, res = done.reducer, done.result
        outcome = res.outcome
        if isinstance(outcome, wire.ReducerOk):
            try:
                value = decode_ret(reducer, outcome.ret_value)
            except BsatnError as exc:
                fut.set_exception(exc)
                return
            fut.set_result(ReducerOutcome(reducer, value, res.timestamp, res.request_id))
        elif isinstance(outcome, wire.ReducerOkEmpty):
            fut.set_result(ReducerOutcome(reducer, None, res.timestamp, res.request_id))
        elif isinstance(outcome, wire.ReducerErr):
            try:
                text = wire.decode_string(outcome.error)
            except BsatnError:
                text = outcome.error.decode("utf-8", "replace")
            fut.set_exception(ReducerError(reducer, text))
        else:
            fut.set_exception(ReducerInternalError(reducer, outcome.message))
