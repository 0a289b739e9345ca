"""Correspondence for the delivery layer: ``proofs.server`` and ``proofs.client`` against
``spec.delivery``, ``spec.invariants``, ``spec.client`` and ``spec.auth``.

* stale cursors: both encodings of the stale decision against both Python functions;
* the outbound queue and durability (:class:`proofs.server.Srv`): a ``spec.harness.Server`` is
  driven through random connects, closes, messages, commits (the connection's own calls, other
  connections' calls, system transactions), deliveries, durability advances, crashes and clean
  restarts; every step, observed on one designated connection, must be the unique step the
  relation allows;
* resume subscriptions (:class:`proofs.server.World`): the same server, with the designated
  connection subscribed to a resume query set; subscribe and every committed transaction's
  delivery must match ``t_subscribe`` / ``t_deliver``;
* client apply: ``spec.client.Client._on_rows`` and ``_rebootstrap`` against ``t_apply``,
  ``t_stream_row`` and ``t_rebootstrap``;
* the row filter: ``spec.auth.can_read`` against ``proofs.server.visible``.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Callable
from typing import Any

import pytest
import z3
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from proofmap import (
    STREAMS,
    Interner,
    Relation,
    SrvVal,
    SubVal,
    bind,
    bind_ledger,
    bind_srv,
    bind_sub,
    db,
    delta,
    max_epoch,
)

from proofs import client as CL
from proofs import server as SV
from proofs.core import fresh
from proofs.encoding import Delta
from spec import invariants
from spec.auth import Claims, can_read
from spec.client import Client, StreamView, resume_queries
from spec.delivery import stale_reasons
from spec.harness import Server
from spec.messages import (
    CallReducer,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
)
from spec.policy import Policy, StreamClass
from spec.reducers import CallContext, Ok, call, compact, virtual_stream
from spec.schema import BRIDGE_SCOPES, TABLES
from spec.state import DbState
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
)

SETTINGS = settings(max_examples=15, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ALL = frozenset({"sync.subscribe", "sync.append", "sync.checkpoint.write", "sync.admin"})
ME = Claims("a" * 64, ALL, ("s.*",))
OTHER_CALLER = Claims("b" * 64, ALL, ("s.*",))
ADMIN = Claims("f" * 64, frozenset({"sync.admin"}), ("*",))
POLICY = Policy(default_class=StreamClass("default", retain_count=3, replay_budget=4))
BUG = [""]  # the planted bug the relations below encode ("" for the model; see test_*_catches_*)


# --- stale cursors -------------------------------------------------------------------------------------------

NAMES = ("epoch_changed", "retention_floor_breach", "replay_budget_exceeded", "cursor_ahead_of_head")


def truth(x: Any) -> bool:
    """The value of a closed formula (Z3 or, when it folded away, Python)."""
    return x if isinstance(x, bool) else bool(z3.is_true(z3.simplify(x)))


def _names(reasons: SV.Reasons) -> tuple[str, ...]:
    return tuple(n for n, r in zip(NAMES, reasons, strict=True) if truth(r))


STALE_ARGS: dict[str, st.SearchStrategy[Any]] = dict(
    epoch=st.integers(1, 4), head=st.integers(0, 8), floor=st.integers(1, 9), budget=st.integers(0, 8),
    req=st.one_of(st.none(), st.integers(1, 4)), w=st.integers(0, 10), upper=st.one_of(st.none(), st.integers(0, 12)))


@settings(max_examples=300, deadline=None)
@given(**STALE_ARGS)
def test_stale_decisions_match(epoch: int, head: int, floor: int, budget: int, req: int | None, w: int,
                               upper: int | None) -> None:
    args = (epoch, head, floor, budget, req is not None, req or 0, w, upper is not None, upper or 0)
    assert _names(SV.stale_reasons(*args, bug=BUG[0])) == stale_reasons(epoch, head, floor, budget, req, w, upper)
    assert _names(SV.oracle_stale_reasons(*args)) == invariants.stale_reasons(epoch, head, floor, budget, req, w,
                                                                              upper)


def test_the_stale_oracle_is_encoded_apart_from_the_server() -> None:
    """The stale proof's equality of the two encodings is a proof, not a tautology: the oracle's form
    (counts of seqs) differs from the server's comparisons where the precondition budget >= 0 fails."""
    e, h, f, b, r, w, u = z3.Ints("e h f b r w u")
    has, has_u = z3.Bools("has has_u")
    same = z3.And([x == y for x, y in zip(SV.stale_reasons(e, h, f, b, has, r, w, has_u, u),
                                          SV.oracle_stale_reasons(e, h, f, b, has, r, w, has_u, u), strict=True)])
    s = z3.Solver()
    s.add(z3.Not(same))
    assert s.check() == z3.sat  # they differ somewhere (a negative budget) ...
    s.add(b >= 0)
    assert s.check() == z3.unsat  # ... and nowhere the precondition holds


# --- one server, one designated connection --------------------------------------------------------------------


class Tokens:
    """Database states -> ints, by identity (states are immutable values shared by reference)."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.keep: list[DbState] = []

    def __call__(self, d: DbState) -> int:
        if id(d) not in self.ids:
            self.ids[id(d)] = len(self.ids) + 1
            self.keep.append(d)
        return self.ids[id(d)]


class Harness:
    """A ``spec.harness.Server`` seen through the abstraction of ``proofs.server``."""

    def __init__(self, undurable: int) -> None:
        self.server = Server(POLICY, max_queue=SV.Q, max_undurable=undurable)
        self.tokens = Tokens()
        self.me: int | None = None
        self.confirmed = False
        self.kinds: dict[int, int] = {}  # id(Outbound) -> message kind
        self.rcv, self.last_rcv = False, 0
        self.conf_any, self.conf_max = False, 0
        self.seen = max_epoch(self.server.db)
        self.other = self.server.connect(OTHER_CALLER, False)
        self.request, self.qs, self.key = 1, 1, 0
        self.matched = False

    def alive(self) -> bool:
        return self.me is not None and self.me in self.server.conns

    def states(self) -> dict[int, DbState]:
        s = self.server
        out = {s.durable: s.durable_db, **{c.offset: c.state for c in s.history}}
        out[s.committed] = s.db
        return out

    def snapshot(self) -> SrvVal:
        s = self.server
        states = self.states()
        queue = []
        if self.alive():
            assert self.me is not None
            for out in s.conns[self.me].outbound:
                queue.append((out.offset, self.kinds[id(out)]))
        return SrvVal(s.committed, s.durable, s.max_undurable, self.alive(), self.confirmed, queue, self.rcv,
                      self.last_rcv, self.conf_any, self.conf_max, {o: self.tokens(d) for o, d in states.items()},
                      self.tokens(s.db), self.tokens(s.durable_db),
                      [max_epoch(states[o]) for o in range(s.durable, s.committed + 1)], self.seen)

    def classify(self, before: int, committed_before: int, is_caller: bool) -> None:
        """Tag the messages the last step queued for the designated connection."""
        if not self.alive():
            return
        assert self.me is not None
        queue = self.server.conns[self.me].outbound
        for out in queue[before:]:
            if self.server.committed > committed_before and out.offset == self.server.committed:
                self.kinds[id(out)] = SV.RESULT if is_caller else SV.UPDATE
            else:
                self.kinds[id(out)] = SV.OTHER

    def queued(self) -> int:
        return len(self.server.conns[self.me].outbound) if self.alive() and self.me is not None else 0

    def after(self) -> None:
        self.seen = max(self.seen, max_epoch(self.server.db))


def _matched(h: Harness, before: int, committed_before: int, was_alive: bool) -> bool:
    """Did the transaction's rows match the designated connection's query sets?  (What the server
    put in the TransactionUpdate or the caller's ReducerResult.  When the connection was open and
    the commit closed it, a message overflowed its queue: the slow-consumer close.)"""
    if h.server.committed == committed_before:
        return False
    if was_alive and not h.alive():
        return True
    if not h.alive() or h.me is None:
        return False
    for out in h.server.conns[h.me].outbound[before:]:
        msg = out.message
        if isinstance(msg, TransactionUpdate):
            return True
        if isinstance(msg, ReducerResult) and isinstance(msg.outcome, ReducerOk) and msg.outcome.query_sets:
            return True
    return False


def _append(h: Harness, conn: int, fresh_key: bool = True) -> None:
    h.key += 1
    sid = STREAMS[h.key % len(STREAMS)]
    key = f"k{h.key}" if fresh_key else "bad key"
    h.server.handle(conn, CallReducer(h.request, "append_sync_event", (sid, key, '{"v":1}', None, None)))
    h.request += 1


class SrvRelation:
    def __init__(self, name: str) -> None:
        t = next(x for x in SV.SRV_TRANSITIONS if x.name == name)
        self.pre, self.post = SV.Srv.fresh("pre"), SV.Srv.fresh("post")
        self.act = t.action("act")
        self.rel = Relation(t.relation(self.pre, self.act, self.post, bug=BUG[0]))

    def check(self, pre: SrvVal, act: object, post: SrvVal, extra: list[Any] = ()) -> None:  # type: ignore[assignment]
        given = [*bind_srv(self.pre, pre), *bind(self.act, act), *extra]
        verdict = self.rel.check(given, {"post": bind_srv(self.post, post)},
                                 (("pre", self.pre), ("post", self.post)))
        assert verdict.accepts == "sat", f"{verdict.detail}\npre {pre}\npost {post}"
        assert verdict.unique == "unsat", f"{verdict.detail}\npre {pre}\npost {post}"

    def disabled(self, pre: SrvVal) -> bool:
        s = self.rel.solver
        s.push()
        s.add(*bind_srv(self.pre, pre), *bind(self.act, self.act))
        res = s.check()
        s.pop()
        return res == z3.unsat


_SRV: dict[str, SrvRelation] = {}


def srv_relation(name: str) -> SrvRelation:
    if name not in _SRV:
        _SRV[name] = SrvRelation(name)
    return _SRV[name]


OPS = ("connect", "close", "subscribe", "subscribe", "failed_call", "my_append", "my_retry", "other_append",
       "other_append", "reset", "compact", "pop", "pop", "pop", "advance", "crash", "clean_restart")


def _step(h: Harness, op: str, rng: random.Random) -> None:
    s = h.server
    pre = h.snapshot()
    before, committed_before = h.queued(), s.committed
    if op == "connect":
        if h.alive():
            return
        h.confirmed = rng.random() < 0.5
        h.me = s.connect(ME, h.confirmed)
        h.rcv = False
        h.after()
        srv_relation("connect").check(pre, SV.ConnectAct(h.confirmed), h.snapshot())
        return
    if op == "close":
        if not h.alive() or h.me is None:
            return
        s.close(h.me)
        srv_relation("close").check(pre, SV.NoAct(), h.snapshot())
        return
    if op == "pop":
        if h.me is None or not s.releasable(h.me):
            if pre.alive:
                assert srv_relation("pop").disabled(pre), f"the relation releases what the server holds back: {pre}"
            return
        out = s.pop(h.me)
        h.rcv, h.last_rcv = True, out.offset
        if h.confirmed:
            h.conf_max = max(h.conf_max, out.offset) if h.conf_any else out.offset
            h.conf_any = True
        srv_relation("pop").check(pre, SV.NoAct(), h.snapshot())
        return
    if op == "advance":
        to = s.durable + rng.randint(-1, 3)
        s.advance_durable(to)
        srv_relation("advance_durable").check(pre, SV.AdvanceAct(to), h.snapshot())
        return
    if op == "crash":
        durable_db = s.durable_db
        s.crash()
        h.after()
        srv_relation("crash").check(pre, SV.NoAct(), h.snapshot(),
                                    [SV.RECOVER(h.tokens(durable_db)) == h.tokens(s.db)])
        return
    if op == "clean_restart":
        s.clean_restart()
        srv_relation("clean_restart").check(pre, SV.NoAct(), h.snapshot())
        return
    # a message from the designated connection that commits nothing, or a transaction
    if not s.can_commit():
        return
    m_before, is_caller = max_epoch(s.db), False
    if op in ("subscribe", "failed_call", "my_append", "my_retry"):
        if not h.alive() or h.me is None:
            return
        if op == "subscribe":
            s.handle(h.me, Subscribe(h.request, h.qs, ("SELECT * FROM sync_event",)))
            h.request, h.qs = h.request + 1, h.qs + 1
        elif op == "failed_call":
            _append(h, h.me, fresh_key=False)
        elif op == "my_retry":
            h.key -= 1  # the previous key again: a deduplicated retry, or a fresh append
            _append(h, h.me)
        else:
            _append(h, h.me)
        is_caller = True
    elif op == "other_append":
        _append(h, h.other)
    elif op == "reset":
        sid = rng.choice(STREAMS)
        out = call(s.db, CallContext(ADMIN, s.now, s.committed + 1, POLICY), "reset_stream_epoch", (sid,))
        if isinstance(out, Ok):
            s.system_tx(out)
    elif op == "compact":
        s.system_tx(compact(s.db, s.now, POLICY))
    h.classify(before, committed_before, is_caller)
    h.matched = _matched(h, before, committed_before, pre.alive)
    h.after()
    post = h.snapshot()
    if s.committed == committed_before:
        if post.queue != pre.queue or post.alive != pre.alive:
            srv_relation("send").check(pre, SV.SendAct(), post)
        return
    assert s.committed == committed_before + 1
    act = SV.CommitAct(is_caller, h.matched, max_epoch(s.db) - m_before, h.tokens(s.db))
    srv_relation("commit").check(pre, act, post)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), undurable=st.integers(1, SV.HW))
def test_server_relations_match_the_model(seed: int, undurable: int) -> None:
    rng = random.Random(seed)
    h = Harness(undurable)
    # half the runs start connected and subscribed: commits then queue updates and results for the
    # designated connection from the first step (else few runs get there before a close or a crash)
    for op in ("connect", "subscribe") if rng.random() < 0.5 else ():
        _step(h, op, rng)
    for _ in range(40):
        _step(h, rng.choice(OPS), rng)


def test_every_server_transition_is_exercised() -> None:
    """Across a fixed batch of runs, every server transition is checked at least once."""
    seen: set[str] = set()
    saved = dict(_SRV)
    try:
        for name in [t.name for t in SV.SRV_TRANSITIONS]:
            rel = srv_relation(name)
            original = rel.check

            def spy(*args: Any, _name: str = name, _orig: Callable[..., None] = original, **kw: Any) -> None:
                seen.add(_name)
                _orig(*args, **kw)

            rel.check = spy  # type: ignore[method-assign]
        for seed in range(12):
            rng = random.Random(seed)
            h = Harness(2)
            for _ in range(40):
                _step(h, rng.choice(OPS), rng)
    finally:
        _SRV.clear()
        _SRV.update(saved)
    assert seen == {t.name for t in SV.SRV_TRANSITIONS}, seen


# --- resume subscriptions ------------------------------------------------------------------------------------


class ResumeRelations:
    def __init__(self) -> None:
        self.pre, self.post = SV.World.fresh("pre"), SV.World.fresh("post")
        self.sub_act = fresh(SV.SubscribeAct, "subscribe")
        self.rejected = z3.Bool("rejected")
        self.subscribe = Relation(SV.t_subscribe(self.pre, self.sub_act, self.post, self.rejected, BUG[0]))
        self.delta = Delta.fresh("delta")
        self.deliver = Relation(SV.t_deliver(self.pre, self.delta, self.post, False, "aux", BUG[0]))
        self.recover = Relation(SV.t_deliver(self.pre, self.delta, self.post, True, "aux"))


_RESUME: list[ResumeRelations] = []


def resume_relations() -> ResumeRelations:
    if not _RESUME:
        _RESUME.append(ResumeRelations())
    return _RESUME[0]


class Resume:
    """The designated connection's resume subscription as the client receives it."""

    def __init__(self) -> None:
        self.server = Server(POLICY, max_queue=1000, max_undurable=4)
        self.me = self.server.connect(ME, False)
        self.other = self.server.connect(OTHER_CALLER, False)
        self.sub = SubVal(False)
        self.qs = 0
        self.request = 1
        self.i = Interner()

    def world(self, i: Interner) -> tuple[Any, Any, SubVal]:
        return db(i, self.server.db), list(self.server.ledger), self.sub

    def drain(self) -> tuple[bool, bool]:
        """Consume the designated connection's messages into the subscription's view.
        Returns (a SubscribeApplied arrived, a stale SubscriptionError arrived)."""
        applied = rejected = False
        conn = self.server.conns.get(self.me)
        if conn is None:
            return applied, rejected
        for out in conn.outbound:
            msg = out.message
            if isinstance(msg, SubscribeApplied) and msg.query_set_id == self.qs:
                applied = True
                rows = [r for t in msg.rows if t.table == "sync_event" for r in t.inserts]
                self.sub.sent = [(e.seq, self.i(e.payload_hash)) for e in rows if isinstance(e, SyncEvent)]
                self.sub.mirror = list(self.sub.sent)
            elif isinstance(msg, SubscriptionError) and msg.query_set_id == self.qs:
                rejected = "stale_cursor" in msg.error
            else:
                updates = msg.query_sets if isinstance(msg, TransactionUpdate) else (
                    msg.outcome.query_sets if isinstance(msg, ReducerResult) and isinstance(msg.outcome, ReducerOk)
                    else ())
                for u in updates:
                    if u.query_set_id != self.qs:
                        continue
                    for t in u.tables:
                        if t.table != "sync_event":
                            continue
                        gone = {(e.seq, self.i(e.payload_hash)) for e in t.deletes if isinstance(e, SyncEvent)}
                        self.sub.mirror = [x for x in self.sub.mirror if x not in gone]
                        for e in t.inserts:
                            if isinstance(e, SyncEvent):
                                self.sub.sent.append((e.seq, self.i(e.payload_hash)))
                                self.sub.mirror.append((e.seq, self.i(e.payload_hash)))
        conn.outbound.clear()
        return applied, rejected


def _fits(d: DbState) -> bool:
    from proofmap import fits

    return fits(d)


def _check_resume(r: Resume, rng: random.Random) -> None:
    rel = resume_relations()
    s = r.server
    op = rng.choice(["subscribe", "subscribe", "append", "append", "append", "other_append", "compact", "reset",
                     "crash"])
    i = r.i
    pre_db, pre_ledger, pre_sub = db(i, s.db), list(s.ledger), SubVal(**vars(r.sub))
    pre_sub.sent, pre_sub.mirror = list(r.sub.sent), list(r.sub.mirror)
    given = [*bind(rel.pre.db, pre_db), *bind_ledger(i, rel.pre.ledger, pre_ledger), *bind_sub(rel.pre.sub, pre_sub)]
    if op == "subscribe":
        if r.sub.active:
            return
        sid = rng.choice(STREAMS)
        epoch, head, floor = virtual_stream(s.db, sid)
        e = epoch if rng.random() < 0.8 else epoch - 1
        w = max(0, rng.choice([head, head - 1, head - 2, floor - 1, floor - 2, floor, head + 1]))
        # a page (ADR-0042) half the time: B around W and the head, the bound written as <= or as <
        upper = None if rng.random() < 0.5 else max(0, rng.choice([w - 1, w, w + 1, w + 2, head - 1, head, head + 2]))
        queries = resume_queries(sid, e, w)
        if upper is not None:
            bound = f"seq <= {upper}" if rng.random() < 0.5 else f"seq < {upper + 1}"
            queries = (*queries[:-1], f"{queries[-1]} AND {bound}")
        r.qs += 1
        s.handle(r.me, Subscribe(r.request, r.qs, queries))
        r.request += 1
        applied, rejected = r.drain()
        if applied:
            r.sub = SubVal(True, STREAMS.index(sid), e, w, head, r.sub.sent, r.sub.mirror, upper)
            if len(r.sub.sent) > SV.KD:
                r.sub = SubVal(False)
                return
        act = SV.SubscribeAct(STREAMS.index(sid), True, e, w, POLICY.class_for(sid).replay_budget,
                              upper is not None, upper or 0)
        verdict = rel.subscribe.check(
            [*given, *bind(rel.sub_act, act), *i.axioms()],
            {"sub": bind_sub(rel.post.sub, r.sub), "rejected": [rel.rejected == rejected],
             "db": bind(rel.post.db, pre_db), "ledger": bind_ledger(i, rel.post.ledger, pre_ledger)},
            (("sub", rel.post.sub),))
        assert verdict.accepts == "sat" and verdict.unique == "unsat", verdict.detail
        return
    before = s.committed
    if op == "crash":
        s.advance_durable(s.committed)  # the resume layer models recovery from the durable state
        was_durable = s.durable_db
        s.crash()
        post_sub = SubVal(False)
        r.sub = post_sub
        r.me = s.connect(ME, False)
        r.other = s.connect(OTHER_CALLER, False)
        assert was_durable is not None
        verdict = rel.recover.check(
            [*given, *bind(rel.post.db, db(i, s.db)), *bind(rel.delta, delta(i, None)), *i.axioms()],
            {"sub": bind_sub(rel.post.sub, post_sub), "ledger": bind_ledger(i, rel.post.ledger, s.ledger)},
            (("sub", rel.post.sub),))
        assert verdict.accepts == "sat" and verdict.unique == "unsat", verdict.detail
        return
    if op in ("append", "other_append"):
        sid = rng.choice(STREAMS)
        key = rng.choice(["k1", "k2", "k3", f"k{rng.randint(4, 99)}"])
        conn = r.me if op == "append" else r.other
        s.handle(conn, CallReducer(r.request, "append_sync_event", (sid, key, rng.choice(['{"v":1}', "[2]"]),
                                                                     None, None)))
        r.request += 1
    elif op == "compact":
        s.system_tx(compact(s.db, s.now, POLICY))
    elif op == "reset":
        out = call(s.db, CallContext(ADMIN, s.now, s.committed + 1, POLICY), "reset_stream_epoch",
                   (rng.choice(STREAMS),))
        if isinstance(out, Ok):
            s.system_tx(out)
    if s.committed == before:
        r.drain()
        return
    d_py = s.history[-1].delta
    s.advance_durable(s.committed)  # keep committing (max_undurable) and keep the history short
    r.drain()
    if r.sub.active:
        sid = STREAMS[r.sub.stream]
        epoch, head, _ = virtual_stream(s.db, sid)
        if epoch == r.sub.epoch:
            r.sub.last_head = head
    if not _fits(s.db) or len(r.sub.sent) > SV.KD or len(r.sub.mirror) > SV.KD:
        raise _OutOfBounds
    verdict = rel.deliver.check(
        [*given, *bind(rel.post.db, db(i, s.db)), *bind(rel.delta, delta(i, d_py)), *i.axioms()],
        {"sub": bind_sub(rel.post.sub, r.sub), "ledger": bind_ledger(i, rel.post.ledger, s.ledger)},
        (("sub", rel.pre.sub), ("delta", rel.delta), ("sub'", rel.post.sub)))
    assert verdict.accepts == "sat" and verdict.unique == "unsat", verdict.detail


class _OutOfBounds(Exception):
    pass


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_resume_relations_match_the_model(seed: int) -> None:
    rng = random.Random(seed)
    r = Resume()
    for _ in range(30):
        try:
            _check_resume(r, rng)
        except _OutOfBounds:
            return


def test_rebootstrapped_views_are_as_the_model_assumes() -> None:
    """What ``proofs.client.authority_ok`` assumes of a view a rebootstrap leaves (events contiguous, ending
    at the watermark) holds of the model client's views after it rebootstraps and rehydrates from the
    retained window over the wire (crashes, resets and compaction make it rebootstrap): every view holds
    exactly the seqs base + 1 .. watermark."""
    from spec.system import System

    rebooted = 0
    for seed in range(12):
        rng = random.Random(seed)
        sysm = System(POLICY, [("c0", ME, False)], max_queue=100, max_undurable=3)
        sysm.connect(0)
        for sid in STREAMS:
            sysm.follow(0, sid)
        for _ in range(30):
            op = rng.choice(["append", "append", "append", "durable", "crash", "reset", "compact", "quiesce"])
            if op == "append" and sysm.server.can_commit():
                out = call(sysm.server.db, CallContext(ME, 0, sysm.server.committed + 1, POLICY),
                           "append_sync_event", (rng.choice(STREAMS), f"k{rng.randint(0, 30)}", "{}", None, None))
                if isinstance(out, Ok):
                    sysm.server.system_tx(out)
                    sysm._after_server_step()  # (the harness records the state, as for a client's call)
            elif op == "durable":
                sysm.advance_durable(rng.randint(1, 3))
            elif op == "crash":
                sysm.crash()
            elif op == "reset":
                sysm.reset_epoch(rng.choice(STREAMS))
            elif op == "compact":
                sysm.compact()
            else:
                sysm.quiesce()
            for sid, view in sysm.clients[0].streams.items():
                seqs = [sq for sq, _ in view.applied]
                assert view.rehydrating or seqs == list(range(view.base + 1, view.last + 1)), (sid, view)
        sysm.quiesce()
        rebooted += sum(v.rebootstraps for v in sysm.clients[0].streams.values())
        assert not sysm.trace.violations, sysm.trace.violations[:3]
    assert rebooted > 0  # the runs did rebootstrap


# --- client apply ---------------------------------------------------------------------------------------------


def _view_val(i: Interner, v: StreamView) -> CL.View:
    items = [SV.Item(sq, i(h)) for sq, h in v.applied]
    pad = [SV.Item(0, 0)] * (CL.KA - len(items))
    return CL.View(v.epoch is not None, v.epoch or 0, v.last, len(items), tuple(items + pad), v.rebootstraps,
                   v.continues)


def _bind_view(sym: CL.View, val: CL.View) -> list[Any]:
    out = [sym.has_epoch == val.has_epoch, sym.last == val.last, sym.n == val.n, sym.boots == val.boots,
           sym.conts == val.conts]
    if val.has_epoch:
        out.append(sym.epoch == val.epoch)
    for k in range(val.n):
        out += bind(sym.applied[k], val.applied[k])
    return out


class ClientRelations:
    def __init__(self) -> None:
        self.v, self.w = CL.View.fresh("pre"), CL.View.fresh("post")
        self.e = fresh(CL.Incoming, "event")
        self.gap = z3.Bool("gap")
        self.apply = Relation(CL.t_apply(self.v, self.e, self.w, self.gap, BUG[0]))
        self.row = fresh(CL.StreamRow, "row")
        self.auth = CL.Authority.fresh("authority")
        self.rebooted = z3.Bool("rebooted")
        self.stream_row = Relation(CL.t_stream_row(self.v, self.row, self.auth, self.w, self.rebooted, BUG[0]))


_CLIENT: list[ClientRelations] = []


def client_relations() -> ClientRelations:
    if not _CLIENT:
        _CLIENT.append(ClientRelations())
    return _CLIENT[0]


views = st.builds(
    lambda epoch, start, n, boots: StreamView(epoch, start + n,
                                              [(start + k + 1, f"h{start + k + 1}") for k in range(n)], boots),
    st.one_of(st.none(), st.integers(1, 3)), st.integers(0, 4), st.integers(0, CL.KA - 1), st.integers(0, 2))


APPLY_ARGS: dict[str, st.SearchStrategy[Any]] = dict(view=views, seq_delta=st.integers(-2, 3),
                                                     epoch=st.integers(1, 3))


@settings(max_examples=80, deadline=None)
@given(**APPLY_ARGS)
def test_client_apply_matches_the_model(view: StreamView, seq_delta: int, epoch: int) -> None:
    rel = client_relations()
    client = Client("c", ME, False)
    client.streams["s.a"] = view
    i = Interner()
    pre = _view_val(i, view)
    ev = SyncEvent("s.a", epoch, view.last + seq_delta, "k", f"h{view.last + seq_delta}", "{}", "a" * 64, 0, 0)
    gaps = client.gaps_detected
    client._on_rows("s.a", (TableRows("sync_event", (ev,)),))
    post = _view_val(i, client.streams["s.a"])
    verdict = rel.apply.check([*_bind_view(rel.v, pre), rel.e.seq == ev.seq, rel.e.epoch == ev.epoch,
                               rel.e.hash == i(ev.payload_hash)],
                              {"view": _bind_view(rel.w, post), "gap": [rel.gap == (client.gaps_detected > gaps)]},
                              (("view'", rel.w),))
    assert verdict.accepts == "sat" and verdict.unique == "unsat", verdict.detail


HOPS = st.lists(st.tuples(st.integers(1, 3), st.integers(-2, 1)), max_size=2)
"""Earlier hops of a continuation chain (ADR-0010): (epoch, bound relative to the view's watermark)."""


STREAM_ROW_ARGS: dict[str, st.SearchStrategy[Any]] = dict(
    view=views, epoch=st.integers(1, 4), floor_delta=st.integers(-1, 2), head_delta=st.integers(-1, 2),
    cont=st.tuples(st.integers(0, 3), st.integers(-2, 1)), earlier=HOPS)


@settings(max_examples=120, deadline=None)
@given(**STREAM_ROW_ARGS)
# a view at (1, 3) meets epoch 3, which continues 2 up to 3 and, earlier, 1 up to 3: it continues (ADR-0010)
@example(view=StreamView(1, 3, [(1, "h1"), (2, "h2"), (3, "h3")]), epoch=3, floor_delta=-1, head_delta=1,
         cont=(2, 0), earlier=[(1, 0)])
# ... but not past the smallest bound on the way back to its epoch
@example(view=StreamView(1, 3, [(1, "h1"), (2, "h2"), (3, "h3")]), epoch=3, floor_delta=-1, head_delta=1,
         cont=(2, -1), earlier=[(1, 0)])
def test_client_stream_row_matches_the_model(view: StreamView, epoch: int, floor_delta: int, head_delta: int,
                                             cont: tuple[int, int], earlier: list[tuple[int, int]]) -> None:
    """On a stale row the client drops the view (the model's authority answers nothing, watermark 0) and
    rehydrates later from the retained window (its events then come through ``t_apply``).  The row may
    carry earlier hops of the continuation chain, through which the client continues too."""
    rel = client_relations()
    client = Client("c", ME, False)
    client.streams["s.a"] = view = copy.deepcopy(view)  # the client moves it (an explicit example is reused)
    i = Interner()
    pre = _view_val(i, view)
    head = max(0, view.last + head_delta)
    cont_epoch, cont_seq = cont[0], max(0, min(head, view.last + cont[1]))  # continues, at most up to head
    cont_epoch = cont_epoch if cont_epoch < epoch else 0
    hops = [(e, max(0, min(head, view.last + d))) for e, d in earlier] if cont_epoch else []
    row = SyncStream("s.a", "default", epoch, cont_epoch, cont_seq, head, max(1, view.last + 1 + floor_delta), 6, 0,
                     0, tuple(e for e, _ in hops), tuple(s for _, s in hops))
    boots = view.rebootstraps
    client._on_rows("s.a", (TableRows("sync_stream", (row,)),))
    post = _view_val(i, client.streams["s.a"])
    a_epoch, a_wm, a_events = row.epoch, 0, ()
    a_items = [SV.Item(sq, i(h)) for sq, h in a_events]
    given = [*_bind_view(rel.v, pre), rel.row.epoch == row.epoch, rel.row.floor == row.floor_seq,
             rel.row.head == row.head_seq, rel.row.cont_epoch == row.continues_epoch,
             rel.row.cont_seq == row.continues_seq, rel.row.earlier_n == len(hops),
             *[getattr(rel.row, f"earlier_{col}{k}") == x for k, hop in enumerate(hops)
               for col, x in zip(("epoch", "seq"), hop, strict=True)],
             rel.auth.epoch == a_epoch, rel.auth.watermark == a_wm,
             rel.auth.n == len(a_items), *[eq for k, it in enumerate(a_items) for eq in bind(rel.auth.events[k], it)]]
    verdict = rel.stream_row.check(given, {"view": _bind_view(rel.w, post),
                                           "rebooted": [rel.rebooted == (client.streams["s.a"].rebootstraps > boots)]},
                                   (("view'", rel.w),))
    assert verdict.accepts == "sat" and verdict.unique == "unsat", verdict.detail


# --- the row filter -------------------------------------------------------------------------------------------


def _row_for(table: str, rng: random.Random, me: Claims) -> Any:
    who = rng.choice([me.identity, "9" * 64])
    sid = rng.choice(["s.a", "x.b"])
    rows: dict[str, Callable[[], Any]] = {
        "sync_stream": lambda: SyncStream(sid, "default", 1, 0, 0, 0, 1, 6, 0, 0),
        "sync_event": lambda: SyncEvent(sid, 1, 1, "k", "h", "{}", who, 0, 0),
        "sync_checkpoint": lambda: SyncCheckpoint(f"d1|{sid}", "d1", sid, who, 1, 0, 0),
        "session_presence": lambda: SessionPresence("p1", who, "dev", "n", "online", "", 0, 1, None),
        "provider_capability": lambda: ProviderCapability("prov1", who, "{}", "h", (5000,), 0, "active", 1, 0),
        "compute_assignment": lambda: ComputeAssignment("r1", who, 5000, "{}", "h", rng.choice([None, "prov1"]),
                                                        rng.choice([None, me.identity, "9" * 64]), "open", None, 1,
                                                        0, 0),
        "bridge_outbox": lambda: BridgeOutbox("o1", "src", 1, "[]", "c", "h", "pending", 0, 0, None, None, (), 0, 0),
        "presence_signal": lambda: PresenceSignal("p1", who, "online", "", 0),
        "stream_signal": lambda: StreamSignal(sid, "typing", "{}", who, 0),
    }
    return rows[table]()


@pytest.mark.parametrize("table", [t.name for t in TABLES])
def test_row_filter_matches_the_model(table: str) -> None:
    rng = random.Random(table)
    for _ in range(60):
        scopes = frozenset(x for x in ("compute.assign", "compute.execute", "bridge.enqueue", "bridge.mark_sent",
                                       "sync.subscribe") if rng.random() < 0.3)
        me = Claims(rng.choice(["a" * 64, "c" * 64]), scopes, rng.choice([("s.*",), (), ("x.*",)]))
        row = _row_for(table, rng, me)
        python = can_read(me, row)
        from spec.auth import stream_granted

        sid = getattr(row, "stream_id", None)
        case = SV.ReadCase(
            table=[t.name for t in TABLES].index(table),
            granted=sid is not None and stream_granted(me, sid),
            owner=getattr(row, "owner", None) == me.identity,
            requester=getattr(row, "requester", None) == me.identity,
            provider_owner=getattr(row, "provider_owner", None) == me.identity,
            assign_scope="compute.assign" in me.scopes,
            bridge_scope=bool(me.scopes & BRIDGE_SCOPES),
            matches=True)
        assert truth(SV.visible(case, BUG[0])) == python, (table, me, row)


def test_delivery_transitions_are_covered() -> None:
    """Every transition of the delivery layer has a correspondence test above."""
    covered = {"connect", "close", "send", "commit", "pop", "advance_durable", "crash", "clean_restart",
               "subscribe", "deliver", "apply", "stream_row", "rebootstrap", "visible"}
    assert {t.name for t in SV.SRV_TRANSITIONS} <= covered
    assert set(CL.BUGS.values()) and all(t in covered for t, _ in CL.BUGS.values())
    assert all(t.split("[")[0] in covered for t, _ in SV.BUGS.values())



# --- the checks have teeth --------------------------------------------------------------------------------------


PAGE_BUGS = ("page_bound_exclusive", "page_snapshot_ignores_bound")
"""Encoding bugs of a page's rows (not of its stale decision): the resume checks catch them."""


def _run_bodies(bug: str) -> bool:
    """Run the correspondence checks of the transition ``bug`` breaks, with every relation encoding
    that bug; True when some check fails."""
    BUG[0] = bug
    _SRV.clear()
    _RESUME.clear()
    _CLIENT.clear()
    target = {**SV.BUGS, **CL.BUGS}[bug][0]
    def quick(test: Any, args: dict[str, st.SearchStrategy[Any]]) -> None:
        """Run a property test body without shrinking (the first failure is all we need)."""
        run = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                       phases=[Phase.generate], suppress_health_check=list(HealthCheck))(
            given(**args)(lambda **kw: test.hypothesis.inner_test(**kw)))
        run()

    try:
        if target == "subscribe" and bug not in ("snapshot_not_atomic", *PAGE_BUGS):
            quick(test_stale_decisions_match, STALE_ARGS)
        elif target in ("subscribe", "deliver[append_sync_event]", "deliver[compact]"):
            for seed in range(60):
                with contextlib.suppress(_OutOfBounds):
                    test_resume_relations_match_the_model.hypothesis.inner_test(seed)  # type: ignore[attr-defined]
        elif target == "apply":
            quick(test_client_apply_matches_the_model, APPLY_ARGS)
        elif target == "stream_row":
            test_client_stream_row_matches_the_model()  # its explicit examples, then generated ones
        elif target == "visible":
            for t in TABLES:
                test_row_filter_matches_the_model(t.name)
        else:
            for seed in range(40):
                test_server_relations_match_the_model.hypothesis.inner_test(seed, 1 + seed % SV.HW)  # type: ignore[attr-defined]
    except AssertionError:
        return True
    finally:
        BUG[0] = ""
        _SRV.clear()
        _RESUME.clear()
        _CLIENT.clear()
    return False


@pytest.mark.parametrize("bug", sorted({**SV.BUGS, **CL.BUGS}))
def test_delivery_correspondence_catches_a_planted_bug(bug: str) -> None:
    """Every planted bug of the delivery encodings makes its correspondence test fail."""
    assert _run_bodies(bug), f"the correspondence tests do not notice the encoding bug {bug}"
