"""The Z3 proofs, in CI: every proof proved, every negative control refuted.

(Invariant ids are deliberately not spelled out in this directory: ``support.invdoc`` lists a test
file under every id it mentions; ``proofs.api.proofs_by_invariant`` is the proofs' column.)

The spec bugs these proofs found (docs/proofs.md, "Findings") are fixed; every proof must now hold.
"""

from __future__ import annotations

import pytest

from proofs.api import ProofResult, run_all
from proofs.theorems import ALL_PROOFS


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
