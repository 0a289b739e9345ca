"""The Z3 proofs, in CI: every proof proved, every negative control refuted.

(Invariant ids are deliberately not spelled out in this directory: ``support.invdoc`` lists a test
file under every id it mentions; ``proofs.api.proofs_by_invariant`` is the proofs' column.)

The spec bugs these proofs found (docs/proofs.md, "Findings") are fixed; every proof must now hold.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import z3

from proofs import encoding as E
from proofs import props as P
from proofs import server as SV
from proofs.api import ProofResult, check, run_all
from proofs.core import select
from proofs.theorems import ALL_PROOFS, Obligation, Proof, bridge3_call_cases, db_proof, outbox_call_cases


def _explain(r: ProofResult) -> str:
    lines = [f"{r.id}: {r.result} / controls {r.control}"]
    lines += [f"  {o.status} {o.label}\n{o.counterexample}" for o in r.obligations if o.status != "proved"]
    lines += [f"  control {c.bug}: {c.status}" for c in r.controls if c.status != "refuted"]
    return "\n".join(lines)


@pytest.mark.parametrize("proof_id", [p.id for p in ALL_PROOFS])
def test_proof_holds_and_its_controls_are_refuted(proof_id: str) -> None:
    (r,) = run_all([proof_id])
    assert r.ok, _explain(r)


def test_every_proof_has_controls_and_covers_transitions() -> None:
    ids = [p.id for p in ALL_PROOFS]
    assert len(ids) == len(set(ids))
    for p in ALL_PROOFS:
        assert p.controls, f"{p.id} has no negative control"
        assert p.transitions, f"{p.id} covers no transition"


def test_every_invariant_group_is_covered() -> None:
    covered = {i.split("-")[0] for p in ALL_PROOFS for i in p.invariants}
    wanted = {"SEQ", "IDEM", "HASH", "CKPT", "DELIV", "REPLAY", "STALE", "CONF", "EVT", "AUTH", "ASSIGN", "BRIDGE",
              "PRES", "DUR"}
    assert wanted <= covered, wanted - covered
    from spec.invariants import CATALOG_BY_ID

    unknown = {i for p in ALL_PROOFS for i in p.invariants} - set(CATALOG_BY_ID)
    assert not unknown, f"proofs name invariants the catalog does not have: {unknown}"


# --- the outbox call goals: each control is a gap the goals close, and no case holds vacuously ---------------

_OUTBOX_CONTROLS = {
    "bridge": ("failure_not_counted", "enqueue_not_recorded", "first_mark_drops_relays"),
    "bridge-worker": ("source_not_in_dedupe_hash", "backoff_not_recorded", "backoff_unit_ms",
                      "repeated_ack_ignores_relays"),
}


def _refutes(proof: Proof, bug: str) -> bool:
    """Does Z3 find a counterexample to ``proof`` over the transition ``bug`` breaks?"""
    statuses = [check(ob, vacuity=False)[0] for ob in proof.build(bug)]
    assert "unknown" not in statuses
    return "sat" in statuses


@pytest.mark.parametrize(("proof_id", "bug"), [(p, b) for p, bugs in _OUTBOX_CONTROLS.items() for b in bugs])
def test_outbox_controls_are_refuted_by_the_call_goals(proof_id: str, bug: str) -> None:
    """The outbox proofs as they were before their call goals (the state and transition goals of the
    rows) miss each of these planted bugs; the call goals alone, with no state goal, refute it."""
    assert bug in next(p for p in ALL_PROOFS if p.id == proof_id).controls
    without_calls = db_proof("rows", "", (), (bug,), lambda db, pol: P.bridge1(db, pol),
                             lambda s: P.bridge2(s.pre, s.post))
    calls_only = db_proof("calls", "", (), (bug,), None, lambda s: z3.BoolVal(True),
                          cases=outbox_call_cases if proof_id == "bridge" else bridge3_call_cases)
    assert not _refutes(without_calls, bug), f"{bug} was already caught without the call goals"
    assert _refutes(calls_only, bug), f"the call goals of {proof_id} do not refute {bug}"


_OUTBOX_CALLS = ("enqueue_bridge_event", "mark_bridge_event_sent", "record_bridge_failure")


def _steps(proof_id: str) -> dict[str, Obligation]:
    proof = next(p for p in ALL_PROOFS if p.id == proof_id)
    return {ob.transition: ob for ob in proof.build("") if ob.transition in _OUTBOX_CALLS}


def test_every_outbox_case_is_reached() -> None:
    """Each case of the outbox call goals has a state and call that reach it (else ``check`` says
    vacuous), and the outbox steps carry them all."""
    steps = {pid: _steps(pid) for pid in _OUTBOX_CONTROLS}
    names = {name for by_t in steps.values() for ob in by_t.values() for name, _premise in ob.witnesses}
    assert len(names) == 13, sorted(names)
    for pid, by_t in steps.items():
        for t, ob in by_t.items():
            assert check(ob)[0] == "unsat", (pid, t)


def test_an_unreachable_case_is_vacuous() -> None:
    """The witness check has teeth: a case no state reaches -- a failure counted on a pending row
    already at the maximum attempts, which the rows' state invariant rules out -- makes the
    obligation vacuous, though its goal is still implied."""
    ob = _steps("bridge")["record_bridge_failure"]
    pre, act, pol = (dict(ob.show)[k] for k in ("pre", "action", "policy"))
    assert isinstance(pre, E.Db) and isinstance(act, E.FailureAct) and isinstance(pol, E.Policy)
    old = select(pre.outbox, act.outbox)
    at_max = z3.And(old.used, old.status == E.B_STATUS["pending"], old.attempts >= pol.max_attempts)
    assert check(replace(ob, witnesses=(*ob.witnesses, ("pending at the maximum", at_max))))[0] == "vacuous"
    reachable = z3.And(old.used, old.status == E.B_STATUS["pending"], old.attempts + 1 == pol.max_attempts)
    assert check(replace(ob, witnesses=(("the last attempt", reachable),)))[0] == "unsat"


# --- the resume theorem over pages (ADR-0042) ---------------------------------------------------------------

_PAGE_CONTROLS = ("budget_ignores_upper_bound", "budget_upper_max_not_min", "page_bound_exclusive",
                  "page_snapshot_ignores_bound", "page_updates_ignore_bound")
"""The resume theorem's controls only a bounded subscription shows (``budget_gt_read_as_ge`` is not one: an
unbounded resume of exactly the budget shows it too)."""


def _unbounded_only(ob: Obligation) -> Obligation:
    """The obligation as the resume theorem stated it before pages: the subscription has no upper bound."""
    show = dict(ob.show)
    if ob.transition == "subscribe":
        act = show["subscribe"]
        assert isinstance(act, SV.SubscribeAct)
        return replace(ob, hyps=(*ob.hyps, z3.Not(act.has_upper)), witnesses=())
    sub = show["sub"]
    assert isinstance(sub, SV.Sub)
    return replace(ob, hyps=(*ob.hyps, z3.Not(sub.has_upper)))


@pytest.mark.parametrize("bug", _PAGE_CONTROLS)
def test_the_page_controls_need_the_bounded_resume_theorem(bug: str) -> None:
    """Each page control is refuted by the resume theorem over bounded subscriptions, and by nothing in it
    when every subscription is unbounded (the theorem before ADR-0042's extension): the bounded cases are
    what catch it."""
    resume = next(p for p in ALL_PROOFS if p.id == "resume")
    assert bug in resume.controls
    assert _refutes(resume, bug), f"the resume theorem does not refute {bug}"
    obligations = [_unbounded_only(ob) for ob in resume.build(bug)]
    statuses = [check(ob, vacuity=False)[0] for ob in obligations]
    assert statuses and set(statuses) == {"unsat"}, (bug, statuses)
