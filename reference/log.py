"""The commit log record: what the engine hands to durability for every committed transaction.

A :class:`TxRecord` names the transaction (offset, kind, reducer or system action, caller,
arguments, timestamp) and carries its row delta for the persistent tables.  Records are
hash-chained: ``hash = sha256(prev_hash || canonical JSON of the record body)``; the body
includes the delta's own digest, so the chain commits to the data, and re-executing the calls
from empty state must reproduce every delta and so every hash (``syncref verify-log``).

:func:`body_json` and :func:`chain` are the definition.  :func:`make_record` computes the same
hash faster (it runs once per commit): the delta's JSON is written once and kept on the record
(``delta_json``, which the group-commit writer stores as is), row values come from a cached
``attrgetter`` per row type, and the canonical body text is assembled from canonical parts --
the caller's claims, the same object for every call on a connection, are encoded once.  A test
holds the fast path to the definition on random records.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from spec.auth import Claims
from spec.schema import TABLE_BY_NAME
from spec.values import ArrayT, ComputeAssignment, OptionT, Row, fast_init

GENESIS = "0" * 64


@fast_init  # spec.values: two per append sealed, and per record a restart decodes
@dataclass(frozen=True, slots=True)
class RowChange:
    table: str
    deletes: tuple[Row, ...]
    inserts: tuple[Row, ...]


@fast_init  # spec.values: built per record read, as the rows are
@dataclass(frozen=True, slots=True)
class TxRecord:
    offset: int
    kind: str  # "reducer" | "sweep" | "compact" | "disconnect" | "recovery"
    name: str  # reducer name, or the system action
    caller: Claims | None
    args: tuple[Any, ...]
    timestamp: int
    changes: tuple[RowChange, ...]
    prev_hash: str
    hash: str
    # the JSON text of changes_json(changes), when make_record built it ("" otherwise); not part
    # of the record's value, a cache of its serialisation
    delta_json: str = field(default="", compare=False, repr=False)
    # likewise the JSON text of the arguments (as ``args`` in the hashed body and the stored row)
    args_json: str = field(default="", compare=False, repr=False)


def row_json(row: Row) -> list[Any]:
    out: list[Any] = []
    for f in fields(row):
        v = getattr(row, f.name)
        out.append(list(v) if isinstance(v, tuple) else v)
    return out


@functools.cache
def row_maker(table: str) -> tuple[Any, tuple[int, ...]]:
    """A table's row type and the positions of its array columns (``Vec``, or an option of one):
    the only values JSON gives back as lists that must become tuples."""
    t = TABLE_BY_NAME[table]
    types = {c.name: c.type for c in t.columns}

    def is_array(ty: Any) -> bool:
        return isinstance(ty, ArrayT) or (isinstance(ty, OptionT) and isinstance(ty.inner, ArrayT))

    return t.row_type, tuple(i for i, f in enumerate(fields(t.row_type)) if is_array(types[f.name]))


def row_from_json(table: str, values: list[Any]) -> Row:
    make, arrays = row_maker(table)
    if arrays:
        values = list(values)
        for i in arrays:
            if isinstance(values[i], list):
                values[i] = tuple(values[i])
    row: Row = make(*values)
    return row


def claims_json(c: Claims | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"identity": c.identity, "scopes": sorted(c.scopes), "streams": list(c.streams),
            "device_id": c.device_id, "session_id": c.session_id, "client_build_id": c.client_build_id,
            "protocol_version": c.protocol_version, "schema_version": c.schema_version}


def claims_from_json(d: dict[str, Any] | None) -> Claims | None:
    if d is None:
        return None
    return Claims(d["identity"], frozenset(d["scopes"]), tuple(d["streams"]), d["device_id"], d["session_id"],
                  d["client_build_id"], d["protocol_version"], d["schema_version"])


_CANON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _canon(value: Any) -> str:
    return _CANON.encode(value)


try:  # CPython's C encoder, built once
    from _json import encode_basestring as _c_str
    from _json import make_encoder as _c_make_encoder
    _FLAT: Any = _c_make_encoder(None, _CANON.default, _c_str, None, ":", ",", True, False, False)
except ImportError:  # pragma: no cover - other interpreters
    _FLAT = None


def _encode_flat(value: Any) -> str:
    """``_canon(value)`` for a value of arrays and scalars only (rows, argument lists: no cycles,
    no floats): the same C encoder ``_CANON`` uses, built once instead of per call and without
    the bookkeeping for circular references a value of this shape cannot have."""
    if _FLAT is None:  # pragma: no cover
        return _canon(value)
    return "".join(_FLAT(value, 0))


def changes_json(changes: tuple[RowChange, ...]) -> list[Any]:
    return [[c.table, [row_json(r) for r in c.deletes], [row_json(r) for r in c.inserts]] for c in changes]


def body_json(offset: int, kind: str, name: str, caller: Claims | None, args: tuple[Any, ...], timestamp: int,
              changes: tuple[RowChange, ...]) -> dict[str, Any]:
    delta = _canon(changes_json(changes))
    return {"offset": offset, "kind": kind, "name": name, "caller": claims_json(caller),
            "args": [list(a) if isinstance(a, tuple) else a for a in args], "timestamp": timestamp,
            "delta_hash": hashlib.sha256(delta.encode("utf-8")).hexdigest()}


def chain(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _canon(body)).encode("utf-8")).hexdigest()


# --- the fast path ----------------------------------------------------------------------------------

_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def row_values(row: Row) -> tuple[Any, ...]:
    """A row's column values in order (a ``Vec`` column stays a tuple, which JSON writes as an
    array): :func:`row_json` without the per-row ``dataclasses.fields`` walk."""
    get = _VALUES.get(type(row))
    if get is None:
        names = [f.name for f in fields(row)]
        many = operator.attrgetter(*names)
        get = _VALUES[type(row)] = many if len(names) > 1 else (lambda r: (many(r),))
    return get(row)


def delta_text(changes: tuple[RowChange, ...]) -> str:
    """``_canon(changes_json(changes))``: the delta holds no objects, only arrays and scalars,
    so key order does not arise and one plain encoding is the canonical one."""
    return _encode_flat([[c.table, [row_values(r) for r in c.deletes], [row_values(r) for r in c.inserts]]
                         for c in changes])


@functools.cache
def _table_values(table: str) -> Callable[[Any], tuple[Any, ...]]:
    """:func:`row_values` for the rows of one table (all of its row type): one ``attrgetter``."""
    return operator.attrgetter(*(f.name for f in fields(TABLE_BY_NAME[table].row_type)))


# (table, its rows' values getter) in schema order, for delta_text_of's loop: a tuple walked in C
# instead of a call of the cached ``_table_values`` per table the delta has
_TABLE_GETTERS = tuple((t, _table_values(t)) for t in TABLE_BY_NAME)


def delta_text_of(deletes: Mapping[str, Sequence[Row]], inserts: Mapping[str, Sequence[Row]]) -> str:
    """:func:`delta_text` of the delta whose rows deleted and inserted per table are these (a
    :class:`~reference.db.Txn`'s lists: each table's rows of its row type), tables in schema order
    and those whose lists are empty left out, as ``delta_of`` builds it -- without building the
    :class:`RowChange` values; each list's values are read by the table's ``attrgetter``, in C."""
    out = []
    for t, get in _TABLE_GETTERS:
        d = deletes.get(t)
        i = inserts.get(t)
        if d or i:
            out.append([t, [*map(get, d)] if d else [], [*map(get, i)] if i else []])
    return "".join(_FLAT(out, 0)) if _FLAT is not None else _canon(out)


# the values getter and the schema position of each table, for delta_parts
_GETTER = dict(_TABLE_GETTERS)
_POSITION = {t: i for i, (t, _) in enumerate(_TABLE_GETTERS)}


def delta_parts(deletes: Mapping[str, Sequence[Row]], inserts: Mapping[str, Sequence[Row]]
                ) -> tuple[tuple[RowChange, ...], str]:
    """The :class:`RowChange` values of a transaction's per-table lists and their :func:`delta_text`,
    built in one pass over the tables the lists name (not over every table of the schema, as
    :func:`delta_text_of`): tables in schema order, those whose lists are both empty left out, each
    list's values read by its table's ``attrgetter`` (the lists of a :class:`~reference.db.Txn`
    hold rows of their table's type).  What :func:`make_record` is given by the engine's sealing of
    a commit, so that the delta's text is written without a second walk over the changes."""
    position = _POSITION.__getitem__
    tables = sorted(deletes.keys() | inserts.keys(), key=position) if len(deletes) + len(inserts) > 1 \
        else [*deletes, *inserts]
    changes = []
    out = []
    for t in tables:
        d = deletes.get(t)
        i = inserts.get(t)
        if d or i:
            dt = tuple(d) if d else ()
            it = tuple(i) if i else ()
            get = _GETTER[t]
            changes.append(RowChange(t, dt, it))
            out.append([t, [*map(get, dt)], [*map(get, it)]])
    return tuple(changes), ("".join(_FLAT(out, 0)) if _FLAT is not None else _canon(out))


@functools.lru_cache(maxsize=1024)
def _claims_by_value(c: Claims | None, version_type: str) -> str:
    """The text of ``c``, kept by its value *and* the name of its schema_version's type: claims
    whose versions are 1, True and 1.0 are equal (and hash alike) but have three texts."""
    return _canon(claims_json(c))


_CLAIMS_SEEN: dict[int, tuple[Claims | None, str]] = {}


def _claims_text(c: Claims | None) -> str:
    """The canonical text of a caller's claims.  Every record of a connection -- and, in replay,
    every record whose stored claims text is the same (``durability._claims``) -- carries the same
    ``Claims`` object, so the text is looked up by the object's identity first, by value (hashing
    its eight fields) only for an object not seen lately.  An entry holds its object, so no other
    object can have that id while the entry lives: an entry found by ``id(c)`` is ``c``'s."""
    held = _CLAIMS_SEEN.get(id(c))
    if held is not None:
        return held[1]
    text = _claims_by_value(c, type(c.schema_version).__name__ if c is not None else "")
    if len(_CLAIMS_SEEN) >= 1024:
        _CLAIMS_SEEN.clear()
    _CLAIMS_SEEN[id(c)] = (c, text)
    return text


# kind and reducer names come from small fixed sets: their JSON string is written once
_name_text = functools.lru_cache(maxsize=1024)(_CANON.encode)


def args_text(args: tuple[Any, ...]) -> str:
    """The JSON array of a call's arguments (a tuple argument is an array; arguments are flat, so
    there are no objects and no key order to decide).  The encoder writes a tuple as an array
    itself (the C encoder and ``JSONEncoder`` alike), so the arguments go to it as they are."""
    return _encode_flat(args)


def _body_text(offset: int, kind: str, name: str, caller: Claims | None, args: str, timestamp: int,
               delta_hash: str) -> str:
    """``_canon(body_json(...))`` written key by key in sorted order (args, caller, delta_hash,
    kind, name, offset, timestamp): the same text, without re-encoding the claims, the names or
    the integers (``int.__repr__`` is JSON's form of an int)."""
    return (f'{{"args":{args},"caller":{_claims_text(caller)},'
            f'"delta_hash":"{delta_hash}","kind":{_name_text(kind)},"name":{_name_text(name)},'
            f'"offset":{int.__repr__(offset)},"timestamp":{int.__repr__(timestamp)}}}')


def chain_hash(prev_hash: str, offset: int, kind: str, name: str, caller: Claims | None, args: str, timestamp: int,
               delta: str) -> str:
    """The chain hash of a record given its parts, the arguments and the delta as their JSON texts."""
    # _body_text, inline (one call fewer per record replayed)
    body = (f'{{"args":{args},"caller":{_claims_text(caller)},'
            f'"delta_hash":"{hashlib.sha256(delta.encode("utf-8")).hexdigest()}","kind":{_name_text(kind)},'
            f'"name":{_name_text(name)},"offset":{int.__repr__(offset)},"timestamp":{int.__repr__(timestamp)}}}')
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def record_hash(rec: TxRecord) -> str:
    """The chain hash of ``rec`` recomputed from its parts: :func:`make_record`'s hash, except that
    the delta's canonical text is the one the record carries (``delta_json``: the text a stored
    record was decoded from) when it has one -- hashing that text checks that it is the text the
    hash was made over, and the delta was decoded from it, so re-encoding it is not needed."""
    return chain_hash(rec.prev_hash, rec.offset, rec.kind, rec.name, rec.caller, rec.args_json or args_text(rec.args),
                      rec.timestamp, rec.delta_json or delta_text(rec.changes))


def make_record(offset: int, kind: str, name: str, caller: Claims | None, args: tuple[Any, ...], timestamp: int,
                changes: tuple[RowChange, ...], prev_hash: str, delta: str | None = None) -> TxRecord:
    """The record, hashed.  ``delta`` is ``delta_text(changes)`` when the caller has it already
    (:func:`delta_parts`), taken as it is: the engine's ``_seal``, its one caller that passes it,
    holds the sealed record's text to ``delta_text(changes)`` by a contract on ``icontract.SLOW`` (on
    in the tests).  The contract sits there, not here, so that this function stays undecorated and
    so in every plain mutation run (docs/mutation.md)."""
    if delta is None:
        delta = delta_text(changes)
    arguments = args_text(args)
    body = _body_text(offset, kind, name, caller, arguments, timestamp,
                      hashlib.sha256(delta.encode("utf-8")).hexdigest())
    digest = hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()
    return TxRecord(offset, kind, name, caller, args, timestamp, changes, prev_hash, digest, delta, arguments)


def record_floors(rec: TxRecord, epoch_floor: int, version_floor: int) -> tuple[int, int]:
    """The floors after ``rec``, given those before: they are state but not rows, so the log carries
    them implicitly.  A recovery record names both in its arguments (``(epoch_floor, version_floor)``);
    any record that deletes an assignment for good (retention: no insert under the same key) raises
    ``version_floor`` above that row's version, as the transaction itself did (ADR-0003 decision 5)."""
    return floors_after(rec.kind, rec.args, rec.changes, epoch_floor, version_floor)


def floors_after(kind: str, args: tuple[Any, ...], changes: tuple[RowChange, ...], epoch_floor: int,
                 version_floor: int) -> tuple[int, int]:
    """:func:`record_floors` of a record with these parts."""
    if kind == "recovery":
        return int(args[0]), int(args[1])
    for c in changes:  # (a loop, not ``any`` over a generator: this runs per record restored)
        if c.deletes and c.table == "compute_assignment":
            break
    else:
        return epoch_floor, version_floor  # the common case (appends): nothing to scan
    kept = {(c.table, TABLE_BY_NAME[c.table].key_of(row)) for c in changes for row in c.inserts}
    for c in changes:
        if c.table != "compute_assignment":
            continue
        for row in c.deletes:
            if (c.table, TABLE_BY_NAME[c.table].key_of(row)) not in kept:
                assert isinstance(row, ComputeAssignment)
                version_floor = max(version_floor, row.version + 1)
    return epoch_floor, version_floor
