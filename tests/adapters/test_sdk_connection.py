"""The SDK connection against a scripted in-process server (aiohttp) speaking the real wire codec.

The fake server is deliberately small: it answers the token exchange, upgrades with SpacetimeDB's
subprotocol preference, sends InitialConnection, records every client frame and then does what
each test scripts.  Time is injected: the backoff's sleep records its delays and returns at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from adapters import wire
from adapters.bsatn import encode_ret, encode_row
from adapters.sdk import (
    V2,
    V3,
    Backoff,
    CallTimeout,
    ConnectError,
    Connection,
    ConnectionLost,
    DisconnectInfo,
    ReducerError,
    ReducerInternalError,
    SubscriptionFailed,
    SubState,
    TokenUnavailable,
)
from spec.errors import ErrorCode, LocalProtocolError, RemoteProtocolError, SyncError
from spec.values import SessionPresence

IDENT = "c200" + "ab" * 30
ALICE = "c2" + "a" * 62


def presence(session: str, status: str = "online") -> SessionPresence:
    return SessionPresence(session, ALICE, "dev", "node", status, "eu", 1, 2, None)


def run(coro: Coroutine[Any, Any, None], timeout: float = 20) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


Handler = Callable[["Peer", wire.ClientMessage], Awaitable[None]]


class Peer:
    """One server-side WebSocket connection."""

    def __init__(self, ws: web.WebSocketResponse, version: int, params: dict[str, str]) -> None:
        self.ws, self.version, self.params = ws, version, params
        self.frames: list[list[wire.ClientMessage]] = []

    async def send(self, *msgs: wire.ServerMessage) -> None:
        for frame in wire.server_frames(msgs, self.version, wire.Compression.GZIP):
            await self.ws.send_bytes(frame)


class FakeServer:
    def __init__(self, *, token_status: int = 200, upgrade_status: list[int] | None = None,
                 protocols: tuple[str, ...] = (V3, V2)) -> None:
        self.token_status, self.upgrade_status, self.protocols = token_status, upgrade_status or [], protocols
        self.peers: list[Peer] = []
        self.auth_headers: list[str | None] = []
        self.handler: Handler = self.default
        self.rows: list[SessionPresence] = [presence("a")]
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.new_peer = asyncio.Event()
        self.token_replies: list[web.Response] = []  # scripted answers to the token exchange, then the usual one

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/identity/websocket-token", self.token)
        app.router.add_get("/v1/database/{db}/subscribe", self.subscribe)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def token(self, request: web.Request) -> web.Response:
        self.auth_headers.append(request.headers.get("Authorization"))
        if self.token_replies:
            return self.token_replies.pop(0)
        if self.token_status != 200:
            return web.Response(status=self.token_status, text="token expired")
        return web.json_response({"token": "short-lived"})

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        if self.upgrade_status:
            return web.Response(status=self.upgrade_status.pop(0), text="not now")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = next((p for p in self.protocols if p in offered), None)
        ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), autoping=True)
        await ws.prepare(request)
        peer = Peer(ws, 3 if chosen == V3 else 2, dict(request.query))
        self.peers.append(peer)
        await peer.send(wire.InitialConnection(IDENT, 42 + len(self.peers), "server-token"))
        self.new_peer.set()
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            msgs = wire.decode_client_frame(msg.data, peer.version)
            peer.frames.append(msgs)
            for m in msgs:
                await self.handler(peer, m)
        return ws

    async def default(self, peer: Peer, m: wire.ClientMessage) -> None:
        if isinstance(m, wire.Subscribe):
            rows = wire.RowList.of([encode_row(r) for r in self.rows])
            await peer.send(wire.SubscribeApplied(m.request_id, m.query_set_id,
                                                  wire.QueryRows((wire.SingleTableRows("session_presence", rows),))))
        elif isinstance(m, wire.Unsubscribe):
            await peer.send(wire.UnsubscribeApplied(m.request_id, m.query_set_id, None))
        elif isinstance(m, wire.CallReducer):
            await peer.send(wire.ReducerResult(m.request_id, 123, wire.ReducerOk(
                encode_ret(m.reducer, 7 if m.reducer == "append_sync_event" else None),
                wire.TransactionUpdate(()))))

    async def wait_peers(self, n: int) -> Peer:
        while len(self.peers) < n:
            self.new_peer.clear()
            await self.new_peer.wait()
        return self.peers[n - 1]


class Clock:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def client(server: FakeServer, clock: Clock, **kw: Any) -> Connection:
    kw.setdefault("backoff", Backoff(base=0.5, cap=4.0, jitter=0.5, rng=lambda: 0.0))
    return Connection(server.url, "autopilot-sync", kw.pop("token", "long-lived"), sleep=clock.sleep, **kw)


async def until(pred: Callable[[], bool]) -> None:
    while not pred():
        await asyncio.sleep(0.005)


# --- connect ---------------------------------------------------------------------------------------


def test_connect_exchanges_the_token_and_negotiates_v3() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        clock = Clock()
        conn = client(server, clock, confirmed=False)
        info = await conn.connect()
        assert (info.identity, info.connection_id, info.protocol, info.version) == (IDENT, 43, V3, 3)
        assert server.auth_headers == ["Bearer long-lived"]
        assert server.peers[0].params == {"token": "short-lived", "compression": "Gzip", "confirmed": "false"}
        await conn.close()
        await server.stop()
    run(body())


@pytest.mark.parametrize(("offer", "version"), [((V2,), 2), ((V3,), 3), ((V2, V3), 3)])
def test_the_server_preference_decides_among_what_was_offered(offer: tuple[str, ...], version: int) -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock(), protocols=offer, token=None, compression="None")
        info = await conn.connect()
        assert info.version == version and server.auth_headers == []
        assert server.peers[0].params == {"compression": "None"}
        await conn.close()
        await server.stop()
    run(body())


def test_the_token_passed_as_the_database_is_a_caller_error() -> None:
    """``Connection(url, token)`` -- the token in the second position, which is the database name -- used
    to connect anonymously to a database named by the token: against a real server a 401 ``Authorization
    required`` (misleading: a token was given), and the give-up warning logged the token inside the URL.
    The database name is checked where it is given (1-128 characters of [A-Za-z0-9._:-], what the server
    serves); a JWT (longer, or with other characters) is refused, saying what probably happened."""
    jwt = "eyJhbGciOiJFUzI1NiJ9." + "e" * 300 + ".sig"
    with pytest.raises(LocalProtocolError, match="token="):
        Connection("http://h", jwt)
    for bad in ("", "a/b", "x" * 129):
        with pytest.raises(LocalProtocolError):
            Connection("http://h", bad)
    assert Connection("http://h", "autopilot-sync").database == "autopilot-sync"
    assert Connection("http://h", "0x" + "ab" * 32).database == "0x" + "ab" * 32  # a database identity


def test_bad_configuration_is_a_caller_error() -> None:
    with pytest.raises(LocalProtocolError):
        Connection("http://h", protocols=("v1.json.spacetimedb",))
    with pytest.raises(LocalProtocolError):
        Connection("ftp://h")
    with pytest.raises(ValueError):
        Connection("http://h", compression="zstd")


def test_a_refused_token_is_permanent() -> None:
    async def body() -> None:
        server = FakeServer(token_status=401)
        await server.start()
        clock = Clock()
        conn = client(server, clock)
        with pytest.raises(ConnectError) as info:
            await conn.connect()
        assert info.value.status == 401 and info.value.permanent and clock.delays == []
        with pytest.raises(ConnectError):
            await conn.call("ack_checkpoint", "c", "s", 1, 1)
        await conn.close()
        await server.stop()
    run(body())


def test_a_permanent_refusal_releases_the_http_session_without_close() -> None:
    """``async with Connection(...)`` whose token is refused for good raises from ``__aenter__``, so
    ``__aexit__`` never runs.  The token exchange's aiohttp session stayed open: "Unclosed client session"
    / "Unclosed connector" on stderr at the next collection (a real server, a malformed token) and a socket
    held per attempt by an application that retries with new connections.  The supervisor now closes it
    when it gives up."""
    import gc

    async def body() -> None:
        server = FakeServer(token_status=401)
        await server.start()
        errors: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx["message"]))
        conn = client(server, Clock())
        refused = False
        try:
            async with conn:
                pass
        except ConnectError:
            refused = True
        assert refused
        del conn  # the application drops it (it never got to close it)
        gc.collect()
        await asyncio.sleep(0)
        assert errors == []
        await server.stop()
    run(body())


def _tb_depth(exc: BaseException) -> int:
    tb, n = exc.__traceback__, 0
    while tb is not None:
        tb, n = tb.tb_next, n + 1
    return n


def test_calls_on_a_connection_that_gave_up_do_not_grow_its_error_without_bound() -> None:
    """Every call on a connection that gave up raises the one stored refusal.  Re-raising one exception
    object appends the raiser's frames to its traceback, so each call made it longer and pinned the
    frames (and their locals) of every caller before it: 1,000 retries of an application's loop, a
    traceback 3,004 entries deep.  Now each raise starts the traceback afresh."""
    async def body() -> None:
        server = FakeServer(token_status=401)
        await server.start()
        conn = client(server, Clock())
        depths = []
        for _ in range(50):
            with pytest.raises(ConnectError) as info:
                await conn.call("ack_checkpoint", "c", "s", 1, 1)
            depths.append(_tb_depth(info.value))
        assert depths[-1] == depths[1] and max(depths) < 10 and info.value is conn.fatal
        await conn.close()
        await server.stop()
    run(body())


def test_transient_refusals_back_off_then_connect() -> None:
    async def body() -> None:
        server = FakeServer(upgrade_status=[503, 502, 500])
        await server.start()
        clock = Clock()
        errors: list[BaseException] = []
        conn = client(server, clock, on_connect_error=lambda e, d: errors.append(e))
        await conn.connect()
        assert clock.delays == [0.25, 0.5, 1.0]  # rng 0 with jitter 0.5: half of 0.5, 1, 2
        assert [e.status for e in errors if isinstance(e, ConnectError)] == [503, 502, 500]
        await conn.close()
        await server.stop()
    run(body())


def test_a_token_answer_that_is_not_utf8_is_a_transient_peer_error() -> None:
    """A proxy's 502 page in Latin-1 (or a 200 whose body is not UTF-8) is the peer's bad answer: backed
    off from and retried.  Before the fix ``resp.text()`` raised UnicodeDecodeError, the supervisor
    logged it as a crash and gave up for good: one bad gateway page ended the connection forever."""
    async def body() -> None:
        server = FakeServer()
        await server.start()
        server.token_replies = [
            web.Response(status=502, body=b"<h1>Bad gateway \xe9t\xe9</h1>", content_type="text/html", charset="utf-8"),
            web.Response(status=200, body=b'{"token": "\xff"}', content_type="application/json")]
        clock = Clock()
        errors: list[BaseException] = []
        conn = client(server, clock, on_connect_error=lambda e, d: errors.append(e))
        info = await conn.connect()
        assert info.identity == IDENT and len(clock.delays) == 2
        assert isinstance(errors[0], ConnectError) and errors[0].status == 502 and not errors[0].permanent
        assert "Bad gateway" in errors[0].message
        assert isinstance(errors[1], RemoteProtocolError) and len(errors) == 2
        await conn.close()
        await server.stop()
    run(body())


def test_a_server_that_cannot_be_reached_is_reported_not_only_retried(caplog: pytest.LogCaptureFixture) -> None:
    """``await conn.connect()`` against a server that is down (or a mistyped port) retries for ever, as it
    should -- but every failed attempt was logged at INFO, so at Python's default level an application (the
    guide's quickstart with no server running) hung with no output at all.  From the third failure in a
    row it is also a WARNING, at most one per ``CONNECT_WARN_INTERVAL_S`` (30 s); the first two (a server
    restarting) only INFO."""
    async def body() -> None:
        server = FakeServer(upgrade_status=[503] * 6)
        await server.start()
        conn = client(server, Clock())
        await conn.connect()
        await conn.close()
        await server.stop()
    with caplog.at_level(logging.INFO, logger="syncref.sdk.connection"):
        run(body())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records
             if r.levelno == logging.INFO and "connect attempt" in r.getMessage()]
    assert len(warnings) == 1 and "3 attempts in a row" in warnings[0] and "HTTP 503" in warnings[0], warnings
    assert len(infos) == 6, infos  # every attempt, still there at INFO


def test_an_upgrade_refusal_like_426_is_permanent() -> None:
    async def body() -> None:
        server = FakeServer(upgrade_status=[426])
        await server.start()
        conn = client(server, Clock())
        with pytest.raises(ConnectError) as info:
            await conn.connect()
        assert info.value.status == 426 and "not now" in info.value.message
        await conn.close()
        await server.stop()
    run(body())


# --- subscriptions and calls ---------------------------------------------------------------------------


def test_subscribe_applies_into_the_cache() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock())
        sub = conn.subscribe(["SELECT * FROM session_presence"])  # before connecting: sent on connect
        await conn.connect()
        await conn.applied(sub)
        assert conn.cache.table("session_presence").find("a") == presence("a")
        sub.unsubscribe()
        await until(lambda: sub.state is SubState.ENDED)
        assert len(conn.cache.table("session_presence")) == 0
        await conn.close()
        await server.stop()
    run(body())


def test_subscribing_starts_the_connection_as_calling_does() -> None:
    """``call()`` starts a connection that ``connect()`` was not called for; ``subscribe()`` did not.  A
    StreamConsumer started on a fresh Connection (only subscribing until it has applied something) then
    waited forever -- no connection attempt, no error: ``wait_for`` on a real server hung with
    ``connects == 0``.  Subscribing now starts the connection too."""
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock())
        sub = conn.subscribe(["SELECT * FROM session_presence"])
        await conn.applied(sub, timeout=5)
        assert conn.connects == 1 and len(conn.cache.table("session_presence").rows()) == 1
        await conn.close()
        await server.stop()
    run(body())


def test_v3_frames_may_carry_several_messages_both_ways() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()

        async def batched(peer: Peer, m: wire.ClientMessage) -> None:
            if isinstance(m, wire.Subscribe):
                part = wire.PersistentTableRows(wire.RowList.of([encode_row(presence("b"))]), wire.EMPTY_ROWS)
                await peer.send(
                    wire.SubscribeApplied(m.request_id, m.query_set_id, wire.QueryRows(())),
                    wire.TransactionUpdate((wire.QuerySetUpdate(m.query_set_id, (
                        wire.TableUpdate("session_presence", (part,)),)),)))

        server.handler = batched
        conn = client(server, Clock())
        subs = [conn.subscribe([f"SELECT * FROM session_presence WHERE session_id = '{i}'"]) for i in range(3)]
        await conn.connect()
        for s in subs:
            await conn.applied(s)
        await until(lambda: conn.cache.table("session_presence").refcount(("b",)) == 3)
        assert [len(f) for f in server.peers[0].frames] == [3]  # queued before connect: one v3 frame
        await conn.close()
        await server.stop()
    run(body())


def test_calls_return_decoded_values_and_typed_errors() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conflict = SyncError(ErrorCode.SEQUENCE_CONFLICT, {"actual_next_seq": 8, "expected_next_seq": 5,
                                                           "stream_id": "s"})

        async def answers(peer: Peer, m: wire.ClientMessage) -> None:
            if not isinstance(m, wire.CallReducer):
                return
            args = m.args
            if m.reducer == "append_sync_event" and b"conflict" in args:
                outcome: wire.ReducerOutcome = wire.ReducerErr(encode_string(conflict.render()))
            elif m.reducer == "append_sync_event" and b"plain" in args:
                outcome = wire.ReducerErr(encode_string("a SpacetimeDB panic message"))
            elif m.reducer == "append_sync_event" and b"silent" in args:
                return
            elif m.reducer == "append_sync_event":
                outcome = wire.ReducerOk(encode_ret("append_sync_event", 41), wire.TransactionUpdate(()))
            else:
                outcome = wire.ReducerInternalError("no such reducer")
            await peer.send(wire.ReducerResult(m.request_id, 99, outcome))

        server.handler = answers
        conn = client(server, Clock())
        await conn.connect()
        ok = await conn.call("append_sync_event", "s", "k", "{}", None, None)
        assert (ok.value, ok.timestamp, ok.reducer) == (41, 99, "append_sync_event")
        with pytest.raises(ReducerError) as err:
            await conn.call("append_sync_event", "s", "conflict", "{}", None, 5)
        assert err.value.error == conflict and err.value.code == "sequence_conflict"
        with pytest.raises(ReducerError) as plain:
            await conn.call("append_sync_event", "s", "plain", "{}", None, None)
        assert plain.value.error is None and plain.value.message == "a SpacetimeDB panic message"
        with pytest.raises(ReducerInternalError):
            await conn.call("ack_checkpoint", "c", "s", 1, 1)
        with pytest.raises(CallTimeout):
            await conn.call("append_sync_event", "s", "silent", "{}", None, None, timeout=0.2)
        assert conn.session.calls == {}
        with pytest.raises(LocalProtocolError):
            await conn.call("append_sync_event", "s", "k")  # wrong arity: nothing is sent
        with pytest.raises(LocalProtocolError):
            await conn.call("no_such", 1)
        await conn.close()
        await server.stop()
    run(body())


def encode_string(text: str) -> bytes:
    from adapters.bsatn import Writer
    w = Writer()
    w.string(text)
    return w.getvalue()


def test_subscription_errors_surface_with_the_parsed_error() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        forbidden = SyncError(ErrorCode.FORBIDDEN_STREAM, {})

        async def refuse(peer: Peer, m: wire.ClientMessage) -> None:
            if isinstance(m, wire.Subscribe):
                await peer.send(wire.SubscriptionError(m.request_id, m.query_set_id, forbidden.render()))

        server.handler = refuse
        conn = client(server, Clock())
        await conn.connect()
        sub = conn.subscribe(["SELECT * FROM sync_event WHERE stream_id = 'secret'"])
        with pytest.raises(SubscriptionFailed) as err:
            await conn.applied(sub)
        assert err.value.error == forbidden and sub.state is SubState.FAILED
        await conn.close()
        await server.stop()
    run(body())


# --- disconnects and reconnects --------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason", "slow"), [
    (1011, "Subscription with id 1 already exists", False),
    (1013, "too many requests", False),
    (1008, "slow_consumer: outbound queue over 4096 messages", True),
])
def test_server_closes_are_reported_and_followed_by_a_resubscribing_reconnect(code: int, reason: str,
                                                                              slow: bool) -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        clock = Clock()
        closes: list[DisconnectInfo] = []
        conn = client(server, clock, on_disconnect=closes.append)
        sub = conn.subscribe(["SELECT * FROM session_presence"])
        await conn.connect()
        await conn.applied(sub)
        first_qs = sub.query_set_id
        peer = server.peers[0]
        await peer.ws.close(code=code, message=reason.encode())
        second = await server.wait_peers(2)
        await until(lambda: sub.state is SubState.APPLIED and sub.query_set_id != first_qs)
        assert closes == [DisconnectInfo(code, reason, None, True)] and closes[0].slow_consumer is slow
        assert clock.delays == [0.25]
        (resub,) = second.frames[0]
        assert isinstance(resub, wire.Subscribe) and resub.query_set_id == sub.query_set_id != first_qs
        assert conn.connects == 2 and conn.cache.table("session_presence").refcount(("a",)) == 1
        await conn.close()
        await server.stop()
    run(body())


def test_a_dropped_socket_fails_the_waiting_call_and_reconnects() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        called = asyncio.Event()

        async def hold(peer: Peer, m: wire.ClientMessage) -> None:
            if isinstance(m, wire.CallReducer):
                called.set()  # and never answer

        server.handler = hold
        conn = client(server, Clock())
        await conn.connect()
        call = asyncio.create_task(conn.call("ack_checkpoint", "c", "s", 1, 1))
        await called.wait()
        conn.abort()
        with pytest.raises(ConnectionLost):
            await call
        await server.wait_peers(2)
        await until(lambda: conn.connected)
        server.handler = server.default
        assert (await conn.call("append_sync_event", "s", "k", "{}", None, None)).value == 7
        assert conn.disconnects[0].code is None or conn.disconnects[0].code == 1006
        await conn.close()
        await server.stop()
    run(body())


def test_a_writer_that_fails_drops_the_connection_instead_of_wedging_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """If encoding an outgoing message raises (a bug, or input no check caught), the writer task used to
    die silently while the reader lived on: the connection looked up, every later message stayed queued
    and every call timed out ("may still run": never sent).  Now the writer's failure is logged and ends
    the socket: the waiting call fails with ConnectionLost, the connection reconnects and works."""
    real = wire.encode_client
    poisoned: list[wire.ClientMessage] = []

    def encode(msg: wire.ClientMessage) -> bytes:
        if isinstance(msg, wire.CallReducer) and msg.reducer == "ack_checkpoint" and not poisoned:
            poisoned.append(msg)
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "planted")
        return real(msg)

    monkeypatch.setattr(wire, "encode_client", encode)

    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock(), call_timeout=5)
        await conn.connect()
        with pytest.raises(ConnectionLost):
            await conn.call("ack_checkpoint", "c", "s", 1, 1)
        await until(lambda: conn.connects == 2 and conn.connected)
        assert (await conn.call("append_sync_event", "s", "k", "{}", None, None)).value == 7
        assert isinstance(conn.disconnects[0].error, UnicodeEncodeError)
        await conn.close()
        await server.stop()
    run(body())


def test_a_message_of_exactly_the_frame_limit_is_received_uncompressed() -> None:
    """The server sends any message body up to ``max_outbound_message_bytes`` = ``wire.MAX_FRAME_SIZE``
    and the SDK's decoder accepts a body of that size -- but the WebSocket frame carries one more byte
    (the compression tag), and the SDK capped frames at MAX_FRAME_SIZE: with ``compression="None"`` a
    body of exactly the limit was refused by the socket (1009), the connection dropped, and the call
    failed (a snapshot of that size would have been refused again at every reconnect)."""
    async def body() -> None:
        server = FakeServer()
        await server.start()
        base = len(wire.encode_server(wire.ReducerResult(1, 2, wire.ReducerInternalError(""))))
        text = "x" * (wire.MAX_FRAME_SIZE - base)

        async def big(peer: Peer, m: wire.ClientMessage) -> None:
            if isinstance(m, wire.CallReducer):
                msg = wire.ReducerResult(m.request_id, 2, wire.ReducerInternalError(text))
                data = wire.encode_server(msg)
                assert len(data) == wire.MAX_FRAME_SIZE
                await peer.ws.send_bytes(wire.frame_server(data, wire.Compression.NONE))

        server.handler = big
        conn = client(server, Clock(), protocols=(V2,), compression="None", call_timeout=10)
        await conn.connect()
        with pytest.raises(ReducerInternalError) as info:
            await conn.call("ack_checkpoint", "c", "s", 1, 1)
        assert len(info.value.message) == len(text) and conn.connects == 1
        await conn.close()
        await server.stop()
    run(body())


def test_a_malformed_server_frame_closes_with_1002_and_reconnects() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock())
        await conn.connect()
        peer = server.peers[0]
        await peer.ws.send_bytes(b"\x00\xff\xff")  # tag 0, then no valid message
        await server.wait_peers(2)
        await until(lambda: conn.connected)
        info = conn.disconnects[0]
        assert info.error is not None and info.will_reconnect
        assert peer.ws.close_code == 1002
        await conn.close()
        await server.stop()
    run(body())


def test_without_reconnect_a_drop_is_final() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock(), reconnect=False)
        await conn.connect()
        await server.peers[0].ws.close(code=1001, message=b"going away")
        await until(lambda: not conn.connected and conn.disconnects != [])
        await asyncio.sleep(0.05)
        assert len(server.peers) == 1
        with pytest.raises(ConnectionLost):
            await conn.call("ack_checkpoint", "c", "s", 1, 1)
        await conn.close()
        await server.stop()
    run(body())


def test_calls_made_while_disconnected_wait_for_the_connection() -> None:
    async def body() -> None:
        server = FakeServer(upgrade_status=[503])
        await server.start()
        conn = client(server, Clock())
        task = asyncio.create_task(conn.call("append_sync_event", "s", "k", "{}", None, None))
        await conn.connect()
        assert (await task).value == 7
        await conn.close()
        await server.stop()
    run(body())


def test_the_token_is_exchanged_again_on_every_reconnect() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock())
        await conn.connect()
        await server.peers[0].ws.close(code=1011, message=b"x")
        await server.wait_peers(2)
        assert server.auth_headers == ["Bearer long-lived"] * 2
        assert json.dumps(server.peers[1].params["token"]) == '"short-lived"'
        await conn.close()
        await server.stop()
    run(body())


def test_a_hostile_servers_malformed_frames_are_not_kept_after_each_reconnect() -> None:
    """A server that sends a big undecodable frame, again after every reconnect: the SDK closes and
    reconnects each time, and keeps a bounded record of its disconnects.  The record used to hold
    each error's traceback, whose frames held the whole frame (4 MiB here, 32 MiB at most), for the
    life of the connection object: memory grew by ~8 MiB per reconnect without bound."""
    import gc
    import tracemalloc

    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock())
        conn.max_disconnects_kept = 3
        await conn.connect()
        tracemalloc.start()
        try:
            for i in range(5):
                await server.peers[-1].ws.send_bytes(b"\x00" + b"\xff" * (4 << 20))
                await server.wait_peers(i + 2)
                await until(lambda: conn.connected)
            gc.collect()
            retained, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert retained < 4 << 20, f"{retained / 2**20:.1f} MiB still held after 5 malformed 4 MiB frames"
        assert len(conn.disconnects) == 3 and all(isinstance(d.error, Exception) for d in conn.disconnects)
        assert "invalid sum tag" in str(conn.disconnects[-1].error)  # what went wrong is still there
        await conn.close()
        await server.stop()
    run(body())


def test_a_server_that_drops_every_connection_at_once_is_backed_off_from() -> None:
    """The backoff counter resets only after a connection stayed up ``healthy_after`` seconds.  A
    server that sends InitialConnection and closes at once (a crash loop, a resubscribe it always
    refuses by closing) used to be retried at the base delay for ever -- every client of it at
    4-8 Hz, the reconnect storm the backoff exists to prevent."""
    async def body() -> None:
        server = FakeServer()
        await server.start()

        async def close_at_once(peer: Peer, m: wire.ClientMessage) -> None:
            await peer.ws.close(code=1011, message=b"internal error: RuntimeError")

        server.handler = close_at_once
        clock = Clock()
        conn = client(server, clock)
        conn.subscribe(["SELECT * FROM session_presence"])  # resubscribed on every connection: closed
        connecting = asyncio.create_task(conn.connect())
        try:
            await server.wait_peers(5)
            await until(lambda: len(clock.delays) >= 4)
        finally:
            connecting.cancel()
            await conn.close()
            await server.stop()
        assert clock.delays[:4] == [0.25, 0.5, 1.0, 2.0]  # rng 0, jitter 0.5: half of 0.5, 1, 2, 4
    run(body())


def test_cancelling_the_supervisor_while_it_tears_a_socket_down_ends_it() -> None:
    """An application that ends its event loop without closing the connection (asyncio.run cancels
    every task once): a cancel that reaches the supervisor while it waits for the writer of a socket
    that just dropped used to be swallowed there -- the supervisor reconnected and the loop's
    shutdown waited for it for ever."""
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock())
        real_write = conn._write
        writer_stopping = asyncio.Event()

        async def slow_to_stop(*args: Any) -> None:
            try:
                await real_write(*args)
            except asyncio.CancelledError:
                writer_stopping.set()
                await asyncio.sleep(0.05)  # the writer takes a moment to wind down
                raise

        conn._write = slow_to_stop  # type: ignore[method-assign]
        await conn.connect()
        task = conn._task
        assert task is not None
        conn.abort()
        await writer_stopping.wait()  # the supervisor is now awaiting the writer
        task.cancel()
        await asyncio.wait({task}, timeout=30)  # only a guard against the hang: it ends at once when it passes
        try:
            assert task.done() and task.cancelled(), f"still running after the cancel ({conn.connects} connects)"
        finally:
            await conn.close()
            await server.stop()
    run(body(), timeout=60)  # room for the 30 s guard inside


# --- async callbacks ---------------------------------------------------------------------------------


def test_async_connection_callbacks_run_without_holding_up_the_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    """``async def`` on_connect / on_disconnect / on_connect_error: their coroutine used to be created and
    dropped (never awaited, nothing of it ran).  They run as tasks: a slow on_disconnect does not delay the
    reconnect, and one that raises is logged as a plain callback's exception is."""
    async def body() -> None:
        server = FakeServer()
        server.token_replies = [web.Response(status=503, text="busy")]
        await server.start()
        seen: list[tuple[str, object]] = []
        release = asyncio.Event()

        async def on_connect(info: Any) -> None:
            await asyncio.sleep(0)
            seen.append(("connect", info.connection_id))

        async def on_disconnect(info: DisconnectInfo) -> None:
            seen.append(("disconnect", info.code))
            await release.wait()
            seen.append(("disconnect done", info.code))
            raise RuntimeError("callback bug")

        async def on_connect_error(exc: BaseException, delay: float) -> None:
            await asyncio.sleep(0)
            seen.append(("connect error", type(exc).__name__))

        conn = client(server, Clock(), on_connect=on_connect, on_disconnect=on_disconnect,
                      on_connect_error=on_connect_error)
        await conn.connect()
        async with asyncio.timeout(5):
            await until(lambda: ("connect", 43) in seen)
        assert seen[0] == ("connect error", "ConnectError")
        await server.peers[0].ws.close(code=1011, message=b"x")
        await server.wait_peers(2)
        async with asyncio.timeout(5):
            await until(lambda: ("connect", 44) in seen)  # reconnected while on_disconnect still waits
        assert ("disconnect", 1011) in seen and ("disconnect done", 1011) not in seen
        release.set()
        async with asyncio.timeout(5):
            await until(lambda: "on_disconnect raised" in caplog.text)
        assert ("disconnect done", 1011) in seen and "callback bug" in caplog.text
        await conn.close()
        await server.stop()
    with caplog.at_level(logging.ERROR, logger="syncref.sdk.connection"):
        run(body())


def test_close_waits_for_a_running_async_callback_that_ends_within_its_flush_time() -> None:
    """The normal case beside the next test's hanging one: after ``close()`` returns, the async
    ``on_disconnect`` it fired has run to its end (0.1 s, within ``close_flush_timeout``), not cancelled."""
    async def body() -> None:
        server = FakeServer()
        await server.start()
        states: list[str] = []

        async def on_disconnect(info: DisconnectInfo) -> None:
            states.append("started")
            await asyncio.sleep(0.1)
            states.append("done")

        conn = client(server, Clock(), on_disconnect=on_disconnect)
        await conn.connect()
        await conn.close()
        assert states == ["started", "done"]
        await server.stop()
    run(body())


def test_close_gives_a_running_async_callback_its_flush_time_then_cancels_it() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        states: list[str] = []

        async def on_disconnect(info: DisconnectInfo) -> None:
            states.append("started")
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                states.append("cancelled")
                raise

        conn = client(server, Clock(), on_disconnect=on_disconnect)
        conn.close_flush_timeout = 0.05
        await conn.connect()
        await conn.close()
        assert states == ["started", "cancelled"]
        await server.stop()
    run(body())


# --- token rotation --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_token_provider_is_asked_at_every_connect(kind: str) -> None:
    """``token=`` a function (or an async one): called at each (re)connect, its answer traded for the
    websocket token -- a reconnect after the old token expired presents a fresh one."""
    async def body() -> None:
        server = FakeServer()
        await server.start()
        issued: list[str] = []

        def plain() -> str:
            issued.append(f"long-{len(issued) + 1}")
            return issued[-1]

        async def in_a_while() -> str:
            await asyncio.sleep(0)
            return plain()

        conn = client(server, Clock(), token=plain if kind == "plain" else in_a_while)
        await conn.connect()
        await server.peers[0].ws.close(code=1008, message=b"token expired: reconnect with a fresh token")
        await server.wait_peers(2)
        assert server.auth_headers == ["Bearer long-1", "Bearer long-2"] and conn.long_token == "long-2"
        await conn.close()
        await server.stop()
    run(body())


def test_set_token_is_presented_at_the_next_connect_and_checked() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        conn = client(server, Clock(), token="first", exchange_token=False)
        await conn.connect()
        conn.set_token("second")
        assert conn.connects == 1  # the open connection is kept
        await server.peers[0].ws.close(code=1008, message=b"token expired")
        second = await server.wait_peers(2)
        assert [p.params["token"] for p in server.peers] == ["first", "second"] == [server.peers[0].params["token"],
                                                                                   second.params["token"]]
        for bad in ("", 7, None):
            with pytest.raises(LocalProtocolError, match="token must be"):
                conn.set_token(bad)  # type: ignore[arg-type]
        await conn.close()
        await server.stop()
    run(body())


def test_a_token_provider_that_raises_is_retried_and_one_that_returns_no_token_is_caller_misuse() -> None:
    async def body() -> None:
        server = FakeServer()
        await server.start()
        errors: list[BaseException] = []
        answers: list[object] = [OSError("auth service down"), "long-2"]

        def provider() -> str:
            answer = answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            assert isinstance(answer, str)
            return answer

        clock = Clock()
        conn = client(server, clock, token=provider, on_connect_error=lambda e, d: errors.append(e))
        await conn.connect()
        (err,) = errors
        assert isinstance(err, TokenUnavailable) and isinstance(err.__cause__, OSError)
        assert "auth service down" in str(err) and clock.delays == [0.25] and server.auth_headers == ["Bearer long-2"]
        await conn.close()

        bad = client(server, Clock(), token=lambda: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(LocalProtocolError, match="token provider must return a non-empty string"):
            await bad.connect()
        assert isinstance(bad.fatal, LocalProtocolError)
        await bad.close()
        await server.stop()
    run(body())


def test_an_async_on_disconnect_may_close_the_connection_itself() -> None:
    """close() waits for the async callbacks still running -- but not for the one it is called from: that
    one would wait for itself until close_flush_timeout, then be cancelled in the middle of its close()."""
    async def body() -> None:
        server = FakeServer()
        await server.start()
        done: list[str] = []

        async def on_disconnect(info: DisconnectInfo) -> None:
            if not done:
                done.append("closing")
                await conn.close()
                done.append("closed")

        conn = client(server, Clock(), on_disconnect=on_disconnect)
        conn.close_flush_timeout = 5.0
        await conn.connect()
        await server.peers[0].ws.close(code=1011, message=b"bye")
        async with asyncio.timeout(2):  # well within the flush timeout: close() did not wait for itself
            await until(lambda: done == ["closing", "closed"])
        assert conn.closing
        await server.stop()
    run(body())
