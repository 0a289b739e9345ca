"""The reducers' checks as data (``spec.reducers.CHECKS``): what the protocol doc's check-order table
prints is what the reducers run, and it agrees with the rules table (``spec.rules``).

* every code a reducer's checks can refuse with is listed in ``spec.rules`` with its detail keys,
  and every listed code is one its checks (or ``call``'s arity and type check) can return;
* the terms class of each reducer takes the schema's arguments in the schema's order;
* over every call of the conformance cases (each error of each reducer, in check order) and a table
  of calls for the steps those do not reach, the step
  :func:`spec.reducers.decide` finds in ``CHECKS`` decides the outcome ``call`` returns: its
  code for an error, a no-op step or a write otherwise -- so the registry is what runs;
* the evaluator is shown able to fail: a reordered tuple changes an outcome the conformance vectors
  pin, and a check removed from a tuple lets a call through that the rules refuse (AUTH-2).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import spec.reducers as red
from spec.auth import Claims
from spec.errors import ErrorCode, SyncError
from spec.rules import REDUCER_RULE_BY_NAME, REDUCER_RULES
from spec.schema import REDUCER_BY_NAME
from spec.state import DbState


def test_every_reducer_has_checks_an_effect_and_terms() -> None:
    names = [r.reducer for r in REDUCER_RULES]
    assert list(red.CHECKS) == names == list(red.EFFECTS) == list(red.TERMS) == list(red.REDUCER_FUNCTIONS)
    for name in names:
        assert red.CHECKS[name], name
        assert red.EFFECTS[name].__doc__, f"{name}: the effect's docstring is its doc line"
        assert red.REDUCER_FUNCTIONS[name].__doc__, f"{name}: the reducer's docstring is its statement"
        assert all(s.name for s in red.CHECKS[name]) and len({s.name for s in red.CHECKS[name]}) == len(
            red.CHECKS[name]), f"{name}: step names are distinct"


@pytest.mark.parametrize("name", [r.reducer for r in REDUCER_RULES])
def test_the_codes_of_the_checks_are_the_codes_of_the_rules(name: str) -> None:
    rule = REDUCER_RULE_BY_NAME[name]
    codes = {s.code for s in red.CHECKS[name] if isinstance(s, red.Check)} | {ErrorCode.INVALID_ARGUMENT}
    assert codes == set(rule.errors), f"{name}: checks refuse with {sorted(codes)}, rules list {sorted(rule.errors)}"
    if any(isinstance(s, red.NoOp) for s in red.CHECKS[name]):
        assert rule.noop, f"{name} has a no-op step: the rules table must say when"
    assert red.CHECKS[name][0].code is ErrorCode.MISSING_SCOPE  # type: ignore[union-attr]


@pytest.mark.parametrize("name", [r.reducer for r in REDUCER_RULES])
def test_the_terms_take_the_schema_arguments_in_order(name: str) -> None:
    fields = [f.name for f in dataclasses.fields(red.TERMS[name])][2:]  # after db, ctx
    wire = [c.name for c in REDUCER_BY_NAME[name].args]
    assert [{"payload_hash_arg": "payload_hash"}.get(f, f) for f in fields] == wire


def _conformance_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[DbState, red.CallContext, str, tuple[Any, ...],
                                                                        red.Outcome]]:
    import adapters.conformance.cases as cs
    import adapters.conformance.generate as gen
    seen: list[tuple[DbState, red.CallContext, str, tuple[Any, ...], red.Outcome]] = []
    original = red.call

    def recording(db: DbState, ctx: red.CallContext, reducer: str, args: tuple[Any, ...]) -> red.Outcome:
        out = original(db, ctx, reducer, args)
        seen.append((db, ctx, reducer, args, out))
        return out

    monkeypatch.setattr(gen, "call", recording)
    for case in cs.ALL_CASES:
        gen.call_vector(case)
    return seen


ALL_SCOPES = frozenset({"sync.append", "sync.checkpoint.write", "presence.write", "provider.publish",
                        "compute.request", "compute.assign", "compute.execute", "bridge.enqueue", "bridge.mark_sent",
                        "sync.admin"})
ME = Claims("me", ALL_SCOPES, ("*",))
PINNED = Claims("me", ALL_SCOPES, ("*",), session_id="other")
EXTRA: tuple[tuple[Claims, str, tuple[Any, ...], ErrorCode], ...] = (
    # a table of calls for the steps the conformance cases do not decide (an id of another shape, ...)
    (ME, "ack_checkpoint", ("c", "bad id!", 1, 0), ErrorCode.INVALID_ARGUMENT),
    (PINNED, "upsert_presence", ("s1", "d", "n", "online", "", 30_000), ErrorCode.FORBIDDEN),
    (ME, "upsert_presence", ("", "d", "n", "online", "", 30_000), ErrorCode.INVALID_ARGUMENT),
    (ME, "upsert_presence", ("s1", "", "n", "online", "", 30_000), ErrorCode.INVALID_ARGUMENT),
    (ME, "upsert_presence", ("s1", "d", "", "online", "", 30_000), ErrorCode.INVALID_ARGUMENT),
    (ME, "upsert_presence", ("s1", "d", "n", "online", "bad region!", 30_000), ErrorCode.INVALID_ARGUMENT),
    (ME, "open_compute_assignment", ("", 5000, "{}"), ErrorCode.INVALID_ARGUMENT),
    (ME, "update_compute_assignment", ("", 1, "cancelled", None, None), ErrorCode.INVALID_ARGUMENT),
    (ME, "update_compute_assignment", ("r1", 1, "bogus", None, None), ErrorCode.INVALID_ARGUMENT),
    (ME, "update_compute_assignment", ("r1", 1, "assigned", "bad id!", None), ErrorCode.INVALID_ARGUMENT),
    (ME, "update_compute_assignment", ("r1", 1, "running", None, "{}"), ErrorCode.INVALID_ARGUMENT),
    (ME, "update_compute_assignment", ("r1", 1, "completed", None, "{bad"), ErrorCode.NON_CANONICAL_PAYLOAD),
    (ME, "update_compute_assignment", ("r1", 1, "cancelled", "p9", None), ErrorCode.INVALID_ARGUMENT),
    (ME, "enqueue_bridge_event", ("o2", "bad source!", 30078, "[]", "x"), ErrorCode.INVALID_ARGUMENT),
    (ME, "enqueue_bridge_event", ("o2", "src", 30078, "[]", "a\x01b"), ErrorCode.POLICY_DENIED),
    (ME, "mark_bridge_event_sent", ("bad id!", "ab" * 32, ()), ErrorCode.INVALID_ARGUMENT),
    (ME, "record_bridge_failure", ("bad id!", "err", 0), ErrorCode.INVALID_ARGUMENT),
    (ME, "publish_stream_signal", ("bad id!", "typing", "{}"), ErrorCode.INVALID_ARGUMENT),
)


def _extra_calls() -> list[tuple[DbState, red.CallContext, str, tuple[Any, ...], red.Outcome]]:
    db = DbState()
    for reducer, args in (("append_sync_event", ("s", "k", "{}", None, None)),
                          ("open_compute_assignment", ("r1", 5000, "{}"))):
        out = red.call(db, red.CallContext(ME, 10, 1), reducer, args)
        assert isinstance(out, red.Ok)
        db = out.state
    calls: list[tuple[DbState, red.CallContext, str, tuple[Any, ...], red.Outcome]] = []
    for claims, reducer, args, code in EXTRA:
        ctx = red.CallContext(claims, 20, 3)
        out = red.call(db, ctx, reducer, args)
        assert isinstance(out, red.Err) and out.error.code is code, (reducer, args, red.describe(out))
        calls.append((db, ctx, reducer, args, out))
    return calls


def test_the_first_step_that_decides_is_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _conformance_calls(monkeypatch) + _extra_calls()
    decided: dict[str, set[str]] = {}
    for db, ctx, reducer, args, out in calls:
        if reducer not in red.CHECKS or len(args) != len(REDUCER_BY_NAME[reducer].args):
            continue
        terms = red.TERMS[reducer](db, ctx, *args)
        found = red.decide(red.CHECKS[reducer], terms)
        step = None if found is None else (found[0].name, getattr(found[0], "code", None))
        if isinstance(out, red.Err):
            if out.error.code is ErrorCode.INVALID_ARGUMENT and out.error.details.get("message") == "wrong type":
                continue  # refused by call before any step
            assert step is not None and step[1] is out.error.code, (reducer, args, out.error.render(), step)
        elif step is not None:
            assert step[1] is None and out.noop, (reducer, args, step)
        else:
            assert out.noop == red.EFFECTS[reducer](terms).noop, (reducer, args)
        if step is not None:
            decided.setdefault(reducer, set()).add(step[0])
    # the cases (and the table above) decide through every step of every reducer
    missing = {name: [s.name for s in steps if s.name not in decided.get(name, set())]
               for name, steps in red.CHECKS.items()}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"steps no conformance case decides: {missing}"


def _me(*scopes: str) -> Claims:
    return Claims("me", frozenset(scopes), ("*",))


def test_a_reordered_tuple_changes_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order in the tuple is the order that runs: with the sequence check moved before the
    dedupe no-op, a retry after the head moved fails (the sequence_before_dedupe mutant's bug)."""
    ctx = red.CallContext(_me("sync.append"), 10, 1)
    first = red.call(DbState(), ctx, "append_sync_event", ("s", "k", "{}", None, 1))
    assert isinstance(first, red.Ok)
    second = red.call(first.state, ctx, "append_sync_event", ("s", "k2", "{}", None, 2))
    assert isinstance(second, red.Ok)
    retry = ("s", "k", "{}", None, 1)
    assert isinstance(red.call(second.state, ctx, "append_sync_event", retry), red.Ok)
    steps = list(red.APPEND_SYNC_EVENT)
    seq = next(i for i, s in enumerate(steps) if getattr(s, "code", None) is ErrorCode.SEQUENCE_CONFLICT)
    noop = next(i for i, s in enumerate(steps) if isinstance(s, red.NoOp))
    steps.insert(noop, steps.pop(seq))
    terms = red.AppendCall(second.state, ctx, *retry)
    decided = red.decide(tuple(steps), terms)
    assert decided is not None and decided[0] is red.APPEND_SYNC_EVENT[seq]
    with pytest.raises(SyncError) as info:
        red.run(tuple(steps), red.EFFECTS["append_sync_event"], terms)
    assert info.value.code is ErrorCode.SEQUENCE_CONFLICT


def test_a_removed_check_lets_the_call_through() -> None:
    """The evaluator runs exactly the tuple: without its scope check, append accepts a caller the
    rules refuse with missing_scope (the scope_not_checked mutant's bug, caught by AUTH-2)."""
    ctx = red.CallContext(_me(), 10, 1)
    assert isinstance(red.call(DbState(), ctx, "append_sync_event", ("s", "k", "{}", None, None)), red.Err)
    without = tuple(s for s in red.APPEND_SYNC_EVENT if getattr(s, "code", None) is not ErrorCode.MISSING_SCOPE)
    out = red.run(without, red.EFFECTS["append_sync_event"], red.AppendCall(DbState(), ctx, "s", "k", "{}", None, None))
    assert not out.noop and out.ret == 1
