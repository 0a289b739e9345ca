"""A big ``Subscribe`` snapshot (or ``Unsubscribe``'s dropped rows) is taken at one state and
stepped in slices, and still answers exactly that state (ADR-0041).

With ``Engine.slice_rows`` set (the server's ``READ_SLICE_ROWS``), a snapshot matching more
candidate rows than that is taken by ``Engine.handle`` -- every check made, the query set
registered, the rows fixed -- and left in ``Engine.snapshot_taken`` for the caller to step
(``Snapshot.step``) and answer (``Engine.answer_snapshot``), the connection's queue held at the
offset it was taken at.  Here it is stepped a few rows at a time with commits between the steps --
appends to every stream, a new stream, a compaction that drops whole chunks of a log, an epoch
reset -- and the connection's queue drained between steps as the server's pump drains it.

The second opinion is a table of plain Python predicates over the db's rows (not the engine's
query matcher), listed after every single commit: the ``SubscribeApplied`` must hold exactly the
rows at registration, and the updates after it must be exactly the row differences of every
later commit that changed the set's rows -- each once, in commit order, after the applied.  The
same for the dropped rows of an ``Unsubscribe`` (the rows when it was handled; nothing of the set
after it).  Refusals are made when the snapshot is taken (``max_scan_rows``: before any row is
matched) or, for the message size, when it is answered -- with the same error as a snapshot
answered at once, and the refused set's part taken out of every update held behind it.

Checks DELIV-1 (the answer and the updates in commit order, each transaction once) and DELIV-2
(the snapshot, then the updates, are the set's rows at every offset received) for snapshots the
server steps in slices, which the differential machines do not reach (they run unsliced).

The planted bugs ``ENGINE_MUTANTS`` ``sliced_snapshot_*`` (tests/support/engine_mutants.py) are
each killed by this file."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from reference.engine import Engine, Snapshot
from spec import query as q
from spec.auth import Claims
from spec.errors import SyncError
from spec.messages import (
    Outbound,
    SubscribeApplied,
    SubscriptionError,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeApplied,
)
from spec.messages import Subscribe as Sub
from spec.policy import Policy, StreamClass
from spec.schema import SCOPES
from spec.values import Row

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
EXACT = Claims("b" * 64, frozenset(SCOPES) - {"sync.admin"}, ("s1", "s3"))
POLICY = Policy(classes=(("s1", StreamClass("short", retain_count=300)),))  # compaction drops s1's oldest
SLICE = 25  # engine.slice_rows here; each test steps by STEP rows with commits between
STEP = 60

Pred = Callable[[str, Row], bool]


def _sid(row: Row) -> str:
    return str(getattr(row, "stream_id", ""))


# (claims, query texts of one set, the rows it holds: a plain predicate over (table, row))
CASES: list[tuple[Claims, tuple[str, ...], Pred]] = [
    (ALL, ("SELECT * FROM sync_event WHERE stream_id = 's1' AND idempotency_key > ''",),
     lambda t, r: t == "sync_event" and _sid(r) == "s1"),
    (ALL, ("SELECT * FROM sync_event", "SELECT * FROM sync_stream"),
     lambda t, r: t in ("sync_event", "sync_stream")),
    (ALL, ("SELECT * FROM sync_event WHERE stream_id = 's3'", "SELECT * FROM sync_event WHERE payload_hash > ''"),
     lambda t, r: t == "sync_event"),  # two queries of one table: each row once
    (EXACT, ("SELECT * FROM sync_event",), lambda t, r: t == "sync_event" and _sid(r) in ("s1", "s3")),
]
TABLES = ("sync_event", "sync_stream")


def _call(eng: Engine, reducer: str, *args: object) -> None:
    eng.call_detached(ALL, reducer, args)
    eng.advance_durable(eng.committed)


def _engine() -> Engine:
    eng = Engine(policy=POLICY)
    for i in range(600):  # s1: 600 events, more than two chunks (CHUNK 256): a compaction drops 300
        _call(eng, "append_sync_event", "s1", f"a{i}", f'{{"i":{i}}}', None, None)
    for s, n in (("s2", 5), ("s3", 40), ("s4", 2)):
        for i in range(n):
            _call(eng, "append_sync_event", s, f"k{i}", f'{{"s":"{s}","i":{i}}}', None, None)
    eng.slice_rows = SLICE
    return eng


def _state(eng: Engine, pred: Pred) -> Counter[tuple[str, Row]]:
    """The set's rows now: the second opinion (the predicate over every row of the db)."""
    return Counter((t, row) for t in TABLES for row in eng.db.rows(t) if pred(t, row))


class World:
    """Commits between steps, the oracle's state after each, and the connection's queue drained."""

    def __init__(self, eng: Engine, conn: int, pred: Pred) -> None:
        self.eng, self.conn, self.pred = eng, conn, pred
        self.states: dict[int, Counter[tuple[str, Row]]] = {eng.committed: _state(eng, pred)}
        self.got: list[Outbound] = []
        self.rounds = 0

    def commit(self, reducer: str, *args: object) -> None:
        _call(self.eng, reducer, *args)
        self.states[self.eng.committed] = _state(self.eng, self.pred)

    def meanwhile(self) -> None:
        n = self.rounds
        self.rounds += 1
        for s in ("s1", "s2", "s3", "s4", f"new{n}"):
            self.commit("append_sync_event", s, f"late{n}", '{"late":true}', None, None)
        if n == 0:
            before = self.eng.committed
            assert self.eng.compact(10**18)  # drops s1's oldest events (whole chunks)
            self.eng.advance_durable(self.eng.committed)
            assert self.eng.committed == before + 1
            self.states[self.eng.committed] = _state(self.eng, self.pred)
        if n == 1:
            self.commit("reset_stream_epoch", "s2")
        self.drain()

    def drain(self) -> None:
        self.got += self.eng.take(self.conn, 10**9, 10**15)

    def expected_updates(self, since: int) -> list[tuple[int, Counter[tuple[str, Row]], Counter[tuple[str, Row]]]]:
        """(offset, inserted, deleted) of every commit after ``since`` that changed the set's rows."""
        out = []
        offsets = sorted(self.states)
        for a, b in itertools.pairwise(offsets):
            if b <= since:
                continue
            ins, dels = self.states[b] - self.states[a], self.states[a] - self.states[b]
            if ins or dels:
                out.append((b, ins, dels))
        return out


def _rows(tables: Any) -> Counter[tuple[str, Row]]:
    return Counter((t.table, row) for t in tables for row in t.inserts)


def _updates_of(outs: list[Outbound], qs: int) -> list[tuple[int, Counter[tuple[str, Row]], Counter[tuple[str, Row]]]]:
    got = []
    for out in outs:
        assert isinstance(out.message, TransactionUpdate), out.message
        parts = [u for u in out.message.query_sets if u.query_set_id == qs]
        assert len(parts) <= 1
        if parts:
            ins = Counter((t.table, r) for t in parts[0].tables for r in t.inserts)
            dels = Counter((t.table, r) for t in parts[0].tables for r in t.deletes)
            got.append((out.message.tx_offset, ins, dels))
    return got


def _step_with_commits(world: World, snap: Snapshot) -> int:
    steps = 0
    while not snap.step(STEP):
        steps += 1
        world.meanwhile()
    return steps


@pytest.mark.parametrize("confirmed", [False, True])
@pytest.mark.parametrize(("claims", "texts", "pred"), CASES)
def test_a_sliced_subscribe_answers_its_registration_state_and_every_later_commit_once(
        claims: Claims, texts: tuple[str, ...], pred: Pred, confirmed: bool) -> None:
    eng = _engine()
    conn = eng.connect(claims, confirmed=confirmed)
    world = World(eng, conn, pred)
    taken_at = eng.committed
    eng.handle(conn, Sub(1, 7, texts))
    snap = eng.snapshot_taken(conn)
    assert snap is not None and snap.offset == taken_at and snap.candidates > SLICE
    steps = _step_with_commits(world, snap)
    assert steps >= 2 and world.rounds >= 2  # the compaction and the epoch reset landed during the slicing
    assert not world.got  # nothing released while the snapshot is stepped: it is held behind it
    eng.answer_snapshot(conn, snap)
    assert eng.snapshot_taken(conn) is None and eng.conns[conn].reading is None
    world.drain()
    world.meanwhile()  # and commits after the answer
    applied, *later = world.got
    assert isinstance(applied.message, SubscribeApplied) and applied.offset == taken_at
    assert _rows(applied.message.rows) == world.states[taken_at]
    assert [o.offset for o in later] == sorted({o.offset for o in later})  # in order, each commit once
    assert _updates_of(later, 7) == world.expected_updates(taken_at)
    assert world.expected_updates(taken_at)  # the later commits did change the set (the check means something)


def test_a_snapshot_at_the_slice_size_is_answered_at_once_and_one_past_it_is_sliced() -> None:
    """The small path (replay gaps, fanout subscribers) is unchanged: one call, answered now."""
    eng = _engine()
    eng.slice_rows = 40  # s3 has exactly 40 events
    conn = eng.connect(ALL, confirmed=False)
    eng.handle(conn, Sub(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 's3' AND idempotency_key > ''",)))
    assert eng.snapshot_taken(conn) is None
    (out,) = eng.take(conn, 10, 10**12)
    assert isinstance(out.message, SubscribeApplied) and len(out.message.rows[0].inserts) == 40
    eng.slice_rows = 39
    eng.handle(conn, Sub(2, 2, ("SELECT * FROM sync_event WHERE stream_id = 's3' AND payload_hash > ''",)))
    snap = eng.snapshot_taken(conn)
    assert snap is not None and snap.candidates == 40
    assert not eng.take(conn, 10, 10**12)


def test_a_resume_snapshot_is_not_matched_and_not_sliced() -> None:
    """A resume query's rows are its stream's frozen view (ADR-0031): nothing to match."""
    eng = _engine()
    eng.slice_rows = 1
    conn = eng.connect(ALL, confirmed=False)
    eng.handle(conn, Sub(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 's1' AND epoch = 1 AND seq > 500",)))
    assert eng.snapshot_taken(conn) is None
    (out,) = eng.take(conn, 10, 10**12)
    assert isinstance(out.message, SubscribeApplied) and len(out.message.rows[0].inserts) == 100


@pytest.mark.parametrize(("claims", "texts", "pred"), CASES)
def test_sliced_dropped_rows_are_the_rows_when_the_unsubscribe_was_handled(
        claims: Claims, texts: tuple[str, ...], pred: Pred) -> None:
    eng = _engine()
    conn = eng.connect(claims, confirmed=False)
    eng.slice_rows = None  # subscribed at once
    eng.handle(conn, Sub(1, 7, texts))
    eng.handle(conn, Sub(2, 8, ("SELECT * FROM sync_event WHERE stream_id = 's3'",)))  # another set, kept
    eng.take(conn, 10, 10**12)
    eng.slice_rows = SLICE
    world = World(eng, conn, pred)
    taken_at = eng.committed
    eng.handle(conn, Unsubscribe(3, 7, send_dropped=True))
    snap = eng.snapshot_taken(conn)
    assert snap is not None and snap.offset == taken_at
    assert _step_with_commits(world, snap) >= 2
    assert not world.got
    eng.answer_snapshot(conn, snap)
    world.drain()
    applied, *later = world.got
    assert isinstance(applied.message, UnsubscribeApplied) and applied.message.rows is not None
    assert _rows(applied.message.rows) == world.states[taken_at]
    assert later and all(o.offset > taken_at for o in later)  # set 8's updates, after the answer
    assert _updates_of(later, 7) == []  # nothing of the ended set
    assert _updates_of(later, 8)


def test_max_scan_rows_refuses_when_taken_before_any_row_is_matched(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [0]
    real = q.matches

    def counted(query: Any, row: Any) -> bool:
        calls[0] += 1
        return bool(real(query, row))
    monkeypatch.setattr(q, "matches", counted)
    eng = _engine()
    eng.max_scan_rows = 500
    conn = eng.connect(ALL, confirmed=False)
    eng.handle(conn, Sub(1, 7, ("SELECT * FROM sync_event",)))
    assert eng.snapshot_taken(conn) is None and eng.conns[conn].reading is None and not eng.conns[conn].query_sets
    (out,) = eng.take(conn, 10, 10**12)
    assert isinstance(out.message, SubscriptionError)
    err = SyncError.parse(out.message.error)
    assert (err.code.value, err.details) == ("limit_exceeded", {"actual": 647, "limit": "max_scan_rows", "max": 500})
    assert calls[0] == 0


def _rows_measure(message: Any) -> int:
    """A size estimate for the test: 10 bytes a row, whatever the message."""
    tables = getattr(message, "rows", None) or ()
    sets = getattr(message, "query_sets", ())
    n = sum(len(t.inserts) + len(t.deletes) for t in tables)
    n += sum(len(t.inserts) + len(t.deletes) for u in sets for t in u.tables)
    return 10 + 10 * n


def _over_size(slice_rows: int | None) -> tuple[World, int, Any]:
    eng = _engine()
    eng.measure = _rows_measure
    eng.max_outbound_message_bytes = 5000  # 499 rows: an update (the compaction: 300) fits, the snapshot (600) not
    conn = eng.connect(ALL, confirmed=False)
    eng.slice_rows = None
    eng.handle(conn, Sub(1, 8, ("SELECT * FROM sync_event WHERE stream_id = 's3'",)))  # kept
    eng.take(conn, 10, 10**12)
    eng.slice_rows = slice_rows
    world = World(eng, conn, lambda t, r: t == "sync_event" and _sid(r) == "s3")
    eng.handle(conn, Sub(2, 7, ("SELECT * FROM sync_event WHERE stream_id = 's1' AND idempotency_key > ''",)))
    snap = eng.snapshot_taken(conn)
    if snap is not None:
        _step_with_commits(world, snap)
        eng.answer_snapshot(conn, snap)
    world.drain()
    world.meanwhile()
    return world, conn, snap


def test_a_sliced_snapshot_over_the_message_bound_is_refused_as_an_unsliced_one_and_its_updates_go() -> None:
    at_once, _, none = _over_size(None)
    sliced, conn, snap = _over_size(SLICE)
    assert none is None and snap is not None
    first, second = at_once.got[0].message, sliced.got[0].message
    assert isinstance(first, SubscriptionError) and isinstance(second, SubscriptionError)
    assert second == first  # the same error: limit_exceeded, max_outbound_message_bytes, same size
    assert SyncError.parse(second.error).details["limit"] == "max_outbound_message_bytes"
    assert 7 not in sliced.eng.conns[conn].query_sets
    later = sliced.got[1:]
    assert _updates_of(later, 7) == []  # none of the refused set's held updates went out
    assert _updates_of(later, 8) == sliced.expected_updates(snap.offset)  # the other set's all did
    assert sum(o.message.tx_offset > snap.offset for o in later) == len(_updates_of(later, 8))


def test_answering_a_snapshot_that_is_not_the_connection_s_or_with_other_tables_is_misuse() -> None:
    """Caller misuse raises ``LocalProtocolError`` and changes nothing: the queue stays held."""
    from spec.errors import LocalProtocolError
    from spec.messages import TableRows
    eng = _engine()
    conn = eng.connect(ALL, confirmed=False)
    other = eng.connect(ALL, confirmed=False)
    eng.handle(conn, Sub(1, 7, CASES[0][1]))
    snap = eng.snapshot_taken(conn)
    assert snap is not None
    snap.step(10**9)
    with pytest.raises(LocalProtocolError):
        eng.answer_snapshot(other, snap)
    (table,) = snap.result()
    with pytest.raises(LocalProtocolError):
        eng.answer_snapshot(conn, snap, (TableRows(table.table, table.inserts[1:]),))
    assert eng.conns[conn].reading == snap.offset and not eng.take(conn, 10, 10**12)
    eng.answer_snapshot(conn, snap, (TableRows(table.table, table.inserts),))
    (out,) = eng.take(conn, 10, 10**12)
    assert isinstance(out.message, SubscribeApplied) and out.message.rows[0].inserts == table.inserts


def test_a_snapshot_re_packed_with_other_rows_of_the_same_count_is_misuse() -> None:
    """``answer_snapshot``'s ``tables`` must carry the snapshot's very rows (:meth:`Snapshot.result`'s, made
    once), not any rows of the same count: the snapshot's rows reversed is refused, the queue still held.
    Failed before: the check compared table names and row counts only, and the reversed rows were queued
    as the ``SubscribeApplied``."""
    from spec.errors import LocalProtocolError
    from spec.messages import TableRows
    eng = _engine()
    conn = eng.connect(ALL, confirmed=False)
    eng.handle(conn, Sub(1, 7, CASES[0][1]))
    snap = eng.snapshot_taken(conn)
    assert snap is not None
    snap.step(10**9)
    (table,) = snap.result()
    assert len(table.inserts) > 1 and tuple(reversed(table.inserts)) != tuple(table.inserts)
    with pytest.raises(LocalProtocolError):
        eng.answer_snapshot(conn, snap, (TableRows(table.table, tuple(reversed(table.inserts))),))
    assert eng.conns[conn].reading == snap.offset and not eng.take(conn, 10, 10**12)
