"""BSATN codec: hand-written golden bytes, round trips over the schema, and fuzzing of the readers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.sats_strategies import row_st_for, value_st

from adapters.bsatn import (
    RETURN_TYPES,
    BsatnError,
    Reader,
    Writer,
    decode_args,
    decode_ret,
    decode_row,
    decode_value,
    encode_args,
    encode_ret,
    encode_row,
    encode_value,
)
from spec.errors import LocalProtocolError, RemoteProtocolError
from spec.schema import REDUCERS, TABLES
from spec.values import (
    BOOL,
    IDENTITY,
    STRING,
    U32,
    U64,
    ArrayT,
    OptionT,
    SatsType,
    SessionPresence,
    SyncEvent,
    row_values,
    value_has_type,
)

# --- strategies from the schema ---------------------------------------------------------------


any_row_st = st.integers(0, len(TABLES) - 1).flatmap(row_st_for)
all_types = [c.type for t in TABLES for c in t.columns] + [c.type for r in REDUCERS for c in r.args]
any_type_st = st.sampled_from(sorted(set(all_types), key=repr))


def args_st(index: int) -> st.SearchStrategy[tuple[str, tuple[object, ...]]]:
    r = REDUCERS[index]
    return st.tuples(*(value_st(c.type) for c in r.args)).map(lambda a: (r.name, a))


any_args_st = st.integers(0, len(REDUCERS) - 1).flatmap(args_st)

# --- golden bytes, written by hand from the BSATN rules ----------------------------------------


def test_bsatn_error_is_remote() -> None:
    assert issubclass(BsatnError, RemoteProtocolError)


def test_primitives_golden() -> None:
    w = Writer()
    w.u8(0xAB)
    w.u16(0x0102)
    w.u32(0x01020304)
    w.u64(0x0102030405060708)
    w.i64(-2)
    w.bool_(True)
    w.bool_(False)
    w.string("hé")
    w.bytes_(b"\x00\x01")
    w.raw(b"\xff")
    w.connection_id(0x0102)
    w.timestamp(1)
    assert w.getvalue() == bytes.fromhex(
        "ab" "0201" "04030201" "0807060504030201" "feffffffffffffff" "01" "00"
        "03000000" "68c3a9" "02000000" "0001" "ff"
        "0201000000000000" "0000000000000000" "0100000000000000"
    )


def test_identity_is_reversed_hex() -> None:
    hex_id = "".join(f"{i:02x}" for i in range(1, 33))  # 0102...20, big-endian display
    w = Writer()
    w.identity(hex_id)
    assert w.getvalue() == bytes(range(32, 0, -1))
    assert Reader(bytes(range(32, 0, -1))).identity() == hex_id


def test_option_tags() -> None:
    w = Writer()
    encode_value(w, OptionT(U32), 5)
    encode_value(w, OptionT(U32), None)
    assert w.getvalue() == bytes.fromhex("00" "05000000" "01")
    r = Reader(w.getvalue())
    assert decode_value(r, OptionT(U32)) == 5
    assert decode_value(r, OptionT(U32)) is None
    r.expect_end()


def test_vec_golden() -> None:
    w = Writer()
    encode_value(w, ArrayT(STRING), ("a", "bc"))
    assert w.getvalue() == bytes.fromhex("02000000" "01000000" "61" "02000000" "6263")


def test_sync_event_row_golden() -> None:
    producer = "".join(f"{i:02x}" for i in range(1, 33))
    row = SyncEvent(stream_id="s1", epoch=1, seq=2, idempotency_key="k", payload_hash="h", payload="{}",
                    producer=producer, committed_at=0x0102030405060708, tx_offset=7)
    expected = (
        bytes.fromhex("02000000" "7331")  # stream_id
        + bytes.fromhex("0100000000000000")  # epoch
        + bytes.fromhex("0200000000000000")  # seq
        + bytes.fromhex("01000000" "6b")  # idempotency_key
        + bytes.fromhex("01000000" "68")  # payload_hash
        + bytes.fromhex("02000000" "7b7d")  # payload
        + bytes(range(32, 0, -1))  # producer: u256 little-endian
        + bytes.fromhex("0807060504030201")  # committed_at
        + bytes.fromhex("0700000000000000")  # tx_offset
    )
    assert encode_row(row) == expected
    assert decode_row("sync_event", expected) == row


def test_optional_column_golden() -> None:
    row = SessionPresence("a", "00" * 32, "d", "n", "s", "r", 0, 1, None)
    data = encode_row(row)
    assert data[-1:] == b"\x01"  # offline_reason: none
    assert decode_row("session_presence", data) == row
    some = encode_row(SessionPresence("a", "00" * 32, "d", "n", "s", "r", 0, 1, "x"))
    assert some[-6:] == bytes.fromhex("00" "01000000" "78")


def test_args_and_ret_golden() -> None:
    data = encode_args("append_sync_event", ("s", "k", "{}", None, 3))
    assert data == bytes.fromhex("01000000" "73" "01000000" "6b" "02000000" "7b7d" "01" "00" "0300000000000000")
    assert decode_args("append_sync_event", data) == ("s", "k", "{}", None, 3)
    assert encode_ret("append_sync_event", 9) == bytes.fromhex("0900000000000000")
    assert decode_ret("append_sync_event", bytes.fromhex("0900000000000000")) == 9
    assert encode_ret("ack_checkpoint", None) == b""
    assert decode_ret("ack_checkpoint", b"") is None
    assert RETURN_TYPES["append_sync_event"] == U64
    assert all(RETURN_TYPES[r.name] is None for r in REDUCERS if r.name != "append_sync_event")


# --- specific errors --------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "t", "fragment"), [
    (bytes.fromhex("28000000616263"), STRING, "truncated String at offset 0: length 40 but 3 bytes left"),
    (b"\x02", BOOL, "invalid bool byte 0x02 at offset 0"),
    (b"\x07", OptionT(U32), "invalid sum tag 7 for Option<U32> at offset 0"),
    (bytes.fromhex("02000000ff41"), STRING, "invalid UTF-8 in String at offset 0"),
    (b"\x01\x02", U32, "truncated u32 at offset 0: need 4 bytes but 2 left"),
    (bytes.fromhex("ffffffff00"), ArrayT(U64), "truncated Vec<U64> at offset 0"),
    (b"\x00" * 31, IDENTITY, "truncated Identity at offset 0"),
])
def test_specific_errors(data: bytes, t: SatsType, fragment: str) -> None:
    with pytest.raises(BsatnError) as info:
        decode_value(Reader(data), t)
    assert fragment in str(info.value)


def test_offsets_in_errors() -> None:
    r = Reader(b"\x00" * 5 + b"\x02")
    r.raw(5)
    with pytest.raises(BsatnError, match="invalid bool byte 0x02 at offset 5"):
        r.bool_()


def test_trailing_bytes() -> None:
    r = Reader(b"\x01\x00\x00\x00\xaa\xbb\xcc")
    assert r.u32() == 1
    assert r.remaining == 3 and not r.at_end()
    with pytest.raises(BsatnError, match="trailing bytes: 3 after offset 4"):
        r.expect_end()
    row = encode_row(SessionPresence("a", "00" * 32, "d", "n", "s", "r", 0, 1, None))
    with pytest.raises(BsatnError, match="trailing bytes"):
        decode_row("session_presence", row + b"\x00")
    with pytest.raises(BsatnError, match="trailing bytes"):
        decode_ret("ack_checkpoint", b"\x00")


def test_unknown_names() -> None:
    with pytest.raises(BsatnError, match="unknown table"):
        decode_row("nope", b"")
    with pytest.raises(BsatnError, match="unknown reducer"):
        decode_args("nope", b"")
    with pytest.raises(LocalProtocolError, match="unknown reducer"):
        encode_args("nope", ())


def test_caller_bugs_are_local() -> None:
    w = Writer()
    with pytest.raises(LocalProtocolError):
        encode_value(w, U32, -1)
    with pytest.raises(LocalProtocolError):
        encode_value(w, U64, True)
    with pytest.raises(LocalProtocolError):
        encode_value(w, IDENTITY, "AB" * 32)
    with pytest.raises(LocalProtocolError):
        encode_value(w, ArrayT(U32), [1])
    with pytest.raises(LocalProtocolError):
        w.u16(70000)
    with pytest.raises(LocalProtocolError):
        encode_args("reset_stream_epoch", ("a", "b"))
    with pytest.raises(LocalProtocolError):
        encode_args("reset_stream_epoch", (1,))
    with pytest.raises(LocalProtocolError):
        encode_row(SessionPresence("a", "zz", "d", "n", "s", "r", 0, 1, None))
    with pytest.raises(LocalProtocolError):
        encode_ret("ack_checkpoint", 1)
    assert w.getvalue() == b""


# --- round trips ------------------------------------------------------------------------------


@given(any_type_st.flatmap(lambda t: st.tuples(st.just(t), value_st(t))))
def test_value_round_trip(tv: tuple[SatsType, object]) -> None:
    t, v = tv
    w = Writer()
    encode_value(w, t, v)
    r = Reader(w.getvalue())
    assert decode_value(r, t) == v
    assert r.at_end()


@given(any_row_st)
def test_row_round_trip(row: object) -> None:
    from spec.schema import TABLE_BY_ROW_TYPE
    table = TABLE_BY_ROW_TYPE[type(row)]  # type: ignore[index]
    data = encode_row(row)  # type: ignore[arg-type]
    back = decode_row(table.name, data)
    assert back == row
    assert all(value_has_type(v, c.type) for v, c in zip(row_values(back), table.columns, strict=True))


@given(any_args_st)
def test_args_round_trip(na: tuple[str, tuple[object, ...]]) -> None:
    name, args = na
    assert decode_args(name, encode_args(name, args)) == args


# --- fuzzing: only BsatnError, with a message -------------------------------------------------


def _only_bsatn_error(fn: object, *a: object) -> None:
    try:
        fn(*a)  # type: ignore[operator]
    except BsatnError as exc:
        assert str(exc).strip()


@given(st.sampled_from([t.name for t in TABLES]), st.binary(max_size=200))
def test_fuzz_decode_row(table: str, data: bytes) -> None:
    _only_bsatn_error(decode_row, table, data)


@given(st.sampled_from([r.name for r in REDUCERS]), st.binary(max_size=200))
def test_fuzz_decode_args(reducer: str, data: bytes) -> None:
    _only_bsatn_error(decode_args, reducer, data)


@given(any_row_st, st.data())
def test_fuzz_mutated_rows(row: object, data: st.DataObject) -> None:
    from spec.schema import TABLE_BY_ROW_TYPE
    table = TABLE_BY_ROW_TYPE[type(row)].name  # type: ignore[index]
    raw = bytearray(encode_row(row))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(raw)))
        if op == "flip" and i < len(raw):
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    _only_bsatn_error(decode_row, table, bytes(raw))


@given(any_type_st, st.binary(max_size=64))
def test_fuzz_decode_value(t: SatsType, data: bytes) -> None:
    _only_bsatn_error(lambda: decode_value(Reader(data), t))
