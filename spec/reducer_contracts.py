"""The contracts of the reducers: read-only predicates the icontract conditions of
:mod:`spec.reducers` call, kept apart so that each reducer there reads as its rule (statement,
checks, effect) and not as its proof obligations.

Every function here judges a call after the fact -- the state before, the arguments, the
:class:`~spec.outcome.Ok` -- and is written from the rule's statement, not by calling the code
it judges: a written event is found in the delta and compared with the stream row, a version
with the row before, an edge with :data:`spec.transitions.ASSIGNMENT_TRANSITIONS`.  The
condition strings on the decorators name the invariants (``SEQ-4``, ``CKPT-2``, ...); the
planted mutants of ``tests/support/mutants.py`` show each able to fail.

Nothing here imports :mod:`spec.reducers`: a mutant re-executes that module's source and these
judges stay as they were.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from itertools import takewhile
from typing import Any

import icontract

from spec.auth import stream_granted
from spec.canonical import canonicalize, payload_hash
from spec.errors import ErrorCode, SyncError
from spec.invariants import Violation, check_call, check_state, check_transition, stream_layout_ok
from spec.outcome import CallContext, Err, Ok, Outcome, virtual_stream
from spec.policy import MAX_CONTINUATION_HOPS
from spec.schema import REDUCER_BY_NAME
from spec.state import DbState, R, table_of_type
from spec.transitions import ASSIGNMENT_TRANSITIONS, assignment_edge_allowed, bridge_edge_allowed, has_role
from spec.values import (
    BridgeOutbox,
    ComputeAssignment,
    PresenceSignal,
    ProviderCapability,
    SessionPresence,
    StreamSignal,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
    value_has_type,
)


def inserted(result: Ok, row_type: type[R]) -> list[R]:
    return [r for r in result.delta.for_table(table_of_type(row_type)).inserts if isinstance(r, row_type)]


def stream_row(db: DbState, stream_id: str) -> SyncStream | None:
    return next((r for r in db.of_type(SyncStream) if r.stream_id == stream_id), None)


def retained(db: DbState, stream_id: str, key: str) -> SyncEvent | None:
    return next((e for e in db.of_type(SyncEvent) if (e.stream_id, e.idempotency_key) == (stream_id, key)), None)


def hash_of_json(text: str) -> str | None:
    try:
        return payload_hash(canonicalize(text))
    except SyncError:
        return None


def appended_one(db: DbState, stream_id: str, key: str, result: Ok) -> bool:
    """The write is exactly one event of the stream, at seq ``ret`` in the stream's epoch, whose
    hash is of its payload, and the stream's head moved to it."""
    events = inserted(result, SyncEvent)
    stream = stream_row(result.state, stream_id)
    return (len(events) == 1 and stream is not None and stream.head_seq == result.ret
            and (events[0].stream_id, events[0].idempotency_key, events[0].seq) == (stream_id, key, result.ret)
            and events[0].epoch == virtual_stream(db, stream_id)[0] == stream.epoch
            and events[0].payload_hash == payload_hash(events[0].payload))


def deduplicated(db: DbState, stream_id: str, key: str, payload_json: str, result: Ok) -> bool:
    """A no-op append is a retry: the key is retained with this very payload, and ``ret`` is its seq."""
    kept = retained(db, stream_id, key)
    return kept is not None and kept.seq == result.ret and kept.payload_hash == hash_of_json(payload_json)


def checkpoint(db: DbState, client_id: str, stream_id: str) -> SyncCheckpoint | None:
    wanted = f"{client_id}|{stream_id}"
    return next((r for r in db.of_type(SyncCheckpoint) if r.checkpoint_id == wanted), None)


def ack_written(db: DbState, ctx: CallContext, client_id: str, stream_id: str, epoch: int, seq: int,
                 result: Ok) -> bool:
    s_epoch, head, _floor = virtual_stream(db, stream_id)
    prev = checkpoint(db, client_id, stream_id)
    now = checkpoint(result.state, client_id, stream_id)
    return (now is not None and (now.epoch, now.last_applied_seq, now.owner) == (s_epoch, seq, ctx.claims.identity)
            and seq <= head and (prev is None or prev.epoch != epoch or prev.last_applied_seq < seq))


def ack_redundant(db: DbState, client_id: str, stream_id: str, epoch: int, seq: int) -> bool:
    prev = checkpoint(db, client_id, stream_id)
    return prev is not None and prev.epoch == epoch and seq <= prev.last_applied_seq


def presence_unchanged(db: DbState, ctx: CallContext, session_id: str, device_id: str, node_id: str, status: str,
                       region: str, ttl_ms: int, result: Ok) -> bool:
    """A no-op upsert: the row already is what the call writes (the caller's, this device, node, status and
    region, seen now, expiring after ttl_ms) -- else a status change or a refresh would be lost."""
    row = next((r for r in db.of_type(SessionPresence) if r.session_id == session_id), None)
    return row is not None and result.state == db and (
        row.identity, row.device_id, row.node_id, row.status, row.region, row.last_seen, row.expires_at,
        row.offline_reason) == (ctx.claims.identity, device_id, node_id, status, region, ctx.now,
                                ctx.now + ttl_ms * 1000, "explicit_offline" if status == "offline" else None)


def presence_written(db: DbState, ctx: CallContext, session_id: str, status: str, result: Ok) -> bool:
    before = next((r for r in db.of_type(SessionPresence) if r.session_id == session_id), None)
    row = next((r for r in result.state.of_type(SessionPresence) if r.session_id == session_id), None)
    changed = before is None or before.status != status
    signals = inserted(result, PresenceSignal)
    return (row is not None and row.identity == ctx.claims.identity and row.status == status
            and (row.status == "offline") == (row.offline_reason is not None) and row.expires_at >= row.last_seen
            and len(signals) == (1 if changed else 0)
            and all((sig.session_id, sig.status) == (session_id, status) for sig in signals))


def provider(db: DbState, provider_id: str) -> ProviderCapability | None:
    return next((r for r in db.of_type(ProviderCapability) if r.provider_id == provider_id), None)


def _digest(text: str) -> str | None:
    """The payload hash of ``text``'s canonical form (None when it has none)."""
    try:
        return payload_hash(canonicalize(text))
    except SyncError:
        return None


def provider_versioned(db: DbState, provider_id: str, capability_json: str, nip90_kinds: tuple[int, ...],
                       price_hint_sats: int, status: str, result: Ok) -> bool:
    """PROV-1 for one publish: a no-op leaves the row, which already holds the call's ad (the same
    capability, kinds, price and status -- else the new ad would be lost); a write holds the call's ad at
    version + 1 (a new provider at version_floor)."""
    before, after = provider(db, provider_id), provider(result.state, provider_id)
    ad = (_digest(capability_json), tuple(sorted(set(nip90_kinds))), price_hint_sats, status)
    if result.noop:
        return before is not None and after == before and (
            before.capability_hash, before.nip90_kinds, before.price_hint_sats, before.status) == ad
    return (after is not None and after.version == (before.version + 1 if before else db.version_floor)
            and after.capability_hash == payload_hash(after.capability)
            and (after.capability_hash, after.nip90_kinds, after.price_hint_sats, after.status) == ad)


def assignment(db: DbState, request_id: str) -> ComputeAssignment | None:
    return next((r for r in db.of_type(ComputeAssignment) if r.request_id == request_id), None)


def assignment_opened(db: DbState, request_id: str, job_kind: int, request_json: str, result: Ok) -> bool:
    """ASSIGN-2 for one open: a no-op is a retry (the row holds this request and job kind: another
    request under a taken id is idempotency_conflict); a write opens a new row at version_floor."""
    before, after = assignment(db, request_id), assignment(result.state, request_id)
    if result.noop:
        return (before is not None and after == before and before.job_kind == job_kind
                and before.request_hash == _digest(request_json))
    return (before is None and after is not None and (after.status, after.version, after.provider_id) ==
            ("open", db.version_floor, None) and after.request_hash == payload_hash(after.request))


def assignment_stepped(db: DbState, ctx: CallContext, request_id: str, result: Ok) -> bool:
    """One edge of the table, taken by someone it names, bumping the version by exactly one."""
    before, after = assignment(db, request_id), assignment(result.state, request_id)
    if before is None or after is None:
        return False
    roles = ASSIGNMENT_TRANSITIONS.get((before.status, after.status), frozenset())
    return (assignment_edge_allowed(before.status, after.status) and after.version - before.version == 1
            and any(has_role(r, ctx.claims.scopes, ctx.claims.identity, before) for r in roles)
            and (after.status not in ("assigned", "running", "completed", "failed") or after.provider_id is not None)
            and (before.requester, before.request_hash) == (after.requester, after.request_hash))


def outbox(db: DbState, outbox_id: str) -> BridgeOutbox | None:
    return next((r for r in db.of_type(BridgeOutbox) if r.outbox_id == outbox_id), None)


def _outbox_digest(source: str, nostr_kind: int, tags_json: str, content: str) -> str | None:
    """The outbox dedupe key of a call (BRIDGE-3: the hash of canonical [source, kind, tags, content]),
    written here from the canonical text of the array (not through spec.reducers); None without one."""
    try:
        tags = canonicalize(tags_json, "tags_json")
        return payload_hash(canonicalize(json.dumps([source, nostr_kind, json.loads(tags), content])))
    except SyncError:
        return None


def outbox_enqueued(db: DbState, outbox_id: str, source: str, nostr_kind: int, tags_json: str, content: str,
                    result: Ok) -> bool:
    """A no-op is a retry (the row holds this call's content hash: other content under a taken id is
    idempotency_conflict); a write is a new row, pending, no attempts, due now, with this content hash."""
    before, after = outbox(db, outbox_id), outbox(result.state, outbox_id)
    digest = _outbox_digest(source, nostr_kind, tags_json, content)
    if result.noop:
        return before is not None and after == before and before.content_hash == digest
    return (before is None and after is not None and (after.status, after.attempts, after.nostr_event_id) ==
            ("pending", 0, None) and after.content_hash == digest and after.next_attempt_at == after.created_at)


def outbox_sent(db: DbState, outbox_id: str, nostr_event_id: str, relays: tuple[str, ...], result: Ok) -> bool:
    """Sent with this event id, every relay ever acknowledged kept: a write exactly when it adds one."""
    before, after = outbox(db, outbox_id), outbox(result.state, outbox_id)
    if before is None or after is None or (after.status, after.nostr_event_id) != ("sent", nostr_event_id):
        return False
    merged = set(relays) | (set(before.relays_acked) if before.status == "sent" else set())
    if after.relays_acked != tuple(sorted(merged)):
        return False
    return after == before if result.noop else bridge_edge_allowed(before.status, "sent")


def outbox_failed(db: DbState, ctx: CallContext, outbox_id: str, retry_after_ms: int, result: Ok) -> bool:
    before, after = outbox(db, outbox_id), outbox(result.state, outbox_id)
    if before is None or after is None:
        return False
    if result.noop:
        return before.status != "pending" and after == before
    return (after.attempts == before.attempts + 1 and bridge_edge_allowed(before.status, after.status)
            and (after.status == "failed") == (after.attempts >= ctx.policy.bridge_max_attempts)
            and after.next_attempt_at == ctx.now + 1000 * retry_after_ms)


def epoch_reset(db: DbState, stream_id: str, result: Ok) -> bool:
    before, after = stream_row(db, stream_id), stream_row(result.state, stream_id)
    return (before is not None and after is not None and after.epoch == before.epoch + 1
            and (after.continues_epoch, after.continues_seq) == (0, 0)
            and after.head_seq == before.head_seq and after.floor_seq == before.head_seq + 1
            and not any(e.stream_id == stream_id for e in result.state.of_type(SyncEvent)))


def signal_only(db: DbState, stream_id: str, result: Ok) -> bool:
    rows = [r for td in result.delta.tables for r in (*td.deletes, *td.inserts)]
    return (result.state == db and len(rows) == 1 and isinstance(rows[0], StreamSignal)
            and rows[0].stream_id == stream_id)


STREAM_ARG: Mapping[str, int] = {"append_sync_event": 0, "ack_checkpoint": 1, "publish_stream_signal": 0}
"""Reducers that need a stream grant, and the position of their stream id argument."""


def well_typed(reducer: str, args: tuple[Any, ...]) -> bool:
    rdef = REDUCER_BY_NAME.get(reducer)
    return rdef is not None and len(args) == len(rdef.args) and all(
        value_has_type(v, col.type) for col, v in zip(rdef.args, args, strict=True))


def authorized_first(ctx: CallContext, reducer: str, args: tuple[Any, ...], result: Outcome) -> bool:
    """A well-typed call without the reducer's scope fails with missing_scope, and one with the scope
    but without the stream grant fails with forbidden_stream, before any other check."""
    if not well_typed(reducer, args):
        return True
    scope = REDUCER_BY_NAME[reducer].scope
    if scope is not None and scope not in ctx.claims.scopes:
        return isinstance(result, Err) and result.error.code is ErrorCode.MISSING_SCOPE
    if reducer in STREAM_ARG and not stream_granted(ctx.claims, args[STREAM_ARG[reducer]]):
        return isinstance(result, Err) and result.error.code is ErrorCode.FORBIDDEN_STREAM
    return True


def state_violations(db: DbState, ctx: CallContext, result: Outcome) -> list[Violation]:
    """If the state before satisfied every state invariant, so must the state after, and the step
    every transition invariant: what is broken (empty when the call kept them, or the state before
    was broken already)."""
    if isinstance(result, Err) or result.noop:
        return []
    limit = ctx.policy.bridge_max_attempts
    found = check_state(result.state, limit) + check_transition(db, result.state)
    return found if found and not check_state(db, limit) else []


def call_violations(db: DbState, ctx: CallContext, reducer: str, args: tuple[Any, ...],
                     result: Outcome) -> list[Violation]:
    if not well_typed(reducer, args):
        return []
    granted = reducer in STREAM_ARG and stream_granted(ctx.claims, args[STREAM_ARG[reducer]])
    return check_call(db, ctx.claims.scopes, granted, reducer, args, isinstance(result, Ok),
                      result.ret if isinstance(result, Ok) else None,
                      result.error.code if isinstance(result, Err) else None,
                      isinstance(result, Ok) and not result.noop,
                      result.state if isinstance(result, Ok) else db, ctx.claims.identity)


def violation_error(checker: str, found: list[Violation]) -> icontract.ViolationError:
    """A contract error naming the invariants actually broken (the mutant harness reads the ids)."""
    return icontract.ViolationError(f"{checker} after a reducer call: {found}")



def compacted(db: DbState, result: Ok) -> bool:
    """Per stream: epoch and head kept, floor never lower, SEQ-1 kept."""
    for before in db.of_type(SyncStream):
        after = stream_row(result.state, before.stream_id)
        if after is None or (after.epoch, after.head_seq) != (before.epoch, before.head_seq) \
                or after.floor_seq < before.floor_seq:
            return False
        if stream_layout_ok(db, before) and not stream_layout_ok(result.state, after):
            return False
    return True



def max_epoch(db: DbState) -> int:
    return max([db.epoch_floor, *(s.epoch for s in db.of_type(SyncStream))])



def continued(db: DbState, after: DbState) -> bool:
    """Every stream moved to a new epoch that continues its old one up to its head, floor kept; its
    retained events and its checkpoints of the old epoch relabelled to the new one, nothing else."""
    streams = {s.stream_id: s for s in after.of_type(SyncStream)}
    for b in db.of_type(SyncStream):
        a = streams.get(b.stream_id)
        if a is None or (a.continues_epoch, a.continues_seq, a.head_seq, a.floor_seq) != (
                b.epoch, b.head_seq, b.head_seq, b.floor_seq) or a.epoch <= b.epoch:
            return False
        # ADR-0010: the old chain, each bound capped at the durable head, as long as it is usable
        old: list[tuple[int, int]] = [] if not b.continues_epoch else [
            (b.continues_epoch, b.continues_seq), *zip(b.earlier_epochs, b.earlier_seqs, strict=True)]
        capped = [(e, min(seq, b.head_seq)) for e, seq in old]
        usable = list(takewhile(lambda h: h[1] >= b.floor_seq - 1, capped))  # noqa: B023 (used at once)
        chain = usable[:MAX_CONTINUATION_HOPS - 1]
        if list(zip(a.earlier_epochs, a.earlier_seqs, strict=True)) != chain:
            return False
    relabel = {s.stream_id: (db_s.epoch, s.epoch) for s in after.of_type(SyncStream)
               for db_s in db.of_type(SyncStream) if db_s.stream_id == s.stream_id}
    events = [replace(e, epoch=relabel[e.stream_id][1]) if e.stream_id in relabel and relabel[e.stream_id][0] == e.epoch
              else e for e in db.of_type(SyncEvent)]
    ckpts = [replace(c, epoch=relabel[c.stream_id][1]) if c.stream_id in relabel and relabel[c.stream_id][0] == c.epoch
             else c for c in db.of_type(SyncCheckpoint)]
    return (sorted(map(repr, events)) == sorted(map(repr, after.of_type(SyncEvent)))
            and sorted(map(repr, ckpts)) == sorted(map(repr, after.of_type(SyncCheckpoint))))

