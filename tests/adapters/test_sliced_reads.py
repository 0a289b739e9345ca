"""A big one-off read (``OneOffQuery``, ``/sql``) no longer holds the event loop for everyone:
its rows are built and matched ``READ_SLICE_ROWS`` at a time with the loop going to other clients
between slices, and it still answers the state at the moment it was taken (ADR-0038).

Asserted as progress and order, not time: the read is made to wait, a step at a time, until
another client's call has been *answered* over its socket -- possible only if the loop serves
others between the read's slices (a read held in one callback is over before that call is even
read).  The call appends to the stream being read: the answer must not hold its row, and on the
reader's own socket the answer must come before the update of that later transaction (the
answer goes where the read was taken).  The last test plants an answer queued at the end and
shows the order check kills it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.server import ServerThread, WireClient, http, populate_big, rows_of, running_server  # type: ignore[import-not-found]

from adapters import server as server_mod
from adapters import wire
from reference.engine import ALL_ROWS, Engine, Read
from spec.messages import OneOffQueryResult

ROWS = 300
BIG = "SELECT * FROM sync_event WHERE stream_id = 'big'"


class Gate:
    """Wraps ``Read.step``: marks when a sliced read starts, then stalls it (a step that takes no
    row) until another client's call was answered; records whether that happened while the read
    was still going.  A read that never yields to the loop would spin here: ``give_up_s`` after
    the first stall the read goes on (a fail-safe, not a measurement: the test then fails on what
    it recorded, the order)."""

    def __init__(self, give_up_s: float = 60) -> None:
        self.started = threading.Event()
        self.other_answered = threading.Event()
        self.answered_during_read: bool | None = None
        self.stalls = 0
        self.give_up_s = give_up_s
        self.give_up_at: float | None = None
        self.real = Read.step

    def step(self, read: Read, most: int) -> bool:
        if most == ALL_ROWS:  # Engine.query: a read answered in one go (the read-in-one-hold path)
            self.started.set()
            done = self.real(read, most)
            self.answered_during_read = self.other_answered.is_set()
            return done
        self.started.set()
        if self.give_up_at is None:
            self.give_up_at = time.monotonic() + self.give_up_s
        if not self.other_answered.is_set() and time.monotonic() < self.give_up_at:
            self.stalls += 1
            return False
        done = self.real(read, most)
        if done:
            self.answered_during_read = self.other_answered.is_set()
        return done


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerThread, Gate]]:
    monkeypatch.setattr(server_mod, "READ_SLICE_ROWS", 10)
    gate = Gate()
    with running_server(tmp_path) as st:
        populate_big(st, ROWS)
        monkeypatch.setattr(Read, "step", lambda read, most: gate.step(read, most))
        yield st, gate


def _other_calls(st: ServerThread, gate: Gate, key: str) -> None:
    """Once the read has started: another client appends to the stream being read, and is answered."""
    assert gate.started.wait(30)
    b = WireClient(st, st.token())
    result = b.call("append_sync_event", "big", key, '{"late":true}', None, None)
    assert isinstance(result.outcome, wire.ReducerOk)
    gate.other_answered.set()
    b.close()


def _keys(rows: Any) -> list[str]:
    return [r.idempotency_key for r in rows]


def _one_off_scenario(st: ServerThread, gate: Gate, text: str = BIG) -> list[object]:
    """A (subscribed to the stream) sends a big OneOffQuery; B appends to the stream while it is
    read.  Returns what A received, in order, until both the answer and B's update are in."""
    a = WireClient(st, st.token())
    applied = a.subscribe(1, BIG)
    assert isinstance(applied, wire.SubscribeApplied)
    a.send(wire.OneOffQuery(a.rid(), text))
    _other_calls(st, gate, "late")
    got: list[object] = []
    while not (any(isinstance(x, wire.OneOffQueryResult) for x in got)
               and any(isinstance(x, wire.TransactionUpdate) for x in got)):
        got.append(a.recv(timeout=30))
    a.close()
    return got


@pytest.mark.parametrize("text", [BIG, f"{BIG} AND seq < 100000"])  # the stream's view as it is; rows matched
def test_another_client_is_answered_during_a_big_one_off_which_still_reads_its_moment(
        served: tuple[ServerThread, Gate], text: str) -> None:
    st, gate = served
    got = _one_off_scenario(st, gate, text)
    assert gate.answered_during_read is True and gate.stalls > 0
    kinds = [type(x).__name__ for x in got]
    assert kinds.index("OneOffQueryResult") < kinds.index("TransactionUpdate")  # the answer where it was read
    answer = next(x for x in got if isinstance(x, wire.OneOffQueryResult))
    assert isinstance(answer.result, wire.QueryRows)
    (table,) = answer.result.tables
    keys = _keys(rows_of("sync_event", table.rows))
    assert keys == [f"k{i}" for i in range(ROWS)]  # B's row, committed during the read, is not in it


def test_another_client_is_answered_during_a_big_sql_which_still_reads_its_moment(
        served: tuple[ServerThread, Gate]) -> None:
    st, gate = served
    out: dict[str, Any] = {}
    tok = st.token()

    def sql() -> None:
        out["answer"] = http("POST", f"{st.base}/v1/database/autopilot-sync/sql", f"{BIG}; {BIG} AND seq > 290",
                             {"Authorization": f"Bearer {tok}"})
    t = threading.Thread(target=sql)
    t.start()
    _other_calls(st, gate, "late")
    t.join(60)
    assert gate.answered_during_read is True and gate.stalls > 0
    answer = out["answer"]
    assert answer.status == 200
    first, second = answer.json()
    assert [row[3] for row in first["rows"]] == [f"k{i}" for i in range(ROWS)]  # column 3: idempotency_key
    assert [row[3] for row in second["rows"]] == [f"k{i}" for i in range(290, ROWS)]


def _answer_at_the_end(self: Engine, conn_id: int, request_id: int, read: Read, table: Any = None) -> None:
    """A planted bug: the answer queued behind what was queued during the read."""
    conn = self.conns.get(conn_id)
    if conn is None:
        return
    conn.reading = None
    self._send(conn, self.committed, OneOffQueryResult(request_id, read.result() if table is None else table))


def test_an_answer_queued_at_the_end_is_caught(served: tuple[ServerThread, Gate],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    st, gate = served
    monkeypatch.setattr(Engine, "answer_read", _answer_at_the_end)
    got = _one_off_scenario(st, gate)
    kinds = [type(x).__name__ for x in got]
    assert kinds.index("TransactionUpdate") < kinds.index("OneOffQueryResult")  # what the order check refuses

