"""How long capturing a storage snapshot holds the engine's thread (the event loop), against the number of streams.

Method: a :class:`reference.db.Db` is filled directly (``Db._insert``, no engine, no server): ``N``
streams of ``EVENTS`` small events each (~60-byte payloads) plus ``BIG`` streams of ``BIG_EVENTS``
events, one ``sync_stream`` row per stream (the primary-key table that grows with the streams) and
``CHECKPOINTS`` ``sync_checkpoint`` rows.  Then, per round: ``CHANGES`` appends to random streams
(what commits between two snapshots change; the first round after the fill sees the whole fill as
changed), then one capture, timed with ``perf_counter`` around the call alone -- the time the engine's
thread is held.  Reported per ``N``: the first capture, then the median and max over ``ROUNDS`` rounds,
the share of a capture that is the primary-key tables' copy (timed alone, the same rounds), and the
cyclic GC's collections during the timed captures (``gc.callbacks``: how many, full ones, their total
time -- a capture's allocations trigger them, and they are part of its hold).

``--gc-freeze``: after the fill, collect and freeze (``gc.freeze``) what it built, as ``syncref serve``
does after recovery (ADR-0036): a full collection then walks only what is newer.
``--legacy``: capture as before the incremental capture (a ``StreamLog.copy()`` of every stream
and a tuple of every table, each time; the code is kept below, verbatim), for before/after runs
on the same tree.  Nothing asserts: measurements for docs/performance.md ("Snapshot capture hold").
Run: ``.venv/bin/python benchmarks/snapshot_capture.py [--streams 1000,10000,30000,100000] [--legacy] [--gc-freeze]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference import snapshot  # noqa: E402
from reference.db import Db  # noqa: E402
from reference.snapshot import Image  # noqa: E402
from spec.values import SyncCheckpoint, SyncEvent, SyncStream  # noqa: E402

EVENTS = 3
BIG = 4
BIG_EVENTS = 20_000
CHECKPOINTS = 1_000
CHANGES = 1_000
ROUNDS = 15


def legacy_capture(db: Db, offset: int, head_hash: str, log_id: str | None = None) -> Image:
    """capture() as it was before the incremental capture (commit 1848622)."""
    return Image(offset, head_hash, db.epoch_floor, db.version_floor,
                 tuple((name, tuple(index.values())) for name, index in db.pk.items()),
                 tuple((sid, log.floor, log.copy().events) for sid, log in db.logs.items()), log_id)


def _event(sid: str, seq: int) -> SyncEvent:
    payload = '{"n":' + str(seq) + ',"text":"a small payload of about sixty bytes"}'
    return SyncEvent(sid, 1, seq, f"k{seq}", "sha256:" + f"{seq:064x}", payload, "producer", 1_700_000_000 + seq, seq)


def _stream(sid: str, head: int) -> SyncStream:
    return SyncStream(sid, "default", 1, 0, 0, head, 1, 0, 1_700_000_000, 1_700_000_000, (), ())


def fill(n: int) -> Db:
    db = Db()
    for i in range(n + BIG):
        sid = f"s{i:07d}"
        count = BIG_EVENTS if i >= n else EVENTS
        for seq in range(1, count + 1):
            db._insert(_event(sid, seq))
        db._insert(_stream(sid, count))
    for i in range(CHECKPOINTS):
        db._insert(SyncCheckpoint(f"c{i}", "client", f"s{i % max(1, n):07d}", f"owner{i}", 1, 0, 1_700_000_000))
    return db


def change(db: Db, rng: random.Random, sids: list[str]) -> None:
    for _ in range(CHANGES):
        sid = rng.choice(sids)
        log = db.logs[sid]
        seq = log.floor + len(log)
        db._insert(_event(sid, seq))
        row = db.pk["sync_stream"][(sid,)]
        db._delete(row)
        db._insert(_stream(sid, seq))


def run(n: int, legacy: bool, freeze: bool) -> str:
    db = fill(n)
    if freeze:
        gc.collect()
        gc.freeze()
    rng = random.Random(n)
    sids = list(db.logs)
    take = legacy_capture if legacy else getattr(snapshot, "Capturer", lambda: snapshot.capture)()
    t0 = time.perf_counter()
    take(db, 1, "h")
    first = time.perf_counter() - t0
    holds, tables = [], []
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started[0]))
    for r in range(ROUNDS):
        change(db, rng, sids)
        gc.callbacks.append(timed)
        t0 = time.perf_counter()
        take(db, r + 2, "h")
        holds.append(time.perf_counter() - t0)
        gc.callbacks.remove(timed)
        t0 = time.perf_counter()
        tuple((name, tuple(index.values())) for name, index in db.pk.items())
        tables.append(time.perf_counter() - t0)
    return (f"{'legacy' if legacy else 'current'} streams={n:>7,} first={first * 1e3:8.1f} ms "
            f"median={statistics.median(holds) * 1e3:7.2f} ms max={max(holds) * 1e3:7.2f} ms "
            f"(pk tables alone: median {statistics.median(tables) * 1e3:.2f} ms; GC in the {ROUNDS} captures: "
            f"{len(pauses)} collections, {sum(1 for g, _ in pauses if g == 2)} full, "
            f"{sum(p for _, p in pauses) * 1e3:.0f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1000,10000,30000,100000")
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--gc-freeze", action="store_true")
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.1f}; gc freeze {'on' if args.gc_freeze else 'off'}; {EVENTS} events a stream, "
          f"{BIG} streams of {BIG_EVENTS}, "
          f"{CHANGES} appends between captures, {ROUNDS} rounds", flush=True)
    for n in (int(x) for x in args.streams.split(",")):
        print(run(n, args.legacy, args.gc_freeze), flush=True)
        gc.unfreeze()


if __name__ == "__main__":
    main()
