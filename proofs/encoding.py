"""The database layer of the model in Z3: state, actions, and one relation per transition.

Every reducer of :mod:`spec.reducers` and every system transaction (sweep, disconnect,
compaction, unclean restart) is written here exactly once, as a relation
``T(pre, action, post, result, delta, policy)`` over :class:`Db` states.  The proofs
(:mod:`proofs.theorems`) and the correspondence tests (``tests/proofs``) use these same
functions: the tests check, on concrete states drawn by Hypothesis, that the relation accepts the
Python model's ``(pre, action, post)`` and no other ``post``.

Abstraction (what a :class:`Db` keeps of a :class:`spec.state.DbState`):

* strings (ids, keys, identities, payloads, hashes) become integers by interning; hashing is the
  uninterpreted function :data:`H` (the outbox dedupe key :data:`OUTBOX_HASH`) and canonicality the
  predicate :data:`CANON` -- the correspondence tests pin them to ``sha256`` (of the canonical
  ``[source, kind, tags, content]`` for the outbox) and ``spec.canonical.is_canonical`` on the
  values they use;
* keyed tables are fixed slots, one per key (``KEY-1`` holds by construction): ``S`` streams,
  ``C x S`` checkpoints (client x stream), ``N`` presence sessions, providers, assignments and
  outbox rows;
* a stream's retained events are a bounded list of at most ``K`` rows *in table order* (the
  model inserts in seq order and deletes prefixes, so table order is seq order);
* columns no decision reads and no invariant names are dropped: timestamps other than
  ``committed_at``/``last_seen``/``expires_at``/``updated_at`` and the outbox's
  ``next_attempt_at``/``created_at``, ``stream_class``, ``producer``, ``tx_offset`` (the outbox keeps
  every column: BRIDGE-3 names its source, kind, tags, content and backoff);
* argument validation that needs strings (id syntax, JSON canonicalization, payload sizes,
  hash formats) is one action field ``arg_err``: 0, or the code of the first failing check.  The
  checks that depend on modelled values (enumerations, TTL range, the edge table, hash
  comparison, every state check) are encoded.  Calls are assumed well typed (``spec.reducers.call``
  rejects ill-typed arguments before any check the model encodes).

A relation is total on states within the bounds: a step whose result would not fit (an append
to a stream already holding ``K`` events) has no successor, so every proof is over states with at
most ``K`` retained events per stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import z3

from proofs.core import (
    OK_CODE,
    Record,
    ZBool,
    ZInt,
    code,
    first_error,
    fresh,
    fresh_rows,
    in_range,
    ite,
    one_of,
    same,
    zmax,
)
from spec.errors import ErrorCode
from spec.transitions import (
    ASSIGNMENT_ROLES,
    ASSIGNMENT_STATUSES,
    ASSIGNMENT_TERMINAL,
    ASSIGNMENT_TRANSITIONS,
    BRIDGE_STATUSES,
    PRESENCE_OFFLINE_REASONS,
    PRESENCE_STATUSES,
    PROVIDER_STATUSES,
)

# --- bounds -----------------------------------------------------------------------------------------

S = 2
"""Streams (slots of ``sync_stream``)."""
K = 5
"""Retained events per stream."""
C = 2
"""Checkpoint clients (``sync_checkpoint`` has C x S slots, keyed client|stream)."""
N = 2
"""Rows of each other keyed table: presence sessions, providers, assignments, outbox rows."""

BOUNDS = {"S": S, "K": K, "C": C, "N": N}

# --- enumerations (indices into the spec's tables) ------------------------------------------------------

P_STATUS = {name: i for i, name in enumerate(PRESENCE_STATUSES)}
P_OFFLINE = P_STATUS["offline"]
P_REASON = {name: i + 1 for i, name in enumerate(PRESENCE_OFFLINE_REASONS)}  # 0: no reason
A_STATUS = {name: i for i, name in enumerate(ASSIGNMENT_STATUSES)}
A_TERMINAL = tuple(A_STATUS[s] for s in sorted(ASSIGNMENT_TERMINAL))
B_STATUS = {name: i for i, name in enumerate(BRIDGE_STATUSES)}
PROV_STATUS = {name: i for i, name in enumerate(PROVIDER_STATUSES)}
INVALID_ENUM = -1
"""The interned value of a status string that is not in its enumeration."""
RELAYS_NONE = 0
"""The interned value of the empty relay list (a fresh outbox row)."""

MS = code(ErrorCode.MISSING_SCOPE)
FS = code(ErrorCode.FORBIDDEN_STREAM)
FORBIDDEN = code(ErrorCode.FORBIDDEN)
IA = code(ErrorCode.INVALID_ARGUMENT)

ARG_ERRORS: dict[str, tuple[int, ...]] = {
    "append": (code(ErrorCode.INVALID_ARGUMENT), code(ErrorCode.NON_CANONICAL_PAYLOAD),
               code(ErrorCode.PAYLOAD_TOO_LARGE)),
    "ack": (IA,),
    "presence": (IA,),
    "provider": (IA, code(ErrorCode.NON_CANONICAL_PAYLOAD)),
    "open": (IA, code(ErrorCode.NON_CANONICAL_PAYLOAD)),
    "update": (IA,),
    "enqueue": (IA, code(ErrorCode.NON_CANONICAL_PAYLOAD), code(ErrorCode.POLICY_DENIED)),
    "mark_sent": (IA,),
    "failure": (IA,),
    "signal": (IA, code(ErrorCode.NON_CANONICAL_PAYLOAD), code(ErrorCode.PAYLOAD_TOO_LARGE)),
    "reset": (IA,),
}
"""The argument-validation codes each reducer can produce before its state checks."""

# --- uninterpreted functions ------------------------------------------------------------------------------

H = z3.Function("H", z3.IntSort(), z3.IntSort())
"""payload -> hash (sha256 of the canonical text, interned)."""
CANON = z3.Function("Canon", z3.IntSort(), z3.BoolSort())
"""payload -> is it canonical JSON."""
ADVERTISES = z3.Function("Advertises", z3.IntSort(), z3.IntSort(), z3.BoolSort())
"""(interned nip90_kinds list, job kind) -> does the list contain the kind."""
MERGE = z3.Function("Merge", z3.IntSort(), z3.IntSort(), z3.IntSort())
"""(interned relay list, interned relay list) -> the interned sorted union (relays_acked merging)."""
OUTBOX_HASH = z3.Function("OutboxHash", z3.IntSort(), z3.IntSort(), z3.IntSort(), z3.IntSort(), z3.IntSort())
"""(source, nostr_kind, canonical tags, content) -> the outbox dedupe key, the hash of canonical
``[source, nostr_kind, tags, content]`` (``spec.reducers.outbox_content_hash``), interned."""
SOURCE_LEFT_OUT = -1
"""The source argument of :data:`OUTBOX_HASH` in the planted bug ``source_not_in_dedupe_hash`` (a
hash of ``[nostr_kind, tags, content]``: the same for every source; no interned string is -1)."""
US_PER_MS = 1000
"""Timestamps are microseconds; ``retry_after_ms`` and ``ttl_ms`` are milliseconds."""

# --- rows -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream(Record):
    exists: ZBool
    epoch: ZInt
    head: ZInt
    floor: ZInt
    budget: ZInt
    cont_epoch: ZInt  # continues_epoch (0: the epoch started fresh)
    cont_seq: ZInt  # continues_seq


@dataclass(frozen=True)
class Event(Record):
    seq: ZInt
    key: ZInt
    hash: ZInt
    payload: ZInt
    epoch: ZInt
    at: ZInt  # committed_at


@dataclass(frozen=True)
class Events:
    """One stream's retained events: ``slots[:n]`` in table order."""

    n: ZInt
    slots: tuple[Event, ...]


@dataclass(frozen=True)
class Checkpoint(Record):
    used: ZBool
    owner: ZInt
    epoch: ZInt
    last: ZInt


@dataclass(frozen=True)
class Presence(Record):
    used: ZBool
    identity: ZInt
    device: ZInt
    node: ZInt
    status: ZInt
    region: ZInt
    last_seen: ZInt
    expires: ZInt
    reason: ZInt  # 0 = None, else P_REASON


@dataclass(frozen=True)
class Provider(Record):
    used: ZBool
    owner: ZInt
    cap: ZInt
    hash: ZInt
    kinds: ZInt  # the sorted, deduplicated kind list, interned
    price: ZInt
    status: ZInt
    version: ZInt


@dataclass(frozen=True)
class Assignment(Record):
    GUARDS: ClassVar[dict[str, str]] = {"provider": "has_provider", "owner": "has_owner", "result": "has_result"}
    used: ZBool
    requester: ZInt
    job_kind: ZInt
    request: ZInt
    hash: ZInt
    has_provider: ZBool
    provider: ZInt
    has_owner: ZBool
    owner: ZInt  # provider_owner
    status: ZInt
    has_result: ZBool
    result: ZInt
    version: ZInt
    updated: ZInt  # updated_at (retention)


@dataclass(frozen=True)
class Outbox(Record):
    """A ``bridge_outbox`` row, every column (in the model's order)."""

    GUARDS: ClassVar[dict[str, str]] = {"event_id": "has_event_id", "error": "has_error"}
    used: ZBool
    source: ZInt
    kind: ZInt  # nostr_kind
    tags: ZInt  # the canonical tags text, interned
    content: ZInt
    content_hash: ZInt
    status: ZInt
    attempts: ZInt
    next_at: ZInt  # next_attempt_at
    has_error: ZBool
    error: ZInt  # last_error
    has_event_id: ZBool
    event_id: ZInt  # nostr_event_id
    relays: ZInt  # relays_acked, interned (RELAYS_NONE: empty)
    created: ZInt  # created_at
    updated: ZInt  # updated_at (retention)


def ckpt_index(client: int, stream: int) -> int:
    return client * S + stream


@dataclass(frozen=True)
class Db:
    streams: tuple[Stream, ...]
    events: tuple[Events, ...]
    epoch_floor: ZInt
    ckpts: tuple[Checkpoint, ...]
    presence: tuple[Presence, ...]
    providers: tuple[Provider, ...]
    assignments: tuple[Assignment, ...]
    outbox: tuple[Outbox, ...]
    evt_rows: ZInt  # rows held in event tables (EVT-1: always 0)
    version_floor: ZInt  # the version a new provider or assignment starts at

    @staticmethod
    def fresh(p: str) -> Db:
        return Db(
            streams=fresh_rows(Stream, f"{p}.stream", S),
            events=tuple(Events(z3.Int(f"{p}.ev{j}.n"), fresh_rows(Event, f"{p}.ev{j}.", K)) for j in range(S)),
            epoch_floor=z3.Int(f"{p}.epoch_floor"),
            ckpts=fresh_rows(Checkpoint, f"{p}.ckpt", C * S),
            presence=fresh_rows(Presence, f"{p}.presence", N),
            providers=fresh_rows(Provider, f"{p}.provider", N),
            assignments=fresh_rows(Assignment, f"{p}.assignment", N),
            outbox=fresh_rows(Outbox, f"{p}.outbox", N),
            evt_rows=z3.Int(f"{p}.evt_rows"),
            version_floor=z3.Int(f"{p}.version_floor"),
        )


def same_stream(a: Stream, b: Stream) -> ZBool:
    return same(a, b, used="exists")


def same_event(a: Event, b: Event) -> ZBool:
    return same(a, b, used=None)


def same_events(a: Events, b: Events) -> ZBool:
    return z3.And(a.n == b.n, *[z3.Implies(i < a.n, same_event(x, y)) for i, (x, y) in enumerate(
        zip(a.slots, b.slots, strict=True))])


def db_parts(a: Db, b: Db) -> dict[str, ZBool]:
    """Named equalities of the components of two states (used for frames)."""
    parts: dict[str, ZBool] = {"epoch_floor": a.epoch_floor == b.epoch_floor, "evt_rows": a.evt_rows == b.evt_rows,
                               "version_floor": a.version_floor == b.version_floor}
    for j in range(S):
        parts[f"stream{j}"] = same_stream(a.streams[j], b.streams[j])
        parts[f"events{j}"] = same_events(a.events[j], b.events[j])
    for name, xs, ys in (("ckpt", a.ckpts, b.ckpts), ("presence", a.presence, b.presence),
                         ("provider", a.providers, b.providers), ("assignment", a.assignments, b.assignments),
                         ("outbox", a.outbox, b.outbox)):
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            parts[f"{name}{i}"] = same(x, y)
    return parts


def same_db(a: Db, b: Db) -> ZBool:
    return z3.And(list(db_parts(a, b).values()))


def frame(pre: Db, post: Db, touched: set[str]) -> ZBool:
    """Every component not named in ``touched`` is unchanged."""
    parts = db_parts(pre, post)
    unknown = touched - set(parts)
    if unknown:
        raise KeyError(f"no such state component: {sorted(unknown)}")
    return z3.And([eq for name, eq in parts.items() if name not in touched])


def vepoch(db: Db, j: int) -> ZInt:
    """``spec.reducers.virtual_stream``: the epoch of stream j (``epoch_floor`` when absent)."""
    return z3.If(db.streams[j].exists, db.streams[j].epoch, db.epoch_floor)


def vhead(db: Db, j: int) -> ZInt:
    return z3.If(db.streams[j].exists, db.streams[j].head, 0)


def vfloor(db: Db, j: int) -> ZInt:
    return z3.If(db.streams[j].exists, db.streams[j].floor, 1)


def max_version(db: Db) -> ZInt:
    """The largest version any provider or assignment has, or a new one would get."""
    rows: list[Provider | Assignment] = [*db.providers, *db.assignments]
    return zmax([db.version_floor, *[z3.If(x.used, x.version, db.version_floor) for x in rows]])


def max_epoch(db: Db) -> ZInt:
    """M(db): the largest epoch any stream has or a new stream would get."""
    return zmax([db.epoch_floor, *[vepoch(db, j) for j in range(S)]])


# --- results and deltas -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result(Record):
    GUARDS: ClassVar[dict[str, str]] = {"ret": "has_ret"}
    code: ZInt  # OK_CODE or an error code
    has_ret: ZBool
    ret: ZInt
    wrote: ZBool  # the transaction's delta is not empty (it takes an offset)


@dataclass(frozen=True)
class Delta:
    """What a transaction wrote that delivery and the signal invariants look at."""

    ins: ZBool  # a sync_event row was inserted (only append inserts one)
    ins_stream: ZInt
    ins_ev: Event
    dels: tuple[ZInt, ...]  # per stream: sync_event rows deleted (always a prefix of its list)
    psig: tuple[ZInt, ...]  # per session: presence_signal rows emitted
    psig_status: tuple[ZInt, ...]
    ssig: ZInt  # stream_signal rows emitted

    @staticmethod
    def fresh(p: str) -> Delta:
        return Delta(z3.Bool(f"{p}.ins"), z3.Int(f"{p}.ins_stream"), fresh(Event, f"{p}.ins_ev"),
                     tuple(z3.Int(f"{p}.dels{j}") for j in range(S)),
                     tuple(z3.Int(f"{p}.psig{i}") for i in range(N)),
                     tuple(z3.Int(f"{p}.psig_status{i}") for i in range(N)), z3.Int(f"{p}.ssig"))


def same_delta(a: Delta, b: Delta) -> ZBool:
    return z3.And(a.ins == b.ins, z3.Implies(a.ins, z3.And(a.ins_stream == b.ins_stream,
                                                           same_event(a.ins_ev, b.ins_ev))),
                  *[x == y for x, y in zip(a.dels, b.dels, strict=True)],
                  *[z3.And(x == y, z3.Implies(x > 0, u == v)) for x, y, u, v in zip(
                      a.psig, b.psig, a.psig_status, b.psig_status, strict=True)],
                  a.ssig == b.ssig)


def delta(d: Delta, *, ins: tuple[int, Event] | None = None, dels: dict[int, ZInt] | None = None,
          psig: dict[int, tuple[ZInt, ZInt]] | None = None, ssig: ZInt = 0) -> ZBool:
    """``d`` is exactly the given writes (everything not given is empty)."""
    parts: list[ZBool] = []
    if ins is None:
        parts.append(z3.Not(d.ins))
    else:
        parts += [d.ins, d.ins_stream == ins[0], same_event(d.ins_ev, ins[1])]
    parts += [d.dels[j] == (dels or {}).get(j, 0) for j in range(S)]
    for i in range(N):
        count, status = (psig or {}).get(i, (0, 0))
        parts += [d.psig[i] == count, z3.Implies(count > 0, d.psig_status[i] == status)]
    parts.append(d.ssig == ssig)
    return z3.And(parts)


def no_delta(d: Delta) -> ZBool:
    return delta(d)


# --- policy -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy(Record):
    """The server policy knobs the transitions read (one value for the whole run)."""

    max_attempts: ZInt  # bridge_max_attempts
    min_ttl: ZInt  # presence_min_ttl_ms
    max_ttl: ZInt


def policy_ok(p: Policy) -> ZBool:
    """What a deployment's policy must satisfy for the invariants to hold."""
    return z3.And(p.max_attempts >= 1, p.min_ttl >= 0, p.min_ttl <= p.max_ttl)


# --- actions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendAct(Record):
    GUARDS: ClassVar[dict[str, str]] = {"hash_arg": "has_hash_arg", "expected": "has_expected"}
    stream: ZInt
    caller: ZInt
    scope: ZBool  # sync.append
    granted: ZBool  # the stream is granted
    arg_err: ZInt
    key: ZInt
    canon: ZInt  # the canonical payload
    has_hash_arg: ZBool
    hash_arg: ZInt
    has_expected: ZBool
    expected: ZInt
    now: ZInt
    budget: ZInt  # the stream class's replay budget


@dataclass(frozen=True)
class AckAct(Record):
    client: ZInt
    stream: ZInt
    caller: ZInt
    scope: ZBool  # sync.checkpoint.write
    granted: ZBool
    arg_err: ZInt
    epoch: ZInt
    seq: ZInt


@dataclass(frozen=True)
class PresenceAct(Record):
    session: ZInt
    caller: ZInt
    scope: ZBool  # presence.write
    claims_ok: ZBool  # the token's session/device claims (if any) match the arguments
    arg_err: ZInt  # id and region syntax
    device: ZInt
    node: ZInt
    status: ZInt
    region: ZInt
    ttl: ZInt
    now: ZInt


@dataclass(frozen=True)
class SweepAct(Record):
    now: ZInt


@dataclass(frozen=True)
class DisconnectAct:
    now: ZInt
    identity: ZInt
    sessions: tuple[ZBool, ...]  # per session slot: is it in the closed connection's set

    @staticmethod
    def fresh(p: str) -> DisconnectAct:
        return DisconnectAct(z3.Int(f"{p}.now"), z3.Int(f"{p}.identity"),
                             tuple(z3.Bool(f"{p}.session{i}") for i in range(N)))


@dataclass(frozen=True)
class ProviderAct(Record):
    provider: ZInt
    caller: ZInt
    scope: ZBool  # provider.publish
    arg_err: ZInt
    canon: ZInt
    kinds: ZInt
    price: ZInt
    status: ZInt


@dataclass(frozen=True)
class OpenAct(Record):
    request: ZInt
    caller: ZInt
    scope: ZBool  # compute.request
    arg_err: ZInt
    job_kind: ZInt
    canon: ZInt
    now: ZInt


@dataclass(frozen=True)
class UpdateAct(Record):
    GUARDS: ClassVar[dict[str, str]] = {"provider": "has_provider", "prov_slot": "has_provider",
                                        "result": "has_result"}
    request: ZInt
    caller: ZInt
    s_request: ZBool  # compute.request
    s_assign: ZBool  # compute.assign
    s_execute: ZBool  # compute.execute
    arg_err: ZInt  # request id and provider id syntax
    expected: ZInt
    status: ZInt
    has_provider: ZBool
    provider: ZInt
    prov_slot: ZInt  # the provider table slot provider_id names (-1: none of the pooled ids)
    has_result: ZBool
    result: ZInt  # the canonical result
    result_err: ZInt  # 0, or non_canonical_payload for the result
    now: ZInt


@dataclass(frozen=True)
class EnqueueAct(Record):
    outbox: ZInt
    scope: ZBool  # bridge.enqueue
    arg_err: ZInt  # id syntax, tags canonical and an array of string arrays, kind allowed, no control chars
    source: ZInt
    kind: ZInt
    tags: ZInt  # the canonical tags text (the call's tags_json canonicalized)
    content: ZInt
    now: ZInt


@dataclass(frozen=True)
class MarkSentAct(Record):
    outbox: ZInt
    scope: ZBool  # bridge.mark_sent
    arg_err: ZInt
    event_id: ZInt
    relays: ZInt  # the sorted, deduplicated relay list, interned
    now: ZInt


@dataclass(frozen=True)
class FailureAct(Record):
    outbox: ZInt
    scope: ZBool  # bridge.mark_sent
    arg_err: ZInt  # id syntax, error length, retry_after_ms at most the policy's maximum
    error: ZInt
    retry: ZInt  # retry_after_ms
    now: ZInt


@dataclass(frozen=True)
class SignalAct(Record):
    stream: ZInt
    scope: ZBool  # sync.append
    granted: ZBool
    arg_err: ZInt


@dataclass(frozen=True)
class ResetAct(Record):
    stream: ZInt
    scope: ZBool  # sync.admin
    arg_err: ZInt


@dataclass(frozen=True)
class Retention(Record):
    GUARDS: ClassVar[dict[str, str]] = {"count": "has_count", "age": "has_age"}
    has_count: ZBool
    count: ZInt
    has_age: ZBool
    age: ZInt


@dataclass(frozen=True)
class Windows(Record):
    """The retention windows of the other tables (``Policy.retain_*``); ``has_*`` False: kept for ever."""

    GUARDS: ClassVar[dict[str, str]] = {"presence": "has_presence", "assignment": "has_assignment",
                                        "sent": "has_sent", "failed": "has_failed"}
    has_presence: ZBool
    presence: ZInt
    has_assignment: ZBool
    assignment: ZInt
    has_sent: ZBool
    sent: ZInt
    has_failed: ZBool
    failed: ZInt


@dataclass(frozen=True)
class CompactAct:
    now: ZInt
    retention: tuple[Retention, ...]  # per stream: its class's retention
    windows: Windows

    @staticmethod
    def fresh(p: str) -> CompactAct:
        return CompactAct(z3.Int(f"{p}.now"), fresh_rows(Retention, f"{p}.retention", S), fresh(Windows, f"{p}.win"))


@dataclass(frozen=True)
class RestartAct(Record):
    undurable: ZInt  # max_undurable


# --- helpers over states ------------------------------------------------------------------------------------


def fail(pre: Db, post: Db, r: Result, d: Delta, err: ZInt) -> ZBool:
    """A failed (or no-op) call: nothing changes, nothing is emitted."""
    return z3.And(r.code == err, z3.Not(r.wrote), same_db(pre, post), no_delta(d))


def appended(ev: Events, new: Event, post: Events) -> ZBool:
    parts = [post.n == ev.n + 1, ev.n < K]
    for i in range(K):
        parts.append(z3.Implies(i < ev.n, same_event(post.slots[i], ev.slots[i])))
        parts.append(z3.Implies(i == ev.n, same_event(post.slots[i], new)))
    return z3.And(parts)


def dropped_prefix(ev: Events, c: ZInt, post: Events) -> ZBool:
    """``post`` is ``ev`` without its first ``c`` events."""
    parts = [post.n == ev.n - c]
    for k in range(K + 1):
        parts.append(z3.Implies(c == k, z3.And([z3.Implies(i < ev.n - k, same_event(post.slots[i], ev.slots[i + k]))
                                                 for i in range(K - k)])))
    return z3.And(parts)


def pick(xs: tuple[ZInt, ...] | list[ZInt], i: ZInt) -> ZInt:
    out = xs[-1]
    for j in range(len(xs) - 2, -1, -1):
        out = z3.If(i == j, xs[j], out)
    return out


def per_slot(index: ZInt, count: int, body: Callable[[int], ZBool]) -> ZBool:
    """``0 <= index < count`` and ``body(j)`` for the slot ``j == index``."""
    return z3.And(in_range(index, 0, count), *[z3.Implies(index == j, body(j)) for j in range(count)])


def arg_err_ok(reducer: str, err: ZInt) -> ZBool:
    return one_of(err, (OK_CODE, *ARG_ERRORS[reducer]))


# --- reducers -----------------------------------------------------------------------------------------------


def t_append(pre: Db, a: AppendAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``append_sync_event``: auth, arguments, hash check, dedupe (before the sequence check), seq."""

    def at(j: int) -> ZBool:
        st, ev = pre.streams[j], pre.events[j]
        digest = H(a.canon)
        found = [z3.And(i < ev.n, ev.slots[i].key == a.key) for i in range(K)]
        any_found = z3.Or(found)
        ex_seq: ZInt = z3.IntVal(0)
        ex_hash: ZInt = z3.IntVal(0)
        for i in range(K - 1, -1, -1):  # the first match in table order (db.find)
            ex_seq = z3.If(found[i], ev.slots[i].seq, ex_seq)
            ex_hash = z3.If(found[i], ev.slots[i].hash, ex_hash)
        head = vhead(pre, j)
        seq_conflict = z3.And(a.has_expected, a.expected != head + 1)
        if bug != "sequence_before_dedupe":
            seq_conflict = z3.And(z3.Not(any_found), seq_conflict)  # a dedupe success returns first
        checks = [
            (z3.Not(a.scope), MS),
            (z3.Not(a.granted), FS),
            (a.arg_err != OK_CODE, a.arg_err),
            (z3.And(a.has_hash_arg, a.hash_arg != digest), code(ErrorCode.PAYLOAD_HASH_MISMATCH)),
            (z3.And(any_found, ex_hash != digest), code(ErrorCode.IDEMPOTENCY_CONFLICT)),
            (seq_conflict, code(ErrorCode.SEQUENCE_CONFLICT)),
        ]
        stored_hash = digest
        if bug == "sequence_before_dedupe":
            checks = [*checks[:4], checks[5], checks[4]]
        elif bug == "dedupe_without_hash_compare":
            checks = [*checks[:4], checks[5]]
        elif bug == "hash_arg_trusted":
            checks = [*checks[:3], *checks[4:]]
            stored_hash = z3.If(a.has_hash_arg, a.hash_arg, digest)
        elif bug == "scope_not_checked":
            checks = checks[1:]
        err = first_error(checks)
        seq = head + (2 if bug == "seq_head_plus_2" else 1)
        epoch = z3.If(st.exists, st.epoch, pre.epoch_floor)
        new_stream = Stream(True, epoch, seq, z3.If(z3.And(st.exists, st.floor <= st.head), st.floor, seq),
                            z3.If(st.exists, st.budget, a.budget), z3.If(st.exists, st.cont_epoch, 0),
                            z3.If(st.exists, st.cont_seq, 0))
        new_ev = Event(seq, a.key, stored_hash, a.canon, epoch, a.now)
        write = z3.And(err == OK_CODE, z3.Not(any_found))
        failed = z3.And(fail(pre, post, r, d, err), z3.Not(r.has_ret))
        if bug == "stream_created_before_sequence_check":  # the stream row survives a sequence_conflict
            created = Stream(True, pre.epoch_floor, 0, 1, a.budget, 0, 0)
            failed = z3.If(z3.And(err == code(ErrorCode.SEQUENCE_CONFLICT), z3.Not(st.exists)), z3.And(
                r.code == err, z3.Not(r.wrote), z3.Not(r.has_ret), same_stream(post.streams[j], created),
                frame(pre, post, {f"stream{j}"}), no_delta(d)), failed)
        written = z3.And(r.code == OK_CODE, r.has_ret, r.ret == seq, r.wrote,
                         same_stream(post.streams[j], new_stream), appended(ev, new_ev, post.events[j]),
                         frame(pre, post, {f"stream{j}", f"events{j}"}), delta(d, ins=(j, new_ev)))
        if bug == "append_write_lost":  # acknowledged with its seq, never written
            written = z3.And(r.code == OK_CODE, r.has_ret, r.ret == seq, z3.Not(r.wrote), same_db(pre, post),
                             no_delta(d))
        return z3.If(
            z3.And(err == OK_CODE, any_found),
            z3.And(r.code == OK_CODE, r.has_ret, r.ret == ex_seq, z3.Not(r.wrote), same_db(pre, post),
                   no_delta(d)),
            z3.If(write, written, failed))

    return z3.And(arg_err_ok("append", a.arg_err), z3.Implies(a.arg_err == OK_CODE, CANON(a.canon)),
                  per_slot(a.stream, S, at))


def t_ack(pre: Db, a: AckAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``ack_checkpoint``: owner-bound, same epoch, not past head; stores max(old, seq)."""

    def at(c: int, j: int) -> ZBool:
        k = ckpt_index(c, j)
        old = pre.ckpts[k]
        err = first_error([
            (z3.Not(a.scope), MS),
            (z3.Not(a.granted), FS),
            (z3.And(old.used, old.owner != a.caller), FORBIDDEN),
            (a.arg_err != OK_CODE, a.arg_err),
            (a.epoch != vepoch(pre, j), code(ErrorCode.STALE_EPOCH)),
            (a.seq > vhead(pre, j) + (1 if bug == "ack_past_head" else 0), code(ErrorCode.CHECKPOINT_AHEAD_OF_HEAD)),
        ])
        noop = z3.And(old.used, old.epoch == a.epoch,
                      old.last == a.seq if bug == "non_monotonic_ack" else old.last >= a.seq)
        if bug == "ack_not_recorded":
            noop = z3.BoolVal(True)
        new = Checkpoint(True, a.caller, a.epoch, a.seq)
        return z3.And(z3.Not(r.has_ret), z3.If(
            z3.And(err == OK_CODE, z3.Not(noop)),
            z3.And(r.code == OK_CODE, r.wrote, same(post.ckpts[k], new), frame(pre, post, {f"ckpt{k}"}),
                   no_delta(d)),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("ack", a.arg_err), a.seq >= 0, a.epoch >= 0,
                  per_slot(a.client, C, lambda c: per_slot(a.stream, S, lambda j: at(c, j))))


def t_presence(pre: Db, a: PresenceAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``upsert_presence``: owner-bound; a signal on insert or status change."""

    def at(i: int) -> ZBool:
        old = pre.presence[i]
        status_ok = one_of(a.status, P_STATUS.values())
        ttl_ok = z3.And(pol.min_ttl <= a.ttl, a.ttl <= pol.max_ttl)
        err = first_error([
            (z3.Not(a.scope), MS),
            (z3.And(old.used, old.identity != a.caller), FORBIDDEN),
            (z3.Not(a.claims_ok), FORBIDDEN),
            (z3.Or(a.arg_err != OK_CODE, z3.Not(status_ok), z3.Not(ttl_ok)), IA),
        ])
        reason = z3.If(a.status == P_OFFLINE, P_REASON["explicit_offline"], 0)
        if bug == "offline_reason_not_set":
            reason = 0
        new = Presence(True, a.caller, a.device, a.node, a.status, a.region, a.now, a.now + a.ttl * 1000, reason)
        signal = z3.Or(z3.Not(old.used), old.status != a.status)
        changed = z3.Not(same(old, new))
        if bug == "upsert_not_recorded":  # an upsert over an existing row is accepted and writes nothing
            new = ite(old.used, old, new)
            signal, changed = z3.And(z3.Not(old.used), signal), z3.And(z3.Not(old.used), changed)
        return z3.And(z3.Not(r.has_ret), z3.If(
            err == OK_CODE,
            z3.And(r.code == OK_CODE, r.wrote == changed, same(post.presence[i], new),
                   frame(pre, post, {f"presence{i}"} | ({"evt_rows"} if bug == "event_rows_persisted" else set())),
                   post.evt_rows == pre.evt_rows + (z3.If(signal, 1, 0) if bug == "event_rows_persisted" else 0),
                   delta(d, psig={i: (z3.If(signal, 1, 0), a.status)})),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("presence", a.arg_err), a.ttl >= 0, per_slot(a.session, N, at))


def _offline_all(pre: Db, post: Db, r: Result, d: Delta, hit: Callable[[int, Presence], ZBool],
                 offline: Callable[[Presence], tuple[ZInt, ZInt]]) -> ZBool:
    """Every used row ``hit`` selects goes offline; ``offline(row)`` is its (reason, last_seen)."""
    parts: list[ZBool] = [r.code == OK_CODE, z3.Not(r.has_ret)]
    hits = []
    for i in range(N):
        row = pre.presence[i]
        h = z3.And(row.used, hit(i, row))
        hits.append(h)
        reason, last_seen = offline(row)
        new = Presence(True, row.identity, row.device, row.node, P_OFFLINE, row.region, last_seen, row.expires,
                       reason)
        parts.append(z3.If(h, same(post.presence[i], new), same(post.presence[i], row)))
    parts.append(frame(pre, post, {f"presence{i}" for i in range(N)}))
    parts.append(delta(d, psig={i: (z3.If(hits[i], 1, 0), P_OFFLINE) for i in range(N)}))
    parts.append(r.wrote == z3.Or(hits))
    return z3.And(parts)


def t_sweep(pre: Db, a: SweepAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``presence_sweep``: live rows whose TTL passed go offline (ttl_expired)."""
    def expired(row: Presence) -> ZBool:
        return row.expires < a.now if bug == "sweep_strict_expiry" else row.expires <= a.now

    return _offline_all(pre, post, r, d, lambda i, row: z3.And(row.status != P_OFFLINE, expired(row)),
                        lambda row: (z3.IntVal(P_REASON["ttl_expired"]), row.last_seen))


def t_disconnect(pre: Db, a: DisconnectAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``disconnect_sessions``: the closed connection's live sessions go offline: ``disconnected``
    with last_seen = now; or, when the TTL already ran out (the sweep had not run yet), exactly what
    the sweep would have done: ``ttl_expired``, last_seen kept."""
    def offline(row: Presence) -> tuple[ZInt, ZInt]:
        if bug == "disconnect_ignores_expiry":
            return z3.IntVal(P_REASON["disconnected"]), a.now
        expired = row.expires <= a.now
        return (z3.If(expired, P_REASON["ttl_expired"], P_REASON["disconnected"]),
                z3.If(expired, row.last_seen, a.now))

    return _offline_all(
        pre, post, r, d,
        lambda i, row: z3.And(a.sessions[i], row.identity == a.identity, row.status != P_OFFLINE), offline)


def t_provider(pre: Db, a: ProviderAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``publish_provider_capability``: owner-bound; same content is a no-op, else version + 1."""

    def at(i: int) -> ZBool:
        old = pre.providers[i]
        digest = H(a.canon)
        err = first_error([
            (z3.Not(a.scope), MS),
            (z3.And(old.used, old.owner != a.caller), FORBIDDEN),
            (z3.Or(a.arg_err != OK_CODE, z3.Not(one_of(a.status, PROV_STATUS.values()))),
             z3.If(a.arg_err != OK_CODE, a.arg_err, IA)),
        ])
        noop = z3.And(old.used, old.hash == digest, old.kinds == a.kinds, old.price == a.price,
                      old.status == a.status, bug != "republish_bumps_version")
        if bug == "republish_change_dropped":
            noop = old.used
        new = Provider(True, a.caller, a.canon, digest, a.kinds, a.price, a.status,
                       z3.If(old.used, old.version + 1, pre.version_floor))
        return z3.And(z3.Not(r.has_ret), z3.If(
            z3.And(err == OK_CODE, z3.Not(noop)),
            z3.And(r.code == OK_CODE, r.wrote, same(post.providers[i], new), frame(pre, post, {f"provider{i}"}),
                   no_delta(d)),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("provider", a.arg_err), z3.Implies(a.arg_err == OK_CODE, CANON(a.canon)),
                  per_slot(a.provider, N, at))


def t_open(pre: Db, a: OpenAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``open_compute_assignment``: same request is a no-op; a different one a conflict."""

    def at(i: int) -> ZBool:
        old = pre.assignments[i]
        digest = H(a.canon)
        err = first_error([
            (z3.Not(a.scope), MS),
            (z3.And(old.used, old.requester != a.caller), FORBIDDEN),
            (a.arg_err != OK_CODE, a.arg_err),
            (z3.And(old.used, z3.Not(z3.And(old.hash == digest, old.job_kind == a.job_kind)),
                    bug != "open_conflict_as_retry"), code(ErrorCode.IDEMPOTENCY_CONFLICT)),
        ])
        new = Assignment(True, a.caller, a.job_kind, a.canon, digest, False, 0, False, 0, A_STATUS["open"], False, 0,
                         pre.version_floor, a.now)
        return z3.And(z3.Not(r.has_ret), z3.If(
            z3.And(err == OK_CODE, z3.Not(old.used)),
            z3.And(r.code == OK_CODE, r.wrote, same(post.assignments[i], new),
                   frame(pre, post, {f"assignment{i}"}), no_delta(d)),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("open", a.arg_err), z3.Implies(a.arg_err == OK_CODE, CANON(a.canon)),
                  per_slot(a.request, N, at))


def _role(name: str, a: UpdateAct, row: Assignment, bug: str = "") -> ZBool:
    """A role of ``spec.transitions.ASSIGNMENT_ROLES``: its scope, and the row column the caller must be."""
    if name not in ASSIGNMENT_ROLES:
        raise KeyError(f"the encoding does not know the role {name!r} of spec.transitions.ASSIGNMENT_TRANSITIONS")
    role = ASSIGNMENT_ROLES[name]
    scopes = {None: z3.BoolVal(True), "compute.request": a.s_request, "compute.assign": a.s_assign,
              "compute.execute": a.s_execute}
    columns = {None: z3.BoolVal(True), "requester": a.caller == row.requester,
               "provider_owner": z3.BoolVal(True) if bug == "execute_by_scope_alone"
               else z3.And(row.has_owner, a.caller == row.owner)}
    if role.scope not in scopes or role.identity_column not in columns:
        raise KeyError(f"the encoding does not know the scope or column of role {name!r}")
    return z3.And(scopes[role.scope], columns[role.identity_column])


def edge_allowed(old: ZInt, new: ZInt) -> ZBool:
    return z3.Or([z3.And(old == A_STATUS[f], new == A_STATUS[t]) for f, t in ASSIGNMENT_TRANSITIONS])


def _may_take(a: UpdateAct, row: Assignment, bug: str = "") -> ZBool:
    return z3.Or([z3.And(row.status == A_STATUS[f], a.status == A_STATUS[t],
                         z3.Or([_role(who, a, row, bug) for who in sorted(roles)]))
                  for (f, t), roles in ASSIGNMENT_TRANSITIONS.items()])


def t_update(pre: Db, a: UpdateAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``update_compute_assignment``: the edge table, the version check, who may take the edge."""

    def at(i: int) -> ZBool:
        old = pre.assignments[i]
        assigned = a.status == A_STATUS["assigned"]
        exists = z3.Or([z3.And(a.prov_slot == k, p.used) for k, p in enumerate(pre.providers)])
        p_status = pick([p.status for p in pre.providers], a.prov_slot)
        p_kinds = pick([p.kinds for p in pre.providers], a.prov_slot)
        p_owner = pick([p.owner for p in pre.providers], a.prov_slot)
        unavailable = z3.And(assigned, z3.Or(z3.Not(exists), p_status != PROV_STATUS["active"],
                                             z3.Not(ADVERTISES(p_kinds, old.job_kind))))
        if bug == "assign_skips_provider_check":
            unavailable = z3.BoolVal(False)
        err = first_error([
            (z3.Not(z3.Or(a.s_request, a.s_assign, a.s_execute)), MS),
            (z3.Or(a.arg_err != OK_CODE, z3.Not(one_of(a.status, A_STATUS.values()))), IA),
            (z3.And(assigned, z3.Not(a.has_provider)), IA),
            (z3.And(a.has_result, z3.Not(one_of(a.status, (A_STATUS["completed"], A_STATUS["failed"])))), IA),
            (z3.And(a.has_result, a.result_err != OK_CODE), a.result_err),
            (z3.Not(old.used), code(ErrorCode.ASSIGNMENT_MISSING)),
            (old.version != a.expected, code(ErrorCode.VERSION_CONFLICT)),
            (z3.Not(edge_allowed(old.status, a.status)), code(ErrorCode.INVALID_TRANSITION)),
            (z3.Not(_may_take(a, old, bug)), FORBIDDEN),
            (z3.And(z3.Not(assigned), a.has_provider,
                    z3.Not(z3.And(old.has_provider, old.provider == a.provider))), IA),
            (unavailable, code(ErrorCode.PROVIDER_UNAVAILABLE)),
        ])
        new = Assignment(True, old.requester, old.job_kind, old.request, old.hash,
                         z3.If(assigned, True, old.has_provider), z3.If(assigned, a.provider, old.provider),
                         z3.If(assigned, True, old.has_owner), z3.If(assigned, p_owner, old.owner),
                         a.status, a.has_result, a.result,
                         old.version + (0 if bug == "assignment_version_not_bumped" else 1), a.now)
        taken = z3.And(r.code == OK_CODE, r.wrote, same(post.assignments[i], new),
                       frame(pre, post, {f"assignment{i}"}), no_delta(d))
        if bug == "update_not_recorded":  # accepted, nothing written
            taken = fail(pre, post, r, d, OK_CODE)
        return z3.And(z3.Not(r.has_ret), z3.If(err == OK_CODE, taken, fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("update", a.arg_err), z3.Implies(a.has_provider, in_range(a.prov_slot, -1, N)),
                  one_of(a.result_err, (OK_CODE, code(ErrorCode.NON_CANONICAL_PAYLOAD))),
                  z3.Implies(z3.And(a.has_result, a.result_err == OK_CODE), CANON(a.result)),
                  per_slot(a.request, N, at))


def outbox_digest(source: ZInt, kind: ZInt, tags: ZInt, content: ZInt, bug: str = "") -> ZInt:
    """``spec.reducers.outbox_content_hash``: the dedupe key of an outbox row."""
    return OUTBOX_HASH(SOURCE_LEFT_OUT if bug == "source_not_in_dedupe_hash" else source, kind, tags, content)


def t_enqueue(pre: Db, a: EnqueueAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``enqueue_bridge_event``: same content hash is a no-op; a different one a conflict; else a new
    row, pending, no attempts, due now."""

    def at(i: int) -> ZBool:
        old = pre.outbox[i]
        digest = outbox_digest(a.source, a.kind, a.tags, a.content, bug)
        stored = old.content_hash
        if bug == "source_not_in_dedupe_hash":  # the stored row's key is the bug's too: hash of [kind, tags, content]
            stored = outbox_digest(old.source, old.kind, old.tags, old.content, bug)
        err = first_error([
            (z3.Not(a.scope), MS),
            (a.arg_err != OK_CODE, a.arg_err),
            (z3.And(old.used, stored != digest), code(ErrorCode.IDEMPOTENCY_CONFLICT)),
        ])
        new = Outbox(used=True, source=a.source, kind=a.kind, tags=a.tags, content=a.content, content_hash=digest,
                     status=B_STATUS["pending"], attempts=0, next_at=a.now, has_error=False, error=0,
                     has_event_id=False, event_id=0, relays=RELAYS_NONE, created=a.now, updated=a.now)
        writes = z3.Not(old.used)
        if bug == "enqueue_not_recorded":  # a new row is acknowledged and not written
            writes = z3.BoolVal(False)
        return z3.And(z3.Not(r.has_ret), z3.If(
            z3.And(err == OK_CODE, writes),
            z3.And(r.code == OK_CODE, r.wrote, same(post.outbox[i], new), frame(pre, post, {f"outbox{i}"}),
                   no_delta(d)),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("enqueue", a.arg_err), per_slot(a.outbox, N, at))


def t_mark_sent(pre: Db, a: MarkSentAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``mark_bridge_event_sent``: to sent; sent again with the same id merges the relays (a no-op when it
    adds none), another id a conflict."""

    def at(i: int) -> ZBool:
        old = pre.outbox[i]
        sent = old.status == B_STATUS["sent"]
        err = first_error([
            (z3.Not(a.scope), MS),
            (a.arg_err != OK_CODE, a.arg_err),
            (z3.Not(old.used), code(ErrorCode.BRIDGE_EVENT_MISSING)),
            (z3.And(sent, z3.Not(z3.And(old.has_event_id, old.event_id == a.event_id))),
             code(ErrorCode.BRIDGE_EVENT_CONFLICT)),
        ])
        relays = z3.If(sent, MERGE(old.relays, a.relays), a.relays)
        if bug == "first_mark_drops_relays":  # a pending or failed row goes sent keeping its (empty) relays
            relays = z3.If(sent, relays, old.relays)
        new = replace(old, status=B_STATUS["sent"], has_event_id=True, event_id=a.event_id, relays=relays,
                      updated=a.now)
        adds = z3.Or(z3.Not(sent), relays != old.relays)  # a repeated success writes only when it adds a relay
        if bug == "repeated_ack_ignores_relays":
            adds = z3.Not(sent)
        return z3.And(z3.Not(r.has_ret), z3.If(
            z3.And(err == OK_CODE, adds),
            z3.And(r.code == OK_CODE, r.wrote, same(post.outbox[i], new), frame(pre, post, {f"outbox{i}"}),
                   no_delta(d)),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("mark_sent", a.arg_err), per_slot(a.outbox, N, at))


def t_failure(pre: Db, a: FailureAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``record_bridge_failure`` on a pending row: attempts + 1, last_error, next_attempt_at = now +
    retry_after_ms (in microseconds); at the maximum the row is failed (dead letter).  A sent or
    failed row: an accepted no-op."""

    def at(i: int) -> ZBool:
        old = pre.outbox[i]
        err = first_error([
            (z3.Not(a.scope), MS),
            (a.arg_err != OK_CODE, a.arg_err),
            (z3.Not(old.used), code(ErrorCode.BRIDGE_EVENT_MISSING)),
        ])
        attempts = old.attempts if bug == "failure_not_counted" else old.attempts + 1
        dead = attempts > pol.max_attempts if bug == "failure_past_max" else attempts >= pol.max_attempts
        next_at = a.now + US_PER_MS * a.retry
        if bug == "backoff_not_recorded":
            next_at = old.next_at
        if bug == "backoff_unit_ms":  # retry_after_ms added to a microsecond clock as it is
            next_at = a.now + a.retry
        new = replace(old, status=z3.If(dead, B_STATUS["failed"], B_STATUS["pending"]), attempts=attempts,
                      next_at=next_at, has_error=True, error=a.error, updated=a.now)
        return z3.And(z3.Not(r.has_ret), z3.If(
            z3.And(err == OK_CODE, old.status == B_STATUS["pending"]),
            z3.And(r.code == OK_CODE, r.wrote, same(post.outbox[i], new), frame(pre, post, {f"outbox{i}"}),
                   no_delta(d)),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("failure", a.arg_err), a.retry >= 0, per_slot(a.outbox, N, at))


def t_signal(pre: Db, a: SignalAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``publish_stream_signal``: writes one event-table row and nothing else."""
    err = first_error([(z3.Not(a.scope), MS), (z3.Not(a.granted), FS), (a.arg_err != OK_CODE, a.arg_err)])
    return z3.And(arg_err_ok("signal", a.arg_err), in_range(a.stream, 0, S), z3.Not(r.has_ret), z3.If(
        err == OK_CODE,
        z3.And(r.code == OK_CODE, r.wrote, same_db(pre, post), delta(d, ssig=1)),
        fail(pre, post, r, d, err)))


def t_reset(pre: Db, a: ResetAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``reset_stream_epoch``: epoch + 1, retained events dropped (floor = head + 1)."""

    def at(j: int) -> ZBool:
        st, ev = pre.streams[j], pre.events[j]
        err = first_error([(z3.Not(a.scope), MS), (a.arg_err != OK_CODE, a.arg_err), (z3.Not(st.exists), IA)])
        new = Stream(True, st.epoch + 1, st.head, st.head + 1, st.budget, 0, 0)  # a fresh epoch continues nothing
        events = post.events[j].n == 0
        dels = ev.n
        return z3.And(z3.Not(r.has_ret), z3.If(
            err == OK_CODE,
            z3.And(r.code == OK_CODE, r.wrote, same_stream(post.streams[j], new), events,
                   frame(pre, post, {f"stream{j}", f"events{j}"}), delta(d, dels={j: dels})),
            fail(pre, post, r, d, err)))

    return z3.And(arg_err_ok("reset", a.arg_err), per_slot(a.stream, S, at))


# --- system transactions -------------------------------------------------------------------------------------


def compaction_cut(ev: Events, ret: Retention, now: ZInt) -> ZInt:
    """How many leading events compaction drops: the longest prefix of events each past the count
    or the age limit."""
    drop = [z3.And(i < ev.n, z3.Or(z3.And(ret.has_count, ev.n > ret.count, i < ev.n - ret.count),
                                   z3.And(ret.has_age, ev.slots[i].at < now - ret.age))) for i in range(K)]
    cut: ZInt = z3.IntVal(0)
    lead: ZBool = z3.BoolVal(True)
    for i in range(K):
        lead = z3.And(lead, drop[i])
        cut = cut + z3.If(lead, 1, 0)
    return cut


def _past(window_on: ZBool, window: ZInt, stamp: ZInt, now: ZInt) -> ZBool:
    return z3.And(window_on, stamp < now - window)


def retention_drops(pre: Db, a: CompactAct) -> dict[str, ZBool]:
    """Which rows of the other tables retention removes: offline presence past its window after
    last_seen, terminal assignments and sent / failed outbox rows past theirs after updated_at."""
    w = a.windows
    out: dict[str, ZBool] = {}
    for i, p in enumerate(pre.presence):
        out[f"presence{i}"] = z3.And(p.used, p.status == P_OFFLINE, _past(w.has_presence, w.presence, p.last_seen,
                                                                           a.now))
    for i, x in enumerate(pre.assignments):
        out[f"assignment{i}"] = z3.And(x.used, one_of(x.status, A_TERMINAL),
                                       _past(w.has_assignment, w.assignment, x.updated, a.now))
    for i, b in enumerate(pre.outbox):
        out[f"outbox{i}"] = z3.And(b.used, z3.Or(
            z3.And(b.status == B_STATUS["sent"], _past(w.has_sent, w.sent, b.updated, a.now)),
            z3.And(b.status == B_STATUS["failed"], _past(w.has_failed, w.failed, b.updated, a.now))))
    return out


def t_compact(pre: Db, a: CompactAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``compact``: per stream, drop the leading events past retention; floor_seq becomes
    max(floor_seq, last dropped seq + 1) (dropping old-epoch events below the floor keeps it).  And
    retention of the other tables (:func:`retention_drops`)."""
    parts: list[ZBool] = [r.code == OK_CODE, z3.Not(r.has_ret)]
    drops = retention_drops(pre, a)
    rows: dict[str, tuple[Any, Any]] = {**{f"presence{i}": (x, post.presence[i]) for i, x in enumerate(pre.presence)},
            **{f"assignment{i}": (x, post.assignments[i]) for i, x in enumerate(pre.assignments)},
            **{f"outbox{i}": (x, post.outbox[i]) for i, x in enumerate(pre.outbox)}}
    for name, (before, after) in rows.items():
        parts.append(z3.If(drops[name], z3.Not(after.used), same(after, before)))
    w = a.windows
    parts += [z3.Implies(flag, v >= 0) for flag, v in ((w.has_presence, w.presence), (w.has_assignment, w.assignment),
                                                        (w.has_sent, w.sent), (w.has_failed, w.failed))]
    cuts = []
    for j in range(S):
        st, ev = pre.streams[j], pre.events[j]
        ret = a.retention[j]
        parts += [z3.Implies(ret.has_count, ret.count >= 0), z3.Implies(ret.has_age, ret.age >= 0)]
        cut = z3.If(st.exists, compaction_cut(ev, ret, a.now), 0)
        cuts.append(cut)
        last = pick([e.seq for e in ev.slots], cut - 1)
        floor = st.floor if bug == "compaction_keeps_floor" else zmax([st.floor, last + 1])
        parts.append(z3.If(cut > 0, z3.And(
            same_stream(post.streams[j], Stream(True, st.epoch, st.head, floor, st.budget, st.cont_epoch, st.cont_seq)),
            dropped_prefix(ev, cut, post.events[j])),
            z3.And(same_stream(post.streams[j], st), same_events(post.events[j], ev))))
    # an assignment removed for good takes its versions with it: the floor rises above them
    parts.append(post.version_floor == zmax([pre.version_floor, *[
        z3.If(drops[f"assignment{i}"], x.version + 1, pre.version_floor) for i, x in enumerate(pre.assignments)]]))
    parts.append(frame(pre, post, {f"{x}{j}" for j in range(S) for x in ("stream", "events")} | set(rows)
                       | {"version_floor"}))
    parts.append(delta(d, dels=dict(enumerate(cuts))))
    parts.append(r.wrote == z3.Or([c > 0 for c in cuts] + list(drops.values())))
    return z3.And(parts)


def t_unclean_restart(pre: Db, a: RestartAct, post: Db, r: Result, d: Delta, pol: Policy, bug: str = "") -> ZBool:
    """``unclean_restart`` applied to the durable state: every stream, and the epoch of streams
    created later, moves to max(all epochs, epoch_floor) + max_undurable + 1; each stream's new
    epoch continues the old one (continues_epoch = old epoch, continues_seq = head, floor kept) and
    its retained events and checkpoints of the old epoch are relabelled to the new one.  Every
    provider and assignment, and version_floor, move to max_version + max_undurable + 1."""
    fresh_epoch = zmax([pre.epoch_floor, *[z3.If(s.exists, s.epoch, pre.epoch_floor) for s in pre.streams]]) \
        + a.undurable + 1
    bumped = bug != "no_epoch_bump_on_crash"
    new_epoch = fresh_epoch if bumped else None
    parts: list[ZBool] = [a.undurable >= 1, r.code == OK_CODE, z3.Not(r.has_ret), r.wrote, no_delta(d),
                          post.epoch_floor == (fresh_epoch if bumped else pre.epoch_floor)]
    for j, st in enumerate(pre.streams):
        epoch = st.epoch if new_epoch is None else new_epoch
        parts.append(same_stream(post.streams[j], Stream(st.exists, epoch, st.head, st.floor, st.budget, st.epoch,
                                                         st.head)))
        ev, pev = pre.events[j], post.events[j]
        parts.append(pev.n == ev.n)
        for i in range(K):
            e = ev.slots[i]
            moved = e.epoch if bug == "restart_without_relabel" else z3.If(e.epoch == st.epoch, epoch, e.epoch)
            parts.append(z3.Implies(i < ev.n, same_event(pev.slots[i], replace(e, epoch=moved))))
        for c in range(C):
            k = ckpt_index(c, j)
            ck = pre.ckpts[k]
            parts.append(same(post.ckpts[k], replace(ck, epoch=z3.If(z3.And(st.exists, ck.epoch == st.epoch), epoch,
                                                                      ck.epoch))))
    version = max_version(pre) + a.undurable + 1
    parts.append(post.version_floor == version)
    pairs: list[tuple[Provider | Assignment, Provider | Assignment]] = [
        *zip(pre.providers, post.providers, strict=True), *zip(pre.assignments, post.assignments, strict=True)]
    for x, y in pairs:
        parts.append(same(y, replace(x, version=version)))
    parts.append(frame(pre, post, {"epoch_floor", "version_floor", *(f"stream{j}" for j in range(S)),
                                   *(f"events{j}" for j in range(S)), *(f"ckpt{k}" for k in range(C * S)),
                                   *(f"provider{i}" for i in range(N)), *(f"assignment{i}" for i in range(N))}))
    return z3.And(parts)


# --- planted bugs (the negative controls) -------------------------------------------------------------------

BUGS: dict[str, tuple[str, str]] = {
    "seq_head_plus_2": ("append_sync_event", "append assigns head + 2"),
    "append_write_lost": ("append_sync_event", "an append of a new key that passes every check is acknowledged "
                          "with its seq and writes nothing"),
    "sequence_before_dedupe": ("append_sync_event", "the sequence check runs before dedupe"),
    "dedupe_without_hash_compare": ("append_sync_event", "a retained key is a success whatever its payload"),
    "hash_arg_trusted": ("append_sync_event", "the client's payload_hash is stored unchecked"),
    "scope_not_checked": ("append_sync_event", "append does not check the sync.append scope"),
    "stream_created_before_sequence_check": ("append_sync_event",
                                             "a sequence_conflict leaves the new stream row behind"),
    "non_monotonic_ack": ("ack_checkpoint", "a lower ack overwrites the checkpoint"),
    "ack_past_head": ("ack_checkpoint", "the checkpoint may run one past the head"),
    "ack_not_recorded": ("ack_checkpoint", "an ack that passes every check is accepted and not recorded"),
    "event_rows_persisted": ("upsert_presence", "presence_signal rows are stored in the state"),
    "offline_reason_not_set": ("upsert_presence", "an explicit offline stores no offline_reason"),
    "upsert_not_recorded": ("upsert_presence", "an upsert over an existing row is accepted and writes nothing"),
    "sweep_strict_expiry": ("presence_sweep", "the sweep uses expires_at < now where <= is right"),
    "republish_bumps_version": ("publish_provider_capability", "an identical republish bumps the version"),
    "republish_change_dropped": ("publish_provider_capability", "a republish that changes the ad is accepted as a "
                                 "no-op (the new ad is lost)"),
    "open_conflict_as_retry": ("open_compute_assignment", "another request under a taken request id is accepted as "
                               "a retry, not refused idempotency_conflict"),
    "assignment_version_not_bumped": ("update_compute_assignment", "an assignment update keeps its version"),
    "update_not_recorded": ("update_compute_assignment", "an update that passes every check is accepted and not "
                            "written"),
    "failure_past_max": ("record_bridge_failure", "a row goes failed only past the maximum attempts"),
    "failure_not_counted": ("record_bridge_failure", "a failure on a pending row records its error and backoff "
                            "but not the attempt"),
    "backoff_not_recorded": ("record_bridge_failure", "a failure keeps the row's next_attempt_at (no durable "
                             "backoff)"),
    "backoff_unit_ms": ("record_bridge_failure", "the backoff adds retry_after_ms to the microsecond clock "
                        "unconverted (next_attempt_at = now + retry_after_ms, read literally)"),
    "enqueue_not_recorded": ("enqueue_bridge_event", "a new outbox row is acknowledged and not written"),
    "source_not_in_dedupe_hash": ("enqueue_bridge_event", "the dedupe hash leaves out the source: another source "
                                  "under a taken outbox_id is a silent no-op"),
    "first_mark_drops_relays": ("mark_bridge_event_sent", "a pending or failed row goes sent without the relays "
                                "the call acknowledges"),
    "repeated_ack_ignores_relays": ("mark_bridge_event_sent", "a repeated mark of a sent row is a no-op even when "
                                    "it acknowledges new relays"),
    "execute_by_scope_alone": ("update_compute_assignment", "any compute.execute holder takes the executor edges "
                               "(start, complete, fail) of any assigned job"),
    "assign_skips_provider_check": ("update_compute_assignment", "assigning does not check that the provider exists, "
                                    "is active and advertises the kind"),
    "compaction_keeps_floor": ("compact", "compaction drops events but leaves floor_seq"),
    "no_epoch_bump_on_crash": ("unclean_restart", "an unclean restart keeps epochs"),
    "restart_without_relabel": ("unclean_restart", "an unclean restart continues the epochs but leaves the retained "
                                "events in the old one (resumes in the new epoch would miss them)"),
    "disconnect_ignores_expiry": ("disconnect_sessions", "a disconnect marks an already-expired live session "
                                  "disconnected with last_seen = now"),
}
"""Bug name -> (the transition it breaks, what it does).  Each relation takes ``bug=`` and, for
a name of its own, encodes that bug instead of the model; the names follow the planted mutants of
``tests/support/mutants.py`` where one exists."""


# --- the transition table --------------------------------------------------------------------------------------

Relation = Callable[..., ZBool]


@dataclass(frozen=True)
class Transition:
    name: str  # the spec function it encodes
    relation: Relation
    action: Callable[[str], object]  # prefix -> a fresh action
    reducer: bool  # a client-callable reducer (as opposed to a system transaction)


def _rec(cls: type) -> Callable[[str], object]:
    return lambda p: fresh(cls, p)


DB_TRANSITIONS: tuple[Transition, ...] = (
    Transition("append_sync_event", t_append, _rec(AppendAct), True),
    Transition("ack_checkpoint", t_ack, _rec(AckAct), True),
    Transition("upsert_presence", t_presence, _rec(PresenceAct), True),
    Transition("publish_provider_capability", t_provider, _rec(ProviderAct), True),
    Transition("open_compute_assignment", t_open, _rec(OpenAct), True),
    Transition("update_compute_assignment", t_update, _rec(UpdateAct), True),
    Transition("enqueue_bridge_event", t_enqueue, _rec(EnqueueAct), True),
    Transition("mark_bridge_event_sent", t_mark_sent, _rec(MarkSentAct), True),
    Transition("record_bridge_failure", t_failure, _rec(FailureAct), True),
    Transition("publish_stream_signal", t_signal, _rec(SignalAct), True),
    Transition("reset_stream_epoch", t_reset, _rec(ResetAct), True),
    Transition("presence_sweep", t_sweep, _rec(SweepAct), False),
    Transition("disconnect_sessions", t_disconnect, DisconnectAct.fresh, False),
    Transition("compact", t_compact, CompactAct.fresh, False),
    Transition("unclean_restart", t_unclean_restart, _rec(RestartAct), False),
)
DB_TRANSITION_BY_NAME = {t.name: t for t in DB_TRANSITIONS}


def initial(db: Db) -> ZBool:
    """``DbState()``: no rows, epoch_floor and version_floor 1."""
    parts: list[ZBool] = [db.epoch_floor == 1, db.evt_rows == 0, db.version_floor == 1]
    parts += [z3.Not(s.exists) for s in db.streams]
    parts += [e.n == 0 for e in db.events]
    for rows in (db.ckpts, db.presence, db.providers, db.assignments, db.outbox):
        parts += [z3.Not(row.used) for row in rows]
    return z3.And(parts)
