"""Deterministic killers for engine mutants the differential machines kill only on some draws.

``support.kill_margin`` (docs/mutation.md, "Kill margins (tenth session)") reruns each planted engine
bug's killing machine under other seeds.  ``seq_ge_0_unclamped`` and ``retention_takes_pending_outbox``
survived one seed of five at CI's budget, so a change to the machines' rules could move CI's
derandomized draw off them too (as it did for ``disconnect_in_fanout`` in the ninth session): the
tests below are their killers (``killer=`` in ``tests/support/engine_mutants.py`` names the test).
``slow_consumer_bound_off`` and ``index_not_updated_on_delete`` die in every seed, but only by a
contract firing (``SYNCREF_CONTRACTS``, on in every test): with the contracts off the machine killed
them in 2 and 1 of 5 seeds and CI's draw not at all, so they get an explicit scenario too (each shown
to kill its mutant; the machines stay their CI killers).  ``repeated_ack_overwrites_relays`` survived one
seed of twenty (eleventh session, "Kill margins (eleventh session)"), and ``fanout_execute_scope_reads``
died in every seed but as late as the 176th example of 200.  Each test is an explicit scenario with a
hand-written expectation (STALE-1, RET-1, SLOW-1, IDEM-1, BRIDGE-3, AUTH-1).  The twelfth session adds
``non_monotonic_ack`` (killed in 20 of 20 seeds but as late as the 164th example of 200) and
``assign_skips_provider_check`` (the 246th: past the budget on some seeds' first machine), each a table by
hand (CKPT-2, ASSIGN-3).
"""

from __future__ import annotations

from typing import Any

import pytest

from reference.engine import Engine
from spec.auth import Claims
from spec.messages import (
    SLOW_CONSUMER_REASON,
    CallReducer,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    TransactionUpdate,
)
from spec.policy import Policy, StreamClass
from spec.schema import SCOPES
from spec.values import ComputeAssignment, SyncEvent, SyncStream

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))


def call(eng: Engine, reducer: str, *args: Any) -> Any:
    c = eng.connect(ALL, confirmed=False)
    eng.handle(c, CallReducer(1, reducer, tuple(args)))
    eng.advance_durable(eng.committed)
    out = eng.pop(c).message
    assert isinstance(out, ReducerResult) and isinstance(out.outcome, ReducerOk), (reducer, out)
    eng.close(c)
    return out.outcome.ret


def subscribe(eng: Engine, *queries: str) -> Any:
    c = eng.connect(ALL, confirmed=True)
    eng.handle(c, Subscribe(1, 1, queries))
    eng.advance_durable(eng.committed)
    return eng.pop(c).message


# --- seq_ge_0_unclamped: `seq >= 0` is a resume from the start (W = 0), not W = -1 (STALE-1) ---

@pytest.mark.parametrize("bound", ["seq >= 0", "seq > 0", "seq >= 1"])
def test_a_resume_from_the_start_is_served_every_event(bound: str) -> None:
    eng = Engine()
    for k in ("a", "b"):
        call(eng, "append_sync_event", "s", k, "{}", None, None)
    row = eng.db.get("sync_stream", ("s",))
    assert isinstance(row, SyncStream) and row.floor_seq == 1 and row.head_seq == 2  # nothing compacted
    out = subscribe(eng, f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {row.epoch} AND {bound}")
    assert isinstance(out, SubscribeApplied), out  # not a stale_cursor (retention_floor_breach)
    assert [(r.idempotency_key, r.seq) for t in out.rows for r in t.inserts if isinstance(r, SyncEvent)] == \
        [("a", 1), ("b", 2)]


# --- retention_takes_pending_outbox: retention removes sent outbox rows past their window, never a
# pending one (a row the bridge has not published yet: RET-1) ---

def test_retention_takes_the_sent_outbox_row_and_keeps_the_pending_one() -> None:
    eng = Engine()
    eng.now = 1_000
    call(eng, "enqueue_bridge_event", "o1", "src", 30078, '[["t","x"]]', "never sent")
    call(eng, "enqueue_bridge_event", "o2", "src", 30078, '[["t","x"]]', "sent")
    call(eng, "mark_bridge_event_sent", "o2", "1" * 64, ("wss://relay.example",))
    window = eng.policy.retain_sent_outbox_us
    assert window is not None
    eng.compact(1_000 + window + 1)  # both rows last changed at 1_000: past the sent window
    assert {(r.outbox_id, r.status) for r in eng.db.rows("bridge_outbox")} == {("o1", "pending")}


# --- slow_consumer_bound_off: a connection is closed as slow on the message that takes its queue PAST
# max_queue, not one later (SLOW-1) ---

EVENTS_OF_S = "SELECT * FROM sync_event WHERE stream_id = 's'"
STREAM_S = "SELECT * FROM sync_stream WHERE stream_id = 's'"


# one query set of one shape: the fanout's fast path queues inline; two query sets: Engine._send queues
# (both must close at the same message)
@pytest.mark.parametrize("query_sets", [(EVENTS_OF_S,), (EVENTS_OF_S, STREAM_S)], ids=["fast_path", "send"])
def test_a_reader_is_closed_on_the_update_that_passes_the_bound(query_sets: tuple[str, ...]) -> None:
    eng = Engine(max_queue=4)
    closed: dict[int, str] = {}
    eng.on_close = lambda cid, reason: closed.__setitem__(cid, reason)
    writer = eng.connect(ALL, confirmed=False)
    reader = eng.connect(ALL, confirmed=False)
    for qs, query in enumerate(query_sets, start=1):
        eng.handle(reader, Subscribe(qs, qs, (query,)))
    assert len(eng.take(reader, 100, 1 << 30)) == len(query_sets)  # the SubscribeApplieds: the queue is empty
    queued = []
    for k in range(1, 6):
        eng.handle(writer, CallReducer(k, "append_sync_event", ("s", f"k{k}", "{}", None, None)))
        eng.take(writer, 100, 1 << 30)
        queued.append(reader in closed)
    # one TransactionUpdate queued per append: 4 are within the bound, the 5th passes it
    assert queued == [False, False, False, False, True]
    assert closed[reader] == SLOW_CONSUMER_REASON


# --- index_not_updated_on_delete: a key whose event retention dropped is free again -- a new append
# under it is a new event, not a retry of the dropped one (IDEM-1) ---

def test_an_append_reuses_the_key_of_an_event_retention_dropped() -> None:
    eng = Engine(Policy(default_class=StreamClass("default", retain_count=2)))
    seqs = [call(eng, "append_sync_event", "s", k, "{}", None, None) for k in ("k1", "k2", "k3")]
    eng.compact(eng.now)
    assert [e.seq for e in eng.db.logs["s"].events] == [2, 3]  # k1's event is gone
    again = call(eng, "append_sync_event", "s", "k1", '"other payload"', None, None)
    assert (seqs, again) == ([1, 2, 3], 4)
    assert [(e.idempotency_key, e.seq) for e in eng.db.logs["s"].events][-1] == ("k1", 4)


# --- repeated_ack_overwrites_relays: a repeated mark_bridge_event_sent (a catch-up to a relay that missed
# the row) adds its relays to relays_acked, keeping the ones acknowledged before (BRIDGE-3) ---

def test_a_repeated_sent_mark_merges_the_relays_acknowledged() -> None:
    eng = Engine()
    call(eng, "enqueue_bridge_event", "o1", "src", 30078, '[["t","x"]]', "sent twice")
    call(eng, "mark_bridge_event_sent", "o1", "1" * 64, ("wss://b.example",))
    call(eng, "mark_bridge_event_sent", "o1", "1" * 64, ("wss://a.example",))  # the catch-up
    (row,) = eng.db.rows("bridge_outbox")
    assert (row.status, row.relays_acked) == ("sent", ("wss://a.example", "wss://b.example"))


# --- fanout_execute_scope_reads: an update carries a compute assignment only to the clients that may read
# it -- its requester, its provider's owner, compute.assign holders -- not to every compute.execute
# holder (AUTH-1) ---

def test_an_executor_hears_of_no_assignment_it_is_not_assigned() -> None:
    eng = Engine()
    executor = eng.connect(Claims("c" * 64, frozenset({"compute.execute", "sync.subscribe"}), ()), confirmed=False)
    eng.handle(executor, Subscribe(1, 1, ("SELECT * FROM compute_assignment",)))
    assert isinstance(eng.pop(executor).message, SubscribeApplied)
    requester = Claims("a" * 64, frozenset(SCOPES) - {"compute.assign"}, ("*",))
    c = eng.connect(requester, confirmed=False)
    eng.handle(c, CallReducer(1, "open_compute_assignment", ("r1", 5000, '{"job":1}')))
    out = eng.pop(c).message
    assert isinstance(out, ReducerResult) and isinstance(out.outcome, ReducerOk), out  # the premise
    eng.advance_durable(eng.committed)
    heard = [eng.pop(executor).message for _ in range(10) if eng.releasable(executor)]
    assert not [r for m in heard if isinstance(m, TransactionUpdate) for qs in m.query_sets for t in qs.tables
                for r in t.inserts if isinstance(r, ComputeAssignment)], heard


def answer(eng: Engine, reducer: str, *args: Any) -> Any:
    """The outcome of one call: a ReducerOk's ``(noop?, ret)`` is not told apart here -- the ret, or the
    error's (code, reason)."""
    from spec.errors import SyncError
    from spec.messages import ReducerErr
    c = eng.connect(ALL, confirmed=False)
    eng.handle(c, CallReducer(1, reducer, tuple(args)))
    eng.advance_durable(eng.committed)
    out = eng.pop(c).message
    eng.close(c)
    assert isinstance(out, ReducerResult), out
    if isinstance(out.outcome, ReducerErr):
        err = SyncError.parse(out.outcome.error)
        return err.code.value, err.details.get("reason")
    return "ok"


# --- non_monotonic_ack: an ack at or below the checkpoint of its epoch leaves it where it was (CKPT-2) ---

def test_a_lower_ack_leaves_the_checkpoint_where_it_was() -> None:
    from spec.values import SyncCheckpoint
    eng = Engine()
    for k in range(1, 6):
        call(eng, "append_sync_event", "s.a", f"k{k}", "{}", None, None)  # head 5
    seen = []
    for seq in (4, 2, 4, 3, 5):
        call(eng, "ack_checkpoint", "c1", "s.a", 1, seq)
        (cp,) = eng.db.rows("sync_checkpoint")
        assert isinstance(cp, SyncCheckpoint)
        seen.append(cp.last_applied_seq)
    assert seen == [4, 4, 4, 4, 5]


# --- assign_skips_provider_check: assigning names a provider that exists, is active and advertises the job's
# kind (ASSIGN-3); the table by hand ---

ASSIGN_CASES: tuple[tuple[str, object], ...] = (
    ("p.missing", ("provider_unavailable", "missing")),
    ("p.withdrawn", ("provider_unavailable", "withdrawn")),
    ("p.other_kind", ("provider_unavailable", "kind_not_advertised")),
    ("p.ok", "ok"),
)


def test_assigning_names_an_active_provider_advertising_the_kind() -> None:
    eng = Engine()
    call(eng, "publish_provider_capability", "p.withdrawn", "{}", (5000,), 1, "withdrawn")
    call(eng, "publish_provider_capability", "p.other_kind", "{}", (5001,), 1, "active")
    call(eng, "publish_provider_capability", "p.ok", "{}", (5000,), 1, "active")
    call(eng, "open_compute_assignment", "r1", 5000, '{"job":1}')
    got = [(p, answer(eng, "update_compute_assignment", "r1", 1, "assigned", p, None)) for p, _ in ASSIGN_CASES]
    assert got == list(ASSIGN_CASES)
    (row,) = eng.db.rows("compute_assignment")
    assert isinstance(row, ComputeAssignment)
    assert (row.status, row.provider_id, row.provider_owner, row.version) == ("assigned", "p.ok", ALL.identity, 2)
