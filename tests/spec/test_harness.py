"""The harness (spec/harness.py) schedules the pure transitions of spec/delivery.py: per-connection
queues, a slow consumer closed at once, and the presence marks of a close held back until the fanout
that closed it is queued, so every client still sees transactions in commit order (DELIV-1), and
marked only for sessions the closed connection still owns (PRES-3).  The pure transitions are pinned
directly too: the same rules, values in and values out (ADR-0015)."""

from __future__ import annotations

from spec import delivery as d
from spec.auth import Claims
from spec.harness import Server
from spec.messages import (
    SLOW_CONSUMER_REASON,
    CallReducer,
    Outbound,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    TransactionUpdate,
)
from spec.policy import Policy
from spec.values import SessionPresence

SCOPES = frozenset({"sync.append", "sync.subscribe", "presence.write"})
A = Claims("a" * 64, SCOPES, ("s*",))
B = Claims("b" * 64, SCOPES, ("s*",))


def test_a_close_during_a_fanout_marks_its_sessions_after_the_fanout_DELIV_1() -> None:
    """A is closed as a slow consumer by the fanout of offset 2, which B (later in the fanout) must still
    hear before the transaction that marks A's session disconnected (offset 3)."""
    server = Server(Policy(), max_queue=3)
    a = server.connect(A, confirmed=False)
    b = server.connect(B, confirmed=False)
    server.handle(a, CallReducer(1, "upsert_presence", ("p1", "dev", "node", "online", "eu", 60_000)))
    server.handle(a, Subscribe(2, 1, ("SELECT * FROM sync_event",)))
    server.handle(a, Subscribe(3, 2, ("SELECT * FROM sync_stream",)))  # A's queue is at the bound (3)
    server.handle(b, Subscribe(1, 1, ("SELECT * FROM sync_event", "SELECT * FROM session_presence")))
    server.handle(b, CallReducer(2, "append_sync_event", ("s", "k", "{}", None, None)))

    assert a not in server.conns and server.conns.get(b) is not None
    heard = [(o.offset, type(o.message).__name__) for o in server.conns[b].outbound]
    assert heard == [(1, "SubscribeApplied"), (2, "ReducerResult"), (3, "TransactionUpdate")], heard
    row = server.db.find(SessionPresence, lambda r: r.session_id == "p1")
    assert row is not None and (row.status, row.offline_reason) == ("offline", "disconnected")
    assert server.committed == 3


def test_marks_wait_for_the_durability_bound_and_a_restart_forgets_them() -> None:
    server = Server(Policy(), max_undurable=2)
    a = server.connect(A, confirmed=False)
    server.handle(a, CallReducer(1, "upsert_presence", ("p1", "dev", "node", "online", "eu", 60_000)))
    server.handle(a, CallReducer(2, "append_sync_event", ("s", "k", "{}", None, None)))
    assert not server.can_commit()
    server.close(a)
    assert server.committed == 2  # the mark waits: the server is max_undurable ahead of its durable offset
    server.advance_durable(1)
    assert server.committed == 3  # released by durability
    row = server.db.find(SessionPresence, lambda r: r.session_id == "p1")
    assert row is not None and row.offline_reason == "disconnected"

    server.advance_durable(3)
    c = server.connect(A, confirmed=False)
    server.handle(c, CallReducer(3, "upsert_presence", ("p2", "dev", "node", "online", "eu", 60_000)))
    server.advance_durable(4)  # the session is durable
    server.handle(c, CallReducer(4, "append_sync_event", ("s", "k2", "{}", None, None)))
    server.handle(c, CallReducer(5, "append_sync_event", ("s", "k3", "{}", None, None)))
    assert server.committed == 6 and not server.can_commit()
    server.close(c)  # waits again
    assert server.committed == 6
    server.crash()  # and is forgotten: a restarted server has no sessions to mark (TTLs take over)
    server.advance_durable(server.committed)
    row = server.db.find(SessionPresence, lambda r: r.session_id == "p2")
    assert row is not None and row.status == "online"


def test_a_session_re_upserted_on_a_newer_connection_is_not_marked_by_the_older_close_PRES_3() -> None:
    server = Server(Policy())
    old = server.connect(A, confirmed=False)
    new = server.connect(A, confirmed=False)
    server.handle(old, CallReducer(1, "upsert_presence", ("p1", "dev", "node", "online", "eu", 60_000)))
    server.handle(new, CallReducer(1, "upsert_presence", ("p1", "dev", "node", "online", "eu", 60_000)))
    committed = server.committed
    server.close(old)
    assert server.committed == committed
    server.close(new)
    row = server.db.find(SessionPresence, lambda r: r.session_id == "p1")
    assert row is not None and row.offline_reason == "disconnected"


# --- the pure transitions, directly --------------------------------------------------------------------

def test_subscribe_registers_exactly_what_it_snapshots_and_leaves_its_inputs_alone() -> None:
    log = d.start()
    sub = d.Subscriber(A, confirmed=False)
    after, out = d.subscribe(log, Policy(), sub, Subscribe(7, 1, ("SELECT * FROM sync_stream",)))
    assert sub.query_sets == {} and set(after.query_sets) == {1}
    assert isinstance(out, Outbound) and out.offset == 0 and isinstance(out.message, SubscribeApplied)
    again, closed = d.subscribe(log, Policy(), after, Subscribe(8, 1, ("SELECT * FROM sync_stream",)))
    assert again is after and isinstance(closed, d.Close) and closed.reason.startswith("1011: ")


def test_answer_commits_a_write_and_replies_to_a_failure_alone() -> None:
    from spec.reducers import CallContext, call
    log = d.start()
    subs = {1: d.Subscriber(A, False), 2: d.subscribe(log, Policy(), d.Subscriber(B, False),
                                                       Subscribe(1, 1, ("SELECT * FROM sync_event",)))[0]}
    ok = call(log.db, CallContext(A, 0, 1, Policy()), "append_sync_event", ("s", "k", "{}", None, None))
    after, sends = d.answer(log, subs, 1, 9, ok)
    assert (after.committed, log.committed) == (1, 0) and len(after.history) == 1 and len(after.ledger) == 1
    assert [(cid, type(o.message)) for cid, o in sends] == [(1, ReducerResult), (2, TransactionUpdate)]
    first = sends[0][1].message
    assert isinstance(first, ReducerResult) and isinstance(first.outcome, ReducerOk) and first.outcome.ret == 1
    bad = call(after.db, CallContext(A, 0, 2, Policy()), "append_sync_event", ("s", "k2", "{bad", None, None))
    same, reply = d.answer(after, subs, 1, 10, bad)
    assert same is after and [(cid, o.offset) for cid, o in reply] == [(1, 1)]


def test_the_gate_the_bound_and_durability() -> None:
    assert d.released(False, 5, 0) and d.released(True, 3, 3) and not d.released(True, 4, 3)
    assert not d.over_bound(8, 8) and d.over_bound(9, 8)
    assert SLOW_CONSUMER_REASON == "slow_consumer"
    log = d.start()
    assert d.can_commit(log, 1) and not d.can_commit(d.Log(log.db, log.db, committed=1), 1)
    assert d.advance_durable(log, 5) == log  # never past the committed offset
