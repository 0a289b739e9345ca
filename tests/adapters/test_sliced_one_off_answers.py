"""A big one-off answer (``OneOffQuery``) is encoded ahead, ``READ_SLICE_ROWS`` rows at a time with
the loop going to other work between slices, as a big snapshot's rows are (ADR-0043, after
ADR-0041 decision 7): the sender then takes its bytes as they are.  Before, the read was stepped
in slices (ADR-0038) but its answer was encoded -- and hashed for the body cache -- in one piece.

Asserted as progress and order, never time: a ``call_soon`` chain counts loop iterations, and a
wrapped ``wire.snapshot_row_encoder`` notes the count at the first and the last row encoded
(iterations between them are turns others had meanwhile); a commit made from the loop between two
slices must come after the answer, and the connection's own later call too; a connection closed
between two slices stops the encoding and leaves nothing behind.  The answer's bytes are those of
the one-piece encoder (``wire.encode_server`` of the plain rows: the path the sender took before,
and a different one), for a table of queries over v2 and v3.  Each check is shown able to fail by
a planted server (one method's source edited, ``_plant``)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.server import ServerThread, WireClient, populate_big, rows_of, running_server, with_limits  # type: ignore[import-not-found]

from adapters import bsatn, wire
from adapters import server as server_mod
from spec import messages as m
from spec.errors import SyncError

ROWS = 300
SLICE = 10
STREAMS = 25  # sync_stream rows past a slice: a table the row cache encodes
KEYED = "SELECT * FROM sync_event WHERE stream_id = 'big' AND idempotency_key > ''"  # every row built and matched


def _plant(monkeypatch: pytest.MonkeyPatch, method: str, old: str, new: str, times: int = 1) -> None:
    """Replace ``SyncServer.<method>`` by its source with ``old`` replaced by ``new`` (found
    ``times`` times; both written as indented in the class, as the method's source is)."""
    src = inspect.getsource(getattr(server_mod.SyncServer, method))  # indented as in the class
    assert src.count(old) == times, f"plant target found {src.count(old)} times in {method}"
    namespace: dict[str, Any] = {}
    exec(compile("class Planted:\n" + src.replace(old, new), f"<planted {method}>", "exec"), server_mod.__dict__,
         namespace)
    monkeypatch.setattr(server_mod.SyncServer, method, namespace["Planted"].__dict__[method])


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    monkeypatch.setattr(server_mod, "READ_SLICE_ROWS", SLICE)
    with running_server(tmp_path) as st:
        populate_big(st, ROWS)
        for i in range(STREAMS):
            st.call(lambda i=i: st.server.engine.call_detached(
                st.server.auth.verify(st.token()).claims, "append_sync_event", (f"s{i}", "k", "{}", None, None)))
        st.call(st.server._pump)
        yield st


class Encoding:
    """Counts loop iterations (a ``call_soon`` callback re-armed each time it runs) and, through a
    wrapped ``wire.snapshot_row_encoder``, the rows of the big answer encoded and the count at its
    first and last; ``at_row``: a callback scheduled (``call_soon``) once that many rows are
    encoded, i.e. run between two slices."""

    def __init__(self, st: ServerThread, monkeypatch: pytest.MonkeyPatch,
                 at_row: tuple[int, Callable[[], None]] | None = None) -> None:
        self.st, self.n, self.running = st, 0, True
        self.first: int | None = None
        self.last: int | None = None
        self.rows = 0
        self.at_row = at_row
        self.real = wire.snapshot_row_encoder
        self.real_slices = wire.column_row_slices
        self.steps: list[int] = []  # the count at each step of a stream view's encoding from its columns
        monkeypatch.setattr(wire, "snapshot_row_encoder", self.encoder)
        monkeypatch.setattr(wire, "column_row_slices", self.slices)
        st.call(lambda: st.loop.call_soon(self.tick))

    def tick(self) -> None:
        self.n += 1
        if self.running:
            self.st.loop.call_soon(self.tick)

    def slices(self, t: Any, rows: int) -> Iterator[tuple[list[bytes], list[int]]]:
        for step in self.real_slices(t, rows):
            self.steps.append(self.n)
            yield step

    def encoder(self, t: Any, cache: Any) -> Any:
        enc = self.real(t, cache)
        if enc is None or t.table != "sync_event" or len(t.inserts) < ROWS:
            return enc

        def counted(row: Any) -> bytes:
            if self.first is None:
                self.first = self.n
            self.last = self.n
            self.rows += 1
            if self.at_row is not None and self.rows == self.at_row[0]:
                self.st.loop.call_soon(self.at_row[1])
            return bytes(enc(row))
        return counted


def _keys(answer: wire.OneOffQueryResult) -> list[str]:
    assert isinstance(answer.result, wire.QueryRows)
    return [r.idempotency_key for t in answer.result.tables for r in rows_of("sync_event", t.rows)]


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("planted", [None, "one_piece"])
def test_a_big_one_off_answer_is_encoded_in_slices(served: ServerThread, monkeypatch: pytest.MonkeyPatch,
                                                   version: int, planted: str | None) -> None:
    """The loop turns between the first and the last row's encoding are at least the slices'
    (``ROWS / SLICE - 1``); the client gets every row.  ``one_piece`` plants the old path (the
    answer left to the sender, encoded in one turn): no turn in between."""
    st = served
    if planted == "one_piece":
        _plant(monkeypatch, "_encode_answer", "        t = read.result()\n", "        return None\n")
    enc = Encoding(st, monkeypatch)
    a = WireClient(st, st.token(), version=version)
    a.send(wire.OneOffQuery(a.rid(), KEYED))
    answer = a.recv_until(wire.OneOffQueryResult, timeout=30)
    enc.running = False
    assert _keys(answer) == [f"k{i}" for i in range(ROWS)]
    assert enc.rows == ROWS and enc.first is not None and enc.last is not None
    turns = enc.last - enc.first
    if planted is None:
        assert turns >= ROWS // SLICE - 1
    else:
        assert turns == 0  # what the assertion above refuses
    a.close()


@pytest.mark.parametrize("planted", [None, "one_piece"])
def test_a_big_stream_view_answer_is_encoded_from_its_columns_in_steps(
        served: ServerThread, monkeypatch: pytest.MonkeyPatch, planted: str | None) -> None:
    """``stream_id = S`` alone is answered with the stream's frozen view (ADR-0038 decision 5),
    encoded from the store's columns a whole run (a chunk of 256 rows) or more at a time: the 300
    rows take two steps (256 + 44), with a loop turn between them.  ``one_piece``: the view left to
    the sender, which encodes it in one go (no step of ``column_row_slices``)."""
    st = served
    if planted == "one_piece":
        _plant(monkeypatch, "_encode_answer", "        t = read.result()\n", "        return None\n")
    enc = Encoding(st, monkeypatch)
    a = WireClient(st, st.token())
    a.send(wire.OneOffQuery(a.rid(), "SELECT * FROM sync_event WHERE stream_id = 'big'"))
    answer = a.recv_until(wire.OneOffQueryResult, timeout=30)
    enc.running = False
    assert _keys(answer) == [f"k{i}" for i in range(ROWS)]
    if planted is None:
        assert len(enc.steps) == 2 and enc.steps[1] > enc.steps[0]
    else:
        assert enc.steps == []  # what the assertion above refuses
    a.close()


QUERIES = [
    KEYED,  # 300 rows built and matched: encoded ahead, 30 slices
    "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq <= 10",  # exactly a slice: left to the sender
    "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq <= 11",  # a slice and one row
    "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq >= 101 AND seq <= 190",  # rows of one length
    "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq < 0",  # no row
    "SELECT * FROM sync_event WHERE stream_id = 'big'",  # the stream's frozen view (encoded from its columns)
    "SELECT * FROM sync_stream",  # 26 rows through the row cache
]


@pytest.mark.parametrize("version,compression", [(2, "None"), (3, "None"), (2, "Gzip"), (3, "Brotli")])
@pytest.mark.parametrize("planted", [None, "slice_short"])
def test_the_answer_is_the_one_piece_encodings_bytes(served: ServerThread, monkeypatch: pytest.MonkeyPatch,
                                                     version: int, compression: str, planted: str | None) -> None:
    """Each query's answer, as the client receives it (the frame's body, decompressed), is
    ``wire.encode_server`` of the plain rows -- the one-piece encoder, run here on the server's
    engine at the same state.  ``slice_short`` plants a slice one row short (the last row of
    each slice never encoded): the bytes differ."""
    st = server = served
    if planted == "slice_short":
        _plant(monkeypatch, "_encode_table", "rows[at:at + READ_SLICE_ROWS]", "rows[at:at + READ_SLICE_ROWS - 1]")
    claims = st.server.auth.verify(st.token()).claims
    a = WireClient(st, st.token(), version=version, compression=compression)
    differ = []
    for text in QUERIES:
        rid = a.rid()
        a.send(wire.OneOffQuery(rid, text))
        frame = a.ws.recv(timeout=30)
        assert isinstance(frame, bytes)
        want = st.call(lambda text=text, rid=rid: wire.encode_server(wire.to_wire(
            m.OneOffQueryResult(rid, server.server.engine.query(claims, text)))))
        got = wire.unframe_server(frame)
        if planted is None:
            (decoded,) = wire.decode_server_frame(frame, version)  # alone in its frame
            assert isinstance(decoded, wire.OneOffQueryResult) and not isinstance(decoded.result, str), text
            assert got == want, text
        elif got != want:
            differ.append(text)
    if planted is not None:
        assert KEYED in differ  # what the assertion above refuses
    a.close()


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("planted", [None, "hold_released"])
def test_a_commit_during_the_encoding_and_the_readers_own_call_come_after_the_answer(
        served: ServerThread, monkeypatch: pytest.MonkeyPatch, version: int, planted: str | None) -> None:
    """A is subscribed to a row not yet written; its big one-off is being encoded when (between
    two slices, from the loop) that row is committed.  A gets the answer without it, then the
    update, then the answer to the call it sent right behind the query; when the row is committed
    the update is queued but not releasable (held behind the answer to come).  ``hold_released``
    plants a server that releases the connection's queue before encoding: the update is
    releasable at once (whether it then overtakes the answer on the wire depends on when its
    commit is durable, so that is not what is checked)."""
    st = served
    engine = st.server.engine
    claims = st.server.auth.verify(st.token()).claims
    if planted == "hold_released":
        _plant(monkeypatch, "_encode_answer", "        t = read.result()\n",
               "        self.engine.conns[s.conn_id].reading = None\n        t = read.result()\n")
    committed: list[tuple[int, bool]] = []

    def commit_late() -> None:
        (s,) = [x for x in st.server.sessions.values() if x.reading is not None]
        before = len(engine.conns[s.conn_id].outbound)
        engine.call_detached(claims, "append_sync_event", ("big", "late", '{"late":true}', None, None))
        assert len(engine.conns[s.conn_id].outbound) == before + 1  # its update, queued
        committed.append((enc.rows, engine.releasable(s.conn_id)))
        st.server._pump()

    enc = Encoding(st, monkeypatch, at_row=(SLICE + 1, commit_late))
    a = WireClient(st, st.token(), version=version, confirmed=False)  # (confirmed: held until durable anyway)
    applied = a.subscribe(1, "SELECT * FROM sync_event WHERE stream_id = 'big' AND idempotency_key = 'late'")
    assert isinstance(applied, wire.SubscribeApplied)
    rid = a.rid()
    a.send(wire.OneOffQuery(a.rid(), KEYED),
           wire.CallReducer(rid, 0, "append_sync_event",
                            bsatn.encode_args("append_sync_event", ("own", "k", "{}", None, None))))
    got: list[Any] = []
    while not any(isinstance(x, wire.ReducerResult) and x.request_id == rid for x in got):
        got.append(a.recv(timeout=30))
    enc.running = False
    assert committed and 0 < committed[0][0] < ROWS  # the commit was made between two slices of the encoding
    if planted is not None:
        assert committed[0][1] is True  # what the assertion below refuses
        a.close()
        return
    assert committed[0][1] is False
    assert [type(x).__name__ for x in got] == ["OneOffQueryResult", "TransactionUpdate", "ReducerResult"], got
    assert _keys(got[0]) == [f"k{i}" for i in range(ROWS)]
    a.close()


def _internal(server: Any) -> float:
    """Internal errors counted so far (``syncref_internal_errors``, every label)."""
    return sum(x.value for f in server.metrics.internal.collect() for x in f.samples if x.name.endswith("_total"))


@pytest.mark.parametrize("planted", [None, "no_close_check"])
def test_a_connection_closed_during_the_encoding_stops_it_and_leaves_nothing(
        served: ServerThread, monkeypatch: pytest.MonkeyPatch, planted: str | None) -> None:
    """Closed by the server between two slices (as a slow consumer or a revoked token is): the
    encoding stops at the next slice, the session and the engine's connection go, nothing is
    counted as an internal error, and the next client is answered.  ``no_close_check`` plants an
    encoding that never looks: it encodes every row of a closed connection's answer."""
    st = served
    server = st.server
    if planted == "no_close_check":
        _plant(monkeypatch, "_encode_table", "if s.closing:\n", "if False:\n", times=2)

    def close_it() -> None:
        (s,) = [x for x in server.sessions.values() if x.reading is not None]
        s.closers.append(asyncio.ensure_future(server._close(s, 1000, "bye", "test")))

    enc = Encoding(st, monkeypatch, at_row=(SLICE + 1, close_it))
    internal = st.call(lambda: _internal(server))
    a = WireClient(st, st.token())
    a.send(wire.OneOffQuery(a.rid(), KEYED))
    code, _reason = a.closed(timeout=30)
    assert code == 1000
    b = WireClient(st, st.token())
    b.send(wire.OneOffQuery(b.rid(), "SELECT * FROM sync_event WHERE stream_id = 'big' AND seq = 1"))
    assert isinstance(b.recv_until(wire.OneOffQueryResult, timeout=30).result, wire.QueryRows)
    enc.running = False
    # A's session ends once its close handshake is through: waited for (a condition, not a time)
    gone = lambda: len(server.sessions) == 1 and len(server.engine.conns) == 1  # noqa: E731
    deadline = time.monotonic() + 30
    while not st.call(gone) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert st.call(gone)
    assert st.call(lambda: _internal(server)) == internal
    # the close (scheduled between slices 2 and 3) runs its first step, which marks the session
    # closing, ahead of the encoding's resumption after slice 3: it stops there
    if planted is None:
        assert enc.rows <= 3 * SLICE
    else:
        assert enc.rows > 3 * SLICE  # what the assertion above refuses
    b.close()


@pytest.mark.parametrize("planted", [None, "never_stops"])
def test_an_answer_over_the_message_bound_is_refused_as_the_one_piece_path_refuses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str | None) -> None:
    """Over ``max_outbound_message_bytes``: the encoding stops there (the engine's estimate of the
    plain rows is over too) and the answer is the error the one-piece path gave, its size the
    estimate's (``wire.message_size_bound``).  ``never_stops`` plants an encoding that goes on
    past the bound: every row is encoded for nothing."""
    monkeypatch.setattr(server_mod, "READ_SLICE_ROWS", SLICE)
    if planted == "never_stops":
        _plant(monkeypatch, "_encode_table", "if total > room:\n", "if False:\n", times=2)
    with running_server(tmp_path, limits=with_limits(max_outbound_message_bytes=20_000)) as st:
        populate_big(st, ROWS)  # 300 rows of ~120 bytes: over 20,000 bytes
        claims = st.server.auth.verify(st.token()).claims
        enc = Encoding(st, monkeypatch)
        a = WireClient(st, st.token())
        a.send(wire.OneOffQuery(a.rid(), KEYED))
        answer = a.recv_until(wire.OneOffQueryResult, timeout=30)
        enc.running = False
        assert isinstance(answer.result, str)
        err = SyncError.parse(answer.result)
        assert (err.code.value, err.details["limit"]) == ("limit_exceeded", "max_outbound_message_bytes")
        estimate = st.call(lambda: wire.message_size_bound(
            m.OneOffQueryResult(0, st.server.engine.query(claims, KEYED))))
        assert err.details["actual"] == estimate
        if planted is None:
            assert enc.rows <= 20_000 // 100 + SLICE  # rows of at least 100 bytes: stopped past 20,000 bytes
        else:
            assert enc.rows == ROWS  # what the assertion above refuses
        a.close()


def test_a_big_answer_encoded_ahead_reaches_the_body_as_its_slices_not_one_copy() -> None:
    """Rows encoded ahead are kept as one joined piece per slice (``wire.RowPieces`` once there
    are 64 KiB of them): sizing the answer (``message_size_bound``) does not join them, and its
    body comes out as parts -- the slices themselves, not one copy of every row -- whose
    concatenation is the one-piece encoding of the plain rows."""
    from reference.engine import Engine
    from spec.auth import Claims
    from spec.schema import SCOPES

    claims = Claims("a" * 64, frozenset(SCOPES), ("*",))
    eng = Engine()
    for i in range(1500):
        eng.call_detached(claims, "append_sync_event", ("s", f"k{i}", f'{{"i":{i},"pad":"{"x" * 40}"}}', None, None))
        eng.take_records()
        eng.advance_durable(eng.committed)
    plain = eng.query(claims, "SELECT * FROM sync_event WHERE stream_id = 's' AND idempotency_key > ''")
    pieces = [b"".join(map(bsatn.encode_sync_event, plain.inserts[at:at + 500]))  # type: ignore[arg-type]
              for at in range(0, len(plain.inserts), 500)]
    rows = wire.rows_from_pieces(pieces, [len(bsatn.encode_sync_event(r)) for r in plain.inserts])  # type: ignore[arg-type]
    assert type(rows) is wire.RowPieces and rows.total >= 65536
    ahead = m.OneOffQueryResult(5, wire.EncodedRows(plain.table, plain.inserts, plain.deletes, plain.event, rows))
    want = wire.encode_server(wire.to_wire(m.OneOffQueryResult(5, plain)))
    assert wire.message_size_bound(ahead) >= len(want)
    with pytest.raises(AttributeError):
        wire._ROWS_DATA_SLOT.__get__(rows, wire.RowPieces)  # never joined by the sizing
    parts = wire.encode_server_parts(wire.to_wire(ahead))
    assert b"".join(parts) == want
    big = [p for p in pieces if len(p) >= 65536]
    assert big and [p for p in parts if len(p) >= 65536] == big  # the slices as they are
    with pytest.raises(AttributeError):
        wire._ROWS_DATA_SLOT.__get__(rows, wire.RowPieces)  # nor by the encoding


@pytest.mark.parametrize("planted", [None, "one_piece"])
def test_a_big_sql_answer_is_serialized_in_slices(served: ServerThread, monkeypatch: pytest.MonkeyPatch,
                                                  planted: str | None) -> None:
    """``/sql``'s JSON answer was already serialized ``READ_SLICE_ROWS`` rows a step
    (``sql_answer_steps``, ADR-0038 decision 3): the loop turns between its first and last step
    are at least the steps' (300 rows: 30), and the answer has every row.  ``one_piece`` plants a
    serialization asked for no step (every ``1 << 62`` rows, as ``sql_answer`` does): no turn in
    between."""
    from support.server import http  # type: ignore[import-not-found]

    st = served
    enc = Encoding(st, monkeypatch)
    seen: list[int] = []
    real = server_mod.sql_answer_steps

    def steps(answers: Any, most: int, every: int) -> Any:
        gen = real(answers, most, every if planted is None else 1 << 62)
        try:
            while True:
                next(gen)
                seen.append(enc.n)
                yield
        except StopIteration as done:
            seen.append(enc.n)
            return done.value

    monkeypatch.setattr(server_mod, "sql_answer_steps", steps)
    auth = {"Authorization": f"Bearer {st.token()}"}
    answer = http("POST", f"{st.base}/v1/database/autopilot-sync/sql", KEYED, auth)
    enc.running = False
    assert answer.status == 200
    (table,) = answer.json()
    assert [row[3] for row in table["rows"]] == [f"k{i}" for i in range(ROWS)]  # column 3: idempotency_key
    if planted is None:
        assert len(seen) == ROWS // SLICE + 1 and seen[-1] - seen[0] >= ROWS // SLICE
    else:
        assert len(seen) == 1  # what the assertion above refuses
