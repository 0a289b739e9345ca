"""The system machine: one server, N clients and the network between them.

Composes :class:`spec.harness.Server` and :class:`spec.client.Client` under faults.  The
network is two FIFO channels per connection (it is TCP): client -> server (``inbox``) and
server -> client (the server's outbound queue, drained by :meth:`System.deliver` subject to
confirmed-read gating).  Across connections nothing is ordered.  Faults:

* a connection drops (both channels lose their contents; the client reconnects later and
  resumes from its persisted watermarks);
* a reconnecting client resends a call it has no answer for (a duplicate frame);
* the durable offset lags behind the committed one, then advances;
* the server crashes (losing the non-durable suffix) or restarts cleanly;
* compaction, presence sweeps on a logical clock, and admin epoch resets happen;
* a client's process crashes and restarts from its checkpoint store (:meth:`System.crash_client`).

Every observation a client makes is recorded (:attr:`System.trace`) so that the invariants of
:mod:`spec.invariants` can be checked after every step; :meth:`System.quiesce` heals all faults
and drains the network, after which the convergence invariants must hold.  The clients are given
nothing but their claims and the messages they receive: a rebootstrap reads the retained window
over the wire, and healing uses only what a client observes (ADR-0013).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from spec.auth import Claims
from spec.client import Client
from spec.harness import Conn, Server
from spec.messages import (
    CLOSE_PROTOCOL,
    SLOW_CONSUMER_REASON,
    CallReducer,
    ClientMessage,
    Outbound,
    ReducerErr,
    ReducerResult,
    Subscribe,
    TransactionUpdate,
    Unsubscribe,
)
from spec.policy import Policy
from spec.reducers import CallContext, Ok, call, compact, presence_sweep
from spec.state import DbState
from spec.trace import Mirror, Trace
from spec.values import SessionPresence, SyncEvent

ADMIN = Claims("f" * 64, frozenset({"sync.admin"}), ("*",))


@dataclass
class Link:
    conn_id: int
    inbox: list[ClientMessage] = field(default_factory=list)
    subscribed: dict[int, tuple[str, ...]] = field(default_factory=dict)  # live qs -> queries sent
    asked: dict[int, tuple[str, ...]] = field(default_factory=dict)  # qs -> queries of its last Subscribe
    mirrors: dict[int, Mirror] = field(default_factory=dict)  # qs -> rows received
    lost_qs: set[int] = field(default_factory=set)  # query sets an update of which was lost (DELIV-2 skips them)


def _presence_marks(before: DbState, after: DbState, closed: Mapping[int, str], owner: Mapping[str, int],
                    now: int) -> int | None:
    """Is ``before`` -> ``after`` the presence marks of one of the connections ``closed`` (id -> identity), read
    off the rows -- and of which?  Nothing but session rows changes, no row comes or goes, every changed row
    is a live session taken offline -- ``disconnected`` with ``last_seen = now``, or ``ttl_expired`` (its TTL
    ran out first) with ``last_seen`` kept -- and nothing else about it moves; and all of them are sessions
    of one closed connection: its identity's, last upserted by it (``owner``: session -> the connection of
    its last upsert, the harness's own record).  None when it is not."""
    if any(before.rows(t) != after.rows(t) for t in {*before.tables, *after.tables} if t != "session_presence") or (
            before.epoch_floor, before.version_floor) != (after.epoch_floor, after.version_floor):
        return None
    old = {r.session_id: r for r in before.of_type(SessionPresence)}
    new = {r.session_id: r for r in after.of_type(SessionPresence)}
    if old.keys() != new.keys():
        return None
    changed = [(old[k], new[k]) for k in old if old[k] != new[k]]
    conns = {owner.get(o.session_id) for o, _n in changed}
    conn = conns.pop() if len(conns) == 1 else None
    if conn is None or conn not in closed:
        return None
    return conn if all(
        o.identity == closed[conn] and o.status != "offline" and n == (
            SessionPresence(o.session_id, o.identity, o.device_id, o.node_id, "offline", o.region, o.last_seen,
                            o.expires_at, "ttl_expired") if o.expires_at <= now else
            SessionPresence(o.session_id, o.identity, o.device_id, o.node_id, "offline", o.region, now,
                            o.expires_at, "disconnected")) for o, n in changed) else None


class System:
    def __init__(self, policy: Policy, clients: list[tuple[str, Claims, bool]], max_queue: int = 64,
                 max_undurable: int = 8) -> None:
        self.server = Server(policy, max_queue=max_queue, max_undurable=max_undurable)
        self.clients: list[Client] = [Client(cid, claims, confirmed) for cid, claims, confirmed in clients]
        self.links: dict[int, Link] = {}  # client index -> live link
        self.zombies: list[int] = []  # connections their clients left, still open on the server
        self.trace = Trace(policy=policy)
        self.states: dict[int, DbState] = {0: self.server.db}
        self.trace.record_state(0, self.server.db)
        self.last_upsert: dict[str, int] = {}  # session -> connection of its last successful upsert (PRES-3)
        self.conn_objs: dict[int, Conn] = {}  # the server's connection objects, read after a server-side close

    # --- bookkeeping ---------------------------------------------------------------------------

    def _sync_states(self) -> None:
        s = self.server
        for c in s.history:
            if c.offset not in self.states or self.states[c.offset] is not c.state:
                self.states[c.offset] = c.state
                self.trace.record_state(c.offset, c.state)
                if c.offset - 1 in self.states:
                    self._check_marks(self.states[c.offset - 1], c.state)
        self.states[s.committed] = s.db
        self.trace.record_state(s.committed, s.db)

    def _send(self, i: int, msgs: list[ClientMessage]) -> None:
        link = self.links.get(i)
        if link is None:
            return
        for m in msgs:
            if isinstance(m, Subscribe):
                link.asked[m.query_set_id] = m.queries
            if isinstance(m, Subscribe):
                link.subscribed[m.query_set_id] = m.queries
            elif isinstance(m, Unsubscribe):
                link.subscribed.pop(m.query_set_id, None)
                link.mirrors.pop(m.query_set_id, None)
            link.inbox.append(m)

    def _drop_dead_links(self) -> None:
        for i, link in list(self.links.items()):
            if link.conn_id not in self.server.conns:
                del self.links[i]
                self._check_slow_close(i, link.conn_id)
                views = {s: (v.epoch, v.last, tuple(v.applied)) for s, v in self.clients[i].streams.items()}
                self.clients[i].on_disconnect()
                kept = {s: (v.epoch, v.last, tuple(v.applied)) for s, v in self.clients[i].streams.items()}
                if kept != views:
                    self.trace.violations.append(("SLOW-1", f"client {i} lost its watermarks on a disconnect"))

    def _check_slow_close(self, i: int, conn_id: int) -> None:
        """SLOW-1: the server drops a connection on its own as a slow consumer only past the bound (or in a
        restart, or for a protocol violation)."""
        conn = self.conn_objs.pop(conn_id, None)
        reason = conn.closed_reason if conn is not None else None
        if conn is None or reason == "server restart" or (reason or "").startswith(f"{CLOSE_PROTOCOL}:"):
            return
        if reason != SLOW_CONSUMER_REASON or len(conn.outbound) <= self.server.max_queue:
            self.trace.violations.append(("SLOW-1", f"client {i}'s connection {conn_id} closed by the server "
                                          f"({conn.closed_reason}) with {len(conn.outbound)} queued, bound "
                                          f"{self.server.max_queue}"))

    # --- actions ---------------------------------------------------------------------------------

    def connect(self, i: int) -> None:
        if i in self.links:
            return
        c = self.clients[i]
        conn_id = self.server.connect(c.claims, c.confirmed)
        self.conn_objs[conn_id] = self.server.conns[conn_id]
        self.links[i] = Link(conn_id)
        self._send(i, c.on_connect())

    def disconnect(self, i: int) -> None:
        link = self.links.pop(i, None)
        if link is None:
            return
        self.server.close(link.conn_id)
        self.clients[i].on_disconnect()
        self._after_server_step()

    def reconnect_leaving_old_open(self, i: int) -> bool:
        """The client's connection is dead to it but not yet to the server (a half-open TCP
        connection): the client reconnects while the old connection stays open on the server, which
        closes it only later (:meth:`reap`, or as a slow consumer).  The common reconnect path."""
        link = self.links.pop(i, None)
        if link is None:
            return False
        self.zombies.append(link.conn_id)
        self.clients[i].on_disconnect()
        self.connect(i)
        return True

    def reap(self) -> None:
        """The server notices the half-open connections are gone and closes them."""
        zombies, self.zombies = self.zombies, []
        for conn_id in zombies:
            self.server.close(conn_id)
        self._after_server_step()

    def follow(self, i: int, stream_id: str) -> None:
        self._send(i, self.clients[i].follow(stream_id))

    def call(self, i: int, reducer: str, args: tuple[object, ...]) -> None:
        msg = self.clients[i].call(reducer, args)
        self._send(i, [msg])

    def resend(self, i: int) -> bool:
        """A reconnecting client resends its oldest unanswered call (possibly a duplicate)."""
        c = self.clients[i]
        if i not in self.links or not c.pending:
            return False
        self._send(i, [c.pending[min(c.pending)]])
        return True

    def server_step(self, i: int) -> bool:
        link = self.links.get(i)
        if link is None or not link.inbox:
            return False
        if not self.server.can_commit():
            return False  # back-pressure: the server waits for durability
        msg = link.inbox.pop(0)
        seen = self._queues() if isinstance(msg, CallReducer) else None
        self.server.handle(link.conn_id, msg)
        if isinstance(msg, CallReducer) and seen is not None:
            self._check_call_delivery(link.conn_id, msg, *seen)
        if isinstance(msg, CallReducer) and msg.reducer == "upsert_presence" and self._upsert_took(i, msg):
            self.last_upsert[str(msg.args[0])] = link.conn_id
        self._after_server_step()
        return True

    # --- DELIV-3, DELIV-4: who hears of a call, read off the server's queues --------------------------

    def _queues(self) -> tuple[DbState, int, dict[int, tuple[Conn, int]]]:
        return self.server.db, self.server.committed, {
            cid: (conn, len(conn.outbound)) for cid, conn in self.server.conns.items()}

    def _check_call_delivery(self, caller: int, msg: CallReducer, db: DbState, committed: int,
                             queues: dict[int, tuple[Conn, int]]) -> None:
        """What one handled call put in every queue: the caller exactly one ``ReducerResult`` for its
        request; a failed call changes no state, takes no offset and nobody else hears of it (DELIV-4);
        a committed call's caller gets no ``TransactionUpdate`` for its transaction and every other
        client at most one (DELIV-3).

        A connection the step closed (a slow consumer: its queue passed the bound) is judged too, by the
        queue it held when it closed: what it got before the close obeys the same rules, and it got
        nothing after (SLOW-1: it holds exactly one message past the bound).  What a close may add to the
        step is modelled, not skipped: each close's presence marks commit after the call as one transaction
        of their own, which (read off the rows) only takes live sessions that connection upserted last
        offline, ``disconnected`` at the server's clock or ``ttl_expired`` with ``last_seen`` kept; every
        connection still open may hear of each such transaction by one ``TransactionUpdate``."""
        if caller not in queues:
            return
        new = {cid: [o for o in conn.outbound[n:]] for cid, (conn, n) in queues.items()}
        closed = {cid: conn for cid, (conn, _n) in queues.items() if cid not in self.server.conns}
        for cid, conn in closed.items():
            if conn.closed_reason == SLOW_CONSUMER_REASON and len(conn.outbound) != self.server.max_queue + 1:
                self.trace.violations.append(("SLOW-1", f"connection {cid} closed as a slow consumer holding "
                                              f"{len(conn.outbound)} messages, bound {self.server.max_queue}"))
        mine = [o for o in new[caller] if isinstance(o.message, ReducerResult)
                and o.message.request_id == msg.request_id]
        if len(mine) != 1:
            self.trace.violations.append(("DELIV-3", f"{msg.reducer} call {msg.request_id}: {len(mine)} results"))
            return
        result = mine[0].message
        assert isinstance(result, ReducerResult)
        # the step's transactions, read off the server's history: the call's (if it wrote) and the closes' marks
        commits = {c.offset: c.state for c in self.server.history if c.offset > committed}
        owner = dict(self.last_upsert)  # session -> its last upsert's connection, this call's own included
        if msg.reducer == "upsert_presence" and not isinstance(result.outcome, ReducerErr):
            owner[str(msg.args[0])] = caller
        unmarked = {cid: conn.claims.identity for cid, conn in closed.items()}  # each close marks once
        failed = isinstance(result.outcome, ReducerErr)
        marks: set[int] = set()
        call_offset, strays, prev = None, [], db
        for offset in range(committed + 1, self.server.committed + 1):
            state = commits.get(offset)
            whose = None if state is None else _presence_marks(prev, state, unmarked, owner, self.server.now)
            if whose is None and state is not None and (offset != committed + 1 or failed):
                whose = self._usurped_marks(prev, state, unmarked, owner, msg.reducer)
            if whose is not None:
                marks.add(offset)
                del unmarked[whose]
            elif state is not None and offset == committed + 1:
                call_offset = offset
            else:
                strays.append(offset)  # an offset taken by no commit, or a transaction the step had no cause for
            prev = state if state is not None else prev
        for cid, outs in new.items():
            for at in sorted(marks):
                heard = [o for o in outs if o.offset == at]
                if len(heard) > 1 or any(
                        not isinstance(o.message, TransactionUpdate) for o in heard):
                    self.trace.violations.append(("DELIV-3", f"connection {cid} heard of the presence marks at {at} "
                                                  f"as {[type(o.message).__name__ for o in heard]}"))
        call = {cid: [o for o in outs if o.offset not in marks] for cid, outs in new.items()}
        others = [o for cid, outs in call.items() if cid != caller for o in outs]
        written = self.server.db != prev or bool(strays)
        if isinstance(result.outcome, ReducerErr):
            if written or call_offset is not None or len(call[caller]) != 1 or others:
                self.trace.violations.append(("DELIV-4", f"failed {msg.reducer}: state changed "
                                              f"{self.server.db != prev or call_offset is not None}, offset "
                                              f"{committed} -> {self.server.committed}, "
                                              f"{len(call[caller]) - 1 + len(others)} other messages"))
            return
        if call_offset is None:
            if others or written:
                self.trace.violations.append(("DELIV-4", f"no-op {msg.reducer} was heard by others or wrote"))
            return
        if written:
            self.trace.violations.append(("DELIV-3", f"{msg.reducer} committed at {call_offset}: offset "
                                          f"{committed} -> {self.server.committed} with {len(marks)} presence marks "
                                          f"and transactions {strays} no close explains"))
        offset = call_offset
        if result.tx_offset != offset or any(isinstance(o.message, TransactionUpdate) and o.offset == offset
                                          for o in new[caller]):
            self.trace.violations.append(("DELIV-3", f"{msg.reducer} committed at {offset}: the caller's result "
                                          f"has offset {result.tx_offset} or it also got the TransactionUpdate"))
        for cid, outs in call.items():
            heard = [o for o in outs if o.offset == offset]
            if cid != caller and (len(heard) > 1 or any(not isinstance(o.message, TransactionUpdate) for o in heard)):
                self.trace.violations.append(("DELIV-3", f"connection {cid} heard of offset {offset} as "
                                              f"{[type(o.message).__name__ for o in heard]}"))

    # --- PRES-3: who marks a session disconnected ----------------------------------------------------

    def _usurped_marks(self, before: DbState, after: DbState, closed: Mapping[int, str], owner: Mapping[str, int],
                       reducer: str) -> int | None:
        """A transaction of a call step that no close explains, but would if ownership did not count: the
        marks of a connection closed in the step, taking offline sessions another connection upserted last
        (the reconnect flap).  That breaks PRES-3's first clause, not delivery: flagged as PRES-3, and the
        transaction is that close's marks (which connection, or None when it is not such marks)."""
        every = {r.session_id for r in before.of_type(SessionPresence)}
        for cid in closed:
            if _presence_marks(before, after, closed, dict.fromkeys(every, cid), self.server.now) == cid:
                old = {r.session_id: r for r in before.of_type(SessionPresence)}
                taken = sorted(r.session_id for r in after.of_type(SessionPresence) if old[r.session_id] != r
                               and owner.get(r.session_id) != cid)
                self.trace.violations.append(("PRES-3", f"connection {cid}, closed in a {reducer} step, marked "
                                              f"{taken} offline, whose last upsert was made by connection(s) "
                                              f"{sorted({owner.get(t) for t in taken}, key=str)}"))
                return cid
        return None

    def _upsert_took(self, i: int, msg: CallReducer) -> bool:
        """Did the upsert just handled write the session as asked (the harness's own reading)?"""
        session, device, node, status, region, ttl = msg.args
        row = self.server.db.find(SessionPresence, lambda r: r.session_id == session)
        now = self.server.now
        return row is not None and (row.identity, row.device_id, row.node_id, row.status, row.region, row.last_seen,
                                    row.expires_at) == (self.clients[i].claims.identity, device, node, status, region,
                                                        now, now + int(str(ttl)) * 1000)

    def _check_marks(self, before: DbState, after: DbState) -> None:
        """PRES-3: a session goes offline as ``disconnected`` only once the connection that made its
        last upsert is closed."""
        old = {r.session_id: r for r in before.of_type(SessionPresence)}
        for r in after.of_type(SessionPresence):
            o = old.get(r.session_id)
            if r.offline_reason == "disconnected" and o is not None and o.status != "offline":
                owner = self.last_upsert.get(r.session_id)
                if owner is not None and owner in self.server.conns:
                    self.trace.violations.append(("PRES-3", f"{r.session_id} marked disconnected while connection "
                                                            f"{owner}, which upserted it last, is open"))

    def check_marks_after_heal(self) -> None:
        """PRES-3, the other half: once healed, a session whose last upsert came from a connection that
        has closed (not in a crash: then TTLs take over) is offline."""
        rows = {r.session_id: r for r in self.server.db.of_type(SessionPresence)}
        for session, conn_id in self.last_upsert.items():
            row = rows.get(session)
            if conn_id not in self.server.conns and row is not None and row.status != "offline":
                self.trace.violations.append(("PRES-3", f"{session}: its connection {conn_id} closed, the session "
                                                        f"is still {row.status}"))

    def _check_marks_due(self) -> None:
        """PRES-3, the after-heal half (:meth:`check_marks_after_heal`) at every step the marks cannot be
        waiting: a close's marks wait only for a running fanout or the durability bound, and commit as soon as
        the server can commit again (``spec.harness.Server._drain_disconnects``), so when it can, every session
        whose last upserting connection has closed is offline already.  This is what sees a close that took
        no mark of a session it upserted last when a later close -- of a connection that did not make that
        upsert -- takes the session offline before any heal: PRES-3's first clause broken in two close steps
        (the reconnect flap: ``first_upserter_marks``), which the open-owner check (:meth:`_check_marks`: the
        last upserter is closed by then) and the after-heal check (the session is offline by then) both miss."""
        if not self.server.can_commit():
            return
        rows = {r.session_id: r for r in self.server.db.of_type(SessionPresence)}
        for session, conn_id in self.last_upsert.items():
            row = rows.get(session)
            if conn_id not in self.server.conns and row is not None and row.status != "offline":
                self.trace.violations.append(("PRES-3", f"{session}: its connection {conn_id} closed and no marks "
                                                        f"wait (the server can commit), the session is still "
                                                        f"{row.status}"))

    def _after_server_step(self) -> None:
        self._sync_states()
        self._drop_dead_links()
        self._check_marks_due()
        self.trace.check_queues(self.server)

    def deliver(self, i: int) -> bool:
        link = self.links.get(i)
        if link is None or not self.server.releasable(link.conn_id):
            return False
        out: Outbound = self.server.pop(link.conn_id)
        c = self.clients[i]
        self.trace.observe(i, c, link, out, self.server.durable, self.states)
        sent = c.on_message(out.message)
        self.trace.after_message(i, c, sent)
        self._send(i, sent)
        self.trace.observe_client(i, c)
        return True

    def lose_frame(self, i: int) -> bool:
        """A faulty middlebox silently drops the next TransactionUpdate queued for client i (the
        client must never apply across the resulting gap)."""
        link = self.links.get(i)
        if link is None:
            return False
        queue = self.server.conns[link.conn_id].outbound
        for k, out in enumerate(queue):
            if isinstance(out.message, TransactionUpdate):
                del queue[k]
                for u in out.message.query_sets:  # the oracle's bookkeeping; the client is told nothing
                    link.lost_qs.add(u.query_set_id)
                    link.mirrors.pop(u.query_set_id, None)
                return True
        return False

    def duplicate_frame(self, i: int) -> bool:
        """The next message arrives twice (a replaying proxy): duplicates must be dropped."""
        link = self.links.get(i)
        if link is None or not self.server.releasable(link.conn_id):
            return False
        msg = self.server.conns[link.conn_id].outbound[0].message
        if not isinstance(msg, TransactionUpdate):
            return False
        c = self.clients[i]
        self.trace.before_message(i, c, msg)
        sent = c.on_message(msg)
        self.trace.after_message(i, c, sent)
        self._send(i, sent)
        self.trace.observe_client(i, c)
        return True

    def crash_client(self, i: int) -> None:
        """Client i's process dies (its socket with it: the server sees a close) and restarts from its
        checkpoint store; it reconnects later, like after any drop."""
        link = self.links.pop(i, None)
        if link is not None:
            self.server.close(link.conn_id)
        self.clients[i].crash()
        self._after_server_step()

    def advance_durable(self, k: int) -> None:
        self.server.advance_durable(self.server.durable + k)
        self._after_server_step()  # durability may release waiting disconnect transactions

    def crash(self) -> None:
        self.last_upsert.clear()  # a restart marks nothing: TTLs take over
        self.zombies.clear()
        self.server.crash()
        self.states = {o: st for o, st in self.states.items() if o < self.server.committed}
        self.trace.on_crash(self.server.durable - 1, self.server.db, self.server.ledger)
        self.states[self.server.committed] = self.server.db
        self.trace.record_state(self.server.committed, self.server.db, recovery=self.server.max_undurable)
        self._sync_states()
        self._drop_dead_links()

    def clean_restart(self) -> None:
        self.last_upsert.clear()
        self.zombies.clear()
        self.server.clean_restart()
        self._drop_dead_links()

    def advance_clock(self, to_us: int) -> None:
        """The clock moves on and no sweep has run yet (sweeps are periodic): a close may meet a session
        whose TTL ran out, up to the very microsecond (its marks say ``ttl_expired``)."""
        self.server.now = max(self.server.now, to_us)

    def tick(self, dt_us: int) -> None:
        self.server.now += dt_us
        if self.server.system_tx(presence_sweep(self.server.db, self.server.now)):
            self.trace.record_state(self.server.committed, self.server.db, sweep_now=self.server.now)
        self._after_server_step()

    def compact(self) -> None:
        if self.server.system_tx(compact(self.server.db, self.server.now, self.server.policy)):
            self.trace.record_state(self.server.committed, self.server.db, compact_now=self.server.now)
        self._after_server_step()

    def reset_epoch(self, stream_id: str) -> None:
        if not self.server.can_commit():
            return
        ctx = CallContext(ADMIN, self.server.now, self.server.committed + 1, self.server.policy)
        outcome = call(self.server.db, ctx, "reset_stream_epoch", (stream_id,))
        if isinstance(outcome, Ok):
            self.server.system_tx(outcome)
        self._after_server_step()

    # --- healing ---------------------------------------------------------------------------------

    def quiesce(self, max_steps: int = 20000) -> None:
        """Heal every fault and drain the network until nothing moves, then let every client run its idle
        check (:meth:`Client.resync`) and drain again.  Nothing here reads what the oracle knows of a fault
        (which frames were lost): clients heal by what they observe -- a gap, a stale_cursor, a close, and
        the idle check's fresh replay from their watermarks."""
        self._drain(max_steps)
        for i in range(len(self.clients)):
            self._send(i, self.clients[i].resync())
        self._drain(max_steps)

    def _drain(self, max_steps: int) -> None:
        for _ in range(max_steps):
            self.advance_durable(self.server.committed)
            if self.zombies:
                self.reap()
            for i in range(len(self.clients)):
                self.connect(i)
            moved = False
            for i in range(len(self.clients)):
                while self.deliver(i):
                    moved = True
                while self.server_step(i):
                    moved = True
            if not moved:
                return
        raise AssertionError("the system did not quiesce")

    def ledger_events(self) -> list[SyncEvent]:
        return list(self.server.ledger)
