"""Mutation score, one module at a time (docs/mutation.md; `./run mutate MODULE ...`; not in CI).

mutmut's first phase runs every selected test once under a tracer to learn which tests reach which
function; over the whole fast suite that phase alone took more than 40 minutes on the shared 2-core
machine.  So this driver measures one module at a time against the tests that exercise that module
directly (`TESTS` below), in a scratch copy of the checkout (`.mutate/<module>/`, ignored by git)
whose `[tool.mutmut]` table is rewritten to mutate only that file and to select only those tests.
Hypothesis runs with the `mutation` profile (tests/conftest.py: few examples, derandomized, no
example database), so a verdict does not change from one run to the next.

    PYTHONPATH=tests python -m support.mutate spec/query.py            # measure (fresh scratch copy)
    PYTHONPATH=tests python -m support.mutate --again spec/query.py    # rerun the survivors against
                                                                       # the current tests
    PYTHONPATH=tests python -m support.mutate --report spec/query.py   # summary of the last run
    PYTHONPATH=tests python -m support.mutate --verify spec/query.py   # do the killer tests kill the
                                                                       # last run's survivors? (quick)
    PYTHONPATH=tests python -m support.mutate --resume spec/query.py   # check the mutants a stopped
                                                                       # run did not reach
    PYTHONPATH=tests python -m support.mutate --sample 150 --seed 9 spec/reducers.py
        # a seeded uniform random sample of the module's mutants (for modules too big for a full run);
        # rerunning the same command resumes it, a larger --sample with the same seed extends it;
        # --report/--again/--verify keep to the sample

Sampling: the module's mutants are listed the way mutmut names them (its own mutation code over the
source, `all_mutants`), sorted, shuffled by `random.Random(seed)`, and the first N are the sample (so a
larger N with the same seed extends a smaller one); the pick is stored in
`.mutate/<module>/sample.json` and only those names are given to `mutmut run`.  The report then
counts the sample only and gives the score with a 95 % Wilson interval over the sampled mutants that
were checked and are not equivalent.

The summary counts mutants by mutmut's verdict and applies `support.mutation_verdicts.EQUIVALENT`
(mutants shown not to change behaviour, each with its reason): the score is killed (including
timeouts) over the mutants that are not equivalent.  The process lowers its own priority to nice 19.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mutmut.mutation.file_mutation import mutate_file_contents
from mutmut.utils.format_utils import get_mutant_name

from support.mutation_verdicts import EQUIVALENT

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / ".mutate"

# The tests that call each module's functions directly (unit, property and oracle tests), chosen
# so that mutmut's tracing run over them takes a minute or two, not the whole fast suite.
TESTS: dict[str, list[str]] = {
    "spec/query.py": ["tests/spec/test_query.py", "tests/spec/test_sql_oracle.py",
                      "tests/spec/test_mutation_kills.py"],
    "spec/canonical.py": ["tests/spec/test_canonical.py", "tests/spec/test_mutation_kills.py"],
    "spec/auth.py": ["tests/spec/test_key_and_event_flags.py", "tests/spec/test_regressions.py",
                     "tests/spec/test_hardening_checks.py", "tests/spec/test_mutation_kills.py"],
    "spec/policy.py": ["tests/spec/test_key_and_event_flags.py", "tests/spec/test_regressions.py",
                       "tests/spec/test_hardening_checks.py", "tests/spec/test_mutation_kills.py"],
    "spec/transitions.py": ["tests/spec/test_protocol_doc.py", "tests/spec/test_mutation_kills.py"],
    "spec/compat.py": ["tests/spec/test_compat.py", "tests/spec/test_one_rule.py",
                       "tests/spec/test_mutation_kills.py"],
    "spec/values.py": ["tests/spec/test_query.py", "tests/spec/test_canonical.py",
                       "tests/spec/test_mutation_kills.py"],
    "spec/errors.py": ["tests/spec/test_canonical.py", "tests/spec/test_compat.py",
                       "tests/spec/test_one_rule.py", "tests/spec/test_mutation_kills.py"],
    "spec/resume.py": ["tests/spec/test_one_rule.py", "tests/spec/test_continuation_chain.py",
                       "tests/spec/test_reducers.py", "tests/spec/test_mutation_kills.py"],
    "spec/rules.py": ["tests/spec/test_check_order.py", "tests/spec/test_protocol_doc.py",
                      "tests/spec/test_reach.py", "tests/spec/test_mutation_kills.py"],
    "spec/outcome.py": ["tests/spec/test_reducers.py", "tests/spec/test_check_order.py",
                        "tests/spec/test_mutation_kills.py"],
    "spec/schema.py": ["tests/spec/test_query.py", "tests/spec/test_filter_key.py",
                       "tests/spec/test_key_and_event_flags.py", "tests/spec/test_check_order.py",
                       "tests/spec/test_mutation_kills.py"],
    "spec/state.py": ["tests/spec/test_reducers.py", "tests/spec/test_key_and_event_flags.py",
                      "tests/spec/test_check_order.py", "tests/spec/test_signals_doc.py",
                      "tests/spec/test_sql_oracle.py", "tests/spec/test_mutation_kills.py"],
    "spec/client.py": ["tests/spec/test_client_model.py", "tests/spec/test_continuation_chain.py",
                       "tests/spec/test_one_rule.py", "tests/spec/test_mutation_kills.py"],
    "spec/invariants.py": ["tests/spec/test_regressions.py", "tests/spec/test_hardening_checks.py",
                           "tests/spec/test_one_rule.py", "tests/spec/test_client_model.py",
                           "tests/spec/test_continuation_chain.py", "tests/spec/test_reducers.py",
                           "tests/spec/test_mutation_kills.py"],
    "spec/reducers.py": ["tests/spec/test_reducers.py", "tests/spec/test_check_order.py",
                         "tests/spec/test_key_and_event_flags.py", "tests/spec/test_regressions.py",
                         "tests/spec/test_hardening_checks.py", "tests/spec/test_signals_doc.py",
                         "tests/spec/test_continuation_chain.py", "tests/spec/test_reach.py",
                         "tests/spec/test_mutation_kills.py"],
    "spec/reducer_contracts.py": ["tests/spec/test_reducers.py", "tests/spec/test_check_order.py",
                                  "tests/spec/test_key_and_event_flags.py", "tests/spec/test_regressions.py",
                                  "tests/spec/test_hardening_checks.py", "tests/spec/test_continuation_chain.py",
                                  "tests/spec/test_mutation_kills.py"],
    "reference/log.py": ["tests/reference/test_log_fastpath.py"],
    "reference/db.py": ["tests/reference/test_engine_units.py"],
    "reference/replay.py": ["tests/reference/test_durability.py"],
}

COPIED = ["spec", "reference", "tests", "proofs", "adapters", "benchmarks", "docs", "syncref", "README.md",
          "pyproject.toml"]
IGNORED = shutil.ignore_patterns("node_modules", "__pycache__", ".hypothesis", "*.pyc", ".pytest_cache")

# mutmut's exit-code verdicts (mutmut.stats.status_by_exit_code), folded into the table's columns.
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255, -9}
SURVIVED = {0}
NO_TESTS = {5, 33}


def known(code: int | None) -> bool:
    """Whether `code` is a verdict (None: not run yet; anything else unknown, e.g. -15: interrupted)."""
    return code is not None and (code in KILLED or code in TIMEOUT or code in SURVIVED or code in NO_TESTS)


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def prepare(module: str, fresh: bool) -> Path:
    """The scratch copy for `module`, its sources and tests synced from the checkout."""
    work = SCRATCH / slug(module)
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            if name == "tests" and (work / name).exists():
                shutil.rmtree(work / name)   # removed killer tests must not linger
            shutil.copytree(src, work / name, ignore=IGNORED, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, work / name)
    tests = [t for t in TESTS[module] if (ROOT / t).exists()]
    table = "\n".join([
        "[tool.mutmut]",
        f"# generated by support.mutate for {module}",
        'source_paths = ["spec/", "reference/"]',
        f"only_mutate = {json.dumps([module])}",
        'also_copy = ["proofs/", "adapters/", "benchmarks/", "docs/", "syncref/", "README.md"]',
        'pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-q"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        "",
    ])
    pyproject = (work / "pyproject.toml").read_text()
    pyproject = re.sub(r"\[tool\.mutmut\].*?(?=^\[)", table + "\n", pyproject, flags=re.S | re.M)
    (work / "pyproject.toml").write_text(pyproject)
    mutants_tests = work / "mutants" / "tests"
    if mutants_tests.exists():
        shutil.rmtree(mutants_tests)   # mutmut copies tests/ again on every run
    return work


def all_mutants(module: str) -> list[str]:
    """Every mutant name mutmut generates for `module` (sorted), from mutmut's own mutation code, so the
    names are the ones `mutmut run` uses; depends only on the module's source."""
    source = (ROOT / module).read_text()
    mutated = mutate_file_contents(module, source, None, set())
    return sorted(get_mutant_name(Path(module), name) for name in mutated.mutant_names)


def sample_file(module: str) -> Path:
    return SCRATCH / slug(module) / "sample.json"


def pick_sample(module: str, size: int, seed: int) -> list[str]:
    """A uniform random sample of `size` mutant names, reproducible from (source, size, seed): the first
    `size` of the sorted names shuffled by `random.Random(seed)`.  A prefix of a uniformly random order
    is a uniform sample without replacement, and a larger sample with the same seed contains the smaller
    one, so it extends a run instead of starting another."""
    names = all_mutants(module)
    random.Random(seed).shuffle(names)
    return sorted(names[:size])


@dataclass(frozen=True)
class Sample:
    """A run's sample: `size` names of the module's `of` mutants, picked with `seed`."""

    size: int
    seed: int
    of: int
    names: list[str]


def load_sample(module: str) -> Sample | None:
    path = sample_file(module)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Sample(size=int(data["size"]), seed=int(data["seed"]), of=int(data["of"]), names=list(data["names"]))


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) for a proportion killed/n."""
    if n == 0:
        return (0.0, 1.0)
    p = killed / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def verdicts(module: str) -> dict[str, int | None]:
    meta = SCRATCH / slug(module) / "mutants" / (module + ".meta")
    if not meta.exists():
        return {}
    data: dict[str, dict[str, int | None]] = json.loads(meta.read_text())
    return dict(data["exit_code_by_key"])


def report(module: str) -> dict[str, object]:
    codes = verdicts(module)
    sample = load_sample(module)
    if sample is not None:
        codes = {name: codes.get(name) for name in sample.names}
    count: Counter[str] = Counter()
    survivors: list[str] = []
    for name, code in sorted(codes.items()):
        if code in KILLED:
            count["killed"] += 1
        elif code in TIMEOUT:
            count["timeout"] += 1
        elif name in EQUIVALENT:
            count["equivalent"] += 1
        elif code is None:
            count["not checked"] += 1
        elif code in SURVIVED or code in NO_TESTS:
            count["survived" if code in SURVIVED else "no tests"] += 1
            survivors.append(name)
        else:
            count[f"other({code})"] += 1
            survivors.append(name)
    stale = sorted(n for n in EQUIVALENT if n.startswith(slug(module) + ".") and codes.get(n) in KILLED)
    total = len(codes)
    live = total - count["equivalent"] - count["not checked"]
    killed = count["killed"] + count["timeout"]
    score = killed / live if live else 0.0
    out: dict[str, object] = {"module": module, "mutants": total, **count, "score": round(100 * score, 1)}
    if sample is not None:
        low, high = wilson(killed, live)
        out.update({"sample": {"size": sample.size, "seed": sample.seed, "of": sample.of},
                    "interval_95": [round(100 * low, 1), round(100 * high, 1)]})
    out.update({"survivors": survivors, "equivalent_but_killed": stale})
    return out


KILLER_TESTS = ["tests/spec/test_mutation_kills.py"]


def verify(module: str, tests: list[str]) -> dict[str, bool]:
    """Run `tests` (by default only the killer tests, a second each) against each survivor of the last
    run, the way mutmut does (its trampolines read MUTANT_UNDER_TEST), without touching mutmut's
    verdicts: a quick check that new tests kill what they were written for; `--again` is the
    authoritative rerun."""
    work = SCRATCH / slug(module) / "mutants"
    shutil.rmtree(work / "tests", ignore_errors=True)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=IGNORED)
    survivors = report(module)["survivors"]
    assert isinstance(survivors, list)
    # One process for all survivors (the machine is shared; a process per mutant re-imports everything):
    # mutmut's trampolines read MUTANT_UNDER_TEST on every call, so switching it between pytest runs
    # switches the mutant.  The first run is the control: no mutant active, the tests must pass (so a
    # failure below is a kill, not a broken setup).
    worker = (
        "import json, os, sys, pytest\n"
        "args = ['-x', '-q', '-p', 'no:xdist', '-p', 'no:cacheprovider', *json.loads(sys.argv[2])]\n"
        "out = {}\n"
        "for name in [''] + json.loads(sys.argv[1]):\n"
        "    os.environ['MUTANT_UNDER_TEST'] = name\n"
        "    out[name] = int(pytest.main(args))\n"
        "print('VERDICTS ' + json.dumps(out))\n")
    env = dict(os.environ, HYPOTHESIS_PROFILE="mutation")
    run = subprocess.run([sys.executable, "-c", worker, json.dumps(survivors), json.dumps(tests)], cwd=work, env=env,
                         capture_output=True, text=True, check=False)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("VERDICTS ")), None)
    if line is None:
        raise SystemExit(f"the verify worker failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    codes: dict[str, int] = json.loads(line.removeprefix("VERDICTS "))
    if codes.pop("") != 0:
        raise SystemExit(f"the tests {tests} fail in {work} with no mutant active")
    return {name: code != 0 for name, code in codes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", choices=sorted(TESTS))
    parser.add_argument("--again", action="store_true", help="rerun the survivors of the last run")
    parser.add_argument("--report", action="store_true", help="only summarise the last run")
    parser.add_argument("--verify", action="store_true", help="run the killer tests against the survivors")
    parser.add_argument("--tests", nargs="*", default=KILLER_TESTS, help="the tests --verify runs")
    parser.add_argument("--resume", action="store_true", help="check the mutants the last run did not reach")
    parser.add_argument("--sample", type=int, help="run a seeded uniform random sample of this many mutants")
    parser.add_argument("--seed", type=int, default=9, help="the sample's seed (default 9)")
    parser.add_argument("--children", type=int, default=int(os.environ.get("MUTATE_CHILDREN", "1")))
    args = parser.parse_args(argv)
    os.nice(19)
    for module in args.modules:
        if args.verify:
            killed = verify(module, args.tests)
            print(json.dumps({"module": module, "survivors": len(killed), "killed_now": sum(killed.values()),
                              "still_alive": sorted(n for n, k in killed.items() if not k)}))
            continue
        if not args.report:
            names: list[str] = [slug(module) + ".*"]
            resuming = args.again or args.resume
            if args.sample is not None:
                chosen = pick_sample(module, args.sample, args.seed)
                previous = load_sample(module)
                # the same sample again resumes it, a larger one with the same seed extends it (both keep the
                # verdicts); another sample starts afresh
                resuming = resuming or (previous is not None and previous.seed == args.seed
                                        and set(previous.names) <= set(chosen))
                work = prepare(module, fresh=not resuming)
                sample_file(module).write_text(json.dumps(
                    {"module": module, "size": len(chosen), "seed": args.seed, "of": len(all_mutants(module)),
                     "names": chosen}, indent=1))
                codes = verdicts(module)
                names = [n for n in chosen if not known(codes.get(n))]
            else:
                work = prepare(module, fresh=not resuming)
                if args.resume:
                    names = [n for n, code in verdicts(module).items() if not known(code)]
            if args.again:
                survivors = report(module)["survivors"]
                assert isinstance(survivors, list)
                names = survivors
            if names:
                env = dict(os.environ, HYPOTHESIS_PROFILE="mutation")
                cmd = [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", str(args.children),
                       *names]
                subprocess.run(cmd, cwd=work, env=env, check=False)
        print(json.dumps(report(module)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
