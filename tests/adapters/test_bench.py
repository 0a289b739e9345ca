"""``syncref bench``: its parts against second opinions, and the command as a smoke test.

No test here asserts a timing.  The parts are checked against independent implementations:
the histogram against exact sorted-list quantiles, the WebSocket frame parser and encoder
against ``websockets``' own frame code, RESP commands against ``hiredis``' parser, the frame
fast paths against :mod:`adapters.wire`'s full decoder.  The smoke test runs
``syncref bench --quick`` and checks that every figure of every workload is there for every
peer, or that the peer is reported skipped with a reason -- never silently passed.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from adapters import wire
from adapters.bench import client, peers, workloads
from adapters.bench.hist import GROWTH, Hist, bucket_of, bucket_value, ratio, summary
from adapters.bench.main import Progress, selected
from adapters.bench.proto import FrameParser, WsError, accept_for, encode_command, encode_frame
from adapters.bench.report import add_ratios, fmt
from adapters.bench.workloads import WORKLOADS, metrics_for, split
from spec import messages as m
from spec.canonical import canonicalize
from spec.values import SyncEvent

# --- histograms and summaries ---------------------------------------------------------------------


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile on the sorted values (the oracle)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1.5, max_value=1e8, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0]))
def test_hist_quantile_within_one_bucket_of_exact(values: list[float], q: float) -> None:
    h = Hist()
    h.add_many(values)
    exact = exact_quantile(values, q)
    got = h.quantile(q)
    assert got is not None
    # the bucket's upper edge: never below the exact value, at most one bucket (1 %) above it
    assert exact <= got * (1 + 1e-9)
    assert got <= exact * GROWTH * (1 + 1e-9)


@given(st.lists(st.floats(min_value=0.0, max_value=1e7, allow_nan=False), max_size=50),
       st.lists(st.floats(min_value=0.0, max_value=1e7, allow_nan=False), max_size=50))
def test_hist_merge_equals_one_histogram_of_both(a: list[float], b: list[float]) -> None:
    ha, hb, both = Hist(), Hist(), Hist()
    ha.add_many(a)
    hb.add_many(b)
    both.add_many(a + b)
    merged = Hist.merged([ha, hb])
    assert merged.counts == both.counts and merged.n == len(a) + len(b)
    assert Hist.from_json(json.loads(json.dumps(merged.to_json()))).counts == both.counts


def test_hist_edges_and_errors() -> None:
    h = Hist()
    assert h.quantile(0.5) is None and h.mean() is None and h.n == 0
    h.add(0.2)
    h.add(1.0)
    assert bucket_of(0.2) == bucket_of(1.0) == 0 and h.quantile(1.0) == 1.0
    assert bucket_value(bucket_of(1234.5)) >= 1234.5
    with pytest.raises(ValueError):
        h.quantile(1.5)
    bad = h.to_json()
    bad["n"] = 3
    with pytest.raises(ValueError, match="add up"):
        Hist.from_json(bad)
    many = Hist()
    many.add_many(float(x) for x in range(1, 5000))
    points = many.cdf(points=50)
    assert points[-1][1] == 1.0
    assert all(x1 <= x2 and y1 <= y2 for (x1, y1), (x2, y2) in itertools.pairwise(points))


@pytest.mark.parametrize(("values", "median", "lo", "hi", "spread"), [
    ([5.0], 5.0, 5.0, 5.0, 0.0),
    ([1.0, 3.0, 2.0], 2.0, 1.0, 3.0, 1.0),
    ([10.0, 12.0, 11.0, 100.0], 11.5, 10.0, 100.0, 90.0 / 11.5),
])
def test_summary_table(values: list[float], median: float, lo: float, hi: float, spread: float) -> None:
    s = summary(values)
    assert (s.median, s.lo, s.hi) == (median, lo, hi)
    assert s.spread == pytest.approx(spread)
    assert s.to_json()["runs"] == values


def test_summary_and_ratio_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        summary([])
    assert ratio(1.0, None) is None and ratio(None, 2.0) is None and ratio(1.0, 0.0) is None
    assert ratio(1.0, 4.0) == 0.25


def test_split_is_even_and_complete() -> None:
    for n in range(1, 40):
        for parts in range(1, 6):
            got = split(n, parts)
            assert sum(got) == n and min(got) >= 1 and max(got) - min(got) <= 1 and len(got) == min(n, parts)


# --- the WebSocket frames and RESP commands against other implementations ---------------------------


def server_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """An unmasked server frame written by websockets (the second opinion)."""
    return Frame(opcode, data, fin).serialize(mask=False)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_parser_reads_websockets_frames_of_every_length_class(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    stream = server_frame(Opcode.BINARY, data) + server_frame(Opcode.PING, b"hi")
    p = FrameParser()
    got: list[tuple[int, bytes]] = []
    for k in range(0, len(stream), 977):  # arbitrary chunking
        got += p.feed(stream[k:k + 977])
    assert got == [(0x2, data), (0x9, b"hi")]


def test_frame_parser_byte_by_byte_and_fragments() -> None:
    stream = (server_frame(Opcode.BINARY, b"ab", fin=False) + server_frame(Opcode.PING, b"")
              + server_frame(Opcode.CONT, b"cd", fin=False) + server_frame(Opcode.CONT, b"ef")
              + server_frame(Opcode.TEXT, b"t"))
    p = FrameParser()
    got: list[tuple[int, bytes]] = []
    for b in stream:
        got += p.feed(bytes([b]))
    assert got == [(0x9, b""), (0x2, b"abcdef"), (0x1, b"t")]


def test_frame_parser_refuses_masked_and_reserved_bits() -> None:
    with pytest.raises(WsError, match="masked"):
        FrameParser().feed(Frame(Opcode.BINARY, b"x").serialize(mask=True))
    with pytest.raises(WsError, match="reserved"):
        FrameParser().feed(bytes([0x80 | 0x40 | 0x2, 1]) + b"x")


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_encoded_client_frames_parse_in_websockets(size: int) -> None:
    data = b"\x07" * size
    reader = StreamReader()
    reader.feed_data(encode_frame(0x2, data))
    gen = Frame.parse(reader.read_exact, mask=True)
    with pytest.raises(StopIteration) as done:
        next(gen)
    frame = done.value.value
    assert frame.opcode is Opcode.BINARY and frame.fin and frame.data == data


def test_accept_key_matches_rfc6455_example() -> None:
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_resp_commands_parse_in_hiredis() -> None:
    r = hiredis.Reader()
    r.feed(encode_command("XADD", "s", "*", "p", b"\x00\r\nbin", 42))
    assert r.gets() == [b"XADD", b"s", b"*", b"p", b"\x00\r\nbin", b"42"]
    assert r.gets() is False


# --- the frame fast paths against the full decoder ----------------------------------------------------


@pytest.mark.parametrize("i", [0, 7, 123456])
@pytest.mark.parametrize("size", [60, 150, 1000])
def test_payload_is_canonical_and_exact_size(i: int, size: int) -> None:
    for t in (None, 1_796_000_000_000_000):
        p = client.payload(i, size, t)
        assert len(p.encode()) == size and canonicalize(p) == p
        assert json.loads(p)["i"] == i


def test_reducer_result_fast_path_matches_the_codec() -> None:
    ok = wire.frame_server(wire.encode_server(wire.to_wire(m.ReducerResult(77, 5, m.ReducerOk(3, ())), timestamp=9)),
                           wire.Compression.NONE)
    failed = m.ReducerResult(78, 5, m.ReducerErr("sequence_conflict: {}"))
    err = wire.frame_server(wire.encode_server(wire.to_wire(failed, timestamp=9)), wire.Compression.NONE)
    assert client.reducer_result(ok) == (77, True)
    assert client.reducer_result(err) == (78, False)
    other = wire.frame_server(wire.encode_server(wire.to_wire(m.TransactionUpdate(5, ()))), wire.Compression.NONE)
    assert client.reducer_result(other) is None and client.message_tag(other) == client.TAG_TX_UPDATE


def test_marks_and_committed_at_match_a_full_decode() -> None:
    producer = "ab" * 32
    rows = tuple(SyncEvent("fan", 1, k + 1, f"f-{k}", "sha256:" + "0" * 64,
                           client.payload(k, 150, 1_796_000_000_000_000 + k), producer, 1_796_000_000_500_000 + k, 9)
                 for k in range(3))
    msg = m.TransactionUpdate(9, (m.QuerySetUpdate(1, (m.TableRows("sync_event", rows),)),))
    frame = wire.frame_server(wire.encode_server(wire.to_wire(msg)), wire.Compression.NONE)
    decoded = wire.decode_server_frame(frame, 2)[0]
    assert isinstance(decoded, wire.TransactionUpdate)
    full = wire.decode_rows("sync_event", decoded.query_sets[0].tables[0].rows[0].inserts)  # type: ignore[union-attr]
    found = client.marks(frame)
    assert [(i, t) for i, t, _ in found] == [(json.loads(r.payload)["i"], json.loads(r.payload)["t"]) for r in full]
    assert [client.committed_at(frame, end) for _, _, end in found] == [r.committed_at for r in full]  # type: ignore[attr-defined]


def test_append_frame_is_the_codecs_call_reducer() -> None:
    frame = client.append_frame(5, "s", "k", '{"a":1}')
    msg = wire.decode_client_frame(frame, 2)[0]
    assert isinstance(msg, wire.CallReducer) and msg.request_id == 5 and msg.reducer == "append_sync_event"


# --- command plumbing ---------------------------------------------------------------------------------


def test_workload_selection() -> None:
    assert selected(None) == list(WORKLOADS)
    assert selected(["fanout", "append_closed"]) == ["append_closed", "fanout_10", "fanout_100", "fanout_500",
                                                     "fanout_100_v3", "fanout_500_v3"]
    with pytest.raises(ValueError, match="unknown workload"):
        selected(["nope"])


def test_progress_is_plain_off_a_tty() -> None:
    out = io.StringIO()
    p = Progress(2, out)
    p.step("a")
    p.step("b")
    p.finish()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text and text.count("\n") == 2


def test_ratios_are_syncref_over_peer_and_skip_missing_peers() -> None:
    doc: dict[str, Any] = {"workloads": {"w": {"peers": {
        "syncref": {"status": "ok", "figures": {"x": {"median": 2.0}, "y": {"median": None, "missing": "why"}}},
        "redis": {"status": "ok", "figures": {"x": {"median": 8.0}, "y": {"median": 1.0}}},
        "echo": {"status": "skipped", "reason": "not here"}}}}}
    add_ratios(doc)
    assert doc["workloads"]["w"]["ratios"] == {"redis": {"x": 0.25, "y": None}}
    assert fmt(None) == "-" and fmt(12345.6) == "12,346" and fmt(0.01234) == "0.0123"


# --- the command, end to end ---------------------------------------------------------------------------


def bench(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "adapters.cli", "bench", "--quick", "--json", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert out.exists(), proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    return proc, doc


def did_work(name: str, diag: dict[str, Any], figures: dict[str, Any]) -> bool:
    """A run of ``name`` exercised its peer: calls answered in the measured phase, events delivered,
    replays timed, a client live, events retained, records restarted."""
    if name.startswith("append_"):
        return bool(diag["ops"] > 0)
    if name.startswith("fanout_"):
        return bool(diag["sent"] > 0 and diag["received"] > 0)
    if name.startswith("replay_"):
        return bool(diag["replays"] > 0)
    if name == "reconnect_storm":
        return bool(figures["failures"]["median"] < diag["clients"])
    if name == "memory":
        return bool(diag["events"] > 0)
    if name == "restart":
        return bool(diag["records"] > 0)
    raise AssertionError(f"no work check for workload {name}")


def check_complete(doc: dict[str, Any], names: list[str]) -> None:
    """Every figure of every workload for every peer, or a reasoned skip; syncref never skipped;
    and every run that is ok did its workload's work (:func:`did_work`): a figure may be missing
    with a reason, a run that measured nothing may not pass the smoke test."""
    assert list(doc["workloads"]) == names
    for name in names:
        wl = WORKLOADS[name]
        entry = doc["workloads"][name]
        assert set(entry["peers"]) == set(wl.peers), name
        for peer_name, peer in entry["peers"].items():
            if peer["status"] == "skipped":
                assert peer_name != "syncref" and peer["reason"], (name, peer)
                continue
            assert peer["status"] == "ok", (name, peer_name, peer.get("reason"))
            for metric in metrics_for(wl, peer_name):
                fig = peer["figures"][metric.name]
                assert fig["median"] is not None or fig.get("missing"), (name, peer_name, metric.name)
            assert all("server_util" in d for d in peer["diag"] if name not in ("memory", "restart"))
            for d in peer["diag"]:  # a figure may be missing with a reason, but the work was done
                assert did_work(name, d, peer["figures"]), (name, peer_name, d)
        for peer_name in entry.get("ratios", {}):
            assert entry["peers"][peer_name]["status"] == "ok"


def redis_measured_unless_allowed(redis: dict[str, Any]) -> None:
    """Redis skipped: a note on a developer's machine, a failure in CI (``CI`` or
    ``SYNCREF_REQUIRE_REDIS=1``, set by .ci/run), where a skipped peer would leave the Redis
    clients of every workload unexercised while the smoke test passed."""
    if redis["status"] != "skipped":
        return
    if os.environ.get("CI") or os.environ.get("SYNCREF_REQUIRE_REDIS") == "1":
        pytest.fail(f"Redis was not measured (required here): {redis['reason']}")
    print(f"\nNOTE: Redis was not measured: {redis['reason']}")


@pytest.mark.parametrize(("env", "fails"), [({}, False), ({"SYNCREF_REQUIRE_REDIS": "1"}, True),
                                            ({"CI": "true"}, True)])
def test_a_skipped_redis_fails_the_smoke_test_where_redis_is_required(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fails: bool) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SYNCREF_REQUIRE_REDIS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    skipped = {"status": "skipped", "reason": "redis-server is not installed"}
    if fails:
        with pytest.raises(pytest.fail.Exception, match="not installed"):
            redis_measured_unless_allowed(skipped)
    else:
        redis_measured_unless_allowed(skipped)
    redis_measured_unless_allowed({"status": "ok"})  # measured: nothing to say anywhere


def smoke_doc(name: str, diag: dict[str, Any], figures: dict[str, float | None]) -> dict[str, Any]:
    """A bench document of one workload whose every peer ran once with these diagnostics/figures."""
    def peer(p: str) -> dict[str, Any]:
        figs = {m.name: ({"median": figures.get(m.name, 1.0), "runs": [figures.get(m.name, 1.0)]}
                         if figures.get(m.name, 1.0) is not None else {"median": None, "missing": "nothing done"})
                for m in metrics_for(WORKLOADS[name], p)}
        return {"status": "ok", "figures": figs, "diag": [{"server_util": 0.5, **diag}]}
    return {"workloads": {name: {"peers": {p: peer(p) for p in WORKLOADS[name].peers}, "ratios": {}}}}


@pytest.mark.parametrize(("name", "diag", "figures"), [
    pytest.param("append_closed", {"ops": 0}, {"throughput": 0.0, "p50_ms": None, "p99_ms": None},
                 id="append: no call in the measured phase"),
    pytest.param("fanout_10", {"sent": 200, "received": 0}, {"deliveries_per_s": None, "p50_ms": None},
                 id="fanout: nothing delivered"),
    pytest.param("replay_gap", {"replays": 0}, {}, id="replay: no replay timed"),
    pytest.param("reconnect_storm", {"clients": 30}, {"all_live_ms": None, "p50_live_ms": None, "failures": 30.0},
                 id="storm: no client live"),
    pytest.param("memory", {"events": 0}, {}, id="memory: no event"),
    pytest.param("restart", {"records": 0}, {}, id="restart: no record"),
])
def test_the_smoke_check_refuses_a_workload_that_did_nothing(name: str, diag: dict[str, Any],
                                                             figures: dict[str, float | None]) -> None:
    with pytest.raises(AssertionError):
        check_complete(smoke_doc(name, diag, figures), [name])


@pytest.mark.parametrize(("name", "diag"), [
    ("append_closed", {"ops": 12}), ("fanout_10", {"sent": 200, "received": 2000}), ("replay_gap", {"replays": 5}),
    ("reconnect_storm", {"clients": 30}), ("memory", {"events": 1500}), ("restart", {"records": 1510}),
])
def test_the_smoke_check_takes_a_workload_that_did_its_work(name: str, diag: dict[str, Any]) -> None:
    check_complete(smoke_doc(name, diag, {}), [name])


def test_bench_quick_runs_every_workload_with_every_figure(tmp_path: Path) -> None:
    proc, doc = bench(tmp_path, "--plot", str(tmp_path / "plots"), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    check_complete(doc, list(WORKLOADS))
    redis_measured_unless_allowed(doc["workloads"]["append_closed"]["peers"]["redis"])
    assert "append_closed" in proc.stdout and "vs redis" in proc.stdout
    for name, protocol in (("fanout_100", "v2"), ("fanout_100_v3", "v3"), ("fanout_500_v3", "v3")):
        for d in doc["workloads"][name]["peers"]["syncref"]["diag"]:  # the subscribers spoke it, in order
            assert d["protocol"] == protocol and d["out_of_order"] == 0 and d["received"] == d["expected"], name
            assert d["duplicates"] == 0, name
            assert d["events_per_frame"] >= 1 and d["messages_per_frame"] >= 1, name
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["append_latency_cdf.png", "fanout_latency_cdf.png", "fanout_scaling.png"]


def test_missing_redis_is_reported_skipped_not_passed(tmp_path: Path) -> None:
    proc, doc = bench(tmp_path, "--workloads", "replay_gap", "--redis-server", str(tmp_path / "no-redis-server"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_complete(doc, ["replay_gap"])
    redis = doc["workloads"]["replay_gap"]["peers"]["redis"]
    assert redis["status"] == "skipped" and "not found" in redis["reason"]
    assert doc["workloads"]["replay_gap"]["ratios"] == {}
    # a gap replay is timed gap_repeats times a run (not replay_repeats, the full replay's count)
    assert workloads.QUICK.gap_repeats != workloads.QUICK.replay_repeats
    for d in doc["workloads"]["replay_gap"]["peers"]["syncref"]["diag"]:
        assert d["replays"] == len(d["times_ms"]) == workloads.QUICK.gap_repeats
    assert "skipped" in proc.stdout


def test_unknown_workload_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "adapters.cli", "bench", "--workloads", "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown workload" in proc.stderr


# --- the profile budget ---------------------------------------------------------------------------------

STACKS: list[tuple[list[str], int]] = [
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._processor (adapters/server.py:600)",
        "Engine.handle (reference/engine.py:170)",
        "Engine._call (reference/engine.py:300)",
        "append_sync_event (reference/reducers.py:90)",
        "canonicalize (spec/canonical.py:200)",
        "dumps (json/__init__.py:238)",
    ], 30),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._processor (adapters/server.py:600)",
        "Engine.handle (reference/engine.py:170)",
        "Engine._commit (reference/engine.py:420)",
        "make_record (reference/log.py:97)",
        "dumps (json/__init__.py:238)",
    ], 20),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._sender (adapters/server.py:700)",
        "SyncServer._encode (adapters/server.py:680)",
        "encode_server (adapters/wire.py:390)",
        "Writer.string (adapters/bsatn.py:140)",
    ], 10),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._sender (adapters/server.py:700)",
        "WebSocketResponse.send_bytes (aiohttp/web_ws.py:400)",
        "_SelectorSocketTransport.write (asyncio/selector_events.py:1040)",
    ], 5),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._reader (adapters/server.py:560)",
        "decode_client_frame (adapters/wire.py:600)",
        "Reader.u32 (adapters/bsatn.py:213)",
    ], 5),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._processor (adapters/server.py:600)",
        "decorate_with_checker.<locals>.wrapper (icontract/_checkers.py:640)",
        "Engine.handle (reference/engine.py:170)",
        "Engine._fanout (reference/engine.py:460)",
        "can_read (spec/auth.py:80)",
    ], 4),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._processor (adapters/server.py:600)",
        "decorate_with_checker.<locals>.wrapper (icontract/_checkers.py:640)",
        "Engine.<lambda> (reference/engine.py:160)",
        "Engine.<lambda>.<locals>.<genexpr> (reference/engine.py:160)",
    ], 4),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "SyncServer._sender (adapters/server.py:700)",
        "decorate_with_checker.<locals>.wrapper (icontract/_checkers.py:640)",
    ], 2),
    ([
        "thread (0x2)",
        "GroupCommitWriter._run (reference/durability.py:424)",
        "GroupCommitWriter._write (reference/durability.py:380)",
        "record_row (reference/durability.py:120)",
    ], 15),
    ([
        "thread (0x1)",
        "<module> (adapters/cli.py:261)",
        "BaseEventLoop.run_forever (asyncio/base_events.py:607)",
        "BaseEventLoop._run_once (asyncio/base_events.py:1884)",
    ], 5),
]
FOLDED = "\n".join(";".join(frames) + f" {count}" for frames, count in STACKS) + "\n"


def test_profile_budget_charges_each_sample_to_its_innermost_phase() -> None:
    from adapters.bench.profile import CONTRACTS, REST, budget, parse_folded, threads

    stacks = parse_folded(FOLDED.splitlines())
    assert sum(c for _, c in stacks) == 100
    got = budget(stacks)
    assert got == {
        "canonical JSON + payload hash": 0.30,
        "record + hash chain": 0.20,
        "group commit: serialise + SQLite": 0.15,
        "fanout encode (BSATN, framing)": 0.10,
        CONTRACTS: 0.06,  # a condition lambda (4) and the wrapper itself (2)
        "socket writes (aiohttp writer, transport)": 0.05,
        "frame decode (BSATN)": 0.05,
        REST: 0.05,
        "auth checks (scopes, grants, row filter)": 0.04,  # inside a wrapped call: not a contract
    }
    assert list(got.values()) == sorted(got.values(), reverse=True)
    assert threads(stacks) == {"thread": 1.0}
    assert budget([]) == {}


class _LateLines(peers._Lines):
    """A reader thread that queues the child's lines only well after the child has exited (what a
    loaded machine does to the real one now and then)."""

    def _pump(self) -> None:
        self.proc.wait()
        time.sleep(0.3)
        super()._pump()


def _late_client(code: str) -> workloads.ClientProc:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    cp = object.__new__(workloads.ClientProc)
    cp.proc = proc
    cp.lines = _LateLines(proc)
    return cp


def test_a_client_that_answers_and_exits_at_once_is_read_not_reported_dead() -> None:
    # the CI's bench smoke run once saw "echo failed: client exited with 0" from this race
    cp = _late_client("print('{\"result\": 7}')")
    try:
        assert cp.expect("result", 20) == 7
    finally:
        cp.close()
    cp = _late_client("print('{\"other\": 1}')")  # a real early exit is still reported, with its status
    try:
        with pytest.raises(workloads.ClientFailed, match=r"^client exited with 0 \(see clients.log\)$"):
            cp.expect("result", 20)
    finally:
        cp.close()


def test_a_server_line_printed_just_before_exit_is_found() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "print('listening on 4711')"], stdout=subprocess.PIPE,
                            text=True)
    assert _LateLines(proc).wait_for(r"listening on (\d+)", 20).group(1) == "4711"


def test_the_server_under_test_is_the_tree_asked_for_wherever_the_bench_runs(tmp_path: Path) -> None:
    """``--server-code DIR``: the server's command imports DIR's ``adapters`` even when started in
    a checkout of its own (the working directory, which ``-m`` would put first without ``-P``):
    the earlier A/B recipe, ``PYTHONPATH=BASE python -c ...`` run inside a checkout, measured the
    checkout twice."""
    import subprocess

    from adapters.bench import peers

    fake = tmp_path / "tree"
    (fake / "adapters").mkdir(parents=True)
    (fake / "adapters" / "__init__.py").write_text("")
    (fake / "adapters" / "cli.py").write_text("import sys\nprint('fake tree', __file__, sys.argv[1:])\n")
    saved = peers.SERVER_CODE
    peers.SERVER_CODE = fake
    try:
        done = subprocess.run(peers.server_command("no-such-command"), env=peers.server_env(),
                              cwd=peers.ROOT, capture_output=True, text=True, timeout=60)
    finally:
        peers.SERVER_CODE = saved
    assert done.stdout.strip() == f"fake tree {fake / 'adapters' / 'cli.py'} ['no-such-command']", done
    origin = peers.code_origin(fake)
    assert origin == {"dir": str(fake), "commit": None, "modified": None}
    here = peers.code_origin(peers.ROOT)
    assert here["dir"] == str(peers.ROOT)
