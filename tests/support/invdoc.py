"""Generates docs/invariants.md from spec.invariants.CATALOG and the checks that actually cite each id.

    PYTHONPATH=tests python -m support.invdoc > docs/invariants.md

Nothing here is inferred from an invariant's kind.  Per invariant it lists

* *checked by*: the functions of ``spec/`` whose code or contracts name the id (the predicates that
  report a violation of it), found by reading their source;
* *mutants that die on it*: the planted bugs (``tests/support/mutants.py``) that claim the id;
  ``tests/spec/test_mutants.py`` fails when a kill cites none of the ids its mutant claims (a kill stops
  at its first failing step, so a mutant claiming two ids may be recorded citing one of them:
  ``build/mutants.json`` has each kill's citations);
* *Z3 proofs*: the proofs (``proofs/``) that name it, each with negative controls Z3 must refute
  (``tests/proofs/test_proofs.py``);
* *tests naming it*: the test files that cite the id.

tests/spec/test_docs.py fails when the checked-in file drifts from this output, and when an
invariant has no mutant that dies on it (unless ``support.mutants.NO_MUTANT`` gives the reason).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from spec.invariants import CATALOG

ROOT = Path(__file__).resolve().parents[2]


def naming_tests(inv_id: str) -> list[str]:
    found = []
    needle = inv_id.replace("-", "_")
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        text = f.read_text(encoding="utf-8")
        if inv_id in text or needle in text:
            found.append(str(f.relative_to(ROOT)))
    return found


def citing_functions() -> dict[str, list[str]]:
    """Invariant id -> the ``spec`` functions whose body or decorators (contracts) contain a string
    literal naming it."""
    ids = [inv.id for inv in CATALOG]
    pattern = re.compile(r"\b(" + "|".join(re.escape(i) for i in ids) + r")\b")
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "spec").glob("*.py")):
        module = f"spec.{path.stem}"
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def visit(node: ast.AST, owner: str, module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{owner}{child.name}.", module)
                elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{module}.{owner}{child.name}"
                    body = child.body
                    doc = body[0].value if body and isinstance(body[0], ast.Expr) and isinstance(
                        body[0].value, ast.Constant) else None  # a docstring mentioning an id is no check
                    cited = {m for s in ast.walk(child) if isinstance(s, ast.Constant) and isinstance(s.value, str)
                             and s is not doc for m in pattern.findall(s.value)}
                    for inv_id in cited:
                        out.setdefault(inv_id, []).append(f"`{name}`")

        visit(tree, "")
    return {k: sorted(set(v)) for k, v in out.items()}


def mutant_targets() -> dict[str, list[str]]:
    from support.mutants import MUTANTS
    out: dict[str, list[str]] = {}
    for m in MUTANTS:
        for inv_id in m.expected:
            out.setdefault(inv_id, []).append(m.name + (f" ({m.killer})" if m.killer else ""))
    return out


def proof_targets() -> dict[str, list[str]]:
    from proofs.api import all_proofs
    out: dict[str, list[str]] = {}
    for p in all_proofs():
        if not p.controls:
            continue  # a proof with no negative control is not shown able to fail
        for inv_id in p.invariants:
            out.setdefault(inv_id, []).append(f"{p.id} ({len(p.controls)} controls)")
    return out


def render() -> str:
    from support.mutants import NO_MUTANT
    mutants = mutant_targets()
    proofs = proof_targets()
    checked = citing_functions()
    lines = [
        "# Invariants",
        "",
        "Generated from `spec/invariants.py` by `PYTHONPATH=tests python -m support.invdoc`; a test fails when",
        "this file drifts. Each column lists checks that actually cite the invariant, found in their source,",
        "not inferred from its kind: *checked by* -- the `spec` functions (predicates, contracts) that report",
        "it; *mutants that die on it* -- planted bugs that break it (`tests/spec/test_mutants.py` fails when a",
        "kill cites none of the invariants its mutant names; `build/mutants.json` records each kill's citations;",
        "a killer test file is named in parentheses where no machine reaches the code); *Z3 proofs* -- proofs",
        "naming it, each with negative",
        "controls Z3 must refute; *tests naming it*. `syncref verify` prints the live matrix and the reach",
        "table.",
        "",
        f"{len(CATALOG)} invariants.",
        "",
        "| id | kind | statement | checked by | mutants that die on it | Z3 proofs | tests naming it |",
        "|---|---|---|---|---|---|---|",
    ]
    for inv in CATALOG:
        tests = ", ".join(f"`{t}`" for t in naming_tests(inv.id)) or "-"
        muts = ", ".join(f"`{m}`" for m in mutants.get(inv.id, [])) or f"none: {NO_MUTANT.get(inv.id, '?')}"
        lines.append(f"| {inv.id} | {inv.kind} | {inv.statement} | {', '.join(checked.get(inv.id, [])) or '-'} "
                     f"| {muts} | {', '.join(proofs.get(inv.id, [])) or '-'} | {tests} |")
    lines += ["", "Kinds: *state* holds in every committed state; *transition* between consecutive committed",
              "states; *call* for every reducer call; *trace* over everything clients observe; *convergence*",
              "once faults heal and the network drains.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
