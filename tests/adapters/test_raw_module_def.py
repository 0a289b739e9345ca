"""``GET /v1/database/:name/schema?version=9``: the module as SpacetimeDB's ``RawModuleDefV9``.

``spacetime call`` reads the schema route (cli api.rs ``module_def``: ``?version=10``, and on a 4xx
``?version=9``), validates it (schema ``validate/v9.rs``) and type-checks its arguments with it
before it posts them.  The oracle is hand-written JSON from the Rust structs (lib
``db/raw_def/v9.rs``, serialized through SATS serde: a named product is an object, a sum
``{"Variant": payload}``, a unit ``[]``, an ``Option`` ``{"some": v}`` / ``{"none": []}``, a
``ColList`` an array of column numbers, an ``AlgebraicTypeRef`` a number), and the validation
rules of ``validate/v9.rs`` re-stated here, not our builder.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from support.server import http, running_server

from adapters.moduledef import raw_module_def_v9
from spec.schema import REDUCERS, TABLES

NONE: dict[str, Any] = {"none": []}
STRING: dict[str, Any] = {"String": []}
U64: dict[str, Any] = {"U64": []}
IDENTITY: dict[str, Any] = {"Product": {"elements": [
    {"name": {"some": "__identity__"}, "algebraic_type": {"U256": []}}]}}
TIMESTAMP: dict[str, Any] = {"Product": {"elements": [
    {"name": {"some": "__timestamp_micros_since_unix_epoch__"}, "algebraic_type": {"I64": []}}]}}


def _el(name: str, t: dict[str, Any]) -> dict[str, Any]:
    return {"name": {"some": name}, "algebraic_type": t}


def test_a_table_and_a_reducer_as_upstream_writes_them() -> None:
    module = raw_module_def_v9()
    assert set(module) == {"typespace", "tables", "reducers", "types", "misc_exports", "row_level_security"}
    i = [t.name for t in TABLES].index("sync_checkpoint")
    (table,) = [t for t in module["tables"] if t["name"] == "sync_checkpoint"]
    assert table == {
        "name": "sync_checkpoint",
        "product_type_ref": i,
        "primary_key": [0],
        "indexes": [{"name": NONE, "accessor_name": NONE, "algorithm": {"BTree": {"columns": [0]}}}],
        "constraints": [{"name": NONE, "data": {"Unique": {"columns": [0]}}}],
        "sequences": [],
        "schedule": NONE,
        "table_type": {"User": []},
        "table_access": {"Private": []},
    }
    assert module["typespace"]["types"][i] == {"Product": {"elements": [
        _el("checkpoint_id", STRING), _el("client_id", STRING), _el("stream_id", STRING), _el("owner", IDENTITY),
        _el("epoch", U64), _el("last_applied_seq", U64), _el("updated_at", TIMESTAMP)]}}
    assert {"name": {"scope": [], "name": "SyncCheckpoint"}, "ty": i, "custom_ordering": True} in module["types"]
    (reducer,) = [r for r in module["reducers"] if r["name"] == "append_sync_event"]
    assert reducer == {"name": "append_sync_event", "lifecycle": NONE, "params": {"elements": [
        _el("stream_id", STRING), _el("idempotency_key", STRING), _el("payload_json", STRING),
        _el("payload_hash", {"Sum": {"variants": [_el("some", STRING), _el("none", {"Product": {"elements": []}})]}}),
        _el("expected_next_seq", {"Sum": {"variants": [_el("some", U64), _el("none", {"Product": {"elements": []}})]}}),
    ]}}
    (events,) = [t for t in module["tables"] if t["name"] == "sync_event"]
    assert events["primary_key"] == [] and events["table_access"] == {"Public": []}
    assert events["constraints"] == [{"name": NONE, "data": {"Unique": {"columns": [0, 2]}}},
                                     {"name": NONE, "data": {"Unique": {"columns": [0, 3]}}}]
    assert [x["algorithm"] for x in events["indexes"]] == [{"BTree": {"columns": [0, 2]}},
                                                           {"BTree": {"columns": [0, 3]}}]


def _is_use(t: dict[str, Any]) -> bool:
    """type_for_generate.rs ``parse_use``: special products and options inline; no other
    product or sum."""
    ((kind, body),) = t.items()
    if t in (IDENTITY, TIMESTAMP):
        return True
    if kind == "Sum":
        names = [v["name"] for v in body["variants"]]
        return (names == [{"some": "some"}, {"some": "none"}] and body["variants"][1]["algebraic_type"]
                == {"Product": {"elements": []}} and _is_use(body["variants"][0]["algebraic_type"]))
    if kind == "Product":
        return False
    if kind == "Array":
        return _is_use(body)
    return body == [] and kind in {"String", "Bool", "U8", "U16", "U32", "U64", "I8", "I16", "I32", "I64"}


def _ident(name: str) -> bool:
    """identifier.rs ``validate_identifier`` (its reserved list is empty): NFC, XID start or ``_``,
    XID continue -- for our ASCII names, a letter or ``_`` then letters, digits, ``_``."""
    return (bool(name) and unicodedata.normalize("NFC", name) == name and (name[0].isalpha() or name[0] == "_")
            and all(c.isalnum() or c == "_" for c in name) and name.isascii())


def test_it_passes_upstreams_v9_validation_rules() -> None:
    """The rules of validate/v9.rs ``validate`` / ``validate_table_def`` / ``validate_reducer_def``
    that a module of plain tables and reducers meets or fails."""
    module = raw_module_def_v9()
    types = module["typespace"]["types"]
    names: list[str] = []  # the global namespace: tables, indexes, constraints
    for t in module["tables"]:
        assert _ident(t["name"]) and not t["name"].startswith("st_")
        (kind, product), = types[t["product_type_ref"]].items()
        assert kind == "Product"
        cols = [e["name"]["some"] for e in product["elements"]]
        assert all(_ident(c) for c in cols) and all(_is_use(e["algebraic_type"]) for e in product["elements"])
        assert len(t["primary_key"]) <= 1  # RepeatedPrimaryKey
        uniques = [c["data"]["Unique"]["columns"] for c in t["constraints"]]
        if t["primary_key"]:  # MissingPrimaryKeyUniqueConstraint
            assert set(t["primary_key"]) in [set(u) for u in uniques]
        indexed = [set(x["algorithm"]["BTree"]["columns"]) for x in t["indexes"]]
        assert all(set(u) in indexed for u in uniques)  # UniqueConstraintWithoutIndex
        for cs in [u for u in uniques] + [x["algorithm"]["BTree"]["columns"] for x in t["indexes"]]:
            assert all(0 <= c < len(cols) for c in cs) and len(set(cs)) == len(cs)
        names.append(t["name"])
        names += [f"{t['name']}_{'_'.join(cols[c] for c in x['algorithm']['BTree']['columns'])}_idx_btree"
                  for x in t["indexes"]]
        names += [f"{t['name']}_{'_'.join(cols[c] for c in u)}_key" for u in uniques]
    assert len(names) == len(set(names))  # DuplicateName
    assert sorted(d["ty"] for d in module["types"]) == list(range(len(types)))
    assert len({d["name"]["name"] for d in module["types"]}) == len(module["types"])  # DuplicateTypeName
    assert [r["name"] for r in module["reducers"]] == [r.name for r in REDUCERS]
    for r in module["reducers"]:
        assert _ident(r["name"]) and r["lifecycle"] == NONE
        assert all(_ident(p["name"]["some"]) and _is_use(p["algebraic_type"]) for p in r["params"]["elements"])
    assert len({r["name"] for r in module["reducers"]}) == len(module["reducers"])
    assert module["misc_exports"] == [] and module["row_level_security"] == []


@pytest.mark.parametrize(("query", "status"), [("?version=9", 200), ("?version=10", 400), ("?version=8", 400),
                                               ("", 200)])
def test_the_schema_route_answers_v9_on_request(tmp_path: Path, query: str, status: int) -> None:
    """``?version=9``: the RawModuleDefV9; ``?version=10`` is a client error, on which ``spacetime
    call`` asks for 9; without ``version``, syncref's own JSON as before."""
    with running_server(tmp_path) as st:
        res = http("GET", f"{st.base}/v1/database/autopilot-sync/schema{query}")
        assert res.status == status, res.text
        if query == "?version=9":
            assert res.headers["content-type"].startswith("application/json")
            assert res.json() == json.loads(json.dumps(raw_module_def_v9()))
        elif query == "":
            assert res.json()["protocol_version"] == "oa.sync.v1"
