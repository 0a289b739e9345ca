"""Tests written for the generated mutants of ``reference/`` that the selected tests left alive
(issue 9, docs/mutation.md).  Each states the expected behaviour on its own terms -- values and
texts written out by hand, SHA-256 of a literal text, tables of cases -- never by calling the
function under test to compute the expectation.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from reference import reducers as r
from reference.db import Db, StreamLog, Txn
from reference.log import RowChange, TxRecord, body_json, claims_from_json, make_record, record_floors
from reference.reducers import Ctx
from spec.auth import Claims
from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.policy import DEFAULT_POLICY, Policy, StreamClass
from spec.schema import SCOPES
from spec.values import ComputeAssignment, ProviderCapability, SyncCheckpoint, SyncEvent, SyncStream

A = "a" * 64
H = "sha256:" + "0" * 64


def ev(seq: int, stream: str = "s", epoch: int = 1, key: str | None = None) -> SyncEvent:
    return SyncEvent(stream, epoch, seq, key or f"k{seq}", H, "{}", A, 0, seq)


def ca(request_id: str, version: int, status: str = "open") -> ComputeAssignment:
    return ComputeAssignment(request_id, A, 5001, "{}", H, None, None, status, None, version, 0, 0)


def cp(client: str, seq: int) -> SyncCheckpoint:
    return SyncCheckpoint(f"{client}|s", client, "s", A, 1, seq, 0)


def state(db: Db) -> tuple[object, ...]:
    """Everything a rollback must restore, as plain values."""
    logs = {sid: (log.floor, list(log.events), dict(log.by_key)) for sid, log in db.logs.items()}
    return {t: dict(rows) for t, rows in db.pk.items()}, logs, db.epoch_floor, db.version_floor


# --- reference/db.py: the stream log index ---------------------------------------------------------


def test_stream_log_get_and_after_are_offsets_from_the_floor() -> None:
    log = StreamLog.of("s", 5, [ev(5), ev(6), ev(7)])
    # seq -> the event at that seq, or None outside the retained range
    for seq, want in [(0, None), (4, None), (5, ev(5)), (6, ev(6)), (7, ev(7)), (8, None), (50, None)]:
        assert log.get(seq) == want, seq
    # watermark -> the retained events with seq > watermark
    for watermark, seqs in [(0, [5, 6, 7]), (4, [5, 6, 7]), (5, [6, 7]), (6, [7]), (7, []), (9, [])]:
        assert [e.seq for e in log.after(watermark)] == seqs, watermark


def test_db_event_inserts_keep_seqs_contiguous_from_the_first_one() -> None:
    db = Db()
    db._insert(ev(3))
    db._insert(ev(4))
    log = db.logs["s"]
    assert (log.floor, [e.seq for e in log.events], log.by_key) == (3, [3, 4], {"k3": 3, "k4": 4})
    with pytest.raises(LocalProtocolError, match="not the next seq"):
        db._insert(ev(6))
    with pytest.raises(LocalProtocolError, match="duplicate idempotency key"):
        db._insert(ev(5, key="k3"))
    # retention empties the log; the next append starts it again at its own seq
    db._delete(ev(3))
    assert (log.floor, [e.seq for e in log.events], log.by_key) == (4, [4], {"k4": 4})
    db._delete(ev(4))
    assert (log.floor, log.events, log.by_key) == (5, [], {})
    db._insert(ev(9, key="k9"))
    assert (log.floor, [e.seq for e in log.events]) == (9, [9])


def test_db_event_delete_takes_either_end_only() -> None:
    db = Db()
    for s in (1, 2, 3):
        db._insert(ev(s))
    with pytest.raises(LocalProtocolError, match="not at either end"):
        db._delete(ev(2))
    db._delete(ev(3))  # the tail (a rolled-back append): the floor stays
    log = db.logs["s"]
    assert (log.floor, [e.seq for e in log.events], log.by_key) == (1, [1, 2], {"k1": 1, "k2": 2})
    db._delete(ev(1))  # the head (retention): the floor moves by one
    assert (log.floor, [e.seq for e in log.events], log.by_key) == (2, [2], {"k2": 2})


def test_db_primary_key_rows() -> None:
    db = Db()
    db._insert(ca("r1", 1))
    assert db.get("compute_assignment", ("r1",)) == ca("r1", 1)
    assert list(db.rows("compute_assignment")) == [ca("r1", 1)]
    with pytest.raises(LocalProtocolError, match="duplicate primary key"):
        db._insert(ca("r1", 2))
    with pytest.raises(LocalProtocolError, match="not found"):
        db._delete(ca("r1", 2))  # same key, other content: not the stored row
    with pytest.raises(LocalProtocolError, match="not found"):
        db._delete(ca("r2", 1))
    db._delete(ca("r1", 1))
    assert db.get("compute_assignment", ("r1",)) is None and db.pk["compute_assignment"] == {}


def test_db_relabel_moves_only_the_named_epoch() -> None:
    db = Db()
    db._insert(ev(1, epoch=1))
    db._insert(ev(2, epoch=2))
    db.relabel_events("s", 1, 3)
    assert [(e.seq, e.epoch) for e in db.logs["s"].events] == [(1, 3), (2, 2)]
    db.relabel_events("nowhere", 1, 3)  # no such stream: nothing happens
    assert "nowhere" not in db.logs


# --- reference/db.py: transactions --------------------------------------------------------------


def test_txn_delta_of_inserts_deletes_and_updates() -> None:
    db = Db()
    db._insert(ca("old", 1))
    tx = Txn(db)
    assert not tx.wrote
    tx.insert(ca("new", 1))
    tx.delete(ca("old", 1))
    assert tx.inserts == {"compute_assignment": [ca("new", 1)]}
    assert tx.deletes == {"compute_assignment": [ca("old", 1)]}
    assert tx.wrote
    # a row inserted and deleted in the same transaction leaves no trace in the delta
    tx.insert(cp("c", 1))
    tx.delete(cp("c", 1))
    assert tx.inserts.get("sync_checkpoint", []) == [] and "sync_checkpoint" not in tx.deletes
    # an update to the same value writes nothing; a real one is a delete plus an insert
    tx.update(ca("new", 1), ca("new", 1))
    assert tx.inserts == {"compute_assignment": [ca("new", 1)], "sync_checkpoint": []}
    tx.update(ca("new", 1), ca("new", 2))
    assert tx.inserts["compute_assignment"] == [ca("new", 2)]
    assert db.get("compute_assignment", ("new",)) == ca("new", 2)


def test_txn_event_table_rows_go_to_the_events_not_the_tables() -> None:
    from spec.values import StreamSignal

    db = Db()
    tx = Txn(db)
    sig = StreamSignal("s", "typing", "{}", A, 0)
    tx.insert(sig)
    assert tx.events == {"stream_signal": [sig]} and tx.inserts == {} and tx.wrote
    assert all(not rows for rows in db.pk.values()) and db.logs == {}


def test_txn_wrote_sees_a_floor_change_alone() -> None:
    db = Db()
    tx = Txn(db)
    db.version_floor = 4
    assert tx.wrote
    tx.rollback()
    assert db.version_floor == 1 and not Txn(db).wrote


def test_rollback_restores_every_index() -> None:
    db = Db()
    for s in (5, 6, 7):
        db._insert(ev(s))
    db._insert(ev(1, stream="t", epoch=1))
    db._insert(ca("r1", 1))
    db._insert(cp("c", 3))
    before = state(db)
    tx = Txn(db)
    # retention drops the whole of stream s, one event at a time from the front
    for s in (5, 6, 7):
        tx.delete(ev(s))
    tx.insert(ev(2, stream="t", epoch=1))
    tx.relabel_events("t", 1, 2)
    tx.update(ca("r1", 1), ca("r1", 2))
    tx.delete(cp("c", 3))
    tx.insert(ca("r2", 1))
    db.epoch_floor, db.version_floor = 5, 6
    assert state(db) != before
    tx.rollback()
    assert state(db) == before
    assert [(e.seq, e.epoch) for e in db.logs["t"].events] == [(1, 1)]
    assert (db.logs["s"].floor, [e.seq for e in db.logs["s"].events]) == (5, [5, 6, 7])


def test_rollback_of_a_prefix_delete_puts_the_event_back_in_front() -> None:
    db = Db()
    for s in (5, 6, 7):
        db._insert(ev(s))
    tx = Txn(db)
    tx.delete(ev(5))
    tx.delete(ev(6))
    assert (db.logs["s"].floor, [e.seq for e in db.logs["s"].events]) == (7, [7])
    tx.rollback()
    log = db.logs["s"]
    assert (log.floor, [e.seq for e in log.events], log.by_key) == (5, [5, 6, 7], {"k5": 5, "k6": 6, "k7": 7})


# --- reference/log.py ----------------------------------------------------------------------------


def test_record_floors_table() -> None:
    """The floors after a record, written out per kind of record (ADR-0003 decision 5)."""
    def rec(kind: str, args: tuple[object, ...], *changes: RowChange) -> TxRecord:
        return TxRecord(1, kind, kind, None, args, 0, changes, "0" * 64, "0" * 64)

    gone = RowChange("compute_assignment", (ca("r1", 7),), ())
    updated = RowChange("compute_assignment", (ca("r2", 3),), (ca("r2", 4, "assigned"),))
    other = RowChange("sync_checkpoint", (cp("c", 9),), ())
    cases = [
        (rec("recovery", (4, 12)), (1, 1), (4, 12)),  # a recovery record names both floors
        (rec("reducer", ()), (2, 3), (2, 3)),  # nothing deleted
        (rec("compact", (0,), gone), (2, 3), (2, 8)),  # an assignment gone for good: past its version
        (rec("compact", (0,), gone), (2, 20), (2, 20)),  # never lowered
        (rec("reducer", (), updated), (2, 3), (2, 3)),  # deleted and re-inserted under its key: an update
        (rec("compact", (0,), other), (2, 3), (2, 3)),  # other tables do not move the version floor
        (rec("compact", (0,), gone, RowChange("compute_assignment", (ca("r3", 11),), ())), (2, 3), (2, 12)),
        # another table's change listed first (a delta lists its tables in schema order, and retention deletes
        # offline session_presence rows, which come first, with terminal assignments) -- still moves the floor
        (rec("compact", (0,), other, gone), (2, 3), (2, 8)),
    ]
    for record, before, after in cases:
        assert record_floors(record, *before) == after, (record.kind, record.changes, before)


def test_record_hash_is_sha256_of_prev_and_the_written_out_body() -> None:
    """A known-answer vector: the chain hash of one record, from its canonical body text written by hand."""
    caller = Claims(A, frozenset({"sync.append", "sync.read"}), ("s*",), "dev", None, None, "oa.sync.v1", 3)
    change = RowChange("sync_checkpoint", (), (cp("c", 2),))
    delta = f'[["sync_checkpoint",[],[["c|s","c","s","{A}",1,2,0]]]]'
    delta_hash = hashlib.sha256(delta.encode()).hexdigest()
    claims = (f'{{"client_build_id":null,"device_id":"dev","identity":"{A}","protocol_version":"oa.sync.v1",'
              '"schema_version":3,"scopes":["sync.append","sync.read"],"session_id":null,"streams":["s*"]}')
    body = (f'{{"args":["c","s",1,[5000,5001],"\u00e9"],"caller":{claims},"delta_hash":"{delta_hash}",'
            '"kind":"reducer","name":"ack_checkpoint","offset":7,"timestamp":1700}')
    prev = "1" * 64
    rec = make_record(7, "reducer", "ack_checkpoint", caller, ("c", "s", 1, (5000, 5001), "\u00e9"), 1700, (change,),
                      prev)
    assert rec.hash == hashlib.sha256((prev + body).encode()).hexdigest()
    assert (rec.offset, rec.kind, rec.name, rec.caller, rec.timestamp, rec.prev_hash) == \
        (7, "reducer", "ack_checkpoint", caller, 1700, prev)
    assert rec.delta_json == delta and rec.args_json == '["c","s",1,[5000,5001],"\u00e9"]'
    # the definition's body, as a JSON object (arrays as lists)
    assert body_json(7, "reducer", "ack_checkpoint", caller, ("c", "s", 1, (5000, 5001), "\u00e9"), 1700,
                     (change,)) == {
        "offset": 7, "kind": "reducer", "name": "ack_checkpoint", "timestamp": 1700, "delta_hash": delta_hash,
        "args": ["c", "s", 1, [5000, 5001], "\u00e9"],
        "caller": {"identity": A, "scopes": ["sync.append", "sync.read"], "streams": ["s*"], "device_id": "dev",
                   "session_id": None, "client_build_id": None, "protocol_version": "oa.sync.v1",
                   "schema_version": 3}}


def test_claims_from_json_reads_every_field() -> None:
    d = {"identity": A, "scopes": ["sync.read", "sync.append"], "streams": ["a", "b*"], "device_id": "dev",
         "session_id": "sess", "client_build_id": "20260101T000000Z", "protocol_version": "oa.sync.v1",
         "schema_version": 3}
    assert claims_from_json(d) == Claims(A, frozenset({"sync.append", "sync.read"}), ("a", "b*"), "dev", "sess",
                                         "20260101T000000Z", "oa.sync.v1", 3)
    assert claims_from_json(None) is None


# --- reference/snapshot.py -----------------------------------------------------------------------


def test_prune_keeps_the_newest_and_the_future_and_drops_stray_temp_files(tmp_path: Path) -> None:
    """A snapshot past the newest is never pruned (ADR-0037): it is the last copy of records the log
    lost, and its existence is what makes the next start refuse.  Failed before: snap-9 was deleted."""
    from reference.snapshot import prune

    for name in ["snap-000000000001.json", "snap-000000000002.json", "snap-000000000003.json",
                 "snap-000000000009.json",  # past the newest: records the log lost -- kept, not counted
                 "snap-000000000002.tmp",  # a stray temp file
                 "snap-000000000003.tmp",  # the newest's own temp file (being renamed): left alone
                 "notes.txt"]:
        (tmp_path / name).write_text("x")
    prune(tmp_path, 3, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "snap-000000000002.json", "snap-000000000003.json", "snap-000000000003.tmp",
        "snap-000000000009.json"]


def test_snapshotter_counts_from_offset_zero_by_default(tmp_path: Path) -> None:
    from reference.snapshot import Snapshotter

    s = Snapshotter(tmp_path, 5, 1, lambda offset: None)
    # every 5 records from an empty log: due at 5, not at 4
    assert [s.due(n) for n in (0, 4, 5, 6)] == [False, False, True, True]
    assert Snapshotter(tmp_path, 5, 1, lambda offset: None, last_offset=3).due(7) is False


def test_an_unreadable_header_says_why(tmp_path: Path) -> None:
    from reference.snapshot import SnapshotError, header

    bad = tmp_path / "snap-000000000001.json"
    bad.write_text("not json\n")
    with pytest.raises(SnapshotError) as err:
        header(bad)
    assert err.value.name == "snap-000000000001.json" and err.value.reason.startswith("unreadable header: ")
    bad.write_text("[1, 2]\n")
    with pytest.raises(SnapshotError, match="unreadable header: not an object"):
        header(bad)


# --- reference/reducers.py: called directly on a Db, with the expected rows and errors written out ---


def _ctx(*scopes: str) -> Ctx:
    return Ctx(Claims(A, frozenset(scopes or SCOPES), ("*",)), 1_000, 1, DEFAULT_POLICY)


def _stream(**changes: object) -> SyncStream:
    base = SyncStream("s", "default", 3, 2, 5, 9, 4, 20_000, 10, 20, (1,), (2,))
    return replace(base, **changes)  # type: ignore[arg-type]


def _fails(call: Callable[[], object], code: ErrorCode, details: dict[str, object]) -> None:
    with pytest.raises(SyncError) as err:
        call()
    assert (err.value.code, dict(err.value.details)) == (code, details)


def test_checkpoint_ahead_of_head_names_the_head() -> None:
    db = Db()
    db._insert(_stream(head_seq=2, floor_seq=1))
    _fails(lambda: r.ack_checkpoint(Txn(db), _ctx(), "c1", "s", 3, 5), ErrorCode.CHECKPOINT_AHEAD_OF_HEAD,
           {"head_seq": 2, "requested_seq": 5, "stream_id": "s"})


def test_reset_stream_epoch_starts_a_fresh_epoch_with_no_continuation() -> None:
    db = Db()
    db._insert(_stream())
    for s in (4, 5, 6, 7, 8, 9):
        db._insert(ev(s, epoch=3))
    tx = Txn(db)
    r.reset_stream_epoch(tx, _ctx("sync.admin"), "s")
    assert db.get("sync_stream", ("s",)) == SyncStream("s", "default", 4, 0, 0, 9, 10, 20_000, 10, 1_000, (), ())
    assert db.logs["s"].events == [] and len(tx.deletes["sync_event"]) == 6
    _fails(lambda: r.reset_stream_epoch(Txn(db), _ctx("sync.append"), "s"), ErrorCode.MISSING_SCOPE,
           {"scope": "sync.admin"})
    _fails(lambda: r.reset_stream_epoch(Txn(db), _ctx("sync.admin"), "nope"), ErrorCode.INVALID_ARGUMENT,
           {"argument": "stream_id", "message": "stream does not exist"})


def test_assigning_names_why_the_provider_is_unavailable() -> None:
    db = Db()
    db._insert(ca("r1", 1))
    db._insert(ProviderCapability("gone", A, "{}", H, (5001,), 0, "withdrawn", 1, 0))
    db._insert(ProviderCapability("other", A, "{}", H, (5002,), 0, "active", 1, 0))
    for provider, reason in [("absent", "missing"), ("gone", "withdrawn"), ("other", "kind_not_advertised")]:
        _fails(functools.partial(r.update_compute_assignment, Txn(db), _ctx(), "r1", 1, "assigned", provider, None),
               ErrorCode.PROVIDER_UNAVAILABLE, {"job_kind": 5001, "provider_id": provider, "reason": reason})


def test_bridge_argument_messages() -> None:
    db = Db()
    _fails(lambda: r.enqueue_bridge_event(Txn(db), _ctx(), "o1", "src", 1, "[1]", "hi"), ErrorCode.INVALID_ARGUMENT,
           {"argument": "tags_json", "message": "must be a JSON array of arrays of strings"})
    _fails(lambda: r.mark_bridge_event_sent(Txn(db), _ctx(), "o1", "0" * 64, ("wss://a", "")),
           ErrorCode.INVALID_ARGUMENT, {"argument": "relays", "message": "each relay must be 1-512 chars"})
    _fails(lambda: r.publish_stream_signal(Txn(db), _ctx(), "bad id", "typing", "{}"), ErrorCode.INVALID_ARGUMENT,
           {"argument": "stream_id", "message": "must be 1-128 characters of [A-Za-z0-9._:-]"})


# --- reference/replay.py -------------------------------------------------------------------------


def test_replay_names_a_broken_chain_and_a_gap() -> None:
    from reference.replay import Mismatch, replay

    out = replay([make_record(1, "sweep", "sweep", None, (5,), 7, (), "1" * 64)])
    assert (out.records, out.mismatch) == (0, Mismatch(1, "prev_hash does not match the recomputed chain"))
    out = replay([make_record(2, "sweep", "sweep", None, (5,), 7, (), "0" * 64)])
    assert (out.records, out.mismatch) == (0, Mismatch(2, "expected offset 1, found 2"))


# --- reference/durability.py ---------------------------------------------------------------------


def test_a_store_has_no_recovery_report_until_restart(tmp_path: Path) -> None:
    from reference.durability import GroupCommitWriter, LogStore, RecoveryReport, restart

    store = LogStore.open(tmp_path)
    assert store.recovery is None  # the server logs a report's lines only when there is one
    writer = GroupCommitWriter(store)
    restart(store, writer, now=1)
    assert store.recovery == RecoveryReport(0, None, 0, [])  # an empty directory: no snapshot, no records
    writer.close()
    store.close()


def test_txn_delta_nets_a_row_inserted_then_deleted_and_keeps_other_deletes() -> None:
    """The transaction's delta, written out by hand for each sequence of writes (Txn.delete's
    O(1) "inserted earlier in this transaction?" test must give what a scan of the list gave)."""
    db = Db()
    before = Txn(db)
    old1, old2 = ca("r1", 1), ca("r2", 1)
    before.insert(old1)
    before.insert(old2)
    tx = Txn(db)
    tx.update(old1, ca("r1", 2))            # an existing row replaced: delete old, insert new
    tx.insert(ca("r3", 1))
    tx.update(ca("r3", 1), ca("r3", 2))     # a row inserted in this tx, then replaced: only the last
    tx.delete(ca("r3", 2))                  # ... then deleted: nets to nothing
    tx.update(old2, ca("r2", 7))
    tx.update(ca("r2", 7), ca("r2", 8))     # replaced twice: old2 deleted, only the last inserted
    assert tx.deletes == {"compute_assignment": [old1, old2]}
    assert tx.inserts == {"compute_assignment": [ca("r1", 2), ca("r2", 8)]}
    assert {r.request_id: r.version for r in db.pk["compute_assignment"].values()  # type: ignore[attr-defined]
            } == {"r1": 2, "r2": 8}


def test_verify_log_refuses_a_record_restart_refuses_for_its_arguments_text(tmp_path: Path) -> None:
    """The chain hash commits to the canonical JSON of the record body (docs/operations.md, ``commit_log``):
    a log whose first record stores, and hashes, its arguments as ``["s", "k", "{}", null, null]`` (spaces
    after the commas) is refused by restart; verify-log must not call it intact."""
    import json
    import sqlite3

    from reference.durability import DB_FILE, GroupCommitWriter, LogStore, restart
    from reference.engine import Engine
    from reference.replay import verify_log

    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", "{}", None, None)
    data = tmp_path / "data"
    store = LogStore.open(data)
    writer = GroupCommitWriter(store, background=False)
    writer.append(eng.take_records())
    writer.close()
    store.close()
    assert verify_log(data).ok  # as written: intact
    (data / "syncref.head").unlink()  # else the open refuses the rewritten record first (ADR-0039)
    spaced = '["s", "k", "{}", null, null]'
    conn = sqlite3.connect(data / DB_FILE)
    with conn:  # the row rewritten, its hash made over the text
        kind, name, caller, args, timestamp, changes, prev = conn.execute(
            'SELECT kind, name, caller_json, args_json, timestamp, changes_json, prev_hash FROM commit_log').fetchone()
        assert args == '["s","k","{}",null,null]'  # the canonical text, as written
        claims = json.dumps(json.loads(caller), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body = (f'{{"args":{spaced},"caller":{claims},"delta_hash":"{hashlib.sha256(changes.encode()).hexdigest()}",'
                f'"kind":"{kind}","name":"{name}","offset":1,"timestamp":{timestamp}}}')
        conn.execute('UPDATE commit_log SET args_json = ?, hash = ?', (spaced,
                     hashlib.sha256((prev + body).encode()).hexdigest()))
    conn.close()
    store = LogStore.open(data)
    with pytest.raises(ValueError, match="commit log hash mismatch at offset 1"):
        restart(store, GroupCommitWriter(store, background=False), now=10**9)
    store.close()
    report = verify_log(data)
    assert report.mismatch is not None and report.mismatch.offset == 1, report
    assert report.mismatch.reason.startswith("hash differs"), report.mismatch


# --- reference/reducers.py compact (decorated: measured by `./run mutate --icontract --decorated-only`) ---

def _streams_with_events(events: dict[str, list[int]], committed: dict[int, int] | None = None) -> Db:
    """Streams named in order; each one's events 1..n (committed_at from `committed` by seq, else 0)."""
    db = Db()
    for sid, seqs in events.items():
        db._insert(SyncStream(sid, "default", 1, 0, 0, len(seqs), 1, 20_000, 10, 20))
        for s in seqs:
            db._insert(replace(ev(s, stream=sid), committed_at=(committed or {}).get(s, 0)))
    return db


def _window(db: Db, sid: str) -> tuple[list[int], int, int]:
    stream = db.get("sync_stream", (sid,))
    assert isinstance(stream, SyncStream)
    log = db.logs.get(sid)
    return [e.seq for e in log.events] if log else [], stream.floor_seq, stream.updated_at


def test_compaction_by_count_keeps_the_newest_and_skips_streams_without_events() -> None:
    # "a" has no event at all (no log), "t" nothing past its count, both before "s": "s" is still compacted
    db = _streams_with_events({"a": [], "t": [1, 2], "s": [1, 2, 3, 4, 5]})
    r.compact(Txn(db), 5_000, Policy(default_class=StreamClass("c", retain_count=2)))
    assert _window(db, "a") == ([], 1, 20)
    assert _window(db, "s") == ([4, 5], 4, 5_000)
    assert _window(db, "t") == ([1, 2], 1, 20)  # within its count: not touched, not even its updated_at


def test_compaction_by_age_drops_the_aged_prefix_of_every_stream() -> None:
    policy = Policy(default_class=StreamClass("aged", retain_age_us=100))
    db = _streams_with_events({"s": [1, 2, 3, 4], "t": [1, 2]}, {1: 1_000, 2: 1_050, 3: 1_100, 4: 1_200})
    r.compact(Txn(db), 1_160, policy)  # older than 1_060 goes
    assert _window(db, "s") == ([3, 4], 3, 1_160)
    assert _window(db, "t") == ([], 3, 1_160)


def test_compaction_by_age_keeps_an_event_exactly_at_the_window() -> None:
    policy = Policy(default_class=StreamClass("aged", retain_age_us=100))
    db = _streams_with_events({"s": [1, 2, 3]}, {1: 1_000, 2: 1_050, 3: 1_100})
    r.compact(Txn(db), 1_150, policy)  # committed exactly 100 ago: not older than the window, kept
    assert _window(db, "s") == ([2, 3], 2, 1_150)


# --- reference/eventlog.py: the column store ---------------------------------------------------------

I64_MAX = 2**63 - 1


def test_a_row_is_stored_in_the_columns_up_to_their_edges_and_whole_past_them() -> None:
    # the columns hold 64-bit signed integers; a row past them is kept whole (a SyncEvent from
    # columns()) and still comes back exactly
    base = ev(1)
    cases = [
        ({}, True),
        ({"committed_at": I64_MAX}, True),
        ({"committed_at": -(2**63)}, True),
        ({"committed_at": I64_MAX + 1}, False),
        ({"committed_at": -(2**63) - 1}, False),
        ({"tx_offset": 0}, True),
        ({"tx_offset": I64_MAX}, True),
        ({"tx_offset": I64_MAX + 1}, False),
        ({"tx_offset": -1}, False),
        ({"payload_hash": "sha256:" + "A" * 64}, False),  # upper-case hex would come back lower-case
        ({"payload_hash": "sha256:" + "a" * 63}, False),
    ]
    for change, in_columns in cases:
        row = replace(base, **change)  # type: ignore[arg-type]
        log = StreamLog("s", 1)
        log.append(row)
        assert list(log.events) == [row], change
        (stored,) = log.retained_rows(0, row.epoch).columns()
        assert isinstance(stored, tuple) is in_columns, change
        if in_columns:
            assert stored[6:] == (row.committed_at, row.tx_offset), change


def test_the_events_sequence_equals_a_list_only_of_the_same_rows() -> None:
    log = StreamLog.of("s", 1, [ev(1), ev(2)])
    assert log.events == [ev(1), ev(2)] and log.events == (ev(1), ev(2))
    assert log.events != [ev(1), ev(2, key="other")]  # same length, another row
    assert log.events != [ev(1)] and log.events != [ev(1), ev(2), ev(3)]
    assert log.events == StreamLog.of("s", 1, [ev(1), ev(2)]).events


def test_reading_past_the_retained_rows_raises_index_error() -> None:
    log = StreamLog.of("s", 4, [ev(4), ev(5), ev(6)])
    assert (log.events[0].seq, log.events[-1].seq, log.events[-3].seq) == (4, 6, 4)
    rows = log.retained_rows(4, 1)  # seqs 5 and 6
    assert (rows[0].seq, rows[1].seq, rows[-1].seq, rows[-2].seq) == (5, 6, 6, 5)
    for seq_view in (log.events, rows):
        for i in (len(seq_view), len(seq_view) + 5, -len(seq_view) - 1):
            with pytest.raises(IndexError, match=r"^event index out of range$"):
                seq_view[i]


def test_a_stream_refuses_more_producers_than_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import reference.eventlog as eventlog

    monkeypatch.setattr(eventlog, "_PRODUCER_LIMIT", 2)  # 2^40 in production
    log = StreamLog("s", 1)
    log.append(replace(ev(1), producer="a" * 64))
    log.append(replace(ev(2), producer="b" * 64))
    log.append(replace(ev(3), producer="a" * 64))  # a known producer takes no new number
    with pytest.raises(LocalProtocolError, match=r"^too many producers in one stream$"):
        log.append(replace(ev(4), producer="c" * 64))


def test_the_rollback_of_a_retention_drop_revives_the_dropped_slot() -> None:
    rows = [replace(ev(s), payload=f'{{"n":{s}}}') for s in range(1, 6)]
    log = StreamLog.of("s", 1, rows)
    assert (log.pop_first(), log.pop_first()) == (rows[0], rows[1])
    chunk = log._data[0], log._cols[0]
    log.push_first(rows[1])  # the dead slot still holds it: nothing is copied or rewritten
    log.push_first(rows[0])
    assert (log._data[0], log._cols[0]) == chunk and log._data[0] is chunk[0] and log._cols[0] is chunk[1]
    assert list(log.events) == rows and log.floor == 1 and dict(log.by_key) == {f"k{s}": s for s in range(1, 6)}
    # another row of the same shape (key and payload lengths, integers, producer) put back in front
    # is that row, not the dropped one the slot still holds
    log.pop_first()
    other = replace(rows[0], idempotency_key="q1", payload='{"n":9}')
    log.push_first(other)
    assert list(log.events) == [other, *rows[1:]] and log.get(1) == other
    assert log.seq_of("q1") == 1 and log.seq_of("k1") is None


# --- second sample (24 per module): survivors of the first run -------------------------------------------


def test_rollback_puts_back_the_newest_event_a_transaction_deleted() -> None:
    # Db takes event deletes at either end; undoing one at the tail appends it again
    db = Db()
    for s in (1, 2, 3):
        db._insert(ev(s))
    tx = Txn(db)
    tx.delete(ev(3))
    assert [e.seq for e in db.logs["s"].events] == [1, 2]
    tx.rollback()
    assert list(db.logs["s"].events) == [ev(1), ev(2), ev(3)] and dict(db.logs["s"].by_key) == {
        "k1": 1, "k2": 2, "k3": 3}


def test_a_snapshot_past_the_log_head_is_refused_by_name(tmp_path: Path) -> None:
    from reference.durability import LogStore, check_binding
    from reference.snapshot import SnapshotError, capture

    store = LogStore.open(tmp_path)
    try:
        with pytest.raises(SnapshotError) as err:
            check_binding(store, capture(Db(), 3, "ab" * 32), "snap-000000000003.json")
        assert err.value.name == "snap-000000000003.json"
        assert str(err.value) == "snapshot snap-000000000003.json: its offset 3 is past the log head 0"
    finally:
        store.close()


def test_recovery_report_lines_say_what_recovery_used_instead() -> None:
    from reference.durability import RecoveryReport

    rejected = [("snap-000000000009.json", "checksum mismatch"), ("snap-000000000005.json", "truncated")]
    assert RecoveryReport(3, "snap-000000000003.json", 4, rejected).lines() == [
        "snapshot snap-000000000009.json not used (checksum mismatch); using snap-000000000003.json",
        "snapshot snap-000000000005.json not used (truncated); using snap-000000000003.json"]
    assert RecoveryReport(0, None, 12, rejected[:1]).lines() == [
        "snapshot snap-000000000009.json not used (checksum mismatch); replaying the whole log"]
    assert RecoveryReport(3, "snap-000000000003.json", 0, []).lines() == []


def _engine_call(eng: object, claims: Claims, reducer: str, *args: object) -> None:
    from reference.engine import Engine
    from spec.messages import CallReducer, ReducerOk, ReducerResult

    assert isinstance(eng, Engine)
    c = eng.connect(claims, confirmed=False)
    eng.handle(c, CallReducer(1, reducer, tuple(args)))
    eng.advance_durable(eng.committed)
    out = eng.pop(c).message
    assert isinstance(out, ReducerResult) and isinstance(out.outcome, ReducerOk), out
    eng.close(c)


def test_a_subscription_to_a_stream_outside_the_grant_is_forbidden() -> None:
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscribeApplied, SubscriptionError

    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "team.b", "k", "{}", None, None)
    reader = eng.connect(Claims(A, frozenset(SCOPES), ("team.a*",)), confirmed=False)
    for table in ("sync_event", "sync_stream"):
        eng.handle(reader, Subscribe(1, 1, (f"SELECT * FROM {table} WHERE stream_id = 'team.b'",)))
        out = eng.pop(reader).message
        assert isinstance(out, SubscriptionError), (table, out)
        assert SyncError.parse(out.error).code is ErrorCode.FORBIDDEN_STREAM, table
    assert not eng.conns[reader].query_sets
    eng.handle(reader, Subscribe(2, 2, ("SELECT * FROM sync_stream WHERE stream_id = 'team.a1'",)))
    assert isinstance(eng.pop(reader).message, SubscribeApplied)  # inside the grant


def test_the_last_unsubscribe_of_a_query_drops_its_shape_and_its_updates() -> None:
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscribeApplied, Unsubscribe, UnsubscribeApplied

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine()
    reader = eng.connect(everyone, confirmed=False)
    eng.handle(reader, Subscribe(1, 1, ("SELECT * FROM sync_stream WHERE stream_id = 's'",)))
    eng.handle(reader, Subscribe(2, 2, ("SELECT * FROM sync_stream WHERE stream_id = 's'",)))  # the same shape
    assert [type(eng.pop(reader).message) for _ in range(2)] == [SubscribeApplied, SubscribeApplied]
    eng.handle(reader, Unsubscribe(3, 1))
    assert isinstance(eng.pop(reader).message, UnsubscribeApplied)
    assert eng.shapes.get("sync_stream")  # set 2 still holds it
    eng.handle(reader, Unsubscribe(4, 2))
    assert isinstance(eng.pop(reader).message, UnsubscribeApplied)
    assert not eng.shapes.get("sync_stream")  # no subscriber left: the shape goes
    _engine_call(eng, everyone, "append_sync_event", "s", "k", "{}", None, None)
    assert not eng.conns[reader].outbound  # and the reader hears nothing of the new row


def test_assigning_without_a_provider_names_the_argument() -> None:
    db = Db()
    db._insert(ca("r1", 1))
    _fails(lambda: r.update_compute_assignment(Txn(db), _ctx(), "r1", 1, "assigned", None, None),
           ErrorCode.INVALID_ARGUMENT, {"argument": "provider_id", "message": "required to assign"})


def test_replay_describes_how_a_re_executed_delta_differs() -> None:
    from reference.engine import Engine
    from reference.replay import replay

    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", '{"a":1}', None, None)
    (rec,) = eng.take_records()
    forged = tuple(RowChange(c.table, c.deletes, tuple(replace(row, payload='{"a":2}') for row in c.inserts))
                   if c.table == "sync_event" else c for c in rec.changes)
    bad = make_record(rec.offset, rec.kind, rec.name, rec.caller, rec.args, rec.timestamp, forged, rec.prev_hash)
    out = replay([bad])
    assert out.mismatch is not None and out.mismatch.offset == 1
    reason = out.mismatch.reason
    prefix = "re-executed delta differs: table sync_event: recorded -[] +[SyncEvent("
    assert reason.startswith(prefix), reason
    recorded, _, replayed = reason.removeprefix("re-executed delta differs: table sync_event: ").partition(
        ", re-executed ")
    assert "payload='{\"a\":2}'" in recorded and replayed.startswith("-[] +[SyncEvent(")
    assert "payload='{\"a\":1}'" in replayed


def test_the_snapshotter_writes_the_head_it_is_given_on_its_own_named_daemon_thread(tmp_path: Path) -> None:
    import threading

    from reference.snapshot import Snapshotter, read

    seen: list[tuple[str, bool, int]] = []

    def wait_durable(offset: int) -> None:
        me = threading.current_thread()
        seen.append((me.name, me.daemon, offset))

    done: list[Path] = []
    s = Snapshotter(tmp_path, 2, 1, wait_durable, on_done=lambda path, _secs: done.append(path))
    db = Db()
    db._insert(ev(1))
    assert s.maybe(db, 1, "cd" * 32) is False  # one record: not due yet
    assert s.maybe(db, 2, "ab" * 32) is True
    s.join(10)
    assert seen == [("syncref-snapshot", True, 2)]
    image = read(done[0])
    assert (done[0].name, image.offset, image.head_hash) == ("snap-000000000002.json", 2, "ab" * 32)


def test_replay_says_why_a_record_does_not_reproduce(monkeypatch: pytest.MonkeyPatch) -> None:
    from reference.engine import Engine
    from reference.log import GENESIS
    from reference.replay import Mismatch, replay

    idle_sweep = make_record(1, "sweep", "sweep", None, (5,), 7, (), GENESIS)  # nothing to sweep
    assert replay([idle_sweep]).mismatch == Mismatch(
        1, "re-execution wrote nothing, but only writing transactions are logged")
    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", "{}", None, None)
    (rec,) = eng.take_records()
    assert replay([rec]).mismatch is None
    assert replay([replace(rec, hash="f" * 64)]).mismatch == Mismatch(
        1, f"hash differs: recorded {'f' * 64}, recomputed {rec.hash}")

    def broken(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(r.REDUCERS, "append_sync_event", broken)
    out = replay([rec])
    assert (out.records, out.mismatch) == (0, Mismatch(1, "re-execution raised RuntimeError: boom"))


def _chained(n: int) -> list[TxRecord]:
    from reference.log import GENESIS

    out: list[TxRecord] = []
    for offset in range(1, n + 1):
        out.append(make_record(offset, "sweep", "sweep", None, (offset,), offset, (), out[-1].hash if out else GENESIS))
    return out


def test_group_commit_writes_at_most_max_batch_records_per_commit(tmp_path: Path) -> None:
    from reference.durability import GroupCommitWriter, LogStore

    store = LogStore.open(tmp_path)
    commits: list[tuple[int, list[int]]] = []
    writer = GroupCommitWriter(store, lambda offset, batch: commits.append((offset, [r.offset for r in batch])),
                               background=False, max_batch=2)
    writer.append(_chained(5))
    assert writer.flush() == 5
    assert commits == [(2, [1, 2]), (4, [3, 4]), (5, [5])]
    assert (writer.batches, writer.written, store.last()[0]) == (3, 5, 5)
    writer.close()
    store.close()


def test_a_gathering_writer_commits_a_lone_record(tmp_path: Path) -> None:
    from reference.durability import GroupCommitWriter, LogStore

    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, gather_s=0.05)  # background thread, gathering on (ADR-0014)
    try:
        records = _chained(3)
        time.sleep(0.5)  # let the thread reach its idle wait: the first record then wakes an idle writer
        writer.append(records[:1])
        assert writer.wait_durable(1, timeout=30)
        writer.append(records[1:])
        assert writer.wait_durable(3, timeout=30) and writer.error is None
        assert writer.written == 3
    finally:
        writer.close()
        store.close()


def test_a_snapshot_cut_anywhere_in_its_trailer_line_is_truncated() -> None:
    from reference.snapshot import SnapshotError, capture, decode, encode

    db = Db()
    db._insert(ev(1))
    data = b"".join(encode(capture(db, 1, "ab" * 32)))
    trailer = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]
    assert trailer.startswith(b'{"sha256":') and decode(data).offset == 1
    # the trailer's own line end missing, or the trailer cut short: the file was not written out
    for end in (len(data) - 1, len(data) - 10, len(data) - len(trailer) + 3):
        with pytest.raises(SnapshotError) as err:
            decode(data[:end], "snap")
        assert err.value.reason == "truncated (no trailer line)", end
    with pytest.raises(SnapshotError) as err:  # one line only, however it ends
        decode(trailer, "snap")
    assert err.value.reason == "truncated (no trailer line)"


def test_an_engine_waiting_for_durability_refuses_admin_calls() -> None:
    from reference.engine import Engine

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine(max_undurable=1)
    assert eng.admin_call(everyone, "append_sync_event", ("s", "k1", "{}", None, None)) is None
    assert (eng.committed, eng.durable) == (1, 0)  # one commit not yet durable: at the bound
    refused = eng.admin_call(everyone, "append_sync_event", ("s", "k2", "{}", None, None))
    assert isinstance(refused, SyncError)
    assert (refused.code, dict(refused.details)) == (ErrorCode.INVALID_ARGUMENT,
                                                     {"message": "server is waiting for durability"})
    assert eng.committed == 1 and [e.idempotency_key for e in eng.db.logs["s"].events] == ["k1"]
    eng.advance_durable(1)
    assert eng.admin_call(everyone, "append_sync_event", ("s", "k2", "{}", None, None)) is None
    from reference.replay import replay

    records = eng.take_records()  # logged as reducer calls, which replay re-executes to the same chain
    assert [(rec.kind, rec.name) for rec in records] == [("reducer", "append_sync_event")] * 2
    assert replay(records).mismatch is None


def test_a_snapshot_image_missing_a_table_differs_from_a_log_with_rows_in_it() -> None:
    from reference.snapshot import Image, differs

    db = Db()
    db._insert(cp("c1", 4))
    image = Image(3, "ab" * 32, db.epoch_floor, db.version_floor, (), ())  # no tables, no streams
    assert differs(image, db) == (f"table sync_checkpoint: snapshot has 0 rows, log 1; only in snapshot [], "
                                  f"only in log {[repr(cp('c1', 4))]}")  # the first row's repr, in a list
    assert differs(Image(3, "ab" * 32, db.epoch_floor, db.version_floor, (("sync_checkpoint", (cp("c1", 4),)),),
                         ()), db) is None


def test_a_record_without_its_stored_texts_hashes_as_made() -> None:
    from reference.log import GENESIS, record_hash

    caller = Claims(A, frozenset({"sync.append"}), ("s*",), "dev", None, None, "oa.sync.v1", 3)
    made = make_record(1, "reducer", "append_sync_event", caller, ("s", "k", "{}", None, None), 42,
                       (RowChange("sync_event", (), (ev(1),)),), GENESIS)
    bare = TxRecord(made.offset, made.kind, made.name, made.caller, made.args, made.timestamp, made.changes,
                    made.prev_hash, made.hash)  # built in memory: no delta or argument text carried
    assert (bare.delta_json, bare.args_json) == ("", "")
    assert record_hash(bare) == record_hash(made) == made.hash
    for other in (replace(bare, name="upsert_presence"), replace(bare, timestamp=43),
                  replace(bare, prev_hash="1" * 64), replace(bare, args=("s", "k2", "{}", None, None))):
        assert record_hash(other) != made.hash


def _appends_with_images(n: int) -> tuple[list[TxRecord], dict[int, object]]:
    """``n`` appends to stream ``s`` on a fresh engine: their records, and a snapshot image taken
    after each (by committed offset) -- the material of the verify_log snapshot tests."""
    from reference import snapshot
    from reference.engine import Engine

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine()
    records: list[TxRecord] = []
    images: dict[int, object] = {}
    for i in range(1, n + 1):
        _engine_call(eng, everyone, "append_sync_event", "s", f"k{i}", "{}", None, None)
        records += eng.take_records()
        images[eng.committed] = snapshot.capture(eng.db, eng.committed, records[-1].hash)
    return records, images


def test_verify_log_checks_every_snapshot_file_in_offset_order(tmp_path: Path) -> None:
    import sqlite3

    from reference import snapshot
    from reference.durability import GroupCommitWriter, LogStore
    from reference.replay import SnapshotCheck, verify_log

    records, images = _appends_with_images(6)
    assert [rec.offset for rec in records] == [1, 2, 3, 4, 5, 6]
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    writer.append(records)
    writer.flush()
    writer.close()
    store.close()
    # the replay stops at record 6 (its stored hash tampered with): snap-6 is past what was replayed.
    # (A snapshot past the log's head is refused at the open instead, ADR-0037.)
    conn = sqlite3.connect(tmp_path / "syncref.sqlite3")
    conn.execute('UPDATE commit_log SET hash = ? WHERE "offset" = 6', ("0" * 64,))
    conn.commit()
    conn.close()
    directory = tmp_path / snapshot.SNAPSHOT_DIR
    snapshot.write(directory, images[2])  # good
    (directory / snapshot.file_name(3)).write_bytes(b"".join(snapshot.encode(images[2])))  # misnamed
    snapshot.write(directory, replace(images[4], head_hash="f" * 64))  # another chain's
    snapshot.write(directory, images[6])  # past what was replayed
    (directory / snapshot.file_name(1)).write_bytes(b"".join(snapshot.encode(images[1]))[:-1])  # cut short
    report = verify_log(tmp_path)
    assert report.mismatch is not None and report.mismatch.offset == 6 and not report.ok
    assert (report.records, report.stored_records) == (5, 6)
    assert report.snapshots == (
        SnapshotCheck("snap-000000000001.json", 1, "corrupt", "truncated (no trailer line)"),
        SnapshotCheck("snap-000000000002.json", 2, "match", ""),
        SnapshotCheck("snap-000000000003.json", 3, "corrupt", "the file name does not match its offset 2"),
        SnapshotCheck("snap-000000000004.json", 4, "mismatch",
                      f"chain head at 4 is {records[3].hash[:16]}..., the snapshot names {'f' * 16}..."),
        SnapshotCheck("snap-000000000006.json", 6, "unreached", "past the 5 records replayed"),
    )


def test_a_first_append_creates_the_stream_row_and_the_next_moves_its_head() -> None:
    from spec.policy import DEFAULT_POLICY as P

    db = Db()
    x = Ctx(Claims(A, frozenset(SCOPES), ("*",)), 5_000, 1, P)
    assert r.append_sync_event(Txn(db), x, "s", "k1", "{}", None, None) == 1
    budget = P.class_for("s").replay_budget
    # a fresh stream: epoch 1, no continuation, head and floor at the first seq
    assert db.get("sync_stream", ("s",)) == SyncStream("s", P.class_for("s").name, 1, 0, 0, 1, 1, budget,
                                                       5_000, 5_000, (), ())
    x2 = replace(x, now=6_000)
    assert r.append_sync_event(Txn(db), x2, "s", "k2", "{}", None, None) == 2
    assert db.get("sync_stream", ("s",)) == SyncStream("s", P.class_for("s").name, 1, 0, 0, 2, 1, budget,
                                                       5_000, 6_000, (), ())


def test_presence_rows_and_signals_carry_the_offline_reason() -> None:
    from spec.values import PresenceSignal, SessionPresence

    db = Db()
    ttl = DEFAULT_POLICY.presence_min_ttl_ms
    x = Ctx(Claims(A, frozenset(SCOPES), ("*",)), 1_000, 1, DEFAULT_POLICY)
    tx = Txn(db)
    r.upsert_presence(tx, x, "sess", "dev", "node", "online", "", ttl)
    assert db.get("session_presence", ("sess",)) == SessionPresence("sess", A, "dev", "node", "online", "", 1_000,
                                                                     1_000 + 1000 * ttl, None)
    assert [row for rows in tx.events.values() for row in rows] == [PresenceSignal("sess", A, "online", "", 1_000)]
    tx = Txn(db)
    r.upsert_presence(tx, x, "sess", "dev", "node", "offline", "", ttl)
    assert db.get("session_presence", ("sess",)) == SessionPresence("sess", A, "dev", "node", "offline", "", 1_000,
                                                                     1_000 + 1000 * ttl, "explicit_offline")
    assert [row for rows in tx.events.values() for row in rows] == [
        PresenceSignal("sess", A, "offline", "explicit_offline", 1_000)]


def test_replay_stops_at_an_undecodable_stored_record() -> None:
    from collections.abc import Iterator

    from reference.durability import LogCorruption
    from reference.engine import Engine
    from reference.replay import Mismatch, replay

    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", "{}", None, None)
    (rec,) = eng.take_records()

    def stored() -> Iterator[TxRecord]:  # what LogStore.iter_records does with a row it cannot decode
        yield rec
        raise LogCorruption(2, "delta is not JSON")

    out = replay(stored())
    assert (out.records, out.digest, out.mismatch) == (
        1, rec.hash, Mismatch(2, "commit log row at offset 2 is corrupt: delta is not JSON"))


# --- third sample (36 per module, docs/mutation.md "Third sample") ----------------------------------------


def test_row_json_writes_tuple_columns_as_json_lists() -> None:
    from reference.log import row_json

    out = row_json(_stream(earlier_epochs=(2, 1), earlier_seqs=(9, 4)))
    # the columns in declaration order; the two continuation-chain tuples become lists (JSON arrays)
    assert out == ["s", "default", 3, 2, 5, 9, 4, 20_000, 10, 20, [2, 1], [9, 4]]
    assert [type(v) for v in out[-2:]] == [list, list]


def test_a_primary_key_of_one_column_is_read_as_a_one_tuple() -> None:
    from reference.db import _key_getter

    row = ca("r1", 7)
    assert _key_getter(("request_id",))(row) == ("r1",)
    assert _key_getter(("request_id", "version"))(row) == ("r1", 7)


def test_event_count_sums_the_retained_events_of_every_stream() -> None:
    db = Db()
    assert db.event_count() == 0
    for e in (ev(1), ev(2), ev(3), ev(1, stream="t")):
        db._insert(e)
    assert db.event_count() == 4


def test_a_snapshotter_counts_the_snapshots_it_wrote(tmp_path: Path) -> None:
    from reference.snapshot import Snapshotter

    s = Snapshotter(tmp_path, 1, 3, lambda offset: None)
    assert s.written == 0
    db = Db()
    db._insert(ev(1))
    for offset in (1, 2):
        assert s.maybe(db, offset, "ab" * 32) is True
        s.join(10)
    assert s.written == 2 and len(list(tmp_path.glob("snap-*.json"))) == 2


def test_a_snapshot_table_the_log_does_not_have_differs() -> None:
    from reference.snapshot import Image, differs

    db = Db()
    image = Image(0, "ab" * 32, db.epoch_floor, db.version_floor, (("no_such_table", (cp("c1", 4),)),), ())
    assert differs(image, db) == (f"table no_such_table: snapshot has 1 rows, log 0; "
                                  f"only in snapshot {[repr(cp('c1', 4))]}, only in log []")


def test_replay_describes_a_table_the_record_left_out_as_nothing() -> None:
    from reference.engine import Engine
    from reference.replay import replay

    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", '{"a":1}', None, None)
    (rec,) = eng.take_records()
    forged = tuple(c for c in rec.changes if c.table != "sync_event")
    bad = make_record(rec.offset, rec.kind, rec.name, rec.caller, rec.args, rec.timestamp, forged, rec.prev_hash)
    out = replay([bad])
    assert out.mismatch is not None
    assert out.mismatch.reason.startswith(
        "re-executed delta differs: table sync_event: recorded nothing, re-executed -[] +[SyncEvent("), \
        out.mismatch.reason


def test_a_snapshot_whose_header_miscounts_its_rows_is_refused_with_both_counts() -> None:
    import json

    from reference.snapshot import Image, SnapshotError, decode, encode

    db = Db()
    image = Image(1, "ab" * 32, db.epoch_floor, db.version_floor, (("sync_checkpoint", (cp("c1", 4),)),), ())
    head, *rest = b"".join(encode(image)).splitlines(keepends=True)
    header = json.loads(head)
    assert header["rows"] == 1
    header["rows"] = 5  # the checksum is made over the edited body: only the count is wrong
    body = (json.dumps(header) + "\n").encode() + b"".join(rest[:-1])
    data = body + (json.dumps({"sha256": hashlib.sha256(body).hexdigest()}) + "\n").encode()
    with pytest.raises(SnapshotError) as err:
        decode(data, "snap-000000000001.json")
    assert "undecodable: ValueError: 1 rows, the header says 5" in str(err.value)


def test_a_snapshot_is_written_into_a_directory_made_with_its_parents(tmp_path: Path) -> None:
    from reference.snapshot import Image, read, write

    db = Db()
    image = Image(1, "ab" * 32, db.epoch_floor, db.version_floor, (), ())
    path = write(tmp_path / "not" / "yet" / "there", image)
    assert path == tmp_path / "not" / "yet" / "there" / "snap-000000000001.json"
    assert read(path).offset == 1


def test_a_one_off_read_of_every_table_is_refused_naming_the_sql() -> None:
    from reference.engine import Engine

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    _fails(lambda: Engine().query(everyone, "SELECT * FROM *"), ErrorCode.INVALID_QUERY,
           {"message": "a one-off query reads exactly one table", "sql": "SELECT * FROM *"})


def test_a_gathering_writer_with_a_batch_limit_commits_every_record_within_it(tmp_path: Path) -> None:
    from reference.durability import GroupCommitWriter, LogStore

    store = LogStore.open(tmp_path)
    commits: list[list[int]] = []
    writer = GroupCommitWriter(store, lambda offset, batch: commits.append([r.offset for r in batch]),
                               gather_s=0.05, max_batch=2)
    try:
        records = _chained(5)
        for n in range(5):  # one at a time, after an idle wait each: the writer gathers before each COMMIT
            time.sleep(0.2)
            writer.append(records[n:n + 1])
            assert writer.wait_durable(n + 1, timeout=10), (n, writer.error)
        assert writer.error is None and writer.written == 5 and store.last()[0] == 5
        assert [o for batch in commits for o in batch] == [1, 2, 3, 4, 5] and max(map(len, commits)) <= 2
    finally:
        writer.close()
        store.close()


def test_the_file_the_writer_made_matches_its_state_byte_for_byte(tmp_path: Path) -> None:
    from reference.snapshot import capture, matches, write

    db = Db()
    db._insert(cp("c1", 4))
    db._insert(ev(1))
    data = write(tmp_path, capture(db, 2, "ab" * 32)).read_bytes()
    assert matches(data, db, 2, "ab" * 32) is True
    assert matches(data, db, 3, "ab" * 32) is False and matches(data, db, 2, "cd" * 32) is False
    assert matches(data[:-1], db, 2, "ab" * 32) is False


def test_an_unreadable_snapshot_file_is_named_with_the_reason(tmp_path: Path) -> None:
    from reference.snapshot import SnapshotError, read_bytes

    with pytest.raises(SnapshotError) as err:
        read_bytes(tmp_path / "snap-000000000007.json")
    assert (err.value.name, err.value.reason) == ("snap-000000000007.json", "unreadable: No such file or directory")
    assert str(err.value) == "snapshot snap-000000000007.json: unreadable: No such file or directory"


def test_waking_a_writer_that_neither_sleeps_nor_gathers_changes_nothing(tmp_path: Path) -> None:
    from reference.durability import GroupCommitWriter, LogStore

    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)  # no thread: never asleep, never gathering
    try:
        writer.wake()
        assert writer.wakeups == 0  # nothing queued
        writer.append(_chained(2))
        writer.wake()
        writer.wake()
        assert writer.wakeups == 0  # queued, but no thread waits to be woken
        assert writer.flush() == 2 and writer.wakeups == 0
    finally:
        writer.close()
        store.close()


def test_marking_a_bridge_event_sent_names_a_malformed_nostr_id() -> None:
    db = Db()
    for bad in ("0" * 63, "0" * 65, "A" * 64, "g" + "0" * 63):
        _fails(lambda bad=bad: r.mark_bridge_event_sent(Txn(db), _ctx(), "o1", bad, ("wss://a",)),
               ErrorCode.INVALID_ARGUMENT, {"argument": "nostr_event_id", "message": "must be 64 lowercase hex"})


def test_a_call_that_misses_the_reducers_signature_is_answered_with_the_error_text() -> None:
    from reference.engine import Engine
    from spec.messages import CallReducer, ReducerErr, ReducerResult

    eng = Engine()
    c = eng.connect(Claims(A, frozenset(SCOPES), ("*",)), confirmed=False)
    for request_id, reducer, args, text in [
            (7, "no_such_reducer", (), 'no_such_reducer: {"reducer":"no_such_reducer"}'),
            (8, "append_sync_event", ("s",),
             'invalid_argument: {"argument":"*","message":"append_sync_event takes 5 arguments, got 1"}')]:
        eng.handle(c, CallReducer(request_id, reducer, args))
        assert eng.pop(c).message == ReducerResult(request_id, 0, ReducerErr(text, internal=False))
    assert eng.committed == 0  # nothing was written


def test_the_engines_model_view_carries_both_floors_and_every_table() -> None:
    from reference.engine import _model_view
    from spec.schema import PERSISTENT_TABLES

    db = Db()
    db._insert(cp("c1", 4))
    db.epoch_floor, db.version_floor = 5, 9  # two different values: neither can stand in for the other
    view = _model_view(db)
    assert (view.epoch_floor, view.version_floor) == (5, 9)
    assert set(view.tables) == {t.name for t in PERSISTENT_TABLES}
    assert view.tables["sync_checkpoint"] == (cp("c1", 4),)


def test_verify_log_reports_an_unreadable_snapshot_and_two_files_of_one_offset(tmp_path: Path) -> None:
    from reference import snapshot
    from reference.durability import GroupCommitWriter, LogStore
    from reference.replay import SnapshotCheck, verify_log

    records, images = _appends_with_images(3)
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    writer.append(records)
    writer.flush()
    writer.close()
    store.close()
    directory = tmp_path / snapshot.SNAPSHOT_DIR
    (directory / snapshot.file_name(1)).mkdir(parents=True)  # a directory where a file should be: unreadable
    good = b"".join(snapshot.encode(images[2]))
    (directory / snapshot.file_name(2)).write_bytes(good)
    (directory / "snap-2.json").write_bytes(good)  # the same offset under another name
    report = verify_log(tmp_path)
    assert report.mismatch is None and report.records == 3
    assert report.snapshots == (
        SnapshotCheck("snap-000000000001.json", 1, "corrupt", "unreadable: Is a directory"),
        SnapshotCheck("snap-000000000002.json", 2, "match", ""),
    )  # files of one offset are decoded in listing order (newest first, then by name, descending): the later
    #    one, snap-000000000002.json, stands for the offset


def test_replay_refuses_a_reducer_record_without_a_caller() -> None:
    from reference.engine import Engine
    from reference.replay import replay

    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", "{}", None, None)
    (rec,) = eng.take_records()
    orphan = make_record(rec.offset, rec.kind, rec.name, None, rec.args, rec.timestamp, rec.changes, rec.prev_hash)
    out = replay([orphan])
    assert out.records == 0 and out.mismatch is not None and out.mismatch.offset == 1
    assert "a reducer record without a caller" in out.mismatch.reason, out.mismatch.reason


def test_replay_refuses_system_records_with_malformed_arguments() -> None:
    from reference.log import GENESIS
    from reference.replay import Mismatch, replay

    for kind, args in [("compact", ("x",)), ("compact", (1, 2)), ("disconnect", (5,)),
                       ("disconnect", ("id", "not a tuple")), ("recovery", (3,))]:
        bad = make_record(1, kind, kind, None, args, 7, (), GENESIS)
        assert replay([bad]).mismatch == Mismatch(1, f"unknown or malformed {kind!r} record"), (kind, args)


def test_replay_compares_a_record_without_its_stored_text_row_by_row() -> None:
    from reference.engine import Engine
    from reference.replay import replay

    eng = Engine()
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", '{"a":1}', None, None)
    (rec,) = eng.take_records()
    bare = replace(rec, delta_json="")  # as built in memory: no stored delta text
    assert bare.delta_json == "" and bare == rec
    out = replay([bare])
    assert (out.records, out.mismatch) == (1, None)
    forged = tuple(RowChange(c.table, c.deletes, tuple(replace(row, payload='{"a":2}') for row in c.inserts))
                   if c.table == "sync_event" else c for c in rec.changes)
    out = replay([replace(bare, changes=forged)])
    assert out.mismatch is not None and out.mismatch.reason.startswith(
        "re-executed delta differs: table sync_event: recorded -[] +[SyncEvent("), out.mismatch.reason


def test_a_presence_region_that_is_not_an_id_is_named() -> None:
    db = Db()
    for bad in ("eu west", "x" * 129, "eu/west"):
        _fails(lambda bad=bad: r.upsert_presence(Txn(db), _ctx(), "sess1", "dev1", "node1", "online", bad, 30_000),
               ErrorCode.INVALID_ARGUMENT,
               {"argument": "region", "message": "must be empty or 1-128 characters of [A-Za-z0-9._:-]"})
    r.upsert_presence(Txn(db), _ctx(), "sess1", "dev1", "node1", "online", "", 30_000)  # empty: no region


def test_a_closed_writer_refuses_records_and_its_thread_is_a_named_daemon(tmp_path: Path) -> None:
    from reference.durability import DurabilityError, GroupCommitWriter, LogStore

    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)  # background: a thread that must not keep the process alive
    try:
        thread = writer._thread
        assert thread is not None and (thread.name, thread.daemon) == ("syncref-group-commit", True)
    finally:
        writer.close()
    with pytest.raises(DurabilityError) as err:
        writer.append(_chained(1))
    assert str(err.value) == "the commit-log writer is closed"
    store.close()


def test_a_stored_row_whose_arguments_are_not_an_array_is_refused_by_offset() -> None:
    from reference.durability import LogCorruption, record_from_row

    row = (4, "sweep", "sweep", "null", '{"a": 1}', 7, "[]", "0" * 64, "1" * 64)
    with pytest.raises(LogCorruption) as err:
        record_from_row(row)
    assert str(err.value) == "commit log row at offset 4 is corrupt: ValueError: args must be a JSON array"


# --- third sample, completed (main b7b4995; docs/mutation.md "Third sample") ----------------------------


def test_a_read_only_store_is_marked_so_refuses_a_writer_and_leaves_stray_snapshot_files(tmp_path: Path) -> None:
    from reference.durability import GroupCommitWriter, LogStore, RecoveryReport, newest_snapshot, snapshot_dir

    LogStore.open(tmp_path).close()  # a data directory with an empty log
    store = LogStore.open(tmp_path, readonly=True)
    try:
        assert store.readonly is True
        with pytest.raises(ValueError) as err:
            GroupCommitWriter(store, background=False)
        assert str(err.value) == "a read-only store cannot be written"
        # a verifier opens the directory read-only and must change nothing in it, not even the temp
        # file a crash left behind (a writable open removes that)
        stray = snapshot_dir(store) / "snap-000000000003.json.tmp"
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_text("cut short")
        report = RecoveryReport()
        assert newest_snapshot(store, report) is None
        assert stray.read_text() == "cut short" and report.rejected == []
    finally:
        store.close()
    writable = LogStore.open(tmp_path)
    try:
        assert writable.readonly is False
        assert newest_snapshot(writable, RecoveryReport()) is None
        assert not stray.exists()  # the writable open does clear it
    finally:
        writable.close()


def test_a_confirmed_readers_one_off_answer_waits_until_what_it_read_is_durable() -> None:
    from reference.engine import Engine
    from spec.messages import OneOffQueryResult

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine()
    confirmed = eng.connect(everyone, confirmed=True)
    unconfirmed = eng.connect(everyone, confirmed=False)
    assert eng.admin_call(everyone, "append_sync_event", ("s", "k1", "{}", None, None)) is None
    assert (eng.committed, eng.durable) == (1, 0)  # the append is read before it is durable
    for conn in (confirmed, unconfirmed):
        eng.one_off(conn, 7, "SELECT * FROM sync_stream WHERE stream_id = 's'")
    # the unconfirmed reader gets its answer at once, stamped with the offset it read
    [now] = eng.take(unconfirmed, 10, 1 << 20)
    assert now.offset == 1 and isinstance(now.message, OneOffQueryResult) and now.message.request_id == 7
    # the confirmed one only once offset 1 is durable (CONF-1)
    assert not eng.releasable(confirmed) and eng.take(confirmed, 10, 1 << 20) == []
    eng.advance_durable(1)
    assert eng.releasable(confirmed)
    [later] = eng.take(confirmed, 10, 1 << 20)
    assert later.offset == 1 and later.message == now.message


def test_a_stream_log_made_by_its_first_event_starts_at_that_events_seq() -> None:
    # a compacted stream's retained events, loaded into a fresh Db (a snapshot, a replay) start past seq 1
    # (written for Db._insert__mutmut_10, which it does not kill: the log's first append sets its floor,
    # so that mutant is equivalent; kept as the statement of the behaviour)
    db = Db()
    db._insert(ev(5))
    db._insert(ev(6))
    log = db.logs["s"]
    assert log.floor == 5 and len(log) == 2
    assert [log.get(seq) for seq in (1, 4, 5, 6, 7)] == [None, None, ev(5), ev(6), None]
    with pytest.raises(LocalProtocolError) as err:
        db._insert(ev(8))
    assert str(err.value) == "event s/8 is not the next seq"


# --- the sample extended to 48 per module (seed 1; the 36 are among the 48) ----------------------------------


def test_publishing_a_provider_another_identity_owns_is_forbidden_naming_it() -> None:
    db = Db()
    r.publish_provider_capability(Txn(db), _ctx(), "p1", '{"gpu":true}', (5001,), 10, "active")
    other = Ctx(Claims("b" * 64, frozenset(SCOPES), ("*",)), 2_000, 2, DEFAULT_POLICY)
    _fails(lambda: r.publish_provider_capability(Txn(db), other, "p1", "{}", (5002,), 1, "active"),
           ErrorCode.FORBIDDEN, {"provider_id": "p1"})
    row = db.get("provider_capability", ("p1",))
    assert isinstance(row, ProviderCapability) and (row.owner, row.nip90_kinds) == (A, (5001,))  # unchanged


def test_each_stale_resume_is_counted_once_per_reason() -> None:
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscriptionError

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine()
    _engine_call(eng, everyone, "append_sync_event", "s", "k1", "{}", None, None)
    epoch = eng.db.get("sync_stream", ("s",)).epoch  # type: ignore[union-attr]
    reader = eng.connect(everyone, confirmed=False)
    stale = [f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {epoch + 1} AND seq > 0",  # epoch_changed
             f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = {epoch} AND seq > 5"]  # ahead of head 1
    for i, text in enumerate(stale, 1):
        eng.handle(reader, Subscribe(i, i, (text,)))
        assert isinstance(eng.pop(reader).message, SubscriptionError)
    assert eng.stale_reasons == {"epoch_changed": 1, "cursor_ahead_of_head": 1}
    eng.handle(reader, Subscribe(3, 3, (stale[0],)))
    eng.pop(reader)
    assert eng.stale_reasons == {"epoch_changed": 2, "cursor_ahead_of_head": 1}


def test_delta_of_lists_tables_with_only_deletes_or_only_inserts_in_schema_order() -> None:
    from reference.replay import delta_of

    db = Db()
    db._insert(ca("r1", 1))
    tx = Txn(db)
    tx.delete(ca("r1", 1))  # compute_assignment: a delete only
    tx.insert(cp("c2", 2))  # sync_checkpoint: an insert only
    # the schema's table order (sync_stream, sync_event, sync_checkpoint, ..., compute_assignment, ...),
    # not the order the transaction wrote them
    assert delta_of(tx) == (RowChange("sync_checkpoint", (), (cp("c2", 2),)),
                            RowChange("compute_assignment", (ca("r1", 1),), ()))


def test_a_diverging_replay_reports_the_head_of_the_records_it_matched() -> None:
    from reference.engine import Engine
    from reference.replay import Mismatch, replay

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine()
    for key in ("k1", "k2"):
        _engine_call(eng, everyone, "append_sync_event", "s", key, "{}", None, None)
    first, second = eng.take_records()
    out = replay([first, replace(second, hash="e" * 64)])
    assert (out.records, out.digest) == (1, first.hash)  # the chain up to the last record that reproduced
    assert out.mismatch == Mismatch(2, f"hash differs: recorded {'e' * 64}, recomputed {second.hash}")


def test_verify_log_names_a_corrupt_snapshot_past_the_log(tmp_path: Path) -> None:
    """A corrupt snapshot past what was replayed is named corrupt, not unreached.  A snapshot past the
    log's *head* is refused at the open (ADR-0037), so the replay here stops early instead: record 1's
    stored hash is tampered with, and the snapshot is at record 2, which the log holds."""
    import sqlite3

    from reference import snapshot
    from reference.durability import GroupCommitWriter, LogStore
    from reference.engine import Engine
    from reference.replay import SnapshotCheck, verify_log

    eng = Engine()
    for key in ("k1", "k2"):
        _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", key, "{}", None, None)
    recs = eng.take_records()
    assert [r.offset for r in recs] == [1, 2]
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    writer.append(recs)
    writer.flush()
    writer.close()
    store.close()
    conn = sqlite3.connect(tmp_path / "syncref.sqlite3")
    conn.execute("UPDATE commit_log SET hash = ? WHERE \"offset\" = 1", ("0" * 64,))
    conn.commit()
    conn.close()
    image = snapshot.capture(eng.db, 2, recs[-1].hash)
    directory = tmp_path / snapshot.SNAPSHOT_DIR
    directory.mkdir(parents=True)
    (directory / snapshot.file_name(2)).write_bytes(b"".join(snapshot.encode(image))[:-1])  # cut short
    report = verify_log(tmp_path)
    assert report.mismatch is not None and report.records < 2 and not report.ok
    # past the records replayed, but corrupt is what it is: named, with the reason
    assert report.snapshots == (SnapshotCheck("snap-000000000002.json", 2, "corrupt", "truncated (no trailer line)"),)


# --- fifth session: the survivors of a 48-mutant draw of today's engine.py, engine-only selection ---------


def _resume(sid: str, w: int) -> str:
    return f"SELECT * FROM sync_event WHERE stream_id = '{sid}' AND epoch = 1 AND seq > {w}"


def test_a_read_without_the_subscribe_scope_names_the_missing_scope() -> None:
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscriptionError

    eng = Engine()
    claims = Claims(A, frozenset(SCOPES) - {"sync.subscribe"}, ("*",))
    _fails(lambda: eng.query(claims, "SELECT * FROM sync_stream WHERE stream_id = 's'"),
           ErrorCode.MISSING_SCOPE, {"scope": "sync.subscribe"})
    conn = eng.connect(claims, confirmed=False)
    eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM sync_stream WHERE stream_id = 's'",)))
    out = eng.pop(conn).message
    assert isinstance(out, SubscriptionError)
    err = SyncError.parse(out.error)
    assert (err.code, dict(err.details)) == (ErrorCode.MISSING_SCOPE, {"scope": "sync.subscribe"})


def test_the_replay_budget_of_a_resume_is_its_streams_class() -> None:
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscribeApplied, SubscriptionError

    small = StreamClass("small", replay_budget=2)
    eng = Engine(policy=Policy(classes=(("small.", small),)))
    everyone = Claims(A, frozenset(SCOPES), ("*",))
    for sid in ("small.x", "big"):
        for i in range(5):
            _engine_call(eng, everyone, "append_sync_event", sid, f"k{i}", "{}", None, None)
    reader = eng.connect(everyone, confirmed=False)
    eng.handle(reader, Subscribe(1, 1, (_resume("small.x", 2),)))  # head 5 - W 2 = 3 > the class's 2
    out = eng.pop(reader).message
    assert isinstance(out, SubscriptionError), out
    err = SyncError.parse(out.error)
    assert err.code is ErrorCode.STALE_CURSOR
    assert (err.details["replay_budget"], err.details["reasons"]) == (2, ["replay_budget_exceeded"])
    eng.handle(reader, Subscribe(2, 2, (_resume("small.x", 3),)))  # 2 behind: inside the class's budget
    assert isinstance(eng.pop(reader).message, SubscribeApplied)
    eng.handle(reader, Subscribe(3, 3, (_resume("big", 0),)))  # the default class: budget 20,000
    assert isinstance(eng.pop(reader).message, SubscribeApplied)


def test_each_fanout_that_returns_early_counts_one_skip() -> None:
    from reference.engine import Engine

    eng = Engine()
    everyone = Claims(A, frozenset(SCOPES), ("*",))
    assert eng.fanout_skips == 0
    for i in range(3):
        _engine_call(eng, everyone, "append_sync_event", "s", f"k{i}", "{}", None, None)
        assert eng.fanout_skips == i + 1  # nobody watches: every commit skips the fanout


def test_a_reducer_that_crashes_is_answered_as_internal_to_the_callers_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from reference.engine import Engine, InternalError
    from spec.messages import CallReducer, ReducerErr, ReducerResult

    def crash(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(r.REDUCERS, "append_sync_event", crash)
    eng = Engine()
    reported: list[InternalError] = []
    eng.on_internal_error = reported.append
    everyone = Claims(A, frozenset(SCOPES), ("*",))
    conn = eng.connect(everyone, confirmed=False)
    eng.handle(conn, CallReducer(7, "append_sync_event", ("s", "k", "{}", None, None)))
    out = eng.pop(conn).message
    assert isinstance(out, ReducerResult) and out.request_id == 7, out
    assert isinstance(out.outcome, ReducerErr) and out.outcome.internal
    assert out.outcome.error.startswith("internal error in append_sync_event: RuntimeError: boom")
    assert [e.name for e in reported] == ["append_sync_event"] and eng.committed == 0
    with pytest.raises(InternalError) as raised:  # the admin path raises it, naming the reducer
        eng.admin_call(everyone, "append_sync_event", ("s", "k", "{}", None, None))
    assert raised.value.name == "append_sync_event" and isinstance(raised.value.cause, RuntimeError)
    assert eng.committed == 0


def test_a_queue_of_exactly_max_outbound_bytes_is_kept_one_byte_more_is_a_slow_consumer() -> None:
    from reference.engine import Engine
    from spec.messages import SLOW_CONSUMER_REASON

    eng = Engine()
    eng.measure = lambda _m: 100
    eng.max_outbound_bytes = 200
    closed: list[tuple[int, str]] = []
    eng.on_close = lambda c, reason: closed.append((c, reason))
    conn = eng.connect(Claims(A, frozenset(SCOPES), ("*",)), confirmed=False)
    for request_id in (1, 2):  # 100, then 200 bytes queued: at the bound, not past it
        eng.one_off(conn, request_id, "SELECT * FROM sync_stream WHERE stream_id = 's'")
    assert conn in eng.conns and not closed and eng.conns[conn].outbound_bytes == 200
    eng.one_off(conn, 3, "SELECT * FROM sync_stream WHERE stream_id = 's'")  # 300 > 200
    assert conn not in eng.conns and closed == [(conn, SLOW_CONSUMER_REASON)]


def test_a_one_off_read_says_whether_its_table_is_an_event_table() -> None:
    from reference.engine import Engine

    eng = Engine()
    everyone = Claims(A, frozenset(SCOPES), ("*",))
    _engine_call(eng, everyone, "append_sync_event", "s", "k", "{}", None, None)
    signals = eng.query(everyone, "SELECT * FROM presence_signal")  # an event table: rows are never kept
    events = eng.query(everyone, "SELECT * FROM sync_event WHERE stream_id = 's'")
    assert (signals.table, signals.inserts, signals.event) == ("presence_signal", (), True)
    assert (events.table, len(events.inserts), events.event) == ("sync_event", 1, False)


# --- fifth session, after the small-gap replay merge (ADR-0024): today's draws of engine.py and eventlog.py ---


def test_two_readers_of_one_query_set_id_on_different_tables_each_get_their_own_rows() -> None:
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscribeApplied, TransactionUpdate

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine()
    events = eng.connect(everyone, confirmed=False)
    streams = eng.connect(everyone, confirmed=False)
    for conn, table in ((events, "sync_event"), (streams, "sync_stream")):  # both query set 1
        eng.handle(conn, Subscribe(1, 1, (f"SELECT * FROM {table} WHERE stream_id = 's'",)))
        assert isinstance(eng.pop(conn).message, SubscribeApplied)
    _engine_call(eng, everyone, "append_sync_event", "s", "k", "{}", None, None)  # an event and its stream row
    for conn, table in ((events, "sync_event"), (streams, "sync_stream")):
        update = eng.pop(conn).message
        assert isinstance(update, TransactionUpdate), update
        assert [(qs.query_set_id, [t.table for t in qs.tables]) for qs in update.query_sets] == [(1, [table])]


def test_a_query_set_of_two_resume_queries_and_a_stream_query_snapshots_both_streams() -> None:
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscribeApplied

    everyone = Claims(A, frozenset(SCOPES), ("*",))
    eng = Engine()
    for sid in ("a", "b"):
        for i in range(2):
            _engine_call(eng, everyone, "append_sync_event", sid, f"k{i}", "{}", None, None)
    reader = eng.connect(everyone, confirmed=False)
    eng.handle(reader, Subscribe(1, 1, (_resume("a", 0), _resume("b", 1),
                                        "SELECT * FROM sync_stream WHERE stream_id = 'a'")))
    out = eng.pop(reader).message
    assert isinstance(out, SubscribeApplied), out
    tables = {t.table: t.inserts for t in out.rows}
    assert sorted((e.stream_id, e.seq) for e in tables["sync_event"]) == [("a", 1), ("a", 2), ("b", 2)]
    assert [r.stream_id for r in tables["sync_stream"]] == ["a"]


def test_a_wrongly_typed_argument_is_named_in_the_error() -> None:
    from reference.engine import Engine
    from spec.messages import CallReducer, ReducerErr, ReducerResult

    eng = Engine()
    conn = eng.connect(Claims(A, frozenset(SCOPES), ("*",)), confirmed=False)
    eng.handle(conn, CallReducer(3, "append_sync_event", ("s", 7, "{}", None, None)))
    out = eng.pop(conn).message
    assert isinstance(out, ReducerResult) and out.request_id == 3 and isinstance(out.outcome, ReducerErr)
    err = SyncError.parse(out.outcome.error)
    assert (err.code, dict(err.details)) == (ErrorCode.INVALID_ARGUMENT,
                                             {"argument": "idempotency_key", "message": "wrong type"})


def test_a_compaction_is_recorded_as_compact() -> None:
    from reference.engine import Engine

    eng = Engine(policy=Policy(classes=(("s", StreamClass("short", retain_count=1)),)))
    everyone = Claims(A, frozenset(SCOPES), ("*",))
    for i in range(3):
        _engine_call(eng, everyone, "append_sync_event", "s", f"k{i}", "{}", None, None)
    eng.take_records()
    assert eng.compact(10**9)
    (record,) = eng.take_records()
    assert (record.kind, record.name, record.caller) == ("compact", "compact", None)


def test_reject_answers_the_request_with_the_error_in_order() -> None:
    from reference.engine import Engine
    from spec.messages import ReducerErr, ReducerResult

    eng = Engine()
    conn = eng.connect(Claims(A, frozenset(SCOPES), ("*",)), confirmed=False)
    error = SyncError(ErrorCode.LIMIT_EXCEEDED, {"limit": "max_call_body_bytes", "max": 1, "actual": 2})
    eng.reject(conn, 9, error)
    eng.reject(conn + 100, 10, error)  # a connection that is gone: nothing, no error
    out = eng.pop(conn).message
    assert out == ReducerResult(9, eng.committed, ReducerErr(error.render()))
    assert not eng.conns[conn].outbound


def test_a_log_of_no_events_keeps_the_floor_it_was_given() -> None:
    log = StreamLog.of("s", 5, [])
    assert (log.floor, len(log)) == (5, 0)
    assert StreamLog.of("s", 5, [ev(5), ev(6)]).floor == 5


def test_an_event_put_back_in_front_with_another_epoch_starts_its_own_run() -> None:
    log = StreamLog.of("s", 1, [ev(1), ev(2), ev(3)])
    log.pop_first()  # floor 2; the epoch-1 run still starts at 1
    log.push_first(ev(1, epoch=2))
    assert [(e.seq, e.epoch) for e in log.events] == [(1, 2), (2, 1), (3, 1)]
    assert [(e.seq, e.epoch) for e in log.retained_rows(0, 1)] == [(2, 1), (3, 1)]


def test_a_dropped_event_from_before_1970_is_put_back_in_its_old_slot() -> None:
    from dataclasses import replace as with_

    first = with_(ev(1), committed_at=-5_000_000)  # a timestamp is an i64: before the epoch is a value too
    log = StreamLog.of("s", 1, [first, ev(2)])
    assert log.pop_first() == first
    log.push_first(first)  # the rollback of the drop: the dead slot still holds it and is revived
    assert log.get(1) == first and log.floor == 1 and len(log) == 2


# --- sixth session's draw (seed 6), finished in the seventh: durability.py and log.py ---------------------------


@pytest.mark.parametrize(("edit", "error"), [
    ("UPDATE meta SET value = '1' WHERE key = 'format'", "has log format 1, this build reads 2"),
    ("DELETE FROM meta WHERE key = 'format'", "has a commit log but no format marker"),
])
def test_a_log_of_another_format_is_refused_and_the_directory_left_as_it_was(tmp_path: Path, edit: str,
                                                                             error: str) -> None:
    """An open that fails inside its first transaction rolls it back and raises the error naming the format
    (not another one from its clean-up); the stored log is as it was, and opens once put right.  (A clean-up
    that forgets to close the lock file is not caught here: CPython closes it when the frame goes.)"""
    import sqlite3

    from reference.durability import DB_FILE, GroupCommitWriter, LogStore

    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    writer.append(_chained(2))
    writer.close()
    store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    with conn:
        conn.execute(edit)
    before = conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    with pytest.raises(RuntimeError, match=error):
        LogStore.open(tmp_path)
    assert conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall() == before
    assert conn.execute("SELECT count(*) FROM commit_log").fetchone() == (2,)
    with conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('format', '2')")
    conn.close()
    store = LogStore.open(tmp_path)
    assert store.last()[0] == 2
    store.close()


def test_readers_with_other_grants_that_see_the_same_rows_share_one_update_object() -> None:
    """Two readers whose claims filter events apart (stream grants ``*`` and ``s``: two filter keys, so
    two groups) but who both see every row, under the same query set id, are sent *one* TransactionUpdate
    object (the fanout's sharing, ADR-0014: the I/O layer encodes it once, by identity)."""
    from reference.engine import Engine
    from spec.messages import Subscribe, SubscribeApplied, TransactionUpdate

    eng = Engine()
    readers = [eng.connect(Claims(A, frozenset(SCOPES), grant), confirmed=False) for grant in (("*",), ("s",))]
    for conn in readers:
        eng.handle(conn, Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 's'",)))
        assert isinstance(eng.pop(conn).message, SubscribeApplied)
    _engine_call(eng, Claims(A, frozenset(SCOPES), ("*",)), "append_sync_event", "s", "k", "{}", None, None)
    first, second = (eng.pop(conn).message for conn in readers)
    assert isinstance(first, TransactionUpdate) and [e.seq for e in first.query_sets[0].tables[0].inserts] == [1]
    assert second is first
