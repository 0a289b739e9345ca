"""CPU time of unpinned ``sync_event`` one-off reads against ``max_scan_rows``, by the caller's grants.

Method: the reference :class:`reference.engine.Engine` alone (hot contracts off, as in ``syncref
serve``), filled through ``append_sync_event`` calls with ``--streams`` streams ``u{s % 100}.s{s}``
of ``--per`` events each; then, ``--rounds`` times each, the one-off ``SELECT * FROM sync_event``
(``--table sync_stream``: ``SELECT * FROM sync_stream``) read by a caller granted ``u7.*`` (a
prefix: 1 % of the streams), three exact stream ids, and ``*``, at the default bound (100,000), and
once more by ``*`` at a bound of 1,000 (refused).  CPU
time (``time.process_time``) of each call: min, median, max; and the rows counted against the
bound (``Engine.rows_examined``).  Run it against two checkouts alternately (``PYTHONPATH=<checkout>``)
on a shared machine.  Nothing asserts: docs/performance.md "max_scan_rows: what is counted, and when".
Run: ``.venv/bin/python benchmarks/scan_bound.py [--streams N --per K --rounds R --table T]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks._engine_fill import filled_engine
from spec import contracts
from spec.auth import Claims
from spec.errors import SyncError
from spec.schema import SCOPES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--per", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--table", choices=("sync_event", "sync_stream"), default="sync_event")
    args = ap.parse_args()
    contracts.enable_hot(False)
    eng = filled_engine(args.streams, args.per)
    every = Claims("a" * 64, frozenset(SCOPES), ("*",))
    cases = [("prefix u7.*", Claims("b" * 64, frozenset(SCOPES), ("u7.*",)), 100_000),
             ("exact, 3 ids", Claims("c" * 64, frozenset(SCOPES), ("u7.s7", "u7.s107", "u7.s207")), 100_000),
             ("*", every, 100_000),
             ("*, bound 1000 (refused)", every, 1000)]
    print(f"{eng.committed} events in {args.streams} streams")
    for name, claims, bound in cases:
        eng.max_scan_rows = bound
        times, rows, examined = [], -1, 0
        for _ in range(args.rounds):
            before = eng.rows_examined
            t = time.process_time()
            try:
                rows = len(eng.query(claims, f"SELECT * FROM {args.table}").inserts)
            except SyncError:
                rows = -1
            times.append(time.process_time() - t)
            examined = eng.rows_examined - before
        print(f"{name}: rows {rows if rows >= 0 else 'refused'}, examined {examined}, CPU ms "
              f"min {min(times) * 1e3:.1f} median {statistics.median(times) * 1e3:.1f} max {max(times) * 1e3:.1f}")


if __name__ == "__main__":
    main()
