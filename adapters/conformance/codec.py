"""JSON forms of the model's values, shared by the vector generator and the vector runner.

Everything a vector holds is plain JSON: column values in SATS-JSON (``adapters.satsjson``:
identities ``"0x<hex>"``, timestamps ``{"__timestamp_micros_since_unix_epoch__": n}``, options
``{"some": v}`` / ``{"none": []}``), rows as objects keyed by column name, a database state as
``{"epoch_floor", "version_floor", "tables": {table: [row, ...]}}`` with each table's rows in a
fixed order (sorted by their canonical JSON text, so two equal states print equally), claims as
``{"identity", "scopes", "streams"}``, an error as ``{"code", "details"}``.

Wire messages (``adapters.wire``) have a generic form for the BSATN vectors: an object tagged
``{"$type": ClassName, field: value, ...}``, bytes as ``{"$hex": "..."}``, tuples as arrays.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from adapters import satsjson, wire
from spec.auth import Claims
from spec.errors import SyncError
from spec.policy import Policy, StreamClass
from spec.schema import PERSISTENT_TABLES, TABLE_BY_NAME, table_of
from spec.state import DbState
from spec.values import Row


def row_to_json(row: Row) -> dict[str, Any]:
    t = table_of(row)
    return {c.name: satsjson.to_json(c.type, getattr(row, c.name)) for c in t.columns}


def row_from_json(table: str, data: Mapping[str, Any]) -> Row:
    t = TABLE_BY_NAME[table]
    values: list[Any] = [satsjson.from_json(c.type, data[c.name], f"{table}.{c.name}") for c in t.columns]
    row: Row = t.row_type(*values)
    return row


def _key(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=True)


def rows_to_json(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return sorted((row_to_json(r) for r in rows), key=_key)


def state_to_json(db: DbState) -> dict[str, Any]:
    return {"epoch_floor": db.epoch_floor, "version_floor": db.version_floor,
            "tables": {t.name: rows_to_json(db.rows(t.name)) for t in PERSISTENT_TABLES if db.rows(t.name)}}


def state_from_json(doc: Mapping[str, Any]) -> DbState:
    tables: dict[str, tuple[Row, ...]] = {t.name: () for t in PERSISTENT_TABLES}
    for name, rows in doc["tables"].items():
        tables[name] = tuple(row_from_json(name, r) for r in rows)
    return DbState(tables, int(doc["epoch_floor"]), int(doc["version_floor"]))


def claims_to_json(c: Claims) -> dict[str, Any]:
    return {"identity": c.identity, "scopes": sorted(c.scopes), "streams": list(c.streams)}


def claims_from_json(doc: Mapping[str, Any]) -> Claims:
    return Claims(str(doc["identity"]), frozenset(doc["scopes"]), tuple(doc["streams"]))


def error_to_json(err: SyncError) -> dict[str, Any]:
    return {"code": err.code.value, "details": json.loads(json.dumps(dict(err.details), sort_keys=True))}


def args_to_json(reducer: str, args: tuple[Any, ...]) -> list[Any]:
    from spec.schema import REDUCER_BY_NAME
    return [satsjson.to_json(c.type, v) for c, v in zip(REDUCER_BY_NAME[reducer].args, args, strict=True)]


def args_from_json(reducer: str, doc: list[Any]) -> tuple[Any, ...]:
    from spec.schema import REDUCER_BY_NAME
    return satsjson.args_from_json(REDUCER_BY_NAME[reducer].args, doc)


def policy_to_json(p: Policy) -> dict[str, Any]:
    def cls(c: StreamClass) -> dict[str, Any]:
        return dataclasses.asdict(c)
    out: dict[str, Any] = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)
                           if f.name not in ("classes", "default_class", "bridge_kinds")}
    out["classes"] = [[prefix, cls(c)] for prefix, c in p.classes]
    out["default_class"] = cls(p.default_class)
    out["bridge_kinds"] = sorted(p.bridge_kinds)
    return out


def policy_from_json(doc: Mapping[str, Any]) -> Policy:
    rest = {k: v for k, v in doc.items() if k not in ("classes", "default_class", "bridge_kinds")}
    return Policy(classes=tuple((prefix, StreamClass(**c)) for prefix, c in doc["classes"]),
                  default_class=StreamClass(**doc["default_class"]),
                  bridge_kinds=frozenset(doc["bridge_kinds"]), **rest)


# --- generic form of wire messages -------------------------------------------------------------

_WIRE_TYPES: dict[str, type[Any]] = {
    name: obj for name, obj in vars(wire).items()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == wire.__name__}


def wire_to_json(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        out: dict[str, Any] = {"$type": type(v).__name__}
        for f in dataclasses.fields(v):
            out[f.name] = wire_to_json(getattr(v, f.name))
        return out
    if isinstance(v, bytes):
        return {"$hex": v.hex()}
    if isinstance(v, tuple | list):
        return [wire_to_json(x) for x in v]
    return v


def wire_from_json(doc: Any) -> Any:
    if isinstance(doc, dict):
        if "$hex" in doc:
            return bytes.fromhex(doc["$hex"])
        cls = getattr(wire, doc["$type"]) if doc["$type"] in _WIRE_TYPES else None
        if cls is None:
            raise ValueError(f"unknown wire type {doc['$type']!r}")
        return cls(**{k: wire_from_json(v) for k, v in doc.items() if k != "$type"})
    if isinstance(doc, list):
        return tuple(wire_from_json(x) for x in doc)
    return doc
