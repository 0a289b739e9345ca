"""The client apply model: how a well-behaved client turns deliveries into local state.

A client follows streams.  For each it persists a :class:`StreamView` -- the epoch it is in,
``last_applied_seq`` (its watermark) and the applied events -- and updates the three together
(atomically, in a real client: one local transaction).  The rules:

* resume stream S from watermark W in epoch E with one query set of two queries:
  ``SELECT * FROM sync_stream WHERE stream_id = 'S'`` and
  ``SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W``;
* apply per event: ``seq <= last`` is a duplicate (dropped); ``seq = last + 1`` is applied;
  ``seq > last + 1`` is a gap, never applied: the client resubscribes from ``last``;
* deletes of ``sync_event`` rows are retention, not retraction: ignored;
* stale: a ``stale_cursor`` SubscriptionError, *or* a ``sync_stream`` row whose epoch differs,
  whose floor passed ``last + 1`` or whose head is below ``last`` (so the client stays safe
  against a server that cannot reject).  Then it rebootstraps: the application's callback drops
  local state and rehydrates from the authority, and the client resumes from the watermark the
  callback returns;
* a stream it has never synced is bootstrapped the same way.

The client is sans-I/O: every handler returns the messages to send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from spec.auth import Claims
from spec.errors import ErrorCode, SyncError
from spec.messages import (
    CallReducer,
    ClientMessage,
    QuerySetUpdate,
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
from spec.values import SyncEvent, SyncStream

Authority = Callable[[str], tuple[int, int, tuple[tuple[int, str], ...]]]
"""The rebootstrap callback's source: stream_id -> (epoch, watermark, ((seq, payload_hash), ...)),
the events of that epoch up to the watermark, as the system of record has them."""


@dataclass
class StreamView:
    epoch: int | None = None
    last: int = 0
    applied: list[tuple[int, str]] = field(default_factory=list)
    rebootstraps: int = 0


def resume_queries(stream_id: str, epoch: int, watermark: int) -> tuple[str, ...]:
    return (f"SELECT * FROM sync_stream WHERE stream_id = '{stream_id}'",
            f"SELECT * FROM sync_event WHERE stream_id = '{stream_id}' AND epoch = {epoch} AND seq > {watermark}")


@dataclass
class Client:
    client_id: str
    claims: Claims
    confirmed: bool
    authority: Authority
    streams: dict[str, StreamView] = field(default_factory=dict)
    connected: bool = False
    qs_stream: dict[int, str] = field(default_factory=dict)  # live query set -> stream
    pending: dict[int, CallReducer] = field(default_factory=dict)  # calls without a result yet
    results: dict[int, ReducerResult] = field(default_factory=dict)
    gaps_detected: int = 0
    forbidden: set[str] = field(default_factory=set)
    next_request: int = 1
    next_qs: int = 1

    # --- outgoing ---------------------------------------------------------------------------

    def _rid(self) -> int:
        self.next_request += 1
        return self.next_request - 1

    def follow(self, stream_id: str) -> list[ClientMessage]:
        if stream_id in self.streams:
            return []
        self.streams[stream_id] = StreamView()
        return self._resubscribe(stream_id) if self.connected else []

    def call(self, reducer: str, args: tuple[object, ...]) -> CallReducer:
        msg = CallReducer(self._rid(), reducer, args)
        self.pending[msg.request_id] = msg
        return msg

    def on_connect(self) -> list[ClientMessage]:
        self.connected = True
        self.qs_stream.clear()
        out: list[ClientMessage] = []
        for s in sorted(self.streams):
            out.extend(self._resubscribe(s))
        return out

    def on_disconnect(self) -> None:
        self.connected = False
        self.qs_stream.clear()

    def _resubscribe(self, stream_id: str) -> list[ClientMessage]:
        out: list[ClientMessage] = []
        for qs, s in list(self.qs_stream.items()):
            if s == stream_id:
                del self.qs_stream[qs]
                out.append(Unsubscribe(self._rid(), qs))
        view = self.streams[stream_id]
        if view.epoch is None:
            self._rebootstrap(stream_id)
        assert view.epoch is not None
        qs = self.next_qs
        self.next_qs += 1
        self.qs_stream[qs] = stream_id
        out.append(Subscribe(self._rid(), qs, resume_queries(stream_id, view.epoch, view.last)))
        return out

    def _rebootstrap(self, stream_id: str) -> None:
        view = self.streams[stream_id]
        epoch, watermark, events = self.authority(stream_id)
        view.epoch = epoch
        view.applied = list(events)
        view.last = watermark
        view.rebootstraps += 1

    # --- incoming ---------------------------------------------------------------------------

    def on_message(self, msg: ServerMessage) -> list[ClientMessage]:
        if isinstance(msg, SubscribeApplied):
            stream = self.qs_stream.get(msg.query_set_id)
            return self._on_rows(stream, msg.rows) if stream else []
        if isinstance(msg, TransactionUpdate):
            return self._on_updates(msg.query_sets)
        if isinstance(msg, ReducerResult):
            self.pending.pop(msg.request_id, None)
            self.results[msg.request_id] = msg
            if isinstance(msg.outcome, ReducerOk):
                return self._on_updates(msg.outcome.query_sets)
            return []
        if isinstance(msg, SubscriptionError):
            stream = self.qs_stream.pop(msg.query_set_id, None)
            if stream is None:
                return []
            err = SyncError.parse(msg.error)
            if err.code is ErrorCode.STALE_CURSOR:
                self._rebootstrap(stream)
                return self._resubscribe(stream)
            self.forbidden.add(stream)
            return []
        assert isinstance(msg, UnsubscribeApplied)
        return []

    def _on_updates(self, updates: tuple[QuerySetUpdate, ...]) -> list[ClientMessage]:
        out: list[ClientMessage] = []
        for u in updates:
            stream = self.qs_stream.get(u.query_set_id)
            if stream is not None:
                out.extend(self._on_rows(stream, u.tables))
        return out

    def _on_rows(self, stream_id: str, tables: tuple[TableRows, ...]) -> list[ClientMessage]:
        view = self.streams[stream_id]
        for t in tables:
            if t.table != "sync_stream":
                continue
            for row in t.inserts:
                assert isinstance(row, SyncStream)
                if row.epoch != view.epoch or row.floor_seq > view.last + 1 or row.head_seq < view.last:
                    self._rebootstrap(stream_id)
                    return self._resubscribe(stream_id)
        events = sorted((r for t in tables if t.table == "sync_event" for r in t.inserts
                         if isinstance(r, SyncEvent)), key=lambda e: e.seq)
        for e in events:
            if e.epoch != view.epoch:
                continue
            if e.seq <= view.last:
                continue  # duplicate
            if e.seq > view.last + 1:
                self.gaps_detected += 1
                return self._resubscribe(stream_id)  # gap: never applied
            view.applied.append((e.seq, e.payload_hash))
            view.last = e.seq
        return []
