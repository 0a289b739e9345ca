"""``max_scan_rows`` counts the rows the caller can read (docs/protocol.md "Limits",
``max_scan_rows``; docs/performance.md "max_scan_rows: what is counted, and when"): for an
unpinned read of every table whose visibility depends on the caller -- ``sync_stream`` and
``sync_event`` under exact and ``prefix*`` grants, ``sync_checkpoint`` (its owner) and
``compute_assignment`` (its requester and provider owner, or every row for ``compute.assign``) --
the count is the number of rows ``can_read`` lets through, not the table's, so a request is refused
only when the caller's own share is over the bound.

Oracle: SQLite over the same rows (each table's rows copied into an in-memory table; what the
caller may read is written as SQL: ``stream_id IN (...)`` or ``substr(stream_id, 1, length(p)) =
p`` per grant, ``owner = ?``, ``requester = ? OR provider_owner = ?``), never the engine's
indexes.  Each case runs at the bound equal to the oracle's count (accepted: the rows examined are
exactly that many and the rows those SQLite gives) and one below it (refused with ``actual`` =
that count).  The planted bugs of ``ENGINE_MUTANTS`` named ``scan_count_*`` are killed by this
file (tests/reference/test_engine_mutants.py)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator

import pytest

from reference import snapshot
from reference.db import Txn
from reference.engine import Engine
from reference.log import GENESIS
from spec.auth import Claims
from spec.errors import SyncError
from spec.messages import CallReducer, Subscribe, SubscribeApplied, SubscriptionError
from spec.schema import SCOPES, TABLE_BY_NAME
from spec.values import ComputeAssignment, Row, SyncCheckpoint, SyncEvent, SyncStream

A, B, C, D, E = ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64)  # E owns nothing
STREAMS = {"a": 2, "ab": 3, "abc": 1, "b": 4, "b.x": 2, "b.y": 5, "c.1": 3, "ca": 1}  # id: events
CHECKPOINTS = {A: ("a", "ab", "b"), B: ("b.x",), C: ("c.1", "b", "a")}  # owner: streams acked
REQUESTS = {"r1": A, "r2": A, "r3": A, "r4": B, "r5": C}  # request: requester
ASSIGNED = ("r2", "r4", "r5")  # to provider p1, owned by C (r5: C is requester and provider owner)
NO_ASSIGN = frozenset(SCOPES) - {"compute.assign"}

GRANTS: tuple[tuple[str, ...], ...] = (
    ("a*",), ("ab*", "b"), ("a*", "ab*"), ("b.*", "a"), ("a", "abc", "zz"), ("*",), ("a*", "b*"),
    ("q*",), (), ("ab", "a*"), ("abc", "ab*", "c*"), ("b", "b"), ("c.1", "b.*", "ca*", "nope*"),
    ("zz", "*", "a"),
    # more prefixes than stream ids (9 logs, 8 stream rows): each id checked against the grants
    ("a*", "ab*", "b.*", "ca*", "d*", "e*", "f*", "g*", "h*", "i*", "j*", "c.1", "abc"),
    ("b", "zz", *(f"q{i}*" for i in range(10))),
)


@pytest.fixture(scope="module", params=["live", "restored", "replayed"])
def eng(request: pytest.FixtureRequest) -> Engine:
    """The rows above, written by the reducers, with unpinned reads between the writes (so the
    engine's indexes are read, then written again: every append updates its stream's row, and a
    rolled-back transaction creates and removes a stream); "restored": the same rows in an engine
    whose db is a snapshot's restore (reference/snapshot.py: every index rebuilt); "replayed": an
    engine recovered from the commit log after an unclean stop (Engine.recover: each record's
    delta applied again, then the recovery transaction that moves every stream, checkpoint and
    assignment row)."""
    e = Engine()
    conns = {who: e.connect(Claims(who, frozenset(SCOPES), ("*",)), confirmed=False) for who in (A, B, C, D)}
    n = 0

    def call(who: str, reducer: str, *args: object) -> None:
        nonlocal n
        n += 1
        before = e.committed
        e.handle(conns[who], CallReducer(n, reducer, args))
        assert e.committed == before + 1, (reducer, args)  # a refused call commits nothing

    readers = [Claims(E, NO_ASSIGN, grants) for grants in GRANTS]
    for turn in range(max(STREAMS.values())):  # round by round: each stream's row is updated after a read
        for sid, count in STREAMS.items():
            if turn < count:
                call(D, "append_sync_event", sid, f"k{n}", '{"n":1}', None, None)
        for claims in readers:
            e.query(claims, "SELECT * FROM sync_stream")
            e.query(claims, "SELECT * FROM sync_event")
        tx = Txn(e.db)  # a stream created and rolled back (as by a reducer that fails after writing)
        tx.insert(SyncStream("ab.rolled", "default", 1, 0, 0, 1, 1, 10, 1, 1))
        tx.insert(SyncEvent("ab.rolled", 1, 1, "k", "h", "{}", D, 1, 1))
        tx.rollback()
    for who, sids in CHECKPOINTS.items():
        for sid in sids:
            call(who, "ack_checkpoint", f"client-{who[0]}", sid, 1, 1)  # ids: client|stream
    call(C, "publish_provider_capability", "p1", '{"c":1}', (5001,), 1, "active")
    for rid, who in REQUESTS.items():
        call(who, "open_compute_assignment", rid, 5001, '{"r":1}')
    for rid in ASSIGNED:
        for claims in (Claims(C, NO_ASSIGN, ()), Claims(A, NO_ASSIGN, ())):
            e.query(claims, "SELECT * FROM compute_assignment")
        row = e.db.get("compute_assignment", (rid,))
        assert isinstance(row, ComputeAssignment)
        call(D, "update_compute_assignment", rid, row.version, "assigned", "p1", None)
    e.advance_durable(e.committed)
    if request.param == "restored":
        e.db = snapshot.restore(snapshot.capture(e.db, e.committed, GENESIS))
    elif request.param == "replayed":  # every record applied again, then an unclean restart's recovery
        e = Engine.recover(e.take_records(), False, e.now)
        assert e.committed == n + 1  # every call committed one record, and the recovery one more
    assigned = [r for r in e.db.rows("compute_assignment") if isinstance(r, ComputeAssignment) and r.provider_owner]
    assert sorted(r.request_id for r in assigned) == list(ASSIGNED) and {r.provider_owner for r in assigned} == {C}
    assert sum(1 for _ in e.db.rows("sync_checkpoint")) == 7
    return e


def _sqlite(eng: Engine, table: str) -> sqlite3.Connection:
    """The table's rows in SQLite: the key (repr of the row) and the columns the row filter reads."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (row TEXT, stream_id TEXT, owner TEXT, requester TEXT, provider_owner TEXT)")
    for row in eng.db.rows(table):
        db.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", (
            repr(row), getattr(row, "stream_id", None), getattr(row, "owner", None),
            getattr(row, "requester", None), getattr(row, "provider_owner", None)))
    return db


def _readable_sql(table: str, claims: Claims) -> tuple[str, list[object]]:
    """The WHERE clause (and its parameters) of the rows ``claims`` may read, written from the
    docs' rules (DESIGN §4, Visibility), not from the engine."""
    if table in ("sync_stream", "sync_event"):
        exact = [g for g in claims.streams if not g.endswith("*")]
        prefixes = [g[:-1] for g in claims.streams if g.endswith("*")]
        parts = ["stream_id IN (" + ",".join("?" * len(exact)) + ")"] if exact else []
        parts += ["substr(stream_id, 1, length(?)) = ?"] * len(prefixes)
        return " OR ".join(parts) or "0", [*exact, *(x for p in prefixes for x in (p, p))]
    if table == "sync_checkpoint":
        return "owner = ?", [claims.identity]
    assert table == "compute_assignment"
    return "requester = ? OR provider_owner = ? OR ?", [claims.identity, claims.identity,
                                                        "compute.assign" in claims.scopes]


def _want(eng: Engine, table: str, claims: Claims) -> list[str]:
    where, params = _readable_sql(table, claims)
    return sorted(r for (r,) in _sqlite(eng, table).execute(f"SELECT row FROM t WHERE {where}", params))


def _cases() -> Iterator[tuple[str, Claims]]:
    for grants, table in itertools.product(GRANTS, ("sync_stream", "sync_event")):
        yield table, Claims(E, NO_ASSIGN, grants)
    for who in (A, B, C, E):
        yield "sync_checkpoint", Claims(who, NO_ASSIGN, ("*",))
    for who, scopes in itertools.product((A, B, C, E), (NO_ASSIGN, frozenset(SCOPES))):
        yield "compute_assignment", Claims(who, scopes, ())


CASES = list(_cases())


def _id(case: tuple[str, Claims]) -> str:
    table, claims = case
    assign = "assign" if "compute.assign" in claims.scopes else ""
    return f"{table}-{claims.identity[0]}-{assign}-{','.join(claims.streams)}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_an_unpinned_read_counts_the_rows_the_caller_can_read(eng: Engine, case: tuple[str, Claims]) -> None:
    table, claims = case
    want = _want(eng, table, claims)
    text = f"SELECT * FROM {table}"
    for bound in (len(want), len(want) - 1):
        if bound < 0:
            continue
        eng.max_scan_rows = bound
        before = eng.rows_examined
        if bound < len(want):
            with pytest.raises(SyncError) as err:
                eng.query(claims, text)
            assert err.value.details == {"actual": len(want), "limit": "max_scan_rows", "max": bound}
            conn = eng.connect(claims, confirmed=False)
            eng.handle(conn, Subscribe(1, 1, (text,)))
            refused = eng.pop(conn).message
            assert isinstance(refused, SubscriptionError) and "max_scan_rows" in refused.error, refused
            eng.close(conn)
        else:
            got = eng.query(claims, text).inserts
            assert (eng.rows_examined - before, sorted(map(repr, got))) == (len(want), want)
            conn = eng.connect(claims, confirmed=False)
            eng.handle(conn, Subscribe(1, 1, (text,)))
            applied = eng.pop(conn).message
            assert isinstance(applied, SubscribeApplied)
            assert sorted(repr(r) for t in applied.rows for r in t.inserts) == want
            eng.close(conn)


def test_the_cases_cover_what_they_claim(eng: Engine) -> None:
    """The table of cases is not vacuous: for each table some case reads fewer rows than the
    table holds and more than none, some case reads none, and some reads the whole table."""
    for table in ("sync_stream", "sync_event", "sync_checkpoint", "compute_assignment"):
        whole = sum(1 for _ in eng.db.rows(table))
        counts = {len(_want(eng, t, c)) for t, c in CASES if t == table}
        everyone = whole in counts or table == "sync_checkpoint"  # (a checkpoint is read by its owner only)
        assert 0 in counts and everyone and any(0 < n < whole for n in counts), (table, counts)
    assert all(TABLE_BY_NAME[t].visibility.value in ("stream_grant", "owner", "compute") for t, _ in CASES)
    rows: list[Row] = list(eng.db.rows("sync_checkpoint"))
    assert {r.owner for r in rows if isinstance(r, SyncCheckpoint)} == {A, B, C}


@pytest.mark.parametrize("table", ["sync_stream", "sync_event"])
def test_more_prefix_grants_than_stream_ids_cost_a_step_per_stream_id(monkeypatch: pytest.MonkeyPatch,
                                                                      table: str) -> None:
    """A read finds a ``prefix*`` grant's streams by a range of the sorted stream ids (two binary
    searches per prefix) -- or, when the caller holds more prefixes than the table has stream ids,
    by checking each id against the indexed grants (one binary search of the prefixes each): a
    16 KiB token's 2,378 prefix grants made a 64-query Subscribe of a 10-stream table hold the loop
    ~46 ms (1.2 ms before the ranges), 2 x 2,378 x 64 binary searches for 10 ids.  Counted: the
    ranges looked up and the ids checked (at most the stream ids, 4 here, not the 101 prefixes);
    the rows and their count by hand (stream s1: its row, its 2 events)."""
    import reference.engine as engine_module

    e = Engine()
    conn = e.connect(Claims(D, frozenset(SCOPES), ("*",)), confirmed=False)
    for n, sid in enumerate(("s0", "s1", "s1", "s2", "s3")):
        e.handle(conn, CallReducer(n + 1, "append_sync_event", (sid, f"k{n}", '{"n":1}', None, None)))
    steps = [0]
    real_count, real_covers = engine_module.count_prefix, engine_module._Grants.covers

    def count_prefix(keys: list[str], prefix: str) -> tuple[int, int]:
        steps[0] += 1
        return real_count(keys, prefix)

    def covers(self: object, stream_id: str) -> bool:
        steps[0] += 1
        return real_covers(self, stream_id)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module, "count_prefix", count_prefix)
    monkeypatch.setattr(engine_module._Grants, "covers", covers)
    claims = Claims(E, NO_ASSIGN, (*(f"z{i:03d}*" for i in range(100)), "s1*"))
    before = e.rows_examined
    got = e.query(claims, f"SELECT * FROM {table}").inserts
    assert sorted((r.stream_id, getattr(r, "seq", 0)) for r in got) == (  # type: ignore[attr-defined]
        [("s1", 1), ("s1", 2)] if table == "sync_event" else [("s1", 0)])
    assert e.rows_examined - before == len(got)
    assert steps[0] <= 2 * 4, steps[0]  # the row filter's look at each row returned, and one per stream id
