"""The model server as a machine: the transitions of :mod:`spec.delivery` composed, with the engine
mechanics they leave out.

:class:`Server` is what the Hypothesis machines, the scenario tables, the conformance kit's model
target and the differential tests drive.  It holds the :class:`~spec.delivery.Log`, one
:class:`Conn` per open connection (a :class:`~spec.delivery.Subscriber` and its outbound queue),
the session owners and the clock, and routes each event to its transition:

``connect`` / ``close``
    open or drop a connection; a close queues the sessions it owns to be marked ``disconnected``;
``handle(conn, msg)``
    one client message, in per-connection order: ``Subscribe`` / ``Unsubscribe`` (:func:`~spec.
    delivery.subscribe`, :func:`~spec.delivery.unsubscribe`), ``CallReducer`` (the reducer, then
    :func:`~spec.delivery.answer`);
``call_detached`` / ``system_tx`` / ``compact``
    a transaction with no calling connection (the HTTP call route, sweeps, compaction);
``releasable`` / ``pop``
    the client takes the front of its queue, gated by :func:`~spec.delivery.released`;
``advance_durable`` / ``crash`` / ``clean_restart``
    durability (:func:`~spec.delivery.advance_durable`, :func:`~spec.delivery.recover`).

What lives here and not in :mod:`spec.delivery` is how the transitions are *scheduled*
(ADR-0015): messages are appended to per-connection queues, and a queue past the bound closes its
connection at once -- possibly in the middle of a commit's fanout.  A close's presence marks are a
transaction of their own, so they wait in a queue (``_disconnects``) until no fanout is running
(``_fanning_out``, the re-entrancy flag) and the durability bound allows a commit; waiting marks
commit in (identity, sessions) order, so the order is the same however the closes interleaved.
A restart forgets the queue (TTLs take over).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import icontract

from spec import delivery as d
from spec import query as q
from spec.auth import Claims
from spec.messages import (
    SLOW_CONSUMER_REASON,
    CallReducer,
    ClientMessage,
    Outbound,
    Subscribe,
    Unsubscribe,
)
from spec.policy import DEFAULT_POLICY, Policy
from spec.reducers import CallContext, Ok, Outcome, call, compact
from spec.state import DbState
from spec.values import Identity, SyncEvent


@dataclass
class Conn:
    """One open connection: what delivery knows of it, and its outbound queue."""

    conn_id: int
    sub: d.Subscriber
    outbound: list[Outbound] = field(default_factory=list)
    closed_reason: str | None = None

    @property
    def claims(self) -> Claims:
        return self.sub.claims

    @property
    def confirmed(self) -> bool:
        return self.sub.confirmed

    @property
    def query_sets(self) -> dict[int, tuple[q.Query, ...]]:
        return dict(self.sub.query_sets)


class Server:
    def __init__(self, policy: Policy = DEFAULT_POLICY, max_queue: int = 64, max_undurable: int = 8) -> None:
        self.policy = policy
        self.max_queue = max_queue
        self.max_undurable = max_undurable
        self.log = d.start()
        self.conns: dict[int, Conn] = {}
        self.owners: dict[str, int] = {}  # session -> the connection that last upserted it (memory only)
        self._disconnects: list[tuple[Identity, int, frozenset[str]]] = []  # closed, sessions not yet marked
        self._fanning_out = False
        self.now = 0
        self._next_conn = 1

    # --- the log, read through ----------------------------------------------------------------------

    @property
    def db(self) -> DbState:
        return self.log.db

    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def durable(self) -> int:
        return self.log.durable

    @property
    def durable_db(self) -> DbState:
        return self.log.durable_db

    @property
    def history(self) -> tuple[d.Commit, ...]:
        return self.log.history

    @property
    def ledger(self) -> tuple[SyncEvent, ...]:
        return self.log.ledger

    def can_commit(self) -> bool:
        return d.can_commit(self.log, self.max_undurable)

    def _subscribers(self) -> dict[int, d.Subscriber]:
        return {cid: conn.sub for cid, conn in self.conns.items()}

    # --- connections -------------------------------------------------------------------------------

    def connect(self, claims: Claims, confirmed: bool) -> int:
        cid = self._next_conn
        self._next_conn += 1
        self.conns[cid] = Conn(cid, d.Subscriber(claims, confirmed))
        return cid

    def close(self, conn_id: int, reason: str = "closed") -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        conn.closed_reason = reason
        mine = d.owned_by(self.owners, conn_id)
        if mine:
            self._disconnects.append((conn.claims.identity, conn_id, mine))
        self._drain_disconnects()

    def _drain_disconnects(self) -> None:
        """Commit the waiting presence marks, one transaction per closed connection, never in the middle
        of another transaction's fanout and never past the durability bound (they wait)."""
        self._disconnects.sort(key=lambda w: (w[0], sorted(w[2])))
        while self._disconnects and not self._fanning_out and self.can_commit():
            identity, conn_id, queued = self._disconnects.pop(0)
            self.owners, ok = d.mark_disconnected(self.db, self.now, self.owners, identity, conn_id, queued)
            if not ok.noop:
                self._commit(ok)

    # --- client messages ---------------------------------------------------------------------------

    @icontract.require(lambda self, msg: not isinstance(msg, CallReducer) or self.can_commit(),
                       "a call is taken only within the durability bound (the caller waits otherwise)")
    def handle(self, conn_id: int, msg: ClientMessage) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if isinstance(msg, Subscribe):
            conn.sub, reply = d.subscribe(self.log, self.policy, conn.sub, msg)
            if isinstance(reply, d.Close):
                self.close(conn_id, reply.reason)
            else:
                self._queue(((conn_id, reply),))
        elif isinstance(msg, Unsubscribe):
            conn.sub, out = d.unsubscribe(self.log, conn.sub, msg)
            self._queue(((conn_id, out),))
        else:
            outcome = call(self.db, CallContext(conn.claims, self.now, self.committed + 1, self.policy),
                           msg.reducer, msg.args)
            if isinstance(outcome, Ok) and msg.reducer == "upsert_presence":
                self.owners = d.upserted(self.owners, str(msg.args[0]), conn_id)
            self.log, sends = d.answer(self.log, self._subscribers(), conn_id, msg.request_id, outcome)
            self._queue(sends)

    @icontract.require(lambda self: self.can_commit(), "a call is taken only within the durability bound")
    def call_detached(self, claims: Claims, reducer: str, args: tuple[object, ...]) -> Outcome:
        """A reducer call with no connection (the HTTP ``call`` route): every subscriber hears of it by
        ``TransactionUpdate``.  A session upserted this way belongs to no connection: no close marks it."""
        outcome = call(self.db, CallContext(claims, self.now, self.committed + 1, self.policy), reducer, args)
        if isinstance(outcome, Ok):
            if reducer == "upsert_presence":
                self.owners = d.upserted(self.owners, str(args[0]), None)
            self.system_tx(outcome)
        return outcome

    def system_tx(self, outcome: Ok) -> bool:
        """Commit a server-initiated transaction; False when it wrote nothing or must wait."""
        if outcome.noop or not self.can_commit():
            return False
        self._commit(outcome)
        return True

    def compact(self) -> bool:
        """Retention now (:func:`spec.reducers.compact` at the server's clock), as a system transaction."""
        return self.system_tx(compact(self.db, self.now, self.policy))

    def _commit(self, outcome: Ok) -> None:
        self.log, sends = d.system_tx(self.log, self._subscribers(), outcome)
        self._queue(sends)

    def _queue(self, sends: d.Sends) -> None:
        """Append each message to its connection's queue, closing a connection past the bound at once;
        the presence marks such a close queues wait until the whole batch is queued (the re-entrancy
        flag), then commit."""
        self._fanning_out = True
        for conn_id, out in sends:
            conn = self.conns.get(conn_id)
            if conn is None:
                continue  # closed earlier in this batch
            conn.outbound.append(out)
            if d.over_bound(len(conn.outbound), self.max_queue):
                self.close(conn_id, SLOW_CONSUMER_REASON)
        self._fanning_out = False
        self._drain_disconnects()

    # --- delivery to the client ----------------------------------------------------------------------

    def releasable(self, conn_id: int) -> bool:
        conn = self.conns.get(conn_id)
        if conn is None or not conn.outbound:
            return False
        return d.released(conn.confirmed, conn.outbound[0].offset, self.durable)

    def pop(self, conn_id: int) -> Outbound:
        assert self.releasable(conn_id)
        return self.conns[conn_id].outbound.pop(0)

    # --- durability ----------------------------------------------------------------------------------

    def advance_durable(self, to: int) -> None:
        self.log = d.advance_durable(self.log, to)
        self._drain_disconnects()

    def _restart(self) -> None:
        """The process restarts: its connections, the session owners and the waiting marks are gone
        (a restarted server has no sessions to mark: TTLs take over)."""
        self._disconnects.clear()
        self.owners = {}
        for cid in list(self.conns):
            self.conns.pop(cid).closed_reason = "server restart"

    def crash(self) -> None:
        """Lose everything past the durable offset and recover (:func:`spec.delivery.recover`)."""
        log = self.log
        self._restart()
        self.log = d.recover(log, self.now, self.max_undurable)

    def clean_restart(self) -> None:
        self.advance_durable(self.committed)
        self._restart()
        self.log = d.lose_suffix(self.log)
