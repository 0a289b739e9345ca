"""The invariants of :mod:`spec.invariants`, in closed form over the Z3 database state.

Each function states one catalog invariant (or the part of it that concerns the database layer)
for a :class:`~proofs.encoding.Db`.  State invariants take one state, transition invariants a
``(pre, post)`` pair (plus what the step emitted), call invariants also the action.

SEQ-1 is stated in *slot form*: a stream's retained events, in table order, have seqs
``b, b + 1, ..., head`` with ``1 <= b <= floor``; those at or above floor are in the stream's
epoch, those below in earlier ones.  That is the catalog's statement plus "table order is seq
order", which the model maintains and the encoding of compaction relies on.
"""

from __future__ import annotations

from dataclasses import replace

import z3

from proofs.core import OK_CODE, ZBool, ZInt, code, one_of, same, select
from proofs.encoding import (
    A_STATUS,
    A_TERMINAL,
    ADVERTISES,
    B_STATUS,
    CANON,
    FS,
    MERGE,
    MS,
    P_OFFLINE,
    P_REASON,
    P_STATUS,
    PROV_STATUS,
    RELAYS_NONE,
    US_PER_MS,
    AckAct,
    AppendAct,
    Assignment,
    C,
    Db,
    Delta,
    EnqueueAct,
    FailureAct,
    H,
    K,
    MarkSentAct,
    N,
    OpenAct,
    Outbox,
    Policy,
    PresenceAct,
    Provider,
    ProviderAct,
    Result,
    S,
    UpdateAct,
    ckpt_index,
    edge_allowed,
    frame,
    max_epoch,
    no_delta,
    outbox_digest,
    same_db,
    same_event,
    vepoch,
    vhead,
)
from spec.errors import ErrorCode

# --- state invariants ------------------------------------------------------------------------------------


def seq1(db: Db) -> ZBool:
    """SEQ-1 (slot form), and the epoch facts it rests on: a stream's retained events, in table
    order, have seqs ``floor, floor + 1, ..., head`` (contiguous, from the floor to the head) and
    all carry the stream's epoch; ``1 <= floor <= head + 1``.  An epoch continues another only below
    it and up to a seq at most the head (``cont_epoch = 0`` or ``0 < cont_epoch < epoch``,
    ``cont_seq <= head``).  Epochs are >= 1; a stream's epoch is at least ``epoch_floor`` (a new
    stream gets ``epoch_floor``)."""
    parts: list[ZBool] = [db.epoch_floor >= 1]
    for j in range(S):
        st, ev = db.streams[j], db.events[j]
        slots = [z3.Implies(i < ev.n, z3.And(ev.slots[i].seq == st.floor + i, ev.slots[i].epoch == st.epoch))
                 for i in range(K)]
        parts.append(z3.And(ev.n >= 0, ev.n <= K))
        parts.append(z3.If(st.exists, z3.And(st.floor >= 1, st.floor <= st.head + 1, ev.n == st.head - st.floor + 1,
                                             st.epoch >= db.epoch_floor, st.cont_epoch >= 0,
                                             z3.Implies(st.cont_epoch != 0, z3.And(st.cont_epoch < st.epoch,
                                                                                   st.cont_seq <= st.head)),
                                             *slots),
                           ev.n == 0))
    return z3.And(parts)


def seq3_restart(pre: Db, post: Db) -> ZBool:
    """SEQ-3's one exception, the recovery transaction (CONT-1): heads and floors kept, epochs raised,
    every retained event kept but for its epoch, which moves from the stream's old epoch to its new."""
    parts: list[ZBool] = []
    for j in range(S):
        a, b = pre.streams[j], post.streams[j]
        parts.append(z3.Implies(a.exists, z3.And(b.exists, b.head == a.head, b.floor == a.floor, b.epoch > a.epoch,
                                                 b.cont_epoch == a.epoch, b.cont_seq == a.head)))
        ea, eb = pre.events[j], post.events[j]
        parts.append(eb.n == ea.n)
        for i in range(K):
            x, y = ea.slots[i], eb.slots[i]
            parts.append(z3.Implies(i < ea.n, z3.And(same_event(replace(x, epoch=y.epoch), y),
                                                    y.epoch == z3.If(x.epoch == a.epoch, b.epoch, x.epoch))))
    return z3.And(parts)


def idem1(db: Db) -> ZBool:
    """IDEM-1: (stream, key) and (stream, seq) unique among retained events."""
    parts: list[ZBool] = []
    for ev in db.events:
        for i in range(K):
            for k in range(i + 1, K):
                parts.append(z3.Implies(k < ev.n, z3.And(ev.slots[i].key != ev.slots[k].key,
                                                         ev.slots[i].seq != ev.slots[k].seq)))
    return z3.And(parts)


def hash1(db: Db) -> ZBool:
    """HASH-1, structurally: every stored payload is canonical and its stored hash is H of it."""
    parts: list[ZBool] = []
    for ev in db.events:
        for i, e in enumerate(ev.slots):
            parts.append(z3.Implies(i < ev.n, z3.And(e.hash == H(e.payload), CANON(e.payload))))
    for p in db.providers:
        parts.append(z3.Implies(p.used, z3.And(p.hash == H(p.cap), CANON(p.cap))))
    for a in db.assignments:
        parts.append(z3.Implies(a.used, z3.And(a.hash == H(a.request), CANON(a.request),
                                               z3.Implies(a.has_result, CANON(a.result)))))
    return z3.And(parts)


def ckpt1(db: Db) -> ZBool:
    """CKPT-1, with its support: a checkpoint's epoch is never ahead of its stream's."""
    parts: list[ZBool] = []
    for c in range(C):
        for j in range(S):
            ck = db.ckpts[ckpt_index(c, j)]
            parts.append(z3.Implies(ck.used, z3.And(
                ck.last >= 0, ck.epoch <= vepoch(db, j),
                z3.Implies(ck.epoch == vepoch(db, j), ck.last <= vhead(db, j)))))
    return z3.And(parts)


def pres1(db: Db) -> ZBool:
    """PRES-1."""
    return z3.And([z3.Implies(p.used, z3.And(
        one_of(p.status, P_STATUS.values()), (p.status == P_OFFLINE) == (p.reason != 0),
        one_of(p.reason, (0, *P_REASON.values())), p.expires >= p.last_seen)) for p in db.presence])


def assign2(db: Db) -> ZBool:
    """ASSIGN-2 (and version_floor >= 1, which new rows start at)."""
    named = tuple(A_STATUS[s] for s in ("assigned", "running", "completed", "failed"))
    rows = [z3.Implies(a.used, z3.And(one_of(a.status, A_STATUS.values()), a.version >= 1,
                                      z3.Implies(one_of(a.status, named), z3.And(a.has_provider, a.has_owner)),
                                      z3.Implies(a.status == A_STATUS["open"],
                                                 z3.Not(z3.Or(a.has_provider, a.has_owner)))))
            for a in db.assignments]
    return z3.And(db.version_floor >= 1, *rows)


def bridge1(db: Db, pol: Policy) -> ZBool:
    """BRIDGE-1 (attempts >= 0 as support)."""
    return z3.And([z3.Implies(b.used, z3.And(
        one_of(b.status, B_STATUS.values()), (b.status == B_STATUS["sent"]) == b.has_event_id, b.attempts >= 0,
        z3.Implies(b.status == B_STATUS["failed"], b.attempts >= pol.max_attempts),
        z3.Implies(b.status == B_STATUS["pending"], b.attempts < pol.max_attempts))) for b in db.outbox])


def bridge3_state(db: Db) -> ZBool:
    """BRIDGE-3, the state part: every outbox row is stored under its dedupe key, the hash of its own
    ``[source, nostr_kind, tags, content]``."""
    return z3.And([z3.Implies(b.used, b.content_hash == outbox_digest(b.source, b.kind, b.tags, b.content))
                   for b in db.outbox])


def prov_state(db: Db) -> ZBool:
    """The state part of the provider checks (``check_state`` files them under HASH-1): a valid
    status and version >= 1 (and version_floor >= 1, which new rows start at)."""
    return z3.And(db.version_floor >= 1, *[z3.Implies(p.used, z3.And(one_of(p.status, PROV_STATUS.values()),
                                                                     p.version >= 1)) for p in db.providers])


def versions_raised(pre: Db, post: Db) -> ZBool:
    """The recovery transaction's exception to PROV-1 and ASSIGN-1 (VER-1): rows keep their content
    and their versions only rise."""
    parts: list[ZBool] = [post.version_floor >= pre.version_floor]
    pairs: list[tuple[Provider | Assignment, Provider | Assignment]] = [
        *zip(pre.providers, post.providers, strict=True), *zip(pre.assignments, post.assignments, strict=True)]
    for a, b in pairs:
        parts.append(z3.And(a.used == b.used, z3.Implies(a.used, z3.And(same(b, replace(a, version=b.version)),
                                                                       b.version > a.version))))
    return z3.And(parts)


def evt1(db: Db) -> ZBool:
    """EVT-1."""
    return db.evt_rows == 0


def state_invariant(db: Db, pol: Policy) -> ZBool:
    """Every state invariant of the database layer (the inductive invariant of the DB proofs)."""
    return z3.And(seq1(db), idem1(db), hash1(db), ckpt1(db), pres1(db), assign2(db), bridge1(db, pol),
                  bridge3_state(db), prov_state(db), evt1(db))


# --- transition invariants --------------------------------------------------------------------------------


def seq3(pre: Db, post: Db) -> ZBool:
    """SEQ-3: heads, floors and epochs never decrease; a retained event row never changes."""
    parts: list[ZBool] = []
    for j in range(S):
        a, b = pre.streams[j], post.streams[j]
        parts.append(z3.Implies(a.exists, z3.And(b.exists, b.head >= a.head, b.floor >= a.floor,
                                                 b.epoch >= a.epoch)))
        ea, eb = pre.events[j], post.events[j]
        for i in range(K):
            for k in range(K):
                x, y = ea.slots[i], eb.slots[k]
                parts.append(z3.Implies(z3.And(i < ea.n, k < eb.n, x.seq == y.seq), same_event(x, y)))
    return z3.And(parts)


def ckpt2(pre: Db, post: Db) -> ZBool:
    """CKPT-2."""
    return z3.And([z3.Implies(z3.And(a.used, b.used), z3.And(
        b.owner == a.owner, z3.Implies(b.epoch == a.epoch, b.last >= a.last)))
        for a, b in zip(pre.ckpts, post.ckpts, strict=True)])


def ckpt2_ack(pre: Db, a: AckAct, r: Result) -> ZBool:
    """CKPT-2, the call: an accepted ack writes nothing only when the checkpoint is already in its epoch at
    or past its seq (``spec.reducers.ack_checkpoint``'s contract) -- an ack is never acknowledged and lost."""
    parts: list[ZBool] = []
    for c in range(C):
        for j in range(S):
            old = pre.ckpts[ckpt_index(c, j)]
            parts.append(z3.Implies(z3.And(a.client == c, a.stream == j, r.code == OK_CODE, z3.Not(r.wrote)),
                                    z3.And(old.used, old.epoch == a.epoch, old.last >= a.seq)))
    return z3.And(parts)


def assign1(pre: Db, post: Db) -> ZBool:
    """ASSIGN-1."""
    return z3.And([z3.Implies(z3.And(a.used, b.used, z3.Not(same(a, b))), z3.And(
        z3.Not(one_of(a.status, A_TERMINAL)), edge_allowed(a.status, b.status), b.version == a.version + 1))
        for a, b in zip(pre.assignments, post.assignments, strict=True)])


def assign3(pre: Db, post: Db, act: UpdateAct | None) -> ZBool:
    """ASSIGN-3: a row becomes assigned only by an update naming (``prov_slot``) a provider that exists, is
    active and advertises the job kind in the state before, and records that provider's owner; a row's
    provider and provider_owner, once set, never change."""
    parts: list[ZBool] = []
    for a, b in zip(pre.assignments, post.assignments, strict=True):
        became = z3.And(a.used, b.used, a.status == A_STATUS["open"], b.status == A_STATUS["assigned"])
        if act is None:
            named: ZBool = z3.BoolVal(False)  # no other transition assigns
        else:
            named = z3.Or([z3.And(act.prov_slot == k, p.used, p.status == PROV_STATUS["active"],
                                  ADVERTISES(p.kinds, a.job_kind), b.has_owner, b.owner == p.owner)
                           for k, p in enumerate(pre.providers)])
        kept = z3.Implies(z3.And(a.used, b.used, a.has_provider), z3.And(
            b.has_provider, b.provider == a.provider, b.has_owner == a.has_owner,
            z3.Implies(a.has_owner, b.owner == a.owner)))
        parts.append(z3.And(z3.Implies(became, named), kept))
    return z3.And(parts)


def assign4(pre: Db, act: UpdateAct, post: Db) -> ZBool:
    """ASSIGN-4, written out edge by edge (not through spec.transitions' role predicates): assign by a
    compute.assign holder; start, complete, fail by a compute.execute holder who is the row's provider_owner;
    cancel by the requester or a compute.assign holder."""
    st = A_STATUS
    parts: list[ZBool] = []
    for a, b in zip(pre.assignments, post.assignments, strict=True):
        executor = z3.And(act.s_execute, a.has_owner, act.caller == a.owner)
        allowed = z3.Or(
            z3.And(a.status == st["open"], b.status == st["assigned"], act.s_assign),
            z3.And(a.status == st["assigned"], b.status == st["running"], executor),
            z3.And(a.status == st["running"], one_of(b.status, (st["completed"], st["failed"])), executor),
            z3.And(one_of(a.status, (st["open"], st["assigned"], st["running"])), b.status == st["cancelled"],
                   z3.Or(act.caller == a.requester, act.s_assign)))
        parts.append(z3.Implies(z3.And(a.used, b.used, z3.Not(same(a, b))), allowed))
    return z3.And(parts)


def bridge2(pre: Db, post: Db) -> ZBool:
    """BRIDGE-2."""
    return z3.And([z3.Implies(z3.And(a.used, b.used), z3.And(
        z3.Implies(a.status == B_STATUS["sent"], same(a, replace(b, relays=a.relays, updated=a.updated))),
        b.attempts >= a.attempts))
        for a, b in zip(pre.outbox, post.outbox, strict=True)])


# --- call invariants (the bridge outbox) ----------------------------------------------------------------------
#
# Each is a list of cases ``(name, premise, conclusion)``: the goal is every ``premise => conclusion``,
# and each premise must be satisfiable with the obligation's hypotheses (a case that no state and
# call can reach would hold vacuously; ``proofs.api.check`` reports it as ``vacuous``).

Case = tuple[str, ZBool, ZBool]


def cases_goal(cases: list[Case]) -> ZBool:
    return z3.And([z3.Implies(premise, conclusion) for _name, premise, conclusion in cases])


def _outbox_rest(pre: Db, post: Db, slot: ZInt) -> ZBool:
    """Every component but the named outbox row is unchanged."""
    return z3.And(frame(pre, post, {f"outbox{i}" for i in range(N)}),
                  *[z3.Implies(slot != i, same(x, y)) for i, (x, y) in enumerate(zip(pre.outbox, post.outbox,
                                                                                     strict=True))])


def enqueue_stores(pre: Db, a: EnqueueAct, post: Db, r: Result) -> list[Case]:
    """The call ``enqueue_bridge_event``: an accepted enqueue that writes inserts the row it describes -- its
    source, kind, tags, content and their hash, pending, no attempts, no error, no event id, no relays, created,
    updated and due now -- and nothing else; one that writes nothing is a retry of a row holding its content
    hash, and changes nothing.  (A new row is never acknowledged and lost.)"""
    old, new = select(pre.outbox, a.outbox), select(post.outbox, a.outbox)
    row = Outbox(used=True, source=a.source, kind=a.kind, tags=a.tags, content=a.content,
                 content_hash=outbox_digest(a.source, a.kind, a.tags, a.content), status=B_STATUS["pending"],
                 attempts=0, next_at=a.now, has_error=False, error=0, has_event_id=False, event_id=0,
                 relays=RELAYS_NONE, created=a.now, updated=a.now)
    ok = r.code == OK_CODE
    return [
        ("enqueue writes", z3.And(ok, r.wrote),
         z3.And(z3.Not(old.used), same(new, row), _outbox_rest(pre, post, a.outbox))),
        ("enqueue retry", z3.And(ok, z3.Not(r.wrote)),
         z3.And(old.used, old.content_hash == row.content_hash, same_db(pre, post))),
    ]


def mark_sent_stores(pre: Db, a: MarkSentAct, post: Db, r: Result) -> list[Case]:
    """The call ``mark_bridge_event_sent``: an accepted mark leaves the row sent with this event id and
    relays_acked = the call's relays, merged with those of a row already sent; it writes exactly when the
    row was not sent or the merge adds a relay (then updated_at = now), and changes nothing else."""
    old, new = select(pre.outbox, a.outbox), select(post.outbox, a.outbox)
    sent = old.status == B_STATUS["sent"]
    relays = z3.If(sent, MERGE(old.relays, a.relays), a.relays)
    writes = z3.Or(z3.Not(sent), relays != old.relays)
    row = replace(old, status=B_STATUS["sent"], has_event_id=True, event_id=a.event_id, relays=relays,
                  updated=z3.If(writes, a.now, old.updated))
    return [("mark accepted", r.code == OK_CODE,
             z3.And(old.used, r.wrote == writes, same(new, row), _outbox_rest(pre, post, a.outbox)))]


def failure_stores(pre: Db, a: FailureAct, post: Db, r: Result, pol: Policy) -> list[Case]:
    """The call ``record_bridge_failure``: accepted on a pending row, it writes the row with attempts + 1,
    failed exactly when that reaches the maximum (else pending), last_error = the error, next_attempt_at =
    now + retry_after_ms (microseconds), updated_at = now, and nothing else; accepted on a sent or failed row
    it writes nothing."""
    old, new = select(pre.outbox, a.outbox), select(post.outbox, a.outbox)
    pending = z3.And(old.used, old.status == B_STATUS["pending"])
    attempts = old.attempts + 1
    row = replace(old, attempts=attempts,
                  status=z3.If(attempts >= pol.max_attempts, B_STATUS["failed"], B_STATUS["pending"]),
                  has_error=True, error=a.error, next_at=a.now + US_PER_MS * a.retry, updated=a.now)
    ok = r.code == OK_CODE
    return [
        ("failure counted", z3.And(ok, pending), z3.And(r.wrote, same(new, row), _outbox_rest(pre, post, a.outbox))),
        ("failure on a settled row", z3.And(ok, z3.Not(pending)),
         z3.And(old.used, z3.Not(r.wrote), same_db(pre, post))),
    ]


def bridge3_enqueue(pre: Db, a: EnqueueAct, post: Db, r: Result) -> list[Case]:
    """BRIDGE-3, enqueue: past scope and argument checks, a taken outbox_id with the same source, kind, tags
    and content is an accepted retry that writes nothing; with another source -- or another kind, tags or
    content -- it is idempotency_conflict (assuming the hash has no collision between the two: the premise
    says so); a new row is due at once (next_attempt_at = created_at = now)."""
    old, new = select(pre.outbox, a.outbox), select(post.outbox, a.outbox)
    passes = z3.And(a.scope, a.arg_err == OK_CODE, old.used)
    no_collision = z3.Implies(old.content_hash == outbox_digest(a.source, a.kind, a.tags, a.content), z3.And(
        old.source == a.source, old.kind == a.kind, old.tags == a.tags, old.content == a.content))
    same_rest = z3.And(old.kind == a.kind, old.tags == a.tags, old.content == a.content)
    conflict = r.code == code(ErrorCode.IDEMPOTENCY_CONFLICT)
    return [
        ("same content: retry", z3.And(passes, old.source == a.source, same_rest),
         z3.And(r.code == OK_CODE, z3.Not(r.wrote))),
        ("another source: conflict", z3.And(passes, old.source != a.source, no_collision), conflict),
        ("other kind, tags or content: conflict", z3.And(passes, old.source == a.source, z3.Not(same_rest),
                                                         no_collision), conflict),
        ("new row due now", z3.And(r.code == OK_CODE, z3.Not(old.used)),
         z3.And(new.used, new.next_at == a.now, new.created == a.now)),
    ]


def bridge3_failure(pre: Db, a: FailureAct, post: Db, r: Result) -> list[Case]:
    """BRIDGE-3, record_bridge_failure on a pending row: next_attempt_at = now + retry_after_ms (the model's
    clock is in microseconds, so now + 1000 * retry_after_ms)."""
    old, new = select(pre.outbox, a.outbox), select(post.outbox, a.outbox)
    return [("failure backoff", z3.And(r.code == OK_CODE, old.used, old.status == B_STATUS["pending"]),
             new.next_at == a.now + US_PER_MS * a.retry)]


def bridge3_mark(pre: Db, a: MarkSentAct, post: Db, r: Result) -> list[Case]:
    """BRIDGE-3, mark_bridge_event_sent on a sent row: with the event id it records, the relays are merged into
    relays_acked and the call writes exactly when that adds one; with another event id it is
    bridge_event_conflict."""
    old, new = select(pre.outbox, a.outbox), select(post.outbox, a.outbox)
    passes = z3.And(a.scope, a.arg_err == OK_CODE, old.used, old.status == B_STATUS["sent"])
    same_id = z3.And(old.has_event_id, old.event_id == a.event_id)
    merged = MERGE(old.relays, a.relays)
    return [
        ("repeat adding a relay", z3.And(passes, same_id, merged != old.relays),
         z3.And(r.code == OK_CODE, r.wrote, new.used, new.relays == merged)),
        ("repeat adding none", z3.And(passes, same_id, merged == old.relays),
         z3.And(r.code == OK_CODE, z3.Not(r.wrote), same_db(pre, post))),
        ("another event id: conflict", z3.And(passes, z3.Not(same_id)),
         r.code == code(ErrorCode.BRIDGE_EVENT_CONFLICT)),
    ]


def prov1(pre: Db, post: Db) -> ZBool:
    """PROV-1."""
    parts: list[ZBool] = []
    for a, b in zip(pre.providers, post.providers, strict=True):
        content = z3.And(a.hash == b.hash, a.kinds == b.kinds, a.price == b.price, a.status == b.status)
        parts.append(z3.Implies(z3.And(a.used, b.used), z3.If(content, b.version == a.version,
                                                              b.version == a.version + 1)))
    return z3.And(parts)


def prov1_publish(pre: Db, a: ProviderAct, r: Result) -> ZBool:
    """PROV-1, the call: an accepted publish writes nothing only when the row already holds its ad (same
    capability hash, kinds, price and status) -- a changed ad is never acknowledged and lost."""
    return z3.And([z3.Implies(z3.And(a.provider == i, r.code == OK_CODE, z3.Not(r.wrote)), z3.And(
        p.used, p.hash == H(a.canon), p.kinds == a.kinds, p.price == a.price, p.status == a.status))
        for i, p in enumerate(pre.providers)])


def open_retry(pre: Db, a: OpenAct, r: Result) -> ZBool:
    """ASSIGN-2, the call: an accepted open writes nothing only as a retry -- the row holds this request
    (hash) and job kind; another request under a taken id is refused (idempotency_conflict)."""
    return z3.And([z3.Implies(z3.And(a.request == i, r.code == OK_CODE, z3.Not(r.wrote)), z3.And(
        x.used, x.hash == H(a.canon), x.job_kind == a.job_kind)) for i, x in enumerate(pre.assignments)])


def update_writes(a: UpdateAct, r: Result) -> ZBool:
    """ASSIGN-1, the call: every accepted update takes its edge (writes); none is acknowledged and lost."""
    return z3.Implies(r.code == OK_CODE, r.wrote)


def upsert_unchanged(pre: Db, a: PresenceAct, r: Result) -> ZBool:
    """PRES-2, the call: an accepted upsert writes nothing only when the row already is what it writes
    (the caller's, this device, node, status and region, seen now, expiring after ttl, its reason)."""
    reason = z3.If(a.status == P_OFFLINE, P_REASON["explicit_offline"], 0)
    return z3.And([z3.Implies(z3.And(a.session == i, r.code == OK_CODE, z3.Not(r.wrote)), z3.And(
        p.used, p.identity == a.caller, p.device == a.device, p.node == a.node, p.status == a.status,
        p.region == a.region, p.last_seen == a.now, p.expires == a.now + a.ttl * 1000, p.reason == reason))
        for i, p in enumerate(pre.presence)])


def pres2_signals(pre: Db, post: Db, d: Delta) -> ZBool:
    """PRES-2, second half: a row that appears or changes status emits exactly one
    presence_signal (carrying the new status); no other row emits one."""
    parts: list[ZBool] = []
    for i in range(N):
        a, b = pre.presence[i], post.presence[i]
        changed = z3.And(b.used, z3.Or(z3.Not(a.used), a.status != b.status))
        parts.append(d.psig[i] == z3.If(changed, 1, 0))
        parts.append(z3.Implies(changed, d.psig_status[i] == b.status))
    return z3.And(parts)


def pres2_sweep(post: Db, now: ZInt) -> ZBool:
    """PRES-2, first half: after a sweep at ``now`` no live row has expires_at <= now."""
    return z3.And([z3.Implies(z3.And(p.used, p.status != P_OFFLINE), p.expires > now) for p in post.presence])


def deliv4(pre: Db, post: Db, r: Result, d: Delta) -> ZBool:
    """DELIV-4: a failed call changes nothing and emits nothing."""
    return z3.Implies(r.code != OK_CODE, z3.And(same_db(pre, post), z3.Not(r.wrote), no_delta(d)))


def epoch_step(pre: Db, post: Db) -> ZBool:
    """L-EPOCH, for every transaction: M never falls and rises by at most one; epoch_floor is kept."""
    return z3.And(max_epoch(pre) <= max_epoch(post), max_epoch(post) <= max_epoch(pre) + 1,
                  post.epoch_floor == pre.epoch_floor)


def epoch_restart(pre: Db, post: Db, undurable: ZInt) -> ZBool:
    """L-EPOCH, for the unclean restart: every stream and epoch_floor move to M(pre) + U + 1."""
    fresh_epoch = max_epoch(pre) + undurable + 1
    return z3.And(post.epoch_floor == fresh_epoch,
                  *[z3.Implies(post.streams[j].exists, post.streams[j].epoch == fresh_epoch) for j in range(S)])


# --- call invariants (append) -------------------------------------------------------------------------------


def _append_checks_pass(pre: Db, a: AppendAct) -> ZBool:
    return z3.And(a.scope, a.granted, a.arg_err == OK_CODE, z3.Not(z3.And(a.has_hash_arg, a.hash_arg != H(a.canon))))


def seq4(pre: Db, a: AppendAct, r: Result, d: Delta) -> ZBool:
    """SEQ-4: an append that writes assigns and returns head + 1 (1 for a new stream); and an append of
    a key the stream does not retain that passes every check (expected_next_seq absent or head + 1)
    does write -- it is not acknowledged without its event."""
    parts: list[ZBool] = []
    for j in range(S):
        ev = pre.events[j]
        retained = z3.Or([z3.And(i < ev.n, e.key == a.key) for i, e in enumerate(ev.slots)])
        fresh_ok = z3.And(a.stream == j, _append_checks_pass(pre, a), z3.Not(retained),
                          z3.Implies(a.has_expected, a.expected == vhead(pre, j) + 1))
        parts.append(z3.Implies(fresh_ok, z3.And(r.code == OK_CODE, r.wrote)))
        parts.append(z3.Implies(z3.And(a.stream == j, r.wrote), z3.And(
            r.has_ret, r.ret == vhead(pre, j) + 1, d.ins, d.ins_ev.seq == r.ret,
            z3.Implies(z3.Not(pre.streams[j].exists), r.ret == 1))))
    return z3.And(parts)


def idem2(pre: Db, a: AppendAct, r: Result) -> ZBool:
    """IDEM-2: a retained key with the same hash succeeds, returns the original seq, writes nothing,
    whatever expected_next_seq says."""
    parts: list[ZBool] = []
    for j in range(S):
        ev = pre.events[j]
        for i, e in enumerate(ev.slots):
            hit = z3.And(a.stream == j, i < ev.n, e.key == a.key, e.hash == H(a.canon), _append_checks_pass(pre, a))
            parts.append(z3.Implies(hit, z3.And(r.code == OK_CODE, r.has_ret, r.ret == e.seq, z3.Not(r.wrote))))
    return z3.And(parts)


def idem3(pre: Db, a: AppendAct, r: Result) -> ZBool:
    """IDEM-3: a retained key with a different hash is always idempotency_conflict."""
    parts: list[ZBool] = []
    conflict = ErrorCode.IDEMPOTENCY_CONFLICT
    for j in range(S):
        ev = pre.events[j]
        for i, e in enumerate(ev.slots):
            hit = z3.And(a.stream == j, i < ev.n, e.key == a.key, e.hash != H(a.canon), _append_checks_pass(pre, a))
            parts.append(z3.Implies(hit, r.code == code(conflict)))
    return z3.And(parts)


def auth2(scope: ZBool, granted: ZBool | None, r: Result) -> ZBool:
    """AUTH-2: no scope -> missing_scope; scope but no grant -> forbidden_stream (first checks)."""
    parts = [z3.Implies(z3.Not(scope), r.code == MS)]
    if granted is not None:
        parts.append(z3.Implies(z3.And(scope, z3.Not(granted)), r.code == FS))
    return z3.And(parts)
