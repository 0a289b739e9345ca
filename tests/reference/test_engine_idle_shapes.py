"""A shape whose last subscriber left is kept, at most ``IDLE_SHAPES`` of them, and taken back
when its query is subscribed again (``Engine.idle_shapes``): a gap replay's resume set is
subscribed and dropped once per resume.  What a subscriber receives must not depend on it: each
case compares what a connection gets on an engine that has the idle shape against an engine
that never had it (the same appends, the subscriber alone from the start)."""

from __future__ import annotations

from typing import Any

from reference import engine as eng_mod
from reference.engine import IDLE_SHAPES, Engine
from spec.auth import Claims
from spec.messages import CallReducer, Subscribe, SubscribeApplied, TransactionUpdate, Unsubscribe, UnsubscribeApplied
from spec.schema import SCOPES

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
ONLY_T = Claims("b" * 64, frozenset(SCOPES), ("t",))
STREAM = "SELECT * FROM sync_event WHERE stream_id = 't'"


def _append(eng: Engine, conn: int, n: int, stream: str = "t") -> None:
    eng.handle(conn, CallReducer(n, "append_sync_event", (stream, f"k{n}", f'{{"n":{n}}}', None, None)))


def _drain(eng: Engine, conn: int) -> list[Any]:
    out = []
    while eng.releasable(conn) and eng.conns[conn].outbound:
        out.append(eng.pop(conn).message)
    return out


def _updates(messages: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple((qs.query_set_id, tuple((t.table, tuple(t.inserts), tuple(t.deletes)) for t in qs.tables))
                  for qs in m.query_sets) for m in messages if isinstance(m, TransactionUpdate)]


def test_a_shape_dropped_and_subscribed_again_is_taken_back_and_delivers_as_a_new_one() -> None:
    eng = Engine()
    writer = eng.connect(ALL, confirmed=False)
    _append(eng, writer, 1)
    a = eng.connect(ALL, confirmed=False)
    eng.handle(a, Subscribe(1, 1, (STREAM,)))
    assert isinstance(eng.pop(a).message, SubscribeApplied)
    shape = next(iter(eng.shapes["sync_event"].values()))
    eng.handle(a, Unsubscribe(2, 1))
    assert isinstance(eng.pop(a).message, UnsubscribeApplied)
    assert not eng.shapes["sync_event"] and not eng.shapes_by_pin["sync_event"]
    assert list(eng.idle_shapes.values()) == [shape] and not shape.subscribers

    b = eng.connect(ONLY_T, confirmed=False)  # another connection, another claims filter key
    eng.handle(b, Subscribe(3, 7, (STREAM,)))
    assert isinstance(eng.pop(b).message, SubscribeApplied)
    (key, again), = eng.shapes["sync_event"].items()
    assert again is shape and not eng.idle_shapes  # taken back, no longer idle
    assert eng.shapes_by_pin["sync_event"]["t"] == {key: shape}
    assert shape.subscribers == {(b, 7): 1} and shape.groups is None
    _append(eng, writer, 2)
    _append(eng, writer, 3, stream="u")  # not the shape's stream
    _drain(eng, writer)
    got_b, got_a = _drain(eng, b), _drain(eng, a)

    fresh = Engine()  # the same appends; the subscriber alone from the start
    w2 = fresh.connect(ALL, confirmed=False)
    _append(fresh, w2, 1)
    b2 = fresh.connect(ONLY_T, confirmed=False)
    fresh.handle(b2, Subscribe(3, 7, (STREAM,)))
    fresh.pop(b2)
    _append(fresh, w2, 2)
    _append(fresh, w2, 3, stream="u")
    want = _drain(fresh, b2)
    assert _updates(got_b) == _updates(want) and len(_updates(want)) == 1
    assert got_a == []  # the connection that left gets nothing of it


def test_at_most_idle_shapes_are_kept_the_oldest_dropped_first() -> None:
    eng = Engine()
    c = eng.connect(ALL, confirmed=False)
    n = IDLE_SHAPES + 5
    for i in range(n):  # distinct streams: distinct shapes
        eng.handle(c, Subscribe(i, 1, (f"SELECT * FROM sync_event WHERE stream_id = 's{i}'",)))
        assert isinstance(eng.pop(c).message, SubscribeApplied)
        eng.handle(c, Unsubscribe(i, 1))
        eng.pop(c)
    assert len(eng.idle_shapes) == IDLE_SHAPES
    streams = [dict((col, v) for col, _op, _t, v in key[1])["stream_id"] for key in eng.idle_shapes]  # type: ignore[attr-defined]
    assert streams == [f"s{i}" for i in range(5, n)]  # the five oldest went, in order


def test_an_idle_shape_is_not_matched_by_the_fanout() -> None:
    eng = Engine()
    writer = eng.connect(ALL, confirmed=False)
    a = eng.connect(ALL, confirmed=False)
    eng.handle(a, Subscribe(1, 1, (STREAM,)))
    eng.pop(a)
    eng.handle(a, Unsubscribe(2, 1))
    eng.pop(a)
    before = eng.match_checks
    _append(eng, writer, 1)
    assert eng.match_checks == before and _drain(eng, a) == []
    assert eng_mod.IDLE_SHAPES == 256  # the bound docs/protocol.md gives
