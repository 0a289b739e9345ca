"""``adapters.wire.RowPieces``: a replay's row data kept as the run cache's pieces (ADR-0024).

A :class:`RowPieces` must be the value ``RowList(hint, b"".join(pieces))`` in every way a reader
can see (equal both ways, the same hash and rows, a copy or pickle is that plain list), and a
``SubscribeApplied`` holding one must encode to the same bytes as the plain list, with the pieces
themselves -- not a copy -- among the body's parts and ``rows_data`` never joined on the way.
Second opinion: ``RowList.of`` of the rows each encoded by ``encode_row``.  Planted edits in the
module's source must fail these checks.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import types
from dataclasses import replace
from typing import Any

import pytest
from support.edited import edited_module

import adapters.bsatn as bsatn
import adapters.wire as wire
import spec.messages as sm
from reference.eventlog import StreamLog
from spec.values import SyncEvent


def _rows(n: int, same_size: bool = False) -> list[bytes]:
    return [bytes([i % 251]) * (40 if same_size else 40 + i % 97) for i in range(n)]


def _splits(rows: list[bytes]) -> list[list[bytes]]:
    """The rows' bytes cut into pieces at row boundaries, several ways (and once mid-row)."""
    data = b"".join(rows)
    at_rows = [b"".join(rows[i:i + 300]) for i in range(0, len(rows), 300)]
    return [at_rows, [data[:1], data[1:len(data) // 2], data[len(data) // 2:]], [data[:0], data]]


def check_equal(mod: types.ModuleType) -> None:
    for rows in (_rows(2000), _rows(2000, same_size=True)):
        plain = mod.RowList.of(rows)
        lengths = [len(r) for r in rows]
        for pieces in _splits(rows):
            got = mod.rows_from_pieces(pieces, lengths)
            assert type(got) is mod.RowPieces and got.pieces == tuple(pieces)
            assert got == plain and plain == got
            assert not got != plain and not plain != got  # noqa: SIM202 -- != both ways, as written
            assert hash(got) == hash(plain)
            assert got.size_hint == plain.size_hint and got.rows() == rows and got.count() == len(rows)
            for again in (copy.deepcopy(got), copy.copy(got)):
                assert again == plain and type(again) is mod.RowList
        assert mod.rows_from_pieces(_splits(rows)[0], lengths) != mod.RowList.of(rows[:-1])


def test_row_pieces_are_the_row_list_of_the_joined_bytes() -> None:
    check_equal(wire)
    rows = _rows(2000)
    got = wire.rows_from_pieces(_splits(rows)[0], [len(r) for r in rows])
    again = pickle.loads(pickle.dumps(got))  # a pickle is the plain list (the class needs its module's name)
    assert type(again) is wire.RowList and again == wire.RowList.of(rows)


def test_pieces_are_kept_only_when_several_and_large() -> None:
    small = _rows(10)
    lengths = [len(r) for r in small]
    assert type(wire.rows_from_pieces([b"".join(small[:5]), b"".join(small[5:])], lengths)) is wire.RowList
    big = _rows(2000)
    lengths = [len(r) for r in big]
    assert sum(lengths) >= wire.PIECES_MIN
    one = wire.rows_from_pieces([b"".join(big)], lengths)
    assert type(one) is wire.RowList and one == wire.RowList.of(big)
    assert wire.rows_from_pieces([], []) == wire.EMPTY_ROWS
    assert wire.PIECES_MIN == 65536  # the same bound as a large value kept as a part (_PartsWriter)


def _event(seq: int) -> SyncEvent:
    payload = f'{{"i":{seq},"pad":"{"x" * (seq % 300)}"}}'
    return SyncEvent("s", 1, seq, f"k{seq}", "sha256:" + hashlib.sha256(payload.encode()).hexdigest(), payload,
                     f"{seq % 3:064x}", 1_700_000_000_000_000 + seq, seq)


def check_body(mod: types.ModuleType) -> None:
    """A resume snapshot of 1,000 rows (four chunks of the store): the body's parts hold the
    pieces uncopied, the parts are the plain encoding's bytes, every frame of them too."""
    log = StreamLog.of("s", 1, [_event(seq) for seq in range(1, 1001)])
    rows = log.retained_rows(0, 1)
    msg = sm.SubscribeApplied(7, 9, (sm.TableRows("sync_event", rows),))
    wired: Any = mod.to_wire(msg)
    rl = wired.rows.tables[0].rows
    assert type(rl) is mod.RowPieces and len(rl.pieces) == 4
    plain = mod.SubscribeApplied(7, 9, mod.QueryRows((mod.SingleTableRows(
        "sync_event", mod.RowList.of([bsatn.encode_row(ev) for ev in rows])),)))
    parts = mod.encode_server_parts(wired)
    with pytest.raises(AttributeError):  # the encoder never joined the pieces
        mod._ROWS_DATA_SLOT.__get__(rl, mod.RowPieces)
    assert wired == plain
    assert all(any(p is piece for p in parts) for piece in rl.pieces)
    body = mod.encode_server(plain)
    assert b"".join(parts) == body and mod.decode_server(body) == plain
    for compression in mod.Compression:
        assert b"".join(mod.frame_server_parts(parts, compression)) == mod.frame_server(body, compression)
    dropped = mod.to_wire(sm.UnsubscribeApplied(7, 9, (sm.TableRows("sync_event", rows),)))
    assert b"".join(mod.encode_server_parts(dropped)) == mod.encode_server(dropped)


def test_a_replay_body_holds_the_pieces_uncopied() -> None:
    check_body(wire)


PLANTED = (
    ("the pieces' length prefix one short",
     (("        self.u32(total)\n        self._parts += (super().getvalue(), *pieces)",
       "        self.u32(total - 1)\n        self._parts += (super().getvalue(), *pieces)"),), check_body),
    ("the pieces written in reverse", (("self._parts += (super().getvalue(), *pieces)",
                                        "self._parts += (super().getvalue(), *reversed(pieces))"),), check_body),
    ("a plain list not equal to its pieces (no reflected comparison)",
     (("        if isinstance(other, RowList):\n            return self.size_hint == other.size_hint",
       "        if type(other) is RowPieces:\n            return self.size_hint == other.size_hint"),), check_equal),
    ("the hash of the pieces, not of the value", (("        return hash((self.size_hint, self.rows_data))",
                                                   "        return hash(self.pieces)"),), check_equal),
    ("the hint of the joined data's empty prefix", (("    return RowPieces(_hint(lengths, total), pieces, total)",
                                                     "    return RowPieces(_hint(lengths, 0), pieces, total)"),),
     check_equal),
)


@pytest.mark.parametrize(("name", "edits", "check"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bugs_are_caught(name: str, edits: tuple[tuple[str, str], ...], check: Any) -> None:
    mod = edited_module(wire, edits, name)
    with pytest.raises(AssertionError):
        check(mod)


def test_a_replay_turn_hands_the_pieces_to_the_socket_uncopied(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's turn of a 1,000-row resume snapshot (four chunks, over the body cache's 1 MiB
    item bound): one ``writelines`` whose pieces include every cached chunk piece itself, whose
    bytes are the old concatenation (tag and WebSocket header on the joined body), v2 and v3."""
    from pathlib import Path

    import adapters.server as srv
    from tests.adapters.test_frame_parts import Recorder, _Engine, _Session

    log = StreamLog.of("s", 1, [replace(_event(seq), payload=f'{{"pad":"{"y" * 1200}","i":{seq}}}')
                                for seq in range(1, 1001)])
    seen: list[Any] = []
    original = wire._snapshot_rowlist  # the row list the server's encoder writes (ADR-0031)

    def spy(t: Any, cache: Any) -> Any:
        out = original(t, cache)
        seen.append(out)
        return out

    for version in (2, 3):
        applied = sm.SubscribeApplied(1, 1, (sm.TableRows("sync_event", log.retained_rows(0, 1)),))
        seen.clear()
        monkeypatch.setattr(wire, "_snapshot_rowlist", spy)
        server = srv.SyncServer(srv.ServerConfig(data_dir=Path("unused")))
        server._engine = _Engine(applied)  # type: ignore[assignment]
        turn = server._turn(_Session(version))  # type: ignore[arg-type]
        monkeypatch.setattr(wire, "_snapshot_rowlist", original)
        assert turn is not None
        t = Recorder()
        srv.write_frames(t, turn[0])  # type: ignore[arg-type]
        ((kind, pieces),) = t.calls
        (rl,) = seen
        assert type(rl) is wire.RowPieces and rl.total > 1024 * 1024 and len(rl.pieces) == 4
        assert all(any(p is piece for p in pieces) for piece in rl.pieces), "a chunk's bytes were copied"
        body = wire.encode_server(wire.to_wire(applied))
        old = srv.ws_binary_frame(wire.frame_server(body, wire.Compression.NONE))
        if version == 2:
            assert kind == "writelines" and b"".join(pieces) == old
        else:  # v3: the body in a v3 frame of its own
            assert kind == "writelines" and body in b"".join(pieces)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_replay_of_several_chunks_arrives_whole_over_a_real_socket(loop: str, tmp_path: Any) -> None:
    """End to end on both event loops: 600 events (three chunks, ~2.4 MB: the row data goes out as
    the cached pieces) replayed twice (cold, then from the cache), v2, v3 and gzip, decode to the
    rows appended, in order; then a gap replay (slices of two chunks' entries) too."""
    import json

    from support.server import ServerThread, WireClient, call_http, rows_of

    import adapters.server as srv

    stream = "pieces.s1"
    st = ServerThread(srv.ServerConfig(data_dir=tmp_path, port=0),
                      pytest.importorskip("uvloop").new_event_loop() if loop == "uvloop" else None)
    st.start()
    try:
        tok = st.token()
        pads = [chr(ord("a") + i % 26) * (3000 + i) for i in range(600)]
        for i, pad in enumerate(pads):
            assert call_http(st, tok, "append_sync_event", [stream, f"k{i}", json.dumps({"pad": pad}),
                                                             {"none": []}, {"none": []}]).status == 200
        for watermark in (0, 0, 500):
            query = f"SELECT * FROM sync_event WHERE stream_id = '{stream}' AND epoch = 1 AND seq > {watermark}"
            for version, compression in ((2, "None"), (3, "None"), (2, "Gzip")):
                client = WireClient(st, tok, version=version, compression=compression)
                applied = client.subscribe(1, query)
                assert isinstance(applied, wire.SubscribeApplied), applied
                rows = rows_of("sync_event", applied.rows.tables[0].rows)
                assert [json.loads(r.payload)["pad"] for r in rows] == pads[watermark:], (version, compression)
                assert [r.seq for r in rows] == list(range(watermark + 1, 601))
                client.close()
    finally:
        st.stop()
