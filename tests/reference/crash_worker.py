"""Crash-test worker: the engine and its data directory under load, until it is killed.

``python crash_worker.py DIR [--seed N] [--max-undurable K] [--slow-commit-ms T] [--snapshot-every S]
[--snapshot-stall-ms W]`` restarts from
``DIR`` (:func:`reference.durability.restart`: recovery, and after an unclean stop the epoch bump,
made durable before anything else), then commits transactions as fast as the back-pressure bound
lets it -- appends to four streams, frequent epoch resets of ``s.a`` (so that the undurable window
raises its epoch several times: the recovery margin is then tested, not just the bump), and
compactions, presence and disconnects -- while a background :class:`GroupCommitWriter` writes
them in batches.  ``--slow-commit-ms`` stretches every COMMIT (a slow disk), so the engine runs
into the ``max_undurable`` bound and waits on the writer.  It prints, each line flushed at once:

* ``R {json}`` when ready: committed offset, whether the last stop was clean, every stream's epoch
  and the epoch floor (what a client connecting now would see);
* ``E <stream> <epoch>`` the first time a committed -- not necessarily durable -- transaction shows
  a stream at an epoch (a client without confirmed reads may see it at once);
* ``D <offset> <hash>`` for every record, from the writer thread, only after its COMMIT returned;
* ``C <offset> <hash>`` after a clean shutdown on SIGTERM;
* with ``--snapshot-every S`` (a :class:`reference.snapshot.Snapshotter`, ADR-0011): ``W <offset>``
  when a snapshot's temp file is durable and about to be renamed (it then waits ``W`` ms there, so
  a kill can land mid-snapshot), ``S <offset>`` once it is in place.  ``R`` then also names the
  snapshot the restart started from and the ones it passed over.

The test (``test_crash.py``) SIGKILLs it at random moments and checks the promises against what
was printed.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from reference.durability import GroupCommitWriter, LogStore, restart, shutdown, snapshot_dir
from reference.log import TxRecord
from reference.snapshot import Snapshotter
from spec.auth import Claims
from spec.messages import CallReducer
from spec.policy import Policy, StreamClass
from spec.values import SyncStream

STREAMS = ("s.a", "s.b", "s.c", "s.d")
WORKER_POLICY = Policy(classes=(("s.", StreamClass("short", retain_count=40)),))
WRITER = Claims("a" * 64, frozenset({"sync.append", "sync.admin", "presence.write"}), ("*",))

_out = threading.Lock()


class SlowStore(LogStore):
    delay = 0.0

    def _commit(self, *args: Any) -> None:
        time.sleep(self.delay)
        super()._commit(*args)


def emit(text: str) -> None:
    with _out:
        sys.stdout.write(text)
        sys.stdout.flush()


def on_durable(offset: int, batch: Sequence[TxRecord]) -> None:
    emit("".join(f"D {rec.offset} {rec.hash}\n" for rec in batch))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-undurable", type=int, default=32)
    ap.add_argument("--slow-commit-ms", type=float, default=0.0)
    ap.add_argument("--snapshot-every", type=int, default=0)
    ap.add_argument("--snapshot-stall-ms", type=float, default=0.0)
    args = ap.parse_args()
    SlowStore.delay = args.slow_commit_ms / 1000
    rng = random.Random(args.seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    store = SlowStore.open(args.data)
    writer = GroupCommitWriter(store, on_durable)
    eng = restart(store, writer, time.time_ns() // 1000, WORKER_POLICY, max_undurable=args.max_undurable)
    seen: dict[str, int] = {}
    for row in eng.db.pk["sync_stream"].values():
        assert isinstance(row, SyncStream)
        seen[row.stream_id] = row.epoch
    recovery = store.recovery
    assert recovery is not None
    emit("R " + json.dumps({"committed": eng.committed, "clean": store.clean_at_open, "epochs": seen,
                            "epoch_floor": eng.db.epoch_floor, "snapshot": recovery.snapshot_offset,
                            "tail": recovery.tail_records, "rejected": recovery.rejected}) + "\n")
    snaps = Snapshotter(snapshot_dir(store), args.snapshot_every, 2, writer.wait_durable, recovery.snapshot_offset,
                        on_done=lambda path, _s: emit(f"S {int(path.stem.removeprefix('snap-'))}\n"))

    def stall() -> None:
        emit(f"W {snaps.last_offset}\n")
        time.sleep(args.snapshot_stall_ms / 1000)

    snaps.before_rename = stall
    def hand_over() -> None:
        records = eng.take_records()
        for rec in records:
            for change in rec.changes:
                if change.table == "sync_stream":
                    for row in change.inserts:
                        assert isinstance(row, SyncStream)
                        if seen.get(row.stream_id) != row.epoch:
                            seen[row.stream_id] = row.epoch
                            emit(f"E {row.stream_id} {row.epoch}\n")
        writer.append(records)

    counter = 0
    while not stop.is_set():
        durable = writer.durable_offset
        if durable > eng.durable:
            eng.advance_durable(durable)  # may commit queued disconnects
            hand_over()
        if not eng.can_commit():
            writer.wait_durable(eng.committed - eng.max_undurable + 1, timeout=1.0)
            continue
        eng.now = max(eng.now + 1, time.time_ns() // 1000)
        counter += 1
        roll = rng.random()
        sid = rng.choice(STREAMS)
        if roll < 0.70:
            key = f"k{args.seed}-{counter}" if rng.random() < 0.95 else f"k{args.seed}-{max(1, counter - 3)}"
            eng.admin_call(WRITER, "append_sync_event", (sid, key, json.dumps({"n": counter}), None, None))
        elif roll < 0.90:
            eng.admin_call(WRITER, "reset_stream_epoch", ("s.a" if rng.random() < 0.9 else sid,))
        elif roll < 0.96:
            eng.compact(eng.now)
        elif roll < 0.98:
            conn = eng.connect(WRITER, confirmed=True)
            eng.handle(conn, CallReducer(counter, "upsert_presence",
                                         (f"sess{counter % 7}", "dev", "node", "online", "", 1000)))
            eng.close(conn)  # its presence goes offline in a "disconnect" transaction
        else:
            eng.sweep(eng.now)
        hand_over()
        snaps.maybe(eng.db, eng.committed, eng.head_hash)
    shutdown(eng, writer, store)
    emit(f"C {eng.committed} {eng.head_hash}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
