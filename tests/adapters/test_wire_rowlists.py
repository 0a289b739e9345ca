"""The row-list paths a replay takes (docs/performance.md, "Replay: ..."): ``RowList.joined``
against ``RowList.of`` (its second opinion: rows given one by one), ``RowList.count`` against
``len(rows())``, the one-call offset writer and the parts writer of large row lists against the
byte-by-byte writer and the decoder, and the one-pass split against the row-by-row loop
(same rows, same errors)."""

from __future__ import annotations

import random
import struct

import pytest

from adapters import wire
from adapters.bsatn import BsatnError, Writer
from spec.errors import LocalProtocolError


def _rows(rng: random.Random) -> list[bytes]:
    shape = rng.randrange(4)
    n = rng.randrange(0, 40)
    if shape == 0:  # all the same length: FixedSize
        size = rng.randrange(1, 9)
        return [bytes(rng.randrange(256) for _ in range(size)) for _ in range(n)]
    if shape == 1:  # some empty
        return [b"x" * rng.choice([0, 0, 3]) for _ in range(n)]
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12))) for _ in range(n)]


@pytest.mark.parametrize("seed", range(30))
def test_joined_is_of_and_count_is_len_rows(seed: int) -> None:
    rng = random.Random(seed)
    rows = _rows(rng)
    rl = wire.RowList.joined(b"".join(rows), [len(r) for r in rows])
    assert rl == wire.RowList.of(rows)
    assert rl.count() == len(rows) and rl.rows() == rows
    body = wire.encode_server(wire.SubscribeApplied(1, 2, wire.QueryRows((wire.SingleTableRows("t", rl),))))
    assert wire.decode_server(body) == wire.SubscribeApplied(1, 2, wire.QueryRows((wire.SingleTableRows("t", rl),)))


def _by_hand(rl: wire.RowList) -> bytes:
    """The row list's BSATN written field by field (the writer's primitives, one offset at a time)."""
    w = Writer()
    hint = rl.size_hint
    if isinstance(hint, wire.FixedSize):
        w.u8(0)
        w.u16(hint.size)
    else:
        w.u8(1)
        w.u32(len(hint.offsets))
        for o in hint.offsets:
            w.u64(o)
    w.u32(len(rl.rows_data))
    w.raw(rl.rows_data)
    return w.getvalue()


@pytest.mark.parametrize("big", [False, True])
def test_a_large_row_list_is_written_as_by_hand(big: bool) -> None:
    """Offsets packed in one call, and rows past 64 KiB kept as a part (not copied into the
    buffer): the bytes are the ones written field by field."""
    rng = random.Random(7)
    rows = [b"r" * rng.randrange(50, 400) for _ in range(2000 if big else 20)]
    rl = wire.RowList.of(rows)
    assert isinstance(rl.size_hint, wire.RowOffsets) and (len(rl.rows_data) > 65536) == big
    head = struct.pack("<BIII", 1, 5, 6, 1) + struct.pack("<I", 10) + b"sync_event"
    msg = wire.SubscribeApplied(5, 6, wire.QueryRows((wire.SingleTableRows("sync_event", rl),)))
    assert wire.encode_server(msg) == head + _by_hand(rl)
    dropped = wire.UnsubscribeApplied(5, 6, wire.QueryRows((wire.SingleTableRows("sync_event", rl),)))
    assert wire.decode_server(wire.encode_server(dropped)) == dropped


@pytest.mark.parametrize("bad", [-1, 2**64, True, 1.0])
def test_an_offset_that_is_not_a_u64_is_refused_by_the_writer(bad: object) -> None:
    rl = wire.RowList(wire.RowOffsets((0, bad)), b"abcd")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="as u64"):
        wire.encode_server(wire.SubscribeApplied(1, 1, wire.QueryRows((wire.SingleTableRows("t", rl),))))


@pytest.mark.parametrize(("offsets", "match"), [
    ((0, 3, 2), r"row offset 2 \(2\) is not within 3\.\.4"),
    ((0, 9), r"row offset 1 \(9\) is not within 0\.\.4"),
    ((0, 2, 2, 5), r"row offset 3 \(5\) is not within 2\.\.4"),
])
def test_the_one_pass_split_names_the_first_offset_out_of_place(offsets: tuple[int, ...], match: str) -> None:
    with pytest.raises(BsatnError, match=match):
        wire.RowList(wire.RowOffsets(offsets), b"abcd").rows()
