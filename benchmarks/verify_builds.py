"""verify-log CPU per record across builds, same run (issue 10: "verify-log time per record halved").

    .venv/bin/python benchmarks/verify_builds.py --build base=SRC1 --build main=SRC2 --build this=. \\
        [--records N] [--rounds R] [--work DIR] [--json] [--restart] [--digest]

Each ``SRC`` is a source root holding a build's ``reference/``, ``spec/``, ``adapters/`` and
``benchmarks/`` (e.g. ``git archive <commit> reference spec adapters benchmarks | tar -x -C SRC``).
The log's row shapes differ between builds, so each build writes its *own* history with its own
``benchmarks/restart.py`` ``build`` (``N`` appends of a 150 B payload over 10 streams, a
snapshot at 0.9 N) into ``WORK/<name>/data`` (kept: a second run with the same ``--work``
reuses it).  Then ``R`` rounds, the builds alternating within each round: a fresh process per
measurement (``PYTHONPATH=SRC``) imports ``reference.replay``, then times
``verify_log(data)`` with ``time.process_time()`` -- CPU, not wall: the machine is shared and
loaded -- and checks the report is ok (every record reproduced, the snapshot matched).

Reports per build the CPU seconds of each round, the median, µs per record, and the ratio of
the medians to the first build's.  Timings only, nothing asserted.

``--restart`` times a restart instead: ``LogStore.open`` + ``restart()`` of the whole log (a build
with snapshots is told ``snapshots=False``), CPU, then a clean shutdown.  ``--digest`` prints the
SHA-256 of each build's ``commit_log`` rows and snapshot files first: equal digests mean the builds
wrote the same log and snapshots, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BUILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from benchmarks.restart import build
n = int(sys.argv[3])
build(Path(sys.argv[2]), n, n // 10)
"""

MEASURE = """
import sys, time
from reference.replay import verify_log
t = time.process_time()
report = verify_log(sys.argv[1])
cpu = time.process_time() - t
assert report.ok, report
print(cpu, report.records)
"""

# --restart: LogStore.open + restart() of the whole log (no snapshot: a build that has them is told
# snapshots=False; the baseline build predates them), then a clean shutdown, which leaves the
# directory as it found it (the clean marker rewritten)
MEASURE_RESTART = """
import inspect, sys, time
from reference.durability import GroupCommitWriter, LogStore, restart, shutdown
t = time.process_time()
store = LogStore.open(sys.argv[1])
writer = GroupCommitWriter(store)
kw = {"snapshots": False} if "snapshots" in inspect.signature(restart).parameters else {}
eng = restart(store, writer, 2_000_000_000_000, **kw)
cpu = time.process_time() - t
records = eng.committed
shutdown(eng, writer, store)
print(cpu, records)
"""

# --digest: the SHA-256 of each build's commit_log rows (in offset order) and snapshot files, so the
# report shows whether the builds wrote the same bytes
DIGEST = """
import hashlib, sqlite3, sys
from pathlib import Path
data = Path(sys.argv[1])
h = hashlib.sha256()
conn = sqlite3.connect(f"file:{data / 'syncref.sqlite3'}?mode=ro", uri=True)
for row in conn.execute('SELECT * FROM commit_log ORDER BY "offset"'):
    h.update(repr(row).encode())
conn.close()
for f in sorted((data / "snapshots").glob("*")):
    h.update(f.name.encode() + f.read_bytes())
print(h.hexdigest())
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", required=True, help="NAME=SRC (the first is the reference)")
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/syncref-verify-builds"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--restart", action="store_true", help="time restart of the whole log instead of verify_log")
    ap.add_argument("--digest", action="store_true", help="print a digest of each build's log and snapshots")
    args = ap.parse_args()
    script = MEASURE_RESTART if args.restart else MEASURE
    builds = [(name, Path(src).resolve()) for name, src in (b.split("=", 1) for b in args.build)]
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCREF_CONTRACTS", "ICONTRACT_SLOW")}
    data: dict[str, Path] = {}
    for name, src in builds:
        d = args.work / f"{name}-{args.records}" / "data"
        if not (d / "syncref.sqlite3").exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-c", BUILD, str(src), str(d), str(args.records)], check=True,
                           cwd=src, env={**env, "PYTHONPATH": str(src)})
        data[name] = d
        if args.digest:
            out = subprocess.run([sys.executable, "-c", DIGEST, str(d)], check=True, capture_output=True, text=True)
            print(f"{name}: log and snapshots sha256 {out.stdout.strip()}", file=sys.stderr, flush=True)
    cpu: dict[str, list[float]] = {name: [] for name, _ in builds}
    records = 0
    for rnd in range(args.rounds):
        for name, src in builds:
            out = subprocess.run([sys.executable, "-c", script, str(data[name])], check=True, cwd=src,
                                 capture_output=True, text=True, env={**env, "PYTHONPATH": str(src)})
            seconds, n = out.stdout.split()
            cpu[name].append(float(seconds))
            records = int(n)
            print(f"round {rnd + 1} {name}: {float(seconds):.2f} s CPU", file=sys.stderr, flush=True)
    first = statistics.median(cpu[builds[0][0]])
    result = {name: {"cpu_s": v, "median_s": statistics.median(v),
                     "us_per_record": statistics.median(v) / records * 1e6,
                     "vs_first": statistics.median(v) / first} for name, v in cpu.items()}
    if args.json:
        print(json.dumps({"records": records, "builds": result}, indent=1))
    else:
        for name, r in result.items():
            rounds = " ".join(f"{s:.2f}" for s in r["cpu_s"])  # type: ignore[attr-defined]
            print(f"{name:12s} {rounds}  median {r['median_s']:.2f} s  {r['us_per_record']:.0f} µs/record  "
                  f"{r['vs_first']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
