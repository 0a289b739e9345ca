"""The mutation driver's sample and interval (tests/support/mutate.py; docs/mutation.md, reference/):
the figures in the docs are only as good as these two functions."""

from __future__ import annotations

import pytest
from support.mutate import mutant_names, sample, wilson


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
    assert set(twelve) <= set(sample("reference/db.py", 24, 1))  # a larger sample of the same seed extends it
    assert twelve != sample("reference/db.py", 12, 2)
    every = mutant_names("reference/db.py")
    assert sample("reference/db.py", 10_000, 1) == every  # capped at all of the module's mutants, sorted
    assert len(every) == len(set(every)) > 100 and set(twelve) <= set(every)
