"""Tests written to kill the mutants mutmut's runs left alive (docs/mutation.md, `support.mutate`).

Each group names the module and the behaviour the surviving mutants changed; the expected values
come from an independent source (Python's datetime for timestamps, hand-written tables otherwise).
"""

from __future__ import annotations

from datetime import datetime

import icontract
import pytest

from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.query import Comparison, Op, Query, _int_lower_bounds, evaluate, matches, parse
from spec.values import SyncEvent, SyncStream

# --- spec.query ---------------------------------------------------------------------------------


def _rejection(sql: str) -> str:
    with pytest.raises(SyncError) as e:
        parse(sql)
    assert e.value.code is ErrorCode.INVALID_QUERY
    return str(e.value.details["message"])


def _micros_by_datetime(text: str) -> int | None:
    """The oracle: Python's own ISO 8601 parser (3.11 reads RFC 3339's date-time form), plus RFC 3339's
    grammar for the offset (time-numoffset's minute is 00-59; datetime takes `+00:60` as one hour)."""
    if text[-6] in "+-" and int(text[-2:]) > 59:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    return (dt - datetime.fromisoformat("1970-01-01T00:00:00Z")) // datetime.resolution


# Every clock field at its last valid value and one past it, alone (so a rule that only rejects
# when two fields are out of range, or accepts the last valid value, gives a different answer).
TIMESTAMP_EDGES = [
    "2024-03-01T23:59:59Z", "2024-03-01T24:00:00Z",
    "2024-03-01T00:59:00Z", "2024-03-01T00:60:00Z",
    "2024-03-01T00:00:59Z", "2024-03-01T00:00:60Z",
    "2024-03-01T00:00:00+23:59", "2024-03-01T00:00:00+24:00", "2024-03-01T00:00:00-23:00",
    "2024-03-01T00:00:00+23:60", "2024-03-01T00:00:00+00:60", "2024-03-01T00:00:00-00:59",
    "2024-03-01T10:60:00Z", "2024-03-01T10:00:60Z",
]


@pytest.mark.parametrize("text", TIMESTAMP_EDGES)
def test_timestamp_field_ranges_agree_with_datetime(text: str) -> None:
    expected = _micros_by_datetime(text)
    sql = f"SELECT * FROM sync_event WHERE committed_at >= '{text}'"
    if expected is None:
        assert "is not an RFC 3339 timestamp" in _rejection(sql)
    else:
        (q,) = parse(sql)
        assert q.where[0].value == expected


def test_only_one_statement_message() -> None:
    assert _rejection("SELECT * FROM sync_event; SELECT * FROM sync_stream") == \
        "only one statement per query is supported"


def test_unexpected_token_is_quoted_to_forty_characters() -> None:
    word = "a" * 30 + "b" * 30
    assert _rejection(f"SELECT * FROM sync_event {word}") == \
        f"unexpected {word[:40]!r}, expected WHERE, ';' or the end of the query"


def test_matches_names_the_wrong_row_type_and_the_table() -> None:
    (q,) = parse("SELECT * FROM sync_event")
    row = SyncStream("s", "c", 1, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(LocalProtocolError) as e:
        matches(q, row)
    assert str(e.value) == "SyncStream row given to a query on 'sync_event'"


@pytest.mark.parametrize("query", [
    Query("no_such_table", (), "x"),                                     # unknown table
    Query("sync_event", (Comparison("no_such_column", Op.EQ, 1),), "x"),  # unknown column
    Query("sync_event", (Comparison("seq", Op.EQ, "seven"),), "x"),       # literal of the wrong type
])
def test_evaluate_requires_a_well_typed_query(query: Query) -> None:
    event = SyncEvent("s", 1, 1, "k", "h", "p", "0" * 64, 0, 0)
    with pytest.raises(icontract.ViolationError, match="well typed"):
        evaluate(query, [event])


def test_int_lower_bounds_are_the_integer_greater_than_conjuncts_on_the_column() -> None:
    """The contract helper behind STALE-1 (checked with SYNCREF_PER_ROW_CONTRACTS=1): a table of cases."""
    gt, ge = Comparison("seq", Op.GT, 3), Comparison("seq", Op.GE, 5)
    where = (Comparison("stream_id", Op.EQ, "S"), gt, Comparison("seq", Op.LT, 9), ge,
             Comparison("epoch", Op.GT, 2), Comparison("seq", Op.EQ, 4), Comparison("seq", Op.GT, True))
    q = Query("sync_event", where, "x")
    assert _int_lower_bounds(q, "seq") == [gt, ge]
    assert _int_lower_bounds(q, "epoch") == [Comparison("epoch", Op.GT, 2)]
    assert _int_lower_bounds(q, "stream_id") == []
    assert _int_lower_bounds(Query("sync_event", (Comparison("seq", Op.GT, False),), "x"), "seq") == []
