"""The checks added for issue 9's defects (ADR-0003), shown able to fail on their own.

Each test forges the broken step by hand -- a state, a transition or a client decision that the
fixed rules never produce -- and asserts that the check names it.  The planted mutants show the
same checks fire inside the machines; these pin them directly, independent of any reducer."""

from __future__ import annotations

from dataclasses import replace

from spec.auth import Claims
from spec.errors import ErrorCode
from spec.invariants import check_call, check_recovery, check_retention, check_state, check_transition
from spec.policy import Policy
from spec.reducers import CallContext, Ok, call, unclean_restart
from spec.state import DbState
from spec.values import (
    BridgeOutbox,
    ComputeAssignment,
    ProviderCapability,
    SessionPresence,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
)

A, B = "a" * 64, "b" * 64
ALL = frozenset({"sync.append", "sync.checkpoint.write", "provider.publish", "compute.request", "compute.assign",
                 "compute.execute", "bridge.enqueue", "bridge.mark_sent", "presence.write"})
ME = Claims(A, ALL, ("s*",))


def run(db: DbState, claims: Claims, reducer: str, *args: object, now: int = 10) -> DbState:
    out = call(db, CallContext(claims, now, 1, Policy()), reducer, tuple(args))
    assert isinstance(out, Ok), out
    return out.state


def ids(violations: list[tuple[str, str]]) -> set[str]:
    return {v[0] for v in violations}


def with_rows(db: DbState, table: str, rows: tuple[object, ...]) -> DbState:
    return replace(db, tables={**db.tables, table: rows})


def assigned() -> DbState:
    db = run(DbState(), ME, "publish_provider_capability", "p", "{}", (5000,), 0, "active")
    db = run(db, ME, "open_compute_assignment", "r", 5000, "{}")
    return run(db, ME, "update_compute_assignment", "r", 1, "assigned", "p", None)


def test_assign_3_flags_an_assignment_to_a_provider_that_is_not_available() -> None:
    db = run(DbState(), ME, "open_compute_assignment", "r", 5000, "{}")
    (row,) = db.of_type(ComputeAssignment)
    forged = with_rows(db, "compute_assignment", (replace(row, status="assigned", provider_id="ghost",
                                                          provider_owner=B, version=2),))
    assert "ASSIGN-3" in ids(check_transition(db, forged))
    ready = run(run(DbState(), ME, "publish_provider_capability", "p", "{}", (5000,), 0, "active"), ME,
                "open_compute_assignment", "r", 5000, "{}")
    assert not check_transition(ready, run(ready, ME, "update_compute_assignment", "r", 1, "assigned", "p", None))


def test_assign_2_wants_the_provider_owner_on_a_named_row() -> None:
    db = assigned()
    (row,) = db.of_type(ComputeAssignment)
    assert not check_state(db)
    assert "ASSIGN-2" in ids(check_state(with_rows(db, "compute_assignment", (replace(row, provider_owner=None),))))


def test_assign_4_flags_an_execute_edge_taken_by_someone_else() -> None:
    db = assigned()
    (row,) = db.of_type(ComputeAssignment)
    after = with_rows(db, "compute_assignment", (replace(row, status="running", version=3),))
    args = ("r", 2, "running", None, None)
    stranger = frozenset({"compute.execute"})
    assert "ASSIGN-4" in ids(check_call(db, stranger, False, "update_compute_assignment", args, True, None, None,
                                        True, after, B))
    assert not check_call(db, stranger, False, "update_compute_assignment", args, True, None, None, True, after, A)
    # and a refusal to the one who holds the role
    assert "ASSIGN-4" in ids(check_call(db, stranger, False, "update_compute_assignment", args, False, None,
                                        ErrorCode.FORBIDDEN, False, db, A))


def test_bridge_3_flags_each_outbox_rule() -> None:
    db = run(DbState(), ME, "enqueue_bridge_event", "o", "src", 30078, "[]", "c", now=5)
    (row,) = db.of_type(BridgeOutbox)
    assert row.next_attempt_at == 5
    # another source accepted under the same id
    assert "BRIDGE-3" in ids(check_call(db, ALL, False, "enqueue_bridge_event", ("o", "other", 30078, "[]", "c"),
                                        True, None, None, False, db))
    # backoff dropped
    failed = with_rows(db, "bridge_outbox", (replace(row, attempts=1, updated_at=9),))
    assert "BRIDGE-3" in ids(check_call(db, ALL, False, "record_bridge_failure", ("o", "x", 1000), True, None, None,
                                        True, failed))
    # a repeated success that forgets a newly acknowledged relay
    sent = with_rows(db, "bridge_outbox", (replace(row, status="sent", nostr_event_id="e" * 64,
                                                   relays_acked=("wss://a",)),))
    assert "BRIDGE-3" in ids(check_call(sent, ALL, False, "mark_bridge_event_sent", ("o", "e" * 64, ("wss://b",)),
                                        True, None, None, False, sent))
    # BRIDGE-2: a sent row that loses a relay
    (s_row,) = sent.of_type(BridgeOutbox)
    shrunk = with_rows(sent, "bridge_outbox", (replace(s_row, relays_acked=()),))
    assert "BRIDGE-2" in ids(check_transition(sent, shrunk))


def test_ret_1_flags_what_retention_keeps_too_long_or_takes_too_early() -> None:
    p = Policy(retain_offline_presence_us=100)
    row = SessionPresence("s", A, "d", "n", "offline", "", 0, 10, "explicit_offline")
    live = replace(row, session_id="t", status="online", offline_reason=None)
    db = with_rows(DbState(), "session_presence", (row, live))
    assert "RET-1" in ids(check_retention(db, db, 101, p))  # past its window, kept
    assert "RET-1" in ids(check_retention(db, with_rows(db, "session_presence", (row,)), 101, p))  # live one taken
    assert "RET-1" in ids(check_retention(db, with_rows(db, "session_presence", (live,)), 100, p))  # not yet past
    assert not check_retention(db, with_rows(db, "session_presence", (live,)), 101, p)


def test_cont_1_and_ver_1_flag_a_recovery_that_does_not_continue_or_raise() -> None:
    db = run(DbState(), ME, "append_sync_event", "s", "k1", "{}", None, None)
    db = run(db, ME, "append_sync_event", "s", "k2", "{}", None, None)
    db = run(db, ME, "ack_checkpoint", "c", "s", 1, 2)
    db = run(db, ME, "publish_provider_capability", "p", "{}", (5000,), 0, "active")
    good = unclean_restart(db, 20, 3)
    assert not check_recovery(db, good, 3)
    (stream,) = good.of_type(SyncStream)
    fresh = with_rows(good, "sync_stream", (replace(stream, continues_epoch=0, continues_seq=0,
                                                    floor_seq=stream.head_seq + 1),))
    assert "CONT-1" in ids(check_recovery(db, fresh, 3))  # ADR-0001's fresh epoch
    old_events = with_rows(good, "sync_event", db.rows("sync_event"))
    assert "CONT-1" in ids(check_recovery(db, old_events, 3))  # events not relabelled
    old_ckpt = with_rows(good, "sync_checkpoint", db.rows("sync_checkpoint"))
    assert "CONT-1" in ids(check_recovery(db, old_ckpt, 3))  # checkpoint not relabelled
    (prov,) = good.of_type(ProviderCapability)
    low = with_rows(good, "provider_capability", (replace(prov, version=2),))
    assert "VER-1" in ids(check_recovery(db, low, 3))  # a version the lost suffix can have used
    assert "VER-1" in ids(check_recovery(db, replace(good, version_floor=4), 3))
    assert [e.epoch for e in good.of_type(SyncEvent)] == [stream.epoch] * 2
    assert [c.epoch for c in good.of_type(SyncCheckpoint)] == [stream.epoch]


def test_ver_1_in_the_trace_remembers_versions_across_lost_states() -> None:
    """The trace keeps every (id, version) it ever saw committed, lost suffixes included: a crash that
    let version 2 name other content is caught when that content commits."""
    from spec.trace import Trace

    db = run(DbState(), ME, "open_compute_assignment", "r", 5000, "{}")
    db = run(db, ME, "publish_provider_capability", "p", "{}", (5000,), 0, "active")
    t = Trace()
    t.record_state(1, db)
    lost = run(db, ME, "update_compute_assignment", "r", 1, "cancelled", None, None)
    t.record_state(2, lost)  # committed, then lost by a crash
    t.states.pop(2)
    reused = run(db, ME, "update_compute_assignment", "r", 1, "assigned", "p", None)  # version 2 again
    t.record_state(2, reused)
    assert "VER-1" in ids(t.violations)


def test_replay_2_allowance_counts_compaction_floors_only() -> None:
    """REPLAY-2's allowance lets an unconfirmed client start at a floor a compaction committed and a crash
    lost (it read that retention window).  A reset's floor (head + 1, in a new epoch) is no such window: a
    client that saw the reset and then the crash lose it cannot continue its lost epoch and rebootstraps from
    the recovered floor.  So a client holding events from 3 only, when the authority retains from 1, is
    flagged even after a (lost) reset had floor 4 -- and allowed after a (lost) compaction to floor 3."""
    from spec.invariants import check_convergence
    from spec.policy import StreamClass
    from spec.reducers import compact
    from spec.system import ADMIN
    from spec.trace import Trace
    from spec.values import SyncEvent

    db = DbState()
    for k in ("k1", "k2", "k3"):
        db = run(db, ME, "append_sync_event", "s.a", k, "{}", None, None)
    ledger = sorted(db.of_type(SyncEvent), key=lambda e: e.seq)
    view = {"s.a": (1, 2, 3, ((3, ledger[2].payload_hash),), False)}  # epoch 1, holds event 3 only, at head 3
    client = [("c1", ALL | {"sync.subscribe"}, ("s*",), view, {})]

    def verdict(lost: DbState, compact_now: int | None) -> set[str]:
        t = Trace()
        t.record_state(1, db)
        t.record_state(2, lost, compact_now=compact_now)  # committed, then lost by a crash
        return ids(check_convergence(client, db, ledger, unconfirmed=["c1"], floors_committed=t.floors))

    assert verdict(db, None) == {"REPLAY-2"}  # no lost floor at all: flagged
    reset = run(db, ADMIN, "reset_stream_epoch", "s.a")
    assert [s.floor_seq for s in reset.of_type(SyncStream)] == [4]
    assert verdict(reset, None) == {"REPLAY-2"}
    compacted = compact(db, 10, Policy(classes=(("s.a", StreamClass("one", retain_count=1)),))).state
    assert [s.floor_seq for s in compacted.of_type(SyncStream)] == [3]
    assert verdict(compacted, 10) == set()
