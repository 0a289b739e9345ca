"""The mutation driver's sample and interval (tests/support/mutate.py; docs/mutation.md, reference/):
the figures in the docs are only as good as these functions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import mutate
from support.mutate import mutant_names, pick_sample, sample, wilson
from support.mutation_verdicts import EQUIVALENT


def test_wilson_interval_known_values() -> None:
    # all killed / none killed: the closed forms n / (n + z^2) and z^2 / (n + z^2), z = 1.96
    assert wilson(10, 10) == pytest.approx((10 / (10 + 1.96**2), 1.0))
    assert wilson(0, 10) == pytest.approx((0.0, 1.96**2 / (10 + 1.96**2)))
    assert wilson(12, 12)[0] == pytest.approx(0.7575, abs=1e-4)  # the docs' 75.7 %
    # a textbook value: 9 of 10 gives 59.6 % - 98.2 %
    low, high = wilson(9, 10)
    assert (round(low, 3), round(high, 3)) == (0.596, 0.982)
    assert wilson(0, 0) == (0.0, 1.0)


def test_sample_is_reproducible_nested_and_without_repeats() -> None:
    twelve = sample("reference/db.py", 12, 1)
    assert twelve == sample("reference/db.py", 12, 1)
    assert len(set(twelve)) == 12 and all(n.startswith("reference.db.x") and "__mutmut_" in n for n in twelve)
    # a larger sample of the same seed need not extend a smaller one: random.sample picks by a set of drawn
    # indices or by a partial shuffle depending on the sample's size against the population's (12 and 24 of
    # 85-277 mutants fall on different sides), so only --shuffled samples (pick_sample) are nested
    assert set(pick_sample("reference/db.py", 12, 1)) <= set(pick_sample("reference/db.py", 24, 1))
    assert twelve != sample("reference/db.py", 12, 2)
    every = mutant_names("reference/db.py")
    assert sample("reference/db.py", 10_000, 1) == every  # capped at all of the module's mutants, sorted
    assert len(every) == len(set(every)) > 100 and set(twelve) <= set(every)


def test_report_counts_a_sampled_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a run's verdicts as mutmut records them (exit codes; None: not in the sample), and two equivalence
    # claims that no longer hold: one killed, one naming a mutant the module does not make any more
    codes: dict[str, int | None] = {
        "reference.db.x_f__mutmut_1": 1, "reference.db.x_f__mutmut_2": 3, "reference.db.x_f__mutmut_3": 0,
        "reference.db.x_f__mutmut_4": 0, "reference.db.x_f__mutmut_5": -24, "reference.db.x_f__mutmut_6": None,
        "reference.db.x_f__mutmut_7": None, "reference.db.x_f__mutmut_8": 1, "reference.db.x_f__mutmut_9": 33,
        "reference.db.x_f__mutmut_10": 0,
    }
    meta = tmp_path / "mutants" / "reference" / "db.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    # the mutants as mutmut wrote them: 4 still the pinned mutant, 10 renumbered (another mutant now)
    (tmp_path / "mutants" / "reference" / "db.py").write_text(
        "def x_f__mutmut_4(a):\n    b = a\n    return b.encode('UTF-8')\n\n"
        "def x_f__mutmut_10(a):\n    b = None\n    return b.encode('utf-8')\n")
    monkeypatch.setitem(mutate.SHARED, "reference/db.py", tmp_path)
    monkeypatch.setattr(mutate, "MUTATED_LINE", {"reference.db.x_f__mutmut_4": "return b.encode('UTF-8')",
                                                 "reference.db.x_f__mutmut_10": "return b.encode('UTF-8')"})
    monkeypatch.setattr(mutate, "EQUIVALENT", {
        "reference.db.x_f__mutmut_4": "survives, equivalent",
        "reference.db.x_f__mutmut_7": "equivalent, but outside the sample: not counted as checked",
        "reference.db.x_f__mutmut_8": "stale: it was killed",
        "reference.db.x_f__mutmut_99": "stale: no such mutant",
        "reference.db.x_f__mutmut_10": "stale: renumbered, it is another mutant now",
        "reference.log.x_g__mutmut_1": "another module's",
    })
    got = mutate.report("reference/db.py")
    # killed 1, 2, 8; timeout 5; survived 3, 10 (its claim moved); no tests 9; equivalent 4; not checked 6, 7
    assert (got["mutants"], got["killed"], got["timeout"], got["survived"], got["no tests"], got["equivalent"],
            got["not checked"]) == (10, 3, 1, 2, 1, 1, 2)
    assert got["score"] == 57.1  # (3 + 1) / (10 - 1 equivalent - 2 not checked)
    assert got["wilson95"] == [25.0, 84.2]  # 4 of 7
    assert got["survivors"] == ["reference.db.x_f__mutmut_10", "reference.db.x_f__mutmut_3",
                                "reference.db.x_f__mutmut_9"]
    assert got["equivalent_moved"] == ["reference.db.x_f__mutmut_10"]
    assert got["equivalent_but_killed"] == ["reference.db.x_f__mutmut_8"]
    assert got["equivalent_not_a_mutant"] == ["reference.db.x_f__mutmut_99"]


def test_reference_log_equivalents_name_mutants_of_todays_source() -> None:
    # an entry outlives a renumbering (record_hash's 'UTF-8' mutant went when it started calling chain_hash)
    every = set(mutant_names("reference/log.py"))
    claimed = [n for n in EQUIVALENT if n.startswith("reference.log.")]
    assert claimed and set(claimed) <= every


def test_a_record_older_than_the_synced_source_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `prepare` copies the checkout's source into the scratch copy before mutmut regenerates its mutants:
    # in between, the copy's source is today's but its record is an older source's (names and verdicts)
    module = "reference/db.py"
    today = (mutate.ROOT / module).read_bytes()
    (tmp_path / "reference").mkdir()
    (tmp_path / "mutants" / "reference").mkdir(parents=True)
    source, mutated = tmp_path / module, tmp_path / "mutants" / module
    meta = tmp_path / "mutants" / (module + ".meta")
    stale = {"reference.db.x_gone__mutmut_1": 1, "reference.db.x_gone__mutmut_2": 0}
    meta.write_text(json.dumps({"exit_code_by_key": stale}))
    mutated.write_text("# mutants of an older source\n")
    source.write_bytes(today)
    os.utime(mutated, (1_000_000_000, 1_000_000_000))  # mutmut wrote its mutants before the sync
    os.utime(source, (2_000_000_000, 2_000_000_000))
    monkeypatch.setitem(mutate.SHARED, module, tmp_path)
    assert not mutate.record_current(module)
    names = mutant_names(module)
    assert "reference.db.x_gone__mutmut_1" not in names and len(names) > 100  # generated from today's source
    # once mutmut has written the mutants after the copy, the record is today's and is what names them
    os.utime(mutated, (2_000_000_100, 2_000_000_100))
    assert mutate.record_current(module)
    assert mutant_names(module) == sorted(stale)
    # a copy holding another source is never current, whatever the times
    source.write_bytes(today + b"\n# edited\n")
    os.utime(source, (1_000_000_000, 1_000_000_000))
    assert not mutate.record_current(module)


def test_a_plain_samples_report_counts_only_the_drawn_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a --together copy kept across sources holds verdicts of mutants outside today's sample (an older
    # sample's survivor, say): the report of `--sample N` counts the N drawn names only, a drawn name
    # with no verdict as not checked
    codes = {"reference.db.x_f__mutmut_1": 1, "reference.db.x_f__mutmut_2": 0, "reference.db.x_f__mutmut_3": 0,
             "reference.db.x_f__mutmut_4": 1}
    meta = tmp_path / "mutants" / "reference" / "db.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    monkeypatch.setitem(mutate.SHARED, "reference/db.py", tmp_path)
    monkeypatch.setattr(mutate, "EQUIVALENT", {})
    drawn = ["reference.db.x_f__mutmut_1", "reference.db.x_f__mutmut_2", "reference.db.x_f__mutmut_5"]
    got = mutate.report("reference/db.py", drawn)
    assert (got["mutants"], got["killed"], got["survived"], got["not checked"]) == (3, 1, 1, 1)
    assert got["survivors"] == ["reference.db.x_f__mutmut_2"]
    assert got["interval_95"] == [9.5, 90.5]  # 1 of 2 checked
    assert mutate.report("reference/db.py", drawn[:1])["interval_95"] == [20.7, 100.0]  # 1 of 1, checked whole
    whole = mutate.report("reference/db.py")  # without the names: every verdict the copy holds
    assert (whole["mutants"], whole["killed"], whole["survived"]) == (4, 2, 2)


def _mutant_texts(module: str, icontract: bool) -> str:
    """Every mutant mutmut makes of today's ``module`` as one text (in memory, nothing written)."""
    import contextlib
    import io

    from support.mutmut_icontract import patched
    here = Path.cwd()
    os.chdir(mutate.ROOT)  # mutmut reads its configuration from the working directory's pyproject.toml
    try:
        from mutmut.__main__ import write_all_mutants_to_file
        out = io.StringIO()
        with patched() if icontract else contextlib.nullcontext():
            write_all_mutants_to_file(out=out, source=(mutate.ROOT / module).read_text(), filename=Path(module))
    finally:
        os.chdir(here)
    return out.getvalue()


def test_every_pinned_equivalent_is_still_the_mutant_it_describes() -> None:
    """``MUTATED_LINE`` pins each equivalence claim to its mutated line; a change to a module renumbers its
    mutants, and a claim whose number now names another mutant would hide that one as "equivalent" (the
    name check above passed while ``make_record``'s two 'UTF-8' mutants had moved from 23/29 to 24/30).  So
    each pinned line must be in the named mutant's own function, as mutmut makes it from today's source
    (with ``--icontract``'s lifted functions for a mutant only that run makes)."""
    import re

    from support.mutation_verdicts import MUTATED_LINE
    by_module: dict[str, list[str]] = {}
    for name in MUTATED_LINE:
        by_module.setdefault(name.rsplit(".", 1)[0].replace(".", "/") + ".py", []).append(name)
    wrong = []
    for module, names in sorted(by_module.items()):
        texts: dict[bool, str] = {}
        for name in names:
            function = name.rsplit(".", 1)[1]
            for flag in (False, True):  # the --icontract text only when the plain one lacks the mutant
                if flag not in texts:
                    texts[flag] = _mutant_texts(module, flag)
                found = re.search(rf"^([ \t]*)def {re.escape(function)}\(.*?(?=^\1\S|\Z)", texts[flag], re.M | re.S)
                if found is not None:
                    break
            if found is None or MUTATED_LINE[name] not in found.group(0):
                wrong.append(name)
    assert not wrong, f"equivalence claims whose number names another mutant today: {wrong}"
