"""Hypothesis strategies for SATS values and module rows, derived from ``spec.schema`` (shared by
the codec tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from spec.schema import TABLES
from spec.values import BOOL, I64, IDENTITY, STRING, TIMESTAMP, U32, U64, ArrayT, OptionT, SatsType


def value_st(t: SatsType, max_items: int = 4, max_text: int = 20) -> st.SearchStrategy[object]:
    """Any well-formed Python value of SATS type ``t`` (Option: None or a value; Vec: a tuple)."""
    if isinstance(t, OptionT):
        return st.none() | value_st(t.inner, max_items, max_text)
    if isinstance(t, ArrayT):
        return st.lists(value_st(t.inner, max_items, max_text), max_size=max_items).map(tuple)
    return {
        STRING: st.text(max_size=max_text),
        BOOL: st.booleans(),
        U32: st.integers(0, 2**32 - 1),
        U64: st.integers(0, 2**64 - 1),
        I64: st.integers(-(2**63), 2**63 - 1),
        TIMESTAMP: st.integers(-(2**63), 2**63 - 1),
        IDENTITY: st.binary(min_size=32, max_size=32).map(bytes.hex),
    }[t]


def row_st_for(table_index: int, max_items: int = 4, max_text: int = 20) -> st.SearchStrategy[object]:
    t = TABLES[table_index]
    return st.tuples(*(value_st(c.type, max_items, max_text) for c in t.columns)).map(lambda vs: t.row_type(*vs))
