"""`support.mutmut_icontract`: mutmut with the icontract-decorated functions mutated too (docs/mutation.md,
third session; `./run mutate --icontract MODULE`)."""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

import icontract
import pytest
from support.mutmut_icontract import patched

ROOT = Path(__file__).resolve().parents[2]

SOURCE = '''import functools

import icontract


@icontract.require(lambda x: x >= 0, "x is a count")
@icontract.ensure(lambda result: result >= 0)
def double(x: int) -> int:
    return x * 2


def plain(x: int) -> int:
    return x + 1


@functools.cache
@icontract.require(lambda x: x >= 0)
def cached(x: int) -> int:
    return x - 1


class Box:
    @property
    def size(self) -> int:
        return 3 + 4

    @icontract.require(lambda self, n: n > 0)
    def grow(self, n: int) -> int:
        return n + 5
'''


def _functions(names: list[str]) -> Counter[str]:
    return Counter(n.split("__mutmut_")[0] for n in names)


def _generate(source: str, name: str, out: io.StringIO | None = None) -> list[str]:
    here = Path.cwd()
    os.chdir(ROOT)  # mutmut reads its configuration from the working directory's pyproject.toml on import
    try:
        from mutmut.__main__ import write_all_mutants_to_file
    finally:
        os.chdir(here)
    made = write_all_mutants_to_file(out=out or io.StringIO(), source=source, filename=Path(name))
    return list(made.mutant_names)


def test_only_functions_decorated_by_icontract_alone_are_added() -> None:
    plain_run = _functions(_generate(SOURCE, "m.py"))
    assert set(plain_run) == {"x_plain"}   # mutmut alone: every decorated function is skipped
    with patched():
        lifted = _functions(_generate(SOURCE, "m.py"))
    assert set(lifted) == {"x_plain", "x_double", "xǁBoxǁgrow"}   # not the property, not the cached one
    assert lifted["x_plain"] == plain_run["x_plain"]
    assert _functions(_generate(SOURCE, "m.py")) == plain_run   # the patch is undone on leaving


def test_the_patch_adds_names_and_never_renumbers_the_others() -> None:
    source = (ROOT / "spec" / "delivery.py").read_text()
    before = set(_generate(source, "spec/delivery.py"))
    with patched():
        after = set(_generate(source, "spec/delivery.py"))
    assert before < after
    added = _functions(sorted(after - before))
    assert set(added) == {"x_resume_form_error", "x_stale_error", "x_released", "x_advance_durable", "x_recover"}


def test_a_mutated_icontract_function_runs_the_mutant_and_keeps_its_contract(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    with patched():
        names = _generate(SOURCE, "icmutated.py", out)
    (tmp_path / "icmutated.py").write_text(out.getvalue())
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("icmutated")
    times_three = next(n for n in names if n.startswith("x_double__") and "x * 3" in _body(out.getvalue(), n))
    monkeypatch.setenv("MUTANT_UNDER_TEST", "")
    assert module.double(4) == 8
    monkeypatch.setenv("MUTANT_UNDER_TEST", f"icmutated.{times_three}")
    assert module.double(4) == 12
    with pytest.raises(icontract.ViolationError, match="x is a count"):
        module.double(-1)


def _body(code: str, name: str) -> str:
    start = code.index(f"def {name}(")
    return code[start:code.index("\n\n", start)]


def test_the_driver_lists_and_samples_the_decorated_functions_with_icontract(monkeypatch: pytest.MonkeyPatch) -> None:
    """`./run mutate --icontract --shuffled --sample N` picks from the same names mutmut makes with the flag."""
    from support import mutate
    monkeypatch.setattr(mutate, "SHARED", {})  # no scratch copy: the names come from the generator
    monkeypatch.setattr(mutate, "SCRATCH", ROOT / ".no-such-scratch")
    plain = set(mutate.mutant_names("spec/resume.py"))
    monkeypatch.setattr(mutate, "MUTMUT", [sys.executable, "-m", "support.mutmut_icontract"])
    assert mutate.icontract_on()
    lifted = set(mutate.mutant_names("spec/resume.py"))
    assert plain < lifted and {n.split("__mutmut_")[0] for n in lifted - plain} == {"spec.resume.x_stale_reasons"}
    assert set(mutate.pick_sample("spec/resume.py", 1000, 9)) == lifted


def test_decorated_only_lists_and_samples_only_the_mutants_the_flag_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    """`./run mutate --icontract --decorated-only --shuffled --sample N`: the sample is drawn from the
    decorated functions' mutants alone (docs/mutation.md "Decorated functions (--icontract)")."""
    from support import mutate
    monkeypatch.setattr(mutate, "SHARED", {})
    monkeypatch.setattr(mutate, "SCRATCH", ROOT / ".no-such-scratch")
    plain = set(mutate.mutant_names("spec/resume.py"))
    monkeypatch.setattr(mutate, "MUTMUT", [sys.executable, "-m", "support.mutmut_icontract"])
    lifted = set(mutate.mutant_names("spec/resume.py"))
    monkeypatch.setattr(mutate, "DECORATED_ONLY", [True])
    assert mutate.decorated_only()
    added = mutate.mutant_names("spec/resume.py")
    assert set(added) == lifted - plain and len(added) == len(set(added)) > 10
    small, large = mutate.pick_sample("spec/resume.py", 5, 3), mutate.pick_sample("spec/resume.py", 12, 3)
    assert len(small) == 5 and set(small) <= set(large) <= set(added)
    assert set(mutate.pick_sample("spec/resume.py", 1000, 3)) == set(added)
    assert set(mutate.sample("spec/resume.py", 7, 1)) <= set(added)


def test_decorated_only_needs_icontract() -> None:
    from support import mutate
    with pytest.raises(SystemExit):
        mutate.main(["--decorated-only", "spec/resume.py"])


def test_decorated_only_drops_names_of_a_stale_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scratch copy's mutmut record can predate a source change (the copy is synced before mutmut
    regenerates): names it holds that the current source does not make are not decorated mutants."""
    from support import mutate
    monkeypatch.setattr(mutate, "SHARED", {"spec/resume.py": tmp_path})
    monkeypatch.setattr(mutate, "MUTMUT", [sys.executable, "-m", "support.mutmut_icontract"])
    monkeypatch.setattr(mutate, "DECORATED_ONLY", [True])
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "resume.py").write_bytes((ROOT / "spec" / "resume.py").read_bytes())
    monkeypatch.setattr(mutate, "SHARED", {})
    monkeypatch.setattr(mutate, "SCRATCH", ROOT / ".no-such-scratch")
    expected = mutate.mutant_names("spec/resume.py")  # from the generator
    assert len(expected) > 10
    monkeypatch.setattr(mutate, "SHARED", {"spec/resume.py": tmp_path})
    meta = tmp_path / "mutants" / "spec" / "resume.py.meta"
    meta.parent.mkdir(parents=True)
    stale = ["spec.resume.x_stale_reasons__mutmut_999", "spec.resume.x_gone__mutmut_1"]
    meta.write_text(json.dumps({"exit_code_by_key": dict.fromkeys([*expected, *stale], 0)}))
    assert mutate.mutant_names("spec/resume.py") == sorted(expected)
