"""The server side of the delivery contract (DESIGN §3), as an executable model.

:class:`Server` holds the committed database, the durable offset, the commit history needed to
roll back to it, and one :class:`Conn` per open connection.  Its methods are the transitions:

``connect`` / ``close``
    open or drop a connection (a close marks ``disconnected`` the sessions whose last upsert it made);
``handle(conn, msg)``
    one client message, in per-connection order:

    * ``Subscribe``: every query of the set is parsed and authorized first (one bad query fails
      the set), then stale-cursor checked, then the snapshot is taken from the current state and
      the set registered *in the same step* -- nothing can commit in between, which is the
      atomic snapshot+registration of the contract;
    * ``CallReducer``: run the reducer; if it wrote, commit at offset ``committed + 1`` and fan
      out; the caller gets a ``ReducerResult`` (carrying its own matching rows), every other
      client with matching rows one ``TransactionUpdate``;
``system_tx``
    a server-initiated transaction (presence sweep, compaction), fanned out the same way;
``advance_durable`` / ``crash`` / ``clean_restart``
    durability: a crash loses every transaction past the durable offset and then bumps epochs
    (:func:`spec.reducers.unclean_restart`).

Outbound messages queue per connection tagged with the offset of the state they were derived
from.  A client consumes from the front only when that offset is released: always for a
non-confirmed connection, once ``offset <= durable`` for a confirmed one.  Order is never
changed.  A queue longer than ``max_queue`` disconnects that client (``slow_consumer``).
The server never runs more than ``max_undurable`` transactions ahead of its durable offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import icontract

from spec import query as q
from spec.auth import Claims, can_read, has_scope, stream_granted
from spec.errors import ErrorCode, SyncError
from spec.messages import (
    CLOSE_PROTOCOL,
    SLOW_CONSUMER_REASON,
    CallReducer,
    ClientMessage,
    Outbound,
    QuerySetUpdate,
    ReducerErr,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeApplied,
)
from spec.policy import DEFAULT_POLICY, Policy
from spec.reducers import (
    CallContext,
    Err,
    Ok,
    Outcome,
    call,
    disconnect_sessions,
    unclean_restart,
    virtual_stream,
)
from spec.resume import continuation_details, stale_reasons
from spec.schema import TABLE_BY_NAME
from spec.state import DbState, Delta
from spec.values import Identity, Row, SyncEvent, SyncStream


@icontract.ensure(lambda query, result: result is None or (
    result.code is ErrorCode.INVALID_QUERY and q.RESUME_QUERY_FORM in result.details["message"]),
    "STALE-3 (the refusal shows how to write the resume query)")
@icontract.ensure(lambda query, result: (result is None) == (
    query.table != "sync_event" or q.lower_bound_exclusive(query, "seq") is None
    or (isinstance(q.pinned_value(query, "stream_id"), str) and isinstance(q.pinned_value(query, "epoch"), int))),
    "STALE-3 (refused exactly when it bounds seq from below without pinning stream_id and epoch)")
def resume_form_error(query: q.Query) -> SyncError | None:
    """A ``sync_event`` subscription that bounds ``seq`` from below is a resume: it is checked for
    staleness, and the stale check needs the stream and the epoch the watermark belongs to.  Without
    ``epoch =``, a cursor from a lost suffix would become valid again in a later epoch and the client
    would keep events that no longer exist; without ``stream_id =`` there is no stream to check.
    So such a query is refused (ADR-0003, decision 3)."""
    if query.table != "sync_event" or q.lower_bound_exclusive(query, "seq") is None:
        return None
    missing = [c for c in ("stream_id", "epoch") if q.pinned_value(query, c) is None]
    if not missing:
        return None
    return SyncError(ErrorCode.INVALID_QUERY, {
        "query": query.text[:200],
        "message": f"a sync_event subscription that bounds seq from below must pin stream_id and epoch with = "
                   f"(missing: {', '.join(missing)}); resume with {q.RESUME_QUERY_FORM}, E and W from the "
                   f"checkpoint (or leave seq unbounded to read the whole stream)"})


@icontract.ensure(lambda query, result: result is None or (
    result.code is ErrorCode.STALE_CURSOR and bool(result.details["reasons"])
    and result.details["stream_id"] == q.pinned_value(query, "stream_id")
    and result.details["requested_watermark"] == q.resume_watermark(query)),
    "STALE-1 (a stale_cursor names the resume's stream and watermark and at least one reason)")
def stale_error(db: DbState, policy: Policy, query: q.Query) -> SyncError | None:
    """The stale-cursor check of one subscription query (only sync_event queries that pin a
    stream with ``=`` and bound ``seq`` from below are resume queries)."""
    if query.table != "sync_event":
        return None
    stream_id = q.pinned_value(query, "stream_id")
    watermark = q.resume_watermark(query)
    if not isinstance(stream_id, str) or watermark is None:
        return None
    requested_epoch = q.pinned_value(query, "epoch")
    req_epoch = requested_epoch if isinstance(requested_epoch, int) else None
    epoch, head, floor = virtual_stream(db, stream_id)
    budget = policy.class_for(stream_id).replay_budget
    reasons = stale_reasons(epoch, head, floor, budget, req_epoch, watermark)
    if not reasons:
        return None
    return SyncError(ErrorCode.STALE_CURSOR, {
        **continuation_details(db.find(SyncStream, lambda r: r.stream_id == stream_id)),
        "epoch": epoch, "floor_seq": floor, "head_seq": head, "reasons": list(reasons),
        "replay_budget": budget, "requested_epoch": req_epoch, "requested_watermark": watermark,
        "stream_id": stream_id})


@dataclass
class Conn:
    conn_id: int
    claims: Claims
    confirmed: bool
    query_sets: dict[int, tuple[q.Query, ...]] = field(default_factory=dict)
    outbound: list[Outbound] = field(default_factory=list)
    closed_reason: str | None = None


@dataclass
class Commit:
    offset: int
    state: DbState
    delta: Delta


def _front_offset(server: Server, conn_id: int) -> int:
    return server.conns[conn_id].outbound[0].offset


def _max_epoch(db: DbState) -> int:
    return max([db.epoch_floor, *(s.epoch for s in db.of_type(SyncStream))])


class Server:
    def __init__(self, policy: Policy = DEFAULT_POLICY, max_queue: int = 64, max_undurable: int = 8) -> None:
        self.policy = policy
        self.max_queue = max_queue
        self.max_undurable = max_undurable
        self.db = DbState()
        self.committed = 0
        self.durable = 0
        self.durable_db = self.db
        self.history: list[Commit] = []  # commits past the durable offset
        self.ledger: list[SyncEvent] = []  # every event ever committed (not subject to compaction)
        self.conns: dict[int, Conn] = {}
        self._disconnects: list[tuple[Identity, int, frozenset[str]]] = []  # closed, sessions not yet marked
        self.upserter: dict[str, int] = {}  # session -> the connection that last upserted it (memory only)
        self._fanning_out = False
        self.now = 0
        self._next_conn = 1

    # --- connections -----------------------------------------------------------------------

    def connect(self, claims: Claims, confirmed: bool) -> int:
        cid = self._next_conn
        self._next_conn += 1
        self.conns[cid] = Conn(cid, claims, confirmed)
        return cid

    def close(self, conn_id: int, reason: str = "closed") -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        conn.closed_reason = reason
        mine = frozenset(s for s, c in self.upserter.items() if c == conn_id)
        if mine:
            self._disconnects.append((conn.claims.identity, conn_id, mine))
        self._drain_disconnects()

    def _drain_disconnects(self) -> None:
        """Mark the sessions of closed connections ``disconnected``, one transaction per closed
        connection, never in the middle of another transaction's fanout (a slow consumer is
        closed while a commit fans out) and never past the durability bound (it waits).  Only the
        sessions whose last upsert came from that connection are marked (ADR-0003 decision 4): a
        session re-upserted on a newer connection (the reconnect path) belongs to that one."""
        # waiting marks commit in (identity, sessions) order, so the order is the same however
        # the closes that queued them interleaved
        self._disconnects.sort(key=lambda d: (d[0], sorted(d[2])))
        while self._disconnects and not self._fanning_out and self.can_commit():
            identity, conn_id, queued = self._disconnects.pop(0)
            sessions = frozenset(s for s in queued if self.upserter.get(s) == conn_id)
            for s in sessions:
                del self.upserter[s]
            ok = disconnect_sessions(self.db, self.now, identity, sessions)
            if not ok.noop:
                self._commit(ok.state, ok.delta, None)

    def can_commit(self) -> bool:
        return self.committed - self.durable < self.max_undurable

    # --- client messages -------------------------------------------------------------------

    @icontract.require(lambda self, msg: not isinstance(msg, CallReducer) or self.can_commit(),
                       "a call is taken only within the durability bound (the caller waits otherwise)")
    def handle(self, conn_id: int, msg: ClientMessage) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if isinstance(msg, Subscribe):
            self._subscribe(conn, msg)
        elif isinstance(msg, Unsubscribe):
            if msg.query_set_id not in conn.query_sets:
                self._send(conn, self.committed, SubscriptionError(
                    msg.request_id, msg.query_set_id,
                    SyncError(ErrorCode.INVALID_QUERY, {"message": "unknown query set",
                                                        "query_set_id": msg.query_set_id}).render()))
                return
            dropped = (self._snapshot(conn.claims, list(conn.query_sets[msg.query_set_id]))
                       if msg.send_dropped else None)
            del conn.query_sets[msg.query_set_id]
            self._send(conn, self.committed, UnsubscribeApplied(msg.request_id, msg.query_set_id, dropped))
        else:
            self._call(conn, msg)

    def _authorize_query(self, claims: Claims, query: q.Query) -> SyncError | None:
        table = TABLE_BY_NAME[query.table]
        if table.visibility.value == "stream_grant":
            stream_id = q.pinned_value(query, "stream_id")
            if isinstance(stream_id, str) and not stream_granted(claims, stream_id):
                return SyncError(ErrorCode.FORBIDDEN_STREAM, {})
        return None

    def _subscribe(self, conn: Conn, msg: Subscribe) -> None:
        if msg.query_set_id in conn.query_sets:
            self.close(conn.conn_id, f"{CLOSE_PROTOCOL}: query set {msg.query_set_id} is already active")
            return
        try:
            if not has_scope(conn.claims, "sync.subscribe"):
                raise SyncError(ErrorCode.MISSING_SCOPE, {"scope": "sync.subscribe"})
            queries: list[q.Query] = []
            for text in msg.queries:
                queries.extend(q.parse(text))
            for query in queries:
                refused = resume_form_error(query)
                if refused:
                    raise refused
            for query in queries:
                denied = self._authorize_query(conn.claims, query)
                if denied:
                    raise denied
            for query in queries:
                stale = stale_error(self.db, self.policy, query)
                if stale:
                    raise stale
        except SyncError as err:
            self._send(conn, self.committed,
                       SubscriptionError(msg.request_id, msg.query_set_id, err.render()))
            return
        rows = self._snapshot(conn.claims, queries)
        conn.query_sets[msg.query_set_id] = tuple(queries)
        self._send(conn, self.committed, SubscribeApplied(msg.request_id, msg.query_set_id, rows))

    def _visible(self, claims: Claims, query: q.Query, rows: Iterable[Row]) -> list[Row]:
        return [r for r in rows if q.matches(query, r) and can_read(claims, r)]

    def _snapshot(self, claims: Claims, queries: list[q.Query]) -> tuple[TableRows, ...]:
        out: dict[str, list[Row]] = {}
        for query in queries:
            if TABLE_BY_NAME[query.table].event:
                continue  # event rows are never in a snapshot
            bucket = out.setdefault(query.table, [])
            for r in self._visible(claims, query, self.db.rows(query.table)):
                if r not in bucket:
                    bucket.append(r)
        return tuple(TableRows(t, tuple(rs)) for t, rs in out.items() if rs)

    def _updates_for(self, conn: Conn, delta: Delta) -> tuple[QuerySetUpdate, ...]:
        out = []
        for qs_id in sorted(conn.query_sets):
            tables: dict[str, tuple[list[Row], list[Row]]] = {}
            for query in conn.query_sets[qs_id]:
                td = delta.for_table(query.table)
                ins, dels = tables.setdefault(query.table, ([], []))
                for r in self._visible(conn.claims, query, td.inserts):
                    if r not in ins:
                        ins.append(r)
                for r in self._visible(conn.claims, query, td.deletes):
                    if r not in dels:
                        dels.append(r)
            parts = tuple(TableRows(t, tuple(i), tuple(d), TABLE_BY_NAME[t].event)
                          for t, (i, d) in tables.items() if i or d)
            if parts:
                out.append(QuerySetUpdate(qs_id, parts))
        return tuple(out)

    def _call(self, conn: Conn, msg: CallReducer) -> None:
        ctx = CallContext(conn.claims, self.now, self.committed + 1, self.policy)
        outcome = call(self.db, ctx, msg.reducer, msg.args)
        if isinstance(outcome, Err):
            self._send(conn, self.committed,
                       ReducerResult(msg.request_id, self.committed, ReducerErr(outcome.error.render())))
            return
        if msg.reducer == "upsert_presence":
            self.upserter[str(msg.args[0])] = conn.conn_id
        if outcome.noop:
            self._send(conn, self.committed,
                       ReducerResult(msg.request_id, self.committed, ReducerOk(outcome.ret, ())))
            return
        self._commit(outcome.state, outcome.delta, (conn, msg.request_id, outcome))

    @icontract.require(lambda self: self.can_commit(), "a call is taken only within the durability bound")
    def call_detached(self, claims: Claims, reducer: str, args: tuple[object, ...]) -> Outcome:
        """A reducer call with no connection (the HTTP ``call`` route): every subscriber hears of it by
        ``TransactionUpdate``.  A session upserted this way belongs to no connection: no close marks it."""
        outcome = call(self.db, CallContext(claims, self.now, self.committed + 1, self.policy), reducer, args)
        if isinstance(outcome, Ok):
            if reducer == "upsert_presence":
                self.upserter.pop(str(args[0]), None)
            self.system_tx(outcome)
        return outcome

    def system_tx(self, outcome: Ok) -> bool:
        """Commit a server-initiated transaction; False when it wrote nothing or must wait."""
        if outcome.noop or not self.can_commit():
            return False
        self._commit(outcome.state, outcome.delta, None)
        return True

    def _commit(self, state: DbState, delta: Delta, caller: tuple[Conn, int, Ok] | None) -> None:
        self.committed += 1
        offset = self.committed
        self.db = state
        self.history.append(Commit(offset, state, delta))
        self.ledger.extend(r for r in delta.for_table("sync_event").inserts if isinstance(r, SyncEvent))
        self._fanning_out = True
        self._fanout(offset, delta, caller)
        self._fanning_out = False
        self._drain_disconnects()

    def _fanout(self, offset: int, delta: Delta, caller: tuple[Conn, int, Ok] | None) -> None:
        for conn in list(self.conns.values()):
            updates = self._updates_for(conn, delta)
            if caller is not None and conn is caller[0]:
                self._send(conn, offset, ReducerResult(caller[1], offset, ReducerOk(caller[2].ret, updates)))
            elif updates:
                self._send(conn, offset, TransactionUpdate(offset, updates))

    def _send(self, conn: Conn, offset: int, message: SubscribeApplied | UnsubscribeApplied
              | SubscriptionError | TransactionUpdate | ReducerResult) -> None:
        if conn.conn_id not in self.conns:
            return
        conn.outbound.append(Outbound(offset, message))
        if len(conn.outbound) > self.max_queue:
            self.close(conn.conn_id, SLOW_CONSUMER_REASON)

    # --- delivery to the client --------------------------------------------------------------

    @icontract.ensure(lambda self, conn_id, result: not result or not self.conns[conn_id].confirmed
                      or _front_offset(self, conn_id) <= self.durable,
                      "CONF-1 (a confirmed-read connection is released only messages of durable offsets)")
    def releasable(self, conn_id: int) -> bool:
        conn = self.conns.get(conn_id)
        if conn is None or not conn.outbound:
            return False
        return not conn.confirmed or conn.outbound[0].offset <= self.durable

    def pop(self, conn_id: int) -> Outbound:
        assert self.releasable(conn_id)
        return self.conns[conn_id].outbound.pop(0)

    # --- durability ------------------------------------------------------------------------

    @icontract.snapshot(lambda self: self.durable, name="durable")
    @icontract.ensure(lambda self, OLD: OLD.durable <= self.durable <= self.committed,
                      "the durable offset never decreases and never passes the committed offset")
    @icontract.ensure(lambda self: all(c.offset > self.durable for c in self.history),
                      "the rollback history holds exactly the commits past the durable offset")
    def advance_durable(self, to: int) -> None:
        to = min(max(to, self.durable), self.committed)
        for c in self.history:
            if c.offset <= to:
                self.durable_db = c.state
        self.history = [c for c in self.history if c.offset > to]
        self.durable = to
        self._drain_disconnects()

    def _restart(self) -> None:
        self._disconnects.clear()  # a restarted server has no sessions to mark: TTLs take over
        self.upserter.clear()
        for cid in list(self.conns):
            self.conns.pop(cid).closed_reason = "server restart"
        self.db = self.durable_db
        self.committed = self.durable
        self.history = []
        self.ledger = [e for e in self.ledger if e.tx_offset <= self.durable]

    @icontract.snapshot(lambda self: _max_epoch(self.db), name="max_epoch")
    @icontract.ensure(lambda self, OLD: self.db.epoch_floor > OLD.max_epoch
                      and all(s.epoch == self.db.epoch_floor for s in self.db.of_type(SyncStream)),
                      "DUR-2 (recovery moves every stream, and every stream created later, above every epoch of the"
                      " lost committed state, i.e. above every epoch that can have been handed out)")
    @icontract.ensure(lambda self: self.durable == self.committed and self.durable_db is self.db,
                      "the recovery transaction is durable before anyone connects")
    def crash(self) -> None:
        """Lose everything past the durable offset, then recover: without a clean-shutdown marker
        the server cannot know what was lost, so it bumps epochs (ADR-0001) in a recovery
        transaction that is made durable before anyone connects.  Each new epoch continues the
        old one up to the durable head (ADR-0003): the ledger's events of the old epoch are the
        new epoch's too."""
        self._restart()
        bumped = unclean_restart(self.db, self.now, self.max_undurable)
        moved = {(s.stream_id, s.continues_epoch): s.epoch for s in bumped.of_type(SyncStream)}
        self.ledger = [replace(e, epoch=moved.get((e.stream_id, e.epoch), e.epoch)) for e in self.ledger]
        self.committed += 1
        self.db = self.durable_db = bumped
        self.durable = self.committed

    def clean_restart(self) -> None:
        self.advance_durable(self.committed)
        self._restart()
