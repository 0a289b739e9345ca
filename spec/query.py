"""The subscription SQL subset: AST, parser and evaluator.

A subscription names one table and, optionally, a conjunction of comparisons between a column
and a literal.  This module is the specification of that subset: it parses by recursive descent
over a token list, checks every name and literal against :mod:`spec.schema`, and evaluates by
scanning.  The grammar (keywords are case-insensitive, identifiers are not)::

    query      = "SELECT" projection "FROM" ( table [ "WHERE" condition ] | "*" ) [ ";" ] ;
    projection = "*" | ident "." "*" ;             (* a qualified star must name the table *)
    condition  = term { "AND" term } ;
    term       = "(" condition ")" | comparison ;
    comparison = column op literal | literal op column ;
    column     = [ ident "." ] ident ;             (* the qualifier must name the table *)
    op         = "=" | "<" | "<=" | ">" | ">=" ;
    literal    = string | integer | hex | "TRUE" | "FALSE" ;
    ident      = bare | quoted ;
    bare       = [A-Za-z_][A-Za-z0-9_]* ;   quoted = '"' { char | '""' } '"' ;
    string     = "'" { char | "''" } "'" ;  integer = [ "-" ] digit { digit } ;
    hex        = "0x" hexdigit { hexdigit } ;

This is what the official TypeScript SDK's query builder emits for a single table
(``SELECT * FROM "t" WHERE ("t"."a" = 'x') AND ("t"."b" > 5)``, Identity as ``0x`` + 64 hex
digits, booleans as ``TRUE``/``FALSE``, timestamps as RFC 3339 strings), plus the spellings a
person types.  ``literal op column`` is normalized by flipping the operator (``5 < seq`` is
``seq > 5``), and nested conjunctions are flattened, so a :class:`Query` is one table plus a
tuple of :class:`Comparison`.  ``SELECT * FROM *`` expands to one query per table of
:data:`spec.schema.STAR_TABLES`; event tables are subscribable by name but are not in ``*``.

A literal must fit its column: String takes a string; U32, U64, I64 take an integer in range;
Timestamp takes an integer (microseconds) or an RFC 3339 string; Identity takes ``0x`` and 64
hex digits, or the same 64 digits as a string (stored lowercase, so string order is numeric
order); Bool takes TRUE/FALSE.  Option and Vec columns are not filterable.  Strings compare by
code point, which is SpacetimeDB's UTF-8 byte order.  ``Query.text`` is the SQL as submitted.

Everything else (OR, NOT, ``!=``, ``<>``, joins, column lists, LIMIT, ORDER BY, functions,
unknown names, a mismatched literal, an empty query, trailing input) raises
``SyncError(INVALID_QUERY, {"query": ..., "message": ...})`` naming the problem; no input
string raises anything else.
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NoReturn

import icontract

from spec import contracts
from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.schema import STAR_TABLES, TABLE_BY_NAME, Table
from spec.values import BOOL, I64, IDENTITY, STRING, TIMESTAMP, U32, U64, Row, SatsType, sats_name, value_has_type


class Op(enum.StrEnum):
    EQ = "="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


FLIPPED: Mapping[Op, Op] = {Op.EQ: Op.EQ, Op.LT: Op.GT, Op.LE: Op.GE, Op.GT: Op.LT, Op.GE: Op.LE}
_COMPARE: Mapping[Op, Callable[[Any, Any], Any]] = {
    Op.EQ: operator.eq, Op.LT: operator.lt, Op.LE: operator.le, Op.GT: operator.gt, Op.GE: operator.ge}


@dataclass(frozen=True, slots=True)
class Comparison:
    column: str
    op: Op
    value: int | str | bool

    @icontract.ensure(lambda self, actual, result: result == bool(_COMPARE[FLIPPED[self.op]](self.value, actual)),
                      "`column op v` holds exactly when `v flipped-op column` does (the FLIPPED table is right)",
                      enabled=contracts.PER_ROW)
    def holds(self, actual: int | str | bool | None) -> bool:
        """:raises TypeError: ``actual`` is not comparable with the literal"""
        return bool(_COMPARE[self.op](actual, self.value))


@dataclass(frozen=True, slots=True)
class Query:
    table: str
    where: tuple[Comparison, ...]
    text: str


_OP_TEXTS = frozenset(op.value for op in Op)
_INT_RANGES: Mapping[SatsType, tuple[int, int]] = {
    U32: (0, 2**32 - 1), U64: (0, 2**64 - 1), I64: (-(2**63), 2**63 - 1), TIMESTAMP: (-(2**63), 2**63 - 1)}
_OPS_MESSAGE = "is not supported (only =, <, <=, >, >=)"
_UNSUPPORTED: Mapping[str, str] = {
    "OR": "OR is not supported; use separate queries", "NOT": "NOT is not supported",
    **{w: "joins are not supported" for w in ("JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", ",")},
    "ORDER": "ORDER BY is not supported", "GROUP": "GROUP BY is not supported",
    "LIMIT": "LIMIT is not supported", "OFFSET": "OFFSET is not supported",
    "HAVING": "HAVING is not supported", "AS": "aliases are not supported",
    **{w: f"operator '{w}' {_OPS_MESSAGE}" for w in ("!=", "<>", "IN", "IS", "LIKE", "ILIKE", "BETWEEN")},
}
_TOKEN = re.compile(r"""(?P<ws>[ \t\r\n\f\v]+) | (?P<hex>0[xX][0-9A-Za-z_]*) | (?P<int>-?[0-9][0-9A-Za-z_.]*)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*) | (?P<qident>"(?:[^"]|"")*") | (?P<str>'(?:[^']|'')*')
    | (?P<sym><=|>=|<>|!=|[=<>*.,();])""", re.VERBOSE)
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # word, qident, str, int, hex, sym
    text: str
    value: str


@dataclass(frozen=True, slots=True)
class _Lit:
    kind: str  # a string, an integer, a hex literal, a boolean
    value: int | str | bool
    text: str


def _rfc3339_micros(text: str) -> int | None:
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    try:
        days = (date(y, mo, d) - date(1970, 1, 1)).days
    except ValueError:
        return None
    sign, oh, om = m[8], int(m[9] or 0), int(m[10] or 0)
    if h > 23 or mi > 59 or s > 59 or oh > 23 or om > 59:
        return None
    offset = (-1 if sign == "-" else 1) * (oh * 3600 + om * 60)
    return (days * 86400 + h * 3600 + mi * 60 + s - offset) * 10**6 + int((m[7] or "")[:6].ljust(6, "0"))


class _Parser:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.toks: list[_Tok] = []
        self.i = 0
        pos = 0
        while pos < len(sql):
            m = _TOKEN.match(sql, pos)
            if m is None:
                what = {"'": "unterminated string literal", '"': "unterminated quoted identifier"}
                self.fail(what.get(sql[pos], f"unexpected character {sql[pos]!r}"))
            pos, kind, text = m.end(), m.lastgroup or "", m[0]
            if kind == "hex" and not re.fullmatch(r"0[xX][0-9A-Fa-f]+", text):
                self.fail(f"malformed hex literal {text[:40]!r}")
            if kind == "int" and not re.fullmatch(r"-?[0-9]+", text):
                self.fail(f"malformed number {text[:40]!r} (only integer literals are supported)")
            value = {"qident": text[1:-1].replace('""', '"'), "str": text[1:-1].replace("''", "'"),
                     "hex": text[2:].lower()}.get(kind, text)
            if kind != "ws":
                self.toks.append(_Tok(kind, text, value))

    def fail(self, message: str) -> NoReturn:
        raise SyncError(ErrorCode.INVALID_QUERY, {"query": self.sql[:200], "message": message})

    def peek(self, ahead: int = 0) -> _Tok | None:
        return self.toks[self.i + ahead] if self.i + ahead < len(self.toks) else None

    def next(self, expected: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            self.fail(f"unexpected end of query, expected {expected}")
        self.i += 1
        return tok

    def at(self, word_or_sym: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok is not None and tok.kind in ("word", "sym") and tok.text.upper() == word_or_sym

    def is_ident(self, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok is not None and tok.kind in ("word", "qident")

    def unexpected(self, tok: _Tok, expected: str) -> NoReturn:
        key = tok.text.upper() if tok.kind in ("word", "sym") else ""
        self.fail(_UNSUPPORTED.get(key, f"unexpected {tok.text[:40]!r}, expected {expected}"))

    def ident(self, expected: str) -> str:
        tok = self.next(expected)
        if tok.kind not in ("word", "qident") or tok.text.upper() in _UNSUPPORTED:
            self.unexpected(tok, expected)
        return tok.value

    def parse(self) -> tuple[Query, ...]:
        if not self.toks:
            self.fail("empty query")
        if not self.at("SELECT"):
            self.unexpected(self.toks[0], "SELECT")
        self.i += 1
        star_of: str | None = None
        if self.is_ident() and self.at(".", 1) and self.at("*", 2):
            star_of = self.ident("a table name")
            self.i += 1
        if not self.at("*") or self.at(",", 1):
            self.fail("only SELECT * is supported (no column lists, expressions or aggregates)")
        self.i += 1
        if not self.at("FROM"):
            self.unexpected(self.next("FROM"), "FROM")
        self.i += 1
        if self.at("*"):
            self.i += 1
            if star_of is not None:
                self.fail(f"{star_of}.* cannot select from *; use SELECT * FROM *")
            if self.at("WHERE"):
                self.fail("SELECT * FROM * takes no WHERE clause")
            self.end("';' or the end of the query")
            return tuple(Query(name, (), self.sql) for name in STAR_TABLES)
        name = self.ident("a table name")
        table = TABLE_BY_NAME.get(name)
        if table is None:
            self.fail(f"unknown table {name!r}")
        if star_of is not None and star_of != name:
            self.fail(f"{star_of!r}.* does not name the FROM table {name!r}")
        where: list[Comparison] = []
        if self.at("WHERE"):
            self.i += 1
            where = self.condition(table, 0)
        self.end("AND, ';' or the end of the query" if where else "WHERE, ';' or the end of the query")
        return (Query(name, tuple(where), self.sql),)

    def end(self, expected: str) -> None:
        if self.at(";"):
            self.i += 1
            if self.peek() is not None:
                self.fail("only one statement per query is supported")
        tok = self.peek()
        if tok is not None:
            self.unexpected(tok, expected)

    def condition(self, table: Table, depth: int) -> list[Comparison]:
        out = self.term(table, depth)
        while self.at("AND"):
            self.i += 1
            out += self.term(table, depth)
        return out

    def term(self, table: Table, depth: int) -> list[Comparison]:
        if not self.at("("):
            return [self.comparison(table)]
        if depth >= 32:
            self.fail("parentheses are nested too deeply")
        self.i += 1
        inner = self.condition(table, depth + 1)
        tok = self.next("')'")
        if tok.text != ")":
            self.unexpected(tok, "AND or ')'")
        return inner

    def comparison(self, table: Table) -> Comparison:
        left = self.operand(table)
        tok = self.next("a comparison operator")
        if tok.kind != "sym" or tok.text not in _OP_TEXTS:
            self.unexpected(tok, "a comparison operator (=, <, <=, >, >=)")
        op, right = Op(tok.text), self.operand(table)
        if isinstance(left, str) and isinstance(right, str):
            self.fail(f"comparing two columns ({left!r}, {right!r}) is not supported")
        if isinstance(left, _Lit) and isinstance(right, _Lit):
            self.fail("a comparison needs a column on one side")
        if isinstance(left, str) and isinstance(right, _Lit):
            return Comparison(left, op, self.coerce(table, left, right))
        assert isinstance(right, str) and isinstance(left, _Lit)
        return Comparison(right, FLIPPED[op], self.coerce(table, right, left))

    def operand(self, table: Table) -> str | _Lit:
        tok = self.next("a column or a literal")
        kinds = {"str": "a string", "int": "an integer", "hex": "a hex literal"}
        if tok.kind in kinds:
            return _Lit(kinds[tok.kind], tok.value, tok.text)
        if tok.kind == "word" and tok.text.upper() in ("TRUE", "FALSE"):
            return _Lit("a boolean", tok.text.upper() == "TRUE", tok.text)
        if tok.kind not in ("word", "qident") or tok.text.upper() in _UNSUPPORTED:
            self.unexpected(tok, "a column or a literal")
        if self.at("("):
            self.fail(f"functions are not supported ({tok.text[:40]}(...))")
        name = tok.value
        if self.at("."):
            self.i += 1
            name = self.ident("a column name")
            if tok.value != table.name:
                self.fail(f"qualifier {tok.value!r} does not name the FROM table {table.name!r}")
            if self.at("."):
                self.fail("a column reference has at most two parts (table.column)")
        if table.column_type(name) is None:
            self.fail(f"unknown column {name!r} in table {table.name!r}")
        return name

    def coerce(self, table: Table, column: str, lit: _Lit) -> int | str | bool:
        t = table.column_type(column)
        assert t is not None
        col, has = f"column {column!r} of table {table.name!r}", f"has type {sats_name(t)}"
        if (t, lit.kind) in ((STRING, "a string"), (BOOL, "a boolean")):
            return lit.value
        if t == IDENTITY and lit.kind in ("a hex literal", "a string"):
            if _HEX64.fullmatch(str(lit.value)):
                return str(lit.value).lower()
            self.fail(f"{col} {has}; an Identity literal is 0x followed by exactly 64 hex digits")
        if t in _INT_RANGES and lit.kind == "an integer":
            lo, hi = _INT_RANGES[t]
            value = int(lit.text) if len(lit.text) <= 40 else hi + 1
            if not lo <= value <= hi:
                self.fail(f"integer {lit.text[:40]} is out of range for {col} ({sats_name(t)})")
            return value
        if t == TIMESTAMP and lit.kind == "a string":
            micros = _rfc3339_micros(str(lit.value))
            if micros is None or not -(2**63) <= micros < 2**63:
                self.fail(f"{col} {has}; {lit.text[:60]} is not an RFC 3339 timestamp")
            return micros
        if t not in _INT_RANGES and t not in (STRING, BOOL, IDENTITY):
            self.fail(f"{col} {has}, which is not filterable")
        self.fail(f"type mismatch: {col} {has}, but the literal {lit.text[:40]} is {lit.kind}")


def _well_typed(query: Query) -> bool:
    """Every conjunct names a column of the table and its literal is a value of the column's type."""
    table = TABLE_BY_NAME.get(query.table)
    return table is not None and all(
        (t := table.column_type(c.column)) is not None and value_has_type(c.value, t) for c in query.where)


@icontract.ensure(lambda sql, result: len(result) == 1 or (
    tuple(x.table for x in result) == STAR_TABLES and all(not x.where for x in result)),
    "one query, or SELECT * FROM * expanded to one unfiltered query per STAR_TABLES entry")
@icontract.ensure(lambda sql, result: all(x.text == sql for x in result), "Query.text is the SQL as submitted")
@icontract.ensure(lambda result: all(_well_typed(x) for x in result),
                  "every comparison names a column of the table, with a literal of the column's type")
def parse(sql: str) -> tuple[Query, ...]:
    """One :class:`Query`, or one per ``STAR_TABLES`` entry for ``SELECT * FROM *``.

    :raises SyncError: ``invalid_query``, naming the problem
    """
    return _Parser(sql).parse()


def matches(q: Query, row: Row) -> bool:
    """:raises LocalProtocolError: ``row`` is not of the query's table (a caller bug)"""
    table = TABLE_BY_NAME.get(q.table)
    if table is None or type(row) is not table.row_type:
        raise LocalProtocolError(f"{type(row).__name__} row given to a query on {q.table!r}")
    return all(c.holds(getattr(row, c.column)) for c in q.where)


def _is_subsequence(part: Sequence[object], whole: Iterable[object]) -> bool:
    it = iter(whole)
    return all(any(x is y for y in it) for x in part)


@icontract.require(lambda q: _well_typed(q), "the query is well typed (as parse makes it)")
@icontract.ensure(lambda q, rows, result: not isinstance(rows, Sequence) or (
    _is_subsequence(result, rows) and all(matches(q, r) for r in result)
    and len(result) == sum(1 for r in rows if matches(q, r))),
    "the result is the in-order subsequence of exactly the rows that match (checked when rows is a Sequence)")
def evaluate(q: Query, rows: Iterable[Row]) -> tuple[Row, ...]:
    """The rows that match, in order.

    :raises LocalProtocolError: a row is not of the query's table (a caller bug)
    """
    return tuple(row for row in rows if matches(q, row))


@icontract.ensure(lambda q, column, result: (result is None) == all(
    c.column != column or c.op is not Op.EQ for c in q.where), "None exactly when no `column = v` conjunct",
    enabled=contracts.PER_ROW)
@icontract.ensure(lambda q, column, result: result is None or any(
    c.column == column and c.op is Op.EQ and c.value is result for c in q.where), "the value of a `column = v`",
    enabled=contracts.PER_ROW)
def pinned_value(q: Query, column: str) -> int | str | bool | None:
    """The value of the first ``column = v`` conjunct, if any."""
    return next((c.value for c in q.where if c.column == column and c.op is Op.EQ), None)


def _int_lower_bounds(q: Query, column: str) -> list[Comparison]:
    return [c for c in q.where if c.column == column and c.op in (Op.GT, Op.GE)
            and isinstance(c.value, int) and not isinstance(c.value, bool)]


@icontract.ensure(lambda q, column, result: (result is None) == (not _int_lower_bounds(q, column)),
                  "None exactly when no integer `column >`/`>=` conjunct", enabled=contracts.PER_ROW)
@icontract.ensure(lambda q, column, result: result is None or (
    all(c.holds(result + 1) for c in _int_lower_bounds(q, column))
    and not all(c.holds(result) for c in _int_lower_bounds(q, column))),
    "STALE-1 (the largest W with `column > W` implied: W + 1 passes every lower bound, W does not)",
    enabled=contracts.PER_ROW)
def lower_bound_exclusive(q: Query, column: str) -> int | None:
    """The largest W such that the query implies ``column > W`` (``> v`` gives v, ``>= v`` gives v-1)."""
    bounds = [c.value - (c.op is Op.GE) for c in q.where if c.column == column and c.op in (Op.GT, Op.GE)
              and isinstance(c.value, int) and not isinstance(c.value, bool)]
    return max(bounds, default=None)


def _int_upper_bounds(q: Query, column: str) -> list[Comparison]:
    return [c for c in q.where if c.column == column and c.op in (Op.LT, Op.LE)
            and isinstance(c.value, int) and not isinstance(c.value, bool)]


@icontract.ensure(lambda q, column, result: (result is None) == (not _int_upper_bounds(q, column)),
                  "None exactly when no integer `column <`/`<=` conjunct", enabled=contracts.PER_ROW)
@icontract.ensure(lambda q, column, result: result is None or (
    all(c.holds(result) for c in _int_upper_bounds(q, column))
    and not all(c.holds(result + 1) for c in _int_upper_bounds(q, column))),
    "STALE-1 (the smallest B with `column <= B` implied: B passes every upper bound, B + 1 does not)",
    enabled=contracts.PER_ROW)
def upper_bound_inclusive(q: Query, column: str) -> int | None:
    """The smallest B such that the query implies ``column <= B`` (``<= v`` gives v, ``< v`` gives v-1);
    None without an integer ``<``/``<=`` conjunct on ``column`` (``column = v`` is not read as a bound,
    as :func:`lower_bound_exclusive` does not read it either).  A resume's replay ends at
    ``min(head, B)`` (ADR-0042)."""
    bounds = [c.value - (c.op is Op.LT) for c in q.where if c.column == column and c.op in (Op.LT, Op.LE)
              and isinstance(c.value, int) and not isinstance(c.value, bool)]
    return min(bounds, default=None)


@icontract.ensure(lambda q, result: (result is None) == (lower_bound_exclusive(q, "seq") is None),
                  "None exactly when seq has no lower bound", enabled=contracts.PER_ROW)
@icontract.ensure(lambda q, result: result is None or result == max(0, lower_bound_exclusive(q, "seq") or 0),
                  "STALE-1 (the seq bound, clamped at 0: seqs start at 1, so seq >= 0 means from the start)",
                  enabled=contracts.PER_ROW)
def resume_watermark(q: Query) -> int | None:
    """The watermark W a ``sync_event`` resume query asks to resume after: the largest W with ``seq > W``
    implied, clamped at 0 -- seqs start at 1, so ``seq >= 0`` and ``seq > 0`` both mean W = 0
    (before ADR-0003, ``seq >= 0`` gave W = -1, a retention floor breach on every stream)."""
    bound = lower_bound_exclusive(q, "seq")
    return None if bound is None else max(0, bound)


RESUME_QUERY_FORM = "SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W"
"""How a resume is written (ADR-0003, decision 3): a ``sync_event`` subscription that bounds ``seq`` from
below must pin both ``stream_id`` and ``epoch`` with ``=``."""


@icontract.require(lambda q: _well_typed(q), "the query is well typed (as parse makes it)")
@icontract.ensure(lambda q, result: not result or bool(q.where), "a query without conditions is satisfiable")
def unsatisfiable(q: Query) -> bool:
    """True when no row can match: a pinned value that fails another conjunct on its column, or an
    empty integer range.  Sound, not complete (string and Identity ranges are not examined)."""
    table = TABLE_BY_NAME[q.table]
    for column in {c.column for c in q.where}:
        conj = [c for c in q.where if c.column == column]
        pinned = [c.value for c in conj if c.op is Op.EQ]
        if pinned:
            if not all(c.holds(pinned[0]) for c in conj):
                return True
            continue
        t = table.column_type(column)
        if t is not None and t in _INT_RANGES:
            lo, hi = _INT_RANGES[t]
            for c in conj:
                assert isinstance(c.value, int)
                lo = max(lo, c.value + (c.op is Op.GT)) if c.op in (Op.GT, Op.GE) else lo
                hi = min(hi, c.value - (c.op is Op.LT)) if c.op in (Op.LT, Op.LE) else hi
            if lo > hi:
                return True
    return False


def shape_key(q: Query) -> tuple[object, ...]:
    """A hashable normal form: queries with equal keys select the same rows (``text`` ignored)."""
    conjuncts = {(c.column, c.op.value, type(c.value).__name__, c.value) for c in q.where}
    return (q.table, tuple(sorted(conjuncts)))
