"""The StreamConsumer driver over a real Session, fed wire messages by hand (no network).

Checks the parts the core cannot: stale incarnations of a query set are dropped, gaps resubscribe
(Unsubscribe + Subscribe from the watermark), rebootstrap runs the application's callback inside
the checkpoint transaction, reconnects resume from the watermark, acks are batched and monotonic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters import wire
from adapters.bsatn import encode_row
from adapters.sdk import (
    Checkpoint,
    CheckpointStore,
    ConnectionClosed,
    ReducerError,
    Stale,
    StreamConsumer,
    SubscriptionFailed,
)
from adapters.sdk.session import EndCallback, ErrorCallback, Queries, Session, Subscription, TablesCallback
from spec import query as q
from spec.client import rehydrate_queries
from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.values import Row, SyncEvent, SyncStream

S = "chat.room-1"
ALICE = "c2" + "a" * 62


def ev(seq: int, epoch: int = 1) -> SyncEvent:
    return SyncEvent(S, epoch, seq, f"k{seq}", "sha256:" + f"{seq:064x}", f'{{"n":{seq}}}', ALICE, 10, seq)


def st(epoch: int = 1, head: int = 0, floor: int = 1, continues: tuple[int, int] = (0, 0)) -> SyncStream:
    return SyncStream(S, "default", epoch, *continues, head, floor, 1000, 1, 2)


def rl(rows: Sequence[Row]) -> wire.RowList:
    return wire.RowList.of([encode_row(r) for r in rows])


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


class FakeConn:
    """Session-backed: subscriptions are real, messages are delivered by the test."""

    def __init__(self) -> None:
        self.session = Session()
        self.session.connected()
        self.sent: list[wire.ClientMessage] = []
        self.acks: list[tuple[object, ...]] = []
        self.gate: asyncio.Event | None = None
        self.ack_error: BaseException | None = None

    def subscribe(self, queries: Queries, *, cached: bool = True, on_applied: TablesCallback | None = None,
                  on_update: TablesCallback | None = None, on_error: ErrorCallback | None = None,
                  on_end: EndCallback | None = None) -> Subscription:
        sub = Subscription(queries, cached=cached, on_applied=on_applied, on_update=on_update, on_error=on_error,
                           on_end=on_end)
        sub.owner = lambda s: self.sent.extend(self.session.unsubscribe(s))
        self.sent.extend(self.session.subscribe(sub))
        return sub

    async def call(self, reducer: str, *args: object, timeout: float | None = None) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        self.acks.append((reducer, *args))
        if self.ack_error is not None:
            raise self.ack_error
        return None

    def last_subscribe(self) -> wire.Subscribe:
        msg = [m for m in self.sent if isinstance(m, wire.Subscribe)][-1]
        return msg

    def cursor(self) -> tuple[int, int]:
        tail = q.parse(self.last_subscribe().query_strings[1])[0]
        epoch, low = q.pinned_value(tail, "epoch"), q.lower_bound_exclusive(tail, "seq")
        assert isinstance(epoch, int) and isinstance(low, int)
        return epoch, low

    def snapshot(self, rows: list[Row], qs: int | None = None) -> None:
        m = self.last_subscribe()
        tables = [wire.SingleTableRows("sync_stream", rl([r for r in rows if isinstance(r, SyncStream)])),
                  wire.SingleTableRows("sync_event", rl([r for r in rows if isinstance(r, SyncEvent)]))]
        self.session.receive(wire.SubscribeApplied(m.request_id, m.query_set_id if qs is None else qs,
                                                   wire.QueryRows(tuple(tables))))

    def update(self, rows: list[Row], qs: int | None = None) -> None:
        qs = self.last_subscribe().query_set_id if qs is None else qs
        tus = []
        for table, cls in (("sync_stream", SyncStream), ("sync_event", SyncEvent)):
            mine = [r for r in rows if isinstance(r, cls)]
            if mine:
                tus.append(wire.TableUpdate(table, (wire.PersistentTableRows(rl(mine), wire.EMPTY_ROWS),)))
        self.session.receive(wire.TransactionUpdate((wire.QuerySetUpdate(qs, tuple(tus)),)))

    def error(self, text: str) -> None:
        m = self.last_subscribe()
        self.session.receive(wire.SubscriptionError(m.request_id, m.query_set_id, text))


class App:
    def __init__(self, path: Path) -> None:
        self.store = CheckpointStore(path)
        self.store.db.execute("CREATE TABLE IF NOT EXISTS msgs (seq INTEGER PRIMARY KEY, epoch INTEGER)")
        self.stales: list[Stale] = []
        self.fail_rebootstrap = False

    def apply(self, tx: sqlite3.Connection, e: SyncEvent) -> None:
        tx.execute("INSERT INTO msgs VALUES (?, ?)", (e.seq, e.epoch))

    def rebootstrap(self, tx: sqlite3.Connection, stale: Stale) -> int | None:
        self.stales.append(stale)
        tx.execute("DELETE FROM msgs")
        if self.fail_rebootstrap:
            raise RuntimeError("authority unreachable")
        return None

    def msgs(self) -> list[tuple[int, int]]:
        return [(s, e) for s, e in self.store.db.execute("SELECT seq, epoch FROM msgs ORDER BY seq")]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def consumer(conn: FakeConn, app: App, **kw: Any) -> StreamConsumer:
    return StreamConsumer(conn, app.store, S, apply=app.apply, on_rebootstrap=app.rebootstrap,
                          client_id="laptop", **kw)


def test_replay_then_live_tail_then_gap_resubscribes_and_drops_the_old_incarnation(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app)
        await c.start()
        assert conn.cursor() == (1, 0)
        conn.snapshot([st(head=3), ev(1), ev(2), ev(3)])
        await c.wait_for(3)
        conn.update([st(head=4), ev(4)])
        await c.wait_for(4)
        old_qs = conn.last_subscribe().query_set_id
        conn.update([st(head=6), ev(6)])  # 5 is missing
        await settle()
        assert c.core.gaps == 1 and conn.cursor() == (1, 4)
        unsub = [m for m in conn.sent if isinstance(m, wire.Unsubscribe)]
        assert [u.query_set_id for u in unsub] == [old_qs]
        conn.update([ev(5)], qs=old_qs)  # late message of the old incarnation: ignored
        await settle()
        assert c.watermark == 4
        conn.snapshot([st(head=6), ev(5), ev(6)])
        await c.wait_for(6)
        assert app.msgs() == [(i, 1) for i in range(1, 7)]
        await c.flush_acks()
        assert conn.acks[-1] == ("ack_checkpoint", "laptop", S, 1, 6)
        await c.stop()
    run(body())


def test_stale_error_runs_the_callback_in_the_checkpoint_transaction(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=2), ev(1), ev(2)])
        await c.wait_for(2)
        await c.stop()
        await c.start()  # resume: (1, 2); the server has reset the stream meanwhile
        assert conn.cursor() == (1, 2)
        conn.error(SyncError(ErrorCode.STALE_CURSOR, {
            "epoch": 2, "floor_seq": 4, "head_seq": 9, "reasons": ["epoch_changed"], "replay_budget": 100,
            "requested_epoch": 1, "requested_watermark": 2, "stream_id": S}).render())
        await settle()
        assert [s.reasons for s in app.stales] == [("epoch_changed",)]
        assert app.msgs() == []  # the callback's DELETE committed with the reset
        cp = app.store.load(S)
        assert cp is not None and (cp.epoch, cp.watermark) == (2, 3)
        assert conn.last_subscribe().query_strings == rehydrate_queries(S)  # the window, no seq bound
        conn.snapshot([st(epoch=2, head=4, floor=4), ev(4, epoch=2)])
        await c.wait_for(4, epoch=2)
        assert app.msgs() == [(4, 2)]
        await c.stop()
    run(body())


def test_a_rehydrate_under_way_stays_under_way_across_a_continue(tmp_path: Path) -> None:
    """A rehydrate's window read answered by a stream row whose epoch continues the consumer's (the server
    restarted uncleanly meanwhile): the consumer continues (no callback) and still reads the window with
    no seq bound, the mark kept in the store, until the window is applied."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app)
        await c.start()
        conn.error(SyncError(ErrorCode.STALE_CURSOR, {
            "epoch": 2, "floor_seq": 4, "head_seq": 9, "reasons": ["epoch_changed"], "replay_budget": 100,
            "requested_epoch": 1, "requested_watermark": 0, "stream_id": S}).render())
        await settle()
        assert app.store.load(S) == Checkpoint(S, 2, 3, rehydrating=True)
        conn.snapshot([st(epoch=3, head=9, floor=4, continues=(2, 9))])  # the window's row: epoch 3 continues 2
        await settle()
        assert len(app.stales) == 1 and c.core.continues == 1
        assert app.store.load(S) == Checkpoint(S, 3, 3, rehydrating=True)
        assert conn.last_subscribe().query_strings == rehydrate_queries(S)
        conn.snapshot([st(epoch=3, head=5, floor=4), ev(4, epoch=3), ev(5, epoch=3)])
        await c.wait_for(5, epoch=3)
        assert app.store.load(S) == Checkpoint(S, 3, 5) and app.msgs() == [(4, 3), (5, 3)]
        await c.stop()
    run(body())


def test_stale_stream_row_and_a_failing_callback_leave_the_checkpoint_alone(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        errors: list[BaseException] = []
        c = consumer(conn, app, on_error=errors.append)
        await c.start()
        conn.snapshot([st(head=2), ev(1), ev(2)])
        await c.wait_for(2)
        app.fail_rebootstrap = True
        conn.update([st(epoch=2, head=5, floor=1)])
        await settle()
        assert [s.reasons for s in app.stales] == [("epoch_changed",)]
        assert isinstance(c.error, RuntimeError) and errors == [c.error]
        cp = app.store.load(S)
        assert cp is not None and (cp.epoch, cp.watermark) == (1, 2)
        assert app.msgs() == [(1, 1), (2, 1)]  # the callback's DELETE was rolled back
        with pytest.raises(RuntimeError):
            await c.wait_for(3)
        await c.stop()
    run(body())


def test_async_rebootstrap_callbacks_are_awaited(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")

        async def rehydrate(tx: sqlite3.Connection, stale: Stale) -> int:
            await asyncio.sleep(0)
            tx.execute("DELETE FROM msgs")
            tx.execute("INSERT INTO msgs VALUES (?, ?)", (7, stale.epoch))  # state up to 7 from the authority
            return 7

        c = StreamConsumer(conn, app.store, S, apply=app.apply, on_rebootstrap=rehydrate)
        await c.start()
        conn.snapshot([st(epoch=3, head=9, floor=5)])
        await settle()
        assert conn.cursor() == (3, 7)
        conn.snapshot([st(epoch=3, head=9, floor=5), ev(8, epoch=3), ev(9, epoch=3)])
        await c.wait_for(9)
        assert app.msgs() == [(7, 3), (8, 3), (9, 3)]
        assert conn.acks == []  # no client_id: no acks
        await c.stop()
    run(body())


def test_a_reconnect_resubscribes_from_the_current_watermark(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=3), ev(1), ev(2), ev(3)])
        await c.wait_for(3)
        old_qs = conn.last_subscribe().query_set_id
        conn.session.disconnected()
        conn.sent.extend(conn.session.connected())
        assert conn.cursor() == (1, 3) and conn.last_subscribe().query_set_id != old_qs
        conn.snapshot([st(head=4), ev(4)])
        await c.wait_for(4)
        assert app.msgs() == [(i, 1) for i in range(1, 5)]
        await c.stop()
    run(body())


def test_acks_are_batched_while_one_is_in_flight(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        conn.gate = asyncio.Event()
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=1), ev(1)])
        await c.wait_for(1)
        for seq in range(2, 6):
            conn.update([st(head=seq), ev(seq)])
            await c.wait_for(seq)
        conn.gate.set()
        await c.flush_acks()
        assert conn.acks == [("ack_checkpoint", "laptop", S, 1, 1), ("ack_checkpoint", "laptop", S, 1, 5)]
        await c.stop()
    run(body())


def test_a_refused_ack_is_not_retried_forever(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        conn.ack_error = ReducerError("ack_checkpoint", SyncError(ErrorCode.STALE_EPOCH, {}).render())
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=2), ev(1), ev(2)])
        await c.wait_for(2)
        await c.flush_acks()
        await settle()
        assert len(conn.acks) == 1 and c.error is None
        assert c.acked is None and c.acks_sent == 0  # refused: not reported as acknowledged
        await c.stop()
    run(body())


@pytest.mark.parametrize("code", [ErrorCode.MISSING_SCOPE, ErrorCode.FORBIDDEN_STREAM, ErrorCode.FORBIDDEN])
def test_an_ack_refused_for_good_stops_acking_once_and_is_not_reported_as_acked(
        tmp_path: Path, code: ErrorCode, caplog: pytest.LogCaptureFixture) -> None:
    """A token without sync.checkpoint.write (or a client id another identity owns) has every ack refused
    the same way.  Before, the consumer called ack_checkpoint after every delivered message, logged one
    warning each (a real server: 40 appends, 40 warnings) and set ``acked`` to every refused target, so
    ``consumer.acked`` claimed (1, 40) with nothing acknowledged.  Now the first such refusal stops the acks
    (one warning, ``ack_error``), ``acked`` stays what the server accepted, and consuming goes on."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        conn.ack_error = ReducerError("ack_checkpoint", SyncError(code, {}).render())
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=1), ev(1)])
        await c.wait_for(1)
        await settle()
        for seq in range(2, 8):
            conn.update([st(head=seq), ev(seq)])
            await c.wait_for(seq)
            await settle()
        await c.flush_acks()
        assert len(conn.acks) == 1 and c.acked is None and c.error is None
        assert isinstance(c.ack_error, ReducerError) and c.ack_error.code == code.value
        assert app.msgs() == [(seq, 1) for seq in range(1, 8)]
        await c.stop()
    with caplog.at_level(logging.WARNING, logger="syncref.sdk.consumer"):
        run(body())
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_stopping_the_consumer_wakes_a_wait_for_instead_of_leaving_it_hanging(tmp_path: Path) -> None:
    """``stop()`` while another task awaits ``wait_for(seq)``: nothing will move the watermark, so the
    waiter is told (LocalProtocolError, the application's own stop) rather than left hanging forever, as it
    was.  A stop before the wait, and a restart after it, behave as before: wait_for waits for the restart."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=1), ev(1)])
        await c.wait_for(1)
        waiter = asyncio.create_task(c.wait_for(5))
        await settle()
        await c.stop()
        with pytest.raises(LocalProtocolError, match="stopped"):
            await asyncio.wait_for(waiter, 5)
        later = asyncio.create_task(c.wait_for(2))  # stopped already: waits for a start
        await c.start()
        conn.snapshot([st(head=2), ev(2)])
        assert await asyncio.wait_for(later, 5) == 2
        await c.stop()
    run(body())


def test_waiting_on_a_failed_consumer_again_and_again_does_not_grow_its_error(tmp_path: Path) -> None:
    """``wait_for`` on a failed consumer re-raises ``consumer.error``: one object, whose traceback grew by
    the waiter's frames at every call (and pinned them).  Each raise now starts it afresh."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app)
        await c.start()
        conn.error(SyncError(ErrorCode.INVALID_QUERY, {"query": "x", "message": "bad"}).render())
        depths = []
        for _ in range(30):
            with pytest.raises(SubscriptionFailed) as info:
                await c.wait_for(1)
            tb, n = info.value.__traceback__, 0
            while tb is not None:
                tb, n = tb.tb_next, n + 1
            depths.append(n)
        assert depths[-1] == depths[1] and max(depths) < 10 and info.value is c.error
        await c.stop()
        app.apply = broken_apply  # type: ignore[method-assign]
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=1), ev(1)])
        for _ in range(3):  # the application's bug keeps its own frames, each time
            with pytest.raises(KeyError) as bug:
                await c.wait_for(1)
            assert "broken_apply" in [entry.name for entry in bug.traceback]
        await c.stop()
    run(body())


def broken_apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
    raise KeyError("text")


def test_a_poison_event_stops_the_consumer_and_restart_resumes_there(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        poison = {3}

        def apply(tx: sqlite3.Connection, e: SyncEvent) -> None:
            if e.seq in poison:
                raise ValueError(f"cannot apply {e.seq}")
            app.apply(tx, e)

        c = StreamConsumer(conn, app.store, S, apply=apply, on_rebootstrap=app.rebootstrap)
        await c.start()
        conn.snapshot([st(head=4), ev(1), ev(2), ev(3), ev(4)])
        with pytest.raises(ValueError):
            await c.wait_for(4)
        assert c.watermark == 2 and app.msgs() == [(1, 1), (2, 1)]
        poison.clear()
        await c.stop()
        await c.start()
        assert conn.cursor() == (1, 2)
        conn.snapshot([st(head=4), ev(3), ev(4)])
        await c.wait_for(4)
        assert app.msgs() == [(i, 1) for i in range(1, 5)]
        await c.stop()
    run(body())


def test_closing_the_connection_under_a_running_consumer_stops_it(tmp_path: Path) -> None:
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app)
        await c.start()
        conn.snapshot([st(head=1), ev(1)])
        await c.wait_for(1)
        conn.session.close()
        with pytest.raises(ConnectionClosed):
            await c.wait_for(2)
        await c.stop()
    run(body())


def test_consumers_sharing_a_store_wait_for_an_awaiting_rebootstrap(tmp_path: Path) -> None:
    """One SQLite file, two streams (the application's state and both checkpoints together).  While
    one consumer's async ``on_rebootstrap`` awaits inside its checkpoint transaction, the other's
    delivery waits for it, then applies -- it used to fail at once with "a checkpoint transaction is
    already open" (and stop for good)."""
    other = "chat.room-2"

    def ev2(seq: int) -> SyncEvent:
        return SyncEvent(other, 1, seq, f"k{seq}", "sha256:" + f"{seq:064x}", f'{{"n":{seq}}}', ALICE, 10, seq)

    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        app.store.db.execute("CREATE TABLE msgs2 (seq INTEGER PRIMARY KEY)")
        authority = asyncio.Event()

        async def rehydrate(tx: sqlite3.Connection, stale: Stale) -> int:
            tx.execute("DELETE FROM msgs")
            await authority.wait()  # e.g. fetching the state from the application's authority
            return stale.head_seq

        def apply2(tx: sqlite3.Connection, e: SyncEvent) -> None:
            tx.execute("INSERT INTO msgs2 VALUES (?)", (e.seq,))

        a = StreamConsumer(conn, app.store, S, apply=app.apply, on_rebootstrap=rehydrate)
        b = StreamConsumer(conn, app.store, other, apply=apply2, on_rebootstrap=app.rebootstrap)
        await a.start()
        await b.start()
        assert a.subscription is not None and b.subscription is not None
        qs_a, qs_b = a.subscription.query_set_id, b.subscription.query_set_id
        conn.snapshot([st(epoch=2, head=4, floor=1)], qs=qs_a)  # a: epoch changed, rebootstrap (awaiting)
        await settle()
        conn.snapshot([SyncStream(other, "default", 1, 0, 0, 2, 1, 1000, 1, 2), ev2(1), ev2(2)], qs=qs_b)
        await settle()
        assert b.error is None, b.error
        authority.set()
        await b.wait_for(2)
        await settle()
        assert a.error is None and (a.epoch, a.watermark) == (2, 4)
        assert [s for (s,) in app.store.db.execute("SELECT seq FROM msgs2 ORDER BY seq")] == [1, 2]
        for c in (a, b):
            await c.stop()
    run(body())


def test_a_second_consumer_of_a_stream_on_the_same_store_is_refused(tmp_path: Path) -> None:
    """A store holds one checkpoint per stream, so two consumers of one stream through it share one
    watermark: a second projection of the stream (its own ``apply``) silently never saw the events the
    first had applied (they were "duplicates" below the shared watermark), and each one's rebootstrap
    dropped what the other had applied.  The second ``start()`` is refused while the first follows
    the stream; once it has stopped (or failed), another may take over, from the stored watermark."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        app.store.db.execute("CREATE TABLE projection (seq INTEGER PRIMARY KEY)")
        first = consumer(conn, app)

        def project(tx: sqlite3.Connection, e: SyncEvent) -> None:
            tx.execute("INSERT INTO projection VALUES (?)", (e.seq,))
        second = StreamConsumer(conn, app.store, S, apply=project, on_rebootstrap=app.rebootstrap)
        await first.start()
        with pytest.raises(LocalProtocolError, match="already follows"):
            await second.start()
        conn.snapshot([st(head=2), ev(1), ev(2)])
        await first.wait_for(2)
        await first.stop()
        await second.start()  # takes over from the stored watermark
        assert conn.cursor() == (1, 2)
        conn.snapshot([st(head=3), ev(3)])
        await second.wait_for(3)
        assert app.msgs() == [(1, 1), (2, 1)]
        assert [s for (s,) in app.store.db.execute("SELECT seq FROM projection")] == [3]
        await second.stop()
    run(body())


def test_a_consumer_that_failed_or_whose_task_ended_without_stop_lets_another_follow(tmp_path: Path) -> None:
    """The one-follower rule holds a stream only while its consumer follows it: one whose ``apply``
    raised (failed), and one whose task was cancelled without ``stop()`` (its owner's task group torn
    down), let another consumer of the stream start on the same store, from the stored watermark.
    (Passes: sdk2's release checked sound.)"""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")

        def boom(tx: sqlite3.Connection, e: SyncEvent) -> None:
            if e.seq == 2:
                raise ValueError("apply failed")
            app.apply(tx, e)
        failing = StreamConsumer(conn, app.store, S, apply=boom, on_rebootstrap=app.rebootstrap)
        await failing.start()
        conn.snapshot([st(head=2), ev(1), ev(2)])
        with pytest.raises(ValueError, match="apply failed"):
            await failing.wait_for(2)
        crashed = consumer(conn, app)
        await crashed.start()  # the failed one holds nothing
        assert conn.cursor() == (1, 1)
        task = crashed._task
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        third = consumer(conn, app)
        await third.start()  # nor does one whose task ended without stop()
        with pytest.raises(LocalProtocolError, match="already follows"):
            await failing.start()  # while this one follows, the failed one may not come back
        conn.snapshot([st(head=2), ev(2)])
        await third.wait_for(2)
        assert app.msgs() == [(1, 1), (2, 1)]
        for c in (failing, crashed, third):
            await c.stop()
    run(body())


def test_a_checkpoint_moved_by_another_store_on_the_file_stops_the_consumer(tmp_path: Path) -> None:
    """Two processes (here: two stores on one file) following one stream share its one checkpoint row,
    which no in-process check can see.  The consumer whose watermark was moved under it used to skip
    the events the other had applied, silently (a second projection never saw them); its checkpoint
    is only ever moved by itself, so a stored watermark other than its own now stops it, loudly."""
    async def body() -> None:
        app, other = App(tmp_path / "a.sqlite"), App(tmp_path / "a.sqlite")
        conn_a, conn_b = FakeConn(), FakeConn()
        other.store.db.execute("CREATE TABLE IF NOT EXISTS projection (seq INTEGER PRIMARY KEY)")

        def project(tx: sqlite3.Connection, e: SyncEvent) -> None:
            tx.execute("INSERT INTO projection VALUES (?)", (e.seq,))
        a = consumer(conn_a, app)
        b = StreamConsumer(conn_b, other.store, S, apply=project, on_rebootstrap=other.rebootstrap)
        await a.start()
        await b.start()
        conn_a.snapshot([st(head=2), ev(1), ev(2)])
        await a.wait_for(2)
        conn_b.snapshot([st(head=2), ev(1), ev(2)])
        with pytest.raises(LocalProtocolError, match="moved"):
            await b.wait_for(2)
        assert b.watermark == 0 and [s for (s,) in other.store.db.execute("SELECT seq FROM projection")] == []
        for c in (a, b):
            await c.stop()
        other.store.close()
    run(body())


def test_a_continue_does_not_rewind_a_checkpoint_another_store_moved(tmp_path: Path) -> None:
    """The same as above, but the behind consumer's next delivery is a stream row whose epoch continues
    its own (an unclean server restart): its Continue rewrote the shared row with its own, older
    watermark (under the new epoch), then resumed from there and applied the other's events a second
    time into the application's state -- silently (failed before: the log held seqs 1, 2, 1, 2 and the
    checkpoint (2, 2) with no error).  A Continue, too, is refused when the stored checkpoint is not
    the consumer's own, and writes nothing."""
    async def body() -> None:
        app, other = App(tmp_path / "a.sqlite"), App(tmp_path / "a.sqlite")
        conn_a, conn_b = FakeConn(), FakeConn()
        app.store.db.execute("CREATE TABLE log (seq INTEGER, epoch INTEGER)")  # one instance's effects, no key

        def log_it(tx: sqlite3.Connection, e: SyncEvent) -> None:
            tx.execute("INSERT INTO log VALUES (?, ?)", (e.seq, e.epoch))
        a = StreamConsumer(conn_a, app.store, S, apply=log_it, on_rebootstrap=app.rebootstrap)
        b = StreamConsumer(conn_b, other.store, S, apply=log_it, on_rebootstrap=other.rebootstrap)
        await a.start()
        await b.start()
        conn_a.snapshot([st(head=2), ev(1), ev(2)])
        await a.wait_for(2)
        conn_b.snapshot([st(epoch=2, head=2, continues=(1, 2))])  # epoch 2 continues epoch 1 up to seq 2
        await settle()
        if b.error is None:  # (before: b continued from watermark 0 and was answered with the replay)
            conn_b.snapshot([st(epoch=2, head=2), ev(1, epoch=2), ev(2, epoch=2)])
            await settle()
        assert [s for (s, _) in app.store.db.execute("SELECT seq, epoch FROM log")] == [1, 2]
        assert isinstance(b.error, LocalProtocolError) and "moved" in str(b.error), b.error
        assert app.store.load(S) == Checkpoint(S, 1, 2)
        for c in (a, b):
            await c.stop()
        other.store.close()
    run(body())


def test_a_backlog_past_the_queue_bound_is_shed_and_replayed_from_the_watermark(tmp_path: Path) -> None:
    """A server (hostile, or just a busy stream) that sends faster than ``apply`` commits: the reader
    takes every frame at once, so the consumer's queue -- not the server's slow-consumer bound -- used
    to grow without limit.  Past ``max_queue`` messages the consumer unsubscribes, drops what arrives
    for that set meanwhile, finishes what it kept, and resubscribes from its durable watermark: every
    event is still applied exactly once, in order."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app, max_queue=3)
        await c.start()
        conn.snapshot([st(head=0)])
        await settle()
        assert c.queued == 0
        for seq in range(1, 11):  # ten messages before the consumer's task gets a turn
            conn.update([st(head=seq), ev(seq)])
        assert c.queued <= 3, c.queued
        unsub = conn.sent[-1]
        assert isinstance(unsub, wire.Unsubscribe)
        await c.wait_for(3)
        await settle()
        assert c.watermark == 3 and c.overflows == 1
        conn.session.receive(wire.UnsubscribeApplied(unsub.request_id, unsub.query_set_id, None))
        await settle()
        assert conn.cursor() == (1, 3)  # resumed from the watermark
        conn.snapshot([st(head=10), *(ev(s) for s in range(4, 11))])
        await c.wait_for(10)
        assert app.msgs() == [(i, 1) for i in range(1, 11)] and c.error is None
        await c.stop()
    run(body())


def test_a_snapshot_larger_than_the_byte_bound_is_applied_not_shed_forever(tmp_path: Path) -> None:
    """The byte bound cuts a *backlog*, and a snapshot is its set's first message (nothing of the set
    queued before it): it is always taken (the server bounds one message, ``max_outbound_message_bytes``).
    A replay snapshot over ``max_queue_bytes`` used to be shed, resubscribed from the same watermark,
    answered with the same snapshot and shed again, forever: no progress and nothing reported."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app, max_queue_bytes=200)
        await c.start()

        async def answer_sheds(rows: list[Row]) -> None:
            for _ in range(3):  # as the server would: the unsubscribe applied, the same rows again
                if not isinstance(conn.sent[-1], wire.Unsubscribe):
                    return
                unsub = conn.sent[-1]
                conn.session.receive(wire.UnsubscribeApplied(unsub.request_id, unsub.query_set_id, None))
                await settle()
                conn.snapshot(rows)
                await settle()

        replay = [st(head=5), *(ev(s) for s in range(1, 6))]
        assert sum(len(encode_row(r)) for r in replay) > 200
        conn.snapshot(replay)
        await settle()
        await answer_sheds(replay)
        assert (c.overflows, c.watermark, c.error) == (0, 5, None)
        assert app.msgs() == [(i, 1) for i in range(1, 6)]
        big = [st(head=6), ev(6)]
        conn.update(big)  # an update over the bound is shed, and comes back as the resubscription's snapshot
        await settle()
        assert c.overflows == 1
        await answer_sheds(big)
        assert conn.cursor() == (1, 5)
        await c.wait_for(6)
        assert app.msgs() == [(i, 1) for i in range(1, 7)] and c.error is None
        await c.stop()
    run(body())


def test_an_async_on_error_is_run(tmp_path: Path) -> None:
    """An ``async def`` on_error used to be called and its coroutine dropped: the application never heard
    of the failure.  It runs as a task (not under the store's lock)."""
    async def body() -> None:
        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        errors: list[BaseException] = []

        async def on_error(exc: BaseException) -> None:
            await asyncio.sleep(0)
            errors.append(exc)

        c = consumer(conn, app, on_error=on_error)
        await c.start()
        conn.error(SyncError(ErrorCode.INVALID_QUERY, {"message": "no"}).render())
        async with asyncio.timeout(5):
            while not errors:
                await asyncio.sleep(0.005)
        assert errors == [c.error] and isinstance(c.error, SubscriptionFailed)
        await c.stop()
    run(body())


async def _failed_with_async_on_error(tmp_path: Path, on_error: Any, **kw: Any) -> StreamConsumer:
    """A consumer whose subscription is refused (it fails), its async ``on_error`` started."""
    conn, app = FakeConn(), App(tmp_path / "a.sqlite")
    c = consumer(conn, app, on_error=on_error, **kw)
    await c.start()
    conn.error(SyncError(ErrorCode.INVALID_QUERY, {"message": "no"}).render())
    async with asyncio.timeout(5):
        while c.error is None:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0)  # the callback's task takes its first step
    return c


def test_stop_waits_for_an_async_on_error_it_started(tmp_path: Path) -> None:
    """After ``stop()`` returns, no ``on_error`` the consumer started is still running: a slow one (here
    0.1 s, under ``stop_timeout``) is awaited to its end.  Failed before: ``stop()`` returned while the
    callback was still in its sleep (``states == ["started"]``)."""
    async def body() -> None:
        states: list[str] = []

        async def on_error(exc: BaseException) -> None:
            states.append("started")
            await asyncio.sleep(0.1)
            states.append("done")

        c = await _failed_with_async_on_error(tmp_path, on_error)
        assert states == ["started"]
        await c.stop()
        assert states == ["started", "done"]
    run(body())


def test_stop_cancels_an_async_on_error_that_outlives_stop_timeout(tmp_path: Path) -> None:
    """One that hangs gets ``stop_timeout`` (2 s by default; 0.05 s here), then is cancelled -- and is
    over when ``stop()`` returns.  Failed before: still waiting, never cancelled."""
    async def body() -> None:
        states: list[str] = []

        async def on_error(exc: BaseException) -> None:
            states.append("started")
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                states.append("cancelled")
                raise

        c = await _failed_with_async_on_error(tmp_path, on_error)
        c.stop_timeout = 0.05
        await c.stop()
        assert states == ["started", "cancelled"]
    run(body())


def test_an_async_on_error_may_stop_its_consumer(tmp_path: Path) -> None:
    """``stop()`` called from the ``on_error`` it would wait for does not wait for itself (it would until
    ``stop_timeout``, then cancel itself in the middle of its stop)."""
    async def body() -> None:
        states: list[str] = []
        box: list[StreamConsumer] = []

        async def on_error(exc: BaseException) -> None:
            await box[0].stop()
            states.append("stopped")

        conn, app = FakeConn(), App(tmp_path / "a.sqlite")
        c = consumer(conn, app, on_error=on_error)
        c.stop_timeout = 5.0
        box.append(c)
        await c.start()
        conn.error(SyncError(ErrorCode.INVALID_QUERY, {"message": "no"}).render())
        async with asyncio.timeout(1):
            while not states:
                await asyncio.sleep(0.005)
        assert states == ["stopped"] and c.subscription is None
    run(body())
