"""Restart and verify-log time per record, with and without snapshots (ADR-0011, issues 10 and 13).

    .venv/bin/python benchmarks/restart.py [--records N] [--tail T] [--repeat R] [--dir DIR] [--json]

Builds a data directory of ``N`` transactions as the bench's restart workload does (appends of a
150 B payload over 10 streams; plus stream creation), through the engine and the group-commit
writer, with a snapshot at ``N - T`` (``T`` defaults to ``N // 10``: a restart then applies a
tenth of the log after the snapshot; ``snapshot_every`` bounds the tail in a server).  Then, in
``R`` interleaved rounds, each a fresh subprocess so nothing is warm but the page cache:

* ``restart (whole log)``: ``LogStore.open`` + ``restart(..., snapshots=False)``;
* ``restart (snapshot + tail)``: the same with snapshots (load the image, check its binding,
  apply the ``T`` records after it);
* ``verify-log``: :func:`reference.replay.verify_log` (replay from zero, and the snapshot compared
  with the replayed state at its offset).

With ``--baseline SRC`` (a directory holding another build's ``reference/``, ``spec/`` and
``adapters/``, e.g. ``git archive <commit> reference spec adapters | tar -x -C SRC``), each round
also times that build's ``restart`` and ``verify_log`` on the same directory (``PYTHONPATH=SRC``):
before/after ratios from the same run.

A clean shutdown after each restart keeps the directory identical between rounds.  Reports the
median and range of each, per record of the log.  No pass/fail: figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference import snapshot  # noqa: E402
from reference.durability import GroupCommitWriter, LogStore, restart, shutdown  # noqa: E402
from spec.auth import Claims  # noqa: E402

WRITER = Claims("b" * 64, frozenset({"sync.append", "sync.admin"}), ("*",))
STREAMS = 10
PAYLOAD = json.dumps({"pad": "x" * 138})  # 150 B


def build(data: Path, records: int, tail: int) -> None:
    store = LogStore.open(data)
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, 1_000_000, max_undurable=1 << 30)
    i = 0
    while eng.committed < records:
        i += 1
        eng.now += 1000
        eng.admin_call(WRITER, "append_sync_event", (f"bench.{i % STREAMS}", f"k{i}", PAYLOAD, None, None))
        if eng.committed == records - tail:
            snapshot.write(data / snapshot.SNAPSHOT_DIR, snapshot.capture(eng.db, eng.committed, eng.head_hash))
        if len(eng.pending_records) >= 2000:
            writer.append(eng.take_records())
            eng.advance_durable(writer.flush())
    shutdown(eng, writer, store)


def measure(data: Path, what: str) -> float:
    from reference.replay import verify_log

    started = time.perf_counter()
    if what == "verify":
        report = verify_log(data)
        assert report.ok and all(c.status == "match" for c in report.snapshots), report
    else:
        store = LogStore.open(data)
        writer = GroupCommitWriter(store)
        eng = restart(store, writer, 2_000_000_000_000, snapshots=what == "snapshot")
        elapsed = time.perf_counter() - started
        assert store.recovery is not None and (store.recovery.snapshot_offset > 0) == (what == "snapshot")
        shutdown(eng, writer, store)
        return elapsed
    return time.perf_counter() - started


BASELINE = """
import sys, time
what, data = sys.argv[1], sys.argv[2]
from reference.durability import GroupCommitWriter, LogStore, restart, shutdown
from reference.replay import verify_log
t = time.perf_counter()
if what == "verify":
    assert verify_log(data).ok
    print(time.perf_counter() - t)
else:
    store = LogStore.open(data)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, 2_000_000_000_000)
    print(time.perf_counter() - t)
    shutdown(eng, writer, store)
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--tail", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="reuse (or build once into) this data directory")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--baseline", type=Path, default=None, help="another build's source root, timed alongside")
    ap.add_argument("--only", default="full,snapshot,verify", help="what to time (comma-separated)")
    ap.add_argument("--measure", choices=("full", "snapshot", "verify"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(measure(args.dir, args.measure))
        return 0
    tail = args.records // 10 if args.tail is None else args.tail
    data = args.dir or Path(tempfile.mkdtemp(prefix="syncref-restart-")) / "data"
    if not (data / "syncref.sqlite3").exists():
        t0 = time.perf_counter()
        build(data, args.records, tail)
        print(f"built {args.records} records in {time.perf_counter() - t0:.0f} s: {data}", file=sys.stderr)
    store = LogStore.open(data, readonly=True)
    records = store.count()
    store.close()
    times: dict[str, list[float]] = {k: [] for k in args.only.split(",")}
    if args.baseline is not None:
        times.update({"base_full": [], "base_verify": []})
    for _ in range(args.repeat):
        for what in times:
            if what.startswith("base_"):
                cmd = [sys.executable, "-c", BASELINE, what.removeprefix("base_"), str(data)]
                env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env,
                                     cwd=args.baseline)
            else:
                out = subprocess.run([sys.executable, __file__, "--dir", str(data), "--measure", what],
                                     capture_output=True, text=True, check=True)
            times[what].append(float(out.stdout))
    result = {"records": records, "tail": tail,
              **{k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v),
                     "us_per_record": statistics.median(v) / records * 1e6} for k, v in times.items()}}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        names = {"full": "restart (whole log)", "snapshot": f"restart (snapshot + {tail} tail)",
                 "verify": "verify-log (replay + snapshot parity)", "base_full": "baseline: restart (whole log)",
                 "base_verify": "baseline: verify-log"}
        for k, label in names.items():
            if k not in result:
                continue
            r = result[k]
            assert isinstance(r, dict)
            print(f"{label:42s} {r['median_s']:8.2f} s [{r['min_s']:.2f}-{r['max_s']:.2f}]  "
                  f"{r['us_per_record']:7.1f} µs/record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
