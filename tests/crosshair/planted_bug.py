"""Planted bugs for the CrossHair step: copies of contracted spec functions with one realistic slip
each, under exactly the contracts of the original (``test_contracts.py`` checks the descriptions
match).  ``crosshair check`` on each must exit 1 with a counterexample naming the function: that
shows the CrossHair step, with the budget of its real target, is live and not decorative.

Never imported by the product; only the tests and ``crosshair check`` load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import icontract

from spec import invariants as oracle
from spec import reducer_contracts as rc
from spec.compat import BUILD_RE, CompatWindow, _first_failure, window_well_formed
from spec.errors import ErrorCode, SyncError
from spec.query import Op, Query, _int_lower_bounds
from spec.reducers import Timestamp, max_version
from spec.resume import STALE_REASONS
from spec.state import DbState, Tx
from spec.transitions import _NEXT_LIVE, ASSIGNMENT_ROLES, ASSIGNMENT_STATUSES, ASSIGNMENT_TERMINAL
from spec.values import ComputeAssignment, ProviderCapability, SyncCheckpoint, SyncEvent, SyncStream

# --- spec.resume.stale_reasons, with the retention check off by one (W < floor - 2) -----------


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
    end = head if upper is None else min(head, upper)
    checks = (
        ("epoch_changed", requested_epoch is not None and requested_epoch != epoch),
        ("retention_floor_breach", watermark < floor - 2),  # planted: should be floor - 1
        ("replay_budget_exceeded", end - watermark > budget),
        ("cursor_ahead_of_head", watermark > head),
    )
    return tuple(name for name, failed in checks if failed)


# --- spec.client.apply_rule, with `<` where `<=` is right: a redelivered `last` is a gap ------

APPLY_RULES: tuple[str, ...] = ("duplicate", "apply", "gap")


@icontract.require(lambda last: last >= 0, "a watermark is a seq (>= 0)")
@icontract.ensure(lambda result: result in APPLY_RULES, "one of the three rules")
@icontract.ensure(lambda last, seq, result: (result == "duplicate") == (seq <= last),
                  "REPLAY-1 (a seq at or below the watermark is a duplicate: dropped)")
@icontract.ensure(lambda last, seq, result: (result == "apply") == (seq == last + 1),
                  "REPLAY-1 (exactly the next seq is applied)")
@icontract.ensure(lambda last, seq, result: (result == "gap") == (seq - last >= 2),
                  "REPLAY-1 (a seq past the next one is a gap: never applied, the client resubscribes)")
def apply_rule(last: int, seq: int) -> str:
    if seq < last:  # planted: should be seq <= last
        return "duplicate"
    return "apply" if seq == last + 1 else "gap"


# --- spec.auth.grant_matches, with the star stripped twice ------------------------------------


@icontract.ensure(lambda grant, stream_id, result: result or grant != stream_id,
                  "an exact grant always covers its own stream")
@icontract.ensure(lambda grant, stream_id, result: grant.endswith("*") or result == (grant == stream_id),
                  "a grant without a trailing * covers exactly one stream id")
@icontract.ensure(lambda grant, stream_id, result: not grant.endswith("*")
                  or result == (len(stream_id) >= len(grant) - 1 and stream_id[:len(grant) - 1] == grant[:-1]),
                  "a grant ending in * is a plain string prefix (a.own* also covers a.owner)")
@icontract.ensure(lambda grant, result: result or grant != "*", "the grant * covers every stream")
def grant_matches(grant: str, stream_id: str) -> bool:
    if grant.endswith("*"):
        return stream_id.startswith(grant.rstrip("*"))  # planted: `a**` also covers `a`
    return grant == stream_id


# --- spec.transitions.assignment_edge_allowed, over a table with a "retry" edge out of failed ----

ASSIGNMENT_TRANSITIONS: Mapping[tuple[str, str], frozenset[str]] = {
    ("open", "assigned"): frozenset({"dispatcher"}),
    ("assigned", "running"): frozenset({"executor"}),
    ("running", "completed"): frozenset({"executor"}),
    ("running", "failed"): frozenset({"executor"}),
    ("failed", "open"): frozenset({"requester"}),  # planted: a retry edge makes a terminal status live
    ("open", "cancelled"): frozenset({"requester", "dispatcher"}),
    ("assigned", "cancelled"): frozenset({"requester", "dispatcher"}),
    ("running", "cancelled"): frozenset({"requester", "dispatcher"}),
}


@icontract.require(lambda old, new: old in ASSIGNMENT_STATUSES and new in ASSIGNMENT_STATUSES,
                   "both ends are assignment statuses")
@icontract.ensure(lambda old, new, result: result == ((old, new) in ASSIGNMENT_TRANSITIONS),
                  "ASSIGN-1 (the function agrees with the table)")
@icontract.ensure(lambda old, new, result: not result or (
    old in ASSIGNMENT_STATUSES and new in ASSIGNMENT_STATUSES and old not in ASSIGNMENT_TERMINAL
    and ASSIGNMENT_STATUSES.index(old) < ASSIGNMENT_STATUSES.index(new)),
    "ASSIGN-1 (edges go forward in the lifecycle order and never leave a terminal status: no cycles)")
@icontract.ensure(lambda old, new, result: not result or (bool(ASSIGNMENT_TRANSITIONS[(old, new)])
                  and ASSIGNMENT_TRANSITIONS[(old, new)] <= ASSIGNMENT_ROLES.keys()),
                  "ASSIGN-1 (every edge names who may take it, from the known roles)")
@icontract.ensure(lambda old, new, result: result or not (
    new == "cancelled" and old in ASSIGNMENT_STATUSES and old not in ASSIGNMENT_TERMINAL),
    "ASSIGN-1 (every live assignment can be cancelled)")
@icontract.ensure(lambda old, new, result: result or not (
    old in ASSIGNMENT_STATUSES and old not in ASSIGNMENT_TERMINAL and new == _NEXT_LIVE.get(old)),
    "ASSIGN-1 (the happy path open -> assigned -> running -> completed is open)")
def assignment_edge_allowed(old: str, new: str) -> bool:
    return (old, new) in ASSIGNMENT_TRANSITIONS


# --- spec.query.lower_bound_exclusive, forgetting that `>= v` means `> v - 1` -----------------


@icontract.ensure(lambda q, column, result: (result is None) == (not _int_lower_bounds(q, column)),
                  "None exactly when no integer `column >`/`>=` conjunct")
@icontract.ensure(lambda q, column, result: result is None or (
    all(c.holds(result + 1) for c in _int_lower_bounds(q, column))
    and not all(c.holds(result) for c in _int_lower_bounds(q, column))),
    "STALE-1 (the largest W with `column > W` implied: W + 1 passes every lower bound, W does not)")
def lower_bound_exclusive(q: Query, column: str) -> int | None:
    bounds = [c.value for c in q.where if c.column == column and c.op in (Op.GT, Op.GE)  # planted: no - (GE)
              and isinstance(c.value, int) and not isinstance(c.value, bool)]
    return max(bounds, default=None)


# --- spec.compat.negotiate, checking the protocol before the build ----------------------------


@icontract.require(lambda window: window_well_formed(window), "the server's window is well formed")
@icontract.ensure(lambda window, build, protocol, schema, result:
                  (result.code if result else None) == _first_failure(window, build, protocol, schema),
                  "COMPAT-1 (the first failing check, in the documented order, decides the code)")
@icontract.ensure(lambda window, result: result is None or result.details["window"] == window.as_json(),
                  "COMPAT-1 (a rejection carries the server's window)")
def negotiate(window: CompatWindow, build: str | None, protocol: str | None,
              schema: int | None) -> SyncError | None:
    if build is None and protocol is None and schema is None and not window.require_claims:
        return None
    w = window.as_json()
    if protocol != window.protocol_version:  # planted: the protocol check runs first
        return SyncError(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION, {"requested_protocol_version": protocol or "",
                                                                  "window": w})
    if build is None or not build.strip() or not BUILD_RE.fullmatch(build):
        return SyncError(ErrorCode.INVALID_CLIENT_BUILD, {"client_build_id": build or "", "window": w})
    if schema is None or not window.min_schema_version <= schema <= window.max_schema_version:
        return SyncError(ErrorCode.UNSUPPORTED_SCHEMA_VERSION, {"requested_schema_version": schema, "window": w})
    if build < window.min_client_build_id:
        return SyncError(ErrorCode.UPGRADE_REQUIRED, {"client_build_id": build, "window": w})
    if build > window.max_client_build_id:
        return SyncError(ErrorCode.UNSUPPORTED_CLIENT_BUILD, {"client_build_id": build, "window": w})
    return None


# --- spec.reducers.unclean_restart, bumping epochs by the loss bound but not past it ------------


@icontract.require(lambda db: db.well_formed(), "a state of the schema's tables: rows of its type, keys unique")
@icontract.require(lambda max_undurable: max_undurable >= 0, "the loss bound is a count")
@icontract.ensure(lambda db, max_undurable, result: result.epoch_floor > rc.max_epoch(db) + max_undurable
                  and all(s.epoch == result.epoch_floor for s in result.of_type(SyncStream)),
                  "DUR-2 (every stream, and every stream created later, moves above every epoch the lost"
                  " transactions can have handed out)")
@icontract.ensure(lambda db, result: rc.continued(db, result),
                  "SEQ-1 CONT-1 (each new epoch continues the old one up to the durable head, floor kept, its events "
                  "and checkpoints relabelled: same seq, payload, hash, producer and offset, epoch raised; and every "
                  "epoch the old one continued, each bound capped at the durable head, while usable, ADR-0010)")
@icontract.ensure(lambda db, max_undurable, result: result.version_floor > max_version(db) + max_undurable
                  and all(r.version == result.version_floor for r in result.of_type(ProviderCapability))
                  and all(r.version == result.version_floor for r in result.of_type(ComputeAssignment)),
                  "VER-1 (every provider and assignment, and every one created later, moves above every version the "
                  "lost transactions can have handed out)")
@icontract.ensure(lambda db, result: all(result.rows(t) == rows for t, rows in db.tables.items()
                                         if t not in ("sync_stream", "sync_event", "sync_checkpoint",
                                                      "provider_capability", "compute_assignment"))
                  and all(len(result.rows(t)) == len(db.rows(t)) for t in db.tables),
                  "CONT-1 (an unclean restart changes only epochs of streams, events and checkpoints, and versions)")
def unclean_restart(db: DbState, now: Timestamp, max_undurable: int) -> DbState:
    streams = list(db.of_type(SyncStream))
    fresh = max([db.epoch_floor, *(s.epoch for s in streams)]) + max_undurable  # planted: + 1 missing
    tx = Tx(db)
    old_epoch = {s.stream_id: s.epoch for s in streams}
    for s in streams:
        tx.update(s, replace(s, epoch=fresh, continues_epoch=s.epoch, continues_seq=s.head_seq, updated_at=now))
    for e in list(db.of_type(SyncEvent)):
        if old_epoch.get(e.stream_id) == e.epoch:
            tx.update(e, replace(e, epoch=fresh))
    for c in list(db.of_type(SyncCheckpoint)):
        if old_epoch.get(c.stream_id) == c.epoch:
            tx.update(c, replace(c, epoch=fresh))
    tx.epoch_floor = fresh
    # versions: each lost transaction raised the largest version by at most one (an update bumps a
    # row by one, a new row takes the floor, retention raises the floor above what it removed), so
    # every row, and every row created later, moves above all of them (ADR-0003 decision 5)
    version = max_version(db) + max_undurable + 1
    versioned: list[ProviderCapability | ComputeAssignment] = [*db.of_type(ProviderCapability),
                                                               *db.of_type(ComputeAssignment)]
    for row in versioned:
        tx.update(row, replace(row, version=version))
    tx.version_floor = version
    state, _ = tx.finish()
    return state


PLANTED: Mapping[str, str] = {
    "stale_reasons": "spec.resume.stale_reasons",
    "apply_rule": "spec.client.apply_rule",
    "grant_matches": "spec.auth.grant_matches",
    "assignment_edge_allowed": "spec.transitions.assignment_edge_allowed",
    "lower_bound_exclusive": "spec.query.lower_bound_exclusive",
    "negotiate": "spec.compat.negotiate",
    "unclean_restart": "spec.reducers.unclean_restart",
}
"""planted function -> the spec function whose contracts (and CrossHair budget) it borrows."""
