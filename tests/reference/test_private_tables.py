"""AUTH-1 on the reference engine for the tables readable by something other than a stream grant:
a checkpoint only by its owner, a bridge outbox row only by a bridge scope -- in snapshots and in
updates.  The engine plays the conformance kit's ``private_tables`` delivery scenario; the expected
messages are the checked-in vector (written by the model, ``adapters/conformance/generate.py``),
and the facts that matter are restated here by hand.  The differential machines reach neither leak
in their budget (no machine client subscribes to another identity's checkpoint or to the outbox
without a bridge scope, and none sends a one-off read): this file is the killer of the engine mutants
``checkpoint_by_stream_grant``, ``bridge_rows_for_everyone`` and ``one_off_ignores_row_filter``."""

from __future__ import annotations

import json
from typing import Any

from adapters.conformance.delivery import drive, engine_target
from adapters.conformance.generate import VECTORS_DIR

CASE = VECTORS_DIR / "delivery" / "scenario" / "private_tables"


def _played() -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
    pre = json.loads((CASE / "pre.json").read_text())
    steps = json.loads((CASE / "ops.json").read_text())
    want = json.loads((CASE / "post.json").read_text())["received"]
    engine = engine_target(max_queue=pre["max_queue"], max_undurable=pre["max_undurable"], now=pre["now"])
    return drive(engine, steps), want


def _tables(msg: dict[str, Any]) -> list[str]:
    if "rows" in msg:
        return [t["table"] for t in msg["rows"]]
    sets = msg["query_sets"] if "query_sets" in msg else msg["outcome"]["ok"]["query_sets"]
    return [t["table"] for s in sets for t in s["tables"]]


def test_the_engine_sends_what_the_vector_says() -> None:
    got, want = _played()
    assert got == want


def test_a_watcher_of_the_stream_reads_neither_the_checkpoint_nor_the_outbox_row() -> None:
    got, _ = _played()
    writer_sees = sorted(t for m in got[2] for t in _tables(m))
    assert writer_sees == ["bridge_outbox", "sync_checkpoint", "sync_event"]  # the owner, bridge-scoped
    assert [_tables(m) for m in got[3]] == [["sync_event"]]  # the watcher's update: the event only
    assert [_tables(m) for m in got[4]] == [["sync_event"]]  # a late watcher's snapshot: the event only


def test_a_one_off_read_follows_the_same_row_filter() -> None:
    """A one-off read (``OneOffQuery``, ``/sql``) is filtered as a subscription is: a reader granted
    ``s.a`` reads no one else's checkpoint, no outbox row (no bridge scope), no event of ``s.b``.
    Killer of ``one_off_ignores_row_filter`` (the differential machines send no one-off reads)."""
    from adapters.conformance.codec import claims_to_json
    from adapters.conformance.delivery import PEOPLE, client_message_json
    from reference.engine import Engine
    from spec import messages as sm

    engine = engine_target()
    writes = [sm.CallReducer(1, "append_sync_event", ("s.a", "k1", '{"n":1}', None, None)),
              sm.CallReducer(2, "append_sync_event", ("s.b", "k1", '{"n":1}', None, None)),
              sm.CallReducer(3, "ack_checkpoint", ("c1", "s.a", 1, 1)),
              sm.CallReducer(4, "enqueue_bridge_event", ("o5", "receipts", 30078, '[["d","x"]]', "hello"))]
    steps = [{"op": "connect", "conn": "w", "person": "writer", "claims": claims_to_json(PEOPLE["writer"]),
              "confirmed": False},
             *({"op": "send", "conn": "w", "message": client_message_json(c)} for c in writes),
             {"op": "receive", "conn": "w"}]
    results = drive(engine, steps)[0]
    assert [m["outcome"].get("err") for m in results] == [None] * 4  # every write took
    assert isinstance(engine, Engine)
    reader, writer = PEOPLE["reader"], PEOPLE["writer"]

    def read(claims: Any, text: str) -> list[str]:
        return sorted(str(getattr(row, "stream_id", getattr(row, "outbox_id", ""))) for row in
                      engine.query(claims, text).inserts)

    assert read(reader, "SELECT * FROM sync_event") == ["s.a"]
    assert read(reader, "SELECT * FROM sync_checkpoint WHERE stream_id = 's.a'") == []
    assert read(reader, "SELECT * FROM bridge_outbox WHERE outbox_id = 'o5'") == []
    # the same reads by the owner and bridge-scoped writer see the rows: the filter, not an empty table
    assert read(writer, "SELECT * FROM sync_event") == ["s.a", "s.b"]
    assert read(writer, "SELECT * FROM sync_checkpoint WHERE stream_id = 's.a'") == ["s.a"]
    assert read(writer, "SELECT * FROM bridge_outbox WHERE outbox_id = 'o5'") == ["o5"]
