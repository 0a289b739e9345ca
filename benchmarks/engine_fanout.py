"""The engine's fanout per delivery, in-process: µs of ``Engine`` CPU per subscriber per append.

Method (results in ``docs/performance.md``, "Phase 8"): one ``Engine`` with the server's limits and
its size estimate (``wire.message_size_bound``), hot-path contracts off (as ``syncref serve`` runs),
N confirmed subscribers each with one query set ``SELECT * FROM sync_event WHERE stream_id = 'fan'``
(the bench's fanout subscribers) and one writer appending 150-byte payloads to that stream.  A
round is ``BATCH`` appends (``Engine.handle`` of ``append_sync_event``: the reducer, the record and
the fanout), then the durable offset moved to the last commit and every subscriber's queue taken
by ``Engine.take`` as the delivery pass takes a turn.  The same round with no subscriber gives the
append's own cost; per delivery = (round with N - round with 0) / (N x BATCH), so it holds the
fanout's per-subscriber work and the ``take`` of it.  Best of ``--rounds`` rounds, the garbage
collector off while timed; rounds of the two sizes alternate so drift hits both.

``--base DIR`` also runs the same script against the tree in DIR (``git archive`` of main:
``reference spec adapters``) in a subprocess with ``PYTHONPATH=DIR``, alternating with this tree
``--repeats`` times in the same minutes, and prints both and their ratio.  Nothing asserts on timings.

Run: ``.venv/bin/python -m benchmarks.engine_fanout [--subs 10 100 500] [--base /tmp/fan-base]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = 1_796_000_000_000_000
BATCH = 20
QUERY = "SELECT * FROM sync_event WHERE stream_id = 'fan'"


def _engine(subs: int) -> tuple[object, int, list[int]]:
    from adapters import wire
    from reference.engine import Engine
    from spec.auth import Claims
    from spec.messages import Subscribe
    from spec.schema import SCOPES

    eng = Engine(max_queue=16384, max_undurable=1 << 20)
    eng.max_outbound_bytes = 64 << 20
    eng.max_outbound_message_bytes = 32 << 20
    sizes = wire.RowSizes()
    eng.measure = lambda message: wire.message_size_bound(message, sizes)
    writer = eng.connect(Claims("f" * 64, frozenset(SCOPES), ("*",)), confirmed=True)
    readers = []
    for i in range(subs):
        c = eng.connect(Claims(f"{i:064x}", frozenset(SCOPES), ("*",)), confirmed=True)
        eng.handle(c, Subscribe(1, 1, (QUERY,)))
        readers.append(c)
    return eng, writer, readers


def _round(eng: object, writer: int, readers: list[int], start: int) -> float:
    from reference.engine import Engine
    from spec.messages import CallReducer

    assert isinstance(eng, Engine)
    payload = '{"p":"' + "x" * 140 + '"}'
    calls = [CallReducer(start + k, "append_sync_event", ("fan", f"k{start + k}", payload, None, None))
             for k in range(BATCH)]
    handle, take = eng.handle, eng.take
    t = time.perf_counter()
    for call in calls:
        handle(writer, call)
    eng.advance_durable(eng.committed)
    for c in readers:
        take(c, 1 << 30, 1 << 40)
    elapsed = time.perf_counter() - t
    take(writer, 1 << 30, 1 << 40)
    eng.pending_records.clear()
    return elapsed


def measure(subs: list[int], rounds: int) -> dict[str, float]:
    """µs per delivery at each size (see the module's method)."""
    from spec import contracts
    contracts.enable_hot(False)
    engines = {n: _engine(n) for n in [0, *subs]}
    best = dict.fromkeys(engines, float("inf"))
    counter = 1
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for n, (eng, writer, readers) in engines.items():
                best[n] = min(best[n], _round(eng, writer, readers, counter))
                counter += BATCH
    finally:
        gc.enable()
    return {str(n): (best[n] - best[0]) / (n * BATCH) * 1e6 for n in subs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subs", type=int, nargs="+", default=[10, 100, 500])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--base", help="a tree of main to compare with (run with PYTHONPATH=BASE)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON line (used for the base's subprocess)")
    args = ap.parse_args()
    if args.json or not args.base:
        result = measure(args.subs, args.rounds)
        if args.json:
            import reference
            print(json.dumps({"tree": str(Path(reference.__file__).parents[1]), "us": result}))
        else:
            print("subscribers | µs per delivery")
            for n, us in result.items():
                print(f"{n:>11} | {us:.3f}")
        return
    here = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-m", "benchmarks.engine_fanout", "--json", "--rounds", str(args.rounds),
           "--subs", *map(str, args.subs)]
    runs: dict[str, list[dict[str, float]]] = {"base": [], "branch": []}
    trees: dict[str, set[str]] = {"base": set(), "branch": set()}
    for _ in range(args.repeats):
        for name, path in (("base", f"{args.base}{os.pathsep}{here}"), ("branch", here)):
            # the base tree first on the path: its reference/spec/adapters, this tree's benchmarks/
            # (run from an empty directory: ``-m`` puts the working directory ahead of PYTHONPATH)
            env = {**os.environ, "PYTHONPATH": path}
            with tempfile.TemporaryDirectory() as cwd:
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=cwd).stdout
            got = json.loads(out.strip().splitlines()[-1])
            runs[name].append(got["us"])
            trees[name].add(got["tree"])
    print(f"base ran {sorted(trees['base'])}, branch ran {sorted(trees['branch'])}")
    print("subscribers | base µs/delivery (each run) | branch µs/delivery (each run) | branch / base (medians)")
    for n in map(str, args.subs):
        b = sorted(r[n] for r in runs["base"])
        x = sorted(r[n] for r in runs["branch"])
        mb, mx = b[len(b) // 2], x[len(x) // 2]
        print(f"{n:>11} | {' '.join(f'{v:.3f}' for v in b):>27} | {' '.join(f'{v:.3f}' for v in x):>29} | "
              f"{mx / mb:.2f}x")


if __name__ == "__main__":
    main()
