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
