"""``SyncServer._deliver``: the pass's socket writes first, then the commit-log writer's wakeup
(ADR-0021).

The pass is driven on a server that is never started: a real engine holds the queued messages,
the sessions are stand-ins, ``_write_now`` and the writer are recorders that log into one list,
so the order of writes and wakeup is read off that list.  Planted bugs in ``_deliver`` (the old
order, a wakeup lost when a write raises, a wakeup with nothing queued) are rebuilt from the
module's source with one edit and must fail these checks.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters import server as srv
from spec.auth import Claims
from spec.messages import CallReducer
from spec.schema import SCOPES

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))


class Writer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def wake(self) -> None:
        self.log.append("wake")


def rig(module: Any, records_queued: bool, fail_on: int | None = None
        ) -> tuple[Any, list[str], Callable[[], None]]:
    """A never-started server with two connections that each have a released reply queued."""
    server = module.SyncServer(srv.ServerConfig(data_dir=Path("unused")))
    engine = server._engine = srv.Engine(max_queue=100)
    log: list[str] = []
    for i in range(2):
        cid = engine.connect(ADMIN, confirmed=False)
        engine.handle(cid, CallReducer(i + 1, "append_sync_event", ("s", f"k{i}", "{}", None, None)))
        server.sessions[cid] = types.SimpleNamespace(conn_id=cid, side=deque(), busy=False, wake=asyncio.Event())

    def write_now(s: Any) -> bool:
        if s.conn_id == fail_on:
            raise ConnectionResetError("planted")
        engine.take(s.conn_id, 64, 1 << 20)
        log.append(f"write {s.conn_id}")
        return True

    server._write_now = write_now
    server._writer = Writer(log)
    server._records_queued = records_queued
    server._delivered[1] = 2  # as if the pass handed messages of offset 1 to two sockets
    return server, log, server._deliver


def test_the_writer_is_woken_after_every_write_of_the_pass() -> None:
    server, log, deliver = rig(srv, records_queued=True)
    deliver()
    assert log == ["write 1", "write 2", "wake"]
    assert server._records_queued is False and not server._delivered


def test_no_wakeup_when_no_records_were_queued() -> None:
    _server, log, deliver = rig(srv, records_queued=False)
    deliver()
    assert log == ["write 1", "write 2"]


def test_a_failing_write_still_wakes_the_writer_and_flushes_the_pass() -> None:
    server, log, deliver = rig(srv, records_queued=True, fail_on=2)
    with pytest.raises(ConnectionResetError):
        deliver()
    assert log == ["write 1", "wake"]  # the records queued still reach the disk
    assert server._records_queued is False and not server._delivered


def test_without_an_engine_only_the_wakeup_runs() -> None:
    server, log, deliver = rig(srv, records_queued=True)
    server._engine = None
    deliver()
    assert log == ["wake"]


# --- planted bugs ---------------------------------------------------------------------------------------

OLD_ORDER = """        self._deliver_scheduled = False
        if self._writer is not None and self._records_queued:
            self._records_queued = False
            self._writer.wake()
        engine = self._engine
"""
MUTANTS: tuple[tuple[str, str, str], ...] = (
    ("wake_before_the_writes", "        self._deliver_scheduled = False\n        engine = self._engine\n", OLD_ORDER),
    ("wakeup_lost_when_a_write_raises",
     "        finally:\n            if self._writer is not None and self._records_queued:",
     "        except BaseException:\n            raise\n        else:\n"
     "            if self._writer is not None and self._records_queued:"),
    ("wakes_with_nothing_queued", "            if self._writer is not None and self._records_queued:  # only new",
     "            if self._writer is not None:  # only new"),
)
CHECKS = (test_the_writer_is_woken_after_every_write_of_the_pass, test_no_wakeup_when_no_records_were_queued,
          test_a_failing_write_still_wakes_the_writer_and_flushes_the_pass, test_without_an_engine_only_the_wakeup_runs)


def mutated_server(old: str, new: str) -> types.ModuleType:
    src = inspect.getsource(srv)
    assert src.count(old) == 1, old
    mod = types.ModuleType("mutant_server")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up while a class is built
    try:
        exec(compile(src.replace(old, new), "<mutant of adapters/server.py>", "exec"), mod.__dict__)
    finally:
        del sys.modules[mod.__name__]
    return mod


def failures(module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setitem(globals(), "srv", module)
    failed = []
    for check in CHECKS:
        try:
            check()
        except (AssertionError, pytest.fail.Exception):
            failed.append(check.__name__)
    return failed


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_planted_bugs_in_the_pass_fail_the_checks(mutant: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    _name, old, new = mutant
    assert failures(mutated_server(old, new), monkeypatch), f"mutant {mutant[0]} survived"


def test_the_rebuilt_module_alone_fails_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    same = "        self._deliver_scheduled = False\n        engine = self._engine\n"
    assert failures(mutated_server(same, same), monkeypatch) == []
