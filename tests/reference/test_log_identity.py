"""A log's identity and its head mark (ADR-0039; DUR-1 across a data directory's files): a directory
whose pieces come from two logs, or whose log went back in time, is refused (:class:`DamagedLog`)
instead of served.

* **Log id.**  ``meta.log_id`` is made with the log and written into every snapshot's header; a
  snapshot (or head mark) naming another id is another log's, whatever its offset and hash say.
* **Head mark.**  ``DIR/syncref.head`` holds a record the log held durably (written after a COMMIT,
  at most every ``head_mark_s``, and at a clean shutdown); a log that ends before it -- an older copy
  of ``syncref.sqlite3`` restored, a cut file, a deleted database -- lost acknowledged records.
* **Migration.**  A log made before ids (no ``meta.log_id``, id-less snapshots, no mark) keeps
  working: its first writable open gives it an id; id-less snapshots are judged by the hash chain.

Expected texts and ids are written out here or read from the files the code wrote (the id in
``meta``), never computed by the check under test.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reference import snapshot
from reference.durability import DamagedLog, GroupCommitWriter, LogStore, restart, shutdown
from spec.auth import Claims
from spec.policy import DEFAULT_POLICY

WRITER = Claims("b" * 64, frozenset({"sync.append"}), ("*",))
DB_FILES = ("syncref.sqlite3", "syncref.sqlite3-wal", "syncref.sqlite3-shm")


def grow(path: Path, upto: int, salt: str, *, snap_at: tuple[int, ...] = ()) -> None:
    """Open (or create) the data directory at ``path``, restart it, append ``salt``-keyed events until
    the log holds ``upto`` records, write a snapshot (as the server writes it: with the log id) after
    each offset in ``snap_at``, and shut down cleanly.  The same salt on a new directory makes the
    same records (a fixed clock), so two logs can share a prefix exactly."""
    store = LogStore.open(path)
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    i = eng.committed
    while eng.committed < upto:
        i += 1
        eng.now += 1000
        eng.admin_call(WRITER, "append_sync_event", (f"t.{i % 3}", f"{salt}{i}", "{}", None, None))
        writer.append(eng.take_records())
        eng.advance_durable(writer.flush())
        if eng.committed in snap_at:
            snapshot.write(path / snapshot.SNAPSHOT_DIR,
                           snapshot.capture(eng.db, eng.committed, eng.head_hash, store.log_id))
    shutdown(eng, writer, store)


def log_id(path: Path) -> str:
    conn = sqlite3.connect(path / "syncref.sqlite3")
    try:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    finally:
        conn.close()
    return str(value)


def files(path: Path) -> dict[Path, bytes]:
    """Every file's bytes, but SQLite's -shm index and an empty -wal (which a connect may create)."""
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and not p.name.endswith("-shm")
            and not (p.name.endswith("-wal") and not p.stat().st_size)}


def verify_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.cli", "verify-log", "--data", str(path)],
                          capture_output=True, text=True, check=False, timeout=120)


def refused(path: Path, *parts: str, history: bool = False) -> str:
    """Both opens refuse ``path`` with a message holding every one of ``parts``; nothing is written;
    ``verify-log`` exits 1 saying the same.  Returns the message.  ``history``: another history at an
    offset the log holds, which only the writable open refuses; ``verify-log`` replays and reports it
    (a snapshot or the head mark whose chain head is not the replay's: ``mismatch``), exit 1."""
    before = files(path)
    texts = []
    for readonly in (False,) if history else (False, True):
        with pytest.raises(DamagedLog) as err:
            LogStore.open(path, readonly=readonly)
        texts.append(str(err.value))
        for part in parts:
            assert part in texts[-1], (part, texts[-1])
    assert texts[0] == texts[-1]
    assert files(path) == before  # nothing written
    done = verify_cli(path)
    assert done.returncode == 1, (done.returncode, done.stderr)
    if history:
        assert ": mismatch: chain head at" in done.stdout and "verify-log: FAILED" in done.stdout, done.stdout
    else:
        assert all(part in done.stderr for part in parts) and "does not verify" in done.stderr, done.stderr
    return texts[0]


def opens_from(path: Path) -> tuple[int, str]:
    """Restart ``path``: the snapshot offset it started from and the log id it has; then shut down."""
    store = LogStore.open(path)
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    assert store.recovery is not None and store.log_id is not None
    used, ident = store.recovery.snapshot_offset, store.log_id
    shutdown(eng, writer, store)
    return used, ident


# --- another log's snapshot -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["other history", "same prefix", "past the head"])
def test_another_logs_snapshot_is_refused_naming_both_ids(tmp_path: Path, case: str) -> None:
    """A snapshot copied from data directory A into directory B (or B's log restored beside A's
    snapshots).  Failed before: "other history" (B holds record 20 with another hash) was passed over
    with a warning, B served, and B's first snapshot pruned it; "same prefix" (A and B made the same
    first 20 records: the hash chain cannot tell them apart) was *used* to start B; "past the head" was
    refused, but as "cannot tell" whether B lost records.  Now each is refused as another log's, naming
    both ids, the file and the ways out."""
    a, b = tmp_path / "a", tmp_path / "b"
    at, b_head, b_salt = {"other history": (20, 50, "b"), "same prefix": (20, 50, "a"),
                          "past the head": (40, 30, "b")}[case]
    grow(a, at, "a", snap_at=(at,))
    grow(b, b_head, b_salt)
    name = snapshot.file_name(at)
    (b / snapshot.SNAPSHOT_DIR).mkdir()
    shutil.copy(a / snapshot.SNAPSHOT_DIR / name, b / snapshot.SNAPSHOT_DIR / name)
    theirs, mine = log_id(a), log_id(b)
    assert theirs != mine
    text = refused(b, f"snapshot {name} belongs to another log (log id {theirs})", f"(log id {mine})",
                   f"move snapshots/{name} aside", f"restore the log {theirs}")
    assert "cannot tell" not in text
    # the way out the message gives: with the stranger moved aside, B starts, from its own log
    (b / snapshot.SNAPSHOT_DIR / name).rename(tmp_path / name)
    assert opens_from(b) == (0, mine)


def test_a_log_restored_beside_another_directorys_head_mark_is_refused(tmp_path: Path) -> None:
    """No snapshot at all (snapshot_every is 50,000 records: most small directories have none): log B's
    database copied over directory A's.  Failed before: A served B's history, A's writes gone silently.
    Now A's head mark names A's id, and the open refuses."""
    a, b = tmp_path / "a", tmp_path / "b"
    grow(a, 20, "a")
    grow(b, 40, "b")
    theirs, mine = log_id(a), log_id(b)
    for name in DB_FILES:
        if (b / name).exists():
            shutil.copy(b / name, a / name)
    refused(a, f"head mark syncref.head belongs to another log (log id {theirs})", f"(log id {mine})",
            "remove syncref.head")


# --- a log that went back in time ------------------------------------------------------------------


def _restored_older(path: Path) -> None:
    """30 records, a copy of the database taken (a backup), 20 more records, then the copy put back."""
    grow(path, 30, "a")
    backup = path.parent / "backup"
    backup.mkdir()
    for name in DB_FILES:
        if (path / name).exists():
            shutil.copy(path / name, backup / name)
    grow(path, 50, "a")
    for name in DB_FILES:
        (path / name).unlink(missing_ok=True)
        if (backup / name).exists():
            shutil.copy(backup / name, path / name)


def test_a_log_restored_from_an_older_copy_is_refused(tmp_path: Path) -> None:
    """Failed before: with no snapshot past its head, the older copy opened and served 30 records --
    records 31-50, acknowledged, silently gone.  Now the head mark (record 50, written at the clean
    shutdown) is past the log's head: refused, naming both offsets and both ways out; removing the
    mark, as the message says, serves the shorter log knowingly."""
    data = tmp_path / "data"
    _restored_older(data)
    mine = log_id(data)
    text = refused(data, "head mark syncref.head says record 50 was durable", "ends at record 30",
                   "lost acknowledged records 31-50", f"log id {mine}", "restore the log from a backup that "
                   "reaches record 50", "remove syncref.head")
    assert "cannot tell" not in text
    (data / "syncref.head").unlink()
    assert opens_from(data) == (0, mine)
    store = LogStore.open(data, readonly=True)
    assert store.last()[0] == 30
    store.close()


def test_a_deleted_database_is_refused_even_without_snapshots(tmp_path: Path) -> None:
    """Failed before: with no snapshot, a deleted ``syncref.sqlite3`` (and its -wal) made the next start
    a new, empty log -- every acknowledged write gone.  Now the head mark says the log existed."""
    data = tmp_path / "data"
    grow(data, 12, "a")
    mine = log_id(data)
    for name in DB_FILES:
        (data / name).unlink(missing_ok=True)
    before = sorted(p.name for p in data.rglob("*"))
    for readonly in (False, True):
        with pytest.raises(DamagedLog, match=rf"head mark syncref\.head says log {mine} held record 12 durably"):
            LogStore.open(data, readonly=readonly)
    assert sorted(p.name for p in data.rglob("*")) == before  # no database created
    done = verify_cli(data)
    assert done.returncode == 1 and "syncref.head" in done.stderr, done.stderr


def test_a_copy_that_went_on_separately_is_refused_as_another_history(tmp_path: Path) -> None:
    """A data directory copied (both keep the id), each copy then written on its own; a snapshot of one
    put beside the other's log.  The id cannot tell copies apart; the chain can: record 30 differs.
    Failed before: passed over with a warning (and pruned by the next snapshot)."""
    a = tmp_path / "a"
    grow(a, 20, "a")
    b = Path(shutil.copytree(a, tmp_path / "b"))
    grow(a, 40, "x")
    grow(b, 40, "y", snap_at=(30,))
    name = snapshot.file_name(30)
    (a / snapshot.SNAPSHOT_DIR).mkdir()
    shutil.copy(b / snapshot.SNAPSHOT_DIR / name, a / snapshot.SNAPSHOT_DIR / name)
    assert log_id(a) == log_id(b)
    refused(a, f"snapshot {name} names record 30", "tell different histories", "a copy of this data directory",
            f"move snapshots/{name} aside", history=True)


# --- the bound of the head mark ---------------------------------------------------------------------


def test_the_head_mark_is_written_at_most_every_interval_and_at_a_clean_shutdown(tmp_path: Path) -> None:
    """No fsync per commit: 40 COMMITs within one interval write one mark (the first), and the clean
    shutdown writes the head.  The bound this gives, stated as a check: a cut to a record after the
    newest mark is NOT detected (what ADR-0039 documents), one before it is."""
    data = tmp_path / "data"
    store = LogStore.open(data)
    store.head_mark_s = 3600.0
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    for i in range(1, 41):
        eng.now += 1000
        eng.admin_call(WRITER, "append_sync_event", ("t.0", f"k{i}", "{}", None, None))
        writer.append(eng.take_records())
        eng.advance_durable(writer.flush())
    assert (store.marks, writer.batches) == (1, 40)
    assert json.loads((data / "syncref.head").read_text())["offset"] == 1
    writer.close()
    store.close()  # a crash: no clean shutdown, the mark stays at record 1
    cut = Path(shutil.copytree(data, tmp_path / "cut"))
    conn = sqlite3.connect(cut / "syncref.sqlite3")
    conn.execute('DELETE FROM commit_log WHERE "offset" > 5')
    conn.commit()
    conn.close()
    LogStore.open(cut).close()  # records 6-40 gone, undetected: they came after the newest mark
    grow(data, 40, "k")  # a clean shutdown marks the head
    assert json.loads((data / "syncref.head").read_text())["offset"] == 41
    conn = sqlite3.connect(data / "syncref.sqlite3")
    conn.execute('DELETE FROM commit_log WHERE "offset" > 40')
    conn.commit()
    conn.close()
    with pytest.raises(DamagedLog, match="ends at record 40"):
        LogStore.open(data)


# --- older data directories -------------------------------------------------------------------------


def _made_before_ids(path: Path, snap_at: int, upto: int) -> None:
    """A directory as a build before ADR-0039 leaves it: no meta.log_id, no head mark, id-less snapshots."""
    grow(path, upto, "a", snap_at=(snap_at,))
    conn = sqlite3.connect(path / "syncref.sqlite3")
    conn.execute("DELETE FROM meta WHERE key = 'log_id'")
    conn.commit()
    conn.close()
    (path / "syncref.head").unlink()
    snap = path / snapshot.SNAPSHOT_DIR / snapshot.file_name(snap_at)
    image = snapshot.read(snap)
    snap.unlink()
    snapshot.write(snap.parent, snapshot.Image(image.offset, image.head_hash, image.epoch_floor,
                                               image.version_floor, image.tables, image.logs))
    assert b'"log_id"' not in snap.read_bytes()


def test_a_log_made_before_ids_gets_one_and_keeps_its_bound_snapshots(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _made_before_ids(data, 20, 30)
    ro = LogStore.open(data, readonly=True)
    assert ro.log_id is None  # a read-only open writes nothing
    ro.close()
    used, ident = opens_from(data)
    assert used == 20  # the id-less snapshot, bound by the chain, is used
    assert log_id(data) == ident and opens_from(data) == (20, ident)  # the id stays
    store = LogStore.open(data)
    assert store.legacy_snapshots == frozenset({snapshot.file_name(20)})
    store.close()


def test_an_id_less_snapshot_of_another_history_is_refused(tmp_path: Path) -> None:
    """Failed before: passed over with a warning (and pruned later)."""
    a, b = tmp_path / "a", tmp_path / "b"
    _made_before_ids(a, 20, 20)
    grow(b, 30, "b")
    name = snapshot.file_name(20)
    (b / snapshot.SNAPSHOT_DIR).mkdir()
    shutil.copy(a / snapshot.SNAPSHOT_DIR / name, b / snapshot.SNAPSHOT_DIR / name)
    refused(b, f"snapshot {name} names record 20", "tell different histories", "cannot tell", "names no log id",
            history=True)


def test_a_log_made_before_ids_takes_the_id_its_bound_snapshot_names(tmp_path: Path) -> None:
    """A copy of the database taken before the upgrade, put back after the upgraded server wrote a
    snapshot (and a head mark) of the same records: both are bound by the chain, so the log takes
    their id instead of a new one (which would make its own snapshot look like another log's)."""
    data = tmp_path / "data"
    _made_before_ids(data, 20, 30)
    backup = tmp_path / "backup"
    shutil.copytree(data, backup)
    store = LogStore.open(data)  # the upgrade: the log gets an id
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    snapshot.write(data / snapshot.SNAPSHOT_DIR, snapshot.capture(eng.db, eng.committed, eng.head_hash,
                                                                  store.log_id))
    shutdown(eng, writer, store)
    ident = log_id(data)
    assert json.loads((data / "syncref.head").read_text())["log_id"] == ident
    for name in DB_FILES:
        (data / name).unlink(missing_ok=True)
        if (backup / name).exists():
            shutil.copy(backup / name, data / name)
    assert opens_from(data) == (30, ident)
    assert log_id(data) == ident


# --- prune ------------------------------------------------------------------------------------------


def test_prune_never_drops_a_snapshot_that_is_not_this_logs(tmp_path: Path) -> None:
    """Failed before: prune counted every file, so another log's snapshot (and an id-less one the open
    did not bind) older than the newest two was deleted -- the stranger silently gone."""
    directory = tmp_path / "snaps"
    from reference.db import Db

    def put(offset: int, ident: str | None) -> None:
        snapshot.write(directory, snapshot.capture(Db(), offset, f"h{offset}", ident))

    put(1, "other")
    put(2, None)  # id-less, not bound at open
    put(3, None)  # id-less, bound at open
    put(4, "mine")
    put(5, "mine")
    told: list[list[str]] = []
    done = threading.Event()
    snaps = snapshot.Snapshotter(directory, 1, 1, lambda _o: None, log_id="mine",
                                 legacy=frozenset({snapshot.file_name(3)}), on_strangers=told.append,
                                 on_done=lambda _p, _s: done.set())
    snaps.take(snapshot.capture(Db(), 6, "h6", "mine"))
    snaps.join()
    assert done.is_set()
    assert [o for o, _ in snapshot.listing(directory)] == [6, 2, 1]
    assert told == [[snapshot.file_name(2), snapshot.file_name(1)]]
    assert snapshot.header(directory / snapshot.file_name(6))["log_id"] == "mine"


def test_a_head_mark_of_a_copy_that_went_on_is_refused_and_verify_log_reports_it(tmp_path: Path) -> None:
    """The head mark's record at an offset the log holds, with another hash (a copy of the directory
    that went on separately; its mark put back here).  The writable open refuses; verify-log replays
    and reports the mark as ``mismatch`` (exit 1) -- and ``match`` on the intact directory."""
    a = tmp_path / "a"
    grow(a, 20, "a")
    b = Path(shutil.copytree(a, tmp_path / "b"))
    grow(a, 40, "x")
    grow(b, 35, "y")
    ok = subprocess.run([sys.executable, "-m", "adapters.cli", "verify-log", "--data", str(a), "--json"],
                        capture_output=True, text=True, check=False, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["head_mark"] == {
        "file": "syncref.head", "offset": 40, "status": "match", "reason": ""}, ok.stdout
    shutil.copy(b / "syncref.head", a / "syncref.head")
    text = refused(a, "head mark syncref.head names record 35", "tell different histories", "remove syncref.head",
                   history=True)
    assert "a copy of this data directory" in text
    done = verify_cli(a)
    assert "head mark syncref.head (offset 35): mismatch: chain head at 35" in done.stdout, done.stdout


def test_a_serving_writer_marks_the_durable_head_on_its_own_thread(tmp_path: Path) -> None:
    """The server's writer (a background thread) marks from a thread of its own every ``head_mark_s``:
    a burst of commits followed by silence is marked without any later COMMIT or a clean shutdown,
    so a crash after it loses at most the last interval's records from the check."""
    import time

    data = tmp_path / "data"
    store = LogStore.open(data)
    store.head_mark_s = 0.05
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    for i in range(1, 8):
        eng.now += 1000
        eng.admin_call(WRITER, "append_sync_event", ("t.0", f"k{i}", "{}", None, None))
    writer.append(eng.take_records())
    assert writer.flush() == 7
    deadline = time.monotonic() + 10
    while store.marks == 0 or json.loads((data / "syncref.head").read_text())["offset"] != 7:
        assert time.monotonic() < deadline, "the head was not marked"
        time.sleep(0.01)
    writer.close()
    store.close()  # no clean shutdown: the mark is the thread's
    with sqlite3.connect(data / "syncref.sqlite3") as conn:
        conn.execute('DELETE FROM commit_log WHERE "offset" > 6')
    conn.close()
    with pytest.raises(DamagedLog, match="says record 7 was durable"):
        LogStore.open(data)


def test_a_failed_head_mark_write_is_counted_told_and_leaves_the_older_mark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that refuses the mark's write: the commit is unaffected, the failure is counted and told
    (the server logs it), the older mark stays, and the next interval retries."""
    import reference.durability as durability

    data = tmp_path / "data"
    grow(data, 3, "a")  # mark at 3 (clean shutdown)
    store = LogStore.open(data)
    store.head_mark_s = 0.0
    told: list[OSError] = []
    store.on_mark_error = told.append
    real = durability.write_head_mark

    def full(directory: Path, mark: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durability, "write_head_mark", full)
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    eng.admin_call(WRITER, "append_sync_event", ("t.0", "late", "{}", None, None))
    writer.append(eng.take_records())
    assert writer.flush() == 4  # durable all the same
    assert store.mark_errors == 1 and [e.errno for e in told] == [28]
    assert json.loads((data / "syncref.head").read_text())["offset"] == 3  # the older mark
    monkeypatch.setattr(durability, "write_head_mark", real)
    assert writer.mark() and json.loads((data / "syncref.head").read_text())["offset"] == 4  # retried
    writer.close()
    store.close()


# --- verify-log beside a running server -------------------------------------------------------------


@pytest.mark.parametrize("piece", ["head mark", "snapshot"])
def test_verify_log_beside_a_running_server_does_not_fail_on_a_newer_mark_or_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: str) -> None:
    """``verify-log`` beside a server that keeps committing (the supported way: no lock, one read
    transaction).  The server rewrites the head mark every second and renames a snapshot in once its
    record is durable; whenever verify-log reads them, they name a record the log held durably by
    then.  Here the server moves on (3 records, then a new mark or snapshot at its new head) each
    time verify-log looks at the mark or the snapshot directory.  Failed before (review of ADR-0039):
    verify_log read both *inside* its read transaction, which had started at an older head, so the
    replay never reached them -- ``unreached``, verify-log FAILED (exit 1) on a healthy log."""
    import reference.replay as replay

    data = tmp_path / "data"
    grow(data, 10, "a")
    store = LogStore.open(data)
    store.head_mark_s = 0.0  # the server's mark follows each COMMIT here
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)

    def server_moves_on() -> None:
        for _ in range(3):
            eng.now += 1000
            eng.admin_call(WRITER, "append_sync_event", ("t.0", f"k{eng.committed}", "{}", None, None))
            writer.append(eng.take_records())
            eng.advance_durable(writer.flush())
        if piece == "snapshot":
            snapshot.write(data / snapshot.SNAPSHOT_DIR,
                           snapshot.capture(eng.db, eng.committed, eng.head_hash, store.log_id))

    if piece == "head mark":
        real_mark = replay.read_head_mark

        def mark_moved(directory: Path) -> object:
            server_moves_on()
            return real_mark(directory)

        monkeypatch.setattr(replay, "read_head_mark", mark_moved)
    else:
        real_listing = snapshot.listing

        def listing_moved(directory: Path) -> list[tuple[int, Path]]:
            server_moves_on()
            return real_listing(directory)

        monkeypatch.setattr(snapshot, "listing", listing_moved)
    try:
        report = replay.verify_log(data)
    finally:
        monkeypatch.undo()
        writer.close()
        store.close()
    checks = [report.head_mark] if piece == "head mark" else list(report.snapshots)
    assert checks and all(c is not None and c.status == "match" for c in checks), checks
    assert report.ok and report.records >= 13, report


def test_the_head_mark_rename_is_followed_by_a_directory_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mark's new name must survive a power cut like its contents: temp file fsynced, renamed over
    the old mark, then the data directory itself fsynced (else the first mark of a directory, or a
    newer one, may be lost with the name -- a weaker check).  Every fsync and rename is recorded, the
    fsynced descriptor identified by its inode.  Failed before (review of ADR-0039): the rename was
    the last step, no directory fsync."""
    import os
    import stat

    from reference.durability import HeadMark, write_head_mark

    data = tmp_path / "data"
    data.mkdir()
    real_fsync, real_replace = os.fsync, os.replace
    steps: list[tuple[str, object]] = []

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        steps.append(("fsync", (stat.S_ISDIR(st.st_mode), st.st_ino)))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        steps.append(("replace", Path(str(dst)).name))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_head_mark(data, HeadMark("a" * 32, 7, "b" * 64))
    monkeypatch.undo()
    head = data / "syncref.head"
    assert steps == [("fsync", (False, head.stat().st_ino)), ("replace", "syncref.head"),
                     ("fsync", (True, data.stat().st_ino))], steps
    written = json.loads(head.read_text())
    assert (written["log_id"], written["offset"], written["hash"]) == ("a" * 32, 7, "b" * 64)


def test_a_mark_write_in_flight_ends_before_close_releases_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mark thread may be inside a mark write (a slow fsync: a failing disk, when the writer has
    failed and the server closes the store without stopping that thread) when the store is closed.
    ``close`` must wait for it before releasing the directory lock: else the next process to open the
    directory writes its own mark through the same ``syncref.head.tmp`` while the old write renames
    it -- a mark written whole by neither, which the next start refuses as unparsable.  Here the write
    is held until ``close`` has returned (or 1 s has passed), then checks whether the directory lock
    is already free.  Failed before (review of ADR-0039): ``close`` returned at once, the lock was
    free while the old store's mark was still being written."""
    import fcntl

    import reference.durability as durability

    data = tmp_path / "data"
    grow(data, 3, "a")
    store = LogStore.open(data)
    digest = store.hash_at(3)
    assert digest is not None
    real = durability.write_head_mark
    entered, release = threading.Event(), threading.Event()
    lock_free_during_write: list[bool] = []

    def slow(directory: Path, mark: durability.HeadMark) -> None:
        entered.set()
        release.wait(10)
        with open(data / "syncref.lock", "a") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock_free_during_write.append(True)
            except BlockingIOError:
                lock_free_during_write.append(False)
        real(directory, mark)

    monkeypatch.setattr(durability, "write_head_mark", slow)
    marker = threading.Thread(target=store.mark_head, args=(3, digest))
    marker.start()
    assert entered.wait(10)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(1.0)  # before the fix it has returned by now; after it, it waits for the write
    release.set()
    marker.join(10)
    closer.join(10)
    assert not closer.is_alive() and not marker.is_alive()
    assert lock_free_during_write == [False]
    assert not store.mark_head(3, digest)  # closed: no mark is written any more


@pytest.mark.parametrize("field", ["offset", "hash", "log_id"])
def test_a_head_mark_the_disk_changed_is_told_as_a_damaged_mark_not_as_lost_records(tmp_path: Path,
                                                                                    field: str) -> None:
    """A mark whose bytes the disk changed but which still parses (one digit of its offset, one hex
    digit of its hash).  A snapshot has a checksum for that, and a corrupt one is passed over; the
    mark had none, so it was believed: an offset 12 -> 92 refused the start as "the log lost
    acknowledged records 13-92 ... restore the log from a backup" -- advice that loses the records
    written since that backup, for a log that lost nothing; a changed hash, as "another history".
    Now the mark carries a sha256 of its fields and a mismatch is a damaged mark, whose message
    sends the operator to the disk and to removing the mark, never to a backup.  Failed before
    (review of ADR-0039): [offset] refused with "lost acknowledged records", [hash] with "tell
    different histories", [log_id] with "belongs to another log"."""
    data = tmp_path / "data"
    grow(data, 12, "a")  # clean shutdown: the mark holds record 12
    head = data / "syncref.head"
    mark = json.loads(head.read_text())
    assert mark["offset"] == 12
    text = head.read_text()
    flip = {"offset": ('"offset":12', '"offset":92')}.get(field) or \
        (mark[field], ("0" if mark[field][0] != "0" else "1") + mark[field][1:])
    changed = text.replace(*flip)
    assert changed != text and json.loads(changed)  # still parses
    head.write_text(changed)
    with pytest.raises(DamagedLog) as err:
        LogStore.open(data)
    message = str(err.value)
    assert "syncref.head does not parse" in message and "checksum" in message, message
    assert all(wrong not in message for wrong in ("lost acknowledged records", "different histories",
                                                  "belongs to another log")), message
    head.write_text(text)  # the mark as written: the directory opens
    opens_from(data)


def test_a_head_mark_written_before_its_checksum_is_still_believed(tmp_path: Path) -> None:
    """Marks written by ADR-0039's first build carry no ``sha256``: they keep working -- one at the head
    opens, one past the head is refused as lost records, as before (a planted "no checksum: damaged"
    would refuse every directory that build left)."""
    data = tmp_path / "data"
    grow(data, 12, "a")
    head = data / "syncref.head"
    mark = json.loads(head.read_text())
    old = {"log_id": mark["log_id"], "offset": 12, "hash": mark["hash"]}
    head.write_text(json.dumps(old, separators=(",", ":")) + "\n")
    assert opens_from(data)[1] == mark["log_id"]  # the clean shutdown wrote a new mark, with its checksum
    assert "sha256" in json.loads(head.read_text())
    head.write_text(json.dumps({**old, "offset": 92}, separators=(",", ":")) + "\n")
    with pytest.raises(DamagedLog, match="lost acknowledged records"):
        LogStore.open(data)


def test_reading_the_marked_offset_never_waits_for_a_mark_write(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``LogStore.marked_offset`` is read on the server's event loop (``GET /metrics``, the ops page)
    while the mark thread may be inside a mark write whose fsync a failing disk holds for seconds: the
    read must not wait for it, or every scrape stalls the whole server.  Failed before (this review's
    first version of the property took the mark lock): the read waited for the held write."""
    import reference.durability as durability

    data = tmp_path / "data"
    grow(data, 3, "a")
    store = LogStore.open(data)
    digest = store.hash_at(3)
    assert digest is not None
    real = durability.write_head_mark
    entered, release = threading.Event(), threading.Event()

    def slow(directory: Path, mark: durability.HeadMark) -> None:
        entered.set()
        release.wait(10)
        real(directory, mark)

    monkeypatch.setattr(durability, "write_head_mark", slow)
    marker = threading.Thread(target=store.mark_head, args=(3, digest))
    marker.start()
    assert entered.wait(10)
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.append(store.marked_offset))
    reader.start()
    reader.join(2.0)
    waited = reader.is_alive()
    release.set()
    marker.join(10)
    reader.join(10)
    assert not waited and seen == [0]  # read at once: the write in flight has not landed yet
    assert store.marked_offset == 3
    store.close()


def test_verify_log_beside_a_running_server_does_not_fail_on_a_snapshot_pruned_after_the_listing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server prunes old snapshots after writing a new one; verify-log lists the directory, then
    reads each file.  A file pruned in between is no longer part of the directory: it is left out,
    not reported ``corrupt``.  Failed before (found with the review of ADR-0039; ADR-0011's code): the
    vanished file was ``corrupt`` (unreadable: No such file or directory), verify-log FAILED on a
    healthy log."""
    import reference.replay as replay

    data = tmp_path / "data"
    grow(data, 12, "a", snap_at=(5, 10))
    real_listing = snapshot.listing
    calls: list[int] = []

    def pruned_after_listing(directory: Path) -> list[tuple[int, Path]]:
        listed = real_listing(directory)
        calls.append(1)
        if len(calls) == 2:  # verify_log's own listing (the first is the open's check)
            listed[-1][1].unlink()  # the oldest, as prune drops it
        return listed

    monkeypatch.setattr(snapshot, "listing", pruned_after_listing)
    report = replay.verify_log(data)
    monkeypatch.undo()
    assert len(calls) == 2
    assert [(c.file, c.status) for c in report.snapshots] == [(snapshot.file_name(10), "match")], report.snapshots
    assert report.ok, report


@pytest.mark.parametrize(("failing", "told"), [
    ("file", "fsync of syncref.head.tmp failed: Input/output error"),
    ("directory", "fsync of the data directory failed after syncref.head was renamed into place: "
                  "Input/output error"),
])
def test_a_failed_mark_write_names_its_step_and_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, told: str) -> None:
    """The mark's write fails at one of its steps (EIO from fsync, injected on the temp file's or the
    directory's descriptor): the error told to the server's log names the step, as a snapshot's does
    (an operator must know whether the mark in place is the new one); a temp file that was never
    renamed is removed; after a failed directory fsync the new mark is in place and whole.  Failed
    before (review of ADR-0039): the bare "[Errno 5] Input/output error", and the temp file left."""
    import errno
    import os
    import stat

    data = tmp_path / "data"
    grow(data, 3, "a")  # a mark at 3
    store = LogStore.open(data)
    store.head_mark_s = 0.0
    errors: list[OSError] = []
    store.on_mark_error = errors.append
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) == (failing == "directory"):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    eng.admin_call(WRITER, "append_sync_event", ("t.0", "late", "{}", None, None))
    writer.append(eng.take_records())
    assert writer.flush() == 4  # the commit is unaffected (SQLite does not call os.fsync)
    monkeypatch.undo()
    assert store.mark_errors == 1 and [str(e) for e in errors] == [f"[Errno 5] {told}"], errors
    assert errors[0].errno == errno.EIO
    assert not (data / "syncref.head.tmp").exists()
    assert json.loads((data / "syncref.head").read_text())["offset"] == (4 if failing == "directory" else 3)
    writer.close()
    store.close()


# --- a clean shutdown whose final head mark fails ---------------------------------------------------


def test_a_clean_shutdown_whose_final_head_mark_fails_closes_without_the_clean_marker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean marker promises that the mark is the head (any cut is seen).  When the final mark
    cannot be written, the store closes WITHOUT the marker and says so (``UncleanClose``); the failure
    is counted and told like any mark's.  The next open is an unclean restart that refuses nothing and
    loses nothing: every record is there with its hash, plus the epoch-bumping recovery transaction.
    Failed before: ``close_clean`` set the marker beside the stale mark (record 4 of 5) and returned;
    the next open was clean."""
    import reference.durability as durability

    data = tmp_path / "data"
    grow(data, 3, "a")  # a mark at 3
    store = LogStore.open(data)
    store.head_mark_s = 3600.0  # the first COMMIT marks its record, the next one waits for the interval
    told: list[OSError] = []
    store.on_mark_error = told.append
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1_000_000, policy=DEFAULT_POLICY)
    for key in ("x", "y"):
        eng.admin_call(WRITER, "append_sync_event", ("t.0", key, "{}", None, None))
        writer.append(eng.take_records())
        eng.advance_durable(writer.flush())
    assert eng.committed == 5 and json.loads((data / "syncref.head").read_text())["offset"] == 4
    hashes = [store.hash_at(i) for i in range(1, 6)]

    def failing(directory: Path, mark: object) -> None:
        raise OSError(5, "fsync of syncref.head.tmp failed: Input/output error")

    monkeypatch.setattr(durability, "write_head_mark", failing)
    with pytest.raises(durability.UncleanClose, match=r"the head mark could not be written at record 5 "
                                                      r"\(\[Errno 5\] fsync of syncref\.head\.tmp failed"):
        shutdown(eng, writer, store)
    monkeypatch.undo()
    assert store.mark_errors == 1 and [e.errno for e in told] == [5]
    assert json.loads((data / "syncref.head").read_text())["offset"] == 4  # the stale mark
    ro = LogStore.open(data, readonly=True)
    assert not ro.clean_at_open  # no marker beside the stale mark
    ro.close()
    store = LogStore.open(data)  # closed: the lock is free; nothing healthy is refused
    assert not store.clean_at_open
    writer = GroupCommitWriter(store, background=False)
    again = restart(store, writer, now=2_000_000, policy=DEFAULT_POLICY)
    assert again.committed == again.durable == 6  # the recovery transaction, durable
    assert [store.hash_at(i) for i in range(1, 6)] == hashes  # nothing lost
    shutdown(again, writer, store)
    assert json.loads((data / "syncref.head").read_text())["offset"] == 6
    assert LogStore.open(data, readonly=True).clean_at_open
