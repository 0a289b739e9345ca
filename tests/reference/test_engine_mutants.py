"""Every planted engine bug must be caught by the differential machine within a fixed budget
(each in its own subprocess; ``pytest -s`` prints the kill table; build/engine_mutants.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support.engine_mutants import ENGINE_MUTANTS

ROOT = Path(__file__).resolve().parents[2]
BUDGET = int(os.environ.get("SYNCREF_MUTANT_BUDGET", "200"))


def _run(name: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, "-m", "support.engine_mutants", name, str(BUDGET)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"mutant": name, "killed": False, "error": proc.stderr[-400:]}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_every_engine_mutant_is_killed() -> None:
    assert len(ENGINE_MUTANTS) >= 10
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_run, [m.name for m in ENGINE_MUTANTS]))
    print("\nengine mutant                   killed  by                  seconds")
    for r in results:
        print(f"{r['mutant']!s:<32}{'yes' if r['killed'] else 'NO':<8}{r.get('by', '-')!s:<20}{r.get('seconds', '-')}")
    out = ROOT / "build"
    out.mkdir(exist_ok=True)
    (out / "engine_mutants.json").write_text(json.dumps(results, indent=1))
    survivors = [r["mutant"] for r in results if not r["killed"]]
    assert not survivors, f"engine mutants not caught: {survivors}"
