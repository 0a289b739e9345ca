"""The engine's floor: server CPU per durable append with no transport at all.

Issue 10 asks the server to use both cores, e.g. WebSocket termination and framing in worker
processes while the engine stays the single writer (ADR-0008 deferred it, ADR-0034 re-evaluates
it).  Whatever such a split does, the engine's process keeps the part measured here: the engine
step of each call (authorisation, the reducer and its tables, the record and its hash chain, the
outbound queues), the group commit (serialising the records, SQLite; on the writer thread, but
in the engine's process) and the release of confirmed replies.  This module drives exactly the
objects ``syncref serve`` drives -- :func:`reference.durability.restart`, a
:class:`~reference.durability.GroupCommitWriter` on a real SQLite data directory (WAL,
``synchronous=FULL``), ``Engine.handle``/``take_records``/``advance_durable``/``pop`` -- from one
thread, with the bench's own append frames (``adapters.bench.client.append_frame``, 150-byte
payloads, each connection on its own stream, confirmed reads), and charges
``time.process_time`` (every thread of the process) to five steps:

* ``decode``: the client frame to the model's ``CallReducer`` (``decode_client_frame`` and
  ``from_wire``, as the server's reader does; in a split this could move to a worker);
* ``engine``: ``Engine.handle`` for each call of the round;
* ``commit``: ``take_records``, the writer's ``append`` and ``flush`` (one COMMIT per round, the
  fsync's wait is not CPU);
* ``release``: ``advance_durable`` and ``pop`` of each reply;
* ``encode``: the reply's BSATN and its v2 frame body (a worker could do this too).

A *round* is ``window`` calls on each of ``conns`` connections followed by one COMMIT: window 1
is the closed loop's shape (8 records per COMMIT at the default 8 connections; the bench's closed
loop measures ~5-8), window 32 the pipelined one's direction (256 per COMMIT, more than the bench's
15-58: a COMMIT's cost is shared by more appends, so its ``commit`` step is lower than the
pipelined server's -- window 7, 56 per COMMIT, measured ~1 µs more).  The first ``warmup`` rounds
are not timed.

What it does not include, and a split would add: moving each call and reply between processes
(a pipe or shared memory, both ends' system calls and wakeups).  What it leaves out that the
engine's process of ``syncref serve`` also does: the engine's size estimate of each reply (serve
sets ``Engine.measure``; ~0.5 µs per reply, measured), snapshots, the server's per-call
bookkeeping (its counters, the call's timestamp, the connection's share of the durability
window).  Each only adds.  So ``engine + commit + release`` is a lower bound on the engine
process's CPU per append in any layout that keeps this engine, and ``1e6 / that`` an upper bound
on the appends per second one core can commit.  Nothing asserts a
timing: ``tests/adapters/test_bench_floor.py`` checks that every append is committed and, with a
fake CPU clock that moves only inside each step's calls, that each step's time goes to its own
bucket (planted swaps of the buckets fail it).
Run ``python -m adapters.bench.floor [--rounds N] [--window W ...]``.  The ``engine`` step's own
pieces (the reducer, ``_seal``, canonical JSON) are split further, without SQLite, by
``benchmarks/engine_append.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

from adapters import wire
from adapters.bench.client import append_frame, payload
from reference.durability import GroupCommitWriter, LogStore, restart, shutdown
from spec import contracts
from spec.auth import Claims
from spec.messages import ReducerOk, ReducerResult
from spec.schema import SCOPES

STEPS = ("decode", "engine", "commit", "release", "encode")
ENGINE_STEPS = ("engine", "commit", "release")  # what stays in the engine's process in any split


@dataclass(frozen=True)
class Floor:
    """CPU µs per append of each step, over ``appends`` timed appends."""

    us: dict[str, float]
    appends: int
    records_per_commit: float
    wall_us: float  # wall time per append, the fsyncs included
    contracts: bool  # the engine's hot-path contracts were on

    @property
    def total_us(self) -> float:
        return sum(self.us.values())

    @property
    def engine_us(self) -> float:
        return sum(self.us[s] for s in ENGINE_STEPS)


def measure(
    rounds: int = 2000, window: int = 1, conns: int = 8, size: int = 150, warmup: int = 200, data_dir: str | None = None
) -> Floor:
    if rounds <= warmup:
        raise ValueError(f"rounds ({rounds}) must exceed warmup ({warmup})")
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="syncref-floor-") as directory:
            return measure(rounds, window, conns, size, warmup, directory)
    store = LogStore.open(data_dir)
    writer = GroupCommitWriter(store, background=False)
    engine = restart(store, writer, time.time_ns() // 1000)
    ids = [engine.connect(Claims(f"{i + 1:064x}", frozenset(SCOPES), ("*",)), confirmed=True) for i in range(conns)]
    spent = dict.fromkeys(STEPS, 0.0)
    clock = time.process_time
    rid = 0
    wall = 0.0
    records = 0
    try:
        for r in range(rounds):
            frames = []
            for c in range(conns):
                for _ in range(window):
                    rid += 1
                    frames.append((ids[c], append_frame(rid, f"bench.s{c}", f"k-{c}-{rid}", payload(rid, size))))
            w0 = time.perf_counter()
            t0 = clock()
            calls = [(conn, wire.from_wire(wire.decode_client_frame(frame, 2)[0])) for conn, frame in frames]
            t1 = clock()
            for conn, msg in calls:
                engine.handle(conn, msg)
            t2 = clock()
            batch = engine.take_records()
            writer.append(batch)
            durable = writer.flush()
            t3 = clock()
            engine.advance_durable(durable)
            replies = [engine.pop(conn).message for conn, _ in calls]
            t4 = clock()
            results = [reply for reply in replies if isinstance(reply, ReducerResult)]
            if len(results) != len(replies) or not all(isinstance(m.outcome, ReducerOk) for m in results):
                raise RuntimeError(f"an append was not committed: {replies!r}")
            t4b = clock()  # the check above is not charged
            for result in results:
                wire.frame_server(wire.encode_reducer_result(result, 0), wire.Compression.NONE)
            t5 = clock()
            w1 = time.perf_counter()
            if r >= warmup:
                for step, dt in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4b), strict=True):
                    spent[step] += dt
                wall += w1 - w0
                records += len(batch)
    finally:
        shutdown(engine, writer, store)
    appends = (rounds - warmup) * conns * window
    return Floor(
        {s: spent[s] / appends * 1e6 for s in STEPS},
        appends,
        records / (rounds - warmup),
        wall / appends * 1e6,
        contracts.hot_enabled(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--window", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200, help="rounds not timed (default 200)")
    args = parser.parse_args(argv)
    for window in args.window:
        f = measure(args.rounds, window, args.conns, warmup=args.warmup)
        print(
            f"window {window} x {args.conns} connections, {f.appends} appends, "
            f"{f.records_per_commit:.0f} records per COMMIT, contracts {'on' if f.contracts else 'off'}"
        )
        for step in STEPS:
            print(f"  {step:8s} {f.us[step]:6.1f} µs")
        print(
            f"  engine process (engine + commit + release) {f.engine_us:6.1f} µs -> at most "
            f"{1e6 / f.engine_us:,.0f} appends/s on one core; all steps {f.total_us:.1f} µs; "
            f"wall {f.wall_us:.1f} µs per append"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
