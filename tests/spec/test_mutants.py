"""Every planted bug must be caught by the stateful machines within a fixed budget.

Each mutant runs in its own subprocess (see ``support/mutants.py``), so the product modules of
this test process are never touched.  The kill table is printed (``pytest -s`` shows it) and
written to ``build/mutants.json`` for ``syncref verify``.
"""

from __future__ import annotations

import os

from support.mutants import MUTANTS, edit_targets_missing, run_in_subprocesses

BUDGET = int(os.environ.get("SYNCREF_MUTANT_BUDGET", "300"))


def test_every_mutant_still_has_its_target() -> None:
    """Each spec mutant's edits apply (its texts each once in its module's file): a refactor that moved a
    targeted line is named here at once, not after the kill run below reports a mutant that could not run."""
    missing = edit_targets_missing(MUTANTS)
    assert not missing, missing


def test_every_mutant_is_killed() -> None:
    assert len(MUTANTS) >= 12
    results = run_in_subprocesses("support.mutants", [m.name for m in MUTANTS], BUDGET, "mutants.json")
    print(f"\n{'mutant':<38}killed  by              {'invariants':<26}seconds")
    for r in results:
        print(f"{r['mutant']!s:<38}{'yes' if r['killed'] else 'NO':<8}{r.get('by', '-')!s:<16}"
              f"{','.join(r.get('invariants', [])) or '-':<26}{r.get('seconds', '-')}")  # type: ignore[arg-type]
    survivors = [r["mutant"] if "error" not in r else f"{r['mutant']} (did not run: {str(r['error'])[-300:]})"
                 for r in results if not r["killed"]]
    assert not survivors, f"mutants not caught: {survivors}"
    # a mutant "dies on" what its kill cites: every kill must cite at least one invariant its mutant claims
    # (a kill fails at its first failing step, which may cite one claimed invariant and not another: e.g.
    # seq_head_plus_2 claims SEQ-1 and SEQ-4 and its kill cites SEQ-4; build/mutants.json has the citations)
    by_name = {m.name: m for m in MUTANTS}
    uncited = [r["mutant"] for r in results
               if not set(by_name[str(r["mutant"])].expected) & set(r.get("invariants", []))]  # type: ignore[arg-type]
    assert not uncited, f"kills that cite none of the invariants their mutants claim: {uncited}"
