"""A slow consumer closed in the middle of a fanout (its queue passed ``max_queue`` on the update
being fanned out): its presence marks go ``disconnected`` in their OWN transaction, committed after
that fanout is over -- never inside it (``Engine._drain_disconnects`` waits while
``_fanning_out``; ADR-0003 decision 4, DELIV-1).  Committed inside it, the marks would take the next
offset while the outer update is still being queued, so a subscriber fanned out after the slow one
would receive offset N+1 before N.

The differential machine reached this only by chance (after the ninth session's machine changes
its derandomized draws stopped reaching it: the planted ``disconnect_in_fanout`` survived 200
examples), so this file is that planted bug's killer (``tests/support/engine_mutants.py``).  The
oracle is a hand-written expectation: each watcher's updates in strictly increasing offsets, the
append that closed the slow one, then exactly one more transaction carrying its session's mark."""

from __future__ import annotations

from reference.engine import Engine
from spec.auth import Claims
from spec.messages import SLOW_CONSUMER_REASON, CallReducer, ReducerOk, Subscribe, TransactionUpdate
from spec.schema import SCOPES

EVENTS = "SELECT * FROM sync_event WHERE stream_id = 's.a1'"
PRESENCE = "SELECT * FROM session_presence"


def claims(i: int) -> Claims:
    return Claims(f"{i:064x}", frozenset(SCOPES), ("*",))


def updates(eng: Engine, conn: int) -> list[TransactionUpdate]:
    return [o.message for o in eng.take(conn, 10_000, 1 << 30) if isinstance(o.message, TransactionUpdate)]


def test_a_slow_consumers_marks_commit_after_the_fanout_that_closed_it() -> None:
    eng = Engine(max_queue=4)
    closed: dict[int, str] = {}
    eng.on_close = lambda cid, reason: closed.__setitem__(cid, reason)
    writer = eng.connect(claims(99), confirmed=False)
    before = eng.connect(claims(1), confirmed=False)  # fanned out ahead of the slow one, and after it:
    slow = eng.connect(claims(2), confirmed=False)
    after = eng.connect(claims(3), confirmed=False)  # the order does not matter to the expectation
    eng.handle(slow, CallReducer(1, "upsert_presence", ("sess-slow", "dev", "node", "online", "eu", 60_000)))
    (reply,) = eng.take(slow, 10, 1 << 30)  # the premise: the slow connection now owns the session
    assert isinstance(getattr(reply.message, "outcome", None), ReducerOk), reply
    for conn in (before, slow, after):
        eng.handle(conn, Subscribe(2, 1, (EVENTS,)))
        eng.handle(conn, Subscribe(3, 2, (PRESENCE,)))
    for conn in (before, after, writer):
        eng.take(conn, 10_000, 1 << 30)
    k = 0
    while slow not in closed:
        k += 1
        assert k < 20, "the slow consumer was never closed"
        eng.handle(writer, CallReducer(10 + k, "append_sync_event", ("s.a1", f"k{k}", '{"n":1}', None, None)))
        eng.take(writer, 10_000, 1 << 30)
    assert closed[slow] == SLOW_CONSUMER_REASON
    closing_append = eng.committed - 1  # the marks are the last commit, right after the append
    for conn in (before, after):
        got = updates(eng, conn)
        offsets = [u.tx_offset for u in got]
        assert offsets == sorted(set(offsets)), f"connection {conn}: offsets {offsets} out of order"
        assert offsets[-2:] == [closing_append, closing_append + 1], offsets
        marks = got[-1]
        rows = [r for qs in marks.query_sets for t in qs.tables for r in t.inserts]
        assert [(r.session_id, r.status, r.offline_reason) for r in rows] == [("sess-slow", "offline", "disconnected")]

