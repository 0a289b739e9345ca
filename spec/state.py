"""The database state of the model, and the delta of one transaction.

:class:`DbState` is immutable: a mapping from table name to the tuple of its rows (insertion
order), plus ``epoch_floor`` -- the smallest epoch a newly created stream may get (it rises on
every unclean restart; see ADR-0001) -- and ``version_floor`` -- the version a new provider or
assignment row starts at (retention of a versioned row and every unclean restart raise it, so a
version number never names two contents; ADR-0003).  Event tables are always empty in a state: their rows
only ever appear in a :class:`Delta`.

:class:`Delta` is what one committed transaction wrote: per table, the rows it deleted and the
rows it inserted (an update is a delete of the old row plus an insert of the new one, as
SpacetimeDB reports it), and the event-table rows it emitted.

Lookups are linear scans on purpose: this is the obviously-correct model, not the fast one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import icontract

from spec.errors import LocalProtocolError
from spec.schema import PERSISTENT_TABLES, TABLES, table_of
from spec.values import Row, SyncStream

R = TypeVar("R", bound=Row)


def _table_or_none(row: Row) -> Any:
    try:
        return table_of(row)
    except KeyError:
        return None


def _empty_tables() -> Mapping[str, tuple[Row, ...]]:
    return {t.name: () for t in PERSISTENT_TABLES}


@dataclass(frozen=True, slots=True)
class DbState:
    tables: Mapping[str, tuple[Row, ...]] = field(default_factory=_empty_tables)
    epoch_floor: int = 1
    version_floor: int = 1

    def rows(self, table: str) -> tuple[Row, ...]:
        return self.tables.get(table, ())

    def well_formed(self) -> bool:
        """Every table is one of the schema's persistent tables, holds only rows of its type, no
        two rows share a primary key, and every stream's continuation chain pairs each earlier
        epoch with its bound (``earlier_epochs``/``earlier_seqs`` of one length, ADR-0010): the
        states the reducers make; a precondition for functions CrossHair explores."""
        names = {t.name for t in PERSISTENT_TABLES}
        if not all(name in names and all(getattr(_table_or_none(r), "name", None) == name for r in rows)
                   for name, rows in self.tables.items()):
            return False
        by_name = {t.name: t for t in PERSISTENT_TABLES}
        return all(len({by_name[name].key_of(r) for r in rows}) == len(rows) for name, rows in self.tables.items()
                   if by_name[name].primary_key is not None) and all(
            len(s.earlier_epochs) == len(s.earlier_seqs) for s in self.of_type(SyncStream))

    def of_type(self, row_type: type[R]) -> Iterator[R]:
        for r in self.rows(table_of_type(row_type)):
            assert isinstance(r, row_type)
            yield r

    def find(self, row_type: type[R], pred: Callable[[R], bool]) -> R | None:
        for r in self.of_type(row_type):
            if pred(r):
                return r
        return None

    def all_rows(self) -> Iterator[Row]:
        for rows in self.tables.values():
            yield from rows

    def canonical(self) -> Mapping[str, frozenset[Row]]:
        """Order-free view, for comparing two states."""
        return {name: frozenset(rows) for name, rows in self.tables.items()}


def table_of_type(row_type: type[R]) -> str:
    for t in TABLES:
        if t.row_type is row_type:
            return t.name
    raise LocalProtocolError(f"{row_type.__name__} is not a row type")


@dataclass(frozen=True, slots=True)
class TableDelta:
    table: str
    deletes: tuple[Row, ...] = ()
    inserts: tuple[Row, ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    tables: tuple[TableDelta, ...] = ()

    @property
    def empty(self) -> bool:
        return all(not td.deletes and not td.inserts for td in self.tables)

    def for_table(self, name: str) -> TableDelta:
        for td in self.tables:
            if td.table == name:
                return td
        return TableDelta(name)


def delta_accounts(before: DbState, after: DbState, delta: Delta) -> bool:
    """Cheap half of :func:`delta_is_diff`: each table appears at most once in ``delta``, event tables
    stay empty in the state and are never deleted from, and every persistent table's size moved by
    exactly inserts - deletes."""
    names = [td.table for td in delta.tables]
    if len(set(names)) != len(names):
        return False
    for t in TABLES:
        td = delta.for_table(t.name)
        if t.event:
            if after.rows(t.name) or td.deletes:
                return False
        elif len(after.rows(t.name)) != len(before.rows(t.name)) - len(td.deletes) + len(td.inserts):
            return False
    return True


def delta_is_diff(before: DbState, after: DbState, delta: Delta) -> bool:
    """``delta`` is exactly what changed from ``before`` to ``after``: :func:`delta_accounts`, and per
    persistent table every deleted row was there and the rows after are those before, minus the deletes,
    plus the inserts (as multisets)."""
    if not delta_accounts(before, after, delta):
        return False
    for t in PERSISTENT_TABLES:
        td = delta.for_table(t.name)
        if not td.deletes and not td.inserts:
            if after.rows(t.name) != before.rows(t.name):
                return False
            continue
        pre, dels = Counter(before.rows(t.name)), Counter(td.deletes)
        if any(pre[r] < n for r, n in dels.items()):
            return False
        if Counter(after.rows(t.name)) != pre - dels + Counter(td.inserts):
            return False
    return True


class Tx:
    """Accumulates one transaction's writes over a base state (used only inside a reducer)."""

    def __init__(self, base: DbState) -> None:
        self.base = base
        self._tables: dict[str, list[Row]] = {k: list(v) for k, v in base.tables.items()}
        self._deletes: dict[str, list[Row]] = {}
        self._inserts: dict[str, list[Row]] = {}
        self.epoch_floor = base.epoch_floor
        self.version_floor = base.version_floor

    def view(self) -> DbState:
        return DbState({k: tuple(v) for k, v in self._tables.items()}, self.epoch_floor, self.version_floor)

    def insert(self, row: Row) -> None:
        t = table_of(row)
        if t.event:
            self._inserts.setdefault(t.name, []).append(row)
            return
        self._tables[t.name].append(row)
        self._inserts.setdefault(t.name, []).append(row)

    def delete(self, row: Row) -> None:
        t = table_of(row)
        if t.event:
            raise LocalProtocolError("event rows cannot be deleted")
        rows = self._tables[t.name]
        rows.remove(row)
        ins = self._inserts.get(t.name, [])
        if row in ins:  # inserted by this same transaction: the two cancel out
            ins.remove(row)
        else:
            self._deletes.setdefault(t.name, []).append(row)

    def update(self, old: Row, new: Row) -> None:
        if old == new:
            return
        self.delete(old)
        self.insert(new)

    @icontract.ensure(lambda self, result: delta_is_diff(self.base, result[0], result[1]),
                      "DELIV-2 (the delta, which fan-out sends, is exactly the state change)",
                      enabled=icontract.SLOW)
    @icontract.ensure(lambda self, result: delta_accounts(self.base, result[0], result[1]),
                      "EVT-1 (event rows never enter the state; each table's size moves by inserts - deletes)")
    def finish(self) -> tuple[DbState, Delta]:
        names = [t.name for t in TABLES]
        parts = tuple(TableDelta(n, tuple(self._deletes.get(n, ())), tuple(self._inserts.get(n, ())))
                      for n in names if self._deletes.get(n) or self._inserts.get(n))
        return self.view(), Delta(parts)


def with_epoch_floor(db: DbState, floor: int) -> DbState:
    return replace(db, epoch_floor=floor)


def row_dict(row: Row) -> dict[str, Any]:
    return {c: getattr(row, c) for c in table_of(row).column_names}
