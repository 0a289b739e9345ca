"""End-to-end fanout over real sockets: one writer, N subscribers, the whole server in between.

Method (results in ``docs/performance.md``): ``syncref serve`` runs as its own process (so the
clients below do not share its interpreter lock) on a fresh data directory (SQLite WAL,
synchronous=FULL, group commit).  N
subscriber connections (v2, ``compression=None``, confirmed reads on: the default) subscribe to
one stream; one writer connection calls ``append_sync_event`` over the WebSocket, pipelining up to
``--window`` calls.  Each subscriber reads in its own thread (``websockets.sync``).  Reported:

* appends per second until every subscriber has received the last one (so the rate includes
  durability, fanout, encoding and N socket writes per transaction);
* the encode-sharing ratio: subscriber update frames / update bodies encoded (from
  ``syncref_encode_cache_hits``), which is N when every update is encoded once and shared;
* the median and p99 latency from the writer's call to a subscriber's receipt.

Run: ``.venv/bin/python benchmarks/wire_fanout.py [--subscribers 1 8 32] [--appends 2000] [--json]``.
Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters import bsatn, wire
from adapters.auth import AuthConfig, Authenticator, KeyStore
from benchmarks._frames import binary
from spec.schema import SCOPES
from spec.values import SyncEvent

STREAM = "bench.s"


def _client(port: int, token: str) -> Any:
    ws = connect(f"ws://127.0.0.1:{port}/v1/database/autopilot-sync/subscribe?token={token}&compression=None",
                 subprotocols=["v2.bsatn.spacetimedb"], max_size=None)  # type: ignore[list-item]
    first = wire.decode_server_frame(binary(ws.recv()), 2)[0]
    assert isinstance(first, wire.InitialConnection)
    return ws


def _metric(port: int, name: str) -> float:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def run(subscribers: int, appends: int, window: int) -> dict[str, Any]:
    import re
    import signal
    import subprocess
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "adapters.cli", "serve", "--data", tmp, "--port", "0"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        port = int(re.search(r":(\d+) ", proc.stdout.readline()).group(1))  # type: ignore[union-attr]
        auth = Authenticator(AuthConfig(), KeyStore.load_or_create(Path(tmp)))
        token = auth.mint(scopes=frozenset(SCOPES), streams=("*",), ttl_s=3600)
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        lock = threading.Lock()
        subs = [_client(port, token) for _ in range(subscribers)]
        for ws in subs:
            query = f"SELECT * FROM sync_event WHERE stream_id = '{STREAM}'"
            ws.send(wire.encode_client(wire.Subscribe(1, 1, (query,))))
            assert isinstance(wire.decode_server_frame(binary(ws.recv()), 2)[0], wire.SubscribeApplied)

        def reader(ws: Any) -> None:
            got = 0
            while got < appends:
                for msg in wire.decode_server_frame(binary(ws.recv()), 2):
                    if isinstance(msg, wire.TransactionUpdate):
                        for row in wire.decode_rows("sync_event", msg.query_sets[0].tables[0].rows[0].inserts):  # type: ignore[union-attr]
                            assert isinstance(row, SyncEvent)
                            with lock:
                                latencies.append(time.perf_counter() - sent_at[row.seq])
                            got += 1

        threads = [threading.Thread(target=reader, args=(ws,)) for ws in subs]
        for t in threads:
            t.start()
        writer = _client(port, token)
        started = time.perf_counter()
        acked = 0
        for i in range(appends):
            with lock:
                sent_at[i + 1] = time.perf_counter()
            writer.send(wire.encode_client(wire.CallReducer(i, 0, "append_sync_event", bsatn.encode_args(
                "append_sync_event", (STREAM, f"k{i}", json.dumps({"i": i, "pad": "x" * 40}), None, i + 1)))))
            while i + 1 - acked >= window:
                for msg in wire.decode_server_frame(writer.recv(), 2):
                    if isinstance(msg, wire.ReducerResult):
                        assert isinstance(msg.outcome, wire.ReducerOk)
                        acked += 1
        while acked < appends:
            for msg in wire.decode_server_frame(writer.recv(), 2):
                if isinstance(msg, wire.ReducerResult):
                    acked += 1
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started

        frames = _metric(port, "syncref_frames_sent_total")
        hits = _metric(port, "syncref_encode_cache_hits_total")
        for ws in [*subs, writer]:
            ws.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        lat = sorted(latencies)
        return {"subscribers": subscribers, "appends": appends, "window": window,
                "appends_per_s": round(appends / elapsed), "seconds": round(elapsed, 2),
                "frames_sent": int(frames), "shared_encodings": int(hits),
                "update_frames_per_encoding": round(subscribers * appends / max(1.0, subscribers * appends - hits), 2),
                "latency_ms_p50": round(statistics.median(lat) * 1000, 2),
                "latency_ms_p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--appends", type=int, default=2000)
    p.add_argument("--window", type=int, default=32, help="calls in flight")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    results = [run(n, args.appends, args.window) for n in args.subscribers]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            print(r)


if __name__ == "__main__":
    main()
