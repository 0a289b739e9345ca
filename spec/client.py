"""The client apply model: how a well-behaved client turns deliveries into local state.

A client follows streams.  For each it keeps a :class:`StreamView` -- the epoch it is in,
``last_applied_seq`` (its watermark), the applied events and ``base`` (below it the application holds a
summary, not events) -- and commits the view to its checkpoint store (:class:`Checkpoint`) in one local
transaction per delivery, as the SDK's ``CheckpointStore`` does with the application's effects.  The
model client knows only what a real one knows: its claims, what it received on the wire and its store.
A crash of its process (:meth:`Client.crash`) keeps the store and nothing else.  The rules:

* follow a stream with no checkpoint from epoch 1, watermark 0: a replay from zero, as the SDK does;
* resume stream S from watermark W in epoch E with one query set of two queries:
  ``SELECT * FROM sync_stream WHERE stream_id = 'S'`` and
  ``SELECT * FROM sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W``;
* apply per event: ``seq <= last`` is a duplicate (dropped); ``seq = last + 1`` is applied;
  ``seq > last + 1`` is a gap, never applied: the client resubscribes from ``last``;
* deletes of ``sync_event`` rows are retention, not retraction: ignored;
* stale: a ``stale_cursor`` SubscriptionError, *or* a ``sync_stream`` row whose epoch differs,
  whose floor passed ``last + 1`` or whose head is below ``last`` (so the client stays safe
  against a server that cannot reject).  Then it *rebootstraps*: the application drops its local
  state of the stream, and the client reads the retained window over the wire
  (:func:`rehydrate_queries`: the stream row and its events, no seq bound, so never stale) and
  applies it from ``floor_seq - 1`` by the same rule (ADR-0013) -- *unless* the stream's new epoch
  continues the client's (ADR-0003): epoch E' with ``continues_epoch == E`` and ``last <= continues_seq``
  and nothing else stale (floor, head) means every event the client applied survived an unclean
  restart under the same seqs, so it adopts E' and resumes from the same watermark, with no
  rebootstrap (a *continue*).  After several unclean restarts the row carries the chain
  (``earlier_epochs``/``earlier_seqs``, ADR-0010): a view whose epoch is an earlier hop continues when
  ``last`` is at or below that hop's bound.  The stale error carries ``continues_epoch``/``continues_seq``
  and the chain so the client can continue from it too;
* any other ``SubscriptionError`` (``forbidden_stream``, ...) is recorded (:attr:`Client.refused`); the
  stream stays followed and is asked for again at the next (re)subscription;
* idle check (:meth:`Client.resync`): resubscribe every followed stream from its checkpoint -- how a
  client learns of a lost update that no later event reveals as a gap.

The client is sans-I/O: every handler returns the messages to send.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import icontract

from spec import query as q
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
from spec.values import SyncEvent, SyncStream, is_id


@dataclass(frozen=True)
class Checkpoint:
    """What a client's checkpoint store holds for one stream, committed in one local transaction with the
    application's effects: the epoch, the watermark, ``base`` (the seq below which the application holds
    a summary, not events: 0 after a replay from zero, ``floor_seq - 1`` after a rehydrate), the applied
    events, whether a rehydrate is under way, and the counts of rebootstraps and continues."""
    epoch: int | None
    last: int
    base: int
    applied: tuple[tuple[int, str], ...]
    rehydrating: bool
    rebootstraps: int
    continues: int


@icontract.invariant(lambda self: self.last >= self.base >= 0 and self.rebootstraps >= 0 and self.continues >= 0,
                     "a watermark is a seq (>= 0) at or above the base; rebootstraps and continues only count up")
@dataclass
class StreamView:
    epoch: int | None = None
    last: int = 0
    applied: list[tuple[int, str]] = field(default_factory=list)
    rebootstraps: int = 0
    continues: int = 0  # epochs adopted without a rebootstrap (their new epoch continued ours)
    base: int = 0  # seqs <= base are not held as events (dropped by a rebootstrap: the application's summary)
    rehydrating: bool = False  # rebootstrapped: waiting for the retained window's snapshot

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.epoch, self.last, self.base, tuple(self.applied), self.rehydrating,
                          self.rebootstraps, self.continues)

    @staticmethod
    def restore(cp: Checkpoint) -> StreamView:
        return StreamView(cp.epoch, cp.last, list(cp.applied), cp.rebootstraps, cp.continues, cp.base,
                          cp.rehydrating)


@functools.lru_cache(maxsize=1024)
def _reads_back(queries: tuple[str, ...], stream_id: str, epoch: int, watermark: int) -> bool:
    """The server's stale check reads exactly (stream, epoch, watermark) back out of the resume queries."""
    (head,), (tail,) = (q.parse(text) for text in queries)
    return (head.table == "sync_stream" and q.pinned_value(head, "stream_id") == stream_id
            and tail.table == "sync_event" and q.pinned_value(tail, "stream_id") == stream_id
            and q.pinned_value(tail, "epoch") == epoch and q.lower_bound_exclusive(tail, "seq") == watermark)


@icontract.require(lambda epoch, watermark: epoch >= 0 and watermark >= 0, "an epoch and a watermark are u64")
@icontract.ensure(lambda stream_id, epoch, watermark, result: not (is_id(stream_id) and max(epoch, watermark) < 2**64)
                  or _reads_back(result, stream_id, epoch, watermark),
                  "STALE-1 (the resume query names the stream, epoch and watermark the server checks)",
                  enabled=icontract.SLOW)
def resume_queries(stream_id: str, epoch: int, watermark: int) -> tuple[str, ...]:
    return (f"SELECT * FROM sync_stream WHERE stream_id = '{stream_id}'",
            f"SELECT * FROM sync_event WHERE stream_id = '{stream_id}' AND epoch = {epoch} AND seq > {watermark}")


def rehydrate_queries(stream_id: str) -> tuple[str, ...]:
    """The rebootstrap's read: the stream row and every retained event of the stream, with no seq bound
    (so not a resume: never stale, never cut by the replay budget).  The snapshot is the retained window
    ``floor_seq..head_seq`` of the current epoch, atomically with the row that names it."""
    return (f"SELECT * FROM sync_stream WHERE stream_id = '{stream_id}'",
            f"SELECT * FROM sync_event WHERE stream_id = '{stream_id}'")


APPLY_RULES: tuple[str, ...] = ("duplicate", "apply", "gap")


@icontract.require(lambda last: last >= 0, "a watermark is a seq (>= 0)")
@icontract.ensure(lambda result: result in APPLY_RULES, "one of the three rules")
@icontract.ensure(lambda last, seq, result: (result == "duplicate") == (seq <= last),
                  "REPLAY-1 (a seq at or below the watermark is a duplicate: dropped)")
@icontract.ensure(lambda last, seq, result: (result == "apply") == (seq == last + 1),
                  "REPLAY-1 (exactly the next seq is applied)")
@icontract.ensure(lambda last, seq, result: (result == "gap") == (seq - last >= 2),
                  "REPLAY-1 (a seq past the next one is a gap: never applied, the client resubscribes)")
def apply_rule(last: int, seq: int) -> str:
    """What a client does with event ``seq`` at watermark ``last`` (the per-event rule of
    :meth:`Client._on_rows`, as a pure function)."""
    if seq <= last:
        return "duplicate"
    return "apply" if seq == last + 1 else "gap"


def continues(epoch: int | None, last: int, new_epoch: int, continues_epoch: int, continues_seq: int,
              earlier_epochs: Sequence[int] = (), earlier_seqs: Sequence[int] = ()) -> bool:
    """May a view at (``epoch``, ``last``) adopt ``new_epoch`` without a rebootstrap?  Exactly when the
    new epoch continues ``epoch`` up to at least ``last``: every event the view holds exists in the new
    epoch under the same seq (ADR-0003 decision 6).  The chain (ADR-0010) is the last hop
    ``(continues_epoch, continues_seq)`` then the earlier hops, newest first; the view's epoch must be
    on it, and ``last`` at or below every bound from the newest hop back to the view's epoch (a server
    writes each earlier bound already folded to that minimum; the client takes it again, so a chain
    written hop by hop is read safely too).  A malformed chain (arrays of different lengths) continues
    nothing."""
    if epoch is None or continues_epoch == 0 or new_epoch == epoch or len(earlier_epochs) != len(earlier_seqs):
        return False
    bound = continues_seq
    for hop_epoch, hop_seq in ((continues_epoch, continues_seq), *zip(earlier_epochs, earlier_seqs, strict=True)):
        bound = min(bound, hop_seq)
        if hop_epoch == epoch:
            return last <= bound
    return False


def _view_of(client: Client, stream_id: str) -> tuple[int | None, int, int, int, bool]:
    view = client.streams[stream_id]
    return view.epoch, view.last, len(view.applied), view.rebootstraps, view.rehydrating


def _applied_in_order(client: Client, stream_id: str, before: tuple[int | None, int, int, int, bool]) -> bool:
    """Without a rebootstrap the view only grew, by events each applied at ``apply_rule == 'apply'``."""
    view = client.streams[stream_id]
    _epoch, last, count, rebootstraps, rehydrating = before
    if view.rebootstraps != rebootstraps or rehydrating:
        return True  # the view was dropped, or is being refilled from the retained window
    new = [seq for seq, _ in view.applied[count:]]
    return (len(view.applied) >= count and view.last == (new[-1] if new else last)
            and all(apply_rule(prev, seq) == "apply" for prev, seq in pairwise([last, *new])))


FIRST_EPOCH = 1
"""Where a stream the client has no checkpoint for starts: epoch 1, watermark 0 (a replay from zero, as the
SDK's consumer does).  If that is not servable, the server says stale and the client rebootstraps."""


@dataclass
class Client:
    """A well-behaved client.  It knows what a real one knows: its claims, what it received on the wire
    and its checkpoint store (:attr:`store`, which survives a crash of the client's process; everything
    else is memory)."""

    client_id: str
    claims: Claims
    confirmed: bool
    streams: dict[str, StreamView] = field(default_factory=dict)
    store: dict[str, Checkpoint] = field(default_factory=dict)  # the durable checkpoint store
    connected: bool = False
    qs_stream: dict[int, str] = field(default_factory=dict)  # live query set -> stream
    pending: dict[int, CallReducer] = field(default_factory=dict)  # calls without a result yet
    results: dict[int, ReducerResult] = field(default_factory=dict)
    gaps_detected: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # stream -> error code of a non-stale refusal
    next_request: int = 1
    next_qs: int = 1

    # --- the checkpoint store ----------------------------------------------------------------

    def _commit(self, stream_id: str) -> None:
        """One local transaction: the view's epoch, watermark and applied events together."""
        self.store[stream_id] = self.streams[stream_id].checkpoint()

    def crash(self) -> None:
        """The client's process dies and restarts: memory is gone (connection, query sets, pending
        calls, refusals), the views are read back from the checkpoint store."""
        self.streams = {s: StreamView.restore(cp) for s, cp in self.store.items()}
        self.connected = False
        self.qs_stream.clear()
        self.pending.clear()
        self.results.clear()
        self.refused.clear()
        self.next_request = self.next_qs = 1

    # --- outgoing ---------------------------------------------------------------------------

    def _rid(self) -> int:
        self.next_request += 1
        return self.next_request - 1

    def follow(self, stream_id: str) -> list[ClientMessage]:
        """Follow a stream: from its checkpoint, or (none) from zero in the first epoch."""
        if stream_id in self.streams:
            return []
        self.streams[stream_id] = StreamView(epoch=FIRST_EPOCH)
        self._commit(stream_id)
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

    def resync(self) -> list[ClientMessage]:
        """The idle check: resubscribe every followed stream from its checkpoint, as after a reconnect.
        The only way a client learns of an update lost with nothing after it (no gap to see)."""
        if not self.connected:
            return []
        out: list[ClientMessage] = []
        for s in sorted(self.streams):
            out.extend(self._resubscribe(s))
        return out

    def _resubscribe(self, stream_id: str) -> list[ClientMessage]:
        out: list[ClientMessage] = []
        for qs, s in list(self.qs_stream.items()):
            if s == stream_id:
                del self.qs_stream[qs]
                out.append(Unsubscribe(self._rid(), qs, send_dropped=True))  # as the official SDKs do
        view = self.streams[stream_id]
        qs = self.next_qs
        self.next_qs += 1
        self.qs_stream[qs] = stream_id
        if view.rehydrating or view.epoch is None:
            out.append(Subscribe(self._rid(), qs, rehydrate_queries(stream_id)))
        else:
            out.append(Subscribe(self._rid(), qs, resume_queries(stream_id, view.epoch, view.last)))
        return out

    def _continue(self, stream_id: str, epoch: int) -> None:
        """Adopt a new epoch that continues the view's: same watermark, same applied events."""
        view = self.streams[stream_id]
        view.epoch = epoch
        view.continues += 1
        self._commit(stream_id)

    def _rebootstrap(self, stream_id: str, epoch: int) -> None:
        """The application drops its local state of the stream (one transaction with the checkpoint); the
        client then reads the retained window (:func:`rehydrate_queries`) and starts over from it."""
        view = self.streams[stream_id]
        view.applied = []
        view.epoch = epoch
        view.base = view.last = 0  # (base first: the view's invariant holds at every step)
        view.rehydrating = True
        view.rebootstraps += 1
        self._commit(stream_id)

    def _rehydrate(self, stream_id: str, row: SyncStream | None) -> None:
        """The rehydrate snapshot's stream row names the window: start just below its floor (no row: the
        stream does not exist yet, nothing to hold).  Its events are applied next, by the usual rule."""
        view = self.streams[stream_id]
        if row is not None:
            view.epoch = row.epoch
            view.last = view.base = max(row.floor_seq - 1, 0)  # (last first, for the invariant)
        view.rehydrating = False

    # --- incoming ---------------------------------------------------------------------------

    def on_message(self, msg: ServerMessage) -> list[ClientMessage]:
        if isinstance(msg, SubscribeApplied):
            stream = self.qs_stream.get(msg.query_set_id)
            if stream is None:
                return []
            self.refused.pop(stream, None)
            return self._on_rows(stream, msg.rows, snapshot=True)
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
                d, view = err.details, self.streams[stream]
                if list(d.get("reasons", ())) == ["epoch_changed"] and continues(
                        view.epoch, view.last, int(d["epoch"]), int(d.get("continues_epoch", 0)),
                        int(d.get("continues_seq", 0)), [int(e) for e in d.get("earlier_epochs", ())],
                        [int(x) for x in d.get("earlier_seqs", ())]):
                    self._continue(stream, int(d["epoch"]))
                else:
                    self._rebootstrap(stream, int(d["epoch"]))
                return self._resubscribe(stream)
            self.refused[stream] = err.code.value  # not followed until the next (re)subscription
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

    @icontract.snapshot(lambda self, stream_id: _view_of(self, stream_id), name="view")
    @icontract.ensure(lambda self, stream_id, OLD: _applied_in_order(self, stream_id, OLD.view),
                      "REPLAY-1 (applied events are contiguous: each is last + 1; the watermark never decreases)")
    def _on_rows(self, stream_id: str, tables: tuple[TableRows, ...], snapshot: bool = False) -> list[ClientMessage]:
        view = self.streams[stream_id]
        rows = [row for t in tables if t.table == "sync_stream" for row in t.inserts if isinstance(row, SyncStream)]
        if view.rehydrating:
            if not snapshot:
                return []  # the rehydrate snapshot comes first on its query set
            self._rehydrate(stream_id, rows[-1] if rows else None)
            rows = []
        for row in rows:
            if row.floor_seq <= view.last + 1 and row.head_seq >= view.last and continues(
                    view.epoch, view.last, row.epoch, row.continues_epoch, row.continues_seq,
                    row.earlier_epochs, row.earlier_seqs):
                self._continue(stream_id, row.epoch)
                return self._resubscribe(stream_id)
            if row.epoch != view.epoch or row.floor_seq > view.last + 1 or row.head_seq < view.last:
                self._rebootstrap(stream_id, row.epoch)
                return self._resubscribe(stream_id)
        events = sorted((r for t in tables if t.table == "sync_event" for r in t.inserts
                         if isinstance(r, SyncEvent)), key=lambda e: e.seq)
        for e in events:
            if e.epoch != view.epoch:
                continue
            rule = apply_rule(view.last, e.seq)
            if rule == "duplicate":
                continue
            if rule == "gap":
                self.gaps_detected += 1
                self._commit(stream_id)
                return self._resubscribe(stream_id)  # never applied
            view.applied.append((e.seq, e.payload_hash))
            view.last = e.seq
        self._commit(stream_id)
        return []
