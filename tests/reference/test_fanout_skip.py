"""``Engine._fanout``'s early return (ADR-0021): taken exactly when no shape watches a table the
transaction touched, and then the same messages as the general path.

The cases are a hand-written table: who subscribes to what (and whether they left again), one
reducer call, and whether the early return must be taken.  The second opinion for the messages is
the general path itself, forced on a twin engine by a *decoy* connection whose subscriptions watch
every table the cases touch but match no row (pinned to a stream nobody writes): the decoy gets
nothing, so every other connection's queue must be the same, message for message, on both
engines, and so must the count of (shape, row) matches that reached a real shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from support.edited import edited_module

from reference.engine import Engine
from spec.auth import Claims
from spec.messages import CallReducer, Subscribe, Unsubscribe
from spec.schema import SCOPES

ADMIN = Claims("a" * 64, frozenset(SCOPES), ("*",))
DECOY_QUERIES = (
    "SELECT * FROM sync_event WHERE stream_id = 'decoy'",
    "SELECT * FROM sync_stream WHERE stream_id = 'decoy'",
    "SELECT * FROM stream_signal WHERE stream_id = 'decoy'",
    "SELECT * FROM presence_signal WHERE session_id = 'decoy'",
    "SELECT * FROM session_presence WHERE session_id = 'decoy'",
)

APPEND = ("append_sync_event", ("s", "k-new", '{"n":1}', None, None))
SIGNAL = ("publish_stream_signal", ("s", "typing", '{"on":true}'))
RESET = ("reset_stream_epoch", ("s",))  # deletes sync_event rows, updates sync_stream: no inserts of events


@dataclass(frozen=True)
class Case:
    name: str
    subscribe: tuple[str, ...]  # queries of the watching connection (empty: nobody subscribes)
    leave: str  # "" stays, "unsubscribe" drops the query set, "disconnect" closes the connection
    call: tuple[str, tuple[object, ...]]
    skip: bool  # the early return must be taken


CASES = (
    Case("nobody subscribes, append", (), "", APPEND, True),
    Case("nobody subscribes, stream signal (event table only)", (), "", SIGNAL, True),
    Case("nobody subscribes, epoch reset (deletes)", (), "", RESET, True),
    Case("sync_event watched, append to it", ("SELECT * FROM sync_event WHERE stream_id = 's'",), "", APPEND, False),
    Case("sync_event watched, pinned to another stream", ("SELECT * FROM sync_event WHERE stream_id = 'o'",), "",
         APPEND, False),
    Case("only sync_stream watched: an append updates it", ("SELECT * FROM sync_stream",), "", APPEND, False),
    Case("presence watched, append touches neither presence table", ("SELECT * FROM presence_signal",), "",
         APPEND, True),
    Case("sync_event watched, stream signal touches only stream_signal", ("SELECT * FROM sync_event",), "",
         SIGNAL, True),
    Case("stream_signal watched: an event table, in tx.events only", ("SELECT * FROM stream_signal",), "",
         SIGNAL, False),
    Case("sync_event watched, epoch reset: in tx.deletes only", ("SELECT * FROM sync_event",), "", RESET, False),
    Case("sync_event watched then unsubscribed", ("SELECT * FROM sync_event",), "unsubscribe", APPEND, True),
    Case("sync_event watched by a connection that left", ("SELECT * FROM sync_event",), "disconnect", APPEND, True),
    Case("stream_signal watched then unsubscribed, signal", ("SELECT * FROM stream_signal",), "unsubscribe",
         SIGNAL, True),
)


def play(case: Case, decoy: bool) -> tuple[Engine, list[int], int]:
    """The case on a fresh engine (unconfirmed readers: every message is released at once);
    returns the engine, the connections to compare and the skips before the case's call."""
    eng = Engine(max_queue=10_000)
    writer = eng.connect(ADMIN, confirmed=False)
    for i in range(3):  # a stream with events, so a reset has rows to delete
        eng.handle(writer, CallReducer(i + 1, "append_sync_event", ("s", f"k{i}", f'{{"i":{i}}}', None, None)))
    if decoy:
        d = eng.connect(ADMIN, confirmed=False)
        eng.handle(d, Subscribe(1, 7, DECOY_QUERIES))
        for table in ("sync_event", "sync_stream", "stream_signal", "presence_signal", "session_presence"):
            assert eng.shapes_by_pin.get(table), f"the decoy does not watch {table}"
    conns = [writer]
    if case.subscribe:
        sub = eng.connect(ADMIN, confirmed=False)
        eng.handle(sub, Subscribe(10, 1, case.subscribe))
        if case.leave == "unsubscribe":
            eng.handle(sub, Unsubscribe(11, 1))
        if case.leave == "disconnect":
            eng.close(sub)
        else:
            conns.append(sub)
    before = eng.fanout_skips
    eng.handle(writer, CallReducer(99, case.call[0], case.call[1]))
    return eng, conns, before


def queue(eng: Engine, conn: int) -> list[tuple[int, object]]:
    return [(o.offset, o.message) for o in eng.conns[conn].outbound]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_early_return_is_taken_exactly_when_no_shape_watches_a_touched_table(case: Case) -> None:
    eng, conns, before = play(case, decoy=False)
    assert eng.committed == 4, "the call committed"
    assert eng.fanout_skips - before == (1 if case.skip else 0)
    general, general_conns, general_before = play(case, decoy=True)
    assert general.fanout_skips == general_before, "the decoy forces the general path"
    assert len(conns) == len(general_conns)
    for a, b in zip(conns, general_conns, strict=True):
        assert queue(eng, a) == queue(general, b), case.name
    assert eng.match_checks == general.match_checks  # the decoy matches no row of these cases


@pytest.mark.parametrize("case", [c for c in CASES if c.skip], ids=[c.name for c in CASES if c.skip])
def test_the_caller_still_gets_its_answer_when_the_fanout_returns_early(case: Case) -> None:
    eng, conns, _before = play(case, decoy=False)
    last = eng.conns[conns[0]].outbound[-1]
    assert last.offset == 4
    assert type(last.message).__name__ == "ReducerResult"
    assert last.message.request_id == 99  # type: ignore[attr-defined]
    assert last.message.tx_offset == 4  # type: ignore[attr-defined]
    assert last.message.outcome.query_sets == ()  # type: ignore[attr-defined]


def test_every_case_kind_is_in_the_table() -> None:
    """The table covers both outcomes for each place a touched table can be (inserts, deletes,
    events) and both ways of leaving."""
    assert {c.skip for c in CASES if c.call is APPEND} == {True, False}
    assert {c.skip for c in CASES if c.call is SIGNAL} == {True, False}
    assert {c.skip for c in CASES if c.call is RESET} == {True, False}
    assert {c.leave for c in CASES} == {"", "unsubscribe", "disconnect"}


# --- planted bugs in the early return: each must fail the table above -------------------------------------

WATCH_TEST = "for d in (tx.deletes, tx.inserts, tx.events) for t in d"
MUTANTS: tuple[tuple[str, str, str], ...] = (
    ("always_skips", f"        if not watched or not any(watched.get(t) {WATCH_TEST}):\n", "        if True:\n"),
    ("ignores_deletes", WATCH_TEST, "for d in (tx.inserts, tx.events) for t in d"),
    ("ignores_events", WATCH_TEST, "for d in (tx.deletes, tx.inserts) for t in d"),
    ("empty_index_counts_as_watched", "any(watched.get(t) for d in", "any(t in watched for d in"),
    ("drops_the_answer",
     "                self._send(conn, offset, ReducerResult(request_id, offset, ReducerOk(ret, ())))\n",
     "                pass\n"),
)


def mutated_engine(old: str, new: str) -> type[Engine]:
    """``Engine`` from ``reference/engine.py`` with one edit, executed into a fresh module (the
    real module is untouched)."""
    import reference.engine as real
    engine: type[Engine] = edited_module(real, [(old, new)], "mutant").Engine
    return engine


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_planted_bugs_in_the_early_return_fail_the_table(mutant: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    _name, old, new = mutant
    monkeypatch.setitem(globals(), "Engine", mutated_engine(old, new))
    failed = []
    for case in CASES:
        try:
            test_early_return_is_taken_exactly_when_no_shape_watches_a_touched_table(case)
            if case.skip:
                test_the_caller_still_gets_its_answer_when_the_fanout_returns_early(case)
        except (AssertionError, IndexError):
            failed.append(case.name)
    assert failed, f"mutant {mutant[0]} survived the table"


def test_the_mutant_machinery_alone_fails_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the engine rebuilt the same way, without an edit, passes the whole table (so a
    mutant fails on its edit, not on being rebuilt)."""
    same = "        watched = self.shapes_by_pin\n"
    monkeypatch.setitem(globals(), "Engine", mutated_engine(same, same))
    for case in CASES:
        test_early_return_is_taken_exactly_when_no_shape_watches_a_touched_table(case)
        if case.skip:
            test_the_caller_still_gets_its_answer_when_the_fanout_returns_early(case)
