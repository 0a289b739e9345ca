"""The TypeScript module's model cases and schema dump are in step with the executable model.

``modules/syncref-ts/test/model-cases/*.json`` is what ``tests/modules/export_model_cases.py``
writes from ``spec/`` (scenarios, seeded walks, hostile-argument walks, canonical JSON outcomes, the
schema of ``spec/schema.py``); the module's Node tests replay them. A change to the model that is not
re-exported fails here, so the TS rules are never judged against stale expectations.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from spec.schema import REDUCERS, TABLES

_spec = importlib.util.spec_from_file_location("export_model_cases", Path(__file__).with_name("export_model_cases.py"))
assert _spec is not None and _spec.loader is not None
exporter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exporter)


def test_exported_files_match_the_model() -> None:
    files = exporter.render()
    for name, text in files.items():
        path = exporter.OUT / name
        assert path.is_file(), f"{path} missing: run tests/modules/export_model_cases.py"
        assert path.read_text() == text, f"{name} is stale: run tests/modules/export_model_cases.py"


def test_schema_dump_lists_every_table_and_reducer_in_order() -> None:
    doc = json.loads((exporter.OUT / "schema.json").read_text())
    assert [t["name"] for t in doc["tables"]] == [t.name for t in TABLES]
    assert [r["name"] for r in doc["reducers"]] == [r.name for r in REDUCERS]
    for t, d in zip(TABLES, doc["tables"], strict=True):
        assert [c for c, _ in d["columns"]] == list(t.column_names)


def test_cases_cover_every_reducer_with_success_and_error() -> None:
    seen: dict[str, set[str]] = {}
    for name in ("scenarios.json", "walks.json"):
        for case in json.loads((exporter.OUT / name).read_text())["cases"]:
            for step in case["steps"]:
                if step["op"] == "call":
                    exp = step["expect"]
                    seen.setdefault(step["reducer"], set()).add("ok" if exp["ok"] else exp["error"]["code"])
    for r in REDUCERS:
        assert "ok" in seen.get(r.name, set()), f"no successful {r.name} call"
        assert len(seen[r.name]) >= 3, f"{r.name}: only {sorted(seen[r.name])}"
