"""The abstraction function of the Z3 encodings: concrete model values -> concrete records.

Used by the correspondence tests: a Python state, action and outcome become records of the
encodings filled with Python ints and bools, and :class:`Relation` checks a transition relation
against them -- the relation must accept the Python ``(pre, action, post)`` and admit no other
``post``.

Strings are interned to ints (:class:`Interner`); the uninterpreted hash and canonicality
functions of the encodings are pinned, on every payload seen, to ``sha256`` and
``is_canonical`` (:meth:`Interner.axioms`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import z3

from proofs import encoding as E
from proofs.core import CODE, OK_CODE, Record, field_names
from proofs.render import render
from spec.auth import Claims, has_scope, stream_granted
from spec.canonical import canonicalize, dumps_canonical, is_canonical, parse_strict, payload_hash
from spec.errors import ErrorCode, SyncError
from spec.policy import Policy
from spec.reducers import Err, Ok
from spec.state import DbState, Delta
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
    is_hash,
    is_id,
)

STREAMS = ("s.a", "s.b")
CLIENTS = ("d1", "d2")
SESSIONS = ("p1", "p2")
PROVIDERS = ("prov1", "prov2")
REQUESTS = ("r1", "r2")
OUTBOXES = ("o1", "o2")
JOB_KINDS = (5000, 5001)
"""The job kinds the correspondence tests open assignments with (ADVERTISES is pinned on these)."""
assert len(STREAMS) == E.S and len(CLIENTS) == E.C
assert len(SESSIONS) == len(PROVIDERS) == len(REQUESTS) == len(OUTBOXES) == E.N


@dataclass
class Interner:
    """Strings (and tuples) -> ints, consistently within one example."""

    ids: dict[object, int] = field(default_factory=dict)
    payloads: set[str] = field(default_factory=set)
    kind_lists: set[tuple[int, ...]] = field(default_factory=set)
    relay_lists: set[tuple[str, ...]] = field(default_factory=set)
    outbox_keys: set[tuple[str, int, str, str]] = field(default_factory=set)

    def __call__(self, value: object) -> int:
        if value == ():
            return E.RELAYS_NONE
        if value not in self.ids:
            self.ids[value] = 1000 + len(self.ids)
        return self.ids[value]

    def payload(self, canon: str) -> int:
        """A stored or computed canonical payload: its hash and canonicality get pinned."""
        self.payloads.add(canon)
        return self(canon)

    def relays(self, relays: tuple[str, ...]) -> int:
        """A sorted relay list: its unions with the other lists seen get pinned (``MERGE``)."""
        self.relay_lists.add(relays)
        return self(relays)

    def outbox_key(self, source: str, kind: int, tags: str, content: str) -> None:
        """An outbox row's or call's ``[source, kind, tags, content]`` (tags canonical): its dedupe
        hash gets pinned (``OUTBOX_HASH``)."""
        self.outbox_keys.add((source, kind, tags, content))

    def kinds(self, kinds: tuple[int, ...]) -> int:
        """A nip90_kinds list: which job kinds it advertises gets pinned."""
        self.kind_lists.add(kinds)
        return self(kinds)

    def axioms(self) -> list[Any]:
        out = []
        for p in sorted(self.payloads):
            out.append(E.H(self(p)) == self(payload_hash(p)))
            out.append(E.CANON(self(p)) == is_canonical(p))
        for kinds in sorted(self.kind_lists):
            out += [E.ADVERTISES(self(kinds), k) == (k in kinds) for k in JOB_KINDS]
        for source, kind, tags, content in sorted(self.outbox_keys):
            # the dedupe key, computed here from its definition (canonical JSON of the four, hashed)
            text = dumps_canonical([source, kind, parse_strict(tags), content])
            out.append(E.OUTBOX_HASH(self(source), kind, self(tags), self(content)) == self(payload_hash(text)))
        lists = sorted(self.relay_lists)
        for x in lists:
            for y in lists:
                out.append(E.MERGE(self(x), self(y)) == self(tuple(sorted(set(x) | set(y)))))
        return out


def code_of(err: ErrorCode) -> int:
    return CODE[err]


# --- states -----------------------------------------------------------------------------------------------

ZERO_EVENT = E.Event(0, 0, 0, 0, 0, 0)
NO_OUTBOX = E.Outbox(False, 0, 0, 0, 0, 0, 0, 0, 0, False, 0, False, 0, 0, 0, 0)


def fits(db: DbState) -> bool:
    """The state is within the encoding's bounds (K events per stream; only the pooled ids)."""
    for sid in STREAMS:
        if sum(1 for e in db.of_type(SyncEvent) if e.stream_id == sid) > E.K:
            return False
    return all(s.stream_id in STREAMS for s in db.of_type(SyncStream)) and \
        all(e.stream_id in STREAMS for e in db.of_type(SyncEvent))


def event(i: Interner, e: SyncEvent) -> E.Event:
    return E.Event(e.seq, i(e.idempotency_key), i(e.payload_hash), i.payload(e.payload), e.epoch, e.committed_at)


def db(i: Interner, d: DbState) -> E.Db:
    streams = []
    events = []
    for sid in STREAMS:
        s = d.find(SyncStream, lambda r, sid=sid: r.stream_id == sid)  # type: ignore[misc]
        streams.append(E.Stream(True, s.epoch, s.head_seq, s.floor_seq, s.replay_budget, s.continues_epoch,
                                s.continues_seq) if s else E.Stream(False, 0, 0, 0, 0, 0, 0))
        evs = [event(i, e) for e in d.of_type(SyncEvent) if e.stream_id == sid]
        assert len(evs) <= E.K
        events.append(E.Events(len(evs), tuple(evs + [ZERO_EVENT] * (E.K - len(evs)))))
    ckpts = []
    for c in CLIENTS:
        for sid in STREAMS:
            r = d.find(SyncCheckpoint, lambda x, cid=f"{c}|{sid}": x.checkpoint_id == cid)  # type: ignore[misc]
            ckpts.append(E.Checkpoint(True, i(r.owner), r.epoch, r.last_applied_seq) if r
                         else E.Checkpoint(False, 0, 0, 0))
    presence = []
    for sess in SESSIONS:
        p = d.find(SessionPresence, lambda x, s=sess: x.session_id == s)  # type: ignore[misc]
        presence.append(E.Presence(True, i(p.identity), i(p.device_id), i(p.node_id), E.P_STATUS[p.status],
                                   i(p.region), p.last_seen, p.expires_at,
                                   0 if p.offline_reason is None else E.P_REASON[p.offline_reason]) if p
                        else E.Presence(False, 0, 0, 0, 0, 0, 0, 0, 0))
    providers = []
    for pid in PROVIDERS:
        v = d.find(ProviderCapability, lambda x, pid=pid: x.provider_id == pid)  # type: ignore[misc]
        providers.append(E.Provider(True, i(v.owner), i.payload(v.capability), i(v.capability_hash),
                                    i.kinds(v.nip90_kinds),
                                    v.price_hint_sats, E.PROV_STATUS[v.status], v.version) if v
                         else E.Provider(False, 0, 0, 0, 0, 0, 0, 0))
    assignments = []
    for rid in REQUESTS:
        a = d.find(ComputeAssignment, lambda x, rid=rid: x.request_id == rid)  # type: ignore[misc]
        assignments.append(E.Assignment(
            True, i(a.requester), a.job_kind, i.payload(a.request), i(a.request_hash), a.provider_id is not None,
            0 if a.provider_id is None else i(a.provider_id), a.provider_owner is not None,
            0 if a.provider_owner is None else i(a.provider_owner), E.A_STATUS[a.status], a.result is not None,
            0 if a.result is None else i.payload(a.result), a.version, a.updated_at) if a
            else E.Assignment(False, 0, 0, 0, 0, False, 0, False, 0, 0, False, 0, 0, 0))
    outbox = []
    for oid in OUTBOXES:
        b = d.find(BridgeOutbox, lambda x, oid=oid: x.outbox_id == oid)  # type: ignore[misc]
        outbox.append(E.Outbox(
            used=True, source=i(b.source), kind=b.nostr_kind, tags=i(b.tags), content=i(b.content),
            content_hash=i(b.content_hash), status=E.B_STATUS[b.status], attempts=b.attempts,
            next_at=b.next_attempt_at, has_error=b.last_error is not None,
            error=0 if b.last_error is None else i(b.last_error), has_event_id=b.nostr_event_id is not None,
            event_id=0 if b.nostr_event_id is None else i(b.nostr_event_id), relays=i.relays(b.relays_acked),
            created=b.created_at, updated=b.updated_at) if b else NO_OUTBOX)
        if b:
            i.outbox_key(b.source, b.nostr_kind, b.tags, b.content)
    evt_rows = len(d.rows("presence_signal")) + len(d.rows("stream_signal"))
    return E.Db(tuple(streams), tuple(events), d.epoch_floor, tuple(ckpts), tuple(presence), tuple(providers),
                tuple(assignments), tuple(outbox), evt_rows, d.version_floor)


def delta(i: Interner, d: Delta | None) -> E.Delta:
    dels = [0] * E.S
    psig = [0] * E.N
    pstatus = [0] * E.N
    ins: tuple[int, E.Event] | None = None
    ssig = 0
    for td in (d.tables if d is not None else ()):
        for r in td.inserts:
            if isinstance(r, SyncEvent):
                assert ins is None, "one inserted event per transaction"
                ins = (STREAMS.index(r.stream_id), event(i, r))
            elif isinstance(r, PresenceSignal):
                k = SESSIONS.index(r.session_id)
                psig[k] += 1
                pstatus[k] = E.P_STATUS[r.status]
            elif isinstance(r, StreamSignal):
                ssig += 1
        for r in td.deletes:
            if isinstance(r, SyncEvent):
                dels[STREAMS.index(r.stream_id)] += 1
    return E.Delta(ins is not None, ins[0] if ins else 0, ins[1] if ins else ZERO_EVENT, tuple(dels), tuple(psig),
                   tuple(pstatus), ssig)


def result(outcome: Ok | Err | None) -> E.Result:
    """``None``: a system transaction that returns a bare state (unclean_restart)."""
    if outcome is None:
        return E.Result(OK_CODE, False, 0, True)
    if isinstance(outcome, Err):
        return E.Result(code_of(outcome.error.code), False, 0, False)
    return E.Result(OK_CODE, outcome.ret is not None, outcome.ret or 0, not outcome.noop)


def policy(p: Policy) -> E.Policy:
    return E.Policy(p.bridge_max_attempts, p.presence_min_ttl_ms, p.presence_max_ttl_ms)


# --- argument validation (the part of each reducer the encoding abstracts to ``arg_err``) --------------------


def _first(*checks: Callable[[], int]) -> int:
    for c in checks:
        got = c()
        if got != OK_CODE:
            return got
    return OK_CODE


def _ids(*values: str) -> Callable[[], int]:
    return lambda: OK_CODE if all(is_id(v) for v in values) else code_of(ErrorCode.INVALID_ARGUMENT)


def _canon(text: str, out: list[str]) -> Callable[[], int]:
    def check() -> int:
        try:
            out.append(canonicalize(text))
        except SyncError as e:
            return code_of(e.code)
        return OK_CODE
    return check


def _size(out: list[str], limit: int) -> Callable[[], int]:
    return lambda: code_of(ErrorCode.PAYLOAD_TOO_LARGE) if len(out[0].encode("utf-8")) > limit else OK_CODE


IA = code_of(ErrorCode.INVALID_ARGUMENT)


def action(i: Interner, reducer: str, claims: Claims, args: tuple[Any, ...], now: int, pol: Policy) -> object:
    """The encoding's action for one reducer call."""
    me = i(claims.identity)
    if reducer == "append_sync_event":
        sid, key, payload, h, expected = args
        canon: list[str] = []
        err = _first(_ids(sid, key), _canon(payload, canon),
                     _size(canon, pol.class_for(sid).max_payload_bytes))
        return E.AppendAct(STREAMS.index(sid), me, has_scope(claims, "sync.append"), stream_granted(claims, sid), err,
                           i(key), i.payload(canon[0]) if canon else 0, h is not None, 0 if h is None else i(h),
                           expected is not None, 0 if expected is None else expected, now,
                           pol.class_for(sid).replay_budget)
    if reducer == "ack_checkpoint":
        client, sid, epoch, seq = args
        return E.AckAct(CLIENTS.index(client), STREAMS.index(sid), me, has_scope(claims, "sync.checkpoint.write"),
                        stream_granted(claims, sid), _first(_ids(client, sid)), epoch, seq)
    if reducer == "upsert_presence":
        session, device, node, status, region, ttl = args
        claims_ok = not ((claims.session_id is not None and claims.session_id != session)
                         or (claims.device_id is not None and claims.device_id != device))
        region_ok = not region or is_id(region)
        err = _first(_ids(session, device, node), lambda: OK_CODE if region_ok else IA)
        return E.PresenceAct(SESSIONS.index(session), me, has_scope(claims, "presence.write"), claims_ok, err,
                             i(device), i(node), E.P_STATUS.get(status, E.INVALID_ENUM), i(region), ttl, now)
    if reducer == "publish_provider_capability":
        pid, cap, kinds, price, status = args
        canon = []
        err = _first(_ids(pid), _canon(cap, canon),
                     lambda: IA if any(not 5000 <= k <= 5999 for k in kinds) else OK_CODE)
        return E.ProviderAct(PROVIDERS.index(pid), me, has_scope(claims, "provider.publish"), err,
                             i.payload(canon[0]) if canon else 0, i.kinds(tuple(sorted(set(kinds)))), price,
                             E.PROV_STATUS.get(status, E.INVALID_ENUM))
    if reducer == "open_compute_assignment":
        rid, job_kind, request = args
        canon = []
        err = _first(_ids(rid), lambda: OK_CODE if 5000 <= job_kind <= 5999 else IA, _canon(request, canon))
        return E.OpenAct(REQUESTS.index(rid), me, has_scope(claims, "compute.request"), err, job_kind,
                         i.payload(canon[0]) if canon else 0, now)
    if reducer == "update_compute_assignment":
        rid, expected, status, provider, result_json = args
        err = _first(_ids(rid), _ids(provider) if provider is not None else lambda: OK_CODE)
        canon = []
        result_err = _canon(result_json, canon)() if result_json is not None else OK_CODE
        return E.UpdateAct(REQUESTS.index(rid), me, has_scope(claims, "compute.request"),
                           has_scope(claims, "compute.assign"), has_scope(claims, "compute.execute"), err, expected,
                           E.A_STATUS.get(status, E.INVALID_ENUM), provider is not None,
                           0 if provider is None else i(provider),
                           PROVIDERS.index(provider) if provider in PROVIDERS else -1, result_json is not None,
                           i.payload(canon[0]) if canon else 0, result_err, now)
    if reducer == "enqueue_bridge_event":
        oid, source, kind, tags, content = args
        canon = []

        def tags_shape() -> int:
            v = parse_strict(canon[0])
            ok = isinstance(v, list) and all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in v)
            return OK_CODE if ok else IA

        err = _first(_ids(oid, source), _canon(tags, canon), tags_shape,
                     lambda: OK_CODE if kind in pol.bridge_kinds else code_of(ErrorCode.POLICY_DENIED),
                     lambda: code_of(ErrorCode.POLICY_DENIED)
                     if any(0 <= ord(ch) < 32 and ch not in "\b\t\n\f\r"
                            for text in [content, *(x for t in parse_strict(canon[0]) for x in t)] for ch in text)
                     else OK_CODE)
        if err == OK_CODE:
            i.outbox_key(source, kind, canon[0], content)
        return E.EnqueueAct(OUTBOXES.index(oid), has_scope(claims, "bridge.enqueue"), err, i(source), kind,
                            i(canon[0]) if canon else 0, i(content), now)
    if reducer == "mark_bridge_event_sent":
        oid, eid, relays = args
        err = _first(_ids(oid), lambda: OK_CODE if is_hash("sha256:" + eid) else IA,
                     lambda: IA if any(not r or len(r) > 512 for r in relays) else OK_CODE)
        return E.MarkSentAct(OUTBOXES.index(oid), has_scope(claims, "bridge.mark_sent"), err, i(eid),
                             i.relays(tuple(sorted(set(relays)))), now)
    if reducer == "record_bridge_failure":
        oid, error, retry = args
        err = _first(_ids(oid), lambda: OK_CODE if error and len(error) <= pol.max_error_text else IA,
                     lambda: OK_CODE if retry <= pol.bridge_max_retry_after_ms else IA)
        return E.FailureAct(OUTBOXES.index(oid), has_scope(claims, "bridge.mark_sent"), err, i(error), retry, now)
    if reducer == "publish_stream_signal":
        sid, kind, payload = args
        canon = []
        err = _first(_ids(sid), lambda: OK_CODE if kind in ("typing", "progress", "custom") else IA,
                     _canon(payload, canon), _size(canon, pol.class_for(sid).max_payload_bytes))
        return E.SignalAct(STREAMS.index(sid), has_scope(claims, "sync.append"), stream_granted(claims, sid), err)
    if reducer == "reset_stream_epoch":
        (sid,) = args
        return E.ResetAct(STREAMS.index(sid), has_scope(claims, "sync.admin"), _first(_ids(sid)))
    raise KeyError(reducer)


def windows(pol: Policy) -> E.Windows:
    def w(v: int | None) -> tuple[bool, int]:
        return v is not None, v or 0
    return E.Windows(*w(pol.retain_offline_presence_us), *w(pol.retain_terminal_assignment_us),
                     *w(pol.retain_sent_outbox_us), *w(pol.retain_failed_outbox_us))


def retention(pol: Policy) -> tuple[E.Retention, ...]:
    out = []
    for sid in STREAMS:
        cls = pol.class_for(sid)
        out.append(E.Retention(cls.retain_count is not None, cls.retain_count or 0, cls.retain_age_us is not None,
                               cls.retain_age_us or 0))
    return tuple(out)


# --- binding symbolic records to concrete ones -----------------------------------------------------------------


def bind(sym: object, val: object) -> list[Any]:
    """Equalities pinning a symbolic record (state, action, ...) to a concrete one, up to the
    encodings' semantic equality: unused rows, absent options and slots past a list's length are
    left free.  (The same meaning as ``proofs.core.same``, decided on the concrete side.)"""
    if isinstance(sym, tuple):
        assert isinstance(val, tuple) and len(sym) == len(val)
        return [eq for x, y in zip(sym, val, strict=True) for eq in bind(x, y)]
    if isinstance(sym, E.Events):
        assert isinstance(val, E.Events)
        return [sym.n == val.n, *[eq for k in range(val.n) for eq in bind(sym.slots[k], val.slots[k])]]
    if isinstance(sym, E.Delta):
        assert isinstance(val, E.Delta)
        out = [sym.ins == val.ins, sym.ssig == val.ssig, *[x == y for x, y in zip(sym.dels, val.dels, strict=True)]]
        if val.ins:
            out += [sym.ins_stream == val.ins_stream, *bind(sym.ins_ev, val.ins_ev)]
        for k in range(len(val.psig)):
            out.append(sym.psig[k] == val.psig[k])
            if val.psig[k] > 0:
                out.append(sym.psig_status[k] == val.psig_status[k])
        return out
    if isinstance(sym, Record):
        names = field_names(sym)
        flag = next((f for f in ("used", "exists") if f in names), None)
        if flag is not None and not getattr(val, flag):
            return [getattr(sym, flag) == False]  # noqa: E712 -- a z3 equation, not a comparison
        guards = type(sym).GUARDS
        out = []
        for name in names:
            g = guards.get(name)
            if g is not None and not getattr(val, g):
                continue
            out.append(getattr(sym, name) == getattr(val, name))
        return out
    if is_dataclass(sym):
        return [eq for f in fields(sym) for eq in bind(getattr(sym, f.name), getattr(val, f.name))]
    return [sym == val]


# --- checking a relation --------------------------------------------------------------------------------------


@dataclass
class Verdict:
    accepts: str  # 'sat' expected: the relation accepts the Python step
    unique: str  # 'unsat' expected: no other post
    detail: str = ""


class Relation:
    """A relation asserted once over symbolic (pre, action, post); each example binds pre and action
    to concrete values, then asks (1) is the Python post accepted, (2) is any other post accepted."""

    def __init__(self, formula: Any, timeout_ms: int = 20_000) -> None:
        self.solver = z3.SolverFor("QF_AUFLIA")
        self.solver.set("timeout", timeout_ms)
        self.solver.add(formula)

    def check(self, given: Sequence[Any], post: dict[str, list[Any]],
              show: Sequence[tuple[str, object]] = ()) -> Verdict:
        """``post``: named lists of equalities pinning the symbolic post to the Python one."""
        s = self.solver
        s.push()
        s.add(*given, *[eq for eqs in post.values() for eq in eqs])
        accepts = s.check()
        detail = ""
        s.pop()
        if accepts != z3.sat:
            bad = []
            for name, eqs in post.items():
                s.push()
                s.add(*given, *eqs)
                if s.check() != z3.sat:
                    bad.append(name)
                s.pop()
            detail = f"the Python step is rejected; parts the relation cannot match: {bad or 'their combination'}"
        s.push()
        s.add(*given, z3.Not(z3.And([eq for eqs in post.values() for eq in eqs])))
        unique = s.check()
        if unique == z3.sat:
            m = s.model()
            wrong = [name for name, eqs in post.items()
                     if not z3.is_true(m.eval(z3.And(eqs), model_completion=True))]
            detail += f"another post is admitted, differing in {wrong}:\n" + "\n".join(
                render(m, label, obj) for label, obj in show)
        s.pop()
        return Verdict(str(accepts), str(unique), detail)


# --- the delivery layer ---------------------------------------------------------------------------------------


def max_epoch(d: DbState) -> int:
    """M(db), as ``proofs.encoding.max_epoch``."""
    return max([d.epoch_floor, *(s.epoch for s in d.of_type(SyncStream))])


@dataclass
class SrvVal:
    """A concrete :class:`proofs.server.Srv`."""

    committed: int
    durable: int
    undurable: int
    alive: bool
    confirmed: bool
    queue: list[tuple[int, int]]  # (offset, kind)
    rcv: bool
    last_rcv: int
    conf_any: bool
    conf_max: int
    tok: dict[int, int]  # offset -> token, for offsets durable..committed
    ctok: int
    dtok: int
    hist: list[int]  # M at offsets durable..committed
    seen: int


def bind_srv(sym: Any, v: SrvVal) -> list[Any]:
    out = [sym.committed == v.committed, sym.durable == v.durable, sym.undurable == v.undurable,
           sym.alive == v.alive, sym.conf_any == v.conf_any, sym.ctok == v.ctok, sym.dtok == v.dtok,
           sym.seen == v.seen]
    if v.alive:
        out += [sym.confirmed == v.confirmed, sym.qn == len(v.queue), sym.rcv == v.rcv]
        for k, (off, kind) in enumerate(v.queue):
            out += [sym.queue[k].off == off, sym.queue[k].kind == kind]
        if v.rcv:
            out.append(sym.last_rcv == v.last_rcv)
    if v.conf_any:
        out.append(sym.conf_max == v.conf_max)
    out += [sym.tok[o] == v.tok[o] for o in range(v.durable, v.committed + 1)]
    out += [sym.hist[k] == m for k, m in enumerate(v.hist)]
    return out


@dataclass
class SubVal:
    """A concrete :class:`proofs.server.Sub` (the test keeps the ghost ``last_head``)."""

    active: bool
    stream: int = 0
    epoch: int = 0
    watermark: int = 0
    last_head: int = 0
    sent: list[tuple[int, int]] = field(default_factory=list)  # (seq, hash)
    mirror: list[tuple[int, int]] = field(default_factory=list)
    upper: int | None = None  # B of a page (seq <= B), None without an upper bound


def bind_sub(sym: Any, v: SubVal) -> list[Any]:
    out = [sym.active == v.active]
    if not v.active:
        return out
    out += [sym.stream == v.stream, sym.epoch == v.epoch, sym.watermark == v.watermark, sym.last_head == v.last_head,
            sym.sent_n == len(v.sent), sym.mirror_n == len(v.mirror), sym.has_upper == (v.upper is not None),
            *([] if v.upper is None else [sym.upper == v.upper])]  # B means nothing without a bound
    for k, (seq, h) in enumerate(v.sent):
        out += [sym.sent[k].seq == seq, sym.sent[k].hash == h]
    for k, (seq, h) in enumerate(v.mirror):
        out += [sym.mirror[k].seq == seq, sym.mirror[k].hash == h]
    return out


def bind_ledger(i: Interner, sym: Any, ledger: Sequence[SyncEvent]) -> list[Any]:
    """The ledger arrays agree with the Python ledger on every seq it holds (per stream)."""
    out = []
    for e in ledger:
        led = sym[STREAMS.index(e.stream_id)]
        out += [led.hash[e.seq] == i(e.payload_hash), led.epoch[e.seq] == e.epoch]
    return out
