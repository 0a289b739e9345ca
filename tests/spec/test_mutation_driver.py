"""The mutation driver's sampling and interval (docs/mutation.md "Samples"; `support.mutate`)."""

from __future__ import annotations

import pytest
from support.mutate import mutant_names, pick_sample, wilson


def test_all_mutants_lists_mutmuts_names_for_the_module() -> None:
    # the nine names mutmut's own run of spec/rules.py reported (docs/mutation.md, second session)
    assert mutant_names("spec/rules.py") == sorted(
        [f"spec.rules.x__errors__mutmut_{i}" for i in range(1, 4)]
        + [f"spec.rules.x_outcomes__mutmut_{i}" for i in range(1, 7)])


def test_a_sample_is_reproducible_and_a_larger_one_extends_it() -> None:
    names = set(mutant_names("spec/resume.py"))
    small, again, large = pick_sample("spec/resume.py", 10, 9), pick_sample("spec/resume.py", 10, 9), \
        pick_sample("spec/resume.py", 30, 9)
    assert small == again and len(small) == 10 and len(set(small)) == 10
    assert set(small) <= set(large) <= names and len(large) == 30
    assert pick_sample("spec/resume.py", 10, 10) != small  # another seed, another sample
    assert set(pick_sample("spec/resume.py", 1000, 9)) == names  # a sample as big as the module is all of it


@pytest.mark.parametrize(("killed", "n", "low", "high"), [
    # textbook values of the 95 % Wilson score interval (z = 1.96)
    (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (40, 40, 0.9124, 1.0),
])
def test_wilson_interval(killed: int, n: int, low: float, high: float) -> None:
    got = wilson(killed, n)
    assert got[0] == pytest.approx(low, abs=1e-4) and got[1] == pytest.approx(high, abs=1e-4)
