"""The stale-cursor rule: may a resume from (epoch E, watermark W) be served?

One definition, used by the model server (:mod:`spec.delivery`) and the reference engine alike
(the engine may import this vocabulary module, not ``spec.delivery``).  A resume of a stream at
``epoch`` with retained seqs ``floor..head`` is refused with every reason that applies, in the fixed
order of :data:`STALE_REASONS`.  Its second opinion, :func:`spec.invariants.stale_reasons`, is
written differently (as counts of seqs, not as comparisons of bounds) and is what the contracts, the
trace and the Z3 correspondence compare this rule with.

It also holds the *continuation chain* an unclean restart writes (ADR-0003 decision 6, ADR-0010):
:func:`continued_stream` is the one definition of the stream row the recovery transaction writes
(the model's :func:`spec.reducers.unclean_restart` and the engine's recovery both call it), and
:func:`continuation_hops` reads a row's chain back as ``(epoch, last shared seq)`` pairs, newest
first, for the client rule :func:`spec.client.continues`.
"""

from __future__ import annotations

from dataclasses import replace

import icontract

from spec import invariants as oracle
from spec.policy import MAX_CONTINUATION_HOPS
from spec.values import SyncStream, Timestamp

STALE_REASONS: tuple[str, ...] = (
    "epoch_changed", "retention_floor_breach", "replay_budget_exceeded", "cursor_ahead_of_head",
)


@icontract.require(lambda budget: budget >= 0, "a replay budget is a count")
@icontract.ensure(lambda epoch, head, floor, budget, requested_epoch, watermark, upper, result:
                  result == oracle.stale_reasons(epoch, head, floor, budget, requested_epoch, watermark, upper),
                  "STALE-1 (the server's decision agrees with the oracle spec.invariants.stale_reasons)")
@icontract.ensure(lambda epoch, head, floor, budget, requested_epoch, watermark, upper, result:
                  (not result) == oracle.resume_is_safe(epoch, head, floor, budget, requested_epoch, watermark, upper),
                  "STALE-1 (no reason exactly when floor-1 <= W <= head, min(head, B)-W <= budget and the epoch is "
                  "equal)")
@icontract.ensure(lambda result: oracle.in_fixed_order(result, STALE_REASONS),
                  "STALE-1 (reasons are distinct and in the fixed order of STALE_REASONS)")
def stale_reasons(epoch: int, head: int, floor: int, budget: int, requested_epoch: int | None,
                  watermark: int, upper: int | None = None) -> tuple[str, ...]:
    """The server's stale-cursor decision (the oracle is :func:`spec.invariants.stale_reasons`).

    ``upper`` is the resume's upper seq bound B (the query implies ``seq <= B``: a page of a catch-up),
    None for an unbounded resume: the replay it costs is ``min(head, B) - W`` events, and only that is
    held against the budget (ADR-0042)."""
    end = head if upper is None else min(head, upper)
    checks = (
        ("epoch_changed", requested_epoch is not None and requested_epoch != epoch),
        ("retention_floor_breach", watermark < floor - 1),
        ("replay_budget_exceeded", end - watermark > budget),
        ("cursor_ahead_of_head", watermark > head),
    )
    return tuple(name for name, failed in checks if failed)


def continuation_hops(stream: SyncStream) -> tuple[tuple[int, int], ...]:
    """The epochs ``stream``'s current epoch continues, newest first, each with the last seq it shares
    with the current epoch: ``(continues_epoch, continues_seq)`` then ``zip(earlier_epochs,
    earlier_seqs)``; empty for a fresh epoch (``continues_epoch = 0``)."""
    if stream.continues_epoch == 0:
        return ()
    return ((stream.continues_epoch, stream.continues_seq), *zip(stream.earlier_epochs, stream.earlier_seqs,
                                                                   strict=False))


def continued_stream(stream: SyncStream, fresh: int, now: Timestamp) -> SyncStream:
    """The row an unclean restart moves ``stream`` to (ADR-0010): epoch ``fresh`` continues the old epoch
    up to the durable head (``continues_* = (epoch, head_seq)``, floor kept), and every epoch the old
    one continued up to ``s`` it continues up to ``min(s, head_seq)`` -- an event shared all the way
    from an old epoch to the new one is one every hop in between kept.  Kept only while a client could
    use it (a bound below ``floor_seq - 1`` is unusable: such a watermark is below the floor anyway)
    and at most :data:`MAX_CONTINUATION_HOPS` epochs in all; the bounds only fall going back, so
    what is kept is a prefix of the chain."""
    head = stream.head_seq
    earlier: list[tuple[int, int]] = []
    for epoch, seq in continuation_hops(stream):
        bound = min(seq, head)
        if bound < stream.floor_seq - 1 or len(earlier) >= MAX_CONTINUATION_HOPS - 1:
            break
        earlier.append((epoch, bound))
    return replace(stream, epoch=fresh, continues_epoch=stream.epoch, continues_seq=head,
                   earlier_epochs=tuple(e for e, _ in earlier), earlier_seqs=tuple(s for _, s in earlier),
                   updated_at=now)


def continuation_details(stream: SyncStream | None) -> dict[str, object]:
    """The continuation keys of a ``stale_cursor`` error's details: the stream row's chain
    (``continues_epoch``, ``continues_seq``, ``earlier_epochs``, ``earlier_seqs``); a fresh epoch's
    for a stream that does not exist yet."""
    if stream is None:
        return {"continues_epoch": 0, "continues_seq": 0, "earlier_epochs": [], "earlier_seqs": []}
    return {"continues_epoch": stream.continues_epoch, "continues_seq": stream.continues_seq,
            "earlier_epochs": list(stream.earlier_epochs), "earlier_seqs": list(stream.earlier_seqs)}
