"""The reducers of the sync module, and the server's own system transactions.

Each reducer is a pure function ``(DbState, CallContext, *args) -> Outcome``.  A reducer either
commits (:class:`Ok`: the new state, its BSATN return value, and the transaction's
:class:`~spec.state.Delta`) or fails (:class:`Err`: one :class:`~spec.errors.SyncError`,
state untouched -- a failed reducer changes nothing and only its caller hears of it).  An
``Ok`` whose delta is empty is an accepted no-op (a deduplicated retry, a lower ack): it reads,
it does not write, and it takes no transaction offset.

Check order is part of the specification and is the same in every reducer:

1. authorization -- ``missing_scope``, ``forbidden_stream``, ``forbidden`` (owner-bound rows);
2. argument validation -- ``invalid_argument``, ``non_canonical_payload``,
   ``payload_too_large``, ``payload_hash_mismatch`` (and the bridge ``policy_denied``);
3. state checks -- dedupe, conflicts, sequence, transitions.

``update_compute_assignment`` is the one place where authorization depends on state: who may
take an edge is a property of the edge (:data:`spec.transitions.ASSIGNMENT_TRANSITIONS`), so its
``forbidden`` is decided after the edge is known to exist.

``append_sync_event`` deduplicates *before* it checks the sequence: a retry of an append that
already committed must get its original seq back even though the head has moved on.  The dedupe
horizon is the set of retained events of the stream (compaction forgets keys; ADR-0001).

System transactions (not callable by clients): :func:`presence_sweep`, :func:`disconnect_sessions`,
:func:`compact`, :func:`unclean_restart`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from itertools import takewhile
from typing import Any

import icontract

from spec import contracts
from spec.auth import Claims, has_scope, stream_granted
from spec.canonical import canonicalize, dumps_canonical, parse_strict, payload_hash
from spec.errors import ErrorCode, SyncError
from spec.invariants import (
    Violation,
    check_call,
    check_retention,
    check_state,
    check_sweep,
    check_transition,
    stream_layout_ok,
)
from spec.policy import DEFAULT_POLICY, MAX_CONTINUATION_HOPS, NOSTR_NONPORTABLE_CONTROLS, Policy, expired
from spec.resume import continued_stream
from spec.schema import REDUCER_BY_NAME
from spec.state import DbState, Delta, R, Tx, table_of_type
from spec.transitions import (
    ASSIGNMENT_STATUSES,
    ASSIGNMENT_TERMINAL,
    ASSIGNMENT_TRANSITIONS,
    PRESENCE_STATUSES,
    PROVIDER_STATUSES,
    SIGNAL_KINDS,
    assignment_edge_allowed,
    bridge_edge_allowed,
    has_role,
)
from spec.values import (
    BridgeOutbox,
    ComputeAssignment,
    PresenceSignal,
    ProviderCapability,
    Row,
    SessionPresence,
    StreamSignal,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
    Timestamp,
    is_hash,
    is_id,
    value_has_type,
)


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


def _fail(code: ErrorCode, **details: Any) -> SyncError:
    return SyncError(code, details)


def _scope(claims: Claims, scope: str) -> None:
    if not has_scope(claims, scope):
        raise _fail(ErrorCode.MISSING_SCOPE, scope=scope)


def _grant(claims: Claims, stream_id: str) -> None:
    if not stream_granted(claims, stream_id):
        raise _fail(ErrorCode.FORBIDDEN_STREAM, stream_id=stream_id)


def _id(name: str, value: str) -> None:
    if not is_id(value):
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument=name,
                    message="must be 1-128 characters of [A-Za-z0-9._:-]")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument=name, message=f"must be one of {list(allowed)}")


def _kinds_ok(kinds: tuple[int, ...]) -> None:
    if any(not 5000 <= k <= 5999 for k in kinds):
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="nip90_kinds", message="each kind must be 5000-5999")


def _ok(tx: Tx, ret: int | None = None) -> Ok:
    state, delta = tx.finish()
    return Ok(state, ret, delta)


def _noop(db: DbState, ret: int | None = None) -> Ok:
    return Ok(db, ret, Delta())


def virtual_stream(db: DbState, stream_id: str) -> tuple[int, int, int]:
    """(epoch, head_seq, floor_seq) of a stream; one that does not exist yet is
    (epoch_floor, 0, 1): the values it will have when its first event is appended."""
    s = db.find(SyncStream, lambda r: r.stream_id == stream_id)
    if s is None:
        return db.epoch_floor, 0, 1
    return s.epoch, s.head_seq, s.floor_seq


# --- contract helpers (read-only; used by the icontract conditions below) --------------------


def _inserted(result: Ok, row_type: type[R]) -> list[R]:
    return [r for r in result.delta.for_table(table_of_type(row_type)).inserts if isinstance(r, row_type)]


def _stream_row(db: DbState, stream_id: str) -> SyncStream | None:
    return next((r for r in db.of_type(SyncStream) if r.stream_id == stream_id), None)


def _retained(db: DbState, stream_id: str, key: str) -> SyncEvent | None:
    return next((e for e in db.of_type(SyncEvent) if (e.stream_id, e.idempotency_key) == (stream_id, key)), None)


def _hash_of_json(text: str) -> str | None:
    try:
        return payload_hash(canonicalize(text))
    except SyncError:
        return None


def _appended_one(db: DbState, stream_id: str, key: str, result: Ok) -> bool:
    """The write is exactly one event of the stream, at seq ``ret`` in the stream's epoch, whose
    hash is of its payload, and the stream's head moved to it."""
    events = _inserted(result, SyncEvent)
    stream = _stream_row(result.state, stream_id)
    return (len(events) == 1 and stream is not None and stream.head_seq == result.ret
            and (events[0].stream_id, events[0].idempotency_key, events[0].seq) == (stream_id, key, result.ret)
            and events[0].epoch == virtual_stream(db, stream_id)[0] == stream.epoch
            and events[0].payload_hash == payload_hash(events[0].payload))


def _deduplicated(db: DbState, stream_id: str, key: str, payload_json: str, result: Ok) -> bool:
    """A no-op append is a retry: the key is retained with this very payload, and ``ret`` is its seq."""
    kept = _retained(db, stream_id, key)
    return kept is not None and kept.seq == result.ret and kept.payload_hash == _hash_of_json(payload_json)


def _checkpoint(db: DbState, client_id: str, stream_id: str) -> SyncCheckpoint | None:
    wanted = f"{client_id}|{stream_id}"
    return next((r for r in db.of_type(SyncCheckpoint) if r.checkpoint_id == wanted), None)


def _ack_written(db: DbState, ctx: CallContext, client_id: str, stream_id: str, epoch: int, seq: int,
                 result: Ok) -> bool:
    s_epoch, head, _floor = virtual_stream(db, stream_id)
    prev = _checkpoint(db, client_id, stream_id)
    now = _checkpoint(result.state, client_id, stream_id)
    return (now is not None and (now.epoch, now.last_applied_seq, now.owner) == (s_epoch, seq, ctx.claims.identity)
            and seq <= head and (prev is None or prev.epoch != epoch or prev.last_applied_seq < seq))


def _ack_redundant(db: DbState, client_id: str, stream_id: str, epoch: int, seq: int) -> bool:
    prev = _checkpoint(db, client_id, stream_id)
    return prev is not None and prev.epoch == epoch and seq <= prev.last_applied_seq


def _presence_written(db: DbState, ctx: CallContext, session_id: str, status: str, result: Ok) -> bool:
    before = next((r for r in db.of_type(SessionPresence) if r.session_id == session_id), None)
    row = next((r for r in result.state.of_type(SessionPresence) if r.session_id == session_id), None)
    changed = before is None or before.status != status
    signals = _inserted(result, PresenceSignal)
    return (row is not None and row.identity == ctx.claims.identity and row.status == status
            and (row.status == "offline") == (row.offline_reason is not None) and row.expires_at >= row.last_seen
            and len(signals) == (1 if changed else 0)
            and all((sig.session_id, sig.status) == (session_id, status) for sig in signals))


def _provider(db: DbState, provider_id: str) -> ProviderCapability | None:
    return next((r for r in db.of_type(ProviderCapability) if r.provider_id == provider_id), None)


def _provider_versioned(db: DbState, provider_id: str, result: Ok) -> bool:
    before, after = _provider(db, provider_id), _provider(result.state, provider_id)
    if result.noop:
        return before is not None and after == before
    return (after is not None and after.version == (before.version + 1 if before else db.version_floor)
            and after.capability_hash == payload_hash(after.capability)
            and list(after.nip90_kinds) == sorted(set(after.nip90_kinds)))


def _assignment(db: DbState, request_id: str) -> ComputeAssignment | None:
    return next((r for r in db.of_type(ComputeAssignment) if r.request_id == request_id), None)


def _assignment_opened(db: DbState, request_id: str, job_kind: int, result: Ok) -> bool:
    before, after = _assignment(db, request_id), _assignment(result.state, request_id)
    if result.noop:
        return before is not None and after == before and before.job_kind == job_kind
    return (before is None and after is not None and (after.status, after.version, after.provider_id) ==
            ("open", db.version_floor, None) and after.request_hash == payload_hash(after.request))


def _assignment_stepped(db: DbState, ctx: CallContext, request_id: str, result: Ok) -> bool:
    """One edge of the table, taken by someone it names, bumping the version by exactly one."""
    before, after = _assignment(db, request_id), _assignment(result.state, request_id)
    if before is None or after is None:
        return False
    roles = ASSIGNMENT_TRANSITIONS.get((before.status, after.status), frozenset())
    return (assignment_edge_allowed(before.status, after.status) and after.version - before.version == 1
            and any(has_role(r, ctx.claims.scopes, ctx.claims.identity, before) for r in roles)
            and (after.status not in ("assigned", "running", "completed", "failed") or after.provider_id is not None)
            and (before.requester, before.request_hash) == (after.requester, after.request_hash))


def _outbox(db: DbState, outbox_id: str) -> BridgeOutbox | None:
    return next((r for r in db.of_type(BridgeOutbox) if r.outbox_id == outbox_id), None)


def _outbox_enqueued(db: DbState, outbox_id: str, result: Ok) -> bool:
    before, after = _outbox(db, outbox_id), _outbox(result.state, outbox_id)
    if result.noop:
        return before is not None and after == before
    return (before is None and after is not None and (after.status, after.attempts, after.nostr_event_id) ==
            ("pending", 0, None) and is_hash(after.content_hash) and after.next_attempt_at == after.created_at)


def _outbox_sent(db: DbState, outbox_id: str, nostr_event_id: str, relays: tuple[str, ...], result: Ok) -> bool:
    """Sent with this event id, every relay ever acknowledged kept: a write exactly when it adds one."""
    before, after = _outbox(db, outbox_id), _outbox(result.state, outbox_id)
    if before is None or after is None or (after.status, after.nostr_event_id) != ("sent", nostr_event_id):
        return False
    merged = set(relays) | (set(before.relays_acked) if before.status == "sent" else set())
    if after.relays_acked != tuple(sorted(merged)):
        return False
    return after == before if result.noop else bridge_edge_allowed(before.status, "sent")


def _outbox_failed(db: DbState, ctx: CallContext, outbox_id: str, retry_after_ms: int, result: Ok) -> bool:
    before, after = _outbox(db, outbox_id), _outbox(result.state, outbox_id)
    if before is None or after is None:
        return False
    if result.noop:
        return before.status != "pending" and after == before
    return (after.attempts == before.attempts + 1 and bridge_edge_allowed(before.status, after.status)
            and (after.status == "failed") == (after.attempts >= ctx.policy.bridge_max_attempts)
            and after.next_attempt_at == ctx.now + 1000 * retry_after_ms)


def _epoch_reset(db: DbState, stream_id: str, result: Ok) -> bool:
    before, after = _stream_row(db, stream_id), _stream_row(result.state, stream_id)
    return (before is not None and after is not None and after.epoch == before.epoch + 1
            and (after.continues_epoch, after.continues_seq) == (0, 0)
            and after.head_seq == before.head_seq and after.floor_seq == before.head_seq + 1
            and not any(e.stream_id == stream_id for e in result.state.of_type(SyncEvent)))


def _signal_only(db: DbState, stream_id: str, result: Ok) -> bool:
    rows = [r for td in result.delta.tables for r in (*td.deletes, *td.inserts)]
    return (result.state == db and len(rows) == 1 and isinstance(rows[0], StreamSignal)
            and rows[0].stream_id == stream_id)


_STREAM_ARG: Mapping[str, int] = {"append_sync_event": 0, "ack_checkpoint": 1, "publish_stream_signal": 0}
"""Reducers that need a stream grant, and the position of their stream id argument."""


def _well_typed(reducer: str, args: tuple[Any, ...]) -> bool:
    rdef = REDUCER_BY_NAME.get(reducer)
    return rdef is not None and len(args) == len(rdef.args) and all(
        value_has_type(v, col.type) for col, v in zip(rdef.args, args, strict=True))


def _authorized_first(ctx: CallContext, reducer: str, args: tuple[Any, ...], result: Outcome) -> bool:
    """A well-typed call without the reducer's scope fails with missing_scope, and one with the scope
    but without the stream grant fails with forbidden_stream, before any other check."""
    if not _well_typed(reducer, args):
        return True
    scope = REDUCER_BY_NAME[reducer].scope
    if scope is not None and scope not in ctx.claims.scopes:
        return isinstance(result, Err) and result.error.code is ErrorCode.MISSING_SCOPE
    if reducer in _STREAM_ARG and not stream_granted(ctx.claims, args[_STREAM_ARG[reducer]]):
        return isinstance(result, Err) and result.error.code is ErrorCode.FORBIDDEN_STREAM
    return True


def _state_violations(db: DbState, ctx: CallContext, result: Outcome) -> list[Violation]:
    """If the state before satisfied every state invariant, so must the state after, and the step
    every transition invariant: what is broken (empty when the call kept them, or the state before
    was broken already)."""
    if isinstance(result, Err) or result.noop:
        return []
    limit = ctx.policy.bridge_max_attempts
    found = check_state(result.state, limit) + check_transition(db, result.state)
    return found if found and not check_state(db, limit) else []


def _call_violations(db: DbState, ctx: CallContext, reducer: str, args: tuple[Any, ...],
                     result: Outcome) -> list[Violation]:
    if not _well_typed(reducer, args):
        return []
    granted = reducer in _STREAM_ARG and stream_granted(ctx.claims, args[_STREAM_ARG[reducer]])
    return check_call(db, ctx.claims.scopes, granted, reducer, args, isinstance(result, Ok),
                      result.ret if isinstance(result, Ok) else None,
                      result.error.code if isinstance(result, Err) else None,
                      isinstance(result, Ok) and not result.noop,
                      result.state if isinstance(result, Ok) else db, ctx.claims.identity)


def _violation_error(checker: str, found: list[Violation]) -> icontract.ViolationError:
    """A contract error naming the invariants actually broken (the mutant harness reads the ids)."""
    return icontract.ViolationError(f"{checker} after a reducer call: {found}")


# --- reducers --------------------------------------------------------------------------------


@icontract.ensure(lambda db, stream_id, result: result.noop or result.ret == virtual_stream(db, stream_id)[1] + 1,
                  "SEQ-4 (an append that writes returns head_seq + 1)")
@icontract.ensure(lambda db, stream_id, idempotency_key, expected_next_seq, result: result.noop or (
    _appended_one(db, stream_id, idempotency_key, result) and expected_next_seq in (None, result.ret)),
    "SEQ-1 SEQ-4 (the write is one event at seq ret in the stream's epoch, the head moves to it)")
@icontract.ensure(lambda db, stream_id, idempotency_key, payload_json, result: not result.noop
                  or _deduplicated(db, stream_id, idempotency_key, payload_json, result),
                  "IDEM-2 IDEM-3 (a no-op append is a retry of the same payload and returns its original seq)")
def append_sync_event(db: DbState, ctx: CallContext, stream_id: str, idempotency_key: str,
                      payload_json: str, payload_hash_arg: str | None,
                      expected_next_seq: int | None) -> Outcome:
    c = ctx.claims
    _scope(c, "sync.append")
    _grant(c, stream_id)
    _id("stream_id", stream_id)
    _id("idempotency_key", idempotency_key)
    canon = canonicalize(payload_json)
    cls = ctx.policy.class_for(stream_id)
    size = len(canon.encode("utf-8"))
    if size > cls.max_payload_bytes:
        raise _fail(ErrorCode.PAYLOAD_TOO_LARGE, limit_bytes=cls.max_payload_bytes, payload_bytes=size,
                    stream_id=stream_id)
    digest = payload_hash(canon)
    if payload_hash_arg is not None and payload_hash_arg != digest:
        raise _fail(ErrorCode.PAYLOAD_HASH_MISMATCH, payload_hash=digest,
                    requested_payload_hash=payload_hash_arg, stream_id=stream_id)
    # state checks: dedupe before sequence
    existing = db.find(SyncEvent, lambda e: e.stream_id == stream_id and e.idempotency_key == idempotency_key)
    if existing is not None:
        if existing.payload_hash == digest:
            return _noop(db, existing.seq)
        raise _fail(ErrorCode.IDEMPOTENCY_CONFLICT, existing_payload_hash=existing.payload_hash,
                    existing_seq=existing.seq, idempotency_key=idempotency_key, payload_hash=digest,
                    stream_id=stream_id)
    stream = db.find(SyncStream, lambda r: r.stream_id == stream_id)
    head = stream.head_seq if stream else 0
    if expected_next_seq is not None and expected_next_seq != head + 1:
        raise _fail(ErrorCode.SEQUENCE_CONFLICT, actual_next_seq=head + 1,
                    expected_next_seq=expected_next_seq, stream_id=stream_id)
    seq = head + 1
    tx = Tx(db)
    if stream is None:
        new_stream = SyncStream(stream_id, cls.name, db.epoch_floor, 0, 0, seq, seq, cls.replay_budget, ctx.now,
                                ctx.now)
        tx.insert(new_stream)
        epoch = db.epoch_floor
    else:
        floor = stream.floor_seq if stream.floor_seq <= stream.head_seq else seq
        tx.update(stream, replace(stream, head_seq=seq, floor_seq=floor, updated_at=ctx.now))
        epoch = stream.epoch
    tx.insert(SyncEvent(stream_id, epoch, seq, idempotency_key, digest, canon, c.identity, ctx.now,
                        ctx.tx_offset))
    return _ok(tx, seq)


@icontract.ensure(lambda db, ctx, client_id, stream_id, epoch, seq, result: result.noop
                  or _ack_written(db, ctx, client_id, stream_id, epoch, seq, result),
                  "CKPT-1 CKPT-2 (a written checkpoint is the caller's, in the stream's epoch, at most head, and"
                  " above any previous one of that epoch)")
@icontract.ensure(lambda db, client_id, stream_id, epoch, seq, result: not result.noop
                  or _ack_redundant(db, client_id, stream_id, epoch, seq),
                  "CKPT-2 (an ack is a no-op only when the checkpoint is already at or past it)")
def ack_checkpoint(db: DbState, ctx: CallContext, client_id: str, stream_id: str, epoch: int,
                   seq: int) -> Outcome:
    c = ctx.claims
    _scope(c, "sync.checkpoint.write")
    _grant(c, stream_id)
    cid = f"{client_id}|{stream_id}"
    old = db.find(SyncCheckpoint, lambda r: r.checkpoint_id == cid)
    if old is not None and old.owner != c.identity:
        raise _fail(ErrorCode.FORBIDDEN, checkpoint_id=cid)
    _id("client_id", client_id)
    _id("stream_id", stream_id)
    s_epoch, head, _floor = virtual_stream(db, stream_id)
    if epoch != s_epoch:
        raise _fail(ErrorCode.STALE_EPOCH, epoch=s_epoch, requested_epoch=epoch, stream_id=stream_id)
    if seq > head:
        raise _fail(ErrorCode.CHECKPOINT_AHEAD_OF_HEAD, head_seq=head, requested_seq=seq,
                    stream_id=stream_id)
    if old is not None and old.epoch == epoch and old.last_applied_seq >= seq:
        return _noop(db)
    tx = Tx(db)
    new = SyncCheckpoint(cid, client_id, stream_id, c.identity, epoch, seq, ctx.now)
    if old is None:
        tx.insert(new)
    else:
        tx.update(old, new)
    return _ok(tx)


@icontract.ensure(lambda db, ctx, session_id, status, result: result.noop
                  or _presence_written(db, ctx, session_id, status, result),
                  "PRES-1 PRES-2 (the caller's row, offline exactly with a reason, expires_at >= last_seen; a status"
                  " change emits exactly one presence_signal)")
def upsert_presence(db: DbState, ctx: CallContext, session_id: str, device_id: str, node_id: str,
                    status: str, region: str, ttl_ms: int) -> Outcome:
    c = ctx.claims
    _scope(c, "presence.write")
    old = db.find(SessionPresence, lambda r: r.session_id == session_id)
    if old is not None and old.identity != c.identity:
        raise _fail(ErrorCode.FORBIDDEN, session_id=session_id)
    if (c.session_id is not None and c.session_id != session_id) or (
            c.device_id is not None and c.device_id != device_id):
        raise _fail(ErrorCode.FORBIDDEN, session_id=session_id)
    _id("session_id", session_id)
    _id("device_id", device_id)
    _id("node_id", node_id)
    _one_of("status", status, PRESENCE_STATUSES)
    if region and not is_id(region):
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="region",
                    message="must be empty or 1-128 characters of [A-Za-z0-9._:-]")
    p = ctx.policy
    if not p.presence_min_ttl_ms <= ttl_ms <= p.presence_max_ttl_ms:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="ttl_ms",
                    message=f"must be {p.presence_min_ttl_ms}-{p.presence_max_ttl_ms}")
    reason = "explicit_offline" if status == "offline" else None
    new = SessionPresence(session_id, c.identity, device_id, node_id, status, region, ctx.now,
                          ctx.now + ttl_ms * 1000, reason)
    tx = Tx(db)
    if old is None:
        tx.insert(new)
    else:
        tx.update(old, new)
    if old is None or old.status != status:
        tx.insert(PresenceSignal(session_id, c.identity, status, reason or "", ctx.now))
    return _ok(tx)


@icontract.ensure(lambda db, provider_id, result: _provider_versioned(db, provider_id, result),
                  "PROV-1 (the version rises by exactly one on a content change, and only then)")
def publish_provider_capability(db: DbState, ctx: CallContext, provider_id: str, capability_json: str,
                                nip90_kinds: tuple[int, ...], price_hint_sats: int, status: str) -> Outcome:
    c = ctx.claims
    _scope(c, "provider.publish")
    old = db.find(ProviderCapability, lambda r: r.provider_id == provider_id)
    if old is not None and old.owner != c.identity:
        raise _fail(ErrorCode.FORBIDDEN, provider_id=provider_id)
    _id("provider_id", provider_id)
    canon = canonicalize(capability_json, "capability_json")
    _kinds_ok(nip90_kinds)
    _one_of("status", status, PROVIDER_STATUSES)
    kinds = tuple(sorted(set(nip90_kinds)))
    digest = payload_hash(canon)
    if old is not None and (old.capability_hash, old.nip90_kinds, old.price_hint_sats, old.status) == (
            digest, kinds, price_hint_sats, status):
        return _noop(db)
    version = db.version_floor if old is None else old.version + 1
    new = ProviderCapability(provider_id, c.identity, canon, digest, kinds, price_hint_sats, status,
                             version, ctx.now)
    tx = Tx(db)
    if old is None:
        tx.insert(new)
    else:
        tx.update(old, new)
    return _ok(tx)


@icontract.ensure(lambda db, request_id, job_kind, result: _assignment_opened(db, request_id, job_kind, result),
                  "ASSIGN-2 (a new assignment is open at version 1 with the hash of its request; a retry is a no-op)")
def open_compute_assignment(db: DbState, ctx: CallContext, request_id: str, job_kind: int,
                            request_json: str) -> Outcome:
    c = ctx.claims
    _scope(c, "compute.request")
    old = db.find(ComputeAssignment, lambda r: r.request_id == request_id)
    if old is not None and old.requester != c.identity:
        raise _fail(ErrorCode.FORBIDDEN, request_id=request_id)
    _id("request_id", request_id)
    if not 5000 <= job_kind <= 5999:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="job_kind", message="must be 5000-5999")
    canon = canonicalize(request_json, "request_json")
    digest = payload_hash(canon)
    if old is not None:
        if old.request_hash == digest and old.job_kind == job_kind:
            return _noop(db)
        raise _fail(ErrorCode.IDEMPOTENCY_CONFLICT, existing_request_hash=old.request_hash,
                    request_hash=digest, request_id=request_id)
    tx = Tx(db)
    tx.insert(ComputeAssignment(request_id, c.identity, job_kind, canon, digest, None, None, "open", None,
                                db.version_floor, ctx.now, ctx.now))
    return _ok(tx)


@icontract.ensure(lambda result: not result.noop, "every accepted assignment update writes")
@icontract.ensure(lambda db, ctx, request_id, result: _assignment_stepped(db, ctx, request_id, result),
                  "ASSIGN-1 ASSIGN-2 (one edge of the table, by a role it names, version + 1)")
def update_compute_assignment(db: DbState, ctx: CallContext, request_id: str, expected_version: int,
                              status: str, provider_id: str | None, result_json: str | None) -> Outcome:
    c = ctx.claims
    if not c.scopes & {"compute.request", "compute.assign", "compute.execute"}:
        raise _fail(ErrorCode.MISSING_SCOPE, scope="compute.assign")
    _id("request_id", request_id)
    _one_of("status", status, ASSIGNMENT_STATUSES)
    if provider_id is not None:
        _id("provider_id", provider_id)
    if status == "assigned" and provider_id is None:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="provider_id", message="required to assign")
    result = None
    if result_json is not None:
        if status not in ("completed", "failed"):
            raise _fail(ErrorCode.INVALID_ARGUMENT, argument="result_json",
                        message="only completed or failed carry a result")
        result = canonicalize(result_json, "result_json")
    old = db.find(ComputeAssignment, lambda r: r.request_id == request_id)
    if old is None:
        raise _fail(ErrorCode.ASSIGNMENT_MISSING, request_id=request_id)
    if old.version != expected_version:
        raise _fail(ErrorCode.VERSION_CONFLICT, actual_version=old.version,
                    expected_version=expected_version, request_id=request_id)
    edge = (old.status, status)
    if edge not in ASSIGNMENT_TRANSITIONS:
        raise _fail(ErrorCode.INVALID_TRANSITION, request_id=request_id, status=old.status,
                    requested_status=status)
    if not any(has_role(role, c.scopes, c.identity, old) for role in ASSIGNMENT_TRANSITIONS[edge]):
        raise _fail(ErrorCode.FORBIDDEN, request_id=request_id)
    if status != "assigned" and provider_id is not None and provider_id != old.provider_id:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="provider_id",
                    message="only the assign edge sets the provider")
    provider_owner = old.provider_owner
    if status == "assigned":
        assert provider_id is not None
        provider_owner = _available_provider(db, provider_id, old.job_kind).owner
    new = replace(old, status=status, provider_id=provider_id if status == "assigned" else old.provider_id,
                  provider_owner=provider_owner, result=result, version=old.version + 1, updated_at=ctx.now)
    tx = Tx(db)
    tx.update(old, new)
    return _ok(tx)


def _available_provider(db: DbState, provider_id: str, job_kind: int) -> ProviderCapability:
    """The provider an assignment may name: it exists, is ``active`` and advertises the job kind;
    else ``provider_unavailable`` with the reason (``missing``, ``withdrawn``, ``kind_not_advertised``)."""
    p = db.find(ProviderCapability, lambda r: r.provider_id == provider_id)
    reason = ("missing" if p is None else "withdrawn" if p.status != "active"
              else "kind_not_advertised" if job_kind not in p.nip90_kinds else None)
    if reason is not None:
        raise _fail(ErrorCode.PROVIDER_UNAVAILABLE, job_kind=job_kind, provider_id=provider_id, reason=reason)
    assert p is not None
    return p


def outbox_content_hash(source: str, nostr_kind: int, tags_canonical: str, content: str) -> str:
    """The outbox dedupe key: the hash of canonical ``[source, nostr_kind, tags, content]`` (ADR-0003)."""
    return payload_hash(dumps_canonical([source, nostr_kind, parse_strict(tags_canonical), content]))


def _tags_ok(tags_json: str) -> str:
    canon = canonicalize(tags_json, "tags_json")
    value = parse_strict(canon, "tags_json")
    if not (isinstance(value, list) and all(isinstance(t, list) and all(isinstance(x, str) for x in t)
                                            for t in value)):
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="tags_json",
                    message="must be a JSON array of arrays of strings")
    return canon


@icontract.ensure(lambda db, outbox_id, result: _outbox_enqueued(db, outbox_id, result),
                  "BRIDGE-1 (a new outbox row is pending with no attempts; a retry is a no-op)")
def enqueue_bridge_event(db: DbState, ctx: CallContext, outbox_id: str, source: str, nostr_kind: int,
                         tags_json: str, content: str) -> Outcome:
    c = ctx.claims
    _scope(c, "bridge.enqueue")
    _id("outbox_id", outbox_id)
    _id("source", source)
    tags = _tags_ok(tags_json)
    if nostr_kind not in ctx.policy.bridge_kinds:
        raise _fail(ErrorCode.POLICY_DENIED, nostr_kind=nostr_kind, outbox_id=outbox_id)
    texts = [content, *(item for tag in parse_strict(tags, "tags_json") for item in tag)]
    if any(NOSTR_NONPORTABLE_CONTROLS.intersection(text) for text in texts):
        raise _fail(ErrorCode.POLICY_DENIED, nostr_kind=nostr_kind, outbox_id=outbox_id)
    digest = outbox_content_hash(source, nostr_kind, tags, content)
    old = db.find(BridgeOutbox, lambda r: r.outbox_id == outbox_id)
    if old is not None:
        if old.content_hash == digest:
            return _noop(db)
        raise _fail(ErrorCode.IDEMPOTENCY_CONFLICT, content_hash=digest,
                    existing_content_hash=old.content_hash, outbox_id=outbox_id)
    tx = Tx(db)
    tx.insert(BridgeOutbox(outbox_id, source, nostr_kind, tags, content, digest, "pending", 0, ctx.now, None, None,
                           (), ctx.now, ctx.now))
    return _ok(tx)


@icontract.ensure(lambda db, outbox_id, nostr_event_id, relays, result:
                  _outbox_sent(db, outbox_id, nostr_event_id, relays, result),
                  "BRIDGE-1 BRIDGE-2 BRIDGE-3 (the row ends sent with this event id, along an edge of the table, "
                  "with every relay acknowledged so far)")
def mark_bridge_event_sent(db: DbState, ctx: CallContext, outbox_id: str, nostr_event_id: str,
                           relays: tuple[str, ...]) -> Outcome:
    c = ctx.claims
    _scope(c, "bridge.mark_sent")
    _id("outbox_id", outbox_id)
    if not is_hash("sha256:" + nostr_event_id):
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="nostr_event_id", message="must be 64 lowercase hex")
    if any(not r or len(r) > 512 for r in relays):
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="relays", message="each relay must be 1-512 chars")
    old = db.find(BridgeOutbox, lambda r: r.outbox_id == outbox_id)
    if old is None:
        raise _fail(ErrorCode.BRIDGE_EVENT_MISSING, outbox_id=outbox_id)
    acked = set(relays)
    if old.status == "sent":
        if old.nostr_event_id != nostr_event_id:
            raise _fail(ErrorCode.BRIDGE_EVENT_CONFLICT, nostr_event_id=old.nostr_event_id,
                        requested_nostr_event_id=nostr_event_id, outbox_id=outbox_id)
        if acked <= set(old.relays_acked):
            return _noop(db)  # nothing new acknowledged
        acked |= set(old.relays_acked)
    tx = Tx(db)
    tx.update(old, replace(old, status="sent", nostr_event_id=nostr_event_id,
                           relays_acked=tuple(sorted(acked)), updated_at=ctx.now))
    return _ok(tx)


@icontract.ensure(lambda db, ctx, outbox_id, retry_after_ms, result: _outbox_failed(db, ctx, outbox_id, retry_after_ms,
                                                                                   result),
                  "BRIDGE-1 BRIDGE-2 BRIDGE-3 (attempts + 1; failed exactly at the maximum; next_attempt_at = now + "
                  "retry_after_ms; only pending rows change)")
def record_bridge_failure(db: DbState, ctx: CallContext, outbox_id: str, error: str,
                          retry_after_ms: int) -> Outcome:
    c = ctx.claims
    _scope(c, "bridge.mark_sent")
    _id("outbox_id", outbox_id)
    if not error or len(error) > ctx.policy.max_error_text:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="error",
                    message=f"must be 1-{ctx.policy.max_error_text} characters")
    if retry_after_ms > ctx.policy.bridge_max_retry_after_ms:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="retry_after_ms",
                    message=f"must be at most {ctx.policy.bridge_max_retry_after_ms}")
    old = db.find(BridgeOutbox, lambda r: r.outbox_id == outbox_id)
    if old is None:
        raise _fail(ErrorCode.BRIDGE_EVENT_MISSING, outbox_id=outbox_id)
    if old.status != "pending":
        return _noop(db)
    attempts = old.attempts + 1
    status = "failed" if attempts >= ctx.policy.bridge_max_attempts else "pending"
    tx = Tx(db)
    tx.update(old, replace(old, attempts=attempts, status=status, next_attempt_at=ctx.now + 1000 * retry_after_ms,
                           last_error=error, updated_at=ctx.now))
    return _ok(tx)


@icontract.ensure(lambda db, stream_id, result: _signal_only(db, stream_id, result),
                  "EVT-1 (a signal is one event row of the stream and changes no table)")
def publish_stream_signal(db: DbState, ctx: CallContext, stream_id: str, kind: str,
                          payload_json: str) -> Outcome:
    c = ctx.claims
    _scope(c, "sync.append")
    _grant(c, stream_id)
    _id("stream_id", stream_id)
    _one_of("kind", kind, SIGNAL_KINDS)
    canon = canonicalize(payload_json)
    limit = ctx.policy.class_for(stream_id).max_payload_bytes
    if len(canon.encode("utf-8")) > limit:
        raise _fail(ErrorCode.PAYLOAD_TOO_LARGE, limit_bytes=limit,
                    payload_bytes=len(canon.encode("utf-8")), stream_id=stream_id)
    tx = Tx(db)
    tx.insert(StreamSignal(stream_id, kind, canon, c.identity, ctx.now))
    return _ok(tx)


@icontract.ensure(lambda db, stream_id, result: _epoch_reset(db, stream_id, result),
                  "SEQ-1 SEQ-3 (epoch + 1 starting fresh (continues nothing), head kept, floor = head + 1, no retained "
                  "event of the stream)")
def reset_stream_epoch(db: DbState, ctx: CallContext, stream_id: str) -> Outcome:
    """Admin: start a fresh, empty epoch (``continues_epoch = 0``: every client rebootstraps).
    Retained events are dropped (floor = head + 1); seqs go on from the old head, so a (stream, seq)
    pair never names two events."""
    _scope(ctx.claims, "sync.admin")
    _id("stream_id", stream_id)
    stream = db.find(SyncStream, lambda r: r.stream_id == stream_id)
    if stream is None:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="stream_id", message="stream does not exist")
    tx = Tx(db)
    for e in [e for e in db.of_type(SyncEvent) if e.stream_id == stream_id]:
        tx.delete(e)
    tx.update(stream, replace(stream, epoch=stream.epoch + 1, continues_epoch=0, continues_seq=0,
                              earlier_epochs=(), earlier_seqs=(), floor_seq=stream.head_seq + 1,
                              updated_at=ctx.now))
    return _ok(tx)


ReducerFn = Callable[..., Outcome]

REDUCER_FUNCTIONS: Mapping[str, ReducerFn] = {
    "append_sync_event": append_sync_event,
    "ack_checkpoint": ack_checkpoint,
    "upsert_presence": upsert_presence,
    "publish_provider_capability": publish_provider_capability,
    "open_compute_assignment": open_compute_assignment,
    "update_compute_assignment": update_compute_assignment,
    "enqueue_bridge_event": enqueue_bridge_event,
    "mark_bridge_event_sent": mark_bridge_event_sent,
    "record_bridge_failure": record_bridge_failure,
    "publish_stream_signal": publish_stream_signal,
    "reset_stream_epoch": reset_stream_epoch,
}


@icontract.ensure(lambda db, result: isinstance(result, Err) or not result.noop or result.state == db,
                  "DELIV-4 (an accepted no-op leaves the state as it was; an Err carries no state at all)")
@icontract.ensure(lambda db, result: isinstance(result, Err) or result.noop or result.ret is None
                  or result.ret >= 1, "SEQ-4 (a write returns a seq, if anything)")
@icontract.ensure(lambda ctx, reducer, args, result: _authorized_first(ctx, reducer, args, result),
                  "AUTH-2 (missing_scope, then forbidden_stream, before any other check)")
@icontract.ensure(lambda db, ctx, result: not _state_violations(db, ctx, result),
                  "a committed call keeps every state invariant and every transition invariant",
                  error=lambda db, ctx, result: _violation_error(
                      "check_state/check_transition", _state_violations(db, ctx, result)),
                  enabled=contracts.WHOLE_STATE)
@icontract.ensure(lambda db, ctx, reducer, args, result: not _call_violations(db, ctx, reducer, args, result),
                  "spec.invariants.check_call holds",
                  error=lambda db, ctx, reducer, args, result: _violation_error(
                      "check_call", _call_violations(db, ctx, reducer, args, result)),
                  enabled=icontract.SLOW)
def call(db: DbState, ctx: CallContext, reducer: str, args: tuple[Any, ...]) -> Outcome:
    """Run one reducer call; the single entry point (argument types are checked here)."""
    rdef = REDUCER_BY_NAME.get(reducer)
    if rdef is None:
        return Err(_fail(ErrorCode.NO_SUCH_REDUCER, reducer=reducer))
    if len(args) != len(rdef.args):
        return Err(_fail(ErrorCode.INVALID_ARGUMENT, argument="*",
                         message=f"{reducer} takes {len(rdef.args)} arguments, got {len(args)}"))
    for col, value in zip(rdef.args, args, strict=True):
        if not value_has_type(value, col.type):
            return Err(_fail(ErrorCode.INVALID_ARGUMENT, argument=col.name, message="wrong type"))
    try:
        return REDUCER_FUNCTIONS[reducer](db, ctx, *args)
    except SyncError as err:
        return Err(err)


# --- system transactions ---------------------------------------------------------------------


@icontract.ensure(lambda now, result: not check_sweep(result.state, now),
                  "PRES-2 (after a sweep at t no live row has expires_at <= t)")
@icontract.ensure(lambda result: len(_inserted(result, PresenceSignal)) == len(
    result.delta.for_table("session_presence").inserts), "PRES-2 (each row taken offline emits one signal)")
def presence_sweep(db: DbState, now: Timestamp) -> Ok:
    """Mark every live presence row whose TTL has passed offline (``ttl_expired``)."""
    tx = Tx(db)
    for r in list(db.of_type(SessionPresence)):
        if r.status != "offline" and r.expires_at <= now:
            tx.update(r, replace(r, status="offline", offline_reason="ttl_expired"))
            tx.insert(PresenceSignal(r.session_id, r.identity, "offline", "ttl_expired", now))
    return _ok(tx)


@icontract.ensure(lambda identity, sessions, result: not any(
    r.session_id in sessions and r.identity == identity and r.status != "offline"
    for r in result.state.of_type(SessionPresence)), "the closed connection's sessions are all offline")
def disconnect_sessions(db: DbState, now: Timestamp, identity: str, sessions: frozenset[str]) -> Ok:
    """A connection closed: the live sessions it upserted go offline (``disconnected``)."""
    tx = Tx(db)
    for r in list(db.of_type(SessionPresence)):
        if r.session_id in sessions and r.identity == identity and r.status != "offline":
            if r.expires_at <= now:  # the TTL ran out first; only the sweep had not run yet
                tx.update(r, replace(r, status="offline", offline_reason="ttl_expired"))
                tx.insert(PresenceSignal(r.session_id, r.identity, "offline", "ttl_expired", now))
            else:
                tx.update(r, replace(r, status="offline", offline_reason="disconnected", last_seen=now))
                tx.insert(PresenceSignal(r.session_id, r.identity, "offline", "disconnected", now))
    return _ok(tx)


def _compacted(db: DbState, result: Ok) -> bool:
    """Per stream: epoch and head kept, floor never lower, SEQ-1 kept."""
    for before in db.of_type(SyncStream):
        after = _stream_row(result.state, before.stream_id)
        if after is None or (after.epoch, after.head_seq) != (before.epoch, before.head_seq) \
                or after.floor_seq < before.floor_seq:
            return False
        if stream_layout_ok(db, before) and not stream_layout_ok(result.state, after):
            return False
    return True


def retention_expired(row: Row, now: Timestamp, policy: Policy) -> bool:
    """Is ``row`` one that retention removes at ``now`` (ADR-0003 decision 8)?"""
    if isinstance(row, SessionPresence):
        return row.status == "offline" and expired(row.last_seen, now, policy.retain_offline_presence_us)
    if isinstance(row, ComputeAssignment):
        return row.status in ASSIGNMENT_TERMINAL and expired(row.updated_at, now, policy.retain_terminal_assignment_us)
    if isinstance(row, BridgeOutbox):
        window = {"sent": policy.retain_sent_outbox_us, "failed": policy.retain_failed_outbox_us}.get(row.status)
        return row.status != "pending" and expired(row.updated_at, now, window)
    return False


@icontract.ensure(lambda db, result: _compacted(db, result),
                  "SEQ-1 SEQ-3 (compaction drops a prefix and raises floor_seq to match; epoch and head are kept)")
@icontract.ensure(lambda result: not result.delta.for_table("sync_event").inserts,
                  "compaction never writes an event")
@icontract.ensure(lambda db, now, policy, result: not check_retention(db, result.state, now, policy),
                  "RET-1 (compaction removes exactly the rows past their retention windows)")
def compact(db: DbState, now: Timestamp, policy: Policy = DEFAULT_POLICY) -> Ok:
    """Retention: drop events past their class's count or age limit and raise ``floor_seq``; drop
    offline presence rows, terminal assignments and sent or failed outbox rows past their windows
    (subscribers receive the deletes)."""
    tx = Tx(db)
    for table in ("session_presence", "compute_assignment", "bridge_outbox"):
        for row in [r for r in db.rows(table) if retention_expired(r, now, policy)]:
            tx.delete(row)
            if isinstance(row, ComputeAssignment):  # its id may come back: never with a version it had
                tx.version_floor = max(tx.version_floor, row.version + 1)
    for s in list(db.of_type(SyncStream)):
        cls = policy.class_for(s.stream_id)
        events = sorted((e for e in db.of_type(SyncEvent) if e.stream_id == s.stream_id), key=lambda e: e.seq)
        drop = set()
        if cls.retain_count is not None and len(events) > cls.retain_count:
            drop |= {e.seq for e in events[: len(events) - cls.retain_count]}
        if cls.retain_age_us is not None:
            drop |= {e.seq for e in events if e.committed_at < now - cls.retain_age_us}
        if not drop:
            continue
        # drop only a prefix, so retained seqs stay contiguous up to head
        cut = 0
        for e in events:
            if e.seq in drop:
                cut = e.seq
            else:
                break
        if cut == 0:
            continue
        for e in events:
            if e.seq <= cut:
                tx.delete(e)
        tx.update(s, replace(s, floor_seq=max(s.floor_seq, cut + 1), updated_at=now))
    return _ok(tx)


def _max_epoch(db: DbState) -> int:
    return max([db.epoch_floor, *(s.epoch for s in db.of_type(SyncStream))])


def max_version(db: DbState) -> int:
    """The largest version any provider or assignment has, or a new one would get."""
    return max([db.version_floor, *(r.version for r in db.of_type(ProviderCapability)),
                *(r.version for r in db.of_type(ComputeAssignment))])


def _continued(db: DbState, after: DbState) -> bool:
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


@icontract.require(lambda db: db.well_formed(), "a state of the schema's tables: rows of its type, keys unique")
@icontract.require(lambda max_undurable: max_undurable >= 0, "the loss bound is a count")
@icontract.ensure(lambda db, max_undurable, result: result.epoch_floor > _max_epoch(db) + max_undurable
                  and all(s.epoch == result.epoch_floor for s in result.of_type(SyncStream)),
                  "DUR-2 (every stream, and every stream created later, moves above every epoch the lost"
                  " transactions can have handed out)")
@icontract.ensure(lambda db, result: _continued(db, result),
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
    """After a crash the last non-durable transactions are gone, and some clients without
    confirmed reads may have seen them.  At most ``max_undurable`` transactions can have been
    lost (the server never runs further ahead of its durable offset), and each raises any
    stream's epoch by at most one; so every stream moves to an epoch above every epoch that can
    ever have been handed out, and so do streams created from now on (``epoch_floor``).  Hence
    no (stream, epoch, seq) ever names two different events (ADR-0001).

    The new epoch E' *continues* the old one E (ADR-0003 decision 6): ``continues_epoch = E``,
    ``continues_seq = head_seq`` (the durable head: every event up to it survived), ``floor_seq``
    kept, and the retained events and checkpoints of E relabelled to E' (same seq, payload, hash,
    producer and offset).  A client at (E, W) with W <= continues_seq saw only surviving events
    and resumes at (E', W) without a rebootstrap; one with W > continues_seq may have seen lost
    events and rebootstraps.  The relabel is the one exception to SEQ-3's "a retained event row
    never changes": same seq and payload, epoch raised, to an epoch nobody has seen.

    The new epoch also continues every epoch the old one continued (ADR-0010): the chain
    ``earlier_epochs``/``earlier_seqs`` gains the old last hop, each bound capped at the durable
    head (:func:`spec.resume.continued_stream`), so a client two or more restarts behind with a
    watermark at or below every bound since its epoch continues as well."""
    streams = list(db.of_type(SyncStream))
    fresh = max([db.epoch_floor, *(s.epoch for s in streams)]) + max_undurable + 1
    tx = Tx(db)
    old_epoch = {s.stream_id: s.epoch for s in streams}
    for s in streams:
        tx.update(s, continued_stream(s, fresh, now))
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


def describe(outcome: Outcome) -> str:
    if isinstance(outcome, Err):
        return outcome.error.render()
    return f"ok ret={outcome.ret} noop={outcome.noop}"

