"""CPU of one durable append inside the engine, in µs, and of its pieces (issue 10, sixth session).

The bench's ``append`` workloads send ``append_sync_event`` calls of a 150-byte payload over a few
streams, each key new, from one connection nobody else subscribes to.  This times what the engine does
for one such call, with no I/O: ``Engine.handle`` of the ``CallReducer`` (the signature check, the
reducer and its tables, the record and its hash chain, the publish and the fanout to nobody, the
``ReducerResult`` queued), then ``take_records``, ``advance_durable`` and the reply taken off the queue
(``pop``), as the server does after the writer's commit.  Pieces are timed apart on the same values:
``canonicalize`` + ``payload_hash``, the reducer alone in a transaction rolled back, ``_seal``.

Each figure is the best of ``--rounds`` rounds of ``--number`` calls, in CPU time
(``time.process_time``: a process preempted by its neighbours on a shared machine is not charged for
the wait; the minimum is the least disturbed); the hot-path contracts are off, as in a default server.  Compare
builds as ratios of the same run: ``PYTHONPATH=SRC .venv/bin/python benchmarks/engine_append.py``
alternating with this tree.  Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from adapters.bench.client import payload
from reference import reducers as r
from reference.db import Txn
from reference.engine import Engine
from spec.auth import Claims
from spec.canonical import canonicalize, payload_hash
from spec.compat import CompatWindow  # noqa: F401  (the engine's import graph, as the server's)
from spec.messages import CallReducer
from spec.schema import SCOPES

STREAMS = 8
NOW = 1_796_000_000_000_000


def _engine() -> tuple[Engine, int, Claims]:
    eng = Engine()
    claims = Claims("ab" * 32, frozenset(SCOPES), ("*",))
    eng.now = NOW
    conn = eng.connect(claims, confirmed=True)
    return eng, conn, claims


def measure(number: int, rounds: int) -> dict[str, float]:
    out: dict[str, float] = {}
    texts = [payload(i, 150) for i in range(number)]

    def best(name: str, run: Any) -> None:
        times = []
        for k in range(rounds):
            times.append(run(k))
        out[name] = round(min(times) * 1e6 / number, 2)

    def full(k: int) -> float:
        eng, conn, _ = _engine()
        msgs = [CallReducer(i, "append_sync_event", (f"ap-{k}-{i % STREAMS}", f"k-{k}-{i}", texts[i], None, None))
                for i in range(number)]
        handle, take, advance, pop = eng.handle, eng.take_records, eng.advance_durable, eng.pop
        t = time.process_time()
        for m in msgs:
            handle(conn, m)
            recs = take()
            advance(recs[-1].offset)
            pop(conn)
        return time.process_time() - t

    def handle_only(k: int) -> float:
        eng, conn, _ = _engine()
        msgs = [CallReducer(i, "append_sync_event", (f"ap-{k}-{i % STREAMS}", f"k-{k}-{i}", texts[i], None, None))
                for i in range(number)]
        eng.max_undurable = number + 1
        eng.max_queue = number + 1
        handle = eng.handle
        t = time.process_time()
        for m in msgs:
            handle(conn, m)
        return time.process_time() - t

    def canon(k: int) -> float:
        t = time.process_time()
        for x in texts:
            payload_hash(canonicalize(x))
        return time.process_time() - t

    def reducer(k: int) -> float:
        eng, conn, claims = _engine()
        for i in range(STREAMS):  # the streams exist, as after the first calls
            eng.handle(conn, CallReducer(i, "append_sync_event", (f"ap-{k}-{i}", f"w-{i}", texts[0], None, None)))
        ctx = r.Ctx(claims, NOW, 100, eng.policy)
        db = eng.db
        args = [(f"ap-{k}-{i % STREAMS}", f"k-{k}-{i}", texts[i], None, None) for i in range(number)]
        t = time.process_time()
        for a in args:
            tx = Txn(db)
            r.append_sync_event(tx, ctx, *a)
            tx.rollback()
        return time.process_time() - t

    def seal(k: int) -> float:
        eng, conn, claims = _engine()
        for i in range(STREAMS):
            eng.handle(conn, CallReducer(i, "append_sync_event", (f"ap-{k}-{i}", f"w-{i}", texts[0], None, None)))
        ctx = r.Ctx(claims, NOW, 100, eng.policy)
        txs = []
        for i in range(number):
            tx = Txn(eng.db)
            a = (f"ap-{k}-{i % STREAMS}", f"k-{k}-{i}", texts[i], None, None)
            r.append_sync_event(tx, ctx, *a)
            txs.append((tx, a))
            tx.rollback()
        t = time.process_time()
        for tx, a in txs:
            eng._seal(tx, "reducer", "append_sync_event", claims, a)
        return time.process_time() - t

    best("append: handle + take_records + advance_durable + pop", full)
    best("append: Engine.handle alone", handle_only)
    best("canonicalize + payload_hash", canon)
    best("reducer alone (Txn, append_sync_event, rollback)", reducer)
    best("_seal (record + hash chain)", seal)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = measure(a.number, a.rounds)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{v:8.2f} µs  {k}")


if __name__ == "__main__":
    main()
