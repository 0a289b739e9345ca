"""The stream consumer: apply a sync stream exactly once, in order, durably.

This is :class:`spec.client.Client`'s apply logic (read it first) made real: the watermark lives
in a :class:`~adapters.sdk.checkpoints.CheckpointStore` and moves in the same SQLite transaction
as the application's effects.  Two layers:

:class:`ConsumerCore` is sans-I/O.  It takes the rows and errors of the consumer's query set and
returns :data:`Action` values.  Per stream it holds ``(epoch, watermark)``:

* **resume** -- one query set, :func:`spec.client.resume_queries`: the ``sync_stream`` row and
  ``sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W`` (the form the server's stale
  check reads: ``stream_id`` pinned with ``=``, ``seq`` bounded below, epoch pinned).  The snapshot
  is the replay, transaction updates are the live tail.  A stream never seen starts at epoch 1,
  watermark 0 (a full replay); if that is not possible the stale path below takes over;
* **apply** -- events of the current stream and epoch, sorted by seq, by
  :func:`spec.client.apply_rule`: ``seq <= W`` is a duplicate (dropped), ``W + 1`` is applied,
  anything further is a gap: never applied, the core asks to resubscribe from ``W`` (``Subscribe``).
  Deletes of ``sync_event`` rows are retention and are ignored;
* **stale** -- the server's ``stale_cursor`` SubscriptionError, *or* a ``sync_stream`` row whose
  epoch differs, whose ``floor_seq`` passed ``W + 1`` or whose ``head_seq`` is below ``W`` (so the
  consumer is safe against a server that cannot reject, such as a real SpacetimeDB).  The core
  answers ``Rebootstrap``; the driver runs the application's callback and resets the checkpoint to
  the stream's new epoch and the watermark the callback returned (default ``floor_seq - 1``) in one
  transaction, then the core resubscribes: from the returned watermark, or -- the default -- with
  :func:`spec.client.rehydrate_queries` (no seq bound: the retained window, never stale, not cut by
  the replay budget; ADR-0013 decision 3), until that snapshot has been applied.  The checkpoint
  keeps that mark (``rehydrating``), so a restart before then reads the window again, not a
  seq-bounded resume that can be stale again (a second callback: REPLAY-3 says a restart never
  rebootstraps).  A watermark below ``floor_seq - 1`` or above ``head_seq`` is refused: resuming from
  it would skip events or be stale again;
* **continue** -- the exception (ADR-0003): after an unclean restart of the server the stream's new
  epoch E' *continues* the old one E up to ``continues_seq`` (the durable head; every event up to it
  survived under the same seq).  A consumer at (E, W) with ``W <= continues_seq`` (and nothing else
  stale) saw only surviving events, so the core answers ``Continue`` and the driver moves the
  checkpoint to (E', W) -- the application's state is kept, the rebootstrap callback is *not* called
  -- and resubscribes.  ``spec.client.continues`` is the rule; the server's ``stale_cursor`` carries
  ``continues_epoch``/``continues_seq`` and the earlier hops (``earlier_epochs``/``earlier_seqs``,
  ADR-0010: a consumer several unclean restarts behind continues too), and so does the
  ``sync_stream`` row.  A consumer with ``W > continues_seq`` may have applied events the crash
  lost: it rebootstraps as above.  A confirmed-read consumer only ever sees durable events, so a
  crash never makes it rebootstrap;
* **page** -- a catch-up snapshot (the resume, or the rehydrate's window) refused ``limit_exceeded`` for
  ``max_outbound_message_bytes`` is read in pages (ADR-0040): the stream row and
  ``sync_event WHERE stream_id = 'S' AND epoch = E AND seq > W AND seq <= W + n`` (the server's stale check
  reads it as a resume), ``n`` = ``page_events`` (256) and at most halved on each refusal.  A window refused
  for ``max_scan_rows`` is read as the resume ``seq > W`` instead (not counted), paged if that is over one
  message (or over the replay budget).  Each page
  is applied by the rule above (the watermark moves only with its events; a page that fitted with room to
  spare doubles the next, up to ``page_events``; a page refused with as many bytes as the whole backlog's
  refusal asked past the head and held it all, so the stream row is read alone -- ``seq > W AND seq <= W``,
  its head -- and the next page asks for the share of the backlog that fits); the next page starts at the new
  watermark, until the page's stream row shows the head reached; then the unbounded resume follows live
  (refused again because events kept arriving: more pages).  A page of one event refused is
  :class:`~adapters.sdk.errors.BacklogTooLarge` (that event fits no message), not a loop; a rehydrate
  stays under way (``rehydrating``) until the page reaching the head is applied.  Since ADR-0042 the server
  holds a page against the replay budget for ``min(head, B) - W`` and counts only its rows against
  ``max_scan_rows``: a page refused by the budget alone while it asks for more events than the budget is cut
  to the budget, a window read as a resume that is over the budget is read in such pages, and a page
  refused for ``max_scan_rows`` is cut to the share that fits.  Against a server from before ADR-0042 (a page
  measured to the head, counted as every event after W) a rehydrate page within the budget refused by it
  alone is BacklogTooLarge (``window_over_replay_budget``: a second callback would read the same window),
  and so is a page refused for ``max_scan_rows`` whose count is beyond the page
  (``backlog_over_max_scan_rows``).  Stale and continue signals while paging are handled as anywhere else;
* **ack** -- after every durable apply, ``Ack(epoch, W)``; the driver sends ``ack_checkpoint``
  batched (while one ack is in flight, later ones merge into the highest) and monotonic.

:class:`StreamConsumer` is the asyncio driver on a :class:`~adapters.sdk.connection.Connection`.
Its query set's messages are queued and handled by one task, in order, so a slow ``apply`` or an
awaiting rebootstrap callback never stalls the connection's reader (and may itself call reducers).
Every (re)subscription gets a new query set id; queued messages of an older one are dropped, and a
reconnect resubscribes from the watermark at that moment.  If ``apply`` raises, the events before
it stay committed, the failing one is not applied, the consumer stops and reports the error
(``on_error``, :attr:`StreamConsumer.error`); ``start()`` again resumes from the watermark.  An
application that wants to skip a poison event records it and returns normally: the watermark then
moves past it, as the delivery contract says.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from adapters.sdk.callbacks import Callbacks
from adapters.sdk.checkpoints import ApplyFn, CheckpointStore
from adapters.sdk.errors import (
    BacklogTooLarge,
    CallTimeout,
    ConnectionClosed,
    ConnectionLost,
    ReducerError,
    ReducerInternalError,
    SdkError,
    SubscriptionFailed,
)
from adapters.sdk.rows import TableChange
from adapters.sdk.session import EndCallback, ErrorCallback, Queries, Subscription, TablesCallback
from spec.client import apply_rule, continues, rehydrate_queries, resume_queries
from spec.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from spec.values import SyncEvent, SyncStream, is_id, is_u64

__all__ = [
    "Ack",
    "Action",
    "ConsumerCore",
    "Continue",
    "Fail",
    "Rebootstrap",
    "RebootstrapFn",
    "Resubscribe",
    "Stale",
    "StreamConsumer",
]

log = logging.getLogger("syncref.sdk.consumer")



def _u64_list(value: object) -> list[int] | None:
    """A details array of u64s (``earlier_epochs``/``earlier_seqs``, ADR-0010); None when malformed (the
    consumer then does not continue: it rebootstraps, which is always safe)."""
    if not isinstance(value, list) or not all(is_u64(v) for v in value):
        return None
    return [int(str(v)) for v in value]

@dataclass(frozen=True, slots=True)
class Stale:
    """Why and where the consumer must rebootstrap: the stream's state now and the local cursor."""

    stream_id: str
    reasons: tuple[str, ...]
    epoch: int
    floor_seq: int
    head_seq: int
    local_epoch: int
    local_watermark: int
    from_server: bool  # a stale_cursor SubscriptionError (else: the client's own sync_stream check)

    @property
    def default_watermark(self) -> int:
        """Where to resume when the application returns None: just below the retention floor."""
        return max(self.floor_seq - 1, 0)


@dataclass(frozen=True, slots=True)
class Resubscribe:
    queries: tuple[str, ...]
    reason: str  # start, gap, rebootstrap, continue, page, live, head (the stream row alone), resume


@dataclass(frozen=True, slots=True)
class Rebootstrap:
    stale: Stale


@dataclass(frozen=True, slots=True)
class Continue:
    """Adopt ``epoch``, which continues the consumer's epoch past its watermark: keep everything."""

    epoch: int
    from_server: bool  # a stale_cursor SubscriptionError (else: the sync_stream row)


@dataclass(frozen=True, slots=True)
class Ack:
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Fail:
    error: BaseException


Action = Resubscribe | Rebootstrap | Continue | Ack | Fail

# ack_checkpoint refusals that every later ack of this consumer would get too (the token lacks the scope or
# the stream grant, or another identity owns the client id's checkpoint): the acks stop at the first one
_ACK_REFUSED_FOR_GOOD = frozenset(c.value for c in (ErrorCode.MISSING_SCOPE, ErrorCode.FORBIDDEN_STREAM,
                                                   ErrorCode.FORBIDDEN, ErrorCode.INVALID_ARGUMENT))

RebootstrapFn = Callable[[sqlite3.Connection, Stale], "int | Awaitable[int | None] | None"]


def _stale_from_row(row: SyncStream, epoch: int, watermark: int) -> tuple[str, ...]:
    reasons = []
    if row.epoch != epoch:
        reasons.append("epoch_changed")
    if row.floor_seq > watermark + 1:
        reasons.append("retention_floor_breach")
    if row.head_seq < watermark:
        reasons.append("cursor_ahead_of_head")
    return tuple(reasons)


_U64_MAX = 2**64 - 1

# the limits a catch-up snapshot is refused for that a smaller seq range of it can stay under (ADR-0040)
_PAGEABLE_LIMITS = frozenset({"max_outbound_message_bytes", "max_scan_rows"})


def page_queries(stream_id: str, epoch: int, watermark: int, top: int) -> tuple[str, ...]:
    """One page of a catch-up: the stream row and the events ``watermark < seq <= top`` of ``epoch`` -- a
    resume query (``seq`` bounded below, stream and epoch pinned), so the server's stale check reads it."""
    return (f"SELECT * FROM sync_stream WHERE stream_id = '{stream_id}'",
            f"SELECT * FROM sync_event WHERE stream_id = '{stream_id}' AND epoch = {epoch} AND seq > {watermark} "
            f"AND seq <= {top}")


class ConsumerCore:
    """Sans-I/O: rows and errors in, actions out; effects only through the checkpoint store."""

    MAX_STALE_STREAK = 5
    MAX_GAP_STREAK = 5  # resubscriptions in a row after a gap with nothing applied: then the server is broken
    PAGE_EVENTS = 256  # events asked for in the first page of a paged catch-up (ADR-0040)

    def __init__(self, store: CheckpointStore, stream_id: str, apply: ApplyFn, *,
                 page_events: int = PAGE_EVENTS) -> None:
        if not is_id(stream_id):
            raise LocalProtocolError(f"not a stream id: {stream_id!r:.140}")
        if isinstance(page_events, bool) or not isinstance(page_events, int) or page_events < 1:
            raise LocalProtocolError(f"page_events must be an int >= 1, got {page_events!r:.80}")
        self.page_events = page_events
        self.page_size = 0  # > 0: the catch-up is read in pages of this many events (ADR-0040)
        self.pages = 0  # pages applied (all catch-ups)
        self._page_bytes_max: int | None = None  # max_outbound_message_bytes, from a refusal's details
        self._page_fit: int | None = None  # the size of the last full page applied: where another catch-up starts
        self._refusals = 0  # catch-ups refused over one message in a row with nothing applied between
        # the bytes (``actual``) of the last refusal of a whole backlog -- the unpaged catch-up, or a page that
        # asked past the head -- while no full page was refused since: a page refused with as many held it all
        self._whole: int | None = None
        self._reading_head = False  # asking for the stream row alone (a page of no events): the head, to size a page
        self.head_reads = 0  # such reads (all catch-ups)
        if inspect.iscoroutinefunction(apply):
            raise LocalProtocolError("apply must be a plain function, not async def: it applies each event inside "
                                     "the checkpoint's SQLite transaction before returning")
        self.store, self.stream_id, self.apply = store, stream_id, apply
        self.state = "idle"  # idle, subscribing, live, rebootstrapping, continuing, failed
        self.epoch = 0
        self.watermark = 0
        self.rehydrating = False  # rebootstrapped without a watermark of the application's: read the window
        # the window's read (no seq bound) was refused max_scan_rows: read it with the resume form (seq > W),
        # which the server does not count against max_scan_rows (the replay budget bounds it)
        self.window_as_resume = False
        self.applied = self.duplicates = self.gaps = self.rebootstraps = self.continues = 0
        self._stale_streak = 0
        self._gap_streak = 0

    def queries(self) -> tuple[str, ...]:
        if self._reading_head:  # seq > W AND seq <= W: no events, the stream row (its head) alone
            return page_queries(self.stream_id, self.epoch, self.watermark, self.watermark)
        if self.page_size:
            return page_queries(self.stream_id, self.epoch, self.watermark,
                                min(self.watermark + self.page_size, _U64_MAX))  # (seq is a u64)
        if self.rehydrating and not self.window_as_resume:  # no seq bound: not a resume, so never stale (ADR-0013 d.3)
            return rehydrate_queries(self.stream_id)
        return resume_queries(self.stream_id, self.epoch, self.watermark)

    def start(self) -> list[Action]:
        cp = self.store.load(self.stream_id)
        if cp is None:
            with self.store.transaction() as tx:
                self.store.reset(tx, self.stream_id, 1, 0)
            self.epoch, self.watermark = 1, 0
        else:
            self.epoch, self.watermark = cp.epoch, cp.watermark
        self.rehydrating = cp is not None and cp.rehydrating  # a restart mid-rehydrate reads the window again
        self.state = "subscribing"
        self._gap_streak = self._refusals = self.page_size = 0
        self._whole, self._reading_head = None, False
        self.window_as_resume = False
        return [Resubscribe(self.queries(), "start")]

    # --- incoming --------------------------------------------------------------------------------

    def on_rows(self, tables: Sequence[TableChange], *, snapshot: bool) -> list[Action]:
        if self.state not in ("subscribing", "live"):
            return []
        head: int | None = None  # the stream's head in this message (a page's snapshot: where paging ends)
        for t in tables:
            if t.table != "sync_stream":
                continue
            for r in t.inserts:
                row = r.row
                if not isinstance(row, SyncStream) or row.stream_id != self.stream_id:
                    continue
                head = row.head_seq
                if row.floor_seq <= self.watermark + 1 and row.head_seq >= self.watermark and continues(
                        self.epoch, self.watermark, row.epoch, row.continues_epoch, row.continues_seq,
                        row.earlier_epochs, row.earlier_seqs):
                    self.state = "continuing"
                    return [Continue(row.epoch, from_server=False)]
                reasons = _stale_from_row(row, self.epoch, self.watermark)
                if reasons:
                    return self._stale(Stale(self.stream_id, reasons, row.epoch, row.floor_seq, row.head_seq,
                                             self.epoch, self.watermark, from_server=False))
        if self._reading_head and snapshot:
            return self._head_read(head, tables)
        events = sorted((r.row for t in tables if t.table == "sync_event" for r in t.inserts
                         if isinstance(r.row, SyncEvent) and r.row.stream_id == self.stream_id
                         and r.row.epoch == self.epoch), key=lambda e: e.seq)
        run: list[SyncEvent] = []
        last, gap = self.watermark, False
        for e in events:
            rule = apply_rule(last, e.seq)
            if rule == "duplicate":
                self.duplicates += 1
            elif rule == "apply":
                run.append(e)
                last = e.seq
            else:
                gap = True
                break
        paged = snapshot and self.page_size > 0
        # a page below the head that brings nothing: the server claims events it does not serve (as a gap)
        gap = gap or (paged and not run and head is not None and head > self.watermark)
        # the page's snapshot reaches the head it was read at: the backlog is read, follow live
        caught_up = paged and not gap and (head is None or last >= head)
        out: list[Action] = []
        # the whole window has arrived: once it is applied, resubscriptions resume from the watermark
        window = snapshot and self.rehydrating and not gap and (not paged or caught_up)
        if run or window:
            result = self.store.apply_events(self.stream_id, self.epoch, run, self.apply, rehydrated=window,
                                             expect=self.watermark)
            self.applied += result.applied
            self.watermark = result.watermark
            if result.applied:
                out.append(Ack(self.epoch, self.watermark))
            if result.error is not None:
                self.state = "failed"
                return [*out, Fail(result.error)]
            if window:
                self.rehydrating = self.window_as_resume = False
        if not run and snapshot and self.watermark > 0:
            out.append(Ack(self.epoch, self.watermark))
        self._stale_streak = 0
        if run:
            self._gap_streak = self._refusals = 0
        if gap:
            self.gaps += 1
            self._gap_streak += 1
            if self._gap_streak > self.MAX_GAP_STREAK:  # it claims a window it never serves: no busy loop
                self.state = "failed"
                return [*out, Fail(RemoteProtocolError(
                    f"{self.stream_id}: the server skipped seq {self.watermark + 1} (epoch {self.epoch}) "
                    f"{self._gap_streak} times in a row without delivering it"))]
            self.state = "subscribing"
            return [*out, Resubscribe(self.queries(), "gap")]
        if paged:
            self.pages += 1
            self.state = "subscribing"
            if caught_up:
                self.page_size = 0
                self._whole = None
                return [*out, Resubscribe(self.queries(), "live")]
            self._page_fit = self.page_size  # (below the head: the page was full, and it fitted)
            self._grow_page(tables)
            return [*out, Resubscribe(self.queries(), "page")]
        self.state = "live"
        return out

    def on_error(self, error: SubscriptionFailed) -> list[Action]:
        if self.state not in ("subscribing", "live"):
            return []
        err = error.error
        if err is not None and err.code is ErrorCode.LIMIT_EXCEEDED and err.details.get("limit") in _PAGEABLE_LIMITS:
            return self._page_refused(err.details)
        if err is None or err.code is not ErrorCode.STALE_CURSOR:
            self.state = "failed"
            return [Fail(error)]
        d = err.details
        epoch, floor, head = (d.get(k) for k in ("epoch", "floor_seq", "head_seq"))
        if not (isinstance(epoch, int) and isinstance(floor, int) and isinstance(head, int)
                and all(is_u64(v) for v in (epoch, floor, head))):
            self.state = "failed"
            return [Fail(RemoteProtocolError(f"stale_cursor without epoch/floor_seq/head_seq: {error.message[:200]}"))]
        reasons = d.get("reasons")
        budget = d.get("replay_budget")
        budget_only = reasons == ["replay_budget_exceeded"] and epoch == self.epoch
        if budget_only and is_u64(budget) and int(str(budget)) > 0 and (
                0 < int(str(budget)) < self.page_size or (self.window_as_resume and not self.page_size)):
            # ADR-0042: the server holds a page seq <= B against the budget for min(head, B) - W, so a page of at
            # most the budget passes: cut the page to it, or read the window (over the budget) in such pages
            self.page_size = min(self.page_size or self._page_fit or self.page_events, int(str(budget)))
            log.info("%s: over the replay budget (%s): reading pages of %d events from seq %d", self.stream_id,
                     budget, self.page_size, self.watermark)
            self.state = "subscribing"
            return [Resubscribe(self.queries(), "page")]
        if (self.page_size or self.window_as_resume) and self.rehydrating and budget_only:
            # a page within the budget refused for it alone: a server from before ADR-0042, which measures a
            # page to the head
            self.state = "failed"
            return [Fail(BacklogTooLarge(
                self.stream_id, self.epoch, self.watermark + 1, "window_over_replay_budget",
                f"the retained window (seq {self.watermark + 1}..{head}, epoch {self.epoch}) is over one message "
                f"and a page of it from seq {self.watermark + 1} is over the stream's replay budget "
                f"({d.get('replay_budget')}) on this server, which measures a page to the head (before ADR-0042): "
                "it cannot be read; upgrade the server, raise its replay_budget or "
                "max_outbound_message_bytes/max_scan_rows, or have on_rebootstrap return a watermark of its own",
                dict(d)))]
        cont_epoch, cont_seq = d.get("continues_epoch", 0), d.get("continues_seq", 0)
        earlier = (_u64_list(d.get("earlier_epochs", [])), _u64_list(d.get("earlier_seqs", [])))
        if reasons == ["epoch_changed"] and is_u64(cont_epoch) and is_u64(cont_seq) and None not in earlier \
                and continues(self.epoch, self.watermark, epoch, int(str(cont_epoch)), int(str(cont_seq)),
                              earlier[0] or (), earlier[1] or ()):
            self.state = "continuing"
            return [Continue(epoch, from_server=True)]
        return self._stale(Stale(self.stream_id, tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
                                 epoch, floor, head, self.epoch, self.watermark, from_server=True))

    def _grow_page(self, tables: Sequence[TableChange]) -> None:
        """A page that fitted with room to spare: double the next one (up to ``page_events``) when its rows,
        doubled, stay under 3/4 of the server's one-message bound -- so one large event that cut the page
        does not leave the rest of the catch-up in pages of a few events (ADR-0040, amended)."""
        most = self._page_bytes_max
        if most is None or self.page_size >= self.page_events:
            return
        size = sum(len(r.raw) for t in tables for r in t.inserts)
        if 2 * size * 4 <= 3 * most:
            self.page_size = min(self.page_events, 2 * self.page_size)

    def _page_refused(self, details: Mapping[str, object]) -> list[Action]:
        """A catch-up snapshot over one message (``limit_exceeded``): read it in (smaller) pages."""
        most, limit = details.get("max"), details.get("limit")
        if limit == "max_outbound_message_bytes" and is_u64(most) and int(str(most)) > 0:
            self._page_bytes_max = int(str(most))
        if limit == "max_scan_rows" and self.rehydrating and not self.page_size and not self.window_as_resume:
            # the window's read counts every retained event; the resume form from W is not counted
            self.window_as_resume = True
            log.info("%s: the retained window is over max_scan_rows (%s > %s): reading it as a resume from seq %d",
                     self.stream_id, details.get("actual"), most, self.watermark)
            self.state = "subscribing"
            return [Resubscribe(self.queries(), "resume")]
        actual = details.get("actual")
        beyond_the_page = not is_u64(actual) or int(str(actual)) > self.page_size + 1
        if limit == "max_scan_rows" and self.page_size and beyond_the_page:
            # counted beyond the page (its events and the stream row): a server from before ADR-0042, which
            # counts every event of the stream after W whatever the page's size -- a smaller page would be
            # refused the same way (since ADR-0042 a page counts its own rows: cut below, as for bytes)
            self.state = "failed"
            return [Fail(BacklogTooLarge(
                self.stream_id, self.epoch, self.watermark + 1, "backlog_over_max_scan_rows",
                f"the backlog from seq {self.watermark + 1} (epoch {self.epoch}) is over one message, and the "
                f"server counts each page of it as every event after seq {self.watermark} ({details.get('actual')} "
                f"> max_scan_rows {most}; a server from before ADR-0042): upgrade the server, raise its max_scan_rows "
                "or max_outbound_message_bytes, or have on_rebootstrap return a watermark of its own", dict(details)))]
        if self.page_size == 1:
            self.state = "failed"
            seq = self.watermark + 1
            return [Fail(BacklogTooLarge(
                self.stream_id, self.epoch, seq, "event_too_large",
                f"event seq {seq} (epoch {self.epoch}) alone is over the server's {details.get('limit')} "
                f"({details.get('actual')} > {details.get('max')}): no message of this server can carry it",
                dict(details)))]
        if self.page_size and limit == "max_outbound_message_bytes" and self._whole is not None and is_u64(actual) \
                and int(str(actual)) >= self._whole:
            # as many bytes as the whole backlog: the page asked past the head and held all of it -- fewer events
            # than it asked for, so the share n * max / actual (which assumes n) says nothing, and halving blind
            # costs up to log2(page_events) refusals, each the whole backlog measured again.  Read the head
            # (the stream row alone), then ask for the share of the backlog that fits (_head_read)
            self._whole = int(str(actual))
            self._reading_head = True
            self.head_reads += 1
            log.info("%s: a page of %d events held the whole backlog and is over one message: reading the head",
                     self.stream_id, self.page_size)
            self.state = "subscribing"
            return [Resubscribe(self.queries(), "head")]
        if self.page_size:
            self._whole = None  # a full page refused: the share below holds, and no later page holds it all
            actual, most = details.get("actual"), details.get("max")
            smaller = self.page_size // 2
            if is_u64(actual) and is_u64(most) and int(str(actual)) > 0:  # the share of it that fits
                smaller = min(smaller, self.page_size * int(str(most)) // int(str(actual)))
            self.page_size = max(1, smaller)
        else:
            self._refusals += 1
            if self._refusals > self.MAX_GAP_STREAK:  # refused, paged to the head, refused, ... applying nothing
                self.state = "failed"
                return [Fail(RemoteProtocolError(
                    f"{self.stream_id}: the catch-up from seq {self.watermark} (epoch {self.epoch}) was refused "
                    f"over one message {self._refusals} times in a row, its pages bringing nothing"))]
            # (not page_events again: a catch-up refused anew -- events kept arriving -- would be cut by the
            # same refusals as the last one)
            self.page_size = min(self.page_events, self._page_fit or self.page_events)
            whole = limit == "max_outbound_message_bytes" and is_u64(actual)
            self._whole = int(str(actual)) if whole else None
        log.info("%s: catch-up over one message (%s): reading pages of %d events from seq %d", self.stream_id,
                 details.get("limit"), self.page_size, self.watermark)
        self.state = "subscribing"
        return [Resubscribe(self.queries(), "page")]

    def _head_read(self, head: int | None, tables: Sequence[TableChange]) -> list[Action]:
        """The stream row read alone after a page that held the whole backlog was refused: its head says how
        many events that backlog has, so the next page asks for the share of them that fits --
        ``(max - row) * events // (actual - row)``, the row's bytes taken out of both -- at most
        ``page_events``, and fewer than the backlog (it was over ``max``).  Without a head (no row): half."""
        self._reading_head = False
        whole, self._whole = self._whole, None
        most = self._page_bytes_max
        row = sum(len(r.raw) for t in tables for r in t.inserts)
        backlog = 0 if head is None else head - self.watermark
        self.state = "subscribing"
        if head is not None and backlog <= 0:  # nothing past the watermark any more: follow live
            self.page_size = 0
            return [Resubscribe(self.queries(), "live")]
        if head is None or whole is None or most is None or whole <= row:
            self.page_size = max(1, self.page_size // 2)
        else:
            share = max(0, most - row) * backlog // (whole - row)
            self.page_size = max(1, min(self.page_events, backlog - 1, share))
        log.info("%s: %d events from seq %d (head %s): reading pages of %d events", self.stream_id, backlog,
                 self.watermark + 1, head, self.page_size)
        return [Resubscribe(self.queries(), "page")]

    def _stale(self, stale: Stale) -> list[Action]:
        self._stale_streak += 1
        if self._stale_streak > self.MAX_STALE_STREAK:
            self.state = "failed"
            return [Fail(RemoteProtocolError(f"{self.stream_id}: still stale after {self.MAX_STALE_STREAK} "
                                             f"rebootstraps in a row ({stale})"))]
        self.state = "rebootstrapping"
        return [Rebootstrap(stale)]

    # --- rebootstrap -----------------------------------------------------------------------------

    def rebootstrap_watermark(self, stale: Stale, returned: object) -> int:
        """Check the watermark the application's callback returned (None: the default)."""
        if returned is None:
            return stale.default_watermark
        if not is_u64(returned):
            raise LocalProtocolError(f"on_rebootstrap must return a watermark (int >= 0) or None, got {returned!r:.80}")
        assert isinstance(returned, int)
        if returned < stale.floor_seq - 1 or returned > stale.head_seq:
            raise LocalProtocolError(
                f"on_rebootstrap returned watermark {returned}, outside [{stale.floor_seq - 1}, {stale.head_seq}] "
                f"(floor_seq - 1 .. head_seq) of {stale.stream_id} epoch {stale.epoch}: resuming there would "
                f"skip events or be stale again")
        return returned

    def rebootstrapped(self, epoch: int, watermark: int, *, rehydrate: bool = False) -> list[Action]:
        """The checkpoint now holds (epoch, watermark): resume there.  ``rehydrate`` (the application
        returned no watermark of its own): read the retained window with no seq bound, as the model client
        does, applying it from ``watermark`` -- a resume from ``floor_seq - 1`` can be stale again (the
        replay budget), the rehydrate read cannot, so one stale signal costs one rebootstrap."""
        if self.state != "rebootstrapping":
            raise LocalProtocolError(f"rebootstrapped() in state {self.state}")
        self.epoch, self.watermark = epoch, watermark
        self.rehydrating = rehydrate
        self.window_as_resume = False
        self.page_size = 0  # another catch-up: one snapshot first (paged again if that is refused)
        self._whole, self._reading_head = None, False
        self.rebootstraps += 1
        self.state = "subscribing"
        out: list[Action] = [Resubscribe(self.queries(), "rebootstrap")]
        if watermark > 0:
            out.insert(0, Ack(epoch, watermark))
        return out

    def continued(self, epoch: int) -> list[Action]:
        """The checkpoint now holds (epoch, watermark): resume there, keeping everything applied."""
        if self.state != "continuing":
            raise LocalProtocolError(f"continued() in state {self.state}")
        self.epoch = epoch
        self.continues += 1
        self.state = "subscribing"
        out: list[Action] = [Resubscribe(self.queries(), "continue")]
        if self.watermark > 0:
            out.insert(0, Ack(epoch, self.watermark))
        return out

    def stopped(self) -> None:
        self.state = "idle"


# --- the asyncio driver ---------------------------------------------------------------------------


class ConsumerConnection(Protocol):
    """What the consumer needs of a connection (:class:`~adapters.sdk.connection.Connection` has it)."""

    def subscribe(self, queries: Queries, *, cached: bool = ..., on_applied: TablesCallback | None = ...,
                  on_update: TablesCallback | None = ..., on_error: ErrorCallback | None = ...,
                  on_end: EndCallback | None = ...) -> Subscription: ...

    async def call(self, reducer: str, *args: object, timeout: float | None = ...) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Item:
    sub: Subscription
    query_set_id: int | None
    kind: str  # applied, update, error, end
    tables: tuple[TableChange, ...] = ()
    error: SubscriptionFailed | None = None
    size: int = 0  # the rows' wire bytes, counted against ``max_queue_bytes``


def _row_bytes(tables: tuple[TableChange, ...]) -> int:
    return sum(len(r.raw) for t in tables for rows in (t.inserts, t.deletes, t.events) for r in rows)


class StreamConsumer:
    """Follow one stream: replay from the stored watermark, then the live tail, acking as it goes.

    ``apply(tx, event)`` runs inside the checkpoint transaction (do not commit).  ``on_rebootstrap(tx,
    stale)`` drops and rehydrates local state inside the transaction that resets the checkpoint; it
    may be async, and returns the watermark to resume from (None: ``stale.floor_seq - 1``).
    ``client_id`` names this consumer in ``ack_checkpoint``; None sends no acks.

    The connection's reader hands over every message at once, so a server sending faster than ``apply``
    commits would grow the queue without bound (and never see a slow consumer).  Past ``max_queue``
    messages or ``max_queue_bytes`` of rows the consumer *sheds*: it unsubscribes, drops what still
    arrives for that set, applies what it kept and, when the set has ended, resubscribes from its
    durable watermark (:attr:`overflows` counts it).  A snapshot is never shed (see ``_enqueue``).

    A catch-up the server refuses as over one message (``limit_exceeded``) is read in pages of at most
    ``page_events`` events (ADR-0040; ``core.pages`` counts them); an event that fits no message stops the
    consumer with :class:`~adapters.sdk.errors.BacklogTooLarge`.
    """

    def __init__(self, conn: ConsumerConnection, store: CheckpointStore, stream_id: str, *, apply: ApplyFn,
                 on_rebootstrap: RebootstrapFn, client_id: str | None = None,
                 on_error: Callable[[BaseException], object] | None = None, ack_delay: float = 0.0,
                 ack_timeout: float = 30.0, ack_retry: float = 1.0, max_queue: int = 1024,
                 max_queue_bytes: int = 64 * 1024 * 1024, page_events: int = ConsumerCore.PAGE_EVENTS) -> None:
        if client_id is not None and not is_id(client_id):
            raise LocalProtocolError(f"not a client id: {client_id!r:.140}")
        self.conn, self.store = conn, store
        self.core = ConsumerCore(store, stream_id, apply, page_events=page_events)
        self.stream_id, self.client_id = stream_id, client_id
        self.on_rebootstrap, self.on_error = on_rebootstrap, on_error
        self.ack_delay, self.ack_timeout, self.ack_retry = ack_delay, ack_timeout, ack_retry
        if max_queue < 1 or max_queue_bytes < 1:
            raise LocalProtocolError("max_queue and max_queue_bytes must be positive")
        self.max_queue, self.max_queue_bytes = max_queue, max_queue_bytes
        self.overflows = 0
        self._queued_bytes = 0
        self._shed: Subscription | None = None  # unsubscribed for a full queue: resubscribe when it ends
        self.error: BaseException | None = None
        self._error_tb: TracebackType | None = None  # the error's own traceback (an apply's bug: where it was)
        self.acked: tuple[int, int] | None = None  # the last ack the server accepted
        self.acks_sent = 0
        self.ack_error: SdkError | None = None  # the refusal that stopped the acks (until the next start())
        self._ack_settled: tuple[int, int] | None = None  # the last target answered (accepted or refused)
        self._ack_target: tuple[int, int] | None = None
        self._ack_wake = asyncio.Event()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._stops = 0  # how many times stop() ran: a wait_for across one is told, not left hanging
        self._callbacks = Callbacks(log)
        self.stop_timeout = 2.0  # seconds stop() gives an async on_error still running, then cancels it

    # --- public ----------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.core.epoch

    @property
    def watermark(self) -> int:
        return self.core.watermark

    @property
    def subscription(self) -> Subscription | None:
        return self._sub

    @property
    def queued(self) -> int:
        """Messages received and not yet handled."""
        return self._queue.qsize()

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            raise LocalProtocolError("the consumer is already running")
        self.error, self._error_tb = None, None
        self._queue = asyncio.Queue()
        self._queued_bytes, self._shed = 0, None
        async with self.store.async_lock():  # (under the lock: two start()s of one stream are serialized)
            holder = self.store.followers.get(self.stream_id)
            if isinstance(holder, StreamConsumer) and holder is not self and holder._following():
                raise LocalProtocolError(
                    f"another StreamConsumer already follows {self.stream_id!r} through this CheckpointStore: "
                    "they would share one watermark (the store keeps one per stream); stop it first")
            self.store.followers[self.stream_id] = self
            await self._perform(self.core.start())
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.stream_id}")
        if self.client_id is not None and (self._ack_task is None or self._ack_task.done()):
            self.ack_error = None
            self._ack_task = asyncio.create_task(self._ack_loop(), name=f"acks:{self.stream_id}")
        hook = getattr(self.conn, "add_close_hook", None)  # connections that offer it: flush acks on close
        if hook is not None:
            hook(self._flush_on_close)

    def _following(self) -> bool:
        """Started, and neither stopped nor failed."""
        return self.core.state not in ("idle", "failed") and self._task is not None and not self._task.done()

    def _closing(self) -> bool:
        """The application is closing the connection: what ends now is a normal shutdown."""
        return bool(getattr(self.conn, "closing", False))

    async def _flush_on_close(self) -> None:
        await self.flush_acks()

    async def stop(self) -> None:
        unhook = getattr(self.conn, "remove_close_hook", None)
        if unhook is not None:
            unhook(self._flush_on_close)
        self._drop_subscription()
        for task in (self._task, self._ack_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._ack_task = None
        self.core.stopped()
        self._stops += 1
        async with self._progress:
            self._progress.notify_all()
        # nothing the consumer started outlives stop(): an async on_error still running gets stop_timeout,
        # then is cancelled (not the one stop() is called from: an async on_error may stop its consumer)
        await self._callbacks.drain(self.stop_timeout)

    async def wait_for(self, seq: int, *, epoch: int | None = None) -> int:
        """Wait until the watermark reaches ``seq`` (in ``epoch``, if given); raises the consumer's error, or
        LocalProtocolError if :meth:`stop` runs meanwhile (nothing would move the watermark)."""
        stops = self._stops
        async with self._progress:
            await self._progress.wait_for(lambda: self.error is not None or self._stops != stops or (
                self.core.watermark >= seq and (epoch is None or self.core.epoch == epoch)))
        if self.error is not None:
            raise self.error.with_traceback(self._error_tb)  # raised at every call: not growing with each
        if self._stops != stops and not (self.core.watermark >= seq and (epoch is None or self.core.epoch == epoch)):
            raise LocalProtocolError(f"{self.stream_id}: the consumer was stopped while waiting for seq {seq} "
                                     f"(watermark {self.core.watermark})")
        return self.core.watermark

    async def flush_acks(self) -> None:
        """Wait until the last durable watermark has been acked (or given up on)."""
        while self.client_id is not None and self._ack_target is not None and self._ack_target != self._ack_settled:
            if self._ack_task is None or self._ack_task.done():
                return
            await asyncio.sleep(0.01)

    # --- subscription plumbing -------------------------------------------------------------------

    def _subscribe(self) -> None:
        self._drop_subscription()
        self._shed = None
        self._sub = self.conn.subscribe(
            self.core.queries, cached=False,
            on_applied=lambda sub, tables: self._enqueue(_Item(sub, sub.query_set_id, "applied", tables)),
            on_update=lambda sub, tables: self._enqueue(_Item(sub, sub.query_set_id, "update", tables)),
            on_error=lambda sub, err: self._enqueue(_Item(sub, sub.query_set_id, "error", error=err)),
            on_end=lambda sub: self._enqueue(_Item(sub, sub.query_set_id, "end")))

    def _drop_subscription(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(LocalProtocolError):
                sub.unsubscribe()

    def _enqueue(self, item: _Item) -> None:
        if item.kind in ("applied", "update"):
            if item.sub is self._shed:
                return  # replayed from the watermark after the resubscription
            size = _row_bytes(item.tables)
            # a snapshot is never shed: it is its set's first message (no backlog of the set to cut), and
            # the resubscription would only bring it back -- one larger than the byte bound, forever
            if item.kind == "update" and item.sub is self._sub and (
                    self._queue.qsize() >= self.max_queue or self._queued_bytes + size > self.max_queue_bytes):
                self._shed = item.sub
                self.overflows += 1
                log.info("%s: %d messages (%d bytes) queued: unsubscribing, to resume from the watermark",
                         self.stream_id, self._queue.qsize(), self._queued_bytes)
                with contextlib.suppress(LocalProtocolError):
                    item.sub.unsubscribe()
                return
            self._queued_bytes += size
            item = _Item(item.sub, item.query_set_id, item.kind, item.tables, item.error, size)
        self._queue.put_nowait(item)

    # --- the task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while self.core.state not in ("failed", "idle"):
            item = await self._queue.get()
            self._queued_bytes -= item.size
            async with self.store.async_lock():  # consumers sharing the store take turns
                if item.sub is not self._sub or item.query_set_id != item.sub.query_set_id:
                    continue  # an older incarnation of the query set
                try:
                    if item.kind == "end" and item.sub is self._shed:  # shed: everything kept is applied
                        self._subscribe()
                        continue
                    if item.kind == "end" and self._closing():  # the application closed it: a normal stop
                        await self._closed_normally()
                        continue
                    if item.kind == "end":  # not dropped by us: the connection was closed for good
                        cause = getattr(self.conn, "fatal", None)  # why it gave up (a 401 token revoked ...)
                        closed = ConnectionClosed(f"{self.stream_id}: the connection was closed"
                                                  + (f": {cause}" if cause is not None else ""))
                        closed.__cause__ = cause
                        actions: list[Action] = [Fail(closed)]
                    elif item.kind == "error":
                        assert item.error is not None
                        actions = self.core.on_error(item.error)
                    else:
                        actions = self.core.on_rows(item.tables, snapshot=item.kind == "applied")
                    await self._perform(actions)
                except Exception as exc:  # e.g. the connection was closed for good, or the store failed
                    await self._fail(exc)
            async with self._progress:
                self._progress.notify_all()

    async def _perform(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Resubscribe):
                log.debug("%s: subscribe (%s) from epoch %d seq %d", self.stream_id, a.reason, self.core.epoch,
                          self.core.watermark)
                self._subscribe()
            elif isinstance(a, Ack):
                self._want_ack(a.epoch, a.seq)
            elif isinstance(a, Continue):
                self._drop_subscription()
                log.info("%s: epoch %d continues %d past watermark %d: no rebootstrap", self.stream_id, a.epoch,
                         self.core.epoch, self.core.watermark)
                with self.store.transaction() as tx:  # a rehydrate under way stays under way
                    self.store.reset(tx, self.stream_id, a.epoch, self.core.watermark,
                                     rehydrating=self.core.rehydrating,
                                     expect=(self.core.epoch, self.core.watermark))  # never rewind another's
                await self._perform(self.core.continued(a.epoch))
            elif isinstance(a, Rebootstrap):
                self._drop_subscription()
                try:
                    epoch, watermark, rehydrate = await self._rebootstrap(a.stale)
                except Exception as exc:
                    await self._fail(exc)
                    return
                await self._perform(self.core.rebootstrapped(epoch, watermark, rehydrate=rehydrate))
            else:
                await self._fail(a.error)
                return

    async def _rebootstrap(self, stale: Stale) -> tuple[int, int, bool]:
        log.info("%s: rebootstrap (%s): epoch %d -> %d, watermark %d", self.stream_id, ",".join(stale.reasons),
                 stale.local_epoch, stale.epoch, stale.local_watermark)
        with self.store.transaction() as tx:
            returned = self.on_rebootstrap(tx, stale)
            if inspect.isawaitable(returned):
                returned = await returned
            watermark = self.core.rebootstrap_watermark(stale, returned)
            self.store.reset(tx, self.stream_id, stale.epoch, watermark, rehydrating=returned is None)
        return stale.epoch, watermark, returned is None

    async def _closed_normally(self) -> None:
        """The application closed the connection: stop without an error report (``wait_for`` still
        raises ConnectionClosed, as nothing more will arrive)."""
        self._drop_subscription()
        self.core.stopped()
        self._error_tb = None
        self.error = ConnectionClosed(f"{self.stream_id}: the connection was closed by the application")
        if self._ack_task is not None and not self._ack_task.done():
            self._ack_task.cancel()  # close() already gave it its chance to flush
        log.debug("%s: consumer stopped: the connection was closed (watermark %d)", self.stream_id,
                  self.core.watermark)
        async with self._progress:
            self._progress.notify_all()

    async def _fail(self, error: BaseException) -> None:
        self._drop_subscription()
        self.core.state = "failed"
        self.error, self._error_tb = error, error.__traceback__
        log.error("%s: consumer stopped: %s", self.stream_id, error)
        self._callbacks.run("on_error", self.on_error, error)  # (an async def one: a task, not under the lock)
        async with self._progress:
            self._progress.notify_all()

    # --- acks -------------------------------------------------------------------------------------

    def _want_ack(self, epoch: int, seq: int) -> None:
        if self.client_id is None:
            return
        t = self._ack_target
        if t is None or t[0] != epoch or seq > t[1]:
            self._ack_target = (epoch, seq)
            self._ack_wake.set()

    async def _ack_loop(self) -> None:
        assert self.client_id is not None
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            if self.ack_delay:
                await asyncio.sleep(self.ack_delay)
            while (target := self._ack_target) is not None and target != self._ack_settled:
                done = self._ack_settled
                if done is not None and done[0] == target[0] and done[1] >= target[1]:
                    break
                try:
                    await self.conn.call("ack_checkpoint", self.client_id, self.stream_id, target[0], target[1],
                                         timeout=self.ack_timeout)
                    self.acks_sent += 1
                except (ConnectionLost, CallTimeout) as exc:
                    log.info("%s: ack %s not answered (%s); retrying", self.stream_id, target, exc)
                    await asyncio.sleep(self.ack_retry)
                    continue
                except (ReducerError, ReducerInternalError) as exc:
                    self._ack_settled = target  # not acked: never reported as such, not retried
                    if isinstance(exc, ReducerError) and exc.code in _ACK_REFUSED_FOR_GOOD:
                        # every later ack would be refused the same way: stop, say so once
                        self.ack_error = exc
                        log.warning("%s: acks stopped: ack %s refused: %s", self.stream_id, target, exc)
                        return
                    log.warning("%s: ack %s refused: %s", self.stream_id, target, exc)
                    continue
                except SdkError as exc:  # closed for good (or refused for good): nothing left to ack on
                    if self._closing():  # a normal shutdown: the checkpoint server-side lags, said once
                        log.debug("%s: acks stopped at close: %s not acked (acked %s)", self.stream_id, target,
                                  self.acked)
                    else:
                        log.warning("%s: acks stopped: %s", self.stream_id, exc)
                    return
                self.acked = self._ack_settled = target
