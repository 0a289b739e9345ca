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
from typing import Any

from spec.auth import Claims, has_scope, stream_granted
from spec.canonical import canonicalize, dumps_canonical, parse_strict, payload_hash
from spec.errors import ErrorCode, SyncError
from spec.policy import DEFAULT_POLICY, Policy
from spec.schema import REDUCER_BY_NAME
from spec.state import DbState, Delta, Tx
from spec.transitions import (
    ASSIGNMENT_STATUSES,
    ASSIGNMENT_TRANSITIONS,
    PRESENCE_STATUSES,
    PROVIDER_STATUSES,
    SIGNAL_KINDS,
)
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


# --- reducers --------------------------------------------------------------------------------


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
        owner_scope = next((g for g in c.streams if g == stream_id or
                            (g.endswith("*") and stream_id.startswith(g[:-1]))), stream_id)
        new_stream = SyncStream(stream_id, cls.name, owner_scope, db.epoch_floor, seq, seq,
                                cls.replay_budget, ctx.now, ctx.now)
        tx.insert(new_stream)
        epoch = db.epoch_floor
    else:
        floor = stream.floor_seq if stream.floor_seq <= stream.head_seq else seq
        tx.update(stream, replace(stream, head_seq=seq, floor_seq=floor, updated_at=ctx.now))
        epoch = stream.epoch
    tx.insert(SyncEvent(stream_id, epoch, seq, idempotency_key, digest, canon, c.identity, ctx.now,
                        ctx.tx_offset))
    return _ok(tx, seq)


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
    version = 1 if old is None else old.version + 1
    new = ProviderCapability(provider_id, c.identity, canon, digest, kinds, price_hint_sats, status,
                             version, ctx.now)
    tx = Tx(db)
    if old is None:
        tx.insert(new)
    else:
        tx.update(old, new)
    return _ok(tx)


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
    tx.insert(ComputeAssignment(request_id, c.identity, job_kind, canon, digest, None, "open", None, 1,
                                ctx.now, ctx.now))
    return _ok(tx)


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
    roles = set(c.scopes) | ({"requester"} if c.identity == old.requester else set())
    if not roles & ASSIGNMENT_TRANSITIONS[edge]:
        raise _fail(ErrorCode.FORBIDDEN, request_id=request_id)
    if status != "assigned" and provider_id is not None and provider_id != old.provider_id:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="provider_id",
                    message="only the assign edge sets the provider")
    new = replace(old, status=status, provider_id=provider_id if status == "assigned" else old.provider_id,
                  result=result, version=old.version + 1, updated_at=ctx.now)
    tx = Tx(db)
    tx.update(old, new)
    return _ok(tx)


def _tags_ok(tags_json: str) -> str:
    canon = canonicalize(tags_json, "tags_json")
    value = parse_strict(canon, "tags_json")
    if not (isinstance(value, list) and all(isinstance(t, list) and all(isinstance(x, str) for x in t)
                                            for t in value)):
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="tags_json",
                    message="must be a JSON array of arrays of strings")
    return canon


def enqueue_bridge_event(db: DbState, ctx: CallContext, outbox_id: str, source: str, nostr_kind: int,
                         tags_json: str, content: str) -> Outcome:
    c = ctx.claims
    _scope(c, "bridge.enqueue")
    _id("outbox_id", outbox_id)
    _id("source", source)
    tags = _tags_ok(tags_json)
    if nostr_kind not in ctx.policy.bridge_kinds:
        raise _fail(ErrorCode.POLICY_DENIED, nostr_kind=nostr_kind, outbox_id=outbox_id)
    digest = payload_hash(dumps_canonical([nostr_kind, parse_strict(tags), content]))
    old = db.find(BridgeOutbox, lambda r: r.outbox_id == outbox_id)
    if old is not None:
        if old.content_hash == digest:
            return _noop(db)
        raise _fail(ErrorCode.IDEMPOTENCY_CONFLICT, content_hash=digest,
                    existing_content_hash=old.content_hash, outbox_id=outbox_id)
    tx = Tx(db)
    tx.insert(BridgeOutbox(outbox_id, source, nostr_kind, tags, content, digest, "pending", 0, None, None,
                           (), ctx.now, ctx.now))
    return _ok(tx)


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
    if old.status == "sent":
        if old.nostr_event_id == nostr_event_id:
            return _noop(db)
        raise _fail(ErrorCode.BRIDGE_EVENT_CONFLICT, nostr_event_id=old.nostr_event_id,
                    requested_nostr_event_id=nostr_event_id, outbox_id=outbox_id)
    tx = Tx(db)
    tx.update(old, replace(old, status="sent", nostr_event_id=nostr_event_id,
                           relays_acked=tuple(sorted(set(relays))), updated_at=ctx.now))
    return _ok(tx)


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
    tx.update(old, replace(old, attempts=attempts, status=status, last_error=error, updated_at=ctx.now))
    return _ok(tx)


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


def reset_stream_epoch(db: DbState, ctx: CallContext, stream_id: str) -> Outcome:
    """Admin: start a new epoch.  Retained events are dropped (floor = head + 1); seqs go on
    from the old head, so a (stream, seq) pair never names two events."""
    _scope(ctx.claims, "sync.admin")
    _id("stream_id", stream_id)
    stream = db.find(SyncStream, lambda r: r.stream_id == stream_id)
    if stream is None:
        raise _fail(ErrorCode.INVALID_ARGUMENT, argument="stream_id", message="stream does not exist")
    tx = Tx(db)
    for e in [e for e in db.of_type(SyncEvent) if e.stream_id == stream_id]:
        tx.delete(e)
    tx.update(stream, replace(stream, epoch=stream.epoch + 1, floor_seq=stream.head_seq + 1,
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


def presence_sweep(db: DbState, now: Timestamp) -> Ok:
    """Mark every live presence row whose TTL has passed offline (``ttl_expired``)."""
    tx = Tx(db)
    for r in list(db.of_type(SessionPresence)):
        if r.status != "offline" and r.expires_at <= now:
            tx.update(r, replace(r, status="offline", offline_reason="ttl_expired"))
            tx.insert(PresenceSignal(r.session_id, r.identity, "offline", "ttl_expired", now))
    return _ok(tx)


def disconnect_sessions(db: DbState, now: Timestamp, identity: str, sessions: frozenset[str]) -> Ok:
    """A connection closed: the live sessions it upserted go offline (``disconnected``)."""
    tx = Tx(db)
    for r in list(db.of_type(SessionPresence)):
        if r.session_id in sessions and r.identity == identity and r.status != "offline":
            tx.update(r, replace(r, status="offline", offline_reason="disconnected", last_seen=now))
            tx.insert(PresenceSignal(r.session_id, r.identity, "offline", "disconnected", now))
    return _ok(tx)


def compact(db: DbState, now: Timestamp, policy: Policy = DEFAULT_POLICY) -> Ok:
    """Retention: drop events past their class's count or age limit; raise ``floor_seq``."""
    tx = Tx(db)
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
        tx.update(s, replace(s, floor_seq=cut + 1, updated_at=now))
    return _ok(tx)


def unclean_restart(db: DbState, now: Timestamp, max_undurable: int) -> DbState:
    """After a crash the last non-durable transactions are gone, and some clients without
    confirmed reads may have seen them.  At most ``max_undurable`` transactions can have been
    lost (the server never runs further ahead of its durable offset), and each raises any
    stream's epoch by at most one; so every stream moves to an epoch above every epoch that can
    ever have been handed out, and so do streams created from now on (``epoch_floor``).  Hence
    no (stream, epoch, seq) ever names two different events (ADR-0001)."""
    streams = list(db.of_type(SyncStream))
    fresh = max([db.epoch_floor, *(s.epoch for s in streams)]) + max_undurable + 1
    tx = Tx(db)
    for s in streams:
        tx.update(s, replace(s, epoch=fresh, updated_at=now))
    tx.epoch_floor = fresh
    state, _ = tx.finish()
    return state


def describe(outcome: Outcome) -> str:
    if isinstance(outcome, Err):
        return outcome.error.render()
    return f"ok ret={outcome.ret} noop={outcome.noop}"

