"""A message the reader hands to the engine (``SyncServer._take_now``) is answered in the callback
the reader schedules (``_pump_soon`` -> ``_pump(deliver_now=True)``), not one loop iteration later
(ADR-0031); the processor's own ``_pump()`` still defers the pass to the end of the iteration, so
the messages of a v3 frame it takes are answered in one turn.

The server is never started: a real engine, a session stand-in, a recording loop (``call_soon``
kept, run by hand) and a recording ``_write_now``.  Planted edits of the module's source must fail.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from support.edited import edited_module

from adapters import server as srv
from adapters import wire
from spec.auth import Claims
from spec.schema import SCOPES

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))


class Loop:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, args))

    def run_one(self) -> str:
        fn, args = self.calls.pop(0)
        fn(*args)
        return str(fn.__name__)


def rig(module: Any) -> tuple[Any, Any, Loop, list[str]]:
    server = module.SyncServer(srv.ServerConfig(data_dir=Path("unused")))
    engine = server._engine = srv.Engine(max_queue=100)
    cid = engine.connect(ADMIN, confirmed=False)
    s = types.SimpleNamespace(conn_id=cid, inbound=[], closing=False, undurable=deque(), side=deque(), busy=False,
                              call_ts={}, wake=asyncio.Event(), reading=None)
    server.sessions[cid] = s
    log: list[str] = []

    def write_now(session: Any) -> bool:
        got = engine.take(session.conn_id, 64, 1 << 20)
        log.extend(type(o.message).__name__ for o in got)
        return True

    server._write_now = write_now
    loop = server._loop = Loop()
    return server, s, loop, log


SUBSCRIBE = wire.Subscribe(1, 1, ("SELECT * FROM sync_stream",))


def check_taken_by_the_reader(module: Any) -> None:
    server, s, loop, log = rig(module)
    assert server._take_now(s, SUBSCRIBE)
    assert len(loop.calls) == 1 and not log  # nothing written from inside the reader's step
    assert loop.run_one() == "_pump"
    assert log == ["SubscribeApplied"], log  # written in that callback
    assert not loop.calls and not server._deliver_scheduled  # no pass left for the next iteration
    assert server._take_now(s, wire.Unsubscribe(2, 1))  # and again: the flag was cleared
    loop.run_one()
    assert log == ["SubscribeApplied", "UnsubscribeApplied"] and not loop.calls


def check_the_processor_still_defers(module: Any) -> None:
    server, s, loop, log = rig(module)
    server._dispatch(s, SUBSCRIBE)  # what the processor does, then its own _pump()
    server._pump()
    assert not log and [fn.__name__ for fn, _ in loop.calls] == ["_deliver"]
    loop.run_one()
    assert log == ["SubscribeApplied"]


def check_a_scheduled_pass_is_not_doubled(module: Any) -> None:
    server, s, loop, log = rig(module)
    passes: list[int] = []
    deliver = server._deliver
    server._deliver = lambda: (passes.append(1), deliver())
    assert server._take_now(s, SUBSCRIBE)  # the reader's pump is scheduled ...
    server._dispatch(s, wire.Unsubscribe(2, 1))  # ... then the processor takes a message and pumps
    server._pump()
    assert [fn.__name__ for fn, _ in loop.calls] == ["_pump", "<lambda>"]
    loop.run_one()  # the reader's pump finds a pass scheduled for this iteration: it does not add one
    loop.run_one()
    assert log == ["SubscribeApplied", "UnsubscribeApplied"] and not loop.calls
    assert len(passes) == 1, passes


def test_a_reply_taken_by_the_reader_is_written_in_the_pump_callback() -> None:
    check_taken_by_the_reader(srv)


def test_the_processors_pump_defers_the_pass() -> None:
    check_the_processor_still_defers(srv)


def test_a_pass_scheduled_already_runs_once() -> None:
    check_a_scheduled_pass_is_not_doubled(srv)


PLANTED = (
    ("the reader's pump deferring the pass again", (("self._loop.call_soon(self._pump, True)",
                                                      "self._loop.call_soon(self._pump, False)"),),
     check_taken_by_the_reader),
    ("every pump delivering at once", (
        ("        if not deliver_now and not self._deliver_scheduled and self._loop is not None:",
         "        if False:"),
        ("        if deliver_now and not self._deliver_scheduled:  #", "        if not self._deliver_scheduled:  #")),
     check_the_processor_still_defers),
    ("delivering now beside a scheduled pass", (("        if deliver_now and not self._deliver_scheduled:  #",
                                                  "        if deliver_now:  #"),),
     check_a_scheduled_pass_is_not_doubled),
)


@pytest.mark.parametrize(("name", "edits", "check"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bugs_are_caught(name: str, edits: tuple[tuple[str, str], ...], check: Any) -> None:
    mod = edited_module(srv, edits, name)
    with pytest.raises(AssertionError):
        check(mod)
