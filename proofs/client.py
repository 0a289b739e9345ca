"""The client apply model (:mod:`spec.client`) in Z3: one followed stream's view.

A :class:`View` is what a client persists per stream: its epoch (none before the first
bootstrap), ``last`` (the watermark) and the applied events (seq, hash), at most ``KA`` of them,
plus a count of rebootstraps.  Three transitions:

``apply``
    one delivered sync_event row (``Client._on_rows`` for one event): another epoch is ignored,
    ``seq <= last`` is a duplicate (dropped), ``seq > last + 1`` a gap (never applied; the client
    resubscribes), ``seq = last + 1`` is applied;
``stream_row``
    a delivered sync_stream row: a different epoch, ``floor > last + 1`` or ``head < last`` makes the
    client rebootstrap -- unless the row's epoch continues the view's up to at least ``last`` and
    nothing else is stale (ADR-0003): then the view adopts the epoch, keeping its watermark and its
    events (a *continue*).  The view's epoch may be the last hop of the row's continuation chain or
    an earlier one (ADR-0010; up to ``L - 1`` earlier hops, read by :func:`proofs.chain.continues`,
    the rule of ``spec.client.continues``);
``rebootstrap``
    the application's callback replaces the view with the authority's events of the current epoch
    up to a watermark.  Assumed of the authority (checked on the model's authority by the
    correspondence tests): its events are contiguous and end at the watermark.
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from proofs import chain as CH
from proofs.chain import L
from proofs.core import Record, ZBool, ZInt, fresh_rows
from proofs.server import Item, same_item

KA = 6
"""Events a view holds."""

BUGS: dict[str, tuple[str, str]] = {
    "gap_applied": ("apply", "the client applies across a gap"),
    "duplicate_applied": ("apply", "the client applies a seq it already has"),
    "stream_row_last_hop_only": ("stream_row", "the client continues only through the row's last hop, ignoring "
                                 "the earlier hops of the chain (before ADR-0010)"),
}


@dataclass(frozen=True)
class View:
    has_epoch: ZBool
    epoch: ZInt
    last: ZInt
    n: ZInt
    applied: tuple[Item, ...]  # KA
    boots: ZInt  # rebootstraps so far
    conts: ZInt  # continues so far

    @staticmethod
    def fresh(p: str) -> View:
        return View(z3.Bool(f"{p}.has_epoch"), z3.Int(f"{p}.epoch"), z3.Int(f"{p}.last"), z3.Int(f"{p}.n"),
                    fresh_rows(Item, f"{p}.applied", KA), z3.Int(f"{p}.boots"), z3.Int(f"{p}.conts"))


@dataclass(frozen=True)
class Incoming(Record):
    seq: ZInt
    epoch: ZInt
    hash: ZInt


@dataclass(frozen=True)
class StreamRow(Record):
    """A sync_stream row as the client reads it, with its continuation chain (ADR-0010): the last hop
    ``(cont_epoch, cont_seq)`` and up to ``L - 1`` earlier hops, ``earlier_n`` of them used."""

    epoch: ZInt
    floor: ZInt
    head: ZInt
    cont_epoch: ZInt
    cont_seq: ZInt
    earlier_n: ZInt
    earlier_epoch0: ZInt
    earlier_seq0: ZInt
    earlier_epoch1: ZInt
    earlier_seq1: ZInt

    def hops(self) -> tuple[ZInt, tuple[ZInt, ...], tuple[ZInt, ...]]:
        """(hops on the chain, their epochs, their bounds), newest first, as :func:`proofs.chain.continues`
        reads them (no hop when ``cont_epoch = 0``: a fresh epoch continues nothing)."""
        n = z3.If(self.cont_epoch == 0, 0, 1 + self.earlier_n)
        return (n, (self.cont_epoch, self.earlier_epoch0, self.earlier_epoch1),
                (self.cont_seq, self.earlier_seq0, self.earlier_seq1))


@dataclass(frozen=True)
class Authority:
    epoch: ZInt
    watermark: ZInt
    n: ZInt
    events: tuple[Item, ...]  # KA

    @staticmethod
    def fresh(p: str) -> Authority:
        return Authority(z3.Int(f"{p}.epoch"), z3.Int(f"{p}.watermark"), z3.Int(f"{p}.n"),
                         fresh_rows(Item, f"{p}.events", KA))


def same_view(a: View, b: View) -> ZBool:
    return z3.And(a.has_epoch == b.has_epoch, z3.Implies(a.has_epoch, a.epoch == b.epoch), a.last == b.last,
                  a.n == b.n, a.boots == b.boots, a.conts == b.conts,
                  *[z3.Implies(i < a.n, same_item(x, y)) for i, (x, y) in enumerate(zip(a.applied, b.applied,
                                                                                          strict=True))])


def contiguous(n: ZInt, items: tuple[Item, ...]) -> ZBool:
    return z3.And([z3.Implies(i + 1 < n, items[i + 1].seq == items[i].seq + 1) for i in range(len(items) - 1)])


def authority_ok(auth: Authority) -> ZBool:
    """What the rebootstrap callback's answer is assumed to satisfy."""
    last = auth.events[KA - 1].seq
    for i in range(KA - 2, -1, -1):
        last = z3.If(auth.n == i + 1, auth.events[i].seq, last)
    return z3.And(auth.n >= 0, auth.n <= KA, contiguous(auth.n, auth.events),
                  z3.Implies(auth.n > 0, last == auth.watermark))


def t_apply(v: View, e: Incoming, w: View, gap: ZBool, bug: str = "") -> ZBool:
    """One event of a delivery, in ``Client._on_rows``."""
    other = z3.Or(z3.Not(v.has_epoch), e.epoch != v.epoch)
    dup = z3.BoolVal(False) if bug == "duplicate_applied" else e.seq <= v.last
    is_gap = z3.BoolVal(False) if bug == "gap_applied" else e.seq > v.last + 1
    applied = z3.And(w.has_epoch == v.has_epoch, w.epoch == v.epoch, w.boots == v.boots, w.conts == v.conts,
                     w.last == e.seq,
                     w.n == v.n + 1, v.n < KA,
                     *[z3.Implies(i < v.n, same_item(w.applied[i], v.applied[i])) for i in range(KA)],
                     *[z3.Implies(i == v.n, same_item(w.applied[i], Item(e.seq, e.hash))) for i in range(KA)])
    return z3.And(gap == z3.And(z3.Not(other), z3.Not(dup), is_gap),
                  z3.If(z3.Or(other, dup, is_gap), same_view(v, w), applied))


def t_rebootstrap(v: View, auth: Authority, w: View, bug: str = "") -> ZBool:
    """``Client._rebootstrap``."""
    return z3.And(authority_ok(auth), w.has_epoch, w.epoch == auth.epoch, w.last == auth.watermark,
                  w.n == auth.n, w.boots == v.boots + 1, w.conts == v.conts,
                  *[z3.Implies(i < auth.n, same_item(w.applied[i], auth.events[i])) for i in range(KA)])


def t_stream_row(v: View, row: StreamRow, auth: Authority, w: View, rebooted: ZBool, bug: str = "") -> ZBool:
    """A sync_stream row in a delivery: the client-side stale check, and the continuation."""
    stale = z3.Or(z3.Not(v.has_epoch), row.epoch != v.epoch, row.floor > v.last + 1, row.head < v.last)
    nh, ep, bd = row.hops()
    if bug == "stream_row_last_hop_only":
        nh = z3.If(nh > 1, 1, nh)
    cont = z3.And(CH.continues(v.has_epoch, v.epoch, v.last, row.epoch, nh, ep, bd), row.floor <= v.last + 1,
                  row.head >= v.last)
    continued = z3.And(w.has_epoch, w.epoch == row.epoch, w.last == v.last, w.n == v.n, w.boots == v.boots,
                       w.conts == v.conts + 1,
                       *[z3.Implies(i < v.n, same_item(w.applied[i], v.applied[i])) for i in range(KA)])
    return z3.And(row.earlier_n >= 0, row.earlier_n <= L - 1, rebooted == z3.And(stale, z3.Not(cont)),
                  z3.If(cont, continued, z3.If(stale, t_rebootstrap(v, auth, w), same_view(v, w))))


def view_initial(v: View) -> ZBool:
    return z3.And(z3.Not(v.has_epoch), v.last == 0, v.n == 0, v.boots == 0, v.conts == 0)


def replay1(v: View) -> ZBool:
    """REPLAY-1 in closed form: the applied seqs are contiguous and end at the watermark."""
    last = v.applied[KA - 1].seq
    for i in range(KA - 2, -1, -1):
        last = z3.If(v.n == i + 1, v.applied[i].seq, last)
    return z3.And(v.n >= 0, v.n <= KA, contiguous(v.n, v.applied), z3.Implies(v.n > 0, last == v.last))
