"""The server side of the delivery contract (DESIGN §3), as pure transitions.

Every function here takes values and returns values: the state it read, and the new state and the
messages it produces.  Nothing is mutated, nothing waits, nothing is queued for later.  The two
pieces of state are

:class:`Log`
    the committed database, its offset, the durable offset, the commits past it (what a crash
    loses) and the ledger of every event ever committed;
:class:`Subscriber`
    what delivery knows of one connection: its claims, whether it reads confirmed, its query sets.

and the rules, in the order a reader meets them on the wire:

Subscriptions (``subscribe`` / ``unsubscribe``)
    the ``sync.subscribe`` scope, then every query of the set is parsed, checked for the resume form,
    against the stream grants and for staleness -- each check over every query before the next, and
    one bad query fails the set; then the snapshot is taken from ``log.db`` and the set registered
    *in the same transition* -- nothing can commit in between, which is the atomic
    snapshot+registration of the contract.  Reusing an active query set id is a protocol close.
Resume (``resume_form_error``, ``stale_error``)
    a ``sync_event`` query that bounds ``seq`` from below is a resume; it must pin ``stream_id`` and
    ``epoch``, and is refused with ``stale_cursor`` when :func:`spec.resume.stale_reasons` says so
    (an upper bound ``seq <= B`` limits the replay held against the budget to ``min(head, B) - W``).
Calls (``answer``) and fanout (``commit``, ``fanout``)
    a failed or no-op call is answered to its caller alone, tagged with the offset of the state it
    read; a call that writes commits at ``committed + 1``: its caller gets a ``ReducerResult``
    carrying its own matching rows, every other subscriber with matching rows one
    ``TransactionUpdate`` (``updates_for``: row-filtered, grouped by query set, then table).
Confirmed reads (``released``)
    a message is released to a confirmed-read connection only once its offset is durable; order is
    never changed.
The slow-consumer bound (``over_bound``)
    a connection whose outbound queue grows past the bound is closed as ``slow_consumer``.
Presence on close (``upserted``, ``mark_disconnected``)
    a close marks ``disconnected`` only the sessions whose last upsert came from that connection.
Durability (``can_commit``, ``advance_durable``, ``lose_suffix``, ``recover``)
    the server runs at most ``max_undurable`` transactions ahead of its durable offset; a restart
    keeps the durable prefix; an unclean one then bumps epochs (:func:`spec.reducers.unclean_restart`).

How these compose -- per-connection outbound queues, closing a connection while a commit fans out,
the queue of sessions waiting to be marked until the durability bound allows it -- is engine
mechanics, and lives in the harness (:class:`spec.harness.Server`), not here (ADR-0015).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import icontract

from spec import query as q
from spec.auth import Claims, can_read, has_scope, stream_granted
from spec.errors import ErrorCode, SyncError
from spec.messages import (
    CLOSE_PROTOCOL,
    Outbound,
    QuerySetUpdate,
    ReducerErr,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeApplied,
)
from spec.policy import Policy
from spec.reducers import Err, Ok, Outcome, disconnect_sessions, unclean_restart, virtual_stream
from spec.resume import continuation_details, stale_reasons
from spec.schema import TABLE_BY_NAME
from spec.state import DbState, Delta
from spec.values import Identity, Row, SyncEvent, SyncStream

# --- state ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Commit:
    offset: int
    state: DbState
    delta: Delta


@dataclass(frozen=True, slots=True)
class Log:
    """The committed state and its durability: what a crash keeps and what it loses."""

    db: DbState
    durable_db: DbState  # the state at the durable offset
    committed: int = 0
    durable: int = 0
    history: tuple[Commit, ...] = ()  # commits past the durable offset
    ledger: tuple[SyncEvent, ...] = ()  # every event ever committed (not subject to compaction)


def start(db: DbState | None = None) -> Log:
    """A server's log before its first transaction: ``db`` (empty by default), durable at offset 0."""
    db = DbState() if db is None else db
    return Log(db, db)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """What delivery knows of one connection."""

    claims: Claims
    confirmed: bool
    query_sets: Mapping[int, tuple[q.Query, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Close:
    """The connection must be closed with this reason (a protocol violation)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Caller:
    """The connection and request a committing call answers."""

    conn_id: int
    request_id: int
    ret: int | None


Sends = tuple[tuple[int, Outbound], ...]
"""Messages for connections, in the order they are queued: (connection id, tagged message)."""


# --- resume: the form and the stale check -------------------------------------------------------------

@icontract.ensure(lambda query, result: result is None or (
    result.code is ErrorCode.INVALID_QUERY and q.RESUME_QUERY_FORM in result.details["message"]),
    "STALE-3 (the refusal shows how to write the resume query)")
@icontract.ensure(lambda query, result: (result is None) == (
    query.table != "sync_event" or q.lower_bound_exclusive(query, "seq") is None
    or (isinstance(q.pinned_value(query, "stream_id"), str) and isinstance(q.pinned_value(query, "epoch"), int))),
    "STALE-3 (refused exactly when it bounds seq from below without pinning stream_id and epoch)")
def resume_form_error(query: q.Query) -> SyncError | None:
    """A ``sync_event`` subscription that bounds ``seq`` from below is a resume: it is checked for
    staleness, and the stale check needs the stream and the epoch the watermark belongs to.  Without
    ``epoch =``, a cursor from a lost suffix would become valid again in a later epoch and the client
    would keep events that no longer exist; without ``stream_id =`` there is no stream to check.
    So such a query is refused (ADR-0003, decision 3)."""
    if query.table != "sync_event" or q.lower_bound_exclusive(query, "seq") is None:
        return None
    missing = [c for c in ("stream_id", "epoch") if q.pinned_value(query, c) is None]
    if not missing:
        return None
    return SyncError(ErrorCode.INVALID_QUERY, {
        "query": query.text[:200],
        "message": f"a sync_event subscription that bounds seq from below must pin stream_id and epoch with = "
                   f"(missing: {', '.join(missing)}); resume with {q.RESUME_QUERY_FORM}, E and W from the "
                   f"checkpoint (or leave seq unbounded to read the whole stream)"})


@icontract.ensure(lambda query, result: result is None or (
    result.code is ErrorCode.STALE_CURSOR and bool(result.details["reasons"])
    and result.details["stream_id"] == q.pinned_value(query, "stream_id")
    and result.details["requested_watermark"] == q.resume_watermark(query)),
    "STALE-1 (a stale_cursor names the resume's stream and watermark and at least one reason)")
def stale_error(db: DbState, policy: Policy, query: q.Query) -> SyncError | None:
    """The stale-cursor check of one subscription query (only sync_event queries that pin a
    stream with ``=`` and bound ``seq`` from below are resume queries)."""
    if query.table != "sync_event":
        return None
    stream_id = q.pinned_value(query, "stream_id")
    watermark = q.resume_watermark(query)
    if not isinstance(stream_id, str) or watermark is None:
        return None
    requested_epoch = q.pinned_value(query, "epoch")
    req_epoch = requested_epoch if isinstance(requested_epoch, int) else None
    epoch, head, floor = virtual_stream(db, stream_id)
    budget = policy.class_for(stream_id).replay_budget
    upper = q.upper_bound_inclusive(query, "seq")  # a page (seq <= B) replays up to min(head, B): ADR-0042
    reasons = stale_reasons(epoch, head, floor, budget, req_epoch, watermark, upper)
    if not reasons:
        return None
    return SyncError(ErrorCode.STALE_CURSOR, {
        **continuation_details(db.find(SyncStream, lambda r: r.stream_id == stream_id)),
        "epoch": epoch, "floor_seq": floor, "head_seq": head, "reasons": list(reasons),
        "replay_budget": budget, "requested_epoch": req_epoch, "requested_watermark": watermark,
        "stream_id": stream_id})


# --- subscriptions --------------------------------------------------------------------------------------

def authorize_query(claims: Claims, query: q.Query) -> SyncError | None:
    """A query that pins a stream the claims do not grant is refused (``forbidden_stream``, no
    details: nothing leaks); a query that pins none is row-filtered instead."""
    table = TABLE_BY_NAME[query.table]
    if table.visibility.value == "stream_grant":
        stream_id = q.pinned_value(query, "stream_id")
        if isinstance(stream_id, str) and not stream_granted(claims, stream_id):
            return SyncError(ErrorCode.FORBIDDEN_STREAM, {})
    return None


def visible(claims: Claims, query: q.Query, rows: Iterable[Row]) -> list[Row]:
    """The rows the query matches that the claims may read (the row filter)."""
    return [r for r in rows if q.matches(query, r) and can_read(claims, r)]


def snapshot(db: DbState, claims: Claims, queries: Iterable[q.Query]) -> tuple[TableRows, ...]:
    """The rows of a query set in ``db``, per table in first-query order, each row once; event
    tables have no rows to snapshot."""
    out: dict[str, list[Row]] = {}
    for query in queries:
        if TABLE_BY_NAME[query.table].event:
            continue  # event rows are never in a snapshot
        bucket = out.setdefault(query.table, [])
        for r in visible(claims, query, db.rows(query.table)):
            if r not in bucket:
                bucket.append(r)
    return tuple(TableRows(t, tuple(rs)) for t, rs in out.items() if rs)


def subscribe(log: Log, policy: Policy, sub: Subscriber, msg: Subscribe) -> tuple[Subscriber, Outbound | Close]:
    """Check the set (scope, parse, resume form, grants, staleness -- each over every query before the
    next), then snapshot ``log.db`` and register the set: the answer is tagged ``log.committed``."""
    if msg.query_set_id in sub.query_sets:
        return sub, Close(f"{CLOSE_PROTOCOL}: query set {msg.query_set_id} is already active")
    try:
        if not has_scope(sub.claims, "sync.subscribe"):
            raise SyncError(ErrorCode.MISSING_SCOPE, {"scope": "sync.subscribe"})
        queries: list[q.Query] = []
        for text in msg.queries:
            queries.extend(q.parse(text))
        for query in queries:
            refused = resume_form_error(query)
            if refused:
                raise refused
        for query in queries:
            denied = authorize_query(sub.claims, query)
            if denied:
                raise denied
        for query in queries:
            stale = stale_error(log.db, policy, query)
            if stale:
                raise stale
    except SyncError as err:
        return sub, Outbound(log.committed, SubscriptionError(msg.request_id, msg.query_set_id, err.render()))
    rows = snapshot(log.db, sub.claims, queries)
    registered = replace(sub, query_sets={**sub.query_sets, msg.query_set_id: tuple(queries)})
    return registered, Outbound(log.committed, SubscribeApplied(msg.request_id, msg.query_set_id, rows))


def unsubscribe(log: Log, sub: Subscriber, msg: Unsubscribe) -> tuple[Subscriber, Outbound]:
    """Drop an active query set (with its rows, when asked); an unknown one is an ``invalid_query``."""
    if msg.query_set_id not in sub.query_sets:
        return sub, Outbound(log.committed, SubscriptionError(
            msg.request_id, msg.query_set_id,
            SyncError(ErrorCode.INVALID_QUERY, {"message": "unknown query set",
                                                "query_set_id": msg.query_set_id}).render()))
    dropped = snapshot(log.db, sub.claims, sub.query_sets[msg.query_set_id]) if msg.send_dropped else None
    rest = {k: v for k, v in sub.query_sets.items() if k != msg.query_set_id}
    return replace(sub, query_sets=rest), Outbound(log.committed,
                                                   UnsubscribeApplied(msg.request_id, msg.query_set_id, dropped))


# --- calls and fanout ---------------------------------------------------------------------------------

def updates_for(sub: Subscriber, delta: Delta) -> tuple[QuerySetUpdate, ...]:
    """One subscriber's share of a transaction: per query set (in id order), per table, the
    visible inserts and deletes, each row once; event-table rows flagged as such."""
    out = []
    for qs_id in sorted(sub.query_sets):
        tables: dict[str, tuple[list[Row], list[Row]]] = {}
        for query in sub.query_sets[qs_id]:
            td = delta.for_table(query.table)
            ins, dels = tables.setdefault(query.table, ([], []))
            for r in visible(sub.claims, query, td.inserts):
                if r not in ins:
                    ins.append(r)
            for r in visible(sub.claims, query, td.deletes):
                if r not in dels:
                    dels.append(r)
        parts = tuple(TableRows(t, tuple(i), tuple(d), TABLE_BY_NAME[t].event)
                      for t, (i, d) in tables.items() if i or d)
        if parts:
            out.append(QuerySetUpdate(qs_id, parts))
    return tuple(out)


def fanout(subs: Mapping[int, Subscriber], offset: int, delta: Delta, caller: Caller | None) -> Sends:
    """Who hears of the transaction at ``offset``: its caller by its ``ReducerResult`` (always, with
    its own matching rows), every other subscriber with matching rows by one ``TransactionUpdate``."""
    sends: list[tuple[int, Outbound]] = []
    for conn_id, sub in subs.items():
        updates = updates_for(sub, delta)
        if caller is not None and conn_id == caller.conn_id:
            sends.append((conn_id, Outbound(offset, ReducerResult(caller.request_id, offset,
                                                                  ReducerOk(caller.ret, updates)))))
        elif updates:
            sends.append((conn_id, Outbound(offset, TransactionUpdate(offset, updates))))
    return tuple(sends)


def commit(log: Log, subs: Mapping[int, Subscriber], state: DbState, delta: Delta,
           caller: Caller | None) -> tuple[Log, Sends]:
    """Commit a transaction that wrote at ``committed + 1`` and fan it out."""
    offset = log.committed + 1
    events = tuple(r for r in delta.for_table("sync_event").inserts if isinstance(r, SyncEvent))
    after = replace(log, db=state, committed=offset, history=(*log.history, Commit(offset, state, delta)),
                    ledger=log.ledger + events)
    return after, fanout(subs, offset, delta, caller)


def answer(log: Log, subs: Mapping[int, Subscriber], conn_id: int, request_id: int,
           outcome: Outcome) -> tuple[Log, Sends]:
    """A connection's reducer call, once run: a failure or a no-op is answered to the caller alone,
    tagged with the offset of the state it read; a write commits."""
    if isinstance(outcome, Err):
        return log, ((conn_id, Outbound(log.committed,
                                        ReducerResult(request_id, log.committed, ReducerErr(outcome.error.render())))),)
    if outcome.noop:
        return log, ((conn_id, Outbound(log.committed,
                                        ReducerResult(request_id, log.committed, ReducerOk(outcome.ret, ())))),)
    return commit(log, subs, outcome.state, outcome.delta, Caller(conn_id, request_id, outcome.ret))


def system_tx(log: Log, subs: Mapping[int, Subscriber], outcome: Ok) -> tuple[Log, Sends]:
    """A server-initiated transaction (presence sweep, compaction, a detached call): no caller."""
    if outcome.noop:
        return log, ()
    return commit(log, subs, outcome.state, outcome.delta, None)


# --- confirmed reads and the slow-consumer bound ---------------------------------------------------------

@icontract.ensure(lambda confirmed, offset, durable, result: not result or not confirmed or offset <= durable,
                  "CONF-1 (a confirmed-read connection is released only messages of durable offsets)")
def released(confirmed: bool, offset: int, durable: int) -> bool:
    """May the message at the front of a queue, derived from ``offset``, go out?"""
    return not confirmed or offset <= durable


def over_bound(queued: int, max_queue: int) -> bool:
    """A connection with ``queued`` messages waiting is past the bound: it is closed as a slow
    consumer (and resumes from its watermark)."""
    return queued > max_queue


# --- presence marks on close ------------------------------------------------------------------------------

def upserted(owners: Mapping[str, int], session: str, conn_id: int | None) -> dict[str, int]:
    """After an accepted ``upsert_presence`` (a no-op included), the session belongs to the connection
    that made it; one made with no connection (the HTTP call route) belongs to none, so no close
    marks it (ADR-0003 decision 4)."""
    if conn_id is None:
        return {s: c for s, c in owners.items() if s != session}
    return {**owners, session: conn_id}


def owned_by(owners: Mapping[str, int], conn_id: int) -> frozenset[str]:
    return frozenset(s for s, c in owners.items() if c == conn_id)


def mark_disconnected(db: DbState, now: int, owners: Mapping[str, int], identity: Identity, conn_id: int,
                      sessions: frozenset[str]) -> tuple[dict[str, int], Ok]:
    """Mark ``disconnected`` those of a closed connection's sessions it still owns (a session
    re-upserted on a newer connection since belongs to that one); they are owned by none after."""
    still = frozenset(s for s in sessions if owners.get(s) == conn_id)
    rest = {s: c for s, c in owners.items() if s not in still}
    return rest, disconnect_sessions(db, now, identity, still)


# --- durability ---------------------------------------------------------------------------------------

def can_commit(log: Log, max_undurable: int) -> bool:
    return log.committed - log.durable < max_undurable


@icontract.ensure(lambda log, result: log.durable <= result.durable <= result.committed,
                  "the durable offset never decreases and never passes the committed offset")
@icontract.ensure(lambda result: all(c.offset > result.durable for c in result.history),
                  "the rollback history holds exactly the commits past the durable offset")
def advance_durable(log: Log, to: int) -> Log:
    to = min(max(to, log.durable), log.committed)
    durable_db = log.durable_db
    for c in log.history:
        if c.offset <= to:
            durable_db = c.state
    return replace(log, durable=to, durable_db=durable_db, history=tuple(c for c in log.history if c.offset > to))


def lose_suffix(log: Log) -> Log:
    """A restart keeps the durable prefix only."""
    return replace(
        log,
        db=log.durable_db,
        committed=log.durable,
        history=(),
        ledger=tuple(e for e in log.ledger if e.tx_offset <= log.durable))


def _max_epoch(db: DbState) -> int:
    return max([db.epoch_floor, *(s.epoch for s in db.of_type(SyncStream))])


@icontract.ensure(lambda log, result: result.db.epoch_floor > _max_epoch(log.db)
                  and all(s.epoch == result.db.epoch_floor for s in result.db.of_type(SyncStream)),
                  "DUR-2 (recovery moves every stream, and every stream created later, above every epoch of the"
                  " lost committed state, i.e. above every epoch that can have been handed out)")
@icontract.ensure(lambda result: result.durable == result.committed and result.durable_db is result.db,
                  "the recovery transaction is durable before anyone connects")
def recover(log: Log, now: int, max_undurable: int) -> Log:
    """An unclean restart: lose everything past the durable offset, then recover.  Without a
    clean-shutdown marker the server cannot know what was lost, so it bumps epochs (ADR-0001) in a
    recovery transaction that is made durable before anyone connects.  Each new epoch continues the
    old one up to the durable head (ADR-0003): the ledger's events of the old epoch are the new
    epoch's too."""
    kept = lose_suffix(log)
    bumped = unclean_restart(kept.db, now, max_undurable)
    moved = {(s.stream_id, s.continues_epoch): s.epoch for s in bumped.of_type(SyncStream)}
    return replace(kept, db=bumped, durable_db=bumped, committed=kept.committed + 1, durable=kept.committed + 1,
                   ledger=tuple(replace(e, epoch=moved.get((e.stream_id, e.epoch), e.epoch)) for e in kept.ledger))
