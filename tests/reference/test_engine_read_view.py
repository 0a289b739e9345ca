"""A one-off read taken at one state answers that state, however it is sliced (ADR-0038).

``Engine.read`` fixes a read's candidate rows when it is taken -- a ``sync_event`` stream's as a
frozen view of its column log, other tables' as references to their rows -- and ``Read.step``
builds and matches them a slice at a time, so the server can answer other clients between slices.
Here the read is stepped one row at a time with commits, a compaction (retention drops whole
chunks of the log), an epoch reset and updated ``sync_stream`` rows between the steps; its answer
must be exactly what the spec's own evaluation (``spec.query.evaluate`` over the rows listed when
the read was taken, filtered by ``can_read``) gave at that moment -- nothing committed later, no
row lost or moved by a drop.  The last tests plant a read that looks at the live log instead and
show the check kills it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pytest

from reference import engine as engine_mod
from reference.engine import ALL_ROWS, Engine
from reference.eventlog import StreamLog
from spec import query as q
from spec.auth import Claims, can_read
from spec.errors import LocalProtocolError, SyncError
from spec.messages import OneOffQueryResult, Subscribe
from spec.policy import Policy, StreamClass
from spec.schema import SCOPES
from spec.values import Row

ALL = Claims("a" * 64, frozenset(SCOPES), ("*",))
EXACT = Claims("b" * 64, frozenset(SCOPES) - {"sync.admin"}, ("s1", "s3"))
PREFIX = Claims("c" * 64, frozenset(SCOPES) - {"sync.admin"}, ("s3*",))
POLICY = Policy(classes=(("s1", StreamClass("short", retain_count=300)),))  # compaction drops s1's oldest

# (claims, query): every way _candidates finds rows -- a pinned stream, a pinned stream from a
# watermark (both answered with the stream's view as it is), a pinned stream matched, the whole
# table, exact grants, a prefix grant's walk, a key lookup, a whole pk table
CASES = [
    (ALL, "SELECT * FROM sync_event WHERE stream_id = 's1'"),
    (ALL, "SELECT * FROM sync_event WHERE stream_id = 's1' AND seq > 250"),
    (ALL, "SELECT * FROM sync_event WHERE stream_id = 's2' AND seq > 2"),
    (ALL, "SELECT * FROM sync_event WHERE stream_id = 's1' AND seq < 500"),  # the view's rows matched
    (ALL, "SELECT * FROM sync_event"),
    (ALL, "SELECT * FROM sync_event WHERE seq > 3 AND seq < 600"),
    (EXACT, "SELECT * FROM sync_event"),
    (PREFIX, "SELECT * FROM sync_event"),
    (ALL, "SELECT * FROM sync_stream"),
    (ALL, "SELECT * FROM sync_stream WHERE stream_id = 's1'"),
    (EXACT, "SELECT * FROM sync_stream WHERE head_seq > 1"),
]


def _call(eng: Engine, reducer: str, *args: object) -> None:
    eng.call_detached(ALL, reducer, args)
    eng.advance_durable(eng.committed)


def _engine() -> Engine:
    eng = Engine(policy=POLICY)
    for i in range(600):  # s1: 600 events, two chunks and more (CHUNK 256): a compaction drops 300
        _call(eng, "append_sync_event", "s1", f"a{i}", f'{{"i":{i}}}', None, None)
    for s, n in (("s2", 5), ("s3", 40), ("s30", 3), ("s4", 2)):
        for i in range(n):
            _call(eng, "append_sync_event", s, f"k{i}", f'{{"s":"{s}","i":{i}}}', None, None)
    return eng


def _meanwhile(eng: Engine, round_no: int) -> None:
    """What commits between two steps of the read: appends to every stream, a compaction that
    drops s1's oldest 300 events (chunk 0 goes), a reset of s2's epoch (its rows dropped)."""
    for s in ("s1", "s2", "s3", "s30", "s4", "s5"):
        _call(eng, "append_sync_event", s, f"late{round_no}", '{"late":true}', None, None)
    if round_no == 0:
        assert eng.compact(10**18)
        eng.advance_durable(eng.committed)
    if round_no == 1:
        _call(eng, "reset_stream_epoch", "s2")


def _oracle(eng: Engine, claims: Claims, text: str) -> list[Row]:
    (query,) = q.parse(text)
    return [row for row in q.evaluate(query, list(eng.db.rows(query.table))) if can_read(claims, row)]


def _sliced(eng: Engine, claims: Claims, text: str, slice_rows: int = 1,
            meanwhile: Callable[[Engine, int], None] = _meanwhile) -> tuple[list[Row], list[Row], int]:
    """The oracle's rows at the moment the read is taken, and the read's answer stepped
    ``slice_rows`` at a time with ``meanwhile`` committing between steps (and, to at least two
    rounds, after the last step and before the answer's rows are listed: a stream's view answered
    as it is is read only when the answer is encoded); and the rounds run."""
    expected = _oracle(eng, claims, text)
    read = eng.read(claims, text)
    rounds = 0
    while not read.step(slice_rows):
        meanwhile(eng, rounds)
        rounds += 1
    answer = read.result()
    while rounds < 2:
        meanwhile(eng, rounds)
        rounds += 1
    return expected, list(answer.inserts), rounds


@pytest.mark.parametrize(("claims", "text"), CASES)
def test_commits_between_steps_never_show_in_the_answer(claims: Claims, text: str) -> None:
    eng = _engine()
    before = eng.committed
    expected, got, rounds = _sliced(eng, claims, text)
    assert rounds >= 2  # the compaction and the reset did land before the answer was read
    assert eng.committed > before
    assert got == expected


@pytest.mark.parametrize(("claims", "text"), CASES)
def test_the_later_state_differs_so_the_check_means_something(claims: Claims, text: str) -> None:
    """Each case's rows after the commits are not those before: a read that saw any of them
    would fail the test above."""
    eng = _engine()
    expected, _, _ = _sliced(eng, claims, text)
    assert _oracle(eng, claims, text) != expected


def test_one_step_reads_what_many_steps_read() -> None:
    for claims, text in CASES:
        eng = _engine()
        whole = eng.read(claims, text)
        assert whole.step(ALL_ROWS)
        sliced = eng.read(claims, text)
        while not sliced.step(7):
            pass
        assert sliced.result() == whole.result() == eng.query(claims, text)


def test_read_keeps_the_offset_it_read_and_refuses_misuse() -> None:
    eng = _engine()
    view = eng.read(ALL, "SELECT * FROM sync_event WHERE stream_id = 's3'")
    assert view.done  # the stream alone, granted: its frozen view is the answer, no step to take
    read = eng.read(ALL, "SELECT * FROM sync_event WHERE stream_id = 's3' AND seq < 1000")  # rows matched
    at = eng.committed
    _meanwhile(eng, 0)
    assert read.offset == at < eng.committed
    with pytest.raises(LocalProtocolError):
        read.result()  # not stepped to its end
    with pytest.raises(LocalProtocolError):
        read.step(0)
    assert read.step(40) is False  # exactly its 40 rows: done only once a step finds fewer than asked
    assert read.step(40) is True
    assert read.step(1) is True and len(read.result().inserts) == 40


def test_checks_are_made_when_the_read_is_taken() -> None:
    eng = _engine()
    eng.max_scan_rows = 100
    with pytest.raises(SyncError) as err:
        eng.read(ALL, "SELECT * FROM sync_event WHERE stream_id = 's1'")
    assert err.value.details["limit"] == "max_scan_rows"
    with pytest.raises(SyncError):
        eng.read(EXACT, "SELECT * FROM sync_event WHERE stream_id = 's2'")  # not granted


# --- the check kills a read of the live log (planted bugs) ---------------------------------------


def _live_frozen(self: StreamLog, watermark: int | None = None, upto: int | None = None) -> Iterable[Row]:
    """A planted bug: the log's rows read from the live log as the read is stepped (its
    positions fixed at the first step, as ``EventSeq``'s iterator fixes them)."""
    return (ev for ev in self.events if (watermark is None or ev.seq > watermark) and (upto is None or ev.seq <= upto))


def _live_chain(logs: Iterable[StreamLog]) -> Iterator[Row]:
    """A planted bug: the streams' views taken as each is reached, not when the read is taken."""
    return (row for log in list(logs) for row in log.frozen())


@pytest.mark.parametrize(("planted", "target"), [
    (_live_frozen, (StreamLog, "frozen")),
    (_live_chain, (engine_mod, "_frozen_rows")),
])
def test_a_read_of_the_live_log_is_caught(planted: object, target: tuple[object, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(*target, planted)
    caught: list[str] = []
    for claims, text in CASES:
        eng = _engine()
        try:
            expected, got, _ = _sliced(eng, claims, text)
        except IndexError:  # the live log's positions moved under it (a drop): killed too
            caught.append(text)
            continue
        if got != expected:
            caught.append(text)
    assert caught, caught


# --- the connection's queue while its one-off read is stepped (Engine.begin_read / answer_read) --

SUB = "SELECT * FROM sync_event WHERE stream_id = 's3'"


def _held(confirmed: bool) -> tuple[Engine, int, list[str]]:
    """A connection subscribed to s3 takes a one-off read of s3; a commit to s3 lands during the
    read (its update queued for the connection); the read is then answered.  Returns what the
    connection is given, in order, taking its queue before and after the answer."""
    eng = _engine()
    c = eng.connect(ALL, confirmed=confirmed)
    eng.handle(c, Subscribe(1, 1, (SUB,)))
    kinds = [type(out.message).__name__ for out in eng.take(c, 100, 1 << 40)]
    taken = eng.begin_read(c, 7, SUB)
    assert taken is not None
    _call(eng, "append_sync_event", "s3", "late", '{"late":true}', None, None)  # durable too
    kinds += [type(out.message).__name__ for out in eng.take(c, 100, 1 << 40)]  # held: nothing
    kinds.append("|")
    while not taken.step(3):
        pass
    eng.answer_read(c, 7, taken)
    outs = eng.take(c, 100, 1 << 40)
    kinds += [type(out.message).__name__ for out in outs]
    answer = next(out.message for out in outs if isinstance(out.message, OneOffQueryResult))
    assert not isinstance(answer.result, str)
    assert [row.idempotency_key for row in answer.result.inserts] == [f"k{i}" for i in range(40)]  # not "late"
    return eng, c, kinds


@pytest.mark.parametrize("confirmed", [False, True])
def test_updates_queued_during_a_read_go_out_after_its_answer(confirmed: bool) -> None:
    _, _, kinds = _held(confirmed)
    assert kinds == ["SubscribeApplied", "|", "OneOffQueryResult", "TransactionUpdate"]


def test_a_refused_read_is_answered_at_once_and_holds_nothing() -> None:
    eng = _engine()
    c = eng.connect(EXACT, confirmed=False)
    assert eng.begin_read(c, 3, "SELECT * FROM sync_event WHERE stream_id = 's2'") is None  # not granted
    (out,) = eng.take(c, 100, 1 << 40)
    assert isinstance(out.message, OneOffQueryResult) and isinstance(out.message.result, str)
    assert eng.begin_read(c, 4, SUB) is not None
    with pytest.raises(LocalProtocolError):
        eng.begin_read(c, 5, SUB)  # one read at a time per connection


def _no_hold(self: Engine, conn: object) -> int | None:
    """A planted bug: the release bound ignores a read in progress."""
    return self.durable if conn.confirmed else None  # type: ignore[attr-defined]


def test_a_queue_not_held_during_a_read_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Engine, "_release_bound", _no_hold)
    _, _, kinds = _held(False)
    assert kinds == ["SubscribeApplied", "TransactionUpdate", "|", "OneOffQueryResult"]


# --- review (helper revr): the answer's limits and the confirmed gate on the sliced path -----------


def _small_engine(bound: int | None) -> tuple[Engine, int]:
    """Five events of stream s; a connection; messages measured as their repr's length (a stand-in
    for the wire's estimate) against a one-message bound of ``bound``."""
    eng = Engine()
    for i in range(5):
        _call(eng, "append_sync_event", "s", f"k{i}", '{"i":1}', None, None)
    eng.measure = lambda message: len(repr(message))
    eng.max_outbound_message_bytes = bound
    return eng, eng.connect(ALL, confirmed=False)


def test_an_answer_whose_refusal_is_over_the_message_bound_closes_by_policy() -> None:
    """An answer over ``max_outbound_message_bytes`` becomes its ``limit_exceeded`` error; when
    even that error is over the bound (a bound of a few bytes), the connection is closed by policy
    (``CLOSE_POLICY: <error>``, as any message over the bound is, :meth:`Engine._send`) -- the
    read's answer must not raise out of the engine (the server would count it as a bug of its own
    and close 1011)."""
    eng, c = _small_engine(20)
    conn = eng.conns[c]
    read = eng.begin_read(c, 1, "SELECT * FROM sync_event WHERE stream_id = 's'")
    assert read is not None and read.step(1000)
    eng.answer_read(c, 1, read)
    assert c not in eng.conns
    reason = conn.closed_reason
    assert reason is not None and reason.startswith("1008: ") and '"limit":"max_outbound_message_bytes"' in reason
    # the bound with room for the error but not the rows: the error is the answer, the connection stays
    eng, c = _small_engine(300)
    read = eng.begin_read(c, 2, "SELECT * FROM sync_event WHERE stream_id = 's'")
    assert read is not None and read.step(1000)
    eng.answer_read(c, 2, read)
    (out,) = eng.take(c, 10, 1 << 40)
    assert isinstance(out.message, OneOffQueryResult) and isinstance(out.message.result, str)
    assert '"limit":"max_outbound_message_bytes"' in out.message.result


def test_a_confirmed_readers_answer_waits_for_its_offset_to_be_durable() -> None:
    """CONF-1 on the sliced path: a confirmed reader's one-off answer reads the state at its
    offset, which holds a commit not yet durable -- it is released only once that offset is, and
    so is an update queued before the read (at that offset) while the read is in progress."""
    eng = _engine()
    c = eng.connect(ALL, confirmed=True)
    eng.handle(c, Subscribe(1, 1, (SUB,)))
    assert [type(o.message).__name__ for o in eng.take(c, 100, 1 << 40)] == ["SubscribeApplied"]
    eng.call_detached(ALL, "append_sync_event", ("s3", "fresh", '{"fresh":true}', None, None))  # not durable
    at = eng.committed
    assert eng.durable == at - 1
    read = eng.begin_read(c, 9, SUB)
    assert read is not None and read.offset == at
    assert eng.take(c, 100, 1 << 40) == []  # the update at `at`: not durable, read or no read
    assert read.step(1000)
    eng.answer_read(c, 9, read)
    assert eng.take(c, 100, 1 << 40) == []  # the answer shows "fresh": not before `at` is durable
    eng.advance_durable(at)
    outs = eng.take(c, 100, 1 << 40)
    assert [(type(o.message).__name__, o.offset) for o in outs] == [("TransactionUpdate", at),
                                                                   ("OneOffQueryResult", at)]
    answer = outs[1].message
    assert isinstance(answer, OneOffQueryResult) and not isinstance(answer.result, str)
    assert [row.idempotency_key for row in answer.result.inserts] == [f"k{i}" for i in range(40)] + ["fresh"]


def test_updates_held_behind_a_read_count_against_the_queue_bound() -> None:
    """What protocol.md says of a read in progress: the updates held behind it stay in the
    connection's queue and count against ``max_outbound_queue`` -- a read that lasts through more
    of them than that closes the connection as a slow consumer (memory stays bounded); the same
    updates taken as they come (no read) do not."""
    from spec.messages import SLOW_CONSUMER_REASON
    for reading in (False, True):
        eng = Engine(max_queue=3)
        for i in range(3):
            _call(eng, "append_sync_event", "s3", f"k{i}", "{}", None, None)
        c = eng.connect(ALL, confirmed=False)
        conn = eng.conns[c]
        eng.handle(c, Subscribe(1, 1, (SUB,)))
        eng.take(c, 100, 1 << 40)
        read = eng.begin_read(c, 2, SUB) if reading else None
        for i in range(4):  # four updates of the subscription while the read is in progress
            _call(eng, "append_sync_event", "s3", f"late{i}", "{}", None, None)
            if not reading:
                eng.take(c, 100, 1 << 40)
        assert (c in eng.conns) is not reading
        assert conn.closed_reason == (SLOW_CONSUMER_REASON if reading else None)
        assert read is None or read.step(100)


def test_a_read_answered_with_a_repacked_table_queues_that_table_and_refuses_another() -> None:
    """``answer_read``'s ``table`` (the server's rows encoded ahead, ADR-0043) is what the answer
    carries -- the object given, at the read's offset -- if it is the read's table with its row
    counts; any other table (a row short, another table, deletes added) is a caller's mistake,
    refused with the queue still held (nothing queued)."""
    from dataclasses import dataclass

    from spec.messages import TableRows

    @dataclass(frozen=True, slots=True)
    class Repacked(TableRows):  # what wire.EncodedRows is to the engine: the same rows, more attached
        note: str = "encoded"

    eng = _engine()
    c = eng.connect(ALL, confirmed=False)
    read = eng.begin_read(c, 7, SUB)
    assert read is not None
    while not read.step(3):
        pass
    rows = read.result()
    for wrong in (Repacked(rows.table, rows.inserts[:-1]), Repacked("sync_stream", rows.inserts),
                  Repacked(rows.table, rows.inserts, rows.inserts[:1])):
        with pytest.raises(LocalProtocolError, match="re-packed"):
            eng.answer_read(c, 7, read, wrong)
        assert eng.take(c, 100, 1 << 40) == []  # still held, nothing queued
    given = Repacked(rows.table, rows.inserts)
    eng.answer_read(c, 7, read, given)
    (out,) = eng.take(c, 100, 1 << 40)
    assert isinstance(out.message, OneOffQueryResult) and out.message.result is given and out.offset == read.offset


@pytest.mark.parametrize("text", [SUB, "SELECT * FROM sync_event WHERE stream_id = 's3' AND idempotency_key > ''"])
def test_a_repacked_table_of_other_rows_with_the_same_counts_is_refused(text: str) -> None:
    """``answer_read`` takes the re-packed table only with the read's very rows (the sequence
    :meth:`Read.result` returns, made once), not any rows of the same count: the same 40 rows
    reversed, or the first 40 of another stream, is a caller's mistake, refused with the queue still
    held; the read's own rows with an encoding attached pass.  A stream's view (``SUB``) and matched
    rows (a list built by the steps) alike.  Failed before: the check compared the table, the event
    flag and the row counts only, and both wrong tables were queued as the answer."""
    from dataclasses import dataclass

    from spec.messages import TableRows

    @dataclass(frozen=True, slots=True)
    class Repacked(TableRows):
        note: str = "encoded"

    eng = _engine()
    c = eng.connect(ALL, confirmed=False)
    other = eng.query(ALL, "SELECT * FROM sync_event WHERE stream_id = 's1'")
    read = eng.begin_read(c, 7, text)
    assert read is not None
    while not read.step(3):
        pass
    rows = read.result()
    assert len(rows.inserts) == 40
    for wrong in (Repacked(rows.table, tuple(reversed(rows.inserts))), Repacked(rows.table, tuple(other.inserts[:40]))):
        with pytest.raises(LocalProtocolError, match="re-packed"):
            eng.answer_read(c, 7, read, wrong)
        assert eng.take(c, 100, 1 << 40) == []  # still held, nothing queued
    given = Repacked(rows.table, read.result().inserts)
    eng.answer_read(c, 7, read, given)
    (out,) = eng.take(c, 100, 1 << 40)
    assert isinstance(out.message, OneOffQueryResult) and out.message.result is given
