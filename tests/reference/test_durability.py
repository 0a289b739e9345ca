"""The data directory: round trips through SQLite, the clean-shutdown marker, corruption and
tampering caught at the right offset, the policy pinned in the directory, the group-commit
writer's batching and contiguity checks (DESIGN §5, ADR-0001 decision 9)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from reference.durability import (
    DB_FILE,
    DurabilityError,
    GroupCommitWriter,
    LogCorruption,
    LogStore,
    restart,
    shutdown,
    storage_fault,
    sync,
    writer_failure_line,
)
from reference.engine import Engine
from reference.log import TxRecord
from reference.replay import replay, verify_log
from spec.auth import Claims
from spec.messages import CallReducer, ReducerOk, ReducerResult
from spec.policy import DEFAULT_POLICY, Policy, StreamClass
from spec.schema import SCOPES
from spec.values import ComputeAssignment, SyncEvent, SyncStream

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
POLICY = Policy(classes=(("s.", StreamClass("short", retain_count=2)),))


def call(eng: Engine, conn: int, reducer: str, *args: Any) -> None:
    eng.handle(conn, CallReducer(1, reducer, tuple(args)))
    out = eng.pop(conn).message
    assert isinstance(out, ReducerResult) and isinstance(out.outcome, ReducerOk), (reducer, out)


def drive(eng: Engine, tag: str = "") -> None:
    """Every kind of logged transaction: each reducer, sweep, compact, disconnect."""
    eng.now += 1_000_000
    c = eng.connect(ALL, confirmed=False)
    call(eng, c, "append_sync_event", f"s.one{tag}", "k1", '{"a": 1}', None, None)
    call(eng, c, "append_sync_event", f"s.one{tag}", "k2", '{"a": "\u00e9"}', None, 2)
    call(eng, c, "append_sync_event", f"s.one{tag}", "k3", "[1, 2, 3]", None, None)
    call(eng, c, "append_sync_event", f"x.two{tag}", "k1", '{"b": [1, 2]}', None, None)
    call(eng, c, "ack_checkpoint", f"c1{tag}", f"s.one{tag}", eng.db.epoch_floor, 2)
    call(eng, c, "upsert_presence", f"sess1{tag}", "dev1", "node1", "online", "eu", 1000)
    call(eng, c, "publish_provider_capability", f"p1{tag}", '{"gpu": true}', (5001, 5000), 10, "active")
    call(eng, c, "open_compute_assignment", f"r1{tag}", 5001, '{"x": 1}')
    opened = eng.db.get("compute_assignment", (f"r1{tag}",))
    assert isinstance(opened, ComputeAssignment) and opened.version == eng.db.version_floor  # ADR-0003 decision 5
    call(eng, c, "update_compute_assignment", f"r1{tag}", opened.version, "assigned", f"p1{tag}", None)
    call(eng, c, "enqueue_bridge_event", f"o1{tag}", "src", 30078, '[["t", "x"]]', "hello")
    call(eng, c, "mark_bridge_event_sent", f"o1{tag}", "ab" * 32, ("wss://r2", "wss://r1"))
    call(eng, c, "enqueue_bridge_event", f"o2{tag}", "src", 31990, "[]", "x")
    call(eng, c, "record_bridge_failure", f"o2{tag}", "timeout", 1000)
    call(eng, c, "publish_stream_signal", f"s.one{tag}", "typing", "{}")
    call(eng, c, "reset_stream_epoch", f"x.two{tag}")
    call(eng, c, "upsert_presence", f"sess2{tag}", "dev1", "node1", "online", "", 1000)
    eng.close(c)  # sess1 and sess2 go offline: a "disconnect" transaction
    c = eng.connect(ALL, confirmed=False)
    call(eng, c, "upsert_presence", f"sess3{tag}", "dev1", "node1", "online", "", 1000)
    assert eng.sweep(eng.now + 2_000_000)  # sess3 expires
    assert eng.compact(eng.now)  # s.one keeps 2 events
    eng.close(c)


def kinds(records: list[TxRecord]) -> set[str]:
    return {rec.kind for rec in records}


def tables(eng: Engine) -> tuple[Any, ...]:
    return ({t: dict(rows) for t, rows in eng.db.pk.items()},
            {sid: (log.floor, list(log.events), dict(log.by_key)) for sid, log in eng.db.logs.items()},
            eng.db.epoch_floor, eng.committed, eng.head_hash)


def write_all(path: Path, records: list[TxRecord], *, clean: bool, policy: Policy | None = POLICY) -> None:
    from support.logfiles import write_records  # here: crash workers import this module without tests/ on the path

    write_records(path, records, clean=clean, policy=policy)


def built(path: Path) -> tuple[Engine, list[TxRecord]]:
    """An engine driven through every kind of transaction, an unclean recovery included."""
    eng = Engine(POLICY)
    drive(eng)
    first = eng.take_records()
    eng = Engine.recover(first, clean=False, now=eng.now, policy=POLICY)  # a "recovery" record
    drive(eng, "b")
    records = first + eng.take_records()
    assert kinds(records) == {"reducer", "sweep", "compact", "disconnect", "recovery"}
    return eng, records


def test_round_trip_restores_tables_and_head(tmp_path: Path) -> None:
    eng, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    store = LogStore.open(tmp_path)
    loaded, clean = store.load()
    store.close()
    assert clean
    assert loaded == records  # args, claims, rows: value-equal after SQLite and JSON
    again = Engine.recover(loaded, clean=True, now=eng.now, policy=POLICY)
    assert tables(again) == tables(eng)
    assert again.take_records() == []  # a clean restart commits nothing


def test_restart_after_unclean_stop_bumps_and_persists_recovery(tmp_path: Path) -> None:
    eng, records = built(tmp_path)
    write_all(tmp_path, records, clean=False)
    before = max([eng.db.epoch_floor, *(s.epoch for s in eng.db.pk["sync_stream"].values()
                                        if isinstance(s, SyncStream))])
    store = LogStore.open(tmp_path)
    assert not store.clean_at_open
    writer = GroupCommitWriter(store)
    eng2 = restart(store, writer, now=eng.now + 1, max_undurable=16)
    assert eng2.committed == len(records) + 1 and eng2.durable == eng2.committed  # recovery is durable
    epochs = [s.epoch for s in eng2.db.pk["sync_stream"].values() if isinstance(s, SyncStream)]
    assert min(epochs) == eng2.db.epoch_floor == before + 16 + 1
    writer.close()
    store.close()
    store = LogStore.open(tmp_path, readonly=True)
    assert store.last() == (eng2.committed, eng2.head_hash)
    store.close()


def test_clean_marker_set_on_clean_close_cleared_on_open(tmp_path: Path) -> None:
    store = LogStore.open(tmp_path)
    assert store.clean_at_open  # a new directory: nothing can have been lost
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=1, policy=POLICY)
    assert eng.committed == 0
    drive(eng)
    shutdown(eng, writer, store)
    ro = LogStore.open(tmp_path, readonly=True)
    assert ro.clean_at_open
    ro.close()
    assert LogStore.open(tmp_path, readonly=True).clean_at_open  # read-only opens leave it alone

    store = LogStore.open(tmp_path)  # clears the marker durably...
    assert store.clean_at_open
    store.close()  # ...and an unclean close does not set it again
    store = LogStore.open(tmp_path)
    assert not store.clean_at_open
    writer = GroupCommitWriter(store)
    committed = eng.committed
    eng = restart(store, writer, now=eng.now + 1)
    assert eng.committed == committed + 1  # the recovery transaction
    shutdown(eng, writer, store)

    store = LogStore.open(tmp_path)
    assert store.clean_at_open
    writer = GroupCommitWriter(store)
    again = restart(store, writer, now=eng.now + 1)
    assert again.committed == eng.committed and again.head_hash == eng.head_hash  # no bump after a clean stop
    again.admin_call(ALL, "append_sync_event", ("s.z", "k", "{}", None, None))
    with pytest.raises(RuntimeError, match="committed offset"):
        store.close_clean(again.committed)  # not yet in the log: the marker would lie
    writer.close()
    store.close()


def test_empty_but_used_directory_is_unclean(tmp_path: Path) -> None:
    LogStore.open(tmp_path).close()  # created, then "crashed" before writing anything
    store = LogStore.open(tmp_path)
    assert not store.clean_at_open
    store.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    store = LogStore.open(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        LogStore.open(tmp_path)
    store.close()
    LogStore.open(tmp_path).close()


def _tamper(path: Path, sql: str, *params: Any) -> None:
    conn = sqlite3.connect(path / DB_FILE)
    with conn:
        assert conn.execute(sql, params).rowcount == 1
    conn.close()


def test_corrupted_row_is_named_by_offset(tmp_path: Path) -> None:
    _, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    target = next(rec for rec in records if rec.name == "append_sync_event" and rec.offset > 3)
    conn = sqlite3.connect(tmp_path / DB_FILE)
    (text,) = conn.execute('SELECT changes_json FROM commit_log WHERE "offset" = ?', (target.offset,)).fetchone()
    conn.close()
    changes = json.loads(text)
    changes[-1][2][0][-2] += 1  # the inserted event's committed_at: still well-formed
    _tamper(tmp_path, 'UPDATE commit_log SET changes_json = ? WHERE "offset" = ?', json.dumps(changes), target.offset)
    loaded, _ = LogStore.open(tmp_path, readonly=True).load()
    with pytest.raises(ValueError, match=f"offset {target.offset}$"):
        Engine.recover(loaded, clean=True, now=0, policy=POLICY)

    _tamper(tmp_path, 'UPDATE commit_log SET changes_json = ? WHERE "offset" = ?', "[[", target.offset)
    with pytest.raises(LogCorruption, match=f"offset {target.offset} ") as info:
        LogStore.open(tmp_path, readonly=True).load()
    assert info.value.offset == target.offset and isinstance(info.value, ValueError)


def test_missing_row_breaks_the_chain(tmp_path: Path) -> None:
    _, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    _tamper(tmp_path, 'DELETE FROM commit_log WHERE "offset" = 5')
    loaded, _ = LogStore.open(tmp_path, readonly=True).load()
    with pytest.raises(ValueError, match="offset 6"):
        Engine.recover(loaded, clean=True, now=0, policy=POLICY)
    report = verify_log(tmp_path)
    assert not report.ok and report.mismatch is not None and report.mismatch.offset == 6


def _cli(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.cli", "verify-log", "--data", str(path), *extra],
                          capture_output=True, text=True, check=False, timeout=120)


def test_verify_log_replays_everything(tmp_path: Path) -> None:
    eng, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    report = verify_log(tmp_path)
    assert report.ok, report.mismatch
    assert (report.records, report.digest, report.policy) == (len(records), eng.head_hash, "stored")
    done = _cli(tmp_path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] and out["digest"] == eng.head_hash and out["records"] == len(records)
    assert "verify-log: OK" in _cli(tmp_path).stdout
    assert LogStore.open(tmp_path, readonly=True).clean_at_open  # verify-log left the marker alone


def test_verify_log_needs_the_policy_the_log_ran_under(tmp_path: Path) -> None:
    _, records = built(tmp_path)
    result = replay(records, DEFAULT_POLICY)  # the first stream's row names its class: "short", not "default"
    assert result.mismatch is not None and result.mismatch.offset == 1 and "sync_stream" in result.mismatch.reason
    assert replay(records, POLICY).mismatch is None
    longer = Policy(classes=(("s.", StreamClass("short", retain_count=3)),))  # same class, other retention
    result = replay(records, longer)
    compact_at = next(rec.offset for rec in records if rec.kind == "compact")
    assert result.mismatch is not None and result.mismatch.offset == compact_at
    write_all(tmp_path, records, clean=True, policy=None)  # no stored policy: verify-log uses the default
    report = verify_log(tmp_path)
    assert report.policy == "default" and report.mismatch is not None and report.mismatch.offset == 1


def test_verify_log_detects_tampered_args(tmp_path: Path) -> None:
    _, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    target = next(rec for rec in records if rec.name == "append_sync_event" and rec.offset > 1)
    args = list(target.args)
    args[2] = '{"a": 999}'  # a different payload: the re-executed event differs
    _tamper(tmp_path, 'UPDATE commit_log SET args_json = ? WHERE "offset" = ?', json.dumps(args), target.offset)
    report = verify_log(tmp_path)
    assert not report.ok and report.mismatch is not None
    assert report.mismatch.offset == target.offset and "delta differs" in report.mismatch.reason
    assert report.records == target.offset - 1
    done = _cli(tmp_path)
    assert done.returncode == 1 and f"MISMATCH at offset {target.offset}" in done.stdout


def test_verify_log_detects_args_that_change_only_the_hash(tmp_path: Path) -> None:
    _, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    target = next(rec for rec in records if rec.name == "append_sync_event" and rec.args[4] is None
                  and rec.offset > 1)
    seq = next(r.seq for c in target.changes for r in c.inserts if isinstance(r, SyncEvent))
    args = [*target.args[:4], seq]  # the right expected_next_seq: the same delta, a different call
    _tamper(tmp_path, 'UPDATE commit_log SET args_json = ? WHERE "offset" = ?', json.dumps(args), target.offset)
    report = verify_log(tmp_path)
    assert report.mismatch is not None and report.mismatch.offset == target.offset
    assert "hash differs" in report.mismatch.reason


def test_verify_log_on_a_missing_directory(tmp_path: Path) -> None:
    done = _cli(tmp_path / "nothing")
    assert done.returncode == 2 and "no commit log" in done.stderr
    (tmp_path / "empty").mkdir()  # a directory, but no database in it: nothing to check (a wrong --data)
    done = _cli(tmp_path / "empty")
    assert done.returncode == 2 and "no commit log" in done.stderr and "Traceback" not in done.stderr
    assert list((tmp_path / "empty").iterdir()) == []  # nothing created


def _spoil(path: Path, how: str) -> None:
    """A data directory whose database is not a commit log this build can read."""
    db = path / "syncref.sqlite3"
    if how == "not a database":
        db.write_bytes(b"SQLite format 2\0" + bytes(range(256)) * 16)
    elif how == "empty file":
        db.write_bytes(b"")
    else:
        _, records = built(path)
        write_all(path, records, clean=True)
        sql = {"no commit_log table": "DROP TABLE commit_log",
               "no meta table": "DROP TABLE meta",
               "corrupt stored policy": "UPDATE meta SET value = '{\"classes\": 7}' WHERE key = 'policy'",
               "another log format": "UPDATE meta SET value = '99' WHERE key = 'format'",
               "no format marker": "DELETE FROM meta WHERE key = 'format'"}[how]
        conn = sqlite3.connect(db)
        with conn:
            conn.execute(sql)
        conn.close()


@pytest.mark.parametrize("how", ["not a database", "empty file", "corrupt stored policy", "another log format",
                                 "no format marker"])
def test_verify_log_on_an_unreadable_database_is_one_line(tmp_path: Path, how: str) -> None:
    """Failed before: the first four were a Python traceback with exit status 1 -- the status of a
    log that does not verify -- instead of one line saying nothing was checked (exit 2); a log of
    another format (or with records but no format marker), which ``serve`` refuses to load, was
    re-executed under this build's rules and called OK."""
    _spoil(tmp_path, how)
    before = (tmp_path / "syncref.sqlite3").read_bytes()
    done = _cli(tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.startswith("verify-log:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "is not a commit log this build can read" in lines[0] and "nothing was checked" in lines[0]
    assert (tmp_path / "syncref.sqlite3").read_bytes() == before  # read, never written


@pytest.mark.parametrize("how", ["no commit_log table", "no meta table"])
def test_verify_log_on_a_log_missing_one_of_its_tables_says_it_is_damaged(tmp_path: Path, how: str) -> None:
    """A syncref database (it holds one of the log's two tables, and the records or the format marker
    in it) whose other table was dropped -- by hand, or by a tool that "cleaned" it -- is this
    build's log, damaged: every acknowledged write in it is gone (or its format marker and policy
    are).  Failed before: exit 2 and "is not a commit log this build can read (no such table:
    commit_log); nothing was checked", the class of a foreign or locked database, so a script
    treating exit 1 as "restore from backup" went on.  Now exit 1, one line saying it is damaged,
    nothing written.  (A database with neither table -- an empty file, another program's SQLite
    file -- is still exit 2: nothing of syncref's is in it.)"""
    _spoil(tmp_path, how)
    before = (tmp_path / "syncref.sqlite3").read_bytes()
    done = _cli(tmp_path, "--json")
    lines = [line for line in done.stderr.splitlines() if line.startswith("verify-log:")]
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr and done.stdout == "", done.stderr
    missing, kept = ("commit_log", "meta") if how == "no commit_log table" else ("meta", "commit_log")
    assert "is damaged" in lines[0] and "does not verify" in lines[0] and "not a commit log" not in lines[0], lines
    assert f"no {missing} table" in lines[0] and kept in lines[0], lines
    assert (tmp_path / "syncref.sqlite3").read_bytes() == before  # read, never written


def test_a_log_missing_its_commit_log_table_is_not_restarted_empty(tmp_path: Path) -> None:
    """Failed before: ``LogStore.open`` re-created the dropped ``commit_log`` table (``CREATE TABLE IF
    NOT EXISTS``) and ``restart`` recovered an empty state at offset 0 over a directory whose meta
    says it has a log: every acknowledged write silently gone, the server serving as new.  Now the
    open refuses, naming the damage, and writes nothing."""
    from reference.durability import DamagedLog

    _spoil(tmp_path, "no commit_log table")
    before = (tmp_path / "syncref.sqlite3").read_bytes()
    with pytest.raises(DamagedLog, match="no commit_log table"):
        LogStore.open(tmp_path)
    assert (tmp_path / "syncref.sqlite3").read_bytes() == before
    conn = sqlite3.connect(tmp_path / "syncref.sqlite3")
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert names == {"meta"}


def test_verify_log_on_a_damaged_commit_log_says_it_does_not_verify(tmp_path: Path) -> None:
    """A commit log of this build (format marker and policy intact) with a damaged page in the middle
    of its records -- bytes flipped on disk, by a bad disk or by hand.  Failed before: exit 2 and
    "is not a commit log this build can read (database disk image is malformed); nothing was
    checked", the class of a locked or foreign database (check again later, or with another build),
    for a log that is neither: it is this build's log and it does not verify.  Now exit 1, one line
    saying it is damaged."""
    _, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    db = tmp_path / "syncref.sqlite3"
    conn = sqlite3.connect(db)
    pages, page_size = conn.execute("PRAGMA page_count").fetchone()[0], conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with db.open("r+b") as f:  # a leaf of commit_log (pages 2-4: its root, meta and meta's index)
        f.seek((pages // 2 + 1) * page_size)
        f.write(b"\xff" * 64)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() is not None  # still this log
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        conn.execute("SELECT max(length(changes_json)) FROM commit_log").fetchall()
    conn.close()
    done = _cli(tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.startswith("verify-log:")]
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "is damaged" in lines[0] and "does not verify" in lines[0] and "not a commit log" not in lines[0], lines


def test_verify_log_on_a_locked_database_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Another process holding an exclusive lock (sqlite3's ``locking_mode=EXCLUSIVE``; a syncref
    server never does) leaves verify-log nothing to read.  Failed before: a traceback
    (``sqlite3.OperationalError: database is locked``), exit 1."""
    from adapters import cli
    from reference import replay as replay_module

    _, records = built(tmp_path)
    write_all(tmp_path, records, clean=True)
    holder = sqlite3.connect(tmp_path / "syncref.sqlite3", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO meta (key, value) VALUES ('held', '1')")
    opened = replay_module.LogStore.open
    monkeypatch.setattr(replay_module.LogStore, "open",
                        lambda d, **kw: opened(d, **{**kw, "busy_timeout_ms": 50}))  # not the 10 s default
    try:
        status = cli.main(["verify-log", "--data", str(tmp_path)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert status == 2, err
    assert "is locked by another process" in err and "nothing was checked" in err


def _stored(path: Path) -> tuple[Any, ...]:
    """What the data directory holds, read with sqlite3 itself: every record's offset and hash, and meta."""
    conn = sqlite3.connect(f"file:{path / 'syncref.sqlite3'}?mode=ro", uri=True)
    try:
        return (conn.execute('SELECT "offset", hash FROM commit_log ORDER BY "offset"').fetchall(),
                dict(conn.execute("SELECT key, value FROM meta").fetchall()))
    finally:
        conn.close()


@pytest.mark.parametrize("clean", [True, False])
def test_a_restart_asked_to_stop_stops_between_batches_and_leaves_the_directory_as_it_was(
        tmp_path: Path, clean: bool) -> None:
    """``restart(stop=...)`` asks ``stop()`` before it loads a snapshot, before each batch of records and
    once after the last; on a yes it raises :class:`RecoveryInterrupted` (records applied, records to
    apply) having written nothing -- no recovery record, no meta -- and puts back the clean marker its
    open cleared, so the next start is the one this start would have been.  Failed before: there was
    no way to stop a restart short of killing the process (``syncref serve`` ignored SIGTERM until
    the whole log was replayed)."""
    from support.logfiles import long_log

    from reference.durability import _RESTART_BATCH, RecoveryInterrupted

    n = 3 * _RESTART_BATCH + 5
    long_log(tmp_path, n, clean=clean)
    before = _stored(tmp_path)
    assert len(before[0]) == n and ("clean_shutdown" in before[1]) == clean
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) == 4  # the snapshot's turn, two batches', then stop before the third

    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    assert "clean_shutdown" not in _stored(tmp_path)[1]  # the open cleared it (durably)
    with pytest.raises(RecoveryInterrupted) as stopped:
        restart(store, writer, now=10**15, stop=stop)
    assert (stopped.value.applied, stopped.value.total) == (2 * _RESTART_BATCH, n)
    assert f"after {2 * _RESTART_BATCH:,} of {n:,} records" in str(stopped.value)
    writer.close()
    store.close()
    assert _stored(tmp_path) == before
    store = LogStore.open(tmp_path)  # the start the interrupted one would have been
    assert store.clean_at_open == clean
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=10**15, stop=lambda: False)
    shutdown(eng, writer, store)
    assert len(_stored(tmp_path)[0]) == (n if clean else n + 1)  # a recovery record only after an unclean stop


def test_policy_is_pinned(tmp_path: Path) -> None:
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=1, policy=POLICY)
    shutdown(eng, writer, store)
    store = LogStore.open(tmp_path)
    assert store.load_policy() == POLICY
    with pytest.raises(ValueError, match="different policy"):
        restart(store, GroupCommitWriter(store, background=False), now=2, policy=DEFAULT_POLICY)
    store.close()


def test_recovery_margin_covers_the_crashed_runs_window(tmp_path: Path) -> None:
    """A restart with a smaller max_undurable still bumps past the previous run's window."""
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=1, policy=POLICY, max_undurable=100)
    eng.admin_call(ALL, "append_sync_event", ("s.a", "k", "{}", None, None))
    sync(eng, writer)
    writer.close()
    store.close()  # crash
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=2, max_undurable=4)
    assert eng.db.epoch_floor == 1 + 100 + 1 and eng.max_undurable == 4
    writer.close()
    store.close()  # crash again: this run's window was 4
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=3, max_undurable=4)
    assert eng.db.epoch_floor == 102 + 4 + 1
    writer.close()
    store.close()


def test_writer_rejects_records_that_do_not_continue_the_log(tmp_path: Path) -> None:
    eng = Engine(POLICY)
    drive(eng)
    records = eng.take_records()
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    with pytest.raises(ValueError, match="offset 2"):
        writer.append(records[1:])
    writer.append(records[:3])
    with pytest.raises(ValueError, match="offset 5"):
        writer.append(records[4:])
    other = Engine(POLICY)
    drive(other, "x")  # offset 4 of another history: wrong prev_hash
    with pytest.raises(ValueError, match="offset 4"):
        writer.append(other.take_records()[3:])
    writer.append(records[3:])
    assert writer.flush() == len(records)
    writer.close()
    store.close()


class GatedStore(LogStore):
    """COMMIT waits for the test to open a gate (to let records pile up behind it)."""

    gate = threading.Event()

    def _commit(self, *args: Any) -> None:
        self.gate.wait(10)
        super()._commit(*args)


def test_group_commit_batches_the_backlog(tmp_path: Path) -> None:
    eng = Engine(POLICY, max_undurable=10_000)
    store = GatedStore.open(tmp_path)
    GatedStore.gate.clear()
    batches: list[int] = []
    writer = GroupCommitWriter(store, lambda offset, batch: batches.append(len(batch)))
    for i in range(200):
        eng.admin_call(ALL, "append_sync_event", (f"s.{i % 3}", f"k{i}", "{}", None, None))
        writer.append(eng.take_records())  # 200 appends of one record each
    time.sleep(0.2)
    GatedStore.gate.set()
    assert writer.flush() == 200
    writer.close()
    store.close()
    assert sum(batches) == 200 and writer.batches == len(batches) <= 3, batches  # 1 in flight, then the rest


def test_policy_round_trips_through_the_data_directory_meta() -> None:
    """Every knob of the policy (retention windows included, ADR-0003) survives meta's JSON: verify-log
    must replay under exactly the policy the log ran under."""
    from dataclasses import fields

    from reference.durability import policy_from_json, policy_json
    odd = Policy(classes=(("x.", StreamClass("x", 10, 3, 5_000, 7)),), default_class=StreamClass("d", 99),
                 presence_min_ttl_ms=7, presence_max_ttl_ms=70, bridge_kinds=frozenset({31990}),
                 bridge_max_attempts=2, bridge_max_retry_after_ms=9, max_error_text=11,
                 retain_offline_presence_us=None, retain_terminal_assignment_us=1, retain_sent_outbox_us=2,
                 retain_failed_outbox_us=3)
    for p in (odd, Policy()):
        assert policy_from_json(json.loads(json.dumps(policy_json(p)))) == p
    assert {f.name for f in fields(Policy)} <= set(policy_json(odd))  # no knob left out


_KILLED_WRITER = """
import os, sys
sys.path[:0] = {paths!r}
from reference.durability import GroupCommitWriter, LogStore
from reference.engine import Engine
from tests.reference.test_durability import POLICY, drive
store = LogStore.open({data!r})
store.save_policy(POLICY)
writer = GroupCommitWriter(store, background=False)
eng = Engine(POLICY)
drive(eng)
for rec in eng.take_records():  # one COMMIT (one WAL transaction) per record
    writer.append([rec])
    writer.flush()
os._exit(0)  # SIGKILL-like: no close, no checkpoint -- every record stays in the WAL
"""


def test_a_torn_wal_tail_recovers_and_a_clean_shutdown_after_it_sets_the_marker(tmp_path: Path) -> None:
    """Regression (issue 13): after a torn WAL tail, restart recovers to the last intact record and
    the next clean shutdown leaves the marker (the serve-level half is in test_cli_serve)."""
    data = tmp_path / "data"
    root = str(Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", _KILLED_WRITER.format(paths=[root], data=str(data))], check=True,
                   timeout=120)
    store = LogStore.open(data, readonly=True)
    whole = list(store.iter_records())
    store.close()
    wal = data / (DB_FILE + "-wal")
    (data / (DB_FILE + "-shm")).unlink(missing_ok=True)
    os.truncate(wal, wal.stat().st_size - 1000)  # the last frame cut mid-write
    store = LogStore.open(data)
    assert not store.clean_at_open
    survived = list(store.iter_records())
    assert 0 < len(survived) < len(whole) and survived == whole[: len(survived)]
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=10**12)
    assert eng.committed == len(survived) + 1 and eng.durable == eng.committed  # the recovery record
    shutdown(eng, writer, store)
    store = LogStore.open(data, readonly=True)
    assert store.clean_at_open and store.last() == (eng.committed, eng.head_hash)
    store.close()
    report = verify_log(data)
    assert report.ok and report.clean_shutdown and report.records == eng.committed

class SlowStore(LogStore):
    """Each COMMIT first sleeps the next of ``delays`` seconds (a slow disk; none once they run out)."""

    delays: ClassVar[list[float]] = []

    def _commit(self, *args: Any) -> None:
        if self.delays:
            time.sleep(self.delays.pop(0))
        super()._commit(*args)


def _gathering_writer(tmp_path: Path, gather_s: float, delays: list[float]
                      ) -> tuple[Engine, GroupCommitWriter, LogStore, list[int]]:
    """A writer whose previous COMMIT wrote 3 records and took ``delays[0]`` s, now idle: gathering
    allows min(gather_s, delays[0] / 2)."""
    SlowStore.delays = list(delays)
    eng = Engine(POLICY, max_undurable=10_000)
    store = SlowStore.open(tmp_path)
    batches: list[int] = []
    writer = GroupCommitWriter(store, lambda offset, batch: batches.append(len(batch)), gather_s=gather_s)
    for i in range(3):
        eng.admin_call(ALL, "append_sync_event", ("s.g", f"k{i}", "{}", None, None))
    writer.append(eng.take_records())  # one batch of 3
    assert writer.flush() == 3 and batches == [3]
    _until(lambda: writer._sleeping)  # back in its idle wait: a gathering starts only from there
    return eng, writer, store, batches


def _append_one(eng: Engine, writer: GroupCommitWriter, key: str) -> None:
    eng.admin_call(ALL, "append_sync_event", ("s.g", key, "{}", None, None))
    writer.append(eng.take_records())


def _wait_offset(writer: GroupCommitWriter, offset: int, timeout: float = 10.0) -> None:
    """Poll (never flush or wait_durable: they hurry the writer) until ``offset`` is durable."""
    deadline = time.monotonic() + timeout
    while writer.durable_offset < offset:
        assert time.monotonic() < deadline, "not durable in time"
        time.sleep(0.005)


def test_an_idle_writer_gathers_a_round_into_one_commit(tmp_path: Path) -> None:
    """Closed-loop callers answered by one COMMIT come back one by one: the idle writer waits for
    as many records as its previous COMMIT wrote (bounded), so they share one COMMIT, not two."""
    eng, writer, store, batches = _gathering_writer(tmp_path, gather_s=60.0, delays=[1.0, 1.0])
    _slow_previous_commit(writer, 120.0)  # this round's bound: 60 s, however slowly the 3 arrive
    for i in range(3):
        _append_one(eng, writer, f"r{i}")
        time.sleep(0.03)
    _wait_offset(writer, 6)
    assert batches == [3, 3] and writer.gathered == 1, batches
    # fewer arrive than last time: the wait ends at its bound (half the previous, 1 s COMMIT, not gather_s)
    _until(lambda: writer._sleeping)  # back in its idle wait: a gathering starts only from there
    _append_one(eng, writer, "alone")
    _wait_offset(writer, 7)
    assert batches == [3, 3, 1] and writer.gathered == 2
    assert writer.gather_waited_s >= 0.45, writer.gather_waited_s  # the second wait alone is 0.5 s
    writer.close()
    store.close()


def test_the_gathering_wait_is_the_total_of_every_gathering(tmp_path: Path) -> None:
    """``gather_waited_s`` adds up the waits of every gathering (the server reports it as a running total):
    a long wait first, then a short one -- the total grows past the first."""
    eng, writer, store, batches = _gathering_writer(tmp_path, gather_s=5.0, delays=[1.0, 0.04, 0.04, 0.04])
    _append_one(eng, writer, "alone")  # fewer than 3 come: the wait ends at half the 1 s COMMIT
    _wait_offset(writer, 4)
    first = writer.gather_waited_s
    assert writer.gathered == 1 and first >= 0.5, first
    for key in ("two", "together"):  # two records in one append: as many as the last COMMIT, no gathering
        eng.admin_call(ALL, "append_sync_event", ("s.g", key, "{}", None, None))
    writer.append(eng.take_records())
    _wait_offset(writer, 6)
    assert writer.gathered == 1
    _until(lambda: writer._sleeping)  # the writer goes back to its idle wait (a gathering starts only from there)
    _append_one(eng, writer, "last")  # fewer than 2: a wait of at most half the 0.04 s COMMIT
    _wait_offset(writer, 7)
    assert batches == [3, 1, 2, 1] and writer.gathered == 2
    assert writer.gather_waited_s >= first + 0.02, (first, writer.gather_waited_s)
    writer.close()
    store.close()


def _slow_previous_commit(writer: GroupCommitWriter, seconds: float) -> None:
    """White box: the idle writer's previous COMMIT took ``seconds`` (a gathering then waits up to half
    of it), without the test waiting that long for it."""
    _until(lambda: writer._sleeping)
    with writer._cv:
        writer._last_commit_s = seconds


@pytest.mark.parametrize("how", ["flush", "wait_durable"])
def test_a_waiting_caller_cuts_the_gathering_short(tmp_path: Path, how: str) -> None:
    """The gathering's bound is 60 s (a previous COMMIT of 120 s), so a caller that waited it out is
    unmistakable however slow the machine's disk: the caller's COMMIT is not in the margin."""
    eng, writer, store, batches = _gathering_writer(tmp_path, gather_s=600.0, delays=[])
    _slow_previous_commit(writer, 120.0)
    _append_one(eng, writer, "x")
    _until(lambda: writer._gather_target == 3)  # a gathering is under way (1 of 3 records), up to 60 s
    started = time.monotonic()
    if how == "flush":
        assert writer.flush() == 4
    else:
        assert writer.wait_durable(4, timeout=90)
    assert time.monotonic() - started < 30  # it does not wait out the 60 s a gathering would
    assert writer.gathered == 1
    writer.close()
    store.close()
    assert batches == [3, 1]


def test_gathering_off_writes_at_once(tmp_path: Path) -> None:
    eng, writer, store, batches = _gathering_writer(tmp_path, gather_s=0.0, delays=[1.0])
    _append_one(eng, writer, "x")
    _wait_offset(writer, 4)
    assert batches == [3, 1] and writer.gathered == 0 and writer.gather_waited_s == 0
    writer.close()
    store.close()


def test_a_busy_writer_never_gathers(tmp_path: Path) -> None:
    """Records that queued while a COMMIT ran go at once: only an idle writer waits."""
    eng = Engine(POLICY, max_undurable=10_000)
    store = GatedStore.open(tmp_path)
    GatedStore.gate.clear()
    batches: list[int] = []
    writer = GroupCommitWriter(store, lambda offset, batch: batches.append(len(batch)), gather_s=5.0)
    for i in range(50):
        _append_one(eng, writer, f"k{i}")
    time.sleep(0.2)
    GatedStore.gate.set()
    _wait_offset(writer, 50)
    assert writer.gathered == 0 and sum(batches) == 50
    writer.close()
    store.close()


def _until(what: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_wake_notifies_only_when_the_writer_would_act(tmp_path: Path) -> None:
    """``wake`` (the event loop calls it once per iteration) wakes an idle writer, leaves a gathering
    writer asleep while its queue is short of the target, and wakes it once the target is reached:
    that COMMIT goes before the gathering bound."""
    eng, writer, store, batches = _gathering_writer(tmp_path, gather_s=600.0, delays=[])
    _slow_previous_commit(writer, 120.0)  # the bound: 60 s
    eng.admin_call(ALL, "append_sync_event", ("s.g", "w0", "{}", None, None))
    writer.append(eng.take_records(), wake=False)
    time.sleep(0.05)
    assert writer.durable_offset == 3 and writer.wakeups == 0  # not woken: nothing happens
    writer.wake()
    assert writer.wakeups == 1
    _until(lambda: writer._gather_target == 3)  # idle, woken with 1 < 3 records: it gathers
    started = time.monotonic()
    eng.admin_call(ALL, "append_sync_event", ("s.g", "w1", "{}", None, None))
    writer.append(eng.take_records(), wake=False)
    for _ in range(20):
        writer.wake()
    assert writer.wakeups == 1  # still short of the target: no needless wakeups
    eng.admin_call(ALL, "append_sync_event", ("s.g", "w2", "{}", None, None))
    writer.append(eng.take_records(), wake=False)
    writer.wake()
    assert writer.wakeups == 2
    _wait_offset(writer, 6)
    assert time.monotonic() - started < 30, "the target was reached: the COMMIT must not wait out the 60 s bound"
    assert batches == [3, 3]
    writer.close()
    store.close()


def _sqlite_error(message: str, name: str) -> sqlite3.OperationalError:
    """An error as Python 3.11's sqlite3 raises it (the extended result code's name attached)."""
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorname = name  # type: ignore[attr-defined]
    return exc


class FailingOnceStore(LogStore):
    """COMMIT fails once as a failed WAL fsync does (``SQLITE_IOERR_FSYNC``); every later COMMIT works."""

    failures = 0

    def _commit(self, *args: Any) -> None:
        if self.failures == 0:
            self.failures += 1
            raise _sqlite_error("disk I/O error", "SQLITE_IOERR_FSYNC")
        super()._commit(*args)


@pytest.mark.parametrize("background", [False, True])
def test_after_a_failed_commit_the_writer_never_reports_that_batch_durable(tmp_path: Path, background: bool) -> None:
    """"fsyncgate": a retried fsync may succeed although the failed write never reached the disk,
    so a failed COMMIT freezes the durable offset for good: the writer does not retry, refuses new
    records, and the log holds nothing of the failed batch.  (Against a real failing disk:
    tests/adapters/test_storage_faults.py, whose planted retrying writer shows the check can fail.)"""
    eng = Engine(POLICY)
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    drive(eng)
    records = eng.take_records()
    writer.append(records[:3])
    assert writer.flush() == 3
    writer.close()
    store.close()
    store = FailingOnceStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=background)
    writer.append(records[3:5])
    with pytest.raises(DurabilityError, match="disk I/O error"):
        writer.flush()
    assert store.failures == 1 and writer.durable_offset == 3
    with pytest.raises(DurabilityError):  # the store would accept a retry now; the writer must not make one
        writer.flush()
    with pytest.raises(DurabilityError):
        writer.wait_durable(5, timeout=1)
    with pytest.raises(DurabilityError):
        writer.append(records[5:6])
    assert writer.durable_offset == 3 and store.last()[0] == 3 and store.failures == 1
    with pytest.raises(DurabilityError):
        writer.close()
    store.close()


@pytest.mark.parametrize(("exc", "kind", "what"), [
    (_sqlite_error("disk I/O error", "SQLITE_IOERR_FSYNC"), "io",
     "fsync of the commit log failed with an I/O error (SQLITE_IOERR_FSYNC)"),
    (_sqlite_error("disk I/O error", "SQLITE_IOERR_WRITE"), "io",
     "a write to the commit log failed with an I/O error (SQLITE_IOERR_WRITE)"),
    (_sqlite_error("disk I/O error", "SQLITE_IOERR_DIR_FSYNC"), "io",
     "fsync of the data directory failed with an I/O error (SQLITE_IOERR_DIR_FSYNC)"),
    (_sqlite_error("disk I/O error", "SQLITE_IOERR_LOCK"), "io",
     "a commit-log operation failed with an I/O error (SQLITE_IOERR_LOCK)"),
    (_sqlite_error("database or disk is full", "SQLITE_FULL"), "full", "the disk is full"),
    (sqlite3.OperationalError("database or disk is full"), "full", "the disk is full"),  # no extended name
    # the name decides, whatever the text (the text is the fallback for an error without a name)
    (_sqlite_error("no room left for the page", "SQLITE_FULL"), "full", "the disk is full"),
    (OSError(28, "No space left on device"), "full", "the disk is full"),
    (OSError(5, "Input/output error"), "io", "an I/O error (Input/output error)"),
    (DurabilityError("the commit-log writer failed"), None, None),
    (sqlite3.OperationalError("database is locked"), None, None),
    (OSError(13, "Permission denied"), None, None),
    (ValueError("commit log hash mismatch at offset 3"), None, None),
])
def test_storage_fault_names_the_failed_operation(exc: BaseException, kind: str | None, what: str | None) -> None:
    fault = storage_fault(exc)
    assert (fault.kind, fault.what) == (kind, what) if fault is not None else (kind, what) == (None, None)
    wrapped = DurabilityError("the commit-log writer failed")  # found through the cause chain, as the server sees it
    wrapped.__cause__ = exc
    assert storage_fault(wrapped) == fault


def test_the_writer_failure_line_says_what_failed_that_nothing_acknowledged_is_lost_and_what_to_do() -> None:
    line = writer_failure_line(_sqlite_error("disk I/O error", "SQLITE_IOERR_FSYNC"))
    assert line == ("the commit-log writer failed, stopping: fsync of the commit log failed with an I/O error "
                    "(SQLITE_IOERR_FSYNC); nothing acknowledged is lost (the calls waiting on the failed write got "
                    "errors, not acknowledgements); check the disk (dmesg, SMART); start again once it is healthy: "
                    "the restart recovers, and syncref verify-log --data DIR checks the log")
    assert writer_failure_line(OSError(28, "No space left on device")).endswith("; free space and start again")
    other = writer_failure_line(RuntimeError("boom"))
    assert "RuntimeError('boom')" in other and "nothing acknowledged is lost" in other


def _snapshotted_then_lost(path: Path, how: str) -> None:
    """A data directory that held a log of 50 records and a snapshot of it, whose database was then
    lost: deleted (with its WAL), or replaced by an empty syncref database (tables, no format marker)."""
    from support.logfiles import long_log

    from reference import snapshot

    long_log(path, 50)
    store = LogStore.open(path)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=10**15)
    snapshot.write(path / snapshot.SNAPSHOT_DIR, snapshot.capture(eng.db, eng.committed, eng.head_hash,
                                                                  store.log_id))
    shutdown(eng, writer, store)
    if how == "kept":
        return
    for suffix in ("", "-wal", "-shm"):
        (path / f"syncref.sqlite3{suffix}").unlink(missing_ok=True)
    if how == "empty database":
        from reference.durability import _SCHEMA

        conn = sqlite3.connect(path / "syncref.sqlite3")  # what a first start's crash before its marker leaves
        conn.executescript(_SCHEMA)
        conn.close()


@pytest.mark.parametrize("how", ["no database", "empty database"])
def test_snapshots_without_their_log_are_not_restarted_empty(tmp_path: Path, how: str) -> None:
    """A snapshot is renamed into place only once its record is durable in the log (ADR-0011), so
    ``snapshots/snap-N.json`` (N > 0) beside a missing or never-written log means the log was lost,
    not that the directory is new.  Failed before: ``LogStore.open`` created a fresh log, ``restart``
    passed the snapshot over ("past the log head") and the server served an empty state -- every
    acknowledged write gone, and the first new snapshot would prune the old ones ("a future the log
    lost"), the last copy of that state.  Now the open refuses (:class:`DamagedLog`) and writes
    nothing; verify-log says the directory does not verify (exit 1)."""
    from reference.durability import DamagedLog

    _snapshotted_then_lost(tmp_path, how)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(DamagedLog, match=r"snap-000000000050\.json"):
        LogStore.open(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created
    done = _cli(tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.startswith("verify-log:")]
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert len(lines) == 1 and "is damaged" in lines[0] and "does not verify" in lines[0], lines


def _snapshotted_then_cut(path: Path, how: str) -> None:
    """A log of 50 records with a snapshot at 50 whose log then lost records: its own tail cut to 30
    records (a truncated file, a deleted -wal, an older copy restored), or replaced by another,
    shorter log of 30 records (made the same way, so its 30 records are those of the first log; only
    their log ids differ, ADR-0039)."""
    from support.logfiles import long_log

    from reference import snapshot

    if how == "tail cut":
        _snapshotted_then_lost(path, "kept")
        conn = sqlite3.connect(path / "syncref.sqlite3")
        conn.execute('DELETE FROM commit_log WHERE "offset" > 30')
        conn.commit()
        conn.close()
    else:
        _snapshotted_then_lost(path, "no database")
        long_log(path / "full", 30)
        for name in ("syncref.sqlite3", "syncref.sqlite3-wal", "syncref.sqlite3-shm"):
            if (path / "full" / name).exists():
                (path / "full" / name).rename(path / name)
        shutil.rmtree(path / "full")
    assert [o for o, _ in snapshot.listing(path / snapshot.SNAPSHOT_DIR)] == [50]


@pytest.mark.parametrize("how", ["tail cut", "another log"])
def test_a_snapshot_past_the_log_head_is_damage_not_passed_over(tmp_path: Path, how: str) -> None:
    """``snap-50.json`` beside a log of 30 records: a snapshot is renamed into place only once its
    record is durable (ADR-0011 decision 6), so the log lost acknowledged records 31-50 -- or the
    snapshot is another log's, which its log id now tells (ADR-0039; ADR-0037 could not).  Failed
    before: the open passed, restart passed the snapshot over ("past the log head") and served the 30
    records, and the first new snapshot pruned snap-50 (the last copy of that state).  Now both opens
    refuse (:class:`DamagedLog`, naming the snapshot, both offsets or both ids, and both ways out),
    nothing is written, verify-log exits 1."""
    from reference.durability import DamagedLog

    _snapshotted_then_cut(tmp_path, how)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for readonly in (False, True):
        with pytest.raises(DamagedLog) as err:
            LogStore.open(tmp_path, readonly=readonly)
        text = str(err.value)
        parts = ("record 50", "ends at record 30", "they were this log's", "syncref.head") if how == "tail cut" \
            else ("belongs to another log", "restore the log")
        for part in ("snap-000000000050.json", "restore", "move", *parts):
            assert part in text, (part, text)
    # nothing written: every file as it was (SQLite's connect may add an empty -wal/-shm)
    assert {p: p.read_bytes() for p in before} == before
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p not in before and p.stat().st_size
                and not p.name.endswith("-shm")]
    done = _cli(tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.startswith("verify-log:")]
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert len(lines) == 1 and "snap-000000000050.json" in lines[0] and "does not verify" in lines[0], lines


def test_snapshots_at_or_before_the_log_head_still_open(tmp_path: Path) -> None:
    """The other side of the check: snap-50 beside the log of 50 records it was taken from opens (both
    ways) and restart starts from it."""
    from support.logfiles import long_log

    from reference import snapshot

    long_log(tmp_path, 50)
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=10**15)
    snapshot.write(tmp_path / snapshot.SNAPSHOT_DIR, snapshot.capture(eng.db, eng.committed, eng.head_hash))
    shutdown(eng, writer, store)
    LogStore.open(tmp_path, readonly=True).close()
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=10**15)
    assert store.recovery is not None and store.recovery.snapshot_offset == 50
    shutdown(eng, writer, store)
    store = LogStore.open(tmp_path)
    assert store.last()[0] == 50
    store.close()


def test_a_new_directory_with_stray_snapshot_files_that_name_no_record_still_starts(tmp_path: Path) -> None:
    """Only a snapshot file (snap-N.json, N > 0) says a log existed: a stray temp file, a stranger
    in snapshots/, or an empty snapshots/ directory leaves a new directory new."""
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "snap-000000000001.tmp").write_bytes(b"half")
    (tmp_path / "snapshots" / "notes.txt").write_bytes(b"x")
    store = LogStore.open(tmp_path)
    assert store.clean_at_open
    store.close()


@pytest.mark.parametrize("statements", [0, 1, 2])
def test_a_first_start_that_crashed_while_creating_the_tables_is_still_a_new_directory(
        tmp_path: Path, statements: int) -> None:
    """The schema is not created in one transaction (each ``CREATE TABLE`` of ``_SCHEMA`` commits on its
    own), so a first start can crash with the file made and none, one or both tables created (and no
    format marker).  Each of those is a new directory to the next open -- never :class:`DamagedLog`:
    that relies on ``commit_log`` being created before ``meta`` (a crash between them leaves an empty
    ``commit_log``, which passes; ``meta`` alone would be refused).  A guard: reordering ``_SCHEMA``
    fails it (statements=1)."""
    from reference.durability import _SCHEMA

    conn = sqlite3.connect(tmp_path / "syncref.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for sql in [s for s in _SCHEMA.split(";") if s.strip()][:statements]:
        conn.execute(sql)
    conn.close()
    store = LogStore.open(tmp_path)
    assert store.clean_at_open and store.get_meta("format") is not None
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=10**15)
    shutdown(eng, writer, store)
    assert _stored(tmp_path)[0] == []  # no recovery record: it started as new
