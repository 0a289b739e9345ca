"""The engine carries the continuation chain across unclean restarts (ADR-0010, CONT-1).

Before ADR-0010 the recovery transaction recorded only the last hop, so a confirmed reader two
unclean restarts behind met ``continues_epoch`` = the epoch just before the current one and had to
rebootstrap although every event it held survived (issue 9, found by the chaos harness).  These
tests drive the reference engine through two and three recoveries, through its SQLite log and
through replay, and ask the one client rule (``spec.client.continues``) about the stale cursor the
engine answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reference.durability import GroupCommitWriter, LogStore
from reference.engine import Engine
from reference.log import TxRecord
from reference.replay import replay
from spec.auth import Claims
from spec.client import continues, resume_queries
from spec.errors import ErrorCode, SyncError
from spec.messages import CallReducer, ReducerOk, ReducerResult, Subscribe, SubscribeApplied, SubscriptionError
from spec.policy import MAX_CONTINUATION_HOPS, Policy, StreamClass
from spec.schema import SCOPES
from spec.values import SyncEvent, SyncStream

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
POLICY = Policy()


def call(eng: Engine, reducer: str, *args: Any) -> None:
    c = eng.connect(ALL, confirmed=False)
    eng.handle(c, CallReducer(1, reducer, tuple(args)))
    eng.advance_durable(eng.committed)
    out = eng.pop(c).message
    assert isinstance(out, ReducerResult) and isinstance(out.outcome, ReducerOk), (reducer, out)
    eng.close(c)


def crashes(n: int, policy: Policy = POLICY) -> tuple[Engine, list[TxRecord], int]:
    """Three events in the first epoch, then ``n`` times: one more event and an unclean restart.
    Returns the engine, its whole log and the first epoch."""
    eng = Engine(policy)
    for k in ("a", "b", "c"):
        call(eng, "append_sync_event", "s", k, "{}", None, None)
    stream = eng.db.get("sync_stream", ("s",))
    assert isinstance(stream, SyncStream)
    records = eng.take_records()
    for i in range(n):
        eng = Engine.recover(records, clean=False, now=eng.now + 1, policy=policy)
        call(eng, "append_sync_event", "s", f"x{i}", "{}", None, None)
        records = records + eng.take_records()
    return eng, records, stream.epoch


def stale(eng: Engine, epoch: int, watermark: int) -> dict[str, Any]:
    c = eng.connect(ALL, confirmed=True)
    eng.handle(c, Subscribe(1, 1, resume_queries("s", epoch, watermark)))
    eng.advance_durable(eng.committed)
    out = eng.pop(c).message
    assert isinstance(out, SubscriptionError), out
    err = SyncError.parse(out.error)
    assert err.code is ErrorCode.STALE_CURSOR and err.details["reasons"] == ["epoch_changed"]
    return err.details


def adopts(d: dict[str, Any], epoch: int, watermark: int) -> bool:
    return continues(epoch, watermark, d["epoch"], d["continues_epoch"], d["continues_seq"],
                     d["earlier_epochs"], d["earlier_seqs"])


@pytest.mark.parametrize("n", [2, 3])
def test_a_reader_n_restarts_behind_continues_from_the_engine_s_stale_cursor_CONT_1(n: int) -> None:
    eng, _, first = crashes(n)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and row.head_seq == 3 + n and row.floor_seq == 1
    # the chain: the last hop, then the older epochs newest first, each bound the durable head then
    assert row.continues_seq == 3 + n - 1 and len(row.earlier_epochs) == n - 1
    assert row.earlier_epochs[-1] == first and list(row.earlier_seqs) == list(range(3 + n - 2, 2, -1))
    d = stale(eng, first, 3)
    assert adopts(d, first, 3) and adopts(d, first, 0)
    assert not adopts(d, first, 4)  # seq 4 of the first epoch was never durable there
    # and the resume in the new epoch from the same watermark is served, with no gap
    c = eng.connect(ALL, confirmed=True)
    eng.handle(c, Subscribe(2, 2, resume_queries("s", row.epoch, 3)))
    eng.advance_durable(eng.committed)
    out = eng.pop(c).message
    assert isinstance(out, SubscribeApplied)
    assert [r.seq for t in out.rows for r in t.inserts if isinstance(r, SyncEvent)] == list(range(4, 4 + n))


def test_the_chain_survives_the_sqlite_log_and_replay_CONT_1(tmp_path: Path) -> None:
    eng, records, first = crashes(3)
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    writer.append(records)
    writer.flush()
    writer.close()
    store.close()
    store = LogStore.open(tmp_path)
    loaded, clean = store.load()
    store.close()
    assert not clean and loaded == records
    again = Engine.recover(loaded, clean=False, now=eng.now + 1, policy=POLICY)
    row = again.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and first in row.earlier_epochs and len(row.earlier_epochs) == 3
    assert {e.epoch for e in again.db.logs["s"].events} == {row.epoch}  # relabelled hop by hop
    assert adopts(stale(again, first, 3), first, 3)
    assert replay(records + again.take_records(), POLICY).mismatch is None


def test_the_chain_is_bounded_and_cut_below_the_floor_CONT_1() -> None:
    eng, _, first = crashes(MAX_CONTINUATION_HOPS + 2)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and len(row.earlier_epochs) == MAX_CONTINUATION_HOPS - 1
    assert first not in row.earlier_epochs  # too far behind: it rebootstraps (safe)
    assert not adopts(stale(eng, first, 3), first, 3)


def test_a_hop_below_the_retention_floor_is_dropped_CONT_1() -> None:
    """A bound below ``floor_seq - 1`` is of no use (such a watermark is below the floor, stale for
    ``retention_floor_breach`` anyway), so the next recovery drops that hop and everything older."""
    short = Policy(classes=(("s", StreamClass("short", retain_count=1)),))
    eng, records, first = crashes(1, short)  # E1 -> E2 continuing E1 up to 3; head 4
    for k in ("y", "z"):
        call(eng, "append_sync_event", "s", k, "{}", None, None)
    assert eng.compact(eng.now + 1)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and (row.continues_epoch, row.floor_seq, row.head_seq) == (first, 6, 6)
    eng = Engine.recover(records + eng.take_records(), clean=False, now=eng.now + 2, policy=short)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and row.continues_seq == 6 and row.earlier_epochs == ()
