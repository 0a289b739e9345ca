"""Crash safety (DESIGN §5, ADR-0001 decision 9, DUR-1, DUR-2, SEQ-2).

``test_sigkill_under_load`` runs ``crash_worker.py`` -- the engine and its data directory under
load, group commit on a background thread -- and SIGKILLs it at random moments, many times over
one data directory, restarting it each time.  Against what the worker printed before dying it
checks: every offset reported durable is still in the log with the same hash (the chain makes
that the same record); the log's chain verifies and every stream's retained seqs are contiguous
from floor to head; ``verify-log`` re-executes the log to the same digest; and each restart after
a kill moves every epoch (and the epoch floor) past every epoch the previous runs showed,
including epochs of transactions that never became durable.  It ends with a clean SIGTERM
shutdown, after which a restart bumps nothing.  The seed is printed; set ``SYNCREF_CRASH_SEED``
to repeat a schedule (kill timing still varies with the machine).

The other tests pin the durable offset to COMMIT: it must not move while COMMIT is blocked or
before it returns, nor when COMMIT or the inserts fail (a hook and a real full disk).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import pytest

from reference.durability import DB_FILE, INSERT_ROWS, DurabilityError, GroupCommitWriter, LogStore, restart, sync
from reference.engine import Engine
from reference.log import TxRecord
from reference.replay import verify_log
from spec.auth import Claims
from spec.invariants import layout_ok
from spec.policy import Policy, StreamClass
from spec.values import SyncStream

WORKER = Path(__file__).with_name("crash_worker.py")
WORKER_POLICY = Policy(classes=(("s.", StreamClass("short", retain_count=40)),))  # as in crash_worker.py
MAX_UNDURABLE = 8
SLOW_COMMIT_MS = 4
KILLS = 16


@dataclass
class Run:
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)


def spawn(data: Path, seed: int, log: Path) -> tuple[subprocess.Popen[str], Run, threading.Thread]:
    with open(log, "a") as err:
        proc = subprocess.Popen([sys.executable, str(WORKER), str(data), "--seed", str(seed),
                                 "--max-undurable", str(MAX_UNDURABLE), "--slow-commit-ms", str(SLOW_COMMIT_MS)],
                                stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
    run = Run()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.endswith("\n"):  # a line cut by the kill is not a report
                run.lines.append(line)
                if line.startswith("R "):
                    run.ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, run, reader


def check_links(data: Path, durable: dict[int, str]) -> None:
    """Cheap, after every kill: offsets 1..n, each prev_hash the previous hash, every durable report kept.
    (The worker's own restart then recomputes every hash: Engine.recover refuses a broken chain.)"""
    conn = sqlite3.connect((data / DB_FILE).resolve().as_uri() + "?mode=ro", uri=True)
    rows = conn.execute('SELECT "offset", prev_hash, hash FROM commit_log ORDER BY "offset"').fetchall()
    conn.close()
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a[2] == b[1] for a, b in pairwise(rows))
    hashes = {off: h for off, _, h in rows}
    lost = [off for off, h in durable.items() if hashes.get(off) != h]
    assert not lost, f"offsets reported durable but lost or changed after restart: {lost[:10]}"


def check_store(data: Path) -> tuple[int, str]:
    """Full: recompute the chain, and every stream's retained seqs run floor..head."""
    store = LogStore.open(data, readonly=True)
    try:
        records = list(store.iter_records())
        assert not store.clean_at_open
    finally:
        store.close()
    eng = Engine.recover(records, clean=True, now=0, policy=WORKER_POLICY)  # raises if the chain breaks
    for row in eng.db.pk["sync_stream"].values():
        assert isinstance(row, SyncStream)
        log = eng.db.logs.get(row.stream_id)
        events = log.events if log is not None else []
        assert layout_ok(row, events), row  # SEQ-1: contiguous to head; floor..head in the current epoch
        assert all(a.epoch <= b.epoch <= row.epoch for a, b in pairwise(events)), row
    return len(records), eng.head_hash


def test_sigkill_under_load(tmp_path: Path) -> None:
    seed = int(os.environ.get("SYNCREF_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash schedule seed {seed}")
    rng = random.Random(seed)
    data, errlog = tmp_path / "data", tmp_path / "worker.stderr"
    durable: dict[int, str] = {}  # offset -> hash, as reported by every run
    max_seen = 0  # the highest epoch any run showed
    epochs: dict[str, int] = {}
    kills = verified = 0
    started = time.monotonic()
    for i in range(KILLS + 1):
        proc, run, reader = spawn(data, seed + i, errlog)
        early = i % 5 == 4  # some kills land during startup and recovery
        if early:
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            assert run.ready.wait(20), f"worker {i} never became ready: {errlog.read_text()[-2000:]}"
            time.sleep(rng.uniform(0.05, 0.4))
        if i == KILLS:  # the last run stops cleanly
            run.ready.wait(20)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, errlog.read_text()[-2000:]
        else:
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL, f"worker {i} died by itself: {errlog.read_text()[-2000:]}"
            kills += 1
        reader.join(30)
        for line in run.lines:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "R":
                ready = json.loads(rest)
                assert ready["clean"] == (i == 0), ready  # every restart but the first follows a kill
                shown = [*ready["epochs"].values(), ready["epoch_floor"]]
                if i > 0:
                    assert min(shown) > max_seen, f"run {i}: epochs {ready} do not exceed {max_seen}"
                max_seen = max(max_seen, *shown)
                epochs = dict(ready["epochs"])
            elif kind == "E":
                sid, epoch = rest.split()
                max_seen = max(max_seen, int(epoch))
                epochs[sid] = int(epoch)
            elif kind == "D":
                off, digest = rest.split()
                assert durable.setdefault(int(off), digest) == digest, f"offset {off} reported twice, differently"
        if i == KILLS:
            break
        check_links(data, durable)
        if i % 4 == 3 or i == KILLS - 1:
            count, head = check_store(data)
            report = verify_log(data)
            assert report.ok and report.digest == head and report.records == count, report
            verified += 1

    clean_lines = [line for line in run.lines if line.startswith("C ")]
    assert clean_lines, "the clean shutdown did not finish"
    _, off, digest = clean_lines[0].split()
    store = LogStore.open(data, readonly=True)
    assert store.clean_at_open and store.last() == (int(off), digest)
    store.close()
    missing = [o for o, h in durable.items() if o > int(off)]
    assert not missing
    # after a clean shutdown a restart bumps nothing
    proc, run, reader = spawn(data, seed + KILLS + 1, errlog)
    assert run.ready.wait(20), errlog.read_text()[-2000:]
    ready = json.loads(next(line for line in run.lines if line.startswith("R "))[2:])
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    reader.join(30)
    assert ready["clean"] and ready["committed"] == int(off) and ready["epochs"] == epochs, (ready, epochs)
    done = subprocess.run([sys.executable, "-m", "adapters.cli", "verify-log", "--data", str(data), "--json"],
                          capture_output=True, text=True, check=False, timeout=120)
    out = json.loads(done.stdout)
    store = LogStore.open(data, readonly=True)
    assert done.returncode == 0 and out["ok"] and out["digest"] == store.last()[1], done.stdout
    store.close()
    print(f"{kills} kills survived, {len(durable)} offsets reported durable, {out['records']} records, "
          f"{verified + 1} full replays, {time.monotonic() - started:.1f} s")
    assert kills == KILLS and len(durable) > KILLS * 10  # the load was real


# --- the durable offset follows COMMIT ------------------------------------------------------------

CALLER = Claims("a" * 64, frozenset({"sync.append"}), ("*",))


def some_records(n: int, start: Engine | None = None) -> tuple[Engine, list[TxRecord]]:
    eng = start or Engine(max_undurable=10_000)
    for i in range(n):
        eng.admin_call(CALLER, "append_sync_event", (f"s{i % 2}", f"k{eng.committed}", "{}", None, None))
    return eng, eng.take_records()


class HookedStore(LogStore):
    """Runs ``hook`` just before the statement that commits: the COMMIT inside the open SQLite
    transaction, or a batch's single INSERT (a batch of up to ``INSERT_ROWS`` records)."""

    hook: ClassVar[list[Callable[[], None]]] = []

    def _commit(self, *args: Any) -> None:
        for h in self.hook:
            h()
        super()._commit(*args)


@pytest.mark.parametrize("n", [7, INSERT_ROWS + 3])
def test_durable_offset_moves_only_after_commit_returns(tmp_path: Path, n: int) -> None:
    store = HookedStore.open(tmp_path)
    reported: list[int] = []
    writer = GroupCommitWriter(store, lambda offset, batch: reported.append(offset))
    _, first = some_records(5)
    writer.append(first)
    assert writer.flush() == 5 and reported == [5]
    in_commit = threading.Event()
    release = threading.Event()
    seen: list[tuple[int, list[int], int]] = []

    def hook() -> None:
        # COMMIT has not run (the rows are written inside the transaction, or, in one statement,
        # not yet): nothing may be durable yet
        rows = store._conn.execute("SELECT count(*) FROM commit_log").fetchone()[0]
        seen.append((writer.durable_offset, list(reported), rows))
        in_commit.set()
        release.wait(10)

    HookedStore.hook = [hook]
    _, more = some_records(n, Engine.recover(first, clean=True, now=0))
    writer.append(more)
    assert in_commit.wait(10)
    time.sleep(0.2)  # COMMIT is "slow": the offset must not move meanwhile
    assert writer.durable_offset == 5 and reported == [5]
    assert not writer.wait_durable(5 + n, timeout=0.1)
    reader = sqlite3.connect(tmp_path / DB_FILE)
    assert reader.execute("SELECT max(\"offset\") FROM commit_log").fetchone()[0] == 5  # not committed
    release.set()
    assert writer.flush() == 5 + n and reported == [5, 5 + n]
    assert reader.execute("SELECT max(\"offset\") FROM commit_log").fetchone()[0] == 5 + n
    assert seen == [(5, [5], 5 if n <= INSERT_ROWS else 5 + n)]
    reader.close()
    HookedStore.hook = []
    writer.close()
    store.close()


@pytest.mark.parametrize("background", [True, False])
def test_failed_commit_never_reports_durable(tmp_path: Path, background: bool) -> None:
    store = HookedStore.open(tmp_path)
    reported: list[int] = []
    writer = GroupCommitWriter(store, lambda offset, batch: reported.append(offset), background=background)
    eng, first = some_records(3)
    writer.append(first)
    assert writer.flush() == 3

    def fail() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    HookedStore.hook = [fail]
    _, more = some_records(4, eng)
    writer.append(more)
    with pytest.raises(DurabilityError, match="disk I/O error"):
        writer.flush()
    HookedStore.hook = []
    assert writer.durable_offset == 3 and reported == [3]
    assert isinstance(writer.error, sqlite3.OperationalError)
    with pytest.raises(DurabilityError):  # no silent retry after a failed write
        writer.append([])
    with pytest.raises(DurabilityError):
        writer.close()
    store.close()
    store = LogStore.open(tmp_path)
    assert store.last()[0] == 3  # the failed batch was rolled back
    store.close()


def test_full_disk_never_reports_durable(tmp_path: Path) -> None:
    store = LogStore.open(tmp_path)
    reported: list[Sequence[TxRecord]] = []
    writer = GroupCommitWriter(store, lambda offset, batch: reported.append(batch))
    eng, first = some_records(2)
    writer.append(first)
    writer.flush()
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}")  # the "disk" is now full
    eng.admin_call(CALLER, "append_sync_event", ("s0", "big", json.dumps(["x" * 200] * 200), None, None))
    writer.append(eng.take_records())
    with pytest.raises(DurabilityError, match="full"):
        writer.flush()
    assert writer.durable_offset == 2 and [b[-1].offset for b in reported] == [2]
    store.close()


def test_commit_blocked_by_another_writer(tmp_path: Path) -> None:
    store = LogStore.open(tmp_path)
    reported: list[int] = []
    writer = GroupCommitWriter(store, lambda offset, batch: reported.append(offset))
    other = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock: the writer's BEGIN must wait
    _, records = some_records(3)
    writer.append(records)
    time.sleep(0.3)
    assert writer.durable_offset == 0 and reported == []
    other.execute("COMMIT")
    assert writer.flush() == 3 and reported == [3]
    other.close()
    writer.close()
    store.close()


def test_recovery_bump_exceeds_a_full_window_of_resets(tmp_path: Path) -> None:
    """The worst case of ADR-0001 decision 9, exactly: every transaction the bound lets run ahead
    of the durable offset resets the same stream; a crash loses them all; the restart must still
    hand out epochs above the last one shown (a margin of max_undurable - 1 would not)."""
    admin = Claims("a" * 64, frozenset({"sync.append", "sync.admin"}), ("*",))
    window = 8
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=1, max_undurable=window)
    eng.admin_call(admin, "append_sync_event", ("s", "k", "{}", None, None))
    eng.admin_call(admin, "append_sync_event", ("t", "k", "{}", None, None))
    sync(eng, writer)
    durable_top = max(s.epoch for s in eng.db.pk["sync_stream"].values() if isinstance(s, SyncStream))
    shown = 0
    while eng.can_commit():
        assert eng.admin_call(admin, "reset_stream_epoch", ("s",)) is None
        row = eng.db.get("sync_stream", ("s",))
        assert isinstance(row, SyncStream)
        shown = row.epoch  # a client without confirmed reads may see this at once
    assert shown == durable_top + window  # the bound let exactly `window` transactions run ahead
    writer.close()  # nothing of the window was handed to the store
    store.close()  # crash
    store = LogStore.open(tmp_path)
    writer = GroupCommitWriter(store, background=False)
    eng = restart(store, writer, now=2, max_undurable=window)
    epochs = [s.epoch for s in eng.db.pk["sync_stream"].values() if isinstance(s, SyncStream)]
    assert min([*epochs, eng.db.epoch_floor]) == shown + 1
    writer.close()
    store.close()
