"""Durability: the data directory's SQLite commit log and the group-commit writer (DESIGN §5).

The log *is* the state.  Every committed transaction's :class:`~reference.log.TxRecord` becomes
one row of ``commit_log`` in ``DIR/syncref.sqlite3`` (WAL, ``synchronous=FULL``), keyed by its
``tx_offset``; the persistent tables are rebuilt on restart by applying the recorded deltas in
order while the hash chain is checked (:meth:`Engine.recover`).  Nothing else about the tables is
stored, so there is no second copy to disagree with the log.

**Group commit.**  An fsync per transaction caps a single writer at the disk's flush rate.  The
:class:`GroupCommitWriter` queues records as the engine commits them and writes *everything
queued* in one SQLite transaction (one ``BEGIN IMMEDIATE ... COMMIT``, one WAL fsync).  While
that COMMIT is in flight the engine keeps committing in memory -- at most ``max_undurable``
transactions ahead (:meth:`Engine.can_commit`) -- and the next COMMIT takes the whole backlog.
The durable offset (``durable_offset`` and the ``on_durable`` callback) moves only after COMMIT
has returned; a failed write leaves it where it was, keeps the writer failed (no retry: after a
failed fsync the page cache cannot be trusted) and surfaces as :class:`DurabilityError`.  The
writer runs on a background thread, or without one when the caller drives :meth:`flush`.

**Clean shutdown.**  ``meta.clean_shutdown`` is set by :meth:`LogStore.close_clean` -- only once
the log holds every transaction the engine committed -- and cleared, durably, by the next
:meth:`LogStore.open` before anything else is written.  Opening a log without the marker means
the previous process may have shown clients transactions that never reached disk, so
:func:`restart` lets :meth:`Engine.recover` commit the epoch-bumping recovery transaction
(ADR-0001, decision 9) and makes it durable before returning the engine: nobody is served
before it is on disk.  A brand-new data directory is clean (there is nothing to lose).

**Policy.**  Re-executing a reducer needs the stream policy it ran under (payload limits,
retention), so the data directory pins it: :func:`restart` stores the policy in ``meta`` the
first time and refuses a different one later; ``syncref verify-log`` replays under it.

**Identity and head mark** (ADR-0039).  A log gets a random id (``meta.log_id``) when it is made;
every snapshot names it.  ``DIR/syncref.head`` records, outside SQLite, a record the log held
durably (rewritten about once a second by the writer's own thread, and at a clean shutdown).
:meth:`LogStore.open` refuses a directory whose snapshots or head mark name another log, are past
the log's head, or name another hash at a record the log holds (:func:`check_evidence`).

One process owns a data directory at a time (an ``flock`` on ``DIR/syncref.lock``, released by
the kernel even on SIGKILL); read-only opens (``verify-log``) take no lock and change nothing.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import gc
import hashlib
import itertools
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from reference import snapshot
from reference.engine import Engine
from reference.log import (
    GENESIS,
    RowChange,
    TxRecord,
    claims_from_json,
    claims_json,
    delta_text,
    row_from_json,
    row_maker,
)
from spec.auth import Claims
from spec.policy import DEFAULT_POLICY, Policy, StreamClass
from spec.values import Row

DB_FILE = "syncref.sqlite3"
LOCK_FILE = "syncref.lock"
HEAD_FILE = "syncref.head"  # the head mark: the log's durable head as last recorded outside SQLite (ADR-0039)
HEAD_MARK_S = 1.0  # the head mark is rewritten at most this often while records commit (and at a clean shutdown)
FORMAT = "2"  # 2: the schema-2 row shapes of ADR-0003 (a format-1 log holds schema-1 rows)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commit_log (
    "offset" INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    caller_json TEXT NOT NULL,
    args_json TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    changes_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = '"offset", kind, name, caller_json, args_json, timestamp, changes_json, prev_hash, hash'
_RESTART_BATCH = 1024  # records restart reads at a time (LogStore.record_batches), as verify-log does
CHECKPOINT_BYTES = 4 << 20  # the WAL (estimated) the writer lets grow before checkpointing it: SQLite's default
CHECKPOINT_COMMIT_BYTES = 8192  # per COMMIT in that estimate: the b-tree pages besides the rows' own
# rows per multi-row INSERT statement (write_batch).  8, not more: each row count is its own cached
# prepared statement holding its last bound texts, and 64 of them (the first choice) grew the
# server's RSS by ~48 B per event over the bench's 100,000 (336 B against 288; 291 with 8), for no
# measured gain in throughput; 8 still makes a closed loop's batch (the bench's ~8 clients) one step
INSERT_ROWS = 8


@functools.lru_cache(maxsize=INSERT_ROWS)
def _insert_rows(n: int) -> str:
    """The ``INSERT`` of ``n`` commit-log rows in one statement (one ``sqlite3_step``)."""
    return f"INSERT INTO commit_log ({_COLUMNS}) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)


class DurabilityError(RuntimeError):
    """The writer could not make records durable; it has stopped and the durable offset is frozen."""


class UncleanClose(RuntimeError):
    """:meth:`LogStore.close_clean` closed the store WITHOUT the clean-shutdown marker: the final head
    mark could not be written, and the marker promises that the mark is the head (ADR-0039).  The log
    is whole; the next open is an unclean restart (its recovery transaction bumps every epoch)."""


class LogCorruption(ValueError):
    """A stored commit-log row cannot be decoded."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(f"commit log row at offset {offset} is corrupt: {message}")
        self.offset = offset


class DamagedLog(RuntimeError):
    """The database is a syncref commit log with one of its two tables gone: ``meta`` (the format
    marker, the policy) without ``commit_log``, or records in ``commit_log`` without ``meta``.
    Neither a fresh directory nor a crashed first start leaves that (``commit_log`` is created
    first, then ``meta``, then the format marker, all before any record), so the table was dropped
    or lost.  Raised by :meth:`LogStore.open` before anything is written: a writable open must not
    re-create an empty ``commit_log`` and recover over it as if the log had never held anything."""


def new_log_id() -> str:
    """A fresh log id: 128 random bits, hex (ADR-0039)."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class HeadMark:
    """``DIR/syncref.head``: a record the log ``log_id`` held durably (its offset and hash), written
    outside SQLite after the COMMIT that made it durable (ADR-0039).  A log whose head is before it
    lost acknowledged records; one that holds another hash there is another history."""

    log_id: str
    offset: int
    hash: str


def read_head_mark(directory: Path) -> HeadMark | None:
    """The data directory's head mark (None: there is none); :class:`DamagedLog` if it does not parse
    (it is only ever written whole: a temp file fsynced, then renamed into place)."""
    path = directory / HEAD_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        d = json.loads(data)
        if not isinstance(d, dict) or not isinstance(d.get("log_id"), str) or type(d.get("offset")) is not int \
                or d["offset"] < 1 or not isinstance(d.get("hash"), str):
            raise ValueError("not a head mark")
        mark = HeadMark(d["log_id"], d["offset"], d["hash"])
        # a mark written before its checksum (ADR-0039 before its review) has none: believed as it is
        if "sha256" in d and d["sha256"] != _mark_sum(mark):
            raise ValueError("checksum mismatch: its fields are not the ones it was written with")
        return mark
    except ValueError as exc:
        raise DamagedLog(f"{directory} is damaged: its head mark {path} does not parse ({exc}); it is only ever "
                         "written whole, so the disk changed it: check the disk, then remove "
                         f"{HEAD_FILE} to start without the check it makes (ADR-0039)") from None


def _mark_sum(mark: HeadMark) -> str:
    """The head mark's checksum: the sha256 of its three fields' JSON (a snapshot has one too).  A mark
    the disk changed but that still parses -- an offset past the head, another hash -- would be
    believed, and told as lost records or another history (restore a backup: a real loss); with the
    checksum it is told as what it is, a damaged mark (review of ADR-0039)."""
    fields = {"log_id": mark.log_id, "offset": mark.offset, "hash": mark.hash}
    return hashlib.sha256(_dumps(fields).encode()).hexdigest()


def write_head_mark(directory: Path, mark: HeadMark) -> None:
    """Replace the head mark: a temp file written and fsynced, renamed over the old one, then the
    directory fsynced, so the new name survives a power cut as its contents do (without it the name
    could still be the previous mark -- or none, for a directory's first mark: a weaker check).  An
    ``OSError`` names the step that failed (as a snapshot's does; :meth:`LogStore.mark_head` counts
    it); a temp file that failed is removed, never renamed; after a failed directory fsync the
    renamed mark is whole (its contents were fsynced first)."""
    tmp = directory / (HEAD_FILE + ".tmp")
    step = f"creating {tmp.name}"
    try:
        with open(tmp, "wb") as f:
            step = f"writing {tmp.name}"
            f.write((_dumps({"log_id": mark.log_id, "offset": mark.offset, "hash": mark.hash,
                             "sha256": _mark_sum(mark)}) + "\n").encode())
            f.flush()
            step = f"fsync of {tmp.name}"
            os.fsync(f.fileno())
            step = f"closing {tmp.name}"
        step = f"renaming {tmp.name}"
        os.replace(tmp, directory / HEAD_FILE)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{step} failed: {exc.strerror or exc}") from exc
    try:
        snapshot.fsync_dir(directory)
    except OSError as exc:
        raise OSError(exc.errno, f"fsync of the data directory failed after {HEAD_FILE} was renamed into place: "
                                 f"{exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the open's checks (:func:`check_tables`) found: the log's id in ``meta`` (None: a log
    made before ids, or no log yet); ``adopt``, the one id the directory's snapshots and head mark
    name while bound to the log by the hash chain (what an id-less log takes on its first writable
    open); ``legacy``, the id-less snapshot files bound to it by the chain (``prune`` may drop them)."""

    log_id: str | None = None
    adopt: str | None = None
    legacy: frozenset[str] = frozenset()


def check_tables(conn: sqlite3.Connection, path: Path, readonly: bool = False) -> Evidence:
    """:class:`DamagedLog` if the database at ``path`` holds one of the log's tables without the other
    (:class:`DamagedLog` says when that is damage); a database with both, or neither (a new or
    empty file, another program's database), passes.  Then the directory's snapshots and head mark
    are checked against the log (:func:`check_evidence`; ``readonly``: without its step 3, which
    ``verify-log`` makes during its replay)."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" in tables and "commit_log" not in tables:
        raise DamagedLog(f"{path} is damaged: it has syncref's meta table but no commit_log table (the records "
                         "are gone)")
    if "commit_log" in tables and "meta" not in tables \
            and conn.execute("SELECT 1 FROM commit_log LIMIT 1").fetchone() is not None:
        raise DamagedLog(f"{path} is damaged: its commit_log table holds records but there is no meta table (the "
                         "format marker and the policy are gone)")
    if not _has_format(conn, tables) and ("commit_log" not in tables
                                          or conn.execute("SELECT 1 FROM commit_log LIMIT 1").fetchone() is None):
        check_snapshots_have_a_log(path, "an empty log")
    log_id = None
    if "meta" in tables:
        row = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        log_id = None if row is None else str(row[0])
    if "commit_log" in tables:
        return check_evidence(conn, path, log_id, histories=not readonly)
    return Evidence(log_id)


def _has_format(conn: sqlite3.Connection, tables: set[str]) -> bool:
    return "meta" in tables and conn.execute("SELECT 1 FROM meta WHERE key = 'format'").fetchone() is not None


def check_snapshots_have_a_log(path: Path, what: str) -> None:
    """:class:`DamagedLog` if the data directory of ``path`` holds a snapshot file (``snap-N.json``,
    N > 0) or a head mark while its log is ``what`` (missing, or never written): both are written only
    once their record is durable in the log (ADR-0011, ADR-0039), so the log they were taken from is
    lost -- not a new directory, which a fresh log over it would pretend (and its first snapshot would
    prune the old ones, the last copy of that state)."""
    names = [p.name for offset, p in snapshot.listing(path.parent / snapshot.SNAPSHOT_DIR) if offset > 0]
    mark = read_head_mark(path.parent)
    if names:
        also = f", and a head mark {HEAD_FILE} (record {mark.offset})" if mark is not None else ""
        raise DamagedLog(f"{path.parent} is damaged: it holds snapshots of a log ({', '.join(names)}){also} but "
                         f"{what} at {path}: the log they were taken from is lost (move the snapshots away"
                         f"{' and remove ' + HEAD_FILE if mark is not None else ''} only to start a new, empty log)")
    if mark is not None:
        raise DamagedLog(f"{path.parent} is damaged: its head mark {HEAD_FILE} says log {mark.log_id} held record "
                         f"{mark.offset} durably, but {what} at {path}: the log is lost (restore it from a backup; "
                         f"remove {HEAD_FILE} only to start a new, empty log)")


def _trusted(path: Path, head: dict[str, Any] | None) -> bool:
    """A header that disagrees with the log is believed only if the file's checksum holds (else the
    file is corrupt, and passed over as before)."""
    return head is not None and snapshot.intact(path)


def _header_at(offset: int, path: Path) -> dict[str, Any] | None:
    """The snapshot's header if it parses, names a well-formed log id (or none) and the offset of its
    file name; else None (a corrupt or misnamed file: restart passes it over, naming why)."""
    try:
        head = snapshot.header(path)
        snapshot.header_log_id(head)
    except (snapshot.SnapshotError, ValueError):
        return None
    return head if head.get("offset") == offset and isinstance(head.get("head_hash"), str) else None


def check_evidence(conn: sqlite3.Connection, path: Path, log_id: str | None, histories: bool = True) -> Evidence:
    """:class:`DamagedLog` if the directory's snapshots or head mark contradict the log at ``path``
    (ADR-0037, ADR-0039), in this order:

    1. **another log's**: a snapshot (checksum intact) or the head mark names a log id other than
       ``log_id`` -- two data directories mixed;
    2. **records lost**: a snapshot file (by its name: ADR-0037) or the head mark is past the log's
       last record -- both are written only once their record is durable;
    3. **another history**: a snapshot (checksum intact) or the head mark at an offset the log holds
       names another hash there than the log's (a copy of the directory that went on separately
       keeps the id; or the log was rewritten).

    A log without an id (made before ids) and id-less snapshots are judged by 2 and 3 alone.
    Without ``histories`` (a read-only open: ``verify-log``) step 3 is left to the replay, which
    reports each snapshot's and the head mark's chain head against the re-executed one and so
    still shows where the log itself differs (a ``MISMATCH``) instead of stopping at the open.
    The snapshot files and the mark are read before the log's head, so a reader beside a running
    server never sees a mark or snapshot newer than the head it reads.  Per snapshot: one header
    line and one primary-key lookup; the whole file only when it contradicts the log."""
    directory = path.parent
    mark = read_head_mark(directory)
    snaps = [(offset, p, _header_at(offset, p))
             for offset, p in snapshot.listing(directory / snapshot.SNAPSHOT_DIR) if offset > 0]
    top = conn.execute('SELECT max("offset") FROM commit_log').fetchone()[0]
    head = 0 if top is None else int(top)
    if log_id is not None:
        strangers = []
        for _offset, p, h in snaps:
            theirs = None if h is None else snapshot.header_log_id(h)
            if theirs is not None and theirs != log_id and _trusted(p, h):
                strangers.append(("snapshot", p.name, f"move {p.parent.name}/{p.name} aside", theirs))
        if mark is not None and mark.log_id != log_id:
            strangers.append(("head mark", HEAD_FILE, f"remove {HEAD_FILE}", mark.log_id))
        if strangers:
            raise DamagedLog(_foreign(path, strangers, log_id))
    past = [(offset, p, h) for offset, p, h in snaps if offset > head]
    if past or (mark is not None and mark.offset > head):
        raise DamagedLog(_lost(path, head, past, mark if mark is not None and mark.offset > head else None, log_id))
    ids: set[str] = set()
    legacy: set[str] = set()
    pieces: list[tuple[int, str, str | None, str, Path | None]] = []
    if mark is not None and histories:
        pieces.append((mark.offset, mark.hash, mark.log_id, "head mark", None))
    for offset, p, h in snaps:
        if h is not None and histories:
            pieces.append((offset, str(h["head_hash"]), snapshot.header_log_id(h), "snapshot", p))
    for offset, digest, theirs, noun, file in pieces:
        stored = conn.execute('SELECT hash FROM commit_log WHERE "offset" = ?', (offset,)).fetchone()
        if stored is not None and stored[0] == digest:
            if theirs is None and file is not None:
                legacy.add(file.name)
            elif theirs is not None and log_id is None and (file is None or snapshot.intact(file)):
                ids.add(theirs)
            continue
        if file is not None and not snapshot.intact(file):
            continue  # corrupt: passed over by restart, as before
        name, away = (HEAD_FILE, f"remove {HEAD_FILE}") if file is None else \
            (file.name, f"move {file.parent.name}/{file.name} aside")
        raise DamagedLog(_diverged(path, noun, name, away, offset, digest,
                                   None if stored is None else str(stored[0]), theirs, log_id))
    if log_id is None and len(ids) > 1:
        raise DamagedLog(f"{directory} is damaged: its snapshots and head mark name more than one log "
                         f"({', '.join(sorted(ids))}) while bound to the log at {path}, which has no log id yet: "
                         "copies of one data directory mixed; move aside the ones that are not this directory's")
    return Evidence(log_id, next(iter(ids)) if log_id is None and ids else None, frozenset(legacy))


_HOW = ("records are kept in a snapshot or the head mark only once they are durable in the log, so the log "
        "lost acknowledged records")
_CAUSES = f"cut short, a deleted -wal file, an older copy of {DB_FILE} restored"


def _foreign(path: Path, strangers: list[tuple[str, str, str, str]], mine: str) -> str:
    """The message for files of another log: the first named in full, the others after it."""
    noun, name, _, theirs = strangers[0]
    also = "".join(f"; so does {n} {nm} (log id {t})" for n, nm, _, t in strangers[1:])
    aways = " and ".join(a for _, _, a, _ in strangers)
    which = f"the {noun} is the stranger" if len(strangers) == 1 else "they are the strangers"
    return (f"{path.parent} is damaged: {noun} {name} belongs to another log (log id {theirs}) than the log at "
            f"{path} (log id {mine}){also}: the data directory mixes two logs -- files copied in from another data "
            f"directory, or another directory's {DB_FILE} restored here; if {which}, {aways}; "
            f"if the log is, restore the log {theirs} in its place (syncref verify-log --data DIR --json prints a "
            "directory's log_id)")


def _lost(path: Path, head: int, past: list[tuple[int, Path, dict[str, Any] | None]], mark: HeadMark | None,
          log_id: str | None) -> str:
    parts, aside = [], []
    top = max([offset for offset, _, _ in past] + ([mark.offset] if mark is not None else []))
    if past:
        offset, newest, _ = past[0]  # listing: newest first
        more = f" (and {', '.join(p.name for _, p, _ in past[1:])})" if len(past) > 1 else ""
        parts.append(f"snapshot {newest.name}{more} holds the state after record {offset}")
        aside.append(f"move {newest.parent.name}/{newest.name}{' and the others past it' if more else ''} aside")
    if mark is not None:
        parts.append(f"its head mark {HEAD_FILE} says record {mark.offset} was durable")
        aside.append(f"remove {HEAD_FILE}")
    # whose records: known when every piece past the head names this log (a snapshot's id only if intact)
    known = log_id is not None and all(h is not None and snapshot.header_log_id(h) == log_id and snapshot.intact(p)
                                       for _, p, h in past)
    if known:
        whose = f"{_HOW} {head + 1}-{top} ({_CAUSES}) -- they were this log's: they name its log id {log_id}"
    else:
        why = ("the log has no log id yet (it was made before log ids)" if log_id is None else
               f"snapshot {past[0][1].name} names no log id it can be trusted with, only the hash of record "
               f"{past[0][0]}")
        whose = (f"{_HOW.replace('so the log lost', 'so the log probably lost')} {head + 1}-{top} ({_CAUSES}) -- "
                 f"syncref cannot tell that from files of another log, since {why}")
    return (f"{path.parent} is damaged: {' and '.join(parts)} but the log at {path} ends at record {head}; {whose}; "
            f"restore the log from a backup that reaches record {top}, or {' and '.join(aside)} to start from the "
            "shorter log and accept the loss knowingly")


def _diverged(path: Path, noun: str, name: str, away: str, offset: int, digest: str, stored: str | None,
              theirs: str | None, mine: str | None) -> str:
    held = "no record" if stored is None else f"hash {stored[:16]}..."
    same = theirs is not None and theirs == mine
    why = ("a copy of this data directory that went on separately (a copy keeps the log id) or a rewritten log"
           if same else "another log's, or this log rewritten -- syncref cannot tell which, since "
           + ("the log has no id yet" if mine is None else "it names no log id"))
    return (f"{path.parent} is damaged: {noun} {name} names record {offset} with hash {digest[:16]}... but the log "
            f"at {path} holds {held} there: the two tell different histories ({why}); if the {noun} is the "
            f"stranger, {away}; if the log is, restore the log it belongs with from a backup")


class RecoveryInterrupted(Exception):
    """:func:`restart` was told to stop (its ``stop()`` said so) after applying ``applied`` of the
    ``total`` records it had to apply; it wrote nothing, and put back the clean marker its store's
    open cleared."""

    def __init__(self, applied: int, total: int) -> None:
        super().__init__(f"the recovery was interrupted after {applied:,} of {total:,} records; nothing was written")
        self.applied = applied
        self.total = total


@dataclass(frozen=True, slots=True)
class StorageFault:
    """What a failed commit-log write was, in an operator's words: ``kind`` is ``"full"`` (no space
    left) or ``"io"`` (the device reported an I/O error); ``what`` names the failed
    operation; ``action`` says what to do.  :func:`storage_fault` builds it from an exception."""

    kind: Literal["full", "io"]
    what: str
    action: str


_IO_OPS = {"SQLITE_IOERR_FSYNC": "fsync of the commit log", "SQLITE_IOERR_DIR_FSYNC": "fsync of the data directory",
           "SQLITE_IOERR_WRITE": "a write to the commit log", "SQLITE_IOERR_SHORT_READ": "a read of the commit log",
           "SQLITE_IOERR_READ": "a read of the commit log",
           "SQLITE_IOERR_CORRUPTFS": "a read of the commit log",  # SQLite's code for a read failing with EIO
           "SQLITE_IOERR_TRUNCATE": "truncating the commit log"}
_FULL_ACTION = "free space and start again"
_IO_ACTION = ("check the disk (dmesg, SMART); start again once it is healthy: the restart recovers, and "
              "syncref verify-log --data DIR checks the log")


def storage_fault(exc: BaseException | None) -> StorageFault | None:
    """The storage fault behind ``exc`` (searched through its causes), or None when there is none:
    SQLite's ``SQLITE_FULL``/``SQLITE_IOERR_*`` (Python 3.11 names the extended code) or an
    ``OSError`` with ``ENOSPC``/``EIO`` (a snapshot write, the recovery)."""
    seen = exc
    while seen is not None:
        name = getattr(seen, "sqlite_errorname", None)
        if (isinstance(name, str) and name.startswith("SQLITE_FULL")) or "disk is full" in str(seen) or (
                isinstance(seen, OSError) and seen.errno == errno.ENOSPC):
            return StorageFault("full", "the disk is full", _FULL_ACTION)
        if isinstance(name, str) and name.startswith("SQLITE_IOERR"):
            op = _IO_OPS.get(name, "a commit-log operation")
            return StorageFault("io", f"{op} failed with an I/O error ({name})", _IO_ACTION)
        if isinstance(seen, OSError) and seen.errno == errno.EIO:
            return StorageFault("io", f"an I/O error ({seen.strerror or 'EIO'})", _IO_ACTION)
        seen = seen.__cause__ or seen.__context__
    return None


def writer_failure_line(exc: BaseException) -> str:
    """The one line ``syncref serve`` prints when the commit-log writer failed while serving: which
    operation failed, that nothing acknowledged is lost, and what to do."""
    fault = storage_fault(exc)
    what, action = (fault.what, fault.action) if fault is not None else (
        f"{exc!r:.200}", "start again: the restart recovers, and syncref verify-log --data DIR checks the log")
    return (f"the commit-log writer failed, stopping: {what}; nothing acknowledged is lost (the calls waiting "
            f"on the failed write got errors, not acknowledgements); {action}")


# --- record <-> row ----------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _utf8_len(text: str) -> int:
    """The UTF-8 size of ``text``, what SQLite stores: its length when it is ASCII (``isascii`` is
    a flag lookup on CPython's compact strings, no scan), else the encoded length (up to 4 bytes a
    character: a WAL estimate counting characters let non-ASCII payloads grow the WAL to ~3x)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def args_json(args: tuple[Any, ...]) -> list[Any]:
    return [list(a) if isinstance(a, tuple) else a for a in args]


def args_from_json(values: list[Any]) -> tuple[Any, ...]:
    """Reducer arguments are flat: an array argument (``Vec<..>``) is the only list, and a tuple."""
    if list not in map(type, values):  # most calls have no array argument (JSON gives exact lists)
        return tuple(values)
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


def changes_text(changes: tuple[RowChange, ...]) -> str:
    """The stored form of a delta: the JSON of :func:`reference.log.changes_json` (tuples are arrays)."""
    return delta_text(changes)


@functools.lru_cache(maxsize=1024)
def _caller_text(caller: Claims | None) -> str:
    return _dumps(claims_json(caller))


def record_row(rec: TxRecord) -> tuple[Any, ...]:
    """The ``commit_log`` row of a record.  The delta's and the arguments' JSON are the texts
    :func:`make_record` already wrote for the hash (the same text: no objects, so no key order),
    when the record carries them; a caller's claims are written once per ``Claims`` value."""
    return (rec.offset, rec.kind, rec.name, _caller_text(rec.caller), rec.args_json or _dumps(args_json(rec.args)),
            rec.timestamp, rec.delta_json or delta_text(rec.changes), rec.prev_hash, rec.hash)


@functools.lru_cache(maxsize=1024)
def _claims_of(text: str) -> Claims | None:
    return claims_from_json(json.loads(text))


# the text last asked for and its claims: one tuple, replaced whole (threads reading logs at once
# see a pair that belongs together)
_last_claims: tuple[str | None, Claims | None] = (None, None)


def _claims(text: str) -> Claims | None:
    """A caller's claims from their stored JSON (every call on a connection stores the same text;
    ``Claims`` is frozen, so one value serves them all).  Consecutive records of a log mostly share
    their caller: the text last asked for is compared first (equal texts compare without hashing;
    each row read is a new string, whose hash the cache below would compute in full)."""
    global _last_claims
    last = _last_claims
    if text == last[0]:
        return last[1]
    claims = _claims_of(text)
    _last_claims = (text, claims)
    return claims


_scan_json: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _json_array(text: str) -> Any:
    """``json.loads(text)``, for the texts this module writes (no surrounding whitespace) without
    ``json.loads``'s layers; anything else -- whitespace, trailing data, an error -- is left to
    ``json.loads`` itself, so the value or the error is the same."""
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError, TypeError, RecursionError):
        end = -1
    return value if end == len(text) else json.loads(text)


def record_from_row(row: Sequence[Any], rows: bool = True) -> TxRecord:
    """The record of a ``commit_log`` row; ``delta_json`` keeps the stored delta text, which
    :func:`reference.log.record_hash` hashes as is (it is the text the record's hash was made over).
    ``rows=False`` leaves the delta undecoded (``changes`` empty, the text in ``delta_json``): for
    replay, which compares delta texts and decodes only to explain a difference
    (:func:`decode_changes`).  The arguments are always decoded: the chain hash is over their
    canonical encoding, whatever text was stored."""
    offset = row[0]
    try:
        kind, name, caller_text, args_text, timestamp, changes_text, prev_hash, digest = row[1:]
        args = _json_array(args_text)
        if not isinstance(args, list):
            raise ValueError("args must be a JSON array")
        if not rows:  # replay: the stored texts, the delta undecoded
            return TxRecord(offset, kind, name, _claims(caller_text), args_from_json(args), timestamp, (), prev_hash,
                            digest, changes_text)
        return TxRecord(offset, kind, name, _claims(caller_text), args_from_json(args), timestamp,
                        decode_changes(offset, changes_text), prev_hash, digest, changes_text)
    except LogCorruption:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise LogCorruption(offset, f"{type(exc).__name__}: {exc}") from exc


def _array_rows(make: Any, arrays: tuple[int, ...], rows: list[Any]) -> tuple[Row, ...]:
    """``row_from_json`` of each row of a table with array columns (``sync_stream``: one deleted and
    one inserted per append), without its per-row lookups: each list the decoder made is its own, so
    its arrays become tuples in place (anything else is copied to a list first, as ``row_from_json``
    copies it)."""
    out = []
    for r in rows:
        if type(r) is not list:
            r = list(r)
        for i in arrays:
            v = r[i]
            if type(v) is list:
                r[i] = tuple(v)
        out.append(make(*r))
    return tuple(out)


def decode_changes(offset: int, text: str) -> tuple[RowChange, ...]:
    """A stored delta's rows; :class:`LogCorruption` (naming ``offset``) if they do not decode.

    The text is parsed by :func:`_json_array` (``json.loads``'s value or error, without its layers);
    a table's rows without an array column are built by calling the row type on each list of values
    (what :func:`~reference.log.row_from_json` does for them), the table's type looked up once and
    only if it has rows, as ``row_from_json`` would look it up."""
    try:
        changes = _json_array(text)
        if not isinstance(changes, list):
            raise ValueError("changes must be a JSON array")
        out = []
        for table, deletes, inserts in changes:
            if type(deletes) is list and type(inserts) is list and (deletes or inserts):  # else as before
                make, arrays = row_maker(table)
                if not arrays:
                    out.append(RowChange(table, tuple([make(*r) for r in deletes]),
                                         tuple([make(*r) for r in inserts])))
                    continue
                out.append(RowChange(table, _array_rows(make, arrays, deletes), _array_rows(make, arrays, inserts)))
                continue
            out.append(RowChange(table, tuple([row_from_json(table, r) for r in deletes]),
                                 tuple([row_from_json(table, r) for r in inserts])))
        return tuple(out)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise LogCorruption(offset, f"{type(exc).__name__}: {exc}") from exc


_RETENTION_KNOBS = ("retain_offline_presence_us", "retain_terminal_assignment_us", "retain_sent_outbox_us",
                    "retain_failed_outbox_us")


def policy_json(p: Policy) -> dict[str, Any]:
    return {"classes": [[prefix, asdict(c)] for prefix, c in p.classes], "default_class": asdict(p.default_class),
            "presence_min_ttl_ms": p.presence_min_ttl_ms, "presence_max_ttl_ms": p.presence_max_ttl_ms,
            "bridge_kinds": sorted(p.bridge_kinds), "bridge_max_attempts": p.bridge_max_attempts,
            "bridge_max_retry_after_ms": p.bridge_max_retry_after_ms, "max_error_text": p.max_error_text,
            **{k: getattr(p, k) for k in _RETENTION_KNOBS}}


def policy_from_json(d: dict[str, Any]) -> Policy:
    return Policy(classes=tuple((prefix, StreamClass(**c)) for prefix, c in d["classes"]),
                  default_class=StreamClass(**d["default_class"]),
                  presence_min_ttl_ms=d["presence_min_ttl_ms"], presence_max_ttl_ms=d["presence_max_ttl_ms"],
                  bridge_kinds=frozenset(d["bridge_kinds"]), bridge_max_attempts=d["bridge_max_attempts"],
                  bridge_max_retry_after_ms=d["bridge_max_retry_after_ms"], max_error_text=d["max_error_text"],
                  **{k: d[k] for k in _RETENTION_KNOBS})


# --- the store ---------------------------------------------------------------------------------


class LogStore:
    """The data directory's SQLite database: ``commit_log`` and ``meta``.  Not thread-safe by itself;
    the :class:`GroupCommitWriter` is the only writer while it runs."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clean_at_open: bool, readonly: bool,
                 lock: TextIO | None, log_id: str | None = None, legacy: frozenset[str] = frozenset()) -> None:
        self._conn = conn
        self.log_id = log_id  # meta.log_id (ADR-0039); None only read-only, for a log made before ids
        self.legacy_snapshots = legacy  # id-less snapshot files the open found bound by the chain
        self.head_mark_s = HEAD_MARK_S  # how often the head mark is rewritten while records commit
        self._mark_lock = threading.Lock()
        self._marked = 0  # the offset the head mark last written holds
        self._marked_at = -float("inf")  # when (time.monotonic)
        self.marks = 0  # head marks written
        self.mark_errors = 0  # of them, failed (the older mark stays; the next one retries)
        self.on_mark_error: Callable[[OSError], None] | None = None  # told each failure (the server logs it)
        self.last_mark_error: OSError | None = None  # the latest failure (close_clean names it)
        self.path = path
        self.clean_at_open = clean_at_open
        self.readonly = readonly
        self._lock = lock
        self._closed = False
        self.stall_while: Path | None = None  # fault injection: COMMIT waits while this file exists
        self.wal_bytes = 0  # estimated WAL written since the last checkpoint (rows' text + pages per COMMIT)
        self.checkpoints = 0  # checkpoints run (checkpoint_if_due)
        self.checkpoint_errors = 0  # of them, failed (the WAL keeps the data; the next one retries)
        self.recovery: RecoveryReport | None = None  # set by restart()
        if not readonly:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint_if_due runs it, after the hand-back

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, readonly: bool = False,
             busy_timeout_ms: int = 10_000) -> LogStore:
        """Open (creating if needed) ``data_dir``.  A writable open takes the directory lock and
        clears the clean-shutdown marker durably before returning; ``clean_at_open`` says whether
        it was set (or the directory is new)."""
        d = Path(data_dir)
        path = d / DB_FILE
        if readonly:
            if not path.exists():
                check_snapshots_have_a_log(path, "no database")
                raise FileNotFoundError(f"no commit log at {path}")
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                found = check_tables(conn, path, readonly=True)
                marker = conn.execute("SELECT value FROM meta WHERE key = 'clean_shutdown'").fetchone()
            except BaseException:
                conn.close()
                raise
            return cls(conn, path, marker is not None and marker[0] == "1", True, None, found.log_id, found.legacy)
        d.mkdir(parents=True, exist_ok=True)
        lock = open(d / LOCK_FILE, "a")  # noqa: SIM115 -- held for the store's lifetime
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RuntimeError(f"data directory {d} is in use by another process") from None
        try:
            if not path.exists():  # (before connect creates it)
                check_snapshots_have_a_log(path, "no database")
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except BaseException:
            lock.close()
            raise
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise RuntimeError(f"could not put {path} in WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            found = check_tables(conn, path)  # before the schema's CREATE TABLE IF NOT EXISTS could hide a lost table
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            fresh = "format" not in meta
            if fresh:
                if conn.execute("SELECT 1 FROM commit_log LIMIT 1").fetchone() is not None:
                    raise RuntimeError(f"{path} has a commit log but no format marker")
                conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (FORMAT,))
            elif meta["format"] != FORMAT:
                raise RuntimeError(f"{path} has log format {meta['format']}, this build reads {FORMAT}")
            clean = fresh or meta.get("clean_shutdown") == "1"
            log_id = meta.get("log_id")
            if log_id is None:  # a new log, or one made before ids: its own from now on (ADR-0039)
                log_id = found.adopt or new_log_id()
                conn.execute("INSERT INTO meta (key, value) VALUES ('log_id', ?)", (log_id,))
            conn.execute("DELETE FROM meta WHERE key = 'clean_shutdown'")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            lock.close()
            raise
        return cls(conn, path, clean, False, lock, log_id, found.legacy)

    # --- reading ---

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """One read transaction: every read inside sees the same committed state, even while
        another process (a running server) keeps committing."""
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def iter_records(self, after: int = 0, rows: bool = True) -> Iterator[TxRecord]:
        """The stored records past offset ``after``, in offset order (``rows``: see :func:`record_from_row`)."""
        for row in self._conn.execute(f"SELECT {_COLUMNS} FROM commit_log WHERE \"offset\" > ? ORDER BY \"offset\"",
                                      (after,)):
            yield record_from_row(row, rows)

    def record_batches(self, size: int, after: int = 0, rows: bool = True) -> Iterator[list[TxRecord]]:
        """:meth:`iter_records`, ``size`` records a list: the rows fetched ``size`` at a time
        (``fetchmany``) and decoded in one loop, without a generator step per record.  A row that
        does not decode yields the records decoded before it (their list) and then raises its
        :class:`LogCorruption`, so a reader of the flattened lists sees exactly what
        :meth:`iter_records` gives: every record before the bad one, then the error."""
        cursor = self._conn.execute(f"SELECT {_COLUMNS} FROM commit_log WHERE \"offset\" > ? ORDER BY \"offset\"",
                                    (after,))
        while True:
            fetched = cursor.fetchmany(size)
            if not fetched:
                return
            batch: list[TxRecord] = []
            append = batch.append
            try:
                for row in fetched:
                    append(record_from_row(row, rows))
            except LogCorruption:
                yield batch
                raise
            yield batch

    def hash_at(self, offset: int) -> str | None:
        """The stored hash of record ``offset`` (None: no such record)."""
        row = self._conn.execute('SELECT hash FROM commit_log WHERE "offset" = ?', (offset,)).fetchone()
        return None if row is None else str(row[0])

    def load(self) -> tuple[list[TxRecord], bool]:
        """Every stored record in offset order, and whether the last process shut down cleanly.
        Raises :class:`LogCorruption` (a ``ValueError``) naming the first undecodable row."""
        return list(self.iter_records()), self.clean_at_open

    def last(self) -> tuple[int, str]:
        """The highest stored offset and its hash (0 and the genesis hash for an empty log)."""
        row = self._conn.execute('SELECT "offset", hash FROM commit_log ORDER BY "offset" DESC LIMIT 1').fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM commit_log").fetchone()[0])

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def load_policy(self) -> Policy | None:
        text = self.get_meta("policy")
        return None if text is None else policy_from_json(json.loads(text))

    # --- writing ---

    def save_policy(self, policy: Policy) -> None:
        self.set_meta("policy", _dumps(policy_json(policy)))

    def write_batch(self, records: Sequence[TxRecord]) -> int:
        """Write ``records`` in one SQLite transaction; return the last offset once it has
        committed.  On any failure the transaction is rolled back and the exception propagates;
        inside a transaction already open on the connection, :class:`DurabilityError` (nothing is
        written: a one-statement batch would have joined that transaction, left uncommitted).
        It never checkpoints the WAL: :meth:`checkpoint_if_due` does, which the group-commit
        writer calls after handing the durable offset back."""
        if not records:
            return self.last()[0]
        if self._conn.in_transaction:  # a one-statement batch would join it and return uncommitted
            raise DurabilityError("write_batch inside an open transaction: its records would not be committed")
        rows = [record_row(rec) for rec in records]
        statements = [(_insert_rows(len(chunk)), [v for row in chunk for v in row])
                      for chunk in (rows[i:i + INSERT_ROWS] for i in range(0, len(rows), INSERT_ROWS))]
        try:
            if len(statements) == 1:  # the INSERT is its own transaction: BEGIN .. COMMIT in one step
                self._commit(*statements[0])
            else:
                self._conn.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._conn.execute(sql, params)
                self._commit()
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self.wal_bytes += CHECKPOINT_COMMIT_BYTES + sum(_utf8_len(row[4]) + _utf8_len(row[6]) + 256 for row in rows)
        return records[-1].offset

    def checkpoint_if_due(self) -> bool:
        """Once about :data:`CHECKPOINT_BYTES` were written to the WAL since the last checkpoint, copy
        the WAL into the database file (``PRAGMA wal_checkpoint(PASSIVE)``: what SQLite's
        auto-checkpoint would have run inside the COMMIT that crossed its threshold, ending with an
        fsync of the database file) so that the next write restarts the WAL from its start.  The
        connection's auto-checkpoint is off: run inside a COMMIT, it held that COMMIT's records'
        hand-back for the checkpoint's writes and fsync (2-11 ms each, every ~60 COMMITs, in the
        traces of docs/performance.md "Phase 12").  Durability does not depend on it: each
        COMMIT's WAL fsync is.  A failed checkpoint is counted and retried at the next threshold,
        as SQLite ignores its auto-checkpoint's errors.  Returns whether one ran."""
        if self.wal_bytes < CHECKPOINT_BYTES:
            return False
        self.wal_bytes = 0
        self.checkpoints += 1
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            self.checkpoint_errors += 1
        return True

    def _commit(self, sql: str = "COMMIT", params: Sequence[Any] = ()) -> None:
        """The statement that commits (and, with ``synchronous=FULL``, fsyncs the WAL): ``COMMIT``,
        or a batch's one ``INSERT`` run as its own transaction -- one step, so the writer thread
        gives up and retakes the interpreter lock once per batch of up to :data:`INSERT_ROWS`
        records instead of once each for BEGIN, every row (``executemany``) and COMMIT, each
        retake up to a switch interval late behind a busy event loop (docs/performance.md
        "Phase 12").  A seam for fault tests: with ``stall_while`` set (``[faults]
        stall_commits_while``), it first waits while that file exists -- a disk that stalls, so
        committed transactions stay undurable for as long as a test needs."""
        while self.stall_while is not None and self.stall_while.exists():
            time.sleep(0.005)
        self._conn.execute(sql, params)

    def mark_head(self, offset: int, digest: str, *, due: bool = False) -> bool:
        """Record in the head mark (``DIR/syncref.head``, ADR-0039) that record ``offset``, whose hash is
        ``digest``, is durable -- call it only once it is.  With ``due``, only if :attr:`head_mark_s`
        has passed since the last mark (the group-commit writer asks after each COMMIT: no fsync per
        commit).  Never moves the mark back.  A failed write is counted (``mark_errors``) and leaves
        the older mark, a weaker check; the next one retries.  Returns whether one was written."""
        if self.readonly or self.log_id is None or offset < 1:
            return False
        with self._mark_lock:  # close() takes it too: no mark is written once the lock is released
            now = time.monotonic()
            if self._closed or offset <= self._marked or (due and now - self._marked_at < self.head_mark_s):
                return False
            self._marked_at = now
            try:
                write_head_mark(self.path.parent, HeadMark(self.log_id, offset, digest))
            except OSError as exc:
                self.mark_errors += 1
                self.last_mark_error = exc
                if self.on_mark_error is not None:
                    self.on_mark_error(exc)
                return False
            self._marked = offset
            self.marks += 1
            return True

    @property
    def marked_offset(self) -> int:
        """The offset the head mark this store last wrote holds (0: none written yet by this store).
        Read without the mark lock (one int, replaced whole): the event loop reads it for ``/metrics``
        and the ops page, and must not wait for a mark write a failing disk holds in its fsync."""
        return self._marked

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            self._commit()
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def close_clean(self, committed: int) -> None:
        """Set the clean-shutdown marker and close.  ``committed`` is the engine's committed offset:
        the marker promises the log holds every transaction, so it must equal the stored head.  It
        also promises that the head mark is the head (ADR-0039: any cut is seen), so when the final
        mark cannot be written (counted in ``mark_errors`` and told like any mark's failure) the store
        is closed WITHOUT the marker and :class:`UncleanClose` says why: the next open is an unclean
        restart, with the recovery transaction, instead of a clean one beside a stale mark."""
        stored, digest = self.last()
        if stored != committed:
            raise RuntimeError(f"clean shutdown with committed offset {committed} but log head {stored}")
        self.mark_head(stored, digest)  # after a clean shutdown the mark is the head: any cut is seen
        if stored >= 1 and self._marked < stored:
            self.close()
            raise UncleanClose(f"the head mark could not be written at record {stored} ({self.last_mark_error}); "
                               f"closed without the clean-shutdown marker: the log is whole, the next start "
                               f"recovers as after a crash")
        self.set_meta("clean_shutdown", "1")
        self.close()

    def close(self) -> None:
        """Close without the marker (the next open is an unclean restart).  A head mark write in
        flight (the mark thread's) ends first: the directory lock is released only after it, so the
        next process to open the directory never writes its mark beside this one's."""
        with self._mark_lock:
            if self._closed:
                return
            self._closed = True
        self._conn.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock


# --- the group-commit writer -------------------------------------------------------------------

DurableCallback = Callable[[int, Sequence[TxRecord]], None]


class GroupCommitWriter:
    """Batches queued records into one SQLite transaction each and reports the durable offset only
    after that transaction's COMMIT returned.

    ``background=True`` starts a writer thread that, whenever records are queued, takes all of
    them (up to ``max_batch``) and writes them together; :meth:`flush` then just waits.  With
    ``background=False`` nothing happens until :meth:`flush`, which writes in the caller's thread.
    ``on_durable(offset, batch)`` runs after each COMMIT (on the writing thread); an exception
    from it stops the writer like a write failure.

    **Gathering** (``gather_s`` > 0, ADR-0014).  Closed-loop clients answered by one COMMIT send
    their next calls at about the same time, but the first of them wakes an idle writer alone: its
    COMMIT (one record) is in flight when the others arrive, so they wait for it *and* for their
    own -- two fsyncs per round.  So a writer that was idle, woken with fewer records than its
    previous COMMIT wrote, waits until that many are queued, but never longer than ``gather_s``
    nor half the previous COMMIT's duration (a fast disk gathers little), and not at all when a
    caller waits in :meth:`flush`/:meth:`wait_durable` or the writer closes.  A writer that is
    never idle (the backlog grows while a COMMIT runs) never waits.  What may be lost in a crash
    is unchanged: nothing is acknowledged before its COMMIT.
    """

    def __init__(self, store: LogStore, on_durable: DurableCallback | None = None, *, background: bool = True,
                 max_batch: int | None = None, gather_s: float = 0.0) -> None:
        if store.readonly:
            raise ValueError("a read-only store cannot be written")
        self._store = store
        self._on_durable = on_durable
        self._max_batch = max_batch
        self._cv = threading.Condition()
        self._queue: list[TxRecord] = []
        self._appended, self._last_hash = store.last()
        self._durable = self._appended
        self._durable_hash = self._last_hash  # the hash of record _durable (what the head mark records)
        self._error: BaseException | None = None
        self._closed = False
        self.batches = 0  # COMMITs that wrote records
        self.written = 0  # records written
        self._gather_s = gather_s
        self._last_batch = 0  # records in the previous COMMIT
        self._last_commit_s = 0.0  # how long the previous COMMIT took
        self._hurry = False  # a caller waits for durability: no gathering
        self._sleeping = False  # the thread waits, idle, for records (wake() must notify it)
        self._gather_target = 0  # while gathering: the queue length that ends the gather (else 0)
        self.wakeups = 0  # times wake() notified the thread
        self.gathered = 0  # COMMITs that waited for more records (and how long, in total)
        self.gather_waited_s = 0.0
        self._thread: threading.Thread | None = None
        self._marker: threading.Thread | None = None
        self._stop_marking = threading.Event()
        if background:
            self._thread = threading.Thread(target=self._run, name="syncref-group-commit", daemon=True)
            self._thread.start()
            self._marker = threading.Thread(target=self._mark_loop, name="syncref-head-mark", daemon=True)
            self._marker.start()

    def _mark_loop(self) -> None:
        """Every ``head_mark_s``, record the durable head in the head mark if it moved (ADR-0039): on
        its own thread, so no COMMIT waits for the mark's write and fsync, and a burst of commits
        followed by silence is marked too.  The mark lags the durable head by at most about one
        interval (plus one mark write)."""
        while not self._stop_marking.wait(self._store.head_mark_s):
            self.mark()

    def mark(self) -> bool:
        """Record the durable head in the head mark now (if it moved); whether a mark was written."""
        with self._cv:
            offset, digest = self._durable, self._durable_hash
        return self._store.mark_head(offset, digest)

    @property
    def durable_offset(self) -> int:
        with self._cv:
            return self._durable

    @property
    def appended_offset(self) -> int:
        with self._cv:
            return self._appended

    @property
    def error(self) -> BaseException | None:
        with self._cv:
            return self._error

    def _check(self) -> None:
        if self._error is not None:
            raise DurabilityError(f"the commit-log writer failed: {self._error!r}") from self._error
        if self._closed:
            raise DurabilityError("the commit-log writer is closed")

    def append(self, records: Sequence[TxRecord], *, wake: bool = True) -> None:
        """Queue records; they must continue the log (next offset, chained to the last hash).
        ``wake=False`` leaves the writer thread asleep until :meth:`wake` (or a later append,
        flush or close): a caller that commits several transactions in one go wakes it once, so
        they share a COMMIT and the thread is not woken per transaction."""
        with self._cv:
            self._check()
            offset, last_hash = self._appended, self._last_hash
            for rec in records:
                if rec.offset != offset + 1 or rec.prev_hash != last_hash:
                    raise ValueError(f"record at offset {rec.offset} does not continue the log at {offset}")
                offset, last_hash = rec.offset, rec.hash
            self._queue.extend(records)
            self._appended, self._last_hash = offset, last_hash
            if records and wake:
                self._cv.notify_all()

    def wake(self) -> None:
        """Wake the writer thread for whatever is queued -- unless waking it would change nothing:
        while it writes (it takes the queue when its COMMIT returns) or while it gathers and the
        queue is still short of its target (it wakes by itself at the bound).  The event loop calls
        this once per iteration in which the engine moved; each needless wakeup made the thread
        take the interpreter lock from the loop just to go back to sleep."""
        with self._cv:
            if self._queue and (self._sleeping or 0 < self._gather_target <= len(self._queue)):
                self.wakeups += 1
                self._cv.notify_all()

    def _gather(self) -> None:
        """With the lock held, after an idle wait: wait (bounded) for the previous COMMIT's worth of
        records, so closed-loop callers answered together share the next COMMIT too."""
        target = self._last_batch if self._max_batch is None else min(self._last_batch, self._max_batch)
        delay = min(self._gather_s, self._last_commit_s / 2)
        if len(self._queue) >= target or delay <= 0 or self._hurry:
            return
        start = time.monotonic()
        deadline = start + delay
        self._gather_target = target
        try:
            while len(self._queue) < target and not self._closed and not self._hurry and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
        finally:
            self._gather_target = 0
        self.gathered += 1
        self.gather_waited_s += time.monotonic() - start

    def _take(self) -> list[TxRecord]:
        n = len(self._queue) if self._max_batch is None else min(self._max_batch, len(self._queue))
        batch, self._queue = self._queue[:n], self._queue[n:]
        return batch

    def _write(self, batch: list[TxRecord]) -> None:
        try:
            started = time.monotonic()
            offset = self._store.write_batch(batch)
            with self._cv:
                self._last_commit_s = time.monotonic() - started
                self._last_batch = len(batch)
                self._durable = offset
                self._durable_hash = batch[-1].hash
                self.batches += 1
                self.written += len(batch)
                self._cv.notify_all()
            if self._on_durable is not None:
                self._on_durable(offset, batch)
            self._store.checkpoint_if_due()  # after the hand-back: its records wait for no checkpoint
            if self._thread is None:  # else the mark thread marks, off the commit path (ADR-0039)
                self._store.mark_head(offset, batch[-1].hash, due=True)  # at most every head_mark_s
        except BaseException as exc:
            with self._cv:
                self._error = exc
                self._cv.notify_all()
            raise

    def _run(self) -> None:
        while True:
            with self._cv:
                idle = False
                while not self._queue and not self._closed and self._error is None:
                    idle = True
                    self._sleeping = True
                    try:
                        self._cv.wait()
                    finally:
                        self._sleeping = False
                if self._error is not None or not self._queue:
                    return  # failed, or closed with nothing left
                if idle and self._gather_s > 0:
                    self._gather()
                batch = self._take()
                self._hurry = False
            try:
                self._write(batch)
            except BaseException:
                return  # recorded in self._error; waiters are woken

    def flush(self) -> int:
        """Make everything appended so far durable; return the durable offset."""
        if self._thread is None:
            while True:
                with self._cv:
                    self._check()
                    batch = self._take()
                if not batch:
                    return self.durable_offset
                try:
                    self._write(batch)
                except BaseException as exc:
                    raise DurabilityError(f"the commit-log write failed: {exc!r}") from exc
        with self._cv:
            target = self._appended
            self._hurry = True
            self._cv.notify_all()  # records appended with wake=False
            while self._durable < target and self._error is None:
                self._cv.wait()
            if self._error is not None:
                raise DurabilityError(f"the commit-log writer failed: {self._error!r}") from self._error
            return self._durable

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        """Block until ``offset`` is durable (True), the timeout passes (False), or the writer fails."""
        with self._cv:
            self._hurry = True
            self._cv.notify_all()  # records appended with wake=False
            ok = self._cv.wait_for(lambda: self._durable >= offset or self._error is not None, timeout)
            if self._error is not None:
                raise DurabilityError(f"the commit-log writer failed: {self._error!r}") from self._error
            return ok

    def close(self) -> None:
        """Write what is queued, stop the thread.  Raises :class:`DurabilityError` if writing failed."""
        if self._thread is None:
            if self._error is None and not self._closed:
                self.flush()
        else:
            with self._cv:
                self._closed = True
                self._cv.notify_all()
            self._thread.join()
        if self._marker is not None:
            self._stop_marking.set()
            self._marker.join()
        with self._cv:
            self._closed = True
            if self._error is not None:
                raise DurabilityError(f"the commit-log writer failed: {self._error!r}") from self._error


# --- engine lifecycle -------------------------------------------------------------------------


def sync(engine: Engine, writer: GroupCommitWriter) -> int:
    """Hand every pending record to the writer, wait until it is durable and tell the engine --
    repeating while that releases more commits (queued disconnects).  Returns the durable offset."""
    while True:
        records = engine.take_records()
        if records:
            writer.append(records)
        durable = writer.flush()
        engine.advance_durable(durable)
        if not engine.pending_records:
            return durable


def restart(store: LogStore, writer: GroupCommitWriter, now: int, policy: Policy | None = None,
            max_queue: int = 1024, max_undurable: int = 1024, snapshots: bool = True,
            stop: Callable[[], bool] | None = None) -> Engine:
    """Rebuild the engine from the log and make any recovery transaction durable before returning;
    call it before the engine serves anyone (it also writes ``meta`` on the store's connection).

    ``policy`` defaults to the one the data directory stores; a directory without one stores
    ``policy`` (or the default).  A policy different from the stored one is refused: the log
    could no longer be re-executed (``verify-log``) under a single policy.

    The recovery bump must cover the undurable window of the process that *crashed*, which may
    have run with a larger ``max_undurable`` than this one: ``meta.max_undurable`` records each
    run's bound (durably, before that run serves), and the bump uses the larger of the two.

    With ``snapshots`` (ADR-0011) the state starts from the newest intact snapshot bound to the
    log and only the records after it are applied; a corrupt or unbound snapshot is passed over
    (an older one, else the whole log) and named in ``store.recovery``.

    ``stop`` (``syncref serve`` passes "a signal arrived") is asked before the snapshot is loaded,
    before each batch of :data:`_RESTART_BATCH` records is applied and once after the last -- only
    while the state is being rebuilt, which writes nothing (it only removes stray snapshot temp
    files): on a yes, restart sets the
    clean marker again if it was set at open (the log is as it was) and raises
    :class:`RecoveryInterrupted`.  The writes before (storing the policy) and after (the recovery
    transaction, ``meta.max_undurable``) are never cut short: a stop waits for them."""
    stored = store.load_policy()
    if stored is None:
        policy = policy if policy is not None else DEFAULT_POLICY
        store.save_policy(policy)
    elif policy is None:
        policy = stored
    elif policy != stored:
        raise ValueError("the data directory was created under a different policy")
    previous = store.get_meta("max_undurable")
    margin = max(max_undurable, int(previous)) if previous is not None else max_undurable
    report = RecoveryReport()
    # Loading builds millions of objects that all stay alive: the cyclic collector would walk the
    # growing heap again and again (a third of restart time, by profile) and find nothing -- rows
    # and records are acyclic -- so it is off while loading.
    collecting = gc.isenabled()
    gc.disable()
    total = store.last()[0]

    def halt() -> None:
        if stop is not None and stop():
            raise RecoveryInterrupted(report.tail_records, total)

    try:
        halt()
        base = newest_snapshot(store, report) if snapshots else None
        start = None if base is None else (snapshot.restore(base), base.offset, base.head_hash)
        del base
        total -= report.snapshot_offset

        def batches() -> Iterator[list[TxRecord]]:
            # a batch of records read at a time (as verify-log reads them), counted as it is handed on
            for batch in store.record_batches(_RESTART_BATCH, report.snapshot_offset):
                halt()
                report.tail_records += len(batch)
                yield batch
            halt()

        # flattened in C (no generator step per record)
        engine = Engine.recover(itertools.chain.from_iterable(batches()), store.clean_at_open, now, policy,
                                max_queue, margin, start)
        del start
    except RecoveryInterrupted:
        if store.clean_at_open:  # nothing was written since the open cleared it
            store.set_meta("clean_shutdown", "1")
        raise
    finally:
        if collecting:
            gc.enable()
    sync(engine, writer)
    engine.max_undurable = max_undurable
    if previous != str(max_undurable):
        store.set_meta("max_undurable", str(max_undurable))
    store.recovery = report
    return engine


@dataclass
class RecoveryReport:
    """How :func:`restart` rebuilt the state: from which snapshot (offset 0: none, a full replay),
    how many log records it applied after it, and every snapshot it passed over, with why."""

    snapshot_offset: int = 0
    snapshot_file: str | None = None
    tail_records: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)

    def lines(self) -> list[str]:
        """One line per rejected snapshot (what the server logs as warnings)."""
        used = f"using {self.snapshot_file}" if self.snapshot_file else "replaying the whole log"
        return [f"snapshot {name} not used ({reason}); {used}" for name, reason in self.rejected]


def snapshot_dir(store: LogStore) -> Path:
    return store.path.parent / snapshot.SNAPSHOT_DIR


def check_binding(store: LogStore, image: snapshot.Image, name: str) -> None:
    """A snapshot is usable only for the log it was taken from: record ``offset`` must be stored with
    the hash the snapshot names (the chain head, which commits to the whole prefix)."""
    if image.log_id is not None and store.log_id is not None and image.log_id != store.log_id:
        raise snapshot.SnapshotError(name, f"taken from another log (log id {image.log_id}, this log is "
                                           f"{store.log_id})")
    stored = store.hash_at(image.offset)
    if stored is None:
        raise snapshot.SnapshotError(name, f"its offset {image.offset} is past the log head {store.last()[0]}")
    if stored != image.head_hash:
        raise snapshot.SnapshotError(name, f"not bound to this log: record {image.offset} has hash {stored[:16]}..., "
                                           f"the snapshot names {image.head_hash[:16]}...")


def newest_snapshot(store: LogStore, report: RecoveryReport) -> snapshot.Image | None:
    """The newest intact snapshot bound to the log (``report`` notes it, and every one passed over).
    A writable store also removes stray temp files (snapshots a crash interrupted)."""
    directory = snapshot_dir(store)
    if not store.readonly and directory.is_dir():
        for tmp in directory.glob("snap-*.tmp"):
            tmp.unlink(missing_ok=True)
    for _offset, path in snapshot.listing(directory):
        try:
            image = snapshot.read(path)
            if f"snap-{image.offset:012d}.json" != path.name:
                raise snapshot.SnapshotError(path.name, f"the file name does not match its offset {image.offset}")
            check_binding(store, image, path.name)
        except snapshot.SnapshotError as exc:
            report.rejected.append((path.name, exc.reason))
            continue
        report.snapshot_offset, report.snapshot_file = image.offset, path.name
        return image
    return None


def shutdown(engine: Engine, writer: GroupCommitWriter, store: LogStore) -> None:
    """Clean shutdown: flush every committed transaction, stop the writer, set the marker."""
    sync(engine, writer)
    writer.close()
    store.close_clean(engine.committed)
