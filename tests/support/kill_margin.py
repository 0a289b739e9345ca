"""Kill margins: how far each planted bug is from surviving the machine that kills it in CI.

CI kills every engine and spec mutant with ONE derandomized Hypothesis run (``support.engine_mutants``,
``support.mutants``: a fixed budget, the draws fixed by a digest of the machine's source).  A change
to the machines' rules moves those draws, and a mutant that only that draw reached survives
(ninth session: ``disconnect_in_fanout``).  This tool reruns each mutant's killing machines, in the
order and with the budget CI uses, under K other seeds (``derandomize`` off, the seed forced as
``@hypothesis.seed`` does), each run in its own subprocess, and reports per mutant: killed in k of K
seeds, the median examples-to-kill over the seeds that killed, and the derandomized run beside them.
A mutant with a deterministic killer (``killer=``, a test file CI runs instead of the machines) is
measured too -- the machines' margin, which its killer makes moot -- and the table names its killer.
Not part of the pytest run (minutes of CPU); run it by hand::

    PYTHONPATH=tests python -m support.kill_margin [--seeds 5] [--first-seed 1] [--engine|--spec] [NAME ...]

It prints a markdown table (docs/mutation.md, "Kill margins") and writes build/kill_margin.json.  A kill
that cites none of the invariants its mutant claims is flagged with its seed (CI's mutant test fails on
one).  ``--last-machine`` runs only the last of a mutant's machines, counting the first as run out: a lower
bound on the margin, for mutants the first machine never kills, without its whole budget per run.
``--reread JSON ...`` prints the table of earlier runs again (merged).

``--chaos`` measures the chaos plants (``adapters/chaos/planted.py`` and the runner's client plants)
instead: each plant alone, in real runs of ``syncref chaos --quick`` (server, proxy, relays, bridge as
processes), under CI's seed and K more.  A plant's bug only shows when the schedule holds the nemesis it
needs (:data:`CHAOS`), a pure function of the seed: the K seeds are the first ones from ``--first-seed``
whose schedule holds it, and the table also gives the share of seeds 1..1000 that do (the schedule's
margin); killed in k of K is the run's margin (its timing: the machine's load moves it).  A kill is the
plant's own anomaly code (one of them) in the report; the other codes a run reported are listed beside it::

    PYTHONPATH=tests python -m support.kill_margin --chaos [--seeds 5] [PLANT ...]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNERS = {"engine": "support.engine_mutants", "spec": "support.mutants"}

CHAOS: dict[str, tuple[str | None, tuple[str, ...], float, int | None]] = {
    # plant: (the nemesis the bug needs in the schedule, "KIND [PARAM=VALUE ...]", None: any run shows it;
    # the anomaly codes that catch it, any one (docs/reliability.md's table); CI's run of it: the nemeses'
    # seconds and the seed, None: no CI run plants it)
    "skip-apply": (None, ("skipped_event",), 5.0, 4242),
    # needs a write retried after its reply was lost (any fault may do it): the history keeps the write under
    # its first key, so it is not in the log (lost_write), and twice there if the first attempt had committed
    "fresh-key-retry": (None, ("duplicate_write", "lost_write"), 6.0, None),
    "reset-keeps-epoch": ("epoch_reset", ("reset_not_applied",), 6.0, 498),
    "unsignalled-floor": ("compaction", ("stale_not_signalled",), 6.0, 498),
    # a SIGKILLed relay (how 0): a SIGSTOPped one (how 1) takes the publish when it resumes, so no catch-up
    # publish is needed, and none is dropped (seeds 6 and 14, eleventh session: missed, both how 1)
    "bridge-drops-retry": ("relay_outage how=0", ("bridge_missing",), 6.0, 498),
}
"""Each chaos plant's trigger and catch (``tests/adapters/test_chaos_margin.py`` keeps it in step with
``adapters.chaos.runner.PLANTS``)."""


def reaching(plant: str, first: int, k: int, upto: int = 1000) -> tuple[list[int], float]:
    """The first ``k`` seeds from ``first`` whose quick schedule (the plant's duration) holds the nemesis
    ``plant`` needs, and the share of seeds 1..``upto`` that do."""
    import dataclasses

    from adapters.chaos.schedule import PROFILES, plan
    need, _code, duration, _ci = CHAOS[plant]
    profile = dataclasses.replace(PROFILES["quick"], duration_s=duration)
    kind, *params = (need or "any").split()  # "KIND [PARAM=VALUE ...]"
    wanted = {k: float(v) for k, v in (p.split("=") for p in params)}

    def holds(seed: int) -> bool:
        return need is None or any(n.kind == kind and all(n.params.get(k) == v for k, v in wanted.items())
                                   for n in plan(seed, profile))

    seeds: list[int] = []
    seed = first
    while len(seeds) < k:
        if holds(seed):
            seeds.append(seed)
        seed += 1
    return seeds, sum(holds(s) for s in range(1, upto + 1)) / upto


def chaos_one(plant: str, seed: int, ci: bool) -> dict[str, object]:
    """One ``syncref chaos --quick`` run with ``plant`` under ``seed``: caught when one of its codes is reported."""
    import tempfile
    kind, catch, duration, _ci = CHAOS[plant]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kill-margin-chaos-") as tmp:
        report_path = Path(tmp) / "r.json"
        proc = subprocess.run([sys.executable, "-m", "adapters.cli", "chaos", "--quick", "--duration", f"{duration:g}",
                               "--seed", str(seed), "--plant", plant, "--json", str(report_path),
                               "--workdir", str(Path(tmp) / "run")],
                              cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    codes = sorted(report.get("anomaly_counts", {}))
    faults = report.get("faults", {})
    result: dict[str, object] = {
        "kind": "chaos", "mutant": plant, "seed": None if ci else seed, "run_seed": seed,
        "killed": bool(set(catch) & set(codes)), "codes": codes, "exit": proc.returncode,
        "reached": kind is None or faults.get(kind.split()[0], 0) >= 1,
        "retries": report.get("writes", {}).get("retries"),  # fresh-key-retry shows only in a run that retried
        "skipped": report.get("skipped", {}), "seconds": round(time.monotonic() - started, 1)}
    if not report:
        result["error"] = proc.stderr[-400:]
    verdict = "caught" if result["killed"] else "MISSED"
    print(f"chaos {plant} seed={seed}{' (CI)' if ci else ''}: {verdict} {codes} in {result['seconds']} s "
          f"({result['retries']} write retries)",
          file=sys.stderr, flush=True)
    return result


def seeds_of(value: object) -> list[object]:
    """A list read back from a result row (typed ``object`` there)."""
    assert isinstance(value, list)
    return value


def chaos_main(a: argparse.Namespace) -> int:
    plants = [p for p in CHAOS if not a.names or p in a.names]
    rows: list[dict[str, object]] = []
    runs: list[dict[str, object]] = []
    started = time.monotonic()
    for plant in plants:
        kind, catch, duration, ci_seed = CHAOS[plant]
        seeds, share = reaching(plant, a.first_seed, a.seeds)
        jobs = ([(plant, ci_seed, True)] if ci_seed is not None else []) + [(plant, s, False) for s in seeds]
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:  # --jobs 1 for timing that is the plant's own
            mine = list(pool.map(lambda j: chaos_one(*j), jobs))
        runs += mine
        seeded = [r for r in mine if r["seed"] is not None]
        ci = next((r for r in mine if r["seed"] is None), None)
        others = sorted({str(c) for r in mine for c in seeds_of(r["codes"]) if c not in catch})
        rows.append({"plant": plant, "needs": kind, "codes": catch, "duration": duration, "reach": share,
                     "seeds": seeds, "k": sum(bool(r["killed"]) for r in seeded), "K": len(seeded),
                     "missed_seeds": [r["run_seed"] for r in seeded if not r["killed"]],
                     "unreached_seeds": [r["run_seed"] for r in seeded if not r["reached"]],
                     "ci_seed": ci_seed, "ci_killed": None if ci is None else ci["killed"], "other_codes": others,
                     "median_seconds": statistics.median(float(str(r["seconds"])) for r in mine)})
    Path(a.out).parent.mkdir(exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "runs": runs}, indent=1))
    out = ["| plant | needs | caught as | schedules holding it (seeds 1-1000) | caught (seeds) | CI's run "
           "| other codes reported | median run |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        missed = f" **missed: seeds {r['missed_seeds']}**" if r["missed_seeds"] else ""
        ci_run = "-" if r["ci_seed"] is None else f"seed {r['ci_seed']}: {'caught' if r['ci_killed'] else '**missed**'}"
        seeds_run = ", ".join(str(x) for x in seeds_of(r["seeds"]))
        other = ", ".join(f"`{c}`" for c in seeds_of(r["other_codes"])) or "-"
        caught_as = ", ".join(f"`{c}`" for c in CHAOS[str(r["plant"])][1])
        out.append(f"| `{r['plant']}` | {r['needs'] or 'any run'} | {caught_as} | {float(str(r['reach'])):.1%} "
                   f"| {r['k']}/{r['K']} (seeds {seeds_run}){missed} | {ci_run} | {other} "
                   f"| {float(str(r['median_seconds'])):g} s |")
    print("\n".join(out))
    print(f"\n{len(rows)} plants in {time.monotonic() - started:.0f} s")
    return 0


def mutants(kind: str) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(name, killer file, the invariants it claims) of every mutant of ``kind``, in catalog order."""
    if kind == "engine":
        from support.engine_mutants import ENGINE_MUTANTS as ms
    else:
        from support.mutants import MUTANTS as ms
    return [(m.name, m.killer, m.expected) for m in ms]


def ci_budget(kind: str) -> int:
    """The example budget CI gives this kind: the runner's default (the mutant tests' BUDGET)."""
    if kind == "engine":
        from support.engine_mutants import run
    else:
        from support.mutants import run
    default: int = inspect.signature(run).parameters["budget"].default
    return default


def one(kind: str, name: str, budget: int, seed: int | None, last: bool = False) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}")
    # what tests/conftest.py switches on for every test, and so for CI's mutant subprocesses: the scanning
    # contracts and the engine's hot-path contracts (some mutants are killed by a contract firing)
    env.setdefault("ICONTRACT_SLOW", "1")
    env.setdefault("SYNCREF_CONTRACTS", "1")
    args = [sys.executable, "-m", RUNNERS[kind], name, str(budget), "derandomized" if seed is None else str(seed),
            *(["last"] if last else [])]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result: dict[str, object] = json.loads(lines[-1]) if lines else {"mutant": name, "killed": False,
                                                                      "error": proc.stderr[-400:]}
    result.update(kind=kind, seed=seed)
    verdict = f"killed at {result.get('examples')}" if result["killed"] else "SURVIVES"
    print(f"{kind} {name} seed={seed}: {verdict}", file=sys.stderr, flush=True)  # progress
    return result


def uncited(run: dict[str, object], claimed: tuple[str, ...]) -> bool:
    """A kill that cites none of the invariants its mutant claims (``test_mutants.py`` fails CI on one)."""
    cited = run.get("invariants") or []
    assert isinstance(cited, list)
    return bool(run["killed"] and claimed and not set(claimed) & set(cited))


def summarize(runs: list[dict[str, object]], seeds: list[int], killers: dict[tuple[str, str], str | None],
              claimed: dict[tuple[str, str], tuple[str, ...]] | None = None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for key in dict.fromkeys((str(r["kind"]), str(r["mutant"])) for r in runs):
        mine = [r for r in runs if (r["kind"], r["mutant"]) == key]
        ci = next(r for r in mine if r["seed"] is None)
        seeded = [r for r in mine if r["seed"] is not None]
        kills = [int(str(r["examples"])) for r in seeded if r["killed"]]
        rows.append({"kind": key[0], "mutant": key[1], "k": len(kills), "K": len(seeds),
                     "survived_seeds": [r["seed"] for r in seeded if not r["killed"]],
                     "uncited_seeds": [r["seed"] for r in mine if uncited(r, (claimed or {}).get(key, ()))],
                     "median_examples": statistics.median(kills) if kills else None,
                     "max_examples": max(kills) if kills else None,
                     "ci_killed": ci["killed"], "ci_examples": ci.get("examples"), "ci_by": ci.get("by"),
                     "killer": killers[key]})
    return rows


def table(rows: list[dict[str, object]], budgets: dict[str, int]) -> str:
    out = ["| kind | mutant | machines kill it (seeds) | median / max examples to kill | CI's draw | killer test |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        med = "-" if r["median_examples"] is None else f"{r['median_examples']:g} / {r['max_examples']}"
        ci = f"killed at {r['ci_examples']}" if r["ci_killed"] else "**survives**"
        flag = "" if r["k"] == r["K"] and r["ci_killed"] else " **weak**"
        if r.get("uncited_seeds"):
            flag += f" (cites no claimed invariant: seeds {r['uncited_seeds']})"
        killer = f"`{r['killer']}`" if r["killer"] else "-"
        out.append(f"| {r['kind']} | `{r['mutant']}` | {r['k']}/{r['K']}{flag} | {med} (of {budgets[str(r['kind'])]}) "
                   f"| {ci} | {killer} |")
    return "\n".join(out)


def reread(files: list[str]) -> int:
    """The tables of earlier runs (``--out`` files), one per kind, merged in the order given."""
    runs: list[dict[str, object]] = []
    seeds: set[int] = set()
    budgets: dict[str, int] = {}
    for f in files:
        data = json.loads(Path(f).read_text())
        runs += data["runs"]
        seeds |= set(data["seeds"])
        budgets |= data["budgets"]
    info = {(kind, name): (killer, expected) for kind in budgets for name, killer, expected in mutants(kind)}
    keys = dict.fromkeys((str(r["kind"]), str(r["mutant"])) for r in runs)
    rows = summarize(runs, sorted(seeds), {k: info[k][0] for k in keys}, {k: info[k][1] for k in keys})
    print(table(rows, budgets))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("names", nargs="*", help="only these mutants (default: all of the chosen kinds)")
    ap.add_argument("--seeds", type=int, default=5, help="K, the number of seeds (default 5)")
    ap.add_argument("--first-seed", type=int, default=1, help="seeds are first-seed .. first-seed+K-1")
    ap.add_argument("--engine", action="store_true", help="engine mutants only")
    ap.add_argument("--spec", action="store_true", help="spec (model) mutants only")
    ap.add_argument("--reread", nargs="+", metavar="JSON", help="no runs: the table again from earlier runs' "
                    "JSON files (merged; killers and claimed invariants read from the catalogs now)")
    ap.add_argument("--chaos", action="store_true", help="the chaos plants (real syncref chaos runs) instead")
    ap.add_argument("--last-machine", action="store_true",
                    help="run only the last machine (SystemMachine, DiffMachine), counting the first as run out: a "
                         "lower bound on k, for mutants the first machine never kills (its whole budget saved per run)")
    ap.add_argument("--skip-killers", action="store_true", help="leave out mutants with a killer test")
    ap.add_argument("--jobs", type=int, default=2, help="subprocesses at a time (default 2, as CI's mutant tests)")
    ap.add_argument("--out", default=str(ROOT / "build" / "kill_margin.json"))
    a = ap.parse_args(argv)
    if a.chaos:
        return chaos_main(a)
    if a.reread:
        return reread(a.reread)
    kinds = ["engine"] * (a.engine or not a.spec) + ["spec"] * (a.spec or not a.engine)
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    budgets = {k: ci_budget(k) for k in kinds}
    jobs: list[tuple[str, str, int | None]] = []
    killers: dict[tuple[str, str], str | None] = {}
    claimed: dict[tuple[str, str], tuple[str, ...]] = {}
    for kind in kinds:
        for name, killer, expected in mutants(kind):
            if (a.names and name not in a.names) or (a.skip_killers and killer is not None):
                continue
            killers[(kind, name)] = killer
            claimed[(kind, name)] = expected
            jobs += [(kind, name, s) for s in [None, *seeds]]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        runs = list(pool.map(lambda j: one(j[0], j[1], budgets[j[0]], j[2], a.last_machine), jobs))
    rows = summarize(runs, seeds, killers, claimed)
    Path(a.out).parent.mkdir(exist_ok=True)
    Path(a.out).write_text(json.dumps({"seeds": seeds, "budgets": budgets, "rows": rows, "runs": runs,
                                       }, indent=1))
    print(table(rows, budgets))
    weak = [f"{r['kind']}:{r['mutant']}" for r in rows
            if (r["k"] < r["K"] or not r["ci_killed"] or r["uncited_seeds"]) and not r["killer"]]
    print(f"\n{len(rows)} mutants x {len(seeds)} seeds + CI's draw in {time.monotonic() - started:.0f} s; "
          f"weak: {weak or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
