"""Deterministic killers for model mutants the machines kill only on some draws.

``support.kill_margin`` (docs/mutation.md, "Kill margins (tenth session)") reruns each planted model
bug's killing machines under other seeds at CI's budget.  The mutants below survived at least one seed,
so a change to the machines' rules could move CI's derandomized draw off them too (as it did for the
engine's ``disconnect_in_fanout`` in the ninth session).  Each test is an explicit scenario on the model
with a hand-written expectation, named by ``killer=`` in ``tests/support/mutants.py``.

The later ones (eleventh session) kill mutants the machines killed in every seed but late in CI's budget
(hundreds of examples in), so a change to the machines could push them past it.

Checks AUTH-1 (a subscriber reads only the rows its claims may read: a ``compute.execute`` holder sees
an assignment only once it is assigned to a provider it owns; a reader granted one stream gets no event
of another, in its snapshot or an update), STALE-3 (a resume that bounds seq but pins no epoch is
refused), IDEM-2 (a retry of an append after the head moved is answered with its original seq, whatever
``expected_next_seq`` it carries) and REPLAY-2 (a client restarted from its checkpoint store holds the
events it had applied: the watermark and the events are committed together).

The twelfth session's (``stale_floor_lt_vs_le``, ``non_monotonic_ack``, ``assign_skips_provider_check``:
killed in every seed, but only after tens to hundreds of examples) are tables written by hand: STALE-1 and
STALE-2 (a resume from W is refused for retention exactly when floor - 1 > W, at the boundary), CKPT-2 (an
ack at or below the checkpoint of its epoch is a no-op) and ASSIGN-3 (assigning names a provider that
exists, is active and advertises the job's kind, and records its owner).
"""

from __future__ import annotations

from spec.auth import Claims
from spec.client import Client
from spec.errors import ErrorCode, SyncError
from spec.harness import Server
from spec.messages import (
    CallReducer,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TransactionUpdate,
)
from spec.policy import Policy
from spec.reducers import CallContext, Ok, call
from spec.schema import SCOPES
from spec.state import DbState
from spec.values import ComputeAssignment, SyncEvent

REQUESTER = Claims("a" * 64, frozenset(SCOPES) - {"compute.assign"}, ("*",))
EXECUTOR = Claims("c" * 64, frozenset({"compute.execute", "sync.subscribe"}), ())  # owns no provider


def drain(server: Server, conn: int) -> list[object]:
    return [server.pop(conn).message for _ in range(100) if server.releasable(conn)]


def assignments(messages: list[object]) -> list[ComputeAssignment]:
    rows: list[object] = []
    for m in messages:
        if isinstance(m, SubscribeApplied):
            rows += [r for t in m.rows for r in t.inserts]
        elif isinstance(m, TransactionUpdate):
            rows += [r for qs in m.query_sets for t in qs.tables for r in t.inserts]
    return [r for r in rows if isinstance(r, ComputeAssignment)]


# --- execute_scope_reads_assignments ---

def test_an_executor_reads_no_assignment_it_is_not_assigned_AUTH_1() -> None:
    server = Server(Policy(), max_undurable=4)
    requester = server.connect(REQUESTER, confirmed=False)
    executor = server.connect(EXECUTOR, confirmed=False)
    server.handle(requester, CallReducer(1, "open_compute_assignment", ("r1", 5000, '{"job":1}')))
    (result,) = drain(server, requester)
    assert isinstance(result, ReducerResult) and isinstance(result.outcome, ReducerOk), result  # the premise
    server.handle(executor, Subscribe(1, 1, ("SELECT * FROM compute_assignment",)))  # the snapshot
    server.handle(requester, CallReducer(2, "open_compute_assignment", ("r2", 5000, '{"job":2}')))  # an update
    got = drain(server, executor)
    assert any(isinstance(m, SubscribeApplied) for m in got), got
    assert assignments(got) == []


def events(messages: list[object]) -> list[tuple[str, int]]:
    rows: list[object] = []
    for m in messages:
        if isinstance(m, SubscribeApplied):
            rows += [r for t in m.rows for r in t.inserts]
        elif isinstance(m, TransactionUpdate):
            rows += [r for qs in m.query_sets for t in qs.tables for r in t.inserts]
    return sorted((r.stream_id, r.seq) for r in rows if isinstance(r, SyncEvent))


def appended(server: Server, conn: int, request_id: int, stream_id: str) -> None:
    server.handle(conn, CallReducer(request_id, "append_sync_event", (stream_id, f"k{request_id}", "{}", None, None)))
    (result,) = drain(server, conn)
    assert isinstance(result, ReducerResult) and isinstance(result.outcome, ReducerOk), result  # the premise


# --- row_filter_ignored (spec.delivery.visible) ---

def test_a_reader_granted_one_stream_gets_no_event_of_another_AUTH_1() -> None:
    server = Server(Policy(), max_undurable=4)
    writer = server.connect(REQUESTER, confirmed=False)  # granted every stream
    reader = server.connect(Claims("b" * 64, frozenset({"sync.subscribe"}), ("s.a",)), confirmed=False)
    appended(server, writer, 1, "s.a")
    appended(server, writer, 2, "s.b")
    server.handle(reader, Subscribe(1, 1, ("SELECT * FROM sync_event",)))  # pins no stream: row-filtered
    snapshot = drain(server, reader)
    appended(server, writer, 3, "s.b")
    appended(server, writer, 4, "s.a")
    got = snapshot + drain(server, reader)
    assert any(isinstance(m, SubscribeApplied) for m in snapshot), snapshot
    assert events(got) == [("s.a", 1), ("s.a", 2)]


# --- resume_without_epoch_accepted (spec.delivery.subscribe) ---

def test_a_resume_without_epoch_is_refused_STALE_3() -> None:
    server = Server(Policy(), max_undurable=4)
    writer = server.connect(REQUESTER, confirmed=False)
    appended(server, writer, 1, "s.a")
    server.handle(writer, Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 's.a' AND seq > 0",)))
    server.handle(writer, Subscribe(2, 2, ("SELECT * FROM sync_event WHERE stream_id = 's.a' AND epoch = 1 "
                                           "AND seq > 0",)))  # the form with the epoch: served
    refused, served = drain(server, writer)
    assert isinstance(refused, SubscriptionError) and refused.query_set_id == 1, refused
    assert SyncError.parse(refused.error).code is ErrorCode.INVALID_QUERY, refused
    assert isinstance(served, SubscribeApplied) and served.query_set_id == 2, served


# --- sequence_before_dedupe (spec.reducers.APPEND_SYNC_EVENT's order) ---

def test_a_retry_after_the_head_moved_gets_its_original_seq_IDEM_2() -> None:
    """The client sent ``expected_next_seq = 1``; its connection dropped; another append moved the head; it
    resends the same call: the key is retained with this payload, so it is answered seq 1 (a no-op)."""
    ctx = CallContext(REQUESTER, 10, 1, Policy())
    sent = ("s.a", "k1", '{"n":1}', None, 1)
    db = DbState()
    outcomes = []
    for args in (sent, ("s.a", "k2", '{"n":2}', None, 2), sent):
        out = call(db, ctx, "append_sync_event", args)
        assert isinstance(out, Ok), out
        outcomes.append((out.ret, out.noop))
        db = out.state
    assert outcomes == [(1, False), (2, False), (1, True)]


# --- checkpoint_without_the_apply (spec.client.StreamView.checkpoint) ---

def test_a_restarted_client_holds_the_events_it_applied_REPLAY_2() -> None:
    server = Server(Policy(), max_undurable=4)
    writer = server.connect(REQUESTER, confirmed=False)
    reader = Client("r", Claims("b" * 64, frozenset({"sync.subscribe"}), ("s.a",)), confirmed=False)
    conn = server.connect(reader.claims, confirmed=False)
    for m in reader.on_connect() + reader.follow("s.a"):
        server.handle(conn, m)
    for k in (1, 2, 3):
        appended(server, writer, k, "s.a")
    while server.releasable(conn):
        for m in reader.on_message(server.pop(conn).message):
            server.handle(conn, m)
    assert (reader.streams["s.a"].last, [seq for seq, _h in reader.streams["s.a"].applied]) == (3, [1, 2, 3])
    reader.crash()  # the process restarts: the views are read back from the checkpoint store
    assert (reader.streams["s.a"].last, [seq for seq, _h in reader.streams["s.a"].applied]) == (3, [1, 2, 3])


# --- stale_floor_lt_vs_le (spec.resume.stale_reasons): the retention reason at its boundary ---

# (head, floor, watermark) -> is retention_floor_breach among the reasons, by hand: the events after W are
# all retained exactly when floor - 1 <= W (epoch 1 asked and held, budget 100, no upper bound)
RETENTION_EDGE: tuple[tuple[int, int, int, bool], ...] = (
    (10, 5, 4, False),  # W = floor - 1: the next event, 5, is retained
    (10, 5, 3, True),  # W = floor - 2: event 4 was compacted
    (10, 5, 2, True),
    (10, 1, 0, False),  # nothing compacted, a resume from the start
    (10, 2, 0, True),  # event 1 compacted
    (10, 11, 10, False),  # everything compacted up to the head, W = head: nothing to replay
    (10, 11, 9, True),
)


def test_a_resume_one_below_the_floor_breaches_retention_STALE_1_STALE_2() -> None:
    from spec.resume import stale_reasons
    got = [(head, floor, w, "retention_floor_breach" in stale_reasons(1, head, floor, 100, 1, w))
           for head, floor, w, _ in RETENTION_EDGE]
    assert got == list(RETENTION_EDGE)


# --- non_monotonic_ack (spec.reducers.ACK_CHECKPOINT's no-op) ---

def test_a_lower_ack_leaves_the_checkpoint_where_it_was_CKPT_2() -> None:
    """Acks 4, 2, 4, 3, 5 of one stream in one epoch: the lower and the repeated ones are no-ops, so the
    checkpoint reads 4, 4, 4, 4, 5."""
    from spec.values import SyncCheckpoint
    ctx = CallContext(REQUESTER, 10, 1, Policy())
    db = DbState()
    for k in range(1, 6):
        out = call(db, ctx, "append_sync_event", ("s.a", f"k{k}", "{}", None, None))
        assert isinstance(out, Ok), out  # the premise: head 5
        db = out.state
    seen = []
    for seq in (4, 2, 4, 3, 5):
        out = call(db, ctx, "ack_checkpoint", ("c1", "s.a", 1, seq))
        assert isinstance(out, Ok), out
        db = out.state
        cp = db.find(SyncCheckpoint, lambda r: r.client_id == "c1")
        assert cp is not None
        seen.append((out.noop, cp.last_applied_seq))
    assert seen == [(False, 4), (True, 4), (True, 4), (True, 4), (False, 5)]


# --- assign_skips_provider_check (spec.reducers.UPDATE_COMPUTE_ASSIGNMENT) ---

# provider named by the assign call -> the error code and reason, or None (assigned), by hand: a provider
# takes a job only when it exists, is active and advertises the job's kind (5000)
ASSIGN_CASES: tuple[tuple[str, tuple[str, str] | None], ...] = (
    ("p.missing", ("provider_unavailable", "missing")),
    ("p.withdrawn", ("provider_unavailable", "withdrawn")),
    ("p.other_kind", ("provider_unavailable", "kind_not_advertised")),
    ("p.ok", None),
)


def test_assigning_names_an_active_provider_advertising_the_kind_ASSIGN_3() -> None:
    from spec.outcome import Err
    from spec.values import ComputeAssignment
    ctx = CallContext(Claims("a" * 64, frozenset(SCOPES), ("*",)), 10, 1, Policy())
    db = DbState()
    for args in (("p.withdrawn", "{}", (5000,), 1, "withdrawn"), ("p.other_kind", "{}", (5001,), 1, "active"),
                 ("p.ok", "{}", (5000,), 1, "active"), ("r1", 5000, '{"job":1}')):
        out = call(db, ctx, "open_compute_assignment" if args[0] == "r1" else "publish_provider_capability", args)
        assert isinstance(out, Ok), out  # the premises
        db = out.state
    got = []
    for provider, _ in ASSIGN_CASES:
        out = call(db, ctx, "update_compute_assignment", ("r1", 1, "assigned", provider, None))
        if isinstance(out, Err):
            got.append((provider, (out.error.code.value, out.error.details.get("reason"))))
        else:
            row = out.state.find(ComputeAssignment, lambda r: r.request_id == "r1")
            assert row is not None and (row.status, row.provider_id, row.provider_owner) == (
                "assigned", provider, "a" * 64), row
            got.append((provider, None))
    assert got == list(ASSIGN_CASES)
