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


# ADR-0042: a resume bounded above (seq <= B) is measured as min(head, B) - W against the budget; nothing
# else changes.  (epoch, head, floor, budget, requested_epoch, watermark, B) -> reasons, by hand
PAGED_CASES: tuple[tuple[tuple[int, int, int, int, int | None, int, int | None], tuple[str, ...]], ...] = (
    ((1, 100, 1, 10, 1, 0, 10), ()),  # a page of exactly the budget, far behind the head
    ((1, 100, 1, 10, 1, 0, 11), ("replay_budget_exceeded",)),  # one event over
    ((1, 100, 1, 10, 1, 0, None), ("replay_budget_exceeded",)),  # unbounded: head - W, as before
    ((1, 100, 1, 10, 1, 90, None), ()),
    ((1, 5, 1, 3, 1, 0, 1000), ("replay_budget_exceeded",)),  # a bound past the head: the head ends it (5 > 3)
    ((1, 5, 1, 10, 1, 0, 1000), ()),
    ((1, 100, 1, 10, 1, 95, 1000), ()),  # min(head, B) = head: 5 events
    ((1, 100, 1, 10, 1, 50, 40), ()),  # B < W: an empty page replays nothing
    ((1, 100, 1, 0, 1, 7, 7), ()),  # budget 0: an empty page passes ...
    ((1, 100, 1, 0, 1, 7, 8), ("replay_budget_exceeded",)),  # ... a page of one does not
    ((1, 100, 5, 10, 1, 0, 10), ("retention_floor_breach",)),  # a page does not excuse the floor
    ((1, 100, 5, 10, 1, 3, 5), ("retention_floor_breach",)),
    ((1, 100, 5, 10, 1, 4, 14), ()),  # W = floor - 1
    ((1, 100, 1, 10, 1, 101, 105), ("cursor_ahead_of_head",)),  # nor a cursor past the head
    ((2, 100, 1, 10, 1, 0, 5), ("epoch_changed",)),  # nor another epoch
    ((2, 100, 5, 2, 1, 2, 50), ("epoch_changed", "retention_floor_breach", "replay_budget_exceeded")),
    ((1, BIG + 50, 1, 10, 1, BIG, BIG + 10), ()),
    ((1, BIG + 50, 1, 10, 1, BIG, BIG + 11), ("replay_budget_exceeded",)),
)


@pytest.mark.parametrize(("args", "want"), PAGED_CASES)
def test_a_paged_resume_is_measured_to_its_bound(args: tuple[int, int, int, int, int | None, int, int | None],
                                                want: tuple[str, ...]) -> None:
    assert stale_reasons(*args) == want
    assert invariants.stale_reasons(*args) == want


# a query's upper seq bound as the rule reads it (ADR-0042), by hand: the smallest B with seq <= B implied
UPPER_CASES: tuple[tuple[str, int | None], ...] = (
    ("seq > 3", None),
    ("seq > 3 AND seq <= 9", 9),
    ("seq > 3 AND seq < 9", 8),
    ("seq > 3 AND 9 >= seq", 9),  # written the other way round
    ("seq > 3 AND 9 > seq", 8),
    ("seq > 3 AND seq <= 9 AND seq < 7", 6),  # the tighter one
    ("seq > 3 AND seq < 12 AND seq <= 20", 11),
    ("seq = 5", None),  # an equality is not read as a bound (nor as a watermark)
    ("seq > 3 AND seq <= 0", 0),
)


@pytest.mark.parametrize(("where", "want"), UPPER_CASES)
def test_the_upper_bound_of_a_resume(where: str, want: int | None) -> None:
    from spec import query as q
    query = q.parse(f"SELECT * FROM sync_event WHERE stream_id = 's' AND epoch = 1 AND {where}")[0]
    assert q.upper_bound_inclusive(query, "seq") == want


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
