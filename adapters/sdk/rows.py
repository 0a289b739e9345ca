"""Decoded row changes: what the SDK's cache and stream consumer read.

The wire (:mod:`adapters.wire`) carries rows as BSATN inside row lists, grouped by query set, then by
table, then by query.  The SDK decodes a message once, at the input boundary, into the values
below, and everything behind that boundary (the table cache, the stream consumer) works on them:

* :class:`DecodedRow` -- a row value plus its exact wire bytes (a table without a primary key is
  keyed by its bytes, as SpacetimeDB's SDKs do, so a delete must match an earlier insert byte for
  byte);
* :class:`TableChange` -- one table's rows in one query set of one message: persistent inserts and
  deletes, and event-table rows (``events``), each flattened across the per-query fragments the
  server sends (the same row appears once per matching query; the cache counts them);
* :class:`QuerySetChange` -- the tables of one query set.

Because they hold decoded values, tests drive the cache and the consumer with synthetic changes
without any BSATN.
"""

from __future__ import annotations

from dataclasses import dataclass

from spec.values import Row

__all__ = ["DecodedRow", "QuerySetChange", "TableChange"]


@dataclass(frozen=True, slots=True)
class DecodedRow:
    row: Row
    raw: bytes


@dataclass(frozen=True, slots=True)
class TableChange:
    table: str
    inserts: tuple[DecodedRow, ...] = ()
    deletes: tuple[DecodedRow, ...] = ()
    events: tuple[DecodedRow, ...] = ()


@dataclass(frozen=True, slots=True)
class QuerySetChange:
    query_set_id: int
    tables: tuple[TableChange, ...]
