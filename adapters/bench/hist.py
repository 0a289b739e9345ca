"""Latency histograms that merge across processes, and the summary statistics of repeated runs.

A client process records hundreds of thousands of latencies per second in the fanout runs; it
cannot ship them all to the orchestrator.  :class:`Hist` keeps counts in logarithmic buckets
(each bucket ``GROWTH`` = 1 % wider than the one below, from 1 µs up), so a quantile read from
it is within 1 % of the exact one, two histograms merge by adding counts, and the JSON form is a
small sparse dict.  :func:`summary` turns the per-run values of one figure into the median and
its spread (min, max) that the report prints.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

GROWTH = 1.01
_LOG = math.log(GROWTH)


def bucket_of(value_us: float) -> int:
    """The bucket index of a latency in µs (everything at or below 1 µs is bucket 0)."""
    if value_us <= 1.0:
        return 0
    return int(math.log(value_us) / _LOG) + 1


def bucket_value(index: int) -> float:
    """The representative latency (µs) of a bucket: its upper edge, so quantiles never flatter."""
    return float(GROWTH ** index)


class Hist:
    """Counts of latencies (µs) in 1 % logarithmic buckets."""

    __slots__ = ("counts", "n", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0.0

    def add(self, value_us: float) -> None:
        b = bucket_of(value_us)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.n += 1
        self.total += value_us

    def add_many(self, values_us: Iterable[float]) -> None:
        """:meth:`add` of each value, with the bucket arithmetic inlined (a v3 subscriber adds a
        frame's events at once: this loop is most of its cost per event)."""
        values = values_us if isinstance(values_us, list | tuple) else list(values_us)
        counts = self.counts
        get = counts.get
        log = math.log
        for v in values:
            b = int(log(v) / _LOG) + 1 if v > 1.0 else 0
            counts[b] = get(b, 0) + 1
        self.n += len(values)
        self.total += sum(values)

    def merge(self, other: Hist) -> None:
        for b, c in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + c
        self.n += other.n
        self.total += other.total

    def quantile(self, q: float, missing: int = 0) -> float | None:
        """The smallest bucket value with at least ``q`` of the samples at or below it (None if empty).
        ``missing``: samples that never came (a delivery that never arrived), counted as above every
        value: the quantile is of all ``n + missing``, None when it falls among the missing ones."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is outside [0, 1]")
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * (self.n + missing)))
        if rank > self.n:
            return None
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return bucket_value(b)
        raise AssertionError("unreachable: the counts add up to n")

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def cdf(self, points: int = 200, missing: int = 0) -> list[tuple[float, float]]:
        """(latency µs, fraction at or below) pairs, thinned to about ``points`` entries.
        ``missing``: samples that never came, counted in the denominator (as :meth:`quantile` counts
        them), so the curve tops out at ``n / (n + missing)``."""
        out: list[tuple[float, float]] = []
        total = self.n + missing
        seen = 0
        keys = sorted(self.counts)
        step = max(1, len(keys) // points)
        for i, b in enumerate(keys):
            seen += self.counts[b]
            if i % step == 0 or i == len(keys) - 1:
                out.append((bucket_value(b), seen / total))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "counts": {str(b): c for b, c in self.counts.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hist:
        h = cls()
        h.counts = {int(b): int(c) for b, c in data["counts"].items()}
        h.n = int(data["n"])
        h.total = float(data["total"])
        if sum(h.counts.values()) != h.n:
            raise ValueError("histogram counts do not add up to n")
        return h

    @classmethod
    def merged(cls, parts: Iterable[Hist]) -> Hist:
        h = cls()
        for p in parts:
            h.merge(p)
        return h


@dataclass(frozen=True, slots=True)
class Summary:
    """One figure over repeated runs: the median and the spread."""

    median: float
    lo: float
    hi: float
    runs: tuple[float, ...]

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.1 means the runs were within 10 % of each other."""
        return (self.hi - self.lo) / self.median if self.median else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "spread": round(self.spread, 4),
                "runs": list(self.runs)}


def summary(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no runs to summarise")
    return Summary(float(statistics.median(values)), float(min(values)), float(max(values)),
                   tuple(float(v) for v in values))


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``, or None when either is missing or the peer's figure is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs
