"""The model client on its own (``spec.client.Client``), message by message: what it knows is its
claims, what it received and its checkpoint store (ADR-0013).  Checks REPLAY-1, REPLAY-3 and the
client half of REPLAY-2; ``tests/spec/test_machines.py`` drives it under faults."""

from __future__ import annotations

from spec.auth import Claims
from spec.client import Checkpoint, Client, StreamView, rehydrate_queries, resume_queries
from spec.errors import ErrorCode, SyncError
from spec.messages import (
    QuerySetUpdate,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
    Unsubscribe,
)
from spec.state import DbState, Tx
from spec.values import SyncEvent, SyncStream

ME = Claims("a" * 64, frozenset({"sync.subscribe"}), ("s.*",))


def _row(epoch: int, head: int, floor: int = 1, cont: tuple[int, int] = (0, 0)) -> SyncStream:
    return SyncStream("s.a", "default", epoch, cont[0], cont[1], head, floor, 6, 0, 0)


def _ev(seq: int, epoch: int = 1) -> SyncEvent:
    return SyncEvent("s.a", epoch, seq, f"k{seq}", f"h{seq}", "{}", "a" * 64, 0, seq)


def _subscribes(out: list[object]) -> list[Subscribe]:
    return [m for m in out if isinstance(m, Subscribe)]


def _connected() -> tuple[Client, int]:
    c = Client("c", ME, False)
    c.on_connect()
    (sub,) = _subscribes(c.follow("s.a"))
    return c, sub.query_set_id


def test_a_stream_without_a_checkpoint_is_replayed_from_zero() -> None:
    c = Client("c", ME, False)
    c.on_connect()
    (sub,) = _subscribes(c.follow("s.a"))
    assert sub.queries == resume_queries("s.a", 1, 0)
    assert c.store["s.a"] == Checkpoint(1, 0, 0, (), False, 0, 0)  # committed before anything arrived
    out = c.on_message(SubscribeApplied(1, sub.query_set_id, (TableRows("sync_stream", (_row(1, 2),)),
                                                               TableRows("sync_event", (_ev(1), _ev(2))))))
    assert out == []
    view = c.streams["s.a"]
    assert (view.epoch, view.last, view.applied, view.rebootstraps) == (1, 2, [(1, "h1"), (2, "h2")], 0)
    assert c.store["s.a"].applied == ((1, "h1"), (2, "h2"))


def test_a_stale_replay_rehydrates_from_the_retained_window() -> None:
    c, qs = _connected()
    err = SyncError(ErrorCode.STALE_CURSOR, {"epoch": 3, "floor_seq": 4, "head_seq": 6, "continues_epoch": 0,
                                             "continues_seq": 0, "reasons": ["epoch_changed"]})
    out = c.on_message(SubscriptionError(1, qs, err.render()))
    (sub,) = _subscribes(out)
    assert sub.queries == rehydrate_queries("s.a")
    view = c.streams["s.a"]
    assert (view.epoch, view.rehydrating, view.rebootstraps, view.applied) == (3, True, 1, [])
    assert c.store["s.a"].rehydrating  # a crash now rehydrates again
    out = c.on_message(SubscribeApplied(2, sub.query_set_id, (
        TableRows("sync_stream", (_row(3, 6, floor=4),)),
        TableRows("sync_event", (_ev(5, 3), _ev(4, 3), _ev(6, 3), _ev(2, 2))))))
    assert out == []
    assert (view.epoch, view.base, view.last, view.rehydrating) == (3, 3, 6, False)
    assert [s for s, _ in view.applied] == [4, 5, 6]  # the other epoch's event is not applied
    # the same query set then carries the live tail
    out = c.on_message(TransactionUpdate(9, (QuerySetUpdate(sub.query_set_id, (
        TableRows("sync_event", (_ev(7, 3),)),)),)))
    assert out == [] and view.last == 7


def test_a_gap_resumes_from_the_watermark_without_a_rebootstrap() -> None:
    c, qs = _connected()
    c.on_message(SubscribeApplied(1, qs, (TableRows("sync_event", (_ev(1),)),)))
    out = c.on_message(TransactionUpdate(5, (QuerySetUpdate(qs, (TableRows("sync_event", (_ev(3),)),)),)))
    assert [type(m) for m in out] == [Unsubscribe, Subscribe]
    assert _subscribes(out)[0].queries == resume_queries("s.a", 1, 1)
    assert c.streams["s.a"].last == 1 and c.streams["s.a"].rebootstraps == 0 and c.gaps_detected == 1


def test_a_crash_restarts_from_the_checkpoint_store() -> None:
    c, qs = _connected()
    c.on_message(SubscribeApplied(1, qs, (TableRows("sync_event", (_ev(1), _ev(2))),)))
    c.call("append_sync_event", ("s.a", "k", "{}", None, None))
    c.crash()
    assert not c.connected and not c.qs_stream and not c.pending
    assert c.streams["s.a"].checkpoint() == c.store["s.a"]
    assert c.streams["s.a"].last == 2
    (sub,) = _subscribes(c.on_connect())
    assert sub.queries == resume_queries("s.a", 1, 2)


def test_a_crash_keeps_only_what_was_committed() -> None:
    c, _qs = _connected()
    c.store["s.a"] = Checkpoint(1, 1, 0, ((1, "h1"),), False, 0, 0)  # the store is behind memory
    c.streams["s.a"] = StreamView(1, 5, [(k, f"h{k}") for k in range(1, 6)])
    c.crash()
    assert c.streams["s.a"].last == 1 and c.streams["s.a"].applied == [(1, "h1")]


def test_a_refusal_is_recorded_and_the_stream_stays_followed() -> None:
    c, qs = _connected()
    out = c.on_message(SubscriptionError(1, qs, SyncError(ErrorCode.FORBIDDEN_STREAM, {}).render()))
    assert out == [] and c.refused == {"s.a": "forbidden_stream"} and "s.a" in c.streams
    (sub,) = _subscribes(c.resync())  # asked again at the next (re)subscription
    c.on_message(SubscribeApplied(2, sub.query_set_id, ()))
    assert c.refused == {}


def test_the_idle_check_resubscribes_every_followed_stream_from_its_checkpoint() -> None:
    c, qs = _connected()
    c.on_message(SubscribeApplied(1, qs, (TableRows("sync_event", (_ev(1),)),)))
    out = c.resync()
    assert [type(m) for m in out] == [Unsubscribe, Subscribe]
    assert _subscribes(out)[0].queries == resume_queries("s.a", 1, 1)
    c.on_disconnect()
    assert c.resync() == []  # nothing to check while disconnected


def test_a_continuing_epoch_is_adopted_without_a_rebootstrap() -> None:
    c, qs = _connected()
    c.on_message(SubscribeApplied(1, qs, (TableRows("sync_event", (_ev(1), _ev(2))),)))
    out = c.on_message(TransactionUpdate(4, (QuerySetUpdate(qs, (TableRows("sync_stream", (
        _row(2, 2, cont=(1, 2)),)),)),)))
    assert _subscribes(out)[0].queries == resume_queries("s.a", 2, 2)
    view = c.streams["s.a"]
    assert (view.epoch, view.last, view.continues, view.rebootstraps) == (2, 2, 1, 0)


# --- REPLAY-2's check on its own: which streams must converge comes from the claims ---------------------


def _db_with_stream(head: int, floor: int) -> tuple[DbState, list[SyncEvent]]:
    tx = Tx(DbState())
    tx.insert(_row(1, head, floor))
    events = [_ev(k) for k in range(1, head + 1)]
    for e in events[floor - 1:]:
        tx.insert(e)
    return tx.finish()[0], events


def test_convergence_is_computed_from_the_claims() -> None:
    from spec.invariants import check_convergence
    db, ledger = _db_with_stream(head=4, floor=3)
    full = tuple((k, f"h{k}") for k in range(1, 5))
    window = tuple((k, f"h{k}") for k in range(3, 5))
    sub = frozenset({"sync.subscribe"})
    cases = [
        # (scopes, grants, view (epoch, base, last, applied, rehydrating), refused, violated)
        (sub, ("s.*",), (1, 0, 4, full, False), {}, False),  # replayed from zero
        (sub, ("s.*",), (1, 2, 4, window, False), {}, False),  # rehydrated from the floor
        (sub, ("s.a",), (1, 2, 4, window, False), {}, False),  # an exact grant
        (sub, ("s.*",), (1, 3, 4, window[1:], False), {}, True),  # started above the floor
        (sub, ("s.*",), (1, 0, 4, full[:3], False), {}, True),  # an event missing
        (sub, ("s.*",), (1, 0, 3, full[:3], False), {}, True),  # behind the head
        (sub, ("s.*",), (1, 2, 4, window, True), {}, True),  # still rehydrating
        (sub, ("s.*",), (1, 0, 0, (), False), {"s.a": "forbidden_stream"}, True),  # readable, refused
        (sub, ("s.b*",), (1, 0, 0, (), False), {"s.a": "forbidden_stream"}, False),  # not granted, refused
        (sub, ("s.b*",), (1, 0, 0, (), False), {}, True),  # not granted, never refused
        (sub, ("s.b*",), (1, 0, 1, full[:1], False), {"s.a": "forbidden_stream"}, True),  # refused yet holds one
        (sub, ("s.a.*",), (1, 0, 0, (), False), {"s.a": "forbidden_stream"}, False),  # a namespace grant
        (frozenset(), ("s.*",), (1, 0, 0, (), False), {"s.a": "missing_scope"}, False),  # no sync.subscribe
        (frozenset(), ("s.*",), (1, 0, 0, (), False), {"s.a": "invalid_query"}, True),  # the wrong refusal
    ]
    for scopes, grants, view, refused, violated in cases:
        got = check_convergence([("c", scopes, grants, {"s.a": view}, refused)], db, ledger)
        assert bool(got) == violated and all(v[0] == "REPLAY-2" for v in got), (grants, view, refused, got)


def test_an_unconfirmed_view_may_start_at_a_floor_a_crash_lost() -> None:
    """REPLAY-2 for a client without confirmed reads: it may have rehydrated from a compaction's floor
    that a crash then lost (the recovered stream retains older events again).  Its view may start at
    any floor the stream had in a committed state, no higher; its events from there on must still be
    the authority's; a confirmed client gets no such allowance (found by the system machine: c1 held
    events from 6 after a lost compaction, the recovered stream retained from 1)."""
    from spec.invariants import check_convergence
    db, ledger = _db_with_stream(head=4, floor=1)  # the compaction to floor 3 was lost
    window = tuple((k, f"h{k}") for k in range(3, 5))
    sub = frozenset({"sync.subscribe"})
    seen = {"s.a": 3}
    cases = [
        # (view (epoch, base, last, applied, rehydrating), unconfirmed, floors_committed, violated)
        ((1, 2, 4, window, False), ["c"], seen, False),  # rehydrated at the lost floor 3
        ((1, 2, 4, window, False), [], seen, True),  # a confirmed client cannot have seen it
        ((1, 2, 4, window, False), ["c"], None, True),  # no floor recorded: strict
        ((1, 3, 4, window[1:], False), ["c"], seen, True),  # above any floor the stream had
        ((1, 2, 4, ((3, "h3"), (4, "hX")), False), ["c"], seen, True),  # the window itself differs
        ((1, 2, 4, window, False), ["other"], seen, True),  # the allowance is per client
    ]
    for view, unconfirmed, floors, violated in cases:
        got = check_convergence([("c", sub, ("s.*",), {"s.a": view}, {})], db, ledger, unconfirmed=unconfirmed,
                                floors_committed=floors)
        assert bool(got) == violated and all(v[0] == "REPLAY-2" for v in got), (view, unconfirmed, floors, got)
