"""Wire-level differential harness: the real server over real sockets against the model, in lockstep.

:class:`WireDiff` runs one :class:`adapters.server.SyncServer` (in-thread, see
``support.server.running_server``) on a fresh data directory with a clock the test owns and
background sweeps/compactions pushed out of reach, next to a :class:`spec.harness.Server` with
the same policy and time.  Three peers with different claims (:data:`PEERS`) talk to the server
over WebSockets (v2 or v3, confirmed or not, any compression) and to the model through
``connect``/``handle``/``close``.  Actions: connect and disconnect, a *pipeline* of subscribe /
unsubscribe / reducer-call messages sent back to back (v3: in one frame; a resend is the same
call twice), a call through ``POST /call`` (a connection-less transaction in the model), and
time passing with a presence sweep or a compaction (run on the server's loop with the test's
clock).  Every action is done to both sides; then :meth:`WireDiff.settle`

1. puts a *barrier* on every live socket: a ``OneOffQuery`` with a reserved request id.  The
   engine answers it in order with the connection's other messages (gated by confirmed reads
   like them), so once its answer arrives everything the action made the server send to that
   peer has arrived too.  The acting peer goes first: once its barrier is answered, its action
   has been handled and fanned out to everyone;
2. makes the model's durable offset follow its committed one and pops everything releasable;
3. compares, per peer and in order, the wire messages (translated by :func:`abstract`, written
   here independently of ``wire.server_from_wire``) with the model's messages: same kinds,
   request and query set ids, reducer outcomes (return value via ``bsatn.decode_ret``, error
   text), and rows.  Inside one message the comparison is up to the order of tables and of rows
   (:func:`canonical`), which nothing specifies; the order of messages and of query sets is
   exact.  Server-initiated closes must match the model's (code 1011 and reason); what the
   model had queued for a connection it closed is lost, and the wire may show any prefix of it
   (the server writes as it goes, which is the model's run with those deliveries first).
   Reducer results must carry the reducer clock, the barrier's own answer must be the peer's
   view of the table it read (``sync_stream``, ``sync_checkpoint``, ``bridge_outbox``,
   ``sync_event``, ``compute_assignment`` in turn: :data:`BARRIER_TABLES`, judged by SQLite over
   the model's rows, so each identity's and token's view of the private tables is checked at every
   step), and afterwards the committed offsets, the live connections and every table must be equal.

A mismatch raises :class:`WireDivergence` naming the step and quoting the action log, so a
failing run prints the exact sequence to replay.  :class:`WireDiffMachine` is the Hypothesis
state machine over these actions.

The reducer clock is read by the server at each dispatched message; the barriers dispatch on
every step, so the server's clock never lags the model's when a close commits its presence
marks (``test_disconnect_uses_current_clock`` shows what happens when it does).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from websockets.exceptions import ConnectionClosed

from adapters import bsatn, satsjson, wire
from spec import messages as sm
from spec.auth import Claims
from spec.harness import Conn, Server
from spec.messages import CLOSE_PROTOCOL
from spec.policy import Policy, StreamClass
from spec.reducers import Err, compact, presence_sweep, virtual_stream
from spec.schema import REDUCER_BY_NAME, SCOPES, TABLES
from spec.values import ComputeAssignment
from support.server import ServerThread, WireClient, call_http, running_server
from support.sql_oracle import AbstractQuery, Mirror

# --- the fixture: policy, peers, vocabulary -------------------------------------------------------

POLICY = Policy(default_class=StreamClass("default", retain_count=2, replay_budget=6),
                presence_min_ttl_ms=1000, presence_max_ttl_ms=5000, bridge_max_attempts=3)
START_US = 1_700_000_000_000_000
STREAMS = ("demo.a", "demo.b", "other.x")
KEYS = ("k1", "k2", "k3")
PAYLOADS = ('{"v":1}', '{"b":1,"a":2}', "[1,2]")
SESSIONS = ("p1", "p2")
ASSIGNMENTS = ("r1", "r2")
BARRIER_BASE = 3_000_000_000  # request ids of barrier queries (u32, far above the peers' own)
BARRIER_TABLES = ("sync_stream", "sync_checkpoint", "bridge_outbox", "sync_event", "compute_assignment")
"""What the barriers read, in turn (each peer's view judged by SQLite: the peers are two identities, one
of them on two tokens, with and without a bridge scope)."""
RECV_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class PeerSpec:
    subject: str  # the token's sub: equal subjects are one identity
    scopes: frozenset[str]
    streams: tuple[str, ...]


PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("alice", frozenset(SCOPES), ("demo.*",)),  # everything, admin included
    PeerSpec("bob", frozenset(SCOPES) - {"sync.admin"}, ("demo.a",)),  # one stream only
    PeerSpec("alice", frozenset({"sync.subscribe", "presence.write", "sync.checkpoint.write"}),
             ("demo.a*",)),  # alice again, on a narrow token
)


class FakeClock:
    """The server's reducer clock (µs), moved only by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class WireDivergence(AssertionError):
    """The server, seen over the wire, disagrees with the model."""


# --- wire -> model translation and canonical forms -------------------------------------------------


def _decode_error(data: bytes) -> str:
    r = bsatn.Reader(data)
    text = r.string("ReducerErr.error")
    r.expect_end()
    return text


def _snapshot_tables(qr: wire.QueryRows) -> tuple[sm.TableRows, ...]:
    return tuple(sm.TableRows(t.table, tuple(wire.decode_rows(t.table, t.rows))) for t in qr.tables)


def _update_sets(tu: wire.TransactionUpdate) -> tuple[sm.QuerySetUpdate, ...]:
    sets = []
    for qs in tu.query_sets:
        parts = []
        for t in qs.tables:
            for rows in t.rows:
                if isinstance(rows, wire.EventTableRows):
                    parts.append(sm.TableRows(t.table_name, tuple(wire.decode_rows(t.table_name, rows.events)),
                                              (), event=True))
                else:
                    parts.append(sm.TableRows(t.table_name, tuple(wire.decode_rows(t.table_name, rows.inserts)),
                                              tuple(wire.decode_rows(t.table_name, rows.deletes))))
        sets.append(sm.QuerySetUpdate(qs.query_set_id, tuple(parts)))
    return tuple(sets)


def abstract(msg: wire.ServerMessage, reducer_of: Callable[[int], str]) -> sm.ServerMessage:
    """The model form of a received server message (offsets are not on the wire: 0).
    ``reducer_of(request_id)`` names the reducer a ``ReducerResult`` answers (its return type
    decodes the value)."""
    if isinstance(msg, wire.SubscribeApplied):
        return sm.SubscribeApplied(msg.request_id, msg.query_set_id, _snapshot_tables(msg.rows))
    if isinstance(msg, wire.UnsubscribeApplied):
        return sm.UnsubscribeApplied(msg.request_id, msg.query_set_id,
                                     None if msg.rows is None else _snapshot_tables(msg.rows))
    if isinstance(msg, wire.SubscriptionError):
        return sm.SubscriptionError(msg.request_id, msg.query_set_id, msg.error)
    if isinstance(msg, wire.TransactionUpdate):
        return sm.TransactionUpdate(0, _update_sets(msg))
    if isinstance(msg, wire.ReducerResult):
        o = msg.outcome
        outcome: sm.ReducerOk | sm.ReducerErr
        if isinstance(o, wire.ReducerOk):
            ret = bsatn.decode_ret(reducer_of(msg.request_id), o.ret_value)
            assert ret is None or isinstance(ret, int), ret
            outcome = sm.ReducerOk(ret, _update_sets(o.transaction_update))
        elif isinstance(o, wire.ReducerOkEmpty):
            outcome = sm.ReducerOk(None, ())
        elif isinstance(o, wire.ReducerErr):
            outcome = sm.ReducerErr(_decode_error(o.error))
        else:
            outcome = sm.ReducerErr(f"<internal error> {o.message}")
        return sm.ReducerResult(msg.request_id, 0, outcome)
    if isinstance(msg, wire.OneOffQueryResult):
        if isinstance(msg.result, str):
            return sm.OneOffQueryResult(msg.request_id, msg.result)
        tables = _snapshot_tables(msg.result)
        if len(tables) == 1:
            return sm.OneOffQueryResult(msg.request_id, tables[0])
        raise WireDivergence(f"a one-off result holds {len(tables)} tables: {msg!r:.200}")
    raise WireDivergence(f"unexpected server message {msg!r:.200}")


def _canon_tables(parts: Iterable[sm.TableRows]) -> tuple[Any, ...]:
    return tuple(sorted((t.table, t.event, tuple(sorted(map(repr, t.inserts))), tuple(sorted(map(repr, t.deletes))))
                        for t in parts))


def _canon_sets(sets: Sequence[sm.QuerySetUpdate]) -> tuple[Any, ...]:
    return tuple((u.query_set_id, _canon_tables(u.tables)) for u in sets)


def canonical(msg: sm.ServerMessage) -> tuple[Any, ...]:
    """A comparable form: exact but for the order of tables within a query set (or snapshot) and
    of rows within a table, and without transaction offsets (the wire has none)."""
    if isinstance(msg, sm.SubscribeApplied):
        return ("SubscribeApplied", msg.request_id, msg.query_set_id, _canon_tables(msg.rows))
    if isinstance(msg, sm.UnsubscribeApplied):
        return ("UnsubscribeApplied", msg.request_id, msg.query_set_id,
                None if msg.rows is None else _canon_tables(msg.rows))
    if isinstance(msg, sm.SubscriptionError):
        return ("SubscriptionError", msg.request_id, msg.query_set_id, msg.error)
    if isinstance(msg, sm.TransactionUpdate):
        return ("TransactionUpdate", _canon_sets(msg.query_sets))
    if isinstance(msg, sm.ReducerResult):
        o = msg.outcome
        body = ("ok", o.ret, _canon_sets(o.query_sets)) if isinstance(o, sm.ReducerOk) else ("err", o.error)
        return ("ReducerResult", msg.request_id, body)
    return (type(msg).__name__, msg)


# --- one peer ----------------------------------------------------------------------------------------


@dataclass
class Peer:
    index: int
    spec: PeerSpec
    token: str
    claims: Claims
    ws: WireClient | None = None
    model_conn: int | None = None
    server_conn: int | None = None
    version: int = 2
    confirmed: bool = False
    rid: int = 0
    reducers: dict[int, str] = field(default_factory=dict)
    last_call: sm.CallReducer | None = None

    @property
    def live(self) -> bool:
        return self.ws is not None

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid


@dataclass(frozen=True, slots=True)
class Received:
    """What one peer read up to its barrier's answer."""

    messages: tuple[wire.ServerMessage, ...]
    closed: tuple[int | None, str] | None  # (code, reason) of a close the server sent
    barrier: wire.OneOffQueryResult | None = None  # the answer to the barrier query
    barrier_table: str = "sync_stream"  # the table it read


# --- the lockstep driver --------------------------------------------------------------------------------


class WireDiff:
    def __init__(self, data_dir: Path, peers: Sequence[PeerSpec] = PEERS, policy: Policy = POLICY) -> None:
        self.clock = FakeClock(START_US)
        self.policy = policy
        self.log: list[str] = []
        self.compared = 0  # messages compared
        self.settled = 0  # steps compared
        self._barrier = 0
        self._closed: dict[int, Conn] = {}  # the model's connections it closed itself (1011), by id
        self._stack = ExitStack()
        self.st: ServerThread = self._stack.enter_context(running_server(
            data_dir, clock=self.clock, policy=policy, sweep_interval_s=1e6, compact_interval_s=1e6))
        limits = self.st.config.limits
        self.model = Server(policy, max_queue=limits.max_outbound_queue, max_undurable=limits.max_undurable)
        self.model.now = self.clock.now
        self.peers: list[Peer] = []
        for i, ps in enumerate(peers):
            token = self.st.token(scopes=ps.scopes, streams=ps.streams, subject=ps.subject)
            claims = self.st.call(lambda t=token: self.st.server.auth.verify(t).claims)
            self.peers.append(Peer(i, ps, token, claims))
        self.check_state("start")

    def close(self) -> None:
        for p in self.peers:
            if p.ws is not None:
                with contextlib.suppress(Exception):  # teardown after a failure: the socket may be gone
                    p.ws.close()
                p.ws = None
        self._stack.close()

    # --- bookkeeping -----------------------------------------------------------------------------------

    def _fail(self, where: str, what: str) -> WireDivergence:
        tail = "\n  ".join(self.log[-40:])
        return WireDivergence(f"step {len(self.log)} ({where}): {what}\n actions so far:\n  {tail}")

    def _engine(self, fn: Callable[[Any], Any]) -> Any:
        return self.st.call(lambda: fn(self.st.server.engine))

    def _on_loop(self, *steps: Callable[[], None]) -> None:
        def run() -> None:
            for step in steps:
                step()
        self.st.call(run)

    def _set_now(self) -> None:
        self.model.now = self.clock.now

    def _send(self, p: Peer, *msgs: wire.ClientMessage) -> None:
        assert p.ws is not None
        with contextlib.suppress(ConnectionClosed):  # the server closed first; settle() reads the close
            p.ws.send(*msgs)

    def _read_until_barrier(self, p: Peer) -> Received:
        """Send a barrier query to ``p`` and read until its answer or the server's close.  A peer the
        model has closed gets no barrier: it reads until the close (see :meth:`pipeline`)."""
        assert p.ws is not None
        self._barrier += 1
        rid = BARRIER_BASE + self._barrier
        table = BARRIER_TABLES[self._barrier % len(BARRIER_TABLES)]
        if p.model_conn in self.model.conns:
            self._send(p, wire.OneOffQuery(rid, f"SELECT * FROM {table}"))
        got: list[wire.ServerMessage] = []
        deadline = time.monotonic() + RECV_TIMEOUT_S
        ws = p.ws
        while True:
            if ws.pending:
                msg = ws.pending.pop(0)
                if isinstance(msg, wire.OneOffQueryResult) and msg.request_id == rid:
                    return Received(tuple(got), None, msg, table)
                got.append(msg)
                continue
            try:
                frame = ws.ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                return Received(tuple(got), (rcvd.code, rcvd.reason) if rcvd is not None else (None, ""))
            except TimeoutError:
                raise self._fail("barrier", f"peer {p.index}: no answer to the barrier within "
                                            f"{RECV_TIMEOUT_S}s; got {got!r:.300}") from None
            if not isinstance(frame, bytes):
                raise self._fail("barrier", f"peer {p.index}: a text frame {frame!r:.80}")
            ws.pending.extend(wire.decode_server_frame(frame, ws.version))

    def settle(self, where: str, acting: Peer | None = None) -> None:
        """Barrier every live socket (the acting one first), then compare everything."""
        order = [acting] if acting is not None and acting.live else []
        order += [p for p in self.peers if p.live and p is not acting]
        received = {p.index: self._read_until_barrier(p) for p in order}
        self.model.advance_durable(self.model.committed)
        for p in order:
            self._compare_peer(where, p, received[p.index])
        self.check_state(where)
        self.settled += 1

    def _compare_peer(self, where: str, p: Peer, got: Received) -> None:
        assert p.model_conn is not None
        conn = self.model.conns.get(p.model_conn)
        expected: list[sm.ServerMessage] = []
        while self.model.releasable(p.model_conn):
            expected.append(self.model.pop(p.model_conn).message)
        if conn is not None and conn.outbound:
            raise self._fail(where, f"peer {p.index}: model holds back {len(conn.outbound)} messages")
        closed = self._closed.get(p.model_conn)
        if closed is not None:
            # The model closed it during this step: what it had queued and not yet delivered is lost.
            # The server may have written some of it before it read the message that closed the
            # connection (v2 sends one frame per message), which is the model's run in which those
            # deliveries came first: the wire must show a prefix of the queue, in order.
            expected = [o.message for o in closed.outbound]
        mine = [canonical(m) for m in expected]
        theirs = [canonical(abstract(m, lambda rid: p.reducers.get(rid, "?"))) for m in got.messages]
        if closed is not None and got.closed is not None:
            mine = mine[:len(theirs)]
        if mine != theirs:
            k = next((k for k, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), min(len(mine),
                                                                                                  len(theirs)))
            raise self._fail(where, f"peer {p.index} message {k} differs (model {len(mine)} messages, wire "
                                    f"{len(theirs)}):\n model {mine[k:k + 1]}\n wire  {theirs[k:k + 1]}")
        self.compared += len(mine)
        if got.barrier is not None:
            self._compare_barrier(where, p, got.barrier, got.barrier_table)
        for m in got.messages:
            if isinstance(m, wire.ReducerResult) and m.timestamp != self.clock.now:
                raise self._fail(where, f"peer {p.index}: ReducerResult {m.request_id} stamped {m.timestamp}, "
                                        f"the reducer clock is {self.clock.now}")
        model_closed = p.model_conn not in self.model.conns
        if got.closed is None and model_closed:
            raise self._fail(where, f"peer {p.index}: the model closed it ({self._model_reason(p)}), the server "
                                    "did not")
        if got.closed is not None:
            if not model_closed:
                raise self._fail(where, f"peer {p.index}: the server closed it {got.closed}, the model did not")
            reason = self._model_reason(p)
            prefix = f"{CLOSE_PROTOCOL}: "
            want = (CLOSE_PROTOCOL, reason[len(prefix):]) if reason.startswith(prefix) else (1000, reason)
            if got.closed != want:
                raise self._fail(where, f"peer {p.index}: closed with {got.closed}, the model with {want}")
            self._forget(p)

    def _compare_barrier(self, where: str, p: Peer, answer: wire.OneOffQueryResult, table: str = "sync_stream") -> None:
        """The barrier is a one-off read of ``table``: the rows the peer may see, as of now -- SQLite's
        selection from the model's rows with the visibility rules written as SQL (support.sql_oracle)."""
        oracle = Mirror({table: tuple(self.model.db.rows(table))})
        oracle.set_claims(p.claims)
        mine = sorted(repr(r) for r in oracle.visible(AbstractQuery(table, ())))
        got = abstract(answer, lambda _: "?")
        assert isinstance(got, sm.OneOffQueryResult)
        theirs = (sorted(repr(r) for r in got.result.inserts) if isinstance(got.result, sm.TableRows)
                  else got.result)
        if mine != theirs:
            raise self._fail(where, f"peer {p.index}: one-off read of {table} (AUTH-1): SQLite over the model "
                                    f"{mine}, wire {theirs}")

    def _model_reason(self, p: Peer) -> str:
        conn = self._closed.get(p.model_conn or 0)
        return conn.closed_reason or "?" if conn is not None else "?"

    def _forget(self, p: Peer) -> None:
        if p.ws is not None:
            with contextlib.suppress(Exception):  # already closed by the server
                p.ws.ws.close()
        p.ws = None
        p.model_conn = None
        p.server_conn = None

    def check_state(self, where: str) -> None:
        committed, tables, conns = self._engine(lambda e: (
            e.committed, {t.name: frozenset(e.db.rows(t.name)) for t in TABLES}, frozenset(e.conns)))
        if committed != self.model.committed:
            raise self._fail(where, f"committed offset: server {committed}, model {self.model.committed}")
        for name, rows in tables.items():
            mine = frozenset(self.model.db.rows(name))
            if mine != rows:
                raise self._fail(where, f"table {name}: model-only {set(mine - rows)!r:.600}, server-only "
                                        f"{set(rows - mine)!r:.600}")
        live = frozenset(p.server_conn for p in self.peers if p.live and p.server_conn is not None)
        if conns != live:
            raise self._fail(where, f"server connections {sorted(conns)}, live peers {sorted(live)}")

    # --- actions ------------------------------------------------------------------------------------------

    def connect(self, i: int, version: int = 2, confirmed: bool = False, compression: str = "None") -> None:
        p = self.peers[i]
        if p.live:
            return
        self.log.append(f"connect({i}, version={version}, confirmed={confirmed}, compression={compression!r})")
        self._set_now()
        ws = WireClient(self.st, p.token, version=version, confirmed=confirmed, compression=compression)
        cid = ws.initial.connection_id
        p.server_conn = self.st.call(lambda: next(
            s.conn_id for s in self.st.server.sessions.values() if s.connection_id == cid))
        p.ws, p.version, p.confirmed = ws, version, confirmed
        p.model_conn = self.model.connect(p.claims, confirmed)
        if ws.initial.identity != p.claims.identity:
            raise self._fail("connect", f"InitialConnection identity {ws.initial.identity} != {p.claims.identity}")
        self.settle(f"connect {i}", p)

    def disconnect(self, i: int) -> None:
        """The peer closes its socket; the server drops the connection (and commits the presence marks
        of its sessions) when it sees the close."""
        p = self.peers[i]
        if not p.live:
            return
        self.log.append(f"disconnect({i})")
        self._set_now()
        assert p.ws is not None and p.model_conn is not None
        p.ws.close()
        server_conn = p.server_conn
        deadline = time.monotonic() + RECV_TIMEOUT_S
        while self._engine(lambda e: server_conn in e.conns):
            if time.monotonic() > deadline:
                raise self._fail("disconnect", f"the server kept connection {server_conn} after the close")
            time.sleep(0.002)
        self.model.close(p.model_conn)
        p.ws, p.model_conn, p.server_conn = None, None, None
        self.settle(f"disconnect {i}")

    def _handle(self, p: Peer, msg: sm.ClientMessage) -> None:
        assert p.model_conn is not None
        conn = self.model.conns[p.model_conn]
        self.model.handle(p.model_conn, msg)
        if p.model_conn not in self.model.conns:
            self._closed[p.model_conn] = conn

    def _to_wire(self, p: Peer, msg: sm.ClientMessage) -> wire.ClientMessage:
        if isinstance(msg, sm.Subscribe):
            return wire.Subscribe(msg.request_id, msg.query_set_id, msg.queries)
        if isinstance(msg, sm.Unsubscribe):
            return wire.Unsubscribe(msg.request_id, msg.query_set_id, msg.send_dropped)
        p.reducers[msg.request_id] = msg.reducer
        p.last_call = msg
        body = bsatn.encode_args(msg.reducer, msg.args) if msg.reducer in REDUCER_BY_NAME else b""
        return wire.CallReducer(msg.request_id, 0, msg.reducer, body)

    def pipeline(self, i: int, msgs: Sequence[sm.ClientMessage]) -> None:
        """Send ``msgs`` back to back (v3: in one frame) without waiting for answers, then settle.  The
        model handles them in the same order; after a close the rest are never read, on both sides."""
        p = self.peers[i]
        assert p.live and msgs
        self.log.append(f"pipeline({i}, {list(msgs)!r})")
        self._set_now()
        frames = [self._to_wire(p, m) for m in msgs]
        handled = 0
        for m in msgs:
            if p.model_conn not in self.model.conns:
                break
            self._handle(p, m)
            handled += 1
        if p.version == 3:
            self._send(p, *frames)  # one frame: the server reads it whole, then ignores what follows a close
        else:
            # v2: one frame each, but none after the one that makes the server close: a frame still
            # unread when the server drops the TCP connection resets it, and the close frame can be
            # lost with it (test_close_frame_survives_a_pipelined_frame)
            for f in frames[:handled]:
                self._send(p, f)
        self.settle(f"peer {i}: {', '.join(type(m).__name__ for m in msgs)}", p)

    def next_rid(self, i: int) -> int:
        return self.peers[i].next_rid()

    def subscribe(self, i: int, qs: int, queries: tuple[str, ...]) -> None:
        self.pipeline(i, [sm.Subscribe(self.next_rid(i), qs, queries)])

    def unsubscribe(self, i: int, qs: int, send_dropped: bool) -> None:
        self.pipeline(i, [sm.Unsubscribe(self.next_rid(i), qs, send_dropped)])

    def call(self, i: int, reducer: str, args: tuple[Any, ...], times: int = 1) -> None:
        """A reducer call over the socket, sent ``times`` times with the same request id (a resend)."""
        self.pipeline(i, [sm.CallReducer(self.next_rid(i), reducer, args)] * times)

    def resend_last(self, i: int) -> None:
        """Send the peer's last call again, same request id (a client that did not see its answer)."""
        last = self.peers[i].last_call
        if last is not None:
            self.pipeline(i, [last])

    def http_call(self, i: int, reducer: str, args: tuple[Any, ...]) -> None:
        """``POST /call/:reducer`` with peer ``i``'s token: no socket caller, so every subscriber hears of
        it by ``TransactionUpdate``; the model runs it as a connection-less transaction."""
        p = self.peers[i]
        self.log.append(f"http_call({i}, {reducer!r}, {args!r})")
        self._set_now()
        rdef = REDUCER_BY_NAME[reducer]
        body = [satsjson.to_json(c.type, v) for c, v in zip(rdef.args, args, strict=True)]
        outcome = self.model.call_detached(p.claims, reducer, args)
        if isinstance(outcome, Err):
            want: tuple[int, str | None, str] = (530, None, outcome.error.render())
        else:
            want = (200, None if outcome.ret is None else json.dumps(outcome.ret), "")
        res = call_http(self.st, p.token, reducer, body)
        got = (res.status, res.headers.get("syncref-return-value"), res.text)
        if got != want:
            raise self._fail(f"http {reducer}", f"HTTP answer {got}, model {want}")
        self.settle(f"http {i} {reducer}")

    def tick(self, dt_us: int, sweep: bool = True) -> None:
        """Time passes; then, if asked, a presence sweep runs on both sides."""
        self.clock.now += dt_us
        self.log.append(f"tick({dt_us}, sweep={sweep})")
        self._set_now()
        if sweep:
            self.model.system_tx(presence_sweep(self.model.db, self.model.now))
            srv = self.st.server
            self._on_loop(srv._sweep, srv._pump)
        self.settle("tick")

    def compact(self) -> None:
        self.log.append("compact()")
        self._set_now()
        self.model.system_tx(compact(self.model.db, self.model.now, self.policy))
        srv = self.st.server
        self._on_loop(srv._compact, srv._pump)
        self.settle("compact")


# --- the state machine --------------------------------------------------------------------------------

QUERY_KINDS = ("events", "resume", "resume", "star", "streams", "signals", "presence", "presence_signal",
               "compute", "checkpoints", "providers", "bridge", "bad")
peer_st = st.sampled_from(range(len(PEERS)))
caller_st = st.sampled_from([0, 0, 1, 1, 1, 2])  # callers with the scopes to write, mostly
stream_st = st.sampled_from(["demo.a", "demo.a", "demo.b", "other.x"])
rarely = st.sampled_from([False] * 4 + [True])


def query_text(kind: str, stream: str, w_kind: int, epoch_kind: int, db_view: tuple[int, int, int]) -> str:
    """One subscription query; a resume's watermark is placed relative to the stream's head and floor
    (``w_kind``: 0 head, 1 head-1, 2 floor-1, 3 floor-2, 4 head+1, 5 zero) with the current, a
    later or no epoch (``epoch_kind`` 0, 1, 2)."""
    epoch, head, floor = db_view
    if kind == "events":
        return f"SELECT * FROM sync_event WHERE stream_id = '{stream}'"
    if kind == "resume":
        w = max(0, (head, head - 1, floor - 1, floor - 2, head + 1, 0)[w_kind])
        ep = ("", f" AND epoch = {epoch}", f" AND epoch = {epoch + 1}")[epoch_kind]
        return f"SELECT * FROM sync_event WHERE stream_id = '{stream}'{ep} AND seq > {w}"
    if kind == "star":
        return "SELECT * FROM *"
    if kind == "streams":
        return "SELECT * FROM sync_stream"
    if kind == "signals":
        return f"SELECT * FROM stream_signal WHERE stream_id = '{stream}'"
    if kind == "presence":
        return "SELECT * FROM session_presence"
    if kind == "presence_signal":
        return "SELECT * FROM presence_signal"
    if kind == "compute":
        return "SELECT * FROM compute_assignment"
    if kind == "providers":
        return "SELECT * FROM provider_capability"
    if kind == "bridge":
        return "SELECT * FROM bridge_outbox"
    if kind == "checkpoints":
        return f"SELECT * FROM sync_checkpoint WHERE stream_id = '{stream}'"
    return ("SELECT nope FROM sync_event", "SELECT * FROM nope", "DELETE FROM sync_event")[w_kind % 3]


query_st = st.tuples(st.sampled_from(QUERY_KINDS), stream_st, st.integers(0, 5), st.integers(0, 2))


class WireDiffMachine(RuleBasedStateMachine):
    """Random action sequences over real sockets, compared with the model after every step."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="wirediff-")
        self.d = WireDiff(Path(self._tmp.name))
        self.fresh = 0

    def teardown(self) -> None:
        try:
            self.d.close()
        finally:
            self._tmp.cleanup()

    # --- helpers ---------------------------------------------------------------------------------------

    def _live(self, i: int) -> Peer:
        """Peer ``i``, connected first if it is not (an SDK reconnects)."""
        p = self.d.peers[i]
        if not p.live:
            self.d.connect(i, version=3 if i != 1 else 2, confirmed=i == 1)
        return p

    def _queries(self, picks: list[tuple[str, str, int, int]]) -> tuple[str, ...]:
        return tuple(query_text(k, s, w, e, virtual_stream(self.d.model.db, s)) for k, s, w, e in picks)

    def _active(self, p: Peer) -> list[int]:
        assert p.model_conn is not None
        return sorted(self.d.model.conns[p.model_conn].query_sets)

    # --- rules -----------------------------------------------------------------------------------------

    @initialize(versions=st.tuples(st.sampled_from([2, 3]), st.sampled_from([2, 3]), st.sampled_from([2, 3])),
                confirmed=st.tuples(st.booleans(), st.booleans(), st.booleans()),
                compression=st.sampled_from(["None", "Gzip", "Brotli"]),
                subs=st.tuples(*[st.lists(query_st, min_size=1, max_size=2)] * len(PEERS)))
    def start(self, versions: tuple[int, int, int], confirmed: tuple[bool, bool, bool], compression: str,
              subs: tuple[list[tuple[str, str, int, int]], ...]) -> None:
        """Everyone connects and subscribes once; peer 0 also watches ``SELECT * FROM *`` (query set
        900), so every commit it may read reaches at least one socket."""
        for i in range(len(PEERS)):
            self.d.connect(i, version=versions[i], confirmed=confirmed[i], compression=compression)
        self.d.subscribe(0, 900, ("SELECT * FROM *",))
        for i, picks in enumerate(subs):
            self.d.subscribe(i, 1, self._queries(picks))

    @rule(i=peer_st, version=st.sampled_from([2, 3]), confirmed=st.booleans(),
          compression=st.sampled_from(["None", "Gzip", "Brotli"]), stay_away=rarely)
    def reconnect(self, i: int, version: int, confirmed: bool, compression: str, stay_away: bool) -> None:
        """Drop the peer's socket (its sessions go offline) and, unless it stays away for a while, open
        a new one; the next action that needs the peer reconnects it anyway."""
        self.d.disconnect(i)
        if not stay_away:
            self.d.connect(i, version=version, confirmed=confirmed, compression=compression)

    @rule(i=peer_st, picks=st.lists(query_st, min_size=1, max_size=2), reuse=rarely, slot=st.integers(1, 4))
    def subscribe(self, i: int, picks: list[tuple[str, str, int, int]], reuse: bool, slot: int) -> None:
        p = self._live(i)
        active = self._active(p)
        qs = active[slot % len(active)] if reuse and active else next(
            k for k in range(slot, slot + 64) if k not in active)
        self.d.subscribe(i, qs, self._queries(picks))

    @rule(i=peer_st, slot=st.integers(0, 3), send_dropped=st.booleans(), unknown=rarely)
    def unsubscribe(self, i: int, slot: int, send_dropped: bool, unknown: bool) -> None:
        p = self._live(i)
        active = self._active(p)
        qs = 99 if unknown or not active else active[slot % len(active)]
        self.d.unsubscribe(i, qs, send_dropped)

    @rule(i=caller_st, items=st.lists(st.sampled_from(["sub", "resub", "unsub", "call"]), min_size=2, max_size=4),
          picks=st.lists(query_st, min_size=1, max_size=2), s=stream_st, send_dropped=st.booleans())
    def pipeline(self, i: int, items: list[str], picks: list[tuple[str, str, int, int]], s: str,
                 send_dropped: bool) -> None:
        """Several messages in flight at once: subscribe a new set, subscribe its id again (1011 unless
        it was unsubscribed in between), unsubscribe it, append -- in a drawn order."""
        p = self._live(i)
        active = self._active(p)
        last = next(k for k in range(20, 100) if k not in active)
        msgs: list[sm.ClientMessage] = []
        for n, item in enumerate(items):
            rid = self.d.next_rid(i)
            if item in ("sub", "resub"):
                last = last if item == "resub" else next(k for k in range(last + 1, 200) if k not in active)
                msgs.append(sm.Subscribe(rid, last, self._queries(picks)))
            elif item == "unsub":
                msgs.append(sm.Unsubscribe(rid, last, send_dropped))
            else:
                self.fresh += 1
                msgs.append(sm.CallReducer(rid, "append_sync_event", (s, f"f{self.fresh}", f"[{n}]", None, None)))
        self.d.pipeline(i, msgs)

    @rule(i=caller_st, s=stream_st, k=st.sampled_from((*KEYS, "fresh", "fresh", "fresh")),
          payload=st.sampled_from(PAYLOADS), with_hash=rarely, expect=st.sampled_from([None, None, None, 0, 0, -1, 1]),
          times=st.sampled_from([1, 1, 1, 2]), http=rarely)
    def append(self, i: int, s: str, k: str, payload: str, with_hash: bool, expect: int | None, times: int,
               http: bool) -> None:
        from spec.canonical import canonicalize, payload_hash
        if k == "fresh":
            self.fresh += 1
            k = f"f{self.fresh}"
        h = payload_hash(canonicalize(payload)) if with_hash else None
        exp = None if expect is None else virtual_stream(self.d.model.db, s)[1] + 1 + expect
        args = (s, k, payload, h, exp)
        if http:
            self.d.http_call(i, "append_sync_event", args)
        else:
            self._live(i)
            self.d.call(i, "append_sync_event", args, times)

    @rule(i=caller_st, s=stream_st, client=st.sampled_from(["d1", "d2"]), delta=st.integers(-2, 1),
          epoch_delta=st.sampled_from([0, 0, 0, -1]))
    def ack(self, i: int, s: str, client: str, delta: int, epoch_delta: int) -> None:
        epoch, head, _ = virtual_stream(self.d.model.db, s)
        self._live(i)
        self.d.call(i, "ack_checkpoint", (client, s, max(0, epoch + epoch_delta), max(0, head + delta)))

    @rule(i=caller_st, session=st.sampled_from(SESSIONS), status=st.sampled_from(["online", "away", "offline"]),
          ttl=st.sampled_from([1000, 3000, 3000, 500]), times=st.sampled_from([1, 1, 2]), http=rarely)
    def presence(self, i: int, session: str, status: str, ttl: int, times: int, http: bool) -> None:
        args = (session, "dev", "node", status, "eu", ttl)
        if http:
            self.d.http_call(i, "upsert_presence", args)
        else:
            self._live(i)
            self.d.call(i, "upsert_presence", args, times)

    @rule(i=caller_st, s=stream_st, kind=st.sampled_from(["typing", "progress", "nope"]))
    def signal(self, i: int, s: str, kind: str) -> None:
        self._live(i)
        self.d.call(i, "publish_stream_signal", (s, kind, "{}"))

    @rule(i=caller_st, rid=st.sampled_from(ASSIGNMENTS), req=st.sampled_from(PAYLOADS[:2]))
    def open_assignment(self, i: int, rid: str, req: str) -> None:
        self._live(i)
        self.d.call(i, "open_compute_assignment", (rid, 5000, req))

    @rule(i=caller_st, rid=st.sampled_from(ASSIGNMENTS),
          status=st.sampled_from(["assigned", "running", "completed", "failed", "cancelled"]),
          vdelta=st.sampled_from([0, 0, 1]), result=st.sampled_from([None, '{"ok":true}']),
          provider=st.sampled_from(["prov1", "prov2"]))
    def update_assignment(self, i: int, rid: str, status: str, vdelta: int, result: str | None, provider: str) -> None:
        row = self.d.model.db.find(ComputeAssignment, lambda r: r.request_id == rid)
        version = (row.version if row else 1) + vdelta
        self._live(i)
        self.d.call(i, "update_compute_assignment",
                    (rid, version, status, provider if status == "assigned" else None, result))

    @rule(i=caller_st, pid=st.sampled_from(["prov1", "prov2"]), kinds=st.sampled_from([(5000,), (5001, 5000), (4000,)]),
          status=st.sampled_from(["active", "active", "withdrawn"]))
    def provider(self, i: int, pid: str, kinds: tuple[int, ...], status: str) -> None:
        """A provider capability: its owner decides who reads the compute assignments naming it."""
        self._live(i)
        self.d.call(i, "publish_provider_capability", (pid, '{"gpu":1}', kinds, 10, status))

    @rule(i=caller_st, oid=st.sampled_from(["o1", "o2"]), op=st.sampled_from(["enqueue", "sent", "failure"]))
    def bridge(self, i: int, oid: str, op: str) -> None:
        self._live(i)
        if op == "enqueue":
            self.d.call(i, "enqueue_bridge_event", (oid, "src", 30078, '[["t","x"]]', "hello"))
        elif op == "sent":
            self.d.call(i, "mark_bridge_event_sent", (oid, "1" * 64, ("wss://r1",)))
        else:
            self.d.call(i, "record_bridge_failure", (oid, "relay down", 1000))

    @rule(i=peer_st, s=stream_st, unknown=st.booleans())
    def reset_epoch_or_unknown(self, i: int, s: str, unknown: bool) -> None:
        """An admin epoch reset (only peer 0 may), or a reducer the module does not have."""
        self._live(i)
        if unknown:
            self.d.call(i, "no_such_thing", ())
        else:
            self.d.call(i, "reset_stream_epoch", (s,))

    @rule(i=peer_st)
    def resend_last(self, i: int) -> None:
        self._live(i)
        self.d.resend_last(i)

    @rule(dt=st.sampled_from([0, 600_000, 1_500_000, 4_000_000]), sweep=st.sampled_from([True, True, False]),
          then_compact=st.booleans())
    def time_passes(self, dt: int, sweep: bool, then_compact: bool) -> None:
        self.d.tick(dt, sweep)
        if then_compact:
            self.d.compact()
