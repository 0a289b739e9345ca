"""``SyncServer._pass``: a long delivery pass hands the loop back every ``DELIVER_SLICE_S`` and goes
on where it stopped (ADR-0023).

The pass is driven on a never-started server (as in ``test_deliver_order``): a real engine holds
each connection's queue, the sessions are stand-ins, ``_write_now`` is a recorder that takes the
connection's released messages from the engine, the loop is a list of scheduled callbacks run by
hand, and the clock is the test's.  What must hold: every connection with something released is
written once per pass, in the pass's order, whatever the slicing; a pass asked for while one is
under way does not restart it (the connections late in a long pass would never be reached) but
follows it; a connection that left meanwhile is skipped; a write that raises leaves the rest of
the pass scheduled; the writer is woken at once even when a pass is under way; nothing is lost or
reordered per connection (the engine's queue order, read back from what was written).  Planted
bugs in the pass (``tests/support/edited.py``) must fail these checks.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.edited import edited_module

from adapters import server as srv
from spec.auth import Claims
from spec.messages import CallReducer, Subscribe
from spec.schema import SCOPES

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))


class Loop:
    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.ready.append(fn)

    def run_one(self) -> bool:
        """One loop iteration's worth: the callbacks scheduled so far."""
        batch, self.ready = self.ready, []
        for fn in batch:
            fn()
        return bool(batch)


class Clock:
    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step  # each reading moves the clock on by this much

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


class Writer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def wake(self) -> None:
        self.log.append("wake")


class Rig:
    """``n`` subscribers of stream ``s``; ``append`` commits an event every one of them receives."""

    def __init__(self, module: Any, n: int, clock_step: float, monkeypatch: pytest.MonkeyPatch,
                 fail_on: int | None = None) -> None:
        self.server = server = module.SyncServer(srv.ServerConfig(data_dir=Path("unused")))
        self.engine = engine = server._engine = srv.Engine(max_queue=1000)
        self.loop = server._loop = Loop()
        self.log: list[str] = []
        self.got: dict[int, list[int]] = {}  # conn -> offsets of the updates written to it, in order
        self.writer_cid = engine.connect(ADMIN, confirmed=False)
        for _ in range(n):
            cid = engine.connect(ADMIN, confirmed=False)
            engine.handle(cid, Subscribe(1, 1, ("SELECT * FROM sync_event WHERE stream_id = 's'",)))
            engine.take(cid, 64, 1 << 20)  # the SubscribeApplied
            server.sessions[cid] = types.SimpleNamespace(conn_id=cid, side=deque(), busy=False, wake=asyncio.Event())
            self.got[cid] = []
        self.calls = 0

        def write_now(s: Any) -> bool:
            if s.conn_id == fail_on:
                fail_on_once[0] = None
                raise ConnectionResetError("planted")
            outs = engine.take(s.conn_id, 64, 1 << 20)
            self.log.append(f"write {s.conn_id}")
            self.got[s.conn_id] += [o.offset for o in outs]
            return True

        fail_on_once = [fail_on]
        server._write_now = write_now
        server._writer = Writer(self.log)
        monkeypatch.setattr(module, "time", types.SimpleNamespace(monotonic=Clock(clock_step).monotonic,
                                                                  time_ns=time.time_ns))

    def append(self) -> None:
        self.calls += 1
        self.engine.handle(self.writer_cid, CallReducer(self.calls, "append_sync_event",
                                                        ("s", f"k{self.calls}", "{}", None, None)))
        self.engine.take(self.writer_cid, 64, 1 << 20)  # the writer's own answer
        self.server._records_queued = True

    def subscribers(self) -> list[int]:
        return list(self.got)

    def writes(self) -> list[int]:
        return [int(x.split()[1]) for x in self.log if x.startswith("write")]

    def drain(self, limit: int = 1000) -> int:
        """Run the loop until nothing is scheduled; the number of iterations it took."""
        k = 0
        while self.loop.run_one():
            k += 1
            assert k < limit, "the pass never ends"
        return k


def test_a_short_pass_runs_whole_with_no_time_pressure(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(srv, 40, 0.0, monkeypatch)
    rig.append()
    rig.server._deliver()
    assert rig.log[0] == "wake" and rig.writes() == rig.subscribers()
    assert rig.loop.ready == []  # nothing left for later


def test_a_long_pass_yields_every_slice_and_reaches_everyone_once_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(srv, 40, 1.0, monkeypatch)  # every clock reading is past the slice
    rig.append()
    rig.server._deliver()
    assert rig.writes() == rig.subscribers()[:srv.DELIVER_CHECK]  # cut at the first check
    assert rig.loop.ready  # the rest is scheduled, not dropped
    iterations = rig.drain()
    assert iterations == 2  # 40 connections: 16 + 16 + 8
    assert rig.writes() == rig.subscribers()
    assert all(offsets == [rig.engine.committed] for offsets in rig.got.values())


def test_a_pass_asked_for_meanwhile_follows_instead_of_restarting(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(srv, 40, 1.0, monkeypatch)
    subs = rig.subscribers()
    rig.append()
    rig.server._deliver()
    for _ in range(5):  # a new event every iteration: each asks for a pass (the writer is woken at once)
        rig.append()
        before = len(rig.log)
        rig.server._deliver()
        assert rig.log[before:] == ["wake"]  # no write from the request itself: the pass under way goes on
        rig.loop.run_one()
    rig.drain()
    # the first pass reached everyone (it was never restarted), and later passes delivered the rest
    writes = rig.writes()
    assert writes[:40] == subs
    assert all(offsets == list(range(1, rig.engine.committed + 1))[-6:] for offsets in rig.got.values()), rig.got
    assert all(writes.count(c) >= 2 for c in subs)


def test_a_connection_that_left_meanwhile_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(srv, 40, 1.0, monkeypatch)
    subs = rig.subscribers()
    rig.append()
    rig.server._deliver()
    gone = subs[30]
    del rig.server.sessions[gone]
    rig.drain()
    assert gone not in rig.writes() and rig.writes() == [c for c in subs if c != gone]


def test_a_write_that_raises_leaves_the_rest_of_the_pass_scheduled(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(srv, 40, 0.0, monkeypatch, fail_on=None)
    subs = rig.subscribers()
    failing = subs[5]
    rig = Rig(srv, 40, 0.0, monkeypatch, fail_on=failing)
    subs = rig.subscribers()
    rig.append()
    with pytest.raises(ConnectionResetError):
        rig.server._deliver()
    assert rig.writes() == subs[:5]
    rig.drain()
    assert rig.writes() == [c for c in subs if c != failing]  # everyone after it still reached
    assert not rig.server._delivered and not rig.server._round


def test_nothing_is_lost_or_reordered_per_connection_across_many_sliced_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(srv, 50, 1.0, monkeypatch)
    for k in range(30):
        rig.append()
        rig.server._deliver()
        if k % 3 == 0:
            rig.loop.run_one()
    rig.drain()
    every = list(range(1, rig.engine.committed + 1))
    assert all(offsets == every[-30:] for offsets in rig.got.values())
    assert not rig.server._round and not rig.server._round_again


# --- planted bugs ---------------------------------------------------------------------------------------

PLANTED: dict[str, tuple[str, str]] = {
    "every request restarts the pass": (
        "        if self._round_at < len(self._round):  # a pass is under way",
        "        if False:  # a pass is under way"),
    "a request meanwhile is forgotten": (
        "                if self._round_again:\n", "                if False:\n"),
    "a departed connection is written": (
        "                if sessions.get(s.conn_id) is s and (s.side", "                if (s.side"),
    "the slice is never cut": (
        "if i % DELIVER_CHECK == 0 and i < n and time.monotonic() >= deadline:",
        "if i % DELIVER_CHECK == 0 and i < n and time.monotonic() >= deadline + 1e9:"),
    "a raised write drops the rest of the pass": (
        "            if self._round:\n                self._pass_soon()\n",
        "            if self._round and i >= n:\n                self._pass_soon()\n"),
    "the pass cut one connection early": ("            while i < n:\n", "            while i < n - 1:\n"),
}
CHECKS = (test_a_short_pass_runs_whole_with_no_time_pressure,
          test_a_long_pass_yields_every_slice_and_reaches_everyone_once_in_order,
          test_a_pass_asked_for_meanwhile_follows_instead_of_restarting,
          test_a_connection_that_left_meanwhile_is_skipped,
          test_a_write_that_raises_leaves_the_rest_of_the_pass_scheduled,
          test_nothing_is_lost_or_reordered_per_connection_across_many_sliced_passes)


def failures(module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    failed = []
    for check in CHECKS:
        with monkeypatch.context() as mp:
            mp.setitem(globals(), "srv", module)
            try:
                check(mp)
            except (AssertionError, pytest.fail.Exception, RecursionError):
                failed.append(check.__name__)
    return failed


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_bugs_in_the_pass_fail_the_checks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert failures(edited_module(srv, [PLANTED[name]], name), monkeypatch), f"planted bug survived: {name}"


def test_the_rebuilt_module_alone_fails_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert failures(edited_module(srv, [], "control"), monkeypatch) == []
