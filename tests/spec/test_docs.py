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


def test_every_invariant_has_a_mutant_that_dies_on_it() -> None:
    """Every invariant names at least one planted mutant whose kill cites it (test_mutants checks the
    citation), or support.mutants.NO_MUTANT says why not."""
    from support.mutants import MUTANTS, NO_MUTANT
    claimed = {inv for m in MUTANTS for inv in m.expected}
    ids = {i.id for i in CATALOG}
    assert claimed <= ids, f"mutants claim unknown invariants: {claimed - ids}"
    missing = sorted(ids - claimed - set(NO_MUTANT))
    assert not missing, f"invariants with no mutant that dies on them: {missing}"
    assert not set(NO_MUTANT) & claimed, "NO_MUTANT lists an invariant that has a mutant now"
    assert all(len(why) > 40 for why in NO_MUTANT.values())


def test_no_mutant_claims_nothing() -> None:
    from support.mutants import MUTANTS
    assert all(m.expected for m in MUTANTS), [m.name for m in MUTANTS if not m.expected]
