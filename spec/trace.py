"""Trace invariants: checks over what every client observed, step by step.

:class:`Trace` is fed by :class:`spec.system.System` -- every committed state, every message a
client consumes, every crash -- and accumulates :data:`~spec.invariants.Violation` s.  It keeps:

* the global map (stream, epoch, seq) -> payload hash of everything ever committed or received
  (SEQ-2), which survives crashes on purpose;
* per connection, the offset of the last message (DELIV-1) and, per query set, a mirror of the
  rows received, compared after every message with the query set evaluated on the server state
  at that message's offset (DELIV-2);
* the events each confirmed-read client received, which a crash must never lose (CONF-2).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from spec import query as q
from spec.auth import can_read
from spec.errors import ErrorCode, SyncError
from spec.invariants import (
    Violation,
    check_recovery,
    check_retention,
    check_state,
    check_sweep,
    check_transition,
    stale_reasons,
    versioned_content,
)
from spec.messages import (
    Outbound,
    QuerySetUpdate,
    ReducerOk,
    ReducerResult,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableRows,
    TransactionUpdate,
)
from spec.policy import DEFAULT_POLICY, Policy
from spec.reducers import virtual_stream
from spec.schema import TABLE_BY_NAME
from spec.state import DbState
from spec.values import ComputeAssignment, ProviderCapability, Row, SyncCheckpoint, SyncEvent, SyncStream

if TYPE_CHECKING:
    from spec.client import Client
    from spec.harness import Server


@dataclass
class Mirror:
    rows: Counter[Row] = field(default_factory=Counter)


def _shares(epoch: int | None, last: int, cont_epoch: Any, cont_seq: Any, epochs: Any, seqs: Any) -> bool:
    """CONT-1, re-derived from a message alone and written apart from :func:`spec.client.continues`:
    the chain as a map epoch -> the seqs of every hop from the newest back to it; the view's events
    all exist in the new epoch when its epoch is a key and ``last`` is below each of those seqs."""
    if epoch is None or not cont_epoch or not isinstance(epochs, list) or not isinstance(seqs, list) \
            or len(epochs) != len(seqs):
        return False
    hops = [(int(cont_epoch), int(cont_seq))] + [(int(e), int(x)) for e, x in zip(epochs, seqs, strict=True)]
    reach = {e: [x for _, x in hops[:i + 1]] for i, (e, _) in reversed(list(enumerate(hops)))}
    return epoch in reach and all(last <= x for x in reach[epoch])


@dataclass
class Trace:
    violations: list[Violation] = field(default_factory=list)
    seen: dict[tuple[str, int, int], str] = field(default_factory=dict)
    versions: dict[tuple[str, str, int], tuple[Any, ...]] = field(default_factory=dict)
    continued: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (stream, epoch) -> (old, seq)
    states: dict[int, DbState] = field(default_factory=dict)
    last_offset: dict[tuple[int, int], int] = field(default_factory=dict)  # (client, conn) -> offset
    last_tx: dict[tuple[int, int], int] = field(default_factory=dict)
    confirmed_seen: set[tuple[str, int, int, str]] = field(default_factory=set)
    watermark: dict[tuple[int, str], tuple[int | None, int, int, int, bool]] = field(default_factory=dict)
    # REPLAY-3: (client, stream) -> stale signals delivered to the client for the stream
    signals: Counter[tuple[int, str]] = field(default_factory=Counter)
    gaps_shown: dict[int, set[str]] = field(default_factory=dict)  # client -> streams the message shows a gap in
    # CONT-1: (client, stream) -> (the view's epoch, watermark, applied count, rebootstraps, continues) before a
    # message that showed it a new epoch, that epoch, and whether the view may continue into it
    meets: dict[tuple[int, str], tuple[tuple[int | None, int, int, int, int], int, bool]] = field(
        default_factory=dict)
    steps: int = 0
    policy: Policy = DEFAULT_POLICY
    # stream -> the highest floor_seq a compaction committed, durable or not (a crash does not lower it):
    # REPLAY-2's allowance for unconfirmed clients, who may have read that retention window
    # (spec.invariants.check_convergence).  A reset's floor is no window: who saw it rebootstraps.
    floors: dict[str, int] = field(default_factory=dict)

    def _v(self, inv_id: str, msg: str) -> None:
        self.violations.append((inv_id, msg))

    def _see(self, e: SyncEvent, where: str) -> None:
        key = (e.stream_id, e.epoch, e.seq)
        old = self.seen.setdefault(key, e.payload_hash)
        if old != e.payload_hash:
            self._v("SEQ-2", f"{key} named {old[:15]} and {e.payload_hash[:15]} ({where})")

    # --- server side ----------------------------------------------------------------------------

    def record_state(self, offset: int, db: DbState, sweep_now: int | None = None,
                     compact_now: int | None = None, recovery: int | None = None) -> None:
        """A committed state; ``recovery``: it is the recovery transaction of an unclean restart with
        that loss bound (checked by check_recovery instead of check_transition)."""
        prev = self.states.get(offset - 1)
        if compact_now is not None and prev is not None:
            self.violations.extend(check_retention(prev, db, compact_now, self.policy))
        if self.states.get(offset) is db:
            return
        self.states[offset] = db
        for s in db.of_type(SyncStream) if compact_now is not None else ():  # at the commit, not after the step:
            self.floors[s.stream_id] = max(self.floors.get(s.stream_id, 0), s.floor_seq)  # a crash may lose it
        self.violations.extend(check_state(db, self.policy.bridge_max_attempts))
        if prev is not None:
            self.violations.extend(check_transition(prev, db) if recovery is None
                                   else check_recovery(prev, db, recovery))
        versioned: list[ProviderCapability | ComputeAssignment] = [*db.of_type(ProviderCapability),
                                                                   *db.of_type(ComputeAssignment)]
        for row in versioned:
            key = (type(row).__name__, row.provider_id if isinstance(row, ProviderCapability) else row.request_id,
                   row.version)
            named = self.versions.setdefault(key, versioned_content(row))
            if named != versioned_content(row):
                self._v("VER-1", f"{key} named {named} and {versioned_content(row)}")
        if sweep_now is not None:
            self.violations.extend(check_sweep(db, sweep_now))
        for e in db.of_type(SyncEvent):
            self._see(e, f"state@{offset}")

    def record_ledger(self, ledger: Sequence[SyncEvent]) -> None:
        for e in ledger:
            self._see(e, "ledger")

    def on_crash(self, durable: int, db: DbState, ledger: Sequence[SyncEvent]) -> None:
        """After recovery: DUR-1 (the durable prefix, nothing more), CONF-2, DUR-2."""
        prior = self.states.get(durable)
        self.states = {o: st for o, st in self.states.items() if o <= durable}
        if prior is not None:
            def strip(st: DbState) -> dict[str, frozenset[Any]]:
                """What recovery keeps: every row, less what it moves -- epochs, the continuation chain
                and updated_at of streams, epochs of events and checkpoints, versions (it raises those).
                Rows stay whole otherwise, keys included: two rows of one content are two rows."""
                moved = ("sync_stream", "sync_event", "sync_checkpoint", "provider_capability", "compute_assignment")
                out: dict[str, frozenset[Any]] = {t: frozenset(rows) for t, rows in st.tables.items() if t not in moved}
                out["sync_stream"] = frozenset(replace(r, epoch=0, continues_epoch=0, continues_seq=0,
                                                       earlier_epochs=(), earlier_seqs=(), updated_at=0)
                                               for r in st.of_type(SyncStream))
                out["sync_event"] = frozenset(replace(r, epoch=0) for r in st.of_type(SyncEvent))
                out["sync_checkpoint"] = frozenset(replace(r, epoch=0) for r in st.of_type(SyncCheckpoint))
                rows: list[ProviderCapability | ComputeAssignment] = [*st.of_type(ProviderCapability),
                                                                      *st.of_type(ComputeAssignment)]
                out["versioned"] = frozenset(replace(r, version=0) for r in rows)
                return out
            if strip(prior) != strip(db):
                self._v("DUR-1", f"state after crash differs from the durable state at {durable}")
        for st in db.of_type(SyncStream):
            if st.continues_epoch:
                self.continued[(st.stream_id, st.epoch)] = (st.continues_epoch, st.continues_seq)
        present = set()
        for e in ledger:  # an event of a continuing epoch is also the event of the epochs it continues
            epoch: int | None = e.epoch
            while epoch is not None:
                present.add((e.stream_id, epoch, e.seq, e.payload_hash))
                older = self.continued.get((e.stream_id, epoch))
                epoch = older[0] if older is not None and e.seq <= older[1] else None
        for ev in sorted(self.confirmed_seen):
            if ev not in present:
                self._v("CONF-2", f"a confirmed-read client saw {ev[:3]} and the crash lost it")
        self.check_epochs_above(db)

    def check_epochs_above(self, db: DbState) -> None:
        """DUR-2: after recovery every stream's epoch (and the floor for new ones) is above
        every epoch ever observed for it."""
        for (stream, epoch, _seq) in self.seen:
            if virtual_stream(db, stream)[0] <= epoch:
                self._v("DUR-2", f"{stream}: epoch after recovery {virtual_stream(db, stream)[0]} <= seen {epoch}")

    def check_queues(self, server: Server) -> None:
        for conn in server.conns.values():
            if len(conn.outbound) > server.max_queue:
                self._v("SLOW-1", f"conn {conn.conn_id} queue {len(conn.outbound)} > {server.max_queue}")

    # --- client side ----------------------------------------------------------------------------

    def _meet(self, i: int, client: Client, stream: str, new_epoch: int, continuable: bool) -> None:
        view = client.streams.get(stream)
        if view is None or view.rehydrating or (i, stream) in self.meets or new_epoch == view.epoch:
            return  # (a rehydrating view has no cursor to continue: it starts from the window it reads)
        before = (view.epoch, view.last, len(view.applied), view.rebootstraps, view.continues)
        self.meets[(i, stream)] = (before, new_epoch, continuable)

    def _meetings(self, i: int, client: Client, msg: Any) -> None:
        """CONT-1: note, before the client handles ``msg``, whether it shows a followed stream in a new
        epoch, and whether the client's view may continue into it (read here from the message alone:
        the new epoch continues the view's epoch up to at least its watermark, nothing else stale)."""
        if isinstance(msg, SubscriptionError):
            stream = client.qs_stream.get(msg.query_set_id)
            try:
                err = SyncError.parse(msg.error)
            except Exception:
                return
            view = client.streams.get(stream) if stream else None
            if stream is None or view is None or err.code is not ErrorCode.STALE_CURSOR:
                return
            d = err.details
            ok = (list(d.get("reasons", ())) == ["epoch_changed"]
                  and _shares(view.epoch, view.last, d.get("continues_epoch"), d.get("continues_seq"),
                              d.get("earlier_epochs", []), d.get("earlier_seqs", [])))
            self._meet(i, client, stream, int(d["epoch"]), ok)
            return
        sets: tuple[tuple[int, tuple[TableRows, ...]], ...] = ()
        if isinstance(msg, SubscribeApplied):
            sets = ((msg.query_set_id, msg.rows),)
        elif isinstance(msg, TransactionUpdate):
            sets = tuple((u.query_set_id, u.tables) for u in msg.query_sets)
        elif isinstance(msg, ReducerResult) and isinstance(msg.outcome, ReducerOk):
            sets = tuple((u.query_set_id, u.tables) for u in msg.outcome.query_sets)
        for qs, tables in sets:
            stream = client.qs_stream.get(qs)
            view = client.streams.get(stream) if stream else None
            if stream is None or view is None:
                continue
            for t in tables:
                for r in t.inserts if t.table == "sync_stream" else ():
                    if isinstance(r, SyncStream) and r.stream_id == stream and r.epoch != view.epoch:
                        ok = (_shares(view.epoch, view.last, r.continues_epoch, r.continues_seq,
                                      list(r.earlier_epochs), list(r.earlier_seqs))
                              and r.floor_seq <= view.last + 1 and r.head_seq >= view.last)
                        self._meet(i, client, stream, r.epoch, ok)

    def before_message(self, i: int, client: Client, msg: Any) -> None:
        """Before client i handles ``msg``: CONT-1's meetings, and REPLAY-3's stale signals."""
        self._meetings(i, client, msg)
        for stream in self._stale_signals(client, msg):
            self.signals[(i, stream)] += 1
        self.gaps_shown[i] = self._gaps(client, msg)

    def after_message(self, i: int, client: Client, sent: list[Any]) -> None:
        """REPLAY-1, the other half of "gaps are never applied": a message that showed the client a gap
        in a followed stream makes it ask for that stream again (a Subscribe in its answer)."""
        asked = {client.qs_stream.get(m.query_set_id) for m in sent if isinstance(m, Subscribe)}
        for stream in sorted(self.gaps_shown.pop(i, set()) - asked):
            self._v("REPLAY-1", f"client {i} was shown a gap in {stream} and did not resubscribe")

    @staticmethod
    def _gaps(client: Client, msg: Any) -> set[str]:
        """Streams whose events in ``msg`` (of the view's epoch, above its watermark) are not one run
        starting at watermark + 1 -- read as a set of seqs, not event by event."""
        out = set()
        for qs, tables in Trace._row_sets(msg):
            stream = client.qs_stream.get(qs)
            view = client.streams.get(stream) if stream else None
            if stream is None or view is None or view.rehydrating:
                continue
            ahead = sorted({r.seq for t in tables if t.table == "sync_event" for r in t.inserts
                            if isinstance(r, SyncEvent) and r.epoch == view.epoch and r.seq > view.last})
            if ahead and ahead != list(range(view.last + 1, view.last + 1 + len(ahead))):
                out.add(stream)
        return out

    @staticmethod
    def _row_sets(msg: Any) -> tuple[tuple[int, tuple[TableRows, ...]], ...]:
        if isinstance(msg, SubscribeApplied):
            return ((msg.query_set_id, msg.rows),)
        if isinstance(msg, TransactionUpdate):
            return tuple((u.query_set_id, u.tables) for u in msg.query_sets)
        if isinstance(msg, ReducerResult) and isinstance(msg.outcome, ReducerOk):
            return tuple((u.query_set_id, u.tables) for u in msg.outcome.query_sets)
        return ()

    @staticmethod
    def _stale_signals(client: Client, msg: Any) -> list[str]:
        """The streams ``msg`` tells the client its cursor is not servable on: a stale_cursor refusal of a
        query set of the stream, or a sync_stream row of it that the oracle's stale_reasons (without a
        budget: a row carries none) finds the client's (epoch, watermark) stale against.  A rehydrating view
        has no cursor: its snapshot's row names the window it starts from."""
        if isinstance(msg, SubscriptionError):
            stream = client.qs_stream.get(msg.query_set_id)
            try:
                err = SyncError.parse(msg.error)
            except Exception:
                return []
            return [stream] if stream is not None and err.code is ErrorCode.STALE_CURSOR else []
        out = []
        for qs, tables in Trace._row_sets(msg):
            stream = client.qs_stream.get(qs)
            view = client.streams.get(stream) if stream else None
            if stream is None or view is None or view.rehydrating:
                continue
            rows = [r for t in tables if t.table == "sync_stream" for r in t.inserts
                    if isinstance(r, SyncStream) and r.stream_id == stream]
            if any(stale_reasons(r.epoch, r.head_seq, r.floor_seq, 2**64, view.epoch, view.last) for r in rows):
                out.append(stream)
        return out

    def observe(self, i: int, client: Client, link: Any, out: Outbound, durable: int,
                states: dict[int, DbState]) -> None:
        self.steps += 1
        self.before_message(i, client, out.message)
        key = (i, link.conn_id)
        msg = out.message
        if client.confirmed and out.offset > durable:
            self._v("CONF-1", f"client {i} got offset {out.offset} with durable {durable}")
        last = self.last_offset.get(key, -1)
        if out.offset < last:
            self._v("DELIV-1", f"client {i} got offset {out.offset} after {last}")
        if isinstance(msg, TransactionUpdate) and out.offset <= last:
            self._v("DELIV-1", f"client {i} got TransactionUpdate {out.offset} after offset {last}")
        if isinstance(msg, ReducerResult) and isinstance(msg.outcome, ReducerOk) \
                and self.last_tx.get(key) == out.offset and msg.outcome.query_sets:
            self._v("DELIV-3", f"client {i} got both an update and a result for offset {out.offset}")
        if isinstance(msg, TransactionUpdate):
            self.last_tx[key] = out.offset
        self.last_offset[key] = max(last, out.offset)
        state = states.get(out.offset)
        if state is None:
            return
        claims = client.claims

        def rows_of(parts: tuple[TableRows, ...]) -> list[Row]:
            return [r for t in parts for r in (*t.inserts, *t.deletes)]

        delivered: list[Row] = []
        if isinstance(msg, SubscribeApplied):
            delivered = rows_of(msg.rows)
            if any(TABLE_BY_NAME[t.table].event for t in msg.rows):
                self._v("EVT-2", f"client {i} got event rows in a snapshot")
            self._check_resume(i, link.asked.get(msg.query_set_id, ()), state, stale=None)
            m = Mirror()
            for t in msg.rows:
                m.rows.update(t.inserts)
            if msg.query_set_id not in link.lost_qs:  # after a silent loss the mirror cannot track the server
                link.mirrors[msg.query_set_id] = m
        elif isinstance(msg, SubscriptionError):
            queries = link.asked.get(msg.query_set_id, ())
            try:
                err = SyncError.parse(msg.error)
            except Exception:
                err = None
            if err is not None and err.code is ErrorCode.STALE_CURSOR:
                self._check_resume(i, queries, state, stale=err)
        else:
            updates: tuple[QuerySetUpdate, ...] = ()
            if isinstance(msg, TransactionUpdate):
                updates = msg.query_sets
            elif isinstance(msg, ReducerResult) and isinstance(msg.outcome, ReducerOk):
                updates = msg.outcome.query_sets
            for u in updates:
                delivered.extend(rows_of(u.tables))
                mirror = link.mirrors.get(u.query_set_id)
                for t in u.tables:
                    if t.event != TABLE_BY_NAME[t.table].event:
                        self._v("EVT-2", f"client {i} got {t.table} rows flagged event={t.event}")
                    if t.event:
                        continue
                    if mirror is None:
                        continue
                    for r in t.deletes:
                        if mirror.rows[r] <= 0:
                            self._v("DELIV-2", f"client {i} got a delete of a row it never had: {r}")
                        mirror.rows[r] -= 1
                    mirror.rows.update(t.inserts)
        for r in delivered:
            if not can_read(claims, r):
                self._v("AUTH-1", f"client {i} received {type(r).__name__} it may not read")
            if isinstance(r, SyncEvent):
                self._see(r, f"client {i}")
                if client.confirmed:
                    self.confirmed_seen.add((r.stream_id, r.epoch, r.seq, r.payload_hash))
        # DELIV-2: every live mirror equals its query set on the state at this offset
        for qs_id, mirror in link.mirrors.items():
            queries = link.subscribed.get(qs_id)
            if queries is None:
                continue
            expected: Counter[Row] = Counter()
            for text in queries:
                try:
                    parsed = q.parse(text)
                except SyncError:
                    continue
                for pq in parsed:
                    if TABLE_BY_NAME[pq.table].event:
                        continue
                    for r in state.rows(pq.table):
                        if q.matches(pq, r) and can_read(claims, r):
                            expected[r] = 1
            got = +mirror.rows
            if got != expected:
                missing = list((expected - got).elements())[:2]
                extra = list((got - expected).elements())[:2]
                self._v("DELIV-2", f"client {i} qs {qs_id} at {out.offset}: missing {missing} extra {extra}")

    def _check_resume(self, i: int, queries: tuple[str, ...], state: DbState, stale: SyncError | None) -> None:
        for text in queries:
            try:
                parsed = q.parse(text)
            except SyncError:
                continue
            for pq in parsed:
                sid = q.pinned_value(pq, "stream_id")
                w = q.lower_bound_exclusive(pq, "seq")
                w = None if w is None else max(w, 0)  # seqs start at 1 (read here, not via q.resume_watermark)
                if pq.table == "sync_event" and w is not None and stale is None and (
                        not isinstance(sid, str) or not isinstance(q.pinned_value(pq, "epoch"), int)):
                    self._v("STALE-3", f"client {i} was subscribed to {pq.text!r}, a resume without stream and epoch")
                if pq.table != "sync_event" or not isinstance(sid, str) or w is None:
                    continue
                ep = q.pinned_value(pq, "epoch")
                epoch, head, floor = virtual_stream(state, sid)
                budget = self.policy.class_for(sid).replay_budget
                upper = q.upper_bound_inclusive(pq, "seq")  # a page replays up to min(head, B) (ADR-0042)
                reasons = stale_reasons(epoch, head, floor, budget, ep if isinstance(ep, int) else None, w, upper)
                if stale is None:
                    if reasons:
                        self._v("STALE-1", f"client {i} resumed {sid} from {w} though {reasons}")
                    if floor > w + 1:
                        self._v("STALE-2", f"client {i} resumed {sid} from {w} past floor {floor}")
                elif stale.details.get("stream_id") == sid:
                    got = tuple(stale.details.get("reasons", ()))
                    expected = stale_reasons(epoch, head, floor, int(stale.details.get("replay_budget", 0)),
                                             ep if isinstance(ep, int) else None, w, upper)
                    if got != expected or not got:
                        self._v("STALE-1", f"client {i} stale {sid} reasons {got}, expected {expected}")

    def check_rebootstraps(self, i: int, client: Client) -> None:
        """REPLAY-3: every rebootstrap (and every continue) of a stream answers a stale signal the client
        received for it, at most one each: the bound on rebootstraps.  A replay from zero that is servable
        needs none; a gap, a reconnect or a crash of the client's process is resumed, never rebootstrapped."""
        for sid, view in client.streams.items():
            if view.rebootstraps + view.continues > self.signals[(i, sid)]:
                self._v("REPLAY-3", f"client {i} {sid}: {view.rebootstraps} rebootstraps and {view.continues} "
                                    f"continues after {self.signals[(i, sid)]} stale signals")

    def observe_client(self, i: int, client: Client) -> None:
        self.check_rebootstraps(i, client)
        for (ci, sid), (before, new_epoch, ok) in list(self.meets.items()):
            if ci != i:
                continue
            del self.meets[(ci, sid)]
            view = client.streams[sid]
            epoch, last, count, boots, conts = before
            if ok and (view.rebootstraps != boots or view.continues != conts + 1 or view.epoch != new_epoch
                       or view.last != last or len(view.applied) != count):
                self._v("CONT-1", f"client {i} at ({epoch}, {last}) did not continue {sid} into epoch {new_epoch} "
                                  f"(rebootstraps {boots} -> {view.rebootstraps})")
            if not ok and view.continues != conts:
                self._v("CONT-1", f"client {i} at ({epoch}, {last}) continued {sid} into epoch {new_epoch}, which "
                                  f"does not continue it far enough")
        for sid, view in client.streams.items():
            seqs = [s for s, _ in view.applied]
            if any(b != a + 1 for a, b in itertools.pairwise(seqs)):
                self._v("REPLAY-1", f"client {i} {sid} applied {seqs[-6:]}")
            prev = self.watermark.get((i, sid))
            if prev is not None and prev[0] == view.epoch and prev[3] == view.rebootstraps and not prev[4]:
                _epoch, last, count, _boots, _rehydrating = prev
                fresh = seqs[count:]
                if view.last < last or fresh != list(range(last + 1, last + 1 + len(fresh))):
                    self._v("REPLAY-1", f"client {i} {sid} went from {last} to {view.last} applying {fresh[:6]}")
            self.watermark[(i, sid)] = (view.epoch, view.last, len(seqs), view.rebootstraps, view.rehydrating)
            for seq, h in view.applied:
                if view.epoch is not None:
                    key = (sid, view.epoch, seq)
                    old = self.seen.setdefault(key, h)
                    if old != h:
                        self._v("SEQ-2", f"client {i} applied {key} as {h[:15]}, elsewhere {old[:15]}")
