"""Authorization: scopes, stream grants and row visibility (DESIGN §4).

A caller is described by :class:`Claims` (what a verified JWT says).  Three questions are
answered here, purely:

* may the caller run a reducer?  -- :func:`has_scope` (``missing_scope``) and
  :func:`stream_granted` (``forbidden_stream``); owner checks live with each reducer;
* may the caller see a row?      -- :func:`can_read`, the row filter applied to snapshots,
  transaction updates and SQL results alike;
* which streams does a grant cover?  An exact id, or a plain string prefix ending in ``*``
  (``a.own*`` also matches ``a.owner``: grant ``a.own.*`` to mean a namespace).  No
  ``oa_sync_streams`` claim means no stream at all.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import icontract

from spec import contracts
from spec.schema import BRIDGE_SCOPES, TABLE_BY_NAME, TABLE_BY_ROW_TYPE, Visibility
from spec.values import ComputeAssignment, Identity, Row, StreamSignal, SyncCheckpoint, SyncEvent, SyncStream


@dataclass(frozen=True, slots=True)
class Claims:
    identity: Identity
    scopes: frozenset[str]
    streams: tuple[str, ...] = ()
    device_id: str | None = None
    session_id: str | None = None
    client_build_id: str | None = None
    protocol_version: str | None = None
    schema_version: int | None = None


@icontract.ensure(lambda grant, stream_id, result: result or grant != stream_id,
                  "an exact grant always covers its own stream", enabled=contracts.PER_ROW)
@icontract.ensure(lambda grant, stream_id, result: grant.endswith("*") or result == (grant == stream_id),
                  "a grant without a trailing * covers exactly one stream id", enabled=contracts.PER_ROW)
@icontract.ensure(lambda grant, stream_id, result: not grant.endswith("*")
                  or result == (len(stream_id) >= len(grant) - 1 and stream_id[:len(grant) - 1] == grant[:-1]),
                  "a grant ending in * is a plain string prefix (a.own* also covers a.owner)",
                  enabled=contracts.PER_ROW)
@icontract.ensure(lambda grant, result: result or grant != "*", "the grant * covers every stream",
                  enabled=contracts.PER_ROW)
def grant_matches(grant: str, stream_id: str) -> bool:
    if grant.endswith("*"):
        return stream_id.startswith(grant[:-1])
    return grant == stream_id


@icontract.ensure(lambda claims, result: not result or bool(claims.streams),
                  "AUTH-1 (no oa_sync_streams claim means no stream at all)", enabled=contracts.PER_ROW)
@icontract.ensure(lambda claims, stream_id, result: result or stream_id not in claims.streams,
                  "AUTH-1 (a stream named exactly in the claim is granted)", enabled=contracts.PER_ROW)
def stream_granted(claims: Claims, stream_id: str) -> bool:
    return any(grant_matches(g, stream_id) for g in claims.streams)


def has_scope(claims: Claims, scope: str) -> bool:
    return scope in claims.scopes


def can_read(claims: Claims, row: Row) -> bool:
    """The row filter: may ``claims`` see ``row``?  A function of the row and the claims only, so no
    transaction can change what a subscriber may see without writing (and so delivering) the row
    itself (ADR-0003, decision 1)."""
    vis = TABLE_BY_ROW_TYPE[type(row)].visibility
    if vis is Visibility.EVERYONE:
        return True
    if vis is Visibility.STREAM_GRANT:
        assert isinstance(row, SyncStream | SyncEvent | StreamSignal)
        return stream_granted(claims, row.stream_id)
    if vis is Visibility.OWNER:
        assert isinstance(row, SyncCheckpoint)
        return row.owner == claims.identity
    if vis is Visibility.COMPUTE:
        assert isinstance(row, ComputeAssignment)
        return claims.identity in (row.requester, row.provider_owner) or "compute.assign" in claims.scopes
    return bool(claims.scopes & BRIDGE_SCOPES)


# What of the claims each visibility rule reads (the branches of can_read above, in the same order)
_FILTER_KEYS: dict[Visibility, Callable[[Claims], Hashable]] = {
    Visibility.EVERYONE: lambda c: None,
    Visibility.STREAM_GRANT: lambda c: c.streams,
    Visibility.OWNER: lambda c: c.identity,
    Visibility.COMPUTE: lambda c: (c.identity, "compute.assign" in c.scopes),
    Visibility.BRIDGE: lambda c: bool(c.scopes & BRIDGE_SCOPES),
}


def filter_key(claims: Claims, table: str) -> Hashable:
    """The part of ``claims`` that :func:`can_read` reads for rows of ``table``: two claims with
    equal keys see exactly the same rows of it.  The fanout filters a transaction's rows once per
    key instead of once per subscriber (ADR-0014): subscribers with different identities but the
    same stream grants share one filtered update, and so one encoding."""
    return _FILTER_KEYS[TABLE_BY_NAME[table].visibility](claims)
