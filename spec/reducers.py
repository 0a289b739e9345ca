"""The reducers of the sync module, and the server's own system transactions.

Each reducer is a pure function ``(DbState, CallContext, *args) -> Outcome``.  A reducer either
commits (:class:`Ok`: the new state, its BSATN return value, and the transaction's
:class:`~spec.state.Delta`) or fails (:class:`Err`: one :class:`~spec.errors.SyncError`,
state untouched -- a failed reducer changes nothing and only its caller hears of it).  An
``Ok`` whose delta is empty is an accepted no-op (a deduplicated retry, a lower ack): it reads,
it does not write, and it takes no transaction offset.

How a reducer reads
-------------------
Each reducer below is its rule, top to bottom:

1. the **statement** -- the public function's docstring (``docs/protocol.md`` prints it);
2. the **checks, in order**, as data: a tuple of named :class:`Check` steps (a name, the error
   code it refuses with, and a function giving the error's details when the call fails it, None
   when it passes) and :class:`NoOp` steps (a name and a condition under which the call is an
   accepted no-op).  One small evaluator, :func:`run`, walks the tuple: the first check that
   refuses decides the error, the first no-op that holds decides the no-op, and only a call that
   passes them all reaches
3. the **effect** -- one function writing the transaction (its docstring says what it writes);
4. the **terms** the checks and the effect read (``a.head``, ``a.existing``, ``a.digest``): a
   frozen dataclass of the arguments whose derived values are cached properties, computed when a
   step first reads them -- so a value whose computation could fail (canonical JSON) is read only
   after the check that guards it.

The check order is therefore visible, not implied by the order of ``raise`` statements, and the
documentation reads the same tuples the reducers run (:data:`CHECKS`; the ``check-order`` table of
``docs/protocol.md`` is generated from it and a test fails on drift).  The reach table counts the
error codes of :data:`spec.rules.REDUCER_RULES`, which ``tests/spec/test_check_order.py`` holds
equal to the codes of these tuples.  The
contracts (icontract postconditions) stay on the public functions, with their predicates in the
companion module :mod:`spec.reducer_contracts`; the call/outcome vocabulary is in
:mod:`spec.outcome` (re-exported here).

The order is part of the specification and has the same shape in every reducer:

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

Why data and not code: a check tuple can be printed (the protocol doc's per-reducer check order),
compared (with the rules table, and step by step with ``call``'s outcomes in the tests) and
reordered by a planted mutant in one edit, and each entry is small
enough to read against the doc line it produces.  The engine (``reference/reducers.py``) stays
imperative on purpose: it is the second implementation the differential tests hold to this one.

System transactions (not callable by clients): :func:`presence_sweep`, :func:`disconnect_sessions`,
:func:`compact`, :func:`unclean_restart`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Generic, TypeVar

import icontract

from spec import contracts
from spec import reducer_contracts as rc
from spec.auth import Claims, has_scope, stream_granted
from spec.canonical import canonicalize, dumps_canonical, parse_strict, payload_hash
from spec.errors import ErrorCode, SyncError
from spec.invariants import check_retention, check_sweep
from spec.outcome import CallContext as CallContext
from spec.outcome import Err as Err
from spec.outcome import Ok as Ok
from spec.outcome import Outcome as Outcome
from spec.outcome import virtual_stream as virtual_stream
from spec.policy import DEFAULT_POLICY, NOSTR_NONPORTABLE_CONTROLS, Policy, StreamClass, expired
from spec.resume import continued_stream
from spec.schema import REDUCER_BY_NAME
from spec.state import DbState, Delta, Tx
from spec.transitions import (
    ASSIGNMENT_STATUSES,
    ASSIGNMENT_TERMINAL,
    ASSIGNMENT_TRANSITIONS,
    PRESENCE_STATUSES,
    PROVIDER_STATUSES,
    SIGNAL_KINDS,
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

# --- the evaluator ---------------------------------------------------------------------------

Details = Mapping[str, Any]


@dataclass(frozen=True)
class Call:
    """The terms a reducer's steps read: the state before, the context, and (in each reducer's
    subclass) the arguments and the values derived from them, as cached properties."""
    db: DbState
    ctx: CallContext

    @property
    def claims(self) -> Claims:
        return self.ctx.claims


A = TypeVar("A", bound=Call)


@dataclass(frozen=True, slots=True)
class Check(Generic[A]):
    """A named condition: ``refuse(call)`` is the error's details when the call fails it, None when
    it passes; a failing call is refused with ``code``."""
    name: str
    code: ErrorCode
    refuse: Callable[[A], Details | None]


def _nothing(call: Any) -> int | None:
    return None


@dataclass(frozen=True, slots=True)
class NoOp(Generic[A]):
    """A named condition under which the call is accepted and writes nothing; it returns ``ret``."""
    name: str
    holds: Callable[[A], bool]
    ret: Callable[[A], int | None] = _nothing


Step = Check[A] | NoOp[A]


def decide(steps: tuple[Step[A], ...], call: A) -> tuple[Step[A], Details | None] | None:
    """The step that decides ``call``: the first :class:`Check` that refuses (with the error's
    details) or the first :class:`NoOp` that holds (with None), whichever comes first in ``steps``;
    None when the call passes every step."""
    for step in steps:
        if isinstance(step, NoOp):
            if step.holds(call):
                return step, None
        elif (details := step.refuse(call)) is not None:
            return step, details
    return None


def run(steps: tuple[Step[A], ...], effect: Callable[[A], Ok], call: A) -> Ok:
    """Run a reducer: the step that decides the call refuses it (raising its error; ``call`` turns
    it into an :class:`Err`) or accepts it without writing; a call no step decides takes the effect."""
    decided = decide(steps, call)
    if decided is None:
        return effect(call)
    step, details = decided
    if isinstance(step, NoOp):
        return Ok(call.db, step.ret(call), Delta())
    assert details is not None
    raise SyncError(step.code, details)


# --- steps shared by several reducers ---------------------------------------------------------

ID_MESSAGE = "must be 1-128 characters of [A-Za-z0-9._:-]"


def needs_scope(scope: str) -> Check[Any]:
    return Check(f"the caller holds `{scope}`", ErrorCode.MISSING_SCOPE,
                 lambda a: None if has_scope(a.claims, scope) else {"scope": scope})


def needs_grant(argument: str) -> Check[Any]:
    return Check(f"a stream grant of the token matches `{argument}`", ErrorCode.FORBIDDEN_STREAM,
                 lambda a: None if stream_granted(a.claims, getattr(a, argument))
                 else {"stream_id": getattr(a, argument)})


def valid_id(argument: str) -> Check[Any]:
    return Check(f"`{argument}` is an id", ErrorCode.INVALID_ARGUMENT,
                 lambda a: None if is_id(getattr(a, argument)) else {"argument": argument, "message": ID_MESSAGE})


def one_of(argument: str, allowed: tuple[str, ...]) -> Check[Any]:
    return Check(f"`{argument}` is one of {', '.join(allowed)}", ErrorCode.INVALID_ARGUMENT,
                 lambda a: None if getattr(a, argument) in allowed
                 else {"argument": argument, "message": f"must be one of {list(allowed)}"})


def _canonical_refusal(text: str | None, argument: str) -> Details | None:
    if text is None:
        return None
    try:
        canonicalize(text, argument)
    except SyncError as err:
        return err.details
    return None


def canonical(argument: str) -> Check[Any]:
    return Check(f"`{argument}` is canonical JSON", ErrorCode.NON_CANONICAL_PAYLOAD,
                 lambda a: _canonical_refusal(getattr(a, argument), argument))


def fits_stream_class() -> Check[Any]:
    return Check("the canonical payload fits the stream class's `max_payload_bytes`", ErrorCode.PAYLOAD_TOO_LARGE,
                 lambda a: None if a.size <= a.limit
                 else {"limit_bytes": a.limit, "payload_bytes": a.size, "stream_id": a.stream_id})


def _ok(tx: Tx, ret: int | None = None) -> Ok:
    state, delta = tx.finish()
    return Ok(state, ret, delta)


# --- append_sync_event -----------------------------------------------------------------------


@icontract.ensure(lambda db, stream_id, result: result.noop or result.ret == virtual_stream(db, stream_id)[1] + 1,
                  "SEQ-4 (an append that writes returns head_seq + 1)")
@icontract.ensure(lambda db, stream_id, idempotency_key, expected_next_seq, result: result.noop or (
    rc.appended_one(db, stream_id, idempotency_key, result) and expected_next_seq in (None, result.ret)),
    "SEQ-1 SEQ-4 (the write is one event at seq ret in the stream's epoch, the head moves to it)")
@icontract.ensure(lambda db, stream_id, idempotency_key, payload_json, result: not result.noop
                  or rc.deduplicated(db, stream_id, idempotency_key, payload_json, result),
                  "IDEM-2 IDEM-3 (a no-op append is a retry of the same payload and returns its original seq)")
def append_sync_event(db: DbState, ctx: CallContext, stream_id: str, idempotency_key: str,
                      payload_json: str, payload_hash_arg: str | None,
                      expected_next_seq: int | None) -> Outcome:
    """Append an event at seq = head + 1; a retry under a retained idempotency key returns the
    original seq (dedupe before sequence)."""
    return run(APPEND_SYNC_EVENT, _append,
               AppendCall(db, ctx, stream_id, idempotency_key, payload_json, payload_hash_arg, expected_next_seq))


APPEND_SYNC_EVENT: tuple[Step[AppendCall], ...] = (
    needs_scope("sync.append"),
    needs_grant("stream_id"),
    valid_id("stream_id"),
    valid_id("idempotency_key"),
    canonical("payload_json"),
    fits_stream_class(),
    Check("`payload_hash`, when given, is the hash of the canonical payload", ErrorCode.PAYLOAD_HASH_MISMATCH,
          lambda a: None if a.payload_hash_arg in (None, a.digest)
          else {"payload_hash": a.digest, "requested_payload_hash": a.payload_hash_arg, "stream_id": a.stream_id}),
    NoOp("the key is retained with this payload: a retry, answered with its original seq",
         lambda a: a.existing is not None and a.existing.payload_hash == a.digest,
         lambda a: a.existing.seq if a.existing is not None else None),
    Check("the key is not retained with another payload", ErrorCode.IDEMPOTENCY_CONFLICT,
          lambda a: None if a.existing is None or a.existing.payload_hash == a.digest
          else {"existing_payload_hash": a.existing.payload_hash, "existing_seq": a.existing.seq,
                "idempotency_key": a.idempotency_key, "payload_hash": a.digest, "stream_id": a.stream_id}),
    Check("`expected_next_seq`, when given, is head + 1", ErrorCode.SEQUENCE_CONFLICT,
          lambda a: None if a.expected_next_seq in (None, a.head + 1)
          else {"actual_next_seq": a.head + 1, "expected_next_seq": a.expected_next_seq, "stream_id": a.stream_id}),
)


def _append(a: AppendCall) -> Ok:
    """Write the event at seq = head + 1 in the stream's epoch and move the head to it; the first
    append creates the stream (its class, epoch = the database's epoch floor, continuing nothing)."""
    seq = a.head + 1
    tx = Tx(a.db)
    if a.stream is None:
        epoch = a.db.epoch_floor
        tx.insert(SyncStream(a.stream_id, a.cls.name, epoch, 0, 0, seq, seq, a.cls.replay_budget, a.ctx.now,
                             a.ctx.now))
    else:
        epoch = a.stream.epoch
        floor = a.stream.floor_seq if a.stream.floor_seq <= a.stream.head_seq else seq
        tx.update(a.stream, replace(a.stream, head_seq=seq, floor_seq=floor, updated_at=a.ctx.now))
    tx.insert(SyncEvent(a.stream_id, epoch, seq, a.idempotency_key, a.digest, a.canon, a.claims.identity, a.ctx.now,
                        a.ctx.tx_offset))
    return _ok(tx, seq)


@dataclass(frozen=True)
class AppendCall(Call):
    stream_id: str
    idempotency_key: str
    payload_json: str
    payload_hash_arg: str | None
    expected_next_seq: int | None

    @cached_property
    def cls(self) -> StreamClass:
        """The stream's class (retention, payload limit, replay budget) under the policy."""
        return self.ctx.policy.class_for(self.stream_id)

    @cached_property
    def canon(self) -> str:
        return canonicalize(self.payload_json)

    @cached_property
    def size(self) -> int:
        return len(self.canon.encode("utf-8"))

    @cached_property
    def limit(self) -> int:
        return self.cls.max_payload_bytes

    @cached_property
    def digest(self) -> str:
        return payload_hash(self.canon)

    @cached_property
    def existing(self) -> SyncEvent | None:
        """The retained event under this idempotency key, if any (the dedupe horizon)."""
        key = (self.stream_id, self.idempotency_key)
        return self.db.find(SyncEvent, lambda e: (e.stream_id, e.idempotency_key) == key)

    @cached_property
    def stream(self) -> SyncStream | None:
        return self.db.find(SyncStream, lambda r: r.stream_id == self.stream_id)

    @cached_property
    def head(self) -> int:
        return self.stream.head_seq if self.stream is not None else 0


# --- ack_checkpoint --------------------------------------------------------------------------


@icontract.ensure(lambda db, ctx, client_id, stream_id, epoch, seq, result: result.noop
                  or rc.ack_written(db, ctx, client_id, stream_id, epoch, seq, result),
                  "CKPT-1 CKPT-2 (a written checkpoint is the caller's, in the stream's epoch, at most head, and"
                  " above any previous one of that epoch)")
@icontract.ensure(lambda db, client_id, stream_id, epoch, seq, result: not result.noop
                  or rc.ack_redundant(db, client_id, stream_id, epoch, seq),
                  "CKPT-2 (an ack is a no-op only when the checkpoint is already at or past it)")
def ack_checkpoint(db: DbState, ctx: CallContext, client_id: str, stream_id: str, epoch: int,
                   seq: int) -> Outcome:
    """Record a client's watermark for a stream in the current epoch; never past the head, never
    backwards."""
    return run(ACK_CHECKPOINT, _ack, AckCall(db, ctx, client_id, stream_id, epoch, seq))


ACK_CHECKPOINT: tuple[Step[AckCall], ...] = (
    needs_scope("sync.checkpoint.write"),
    needs_grant("stream_id"),
    Check("the checkpoint of (`client_id`, `stream_id`) is new or the caller's", ErrorCode.FORBIDDEN,
          lambda a: None if a.old is None or a.old.owner == a.claims.identity else {"checkpoint_id": a.checkpoint_id}),
    valid_id("client_id"),
    valid_id("stream_id"),
    Check("`epoch` is the stream's epoch", ErrorCode.STALE_EPOCH,
          lambda a: None if a.epoch == a.stream_epoch
          else {"epoch": a.stream_epoch, "requested_epoch": a.epoch, "stream_id": a.stream_id}),
    Check("`seq` is at most the stream's head", ErrorCode.CHECKPOINT_AHEAD_OF_HEAD,
          lambda a: None if a.seq <= a.head
          else {"head_seq": a.head, "requested_seq": a.seq, "stream_id": a.stream_id}),
    NoOp("the checkpoint is already in this epoch at or past `seq`",
         lambda a: a.old is not None and a.old.epoch == a.epoch and a.old.last_applied_seq >= a.seq),
)


def _ack(a: AckCall) -> Ok:
    """Write the caller's checkpoint at (epoch, seq)."""
    tx = Tx(a.db)
    new = SyncCheckpoint(a.checkpoint_id, a.client_id, a.stream_id, a.claims.identity, a.epoch, a.seq, a.ctx.now)
    if a.old is None:
        tx.insert(new)
    else:
        tx.update(a.old, new)
    return _ok(tx)


@dataclass(frozen=True)
class AckCall(Call):
    client_id: str
    stream_id: str
    epoch: int
    seq: int

    @property
    def checkpoint_id(self) -> str:
        return f"{self.client_id}|{self.stream_id}"

    @cached_property
    def old(self) -> SyncCheckpoint | None:
        return self.db.find(SyncCheckpoint, lambda r: r.checkpoint_id == self.checkpoint_id)

    @cached_property
    def position(self) -> tuple[int, int, int]:
        """(epoch, head_seq, floor_seq) of the stream, or what a new one will have."""
        return virtual_stream(self.db, self.stream_id)

    @property
    def stream_epoch(self) -> int:
        return self.position[0]

    @property
    def head(self) -> int:
        return self.position[1]


# --- upsert_presence -------------------------------------------------------------------------


@icontract.ensure(lambda db, ctx, session_id, status, result: result.noop
                  or rc.presence_written(db, ctx, session_id, status, result),
                  "PRES-1 PRES-2 (the caller's row, offline exactly with a reason, expires_at >= last_seen; a status"
                  " change emits exactly one presence_signal)")
@icontract.ensure(lambda db, ctx, session_id, device_id, node_id, status, region, ttl_ms, result: not result.noop
                  or rc.presence_unchanged(db, ctx, session_id, device_id, node_id, status, region, ttl_ms, result),
                  "PRES-2 (an upsert is a no-op only when the row already is what it writes: no change is lost)")
def upsert_presence(db: DbState, ctx: CallContext, session_id: str, device_id: str, node_id: str,
                    status: str, region: str, ttl_ms: int) -> Outcome:
    """Create or refresh the caller's session row (status, TTL); a status change emits one
    presence_signal."""
    return run(UPSERT_PRESENCE, _upsert_presence,
               PresenceCall(db, ctx, session_id, device_id, node_id, status, region, ttl_ms))


UPSERT_PRESENCE: tuple[Step[PresenceCall], ...] = (
    needs_scope("presence.write"),
    Check("the session row is new or the caller's", ErrorCode.FORBIDDEN,
          lambda a: None if a.old is None or a.old.identity == a.claims.identity else {"session_id": a.session_id}),
    Check("a token pinned to a session or device names this one", ErrorCode.FORBIDDEN,
          lambda a: None if a.claims.session_id in (None, a.session_id) and a.claims.device_id in (None, a.device_id)
          else {"session_id": a.session_id}),
    valid_id("session_id"),
    valid_id("device_id"),
    valid_id("node_id"),
    one_of("status", PRESENCE_STATUSES),
    Check("`region` is empty or an id", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if not a.region or is_id(a.region)
          else {"argument": "region", "message": "must be empty or 1-128 characters of [A-Za-z0-9._:-]"}),
    Check("`ttl_ms` is within the policy's presence TTL range", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.ctx.policy.presence_min_ttl_ms <= a.ttl_ms <= a.ctx.policy.presence_max_ttl_ms
          else {"argument": "ttl_ms",
                "message": f"must be {a.ctx.policy.presence_min_ttl_ms}-{a.ctx.policy.presence_max_ttl_ms}"}),
)


def _upsert_presence(a: PresenceCall) -> Ok:
    """Write the row (last_seen now, expiring after ttl_ms; offline with ``explicit_offline``); a new
    row or a status change also emits one presence_signal.  A row that would not change is a no-op."""
    reason = "explicit_offline" if a.status == "offline" else None
    new = SessionPresence(a.session_id, a.claims.identity, a.device_id, a.node_id, a.status, a.region, a.ctx.now,
                          a.ctx.now + a.ttl_ms * 1000, reason)
    tx = Tx(a.db)
    if a.old is None:
        tx.insert(new)
    else:
        tx.update(a.old, new)
    if a.old is None or a.old.status != a.status:
        tx.insert(PresenceSignal(a.session_id, a.claims.identity, a.status, reason or "", a.ctx.now))
    return _ok(tx)


@dataclass(frozen=True)
class PresenceCall(Call):
    session_id: str
    device_id: str
    node_id: str
    status: str
    region: str
    ttl_ms: int

    @cached_property
    def old(self) -> SessionPresence | None:
        return self.db.find(SessionPresence, lambda r: r.session_id == self.session_id)


# --- publish_provider_capability -------------------------------------------------------------


@icontract.ensure(lambda db, provider_id, capability_json, nip90_kinds, price_hint_sats, status, result:
                  rc.provider_versioned(db, provider_id, capability_json, nip90_kinds, price_hint_sats, status, result),
                  "PROV-1 (the version rises by exactly one on a content change, and only then; the row holds the "
                  "call's ad)")
def publish_provider_capability(db: DbState, ctx: CallContext, provider_id: str, capability_json: str,
                                nip90_kinds: tuple[int, ...], price_hint_sats: int, status: str) -> Outcome:
    """Create or update the caller's provider ad; the version rises by 1 on every content change."""
    return run(PUBLISH_PROVIDER_CAPABILITY, _publish_provider,
               ProviderCall(db, ctx, provider_id, capability_json, nip90_kinds, price_hint_sats, status))


PUBLISH_PROVIDER_CAPABILITY: tuple[Step[ProviderCall], ...] = (
    needs_scope("provider.publish"),
    Check("the provider is new or the caller's", ErrorCode.FORBIDDEN,
          lambda a: None if a.old is None or a.old.owner == a.claims.identity else {"provider_id": a.provider_id}),
    valid_id("provider_id"),
    canonical("capability_json"),
    Check("every kind of `nip90_kinds` is 5000-5999", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if all(5000 <= k <= 5999 for k in a.nip90_kinds)
          else {"argument": "nip90_kinds", "message": "each kind must be 5000-5999"}),
    one_of("status", PROVIDER_STATUSES),
    NoOp("the stored ad has this capability, kinds, price and status (version kept)",
         lambda a: a.old is not None and (a.old.capability_hash, a.old.nip90_kinds, a.old.price_hint_sats,
                                          a.old.status) == (a.digest, a.kinds, a.price_hint_sats, a.status)),
)


def _publish_provider(a: ProviderCall) -> Ok:
    """Write the ad, owned by the caller, kinds sorted and distinct, at version + 1 (a new provider
    at the database's version floor)."""
    version = a.db.version_floor if a.old is None else a.old.version + 1
    new = ProviderCapability(a.provider_id, a.claims.identity, a.canon, a.digest, a.kinds, a.price_hint_sats,
                             a.status, version, a.ctx.now)
    tx = Tx(a.db)
    if a.old is None:
        tx.insert(new)
    else:
        tx.update(a.old, new)
    return _ok(tx)


@dataclass(frozen=True)
class ProviderCall(Call):
    provider_id: str
    capability_json: str
    nip90_kinds: tuple[int, ...]
    price_hint_sats: int
    status: str

    @cached_property
    def old(self) -> ProviderCapability | None:
        return self.db.find(ProviderCapability, lambda r: r.provider_id == self.provider_id)

    @cached_property
    def canon(self) -> str:
        return canonicalize(self.capability_json, "capability_json")

    @cached_property
    def digest(self) -> str:
        return payload_hash(self.canon)

    @property
    def kinds(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.nip90_kinds)))


# --- open_compute_assignment -----------------------------------------------------------------


@icontract.ensure(lambda db, request_id, job_kind, request_json, result:
                  rc.assignment_opened(db, request_id, job_kind, request_json, result),
                  "ASSIGN-2 (a new assignment is open at version 1 with the hash of its request; a retry, and only "
                  "a retry, is a no-op)")
def open_compute_assignment(db: DbState, ctx: CallContext, request_id: str, job_kind: int,
                            request_json: str) -> Outcome:
    """Open a compute request (status open, no provider) at the database's version_floor."""
    return run(OPEN_COMPUTE_ASSIGNMENT, _open_assignment, OpenCall(db, ctx, request_id, job_kind, request_json))


OPEN_COMPUTE_ASSIGNMENT: tuple[Step[OpenCall], ...] = (
    needs_scope("compute.request"),
    Check("the request id is new or the caller's request", ErrorCode.FORBIDDEN,
          lambda a: None if a.old is None or a.old.requester == a.claims.identity else {"request_id": a.request_id}),
    valid_id("request_id"),
    Check("`job_kind` is 5000-5999", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if 5000 <= a.job_kind <= 5999 else {"argument": "job_kind", "message": "must be 5000-5999"}),
    canonical("request_json"),
    NoOp("the request id is open with this request and job kind: a retry",
         lambda a: a.old is not None and a.old.request_hash == a.digest and a.old.job_kind == a.job_kind),
    Check("the request id is not taken by another request", ErrorCode.IDEMPOTENCY_CONFLICT,
          lambda a: None if a.old is None
          else {"existing_request_hash": a.old.request_hash, "request_hash": a.digest, "request_id": a.request_id}),
)


def _open_assignment(a: OpenCall) -> Ok:
    """Write the assignment: requested by the caller, open, no provider, at the version floor."""
    tx = Tx(a.db)
    tx.insert(ComputeAssignment(a.request_id, a.claims.identity, a.job_kind, a.canon, a.digest, None, None, "open",
                                None, a.db.version_floor, a.ctx.now, a.ctx.now))
    return _ok(tx)


@dataclass(frozen=True)
class OpenCall(Call):
    request_id: str
    job_kind: int
    request_json: str

    @cached_property
    def old(self) -> ComputeAssignment | None:
        return self.db.find(ComputeAssignment, lambda r: r.request_id == self.request_id)

    @cached_property
    def canon(self) -> str:
        return canonicalize(self.request_json, "request_json")

    @cached_property
    def digest(self) -> str:
        return payload_hash(self.canon)


# --- update_compute_assignment ---------------------------------------------------------------

COMPUTE_SCOPES = frozenset({"compute.request", "compute.assign", "compute.execute"})
RESULT_STATUSES = ("completed", "failed")


@icontract.ensure(lambda result: not result.noop, "every accepted assignment update writes")
@icontract.ensure(lambda db, ctx, request_id, result: rc.assignment_stepped(db, ctx, request_id, result),
                  "ASSIGN-1 ASSIGN-2 (one edge of the table, by a role it names, version + 1)")
def update_compute_assignment(db: DbState, ctx: CallContext, request_id: str, expected_version: int,
                              status: str, provider_id: str | None, result_json: str | None) -> Outcome:
    """Take one edge of the assignment table as a role the edge names, compare-and-set on version."""
    return run(UPDATE_COMPUTE_ASSIGNMENT, _update_assignment,
               UpdateCall(db, ctx, request_id, expected_version, status, provider_id, result_json))


UPDATE_COMPUTE_ASSIGNMENT: tuple[Step[UpdateCall], ...] = (
    Check("the caller holds one of `compute.request`, `compute.assign`, `compute.execute`", ErrorCode.MISSING_SCOPE,
          lambda a: None if a.claims.scopes & COMPUTE_SCOPES else {"scope": "compute.assign"}),
    valid_id("request_id"),
    one_of("status", ASSIGNMENT_STATUSES),
    Check("`provider_id` is absent or an id", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.provider_id is None or is_id(a.provider_id)
          else {"argument": "provider_id", "message": ID_MESSAGE}),
    Check("`provider_id` is given to assign", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.status != "assigned" or a.provider_id is not None
          else {"argument": "provider_id", "message": "required to assign"}),
    Check("`result_json` comes only with completed or failed", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.result_json is None or a.status in RESULT_STATUSES
          else {"argument": "result_json", "message": "only completed or failed carry a result"}),
    canonical("result_json"),
    Check("the request id exists", ErrorCode.ASSIGNMENT_MISSING,
          lambda a: None if a.old is not None else {"request_id": a.request_id}),
    Check("`expected_version` is the row's version", ErrorCode.VERSION_CONFLICT,
          lambda a: None if a.row.version == a.expected_version
          else {"actual_version": a.row.version, "expected_version": a.expected_version, "request_id": a.request_id}),
    Check("(status, requested status) is an edge of the table", ErrorCode.INVALID_TRANSITION,
          lambda a: None if a.edge in ASSIGNMENT_TRANSITIONS
          else {"request_id": a.request_id, "status": a.row.status, "requested_status": a.status}),
    Check("the caller holds a role the edge names", ErrorCode.FORBIDDEN,
          lambda a: None if any(has_role(role, a.claims.scopes, a.claims.identity, a.row)
                                for role in ASSIGNMENT_TRANSITIONS[a.edge])
          else {"request_id": a.request_id}),
    Check("only the assign edge names a provider (another edge: absent or the row's own)", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.status == "assigned" or a.provider_id in (None, a.row.provider_id)
          else {"argument": "provider_id", "message": "only the assign edge sets the provider"}),
    Check("to assign, the provider exists, is active and advertises the job kind", ErrorCode.PROVIDER_UNAVAILABLE,
          lambda a: None if a.status != "assigned" or a.unavailable is None
          else {"job_kind": a.row.job_kind, "provider_id": a.provider_id, "reason": a.unavailable}),
)


def _update_assignment(a: UpdateCall) -> Ok:
    """Move the row along the edge at version + 1 with the result (if any); the assign edge sets
    the provider and its owner, no other edge changes either."""
    old = a.row
    provider_id, provider_owner = old.provider_id, old.provider_owner
    if a.status == "assigned":
        assert a.provider is not None  # the provider check passed
        provider_id, provider_owner = a.provider.provider_id, a.provider.owner
    new = replace(old, status=a.status, provider_id=provider_id, provider_owner=provider_owner,
                  result=a.result, version=old.version + 1, updated_at=a.ctx.now)
    tx = Tx(a.db)
    tx.update(old, new)
    return _ok(tx)


@dataclass(frozen=True)
class UpdateCall(Call):
    request_id: str
    expected_version: int
    status: str
    provider_id: str | None
    result_json: str | None

    @cached_property
    def old(self) -> ComputeAssignment | None:
        return self.db.find(ComputeAssignment, lambda r: r.request_id == self.request_id)

    @property
    def row(self) -> ComputeAssignment:
        """The row, once the check that it exists has passed."""
        assert self.old is not None
        return self.old

    @property
    def edge(self) -> tuple[str, str]:
        return self.row.status, self.status

    @cached_property
    def result(self) -> str | None:
        return None if self.result_json is None else canonicalize(self.result_json, "result_json")

    @cached_property
    def provider(self) -> ProviderCapability | None:
        return self.db.find(ProviderCapability, lambda r: r.provider_id == self.provider_id)

    @property
    def unavailable(self) -> str | None:
        """Why the named provider cannot take the job (``missing``, ``withdrawn``,
        ``kind_not_advertised``), or None."""
        p = self.provider
        return ("missing" if p is None else "withdrawn" if p.status != "active"
                else "kind_not_advertised" if self.row.job_kind not in p.nip90_kinds else None)


# --- enqueue_bridge_event --------------------------------------------------------------------


@icontract.ensure(lambda db, outbox_id, source, nostr_kind, tags_json, content, result:
                  rc.outbox_enqueued(db, outbox_id, source, nostr_kind, tags_json, content, result),
                  "BRIDGE-1 BRIDGE-3 (a new outbox row is pending with no attempts and the call's content hash; a "
                  "retry, and only a retry, is a no-op)")
def enqueue_bridge_event(db: DbState, ctx: CallContext, outbox_id: str, source: str, nostr_kind: int,
                         tags_json: str, content: str) -> Outcome:
    """Queue a Nostr event for the bridge (pending, due now), deduplicated on hash([source, kind,
    tags, content])."""
    return run(ENQUEUE_BRIDGE_EVENT, _enqueue, EnqueueCall(db, ctx, outbox_id, source, nostr_kind, tags_json, content))


ENQUEUE_BRIDGE_EVENT: tuple[Step[EnqueueCall], ...] = (
    needs_scope("bridge.enqueue"),
    valid_id("outbox_id"),
    valid_id("source"),
    canonical("tags_json"),
    Check("`tags_json` is an array of arrays of strings", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if isinstance(a.tags, list) and all(
              isinstance(t, list) and all(isinstance(x, str) for x in t) for t in a.tags)
          else {"argument": "tags_json", "message": "must be a JSON array of arrays of strings"}),
    Check("`nostr_kind` is one of the policy's `bridge_kinds`", ErrorCode.POLICY_DENIED,
          lambda a: None if a.nostr_kind in a.ctx.policy.bridge_kinds
          else {"nostr_kind": a.nostr_kind, "outbox_id": a.outbox_id}),
    Check("no tag string and not the content holds a non-portable control character", ErrorCode.POLICY_DENIED,
          lambda a: None if not any(NOSTR_NONPORTABLE_CONTROLS.intersection(t) for t in a.texts)
          else {"nostr_kind": a.nostr_kind, "outbox_id": a.outbox_id}),
    NoOp("the outbox id holds this content hash: a retry",
         lambda a: a.old is not None and a.old.content_hash == a.digest),
    Check("the outbox id is not taken by other content", ErrorCode.IDEMPOTENCY_CONFLICT,
          lambda a: None if a.old is None
          else {"content_hash": a.digest, "existing_content_hash": a.old.content_hash, "outbox_id": a.outbox_id}),
)


def _enqueue(a: EnqueueCall) -> Ok:
    """Write the row: pending, no attempts, due at once (next_attempt_at = created_at)."""
    tx = Tx(a.db)
    tx.insert(BridgeOutbox(a.outbox_id, a.source, a.nostr_kind, a.canon, a.content, a.digest, "pending", 0,
                           a.ctx.now, None, None, (), a.ctx.now, a.ctx.now))
    return _ok(tx)


def outbox_content_hash(source: str, nostr_kind: int, tags_canonical: str, content: str) -> str:
    """The outbox dedupe key: the hash of canonical ``[source, nostr_kind, tags, content]`` (ADR-0003)."""
    return payload_hash(dumps_canonical([source, nostr_kind, parse_strict(tags_canonical), content]))


@dataclass(frozen=True)
class EnqueueCall(Call):
    outbox_id: str
    source: str
    nostr_kind: int
    tags_json: str
    content: str

    @cached_property
    def canon(self) -> str:
        return canonicalize(self.tags_json, "tags_json")

    @cached_property
    def tags(self) -> Any:
        return parse_strict(self.canon, "tags_json")

    @property
    def texts(self) -> list[str]:
        return [self.content, *(item for tag in self.tags for item in tag)]

    @cached_property
    def digest(self) -> str:
        return outbox_content_hash(self.source, self.nostr_kind, self.canon, self.content)

    @cached_property
    def old(self) -> BridgeOutbox | None:
        return self.db.find(BridgeOutbox, lambda r: r.outbox_id == self.outbox_id)


# --- mark_bridge_event_sent ------------------------------------------------------------------


@icontract.ensure(lambda db, outbox_id, nostr_event_id, relays, result:
                  rc.outbox_sent(db, outbox_id, nostr_event_id, relays, result),
                  "BRIDGE-1 BRIDGE-2 BRIDGE-3 (the row ends sent with this event id, along an edge of the table, "
                  "with every relay acknowledged so far)")
def mark_bridge_event_sent(db: DbState, ctx: CallContext, outbox_id: str, nostr_event_id: str,
                           relays: tuple[str, ...]) -> Outcome:
    """Record a published outbox row (sent, event id, relays); a repeat with the same id merges
    relays."""
    return run(MARK_BRIDGE_EVENT_SENT, _mark_sent, SentCall(db, ctx, outbox_id, nostr_event_id, relays))


MARK_BRIDGE_EVENT_SENT: tuple[Step[SentCall], ...] = (
    needs_scope("bridge.mark_sent"),
    valid_id("outbox_id"),
    Check("`nostr_event_id` is 64 lowercase hex", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if is_hash("sha256:" + a.nostr_event_id)
          else {"argument": "nostr_event_id", "message": "must be 64 lowercase hex"}),
    Check("each relay is 1-512 characters", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if all(r and len(r) <= 512 for r in a.relays)
          else {"argument": "relays", "message": "each relay must be 1-512 chars"}),
    Check("the outbox row exists", ErrorCode.BRIDGE_EVENT_MISSING,
          lambda a: None if a.old is not None else {"outbox_id": a.outbox_id}),
    Check("a sent row was sent with this event id", ErrorCode.BRIDGE_EVENT_CONFLICT,
          lambda a: None if a.row.status != "sent" or a.row.nostr_event_id == a.nostr_event_id
          else {"nostr_event_id": a.row.nostr_event_id, "requested_nostr_event_id": a.nostr_event_id,
                "outbox_id": a.outbox_id}),
    NoOp("the row is sent and already acknowledges every relay given",
         lambda a: a.row.status == "sent" and set(a.relays) <= set(a.row.relays_acked)),
)


def _mark_sent(a: SentCall) -> Ok:
    """Write the row sent with this event id; relays_acked = the relays given, merged with those a
    sent row already acknowledges (sorted, distinct)."""
    acked = set(a.relays) | (set(a.row.relays_acked) if a.row.status == "sent" else set())
    tx = Tx(a.db)
    tx.update(a.row, replace(a.row, status="sent", nostr_event_id=a.nostr_event_id,
                             relays_acked=tuple(sorted(acked)), updated_at=a.ctx.now))
    return _ok(tx)


@dataclass(frozen=True)
class SentCall(Call):
    outbox_id: str
    nostr_event_id: str
    relays: tuple[str, ...]

    @cached_property
    def old(self) -> BridgeOutbox | None:
        return self.db.find(BridgeOutbox, lambda r: r.outbox_id == self.outbox_id)

    @property
    def row(self) -> BridgeOutbox:
        """The row, once the check that it exists has passed."""
        assert self.old is not None
        return self.old


# --- record_bridge_failure -------------------------------------------------------------------


@icontract.ensure(lambda db, ctx, outbox_id, retry_after_ms, result: rc.outbox_failed(db, ctx, outbox_id,
                                                                                      retry_after_ms, result),
                  "BRIDGE-1 BRIDGE-2 BRIDGE-3 (attempts + 1; failed exactly at the maximum; next_attempt_at = now + "
                  "retry_after_ms; only pending rows change)")
def record_bridge_failure(db: DbState, ctx: CallContext, outbox_id: str, error: str,
                          retry_after_ms: int) -> Outcome:
    """Count a failed attempt on a pending row with its durable backoff; failed at the maximum
    attempts."""
    return run(RECORD_BRIDGE_FAILURE, _record_failure, FailureCall(db, ctx, outbox_id, error, retry_after_ms))


RECORD_BRIDGE_FAILURE: tuple[Step[FailureCall], ...] = (
    needs_scope("bridge.mark_sent"),
    valid_id("outbox_id"),
    Check("`error` is 1 to the policy's `max_error_text` characters", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.error and len(a.error) <= a.ctx.policy.max_error_text
          else {"argument": "error", "message": f"must be 1-{a.ctx.policy.max_error_text} characters"}),
    Check("`retry_after_ms` is at most the policy's `bridge_max_retry_after_ms`", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.retry_after_ms <= a.ctx.policy.bridge_max_retry_after_ms
          else {"argument": "retry_after_ms", "message": f"must be at most {a.ctx.policy.bridge_max_retry_after_ms}"}),
    Check("the outbox row exists", ErrorCode.BRIDGE_EVENT_MISSING,
          lambda a: None if a.old is not None else {"outbox_id": a.outbox_id}),
    NoOp("the row is sent or failed (only a pending row counts attempts)",
         lambda a: a.row.status != "pending"),
)


def _record_failure(a: FailureCall) -> Ok:
    """attempts + 1, last_error, next_attempt_at = now + retry_after_ms milliseconds (timestamps are µs: + 1000 x
    retry_after_ms); the row is failed (a dead letter) once attempts reach the policy's ``bridge_max_attempts``."""
    attempts = a.row.attempts + 1
    status = "failed" if attempts >= a.ctx.policy.bridge_max_attempts else "pending"
    tx = Tx(a.db)
    tx.update(a.row, replace(a.row, attempts=attempts, status=status,
                             next_attempt_at=a.ctx.now + 1000 * a.retry_after_ms,
                             last_error=a.error, updated_at=a.ctx.now))
    return _ok(tx)


@dataclass(frozen=True)
class FailureCall(Call):
    outbox_id: str
    error: str
    retry_after_ms: int

    @cached_property
    def old(self) -> BridgeOutbox | None:
        return self.db.find(BridgeOutbox, lambda r: r.outbox_id == self.outbox_id)

    @property
    def row(self) -> BridgeOutbox:
        """The row, once the check that it exists has passed."""
        assert self.old is not None
        return self.old


# --- publish_stream_signal -------------------------------------------------------------------


@icontract.ensure(lambda db, stream_id, result: rc.signal_only(db, stream_id, result),
                  "EVT-1 (a signal is one event row of the stream and changes no table)")
def publish_stream_signal(db: DbState, ctx: CallContext, stream_id: str, kind: str,
                          payload_json: str) -> Outcome:
    """Emit an ephemeral stream_signal row (event table: delivered, never stored)."""
    return run(PUBLISH_STREAM_SIGNAL, _signal, SignalCall(db, ctx, stream_id, kind, payload_json))


PUBLISH_STREAM_SIGNAL: tuple[Step[SignalCall], ...] = (
    needs_scope("sync.append"),
    needs_grant("stream_id"),
    valid_id("stream_id"),
    one_of("kind", SIGNAL_KINDS),
    canonical("payload_json"),
    fits_stream_class(),
)


def _signal(a: SignalCall) -> Ok:
    """Emit one stream_signal row (the caller, now, the canonical payload); no table changes."""
    tx = Tx(a.db)
    tx.insert(StreamSignal(a.stream_id, a.kind, a.canon, a.claims.identity, a.ctx.now))
    return _ok(tx)


@dataclass(frozen=True)
class SignalCall(Call):
    stream_id: str
    kind: str
    payload_json: str

    @cached_property
    def canon(self) -> str:
        return canonicalize(self.payload_json)

    @cached_property
    def size(self) -> int:
        return len(self.canon.encode("utf-8"))

    @property
    def limit(self) -> int:
        return self.ctx.policy.class_for(self.stream_id).max_payload_bytes


# --- reset_stream_epoch ----------------------------------------------------------------------


@icontract.ensure(lambda db, stream_id, result: rc.epoch_reset(db, stream_id, result),
                  "SEQ-1 SEQ-3 (epoch + 1 starting fresh (continues nothing), head kept, floor = head + 1, no retained "
                  "event of the stream)")
def reset_stream_epoch(db: DbState, ctx: CallContext, stream_id: str) -> Outcome:
    """Move an existing stream to a fresh epoch (continues nothing) and drop its retained events.

    An admin's tool: ``continues_epoch = 0``, so every client rebootstraps.  Retained events are
    dropped (floor = head + 1); seqs go on from the old head, so a (stream, seq) pair never names
    two events."""
    return run(RESET_STREAM_EPOCH, _reset, ResetCall(db, ctx, stream_id))


RESET_STREAM_EPOCH: tuple[Step[ResetCall], ...] = (
    needs_scope("sync.admin"),
    valid_id("stream_id"),
    Check("the stream exists", ErrorCode.INVALID_ARGUMENT,
          lambda a: None if a.stream is not None else {"argument": "stream_id", "message": "stream does not exist"}),
)


def _reset(a: ResetCall) -> Ok:
    """Delete the stream's retained events; epoch + 1 continuing nothing, floor = head + 1."""
    stream = a.stream
    assert stream is not None  # the existence check passed
    tx = Tx(a.db)
    for e in [e for e in a.db.of_type(SyncEvent) if e.stream_id == a.stream_id]:
        tx.delete(e)
    tx.update(stream, replace(stream, epoch=stream.epoch + 1, continues_epoch=0, continues_seq=0,
                              earlier_epochs=(), earlier_seqs=(), floor_seq=stream.head_seq + 1,
                              updated_at=a.ctx.now))
    return _ok(tx)


@dataclass(frozen=True)
class ResetCall(Call):
    stream_id: str

    @cached_property
    def stream(self) -> SyncStream | None:
        return self.db.find(SyncStream, lambda r: r.stream_id == self.stream_id)


# --- the entry point -------------------------------------------------------------------------

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

CHECKS: Mapping[str, tuple[Step[Any], ...]] = {
    "append_sync_event": APPEND_SYNC_EVENT,
    "ack_checkpoint": ACK_CHECKPOINT,
    "upsert_presence": UPSERT_PRESENCE,
    "publish_provider_capability": PUBLISH_PROVIDER_CAPABILITY,
    "open_compute_assignment": OPEN_COMPUTE_ASSIGNMENT,
    "update_compute_assignment": UPDATE_COMPUTE_ASSIGNMENT,
    "enqueue_bridge_event": ENQUEUE_BRIDGE_EVENT,
    "mark_bridge_event_sent": MARK_BRIDGE_EVENT_SENT,
    "record_bridge_failure": RECORD_BRIDGE_FAILURE,
    "publish_stream_signal": PUBLISH_STREAM_SIGNAL,
    "reset_stream_epoch": RESET_STREAM_EPOCH,
}
"""Each reducer's steps in order: what the reducer runs, and what the protocol doc's check-order
table and the tests read."""

EFFECTS: Mapping[str, Callable[[Any], Ok]] = {
    "append_sync_event": _append,
    "ack_checkpoint": _ack,
    "upsert_presence": _upsert_presence,
    "publish_provider_capability": _publish_provider,
    "open_compute_assignment": _open_assignment,
    "update_compute_assignment": _update_assignment,
    "enqueue_bridge_event": _enqueue,
    "mark_bridge_event_sent": _mark_sent,
    "record_bridge_failure": _record_failure,
    "publish_stream_signal": _signal,
    "reset_stream_epoch": _reset,
}
"""Each reducer's effect (its docstring is the doc's "then" line)."""

TERMS: Mapping[str, type[Call]] = {
    "append_sync_event": AppendCall,
    "ack_checkpoint": AckCall,
    "upsert_presence": PresenceCall,
    "publish_provider_capability": ProviderCall,
    "open_compute_assignment": OpenCall,
    "update_compute_assignment": UpdateCall,
    "enqueue_bridge_event": EnqueueCall,
    "mark_bridge_event_sent": SentCall,
    "record_bridge_failure": FailureCall,
    "publish_stream_signal": SignalCall,
    "reset_stream_epoch": ResetCall,
}
"""Each reducer's terms class (its fields after ``db, ctx`` are the reducer's arguments, in order)."""


@icontract.ensure(lambda db, result: isinstance(result, Err) or not result.noop or result.state == db,
                  "DELIV-4 (an accepted no-op leaves the state as it was; an Err carries no state at all)")
@icontract.ensure(lambda db, result: isinstance(result, Err) or result.noop or result.ret is None
                  or result.ret >= 1, "SEQ-4 (a write returns a seq, if anything)")
@icontract.ensure(lambda ctx, reducer, args, result: rc.authorized_first(ctx, reducer, args, result),
                  "AUTH-2 (missing_scope, then forbidden_stream, before any other check)")
@icontract.ensure(lambda db, ctx, result: not rc.state_violations(db, ctx, result),
                  "a committed call keeps every state invariant and every transition invariant",
                  error=lambda db, ctx, result: rc.violation_error(
                      "check_state/check_transition", rc.state_violations(db, ctx, result)),
                  enabled=contracts.WHOLE_STATE)
@icontract.ensure(lambda db, ctx, reducer, args, result: not rc.call_violations(db, ctx, reducer, args, result),
                  "spec.invariants.check_call holds",
                  error=lambda db, ctx, reducer, args, result: rc.violation_error(
                      "check_call", rc.call_violations(db, ctx, reducer, args, result)),
                  enabled=icontract.SLOW)
def call(db: DbState, ctx: CallContext, reducer: str, args: tuple[Any, ...]) -> Outcome:
    """Run one reducer call; the single entry point (argument types are checked here)."""
    rdef = REDUCER_BY_NAME.get(reducer)
    if rdef is None:
        return Err(SyncError(ErrorCode.NO_SUCH_REDUCER, {"reducer": reducer}))
    if len(args) != len(rdef.args):
        return Err(SyncError(ErrorCode.INVALID_ARGUMENT, {
            "argument": "*", "message": f"{reducer} takes {len(rdef.args)} arguments, got {len(args)}"}))
    for col, value in zip(rdef.args, args, strict=True):
        if not value_has_type(value, col.type):
            return Err(SyncError(ErrorCode.INVALID_ARGUMENT, {"argument": col.name, "message": "wrong type"}))
    try:
        return REDUCER_FUNCTIONS[reducer](db, ctx, *args)
    except SyncError as err:
        return Err(err)


# --- system transactions ---------------------------------------------------------------------


@icontract.ensure(lambda now, result: not check_sweep(result.state, now),
                  "PRES-2 (after a sweep at t no live row has expires_at <= t)")
@icontract.ensure(lambda result: len(rc.inserted(result, PresenceSignal)) == len(
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


@icontract.ensure(lambda db, result: rc.compacted(db, result),
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


def max_version(db: DbState) -> int:
    """The largest version any provider or assignment has, or a new one would get."""
    return max([db.version_floor, *(r.version for r in db.of_type(ProviderCapability)),
                *(r.version for r in db.of_type(ComputeAssignment))])


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

