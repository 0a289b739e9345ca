"""Every planted engine bug must be caught by the differential machine within a fixed budget
(each in its own subprocess; ``pytest -s`` prints the kill table; build/engine_mutants.json)."""

from __future__ import annotations

import os

from support.engine_mutants import ENGINE_MUTANTS
from support.mutants import run_in_subprocesses

BUDGET = int(os.environ.get("SYNCREF_MUTANT_BUDGET", "200"))


def test_every_engine_mutant_is_killed() -> None:
    assert len(ENGINE_MUTANTS) >= 10
    results = run_in_subprocesses("support.engine_mutants", [m.name for m in ENGINE_MUTANTS], BUDGET,
                                  "engine_mutants.json")
    print("\nengine mutant                   killed  by                  seconds")
    for r in results:
        print(f"{r['mutant']!s:<32}{'yes' if r['killed'] else 'NO':<8}{r.get('by', '-')!s:<20}{r.get('seconds', '-')}")
    survivors = [r["mutant"] if "error" not in r else f"{r['mutant']} (did not run: {str(r['error'])[-300:]})"
                 for r in results if not r["killed"]]
    assert not survivors, f"engine mutants not caught: {survivors}"


def test_every_engine_mutant_still_has_its_target() -> None:
    """Each planted bug's edits apply: every text it replaces is in its module's source file
    exactly once, edit after edit (read from the file itself, not through the mutant runner).  A
    refactor that moves a targeted line fails here at once, not after the slow kill run above
    reports the mutant as a survivor."""
    from support.mutants import edit_targets_missing

    missing = edit_targets_missing(ENGINE_MUTANTS)
    assert not missing, missing
