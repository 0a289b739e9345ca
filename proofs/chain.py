"""Histories across unclean restarts in Z3: version non-reuse (VER-1) and the epoch continuation
chain seen from the client (CONT-1, ADR-0010).

Both are statements about *every* version or seq ever handed out, including those a crash lost, so
the state carries the history as arrays: ``named[v]`` is the content version ``v`` of a row ever
named (``issued[v]``: whether it was handed out at all), ``hist[e][s]`` the content of event
``(epoch e, seq s)`` as any client may have seen it.  A universally quantified invariant
``forall x. I_x`` is proved *pointwise*: ``I_x(pre) /\\ T => I_x(post)`` for a free ``x`` (plus
``I`` instantiated at the few other points a step reads, which ``forall x. I_x`` implies), so
every obligation stays quantifier-free (``QF_AUFLIA``) and ``unknown`` cannot hide behind a
quantifier.  Where a transition's effect is itself "for every seq up to d" it is stated at the
free point only -- a weaker relation than the real one, so a proof over it covers the real one.

VER-1 (one row of ``provider_capability`` or ``compute_assignment``; their version rules are the
same): the live row ``(v, c)``, the durable row ``(vd, cd)`` and ``u`` transactions ahead of the
durable offset, at most ``M`` (``max_undurable``).  Transitions: an update that changes the content
takes ``v + 1`` (PROV-1 / ASSIGN-1), the durable offset advances (to any version between, ``u``
shrinking accordingly), a crash rolls back to the durable row and recovery moves it to a version
``>= vd + M + 1`` (``spec.reducers.unclean_restart``: ``max_version + max_undurable + 1``).  The
invariant: everything above ``v`` is unissued, and ``v <= vd + u``; the goal of every step that
hands out a version: it was unissued, or named the same content.

CONT-1 (one stream and one client's view): the stream is at epoch ``en`` with head ``h`` and a chain
of ``nh <= L`` hops ``(ep[i], bd[i])`` (``continues_*`` then ``earlier_*``), ``top`` the largest
epoch ever handed out (lost suffixes included); the view holds ``(ev, w, a)``: its epoch, watermark
and the contents it applied.  Transitions: an append, an unclean restart (durable head ``d <= h``,
a fresh epoch ``F > top``, the chain ``[(en, d), (ep[i], min(bd[i], d))...]`` cut to any prefix --
the floor rule and the cap both cut a prefix), ``reset_stream_epoch`` (a fresh epoch, no chain),
the client applying the next event, rebootstrapping, and *continuing* by the rule of
``spec.client.continues`` (:func:`continues`).  The invariant: every hop's epoch agrees with the
current one up to its bound, and the view holds exactly a prefix of its epoch's history; so a view
that continues holds exactly a prefix of the new epoch's history.  A second obligation shows the
chain is what makes a confirmed reader continue: after a restart that keeps the whole chain (up to
the cap), a view that could continue before, with its watermark at or below the durable head,
still continues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import z3

from proofs.core import ZBool, ZInt

L = 3
"""Hops in the model's chain (the last one and two earlier: a reader up to three restarts behind)."""

BUGS: dict[str, tuple[str, str]] = {
    "recovery_keeps_versions": ("crash", "recovery leaves the durable versions: a lost version is handed out again"),
    "recovery_bump_too_small": ("crash", "recovery moves versions to vd + M, one short of what M lost "
                                         "transactions can have handed out"),
    "restart_keeps_bounds": ("restart", "the chain's earlier bounds are not capped at the durable head"),
    "restart_reuses_epoch": ("restart", "the new epoch is not above every epoch handed out"),
    "restart_drops_chain": ("restart", "the restart records only the last hop (before ADR-0010)"),
    "client_ignores_bound": ("continue", "the client continues into an epoch on its chain past the hop's bound"),
}


def zmin(a: ZInt, b: ZInt) -> ZInt:
    return z3.If(a <= b, a, b)


# --- VER-1 -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ver:
    v: ZInt  # the live row's version
    c: ZInt  # its content
    vd: ZInt  # the durable row's version
    cd: ZInt
    u: ZInt  # committed transactions past the durable offset
    issued: ZInt  # Array Int -> Bool: versions ever handed out
    named: ZInt  # Array Int -> Int: the content each names

    @staticmethod
    def fresh(p: str) -> Ver:
        return Ver(z3.Int(f"{p}.v"), z3.Int(f"{p}.c"), z3.Int(f"{p}.vd"), z3.Int(f"{p}.cd"), z3.Int(f"{p}.u"),
                   z3.Array(f"{p}.issued", z3.IntSort(), z3.BoolSort()),
                   z3.Array(f"{p}.named", z3.IntSort(), z3.IntSort()))


def ver_inv(s: Ver, m: ZInt, x: ZInt) -> ZBool:
    """VER-1's invariant at point ``x``: the live and durable rows name their contents, nothing above
    the live version was handed out, and the live version is at most ``u`` above the durable one."""
    return z3.And(m >= 0, s.v >= 1, s.vd >= 1, s.vd <= s.v, s.u >= 0, s.u <= m, s.v <= s.vd + s.u,
                  s.issued[s.v], s.named[s.v] == s.c, s.issued[s.vd], s.named[s.vd] == s.cd,
                  z3.Implies(x > s.v, z3.Not(s.issued[x])))


def ver_init(s: Ver) -> ZBool:
    return z3.And(s.v == 1, s.vd == 1, s.c == s.cd, s.u == 0,
                  s.issued == z3.Store(z3.K(z3.IntSort(), z3.BoolVal(False)), 1, True), s.named[1] == s.c)


def issues(version: ZInt, content: ZInt, pre: Ver) -> ZBool:
    """VER-1 for one hand-out: ``version`` was never handed out, or named ``content`` already."""
    return z3.Or(z3.Not(pre.issued[version]), pre.named[version] == content)


def t_update(a: Ver, c2: ZInt, b: Ver, m: ZInt) -> ZBool:
    """A reducer call that rewrites the row (PROV-1 / ASSIGN-1): a content change takes v + 1; the
    server commits only while fewer than M transactions wait for durability."""
    changed = z3.And(b.v == a.v + 1, b.c == c2, b.u == a.u + 1, b.vd == a.vd, b.cd == a.cd,
                     b.issued == z3.Store(a.issued, a.v + 1, True), b.named == z3.Store(a.named, a.v + 1, c2))
    same = z3.And(b.v == a.v, b.c == a.c, b.u == a.u, b.vd == a.vd, b.cd == a.cd, b.issued == a.issued,
                  b.named == a.named)
    return z3.And(a.u < m, z3.If(c2 == a.c, same, changed))


def t_durable(a: Ver, b: Ver) -> ZBool:
    """The durable offset advances: the durable row becomes a later one, as many transactions fewer wait."""
    return z3.And(a.vd <= b.vd, b.vd <= a.v, a.issued[b.vd], b.cd == a.named[b.vd], b.v == a.v, b.c == a.c,
                  a.v - b.vd <= b.u, b.u <= a.u, b.issued == a.issued, b.named == a.named)


def crash_version(a: Ver, m: ZInt, f: ZInt, bug: str) -> ZBool:
    if bug == "recovery_keeps_versions":
        return f == a.vd
    if bug == "recovery_bump_too_small":
        return f == a.vd + m
    return f >= a.vd + m + 1  # max_version(durable db) + max_undurable + 1, the max over every row >= vd


def t_crash(a: Ver, f: ZInt, b: Ver, m: ZInt, bug: str = "") -> ZBool:
    """An unclean restart: back to the durable row, then the recovery transaction (durable at once)
    moves it to version ``f``, content kept."""
    return z3.And(crash_version(a, m, f, bug), b.v == f, b.c == a.cd, b.vd == f, b.cd == a.cd, b.u == 0,
                  b.issued == z3.Store(a.issued, f, True), b.named == z3.Store(a.named, f, a.cd))


# --- CONT-1 ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    en: ZInt  # the stream's epoch
    h: ZInt  # its head
    nh: ZInt  # hops on the chain
    ep: tuple[ZInt, ...]  # L: hop epochs, newest first (continues_epoch, earlier_epochs...)
    bd: tuple[ZInt, ...]  # L: hop bounds (continues_seq, earlier_seqs...)
    top: ZInt  # the largest epoch ever handed out (lost suffixes included)
    hist: ZInt  # Array Int -> (Array Int -> Int): the content of (epoch, seq)
    has: ZBool  # the view has an epoch
    ev: ZInt  # the view's epoch
    w: ZInt  # its watermark
    a: ZInt  # Array Int -> Int: the contents it applied, by seq

    @staticmethod
    def fresh(p: str) -> Chain:
        seqs = z3.ArraySort(z3.IntSort(), z3.IntSort())
        return Chain(z3.Int(f"{p}.epoch"), z3.Int(f"{p}.head"), z3.Int(f"{p}.hops"),
                     tuple(z3.Int(f"{p}.hop_epoch{i}") for i in range(L)),
                     tuple(z3.Int(f"{p}.hop_bound{i}") for i in range(L)), z3.Int(f"{p}.top"),
                     z3.Array(f"{p}.hist", z3.IntSort(), seqs), z3.Bool(f"{p}.view.has_epoch"),
                     z3.Int(f"{p}.view.epoch"), z3.Int(f"{p}.view.watermark"), z3.Array(f"{p}.view.applied",
                                                                                        z3.IntSort(), z3.IntSort()))


def continues(has: ZBool, epoch: ZInt, last: ZInt, new_epoch: ZInt, nh: ZInt, ep: Sequence[ZInt],
              bd: Sequence[ZInt], bug: str = "") -> ZBool:
    """``spec.client.continues`` over the chain: walking the hops newest first with the running minimum
    of their bounds, the first hop naming the view's epoch decides (``last <=`` that minimum)."""
    result: ZBool = z3.BoolVal(False)
    bounds = []
    bound = bd[0]
    for i in range(len(ep)):
        bound = bd[0] if i == 0 else zmin(bound, bd[i])
        bounds.append(bound)
    for i in reversed(range(len(ep))):  # the newest matching hop is the outermost test
        ok = z3.BoolVal(True) if bug == "client_ignores_bound" else last <= bounds[i]
        result = z3.If(z3.And(i < nh, ep[i] == epoch), ok, result)
    return z3.And(has, nh >= 1, new_epoch != epoch, result)


def chain_struct(s: Chain) -> ZBool:
    """The chain's shape (SEQ-1 for the chain, ``spec.invariants.continuation_chain_ok``) and what
    ``top`` bounds."""
    parts: list[ZBool] = [s.nh >= 0, s.nh <= L, s.h >= 0, s.en <= s.top, s.w >= 0,
                          z3.Implies(s.has, s.ev <= s.top),
                          z3.Implies(z3.And(s.has, s.ev == s.en), s.w <= s.h)]
    for i in range(L):
        newer_epoch = s.en if i == 0 else s.ep[i - 1]
        parts.append(z3.Implies(i < s.nh, z3.And(s.ep[i] < newer_epoch, s.bd[i] >= 0, s.bd[i] <= s.h,
                                                 *([s.bd[i] <= s.bd[i - 1]] if i else []))))
    return z3.And(parts)


def chain_at(s: Chain, x: ZInt) -> ZBool:
    """At seq ``x``: every hop's epoch holds the current epoch's content up to its bound, and the view
    holds its epoch's content up to its watermark."""
    parts: list[ZBool] = [z3.Implies(z3.And(i < s.nh, x >= 1, x <= s.bd[i]), s.hist[s.ep[i]][x] == s.hist[s.en][x])
                          for i in range(L)]
    parts.append(z3.Implies(z3.And(s.has, x >= 1, x <= s.w), s.a[x] == s.hist[s.ev][x]))
    return z3.And(parts)


def chain_inv(s: Chain, x: ZInt) -> ZBool:
    return z3.And(chain_struct(s), chain_at(s, x))


def chain_init(s: Chain) -> ZBool:
    return z3.And(s.nh == 0, s.h == 0, s.en >= 1, s.top == s.en, z3.Not(s.has), s.w == 0)


def _server_frame(a: Chain, b: Chain) -> ZBool:
    return z3.And(b.en == a.en, b.h == a.h, b.nh == a.nh, b.top == a.top, b.hist == a.hist,
                  *[z3.And(b.ep[i] == a.ep[i], b.bd[i] == a.bd[i]) for i in range(L)])


def _view_frame(a: Chain, b: Chain) -> ZBool:
    return z3.And(b.has == a.has, b.ev == a.ev, b.w == a.w, b.a == a.a)


def t_append(a: Chain, content: ZInt, b: Chain) -> ZBool:
    return z3.And(b.hist == z3.Store(a.hist, a.en, z3.Store(a.hist[a.en], a.h + 1, content)), b.h == a.h + 1,
                  b.en == a.en, b.nh == a.nh, b.top == a.top,
                  *[z3.And(b.ep[i] == a.ep[i], b.bd[i] == a.bd[i]) for i in range(L)], _view_frame(a, b))


def t_restart(a: Chain, d: ZInt, f: ZInt, new: ZInt, x: ZInt, b: Chain, bug: str = "", keep_all: bool = False) -> ZBool:
    """An unclean restart (``spec.resume.continued_stream``): epoch ``f`` continues the current one up to
    the durable head ``d``, and every hop up to ``min(bound, d)``; its content ``new`` is the old
    epoch's up to ``d`` (stated at the free point ``x``), anything beyond.  The chain is cut to any
    non-empty prefix (``keep_all``: to the cap only, as when no hop is below the floor)."""
    fresh = f == a.top if bug == "restart_reuses_epoch" else f > a.top
    parts: list[ZBool] = [d >= 0, d <= a.h, fresh, b.en == f, b.top == f, b.h == d,
                          z3.Implies(z3.And(x >= 1, x <= d), new[x] == a.hist[a.en][x]),
                          b.hist == z3.Store(a.hist, f, new), b.ep[0] == a.en, b.bd[0] == d]
    for i in range(1, L):
        parts.append(b.ep[i] == a.ep[i - 1])
        parts.append(b.bd[i] == (a.bd[i - 1] if bug == "restart_keeps_bounds" else zmin(a.bd[i - 1], d)))
    longest = z3.If(a.nh + 1 <= L, a.nh + 1, L)
    if bug == "restart_drops_chain":
        parts.append(b.nh == 1)
    elif keep_all:
        parts.append(b.nh == longest)
    else:
        parts.append(z3.And(b.nh >= 1, b.nh <= longest))
    return z3.And(*parts, _view_frame(a, b))


def t_reset(a: Chain, f: ZInt, new: ZInt, b: Chain) -> ZBool:
    """``reset_stream_epoch``: a fresh epoch continuing nothing; seqs go on from the head."""
    return z3.And(f > a.top, b.en == f, b.top == f, b.h == a.h, b.nh == 0, b.hist == z3.Store(a.hist, f, new),
                  *[z3.And(b.ep[i] == a.ep[i], b.bd[i] == a.bd[i]) for i in range(L)], _view_frame(a, b))


def t_apply(a: Chain, b: Chain) -> ZBool:
    """The view applies the next event of the current epoch (``seq = last + 1``)."""
    return z3.And(a.has, a.ev == a.en, a.w < a.h, b.has, b.ev == a.ev, b.w == a.w + 1,
                  b.a == z3.Store(a.a, a.w + 1, a.hist[a.en][a.w + 1]), _server_frame(a, b))


def t_rebootstrap(a: Chain, w2: ZInt, applied: ZInt, x: ZInt, b: Chain) -> ZBool:
    """The view is replaced by the authority's events of the current epoch up to ``w2`` (at point ``x``)."""
    return z3.And(w2 >= 0, w2 <= a.h, z3.Implies(z3.And(x >= 1, x <= w2), applied[x] == a.hist[a.en][x]),
                  b.has, b.ev == a.en, b.w == w2, b.a == applied, _server_frame(a, b))


def t_continue(a: Chain, b: Chain, bug: str = "") -> ZBool:
    """The view meets the current epoch and the rule says continue: same watermark, same events."""
    return z3.And(continues(a.has, a.ev, a.w, a.en, a.nh, a.ep, a.bd, bug), b.has, b.ev == a.en, b.w == a.w,
                  b.a == a.a, _server_frame(a, b))
