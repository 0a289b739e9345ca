"""The invariant catalog, and every invariant as an executable predicate.

Each :class:`Invariant` has an id (``SEQ-1``, ...), a statement and a kind:

* ``state``      -- a predicate over one :class:`~spec.state.DbState` (:func:`check_state`);
* ``transition`` -- over two consecutive committed states (:func:`check_transition`);
* ``call``       -- over one reducer call: state before, context, args, outcome (:func:`check_call`);
* ``trace``      -- over what clients observed (:mod:`spec.trace`);
* ``convergence`` -- after faults heal (:func:`check_convergence`).

Checkers return a list of :data:`Violation` ``(invariant id, message)``; empty means it holds.
``docs/invariants.md`` is generated from :data:`CATALOG` plus the checks that cite each id, and a
test keeps the two in step.  The reference engine may use these predicates in its contracts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import icontract

from spec.canonical import is_canonical, payload_hash
from spec.errors import ErrorCode
from spec.policy import MAX_CONTINUATION_HOPS, Policy
from spec.schema import PERSISTENT_TABLES, TABLES
from spec.state import DbState
from spec.transitions import (
    ASSIGNMENT_STATUSES,
    ASSIGNMENT_TERMINAL,
    ASSIGNMENT_TRANSITIONS,
    BRIDGE_STATUSES,
    PRESENCE_OFFLINE_REASONS,
    PRESENCE_STATUSES,
    PROVIDER_STATUSES,
)
from spec.values import (
    BridgeOutbox,
    ComputeAssignment,
    ProviderCapability,
    SessionPresence,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
)

Violation = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Invariant:
    id: str
    kind: str
    statement: str


CATALOG: tuple[Invariant, ...] = (
    Invariant("SEQ-1", "state", "Per stream, 1 <= floor_seq <= head_seq + 1 and the retained events are exactly "
              "floor_seq..head_seq, all in the stream's current epoch; every event belongs to an existing stream. "
              "An epoch continues another (continues_epoch != 0) only below it, up to a continues_seq <= head_seq."),
    Invariant("SEQ-2", "trace", "A (stream_id, epoch, seq) never names two different payloads, over the whole "
              "run, across crashes and restarts: not in the ledger, not in anything any client ever received "
              "or applied. In particular a seq is never reused within an epoch."),
    Invariant("SEQ-3", "transition", "A stream's head_seq, floor_seq and epoch never decrease from one committed "
              "state to the next; a retained event row never changes. The one exception is the recovery "
              "transaction of an unclean restart, which relabels the retained events of the continued epoch to the "
              "new one: same seq, payload, hash, producer and offset, epoch raised (CONT-1)."),
    Invariant("SEQ-4", "call", "An append that writes assigns seq = head_seq + 1 and returns it; the first "
              "append of a stream gives seq 1."),
    Invariant("IDEM-1", "state", "Within a stream, (stream_id, idempotency_key) and (stream_id, seq) are each "
              "unique among retained events."),
    Invariant("IDEM-2", "call", "An append whose key is retained with the same payload hash succeeds, returns "
              "the original seq and writes nothing -- whatever expected_next_seq says (dedupe before sequence)."),
    Invariant("IDEM-3", "call", "An append whose key is retained with a different payload hash always fails "
              "with idempotency_conflict, naming the existing seq and hash."),
    Invariant("HASH-1", "state", "Every stored payload (event payloads, capabilities, requests, results) is "
              "canonical JSON and its stored hash is sha256 of its UTF-8 bytes."),
    Invariant("HASH-2", "call", "Canonicalization is a function of the JSON value: it is idempotent, rejects "
              "every non-representable input with a specific reason, and matches the conformance vectors."),
    Invariant("CKPT-1", "state", "A checkpoint in the stream's current epoch never passes the stream's head."),
    Invariant("CKPT-2", "transition", "Within an epoch a checkpoint's last_applied_seq never decreases; its owner "
              "never changes."),
    Invariant("DELIV-1", "trace", "Each connection receives transactions in commit order: message offsets never "
              "decrease, and a TransactionUpdate's offset is greater than that of everything received before."),
    Invariant("DELIV-2", "trace", "After its snapshot, the rows a client holds for a query set equal the query "
              "set's result on the server state at the offset of the last message received: no row missed, "
              "none duplicated, no delete of a row never sent."),
    Invariant("DELIV-3", "trace", "The caller of a reducer that commits gets exactly one ReducerResult for it and "
              "no TransactionUpdate for that transaction."),
    Invariant("DELIV-4", "trace", "A failed reducer changes nothing, takes no offset, and only its caller hears of "
              "it."),
    Invariant("REPLAY-1", "trace", "A client's applied events per (stream, epoch) are contiguous: each applied seq "
              "is last + 1 (duplicates dropped, gaps never applied), and its watermark never decreases "
              "within an epoch."),
    Invariant("REPLAY-2", "convergence", "Resume from watermark W yields exactly the events after W (NoEventLoss): "
              "after faults heal, for every stream a client follows that its claims let it read (sync.subscribe "
              "and a grant covering it, read from the claims, not from what the client kept), the client is in "
              "the current epoch, its watermark equals head, its base is below the floor and its events are the "
              "authority's events of the epoch from base + 1 to head; every followed stream its claims do not "
              "let it read was refused (forbidden_stream or missing_scope) and holds no event."),
    Invariant("REPLAY-3", "trace", "Rebootstraps are bounded: a client rebootstraps (or continues into a new epoch) "
              "a stream only in answer to a stale signal delivered to it for that stream -- a stale_cursor "
              "refusal, or a sync_stream row its (epoch, watermark) is stale against -- at most once per signal. "
              "A servable replay from zero, a gap, a reconnect or a restart of the client's process never "
              "rebootstraps."),
    Invariant("STALE-1", "trace", "A resume subscription is rejected with stale_cursor exactly when one of the "
              "reasons holds on the snapshot state (epoch_changed, retention_floor_breach, "
              "replay_budget_exceeded, cursor_ahead_of_head), and the details carry all of them; the replay "
              "held against the budget is min(head, B) - W for a resume bounded by seq <= B, head - W for one "
              "without an upper bound."),
    Invariant("STALE-2", "trace", "A resume subscription that is not stale never skips a compacted event: "
              "floor_seq <= W + 1 on the snapshot state."),
    Invariant("STALE-3", "trace", "A sync_event subscription that bounds seq from below is accepted only when it "
              "pins both stream_id and epoch with =; any other is refused with invalid_query, whose message shows "
              "the resume form (SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W)."),
    Invariant("CONF-1", "trace", "A confirmed-read client never receives a message derived from a transaction "
              "offset that is not durable at the time it is received."),
    Invariant("CONF-2", "trace", "No event a confirmed-read client received is ever lost by a crash."),
    Invariant("EVT-1", "state", "Event-table rows are never in the database state, hence never in a snapshot "
              "or in the durable state."),
    Invariant("EVT-2", "trace", "Event-table rows reach clients only as EventTable rows of the transaction that "
              "emitted them, never in a SubscribeApplied."),
    Invariant("AUTH-1", "trace", "No client receives a row it may not read: stream rows only for granted "
              "streams, checkpoints only by their owner, bridge rows only by bridge scopes, assignments "
              "only by their requester, their provider_owner or compute.assign holders (compute.execute alone "
              "reads nothing)."),
    Invariant("AUTH-2", "call", "A reducer call without the required scope or stream grant fails with "
              "missing_scope / forbidden_stream before any other check and changes nothing."),
    Invariant("COMPAT-1", "call", "Compatibility negotiation applies its checks in the documented order; the "
              "first failing check decides the code."),
    Invariant("PRES-1", "state", "A presence row's status is valid; it is offline exactly when it has an "
              "offline_reason; expires_at >= last_seen."),
    Invariant("PRES-2", "transition", "After a presence sweep at time t no live (non-offline) row has "
              "expires_at <= t; a status change emits exactly one presence_signal."),
    Invariant("PRES-3", "trace", "Closing a connection marks a session disconnected only when that connection made "
              "the session's last upsert (a session re-upserted on a newer connection stays as that upsert left "
              "it), and every session whose last upserting connection closed (not by a crash: TTLs take over "
              "then) is offline once its marks can commit -- at once, unless a fanout or the durability bound holds "
              "them -- and so once faults heal."),
    Invariant("ASSIGN-1", "transition", "A compute assignment changes only along the transition table, bumping "
              "version by exactly 1; terminal rows never change. The one exception is the recovery transaction "
              "after an unclean restart, which only raises versions (VER-1)."),
    Invariant("ASSIGN-2", "state", "Assignment status is valid and version >= 1; assigned, running, completed "
              "and failed rows name a provider and its owner (provider_owner); open rows name neither."),
    Invariant("ASSIGN-3", "transition", "An assignment becomes assigned only naming a provider that exists, is "
              "active and advertises the job kind in the state before, and records that provider's owner as "
              "provider_owner; provider_id and provider_owner never change afterwards."),
    Invariant("ASSIGN-4", "call", "An assignment edge is taken only by a role the transition table names for it "
              "-- requester (the row's requester), dispatcher (compute.assign), executor (compute.execute and the "
              "row's provider_owner) -- and refused with forbidden only to a caller holding none of them: start, "
              "complete and fail belong to the assigned provider's owner alone."),
    Invariant("BRIDGE-1", "state", "An outbox row is sent exactly when it has a nostr_event_id; failed rows have "
              "reached the maximum attempts; pending rows are below it."),
    Invariant("BRIDGE-2", "transition", "A sent outbox row stays sent with the same event id and content; the only "
              "change it takes is relays_acked growing (a repeated success merging newly acknowledged relays). "
              "Attempts never decrease."),
    Invariant("BRIDGE-3", "call", "The outbox rules a bridge worker relies on: enqueue deduplicates on the hash of "
              "canonical [source, nostr_kind, tags, content] (another source under the same outbox_id is "
              "idempotency_conflict) and starts with next_attempt_at = the enqueue time; record_bridge_failure on "
              "a pending row sets next_attempt_at = now + retry_after_ms milliseconds (the clock counts µs: + 1000 x "
              "retry_after_ms); mark_bridge_event_sent with the event id "
              "already recorded merges the relays into relays_acked, writing exactly when it adds one, and with "
              "another event id is bridge_event_conflict."),
    Invariant("PROV-1", "transition", "A provider capability's version rises by exactly 1 on every content change "
              "and never without one; a new provider starts at version_floor. The one exception is the recovery "
              "transaction after an unclean restart, which only raises versions (VER-1)."),
    Invariant("CONT-1", "trace", "An unclean restart's new epoch continues the old one: continues_epoch is the old "
              "epoch, continues_seq the durable head, floor_seq kept, the retained events and checkpoints of the "
              "old epoch relabelled (same seq, payload, hash, producer, offset). A client at (E, W) that meets an "
              "epoch continuing E with W <= continues_seq and nothing else stale adopts it with the same watermark "
              "and events and no rebootstrap; a client that meets any other new epoch rebootstraps. So a "
              "confirmed-read client (W <= the durable head) never rebootstraps because of a crash. Across "
              "several unclean restarts the new epoch also continues every epoch the old one continued "
              "(earlier_epochs/earlier_seqs, each bound the minimum of the durable heads since, ADR-0010), so a "
              "client at an earlier epoch E with W at or below E's bound continues too."),
    Invariant("VER-1", "trace", "A version number never names two different contents: over the whole run, across "
              "crashes and retention, each (provider_id or request_id, version) ever committed names one content. "
              "New rows start at version_floor; retention raises the floor above every version it removes; "
              "recovery raises every live row and the floor above every version the lost suffix can have handed "
              "out."),
    Invariant("RET-1", "transition", "Retention (the compaction transaction) removes offline presence rows, terminal "
              "assignments and sent or failed outbox rows exactly when they are past their policy windows (after "
              "last_seen, resp. updated_at), and nothing else of those tables; subscribers receive the deletes."),
    Invariant("DUR-1", "trace", "After a crash the state is exactly the durable prefix: every transaction "
              "reported durable is present, nothing after it is."),
    Invariant("DUR-2", "trace", "Recovery from an unclean restart moves every stream to an epoch above every "
              "epoch that can have been handed out, so lost transactions can never alias new ones."),
    Invariant("SLOW-1", "trace", "No outbound queue exceeds its bound; a client past it is disconnected with "
              "slow_consumer, and its watermarks survive for the resume."),
    Invariant("KEY-1", "state", "Primary keys and unique indexes hold in every table."),
)

CATALOG_BY_ID = {i.id: i for i in CATALOG}


# --- definitional predicates ---------------------------------------------------------------


STALE_REASON_ORDER: tuple[str, ...] = (
    "epoch_changed", "retention_floor_breach", "replay_budget_exceeded", "cursor_ahead_of_head")
"""The fixed order in which stale-cursor reasons are reported."""


def resume_is_safe(epoch: int, head: int, floor: int, budget: int, requested_epoch: int | None,
                   watermark: int, upper: int | None = None) -> bool:
    """The resume window, stated positively: the events after W are all retained (floor - 1 <= W),
    W is not past the head, at most ``budget`` of the events it asks for are to be replayed (those up
    to the head, or up to its upper bound B when it has one: ADR-0042), and the epoch is the same."""
    asked_to = head if upper is None or upper >= head else upper
    return (floor - 1 <= watermark <= head and asked_to - watermark <= budget
            and (requested_epoch is None or requested_epoch == epoch))


def in_fixed_order(reasons: Sequence[str], order: Sequence[str]) -> bool:
    """``reasons`` is a subsequence of ``order`` without repeats (so its order is fixed)."""
    positions = [order.index(r) if r in order else -1 for r in reasons]
    return all(p >= 0 for p in positions) and all(a < b for a, b in pairwise(positions))


@icontract.require(lambda budget: budget >= 0, "a replay budget is a count")
@icontract.ensure(lambda epoch, head, floor, budget, requested_epoch, watermark, upper, result:
                  (not result) == resume_is_safe(epoch, head, floor, budget, requested_epoch, watermark, upper),
                  "STALE-1 (no reason exactly when the resume window is safe)")
@icontract.ensure(lambda result: in_fixed_order(result, STALE_REASON_ORDER),
                  "STALE-1 (reasons are distinct and in the fixed order)")
@icontract.ensure(lambda floor, watermark, result: "retention_floor_breach" in result or floor <= watermark + 1,
                  "STALE-2 (a resume that is not refused for retention skips no compacted event)")
def stale_reasons(epoch: int, head: int, floor: int, budget: int, requested_epoch: int | None,
                  watermark: int, upper: int | None = None) -> tuple[str, ...]:
    """Why resuming from (requested_epoch, watermark) cannot yield exactly the events after it.

    The second opinion on :func:`spec.resume.stale_reasons`, written differently on purpose: each
    reason is a count of seqs that is not zero (or over the budget), not a comparison of bounds:

    * the events after W that were compacted away below the floor: ``max(0, floor - (W + 1))``;
    * the events to replay: the events after W, ``max(0, head - W)``, less those after the resume's
      upper bound B that it does not ask for, ``max(0, head - max(B, W))`` (none without a bound:
      ADR-0042) -- more than ``budget``;
    * the seqs the client claims to hold that the stream never had: ``max(0, W - head)``;
    * the epoch: a requested epoch that is not the stream's.
    """
    compacted_needed = max(0, floor - (watermark + 1))
    not_asked = 0 if upper is None else max(0, head - max(upper, watermark))
    to_replay = max(0, head - watermark) - not_asked
    never_existed = max(0, watermark - head)
    found = {
        "epoch_changed": requested_epoch not in (None, epoch),
        "retention_floor_breach": compacted_needed > 0,
        "replay_budget_exceeded": to_replay > budget,
        "cursor_ahead_of_head": never_existed > 0,
    }
    return tuple(reason for reason in STALE_REASON_ORDER if found[reason])


@icontract.ensure(lambda seqs, floor, head, result:
                  result == (len(seqs) == max(0, head - floor + 1)
                             and all(s == floor + i for i, s in enumerate(seqs))),
                  "SEQ-1 (contiguous: exactly head - floor + 1 seqs, the i-th being floor + i)")
def seqs_contiguous(seqs: Sequence[int], floor: int, head: int) -> bool:
    return list(seqs) == list(range(floor, head + 1))


def continuation_chain_ok(stream: SyncStream) -> bool:
    """SEQ-1 for the continuation chain (ADR-0010): a fresh epoch continues nothing; otherwise the
    earlier hops pair up, their epochs strictly fall going back (each below the last hop's), and so do
    their bounds, never rising (a bound is the minimum over every hop since)."""
    epochs, seqs = stream.earlier_epochs, stream.earlier_seqs
    if len(epochs) != len(seqs):
        return False
    if stream.continues_epoch == 0:
        return not epochs
    return (all(a > b for a, b in pairwise((stream.continues_epoch, *epochs)))
            and all(a >= b for a, b in pairwise((stream.continues_seq, *seqs))))


def layout_ok(stream: SyncStream, events: Sequence[SyncEvent]) -> bool:
    """SEQ-1 for one stream, given its retained events."""
    if not 1 <= stream.floor_seq <= stream.head_seq + 1:
        return False
    if stream.continues_epoch != 0 and not (stream.continues_epoch < stream.epoch
                                            and stream.continues_seq <= stream.head_seq):
        return False
    if not continuation_chain_ok(stream):
        return False
    return sorted(e.seq for e in events) == list(range(stream.floor_seq, stream.head_seq + 1)) and all(
        e.epoch == stream.epoch for e in events)


def stream_layout_ok(db: DbState, stream: SyncStream) -> bool:
    return layout_ok(stream, [e for e in db.of_type(SyncEvent) if e.stream_id == stream.stream_id])


# --- state ---------------------------------------------------------------------------------


def check_state(db: DbState, bridge_max_attempts: int = 5) -> list[Violation]:
    v: list[Violation] = []
    streams = {s.stream_id: s for s in db.of_type(SyncStream)}
    events = list(db.of_type(SyncEvent))
    for sid, s in streams.items():
        mine = [e for e in events if e.stream_id == sid]
        if not layout_ok(s, mine):
            seqs = sorted(e.seq for e in mine)
            v.append(("SEQ-1", f"{sid}: seqs {seqs[:8]}... floor {s.floor_seq} head {s.head_seq} epoch {s.epoch}"))
    for e in events:
        owner = streams.get(e.stream_id)
        if owner is None or e.epoch > owner.epoch:
            v.append(("SEQ-1", f"event {e.stream_id}/{e.seq} has no stream or a future epoch"))
        if not is_canonical(e.payload) or payload_hash(e.payload) != e.payload_hash:
            v.append(("HASH-1", f"event {e.stream_id}/{e.seq} payload/hash"))
    for key in (("stream_id", "seq"), ("stream_id", "idempotency_key")):
        dup = [k for k, n in Counter(tuple(getattr(e, c) for c in key) for e in events).items() if n > 1]
        if dup:
            v.append(("IDEM-1", f"duplicate {key}: {dup[:3]}"))
    for c in db.of_type(SyncCheckpoint):
        stream = streams.get(c.stream_id)
        head = stream.head_seq if stream else 0
        epoch = stream.epoch if stream else db.epoch_floor
        if c.epoch == epoch and c.last_applied_seq > head:
            v.append(("CKPT-1", f"{c.checkpoint_id}: {c.last_applied_seq} > head {head}"))
        if c.checkpoint_id != f"{c.client_id}|{c.stream_id}":
            v.append(("KEY-1", f"checkpoint id {c.checkpoint_id}"))
    for p in db.of_type(SessionPresence):
        if p.status not in PRESENCE_STATUSES or (p.status == "offline") != (p.offline_reason is not None) \
                or (p.offline_reason is not None and p.offline_reason not in PRESENCE_OFFLINE_REASONS) \
                or p.expires_at < p.last_seen:
            v.append(("PRES-1", f"presence {p.session_id}: {p.status}/{p.offline_reason}"))
    for a in db.of_type(ComputeAssignment):
        named = a.status in ("assigned", "running", "completed", "failed")
        if a.status not in ASSIGNMENT_STATUSES or a.version < 1 or (
                named and (a.provider_id is None or a.provider_owner is None)) or (
                a.status == "open" and (a.provider_id, a.provider_owner) != (None, None)):
            v.append(("ASSIGN-2", f"assignment {a.request_id}: {a.status} v{a.version}"))
        if not is_canonical(a.request) or payload_hash(a.request) != a.request_hash or (
                a.result is not None and not is_canonical(a.result)):
            v.append(("HASH-1", f"assignment {a.request_id}"))
    for b in db.of_type(BridgeOutbox):
        bad = b.status not in BRIDGE_STATUSES or (b.status == "sent") != (b.nostr_event_id is not None) \
            or (b.status == "failed" and b.attempts < bridge_max_attempts) \
            or (b.status == "pending" and b.attempts >= bridge_max_attempts) \
            or b.next_attempt_at < b.created_at or list(b.relays_acked) != sorted(set(b.relays_acked))
        if bad:
            v.append(("BRIDGE-1", f"outbox {b.outbox_id}: {b.status} attempts {b.attempts}"))
    for pc in db.of_type(ProviderCapability):
        if pc.status not in PROVIDER_STATUSES or pc.version < 1 or not is_canonical(pc.capability) \
                or payload_hash(pc.capability) != pc.capability_hash:
            v.append(("HASH-1", f"provider {pc.provider_id}"))
    for t in TABLES:
        if t.event and db.rows(t.name):
            v.append(("EVT-1", f"event table {t.name} holds rows"))
    for t in PERSISTENT_TABLES:
        if t.primary_key:
            keys = Counter(t.key_of(r) for r in db.rows(t.name))
            if any(n > 1 for n in keys.values()):
                v.append(("KEY-1", f"{t.name}: duplicate primary key"))
    return v


# --- transitions ----------------------------------------------------------------------------


def _by(rows: Iterable[Any], key: str) -> dict[Any, Any]:
    return {getattr(r, key): r for r in rows}


def check_transition(before: DbState, after: DbState) -> list[Violation]:
    v: list[Violation] = []
    s0, s1 = _by(before.of_type(SyncStream), "stream_id"), _by(after.of_type(SyncStream), "stream_id")
    for sid, a in s0.items():
        b = s1.get(sid)
        if b is None or b.head_seq < a.head_seq or b.floor_seq < a.floor_seq or b.epoch < a.epoch:
            v.append(("SEQ-3", f"stream {sid} went backwards"))
    e0 = {(e.stream_id, e.seq): e for e in before.of_type(SyncEvent)}
    for e in after.of_type(SyncEvent):
        old = e0.get((e.stream_id, e.seq))
        if old is not None and old != e:
            v.append(("SEQ-3", f"event {e.stream_id}/{e.seq} changed"))
    c0, c1 = _by(before.of_type(SyncCheckpoint), "checkpoint_id"), _by(after.of_type(SyncCheckpoint), "checkpoint_id")
    for cid, a in c0.items():
        b = c1.get(cid)
        if b is not None and (b.owner != a.owner or (b.epoch == a.epoch and b.last_applied_seq < a.last_applied_seq)):
            v.append(("CKPT-2", f"checkpoint {cid} decreased or changed owner"))
    a0, a1 = _by(before.of_type(ComputeAssignment), "request_id"), _by(after.of_type(ComputeAssignment), "request_id")
    for rid, a in a0.items():
        b = a1.get(rid)
        if b is None or b == a:
            continue
        if a.status in ASSIGNMENT_TERMINAL or (a.status, b.status) not in ASSIGNMENT_TRANSITIONS \
                or b.version != a.version + 1:
            v.append(("ASSIGN-1", f"assignment {rid}: {a.status} v{a.version} -> {b.status} v{b.version}"))
        if b.status == "assigned" and a.status != "assigned":
            p = _by(before.of_type(ProviderCapability), "provider_id").get(b.provider_id)
            if p is None or p.status != "active" or b.job_kind not in p.nip90_kinds or b.provider_owner != p.owner:
                v.append(("ASSIGN-3", f"assignment {rid} assigned to {b.provider_id}: provider {p}"))
        elif a.provider_id is not None and (a.provider_id, a.provider_owner) != (b.provider_id, b.provider_owner):
            v.append(("ASSIGN-3", f"assignment {rid} changed its provider after the assign edge"))
    b0, b1 = _by(before.of_type(BridgeOutbox), "outbox_id"), _by(after.of_type(BridgeOutbox), "outbox_id")
    for oid, a in b0.items():
        b = b1.get(oid)
        if b is None:
            continue
        grew = a.status == "sent" and (b.status != "sent" or not set(a.relays_acked) <= set(b.relays_acked)
                                       or (b.nostr_event_id, b.content_hash, b.attempts, b.next_attempt_at)
                                       != (a.nostr_event_id, a.content_hash, a.attempts, a.next_attempt_at))
        if grew or b.attempts < a.attempts:
            v.append(("BRIDGE-2", f"outbox {oid} changed after sent or attempts decreased"))
    p0 = _by(before.of_type(ProviderCapability), "provider_id")
    p1 = _by(after.of_type(ProviderCapability), "provider_id")
    for pid, a in p0.items():
        b = p1.get(pid)
        if b is None:
            continue
        same = (a.capability_hash, a.nip90_kinds, a.price_hint_sats, a.status) == (
            b.capability_hash, b.nip90_kinds, b.price_hint_sats, b.status)
        if (same and b.version != a.version) or (not same and b.version != a.version + 1):
            v.append(("PROV-1", f"provider {pid}: v{a.version} -> v{b.version}, same content: {same}"))
    return v


_RETAINED = (("session_presence", "session_id"), ("compute_assignment", "request_id"), ("bridge_outbox", "outbox_id"))


def _past_window(row: Any, now: int, policy: Policy) -> bool:
    """RET-1's reading of the retention windows (written out, not spec.reducers.retention_expired)."""
    if isinstance(row, SessionPresence):
        ts, window = row.last_seen, (policy.retain_offline_presence_us if row.status == "offline" else None)
    elif isinstance(row, ComputeAssignment):
        ts, window = row.updated_at, (policy.retain_terminal_assignment_us
                                      if row.status in ("completed", "failed", "cancelled") else None)
    elif isinstance(row, BridgeOutbox):
        ts = row.updated_at
        window = policy.retain_sent_outbox_us if row.status == "sent" else (
            policy.retain_failed_outbox_us if row.status == "failed" else None)
    else:
        return False
    return window is not None and now - ts > window


def check_retention(before: DbState, after: DbState, now: int, policy: Policy) -> list[Violation]:
    """RET-1 for a compaction at ``now``: the rows of the retained tables it removed were past their
    windows, and none past its window is left."""
    v: list[Violation] = []
    for table, key in _RETAINED:
        kept = {getattr(r, key) for r in after.rows(table)}
        for r in before.rows(table):
            gone = getattr(r, key) not in kept
            if gone != _past_window(r, now, policy):
                v.append(("RET-1", f"{table} {getattr(r, key)}: {'removed' if gone else 'kept'} at {now}"))
    return v


def versioned_content(row: ProviderCapability | ComputeAssignment) -> tuple[Any, ...]:
    """What a version names: the row without its version and its timestamps of change."""
    if isinstance(row, ProviderCapability):
        return (row.owner, row.capability_hash, row.nip90_kinds, row.price_hint_sats, row.status)
    return (row.requester, row.job_kind, row.request_hash, row.provider_id, row.provider_owner, row.status,
            row.result, row.opened_at)


def _chain_carried(a: SyncStream, b: SyncStream) -> bool:
    """ADR-0010, as a bound per epoch: each earlier hop of ``b`` names an epoch ``a`` continued, with
    the smaller of ``a``'s bound for it and ``a``'s head (never more: events past either may be lost;
    never less: a client up to it must continue); and no usable hop is dropped before the cap: the
    hops kept are ``a``'s, in ``a``'s order, up to the first whose bound falls below ``a.floor_seq - 1``."""
    old = [(a.continues_epoch, a.continues_seq), *zip(a.earlier_epochs, a.earlier_seqs, strict=False)]
    if not a.continues_epoch:
        old = []
    bound: dict[int, int] = {}
    for e, s in old:
        bound.setdefault(e, s)
    new = list(zip(b.earlier_epochs, b.earlier_seqs, strict=False))
    if len(b.earlier_epochs) != len(b.earlier_seqs) or any(
            e not in bound or s != min(bound[e], a.head_seq) for e, s in new):
        return False
    usable = 0
    while usable < len(old) and min(old[usable][1], a.head_seq) + 1 >= a.floor_seq:
        usable += 1
    return [e for e, _ in new] == [e for e, _ in old[:min(usable, MAX_CONTINUATION_HOPS - 1)]]


def check_recovery(before: DbState, after: DbState, max_undurable: int) -> list[Violation]:
    """The recovery transaction of an unclean restart (the one exception to SEQ-3, PROV-1 and
    ASSIGN-1): each stream's new epoch continues its old one up to the head, its events and
    checkpoints relabelled (CONT-1); the rows keep their content, and every version, and the
    floor, move past every version the lost suffix (at most ``max_undurable`` transactions, each
    raising the largest version by at most one) can have handed out (VER-1)."""
    v: list[Violation] = []
    old_streams, new_streams = _by(before.of_type(SyncStream), "stream_id"), _by(after.of_type(SyncStream), "stream_id")
    for sid, a in old_streams.items():
        b = new_streams.get(sid)
        if b is None or (b.continues_epoch, b.continues_seq, b.head_seq, b.floor_seq) != (
                a.epoch, a.head_seq, a.head_seq, a.floor_seq) or b.epoch <= a.epoch:
            v.append(("CONT-1", f"recovery moved {sid} from {a} to {b}"))
        elif not _chain_carried(a, b):
            v.append(("CONT-1", f"recovery of {sid} did not carry the continuation chain: {a} -> {b} (ADR-0010)"))
    moved = {sid: (a.epoch, new_streams[sid].epoch) for sid, a in old_streams.items() if sid in new_streams}

    def relabelled(row: Any) -> Any:
        old_new = moved.get(row.stream_id)
        return row if old_new is None or row.epoch != old_new[0] else replace(row, epoch=old_new[1])

    for rows in ("sync_event", "sync_checkpoint"):
        if Counter(map(relabelled, before.rows(rows))) != Counter(after.rows(rows)):
            v.append(("CONT-1", f"recovery did not relabel the {rows} rows of the continued epochs (and only "
                                f"those)"))
    top = max([before.version_floor, *(r.version for r in before.of_type(ProviderCapability)),
               *(r.version for r in before.of_type(ComputeAssignment))])
    if after.version_floor <= top + max_undurable:
        v.append(("VER-1", f"recovery left version_floor at {after.version_floor}, lost versions reach "
                           f"{top + max_undurable}"))
    for row_type, key in ((ProviderCapability, "provider_id"), (ComputeAssignment, "request_id")):
        old, new = _by(before.of_type(row_type), key), _by(after.of_type(row_type), key)
        if set(old) != set(new):
            v.append(("VER-1", f"recovery added or removed {row_type.__name__} rows"))
        for k, a in old.items():
            b = new.get(k)
            if b is not None and (versioned_content(a) != versioned_content(b) or b.version <= top + max_undurable):
                v.append(("VER-1", f"recovery of {k}: v{a.version} -> v{b.version}, content kept: "
                                   f"{versioned_content(a) == versioned_content(b)}"))
    return v


def check_sweep(after: DbState, now: int) -> list[Violation]:
    return [("PRES-2", f"presence {p.session_id} live past expiry") for p in after.of_type(SessionPresence)
            if p.status != "offline" and p.expires_at <= now]


# --- calls -------------------------------------------------------------------------------------


def _assignment_roles(scopes: frozenset[str], identity: str | None, row: ComputeAssignment) -> set[str]:
    """ASSIGN-4's reading of who the caller is for ``row``, written out (not via spec.transitions.has_role)."""
    held = set()
    if identity is not None and identity == row.requester:
        held.add("requester")
    if "compute.assign" in scopes:
        held.add("dispatcher")
    if "compute.execute" in scopes and row.provider_owner is not None and identity == row.provider_owner:
        held.add("executor")
    return held


def _check_update_roles(before: DbState, scopes: frozenset[str], identity: str | None, args: tuple[Any, ...],
                        outcome_ok: bool, error_code: ErrorCode | None, after: DbState) -> list[Violation]:
    """ASSIGN-4: an edge taken was taken by a role the table names; a forbidden edge was refused to a
    caller holding none of them."""
    rid, expected, status = args[0], args[1], args[2]
    old = _by(before.of_type(ComputeAssignment), "request_id").get(rid)
    if old is None or old.version != expected or (old.status, status) not in ASSIGNMENT_TRANSITIONS:
        return []
    roles = ASSIGNMENT_TRANSITIONS[(old.status, status)]
    held = _assignment_roles(scopes, identity, old)
    new = _by(after.of_type(ComputeAssignment), "request_id").get(rid)
    if outcome_ok and new is not None and new != old and not held & roles:
        return [("ASSIGN-4", f"{old.status} -> {status} of {rid} taken by a caller holding {sorted(held)}, "
                             f"not one of {sorted(roles)}")]
    if error_code is ErrorCode.FORBIDDEN and held & roles:
        return [("ASSIGN-4", f"{old.status} -> {status} of {rid} refused to a caller holding {sorted(held & roles)}")]
    return []


def _check_outbox_call(before: DbState, reducer: str, args: tuple[Any, ...], outcome_ok: bool,
                       error_code: ErrorCode | None, wrote: bool, after: DbState) -> list[Violation]:
    """BRIDGE-3, each rule read off the rows before and after (no reducer code reused)."""
    oid = args[0]
    old = _by(before.of_type(BridgeOutbox), "outbox_id").get(oid)
    new = _by(after.of_type(BridgeOutbox), "outbox_id").get(oid)
    if reducer == "enqueue_bridge_event" and old is not None and outcome_ok and old.source != args[1]:
        return [("BRIDGE-3", f"enqueue of {oid} from source {args[1]} accepted over one from {old.source}")]
    if reducer == "enqueue_bridge_event" and old is None and new is not None and new.next_attempt_at != new.created_at:
        return [("BRIDGE-3", f"new outbox row {oid} starts with next_attempt_at {new.next_attempt_at}")]
    if reducer == "mark_bridge_event_sent" and old is not None and old.status == "sent" \
            and old.nostr_event_id == args[1] \
            and error_code not in (ErrorCode.MISSING_SCOPE, ErrorCode.INVALID_ARGUMENT):
        adds = not set(args[2]) <= set(old.relays_acked)
        if not outcome_ok or wrote != adds or (new is not None and
                                               set(new.relays_acked) != set(old.relays_acked) | set(args[2])):
            return [("BRIDGE-3", f"repeated mark of {oid}: ok={outcome_ok} wrote={wrote}, relays "
                                 f"{old.relays_acked} + {args[2]} -> {new.relays_acked if new else None}")]
    if reducer == "mark_bridge_event_sent" and old is not None and old.status == "sent" \
            and old.nostr_event_id != args[1] and outcome_ok:
        return [("BRIDGE-3", f"{oid} sent as {old.nostr_event_id} accepted another event id")]
    if reducer == "record_bridge_failure" and wrote and old is not None and new is not None \
            and new.next_attempt_at != new.updated_at + 1000 * args[2]:
        return [("BRIDGE-3", f"failure of {oid} with retry_after_ms {args[2]}: next_attempt_at "
                             f"{new.next_attempt_at}, updated_at {new.updated_at}")]
    return []


def check_call(before: DbState, scopes: frozenset[str], granted: bool, reducer: str, args: tuple[Any, ...],
               outcome_ok: bool, ret: int | None, error_code: ErrorCode | None, wrote: bool,
               after: DbState, identity: str | None = None) -> list[Violation]:
    """Call-level invariants.  ``granted``: the caller holds a grant for the call's stream (if any);
    ``identity``: the caller's (None: the checks that need it are skipped)."""
    v: list[Violation] = []
    # DELIV-4 is not checked here: a failed call returns an Err, which carries no state, so "the state
    # after a failure" is the harness's own copy of the state before.  The system harness checks it where
    # it can fail: the server's state, offset and every connection's queue around each call (spec.system).
    if reducer == "update_compute_assignment" and identity is not None:
        v += _check_update_roles(before, scopes, identity, args, outcome_ok, error_code, after)
    if reducer in ("enqueue_bridge_event", "mark_bridge_event_sent", "record_bridge_failure"):
        v += _check_outbox_call(before, reducer, args, outcome_ok, error_code, wrote, after)
    if reducer == "append_sync_event":
        stream_id, key, payload_json = args[0], args[1], args[2]
        if "sync.append" not in scopes:
            if error_code is not ErrorCode.MISSING_SCOPE:
                v.append(("AUTH-2", f"append without scope gave {error_code}"))
            return v
        if not granted:
            if error_code is not ErrorCode.FORBIDDEN_STREAM:
                v.append(("AUTH-2", f"append without grant gave {error_code}"))
            return v
        existing = before.find(SyncEvent, lambda e: e.stream_id == stream_id and e.idempotency_key == key)
        try:
            from spec.canonical import canonicalize
            digest: str | None = payload_hash(canonicalize(payload_json))
        except Exception:
            digest = None
        arg_error = error_code in (ErrorCode.INVALID_ARGUMENT, ErrorCode.NON_CANONICAL_PAYLOAD,
                                   ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.PAYLOAD_HASH_MISMATCH)
        if existing is not None and digest is not None and not arg_error:
            if existing.payload_hash == digest:
                if not outcome_ok or ret != existing.seq or wrote:
                    v.append(("IDEM-2", f"retry of {stream_id}/{key} gave ok={outcome_ok} ret={ret} wrote={wrote}"))
            elif error_code is not ErrorCode.IDEMPOTENCY_CONFLICT:
                v.append(("IDEM-3", f"different payload under {stream_id}/{key} gave {error_code}"))
        if outcome_ok and wrote:
            s = before.find(SyncStream, lambda r: r.stream_id == stream_id)
            head = s.head_seq if s else 0
            if ret != head + 1:
                v.append(("SEQ-4", f"append to {stream_id} returned {ret}, head was {head}"))
    return v


# --- convergence ------------------------------------------------------------------------------


ConvergenceView = tuple[int | None, int, int, Sequence[tuple[int, str]], bool]
"""One followed stream of a client after quiescence: (epoch, base, watermark, applied (seq, hash), rehydrating)."""


def _covers(grants: Sequence[str], stream_id: str) -> bool:
    """Does a claim's ``oa_sync_streams`` cover ``stream_id``?  The second opinion on
    :func:`spec.auth.stream_granted`, written as a regular expression per grant (``*`` at the end: any
    tail, else the whole id) rather than string prefix comparisons."""
    for g in grants:
        pattern = re.escape(g[:-1]) + ".*" if g.endswith("*") else re.escape(g)
        if re.fullmatch(pattern, stream_id, flags=re.DOTALL):
            return True
    return False


def check_convergence(clients: Iterable[tuple[str, frozenset[str], Sequence[str], Mapping[str, ConvergenceView],
                                              Mapping[str, str]]],
                      db: DbState, ledger: Sequence[SyncEvent], *, unconfirmed: Iterable[str] = (),
                      floors_committed: Mapping[str, int] | None = None) -> list[Violation]:
    """REPLAY-2 after quiescence.  ``clients``: (client, its scopes, its stream grants, its followed streams'
    views, the error code of each stream the server refused it).  Which streams must converge is computed
    here from the claims; a refusal of a readable stream is a violation, never a reason to skip it.

    A client without confirmed reads (``unconfirmed``) may have read a retention window from a compaction
    that a crash then lost: it holds the events from that floor on, and the recovered stream retains
    older ones again (until the next compaction).  Its view may so start at any floor a compaction
    committed, durable or not (``floors_committed``, the highest per stream; a lost reset's floor does not
    count: its epoch cannot be continued, so who saw it rebootstraps); its events from there on must still
    be exactly the authority's.  A confirmed client reads only durable floors."""
    v: list[Violation] = []
    streams = _by(db.of_type(SyncStream), "stream_id")
    lost_window_ok, seen = frozenset(unconfirmed), floors_committed or {}
    for client, scopes, grants, views, refused in clients:
        for sid, (epoch, base, last, applied, rehydrating) in sorted(views.items()):
            readable = "sync.subscribe" in scopes and _covers(grants, sid)
            if not readable:
                if refused.get(sid) not in ("forbidden_stream", "missing_scope") or applied:
                    v.append(("REPLAY-2", f"{client}/{sid}: not readable by its claims, refused with "
                                          f"{refused.get(sid)}, holds {len(applied)} events"))
                continue
            if sid in refused:
                v.append(("REPLAY-2", f"{client}/{sid}: readable by its claims but refused ({refused[sid]})"))
                continue
            s = streams.get(sid)
            cur_epoch, head, floor = (s.epoch, s.head_seq, s.floor_seq) if s else (db.epoch_floor, 0, 1)
            truth = [(e.seq, e.payload_hash) for e in sorted(ledger, key=lambda e: e.seq)
                     if e.stream_id == sid and e.epoch == cur_epoch and base < e.seq <= head]
            if rehydrating or epoch != cur_epoch or last != head:
                v.append(("REPLAY-2", f"{client}/{sid}: at epoch {epoch} seq {last} (rehydrating {rehydrating}), "
                                      f"server at {cur_epoch}/{head}"))
            elif base > max(floor - 1, 0) and not (client in lost_window_ok and base <= seen.get(sid, 0) - 1):
                v.append(("REPLAY-2", f"{client}/{sid}: holds events from {base + 1} only, the server retains "
                                      f"from {floor}"))
            elif list(applied) != truth:
                v.append(("REPLAY-2", f"{client}/{sid}: view differs from the authority"))
    return v
