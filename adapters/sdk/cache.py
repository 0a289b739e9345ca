"""The client table cache: subscribed rows, reference-counted, with change callbacks.

It follows the official SpacetimeDB SDKs (``table_cache.ts``) so that an application written
against them finds the same behaviour here:

* a row is keyed by its primary key when the table has one (:mod:`spec.schema`), else by its exact
  BSATN bytes;
* every key carries a reference count: the server sends a row once per query (and per query set)
  that matches it, and the row stays cached until as many deletes have arrived as inserts;
* one message is applied as one batch.  Its rows are merged across query sets by table; within a
  table, a delete and an insert of the same primary key are an *update* (``on_update(old, new)``),
  and the refcount moves by inserts minus deletes; callbacks run after the whole batch has been
  applied, so a callback sees the cache in its post-message state;
* event tables (``presence_signal``, ``stream_signal``) are never cached: each row fires
  ``on_insert`` once and is gone.

Two additions make the cache survive a reconnect, which the official SDKs do not attempt.  The
cache remembers which rows each query set contributed.  When a set ends (``UnsubscribeApplied``)
its contribution is deleted, so the SDK never needs the server to send the dropped rows back.
When a connection is lost the cache keeps its rows (stale but usable), and when the resubscribed
set's snapshot arrives, the old contribution is deleted and the snapshot inserted *in one batch*:
rows that did not change fire nothing, rows that changed fire ``on_update``, and only real
differences fire inserts and deletes.

A callback that raises is logged and skipped; it cannot stop the batch or the other callbacks.
Rows the cache cannot place (a delete of a row it does not hold, a table the module does not have,
event rows for a persistent table) are ignored and logged at most once per kind every
``STRAY_LOG_INTERVAL_S``, so a confused or hostile server cannot flood the application's log.
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from adapters.guard import RateLimitedLog
from adapters.sdk.rows import DecodedRow, QuerySetChange, TableChange
from spec.errors import LocalProtocolError
from spec.schema import TABLES, Table
from spec.values import Row

__all__ = ["ClientCache", "DeleteCallback", "InsertCallback", "TableCache", "UpdateCallback"]

log = logging.getLogger("syncref.sdk.cache")

InsertCallback = Callable[[Row], None]
DeleteCallback = Callable[[Row], None]
UpdateCallback = Callable[[Row, Row], None]
Key = Hashable
STRAY_LOG_INTERVAL_S = 10.0  # at most one log line per kind of stray server input this often (the SDK's)


@dataclass(slots=True)
class _Entry:
    row: Row
    raw: bytes
    count: int


@dataclass(frozen=True, slots=True)
class _Pending:
    kind: str  # insert, delete, update
    table: TableCache
    old: Row | None
    new: Row


class TableCache:
    """The cached rows of one table and its callbacks."""

    def __init__(self, table: Table, warnings: RateLimitedLog | None = None) -> None:
        self.schema = table
        self.name = table.name
        self._warn = warnings if warnings is not None else RateLimitedLog(log, STRAY_LOG_INTERVAL_S)
        self._rows: dict[Key, _Entry] = {}
        self._on_insert: list[InsertCallback] = []
        self._on_delete: list[DeleteCallback] = []
        self._on_update: list[UpdateCallback] = []

    # --- reading -------------------------------------------------------------------------------

    def key(self, row: DecodedRow) -> Key:
        """The cache key: the primary key, or the row's bytes for a table without one."""
        pk = self.schema.key_of(row.row)
        return row.raw if pk is None else pk

    def __len__(self) -> int:
        return len(self._rows)

    def count(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Row]:
        return iter([e.row for e in self._rows.values()])

    def rows(self) -> list[Row]:
        return [e.row for e in self._rows.values()]

    def find(self, *pk: object) -> Row | None:
        """The row with this primary key (tables with a primary key only)."""
        if self.schema.primary_key is None:
            raise LocalProtocolError(f"{self.name} has no primary key")
        entry = self._rows.get(tuple(pk))
        return None if entry is None else entry.row

    def refcount(self, key: Key) -> int:
        entry = self._rows.get(key)
        return 0 if entry is None else entry.count

    # --- callbacks -----------------------------------------------------------------------------

    def on_insert(self, cb: InsertCallback) -> Callable[[], None]:
        """Register ``cb(row)``; returns a function that removes it."""
        self._on_insert.append(cb)
        return lambda: self._on_insert.remove(cb)

    def on_delete(self, cb: DeleteCallback) -> Callable[[], None]:
        self._on_delete.append(cb)
        return lambda: self._on_delete.remove(cb)

    def on_update(self, cb: UpdateCallback) -> Callable[[], None]:
        """Register ``cb(old, new)`` (primary-key tables only: a delete and an insert of one key)."""
        self._on_update.append(cb)
        return lambda: self._on_update.remove(cb)

    def _fire(self, p: _Pending) -> None:
        callbacks: Sequence[Callable[..., None]]
        args: tuple[Row, ...]
        if p.kind == "update":
            assert p.old is not None
            callbacks, args = list(self._on_update), (p.old, p.new)
        else:
            callbacks, args = list(self._on_insert if p.kind == "insert" else self._on_delete), (p.new,)
        for cb in callbacks:
            try:
                cb(*args)
            except Exception:
                log.exception("%s callback on %s raised", p.kind, self.name)

    # --- applying ------------------------------------------------------------------------------

    def _apply(self, inserts: Sequence[DecodedRow], deletes: Sequence[DecodedRow],
               events: Sequence[DecodedRow]) -> list[_Pending]:
        out: list[_Pending] = []
        if self.schema.event:
            return [_Pending("insert", self, None, r.row) for r in (*inserts, *events)]
        if events:
            self._warn.log(f"events:{self.name}", logging.WARNING,
                           f"event rows for the persistent table {self.name}: ignored")
        ins: dict[Key, tuple[DecodedRow, int]] = {}
        dels: dict[Key, tuple[DecodedRow, int]] = {}
        for rows, into in ((inserts, ins), (deletes, dels)):
            for r in rows:
                k = self.key(r)
                into[k] = (r, into.get(k, (r, 0))[1] + 1)
        pk_table = self.schema.primary_key is not None
        for k, (new, n_ins) in ins.items():
            n_del = dels.pop(k, (new, 0))[1]
            if n_del and pk_table:
                out.extend(self._update(k, new, n_ins - n_del))
            elif n_ins > n_del:
                out.extend(self._insert(k, new, n_ins - n_del))
            elif n_del > n_ins:
                out.extend(self._delete(k, n_del - n_ins))
        for k, (_, n_del) in dels.items():
            out.extend(self._delete(k, n_del))
        return out

    def _insert(self, k: Key, r: DecodedRow, n: int) -> list[_Pending]:
        entry = self._rows.get(k)
        if entry is None:
            self._rows[k] = _Entry(r.row, r.raw, n)
            return [_Pending("insert", self, None, r.row)]
        entry.count += n
        return []

    def _delete(self, k: Key, n: int) -> list[_Pending]:
        entry = self._rows.get(k)
        if entry is None:
            self._warn.log(f"delete:{self.name}", logging.WARNING, f"delete of a row not in the {self.name} cache: "
                           "ignored")
            return []
        if entry.count <= n:
            del self._rows[k]
            return [_Pending("delete", self, None, entry.row)]
        entry.count -= n
        return []

    def _update(self, k: Key, new: DecodedRow, delta: int) -> list[_Pending]:
        entry = self._rows.get(k)
        if entry is None:
            self._warn.log(f"update:{self.name}", logging.WARNING,
                           f"update of a row not in the {self.name} cache: treated as an insert")
            return self._insert(k, new, delta) if delta > 0 else []
        old = entry.row
        if entry.count + delta <= 0:
            del self._rows[k]
            return [_Pending("delete", self, None, old)]
        entry.row, entry.raw, entry.count = new.row, new.raw, entry.count + delta
        return [] if old == new.row else [_Pending("update", self, old, new.row)]


class ClientCache:
    """All tables of the module, plus which rows each query set contributed."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._warn = RateLimitedLog(log, STRAY_LOG_INTERVAL_S, clock)
        self.tables: dict[str, TableCache] = {t.name: TableCache(t, self._warn) for t in TABLES}
        self._contrib: dict[int, dict[tuple[str, Key], _Entry]] = {}
        self._owner: weakref.ref[object] | None = None

    def attach(self, owner: object) -> None:
        """Serve ``owner`` (a session) alone until it calls :meth:`release` (or is garbage).
        Contributions are kept by query set id, and ids are per connection: two open sessions
        sharing a cache would mix their rows, so a second one is refused
        (:class:`~spec.errors.LocalProtocolError`).  A session dropped without closing is in a
        reference cycle once it has a subscription, so garbage is collected once before refusing
        (the refusal does not depend on the collector's timing), and the rows its sets left are
        dropped before the next session is served (nothing ended those sets)."""
        current = None if self._owner is None else self._owner()
        if current is not None and current is not owner:
            del current
            gc.collect()
            current = None if self._owner is None else self._owner()
        if current is not None and current is not owner:
            raise LocalProtocolError("this ClientCache is already in use by another open connection: give each "
                                     "Connection its own cache (close the other first to reuse it)")
        if self._owner is not None and current is None and self._contrib:  # dropped, not closed
            self.apply([], drop=list(self._contrib))
        self._owner = weakref.ref(owner)

    def release(self, owner: object) -> None:
        """``owner`` is done with the cache (its sets ended); another session may attach."""
        if self._owner is not None and self._owner() is owner:
            self._owner = None

    def table(self, name: str) -> TableCache:
        try:
            return self.tables[name]
        except KeyError:
            raise LocalProtocolError(f"unknown table {name!r}") from None

    def __getitem__(self, name: str) -> TableCache:
        return self.table(name)

    def query_sets(self) -> list[int]:
        """The query sets that have contributed rows (or an empty snapshot) and not ended."""
        return sorted(self._contrib)

    def contribution(self, query_set_id: int) -> int:
        """How many row references ``query_set_id`` holds."""
        return sum(e.count for e in self._contrib.get(query_set_id, {}).values())

    def apply(self, changes: Iterable[QuerySetChange], *, drop: Iterable[int] = (),
              replace: Iterable[tuple[int, int]] = ()) -> None:
        """Apply one message as one batch, then run the callbacks.

        ``changes``: the rows per query set (a snapshot is all inserts).  ``drop``: query sets that
        ended; their whole contribution is deleted.  ``replace``: ``(old, new)`` pairs; ``old``'s
        contribution is deleted in the same batch as ``new``'s snapshot is inserted (a resubscription
        after a reconnect), so unchanged rows fire no callbacks.
        """
        inserts: dict[str, list[DecodedRow]] = {}
        deletes: dict[str, list[DecodedRow]] = {}
        events: dict[str, list[DecodedRow]] = {}
        gone = [*drop, *(old for old, _ in replace)]
        for qs in gone:
            for (name, _), e in self._contrib.pop(qs, {}).items():
                deletes.setdefault(name, []).extend([DecodedRow(e.row, e.raw)] * e.count)
        for qsc in changes:
            contrib = self._contrib.setdefault(qsc.query_set_id, {})
            for t in qsc.tables:
                cache = self.tables.get(t.table)
                if cache is None:
                    self._warn.log("unknown_table", logging.WARNING, f"rows for unknown table {t.table[:80]!r}: "
                                   "ignored")
                    continue
                inserts.setdefault(t.table, []).extend(t.inserts)
                deletes.setdefault(t.table, []).extend(t.deletes)
                events.setdefault(t.table, []).extend(t.events)
                if not cache.schema.event:
                    self._count(contrib, cache, t)
        pending: list[_Pending] = []
        for name in sorted({*inserts, *deletes, *events}):
            pending.extend(self.tables[name]._apply(inserts.get(name, ()), deletes.get(name, ()),
                                                    events.get(name, ())))
        for p in pending:
            p.table._fire(p)

    @staticmethod
    def _count(contrib: dict[tuple[str, Key], _Entry], cache: TableCache, t: TableChange) -> None:
        for r in t.deletes:  # deletes first: an update is the old row out, then the new one in
            k = (t.table, cache.key(r))
            entry = contrib.get(k)
            if entry is not None:
                entry.count -= 1
                if entry.count <= 0:
                    del contrib[k]
        for r in t.inserts:
            k = (t.table, cache.key(r))
            entry = contrib.get(k)
            if entry is None:
                contrib[k] = _Entry(r.row, r.raw, 1)
            else:
                entry.row, entry.raw, entry.count = r.row, r.raw, entry.count + 1
