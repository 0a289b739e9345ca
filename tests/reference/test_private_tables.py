"""AUTH-1 on the reference engine for the tables readable by something other than a stream grant:
a checkpoint only by its owner, a bridge outbox row only by a bridge scope -- in snapshots and in
updates.  The engine plays the conformance kit's ``private_tables`` delivery scenario; the expected
messages are the checked-in vector (written by the model, ``adapters/conformance/generate.py``),
and the facts that matter are restated here by hand.  The differential machines reach neither leak
in their budget (no machine client subscribes to another identity's checkpoint or to the outbox
without a bridge scope): this file is the killer of the engine mutants ``checkpoint_by_stream_grant``
and ``bridge_rows_for_everyone``."""

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
