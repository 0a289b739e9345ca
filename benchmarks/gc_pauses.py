"""The cyclic GC's pauses in a real ``syncref serve`` as its heap grows, and what connection churn
leaves frozen, per ``[server] gc_freeze`` policy (ADR-0036; docs/performance.md "GC pauses (ninth
session)").

Method: each round starts a fresh ``syncref serve --dev`` (its own data directory, the policy in a
config file, ``--loop`` as asked) through a wrapper that adds one ``gc.callbacks`` hook timing every
collection (``perf_counter``) and writes them as JSON at exit.  Then, over the wire:

1. **grow**: ``SUBS`` WebSocket subscribers of stream ``s`` (threads that take frames without
   decoding them) and one writer that pipelines ``EVENTS`` ``append_sync_event`` calls (256 in
   flight), each event ~100 B of payload;
2. **churn**: ``CYCLES`` connect / subscribe / append / disconnect cycles, ``OPEN`` connections
   open at a time (a rolling window), while another writer appends ``CHURN_EVENTS`` events to a
   stream nobody subscribes to (so full collections happen meanwhile), so a full collection finds
   some alive: the leak case of the ``survivors`` policy.  Full collections are rare here on
   their own (3.11 runs one when the objects promoted since the last outnumber a quarter of the
   heap), so from the churn's start the wrapper also runs one every ``GC_FORCE_S`` (0.5 s) on a
   thread of its own (SIGUSR2); the churn phase's pauses are therefore not the server's own.
   ``syncref_gc_frozen_objects`` and the
   server's RSS are read before and after;
3. **audit**: SIGUSR1 makes the wrapper unfreeze everything and run one full collection: the
   unreachable objects it finds are the cyclic garbage the policy kept (frozen) plus what the
   collector had not reached yet; its pause is a whole-heap pass.

The rounds alternate policies (A/B/A/B...).  Nothing asserts.  Run:
``.venv/bin/python benchmarks/gc_pauses.py [--events 100000] [--cycles 2000] [--rounds 2]
[--policies survivors start] [--loop uvloop]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from websockets.sync.client import ClientConnection, connect  # noqa: E402

from adapters import bsatn, wire  # noqa: E402

WRAPPER = r"""
import atexit, gc, json, os, sys, time
pauses = []
state = {}
def hook(phase, info):
    if phase == "start":
        state["t"] = time.perf_counter()
        state["c"] = time.thread_time()
    else:
        pauses.append((info["generation"], time.perf_counter() - state["t"], time.thread_time() - state["c"],
                       info["collected"], time.time()))
gc.callbacks.append(hook)
def dump():
    with open(os.environ["GC_LOG"], "w") as f:
        json.dump({"pauses": pauses, "frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}, f)
atexit.register(dump)
import signal
def audit(signum, frame):
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    t, c = time.perf_counter(), time.thread_time()
    found = gc.collect()
    state["audit"] = {"frozen_before": frozen, "unreachable": found, "wall_ms": (time.perf_counter() - t) * 1000,
                      "cpu_ms": (time.thread_time() - c) * 1000,
                      "tracked_after": len(gc.get_objects()) + gc.get_freeze_count()}
    with open(os.environ["GC_LOG"] + ".audit", "w") as f:
        json.dump(state["audit"], f)
signal.signal(signal.SIGUSR1, audit)
def force(signum, frame):  # from now on a full collection every GC_FORCE_S, on a thread of its own
    import threading
    def run():
        while True:
            time.sleep(float(os.environ.get("GC_FORCE_S", "0.5")))
            gc.collect()
    threading.Thread(target=run, daemon=True).start()
signal.signal(signal.SIGUSR2, force)
from adapters.cli import main
sys.argv[0] = "syncref"
sys.exit(main())
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def ws(base: str) -> ClientConnection:
    url = base.replace("http://", "ws://") + "/v1/database/autopilot-sync/subscribe?compression=None"
    conn = connect(url, subprotocols=["v2.bsatn.spacetimedb"], open_timeout=30,  # type: ignore[list-item]
                   max_size=64 * 1024 * 1024)
    conn.recv(timeout=30)  # InitialConnection
    return conn


def subscribe(conn: ClientConnection, rid: int, stream: str) -> None:
    conn.send(wire.encode_client(wire.Subscribe(rid, rid, (f"SELECT * FROM sync_event WHERE stream_id = '{stream}'",))))
    conn.recv(timeout=30)


def call(rid: int, stream: str, key: str) -> bytes:
    args = bsatn.encode_args("append_sync_event", (stream, key, json.dumps({"n": rid, "pad": "x" * 80}), None, None))
    return wire.encode_client(wire.CallReducer(rid, 0, "append_sync_event", args))


def results(frame: Any) -> int:
    assert isinstance(frame, bytes)
    return sum(isinstance(m, wire.ReducerResult) for m in wire.decode_server_frame(frame, 2))


def grow(base: str, events: int, subs: int, stream: str = "s") -> float:
    stop = threading.Event()
    readers = []
    conns = []
    for i in range(subs):
        c = ws(base)
        subscribe(c, 1 + i, stream)
        conns.append(c)

        def drain(c: ClientConnection = c) -> None:
            while not stop.is_set():
                try:
                    c.recv(timeout=0.5)
                except TimeoutError:
                    continue
                except Exception:
                    return
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        readers.append(t)
    writer = ws(base)
    t0 = time.monotonic()
    sent = answered = 0
    while answered < events:
        while sent < events and sent - answered < 256:
            writer.send(call(10 + sent, stream, f"k{sent}"))
            sent += 1
        answered += results(writer.recv(timeout=60))
    took = time.monotonic() - t0
    stop.set()
    writer.close()
    for c in conns:
        c.close()
    for t in readers:
        t.join(5)
    return took


def churn(base: str, cycles: int, open_at_once: int) -> float:
    t0 = time.monotonic()
    window: list[ClientConnection] = []
    for i in range(cycles):
        c = ws(base)
        subscribe(c, 1, f"c{i % 50}")
        c.send(call(2, f"c{i % 50}", f"c{i}"))
        while not results(c.recv(timeout=30)):
            pass
        window.append(c)
        if len(window) > open_at_once:
            window.pop(0).close()
    for c in window:
        c.close()
    return time.monotonic() - t0


def round_(policy: str, loop: str, events: int, cycles: int, subs: int, open_at_once: int,
           churn_events: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="syncref-gcp-"))
    cfg = tmp / "cfg.toml"
    cfg.write_text(f'[server]\ngc_freeze = "{policy}"\n')
    log = tmp / "gc.json"
    env = dict(os.environ, GC_LOG=str(log), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "serve", "--data", str(tmp / "data"), "--port", "0",
                             "--dev", "--loop", loop, "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    m = re.match(r"syncref listening on (http://\S+)", proc.stdout.readline())
    assert m, "serve did not start"
    base = m.group(1)
    cpu0 = _cpu(proc.pid)
    t_grow = time.time()
    grow_s = grow(base, events, subs)
    after_grow = (metric(base, "syncref_gc_frozen_objects"), rss(proc.pid))
    t_churn = time.time()
    proc.send_signal(signal.SIGUSR2)  # forced full collections while churned connections are open
    urllib.request.urlopen(f"{base}/v1/ping", timeout=30).read()  # wakes the loop: the handler runs
    background = threading.Thread(target=grow, args=(base, churn_events, 0, "t"), daemon=True)
    background.start()  # appends meanwhile: full collections happen while churned connections are open
    churn_s = churn(base, cycles, open_at_once)
    background.join()
    time.sleep(0.5)
    t_end = time.time()
    after_churn = (metric(base, "syncref_gc_frozen_objects"), rss(proc.pid), metric(base, "syncref_gc_thaws_total"))
    cpu = _cpu(proc.pid) - cpu0
    proc.send_signal(signal.SIGUSR1)
    audit = Path(str(log) + ".audit")
    deadline = time.monotonic() + 60
    while not audit.exists() and time.monotonic() < deadline:
        urllib.request.urlopen(f"{base}/v1/ping", timeout=30).read()  # wakes the loop: the handler runs
        time.sleep(0.2)
    time.sleep(0.2)
    proc.terminate()
    proc.wait(60)
    data = json.loads(log.read_text())
    out: dict[str, Any] = {"policy": policy, "loop": loop, "grow_s": round(grow_s, 1), "churn_s": round(churn_s, 1),
                           "server_cpu_s": round(cpu, 1)}
    for phase, lo, hi in (("grow", t_grow, t_churn), ("churn", t_churn, t_end)):
        # (wall ms, CPU ms of the collecting thread) per collection of the phase; the start-up
        # collection of gcpolicy.apply() is before t_grow and left out
        full = [(w * 1000, c * 1000) for gen, w, c, _, at in data["pauses"] if gen == 2 and lo <= at < hi]
        young = [(w * 1000, c * 1000) for gen, w, c, _, at in data["pauses"] if gen < 2 and lo <= at < hi]
        out[phase] = {
            "full": len(full),
            "full_cpu_ms": _summary([c for _, c in full]), "full_wall_ms_max": round(max((w for w, _ in full),
                                                                                         default=0), 1),
            "full_cpu_ms_each": [round(c, 1) for _, c in full],
            "young": len(young), "young_cpu_ms": _summary([c for _, c in young]),
            "young_wall_ms_max": round(max((w for w, _ in young), default=0), 1)}
    return {**out,
            "frozen_after_grow": int(after_grow[0]), "frozen_after_churn": int(after_churn[0]),
            "rss_mib_after_grow": round(after_grow[1] / 2**20, 1),
            "rss_mib_after_churn": round(after_churn[1] / 2**20, 1), "thaws": int(after_churn[2]),
            "tracked_at_exit": data["tracked"],
            "audit": json.loads(audit.read_text()) if audit.exists() else None}


def _summary(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"total {sum(xs):.1f}, p50 {statistics.median(xs):.1f}, max {max(xs):.1f}"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--subs", type=int, default=4)
    ap.add_argument("--open", type=int, default=50)
    ap.add_argument("--churn-events", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--loop", default="uvloop")
    ap.add_argument("--policies", nargs="*", default=["survivors", "start"])
    opts = ap.parse_args()
    for r in range(opts.rounds):
        for policy in opts.policies:
            out = round_(policy, opts.loop, opts.events, opts.cycles, opts.subs, opts.open, opts.churn_events)
            out["round"] = r
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
