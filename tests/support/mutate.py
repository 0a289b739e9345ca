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
    PYTHONPATH=tests python -m support.mutate --sample 120 --seed 1 reference/engine.py
                                            # a seeded uniform random sample of the module's mutants
                                            # (score with a 95 % Wilson interval), for modules too big
                                            # to measure whole
    PYTHONPATH=tests python -m support.mutate --resume spec/query.py   # check the mutants a stopped
                                                                       # run did not reach
    PYTHONPATH=tests python -m support.mutate --shuffled --sample 150 --seed 9 spec/reducers.py
        # the spec/ modules' samples (docs/mutation.md, second session): the first N of the module's
        # mutants shuffled by random.Random(seed); kept in .mutate/<module>/sample.json, rerunning
        # resumes it, a larger N with the same seed extends it, and --report/--again/--verify keep to it
    PYTHONPATH=tests python -m support.mutate --icontract --decorated-only --shuffled --sample 60 --seed 3 \
        spec/reducers.py    # a sample of the mutants only --icontract adds (the decorated functions')

The summary counts mutants by mutmut's verdict and applies `support.mutation_verdicts.EQUIVALENT`
(mutants shown not to change behaviour, each with its reason): the score is killed (including
timeouts) over the mutants that are not equivalent.  The process lowers its own priority to nice 19.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
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

from support.mutation_verdicts import EQUIVALENT, MUTATED_LINE

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
    "spec/values.py": ["tests/spec/test_query.py", "tests/spec/test_canonical.py", "tests/spec/test_row_init.py",
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
                           "tests/spec/test_mutation_kills.py", "tests/spec/test_mutation_kills_invariants.py"],
    "spec/reducers.py": ["tests/spec/test_reducers.py", "tests/spec/test_check_order.py",
                         "tests/spec/test_key_and_event_flags.py", "tests/spec/test_regressions.py",
                         "tests/spec/test_hardening_checks.py", "tests/spec/test_signals_doc.py",
                         "tests/spec/test_continuation_chain.py", "tests/spec/test_reach.py",
                         "tests/spec/test_mutation_kills.py"],
    "spec/reducer_contracts.py": ["tests/spec/test_reducers.py", "tests/spec/test_check_order.py",
                                  "tests/spec/test_key_and_event_flags.py", "tests/spec/test_regressions.py",
                                  "tests/spec/test_hardening_checks.py", "tests/spec/test_continuation_chain.py",
                                  "tests/spec/test_mutation_kills.py", "tests/spec/test_mutation_kills_contracts.py",
                                  "tests/spec/test_mutation_kills_invariants.py"],
    # third session: the system machine, its trace checker and the canonical-JSON vectors (the
    # Hypothesis machines are left out: test_mutation_kills_system.py runs the system machine briefly)
    "spec/system.py": ["tests/spec/test_continuation_chain.py", "tests/spec/test_mutation_kills_system.py"],
    "spec/trace.py": ["tests/spec/test_hardening_checks.py", "tests/spec/test_continuation_chain.py",
                      "tests/spec/test_mutation_kills_system.py"],
    "spec/vectors.py": ["tests/conformance/test_vectors.py", "tests/spec/test_mutation_kills_system.py"],
    # spec/delivery.py, harness.py, contracts.py (third session): the harness and scenario tables and the
    # regressions drive the transitions directly.  Left out: the Hypothesis machines (tests/spec/
    # test_machines.py, a minute a run under the mutation profile) and the SQL oracle (test_sql_oracle.py:
    # 25 s in the tracing run, 130-225 s per mutant of authorize_query or Server.releasable on the loaded
    # machine -- its negative controls search their whole budget when a mutant hides the planted bug)
    "spec/delivery.py": ["tests/spec/test_harness.py", "tests/spec/test_hardening_model.py",
                         "tests/spec/test_regressions.py", "tests/spec/test_key_and_event_flags.py",
                         "tests/spec/test_one_rule.py", "tests/spec/test_mutation_kills_delivery.py"],
    "spec/harness.py": ["tests/spec/test_harness.py", "tests/spec/test_hardening_model.py",
                        "tests/spec/test_regressions.py", "tests/spec/test_key_and_event_flags.py",
                        "tests/spec/test_one_rule.py", "tests/spec/test_mutation_kills_delivery.py"],
    "spec/contracts.py": ["tests/reference/test_contract_switch.py", "tests/spec/test_mutation_kills_delivery.py"],
    # reference/: the engine's unit, scenario and durability tests (no server processes; the
    # differential machines are left out: 40 s a run, too slow to rerun per surviving mutant)
    "reference/log.py": ["tests/reference/test_log_fastpath.py", "tests/reference/test_engine_chain.py",
                         "tests/reference/test_durability.py", "tests/reference/test_mutation_kills_reference.py"],
    "reference/db.py": ["tests/reference/test_engine_units.py", "tests/reference/test_engine_isolation.py",
                        "tests/reference/test_hardening_engine.py", "tests/reference/test_engine_chain.py",
                        "tests/reference/test_snapshot.py", "tests/reference/test_mutation_kills_reference.py"],
    "reference/eventlog.py": ["tests/reference/test_eventlog.py", "tests/reference/test_engine_units.py",
                              "tests/reference/test_snapshot.py", "tests/reference/test_mutation_kills_reference.py"],
    "reference/replay.py": ["tests/reference/test_durability.py", "tests/reference/test_snapshot.py",
                            "tests/reference/test_engine_chain.py", "tests/reference/test_mutation_kills_reference.py",
                            "tests/reference/test_log_identity.py"],  # verify_log's head-mark check (ADR-0039)
    "reference/snapshot.py": ["tests/reference/test_snapshot.py", "tests/reference/test_mutation_kills_reference.py",
                              "tests/reference/test_log_identity.py"],  # header_log_id, ours, prune (ADR-0039)
    "reference/reducers.py": ["tests/reference/test_engine_units.py", "tests/reference/test_hardening_engine.py",
                              "tests/reference/test_engine_isolation.py",
                              "tests/reference/test_bridge_enqueue_controls.py",
                              "tests/reference/test_engine_chain.py",
                              "tests/reference/test_mutation_kills_reference.py"],
    "reference/durability.py": ["tests/reference/test_durability.py", "tests/reference/test_log_fastpath.py",
                                "tests/reference/test_snapshot.py", "tests/reference/test_mutation_kills_reference.py",
                                # ADR-0039's log id and head mark (check_evidence, the mark's write/read)
                                "tests/reference/test_log_identity.py"],
    "reference/engine.py": ["tests/reference/test_engine_units.py", "tests/reference/test_resume_fast_path.py",
                            "tests/reference/test_hardening_engine.py",
                            "tests/reference/test_engine_isolation.py", "tests/reference/test_engine_chain.py",
                            "tests/reference/test_bridge_enqueue_controls.py",
                            "tests/reference/test_mutation_kills_reference.py",
                            # the fanout's fast path (ADR-0026): the differential machine's subscribers
                            # are mostly on the general path
                            "tests/reference/test_fanout_fast_path.py"],
    "reference/parsecache.py": ["tests/reference/test_parse_cache.py"],
}

# planted-mutant harnesses inside a selected file: they edit the module's source text, which mutmut has
# rewritten (its trampolines), so they cannot find their edit targets there (the eventlog ones also
# drive 40 seeds per planted bug: minutes per mutant)
DESELECTED = ["--deselect", "tests/reference/test_engine_isolation.py::test_planted_isolation_bugs_are_caught",
              "--deselect", "tests/reference/test_eventlog.py::test_planted_bugs_in_the_store_are_caught",
              "--deselect", "tests/reference/test_eventlog.py::test_planted_bugs_in_the_column_encoder_are_caught",
              "--deselect", "tests/reference/test_eventlog.py::test_planted_bugs_in_the_store_runs_are_caught",
              # fifth session's planted edits of canonical JSON's scanner call and tree encoder
              "--deselect", "tests/spec/test_canonical.py::test_planted_scanner_and_tree_encoder_bugs_are_caught",
              "--deselect", "tests/reference/test_parse_cache.py::test_planted_bugs_in_the_facts_are_killed",
              "--deselect", "tests/reference/test_fanout_fast_path.py::test_planted_bugs_in_the_fast_path_are_caught",
              "--deselect", "tests/reference/test_fanout_fast_path.py::test_the_mutant_machinery_alone_fails_nothing",
              "--deselect", "tests/reference/test_fanout_fast_path.py::"
              "test_the_keep_alive_check_sees_the_merged_parts_freed",
              # starts `syncref serve` processes from the scratch copy, whose package resources (the
              # mutants/ tree beside the sources) do not resolve; in-process tests of the switch remain
              "--deselect", "tests/reference/test_contract_switch.py::"
              "test_serve_defaults_off_and_the_flag_the_env_and_the_config_turn_them_on"]

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


# the mutmut command: plain mutmut, or (`--icontract`) mutmut that also mutates the functions whose only
# decorators are icontract's (support.mutmut_icontract; run from the scratch copy's tests/)
MUTMUT: list[str] = [str(Path(sys.executable).parent / "mutmut")]


def icontract_on() -> bool:
    """Whether this run mutates the icontract-decorated functions too (`--icontract`)."""
    return MUTMUT[-1] == "support.mutmut_icontract"


# `--decorated-only` (with --icontract): the mutants only the --icontract run makes, those of the functions
# decorated by icontract alone, listed and sampled apart from the rest (scratch copy `.mutate/<module>+decorated`)
DECORATED_ONLY: list[bool] = [False]


def decorated_only() -> bool:
    """Whether names, samples and reports keep to the icontract-decorated functions' mutants."""
    return DECORATED_ONLY[0]


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


# `--together`: modules measured in one scratch copy and one mutmut run (one tracing phase over the
# union of their tests) share a directory; every other module has its own.
SHARED: dict[str, Path] = {}


def scratch(module: str) -> Path:
    return SHARED.get(module, SCRATCH / slug(module))


def prepare(modules: list[str], fresh: bool) -> Path:
    """The scratch copy for `modules` (one, or several measured together), sources and tests synced
    from the checkout."""
    work = scratch(modules[0])
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
    tests = [t for t in dict.fromkeys(t for m in modules for t in TESTS[m]) if (ROOT / t).exists()]
    table = "\n".join([
        "[tool.mutmut]",
        f"# generated by support.mutate for {' '.join(modules)}",
        'source_paths = ["spec/", "reference/"]',
        f"only_mutate = {json.dumps(modules)}",
        'also_copy = ["proofs/", "adapters/", "benchmarks/", "docs/", "syncref/", "README.md"]',
        f"pytest_add_cli_args = {json.dumps(['-p', 'no:xdist', '-p', 'no:cacheprovider', '-q', *DESELECTED])}",
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


def record_current(module: str) -> bool:
    """Whether the scratch copy's mutmut record (`mutants/<module>.meta`) was made from the checkout's
    source.  `prepare` syncs the source before mutmut runs, so equal source texts are not enough: the
    record is current only when mutmut wrote its mutants after the source it copied (mutmut's own test,
    `source_mtime < mutant_mtime`); until then its names and verdicts are an older source's."""
    work = scratch(module)
    made_from, mutated, meta = work / module, work / "mutants" / module, work / "mutants" / (module + ".meta")
    if not (meta.exists() and mutated.exists() and made_from.exists()):
        return False
    return (made_from.read_bytes() == (ROOT / module).read_bytes()
            and made_from.stat().st_mtime < mutated.stat().st_mtime)


def mutant_names(module: str) -> list[str]:
    """Every mutant mutmut makes of `module`, by name: from the scratch copy's record when mutmut has made
    them there from the current source, else from its generator, in memory (nothing is written)."""
    meta = scratch(module) / "mutants" / (module + ".meta")
    source = (ROOT / module).read_text()
    if record_current(module):
        names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
    else:
        names = list(_generated(module, source, icontract_on()))
    if decorated_only():  # the names a plain run would not make: mutmut never renumbers the others
        plain = set(_generated(module, source, False))
        # (and names the flag makes from this source: a scratch copy's record may predate a source change)
        lifted = set(_generated(module, source, True))
        names = [n for n in names if n in lifted and n not in plain]
    return names


@functools.lru_cache(maxsize=16)
def _generated(module: str, source: str, icontract: bool = False) -> tuple[str, ...]:
    """mutmut's mutant names for `source` (the text of `module`; cached by content), with the functions
    decorated by icontract alone when `icontract` (as `--icontract` runs mutmut)."""
    here = Path.cwd()
    os.chdir(ROOT)  # mutmut reads its configuration from the working directory's pyproject.toml on import
    try:
        from mutmut.__main__ import write_all_mutants_to_file
        from mutmut.utils.format_utils import get_mutant_name
    finally:
        os.chdir(here)
    from support.mutmut_icontract import patched
    path = Path(module)
    with patched() if icontract else contextlib.nullcontext():
        made = write_all_mutants_to_file(out=io.StringIO(), source=source, filename=path)
    return tuple(sorted(get_mutant_name(path, name) for name in made.mutant_names))


def sample(module: str, size: int, seed: int) -> list[str]:
    """A uniform random sample of `size` of the module's mutants, without replacement, reproducible
    from `seed` (the names are sorted first, so the sample depends only on the source and the seed)."""
    names = mutant_names(module)
    return sorted(random.Random(seed).sample(names, min(size, len(names))))


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % for z = 1.96) of a proportion `killed / n` (a sample's kill rate)."""
    if n == 0:
        return 0.0, 1.0
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pick_sample(module: str, size: int, seed: int) -> list[str]:
    """`--shuffled` samples: the first `size` of the module's sorted mutant names shuffled by
    `random.Random(seed)`.  A prefix of a uniformly random order is a uniform sample without
    replacement, and a larger sample with the same seed always contains the smaller one."""
    names = list(mutant_names(module))
    random.Random(seed).shuffle(names)
    return sorted(names[:size])


@dataclass(frozen=True)
class Sample:
    """A `--shuffled` run's sample: `size` names of the module's `of` mutants, picked with `seed`."""

    size: int
    seed: int
    of: int
    names: list[str]


def sample_file(module: str) -> Path:
    return scratch(module) / "sample.json"


def load_sample(module: str) -> Sample | None:
    path = sample_file(module)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Sample(size=int(data["size"]), seed=int(data["seed"]), of=int(data["of"]), names=list(data["names"]))


def verdicts(module: str) -> dict[str, int | None]:
    meta = scratch(module) / "mutants" / (module + ".meta")
    if not meta.exists():
        return {}
    data: dict[str, dict[str, int | None]] = json.loads(meta.read_text())
    return dict(data["exit_code_by_key"])


def mutant_source(module: str, name: str) -> str | None:
    """The text of mutant `name` (its function as mutmut wrote it) in the scratch copy, if there."""
    path = scratch(module) / "mutants" / module
    if not path.exists():
        return None
    text = path.read_text()
    found = re.search(rf"^([ \t]*)def {re.escape(name.removeprefix(slug(module) + '.'))}\(", text, re.M)
    if found is None:
        return None
    lines = text[found.start():].splitlines()
    body = lines[:1]
    for line in lines[1:]:
        if line.strip() and not line.startswith(found.group(1) + " "):
            break
        body.append(line)
    return "\n".join(body)


def moved(module: str) -> list[str]:
    """Equivalence claims whose mutant no longer carries the pinned mutated line (`MUTATED_LINE`): the
    function was edited and its mutants renumbered, so the name now means another mutant."""
    out = []
    for name, line in MUTATED_LINE.items():
        if name.startswith(slug(module) + ".") and name in EQUIVALENT:
            src = mutant_source(module, name)
            if src is not None and line not in {ln.strip() for ln in src.splitlines()}:
                out.append(name)
    return sorted(out)


def report(module: str, drawn: list[str] | None = None) -> dict[str, object]:
    """The summary of the scratch copy's verdicts for `module`: over a `--shuffled` sample's names when
    one is stored, else over `drawn` (a plain `--sample`'s names) when given, else over every verdict the
    copy holds (which, in a copy kept across sources and samples, includes mutants outside today's sample)."""
    codes = verdicts(module)
    shifted = moved(module)
    stored = load_sample(module)
    if stored is not None:  # a --shuffled sample: count the sample only
        codes = {name: codes.get(name) for name in stored.names}
    elif drawn is not None:  # a plain --sample: count the drawn names only
        codes = {name: codes.get(name) for name in drawn}
    elif decorated_only():  # the decorated functions' mutants only
        codes = {name: codes.get(name) for name in mutant_names(module)}
    count: Counter[str] = Counter()
    survivors: list[str] = []
    for name, code in sorted(codes.items()):
        if code in KILLED:
            count["killed"] += 1
        elif code in TIMEOUT:
            count["timeout"] += 1
        elif code is None:  # not run (outside a sample, or a stopped run), equivalent or not
            count["not checked"] += 1
        elif name in EQUIVALENT and name not in shifted:
            count["equivalent"] += 1
        elif code in SURVIVED or code in NO_TESTS:
            count["survived" if code in SURVIVED else "no tests"] += 1
            survivors.append(name)
        else:
            count[f"other({code})"] += 1
            survivors.append(name)
    stale = sorted(n for n in EQUIVALENT if n.startswith(slug(module) + ".") and codes.get(n) in KILLED)
    # verdicts for names mutmut no longer makes (the source changed and the mutants were renumbered)
    made = verdicts(module)
    unknown = sorted(n for n in EQUIVALENT if made and n.startswith(slug(module) + ".") and n not in made)
    total = len(codes)
    live = total - count["equivalent"] - count["not checked"]
    score = (count["killed"] + count["timeout"]) / live if live else 0.0
    out: dict[str, object] = {"module": module, "mutants": total, **count, "score": round(100 * score, 1)}
    if count["not checked"]:  # a sample (or a stopped run): the interval of the kill rate over the checked part
        low, high = wilson(count["killed"] + count["timeout"], live)
        out["wilson95"] = [round(100 * low, 1), round(100 * high, 1)]
    if stored is not None:
        low, high = wilson(count["killed"] + count["timeout"], live)
        out.update({"sample": {"size": stored.size, "seed": stored.seed, "of": stored.of},
                    "interval_95": [round(100 * low, 1), round(100 * high, 1)]})
    elif drawn is not None:  # a plain sample: the interval of its kill rate, checked whole or not
        low, high = wilson(count["killed"] + count["timeout"], live)
        out["interval_95"] = [round(100 * low, 1), round(100 * high, 1)]
    return {**out, "survivors": survivors, "equivalent_but_killed": stale, "equivalent_not_a_mutant": unknown,
            "equivalent_moved": shifted}


def survivors_of(module: str) -> list[str]:
    found = report(module)["survivors"]
    assert isinstance(found, list)
    return found


KILLER_TESTS = ["tests/spec/test_mutation_kills.py", "tests/spec/test_mutation_kills_invariants.py",
                "tests/spec/test_mutation_kills_contracts.py", "tests/spec/test_mutation_kills_delivery.py",
                "tests/spec/test_mutation_kills_system.py"]


def verify(module: str, tests: list[str]) -> dict[str, bool]:
    """Run `tests` (by default only the killer tests, a second each) against each survivor of the last
    run, the way mutmut does (its trampolines read MUTANT_UNDER_TEST), without touching mutmut's
    verdicts: a quick check that new tests kill what they were written for; `--again` is the
    authoritative rerun."""
    work = scratch(module) / "mutants"
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
    parser.add_argument("--children", type=int, default=int(os.environ.get("MUTATE_CHILDREN", "1")))
    parser.add_argument("--sample", type=int, default=0, help="measure a uniform random sample of this many mutants")
    parser.add_argument("--seed", type=int, default=1, help="the sample's seed")
    parser.add_argument("--resume", action="store_true", help="check the mutants the last run did not reach")
    parser.add_argument("--shuffled", action="store_true",
                        help="with --sample: the first N of the mutants shuffled by the seed, kept in sample.json "
                             "(a larger N extends the sample; --report/--again/--verify keep to it)")
    parser.add_argument("--together", action="store_true",
                        help="the modules in one scratch copy and one mutmut run (one tracing phase over the union "
                             "of their tests; with --sample, N mutants of each module)")
    parser.add_argument("--icontract", action="store_true",
                        help="also mutate the functions whose only decorators are icontract's (mutmut skips every "
                             "decorated function); in a scratch copy of its own, .mutate/<module>+icontract")
    parser.add_argument("--decorated-only", action="store_true",
                        help="with --icontract: only the mutants the flag adds (the icontract-decorated functions'), "
                             "for runs, samples and reports; scratch copy .mutate/<module>+decorated")
    args = parser.parse_args(argv)
    if args.decorated_only and not args.icontract:
        parser.error("--decorated-only needs --icontract")
    os.nice(19)
    if args.icontract:
        if args.together:
            parser.error("--icontract measures one module at a time")
        DECORATED_ONLY[0] = args.decorated_only
        suffix = "+decorated" if args.decorated_only else "+icontract"
        SHARED.update({m: SCRATCH / (slug(m) + suffix) for m in args.modules})
        MUTMUT[:] = [sys.executable, "-m", "support.mutmut_icontract"]
        os.environ["PYTHONPATH"] = "tests"  # the scratch copy's tests/ (mutmut runs in the scratch copy)
    if args.together:
        shared = SCRATCH / "+".join(slug(m) for m in args.modules)
        SHARED.update({m: shared for m in args.modules})
        if not (args.verify or args.report):
            prepare(args.modules, fresh=not args.again)
            if args.again:
                # a module whose record predates its source: mutmut regenerates it and resets the verdicts
                # of the changed functions, so its old verdicts choose nothing (every sampled mutant runs)
                current = {m: record_current(m) for m in args.modules}
                names = [str(n) for m in args.modules if current[m] for n in survivors_of(m)]
                if args.sample:  # a stopped sampled run: also the sampled mutants not checked yet
                    names += [n for m in args.modules for n in sample(m, args.sample, args.seed)
                              if not current[m] or verdicts(m).get(n) is None]
            elif args.sample:
                names = [n for m in args.modules for n in sample(m, args.sample, args.seed)]
            else:
                names = [slug(m) + ".*" for m in args.modules]
            if names:
                cmd = [*MUTMUT, "run", "--max-children", str(args.children),
                       *names]
                subprocess.run(cmd, cwd=shared, env=dict(os.environ, HYPOTHESIS_PROFILE="mutation"), check=False)
            args.report = True
    for module in args.modules:
        if args.verify:
            killed = verify(module, args.tests)
            print(json.dumps({"module": module, "survivors": len(killed), "killed_now": sum(killed.values()),
                              "still_alive": sorted(n for n, k in killed.items() if not k)}))
            continue
        if not args.report and args.shuffled and args.sample:
            chosen = pick_sample(module, args.sample, args.seed)
            previous = load_sample(module)
            # the same sample again resumes it, a larger one with the same seed extends it (both keep the
            # verdicts), --resume keeps an unsampled run's verdicts; another sample starts afresh
            keep = args.again or args.resume or (previous is not None and previous.seed == args.seed
                                                 and set(previous.names) <= set(chosen))
            work = prepare([module], fresh=not keep)
            sample_file(module).write_text(json.dumps(
                {"module": module, "size": len(chosen), "seed": args.seed, "of": len(mutant_names(module)),
                 "names": chosen}, indent=1))
            codes = verdicts(module)
            names = survivors_of(module) if args.again else [n for n in chosen if not known(codes.get(n))]
            if names:
                cmd = [*MUTMUT, "run", "--max-children", str(args.children),
                       *names]
                subprocess.run(cmd, cwd=work, env=dict(os.environ, HYPOTHESIS_PROFILE="mutation"), check=False)
        elif not args.report and args.resume:
            work = prepare([module], fresh=False)
            names = [n for n, code in verdicts(module).items() if not known(code)]
            if names:
                cmd = [*MUTMUT, "run", "--max-children", str(args.children),
                       *names]
                subprocess.run(cmd, cwd=work, env=dict(os.environ, HYPOTHESIS_PROFILE="mutation"), check=False)
        elif not args.report:
            work = prepare([module], fresh=not args.again)
            if args.again:
                names = survivors_of(module)
                if args.sample:  # a stopped sampled run: its survivors and the sampled mutants not checked yet
                    codes = verdicts(module)
                    names += [n for n in sample(module, args.sample, args.seed) if codes.get(n) is None]
            else:
                names = (sample(module, args.sample, args.seed) if args.sample
                         else mutant_names(module) if decorated_only() else [slug(module) + ".*"])
            assert isinstance(names, list)
            if names:
                env = dict(os.environ, HYPOTHESIS_PROFILE="mutation")
                cmd = [*MUTMUT, "run", "--max-children", str(args.children),
                       *names]
                subprocess.run(cmd, cwd=work, env=env, check=False)
        drawn = sample(module, args.sample, args.seed) if args.sample and not args.shuffled else None
        print(json.dumps(report(module, drawn)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
