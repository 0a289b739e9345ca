"""A large frame's compression that raises (a ``MemoryError`` in the worker thread, a compressor
bug) while several receivers share the one job (``SyncServer._large_frame``): every receiver whose
frame it was is closed 1011 ``internal error: <exception type>`` (counted in
``syncref_internal_errors_total{where="compress"}``) -- none is left open with its sender task dead,
receiving nothing more -- and the server goes on serving: an uncompressed receiver of the same
update gets it, and so does a later compressed receiver once the compressor works again (the failed
job is not handed to it)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from support.server import WireClient, call_http, http, running_server
from test_large_fanout import QUERY, SETS, STREAM, payloads_of, subscriber

from adapters import wire

MIB = 1024 * 1024


def internal_errors(base: str, where: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    text = http("GET", f"{base}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "syncref_internal_errors_total" and s.labels.get("where") == where)


def test_a_failed_shared_compression_closes_its_receivers_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = wire._compress
    failing = threading.Event()
    failing.set()

    def broken(body: bytes, how: wire.Compression) -> bytes:
        if len(body) > MIB and failing.is_set():
            raise MemoryError
        return real(body, how)

    monkeypatch.setattr(wire, "_compress", broken)
    payload = json.dumps(os.urandom(125_000).hex())
    with running_server(tmp_path) as st:
        tok = st.token()
        gz = [subscriber(st, tok, v, "Gzip") for v in (2, 3, 2)]
        plain = subscriber(st, tok, 2, "None")
        assert call_http(st, tok, "append_sync_event", [STREAM, "k1", payload, {"none": []},
                                                         {"none": []}]).status == 200
        assert payloads_of(plain.recv_until(wire.TransactionUpdate)) == {qs: [payload] for qs in SETS}
        for c in gz:
            assert c.closed() == (1011, "internal error: MemoryError")
        assert internal_errors(st.base, "compress") == 3
        failing.clear()
        later = WireClient(st, tok, version=2, compression="Gzip")
        assert isinstance(later.subscribe(1, QUERY), wire.SubscribeApplied)
        assert call_http(st, tok, "append_sync_event", [STREAM, "k2", payload, {"none": []},
                                                         {"none": []}]).status == 200
        assert payloads_of(later.recv_until(wire.TransactionUpdate)) == {1: [payload]}
        assert payloads_of(plain.recv_until(wire.TransactionUpdate)) == {qs: [payload] for qs in SETS}
        later.close()
        plain.close()


def test_a_later_receiver_of_the_same_update_does_not_get_the_failed_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared job failed for the receivers that held it; a receiver that takes the same update
    afterwards (a backpressured one's sender) gets a new job -- a MemoryError passes -- not the
    failure kept in the old one."""
    from test_large_share import append, made, rig

    real = wire._compress
    failing = threading.Event()
    failing.set()

    def broken(body: bytes, how: wire.Compression) -> bytes:
        if failing.is_set():
            raise MemoryError
        return real(body, how)

    server, (first, second) = rig(2, [wire.Compression.GZIP])
    append(server, "a")
    monkeypatch.setattr(wire, "_compress", broken)
    job = server._turn(first)[0][0]
    with pytest.raises(MemoryError):
        made(job)
    failing.clear()
    again = server._turn(second)[0][0]
    assert again is not job
    (update,) = wire.decode_server_frame(made(again), 3)
    assert isinstance(update, wire.TransactionUpdate) and len(update.query_sets) == 5
