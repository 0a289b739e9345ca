"""Snapshots (ADR-0011): a state image plus the log after it (DUR-1 across snapshots).

* **Differential.**  Random histories -- appends with duplicate keys, epoch resets, compaction,
  presence, sweeps, disconnects and unclean restarts (recovery records that relabel epochs) --
  with images captured from the *live* engine at random offsets: restarting from any of them
  plus the log's tail gives the same engine (every index, in order; floors; chain head; the
  recovery record of an unclean restart) as restarting from the whole log.
* **Faults.**  A corrupt snapshot (a flipped byte, a cut file, a bad trailer) or a misnamed one:
  each is passed over, named in the recovery report, and an older snapshot (or the whole log) is
  used.  One past the log head is not: the log lost records it held, and the directory is refused
  (ADR-0037); nor is an intact one naming another hash at its offset: another history (ADR-0039).
* **verify-log.**  Replay from zero compares the re-executed state with every snapshot at its
  offset: a planted snapshot whose checksum is right but whose rows disagree with the log is
  reported as a mismatch naming the file and the table; a corrupt one as corrupt.
* **SIGKILL.**  ``crash_worker.py`` with snapshots on is killed mid-snapshot (between the durable
  temp file and the rename) and at random: nothing reported durable is lost, every restart
  uses a snapshot it can trust, and ``verify-log`` finds every snapshot equal to the replay.

``SYNCREF_SNAPSHOT_HISTORIES=N`` runs N random histories instead of the default few.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support.logfiles import write_records

from reference import snapshot
from reference.db import Db
from reference.durability import FORMAT, DamagedLog, GroupCommitWriter, LogStore, restart, shutdown
from reference.engine import Engine
from reference.log import TxRecord
from reference.replay import verify_log
from reference.snapshot import Image, Snapshotter, capture, decode, differs, encode, restore
from spec.auth import Claims
from spec.messages import CallReducer
from spec.policy import Policy, StreamClass
from spec.values import SessionPresence, SyncStream

POLICY = Policy(classes=(("s.", StreamClass("short", retain_count=6)),))
WRITER = Claims("a" * 64, frozenset({"sync.append", "sync.admin", "presence.write", "sync.subscribe"}), ("*",))
STREAMS = ("s.a", "s.b", "x.c")
HISTORIES = int(os.environ.get("SYNCREF_SNAPSHOT_HISTORIES", "6"))


def state(eng: Engine) -> tuple[Any, ...]:
    """Everything recovery rebuilds, order included (dict order is the index's insertion order)."""
    db = eng.db
    return ([(t, list(index.items())) for t, index in db.pk.items()],
            [(sid, log.floor, list(log.events), list(log.by_key.items())) for sid, log in db.logs.items()],
            db.epoch_floor, db.version_floor, eng.committed, eng.durable, eng.head_hash)


def settle(eng: Engine, records: list[TxRecord]) -> None:
    """Everything committed becomes durable (which may commit queued disconnects: repeat)."""
    while True:
        records += eng.take_records()
        eng.advance_durable(eng.committed)
        if not eng.pending_records:
            return


def history(seed: int, n: int = 220) -> tuple[list[TxRecord], list[Image], int]:
    """A random history and images of the live engine at random offsets; the last ``now``."""
    rng = random.Random(seed)
    eng = Engine(POLICY, max_undurable=rng.choice((1, 4, 16)))
    records: list[TxRecord] = []
    images: list[Image] = []
    for i in range(n):
        eng.now += rng.randrange(1, 3_000_000)
        roll = rng.random()
        sid = rng.choice(STREAMS)
        if roll < 0.55:
            key = f"k{i}" if rng.random() < 0.9 else f"k{max(0, i - 2)}"  # some duplicates (no write)
            eng.admin_call(WRITER, "append_sync_event", (sid, key, json.dumps({"i": i}), None, None))
        elif roll < 0.63:
            eng.admin_call(WRITER, "reset_stream_epoch", (sid,))
        elif roll < 0.70:
            eng.compact(eng.now)
        elif roll < 0.80:
            conn = eng.connect(WRITER, confirmed=False)
            eng.handle(conn, CallReducer(i, "upsert_presence", (f"sess{i % 5}", "dev", "node", "online", "", 1000)))
            if rng.random() < 0.5:
                eng.close(conn)  # a "disconnect" transaction
        elif roll < 0.86:
            eng.sweep(eng.now + rng.randrange(0, 5_000_000))
        elif roll < 0.91:
            eng.admin_call(WRITER, "ack_checkpoint", (f"c{i % 3}", sid, eng.db.epoch_floor, rng.randrange(0, 4)))
        elif roll < 0.96:  # an unclean restart: the recovery record relabels the undurable epochs
            records += eng.take_records()
            eng = Engine.recover(list(records), clean=False, now=eng.now, policy=POLICY,
                                 max_undurable=rng.choice((1, 4, 16)))
            settle(eng, records)
        else:
            eng.admin_call(WRITER, "publish_provider_capability", (f"p{i % 4}", '{"gpu": 1}', (5001,), 2, "active"))
        settle(eng, records)
        if rng.random() < 0.08 and eng.committed:
            images.append(capture(eng.db, eng.committed, eng.head_hash))
    records += eng.take_records()
    return records, images, eng.now


def write_log(data: Path, records: list[TxRecord], *, clean: bool) -> None:
    write_records(data, records, clean=clean, policy=POLICY)


def restarted(data: Path, now: int, *, snapshots: bool = True) -> tuple[Engine, list[TxRecord], Any]:
    """Restart ``data`` (consuming its clean marker); the engine, what it appended, the report."""
    store = LogStore.open(data)
    before = store.last()[0]
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now, POLICY, max_undurable=8, snapshots=snapshots)
    appended = list(store.iter_records(before))
    report = store.recovery
    writer.close()
    store.close()
    return eng, appended, report


@pytest.mark.parametrize("seed", range(HISTORIES))
def test_recovery_from_a_snapshot_equals_recovery_from_the_whole_log(tmp_path: Path, seed: int) -> None:
    records, images, now = history(seed)
    assert images and {r.kind for r in records} >= {"reducer", "recovery"}
    rng = random.Random(seed)
    for k, image in enumerate(rng.sample(images, min(3, len(images)))):
        clean = rng.random() < 0.5
        plain, with_snap = tmp_path / f"plain{k}", tmp_path / f"snap{k}"
        write_log(plain, records, clean=clean)
        shutil.copytree(plain, with_snap)
        snapshot.write(with_snap / snapshot.SNAPSHOT_DIR, image)
        want, want_appended, none = restarted(plain, now + 1)
        got, got_appended, report = restarted(with_snap, now + 1)
        assert none.snapshot_offset == 0 and none.tail_records == len(records)
        assert report.snapshot_offset == image.offset and report.rejected == []
        assert report.tail_records == len(records) - image.offset
        assert state(got) == state(want)
        assert got_appended == want_appended and (len(got_appended) == 1) == (not clean)  # the recovery record
        assert verify_log(with_snap).ok


def test_encode_decode_restore_round_trip() -> None:
    records, _images, _ = history(101)
    eng = Engine.recover(records, clean=True, now=0, policy=POLICY)
    image = capture(eng.db, eng.committed, eng.head_hash)
    assert any(rows for _, rows in image.tables) and any(events for _, _, events in image.logs)
    data = b"".join(encode(image))
    assert decode(data) == image
    again = Engine.recover([], clean=True, now=0, policy=POLICY, start=(restore(image), image.offset, image.head_hash))
    assert state(again) == state(eng)
    assert differs(image, eng.db) is None and differs(decode(data), again.db) is None


def test_differs_sees_every_kind_of_difference() -> None:
    records, _, _ = history(7)
    eng = Engine.recover(records, clean=True, now=0, policy=POLICY)
    image = capture(eng.db, eng.committed, eng.head_hash)

    def changed(mutate: Any) -> str | None:
        db = restore(image)
        mutate(db)
        return differs(image, db)

    assert changed(lambda db: None) is None
    assert "floors" in (changed(lambda db: setattr(db, "epoch_floor", db.epoch_floor + 1)) or "")
    assert "floors" in (changed(lambda db: setattr(db, "version_floor", db.version_floor + 1)) or "")
    streams = eng.db.pk["sync_stream"]
    key, row = next(iter(streams.items()))
    assert isinstance(row, SyncStream)
    assert "sync_stream" in (changed(lambda db: db.pk["sync_stream"].__setitem__(
        key, replace(row, head_seq=row.head_seq + 1))) or "")
    assert "sync_stream" in (changed(lambda db: db.pk["sync_stream"].pop(key)) or "")
    sid = next(s for s, log in eng.db.logs.items() if log.events)
    assert sid in (changed(lambda db: db.logs[sid].pop_last()) or "")
    assert sid in (changed(lambda db: setattr(db.logs[sid], "floor", db.logs[sid].floor + 1)) or "")
    pres = next(iter(eng.db.pk["session_presence"].values()))
    assert isinstance(pres, SessionPresence)
    extra = replace(pres, session_id="zz")
    assert "only in log" in (changed(lambda db: db.pk["session_presence"].__setitem__(("zz",), extra)) or "")


def _planted(tmp_path: Path) -> tuple[Path, list[TxRecord], Image]:
    records, images, _ = history(3)
    data = tmp_path / "data"
    write_log(data, records, clean=True)
    eng = Engine.recover(records[:images[0].offset], clean=True, now=0, policy=POLICY)
    return data, records, capture(eng.db, eng.committed, eng.head_hash)


def test_a_corrupt_or_unbound_snapshot_is_passed_over_and_reported(tmp_path: Path) -> None:
    data, records, older = _planted(tmp_path)
    later = Engine.recover(records[:len(records) - 5], clean=True, now=0, policy=POLICY)
    newer = capture(later.db, later.committed, later.head_hash)
    directory = data / snapshot.SNAPSHOT_DIR
    snapshot.write(directory, older)
    want, _, _ = restarted(shutil.copytree(data, tmp_path / "ref"), 10**15, snapshots=False)
    good_bytes = b"".join(encode(newer))
    newest = directory / snapshot.file_name(newer.offset)
    faults = {
        "a flipped byte": good_bytes[:40] + bytes([good_bytes[40] ^ 1]) + good_bytes[41:],
        "a cut file": good_bytes[: len(good_bytes) // 2],
        "no trailer": good_bytes[: good_bytes.rfind(b"{")],
    }
    expected = {"a flipped byte": "checksum", "a cut file": "trailer", "no trailer": "trailer"}
    for fault, content in faults.items():
        case = shutil.copytree(data, tmp_path / fault.replace(" ", "-"))
        (case / snapshot.SNAPSHOT_DIR / newest.name).write_bytes(content)
        (case / snapshot.SNAPSHOT_DIR / "snap-000000000001.tmp").write_bytes(b"half")  # a crash mid-write
        got, _, report = restarted(case, 10**15)
        assert report.snapshot_offset == older.offset, fault  # fell back to the older one
        assert [name for name, _ in report.rejected] == [newest.name], fault
        assert expected[fault] in report.rejected[0][1], (fault, report.rejected)
        assert expected[fault] in report.lines()[0] and "using " + snapshot.file_name(older.offset) in report.lines()[0]
        assert state(got)[:5] == state(want)[:5]
        assert not list((case / snapshot.SNAPSHOT_DIR).glob("*.tmp"))  # the writable start removed it
        check = {c.file: c for c in verify_log(case).snapshots}
        assert check[newest.name].status == "corrupt"
        assert check[snapshot.file_name(older.offset)].status == "match"
    # intact but naming another hash at an offset the log holds: another history (ADR-0039) -- not
    # passed over (as before ADR-0039: the directory mixes two histories, and the next snapshot would
    # have pruned the stranger), refused by the writable open before anything is written; verify-log
    # replays and reports it as before ("mismatch": its chain head is not the replay's)
    case = shutil.copytree(data, tmp_path / "another-log")
    (case / snapshot.SNAPSHOT_DIR / newest.name).write_bytes(b"".join(encode(Image(
        newer.offset, "f" * 64, newer.epoch_floor, newer.version_floor, newer.tables, newer.logs))))
    with pytest.raises(DamagedLog, match=f"snapshot {newest.name} names record {newer.offset} with hash "
                                         "ffffffffffffffff... .* tell different histories"):
        restarted(case, 10**15)
    check = {c.file: c for c in verify_log(case).snapshots}
    assert check[newest.name].status == "mismatch" and "chain head" in check[newest.name].reason
    # misnamed: passed over too; with nothing usable, the whole log
    case = shutil.copytree(data, tmp_path / "misnamed")
    for p in (case / snapshot.SNAPSHOT_DIR).iterdir():
        p.unlink()
    (case / snapshot.SNAPSHOT_DIR / snapshot.file_name(older.offset + 1)).write_bytes(b"".join(encode(older)))
    got, _, report = restarted(case, 10**15)
    reasons = dict(report.rejected)
    assert report.snapshot_offset == 0 and report.tail_records == len(records)
    assert "does not match its offset" in reasons[snapshot.file_name(older.offset + 1)]
    assert state(got)[:5] == state(want)[:5]
    # past the log head: not passed over -- the log lost acknowledged records (or the snapshot is
    # another log's, which cannot be told), so the directory is refused before anything is written
    # (ADR-0037; failed before: passed over as "past the log head" and the shorter log served)
    case = shutil.copytree(data, tmp_path / "beyond")
    ahead = Image(len(records) + 10, "a" * 64, 1, 1, newer.tables, newer.logs)
    snapshot.write(case / snapshot.SNAPSHOT_DIR, ahead)
    with pytest.raises(DamagedLog, match=snapshot.file_name(ahead.offset)):
        restarted(case, 10**15)
    out = subprocess.run([sys.executable, "-m", "adapters.cli", "verify-log", "--data", str(case)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 1 and snapshot.file_name(ahead.offset) in out.stderr, out.stderr


def test_verify_log_detects_a_snapshot_that_disagrees_with_the_log(tmp_path: Path) -> None:
    data, _, image = _planted(tmp_path)
    directory = data / snapshot.SNAPSHOT_DIR
    snapshot.write(directory, image)
    report = verify_log(data)
    assert report.ok and [(c.file, c.status) for c in report.snapshots] == [(snapshot.file_name(image.offset),
                                                                            "match")]
    # planted: one event's payload changed, the checksum recomputed -- only replay parity can tell
    sid, _floor, events = next(x for x in image.logs if x[2])
    ev = events[-1]
    forged = replace(ev, payload='{"forged": true}')
    logs = tuple((s, f, (*e[:-1], forged) if s == sid else e) for s, f, e in image.logs)
    snapshot.write(directory, Image(image.offset, image.head_hash, image.epoch_floor, image.version_floor,
                                    image.tables, logs))
    report = verify_log(data)
    assert not report.ok and report.mismatch is None  # the log itself is fine
    (check,) = report.snapshots
    assert check.status == "mismatch" and sid in check.reason
    out = subprocess.run([sys.executable, "-m", "adapters.cli", "verify-log", "--data", str(data), "--json"],
                         capture_output=True, text=True, check=False, timeout=120)
    shown = json.loads(out.stdout)
    assert out.returncode == 1 and not shown["ok"] and shown["snapshots"][0]["status"] == "mismatch", shown
    # a planted floor difference too
    snapshot.write(directory, Image(image.offset, image.head_hash, image.epoch_floor + 1, image.version_floor,
                                    image.tables, image.logs))
    (check,) = verify_log(data).snapshots
    assert check.status == "mismatch" and "floors" in check.reason


def test_snapshotter_takes_one_every_n_records_and_keeps_the_newest(tmp_path: Path) -> None:
    directory = tmp_path / "snaps"
    waited: list[int] = []
    done = threading.Event()
    snaps = Snapshotter(directory, 10, 2, waited.append, on_done=lambda p, s: done.set())
    db = Db()
    assert not snaps.maybe(db, 9, "h9")
    for offset in (10, 25, 31, 40, 55):
        done.clear()
        took = snaps.maybe(db, offset, f"h{offset}")
        assert took == (offset in (10, 25, 40, 55)), offset
        if took:
            assert done.wait(10)
            snaps.join()
    assert waited == [10, 25, 40, 55]  # the rename waited until each offset was durable
    assert [o for o, _ in snapshot.listing(directory)] == [55, 40]
    (directory / snapshot.file_name(90)).write_bytes(b"from a future the log lost")
    snaps.take(capture(db, 60, "h60"))
    snaps.join()
    assert [o for o, _ in snapshot.listing(directory)] == [90, 60, 55]  # past the newest: kept (ADR-0037)
    assert not Snapshotter(directory, 0, 2, waited.append).maybe(db, 10**6, "h")  # 0: never
    with pytest.raises(ValueError):
        Snapshotter(directory, -1, 2, waited.append)


def test_a_failed_snapshot_leaves_no_file_and_is_reported(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def never_durable(offset: int) -> None:
        raise RuntimeError("the writer failed")

    snaps = Snapshotter(tmp_path, 1, 2, never_durable, on_error=errors.append)
    assert snaps.maybe(Db(), 5, "h")
    snaps.join()
    assert len(errors) == 1 and not list(tmp_path.iterdir())


def test_snapshot_defaults_are_pinned() -> None:
    from adapters.server import ServerConfig

    assert snapshot.DEFAULT_SNAPSHOT_EVERY == 50_000 and snapshot.DEFAULT_SNAPSHOT_KEEP == 2
    cfg = ServerConfig(data_dir=Path("x"))
    assert (cfg.snapshot_every, cfg.snapshot_keep) == (50_000, 2)
    assert snapshot.LOG_FORMAT == FORMAT  # a snapshot's rows have the log's row shapes


def test_a_server_config_sets_the_snapshot_interval(tmp_path: Path) -> None:
    import argparse

    from adapters.commands import ConfigError, load_config

    args = argparse.Namespace(dev=False, host=None, port=None, database=None, data=str(tmp_path))
    conf = tmp_path / "c.toml"
    conf.write_text("[server]\nsnapshot_every = 1000\nsnapshot_keep = 3\n")
    cfg = load_config(conf, args)
    assert (cfg.snapshot_every, cfg.snapshot_keep) == (1000, 3)
    conf.write_text("[server]\nsnapshot_keep = 0\n")
    with pytest.raises(ConfigError, match="snapshot_keep: at least 1"):
        load_config(conf, args)
    conf.write_text('[server]\nsnapshot_every = "often"\n')
    with pytest.raises(ConfigError, match="snapshot_every: expected int"):
        load_config(conf, args)


def test_a_clean_shutdown_after_a_snapshot_restart_keeps_the_marker(tmp_path: Path) -> None:
    data, records, image = _planted(tmp_path)
    snapshot.write(data / snapshot.SNAPSHOT_DIR, image)
    store = LogStore.open(data)
    writer = GroupCommitWriter(store)
    eng = restart(store, writer, 10**15, POLICY)
    assert store.recovery is not None and store.recovery.snapshot_offset == image.offset
    shutdown(eng, writer, store)
    store = LogStore.open(data, readonly=True)
    assert store.clean_at_open and store.last() == (len(records), records[-1].hash)
    store.close()


# --- SIGKILL during snapshot writing ----------------------------------------------------------------

WORKER = Path(__file__).with_name("crash_worker.py")


def test_sigkill_during_snapshots_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("SYNCREF_CRASH_SEED", random.randrange(1 << 30)))
    print(f"snapshot crash seed {seed}")
    rng = random.Random(seed)
    data, errlog = tmp_path / "data", tmp_path / "worker.stderr"
    durable: dict[int, str] = {}
    mid_snapshot = used = 0
    for i in range(7):
        in_snapshot = i % 2 == 0  # even runs: killed between the durable temp file and the rename
        with open(errlog, "a") as err:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(data), "--seed", str(seed + i),
                                     "--max-undurable", "8", "--slow-commit-ms", "2", "--snapshot-every", "40",
                                     "--snapshot-stall-ms", "400" if in_snapshot else "0"],
                                    stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if in_snapshot and line.startswith("W "):
                break
            if not in_snapshot and line.startswith("R "):
                threading.Timer(rng.uniform(0.3, 1.5), proc.kill).start()
        proc.kill()
        assert proc.wait(30) == -signal.SIGKILL, errlog.read_text()[-2000:]
        lines += proc.stdout.read().splitlines(keepends=True)
        if in_snapshot:
            assert list((data / snapshot.SNAPSHOT_DIR).glob("*.tmp")), "the kill did not land mid-snapshot"
            mid_snapshot += 1
        for line in lines:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "D" and line.endswith("\n"):
                off, digest = rest.split()
                durable[int(off)] = digest
            elif kind == "R" and line.endswith("\n"):
                ready = json.loads(rest)
                assert ready["rejected"] == [], ready  # an interrupted snapshot is never half-visible
                used += ready["snapshot"] > 0
                print(f"run {i}: restarted from snapshot {ready['snapshot']} + {ready['tail']} records")
        store = LogStore.open(data, readonly=True)
        lost = [off for off, h in durable.items() if store.hash_at(off) != h]
        store.close()
        assert not lost, f"offsets reported durable but lost: {lost[:10]}"
    report = verify_log(data)
    assert report.ok, report
    assert report.snapshots and all(c.status == "match" for c in report.snapshots), report.snapshots
    assert mid_snapshot >= 3 and used >= 2, (mid_snapshot, used)


@pytest.mark.parametrize("failing", ["write", "fsync", "directory fsync"])
def test_a_snapshot_write_on_a_failing_disk_names_the_step_and_never_leaves_a_half_written_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """EIO from the file's write or fsync: the temp file is removed, nothing is renamed, the error
    names the step.  EIO from the directory fsync after the rename: the file is whole (its contents
    were fsynced first) and reads back; the error says so.  (Against a real failing filesystem:
    tests/adapters/test_storage_faults.py.)"""
    eng = Engine.recover(history(1)[0][:40], clean=True, now=0, policy=POLICY)
    image = capture(eng.db, eng.committed, eng.head_hash)
    directory = tmp_path / snapshot.SNAPSHOT_DIR
    directory.mkdir()
    real_fsync, real_open = os.fsync, open
    dir_fds: set[int] = set()

    def fsync(fd: int) -> None:
        if (failing == "fsync" and fd not in dir_fds) or (failing == "directory fsync" and fd in dir_fds):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    real_os_open = os.open

    def os_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        fd = real_os_open(path, flags, *args, **kw)
        if Path(path) == directory:
            dir_fds.add(fd)
        return fd

    class FailingFile:
        def __init__(self, f: Any) -> None:
            self._f = f

        def __enter__(self) -> FailingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self._f.close()

        def write(self, data: bytes) -> int:
            raise OSError(5, "Input/output error")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._f, name)

    def failing_open(path: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_open(path, mode, *args, **kw)
        return FailingFile(f) if failing == "write" and str(path).endswith(".tmp") else f

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(snapshot, "open", failing_open, raising=False)
    with pytest.raises(OSError) as caught:
        snapshot.write(directory, image)
    monkeypatch.undo()
    name = snapshot.file_name(image.offset)
    tmp_name = name.removesuffix(".json") + ".tmp"
    if failing == "directory fsync":
        assert str(caught.value) == (f"[Errno 5] fsync of the snapshot directory failed after {name} was renamed into "
                                     "place: Input/output error")
        assert sorted(p.name for p in directory.iterdir()) == [name]
        assert snapshot.read(directory / name) == image  # whole
    else:
        step = {"write": f"writing {tmp_name}", "fsync": f"fsync of {tmp_name}"}[failing]
        assert str(caught.value) == f"[Errno 5] {step} failed: Input/output error"
        assert list(directory.iterdir()) == []  # neither the temp file nor a snapshot
