"""Two rules the machines reach only by chance, checked directly on the model: KEY-1 (a second
acknowledgement of the same checkpoint updates its one row, never adds a row under the same key)
and EVT-2 (event-table rows reach a subscriber flagged as event rows, in transaction updates only).

They are the killers of the planted mutants ``checkpoint_always_inserted`` and
``event_rows_sent_as_table_rows`` (tests/support/mutants.py)."""

from __future__ import annotations

from spec.auth import Claims
from spec.harness import Server
from spec.messages import CallReducer, Subscribe, SubscribeApplied, TransactionUpdate
from spec.policy import Policy
from spec.reducers import CallContext, Ok, call
from spec.schema import TABLE_BY_NAME
from spec.state import DbState

ME = Claims("a" * 64, frozenset({"sync.append", "sync.subscribe", "sync.checkpoint.write", "presence.write"}),
            ("s*",))


def ok(db: DbState, reducer: str, *args: object) -> DbState:
    out = call(db, CallContext(ME, 10, 1, Policy()), reducer, tuple(args))
    assert isinstance(out, Ok), out
    return out.state


def test_a_second_ack_updates_the_one_checkpoint_row_KEY_1() -> None:
    db = DbState()
    for k in ("a", "b", "c"):
        db = ok(db, "append_sync_event", "s", k, "{}", None, None)
    db = ok(db, "ack_checkpoint", "d", "s", 1, 1)
    db = ok(db, "ack_checkpoint", "d", "s", 1, 3)
    rows = db.rows("sync_checkpoint")
    key = TABLE_BY_NAME["sync_checkpoint"].key_of
    assert len(rows) == 1 and len({key(r) for r in rows}) == 1
    assert [r.last_applied_seq for r in rows] == [3]  # type: ignore[attr-defined]


def test_event_rows_are_flagged_as_event_rows_EVT_2() -> None:
    server = Server(Policy(), max_undurable=4)
    sub = server.connect(ME, confirmed=False)
    server.handle(sub, Subscribe(1, 1, ("SELECT * FROM presence_signal",)))
    applied = [server.pop(sub).message for _ in range(10) if server.releasable(sub)]
    assert isinstance(applied[0], SubscribeApplied) and not any(t.inserts for t in applied[0].rows)
    writer = server.connect(ME, confirmed=False)
    server.handle(writer, CallReducer(2, "upsert_presence", ("p", "d", "n", "online", "eu", 1000)))
    updates = [m for m in (server.pop(sub).message for _ in range(10) if server.releasable(sub))
               if isinstance(m, TransactionUpdate)]
    parts = [t for u in updates for qs in u.query_sets for t in qs.tables if t.table == "presence_signal"]
    assert parts and all(t.event for t in parts) and sum(len(t.inserts) for t in parts) == 1
