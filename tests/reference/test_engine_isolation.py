"""The engine's isolation guarantees, directly: atomic commits, query limits, output bounds, and
matching cost that does not depend on other streams' subscriptions.

The atomicity cases are the engine-level regression test of the surrogate freeze: a record that
cannot be built (text UTF-8 cannot carry) used to advance ``committed`` first, so the next record
no longer continued the log and the group-commit writer refused every later one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import reference.reducers as r
from reference.durability import GroupCommitWriter, LogStore
from reference.engine import Engine, InternalError
from spec import query as q
from spec.auth import Claims
from spec.errors import LocalProtocolError, SyncError
from spec.messages import (
    CallReducer,
    OneOffQueryResult,
    ReducerErr,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeApplied,
)
from spec.schema import SCOPES, TABLE_BY_ROW_TYPE

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))


def snapshot(eng: Engine) -> tuple[Any, ...]:
    """Everything a failed transaction must leave as it was."""
    tables = {t: sorted(map(repr, eng.db.rows(t))) for t in ("sync_stream", "sync_event", "bridge_outbox",
                                                               "session_presence")}
    return eng.committed, eng.durable, eng.head_hash, len(eng.pending_records), tables


def last(eng: Engine, conn: int) -> Any:
    return eng.conns[conn].outbound[-1].message


def call(eng: Engine, conn: int, rid: int, reducer: str, *args: Any) -> Any:
    eng.handle(conn, CallReducer(rid, reducer, tuple(args)))
    return last(eng, conn)


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    store = LogStore.open(tmp_path)
    w = GroupCommitWriter(store, background=False)
    yield w
    w.close()
    store.close()


def test_an_unrecordable_argument_rolls_back_and_the_log_continues(writer: GroupCommitWriter) -> None:
    eng = Engine()
    reported: list[InternalError] = []
    eng.on_internal_error = reported.append
    conn = eng.connect(ADMIN, confirmed=False)
    assert isinstance(call(eng, conn, 1, "enqueue_bridge_event", "ob1", "src", 31990, "[]", "hello").outcome,
                      ReducerOk)
    writer.append(eng.take_records())
    before = snapshot(eng)
    got = call(eng, conn, 2, "record_bridge_failure", "ob1", "\ud800", 1000)  # the attack run's repro
    assert isinstance(got, ReducerResult) and isinstance(got.outcome, ReducerErr) and got.outcome.internal
    assert "UnicodeEncodeError" in got.outcome.error and "rolled back" in got.outcome.error
    got.outcome.error.encode("utf-8")  # the answer itself is sendable text
    assert snapshot(eng) == before
    assert len(reported) == 1 and reported[0].name == "record_bridge_failure"
    # the next transaction takes the next offset and chains: the writer accepts it (the freeze: it refused)
    assert isinstance(call(eng, conn, 3, "append_sync_event", "s", "k", "{}", None, None).outcome, ReducerOk)
    records = eng.take_records()
    assert [rec.offset for rec in records] == [before[0] + 1]
    writer.append(records)
    eng.advance_durable(writer.flush())
    assert eng.durable == eng.committed


def test_an_internal_error_without_a_connection_raises_and_changes_nothing() -> None:
    eng = Engine()
    bad = Claims("b" * 64, frozenset(SCOPES), ("*",), device_id="dev\udcff")  # a claim the record cannot carry
    before = snapshot(eng)
    with pytest.raises(InternalError) as info:
        eng.call_detached(bad, "append_sync_event", ("s", "k", "{}", None, None))
    assert "rolled back" in info.value.message
    assert snapshot(eng) == before
    offset, _ret = eng.call_detached(ADMIN, "append_sync_event", ("s", "k", "{}", None, None))
    assert offset == before[0] + 1


def test_a_reducer_bug_is_answered_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine()
    conn = eng.connect(ADMIN, confirmed=False)
    real = r.REDUCERS["append_sync_event"]

    def buggy(tx: Any, ctx: Any, *args: Any) -> Any:
        real(tx, ctx, *args)  # writes, then fails
        raise TypeError("a bug")

    monkeypatch.setitem(r.REDUCERS, "append_sync_event", buggy)
    before = snapshot(eng)
    got = call(eng, conn, 1, "append_sync_event", "s", "k", "{}", None, None)
    assert got.outcome.internal and "TypeError: a bug" in got.outcome.error
    assert snapshot(eng) == before


def test_a_failing_system_transaction_is_rolled_back(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine()
    conn = eng.connect(ADMIN, confirmed=False)
    call(eng, conn, 1, "upsert_presence", "sess1", "dev", "node", "online", "eu", 60_000)
    before = snapshot(eng)

    def broken(*_args: Any) -> None:
        raise RuntimeError("broken sweep")

    monkeypatch.setattr(r, "sweep_presence", broken)
    with pytest.raises(InternalError):
        eng.sweep(10**12)
    assert snapshot(eng) == before
    monkeypatch.setattr(r, "disconnect_sessions", broken)
    reported: list[InternalError] = []
    eng.on_internal_error = reported.append
    eng.close(conn)  # its disconnect transaction fails: reported, the close itself completes
    assert conn not in eng.conns and [e.name for e in reported] == ["disconnect"]
    assert snapshot(eng)[0] == before[0]


# --- query limits ------------------------------------------------------------------------------------


def limited() -> tuple[Engine, int]:
    eng = Engine()
    eng.max_query_bytes, eng.max_query_conjuncts, eng.max_queries_per_connection = 200, 3, 8
    return eng, eng.connect(ADMIN, confirmed=False)


def limit_of(text: str) -> tuple[str, int, int]:
    err = SyncError.parse(text)
    assert err.code.value == "limit_exceeded", text
    return err.details["limit"], err.details["max"], err.details["actual"]


def test_query_length_and_conjuncts_are_refused_on_every_path() -> None:
    eng, conn = limited()
    long_q = "SELECT * FROM sync_stream WHERE stream_id = '" + "x" * 200 + "'"
    four = "SELECT * FROM sync_event WHERE seq > 1 AND seq > 2 AND seq > 3 AND epoch = 1"
    eng.handle(conn, Subscribe(1, 1, (long_q,)))
    assert limit_of(last(eng, conn).error) == ("max_query_bytes", 200, len(long_q))
    eng.handle(conn, Subscribe(2, 2, (four,)))
    assert limit_of(last(eng, conn).error) == ("max_query_conjuncts", 3, 4)
    eng.one_off(conn, 3, long_q)
    assert limit_of(last(eng, conn).result)[0] == "max_query_bytes"
    with pytest.raises(SyncError) as info:
        eng.query(ADMIN, four)
    assert limit_of(info.value.render())[0] == "max_query_conjuncts"
    multibyte = "SELECT * FROM sync_stream WHERE stream_id = '" + "é" * 80 + "'"  # 127 characters, 207 bytes
    eng.one_off(conn, 4, multibyte)
    assert limit_of(last(eng, conn).result) == ("max_query_bytes", 200, len(multibyte.encode()))
    assert not eng.conns[conn].query_sets  # nothing was registered


def test_subscribed_queries_per_connection_count_every_set() -> None:
    eng, conn = limited()
    eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM *",)))  # one query per public table
    count = eng.conns[conn].query_count
    assert isinstance(last(eng, conn), SubscribeApplied) and count > 1
    for qs in range(2, 2 + 8 - count):
        eng.handle(conn, Subscribe(qs, qs, (f"SELECT * FROM sync_stream WHERE stream_id = 's{qs}'",)))
        assert isinstance(last(eng, conn), SubscribeApplied)
    eng.handle(conn, Subscribe(99, 99, ("SELECT * FROM sync_stream",)))
    assert limit_of(last(eng, conn).error) == ("max_queries_per_connection", 8, 9)
    eng.handle(conn, Unsubscribe(100, 1))
    eng.handle(conn, Subscribe(101, 99, ("SELECT * FROM sync_stream",)))  # room again
    assert isinstance(last(eng, conn), SubscribeApplied)


def test_a_set_of_too_many_query_texts_is_refused_before_any_is_parsed() -> None:
    """The subscribed-query bound is checked on the set's texts before they are parsed: one
    32 MiB ``Subscribe`` carries about a million short distinct queries, and parsing (and stale
    checking) them all before counting held the event loop for seconds and their parses in memory.
    Oracle: the parse cache's lookup count.  A text expands to one query or more (``SELECT * FROM *``
    to one per table), so the text count is a lower bound of the query count: nothing that fits is
    refused by it (the expanded count is still checked after parsing)."""
    eng, conn = limited()
    cache = eng.parse_cache

    def parses() -> int:  # texts looked up in the parse cache: every parse passes there
        return cache.hits + cache.misses

    texts = tuple(f"SELECT * FROM sync_stream WHERE stream_id = 's{i}'" for i in range(1000))
    eng.handle(conn, Subscribe(1, 1, texts))
    assert limit_of(last(eng, conn).error) == ("max_queries_per_connection", 8, 1000)
    assert parses() == 0
    assert not eng.conns[conn].query_sets
    eng.handle(conn, Subscribe(2, 2, texts[:8]))  # exactly the bound: parsed and applied
    assert isinstance(last(eng, conn), SubscribeApplied) and parses() == 8
    eng.handle(conn, Subscribe(3, 3, texts[8:9]))
    assert limit_of(last(eng, conn).error) == ("max_queries_per_connection", 8, 9)
    no_scope = eng.connect(Claims("d" * 64, frozenset(), ("*",)), confirmed=False)
    eng.handle(no_scope, Subscribe(4, 4, texts))  # the scope is still checked first
    assert SyncError.parse(last(eng, no_scope).error).code.value == "missing_scope"


def test_a_set_the_decoder_did_not_decode_is_answered_as_the_same_set_of_texts() -> None:
    """``refuse_overlong`` (a ``Subscribe`` whose texts the wire decoder skipped: more than the
    bound) answers as ``handle`` answers those texts: the same checks in the same order, with no
    texts to parse.  Oracle: ``handle`` itself on real texts, and the close of an active set id."""
    texts = tuple(f"SELECT * FROM sync_stream WHERE stream_id = 's{i}'" for i in range(20))
    answers = []
    for claims in (ADMIN, Claims("d" * 64, frozenset(), ("*",))):  # with and without the scope
        for refuse in (False, True):
            eng, _ = limited()
            conn = eng.connect(claims, confirmed=False)
            if refuse:
                eng.refuse_overlong(conn, 3, 4, len(texts))
            else:
                eng.handle(conn, Subscribe(3, 4, texts))
            answers.append(last(eng, conn))
            assert not eng.conns[conn].query_sets
    assert answers[0] == answers[1] and answers[2] == answers[3] and answers[0] != answers[2]
    assert limit_of(answers[0].error) == ("max_queries_per_connection", 8, 20)
    eng, conn = limited()
    eng.handle(conn, Subscribe(1, 4, texts[:1]))
    closed: list[tuple[int, str]] = []
    eng.on_close = lambda c, reason: closed.append((c, reason))
    eng.refuse_overlong(conn, 2, 4, len(texts))  # the set id is active: closed, as handle() would
    assert closed and "query set 4 is already active" in closed[0][1] and conn not in eng.conns
    eng, conn = limited()
    with pytest.raises(LocalProtocolError):  # not over the bound: the caller should have decoded them
        eng.refuse_overlong(conn, 1, 1, 8)


# --- output bounds ---------------------------------------------------------------------------------------


def rows_of(message: Any) -> int:
    if isinstance(message, SubscribeApplied | UnsubscribeApplied):
        return sum(len(t.inserts) + len(t.deletes) for t in message.rows or ())
    if isinstance(message, OneOffQueryResult):
        return 0 if isinstance(message.result, str) else len(message.result.inserts)
    if isinstance(message, TransactionUpdate):
        return sum(len(t.inserts) + len(t.deletes) for qs in message.query_sets for t in qs.tables)
    if isinstance(message, ReducerResult) and isinstance(message.outcome, ReducerOk):
        return sum(len(t.inserts) + len(t.deletes) for qs in message.outcome.query_sets for t in qs.tables)
    return 0


def measured(max_message: int, max_bytes: int | None = None) -> Engine:
    """An engine whose messages 'weigh' 100 bytes per row plus 10: the bounds, not the codec."""
    eng = Engine()
    eng.measure = lambda m: 10 + 100 * rows_of(m)
    eng.max_outbound_message_bytes = max_message
    eng.max_outbound_bytes = max_bytes
    return eng


def test_a_snapshot_over_the_message_bound_is_refused_and_not_registered() -> None:
    eng = measured(max_message=510)
    writer_conn = eng.connect(ADMIN, confirmed=False)
    for i in range(6):
        call(eng, writer_conn, i + 1, "append_sync_event", "s", f"k{i}", "{}", None, None)
    conn = eng.connect(ADMIN, confirmed=False)
    eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 's'",)))
    assert limit_of(last(eng, conn).error) == ("max_outbound_message_bytes", 510, 610)
    assert not eng.conns[conn].query_sets and not eng.shapes.get("sync_event")
    eng.handle(conn, Subscribe(2, 2, ("SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND seq > 1",)))
    assert isinstance(last(eng, conn), SubscribeApplied)  # 5 rows: 510, at the bound
    eng.one_off(conn, 3, "SELECT * FROM sync_event WHERE stream_id = 's'")
    assert limit_of(last(eng, conn).result)[0] == "max_outbound_message_bytes"
    call(eng, writer_conn, 9, "append_sync_event", "s", "k9", "{}", None, None)  # 6 rows in the set now
    eng.handle(conn, Unsubscribe(4, 2, send_dropped=True))
    refused = last(eng, conn)
    assert isinstance(refused, SubscriptionError) and (refused.request_id, refused.query_set_id) == (4, 2)
    assert limit_of(refused.error)[0] == "max_outbound_message_bytes"  # the rows are refused, the set
    assert not eng.conns[conn].query_sets and not eng.shapes.get("sync_event")  # ends anyway
    eng.handle(conn, Unsubscribe(5, 2))
    assert SyncError.parse(last(eng, conn).error).code.value == "invalid_query"  # unknown set now


def test_an_update_over_the_message_bound_closes_with_a_reason() -> None:
    eng = measured(max_message=250)
    closed: list[tuple[int, str]] = []
    eng.on_close = lambda c, reason: closed.append((c, reason))
    sub = eng.connect(ADMIN, confirmed=False)
    eng.handle(sub, Subscribe(1, 1, ("SELECT * FROM sync_stream",)))
    writer_conn = eng.connect(ADMIN, confirmed=False)
    eng.max_outbound_message_bytes = 50  # one row (110) is now over it
    call(eng, writer_conn, 2, "append_sync_event", "s2", "k", "{}", None, None)
    assert sub not in eng.conns
    code_reason = next(reason for c, reason in closed if c == sub)
    assert code_reason.startswith("1008: limit_exceeded: ")
    assert limit_of(code_reason[len("1008: "):])[0] == "max_outbound_message_bytes"


def test_bytes_queued_for_a_connection_are_bounded() -> None:
    eng = measured(max_message=10_000, max_bytes=1000)
    sub = eng.connect(ADMIN, confirmed=False)
    eng.handle(sub, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
    eng.pop(sub)
    writer_conn = eng.connect(ADMIN, confirmed=False)
    for i in range(8):  # 8 updates of 110: 880
        call(eng, writer_conn, i + 1, "append_sync_event", "s", f"k{i}", "{}", None, None)
    assert eng.conns[sub].outbound_bytes == 880 and eng.next_size(sub) == 110
    eng.pop(sub)
    assert eng.conns[sub].outbound_bytes == 770
    for i in range(8, 10):
        call(eng, writer_conn, i + 1, "append_sync_event", "s", f"k{i}", "{}", None, None)
    assert eng.conns[sub].outbound_bytes == 990  # at most 1000: still served
    call(eng, writer_conn, 99, "append_sync_event", "s", "k99", "{}", None, None)
    assert sub not in eng.conns  # 1100, past 1000 bytes: a slow consumer


# --- matching cost ------------------------------------------------------------------------------------


def test_subscriptions_pinned_to_other_streams_cost_an_insert_nothing() -> None:
    eng = Engine()
    hostile = eng.connect(ADMIN, confirmed=False)
    chain = " AND ".join(f"committed_at > {i}" for i in range(30))
    for k in range(40):
        eng.handle(hostile, Subscribe(k, k, (f"SELECT * FROM sync_event WHERE {chain} AND stream_id = 'h{k}'",)))
    me = eng.connect(ADMIN, confirmed=False)
    before = eng.match_checks
    call(eng, me, 1, "append_sync_event", "mine", "k", "{}", None, None)
    assert eng.match_checks == before  # no shape was even looked at
    eng.handle(me, Subscribe(50, 50, ("SELECT * FROM sync_event WHERE stream_id = 'mine'",)))
    eng.handle(me, Subscribe(51, 51, ("SELECT * FROM sync_event WHERE committed_at > 0",)))
    before = eng.match_checks
    call(eng, me, 2, "append_sync_event", "mine", "k2", "{}", None, None)
    assert eng.match_checks == before + 2  # its own pinned shape and the unpinned one, one row each
    assert q.Op.EQ is eng.shapes_by_pin["sync_event"]["h0"][next(iter(eng.shapes_by_pin["sync_event"]["h0"]))
                                                            ].probe.where[0].op  # type: ignore[union-attr]


def brute_force(queries: dict[tuple[int, int], list[q.Query]], inserted: list[Any]) -> dict[tuple[int, int], list[Any]]:
    """Which inserted rows each (connection, query set) should hear of: every query tried on every
    row in transaction order (no index, no shape sharing)."""
    out: dict[tuple[int, int], list[Any]] = {}
    for key, qs in queries.items():
        rows = [row for row in inserted
                if any(TABLE_BY_ROW_TYPE[type(row)].name == query.table and q.matches(query, row) for query in qs)]
        if rows:
            out[key] = rows
    return out


def test_indexed_fanout_delivers_what_brute_force_says() -> None:
    """A second opinion on the by-stream index and the equality-first order: random pinned,
    unpinned and reordered queries over random appends, against trying every query on every row."""
    rnd = random.Random(7)
    for _round in range(20):
        eng = Engine()
        streams = ["a", "b", "c"]
        registered: dict[tuple[int, int], list[q.Query]] = {}
        conns = [eng.connect(ADMIN, confirmed=False) for _ in range(3)]
        for conn in conns:
            for qs in range(rnd.randint(1, 4)):
                texts = []
                for _ in range(rnd.randint(1, 2)):
                    parts = rnd.sample([f"stream_id = '{rnd.choice(streams)}'", f"tx_offset > {rnd.randint(0, 3)}",
                                        f"tx_offset <= {rnd.randint(1, 6)}", "epoch = 1",
                                        f"idempotency_key = 'k{rnd.randint(0, 5)}'"], rnd.randint(0, 3))
                    table = rnd.choice(["sync_event", "sync_stream"])
                    parts = [p for p in parts if table == "sync_event" or p.startswith("stream_id")]
                    texts.append(f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(parts) if parts else ""))
                eng.handle(conn, Subscribe(qs, qs, tuple(texts)))
                assert isinstance(last(eng, conn), SubscribeApplied), last(eng, conn)
                registered[(conn, qs)] = [x for text in texts for x in q.parse(text)]
        for conn in conns:
            eng.conns[conn].outbound.clear()
            eng.conns[conn].sizes.clear()
        writer_conn = eng.connect(ADMIN, confirmed=False)
        for i in range(6):
            stream = rnd.choice(streams)
            offset = eng.committed + 1
            call(eng, writer_conn, i + 1, "append_sync_event", stream, f"k{i}", "{}", None, None)
            tx_rows = [row for change in eng.pending_records[-1].changes for row in change.inserts]
            expected = brute_force(registered, tx_rows)
            got: dict[tuple[int, int], list[Any]] = {}
            for conn in conns:
                for out in eng.conns[conn].outbound:
                    if isinstance(out.message, TransactionUpdate) and out.message.tx_offset == offset:
                        for qsu in out.message.query_sets:
                            got[(conn, qsu.query_set_id)] = [row for t in qsu.tables for row in t.inserts]
            assert {k: sorted(map(repr, v)) for k, v in got.items()} == \
                {k: sorted(map(repr, v)) for k, v in expected.items()}



def test_row_filter_shared_per_claims_value_matches_a_per_subscriber_filter() -> None:
    """ADR-0014: the fanout runs the row filter once per filter key (for stream rows: the grants)
    and hands subscribers with the same key the same objects.  Second opinion: each subscriber's
    own filter, the grant rule written out by hand (exact id, or a prefix before a trailing ``*``),
    on unpinned queries over appends to several streams; subscribers with the same grants (other
    identities, distinct claims objects) get the identical update."""
    def granted(grants: tuple[str, ...], sid: str) -> bool:
        return any(g == sid or (g.endswith("*") and sid.startswith(g[:-1])) for g in grants)

    grant_sets = [("a",), ("a",), ("b*",), ("*",), ("ab",), (), ("a", "b")]
    eng = Engine()
    subs = []
    for i, grants in enumerate(grant_sets):
        claims = Claims(f"{i:064x}", frozenset(SCOPES), tuple(grants))  # every subscriber its own identity
        conn = eng.connect(claims, confirmed=False)
        eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM sync_event", "SELECT * FROM sync_stream")))
        assert isinstance(last(eng, conn), SubscribeApplied), last(eng, conn)
        eng.conns[conn].outbound.clear()
        eng.conns[conn].sizes.clear()
        subs.append((conn, grants))
    w = eng.connect(ADMIN, confirmed=False)
    for i, stream in enumerate(["a", "b", "ab", "bx", "a", "c"]):
        offset = eng.committed + 1
        call(eng, w, i + 1, "append_sync_event", stream, f"k{i}", "{}", None, None)
        rows = [row for change in eng.pending_records[-1].changes for row in change.inserts]
        updates: dict[tuple[Any, ...], list[Any]] = {}
        for conn, grants in subs:
            got = [out.message for out in eng.conns[conn].outbound
                   if isinstance(out.message, TransactionUpdate) and out.message.tx_offset == offset]
            seen = [row for u in got for qsu in u.query_sets for t in qsu.tables for row in t.inserts]
            expected = [row for row in rows if granted(grants, row.stream_id)]
            assert sorted(map(repr, seen)) == sorted(map(repr, expected)), (grants, stream)
            if got:
                updates.setdefault(grants, []).append(got[0])
        for same in updates.values():
            assert all(u is same[0] for u in same)  # same grants: one object, encoded once
        assert len(updates.get(("a",), [])) in (0, 2)


def test_planted_isolation_bugs_are_caught() -> None:
    """Each planted bug in the guarantees above (support/isolation_mutants.py) fails this file."""
    from support.isolation_mutants import ISOLATION_MUTANTS
    from support.mutants import run_in_subprocesses

    results = run_in_subprocesses("support.isolation_mutants", [m.name for m in ISOLATION_MUTANTS], 0,
                                  "isolation_mutants.json")
    survivors = [r["mutant"] if "error" not in r else f"{r['mutant']} (did not run: {str(r['error'])[-300:]})"
                 for r in results if not r["killed"]]
    assert not survivors, f"isolation mutants not caught: {survivors} ({results})"


# (name, scope, texts the connection holds in set 1 (-1: SELECT * FROM *), the Subscribe's set id, its
# text count, expected)
# expected: ("limit", actual) -- limit_exceeded naming the bound 8 -- ("scope",) or ("closed",)
OVERLONG_CASES: list[tuple[str, bool, int, int, int, tuple[Any, ...]]] = [
    ("fresh, one over", True, 0, 2, 9, ("limit", 9)),
    ("fresh, far over", True, 0, 2, 100_000, ("limit", 100_000)),
    ("three held: the held ones count", True, 3, 2, 9, ("limit", 12)),
    ("full: eight held", True, 8, 2, 9, ("limit", 17)),
    ("the held set's id again: closed before any count", True, 3, 1, 9, ("closed",)),
    ("the full set's id again: closed", True, 8, 1, 50, ("closed",)),
    ("no scope: the scope before the count", False, 0, 2, 9, ("scope",)),
    ("set id 0, u32 max request id", True, 0, 0, 9, ("limit", 9)),
    ("one text held, five queries: queries count, not texts", True, -1, 2, 9, ("limit", 14)),
]


@pytest.mark.parametrize("case", OVERLONG_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("path", ["handle", "refuse_overlong"])
def test_an_overlong_set_is_answered_by_the_table(case: tuple[str, bool, int, int, int, tuple[Any, ...]],
                                                  path: str) -> None:
    """``refuse_overlong`` (the texts never decoded) and ``handle`` (the texts decoded, here not even
    SQL: the count is checked before any parse) both answer as this table says: a reused active set
    id closes the connection first, then the scope, then ``limit_exceeded`` with ``actual`` = the
    queries held + the set's count; the ids echoed; nothing else queued; the connection's sets as
    they were, and its next ``Subscribe`` applied as on any connection."""
    _, scope, held, qs, count, expected = case
    eng, _ = limited()
    claims = ADMIN if scope else Claims("d" * 64, frozenset(), ("*",))
    conn = eng.connect(claims, confirmed=False)
    held_texts = tuple(f"SELECT * FROM sync_stream WHERE stream_id = 'h{i}'" for i in range(held))
    if held < 0:  # (-1: one text that is one query per table, five of them)
        held_texts = ("SELECT * FROM *",)
    if held:
        eng.handle(conn, Subscribe(1, 1, held_texts))
        assert isinstance(last(eng, conn), SubscribeApplied)
    before = (len(eng.conns[conn].outbound), dict(eng.conns[conn].query_sets))
    closed: list[str] = []
    eng.on_close = lambda _c, reason: closed.append(reason)
    rid = 2**32 - 1
    if path == "handle":
        eng.handle(conn, Subscribe(rid, qs, ("not a query",) * count))
    else:
        eng.refuse_overlong(conn, rid, qs, count)
    if expected[0] == "closed":
        assert conn not in eng.conns and len(closed) == 1
        assert f"query set {qs} is already active" in closed[0]
        return
    assert not closed and len(eng.conns[conn].outbound) == before[0] + 1
    answer = last(eng, conn)
    assert isinstance(answer, SubscriptionError) and (answer.request_id, answer.query_set_id) == (rid, qs)
    if expected[0] == "scope":
        err = SyncError.parse(answer.error)
        assert (err.code.value, err.details) == ("missing_scope", {"scope": "sync.subscribe"})
    else:
        assert limit_of(answer.error) == ("max_queries_per_connection", 8, expected[1])
    assert dict(eng.conns[conn].query_sets) == before[1]
    if scope and held < 8:
        eng.handle(conn, Subscribe(5, 5, ("SELECT * FROM sync_stream WHERE stream_id = 'next'",)))
        assert isinstance(last(eng, conn), SubscribeApplied)


def test_resume_queries_are_not_counted_against_max_scan_rows_in_a_set_of_several() -> None:
    """docs/protocol.md "Limits", ``max_scan_rows``: a resume query's rows are not counted
    (``replay_budget`` bounds them).  That held only for a set with one ``sync_event`` query (the
    fast path); a set resuming two streams (legal: any number of queries per set) had each resume's
    slice counted, so a client resuming two streams in one set, each within its replay budget, was
    refused ``limit_exceeded`` -- and the same set's dropped rows on ``Unsubscribe`` likewise.
    Oracle: the rows appended (n per stream, both within the default replay budget)."""
    eng = Engine()
    n = 30
    eng.max_scan_rows = n  # one stream's slice fits, the two together do not
    conn = eng.connect(ADMIN, confirmed=False)
    for sid in ("ra", "rb"):
        for i in range(n):
            assert isinstance(call(eng, conn, i + 1, "append_sync_event", sid, f"k{i}", "{}", None, None).outcome,
                              ReducerOk)
    resume = tuple(f"SELECT * FROM sync_event WHERE stream_id = '{sid}' AND epoch = 1 AND seq > 0"
                   for sid in ("ra", "rb"))
    eng.handle(conn, Subscribe(1, 1, resume))
    applied = last(eng, conn)
    assert isinstance(applied, SubscribeApplied), applied
    assert sum(len(t.inserts) for t in applied.rows) == 2 * n
    eng.handle(conn, Unsubscribe(2, 1, send_dropped=True))
    dropped = last(eng, conn)
    assert isinstance(dropped, UnsubscribeApplied), dropped
    assert dropped.rows is not None and sum(len(t.inserts) for t in dropped.rows) == 2 * n
    # a query that is not a resume (a whole stream) still counts its stream's rows: over the bound together
    plain = tuple(f"SELECT * FROM sync_event WHERE stream_id = '{sid}'" for sid in ("ra", "rb"))
    eng.handle(conn, Subscribe(3, 3, plain))
    assert limit_of(last(eng, conn).error) == ("max_scan_rows", n, 2 * n)
