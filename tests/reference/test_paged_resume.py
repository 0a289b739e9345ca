"""STALE-1 for a page of a catch-up (ADR-0042): the engine against a table of cases written by hand.

A resume bounded above, ``stream_id = S AND epoch = E AND seq > W AND seq <= B`` (or ``seq < B + 1``),
replays ``min(head, B) - W`` events: only that is held against the stream's replay budget, and only
those rows are counted against ``max_scan_rows``.  A resume without an upper bound is measured to the
head, as before.  The expected answers (the seqs sent, or the error code and its reasons / limit) are
written out per case -- not computed with ``spec.resume.stale_reasons``, the rule the engine calls.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from reference.engine import Engine
from spec.auth import Claims
from spec.messages import CallReducer, ReducerOk, ReducerResult, Subscribe, SubscribeApplied, SubscriptionError
from spec.policy import Policy, StreamClass
from spec.schema import SCOPES
from spec.values import SyncEvent, SyncStream

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
HEAD = 12


def _engine(budget: int, max_scan_rows: int | None) -> tuple[Engine, int]:
    eng = Engine(Policy(default_class=StreamClass("default", replay_budget=budget)))
    eng.max_scan_rows = max_scan_rows
    c = eng.connect(ALL, confirmed=False)
    for i in range(1, HEAD + 1):
        eng.handle(c, CallReducer(i, "append_sync_event", ("s", f"k{i}", f'{{"i":{i}}}', None, None)))
        out: Any = eng.pop(c).message
        assert isinstance(out, ReducerResult) and isinstance(out.outcome, ReducerOk), out
    eng.close(c)
    eng.advance_durable(eng.committed)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and row.head_seq == HEAD and row.floor_seq == 1
    return eng, row.epoch


def _subscribe(eng: Engine, text: str) -> list[int] | tuple[str, Any]:
    c = eng.connect(ALL, confirmed=True)
    eng.handle(c, Subscribe(1, 1, (text,)))
    out = eng.pop(c).message
    eng.close(c)
    if isinstance(out, SubscriptionError):
        code, _, details = out.error.partition(": ")
        d = json.loads(details)
        return code, d.get("reasons", d.get("limit"))
    assert isinstance(out, SubscribeApplied), out
    return [r.seq for t in out.rows for r in t.inserts if isinstance(r, SyncEvent)]


BUDGET_EXCEEDED = ("stale_cursor", ["replay_budget_exceeded"])

# budget 3, head 12, floor 1: (the seq conjuncts, the answer)
BUDGET_CASES: list[tuple[str, list[int] | tuple[str, Any]]] = [
    ("seq > 0 AND seq <= 3", [1, 2, 3]),  # a page of exactly the budget, 12 behind the head
    ("seq > 0 AND seq <= 4", BUDGET_EXCEEDED),  # one over
    ("seq > 0 AND seq < 4", [1, 2, 3]),  # < B + 1 is <= B
    ("seq > 0 AND seq < 5", BUDGET_EXCEEDED),
    ("seq >= 1 AND seq <= 3", [1, 2, 3]),
    ("seq > 5 AND seq <= 8", [6, 7, 8]),
    ("seq > 5 AND 8 >= seq", [6, 7, 8]),
    ("seq > 0", BUDGET_EXCEEDED),  # unbounded: head - W, as before
    ("seq > 9", [10, 11, 12]),
    ("seq > 8", BUDGET_EXCEEDED),
    ("seq > 10 AND seq <= 100", [11, 12]),  # a bound past the head: the head ends the replay
    ("seq > 8 AND seq <= 100", BUDGET_EXCEEDED),  # min(12, 100) - 8 = 4
    ("seq > 5 AND seq <= 2", []),  # B < W: an empty page
    ("seq > 13 AND seq <= 14", ("stale_cursor", ["cursor_ahead_of_head"])),  # a page does not excuse the rest
]


@pytest.fixture(scope="module")
def budget3() -> tuple[Engine, int]:
    return _engine(3, None)


@pytest.mark.parametrize(("seq", "expected"), BUDGET_CASES, ids=[c[0] for c in BUDGET_CASES])
def test_a_page_is_held_against_the_budget_to_its_bound(budget3: tuple[Engine, int], seq: str,
                                                        expected: list[int] | tuple[str, Any]) -> None:
    eng, epoch = budget3
    assert _subscribe(eng, f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {epoch} AND {seq}") == expected


def test_a_page_of_another_epoch_is_stale(budget3: tuple[Engine, int]) -> None:
    eng, epoch = budget3
    text = f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {epoch + 1} AND seq > 0 AND seq <= 2"
    assert _subscribe(eng, text) == ("stale_cursor", ["epoch_changed"])


# budget 100, max_scan_rows 5: a page counts only its own rows against the bound
SCAN_CASES: list[tuple[str, list[int] | tuple[str, Any]]] = [
    ("seq > 0 AND seq <= 5", [1, 2, 3, 4, 5]),  # 5 rows of 12 after W: within the bound
    ("seq > 0 AND seq <= 6", ("limit_exceeded", "max_scan_rows")),
    ("seq > 6 AND seq < 12", [7, 8, 9, 10, 11]),
    ("seq > 9 AND seq <= 1000", [10, 11, 12]),
    ("seq > 0", [*range(1, HEAD + 1)]),  # an unbounded resume is bounded by the budget, not counted (ADR-0040)
]


@pytest.mark.parametrize(("seq", "expected"), SCAN_CASES, ids=[c[0] for c in SCAN_CASES])
def test_a_page_counts_only_its_rows_against_max_scan_rows(seq: str, expected: list[int] | tuple[str, Any]) -> None:
    eng, epoch = _engine(100, 5)
    assert _subscribe(eng, f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {epoch} AND {seq}") == expected
    assert _subscribe(eng, "SELECT * FROM sync_event WHERE stream_id = 's'") == ("limit_exceeded", "max_scan_rows")
