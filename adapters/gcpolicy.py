"""The cyclic garbage collector, watched and kept off the long-lived heap (ADR-0036).

A full (generation 2) collection walks every object the collector tracks that is not frozen, and
holds the server's one event loop for all of it: ~20 ms of CPU in a ``syncref serve`` tracking
~115,000 objects beyond what it froze at start, growing with what it builds after start (70-210 ms
in an in-process harness that froze nothing; docs/performance.md, "GC pauses (ninth session)").
Two pieces:

* :class:`GcPauses`, a ``gc.callbacks`` hook and a Prometheus collector:
  ``syncref_gc_pause_seconds{generation}`` (histogram: each collection's pause, whatever thread
  set it off), ``syncref_gc_frozen_objects`` (what the ``survivors`` policy froze, an upper
  bound; 0 without it) and ``syncref_gc_thaws_total`` (whole-heap passes it let through, below).
  :class:`adapters.server.SyncServer` installs one while it runs.
* The freeze policy ``syncref serve`` applies once it has recovered (``[server] gc_freeze``):
  ``start`` collects and freezes what recovery built, once (what serve did before ADR-0036);
  ``survivors`` (the default) does that and then, after every full collection, freezes its
  survivors too (:class:`FreezeSurvivors`; ``gc.freeze()`` is a splice of the collector's lists,
  O(1)), so a later full pass walks only the objects born since the last one.

The risk of ``survivors``: an object frozen while alive that later becomes *cyclic* garbage is
never freed while it stays frozen (refcounted garbage still is).  The bound: when the full passes
since the last whole-heap pass have frozen ``THAW_GROWTH`` x that pass's survivors (and at least
``THAW_FLOOR`` objects), the policy unfreezes everything at the end of a full pass, so the next
full pass walks -- and frees the frozen cyclic garbage of -- the whole heap, and its survivors are
frozen again.  So frozen garbage stays below about ``THAW_GROWTH`` times the live heap (plus the
floor; 1.5 x that at the latest, :class:`FreezeSurvivors`), and a whole-heap pass happens once per
such growth instead of (CPython 3.11's own rule) every 25 % growth of the unfrozen heap.  That bound
is in objects, not bytes: an exception's traceback frame keeps its locals (an oversized call body's
read() leaves 66 objects of cyclic garbage holding the 2 MB it read), so the first full pass at
least ``THAW_MAX_AGE_S`` after the last whole-heap pass also thaws, and so does one that finds the
resident set grown by ``THAW_RSS_FLOOR`` and ``THAW_RSS_GROWTH`` since (ADR-0036, "Amendment (review)").
"""

from __future__ import annotations

import gc
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

GC_FREEZE_POLICIES = ("survivors", "start")
DEFAULT_GC_FREEZE = "survivors"
THAW_GROWTH = 1.0  # the frozen set may double between whole-heap passes
THAW_FLOOR = 100_000  # ... and grow by at least this many objects (a fresh server's heap is small)
THAW_MAX_AGE_S = 60.0  # ... or the last whole-heap pass be this old (the count bound is not in bytes)
THAW_RSS_FLOOR = 64 << 20  # ... or the resident set have grown by this much
THAW_RSS_GROWTH = 0.25  # ... and by this fraction of what it was at the last whole-heap pass
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident set (Linux: one read of ``/proc/self/statm``, a few microseconds);
    None where there is none."""
    try:  # (os-level: no file object made inside a collector callback)
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            return int(os.read(fd, 256).split()[1]) * _PAGE
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return None
PAUSE_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GENERATIONS = (0, 1, 2)


class GcPauses(Collector):
    """Times every collection of the cyclic GC (``gc.callbacks``) into a histogram per generation.

    Collections run one at a time under the interpreter lock, on whichever thread allocated, so the
    hook needs no lock; a scrape copies the counts before reading them."""

    def __init__(self) -> None:
        self.counts = {g: [0] * (len(PAUSE_BOUNDS_S) + 1) for g in GENERATIONS}
        self.totals = dict.fromkeys(GENERATIONS, 0.0)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        gen = info["generation"]
        self.counts[gen][bisect_left(PAUSE_BOUNDS_S, took)] += 1
        self.totals[gen] += took

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def collect(self) -> Iterator[HistogramMetricFamily | GaugeMetricFamily | CounterMetricFamily]:
        family = HistogramMetricFamily("syncref_gc_pause_seconds",
                                       "Pause of each cyclic garbage collection, by generation (2: full)",
                                       labels=["generation"])
        for gen in GENERATIONS:
            counts = self.counts[gen][:]
            total = self.totals[gen]
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*PAUSE_BOUNDS_S, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            family.add_metric([str(gen)], buckets, total)
        yield family
        policy = _active
        yield GaugeMetricFamily("syncref_gc_frozen_objects", "Objects the survivors policy froze (an upper "
                                "bound: those freed since are counted until the next whole-heap pass)",
                                value=policy.frozen if policy is not None else 0)
        yield CounterMetricFamily("syncref_gc_thaws", "Whole-heap collections let through by the freeze "
                                  "policy (gc_freeze = survivors) to free frozen cyclic garbage",
                                  value=policy.thaws if policy is not None else 0)


class FreezeSurvivors:
    """``gc.callbacks`` hook: at the end of every full collection, freeze its survivors -- unless the
    survivors frozen since the last whole-heap pass outnumber ``growth`` x that pass's survivors
    (and ``floor``): then unfreeze everything, so the next full pass walks the whole heap and frees
    the cyclic garbage that was frozen while alive.

    The count is of survivors as they are frozen (``len(gc.get_objects(2))``: the objects the pass
    just walked, so it costs a fraction of the pass); those freed since by their reference count
    are still counted, so it is an upper bound of the frozen set's growth.  When it passes the
    bound, ``gc.get_freeze_count()`` -- a walk of the whole frozen list, ~50 ms per million
    objects, so never per pass, and at most once per half a bound of survivors frozen -- says how
    far the set really grew, and only that decides a thaw.  So a thaw comes once the frozen set
    has grown by the bound, at the latest when it has grown by 1.5 x the bound.  Besides that count
    (in objects), a full pass thaws once the last whole-heap pass is ``max_age_s`` old or the
    resident set (``rss()``) has grown by more than ``rss_floor`` and ``rss_growth`` x what it was
    then: a frozen traceback frame can hold megabytes of locals."""

    def __init__(self, growth: float = THAW_GROWTH, floor: int = THAW_FLOOR, frozen: int = 0,
                 max_age_s: float = THAW_MAX_AGE_S, clock: Callable[[], float] = time.monotonic,
                 rss: Callable[[], int | None] = lambda: resident_bytes(), rss_floor: int = THAW_RSS_FLOOR,
                 rss_growth: float = THAW_RSS_GROWTH) -> None:
        self.growth = growth
        self.floor = floor
        self.max_age_s = max_age_s
        self.clock = clock
        self.whole_at = clock()  # when the last whole-heap pass (or the start-up freeze) was
        self.rss = rss
        self.rss_floor = rss_floor
        self.rss_growth = rss_growth
        self.rss_at = rss()  # the resident set then (None: not known on this platform)
        self.base = frozen  # what the last whole-heap pass (or the start-up freeze) left frozen
        self.since = 0  # survivors frozen by full passes since then (corrected by each recount)
        self.uncounted = 0  # of them, frozen since the last recount
        self.freezes = 0
        self.recounts = 0  # walks of the frozen list (gc.get_freeze_count) the bound made
        self.thaws = 0
        self.thawed = False  # unfrozen: the next full pass walks the whole heap

    @property
    def frozen(self) -> int:
        """An upper bound of the frozen set: the last whole-heap pass's survivors plus all frozen since."""
        return self.base + self.since

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        survivors = len(gc.get_objects(2))
        gc.freeze()
        self.freezes += 1
        if self.thawed:  # that pass walked everything: its survivors are the live heap
            self.thawed = False
            self.base, self.since, self.uncounted = survivors, 0, 0
            self.whole_at = self.clock()
            self.rss_at = self.rss()
            return
        self.since += survivors
        self.uncounted += survivors
        if self.clock() - self.whole_at >= self.max_age_s or self._rss_grown():
            # the count bound is in objects, and a frozen frame can hold megabytes of locals: a
            # whole-heap pass at least every max_age_s, and once the resident set has grown by the
            # RSS bound, bounds the bytes (live growth thaws too: one whole pass per such growth)
            self._thaw()
            return
        bound = max(self.floor, self.growth * self.base)
        if self.since > bound and self.uncounted * 2 >= bound:
            # the count says the frozen set may have grown past the bound; it overcounts survivors
            # freed since (a pipelined call's objects), so count the frozen list itself -- at most
            # once per half a bound of survivors frozen -- before making everyone wait
            self.recounts += 1
            self.uncounted = 0
            self.since = max(0, gc.get_freeze_count() - self.base)
            if self.since > bound:
                self._thaw()

    def _rss_grown(self) -> bool:
        if self.rss_at is None:
            return False
        now = self.rss()
        return now is not None and now - self.rss_at > max(self.rss_floor, self.rss_growth * self.rss_at)

    def _thaw(self) -> None:
        gc.unfreeze()
        self.thawed = True
        self.thaws += 1


_active: FreezeSurvivors | None = None


def apply(policy: str) -> None:
    """Collect and freeze what the process holds now (after recovery), and with ``survivors`` keep
    freezing each full collection's survivors.  ``syncref serve`` calls this once."""
    global _active
    if policy not in GC_FREEZE_POLICIES:
        raise ValueError(f"gc_freeze must be one of {', '.join(GC_FREEZE_POLICIES)}, got {policy!r}")
    withdraw()
    gc.collect()
    frozen = len(gc.get_objects(2))
    gc.freeze()
    if policy == "survivors":
        _active = FreezeSurvivors(frozen=frozen)
        # first: its work at a pass's end (get_objects, freeze, a recount) holds the loop like the
        # pass, so a pause hook installed before (the server's GcPauses) must time it too
        gc.callbacks.insert(0, _active)


def withdraw() -> None:
    """Remove the survivors hook (tests; the frozen set stays frozen)."""
    global _active
    if _active is not None and _active in gc.callbacks:
        gc.callbacks.remove(_active)
    _active = None


def active() -> FreezeSurvivors | None:
    return _active
