"""The stream consumer's core and its checkpoint store, driven by synthetic decoded rows.

Each test states a delivery-contract rule (DESIGN §3, spec/client.py) and checks it against the
real SQLite store in a temporary file: what was applied, the durable watermark, the actions.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from adapters.bsatn import encode_row
from adapters.sdk.checkpoints import Checkpoint, CheckpointStore
from adapters.sdk.consumer import Ack, ConsumerCore, Continue, Fail, Rebootstrap, Resubscribe, Stale, StreamConsumer
from adapters.sdk.errors import BacklogTooLarge, SubscriptionFailed
from adapters.sdk.rows import DecodedRow, TableChange
from spec import query as q
from spec.errors import ErrorCode, LocalProtocolError, RemoteProtocolError, SyncError
from spec.values import Row, SyncEvent, SyncStream

S = "chat.room-1"
ALICE = "c2" + "a" * 62


def ev(seq: int, epoch: int = 1, stream: str = S) -> SyncEvent:
    return SyncEvent(stream, epoch, seq, f"k{seq}", "sha256:" + f"{seq:064x}", f'{{"n":{seq}}}', ALICE, 10, seq)


def st(epoch: int = 1, head: int = 0, floor: int = 1, stream: str = S,
       continues: tuple[int, int] = (0, 0)) -> SyncStream:
    return SyncStream(stream, "default", epoch, *continues, head, floor, 1000, 1, 2)


def d(row: Row) -> DecodedRow:
    return DecodedRow(row, encode_row(row))


def rows(*items: Row, deletes: tuple[Row, ...] = ()) -> tuple[TableChange, ...]:
    by: dict[str, list[Row]] = {}
    for r in items:
        by.setdefault("sync_stream" if isinstance(r, SyncStream) else "sync_event", []).append(r)
    out = [TableChange(t, inserts=tuple(d(r) for r in rs)) for t, rs in by.items()]
    if deletes:
        out.append(TableChange("sync_event", deletes=tuple(d(r) for r in deletes)))
    return tuple(out)


def stale_error(**details: object) -> SubscriptionFailed:
    return SubscriptionFailed(3, 9, SyncError(ErrorCode.STALE_CURSOR, {"stream_id": S, **details}).render())


def app_schema(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY, payload TEXT)")


def applied(store: CheckpointStore) -> list[int]:
    return [r[0] for r in store.db.execute("SELECT seq FROM applied ORDER BY seq")]


def record(tx: sqlite3.Connection, e: SyncEvent) -> None:
    tx.execute("INSERT INTO applied VALUES (?, ?)", (e.seq, e.payload))


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    s = CheckpointStore(tmp_path / "app.sqlite")
    app_schema(s.db)
    return s


@pytest.fixture
def core(store: CheckpointStore) -> ConsumerCore:
    c = ConsumerCore(store, S, record)
    c.start()
    return c


def resume_of(action: Resubscribe) -> tuple[str, int, int]:
    """What the server's stale check reads back out of the resume queries."""
    (head,), (tail,) = (q.parse(text) for text in action.queries)
    assert head.table == "sync_stream" and q.pinned_value(head, "stream_id") == S
    assert tail.table == "sync_event"
    stream, epoch, low = (q.pinned_value(tail, "stream_id"), q.pinned_value(tail, "epoch"),
                          q.lower_bound_exclusive(tail, "seq"))
    assert isinstance(stream, str) and isinstance(epoch, int) and isinstance(low, int)
    return stream, epoch, low


# --- start and resume -------------------------------------------------------------------------------


def test_a_new_stream_starts_at_epoch_1_watermark_0_and_persists_that(store: CheckpointStore) -> None:
    c = ConsumerCore(store, S, record)
    (action,) = c.start()
    assert isinstance(action, Resubscribe) and resume_of(action) == (S, 1, 0)
    cp = store.load(S)
    assert cp is not None and (cp.epoch, cp.watermark) == (1, 0)


def test_resume_queries_carry_the_stored_cursor(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "a.sqlite") as s, s.transaction() as tx:
        s.reset(tx, S, 3, 41)
    with CheckpointStore(tmp_path / "a.sqlite") as s:
        (action,) = ConsumerCore(s, S, record).start()
        assert isinstance(action, Resubscribe) and resume_of(action) == (S, 3, 41)


def test_stream_ids_that_cannot_be_quoted_safely_are_refused(store: CheckpointStore) -> None:
    with pytest.raises(LocalProtocolError):
        ConsumerCore(store, "x' OR '1'='1", record)


# --- apply rules -------------------------------------------------------------------------------------


def test_snapshot_events_are_applied_in_seq_order_and_acked(core: ConsumerCore, store: CheckpointStore) -> None:
    actions = core.on_rows(rows(st(head=3), ev(3), ev(1), ev(2)), snapshot=True)
    assert applied(store) == [1, 2, 3]
    assert core.watermark == 3 and store.load(S) == Checkpoint(S, 1, 3)
    assert actions == [Ack(1, 3)] and core.state == "live"


def test_duplicates_at_or_below_the_watermark_are_dropped(core: ConsumerCore, store: CheckpointStore) -> None:
    core.on_rows(rows(ev(1), ev(2)), snapshot=True)
    actions = core.on_rows(rows(ev(1), ev(2), ev(2), ev(3)), snapshot=False)
    assert applied(store) == [1, 2, 3] and core.duplicates == 3
    assert actions == [Ack(1, 3)]
    assert core.on_rows(rows(ev(3)), snapshot=False) == [] and core.duplicates == 4


def test_a_gap_is_never_applied_and_resubscribes_from_the_watermark(core: ConsumerCore,
                                                                    store: CheckpointStore) -> None:
    core.on_rows(rows(ev(1), ev(2)), snapshot=True)
    (action,) = core.on_rows(rows(ev(4), ev(5)), snapshot=False)
    assert applied(store) == [1, 2] and core.gaps == 1
    assert isinstance(action, Resubscribe) and action.reason == "gap" and resume_of(action) == (S, 1, 2)


def test_a_gap_inside_a_message_applies_the_contiguous_prefix_first(core: ConsumerCore,
                                                                   store: CheckpointStore) -> None:
    actions = core.on_rows(rows(ev(1), ev(2), ev(4)), snapshot=True)
    assert applied(store) == [1, 2]
    assert actions[0] == Ack(1, 2)
    assert isinstance(actions[1], Resubscribe) and resume_of(actions[1]) == (S, 1, 2)


def test_sync_event_deletes_are_retention_not_retraction(core: ConsumerCore, store: CheckpointStore) -> None:
    core.on_rows(rows(ev(1), ev(2)), snapshot=True)
    assert core.on_rows(rows(st(head=2, floor=2), deletes=(ev(1),)), snapshot=False) == []
    assert applied(store) == [1, 2] and core.watermark == 2 and core.state == "live"


def test_events_of_another_epoch_or_stream_are_ignored(core: ConsumerCore, store: CheckpointStore) -> None:
    core.on_rows(rows(ev(1, epoch=2), ev(1, stream="other"), ev(1)), snapshot=True)
    assert applied(store) == [1]


def test_an_empty_snapshot_acks_a_resumed_watermark_once(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "a.sqlite") as s:
        with s.transaction() as tx:
            s.reset(tx, S, 1, 5)
        c = ConsumerCore(s, S, record)
        c.start()
        assert c.on_rows(rows(st(head=5)), snapshot=True) == [Ack(1, 5)]
        assert c.on_rows(rows(st(head=5)), snapshot=False) == []


# --- atomicity ---------------------------------------------------------------------------------------


def test_apply_raising_leaves_effects_and_watermark_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    calls: list[int] = []

    def flaky(tx: sqlite3.Connection, e: SyncEvent) -> None:
        calls.append(e.seq)
        record(tx, e)  # the effect is written ...
        if e.seq == 3:
            raise ValueError("poison")  # ... and must vanish with the failure

    with CheckpointStore(path) as s:
        app_schema(s.db)
        c = ConsumerCore(s, S, flaky)
        c.start()
        actions = c.on_rows(rows(ev(1), ev(2), ev(3), ev(4)), snapshot=True)
        assert calls == [1, 2, 3]
        assert applied(s) == [1, 2] and c.watermark == 2 and c.state == "failed"
        assert actions[0] == Ack(1, 2)
        assert isinstance(actions[1], Fail) and isinstance(actions[1].error, ValueError)
        assert c.on_rows(rows(ev(3)), snapshot=False) == []  # a failed consumer applies nothing more
    with CheckpointStore(path) as s:  # reopening restores exactly the committed state
        cp = s.load(S)
        assert cp is not None and cp.watermark == 2 and applied(s) == [1, 2]


def test_the_first_event_failing_commits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"

    def boom(tx: sqlite3.Connection, e: SyncEvent) -> None:
        record(tx, e)
        raise RuntimeError("disk says no")

    with CheckpointStore(path) as s:
        app_schema(s.db)
        c = ConsumerCore(s, S, boom)
        c.start()
        (action,) = c.on_rows(rows(ev(1)), snapshot=True)
        assert isinstance(action, Fail)
    with CheckpointStore(path) as s:
        cp = s.load(S)
        assert cp is not None and cp.watermark == 0 and applied(s) == []


def test_watermark_and_effects_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    with CheckpointStore(path) as s:
        app_schema(s.db)
        c = ConsumerCore(s, S, record)
        c.start()
        c.on_rows(rows(ev(1), ev(2), ev(3)), snapshot=True)
    with CheckpointStore(path) as s:
        c = ConsumerCore(s, S, record)
        (action,) = c.start()
        assert isinstance(action, Resubscribe) and resume_of(action) == (S, 1, 3)
        c.on_rows(rows(ev(2), ev(3), ev(4)), snapshot=True)  # the replay overlaps: duplicates dropped
        assert applied(s) == [1, 2, 3, 4]


def test_an_apply_that_commits_is_refused(core: ConsumerCore, store: CheckpointStore) -> None:
    def committing(tx: sqlite3.Connection, e: SyncEvent) -> None:
        record(tx, e)
        tx.commit()

    core.apply = committing
    with pytest.raises(LocalProtocolError, match="transaction"):
        core.on_rows(rows(ev(1)), snapshot=True)


def test_an_async_apply_is_refused_not_skipped(core: ConsumerCore, store: CheckpointStore) -> None:
    """``async def apply`` (an easy slip in asyncio code) returned a coroutine that nobody awaited: the
    store took the call as done and moved the watermark past an event whose effects never ran -- exactly
    once became never, silently (a "never awaited" RuntimeWarning at best).  An apply that returns an
    awaitable is now refused like one that commits: the event is rolled back, the watermark stays, the
    error names the mistake.  (StreamConsumer refuses an ``async def`` apply when it is constructed.)"""
    ran: list[int] = []

    async def async_apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
        ran.append(e.seq)
        record(tx, e)

    core.apply = async_apply  # type: ignore[assignment]
    out = core.on_rows(rows(st(head=2), ev(1), ev(2)), snapshot=True)
    assert isinstance(out[-1], Fail) and isinstance(out[-1].error, LocalProtocolError)
    assert "awaitable" in str(out[-1].error)
    assert core.watermark == 0 and store.load(S) == Checkpoint(S, 1, 0) and applied(store) == [] and ran == []


def test_a_stream_consumer_refuses_an_async_apply_at_construction(store: CheckpointStore) -> None:
    async def async_apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
        record(tx, e)

    with pytest.raises(LocalProtocolError, match="async"):
        StreamConsumer(object(), store, S, apply=async_apply, on_rebootstrap=lambda tx, s: None)  # type: ignore[arg-type]


def test_apply_events_rejects_a_batch_for_the_wrong_epoch(core: ConsumerCore, store: CheckpointStore) -> None:
    with pytest.raises(LocalProtocolError):
        store.apply_events(S, 2, [ev(1, epoch=2)], record)
    with pytest.raises(LocalProtocolError):
        store.apply_events(S, 1, [ev(1, stream="other")], record)
    assert applied(store) == []


# --- stale -------------------------------------------------------------------------------------------


def test_stale_cursor_error_asks_for_a_rebootstrap_with_the_servers_numbers(core: ConsumerCore) -> None:
    core.on_rows(rows(ev(1), ev(2)), snapshot=True)
    (action,) = core.on_error(stale_error(epoch=2, floor_seq=1, head_seq=9, reasons=["epoch_changed"],
                                          replay_budget=100, requested_epoch=1, requested_watermark=2))
    assert action == Rebootstrap(Stale(S, ("epoch_changed",), 2, 1, 9, 1, 2, from_server=True))
    assert core.state == "rebootstrapping"
    assert core.on_rows(rows(ev(3)), snapshot=False) == []  # nothing is applied while rebootstrapping


@pytest.mark.parametrize(("row", "reasons"), [
    (st(epoch=2, head=4, floor=1), ("epoch_changed",)),
    (st(head=9, floor=5), ("retention_floor_breach",)),
    (st(head=1, floor=1), ("cursor_ahead_of_head",)),
])
def test_the_stream_row_alone_detects_stale(core: ConsumerCore, store: CheckpointStore, row: SyncStream,
                                            reasons: tuple[str, ...]) -> None:
    """Against a server that cannot reject (a real SpacetimeDB) the client's own check is the guard."""
    core.on_rows(rows(ev(1), ev(2), ev(3)), snapshot=True)
    (action,) = core.on_rows(rows(row, ev(4)), snapshot=False)
    assert isinstance(action, Rebootstrap) and action.stale.reasons == reasons and not action.stale.from_server
    assert applied(store) == [1, 2, 3]  # the event in the same message is not applied


def test_a_stream_row_for_the_floor_just_above_the_watermark_is_fine(core: ConsumerCore) -> None:
    core.on_rows(rows(ev(1), ev(2)), snapshot=True)
    assert core.on_rows(rows(st(head=3, floor=3), ev(3)), snapshot=False) == [Ack(1, 3)]


def test_rebootstrap_resumes_in_the_new_epoch(core: ConsumerCore, store: CheckpointStore) -> None:
    core.on_rows(rows(ev(1)), snapshot=True)
    (action,) = core.on_rows(rows(st(epoch=2, head=7, floor=3)), snapshot=False)
    assert isinstance(action, Rebootstrap)
    watermark = core.rebootstrap_watermark(action.stale, None)
    assert watermark == 2  # floor - 1
    with store.transaction() as tx:
        store.reset(tx, S, action.stale.epoch, watermark)
    ack, resub = core.rebootstrapped(2, watermark)
    assert ack == Ack(2, 2) and isinstance(resub, Resubscribe) and resume_of(resub) == (S, 2, 2)
    assert core.on_rows(rows(st(epoch=2, head=7, floor=3), ev(3, epoch=2), ev(1)), snapshot=True) == [Ack(2, 3)]
    assert applied(store) == [1, 3] and core.rebootstraps == 1


def test_a_rebootstrap_without_a_watermark_reads_the_window_with_no_seq_bound(core: ConsumerCore,
                                                                             store: CheckpointStore) -> None:
    """ADR-0013 decision 3: the rehydrate read is not a resume, so it cannot be stale (the replay budget
    does not cut it); the window is applied from the watermark by the usual rule, and once it has
    arrived a resubscription (a gap, a reconnect) resumes from the watermark again."""
    (action,) = core.on_error(stale_error(epoch=1, floor_seq=1, head_seq=30, reasons=["replay_budget_exceeded"]))
    assert isinstance(action, Rebootstrap)
    with store.transaction() as tx:
        store.reset(tx, S, 1, 0)
    (resub,) = core.rebootstrapped(1, 0, rehydrate=True)
    assert isinstance(resub, Resubscribe)
    for text in resub.queries:  # no seq bound, stream pinned
        (query,) = q.parse(text)
        assert q.pinned_value(query, "stream_id") == S and q.lower_bound_exclusive(query, "seq") is None
    assert core.queries() == resub.queries  # a reconnect before the window arrives reads it again
    assert core.on_rows(rows(st(head=3), ev(2), ev(1), ev(3)), snapshot=True) == [Ack(1, 3)]
    assert applied(store) == [1, 2, 3]
    (gap,) = core.on_rows(rows(ev(5)), snapshot=False)
    assert isinstance(gap, Resubscribe) and resume_of(gap) == (S, 1, 3)


def test_the_rebootstrap_watermark_must_be_resumable(core: ConsumerCore) -> None:
    stale = Stale(S, ("epoch_changed",), 2, 5, 9, 1, 0, from_server=True)
    assert core.rebootstrap_watermark(stale, 4) == 4 and core.rebootstrap_watermark(stale, 9) == 9
    for bad in (3, 10, -1, "7", 2.0):
        with pytest.raises(LocalProtocolError):
            core.rebootstrap_watermark(stale, bad)


@pytest.mark.parametrize("error", [
    SyncError(ErrorCode.FORBIDDEN_STREAM, {}).render(),
    SyncError(ErrorCode.INVALID_QUERY, {"query": "x", "message": "bad"}).render(),
    "some SpacetimeDB error text",
])
def test_other_subscription_errors_stop_the_consumer(core: ConsumerCore, error: str) -> None:
    failure = SubscriptionFailed(1, 1, error)
    assert core.on_error(failure) == [Fail(failure)] and core.state == "failed"


def test_a_stale_cursor_without_numbers_is_a_remote_protocol_error(core: ConsumerCore) -> None:
    (action,) = core.on_error(stale_error(reasons=["epoch_changed"]))
    assert isinstance(action, Fail) and isinstance(action.error, RemoteProtocolError)


def test_endless_staleness_gives_up(core: ConsumerCore) -> None:
    for _ in range(ConsumerCore.MAX_STALE_STREAK):
        (action,) = core.on_error(stale_error(epoch=2, floor_seq=1, head_seq=0, reasons=["epoch_changed"]))
        assert isinstance(action, Rebootstrap)
        core.rebootstrapped(1, 0)  # the application keeps resuming where the server refuses
    (action,) = core.on_error(stale_error(epoch=2, floor_seq=1, head_seq=0, reasons=["epoch_changed"]))
    assert isinstance(action, Fail) and core.state == "failed"


def test_a_server_that_never_delivers_the_next_seq_is_given_up_on(core: ConsumerCore, store: CheckpointStore) -> None:
    """A gap (seq W+2 without W+1, the stream row saying W+1 is retained) makes the consumer resubscribe
    from W.  A server that answers every resubscription with the same gap -- a protocol violation: it
    claims a window it cannot serve -- kept the consumer resubscribing at network speed, forever, with no
    backoff.  Like staleness, a gap streak without progress is now bounded: past MAX_GAP_STREAK
    resubscriptions in a row that applied nothing, the consumer fails with a RemoteProtocolError.  A gap
    after progress starts the count again (a real server's late message is not a streak)."""
    for _ in range(ConsumerCore.MAX_GAP_STREAK):
        actions = core.on_rows(rows(st(head=3), ev(3)), snapshot=True)
        assert [type(a) for a in actions] == [Resubscribe] and core.state == "subscribing"
    (action,) = core.on_rows(rows(st(head=3), ev(3)), snapshot=True)
    assert isinstance(action, Fail) and isinstance(action.error, RemoteProtocolError) and core.state == "failed"
    assert "seq 1" in str(action.error) and applied(store) == []


def test_gaps_with_progress_in_between_are_not_a_streak(core: ConsumerCore, store: CheckpointStore) -> None:
    for seq in range(1, 3 * ConsumerCore.MAX_GAP_STREAK):
        out = core.on_rows(rows(st(head=seq + 1), ev(seq), ev(seq + 2)), snapshot=False)  # seq applied, seq+2 a gap
        assert [type(a) for a in out] == [Ack, Resubscribe], out
    assert core.state == "subscribing" and applied(store) == list(range(1, 3 * ConsumerCore.MAX_GAP_STREAK))


# --- continuing an epoch after the server's unclean restart (ADR-0003 decision 6) -----------------


def _continue_to(core: ConsumerCore, store: CheckpointStore, action: Continue) -> list[object]:
    with store.transaction() as tx:  # what the driver does: the checkpoint moves, nothing else
        store.reset(tx, S, action.epoch, core.watermark)
    return list(core.continued(action.epoch))


def test_a_stream_row_continuing_the_epoch_keeps_everything(core: ConsumerCore, store: CheckpointStore) -> None:
    """CONT-1: epoch 11 continues epoch 1 up to seq 5; a consumer at 3 saw only surviving events."""
    core.on_rows(rows(ev(1), ev(2), ev(3)), snapshot=True)
    (action,) = core.on_rows(rows(st(epoch=11, head=5, floor=1, continues=(1, 5)), ev(4, epoch=11)), snapshot=False)
    assert action == Continue(11, from_server=False) and core.state == "continuing"
    ack, resub = _continue_to(core, store, action)
    assert ack == Ack(11, 3) and isinstance(resub, Resubscribe) and resume_of(resub) == (S, 11, 3)
    assert resub.reason == "continue"
    assert (core.epoch, core.watermark, core.continues, core.rebootstraps) == (11, 3, 1, 0)
    assert store.load(S) == Checkpoint(S, 11, 3)
    assert core.on_rows(rows(ev(4, epoch=11), ev(5, epoch=11)), snapshot=True) == [Ack(11, 5)]
    assert applied(store) == [1, 2, 3, 4, 5]  # nothing replaced, nothing applied twice


@pytest.mark.parametrize(("row", "why"), [
    (st(epoch=11, head=9, floor=1, continues=(1, 2)), "the consumer may have seen events past the durable head"),
    (st(epoch=11, head=9, floor=1, continues=(0, 0)), "a fresh epoch (an admin reset) continues nothing"),
    (st(epoch=11, head=9, floor=1, continues=(7, 9)), "it continues another epoch"),
    (st(epoch=11, head=9, floor=5, continues=(1, 9)), "retention passed the watermark meanwhile"),
])
def test_a_stream_row_that_does_not_continue_far_enough_rebootstraps(core: ConsumerCore, row: SyncStream,
                                                                     why: str) -> None:
    core.on_rows(rows(ev(1), ev(2), ev(3)), snapshot=True)
    (action,) = core.on_rows(rows(row), snapshot=False)
    assert isinstance(action, Rebootstrap), why


def test_a_stale_cursor_naming_the_continuation_continues(core: ConsumerCore, store: CheckpointStore) -> None:
    core.on_rows(rows(ev(1), ev(2)), snapshot=True)
    base = dict(epoch=11, floor_seq=1, head_seq=9, replay_budget=100, requested_epoch=1, requested_watermark=2)
    (action,) = core.on_error(stale_error(reasons=["epoch_changed"], continues_epoch=1, continues_seq=4, **base))
    assert action == Continue(11, from_server=True)
    _continue_to(core, store, action)
    assert (core.epoch, core.watermark, core.continues) == (11, 2, 1)
    # not continuable: seen past continues_seq, another reason too, or an older server without the keys
    for extra in (dict(reasons=["epoch_changed"], continues_epoch=1, continues_seq=1),
                  dict(reasons=["epoch_changed", "replay_budget_exceeded"], continues_epoch=1, continues_seq=4),
                  dict(reasons=["epoch_changed"])):
        c = ConsumerCore(store, f"other{len(extra)}{extra.get('continues_seq', 0)}", lambda tx, e: None)
        c.start()
        c.on_rows(rows(ev(1, stream=c.stream_id), ev(2, stream=c.stream_id)), snapshot=True)
        err = SubscriptionFailed(3, 9, SyncError(ErrorCode.STALE_CURSOR, {"stream_id": c.stream_id, **base, **extra})
                                 .render())
        (action2,) = c.on_error(err)
        assert isinstance(action2, Rebootstrap), extra


def test_continued_outside_a_continue_is_a_caller_bug(core: ConsumerCore) -> None:
    with pytest.raises(LocalProtocolError):
        core.continued(5)


# --- a backlog over one message: paged catch-up (ADR-0040) -------------------------------------------


def too_big(limit: str = "max_outbound_message_bytes", actual: int = 5_000_000, most: int = 1_000_000,
            ) -> SubscriptionFailed:
    return SubscriptionFailed(3, 9, SyncError(ErrorCode.LIMIT_EXCEEDED,
                                              {"actual": actual, "limit": limit, "max": most}).render())


def bounds_of(action: Resubscribe) -> tuple[int, int, int | None]:
    """(epoch, W, B) of a subscription that reads ``W < seq <= B`` (B None: no upper bound), read back out of
    the query text by the SQL subset's parser -- not by the code that wrote it."""
    stream, epoch, low = resume_of(action)
    assert stream == S
    (tail,) = q.parse(action.queries[1])
    uppers = [c.value - (c.op is q.Op.LT) for c in tail.where if c.column == "seq" and c.op in (q.Op.LT, q.Op.LE)]
    assert len(uppers) <= 1 and all(isinstance(u, int) for u in uppers)
    return epoch, low, int(uppers[0]) if uppers else None


def paged_core(store: CheckpointStore, page_events: int = 4) -> ConsumerCore:
    c = ConsumerCore(store, S, record, page_events=page_events)
    c.start()
    return c


def test_a_resume_refused_over_one_message_is_read_in_pages_then_followed_live(store: CheckpointStore) -> None:
    """The backlog 1..10 is one snapshot over the bound: the consumer reads it 4 events a page
    (0,4], (4,8], (8,12], each applied and acked before the next is asked for, then subscribes live from 10.
    The expected pages are written out, not computed by the code under test."""
    core = paged_core(store)
    (page,) = core.on_error(too_big())
    assert isinstance(page, Resubscribe) and page.reason == "page" and bounds_of(page) == (1, 0, 4)
    head = st(head=10)
    expected = [((1, 4, 8), "page"), ((1, 8, 12), "page"), ((1, 10, None), "live")]
    batches = [range(1, 5), range(5, 9), range(9, 11)]
    for batch, (want, reason) in zip(batches, expected, strict=True):
        ack, nxt = core.on_rows(rows(head, *(ev(s) for s in reversed(batch))), snapshot=True)
        assert ack == Ack(1, batch[-1]) and isinstance(nxt, Resubscribe)
        assert (bounds_of(nxt), nxt.reason) == (want, reason)
        assert store.load(S) == Checkpoint(S, 1, batch[-1])  # durable before the next page is asked for
    assert applied(store) == list(range(1, 11)) and core.state == "subscribing"
    assert core.on_rows(rows(head), snapshot=True) == [Ack(1, 10)] and core.state == "live"
    assert core.on_rows(rows(ev(11)), snapshot=False) == [Ack(1, 11)]


def test_a_page_over_one_message_shrinks_and_a_single_event_over_it_is_a_clear_error(store: CheckpointStore) -> None:
    """Each refused page is smaller (at most half) than the last; a page of one event refused means that
    event can never be sent by this server: BacklogTooLarge naming the seq and the server's numbers, and
    the consumer stops -- no loop."""
    core = paged_core(store, page_events=8)
    core.on_rows(rows(st(head=3), ev(1), ev(2)), snapshot=False)
    (page,) = core.on_error(too_big())
    assert bounds_of(page) == (1, 2, 10)
    sizes = [8]
    while True:
        (action,) = core.on_error(too_big(actual=1_500_000))
        if isinstance(action, Fail):
            break
        _, low, high = bounds_of(action)
        assert low == 2 and high is not None
        sizes.append(high - low)
        assert sizes[-1] <= sizes[-2] // 2 and len(sizes) < 10
    assert sizes[-1] == 1 and core.state == "failed"
    err = action.error
    assert isinstance(err, BacklogTooLarge) and err.reason == "event_too_large" and (err.epoch, err.seq) == (1, 3)
    assert err.details == {"actual": 1_500_000, "limit": "max_outbound_message_bytes", "max": 1_000_000}
    assert "seq 3" in str(err) and "max_outbound_message_bytes" in str(err)
    assert applied(store) == [1, 2]


def test_events_appended_during_paging_are_paged_too_and_a_refused_live_tail_pages_again(
        store: CheckpointStore) -> None:
    core = paged_core(store)
    core.on_error(too_big())
    _, nxt = core.on_rows(rows(st(head=5), *(ev(s) for s in range(1, 5))), snapshot=True)
    assert bounds_of(nxt) == (1, 4, 8)  # head 5 > 4: another page
    _, nxt = core.on_rows(rows(st(head=9), *(ev(s) for s in range(5, 9))), snapshot=True)
    assert bounds_of(nxt) == (1, 8, 12) and nxt.reason == "page"  # head moved on to 9 meanwhile
    _, nxt = core.on_rows(rows(st(head=9), ev(9)), snapshot=True)
    assert (bounds_of(nxt), nxt.reason) == ((1, 9, None), "live")
    (again,) = core.on_error(too_big())  # more arrived before the live subscription: page again
    assert (bounds_of(again), again.reason) == ((1, 9, 13), "page")
    _, nxt = core.on_rows(rows(st(head=11), ev(10), ev(11)), snapshot=True)
    assert bounds_of(nxt) == (1, 11, None)
    assert applied(store) == list(range(1, 12))


def test_a_gap_in_a_page_resubscribes_the_same_page_and_an_empty_page_below_the_head_is_a_gap(
        store: CheckpointStore) -> None:
    core = paged_core(store)
    core.on_error(too_big())
    ack, nxt = core.on_rows(rows(st(head=10), ev(1), ev(3)), snapshot=True)
    assert ack == Ack(1, 1) and bounds_of(nxt) == (1, 1, 5) and nxt.reason == "gap"
    for _ in range(ConsumerCore.MAX_GAP_STREAK - 1):  # a server that claims 2..10 and never serves them
        *_, nxt = core.on_rows(rows(st(head=10)), snapshot=True)
        assert isinstance(nxt, Resubscribe) and bounds_of(nxt) == (1, 1, 5)
    *_, fail = core.on_rows(rows(st(head=10)), snapshot=True)
    assert isinstance(fail, Fail) and isinstance(fail.error, RemoteProtocolError) and applied(store) == [1]


def test_a_live_subscription_refused_without_progress_is_given_up_on(store: CheckpointStore) -> None:
    """A server that refuses every live subscription and then serves empty pages at the head would keep the
    consumer paging at network speed: bounded like a gap streak."""
    core = paged_core(store)
    for _ in range(ConsumerCore.MAX_GAP_STREAK):
        (page,) = core.on_error(too_big())
        assert page.reason == "page"  # type: ignore[union-attr]
        (live,) = core.on_rows(rows(st(head=0)), snapshot=True)
        assert isinstance(live, Resubscribe) and live.reason == "live"
    (fail,) = core.on_error(too_big())
    assert isinstance(fail, Fail) and isinstance(fail.error, RemoteProtocolError)


def test_other_limits_are_not_paged(store: CheckpointStore) -> None:
    core = paged_core(store)
    failure = too_big(limit="max_queries_per_connection", actual=65, most=64)
    assert core.on_error(failure) == [Fail(failure)] and core.state == "failed"


def test_a_rehydrate_over_one_message_is_paged_and_stays_a_rehydrate_until_the_window_is_applied(
        store: CheckpointStore) -> None:
    """on_rebootstrap returned None: the window (floor 3 .. head 9) is over one message.  It is read in
    pages from floor - 1; the checkpoint keeps ``rehydrating`` until the page that reaches the head is
    applied (a restart in between reads the window again), then the consumer follows live from 9."""
    core = paged_core(store)
    (action,) = core.on_error(stale_error(epoch=2, floor_seq=3, head_seq=9, reasons=["epoch_changed"]))
    assert isinstance(action, Rebootstrap)
    with store.transaction() as tx:
        store.reset(tx, S, 2, 2, rehydrating=True)
    (_, resub) = core.rebootstrapped(2, 2, rehydrate=True)
    assert q.parse(resub.queries[1])[0].where == q.parse(f"SELECT * FROM sync_event WHERE stream_id = '{S}'")[0].where  # type: ignore[union-attr]
    (page,) = core.on_error(too_big())
    assert bounds_of(page) == (2, 2, 6)
    window = st(epoch=2, head=9, floor=3)
    _, nxt = core.on_rows(rows(window, *(ev(s, epoch=2) for s in range(3, 7))), snapshot=True)
    assert bounds_of(nxt) == (2, 6, 10)
    cp = store.load(S)
    assert cp is not None and (cp.epoch, cp.watermark, cp.rehydrating) == (2, 6, True)
    restarted = ConsumerCore(store, S, record, page_events=4)
    (start,) = restarted.start()
    assert q.lower_bound_exclusive(q.parse(start.queries[1])[0], "seq") is None  # type: ignore[union-attr]
    _, nxt = core.on_rows(rows(window, *(ev(s, epoch=2) for s in range(7, 10))), snapshot=True)
    assert (bounds_of(nxt), nxt.reason) == ((2, 9, None), "live")
    cp = store.load(S)
    assert cp is not None and (cp.epoch, cp.watermark, cp.rehydrating) == (2, 9, False)
    assert applied(store) == list(range(3, 10))


def test_a_rehydrate_page_refused_by_the_replay_budget_is_a_clear_error_not_a_second_callback(
        store: CheckpointStore) -> None:
    core = paged_core(store)
    core.on_error(stale_error(epoch=2, floor_seq=3, head_seq=90, reasons=["epoch_changed"]))
    with store.transaction() as tx:
        store.reset(tx, S, 2, 2, rehydrating=True)
    core.rebootstrapped(2, 2, rehydrate=True)
    core.on_error(too_big())
    # a page of 4 within the budget (4) refused for it alone: a server from before ADR-0042 (a page measured to
    # the head); one without replay_budget in its details likewise
    (fail,) = core.on_error(stale_error(epoch=2, floor_seq=3, head_seq=90, reasons=["replay_budget_exceeded"],
                                        replay_budget=4))
    assert isinstance(fail, Fail) and isinstance(fail.error, BacklogTooLarge)
    assert fail.error.reason == "window_over_replay_budget" and fail.error.seq == 3 and core.rebootstraps == 1


@pytest.mark.parametrize("rehydrating", [True, False])
def test_a_page_over_the_replay_budget_is_cut_to_the_budget(store: CheckpointStore, rehydrating: bool) -> None:
    """ADR-0042: the server holds a page ``W < seq <= B`` against the replay budget for ``min(head, B) - W``.
    A page of 4 refused by a budget of 3 alone is asked again as a page of 3 (rehydrating or not; the
    rehydrate is not given up), and that page refused again is the old server's answer."""
    core = paged_core(store)
    if rehydrating:
        core.on_error(stale_error(epoch=2, floor_seq=3, head_seq=90, reasons=["epoch_changed"]))
        with store.transaction() as tx:
            store.reset(tx, S, 2, 2, rehydrating=True)
        core.rebootstrapped(2, 2, rehydrate=True)
    epoch, w = (2, 2) if rehydrating else (1, 0)
    (page,) = core.on_error(too_big())
    assert bounds_of(page) == (epoch, w, w + 4)  # type: ignore[arg-type]
    budget_stale = stale_error(epoch=epoch, floor_seq=w + 1, head_seq=90, reasons=["replay_budget_exceeded"],
                               replay_budget=3)
    (cut,) = core.on_error(budget_stale)
    assert isinstance(cut, Resubscribe) and cut.reason == "page" and bounds_of(cut) == (epoch, w, w + 3)
    assert core.rehydrating is rehydrating and core.rebootstraps == (1 if rehydrating else 0)
    (again,) = core.on_error(budget_stale)  # a page of 3 refused by a budget of 3: not cut again
    if rehydrating:
        assert isinstance(again, Fail) and isinstance(again.error, BacklogTooLarge)
        assert again.error.reason == "window_over_replay_budget"
    else:
        assert isinstance(again, Rebootstrap)


@pytest.mark.parametrize("signal", ["row", "error"])
def test_a_stale_epoch_during_paging_rebootstraps_and_the_next_catch_up_starts_unpaged(
        store: CheckpointStore, signal: str) -> None:
    core = paged_core(store)
    core.on_error(too_big())
    core.on_rows(rows(st(head=10), *(ev(s) for s in range(1, 5))), snapshot=True)
    if signal == "row":  # the page's own stream row says the epoch moved: nothing of it is applied
        (action,) = core.on_rows(rows(st(epoch=2, head=3, floor=1), ev(5)), snapshot=True)
    else:
        (action,) = core.on_error(stale_error(epoch=2, floor_seq=1, head_seq=3, reasons=["epoch_changed"]))
    assert isinstance(action, Rebootstrap) and action.stale.local_watermark == 4
    assert applied(store) == [1, 2, 3, 4]
    with store.transaction() as tx:
        store.reset(tx, S, 2, 0)
    (resub,) = core.rebootstrapped(2, 0)
    assert isinstance(resub, Resubscribe) and bounds_of(resub) == (2, 0, None)


def test_a_continue_during_paging_keeps_paging_in_the_new_epoch(store: CheckpointStore) -> None:
    core = paged_core(store)
    core.on_error(too_big())
    core.on_rows(rows(st(head=10), *(ev(s) for s in range(1, 5))), snapshot=True)
    (action,) = core.on_error(stale_error(epoch=2, floor_seq=1, head_seq=10, reasons=["epoch_changed"],
                                          continues_epoch=1, continues_seq=7))
    assert action == Continue(2, from_server=True)
    (ack, resub) = _continue_to(core, store, action)
    assert ack == Ack(2, 4)
    assert isinstance(resub, Resubscribe) and bounds_of(resub) == (2, 4, 8)


@pytest.mark.parametrize(("most", "sizes"), [
    (1_000_000, [2, 4, 8, 12, 12]),  # pages of ~200-byte rows, far under the bound: back to page_events
    (1_000, [2, 2, 2, 2, 2]),  # a page of 2 (440 row bytes with the stream row's) doubled is over 3/4 of it
])
def test_a_page_cut_by_a_refusal_grows_back_after_pages_that_fit(store: CheckpointStore, most: int,
                                                               sizes: list[int]) -> None:
    """ADR-0040's weakness: one large event cut the page to the share that fitted, and every later page of
    the catch-up stayed that small (one round trip per couple of events).  A page whose rows, doubled, stay
    under 3/4 of the refusal's ``max`` bytes doubles the next one, up to ``page_events``; the sizes expected
    are written out."""
    core = paged_core(store, page_events=12)
    core.on_error(too_big(actual=100 * most, most=most))  # the resume: up to the head, 1000
    (page,) = core.on_error(too_big(actual=6 * most, most=most))  # the share that fits: 12 / 6
    assert bounds_of(page) == (1, 0, 2)
    low, got = 0, []
    for _ in sizes:
        _, _, high = bounds_of(page)
        assert high is not None
        got.append(high - low)
        _, page = core.on_rows(rows(st(head=1000), *(ev(s) for s in range(low + 1, high + 1))), snapshot=True)
        assert isinstance(page, Resubscribe) and page.reason == "page"
        low = high
    assert got == sizes and applied(store) == list(range(1, low + 1))


def serve_catch_up(core: ConsumerCore, store: CheckpointStore, sizes: list[int], most: int, row_bytes: int = 200,
                   ) -> list[tuple[int, int | None, str]]:
    """A model server for one catch-up, written apart from the consumer: events 1..len(sizes) of the
    stream, event ``s`` a row of ``sizes[s - 1]`` bytes, the stream row ``row_bytes``; a snapshot whose
    rows are over ``most`` bytes is refused ``limit_exceeded`` with those bytes as ``actual``, as the
    server measures it.  Drives ``core`` from its start until it follows live; returns every
    subscription it asked for, as ``(W, B or None, "refused" | "sent")``."""
    head = len(sizes)
    stream = DecodedRow(st(head=head), b"\0" * row_bytes)
    asked: list[tuple[int, int | None, str]] = []
    (action,) = core.start()
    while core.state != "live":
        assert isinstance(action, Resubscribe) and len(asked) < 50, (action, asked)
        _, low, high = bounds_of(action)
        top = head if high is None else min(head, high)
        size = row_bytes + sum(sizes[low:top])
        if size > most:
            asked.append((low, high, "refused"))
            (action,) = core.on_error(too_big(actual=size, most=most))
            continue
        asked.append((low, high, "sent"))
        events = tuple(DecodedRow(ev(s), b"\0" * sizes[s - 1]) for s in range(low + 1, top + 1))
        out = core.on_rows((TableChange("sync_stream", inserts=(stream,)), TableChange("sync_event", inserts=events)),
                           snapshot=True)
        action = out[-1]
    assert applied(store) == list(range(1, head + 1))
    return asked


def test_a_first_page_that_asked_past_the_head_reads_the_head_instead_of_halving(store: CheckpointStore) -> None:
    """Ten events of 5,000 bytes under a 32,000-byte bound (six fit): the resume is refused, and so is the
    first page of ``page_events`` = 256 -- it asked past the head, so it held the whole backlog, and the
    share ``n * max / actual`` (which assumes n events) said nothing.  It used to halve blind: 256, 128,
    64, 32, 16 and 8 refused, each the whole backlog measured again (11 subscriptions, 7 refused).  Now
    the consumer reads the head (a page of no events: the stream row alone) and asks the share of the
    backlog that fits, (32,000 - 200) * 10 // (50,200 - 200) = 6 events: 6 subscriptions, 2 refused.
    The subscriptions expected are written out."""
    c = ConsumerCore(store, S, record)
    assert serve_catch_up(c, store, [5_000] * 10, 32_000) == [
        (0, None, "refused"), (0, 256, "refused"), (0, 0, "sent"), (0, 6, "sent"), (6, 12, "sent"),
        (10, None, "sent")]
    assert c.pages == 2


def test_a_first_page_that_fits_costs_no_head_read(store: CheckpointStore) -> None:
    """The common case is unchanged: 600 events of 100 bytes under 32,000 bytes -- the first page of 256 is
    full and fits, so no head is read: the refused resume, three pages, the live resume."""
    c = ConsumerCore(store, S, record)
    assert serve_catch_up(c, store, [100] * 600, 32_000) == [
        (0, None, "refused"), (0, 256, "sent"), (256, 512, "sent"), (512, 768, "sent"), (600, None, "sent")]


def test_a_page_bound_past_u64_is_cut_to_u64_max(store: CheckpointStore) -> None:
    """``page_events`` has no upper bound of its own: ``W + n`` past 2^64 - 1 made a page the server refuses
    ``invalid_query`` (out of range for ``seq``), stopping the consumer mid catch-up with a baffling error."""
    core = paged_core(store, page_events=2**64)
    (page,) = core.on_error(too_big())
    assert bounds_of(page) == (1, 0, 18_446_744_073_709_551_615)


def test_a_catch_up_refused_again_starts_its_pages_at_the_size_that_fitted(store: CheckpointStore) -> None:
    """Events kept arriving: the live subscription after the last page is refused over one message again.
    The new pages used to start over at ``page_events`` and be cut by refusals once more (measured against
    the real server, 10 x 200 KiB under 1 MiB: 256, 128, 64, 32, 16, 8 refused again, 7 refusals per round);
    they start at the size of the last full page that fitted."""
    core = paged_core(store, page_events=16)
    core.on_error(too_big(most=1_000))
    (page,) = core.on_error(too_big(actual=4_000, most=1_000))  # 16 * 1000 / 4000
    assert bounds_of(page) == (1, 0, 4)
    _, nxt = core.on_rows(rows(st(head=6), *(ev(s) for s in range(1, 5))), snapshot=True)
    assert bounds_of(nxt) == (1, 4, 8)  # 782 row bytes: doubled, over 3/4 of 1000 -- no growth
    _, live = core.on_rows(rows(st(head=6), ev(5), ev(6)), snapshot=True)
    assert (bounds_of(live), live.reason) == ((1, 6, None), "live")
    (again,) = core.on_error(too_big(most=1_000))
    assert (bounds_of(again), again.reason) == ((1, 6, 10), "page")


def test_a_rehydrate_over_max_scan_rows_is_read_as_a_resume_and_a_page_over_it_is_a_clear_error(
        store: CheckpointStore) -> None:
    """The server counts the window's read (no seq bound) and a page (``seq <= B`` is not the resume form) as
    every event after W against ``max_scan_rows``, and does not count the resume form (``seq > W``; the replay
    budget bounds it).  So a window refused ``max_scan_rows`` is read as a resume from W -- still a rehydrate
    until it is applied -- and a page refused ``max_scan_rows`` (the resume was over one message as well) is
    BacklogTooLarge at once: a smaller page is counted the same, so halving it to one event only ended in a
    misleading ``event_too_large``."""
    core = paged_core(store)
    core.on_error(stale_error(epoch=2, floor_seq=3, head_seq=9, reasons=["epoch_changed"]))
    with store.transaction() as tx:
        store.reset(tx, S, 2, 2, rehydrating=True)
    core.rebootstrapped(2, 2, rehydrate=True)
    (resume,) = core.on_error(too_big(limit="max_scan_rows", actual=100_001, most=100_000))
    assert isinstance(resume, Resubscribe) and bounds_of(resume) == (2, 2, None)
    assert store.load(S) == Checkpoint(S, 2, 2, rehydrating=True)
    (again,) = core.on_error(stale_error(epoch=2, floor_seq=3, head_seq=90_000, reasons=["replay_budget_exceeded"]))
    assert isinstance(again, Fail) and isinstance(again.error, BacklogTooLarge)
    assert again.error.reason == "window_over_replay_budget"

    core = paged_core(store)  # (restarted: the window refused by max_scan_rows again, now read as a resume)
    (resume,) = core.on_error(too_big(limit="max_scan_rows", actual=100_001, most=100_000))
    assert isinstance(resume, Resubscribe) and bounds_of(resume) == (2, 2, None)
    assert core.on_rows(rows(st(epoch=2, head=9, floor=3), *(ev(s, epoch=2) for s in range(3, 10))),
                        snapshot=True) == [Ack(2, 9)] and core.state == "live"
    assert store.load(S) == Checkpoint(S, 2, 9, rehydrating=False) and applied(store) == list(range(3, 10))

    core = paged_core(store)
    core.on_error(stale_error(epoch=3, floor_seq=1, head_seq=400, reasons=["epoch_changed"]))
    with store.transaction() as tx:
        store.reset(tx, S, 3, 0, rehydrating=True)
    core.rebootstrapped(3, 0, rehydrate=True)
    core.on_error(too_big(limit="max_scan_rows", actual=401, most=100))  # the window: as a resume
    (page,) = core.on_error(too_big())  # the resume: over one message
    assert bounds_of(page) == (3, 0, 4)
    (fail,) = core.on_error(too_big(limit="max_scan_rows", actual=401, most=100))
    assert isinstance(fail, Fail) and isinstance(fail.error, BacklogTooLarge) and core.state == "failed"
    assert fail.error.reason == "backlog_over_max_scan_rows" and fail.error.seq == 1
    assert "max_scan_rows" in str(fail.error) and fail.error.details["actual"] == 401


def test_a_window_read_as_a_resume_over_the_budget_is_paged_within_the_budget(store: CheckpointStore) -> None:
    """ADR-0042: the window refused ``max_scan_rows`` is read as the resume ``seq > W``; far behind, that is
    stale by the budget alone.  The server holds a page against the budget for ``min(head, B) - W``, so the
    window is read in pages of at most the budget (still a rehydrate; the callback is not called again)."""
    core = paged_core(store, page_events=8)
    core.on_error(stale_error(epoch=2, floor_seq=3, head_seq=90_000, reasons=["epoch_changed"]))
    with store.transaction() as tx:
        store.reset(tx, S, 2, 2, rehydrating=True)
    core.rebootstrapped(2, 2, rehydrate=True)
    (resume,) = core.on_error(too_big(limit="max_scan_rows", actual=90_000, most=100))
    assert bounds_of(resume) == (2, 2, None)  # type: ignore[arg-type]
    over = stale_error(epoch=2, floor_seq=3, head_seq=90_000, reasons=["replay_budget_exceeded"], replay_budget=5)
    (page,) = core.on_error(over)
    assert isinstance(page, Resubscribe) and page.reason == "page" and bounds_of(page) == (2, 2, 7)
    assert core.rehydrating and core.rebootstraps == 1
    (fail,) = core.on_error(over)  # that page (5, the budget) refused by the budget alone: an older server
    assert isinstance(fail, Fail) and isinstance(fail.error, BacklogTooLarge)
    assert fail.error.reason == "window_over_replay_budget"


def test_a_page_refused_for_max_scan_rows_by_its_own_rows_is_cut_to_fit(store: CheckpointStore) -> None:
    """ADR-0042: a page counts its own rows (its events and the stream row) against ``max_scan_rows``.  Refused
    with a count within the page, it is cut to the share that fits; with a count beyond it, the server is one
    from before ADR-0042 (every event after W counted): BacklogTooLarge at once, as before."""
    core = paged_core(store, page_events=8)
    (page,) = core.on_error(too_big())
    assert bounds_of(page) == (1, 0, 8)
    (cut,) = core.on_error(too_big(limit="max_scan_rows", actual=9, most=6))  # 8 events + the stream row
    assert isinstance(cut, Resubscribe) and cut.reason == "page" and bounds_of(cut) == (1, 0, 4)
    (again,) = core.on_error(too_big(limit="max_scan_rows", actual=5, most=4))  # 4 + 1 is the page: cut again
    assert isinstance(again, Resubscribe) and bounds_of(again) == (1, 0, 2)
    (old,) = core.on_error(too_big(limit="max_scan_rows", actual=4, most=3))  # 4 > 2 + 1: beyond the page
    assert isinstance(old, Fail) and isinstance(old.error, BacklogTooLarge)
    assert old.error.reason == "backlog_over_max_scan_rows"
