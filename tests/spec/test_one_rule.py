"""One definition per rule (issue 9): the rule and its second opinion are written differently.

* ``spec.resume.stale_reasons`` is the stale-cursor rule, called by the model server and the engine;
  ``spec.invariants.stale_reasons`` states the same reasons as counts of seqs.  Both are checked
  here against a hand-written table of cases (a third, independent statement), including seqs past
  2**63, and the engine is shown to call the rule rather than restate it.
* ``spec.compat._first_failure`` (every failing check, ranked by the documented order) judges
  ``negotiate`` (a chain of early returns); a chain in the wrong order is caught.
* The model client applies events by ``spec.client.apply_rule`` (no inline copy of it).
"""

from __future__ import annotations

import inspect

import pytest

import reference.engine
import spec.client
import spec.delivery
from spec import invariants
from spec.compat import CompatWindow, _first_failure, negotiate
from spec.errors import ErrorCode
from spec.resume import stale_reasons

BIG = 2**63

# (epoch, head, floor, budget, requested_epoch, watermark) -> reasons, written from DESIGN §3 by hand
STALE_CASES: tuple[tuple[tuple[int, int, int, int, int | None, int], tuple[str, ...]], ...] = (
    ((1, 10, 1, 100, 1, 0), ()),
    ((1, 10, 1, 100, None, 10), ()),
    ((1, 10, 5, 100, 1, 4), ()),  # W = floor - 1: the next event is retained
    ((1, 10, 5, 100, 1, 3), ("retention_floor_breach",)),
    ((1, 10, 1, 5, 1, 5), ()),  # exactly the budget
    ((1, 10, 1, 5, 1, 4), ("replay_budget_exceeded",)),
    ((1, 10, 1, 100, 1, 11), ("cursor_ahead_of_head",)),
    ((2, 10, 1, 100, 1, 3), ("epoch_changed",)),
    ((2, 10, 5, 2, 1, 2), ("epoch_changed", "retention_floor_breach", "replay_budget_exceeded")),
    ((3, 0, 1, 0, 7, 9), ("epoch_changed", "cursor_ahead_of_head")),
    ((1, BIG + 5, BIG, 10, 1, BIG - 1), ()),
    ((1, BIG + 5, BIG, 10, 1, BIG - 2), ("retention_floor_breach",)),
    ((1, BIG + 50, 1, 10, 1, BIG), ("replay_budget_exceeded",)),
    ((1, BIG, 1, 10, None, BIG + 1), ("cursor_ahead_of_head",)),
)


@pytest.mark.parametrize(("args", "want"), STALE_CASES)
def test_stale_rule_and_oracle_match_the_table(args: tuple[int, int, int, int, int | None, int],
                                               want: tuple[str, ...]) -> None:
    assert stale_reasons(*args) == want
    assert invariants.stale_reasons(*args) == want


def test_the_stale_rule_is_defined_once() -> None:
    """The model server and the engine call spec.resume.stale_reasons; neither restates a reason's test."""
    assert spec.delivery.stale_reasons is stale_reasons
    engine_src = inspect.getsource(reference.engine.Engine._check_stale)
    assert "stale_reasons(" in engine_src and "w + 1 < floor" not in engine_src
    assert "reasons.append" not in engine_src


def test_compat_second_opinion_catches_a_chain_in_the_wrong_order() -> None:
    window = CompatWindow()
    # a malformed build with the wrong protocol: the build check comes first
    assert negotiate(window, "garbage", "oa.sync.v0", 2) is not None
    assert _first_failure(window, "garbage", "oa.sync.v0", 2) is ErrorCode.INVALID_CLIENT_BUILD

    def swapped(build: str | None, protocol: str | None, schema: int | None) -> ErrorCode | None:
        if protocol != window.protocol_version:
            return ErrorCode.UNSUPPORTED_PROTOCOL_VERSION
        err = negotiate(window, build, protocol, schema)
        return err.code if err else None
    assert swapped("garbage", "oa.sync.v0", 2) != _first_failure(window, "garbage", "oa.sync.v0", 2)


def test_the_client_applies_by_apply_rule() -> None:
    src = inspect.getsource(spec.client.Client._on_rows)
    assert "apply_rule(view.last, e.seq)" in src and "e.seq > view.last + 1" not in src
