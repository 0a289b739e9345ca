"""Interleaved A/B phases for an isolation figure: the schedule and the arithmetic, pure.

An isolation figure compares the same workload with and without a fault, *in the same run*.  Run
as "baseline, then outage" it also measures whatever drifts over the run (the machine's load
from other processes, a server whose work per request grows with its state), and reports the drift
as the outage's cost.  So the phases alternate -- baseline, outage 1, baseline, outage 2, baseline,
outage 1, ... always starting and ending with a baseline -- and each outage phase is compared with
the mean of the two baselines around it (:func:`bracketed_ratios`): a drift that is linear over
the three phases cancels exactly, a slower one nearly.  Over several rounds each outage kind gets
one ratio per occurrence; :func:`summarize` reports their median and their spread (min and max),
so a reader sees how much one run can be trusted.

Bracketing cancels a drift over minutes, not the noise of a shared machine from one second to the
next (another process's burst makes every call of a phase slower).  For that the workload can run
against a *control* server as well, paired call by call (one append on the measured server, one on
the control, ...): the control sees the same moment's load but no fault, so the phase's latency
over the control's (:data:`CONTROLLED_METRICS`) divides the load out, and the bracketed ratio of
that is the outage's own cost.

Per phase the statistics of the samples are nearest-rank percentiles (:func:`percentile`): p50 and
p99 (with fewer than 100 samples p99 is the largest, so it is a "worst case of the phase"), and the
server's CPU seconds per append, which waiting (fsync, other processes on the machine) does not
inflate.

The figures are printed and written into the docs; no test asserts them (a shared 2-core machine
makes any timing threshold either flaky or meaningless).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["BASELINE", "CONTROLLED_METRICS", "METRICS", "Phase", "Spread", "baseline_drift", "bracketed_ratios",
           "percentile", "schedule", "summarize"]

BASELINE = "baseline"


def schedule(rounds: int, outages: Sequence[str]) -> list[str]:
    """``rounds`` x (baseline, each outage in turn, each followed by a baseline): every outage phase
    sits between two baselines.  ``schedule(2, ["killed", "hung"])`` is B K B H B K B H B."""
    if rounds < 1 or not outages or BASELINE in outages or len(set(outages)) != len(outages):
        raise ValueError("schedule needs rounds >= 1 and distinct outage names other than 'baseline'")
    out = [BASELINE]
    for _ in range(rounds):
        for outage in outages:
            out += [outage, BASELINE]
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` percent of the values at or
    below it (``q`` in (0, 100])."""
    if not values or not 0 < q <= 100:
        raise ValueError("percentile needs values and 0 < q <= 100")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase's samples (seconds) and the CPU seconds the processes used during it."""

    kind: str
    calls: tuple[float, ...]
    deliveries: tuple[float, ...]
    server_cpu: float = 0.0
    worker_cpu: float = 0.0
    control_calls: tuple[float, ...] = ()  # the same workload on a control server, paired call by call
    control_deliveries: tuple[float, ...] = ()


Metric = Callable[[Phase], float]

METRICS: dict[str, Metric] = {
    "call p50": lambda p: percentile(p.calls, 50),
    "call p99": lambda p: percentile(p.calls, 99),
    "delivery p50": lambda p: percentile(p.deliveries, 50),
    "delivery p99": lambda p: percentile(p.deliveries, 99),
    # the server's CPU per append: insensitive to waiting (fsync, a busy machine's run queue), so it
    # shows whether the server *works* more during an outage even when the latencies are noise
    "server cpu/append": lambda p: p.server_cpu / len(p.calls),
}

# With a control server (see the module essay): each phase's p50 over the control's p50 in the same
# phase -- the machine's load at that moment divides out.
CONTROLLED_METRICS: dict[str, Metric] = {
    "call p50/control": lambda p: percentile(p.calls, 50) / percentile(p.control_calls, 50),
    "call p99/control": lambda p: percentile(p.calls, 99) / percentile(p.control_calls, 99),
    "delivery p50/control": lambda p: percentile(p.deliveries, 50) / percentile(p.control_deliveries, 50),
}


def bracketed_ratios(phases: Sequence[Phase], metric: Metric) -> dict[str, list[float]]:
    """For each non-baseline phase, ``metric(phase) / mean(metric(baseline before), metric(baseline
    after))``, grouped by kind in schedule order.  The phases must follow :func:`schedule`'s shape."""
    kinds = [p.kind for p in phases]
    if len(phases) < 3 or kinds[0] != BASELINE or kinds[-1] != BASELINE or any(
            (k == BASELINE) != (i % 2 == 0) for i, k in enumerate(kinds)):
        raise ValueError(f"phases must alternate baseline / outage, starting and ending with a baseline: {kinds}")
    out: dict[str, list[float]] = {}
    for i in range(1, len(phases), 2):
        around = (metric(phases[i - 1]) + metric(phases[i + 1])) / 2
        out.setdefault(phases[i].kind, []).append(metric(phases[i]) / around if around > 0 else math.inf)
    return out


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.median:.2f}"
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f}, n={self.n})"


def summarize(phases: Sequence[Phase], metrics: dict[str, Metric] | None = None) -> dict[str, dict[str, Spread]]:
    """outage kind -> metric name -> the median and range of its bracketed ratios (``metrics``
    default :data:`METRICS`)."""
    out: dict[str, dict[str, Spread]] = {}
    for name, metric in (METRICS if metrics is None else metrics).items():
        for kind, ratios in bracketed_ratios(phases, metric).items():
            out.setdefault(kind, {})[name] = Spread(statistics.median(ratios), min(ratios), max(ratios), len(ratios))
    return out


def baseline_drift(phases: Sequence[Phase], metric: Metric) -> float:
    """The last baseline's metric over the first's: what an unbracketed comparison would have
    mistaken for an outage cost."""
    base = [metric(p) for p in phases if p.kind == BASELINE]
    return base[-1] / base[0] if base and base[0] > 0 else math.inf
