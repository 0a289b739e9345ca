"""The commit record's fast path (``make_record``, ``delta_text``, ``record_row``) against the
definition (``body_json`` + ``chain``, ``changes_json``): the same hash and the same stored text on
random records, so logs written before the fast path still verify and new ones verify under the
definition."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from support.sats_strategies import row_st_for

from reference.durability import args_json, record_from_row, record_row
from reference.log import (
    RowChange,
    TxRecord,
    _canon,
    body_json,
    chain,
    changes_json,
    claims_json,
    delta_text,
    make_record,
)
from spec.auth import Claims
from spec.schema import SCOPES, TABLES

claims_st = st.one_of(st.none(), st.builds(
    Claims, st.binary(min_size=32, max_size=32).map(bytes.hex), st.frozensets(st.sampled_from(sorted(SCOPES))),
    st.lists(st.text(max_size=12), max_size=3).map(tuple), st.none() | st.text(max_size=8),
    st.none() | st.text(max_size=8), st.none() | st.text(max_size=16), st.none() | st.text(max_size=4),
    st.none() | st.integers(0, 10)))
arg_st = st.one_of(st.none(), st.text(max_size=30), st.integers(-(2**63), 2**64 - 1),
                   st.lists(st.integers(0, 2**32 - 1), max_size=4).map(tuple), st.lists(st.text(max_size=5),
                                                                                         max_size=3).map(tuple))
change_st = st.integers(0, len(TABLES) - 1).flatmap(lambda i: st.builds(
    RowChange, st.just(TABLES[i].name), st.lists(row_st_for(i), max_size=2).map(tuple),
    st.lists(row_st_for(i), max_size=2).map(tuple)))


def _old_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**40), st.sampled_from(["reducer", "sweep", "compact", "disconnect", "recovery"]),
       st.text(max_size=30), claims_st, st.lists(arg_st, max_size=5).map(tuple), st.integers(-(2**62), 2**62),
       st.lists(change_st, max_size=3).map(tuple), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_fast_record_equals_the_definition(offset: int, kind: str, name: str, caller: Claims | None,
                                           args: tuple[Any, ...], timestamp: int, changes: tuple[RowChange, ...],
                                           prev: str) -> None:
    rec = make_record(offset, kind, name, caller, args, timestamp, changes, prev)
    assert rec.hash == chain(prev, body_json(offset, kind, name, caller, args, timestamp, changes))
    assert rec.delta_json == delta_text(changes) == _canon(changes_json(changes))
    # the stored row: the delta text as written before the fast path (plain json.dumps), and it
    # decodes back to the same record
    row = record_row(rec)
    assert row[6] == _old_dumps(changes_json(changes))
    # and the whole row as the writer stored it before the fast path (claims, arguments: json.dumps)
    assert row == (offset, kind, name, _old_dumps(claims_json(caller)), _old_dumps(args_json(args)), timestamp,
                   row[6], prev, rec.hash)
    back = record_from_row(row)
    assert back == rec and back.delta_json == "" and back.args_json == ""
    assert record_row(back) == row


def test_delta_json_is_a_cache_not_part_of_the_value() -> None:
    rec = make_record(1, "sweep", "sweep", None, (5,), 7, (), "0" * 64)
    plain = TxRecord(rec.offset, rec.kind, rec.name, rec.caller, rec.args, rec.timestamp, rec.changes,
                     rec.prev_hash, rec.hash)
    assert plain == rec and "delta_json" not in repr(rec) and rec.delta_json == "[]"
