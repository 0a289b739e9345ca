"""State-transition tables, as data.

The Hypothesis machines, the Z3 encodings, the reference engine and the docs all read these
tables; none restates them.

Compute assignments::

    open --assign--> assigned --start--> running --complete--> completed
      \\                \\                  \\----fail-------> failed
       \\-------------- cancel (from open, assigned, running) --> cancelled

``completed``, ``failed`` and ``cancelled`` are terminal; every accepted update bumps
``version`` by exactly 1.  Each edge names the *roles* that may take it, and a second small table,
:data:`ASSIGNMENT_ROLES`, defines each role as a predicate over the caller and the row: a scope the
caller must hold and a column of the row whose identity the caller must be (ADR-0003)::

    role         scope             caller must be
    requester    (none)            the row's requester
    dispatcher   compute.assign    anyone
    executor     compute.execute   the row's provider_owner (the assigned provider's owner)

So start, complete and fail belong to the owner of the assigned provider alone; cancel to the
requester or a dispatcher; assigning to a dispatcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import icontract

ASSIGNMENT_STATUSES: tuple[str, ...] = ("open", "assigned", "running", "completed", "failed", "cancelled")
ASSIGNMENT_TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

ASSIGNMENT_TRANSITIONS: Mapping[tuple[str, str], frozenset[str]] = {
    ("open", "assigned"): frozenset({"dispatcher"}),
    ("assigned", "running"): frozenset({"executor"}),
    ("running", "completed"): frozenset({"executor"}),
    ("running", "failed"): frozenset({"executor"}),
    ("open", "cancelled"): frozenset({"requester", "dispatcher"}),
    ("assigned", "cancelled"): frozenset({"requester", "dispatcher"}),
    ("running", "cancelled"): frozenset({"requester", "dispatcher"}),
}
"""(from, to) -> the roles that may take the edge (any one suffices)."""


@dataclass(frozen=True, slots=True)
class Role:
    scope: str | None  # the oa_sync_scopes entry the caller must hold (None: no scope beyond the reducer's)
    identity_column: str | None  # the caller must be the identity in this column of the row (None: anyone)


ASSIGNMENT_ROLES: Mapping[str, Role] = {
    "requester": Role(None, "requester"),
    "dispatcher": Role("compute.assign", None),
    "executor": Role("compute.execute", "provider_owner"),
}
"""Each role of :data:`ASSIGNMENT_TRANSITIONS` as a predicate: scope and identity relation."""


def has_role(role: str, scopes: frozenset[str], identity: str, row: object) -> bool:
    """Does a caller (``scopes``, ``identity``) hold ``role`` on the assignment ``row``?"""
    r = ASSIGNMENT_ROLES[role]
    return (r.scope is None or r.scope in scopes) and (
        r.identity_column is None or getattr(row, r.identity_column) == identity)

_NEXT_LIVE: Mapping[str, str] = {"open": "assigned", "assigned": "running", "running": "completed"}

PRESENCE_STATUSES: tuple[str, ...] = ("online", "away", "offline")
PRESENCE_OFFLINE_REASONS: tuple[str, ...] = ("explicit_offline", "ttl_expired", "disconnected")

BRIDGE_STATUSES: tuple[str, ...] = ("pending", "sent", "failed")
BRIDGE_TRANSITIONS: Mapping[tuple[str, str], str] = {
    ("pending", "sent"): "mark_bridge_event_sent",
    ("failed", "sent"): "mark_bridge_event_sent",  # a late success still is a success
    ("sent", "sent"): "mark_bridge_event_sent",  # the same event id again: newly acked relays merge in
    ("pending", "pending"): "record_bridge_failure",  # attempts + 1, below the maximum; backoff recorded
    ("pending", "failed"): "record_bridge_failure",  # attempts reached the maximum: dead letter
}

PROVIDER_STATUSES: tuple[str, ...] = ("active", "withdrawn")
SIGNAL_KINDS: tuple[str, ...] = ("typing", "progress", "custom")


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


@icontract.require(lambda old, new: old in BRIDGE_STATUSES and new in BRIDGE_STATUSES,
                   "both ends are outbox statuses")
@icontract.ensure(lambda old, new, result: result == ((old, new) in BRIDGE_TRANSITIONS),
                  "BRIDGE-2 (the function agrees with the table)")
@icontract.ensure(lambda old, new, result: not result or old != "sent" or new == "sent",
                  "BRIDGE-2 (a sent outbox row stays sent)")
@icontract.ensure(lambda old, new, result: not result or old != new or old in ("pending", "sent"),
                  "BRIDGE-1 (the only self-edges are a failed attempt that stays pending below the maximum and a "
                  "repeated success that merges relays into a sent row)")
@icontract.ensure(lambda old, new, result: result or not (old in ("pending", "failed") and new == "sent"),
                  "BRIDGE-2 (a success is recorded from pending, and a late one from failed)")
def bridge_edge_allowed(old: str, new: str) -> bool:
    return (old, new) in BRIDGE_TRANSITIONS
