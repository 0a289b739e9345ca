"""The module as SpacetimeDB's ``RawModuleDefV9`` (lib ``db/raw_def/v9.rs``), in its SATS-JSON.

The schema route answers it for ``?version=9``: ``spacetime call`` reads the module definition
there (asking for version 10 first, then 9 on a client error), validates it and type-checks its
arguments against the reducer's parameters.  The form is the structs' serde form: a named product
an object, a sum ``{"Variant": payload}``, a unit ``[]``, an ``Option`` ``{"some": v}`` /
``{"none": []}``, a ``ColList`` an array of column numbers, an ``AlgebraicTypeRef`` a number.

What V9 cannot say is left out: event tables are plain tables here (V9 has no event flag), and
scopes, grants and the row filter are not RLS rules.  Every table's row type is
``typespace.types[i]`` for the ``i``-th table, named in ``types`` (PascalCase of the table name);
a primary key and every unique column set is a unique constraint backed by a B-tree index, the
names left for the validator to generate.
"""

from __future__ import annotations

from typing import Any

from adapters import satsjson
from spec.schema import REDUCERS, TABLES, Table

_NONE: dict[str, Any] = {"none": []}


def _columns(table: Table, names: tuple[str, ...]) -> list[int]:
    return [table.column_names.index(n) for n in names]


def _table(i: int, table: Table) -> dict[str, Any]:
    keys: list[tuple[str, ...]] = []
    if table.primary_key is not None:
        keys.append(table.primary_key)
    keys += [u for u in table.unique if set(u) not in [set(k) for k in keys]]
    return {
        "name": table.name,
        "product_type_ref": i,
        "primary_key": _columns(table, table.primary_key) if table.primary_key is not None else [],
        "indexes": [{"name": _NONE, "accessor_name": _NONE, "algorithm": {"BTree": {"columns": _columns(table, k)}}}
                    for k in keys],
        "constraints": [{"name": _NONE, "data": {"Unique": {"columns": _columns(table, k)}}} for k in keys],
        "sequences": [],
        "schedule": _NONE,
        "table_type": {"User": []},
        "table_access": {"Public": []} if table.public else {"Private": []},
    }


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def raw_module_def_v9() -> dict[str, Any]:
    """The module's ``RawModuleDefV9`` as JSON."""
    return {
        "typespace": {"types": [{"Product": satsjson.product_type(t.columns)} for t in TABLES]},
        "tables": [_table(i, t) for i, t in enumerate(TABLES)],
        "reducers": [{"name": r.name, "params": satsjson.product_type(r.args), "lifecycle": _NONE}
                     for r in REDUCERS],
        "types": [{"name": {"scope": [], "name": _pascal(t.name)}, "ty": i, "custom_ordering": True}
                  for i, t in enumerate(TABLES)],
        "misc_exports": [],
        "row_level_security": [],
    }
