"""State-transition tables, as data.

The Hypothesis machines, the Z3 encodings, the reference engine and the docs all read these
tables; none restates them.

Compute assignments::

    open --assign--> assigned --start--> running --complete--> completed
      \\                \\                  \\----fail-------> failed
       \\-------------- cancel (from open, assigned, running) --> cancelled

``completed``, ``failed`` and ``cancelled`` are terminal; every accepted update bumps
``version`` by exactly 1.  Each edge names who may take it: a scope, or ``requester``.
"""

from __future__ import annotations

from collections.abc import Mapping

ASSIGNMENT_STATUSES: tuple[str, ...] = ("open", "assigned", "running", "completed", "failed", "cancelled")
ASSIGNMENT_TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

ASSIGNMENT_TRANSITIONS: Mapping[tuple[str, str], frozenset[str]] = {
    ("open", "assigned"): frozenset({"compute.assign"}),
    ("assigned", "running"): frozenset({"compute.execute"}),
    ("running", "completed"): frozenset({"compute.execute"}),
    ("running", "failed"): frozenset({"compute.execute"}),
    ("open", "cancelled"): frozenset({"requester", "compute.assign"}),
    ("assigned", "cancelled"): frozenset({"requester", "compute.assign"}),
    ("running", "cancelled"): frozenset({"requester", "compute.assign"}),
}
"""(from, to) -> who may take the edge (any one suffices)."""

PRESENCE_STATUSES: tuple[str, ...] = ("online", "away", "offline")
PRESENCE_OFFLINE_REASONS: tuple[str, ...] = ("explicit_offline", "ttl_expired", "disconnected")

BRIDGE_STATUSES: tuple[str, ...] = ("pending", "sent", "failed")
BRIDGE_TRANSITIONS: Mapping[tuple[str, str], str] = {
    ("pending", "sent"): "mark_bridge_event_sent",
    ("failed", "sent"): "mark_bridge_event_sent",  # a late success still is a success
    ("pending", "pending"): "record_bridge_failure",  # attempts + 1, below the maximum
    ("pending", "failed"): "record_bridge_failure",  # attempts reached the maximum: dead letter
}

PROVIDER_STATUSES: tuple[str, ...] = ("active", "withdrawn")
SIGNAL_KINDS: tuple[str, ...] = ("typing", "progress", "custom")


def assignment_edge_allowed(old: str, new: str) -> bool:
    return (old, new) in ASSIGNMENT_TRANSITIONS
