"""The sans-I/O session: ids, routing of wire messages to the cache and listeners, reconnect bookkeeping."""

from __future__ import annotations

import gc
import logging

import pytest

from adapters import wire
from adapters.bsatn import BsatnError, encode_row
from adapters.sdk.rows import TableChange
from adapters.sdk.session import Queries, Session, Subscription, SubState, decode_transaction
from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.values import PresenceSignal, Row, SessionPresence

ALICE = "c2" + "a" * 62


def presence(session: str, status: str = "online") -> SessionPresence:
    return SessionPresence(session, ALICE, "dev", "node", status, "eu", 1, 2, None)


def rl(*rows: Row) -> wire.RowList:
    return wire.RowList.of([encode_row(r) for r in rows])


def applied(rid: int, qs: int, table: str, *rows: Row) -> wire.SubscribeApplied:
    return wire.SubscribeApplied(rid, qs, wire.QueryRows((wire.SingleTableRows(table, rl(*rows)),)))


def tx(qs: int, table: str, inserts: tuple[Row, ...] = (), deletes: tuple[Row, ...] = ()) -> wire.TransactionUpdate:
    part = wire.PersistentTableRows(rl(*inserts), rl(*deletes))
    return wire.TransactionUpdate((wire.QuerySetUpdate(qs, (wire.TableUpdate(table, (part,)),)),))


class Listener:
    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def sub(self, queries: Queries = ("SELECT * FROM session_presence",), cached: bool = True) -> Subscription:
        return Subscription(queries, cached=cached,
                            on_applied=lambda s, t: self.log.append(("applied", _rows(t))),
                            on_update=lambda s, t: self.log.append(("update", _rows(t))),
                            on_error=lambda s, e: self.log.append(("error", e.error)),
                            on_end=lambda s: self.log.append(("end", s.query_set_id)))


def _rows(tables: tuple[TableChange, ...]) -> list[tuple[str, int, int, int]]:
    return [(t.table, len(t.inserts), len(t.deletes), len(t.events)) for t in tables]


def _sid(r: Row) -> str:
    assert isinstance(r, SessionPresence)
    return r.session_id


def connected_session() -> Session:
    s = Session()
    assert s.connected() == []
    return s


def test_ids_are_fresh_per_subscribe_and_shared_with_calls() -> None:
    s = connected_session()
    (m1,) = s.subscribe(Listener().sub())
    c = s.call("ack_checkpoint", b"")
    (m2,) = s.subscribe(Listener().sub())
    assert isinstance(m1, wire.Subscribe) and isinstance(m2, wire.Subscribe)
    assert [m1.request_id, c.request_id, m2.request_id] == [1, 2, 3]
    assert m1.query_set_id != m2.query_set_id
    assert m1.query_strings == ("SELECT * FROM session_presence",)


def test_a_subscription_cannot_be_subscribed_twice_or_be_empty() -> None:
    s = connected_session()
    sub = Listener().sub()
    s.subscribe(sub)
    with pytest.raises(LocalProtocolError):
        s.subscribe(sub)
    with pytest.raises(LocalProtocolError):
        s.subscribe(Listener().sub(queries=()))


def test_one_query_string_instead_of_a_list_is_caller_misuse() -> None:
    """``subscribe("SELECT ...")`` (a str is a Sequence[str], so the type checker lets it through) was
    sent as one query per character -- 30 texts, the server answering invalid_query "unexpected 'S'"
    for the first.  It is the caller's mistake: LocalProtocolError before anything is sent, whether
    the string comes directly or from the queries function at a resubscribe."""
    text = "SELECT * FROM session_presence"
    s = connected_session()
    with pytest.raises(LocalProtocolError, match="a list of query strings"):
        s.subscribe(Listener().sub(queries=text))
    with pytest.raises(LocalProtocolError, match="a list of query strings"):
        s.subscribe(Listener().sub(queries=lambda: text))
    assert s.live == {} and s.waiting == []
    offline = Session()
    with pytest.raises(LocalProtocolError, match="a list of query strings"):
        offline.subscribe(Listener().sub(queries=text))
    assert offline.waiting == []
    (ok,) = s.subscribe(Listener().sub(queries=[text]))
    assert isinstance(ok, wire.Subscribe) and ok.query_strings == (text,)


def test_a_query_that_is_not_utf8_encodable_is_caller_misuse() -> None:
    """A query holding a lone surrogate cannot be put on the wire.  It used to be accepted here and blow up
    in the connection's writer task, which died silently: every later message on that connection stayed
    queued, the next call timed out ("the call may still run": it was never sent)."""
    s = connected_session()
    with pytest.raises(LocalProtocolError, match="UTF-8"):
        s.subscribe(Listener().sub(queries=["SELECT * FROM sync_event WHERE stream_id = '\ud800'"]))
    assert s.live == {}


def test_applied_and_updates_reach_cache_then_listener() -> None:
    s = connected_session()
    lis = Listener()
    sub = lis.sub()
    (m,) = s.subscribe(sub)
    assert isinstance(m, wire.Subscribe)
    s.receive(applied(m.request_id, m.query_set_id, "session_presence", presence("a")))
    assert sub.state is SubState.APPLIED and s.cache.table("session_presence").find("a") == presence("a")
    s.receive(tx(m.query_set_id, "session_presence", (presence("a", "away"),), (presence("a"),)))
    assert s.cache.table("session_presence").find("a") == presence("a", "away")
    assert lis.log == [("applied", [("session_presence", 1, 0, 0)]), ("update", [("session_presence", 1, 1, 0)])]


def test_uncached_sets_only_reach_their_listener() -> None:
    s = connected_session()
    lis = Listener()
    (m,) = s.subscribe(lis.sub(cached=False))
    assert isinstance(m, wire.Subscribe)
    s.receive(applied(m.request_id, m.query_set_id, "session_presence", presence("a")))
    assert len(s.cache.table("session_presence")) == 0 and lis.log[0][0] == "applied"


def test_reducer_results_route_their_updates_even_when_nobody_waits() -> None:
    s = connected_session()
    sub = Listener().sub()
    (m,) = s.subscribe(sub)
    assert isinstance(m, wire.Subscribe)
    s.receive(applied(m.request_id, m.query_set_id, "session_presence"))
    call = s.call("upsert_presence", b"args")
    ok = wire.ReducerOk(b"", tx(m.query_set_id, "session_presence", (presence("b"),)))
    (done,) = s.receive(wire.ReducerResult(call.request_id, 5, ok))
    assert done.reducer == "upsert_presence" and done.request_id == call.request_id
    late = s.call("upsert_presence", b"args")
    s.forget_call(late.request_id)  # the caller timed out
    ok2 = wire.ReducerOk(b"", tx(m.query_set_id, "session_presence", (presence("c"),)))
    (done2,) = s.receive(wire.ReducerResult(late.request_id, 6, ok2))
    assert done2.reducer is None
    assert {r.session_id for r in s.cache.table("session_presence") if isinstance(r, SessionPresence)} == {"b", "c"}


def test_event_rows_on_the_wire_fire_inserts_only() -> None:
    s = connected_session()
    seen: list[Row] = []
    s.cache.table("presence_signal").on_insert(seen.append)
    (m,) = s.subscribe(Listener().sub(queries=("SELECT * FROM presence_signal",)))
    assert isinstance(m, wire.Subscribe)
    sig = PresenceSignal("a", ALICE, "online", "", 7)
    part = wire.EventTableRows(rl(sig))
    s.receive(wire.TransactionUpdate((wire.QuerySetUpdate(m.query_set_id,
                                                          (wire.TableUpdate("presence_signal", (part,)),)),)))
    assert seen == [sig] and len(s.cache.table("presence_signal")) == 0


def test_subscription_error_fails_the_set_with_the_parsed_error() -> None:
    s = connected_session()
    lis = Listener()
    sub = lis.sub()
    (m,) = s.subscribe(sub)
    assert isinstance(m, wire.Subscribe)
    err = SyncError(ErrorCode.FORBIDDEN_STREAM, {})
    s.receive(wire.SubscriptionError(m.request_id, m.query_set_id, err.render()))
    assert sub.state is SubState.FAILED and sub.error is not None and sub.error.error == err
    assert lis.log == [("error", err)]
    assert s.live == {}


def test_unsubscribe_removes_only_this_sets_rows() -> None:
    s = connected_session()
    deleted: list[Row] = []
    s.cache.table("session_presence").on_delete(deleted.append)
    a, b = Listener().sub(), Listener().sub()
    (ma,), (mb,) = s.subscribe(a), s.subscribe(b)
    assert isinstance(ma, wire.Subscribe) and isinstance(mb, wire.Subscribe)
    s.receive(applied(1, ma.query_set_id, "session_presence", presence("x"), presence("y")))
    s.receive(applied(2, mb.query_set_id, "session_presence", presence("x")))
    (un,) = s.unsubscribe(a)
    assert isinstance(un, wire.Unsubscribe) and un.query_set_id == ma.query_set_id and not un.send_dropped_rows
    assert a.state is SubState.ENDING and s.unsubscribe(a) == []
    s.receive(wire.UnsubscribeApplied(un.request_id, un.query_set_id, None))
    assert str(a.state) == "ended" and deleted == [presence("y")]


def test_disconnect_fails_calls_and_reconnect_resubscribes_with_new_ids_without_spurious_callbacks() -> None:
    s = connected_session()
    log: list[str] = []
    t = s.cache.table("session_presence")
    t.on_insert(lambda r: log.append(f"+{_sid(r)}"))
    t.on_delete(lambda r: log.append(f"-{_sid(r)}"))
    t.on_update(lambda o, n: log.append(f"~{_sid(n)}"))
    counter = iter(range(100))
    sub = Subscription(lambda: (f"SELECT * FROM session_presence WHERE status = 's{next(counter)}'",))
    (m1,) = s.subscribe(sub)
    assert isinstance(m1, wire.Subscribe)
    s.receive(applied(1, m1.query_set_id, "session_presence", presence("a"), presence("b")))
    pending = s.call("upsert_presence", b"")
    assert s.disconnected() == [pending.request_id]
    assert sub.state is SubState.PENDING and s.live == {}
    (m2,) = s.connected()
    assert isinstance(m2, wire.Subscribe) and m2.query_set_id != m1.query_set_id
    assert m2.query_strings != m1.query_strings  # recomputed at resubscribe
    # a late message for the old incarnation is ignored
    s.receive(tx(m1.query_set_id, "session_presence", (presence("zzz"),)))
    s.receive(applied(2, m2.query_set_id, "session_presence", presence("b", "away"), presence("c")))
    assert sorted(log) == sorted(["+a", "+b", "-a", "~b", "+c"])
    assert s.cache.query_sets() == [m2.query_set_id]


def test_unsubscribing_while_disconnected_ends_at_once() -> None:
    s = connected_session()
    sub = Listener().sub()
    (m,) = s.subscribe(sub)
    assert isinstance(m, wire.Subscribe)
    s.receive(applied(1, m.query_set_id, "session_presence", presence("a")))
    s.disconnected()
    assert s.unsubscribe(sub) == [] and sub.state is SubState.ENDED
    assert len(s.cache.table("session_presence")) == 0
    assert s.connected() == []


def test_a_malformed_row_changes_nothing() -> None:
    s = connected_session()
    (m,) = s.subscribe(Listener().sub())
    assert isinstance(m, wire.Subscribe)
    good = encode_row(presence("a"))
    bad = wire.RowList.of([good, b"\x01\x00\x00\x00"])
    msg = wire.SubscribeApplied(1, m.query_set_id, wire.QueryRows((wire.SingleTableRows("session_presence", bad),)))
    with pytest.raises(BsatnError):
        s.receive(msg)
    assert len(s.cache.table("session_presence")) == 0


def test_decode_transaction_flattens_per_query_fragments() -> None:
    p = presence("a")
    frag = wire.PersistentTableRows(rl(p), rl())
    update = wire.TransactionUpdate((wire.QuerySetUpdate(4, (wire.TableUpdate("session_presence", (frag, frag)),)),))
    (qs,) = decode_transaction(update)
    assert qs.query_set_id == 4 and [len(t.inserts) for t in qs.tables] == [2]


def test_calls_need_a_connection() -> None:
    with pytest.raises(LocalProtocolError):
        Session().call("ack_checkpoint", b"")


def test_subscription_errors_for_unknown_sets_are_counted_and_logged_at_a_bounded_rate(
        caplog: pytest.LogCaptureFixture) -> None:
    """A hostile (or confused) server can send any number of ``SubscriptionError`` s for query sets
    this session does not hold; each used to be one warning line.  Now: at most one line per
    ``STRAY_LOG_INTERVAL_S`` (10 s) saying how many were not logged, and every one is counted for
    the application (``stray_errors``, ``last_stray_error``).  Errors for the application's own sets
    still reach each set's ``on_error`` one by one (the log bound is only for the stray ones)."""
    from adapters.sdk.cache import STRAY_LOG_INTERVAL_S

    now = [1000.0]
    s = Session(clock=lambda: now[0])
    s.connected()
    lis = Listener()
    subs = [lis.sub() for _ in range(3)]
    sets = [m.query_set_id for sub in subs for m in s.subscribe(sub) if isinstance(m, wire.Subscribe)]
    unknown = max(sets) + 100
    caplog.set_level("WARNING", logger="syncref.sdk.session")
    for i in range(10_000):
        s.receive(wire.SubscriptionError(i, unknown + i, f"invalid_query: {{\"n\":{i}}}"))
    assert len(caplog.records) == 1 and "SubscriptionError for unknown query set" in caplog.records[0].getMessage()
    now[0] += STRAY_LOG_INTERVAL_S
    s.receive(wire.SubscriptionError(1, unknown, "invalid_query: {}"))
    assert len(caplog.records) == 2 and "9999 more like it" in caplog.records[1].getMessage()
    assert (s.stray_errors, s.last_stray_error) == (10_001, "invalid_query: {}")
    for qs in sets:  # the application's own sets: each error surfaced, none rate-limited away
        s.receive(wire.SubscriptionError(1, qs, "invalid_query: {}"))
    assert [e for e in lis.log if e[0] == "error"] == [("error", SyncError(ErrorCode.INVALID_QUERY, {}))] * 3
    assert all(sub.state is SubState.FAILED for sub in subs) and s.stray_errors == 10_001


def test_one_cache_serves_one_open_session() -> None:
    """A ``ClientCache`` keys each set's rows by query set id, and ids are per connection: two
    sessions sharing one cache mix their rows (one's unsubscribe drops rows the other's set still
    holds once their ids meet).  Sharing is refused (caller misuse, LocalProtocolError) until the
    first session is closed, which ends its sets and releases the cache."""
    from adapters.sdk.cache import ClientCache
    from adapters.sdk.connection import Connection

    cache = ClientCache()
    first = Session(cache)
    with pytest.raises(LocalProtocolError, match="already in use by another open connection"):
        Session(cache)
    with pytest.raises(LocalProtocolError, match="already in use by another open connection"):
        Connection("http://127.0.0.1:1", "db", "token", cache=cache)
    first.close()
    second = Session(cache)  # released: usable again
    assert second.cache is cache
    del second  # never closed, but gone: it holds the cache no longer
    gc.collect()
    assert Session(cache).cache is cache
    assert Session().cache is not Session().cache  # the default: a cache of its own


def test_a_dropped_sessions_rows_do_not_outlive_it_in_a_shared_cache() -> None:
    """Closing a session ends its sets, so the cache it releases holds none of their rows.  A session
    dropped without closing releases the cache too (by its weak reference), but nothing ended its
    sets: their rows stayed in the cache for the next session, a table showing rows no subscription
    holds, never updated again, and merged into the next session's set of the same id (two
    ``Session`` s start at the same id).  The next session to attach drops them first."""
    from adapters.sdk.cache import ClientCache

    cache = ClientCache()
    first = Session(cache)
    first.connected()
    (msg,) = first.subscribe(Listener().sub())
    assert isinstance(msg, wire.Subscribe)
    first.receive(applied(msg.request_id, msg.query_set_id, "session_presence", presence("old")))
    assert len(cache.table("session_presence")) == 1
    del first, msg
    gc.collect()
    second = connected_session_on(cache)
    assert len(cache.table("session_presence")) == 0  # the dropped session's row is gone
    (msg,) = second.subscribe(Listener().sub())
    assert isinstance(msg, wire.Subscribe)
    second.receive(applied(msg.request_id, msg.query_set_id, "session_presence", presence("new")))
    assert sorted(map(_sid, cache.table("session_presence").rows())) == ["new"]


def connected_session_on(cache: object) -> Session:
    from adapters.sdk.cache import ClientCache

    assert isinstance(cache, ClientCache)
    s = Session(cache)
    s.connected()
    return s


def test_a_dropped_connection_in_a_reference_cycle_does_not_hold_its_cache() -> None:
    """A ``Connection`` with a subscription is in a reference cycle (the subscription's ``owner`` is
    the connection's bound method), so dropping it frees it only at the next garbage collection:
    until then a new connection given its cache was refused, or not, by the collector's timing.
    The refusal now collects garbage once before it decides."""
    import gc as collector

    from adapters.sdk.cache import ClientCache
    from adapters.sdk.connection import Connection

    cache = ClientCache()
    first = Connection("http://127.0.0.1:1", "db", "token", cache=cache)
    first.subscribe(["SELECT * FROM sync_stream"])
    del first
    collector.disable()  # no automatic collection in between: only what the cache does
    try:
        second = Connection("http://127.0.0.1:1", "db", "token", cache=cache)
    finally:
        collector.enable()
    assert second.cache is cache
    with pytest.raises(LocalProtocolError, match="already in use"):  # a live one still holds it
        Connection("http://127.0.0.1:1", "db", "token", cache=cache)


@pytest.mark.parametrize("callback", ["on_applied", "on_update", "on_error", "on_end"])
def test_an_async_subscription_callback_is_refused_at_registration(callback: str) -> None:
    """Row callbacks run in order, as each message is routed: an ``async def`` one's coroutine used to be
    created and dropped (never awaited).  It is caller misuse, refused when the subscription is made."""
    async def cb(*args: object) -> None:
        raise AssertionError("never runs")

    with pytest.raises(LocalProtocolError, match=f"{callback}.*async def"):
        Subscription(["SELECT * FROM session_presence"], **{callback: cb})  # type: ignore[arg-type]


def test_a_subscription_callback_that_returns_an_awaitable_is_reported_not_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    """A plain callable that returns a coroutine (a lambda around an async function) cannot be told apart at
    registration: the coroutine is closed and the mistake logged as an error."""
    async def later(*args: object) -> None:
        raise AssertionError("never runs")

    s = Session()
    s.connected()
    sub = Subscription(["SELECT * FROM session_presence"], on_applied=lambda sub, tables: later())
    (msg,) = s.subscribe(sub)
    assert isinstance(msg, wire.Subscribe)
    with caplog.at_level(logging.ERROR, logger="syncref.sdk.session"):
        s.receive(wire.SubscribeApplied(msg.request_id, msg.query_set_id, wire.QueryRows(())))
    assert "on_applied returned an awaitable" in caplog.text
