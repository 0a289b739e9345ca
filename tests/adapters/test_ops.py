"""The operator's page data (``adapters.ops``), sans-I/O: an engine driven through its own API,
the answers checked against the engine's SQL evaluator and hand-counted tables."""

from __future__ import annotations

import json
import logging

import pytest

from adapters import ops
from reference.engine import Engine
from spec.auth import Claims
from spec.messages import Subscribe
from spec.schema import SCOPES, TABLE_BY_NAME

ADMIN = Claims("a" * 64, frozenset({"sync.admin"}), ("*",))
LIMITED = Claims("b" * 64, frozenset({"sync.admin"}), ("demo.*",))
WRITER = Claims("c" * 64, frozenset(SCOPES), ("*",))
FACTS = ops.ServerFacts(database="autopilot-sync", now_us=2_000_000, started_at_us=500_000)


def append(eng: Engine, stream: str, key: str, payload: str = "1") -> None:
    eng.call_detached(WRITER, "append_sync_event", (stream, key, payload, None, None))


def durable(eng: Engine) -> None:
    eng.take_records()
    eng.advance_durable(eng.committed)


def loaded() -> Engine:
    eng = Engine()
    eng.now = 1_000_000
    for i in range(3):
        append(eng, "demo.a", f"k{i}")
    append(eng, "other.x", "k0")
    durable(eng)
    return eng


@pytest.mark.parametrize(("scopes", "streams", "status"), [
    (set(), ("*",), 403),
    ({"sync.subscribe", "sync.append"}, ("*",), 403),
    (set(SCOPES) - {"sync.admin"}, ("*",), 403),
    ({"sync.admin"}, ("*",), None),
    ({"sync.admin"}, ("demo.*",), None),
    ({"sync.admin"}, (), None),
])
def test_access_needs_the_admin_scope(scopes: set[str], streams: tuple[str, ...], status: int | None) -> None:
    denied = ops.access(Claims("d" * 64, frozenset(scopes), streams))
    assert (denied.status if denied else None) == status
    if denied:
        assert "sync.admin" in denied.message


def test_streams_agree_with_the_sql_evaluator() -> None:
    eng = loaded()
    data = ops.gather(eng, FACTS, ADMIN)
    rows = {r["stream_id"]: r for r in data["streams"]["rows"]}
    assert set(rows) == {"demo.a", "other.x"} and data["streams"]["total"] == 2
    table = eng.query(WRITER, "SELECT * FROM sync_stream")
    for row in table.inserts:
        page = rows[row.stream_id]
        # every column of the schema is on the page, whatever the schema version adds
        for col in TABLE_BY_NAME["sync_stream"].column_names:
            value = getattr(row, col)
            assert page[col] == (list(value) if isinstance(value, tuple) else value), col  # JSON: arrays as lists
    events = eng.query(WRITER, "SELECT * FROM sync_event WHERE stream_id = 'demo.a'").inserts
    assert rows["demo.a"]["retained_events"] == len(events) == 3
    last = max(events, key=lambda e: e.seq)
    assert rows["demo.a"]["last_append"] == {"seq": last.seq, "at": last.committed_at, "tx_offset": last.tx_offset,
                                             "producer": WRITER.identity}
    assert rows["other.x"]["last_append"]["tx_offset"] == 4 and rows["other.x"]["head_seq"] == 1


def test_a_limited_token_sees_only_its_streams_and_no_other_section() -> None:
    eng = loaded()
    conn = eng.connect(WRITER, True)
    eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 'other.x'",)))
    eng.stale_reasons["epoch_changed"] = 1
    full = ops.gather(eng, FACTS, ADMIN)
    limited = ops.gather(eng, FACTS, LIMITED)
    assert [r["stream_id"] for r in limited["streams"]["rows"]] == ["demo.a"]
    assert limited["viewer"]["scope"] == "limited" and full["viewer"]["scope"] == "full"
    for section in ops.LIMITED_HIDDEN:
        assert section in full and section not in limited
    assert limited["hidden"] == list(ops.LIMITED_HIDDEN) and full["hidden"] == []
    assert "other.x" not in repr(limited) and "other.x" in repr(full)
    nothing = ops.gather(eng, FACTS, Claims("e" * 64, frozenset({"sync.admin"}), ()))
    assert nothing["streams"] == {"total": 0, "rows": []}


def test_connections_queue_and_lag() -> None:
    eng = loaded()
    facts = ops.ServerFacts("autopilot-sync", 2_000_000, 0,
                            sessions=(ops.SessionFacts(1, "v3.bsatn.spacetimedb", "None", 1_500_000),))
    conn = eng.connect(WRITER, True)
    assert conn == 1
    eng.handle(conn, Subscribe(1, 7, ("SELECT * FROM sync_event WHERE stream_id = 'demo.a'",
                                      "SELECT * FROM session_presence")))
    other = eng.connect(WRITER, False)
    before = eng.committed
    for i in range(3):
        append(eng, "demo.a", f"later{i}")  # 3 transactions nobody pops, none durable yet
    data = ops.gather(eng, facts, ADMIN)
    rows = {r["conn_id"]: r for r in data["connections"]["rows"]}
    first = rows[conn]
    assert first["protocol"] == "v3.bsatn.spacetimedb" and first["connected_at"] == 1_500_000
    assert first["confirmed_reads"] is True and first["subscriptions"] == 2 and first["query_sets"] == 1
    assert first["queries"][0] == "SELECT * FROM sync_event WHERE stream_id = 'demo.a'"
    # the queue: SubscribeApplied (at `before`) + 3 TransactionUpdates
    assert first["outbound_queue"] == 4 and first["outbound_bytes"] == eng.conns[conn].outbound_bytes
    assert first["lag"] == {"transactions": eng.committed - before, "unreleased": 3}
    assert rows[other]["protocol"] == "http" and rows[other]["outbound_queue"] == 0
    assert rows[other]["lag"] == {"transactions": 0, "unreleased": 0}
    assert data["durability"]["committed_offset"] == before + 3 and data["durability"]["undurable"] == 3


def test_durability_batches_presence_assignments_outbox_and_errors() -> None:
    eng = loaded()
    eng.call_detached(WRITER, "upsert_presence", ("s1", "dev", "node", "online", "eu", 60_000))
    eng.call_detached(WRITER, "upsert_presence", ("s2", "dev", "node", "away", "eu", 60_000))
    for rid in ("r1", "r2"):
        eng.call_detached(WRITER, "open_compute_assignment", (rid, 5050, '{"q":1}'))
    eng.call_detached(WRITER, "update_compute_assignment", ("r2", 1, "cancelled", None, None))
    for oid in ("o1", "o2"):
        eng.call_detached(WRITER, "enqueue_bridge_event", (oid, "src", 30078, "[]", "hi"))
    for _ in range(eng.policy.bridge_max_attempts):
        eng.call_detached(WRITER, "record_bridge_failure", ("o2", "relay down", 0))
    errors = (ops.ErrorEntry(1, "ERROR", "syncref.server", "first"), ops.ErrorEntry(2, "WARNING", "syncref", "second"))
    facts = ops.ServerFacts("autopilot-sync", 2_000_000, 0, batch_sizes=(1, 4, 2, 9), batches=17,
                            records_written=40, closes={"slow_consumer": 2, "idle_timeout": 1},
                            refused={"max_connections": 3}, errors=errors)
    data = ops.gather(eng, facts, ADMIN)
    assert data["durability"]["recent_batches"] == {"count": 4, "min": 1, "max": 9, "mean": 4.0, "last": [1, 4, 2, 9]}
    assert data["durability"]["batches"] == 17 and data["durability"]["records_written"] == 40
    assert data["presence"]["by_status"] == {"away": 1, "online": 1} and data["presence"]["total"] == 2
    assert data["assignments"] == {"by_status": {"cancelled": 1, "open": 1}, "total": 2}
    assert data["outbox"]["backlog"] == 1 and data["outbox"]["dead_letters"] == 1
    assert data["outbox"]["by_status"] == {"failed": 1, "pending": 1}
    assert data["outbox"]["recent_dead"][0]["outbox_id"] == "o2"
    assert data["outbox"]["recent_dead"][0]["attempts"] == eng.policy.bridge_max_attempts
    assert data["disconnects"]["slow_consumer"] == 2 and data["disconnects"]["refused_by_limit"] == {
        "max_connections": 3}
    assert [e["message"] for e in data["errors"]] == ["second", "first"]  # newest first
    assert data["server"]["uptime_s"] == 2.0
    empty = ops.gather(Engine(), FACTS, ADMIN)["durability"]["recent_batches"]
    assert empty == {"count": 0, "min": None, "max": None, "mean": None, "last": []}


def test_durability_names_the_log_id_and_the_head_mark_for_every_admin() -> None:
    """ADR-0039's log id and head mark on the page: the id (what ``verify-log --json`` prints, what a
    refusal names), the mark's offset, how far it is behind the durable offset, marks written and
    failed writes -- for a limited admin too (durability is server-wide).  Failed before (review of
    ADR-0039): the page named neither."""
    eng = loaded()  # durable offset 4
    facts = ops.ServerFacts("autopilot-sync", 2_000_000, 0, log_id="f" * 32, head_mark_offset=3, head_marks=5,
                            head_mark_errors=2)
    for viewer in (ADMIN, LIMITED):
        dur = ops.gather(eng, facts, viewer)["durability"]
        assert dur["log_id"] == "f" * 32
        assert dur["head_mark"] == {"offset": 3, "behind": 1, "written": 5, "errors": 2}
    ahead = ops.ServerFacts("autopilot-sync", 2_000_000, 0, head_mark_offset=6)  # the writer ahead of the engine
    assert ops.gather(eng, ahead, ADMIN)["durability"]["head_mark"]["behind"] == 0
    none = ops.gather(eng, FACTS, ADMIN)["durability"]  # no mark written yet: nothing to be behind
    assert none["log_id"] is None and none["head_mark"] == {"offset": 0, "behind": None, "written": 0, "errors": 0}


def test_stale_cursors_are_counted_by_reason() -> None:
    eng = loaded()
    conn = eng.connect(WRITER, True)
    eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 'demo.a' AND epoch = 1 "
                                      "AND seq > 9",)))
    eng.handle(conn, Subscribe(2, 2, ("SELECT * FROM sync_event WHERE stream_id = 'demo.a' AND epoch = 7 "
                                      "AND seq > 1",)))
    eng.handle(conn, Subscribe(3, 3, ("SELECT * FROM sync_event WHERE stream_id = 'demo.a' AND epoch = 1 "
                                      "AND seq > 1",)))  # not stale
    assert ops.gather(eng, FACTS, ADMIN)["stale_cursors"] == {"cursor_ahead_of_head": 1, "epoch_changed": 1}


def test_lists_are_capped_with_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine()
    for i in range(7):
        append(eng, f"demo.s{i}", "k")
    monkeypatch.setattr(ops, "MAX_ROWS", 5)
    streams = ops.gather(eng, FACTS, ADMIN)["streams"]
    assert streams["total"] == 7 and [r["stream_id"] for r in streams["rows"]] == [f"demo.s{i}" for i in range(5)]


def test_the_feed_stays_small_whatever_clients_subscribe() -> None:
    """Any client with sync.subscribe chooses its query texts (up to max_query_bytes, 8 KiB each).
    Failed before: 500 connections with 8 such queries made every /ops/data answer 32 MB -- ~135 ms of
    the event loop to build and encode, at every poll while the page is open.  Each text shown is now
    cut to MAX_QUERY_CHARS_SHOWN characters (an ellipsis marks a cut one)."""
    eng = Engine()
    literal = "x" * 8000
    for c in range(ops.MAX_ROWS):
        conn = eng.connect(WRITER, False)
        eng.handle(conn, Subscribe(1, 1, tuple(f"SELECT * FROM sync_event WHERE stream_id = '{literal}{c}.{i}'"
                                                 for i in range(ops.MAX_QUERIES_SHOWN))))
    short = "SELECT * FROM sync_stream"
    eng.handle(eng.connect(WRITER, False), Subscribe(1, 1, (short,)))
    data = ops.gather(eng, FACTS, ADMIN)
    body = json.dumps(data, separators=(",", ":"))
    assert len(body) < 2 * 1024 * 1024, len(body)
    first = data["connections"]["rows"][0]["queries"][0]
    assert len(first) == ops.MAX_QUERY_CHARS_SHOWN + 1 and first.endswith("\u2026")
    assert first[:-1] == f"SELECT * FROM sync_event WHERE stream_id = '{literal}"[:ops.MAX_QUERY_CHARS_SHOWN]
    assert data["connections"]["total"] == ops.MAX_ROWS + 1


def test_defaults_are_pinned() -> None:
    assert (ops.MAX_ROWS, ops.MAX_ERRORS, ops.BATCH_WINDOW, ops.ADMIN_SCOPE) == (500, 50, 256, "sync.admin")
    assert (ops.MAX_QUERIES_SHOWN, ops.MAX_QUERY_CHARS_SHOWN) == (8, 200)


def test_recent_errors_keeps_the_last_warnings_only() -> None:
    handler = ops.RecentErrors(keep=3, clock=lambda: 5.0)
    logger = logging.getLogger("syncref.test-ops")
    logger.addHandler(handler)
    try:
        logger.info("not kept")
        for i in range(5):
            logger.error("error %d", i)
    finally:
        logger.removeHandler(handler)
    # a broken format string must not break logging (emitted directly: pytest's own handler would raise)
    handler.emit(logging.LogRecord("syncref", logging.WARNING, __file__, 1, "bad %s %s", ("format",), None))
    assert [e.message for e in handler.entries] == ["error 3", "error 4", "bad %s %s"]
    assert handler.entries[0] == ops.ErrorEntry(5_000_000, "ERROR", "syncref.test-ops", "error 3")
