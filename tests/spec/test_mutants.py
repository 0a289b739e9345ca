"""Every planted bug must be caught by the stateful machines within a fixed budget.

Each mutant runs in its own subprocess (see ``support/mutants.py``), so the product modules of
this test process are never touched.  The kill table is printed (``pytest -s`` shows it) and
written to ``build/mutants.json`` for ``syncref verify``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support.mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[2]
BUDGET = int(os.environ.get("SYNCREF_MUTANT_BUDGET", "300"))


def _run(name: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, "-m", "support.mutants", name, str(BUDGET)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"mutant": name, "killed": False, "error": proc.stderr[-400:]}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_every_mutant_is_killed() -> None:
    assert len(MUTANTS) >= 12
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_run, [m.name for m in MUTANTS]))
    print("\nmutant                          killed  by              invariants          seconds")
    for r in results:
        print(f"{r['mutant']:<32}{'yes' if r['killed'] else 'NO':<8}{r.get('by', '-')!s:<16}"
              f"{','.join(r.get('invariants', [])) or '-':<20}{r.get('seconds', '-')}")  # type: ignore[arg-type]
    out = ROOT / "build"
    out.mkdir(exist_ok=True)
    (out / "mutants.json").write_text(json.dumps(results, indent=1))
    survivors = [r["mutant"] for r in results if not r["killed"]]
    assert not survivors, f"mutants not caught: {survivors}"
