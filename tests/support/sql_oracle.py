"""A second opinion on the subscription subset and row visibility, written as SQL and run by SQLite.

The model (:func:`spec.query.parse`, :func:`spec.query.matches`, :func:`spec.auth.can_read`) and the
engine (``reference.engine``) both answer "which rows does this caller get for this query?", and the
engine calls the model's functions to do it, so comparing the two says nothing about whether the
rules are *right*.  This module answers the same question another way, sharing no code with them:

* the **query** is generated here as an abstract conjunction (:class:`Term`: column, operator,
  literal, which side the literal is on) and rendered twice: once in the subset's spellings the
  model and the engine must parse (bare or quoted identifiers, qualified or not, parenthesized
  the way the official TS SDK's query builder writes them, the literal on either side, ``0x``
  identities, RFC 3339 timestamps, keywords in any case), and once as plain SQLite SQL, which
  SQLite parses, flips and compares itself;
* the **state** is mirrored into SQLite tables (``u64`` columns as zero-padded text, so SQLite's
  signed 64-bit integers do not bound them and text order is numeric order; strings as TEXT,
  whose default BINARY collation is UTF-8 byte order = code point order);
* the **claims** become three small tables (``me``, ``scopes``, ``grants``) and the **visibility
  rules** are one SQL predicate per table, written from DESIGN §4 and ADR-0003 decision 1, not
  derived from ``spec.schema.Visibility``: a wrong visibility kind in the schema is caught too;
* the **refusals** a one-off read or a subscription can give before any row is read
  (``missing_scope``, ``invalid_query`` for a resume without its pins, ``forbidden_stream``) are
  decided from the abstract query by SQL over the same claim tables.

:func:`expected` returns the rows (or the refusal code) SQLite computes; the tests in
``tests/spec/test_sql_oracle.py`` compare it with the model's rule, the model server's
snapshots and transaction updates, and the engine's one-off reads and snapshots, and show the
comparison catching planted wrong rules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from spec.auth import Claims
from spec.schema import TABLES
from spec.values import IDENTITY, TIMESTAMP, U64, ArrayT, OptionT, Row, SatsType

STREAM_TABLES = ("sync_stream", "sync_event", "stream_signal")
ME = "(SELECT identity FROM me)"

VISIBLE: dict[str, str] = {
    # DESIGN §4 "Visibility", ADR-0003 decision 1, written out by hand per table.
    "sync_stream": "EXISTS (SELECT 1 FROM grants g WHERE g.star = 0 AND g.pattern = t.stream_id"
                   " OR g.star = 1 AND substr(t.stream_id, 1, length(g.pattern)) = g.pattern)",
    "sync_checkpoint": f"t.owner = {ME}",
    "session_presence": "1",
    "provider_capability": "1",
    "compute_assignment": f"t.requester = {ME} OR t.provider_owner = {ME}"
                          " OR EXISTS (SELECT 1 FROM scopes WHERE scope = 'compute.assign')",
    "bridge_outbox": "EXISTS (SELECT 1 FROM scopes WHERE scope IN ('bridge.enqueue', 'bridge.mark_sent'))",
    "presence_signal": "1",
}
VISIBLE["sync_event"] = VISIBLE["stream_signal"] = VISIBLE["sync_stream"]


def sqlite_value(t: SatsType, value: object) -> object:
    """A row value as stored in the mirror (and a literal as compared with it)."""
    if value is None:
        return None
    if isinstance(t, OptionT):
        return sqlite_value(t.inner, value)
    if isinstance(t, ArrayT):
        return repr(value)
    if t == U64:
        assert isinstance(value, int)
        return f"{value:020d}"
    if isinstance(value, bool):
        return int(value)
    return value


# --- the abstract query and its two renderings -----------------------------------------------


@dataclass(frozen=True)
class Term:
    column: str
    op: str  # =, <, <=, >, >=  (as written, with the column on the left)
    value: int | str
    literal_first: bool = False  # written `literal flipped-op column`
    literal_style: str = "plain"  # identity: "0x" or "string"; timestamp: "int" or "rfc3339"


@dataclass(frozen=True)
class Style:
    quoted: bool = False  # "t" and "t"."c"
    qualified: bool = False  # t.c
    sdk_parens: bool = False  # each comparison in parentheses, conjunctions nested left (TS SDK)
    lower_keywords: bool = False
    semicolon: bool = False


@dataclass(frozen=True)
class AbstractQuery:
    table: str
    terms: tuple[Term, ...]


FLIP = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _rfc3339(micros: int) -> str:
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{when.microsecond:06d}Z"


def _subset_literal(t: SatsType, term: Term) -> str:
    v = term.value
    if t == IDENTITY:
        assert isinstance(v, str)
        return "0x" + v.upper() if term.literal_style == "0x" else f"'{v}'"
    if t == TIMESTAMP and term.literal_style == "rfc3339":
        assert isinstance(v, int)
        return f"'{_rfc3339(v)}'"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def render_subset(q: AbstractQuery, style: Style) -> str:
    """The query as a client writes it, in one of the subset's spellings."""
    types = _types(q.table)
    kw = str.lower if style.lower_keywords else str.upper
    name = f'"{q.table}"' if style.quoted else q.table

    def col(c: str) -> str:
        cc = f'"{c}"' if style.quoted else c
        return f"{name}.{cc}" if style.qualified or (style.quoted and style.sdk_parens) else cc

    parts = []
    for term in q.terms:
        lit = _subset_literal(types[term.column], term)
        column = col(term.column)
        text = f"{lit} {FLIP[term.op]} {column}" if term.literal_first else f"{column} {term.op} {lit}"
        parts.append(f"({text})" if style.sdk_parens else text)
    sql = f"{kw('select')} * {kw('from')} {name}"
    if parts:
        cond = parts[0]
        for p in parts[1:]:
            cond = f"({cond}) {kw('and')} {p}" if style.sdk_parens else f"{cond} {kw('and')} {p}"
        sql += f" {kw('where')} {cond}"
    return sql + (";" if style.semicolon else "")


def render_sqlite(q: AbstractQuery) -> tuple[str, list[object]]:
    """The filter as SQLite SQL over the mirror, literals bound as parameters (the literal stays on the
    side it was written on: SQLite flips the comparison itself)."""
    types = _types(q.table)
    parts, params = [], []
    for term in q.terms:
        column = f't."{term.column}"'
        parts.append(f"? {FLIP[term.op]} {column}" if term.literal_first else f"{column} {term.op} ?")
        params.append(sqlite_value(types[term.column], term.value))
    return " AND ".join(f"({p})" for p in parts) or "1", params


def _types(table: str) -> dict[str, SatsType]:
    return {c.name: c.type for t in TABLES if t.name == table for c in t.columns}


# --- the mirror -------------------------------------------------------------------------------


class Mirror:
    """One SQLite database holding a copy of a state's rows and one caller's claims."""

    def __init__(self, tables: Mapping[str, Sequence[Row]]) -> None:
        self.db = sqlite3.connect(":memory:")
        self.rows: dict[str, Sequence[Row]] = {}
        self.db.execute("CREATE TABLE me (identity TEXT)")
        self.db.execute("CREATE TABLE scopes (scope TEXT)")
        self.db.execute("CREATE TABLE grants (pattern TEXT, star INTEGER)")
        for t in TABLES:
            cols = ", ".join(f'"{c.name}"' for c in t.columns)
            self.db.execute(f'CREATE TABLE "{t.name}" (_i INTEGER PRIMARY KEY, {cols})')
            rows = tables.get(t.name, ())
            self.rows[t.name] = rows
            marks = ", ".join("?" for _ in range(len(t.columns) + 1))
            self.db.executemany(f'INSERT INTO "{t.name}" VALUES ({marks})', [
                (i, *(sqlite_value(c.type, getattr(r, c.name)) for c in t.columns)) for i, r in enumerate(rows)])

    def set_claims(self, claims: Claims) -> None:
        for table in ("me", "scopes", "grants"):
            self.db.execute(f"DELETE FROM {table}")
        self.db.execute("INSERT INTO me VALUES (?)", (claims.identity,))
        self.db.executemany("INSERT INTO scopes VALUES (?)", [(s,) for s in claims.scopes])
        self.db.executemany("INSERT INTO grants VALUES (?, ?)", [
            (g[:-1], 1) if g.endswith("*") else (g, 0) for g in claims.streams])

    def _scalar(self, sql: str, *args: object) -> object:
        return self.db.execute(sql, args).fetchone()[0]

    def refusal(self, q: AbstractQuery, subscription: bool) -> str | None:
        """The error code a read of ``q`` is refused with before any row is read, or None."""
        if not self._scalar("SELECT count(*) FROM scopes WHERE scope = 'sync.subscribe'"):
            return "missing_scope"
        if subscription and q.table == "sync_event":
            seq_from_below = any(t.column == "seq" and (t.op in (">", ">=")) for t in q.terms)
            pinned = {t.column for t in q.terms if t.op == "="}
            if seq_from_below and not {"stream_id", "epoch"} <= pinned:
                return "invalid_query"
        if q.table in STREAM_TABLES:
            pins = [t.value for t in q.terms if t.column == "stream_id" and t.op == "="]
            if pins:
                self.db.execute("CREATE TEMP TABLE IF NOT EXISTS pin (stream_id TEXT)")
                self.db.execute("DELETE FROM pin")
                self.db.execute("INSERT INTO pin VALUES (?)", (pins[0],))
                granted = self._scalar(f"SELECT count(*) FROM pin t WHERE {VISIBLE['sync_stream']}")
                if not granted:
                    return "forbidden_stream"
        return None

    def visible(self, q: AbstractQuery, rows: Sequence[Row] | None = None) -> list[Row]:
        """The rows of ``q``'s table (the mirror's, or ``rows`` given now) that match and are visible."""
        if rows is not None:
            mirror = Mirror({q.table: rows})
            mirror.db.execute("INSERT INTO me SELECT ? ", (self._scalar("SELECT identity FROM me"),))
            mirror.db.executemany("INSERT INTO scopes VALUES (?)", self.db.execute("SELECT scope FROM scopes"))
            mirror.db.executemany("INSERT INTO grants VALUES (?, ?)", self.db.execute("SELECT * FROM grants"))
            return mirror.visible(q)
        where, params = render_sqlite(q)
        sql = f'SELECT t._i FROM "{q.table}" t WHERE ({where}) AND ({VISIBLE[q.table]}) ORDER BY t._i'
        source = self.rows[q.table]
        return [source[i] for (i,) in self.db.execute(sql, params)]
