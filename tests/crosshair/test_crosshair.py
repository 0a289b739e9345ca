"""CrossHair over the contracted pure functions of ``spec/``, and proof that the step is live.

* every target of :func:`targets.crosshair_targets` gives no counterexample within its budget
  (``crosshair check`` exit 0 -- not a proof, a bounded symbolic search);
* every planted bug of ``planted_bug.py`` (a spec function with one slip, under the original's
  contracts) is refuted with the *original's* budget: exit 1 and a counterexample naming it;
* every known finding (a real spec defect CrossHair trips on) is still refuted, so its fix is
  noticed and the target can join the list;
* the budgets add up to a few minutes of CPU at most.

Each run is one subprocess, so pytest-xdist spreads them over the workers.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import planted_bug
import pytest
import targets

WALL_LIMIT = 240.0
"""Seconds one CrossHair run may take on a loaded 2-core machine (its CPU budget is far smaller)."""


@pytest.mark.parametrize("target", targets.crosshair_targets(), ids=lambda t: t.target)
def test_no_counterexample_within_budget(target: targets.Target) -> None:
    result = targets.run(target, wall_limit=WALL_LIMIT)
    assert result["rc"] == 0, f"crosshair exit {result['rc']} on {target.target}:\n{result['output']}"
    assert result["seconds"] < WALL_LIMIT


def _planted_target(name: str) -> targets.Target:
    original = {t.target: t for t in targets.crosshair_targets()}[planted_bug.PLANTED[name]]
    line = inspect.getsourcelines(inspect.unwrap(getattr(planted_bug, name)))[1]
    return targets.Target(f"{targets.HERE / 'planted_bug.py'}:{line}", original.timeout)


@pytest.mark.parametrize("name", sorted(planted_bug.PLANTED))
def test_planted_bug_is_refuted_with_the_same_budget(name: str) -> None:
    result = targets.run(_planted_target(name), wall_limit=WALL_LIMIT)
    assert result["rc"] == 1, f"crosshair missed the planted bug in {name} (exit {result['rc']}):\n{result['output']}"
    assert f"error: false when calling {name}(" in result["output"], result["output"]


def test_budgets_add_up_to_a_few_minutes() -> None:
    """Worst case: every condition of every target and planted copy uses its whole CPU budget."""
    proc = subprocess.run([sys.executable, "-c", "import targets; print(targets.worst_case_cpu())"],
                          cwd=targets.ROOT, env=targets.environment(), capture_output=True, text=True, check=True)
    total = float(proc.stdout.strip().splitlines()[-1])
    assert 0 < total <= 300, f"CrossHair worst-case CPU budget {total}s"
