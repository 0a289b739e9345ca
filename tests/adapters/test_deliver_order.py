"""``SyncServer._deliver``: the commit-log writer's wakeup first, then the pass's socket writes
(ADR-0021: woken after the writes, the writer's COMMIT waited for the whole pass; measured).

The pass is driven on a server that is never started: a real engine holds the queued messages,
the sessions are stand-ins, ``_write_now`` and the writer are recorders that log into one list,
so the order of wakeup and writes is read off that list.  Planted bugs in ``_deliver`` (the
order tried and measured worse, a wakeup with nothing queued, none without an engine, a pass
not flushed when a write raises) are rebuilt from the module's source with one edit and must
fail these checks.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.edited import edited_module

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


def test_the_writer_is_woken_before_the_writes_of_the_pass() -> None:
    server, log, deliver = rig(srv, records_queued=True)
    deliver()
    assert log == ["wake", "write 1", "write 2"]
    assert server._records_queued is False and not server._delivered


def test_no_wakeup_when_no_records_were_queued() -> None:
    _server, log, deliver = rig(srv, records_queued=False)
    deliver()
    assert log == ["write 1", "write 2"]


def test_a_failing_write_leaves_the_writer_woken_and_the_pass_flushed() -> None:
    server, log, deliver = rig(srv, records_queued=True, fail_on=2)
    with pytest.raises(ConnectionResetError):
        deliver()
    assert log == ["wake", "write 1"]  # the records queued still reach the disk
    assert server._records_queued is False and not server._delivered


def test_without_an_engine_only_the_wakeup_runs() -> None:
    server, log, deliver = rig(srv, records_queued=True)
    server._engine = None
    deliver()
    assert log == ["wake"]


# --- planted bugs ---------------------------------------------------------------------------------------

WAKE = """        if self._writer is not None and self._records_queued:  # only new records need the writer woken
            self._records_queued = False
            self._writer.wake()
"""
CURRENT = """        self._deliver_scheduled = False
""" + WAKE + """        if self._engine is None:
            return
        if self._round_at < len(self._round):  # a pass is under way: it goes on where it is, then again
            self._round_again = True
            return
        self._round = list(self.sessions.values())
        self._round_at = 0
        self._pass()
"""
# the pass moved into _pass (ADR-0023): the order tried and measured worse is the wakeup after it
AFTER_THE_WRITES = CURRENT.replace(WAKE, "").replace("        self._pass()\n", "        self._pass()\n" + WAKE)
MUTANTS: tuple[tuple[str, str, str], ...] = (
    ("wake_after_the_writes", CURRENT, AFTER_THE_WRITES),
    ("wakes_with_nothing_queued", "        if self._writer is not None and self._records_queued:  # only new",
     "        if self._writer is not None:  # only new"),
    ("no_wakeup_without_an_engine", CURRENT, CURRENT.replace(
        "        if self._writer is not None and self._records_queued:", "        if self._engine is None:\n"
        "            return\n        if self._writer is not None and self._records_queued:")),
    ("pass_not_flushed_when_a_write_raises",
     "        finally:\n            self._round_at = i\n            self._flush_delivered()\n",
     "        except BaseException:\n            raise\n        else:\n            self._round_at = i\n"
     "            self._flush_delivered()\n        finally:\n            pass\n"),
)
CHECKS = (test_the_writer_is_woken_before_the_writes_of_the_pass, test_no_wakeup_when_no_records_were_queued,
          test_a_failing_write_leaves_the_writer_woken_and_the_pass_flushed,
          test_without_an_engine_only_the_wakeup_runs)


def mutated_server(old: str, new: str) -> types.ModuleType:
    return edited_module(srv, [(old, new)], "mutant")


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
    assert failures(mutated_server(CURRENT, CURRENT), monkeypatch) == []
