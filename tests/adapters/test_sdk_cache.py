"""The client table cache: refcounts, update pairing, event rows, per-query-set contributions."""

from __future__ import annotations

import pytest

from adapters.bsatn import encode_row
from adapters.sdk.cache import ClientCache
from adapters.sdk.rows import DecodedRow, QuerySetChange, TableChange
from spec.errors import LocalProtocolError
from spec.values import PresenceSignal, Row, SessionPresence, SyncEvent

ALICE = "c2" + "a" * 62


def presence(session: str, status: str = "online") -> SessionPresence:
    return SessionPresence(session, ALICE, "dev", "node", status, "eu", 1, 2, None)


def event(seq: int, stream: str = "s") -> SyncEvent:
    return SyncEvent(stream, 1, seq, f"k{seq}", "sha256:" + "0" * 64, "{}", ALICE, 10, seq)


def d(row: Row) -> DecodedRow:
    return DecodedRow(row, encode_row(row))


def ins(qs: int, table: str, *rows: Row) -> QuerySetChange:
    return QuerySetChange(qs, (TableChange(table, inserts=tuple(d(r) for r in rows)),))


def dels(qs: int, table: str, *rows: Row) -> QuerySetChange:
    return QuerySetChange(qs, (TableChange(table, deletes=tuple(d(r) for r in rows)),))


class Recorder:
    def __init__(self, cache: ClientCache, table: str) -> None:
        self.log: list[tuple[str, ...]] = []
        t = cache.table(table)
        t.on_insert(lambda r: self.log.append(("insert", _name(r))))
        t.on_delete(lambda r: self.log.append(("delete", _name(r))))
        t.on_update(lambda o, n: self.log.append(("update", _name(o), _name(n))))


def _name(r: Row) -> str:
    if isinstance(r, SessionPresence):
        return f"{r.session_id}:{r.status}"
    if isinstance(r, SyncEvent):
        return f"e{r.seq}"
    assert isinstance(r, PresenceSignal)
    return f"sig:{r.session_id}"


def test_a_row_matched_twice_is_inserted_once_and_deleted_after_the_second_delete() -> None:
    cache = ClientCache()
    rec = Recorder(cache, "session_presence")
    row = presence("a")
    cache.apply([ins(1, "session_presence", row), ins(2, "session_presence", row)])
    t = cache.table("session_presence")
    assert rec.log == [("insert", "a:online")]
    assert t.refcount(("a",)) == 2 and t.find("a") == row
    cache.apply([dels(1, "session_presence", row)])
    assert rec.log == [("insert", "a:online")] and t.refcount(("a",)) == 1
    cache.apply([dels(2, "session_presence", row)])
    assert rec.log[-1] == ("delete", "a:online")
    assert len(t) == 0 and t.find("a") is None


def test_delete_and_insert_of_one_primary_key_is_an_update() -> None:
    cache = ClientCache()
    rec = Recorder(cache, "session_presence")
    old, new = presence("a"), presence("a", "away")
    cache.apply([ins(1, "session_presence", old)])
    cache.apply([QuerySetChange(1, (TableChange("session_presence", inserts=(d(new),), deletes=(d(old),)),))])
    assert rec.log == [("insert", "a:online"), ("update", "a:online", "a:away")]
    t = cache.table("session_presence")
    assert t.find("a") == new and t.refcount(("a",)) == 1


def test_update_pairing_counts_fragments_across_query_sets() -> None:
    """Two sets hold the row; both send the update: one callback, refcount unchanged.  Then only one
    set keeps the new row (the other's filter drops it): still an update, refcount down by one."""
    cache = ClientCache()
    rec = Recorder(cache, "session_presence")
    v1, v2, v3 = presence("a"), presence("a", "away"), presence("a", "offline")
    cache.apply([ins(1, "session_presence", v1), ins(2, "session_presence", v1)])
    both = [QuerySetChange(qs, (TableChange("session_presence", (d(v2),), (d(v1),)),)) for qs in (1, 2)]
    cache.apply(both)
    t = cache.table("session_presence")
    assert rec.log == [("insert", "a:online"), ("update", "a:online", "a:away")] and t.refcount(("a",)) == 2
    cache.apply([QuerySetChange(1, (TableChange("session_presence", (d(v3),), (d(v2),)),)),
                 dels(2, "session_presence", v2)])
    assert rec.log[-1] == ("update", "a:away", "a:offline")
    assert t.refcount(("a",)) == 1 and t.find("a") == v3
    assert cache.contribution(1) == 1 and cache.contribution(2) == 0


def test_a_table_without_primary_key_is_keyed_by_the_row_bytes() -> None:
    cache = ClientCache()
    rec = Recorder(cache, "sync_event")
    e1, e2 = event(1), event(2)
    cache.apply([ins(1, "sync_event", e1, e2), ins(2, "sync_event", e1)])
    t = cache.table("sync_event")
    assert rec.log == [("insert", "e1"), ("insert", "e2")]
    assert t.refcount(encode_row(e1)) == 2 and t.refcount(encode_row(e2)) == 1
    with pytest.raises(LocalProtocolError):
        t.find("s", 1)
    # a delete with different bytes (another row value) matches nothing
    cache.apply([dels(1, "sync_event", event(3))])
    assert len(t) == 2
    cache.apply([dels(1, "sync_event", e1, e2)])
    assert rec.log[-1] == ("delete", "e2") and t.refcount(encode_row(e1)) == 1


def test_event_table_rows_fire_on_insert_only_and_are_never_cached() -> None:
    cache = ClientCache()
    rec = Recorder(cache, "presence_signal")
    sig = PresenceSignal("a", ALICE, "online", "", 5)
    change = QuerySetChange(1, (TableChange("presence_signal", events=(d(sig), d(sig))),))
    cache.apply([change])
    cache.apply([change])
    assert rec.log == [("insert", "sig:a")] * 4
    assert len(cache.table("presence_signal")) == 0
    assert cache.contribution(1) == 0


def test_callbacks_run_after_the_whole_batch() -> None:
    cache = ClientCache()
    seen: list[int] = []
    cache.table("session_presence").on_insert(lambda _r: seen.append(len(cache.table("sync_event"))))
    cache.apply([QuerySetChange(1, (TableChange("session_presence", inserts=(d(presence("a")),)),
                                    TableChange("sync_event", inserts=(d(event(1)), d(event(2))))))])
    assert seen == [2]


def test_a_raising_callback_does_not_stop_the_others() -> None:
    cache = ClientCache()
    seen: list[str] = []

    def boom(_r: Row) -> None:
        raise RuntimeError("application bug")

    t = cache.table("session_presence")
    t.on_insert(boom)
    t.on_insert(lambda r: seen.append(_name(r)))
    cache.apply([ins(1, "session_presence", presence("a"), presence("b"))])
    assert seen == ["a:online", "b:online"] and len(t) == 2


def test_removing_a_callback() -> None:
    cache = ClientCache()
    seen: list[Row] = []
    remove = cache.table("session_presence").on_insert(seen.append)
    cache.apply([ins(1, "session_presence", presence("a"))])
    remove()
    cache.apply([ins(1, "session_presence", presence("b"))])
    assert seen == [presence("a")]


def test_dropping_a_query_set_deletes_only_what_it_alone_held() -> None:
    cache = ClientCache()
    rec = Recorder(cache, "session_presence")
    a, b = presence("a"), presence("b")
    cache.apply([ins(1, "session_presence", a, b), ins(2, "session_presence", a)])
    cache.apply([], drop=[1])
    assert rec.log == [("insert", "a:online"), ("insert", "b:online"), ("delete", "b:online")]
    assert cache.table("session_presence").refcount(("a",)) == 1
    cache.apply([], drop=[2])
    assert rec.log[-1] == ("delete", "a:online") and len(cache.table("session_presence")) == 0
    assert cache.query_sets() == []


def test_replacing_a_query_set_fires_only_the_differences() -> None:
    """A resubscription after a reconnect: old contribution out, new snapshot in, one batch."""
    cache = ClientCache()
    rec = Recorder(cache, "session_presence")
    ev = Recorder(cache, "sync_event")
    a, b1, b2, c, same = presence("a"), presence("b"), presence("b", "away"), presence("c"), presence("z")
    cache.apply([QuerySetChange(1, (TableChange("session_presence", inserts=(d(a), d(b1), d(same))),
                                    TableChange("sync_event", inserts=(d(event(1)),))))])
    rec.log.clear()
    ev.log.clear()
    cache.apply([QuerySetChange(7, (TableChange("session_presence", inserts=(d(b2), d(c), d(same))),
                                    TableChange("sync_event", inserts=(d(event(1)), d(event(2))))))],
                replace=[(1, 7)])
    assert sorted(rec.log) == [("delete", "a:online"), ("insert", "c:online"), ("update", "b:online", "b:away")]
    assert ev.log == [("insert", "e2")]
    assert cache.query_sets() == [7]
    assert sorted(r.session_id for r in cache.table("session_presence") if isinstance(r, SessionPresence)) == [
        "b", "c", "z"]
    assert cache.table("session_presence").refcount(("z",)) == 1


def test_unknown_tables_are_a_caller_error_on_lookup_and_ignored_in_updates() -> None:
    cache = ClientCache()
    with pytest.raises(LocalProtocolError):
        cache.table("nope")
    cache.apply([QuerySetChange(1, (TableChange("nope", inserts=(d(presence("a")),)),))])
    assert all(len(t) == 0 for t in cache.tables.values())


def test_a_server_sending_rows_the_cache_cannot_place_gets_a_bounded_log(caplog: pytest.LogCaptureFixture) -> None:
    """Deletes of rows the cache does not hold, rows for a table the module does not have, event rows
    for a persistent table: each used to be one warning, so a hostile server could flood the log.
    Now at most one line per kind every ``STRAY_LOG_INTERVAL_S`` (10 s), the next saying how many were
    not logged; the cache is unchanged by them either way."""
    from adapters.sdk.cache import STRAY_LOG_INTERVAL_S

    now = [50.0]
    cache = ClientCache(clock=lambda: now[0])
    caplog.set_level("WARNING", logger="syncref.sdk.cache")
    for i in range(3000):
        cache.apply([dels(1, "session_presence", presence(f"x{i}"))])
        cache.apply([QuerySetChange(1, (TableChange("no_such_table", inserts=(d(presence("y")),)),))])
        cache.apply([QuerySetChange(1, (TableChange("session_presence", events=(d(presence("z")),)),))])
    kinds = sorted(r.getMessage().split(":")[0] for r in caplog.records)
    assert len(kinds) == 3, kinds  # one line of each kind
    now[0] += STRAY_LOG_INTERVAL_S
    cache.apply([dels(1, "session_presence", presence("late"))])
    assert len(caplog.records) == 4 and "2999 more like it" in caplog.records[-1].getMessage()
    assert len(cache.table("session_presence")) == 0
