"""A ``TransactionUpdate`` over 1 MiB fanned out to many subscribers (each with five query sets
matching one ~250 KB event: a ~1.25 MB update), end to end over real sockets.

* Compressed once per (message, compression) per delivery pass, in a worker thread, and the one
  result shared by every receiver of the same update -- v2 and v3 alike (a lone large body is the
  same frame on both).  A receiver whose update differs (another query-set id) gets its own.
  Counted at the compressor (``wire._compress``, the seam the off-loop test already uses); every
  receiver's frame is decompressed by the client and its rows checked against what was appended.
* ``syncref_fanout_latency_seconds`` observes a deferred frame (one queued behind its compression)
  when it is handed to the transport, not when its turn was taken: the compressor is held until
  the test releases it, and the observation must come after the release (an ordering of the test's
  own clock readings, no duration asserted).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.server import WireClient, call_http, http, rows_of, running_server

from adapters import bsatn, wire

MIB = 1024 * 1024
STREAM = "big"
QUERY = f"SELECT * FROM sync_event WHERE stream_id = '{STREAM}'"
SETS = (1, 2, 3, 4, 5)


def subscriber(st: Any, tok: str, version: int, compression: str, sets: tuple[int, ...] = SETS) -> WireClient:
    c = WireClient(st, tok, version=version, compression=compression)
    for qs in sets:
        applied = c.subscribe(qs, QUERY)
        assert isinstance(applied, wire.SubscribeApplied), applied
    return c


def payloads_of(update: wire.TransactionUpdate) -> dict[int, list[str]]:
    """Per query set of the update: the payloads of the events it inserts."""
    out: dict[int, list[str]] = {}
    for qs in update.query_sets:
        for table in qs.tables:
            for rows in table.rows:
                assert isinstance(rows, wire.PersistentTableRows)
                out.setdefault(qs.query_set_id, []).extend(
                    r.payload for r in rows_of("sync_event", rows.inserts))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("compression", ["Gzip", "Brotli"])
def test_a_large_update_is_compressed_once_for_its_receivers_off_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()
    real = wire._compress

    def counted(body: bytes, how: wire.Compression) -> bytes:
        if len(body) > MIB:
            with lock:
                seen.append((len(body), threading.current_thread().name))
        return real(body, how)

    monkeypatch.setattr(wire, "_compress", counted)
    payload = json.dumps(os.urandom(125_000).hex())  # ~250 KB, under the 256 KiB payload bound
    with running_server(tmp_path) as st:
        tok = st.token()
        same = [subscriber(st, tok, v, compression) for v in (2, 2, 3, 2, 3)]
        other = subscriber(st, tok, 2, compression, (1, 2, 3, 4, 6))  # another query-set id: other bytes
        mixed = "Brotli" if compression == "Gzip" else "Gzip"
        third = subscriber(st, tok, 3, mixed)  # the same update, the other compression
        seen.clear()
        assert call_http(st, tok, "append_sync_event", [STREAM, "k1", payload, {"none": []},
                                                         {"none": []}]).status == 200
        cases = [(c, SETS, compression) for c in same] + [(other, (1, 2, 3, 4, 6), compression),
                                                          (third, SETS, mixed)]
        for c, sets, how in cases:
            update = c.recv_until(wire.TransactionUpdate)
            assert payloads_of(update) == {qs: [payload] for qs in sets}  # decompressed by the client
            assert c.frames[-1][0] == wire.Compression(how).tag  # compressed as this client asked
        assert len(seen) == 3, seen  # one per (distinct update, compression): five receivers shared one
        assert st._thread.name not in {name for _n, name in seen}, seen  # in a worker thread
        for c, _sets, _how in cases:
            c.close()


class Held:
    """``wire._compress`` held for bodies over 1 MiB until :meth:`release` (the test's clock read then)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        self.released_at = 0.0
        real = wire._compress

        def held(body: bytes, how: wire.Compression) -> bytes:
            if len(body) > MIB:
                self.entered.set()
                assert self.released.wait(30)
            return real(body, how)

        monkeypatch.setattr(wire, "_compress", held)

    def release(self) -> None:
        assert self.entered.wait(30)  # a frame is being compressed: its turn was taken
        self.released_at = time.monotonic()
        self.released.set()


def recorded(st: Any) -> list[tuple[float, int, float]]:
    """The fanout latency observations from now on: (value, receivers, when observed)."""
    observed: list[tuple[float, int, float]] = []

    def observe(value: float, n: int = 1) -> None:
        observed.append((value, n, time.monotonic()))

    st.call(setattr, st.server.metrics.fanout_latency, "observe", observe)
    return observed


def check_observed_after(st: Any, observed: list[tuple[float, int, float]], released_at: float) -> None:
    """One delivery of the last commit was observed, after the compression it waited for."""
    committed_at = st.call(lambda: st.server._commits.at(st.server.engine.committed))
    assert committed_at is not None
    assert [n for _v, n, _at in observed] == [1], observed
    value, _n, at = observed[0]
    assert at >= released_at, "observed before the frame could have been handed to the transport"
    assert committed_at + value >= released_at  # the latency includes the wait for compression


def test_the_fanout_latency_of_a_reply_queued_behind_a_large_snapshot_includes_its_compression(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """v3, one frame: subscribe (a ~1.25 MB snapshot, compressed off the loop) and append to the
    stream -- the ``ReducerResult`` is in the same turn, behind the snapshot's compression."""
    payload = json.dumps(os.urandom(125_000).hex())
    with running_server(tmp_path) as st:
        tok = st.token()
        for i in range(5):
            assert call_http(st, tok, "append_sync_event", [STREAM, f"k{i}", payload, {"none": []},
                                                             {"none": []}]).status == 200
        c = WireClient(st, tok, version=3, compression="Gzip", confirmed=False)  # the reply is released at once
        held = Held(monkeypatch)
        observed = recorded(st)
        c.send(wire.Subscribe(1, 1, (QUERY,)), wire.CallReducer(2, 0, "append_sync_event", bsatn.encode_args(
            "append_sync_event", (STREAM, "k5", payload, None, None))))
        held.release()
        applied = c.recv_until(wire.SubscribeApplied)
        assert len(rows_of("sync_event", applied.rows.tables[0].rows)) == 5
        result = c.recv_until(wire.ReducerResult)
        assert isinstance(result.outcome, wire.ReducerOk)
        check_observed_after(st, observed, held.released_at)
        c.close()


def test_the_fanout_latency_of_a_large_update_includes_its_compression(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = json.dumps(os.urandom(125_000).hex())
    with running_server(tmp_path) as st:
        tok = st.token()
        c = subscriber(st, tok, 2, "Gzip")
        held = Held(monkeypatch)
        observed = recorded(st)
        done: list[Any] = []
        caller = threading.Thread(target=lambda: done.append(call_http(
            st, tok, "append_sync_event", [STREAM, "k1", payload, {"none": []}, {"none": []}])))
        caller.start()
        held.release()
        update = c.recv_until(wire.TransactionUpdate)
        assert payloads_of(update) == {qs: [payload] for qs in SETS}
        caller.join(30)
        assert done and done[0].status == 200
        check_observed_after(st, observed, held.released_at)
        c.close()


def lags(st: Any) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    text = http("GET", f"{st.base}/metrics").text
    return {s.labels["conn"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "syncref_subscriber_lag_offsets"}


def test_a_subscriber_whose_update_waits_for_its_compression_is_lagging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``syncref_subscriber_lag_offsets`` counts an update taken off the engine's queue but not yet
    handed to the transport (its frame being compressed) as not delivered: the subscriber is behind
    until the frame is written, then back to 0."""
    payload = json.dumps(os.urandom(125_000).hex())
    with running_server(tmp_path) as st:
        tok = st.token()
        c = subscriber(st, tok, 2, "Gzip")
        assert list(lags(st).values()) == [0]
        held = Held(monkeypatch)
        done: list[Any] = []
        caller = threading.Thread(target=lambda: done.append(call_http(
            st, tok, "append_sync_event", [STREAM, "k1", payload, {"none": []}, {"none": []}])))
        caller.start()
        assert held.entered.wait(30)  # the update's turn was taken: its frame is being compressed
        assert list(lags(st).values()) == [1], "a frame not yet handed to the transport counted as delivered"
        held.release()
        update = c.recv_until(wire.TransactionUpdate)
        assert payloads_of(update) == {qs: [payload] for qs in SETS}
        caller.join(30)
        assert done and done[0].status == 200
        deadline = time.monotonic() + 20
        while list(lags(st).values()) != [0]:  # (the frame reached the client: the write is done)
            assert time.monotonic() < deadline, lags(st)
            time.sleep(0.02)
        c.close()


def test_a_receiver_that_leaves_during_the_shared_compression_does_not_cancel_it_for_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first sender that needs the shared job starts it; the others await the same result.  If
    that sender is cancelled (its connection closed) while the worker compresses, the rest must
    still get the frame.  The first two receivers (the first senders of the pass) leave while the
    compressor is held; the third gets the update."""
    payload = json.dumps(os.urandom(125_000).hex())
    with running_server(tmp_path) as st:
        tok = st.token()
        subs = [subscriber(st, tok, 2, "Gzip") for _ in range(3)]
        held = Held(monkeypatch)
        assert call_http(st, tok, "append_sync_event", [STREAM, "k1", payload, {"none": []},
                                                         {"none": []}]).status == 200
        assert held.entered.wait(30)
        for c in subs[:2]:
            c.close()
        deadline = time.monotonic() + 20
        while st.call(lambda: len(st.server.sessions)) > 1:  # their sessions finished: senders cancelled
            assert time.monotonic() < deadline
            time.sleep(0.02)
        held.release()
        update = subs[2].recv_until(wire.TransactionUpdate)
        assert payloads_of(update) == {qs: [payload] for qs in SETS}
        subs[2].close()
