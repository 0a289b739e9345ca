"""Running the proofs: :func:`run_all` -> one :class:`ProofResult` per proof."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import z3

from proofs.render import render
from proofs.theorems import Obligation, Proof

TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class ObligationResult:
    label: str
    status: str  # 'proved' | 'failed' | 'unknown' | 'vacuous' (hypotheses unsatisfiable: a failure)
    seconds: float
    counterexample: str


@dataclass(frozen=True)
class ControlResult:
    bug: str
    status: str  # 'refuted' | 'not refuted' | 'unknown'
    seconds: float
    counterexample: str  # the counterexample Z3 found for the broken transition


@dataclass(frozen=True)
class ProofResult:
    id: str
    title: str
    invariants: tuple[str, ...]
    transitions: tuple[str, ...]
    bounds: str
    result: str  # 'proved' | 'failed' | 'unknown'
    control: str  # 'refuted' | 'not refuted' | 'unknown' (over all controls)
    seconds: float
    counterexample: str  # the first failing obligation's counterexample, if any
    obligations: tuple[ObligationResult, ...]
    controls: tuple[ControlResult, ...]

    @property
    def ok(self) -> bool:
        return self.result == "proved" and self.control == "refuted"


def check(ob: Obligation, timeout_ms: int = TIMEOUT_MS, vacuity: bool = True) -> tuple[str, float, str]:
    """Solve ``hyps /\\ not goal``: ('unsat' | 'sat' | 'unknown' | 'vacuous', seconds, model text).
    An unsat answer counts only if the hypotheses alone are satisfiable: a transition relation or
    an invariant that no state satisfies would otherwise prove anything ('vacuous'); and only if each
    of the obligation's witnesses (the premises of its call goal's cases) is satisfiable with them: a
    case no state and call reach holds vacuously."""
    s = z3.SolverFor("QF_AUFLIA")  # every obligation is quantifier-free: arrays, functions, linear integers
    s.set("timeout", timeout_ms)
    s.add(*ob.hyps)
    s.push()
    s.add(z3.Not(ob.goal))
    started = time.monotonic()
    res = s.check()
    took = time.monotonic() - started
    if res == z3.unsat:
        s.pop()
        if vacuity and s.check() != z3.sat:
            return "vacuous", time.monotonic() - started, f"{ob.label}: the hypotheses are unsatisfiable"
        for name, premise in ob.witnesses if vacuity else ():
            s.push()
            s.add(premise)
            reached = s.check()
            s.pop()
            if reached == z3.unknown:
                return "unknown", time.monotonic() - started, f"{ob.label}: case {name!r}: {s.reason_unknown()}"
            if reached != z3.sat:
                return "vacuous", time.monotonic() - started, f"{ob.label}: no state and call reach the case {name!r}"
        return "unsat", time.monotonic() - started, ""
    if res == z3.sat:
        m = s.model()
        base = dict(ob.show).get("pre")
        return "sat", took, f"{ob.label}:\n" + "\n".join(
            render(m, label, obj, base if label in ("post", "post'") else None) for label, obj in ob.show)
    return "unknown", took, f"{ob.label}: {s.reason_unknown()}"


def run(proof: Proof, timeout_ms: int = TIMEOUT_MS) -> ProofResult:
    started = time.monotonic()
    obligations = []
    for ob in proof.build(""):
        status, took, text = check(ob, timeout_ms)
        verdict = {"unsat": "proved", "sat": "failed", "vacuous": "vacuous"}.get(status, "unknown")
        obligations.append(ObligationResult(ob.label, verdict, round(took, 3), text))
    controls = []
    for bug in proof.controls:
        c_started = time.monotonic()
        verdict, text = "not refuted", ""
        for ob in proof.build(bug):
            status, _took, model = check(ob, timeout_ms, vacuity=False)
            if status == "sat":
                verdict, text = "refuted", model
                break
            if status == "unknown":
                verdict = "unknown"
        controls.append(ControlResult(bug, verdict, round(time.monotonic() - c_started, 3), text))
    statuses = {o.status for o in obligations}
    result = ("failed" if statuses & {"failed", "vacuous"} else "unknown" if "unknown" in statuses else "proved")
    c_statuses = {c.status for c in controls}
    control = ("not refuted" if "not refuted" in c_statuses or not controls
               else "unknown" if "unknown" in c_statuses else "refuted")
    first_bad = next((o.counterexample for o in obligations if o.status != "proved"), "")
    return ProofResult(proof.id, proof.title, proof.invariants, proof.transitions, proof.bounds, result, control,
                       round(time.monotonic() - started, 3), first_bad, tuple(obligations), tuple(controls))


def proofs_by_invariant() -> dict[str, list[str]]:
    """Catalog invariant id -> the ids of the proofs that name it (for the invariant matrix)."""
    out: dict[str, list[str]] = {}
    for p in all_proofs():
        for inv in p.invariants:
            out.setdefault(inv, []).append(p.id)
    return out


def all_proofs() -> tuple[Proof, ...]:
    from proofs.theorems import ALL_PROOFS

    return ALL_PROOFS


def _run_id(args: tuple[str, int]) -> ProofResult:
    pid, timeout_ms = args
    return run(next(p for p in all_proofs() if p.id == pid), timeout_ms)


def run_all(only: Iterable[str] | None = None, timeout_ms: int = TIMEOUT_MS, jobs: int = 1) -> list[ProofResult]:
    """Run the proofs (all, or those named in ``only``), in catalog order.  ``jobs > 1`` spreads
    them over worker processes (Z3 terms do not cross processes: each worker builds its own)."""
    ids = [p.id for p in all_proofs()]
    if only is not None:
        wanted = list(only)
        unknown = sorted(set(wanted) - set(ids))
        if unknown:
            raise KeyError(f"no such proof: {', '.join(unknown)}")
        ids = [i for i in ids if i in wanted]
    if jobs <= 1 or len(ids) <= 1:
        return [_run_id((i, timeout_ms)) for i in ids]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(jobs, len(ids))) as pool:
        return pool.map(_run_id, [(i, timeout_ms) for i in ids], chunksize=1)
