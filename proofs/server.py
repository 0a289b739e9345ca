"""The delivery layer of the model in Z3: stale cursors, resume subscriptions, the outbound
queue with confirmed reads, durability and crash recovery, and the row filter.

Four abstractions, each a state record with its transitions, each written once here and used by
the proofs and the correspondence tests alike:

``stale_reasons`` / ``oracle_stale_reasons``
    the server's decision (:func:`spec.resume.stale_reasons`) and the invariant's oracle
    (:func:`spec.invariants.stale_reasons`), encoded separately;
:class:`World` -- a resume subscription
    the database (:class:`~proofs.encoding.Db`), the ledger (every event ever committed, per
    stream: seq -> hash and epoch, unbounded Z3 arrays) and one subscription of one connection to
    ``SELECT * FROM sync_event WHERE stream_id = S AND epoch = E AND seq > W``: what the server
    has sent on it (the replay list, at most ``KD`` events) and the rows the client holds for it
    after inserts and deletes (the mirror).  Transitions: ``subscribe`` (stale check, snapshot and
    registration in one step) and ``deliver`` (one committed transaction's delta, for any database
    transition);
:class:`Srv` -- one connection's outbound queue and the server's offsets
    committed/durable offsets, up to ``Q`` queued messages tagged with offsets, confirmed-read
    gating, durability advance, crash (rollback to the durable state, then the recovery
    transaction) and clean restart.  A database state is abstracted to a *token* (uninterpreted:
    which state it is) and ``M``, its largest epoch; the database proofs' lemma L-EPOCH says
    every committed transaction raises ``M`` by 0 or 1 and recovery sets it to
    ``M(durable) + max_undurable + 1``, which is what :func:`t_commit` and :func:`t_crash` assume;
``can_read`` -- the row filter
    visibility per table as :mod:`spec.schema` assigns it, against AUTH-1's statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import z3

from proofs.core import Record, ZBool, ZInt, filtered, fresh, fresh_rows, in_range, one_of, same, zmax
from proofs.encoding import Db, Delta, Event, K, S, per_slot, vepoch, vfloor, vhead
from spec.schema import TABLES, Visibility

KD = 6
"""Events a resume subscription can have been sent (snapshot plus live tail)."""
Q = 4
"""Outbound queue bound (``max_queue``)."""
HW = 4
"""Largest ``max_undurable`` the proofs cover (the durability window)."""

SERVER_BOUNDS = {"KD": KD, "Q": Q, "HW": HW}

BUGS: dict[str, tuple[str, str]] = {
    "stale_floor_lt_vs_le": ("subscribe", "the retention check uses W < floor - 2 (< where <= is right)"),
    "epoch_ignored_on_resume": ("subscribe", "the stale check ignores the requested epoch"),
    "budget_ignores_upper_bound": ("subscribe", "a page (seq <= B) is measured to the head, not to min(head, B)"),
    "budget_upper_max_not_min": ("subscribe", "a page's replay ends at max(head, B), not min(head, B)"),
    "budget_gt_read_as_ge": ("subscribe", "a resume replaying exactly the budget is refused (>= where > is right)"),
    "snapshot_not_atomic": ("subscribe", "the snapshot misses the newest committed event"),
    "page_bound_exclusive": ("subscribe", "a page's bound seq <= B is read as seq < B (its snapshot stops at B - 1)"),
    "page_snapshot_ignores_bound": ("subscribe", "a page's snapshot takes every event after W, past its bound B"),
    "page_updates_ignore_bound": ("deliver[append_sync_event]",
                                  "a page is sent the events appended after it, past its bound B"),
    "update_sent_twice": ("deliver[append_sync_event]",
                          "a transaction's matching insert is sent twice (update and result)"),
    "retention_delete_not_applied": ("deliver[compact]", "the client mirror ignores deletes"),
    "confirmed_gate_off_by_one": ("pop", "confirmed reads release one offset early"),
    "durable_can_fall": ("advance_durable", "advance_durable forgets max(to, durable)"),
    "caller_also_gets_update": ("commit", "the caller gets a TransactionUpdate besides its ReducerResult"),
    "update_tagged_with_old_offset": ("commit", "a TransactionUpdate carries the offset before the commit"),
    "caller_result_dropped": ("commit", "the caller of a committed call gets no ReducerResult"),
    "durable_state_off_by_one": ("advance_durable", "durable_db is the state one offset before durable"),
    "crash_without_rollback": ("crash", "recovery starts from the committed, not the durable, state"),
    "crash_keeps_epochs": ("crash", "recovery does not move epochs (no_epoch_bump_on_crash)"),
    "crash_bump_too_small": ("crash", "recovery moves epochs by max_undurable, not max_undurable + 1"),
    "row_filter_ignored": ("visible", "subscriptions are not row-filtered by grants and ownership"),
}

# --- stale cursors ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscribeAct(Record):
    GUARDS: ClassVar[dict[str, str]] = {"epoch": "has_epoch", "upper": "has_upper"}
    stream: ZInt
    has_epoch: ZBool  # the query pins epoch
    epoch: ZInt
    watermark: ZInt
    budget: ZInt  # policy.class_for(stream).replay_budget
    has_upper: ZBool  # the query bounds seq above: a page (ADR-0042)
    upper: ZInt  # B, the largest seq it asks for


Reasons = tuple[ZBool, ZBool, ZBool, ZBool]
"""epoch_changed, retention_floor_breach, replay_budget_exceeded, cursor_ahead_of_head."""


def stale_reasons(epoch: ZInt, head: ZInt, floor: ZInt, budget: ZInt, has_req: ZBool, req: ZInt, w: ZInt,
                  has_up: ZBool, up: ZInt, bug: str = "") -> Reasons:
    """The server's decision, :func:`spec.resume.stale_reasons` (``up``: the bound B, when ``has_up``)."""
    if bug == "budget_ignores_upper_bound":
        end = head
    elif bug == "budget_upper_max_not_min":
        end = z3.If(has_up, z3.If(up > head, up, head), head)
    else:
        end = z3.If(has_up, z3.If(up < head, up, head), head)
    return (
        z3.BoolVal(False) if bug == "epoch_ignored_on_resume" else z3.And(has_req, req != epoch),
        w < floor - (2 if bug == "stale_floor_lt_vs_le" else 1),
        end - w >= budget if bug == "budget_gt_read_as_ge" else end - w > budget,
        w > head,
    )


def oracle_stale_reasons(epoch: ZInt, head: ZInt, floor: ZInt, budget: ZInt, has_req: ZBool, req: ZInt,
                         w: ZInt, has_up: ZBool, up: ZInt) -> Reasons:
    """The oracle, :func:`spec.invariants.stale_reasons`, in its own form: each reason a count of seqs
    that is not zero (or over the budget) -- not a copy of :func:`stale_reasons`' comparisons, so that
    the ``stale`` proof's equality of the two is a proof and not a tautology.  The events to replay are
    those after W less those after the bound B that a page does not ask for."""
    compacted_needed = zmax([0, floor - (w + 1)])
    not_asked = z3.If(has_up, zmax([0, head - zmax([up, w])]), 0)
    to_replay = zmax([0, head - w]) - not_asked
    never_existed = zmax([0, w - head])
    return (z3.And(has_req, req != epoch), compacted_needed > 0, to_replay > budget, never_existed > 0)


def subscribe_reasons(db: Db, a: SubscribeAct, bug: str = "") -> Reasons:
    """``stale_error`` on ``virtual_stream(db, stream)``."""
    out: list[ZBool] = []
    for k in range(4):
        def reason(j: int, k: int = k) -> ZBool:
            return stale_reasons(vepoch(db, j), vhead(db, j), vfloor(db, j), a.budget, a.has_epoch, a.epoch,
                                 a.watermark, a.has_upper, a.upper, bug)[k]
        out.append(_at_stream(a.stream, reason))
    return (out[0], out[1], out[2], out[3])


def _at_stream(i: ZInt, f: Any) -> ZBool:
    expr = f(S - 1)
    for j in range(S - 2, -1, -1):
        expr = z3.If(i == j, f(j), expr)
    return expr


# --- resume subscriptions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item(Record):
    """A delivered sync_event row as the subscriber keeps it."""

    seq: ZInt
    hash: ZInt


def same_item(a: Item, b: Item) -> ZBool:
    return same(a, b, used=None)


@dataclass(frozen=True)
class Ledger:
    """Every event ever committed to one stream (never compacted): seq -> hash, seq -> epoch."""

    hash: ZInt  # z3 Array Int -> Int
    epoch: ZInt

    @staticmethod
    def fresh(p: str) -> Ledger:
        return Ledger(z3.Array(f"{p}.hash", z3.IntSort(), z3.IntSort()),
                      z3.Array(f"{p}.epoch", z3.IntSort(), z3.IntSort()))


@dataclass(frozen=True)
class Sub:
    active: ZBool
    stream: ZInt
    epoch: ZInt  # E
    watermark: ZInt  # W
    last_head: ZInt  # ghost: the stream's head while its epoch was E
    has_upper: ZBool  # the query bounds seq above (seq <= B): a page (ADR-0042)
    upper: ZInt  # B
    sent_n: ZInt
    sent: tuple[Item, ...]  # KD: every event sent on the subscription, in order (deletes ignored)
    mirror_n: ZInt
    mirror: tuple[Item, ...]  # K: the rows the client holds (inserts minus deletes)

    @staticmethod
    def fresh(p: str) -> Sub:
        return Sub(z3.Bool(f"{p}.active"), z3.Int(f"{p}.stream"), z3.Int(f"{p}.epoch"), z3.Int(f"{p}.watermark"),
                   z3.Int(f"{p}.last_head"), z3.Bool(f"{p}.has_upper"), z3.Int(f"{p}.upper"),
                   z3.Int(f"{p}.sent_n"), fresh_rows(Item, f"{p}.sent", KD),
                   z3.Int(f"{p}.mirror_n"), fresh_rows(Item, f"{p}.mirror", K))


@dataclass(frozen=True)
class World:
    db: Db
    ledger: tuple[Ledger, ...]  # per stream
    sub: Sub

    @staticmethod
    def fresh(p: str) -> World:
        return World(Db.fresh(f"{p}.db"), tuple(Ledger.fresh(f"{p}.ledger{j}") for j in range(S)),
                     Sub.fresh(f"{p}.sub"))


def _list_eq(n: ZInt, xs: tuple[Item, ...], m: ZInt, ys: tuple[Item, ...]) -> ZBool:
    return z3.And(n == m, *[z3.Implies(i < n, same_item(x, y)) for i, (x, y) in enumerate(zip(xs, ys, strict=True))])


def same_sub(a: Sub, b: Sub) -> ZBool:
    return z3.And(a.active == b.active, z3.Implies(a.active, z3.And(
        a.stream == b.stream, a.epoch == b.epoch, a.watermark == b.watermark, a.last_head == b.last_head,
        a.has_upper == b.has_upper, z3.Implies(a.has_upper, a.upper == b.upper),
        _list_eq(a.sent_n, a.sent, b.sent_n, b.sent), _list_eq(a.mirror_n, a.mirror, b.mirror_n, b.mirror))))


def _matches(e: Event, sub: Sub, bug: str = "", bounded: bool = True) -> ZBool:
    """The row matches the subscription's query: ``epoch = E AND seq > W`` (``AND seq <= B`` for a page;
    ``bounded`` False: the bound is dropped, a planted bug)."""
    below = e.seq < sub.upper if bug == "page_bound_exclusive" else e.seq <= sub.upper
    return z3.And(e.epoch == sub.epoch, e.seq > sub.watermark, *([z3.Implies(sub.has_upper, below)] if bounded else []))


def _snapshot(db: Db, j: int, sub: Sub, n_out: ZInt, out: tuple[Item, ...], bug: str) -> ZBool:
    ev = db.events[j]
    n = ev.n - 1 if bug == "snapshot_not_atomic" else ev.n
    bounded = bug != "page_snapshot_ignores_bound"
    return filtered(n, ev.slots, lambda e: _matches(e, sub, bug, bounded), n_out, out,
                    lambda o, e: same_item(o, Item(e.seq, e.hash)))


def t_subscribe(pre: World, a: SubscribeAct, post: World, rejected: ZBool, bug: str = "") -> ZBool:
    """``Server._subscribe`` for a resume query (granted): the stale check, then the snapshot and
    the registration in one step.  ``rejected``: a stale_cursor SubscriptionError was sent."""
    reasons = subscribe_reasons(pre.db, a, bug)
    stale = z3.Or(reasons)
    s = post.sub

    def at(j: int) -> ZBool:
        return z3.And(s.active, s.stream == j, s.epoch == a.epoch, s.watermark == a.watermark,
                      s.last_head == vhead(pre.db, j), s.has_upper == a.has_upper, s.upper == a.upper,
                      _snapshot(pre.db, j, s, s.sent_n, s.sent, bug),
                      _snapshot(pre.db, j, s, s.mirror_n, s.mirror, bug))

    keep = z3.And(_same_ledgers(pre, post), same_db_of(pre, post))
    # the resume world's subscription is `seq > W`, or a page `seq > W AND seq <= B` (ADR-0042)
    return z3.And(z3.Not(pre.sub.active), a.has_epoch, rejected == stale, keep,
                  z3.If(stale, same_sub(pre.sub, post.sub), per_slot(a.stream, S, at)))


def same_db_of(pre: World, post: World) -> ZBool:
    from proofs.encoding import same_db

    return same_db(pre.db, post.db)


def _same_ledgers(pre: World, post: World) -> ZBool:
    return z3.And([z3.And(a.hash == b.hash, a.epoch == b.epoch) for a, b in zip(pre.ledger, post.ledger, strict=True)])


def t_deliver(pre: World, d: Delta, post: World, crash: bool, aux: str, bug: str = "") -> ZBool:
    """One committed transaction, already applied to the database (``pre.db`` -> ``post.db`` with
    delta ``d``), reaches the ledger and the subscription: a matching inserted event is sent and
    joins the mirror; matching deleted rows leave the mirror.  ``crash``: the transaction is the
    recovery after an unclean restart, which closes every connection (the subscription ends)."""
    parts: list[ZBool] = []
    for j in range(S):
        a, b = pre.ledger[j], post.ledger[j]
        hit = z3.And(d.ins, d.ins_stream == j)
        parts.append(b.hash == z3.If(hit, z3.Store(a.hash, d.ins_ev.seq, d.ins_ev.hash), a.hash))
        if crash:  # the new epoch continues the old one: the ledger's events of it up to the head move too
            old, new = pre.db.streams[j], post.db.streams[j]
            x = z3.Int(f"{aux}.seq{j}")
            parts.append(b.epoch == z3.If(old.exists, z3.Lambda([x], z3.If(
                z3.And(x <= old.head, a.epoch[x] == old.epoch), new.epoch, a.epoch[x])), a.epoch))
        else:
            parts.append(b.epoch == z3.If(hit, z3.Store(a.epoch, d.ins_ev.seq, d.ins_ev.epoch), a.epoch))
    s, t = pre.sub, post.sub
    if crash:
        return z3.And(*parts, z3.Not(t.active))

    def at(j: int) -> ZBool:
        ev = pre.db.events[j]
        ins = z3.And(d.ins, d.ins_stream == j, _matches(d.ins_ev, s, bounded=bug != "page_updates_ignore_bound"))
        item = Item(d.ins_ev.seq, d.ins_ev.hash)
        deleted = d.dels[j]

        def is_deleted(it: Item) -> ZBool:
            return z3.Or([z3.And(i < deleted, ev.slots[i].seq == it.seq, ev.slots[i].hash == it.hash,
                                 _matches(ev.slots[i], s)) for i in range(K)])

        kept_n = z3.Int(f"{aux}.kept_n")
        kept = fresh_rows(Item, f"{aux}.kept", K)
        if bug == "retention_delete_not_applied":
            keep_mirror = _list_eq(s.mirror_n, s.mirror, kept_n, kept)
        else:
            keep_mirror = filtered(s.mirror_n, s.mirror, lambda it: z3.Not(is_deleted(it)), kept_n, kept, same_item)
        copies = 2 if bug == "update_sent_twice" else 1
        sent = z3.And([z3.Implies(i < s.sent_n, same_item(t.sent[i], s.sent[i])) for i in range(KD)])
        sent_ins = z3.And(t.sent_n == s.sent_n + copies, s.sent_n + copies <= KD,
                          *[z3.Implies(z3.And(s.sent_n <= i, i < s.sent_n + copies), same_item(t.sent[i], item))
                            for i in range(KD)])
        mirror = z3.And([z3.Implies(i < kept_n, same_item(t.mirror[i], kept[i])) for i in range(K)])
        mirror_ins = z3.And(t.mirror_n == kept_n + 1, kept_n < K,
                            *[z3.Implies(i == kept_n, same_item(t.mirror[i], item)) for i in range(K)])
        return z3.And(
            t.active, t.stream == j, t.epoch == s.epoch, t.watermark == s.watermark, t.has_upper == s.has_upper,
            t.upper == s.upper,
            t.last_head == z3.If(vepoch(post.db, j) == s.epoch, vhead(post.db, j), s.last_head),
            keep_mirror, sent, mirror,
            z3.If(ins, z3.And(sent_ins, mirror_ins), z3.And(t.sent_n == s.sent_n, t.mirror_n == kept_n)))

    return z3.And(*parts, z3.If(s.active, per_slot(s.stream, S, at), z3.Not(t.active)))


# --- the outbound queue, confirmed reads, durability -------------------------------------------------------

OTHER, UPDATE, RESULT = 0, 1, 2
"""Message kinds: any message derived from the current state (SubscribeApplied, errors, the
result of a call that wrote nothing) / a TransactionUpdate / the ReducerResult of a call that
committed."""


@dataclass(frozen=True)
class Msg(Record):
    off: ZInt
    kind: ZInt


@dataclass(frozen=True)
class Srv:
    committed: ZInt
    durable: ZInt
    undurable: ZInt  # max_undurable
    alive: ZBool  # the connection is open
    confirmed: ZBool
    qn: ZInt
    queue: tuple[Msg, ...]  # Q
    rcv: ZBool  # the client has received something on this connection
    last_rcv: ZInt  # the offset of the last message it received
    conf_any: ZBool  # ghost: some confirmed-read client received something, ever
    conf_max: ZInt  # ghost: the largest offset any confirmed-read client received, ever
    tok: ZInt  # z3 Array Int -> Int: offset -> the token of the state committed at it
    ctok: ZInt  # the current state's token
    dtok: ZInt  # durable_db's token
    hist: tuple[ZInt, ...]  # HW + 1: M of the state at offsets durable, durable + 1, ..., committed
    seen: ZInt  # ghost: the largest M any committed state ever had (lost ones included)

    @staticmethod
    def fresh(p: str) -> Srv:
        return Srv(z3.Int(f"{p}.committed"), z3.Int(f"{p}.durable"), z3.Int(f"{p}.undurable"),
                   z3.Bool(f"{p}.alive"), z3.Bool(f"{p}.confirmed"), z3.Int(f"{p}.qn"), fresh_rows(Msg, f"{p}.q", Q),
                   z3.Bool(f"{p}.rcv"), z3.Int(f"{p}.last_rcv"), z3.Bool(f"{p}.conf_any"), z3.Int(f"{p}.conf_max"),
                   z3.Array(f"{p}.tok", z3.IntSort(), z3.IntSort()), z3.Int(f"{p}.ctok"), z3.Int(f"{p}.dtok"),
                   tuple(z3.Int(f"{p}.hist{i}") for i in range(HW + 1)), z3.Int(f"{p}.seen"))


RECOVER = z3.Function("Recover", z3.IntSort(), z3.IntSort())
"""token of a durable state -> token of the state recovery makes of it (unclean_restart)."""


def _queue_eq(a: Srv, b: Srv) -> ZBool:
    return z3.And(a.qn == b.qn, *[z3.Implies(i < a.qn, same(x, y, used=None))
                                  for i, (x, y) in enumerate(zip(a.queue, b.queue, strict=True))])


def _hist_eq(a: Srv, b: Srv) -> ZBool:
    n = a.committed - a.durable
    return z3.And([z3.Implies(i <= n, x == y) for i, (x, y) in enumerate(zip(a.hist, b.hist, strict=True))])


def same_srv(a: Srv, b: Srv) -> ZBool:
    """Semantic equality (queue beyond ``qn`` and history beyond committed - durable ignored;
    ``tok`` compared on [durable, committed] only)."""
    conn = z3.And(a.alive == b.alive, z3.Implies(a.alive, z3.And(
        a.confirmed == b.confirmed, _queue_eq(a, b), a.rcv == b.rcv, z3.Implies(a.rcv, a.last_rcv == b.last_rcv))))
    toks = z3.And([z3.Implies(a.durable + i <= a.committed, a.tok[a.durable + i] == b.tok[a.durable + i])
                   for i in range(HW + 1)])
    return z3.And(a.committed == b.committed, a.durable == b.durable, a.undurable == b.undurable, conn,
                  a.conf_any == b.conf_any, z3.Implies(a.conf_any, a.conf_max == b.conf_max), toks,
                  a.ctok == b.ctok, a.dtok == b.dtok, _hist_eq(a, b), a.seen == b.seen)


def _keep(a: Srv, b: Srv, *, offsets: bool = True, conn: bool = True, ghosts: bool = True) -> ZBool:
    parts: list[ZBool] = [a.undurable == b.undurable]
    if offsets:
        parts += [a.committed == b.committed, a.durable == b.durable, a.tok == b.tok, a.ctok == b.ctok,
                  a.dtok == b.dtok, _hist_eq(a, b), a.seen == b.seen]
    if conn:
        parts += [a.alive == b.alive, z3.Implies(a.alive, z3.And(
            a.confirmed == b.confirmed, _queue_eq(a, b), a.rcv == b.rcv, z3.Implies(a.rcv, a.last_rcv == b.last_rcv)))]
    if ghosts:
        parts += [a.conf_any == b.conf_any, z3.Implies(a.conf_any, a.conf_max == b.conf_max)]
    return z3.And(parts)


def _enqueue(a: Srv, b: Srv, msgs: list[tuple[ZBool, Msg]]) -> ZBool:
    """Append the messages whose guard holds (in order) to an open connection's queue; past
    ``Q`` the connection is closed (slow consumer)."""
    n = a.qn
    parts: list[ZBool] = []
    count: ZInt = n
    overflow: ZBool = z3.BoolVal(False)
    for guard, msg in msgs:
        overflow = z3.Or(overflow, z3.And(guard, count >= Q))
        parts.append(z3.And([z3.Implies(z3.And(guard, count == i), same(b.queue[i], msg, used=None))
                             for i in range(Q)]))
        count = count + z3.If(guard, 1, 0)
    keep_old = z3.And([z3.Implies(i < n, same(b.queue[i], a.queue[i], used=None)) for i in range(Q)])
    return z3.If(z3.Not(a.alive), z3.Not(b.alive), z3.If(
        overflow, z3.Not(b.alive),
        z3.And(b.alive, b.confirmed == a.confirmed, b.rcv == a.rcv, z3.Implies(a.rcv, b.last_rcv == a.last_rcv),
               keep_old, b.qn == count, *parts)))


@dataclass(frozen=True)
class SendAct(Record):
    pass


@dataclass(frozen=True)
class CommitAct(Record):
    is_caller: ZBool  # this connection made the call
    has_updates: ZBool  # some of its query sets match the transaction's rows
    dm: ZInt  # M(new state) - M(old state): 0 or 1 (lemma L-EPOCH)
    token: ZInt  # the new state's token


@dataclass(frozen=True)
class ConnectAct(Record):
    confirmed: ZBool


@dataclass(frozen=True)
class AdvanceAct(Record):
    to: ZInt


@dataclass(frozen=True)
class NoAct(Record):
    pass


def t_connect(a: Srv, act: ConnectAct, b: Srv, bug: str = "") -> ZBool:
    """``Server.connect`` (this model follows one connection: it opens when none is open)."""
    return z3.And(z3.Not(a.alive), b.alive, b.confirmed == act.confirmed, b.qn == 0, z3.Not(b.rcv),
                  _keep(a, b, conn=False))


def t_close(a: Srv, act: NoAct, b: Srv, bug: str = "") -> ZBool:
    """``Server.close``: the connection and its queue are gone."""
    return z3.And(a.alive, z3.Not(b.alive), _keep(a, b, conn=False))


def t_send(a: Srv, act: SendAct, b: Srv, bug: str = "") -> ZBool:
    """``Server._send`` of a message derived from the current state (offset = committed)."""
    return z3.And(_keep(a, b, conn=False), _enqueue(a, b, [(z3.BoolVal(True), Msg(a.committed, OTHER))]))


def t_commit(a: Srv, act: CommitAct, b: Srv, bug: str = "") -> ZBool:
    """``Server._commit`` at offset committed + 1, when ``can_commit``: the caller gets its
    ReducerResult, another connection a TransactionUpdate if its query sets match."""
    off = a.committed + 1
    n = a.committed - a.durable
    update_off = a.committed if bug == "update_tagged_with_old_offset" else off
    if bug == "caller_also_gets_update":
        msgs = [(act.is_caller, Msg(off, RESULT)), (act.has_updates, Msg(update_off, UPDATE))]
    elif bug == "caller_result_dropped":
        msgs = [(z3.And(z3.Not(act.is_caller), act.has_updates), Msg(update_off, UPDATE))]
    else:
        msgs = [(act.is_caller, Msg(off, RESULT)), (z3.And(z3.Not(act.is_caller), act.has_updates),
                                                    Msg(update_off, UPDATE))]
    m_new = pick_int(a.hist, n) + act.dm
    hist = z3.And([z3.Implies(i <= n, b.hist[i] == a.hist[i]) for i in range(HW + 1)]
                  + [z3.Implies(i == n + 1, b.hist[i] == m_new) for i in range(HW + 1)])
    return z3.And(
        n < a.undurable, one_of(act.dm, (0, 1)),
        b.committed == off, b.durable == a.durable, b.undurable == a.undurable,
        b.tok == z3.Store(a.tok, off, act.token), b.ctok == act.token, b.dtok == a.dtok, hist,
        b.seen == zmax([a.seen, m_new]), b.conf_any == a.conf_any, z3.Implies(a.conf_any, b.conf_max == a.conf_max),
        _enqueue(a, b, msgs))


def pick_int(xs: tuple[ZInt, ...], i: ZInt) -> ZInt:
    """``xs[i]`` for a symbolic index (the last element when out of range)."""
    out = xs[-1]
    for j in range(len(xs) - 2, -1, -1):
        out = z3.If(i == j, xs[j], out)
    return out


def releasable(a: Srv, bug: str = "") -> ZBool:
    """``Server.releasable``: the front message may be consumed."""
    slack = 1 if bug == "confirmed_gate_off_by_one" else 0
    return z3.And(a.alive, a.qn > 0, z3.Or(z3.Not(a.confirmed), a.queue[0].off <= a.durable + slack))


def t_pop(a: Srv, act: NoAct, b: Srv, bug: str = "") -> ZBool:
    """``Server.pop``: the client consumes the front message (only when releasable)."""
    front = a.queue[0]
    return z3.And(
        releasable(a, bug), b.alive, b.confirmed == a.confirmed, b.qn == a.qn - 1,
        *[z3.Implies(i < a.qn - 1, same(b.queue[i], a.queue[i + 1], used=None)) for i in range(Q - 1)],
        b.rcv, b.last_rcv == front.off,
        b.conf_any == z3.Or(a.conf_any, a.confirmed),
        z3.If(a.confirmed, b.conf_max == z3.If(a.conf_any, zmax([a.conf_max, front.off]), front.off),
              z3.Implies(a.conf_any, b.conf_max == a.conf_max)),
        _keep(a, b, conn=False, ghosts=False))


def _shift_hist(a: Srv, b: Srv, k: ZInt) -> ZBool:
    """``b.hist`` is ``a.hist`` without its first ``k`` entries."""
    return z3.And([z3.Implies(k == s, z3.And([b.hist[i] == a.hist[i + s] for i in range(HW + 1 - s)]))
                   for s in range(HW + 1)])


def t_advance(a: Srv, act: AdvanceAct, b: Srv, bug: str = "") -> ZBool:
    """``Server.advance_durable(to)``: durable = min(max(to, durable), committed); durable_db is
    the last history state at or before it."""
    raised = act.to if bug == "durable_can_fall" else z3.If(act.to > a.durable, act.to, a.durable)
    to = z3.If(raised < a.committed, raised, a.committed)
    state_at = a.tok[to - 1] if bug == "durable_state_off_by_one" else a.tok[to]
    return z3.And(
        b.durable == to, b.committed == a.committed, b.undurable == a.undurable, b.tok == a.tok, b.ctok == a.ctok,
        b.dtok == z3.If(to > a.durable, state_at, a.dtok),
        z3.Implies(to >= a.durable, _shift_hist(a, b, to - a.durable)),
        b.seen == a.seen, _keep(a, b, offsets=False))


def t_crash(a: Srv, act: NoAct, b: Srv, bug: str = "") -> ZBool:
    """``Server.crash``: connections close, the state rolls back to durable_db, and the recovery
    transaction (``unclean_restart``) commits at durable + 1 and is made durable at once."""
    base = a.ctok if bug == "crash_without_rollback" else a.dtok
    bump = {"crash_keeps_epochs": 0, "crash_bump_too_small": a.undurable}.get(bug, a.undurable + 1)
    m_rec = a.hist[0] + bump
    rec = RECOVER(base)
    off = a.durable + 1
    return z3.And(
        z3.Not(b.alive), b.committed == off, b.durable == off, b.undurable == a.undurable,
        b.tok == z3.Store(a.tok, off, rec), b.ctok == rec, b.dtok == rec, b.hist[0] == m_rec,
        b.seen == zmax([a.seen, m_rec]), b.conf_any == a.conf_any, z3.Implies(a.conf_any, b.conf_max == a.conf_max))


def t_clean_restart(a: Srv, act: NoAct, b: Srv, bug: str = "") -> ZBool:
    """``Server.clean_restart``: everything is made durable, then connections close."""
    n = a.committed - a.durable
    return z3.And(
        z3.Not(b.alive), b.committed == a.committed, b.durable == a.committed, b.undurable == a.undurable,
        b.tok == a.tok, b.ctok == a.ctok, b.dtok == a.ctok, b.hist[0] == pick_int(a.hist, n), b.seen == a.seen,
        b.conf_any == a.conf_any, z3.Implies(a.conf_any, b.conf_max == a.conf_max))


@dataclass(frozen=True)
class SrvTransition:
    name: str
    relation: Any
    action: Any  # prefix -> a fresh action


SRV_TRANSITIONS: tuple[SrvTransition, ...] = (
    SrvTransition("connect", t_connect, lambda p: fresh(ConnectAct, p)),
    SrvTransition("close", t_close, lambda p: NoAct()),
    SrvTransition("send", t_send, lambda p: SendAct()),
    SrvTransition("commit", t_commit, lambda p: fresh(CommitAct, p)),
    SrvTransition("pop", t_pop, lambda p: NoAct()),
    SrvTransition("advance_durable", t_advance, lambda p: fresh(AdvanceAct, p)),
    SrvTransition("crash", t_crash, lambda p: NoAct()),
    SrvTransition("clean_restart", t_clean_restart, lambda p: NoAct()),
)


def srv_initial(a: Srv) -> ZBool:
    """A fresh ``Server``: offsets 0, no connection, M = 1 (epoch_floor), nothing seen."""
    return z3.And(a.committed == 0, a.durable == 0, in_range(a.undurable, 1, HW + 1), z3.Not(a.alive),
                  z3.Not(a.conf_any), a.ctok == a.tok[0], a.dtok == a.tok[0], a.hist[0] == 1, a.seen == 1)


# --- the row filter ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadCase(Record):
    """One row and one reader, reduced to what any visibility rule can ask."""

    table: ZInt  # index into spec.schema.TABLES
    granted: ZBool  # the reader's grants cover the row's stream_id
    owner: ZBool  # the row's owner is the reader
    requester: ZBool  # the row's requester is the reader
    provider_owner: ZBool  # the row's provider_owner is the reader
    assign_scope: ZBool  # the reader holds compute.assign
    bridge_scope: ZBool  # the reader holds a bridge scope
    matches: ZBool  # the row matches the query


def _visibility(vis: Visibility, c: ReadCase) -> ZBool:
    if vis is Visibility.EVERYONE:
        return z3.BoolVal(True)
    if vis is Visibility.STREAM_GRANT:
        return c.granted
    if vis is Visibility.OWNER:
        return c.owner
    if vis is Visibility.COMPUTE:
        return z3.Or(c.requester, c.assign_scope, c.provider_owner)
    if vis is Visibility.BRIDGE:
        return c.bridge_scope
    raise KeyError(f"the encoding does not know visibility {vis}")


def can_read(c: ReadCase) -> ZBool:
    """:func:`spec.auth.can_read`, dispatching on each table's visibility in :mod:`spec.schema`."""
    return z3.And(in_range(c.table, 0, len(TABLES)),
                  *[z3.Implies(c.table == i, _visibility(t.visibility, c)) for i, t in enumerate(TABLES)])


AUTH1_RULES: dict[str, str] = {
    "sync_stream": "granted", "sync_event": "granted", "stream_signal": "granted",
    "sync_checkpoint": "owner", "bridge_outbox": "bridge",
    "compute_assignment": "compute",
}
"""AUTH-1's statement, table by table (tables not named are readable by every connected identity)."""


def auth1_allowed(c: ReadCase) -> ZBool:
    rules = {"granted": c.granted, "owner": c.owner, "bridge": c.bridge_scope,
             "compute": z3.Or(c.requester, c.provider_owner, c.assign_scope)}
    return z3.And([z3.Implies(c.table == i, rules[AUTH1_RULES[t.name]]) for i, t in enumerate(TABLES)
                   if t.name in AUTH1_RULES])


def visible(c: ReadCase, bug: str = "") -> ZBool:
    """``Server._visible``: a row goes into a snapshot or an update exactly when it matches the
    query and the reader may read it."""
    if bug == "row_filter_ignored":
        return z3.And(in_range(c.table, 0, len(TABLES)), c.matches)
    return z3.And(c.matches, can_read(c))
