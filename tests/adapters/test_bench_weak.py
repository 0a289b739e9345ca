"""The weak spots the ninth session's bench review left (docs/performance.md, "Bench review (ninth
session)"): the fanout CDF, deliveries/s and commit->delivery against every expected delivery; the
Redis fanout writer's fields; GC pauses in ``benchmarks/loop_holds.py``.  Tables of cases and fake
peers; nothing here asserts a time."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_bench_review import FakeRedis

from adapters.bench import client
from adapters.bench import main as bench_main
from adapters.bench.hist import Hist
from adapters.bench.report import cdf_series
from adapters.bench.workloads import Metric, Run, Workload, fanout_figures
from benchmarks.loop_holds import GcMeter

# --- the CDF is of every expected delivery, as p50/p99 are ----------------------------------------------


def hist_of(values: list[float]) -> Hist:
    h = Hist()
    for v in values:
        h.add(v)
    return h


@pytest.mark.parametrize(("values", "missing", "top"), [
    pytest.param([10.0, 20.0, 30.0, 40.0], 0, 1.0, id="all arrived: up to 1"),
    pytest.param([10.0, 20.0, 30.0, 40.0], 4, 0.5, id="half never arrived: up to 0.5"),
    pytest.param([10.0, 20.0, 30.0], 1, 0.75, id="one of four never arrived"),
])
def test_a_cdf_counts_the_missing_in_its_denominator(values: list[float], missing: int, top: float) -> None:
    points = hist_of(values).cdf(missing=missing)
    ys = [y for _x, y in points]
    assert ys == sorted(ys) and ys[-1] == pytest.approx(top)
    # each point: the share of all n + missing at or below its latency (counted here from the values)
    for x, y in points:
        assert y == pytest.approx(sum(1 for v in values if v <= x) / (len(values) + missing))


def fake_workload(name: str, runs: list[Run]) -> Workload:
    left = list(runs)

    def run(bench: Any, peer: str, repeat: int) -> Run:
        return left.pop(0)
    return Workload(name, name, ("syncref",), (Metric("x", "u", "higher", "a figure"),), run, "fake", group=None,
                    repeats=lambda s: len(runs))


def bench_args(tmp_path: Path, names: list[str]) -> argparse.Namespace:
    return argparse.Namespace(quick=True, json=str(tmp_path / "out.json"), plot=None, workloads=names, repeats=None,
                              profile=None, redis_server=str(tmp_path / "no-redis"), keep=False, server_code=None)


@pytest.mark.parametrize(("runs", "top", "label"), [
    pytest.param([(4, 0), (4, 0)], 1.0, "syncref", id="nothing lost"),
    pytest.param([(4, 4), (4, 0)], 8 / 12, "syncref (4 of 12 never arrived: 33.3 %)", id="one run lost half"),
    pytest.param([(1, 3)], 0.25, "syncref (3 of 4 never arrived: 75.0 %)", id="most lost"),
])
def test_the_fanout_cdf_in_the_json_tops_out_at_the_delivered_share(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runs: list[tuple[int, int]], top: float, label: str) -> None:
    made = [Run({"x": 1.0}, hist=hist_of([100.0 * (k + 1) for k in range(n)]), missing=missing) for n, missing in runs]
    monkeypatch.setitem(bench_main.WORKLOADS, "fake_fanout", fake_workload("fake_fanout", made))
    assert bench_main.run(bench_args(tmp_path, ["fake_fanout"])) == 0
    peer = json.loads((tmp_path / "out.json").read_text())["workloads"]["fake_fanout"]["peers"]["syncref"]
    xs, ys, name = cdf_series("syncref", peer)
    assert ys[-1] == pytest.approx(top) and name == label
    assert xs == sorted(xs) and xs[-1] == pytest.approx(max(n for n, _ in runs) * 0.1, rel=0.011)  # ms


# --- deliveries/s and commit->delivery of a fanout run ----------------------------------------------------------


def subs_result(latencies: list[float], received: int, distinct: int, sampled: int,
                commit: list[float] | None = None, wall: float = 2.0) -> dict[str, Any]:
    h = hist_of(latencies)
    return {"received": received, "distinct": distinct, "sampled": sampled, "hist": h.to_json(),
            "slices": [h.to_json()] * 5, "commit_hist": None if commit is None else hist_of(commit).to_json(),
            "wall_s": wall}


@pytest.mark.parametrize(("received", "distinct", "per_s"), [
    pytest.param(100, 100, 50.0, id="every event once"),
    pytest.param(120, 100, 50.0, id="20 duplicates: not counted as deliveries"),
    pytest.param(90, 80, 40.0, id="10 duplicates, 20 missing"),
])
def test_deliveries_per_second_counts_distinct_deliveries(received: int, distinct: int, per_s: float) -> None:
    subs = [subs_result([1000.0] * received, received, distinct, 13, [500.0] * 13)]
    figures, _why = fanout_figures("redis", {"sent": 100}, subs, 1)
    assert figures["deliveries_per_s"] == pytest.approx(per_s)


# 96 events sent per subscriber: 12 of them sampled (0, 8, ..., 88); two subscribers: 24 sampled deliveries
@pytest.mark.parametrize(("sampled", "q", "defined"), [
    pytest.param(24, 0.99, True, id="every sampled event arrived"),
    pytest.param(23, 0.99, False, id="one of 24 never arrived: over 1 % -- no p99"),
    pytest.param(23, 0.5, True, id="one of 24 never arrived: the median is still among the arrived"),
    pytest.param(12, 0.5, True, id="half never arrived: the 12th of 24 is the last arrived"),
    pytest.param(11, 0.5, False, id="13 of 24 never arrived: no median"),
])
def test_commit_quantiles_count_undelivered_sampled_events_as_never(sampled: int, q: float, defined: bool) -> None:
    commit = [100.0 * (k + 1) for k in range(sampled)]
    first = min(12, sampled)
    subs = [subs_result([1000.0] * 96, 96, 96, first, commit[:first]),
            subs_result([1000.0] * 96, 96, 96, sampled - first, commit[first:])]
    figures, why = fanout_figures("syncref", {"sent": 96}, subs, 2)
    key = "commit_p50_ms" if q == 0.5 else "commit_p99_ms"
    if not defined:
        assert figures[key] is None and f"{24 - sampled} of 24 sampled deliveries never arrived" in why[key]
        return
    rank = max(1, math.ceil(q * 24))  # nearest rank over all 24, the missing ones last
    exact = commit[rank - 1] / 1000
    assert figures[key] is not None and exact <= figures[key] <= exact * 1.0101


@pytest.mark.parametrize(("events", "sampled"), [
    pytest.param([0, 1, 2, 3, 4, 5, 6, 7, 8], 2, id="in order: 0 and 8"),
    pytest.param(list(range(17)), 3, id="in order: 0, 8, 16"),
    pytest.param([0, 1, 9, 8, 8, 16], 3, id="out of order, 8 twice: 0, 8, 16"),
    pytest.param([1, 2, 3], 0, id="none sampled"),
    pytest.param([16, 0], 2, id="late 0"),
])
def test_a_subscriber_counts_the_sampled_events_it_got_once(events: list[int], sampled: int) -> None:
    run = client.FanoutSubs({"target": "echo", "stream": "fan", "subs": 1})
    run.t0_us, run.slice_us = 0.0, 1_000.0
    s = run.subs[0]
    for i in events:
        s.got(i, 10, 20.0)
    assert s.sampled == sampled


# --- the Redis fanout writer sends the key syncref's writer sends -------------------------------------------


class RecordingRedis(FakeRedis):
    """test_bench_review's stand-in Redis, keeping every command it was sent."""

    commands: ClassVar[list[list[bytes]]] = []

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (cmd := self.reader.gets()) is not False:
            RecordingRedis.commands.append(cmd)
            self.transport.write(b"$3\r\n1-1\r\n")


class GoNow:
    async def ready(self) -> float:
        return time.time()


def test_the_redis_fanout_writer_sends_the_key_and_payload_syncrefs_writer_sends(
        capsys: pytest.CaptureFixture[str]) -> None:
    RecordingRedis.commands = []

    async def go() -> dict[str, Any]:
        server = await asyncio.get_running_loop().create_server(RecordingRedis, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        task = {"kind": "writer", "target": "redis", "host": "127.0.0.1", "port": port, "stream": "fan",
                "rate": 1000.0, "duration": 0.003, "payload_size": 150, "ack_grace": 5.0}
        try:
            return await client.run_writer(task, GoNow())  # type: ignore[arg-type]
        finally:
            server.close()
    result = asyncio.run(go())
    assert result["sent"] == 3 and result["ok"] == 3
    assert [c[:6] for c in RecordingRedis.commands] == [
        [b"XADD", b"fan", b"*", b"k", f"f-{k}".encode(), b"p"] for k in range(3)]
    for k, c in enumerate(RecordingRedis.commands):
        body = json.loads(c[6])
        assert len(c) == 7 and len(c[6]) == 150 and body["i"] == k  # the bytes syncref's writer sends as payload


# --- loop_holds: the GC's collections during a row ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("events", "count", "full", "total_ms", "longest_ms", "text"), [
    pytest.param([], 0, 0, 0.0, 0.0, "-", id="none"),
    pytest.param([(0, 0.001)], 1, 0, 1.0, 1.0, "1: 1.0 ms, longest 1.0", id="one young collection"),
    pytest.param([(0, 0.001), (2, 0.095), (1, 0.004)], 3, 1, 100.0, 95.0,
                 "3 (1 full): 100.0 ms, longest 95.0", id="a full collection's pause"),
])
def test_the_gc_meter_counts_collections_and_their_pauses(
        events: list[tuple[int, float]], count: int, full: int, total_ms: float, longest_ms: float,
        text: str) -> None:
    clock = Clock()
    meter = GcMeter(clock)
    meter("stop", {"generation": 0})  # a stop without its start (the meter installed mid-collection): ignored
    for gen, took in events:
        meter("start", {"generation": gen})
        clock.now += took
        meter("stop", {"generation": gen, "collected": 0, "uncollectable": 0})
        clock.now += 1.0  # time between collections is not a pause
    assert (meter.count, meter.full) == (count, full)
    assert meter.total * 1000 == pytest.approx(total_ms) and meter.longest * 1000 == pytest.approx(longest_ms)
    assert meter.text() == text
    meter.reset()
    assert (meter.count, meter.full, meter.total, meter.longest, meter.text()) == (0, 0, 0.0, 0.0, "-")


def test_the_gc_meter_hears_real_collections() -> None:
    meter = GcMeter()
    with meter.installed():
        gc.collect()
    assert meter.count >= 1 and meter.full >= 1
    assert meter not in gc.callbacks
