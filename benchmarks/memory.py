"""Memory per retained ``sync_event``, in process, and where the bytes go (issue 10).

    .venv/bin/python benchmarks/memory.py [--events N] [--baseline SRC] [--json]

Drives an :class:`~reference.engine.Engine` the way the bench's memory workload drives a server
(``adapters/bench``: 10 streams that already exist, then ``N`` appends of a 150 B canonical
payload ``{"i":i,"pad":"xx..."}`` with keys ``<8 hex>-<client>-<i>``, one event per transaction),
taking the commit records as the group-commit writer does (it drops them once written).  Then:

* **traced bytes per event**: ``tracemalloc``'s traced memory after the appends minus before,
  over ``N`` (everything the engine allocated and kept: tables, indexes, the event store);
* **the breakdown**: every object reachable from the engine's per-stream event stores
  (``Db.logs``), sized with ``sys.getsizeof`` and each object counted once (shared strings and
  ints are charged to the first part that reaches them), grouped by the part that holds it --
  for per-event row objects, by the row's field.  Containers are charged their own size (list
  slots, dict tables, array buffers); the parts sum to the reachable total.

``--baseline SRC`` runs the same measurement with another build's sources (``git archive
<commit> reference spec adapters | tar -x -C SRC``) in a subprocess, so before/after come from one
run.  Byte counts do not depend on the machine's load.  No pass/fail: figures for
docs/performance.md ("Memory per retained event").
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tracemalloc
import uuid
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

STREAMS = 10
PAYLOAD_SIZE = 150


def _payload(i: int) -> str:  # adapters.bench.client.payload, without importing the bench
    bare = f'{{"i":{i},"pad":""}}'
    return f'{{"i":{i},"pad":"{"x" * max(0, PAYLOAD_SIZE - len(bare))}"}}'


def _deep(obj: object, seen: set[int]) -> int:
    """Bytes of ``obj`` and everything it reaches that is not in ``seen`` (which it extends)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep(k, seen) + _deep(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(_deep(v, seen) for v in obj)
    elif isinstance(obj, str | bytes | bytearray | int | float | array) or obj is None:
        pass
    else:
        for name in _slot_names(obj):
            if hasattr(obj, name):
                size += _deep(getattr(obj, name), seen)
        if hasattr(obj, "__dict__"):
            size += _deep(vars(obj), seen)
    return size


def _slot_names(obj: object) -> list[str]:
    names: list[str] = []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return names


def breakdown(logs: dict[str, Any]) -> dict[str, int]:
    """Bytes reachable from the per-stream event stores, by the part that holds them."""
    from spec.values import SyncEvent

    seen: set[int] = set()
    parts: Counter[str] = Counter()
    parts["Db.logs dict"] += sys.getsizeof(logs)
    seen.add(id(logs))
    for sid, log in logs.items():
        parts["stream id keys"] += _deep(sid, seen)
        if id(log) in seen:
            continue
        seen.add(id(log))
        parts["StreamLog object"] += sys.getsizeof(log)
        for name in _slot_names(log):
            if not hasattr(log, name):
                continue
            value = getattr(log, name)
            if isinstance(value, list) and value and isinstance(value[0], SyncEvent):
                parts[f"{name} (list)"] += sys.getsizeof(value)
                seen.add(id(value))
                for ev in value:
                    if id(ev) in seen:
                        continue
                    seen.add(id(ev))
                    parts["SyncEvent object"] += sys.getsizeof(ev)
                    for f in ev.__slots__:
                        parts[f"SyncEvent.{f}"] += _deep(getattr(ev, f), seen)
            elif isinstance(value, dict):
                parts[f"{name} (dict table)"] += sys.getsizeof(value)
                seen.add(id(value))
                for k, v in value.items():
                    parts[f"{name} keys"] += _deep(k, seen)
                    parts[f"{name} values"] += _deep(v, seen)
            else:
                parts[name] += _deep(value, seen)
    return dict(parts)


def measure(events: int) -> dict[str, Any]:
    from reference.engine import Engine
    from spec.auth import Claims

    writer = Claims("b" * 64, frozenset({"sync.append"}), ("*",))
    prefix = uuid.uuid4().hex[:8]
    streams = [f"mem-{prefix}-{i}" for i in range(STREAMS)]

    def append(eng: Engine, i: int) -> None:
        c = i % STREAMS
        eng.now = 1_700_000_000_000_000 + i
        err = eng.admin_call(writer, "append_sync_event", (streams[c], f"{prefix}-{c}-{i}", _payload(i), None, None))
        assert err is None, err
        if len(eng.pending_records) >= 1000:
            drain(eng)

    def drain(eng: Engine) -> None:
        records = eng.take_records()
        if records:
            eng.advance_durable(records[-1].offset)

    gc.collect()
    tracemalloc.start()
    eng = Engine(max_undurable=2000)
    for i in range(STREAMS):  # the streams exist; only events are counted
        append(eng, i)
    drain(eng)
    gc.collect()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(STREAMS, STREAMS + events):
        append(eng, i)
    drain(eng)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert eng.db.event_count() == events + STREAMS
    parts = breakdown(eng.db.logs)
    total = sum(parts.values())
    n = events + STREAMS
    return {"events": events, "payload_bytes": PAYLOAD_SIZE, "traced_bytes_per_event": (after - before) / events,
            "reachable_bytes_per_event": total / n,
            "parts_per_event": {k: round(v / n, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--baseline", type=Path, default=None, help="another build's source root, measured alongside")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.events)))
        return 0
    here = Path(__file__).resolve()
    runs = {"this build": here.parents[1]}
    if args.baseline is not None:
        runs = {"baseline": args.baseline.resolve(), **runs}
    results = {}
    for label, src in runs.items():
        env = {**os.environ, "PYTHONPATH": str(src)}
        env.pop("SYNCREF_CONTRACTS", None)
        env.pop("ICONTRACT_SLOW", None)
        out = subprocess.run([sys.executable, str(here), "--events", str(args.events), "--measure-only"],
                             capture_output=True, text=True, check=True, env=env, cwd=src)
        results[label] = json.loads(out.stdout)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for label, res in results.items():
        print(f"{label}: {res['events']} events of {res['payload_bytes']} B: "
              f"traced {res['traced_bytes_per_event']:.0f} B/event, reachable from Db.logs "
              f"{res['reachable_bytes_per_event']:.0f} B/event")
        for part, b in res["parts_per_event"].items():
            print(f"    {part:32s} {b:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
