"""Generates docs/invariants.md from spec.invariants.CATALOG and the checks that cite each id.

    PYTHONPATH=tests python -m support.invdoc > docs/invariants.md

tests/spec/test_docs.py fails when the checked-in file drifts from this output.
"""

from __future__ import annotations

from pathlib import Path

from spec.invariants import CATALOG

ROOT = Path(__file__).resolve().parents[2]

PREDICATE = {
    "state": "`spec.invariants.check_state`",
    "transition": "`spec.invariants.check_transition`",
    "call": "`spec.invariants.check_call`",
    "trace": "`spec.trace.Trace`",
    "convergence": "`spec.invariants.check_convergence`",
}
MACHINES = {
    "state": "module machine, system machine",
    "transition": "module machine, system machine",
    "call": "module machine",
    "trace": "system machine",
    "convergence": "system machine (`heal`)",
}


def naming_tests(inv_id: str) -> list[str]:
    found = []
    needle = inv_id.replace("-", "_")
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        text = f.read_text(encoding="utf-8")
        if inv_id in text or needle in text:
            found.append(str(f.relative_to(ROOT)))
    return found


def mutant_targets() -> dict[str, list[str]]:
    from support.mutants import MUTANTS
    out: dict[str, list[str]] = {}
    for m in MUTANTS:
        for inv_id in m.expected:
            out.setdefault(inv_id, []).append(m.name)
    return out


def render() -> str:
    mutants = mutant_targets()
    lines = [
        "# Invariants",
        "",
        "Generated from `spec/invariants.py` by `PYTHONPATH=tests python -m support.invdoc`; a test fails when",
        "this file drifts. Every invariant is an executable predicate in `spec/`; the stateful machines",
        "(`tests/support/machines.py`) evaluate every predicate after every step, and the planted mutants",
        "(`tests/support/mutants.py`) show each check can fail. `syncref verify` prints the live matrix.",
        "Z3 proofs, CrossHair and conformance cases join the matrix with the proofs and wire work.",
        "",
        f"{len(CATALOG)} invariants.",
        "",
        "| id | kind | statement | predicate | machines | mutants it must catch | tests naming it |",
        "|---|---|---|---|---|---|---|",
    ]
    for inv in CATALOG:
        tests = ", ".join(f"`{t}`" for t in naming_tests(inv.id)) or "-"
        muts = ", ".join(f"`{m}`" for m in mutants.get(inv.id, [])) or "-"
        lines.append(f"| {inv.id} | {inv.kind} | {inv.statement} | {PREDICATE[inv.kind]} | {MACHINES[inv.kind]} "
                     f"| {muts} | {tests} |")
    lines += ["", "Kinds: *state* holds in every committed state; *transition* between consecutive committed",
              "states; *call* for every reducer call; *trace* over everything clients observe; *convergence*",
              "once faults heal and the network drains.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
