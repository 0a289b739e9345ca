"""A start asked to stop (``SyncServer.start(stop_requested=...)``, what ``syncref serve`` passes for
SIGTERM/SIGINT during start-up), in process: what it leaves behind and what the next start in the
same process sees.  The oracle is the data directory read with sqlite3 itself, compared with a
copy of the same directory started and stopped without any interruption."""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import threading
from pathlib import Path, PosixPath
from typing import Any

import pytest
from support.logfiles import long_log
from support.server import running_server

from adapters.auth import AuthConfig
from adapters.server import Limits, ServerConfig, SyncServer
from reference.durability import _RESTART_BATCH, LogStore, RecoveryInterrupted


def _stored(path: Path) -> tuple[list[Any], dict[str, str]]:
    conn = sqlite3.connect(f"file:{path / 'syncref.sqlite3'}?mode=ro", uri=True)
    try:
        return (conn.execute('SELECT "offset", kind, name FROM commit_log ORDER BY "offset"').fetchall(),
                dict(conn.execute("SELECT key, value FROM meta").fetchall()))
    finally:
        conn.close()


def _config(data: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(data_dir=data, port=0, limits=Limits(), auth=AuthConfig(), **kw)


def _start_and_stop(data: Path) -> None:
    with running_server(data):
        pass


@pytest.mark.parametrize("clean", [True, False])
def test_an_interrupted_start_closes_everything_and_the_next_start_is_the_uninterrupted_one(
        tmp_path: Path, clean: bool) -> None:
    """After ``start`` raised :class:`RecoveryInterrupted`: the directory lock is released (a writable
    open in this very process succeeds: flock conflicts between two opens of one process too), the
    directory holds what it held (the clean marker put back when it was set), and a later start in
    the same process -- without a stop -- is exactly the start the interrupted one would have been:
    its directory ends equal, records and meta, to a copy that was never interrupted (the recovery
    record of an unclean copy compared by offset, kind and name; its timestamp differs)."""
    data, reference = tmp_path / "data", tmp_path / "reference"
    long_log(data, 2 * _RESTART_BATCH + 7, clean=clean)
    shutil.copytree(data, reference)
    before = _stored(data)
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 3  # the snapshot's turn, the first batch's, then stop

    server = SyncServer(_config(data))
    with pytest.raises(RecoveryInterrupted) as stopped:
        asyncio.run(server.start(stop_requested=stop))
    assert stopped.value.applied == _RESTART_BATCH and stopped.value.total == 2 * _RESTART_BATCH + 7
    assert _stored(data) == before
    LogStore.open(data).close()  # the lock was released (this open clears the marker: put it back below)
    if clean:
        conn = sqlite3.connect(data / "syncref.sqlite3", isolation_level=None)
        conn.execute("INSERT INTO meta (key, value) VALUES ('clean_shutdown', '1')")
        conn.close()
    assert _stored(data) == before
    _start_and_stop(data)  # no stop callable: nothing of the interrupted start carries over
    _start_and_stop(reference)
    got, want = _stored(data), _stored(reference)
    assert got == want, (got[0][-2:], want[0][-2:], got[1], want[1])
    assert len(got[0]) == len(before[0]) + (0 if clean else 1)


def test_a_first_start_interrupted_in_a_new_directory_leaves_a_new_directory(tmp_path: Path) -> None:
    """A new directory: the open writes the format marker, restart stores the policy, then the stop.
    The next start must still be a first start's twin: clean (no recovery record, no epoch bump),
    ending with the same meta as a directory started once without interruption."""
    data, reference = tmp_path / "data", tmp_path / "reference"
    server = SyncServer(_config(data))
    with pytest.raises(RecoveryInterrupted) as stopped:
        asyncio.run(server.start(stop_requested=lambda: True))
    assert (stopped.value.applied, stopped.value.total) == (0, 0)
    assert _stored(data)[1].get("clean_shutdown") == "1"
    _start_and_stop(data)
    _start_and_stop(reference)
    (rows, meta), (ref_rows, ref_meta) = _stored(data), _stored(reference)
    # each new log draws its own random id (ADR-0039): present in both, the rest of the meta equal
    assert re.fullmatch(r"[0-9a-f]{32}", meta.pop("log_id")) and re.fullmatch(r"[0-9a-f]{32}", ref_meta.pop("log_id"))
    assert (rows, meta) == (ref_rows, ref_meta)
    assert rows == []


class _Watched(PosixPath):
    """The stall file, telling the test when the log's COMMIT first waits on it."""

    stalled = threading.Event()

    def exists(self, *args: Any, **kwargs: Any) -> bool:
        here = super().exists(*args, **kwargs)
        if here:
            type(self).stalled.set()
        return here


def test_a_stop_during_the_recovery_records_write_lets_it_finish(tmp_path: Path) -> None:
    """An unclean directory: the recovery is done and its record's COMMIT is stalled (a slow disk)
    when the stop arrives.  The write is not cut short and the start is not interrupted (the stop
    is past its last safe point): it completes with the recovery record durable; stopping then is
    the running server's clean stop (what ``syncref serve`` does with a signal noted by then)."""
    data = tmp_path / "data"
    long_log(data, 40, clean=False)
    before = _stored(data)
    stall = _Watched(tmp_path / "stall")
    stall.write_text("")
    _Watched.stalled.clear()
    requested = threading.Event()
    loop = asyncio.new_event_loop()
    server = SyncServer(_config(data, stall_commits_while=stall))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        started = asyncio.run_coroutine_threadsafe(server.start(stop_requested=requested.is_set), loop)
        assert _Watched.stalled.wait(30), "the recovery record's COMMIT never waited on the stall file"
        requested.set()
        stall.unlink()
        started.result(30)  # not RecoveryInterrupted
        assert _stored(data)[0][:-1] == before[0] and _stored(data)[0][-1][1] == "recovery"
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    after = _stored(data)
    assert len(after[0]) == len(before[0]) + 1 and after[1].get("clean_shutdown") == "1"
