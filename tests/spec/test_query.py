"""Tests of spec.query: the subscription SQL subset (parser, evaluator, helpers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.query import (
    FLIPPED,
    Comparison,
    Op,
    Query,
    evaluate,
    lower_bound_exclusive,
    matches,
    parse,
    pinned_value,
    shape_key,
    unsatisfiable,
)
from spec.schema import STAR_TABLES, TABLE_BY_NAME, TABLES
from spec.values import IDENTITY, STRING, TIMESTAMP, U64, SyncEvent, SyncStream, value_has_type

ID_A = "0123456789abcdef" * 4
ID_B = "f" * 64
EV = "sync_event"


def one(sql: str) -> Query:
    queries = parse(sql)
    assert len(queries) == 1
    return queries[0]


def rejection(sql: str) -> str:
    with pytest.raises(SyncError) as info:
        parse(sql)
    err = info.value
    assert err.code is ErrorCode.INVALID_QUERY
    assert set(err.details) == {"query", "message"}
    assert err.details["query"] == sql[:200]
    message = err.details["message"]
    assert isinstance(message, str)
    return message


def event(**kw: object) -> SyncEvent:
    base: dict[str, object] = dict(stream_id="s", epoch=1, seq=1, idempotency_key="k",
                                   payload_hash="sha256:" + "0" * 64, payload="{}", producer=ID_A,
                                   committed_at=0, tx_offset=1)
    base.update(kw)
    return SyncEvent(**base)  # type: ignore[arg-type]


# --- accepted forms ---------------------------------------------------------------------------

ACCEPTED: list[tuple[str, str, tuple[Comparison, ...]]] = [
    ("SELECT * FROM sync_event", EV, ()),
    ("select * from sync_event", EV, ()),
    ("SeLeCt * FrOm sync_stream;", "sync_stream", ()),
    ("  SELECT\n*\tFROM   sync_event  ;  ", EV, ()),
    ('SELECT * FROM "sync_event"', EV, ()),
    ('SELECT "sync_event".* FROM "sync_event"', EV, ()),
    ("SELECT sync_event.* FROM sync_event", EV, ()),
    ("SELECT * FROM sync_event WHERE stream_id = 's'", EV, (Comparison("stream_id", Op.EQ, "s"),)),
    ("SELECT * FROM sync_event WHERE stream_id='s'", EV, (Comparison("stream_id", Op.EQ, "s"),)),
    ("SELECT * FROM sync_event where \"stream_id\" = 'O''Brian'", EV,
     (Comparison("stream_id", Op.EQ, "O'Brian"),)),
    ("SELECT * FROM sync_event WHERE sync_event.seq > 5", EV, (Comparison("seq", Op.GT, 5),)),
    ('SELECT * FROM "sync_event" WHERE "sync_event"."seq" >= 5', EV, (Comparison("seq", Op.GE, 5),)),
    ("SELECT * FROM sync_event WHERE seq < 5", EV, (Comparison("seq", Op.LT, 5),)),
    ("SELECT * FROM sync_event WHERE seq <= 5", EV, (Comparison("seq", Op.LE, 5),)),
    ("SELECT * FROM sync_event WHERE 5 < seq", EV, (Comparison("seq", Op.GT, 5),)),
    ("SELECT * FROM sync_event WHERE 5 <= seq", EV, (Comparison("seq", Op.GE, 5),)),
    ("SELECT * FROM sync_event WHERE 5 > seq", EV, (Comparison("seq", Op.LT, 5),)),
    ("SELECT * FROM sync_event WHERE 5 >= seq", EV, (Comparison("seq", Op.LE, 5),)),
    ("SELECT * FROM sync_event WHERE 's' = stream_id", EV, (Comparison("stream_id", Op.EQ, "s"),)),
    ("SELECT * FROM sync_event WHERE (seq = 5)", EV, (Comparison("seq", Op.EQ, 5),)),
    ("SELECT * FROM sync_event WHERE ((seq = 5))", EV, (Comparison("seq", Op.EQ, 5),)),
    ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 2 AND seq > 7", EV,
     (Comparison("stream_id", Op.EQ, "s"), Comparison("epoch", Op.EQ, 2), Comparison("seq", Op.GT, 7))),
    ("SELECT * FROM sync_event WHERE ((stream_id = 's') and (epoch = 2)) AnD (seq > 7)", EV,
     (Comparison("stream_id", Op.EQ, "s"), Comparison("epoch", Op.EQ, 2), Comparison("seq", Op.GT, 7))),
    ("SELECT * FROM sync_event WHERE (stream_id = 's' AND (epoch = 2 AND (7 < seq)))", EV,
     (Comparison("stream_id", Op.EQ, "s"), Comparison("epoch", Op.EQ, 2), Comparison("seq", Op.GT, 7))),
    (f"SELECT * FROM sync_event WHERE producer = 0x{ID_A}", EV, (Comparison("producer", Op.EQ, ID_A),)),
    (f"SELECT * FROM sync_event WHERE producer = 0x{ID_A.upper()}", EV,
     (Comparison("producer", Op.EQ, ID_A),)),
    (f"SELECT * FROM sync_event WHERE producer = '{ID_A.upper()}'", EV,
     (Comparison("producer", Op.EQ, ID_A),)),
    (f"SELECT * FROM sync_event WHERE 0x{ID_B} > producer", EV, (Comparison("producer", Op.LT, ID_B),)),
    ("SELECT * FROM sync_event WHERE committed_at > -5", EV, (Comparison("committed_at", Op.GT, -5),)),
    ("SELECT * FROM sync_event WHERE committed_at >= '1970-01-01T00:00:01Z'", EV,
     (Comparison("committed_at", Op.GE, 1_000_000),)),
    ("SELECT * FROM sync_event WHERE seq = 18446744073709551615", EV,
     (Comparison("seq", Op.EQ, 2**64 - 1),)),
    ("SELECT * FROM compute_assignment WHERE job_kind = 4294967295", "compute_assignment",
     (Comparison("job_kind", Op.EQ, 2**32 - 1),)),
    ("SELECT * FROM sync_event WHERE committed_at = -9223372036854775808", EV,
     (Comparison("committed_at", Op.EQ, -(2**63)),)),
    ("SELECT * FROM sync_event WHERE stream_id = ''", EV, (Comparison("stream_id", Op.EQ, ""),)),
    ("SELECT * FROM sync_event WHERE stream_id = 'a AND b OR c'", EV,
     (Comparison("stream_id", Op.EQ, "a AND b OR c"),)),
    ("SELECT * FROM sync_event WHERE payload = 'héllo ✓'", EV, (Comparison("payload", Op.EQ, "héllo ✓"),)),
    # event tables and private tables are subscribable by name (row-filtered elsewhere)
    ("SELECT * FROM presence_signal WHERE status = 'online'", "presence_signal",
     (Comparison("status", Op.EQ, "online"),)),
    ("SELECT * FROM stream_signal", "stream_signal", ()),
    ("SELECT * FROM sync_checkpoint WHERE last_applied_seq > 0", "sync_checkpoint",
     (Comparison("last_applied_seq", Op.GT, 0),)),
    ("SELECT * FROM bridge_outbox WHERE status = 'pending'", "bridge_outbox",
     (Comparison("status", Op.EQ, "pending"),)),
]


@pytest.mark.parametrize(("sql", "table", "where"), ACCEPTED)
def test_accepted_forms(sql: str, table: str, where: tuple[Comparison, ...]) -> None:
    assert parse(sql) == (Query(table, where, sql),)


# The exact text the official TypeScript SDK query builder emits (crates/bindings-typescript/
# src/lib/query.ts, toSql / booleanExprToSql / literalValueToSql / quoteIdentifier), for our tables.
SDK_FORMS: list[tuple[str, tuple[Comparison, ...]]] = [
    ('SELECT * FROM "sync_event"', ()),
    ("SELECT * FROM \"sync_event\" WHERE \"sync_event\".\"stream_id\" = 'O''Brian'",
     (Comparison("stream_id", Op.EQ, "O'Brian"),)),
    ('SELECT * FROM "sync_event" WHERE ("sync_event"."seq" > 20) AND ("sync_event"."seq" < 30)',
     (Comparison("seq", Op.GT, 20), Comparison("seq", Op.LT, 30))),
    ("SELECT * FROM \"sync_event\" WHERE ((\"sync_event\".\"stream_id\" = 's') AND "
     "(\"sync_event\".\"epoch\" = 1)) AND (\"sync_event\".\"seq\" > 4)",
     (Comparison("stream_id", Op.EQ, "s"), Comparison("epoch", Op.EQ, 1), Comparison("seq", Op.GT, 4))),
    (f'SELECT * FROM "sync_event" WHERE "sync_event"."producer" = 0x{ID_A}',
     (Comparison("producer", Op.EQ, ID_A),)),
    ("SELECT * FROM \"sync_event\" WHERE \"sync_event\".\"committed_at\" > '2024-01-01T00:00:00.123000Z'",
     (Comparison("committed_at", Op.GT, 1_704_067_200_123_000),)),
]


@pytest.mark.parametrize(("sql", "where"), SDK_FORMS)
def test_official_sdk_output_is_accepted(sql: str, where: tuple[Comparison, ...]) -> None:
    assert one(sql).where == where


def test_boolean_literals_are_case_insensitive_but_rejected_on_non_bool_columns() -> None:
    assert "is a boolean" in rejection("SELECT * FROM sync_event WHERE seq = TRUE")
    assert "is a boolean" in rejection("SELECT * FROM sync_event WHERE stream_id = false")
    assert "literal TrUe is a boolean" in rejection("SELECT * FROM sync_event WHERE TrUe = stream_id")


@pytest.mark.parametrize("sql", ["SELECT * FROM *", "select * from *", "SELECT * FROM * ;",
                                 " SELECT  *  FROM  * "])
def test_select_star_from_star_expands_to_star_tables(sql: str) -> None:
    queries = parse(sql)
    assert tuple(q.table for q in queries) == STAR_TABLES
    assert STAR_TABLES == ("sync_stream", "sync_event", "session_presence", "provider_capability",
                           "compute_assignment")
    assert all(q.where == () and q.text == sql for q in queries)


@pytest.mark.parametrize(
    ("ts", "micros"),
    [("1970-01-01T00:00:00Z", 0), ("1970-01-01T00:00:00.000001Z", 1), ("1969-12-31T23:59:59.5Z", -500_000),
     ("2024-01-01T01:00:00+01:00", 1_704_067_200_000_000),
     ("2024-01-01 00:00:00.1234567z", 1_704_067_200_123_456),
     ("2000-02-29T12:30:45.25-02:30", 951_836_445_250_000)])
def test_timestamp_string_literals(ts: str, micros: int) -> None:
    assert one(f"SELECT * FROM sync_event WHERE committed_at = '{ts}'").where[0].value == micros


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_timestamp_literals_agree_with_datetime(dt: datetime) -> None:
    expected = (dt.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // (datetime.resolution)
    text = dt.isoformat() + "Z"
    assert one(f"SELECT * FROM sync_event WHERE committed_at < '{text}'").where[0].value == expected


# --- rejections -------------------------------------------------------------------------------

REJECTED: list[tuple[str, str]] = [
    ("", "empty query"),
    ("  \n\t ", "empty query"),
    (";", "unexpected ';', expected SELECT"),
    ("DELETE FROM sync_event", "unexpected 'DELETE', expected SELECT"),
    ("SELECT * FROM nope", "unknown table 'nope'"),
    ("SELECT * FROM Sync_Event", "unknown table 'Sync_Event'"),
    ("SELECT * FROM sync_event WHERE foo = 1", "unknown column 'foo' in table 'sync_event'"),
    ('SELECT * FROM sync_event WHERE "Seq" = 1', "unknown column 'Seq' in table 'sync_event'"),
    ("SELECT * FROM sync_event WHERE seq != 1", "operator '!=' is not supported (only =, <, <=, >, >=)"),
    ("SELECT * FROM sync_event WHERE seq <> 1", "operator '<>' is not supported (only =, <, <=, >, >="),
    ("SELECT * FROM sync_event WHERE seq IN (1, 2)", "operator 'IN' is not supported"),
    ("SELECT * FROM sync_event WHERE stream_id LIKE 'a%'", "operator 'LIKE' is not supported"),
    ("SELECT * FROM sync_event WHERE stream_id IS NULL", "operator 'IS' is not supported"),
    ("SELECT * FROM sync_event WHERE seq BETWEEN 1 AND 2", "operator 'BETWEEN' is not supported"),
    ("SELECT * FROM sync_event WHERE seq = 1 OR seq = 2", "OR is not supported; use separate queries"),
    ("SELECT * FROM sync_event WHERE (seq = 1) or (seq = 2)", "OR is not supported; use separate queries"),
    ("SELECT * FROM sync_event WHERE NOT seq = 1", "NOT is not supported"),
    ("SELECT * FROM sync_event WHERE NOT (seq = 1)", "NOT is not supported"),
    ("SELECT * FROM sync_event JOIN sync_stream", "joins are not supported"),
    ("SELECT * FROM sync_event INNER JOIN sync_stream ON seq = epoch", "joins are not supported"),
    ("SELECT * FROM sync_event, sync_stream", "joins are not supported"),
    ('SELECT "sync_event".* FROM "sync_stream" JOIN "sync_event" ON "sync_event"."stream_id" = '
     '"sync_stream"."stream_id"', "'sync_event'.* does not name the FROM table 'sync_stream'"),
    ("SELECT stream_id FROM sync_event", "only SELECT * is supported"),
    ("SELECT stream_id, seq FROM sync_event", "only SELECT * is supported"),
    ("SELECT *, seq FROM sync_event", "only SELECT * is supported"),
    ("SELECT count(*) FROM sync_event", "only SELECT * is supported"),
    ("SELECT FROM sync_event", "only SELECT * is supported"),
    ("SELECT * FROM sync_event LIMIT 5", "LIMIT is not supported"),
    ("SELECT * FROM sync_event WHERE seq > 1 LIMIT 5", "LIMIT is not supported"),
    ("SELECT * FROM sync_event ORDER BY seq", "ORDER BY is not supported"),
    ("SELECT * FROM sync_event WHERE seq > 1 ORDER BY seq", "ORDER BY is not supported"),
    ("SELECT * FROM sync_event GROUP BY seq", "GROUP BY is not supported"),
    ("SELECT * FROM sync_event AS e", "aliases are not supported"),
    ("SELECT * FROM sync_event WHERE lower(stream_id) = 's'", "functions are not supported"),
    ("SELECT * FROM sync_event WHERE seq = abs(1)", "functions are not supported"),
    ("SELECT * FROM sync_event WHERE seq = 'x'",
     "type mismatch: column 'seq' of table 'sync_event' has type U64, but the literal 'x' is a string"),
    ("SELECT * FROM sync_event WHERE stream_id = 5",
     "type mismatch: column 'stream_id' of table 'sync_event' has type String, "
     "but the literal 5 is an integer"),
    (f"SELECT * FROM sync_event WHERE stream_id = 0x{ID_A}", "is a hex literal"),
    (f"SELECT * FROM sync_event WHERE seq = 0x{ID_A}", "is a hex literal"),
    ("SELECT * FROM sync_event WHERE producer = 5", "has type Identity, but the literal 5 is an integer"),
    ("SELECT * FROM sync_event WHERE producer = 0x1234", "exactly 64 hex digits"),
    (f"SELECT * FROM sync_event WHERE producer = 0x{ID_A}0", "exactly 64 hex digits"),
    ("SELECT * FROM sync_event WHERE producer = 'alice'", "exactly 64 hex digits"),
    ("SELECT * FROM sync_event WHERE producer = 0xZZ", "malformed hex literal '0xZZ'"),
    ("SELECT * FROM sync_event WHERE seq = -1", "integer -1 is out of range for column 'seq'"),
    ("SELECT * FROM sync_event WHERE seq = 18446744073709551616", "out of range for column 'seq'"),
    ("SELECT * FROM compute_assignment WHERE job_kind = 4294967296", "out of range for column 'job_kind'"),
    ("SELECT * FROM sync_event WHERE committed_at = 9223372036854775808", "out of range"),
    ("SELECT * FROM sync_event WHERE seq = " + "9" * 5000, "out of range for column 'seq'"),
    ("SELECT * FROM sync_event WHERE seq = 1.5", "malformed number '1.5' (only integer literals"),
    ("SELECT * FROM sync_event WHERE seq = 1e3", "malformed number '1e3'"),
    ("SELECT * FROM sync_event WHERE committed_at > 'yesterday'", "'yesterday' is not an RFC 3339 timestamp"),
    ("SELECT * FROM sync_event WHERE committed_at > '2024-02-30T00:00:00Z'", "is not an RFC 3339 timestamp"),
    ("SELECT * FROM sync_event WHERE committed_at > '2024-01-01T24:00:00Z'", "is not an RFC 3339 timestamp"),
    ("SELECT * FROM sync_event WHERE committed_at > '2024-01-01'", "is not an RFC 3339 timestamp"),
    ("SELECT * FROM session_presence WHERE offline_reason = 'ttl_expired'",
     "column 'offline_reason' of table 'session_presence' has type Option<String>, which is not filterable"),
    ("SELECT * FROM provider_capability WHERE nip90_kinds = 5000",
     "has type Vec<U32>, which is not filterable"),
    ("SELECT * FROM sync_event WHERE seq = epoch", "comparing two columns ('seq', 'epoch') is not supported"),
    ("SELECT * FROM sync_event WHERE 1 = 1", "a comparison needs a column on one side"),
    ("SELECT * FROM sync_event WHERE TRUE = TRUE", "a comparison needs a column on one side"),
    ("SELECT * FROM sync_event WHERE sync_stream.seq = 1",
     "qualifier 'sync_stream' does not name the FROM table 'sync_event'"),
    ("SELECT * FROM sync_event WHERE a.sync_event.seq = 1", "qualifier 'a' does not name the FROM table"),
    ("SELECT * FROM sync_event WHERE sync_event.seq.x = 1", "at most two parts"),
    ("SELECT sync_stream.* FROM sync_event", "'sync_stream'.* does not name the FROM table 'sync_event'"),
    ("SELECT sync_event.* FROM *", "cannot select from *"),
    ("SELECT * FROM * WHERE seq = 1", "SELECT * FROM * takes no WHERE clause"),
    ("SELECT * FROM * x", "unexpected 'x', expected ';' or the end of the query"),
    ("SELECT * FROM sync_event x", "unexpected 'x', expected WHERE, ';' or the end of the query"),
    ("SELECT * FROM sync_event WHERE seq = 1 seq", "unexpected 'seq', expected AND, ';' or the end"),
    ("SELECT * FROM sync_event;;", "only one statement per query is supported"),
    ("SELECT * FROM sync_event; SELECT * FROM sync_stream", "only one statement per query is supported"),
    ("SELECT *", "unexpected end of query, expected FROM"),
    ("SELECT * FROM", "unexpected end of query, expected a table name"),
    ("SELECT * FROM sync_event WHERE", "unexpected end of query, expected a column or a literal"),
    ("SELECT * FROM sync_event WHERE seq", "unexpected end of query, expected a comparison operator"),
    ("SELECT * FROM sync_event WHERE seq =", "unexpected end of query, expected a column or a literal"),
    ("SELECT * FROM sync_event WHERE seq = 1 AND", "unexpected end of query"),
    ("SELECT * FROM sync_event WHERE (seq = 1", "unexpected end of query, expected ')'"),
    ("SELECT * FROM sync_event WHERE seq = 1)", "unexpected ')'"),
    ("SELECT * FROM sync_event WHERE (seq) = 1", "unexpected ')', expected a comparison operator"),
    ("SELECT * FROM sync_event WHERE seq = (1)", "unexpected '(', expected a column or a literal"),
    ("SELECT * FROM sync_event WHERE ()", "unexpected ')', expected a column or a literal"),
    ("SELECT * FROM sync_event WHERE seq == 1", "unexpected '=', expected a column or a literal"),
    ("SELECT * FROM sync_event WHERE stream_id = 'open", "unterminated string literal"),
    ('SELECT * FROM "sync_event WHERE seq = 1', "unterminated quoted identifier"),
    ("SELECT * FROM sync_event WHERE seq = 1 -- comment", "unexpected character '-'"),
    ("SELECT * FROM sync_event WHERE seq = #1", "unexpected character '#'"),
    ("SELECT * FROM sync_évent", "unexpected character 'é'"),
    ("SELECT * FROM sync_event WHERE seq = :sender", "unexpected character ':'"),
    ("SELECT * FROM sync_event WHERE " + "(" * 40 + "seq = 1" + ")" * 40, "nested too deeply"),
    ("SELECT * FROM sync_event WHERE " + "(" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("sql", "fragment"), REJECTED)
def test_rejections_name_the_problem(sql: str, fragment: str) -> None:
    assert fragment in rejection(sql)


def test_error_details_cut_the_query_to_200_chars() -> None:
    sql = "SELECT * FROM sync_event WHERE stream_id = '" + "x" * 500 + "' OR seq = 1"
    with pytest.raises(SyncError) as info:
        parse(sql)
    assert info.value.details == {"query": sql[:200], "message": "OR is not supported; use separate queries"}
    assert len(info.value.details["query"]) == 200


def test_moderate_nesting_is_accepted() -> None:
    sql = "SELECT * FROM sync_event WHERE " + "(" * 30 + "seq = 1" + ")" * 30
    assert one(sql).where == (Comparison("seq", Op.EQ, 1),)


# --- parse never raises anything but SyncError -----------------------------------------------

SOUP_TOKENS = [
    "SELECT", "select", "*", "FROM", "from", "WHERE", "AND", "and", "OR", "NOT", "(", ")", ";", ",", ".",
    "=", "<", "<=", ">", ">=", "!=", "<>", "==", "JOIN", "LIMIT", "ORDER", "BY", "AS", "IN", "TRUE", "FALSE",
    "NULL", "0", "1", "-1", "-", "1.5", "18446744073709551616", "9" * 50, "0x", "0x12", f"0x{ID_A}",
    f"'{ID_A}'", "''", "'a''b'", "'", '"', '""', '"sync_event"', '"seq"', '"a""b"', "'2024-01-01T00:00:00Z'",
    "'2024-13-01T00:00:00Z'", "count", "lower", ":sender", "--", "#", "\n", "\x00", "é",
    *[t.name for t in TABLES], *{c.name for t in TABLES for c in t.columns},
]
soup = st.lists(st.sampled_from(SOUP_TOKENS) | st.text(max_size=3), max_size=25)
prefixes = st.sampled_from(["", "SELECT * FROM ", "SELECT * FROM sync_event WHERE ",
                            'SELECT * FROM "sync_event" WHERE ("sync_event"."seq" > 1) AND '])


def check_parse_outcome(sql: str) -> None:
    try:
        queries = parse(sql)
    except SyncError as err:
        assert err.code is ErrorCode.INVALID_QUERY
        assert err.details["query"] == sql[:200]
        assert isinstance(err.details["message"], str) and err.details["message"]
        return
    assert queries
    for q in queries:
        table = TABLE_BY_NAME[q.table]
        assert q.text == sql
        for c in q.where:
            t = table.column_type(c.column)
            assert t is not None and value_has_type(c.value, t)


@given(st.text())
@example("SELECT * FROM sync_event WHERE seq = " + "1" * 5000)
@example("(" * 5000)
@example("SELECT * FROM sync_event WHERE " + "(" * 5000)
@example("SELECT * FROM sync_event WHERE committed_at = '0000-01-01T00:00:00Z'")
@example("SELECT * FROM sync_event WHERE committed_at = '9999-12-31T23:59:59-23:59'")
def test_parse_never_raises_anything_but_sync_error_on_text(sql: str) -> None:
    check_parse_outcome(sql)


@given(prefixes, soup, st.sampled_from([" ", "", "\t"]))
def test_parse_never_raises_anything_but_sync_error_on_token_soup(prefix: str, tokens: list[str],
                                                                   sep: str) -> None:
    check_parse_outcome(prefix + sep.join(tokens))


# --- evaluator against brute force ------------------------------------------------------------

STREAMS = ["a", "b", "O'B", "é", ""]
IDS = [ID_A, ID_B, "0" * 64]
COLUMN_VALUES: dict[str, st.SearchStrategy[int | str]] = {
    "stream_id": st.sampled_from(STREAMS),
    "epoch": st.integers(0, 4),
    "seq": st.integers(0, 12) | st.just(2**64 - 1),
    "idempotency_key": st.sampled_from(["k", "k2", "K"]),
    "payload_hash": st.sampled_from(["sha256:" + "0" * 64, "sha256:" + "1" * 64]),
    "payload": st.sampled_from(["{}", "[]", '{"a":1}']),
    "producer": st.sampled_from(IDS),
    "committed_at": st.integers(-3, 3) | st.sampled_from([-(2**63), 2**63 - 1]),
    "tx_offset": st.integers(0, 5),
}
rows = st.builds(SyncEvent, **COLUMN_VALUES)
comparisons = st.sampled_from(sorted(COLUMN_VALUES)).flatmap(
    lambda col: st.builds(Comparison, st.just(col), st.sampled_from(list(Op)), COLUMN_VALUES[col]))


def direct(a: Any, op: Op, v: Any) -> bool:
    if op is Op.EQ:
        return bool(a == v)
    if op is Op.LT:
        return bool(a < v)
    if op is Op.LE:
        return bool(a < v or a == v)
    if op is Op.GT:
        return bool(v < a)
    return bool(v < a or a == v)


def render(c: Comparison, draw: st.DrawFn) -> str:
    t = TABLE_BY_NAME[EV].column_type(c.column)
    column = draw(st.sampled_from([c.column, f'"{c.column}"', f"{EV}.{c.column}", f'"{EV}"."{c.column}"']))
    if t == STRING:
        literal = "'" + str(c.value).replace("'", "''") + "'"
    elif t == IDENTITY:
        literal = draw(st.sampled_from([f"0x{c.value}", f"0X{str(c.value).upper()}", f"'{c.value}'"]))
    else:
        literal = str(c.value)
    op = draw(st.sampled_from([" ", ""])).join(["", c.op.value, ""])
    flip = draw(st.booleans())
    text = f"{literal} {FLIPPED[c.op].value} {column}" if flip else f"{column}{op}{literal}"
    return f"({text})" if draw(st.booleans()) else text


@st.composite
def queries_with_text(draw: st.DrawFn) -> tuple[tuple[Comparison, ...], str]:
    where = tuple(draw(st.lists(comparisons, max_size=4)))
    parts = [render(c, draw) for c in where]
    while len(parts) > 1 and draw(st.booleans()):  # random grouping: ((a) AND (b)) AND c
        i = draw(st.integers(0, len(parts) - 2))
        parts[i:i + 2] = [f"({parts[i]} {draw(st.sampled_from(['AND', 'and']))} {parts[i + 1]})"]
    head = draw(st.sampled_from(["SELECT * FROM sync_event", 'select "sync_event".* from "sync_event"']))
    text = head + (" WHERE " + " AND ".join(parts) if parts else "") + draw(st.sampled_from(["", ";", " ; "]))
    return where, text


@given(queries_with_text(), st.lists(rows, max_size=8))
def test_parse_round_trips_and_matches_equals_brute_force(qt: tuple[tuple[Comparison, ...], str],
                                                          table_rows: list[SyncEvent]) -> None:
    where, text = qt
    q = one(text)
    assert q == Query(EV, where, text)
    for row in table_rows:
        expected = all(direct(getattr(row, c.column), c.op, c.value) for c in where)
        assert matches(q, row) is expected
    assert evaluate(q, table_rows) == tuple(r for r in table_rows if matches(q, r))
    if unsatisfiable(q):
        assert evaluate(q, table_rows) == ()


def test_matches_concrete_cases() -> None:
    q = one("SELECT * FROM sync_event WHERE stream_id = 's' AND seq > 2 AND seq <= 4")
    assert [matches(q, event(seq=n)) for n in range(6)] == [False, False, False, True, True, False]
    assert matches(q, event(stream_id="t", seq=3)) is False
    assert matches(one("SELECT * FROM sync_event"), event()) is True
    assert matches(one(f"SELECT * FROM sync_event WHERE producer < 0x{ID_B}"), event(producer=ID_A)) is True
    assert matches(one(f"SELECT * FROM sync_event WHERE producer < 0x{ID_B}"), event(producer=ID_B)) is False
    assert matches(one("SELECT * FROM sync_event WHERE stream_id < 'b'"), event(stream_id="a")) is True
    assert matches(one("SELECT * FROM sync_event WHERE stream_id < 'b'"), event(stream_id="b")) is False


def test_evaluate_filters_preserving_order() -> None:
    rs = [event(seq=5), event(seq=1), event(seq=9), event(seq=3), event(seq=7)]
    q = one("SELECT * FROM sync_event WHERE seq >= 3")
    assert [r.seq for r in evaluate(q, rs) if isinstance(r, SyncEvent)] == [5, 9, 3, 7]
    assert len(evaluate(q, rs)) == 4
    assert evaluate(q, iter(rs)) == evaluate(q, rs)
    assert evaluate(q, []) == ()


def test_matches_rejects_a_row_of_another_table() -> None:
    stream = SyncStream("s", "c", 1, 0, 0, 0, 1, 10, 0, 0)
    with pytest.raises(LocalProtocolError):
        matches(one("SELECT * FROM sync_event"), stream)
    with pytest.raises(LocalProtocolError):
        evaluate(one("SELECT * FROM sync_event"), [event(), stream])


# --- helpers used by the stale-cursor check and the subscription planner ----------------------

@pytest.mark.parametrize(
    ("sql", "stream", "bound"),
    [
        ("SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = 1 AND seq > 4", "S", 4),
        ('SELECT * FROM "sync_event" WHERE ("sync_event"."stream_id" = \'S\') AND ("sync_event"."seq" > 4)',
         "S", 4),
        ("SELECT * FROM sync_event WHERE ((stream_id = 'S') AND (seq >= 5))", "S", 4),
        ("SELECT * FROM sync_event WHERE 'S' = stream_id AND 5 < seq", "S", 5),
        ("SELECT * FROM sync_event WHERE 5 <= seq AND stream_id = 'S'", "S", 4),
        ("SELECT * FROM sync_event WHERE seq >= 0 AND stream_id = 'S'", "S", -1),
        ("SELECT * FROM sync_event WHERE seq > 2 AND seq >= 7 AND seq > 5 AND stream_id = 'S'", "S", 6),
        ("SELECT * FROM sync_event WHERE stream_id = 'S' AND stream_id = 'T' AND seq > 1", "S", 1),
        ("SELECT * FROM sync_event WHERE stream_id > 'S' AND seq < 9 AND seq <= 3", None, None),
        ("SELECT * FROM sync_event WHERE seq = 4", None, None),
        ("SELECT * FROM sync_event", None, None),
    ],
)
def test_pinned_value_and_lower_bound(sql: str, stream: str | None, bound: int | None) -> None:
    q = one(sql)
    assert pinned_value(q, "stream_id") == stream
    assert lower_bound_exclusive(q, "seq") == bound


def test_pinned_value_of_other_types() -> None:
    q = one(f"SELECT * FROM sync_event WHERE epoch = 3 AND producer = 0x{ID_A.upper()} AND seq > 1")
    assert pinned_value(q, "epoch") == 3
    assert pinned_value(q, "producer") == ID_A
    assert pinned_value(q, "seq") is None
    assert lower_bound_exclusive(q, "epoch") is None
    q = one("SELECT * FROM sync_event WHERE committed_at > -10")
    assert lower_bound_exclusive(q, "committed_at") == -10


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("seq = 1 AND seq = 2", True),
        ("seq = 1 AND seq = 1", False),
        ("seq = 3 AND seq > 3", True),
        ("seq = 3 AND seq >= 3 AND seq <= 3", False),
        ("seq > 5 AND seq < 6", True),
        ("seq > 5 AND seq <= 6", False),
        ("seq < 0", True),
        ("seq <= 0", False),
        ("seq > 18446744073709551615", True),
        ("committed_at < -9223372036854775808", True),
        ("committed_at < 0", False),
        ("stream_id = 'a' AND stream_id = 'b'", True),
        ("stream_id = 'a' AND stream_id > 'a'", True),
        ("stream_id = 'a' AND seq = 1", False),
        (f"producer = 0x{ID_A} AND producer = '{ID_A.upper()}'", False),
        (f"producer = 0x{ID_A} AND producer = 0x{ID_B}", True),
        ("stream_id > 'b' AND stream_id < 'a'", False),  # string ranges are not examined (sound only)
    ],
)
def test_unsatisfiable(where: str, expected: bool) -> None:
    assert unsatisfiable(one(f"SELECT * FROM sync_event WHERE {where}")) is expected


@given(st.lists(st.builds(Comparison, st.just("seq"), st.sampled_from(list(Op)), st.integers(0, 20)),
                max_size=4))
def test_unsatisfiable_is_exact_for_one_integer_column(where: list[Comparison]) -> None:
    q = Query(EV, tuple(where), "")
    satisfiable_in_window = any(all(c.holds(n) for c in where) for n in range(0, 22))
    assert unsatisfiable(q) is (not satisfiable_in_window)


def test_shape_key_ignores_spelling_order_and_duplicates() -> None:
    spellings = [
        "SELECT * FROM sync_event WHERE stream_id = 's' AND seq > 4",
        'SELECT "sync_event".* FROM "sync_event" WHERE ("sync_event"."seq" > 4) '
        'AND ("sync_event"."stream_id" = \'s\')',
        "select * from sync_event where 4 < seq and 's' = stream_id and seq > 4;",
    ]
    keys = {shape_key(one(s)) for s in spellings}
    assert keys == {(EV, (("seq", ">", "int", 4), ("stream_id", "=", "str", "s")))}
    hash(next(iter(keys)))


def test_shape_key_distinguishes_different_queries() -> None:
    base = shape_key(one("SELECT * FROM sync_event WHERE seq > 4"))
    for other in ["SELECT * FROM sync_event WHERE seq >= 4", "SELECT * FROM sync_event WHERE seq > 5",
                  "SELECT * FROM sync_event WHERE epoch > 4", "SELECT * FROM sync_event",
                  "SELECT * FROM sync_checkpoint WHERE last_applied_seq > 4"]:
        assert shape_key(one(other)) != base
    assert shape_key(one("SELECT * FROM sync_stream")) != shape_key(one("SELECT * FROM sync_event"))


@given(queries_with_text(), queries_with_text())
def test_equal_shape_keys_select_equal_rows(a: tuple[tuple[Comparison, ...], str],
                                            b: tuple[tuple[Comparison, ...], str]) -> None:
    qa, qb = one(a[1]), one(b[1])
    assert shape_key(qa) == shape_key(Query(EV, tuple(reversed(qa.where)) + qa.where, "other"))
    if set(qa.where) == set(qb.where):
        assert shape_key(qa) == shape_key(qb)


def test_values_have_the_column_types() -> None:
    q = one("SELECT * FROM sync_event WHERE seq = 1 AND committed_at = '1970-01-01T00:00:00Z' "
            f"AND producer = 0x{ID_A} AND stream_id = '1'")
    types = [TABLE_BY_NAME[EV].column_type(c.column) for c in q.where]
    assert types == [U64, TIMESTAMP, IDENTITY, STRING]
    assert [type(c.value) for c in q.where] == [int, int, str, str]
