"""The differential machines' read rules (tests/support/reads.py) on fixed scenarios: they hold on the
engine, and each fails on the planted bug it exists for -- not only when a derandomized draw reaches it.

* a one-off point read by another identity's checkpoint id, or by an outbox id without a bridge scope,
  is judged by SQLite (AUTH-1): planted, a row filter skipped for pinned keys leaks the row;
* a sliced read of ``sync_event`` stepped one row at a time with appends, a compaction and an epoch
  reset between the steps answers the state at take time (ADR-0038): planted, stream logs frozen only
  when the step reaches them show a later append;
* a sliced read of the reader's own checkpoints stepped across acks: planted, rows looked up when
  stepped show the later ack;
* readers of identities A and B with the same grants, and a reader with a bridge scope next to one
  without, subscribe the same query and hold exactly their own rows after every write (AUTH-1,
  DELIV-2): planted, subscribers grouped by their stream grants whatever the table get each other's
  checkpoints.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from support.machines import DiffMachine, DiffModuleMachine
from support.reads import READERS, ReadDivergence
from support.sql_oracle import AbstractQuery, Style, Term

import reference.engine as eng
from reference.eventlog import StreamLog
from spec.values import Row

A_CHECKPOINT = AbstractQuery("sync_checkpoint", (Term("checkpoint_id", "=", "d1|s.a1"),))
OUTBOX = AbstractQuery("bridge_outbox", (Term("outbox_id", "=", "o1"),))
EVENTS = AbstractQuery("sync_event", ())
CHECKPOINTS = AbstractQuery("sync_checkpoint", ())


def _module_machine() -> DiffModuleMachine:
    """Identity A (d1) and B (d2) hold checkpoints of s.a1; s.a1 and s.a2 have events; o1 is queued."""
    m = DiffModuleMachine()
    for what, who, stream in [("append", 0, "s.a1"), ("append", 0, "s.a1"), ("append", 1, "s.a2"),
                              ("ack", 0, "s.a1"), ("ack", 1, "s.a1"), ("ack", 0, "s.a2"), ("outbox", 0, "")]:
        m._read_write(what, who, stream)
    m.holds()
    return m


def _lazy_frozen_rows(logs: Iterable[StreamLog]) -> Iterator[Row]:
    return itertools.chain.from_iterable(log.frozen() for log in logs)


def _owner_rows_when_stepped(self: Any, table: str, claims: Any, scan: Any) -> Any:
    rows_of, keys = self.db.pk[table], self.db.by_column[table].by_value.get(claims.identity, {})
    return (rows_of[key] for key in keys)


PLANTS = {
    "row_filter_skipped": ("_row_filter", lambda claims, table: lambda row: True),
    "views_frozen_lazily": ("_frozen_rows", _lazy_frozen_rows),
    "grouped_by_grants": ("filter_key", lambda claims, table: claims.streams),
}


def _plant(monkeypatch: pytest.MonkeyPatch, name: str | None) -> None:
    if name == "owner_rows_when_stepped":
        monkeypatch.setattr(eng.Engine, "_readable", _owner_rows_when_stepped)
    elif name is not None:
        attr, value = PLANTS[name]
        monkeypatch.setattr(eng, attr, value)


@pytest.mark.parametrize("plant", [None, "row_filter_skipped"])
@pytest.mark.parametrize(("reader", "query"), [(1, A_CHECKPOINT), (0, OUTBOX)])
def test_a_point_read_of_a_row_the_reader_may_not_read(monkeypatch: pytest.MonkeyPatch, plant: str | None,
                                                      reader: int, query: AbstractQuery) -> None:
    """B reads A's checkpoint by its id; A without a bridge scope reads an outbox row by its id."""
    m = _module_machine()
    assert query.table != "sync_checkpoint" or READERS[reader].identity != "a" * 64
    _plant(monkeypatch, plant)
    if plant is None:
        m._one_off(reader, query, Style())
        m._take(reader, query, Style(quoted=True, sdk_parens=True), 1)
        m.teardown()
    else:
        with pytest.raises(ReadDivergence, match="AUTH-1"):
            m._one_off(reader, query, Style())


@pytest.mark.parametrize("plant", [None, "views_frozen_lazily"])
@pytest.mark.parametrize("machine", [DiffModuleMachine, DiffMachine])
def test_a_sliced_read_answers_the_state_it_was_taken_at(monkeypatch: pytest.MonkeyPatch, plant: str | None,
                                                          machine: type[Any]) -> None:
    """Reader 0 (s.*) takes all of sync_event and steps it a row at a time; between the steps: appends to
    both streams, a compaction, an epoch reset of s.a2, more appends."""
    if machine is DiffModuleMachine:
        m: Any = _module_machine()
    else:
        m = DiffMachine()
        m.start(follows=[])
        for stream in ("s.a1", "s.a1", "s.a2"):
            m._read_write("append", 0, stream)
    _plant(monkeypatch, plant)
    writes = [("append", 0, "s.a1"), ("append", 1, "s.a2"), ("compact", 0, ""), ("reset", 0, "s.a2"),
              ("append", 0, "s.a2"), ("append", 0, "s.b1")]
    if plant is None:
        m._read_between(0, EVENTS, Style(), 1, writes)
        assert not m.open_reads
    else:
        with pytest.raises(ReadDivergence, match="ADR-0038"):
            m._read_between(0, EVENTS, Style(), 1, writes)


@pytest.mark.parametrize("plant", [None, "owner_rows_when_stepped"])
def test_a_sliced_read_of_the_readers_checkpoints_ignores_later_acks(monkeypatch: pytest.MonkeyPatch,
                                                                      plant: str | None) -> None:
    m = _module_machine()
    _plant(monkeypatch, plant)
    writes = [("append", 0, "s.a2"), ("ack", 0, "s.a2"), ("append", 0, "s.a1"), ("ack", 0, "s.a1")]
    if plant is None:
        m._read_between(0, CHECKPOINTS, Style(), 1, writes)
    else:
        with pytest.raises((ReadDivergence, RuntimeError)):
            m._read_between(0, CHECKPOINTS, Style(), 1, writes)


@pytest.mark.parametrize("plant", [None, "grouped_by_grants"])
@pytest.mark.parametrize(("readers", "query"), [([0, 1], CHECKPOINTS), ([5, 0], AbstractQuery("bridge_outbox", ()))])
def test_readers_of_other_identities_hold_only_their_own_rows(monkeypatch: pytest.MonkeyPatch, plant: str | None,
                                                              readers: list[int], query: AbstractQuery) -> None:
    """A and B (same grants, same scopes) watch the checkpoints; C with a bridge scope and A without one
    (same grants) watch the outbox; then A and B ack and enqueue."""
    m = _module_machine()
    _plant(monkeypatch, plant)
    writes = [("append", 1, "s.a1"), ("ack", 0, "s.a1"), ("ack", 1, "s.a1"), ("outbox", 1, ""), ("sent", 0, ""),
              ("ack", 0, "s.b1")]
    if plant is None:
        m._watch(readers, query, Style(), writes)
        assert len(m.reader_views) == len(readers)
        assert any(v.rows for v in m.reader_views.values())  # someone holds rows: the check compared something
    else:
        with pytest.raises(ReadDivergence, match="AUTH-1"):
            m._watch(readers, query, Style(), writes)
