"""The proofs: what is proved, over which transitions, and the bug each proof must catch.

A :class:`Proof` is a list of *obligations* -- ``hypotheses => goal`` -- built from the encodings.
For an invariant group ``I_g`` of a layer whose full state invariant is ``I``:

* ``init``: the initial state satisfies ``I_g``;
* ``step[T]`` for every transition ``T`` of the layer: ``I(pre) /\\ T(pre, a, post) => I_g(post)``
  together with the group's transition and call invariants over ``(pre, a, post)``.

Since every conjunct of ``I`` is the goal of some proof, all proofs together show ``I`` inductive
(assume-guarantee); each alone shows its group is preserved by every step from an ``I``-state.

An obligation is discharged by asking Z3 for a model of ``hypotheses /\\ not goal``: ``unsat`` is
a proof, ``sat`` a counterexample, ``unknown`` (timeout) a failure.  Each proof also names
*controls*: planted bugs (``proofs.encoding.BUGS``, ``proofs.server.BUGS``) with which the
obligations of the broken transition are solved again; Z3 must find a counterexample for every
control, or the proof is failed -- a proof that cannot fail proves nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import z3

from proofs import chain as CH
from proofs import client as CL
from proofs import encoding as E
from proofs import props as P
from proofs import props_server as PS
from proofs import server as SV
from proofs.core import ZBool, fresh, in_range

Show = Sequence[tuple[str, object]]


@dataclass(frozen=True)
class Obligation:
    """``hyps => goal``.  ``witnesses``: named premises of the goal's cases (:data:`proofs.props.Case`);
    each must be satisfiable together with ``hyps``, or its case holds vacuously (``proofs.api.check``)."""

    label: str  # "init", "step[append_sync_event]", ...
    transition: str  # the transition it is about ("init" for the initial state)
    hyps: tuple[ZBool, ...]
    goal: ZBool
    show: Show = ()
    witnesses: tuple[tuple[str, ZBool], ...] = ()


@dataclass(frozen=True)
class Proof:
    id: str
    title: str
    invariants: tuple[str, ...]
    transitions: tuple[str, ...]
    bounds: str
    build: Callable[[str], list[Obligation]]  # bug ("" for the model) -> obligations
    controls: tuple[str, ...]  # planted bugs that must be refuted


# --- the database layer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    transition: str
    pre: E.Db
    act: object
    post: E.Db
    res: E.Result
    delta: E.Delta
    pol: E.Policy


DB_BOUNDS = f"S={E.S} streams, K={E.K} retained events/stream, C={E.C} clients, N={E.N} rows/keyed table"


def _bug_transition(bug: str) -> str:
    for registry in (E.BUGS, SV.BUGS, CL.BUGS):
        if bug in registry:
            return registry[bug][0]
    raise KeyError(f"no such planted bug: {bug!r}")


def db_proof(pid: str, title: str, invariants: tuple[str, ...], controls: tuple[str, ...],
             state_goal: Callable[[E.Db, E.Policy], ZBool] | None,
             step_goal: Callable[[Step], ZBool], lemma: Callable[[E.Db], ZBool] | None = None,
             cases: Callable[[Step], list[P.Case]] | None = None) -> Proof:
    """A proof over every transition of the database layer.  ``lemma``: a state invariant outside
    the layer's conjunction, assumed of the pre-state (it is then also the proof's own goal).
    ``cases``: call goals as cases ``(name, premise, conclusion)``, each premise also a witness that
    must be satisfiable (:class:`Obligation`)."""

    def build(bug: str) -> list[Obligation]:
        only = _bug_transition(bug) if bug else None
        pol = fresh(E.Policy, "policy")
        out: list[Obligation] = []
        if state_goal is not None and only is None:
            db = E.Db.fresh("init")
            out.append(Obligation("init", "init", (E.initial(db), E.policy_ok(pol)), state_goal(db, pol),
                                  (("state", db),)))
        for t in E.DB_TRANSITIONS:
            if only is not None and t.name != only:
                continue
            pre, post = E.Db.fresh("pre"), E.Db.fresh("post")
            act = t.action("act")
            res, delta = fresh(E.Result, "result"), E.Delta.fresh("delta")
            rel = t.relation(pre, act, post, res, delta, pol, bug=bug)
            step = Step(t.name, pre, act, post, res, delta, pol)
            goal = step_goal(step)
            cs = cases(step) if cases is not None else []
            if cs:
                goal = z3.And(goal, P.cases_goal(cs))
            if state_goal is not None:
                goal = z3.And(state_goal(post, pol), goal)
            hyps = (E.policy_ok(pol), P.state_invariant(pre, pol), rel, *((lemma(pre),) if lemma else ()))
            out.append(Obligation(f"step[{t.name}]", t.name, hyps,
                                  goal, (("policy", pol), ("pre", pre), ("action", act), ("result", res),
                                         ("delta", delta), ("post", post)),
                                  tuple((name, premise) for name, premise, _ in cs)))
        return out

    return Proof(pid, title, invariants, tuple(t.name for t in E.DB_TRANSITIONS), DB_BOUNDS, build, controls)


def _true(_: Step) -> ZBool:
    return z3.BoolVal(True)


def _seq_step(s: Step) -> ZBool:
    goal = P.seq3_restart(s.pre, s.post) if s.transition == "unclean_restart" else P.seq3(s.pre, s.post)
    if s.transition == "append_sync_event":
        assert isinstance(s.act, E.AppendAct)
        goal = z3.And(goal, P.seq4(s.pre, s.act, s.res, s.delta))
    return goal


def _idem_step(s: Step) -> ZBool:
    if s.transition == "append_sync_event":
        assert isinstance(s.act, E.AppendAct)
        return z3.And(P.idem2(s.pre, s.act, s.res), P.idem3(s.pre, s.act, s.res))
    return z3.BoolVal(True)


def _ckpt_step(s: Step) -> ZBool:
    goal = P.ckpt2(s.pre, s.post)
    if s.transition == "ack_checkpoint":
        assert isinstance(s.act, E.AckAct)
        goal = z3.And(goal, P.ckpt2_ack(s.pre, s.act, s.res))
    return goal


def _assign_step(s: Step) -> ZBool:
    if s.transition == "unclean_restart":
        return P.versions_raised(s.pre, s.post)
    goal = P.assign1(s.pre, s.post)
    if s.transition == "open_compute_assignment":
        assert isinstance(s.act, E.OpenAct)
        goal = z3.And(goal, P.open_retry(s.pre, s.act, s.res))
    if s.transition == "update_compute_assignment":
        assert isinstance(s.act, E.UpdateAct)
        goal = z3.And(goal, P.update_writes(s.act, s.res))
    return goal


def _prov_step(s: Step) -> ZBool:
    if s.transition == "unclean_restart":
        return P.versions_raised(s.pre, s.post)
    goal = P.prov1(s.pre, s.post)
    if s.transition == "publish_provider_capability":
        assert isinstance(s.act, E.ProviderAct)
        goal = z3.And(goal, P.prov1_publish(s.pre, s.act, s.res))
    return goal


def _pres_step(s: Step) -> ZBool:
    goal = P.pres2_signals(s.pre, s.post, s.delta)
    if s.transition == "upsert_presence":
        assert isinstance(s.act, E.PresenceAct)
        goal = z3.And(goal, P.upsert_unchanged(s.pre, s.act, s.res))
    if s.transition == "presence_sweep":
        assert isinstance(s.act, E.SweepAct)
        goal = z3.And(goal, P.pres2_sweep(s.post, s.act.now))
    return goal


def outbox_call_cases(s: Step) -> list[P.Case]:
    """The call goals of the outbox reducers: an accepted call stores exactly what it says."""
    if isinstance(s.act, E.EnqueueAct):
        return P.enqueue_stores(s.pre, s.act, s.post, s.res)
    if isinstance(s.act, E.MarkSentAct):
        return P.mark_sent_stores(s.pre, s.act, s.post, s.res)
    if isinstance(s.act, E.FailureAct):
        return P.failure_stores(s.pre, s.act, s.post, s.res, s.pol)
    return []


def bridge3_call_cases(s: Step) -> list[P.Case]:
    """The outbox rules a bridge worker relies on, on the calls they are about."""
    if isinstance(s.act, E.EnqueueAct):
        return P.bridge3_enqueue(s.pre, s.act, s.post, s.res)
    if isinstance(s.act, E.MarkSentAct):
        return P.bridge3_mark(s.pre, s.act, s.post, s.res)
    if isinstance(s.act, E.FailureAct):
        return P.bridge3_failure(s.pre, s.act, s.post, s.res)
    return []


_SCOPED: dict[str, tuple[str, bool]] = {
    # reducer -> (the scope field of its action, does it also check a stream grant)
    "append_sync_event": ("scope", True),
    "ack_checkpoint": ("scope", True),
    "upsert_presence": ("scope", False),
    "publish_provider_capability": ("scope", False),
    "open_compute_assignment": ("scope", False),
    "enqueue_bridge_event": ("scope", False),
    "mark_bridge_event_sent": ("scope", False),
    "record_bridge_failure": ("scope", False),
    "publish_stream_signal": ("scope", True),
    "reset_stream_epoch": ("scope", False),
}


def _auth_step(s: Step) -> ZBool:
    if s.transition == "update_compute_assignment":
        assert isinstance(s.act, E.UpdateAct)
        any_scope = z3.Or(s.act.s_request, s.act.s_assign, s.act.s_execute)
        return z3.And(P.auth2(any_scope, None, s.res), P.deliv4(s.pre, s.post, s.res, s.delta))
    if s.transition not in _SCOPED:
        return z3.BoolVal(True)  # a system transaction: no caller
    field, stream = _SCOPED[s.transition]
    act: Any = s.act
    scope = getattr(act, field)
    granted = act.granted if stream else None
    return z3.And(P.auth2(scope, granted, s.res), z3.Implies(z3.Not(scope), z3.And(
        E.same_db(s.pre, s.post), z3.Not(s.res.wrote))))


def _assign_roles_step(s: Step) -> ZBool:
    if s.transition == "update_compute_assignment":
        assert isinstance(s.act, E.UpdateAct)
        return z3.And(P.assign3(s.pre, s.post, s.act), P.assign4(s.pre, s.act, s.post))
    return P.assign3(s.pre, s.post, None)


def _epoch_step(s: Step) -> ZBool:
    if s.transition == "unclean_restart":
        assert isinstance(s.act, E.RestartAct)
        return P.epoch_restart(s.pre, s.post, s.act.undurable)
    return P.epoch_step(s.pre, s.post)


DB_PROOFS: tuple[Proof, ...] = (
    db_proof("seq", "the retained seqs are exactly floor..head, in the current epoch; heads, floors, epochs never "
             "fall (recovery relabels the continued epoch's events); append takes head+1",
             ("SEQ-1", "SEQ-3", "SEQ-4"),
             ("seq_head_plus_2", "compaction_keeps_floor", "restart_without_relabel", "append_write_lost"),
             lambda db, pol: P.seq1(db), _seq_step),
    db_proof("idem", "keys and seqs unique; a retry returns its seq and writes nothing; a different payload conflicts",
             ("IDEM-1", "IDEM-2", "IDEM-3"), ("sequence_before_dedupe", "dedupe_without_hash_compare"),
             lambda db, pol: P.idem1(db), _idem_step),
    db_proof("hash", "every stored payload is canonical and stored with its own hash",
             ("HASH-1",), ("hash_arg_trusted",), lambda db, pol: P.hash1(db), _true),
    db_proof("ckpt", "a checkpoint in the current epoch never passes head and never falls",
             ("CKPT-1", "CKPT-2"), ("non_monotonic_ack", "ack_past_head", "ack_not_recorded"),
             lambda db, pol: P.ckpt1(db), _ckpt_step),
    db_proof("pres", "presence rows are well formed; sweeps leave no expired live row; one signal per change",
             ("PRES-1", "PRES-2"), ("sweep_strict_expiry", "offline_reason_not_set", "disconnect_ignores_expiry",
                                        "upsert_not_recorded"),
             lambda db, pol: P.pres1(db), _pres_step),
    db_proof("assign", "assignments move only along the edge table, version + 1 (recovery only raises versions); "
             "assigned rows name a provider and its owner",
             ("ASSIGN-1", "ASSIGN-2"),
             ("assignment_version_not_bumped", "open_conflict_as_retry", "update_not_recorded"),
             lambda db, pol: P.assign2(db), _assign_step),
    db_proof("assign-roles", "an edge is taken only by a role it names (start, complete and fail by the assigned "
             "provider's owner alone); assigning names an existing, active provider advertising the kind and records "
             "its owner, and neither changes afterwards",
             ("ASSIGN-3", "ASSIGN-4"), ("execute_by_scope_alone", "assign_skips_provider_check"),
             None, _assign_roles_step),
    db_proof("bridge", "sent iff an event id; failed at the maximum attempts; sent rows never change; an accepted "
             "outbox call stores exactly what it says",
             ("BRIDGE-1", "BRIDGE-2"),
             ("failure_past_max", "failure_not_counted", "enqueue_not_recorded", "first_mark_drops_relays"),
             lambda db, pol: P.bridge1(db, pol), lambda s: P.bridge2(s.pre, s.post), cases=outbox_call_cases),
    db_proof("bridge-worker", "the outbox rules a bridge worker relies on: dedupe on the hash of [source, kind, "
             "tags, content], due at once, durable backoff, repeated marks merge relays, another event id conflicts",
             ("BRIDGE-3",), ("source_not_in_dedupe_hash", "backoff_not_recorded", "backoff_unit_ms",
                             "repeated_ack_ignores_relays"),
             lambda db, pol: P.bridge3_state(db), _true, cases=bridge3_call_cases),
    db_proof("prov", "a provider's version rises by one exactly on a content change (recovery only raises versions)",
             ("PROV-1",), ("republish_bumps_version", "republish_change_dropped"),
             lambda db, pol: P.prov_state(db), _prov_step),
    db_proof("evt", "event-table rows are never in the state",
             ("EVT-1",), ("event_rows_persisted",), lambda db, pol: P.evt1(db), _true),
    db_proof("auth-calls", "without its scope or stream grant a call fails first with missing_scope/forbidden_stream "
             "and a failed call changes nothing",
             ("AUTH-2", "DELIV-4"), ("scope_not_checked", "stream_created_before_sequence_check"),
             None, lambda s: z3.And(_auth_step(s), P.deliv4(s.pre, s.post, s.res, s.delta))),
    db_proof("epoch-step", "lemma L-EPOCH: a transaction raises the largest epoch by at most one; an unclean "
             "restart moves every epoch to M + max_undurable + 1",
             ("DUR-2",), ("no_epoch_bump_on_crash",), None, _epoch_step),
)


# --- stale cursors and resume subscriptions ----------------------------------------------------------------

RESUME_BOUNDS = f"{DB_BOUNDS}, KD={SV.KD} events sent per subscription"


def _stale_build(bug: str) -> list[Obligation]:
    pol = fresh(E.Policy, "policy")
    db = E.Db.fresh("db")
    a = fresh(SV.SubscribeAct, "subscribe")
    server = SV.subscribe_reasons(db, a, bug)

    def at(j: int) -> ZBool:
        oracle = SV.oracle_stale_reasons(E.vepoch(db, j), E.vhead(db, j), E.vfloor(db, j), a.budget, a.has_epoch,
                                         a.epoch, a.watermark, a.has_upper, a.upper)
        return z3.And(*[x == y for x, y in zip(server, oracle, strict=True)],
                      z3.Implies(z3.Not(z3.Or(server)), PS.no_skip(db, j, a.watermark)))

    # a.budget >= 0: a replay budget is a count (the precondition of both spec functions)
    return [Obligation("subscribe", "subscribe", (E.policy_ok(pol), P.state_invariant(db, pol),
                                                  in_range(a.stream, 0, E.S), a.budget >= 0),
                       E.per_slot(a.stream, E.S, at), (("state", db), ("subscribe", a)))]


def _resume_build(bug: str) -> list[Obligation]:
    only = _bug_transition(bug) if bug else None
    pol = fresh(E.Policy, "policy")
    out: list[Obligation] = []
    if only is None:
        w = SV.World.fresh("init")
        out.append(Obligation("init", "init", (E.initial(w.db), z3.Not(w.sub.active)),
                              z3.And(PS.ledger_ok(w), PS.resume(w)), (("state", w.db),)))
    if only in (None, "subscribe"):
        pre, post = SV.World.fresh("pre"), SV.World.fresh("post")
        a = fresh(SV.SubscribeAct, "subscribe")
        rejected = z3.Bool("rejected")
        hyps: tuple[ZBool, ...] = (
            E.policy_ok(pol), P.state_invariant(pre.db, pol), PS.epoch_consistent(pre.db), PS.ledger_ok(pre),
            PS.resume(pre), SV.t_subscribe(pre, a, post, rejected, bug), in_range(a.stream, 0, E.S), a.budget >= 0)

        def refused(j: int) -> ZBool:  # STALE-1 on the transition: the oracle's reasons, a page to min(head, B)
            db = pre.db
            return z3.Or(SV.oracle_stale_reasons(E.vepoch(db, j), E.vhead(db, j), E.vfloor(db, j), a.budget,
                                                 a.has_epoch, a.epoch, a.watermark, a.has_upper, a.upper))

        # an accepted resume, a page or not, replays at most the budget in its snapshot (ADR-0042: what the
        # budget bounds), then the resume theorem holds of it
        goal = z3.And(PS.ledger_ok(post), PS.resume(post), rejected == E.per_slot(a.stream, E.S, refused),
                      z3.Implies(z3.Not(rejected), post.sub.sent_n <= a.budget))
        head = z3.Int("witness.head")
        at_head = E.per_slot(a.stream, E.S, lambda j: head == E.vhead(pre.db, j))
        # the cases the bounded rule adds must be reached, or the obligation holds vacuously of them
        witnesses = (
            ("a page behind the head accepted, the unbounded resume from its W over the budget",
             z3.And(at_head, a.has_upper, z3.Not(rejected), a.upper < head, head - a.watermark > a.budget,
                    post.sub.sent_n > 1)),
            ("a page refused for the budget alone", z3.And(at_head, a.has_upper, rejected, a.upper < head,
                                                            z3.Not(SV.subscribe_reasons(pre.db, a)[0]),
                                                            z3.Not(SV.subscribe_reasons(pre.db, a)[1]))),
            ("a page past the head accepted, sent up to the head", z3.And(at_head, a.has_upper, z3.Not(rejected),
                                                                           a.upper > head, post.sub.sent_n > 0)),
            ("a page with B < W accepted, sent nothing", z3.And(at_head, a.has_upper, z3.Not(rejected),
                                                               a.upper < a.watermark, a.watermark < head)),
        )
        out.append(Obligation("subscribe", "subscribe", hyps, goal,
                              (("pre", pre.db), ("subscribe", a), ("rejected", rejected), ("sub", post.sub)),
                              witnesses))
    for t in E.DB_TRANSITIONS:
        if only in (None, f"deliver[{t.name}]"):
            pre, post = SV.World.fresh("pre"), SV.World.fresh("post")
            act = t.action("act")
            res, delta = fresh(E.Result, "result"), E.Delta.fresh("delta")
            hyps = (E.policy_ok(pol), P.state_invariant(pre.db, pol), PS.ledger_ok(pre), PS.resume(pre),
                    t.relation(pre.db, act, post.db, res, delta, pol),
                    SV.t_deliver(pre, delta, post, t.name == "unclean_restart", "aux", bug))
            out.append(Obligation(f"deliver[{t.name}]", f"deliver[{t.name}]", hyps,
                                  z3.And(PS.ledger_ok(post), PS.resume(post)),
                                  (("pre", pre.db), ("sub", pre.sub), ("action", act), ("delta", delta),
                                   ("post", post.db), ("sub'", post.sub))))
    return out


STALE_PROOF = Proof(
    "stale", "the server rejects a resume exactly when the oracle's reasons hold, with all of them (a page "
    "seq <= B held against the budget for min(head, B) - W); a cursor judged not stale has every event after it "
    "retained",
    ("STALE-1", "STALE-2"), ("subscribe",), DB_BOUNDS, _stale_build,
    ("stale_floor_lt_vs_le", "epoch_ignored_on_resume", "budget_ignores_upper_bound", "budget_upper_max_not_min",
     "budget_gt_read_as_ge"))

RESUME_PROOF = Proof(
    "resume", "resume from W not stale: snapshot + later updates = exactly the events W+1.. in order, each once "
    "(a page seq <= B: W+1..min(head, B), its snapshot within the budget; it is refused exactly when the oracle's "
    "reasons hold, min(head, B) - W over the budget); the rows held equal the query's result (assumes A-EPOCH, "
    "lemma epoch-consistent)",
    ("REPLAY-2", "DELIV-2", "STALE-1", "STALE-2"),
    ("subscribe", *(f"deliver[{t.name}]" for t in E.DB_TRANSITIONS)), RESUME_BOUNDS, _resume_build,
    ("snapshot_not_atomic", "stale_floor_lt_vs_le", "update_sent_twice", "retention_delete_not_applied",
     "budget_ignores_upper_bound", "budget_upper_max_not_min", "budget_gt_read_as_ge", "page_bound_exclusive",
     "page_snapshot_ignores_bound", "page_updates_ignore_bound"))

def _pages_build(bug: str) -> list[Obligation]:
    """Two consecutive pages, (W, B] then (B, head], both accepted on one state, send together exactly what
    the unbounded resume from W sends on it: the same events in the same order, none twice, none missing."""
    pol = fresh(E.Policy, "policy")
    pre = SV.World.fresh("pre")
    acts = [fresh(SV.SubscribeAct, p) for p in ("page1", "page2", "whole")]
    posts = [SV.World.fresh(p) for p in ("page1", "page2", "whole")]
    rejected = [z3.Bool(f"{p}.rejected") for p in ("page1", "page2", "whole")]
    p1, p2, whole = acts
    same_resume = [z3.And(x.stream == p1.stream, x.epoch == p1.epoch, x.budget == p1.budget) for x in acts]
    hyps = (E.policy_ok(pol), P.state_invariant(pre.db, pol), PS.epoch_consistent(pre.db), PS.ledger_ok(pre),
            z3.Not(pre.sub.active), in_range(p1.stream, 0, E.S), p1.budget >= 0, *same_resume,
            p1.has_upper, p1.upper >= p1.watermark,  # the first page (W, B]
            z3.Not(p2.has_upper), p2.watermark == p1.upper,  # the next from B, to the head
            z3.Not(whole.has_upper), whole.watermark == p1.watermark,  # the unbounded resume from W
            *[SV.t_subscribe(pre, a, b, r, bug) for a, b, r in zip(acts, posts, rejected, strict=True)],
            *[z3.Not(r) for r in rejected])
    s1, s2, s3 = (b.sub for b in posts)
    goal = z3.And(s3.sent_n == s1.sent_n + s2.sent_n,
                  *[z3.Implies(i < s1.sent_n, SV.same_item(s3.sent[i], s1.sent[i])) for i in range(SV.KD)],
                  *[z3.Implies(z3.And(i < s2.sent_n, k == s1.sent_n + i), SV.same_item(s3.sent[k], s2.sent[i]))
                    for i in range(SV.KD) for k in range(SV.KD)])
    witnesses = (("both pages send events", z3.And(s1.sent_n > 0, s2.sent_n > 0)),)
    return [Obligation("subscribe", "subscribe", hyps, goal,
                       (("pre", pre.db), ("page1", p1), ("page2", p2), ("whole", whole), ("sub1", s1), ("sub2", s2),
                        ("sub", s3)), witnesses)]


PAGES_PROOF = Proof(
    "resume-pages", "consecutive pages compose: a page (W, B] and the resume from B, both accepted on one state, "
    "send exactly the events the unbounded resume from W sends, in order, each once", ("REPLAY-2",), ("subscribe",),
    RESUME_BOUNDS, _pages_build, ("page_bound_exclusive", "page_snapshot_ignores_bound"))

EPOCH_CONSISTENT_PROOF = db_proof(
    "epoch-consistent", "lemma A-EPOCH: a retained event is in its stream's current epoch exactly when it is at "
    "or above floor_seq (the resume theorem's snapshot filters on the epoch)", ("REPLAY-2",),
    ("restart_without_relabel",),
    lambda db, pol: PS.epoch_consistent(db), _true, lemma=PS.epoch_consistent)


# --- the outbound queue, confirmed reads, durability ---------------------------------------------------------

SRV_BOUNDS = f"one connection, Q={SV.Q} queued messages, max_undurable <= {SV.HW}"

SrvGoal = Callable[[str, SV.Srv, object, SV.Srv], ZBool]


def srv_proof(pid: str, title: str, invariants: tuple[str, ...], controls: tuple[str, ...],
              state_goal: Callable[[SV.Srv], ZBool], step_goal: SrvGoal) -> Proof:
    def build(bug: str) -> list[Obligation]:
        only = _bug_transition(bug) if bug else None
        out: list[Obligation] = []
        if only is None:
            a = SV.Srv.fresh("init")
            out.append(Obligation("init", "init", (SV.srv_initial(a),), state_goal(a), (("server", a),)))
        for t in SV.SRV_TRANSITIONS:
            if only is not None and t.name != only:
                continue
            pre, post = SV.Srv.fresh("pre"), SV.Srv.fresh("post")
            act = t.action("act")
            hyps = (PS.srv_invariant(pre), t.relation(pre, act, post, bug=bug))
            out.append(Obligation(f"step[{t.name}]", t.name, hyps,
                                  z3.And(state_goal(post), step_goal(t.name, pre, act, post)),
                                  (("pre", pre), ("action", act), ("post", post))))
        return out

    return Proof(pid, title, invariants, tuple(t.name for t in SV.SRV_TRANSITIONS), SRV_BOUNDS, build, controls)


def _order_step(name: str, a: SV.Srv, act: object, b: SV.Srv) -> ZBool:
    if name == "pop":
        front = a.queue[0]
        return z3.Implies(a.rcv, z3.And(front.off >= a.last_rcv,
                                        z3.Implies(front.kind != SV.OTHER, front.off > a.last_rcv)))
    if name == "commit":
        assert isinstance(act, SV.CommitAct)
        off = a.committed + 1
        at_off = [z3.And(i < b.qn, b.queue[i].off == off) for i in range(SV.Q)]
        parts = [z3.Implies(z3.And(at_off[i], at_off[k]), i == k) for i in range(SV.Q) for k in range(SV.Q)]
        parts += [z3.Implies(at_off[i], b.queue[i].kind == z3.If(act.is_caller, SV.RESULT, SV.UPDATE))
                  for i in range(SV.Q)]
        # ... and at least one: the caller's ReducerResult, another connection's update when its queries match
        parts.append(z3.Implies(z3.Or(act.is_caller, act.has_updates), z3.Or(at_off)))
        return z3.Implies(b.alive, z3.And(parts))
    return z3.BoolVal(True)


def _conf_step(name: str, a: SV.Srv, act: object, b: SV.Srv) -> ZBool:
    if name == "pop":
        return z3.Implies(a.confirmed, a.queue[0].off <= a.durable)
    return z3.BoolVal(True)


def _dur_step(name: str, a: SV.Srv, act: object, b: SV.Srv) -> ZBool:
    if name == "crash":
        return z3.And(b.ctok == SV.RECOVER(a.tok[a.durable]), b.hist[0] > a.seen)
    return z3.BoolVal(True)


DELIV_ORDER_PROOF = srv_proof(
    "deliv-order", "each connection receives in commit order; a committed call's caller gets one ReducerResult and "
    "no TransactionUpdate", ("DELIV-1", "DELIV-3", "SLOW-1"),
    ("caller_also_gets_update", "update_tagged_with_old_offset", "caller_result_dropped"),
    PS.deliv_order, _order_step)

CONF_PROOF = srv_proof(
    "conf", "a confirmed-read client receives only durable offsets, and no crash loses what it received",
    ("CONF-1", "CONF-2"), ("confirmed_gate_off_by_one", "durable_can_fall"), PS.conf2, _conf_step)

DUR_PROOF = srv_proof(
    "dur", "a crash recovers exactly the durable prefix, and every epoch after recovery is above every epoch "
    "ever handed out (with lemma L-EPOCH)", ("DUR-1", "DUR-2"),
    ("crash_without_rollback", "durable_state_off_by_one", "crash_keeps_epochs", "crash_bump_too_small"),
    lambda a: z3.And(PS.offsets_ok(a), PS.dur(a)), _dur_step)


# --- the client ----------------------------------------------------------------------------------------------


def _replay_build(bug: str) -> list[Obligation]:
    only = _bug_transition(bug) if bug else None
    out: list[Obligation] = []
    if only is None:
        v = CL.View.fresh("init")
        out.append(Obligation("init", "init", (CL.view_initial(v),), CL.replay1(v), (("view", v),)))
    v, w = CL.View.fresh("pre"), CL.View.fresh("post")
    if only in (None, "apply"):
        e = fresh(CL.Incoming, "event")
        gap = z3.Bool("gap")
        applied = w.n == v.n + 1
        goal = z3.And(CL.replay1(w), z3.Implies(applied, z3.And(e.seq == v.last + 1, w.last == e.seq)),
                      z3.Implies(z3.Not(applied), CL.same_view(v, w)), w.last >= v.last)
        out.append(Obligation("step[apply]", "apply", (CL.replay1(v), CL.t_apply(v, e, w, gap, bug)), goal,
                              (("view", v), ("event", e), ("gap", gap), ("view'", w))))
    if only is None:
        auth = CL.Authority.fresh("authority")
        row = fresh(CL.StreamRow, "row")
        rebooted = z3.Bool("rebooted")
        out.append(Obligation("step[stream_row]", "stream_row",
                              (CL.replay1(v), CL.t_stream_row(v, row, auth, w, rebooted)), CL.replay1(w),
                              (("view", v), ("row", row), ("view'", w))))
        out.append(Obligation("step[rebootstrap]", "rebootstrap", (CL.replay1(v), CL.t_rebootstrap(v, auth, w)),
                              CL.replay1(w), (("view", v), ("view'", w))))
    return out


REPLAY_PROOF = Proof(
    "replay", "a client's applied events are contiguous and end at its watermark; it applies only last + 1 and "
    "its watermark never falls outside a rebootstrap", ("REPLAY-1",), ("apply", "stream_row", "rebootstrap"),
    f"KA={CL.KA} applied events per view", _replay_build, ("gap_applied", "duplicate_applied"))


# --- the row filter ------------------------------------------------------------------------------------------


def _rows_build(bug: str) -> list[Obligation]:
    c = fresh(SV.ReadCase, "row")
    return [Obligation("visible", "visible", (), z3.Implies(SV.visible(c, bug), SV.auth1_allowed(c)),
                       (("case", c),))]


ROWS_PROOF = Proof(
    "auth-rows", "snapshots and updates carry only rows the reader may read (visibility per table from spec.schema)",
    ("AUTH-1",), ("snapshot", "transaction_update"), "every table of spec.schema", _rows_build,
    ("row_filter_ignored",))


ALL_PROOFS: tuple[Proof, ...] = (*DB_PROOFS, EPOCH_CONSISTENT_PROOF, STALE_PROOF, RESUME_PROOF, PAGES_PROOF,
                                 DELIV_ORDER_PROOF,
                                 CONF_PROOF, DUR_PROOF, REPLAY_PROOF, ROWS_PROOF)


# --- histories across unclean restarts (proofs.chain) --------------------------------------------------------


def _chain_only(bug: str) -> str | None:
    return CH.BUGS[bug][0] if bug else None


def _ver_build(bug: str) -> list[Obligation]:
    only = _chain_only(bug)
    m, x = z3.Int("max_undurable"), z3.Int("x")
    out: list[Obligation] = []
    a, b = CH.Ver.fresh("pre"), CH.Ver.fresh("post")
    if only is None:
        s = CH.Ver.fresh("init")
        out.append(Obligation("init", "init", (m >= 0, CH.ver_init(s)), CH.ver_inv(s, m, x), (("state", s),)))
        c2 = z3.Int("content")
        out.append(Obligation(
            "step[update]", "update", (CH.ver_inv(a, m, x), CH.ver_inv(a, m, a.v + 1), CH.t_update(a, c2, b, m)),
            z3.And(CH.ver_inv(b, m, x), z3.Implies(c2 != a.c, CH.issues(a.v + 1, c2, a))),
            (("pre", a), ("content", c2), ("post", b))))
        out.append(Obligation("step[durable]", "durable", (CH.ver_inv(a, m, x), CH.t_durable(a, b)),
                              CH.ver_inv(b, m, x), (("pre", a), ("post", b))))
    if only in (None, "crash"):
        f = z3.Int("recovery_version")
        out.append(Obligation(
            "step[crash]", "crash", (CH.ver_inv(a, m, x), CH.ver_inv(a, m, f), CH.t_crash(a, f, b, m, bug)),
            z3.And(CH.ver_inv(b, m, x), CH.issues(f, a.cd, a)),
            (("pre", a), ("max_undurable", m), ("recovery_version", f), ("x", x), ("post", b))))
    return out


VER_PROOF = Proof(
    "ver", "no version number ever names two contents: an update takes version + 1, recovery after an unclean "
    "restart moves every row above every version the lost suffix (at most max_undurable transactions) can have "
    "handed out", ("VER-1",), ("update", "durable", "crash"),
    "one row of provider_capability or compute_assignment, symbolic max_undurable, every version (pointwise)",
    _ver_build, ("recovery_keeps_versions", "recovery_bump_too_small"))


def _cont_chain_build(bug: str) -> list[Obligation]:
    only = _chain_only(bug)
    x = z3.Int("seq")
    a, b = CH.Chain.fresh("pre"), CH.Chain.fresh("post")
    out: list[Obligation] = []
    show: Show = (("pre", a), ("seq", x), ("post", b))
    f, new = z3.Int("fresh_epoch"), z3.Array("fresh_epoch.content", z3.IntSort(), z3.IntSort())
    d = z3.Int("durable_head")
    if only is None:
        s = CH.Chain.fresh("init")
        out.append(Obligation("init", "init", (CH.chain_init(s),), CH.chain_inv(s, x), (("state", s),)))
        steps: list[tuple[str, ZBool]] = [
            ("append", CH.t_append(a, z3.Int("content"), b)),
            ("reset", CH.t_reset(a, f, new, b)),
            ("apply", CH.t_apply(a, b)),
            ("rebootstrap", CH.t_rebootstrap(a, z3.Int("authority.watermark"),
                                             z3.Array("authority.applied", z3.IntSort(), z3.IntSort()), x, b)),
        ]
        for name, rel in steps:
            out.append(Obligation(f"step[{name}]", name, (CH.chain_inv(a, x), rel), CH.chain_inv(b, x), show))
    if only in (None, "restart"):
        out.append(Obligation("step[restart]", "restart", (CH.chain_inv(a, x), CH.t_restart(a, d, f, new, x, b, bug)),
                              CH.chain_inv(b, x), (*show, ("durable_head", d), ("fresh_epoch", f))))
        # the chain is what lets a reader continue: one that could before, watermark durable, still can
        capped = z3.If(a.nh < CH.L - 1, a.nh, CH.L - 1)
        could = z3.Or(z3.And(a.has, a.ev == a.en),
                      CH.continues(a.has, a.ev, a.w, a.en, capped, a.ep[:CH.L - 1], a.bd[:CH.L - 1]))
        out.append(Obligation(
            "live[restart]", "restart",
            (CH.chain_inv(a, x), CH.t_restart(a, d, f, new, x, b, bug, keep_all=True), could, a.w <= d),
            CH.continues(b.has, b.ev, b.w, b.en, b.nh, b.ep, b.bd), (*show, ("durable_head", d))))
    if only in (None, "continue"):
        out.append(Obligation("step[continue]", "continue", (CH.chain_inv(a, x), CH.t_continue(a, b, bug)),
                              CH.chain_inv(b, x), show))
    return out


CONT_CHAIN_PROOF = Proof(
    "cont-chain", "a client that adopts a new epoch without a rebootstrap holds exactly a prefix of the new epoch's "
    "history, across any number of unclean restarts (the continuation chain, each bound capped at the durable "
    "head); and a reader that could continue before a restart, its watermark durable, still can",
    ("CONT-1",), ("append", "restart", "reset", "apply", "rebootstrap", "continue"),
    f"one stream and one view, L={CH.L} hops on the chain, every seq (pointwise), epochs and heads unbounded",
    _cont_chain_build, ("restart_keeps_bounds", "restart_reuses_epoch", "restart_drops_chain", "client_ignores_bound"))

ALL_PROOFS = (*ALL_PROOFS, VER_PROOF, CONT_CHAIN_PROOF)
