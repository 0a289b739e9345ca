"""A big ``Subscribe`` snapshot, or an ``Unsubscribe``'s dropped rows, no longer holds the event
loop for everyone: the server steps it ``READ_SLICE_ROWS`` candidate rows at a time with the
loop going to other clients between slices, and the set is registered at the state its snapshot
was taken at (ADR-0041).

Asserted as progress and order, not time (as tests/adapters/test_sliced_reads.py does for one-off
reads): the snapshot's steps are stalled, a step at a time, until another client has been
*answered* over its socket -- a call that appends to the stream being subscribed, and a one-off
read -- possible only if the loop serves others between the slices.  The subscriber must then get
the ``SubscribeApplied`` without that later row, and the row as one update after it, once; the
``UnsubscribeApplied`` likewise.  Over v2 and v3.  The last test plants a server that never slices
(``Engine.slice_rows`` None: the snapshot matched in one call) and shows the progress check
kills it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.server import ServerThread, WireClient, populate_big, rows_of, running_server  # type: ignore[import-not-found]

from adapters import server as server_mod
from adapters import wire
from reference.engine import ALL_ROWS, Snapshot

ROWS = 300
SLICE = 10
KEYED = "SELECT * FROM sync_event WHERE stream_id = 'big' AND idempotency_key > ''"  # every row matched


class Gate:
    """Wraps ``Snapshot.step`` once armed: stalls it (a step that takes no row) until another
    client was answered, counting the stalls -- loop turns others had while the snapshot was in
    progress.  ``give_up_s`` after the first stall it goes on (a fail-safe: the test then fails on
    what it recorded)."""

    def __init__(self, give_up_s: float = 60) -> None:
        self.armed = False
        self.started = threading.Event()
        self.other_answered = threading.Event()
        self.answered_during: bool | None = None
        self.stalls = 0
        self.steps = 0
        self.give_up_s = give_up_s
        self.give_up_at: float | None = None
        self.real = Snapshot.step

    def reset(self) -> None:
        self.started.clear()
        self.other_answered.clear()
        self.answered_during, self.stalls, self.steps, self.give_up_at = None, 0, 0, None

    def step(self, snap: Snapshot, most: int) -> bool:
        if not self.armed:
            return self.real(snap, most)
        self.started.set()
        if most == ALL_ROWS:  # matched in one call: the loop held for all of it
            done = self.real(snap, most)
            self.answered_during = self.other_answered.is_set()
            return done
        if self.give_up_at is None:
            self.give_up_at = time.monotonic() + self.give_up_s
        if not self.other_answered.is_set() and time.monotonic() < self.give_up_at:
            self.stalls += 1
            return False
        self.steps += 1
        done = self.real(snap, most)
        if done:
            self.answered_during = self.other_answered.is_set()
        return done


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerThread, Gate]]:
    monkeypatch.setattr(server_mod, "READ_SLICE_ROWS", SLICE)
    gate = Gate()
    with running_server(tmp_path) as st:
        populate_big(st, ROWS)
        monkeypatch.setattr(Snapshot, "step", lambda snap, most: gate.step(snap, most))
        yield st, gate


def _others(st: ServerThread, gate: Gate, key: str) -> None:
    """Once the snapshot is in progress: another client appends to the stream and reads one row
    (a one-off), and is answered both."""
    assert gate.started.wait(30)
    b = WireClient(st, st.token())
    result = b.call("append_sync_event", "big", key, '{"late":true}', None, None)
    assert isinstance(result.outcome, wire.ReducerOk)
    b.send(wire.OneOffQuery(b.rid(), "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq = 1"))
    answer = b.recv_until(wire.OneOffQueryResult)
    assert isinstance(answer.result, wire.QueryRows)
    gate.other_answered.set()
    b.close()


def _until(a: WireClient, done: type) -> list[Any]:
    """What ``a`` receives up to and including the first ``done`` and one TransactionUpdate."""
    got: list[Any] = []
    while not (any(isinstance(x, done) for x in got) and any(isinstance(x, wire.TransactionUpdate) for x in got)):
        got.append(a.recv(timeout=30))
    return got


def _keys(tables: Any) -> list[str]:
    return [r.idempotency_key for t in tables for r in rows_of("sync_event", t.rows)]


def _update_keys(update: wire.TransactionUpdate, qs: int) -> list[str]:
    """The keys inserted for query set ``qs`` by one update."""
    return [r.idempotency_key for u in update.query_sets if u.query_set_id == qs for t in u.tables for part in t.rows
            if isinstance(part, wire.PersistentTableRows) for r in rows_of("sync_event", part.inserts)]


@pytest.mark.parametrize("version", [2, 3])
def test_others_are_answered_during_a_big_subscribe_and_unsubscribe_which_keep_their_moment(
        served: tuple[ServerThread, Gate], version: int) -> None:
    st, gate = served
    a = WireClient(st, st.token(), version=version)
    gate.armed = True
    a.send(wire.Subscribe(a.rid(), 2, (KEYED,)))
    _others(st, gate, "late")
    got = _until(a, wire.SubscribeApplied)
    assert gate.answered_during is True and gate.stalls > 0 and gate.steps >= ROWS // SLICE
    kinds = [type(x).__name__ for x in got]
    assert kinds == ["SubscribeApplied", "TransactionUpdate"]  # the applied first, B's commit after it, once
    applied, update = got
    assert _keys(applied.rows.tables) == [f"k{i}" for i in range(ROWS)]  # B's row is not in the snapshot ...
    assert _update_keys(update, 2) == ["late"]  # ... it is the update after it

    gate.reset()
    a.send(wire.Unsubscribe(a.rid(), 2, True))
    _others(st, gate, "later")
    got = [a.recv(timeout=30)]
    assert gate.answered_during is True and gate.stalls > 0
    (dropped,) = got
    assert isinstance(dropped, wire.UnsubscribeApplied)  # nothing of the ended set after it
    assert _keys(dropped.rows.tables) == [f"k{i}" for i in range(ROWS)] + ["late"]  # B's "later" is not in it
    a.send(wire.OneOffQuery(a.rid(), "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq = 1"))
    assert isinstance(a.recv(timeout=30), wire.OneOffQueryResult)  # its next answer: no update of the ended set
    a.close()


def test_a_snapshot_matched_in_one_call_is_caught(served: tuple[ServerThread, Gate]) -> None:
    """The planted bug: the server does not slice (``slice_rows`` None); the check above fails."""
    st, gate = served
    st.call(lambda: setattr(st.server.engine, "slice_rows", None))
    a = WireClient(st, st.token())
    gate.armed = True
    a.send(wire.Subscribe(a.rid(), 2, (KEYED,)))
    _others(st, gate, "late")
    _until(a, wire.SubscribeApplied)
    assert gate.answered_during is False and gate.stalls == 0  # what the test above refuses
    a.close()


def test_a_big_subscribe_behind_a_one_off_in_one_v3_frame_is_sliced_by_the_processor(
        served: tuple[ServerThread, Gate]) -> None:
    """The processor's path (the Subscribe queued behind a one-off of the same frame, not taken by
    the reader directly): sliced too, and the answers keep the frame's order."""
    st, gate = served
    a = WireClient(st, st.token(), version=3)
    gate.armed = True
    a.send(wire.OneOffQuery(a.rid(), "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq = 1"),
           wire.Subscribe(a.rid(), 2, (KEYED,)))
    _others(st, gate, "late")
    got = _until(a, wire.SubscribeApplied)
    assert gate.answered_during is True and gate.stalls > 0
    assert [type(x).__name__ for x in got] == ["OneOffQueryResult", "SubscribeApplied", "TransactionUpdate"]
    assert _keys(got[1].rows.tables) == [f"k{i}" for i in range(ROWS)]
    assert _update_keys(got[2], 2) == ["late"]
    a.close()


class Ticks:
    """Counts loop iterations (a ``call_soon`` callback re-armed each time it runs) and, through a
    wrapped ``wire.snapshot_row_encoder``, the count at the first and at the last row a snapshot's
    rows were encoded: iterations between them are turns others had while they were encoded."""

    def __init__(self, st: ServerThread) -> None:
        self.st, self.n, self.running = st, 0, True
        self.first: int | None = None
        self.last: int | None = None
        self.rows = 0
        self.real = wire.snapshot_row_encoder

    def tick(self) -> None:
        self.n += 1
        if self.running:
            self.st.loop.call_soon(self.tick)

    def encoder(self, t: Any, cache: Any) -> Any:
        enc = self.real(t, cache)
        if enc is None or t.table != "sync_event" or len(t.inserts) < ROWS:
            return enc

        def counted(row: Any) -> bytes:
            if self.first is None:
                self.first = self.n
            self.last = self.n
            self.rows += 1
            return bytes(enc(row))
        return counted


@pytest.mark.parametrize("ahead", [True, False])
def test_a_big_snapshot_is_encoded_in_slices_too(served: tuple[ServerThread, Gate], monkeypatch: pytest.MonkeyPatch,
                                                 ahead: bool) -> None:
    """Its rows encoded ahead (``_encode_ahead``, ``READ_SLICE_ROWS`` at a time): the loop turns
    between the first and the last row's encoding are at least the slices'; the client decodes
    the same rows.  ``ahead`` False plants the old path (the sender encodes the snapshot in one
    piece) and shows the count kills it."""
    st, _gate = served
    ticks = Ticks(st)
    monkeypatch.setattr(wire, "snapshot_row_encoder", ticks.encoder)
    if not ahead:
        async def none(self: Any, s: Any, snap: Any) -> None:
            return None
        monkeypatch.setattr(server_mod.SyncServer, "_encode_ahead", none)
    st.call(lambda: st.loop.call_soon(ticks.tick))
    a = WireClient(st, st.token())
    applied = a.subscribe(2, KEYED)
    ticks.running = False
    assert isinstance(applied, wire.SubscribeApplied)
    assert _keys(applied.rows.tables) == [f"k{i}" for i in range(ROWS)]
    assert ticks.rows == ROWS and ticks.first is not None and ticks.last is not None
    turns = ticks.last - ticks.first
    if ahead:
        assert turns >= ROWS // SLICE - 1
    else:
        assert turns == 0  # what the assertion above refuses
    a.close()


def test_encoded_rows_are_the_bytes_the_wire_makes_of_the_rows() -> None:
    """``wire.EncodedRows`` built with ``snapshot_row_encoder`` encodes (``subscribe_applied_parts``,
    ``to_wire`` of an ``UnsubscribeApplied``) to the same bytes as the plain rows, and its size
    estimate is still an upper bound."""
    from reference.engine import Engine
    from spec.auth import Claims
    from spec.messages import Subscribe, SubscribeApplied, TableRows, UnsubscribeApplied
    from spec.schema import SCOPES

    claims = Claims("a" * 64, frozenset(SCOPES), ("*",))
    eng = Engine()
    for i in range(40):
        eng.call_detached(claims, "append_sync_event", (f"s{i % 3}", f"k{i}", f'{{"i":{i}}}', None, None))
    conn = eng.connect(claims, confirmed=False)
    eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM sync_event WHERE payload_hash > ''", "SELECT * FROM sync_stream")))
    (out,) = eng.take(conn, 10, 1 << 40)
    assert isinstance(out.message, SubscribeApplied)
    plain = out.message.rows
    assert {t.table for t in plain} == {"sync_event", "sync_stream"}
    cache = wire.RowCache()

    def ahead(t: TableRows) -> TableRows:
        enc = wire.snapshot_row_encoder(t, cache)
        assert enc is not None
        return wire.EncodedRows(t.table, t.inserts, t.deletes, t.event,
                                wire.RowList.of([enc(r) for r in (*t.inserts, *t.deletes)]))
    both = (*plain, TableRows("sync_event", plain[0].inserts[:5], plain[0].inserts[5:9]))  # deletes too
    encoded = tuple(map(ahead, both))
    for make in (lambda rows: SubscribeApplied(3, 4, rows), lambda rows: UnsubscribeApplied(3, 4, rows)):
        want = b"".join(wire.encode_server_parts(wire.to_wire(make(both))))
        got = b"".join(wire.encode_server_parts(wire.to_wire(make(encoded), cache=wire.RowCache())))
        assert got == want
        assert wire.message_size_bound(make(encoded)) >= len(got)
    assert b"".join(wire.subscribe_applied_parts(SubscribeApplied(3, 4, encoded))) == \
        b"".join(wire.subscribe_applied_parts(SubscribeApplied(3, 4, both)))


def test_a_sliced_snapshot_over_the_message_bound_is_refused_and_sends_nothing_of_its_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over ``max_outbound_message_bytes`` (known once its rows are encoded): the same
    ``SubscriptionError`` as at once, and no update of the set after it (ADR-0041 decision 4)."""
    from support.server import with_limits  # type: ignore[import-not-found]

    from spec.errors import SyncError
    monkeypatch.setattr(server_mod, "READ_SLICE_ROWS", SLICE)
    with running_server(tmp_path, limits=with_limits(max_outbound_message_bytes=20_000)) as st:
        populate_big(st, ROWS)  # 300 rows of ~120 bytes: over 20,000 bytes
        a = WireClient(st, st.token())
        assert isinstance(a.subscribe(1, "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq = 1"),
                          wire.SubscribeApplied)
        refused = a.subscribe(2, KEYED)
        assert isinstance(refused, wire.SubscriptionError) and refused.query_set_id == 2
        err = SyncError.parse(refused.error)
        assert (err.code.value, err.details["limit"]) == ("limit_exceeded", "max_outbound_message_bytes")
        b = WireClient(st, st.token())
        assert isinstance(b.call("append_sync_event", "big", "after", "{}", None, None).outcome, wire.ReducerOk)
        a.send(wire.OneOffQuery(a.rid(), "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq = 1"))
        assert isinstance(a.recv(timeout=30), wire.OneOffQueryResult)  # no update of set 2 came first
        b.close()
        a.close()
