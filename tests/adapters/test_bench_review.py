"""``syncref bench``: the verdicts and the report against tables of cases (the ninth session's
review of the harness).  No timing is asserted; every case is built by hand, and nothing here
computes the expected value with the code it judges."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import hiredis
import pytest

from adapters import wire
from adapters.bench import client
from adapters.bench import main as bench_main
from adapters.bench.hist import GROWTH, Hist
from adapters.bench.main import figures_of
from adapters.bench.report import add_ratios, cell, markdown, print_table
from adapters.bench.workloads import (
    Metric,
    Run,
    Workload,
    client_utilisations,
    fanout_verdict,
    memory_figures,
    storm_figures,
)
from spec import messages as m
from spec.values import SyncEvent

# --- fanout: "delivered" and "kept up" count distinct events, not deliveries ------------------------------


def sub(received: int, distinct: int) -> dict[str, Any]:
    return {"received": received, "distinct": distinct}


@pytest.mark.parametrize(("subs", "expected", "early", "late", "verdict"), [
    pytest.param([sub(100, 100), sub(100, 100)], 200, 1.0, 1.5, (1.0, 1.5, 1.0), id="every event once, flat"),
    pytest.param([sub(99, 99), sub(101, 100)], 200, 1.0, 1.5, (0.995, None, 0.0),
                 id="one missing, one duplicated: the sums match"),
    pytest.param([sub(100, 99), sub(100, 100)], 200, 1.0, 1.5, (0.995, None, 0.0),
                 id="a duplicate in place of a missing event"),
    pytest.param([sub(100, 100), sub(101, 100)], 200, 1.0, 1.5, (1.0, 1.5, 0.0),
                 id="every event, one twice: not exactly once"),
    pytest.param([sub(100, 100), sub(100, 100)], 200, 1.0, 2.5, (1.0, 2.5, 0.0), id="latency grew"),
    pytest.param([sub(100, 100), sub(100, 100)], 200, None, 1.0, (1.0, None, 0.0), id="growth unknown"),
    pytest.param([sub(0, 0)], 0, None, None, (None, None, 0.0), id="nothing sent"),
])
def test_fanout_verdict_counts_each_event_once(subs: list[dict[str, Any]], expected: int, early: float | None,
                                               late: float | None, verdict: tuple[Any, ...]) -> None:
    delivered, growth, kept_up = fanout_verdict(subs, expected, early, late)
    assert (delivered is None) == (verdict[0] is None)
    if delivered is not None:
        assert delivered == pytest.approx(verdict[0])
    assert growth == (None if verdict[1] is None else pytest.approx(verdict[1]))
    assert kept_up == verdict[2]


T0 = 1_796_000_000_000_000  # µs


def frame(i: int, v3: bool) -> bytes:
    """The frame a subscriber gets for bench event ``i`` (v2, or a v3 frame of one message)."""
    ev = SyncEvent("fan", 1, i + 1, f"f-{i}", "sha256:" + "0" * 64, client.payload(i, 150, T0 + 1000 * i),
                   "ab" * 32, T0 + 1000 * i + 700, 9 + i)
    msg = m.TransactionUpdate(9 + i, (m.QuerySetUpdate(1, (m.TableRows("sync_event", (ev,)),)),))
    (only,) = wire.server_frames([wire.to_wire(msg)], 3 if v3 else 2, wire.Compression.NONE)
    return only


@pytest.mark.parametrize(("events", "expect", "distinct", "done"), [
    pytest.param([0, 1, 2, 3], 4, 4, True, id="in order"),
    pytest.param([0, 1, 2, 2], 4, 3, False, id="a duplicate is not the missing event"),
    pytest.param([0, 2, 1, 3], 4, 4, True, id="reordered, all there"),
    pytest.param([0, 2, 2, 1], 4, 3, False, id="reordered with a duplicate"),
    pytest.param([1, 2, 3, 0, 0], 4, 4, True, id="late first event, then again"),
])
def test_a_subscriber_counts_distinct_events_and_waits_for_all(events: list[int], expect: int, distinct: int,
                                                               done: bool) -> None:
    for v3 in (False, True):
        run = client.FanoutSubs({"target": "syncref", "stream": "fan", "subs": 1, "protocol": "v3" if v3 else "v2"})
        run.t0_us, run.slice_us = float(T0), 1_000.0
        s = run.subs[0]

        async def feed(run: client.FanoutSubs = run, s: client.Subscriber = s, v3: bool = v3) -> bool:
            run.expect = expect
            run.all_in = asyncio.get_running_loop().create_future()
            for i in events:
                (s.on_syncref_v3 if v3 else s.on_syncref)(frame(i, v3))
            return run.all_in.done()
        assert asyncio.run(feed()) is done, (events, v3)
        assert s.count == len(events) and s.distinct == distinct, (events, v3)


# --- reconnect storm: "until all are live" is not a number when some never got live ----------------------


def storm(live: list[float], failures: int = 0) -> dict[str, Any]:
    return {"live_s": live, "failures": [f"ConnectionRefusedError: {k}" for k in range(failures)]}


@pytest.mark.parametrize(("results", "all_live", "p50", "failures"), [
    pytest.param([storm([0.01, 0.03]), storm([0.02])], 30.0, 20.0, 0.0, id="all live"),
    pytest.param([storm([0.01, 0.03]), storm([0.02, 0.04])], 40.0, 30.0, 0.0, id="even count: the upper middle"),
    pytest.param([storm([0.01, 0.03]), storm([0.02], failures=1)], None, 30.0, 1.0,
                 id="one never live: no time until all; the median over all four, the failed one last"),
    pytest.param([storm([0.01]), storm([0.02], failures=2)], None, None, 2.0,
                 id="half never live: no median either"),
    pytest.param([storm([], failures=3)], None, None, 3.0, id="none live"),
])
def test_storm_figures_say_nothing_of_clients_that_never_got_live(
        results: list[dict[str, Any]], all_live: float | None, p50: float | None, failures: float) -> None:
    figures, why = storm_figures(results)
    assert figures["all_live_ms"] == (None if all_live is None else pytest.approx(all_live))
    assert figures["p50_live_ms"] == (None if p50 is None else pytest.approx(p50))
    assert figures["failures"] == failures
    assert ("all_live_ms" in why) == (all_live is None) and ("p50_live_ms" in why) == (p50 is None)
    assert all("never got live" in reason for reason in why.values())


# --- a run without a figure is said, not dropped from the median in silence ---------------------------------

P99 = (Metric("p99_ms", "ms", "lower", "99th percentile"),)


def runs_of(*values: float | None) -> list[Run]:
    return [Run({"p99_ms": v}, why={} if v is not None else {"p99_ms": "no event was delivered"}) for v in values]


@pytest.mark.parametrize(("values", "median", "lo", "hi", "without", "shown"), [
    pytest.param((1.0, 2.0, 3.0), 2.0, 1.0, 3.0, 0, "2.00 [1.00-3.00]", id="every run"),
    pytest.param((2.0, None, 4.0), 3.0, 2.0, 4.0, 1, "3.00 [2.00-4.00] (1 of 3 runs: none)", id="one run without"),
    pytest.param((None, 5.0, None), 5.0, 5.0, 5.0, 2, "5.00 (2 of 3 runs: none)", id="two runs without"),
    pytest.param((None, None), None, None, None, 2, "-", id="no run with it"),
])
def test_a_run_without_the_figure_is_counted_and_shown(values: tuple[float | None, ...], median: float | None,
                                                        lo: float | None, hi: float | None, without: int,
                                                        shown: str) -> None:
    fig = figures_of(runs_of(*values), P99)["p99_ms"]
    assert fig["median"] == median and fig.get("min") == lo and fig.get("max") == hi
    assert fig.get("runs_without", 0) == without
    if without:
        assert fig["missing"] == "no event was delivered"
    assert cell({"status": "ok", "figures": {"p99_ms": fig}}, "p99_ms") == shown


# --- a saturated client process is noted whichever peer it drove ----------------------------------------------


def doc_with(bound: dict[str, bool]) -> dict[str, Any]:
    def peer(name: str) -> dict[str, Any]:
        return {"status": "ok", "figures": {"throughput": {"median": 10.0, "min": 10.0, "max": 10.0, "runs": [10.0]}},
                "diag": [{"client_bound": bound.get(name, False)}]}
    return {"workloads": {"append_pipelined": {
                "metrics": {"throughput": {"unit": "calls/s", "better": "higher", "doc": ""}},
                "peers": {"syncref": peer("syncref"), "redis": peer("redis"),
                          "echo": {"status": "skipped", "reason": "not here"}}}},
            "settings": {"repeats": 1}, "machine": {"loadavg_before": [1.0], "loadavg_after": [1.0], "cpus": 2}}


@pytest.mark.parametrize(("bound", "noted"), [
    pytest.param({}, set(), id="none"),
    pytest.param({"syncref": True}, {"syncref"}, id="syncref's"),
    pytest.param({"redis": True}, {"redis"}, id="the peer's: its figure is a floor, the ratio flatters syncref"),
    pytest.param({"syncref": True, "redis": True}, {"syncref", "redis"}, id="both"),
])
def test_a_saturated_client_is_noted_for_every_peer(bound: dict[str, bool], noted: set[str]) -> None:
    doc = doc_with(bound)
    add_ratios(doc)
    out = io.StringIO()
    print_table(doc, out)
    for text in (out.getvalue(), markdown(doc)):
        lines = [line for line in text.splitlines() if "saturated" in line]
        assert {p for p in ("syncref", "redis") if any(f" {p} client" in line for line in lines)} == noted, text
        assert "echo skipped: not here" in text


# --- memory: a same-method RSS figure beside the headline one --------------------------------------------------


@pytest.mark.parametrize(("peer", "probe", "figures"), [
    pytest.param("syncref", {"events": 1000, "rss": (50_000_000, 50_265_000)},
                 {"bytes_per_event": 265.0, "rss_per_event": 265.0}, id="syncref: RSS, both figures"),
    pytest.param("redis", {"events": 1000, "rss": (8_000_000, 8_200_000), "used": (1_000_000, 1_188_000),
                           "info_rss": (8_000_000, 8_000_000)},
                 {"bytes_per_event": 188.0, "rss_per_event": 200.0},
                 id="redis: used_memory, and RSS from /proc (INFO's RSS is its cron's last sample)"),
])
def test_memory_figures_name_what_they_measure(peer: str, probe: dict[str, Any], figures: dict[str, float]) -> None:
    got, diag = memory_figures(peer, **probe)
    assert got == pytest.approx(figures)
    assert diag["events"] == probe["events"]
    assert (diag["rss_before"], diag["rss_after"]) == probe["rss"]


# --- a run that raises anything is that peer's failure, and the rest of the bench goes on ----------------------


def fake_workload(name: str, run: Any) -> Workload:
    return Workload(name, name, ("syncref",), (Metric("x", "u", "higher", "a figure"),), run, "fake", group=None)


def bench_args(tmp_path: Path, names: list[str]) -> argparse.Namespace:
    return argparse.Namespace(quick=True, json=str(tmp_path / "out.json"), plot=None, workloads=names, repeats=None,
                              profile=None, redis_server=str(tmp_path / "no-redis"), keep=False, server_code=None)


def test_a_run_that_raises_is_reported_failed_and_the_bench_goes_on(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(bench: Any, peer: str, repeat: int) -> Run:
        return Run({"x": 1.0 / 0})  # a figure's arithmetic on a run that measured nothing

    def fine(bench: Any, peer: str, repeat: int) -> Run:
        return Run({"x": 2.0})
    monkeypatch.setitem(bench_main.WORKLOADS, "fake_broken", fake_workload("fake_broken", broken))
    monkeypatch.setitem(bench_main.WORKLOADS, "fake_fine", fake_workload("fake_fine", fine))
    code = bench_main.run(bench_args(tmp_path, ["fake_broken", "fake_fine"]))
    doc = json.loads((tmp_path / "out.json").read_text())
    assert code == 1
    broke = doc["workloads"]["fake_broken"]["peers"]["syncref"]
    assert broke["status"] == "failed" and "ZeroDivisionError" in broke["reason"]
    assert doc["workloads"]["fake_fine"]["peers"]["syncref"]["figures"]["x"]["median"] == 2.0
    assert "ZeroDivisionError" in capsys.readouterr().err  # the traceback, from errors.log


# --- an append client's utilisation is its CPU over the window that CPU was spent in -------------------------


class FakeRedis(asyncio.Protocol):
    """A stand-in Redis: every command answered with a stream id at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.reader.gets() is not False:
            self.transport.write(b"$3\r\n1-1\r\n")


class GoNow:
    """The orchestrator's side of the conversation: go at once."""

    async def ready(self) -> float:
        return time.time()


def test_an_append_client_reports_its_cpu_over_the_measured_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    # a client busy all the time: its CPU clock is the wall clock, so CPU over wall must be ~1 of a
    # core whatever the warm-up (0.5 s here, as long as the measured phase)
    monkeypatch.setattr(client.time, "process_time", time.time)

    async def go() -> dict[str, Any]:
        server = await asyncio.get_running_loop().create_server(FakeRedis, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        task = {"kind": "append", "target": "redis", "host": "127.0.0.1", "port": port, "clients": 2,
                "first_client": 0, "window": 4, "warmup": 0.5, "duration": 0.5, "payload_size": 150,
                "stream_prefix": "s-"}
        try:
            return await client.run_append(task, GoNow())  # type: ignore[arg-type]
        finally:
            server.close()
    result = asyncio.run(go())
    assert result["ops"] > 0 and result["errors"] == 0
    (util,) = client_utilisations([result])
    assert 0.8 < util < 1.2, result  # the warm-up's CPU over the measured phase's wall gave ~2


# --- a Redis subscriber's error reply is an error, not a silent retry ---------------------------------------


class SentCommands:
    """A stand-in RESP connection that records what the subscriber sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, *args: Any) -> None:
        self.sent.append(args)


def test_a_redis_subscribers_error_reply_is_reported_not_retried() -> None:
    run = client.FanoutSubs({"target": "redis", "stream": "fan", "subs": 1})
    run.t0_us, run.slice_us = float(T0), 1_000.0
    s = run.subs[0]
    conn = SentCommands()
    s.redis = conn  # type: ignore[assignment]
    entry = (b"1-1", [b"p", client.payload(0, 150, T0).encode()])
    s.on_redis([[b"fan", [entry]]])
    assert s.count == 1 and len(conn.sent) == 1  # the next XREAD after a reply with an entry
    s.on_redis(hiredis.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert len(conn.sent) == 1, "an error reply was answered with another XREAD (a silent retry loop)"
    assert run.errors == 1 and "WRONGTYPE" in run.first_error


# --- fanout latency percentiles are over every expected delivery, not the survivors -------------------------


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize(("n", "missing", "q", "defined"), [
    (100, 0, 0.99, True), (100, 1, 0.99, True), (100, 2, 0.99, False),
    (100, 100, 0.5, True), (100, 101, 0.5, False), (1000, 10, 0.99, True), (1000, 11, 0.99, False),
    (0, 5, 0.5, False),
])
def test_a_quantile_counts_undelivered_events_as_never(n: int, missing: int, q: float, defined: bool) -> None:
    values = [float(10 + 3 * k) for k in range(n)]
    h = Hist()
    h.add_many(values)
    got = h.quantile(q, missing=missing)
    if not defined:
        assert got is None
        return
    exact = nearest_rank(values + [math.inf] * missing, q)
    assert got is not None and exact <= got <= exact * GROWTH * (1 + 1e-9)


@pytest.mark.parametrize(("subs", "expected", "growth"), [
    pytest.param([sub(100, 100)], 100, 1.2, id="complete: the late fifth's median is of all its events"),
    pytest.param([sub(90, 90)], 100, None, id="10 % never arrived: the late fifth's median would be of survivors"),
])
def test_growth_is_only_read_from_a_complete_run(subs: list[dict[str, Any]], expected: int,
                                                 growth: float | None) -> None:
    assert fanout_verdict(subs, expected, 1.0, 1.2)[1] == (None if growth is None else pytest.approx(growth))


def test_the_bench_asks_syncref_for_confirmed_reads_by_name() -> None:
    # the server's default is confirmed reads; the bench must not depend on it (an A/B against a tree
    # whose default differed would compare an unconfirmed read with Redis's fsynced reply)
    from urllib.parse import parse_qs, urlsplit
    query = parse_qs(urlsplit(client.syncref_path("tok")).query)
    assert query["confirmed"] == ["true"] and query["compression"] == ["None"] and query["token"] == ["tok"]
