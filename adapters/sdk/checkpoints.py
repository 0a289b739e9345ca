"""The durable checkpoint store: the consumer's watermark in the application's own SQLite file.

A consumer may apply an event and advance its watermark only together, or it either loses an
event (watermark moved, effect lost) or applies one twice (effect kept, watermark not moved) after
a crash.  So the watermark lives in the same SQLite database as the application's state, and the
application's ``apply(tx, event)`` runs inside the very transaction that moves the watermark:

* :meth:`CheckpointStore.apply_events` opens one transaction for a batch of consecutive events
  (one delivered message) and runs each event under its own savepoint.  If ``apply`` raises, that
  event's savepoint is rolled back -- its effects are gone and the watermark stays below it --
  the events before it are committed with the watermark at the last of them, and the error is
  returned.  If the commit itself fails, nothing of the batch is kept.
* :meth:`CheckpointStore.transaction` runs arbitrary work atomically with :meth:`reset`, which is
  how a rebootstrap drops local stream state and moves the checkpoint to the new epoch in one step.
  Several stream consumers may share one store (one file for the application's state and every
  stream's checkpoint); they take turns through :meth:`CheckpointStore.async_lock`, so one whose
  async rebootstrap callback awaits inside its transaction holds the others' deliveries back.
  One store holds one checkpoint per stream, so it serves one consumer per stream at a time
  (:attr:`CheckpointStore.followers`; a second ``StreamConsumer.start`` of a followed stream is refused).

``apply`` receives the ``sqlite3.Connection`` itself and must not commit or roll back (the store
checks that the transaction is still open afterwards and fails loudly if not).  The table is
``syncref_checkpoint(stream_id PRIMARY KEY, epoch, watermark, updated_at, rehydrating)``; the file is
opened in WAL mode with ``synchronous=FULL`` by default, so a returned commit survives power loss.
Reopening the file restores every stream's (epoch, watermark) and whether a rehydrate is under way:
``rehydrating`` is set by the rebootstrap that asked for the retained window (the application
returned no watermark of its own) and cleared in the transaction that applies the whole window, so
a process that restarts in between reads the window again instead of resuming with a seq bound (which
can be stale again, and would call the rebootstrap callback a second time).  A file written before
the column existed is upgraded in place when opened (the column is added, 0 for every stream); an
older SDK still reads and writes the upgraded file (it names its columns), it just does not see the mark.
An old file this process may only read is read as it is (no mark), and refuses a transaction.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spec.errors import LocalProtocolError
from spec.values import SyncEvent, is_u64

__all__ = ["ApplyFn", "ApplyResult", "Checkpoint", "CheckpointStore"]

ApplyFn = Callable[[sqlite3.Connection, SyncEvent], None]

_REHYDRATING = "rehydrating INTEGER NOT NULL DEFAULT 0 CHECK (rehydrating IN (0, 1))"
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS syncref_checkpoint (
    stream_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL CHECK (epoch >= 0),
    watermark INTEGER NOT NULL CHECK (watermark >= 0),
    updated_at INTEGER NOT NULL,
    {_REHYDRATING}
)"""
_SQLITE_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    stream_id: str
    epoch: int
    watermark: int
    rehydrating: bool = False  # the retained window is still to be read (a rebootstrap without a watermark)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    watermark: int  # the durable watermark after the batch
    applied: int  # how many events were applied (and committed)
    error: BaseException | None = None  # what ``apply`` raised, if it did; the events from there on were not applied


class CheckpointStore:
    """Per-stream (epoch, watermark) in a SQLite file, moved atomically with the application's effects."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 clock: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise LocalProtocolError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.path = str(path)
        self._clock = clock
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.db.execute(_SCHEMA)
        self._mark = "rehydrating"  # what reads select as the mark ("0": an old file this process cannot upgrade)
        self._upgrade()
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        # the stream consumer following each stream through this store (one checkpoint row per stream:
        # a second one would share its watermark; StreamConsumer.start refuses it)
        self.followers: weakref.WeakValueDictionary[str, object] = weakref.WeakValueDictionary()

    def _columns(self) -> set[str]:
        return {str(r[1]) for r in self.db.execute("PRAGMA table_info(syncref_checkpoint)")}

    def _upgrade(self) -> None:
        """A file from before ``rehydrating``: add the column (under a write lock, so two processes
        opening it at once add it once).  One this process may only read is read as it is (no mark)."""
        if "rehydrating" in self._columns():
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if "rehydrating" not in self._columns():
                    self.db.execute(f"ALTER TABLE syncref_checkpoint ADD COLUMN {_REHYDRATING}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:  # a file this process may only read: read it as it is
            if not str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_READONLY"):
                raise
            self._mark = "0"  # (no SDK that wrote it knew the mark: no rehydrate is under way)

    def async_lock(self) -> asyncio.Lock:
        """The lock the stream consumers sharing this store hold while they use it: an async
        ``on_rebootstrap`` keeps its transaction open across awaits, and another consumer's delivery
        must wait for it rather than find a transaction open (one lock per event loop)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------------

    def load(self, stream_id: str) -> Checkpoint | None:
        row = self.db.execute(f"SELECT epoch, watermark, {self._mark} FROM syncref_checkpoint WHERE stream_id = ?",
                              (stream_id,)).fetchone()
        return None if row is None else Checkpoint(stream_id, int(row[0]), int(row[1]), bool(row[2]))

    def all(self) -> list[Checkpoint]:
        rows = self.db.execute(f"SELECT stream_id, epoch, watermark, {self._mark} FROM syncref_checkpoint "
                               "ORDER BY stream_id")
        return [Checkpoint(s, int(e), int(w), bool(r)) for s, e, w, r in rows]

    # --- writing -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: commits when the block ends, rolls back if it raises."""
        if self.db.in_transaction:
            raise LocalProtocolError("a checkpoint transaction is already open")
        if self._mark != "rehydrating":
            raise LocalProtocolError(f"{self.path}: a checkpoint file from before the rehydrating column that this "
                                     "process may only read (it could not be upgraded): it cannot be written")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self._still_open()
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def reset(self, tx: sqlite3.Connection, stream_id: str, epoch: int, watermark: int, *,
              rehydrating: bool = False, expect: tuple[int, int] | None = None) -> None:
        """Set the checkpoint (inside :meth:`transaction`); used to start a stream or after a rebootstrap
        (``rehydrating``: the retained window is to be read, until :meth:`apply_events` ends it).
        ``expect``: the (epoch, watermark) the caller holds, as :meth:`apply_events`'s ``expect``: a stored
        one that differs was moved by another follower of the stream, and is refused, nothing written."""
        if tx is not self.db or not tx.in_transaction:
            raise LocalProtocolError("reset runs inside CheckpointStore.transaction()")
        _check_u63("epoch", epoch)
        _check_u63("watermark", watermark)
        if expect is not None:
            cp = self.load(stream_id)
            if cp is None or (cp.epoch, cp.watermark) != expect:
                raise LocalProtocolError(
                    f"the checkpoint of {stream_id!r} moved to {cp} under a consumer at (epoch, watermark) {expect}: "
                    "another one follows the stream in this file (one follower per stream and file)")
        tx.execute("INSERT INTO syncref_checkpoint (stream_id, epoch, watermark, updated_at, rehydrating) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET epoch = excluded.epoch, "
                   "watermark = excluded.watermark, updated_at = excluded.updated_at, "
                   "rehydrating = excluded.rehydrating", (stream_id, epoch, watermark, self._clock(), int(rehydrating)))

    def apply_events(self, stream_id: str, epoch: int, events: Sequence[SyncEvent], apply: ApplyFn, *,
                     rehydrated: bool = False, expect: int | None = None) -> ApplyResult:
        """Apply consecutive events of ``(stream_id, epoch)`` from the stored watermark on, atomically with it.

        Events at or below the watermark are skipped (duplicates); the first event that is not the
        next seq ends the batch (the caller resubscribes).  Events of another stream or epoch are a
        caller bug.  ``rehydrated``: the batch is the rest of the retained window (a rehydrate's
        snapshot); when every event of it is applied, the checkpoint's ``rehydrating`` mark is cleared
        in the same transaction.  ``expect``: the watermark the caller holds; a stored one that differs was
        moved by someone else (a second follower of the stream on this file) and is refused, nothing applied.
        """
        with self.transaction() as tx:
            cp = self.load(stream_id)
            if cp is None or cp.epoch != epoch:
                raise LocalProtocolError(f"no checkpoint for {stream_id!r} in epoch {epoch} (have {cp})")
            if expect is not None and cp.watermark != expect:
                raise LocalProtocolError(
                    f"the checkpoint of {stream_id!r} moved to {cp.watermark} under a consumer at {expect}: another "
                    "one follows the stream in this file (one follower per stream and file)")
            watermark, applied, error, complete = cp.watermark, 0, None, True
            for event in events:
                if event.stream_id != stream_id or event.epoch != epoch:
                    raise LocalProtocolError(f"event {event.stream_id!r}/{event.epoch}/{event.seq} is not of "
                                             f"{stream_id!r} in epoch {epoch}")
                if event.seq <= watermark:
                    continue
                if event.seq != watermark + 1:
                    complete = False
                    break
                tx.execute("SAVEPOINT syncref_event")
                try:
                    returned: object = apply(tx, event)  # type: ignore[func-returns-value]  # (an async def's)
                    if inspect.isawaitable(returned):  # an async def apply: nothing of it ran
                        close = getattr(returned, "close", None)
                        if close is not None:
                            close()  # (no "never awaited" warning: the error says it)
                        raise LocalProtocolError("apply returned an awaitable (an async def?): it must apply the event "
                                                 "before it returns, inside the checkpoint's transaction")
                    self._still_open()
                except Exception as exc:
                    if not tx.in_transaction:
                        raise
                    tx.execute("ROLLBACK TO syncref_event")
                    tx.execute("RELEASE syncref_event")
                    error = exc
                    complete = False
                    break
                tx.execute("RELEASE syncref_event")
                watermark, applied = event.seq, applied + 1
            ends_rehydrate = rehydrated and complete and cp.rehydrating
            if applied or ends_rehydrate:
                tx.execute("UPDATE syncref_checkpoint SET watermark = ?, updated_at = ?, "
                           "rehydrating = rehydrating AND NOT ? WHERE stream_id = ?",
                           (watermark, self._clock(), int(ends_rehydrate), stream_id))
        return ApplyResult(watermark, applied, error)

    def _still_open(self) -> None:
        if not self.db.in_transaction:
            raise LocalProtocolError("the application committed or rolled back the checkpoint transaction; "
                                     "apply and on_rebootstrap must leave transaction control to the store")


def _check_u63(name: str, value: int) -> None:
    if not is_u64(value) or value > _SQLITE_MAX:
        raise LocalProtocolError(f"{name} {value!r} does not fit a SQLite INTEGER")
