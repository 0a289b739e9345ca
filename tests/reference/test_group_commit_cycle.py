"""The group-commit cycle's SQLite work (docs/performance.md "Phase 12", docs/operations.md
"The commit log's WAL"): a batch of up to ``INSERT_ROWS`` records is one statement (its own
transaction), a longer one BEGIN + one INSERT per ``INSERT_ROWS`` + COMMIT; the connection's
auto-checkpoint is off and the writer checkpoints the WAL itself, after the hand-back, keeping
the WAL bounded.  Oracles: SQLite's own trace of the statements run, the WAL file's size on
disk, the rows read back with plain SQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from support.failing_checkpoints import FailingCheckpoints

import reference.durability as durability
from reference.durability import DB_FILE, INSERT_ROWS, DurabilityError, GroupCommitWriter, LogStore
from reference.engine import Engine
from reference.log import TxRecord
from spec.auth import Claims

CALLER = Claims("c" * 64, frozenset({"sync.append"}), ("*",))


def records(n: int, payload: str = '{"p": 1}') -> list[TxRecord]:
    eng = Engine(max_undurable=n + 10)
    for i in range(n):
        eng.admin_call(CALLER, "append_sync_event", ("s", f"k{i}", payload, None, None))
    return eng.take_records()


def traced(store: LogStore) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    return seen


@pytest.mark.parametrize(("sizes", "statements"), [
    ([1], [["INSERT"]]),
    ([7, INSERT_ROWS], [["INSERT"], ["INSERT"]]),
    ([INSERT_ROWS + 1], [["BEGIN", "INSERT", "INSERT", "COMMIT"]]),
    ([3 * INSERT_ROWS + 5], [["BEGIN", "INSERT", "INSERT", "INSERT", "INSERT", "COMMIT"]]),
])
def test_a_batch_is_one_statement_up_to_insert_rows(tmp_path: Path, sizes: list[int],
                                                     statements: list[list[str]]) -> None:
    recs = records(sum(sizes))
    store = LogStore.open(tmp_path)
    seen = traced(store)
    at = 0
    for size, expected in zip(sizes, statements, strict=True):
        seen.clear()
        assert store.write_batch(recs[at:at + size]) == recs[at + size - 1].offset
        assert [s.split()[0] for s in seen] == expected
        at += size
    store.close()
    # every row, in order, read back with plain SQL against the records themselves
    db = sqlite3.connect(tmp_path / DB_FILE)
    got = db.execute('SELECT "offset", name, prev_hash, hash FROM commit_log ORDER BY "offset"').fetchall()
    db.close()
    assert got == [(r.offset, r.name, r.prev_hash, r.hash) for r in recs]


def test_a_failed_batch_insert_writes_nothing(tmp_path: Path) -> None:
    recs = records(2 * INSERT_ROWS + 3)
    store = LogStore.open(tmp_path)
    store.write_batch(recs[:5])
    with pytest.raises(sqlite3.IntegrityError):  # offsets 1-5 again, in a batch of three statements
        store.write_batch(recs[5:INSERT_ROWS + 10] + recs[:5])
    with pytest.raises(sqlite3.IntegrityError):  # and in a single statement
        store.write_batch(recs[5:8] + recs[:1])
    assert not store._conn.in_transaction
    assert store.last()[0] == recs[4].offset
    store.write_batch(recs[5:])
    assert store.last()[0] == recs[-1].offset
    store.close()


@pytest.mark.parametrize("n", [1, INSERT_ROWS + 1])
def test_a_batch_inside_an_open_transaction_is_refused_not_left_uncommitted(tmp_path: Path, n: int) -> None:
    """A one-statement batch runs as its own transaction only in autocommit mode: inside a read
    transaction open on the same connection it would join it and return uncommitted (lost if the
    process dies before that transaction ends), so it is refused as BEGIN IMMEDIATE refused it,
    and the open transaction is left alone."""
    recs = records(n)
    store = LogStore.open(tmp_path)
    with store.read_snapshot():
        with pytest.raises(DurabilityError):
            store.write_batch(recs)
        assert store._conn.in_transaction  # the reader's transaction, not rolled back under it
    assert store.last()[0] == 0
    store.write_batch(recs)  # and outside one, it commits
    other = sqlite3.connect(tmp_path / DB_FILE)
    assert other.execute("SELECT count(*) FROM commit_log").fetchone()[0] == n
    other.close()
    store.close()


def test_the_connection_does_not_checkpoint_by_itself(tmp_path: Path) -> None:
    store = LogStore.open(tmp_path)
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    store.close()


def wal_size(tmp_path: Path) -> int:
    wal = tmp_path / (DB_FILE + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_writer_keeps_the_wal_bounded(tmp_path: Path) -> None:
    """~6x CHECKPOINT_BYTES of records through the writer: the WAL file (never truncated, so its
    size is the most it ever held) stays within a small multiple of the bound, and the database
    file holds what the checkpoints copied.  With no checkpoint the WAL would hold everything."""
    recs = records(3000, '{"p": "' + "x" * 4500 + '"}')
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store)
    for i in range(0, len(recs), 16):
        writer.append(recs[i:i + 16])
        writer.flush()  # a COMMIT per 16 records
    writer.close()
    total = sum(len(r.args_json or "") + len(r.delta_json or "") for r in recs)
    assert total > 6 * durability.CHECKPOINT_BYTES
    assert store.checkpoints >= 5 and store.checkpoint_errors == 0
    assert wal_size(tmp_path) < 2 * durability.CHECKPOINT_BYTES
    assert (tmp_path / DB_FILE).stat().st_size > 4 * durability.CHECKPOINT_BYTES
    store.close()


def test_the_wal_estimate_counts_bytes_not_characters(tmp_path: Path) -> None:
    """The estimate the writer checkpoints by follows what SQLite writes, UTF-8 bytes: records
    whose payload is three-byte characters grow the WAL file (oracle: its size on disk, no
    checkpoint in between) by no more than half again the estimate.  Counting characters, the
    WAL reached ~3x its estimate, so ~3x ``CHECKPOINT_BYTES`` between checkpoints."""
    recs = records(40, '{"p": "' + "\u4e2d" * 6000 + '"}')
    assert all(not (r.args_json or "").isascii() for r in recs)  # stored as UTF-8 text, not escaped
    store = LogStore.open(tmp_path)
    before = wal_size(tmp_path)
    for rec in recs:
        store.write_batch([rec])
    grown = wal_size(tmp_path) - before
    assert store.checkpoints == 0
    assert grown <= 1.5 * store.wal_bytes, (grown, store.wal_bytes)
    store.close()


class _Recording(LogStore):
    events: list[str]

    def checkpoint_if_due(self) -> bool:
        ran = super().checkpoint_if_due()
        if ran:
            self.events.append("checkpoint")
        return ran


def test_the_writer_checkpoints_after_handing_the_batch_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durability, "CHECKPOINT_BYTES", 1)  # every COMMIT crosses the threshold
    recs = records(6)
    store = _Recording.open(tmp_path)
    assert isinstance(store, _Recording)
    store.events = []
    done = threading.Event()

    def on_durable(offset: int, batch: Sequence[TxRecord]) -> None:
        store.events.append(f"durable {offset}")
        if offset == recs[-1].offset:
            done.set()

    writer = GroupCommitWriter(store, on_durable)
    for rec in recs:
        writer.append([rec])
        writer.flush()
    assert done.wait(10)
    writer.close()
    durable = [i for i, e in enumerate(store.events) if e.startswith("durable")]
    assert len(durable) == len(recs)
    for i in durable:  # each hand-back comes before its batch's checkpoint, never after it
        assert store.events[i + 1] == "checkpoint"
    assert store.checkpoints == len(recs)
    store.close()


def test_write_batch_never_checkpoints_checkpoint_if_due_does(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durability, "CHECKPOINT_BYTES", 1)
    store = LogStore.open(tmp_path)
    recs = records(3)
    store.write_batch(recs[:1])
    store.write_batch(recs[1:2])
    assert store.checkpoints == 0 and store.wal_bytes > 0
    store.write_batch(recs[2:])
    assert store.checkpoint_if_due() and store.checkpoints == 1 and store.wal_bytes == 0
    assert not store.checkpoint_if_due()  # nothing written since
    store.close()


def test_a_failed_checkpoint_is_counted_and_the_writer_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durability, "CHECKPOINT_BYTES", 1)
    recs = records(3)
    store = LogStore.open(tmp_path)
    real = store._conn
    store._conn = FailingCheckpoints(real)  # type: ignore[assignment]
    writer = GroupCommitWriter(store)
    for rec in recs:
        writer.append([rec])
        assert writer.flush() == rec.offset
    writer.close()
    assert writer.error is None
    assert store.checkpoints == 3 and store.checkpoint_errors == 3
    store._conn = real
    assert store.last()[0] == recs[-1].offset
    store.close()
