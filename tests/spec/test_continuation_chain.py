"""CONT-1 over a chain of unclean restarts (ADR-0010; issue 9, found by the chaos harness), on the model.

An unclean restart's new epoch continues the old one up to the durable head, and -- since ADR-0010 --
every epoch the old one continued, each bound the minimum of the durable heads since
(``earlier_epochs``/``earlier_seqs``).  A confirmed reader away through two or more unclean restarts
continues with no rebootstrap; a reader past a bound rebootstraps; the recovery check (CONT-1) and
the stream layout (SEQ-1) refuse a recovery that drops or inflates the chain.  This file is the
killer of the chain's planted mutants (tests/support/mutants.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spec.auth import Claims
from spec.client import continues
from spec.invariants import check_recovery, check_state
from spec.policy import MAX_CONTINUATION_HOPS, Policy
from spec.reducers import unclean_restart
from spec.state import DbState
from spec.system import System
from spec.values import SyncStream

ME = Claims("a" * 64, frozenset({"sync.append", "sync.subscribe", "presence.write"}), ("s*",))


def _pump(sysm: System, *clients: int) -> None:
    moved = True
    while moved:
        moved = False
        for i in clients:
            while sysm.server_step(i) or sysm.deliver(i):
                moved = True


@pytest.mark.parametrize("crashes", [2, 3])
def test_a_reader_two_or_more_unclean_restarts_behind_continues_CONT_1(crashes: int) -> None:
    """CONT-1 over a chain (ADR-0010; issue 9, found by the chaos harness): a confirmed reader away
    through two or more unclean restarts, its watermark at or below every durable head since its epoch,
    adopts the newest epoch with its watermark and events, no rebootstrap.  With only the last hop in
    the stream row (before ADR-0010) it rebootstrapped."""
    sysm = System(Policy(), [("writer", ME, True), ("reader", ME, True)], max_undurable=4)
    sysm.connect(0)
    sysm.connect(1)
    sysm.follow(1, "s")
    for k in ("a", "b", "c"):
        sysm.call(0, "append_sync_event", ("s", k, "{}", None, None))
    sysm.advance_durable(99)
    _pump(sysm, 0, 1)
    sysm.advance_durable(99)
    _pump(sysm, 0, 1)
    reader = sysm.clients[1].streams["s"]
    start_epoch, boots, conts = reader.epoch, reader.rebootstraps, reader.continues
    assert reader.last == 3
    sysm.disconnect(1)
    for n in range(crashes):
        sysm.connect(0)
        sysm.call(0, "append_sync_event", ("s", f"x{n}", "{}", None, None))
        _pump(sysm, 0)
        sysm.advance_durable(99)
        _pump(sysm, 0)
        sysm.crash()
    stream = sysm.server.db.find(SyncStream, lambda r: r.stream_id == "s")
    assert stream is not None and len(stream.earlier_epochs) == crashes - 1
    assert start_epoch in stream.earlier_epochs
    sysm.connect(1)
    _pump(sysm, 1)
    reader = sysm.clients[1].streams["s"]
    assert (reader.epoch, reader.rebootstraps, reader.continues) == (stream.epoch, boots, conts + 1)
    assert [seq for seq, _ in reader.applied][:3] == [1, 2, 3]
    sysm.advance_durable(99)
    _pump(sysm, 0, 1)
    assert reader.last == stream.head_seq == 3 + crashes
    assert not sysm.trace.violations


def test_a_reader_past_a_hop_s_bound_rebootstraps_CONT_1() -> None:
    """The chain's bound is the minimum over the hops since the reader's epoch: a view past it
    rebootstraps (``spec.client.continues`` on a table of chains)."""
    # E1 -> E6 (head 3) -> E11 (head 5): E11 continues E6 up to 5 and E1 up to min(3, 5) = 3
    assert continues(1, 3, 11, 6, 5, (1,), (3,))
    assert not continues(1, 4, 11, 6, 5, (1,), (3,))
    assert continues(6, 5, 11, 6, 5, (1,), (3,))
    # a chain written hop by hop (bounds not folded) is read as the minimum too
    assert not continues(1, 4, 11, 6, 3, (1,), (5,))
    assert not continues(2, 0, 11, 6, 5, (1,), (3,))  # not on the chain
    assert not continues(1, 0, 11, 6, 5, (1,), ())  # malformed
    assert not continues(11, 0, 11, 6, 5, (1,), (3,))  # same epoch: nothing to adopt


def _with_stream(db: DbState, row: SyncStream) -> DbState:
    return replace(db, tables={**db.tables, "sync_stream": (row,)})


def test_the_recovery_check_refuses_a_dropped_or_inflated_chain_CONT_1() -> None:
    sysm = System(Policy(), [("writer", ME, True)], max_undurable=4)
    for n in range(3):
        sysm.connect(0)
        sysm.call(0, "append_sync_event", ("s", f"x{n}", "{}", None, None))
        _pump(sysm, 0)
        sysm.advance_durable(99)
        _pump(sysm, 0)
        sysm.crash()
    before = sysm.server.db
    (s,) = before.of_type(SyncStream)
    assert (s.continues_seq, s.earlier_seqs) == (3, (2, 1)) and not check_state(before)
    good = unclean_restart(before, 1, 4)
    assert not check_recovery(before, good, 4)
    (g,) = good.of_type(SyncStream)
    assert (g.continues_epoch, g.continues_seq, g.earlier_epochs, g.earlier_seqs) == (
        s.epoch, 3, (s.continues_epoch, *s.earlier_epochs), (3, 2, 1))
    for bad in (replace(g, earlier_epochs=(), earlier_seqs=()),  # the chain dropped
                replace(g, earlier_seqs=(3, 3, 1)),  # a bound above what survived since
                replace(g, earlier_epochs=g.earlier_epochs[:2], earlier_seqs=g.earlier_seqs[:2])):  # a usable hop cut
        assert any(v[0] == "CONT-1" for v in check_recovery(before, _with_stream(good, bad), 4)), bad
    # SEQ-1: arrays of different lengths, rising bounds, epochs not falling
    for bad in (replace(g, earlier_seqs=(3, 2)), replace(g, earlier_seqs=(1, 2, 3)),
                replace(g, earlier_epochs=tuple(reversed(g.earlier_epochs)))):
        assert any(v[0] == "SEQ-1" for v in check_state(_with_stream(good, bad))), bad


def test_the_chain_is_capped_and_cut_below_the_floor_CONT_1() -> None:
    # a stream 40 restarts deep, every bound 5, floor 1: the next restart keeps MAX_CONTINUATION_HOPS epochs
    deep = SyncStream("s", "default", 100, 99, 5, 5, 1, 10, 0, 0, tuple(range(98, 58, -1)), (5,) * 40)
    (after,) = unclean_restart(_with_stream(DbState(), deep), 1, 4).of_type(SyncStream)
    assert len(after.earlier_epochs) == MAX_CONTINUATION_HOPS - 1
    assert after.earlier_epochs == (99, *range(98, 98 - MAX_CONTINUATION_HOPS + 2, -1))
    # floor 5: a bound of 3 is unusable (W <= 3 < floor - 1 is below the floor anyway): cut with all older
    cut = SyncStream("s", "default", 100, 99, 6, 6, 5, 10, 0, 0, (98, 97, 96), (5, 3, 2))
    (after,) = unclean_restart(_with_stream(DbState(), cut), 1, 4).of_type(SyncStream)
    assert (after.continues_epoch, after.earlier_epochs, after.earlier_seqs) == (100, (99, 98), (6, 5))
