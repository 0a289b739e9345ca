"""The periodic snapshot's incremental capture (ADR-0011, "Incremental capture"): a
:class:`reference.snapshot.Capturer` copies only the streams whose log changed since its previous
image, and every image it takes is exactly the state at its moment, then and after later commits.

The second opinion is a plain model (a dict of per-stream ``[floor, list of events]``, the tables as
dicts, the floors) driven by the same random transactions as the :class:`~reference.db.Db` -- every
kind of stream log mutation: appends (new streams included), retention drops, epoch resets (every
event dropped, the epoch bumped), relabels (an unclean restart's renumbering), rollbacks of each,
rows kept whole, primary-key rows inserted, updated and deleted, floors moved.  It never reads the
Db nor calls capture's code.  Planted bugs it kills: tests/support/engine_mutants.py
``snapshot_capture_*``.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from reference import snapshot
from reference.db import Db, Txn
from reference.eventlog import StreamLog
from spec.values import SyncCheckpoint, SyncEvent, SyncStream

SIDS = [f"s{i:02d}" for i in range(24)]


def _event(rng: random.Random, sid: str, epoch: int, seq: int) -> SyncEvent:
    digest = f"{rng.getrandbits(256):064x}"
    if rng.random() < 0.05:  # not the canonical hash form: the row is kept whole (StreamLog._odd)
        digest = digest.upper()
    return SyncEvent(sid, epoch, seq, f"k{seq}-{rng.randrange(1000)}", "sha256:" + digest,
                     '{"n":' + str(rng.randrange(10**6)) + "}", rng.choice(("alice", "bob", "carol")), 1000 + seq, seq)


def _stream(sid: str, epoch: int, head: int) -> SyncStream:
    return SyncStream(sid, "default", epoch, 0, 0, head, 1, 0, 1, head, (), ())


class Model:
    """The state as plain values: what an image taken now must equal."""

    def __init__(self) -> None:
        self.logs: dict[str, list[Any]] = {}  # sid -> [floor, [events]], in creation order
        self.epoch: dict[str, int] = {}  # the epoch a stream's next event gets
        self.pk: dict[str, dict[object, Any]] = {"sync_stream": {}, "sync_checkpoint": {}}
        self.floors = (1, 1)

    def image(self) -> tuple[Any, ...]:
        return (self.floors, {name: frozenset(rows.values()) for name, rows in self.pk.items()},
                tuple((sid, floor if events else None, tuple(events)) for sid, (floor, events) in self.logs.items()))


def _seen(image: snapshot.Image) -> tuple[Any, ...]:
    # (an empty log's floor is compared by the full capture below, not here: the next append sets it,
    # and the rollback of an append to an empty log leaves it one past the event, Db._delete taking
    # the retention branch for a lone event -- not state the model keeps)
    tables = {name: frozenset(rows) for name, rows in image.tables if name in ("sync_stream", "sync_checkpoint")}
    return ((image.epoch_floor, image.version_floor), tables,
            tuple((sid, floor if events else None, tuple(events)) for sid, floor, events in image.logs))


def _step(rng: random.Random, db: Db, tx: Txn, model: Model) -> None:
    sid = rng.choice(SIDS)
    kind = rng.choice(("append", "append", "append", "drop", "reset", "relabel", "checkpoint", "floor"))
    if kind == "append":
        floor, events = model.logs.setdefault(sid, [1, []])
        epoch = model.epoch.setdefault(sid, 1)
        ev = _event(rng, sid, epoch, floor + len(events))
        tx.insert(ev)
        events.append(ev)
        old = model.pk["sync_stream"].get((sid,))
        row = _stream(sid, epoch, ev.seq)
        if old is None:
            tx.insert(row)
        else:
            tx.update(old, row)
        model.pk["sync_stream"][(sid,)] = row
    elif kind in ("drop", "reset") and sid in model.logs:
        entry = model.logs[sid]
        for _ in range(rng.randint(1, 3) if kind == "drop" else len(entry[1])):
            if entry[1]:
                tx.delete(entry[1].pop(0))
                entry[0] += 1
        if kind == "reset":
            model.epoch[sid] = model.epoch.get(sid, 1) + 1
    elif kind == "relabel" and sid in model.logs and model.logs[sid][1]:
        old_epoch = rng.choice(model.logs[sid][1]).epoch
        new_epoch = model.epoch.get(sid, 1) + 1
        tx.relabel_events(sid, old_epoch, new_epoch)
        model.logs[sid][1] = [ev if ev.epoch != old_epoch else
                              SyncEvent(ev.stream_id, new_epoch, ev.seq, ev.idempotency_key, ev.payload_hash,
                                        ev.payload, ev.producer, ev.committed_at, ev.tx_offset)
                              for ev in model.logs[sid][1]]
        model.epoch[sid] = new_epoch
    elif kind == "checkpoint":
        key = (f"c{rng.randrange(6)}",)
        rows = model.pk["sync_checkpoint"]
        row = SyncCheckpoint(key[0], "client", sid, "alice", 1, rng.randrange(100), 1)
        if key in rows and rng.random() < 0.4:
            tx.delete(rows.pop(key))
        elif key in rows:
            tx.update(rows[key], row)
            rows[key] = row
        else:
            tx.insert(row)
            rows[key] = row
    elif kind == "floor":
        db.epoch_floor += 1
        model.floors = (db.epoch_floor, db.version_floor)


def _drive(seed: int, steps: int = 400) -> tuple[int, int]:
    """Random transactions on a Db and the model, images taken at random points (a Capturer's and,
    sometimes, a full capture's); every image checked against the model's state at its moment,
    when taken and again at the end.  Returns (images, streams copied by the Capturer)."""
    rng = random.Random(seed)
    db, model = Db(), Model()
    take = snapshot.Capturer()
    images: list[tuple[snapshot.Image, tuple[Any, ...]]] = []
    for _ in range(steps):
        saved = copy.deepcopy((model.logs, model.epoch, model.pk, model.floors))
        tx = Txn(db)
        for _ in range(rng.randint(1, 4)):
            _step(rng, db, tx, model)
        if rng.random() < 0.3:
            tx.rollback()
            created = [sid for sid in model.logs if sid not in saved[0]]
            model.logs, model.epoch, model.pk, model.floors = saved
            for sid in created:  # a log is never removed: the rollback of its first event leaves it empty
                model.logs[sid] = [1, []]
        if rng.random() < 0.25:
            image = take(db, len(images) + 1, "h")
            expected = model.image()
            assert _seen(image) == expected, f"seed {seed}: image {len(images)} is not the state at its capture"
            if rng.random() < 0.3:  # a full capture writes the same bytes (the streams in the same order)
                assert list(snapshot.encode(image)) == list(snapshot.encode(snapshot.capture(db, image.offset, "h")))
            images.append((image, expected))
    for i, (image, expected) in enumerate(images):
        assert _seen(image) == expected, f"seed {seed}: image {i} changed after later commits"
    return len(images), 0


@pytest.mark.parametrize("seed", range(12))
def test_every_captured_image_is_the_state_at_its_moment(seed: int) -> None:
    images, _ = _drive(seed)
    assert images > 20


def test_a_capture_copies_only_the_streams_changed_since_the_previous_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hold is proportional to what changed: after the first image, one append to each of k of
    N streams makes the next image copy k stream logs, not N (counted, not timed)."""
    copied: list[str] = []
    real = StreamLog.captured

    def counted(self: StreamLog) -> Any:
        copied.append(self.stream_id)
        return real(self)

    monkeypatch.setattr(StreamLog, "captured", counted)
    rng = random.Random(7)
    db = Db()
    sids = [f"t{i:04d}" for i in range(500)]
    for sid in sids:
        db._insert(_event(rng, sid, 1, 1))
    take = snapshot.Capturer()
    first = take(db, 1, "h")
    assert len(copied) == 500 and len(first.logs) == 500
    copied.clear()
    changed = sids[10:13]
    for sid in changed:
        db._insert(_event(rng, sid, 1, 2))
    db._insert(_event(rng, "t9999", 1, 1))  # a new stream: copied too, last (db.logs' order)
    second = take(db, 2, "h")
    assert sorted(copied) == [*changed, "t9999"]
    assert [sid for sid, _, _ in second.logs] == [*sids, "t9999"]
    copied.clear()
    assert take(db, 3, "h").logs == second.logs and copied == []  # nothing changed: nothing copied
    other = Db()  # another Db: copied whole, nothing of the first one's kept
    other._insert(_event(rng, "u", 1, 1))
    assert [sid for sid, _, _ in take(other, 1, "h").logs] == ["u"]


def test_the_snapshotter_captures_incrementally(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler's capture is the Capturer's: its second snapshot copies only the changed stream."""
    copied: list[str] = []
    real = StreamLog.captured
    monkeypatch.setattr(StreamLog, "captured", lambda self: (copied.append(self.stream_id), real(self))[1])
    rng = random.Random(3)
    db = Db()
    for sid in ("a", "b", "c"):
        db._insert(_event(rng, sid, 1, 1))
    snaps = snapshot.Snapshotter(tmp_path, every=1, keep=2, wait_durable=lambda offset: None)
    assert snaps.maybe(db, 1, "h1")
    snaps.join()
    db._insert(_event(rng, "b", 1, 2))
    copied.clear()
    assert snaps.maybe(db, 2, "h2")
    snaps.join()
    assert copied == ["b"]
    assert snapshot.differs(snapshot.read(tmp_path / snapshot.file_name(2)), db) is None



def test_a_primed_snapshotter_views_only_what_changed_since_the_start(tmp_path: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The server primes its Snapshotter at start, before it listens: even the first periodic snapshot
    then views only the streams changed since, and is the state at its moment."""
    copied: list[str] = []
    real = StreamLog.captured
    monkeypatch.setattr(StreamLog, "captured", lambda self: (copied.append(self.stream_id), real(self))[1])
    rng = random.Random(5)
    db = Db()
    for sid in ("a", "b", "c", "d"):
        db._insert(_event(rng, sid, 1, 1))
    snaps = snapshot.Snapshotter(tmp_path, every=1, keep=2, wait_durable=lambda offset: None)
    snaps.prime(db)
    assert sorted(copied) == ["a", "b", "c", "d"]
    copied.clear()
    db._insert(_event(rng, "c", 1, 2))
    assert snaps.maybe(db, 1, "h1")
    snaps.join()
    assert copied == ["c"]
    assert snapshot.differs(snapshot.read(tmp_path / snapshot.file_name(1)), db) is None


def test_a_snapshot_written_while_its_streams_change_is_the_state_at_its_capture(tmp_path: Any) -> None:
    """The writer thread reads views that share the live logs' chunks (the last one extended in place)
    while the engine's thread appends to, drops from and rolls back the same streams: the file is
    still the state at the capture (a model of plain lists, not the Db, says what that was)."""
    rng = random.Random(11)
    db = Db()
    model: dict[str, list[SyncEvent]] = {}
    floors: dict[str, int] = {}

    def append(sid: str) -> None:
        events = model.setdefault(sid, [])
        floors.setdefault(sid, 1)
        ev = _event(rng, sid, 1, floors[sid] + len(events))
        db._insert(ev)
        events.append(ev)

    for i in range(300):
        for _ in range(100):
            append(f"w{i:03d}")
    snaps = snapshot.Snapshotter(tmp_path, every=1, keep=2, wait_durable=lambda offset: None)
    snaps.prime(db)
    for sid in ("w001", "w002"):
        append(sid)
    expected = {sid: (floors[sid], tuple(events)) for sid, events in model.items()}
    assert snaps.maybe(db, 1, "h")
    changed = 0
    while snaps.busy or changed < 3000:  # the engine goes on while the file is written
        sid = f"w{rng.randrange(300):03d}"
        if rng.random() < 0.2 and model[sid]:
            db._delete(model[sid].pop(0))
            floors[sid] += 1
        else:
            tx = Txn(db)
            ev = _event(rng, sid, 1, floors[sid] + len(model[sid]))
            tx.insert(ev)
            if rng.random() < 0.3:
                tx.rollback()
            else:
                model[sid].append(ev)
        changed += 1
    snaps.join()
    written = snapshot.read(tmp_path / snapshot.file_name(1))
    assert {sid: (floor, tuple(events)) for sid, floor, events in written.logs} == expected
