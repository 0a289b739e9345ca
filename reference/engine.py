"""The reference engine: the sync module's server core, sans-I/O.

One :class:`Engine` runs the module single-writer: every reducer call is a serializable
transaction over the indexed :class:`~reference.db.Db`, committed at the next ``tx_offset`` or
rolled back; event-table rows exist only in the committed transaction's delta.  Each commit
yields a :class:`~reference.log.TxRecord` for durability (``pending_records``); the durable
offset advances only when the store says a record is on disk (:meth:`Engine.advance_durable`).

Subscriptions are evaluated incrementally.  Every registered query is filed under its table and
its *shape* (``spec.query.shape_key``); per transaction, each shape of each touched table is
matched against that table's inserts and deletes once, however many clients share it, and the
matches are then row-filtered per client by its claims (``spec.auth.can_read``).  Per-client
updates are grouped by query set then table.  The caller of a reducer gets its ``ReducerResult``
carrying its own rows; others get one ``TransactionUpdate``; clients with nothing matching get
nothing.  A client whose every query is one shape under one query set id is served from a plan
kept per shape: its group's update goes straight onto its queue (ADR-0026).

Outbound messages carry the offset of the state they derive from; a confirmed-read connection
releases them in order once that offset is durable.  A queue past ``max_queue`` disconnects its
client with ``slow_consumer``.  The engine never runs more than ``max_undurable`` transactions
ahead of the durable offset (:meth:`can_commit`); the I/O layer waits on the store when it is.

A transaction is atomic end to end.  Its commit record is built and hashed *before* it takes an
offset; anything that raises after the reducer returned (record building, hashing, a bug in a
reducer) rolls the transaction back, leaves ``committed``, the hash chain and every index as they
were, and answers the caller ``InternalError`` (:class:`InternalError` for callers without a
connection).  ``on_internal_error`` tells the I/O layer, which logs it; the engine goes on serving.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import icontract

from reference import reducers as r
from reference.db import PK_TABLES, Db, Txn, count_prefix
from reference.eventlog import RetainedRows, StreamLog
from reference.log import GENESIS, TxRecord, delta_parts, delta_text, make_record, record_floors, record_hash
from reference.parsecache import ParseCache
from spec import contracts
from spec import query as q
from spec.auth import Claims, can_read, filter_key, stream_granted
from spec.compat import CompatWindow, negotiate
from spec.errors import ErrorCode, LocalProtocolError, SyncError
from spec.invariants import check_state
from spec.messages import (
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    SLOW_CONSUMER_REASON,
    CallReducer,
    ClientMessage,
    OneOffQueryResult,
    Outbound,
    QuerySetUpdate,
    ReducerErr,
    ReducerOk,
    ReducerResult,
    ServerMessage,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeApplied,
)
from spec.policy import DEFAULT_POLICY, Policy
from spec.resume import continuation_details, stale_reasons
from spec.schema import BRIDGE_SCOPES, PERSISTENT_TABLES, REDUCER_BY_NAME, TABLE_BY_NAME, Visibility
from spec.state import DbState
from spec.values import STRING, OptionT, Row, SatsType, SyncStream, value_has_type

# The stale-cursor rule with STALE-1's contracts (its oracle, second opinion and reason order) on the
# run-time switch of the other hot-path contracts (spec.contracts.hot): checked in the test suite
# and with ``--contracts``, the bare rule in a default server (the contracts were ~60 µs of the
# ~550 µs a small replay cost the server: docs/performance.md, ADR-0024).
_stale_reasons = contracts.hot(stale_reasons)

# The resume fast path (Engine._resume_rows) asks stream_granted of the pinned stream instead of
# can_read of a built row: the same answer only while sync_event rows are filtered by their stream.
if TABLE_BY_NAME["sync_event"].visibility is not Visibility.STREAM_GRANT:  # pragma: no cover
    raise ImportError("Engine._resume_rows assumes sync_event rows are filtered by stream grant")


def type_check(t: SatsType) -> Callable[[object], bool]:
    """``value_has_type(·, t)`` as a function built once per type: ``String`` and ``Option<String>``
    (most reducer arguments) are tested inline, every other type by ``value_has_type`` itself."""
    if t == STRING:
        return lambda v: isinstance(v, str)
    if isinstance(t, OptionT) and t.inner == STRING:
        return lambda v: v is None or isinstance(v, str)
    return lambda v: value_has_type(v, t)


@functools.cache
def _arg_checks(reducer: str) -> tuple[tuple[str, Callable[[object], bool]], ...]:
    """Each parameter of a known reducer: its name and its type check."""
    return tuple((col.name, type_check(col.type)) for col in REDUCER_BY_NAME[reducer].args)


def _model_view(db: Db) -> DbState:
    """The engine's tables as a model state, so the model's invariant predicates can check them
    (scans everything: used only by contracts behind icontract.SLOW)."""
    tables: dict[str, tuple[Row, ...]] = {t.name: () for t in PERSISTENT_TABLES}
    for name in tables:
        tables[name] = tuple(db.rows(name))
    return DbState(tables, db.epoch_floor, db.version_floor)


def _indexes_consistent(db: Db) -> bool:
    for sid, log in db.logs.items():
        events = list(log.events)
        if [(e.stream_id, e.seq) for e in events] != [(sid, s) for s in range(log.floor, log.floor + len(events))]:
            return False
        keys = list(log.by_key)  # read from the key index itself, each entry once
        if len(keys) != len(events) or log.by_key != {e.idempotency_key: e.seq for e in events}:
            return False
    return all(PK_TABLES[t].key_of(row) == key for t, index in db.pk.items() for key, row in index.items()) and \
        db.secondary_indexes_agree()


@dataclass
class Connection:
    conn_id: int
    claims: Claims
    confirmed: bool
    query_sets: dict[int, tuple[q.Query, ...]] = field(default_factory=dict)
    outbound: deque[Outbound] = field(default_factory=deque)
    sizes: deque[int] = field(default_factory=deque)  # estimated encoded bytes of each queued message
    outbound_bytes: int = 0  # their sum
    closed_reason: str | None = None
    # a one-off read in progress (Engine.begin_read): the offset it reads; messages queued at later
    # offsets wait behind its answer, which goes where the read was taken (ADR-0038)
    reading: int | None = None
    # a Subscribe's snapshot or an Unsubscribe's dropped rows taken (Engine.handle, Engine.slice_rows):
    # also at ``reading``; answered by Engine.answer_snapshot (ADR-0041)
    snapshot: Snapshot | None = None

    @property
    def query_count(self) -> int:
        return sum(len(queries) for queries in self.query_sets.values())


def _pin(query: q.Query) -> str | None:
    """The stream a query is pinned to (``stream_id = 'S'``), if its table has that column."""
    if TABLE_BY_NAME[query.table].column_type("stream_id") is None:
        return None
    sid = q.pinned_value(query, "stream_id")
    return sid if isinstance(sid, str) else None


def _equalities_first(query: q.Query) -> q.Query:
    """The same conjunction with its ``=`` conjuncts first: cheap, selective tests run first."""
    where = tuple(sorted(query.where, key=lambda c: c.op is not q.Op.EQ))
    return q.Query(query.table, where, query.text)


_PK_COLUMN = {name: t.primary_key[0] for name, t in PK_TABLES.items() if t.primary_key and len(t.primary_key) == 1}
IDLE_SHAPES = 256  # shapes kept after their last subscriber left, to be taken back (Engine.idle_shapes)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class _Grants:
    """A caller's ``oa_sync_streams`` grants, indexed: whether they cover a stream id
    (:func:`spec.auth.stream_granted`) in one set lookup and one binary search instead of one test
    per grant.  The row filter asks it about every stream-granted row a read examines and the
    prefix walk about every stream id, and a 16 KiB token holds ~2,400 grants: one test per
    grant made a read cost grants x rows examined (docs/performance.md, "Grants per row")."""

    exact: tuple[str, ...]  # the exact ids, each once, in grant order
    exact_set: frozenset[str]
    prefixes: tuple[str, ...]  # what ``prefix*`` grants' ids start with, sorted, none a prefix of another
    everything: bool  # a ``*`` grant (the prefix "")
    outside: tuple[str, ...]  # the exact ids no prefix covers, each once, in grant order

    def covers(self, stream_id: str) -> bool:
        if self.everything or stream_id in self.exact_set:
            return True
        # Of prefixes none of which is a prefix of another, only the greatest one <= stream_id can
        # be a prefix of it: every string between a prefix p of stream_id and stream_id starts with p
        prefixes = self.prefixes
        i = bisect.bisect_right(prefixes, stream_id)
        return i > 0 and stream_id.startswith(prefixes[i - 1])


# Every index in use, one per distinct grant list: a subscriber group's plan holds its group's
# (Group.readable), so plans of many shapes share one index per grant list instead of building
# their own (~150 KB for the 2,972 ids a 16 KiB token holds); the last 64 asked for are also kept.
_GRANT_INDEXES: weakref.WeakValueDictionary[tuple[str, ...], _Grants] = weakref.WeakValueDictionary()


_LAST_GRANTS: list[Any] = [None, None]  # the last grant list asked for (that very tuple) and its index


def _grants(streams: tuple[str, ...]) -> _Grants:
    """The index of ``streams``; asked for that very tuple again (each query of one request), at
    once -- a cache lookup hashes the whole grant list."""
    if streams is _LAST_GRANTS[0]:
        index: _Grants = _LAST_GRANTS[1]
        return index
    index = _cached_grants(streams)
    _LAST_GRANTS[:] = [streams, index]
    return index


@functools.lru_cache(maxsize=64)
def _cached_grants(streams: tuple[str, ...]) -> _Grants:
    index = _GRANT_INDEXES.get(streams)
    if index is None:
        index = _GRANT_INDEXES[streams] = _index_grants(streams)
    return index


def _index_grants(streams: tuple[str, ...]) -> _Grants:
    exact: dict[str, None] = {}
    found: set[str] = set()
    for grant in map(str, streams):  # (exact strs)
        if grant.endswith("*"):
            found.add(grant[:-1])
        else:
            exact[grant] = None
    prefixes: list[str] = []
    for p in sorted(found):  # the strings that start with p follow p at once: keep the shortest
        if not prefixes or not p.startswith(prefixes[-1]):
            prefixes.append(p)
    def under_prefix(sid: str) -> bool:
        i = bisect.bisect_right(prefixes, sid)
        return i > 0 and sid.startswith(prefixes[i - 1])

    return _Grants(tuple(exact), frozenset(exact), tuple(prefixes), "" in found,
                   tuple(sid for sid in exact if not under_prefix(sid)))


def _in_range(ids: list[str], prefix: str) -> list[str]:
    """The ids of sorted ``ids`` that start with ``prefix``."""
    lo, hi = count_prefix(ids, prefix)
    return ids[lo:hi]


def _row_filter(claims: Claims, table: str) -> Callable[[Row], bool]:
    """:func:`spec.auth.can_read` of ``claims`` for rows of ``table``; a stream-granted table's rows
    through the caller's indexed grants (:class:`_Grants`): the same answer, since such a row is
    readable exactly when its stream is granted."""
    if TABLE_BY_NAME[table].visibility is Visibility.STREAM_GRANT:
        covers = _grants(claims.streams).covers
        return lambda row: covers(row.stream_id)  # type: ignore[union-attr]
    return functools.partial(can_read, claims)


# a group's visible rows of one shape's match: (table, inserts, deletes)
Seen = tuple[str, tuple[Row, ...], tuple[Row, ...]]
# the fast path's connections of a group, per query set id
Solo = tuple[tuple[int, tuple[Connection, ...]], ...]


@dataclass(frozen=True)
class Group:
    """A shape's subscribers whose claims agree on the shape table's filter key (they see the same
    rows): ``claims``, one of theirs; ``keys``, the (conn, qs) pairs the general path serves;
    ``solo``, per query set id, the connections whose every query is this shape under that one
    query set id -- the fanout's fast path (ADR-0026)."""

    claims: Claims
    keys: tuple[tuple[int, int], ...]
    solo: Solo
    readable: Callable[[Row], bool]  # the row filter of ``claims`` (_row_filter: grants indexed once per plan)


@dataclass(frozen=True)
class Plan:
    """A shape's subscribers as the fanout serves them (:meth:`Engine._plan`): its groups, and the
    ids of every connection some group serves on the fast path (the caller of a reducer is served
    on the general path: its updates go into its ``ReducerResult``)."""

    groups: tuple[Group, ...]
    solo_ids: frozenset[int]


@dataclass
class Shape:
    query: q.Query
    subscribers: dict[tuple[int, int], int] = field(default_factory=dict)  # (conn, qs) -> refcount
    pin: str | None = None  # the stream it is pinned to: only that stream's rows are matched
    probe: q.Query | None = None  # the query with its equalities first, for matching
    plan: Plan | None = field(default=None, repr=False)  # the fanout's plan, valid while planned == membership
    planned: int = field(default=-1, repr=False)
    # Bumped whenever any shape's subscribers change (``groups`` set to None): a connection's fast
    # path in one shape depends on its subscriptions to every other shape, so a change anywhere
    # invalidates every plan (rebuilt at the next fanout that reaches the shape).
    membership: ClassVar[int] = 0
    _groups: dict[Hashable, list[tuple[int, int]]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.pin = _pin(self.query)
        self.probe = _equalities_first(self.query)

    @property
    def groups(self) -> dict[Hashable, list[tuple[int, int]]] | None:
        """The subscribers grouped by the filter key of their claims for the shape's table (the
        fanout's row filter runs once per group); None: to be rebuilt, as after every change of
        subscribers -- which also invalidates every shape's :class:`Plan` (``membership``)."""
        return self._groups

    @groups.setter
    def groups(self, value: dict[Hashable, list[tuple[int, int]]] | None) -> None:
        if value is None:
            self.plan = None
            Shape.membership += 1
        self._groups = value


class InternalError(Exception):
    """A transaction failed for a reason that is not the caller's (a bug, text that cannot be
    recorded): it was rolled back and nothing was written.  ``message`` is safe to send."""

    def __init__(self, name: str, cause: BaseException) -> None:
        self.name = name
        self.cause = cause
        self.message = safe_text(f"internal error in {name}: {type(cause).__name__}: {cause}; "
                                 "the transaction was rolled back and nothing was written")
        super().__init__(self.message)


@dataclass(slots=True)
class Scan:
    """The rows one request's queries have examined so far (a ``Subscribe``'s set, one-off query,
    dropped rows, or all the statements of one ``/sql``), against ``Engine.max_scan_rows``."""

    rows: int = 0


ALL_ROWS = 1 << 62  # a Read step that takes every row at once (Engine.query)


class Read:
    """One one-off read (a ``OneOffQuery``, one ``/sql`` statement) of the state at the moment
    :meth:`Engine.read` took it (``offset``: the committed offset then).  Its candidate rows were
    fixed then, without building any: a ``sync_event`` stream's as a frozen view of its log
    (:meth:`StreamLog.frozen`: later appends, retention drops and compaction do not show), any
    other table's as references to its rows (immutable values).  So the rows can be built and
    matched a slice at a time (:meth:`step`), with other requests and commits in between, and the
    answer is still exactly that one state (ADR-0038)."""

    __slots__ = ("_match", "_rows", "_todo", "done", "event", "offset", "table")

    def __init__(self, table: str, offset: int, candidates: Iterable[Row], match: Callable[[Row], bool] | None) -> None:
        """``match`` None: every candidate matches and ``candidates`` is the answer as it is (a
        frozen stream: no row is built here; the wire encodes it from the column store)."""
        self.table = table
        self.offset = offset
        self.event = TABLE_BY_NAME[table].event
        self._todo: Iterator[Row] = iter(())
        self._rows: Sequence[Row] | list[Row] = []
        if match is None:
            assert isinstance(candidates, Sequence)
            self._rows = candidates
        else:
            self._todo = iter(candidates)
        self._match = match
        self.done = match is None

    def step(self, most: int) -> bool:
        """Build and match up to ``most`` more candidate rows; True once every one is matched."""
        if most < 1:
            raise LocalProtocolError(f"a read step takes at least one row, not {most}")
        if not self.done:
            match, rows, seen = self._match, self._rows, 0
            assert match is not None and isinstance(rows, list)
            keep = rows.append
            for row in itertools.islice(self._todo, most):
                seen += 1
                if match(row):
                    keep(row)
            self.done = seen < most
        return self.done

    def result(self) -> TableRows:
        """The matching rows, in the candidates' order; only once :meth:`step` has said done.  The
        same row sequence at every call (made once), so a caller's re-packed table can be checked to
        carry these very rows (:meth:`Engine.answer_read`)."""
        if not self.done:
            raise LocalProtocolError("the read is not finished: step it until it says done")
        rows = self._rows
        if isinstance(rows, list):
            rows = self._rows = tuple(rows)
        return TableRows(self.table, rows, (), self.event)  # type: ignore[arg-type]


class Snapshot:
    """A ``Subscribe``'s snapshot or an ``Unsubscribe``'s dropped rows, taken at one state
    (``offset``) by :meth:`Engine._take_snapshot`: every check made and every query's candidate
    rows fixed then, as :class:`Read` fixes a one-off's (frozen stream views, references to other
    tables' rows), and built and matched :meth:`step` by step.  ``candidates``: the rows it will
    match (what ``max_scan_rows`` counted, plus a resume slice's when there are several); a resume
    query's rows (:meth:`Engine._resume_rows`, already a frozen view) are not matched at all.

    Sliced by the server (:attr:`Engine.slice_rows`, ADR-0041), it also says what
    to answer once done: ``kind`` "subscribe" (the set was registered when it was taken) or
    "unsubscribe" (the set was removed then), the request and query set ids, and the replays of
    the resume queries (observed once the subscription is answered)."""

    __slots__ = ("_fast", "_out", "_result", "_stages", "candidates", "done", "gaps", "kind", "offset", "queries",
                 "query_set_id", "request_id")

    def __init__(self, offset: int, out: dict[str, dict[Row, None]], fast: dict[str, Sequence[Row]],
                 stages: list[tuple[dict[Row, None], Iterator[Row], q.Query, Callable[[Row], bool]]],
                 candidates: int) -> None:
        self.offset = offset
        self._out = out
        self._fast = fast
        self._stages = stages
        self.candidates = candidates
        self.done = not stages
        self.kind = ""
        self.request_id = 0
        self.query_set_id = 0
        self.gaps: tuple[int, ...] = ()
        self.queries: tuple[q.Query, ...] = ()
        self._result: tuple[TableRows, ...] | None = None

    def step(self, most: int) -> bool:
        """Build and match up to ``most`` more candidate rows; True once every one is matched."""
        if most < 1:
            raise LocalProtocolError(f"a snapshot step takes at least one row, not {most}")
        stages, matches = self._stages, q.matches
        while stages and most > 0:
            bucket, todo, query, readable = stages[0]
            seen = 0
            for row in itertools.islice(todo, most):
                seen += 1
                if matches(query, row) and readable(row):
                    bucket[row] = None
            if seen < most:
                stages.pop(0)
            most -= seen
        self.done = not stages
        return self.done

    def result(self) -> tuple[TableRows, ...]:
        """The rows per table (each row once, in the candidates' order); only once done (made once)."""
        if not self.done:
            raise LocalProtocolError("the snapshot is not finished: step it until it says done")
        if self._result is None:
            fast = self._fast
            # a resume query's rows stay a RetainedRows (rows built on read; the wire encodes its columns)
            self._result = tuple(TableRows(t, fast[t] if t in fast else tuple(rows))  # type: ignore[arg-type]
                                 for t, rows in self._out.items() if fast.get(t, rows))
        return self._result


def _frozen_rows(logs: Iterable[StreamLog]) -> Iterator[Row]:
    """The retained events of ``logs`` in that order, each log frozen as it is now (the views are
    taken here, eagerly: ~2 µs a stream, less than building even one row; rows are built as the
    iterator is read)."""
    return itertools.chain.from_iterable([log.frozen() for log in logs])


def _only_pin_and_seq_floor(query: q.Query, stream_id: str) -> bool:
    """Every conjunct is ``stream_id = <stream_id>`` or an integer lower bound on ``seq``
    (``>``/``>=``): then exactly the rows of that stream after ``q.lower_bound_exclusive(query,
    "seq")`` match, which is what ``StreamLog.frozen`` of that bound holds."""
    return all((c.column == "stream_id" and c.op is q.Op.EQ and c.value == stream_id)
               or (c.column == "seq" and c.op in (q.Op.GT, q.Op.GE) and type(c.value) is int)
               for c in query.where)


def limit_exceeded(limit: str, most: int, actual: int) -> SyncError:
    """``limit_exceeded`` naming the ``Limits`` field, its value and what was asked for."""
    return SyncError(ErrorCode.LIMIT_EXCEEDED, {"actual": actual, "limit": limit, "max": most})


def safe_text(text: str, limit: int = 512) -> str:
    """``text`` cut to ``limit`` characters with anything UTF-8 cannot carry (lone surrogates)
    escaped, so it can go on the wire and into a log."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


class Engine:
    def __init__(self, policy: Policy = DEFAULT_POLICY, max_queue: int = 1024, max_undurable: int = 1024) -> None:
        self.policy = policy
        self.max_queue = max_queue
        self.max_undurable = max_undurable
        self.db = Db()
        self.committed = 0
        self.durable = 0
        self.head_hash = GENESIS
        self.pending_records: list[TxRecord] = []  # committed, not yet handed to the store
        self.conns: dict[int, Connection] = {}
        self.shapes: dict[str, dict[tuple[object, ...], Shape]] = {}
        # the same shapes by pinned stream (None: not pinned), so an insert into stream S is matched
        # only against shapes pinned to S and unpinned ones, whatever others subscribe to
        self.shapes_by_pin: dict[str, dict[str | None, dict[tuple[object, ...], Shape]]] = {}
        # shapes whose last subscriber left, by shape key, most recent last (at most IDLE_SHAPES):
        # a query subscribed again -- a client resuming where another did -- takes its shape back
        # instead of building one (a shape's pin and probe are read from its query: ~2 µs each)
        self.idle_shapes: dict[tuple[object, ...], Shape] = {}
        self.match_checks = 0  # (shape, row) pairs matched in fanout: the per-transaction cost
        self.rows_examined = 0  # rows reads have examined (what max_scan_rows counts), all requests together
        self.fanout_skips = 0  # fanouts that returned early: no shape of any table the transaction touched
        self.stale_reasons: dict[str, int] = {}  # stale_cursor refusals by reason (the operator's page)
        # Resource limits (None: unbounded).  The server sets them from its ``Limits``; the names
        # in ``limit_exceeded`` details are those fields.
        self.max_query_bytes: int | None = None
        self.parse_cache = ParseCache()  # exact query texts -> their parse (reference/parsecache.py)
        self.max_query_conjuncts: int | None = None
        self.max_scan_rows: int | None = None  # rows one request's queries examine, all together
        # a Subscribe's snapshot / an Unsubscribe's dropped rows matching more candidate rows than
        # this are left for the I/O layer to step (handle, answer_snapshot; ADR-0041); None: never
        self.slice_rows: int | None = None
        self.max_queries_per_connection: int | None = None
        self.max_outbound_bytes: int | None = None  # estimated encoded bytes queued per connection
        self.max_outbound_message_bytes: int | None = None  # one message, estimated encoded
        self.measure: Callable[[ServerMessage], int] | None = None  # encoded size estimate (an upper bound)
        self.now = 0
        self._next_conn = 1
        self.on_close: Callable[[int, str], None] | None = None
        self.on_internal_error: Callable[[InternalError], None] | None = None
        # observers for metrics: a resume query accepted (events it replays), refused stale (reasons)
        self.on_resume: Callable[[int], None] | None = None
        self.on_stale: Callable[[tuple[str, ...]], None] | None = None
        self._disconnects: list[tuple[str, int, frozenset[str]]] = []
        self._last_upsert: dict[str, int] = {}  # session -> the connection that last upserted it
        self._upserted: dict[int, set[str]] = {}  # its inverse: connection -> the sessions it upserted last
        self._fanning_out = False

    # --- connections --------------------------------------------------------------------------

    def admit(self, claims: Claims, window: CompatWindow) -> SyncError | None:
        """Compatibility negotiation before a connection is accepted (DESIGN §4): None, or the
        first failing check's error, for the HTTP 426 answer.  Uses the model's pure function:
        the negotiation order is vocabulary, not engine logic."""
        return negotiate(window, claims.client_build_id, claims.protocol_version, claims.schema_version)

    @contracts.hot
    @icontract.ensure(lambda self, result: result in self.conns and not self.conns[result].outbound)
    def connect(self, claims: Claims, confirmed: bool) -> int:
        cid = self._next_conn
        self._next_conn += 1
        self.conns[cid] = Connection(cid, claims, confirmed)
        return cid

    def close(self, conn_id: int, reason: str = "closed") -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        conn.closed_reason = reason
        for qs_id in list(conn.query_sets):
            self._unregister(conn, qs_id)
        if self.on_close is not None:
            self.on_close(conn_id, reason)
        mine = self._upserted.pop(conn_id, set())
        if mine:
            self._disconnects.append((conn.claims.identity, conn_id, frozenset(mine)))
        self._drain_disconnects()

    def _drain_disconnects(self) -> None:
        """Presence of closed connections goes ``disconnected`` in its own transaction, after any
        fanout in progress and within the durability bound -- only the sessions whose last upsert
        came from the closed connection (ADR-0003 decision 4)."""
        self._disconnects.sort(key=lambda d: (d[0], sorted(d[2])))  # same order however closes interleaved
        while self._disconnects and not self._fanning_out and self.can_commit():
            identity, conn_id, queued = self._disconnects.pop(0)
            sessions = frozenset(s for s in queued if self._last_upsert.get(s) == conn_id)
            for s in sessions:
                del self._last_upsert[s]
            try:
                self._system("disconnect", (identity, tuple(sorted(sessions))),
                             functools.partial(self._disconnect_body, identity, sessions))
            except InternalError as err:  # rolled back; the presence sweep expires the sessions later
                self._report(err)

    def _upserted_by(self, session: str, conn_id: int | None) -> None:
        """Remember which connection (None: none, an HTTP call) made the last upsert of ``session``."""
        old = self._last_upsert.pop(session, None)
        if old is not None:
            self._upserted.get(old, set()).discard(session)
        if conn_id is not None:
            self._last_upsert[session] = conn_id
            self._upserted.setdefault(conn_id, set()).add(session)

    def _disconnect_body(self, identity: str, sessions: frozenset[str], tx: Txn) -> None:
        r.disconnect_sessions(tx, self.now, identity, sessions)

    def can_commit(self) -> bool:
        return self.committed - self.durable < self.max_undurable

    # --- client messages ------------------------------------------------------------------------

    @contracts.hot
    @icontract.require(lambda self, msg: not isinstance(msg, CallReducer) or self.can_commit(),
                       "a call is taken only within the durability bound (the I/O layer waits otherwise)")
    @icontract.snapshot(lambda self: (self.committed, self.durable), name="offsets")
    @icontract.ensure(lambda self, OLD: self.committed >= OLD.offsets[0] and self.durable == OLD.offsets[1],
                      "offsets only move forward; handling a message never makes anything durable")
    @icontract.ensure(lambda self: self.committed - self.durable <= self.max_undurable,
                      "never more than max_undurable transactions past the durable offset")
    @icontract.ensure(lambda self: all(len(c.outbound) <= self.max_queue for c in self.conns.values()),
                      "SLOW-1 (no live connection's queue is past the bound)")
    @icontract.ensure(lambda self: _indexes_consistent(self.db), "indexes agree with the rows", enabled=icontract.SLOW)
    @icontract.ensure(lambda self: not check_state(_model_view(self.db), self.policy.bridge_max_attempts),
                      "the model's state invariants hold on the engine's tables", enabled=icontract.SLOW)
    def handle(self, conn_id: int, msg: ClientMessage) -> None:
        """Handle one client message.  With :attr:`slice_rows` set (an I/O layer that steps reads
        between other work, ADR-0041), a ``Subscribe`` whose snapshot, or an ``Unsubscribe`` whose
        dropped rows, would match more than that many candidate rows is taken now -- every check
        made, the set registered (or removed) now, the rows fixed as they are now -- and left
        unanswered in :attr:`Connection.snapshot`, the connection's queue held at this point as
        :meth:`begin_read` holds it; the caller steps it and hands it to :meth:`answer_snapshot`.
        Else it is answered now."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if isinstance(msg, Subscribe):
            self._subscribe(conn, msg)
        elif isinstance(msg, Unsubscribe):
            self._unsubscribe(conn, msg)
        else:
            self._call(conn, msg)

    def snapshot_taken(self, conn_id: int) -> Snapshot | None:
        """The snapshot :meth:`handle` left unanswered for ``conn_id`` (None: none)."""
        conn = self.conns.get(conn_id)
        return None if conn is None else conn.snapshot

    def _unsubscribe(self, conn: Connection, msg: Unsubscribe) -> Snapshot | None:
        if msg.query_set_id not in conn.query_sets:
            self._send(conn, self.committed, SubscriptionError(msg.request_id, msg.query_set_id, SyncError(
                ErrorCode.INVALID_QUERY, {"message": "unknown query set",
                                          "query_set_id": msg.query_set_id}).render()))
            return None
        # The set ends whatever its rows cost (as in SpacetimeDB, which removes it before it
        # reads them): dropped rows over max_scan_rows or max_outbound_message_bytes are
        # answered with a SubscriptionError naming the set, which ends it for the client too
        queries = list(conn.query_sets[msg.query_set_id])
        self._unregister(conn, msg.query_set_id)
        if not msg.send_dropped:
            self._send(conn, self.committed, UnsubscribeApplied(msg.request_id, msg.query_set_id, None))
            return None
        try:
            snap = self._take_snapshot(conn.claims, queries)
        except SyncError as err:
            self._send(conn, self.committed, SubscriptionError(msg.request_id, msg.query_set_id, err.render()))
            return None
        snap.kind, snap.request_id, snap.query_set_id = "unsubscribe", msg.request_id, msg.query_set_id
        if self.slice_rows is not None and snap.candidates > self.slice_rows:
            return self._hold(conn, snap)
        snap.step(ALL_ROWS)
        self._answer(conn, snap)
        return None

    def reject(self, conn_id: int, request_id: int, error: SyncError) -> None:
        """Answer a call the I/O layer could not even decode (e.g. malformed BSATN arguments) with
        a failed ``ReducerResult``, in order with the connection's other messages."""
        conn = self.conns.get(conn_id)
        if conn is not None:
            self._send(conn, self.committed, ReducerResult(request_id, self.committed, ReducerErr(error.render())))

    def query(self, claims: Claims, text: str, scan: Scan | None = None) -> TableRows:
        """A one-off read (SpacetimeDB's ``OneOffQuery`` and the HTTP ``/sql`` route): the rows of
        one subscription-subset query, under the same scope, grant and row-filter rules as a
        subscription (no stale check: a one-off read resumes nothing).  Raises :class:`SyncError`."""
        read = self.read(claims, text, scan)
        read.step(ALL_ROWS)
        return read.result()

    def read(self, claims: Claims, text: str, scan: Scan | None = None) -> Read:
        """:meth:`query` taken now and answered later: every check (scope, size, parse, grant,
        ``max_scan_rows``) is made here and raises :class:`SyncError` here; the returned
        :class:`Read` holds the candidate rows as they are now and builds and matches them as it
        is stepped, so commits made meanwhile do not show in its answer."""
        queries = self._authorized_queries(claims, (text,))
        if len(queries) != 1:
            raise SyncError(ErrorCode.INVALID_QUERY, {"message": "a one-off query reads exactly one table",
                                                      "sql": text})
        query = queries[0]
        candidates = self._candidates(query, claims, Scan() if scan is None else scan)
        if isinstance(candidates, RetainedRows) and _only_pin_and_seq_floor(query, candidates.stream_id) \
                and stream_granted(claims, candidates.stream_id):
            # `stream_id = S [AND seq > W ...]`, S granted: every row of the stream's frozen view
            # (taken after W) matches and may be read -- the view is the answer, no row built
            return Read(query.table, self.committed, candidates, None)
        readable = _row_filter(claims, query.table)
        return Read(query.table, self.committed, candidates, lambda row: q.matches(query, row) and readable(row))

    def begin_read(self, conn_id: int, request_id: int, text: str) -> Read | None:
        """:meth:`one_off` in two parts, for an I/O layer that steps the read between other work:
        the read is taken now (:meth:`read`); refused, its error is queued now and None returned.
        Else the connection's queue is held at this point -- messages queued meanwhile (updates
        of later transactions) are released only after the answer -- until :meth:`answer_read`
        puts the answer in its place, as if the whole read had been answered now."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return None
        if conn.reading is not None:
            raise LocalProtocolError(f"connection {conn_id} already has a read in progress")
        try:
            read = self.read(conn.claims, text)
        except SyncError as err:
            self._send(conn, self.committed, OneOffQueryResult(request_id, err.render()), None)
            return None
        conn.reading = read.offset
        return read

    def answer_read(self, conn_id: int, request_id: int, read: Read, table: TableRows | None = None) -> None:
        """The ``OneOffQueryResult`` of a read :meth:`begin_read` took, stepped to its end: queued
        after the messages queued before the read was taken and ahead of those queued since (they
        carry later offsets), at the read's offset; the queue is released again.  ``table``:
        :meth:`Read.result` as the caller re-packed it (the same table and its very row sequence,
        e.g. with their encoding attached: the server's ``_encode_answer``, ADR-0043)."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        rows = read.result()
        if table is not None and (table.table != rows.table or table.inserts is not rows.inserts
                                  or len(table.deletes) != len(rows.deletes) or table.event != rows.event):
            raise LocalProtocolError("the re-packed table is not the read's")
        conn.reading = None
        answer = OneOffQueryResult(request_id, rows if table is None else table)
        try:
            size = self._fits(answer)
        except SyncError as err:
            answer = OneOffQueryResult(request_id, err.render())
            try:
                size = self._fits(answer)
            except SyncError as over:  # even the error is over the bound: closed by policy, as _send does
                self.close(conn.conn_id, f"{CLOSE_POLICY}: {over.render()}")
                return
        self._insert(conn, read.offset, answer, size)

    def one_off(self, conn_id: int, request_id: int, text: str) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        try:
            answer = OneOffQueryResult(request_id, self.query(conn.claims, text))
            size = self._fits(answer)
        except SyncError as err:
            answer, size = OneOffQueryResult(request_id, err.render()), None
        self._send(conn, self.committed, answer, size)

    def _check_queries(self, claims: Claims, texts: tuple[str, ...], held: int = 0,
                       gaps: list[int] | None = None) -> list[q.Query]:
        """:meth:`_authorized_queries` of a subscription, then each query's stale-cursor check; the
        events each resume query would replay are appended to ``gaps`` (reported by the caller once
        the subscription is accepted)."""
        queries = self._authorized_queries(claims, texts, resume_form=True, held=held)
        for query in queries:
            gap = self._check_stale(query)
            if gap is not None and gaps is not None:
                gaps.append(gap)
        return queries

    def _authorized_queries(self, claims: Claims, texts: tuple[str, ...], resume_form: bool = False,
                            held: int | None = None) -> list[q.Query]:
        """Scope, size, parse, conjunct count, (for a subscription) the resume form, then the grant
        check of every query that pins a stream (DESIGN §4 order; the size checks come before any
        parsing work; ADR-0003 decision 3).  ``held``: the queries the connection already holds (a
        subscription): a text is one query or more, so too many texts for
        ``max_queries_per_connection`` are refused before any is parsed (a 32 MiB Subscribe holds
        ~a million)."""
        self._check_room(claims, len(texts), held)
        limit = self.max_query_bytes
        if limit is not None:
            for text in texts:
                if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
                    raise limit_exceeded("max_query_bytes", limit, len(text.encode("utf-8", "surrogatepass")))
        parse = self.parse_cache.parse
        queries = [query for text in texts for query in parse(text)]
        most = self.max_query_conjuncts
        for query in queries:
            if most is not None and len(query.where) > most:
                raise limit_exceeded("max_query_conjuncts", most, len(query.where))
        facts = self.parse_cache.facts
        for query in queries if resume_form else ():
            if query.table == "sync_event" and (f := facts(query)).seq_bound is not None:
                missing = [c for c, v in (("stream_id", f.stream_id), ("epoch", f.epoch)) if v is None]
                if missing:
                    raise SyncError(ErrorCode.INVALID_QUERY, {
                        "query": query.text[:200],
                        "message": f"a sync_event subscription that bounds seq from below must pin stream_id and "
                                   f"epoch with = (missing: {', '.join(missing)}); resume with "
                                   f"{q.RESUME_QUERY_FORM}, E and W from the checkpoint (or leave seq unbounded to "
                                   f"read the whole stream)"})
        grants: _Grants | None = None
        for query in queries:
            if TABLE_BY_NAME[query.table].visibility is Visibility.STREAM_GRANT:
                sid = facts(query).stream_id
                if isinstance(sid, str):
                    grants = grants or _grants(claims.streams)  # (indexed: not one test per grant and query)
                    if not grants.covers(sid):
                        raise SyncError(ErrorCode.FORBIDDEN_STREAM, {})
        return queries

    def _check_room(self, claims: Claims, count: int, held: int | None) -> None:
        """The scope, then (``held``: for a subscription) room for ``count`` more texts."""
        if "sync.subscribe" not in claims.scopes:
            raise SyncError(ErrorCode.MISSING_SCOPE, {"scope": "sync.subscribe"})
        most_held = self.max_queries_per_connection
        if held is not None and most_held is not None and held + count > most_held:
            raise limit_exceeded("max_queries_per_connection", most_held, held + count)

    def refuse_overlong(self, conn_id: int, request_id: int, query_set_id: int, count: int) -> None:
        """Answer a ``Subscribe`` of ``count`` query texts that the I/O layer did not decode,
        ``count`` being over ``max_queries_per_connection``, as :meth:`handle` answers that
        Subscribe: an active query set id closes the connection, then the scope, then
        ``limit_exceeded`` -- none of which needs the texts."""
        conn = self.conns.get(conn_id)
        if conn is None or self._reused(conn, query_set_id):
            return
        most = self.max_queries_per_connection
        if most is None or count <= most:
            raise LocalProtocolError(f"{count} query texts are not over the bound ({most})")
        try:
            self._check_room(conn.claims, count, conn.query_count)
        except SyncError as err:
            self._send(conn, self.committed, SubscriptionError(request_id, query_set_id, err.render()))

    def _reused(self, conn: Connection, query_set_id: int) -> bool:
        """A Subscribe naming an active query set closes the connection (True)."""
        if query_set_id in conn.query_sets:
            self.close(conn.conn_id, f"{CLOSE_PROTOCOL}: query set {query_set_id} is already active")
            return True
        return False

    def _check_stale(self, query: q.Query) -> int | None:
        """Raise ``stale_cursor`` for a resume query the stream cannot serve; else the events a
        resume query replays (min(head seq, its upper bound) - watermark: ADR-0042), None for any other query."""
        if query.table != "sync_event":
            return None
        facts = self.parse_cache.facts(query)
        sid, w = facts.stream_id, facts.seq_bound
        if not isinstance(sid, str) or w is None:
            return None
        w = max(w, 0)  # seqs start at 1: seq >= 0 resumes from the start (W = 0), not from W = -1
        req = facts.epoch
        req_epoch = req if isinstance(req, int) and not isinstance(req, bool) else None
        epoch, head, floor = r.stream_position(self.db, sid)
        budget = self.policy.class_for(sid).replay_budget
        upper = facts.seq_upper  # a page (seq <= B) replays up to min(head, B) (ADR-0042)
        reasons = list(_stale_reasons(epoch, head, floor, budget, req_epoch, w, upper))  # the one rule (spec.resume)
        if reasons:
            if self.on_stale is not None:
                self.on_stale(tuple(reasons))
            for reason in reasons:
                self.stale_reasons[reason] = self.stale_reasons.get(reason, 0) + 1
            row = self.db.get("sync_stream", (sid,))
            raise SyncError(ErrorCode.STALE_CURSOR, {
                **continuation_details(row if isinstance(row, SyncStream) else None),
                "epoch": epoch, "floor_seq": floor, "head_seq": head, "reasons": reasons, "replay_budget": budget,
                "requested_epoch": req_epoch, "requested_watermark": w, "stream_id": sid})
        return max(0, (head if upper is None else min(head, upper)) - w)

    def _subscribe(self, conn: Connection, msg: Subscribe) -> Snapshot | None:
        if self._reused(conn, msg.query_set_id):
            return None
        gaps: list[int] = []  # the replays of its resume queries: observed only when it is accepted
        try:
            most = self.max_queries_per_connection
            queries = self._check_queries(conn.claims, msg.queries, conn.query_count, gaps)
            if most is not None and conn.query_count + len(queries) > most:
                raise limit_exceeded("max_queries_per_connection", most, conn.query_count + len(queries))
            snap = self._take_snapshot(conn.claims, queries)
        except SyncError as err:
            self._send(conn, self.committed, SubscriptionError(msg.request_id, msg.query_set_id, err.render()))
            return None
        snap.kind, snap.request_id, snap.query_set_id = "subscribe", msg.request_id, msg.query_set_id
        snap.gaps, snap.queries = tuple(gaps), tuple(queries)
        if self.slice_rows is not None and snap.candidates > self.slice_rows:
            # registered now, at the state the snapshot was taken at: every transaction committed
            # from here on is queued for it as an update, held behind its SubscribeApplied (ADR-0041)
            self._register(conn, msg.query_set_id, queries)
            return self._hold(conn, snap)
        snap.step(ALL_ROWS)
        try:
            applied = SubscribeApplied(msg.request_id, msg.query_set_id, snap.result())
            size = self._fits(applied)
        except SyncError as err:
            self._send(conn, self.committed, SubscriptionError(msg.request_id, msg.query_set_id, err.render()))
            return None
        self._register(conn, msg.query_set_id, queries)
        self._observe_resumes(snap)
        self._send(conn, self.committed, applied, size)
        return None

    def _register(self, conn: Connection, qs_id: int, queries: list[q.Query]) -> None:
        conn.query_sets[qs_id] = tuple(queries)
        for query in queries:
            key = self.parse_cache.facts(query).shape
            shape = self.shapes.setdefault(query.table, {}).get(key)
            if shape is None:
                shape = self.idle_shapes.pop(key, None)
                if shape is None:  # (an idle shape has no subscribers: it was dropped when it had none)
                    shape = Shape(query)
                self.shapes[query.table][key] = shape
                self.shapes_by_pin.setdefault(query.table, {}).setdefault(shape.pin, {})[key] = shape
            sub = (conn.conn_id, qs_id)
            shape.subscribers[sub] = shape.subscribers.get(sub, 0) + 1
            shape.groups = None

    def _observe_resumes(self, snap: Snapshot) -> None:
        if self.on_resume is not None:
            for gap in snap.gaps:
                self.on_resume(gap)

    def _hold(self, conn: Connection, snap: Snapshot) -> Snapshot:
        """Hold the connection's queue at the snapshot's offset until :meth:`answer_snapshot`."""
        if conn.reading is not None:
            raise LocalProtocolError(f"connection {conn.conn_id} already has a read in progress")
        conn.reading, conn.snapshot = snap.offset, snap
        return snap

    def answer_snapshot(self, conn_id: int, snap: Snapshot, tables: tuple[TableRows, ...] | None = None) -> None:
        """Answer a snapshot :meth:`handle` returned, stepped to its end, where it was taken: the
        ``SubscribeApplied`` (``UnsubscribeApplied``) goes after the messages queued before it and
        ahead of those queued since -- the updates of later transactions, to the new set among
        others -- and the queue is released.  A snapshot over ``max_outbound_message_bytes`` (known
        only now) is refused as it was when answered at once: ``SubscriptionError``, the set not
        subscribed -- so it is removed again, with its part of every update held behind it.
        ``tables``: :meth:`Snapshot.result` as the caller re-packed it (the same tables, their very
        row sequences and order, e.g. with each table's encoding attached: the server's ``_encode_ahead``)."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if conn.snapshot is not snap:
            raise LocalProtocolError(f"connection {conn_id} is not taking that snapshot")
        if tables is not None and [(t.table, id(t.inserts), len(t.deletes)) for t in tables] != [
                (t.table, id(t.inserts), len(t.deletes)) for t in snap.result()]:  # its very rows (made once)
            raise LocalProtocolError("the re-packed tables are not the snapshot's")
        conn.reading = conn.snapshot = None
        self._answer(conn, snap, tables)

    def _answer(self, conn: Connection, snap: Snapshot, tables: tuple[TableRows, ...] | None = None) -> None:
        """Queue the answer of a snapshot stepped to its end at its offset."""
        message: ServerMessage
        rows = snap.result() if tables is None else tables
        try:
            if snap.kind == "subscribe":
                message = SubscribeApplied(snap.request_id, snap.query_set_id, rows)
            else:
                message = UnsubscribeApplied(snap.request_id, snap.query_set_id, rows)
            size = self._fits(message)
        except SyncError as err:
            if snap.kind == "subscribe" and snap.query_set_id in conn.query_sets:  # (sliced: registered)
                self._unregister(conn, snap.query_set_id)
                self._drop_set(conn, snap.query_set_id, snap.offset)
            message = SubscriptionError(snap.request_id, snap.query_set_id, err.render())
            try:
                size = self._fits(message)
            except SyncError as over:  # even the error is over the bound: closed by policy, as _send does
                self.close(conn.conn_id, f"{CLOSE_POLICY}: {over.render()}")
                return
        else:
            if snap.kind == "subscribe":
                self._observe_resumes(snap)
        self._insert(conn, snap.offset, message, size)

    def _drop_set(self, conn: Connection, qs_id: int, offset: int) -> None:
        """Take query set ``qs_id``'s part out of the updates queued for ``conn`` after ``offset``
        (an update left with no part goes); each entry replaced, not changed (others share it)."""
        queue, sizes = conn.outbound, conn.sizes
        for i in range(len(queue) - 1, -1, -1):
            out = queue[i]
            if out.offset <= offset:
                break
            msg = out.message
            if isinstance(msg, TransactionUpdate):
                kept = tuple(u for u in msg.query_sets if u.query_set_id != qs_id)
                if len(kept) == len(msg.query_sets):
                    continue
                conn.outbound_bytes -= sizes[i]
                if kept:
                    queue[i] = Outbound(out.offset, TransactionUpdate(msg.tx_offset, kept))
                    sizes[i] = self._fits(queue[i].message)
                    conn.outbound_bytes += sizes[i]
                else:
                    del queue[i]
                    del sizes[i]

    def _insert(self, conn: Connection, offset: int, message: ServerMessage, size: int) -> None:
        """Queue ``message`` after what was queued at ``offset`` or before and ahead of what was
        queued since (later offsets), with the queue bounds of :meth:`_send`."""
        queue, sizes = conn.outbound, conn.sizes
        at = len(queue)
        while at and queue[at - 1].offset > offset:
            at -= 1
        queue.insert(at, Outbound(offset, message))
        sizes.insert(at, size)
        conn.outbound_bytes += size
        if len(queue) > self.max_queue or (
                self.max_outbound_bytes is not None and conn.outbound_bytes > self.max_outbound_bytes):
            self.close(conn.conn_id, SLOW_CONSUMER_REASON)

    def _fits(self, message: ServerMessage) -> int:
        """The message's estimated encoded size; ``limit_exceeded`` if it is over the one-message
        bound (a frame no client could decode is refused, never sent)."""
        size = self.measure(message) if self.measure is not None else 0
        most = self.max_outbound_message_bytes
        if most is not None and size > most:
            raise limit_exceeded("max_outbound_message_bytes", most, size)
        return size

    def _unregister(self, conn: Connection, qs_id: int) -> None:
        for query in conn.query_sets.pop(qs_id, ()):
            table_shapes = self.shapes.get(query.table, {})
            shape_key = self.parse_cache.facts(query).shape
            shape = table_shapes.get(shape_key)
            if shape is None:
                continue
            key = (conn.conn_id, qs_id)
            shape.subscribers[key] -= 1
            shape.groups = None
            if shape.subscribers[key] == 0:
                del shape.subscribers[key]
            if not shape.subscribers:
                del table_shapes[shape_key]
                pinned = self.shapes_by_pin[query.table]
                del pinned[shape.pin][shape_key]
                if not pinned[shape.pin]:
                    del pinned[shape.pin]
                idle = self.idle_shapes
                idle[shape_key] = shape  # (the key holds the table: shape_key's first item)
                if len(idle) > IDLE_SHAPES:
                    del idle[next(iter(idle))]

    def _candidates(self, query: q.Query, claims: Claims, scan: Scan | None) -> Iterable[Row]:
        """Rows a snapshot must consider: a slice of one stream's log for a resume query; the one
        row of its key for a query that pins a table's primary key with ``=`` (a resume set's
        ``sync_stream`` query: its stream's row, not every stream's); else the rows ``claims``
        could read where they are found for less than the whole table (:meth:`_readable`).  They
        are counted against ``max_scan_rows`` (:meth:`_count`) before any is matched -- or built:
        a ``sync_event`` row is built from its log on each read -- so a request over the bound is
        refused having built none and matched at most the bound's worth.  ``scan`` None: a resume
        query's slice, not counted per request (``replay_budget`` bounds it; it is sliced)."""
        column = _PK_COLUMN.get(query.table)
        if column is not None:
            key = q.pinned_value(query, column)
            if key is not None:  # `column = key` holds for the row of that key alone
                row = self.db.get(query.table, (key,))
                self._count(scan, 0 if row is None else 1)
                return [] if row is None else [row]
        if query.table == "sync_event":
            sid = q.pinned_value(query, "stream_id")
            if isinstance(sid, str):
                log = self.db.logs.get(sid)
                if log is None:
                    return []
                w, upper = q.lower_bound_exclusive(query, "seq"), q.upper_bound_inclusive(query, "seq")
                first = log.floor if w is None else max(log.floor, w + 1)
                last = log.floor + len(log) - 1 if upper is None else min(log.floor + len(log) - 1, upper)
                self._count(scan, max(0, last - first + 1))  # the seqs in range: a page's (seq <= B) alone (ADR-0042)
                return log.frozen(w, upper)
        readable = self._readable(query.table, claims, scan)
        if readable is not None:
            return readable
        table = query.table
        self._count(scan, sum(map(len, self.db.logs.values())) if table == "sync_event" else
                    len(self.db.pk.get(table, ())))
        if table == "sync_event":
            return _frozen_rows(self.db.logs.values())
        return list(self.db.rows(table))  # references to immutable rows: fixed now

    def _readable(self, table: str, claims: Claims, scan: Scan | None) -> Iterable[Row] | None:
        """The rows of ``table`` that ``claims`` may read (:func:`can_read`), counted, found through
        the db's secondary indexes when they may be fewer than the whole table; else None (the
        whole table is examined: every row of it is readable).  Each is counted before any row is
        built, and finding them costs per grant, never per grant and row:

        * a bridge table: every row for a bridge scope, else none;
        * ``sync_checkpoint``: the caller's own (``owner``; :attr:`Db.by_column`);
        * ``compute_assignment``: every row for ``compute.assign``, else those the caller requested
          or serves (``requester``, ``provider_owner``);
        * ``sync_stream`` / ``sync_event`` without a ``*`` grant: the rows of the granted streams
          -- one lookup per exact id a prefix does not cover, and for each ``prefix*`` the range of
          the sorted stream ids that start with it (two binary searches: :attr:`Db.stream_ids`,
          :meth:`Db.log_ids`) -- or, with more prefixes than stream ids, each id checked against
          the indexed grants (:meth:`_Grants.covers`); ``sync_stream`` counts the ids found,
          ``sync_event`` the events of their streams, taken as frozen views of their logs
          (:func:`_frozen_rows`: built when matched, later commits not shown; ADR-0038)."""
        visibility = TABLE_BY_NAME[table].visibility
        if visibility is Visibility.BRIDGE:
            return None if claims.scopes & BRIDGE_SCOPES else []
        if visibility is Visibility.OWNER or (
                visibility is Visibility.COMPUTE and "compute.assign" not in claims.scopes):
            rows_of, by_value = self.db.pk[table], self.db.by_column[table].by_value
            keys = by_value.get(claims.identity, ())
            self._count(scan, len(keys))
            return [rows_of[key] for key in keys]
        if visibility is not Visibility.STREAM_GRANT:
            return None
        grants = _grants(claims.streams)
        if grants.everything:
            return None
        # more prefixes than stream ids (a token of many grants, a small table): each id checked
        # against the indexed grants instead, one binary search of the prefixes each
        if table == "sync_event":
            ids = self.db.log_ids() if grants.prefixes else []  # (exact ids alone: no sorted index needed)
            logs = self.db.logs
            if len(ids) < len(grants.prefixes):
                covers = grants.covers
                granted = [logs[sid] for sid in ids if covers(sid)]
            else:
                granted = [logs[sid] for sid in grants.outside if sid in logs]
                granted += [logs[sid] for p in grants.prefixes for sid in _in_range(ids, p)]
            self._count(scan, sum(map(len, granted)))
            return _frozen_rows(granted)
        if table == "sync_stream":
            ids, rows_of = self.db.stream_ids.keys() if grants.prefixes else [], self.db.pk[table]
            if len(ids) < len(grants.prefixes):
                covers = grants.covers
                walked = [rows_of[(sid,)] for sid in ids if covers(sid)]
                self._count(scan, len(walked))
                return walked
            found = [(sid,) for sid in grants.outside if (sid,) in rows_of]
            ranges = [count_prefix(ids, p) for p in grants.prefixes]
            self._count(scan, len(found) + sum(hi - lo for lo, hi in ranges))
            return [rows_of[key] for key in found] + [rows_of[(sid,)] for lo, hi in ranges for sid in ids[lo:hi]]
        return None  # an event table (stream_signal): no stored rows either way

    def _count(self, scan: Scan | None, n: int) -> None:
        """``n`` more rows examined by the request of ``scan``: ``limit_exceeded`` past the bound
        (``scan`` None: counted in ``rows_examined`` only)."""
        self.rows_examined += n
        if scan is None:
            return
        scan.rows += n
        most = self.max_scan_rows
        if most is not None and scan.rows > most:
            raise limit_exceeded("max_scan_rows", most, scan.rows)

    def _resume_rows(self, claims: Claims, query: q.Query) -> Sequence[Row] | None:
        """The rows of a resume query ``stream_id = S AND epoch = E AND seq > W`` (any other
        conjuncts: None, the general path), read without the general match: ``after(W)`` gives
        only rows with seq > W, and whether ``claims`` may read a row depends on its stream alone.
        What :meth:`_snapshot` would give for the query alone."""
        facts = self.parse_cache.facts(query)
        if not facts.resume:  # the form is checked once per query object (reference/parsecache.py)
            return None
        sid, epoch, w = facts.stream_id, facts.epoch, facts.seq_bound
        assert isinstance(sid, str) and type(epoch) is int and w is not None
        log = self.db.logs.get(sid)
        if log is None:
            return []
        rows = log.retained_rows(w, epoch)  # every row of the log is of stream sid, so can_read of
        # each is stream_granted(claims, sid) (sync_event's visibility is STREAM_GRANT: checked at
        # import below); asked of the stream id, no row is built for it
        return rows if rows and stream_granted(claims, sid) else []

    def _snapshot(self, claims: Claims, queries: list[q.Query]) -> tuple[TableRows, ...]:
        snap = self._take_snapshot(claims, queries)
        snap.step(ALL_ROWS)
        return snap.result()

    def _take_snapshot(self, claims: Claims, queries: list[q.Query]) -> Snapshot:
        """The snapshot of ``queries`` taken now: every query's candidate rows fixed and counted
        (``max_scan_rows`` raises here, before any row is matched), none matched yet."""
        out: dict[str, dict[Row, None]] = {}
        fast: dict[str, Sequence[Row]] = {}
        stages: list[tuple[dict[Row, None], Iterator[Row], q.Query, Callable[[Row], bool]]] = []
        scan = Scan()
        examined = self.rows_examined
        one_event_query = sum(x.table == "sync_event" for x in queries) == 1
        for query in queries:
            if TABLE_BY_NAME[query.table].event:
                continue
            if one_event_query and query.table == "sync_event":
                rows = self._resume_rows(claims, query)
                if rows is not None:  # the one sync_event query of the set: nothing to deduplicate
                    fast[query.table] = rows
                    out.setdefault(query.table, {})
                    continue
            bucket = out.setdefault(query.table, {})
            # one of several resumes: replay_budget bounds its slice, as on the fast path (not counted
            # per request, only in rows_examined)
            candidates = self._candidates(query, claims, None if self.parse_cache.facts(query).resume else scan)
            stages.append((bucket, iter(candidates), query, _row_filter(claims, query.table)))
        return Snapshot(self.committed, out, fast, stages, self.rows_examined - examined)

    # --- transactions ----------------------------------------------------------------------------

    @staticmethod
    def _signature_error(reducer: str, args: tuple[Any, ...]) -> SyncError | None:
        rdef = REDUCER_BY_NAME.get(reducer)
        if rdef is None:
            return SyncError(ErrorCode.NO_SUCH_REDUCER, {"reducer": reducer})
        if len(args) != len(rdef.args):
            return SyncError(ErrorCode.INVALID_ARGUMENT, {
                "argument": "*", "message": f"{reducer} takes {len(rdef.args)} arguments, got {len(args)}"})
        for (name, check), value in zip(_arg_checks(reducer), args, strict=True):
            if not check(value):
                return SyncError(ErrorCode.INVALID_ARGUMENT, {"argument": name, "message": "wrong type"})
        return None

    def _call(self, conn: Connection, msg: CallReducer) -> None:
        error = self._signature_error(msg.reducer, msg.args)
        if error is not None:
            self._send(conn, self.committed, ReducerResult(msg.request_id, self.committed, ReducerErr(error.render())))
            return
        ctx = r.Ctx(conn.claims, self.now, self.committed + 1, self.policy)
        tx = Txn(self.db)
        try:
            ret = r.REDUCERS[msg.reducer](tx, ctx, *msg.args)
        except SyncError as err:
            tx.rollback()
            self._send(conn, self.committed, ReducerResult(msg.request_id, self.committed, ReducerErr(err.render())))
            return
        except Exception as exc:  # a reducer bug: nothing is written, only the caller hears of it
            tx.rollback()
            self._internal(conn, msg.request_id, InternalError(msg.reducer, exc))
            return
        except BaseException:
            tx.rollback()
            raise
        if not tx.wrote:
            if msg.reducer == "upsert_presence":
                self._upserted_by(str(msg.args[0]), conn.conn_id)
            self._send(conn, self.committed, ReducerResult(msg.request_id, self.committed, ReducerOk(ret, ())))
            return
        try:
            record = self._seal(tx, "reducer", msg.reducer, conn.claims, msg.args)
        except InternalError as err:
            self._internal(conn, msg.request_id, err)
            return
        if msg.reducer == "upsert_presence":
            self._upserted_by(str(msg.args[0]), conn.conn_id)
        self._publish(tx, record, (conn, msg.request_id, ret))

    def _report(self, err: InternalError) -> None:
        if self.on_internal_error is not None:
            self.on_internal_error(err)

    def _internal(self, conn: Connection, request_id: int, err: InternalError) -> None:
        """Answer a call that failed inside the server: ``InternalError``, state unchanged."""
        self._report(err)
        self._send(conn, self.committed, ReducerResult(request_id, self.committed, ReducerErr(err.message,
                                                                                              internal=True)))

    def _system(self, kind: str, args: tuple[Any, ...], body: Callable[[Txn], None]) -> bool:
        if not self.can_commit():
            return False
        tx = Txn(self.db)
        try:
            body(tx)
        except Exception as exc:
            tx.rollback()
            raise InternalError(kind, exc) from exc
        except BaseException:
            tx.rollback()
            raise
        if not tx.wrote:
            return False
        self._commit(tx, kind, kind, None, args, None)
        return True

    def sweep(self, now: int) -> bool:
        self.now = now
        return self._system("sweep", (now,), lambda tx: r.sweep_presence(tx, now))

    def compact(self, now: int) -> bool:
        self.now = now
        return self._system("compact", (now,), lambda tx: r.compact(tx, now, self.policy))

    def admin_call(self, claims: Claims, reducer: str, args: tuple[Any, ...]) -> SyncError | None:
        """A server-side call with no connection (admin tooling); its result goes nowhere."""
        if not self.can_commit():
            return SyncError(ErrorCode.INVALID_ARGUMENT, {"message": "server is waiting for durability"})
        tx = Txn(self.db)
        try:
            r.REDUCERS[reducer](tx, r.Ctx(claims, self.now, self.committed + 1, self.policy), *args)
        except SyncError as err:
            tx.rollback()
            return err
        except Exception as exc:
            tx.rollback()
            raise InternalError(reducer, exc) from exc
        except BaseException:
            tx.rollback()
            raise
        if reducer == "upsert_presence":
            self._upserted_by(str(args[0]), None)
        if tx.wrote:
            self._commit(tx, "reducer", reducer, claims, args, None)
        return None

    @contracts.hot
    @icontract.require(lambda self: self.can_commit(), "a call is taken only within the durability bound")
    def call_detached(self, claims: Claims, reducer: str, args: tuple[Any, ...]) -> tuple[int, int | None]:
        """A reducer call with no WebSocket caller (the HTTP ``call`` route): every subscriber,
        the caller's own connections included, hears of it by ``TransactionUpdate``.  Returns
        (offset to wait on for durability, return value); raises :class:`SyncError` when the
        reducer fails and :class:`InternalError` when the server does (nothing is written)."""
        error = self._signature_error(reducer, args)
        if error is not None:
            raise error
        tx = Txn(self.db)
        try:
            ret = r.REDUCERS[reducer](tx, r.Ctx(claims, self.now, self.committed + 1, self.policy), *args)
        except SyncError:
            tx.rollback()
            raise
        except Exception as exc:
            tx.rollback()
            err = InternalError(reducer, exc)
            self._report(err)
            raise err from exc
        except BaseException:
            tx.rollback()
            raise
        if reducer == "upsert_presence":
            self._upserted_by(str(args[0]), None)  # an HTTP upsert belongs to no connection
        if not tx.wrote:
            return self.committed, ret
        try:
            self._commit(tx, "reducer", reducer, claims, args, None)
        except InternalError as err:
            self._report(err)
            raise
        return self.committed, ret

    def _commit(self, tx: Txn, kind: str, name: str, caller: Claims | None, args: tuple[Any, ...],
                reply: tuple[Connection, int, int | None] | None) -> None:
        """Seal then publish; :class:`InternalError` (rolled back, nothing moved) if sealing fails."""
        self._publish(tx, self._seal(tx, kind, name, caller, args), reply)

    @contracts.hot
    @icontract.snapshot(lambda self: (self.committed, self.head_hash, len(self.pending_records)), name="before")
    @icontract.ensure(lambda self, OLD: (self.committed, self.head_hash, len(self.pending_records)) == OLD.before,
                      "sealing moves nothing: the offset, the hash chain and the pending records are untouched")
    @icontract.ensure(lambda result: result.delta_json == delta_text(result.changes),
                      "the record carries the text of its changes (delta_parts wrote it)", enabled=icontract.SLOW)
    def _seal(self, tx: Txn, kind: str, name: str, caller: Claims | None, args: tuple[Any, ...]) -> TxRecord:
        """The commit record of ``tx`` at the next offset, built before anything moves.  Whatever
        raises here (text UTF-8 cannot carry, a bug) rolls ``tx`` back: :class:`InternalError`."""
        try:
            changes, delta = delta_parts(tx.deletes, tx.inserts)  # the RowChanges and their text, one pass
            return make_record(self.committed + 1, kind, name, caller, args, self.now, changes, self.head_hash, delta)
        except Exception as exc:
            tx.rollback()
            raise InternalError(name, exc) from exc

    @contracts.hot
    @icontract.snapshot(lambda self: self.committed, name="committed")
    @icontract.ensure(lambda self, OLD: self.committed > OLD.committed, "a commit takes the next offset")
    def _publish(self, tx: Txn, record: TxRecord, reply: tuple[Connection, int, int | None] | None) -> None:
        self.committed = record.offset
        self.head_hash = record.hash
        self.pending_records.append(record)
        self._fanning_out = True
        try:
            self._fanout(tx, record.offset, reply)
        finally:
            self._fanning_out = False
        if self._disconnects:  # (most commits have none to drain: no call, no sort)
            self._drain_disconnects()

    def _fanout(self, tx: Txn, offset: int, reply: tuple[Connection, int, int | None] | None) -> None:
        """Match the delta once per shape, filter it per subscriber, queue one update per client.

        Subscribers that see the same rows under the same query set id get the *same* objects
        (one ``TableRows``, one ``QuerySetUpdate``, one ``TransactionUpdate``, measured once):
        the I/O layer finds the encoded bytes by identity and sends them to all of them.  A
        subscriber that may read every matched row shares the shape's own tuples; keys are row
        and tuple identities, all alive until the fanout ends.

        No shape of any table the transaction touched (ADR-0021): nothing can match, so nothing
        is matched, counted or queued but the caller's answer -- exactly what the general path
        below makes of an empty match, without building its dicts (an append nobody subscribed
        to paid ~10 µs for them).

        The fast path (ADR-0026): a connection whose every query is one shape under one query set
        id can be sent nothing but that shape's match under that id, so its group's update goes
        straight onto its queue (:meth:`_plan` keeps such connections per group and query set id),
        skipping the per-subscriber dicts and sorts of the general path; the caller's connection
        always takes the general path (its updates go into its answer)."""
        watched = self.shapes_by_pin
        if not watched or not any(watched.get(t) for d in (tx.deletes, tx.inserts, tx.events) for t in d):
            self.fanout_skips += 1
            if reply is not None:
                conn, request_id, ret = reply
                self._send(conn, offset, ReducerResult(request_id, offset, ReducerOk(ret, ())))
            return
        # (conn, qs) -> [(table, visible inserts, visible deletes)], one entry per matching shape
        per_client: dict[tuple[int, int], list[Seen]] = {}
        # the fast path's work: (a group's visible rows, its connections per query set id)
        fast: list[tuple[Seen, Solo]] = []
        caller = reply[0] if reply is not None else None
        touched = set(tx.deletes) | set(tx.inserts) | set(tx.events)
        order: dict[int, int] = {}
        for table in touched:
            inserts = tx.inserts.get(table, []) + tx.events.get(table, [])
            deletes = tx.deletes.get(table, [])
            order.update((id(row), i) for i, row in enumerate(inserts))
            order.update((id(row), i) for i, row in enumerate(deletes))
            for shape, ins_rows, del_rows in self._shape_candidates(table, inserts, deletes):
                probe = shape.probe or shape.query
                self.match_checks += len(ins_rows) + len(del_rows)
                # rows equal by value count once (as a set of rows would)
                ins = tuple(dict.fromkeys(row for row in ins_rows if q.matches(probe, row)))
                dels = tuple(dict.fromkeys(row for row in del_rows if q.matches(probe, row)))
                if not ins and not dels:
                    continue
                # the row filter reads only part of the claims (spec.auth.filter_key): subscribers
                # whose claims agree on it see the same rows, so it runs once per filter key, on
                # the shape's subscribers grouped by key (kept until they change)
                plan = shape.plan
                if plan is None or shape.planned != Shape.membership:
                    plan = self._plan(shape, table)
                apart = caller is not None and caller.conn_id in plan.solo_ids
                for group in plan.groups:
                    readable = group.readable
                    seen_ins = [readable(row) for row in ins]
                    seen_dels = [readable(row) for row in dels]
                    seen = (table, ins if all(seen_ins) else tuple(itertools.compress(ins, seen_ins)),
                            dels if all(seen_dels) else tuple(itertools.compress(dels, seen_dels)))
                    for key in group.keys:
                        found = per_client.get(key)
                        if found is None:
                            per_client[key] = [seen]
                        else:
                            found.append(seen)
                    solo = group.solo
                    if solo and (seen[1] or seen[2]):
                        if apart:
                            solo = self._caller_apart(solo, caller, seen, per_client)
                        fast.append((seen, solo))

        def in_tx_order(rows: Iterable[Row]) -> tuple[Row, ...]:
            return tuple(sorted(dict.fromkeys(rows), key=lambda row: order[id(row)]))

        shared_rows: dict[tuple[str, int, int], TableRows] = {}
        shared_sets: dict[tuple[int, ...], QuerySetUpdate] = {}
        single: dict[tuple[int, int], QuerySetUpdate] = {}  # (qs id, id of the one matched part) -> update

        def one_part(qs_id: int, only: Seen) -> QuerySetUpdate:
            """The update of a query set that one shape matched (``only`` has rows), shared by
            every receiver of the same part under the same id."""
            t, i, d = only
            rows_key = (t, id(i), id(d))
            part = shared_rows.get(rows_key)
            if part is None:
                part = shared_rows[rows_key] = TableRows(t, i, d, TABLE_BY_NAME[t].event)
            one_key: tuple[int, ...] = (qs_id, id(part))
            update = shared_sets.get(one_key)
            if update is None:
                update = shared_sets[one_key] = QuerySetUpdate(qs_id, (part,))
            single[(qs_id, id(only))] = update
            return update

        by_conn: dict[int, list[QuerySetUpdate]] = {}
        for (conn_id, qs_id) in sorted(per_client):
            found = per_client[(conn_id, qs_id)]
            if len(found) > 1 and len({part[0] for part in found}) < len(found):
                # several shapes of one query set matched one table: merge them per table (a table
                # matched by one shape keeps its tuples, deduplicated and in transaction order already).
                # The merged parts are kept in per_client until the fanout ends: `single` is keyed by a
                # part's id, and a freed part's id is soon another connection's merged part's.
                merged: dict[str, tuple[list[Row], list[Row]]] = {}
                for t, i, d in found:
                    both = merged.setdefault(t, ([], []))
                    both[0].extend(i)
                    both[1].extend(d)
                found = per_client[(conn_id, qs_id)] = [(t, in_tx_order(i), in_tx_order(d))
                                                         for t, (i, d) in merged.items()]
            if len(found) == 1:  # the common case: one shape of the query set matched
                only = found[0]
                update = single.get((qs_id, id(only)))
                if update is None:
                    if not (only[1] or only[2]):
                        continue
                    update = one_part(qs_id, only)
                updates = by_conn.get(conn_id)
                if updates is None:
                    by_conn[conn_id] = [update]
                else:
                    updates.append(update)
                continue
            parts: list[TableRows] = []
            for t, i, d in sorted(found, key=lambda part: part[0]):
                if i or d:
                    rows_key = (t, id(i), id(d))
                    part = shared_rows.get(rows_key)
                    if part is None:
                        part = shared_rows[rows_key] = TableRows(t, i, d, TABLE_BY_NAME[t].event)
                    parts.append(part)
            if parts:
                set_key = (qs_id, *map(id, parts))
                update = shared_sets.get(set_key)
                if update is None:
                    update = shared_sets[set_key] = QuerySetUpdate(qs_id, tuple(parts))
                by_conn.setdefault(conn_id, []).append(update)
        if reply is not None:
            conn, request_id, ret = reply
            self._send(conn, offset, ReducerResult(request_id, offset, ReducerOk(ret, tuple(by_conn.pop(conn.conn_id,
                                                                                                         [])))))
        # receivers of equal updates share one TransactionUpdate, sized once, in one Outbound
        shared: dict[tuple[int, ...], tuple[Outbound, int | None]] = {}

        def sized(updates: list[QuerySetUpdate]) -> tuple[Outbound, int | None]:
            ids = (id(updates[0]),) if len(updates) == 1 else tuple(map(id, updates))
            hit = shared.get(ids)
            if hit is None:
                message = TransactionUpdate(offset, tuple(updates))
                try:
                    size: int | None = self._fits(message)
                except SyncError:  # _send closes each receiver with the error (policy)
                    size = None
                hit = shared[ids] = (Outbound(offset, message), size)
            return hit

        for conn_id, updates in by_conn.items():
            target = self.conns.get(conn_id)
            if target is not None:  # (always: a send closes at most its own connection)
                out, size = sized(updates)
                self._send(target, offset, out.message, size, out)
        live, most, max_bytes = self.conns, self.max_queue, self.max_outbound_bytes
        for only, solo in fast:
            for qs_id, conns in solo:
                update = single.get((qs_id, id(only)))
                out, size = sized([update if update is not None else one_part(qs_id, only)])
                if size is None:  # over the one-message bound: _send measures it again and closes each
                    for conn in conns:
                        self._send(conn, offset, out.message)
                    continue
                # what _send does, inline: the same entry, size, byte count and limits
                for conn in conns:
                    if conn.conn_id not in live:
                        continue
                    queue = conn.outbound
                    queue.append(out)
                    conn.sizes.append(size)
                    conn.outbound_bytes += size
                    if len(queue) > most or (max_bytes is not None and conn.outbound_bytes > max_bytes):
                        self.close(conn.conn_id, SLOW_CONSUMER_REASON)

    def _plan(self, shape: Shape, table: str) -> Plan:
        """The shape's subscribers as the fanout serves them, kept on the shape until any shape's
        subscribers change (``Shape.membership``).  A (conn, qs) pair goes on the fast path when
        the connection has that one query set and every query of it is this shape (its refcount
        here is the set's length): then no other shape can add to what it is sent."""
        groups = shape.groups
        if groups is None:
            groups = shape.groups = {}
            for key in shape.subscribers:
                groups.setdefault(filter_key(self.conns[key[0]].claims, table), []).append(key)
        built: list[Group] = []
        solo_ids: set[int] = set()
        for keys in groups.values():
            general: list[tuple[int, int]] = []
            by_qs: dict[int, list[Connection]] = {}
            for key in keys:
                conn = self.conns[key[0]]
                sets = conn.query_sets
                if len(sets) == 1 and shape.subscribers[key] == len(sets.get(key[1], ())):
                    by_qs.setdefault(key[1], []).append(conn)
                    solo_ids.add(key[0])
                else:
                    general.append(key)
            solo: Solo = tuple((qs_id, tuple(conns)) for qs_id, conns in by_qs.items())
            claims = self.conns[keys[0][0]].claims
            built.append(Group(claims, tuple(general), solo, _row_filter(claims, table)))
        plan = shape.plan = Plan(tuple(built), frozenset(solo_ids))
        shape.planned = Shape.membership
        return plan

    @staticmethod
    def _caller_apart(solo: Solo, caller: Connection | None, seen: Seen,
                      per_client: dict[tuple[int, int], list[Seen]]) -> Solo:
        """``solo`` without the caller's connection, which is given its part on the general path."""
        out = []
        for qs_id, conns in solo:
            if any(c is caller for c in conns):
                assert caller is not None
                per_client.setdefault((caller.conn_id, qs_id), []).append(seen)
                conns = tuple(c for c in conns if c is not caller)
            out.append((qs_id, conns))
        return tuple(out)

    def _shape_candidates(self, table: str, inserts: list[Row], deletes: list[Row]
                          ) -> Iterator[tuple[Shape, list[Row], list[Row]]]:
        """Each shape of ``table`` that can match, with the rows it can match: unpinned shapes
        see every row; a shape pinned to stream S sees only S's rows (so subscriptions to other
        streams cost an insert nothing, however many or long they are)."""
        index = self.shapes_by_pin.get(table)
        if not index:
            return
        for shape in list(index.get(None, {}).values()):
            yield shape, inserts, deletes
        if len(index) == (None in index):
            return
        by_stream: dict[str, tuple[list[Row], list[Row]]] = {}
        for row in inserts:
            by_stream.setdefault(getattr(row, "stream_id"), ([], []))[0].append(row)  # noqa: B009
        for row in deletes:
            by_stream.setdefault(getattr(row, "stream_id"), ([], []))[1].append(row)  # noqa: B009
        for sid, (ins, dels) in by_stream.items():
            for shape in list(index.get(sid, {}).values()):
                yield shape, ins, dels

    def _send(self, conn: Connection, offset: int, message: ServerMessage, size: int | None = None,
              out: Outbound | None = None) -> None:
        """Queue ``message``; past ``max_queue`` messages or ``max_outbound_bytes`` the client is a
        slow consumer.  An update over the one-message bound closes the connection (policy): it
        cannot be split without breaking the transaction's atomicity, and must never be sent
        undecodable; the client resubscribes.  ``out``: the queue entry to append (the receivers
        of one shared update share one), else one is made."""
        if conn.conn_id not in self.conns:
            return
        if size is None:
            try:
                size = self._fits(message)
            except SyncError as err:
                self.close(conn.conn_id, f"{CLOSE_POLICY}: {err.render()}")
                return
        conn.outbound.append(Outbound(offset, message) if out is None else out)
        conn.sizes.append(size)
        conn.outbound_bytes += size
        if len(conn.outbound) > self.max_queue or (
                self.max_outbound_bytes is not None and conn.outbound_bytes > self.max_outbound_bytes):
            self.close(conn.conn_id, SLOW_CONSUMER_REASON)

    # --- delivery ---------------------------------------------------------------------------------

    def _release_bound(self, conn: Connection) -> int | None:
        """The confirmed-read gate (CONF-1), defined once: a confirmed reader's queued messages are
        released up to the durable offset; None: no bound (an unconfirmed reader).  Both
        :meth:`releasable` and :meth:`take` ask it, so they cannot disagree.  A one-off read in
        progress (:meth:`begin_read`) also holds back what was queued after it (later offsets)."""
        reading = conn.reading
        if reading is not None:
            return min(reading, self.durable) if conn.confirmed else reading
        return self.durable if conn.confirmed else None

    def releasable(self, conn_id: int) -> bool:
        conn = self.conns.get(conn_id)
        if conn is None or not conn.outbound:
            return False
        bound = self._release_bound(conn)
        return bound is None or conn.outbound[0].offset <= bound

    @contracts.hot
    @icontract.require(lambda self, conn_id: self.releasable(conn_id), "only a released message may be delivered")
    def pop(self, conn_id: int) -> Outbound:
        conn = self.conns[conn_id]
        conn.outbound_bytes -= conn.sizes.popleft()
        return conn.outbound.popleft()

    @contracts.hot
    @icontract.require(lambda most: most >= 0)
    @icontract.ensure(lambda self, conn_id, result: all(
        not self.conns[conn_id].confirmed or out.offset <= self.durable for out in result)
        if conn_id in self.conns else not result, "only released messages are taken")
    def take(self, conn_id: int, most: int, max_bytes: int, used: int = 0) -> list[Outbound]:
        """Pop one turn of released messages, in queue order: at most ``most`` of them, stopping
        before one whose estimated size would take ``used`` plus the sizes taken past ``max_bytes``
        -- except that a turn that has nothing yet (``used`` 0, nothing taken) takes its first
        message whatever its size.  The same messages, in the same order, as :meth:`pop` called
        while :meth:`releasable` and the size bound allow, in one call per turn (ADR-0018)."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return []
        queue, sizes = conn.outbound, conn.sizes
        durable = self._release_bound(conn)
        if queue and len(queue) <= most and used + conn.outbound_bytes <= max_bytes and (
                durable is None or queue[-1].offset <= durable):
            # the whole queue: released (messages are queued at the committed offset of the moment,
            # so offsets never decrease along a queue) and within both bounds -- what the loop
            # below would take, one message at a time (ADR-0026)
            whole = list(queue)
            queue.clear()
            sizes.clear()
            conn.outbound_bytes = 0
            return whole
        out: list[Outbound] = []
        total = used
        while queue and len(out) < most:
            head = queue[0]
            if durable is not None and head.offset > durable:
                break
            size = sizes[0]
            if total + size > max_bytes and (out or used):
                break
            total += size
            out.append(queue.popleft())
            sizes.popleft()
        conn.outbound_bytes -= total - used
        return out

    def next_size(self, conn_id: int) -> int:
        """The estimated encoded size of the next queued message (0 when nothing is queued)."""
        conn = self.conns.get(conn_id)
        return conn.sizes[0] if conn is not None and conn.sizes else 0

    @contracts.hot
    @icontract.ensure(lambda result: all(b.offset == a.offset + 1 and b.prev_hash == a.hash
                                         for a, b in itertools.pairwise(result)),
                      "records come out consecutive and chained")
    def take_records(self) -> list[TxRecord]:
        out, self.pending_records = self.pending_records, []
        return out

    @contracts.hot
    @icontract.require(lambda self, offset: offset <= self.committed, "nothing past the last commit is durable")
    @icontract.snapshot(lambda self: self.durable, name="durable")
    @icontract.ensure(lambda self, OLD: self.durable >= OLD.durable, "the durable offset never moves back")
    def advance_durable(self, offset: int) -> None:
        self.durable = max(self.durable, offset)
        if self._disconnects:
            self._drain_disconnects()

    # --- recovery ---------------------------------------------------------------------------------

    @classmethod
    @contracts.hot
    @icontract.ensure(lambda clean, result: result.durable == result.committed - (0 if clean else 1),
                      "everything loaded is durable; only an unclean restart's recovery transaction is not yet")
    @icontract.ensure(lambda result: _indexes_consistent(result.db), enabled=icontract.SLOW)
    def recover(cls, records: Iterable[TxRecord], clean: bool, now: int, policy: Policy = DEFAULT_POLICY,
                max_queue: int = 1024, max_undurable: int = 1024,
                start: tuple[Db, int, str] | None = None) -> Engine:
        """Rebuild from the durable commit log: apply every record's delta in order, checking the
        hash chain; then, after an unclean stop, commit the recovery transaction (ADR-0001).
        Raises :class:`ValueError` when the chain does not verify.

        ``start`` is a snapshot's state ``(db, offset, head_hash)`` (ADR-0011): ``records`` are
        then the log after ``offset``, chained to ``head_hash``."""
        eng = cls(policy, max_queue, max_undurable)
        eng.now = now
        if start is not None:
            eng.db, eng.committed, eng.head_hash = start
        # the offset and head in locals while the records are applied (this loop runs per record of a
        # whole-log restart), written back when the loop ends or raises: at the last record applied
        db, committed, head = eng.db, eng.committed, eng.head_hash
        try:
            for rec in records:
                if rec.offset != committed + 1 or rec.prev_hash != head:
                    raise ValueError(f"commit log broken at offset {rec.offset}")
                if record_hash(rec) != rec.hash:
                    raise ValueError(f"commit log hash mismatch at offset {rec.offset}")
                apply_record(db, rec)
                committed = rec.offset
                head = rec.hash
        finally:
            eng.committed, eng.head_hash = committed, head
        eng.durable = eng.committed
        if not clean:
            fresh = max([eng.db.epoch_floor, *(s.epoch for s in eng.db.pk["sync_stream"].values()
                                               if isinstance(s, SyncStream))]) + max_undurable + 1
            version = r.top_version(eng.db) + max_undurable + 1
            eng._system("recovery", (fresh, version), lambda tx: r.recovery_bump(tx, now, max_undurable))
        return eng


def apply_record(db: Db, rec: TxRecord) -> None:
    """Apply a logged transaction to ``db`` as recovery does: its row delta, then the floors it moved
    (:func:`reference.log.record_floors`).  A recovery record's delta holds the stream rows moved to
    their continuing epochs but not the relabelled events (their number is the whole retained log):
    the relabel is re-derived from the rows, each stream's events of ``continues_epoch`` moving to
    ``epoch`` (the record's hash covers those rows, so the relabel is as tamper-evident as a delta)."""
    for change in rec.changes:
        for row in change.deletes:
            db._delete(row)
        for row in change.inserts:
            db._insert(row)
    if rec.kind == "recovery":
        for change in rec.changes:
            for row in change.inserts:
                if isinstance(row, SyncStream) and row.continues_epoch != 0:
                    db.relabel_events(row.stream_id, row.continues_epoch, row.epoch)
    db.epoch_floor, db.version_floor = record_floors(rec, db.epoch_floor, db.version_floor)
