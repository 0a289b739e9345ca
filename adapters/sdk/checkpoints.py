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

``apply`` receives the ``sqlite3.Connection`` itself and must not commit or roll back (the store
checks that the transaction is still open afterwards and fails loudly if not).  The table is
``syncref_checkpoint(stream_id PRIMARY KEY, epoch, watermark, updated_at)``; the file is opened
in WAL mode with ``synchronous=FULL`` by default, so a returned commit survives power loss.
Reopening the file restores every stream's (epoch, watermark).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spec.errors import LocalProtocolError
from spec.values import SyncEvent, is_u64

__all__ = ["ApplyFn", "ApplyResult", "Checkpoint", "CheckpointStore"]

ApplyFn = Callable[[sqlite3.Connection, SyncEvent], None]

_SCHEMA = """CREATE TABLE IF NOT EXISTS syncref_checkpoint (
    stream_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL CHECK (epoch >= 0),
    watermark INTEGER NOT NULL CHECK (watermark >= 0),
    updated_at INTEGER NOT NULL
)"""
_SQLITE_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    stream_id: str
    epoch: int
    watermark: int


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
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

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
        row = self.db.execute("SELECT epoch, watermark FROM syncref_checkpoint WHERE stream_id = ?",
                              (stream_id,)).fetchone()
        return None if row is None else Checkpoint(stream_id, int(row[0]), int(row[1]))

    def all(self) -> list[Checkpoint]:
        rows = self.db.execute("SELECT stream_id, epoch, watermark FROM syncref_checkpoint ORDER BY stream_id")
        return [Checkpoint(s, int(e), int(w)) for s, e, w in rows]

    # --- writing -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: commits when the block ends, rolls back if it raises."""
        if self.db.in_transaction:
            raise LocalProtocolError("a checkpoint transaction is already open")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self._still_open()
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def reset(self, tx: sqlite3.Connection, stream_id: str, epoch: int, watermark: int) -> None:
        """Set the checkpoint (inside :meth:`transaction`); used to start a stream or after a rebootstrap."""
        if tx is not self.db or not tx.in_transaction:
            raise LocalProtocolError("reset runs inside CheckpointStore.transaction()")
        _check_u63("epoch", epoch)
        _check_u63("watermark", watermark)
        tx.execute("INSERT INTO syncref_checkpoint (stream_id, epoch, watermark, updated_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (stream_id) DO UPDATE SET epoch = excluded.epoch, watermark = excluded.watermark, "
                   "updated_at = excluded.updated_at", (stream_id, epoch, watermark, self._clock()))

    def apply_events(self, stream_id: str, epoch: int, events: Sequence[SyncEvent], apply: ApplyFn) -> ApplyResult:
        """Apply consecutive events of ``(stream_id, epoch)`` from the stored watermark on, atomically with it.

        Events at or below the watermark are skipped (duplicates); the first event that is not the
        next seq ends the batch (the caller resubscribes).  Events of another stream or epoch are a
        caller bug.
        """
        with self.transaction() as tx:
            cp = self.load(stream_id)
            if cp is None or cp.epoch != epoch:
                raise LocalProtocolError(f"no checkpoint for {stream_id!r} in epoch {epoch} (have {cp})")
            watermark, applied, error = cp.watermark, 0, None
            for event in events:
                if event.stream_id != stream_id or event.epoch != epoch:
                    raise LocalProtocolError(f"event {event.stream_id!r}/{event.epoch}/{event.seq} is not of "
                                             f"{stream_id!r} in epoch {epoch}")
                if event.seq <= watermark:
                    continue
                if event.seq != watermark + 1:
                    break
                tx.execute("SAVEPOINT syncref_event")
                try:
                    apply(tx, event)
                    self._still_open()
                except Exception as exc:
                    if not tx.in_transaction:
                        raise
                    tx.execute("ROLLBACK TO syncref_event")
                    tx.execute("RELEASE syncref_event")
                    error = exc
                    break
                tx.execute("RELEASE syncref_event")
                watermark, applied = event.seq, applied + 1
            if applied:
                tx.execute("UPDATE syncref_checkpoint SET watermark = ?, updated_at = ? WHERE stream_id = ?",
                           (watermark, self._clock(), stream_id))
        return ApplyResult(watermark, applied, error)

    def _still_open(self) -> None:
        if not self.db.in_transaction:
            raise LocalProtocolError("the application committed or rolled back the checkpoint transaction; "
                                     "apply and on_rebootstrap must leave transaction control to the store")


def _check_u63(name: str, value: int) -> None:
    if not is_u64(value) or value > _SQLITE_MAX:
        raise LocalProtocolError(f"{name} {value!r} does not fit a SQLite INTEGER")
