"""The engine's tables: mutable, indexed, transactional.

Rows are the spec's frozen row values; the containers are the engine's own:

* every table with a primary key is a dict ``key -> row`` (the PK index);
* ``sync_event`` has no PK: it is held per stream as a :class:`~reference.eventlog.StreamLog`,
  columns whose position is ``seq - floor`` (the (stream_id, seq) ordering index: retained seqs
  are contiguous, so a position is the index) and an ``idempotency_key -> seq`` table (the
  (stream_id, idempotency_key) unique index).  A replay from W reads the columns from a
  position.  Rows of this table are built when read (``StreamLog.events``, ``get``, ``after``).

Writes go through :class:`Txn`, which keeps an undo log (rollback restores every index) and
the ordered delta (deletes and inserts per table, event-table rows separately).  An update is a
delete plus an insert, as the wire reports it.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

from reference.eventlog import StreamLog
from spec.errors import LocalProtocolError
from spec.schema import TABLES
from spec.values import Row, SyncEvent

PK_TABLES = {t.name: t for t in TABLES if t.primary_key is not None and not t.event}
EVENT_TABLES = {t.name for t in TABLES if t.event}
ROW_TABLE = {t.row_type: t.name for t in TABLES}


def _key_getter(columns: tuple[str, ...]) -> Callable[[Row], tuple[object, ...]]:
    """``Table.key_of`` for a table with these primary-key columns, as one C-level attribute read
    (``attrgetter`` of several names already gives the tuple)."""
    if len(columns) == 1:
        one = operator.attrgetter(columns[0])
        return lambda row: (one(row),)
    return operator.attrgetter(*columns)


_FIELDS: dict[type, Callable[[Row], tuple[object, ...]]] = {
    t.row_type: operator.attrgetter(*(f.name for f in fields(t.row_type))) for t in TABLES}


def _differ(old: Row, new: Row) -> bool:
    """``old != new`` as the rows' dataclass equality has it (the same type and equal fields), the
    fields read by one ``attrgetter`` each instead of two tuples built in Python."""
    get = _FIELDS.get(type(old))
    if get is None or type(new) is not type(old):
        return bool(old != new)
    return bool(get(old) != get(new))


KEY_OF: dict[str, Callable[[Row], tuple[object, ...]]] = {
    name: _key_getter(t.primary_key) for name, t in PK_TABLES.items() if t.primary_key is not None}


class SortedKeys:
    """Keys kept sorted, for prefix ranges (:func:`count_prefix`), updated lazily: an update of a row is
    a delete and an insert of its key (every append does it to its stream's row), so both are
    noted as pending changes that cancel out, and the sorted list is brought up to date when next
    read -- one insertion per key added, one removal per key removed, since the last read."""

    __slots__ = ("_added", "_keys", "_removed")

    def __init__(self, keys: Iterator[str] | None = None) -> None:
        self._keys: list[str] = sorted(keys or ())
        self._added: set[str] = set()
        self._removed: set[str] = set()

    def add(self, key: str) -> None:
        if key in self._removed:
            self._removed.discard(key)
        elif key in self._added:
            raise LocalProtocolError(f"key {key!r} added twice")
        else:
            self._added.add(key)

    def remove(self, key: str) -> None:
        # (a key removed twice is not refused: a set holds it once, and checking would cost every
        # append -- each removes its stream's id -- a lookup; the db refuses a row deleted twice)
        if key in self._added:
            self._added.discard(key)
        else:
            self._removed.add(key)

    def keys(self) -> list[str]:
        """The keys, sorted.  A pending removal of a key not held, or addition of one held (the
        caller's bug: a row the db did not hold deleted), raises :class:`LocalProtocolError` here
        instead of removing the next key in its place or holding one twice."""
        keys = self._keys
        for key in self._removed:
            i = bisect.bisect_left(keys, key)
            if i == len(keys) or keys[i] != key:
                raise LocalProtocolError(f"key {key!r} removed but not held")
            del keys[i]
        # many at once (a first read after many were created): one sort of the runs; none held: the
        # sort alone (nothing to check the added keys against)
        sort = len(self._added) > 16 or not keys
        for key in self._added if keys else ():
            i = bisect.bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                raise LocalProtocolError(f"key {key!r} added but already held")
            if not sort:
                keys.insert(i, key)
        if sort:
            keys.extend(self._added)
            keys.sort()
        self._added.clear()
        self._removed.clear()
        return keys

    def peek(self) -> list[str] | None:
        """What :meth:`keys` would return, the pending changes left pending (for a consistency check
        that must not change what it checks); None where :meth:`keys` would raise."""
        held = set(self._keys)
        if len(held) != len(self._keys) or not self._removed <= held or not self._added.isdisjoint(held):
            return None
        return sorted((held - self._removed) | self._added)


def prefix_end(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix`` (None: no such
    string, every string from ``prefix`` on starts with it)."""
    while prefix and prefix[-1] == "\U0010ffff":
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


def count_prefix(keys: list[str], prefix: str) -> tuple[int, int]:
    """Positions ``lo, hi``: ``keys[lo:hi]`` are the keys of sorted ``keys`` that start with
    ``prefix`` (two binary searches)."""
    lo = bisect.bisect_left(keys, prefix)
    end = prefix_end(prefix)
    return lo, len(keys) if end is None else bisect.bisect_left(keys, end, lo)


class ColumnIndex:
    """The primary keys of a table's rows by the value of some columns (a row is held once under
    each distinct non-None value of them): the rows an identity owns, requested or serves."""

    __slots__ = ("_get", "by_value", "columns")

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self._get = operator.attrgetter(*columns) if len(columns) > 1 else (
            lambda row, one=operator.attrgetter(columns[0]): (one(row),))
        self.by_value: dict[object, dict[object, None]] = {}

    def add(self, key: object, row: Row) -> None:
        for value in set(self._get(row)):
            if value is not None:
                self.by_value.setdefault(value, {})[key] = None

    def remove(self, key: object, row: Row) -> None:
        for value in set(self._get(row)):
            if value is not None:
                held = self.by_value[value]
                del held[key]
                if not held:
                    del self.by_value[value]


class Db:
    def __init__(self) -> None:
        self.pk: dict[str, dict[object, Row]] = {name: {} for name in PK_TABLES}
        self.logs: dict[str, StreamLog] = {}
        # the stream ids whose log changed since a snapshot capture last took them (every mutation of a
        # StreamLog goes through this class and adds its stream here: one set.add; at most one entry
        # per stream, emptied by reference.snapshot.Capturer, ADR-0011 "Incremental capture")
        self.changed_logs: set[str] = set()
        self.epoch_floor = 1
        self.version_floor = 1  # the version a new provider or assignment starts at (ADR-0003)
        # secondary indexes for reads that count only what a caller may read (engine._readable)
        self.stream_ids = SortedKeys()  # the keys of sync_stream
        self._log_ids = SortedKeys()  # the keys of logs (a log is never removed: see log_ids)
        self._log_count = 0  # how many of logs' keys _log_ids holds
        self.by_column: dict[str, ColumnIndex] = {
            "sync_checkpoint": ColumnIndex(("owner",)),
            "compute_assignment": ColumnIndex(("requester", "provider_owner"))}

    def reindex(self) -> None:
        """Rebuild the secondary indexes from ``pk`` and ``logs`` (after they were set whole)."""
        self.stream_ids = SortedKeys(row.stream_id for row in self.pk["sync_stream"].values()  # type: ignore[union-attr]
                                     )
        self._log_ids, self._log_count = SortedKeys(iter(self.logs)), len(self.logs)
        for table, index in self.by_column.items():
            index.by_value.clear()
            for key, row in self.pk[table].items():
                index.add(key, row)

    def secondary_indexes_agree(self) -> bool:
        """The secondary indexes hold what a rebuild from the rows would (a consistency check)."""
        # (read through peek: applying the pending changes here would leave none pending from one
        # message to the next in a run with the check on, as there are without it)
        unindexed = list(itertools.islice(self.logs, self._log_count, None))
        logs = self._log_ids.peek()
        if self.stream_ids.peek() != sorted(row.stream_id for row in self.pk["sync_stream"].values()  # type: ignore[union-attr]
                                            ) or logs is None or sorted(logs + unindexed) != sorted(self.logs):
            return False
        for table, index in self.by_column.items():
            fresh = ColumnIndex(index.columns)
            for key, row in self.pk[table].items():
                fresh.add(key, row)
            if {v: set(k) for v, k in fresh.by_value.items()} != {v: set(k) for v, k in index.by_value.items()}:
                return False
        return True

    def log_ids(self) -> list[str]:
        """The stream ids of ``logs``, sorted.  A log is added, never removed (a rollback of a
        stream's first event leaves it empty), and a dict keeps its insertion order: the ids not
        yet indexed are the last ones."""
        logs = self.logs
        if len(logs) != self._log_count:
            for sid in itertools.islice(logs, self._log_count, None):
                self._log_ids.add(sid)
            self._log_count = len(logs)
        return self._log_ids.keys()

    def get(self, table: str, key: object) -> Row | None:
        return self.pk[table].get(key)

    def rows(self, table: str) -> Iterator[Row]:
        if table == "sync_event":
            for log in self.logs.values():
                yield from log.events
        elif table in self.pk:
            yield from self.pk[table].values()

    def event_count(self) -> int:
        return sum(len(log.events) for log in self.logs.values())

    # raw mutations (used by Txn, and by recovery when replaying deltas)
    def _insert(self, row: Row) -> None:
        table = ROW_TABLE[type(row)]
        if isinstance(row, SyncEvent):
            self.changed_logs.add(row.stream_id)
            log = self.logs.get(row.stream_id)
            if log is None:
                log = self.logs[row.stream_id] = StreamLog(row.stream_id, row.seq)
            if len(log) and row.seq != log.floor + len(log):
                raise LocalProtocolError(f"event {row.stream_id}/{row.seq} is not the next seq")
            log.append(row)  # refuses a duplicate idempotency key
            return
        key = KEY_OF[table](row)
        index = self.pk[table]
        if key in index:
            raise LocalProtocolError(f"duplicate primary key {key} in {table}")
        index[key] = row
        if table == "sync_stream":
            self.stream_ids.add(key[0])  # type: ignore[arg-type]
        elif table in self.by_column:
            self.by_column[table].add(key, row)

    def _delete(self, row: Row) -> None:
        table = ROW_TABLE[type(row)]
        if isinstance(row, SyncEvent):
            self.changed_logs.add(row.stream_id)
            log = self.logs[row.stream_id]
            if len(log) and row.seq == log.floor and log.get(row.seq) == row:  # retention drops a prefix
                log.pop_first()
            elif len(log) and row.seq == log.floor + len(log) - 1 and log.get(row.seq) == row:  # rollback of an append
                log.pop_last()
            else:
                raise LocalProtocolError(f"event {row.stream_id}/{row.seq} is not at either end")
            return
        key = KEY_OF[table](row)
        held = self.pk[table].get(key)
        if held is not row and held != row:
            raise LocalProtocolError(f"row to delete not found in {table}")
        del self.pk[table][key]
        if table == "sync_stream":
            self.stream_ids.remove(key[0])  # type: ignore[arg-type]
        elif table in self.by_column:
            self.by_column[table].remove(key, held)

    def relabel_events(self, stream_id: str, old_epoch: int, new_epoch: int) -> None:
        """Move a stream's retained events of ``old_epoch`` to ``new_epoch`` in place (an unclean
        restart's continuation, ADR-0003): seqs, keys and positions are unchanged."""
        log = self.logs.get(stream_id)
        if log is None:
            return
        self.changed_logs.add(stream_id)
        log.relabel(old_epoch, new_epoch)

    def _restore(self, row: Row) -> None:
        """Undo a delete (rollback only)."""
        if isinstance(row, SyncEvent):
            log = self.logs[row.stream_id]
            if len(log) and row.seq == log.floor - 1:
                self.changed_logs.add(row.stream_id)
                log.push_first(row)
            else:
                self._insert(row)
        else:
            self._insert(row)


class Txn:
    """One transaction: writes with an undo log and the ordered delta."""

    # one per call (an append reads and writes these a dozen times): slots, not an instance dict
    __slots__ = ("_inserted", "db", "deletes", "events", "inserts", "old_epoch_floor", "old_version_floor", "undo")

    def __init__(self, db: Db) -> None:
        self.db = db
        self.undo: list[tuple[str, Any]] = []  # ("ins"|"del", row) or ("relabel", (stream, old, new)), as applied
        self.deletes: dict[str, list[Row]] = {}
        self.inserts: dict[str, list[Row]] = {}
        # how many of each row ``inserts`` holds, so delete tests it in O(1); built by the first delete
        # that follows an insert (an append deletes its stream row before it inserts anything, and
        # hashing every inserted row by value for nothing was a visible share of its cost)
        self._inserted: dict[Row, int] | None = None
        self.events: dict[str, list[Row]] = {}
        self.old_epoch_floor = db.epoch_floor
        self.old_version_floor = db.version_floor

    def insert(self, row: Row) -> None:
        table = ROW_TABLE[type(row)]
        if table in EVENT_TABLES:
            self.events.setdefault(table, []).append(row)
            return
        self.db._insert(row)
        self.undo.append(("ins", row))
        self.inserts.setdefault(table, []).append(row)
        inserted = self._inserted
        if inserted is not None:
            inserted[row] = inserted.get(row, 0) + 1

    def delete(self, row: Row) -> None:
        table = ROW_TABLE[type(row)]
        self.db._delete(row)
        self.undo.append(("del", row))
        # a row inserted earlier in this transaction leaves the inserts instead of joining the
        # deletes; the count keeps that test O(1) (a recovery updates every assignment and
        # provider row in one transaction: a list scan per delete was quadratic in them)
        inserted = self._inserted
        if inserted is None:
            if not self.inserts:  # nothing inserted yet: nothing to count
                self.deletes.setdefault(table, []).append(row)
                return
            inserted = self._inserted = {}
            for rows in self.inserts.values():
                for held in rows:
                    inserted[held] = inserted.get(held, 0) + 1
        count = inserted.get(row, 0)
        if count:
            inserted[row] = count - 1
            self.inserts[table].remove(row)
        else:
            self.deletes.setdefault(table, []).append(row)

    def update(self, old: Row, new: Row) -> None:
        if _differ(old, new):
            self.delete(old)
            self.insert(new)

    def relabel_events(self, stream_id: str, old_epoch: int, new_epoch: int) -> None:
        """:meth:`Db.relabel_events`, undone by a rollback.  Not part of the delta: the recovery record
        that does it names the move in its stream rows (continues_epoch -> epoch), and recovery and
        replay re-derive the relabel from them (reference.engine.apply_record)."""
        self.db.relabel_events(stream_id, old_epoch, new_epoch)
        self.undo.append(("relabel", (stream_id, old_epoch, new_epoch)))

    @property
    def wrote(self) -> bool:
        return any(self.deletes.values()) or any(self.inserts.values()) or any(self.events.values()) \
            or self.db.epoch_floor != self.old_epoch_floor or self.db.version_floor != self.old_version_floor

    def rollback(self) -> None:
        for op, row in reversed(self.undo):
            if op == "ins":
                self.db._delete(row)
            elif op == "relabel":
                stream_id, old_epoch, new_epoch = row
                self.db.relabel_events(stream_id, new_epoch, old_epoch)
            else:
                self.db._restore(row)
        self.db.epoch_floor = self.old_epoch_floor
        self.db.version_floor = self.old_version_floor
        self.undo.clear()
