"""Deterministic killers for model mutants the machines kill only on some draws.

``support.kill_margin`` (docs/mutation.md, "Kill margins (tenth session)") reruns each planted model
bug's killing machines under other seeds at CI's budget.  The mutants below survived at least one seed,
so a change to the machines' rules could move CI's derandomized draw off them too (as it did for the
engine's ``disconnect_in_fanout`` in the ninth session).  Each test is an explicit scenario on the model
with a hand-written expectation, named by ``killer=`` in ``tests/support/mutants.py``.

Checks AUTH-1 (a subscriber reads only the rows its claims may read: a ``compute.execute`` holder sees
an assignment only once it is assigned to a provider it owns).
"""

from __future__ import annotations

from spec.auth import Claims
from spec.harness import Server
from spec.messages import CallReducer, ReducerOk, ReducerResult, Subscribe, SubscribeApplied, TransactionUpdate
from spec.policy import Policy
from spec.schema import SCOPES
from spec.values import ComputeAssignment

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
