"""CPU time of unpinned one-off reads by callers whose tokens hold as many grants as 16 KiB allows.

Method: the reference :class:`reference.engine.Engine` alone (hot contracts off, as in ``syncref
serve``), filled through ``append_sync_event`` calls with ``--streams`` streams ``u{s % 100}.s{s}``
of ``--per`` events each (the default, 5,000 streams of one event, is the prefix walk's worst
case: as many stream ids as rows, so the walk is not taken and the table is read after it).  The
callers: 2,377 grants ``z*`` then ``u7.*`` (2,378 prefix grants: the most a minted 16 KiB token
holds), 2,377 ``z*`` then ``*``, and 2,971 exact ids ``x{i}`` then ``u7.s7`` (a 16 KiB token holds
2,972 one-character exact ids).  ``--rounds`` calls per case, CPU time
(``time.process_time``): min and max.  Run it against two checkouts alternately
(``PYTHONPATH=<checkout>``) on a shared machine.  Nothing asserts: docs/performance.md "Grants per row".
Run: ``.venv/bin/python benchmarks/grants_per_row.py [--streams N --per K --rounds R]``.

``--fanout G``: instead, the fanout: 50 connections whose grants are G - 1 grants ``z{j}*`` then
``u7.*`` (50 distinct grant lists: 50 groups of the one shape) subscribe ``SELECT * FROM sync_event``;
200 appends to ``u7.s{n}`` per round (each delivered to all 50), every queue drained; CPU ms per
append, min and max of ``--rounds`` rounds.

``--subscribe``: instead, one ``Subscribe`` of 64 unpinned queries (32 of ``sync_stream``, 32 of
``sync_event``, each with its own ``WHERE`` term) by a caller holding 2,377 *distinct* prefix grants
``z{i:04d}*`` (none covers a stream) then ``u7.*``, on ``--streams`` streams of ``--per`` events;
CPU ms of ``handle`` per Subscribe, min, median and max of ``--rounds`` (docs/performance.md "The rows
the caller can read").
"""

from __future__ import annotations

import argparse
import time

from benchmarks._engine_fill import filled_engine
from reference.engine import Engine
from spec import contracts
from spec.auth import Claims
from spec.errors import SyncError
from spec.messages import CallReducer, Subscribe
from spec.schema import SCOPES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=5_000)
    ap.add_argument("--per", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fanout", type=int, default=0, metavar="G")
    ap.add_argument("--subscribe", action="store_true")
    args = ap.parse_args()
    contracts.enable_hot(False)
    if args.fanout:
        fanout(args.fanout, args.rounds)
        return
    if args.subscribe:
        subscribe(args.streams, args.per, args.rounds)
        return
    eng = filled_engine(args.streams, args.per)
    cases = [("2,378 prefixes, u7.* last", (*["z*"] * 2377, "u7.*"), "SELECT * FROM sync_event"),
             ("2,378 prefixes, * last", (*["z*"] * 2377, "*"), "SELECT * FROM sync_event"),
             ("2,378 prefixes, u7.* last", (*["z*"] * 2377, "u7.*"), "SELECT * FROM sync_stream"),
             ("2,972 exact ids, u7.s7 last", (*[f"x{i}" for i in range(2971)], "u7.s7"),
              "SELECT * FROM sync_event")]
    print(f"{eng.committed} events in {args.streams} streams")
    for name, grants, text in cases:
        claims = Claims("b" * 64, frozenset(SCOPES), grants)
        times, rows = [], -1
        for _ in range(args.rounds):
            t = time.process_time()
            try:
                rows = len(eng.query(claims, text).inserts)
            except SyncError:
                rows = -1
            times.append(time.process_time() - t)
        print(f"{name}, {text}: rows {rows if rows >= 0 else 'refused'}, CPU ms min {min(times) * 1e3:.1f} "
              f"max {max(times) * 1e3:.1f}")


def fanout(grants: int, rounds: int) -> None:
    every = Claims("a" * 64, frozenset(SCOPES), ("*",))
    eng = Engine(max_undurable=10**9, max_queue=10**9)
    writer = eng.connect(every, confirmed=False)
    for j in range(50):
        c = eng.connect(Claims(f"{j:064x}", frozenset(SCOPES), (*[f"z{j}*"] * (grants - 1), "u7.*")), confirmed=False)
        eng.handle(c, Subscribe(1, 1, ("SELECT * FROM sync_event",)))
    times = []
    for r in range(rounds):
        t = time.process_time()
        for n in range(200):
            eng.handle(writer, CallReducer(r * 1000 + n + 1, "append_sync_event",
                                           (f"u7.s{n}", f"k{r}.{n}", '{"n":1}', None, None)))
            eng.advance_durable(eng.committed)
            for cid in list(eng.conns):
                while eng.conns[cid].outbound:
                    eng.pop(cid)
        times.append((time.process_time() - t) / 200)
    print(f"fanout, 50 groups of {grants} grants: CPU ms per append min {min(times) * 1e3:.2f} "
          f"max {max(times) * 1e3:.2f}")


def subscribe(streams: int, per: int, rounds: int) -> None:
    eng = filled_engine(streams, per)
    claims = Claims("b" * 64, frozenset(SCOPES), (*(f"z{i:04d}*" for i in range(2377)), "u7.*"))
    texts = (*(f"SELECT * FROM sync_stream WHERE head_seq > {i}" for i in range(32)),
             *(f"SELECT * FROM sync_event WHERE tx_offset > {i}" for i in range(32)))
    times = []
    for _ in range(rounds):
        conn = eng.connect(claims, confirmed=False)
        t = time.process_time()
        eng.handle(conn, Subscribe(1, 1, texts))
        times.append(time.process_time() - t)
        answer = type(eng.pop(conn).message).__name__
        eng.close(conn)
    times.sort()
    print(f"{eng.committed} events in {streams} streams; a Subscribe of 64 queries under 2,378 distinct prefix "
          f"grants: {answer}, CPU ms min {times[0] * 1e3:.1f} median {times[len(times) // 2] * 1e3:.1f} "
          f"max {times[-1] * 1e3:.1f}")


if __name__ == "__main__":
    main()

