"""``adapters.wire.subscribe_applied_parts``: a ``SubscribeApplied`` written straight from its row
lists (ADR-0031) is ``encode_server_parts(to_wire(msg))`` -- the same parts, not only the same
bytes, since the server frames a large body's parts without joining them.

Second opinion: the general path (the wire message objects and the generic :class:`Writer`),
over the snapshots an engine makes for resume sets at watermarks around chunk edges, rows of
one length (a ``FixedSize`` hint) and of many (``RowOffsets``), a snapshot of several tables,
row data over 64 KiB in one chunk (a part of its own) and over several (the run cache's pieces),
and values out of range (the same error).  Planted edits in the module's source must fail.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import pytest
from support.edited import edited_module

import adapters.wire as wire
import spec.messages as sm
from reference.engine import Engine
from spec.auth import Claims
from spec.messages import CallReducer, Subscribe
from spec.schema import SCOPES

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))


@functools.cache
def _snapshots() -> list[sm.SubscribeApplied]:
    """The ``SubscribeApplied`` messages of an engine for many query sets over three streams:
    ``fx`` (300 payloads of one length), ``var`` (300 of many lengths), ``big`` (600 of ~1.3 KB)."""
    eng = Engine()
    writer = eng.connect(ALL, confirmed=False)
    n = 0
    for stream, count, pad in (("fx", 300, lambda i: 40), ("var", 300, lambda i: i % 97),
                               ("big", 600, lambda i: 1200 + i % 5)):
        for i in range(count):
            n += 1
            payload = f'{{"i":{i % 10},"pad":"{"x" * pad(i)}"}}'
            eng.handle(writer, CallReducer(n, "append_sync_event", (stream, f"k{i}", payload, None, None)))
            eng.pop(writer)
            eng.advance_durable(eng.committed)
    reader = eng.connect(ALL, confirmed=False)
    sets: list[tuple[str, ...]] = [("SELECT * FROM sync_stream",),
                                   ("SELECT * FROM sync_stream WHERE stream_id = 'none'",)]
    for stream, count in (("fx", 300), ("var", 300), ("big", 600)):
        for w in (0, 1, 67, 68, 69, 150, count - 100, count - 1, count):
            event = f"SELECT * FROM sync_event WHERE stream_id = '{stream}' AND epoch = 1 AND seq > {w}"
            sets += [(f"SELECT * FROM sync_stream WHERE stream_id = '{stream}'", event), (event,)]
        sets.append((f"SELECT * FROM sync_event WHERE stream_id = '{stream}'", "SELECT * FROM sync_stream"))
    out = []
    for k, queries in enumerate(sets):
        eng.handle(reader, Subscribe(k, k + 1, queries))
        msgs = [o.message for o in eng.take(reader, 10, 1 << 40)]
        applied = [x for x in msgs if type(x) is sm.SubscribeApplied]
        assert len(applied) == 1, msgs
        out.append(applied[0])
    return out


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # the same error, type and text
        return (type(exc).__name__, str(exc))


def check_parts(mod: types.ModuleType) -> None:
    kinds = set()
    for msg in _snapshots():
        want = wire.encode_server_parts(wire.to_wire(msg))
        for cache in (None, wire.RowCache()):
            assert mod.subscribe_applied_parts(msg, cache) == want, msg.query_set_id
        kinds |= {(t.table, type(wire._snapshot_rowlist(t, None).size_hint).__name__, len(want) > 1) for t in msg.rows}
    # the cases the table covers: both hints, a sync_stream list, bodies kept whole and in parts
    assert {("sync_event", "FixedSize", False), ("sync_event", "RowOffsets", False), ("sync_event", "RowOffsets", True),
            ("sync_stream", "RowOffsets", False), ("sync_stream", "FixedSize", False)} <= kinds, kinds
    assert any(type(t.rows) is wire.RowPieces for m in _snapshots()
               for t in wire.to_wire(m).rows.tables)  # type: ignore[union-attr]


def check_errors(mod: types.ModuleType) -> None:
    base = _snapshots()[5]
    for bad in (sm.SubscribeApplied(-1, 1, base.rows), sm.SubscribeApplied(1 << 32, 1, base.rows),
                sm.SubscribeApplied(1, 1 << 32, base.rows), sm.SubscribeApplied(True, 1, base.rows),
                sm.SubscribeApplied(1, 1, (sm.TableRows("sync_stream\ud800", base.rows[0].inserts),))):
        want = _outcome(lambda b=bad: wire.encode_server_parts(wire.to_wire(b)))
        assert isinstance(want, tuple) and want[0] == "LocalProtocolError", want
        assert _outcome(lambda b=bad: mod.subscribe_applied_parts(b, None)) == want


def test_the_parts_are_the_general_encoders() -> None:
    check_parts(wire)


def test_values_out_of_range_raise_the_general_error() -> None:
    check_errors(wire)


PLANTED = (
    ("the message tag of UnsubscribeApplied", (("_SUB_HEAD.pack(1, rid, qs, len(tables))",
                                                "_SUB_HEAD.pack(2, rid, qs, len(tables))"),), check_parts),
    ("the FixedSize hint tagged as offsets", (("head = _FIXED_HINT.pack(0, hint.size)",
                                               "head = _FIXED_HINT.pack(1, hint.size)"),), check_parts),
    ("one offset fewer counted", (("struct.pack(f\"<BI{len(offsets)}Q\", 1, len(offsets), *offsets)",
                                   "struct.pack(f\"<BI{len(offsets)}Q\", 1, len(offsets) - 1, *offsets)"),),
     check_parts),
    ("large row data joined into the buffer", (("if len(data) < 65536 or not isinstance(data, bytes):",
                                                "if True:"),), check_parts),
    ("the run cache's pieces reversed", (("parts += (b\"\".join(buf), *rl.pieces)",
                                          "parts += (b\"\".join(buf), *reversed(rl.pieces))"),), check_parts),
    ("the table name's length left out", (("buf += (_LEN.pack(len(name)), name, head)",
                                           "buf += (name, head)"),), check_parts),
    ("the id range not checked", (("if not (type(rid) is int and 0 <= rid <= _U32_MAX and type(qs) is int "
                                   "and 0 <= qs <= _U32_MAX):",
                                   "if False:"),), check_errors),
)


@pytest.mark.parametrize(("name", "edits", "check"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bugs_are_caught(name: str, edits: tuple[tuple[str, str], ...], check: Any) -> None:
    mod = edited_module(wire, edits, name)
    with pytest.raises(AssertionError):
        check(mod)
