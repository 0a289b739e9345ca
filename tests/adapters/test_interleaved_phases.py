"""The isolation figure's method (:mod:`support.interleaved`): the interleaved schedule, nearest-rank
percentiles against a hand table, and the bracketed ratio cancelling a drift that an unbracketed
"first baseline" comparison reports as an outage cost (the bridge measurement's old mistake)."""

from __future__ import annotations

import math

import pytest
from support.interleaved import (
    BASELINE,
    METRICS,
    Phase,
    Spread,
    baseline_drift,
    bracketed_ratios,
    percentile,
    schedule,
    summarize,
)

B, K, H = BASELINE, "killed", "hung"


@pytest.mark.parametrize(("rounds", "outages", "expected"), [
    (1, [K], [B, K, B]),
    (1, [K, H], [B, K, B, H, B]),
    (2, [K, H], [B, K, B, H, B, K, B, H, B]),
    (3, [H], [B, H, B, H, B, H, B]),
])
def test_the_schedule_brackets_every_outage_with_baselines(rounds: int, outages: list[str],
                                                            expected: list[str]) -> None:
    assert schedule(rounds, outages) == expected


@pytest.mark.parametrize(("rounds", "outages"), [(0, [K]), (1, []), (1, [K, K]), (1, [B])])
def test_bad_schedules_are_refused(rounds: int, outages: list[str]) -> None:
    with pytest.raises(ValueError, match="schedule needs"):
        schedule(rounds, outages)


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([5.0], 50, 5.0),
    ([5.0], 99, 5.0),
    ([3.0, 1.0, 2.0], 50, 2.0),
    ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # nearest rank: ceil(0.5 * 4) = 2nd smallest, no interpolation
    ([float(i) for i in range(1, 11)], 10, 1.0),
    ([float(i) for i in range(1, 11)], 91, 10.0),
    ([float(i) for i in range(1, 11)], 90, 9.0),
    ([float(i) for i in range(1, 101)], 99, 99.0),
    ([float(i) for i in range(1, 41)], 99, 40.0),  # under 100 samples p99 is the largest
    ([float(i) for i in range(1, 201)], 99, 198.0),
])
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 0), ([1.0], 101)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def phases_with(kinds: list[str], level: float, drift: float, cost: dict[str, float]) -> list[Phase]:
    """Every sample of phase i is ``(level + drift * i) * cost[kind]`` (cost 1 for a baseline)."""
    out = []
    for i, kind in enumerate(kinds):
        v = (level + drift * i) * cost.get(kind, 1.0)
        out.append(Phase(kind, (v,) * 5, (2 * v,) * 5, server_cpu=5 * v))
    return out


def test_a_linear_drift_cancels_and_a_real_cost_is_measured_exactly() -> None:
    kinds = schedule(3, [K, H])
    drifting = phases_with(kinds, 10.0, 4.0, {})
    # the old method: the outage phase over the first baseline -- here the drift alone reads as 5.4x
    assert METRICS["call p50"](drifting[-2]) / METRICS["call p50"](drifting[0]) == pytest.approx(5.4)
    assert baseline_drift(drifting, METRICS["call p50"]) == pytest.approx(5.8)
    for name, metric in METRICS.items():
        ratios = bracketed_ratios(drifting, metric)
        assert set(ratios) == {K, H} and all(len(r) == 3 for r in ratios.values())
        assert all(r == pytest.approx(1.0) for rs in ratios.values() for r in rs), name
    costly = phases_with(kinds, 10.0, 4.0, {K: 3.0, H: 1.5})
    summary = summarize(costly)
    assert set(summary) == {K, H} and set(summary[K]) == set(METRICS)
    for name in METRICS:
        assert summary[K][name].median == pytest.approx(3.0) and summary[K][name].n == 3
        assert summary[H][name].median == pytest.approx(1.5)


def test_summarize_reports_median_and_range_per_kind() -> None:
    kinds = schedule(3, [K])
    phases = [Phase(kind, (1.0,), (1.0,)) for kind in kinds]
    for i, factor in zip((1, 3, 5), (2.0, 5.0, 3.0), strict=True):
        phases[i] = Phase(K, (factor,), (factor,))
    spread = summarize(phases)[K]["call p50"]
    assert spread == Spread(3.0, 2.0, 5.0, 3)
    assert str(spread) == "3.00 (2.00-5.00, n=3)" and str(Spread(1.25, 1.25, 1.25, 1)) == "1.25"
    zero_base = [Phase(B, (0.0,), (0.0,)), Phase(K, (1.0,), (1.0,)), Phase(B, (0.0,), (0.0,))]
    assert bracketed_ratios(zero_base, METRICS["call p50"]) == {K: [math.inf]}


@pytest.mark.parametrize("kinds", [[B, K], [K, B, K], [B, K, K, B], [B, B, B], [B]])
def test_phases_out_of_shape_are_refused(kinds: list[str]) -> None:
    with pytest.raises(ValueError, match="must alternate"):
        bracketed_ratios([Phase(k, (1.0,), (1.0,)) for k in kinds], METRICS["call p50"])
