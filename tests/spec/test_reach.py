"""The reach table (tests/support/reach.py): it fails when a cell goes unreached, when a cell listed
unreachable is reached, when an observed cell is not expected (an error the rules table does not list,
or with other detail keys) and when an unreachable entry names no cell; its observer records at the
model's boundary and leaves the model as it found it."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from support import reach
from support.machines import CALLERS, ModuleMachine

import spec.delivery
import spec.harness
import spec.reducers
import spec.rules
from spec.auth import Claims
from spec.errors import ErrorCode
from spec.policy import DEFAULT_POLICY
from spec.schema import REDUCERS
from spec.state import DbState

FULL = CALLERS[0]


def _complete() -> dict[str, Counter[reach.Cell]]:
    """Counts that reach every expected cell not listed unreachable, split over two machines."""
    a: Counter[reach.Cell] = Counter()
    b: Counter[reach.Cell] = Counter()
    for k, cell in enumerate(reach.expected_cells()):
        if reach.unreachable_reason(cell) is None:
            (a if k % 2 else b)[cell] += 1 + k % 3
    return {"ModuleMachine": a, "scenarios": b}


def test_a_complete_table_passes() -> None:
    report = reach.evaluate(_complete())
    assert report.ok, reach.render(report)
    assert {r.verdict for r in report.rows} == {"reached", "unreachable"}
    assert "0 failing" in reach.render(report)


@pytest.mark.parametrize("cell", [("outcome", "append_sync_event", "sequence_conflict"),
                                  ("assignment", "running", "failed"), ("close", "1011"), ("client", "gap"),
                                  ("role", "update_compute_assignment", "provider_owner", "accepted"),
                                  ("check", "append_sync_event", "`expected_next_seq`, when given, is head + 1"),
                                  ("check", "record_bridge_failure",
                                   "the row is sent or failed (only a pending row counts attempts)")])
def test_the_table_fails_when_a_cell_goes_unreached(cell: reach.Cell) -> None:
    counts = _complete()
    for c in counts.values():
        c.pop(cell, None)
    report = reach.evaluate(counts)
    assert not report.ok
    assert [(r.cell, r.verdict) for r in report.failures] == [(cell, "UNREACHED")]
    assert f"{' '.join(cell)}" in reach.render(report)


def test_a_reached_unreachable_cell_fails() -> None:
    counts = _complete()
    cell = ("role", "ack_checkpoint", "missing_scope", "accepted")
    assert reach.unreachable_reason(cell) is not None
    counts["scenarios"][cell] += 1
    report = reach.evaluate(counts)
    assert [(r.cell, r.verdict) for r in report.failures] == [(cell, "REACHED-BUT-LISTED")]


def test_an_unexpected_cell_fails() -> None:
    counts = _complete()
    counts["ModuleMachine"][("outcome", "append_sync_event", "bridge_event_missing")] += 1
    report = reach.evaluate(counts)
    assert [r.verdict for r in report.failures] == ["UNEXPECTED"]


def test_a_stale_unreachable_entry_fails() -> None:
    table = (*reach.UNREACHABLE, ("outcome no_such_reducer_anywhere *", "names nothing"))
    report = reach.evaluate(_complete(), unreachable=table)
    assert report.stale_entries == ("outcome no_such_reducer_anywhere *",)
    assert not report.ok


def test_every_unreachable_entry_has_a_reason_and_a_cell() -> None:
    cells = reach.expected_cells()
    assert len(cells) == len(set(cells))
    for pattern, why in reach.UNREACHABLE:
        assert len(why) > 20, pattern
    assert not reach.evaluate(_complete()).stale_entries


def test_every_step_of_every_check_table_is_a_cell() -> None:
    """One cell per named step of :data:`spec.reducers.CHECKS`, in order, so a step added to a reducer is
    a cell the machines must reach (or one listed unreachable with its reason)."""
    cells = [c for c in reach.expected_cells() if c[0] == "check"]
    assert cells == [("check", reducer, step.name) for reducer, steps in spec.reducers.CHECKS.items()
                     for step in steps]
    assert len(cells) == sum(len(steps) for steps in spec.reducers.CHECKS.values()) > 80


def test_a_step_no_machine_decides_fails_verify() -> None:
    """A check step nobody decides, and that UNREACHABLE does not explain, fails the table; explained, it
    passes; explained but reached, it fails again."""
    counts = _complete()
    cell = ("check", "mark_bridge_event_sent", "each relay is 1-512 characters")
    for c in counts.values():
        c.pop(cell, None)
    report = reach.evaluate(counts)
    assert [(r.cell, r.verdict) for r in report.failures] == [(cell, "UNREACHED")]
    explained = (*reach.UNREACHABLE, ("check mark_bridge_event_sent each relay is *", "a reason long enough to read"))
    assert reach.evaluate(counts, unreachable=explained).ok
    counts["ModuleMachine"][cell] += 1
    assert [r.verdict for r in reach.evaluate(counts, unreachable=explained).failures] == ["REACHED-BUT-LISTED"]


def test_one_sweep_of_the_module_machine_decides_every_argument_check() -> None:
    """``ModuleMachine.every_check`` (once per run) makes every argument check of every reducer, and the
    pinned-token check, the step that decides a call, from any state: from the empty one here.  A new
    argument check without a ``BAD_CALLS`` row fails this test before it empties a reach cell."""
    machine = ModuleMachine()
    with reach.observe("sweep") as rec:
        machine.every_check()
    got = {c for c in rec.counts.pop("sweep") if c[0] == "check"}
    assert not machine.violations, machine.violations[:3]
    argument_codes = {ErrorCode.INVALID_ARGUMENT, ErrorCode.NON_CANONICAL_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE,
                      ErrorCode.PAYLOAD_HASH_MISMATCH}
    want = {("check", reducer, step.name) for reducer, steps in spec.reducers.CHECKS.items() for step in steps
            if isinstance(step, spec.reducers.Check) and step.code in argument_codes}
    want.add(("check", "upsert_presence", "a token pinned to a session or device names this one"))
    assert len(want) > 40
    assert sorted(want - got) == []


def test_the_rules_table_names_every_reducer_once() -> None:
    assert [r.reducer for r in spec.rules.REDUCER_RULES] == [r.name for r in REDUCERS]
    for r in spec.rules.REDUCER_RULES:
        assert ErrorCode.MISSING_SCOPE in r.errors and ErrorCode.INVALID_ARGUMENT in r.errors
        assert all(keys == tuple(sorted(keys)) for keys in r.errors.values())
        assert r.roles[0] == "missing_scope"


def _call(db: DbState, claims: Claims, reducer: str, args: tuple[object, ...]) -> spec.reducers.Outcome:
    return spec.reducers.call(db, spec.reducers.CallContext(claims, 1_000, 1, DEFAULT_POLICY), reducer, args)


def test_observe_records_at_the_boundary_and_restores_it() -> None:
    originals = (spec.reducers.call, spec.harness.call, spec.delivery.stale_error, spec.harness.Server.close)
    with reach.observe("probe") as rec:
        assert spec.harness.call is not originals[1]
        db = DbState()
        ok = _call(db, FULL, "append_sync_event", ("s.a1", "k1", "{}", None, None))
        assert isinstance(ok, spec.reducers.Ok)
        _call(ok.state, FULL, "append_sync_event", ("s.a1", "k1", "{}", None, None))  # a retry: no-op
        _call(ok.state, FULL, "append_sync_event", ("s.a1", "k2", "{}", None, 7))  # sequence_conflict
        _call(db, CALLERS[6], "append_sync_event", ("s.a1", "k1", "{}", None, None))  # no scopes
        _call(db, FULL, "nope", ())
        opened = _call(db, FULL, "open_compute_assignment", ("r1", 5000, "{}"))
        assert isinstance(opened, spec.reducers.Ok)
        counts = rec.counts["probe"]
    assert (spec.reducers.call, spec.harness.call, spec.delivery.stale_error, spec.harness.Server.close) \
        == originals
    assert counts[("outcome", "append_sync_event", "ok")] == 1
    assert counts[("outcome", "append_sync_event", "noop")] == 1
    assert counts[("outcome", "append_sync_event", "sequence_conflict")] == 1
    assert counts[("role", "append_sync_event", "missing_scope", "refused")] == 1
    assert counts[("role", "append_sync_event", "holder", "accepted")] == 2
    assert counts[("outcome", reach.UNKNOWN_REDUCER, "no_such_reducer")] == 1
    assert counts[("assignment", reach.CREATED, "open")] == 1
    # the step that decided each call: the retry's no-op, the sequence check, the scope check
    assert counts[("check", "append_sync_event",
                   "the key is retained with this payload: a retry, answered with its original seq")] == 1
    assert counts[("check", "append_sync_event", "`expected_next_seq`, when given, is head + 1")] == 1
    assert counts[("check", "append_sync_event", "the caller holds `sync.append`")] == 1
    assert sum(n for cell, n in counts.items() if cell[0] == "check") == 3  # accepted calls take no step
    reach.RECORDER.counts.pop("probe")


def test_detail_keys_that_drift_from_the_rules_table_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = spec.rules.REDUCER_RULE_BY_NAME["append_sync_event"]
    drifted = replace(rule, errors={**rule.errors, ErrorCode.SEQUENCE_CONFLICT: ("actual_next_seq",)})
    monkeypatch.setitem(spec.rules.REDUCER_RULE_BY_NAME, "append_sync_event", drifted)  # type: ignore[arg-type]
    with reach.observe("drift") as rec:
        ok = _call(DbState(), FULL, "append_sync_event", ("s.a1", "k1", "{}", None, None))
        assert isinstance(ok, spec.reducers.Ok)
        _call(ok.state, FULL, "append_sync_event", ("s.a1", "k2", "{}", None, 7))
    counts = {"drift": rec.counts.pop("drift")}
    cell = ("detail_keys", "append_sync_event", "sequence_conflict", "actual_next_seq,expected_next_seq,stream_id")
    assert counts["drift"][cell] == 1
    report = reach.evaluate(counts)
    assert ("UNEXPECTED", cell) in [(r.verdict, r.cell) for r in report.failures]


def test_the_scenario_tables_reach_the_rare_lifecycle_edges() -> None:
    reach.RECORDER.counts.pop("scenarios", None)
    reach.run_scenarios()
    got = reach.RECORDER.counts.pop("scenarios")
    for cell in [("assignment", s, s) for s in ("open", "assigned", "running", "completed", "failed", "cancelled")] \
            + [("assignment", s, reach.REMOVED) for s in ("completed", "failed", "cancelled")] \
            + [("outbox", "failed", "sent"), ("outbox", "sent", "sent"), ("outbox", "pending", "failed"),
               ("outbox", "sent", reach.REMOVED), ("outbox", "failed", reach.REMOVED), ("presence", "away", "away")]:
        assert got[cell] >= 1, cell
