"""The module's reducers, second implementation: imperative, over the indexed :class:`Db`.

Same contract as the model (``spec/reducers.py``; DESIGN §2): check order authorization ->
arguments -> state; a failure raises :class:`SyncError` and the engine rolls the transaction
back; ``append_sync_event`` dedupes before it checks the sequence.  Lookups are index hits, not
scans.  The differential tests hold this module to the model, outcome by outcome.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import icontract

from reference.db import Db, Txn
from spec.auth import Claims, grant_matches
from spec.canonical import canonicalize, dumps_canonical, parse_strict, payload_hash
from spec.errors import ErrorCode, SyncError
from spec.policy import Policy
from spec.resume import continued_stream
from spec.transitions import (
    ASSIGNMENT_ROLES,
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
    fast_init,
    is_id,
)


@fast_init  # spec.values: built per call
@dataclass(frozen=True, slots=True)
class Ctx:
    claims: Claims
    now: int
    offset: int  # the offset this transaction commits at if it writes
    policy: Policy


def _err(code: ErrorCode, **details: Any) -> SyncError:
    return SyncError(code, details)


def _need_scope(c: Claims, scope: str) -> None:
    if scope not in c.scopes:
        raise _err(ErrorCode.MISSING_SCOPE, scope=scope)


def _need_grant(c: Claims, stream_id: str) -> None:
    for g in c.streams:
        if grant_matches(g, stream_id):
            return
    raise _err(ErrorCode.FORBIDDEN_STREAM, stream_id=stream_id)


def _need_id(name: str, value: str) -> None:
    if not is_id(value):
        raise _err(ErrorCode.INVALID_ARGUMENT, argument=name, message="must be 1-128 characters of [A-Za-z0-9._:-]")


def _need_member(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument=name, message=f"must be one of {list(allowed)}")


def stream_position(db: Db, stream_id: str) -> tuple[int, int, int]:
    s = db.get("sync_stream", (stream_id,))
    if s is None:
        return db.epoch_floor, 0, 1
    assert isinstance(s, SyncStream)
    return s.epoch, s.head_seq, s.floor_seq


def append_sync_event(tx: Txn, x: Ctx, stream_id: str, idempotency_key: str, payload_json: str,
                      given_hash: str | None, expected_next_seq: int | None) -> int | None:
    c = x.claims
    _need_scope(c, "sync.append")
    _need_grant(c, stream_id)
    _need_id("stream_id", stream_id)
    _need_id("idempotency_key", idempotency_key)
    canon = canonicalize(payload_json)
    cls = x.policy.class_for(stream_id)
    nbytes = len(canon.encode("utf-8"))
    if nbytes > cls.max_payload_bytes:
        raise _err(ErrorCode.PAYLOAD_TOO_LARGE, limit_bytes=cls.max_payload_bytes, payload_bytes=nbytes,
                   stream_id=stream_id)
    digest = payload_hash(canon)
    if given_hash is not None and given_hash != digest:
        raise _err(ErrorCode.PAYLOAD_HASH_MISMATCH, payload_hash=digest, requested_payload_hash=given_hash,
                   stream_id=stream_id)
    log = tx.db.logs.get(stream_id)
    seq = log.seq_of(idempotency_key) if log is not None else None
    if log is not None and seq is not None:
        existing = log.get(seq)
        assert existing is not None
        if existing.payload_hash == digest:
            return seq
        raise _err(ErrorCode.IDEMPOTENCY_CONFLICT, existing_payload_hash=existing.payload_hash, existing_seq=seq,
                   idempotency_key=idempotency_key, payload_hash=digest, stream_id=stream_id)
    stream = tx.db.get("sync_stream", (stream_id,))
    assert stream is None or isinstance(stream, SyncStream)
    next_seq = (stream.head_seq if stream else 0) + 1
    if expected_next_seq is not None and expected_next_seq != next_seq:
        raise _err(ErrorCode.SEQUENCE_CONFLICT, actual_next_seq=next_seq, expected_next_seq=expected_next_seq,
                   stream_id=stream_id)
    if stream is None:
        epoch = tx.db.epoch_floor
        tx.insert(SyncStream(stream_id, cls.name, epoch, 0, 0, next_seq, next_seq, cls.replay_budget, x.now, x.now))
    else:
        epoch = stream.epoch
        floor = stream.floor_seq if stream.head_seq >= stream.floor_seq else next_seq
        # the stream row with its head moved: built directly (``dataclasses.replace`` re-reads every
        # field by name and costs several times as much on the append path)
        tx.update(stream, SyncStream(stream.stream_id, stream.stream_class, epoch, stream.continues_epoch,
                                     stream.continues_seq, next_seq, floor, stream.replay_budget, stream.created_at,
                                     x.now, stream.earlier_epochs, stream.earlier_seqs))
    tx.insert(SyncEvent(stream_id, epoch, next_seq, idempotency_key, digest, canon, c.identity, x.now, x.offset))
    return next_seq


def ack_checkpoint(tx: Txn, x: Ctx, client_id: str, stream_id: str, epoch: int, seq: int) -> None:
    c = x.claims
    _need_scope(c, "sync.checkpoint.write")
    _need_grant(c, stream_id)
    cid = client_id + "|" + stream_id
    old = tx.db.get("sync_checkpoint", (cid,))
    assert old is None or isinstance(old, SyncCheckpoint)
    if old is not None and old.owner != c.identity:
        raise _err(ErrorCode.FORBIDDEN, checkpoint_id=cid)
    _need_id("client_id", client_id)
    _need_id("stream_id", stream_id)
    cur_epoch, head, _ = stream_position(tx.db, stream_id)
    if epoch != cur_epoch:
        raise _err(ErrorCode.STALE_EPOCH, epoch=cur_epoch, requested_epoch=epoch, stream_id=stream_id)
    if seq > head:
        raise _err(ErrorCode.CHECKPOINT_AHEAD_OF_HEAD, head_seq=head, requested_seq=seq, stream_id=stream_id)
    if old is not None and old.epoch == epoch and seq <= old.last_applied_seq:
        return None
    new = SyncCheckpoint(cid, client_id, stream_id, c.identity, epoch, seq, x.now)
    if old is None:
        tx.insert(new)
    else:
        tx.update(old, new)
    return None


def upsert_presence(tx: Txn, x: Ctx, session_id: str, device_id: str, node_id: str, status: str, region: str,
                    ttl_ms: int) -> None:
    c = x.claims
    _need_scope(c, "presence.write")
    old = tx.db.get("session_presence", (session_id,))
    assert old is None or isinstance(old, SessionPresence)
    if (old is not None and old.identity != c.identity) or (c.session_id is not None and c.session_id != session_id) \
            or (c.device_id is not None and c.device_id != device_id):
        raise _err(ErrorCode.FORBIDDEN, session_id=session_id)
    for name, value in (("session_id", session_id), ("device_id", device_id), ("node_id", node_id)):
        _need_id(name, value)
    _need_member("status", status, PRESENCE_STATUSES)
    if region != "" and not is_id(region):
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="region",
                   message="must be empty or 1-128 characters of [A-Za-z0-9._:-]")
    lo, hi = x.policy.presence_min_ttl_ms, x.policy.presence_max_ttl_ms
    if ttl_ms < lo or ttl_ms > hi:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="ttl_ms", message=f"must be {lo}-{hi}")
    reason = "explicit_offline" if status == "offline" else None
    new = SessionPresence(session_id, c.identity, device_id, node_id, status, region, x.now, x.now + 1000 * ttl_ms,
                          reason)
    if old is None:
        tx.insert(new)
    else:
        tx.update(old, new)
    if old is None or old.status != status:
        tx.insert(PresenceSignal(session_id, c.identity, status, reason or "", x.now))
    return None


def publish_provider_capability(tx: Txn, x: Ctx, provider_id: str, capability_json: str,
                                nip90_kinds: tuple[int, ...], price_hint_sats: int, status: str) -> None:
    c = x.claims
    _need_scope(c, "provider.publish")
    old = tx.db.get("provider_capability", (provider_id,))
    assert old is None or isinstance(old, ProviderCapability)
    if old is not None and old.owner != c.identity:
        raise _err(ErrorCode.FORBIDDEN, provider_id=provider_id)
    _need_id("provider_id", provider_id)
    canon = canonicalize(capability_json, "capability_json")
    for k in nip90_kinds:
        if k < 5000 or k > 5999:
            raise _err(ErrorCode.INVALID_ARGUMENT, argument="nip90_kinds", message="each kind must be 5000-5999")
    _need_member("status", status, PROVIDER_STATUSES)
    kinds = tuple(sorted(set(nip90_kinds)))
    digest = payload_hash(canon)
    version = tx.db.version_floor
    if old is not None:
        if old.capability_hash == digest and old.nip90_kinds == kinds and old.price_hint_sats == price_hint_sats \
                and old.status == status:
            return None
        version = old.version + 1
    new = ProviderCapability(provider_id, c.identity, canon, digest, kinds, price_hint_sats, status, version, x.now)
    if old is None:
        tx.insert(new)
    else:
        tx.update(old, new)
    return None


def open_compute_assignment(tx: Txn, x: Ctx, request_id: str, job_kind: int, request_json: str) -> None:
    c = x.claims
    _need_scope(c, "compute.request")
    old = tx.db.get("compute_assignment", (request_id,))
    assert old is None or isinstance(old, ComputeAssignment)
    if old is not None and old.requester != c.identity:
        raise _err(ErrorCode.FORBIDDEN, request_id=request_id)
    _need_id("request_id", request_id)
    if job_kind < 5000 or job_kind > 5999:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="job_kind", message="must be 5000-5999")
    canon = canonicalize(request_json, "request_json")
    digest = payload_hash(canon)
    if old is None:
        tx.insert(ComputeAssignment(request_id, c.identity, job_kind, canon, digest, None, None, "open", None,
                                    tx.db.version_floor, x.now, x.now))
    elif old.request_hash != digest or old.job_kind != job_kind:
        raise _err(ErrorCode.IDEMPOTENCY_CONFLICT, existing_request_hash=old.request_hash, request_hash=digest,
                   request_id=request_id)
    return None


def update_compute_assignment(tx: Txn, x: Ctx, request_id: str, expected_version: int, status: str,
                              provider_id: str | None, result_json: str | None) -> None:
    c = x.claims
    if "compute.request" not in c.scopes and "compute.assign" not in c.scopes and "compute.execute" not in c.scopes:
        raise _err(ErrorCode.MISSING_SCOPE, scope="compute.assign")
    _need_id("request_id", request_id)
    _need_member("status", status, ASSIGNMENT_STATUSES)
    if provider_id is not None:
        _need_id("provider_id", provider_id)
    elif status == "assigned":
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="provider_id", message="required to assign")
    result = None
    if result_json is not None:
        if status != "completed" and status != "failed":
            raise _err(ErrorCode.INVALID_ARGUMENT, argument="result_json",
                       message="only completed or failed carry a result")
        result = canonicalize(result_json, "result_json")
    old = tx.db.get("compute_assignment", (request_id,))
    assert old is None or isinstance(old, ComputeAssignment)
    if old is None:
        raise _err(ErrorCode.ASSIGNMENT_MISSING, request_id=request_id)
    if expected_version != old.version:
        raise _err(ErrorCode.VERSION_CONFLICT, actual_version=old.version, expected_version=expected_version,
                   request_id=request_id)
    who = ASSIGNMENT_TRANSITIONS.get((old.status, status))
    if who is None:
        raise _err(ErrorCode.INVALID_TRANSITION, request_id=request_id, status=old.status, requested_status=status)
    for role in who:
        need = ASSIGNMENT_ROLES[role]
        if need.scope is not None and need.scope not in c.scopes:
            continue
        if need.identity_column is not None and getattr(old, need.identity_column) != c.identity:
            continue
        break
    else:
        raise _err(ErrorCode.FORBIDDEN, request_id=request_id)
    if status != "assigned" and provider_id is not None and provider_id != old.provider_id:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="provider_id", message="only the assign edge sets the provider")
    owner = old.provider_owner
    if status == "assigned":
        prov = tx.db.get("provider_capability", (provider_id,))
        assert prov is None or isinstance(prov, ProviderCapability)
        if prov is None:
            reason = "missing"
        elif prov.status != "active":
            reason = "withdrawn"
        elif old.job_kind not in prov.nip90_kinds:
            reason = "kind_not_advertised"
        else:
            reason = ""
        if reason:
            raise _err(ErrorCode.PROVIDER_UNAVAILABLE, job_kind=old.job_kind, provider_id=provider_id, reason=reason)
        assert prov is not None
        owner = prov.owner
    tx.update(old, replace(old, status=status, provider_id=provider_id if status == "assigned" else old.provider_id,
                           provider_owner=owner, result=result, version=old.version + 1, updated_at=x.now))
    return None


def enqueue_bridge_event(tx: Txn, x: Ctx, outbox_id: str, source: str, nostr_kind: int, tags_json: str,
                         content: str) -> None:
    _need_scope(x.claims, "bridge.enqueue")
    _need_id("outbox_id", outbox_id)
    _need_id("source", source)
    tags_canon = canonicalize(tags_json, "tags_json")
    tags = parse_strict(tags_canon, "tags_json")
    if not isinstance(tags, list) or any(not isinstance(t, list) or any(not isinstance(s, str) for s in t)
                                         for t in tags):
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="tags_json",
                   message="must be a JSON array of arrays of strings")
    if nostr_kind not in x.policy.bridge_kinds or _NOSTR_AMBIGUOUS.search(content) \
            or any(_NOSTR_AMBIGUOUS.search(item) for tag in tags for item in tag):
        raise _err(ErrorCode.POLICY_DENIED, nostr_kind=nostr_kind, outbox_id=outbox_id)
    digest = payload_hash(dumps_canonical([source, nostr_kind, tags, content]))
    old = tx.db.get("bridge_outbox", (outbox_id,))
    assert old is None or isinstance(old, BridgeOutbox)
    if old is None:
        tx.insert(BridgeOutbox(outbox_id, source, nostr_kind, tags_canon, content, digest, "pending", 0, x.now, None,
                               None, (), x.now, x.now))
    elif old.content_hash != digest:
        raise _err(ErrorCode.IDEMPOTENCY_CONFLICT, content_hash=digest, existing_content_hash=old.content_hash,
                   outbox_id=outbox_id)
    return None


_HEX = frozenset("0123456789abcdef")
# C0 controls other than \b \t \n \f \r: relays serialize them differently (spec.policy.NOSTR_NONPORTABLE_CONTROLS)
_NOSTR_AMBIGUOUS = re.compile("[\x00-\x07\x0b\x0e-\x1f]")


def mark_bridge_event_sent(tx: Txn, x: Ctx, outbox_id: str, nostr_event_id: str, relays: tuple[str, ...]) -> None:
    _need_scope(x.claims, "bridge.mark_sent")
    _need_id("outbox_id", outbox_id)
    if len(nostr_event_id) != 64 or not set(nostr_event_id) <= _HEX:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="nostr_event_id", message="must be 64 lowercase hex")
    for r in relays:
        if len(r) == 0 or len(r) > 512:
            raise _err(ErrorCode.INVALID_ARGUMENT, argument="relays", message="each relay must be 1-512 chars")
    old = tx.db.get("bridge_outbox", (outbox_id,))
    assert old is None or isinstance(old, BridgeOutbox)
    if old is None:
        raise _err(ErrorCode.BRIDGE_EVENT_MISSING, outbox_id=outbox_id)
    relays_acked = tuple(sorted(set(relays)))
    if old.status == "sent":
        if old.nostr_event_id != nostr_event_id:
            raise _err(ErrorCode.BRIDGE_EVENT_CONFLICT, nostr_event_id=old.nostr_event_id,
                       requested_nostr_event_id=nostr_event_id, outbox_id=outbox_id)
        relays_acked = tuple(sorted(set(old.relays_acked).union(relays)))
        if relays_acked == old.relays_acked:
            return None
    tx.update(old, replace(old, status="sent", nostr_event_id=nostr_event_id, relays_acked=relays_acked,
                           updated_at=x.now))
    return None


def record_bridge_failure(tx: Txn, x: Ctx, outbox_id: str, error: str, retry_after_ms: int) -> None:
    p = x.policy
    _need_scope(x.claims, "bridge.mark_sent")
    _need_id("outbox_id", outbox_id)
    if len(error) == 0 or len(error) > p.max_error_text:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="error", message=f"must be 1-{p.max_error_text} characters")
    if retry_after_ms > p.bridge_max_retry_after_ms:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="retry_after_ms",
                   message=f"must be at most {p.bridge_max_retry_after_ms}")
    old = tx.db.get("bridge_outbox", (outbox_id,))
    assert old is None or isinstance(old, BridgeOutbox)
    if old is None:
        raise _err(ErrorCode.BRIDGE_EVENT_MISSING, outbox_id=outbox_id)
    if old.status == "pending":
        attempts = old.attempts + 1
        tx.update(old, replace(old, attempts=attempts, last_error=error, updated_at=x.now,
                               next_attempt_at=x.now + 1000 * retry_after_ms,
                               status="failed" if attempts >= p.bridge_max_attempts else "pending"))
    return None


def publish_stream_signal(tx: Txn, x: Ctx, stream_id: str, kind: str, payload_json: str) -> None:
    c = x.claims
    _need_scope(c, "sync.append")
    _need_grant(c, stream_id)
    _need_id("stream_id", stream_id)
    _need_member("kind", kind, SIGNAL_KINDS)
    canon = canonicalize(payload_json)
    limit = x.policy.class_for(stream_id).max_payload_bytes
    nbytes = len(canon.encode("utf-8"))
    if nbytes > limit:
        raise _err(ErrorCode.PAYLOAD_TOO_LARGE, limit_bytes=limit, payload_bytes=nbytes, stream_id=stream_id)
    tx.insert(StreamSignal(stream_id, kind, canon, c.identity, x.now))
    return None


def reset_stream_epoch(tx: Txn, x: Ctx, stream_id: str) -> None:
    _need_scope(x.claims, "sync.admin")
    _need_id("stream_id", stream_id)
    stream = tx.db.get("sync_stream", (stream_id,))
    if stream is None:
        raise _err(ErrorCode.INVALID_ARGUMENT, argument="stream_id", message="stream does not exist")
    assert isinstance(stream, SyncStream)
    log = tx.db.logs.get(stream_id)
    while log is not None and log.events:
        tx.delete(log.events[0])
    tx.update(stream, replace(stream, epoch=stream.epoch + 1, continues_epoch=0, continues_seq=0,
                              earlier_epochs=(), earlier_seqs=(), floor_seq=stream.head_seq + 1,
                              updated_at=x.now))
    return None


REDUCERS: Mapping[str, Callable[..., int | None]] = {
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


# --- system transactions --------------------------------------------------------------------


def sweep_presence(tx: Txn, now: int) -> None:
    for r in list(tx.db.pk["session_presence"].values()):
        assert isinstance(r, SessionPresence)
        if r.status != "offline" and r.expires_at <= now:
            tx.update(r, replace(r, status="offline", offline_reason="ttl_expired"))
            tx.insert(PresenceSignal(r.session_id, r.identity, "offline", "ttl_expired", now))


def disconnect_sessions(tx: Txn, now: int, identity: str, sessions: frozenset[str]) -> None:
    for sid in sorted(sessions):
        r = tx.db.get("session_presence", (sid,))
        if isinstance(r, SessionPresence) and r.identity == identity and r.status != "offline":
            expired = r.expires_at <= now  # the TTL ran out first; only the sweep had not run yet
            reason = "ttl_expired" if expired else "disconnected"
            tx.update(r, replace(r, status="offline", offline_reason=reason, last_seen=r.last_seen if expired else now))
            tx.insert(PresenceSignal(r.session_id, r.identity, "offline", reason, now))


def _retention_cutoffs(now: int, policy: Policy) -> dict[tuple[str, str], int | None]:
    """(table, status) -> rows of that status stamped before this are removed (None: kept for ever)."""
    def cut(window: int | None) -> int | None:
        return None if window is None else now - window
    terminal = cut(policy.retain_terminal_assignment_us)
    return {("session_presence", "offline"): cut(policy.retain_offline_presence_us),
            ("compute_assignment", "completed"): terminal, ("compute_assignment", "failed"): terminal,
            ("compute_assignment", "cancelled"): terminal,
            ("bridge_outbox", "sent"): cut(policy.retain_sent_outbox_us),
            ("bridge_outbox", "failed"): cut(policy.retain_failed_outbox_us)}


@icontract.ensure(lambda tx: all(log.floor >= 1 for log in tx.db.logs.values()))
def compact(tx: Txn, now: int, policy: Policy) -> None:
    cutoffs = _retention_cutoffs(now, policy)
    for table in ("session_presence", "compute_assignment", "bridge_outbox"):
        for row in list(tx.db.pk[table].values()):
            assert isinstance(row, SessionPresence | ComputeAssignment | BridgeOutbox)
            stamp = row.last_seen if isinstance(row, SessionPresence) else row.updated_at
            before = cutoffs.get((table, row.status))
            if before is not None and stamp < before:
                tx.delete(row)
                if isinstance(row, ComputeAssignment):
                    tx.db.version_floor = max(tx.db.version_floor, row.version + 1)
    for stream in list(tx.db.pk["sync_stream"].values()):
        assert isinstance(stream, SyncStream)
        log = tx.db.logs.get(stream.stream_id)
        if log is None or not log.events:
            continue
        cls = policy.class_for(stream.stream_id)
        keep_from = log.floor
        if cls.retain_count is not None and len(log.events) > cls.retain_count:
            keep_from = log.floor + len(log.events) - cls.retain_count
        if cls.retain_age_us is not None:
            for e in log.events:
                if e.committed_at >= now - cls.retain_age_us:
                    break
                keep_from = max(keep_from, e.seq + 1)
        if keep_from == log.floor:
            continue
        while log.events and log.events[0].seq < keep_from:
            tx.delete(log.events[0])
        tx.update(stream, replace(stream, floor_seq=max(stream.floor_seq, keep_from), updated_at=now))


def top_version(db: Db) -> int:
    top = db.version_floor
    for table in ("provider_capability", "compute_assignment"):
        for row in db.pk[table].values():
            assert isinstance(row, ProviderCapability | ComputeAssignment)
            top = max(top, row.version)
    return top


def recovery_bump(tx: Txn, now: int, max_undurable: int) -> None:
    streams = list(tx.db.pk["sync_stream"].values())
    top = tx.db.epoch_floor
    for s in streams:
        assert isinstance(s, SyncStream)
        top = max(top, s.epoch)
    fresh = top + max_undurable + 1
    moved: dict[str, int] = {}
    for s in streams:
        assert isinstance(s, SyncStream)
        moved[s.stream_id] = s.epoch
        # the new epoch continues the old one up to the (durable) head; the floor stays (ADR-0003)
        tx.update(s, continued_stream(s, fresh, now))  # and the chain before it (ADR-0010)
        tx.relabel_events(s.stream_id, s.epoch, fresh)
    for c in list(tx.db.pk["sync_checkpoint"].values()):
        assert isinstance(c, SyncCheckpoint)
        if moved.get(c.stream_id) == c.epoch:
            tx.update(c, replace(c, epoch=fresh))
    tx.db.epoch_floor = fresh
    version = top_version(tx.db) + max_undurable + 1
    for table in ("provider_capability", "compute_assignment"):
        for row in list(tx.db.pk[table].values()):
            assert isinstance(row, ProviderCapability | ComputeAssignment)
            tx.update(row, replace(row, version=version))
    tx.db.version_floor = version
