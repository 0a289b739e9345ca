"""Stateful model checks: the module machine and the system machine, every invariant after
every step (profile `default` in CI; HYPOTHESIS_PROFILE=deep for longer exploration)."""

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from support.machines import CALLERS, ModuleMachine, SystemMachine

from spec.state import DbState

FULL = CALLERS[0]


def _budget(n: int) -> settings:
    base = settings()
    scale = max(1, base.max_examples // 100)
    return settings(base, max_examples=n * scale, stateful_step_count=60)


def test_module_machine() -> None:
    run_state_machine_as_test(ModuleMachine, settings=_budget(150))


def test_system_machine() -> None:
    run_state_machine_as_test(SystemMachine, settings=_budget(150))


def test_module_machine_checks_the_state_after_system_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction or a sweep that breaks a state invariant fails the module machine at that step, not
    only if a later call happens to run check_state (a run may end on the system transaction).  Planted:
    compaction drops events but leaves floor_seq (SEQ-1), a sweep that leaves an offline row without a
    reason (PRES-1)."""
    import spec.reducers as red
    from spec.values import SessionPresence, SyncStream

    real_compact, real_sweep = red.compact, red.presence_sweep

    def keeps_floor(db: Any, now: int, policy: Any = red.DEFAULT_POLICY) -> Any:
        out = real_compact(db, now, policy)
        floors = {s.stream_id: s.floor_seq for s in db.of_type(SyncStream)}
        rows = tuple(replace(s, floor_seq=floors.get(s.stream_id, s.floor_seq)) for s in out.state.of_type(SyncStream))
        return replace(out, state=DbState({**out.state.tables, "sync_stream": rows}))

    def no_reason(db: Any, now: int) -> Any:
        out = real_sweep(db, now)
        rows = tuple(replace(p, offline_reason=None) for p in out.state.of_type(SessionPresence))
        return replace(out, state=DbState({**out.state.tables, "session_presence": rows}))

    m = ModuleMachine()
    for k in ("k1", "k2", "k3"):
        m.append(FULL, "s.a", k, '{"v":1}', False, None)
    monkeypatch.setattr(red, "compact", keeps_floor)
    m.compact()
    with pytest.raises(AssertionError, match="SEQ-1"):
        m.holds()

    m = ModuleMachine()
    m.presence(FULL, "p1", "online", 1000)
    monkeypatch.setattr(red, "presence_sweep", no_reason)
    m.sweep(3_000_000)
    with pytest.raises(AssertionError, match="PRES-1"):
        m.holds()


def test_an_unconfirmed_client_that_read_a_lost_compaction_converges() -> None:
    """The system machine's counterexample (CI, seed 294453118723402861840847486469253068617): the
    unconfirmed c1 rehydrated from a compaction's floor 6 that was not durable; the crash lost it and
    the recovered stream retained from 1 again.  c1's view (events 6-7 of the same chain) is right
    (REPLAY-2's allowance for unconfirmed clients, spec.invariants.check_convergence)."""
    from support.machines import SystemMachine
    m = SystemMachine()
    m.start(follows=[(1, "s.a1")])
    m.burst(i=1, live=False, n=10, s="s.a1")
    m.tick(dt=500_000)
    m.compact()
    m.holds()
    stream = next(s for s in m.sys.server.db.of_type(_stream_type()) if s.stream_id == "s.a1")
    assert stream.floor_seq > 1 and m.sys.server.committed > m.sys.server.durable  # compacted, not durable
    m.pump(n=2)
    m.crash()
    m.holds()
    stream = next(s for s in m.sys.server.db.of_type(_stream_type()) if s.stream_id == "s.a1")
    assert stream.floor_seq == 1 and m.sys.clients[1].streams["s.a1"].base >= 1  # the lost floor, c1 above it
    m.heal()


def test_a_floor_committed_and_lost_inside_one_rule_counts() -> None:
    """The same case inside one compound rule (``compact_then_crash``): the compaction's floor is never
    the current one between rules, so REPLAY-2's allowance must come from the floors recorded at each
    commit, not from the state the machine sees after each rule."""
    m = SystemMachine()
    m.start(follows=[(1, "s.a1")])
    m.burst(i=1, live=False, n=10, s="s.a1")
    m.tick(dt=500_000)
    m.compact_then_crash(n=2)
    m.holds()
    stream = next(s for s in m.sys.server.db.of_type(_stream_type()) if s.stream_id == "s.a1")
    view = m.sys.clients[1].streams["s.a1"]
    assert stream.floor_seq == 1 and view.base >= 1, (stream, view)  # the floor was lost, c1 holds a later window
    m.heal()


def _stream_type() -> type:
    from spec.values import SyncStream
    return SyncStream
