"""What a reducer call is given and what it gives back: the vocabulary shared by the reducers
(:mod:`spec.reducers`) and their contracts (:mod:`spec.reducer_contracts`).

A call runs against a :class:`~spec.state.DbState` with a :class:`CallContext` (the caller's
claims, the clock, the offset the transaction commits at if it writes, the policy).  It either
commits (:class:`Ok`: the new state, its return value, the transaction's delta; an ``Ok`` whose
delta is empty is an accepted no-op) or fails (:class:`Err`: one error, state untouched).

It lives apart from :mod:`spec.reducers` so that the contracts can name these types without
importing the reducers they judge (and so that a planted mutant that re-executes the reducers'
source keeps these classes as they are).  :mod:`spec.reducers` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

from spec.auth import Claims
from spec.errors import SyncError
from spec.policy import DEFAULT_POLICY, Policy
from spec.state import DbState, Delta
from spec.values import SyncStream, Timestamp


@dataclass(frozen=True, slots=True)
class CallContext:
    claims: Claims
    now: Timestamp
    tx_offset: int  # the offset this transaction commits at, if it writes
    policy: Policy = DEFAULT_POLICY


@dataclass(frozen=True, slots=True)
class Ok:
    state: DbState
    ret: int | None
    delta: Delta

    @property
    def noop(self) -> bool:
        return self.delta.empty


@dataclass(frozen=True, slots=True)
class Err:
    error: SyncError


Outcome = Ok | Err


def virtual_stream(db: DbState, stream_id: str) -> tuple[int, int, int]:
    """(epoch, head_seq, floor_seq) of a stream; one that does not exist yet is
    (epoch_floor, 0, 1): the values it will have when its first event is appended."""
    s = db.find(SyncStream, lambda r: r.stream_id == stream_id)
    if s is None:
        return db.epoch_floor, 0, 1
    return s.epoch, s.head_seq, s.floor_seq
