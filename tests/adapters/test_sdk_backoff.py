"""Reconnect backoff: the ceiling grows geometrically to the cap; the jitter stays in its window."""

import itertools
import random

import pytest

from adapters.sdk.backoff import Backoff
from spec.errors import LocalProtocolError


def test_ceilings_grow_geometrically_then_stay_at_the_cap() -> None:
    b = Backoff(base=0.5, cap=10.0, factor=2.0, jitter=0.0)
    ceilings = [b.ceiling(n) for n in range(12)]
    assert ceilings[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert ceilings[5:] == [10.0] * 7
    assert all(a <= c for a, c in itertools.pairwise(ceilings))


def test_huge_attempt_counts_are_capped_without_overflow() -> None:
    b = Backoff(base=1.0, cap=60.0, factor=10.0, jitter=0.0)
    assert b.ceiling(10**6) == 60.0
    assert b.delay(10**9) == 60.0


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
def test_rng_extremes_hit_the_window_edges(jitter: float) -> None:
    for attempt in range(10):
        low = Backoff(base=0.1, cap=5.0, jitter=jitter, rng=lambda: 0.0)
        high = Backoff(base=0.1, cap=5.0, jitter=jitter, rng=lambda: 1.0)
        ceiling = low.ceiling(attempt)
        assert low.delay(attempt) == pytest.approx(ceiling * (1 - jitter))
        assert high.delay(attempt) == pytest.approx(ceiling)


def test_random_delays_stay_within_bounds_and_spread() -> None:
    rng = random.Random(7)
    b = Backoff(base=0.2, cap=3.0, factor=2.0, jitter=0.5, rng=rng.random)
    for attempt in range(20):
        delays = [b.delay(attempt) for _ in range(200)]
        ceiling = b.ceiling(attempt)
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling * 0.3  # jitter actually spreads the crowd


def test_the_injected_rng_is_what_decides() -> None:
    values = iter([0.0, 0.5, 1.0])
    b = Backoff(base=1.0, cap=1.0, jitter=1.0, rng=lambda: next(values))
    assert [b.delay(0) for _ in range(3)] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("kwargs", [dict(base=0.0), dict(base=2.0, cap=1.0), dict(factor=0.5), dict(jitter=1.5),
                                    dict(jitter=-0.1)])
def test_bad_parameters_are_caller_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_a_broken_rng_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Backoff(rng=lambda: 2.0).delay(0)
    with pytest.raises(LocalProtocolError):
        Backoff().ceiling(-1)
