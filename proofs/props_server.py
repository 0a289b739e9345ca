"""Invariants of the delivery layer in closed form: the resume theorem, the queue, durability."""

from __future__ import annotations

import z3

from proofs.core import ZBool, ZInt, filtered, in_range, one_of
from proofs.encoding import Db, K, S, per_slot, vepoch, vfloor, vhead
from proofs.server import HW, KD, OTHER, RESULT, UPDATE, Item, Q, Srv, Sub, World, pick_int, same_item


def ledger_ok(w: World) -> ZBool:
    """The ledger agrees with every retained event."""
    parts: list[ZBool] = []
    for j in range(S):
        ev, led = w.db.events[j], w.ledger[j]
        for i, e in enumerate(ev.slots):
            parts.append(z3.Implies(i < ev.n, z3.And(led.hash[e.seq] == e.hash, led.epoch[e.seq] == e.epoch)))
    return z3.And(parts)


def epoch_consistent(db: Db) -> ZBool:
    """A-EPOCH: a retained event carries its stream's current epoch exactly when it is at or above
    the stream's floor_seq (since ADR-0003 every retained event is: an unclean restart relabels the
    retained events into the epoch that continues theirs)."""
    return z3.And([z3.Implies(z3.And(db.streams[j].exists, i < db.events[j].n),
                              (db.events[j].slots[i].epoch == db.streams[j].epoch)
                              == (db.events[j].slots[i].seq >= db.streams[j].floor))
                   for j in range(S) for i in range(K)])


def resume_end(s: Sub) -> ZInt:
    """The last seq a subscription from W is owed: its ghost head H, or min(H, B) for a page
    ``seq <= B`` (ADR-0042); it is owed ``max(0, end - W)`` events."""
    return z3.If(z3.And(s.has_upper, s.upper < s.last_head), s.upper, s.last_head)


def resume(w: World) -> ZBool:
    """The resume theorem as a state invariant of a live subscription from (E, W), unbounded or a
    page bounded by ``seq <= B``:

    * replay (REPLAY-2): everything sent on it, snapshot then updates, deletes ignored, is exactly
      the stream's events W+1, W+2, ..., min(H, B) in order, each once, with the ledger's payload
      hashes -- H being the head while the stream's epoch is E (the head it had when the epoch moved
      on), B the page's bound (none: H); nothing when B <= W;
    * mirror (DELIV-2): the rows the client holds (inserts minus deletes) are exactly the query's
      result on the current state (``epoch = E AND seq > W``, ``AND seq <= B`` for a page), in order."""
    s = w.sub

    def at(j: int) -> ZBool:
        head, epoch = vhead(w.db, j), vepoch(w.db, j)
        led = w.ledger[j]
        sent = [z3.Implies(i < s.sent_n, z3.And(s.sent[i].seq == s.watermark + 1 + i,
                                                 s.sent[i].hash == led.hash[s.watermark + 1 + i]))
                for i in range(KD)]
        ev = w.db.events[j]
        mirror = filtered(ev.n, ev.slots, lambda e: z3.And(e.epoch == s.epoch, e.seq > s.watermark,
                                                           z3.Implies(s.has_upper, e.seq <= s.upper)),
                          s.mirror_n, s.mirror, lambda o, e: same_item(o, Item(e.seq, e.hash)))
        owed = resume_end(s) - s.watermark
        return z3.And(s.watermark <= s.last_head, s.last_head <= head, epoch >= s.epoch,
                      z3.Implies(epoch == s.epoch, s.last_head == head),
                      s.sent_n == z3.If(owed > 0, owed, 0), s.sent_n <= KD, *sent, mirror)

    return z3.Implies(s.active, per_slot(s.stream, S, at))


def no_skip(db: Db, j: int, w: z3.ArithRef) -> ZBool:
    """STALE-2's conclusion: every seq in (W, head] is retained (nothing after W was compacted)."""
    ev = db.events[j]
    head = vhead(db, j)
    return z3.And(vfloor(db, j) <= w + 1, *[
        z3.Implies(w + k <= head, z3.Or([z3.And(i < ev.n, ev.slots[i].seq == w + k) for i in range(K)]))
        for k in range(1, K + 1)])


# --- the server ---------------------------------------------------------------------------------------------


def queue_ok(a: Srv) -> ZBool:
    q = a.queue
    parts: list[ZBool] = [a.qn >= 0, a.qn <= Q]
    for i in range(Q):
        parts.append(z3.Implies(i < a.qn, z3.And(q[i].off <= a.committed, one_of(q[i].kind, (OTHER, UPDATE, RESULT)))))
    for i in range(Q - 1):
        parts.append(z3.Implies(i + 1 < a.qn, z3.And(q[i].off <= q[i + 1].off,
                                                     z3.Implies(q[i + 1].kind != OTHER, q[i].off < q[i + 1].off))))
    parts.append(z3.Implies(a.rcv, a.last_rcv <= a.committed))
    parts.append(z3.Implies(z3.And(a.rcv, a.qn > 0), z3.And(
        a.last_rcv <= q[0].off, z3.Implies(q[0].kind != OTHER, a.last_rcv < q[0].off))))
    return z3.And(parts)


def deliv_order(a: Srv) -> ZBool:
    """DELIV-1/DELIV-3 support: a connection's queue is in offset order, each committed
    transaction's message (update or result) is strictly after everything before it."""
    return z3.Implies(a.alive, queue_ok(a))


def offsets_ok(a: Srv) -> ZBool:
    return z3.And(in_range(a.undurable, 1, HW + 1), a.durable >= 0, a.durable <= a.committed,
                  a.committed - a.durable <= a.undurable)


def conf2(a: Srv) -> ZBool:
    """CONF-2 in closed form: whatever a confirmed-read client received is at or below the durable
    offset (which never falls and which a crash keeps)."""
    return z3.Implies(a.conf_any, a.conf_max <= a.durable)


def dur(a: Srv) -> ZBool:
    """DUR-1/DUR-2 support: durable_db and db are the states committed at durable and committed; M
    over the undurable window rises by at most one per transaction; nothing ever had a larger M
    than the current state."""
    n = a.committed - a.durable
    window = [z3.Implies(i < n, z3.And(a.hist[i] <= a.hist[i + 1], a.hist[i + 1] <= a.hist[i] + 1))
              for i in range(HW)]
    return z3.And(a.dtok == a.tok[a.durable], a.ctok == a.tok[a.committed], a.hist[0] >= 1, *window,
                  a.seen <= pick_int(a.hist, n))


def srv_invariant(a: Srv) -> ZBool:
    return z3.And(offsets_ok(a), deliv_order(a), conf2(a), dur(a))
