"""A query that pins a table's primary key with ``=`` reads the one row of that key
(``Engine._candidates``), not the whole table: a resume set's ``sync_stream`` query read every
stream's row.  The oracle is the spec's own evaluation over the whole table (``spec.query.evaluate``
of ``Db.rows``, filtered by ``can_read``), for one-off reads and for subscription snapshots."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reference.engine import Engine
from spec import contracts
from spec import query as q
from spec.auth import Claims, can_read
from spec.errors import SyncError
from spec.messages import CallReducer, Subscribe, SubscribeApplied, SubscriptionError
from spec.schema import BRIDGE_SCOPES, SCOPES
from spec.values import Row

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
SOME = Claims("b" * 64, frozenset(SCOPES), ("s1", "s3"))  # may read two of the streams

TEXTS = [
    "SELECT * FROM sync_stream WHERE stream_id = 's3'",
    "SELECT * FROM sync_stream WHERE stream_id = 'nope'",
    "SELECT * FROM sync_stream WHERE stream_id = 's3' AND stream_id = 's4'",
    "SELECT * FROM sync_stream WHERE stream_id = 's3' AND stream_id = 's3'",
    "SELECT * FROM sync_stream WHERE stream_id = 's3' AND head_seq > 2",
    "SELECT * FROM sync_stream WHERE head_seq > 2 AND stream_id = 's2'",
    "SELECT * FROM sync_stream WHERE stream_id = 's2' AND head_seq > 100",
    "SELECT * FROM sync_stream WHERE stream_id > 's2'",
    "SELECT * FROM sync_stream",
    "SELECT * FROM sync_checkpoint WHERE checkpoint_id = 'c1'",
]


def _engine() -> Engine:
    eng = Engine()
    c = eng.connect(ALL, confirmed=False)
    n = 0
    for i in range(6):
        for _ in range(i + 1):  # stream s{i} has head_seq i + 1
            n += 1
            eng.handle(c, CallReducer(n, "append_sync_event", (f"s{i}", f"k{n}", '{"n":1}', None, None)))
    eng.advance_durable(eng.committed)
    return eng


def _oracle(eng: Engine, claims: Claims, text: str) -> tuple[object, ...]:
    (query,) = q.parse(text)
    return tuple(row for row in q.evaluate(query, list(eng.db.rows(query.table))) if can_read(claims, row))


@pytest.mark.parametrize("text", TEXTS)
def test_a_one_off_read_gives_the_whole_table_s_matches(text: str) -> None:
    eng = _engine()
    for claims in (ALL, SOME):
        if ("'s2'" in text or "'s4'" in text or "'nope'" in text) and claims is SOME:
            continue  # pinned to a stream it has no grant for: refused before any read
        assert eng.query(claims, text).inserts == _oracle(eng, claims, text)
    assert len(_oracle(eng, ALL, TEXTS[0])) == 1 and _oracle(eng, ALL, TEXTS[1]) == ()


def test_a_subscription_snapshot_of_several_point_reads_is_the_union_in_order() -> None:
    eng = _engine()
    texts = ("SELECT * FROM sync_stream WHERE stream_id = 's4'", "SELECT * FROM sync_stream WHERE stream_id > 's2'",
             "SELECT * FROM sync_stream WHERE stream_id = 's1'", "SELECT * FROM sync_stream WHERE stream_id = 'none'")
    c = eng.connect(ALL, confirmed=False)
    eng.handle(c, Subscribe(1, 1, texts))
    msg = eng.pop(c).message
    assert isinstance(msg, SubscribeApplied)
    want: dict[object, None] = {}
    for text in texts:
        want.update(dict.fromkeys(_oracle(eng, ALL, text)))
    (table,) = msg.rows
    assert table.table == "sync_stream" and table.inserts == tuple(want) and len(want) == 4


def test_a_point_read_does_not_scan_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = _engine()
    c = eng.connect(ALL, confirmed=False)
    scanned: list[str] = []
    real = eng.db.rows

    def rows(table: str) -> Iterator[Row]:
        scanned.append(table)
        return real(table)

    monkeypatch.setattr(eng.db, "rows", rows)
    was = contracts.hot_enabled()
    contracts.enable_hot(False)  # (the engine's checks, when on, read whole tables themselves)
    try:
        for text in TEXTS[:7] + TEXTS[9:]:
            eng.query(ALL, text)
        eng.handle(c, Subscribe(1, 1, ("SELECT * FROM sync_stream WHERE stream_id = 's1'",
                                       "SELECT * FROM sync_event WHERE stream_id = 's1' AND epoch = 1 AND seq > 0")))
        assert isinstance(eng.pop(c).message, SubscribeApplied)
        assert scanned == []
        eng.query(ALL, TEXTS[7])  # not pinned with =: the whole table
        assert scanned == ["sync_stream"]
    finally:
        contracts.enable_hot(was)


def _sorted(rows: object) -> list[str]:
    return sorted(map(repr, rows))  # type: ignore[call-overload]


def test_exact_stream_grants_count_only_the_granted_streams_rows() -> None:
    """docs/protocol.md "Limits", ``max_scan_rows``: a caller whose stream grants are all exact ids
    can receive rows of ``sync_event``/``sync_stream`` from those streams only, so an unpinned query
    reads (and counts) those streams' rows, not the whole table: such a caller was refused
    ``limit_exceeded`` for a table other streams had filled (prefix grants: the next test).
    Oracle: the spec's evaluation over the whole table filtered by ``can_read``, and the counts by
    hand (3 + 5 rows of the granted streams, 20 of the other)."""
    eng = _three_streams(10)
    exact = Claims("c" * 64, frozenset(SCOPES), ("x", "mine", "x", "gone"))  # in any order, repeated, unknown
    everything = "SELECT * FROM sync_event"
    before = eng.rows_examined
    got = eng.query(exact, everything).inserts
    assert eng.rows_examined - before == 8
    want = _oracle(eng, exact, everything)
    assert len(want) == 8 and len(got) == 8 and _sorted(got) == _sorted(want)
    assert {r.stream_id for r in got} == {"mine", "x"}  # type: ignore[union-attr]

    s = eng.connect(exact, confirmed=False)
    eng.handle(s, Subscribe(1, 1, (everything, "SELECT * FROM sync_stream")))  # 8 + 2 rows: at the bound
    applied = eng.pop(s).message
    assert isinstance(applied, SubscribeApplied)
    by_table = {t.table: t.inserts for t in applied.rows}
    assert _sorted(by_table["sync_event"]) == _sorted(want)
    assert _sorted(by_table["sync_stream"]) == _sorted(_oracle(eng, exact, "SELECT * FROM sync_stream"))
    assert len(by_table["sync_stream"]) == 2

    for claims, actual in ((Claims("d" * 64, frozenset(SCOPES), ("mine", "other")), 23), (ALL, 28)):
        with pytest.raises(SyncError) as err:
            eng.query(claims, everything)
        assert (err.value.code.value, err.value.details) == (
            "limit_exceeded", {"actual": actual, "limit": "max_scan_rows", "max": 10})


def _three_streams(bound: int) -> Engine:
    eng = Engine()
    c = eng.connect(ALL, confirmed=False)
    n = 0
    for sid, count in (("other", 20), ("mine", 3), ("x", 5)):
        for _ in range(count):
            n += 1
            eng.handle(c, CallReducer(n, "append_sync_event", (sid, f"k{n}", '{"n":1}', None, None)))
    eng.advance_durable(eng.committed)
    eng.max_scan_rows = bound
    return eng


@pytest.mark.parametrize(("grants", "bound", "examined"), [
    (("mi*",), 10, 3),  # mine's 3 rows
    (("a*",), 10, 0),  # no granted stream: nothing
    (("mi*", "x"), 10, 8),  # a prefix and an exact id
    (("mi*", "o*"), 30, 23),
    (("m*", "o*", "x*"), 30, 28),  # every stream
    (("mi*",), 2, 3),  # over the bound by its own rows only (the walk of the stream ids counted 28)
    (("mi*", "mine"), 2, 3),  # an exact id the prefix covers: counted once
])
def test_prefix_stream_grants_count_the_granted_rows(grants: tuple[str, ...], bound: int, examined: int) -> None:
    """A ``prefix*`` grant's streams are found in the sorted stream ids (a range per prefix, two
    binary searches), so only the granted streams' rows are counted: before, each stream id was
    walked and counted as one examined row, and the walk fell back to the whole table when the ids
    were over the bound.  Tables of counts by hand: streams other (20 rows), mine (3), x (5); the
    rows read are the spec's evaluation over the whole table filtered by ``can_read``
    (tests/reference/test_scan_counts.py: the same for every stream-granted, owned and compute
    table, against SQLite)."""
    eng = _three_streams(bound)
    claims = Claims("e" * 64, frozenset(SCOPES), grants)
    everything = "SELECT * FROM sync_event"
    want = _oracle(eng, claims, everything)
    before = eng.rows_examined
    if examined > bound:
        with pytest.raises(SyncError) as err:
            eng.query(claims, everything)
        assert err.value.details == {"actual": examined, "limit": "max_scan_rows", "max": bound}
    else:
        got = eng.query(claims, everything).inserts
        assert len(got) == len(want) and _sorted(got) == _sorted(want)
        assert eng.rows_examined - before == examined


def test_a_caller_without_a_bridge_scope_examines_no_outbox_row() -> None:
    """``bridge_outbox`` rows are visible to holders of a bridge scope only, to all of them or to
    none of a caller's: a caller without one reads (and counts) nothing of it."""
    eng = Engine()
    c = eng.connect(ALL, confirmed=False)
    for i in range(12):
        eng.handle(c, CallReducer(i + 1, "enqueue_bridge_event", (f"o{i}", "src", 30078, "[]", f"hi {i}")))
    eng.advance_durable(eng.committed)
    eng.max_scan_rows = 10
    plain = Claims("f" * 64, frozenset(SCOPES) - BRIDGE_SCOPES, ("*",))
    text = "SELECT * FROM bridge_outbox"
    assert len(_oracle(eng, ALL, text)) == 12 and _oracle(eng, plain, text) == ()
    before = eng.rows_examined
    assert eng.query(plain, text).inserts == ()
    assert eng.rows_examined == before
    with pytest.raises(SyncError) as err:
        eng.query(ALL, text)
    assert err.value.details == {"actual": 12, "limit": "max_scan_rows", "max": 10}


@pytest.mark.parametrize(("text", "claims", "examined", "built_rows"), [
    ("SELECT * FROM sync_event", ALL, 28, 28),  # the whole table
    # one stream's log (or its slice after a seq), granted: its frozen view is the answer, no row
    # built by the read (the wire encodes it from the columns; ADR-0038)
    ("SELECT * FROM sync_event WHERE stream_id = 'other'", ALL, 20, 0),
    ("SELECT * FROM sync_event WHERE stream_id = 'other' AND seq > 4", ALL, 16, 0),  # its slice after seq 4
    ("SELECT * FROM sync_event WHERE stream_id = 'other' AND seq >= 4", ALL, 17, 0),
    ("SELECT * FROM sync_event WHERE stream_id = 'other' AND seq >= 0", ALL, 20, 0),
    # rows matched: the slice 4..8 only, cut at the upper bound (ADR-0042; 17, seqs 4..20, before)
    ("SELECT * FROM sync_event WHERE stream_id = 'other' AND seq >= 4 AND seq < 9", ALL, 5, 5),
    ("SELECT * FROM sync_event WHERE stream_id = 'other' AND seq <= 3", ALL, 3, 3),
    ("SELECT * FROM sync_event WHERE stream_id = 'other' AND seq > 40", ALL, 0, 0),
    ("SELECT * FROM sync_event", Claims("e" * 64, frozenset(SCOPES), ("o*",)), 20, 20),  # a prefix's range
    ("SELECT * FROM sync_event", Claims("e" * 64, frozenset(SCOPES), ("other", "x")), 25, 25),  # exact grants
])
def test_rows_are_counted_before_any_is_built(monkeypatch: pytest.MonkeyPatch, text: str, claims: Claims,
                                              examined: int, built_rows: int) -> None:
    """``max_scan_rows`` bounds a request's loop hold: rows are counted before they are matched --
    and before they are built (a ``sync_event`` row is built from its log on each read, ~1.4 µs:
    a one-off over a 50,000-event table refused at a bound of 1,000 still took ~70 ms of CPU to build
    every row first, so ~1.4 s at a million).  A request over the bound builds no row; one within
    builds the rows it counted.  Counts by hand (streams other 20 rows, mine 3, x 5)."""
    from reference.eventlog import StreamLog
    built = [0]
    real = StreamLog._event
    snapshot = Engine._snapshot
    in_snapshot = [0]  # builds inside a subscription's snapshot (the engine's SLOW contracts read tables too)

    def counted(self: StreamLog, p: int) -> object:
        built[0] += 1
        return real(self, p)

    def snapshot_counted(self: Engine, *args: object) -> object:
        before = built[0]
        try:
            return snapshot(self, *args)  # type: ignore[arg-type]
        finally:
            in_snapshot[0] += built[0] - before

    monkeypatch.setattr(StreamLog, "_event", counted)
    monkeypatch.setattr(Engine, "_snapshot", snapshot_counted)
    for bound in (examined - 1, examined):
        if bound < 0:
            continue
        eng = _three_streams(bound)
        built[0] = 0
        before = eng.rows_examined
        if bound < examined:
            with pytest.raises(SyncError) as err:
                eng.query(claims, text)
            assert err.value.details == {"actual": examined, "limit": "max_scan_rows", "max": bound}
            assert built[0] == 0
            if "seq" not in text:  # (a subscription bounding seq must be a resume: refused before any read)
                conn = eng.connect(claims, confirmed=False)
                in_snapshot[0] = 0
                eng.handle(conn, Subscribe(1, 1, (text,)))  # a subscription's snapshot likewise
                refused = eng.pop(conn).message
                assert isinstance(refused, SubscriptionError) and "max_scan_rows" in refused.error
                assert in_snapshot[0] == 0
        else:
            got = eng.query(claims, text).inserts
            assert (eng.rows_examined - before, built[0]) == (examined, built_rows)
            assert _sorted(got) == _sorted(_oracle(eng, claims, text))


class _Grant(str):
    """A grant that counts every look at it (compared, hashed, sliced, tested for ``*``)."""

    looks = 0

    def _look(self) -> None:
        _Grant.looks += 1

    def endswith(self, *args: object) -> bool:  # type: ignore[override]
        self._look()
        return str.endswith(self, *args)  # type: ignore[arg-type]

    def startswith(self, *args: object) -> bool:  # type: ignore[override]
        self._look()
        return str.startswith(self, *args)  # type: ignore[arg-type]

    def __getitem__(self, key: object) -> str:  # type: ignore[override]
        self._look()
        return str.__getitem__(self, key)  # type: ignore[index]

    def __eq__(self, other: object) -> bool:
        self._look()
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self._look()
        return str.__ne__(self, other)

    def __hash__(self) -> int:
        self._look()
        return str.__hash__(self)


def _thirty_streams() -> Engine:
    eng = Engine()
    c = eng.connect(ALL, confirmed=False)
    n = 0
    for i in range(30):
        for _ in range(2):
            n += 1
            eng.handle(c, CallReducer(n, "append_sync_event", (f"s{i}", f"k{n}", '{"n":1}', None, None)))
    eng.advance_durable(eng.committed)
    return eng


MANY = 100  # grants in the tokens below (a 16 KiB token holds ~2,400 grants of a few bytes each)


@pytest.mark.parametrize(("grants", "texts"), [
    ((*["zz*"] * (MANY - 1), "*"), ("SELECT * FROM sync_event",)),  # * last: the whole table, every row filtered
    ((*["zz*"] * (MANY - 1), "s1*"), ("SELECT * FROM sync_event",)),  # a prefix range: 11 streams' rows
    ((*["zz*"] * (MANY - 1), "s1*"), ("SELECT * FROM sync_stream",)),  # a prefix: sync_stream whole
    ((*[f"x{i}" for i in range(MANY - 1)], "s1*"), ("SELECT * FROM sync_event WHERE seq = 2",
                                                    "SELECT * FROM sync_stream")),
    ((*[f"x{i}" for i in range(MANY - 1)], "s3"), ("SELECT * FROM sync_event", "SELECT * FROM sync_stream")),
])
def test_a_read_looks_at_each_grant_a_bounded_number_of_times_not_once_per_row(
        grants: tuple[str, ...], texts: tuple[str, ...]) -> None:
    """``max_scan_rows`` bounds the rows a read examines, but the row filter asked every grant of
    the caller about every row (``spec.auth.stream_granted``: one test per grant), and the prefix
    walk every grant about every stream id: a caller with G grants cost G times the bound.  A
    16 KiB token holds ~2,400 grants: measured, a read of 5,000 one-event streams by a token of
    2,400 prefix grants took 1.6 s of CPU, 3.2 s with the walk (so ~30-60 s at the default bound
    of 100,000 rows).  The grants must be looked at a bounded number of times per query (to build
    whatever the filter uses), not once per row.  Counted: every comparison, hash, slice and ``*``
    test of a grant; the rows are the spec's evaluation filtered by ``can_read`` (with plain
    strings)."""
    eng = _thirty_streams()
    plain = Claims("e" * 64, frozenset(SCOPES), grants)
    counted = Claims("e" * 64, frozenset(SCOPES), tuple(_Grant(g) for g in grants))
    was = contracts.hot_enabled()
    contracts.enable_hot(False)  # (a contract may look at grants itself)
    try:
        for text in texts:
            want = _oracle(eng, plain, text)
            before, _Grant.looks = eng.rows_examined, 0
            got = eng.query(counted, text).inserts
            looks, examined = _Grant.looks, eng.rows_examined - before
            assert _sorted(got) == _sorted(want)
            assert looks <= 6 * MANY + examined, (text, looks, examined)
        conn = eng.connect(counted, confirmed=False)
        before, _Grant.looks = eng.rows_examined, 0
        eng.handle(conn, Subscribe(1, 1, texts))
        looks, examined = _Grant.looks, eng.rows_examined - before
        applied = eng.pop(conn).message
        assert isinstance(applied, SubscribeApplied)
        by_table = {t.table: _sorted(t.inserts) for t in applied.rows}
        for text in texts:
            (query,) = q.parse(text)
            assert set(_sorted(_oracle(eng, plain, text))) <= set(by_table.get(query.table, []))
        assert looks <= 6 * MANY * len(texts) + examined, (looks, examined)
    finally:
        contracts.enable_hot(was)


@pytest.mark.parametrize(("grants", "covered", "not_covered"), [
    ((), (), ("a", "", "*")),
    (("*",), ("a", "", "zz.top", "*"), ()),
    (("zz*", "*"), ("a", ""), ()),  # * anywhere
    (("a",), ("a",), ("ab", "", "a.b", "A")),
    (("a*",), ("a", "ab", "a.b", "a*"), ("", "b", "A", "ba")),
    (("a.own*",), ("a.own", "a.owner", "a.own.x"), ("a.ow", "a.o", "b.own")),  # a plain string prefix
    (("a.*", "a.own*", "a.owner"), ("a.", "a.x", "a.owner", "a.own"), ("a", "ab", "b.a")),  # nested prefixes
    (("ab*", "a*"), ("a", "ab", "abc", "a0", "az"), ("b", "")),  # a prefix of another, listed after it
    (("b*", "ab*", "abd*"), ("b", "bz", "ab", "abc", "abd", "abdz"), ("a", "aa", "ac", "abc"[:1], "")),
    (("a.b*", "a.c", "a.bb*"), ("a.b", "a.bb", "a.bc", "a.c"), ("a.a", "a.ca", "a.", "a.d")),
    (("a", "a*b", "**"), ("a", "a*b", "*", "*x"), ("ab", "a*", "b", "")),  # * only counts at the end
    (("", "é*"), ("", "é", "éa"), ("e", "a", "ê")),  # the empty exact id; a non-ASCII prefix
    (("s1*", "s10", "x"), ("s1", "s10", "s19", "s1a", "x"), ("s", "s2", "s20", "x1", "t")),
])
def test_the_indexed_grants_cover_what_each_grant_covers(grants: tuple[str, ...], covered: tuple[str, ...],
                                                         not_covered: tuple[str, ...]) -> None:
    """The engine's index of a caller's grants (``reference.engine._grants``: exact ids in a set,
    prefixes searched by bisection) against a table of cases written by hand from the grant rule
    (docs/protocol.md, DESIGN §4: an exact id, or a plain string prefix ending in ``*``; none
    means no stream), and against ``spec.auth.stream_granted`` (one test per grant) on every
    id of the table and every grant's own text and prefixes."""
    from reference.engine import _grants
    from spec.auth import stream_granted
    index = _grants(grants)
    assert [s for s in covered if not index.covers(s)] == []
    assert [s for s in not_covered if index.covers(s)] == []
    claims = Claims("e" * 64, frozenset(), grants)
    ids = {*covered, *not_covered, *grants, *(g[:k] for g in grants for k in range(len(g) + 1)),
           *(g + "x" for g in grants)}
    assert [s for s in sorted(ids) if index.covers(s) != stream_granted(claims, s)] == []


def test_an_update_looks_at_a_subscriber_s_grants_once_not_once_per_transaction() -> None:
    """The fanout filters each transaction's matched rows once per group of subscribers with the
    same grants (``spec.auth.filter_key``), and the row filter tested every grant of the group: a
    subscriber holding a 16 KiB token's 2,378 grants cost every append ~0.33 ms, so 50 such
    subscribers (distinct grant lists) 17 ms per append against 0.19 ms with two grants each
    (measured, hot contracts off).  A group's grants must be looked at when its plan is built, not
    per transaction.  Oracle: which appends the subscriber is sent, by hand (streams ``s1.*`` are
    granted, ``x`` is not), and the rows' stream ids."""
    eng = Engine()
    writer = eng.connect(ALL, confirmed=False)
    grants = (*["zz*"] * (MANY - 1), "s1*")
    counted = Claims("e" * 64, frozenset(SCOPES), tuple(_Grant(g) for g in grants))
    was = contracts.hot_enabled()
    contracts.enable_hot(False)  # (a contract may look at grants itself)
    try:
        sub = eng.connect(counted, confirmed=False)
        eng.handle(sub, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
        assert isinstance(eng.pop(sub).message, SubscribeApplied)
        _Grant.looks = 0
        streams = [("s1.a" if n % 3 == 0 else "x" if n % 3 == 1 else "s1.b") for n in range(30)]
        for n, sid in enumerate(streams):
            eng.handle(writer, CallReducer(n + 1, "append_sync_event", (sid, f"k{n}", '{"n":1}', None, None)))
        looks = _Grant.looks
        sent = []
        while eng.conns[sub].outbound:
            msg = eng.pop(sub).message
            sent += [row.stream_id for u in msg.query_sets for t in u.tables for row in t.inserts]  # type: ignore[attr-defined]
        assert sent == [sid for sid in streams if sid != "x"] and len(sent) == 20
        assert looks <= 6 * MANY, looks
    finally:
        contracts.enable_hot(was)


def test_plans_of_many_shapes_share_one_index_of_a_grant_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each subscriber group's plan holds its row filter, the group's grants indexed (~150 KB for
    the 2,972 exact ids a 16 KiB token holds).  Indexes were cached for the last 64 grant lists
    only, so with more lists in use every plan built its own: a connection's 64 shapes held 64
    copies of its index, ~10 MB for one token.  Plans built after the cache has moved on must
    share the index of a grant list still in use.  Counted: the indexes built, by hand."""
    import reference.engine as engine_module
    built: list[tuple[str, ...]] = []
    real = engine_module._index_grants

    def counted(streams: tuple[str, ...]) -> object:
        built.append(streams)
        return real(streams)

    monkeypatch.setattr(engine_module, "_index_grants", counted)
    engine_module._cached_grants.cache_clear()
    eng = Engine()
    writer = eng.connect(ALL, confirmed=False)
    grants = ("s1*", "mine", "s2*")
    subs = [eng.connect(Claims(f"{i:064x}", frozenset(SCOPES), tuple(list(grants))), confirmed=False)
            for i in range(2)]
    texts = [f"SELECT * FROM sync_event WHERE idempotency_key = 'k{n}'" for n in range(3)]  # one append each
    for conn in subs:
        for qs, text in enumerate(texts, start=1):
            eng.handle(conn, Subscribe(qs, qs, (text,)))
            assert isinstance(eng.pop(conn).message, SubscribeApplied)
    del built[:]
    for n in range(3):  # each shape plans its subscribers at its first match: one per append
        for i in range(100):  # other grant lists asked for meanwhile: the cache forgets this one
            engine_module._grants((f"other{n}.{i}",))
        eng.handle(writer, CallReducer(n + 1, "append_sync_event", (f"s1.{n}", f"k{n}", '{"n":1}', None, None)))
    got = [sum(1 for u in m.message.query_sets for t in u.tables for _ in t.inserts)  # type: ignore[attr-defined]
           for conn in subs for m in iter(lambda c=conn: eng.pop(c) if eng.conns[c].outbound else None, None)]
    assert sum(got) == 3 * 2  # 3 appends, each matched by one shape, to 2 connections
    assert [b for b in built if b == grants] == [grants]  # one index, shared by the plans that came later


def test_a_subscription_s_pinned_streams_are_checked_against_the_indexed_grants() -> None:
    """Each query that pins a stream is checked against the caller's grants before anything is
    read (``forbidden_stream``), and the check tested every grant: 64 pinned queries by a token of
    2,378 grants took ~20 ms of CPU per ``Subscribe``.  The grants must be looked at a bounded
    number of times per request, not once per query.  Oracle: which queries are refused, by hand
    (``s1*`` and ``mine`` are granted, ``x`` is not)."""
    eng = _thirty_streams()
    grants = (*["zz*"] * (MANY - 2), "s1*", "mine")
    counted = Claims("e" * 64, frozenset(SCOPES), tuple(_Grant(g) for g in grants))
    was = contracts.hot_enabled()
    contracts.enable_hot(False)  # (a contract may look at grants itself)
    try:
        conn = eng.connect(counted, confirmed=False)
        ok = tuple(f"SELECT * FROM sync_stream WHERE stream_id = '{sid}'" for sid in ("s1", "s10", "s11", "mine") * 8)
        _Grant.looks = 0
        eng.handle(conn, Subscribe(1, 1, ok))
        looks = _Grant.looks
        applied = eng.pop(conn).message
        assert isinstance(applied, SubscribeApplied)
        assert sorted(row.stream_id for t in applied.rows for row in t.inserts) == ["s1", "s10", "s11"]  # type: ignore[attr-defined]
        assert looks <= 6 * MANY, looks
        eng.handle(conn, Subscribe(2, 2, (*ok[:3], "SELECT * FROM sync_stream WHERE stream_id = 'x'")))
        refused = eng.pop(conn).message
        assert isinstance(refused, SubscriptionError) and refused.error.startswith("forbidden_stream")
    finally:
        contracts.enable_hot(was)
