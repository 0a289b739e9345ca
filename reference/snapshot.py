"""Snapshots: a state image plus the log after it, so restart time is bounded (issue 13, ADR-0011).

The commit log stays the state's definition (DESIGN §5): a snapshot is a *cache* of the state
the log's first ``offset`` records produce, bound to that prefix by the hash chain, and always
re-derivable from it.  Restart loads the newest snapshot that is intact and bound to the log,
then applies only the records after it; ``verify-log`` still replays from zero and compares the
re-executed state with every snapshot at its offset (replay parity across the boundary).

**File.**  ``DIR/snapshots/snap-<offset, 12 digits>.json``, line-oriented UTF-8 JSON:

* line 1, the header: ``{"format": 1, "log_format": "2", "log_id": L, "offset": N, "head_hash": H,
  "epoch_floor": E, "version_floor": V, "rows": R}`` -- ``L`` is the id of the log it was taken from
  (``meta.log_id``, ADR-0039; absent in files written before ids), ``H`` the stored hash of record
  ``N``, which commits to the whole prefix 1..N (each hash covers the previous one);
* then chunk lines ``["table", [row, ...]]`` for the primary-key tables (in the index's order)
  and ``["sync_event", stream_id, floor, [row, ...]]`` per stream log, at most
  :data:`CHUNK_ROWS` rows a line; a row is its column values, as in the log's deltas;
* last, the trailer ``{"sha256": D}``: the digest of every byte before it.  A torn, truncated
  or bit-flipped file fails it.

**Atomic write.**  The image is written to ``snap-N.tmp``, flushed and fsynced, renamed to
``snap-N.json``, and the directory is fsynced; a crash at any point leaves either no
``snap-N.json`` or a whole one (a stray ``.tmp`` is removed at the next writable start).  The
rename also waits until record ``N`` is durable in the log, so a snapshot never gets ahead of
the log it is bound to.

**Capture.**  Rows are frozen values, so an image is a shallow copy of the indexes taken on the
engine's thread between two transactions (C-speed list/tuple copies, a read-only view of each
stream's column store); encoding, hashing and writing happen on the :class:`Snapshotter`'s thread
while the engine keeps committing.  The periodic capture (:class:`Capturer`) views only the streams
whose log changed since its previous image (ADR-0011, "Incremental capture").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference.db import PK_TABLES, Db
from reference.eventlog import EventSeq, StreamLog
from reference.log import row_from_json, row_values
from spec.values import Row, SyncEvent

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_FORMAT = 1
LOG_FORMAT = "2"  # reference.durability.FORMAT: the row shapes the image's rows have
CHUNK_ROWS = 256  # rows a line: what the writer thread holds built at once (4096 held ~5 MB of rows and text)
DEFAULT_SNAPSHOT_EVERY = 50_000  # records between snapshots ([server] snapshot_every; 0: never)
DEFAULT_SNAPSHOT_KEEP = 2  # snapshots kept, newest first ([server] snapshot_keep)

_ENC = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class SnapshotError(ValueError):
    """A snapshot file that cannot be used: unreadable, corrupt, or not bound to this log."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"snapshot {name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Image:
    """The persistent state after record ``offset`` (whose hash is ``head_hash``)."""

    offset: int
    head_hash: str
    epoch_floor: int
    version_floor: int
    tables: tuple[tuple[str, tuple[Row, ...]], ...]  # primary-key tables, rows in index order
    logs: tuple[tuple[str, int, Sequence[SyncEvent]], ...]  # stream id, floor, retained events (oldest first)
    log_id: str | None = None  # the id of the log it was taken from (ADR-0039); None: written before ids

    @property
    def rows(self) -> int:
        return sum(len(rows) for _, rows in self.tables) + sum(len(events) for _, _, events in self.logs)


def capture(db: Db, offset: int, head_hash: str, log_id: str | None = None) -> Image:
    """The image of ``db`` as it is now (call it between transactions, on the engine's thread), taken
    from the log whose id is ``log_id`` (ADR-0039).
    Each stream's events are a read-only view of its column store (``StreamLog.captured``: it shares
    the chunks, so capturing costs little per stream), read row by row as the file is written.  This
    copies every stream; the periodic snapshot uses a :class:`Capturer`, which copies only those
    that changed since its previous image."""
    return Image(offset, head_hash, db.epoch_floor, db.version_floor, _tables(db),
                 tuple((sid, log.floor, log.captured()) for sid, log in db.logs.items()), log_id)


def _tables(db: Db) -> tuple[tuple[str, tuple[Row, ...]], ...]:
    # every row of every primary-key table, each time: a tuple of a dict's values is a C-speed copy of
    # references (~0.3 ms for 30,000 rows, docs/performance.md "Snapshot capture hold")
    return tuple((name, tuple(index.values())) for name, index in db.pk.items())


class Capturer:
    """:func:`capture`, holding the engine's thread in proportion to what changed since its previous
    image of the same :class:`Db`, not to the whole state (ADR-0011, "Incremental capture").

    It keeps the previous image's per-stream entries ``(stream id, floor, view)`` and replaces only
    those of the streams in ``db.changed_logs`` (which every mutation of a stream's log adds its id
    to, and which this empties), plus the streams created since (a log is never removed from
    ``db.logs`` and a dict keeps insertion order: the new ones are the last).  An entry kept is
    exact: its log has not changed since its view was taken, and a view never changes.  The image's
    streams are in ``db.logs``' order, as :func:`capture`'s, so the two write the same bytes.  The
    first image of a Db (or of another Db, or of one whose ``logs`` dict was replaced) copies every
    stream.  Memory: the entries (~600 bytes a stream, measured) stay held between snapshots, and
    with them the chunks a view shares that the live log has dropped since."""

    __slots__ = ("_db", "_entries", "_logs")

    def __init__(self) -> None:
        self._db: Db | None = None
        self._logs: dict[str, StreamLog] | None = None
        self._entries: dict[str, tuple[str, int, Sequence[SyncEvent]]] = {}

    def __call__(self, db: Db, offset: int, head_hash: str, log_id: str | None = None) -> Image:
        self.prime(db)
        return Image(offset, head_hash, db.epoch_floor, db.version_floor, _tables(db),
                     tuple(self._entries.values()), log_id)

    def prime(self, db: Db) -> None:
        """Bring the entries up to ``db``'s state without taking an image (the server does it at start,
        before it listens, so that its first periodic snapshot views only what changed since)."""
        logs, entries, changed = db.logs, self._entries, db.changed_logs
        if db is not self._db or logs is not self._logs or len(entries) > len(logs):
            self._db, self._logs = db, logs
            entries.clear()
            changed.clear()
        for sid in changed:
            if sid in entries:  # (not yet: created since, taken below)
                log = logs[sid]
                entries[sid] = (sid, log.floor, log.captured())
        changed.clear()
        for sid in itertools.islice(logs, len(entries), None):  # created since (all of them, the first time)
            log = logs[sid]
            entries[sid] = (sid, log.floor, log.captured())


def restore(image: Image) -> Db:
    """A :class:`Db` holding the image's state, every index rebuilt."""
    db = Db()
    for name, rows in image.tables:
        key_of = PK_TABLES[name].key_of
        db.pk[name] = {key_of(row): row for row in rows}
    for sid, floor, events in image.logs:
        db.logs[sid] = StreamLog.of(sid, floor, events)
    db.epoch_floor, db.version_floor = image.epoch_floor, image.version_floor
    db.reindex()
    return db


def differs(image: Image, db: Db) -> str | None:
    """The first way ``db`` differs from ``image`` (None: the same state).  Compares row *sets* per
    table and each stream's (floor, events) -- independently of :func:`restore`'s index rebuild."""
    if (image.epoch_floor, image.version_floor) != (db.epoch_floor, db.version_floor):
        return (f"floors (epoch, version): snapshot {(image.epoch_floor, image.version_floor)}, "
                f"log {(db.epoch_floor, db.version_floor)}")
    mine = dict(image.tables)
    for name in sorted(set(mine) | set(db.pk)):
        a, b = set(mine.get(name, ())), set(db.pk.get(name, {}).values())
        if a != b or len(mine.get(name, ())) != len(a):
            extra, missing = sorted(map(repr, a - b))[:1], sorted(map(repr, b - a))[:1]
            return f"table {name}: snapshot has {len(a)} rows, log {len(b)}; only in snapshot {extra}, only in log " \
                   f"{missing}"[:600]
    logs = {sid: (floor, tuple(events)) for sid, floor, events in image.logs}
    for sid in sorted(set(logs) | set(db.logs)):
        live = db.logs.get(sid)
        theirs = None if live is None else (live.floor, tuple(live.events))
        if logs.get(sid) != theirs:
            return f"sync_event stream {sid!r}: snapshot and log differ"
    return None


# --- the file ---------------------------------------------------------------------------------


def file_name(offset: int) -> str:
    return f"snap-{offset:012d}.json"


def _chunks(image: Image) -> Iterator[str]:
    for name, rows in image.tables:
        for i in range(0, len(rows), CHUNK_ROWS):
            yield _ENC.encode([name, [row_values(r) for r in rows[i:i + CHUNK_ROWS]]])
    for sid, floor, events in image.logs:
        if not events:
            yield _ENC.encode(["sync_event", sid, floor, []])
        for i in range(0, len(events), CHUNK_ROWS):
            # a captured log's rows are read from its columns as values, never built as rows
            values = events.values(i, i + CHUNK_ROWS) if isinstance(events, EventSeq) else \
                [row_values(e) for e in events[i:i + CHUNK_ROWS]]
            yield _ENC.encode(["sync_event", sid, floor, values])


def encode(image: Image) -> Iterator[bytes]:
    """The file's bytes, line by line (the trailer last)."""
    digest = hashlib.sha256()
    header: dict[str, Any] = {"format": SNAPSHOT_FORMAT, "log_format": LOG_FORMAT}
    if image.log_id is not None:  # an image without an id is written as before ids (ADR-0039)
        header["log_id"] = image.log_id
    header.update(offset=image.offset, head_hash=image.head_hash, epoch_floor=image.epoch_floor,
                  version_floor=image.version_floor, rows=image.rows)
    for text in (_ENC.encode(header), *_chunks(image)):
        line = (text + "\n").encode("utf-8")
        digest.update(line)
        yield line
    yield (_ENC.encode({"sha256": digest.hexdigest()}) + "\n").encode("utf-8")


def header_log_id(head: dict[str, Any]) -> str | None:
    """The log id a snapshot's header names (None: a file written before log ids, ADR-0039);
    ``ValueError`` if it names something that is not an id."""
    value = head.get("log_id")
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"log_id {value!r} is not a log id")
    return value


def _checked_body(data: bytes, name: str) -> bytes:
    """The bytes before the trailer, once the trailer's digest matches them (:class:`SnapshotError` if not)."""
    cut = data.rfind(b"\n", 0, len(data) - 1)
    if not data.endswith(b"\n") or cut < 0:
        raise SnapshotError(name, "truncated (no trailer line)")
    body, trailer = data[:cut + 1], data[cut + 1:]
    try:
        expected = json.loads(trailer)["sha256"]
    except (ValueError, KeyError, TypeError):
        raise SnapshotError(name, "truncated or corrupt trailer") from None
    if hashlib.sha256(body).hexdigest() != expected:
        raise SnapshotError(name, "checksum mismatch (the file is corrupt)")
    return body


def intact(path: Path) -> bool:
    """Whether the file's trailer digest matches its bytes (read whole, rows not decoded): whether
    what its header says can be trusted."""
    try:
        _checked_body(read_bytes(path), path.name)
    except SnapshotError:
        return False
    return True


def decode(data: bytes, name: str = "snapshot") -> Image:
    """Parse and check a snapshot file's bytes; :class:`SnapshotError` says what is wrong."""
    body = _checked_body(data, name)
    try:
        lines = body.decode("utf-8").splitlines()
        head = json.loads(lines[0])
        if head.get("format") != SNAPSHOT_FORMAT or head.get("log_format") != LOG_FORMAT:
            raise ValueError(f"format {head.get('format')}/{head.get('log_format')}, this build reads "
                             f"{SNAPSHOT_FORMAT}/{LOG_FORMAT}")
        tables: dict[str, list[Row]] = {}
        logs: dict[str, tuple[int, list[SyncEvent]]] = {}
        for text in lines[1:]:
            chunk = json.loads(text)
            if chunk[0] == "sync_event":
                _, sid, floor, rows = chunk
                events = logs.setdefault(sid, (int(floor), []))[1]
                for values in rows:
                    ev = row_from_json("sync_event", values)
                    assert isinstance(ev, SyncEvent)
                    events.append(ev)
            else:
                table, rows = chunk
                if table not in PK_TABLES:
                    raise ValueError(f"unknown table {table!r}")
                tables.setdefault(table, []).extend(row_from_json(table, values) for values in rows)
        for sid, (floor, events) in logs.items():
            if [(e.stream_id, e.seq) for e in events] != [(sid, s) for s in range(floor, floor + len(events))]:
                raise ValueError(f"stream {sid!r}: the events' seqs do not run from its floor {floor}")
            if len({e.idempotency_key for e in events}) != len(events):
                raise ValueError(f"stream {sid!r}: an idempotency key repeats")
        image = Image(int(head["offset"]), str(head["head_hash"]), int(head["epoch_floor"]),
                      int(head["version_floor"]), tuple((t, tuple(tables.get(t, ()))) for t in PK_TABLES),
                      tuple((sid, floor, tuple(events)) for sid, (floor, events) in logs.items()),
                      header_log_id(head))
        if image.rows != head["rows"]:
            raise ValueError(f"{image.rows} rows, the header says {head['rows']}")
        return image
    except SnapshotError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AssertionError) as exc:
        raise SnapshotError(name, f"undecodable: {type(exc).__name__}: {exc}") from None


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``: a name just created or renamed in it survives a power cut (the
    snapshot directory after a snapshot's rename; the data directory after the head mark's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(directory: Path, image: Image, before_rename: Callable[[], None] | None = None) -> Path:
    """Write ``image`` atomically into ``directory`` (temp file, fsync, rename, directory fsync).
    ``before_rename`` runs after the temp file is durable and before it becomes visible (the
    :class:`Snapshotter` waits there for the log; tests kill the process there)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / file_name(image.offset)
    tmp = final.with_suffix(".tmp")
    step = f"creating {tmp.name}"  # named in the error: which step of the write failed
    try:
        with open(tmp, "wb") as f:
            step = f"writing {tmp.name}"
            for line in encode(image):
                f.write(line)
            f.flush()
            step = f"fsync of {tmp.name}"
            os.fsync(f.fileno())  # failed: the temp file is removed, never renamed (nor fsynced again)
            step = f"closing {tmp.name}"
        if before_rename is not None:
            before_rename()
        step = f"renaming {tmp.name}"
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{step} failed: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fsync_dir(directory)
    except OSError as exc:  # the file is whole (fsynced before the rename); only its name may not last
        raise OSError(exc.errno, f"fsync of the snapshot directory failed after {final.name} was renamed into "
                                 f"place: {exc.strerror or exc}") from exc
    return final


def listing(directory: Path) -> list[tuple[int, Path]]:
    """The snapshot files (offset, path), newest first; temp files and strangers are ignored."""
    out = []
    if directory.is_dir():
        for p in directory.iterdir():
            stem = p.name.removeprefix("snap-").removesuffix(".json")
            if p.name.startswith("snap-") and p.name.endswith(".json") and stem.isdigit():
                out.append((int(stem), p))
    return sorted(out, reverse=True)


def ours(path: Path, log_id: str | None, legacy: frozenset[str] = frozenset()) -> bool:
    """Whether the snapshot file at ``path`` is provably of the log whose id is ``log_id``: its header
    names that id, or it names none (a file written before log ids) and is one of ``legacy``, the
    files the store's open found bound to the log by the hash chain (ADR-0039)."""
    try:
        theirs = header_log_id(header(path))
    except (SnapshotError, ValueError):
        return False
    return theirs == log_id if theirs is not None else path.name in legacy


def prune(directory: Path, newest: int, keep: int, log_id: str | None = None,
          legacy: frozenset[str] = frozenset()) -> list[str]:
    """After ``snap-<newest>`` is written: drop all but the ``keep`` newest snapshots at or before it,
    and stray temp files.  A snapshot *past* it is never dropped (nor counted): it is the last copy of
    records the log lost, and the next start refuses the directory over it (ADR-0037).  Nor is one that
    is not provably this log's (:func:`ours`: another log's, an unreadable header, an id-less file the
    open did not bind): those are kept, not counted, and returned by name (ADR-0039) -- the next start
    refuses a directory with another log's snapshot, and says which.  Without ``log_id`` (a caller
    that knows none) every file counts, as before ids."""
    kept = 0
    strangers = []
    for offset, path in listing(directory):
        if offset > newest:
            continue
        if log_id is not None and not ours(path, log_id, legacy):
            strangers.append(path.name)
            continue
        if kept < keep:
            kept += 1
        else:
            path.unlink(missing_ok=True)
    for tmp in directory.glob("snap-*.tmp"):
        if tmp.name != file_name(newest).replace(".json", ".tmp"):
            tmp.unlink(missing_ok=True)
    return strangers


# --- the background writer ----------------------------------------------------------------------


class Snapshotter:
    """Takes a snapshot every ``every`` records (0: never), one at a time, on its own thread.

    :meth:`maybe` is called on the engine's thread between transactions with the engine's state;
    when ``every`` records have committed since the last snapshot and none is being written, it
    captures an image and hands it to the thread, which encodes and writes it, waits until the
    log holds record ``offset`` durably (``wait_durable``), renames it into place and prunes.
    A failed snapshot is reported through ``on_error`` and costs nothing else: the log is whole.
    """

    def __init__(self, directory: Path, every: int, keep: int, wait_durable: Callable[[int], object],
                 last_offset: int = 0, on_done: Callable[[Path, float], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None, log_id: str | None = None,
                 legacy: frozenset[str] = frozenset(),
                 on_strangers: Callable[[list[str]], None] | None = None) -> None:
        if every < 0 or keep < 1:
            raise ValueError("snapshot_every must be >= 0 and snapshot_keep >= 1")
        self.directory = directory
        self.every = every
        self.keep = keep
        self.last_offset = last_offset
        self.written = 0
        self._wait_durable = wait_durable
        self._on_done = on_done
        self._on_error = on_error
        self.log_id = log_id  # written into each snapshot's header; prune keeps what is not this log's
        self._legacy = legacy
        self._on_strangers = on_strangers  # told the snapshots prune kept as not this log's (ADR-0039)
        self._thread: threading.Thread | None = None
        self._capture = Capturer()  # copies the streams changed since the previous snapshot
        self.before_rename: Callable[[], None] | None = None  # fault injection seam (tests)

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def due(self, committed: int) -> bool:
        return self.every > 0 and committed - self.last_offset >= self.every and not self.busy

    def prime(self, db: Db) -> None:
        """View every stream of ``db`` now (:meth:`Capturer.prime`): called at start, before clients
        are served, so that no periodic snapshot views every stream on the engine's thread."""
        self._capture.prime(db)

    def maybe(self, db: Db, committed: int, head_hash: str) -> bool:
        if not self.due(committed):
            return False
        self.take(self._capture(db, committed, head_hash, self.log_id))
        return True

    def take(self, image: Image) -> None:
        """Write ``image`` in the background (the previous one must be finished)."""
        if self.busy:
            raise RuntimeError("a snapshot is already being written")
        self.last_offset = image.offset
        self._thread = threading.Thread(target=self._run, args=(image,), name="syncref-snapshot", daemon=True)
        self._thread.start()

    def _run(self, image: Image) -> None:
        started = time.perf_counter()
        try:
            def durable() -> None:
                self._wait_durable(image.offset)
                if self.before_rename is not None:
                    self.before_rename()
            path = write(self.directory, image, durable)
            strangers = prune(self.directory, image.offset, self.keep, self.log_id, self._legacy)
            self.written += 1
            if strangers and self._on_strangers is not None:
                self._on_strangers(strangers)
            if self._on_done is not None:
                self._on_done(path, time.perf_counter() - started)
        except BaseException as exc:  # reported; the log is unaffected
            if self._on_error is not None:
                self._on_error(exc)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def matches(data: bytes, db: Db, offset: int, head_hash: str, log_id: str | None = None) -> bool:
    """Whether ``data`` is, byte for byte, the file :func:`write` makes of ``db`` after record
    ``offset`` (whose hash is ``head_hash``) of the log ``log_id``.  A file that is would :func:`decode`
    to an image that :func:`differs` finds equal to ``db`` at that head; a file that is not may still be
    equal (rows in another index order, an id-less file), which only decoding it tells."""
    # line by line, in place: ``data`` is the whole file exactly when each line is found where the
    # lines before it end and nothing follows the last (no joined copy of the file; a line that
    # differs stops the writing there)
    try:
        pos = 0
        for line in encode(capture(db, offset, head_hash, log_id)):
            if not data.startswith(line, pos):
                return False
            pos += len(line)
    except (ValueError, TypeError, UnicodeEncodeError):  # a state this writer cannot write
        return False
    return pos == len(data)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, :class:`SnapshotError` if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SnapshotError(path.name, f"unreadable: {exc.strerror or exc}") from None


def read(path: Path) -> Image:
    return decode(read_bytes(path), path.name)


def header(path: Path) -> dict[str, Any]:
    """The header line alone (cheap), for listings; :class:`SnapshotError` if it does not parse."""
    try:
        with open(path, "rb") as f:
            head = json.loads(f.readline())
        if not isinstance(head, dict):
            raise ValueError("not an object")
        return head
    except (OSError, ValueError) as exc:
        raise SnapshotError(path.name, f"unreadable header: {exc}") from None
