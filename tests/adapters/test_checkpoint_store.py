"""``CheckpointStore`` on its own (issue 9: public classes are tested directly, not only through the
stream consumer that calls them).  ``apply_events`` must keep its promises whoever calls it: a gap is
never applied, duplicates are skipped, a failing ``apply`` rolls back that event only, the watermark
moves atomically with the effects, and a reopened file has every stream's (epoch, watermark)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from adapters.sdk.checkpoints import ApplyResult, Checkpoint, CheckpointStore
from spec.errors import LocalProtocolError
from spec.values import SyncEvent

S = "s.one"


def ev(seq: int, epoch: int = 1, stream: str = S) -> SyncEvent:
    return SyncEvent(stream, epoch, seq, f"k{seq}", "sha256:" + "0" * 64, f"[{seq}]", "a" * 64, 0, seq)


def record(tx: sqlite3.Connection, e: SyncEvent) -> None:
    tx.execute("INSERT INTO effects VALUES (?, ?)", (e.stream_id, e.seq))


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    st = CheckpointStore(tmp_path / "cp.sqlite", clock=lambda: 7)
    st.db.execute("CREATE TABLE effects (stream_id TEXT, seq INTEGER)")
    with st.transaction() as tx:
        st.reset(tx, S, 1, 0)
    return st


def effects(store: CheckpointStore) -> list[int]:
    return [int(s) for (s,) in store.db.execute("SELECT seq FROM effects ORDER BY rowid")]


def test_a_gap_is_never_applied_when_called_directly(store: CheckpointStore) -> None:
    result = store.apply_events(S, 1, [ev(1), ev(2), ev(4), ev(5)], record)
    assert result == ApplyResult(2, 2, None)
    assert effects(store) == [1, 2] and store.load(S) == Checkpoint(S, 1, 2)
    # the batch that starts past the watermark applies nothing
    assert store.apply_events(S, 1, [ev(4)], record) == ApplyResult(2, 0, None)
    assert effects(store) == [1, 2]


def test_duplicates_are_skipped_and_unsorted_input_is_not_reordered(store: CheckpointStore) -> None:
    store.apply_events(S, 1, [ev(1), ev(2)], record)
    assert store.apply_events(S, 1, [ev(1), ev(2), ev(3)], record) == ApplyResult(3, 1, None)
    assert store.apply_events(S, 1, [ev(5), ev(4)], record) == ApplyResult(3, 0, None)  # 5 is a gap: stop there
    assert effects(store) == [1, 2, 3]


def test_a_failing_apply_rolls_back_that_event_and_keeps_the_ones_before(store: CheckpointStore) -> None:
    def flaky(tx: sqlite3.Connection, e: SyncEvent) -> None:
        record(tx, e)
        if e.seq == 2:
            raise ValueError("boom")
    result = store.apply_events(S, 1, [ev(1), ev(2), ev(3)], flaky)
    assert (result.watermark, result.applied, type(result.error)) == (1, 1, ValueError)
    assert effects(store) == [1] and store.load(S) == Checkpoint(S, 1, 1)


def test_wrong_stream_epoch_or_no_checkpoint_is_a_caller_bug(store: CheckpointStore) -> None:
    with pytest.raises(LocalProtocolError):
        store.apply_events("s.unknown", 1, [ev(1, stream="s.unknown")], record)
    with pytest.raises(LocalProtocolError):
        store.apply_events(S, 2, [ev(1, epoch=2)], record)
    with pytest.raises(LocalProtocolError):
        store.apply_events(S, 1, [ev(1, epoch=2)], record)
    assert effects(store) == [] and store.load(S) == Checkpoint(S, 1, 0)


def test_apply_must_not_end_the_transaction(store: CheckpointStore) -> None:
    def commits(tx: sqlite3.Connection, e: SyncEvent) -> None:
        tx.execute("COMMIT")
    with pytest.raises(LocalProtocolError):
        store.apply_events(S, 1, [ev(1)], commits)


def test_reopen_restores_every_stream(tmp_path: Path) -> None:
    path = tmp_path / "cp.sqlite"
    with CheckpointStore(path) as st:
        with st.transaction() as tx:
            st.reset(tx, "a", 3, 10)
            st.reset(tx, "b", 1, 0)
        st.apply_events("b", 1, [ev(1, stream="b")], lambda tx, e: None)
    with CheckpointStore(path) as again:
        assert again.all() == [Checkpoint("a", 3, 10), Checkpoint("b", 1, 1)]


def test_reset_outside_a_transaction_and_out_of_range_values_are_refused(store: CheckpointStore) -> None:
    with pytest.raises(LocalProtocolError):
        store.reset(store.db, S, 1, 0)
    with pytest.raises(LocalProtocolError), store.transaction() as tx:
        store.reset(tx, S, 2**63, 0)
    with pytest.raises(LocalProtocolError):
        CheckpointStore(":memory:", synchronous="SOMETIMES")
    assert store.load(S) == Checkpoint(S, 1, 0)


def test_the_rehydrate_mark_survives_reopening_until_the_whole_window_is_applied(tmp_path: Path) -> None:
    """The rebootstrap sets ``rehydrating``; a window batch that fails part-way (or stops at a gap) keeps
    it, so a restart reads the window again; the batch that applies the rest of it clears it, in the
    same transaction as its events."""
    path = tmp_path / "cp.sqlite"
    with CheckpointStore(path) as st:
        with st.transaction() as tx:
            st.reset(tx, S, 2, 4, rehydrating=True)

        def flaky(tx: sqlite3.Connection, e: SyncEvent) -> None:
            if e.seq == 7:
                raise ValueError("boom")
        assert st.apply_events(S, 2, [ev(5, 2), ev(6, 2), ev(7, 2)], flaky, rehydrated=True).applied == 2
        assert st.apply_events(S, 2, [ev(8, 2)], flaky, rehydrated=True).applied == 0  # a gap
    with CheckpointStore(path) as st:
        assert st.load(S) == Checkpoint(S, 2, 6, rehydrating=True)
        assert st.apply_events(S, 2, [ev(7, 2)], lambda tx, e: None) == ApplyResult(7, 1)  # not the window
        assert st.load(S) == Checkpoint(S, 2, 7, rehydrating=True)
        assert st.apply_events(S, 2, [ev(6, 2), ev(7, 2)], lambda tx, e: None, rehydrated=True) == ApplyResult(7, 0)
        assert st.all() == [Checkpoint(S, 2, 7)]  # an empty rest of the window ends the rehydrate too
        with st.transaction() as tx:
            st.reset(tx, S, 2, 7)  # a reset without the mark clears it (a watermark of the application's)
        assert st.load(S) == Checkpoint(S, 2, 7)


def test_a_file_from_before_the_rehydrate_mark_is_read_and_upgraded(tmp_path: Path) -> None:
    """A checkpoint file written by an SDK without the ``rehydrating`` column (the table as it was) opens
    with every stream not rehydrating, and can be written; the table as upgraded still takes an old
    SDK's writes, which name their columns (the mark defaults to 0)."""
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE syncref_checkpoint (stream_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL CHECK "
                "(epoch >= 0), watermark INTEGER NOT NULL CHECK (watermark >= 0), updated_at INTEGER NOT NULL)")
    old.execute("INSERT INTO syncref_checkpoint VALUES ('a', 3, 10, 1), ('b', 1, 0, 1)")
    old.close()
    with CheckpointStore(path) as st:
        assert st.all() == [Checkpoint("a", 3, 10), Checkpoint("b", 1, 0)]
        with st.transaction() as tx:
            st.reset(tx, "b", 2, 5, rehydrating=True)
    with CheckpointStore(path) as st:  # opening an upgraded file again changes nothing
        assert st.all() == [Checkpoint("a", 3, 10), Checkpoint("b", 2, 5, rehydrating=True)]
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("INSERT INTO syncref_checkpoint (stream_id, epoch, watermark, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (stream_id) DO UPDATE SET epoch = excluded.epoch, watermark = excluded.watermark, "
                "updated_at = excluded.updated_at", ("c", 1, 2, 1))
    old.close()
    with CheckpointStore(path) as st:
        assert st.load("c") == Checkpoint("c", 1, 2)


def test_a_file_from_before_the_rehydrate_mark_that_cannot_be_written_is_still_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old checkpoint file this process may only read (another user's, a read-only backup; the tests
    run as root, so SQLite's ``mode=ro`` stands in for the file mode) is read as it is, every stream not
    rehydrating -- as a file with the column is.  Failed before: ``OperationalError: attempt to write a
    readonly database`` from the constructor (the in-place upgrade), where the SDK before the column read
    it.  Writing it still fails, as it does for any read-only file."""
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE syncref_checkpoint (stream_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL CHECK "
                "(epoch >= 0), watermark INTEGER NOT NULL CHECK (watermark >= 0), updated_at INTEGER NOT NULL)")
    old.execute("INSERT INTO syncref_checkpoint VALUES ('a', 3, 10, 1)")
    old.close()
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda p, **kw: connect(f"file:{p}?mode=ro", uri=True, **kw))
    with CheckpointStore(path) as st:
        assert st.all() == [Checkpoint("a", 3, 10)] and st.load("a") == Checkpoint("a", 3, 10)
        with pytest.raises(LocalProtocolError, match="may only read"), st.transaction() as tx:
            st.reset(tx, "a", 3, 11)
    monkeypatch.undo()
    with CheckpointStore(path) as st:  # writable again: upgraded as any old file
        assert st.all() == [Checkpoint("a", 3, 10)]
        assert "rehydrating" in {r[1] for r in st.db.execute("PRAGMA table_info(syncref_checkpoint)")}
