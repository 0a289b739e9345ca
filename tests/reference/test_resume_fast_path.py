"""The engine's resume fast path (``Engine._resume_rows``) against a table of cases.

A set whose one ``sync_event`` query is exactly ``stream_id = S AND epoch = E AND seq > W`` (or
``>=``) is served from ``StreamLog.retained_rows`` without the general match; any other shape --
an extra conjunct other than a second lower bound on ``seq`` (the larger one wins), two ``sync_event``
queries in one set -- must fall back to the general path.
The expected seqs are written out by hand per case (not computed with ``spec.query.matches``,
which the general path itself calls), and each case also says which path it must take, so a
fast path that swallowed a query it cannot answer (dropping the extra conjunct) fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from reference.engine import Engine
from spec.auth import Claims
from spec.messages import CallReducer, ReducerOk, ReducerResult, Subscribe, SubscribeApplied, SubscriptionError
from spec.query import parse
from spec.schema import SCOPES
from spec.values import SyncEvent, SyncStream

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
ONLY_T = Claims("b" * 64, frozenset(SCOPES), ("t",))


def _call(eng: Engine, reducer: str, *args: Any) -> None:
    c = eng.connect(ALL, confirmed=False)
    eng.handle(c, CallReducer(1, reducer, tuple(args)))
    out = eng.pop(c).message
    assert isinstance(out, ReducerResult) and isinstance(out.outcome, ReducerOk), out
    eng.close(c)


@pytest.fixture(scope="module")
def engine() -> tuple[Engine, int]:
    eng = Engine()
    for i in range(1, 9):
        _call(eng, "append_sync_event", "s", f"k{i}", f'{{"i":{i}}}', None, None)
    for i in range(1, 4):
        _call(eng, "append_sync_event", "t", f"k{i}", f'{{"i":{i}}}', None, None)
    eng.advance_durable(eng.committed)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and row.head_seq == 8
    return eng, row.epoch


# (queries with {E} for the stream's epoch, claims, fast path taken?, expected (stream, seq) rows or
# the error code refusing the subscription before any snapshot is read)
CASES: list[tuple[str, tuple[str, ...], Claims, bool, list[tuple[str, int]] | str]] = [
    ("resume, >", ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 5",),
     ALL, True, [("s", 6), ("s", 7), ("s", 8)]),
    ("resume, >=", ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq >= 7",),
     ALL, True, [("s", 7), ("s", 8)]),
    ("conjuncts in another order", ("SELECT * FROM sync_event WHERE seq > 6 AND epoch = {E} AND stream_id = 's'",),
     ALL, True, [("s", 7), ("s", 8)]),
    ("from zero", ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 0",),
     ALL, True, [("s", i) for i in range(1, 9)]),
    ("at the head", ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 8",),
     ALL, True, []),
    ("another epoch: stale", ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 999 AND seq > 0",),
     ALL, True, "stale_cursor"),
    ("no such stream", ("SELECT * FROM sync_event WHERE stream_id = 'nope' AND epoch = {E} AND seq > 0",),
     ALL, True, []),
    ("not granted: refused", ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 0",),
     ONLY_T, True, "forbidden_stream"),
    ("granted", ("SELECT * FROM sync_event WHERE stream_id = 't' AND epoch = {E} AND seq > 1",),
     ONLY_T, True, [("t", 2), ("t", 3)]),
    ("an upper bound too: general path",
     ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 3 AND seq < 6",),
     ALL, False, [("s", 4), ("s", 5)]),
    ("two lower bounds: the larger one",
     ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 2 AND seq > 6",),
     ALL, True, [("s", 7), ("s", 8)]),
    ("a lower bound above another: the larger one",
     ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq >= 7 AND seq > 2",),
     ALL, True, [("s", 7), ("s", 8)]),
    ("a key filter too: general path",
     ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 0 AND idempotency_key = 'k3'",),
     ALL, False, [("s", 3)]),
    ("two sync_event queries: general path, deduplicated",
     ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 5",
      "SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {E} AND seq > 6"),
     ALL, False, [("s", 6), ("s", 7), ("s", 8)]),
]


@pytest.mark.parametrize(("name", "queries", "claims", "fast", "expected"), CASES, ids=[c[0] for c in CASES])
def test_resume_snapshot_table(engine: tuple[Engine, int], name: str, queries: tuple[str, ...], claims: Claims,
                               fast: bool, expected: list[tuple[str, int]] | str) -> None:
    eng, epoch = engine
    texts = tuple(t.replace("{E}", str(epoch)) for t in queries)
    if len(texts) == 1:
        (query,) = parse(texts[0])
        assert (eng._resume_rows(claims, query) is not None) is fast, name
    c = eng.connect(claims, confirmed=True)
    eng.handle(c, Subscribe(1, 1, texts))
    out = eng.pop(c).message
    eng.close(c)
    if isinstance(expected, str):
        assert isinstance(out, SubscriptionError) and out.error.startswith(expected + ":"), out
        return
    assert isinstance(out, SubscribeApplied), out
    got = [(r.stream_id, r.seq) for t in out.rows for r in t.inserts if isinstance(r, SyncEvent)]
    assert got == expected, name
