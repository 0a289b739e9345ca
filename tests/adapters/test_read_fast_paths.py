"""The read path's shortcuts against the decoders they stand in for (ADR-0028 is not involved:
these are pure functions of bytes).

* ``wire._fast_client`` reads ``Subscribe``/``Unsubscribe``/``CallReducer`` with ``unpack_from``
  and hands anything else to the :class:`~adapters.bsatn.Reader` decoder (``wire._r_client``).
  ``decode_client`` and ``decode_client_frame`` must give exactly what the Reader decoder alone
  gives -- the same value, or the same ``BsatnError`` text -- for valid messages, hand-made edge
  cases (each a field the shortcut must refuse) and arbitrary bytes.
* ``wire._check_split`` checks a row list without cutting its rows out; it must raise exactly
  when (and what) ``wire._split`` raises.

The second opinion here is the Reader decoder, a different function from the shortcut; the
planted shortcuts at the bottom (flags not checked, a bound one byte off, the unsubscribe flag
taken as any byte) are each caught by the tables.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import bsatn, wire
from adapters.bsatn import BsatnError

QS = ("SELECT * FROM sync_stream WHERE stream_id = 'gap'",
      "SELECT * FROM sync_event WHERE stream_id = 'gap' AND epoch = 1 AND seq > 19900")
ARGS = bsatn.encode_args("append_sync_event", ("s", "k", "x" * 150, None, None))
VALID: list[wire.ClientMessage] = [
    wire.Subscribe(7, 1, QS),
    wire.Subscribe(0, 0, ()),
    wire.Subscribe(2**32 - 1, 2**32 - 1, ("", "é ☃")),
    wire.Unsubscribe(8, 1),
    wire.Unsubscribe(8, 1, True),
    wire.CallReducer(9, 0, "append_sync_event", ARGS),
    wire.CallReducer(1, 0, "", b""),
    wire.OneOffQuery(3, "SELECT * FROM sync_stream"),
    wire.CallProcedure(4, 0, "p", b"\x01"),
]


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def slow_one(data: bytes, max_queries: int | None = None) -> wire.Received:
    r = bsatn.Reader(data)
    msg = wire._r_client(r, max_queries)
    r.expect_end()
    return msg


def slow_frame(data: bytes, max_queries: int | None = None) -> list[wire.Received]:
    if not data:
        raise BsatnError("empty v3 client frame")
    r = bsatn.Reader(data)
    out = []
    while not r.at_end():
        out.append(wire._r_client(r, max_queries))
    return out


def outcome(f: Callable[[bytes], object], data: bytes) -> tuple[str, object]:
    try:
        return ("ok", f(data))
    except BsatnError as exc:
        return ("error", str(exc))


# hand-made messages the shortcut must refuse (or read) exactly as the Reader does
EDGE = {
    "call, flags 1": b"\x03" + u32(5) + b"\x01" + u32(1) + b"r" + u32(0),
    "call, reducer name past the end": b"\x03" + u32(5) + b"\x00" + u32(9) + b"r",
    "call, args length past the end": b"\x03" + u32(5) + b"\x00" + u32(1) + b"r" + u32(3) + b"ab",
    "call, args length missing": b"\x03" + u32(5) + b"\x00" + u32(1) + b"r" + b"\x00\x00",
    "call, invalid UTF-8 name": b"\x03" + u32(5) + b"\x00" + u32(1) + b"\xff" + u32(0),
    "call, trailing byte": b"\x03" + u32(5) + b"\x00" + u32(1) + b"r" + u32(0) + b"\x00",
    "call, exactly 9 bytes": b"\x03" + u32(5) + b"\x00" + b"\x00\x00\x00",
    "subscribe, count too large for the bytes": b"\x00" + u32(1) + u32(1) + u32(3) + u32(0) + u32(0),
    "subscribe, count missing": b"\x00" + u32(1) + u32(1) + b"\x00",
    "subscribe, string past the end": b"\x00" + u32(1) + u32(1) + u32(1) + u32(5) + b"ab",
    "subscribe, invalid UTF-8": b"\x00" + u32(1) + u32(1) + u32(1) + u32(2) + b"\xc3\x28",
    "subscribe, zero queries": b"\x00" + u32(1) + u32(1) + u32(0),
    "subscribe, second string header cut": b"\x00" + u32(1) + u32(1) + u32(2) + u32(1) + b"a" + b"\x01\x00\x00",
    "unsubscribe, flag 2": b"\x01" + u32(1) + u32(1) + b"\x02",
    "unsubscribe, flag 1": b"\x01" + u32(1) + u32(1) + b"\x01",
    "unsubscribe, flag missing": b"\x01" + u32(1) + u32(1),
    "unsubscribe, trailing": b"\x01" + u32(1) + u32(1) + b"\x00\x00",
    "tag 5": b"\x05" + u32(1) + u32(1) + b"\x00",
    "tag 255": b"\xff" * 12,
    "empty": b"",
    "one byte": b"\x03",
}


@pytest.mark.parametrize("msg", VALID, ids=lambda m: type(m).__name__)
def test_valid_messages_decode_to_themselves(msg: wire.ClientMessage) -> None:
    data = wire.encode_client(msg)
    assert wire.decode_client(data) == msg == slow_one(data)
    assert wire.decode_client(cast(bytes, bytearray(data))) == msg  # not only bytes
    assert wire.decode_client_frame(data * 3, 3) == [msg] * 3 == slow_frame(data * 3)


@pytest.mark.parametrize("name", list(EDGE))
def test_edge_cases_as_the_reader(name: str) -> None:
    data = EDGE[name]
    assert outcome(wire.decode_client, data) == outcome(slow_one, data)
    # the same bytes after a valid message in a v3 frame: the shortcut resumes the Reader mid-frame
    first = wire.encode_client(VALID[0])
    assert outcome(lambda d: wire.decode_client_frame(d, 3), first + data) == outcome(slow_frame, first + data)


def test_edge_table_covers_both_outcomes() -> None:
    results = [outcome(slow_one, d)[0] for d in EDGE.values()]
    assert results.count("ok") >= 2 and results.count("error") >= 10


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid frame of 1-3 messages, then a few bytes changed, cut or added."""
    msgs = draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=3))
    data = bytearray(b"".join(wire.encode_client(m) for m in msgs))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "add"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            data += draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


@settings(max_examples=600, deadline=None)
@given(st.one_of(mangled(), st.binary(max_size=40)))
def test_any_bytes_as_the_reader(data: bytes) -> None:
    assert outcome(wire.decode_client, data) == outcome(slow_one, data)
    assert outcome(lambda d: wire.decode_client_frame(d, 3), data) == outcome(slow_frame, data)


@pytest.mark.parametrize("name", list(EDGE))
def test_edge_cases_as_the_reader_with_a_query_bound(name: str) -> None:
    """With ``max_queries`` (1: the two-query Subscribes are over it, skipped undecoded) the
    shortcut's skip refuses and reads what the Reader's skip does."""
    data = EDGE[name]
    assert outcome(lambda d: wire.decode_client(d, max_queries=1), data) == outcome(lambda d: slow_one(d, 1), data)
    first = wire.encode_client(VALID[0])
    assert (outcome(lambda d: wire.decode_client_frame(d, 3, max_queries=1), first + data)
            == outcome(lambda d: slow_frame(d, 1), first + data))


@settings(max_examples=600, deadline=None)
@given(st.one_of(mangled(), st.binary(max_size=40)), st.integers(0, 2))
def test_any_bytes_as_the_reader_with_a_query_bound(data: bytes, most: int) -> None:
    assert (outcome(lambda d: wire.decode_client(d, max_queries=most), data)
            == outcome(lambda d: slow_one(d, most), data))
    assert (outcome(lambda d: wire.decode_client_frame(d, 3, max_queries=most), data)
            == outcome(lambda d: slow_frame(d, most), data))


# --- the row list check --------------------------------------------------------------------------

SPLITS: list[tuple[wire.RowSizeHint, bytes]] = [
    (wire.FixedSize(0), b""), (wire.FixedSize(0), b"a"), (wire.FixedSize(2), b""), (wire.FixedSize(2), b"abcd"),
    (wire.FixedSize(2), b"abc"), (wire.FixedSize(3), b"abc"),
    (wire.RowOffsets(()), b""), (wire.RowOffsets(()), b"a"), (wire.RowOffsets((0,)), b""),
    (wire.RowOffsets((0,)), b"abc"), (wire.RowOffsets((1,)), b"abc"), (wire.RowOffsets((0, 2, 3)), b"abc"),
    (wire.RowOffsets((0, 2, 4)), b"abc"), (wire.RowOffsets((0, 2, 1)), b"abc"), (wire.RowOffsets((0, 0, 0)), b""),
    (wire.RowOffsets((0, 3)), b"abc"), (wire.RowOffsets((0, 4)), b"abc"),
]


def split_outcome(f: Callable[[wire.RowSizeHint, bytes], object], hint: wire.RowSizeHint, data: bytes) -> str | None:
    try:
        f(hint, data)
    except BsatnError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(("hint", "data"), SPLITS)
def test_check_split_raises_as_split(hint: wire.RowSizeHint, data: bytes) -> None:
    assert split_outcome(wire._check_split, hint, data) == split_outcome(wire._split, hint, data)


def test_split_table_covers_both_outcomes() -> None:
    results = [split_outcome(wire._split, h, d) for h, d in SPLITS]
    assert sum(r is None for r in results) >= 5 and sum(r is not None for r in results) >= 5


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.builds(wire.FixedSize, st.integers(0, 5)),
                 st.builds(wire.RowOffsets, st.lists(st.integers(0, 12), max_size=5).map(tuple))),
       st.binary(max_size=12))
def test_check_split_any(hint: wire.RowSizeHint, data: bytes) -> None:
    assert split_outcome(wire._check_split, hint, data) == split_outcome(wire._split, hint, data)


def test_decoded_row_list_keeps_its_rows() -> None:
    """A SubscribeApplied decoded with the check (not the split) still has every row, in order."""
    rows = [b"a", b"bcd", b"", b"ef"]
    msg = wire.SubscribeApplied(1, 2, wire.QueryRows((wire.SingleTableRows("t", wire.RowList.of(rows)),)))
    frame = wire.frame_server(wire.encode_server(msg), wire.Compression.NONE)
    got = wire.decode_server_frame(frame, 2)[0]
    assert isinstance(got, wire.SubscribeApplied)
    assert got == msg and got.rows.tables[0].rows.rows() == rows
    bad = bytearray(frame)
    at = frame.index(struct.pack("<QQ", 1, 4)) + 8  # the third row's offset: 4 -> 9, past the data
    bad[at] = 9
    with pytest.raises(BsatnError, match="row offset"):
        wire.decode_server_frame(bytes(bad), 2)


# --- the size hint of rows given as lengths (wire._hint, after a replay's rows) -----------------

@pytest.mark.parametrize("lengths", [[3, 3, 3], [3, 3, 4], [4, 3, 3], [3, 4, 3], [0, 0], [3], [0, 3], [2, 1, 3],
                                     [65535, 65535], [65536, 65536], [5] * 99 + [6]])
def test_joined_hint_as_row_list_of(lengths: list[int]) -> None:
    """``RowList.joined`` (lengths, ``_hint``) and ``RowList.of`` (the rows themselves) agree on the
    size hint: FixedSize only when every row has the first row's non-zero size of at most u16."""
    rows = [bytes([i % 251]) * n for i, n in enumerate(lengths)]
    assert wire.RowList.joined(b"".join(rows), lengths) == wire.RowList.of(rows)
    assert wire.rows_from_pieces([b"".join(rows)], lengths) == wire.RowList.of(rows)


@pytest.mark.parametrize("name", [n for n in EDGE if n.startswith("subscribe")])
def test_a_malformed_subscribe_fails_the_same_way_with_or_without_a_query_bound(name: str) -> None:
    """A malformed ``Subscribe`` over the bound is still malformed, and says so in the same words as
    without the bound (the close reason a client sees): a text stepped over is a ``String`` that
    did not fit, not ``bytes``.  (Invalid UTF-8 is the one difference, by design: it is not read.)"""
    data = EDGE[name]
    bounded = outcome(lambda d: wire.decode_client(d, max_queries=0), data)
    plain = outcome(wire.decode_client, data)
    if plain[0] == "error" and "invalid UTF-8" not in str(plain[1]):
        assert bounded == plain


def test_the_query_bound_is_per_message_and_the_queue_bounds_a_frame() -> None:
    """The decode-time refusal is per ``Subscribe``: a v3 frame of many Subscribes each at the
    bound decodes every text (each message may be honest: a set refused, then another; a set
    unsubscribed, then another).  What bounds a frame's decoded texts is the message count the
    server passes (its inbound queue's room): ``max_messages`` x ``max_queries`` texts, and not one
    message more is decoded (docs/protocol.md, ``max_queries_per_connection``)."""
    most, room = 4, 50
    one = wire.encode_client(wire.Subscribe(1, 1, tuple(f"q{i}" for i in range(most))))
    msgs = wire.decode_client_frame(one * room, 3, room, max_queries=most)
    assert sum(len(m.query_strings) for m in msgs if isinstance(m, wire.Subscribe)) == room * most
    decoded = []
    with pytest.raises(wire.TooManyMessages):
        for m in wire.client_frame_messages(one * (room + 1), 3, room, max_queries=most):
            decoded.append(m)
    assert len(decoded) == room
