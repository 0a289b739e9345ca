"""Correspondence: the Z3 transition relations of ``proofs.encoding`` describe ``spec.reducers``.

For every encoded database transition, Hypothesis builds a concrete state by running the model
(random reducer calls and system transactions from an empty ``DbState``, kept within the
encoding's bounds), draws one action, runs the Python model, and checks that the relation

1. accepts exactly that (pre, action, post, result, delta) -- it is *sat* with all of them fixed;
2. admits no other post -- with pre and action fixed, ``post != python post`` is *unsat*.

So the encoding the proofs reason about cannot drift from the executable model unnoticed.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from proofmap import (
    CLIENTS,
    OUTBOXES,
    PROVIDERS,
    REQUESTS,
    SESSIONS,
    STREAMS,
    Interner,
    Relation,
    action,
    bind,
    db,
    delta,
    fits,
    policy,
    result,
    retention,
    windows,
)

from proofs import encoding as E
from proofs.core import fresh
from spec.auth import Claims
from spec.canonical import canonicalize, payload_hash
from spec.policy import Policy, StreamClass
from spec.reducers import CallContext, Ok, call, compact, disconnect_sessions, presence_sweep, unclean_restart
from spec.state import DbState
from spec.transitions import ASSIGNMENT_TRANSITIONS
from spec.values import (
    BridgeOutbox,
    ComputeAssignment,
    ProviderCapability,
    SessionPresence,
    SyncCheckpoint,
    SyncEvent,
    SyncStream,
)

ALL = frozenset({"sync.subscribe", "sync.append", "sync.checkpoint.write", "presence.write", "provider.publish",
                 "compute.request", "compute.assign", "compute.execute", "bridge.enqueue", "bridge.mark_sent",
                 "sync.admin"})
A = Claims("a" * 64, ALL, ("s.*",))
B = Claims("b" * 64, ALL, ("s.*",))
NARROW = Claims("c" * 64, ALL, ("s.a*",))
NOBODY = Claims("c" * 64, frozenset(), ("s.*",))
ASSIGNER = Claims("d" * 64, frozenset({"compute.assign"}), ())
EXECUTOR = Claims("e" * 64, frozenset({"compute.execute", "bridge.mark_sent"}), ())
SESSIONED = Claims("a" * 64, ALL, ("s.*",), device_id="dev1", session_id="p1")
CALLERS = (A, A, A, B, B, NARROW, NOBODY, ASSIGNER, EXECUTOR, SESSIONED)

POLICY = Policy(classes=(("s.b", StreamClass("aged", max_payload_bytes=14, retain_age_us=3_000_000,
                                             replay_budget=4)),),
                default_class=StreamClass("default", retain_count=3, replay_budget=6),
                presence_min_ttl_ms=1000, presence_max_ttl_ms=5000, bridge_max_attempts=3,
                retain_offline_presence_us=2_000_000, retain_terminal_assignment_us=3_000_000,
                retain_sent_outbox_us=1_000_000, retain_failed_outbox_us=None)

KEYS = ("k1", "k2", "k3", "k4", "k5", "k6", "k7", "bad key")
PAYLOADS = ('{"v":1}', '{"v":2}', "[1,2]", '{"b":1,"a":2}', '"x"', "{", '{"long":"xxxxxxxxxxxxxxxxxxxx"}')
STATUSES = ("open", "assigned", "running", "completed", "failed", "cancelled", "weird")

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])

# --- drawing calls -----------------------------------------------------------------------------------------


class Chooser:
    """Choices from Hypothesis (``data``) or from a seeded ``random.Random``."""

    def __init__(self, data: st.DataObject | None = None, rng: random.Random | None = None) -> None:
        self.data, self.rng = data, rng

    def choice(self, items: Sequence[Any]) -> Any:
        if self.data is not None:
            return self.data.draw(st.sampled_from(list(items)))
        assert self.rng is not None
        return self.rng.choice(list(items))

    def integer(self, lo: int, hi: int) -> int:
        if self.data is not None:
            return self.data.draw(st.integers(lo, hi))
        assert self.rng is not None
        return self.rng.randint(lo, hi)

    def boolean(self) -> bool:
        return bool(self.integer(0, 1))


Call = tuple[str, Claims, tuple[Any, ...]]


def _head(d: DbState, sid: str) -> tuple[int, int]:
    s = d.find(SyncStream, lambda r: r.stream_id == sid)
    return (s.epoch, s.head_seq) if s else (d.epoch_floor, 0)


def draw_call(ch: Chooser, d: DbState, reducer: str, valid: bool = False) -> Call:
    """One call of ``reducer``, often aimed at the state's existing rows (retries, near-misses,
    lower acks, identical republishes, edges that exist) so that each branch of the reducer is hit.
    ``valid``: well-formed arguments only (to build states)."""
    aim = ch.boolean()  # aim at an existing row
    flaw = -1 if valid else ch.integer(0, 6)  # which argument is malformed (if any)
    seen = [0]

    def oneof(good: list[Any], bad: list[Any]) -> Any:
        """A well-formed value -- except for at most one argument per call, chosen by ``flaw``."""
        if bad:
            seen[0] += 1
            if seen[0] - 1 == flaw:
                return ch.choice(bad)
        return ch.choice(good)

    c = oneof([A, A, B], list(CALLERS[5:]))  # sometimes a caller short of scopes, grants or roles

    if reducer == "append_sync_event":
        sid = ch.choice(STREAMS)
        mine = [e for e in d.of_type(SyncEvent) if e.stream_id == sid]
        if aim and mine:
            old = ch.choice(mine)
            key, payload = old.idempotency_key, ch.choice([old.payload, old.payload, *PAYLOADS[:2]])
        elif ch.boolean():
            key, payload = f"n{len(mine)}", oneof(list(PAYLOADS[:5]), list(PAYLOADS[5:]))  # a fresh key
        else:
            key, payload = oneof(list(KEYS[:-1]), list(KEYS[-1:])), oneof(list(PAYLOADS[:5]), list(PAYLOADS[5:]))
        try:
            good = payload_hash(canonicalize(payload))
        except Exception:
            good = "sha256:" + "1" * 64
        h = oneof([None, None, good], ["sha256:" + "0" * 64])
        exp = ch.choice([None, 0, 1, -1, -2] if aim else [None, None, None, 0, 0, 1, -1, -2])
        return reducer, c, (sid, key, payload, h, None if exp is None else max(0, _head(d, sid)[1] + 1 + exp))
    if reducer == "ack_checkpoint":
        ckpts = list(d.of_type(SyncCheckpoint))
        if aim and ckpts:
            old_ck = ch.choice(ckpts)
            owners = [x for x in (A, B) if x.identity == old_ck.owner]
            c = ch.choice([c, *owners, *owners, *owners])
            epoch = ch.choice([_head(d, old_ck.stream_id)[0], old_ck.epoch])
            step = ch.choice([-1, -2, -1, 0, 1] if valid else [-2, -1, -1, 0, 1, 1])  # lower, equal or raising acks
            return reducer, c, (old_ck.client_id, old_ck.stream_id, epoch, max(0, old_ck.last_applied_seq + step))
        sid = ch.choice(STREAMS)
        epoch, head = _head(d, sid)
        return reducer, c, (ch.choice(CLIENTS), sid, max(0, epoch + ch.choice([0, 0, 0, -1, 1])),
                            max(0, head + ch.choice([0, -1, -2, 1])))
    if reducer == "upsert_presence":
        present = list(d.of_type(SessionPresence))
        if aim and present and not valid:  # an existing session upserted again by its owner: as it is, or changed
            sp: SessionPresence = ch.choice(present)
            owner = next((x for x in (A, B) if x.identity == sp.identity), c)
            if ch.boolean():
                return reducer, owner, _same_presence(sp)
            return reducer, ch.choice([owner, owner, owner, c]), (
                sp.session_id, ch.choice([sp.device_id, "dev1", "dev2"]), "n1",
                ch.choice([sp.status, "online", "away", "offline"]), ch.choice([sp.region, "eu", ""]),
                ch.choice([1000, 3000, 5000]))
        return reducer, c, (ch.choice(SESSIONS), oneof(["dev1", "dev2"], ["bad dev"]),
                            "n1", oneof(["online", "away", "offline"], ["busy"]), oneof(["eu", ""], ["bad region"]),
                            oneof([1000, 3000, 5000], [500, 6000]))
    if reducer == "publish_provider_capability":
        provs = list(d.of_type(ProviderCapability))
        if aim and provs:
            p = ch.choice(provs)
            owner = next((x for x in (A, B) if x.identity == p.owner), c)
            if not valid and ch.boolean():  # a republish changing one column, which must be written
                which = ch.choice(["capability", "kinds", "price", "status"])
                return reducer, owner, (
                    p.provider_id,
                    next(x for x in PAYLOADS[:3] if x != p.capability) if which == "capability" else p.capability,
                    ((5001,) if p.nip90_kinds != (5001,) else (5000,)) if which == "kinds" else p.nip90_kinds,
                    p.price_hint_sats + 1 if which == "price" else p.price_hint_sats,
                    ("withdrawn" if p.status == "active" else "active") if which == "status" else p.status)
            return reducer, owner, (p.provider_id, p.capability, p.nip90_kinds, p.price_hint_sats,
                                    ch.choice([p.status, "active"]))
        return reducer, c, (ch.choice(PROVIDERS), oneof(list(PAYLOADS[:3]), ["{"]),
                            oneof([(5000,), (5001, 5000, 5001)], [(4000,)]), ch.choice([0, 10]),
                            oneof(["active", "withdrawn"], ["gone"]))
    if reducer == "open_compute_assignment":
        return reducer, c, (ch.choice(REQUESTS), oneof([5000, 5001], [4000]),
                            oneof(list(PAYLOADS[:2]), ["{"]))
    if reducer == "update_compute_assignment":
        rid = ch.choice(REQUESTS)
        movable = [r.request_id for r in d.of_type(ComputeAssignment)
                   if any(f == r.status for f, _ in ASSIGNMENT_TRANSITIONS)]
        if aim and movable and not valid:  # a row with an edge out of it (the setup's draws stay as they are)
            rid = ch.choice(movable)
        row = d.find(ComputeAssignment, lambda r: r.request_id == rid)
        onward = [t for f, t in ASSIGNMENT_TRANSITIONS if row is not None and f == row.status]
        if aim and row is not None and onward:  # an edge that exists, taken properly
            status = ch.choice(onward)
            # the edge's roles are tried by a likely holder (A) and by others: B and EXECUTOR hold
            # compute.execute without owning the provider, which only the role's identity column refuses
            return reducer, ch.choice([A, A, c, B, EXECUTOR]), (
                rid, row.version, status,
                ch.choice(["prov1", "prov1", "prov2"]) if status == "assigned" else None,
                ch.choice([None, '{"ok":true}']) if status in ("completed", "failed") else None)
        version = (row.version if row else 1) + ch.choice([0, 0, 0, 1])
        status = ch.choice(STATUSES)
        provider = "prov1" if status == "assigned" and ch.boolean() else None
        return reducer, c, (rid, version, status,
                            provider or oneof([None, None, "prov1", "prov2"], ["bad prov"]),
                            oneof([None, None, '{"ok":true}'], ["{"]))
    if reducer == "enqueue_bridge_event":
        rows = list(d.of_type(BridgeOutbox))
        if aim and rows and not valid:  # a retry, or the same id with one of source, kind, tags, content changed
            b = ch.choice(rows)
            which = ch.choice(["none", "none", "source", "kind", "tags", "content"])
            return reducer, c, (b.outbox_id, "other" if which == "source" and b.source == "src" else
                                "src" if which == "source" else b.source,
                                31990 if which == "kind" and b.nostr_kind == 30078 else
                                30078 if which == "kind" else b.nostr_kind,
                                '[["t","y"]]' if which == "tags" else ch.choice([b.tags, f" {b.tags} "]),
                                b.content + "!" if which == "content" else b.content)
        return reducer, c, (ch.choice(OUTBOXES), oneof(["src", "src", "other"], ["bad src"]),
                            oneof([30078, 31990], [1]),
                            oneof(['[["t","x"]]', *([] if valid else ['[ ["t","x"] ]', "[]"])], ["[1]", "{"]),
                            ch.choice(["hello", "bye"]))
    if reducer == "mark_bridge_event_sent":
        rows = [b for b in d.of_type(BridgeOutbox) for _ in range(3 if b.status == "sent" else 1)]
        relays = oneof([(), ("wss://r1",), ("wss://r2", "wss://r1", "wss://r1"), *([] if valid else [("wss://r3",)])],
                       [("",)])
        if aim and rows and not valid:  # an existing row; a sent one marked again with its event id (or another)
            b = ch.choice(rows)
            if b.nostr_event_id is None:
                return reducer, c, (b.outbox_id, ch.choice(["1" * 64, "2" * 64]), relays)
            eid = ch.choice([b.nostr_event_id, b.nostr_event_id, b.nostr_event_id, "3" * 64])
            return reducer, c, (b.outbox_id, eid, ch.choice([("wss://r3", "wss://r1"), ("wss://r4",), relays,
                                                             ("wss://r2", "wss://r4"), b.relays_acked,
                                                             b.relays_acked[:1]]))
        return reducer, c, (ch.choice(OUTBOXES), oneof(["1" * 64, "2" * 64], ["zz"]), relays)
    if reducer == "record_bridge_failure":
        pending = [b.outbox_id for b in d.of_type(BridgeOutbox) if b.status == "pending"]
        if aim and pending:
            return reducer, EXECUTOR, (ch.choice(pending), "relay down", 1000 if valid else ch.choice([0, 1000, 2500]))
        return reducer, c, (ch.choice(OUTBOXES), oneof(["relay down", "down"], ["", "x" * 2000]),
                            oneof([1000, *([] if valid else [0, 86_400_000])], [10**12, 86_400_001]))
    if reducer == "publish_stream_signal":
        return reducer, c, (ch.choice(STREAMS), oneof(["typing", "custom"], ["bogus"]),
                            oneof(list(PAYLOADS[:5]), list(PAYLOADS[5:])))
    if reducer == "reset_stream_epoch":
        return reducer, c, (ch.choice(STREAMS),)
    raise KeyError(reducer)


REDUCERS = tuple(t.name for t in E.DB_TRANSITIONS if t.reducer)
SETUP_WEIGHTS = (("append_sync_event", 10), ("ack_checkpoint", 3), ("upsert_presence", 3),
                 ("publish_provider_capability", 2), ("open_compute_assignment", 2), ("update_compute_assignment", 3),
                 ("enqueue_bridge_event", 2), ("mark_bridge_event_sent", 1), ("record_bridge_failure", 2),
                 ("reset_stream_epoch", 1), ("presence_sweep", 1), ("compact", 2), ("unclean_restart", 1),
                 ("disconnect_sessions", 1), ("assignment_flow", 2), ("burst", 2), ("failures", 1), ("acks", 2))
SETUP_OPS = tuple(name for name, w in SETUP_WEIGHTS for _ in range(w))


def build_state(data: st.DataObject) -> tuple[DbState, int, int]:
    """Run a random prefix of the model from the empty state: (state, now, next offset).  The prefix
    is generated from one drawn seed (cheap to draw; the states it reaches are what matters)."""
    ch = Chooser(rng=random.Random(data.draw(st.integers(0, 2**32 - 1), label="setup seed")))
    d, now, offset = DbState(), 1_000_000, 1
    for _ in range(ch.integer(0, 20)):
        op = ch.choice(SETUP_OPS)
        now += ch.choice([0, 500_000, 2_000_000])
        after: DbState
        if op == "presence_sweep":
            after = presence_sweep(d, now).state
        elif op == "compact":
            after = compact(d, now, POLICY).state
        elif op == "unclean_restart":
            after = unclean_restart(d, now, ch.integer(1, 4))
        elif op == "disconnect_sessions":
            after = disconnect_sessions(d, now, ch.choice([A, B]).identity, frozenset(SESSIONS)).state
        elif op in ("assignment_flow", "burst", "failures", "acks"):
            after = _guided(ch, d, op, now, offset)
        else:
            _r, claims, args = draw_call(ch, d, op, valid=True)
            out = call(d, CallContext(claims, now, offset, POLICY), op, args)
            after = out.state if isinstance(out, Ok) else d
        if fits(after):
            if after is not d:
                offset += 1
            d = after
    return d, now, offset


def _guided(ch: Chooser, d: DbState, op: str, now: int, offset: int) -> DbState:
    """Multi-step scenarios random calls rarely reach: an assignment walked along its edge table,
    a burst of appends with fresh keys."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    if op == "assignment_flow":
        rid = ch.choice(REQUESTS)
        row = d.find(ComputeAssignment, lambda r: r.request_id == rid)
        status, version = (row.status, row.version) if row else ("open", 1)
        if d.find(ProviderCapability, lambda r: r.provider_id == "prov1") is None:
            calls.append(("publish_provider_capability", ("prov1", '{"gpu":1}', (5000, 5001), 0, "active")))
        if row is None:
            calls.append(("open_compute_assignment", (rid, 5000, '{"v":1}')))
        for _ in range(ch.integer(1, 3)):
            onward = [t for f, t in ASSIGNMENT_TRANSITIONS if f == status]
            if not onward:
                break
            status = ch.choice(onward)
            result_json = '{"ok":true}' if status in ("completed", "failed") and ch.boolean() else None
            calls.append(("update_compute_assignment",
                          (rid, version, status, "prov1" if status == "assigned" else None, result_json)))
            version += 1
    elif op == "acks":
        sid = ch.choice(STREAMS)
        calls += [("append_sync_event", (sid, f"a{offset}.{k}", '{"v":2}', None, None)) for k in range(2)]
        epoch, head = _head(d, sid)
        for k in range(2):
            calls.append(("ack_checkpoint", (ch.choice(CLIENTS), sid, epoch, head + 2 - k)))
    elif op == "failures":
        oid = ch.choice(OUTBOXES)
        calls.append(("enqueue_bridge_event", (oid, "src", 30078, '[["t","x"]]', "hello")))
        calls += [("record_bridge_failure", (oid, "relay down", 1000))] * ch.integer(1, 3)
    else:
        sid = ch.choice(STREAMS)
        for _ in range(3):
            calls.append(("append_sync_event", (sid, f"b{offset}.{len(calls)}", '{"v":1}', None, None)))
    for k, (reducer, args) in enumerate(calls):
        out = call(d, CallContext(A, now, offset + k, POLICY), reducer, args)
        if isinstance(out, Ok) and fits(out.state):
            d = out.state
    return d


OUTBOX_REDUCERS = ("enqueue_bridge_event", "mark_bridge_event_sent", "record_bridge_failure")
ASSIGNMENT_REDUCERS = ("open_compute_assignment", "update_compute_assignment")


def assignment_history(data: st.DataObject, d: DbState, now: int, offset: int) -> tuple[DbState, int, int]:
    """One assignment walked 0-3 edges of the edge table on top of a drawn state, for the assignment
    reducers' tests: assigned and running rows -- the only ones the executor edges and their role
    checks act on -- are otherwise a few percent of drawn states, too few for a planted bug in those
    checks (``execute_by_scope_alone``) to be caught whatever the seed.  (Drawn here, not in
    :func:`build_state`, so the setup's draws stay as they are.)"""
    ch = Chooser(rng=random.Random(data.draw(st.integers(0, 2**32 - 1), label="assignment seed")))
    if d.find(ProviderCapability, lambda r: r.provider_id == "prov1") is None:
        d, offset = _call_ok(d, now, offset, "publish_provider_capability", ("prov1", '{"gpu":1}', (5000, 5001), 0,
                                                                            "active"))
    for rid in REQUESTS:
        if not ch.integer(0, 3):
            continue  # this request as the state has it
        row = d.find(ComputeAssignment, _request(rid))
        if row is None:
            d, offset = _call_ok(d, now, offset, "open_compute_assignment", (rid, 5000, '{"v":1}'))
            row = d.find(ComputeAssignment, _request(rid))
        for _ in range(ch.choice([0, 0, 1, 1, 2, 3])):  # open, assigned or running, mostly
            onward = [t for f, t in ASSIGNMENT_TRANSITIONS if row is not None and f == row.status]
            if row is None or not onward:
                break
            status = ch.choice([t for t in onward if t != "cancelled"] * 3 + onward)
            d, offset = _call_ok(d, now, offset, "update_compute_assignment", (
                rid, row.version, status, "prov1" if status == "assigned" else None,
                '{"ok":true}' if status in ("completed", "failed") and ch.boolean() else None))
            row = d.find(ComputeAssignment, _request(rid))
    prov = d.find(ProviderCapability, lambda r: r.provider_id == "prov1")
    if prov is not None and not ch.integer(0, 2):  # withdrawn, or not advertising kind 5000: assigning it is refused
        owner = B if prov.owner == B.identity else A
        d, offset = _call_ok(d, now, offset, "publish_provider_capability", ("prov1", '{"gpu":1}', *ch.choice(
            [((5000, 5001), 0, "withdrawn"), ((5001,), 0, "active")])), owner)
    return d, now, offset


def checkpoint_history(data: st.DataObject, d: DbState, now: int, offset: int) -> tuple[DbState, int, int]:
    """For ``ack_checkpoint``'s test: a quarter of the time the stream of a checkpoint is reset to a new
    epoch, so that acks moving a checkpoint to another epoch (CKPT-2's other branch) are drawn too."""
    ch = Chooser(rng=random.Random(data.draw(st.integers(0, 2**32 - 1), label="checkpoint seed")))
    ckpts = sorted({k.stream_id for k in d.of_type(SyncCheckpoint)})
    if ckpts and not ch.integer(0, 3):
        d, offset = _call_ok(d, now, offset, "reset_stream_epoch", (ch.choice(ckpts),))
    return d, now, offset


def _same_presence(sp: SessionPresence) -> tuple[Any, ...]:
    """The upsert arguments that write ``sp`` again (the TTL read off it when within the policy)."""
    ttl = (sp.expires_at - sp.last_seen) // 1000
    return (sp.session_id, sp.device_id, sp.node_id, sp.status, sp.region,
            ttl if POLICY.presence_min_ttl_ms <= ttl <= POLICY.presence_max_ttl_ms else 3000)


def presence_history(data: st.DataObject, d: DbState, now: int, offset: int) -> tuple[DbState, int, int]:
    """For ``upsert_presence``'s test: a third of the time a session is upserted again now by its owner, so
    that a repeated identical upsert (PRES-2's no-op branch) is drawn too."""
    ch = Chooser(rng=random.Random(data.draw(st.integers(0, 2**32 - 1), label="presence seed")))
    present = list(d.of_type(SessionPresence))
    if present and not ch.integer(0, 2):
        sp: SessionPresence = ch.choice(present)
        d, offset = _call_ok(d, now, offset, "upsert_presence", _same_presence(sp),
                             B if sp.identity == B.identity else A)
    return d, now, offset


def _request(rid: str) -> Callable[[ComputeAssignment], bool]:
    return lambda r: r.request_id == rid


def _call_ok(d: DbState, now: int, offset: int, reducer: str, args: tuple[Any, ...],
             caller: Claims = A) -> tuple[DbState, int]:
    """``reducer(args)`` (by A), kept when it succeeds and stays within the bounds."""
    out = call(d, CallContext(caller, now, offset, POLICY), reducer, args)
    return (out.state, offset + 1) if isinstance(out, Ok) and fits(out.state) else (d, offset)


def outbox_history(data: st.DataObject, d: DbState, now: int, offset: int) -> tuple[DbState, int, int]:
    """One outbox row's life on top of a drawn state, for the outbox reducers' tests: enqueued, failed
    0-3 times with varied backoffs, maybe sent, maybe acknowledged again by another relay.  (Drawn here
    rather than in :func:`build_state`: the setup's draws, which every derandomized check of this file
    replays, stay as they are.)"""
    ch = Chooser(rng=random.Random(data.draw(st.integers(0, 2**32 - 1), label="outbox seed")))
    oid = ch.choice(OUTBOXES)
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("enqueue_bridge_event", (oid, ch.choice(["src", "other"]), 30078, '[["t","x"]]', "hello"))]
    calls += [("record_bridge_failure", (oid, "relay down", ch.choice([0, 1000, 2500])))
              for _ in range(ch.choice([0, 1, 2, 2, 3]))]  # 2: one short of the dead letter
    if ch.boolean():
        calls.append(("mark_bridge_event_sent", (oid, "1" * 64, ("wss://r1",))))
        if ch.boolean():
            calls.append(("mark_bridge_event_sent", (oid, "1" * 64, ("wss://r2",))))
    for reducer, args in calls:
        out = call(d, CallContext(A, now, offset, POLICY), reducer, args)
        if isinstance(out, Ok):
            d, offset = out.state, offset + 1
    return d, now, offset


# --- the relations, asserted once --------------------------------------------------------------------------


class DbRelation:
    def __init__(self, name: str) -> None:
        t = E.DB_TRANSITION_BY_NAME[name]
        self.pre, self.post = E.Db.fresh("pre"), E.Db.fresh("post")
        self.act = t.action("act")
        self.res, self.delta = fresh(E.Result, "result"), E.Delta.fresh("delta")
        self.pol = fresh(E.Policy, "policy")
        self.rel = Relation(t.relation(self.pre, self.act, self.post, self.res, self.delta, self.pol))

    def check(self, i: Interner, pre: DbState, act: object, post: DbState, outcome: Any, dl: Any) -> None:
        given = [*bind(self.pre, db(i, pre)), *bind(self.act, act), *bind(self.pol, policy(POLICY))]
        want = {"post": bind(self.post, db(i, post)), "result": bind(self.res, result(outcome)),
                "delta": bind(self.delta, delta(i, dl))}
        verdict = self.rel.check([*given, *i.axioms()], want,
                                 (("pre", self.pre), ("action", self.act), ("post", self.post), ("result", self.res),
                                  ("delta", self.delta)))
        assert verdict.accepts == "sat", f"{verdict.detail}\npython: {outcome!r}"
        assert verdict.unique == "unsat", f"{verdict.detail}\npython: {outcome!r}"


_RELATIONS: dict[str, DbRelation] = {}


def relation(name: str) -> DbRelation:
    if name not in _RELATIONS:
        _RELATIONS[name] = DbRelation(name)
    return _RELATIONS[name]


# --- the tests ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reducer", REDUCERS)
@SETTINGS
@given(data=st.data())
def test_reducer_relation_matches_the_model(reducer: str, data: st.DataObject) -> None:
    pre, now, offset = build_state(data)
    if reducer in OUTBOX_REDUCERS:
        pre, now, offset = outbox_history(data, pre, now, offset)
    if reducer in ASSIGNMENT_REDUCERS:
        pre, now, offset = assignment_history(data, pre, now, offset)
    if reducer == "ack_checkpoint":
        pre, now, offset = checkpoint_history(data, pre, now, offset)
    if reducer == "upsert_presence":
        pre, now, offset = presence_history(data, pre, now, offset)
    _r, claims, args = draw_call(Chooser(data), pre, reducer)
    outcome = call(pre, CallContext(claims, now, offset, POLICY), reducer, args)
    post = outcome.state if isinstance(outcome, Ok) else pre
    if not fits(post):
        return  # beyond the encoding's bounds (a K+1-th event): no successor by design
    i = Interner()
    act = action(i, reducer, claims, args, now, POLICY)
    relation(reducer).check(i, pre, act, post, outcome, outcome.delta if isinstance(outcome, Ok) else None)


@SETTINGS
@given(data=st.data())
def test_presence_sweep_relation(data: st.DataObject) -> None:
    pre, now, _ = build_state(data)
    expiries = [p.expires_at for p in pre.of_type(SessionPresence)]
    if expiries and data.draw(st.sampled_from([True, True, False])):  # at an expiry (the boundary) mostly
        now = data.draw(st.sampled_from(expiries)) + data.draw(st.sampled_from([0, 0, 0, -1, 1]))
    else:
        now += data.draw(st.sampled_from([0, 1_000_000, 3_000_000, 6_000_000]))
    out = presence_sweep(pre, now)
    relation("presence_sweep").check(Interner(), pre, E.SweepAct(now), out.state, out, out.delta)


@SETTINGS
@given(data=st.data())
def test_disconnect_sessions_relation(data: st.DataObject) -> None:
    pre, now, _ = build_state(data)
    live = [p for p in pre.of_type(SessionPresence) if p.status != "offline"]
    aimed: bool = data.draw(st.booleans())
    if live and aimed:  # at a live row's expiry (an expired row not swept yet), by its owner
        row = data.draw(st.sampled_from(live))
        now = max(now, row.expires_at + data.draw(st.sampled_from([0, 0, -1, 1])))
        who = data.draw(st.sampled_from([x for x in (A, B) if x.identity == row.identity] or [A]))
    else:
        now += data.draw(st.sampled_from([0, 1_000_000, 6_000_000]))
        who = data.draw(st.sampled_from([A, B, NOBODY]))
    sessions = frozenset(data.draw(st.lists(st.sampled_from(SESSIONS), unique=True)))
    if live and aimed:  # the aimed row's session is among those closed
        sessions |= {row.session_id}
    out = disconnect_sessions(pre, now, who.identity, sessions)
    i = Interner()
    act = E.DisconnectAct(now, i(who.identity), tuple(s in sessions for s in SESSIONS))
    relation("disconnect_sessions").check(i, pre, act, out.state, out, out.delta)


@SETTINGS
@given(data=st.data())
def test_compact_relation(data: st.DataObject) -> None:
    pre, now, _ = build_state(data)
    now += data.draw(st.sampled_from([0, 1_000_000, 4_000_000]))
    out = compact(pre, now, POLICY)
    relation("compact").check(Interner(), pre, E.CompactAct(now, retention(POLICY), windows(POLICY)), out.state, out,
                              out.delta)


@SETTINGS
@given(data=st.data())
def test_unclean_restart_relation(data: st.DataObject) -> None:
    pre, now, _ = build_state(data)
    undurable = data.draw(st.integers(1, 8))
    post = unclean_restart(pre, now, undurable)
    relation("unclean_restart").check(Interner(), pre, E.RestartAct(undurable), post, None, None)


def _walked(status: str, provider_ad: tuple[tuple[int, ...], str]) -> DbState:
    """A state holding request r1 (kind 5000, requested by A) walked along the edge table to ``status``,
    and prov1 (A's) advertising ``provider_ad`` (kinds, status) -- published as available for the walk,
    then republished as given."""
    d, offset = DbState(), 1
    d, offset = _call_ok(d, 1_000_000, offset, "publish_provider_capability", ("prov1", "{}", (5000,), 0, "active"))
    d, offset = _call_ok(d, 1_000_000, offset, "open_compute_assignment", ("r1", 5000, '{"v":1}'))
    for to in {"open": (), "assigned": ("assigned",), "running": ("assigned", "running")}[status]:
        row = d.find(ComputeAssignment, _request("r1"))
        assert row is not None
        d, offset = _call_ok(d, 1_000_000, offset, "update_compute_assignment",
                             ("r1", row.version, to, "prov1" if to == "assigned" else None, None))
    d, offset = _call_ok(d, 1_000_000, offset, "publish_provider_capability",
                         ("prov1", "{}", provider_ad[0], 0, provider_ad[1]))
    row = d.find(ComputeAssignment, _request("r1"))
    assert row is not None and row.status == status, (status, row)
    return d


WALKED = [(status, ad) for status in ("open", "assigned", "running")
          for ad in (((5000,), "active"), ((5000,), "withdrawn"), ((5001,), "active"))]


@pytest.mark.parametrize(("status", "provider_ad"), WALKED)
def test_assignment_edges_on_walked_states(status: str, provider_ad: tuple[tuple[int, ...], str]) -> None:
    """Every edge out of an open, assigned or running assignment, taken by each kind of caller (the
    requester and provider owner A, B and EXECUTOR holding compute.execute without owning the
    provider, ASSIGNER holding only compute.assign), assigning an available or unavailable provider:
    the role and provider checks exactly, whatever the random draws reach (``execute_by_scope_alone``
    and ``assign_skips_provider_check`` are caught here deterministically)."""
    pre = _walked(status, provider_ad)
    row = pre.find(ComputeAssignment, _request("r1"))
    assert row is not None
    for (src, to), _roles in ASSIGNMENT_TRANSITIONS.items():
        if src != status:
            continue
        for caller in (A, B, EXECUTOR, ASSIGNER):
            for provider in (("prov1", "prov2") if to == "assigned" else (None,)):
                args = ("r1", row.version, to, provider, '{"ok":true}' if to in ("completed", "failed") else None)
                outcome = call(pre, CallContext(caller, 2_000_000, 9, POLICY), "update_compute_assignment", args)
                post = outcome.state if isinstance(outcome, Ok) else pre
                i = Interner()
                act = action(i, "update_compute_assignment", caller, args, 2_000_000, POLICY)
                relation("update_compute_assignment").check(i, pre, act, post, outcome,
                                                            outcome.delta if isinstance(outcome, Ok) else None)


def test_every_database_transition_is_covered() -> None:
    """Each encoded transition has a correspondence test (the reducers through the parametrized one)."""
    system = {"presence_sweep", "disconnect_sessions", "compact", "unclean_restart"}
    assert {t.name for t in E.DB_TRANSITIONS} == set(REDUCERS) | system
    from spec.reducers import REDUCER_FUNCTIONS

    assert set(REDUCERS) == set(REDUCER_FUNCTIONS), "a reducer of the spec has no encoding"


def test_states_reach_interesting_shapes() -> None:
    """The setup strategy reaches compacted streams, checkpoints and terminal assignments (a guard
    against a correspondence test that only ever sees empty states)."""
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        d, now, _ = build_state(data)
        for later in (0, 1_000_000, 4_000_000):  # the compaction test's clocks
            gone = {td.table for td in compact(d, now + later, POLICY).delta.tables if td.deletes}
            seen.update(f"retention of {t}" for t in gone - {"sync_event"})
        for s in d.of_type(SyncStream):
            if s.floor_seq > 1:
                seen.add("compacted")
            if s.epoch > 1:
                seen.add("new epoch")
            if s.continues_epoch and any(e.stream_id == s.stream_id for e in d.of_type(SyncEvent)):
                seen.add("continued epoch with retained events")  # relabelled by an unclean restart
        if any(True for _ in d.of_type(SyncCheckpoint)):
            seen.add("checkpoint")
        if any(a.status != "open" for a in d.of_type(ComputeAssignment)):
            seen.add("assignment moved")

    probe()
    assert {"compacted", "new epoch", "checkpoint", "assignment moved", "continued epoch with retained events",
            "retention of session_presence", "retention of compute_assignment",
            "retention of bridge_outbox"} <= seen, seen


def _outbox_branch(d: DbState, reducer: str, args: tuple[Any, ...], out: Any) -> str:
    """Which branch of an outbox reducer a call took (read off the rows, not the reducer's code)."""
    old = d.find(BridgeOutbox, lambda r: r.outbox_id == args[0])
    if not isinstance(out, Ok):
        return f"{reducer}: {out.error.code.value} on a {old.status if old else 'missing'} row"
    new = out.state.find(BridgeOutbox, lambda r: r.outbox_id == args[0])
    assert new is not None
    if old is None:
        return "new row"
    if reducer == "enqueue_bridge_event":
        return "retry"
    if reducer == "record_bridge_failure":
        return "failure on a settled row" if out.noop else f"failure leaves the row {new.status}"
    if old.status == "sent":
        return "repeat adding none" if out.noop else "repeat adding a relay"
    return f"first mark of a {old.status} row"


def _outbox_kind(branch: str) -> str:
    """A branch without the status of the row a refusal met (``X: code on a S row`` -> ``X: code``)."""
    return branch.split(" on a ")[0] if ": " in branch else branch


def test_outbox_calls_reach_every_branch() -> None:
    """The outbox calls reach each branch of the three reducers -- a new row, a retry, a conflict from
    another source, a failure counted and one reaching the dead letter, a failure on a settled row, a
    first mark (of a pending and of a failed row), a repeated mark that adds relays and one that adds
    none, a mark with another event id -- through the explicit cases of :data:`OUTBOX_CASES`, whatever
    the draws do (before, only derandomized draws reached them: a check that passed by its seed).  The
    draws (random, not derandomized) must then reach only kinds of branch the table holds (each
    refusal code of each reducer, each accepted branch): a branch the table lacks fails here, so the
    table stays complete."""
    seen = {_outbox_branch(*_branch_of(case)) for case in OUTBOX_CASES}
    wanted = {"new row", "retry", "enqueue_bridge_event: idempotency_conflict on a pending row",
              "failure leaves the row pending", "failure leaves the row failed", "failure on a settled row",
              "first mark of a pending row", "first mark of a failed row", "repeat adding a relay",
              "repeat adding none", "mark_bridge_event_sent: bridge_event_conflict on a sent row"}
    assert wanted <= seen, sorted(wanted - seen)
    drawn: set[str] = set()

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        d, now, offset = outbox_history(data, *build_state(data))
        for reducer in OUTBOX_REDUCERS:
            _r, claims, args = draw_call(Chooser(data), d, reducer)
            drawn.add(_outbox_branch(d, reducer, args, call(d, CallContext(claims, now, offset, POLICY), reducer,
                                                            args)))

    probe()
    kinds = {_outbox_kind(b) for b in seen}
    assert {_outbox_kind(b) for b in drawn} <= kinds, sorted({_outbox_kind(b) for b in drawn} - kinds)


@pytest.mark.parametrize(("dropped", "missing"), [
    ("first mark of a failed row", "first mark of a failed row"),  # a wanted branch no case reaches
    ("record_bridge_failure: missing_scope on a pending row", "record_bridge_failure: missing_scope"),  # drawn
])
def test_the_outbox_branch_check_fails_without_its_case(monkeypatch: pytest.MonkeyPatch, dropped: str,
                                                         missing: str) -> None:
    """The check above can fail: without the case of a wanted branch, or of a kind of branch the draws
    reach (a caller without scopes is one of ten drawn callers, so 100 examples miss it with p ~ 3e-5)."""
    monkeypatch.setattr(sys.modules[__name__], "OUTBOX_CASES", tuple(c for c in OUTBOX_CASES if c[0] != dropped))
    with pytest.raises(AssertionError, match=missing):
        test_outbox_calls_reach_every_branch()


# --- the check has teeth ----------------------------------------------------------------------------------------

_BODIES = {
    "presence_sweep": test_presence_sweep_relation, "compact": test_compact_relation,
    "unclean_restart": test_unclean_restart_relation, "disconnect_sessions": test_disconnect_sessions_relation,
}


_TARGETED = {
    "update_compute_assignment": lambda: [test_assignment_edges_on_walked_states(*case) for case in WALKED] + [
        _check_call_goal_case(*c) for c in CALL_GOAL_CASES if c[2] == "update_compute_assignment"],
    **{name: (lambda name=name: [_check_call_goal_case(*c) for c in CALL_GOAL_CASES if c[2] == name])
       for name in ("append_sync_event", "ack_checkpoint", "upsert_presence")},
    **{name: (lambda name=name: [_check_case(*c) for c in STEERED_CASES + OUTBOX_CASES if c[2] == name])
       for name in ("mark_bridge_event_sent", "record_bridge_failure", "publish_provider_capability",
                    "enqueue_bridge_event")},
}
"""Transitions with a table of explicit cases besides their drawn ones."""


def catches(bug: str, max_examples: int, draws: bool = True) -> bool:
    """Does the correspondence test notice when the relation encodes a planted bug instead of the
    model?  (Runs the transition's explicit cases, then -- with ``draws`` -- the test body, against the
    broken relation; True when some case fails.)"""
    name = E.BUGS[bug][0]
    broken = DbRelation(name)
    t = E.DB_TRANSITION_BY_NAME[name]
    broken.rel = Relation(t.relation(broken.pre, broken.act, broken.post, broken.res, broken.delta, broken.pol,
                                     bug=bug))
    saved = _RELATIONS.get(name)
    _RELATIONS[name] = broken

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def body(data: st.DataObject) -> None:
        if name in _BODIES:
            _BODIES[name].hypothesis.inner_test(data)  # type: ignore[attr-defined]
        else:
            test_reducer_relation_matches_the_model.hypothesis.inner_test(name, data)  # type: ignore[attr-defined]

    try:
        if name in _TARGETED:
            _TARGETED[name]()
        if draws:
            body()
    except AssertionError:
        return True
    finally:
        if saved is None:
            _RELATIONS.pop(name, None)
        else:
            _RELATIONS[name] = saved
    return False


@pytest.mark.parametrize("bug", sorted(E.BUGS))
def test_correspondence_catches_a_planted_bug(bug: str) -> None:
    """Every planted bug of the database encodings makes the correspondence test fail: the test is
    sharp enough to notice an encoding that drifted from the model in any of these ways."""
    assert catches(bug, 150), f"the correspondence test does not notice the encoding bug {bug}"


@pytest.mark.parametrize("bug", ["execute_by_scope_alone", "assign_skips_provider_check"])
def test_the_walked_states_catch_the_role_and_provider_bugs(bug: str) -> None:
    """The explicit assignment cases alone catch the bugs of the role and provider checks, which the
    drawn states reach in a few percent of examples."""
    assert catches(bug, 1, draws=False), f"the walked states do not expose {bug}"


OLDER_CALL_REDUCERS = ("append_sync_event", "ack_checkpoint", "update_compute_assignment", "upsert_presence")


def _call_branch(d: DbState, reducer: str, args: tuple[Any, ...], out: Any) -> str:
    """Which branch of a call goal (SEQ-4, CKPT-2, ASSIGN-1, PRES-2) a call took, read off the rows."""
    if not isinstance(out, Ok):
        return f"{reducer}: {out.error.code.value}"
    if reducer == "append_sync_event":
        sid, key = args[0], args[1]
        retained = d.find(SyncEvent, lambda e: e.stream_id == sid and e.idempotency_key == key)
        if retained is not None:
            return "append: retry of a retained key" + (" (expected seq given)" if args[4] is not None else "")
        new_stream = d.find(SyncStream, lambda s: s.stream_id == sid) is None
        return ("append: a fresh key on a new stream" if new_stream else "append: a fresh key") + (
            " (expected seq = head + 1)" if args[4] is not None else "")
    if reducer == "ack_checkpoint":
        client, sid, epoch, _seq = args
        old_ck = d.find(SyncCheckpoint, lambda k: k.client_id == client and k.stream_id == sid)
        if old_ck is None:
            return "ack: a new checkpoint"
        if out.noop:
            same = old_ck.epoch == epoch
            return "ack: at or below the checkpoint, same epoch" if same else "ack: other epoch, no write"
        return "ack: raises the checkpoint" if old_ck.epoch == epoch else "ack: moves the checkpoint to another epoch"
    if reducer == "update_compute_assignment":
        row = d.find(ComputeAssignment, _request(args[0]))
        assert row is not None
        return f"update: {row.status} -> {args[2]}" + (" (no write)" if out.noop else "")
    old_p = d.find(SessionPresence, lambda p: p.session_id == args[0])
    if old_p is None:
        return "upsert: a new row"
    if out.noop:
        return "upsert: the row already is what it writes"
    return "upsert: a status change" if old_p.status != args[3] else "upsert: same status, other columns"


_S1 = (("append_sync_event", ("s.a", "k1", '{"v":1}', None, None), A),)
_S2 = (*_S1, ("append_sync_event", ("s.a", "k2", '{"v":2}', None, None), A))
_CK = (*_S2, ("ack_checkpoint", ("d1", "s.a", 1, 1), A))
_P1 = (("upsert_presence", ("p1", "dev1", "n1", "online", "eu", 3000), A),)
_OPEN = (("publish_provider_capability", ("prov1", "{}", (5000,), 0, "active"), A),
         ("open_compute_assignment", ("r1", 5000, '{"v":1}'), A))
_ASSIGNED = (*_OPEN, ("update_compute_assignment", ("r1", 1, "assigned", "prov1", None), A))
_RUNNING = (*_ASSIGNED, ("update_compute_assignment", ("r1", 2, "running", None, None), A))
Setup = tuple[tuple[str, tuple[Any, ...], Claims], ...]
CALL_GOAL_CASES: tuple[tuple[str, Setup, str, Claims, tuple[Any, ...]], ...] = (
    # (the branch, the calls that build the state from empty, the reducer, its caller, its arguments)
    ("append: a fresh key on a new stream", (), "append_sync_event", A, ("s.a", "k1", '{"v":1}', None, None)),
    ("append: a fresh key", _S1, "append_sync_event", A, ("s.a", "k2", '{"v":2}', None, None)),
    ("append: a fresh key (expected seq = head + 1)", _S1, "append_sync_event", A, ("s.a", "k2", '{"v":2}', None, 2)),
    ("append: retry of a retained key", _S1, "append_sync_event", A, ("s.a", "k1", '{"v":1}', None, None)),
    ("append: retry of a retained key (expected seq given)", _S2, "append_sync_event", A,
     ("s.a", "k1", '{"v":1}', None, 2)),  # a stale expected seq: the retry is answered all the same
    ("append_sync_event: idempotency_conflict", _S1, "append_sync_event", A, ("s.a", "k1", '{"v":2}', None, None)),
    ("append_sync_event: sequence_conflict", _S1, "append_sync_event", A, ("s.a", "k2", '{"v":2}', None, 5)),
    ("append_sync_event: sequence_conflict", (), "append_sync_event", A, ("s.a", "k1", '{"v":1}', None, 5)),
    ("append_sync_event: payload_hash_mismatch", _S1, "append_sync_event", A,
     ("s.a", "k2", '{"v":2}', "sha256:" + "0" * 64, None)),
    ("append_sync_event: missing_scope", _S1, "append_sync_event", NOBODY, ("s.a", "k2", '{"v":2}', None, None)),
    ("ack: a new checkpoint", _S2, "ack_checkpoint", A, ("d1", "s.a", 1, 1)),
    ("ack: raises the checkpoint", _CK, "ack_checkpoint", A, ("d1", "s.a", 1, 2)),
    ("ack: at or below the checkpoint, same epoch", _CK, "ack_checkpoint", A, ("d1", "s.a", 1, 0)),
    ("ack_checkpoint: checkpoint_ahead_of_head", _CK, "ack_checkpoint", A, ("d1", "s.a", 1, 3)),
    ("ack: moves the checkpoint to another epoch", (*_CK, ("reset_stream_epoch", ("s.a",), A)), "ack_checkpoint", A,
     ("d1", "s.a", 2, 2)),
    ("update: open -> assigned", _OPEN, "update_compute_assignment", A, ("r1", 1, "assigned", "prov1", None)),
    ("update: open -> cancelled", _OPEN, "update_compute_assignment", A, ("r1", 1, "cancelled", None, None)),
    ("update: assigned -> running", _ASSIGNED, "update_compute_assignment", A, ("r1", 2, "running", None, None)),
    ("update: assigned -> cancelled", _ASSIGNED, "update_compute_assignment", A, ("r1", 2, "cancelled", None, None)),
    ("update: running -> completed", _RUNNING, "update_compute_assignment", A,
     ("r1", 3, "completed", None, '{"ok":true}')),
    ("update: running -> failed", _RUNNING, "update_compute_assignment", A, ("r1", 3, "failed", None, '{"ok":true}')),
    ("update: running -> cancelled", _RUNNING, "update_compute_assignment", A, ("r1", 3, "cancelled", None, None)),
    ("update_compute_assignment: invalid_transition", _OPEN, "update_compute_assignment", A,
     ("r1", 1, "completed", None, '{"ok":true}')),
    ("update_compute_assignment: forbidden", _RUNNING, "update_compute_assignment", B,
     ("r1", 3, "completed", None, '{"ok":true}')),
    ("update_compute_assignment: provider_unavailable",
     (*_OPEN, ("publish_provider_capability", ("prov1", "{}", (5000,), 0, "withdrawn"), A)),
     "update_compute_assignment", A, ("r1", 1, "assigned", "prov1", None)),
    ("upsert: a new row", (), "upsert_presence", A, ("p1", "dev1", "n1", "online", "eu", 3000)),
    ("upsert: a status change", _P1, "upsert_presence", A, ("p1", "dev1", "n1", "away", "eu", 3000)),
    ("upsert: a status change", _P1, "upsert_presence", A, ("p1", "dev1", "n1", "offline", "eu", 3000)),
    ("upsert: same status, other columns", _P1, "upsert_presence", A, ("p1", "dev2", "n1", "online", "eu", 3000)),
    ("upsert: the row already is what it writes", _P1, "upsert_presence", A,
     ("p1", "dev1", "n1", "online", "eu", 3000)),
    ("upsert_presence: forbidden", _P1, "upsert_presence", B, ("p1", "dev1", "n1", "online", "eu", 3000)),
)
"""One case per branch of the older call goals (SEQ-4, CKPT-2, ASSIGN-1, PRES-2) and per refusal guarding them,
each on a state built by well-formed calls from empty at one clock: so every branch is checked against its
relation in every run, whatever the draws reach (``test_call_goal_cases``).  A few more cases pin what the
planted encoding bugs of these reducers get wrong (a stale expected seq on a retry, a conflict on a new
stream, a wrong hash argument, a missing scope, an ack past the head, going offline), so ``catches`` finds
each of them in the table before any draw."""
CALL_GOAL_NOW = 2_000_000


def _call_goal_pre(setup: Setup) -> tuple[DbState, int]:
    d, offset = DbState(), 1
    for reducer, args, caller in setup:
        d, after = _call_ok(d, CALL_GOAL_NOW, offset, reducer, args, caller)
        assert after == offset + 1, f"the setup call {reducer}{args} did not write"
        offset = after
    return d, offset


_ENQUEUED = (("enqueue_bridge_event", ("o1", "src", 30078, '[["t","x"]]', "hello"), A),)
_FAILED_TWICE = (*_ENQUEUED, *[("record_bridge_failure", ("o1", "relay down", 1000), A)] * 2)
_SENT = (*_ENQUEUED, ("mark_bridge_event_sent", ("o1", "1" * 64, ("wss://r1",)), A))
_PUBLISHED = (("publish_provider_capability", ("prov1", '{"v":1}', (5000,), 0, "active"), A),)
STEERED_CASES: tuple[tuple[str, Setup, str, Claims, tuple[Any, ...]], ...] = (
    # the cases the draws reach least often among the other reducers (a few percent of examples)
    ("a repeated mark adding a relay", _SENT, "mark_bridge_event_sent", A, ("o1", "1" * 64, ("wss://r2",))),
    ("a repeated mark adding none", _SENT, "mark_bridge_event_sent", A, ("o1", "1" * 64, ("wss://r1",))),
    ("the failure that reaches the dead letter", _FAILED_TWICE, "record_bridge_failure", A,
     ("o1", "relay down", 1000)),
    ("a republish changing the capability", _PUBLISHED, "publish_provider_capability", A,
     ("prov1", '{"v":2}', (5000,), 0, "active")),
    ("a republish changing the kinds", _PUBLISHED, "publish_provider_capability", A,
     ("prov1", '{"v":1}', (5001,), 0, "active")),
    ("a republish changing the price", _PUBLISHED, "publish_provider_capability", A,
     ("prov1", '{"v":1}', (5000,), 10, "active")),
)
"""Explicit cases for the other reducers' rarely drawn branches: ``catches`` runs them before any draw."""


_FAILED_THRICE = (*_FAILED_TWICE, ("record_bridge_failure", ("o1", "relay down", 1000), A))  # a dead letter
_TAGS = '[["t","x"]]'
OUTBOX_CASES: tuple[tuple[str, Setup, str, Claims, tuple[Any, ...]], ...] = (
    # (the branch, as _outbox_branch reads it off the rows; the setup; the reducer, its caller, its arguments)
    ("new row", (), "enqueue_bridge_event", A, ("o1", "src", 30078, _TAGS, "hello")),
    ("retry", _ENQUEUED, "enqueue_bridge_event", A, ("o1", "src", 30078, _TAGS, "hello")),
    ("enqueue_bridge_event: idempotency_conflict on a pending row", _ENQUEUED, "enqueue_bridge_event", A,
     ("o1", "src", 30078, _TAGS, "other")),
    ("enqueue_bridge_event: idempotency_conflict on a sent row", _SENT, "enqueue_bridge_event", A,
     ("o1", "src2", 30078, _TAGS, "hello")),
    ("enqueue_bridge_event: missing_scope on a missing row", (), "enqueue_bridge_event", NOBODY,
     ("o1", "src", 30078, _TAGS, "hello")),
    ("enqueue_bridge_event: invalid_argument on a missing row", (), "enqueue_bridge_event", A,
     ("o1", "src", 30078, "[1]", "hello")),
    ("enqueue_bridge_event: invalid_argument on a missing row", (), "enqueue_bridge_event", A,
     ("o1", "bad source", 30078, _TAGS, "hello")),
    ("enqueue_bridge_event: non_canonical_payload on a missing row", (), "enqueue_bridge_event", A,
     ("o1", "src", 30078, "[", "hello")),
    ("enqueue_bridge_event: policy_denied on a missing row", (), "enqueue_bridge_event", A,
     ("o1", "src", 1, _TAGS, "hello")),
    ("enqueue_bridge_event: policy_denied on a missing row", (), "enqueue_bridge_event", A,
     ("o1", "src", 30078, _TAGS, "bell\x07")),
    ("failure leaves the row pending", _ENQUEUED, "record_bridge_failure", A, ("o1", "relay down", 1000)),
    ("failure leaves the row failed", _FAILED_TWICE, "record_bridge_failure", A, ("o1", "relay down", 1000)),
    ("failure on a settled row", _SENT, "record_bridge_failure", A, ("o1", "relay down", 1000)),
    ("failure on a settled row", _FAILED_THRICE, "record_bridge_failure", A, ("o1", "relay down", 1000)),
    ("record_bridge_failure: missing_scope on a pending row", _ENQUEUED, "record_bridge_failure", NOBODY,
     ("o1", "relay down", 1000)),
    ("record_bridge_failure: invalid_argument on a pending row", _ENQUEUED, "record_bridge_failure", A,
     ("o1", "", 1000)),
    ("record_bridge_failure: bridge_event_missing on a missing row", (), "record_bridge_failure", A,
     ("o1", "relay down", 1000)),
    ("first mark of a pending row", _ENQUEUED, "mark_bridge_event_sent", A, ("o1", "1" * 64, ("wss://r1",))),
    ("first mark of a failed row", _FAILED_THRICE, "mark_bridge_event_sent", A, ("o1", "1" * 64, ("wss://r1",))),
    ("repeat adding a relay", _SENT, "mark_bridge_event_sent", A, ("o1", "1" * 64, ("wss://r2",))),
    ("repeat adding none", _SENT, "mark_bridge_event_sent", A, ("o1", "1" * 64, ("wss://r1",))),
    ("mark_bridge_event_sent: bridge_event_conflict on a sent row", _SENT, "mark_bridge_event_sent", A,
     ("o1", "2" * 64, ("wss://r1",))),
    ("mark_bridge_event_sent: missing_scope on a pending row", _ENQUEUED, "mark_bridge_event_sent", NOBODY,
     ("o1", "1" * 64, ("wss://r1",))),
    ("mark_bridge_event_sent: invalid_argument on a pending row", _ENQUEUED, "mark_bridge_event_sent", A,
     ("o1", "XYZ", ("wss://r1",))),
    ("mark_bridge_event_sent: invalid_argument on a pending row", _ENQUEUED, "mark_bridge_event_sent", A,
     ("o1", "1" * 64, ("",))),
    ("mark_bridge_event_sent: bridge_event_missing on a missing row", (), "mark_bridge_event_sent", A,
     ("o1", "1" * 64, ("wss://r1",))),
)
"""One case per branch of the three outbox reducers and per refusal code of each (the kinds of branch
``test_outbox_calls_reach_every_branch`` asks of the draws), each on a state built by well-formed calls:
every branch is checked against its relation in every run, whatever the seed."""


@pytest.mark.parametrize("case", OUTBOX_CASES, ids=[f"{c[2]}: {c[0]}" for c in OUTBOX_CASES])
def test_outbox_cases(case: tuple[Any, ...]) -> None:
    """Each outbox case matches its relation, and takes the branch it is written for."""
    pre, outcome = _check_case(*case)
    assert _outbox_branch(pre, case[2], case[4], outcome) == case[0]


@pytest.mark.parametrize("bug", sorted(b for b, (name, *_rest) in E.BUGS.items() if name in OUTBOX_REDUCERS))
def test_the_outbox_cases_catch_every_bug_of_their_reducers(bug: str) -> None:
    """The outbox cases alone (no draws) catch each planted encoding bug of the three outbox reducers."""
    assert catches(bug, 1, draws=False), f"the outbox cases do not expose {bug}"


@pytest.mark.parametrize("case", STEERED_CASES, ids=[c[0] for c in STEERED_CASES])
def test_steered_cases(case: tuple[Any, ...]) -> None:
    """Each explicit case matches its relation (the setup writes, the case's call is well-formed)."""
    _check_case(*case)


STEERED_EFFECTS: dict[str, tuple[str, dict[str, Any]] | None] = {
    # case -> (the table, the columns its one row holds after the call), or None: an accepted no-op.  Read off
    # docs/protocol.md, not off a run: relays are merged sorted and distinct, a write only when one is added;
    # the failure that brings attempts to the policy's bridge_max_attempts (3 here) dead-letters the row; a
    # republish changing any content column raises the version by one.
    "a repeated mark adding a relay": ("bridge_outbox", {"status": "sent", "relays_acked": ("wss://r1", "wss://r2")}),
    "a repeated mark adding none": None,
    "the failure that reaches the dead letter": ("bridge_outbox", {"status": "failed", "attempts": 3}),
    "a republish changing the capability": ("provider_capability", {"version": 2, "capability": '{"v":2}'}),
    "a republish changing the kinds": ("provider_capability", {"version": 2, "nip90_kinds": (5001,)}),
    "a republish changing the price": ("provider_capability", {"version": 2, "price_hint_sats": 10}),
}


@pytest.mark.parametrize("case", STEERED_CASES, ids=[c[0] for c in STEERED_CASES])
def test_steered_cases_take_the_branch_they_are_named_for(case: tuple[Any, ...]) -> None:
    """test_steered_cases passes whatever the call does (a refusal matches its relation too): here each case
    is accepted and has the effect its name states, so it keeps exposing the branch it was written for."""
    _check_case(*case)
    pre, offset = _call_goal_pre(case[1])
    out = call(pre, CallContext(case[3], CALL_GOAL_NOW, offset, POLICY), case[2], case[4])
    assert isinstance(out, Ok), out
    want = STEERED_EFFECTS[case[0]]
    if want is None:
        assert out.noop
        return
    table, cols = want
    assert not out.noop
    (row,) = out.state.rows(table)
    assert {k: getattr(row, k) for k in cols} == cols


def _check_case(branch: str, setup: Setup, reducer: str, caller: Claims, args: tuple[Any, ...]) -> Any:
    pre, offset = _call_goal_pre(setup)
    outcome = call(pre, CallContext(caller, CALL_GOAL_NOW, offset, POLICY), reducer, args)
    post = outcome.state if isinstance(outcome, Ok) else pre
    assert fits(post), f"{branch}: the case leaves the encoding's bounds"
    i = Interner()
    act = action(i, reducer, caller, args, CALL_GOAL_NOW, POLICY)
    relation(reducer).check(i, pre, act, post, outcome, outcome.delta if isinstance(outcome, Ok) else None)
    return pre, outcome


def _check_call_goal_case(branch: str, setup: Setup, reducer: str, caller: Claims, args: tuple[Any, ...]) -> str:
    """Run one case of :data:`CALL_GOAL_CASES` through its relation; the branch it took, read off the rows."""
    pre, outcome = _check_case(branch, setup, reducer, caller, args)
    return _call_branch(pre, reducer, args, outcome)


@pytest.mark.parametrize("case", CALL_GOAL_CASES, ids=[c[0] for c in CALL_GOAL_CASES])
def test_call_goal_cases(case: tuple[Any, ...]) -> None:
    """Each case of the table matches its relation, and takes the branch it is written for."""
    assert _check_call_goal_case(*case) == case[0]


def test_older_call_goals_reach_every_branch() -> None:
    """The explicit cases reach each branch of the older call goals, whatever the draws do: SEQ-4 (a fresh
    key on a new or existing stream, with and without expected_next_seq; a retry), CKPT-2 (a new
    checkpoint, a raise, one at or below in the same epoch, a move to another epoch), ASSIGN-1 (every
    edge of the edge table), PRES-2 (a new row, a status change, a change of other columns, a no-op),
    and each refusal that guards them.  (The drawn calls alone missed ``running -> cancelled`` under
    seeds 11 and 19 of 1-23 with 500 examples: a check on draws passes by luck.)"""
    seen = {_call_branch(*_branch_of(case)) for case in CALL_GOAL_CASES}
    edges = {f"update: {f} -> {t}" for f, t in ASSIGNMENT_TRANSITIONS}
    wanted = {"append: a fresh key on a new stream", "append: a fresh key",
              "append: a fresh key (expected seq = head + 1)", "append: retry of a retained key",
              "append: retry of a retained key (expected seq given)",
              "append_sync_event: idempotency_conflict", "append_sync_event: sequence_conflict",
              "ack: a new checkpoint", "ack: raises the checkpoint", "ack: at or below the checkpoint, same epoch",
              "ack: moves the checkpoint to another epoch",
              *edges, "update_compute_assignment: invalid_transition", "update_compute_assignment: forbidden",
              "update_compute_assignment: provider_unavailable",
              "upsert: a new row", "upsert: a status change", "upsert: same status, other columns",
              "upsert: the row already is what it writes", "upsert_presence: forbidden"}
    assert wanted <= seen, sorted(wanted - seen)
    assert {c[2] for c in CALL_GOAL_CASES} == set(OLDER_CALL_REDUCERS)


def _branch_of(case: tuple[Any, ...]) -> tuple[DbState, str, tuple[Any, ...], Any]:
    _branch, setup, reducer, caller, args = case
    pre, offset = _call_goal_pre(setup)
    return pre, reducer, args, call(pre, CallContext(caller, CALL_GOAL_NOW, offset, POLICY), reducer, args)


@pytest.mark.parametrize("bug", sorted(b for b, (name, *_rest) in E.BUGS.items() if name in OLDER_CALL_REDUCERS))
def test_the_call_goal_cases_catch_every_bug_of_their_reducers(bug: str) -> None:
    """The table alone (no draws) catches each planted encoding bug of the four older call goals' reducers:
    their catches cannot hang on a seed."""
    assert catches(bug, 1, draws=False), f"the call goal cases do not expose {bug}"


@pytest.mark.parametrize("bug", ["repeated_ack_ignores_relays", "failure_past_max", "republish_change_dropped"])
def test_the_steered_cases_catch_the_least_drawn_bugs(bug: str) -> None:
    """The planted bugs the draws exposed least (1.9-6.6 % of examples) are caught by the explicit cases alone."""
    assert catches(bug, 1, draws=False), f"the explicit cases do not expose {bug}"
