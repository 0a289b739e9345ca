"""Fairness: one client spamming, another client's append latency, as ratios in one run.

Method (results in ``docs/performance.md``, "Fairness"): ``syncref serve`` runs as its own
process on a fresh data directory (SQLite WAL, synchronous=FULL, group commit, default
``Limits``).  A *bystander* connection (v2, ``compression=None``, confirmed reads) calls
``append_sync_event`` on its own stream one call at a time and times each call from send to its
``ReducerResult``.  First it does so with the server idle; then, for each spam *window* W, a
*spammer* -- a separate process, so it does not share the bystander's interpreter lock -- keeps
W ``append_sync_event`` calls in flight on one connection (a new call for every result), or, in
the ``frames`` mode, sends v3 frames of W tiny ``OneOffQuery`` messages back to back without
reading.  Once the spammer has run for ``--warmup`` seconds the bystander makes ``--samples``
calls.  Reported per window: the bystander's p50 and p99, the ratio of that p99 to the idle p99
(the fairness goal is <= 3), and the spammer's rate meanwhile.  The idle run is repeated at the
end and the larger idle p99 is used (the host's fsync latency drifts; see "Machine and method").

Run: ``.venv/bin/python benchmarks/fairness.py [--windows 1 16 256 1024 4096] [--samples 200] [--json]
[--pythonpath DIR]`` (``--pythonpath`` runs the server from another checkout, e.g. an older
commit extracted with ``git archive``, for before/after figures).  Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters import bsatn, wire  # noqa: E402
from adapters.auth import AuthConfig, Authenticator, KeyStore  # noqa: E402
from benchmarks._frames import binary  # noqa: E402
from spec.schema import SCOPES  # noqa: E402


def connect_v(port: int, token: str, version: int = 2) -> Any:
    ws = connect(f"ws://127.0.0.1:{port}/v1/database/autopilot-sync/subscribe?token={token}&compression=None",
                 subprotocols=[f"v{version}.bsatn.spacetimedb"], max_size=None,  # type: ignore[list-item]
                 open_timeout=30)
    first = wire.decode_server_frame(binary(ws.recv()), version)[0]
    assert isinstance(first, wire.InitialConnection)
    return ws


def append(rid: int, stream: str, key: str) -> bytes:
    return wire.encode_client(wire.CallReducer(rid, 0, "append_sync_event", bsatn.encode_args(
        "append_sync_event", (stream, key, '{"n":1}', None, None))))


class Bystander:
    """One connection that appends to its own stream, one call at a time, timing each call."""

    def __init__(self, port: int, token: str, tag: str, timeout: float = 60.0) -> None:
        self.port, self.token = port, token
        self.ws = connect_v(port, token)
        self.tag = tag
        self.rid = 0
        self.timeout = timeout

    def calls(self, n: int, until: float = float("inf")) -> list[float]:
        out = []
        for _ in range(n):
            if time.monotonic() > until:
                break
            self.rid += 1
            started = time.perf_counter()
            self.ws.send(append(self.rid, f"bench.by.{self.tag}", f"k{self.rid}"))
            try:
                while True:
                    msgs = wire.decode_server_frame(self.ws.recv(timeout=self.timeout), 2)
                    if any(isinstance(x, wire.ReducerResult) and x.request_id == self.rid for x in msgs):
                        break
            except TimeoutError:  # starved: count the timeout, go on with a fresh connection
                out.append(self.timeout)
                self.ws.close()
                self.ws = connect_v(self.port, self.token)
                continue
            out.append(time.perf_counter() - started)
        return out

    def served_meanwhile(self, port: int, n: int) -> list[float]:
        """Client messages the server handled while each of ``n`` calls was in flight (its own
        included): how far back in line the bystander was, whatever the host's speed."""
        out = []
        for _ in range(n):
            before = handled(port)
            self.calls(1)
            out.append(handled(port) - before)
        return out

    def close(self) -> None:
        self.ws.close()


def spam(port: int, token: str, window: int, mode: str) -> None:
    """The spammer process: keep ``window`` calls in flight (or send frames of ``window`` one-off
    queries back to back, reading the replies on a thread) while running; ``p`` on stdin pauses
    it (in-flight calls finish, nothing new is sent), ``r`` resumes it, end of input stops it."""
    running = threading.Event()
    running.set()
    stopped = threading.Event()

    def control() -> None:
        for line in sys.stdin:
            if line.strip() == "p":
                running.clear()
            elif line.strip() == "r":
                running.set()
        stopped.set()
        running.set()

    threading.Thread(target=control, daemon=True).start()
    while not stopped.is_set():  # a connection the server closes (e.g. 1013) is simply opened again
        try:
            (spam_frames if mode == "frames" else spam_calls)(port, token, window, running, stopped)
        except Exception:
            time.sleep(0.05)


def spam_frames(port: int, token: str, window: int, running: threading.Event, stopped: threading.Event) -> None:
    ws = connect_v(port, token, version=3)
    frame = b"".join(wire.encode_client(wire.OneOffQuery(i, "SELECT * FROM sync_stream WHERE stream_id = 'x'"))
                     for i in range(window))
    closed = threading.Event()

    def drain() -> None:  # read replies so the server is not blocked on us (that is a different attack)
        while not stopped.is_set():
            try:
                ws.recv(timeout=1)
            except TimeoutError:
                continue
            except Exception:
                closed.set()
                return

    threading.Thread(target=drain, daemon=True).start()
    while not stopped.is_set() and not closed.is_set():
        running.wait()
        ws.send(frame)


def spam_calls(port: int, token: str, window: int, running: threading.Event, stopped: threading.Event) -> None:
    ws = connect_v(port, token)
    rid = 0
    inflight = 0
    while not stopped.is_set():
        while inflight < window and running.is_set():
            rid += 1
            ws.send(append(rid, "bench.spam", f"s{time.time_ns()}.{rid}"))
            inflight += 1
        try:
            frame_in = ws.recv(timeout=0.05)
        except TimeoutError:
            continue
        inflight -= sum(isinstance(x, wire.ReducerResult) for x in wire.decode_server_frame(frame_in, 2))


def handled(port: int) -> float:
    """Client messages the server has handled so far (``syncref_client_messages_total``)."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        return sum(float(line.split()[-1]) for line in resp.read().decode().splitlines()
                   if line.startswith("syncref_client_messages_total{"))


def quiesce(port: int, limit_s: float = 20.0) -> None:
    """Wait until the server has handled everything a stopped spammer had sent."""
    deadline = time.monotonic() + limit_s
    last = handled(port)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = handled(port)
        if now == last:
            return
        last = now


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 16, 256, 1024, 4096])
    parser.add_argument("--modes", nargs="+", default=["calls", "frames"], choices=["calls", "frames"])
    parser.add_argument("--samples", type=int, default=400, help="bystander calls per window, each condition")
    parser.add_argument("--rounds", type=int, default=8, help="alternations of spam and idle per window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=0.3, help="pause after stopping/resuming the spammer")
    parser.add_argument("--probes", type=int, default=40, help="calls timed by messages served meanwhile")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of spam sampling per window at most")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pythonpath", default=None, help="run the server from this checkout")
    parser.add_argument("--config", default=None, help="a TOML config for the server (e.g. other [limits])")
    parser.add_argument("--spam", nargs=4, metavar=("PORT", "TOKEN", "WINDOW", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spam:
        port, token, window, mode = args.spam
        spam(int(port), token, int(window), mode)
        return 0
    data = Path(tempfile.mkdtemp(prefix="syncref-fair-"))
    env = dict(os.environ)
    env.pop("ICONTRACT_SLOW", None)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    extra = ["--config", str(Path(args.config).resolve())] if args.config else []
    server = subprocess.Popen([sys.executable, "-m", "adapters.cli", "serve", "--data", str(data), "--port", "0",
                               *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                              cwd=args.pythonpath or ROOT)
    assert server.stdout is not None
    line = server.stdout.readline()
    port = int(line.split("http://127.0.0.1:")[1].split()[0])
    auth = Authenticator(AuthConfig(), KeyStore.load_or_create(data))
    by_token = auth.mint(scopes=SCOPES, streams=("*",), ttl_s=3600)
    spam_token = auth.mint(scopes=SCOPES, streams=("*",), ttl_s=3600)
    runs: list[dict[str, Any]] = []
    idle_all: list[float] = []
    try:
        by = Bystander(port, by_token, "b")
        by.calls(20)  # warm up: the stream exists, the connection is hot
        for mode in args.modes:
            for window in args.windows:
                spammer = subprocess.Popen([sys.executable, __file__, "--spam", str(port), spam_token, str(window),
                                            mode], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, text=True)
                assert spammer.stdin is not None
                time.sleep(args.warmup)
                idle: list[float] = []
                busy: list[float] = []
                until = time.monotonic() + args.budget  # a starved bystander ends the window's sampling early
                for _ in range(args.rounds):
                    busy += by.calls(args.samples // args.rounds, until)
                    spammer.stdin.write("p\n")
                    spammer.stdin.flush()
                    quiesce(port)  # what it already sent is handled: the server is idle again
                    idle += by.calls(args.samples // args.rounds)
                    spammer.stdin.write("r\n")
                    spammer.stdin.flush()
                    time.sleep(args.settle)
                served = by.served_meanwhile(port, args.probes if time.monotonic() < until else 3)
                spammer.stdin.close()
                spammer.kill()
                spammer.wait()
                idle_all += idle
                runs.append({"mode": mode, "window": window, "busy_samples": len(busy),
                             "idle_p50_ms": pct(idle, 0.5) * 1e3,
                             "idle_p99_ms": pct(idle, 0.99) * 1e3, "p50_ms": pct(busy, 0.5) * 1e3,
                             "p99_ms": pct(busy, 0.99) * 1e3, "max_ms": max(busy) * 1e3,
                             "ratio_p99": pct(busy, 0.99) / pct(idle, 0.99),
                             "served_p50": pct(served, 0.5), "served_max": max(served)})
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
                time.sleep(args.settle)
        by.close()
        summary = {"idle_p50_ms": statistics.median(idle_all) * 1e3, "idle_p99_ms": pct(idle_all, 0.99) * 1e3,
                   "samples": args.samples, "rounds": args.rounds, "runs": runs}
    finally:
        server.terminate()
        server.wait(60)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"idle over all runs: p50 {summary['idle_p50_ms']:.1f} ms, p99 {summary['idle_p99_ms']:.1f} ms")
        print(f"{'mode':<8}{'window':>8}{'idle p50':>10}{'idle p99':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
              f"{'p99/idle':>10}{'served p50':>12}{'served max':>12}")
        for r in runs:
            print(f"{r['mode']:<8}{r['window']:>8}{r['idle_p50_ms']:>10.1f}{r['idle_p99_ms']:>10.1f}{r['p50_ms']:>10.1f}"
                  f"{r['p99_ms']:>10.1f}{r['max_ms']:>10.1f}{r['ratio_p99']:>10.2f}{r['served_p50']:>12.0f}"
                  f"{r['served_max']:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
