"""Tests written for the mutation run of spec/delivery.py, spec/harness.py and spec/contracts.py
(docs/mutation.md, third session).

Each test states one rule of the delivery contract (DESIGN §3, ADR-0003, ADR-0015) from its meaning:
the expected messages, offsets, error strings and states are written out by hand here, never computed
by the code under test.  They pin what the suite's scenario tables and machines exercised without
looking at: the exact refusal a client reads, the order of a set's checks, who hears of a transaction
and with which offset, what a restart keeps, and how the harness schedules closes and their presence
marks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import icontract
import pytest

from spec import contracts
from spec import delivery as d
from spec import query as q
from spec.auth import Claims
from spec.errors import ErrorCode, SyncError
from spec.messages import (
    CallReducer,
    Outbound,
    QuerySetUpdate,
    ReducerErr,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeApplied,
)
from spec.outcome import Err, Ok
from spec.policy import Policy, StreamClass
from spec.reducers import CallContext, call
from spec.state import DbState, Delta, TableDelta
from spec.values import PresenceSignal, SessionPresence, StreamSignal, SyncCheckpoint, SyncEvent, SyncStream

SCOPES = frozenset({"sync.append", "sync.subscribe", "presence.write", "sync.checkpoint"})
ALICE = Claims("a" * 64, SCOPES, ("s*",))
BOB = Claims("b" * 64, SCOPES, ("t",))  # granted only stream t
NOSCOPE = Claims("c" * 64, frozenset({"sync.append"}), ("s*",))
HASH = "sha256:" + "0" * 64


def one(text: str) -> q.Query:
    (query,) = q.parse(text)
    return query


def stream(sid: str, epoch: int = 1, head: int = 0, floor: int = 1, **kw: object) -> SyncStream:
    row = SyncStream(sid, "default", epoch, 0, 0, head, floor, 20000, 0, 0)
    return replace(row, **kw)  # type: ignore[arg-type]


def event(sid: str, seq: int, epoch: int = 1, tx: int = 1, key: str | None = None) -> SyncEvent:
    return SyncEvent(sid, epoch, seq, key or f"k{seq}", HASH, "{}", "a" * 64, 0, tx)


def db_of(*rows: object) -> DbState:
    tables: dict[str, list[object]] = {}
    for r in rows:
        name = {SyncStream: "sync_stream", SyncEvent: "sync_event", SessionPresence: "session_presence",
                SyncCheckpoint: "sync_checkpoint"}[type(r)]
        tables.setdefault(name, []).append(r)
    base = DbState()
    return replace(base, tables={**base.tables, **{k: tuple(v) for k, v in tables.items()}})  # type: ignore[arg-type]


def append(db: DbState, sid: str, key: str, tx: int, claims: Claims = ALICE) -> Ok:
    out = call(db, CallContext(claims, 0, tx), "append_sync_event", (sid, key, "{}", None, None))
    assert isinstance(out, Ok), out
    return out


# --- resume_form_error -----------------------------------------------------------------------------------

_FORM = ("a sync_event subscription that bounds seq from below must pin stream_id and epoch with = "
         "(missing: {missing}); resume with SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = E AND "
         "seq > W, E and W from the checkpoint (or leave seq unbounded to read the whole stream)")


@pytest.mark.parametrize(("text", "missing"), [
    ("SELECT * FROM sync_event WHERE seq > 3", "stream_id, epoch"),
    ("SELECT * FROM sync_event WHERE epoch = 1 AND seq >= 0", "stream_id"),
    ("SELECT * FROM sync_event WHERE stream_id = 's' AND seq > 3", "epoch"),
])
def test_a_resume_without_stream_and_epoch_is_refused_with_the_form_STALE_3(text: str, missing: str) -> None:
    err = d.resume_form_error(one(text))
    assert err is not None and err.code is ErrorCode.INVALID_QUERY
    assert dict(err.details) == {"query": text, "message": _FORM.format(missing=missing)}


@pytest.mark.parametrize("text", [
    "SELECT * FROM sync_event",                                        # no lower bound on seq: not a resume
    "SELECT * FROM sync_event WHERE seq < 3",                          # an upper bound only
    "SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 2 AND seq > 3",   # the resume form
    "SELECT * FROM sync_stream WHERE head_seq > 3",                    # another table
    "SELECT * FROM sync_checkpoint WHERE last_applied_seq > 3",
])
def test_what_is_not_a_bad_resume(text: str) -> None:
    assert d.resume_form_error(one(text)) is None


def test_the_refusal_quotes_at_most_200_characters_of_the_query() -> None:
    text = "SELECT * FROM sync_event WHERE seq > 3" + " AND seq > 1" * 30
    assert len(text) > 200
    err = d.resume_form_error(one(text))
    assert err is not None and err.details["query"] == text[:200] and len(err.details["query"]) == 200


# --- stale_error -------------------------------------------------------------------------------------------

def _resume(sid: str, epoch: int, w: int) -> q.Query:
    return one(f"SELECT * FROM sync_event WHERE stream_id = '{sid}' AND epoch = {epoch} AND seq > {w}")


def test_a_stale_cursor_names_everything_the_client_needs_STALE_1() -> None:
    db = db_of(stream("s", epoch=3, head=10, floor=4, continues_epoch=2, continues_seq=7,
                      earlier_epochs=(1,), earlier_seqs=(5,)))
    err = d.stale_error(db, Policy(), _resume("s", 2, 1))   # wrong epoch, below the floor (W < floor - 1)
    assert err is not None and err.code is ErrorCode.STALE_CURSOR
    assert dict(err.details) == {
        "continues_epoch": 2, "continues_seq": 7, "earlier_epochs": [1], "earlier_seqs": [5],
        "epoch": 3, "floor_seq": 4, "head_seq": 10, "reasons": ["epoch_changed", "retention_floor_breach"],
        "replay_budget": 20000, "requested_epoch": 2, "requested_watermark": 1, "stream_id": "s"}
    assert err.render().startswith('stale_cursor: {"continues_epoch":2,')


def test_a_cursor_ahead_of_a_stream_that_does_not_exist_yet() -> None:
    """A stream that does not exist has epoch ``epoch_floor``, head 0, floor 1 and a fresh chain."""
    db = replace(DbState(), epoch_floor=4)
    err = d.stale_error(db, Policy(), _resume("new", 4, 2))
    assert err is not None
    assert dict(err.details) == {
        "continues_epoch": 0, "continues_seq": 0, "earlier_epochs": [], "earlier_seqs": [],
        "epoch": 4, "floor_seq": 1, "head_seq": 0, "reasons": ["cursor_ahead_of_head"],
        "replay_budget": 20000, "requested_epoch": 4, "requested_watermark": 2, "stream_id": "new"}
    assert d.stale_error(db, Policy(), _resume("new", 4, 0)) is None   # from the start: fine


def test_the_replay_budget_is_the_stream_class_s() -> None:
    """The budget comes from the class of the *resumed* stream (longest matching prefix)."""
    policy = Policy(classes=(("s", StreamClass("tight", replay_budget=2)),
                             ("sx", StreamClass("wide", replay_budget=50))))
    db = db_of(stream("s1", head=10), stream("sx1", head=10))
    err = d.stale_error(db, policy, _resume("s1", 1, 7))   # 10 - 7 = 3 > 2
    assert err is not None and err.details["reasons"] == ["replay_budget_exceeded"]
    assert err.details["replay_budget"] == 2
    assert d.stale_error(db, policy, _resume("s1", 1, 8)) is None   # 10 - 8 = 2: within
    assert d.stale_error(db, policy, _resume("sx1", 1, 0)) is None  # 10 <= 50
    assert d.stale_error(db, Policy(), _resume("s1", 1, 7)) is None  # the default class: 20000


def test_a_resume_without_an_epoch_is_checked_on_bounds_alone() -> None:
    db = db_of(stream("s", epoch=3, head=5, floor=1))
    err = d.stale_error(db, Policy(), one("SELECT * FROM sync_event WHERE stream_id = 's' AND seq > 9"))
    assert err is not None and err.details["requested_epoch"] is None
    assert err.details["reasons"] == ["cursor_ahead_of_head"]
    assert d.stale_error(db, Policy(), one("SELECT * FROM sync_event WHERE stream_id = 's' AND seq > 2")) is None


@pytest.mark.parametrize("text", [
    "SELECT * FROM sync_event WHERE epoch = 9 AND seq > 99",          # no stream pinned
    "SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 9",   # no watermark
    "SELECT * FROM sync_stream WHERE stream_id = 's' AND head_seq > 99",
])
def test_only_a_resume_query_is_checked_for_staleness(text: str) -> None:
    db = db_of(stream("s", epoch=3, head=5))
    assert d.stale_error(db, Policy(), one(text)) is None


# --- authorize_query, visible, snapshot ----------------------------------------------------------------

@pytest.mark.parametrize(("claims", "text", "refused"), [
    (BOB, "SELECT * FROM sync_event WHERE stream_id = 's'", True),
    (BOB, "SELECT * FROM sync_stream WHERE stream_id = 'u'", True),
    (BOB, "SELECT * FROM sync_stream WHERE stream_id = 't'", False),
    (BOB, "SELECT * FROM sync_event", False),                       # no pin: row-filtered instead
    (BOB, "SELECT * FROM sync_checkpoint WHERE stream_id = 's'", False),  # owner-visible: not a grant table
    (ALICE, "SELECT * FROM sync_event WHERE stream_id = 's9'", False),
])
def test_a_pinned_stream_must_be_granted_AUTH_1(claims: Claims, text: str, refused: bool) -> None:
    err = d.authorize_query(claims, one(text))
    if refused:
        assert err is not None and err.render() == "forbidden_stream: {}"
    else:
        assert err is None


def test_visible_is_the_query_and_the_row_filter() -> None:
    rows = [event("s", 1), event("t", 1), event("t", 2), event("u", 3)]
    assert d.visible(BOB, one("SELECT * FROM sync_event"), rows) == [event("t", 1), event("t", 2)]
    assert d.visible(BOB, one("SELECT * FROM sync_event WHERE seq > 1"), rows) == [event("t", 2)]
    assert d.visible(ALICE, one("SELECT * FROM sync_event WHERE seq < 3"), rows) == [event("s", 1)]


def test_a_snapshot_is_per_table_in_first_query_order_each_row_once() -> None:
    s1, s2, t = stream("s1"), stream("s2"), stream("t")
    e1, e2 = event("s1", 1), event("s1", 2)
    db = db_of(s1, s2, t, e1, e2)
    queries = [one("SELECT * FROM sync_event WHERE seq > 1"),
               one("SELECT * FROM stream_signal"),   # an event table: never in a snapshot (and the rest still is)
               one("SELECT * FROM sync_stream"),
               one("SELECT * FROM sync_event"), one("SELECT * FROM sync_stream WHERE stream_id = 's2'"),
               one("SELECT * FROM session_presence")]  # no rows: no entry
    assert d.snapshot(db, ALICE, queries) == (
        TableRows("sync_event", (e2, e1)), TableRows("sync_stream", (s1, s2)))  # t is not ALICE's
    assert d.snapshot(db, BOB, queries) == (TableRows("sync_stream", (t,)),)


def test_a_log_starts_durable_at_offset_zero_on_the_state_given() -> None:
    db = db_of(stream("s"))
    log = d.start(db)
    assert log.db is db and log.durable_db is db
    assert (log.committed, log.durable, log.history, log.ledger) == (0, 0, (), ())
    empty = d.start()
    assert empty.db == DbState() and empty.durable_db is empty.db


# --- subscribe / unsubscribe --------------------------------------------------------------------------

def _log(committed: int, db: DbState | None = None) -> d.Log:
    base = DbState() if db is None else db
    return d.Log(base, base, committed=committed, durable=committed)


def test_a_subscribe_answers_at_the_committed_offset_with_its_ids() -> None:
    db = db_of(stream("s"), stream("t"))
    sub = d.Subscriber(BOB, confirmed=True)
    after, out = d.subscribe(_log(5, db), Policy(), sub, Subscribe(11, 3, ("SELECT * FROM sync_stream",)))
    assert out == Outbound(5, SubscribeApplied(11, 3, (TableRows("sync_stream", (stream("t"),)),)))
    assert after.claims is BOB and after.confirmed is True
    assert dict(after.query_sets) == {3: (one("SELECT * FROM sync_stream"),)}
    # a second set is added beside the first
    again, out2 = d.subscribe(_log(6, db), Policy(), after, Subscribe(12, 4, ("SELECT * FROM sync_event",)))
    assert dict(again.query_sets) == {3: (one("SELECT * FROM sync_stream"),), 4: (one("SELECT * FROM sync_event"),)}
    assert out2 == Outbound(6, SubscribeApplied(12, 4, ()))


def test_reusing_an_active_query_set_id_closes_the_connection() -> None:
    sub = d.Subscriber(ALICE, False, {7: (one("SELECT * FROM sync_stream"),)})
    same, closed = d.subscribe(_log(0), Policy(), sub, Subscribe(1, 7, ("SELECT * FROM sync_event",)))
    assert same is sub and closed == d.Close("1011: query set 7 is already active")


def _refusal(sub: d.Subscriber, queries: tuple[str, ...], db: DbState | None = None) -> tuple[d.Subscriber, object]:
    after, out = d.subscribe(_log(2, db), Policy(), sub, Subscribe(9, 1, queries))
    assert isinstance(out, Outbound) and out.offset == 2
    assert isinstance(out.message, SubscriptionError)
    assert (out.message.request_id, out.message.query_set_id) == (9, 1)
    return after, SyncError.parse(out.message.error)


def test_a_subscribe_needs_the_subscribe_scope() -> None:
    sub = d.Subscriber(NOSCOPE, False)
    after, err = _refusal(sub, ("SELECT * FROM sync_stream",))
    assert after is sub and err == SyncError(ErrorCode.MISSING_SCOPE, {"scope": "sync.subscribe"})


def test_the_checks_run_in_order_each_over_every_query_of_the_set() -> None:
    """Scope, parse, resume form, grants, staleness: each check over the whole set before the next, so a
    later query's earlier-stage problem wins over an earlier query's later-stage one."""
    db = db_of(stream("t", head=3))
    sub = d.Subscriber(BOB, False)
    stale = "SELECT * FROM sync_event WHERE stream_id = 't' AND epoch = 1 AND seq > 9"
    forbidden = "SELECT * FROM sync_event WHERE stream_id = 's'"
    bad_form = "SELECT * FROM sync_event WHERE seq > 1"
    unparsable = "SELECT * FROM nowhere"
    _, err = _refusal(sub, (stale, forbidden, bad_form, unparsable), db)
    assert isinstance(err, SyncError) and err.code is ErrorCode.INVALID_QUERY
    assert err.details["query"] == unparsable   # the parse error, not the resume form of an earlier query
    _, err = _refusal(sub, (stale, forbidden, bad_form), db)
    assert isinstance(err, SyncError) and err.code is ErrorCode.INVALID_QUERY and err.details["query"] == bad_form
    _, err = _refusal(sub, (stale, forbidden), db)
    assert err == SyncError(ErrorCode.FORBIDDEN_STREAM, {})
    _, err = _refusal(sub, (stale, "SELECT * FROM sync_stream"), db)
    assert isinstance(err, SyncError) and err.code is ErrorCode.STALE_CURSOR and err.details["stream_id"] == "t"
    # every query of a set is parsed: one bad query anywhere fails the set, and nothing is registered
    after, err = _refusal(sub, ("SELECT * FROM sync_stream", "SELECT * FROM sync_stream WHERE nope = 1"), db)
    assert after is sub and isinstance(err, SyncError) and err.code is ErrorCode.INVALID_QUERY


def test_a_star_query_registers_one_query_per_table() -> None:
    after, out = d.subscribe(_log(0), Policy(), d.Subscriber(ALICE, False), Subscribe(1, 1, ("SELECT * FROM *",)))
    assert isinstance(out, Outbound) and isinstance(out.message, SubscribeApplied)
    assert after.query_sets[1] == q.parse("SELECT * FROM *") and len(after.query_sets[1]) > 1


def test_unsubscribe_drops_the_set_and_sends_its_rows_only_when_asked() -> None:
    db = db_of(stream("t"), stream("s"))
    sets = {1: (one("SELECT * FROM sync_stream"),), 2: (one("SELECT * FROM sync_event"),)}
    sub = d.Subscriber(BOB, False, sets)
    after, out = d.unsubscribe(_log(4, db), sub, Unsubscribe(8, 1, send_dropped=True))
    assert dict(after.query_sets) == {2: sets[2]} and after.claims is BOB
    assert out == Outbound(4, UnsubscribeApplied(8, 1, (TableRows("sync_stream", (stream("t"),)),)))
    after, out = d.unsubscribe(_log(4, db), sub, Unsubscribe(8, 1))
    assert out == Outbound(4, UnsubscribeApplied(8, 1, None)) and dict(after.query_sets) == {2: sets[2]}
    assert dict(sub.query_sets) == sets   # the input is left alone


def test_unsubscribing_an_unknown_set_is_an_invalid_query() -> None:
    sub = d.Subscriber(BOB, False, {1: (one("SELECT * FROM sync_stream"),)})
    same, out = d.unsubscribe(_log(3), sub, Unsubscribe(8, 5, send_dropped=True))
    assert same is sub
    assert out == Outbound(3, SubscriptionError(
        8, 5, 'invalid_query: {"message":"unknown query set","query_set_id":5}'))


# --- updates_for, fanout, commit, answer, system_tx ------------------------------------------------------

def test_updates_are_per_query_set_in_id_order_per_table_each_row_once() -> None:
    s_new, t_new = stream("s1", head=1), stream("t", head=1)
    e_s, e_t, gone = event("s1", 1), event("t", 1), event("t", 0, key="old")
    delta = Delta((TableDelta("sync_stream", inserts=(s_new, t_new)),
                   TableDelta("sync_event", inserts=(e_s, e_t), deletes=(gone,)),
                   TableDelta("stream_signal")))
    sub = d.Subscriber(ALICE, False, {
        9: (one("SELECT * FROM sync_stream"),),
        2: (one("SELECT * FROM sync_event"), one("SELECT * FROM sync_stream"),
            one("SELECT * FROM sync_event WHERE seq > 0")),   # e_s matches twice: sent once
        5: (one("SELECT * FROM session_presence"),),          # nothing of it in the delta: no update
    })
    assert d.updates_for(sub, delta) == (
        QuerySetUpdate(2, (TableRows("sync_event", (e_s,), ()), TableRows("sync_stream", (s_new,)))),
        QuerySetUpdate(9, (TableRows("sync_stream", (s_new,)),)),
    )
    bob = d.Subscriber(BOB, False, {1: (one("SELECT * FROM sync_event"),)})
    assert d.updates_for(bob, delta) == (QuerySetUpdate(1, (TableRows("sync_event", (e_t,), (gone,)),)),)


def test_deletes_alone_are_an_update_and_event_rows_are_flagged_EVT_2() -> None:
    sig = StreamSignal("t", "typing", "{}", BOB.identity, 0)
    gone = event("t", 1)
    delta = Delta((TableDelta("sync_event", deletes=(gone, gone)), TableDelta("stream_signal", inserts=(sig,))))
    bob = d.Subscriber(BOB, False, {1: (one("SELECT * FROM sync_event"), one("SELECT * FROM stream_signal"))})
    assert d.updates_for(bob, delta) == (QuerySetUpdate(1, (
        TableRows("sync_event", (), (gone,), False), TableRows("stream_signal", (sig,), (), True))),)


def _subs() -> dict[int, d.Subscriber]:
    return {1: d.Subscriber(ALICE, False, {1: (one("SELECT * FROM sync_event"),)}),
            2: d.Subscriber(BOB, False, {4: (one("SELECT * FROM sync_event"),)}),
            3: d.Subscriber(ALICE, True, {6: (one("SELECT * FROM sync_stream WHERE stream_id = 's'"),)})}


def test_the_caller_always_hears_and_others_only_of_what_they_match() -> None:
    delta = Delta((TableDelta("sync_event", inserts=(event("t", 1),)),))
    update = (QuerySetUpdate(4, (TableRows("sync_event", (event("t", 1),)),)),)
    sends = d.fanout(_subs(), 7, delta, d.Caller(1, 33, 5))
    assert sends == ((1, Outbound(7, ReducerResult(33, 7, ReducerOk(5, ())))),
                     (2, Outbound(7, TransactionUpdate(7, update))))
    sends = d.fanout(_subs(), 7, delta, d.Caller(2, 34, None))
    assert sends == ((2, Outbound(7, ReducerResult(34, 7, ReducerOk(None, update)))),)
    assert d.fanout(_subs(), 7, delta, None) == ((2, Outbound(7, TransactionUpdate(7, update))),)
    assert d.fanout(_subs(), 7, Delta(), None) == ()


def test_a_commit_advances_the_offset_keeps_the_history_and_the_ledger() -> None:
    first = append(DbState(), "s", "a", 1)
    log = d.start()
    after, sends = d.commit(log, _subs(), first.state, first.delta, None)
    e1 = first.state.find(SyncEvent, lambda e: e.seq == 1)
    assert e1 is not None and (after.committed, after.durable) == (1, 0)
    assert after.db is first.state and after.durable_db is log.db
    assert after.history == (d.Commit(1, first.state, first.delta),) and after.ledger == (e1,)
    assert [cid for cid, _ in sends] == [1, 3] and all(o.offset == 1 for _, o in sends)
    second = append(first.state, "s", "b", 2)
    final, _ = d.commit(after, {}, second.state, second.delta, None)
    e2 = second.state.find(SyncEvent, lambda e: e.seq == 2)
    assert final.committed == 2 and final.ledger == (e1, e2)
    assert [c.offset for c in final.history] == [1, 2]
    assert log == d.start()   # values in, values out


def test_answer_a_failure_and_a_no_op_to_the_caller_alone_at_the_offset_read() -> None:
    log = _log(4)
    err = SyncError(ErrorCode.INVALID_ARGUMENT, {"argument": "x"})
    same, sends = d.answer(log, _subs(), 2, 17, Err(err))
    assert same is log
    assert sends == ((2, Outbound(4, ReducerResult(17, 4, ReducerErr('invalid_argument: {"argument":"x"}')))),)
    noop = Ok(log.db, 3, Delta())
    same, sends = d.answer(log, _subs(), 3, 18, noop)
    assert same is log and sends == ((3, Outbound(4, ReducerResult(18, 4, ReducerOk(3, ())))),)


def test_answer_a_write_commits_at_the_next_offset() -> None:
    out = append(DbState(), "t", "a", 5, BOB)
    log = _log(4)
    after, sends = d.answer(log, _subs(), 1, 19, out)
    assert after.committed == 5 and after.db is out.state
    e = out.state.find(SyncEvent, lambda r: r.seq == 1)
    assert sends == ((1, Outbound(5, ReducerResult(19, 5, ReducerOk(1, ())))),
                     (2, Outbound(5, TransactionUpdate(5, (QuerySetUpdate(4, (TableRows("sync_event", (e,)),)),)))))


def test_a_system_transaction_has_no_caller_and_a_no_op_commits_nothing() -> None:
    log = _log(2)
    assert d.system_tx(log, _subs(), Ok(log.db, None, Delta())) == (log, ())
    out = append(DbState(), "s", "a", 3)
    after, sends = d.system_tx(log, _subs(), out)
    assert after.committed == 3
    assert [(cid, type(o.message)) for cid, o in sends] == [(1, TransactionUpdate), (3, TransactionUpdate)]


# --- the gate, the bound, presence marks --------------------------------------------------------------

@pytest.mark.parametrize(("confirmed", "offset", "durable", "out"), [
    (False, 9, 0, True), (True, 0, 0, True), (True, 4, 5, True), (True, 5, 5, True), (True, 6, 5, False),
])
def test_released_CONF_1(confirmed: bool, offset: int, durable: int, out: bool) -> None:
    assert d.released(confirmed, offset, durable) is out


@pytest.mark.parametrize(("queued", "bound", "out"), [(0, 0, False), (1, 0, True), (64, 64, False), (65, 64, True)])
def test_over_bound(queued: int, bound: int, out: bool) -> None:
    assert d.over_bound(queued, bound) is out


def test_a_session_belongs_to_the_connection_that_last_upserted_it_PRES_3() -> None:
    owners = {"p": 1, "q": 2}
    assert d.upserted(owners, "p", 3) == {"p": 3, "q": 2}
    assert d.upserted(owners, "r", 1) == {"p": 1, "q": 2, "r": 1}
    assert d.upserted(owners, "p", None) == {"q": 2}   # the HTTP route: owned by none
    assert d.upserted(owners, "zz", None) == owners
    assert owners == {"p": 1, "q": 2}
    assert d.owned_by({"p": 1, "q": 2, "r": 1}, 1) == frozenset({"p", "r"})
    assert d.owned_by({"p": 1}, 2) == frozenset()


def _presence(sid: str, ident: str, status: str = "online", expires: int = 10_000) -> SessionPresence:
    return SessionPresence(sid, ident, "dev", "node", status, "eu", 0, expires, None)


def test_a_close_marks_only_the_sessions_it_still_owns() -> None:
    me = ALICE.identity
    db = db_of(_presence("p", me), _presence("q", me), _presence("r", me))
    owners = {"p": 1, "q": 2, "r": 1}
    rest, ok = d.mark_disconnected(db, 500, owners, me, 1, frozenset({"p", "q"}))
    assert rest == {"q": 2, "r": 1}   # q moved to connection 2; r was not among the closed's sessions
    marked = {r.session_id: (r.status, r.offline_reason, r.last_seen) for r in ok.state.of_type(SessionPresence)}
    assert marked == {"p": ("offline", "disconnected", 500), "q": ("online", None, 0), "r": ("online", None, 0)}
    assert [s.session_id for s in ok.delta.for_table("presence_signal").inserts
            if isinstance(s, PresenceSignal)] == ["p"]


# --- durability -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("committed", "durable", "bound", "out"), [
    (0, 0, 1, True), (1, 0, 1, False), (4, 1, 4, True), (5, 1, 4, False), (3, 3, 1, True)])
def test_can_commit_at_most_max_undurable_ahead(committed: int, durable: int, bound: int, out: bool) -> None:
    log = d.Log(DbState(), DbState(), committed=committed, durable=durable)
    assert d.can_commit(log, bound) is out


def _three() -> tuple[d.Log, list[DbState]]:
    log = d.start()
    states = [log.db]
    for i, key in enumerate("abc", start=1):
        out = append(log.db, "s", key, i)
        log, _ = d.commit(log, {}, out.state, out.delta, None)
        states.append(out.state)
    return log, states


def test_advance_durable_moves_the_durable_state_with_it() -> None:
    log, states = _three()
    two = d.advance_durable(log, 2)
    assert (two.durable, two.committed) == (2, 3) and two.durable_db is states[2]
    assert [c.offset for c in two.history] == [3] and two.db is log.db and two.ledger == log.ledger
    assert d.advance_durable(two, 1) == two        # never backwards
    assert d.advance_durable(two, 2) == two
    three = d.advance_durable(two, 99)             # never past the committed offset
    assert (three.durable, three.durable_db, three.history) == (3, states[3], ())
    assert d.advance_durable(log, 0) == log


def test_a_restart_keeps_the_durable_prefix_only() -> None:
    log, states = _three()
    kept = d.lose_suffix(d.advance_durable(log, 2))
    assert (kept.committed, kept.durable, kept.history) == (2, 2, ())
    assert kept.db is states[2] and kept.durable_db is states[2]
    assert [e.seq for e in kept.ledger] == [1, 2]   # the event of offset 2 is kept, the one of 3 is lost
    nothing = d.lose_suffix(log)
    assert (nothing.committed, nothing.db, nothing.ledger) == (0, states[0], ())


def test_an_unclean_restart_bumps_every_epoch_above_any_handed_out_DUR_2() -> None:
    log, _ = _three()
    log = d.advance_durable(log, 2)
    out = d.recover(log, 77, 4)
    # the lost state's highest epoch is 1; max_undurable 4 can have raised it to 5: the new epoch is 6
    s = out.db.find(SyncStream, lambda r: r.stream_id == "s")
    assert s is not None and (s.epoch, s.continues_epoch, s.continues_seq, s.head_seq) == (6, 1, 2, 2)
    assert out.db.epoch_floor == 6 and (out.committed, out.durable) == (3, 3)
    assert out.durable_db is out.db and out.history == ()
    assert [(e.epoch, e.seq) for e in out.ledger] == [(6, 1), (6, 2)]
    assert [(e.epoch, e.seq) for e in out.db.of_type(SyncEvent)] == [(6, 1), (6, 2)]


def test_recovery_takes_the_epoch_floor_into_account_and_leaves_other_epochs_alone() -> None:
    """An epoch in the ledger that is not the stream's current one (an earlier, compacted-away epoch) keeps
    its label; the bump starts from the highest of the floor and every stream's epoch."""
    old = event("s", 1, epoch=1, tx=1)
    cur = event("s", 1, epoch=3, tx=2)
    db = replace(db_of(stream("s", epoch=3, head=1), cur), epoch_floor=9)
    log = d.Log(db, db, committed=2, durable=2, ledger=(old, cur))
    out = d.recover(log, 0, 2)
    assert out.db.epoch_floor == 12   # 9 + 2 + 1
    assert [(e.epoch, e.seq) for e in out.ledger] == [(1, 1), (12, 1)]
    assert d._max_epoch(db) == 9 and d._max_epoch(replace(db, epoch_floor=0)) == 3


# --- harness ------------------------------------------------------------------------------------------

from spec.harness import Conn, Server  # noqa: E402


def test_a_server_s_defaults_and_its_first_connection_ids() -> None:
    from spec.policy import DEFAULT_POLICY
    server = Server()
    assert (server.policy, server.max_queue, server.max_undurable) == (DEFAULT_POLICY, 64, 8)
    assert (server.committed, server.durable, server.now, server.history, server.ledger) == (0, 0, 0, (), ())
    assert server.db == DbState() and server.durable_db == DbState() and server.owners == {}
    assert [server.connect(ALICE, False), server.connect(BOB, True)] == [1, 2]
    conn = server.conns[2]
    assert (conn.conn_id, conn.claims, conn.confirmed, conn.query_sets, conn.outbound, conn.closed_reason) == (
        2, BOB, True, {}, [], None)


def test_a_conn_reads_its_subscriber() -> None:
    sets = {1: (one("SELECT * FROM sync_stream"),)}
    conn = Conn(4, d.Subscriber(BOB, True, sets))
    assert conn.claims is BOB and conn.confirmed is True and conn.query_sets == sets
    conn.query_sets[2] = ()
    assert dict(conn.sub.query_sets) == sets   # a copy


def _drain(server: Server, cid: int) -> list[object]:
    out = []
    while server.releasable(cid):
        out.append(server.pop(cid).message)
    return out


def test_the_harness_routes_subscribe_unsubscribe_and_calls() -> None:
    server = Server(Policy())
    a, b = server.connect(ALICE, False), server.connect(BOB, False)
    server.handle(b, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
    server.handle(a, CallReducer(2, "append_sync_event", ("t", "k", "{}", None, None)))
    assert server.committed == 0   # ALICE is not granted t: refused, nothing committed
    got_a, got_b = _drain(server, a), _drain(server, b)
    assert [type(m) for m in got_b] == [SubscribeApplied]   # ALICE may not append to t: no write
    assert len(got_a) == 1 and isinstance(got_a[0], ReducerResult) and isinstance(got_a[0].outcome, ReducerErr)
    server.handle(b, CallReducer(3, "append_sync_event", ("t", "k", "{}", None, None)))
    assert server.committed == 1 and len(server.ledger) == 1 and server.history[0].offset == 1
    (res,) = _drain(server, b)
    assert isinstance(res, ReducerResult) and res.request_id == 3 and res.tx_offset == 1
    assert isinstance(res.outcome, ReducerOk) and res.outcome.ret == 1 and res.outcome.query_sets
    server.handle(b, Unsubscribe(4, 1, send_dropped=False))
    assert _drain(server, b) == [UnsubscribeApplied(4, 1, None)] and server.conns[b].query_sets == {}
    server.handle(b, Subscribe(5, 1, ("SELECT * FROM sync_event",)))
    server.handle(b, Subscribe(6, 1, ("SELECT * FROM sync_event",)))   # reused id: closed
    assert b not in server.conns
    server.handle(b, Subscribe(7, 2, ("SELECT * FROM sync_event",)))   # a closed connection: ignored
    server.handle(99, CallReducer(8, "append_sync_event", ("s", "k", "{}", None, None)))
    assert server.committed == 1


def test_a_protocol_close_gives_its_reason() -> None:
    server = Server(Policy())
    a = server.connect(ALICE, False)
    conn = server.conns[a]
    server.handle(a, Subscribe(1, 3, ("SELECT * FROM sync_event",)))
    server.handle(a, Subscribe(2, 3, ("SELECT * FROM sync_event",)))
    assert conn.closed_reason == "1011: query set 3 is already active"
    b = server.connect(ALICE, False)
    other = server.conns[b]
    server.close(b)
    assert other.closed_reason == "closed"
    server.close(b)   # twice: nothing happens
    assert other.closed_reason == "closed"


def test_confirmed_reads_wait_for_durability_through_the_harness() -> None:
    server = Server(Policy())
    c = server.connect(BOB, True)
    u = server.connect(BOB, False)
    for cid in (c, u):
        server.handle(cid, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
    server.handle(u, CallReducer(2, "append_sync_event", ("t", "k", "{}", None, None)))
    assert [type(m) for m in _drain(server, c)] == [SubscribeApplied]   # offset 0: durable
    assert not server.releasable(c) and server.conns[c].outbound[0].offset == 1
    assert [type(m) for m in _drain(server, u)] == [SubscribeApplied, ReducerResult]
    assert not server.releasable(u) and not server.releasable(99)
    server.advance_durable(1)
    assert server.durable == 1 and server.durable_db is server.db
    assert [type(m) for m in _drain(server, c)] == [TransactionUpdate]
    with pytest.raises(AssertionError):
        server.pop(c)


def test_a_slow_consumer_is_closed_as_soon_as_its_queue_passes_the_bound() -> None:
    server = Server(Policy(), max_queue=2)
    slow = server.connect(BOB, False)
    server.handle(slow, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
    conn = server.conns[slow]
    server.handle(slow, CallReducer(2, "append_sync_event", ("t", "a", "{}", None, None)))
    assert slow in server.conns and len(conn.outbound) == 2   # at the bound: kept
    server.handle(slow, CallReducer(3, "append_sync_event", ("t", "b", "{}", None, None)))
    assert slow not in server.conns and conn.closed_reason == "slow_consumer" and len(conn.outbound) == 3


def test_the_call_precondition_and_the_detached_route() -> None:
    server = Server(Policy(), max_undurable=1)
    a = server.connect(BOB, False)
    server.handle(a, Subscribe(1, 1, ("SELECT * FROM sync_event", "SELECT * FROM session_presence")))
    out = server.call_detached(BOB, "append_sync_event", ("t", "k", "{}", None, None))
    assert isinstance(out, Ok) and server.committed == 1
    assert [type(o.message) for o in server.conns[a].outbound] == [SubscribeApplied, TransactionUpdate]
    with pytest.raises(icontract.ViolationError, match="durability bound"):
        server.call_detached(BOB, "append_sync_event", ("t", "k2", "{}", None, None))
    with pytest.raises(icontract.ViolationError, match="durability bound"):
        server.handle(a, CallReducer(2, "append_sync_event", ("t", "k2", "{}", None, None)))
    server.handle(a, Subscribe(3, 2, ("SELECT * FROM sync_stream",)))   # not a call: fine past the bound
    server.advance_durable(1)
    bad = server.call_detached(BOB, "append_sync_event", ("u", "k", "{}", None, None))
    assert isinstance(bad, Err) and server.committed == 1
    noop = server.call_detached(BOB, "append_sync_event", ("t", "k", "{}", None, None))   # a duplicate
    assert isinstance(noop, Ok) and noop.noop and server.committed == 1


def test_a_detached_upsert_belongs_to_no_connection_ADR_0003() -> None:
    server = Server(Policy())
    a = server.connect(ALICE, False)
    server.handle(a, CallReducer(1, "upsert_presence", ("p", "dev", "node", "online", "eu", 60_000)))
    assert server.owners == {"p": a}
    server.call_detached(ALICE, "upsert_presence", ("p", "dev", "node", "online", "eu", 60_000))
    assert server.owners == {}
    committed = server.committed
    server.close(a)
    assert server.committed == committed   # nothing to mark
    row = server.db.find(SessionPresence, lambda r: r.session_id == "p")
    assert row is not None and row.status == "online"


def test_a_refused_upsert_does_not_take_the_session() -> None:
    server = Server(Policy())
    a = server.connect(ALICE, False)
    server.handle(a, CallReducer(1, "upsert_presence", ("p", "dev", "node", "bogus", "eu", 60_000)))
    assert server.owners == {}
    out = server.call_detached(ALICE, "upsert_presence", ("q", "dev", "node", "bogus", "eu", 60_000))
    assert isinstance(out, Err) and server.owners == {}


def test_system_tx_commits_unless_it_is_a_no_op_or_must_wait() -> None:
    server = Server(Policy(), max_undurable=1)
    a = server.connect(BOB, False)
    server.handle(a, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
    assert server.system_tx(Ok(server.db, None, Delta())) is False and server.committed == 0
    first = append(server.db, "t", "a", 1, BOB)
    assert server.system_tx(first) is True and server.committed == 1
    second = append(server.db, "t", "b", 2, BOB)
    assert server.system_tx(second) is False and server.committed == 1   # the bound: must wait
    server.advance_durable(1)
    assert server.system_tx(second) is True and server.committed == 2
    assert [o.offset for o in server.conns[a].outbound] == [0, 1, 2]


def test_waiting_marks_commit_in_identity_then_sessions_order() -> None:
    """Closes that wait for the durability bound are marked in (identity, sessions) order, whatever the
    order of the closes: one transaction each."""
    server = Server(Policy(), max_undurable=1)
    conns = {}
    for name, claims in (("z", BOB), ("b", ALICE), ("a", ALICE)):
        cid = server.connect(claims, False)
        conns[name] = cid
        server.handle(cid, CallReducer(1, "upsert_presence", (name, "dev", "node", "online", "eu", 60_000)))
        server.advance_durable(server.committed)
    watcher = server.connect(ALICE, False)
    server.handle(watcher, Subscribe(1, 1, ("SELECT * FROM presence_signal",)))
    blocker = append(server.db, "s", "x", server.committed + 1)
    server.system_tx(blocker)
    assert not server.can_commit()
    for name in ("z", "b", "a"):
        server.close(conns[name])
    assert server.committed == 4
    for _ in range(3):
        server.advance_durable(server.committed)
    order = [r.session_id for o in server.conns[watcher].outbound if isinstance(o.message, TransactionUpdate)
             for qs in o.message.query_sets for t in qs.tables for r in t.inserts if isinstance(r, PresenceSignal)]
    assert order == ["a", "b", "z"] and server.committed == 7   # ALICE's a, b, then BOB's z


def test_a_crash_loses_the_suffix_closes_everyone_and_bumps_epochs() -> None:
    server = Server(Policy(), max_undurable=3)
    a = server.connect(BOB, False)
    conn = server.conns[a]
    server.handle(a, CallReducer(1, "upsert_presence", ("p", "dev", "node", "online", "eu", 60_000)))
    server.handle(a, CallReducer(2, "append_sync_event", ("t", "x", "{}", None, None)))
    server.advance_durable(2)
    server.handle(a, CallReducer(3, "append_sync_event", ("t", "y", "{}", None, None)))
    server.now = 42
    server.crash()
    assert server.conns == {} and conn.closed_reason == "server restart" and server.owners == {}
    assert (server.committed, server.durable) == (3, 3) and server.durable_db is server.db
    assert server.db.epoch_floor == 1 + 3 + 1   # epoch 1, at most 3 lost transactions, one more
    assert [(e.epoch, e.seq, e.idempotency_key) for e in server.ledger] == [(5, 1, "x")]
    s = server.db.find(SyncStream, lambda r: r.stream_id == "t")
    assert s is not None and (s.epoch, s.head_seq, s.updated_at) == (5, 1, 42)   # stamped with the restart's now
    row = server.db.find(SessionPresence, lambda r: r.session_id == "p")
    assert row is not None and row.status == "online"   # no mark after a restart
    assert server.connect(BOB, False) == 2   # connection ids are not reused


def test_a_clean_restart_keeps_everything_committed() -> None:
    server = Server(Policy(), max_undurable=3)
    a = server.connect(BOB, False)
    conn = server.conns[a]
    server.handle(a, CallReducer(1, "append_sync_event", ("t", "x", "{}", None, None)))
    server.handle(a, CallReducer(2, "append_sync_event", ("t", "y", "{}", None, None)))
    server.clean_restart()
    assert (server.committed, server.durable, server.history) == (2, 2, ())
    assert [e.seq for e in server.ledger] == [1, 2] and server.db.epoch_floor == DbState().epoch_floor
    assert server.conns == {} and conn.closed_reason == "server restart"


# --- contracts: the hot-path switch ----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "on"), [
    (None, False), ("", False), ("  ", False), ("0", False), ("false", False), ("FALSE", False), (" No ", False),
    ("off", False), ("1", True), ("true", True), ("on", True), ("yes", True), ("2", True), (" On ", True),
])
def test_the_environment_switch_s_values(value: str | None, on: bool) -> None:
    assert contracts._env_on(value) is on


@pytest.fixture
def switch_kept() -> Iterator[None]:
    before = contracts.hot_enabled()
    yield
    contracts.enable_hot(before)


def _checked() -> Any:
    @contracts.hot
    @icontract.require(lambda x: x > 0, "x is positive")
    def halve(x: int) -> int:
        """Half of x."""
        return x // 2
    return halve


def test_hot_runs_the_checked_function_only_while_on(switch_kept: None) -> None:
    halve = _checked()
    assert callable(halve)
    contracts.enable_hot(True)
    assert contracts.hot_enabled() is True
    assert halve(8) == 4 and halve(x=6) == 3
    with pytest.raises(icontract.ViolationError, match="x is positive"):
        halve(-4)
    contracts.enable_hot(False)
    assert contracts.hot_enabled() is False
    assert halve(-4) == -2 and halve(x=-6) == -3   # the bare function: no contract
    contracts.enable_hot()   # the default is on
    assert contracts.hot_enabled() is True
    with pytest.raises(icontract.ViolationError):
        halve(x=-1)


def test_enable_hot_stores_a_bool(switch_kept: None) -> None:
    contracts.enable_hot(1)  # type: ignore[arg-type]
    assert contracts.hot_enabled() is True
    contracts.enable_hot(0)  # type: ignore[arg-type]
    assert contracts.hot_enabled() is False


def test_hot_keeps_the_name_the_doc_and_the_checked_function() -> None:
    halve = _checked()
    assert halve.__name__ == "halve" and halve.__doc__ == "Half of x."
    checked = halve.__wrapped__
    assert checked is not None and getattr(checked, "__wrapped__", None) is not None
    with pytest.raises(icontract.ViolationError):
        checked(-2)   # the icontract-decorated function, whatever the switch says



# --- harness: the calls run with the server's policy, clock and next offset -------------------------------

TINY = Policy(classes=(("t", StreamClass("tiny", max_payload_bytes=4)),))


def test_a_connection_s_call_runs_under_the_server_s_policy_clock_and_next_offset() -> None:
    server = Server(TINY)
    b = server.connect(BOB, False)
    server.handle(b, CallReducer(1, "append_sync_event", ("t", "big", '{"abc":1}', None, None)))
    (refused,) = _drain(server, b)
    assert isinstance(refused, ReducerResult) and isinstance(refused.outcome, ReducerErr)
    assert SyncError.parse(refused.outcome.error).code is ErrorCode.PAYLOAD_TOO_LARGE and server.committed == 0
    server.now = 1234
    server.handle(b, CallReducer(2, "append_sync_event", ("t", "small", "{}", None, None)))
    (e,) = server.ledger
    assert (e.tx_offset, e.committed_at) == (1, 1234) and server.committed == 1


def test_a_detached_call_runs_under_the_server_s_policy_clock_and_next_offset() -> None:
    server = Server(TINY)
    out = server.call_detached(BOB, "append_sync_event", ("t", "big", '{"abc":1}', None, None))
    assert isinstance(out, Err) and out.error.code is ErrorCode.PAYLOAD_TOO_LARGE and server.committed == 0
    server.now = 777
    server.handle(server.connect(BOB, False), CallReducer(1, "append_sync_event", ("t", "a", "{}", None, None)))
    server.now = 999
    out = server.call_detached(BOB, "append_sync_event", ("t", "b", "{}", None, None))
    assert isinstance(out, Ok) and server.committed == 2
    assert [(e.seq, e.tx_offset, e.committed_at) for e in server.ledger] == [(1, 1, 777), (2, 2, 999)]
