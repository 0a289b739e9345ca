"""The hand-written SDK bindings (tests/interop/bindings) agree with spec/schema.py.

The bindings are what the official npm SDK decodes rows and encodes reducer arguments with, so
any drift between them and the schema is a wire incompatibility.  Two checks, neither needing a
server:

* **shape** -- ``inspect_bindings.mjs schema`` prints REMOTE_MODULE as the SDK sees it (tables,
  columns in row order with SATS types, primary keys, event flags; reducers with typed params in
  order; the generator's camelCase accessor convention) and it must equal spec.schema;
* **bytes** -- a sample row of every table and sample arguments of every reducer, encoded by our
  BSATN codec (adapters.bsatn), are decoded by the SDK's own deserializers to the same values and
  re-encoded by its serializers to the same bytes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adapters.bsatn import encode_args, encode_row
from spec.schema import REDUCERS, TABLES, ReducerDef, Table
from spec.values import IDENTITY, STRING, TIMESTAMP, U32, U64, ArrayT, OptionT, SatsType, sats_name

INTEROP_DIR = Path(__file__).resolve().parent
MAX_SAFE = 2**53 - 1


def camel(name: str) -> str:
    """The accessor name ``spacetime generate --lang typescript`` derives from a snake_case name."""
    first, *rest = name.split("_")
    return first + "".join(w[:1].upper() + w[1:] for w in rest)


def run_inspect(node: str, mode: str, stdin: str = "") -> Any:
    proc = subprocess.run([node, "inspect_bindings.mjs", mode], cwd=INTEROP_DIR, input=stdin,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def bindings(node: str) -> Any:
    return run_inspect(node, "schema")


def test_cli_version_is_accepted_by_the_sdk(bindings: Any) -> None:
    major, minor, _patch = (int(p) for p in bindings["cli_version"].split("."))
    assert (major, minor) >= (1, 4)


def test_tables_match_schema(bindings: Any) -> None:
    got = {t["name"]: t for t in bindings["tables"]}
    assert sorted(got) == sorted(t.name for t in TABLES)
    for table in TABLES:
        b = got[table.name]
        assert b["accessor"] == camel(table.name), table.name
        assert b["event"] is table.event, table.name
        assert [(c["name"], c["type"]) for c in b["columns"]] == [
            (c.name, sats_name(c.type)) for c in table.columns], table.name
        assert [c["key"] for c in b["columns"]] == [camel(c.name) for c in table.columns], table.name
        assert b["row_type_keys"] == [c["key"] for c in b["columns"]], table.name
        pk = tuple(c["name"] for c in b["columns"] if c["primary_key"])
        assert pk == (table.primary_key or ()), table.name


def test_reducers_match_schema(bindings: Any) -> None:
    got = {r["name"]: r for r in bindings["reducers"]}
    assert sorted(got) == sorted(r.name for r in REDUCERS)
    for reducer in REDUCERS:
        b = got[reducer.name]
        assert b["accessor"] == camel(reducer.name)
        assert [(p["key"], p["type"]) for p in b["params"]] == [
            (camel(a.name), sats_name(a.type)) for a in reducer.args], reducer.name


# --- bytes: our codec vs the SDK's, through the bindings ------------------------------------


def sample(t: SatsType, i: int) -> object:
    """A value of type ``t`` that exercises its encoding (multi-byte UTF-8, values past 2^53, ...)."""
    if isinstance(t, OptionT):
        return sample(t.inner, i) if i % 2 == 0 else None
    if isinstance(t, ArrayT):
        return (sample(t.inner, i), sample(t.inner, i + 1))
    if t == STRING:
        return f"s{i}-é✓"
    if t == U32:
        return 4_000_000_000 + i
    if t == U64:
        return 2**63 + i if i % 3 == 0 else 1000 + i
    if t == TIMESTAMP:
        return 1_700_000_000_000_000 + i
    if t == IDENTITY:
        return "c200" + f"{i:02x}" * 30
    raise AssertionError(f"no sample for {sats_name(t)}")


def as_json(t: SatsType, v: object) -> object:
    """The JSON the client side prints for a value (wire_json.mjs)."""
    if v is None:
        return None
    if isinstance(t, OptionT):
        return as_json(t.inner, v)
    if isinstance(t, ArrayT):
        assert isinstance(v, tuple)
        return [as_json(t.inner, x) for x in v]
    if isinstance(v, int) and v > MAX_SAFE:
        return str(v)
    return v


def test_sdk_decodes_and_reencodes_our_rows_and_args(node: str) -> None:
    rows: list[tuple[Table, list[Any], bytes]] = []
    args: list[tuple[ReducerDef, list[Any], bytes]] = []
    for n, table in enumerate(TABLES):
        values: list[Any] = [sample(c.type, n + i) for i, c in enumerate(table.columns)]
        rows.append((table, values, encode_row(table.row_type(*values))))
    for n, reducer in enumerate(REDUCERS):
        values = [sample(a.type, n + i + 1) for i, a in enumerate(reducer.args)]
        args.append((reducer, values, encode_args(reducer.name, tuple(values))))
    request = {"rows": [{"table": t.name, "hex": b.hex()} for t, _, b in rows],
               "args": [{"reducer": r.name, "hex": b.hex()} for r, _, b in args]}
    out = run_inspect(node, "roundtrip", json.dumps(request))
    for (table, values, data), got in zip(rows, out["rows"], strict=True):
        assert got["value"] == {c.name: as_json(c.type, v) for c, v in zip(table.columns, values, strict=True)}
        assert got["hex"] == data.hex(), table.name
    for (reducer, values, data), got in zip(args, out["args"], strict=True):
        assert got["value"] == [as_json(a.type, v) for a, v in zip(reducer.args, values, strict=True)]
        assert got["hex"] == data.hex(), reducer.name
