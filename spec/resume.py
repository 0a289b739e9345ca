"""The stale-cursor rule: may a resume from (epoch E, watermark W) be served?

One definition, used by the model server (:mod:`spec.delivery`) and the reference engine alike
(the engine may import this vocabulary module, not ``spec.delivery``).  A resume of a stream at
``epoch`` with retained seqs ``floor..head`` is refused with every reason that applies, in the fixed
order of :data:`STALE_REASONS`.  Its second opinion, :func:`spec.invariants.stale_reasons`, is
written differently (as counts of seqs, not as comparisons of bounds) and is what the contracts, the
trace and the Z3 correspondence compare this rule with.
"""

from __future__ import annotations

import icontract

from spec import invariants as oracle

STALE_REASONS: tuple[str, ...] = (
    "epoch_changed", "retention_floor_breach", "replay_budget_exceeded", "cursor_ahead_of_head",
)


@icontract.require(lambda budget: budget >= 0, "a replay budget is a count")
@icontract.ensure(lambda epoch, head, floor, budget, requested_epoch, watermark, result:
                  result == oracle.stale_reasons(epoch, head, floor, budget, requested_epoch, watermark),
                  "STALE-1 (the server's decision agrees with the oracle spec.invariants.stale_reasons)")
@icontract.ensure(lambda epoch, head, floor, budget, requested_epoch, watermark, result:
                  (not result) == oracle.resume_is_safe(epoch, head, floor, budget, requested_epoch, watermark),
                  "STALE-1 (no reason exactly when floor-1 <= W <= head, head-W <= budget and the epoch is equal)")
@icontract.ensure(lambda result: oracle.in_fixed_order(result, STALE_REASONS),
                  "STALE-1 (reasons are distinct and in the fixed order of STALE_REASONS)")
def stale_reasons(epoch: int, head: int, floor: int, budget: int, requested_epoch: int | None,
                  watermark: int) -> tuple[str, ...]:
    """The server's stale-cursor decision (the oracle is :func:`spec.invariants.stale_reasons`)."""
    checks = (
        ("epoch_changed", requested_epoch is not None and requested_epoch != epoch),
        ("retention_floor_breach", watermark < floor - 1),
        ("replay_budget_exceeded", head - watermark > budget),
        ("cursor_ahead_of_head", watermark > head),
    )
    return tuple(name for name, failed in checks if failed)
