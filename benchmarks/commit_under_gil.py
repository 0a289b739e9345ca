"""A COMMIT's latency while another thread runs Python: the group-commit writer behind a busy loop.

The server's commit-log writer is a thread; the event loop holds the interpreter lock whenever it
runs Python (a delivery pass over 100 subscribers is ~1.5 ms of it).  The writer releases the
lock in its fsync and must take it back when the fsync returns (and when it is woken), and
behind a busy thread that waits up to the switch interval.  Two measurements, each with a
second thread spinning in pure Python (``busy``, the loop in a long pass) or not (``idle``), for
switch intervals of 0.5 ms (the server's old ``SWITCH_INTERVAL_S``) and 0.1 ms (phase 6):

* ``retake``: a 2 ms blocking call without the lock (``time.sleep``, a stand-in for the fsync
  that no disk noise blurs): how late, beyond the 2 ms, the thread runs Python again;
* ``commit``: :meth:`LogStore.write_batch` of one record (the fanout's usual batch at 500
  events/s) on a fresh data directory: the real COMMIT, fsync included.

Variants run interleaved, in rounds; medians and 90th percentiles are printed (a shared disk's
fsync drifts: compare within a run).  Run: ``.venv/bin/python benchmarks/commit_under_gil.py
[--commits N] [--rounds R]``.  Nothing asserts on timings; docs/performance.md ("Phase 6").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from reference.durability import LogStore
from reference.engine import Engine
from reference.log import TxRecord
from spec.auth import Claims

INTERVALS = (0.0005, 0.0001)  # the server's old and new SWITCH_INTERVAL_S
CALLER = Claims("b" * 64, frozenset({"sync.append"}), ("*",))


def records(n: int) -> list[TxRecord]:
    eng = Engine(max_undurable=n + 10)
    for i in range(n):
        eng.admin_call(CALLER, "append_sync_event", ("s", f"k{i}", '{"p": 1}', None, None))
    return eng.take_records()


def spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(200):
            x += i * i


def one(recs: list[TxRecord], what: str, busy: bool) -> list[float]:
    tmp = Path(tempfile.mkdtemp(prefix="commit-gil-"))
    store = LogStore.open(tmp)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(stop,), daemon=True)
    if busy:
        spinner.start()
    times: list[float] = []

    def writer() -> None:
        for rec in recs:
            t = time.perf_counter()
            if what == "commit":
                store.write_batch([rec])
                times.append(time.perf_counter() - t)
            else:
                time.sleep(0.002)
                times.append(time.perf_counter() - t - 0.002)
            time.sleep(0.001)

    try:
        w = threading.Thread(target=writer)
        w.start()
        w.join()
    finally:
        stop.set()
        if busy:
            spinner.join()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    recs = records(args.commits)
    out: dict[tuple[str, str, float], list[float]] = {}
    before = sys.getswitchinterval()
    try:
        for _ in range(args.rounds):
            for what in ("retake", "commit"):
                for busy in (True, False):
                    for interval in INTERVALS:
                        sys.setswitchinterval(interval)
                        out.setdefault((what, "busy" if busy else "idle", interval), []).extend(
                            one(recs, what, busy))
    finally:
        sys.setswitchinterval(before)
    print(f"{'what':7s} {'loop':5s} {'interval ms':>11s} {'n':>6s} {'p50 ms':>8s} {'p90 ms':>8s} {'mean ms':>8s}")
    for (what, loop, interval), ts in out.items():
        ts.sort()
        print(f"{what:7s} {loop:5s} {interval * 1e3:11.2f} {len(ts):6d} {statistics.median(ts) * 1e3:8.3f} "
              f"{ts[int(len(ts) * 0.9)] * 1e3:8.3f} {statistics.fmean(ts) * 1e3:8.3f}")


if __name__ == "__main__":
    main()
