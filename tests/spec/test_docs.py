"""docs/invariants.md is generated from the catalog; it must not drift."""

from pathlib import Path

from support.invdoc import render

from spec.invariants import CATALOG

ROOT = Path(__file__).resolve().parents[2]


def test_invariants_doc_is_in_step_with_the_catalog() -> None:
    text = (ROOT / "docs" / "invariants.md").read_text(encoding="utf-8")
    assert text == render(), (
        "docs/invariants.md drifted: run `PYTHONPATH=tests python -m support.invdoc > docs/invariants.md`")


def test_catalog_has_at_least_25_invariants_with_unique_ids() -> None:
    ids = [i.id for i in CATALOG]
    assert len(ids) >= 25 and len(ids) == len(set(ids))
