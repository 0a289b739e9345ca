"""Storage faults against ``syncref serve``: a full disk, a torn log tail, a corrupted record.

* **Disk full** -- a real size-limited filesystem (a small tmpfs, mounted here as root; skipped with
  the reason when the machine does not allow mounts).  The server acknowledges appends until the
  disk fills, then stops acknowledging: the writer's failure ends the process with one line saying
  why.  Started again while the disk is still full it refuses in one line; once space returns
  (the tmpfs is remounted larger) it starts, every acknowledged append is there with its seq, and
  ``verify-log`` agrees.
* **Torn tail** -- the last transaction's WAL frame cut mid-write (what a crash during the write
  leaves): restart recovers to the last intact record, and ``verify-log`` counts the same records.
* **Corrupted middle record** -- a record's stored delta rewritten: restart refuses with one line
  naming the offset, and ``verify-log`` names the same offset.
* **EIO at the OS boundary** -- the data directory on a fault-injecting FUSE filesystem
  (``tests/support/faultfs.py``; skipped with the reason without root, ``/dev/fuse`` or libfuse3):
  fsync or write of the WAL fails under four concurrent confirmed-read clients (the server stops
  acknowledging, names the failed operation in one line, refuses to start while the disk fails,
  recovers with everything acknowledged once it heals); one failed fsync followed by good ones
  ("fsyncgate": the failed batch is never acknowledged -- a planted retrying writer is); reads of
  the log failing at start (start and ``verify-log`` refuse in one line); snapshot writes failing
  (the server keeps serving, no half-written snapshot is ever visible).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.server import SYNCREF, serve_process

from adapters.auth import AuthConfig, Authenticator, KeyStore
from adapters.sdk import Backoff, Connection, SdkError
from spec.schema import SCOPES


def token(data: Path) -> str:
    return Authenticator(AuthConfig(), KeyStore.load_or_create(data)).mint(
        subject="storage", scopes=SCOPES, streams=("*",), ttl_s=None)


async def append_until_refused(url: str, tok: str, n: int, pad: int, prefix: str = "k",
                               errors: list[str] | None = None) -> list[tuple[str, int]]:
    """Append up to ``n`` events (confirmed: an answer means durable); stop at the first failure
    (its text goes to ``errors``)."""
    acked: list[tuple[str, int]] = []
    conn = Connection(url, token=tok, reconnect=False, call_timeout=20, backoff=Backoff(base=0.05, cap=0.1))
    try:
        for i in range(n):
            key = f"{prefix}{i}"
            try:
                out = await conn.call("append_sync_event", "s.disk", key, json.dumps({"i": i, "pad": "x" * pad}),
                                      None, None)
            except SdkError as exc:
                if errors is not None:
                    errors.append(str(exc))
                break
            assert isinstance(out.value, int)
            acked.append((key, out.value))
    finally:
        await conn.close()
    if errors is not None:
        errors.extend(f"closed {d.code}: {d.reason}" for d in conn.disconnects if d.code is not None)
    return acked


CLIENTS, ARM_AFTER = 4, 24


async def append_concurrently(url: str, tok: str, clients: int, each: int, arm_after: int, errors: list[str],
                              arm: Callable[[], None]) -> list[tuple[str, int]]:
    """``clients`` connections append at once (confirmed reads: an answer means durable), each up to
    ``each`` events, until its first failure (``errors`` gets ``call failed: ...`` and the close).
    ``arm()`` runs once ``arm_after`` appends are acknowledged: the fault starts under load."""
    acked: list[tuple[str, int]] = []

    async def client(c: int) -> None:
        conn = Connection(url, token=tok, reconnect=False, call_timeout=20, backoff=Backoff(base=0.05, cap=0.1))
        try:
            for i in range(each):
                key = f"c{c}-{i}"
                try:
                    out = await conn.call("append_sync_event", "s.disk", key, json.dumps({"c": c, "i": i}), None,
                                          None)
                except SdkError as exc:
                    errors.append(f"call failed: {exc}")
                    break
                assert isinstance(out.value, int)
                acked.append((key, out.value))
                if len(acked) == arm_after:
                    arm()
        finally:
            await conn.close()
        errors.extend(f"closed {d.code}: {d.reason}" for d in conn.disconnects if d.code is not None)

    await asyncio.gather(*(client(c) for c in range(clients)))
    return acked


def stored(data: Path) -> list[tuple[int, str]]:
    """(seq, idempotency key) of every sync_event insert in the log, read without the server."""
    db = sqlite3.connect(f"file:{data / 'syncref.sqlite3'}?mode=ro", uri=True)
    try:
        out = []
        for (changes,) in db.execute('SELECT changes_json FROM commit_log ORDER BY "offset"'):
            for table, _deletes, inserts in json.loads(changes):
                if table == "sync_event":
                    out.extend((row[2], row[3]) for row in inserts)
        return out
    finally:
        db.close()


def verify_log(data: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SYNCREF), "verify-log", "--data", str(data), "--json"], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def serve_once(data: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``syncref serve`` expected to refuse at start (exit 2)."""
    return subprocess.run([str(SYNCREF), "serve", "--data", str(data), "--port", "0"], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk-full test: needs root to mount a size-limited tmpfs (not root here)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(mnt)], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"disk-full test: cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_acknowledging_loses_nothing_and_recovers(small_disk: Path) -> None:
    data = small_disk / "data"
    tok = token(data)
    # stderr goes to the pipe: a log file on the full disk could not be written
    proc = subprocess.Popen([str(SYNCREF), "serve", "--data", str(data), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    m = re.match(r"syncref listening on (\S+)", proc.stdout.readline())
    assert m, proc.stderr.read() if proc.stderr else ""
    acked = asyncio.run(append_until_refused(m.group(1), tok, 5000, 4000))
    code = proc.wait(30)
    log = proc.stderr.read() if proc.stderr else ""
    assert code == 1 and len(acked) >= 5, (code, len(acked), log)
    last = log.strip().splitlines()[-1]
    assert last == ("syncref serve: the commit-log writer failed, stopping: the disk is full; nothing acknowledged is "
                    "lost (the calls waiting on the failed write got errors, not acknowledgements); free space and "
                    "start again"), log
    assert "Traceback" not in log
    # still full: it refuses to start in one line -- or, when its recovery record still fits, it
    # starts and fails again at the next write; either way what it acknowledges is durable
    proc = subprocess.Popen([str(SYNCREF), "serve", "--data", str(data), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    m = re.match(r"syncref listening on (\S+)", proc.stdout.readline())
    if m is None:
        err = proc.stderr.read()
        assert proc.wait(30) == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and "is full" in err, err
    else:
        acked += asyncio.run(append_until_refused(m.group(1), tok, 50, 4000, "still-full-"))
        proc.terminate()
        proc.wait(30)
        assert "Traceback" not in proc.stderr.read()
    # space returns
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    with serve_process(data) as served:
        more = asyncio.run(append_until_refused(served.url, tok, 1, 10, "after-"))
        assert more and more[0][1] > acked[-1][1]  # progress, after every acknowledged seq
    events = dict((key, seq) for seq, key in stored(data))
    assert all(events.get(key) == seq for key, seq in acked), "an acknowledged append was lost"
    report = json.loads(verify_log(data).stdout)
    assert report["ok"] and report["clean_shutdown"], report


def _write_and_kill(data: Path, n: int) -> list[tuple[str, int]]:
    tok = token(data)
    with serve_process(data) as served:
        acked = asyncio.run(append_until_refused(served.url, tok, n, 100))
        served.proc.kill()  # SIGKILL: the WAL keeps every frame, nothing checkpointed
        served.proc.wait()
    return acked


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int]]]:
    """A data directory with 12 acknowledged appends (one transaction each), its server SIGKILLed."""
    data = tmp_path_factory.mktemp("killed") / "data"
    return data, _write_and_kill(data, 12)


def test_a_torn_log_tail_recovers_to_the_last_intact_record(killed: tuple[Path, list[tuple[str, int]]],
                                                            tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(killed[0], data, ignore=shutil.ignore_patterns("*-shm"))  # a copied index would be stale
    acked = killed[1]
    assert len(acked) == 12
    before = stored(data)
    assert [k for _, k in before] == [k for k, _ in acked]
    intact = data.parent / "intact"
    shutil.copytree(data, intact, ignore=shutil.ignore_patterns("*-shm"))
    wal = data / "syncref.sqlite3-wal"
    os.truncate(wal, wal.stat().st_size - 1000)  # the last frame cut mid-write
    # A frame torn by a crash was never durable, so no head mark can name it; this cut is made after the
    # fact, in a record that was durable, which the server's mark thread may have recorded in the ms
    # between that commit and the SIGKILL (ADR-0039 would then rightly refuse the start: records lost).
    # The mark is not what this test is about: it goes, as if it had not ticked.
    (data / "syncref.head").unlink(missing_ok=True)
    survived = stored(data)
    # the last transaction is gone (an append, or a later disconnect record), nothing before it
    assert survived == before[: len(survived)] and len(survived) >= len(before) - 1
    report = json.loads(verify_log(data).stdout)
    whole = json.loads(verify_log(intact).stdout)
    assert report["ok"] and report["records"] == report["stored_records"] < whole["stored_records"], (report, whole)
    with serve_process(data) as served:
        status, out = served.stop(timeout=120)  # a loaded machine may take long to stop cleanly
    # was a strict xfail ("known bug"): serve installed its SIGTERM handler only after printing the
    # listening line, so a stop sent at once killed it (status -15) without the clean marker
    assert status == 0 and any("stopped cleanly" in line for line in out), (status, out)
    after = stored(data)
    assert after[: len(survived)] == survived
    report = json.loads(verify_log(data).stdout)
    assert report["ok"] and report["clean_shutdown"], report


def test_a_corrupted_middle_record_is_refused_naming_its_offset(killed: tuple[Path, list[tuple[str, int]]],
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(killed[0], data, ignore=shutil.ignore_patterns("*-shm"))  # a copied index would be stale
    db = sqlite3.connect(data / "syncref.sqlite3")
    offsets = [o for (o,) in db.execute('SELECT "offset" FROM commit_log ORDER BY "offset"')]
    middle = offsets[len(offsets) // 2]
    db.execute('UPDATE commit_log SET changes_json = ? WHERE "offset" = ?', ('[["sync_event",[],[]]]', middle))
    db.commit()
    db.close()
    res = serve_once(data)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and f"offset {middle}" in res.stderr, res.stderr
    out = verify_log(data)
    report = json.loads(out.stdout)
    assert out.returncode == 1 and not report["ok"] and report["mismatch"]["offset"] == middle, report
    # an undecodable row is named the same way
    db = sqlite3.connect(data / "syncref.sqlite3")
    db.execute('UPDATE commit_log SET changes_json = ? WHERE "offset" = ?', ("{not json", middle))
    db.commit()
    db.close()
    res = serve_once(data)
    assert res.returncode == 2 and f"offset {middle}" in res.stderr and "Traceback" not in res.stderr, res.stderr


# --- EIO at the OS boundary: a FUSE filesystem that fails fsync or write on demand ---------------

FAULTFS = Path(__file__).resolve().parents[1] / "support" / "faultfs.py"
EIO_SHIM = Path(__file__).resolve().parents[1] / "support" / "eio_shim.c"


class FaultyDisk:
    """A directory whose I/O fails on demand: ``arm(op, glob, count)`` makes ``op`` (fsync, write or
    read) fail with EIO on matching files, ``disarm(op)`` heals it, ``hits()`` lists the faults
    injected (paths relative to ``mnt``).  ``mechanism`` is ``fuse`` (``tests/support/faultfs.py``
    mounted at ``mnt``: the filesystem fails, preferred) or ``preload`` (``tests/support/eio_shim.c``
    in the server's ``LD_PRELOAD``: libc fails; ``env`` is the environment a server needs for it)."""

    def __init__(self, mechanism: str, mnt: Path, control: Path, env: dict[str, str] | None = None) -> None:
        self.mechanism = mechanism
        self.mnt = mnt
        self.control = control
        self.env = env

    def arm(self, op: str, glob: str, count: int | None = None) -> None:
        tmp = self.control / f".{op}.tmp"  # renamed into place: a rule is never seen half-written
        tmp.write_text(glob if count is None else f"{glob} {count}")
        os.replace(tmp, self.control / op)

    def disarm(self, op: str) -> None:
        (self.control / op).unlink(missing_ok=True)

    def hits(self) -> list[str]:
        log = self.control / "log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.replace(f" {self.mnt}/", " /", 1) for line in lines]


def _fuse_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    probe = subprocess.run([sys.executable, "-c", "import mfusepy"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"mfusepy cannot load libfuse3 (Debian package fuse3): {probe.stderr.strip().splitlines()[-1:]}"
    return None


def _preload_disk(tmp_path: Path) -> FaultyDisk:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("EIO tests: neither FUSE nor gcc (for the LD_PRELOAD shim) is available")
    mnt, control = tmp_path / "disk", tmp_path / "control"
    mnt.mkdir()
    control.mkdir()
    shim = tmp_path / "eio_shim.so"
    res = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(shim), str(EIO_SHIM), "-ldl"],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"EIO tests: the LD_PRELOAD shim does not compile: {res.stderr.strip()[-300:]}")
    env = {**os.environ, "LD_PRELOAD": str(shim), "SYNCREF_EIO_CONTROL": str(control)}
    return FaultyDisk("preload", mnt, control, env)


@pytest.fixture
def faulty_disk(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """FUSE where the machine allows it, else the LD_PRELOAD shim; an ``indirect`` parameter, or
    ``SYNCREF_EIO_MECHANISM=preload`` (to run every EIO test on the fallback), picks one."""
    wanted = getattr(request, "param", os.environ.get("SYNCREF_EIO_MECHANISM", "fuse"))
    missing = _fuse_unavailable() if wanted == "fuse" else "the preload mechanism was asked for"
    if missing is not None:
        if wanted == "fuse":
            print(f"EIO tests: FUSE unavailable ({missing}); using the LD_PRELOAD shim")
        yield _preload_disk(tmp_path)
        while _STARTED:
            proc = _STARTED.pop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return
    backing, mnt, control = tmp_path / "backing", tmp_path / "mnt", tmp_path / "control"
    for d in (backing, mnt, control):
        d.mkdir()
    daemon = subprocess.Popen([sys.executable, str(FAULTFS), str(backing), str(mnt), str(control)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.ismount(mnt):
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            err = daemon.communicate()[1]
            pytest.skip(f"EIO tests: the FUSE filesystem did not mount: {err.strip()[-300:]}")
        time.sleep(0.02)
    try:
        yield FaultyDisk("fuse", mnt, control)
    finally:
        while _STARTED:  # a failed test may leave its server running on the mount
            proc = _STARTED.pop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


_STARTED: list[subprocess.Popen[str]] = []


def start_serve(data: Path, log: Path, *extra: str, command: tuple[str, ...] = (str(SYNCREF),),
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """``syncref serve`` with stderr in ``log`` (off the faulty disk); returns it and its URL."""
    with log.open("w") as err:
        proc = subprocess.Popen([*command, "serve", "--data", str(data), "--port", "0", *extra],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    _STARTED.append(proc)
    assert proc.stdout is not None
    m = re.match(r"syncref listening on (\S+)", proc.stdout.readline())
    assert m, log.read_text()
    return proc, m.group(1)


def check_recovers(data: Path, tok: str, acked: list[tuple[str, int]], log: Path, retry: str = "",
                   env: dict[str, str] | None = None) -> None:
    """Once the disk is healthy: the server starts, every acknowledged append is in the log at its
    acknowledged seq, a new append lands after them, it stops cleanly, and verify-log passes.
    ``retry``: the prefix of a refused call, sent again (same key and payload) before the new one:
    it is answered (deduplicated if its failed write survived) and stored exactly once."""
    proc, url = start_serve(data, log, env=env)
    try:
        again = asyncio.run(append_until_refused(url, tok, 1, 100, retry)) if retry else []
        more = asyncio.run(append_until_refused(url, tok, 1, 10, "after-"))
    finally:
        proc.terminate()
        code = proc.wait(60)
    assert more and more[0][1] > max(seq for _, seq in acked), (more, acked)
    if retry:
        assert len(again) == 1 and again[0][1] > max(seq for _, seq in acked), (again, acked)
        assert [seq for seq, key in stored(data) if key == again[0][0]] == [again[0][1]]
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()
    events = dict((key, seq) for seq, key in stored(data))
    lost = [(key, seq) for key, seq in acked if events.get(key) != seq]
    assert not lost, f"acknowledged appends lost: {lost}"
    report = json.loads(verify_log(data, env).stdout)
    assert report["ok"] and report["clean_shutdown"], report


@pytest.mark.parametrize(("op", "sqlite_name", "operation"), [
    ("fsync", "SQLITE_IOERR_FSYNC", "fsync of the commit log"),
    ("write", "SQLITE_IOERR_WRITE", "a write to the commit log"),
])
def test_an_io_error_on_the_commit_log_stops_acknowledging_loses_nothing_and_recovers(
        faulty_disk: FaultyDisk, tmp_path: Path, op: str, sqlite_name: str, operation: str) -> None:
    io_error_scenario(faulty_disk, tmp_path, op, sqlite_name, operation)


@pytest.mark.parametrize("faulty_disk", ["preload"], indirect=True)
def test_the_ld_preload_fallback_injects_the_same_fsync_failure(faulty_disk: FaultyDisk, tmp_path: Path) -> None:
    """The fallback mechanism (libc's fdatasync fails inside the server) gives the same behaviour and
    the same words; it is what runs where FUSE is not available, so it is kept honest here."""
    assert faulty_disk.mechanism == "preload"
    io_error_scenario(faulty_disk, tmp_path, "fsync", "SQLITE_IOERR_FSYNC", "fsync of the commit log")


def io_error_scenario(faulty_disk: FaultyDisk, tmp_path: Path, op: str, sqlite_name: str, operation: str) -> None:
    data = faulty_disk.mnt / "data"
    tok = token(data)
    proc, url = start_serve(data, tmp_path / "first.log", env=faulty_disk.env)
    errors: list[str] = []
    acked = asyncio.run(append_concurrently(url, tok, CLIENTS, 40, ARM_AFTER, errors,
                                            lambda: faulty_disk.arm(op, "syncref.sqlite3-wal")))
    # once the device fails, only calls whose COMMIT had already returned are answered: at most one
    # in flight per client; every client then stops on an error, and is told why (1011, naming it)
    assert ARM_AFTER <= len(acked) <= ARM_AFTER + CLIENTS, len(acked)
    assert len({seq for _, seq in acked}) == len(acked)
    assert sum(e.startswith("call failed: ") for e in errors) == CLIENTS, errors
    assert f"closed 1011: durability failure: {operation} failed with an I/O error ({sqlite_name})" in errors, errors
    code = proc.wait(30)
    log = (tmp_path / "first.log").read_text()
    assert code == 1 and "Traceback" not in log, (code, log)
    assert f"EIO {op} /data/syncref.sqlite3-wal" in faulty_disk.hits()
    last = log.strip().splitlines()[-1]
    assert last == (f"syncref serve: the commit-log writer failed, stopping: {operation} failed with an I/O error "
                    f"({sqlite_name}); nothing acknowledged is lost (the calls waiting on the failed write got "
                    "errors, not acknowledgements); check the disk (dmesg, SMART); start again once it is healthy: "
                    "the restart recovers, and syncref verify-log --data DIR checks the log"), log
    # still failing: the start refuses in one line (its first write, clearing the clean marker, fails)
    res = serve_once(data, faulty_disk.env)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == (
        f"syncref serve: the disk holding {data} failed: {operation} failed with an I/O error ({sqlite_name}); "
        "nothing was started (nothing acknowledged is lost); check the disk (dmesg, SMART); "
        "start again once it is healthy: the restart recovers, and syncref verify-log --data DIR checks the log")
    faulty_disk.disarm(op)
    check_recovers(data, tok, acked, tmp_path / "after.log", env=faulty_disk.env)


RETRYING_WRITER = (sys.executable, str(Path(__file__).resolve().parents[1] / "support" / "serve_retrying_writer.py"))


@pytest.mark.parametrize("writer", ["syncref", "planted-retry"])
def test_a_failed_fsync_is_never_acknowledged_even_when_the_next_fsync_succeeds(
        faulty_disk: FaultyDisk, tmp_path: Path, writer: str) -> None:
    """"fsyncgate": after a failed fsync a retry may succeed without the data being on disk, so the
    failed batch must stay unacknowledged.  One fsync fails, every later one succeeds: the call
    whose fsync failed gets an error and the server stops.  The planted writer that retries the
    failed write (``tests/support/serve_retrying_writer.py``) acknowledges it: the check can fail."""
    data = faulty_disk.mnt / "data"
    tok = token(data)
    command = RETRYING_WRITER if writer == "planted-retry" else (str(SYNCREF),)
    proc, url = start_serve(data, tmp_path / "first.log", command=command, env=faulty_disk.env)
    acked = asyncio.run(append_until_refused(url, tok, 4, 100))
    assert len(acked) == 4
    faulty_disk.arm("fsync", "syncref.sqlite3-wal", 1)  # exactly one fsync fails
    during = asyncio.run(append_until_refused(url, tok, 3, 100, "during-"))
    assert faulty_disk.hits() == ["EIO fsync /data/syncref.sqlite3-wal"]
    if writer == "planted-retry":
        proc.terminate()
        proc.wait(30)
        assert [key for key, _ in during] == ["during-0", "during-1", "during-2"], during  # the bug is visible
        return
    assert during == [], "the call whose fsync failed was acknowledged"
    code = proc.wait(30)
    log = (tmp_path / "first.log").read_text()
    assert code == 1 and "fsync of the commit log failed with an I/O error (SQLITE_IOERR_FSYNC)" in log, log
    check_recovers(data, tok, acked, tmp_path / "after.log", retry="during-", env=faulty_disk.env)


def _wait_until_no_snapshot_files(snaps: Path, within: float = 30) -> None:
    """Until ``snaps`` holds no ``snap-*`` file (a failed write's temp file is removed by the snapshot
    thread); fails, naming what is left, when one is still there after ``within`` seconds -- a whole
    snapshot (which would never go) or a temp file never removed."""
    deadline = time.monotonic() + within
    while list(snaps.glob("snap-*")):
        assert time.monotonic() < deadline, list(snaps.iterdir())
        time.sleep(0.05)


def test_a_failing_snapshot_write_loses_nothing_and_never_leaves_a_half_written_snapshot(
        faulty_disk: FaultyDisk, tmp_path: Path) -> None:
    """Snapshots (every 5 records here) on a disk whose fsync fails: of the temp file (the snapshot
    is dropped, never renamed), a write of the temp file (the same), then the directory fsync after
    the rename (the file is whole).  The
    server keeps acknowledging throughout -- a snapshot is an optimisation, the log is whole -- and
    says why in one line each time; a restart uses only whole snapshots; verify-log agrees."""
    data = faulty_disk.mnt / "data"
    tok = token(data)
    config = tmp_path / "snap.toml"
    config.write_text("[server]\nsnapshot_every = 5\n")
    snaps = data / "snapshots"
    faulty_disk.arm("fsync", "snap-*.tmp")
    proc, url = start_serve(data, tmp_path / "first.log", "--config", str(config), env=faulty_disk.env)
    try:
        acked = asyncio.run(append_until_refused(url, tok, 12, 100))
        assert len(acked) == 12, "a failing snapshot stopped the acknowledgements"
        deadline = time.monotonic() + 30
        while sum(line.startswith("EIO fsync /data/snapshots/snap-") for line in faulty_disk.hits()) < 2:
            assert time.monotonic() < deadline, faulty_disk.hits()
            time.sleep(0.05)
        # the snapshot thread removes its temp file after the failed fsync: neither a snapshot nor a temp
        # file is left (waited for, not slept on: a loaded machine's thread may take a while)
        _wait_until_no_snapshot_files(snaps)
        # a write of the temp file fails: the same, dropped before it is ever renamed
        faulty_disk.disarm("fsync")
        faulty_disk.arm("write", "snap-*.tmp")
        acked += asyncio.run(append_until_refused(url, tok, 5, 100, "write-"))
        deadline = time.monotonic() + 30
        while not any(line.startswith("EIO write /data/snapshots/snap-") for line in faulty_disk.hits()):
            assert time.monotonic() < deadline, faulty_disk.hits()
            time.sleep(0.05)
        _wait_until_no_snapshot_files(snaps)
        faulty_disk.disarm("write")
        # the directory fsync fails: the renamed snapshot was fsynced before, it is whole
        faulty_disk.arm("fsync", "snapshots")
        acked += asyncio.run(append_until_refused(url, tok, 6, 100, "dir-"))
        deadline = time.monotonic() + 30
        while not any(line == "EIO fsync /data/snapshots" for line in faulty_disk.hits()):
            assert time.monotonic() < deadline, faulty_disk.hits()
            time.sleep(0.05)
        faulty_disk.disarm("fsync")
        acked += asyncio.run(append_until_refused(url, tok, 6, 100, "healed-"))
        assert len(acked) == 29
    finally:
        proc.terminate()
        code = proc.wait(60)
    log = (tmp_path / "first.log").read_text()
    assert code == 0 and "Traceback" not in log, log
    failures = [line for line in log.splitlines() if "snapshot" in line]
    assert any(re.fullmatch(r"writing a state snapshot failed \(the commit log is unaffected; the next snapshot "
                            r"tries again\): \[Errno 5\] fsync of snap-\d+\.tmp failed: Input/output error", line)
               for line in failures), failures
    assert any("fsync of the snapshot directory failed after snap-" in line for line in failures), failures
    assert any(re.search(r"\): \[Errno 5\] writing snap-\d+\.tmp failed: Input/output error$", line)
               for line in failures), failures
    written = sorted(p.name for p in snaps.iterdir())
    assert written and all(re.fullmatch(r"snap-\d{12}\.json", name) for name in written), written
    report = json.loads(verify_log(data, faulty_disk.env).stdout)
    assert report["ok"] and report["snapshots"] and all(s["status"] == "match" for s in report["snapshots"]), report
    check_recovers(data, tok, acked, tmp_path / "after.log", env=faulty_disk.env)


def test_an_io_error_reading_the_log_at_start_is_refused_in_one_line(faulty_disk: FaultyDisk, tmp_path: Path) -> None:
    """A disk that fails *reads* of the log: the start refuses in one line naming the read (exit 2,
    nothing written); verify-log fails without a traceback; healed, everything acknowledged is there."""
    data = faulty_disk.mnt / "data"
    tok = token(data)
    proc, url = start_serve(data, tmp_path / "first.log", env=faulty_disk.env)
    acked = asyncio.run(append_until_refused(url, tok, 6, 100))
    proc.terminate()
    assert proc.wait(60) == 0 and len(acked) == 6
    faulty_disk.arm("read", "syncref.sqlite3*")
    res = serve_once(data, faulty_disk.env)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith(
        f"syncref serve: the disk holding {data} failed: a read of the commit log failed with an I/O error "
        "(SQLITE_IOERR_"), res.stderr
    out = verify_log(data, faulty_disk.env)  # was a traceback (sqlite3.OperationalError: disk I/O error)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"verify-log: the disk holding {data} failed: a read of the commit log failed with an I/O error "
        "(SQLITE_IOERR_"), out.stderr
    faulty_disk.disarm("read")
    check_recovers(data, tok, acked, tmp_path / "after.log", env=faulty_disk.env)


def _metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    from support.server import http

    for family in text_string_to_metric_families(http("GET", f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} is not on the metrics page")


def test_a_failing_head_mark_write_is_counted_and_never_leaves_a_partial_mark(
        faulty_disk: FaultyDisk, tmp_path: Path) -> None:
    """The head mark (ADR-0039) on a disk whose fsync fails: of the mark's temp file (never renamed: no
    mark at all here, the first one failed), then of the data directory after the rename (the mark is
    whole: its contents were fsynced first).  The server keeps acknowledging throughout, says why in a
    log line, and counts each failure in ``syncref_head_mark_errors_total``; healed, the mark catches
    up with the durable offset, and verify-log matches it.  The directory fsync is the review's
    (failed before: no ``EIO fsync /data`` was ever injected -- the mark's rename was not followed by
    one -- and the error counter did not exist)."""
    data = faulty_disk.mnt / "data"
    tok = token(data)
    faulty_disk.arm("fsync", "syncref.head.tmp")
    proc, url = start_serve(data, tmp_path / "first.log", env=faulty_disk.env)
    try:
        acked = asyncio.run(append_until_refused(url, tok, 6, 10))
        assert len(acked) == 6, "a failing head mark stopped the acknowledgements"
        deadline = time.monotonic() + 20
        while _metric(url, "syncref_head_mark_errors_total") < 1:
            assert time.monotonic() < deadline, faulty_disk.hits()
            time.sleep(0.05)
        assert "EIO fsync /data/syncref.head.tmp" in faulty_disk.hits()
        assert not (data / "syncref.head").exists()  # the failed temp file was never renamed
        assert not (data / "syncref.head.tmp").exists()  # but removed
        assert _metric(url, "syncref_head_mark_offset") == 0
        # the directory fsync after the rename fails: the mark is in place, whole
        faulty_disk.disarm("fsync")
        faulty_disk.arm("fsync", "data")
        acked += asyncio.run(append_until_refused(url, tok, 3, 10, "dir-"))
        deadline = time.monotonic() + 20
        while "EIO fsync /data" not in faulty_disk.hits():
            assert time.monotonic() < deadline, faulty_disk.hits()
            time.sleep(0.05)
        errors = _metric(url, "syncref_head_mark_errors_total")
        assert errors >= 2
        whole = json.loads((data / "syncref.head").read_text())
        assert whole["offset"] >= 1 and re.fullmatch(r"[0-9a-f]{32}", whole["log_id"]), whole
        faulty_disk.disarm("fsync")
        acked += asyncio.run(append_until_refused(url, tok, 3, 10, "healed-"))
        assert len(acked) == 12
        deadline = time.monotonic() + 20
        while _metric(url, "syncref_head_mark_offset") != _metric(url, "syncref_durable_offset"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _metric(url, "syncref_head_marks_total") >= 1
    finally:
        proc.terminate()
        code = proc.wait(60)
    log = (tmp_path / "first.log").read_text()
    assert code == 0 and "Traceback" not in log, log
    assert any(re.search(r"writing the head mark syncref\.head failed \(the commit log is unaffected; .*\): "
                         r"\[Errno 5\] fsync of syncref\.head\.tmp failed: Input/output error$", line)
               for line in log.splitlines()), log
    report = json.loads(verify_log(data, faulty_disk.env).stdout)
    assert report["ok"] and report["head_mark"]["status"] == "match", report


def test_a_stop_whose_final_head_mark_fails_exits_1_without_the_clean_marker_and_recovers(
        faulty_disk: FaultyDisk, tmp_path: Path) -> None:
    """SIGTERM while the head mark's fsync fails: the clean marker would promise that the mark is the
    head, and it is not, so the stop leaves no marker, says why in one line and exits 1 (as every stop
    without a clean shutdown does); ``verify-log`` reports an unclean shutdown and a log that verifies.
    Healed, the next start recovers (unclean: its recovery transaction) with every acknowledged append.
    Failed before: the marker was set beside the stale mark, and serve printed ``syncref stopped
    cleanly`` and exited 0."""
    data = faulty_disk.mnt / "data"
    tok = token(data)
    proc, url = start_serve(data, tmp_path / "first.log", env=faulty_disk.env)
    try:
        acked = asyncio.run(append_until_refused(url, tok, 3, 10))
        faulty_disk.arm("fsync", "syncref.head.tmp")
        acked += asyncio.run(append_until_refused(url, tok, 1, 10, "armed-"))  # the head moves past the mark
        assert len(acked) == 4
    finally:
        proc.terminate()
        code = proc.wait(60)
    log = (tmp_path / "first.log").read_text()
    assert "EIO fsync /data/syncref.head.tmp" in faulty_disk.hits()
    assert code == 1 and "Traceback" not in log, log
    assert any(re.fullmatch(r"syncref serve: stopped without a clean shutdown: the head mark could not be written "
                            r"at record \d+ \(\[Errno 5\] fsync of syncref\.head\.tmp failed: Input/output error\); "
                            r"closed without the clean-shutdown marker: the log is whole, the next start recovers "
                            r"as after a crash", line) for line in log.splitlines()), log
    report = json.loads(verify_log(data, faulty_disk.env).stdout)
    assert report["ok"] and not report["clean_shutdown"], report
    faulty_disk.disarm("fsync")
    check_recovers(data, tok, acked, tmp_path / "second.log", env=faulty_disk.env)
