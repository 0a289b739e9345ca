"""Commit throughput with and without group commit, and memory per retained event.

Three measurements (results and method are written up in ``docs/performance.md``):

1. **Store only.**  A fixed list of real :class:`~reference.log.TxRecord` values (stream appends
   produced by the engine beforehand) is written to a fresh data directory with
   :meth:`LogStore.write_batch` in batches of 1 (one record per SQLite COMMIT), 8, 64 and 512.
   This isolates SQLite + fsync + row serialization from the engine.  The variants run in
   interleaved rounds and medians are reported, because a shared disk's fsync latency drifts.
2. **Engine + writer.**  The engine commits appends as fast as it can while the background
   :class:`GroupCommitWriter` writes whatever is queued (``group``), against the same engine
   flushing after every transaction (``per-tx``: one COMMIT per transaction, the durable offset
   known before the next commit).  Reported: transactions per second until the last one is
   durable, COMMITs issued, mean batch size.
3. **Restart and replay.**  The records of (1) in one directory: time to load them
   (:meth:`LogStore.load`), to rebuild the engine (:meth:`Engine.recover`, hash chain included)
   and to re-execute them (:func:`reference.replay.verify_log`).
4. **Memory per retained event.**  ``tracemalloc`` traced bytes of an engine holding N retained
   ``sync_event`` rows minus one holding none (same streams), divided by N, after the engine's
   records have been handed off (the writer does not keep them).

Run: ``.venv/bin/python benchmarks/commit_throughput.py [--records N] [--json]``.  Timings are
wall-clock on whatever machine runs it; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from reference.durability import GroupCommitWriter, LogStore
from reference.engine import Engine
from reference.log import TxRecord
from reference.replay import verify_log
from spec.auth import Claims

WRITER = Claims("a" * 64, frozenset({"sync.append"}), ("*",))


def payload(i: int) -> str:
    return json.dumps({"type": "message", "seq": i, "text": f"hello {i}", "tags": ["a", "b"]})


def append(eng: Engine, i: int) -> None:
    err = eng.admin_call(WRITER, "append_sync_event", (f"stream.{i % 8}", f"key-{i}", payload(i), None, None))
    assert err is None, err


def make_records(n: int) -> list[TxRecord]:
    eng = Engine(max_undurable=n + 1)
    for i in range(n):
        eng.now = 1_000_000 + i
        append(eng, i)
    return eng.take_records()


def store_only(records: list[TxRecord], batch: int, base: Path) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(dir=base))
    store = LogStore.open(d)
    start = time.perf_counter()
    commits = 0
    for k in range(0, len(records), batch):
        store.write_batch(records[k:k + batch])
        commits += 1
    elapsed = time.perf_counter() - start
    store.close()
    return {"batch": batch, "records": len(records), "commits": commits, "seconds": round(elapsed, 3),
            "records_per_s": round(len(records) / elapsed), "commits_per_s": round(commits / elapsed)}


def engine_run(n: int, group: bool, base: Path) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(dir=base))
    store = LogStore.open(d)
    writer = GroupCommitWriter(store, background=group)
    eng = Engine(max_undurable=1024)
    start = time.perf_counter()
    for i in range(n):
        eng.now = 1_000_000 + i
        if group:
            if not eng.can_commit():
                writer.wait_durable(eng.committed - eng.max_undurable + 1)
            eng.advance_durable(writer.durable_offset)
        append(eng, i)
        writer.append(eng.take_records())
        if not group:
            eng.advance_durable(writer.flush())
    eng.advance_durable(writer.flush())
    elapsed = time.perf_counter() - start
    writer.close()
    store.close()
    return {"mode": "group" if group else "per-tx", "transactions": n, "seconds": round(elapsed, 3),
            "tx_per_s": round(n / elapsed), "commits": writer.batches,
            "mean_batch": round(writer.written / max(1, writer.batches), 1)}


def engine_only(n: int) -> dict[str, Any]:
    eng = Engine(max_undurable=n + 1)
    start = time.perf_counter()
    for i in range(n):
        eng.now = 1_000_000 + i
        append(eng, i)
    elapsed = time.perf_counter() - start
    return {"transactions": n, "seconds": round(elapsed, 3), "tx_per_s": round(n / elapsed)}


def restart_cost(records: list[TxRecord], base: Path) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(dir=base))
    store = LogStore.open(d)
    store.write_batch(records)
    store.close()
    store = LogStore.open(d, readonly=True)
    t0 = time.perf_counter()
    loaded, _ = store.load()
    t1 = time.perf_counter()
    Engine.recover(loaded, clean=True, now=0)
    t2 = time.perf_counter()
    store.close()
    report = verify_log(d)
    t3 = time.perf_counter()
    assert report.ok, report
    n = len(records)
    return {"records": n, "load_ms_per_record": round((t1 - t0) / n * 1000, 3),
            "recover_ms_per_record": round((t2 - t1) / n * 1000, 3),
            "verify_log_ms_per_record": round((t3 - t2) / n * 1000, 3)}


def retained_bytes(n: int) -> dict[str, Any]:
    def build(count: int) -> Engine:
        eng = Engine(max_undurable=count + 16)
        for i in range(8):  # the same streams exist in both engines
            append(eng, i)
        for i in range(8, 8 + count):
            eng.now = 1_000_000 + i
            append(eng, i)
        eng.take_records()  # handed to the writer, which drops them once written
        return eng

    results = []
    for count in (0, n):
        gc.collect()
        tracemalloc.start()
        eng = build(count)
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results.append(current)
        assert eng.db.event_count() == count + 8
        del eng
    one = Engine()
    append(one, 0)
    ev = one.db.logs["stream.0"].events[0]
    return {"events": n, "bytes_per_event": round((results[1] - results[0]) / n),
            "payload_chars": len(ev.payload), "sizeof_row": sys.getsizeof(ev),
            "sizeof_fields": {f: sys.getsizeof(getattr(ev, f)) for f in ev.__slots__}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--events", type=int, default=20000, help="retained events for the memory measurement")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to create data directories (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="syncref-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        return report(args, base)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


def _summary(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = sorted(r[key] for r in runs)
    out = dict(runs[0])
    out[key] = round(statistics.median(values))
    out[key + "_range"] = [values[0], values[-1]]
    out["seconds"] = round(statistics.median(r["seconds"] for r in runs), 3)
    return out


def report(args: argparse.Namespace, base: Path) -> int:
    records = make_records(args.records)
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "dir": str(base),
                           "repeat": args.repeat}
    batches = (1, 8, 64, 512)
    store_runs: dict[int, list[dict[str, Any]]] = {b: [] for b in batches}
    engine_runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    engine_alone: list[dict[str, Any]] = []
    n_tx = max(200, args.records // 2)
    for _ in range(args.repeat):  # rounds interleave the variants: the disk's fsync latency drifts
        for b in batches:
            store_runs[b].append(store_only(records, b, base))
        for group in (False, True):
            engine_runs[group].append(engine_run(n_tx, group, base))
        engine_alone.append(engine_only(n_tx))
    out["store_only"] = [_summary(store_runs[b], "records_per_s") for b in batches]
    for row in out["store_only"]:
        row["commits_per_s"] = round(row["commits"] / row["seconds"])
    out["engine_only"] = _summary(engine_alone, "tx_per_s")
    out["engine_writer"] = [_summary(engine_runs[g], "tx_per_s") for g in (False, True)]
    for row, g in zip(out["engine_writer"], (False, True), strict=True):
        row["mean_batch"] = round(statistics.median(r["mean_batch"] for r in engine_runs[g]), 1)
    out["restart"] = restart_cost(records, base)
    out["memory"] = retained_bytes(args.events)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['cpus']} cpus, Python {out['python']}, data under {base}, medians of {args.repeat} rounds")
    print(f"store only (write_batch of {args.records} pre-built append records):")
    for r in out["store_only"]:
        lo, hi = r["records_per_s_range"]
        print(f"  batch {r['batch']:>4}: {r['records_per_s']:>7} records/s ({lo}-{hi}), "
              f"{r['commits_per_s']:>5} COMMITs/s")
    e = out["engine_only"]
    print(f"engine only, no durability ({n_tx} appends): {e['tx_per_s']} tx/s {e['tx_per_s_range']}")
    for r in out["engine_writer"]:
        print(f"engine + writer, {r['mode']:>6}: {r['tx_per_s']:>6} tx/s {r['tx_per_s_range']}, "
              f"mean batch {r['mean_batch']}")
    r = out["restart"]
    print(f"restart of {r['records']} records: load {r['load_ms_per_record']} ms/record, recover "
          f"{r['recover_ms_per_record']} ms/record; verify-log {r['verify_log_ms_per_record']} ms/record")
    m = out["memory"]
    print(f"memory: {m['bytes_per_event']} bytes per retained event ({m['events']} events, "
          f"payload {m['payload_chars']} chars; row object {m['sizeof_row']} bytes; fields {m['sizeof_fields']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
