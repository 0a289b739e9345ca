"""The sans-I/O core of a client connection: ids, query sets, pending calls, routing.

A :class:`Session` knows nothing of sockets.  The connection feeds it decoded server messages
(:meth:`Session.receive`) and connection events (:meth:`Session.connected`,
:meth:`Session.disconnected`), and sends whatever client messages its methods return.  It owns:

* **request ids** -- one counter for subscribe, unsubscribe and reducer calls (as the official
  SDK); any u32 is valid, including 0;
* **query sets** -- each :class:`Subscription` gets a fresh client-chosen ``query_set_id`` every time
  it is (re)subscribed, never reused within a session, so a late message for an old incarnation
  can never be mistaken for the current one.  States: ``pending`` (Subscribe sent or waiting for a
  connection), ``applied``, ``ending`` (Unsubscribe sent), and the final ``ended`` / ``failed``;
* **calls** -- request id to reducer name, so a ``ReducerResult`` is decoded with the right return
  type.  A result whose caller gave up (timeout) is still routed: its transaction update belongs
  to the local state all the same;
* **routing** -- every message's rows are decoded first (a malformed row fails the whole message
  before anything changes), then the rows of cached query sets go to the
  :class:`~adapters.sdk.cache.ClientCache` as one batch, then each subscription's listener hears
  about its own query set.

On a lost connection the live query sets become pending again; on the next connection they are
resubscribed under new ids, recomputing their queries if they were given as a function (the
stream consumer resumes from its watermark that way).  An ``ending`` set is simply over: the
server forgot it with the connection.  Unsubscribe never asks for the dropped rows: the cache
knows each set's contribution.
"""

from __future__ import annotations

import enum
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapters import wire
from adapters.bsatn import decode_row
from adapters.guard import RateLimitedLog
from adapters.sdk.cache import STRAY_LOG_INTERVAL_S, ClientCache
from adapters.sdk.errors import SubscriptionFailed
from adapters.sdk.rows import DecodedRow, QuerySetChange, TableChange
from spec.errors import LocalProtocolError

__all__ = [
    "CallDone",
    "Session",
    "SubState",
    "Subscription",
    "decode_query_rows",
    "decode_transaction",
]

log = logging.getLogger("syncref.sdk.session")

U32_MAX = 2**32 - 1
Queries = Sequence[str] | Callable[[], Sequence[str]]
TablesCallback = Callable[["Subscription", tuple[TableChange, ...]], None]
ErrorCallback = Callable[["Subscription", SubscriptionFailed], None]
EndCallback = Callable[["Subscription"], None]


# --- decoding ----------------------------------------------------------------------------------


def _decode(table: str, rows: wire.RowList) -> tuple[DecodedRow, ...]:
    return tuple(DecodedRow(decode_row(table, raw), raw) for raw in rows.rows())


def decode_query_rows(rows: wire.QueryRows) -> tuple[TableChange, ...]:
    """A snapshot (``QueryRows``) as inserts, one :class:`TableChange` per table."""
    merged: dict[str, list[DecodedRow]] = {}
    for t in rows.tables:
        merged.setdefault(t.table, []).extend(_decode(t.table, t.rows))
    return tuple(TableChange(name, inserts=tuple(rs)) for name, rs in merged.items())


def decode_transaction(update: wire.TransactionUpdate) -> tuple[QuerySetChange, ...]:
    """A transaction's rows per query set, the per-query fragments of each table flattened."""
    out: list[QuerySetChange] = []
    for qs in update.query_sets:
        tables: dict[str, tuple[list[DecodedRow], list[DecodedRow], list[DecodedRow]]] = {}
        for t in qs.tables:
            ins, dels, evs = tables.setdefault(t.table_name, ([], [], []))
            for part in t.rows:
                if isinstance(part, wire.PersistentTableRows):
                    ins.extend(_decode(t.table_name, part.inserts))
                    dels.extend(_decode(t.table_name, part.deletes))
                else:
                    evs.extend(_decode(t.table_name, part.events))
        out.append(QuerySetChange(qs.query_set_id, tuple(
            TableChange(name, tuple(i), tuple(d), tuple(e)) for name, (i, d, e) in tables.items())))
    return tuple(out)


# --- subscriptions -----------------------------------------------------------------------------


class SubState(enum.StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    ENDING = "ending"
    ENDED = "ended"
    FAILED = "failed"


LIVE = frozenset({SubState.PENDING, SubState.APPLIED, SubState.ENDING})


class Subscription:
    """A query set the application holds.  ``queries`` is a list, or a function called at each
    (re)subscribe.  ``cached``: feed the client cache (else only the callbacks see the rows)."""

    def __init__(self, queries: Queries, *, cached: bool = True, on_applied: TablesCallback | None = None,
                 on_update: TablesCallback | None = None, on_error: ErrorCallback | None = None,
                 on_end: EndCallback | None = None) -> None:
        for name, cb in (("on_applied", on_applied), ("on_update", on_update), ("on_error", on_error),
                         ("on_end", on_end)):
            if inspect.iscoroutinefunction(cb):
                raise LocalProtocolError(f"{name} must be a plain function, not async def: subscription callbacks "
                                         "hand over rows in order as each message arrives (start a task from it)")
        self._queries = queries
        self.cached = cached
        self.on_applied, self.on_update, self.on_error, self.on_end = on_applied, on_update, on_error, on_end
        self.state = SubState.PENDING
        self.query_set_id: int | None = None
        self.request_id: int | None = None
        self.queries: tuple[str, ...] = ()
        self.error: SubscriptionFailed | None = None
        self.subscribes = 0  # how many times a Subscribe was sent (1 + resubscriptions)
        self.contributed: int | None = None  # the query set id whose rows the cache holds for this set
        self.watchers: list[Callable[[Subscription], None]] = []  # told of every state change
        self.owner: Callable[[Subscription], None] | None = None  # the connection's unsubscribe

    def current_queries(self) -> tuple[str, ...]:
        qs = self._queries() if callable(self._queries) else self._queries
        if isinstance(qs, str | bytes):  # a str is a Sequence[str]: it would go out one query per character
            raise LocalProtocolError(f"queries must be a list of query strings, not one string: {qs!r:.80}")
        out = tuple(qs)
        if not out or not all(isinstance(q, str) for q in out):
            raise LocalProtocolError("a subscription needs at least one query string")
        for q in out:
            try:
                q.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise LocalProtocolError(f"a query is not encodable as UTF-8 ({exc.reason}): {q!r:.80}") from None
        return out

    def unsubscribe(self) -> None:
        if self.owner is None:
            raise LocalProtocolError("this subscription is not attached to a connection")
        self.owner(self)

    def _set(self, state: SubState) -> None:
        self.state = state
        for w in list(self.watchers):
            w(self)

    def __repr__(self) -> str:
        return f"<Subscription {self.state} qs={self.query_set_id} {self.queries!r:.120}>"


@dataclass(frozen=True, slots=True)
class CallDone:
    request_id: int
    reducer: str | None  # None: nobody is waiting any more (timed out)
    result: wire.ReducerResult


def _guard(what: str, cb: Callable[..., None] | None, *args: object) -> None:
    if cb is None:
        return
    try:
        returned: object = cb(*args)  # (a disguised async one returns a coroutine)
    except Exception:
        log.exception("subscription %s callback raised", what)
        return
    if inspect.isawaitable(returned):  # not an async def (refused at registration), but returns a coroutine
        close = getattr(returned, "close", None)
        if close is not None:
            close()  # (no "never awaited" warning: the error says it)
        log.error("subscription %s returned an awaitable: it was not run (subscription callbacks must be plain "
                  "functions: they hand over rows in order, as each message arrives)", what)


class Session:
    def __init__(self, cache: ClientCache | None = None, *, first_id: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = cache if cache is not None else ClientCache()
        self.cache.attach(self)
        self._next_request = first_id
        self._next_qs = first_id
        self.live: dict[int, Subscription] = {}  # by current query set id
        self.waiting: list[Subscription] = []  # pending, to be sent on the next connection
        self.calls: dict[int, str] = {}
        self.is_connected = False
        # server messages that match nothing here (a SubscriptionError for a set this session does
        # not hold): counted for the application, logged at most once per interval and kind
        self.stray_errors = 0
        self.last_stray_error: str | None = None
        self._stray_log = RateLimitedLog(log, STRAY_LOG_INTERVAL_S, clock)

    # --- ids ---------------------------------------------------------------------------------

    def request_id(self) -> int:
        rid = self._next_request
        self._next_request = 0 if rid >= U32_MAX else rid + 1
        return rid

    def _query_set_id(self) -> int:
        qs = self._next_qs
        self._next_qs = 0 if qs >= U32_MAX else qs + 1
        if qs in self.live:
            raise LocalProtocolError("query set ids exhausted (2^32 subscriptions in one session)")
        return qs

    # --- outgoing ----------------------------------------------------------------------------

    def subscribe(self, sub: Subscription) -> list[wire.ClientMessage]:
        if sub.subscribes or sub in self.waiting or sub.state is not SubState.PENDING:
            raise LocalProtocolError(f"{sub!r} was already subscribed")
        if not self.is_connected:
            sub.current_queries()  # fail early on bad queries
            self.waiting.append(sub)
            return []
        return [self._send_subscribe(sub)]

    def _send_subscribe(self, sub: Subscription) -> wire.Subscribe:
        queries = sub.current_queries()
        qs, rid = self._query_set_id(), self.request_id()
        sub.query_set_id, sub.request_id, sub.queries = qs, rid, queries
        sub.subscribes += 1
        self.live[qs] = sub
        sub._set(SubState.PENDING)
        return wire.Subscribe(rid, qs, queries)

    def unsubscribe(self, sub: Subscription) -> list[wire.ClientMessage]:
        if sub.state not in LIVE or sub.state is SubState.ENDING:
            return []
        if sub in self.waiting or not self.is_connected:
            if sub in self.waiting:
                self.waiting.remove(sub)
            self._end(sub)
            return []
        assert sub.query_set_id is not None
        sub._set(SubState.ENDING)
        return [wire.Unsubscribe(self.request_id(), sub.query_set_id, False)]

    def call(self, reducer: str, args: bytes) -> wire.CallReducer:
        if not self.is_connected:
            raise LocalProtocolError("call() needs a connection")
        rid = self.request_id()
        self.calls[rid] = reducer
        return wire.CallReducer(rid, 0, reducer, args)

    def forget_call(self, request_id: int) -> None:
        """The caller stopped waiting; a late result is still routed, but resolves nothing."""
        self.calls.pop(request_id, None)

    # --- connection events ---------------------------------------------------------------------

    def connected(self) -> list[wire.ClientMessage]:
        """The connection is up (``InitialConnection`` received): (re)subscribe every pending set."""
        self.is_connected = True
        waiting, self.waiting = self.waiting, []
        out: list[wire.ClientMessage] = []
        for sub in waiting:
            try:
                out.append(self._send_subscribe(sub))
            except Exception as exc:
                log.exception("could not resubscribe %r", sub)
                self._fail(sub, SubscriptionFailed(-1, None, f"resubscribe failed: {exc}"))
        return out

    def disconnected(self) -> list[int]:
        """The connection is gone: live sets wait for the next one; returns the calls left unanswered."""
        self.is_connected = False
        for qs, sub in sorted(self.live.items()):
            del self.live[qs]
            if sub.state is SubState.ENDING:
                self._end(sub)
            else:
                self.waiting.append(sub)
                sub._set(SubState.PENDING)
        lost = sorted(self.calls)
        self.calls.clear()
        return lost

    def close(self) -> None:
        """The application closed the connection: every set ends (the cache keeps nothing stale)."""
        self.is_connected = False
        for sub in [*self.live.values(), *self.waiting]:
            self._end(sub)
        self.live.clear()
        self.waiting.clear()
        self.calls.clear()
        self.cache.release(self)

    # --- incoming ------------------------------------------------------------------------------

    def receive(self, msg: wire.ServerMessage) -> list[CallDone]:
        """Route one server message; returns the reducer calls it answers."""
        if isinstance(msg, wire.SubscribeApplied):
            self._on_applied(msg.query_set_id, decode_query_rows(msg.rows))
        elif isinstance(msg, wire.TransactionUpdate):
            self._on_transaction(decode_transaction(msg))
        elif isinstance(msg, wire.ReducerResult):
            reducer = self.calls.pop(msg.request_id, None)
            if isinstance(msg.outcome, wire.ReducerOk):
                self._on_transaction(decode_transaction(msg.outcome.transaction_update))
            return [CallDone(msg.request_id, reducer, msg)]
        elif isinstance(msg, wire.UnsubscribeApplied):
            sub = self.live.pop(msg.query_set_id, None)
            if sub is not None:
                self._end(sub)
        elif isinstance(msg, wire.SubscriptionError):
            sub = self.live.pop(msg.query_set_id, None)
            if sub is None:
                self.stray_errors += 1
                self.last_stray_error = msg.error[:200]
                self._stray_log.log("unknown_query_set", logging.WARNING, f"SubscriptionError for unknown query "
                                    f"set {msg.query_set_id}: {msg.error[:200]}")
            else:
                self._fail(sub, SubscriptionFailed(msg.query_set_id, msg.request_id, msg.error))
        elif isinstance(msg, wire.InitialConnection):
            self._stray_log.log("initial_connection", logging.WARNING, "a second InitialConnection: ignored")
        else:
            log.debug("ignored %s", type(msg).__name__)
        return []

    def _on_applied(self, qs: int, tables: tuple[TableChange, ...]) -> None:
        sub = self.live.get(qs)
        if sub is None:
            log.debug("SubscribeApplied for unknown query set %d", qs)
            return
        if sub.cached:
            old = sub.contributed
            self.cache.apply([QuerySetChange(qs, tables)], replace=[(old, qs)] if old is not None and old != qs else [])
            sub.contributed = qs
        if sub.state is SubState.PENDING:
            sub._set(SubState.APPLIED)
        _guard("on_applied", sub.on_applied, sub, tables)

    def _on_transaction(self, sets: tuple[QuerySetChange, ...]) -> None:
        known = [(self.live[c.query_set_id], c) for c in sets if c.query_set_id in self.live]
        cached = [c for sub, c in known if sub.cached]
        if cached:
            self.cache.apply(cached)
        for sub, c in known:
            _guard("on_update", sub.on_update, sub, c.tables)

    def _end(self, sub: Subscription) -> None:
        if sub.cached and sub.contributed is not None:
            self.cache.apply([], drop=[sub.contributed])
            sub.contributed = None
        sub._set(SubState.ENDED)
        _guard("on_end", sub.on_end, sub)

    def _fail(self, sub: Subscription, error: SubscriptionFailed) -> None:
        if sub.cached and sub.contributed is not None:
            self.cache.apply([], drop=[sub.contributed])
            sub.contributed = None
        sub.error = error
        sub._set(SubState.FAILED)
        _guard("on_error", sub.on_error, sub, error)
