"""Regressions for the spec bugs the Z3 proofs found (see docs/proofs.md)."""

from __future__ import annotations

import icontract
import pytest

from spec.auth import Claims
from spec.harness import Server
from spec.invariants import check_state
from spec.messages import CallReducer, ReducerOk, ReducerResult, Subscribe, SubscribeApplied, TransactionUpdate
from spec.policy import Policy
from spec.reducers import disconnect_sessions
from spec.values import SessionPresence, SyncEvent, SyncStream

ME = Claims("a" * 64, frozenset({"sync.append", "sync.subscribe", "presence.write"}), ("s*",))


def drain(server: Server, conn: int) -> list[object]:
    out = []
    while server.releasable(conn):
        out.append(server.pop(conn).message)
    return out


def test_an_unclean_restart_continues_the_epoch_SEQ_1_CONT_1() -> None:
    """SEQ-1 / REPLAY-2 / CONT-1 (ADR-0003): the new epoch continues the old one -- the retained events
    are relabelled into it, so a resume from the old watermark, or from floor - 1, has no gap."""
    server = Server(Policy(), max_undurable=4)
    conn = server.connect(ME, confirmed=False)
    for k in ("a", "b", "c"):
        server.handle(conn, CallReducer(1, "append_sync_event", ("s", k, "{}", None, None)))
    server.advance_durable(server.committed)
    server.crash()
    stream = server.db.find(SyncStream, lambda r: r.stream_id == "s")
    assert stream is not None and (stream.epoch, stream.continues_epoch, stream.continues_seq) == (1 + 4 + 1, 1, 3)
    assert (stream.floor_seq, stream.head_seq) == (1, 3)
    assert {(e.epoch, e.seq) for e in server.db.of_type(SyncEvent)} == {(6, 1), (6, 2), (6, 3)}
    assert not check_state(server.db)
    conn = server.connect(ME, confirmed=False)
    q = f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {stream.epoch} AND seq > {stream.floor_seq - 1}"
    server.handle(conn, Subscribe(2, 7, (q,)))
    applied = drain(server, conn)
    assert isinstance(applied[0], SubscribeApplied)
    assert [r.seq for t in applied[0].rows for r in t.inserts if isinstance(r, SyncEvent)] == [1, 2, 3]
    other = server.connect(ME, confirmed=False)
    server.handle(other, CallReducer(3, "append_sync_event", ("s", "d", "{}", None, None)))
    update = drain(server, conn)
    assert isinstance(update[0], TransactionUpdate)
    seqs = [r.seq for t in update[0].query_sets[0].tables for r in t.inserts if isinstance(r, SyncEvent)]
    assert seqs == [4]
    # the relabelled events are the dedupe horizon, as before
    server.handle(other, CallReducer(4, "append_sync_event", ("s", "a", "{}", None, None)))
    result = drain(server, other)[-1]
    assert isinstance(result, ReducerResult) and isinstance(result.outcome, ReducerOk) and result.outcome.ret == 1


def test_disconnect_after_the_ttl_ran_out_is_a_ttl_expiry_PRES_1() -> None:
    server = Server(Policy(), max_undurable=4)
    conn = server.connect(ME, confirmed=False)
    server.handle(conn, CallReducer(1, "upsert_presence", ("p", "d", "n", "online", "eu", 1000)))
    out = disconnect_sessions(server.db, 5_000_000, ME.identity, frozenset({"p"}))
    row = out.state.find(SessionPresence, lambda r: r.session_id == "p")
    assert row is not None and row.offline_reason == "ttl_expired" and row.last_seen <= row.expires_at
    assert not check_state(out.state)


def test_a_call_past_the_durability_bound_is_refused_to_the_caller() -> None:
    server = Server(Policy(), max_undurable=1)
    conn = server.connect(ME, confirmed=False)
    server.handle(conn, CallReducer(1, "append_sync_event", ("s", "a", "{}", None, None)))
    with pytest.raises(icontract.ViolationError):
        server.handle(conn, CallReducer(2, "append_sync_event", ("s", "b", "{}", None, None)))

