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
