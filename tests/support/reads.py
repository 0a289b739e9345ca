"""One-off reads and cross-identity subscriptions for the differential machines, judged by SQLite.

The differential machines (``support.machines.DiffMachine``, ``DiffModuleMachine``) compare the
engine with the model transaction by transaction, but the model has no one-off read and its
subscriptions are answered by the same predicates the engine calls.  :class:`ReadRules` adds rules
whose answers are judged by a second opinion that shares no code with either: the model's current
tables mirrored into SQLite (:class:`support.sql_oracle.Mirror`, the visibility rules written there
as SQL) and the query rendered twice from one abstract conjunction (:func:`read_query`), once in
one of the subset's spellings for the engine and once as SQLite SQL.

* ``one_off``: :meth:`Engine.query` for a random reader and query must give exactly the rows
  SQLite selects (as a bag), or the refusal code it decides (``missing_scope``,
  ``forbidden_stream``).  A row the reader may not read at all is reported as AUTH-1.  Or, sliced:
  :meth:`Engine.read` taken now, its expected answer computed by SQLite now, then stepped with
  ``Read.step(n)`` for small ``n`` -- by ``step_read`` while the machine's other rules run in
  between (appends, acks, retention sweeps and compactions, epoch resets, crashes) -- and once it
  says done its answer must be the state AT TAKE TIME (ADR-0038's frozen view).  Reads still open
  at the end of a run are finished and judged in ``teardown``.
* ``read_between_writes``: a sliced read with a write committed before each of its steps.
* ``readers_watch`` (the module machine only, :class:`ReaderViews`): readers of several
  identities and grants (:data:`READERS`: two identities with the same stream grants, bridge scope
  or not) subscribe on connections of their own, mostly to ``sync_checkpoint`` and
  ``bridge_outbox``; the snapshot, then the snapshot with every later update applied, must equal
  SQLite's view of the model's current state for that reader after every commit (AUTH-1, DELIV-2).

Four rules in the module machine, three in the system machine: they share the machines' example
budget, so each takes steps from the rules that were there before.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from spec.auth import Claims
from spec.errors import SyncError
from spec.messages import Subscribe, SubscribeApplied, SubscriptionError, TransactionUpdate
from spec.schema import TABLE_BY_NAME
from spec.values import IDENTITY, STRING, TIMESTAMP, U32, U64, ArrayT, OptionT, Row
from support.sql_oracle import AbstractQuery, Mirror, Style, Term, render_subset

_A, _B, _C = "a" * 64, "b" * 64, "c" * 64  # the machines' identities (support.machines.IDENTITIES)
READERS: tuple[Claims, ...] = (
    Claims(_A, frozenset({"sync.subscribe"}), ("s.*",)),  # A, no bridge scope
    Claims(_B, frozenset({"sync.subscribe"}), ("s.*",)),  # B: A's grants and scopes, another identity
    Claims(_B, frozenset({"sync.subscribe", "bridge.mark_sent"}), ("s.a1",)),  # B, one exact grant, bridge
    Claims(_C, frozenset({"sync.subscribe", "bridge.enqueue", "compute.assign"}), ("s.a*",)),
    Claims(_A, frozenset({"sync.subscribe", "bridge.enqueue", "sync.admin"}), ("s.b1", "s.a*")),
    Claims(_C, frozenset({"sync.subscribe", "bridge.mark_sent"}), ("s.*",)),  # A's grants, a bridge scope
    Claims(_C, frozenset({"sync.subscribe"}), ()),  # no stream at all
    Claims(_C, frozenset({"bridge.enqueue"}), ("s.*",)),  # no sync.subscribe: refused
)
"""Readers of different identities, scopes and grants (A and B alike but for the identity; A and the
sixth alike but for the identity and a bridge scope)."""
reader_st = st.sampled_from((0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7))  # mostly readers that read something
STREAMS = ("s.a1", "s.a2", "s.b1")  # the machines' streams (support.machines.STREAMS)
WRITES = ("append", "append", "ack", "ack", "compact", "reset", "outbox", "sent")
write_st = st.tuples(st.sampled_from(WRITES), st.sampled_from([0, 1]), st.sampled_from(STREAMS))
"""A write between two steps of a read: what, by identity A or B (0, 1), on which stream (the machine does it)."""
writes_st = st.lists(write_st, min_size=2, max_size=5)
SLICE_TABLES = ("sync_event", "sync_event", "sync_checkpoint", "sync_checkpoint", "compute_assignment", "bridge_outbox",
                "sync_stream")
"""What ``read_between_writes`` reads: whole tables (rarely one condition) of several streams or of the reader's own
rows, whose candidates a slice boundary can split."""
Write = tuple[str, int, str]

READ_TABLES = ("sync_checkpoint", "sync_checkpoint", "sync_checkpoint", "bridge_outbox", "bridge_outbox",
               "bridge_outbox", "sync_event", "sync_event", "sync_event", "sync_stream", "compute_assignment",
               "session_presence", "provider_capability", "stream_signal")
SUBSCRIBE_TABLES = ("sync_checkpoint", "sync_checkpoint", "bridge_outbox", "bridge_outbox", "sync_stream",
                    "compute_assignment")  # the tables each identity sees differently (no event tables: no rows)
FILTERABLE = {t: [c for c in TABLE_BY_NAME[t].columns if not isinstance(c.type, OptionT | ArrayT)]
              for t in set(READ_TABLES)}
_STRINGS = ("s.a1", "s.a2", "s.b1", "s.none", "d1", "c0", "o1", "k1", "x", "")
_INTS = (0, 1, 2, 3, 5, 1_000_000)
_TOP = {U32: 2**32 - 1, U64: 2**64 - 1, TIMESTAMP: 2**63 - 1}  # the largest literal of each type
styles = st.builds(Style, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans())


class ReadDivergence(AssertionError):
    """The engine's answer to a read differs from SQLite's over the model's state."""


TERMS = st.sampled_from((0, 0, 1, 1, 2))  # how many conditions a query has


def read_query(data: st.DataObject, tables: Mapping[str, Sequence[Row]], choices: Sequence[str] = READ_TABLES,
               pk_pin: bool = True, terms_st: st.SearchStrategy[int] = TERMS) -> AbstractQuery:
    """A random conjunction over one table: mostly literals taken from the table's current rows (so
    conditions select some), sometimes a primary-key pin (the engine's point read), for
    ``sync_event`` often a stream pin with a lower bound on ``seq`` (the frozen view answered as it
    is, no row matched)."""
    table = data.draw(st.sampled_from(choices))
    rows = tables.get(table, ())
    terms: list[Term] = []
    pk = TABLE_BY_NAME[table].primary_key
    if pk_pin and pk and rows and data.draw(st.integers(0, 3)) == 0:
        terms.append(Term(pk[0], "=", getattr(data.draw(st.sampled_from(rows)), pk[0]), data.draw(st.booleans())))
    if table == "sync_event" and pk_pin and data.draw(st.booleans()):
        terms.append(Term("stream_id", "=", data.draw(st.sampled_from(_STRINGS[:4])), data.draw(st.booleans())))
        if data.draw(st.booleans()):
            terms.append(Term("seq", data.draw(st.sampled_from((">", ">="))), data.draw(st.integers(0, 6))))
    for _ in range(data.draw(terms_st)):
        col = data.draw(st.sampled_from(FILTERABLE[table]))
        present = [getattr(r, col.name) for r in rows]
        from_rows = bool(present) and data.draw(st.integers(0, 3)) > 0
        if from_rows:
            value = data.draw(st.sampled_from(present))
        elif col.type == IDENTITY:
            value = data.draw(st.sampled_from((_A, _B, _C)))
        elif col.type == STRING:
            value = data.draw(st.sampled_from(_STRINGS))
        else:
            value = data.draw(st.sampled_from((*_INTS, _TOP[col.type])))
        style = "plain"
        if col.type == IDENTITY:
            style = data.draw(st.sampled_from(("0x", "string")))
        elif col.type == TIMESTAMP and 0 <= value < 4_000_000_000_000_000:
            style = data.draw(st.sampled_from(("int", "rfc3339")))
        # a row's own value: mostly a condition that keeps that row
        ops = ("=", "<=", ">=", "=", "<", ">") if from_rows else ("=", "<", "<=", ">", ">=")
        terms.append(Term(col.name, data.draw(st.sampled_from(ops)), value, data.draw(st.booleans()), style))
    return AbstractQuery(table, tuple(terms))


def _bag(rows: Any) -> Counter[Row]:
    return Counter(rows)


def _judge(where: str, oracle: Mirror, aq: AbstractQuery, text: str, got: Counter[Row], want: Counter[Row]) -> None:
    if got == want:
        return
    extra, missing = got - want, want - got
    unreadable = [r for r in extra if not oracle.visible(AbstractQuery(aq.table, ()), [r])]  # by its visibility alone
    # rows it may not read: AUTH-1; else a subscription's rows (DELIV-2) or a read that is not the state it
    # was taken at (ADR-0038) -- or rows a wrong row filter dropped: the message shows which rows
    inv = "AUTH-1" if unreadable else ("DELIV-2" if where.startswith("subscription") else "ADR-0038")
    raise ReadDivergence(f"{inv}: {where} {text!r}: engine-only {dict(extra)}, SQLite-only {dict(missing)}"
                         + (f"; rows the reader may not read: {unreadable[:2]}" if unreadable else ""))


@dataclass
class OpenRead:
    """A read taken (``Engine.read``) and not yet stepped to its end, with SQLite's answer at take time."""

    read: Any  # reference.engine.Read
    text: str
    aq: AbstractQuery
    oracle: Mirror
    want: Counter[Row]
    steps: int = 0


@dataclass
class ReaderView:
    """One reader's query set (one query), as the reader holds it: the snapshot and every update applied."""

    reader: int
    aq: AbstractQuery
    text: str
    rows: Counter[Row] = field(default_factory=Counter)


class ReadRules:
    """Rules for a differential machine: one-off reads, whole and sliced (mix into the machine and call
    :meth:`_reads_init` from its ``__init__``).  The machine says where the engine and the model's
    tables are (:meth:`_read_engine`, :meth:`_read_tables`)."""

    MAX_OPEN = 3
    MAX_WRITES = 16  # writes between the steps of one read (then it is finished without)

    def _reads_init(self) -> None:
        self.open_reads: list[OpenRead] = []

    def _read_engine(self) -> Any:
        raise NotImplementedError

    def _read_tables(self) -> Mapping[str, Sequence[Row]]:
        raise NotImplementedError

    def _read_write(self, what: str, who: int, stream: str) -> None:
        """Commit one write of :data:`WRITES` (or do nothing where the machine cannot)."""
        raise NotImplementedError

    def _oracle(self, r: int) -> Mirror:
        oracle = Mirror(self._read_tables())
        oracle.set_claims(READERS[r])
        return oracle

    @rule(r=reader_st, data=st.data(), style=styles, n=st.sampled_from([0, 0, 1, 2]))
    def one_off(self, r: int, data: st.DataObject, style: Style, n: int) -> None:
        """A one-off read answered at once (``n`` 0: ``Engine.query``, what OneOffQuery and /sql call), or
        taken now (``Engine.read``) and stepped ``n`` rows, then further by ``step_read`` between other
        rules; judged when done against SQLite's answer at take time."""
        aq = read_query(data, self._read_tables())
        if n:
            self._take(r, aq, style, n)
        else:
            self._one_off(r, aq, style)

    def _one_off(self, r: int, aq: AbstractQuery, style: Style) -> None:
        text = render_subset(aq, style)
        oracle = self._oracle(r)
        refused = oracle.refusal(aq, subscription=False)
        try:
            answer = self._read_engine().query(READERS[r], text)
        except SyncError as err:
            if err.code.value != refused:
                raise ReadDivergence(f"AUTH-1: one-off {text!r}: engine refused {err.code.value}, "
                                     f"SQLite {refused or 'answers'}") from err
            return
        if refused is not None:
            raise ReadDivergence(f"AUTH-1: one-off {text!r}: engine answered, SQLite refuses {refused}")
        _judge("one-off", oracle, aq, text, _bag(answer.inserts), _bag(oracle.visible(aq)))

    def _take(self, r: int, aq: AbstractQuery, style: Style, n: int) -> OpenRead | None:
        while len(self.open_reads) >= self.MAX_OPEN:
            self._finish(self.open_reads[0])
        text = render_subset(aq, style)
        oracle = self._oracle(r)
        refused = oracle.refusal(aq, subscription=False)
        try:
            read = self._read_engine().read(READERS[r], text)
        except SyncError as err:
            if err.code.value != refused:
                raise ReadDivergence(f"AUTH-1: read {text!r}: engine refused {err.code.value}, "
                                     f"SQLite {refused or 'answers'}") from err
            return None
        if refused is not None:
            raise ReadDivergence(f"AUTH-1: read {text!r}: engine took it, SQLite refuses {refused}")
        o = OpenRead(read, text, aq, oracle, _bag(oracle.visible(aq)))
        self.open_reads.append(o)
        self._step(o, n)
        return o

    @rule(r=st.sampled_from(range(6)), data=st.data(), style=styles, writes=writes_st)
    def read_between_writes(self, r: int, data: st.DataObject, style: Style, writes: list[Write]) -> None:
        """A sliced read of a whole table (:data:`SLICE_TABLES`) taken, then stepped one row at a time with
        one of ``writes`` (in turn, round and round; all of them once before the read is taken, so it has
        rows to slice) committed before each step (appends, acks, a compaction, an epoch reset, outbox rows):
        every slice boundary has a commit behind it -- the case ADR-0038 is about, which ``step_read``
        reaches only when the draws line up."""
        aq = read_query(data, self._read_tables(), SLICE_TABLES, pk_pin=False, terms_st=st.sampled_from((0, 0, 0, 1)))
        self._read_between(r, aq, style, 1, writes)

    def _read_between(self, r: int, aq: AbstractQuery, style: Style, n: int, writes: list[Write]) -> None:
        for what, who, stream in writes:  # once before the read is taken, so it has rows to slice
            self._read_write(what, who, stream)
        o = self._take(r, aq, style, n)
        for what, who, stream in itertools.islice(itertools.cycle(writes), self.MAX_WRITES):
            if o is None or o not in self.open_reads:
                return
            self._read_write(what, who, stream)
            self._step(o, n)
        if o is not None:
            self._finish(o)

    @rule(k=st.integers(0, 2), n=st.sampled_from([1, 1, 2, 3]))
    def step_read(self, k: int, n: int) -> None:
        """Step an open read ``n`` more rows (between any two other rules: commits, retention, resets)."""
        if self.open_reads:
            self._step(self.open_reads[k % len(self.open_reads)], n)

    def _step(self, o: OpenRead, n: int) -> None:
        o.steps += 1
        if o.read.step(n):
            self.open_reads.remove(o)
            _judge(f"sliced read (taken at offset {o.read.offset}, {o.steps} steps of <= {n})", o.oracle, o.aq,
                   o.text, _bag(o.read.result().inserts), o.want)

    def _finish(self, o: OpenRead) -> None:
        while o in self.open_reads:
            self._step(o, 1)

    def teardown(self) -> None:
        for o in list(getattr(self, "open_reads", ())):
            self._finish(o)
        super().teardown()  # type: ignore[misc]


class ReaderViews(ReadRules):
    """:class:`ReadRules` and readers subscribed on connections of their own (the module machine,
    whose engine never crashes and releases every commit at once): after every step that committed,
    each reader's rows per query set must be SQLite's view of the model's state for that reader."""

    MAX_SETS = 8

    def _reads_init(self) -> None:
        super()._reads_init()
        self.reader_conns: dict[int, int] = {}
        self.reader_views: dict[tuple[int, int], ReaderView] = {}
        self.reader_checked = -1

    def _drain_readers(self) -> None:
        engine = self._read_engine()
        for r, conn in self.reader_conns.items():
            while engine.conns[conn].outbound:
                m = engine.pop(conn).message
                if not isinstance(m, TransactionUpdate):
                    raise ReadDivergence(f"reader {r}: unexpected {type(m).__name__} between updates")
                for u in m.query_sets:
                    view = self.reader_views[(r, u.query_set_id)]
                    for part in u.tables:
                        if part.table != view.aq.table:
                            raise ReadDivergence(f"AUTH-1: reader {r} query set {u.query_set_id} ({view.text!r}) "
                                                 f"got {part.table} rows")
                        gone = _bag(part.deletes)
                        if gone - view.rows:
                            everything = AbstractQuery(part.table, ())
                            unreadable = any(not self._oracle(r).visible(everything, [x]) for x in gone - view.rows)
                            raise ReadDivergence(f"{'AUTH-1' if unreadable else 'DELIV-2'}: reader {r} ({view.text!r}) "
                                                 f"told to delete rows it does not hold: {dict(gone - view.rows)}")
                        view.rows = view.rows - gone + _bag(part.inserts)

    def _subscribe_reader(self, r: int, aq: AbstractQuery, style: Style) -> None:
        if len(self.reader_views) >= self.MAX_SETS:
            return
        engine = self._read_engine()
        self._drain_readers()
        if r not in self.reader_conns:
            self.reader_conns[r] = engine.connect(READERS[r], False)
        conn = self.reader_conns[r]
        text = render_subset(aq, style)
        qs = 500 + len(self.reader_views)
        engine.handle(conn, Subscribe(qs, qs, (text,)))
        answer = engine.pop(conn).message
        oracle = self._oracle(r)
        refused = oracle.refusal(aq, subscription=True)
        if isinstance(answer, SubscriptionError):
            code = answer.error.split(":", 1)[0]
            if code == "stale_cursor" and refused is None:
                return  # the stale check has its own oracle (STALE-1)
            if code != refused:
                raise ReadDivergence(f"AUTH-1: subscription {text!r}: engine refused {code}, SQLite "
                                     f"{refused or 'answers'}")
            return
        assert isinstance(answer, SubscribeApplied), answer
        if refused is not None:
            raise ReadDivergence(f"AUTH-1: subscription {text!r}: engine applied it, SQLite refuses {refused}")
        view = ReaderView(r, aq, text, _bag(row for t in answer.rows if t.table == aq.table for row in t.inserts))
        _judge("subscription snapshot", oracle, aq, text, view.rows, _bag(oracle.visible(aq)))
        if any(t.table != aq.table for t in answer.rows):
            raise ReadDivergence(f"AUTH-1: subscription {text!r}: snapshot holds rows of another table")
        self.reader_views[(r, qs)] = view

    @rule(readers=st.lists(reader_st, min_size=1, max_size=3, unique=True), data=st.data(), style=styles,
          writes=st.lists(write_st, max_size=3))
    def readers_watch(self, readers: list[int], data: st.DataObject, style: Style,
                      writes: list[tuple[str, int, str]]) -> None:
        """One to three readers subscribe the same query (mostly of sync_checkpoint or bridge_outbox), each
        in a query set of its own, then identities A and B write: each reader must hold exactly its own
        view after every write (and, by the invariant below, after every later commit of the machine)."""
        self._watch(readers, read_query(data, self._read_tables(), SUBSCRIBE_TABLES, pk_pin=False), style, writes)

    def _watch(self, readers: list[int], query: AbstractQuery, style: Style, writes: list[Write]) -> None:
        for r in readers:
            self._subscribe_reader(r, query, style)
        for what, who, stream in writes:
            self._read_write(what, who, stream)
            self.readers_hold_their_view()

    @invariant()
    def readers_hold_their_view(self) -> None:
        """Every reader's rows equal SQLite's view of the model's current state (checked once per commit)."""
        engine = self._read_engine()
        if not self.reader_views or engine.committed == self.reader_checked:
            return
        self.reader_checked = engine.committed
        self._drain_readers()
        oracle = Mirror(self._read_tables())
        for r in sorted({v.reader for v in self.reader_views.values()}):
            oracle.set_claims(READERS[r])
            for view in self.reader_views.values():
                if view.reader == r:
                    _judge(f"subscription of reader {r} after offset {engine.committed}", oracle, view.aq, view.text,
                           view.rows, _bag(oracle.visible(view.aq)))


__all__ = ["READERS", "ReadDivergence", "ReadRules", "ReaderViews", "read_query"]
