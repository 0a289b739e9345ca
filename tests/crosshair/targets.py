"""What CrossHair checks, with what budget -- shared by ``test_crosshair.py`` and ``syncref verify``.

Each :class:`Target` is one contracted pure function of ``spec/`` that CrossHair can explore
symbolically (ints, strings, small tuples, small frozen dataclasses).  It is checked with::

    ICONTRACT_SLOW=1 python -m crosshair check --analysis_kind=icontract \\
        --per_condition_timeout T TARGET

``ICONTRACT_SLOW=1`` turns on the contracts kept off in normal runs for speed (icontract's
``enabled=icontract.SLOW``), so CrossHair sees every contract.  ``T`` is CPU seconds per
condition; CrossHair stops early once it has explored every path, so most targets finish well
inside their budget.  An iteration cap (``--max_uninteresting_iterations``) is deliberately not
used: where a precondition filters most inputs (``negotiate``'s window, the transition
functions' statuses) a cap stops the search before it reaches the interesting inputs, and the
planted bugs are then missed.

Exit 0 means *no counterexample within the budget*, not a proof.  Exit 1 is a counterexample,
exit 2 a configuration or import error; both are failures.

Use from outside pytest (``tests/crosshair`` is not a package: it must not shadow ``crosshair``)::

    spec = importlib.util.spec_from_file_location("crosshair_targets", root / "tests/crosshair/targets.py")
    mod = sys.modules["crosshair_targets"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for t in mod.crosshair_targets(): print(mod.run(t))
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import icontract

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    target: str  # what `crosshair check` is given: module.function, module.Class.method or file.py:line
    timeout: float  # --per_condition_timeout, CPU seconds per condition
    invariants: tuple[str, ...] = ()  # catalog ids the contracts state (for the verify matrix)
    note: str = ""


TARGETS: tuple[Target, ...] = (
    Target("spec.resume.stale_reasons", 5, ("STALE-1",),
           "agrees with the oracle; empty iff floor-1 <= W <= head, min(head, B)-W <= budget, same epoch; fixed order"),
    Target("spec.invariants.stale_reasons", 5, ("STALE-1", "STALE-2"),
           "empty iff the resume window is safe; fixed order; no retention breach means floor <= W+1"),
    Target("spec.invariants.seqs_contiguous", 3, ("SEQ-1",), "contiguity stated positionally"),
    Target("spec.client.apply_rule", 5, ("REPLAY-1",), "duplicate iff seq <= last, apply iff last+1, gap iff past"),
    Target("spec.auth.grant_matches", 3, ("AUTH-1",), "exact grants, star grants as plain prefixes, * covers all"),
    Target("spec.transitions.assignment_edge_allowed", 3, ("ASSIGN-1",),
           "agrees with the table; forward-only, terminal states final; cancel and happy path open"),
    Target("spec.transitions.bridge_edge_allowed", 3, ("BRIDGE-1", "BRIDGE-2"),
           "agrees with the table; sent is final; success recorded from pending and failed"),
    Target("spec.query.lower_bound_exclusive", 3, ("STALE-1",), "the largest W with `column > W` implied"),
    Target("spec.query.pinned_value", 3, (), "the value of a `column = v` conjunct, None iff there is none"),
    Target("spec.query.Comparison.holds", 3, (), "`c op v` iff `v flipped-op c` (the FLIPPED table)"),
    Target("spec.query.unsatisfiable", 3, (), "a query without conditions is satisfiable"),
    Target("spec.query.evaluate", 3, (), "the in-order subsequence of exactly the matching rows"),
    Target("spec.compat.negotiate", 8, ("COMPAT-1",),
           "the first failing check in the documented order decides the code; the window is carried"),
    Target("spec.canonical.payload_hash", 2, ("HASH-1",), "sha256: + 64 lowercase hex, the digest of the UTF-8"),
    Target("spec.reducers.unclean_restart", 5, ("DUR-2",),
           "every stream and the epoch floor move above every epoch the lost transactions can have used"),
)


@dataclass(frozen=True)
class Finding:
    """A target CrossHair refutes on the real code because of a real defect (not a tool limit).
    The test asserts it is *still* refuted, so a fix shows up as a failure: move it to TARGETS."""

    target: str
    timeout: float
    expect: str  # a substring of CrossHair's report
    defect: str


KNOWN_FINDINGS: tuple[Finding, ...] = ()
"""Empty: the one finding (SyncError as a frozen+slots dataclass broke under @contextmanager) is
fixed; ``test_contracts.py`` keeps its regression test."""


def crosshair_targets() -> list[Target]:
    """The targets ``test_crosshair.py`` runs (and ``syncref verify`` may run), with their budgets."""
    return list(TARGETS)


def command(target: str, timeout: float) -> list[str]:
    return [sys.executable, "-m", "crosshair", "check", "--analysis_kind=icontract",
            "--per_condition_timeout", str(timeout), target]


def environment() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(HERE)])
    return dict(os.environ, ICONTRACT_SLOW="1", SYNCREF_PER_ROW_CONTRACTS="1",
                PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(target: Target | Finding, wall_limit: float = 600) -> dict[str, Any]:
    """Run CrossHair on one target; ``ok`` is exit 0 (no counterexample within the budget)."""
    started = time.monotonic()
    proc = subprocess.run(command(target.target, target.timeout), cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=wall_limit, check=False)
    return {"target": target.target, "rc": proc.returncode, "ok": proc.returncode == 0,
            "seconds": round(time.monotonic() - started, 1), "budget": target.timeout,
            "output": (proc.stdout + proc.stderr)[-2000:]}


def conditions(dotted: str) -> int:
    """How many conditions CrossHair checks for ``dotted`` (each gets the whole budget); run with
    ICONTRACT_SLOW=1, or the contracts kept off in normal runs are not counted."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        assert callable(obj)
        checker = icontract._checkers.find_checker(obj)
        if checker is None:
            raise LookupError(f"{dotted} carries no contract")
        return max(1, len(getattr(checker, "__postconditions__", ())))  # a precondition filters, it does not search
    raise LookupError(f"cannot import {dotted}")


def worst_case_cpu() -> float:
    """CPU seconds if every condition of every target, and of the planted copy of each, ran to its
    budget (CrossHair usually stops far earlier, having explored every path)."""
    import planted_bug
    budget = {t.target: t.timeout for t in TARGETS}
    total = sum(t.timeout * conditions(t.target) for t in TARGETS)
    return total + sum(budget[orig] * conditions(orig) for orig in planted_bug.PLANTED.values())
