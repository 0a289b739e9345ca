"""The isolation pieces one at a time: size estimates against real encodings, frame decoding that
stops at a count, the byte-bounded row cache, the /sql answer builder against ``json.dumps``,
the connection gate, the rate-limited log, and ``Limits`` against the table in docs/protocol.md."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tracemalloc
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.sats_strategies import row_st_for

from adapters import bsatn, satsjson, wire
from adapters.guard import ConnectionGate, RateLimitedLog, descriptor_budget, raise_descriptor_limit
from adapters.server import Limits, sql_answer
from reference.engine import limit_exceeded
from spec import messages as sm
from spec.errors import SyncError
from spec.schema import TABLE_BY_NAME, TABLES
from spec.values import row_values

ROOT = Path(__file__).resolve().parents[2]
rows = st.integers(0, len(TABLES) - 1).flatmap(lambda i: row_st_for(i, max_text=40))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(row=rows)
def test_row_size_is_the_encoded_length(row: Any) -> None:
    assert bsatn.row_size(row) == len(bsatn.encode_row(row))


def table_rows(data: st.DataObject, event: bool = False) -> sm.TableRows:
    i = data.draw(st.integers(0, len(TABLES) - 1))
    ins = tuple(data.draw(st.lists(row_st_for(i, max_text=30), max_size=5)))
    dels = () if event else tuple(data.draw(st.lists(row_st_for(i, max_text=30), max_size=5)))
    return sm.TableRows(TABLES[i].name, ins, dels, event)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_message_size_bound_is_an_upper_bound_and_a_close_one(data: st.DataObject) -> None:
    """The estimate the engine's byte limits use, against the bytes the codec actually writes."""
    tables = tuple(table_rows(data) for _ in range(data.draw(st.integers(0, 3))))
    snapshot = tuple(sm.TableRows(t.table, t.inserts) for t in tables)
    sets = tuple(sm.QuerySetUpdate(k, tables) for k in range(data.draw(st.integers(0, 2))))
    text = data.draw(st.text(max_size=50))
    messages: list[sm.ServerMessage] = [
        sm.SubscribeApplied(1, 2, snapshot), sm.UnsubscribeApplied(1, 2, snapshot), sm.UnsubscribeApplied(1, 2),
        sm.SubscriptionError(None, 3, text), sm.TransactionUpdate(9, sets),
        sm.ReducerResult(4, 9, sm.ReducerOk(data.draw(st.none() | st.integers(0, 2**64 - 1)), sets)),
        sm.ReducerResult(4, 9, sm.ReducerErr(text)), sm.ReducerResult(4, 9, sm.ReducerErr(text, internal=True)),
        sm.OneOffQueryResult(5, text)]
    if snapshot:
        messages.append(sm.OneOffQueryResult(5, snapshot[0]))
    for msg in messages:
        actual = len(wire.encode_server(wire.to_wire(msg, timestamp=-1)))
        bound = wire.message_size_bound(msg)
        n_rows = sum(len(t.inserts) + len(t.deletes) for t in tables)
        assert actual <= bound <= actual + 64 + 64 * len(tables) * (1 + len(sets)) + 8 * n_rows * (1 + len(sets)), \
            (type(msg).__name__, actual, bound)


def test_internal_errors_go_out_as_internal_error() -> None:
    msg = wire.to_wire(sm.ReducerResult(1, 2, sm.ReducerErr("internal error in x: boom", internal=True)))
    assert isinstance(msg, wire.ReducerResult) and msg.outcome == wire.ReducerInternalError("internal error in x: boom")
    back = wire.server_from_wire(msg)
    assert isinstance(back, sm.ReducerResult) and back.outcome == sm.ReducerErr("internal error in x: boom",
                                                                                 internal=True)


def test_v3_frames_stop_decoding_at_the_count() -> None:
    one = wire.encode_client(wire.OneOffQuery(1, ""))
    assert len(wire.decode_client_frame(one * 5, 3, max_messages=5)) == 5
    with pytest.raises(wire.TooManyMessages):
        wire.decode_client_frame(one * 6, 3, max_messages=5)
    # it stops there: garbage after the sixth message is never reached (else: BsatnError)
    with pytest.raises(wire.TooManyMessages):
        wire.decode_client_frame(one * 6 + b"\xff\xff", 3, max_messages=5)
    with pytest.raises(bsatn.BsatnError):
        wire.decode_client_frame(one * 5 + b"\xff\xff", 3, max_messages=50)
    with pytest.raises(wire.TooManyMessages):
        wire.decode_client_frame(one, 2, max_messages=0)
    assert len(wire.decode_client_frame(one * 3, 3)) == 3  # no bound given: everything
    gen = wire.client_frame_messages(one * 3, 3)
    assert next(gen) == wire.OneOffQuery(1, "")  # one at a time


def _peak(fn: Callable[[], object]) -> int:
    """The most bytes Python held at once while ``fn`` ran (tracemalloc), above what it held before."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_subscribe_over_the_query_bound_is_not_decoded() -> None:
    """With ``max_queries``, a ``Subscribe`` of more texts comes out as ``OverlongSubscribe`` (its
    ids and its count) and its texts are skipped, not decoded: their lengths are still checked (a
    v3 frame splits as before, truncation is still malformed) but not their UTF-8.  Peak memory
    (tracemalloc): under a quarter of the frame, where the unbounded decode of the same frame
    takes over 4x (the negative control: the measure sees the cost it bounds; ~12x measured)."""
    n = wire.SKIP_MOST_QUERIES  # the most texts a decoder steps over
    frame = wire.encode_client(wire.Subscribe(5, 6, ("ab",) * n))
    got: list[object] = []
    assert _peak(lambda: got.append(wire.decode_client(frame))) > 4 * len(frame)
    got.clear()
    assert _peak(lambda: got.append(wire.decode_client(frame, max_queries=64))) < len(frame) // 4
    assert got == [wire.OverlongSubscribe(5, 6, n)]
    at_bound = wire.Subscribe(1, 2, ("a", "b"))
    assert wire.decode_client(wire.encode_client(at_bound), max_queries=2) == at_bound
    assert wire.decode_client(wire.encode_client(at_bound), max_queries=1) == wire.OverlongSubscribe(1, 2, 2)
    not_utf8 = frame[:-2] + b"\xff\xfe"
    assert wire.decode_client(not_utf8, max_queries=64) == wire.OverlongSubscribe(5, 6, n)
    with pytest.raises(bsatn.BsatnError, match="invalid UTF-8"):
        wire.decode_client(not_utf8)
    for broken in (frame[:-1], frame + b"\x00"):  # truncated, trailing bytes: malformed as ever
        with pytest.raises(bsatn.BsatnError):
            wire.decode_client(broken, max_queries=64)
    other = wire.OneOffQuery(9, "SELECT * FROM sync_stream")
    v3 = wire.encode_client(at_bound) + frame + wire.encode_client(other)
    assert wire.decode_client_frame(v3, 3, max_queries=1) == [
        wire.OverlongSubscribe(1, 2, 2), wire.OverlongSubscribe(5, 6, n), other]
    assert list(wire.client_frame_messages(v3, 3, 10, max_queries=2)) == [
        at_bound, wire.OverlongSubscribe(5, 6, n), other]


def test_a_subscribe_declaring_more_texts_than_a_decoder_steps_over_is_malformed() -> None:
    """Stepping over a skipped text is a Python step per length: a 32 MiB ``Subscribe`` of 8.4M
    empty texts held the loop ~0.5-2 s.  Over ``max_queries`` *and* over ``SKIP_MOST_QUERIES``,
    the count alone makes the message malformed, before any length is read: the texts below are
    lengths of 0xFFFFFFFF, which a walk would report as truncation at the first one.  Both decode
    paths (the fast one and the Reader) say the same; at or under ``max_queries`` nothing
    changes, and without ``max_queries`` (a client's decoder) neither does anything else."""
    most = wire.SKIP_MOST_QUERIES
    count = 100_000
    head = wire.encode_client(wire.Subscribe(5, 6, ()))[:-4]  # tag, ids; the count follows
    garbage = head + count.to_bytes(4, "little") + b"\xff" * (4 * count)
    for decode in (lambda d: wire.decode_client(d, max_queries=64),
                   lambda d: wire.decode_client_frame(d, 3, max_queries=64)):
        with pytest.raises(bsatn.BsatnError, match=f"a Subscribe of {count} query texts: over "
                           rf"max_queries_per_connection \(64\) and the {most} a decoder skips"):
            decode(garbage)
    with pytest.raises(bsatn.BsatnError, match="truncated"):  # the walk, where the cap does not apply
        wire.decode_client(garbage)
    over = wire.encode_client(wire.Subscribe(5, 6, ("",) * (most + 1)))
    with pytest.raises(bsatn.BsatnError, match=f"and the {most} a decoder skips"):
        wire.decode_client(over, max_queries=64)
    assert wire.decode_client(over, max_queries=most + 1) == wire.Subscribe(5, 6, ("",) * (most + 1))
    assert wire.decode_client(over) == wire.Subscribe(5, 6, ("",) * (most + 1))
    short = head + count.to_bytes(4, "little") + b"\x00" * 8  # a count the frame cannot hold: truncated
    with pytest.raises(bsatn.BsatnError, match="truncated"):
        wire.decode_client(short, max_queries=64)


def test_the_row_cache_is_bounded_in_bytes() -> None:
    table = TABLE_BY_NAME["sync_event"]
    cache = wire.RowCache(max_entries=1000, max_bytes=10_000)
    for i in range(50):
        row = table.row_type("s", 1, i + 1, f"k{i}", "sha256:" + "0" * 64, json.dumps({"p": "x" * 900}), "a" * 64,
                             0, i + 1)
        assert cache.encode(row) == bsatn.encode_row(row)
        assert cache.nbytes <= 10_000
    big = table.row_type("s", 1, 99, "big", "sha256:" + "0" * 64, "y" * 20_000, "a" * 64, 0, 99)
    assert cache.encode(big) == bsatn.encode_row(big) and cache.nbytes <= 10_000  # too big to keep


def answers_st() -> st.SearchStrategy[list[tuple[sm.TableRows, float]]]:
    def one(i: int) -> st.SearchStrategy[tuple[sm.TableRows, float]]:
        return st.tuples(st.lists(row_st_for(i, max_text=30), max_size=4).map(
            lambda rs: sm.TableRows(TABLES[i].name, tuple(rs))), st.floats(0, 1))
    return st.lists(st.integers(0, len(TABLES) - 1).flatmap(one), min_size=1, max_size=3)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(answers=answers_st(), cap=st.integers(1, 4000))
def test_sql_answer_is_json_dumps_of_the_results_and_stops_at_its_bound(
        answers: list[tuple[sm.TableRows, float]], cap: int) -> None:
    """Second opinion: the route's former body, ``json.dumps`` of the list of statement results."""
    expected = json.dumps([{
        "schema": satsjson.product_type(TABLE_BY_NAME[rows.table].columns),
        "rows": [satsjson.row_to_sql_json(TABLE_BY_NAME[rows.table], row_values(r)) for r in rows.inserts],
        "total_duration_micros": int(seconds * 1e6),
        "stats": {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0},
    } for rows, seconds in answers]).encode()
    assert sql_answer(answers, 1 << 30) == expected
    got = sql_answer(answers, cap)
    if len(expected) <= cap:
        assert got == expected
    else:
        assert isinstance(got, SyncError) and got.details["limit"] == "max_sql_response_bytes"
        assert got.details["max"] == cap < got.details["actual"] <= len(expected)


def test_limit_exceeded_names_the_limit() -> None:
    err = limit_exceeded("max_sql_rows", 10, 11)
    assert err.render() == 'limit_exceeded: {"actual":11,"limit":"max_sql_rows","max":10}'


# --- guard ------------------------------------------------------------------------------------------


def test_rate_limited_log_writes_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limiter = RateLimitedLog(logging.getLogger("test.rl"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="test.rl"):
        assert limiter.log("k", logging.ERROR, "boom")
        for _ in range(500):
            assert not limiter.log("k", logging.ERROR, "boom")
        assert limiter.log("other", logging.ERROR, "else")  # keys are separate
        now[0] += 10
        assert limiter.log("k", logging.ERROR, "boom")
    assert [r.getMessage() for r in caplog.records] == [
        "boom", "else", "boom (500 more like it in the last 10 s not logged)"]
    assert limiter.written == 3 and limiter.suppressed == 500
    small = RateLimitedLog(logging.getLogger("test.rl2"), interval_s=10, clock=lambda: now[0], max_keys=4)
    for i in range(100):
        small.log(f"k{i}", logging.DEBUG, "x")
    assert len(small._keys) == 4  # a bounded memory, whatever the keys


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(f"data {data!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")


def test_connection_gate_counts_and_refuses_past_its_cap() -> None:
    made: list[Inner] = []
    refusals: list[int] = []

    def make() -> asyncio.Protocol:
        made.append(Inner())
        return made[-1]

    gate = ConnectionGate(make, cap=2, on_refuse=lambda: refusals.append(1))
    a, b = gate(), gate()
    assert gate.open == 2
    refused = gate()
    t = FakeTransport()
    refused.connection_made(t)
    assert t.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and t.closed
    assert b"connection limit (2 open connections)" in t.written and gate.refused == 1 and refusals == [1]
    a.connection_made(FakeTransport())
    a.data_received(b"x")
    a.connection_lost(None)
    assert made[0].events == ["made", "data b'x'", "lost"] and gate.open == 1  # forwarded, then counted out
    assert isinstance(gate(), type(b)) and gate.open == 2


def test_descriptor_budget_stays_below_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    assert descriptor_budget(1000) == 1024 - 575 and descriptor_budget(100) == 100
    assert descriptor_budget(1000, reserve=1100) == 1  # never 0 or below: one connection is still served
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert descriptor_budget(1000) == 1000


INF = -1  # resource.RLIM_INFINITY on Linux, written out


@pytest.mark.parametrize(("soft", "hard", "want", "after", "set_to"), [
    (1024, 524288, 1575, 1575, (1575, 524288)),   # systemd's service default: raised to what is wanted
    (1024, 1200, 1575, 1200, (1200, 1200)),       # up to the hard limit, no further
    (1024, 1024, 1575, 1024, None),               # soft = hard: nothing to raise
    (4096, 524288, 1575, 4096, None),             # already enough: never lowered
    (1024, INF, 1575, 1575, (1575, INF)),         # no hard limit
    (INF, INF, 1575, INF, None),                  # no limit at all
])
def test_raise_descriptor_limit_table(monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, want: int,
                                      after: int, set_to: tuple[int, int] | None) -> None:
    import resource
    assert resource.RLIM_INFINITY == INF
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (soft, hard))
    monkeypatch.setattr(resource, "setrlimit", lambda _which, limits: calls.append(tuple(limits)))
    assert raise_descriptor_limit(want) == (soft, after)
    assert calls == ([] if set_to is None else [set_to])


def test_raise_descriptor_limit_keeps_the_soft_limit_when_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    def refuse(_which: int, _limits: tuple[int, int]) -> None:
        raise ValueError("not allowed")
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 8192))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_descriptor_limit(1575) == (1024, 1024)


# --- Limits -----------------------------------------------------------------------------------------------

UNITS = {"KiB": 1024, "MiB": 1024 * 1024, "s": 1, "": 1}


def documented_limits() -> dict[str, float]:
    """The field and default columns of the "Limits" table in docs/protocol.md."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    section = text[text.index("\n## Limits\n"):]
    section = section[:section.index("\n## ", 5)]
    out = {}
    for m in re.finditer(r"^\| `(\w+)` \| ([0-9][0-9 ,.]*) ?(KiB|MiB|s)? \|", section, re.MULTILINE):
        out[m[1]] = float(m[2].replace(" ", "").replace(",", "")) * UNITS[m[3] or ""]
    return out


def test_every_limit_is_documented_with_its_default() -> None:
    documented = documented_limits()
    defaults = {f.name: getattr(Limits(), f.name) for f in fields(Limits)}
    assert documented == pytest.approx(defaults), set(documented) ^ set(defaults)


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_sql_rows must be a positive number"):
        Limits(max_sql_rows=0)
    with pytest.raises(ValueError, match="must be a positive number"):
        Limits(header_timeout_s=-1.0)
    with pytest.raises(ValueError, match="at most 33554432"):
        Limits(max_outbound_message_bytes=wire.MAX_FRAME_SIZE + 1, max_outbound_bytes=wire.MAX_FRAME_SIZE + 1)
    with pytest.raises(ValueError, match="one message must fit"):
        Limits(max_outbound_bytes=1024)
    assert Limits(max_outbound_message_bytes=wire.MAX_FRAME_SIZE).max_outbound_message_bytes == wire.MAX_FRAME_SIZE
