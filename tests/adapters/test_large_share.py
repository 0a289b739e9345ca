"""``SyncServer._turn`` of a large update (over ``BODY_CACHE_ITEM_BYTES``, not kept in the
encode-once LRU) on a never-started server (a real engine, stand-in sessions): its receivers share
one body and one compression job per compression whoever takes their turn -- the delivery pass, or
later a backpressured receiver's sender, outside any pass -- within ``LARGE_SHARE_BYTES``, oldest
out first.  The frames are checked against the wire: compressed, each decodes to the update."""

from __future__ import annotations

import asyncio
import json
import types
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from adapters import server as srv
from adapters import wire
from spec.auth import Claims
from spec.messages import CallReducer, Subscribe
from spec.schema import SCOPES

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))
QUERY = "SELECT * FROM sync_event WHERE stream_id = 's'"


def rig(subscribers: int, compressions: list[wire.Compression]) -> tuple[Any, list[Any]]:
    server = srv.SyncServer(srv.ServerConfig(data_dir=Path("unused")))
    engine = server._engine = srv.Engine(max_queue=1000)
    sizes = wire.RowSizes()
    engine.measure = lambda message: wire.message_size_bound(message, sizes)  # as the server sets it
    sessions = []
    for i in range(subscribers):
        cid = engine.connect(ADMIN, confirmed=False)
        for qs in range(1, 6):  # five query sets of the same rows: a ~1.25 MB update
            engine.handle(cid, Subscribe(qs, qs, (QUERY,)))
        engine.take(cid, 64, 1 << 30)  # the SubscribeApplied
        s = types.SimpleNamespace(conn_id=cid, side=deque(), busy=False, wake=asyncio.Event(), version=2 + i % 2,
                                  compression=compressions[i % len(compressions)], broken=False, closers=[],
                                  held={})
        server.sessions[cid] = s
        sessions.append(s)
    return server, sessions


def append(server: Any, key: str) -> str:
    payload = json.dumps(key * 250_000)
    writer = server.engine.connect(ADMIN, confirmed=False)
    server.engine.handle(writer, CallReducer(1, "append_sync_event", ("s", key, payload, None, None)))
    server.engine.take(writer, 10, 1 << 30)
    return payload


def made(job: Any) -> bytes:
    """The frame's payload (tag and compressed body), compressed here as the sender would."""
    async def run() -> list[bytes]:
        tagged: list[bytes] = await job.tagged()
        return tagged
    return b"".join(asyncio.run(run()))


def test_receivers_outside_a_pass_share_the_body_and_one_job_per_compression() -> None:
    gzip, brotli = wire.Compression.GZIP, wire.Compression.BROTLI
    server, sessions = rig(4, [gzip, gzip, brotli, brotli])  # v2, v3, v2, v3
    payload = append(server, "a")
    assert not server._round  # no pass under way: each sender takes its own turn
    turns = [server._turn(s) for s in sessions]
    jobs = [frames[0] for frames, _payload in turns]
    assert all(len(frames) == 1 and isinstance(frames[0], srv._Compress) for frames, _payload in turns)
    assert jobs[0] is jobs[1] and jobs[2] is jobs[3] and jobs[0] is not jobs[2]  # one per compression
    for job, how in ((jobs[0], gzip), (jobs[2], brotli)):
        data = made(job)
        assert data[0] == how.tag
        (update,) = wire.decode_server_frame(data, 2)
        assert isinstance(update, wire.TransactionUpdate) and len(update.query_sets) == 5
        rows = update.query_sets[0].tables[0].rows[0]
        assert isinstance(rows, wire.PersistentTableRows)
        assert [r.payload for r in wire.decode_rows("sync_event", rows.inserts)] == [payload]  # type: ignore[attr-defined]


def test_large_bodies_are_kept_within_the_bound_oldest_out_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(srv, "LARGE_SHARE_BYTES", 2 * srv.BODY_CACHE_ITEM_BYTES)  # room for one ~1.25 MB body
    server, sessions = rig(2, [wire.Compression.GZIP])
    append(server, "a")
    append(server, "b")
    first, second = sessions
    a1 = server._turn(first)[0][0]  # the first receiver takes update a, then b: b pushes a out
    b1 = server._turn(first)[0][0]
    assert len(server._large) == 1 and server._large_bytes <= srv.LARGE_SHARE_BYTES
    a2 = server._turn(second)[0][0]  # a again: encoded and kept anew (it pushes b out)
    b2 = server._turn(second)[0][0]
    assert a2 is not a1 and b2 is not b1 and len(server._large) == 1
    assert made(a1) == made(a2) and made(b1) == made(b2) and made(a1) != made(b1)


def test_the_bound_counts_the_compressed_frames_kept_with_the_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``_large`` keeps -- the bodies and, once made, their compressed frames (a Gzip and a
    Brotli receiver: two per body) -- stays within ``LARGE_SHARE_BYTES``.  Payloads that compress
    poorly (base64 of random bytes): counted on the bodies alone, the frames kept nearly as much
    again past the bound.  Summed here from the entries themselves, not from the server's count."""
    import base64
    import os

    monkeypatch.setattr(srv, "LARGE_SHARE_BYTES", 6 * srv.BODY_CACHE_ITEM_BYTES)
    server, sessions = rig(2, [wire.Compression.GZIP, wire.Compression.BROTLI])
    for i in range(12):
        payload = json.dumps(base64.b64encode(os.urandom(180_000)).decode())
        writer = server.engine.connect(ADMIN, confirmed=False)
        server.engine.handle(writer, CallReducer(1, "append_sync_event", ("s", f"k{i}", payload, None, None)))
        server.engine.take(writer, 10, 1 << 30)
        for s in sessions:
            (job,), _payload = server._turn(s)
            made(job)
        held = sum(len(big.body) + sum(len(p) for job in big.jobs.values()
                                       if job.made is not None and job.made.done() for p in job.made.result())
                   for big in server._large.values())
        assert len(server._large) == 1 or held <= srv.LARGE_SHARE_BYTES, (i, len(server._large), held)
    assert len(server._large) > 1  # the bound kept more than the newest
