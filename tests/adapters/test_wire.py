"""v2/v3 wire codec: golden frames written by hand from upstream's layouts, round trips, fuzzing."""

from __future__ import annotations

import gzip
from collections.abc import Callable

import brotli
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.sats_strategies import row_st_for

import adapters.wire as wire
import spec.messages as sm
from adapters.bsatn import BsatnError, encode_args, encode_row
from adapters.wire import (
    EMPTY_ROWS,
    CallProcedure,
    CallReducer,
    ClientMessage,
    Compression,
    EventTableRows,
    FixedSize,
    InitialConnection,
    OneOffQuery,
    OneOffQueryResult,
    PersistentTableRows,
    ProcedureInternalError,
    ProcedureResult,
    ProcedureReturned,
    QueryRows,
    QuerySetUpdate,
    ReducerErr,
    ReducerInternalError,
    ReducerOk,
    ReducerOkEmpty,
    ReducerResult,
    RowCache,
    RowList,
    RowOffsets,
    ServerMessage,
    SingleTableRows,
    Subscribe,
    SubscribeApplied,
    SubscriptionError,
    TableUpdate,
    TransactionUpdate,
    Unsubscribe,
    UnsubscribeApplied,
    batch_v3,
    decode_client,
    decode_client_frame,
    decode_rows,
    decode_server,
    decode_server_frame,
    encode_client,
    encode_server,
    frame_server,
    from_wire,
    server_frames,
    server_from_wire,
    to_wire,
)
from spec.errors import LocalProtocolError
from spec.schema import TABLES
from spec.values import (
    SyncEvent,
)


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


def s(text: str) -> bytes:
    """A BSATN String written out by hand: u32 LE length, then UTF-8."""
    data = text.encode()
    return len(data).to_bytes(4, "little") + data


ID_HEX = "".join(f"{i:02x}" for i in range(1, 33))  # 0102...20 (big-endian display)
ID_WIRE = bytes(range(32, 0, -1))  # 20 1f ... 01 (little-endian u256)

# --- golden client frames ----------------------------------------------------------------------

CLIENT_GOLDEN: list[tuple[ClientMessage, bytes]] = [
    (Subscribe(1, 2, ("SELECT * FROM t",)),
     h("00", "01000000", "02000000", "01000000", "0f000000") + b"SELECT * FROM t"),
    (Subscribe(0, 0, ()), h("00", "00000000", "00000000", "00000000")),
    (Unsubscribe(3, 4, True), h("01", "03000000", "04000000", "01")),
    (Unsubscribe(3, 4), h("01", "03000000", "04000000", "00")),
    (OneOffQuery(5, "q"), h("02", "05000000", "01000000", "71")),
    (CallReducer(6, 0, "f", b"\x01\x02"), h("03", "06000000", "00", "01000000", "66", "02000000", "0102")),
    (CallProcedure(7, 0, "p", b""), h("04", "07000000", "00", "01000000", "70", "00000000")),
]


@pytest.mark.parametrize(("msg", "data"), CLIENT_GOLDEN)
def test_client_golden(msg: ClientMessage, data: bytes) -> None:
    assert encode_client(msg) == data
    assert decode_client(data) == msg
    assert decode_client_frame(data, 2) == [msg]


def test_v3_client_frame_concatenates() -> None:
    frame = b"".join(d for _, d in CLIENT_GOLDEN)
    assert decode_client_frame(frame, 3) == [m for m, _ in CLIENT_GOLDEN]
    with pytest.raises(BsatnError, match="trailing bytes"):
        decode_client_frame(frame, 2)
    with pytest.raises(BsatnError, match="empty"):
        decode_client_frame(b"", 3)
    with pytest.raises(BsatnError, match="truncated"):
        decode_client_frame(b"", 2)
    with pytest.raises(LocalProtocolError):
        decode_client_frame(frame, 1)


def test_nonzero_flags_rejected() -> None:
    with pytest.raises(BsatnError, match="invalid call reducer flag 1 at offset 5"):
        decode_client(h("03", "06000000", "01", "01000000", "66", "00000000"))
    with pytest.raises(BsatnError, match="invalid call procedure flag 2 at offset 5"):
        decode_client(h("04", "06000000", "02", "01000000", "66", "00000000"))
    with pytest.raises(BsatnError, match="invalid sum tag 2 for UnsubscribeFlags at offset 9"):
        decode_client(h("01", "03000000", "04000000", "02"))
    with pytest.raises(BsatnError, match="invalid sum tag 5 for ClientMessage at offset 0"):
        decode_client(h("05"))


# --- golden server messages --------------------------------------------------------------------

GOLDEN_EVENT = SyncEvent(stream_id="s1", epoch=1, seq=2, idempotency_key="k", payload_hash="h", payload="{}",
                         producer=ID_HEX, committed_at=0x0102030405060708, tx_offset=7)
GOLDEN_EVENT_BYTES = (s("s1") + h("0100000000000000", "0200000000000000") + s("k") + s("h") + s("{}")
                      + ID_WIRE + h("0807060504030201", "0700000000000000"))

SERVER_GOLDEN: list[tuple[ServerMessage, bytes]] = [
    (InitialConnection(ID_HEX, 0x0102, "tk"),
     h("00") + ID_WIRE + h("0201", "00" * 14) + s("tk")),
    (ReducerResult(9, 0x0102030405060708, ReducerOk(h("2a00000000000000"), TransactionUpdate(()))),
     h("06", "09000000", "0807060504030201", "00", "08000000", "2a00000000000000", "00000000")),
    (ReducerResult(9, 1, ReducerOkEmpty()), h("06", "09000000", "0100000000000000", "01")),
    (ReducerResult(9, 1, ReducerErr(s("no"))), h("06", "09000000", "0100000000000000", "02", "06000000") + s("no")),
    (ReducerResult(9, 1, ReducerInternalError("x")), h("06", "09000000", "0100000000000000", "03") + s("x")),
    (TransactionUpdate((QuerySetUpdate(7, (
        TableUpdate("a", (PersistentTableRows(RowList(FixedSize(2), h("aabbccdd")),
                                              RowList(RowOffsets((0, 1)), h("eeff11"))),)),
        TableUpdate("b", (EventTableRows(EMPTY_ROWS),)),
    )),)),
     h("04", "01000000", "07000000", "02000000")
     + s("a") + h("01000000", "00",
                  "00", "0200", "04000000", "aabbccdd",  # inserts first: FixedSize(2)
                  "01", "02000000", "0000000000000000", "0100000000000000", "03000000", "eeff11")  # deletes
     + s("b") + h("01000000", "01", "01", "00000000", "00000000")),  # EventTable, RowOffsets([]), no data
    (SubscribeApplied(1, 2, QueryRows((SingleTableRows("sync_event", RowList(FixedSize(86), GOLDEN_EVENT_BYTES)),))),
     h("01", "01000000", "02000000", "01000000") + s("sync_event") + h("00", "5600", "56000000") + GOLDEN_EVENT_BYTES),
    (UnsubscribeApplied(1, 2, None), h("02", "01000000", "02000000", "01")),
    (UnsubscribeApplied(1, 2, QueryRows(())), h("02", "01000000", "02000000", "00", "00000000")),
    (SubscriptionError(None, 5, "e"), h("03", "01", "05000000") + s("e")),
    (SubscriptionError(9, 5, "e"), h("03", "00", "09000000", "05000000") + s("e")),
    (OneOffQueryResult(4, "bad"), h("05", "04000000", "01") + s("bad")),
    (OneOffQueryResult(4, QueryRows(())), h("05", "04000000", "00", "00000000")),
    (ProcedureResult(ProcedureReturned(b"\xff"), 1, 2, 3),
     h("07", "00", "01000000", "ff", "0100000000000000", "0200000000000000", "03000000")),
    (ProcedureResult(ProcedureInternalError("x"), 1, -2, 3),
     h("07", "01") + s("x") + h("0100000000000000", "feffffffffffffff", "03000000")),
]


@pytest.mark.parametrize(("msg", "data"), SERVER_GOLDEN)
def test_server_golden(msg: ServerMessage, data: bytes) -> None:
    assert encode_server(msg) == data
    assert decode_server(data) == msg
    assert decode_server_frame(b"\x00" + data, 2) == [msg]


def test_golden_event_row_matches_bsatn() -> None:
    assert len(GOLDEN_EVENT_BYTES) == 86
    assert encode_row(GOLDEN_EVENT) == GOLDEN_EVENT_BYTES


def test_v3_server_frame_two_messages() -> None:
    frame = h("00", "03", "01", "05000000") + s("e") + h("02", "01000000", "02000000", "01")
    assert decode_server_frame(frame, 3) == [SubscriptionError(None, 5, "e"), UnsubscribeApplied(1, 2, None)]
    with pytest.raises(BsatnError, match="trailing bytes"):
        decode_server_frame(frame, 2)
    with pytest.raises(BsatnError, match="empty"):
        decode_server_frame(b"\x00", 3)
    with pytest.raises(BsatnError, match="empty server frame"):
        decode_server_frame(b"", 2)


# --- compression -------------------------------------------------------------------------------


def _big_body() -> bytes:
    return encode_server(SubscriptionError(None, 1, "x" * 2000))


def test_gzip_over_threshold() -> None:
    body = _big_body()
    frame = frame_server(body, Compression.GZIP)
    assert frame[0] == 2
    assert gzip.decompress(frame[1:]) == body
    assert len(frame) < len(body)
    assert decode_server_frame(frame, 2) == [SubscriptionError(None, 1, "x" * 2000)]


def test_brotli_over_threshold() -> None:
    body = _big_body()
    frame = frame_server(body, Compression.BROTLI)
    assert frame[0] == 1
    assert brotli.decompress(frame[1:]) == body
    assert decode_server_frame(frame, 3) == [SubscriptionError(None, 1, "x" * 2000)]


@pytest.mark.parametrize("comp", list(Compression))
def test_no_compression_at_or_under_threshold(comp: Compression) -> None:
    body = b"\x03\x01" + b"\x00" * 1022  # exactly 1024 bytes
    assert frame_server(body, comp) == b"\x00" + body
    assert frame_server(body + b"\x00", Compression.NONE) == b"\x00" + body + b"\x00"


def test_compression_parse() -> None:
    assert Compression.parse(None) is Compression.BROTLI
    assert Compression.parse("None") is Compression.NONE
    assert Compression.parse("Gzip") is Compression.GZIP
    assert [c.tag for c in Compression] == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown compression 'gzip'"):
        Compression.parse("gzip")


def test_decompression_errors() -> None:
    with pytest.raises(BsatnError, match="unknown compression tag 3"):
        decode_server_frame(b"\x03abc", 2)
    with pytest.raises(BsatnError, match="invalid gzip"):
        decode_server_frame(b"\x02not gzip", 2)
    with pytest.raises(BsatnError, match="brotli"):
        decode_server_frame(b"\x01\xff\xff\xff\xff", 2)
    good = frame_server(_big_body(), Compression.GZIP)
    with pytest.raises(BsatnError, match="truncated gzip"):
        decode_server_frame(good[:-10], 2)
    with pytest.raises(BsatnError, match="trailing bytes"):
        decode_server_frame(good + b"x", 2)
    good = frame_server(_big_body(), Compression.BROTLI)
    with pytest.raises(BsatnError, match="brotli"):
        decode_server_frame(good[:-3], 2)


@pytest.mark.parametrize("comp", [Compression.GZIP, Compression.BROTLI])
def test_decompression_bomb_bounded(comp: Compression) -> None:
    bomb = frame_server(b"\x00" * (8 * 1024 * 1024), comp)
    assert len(bomb) < 64 * 1024
    with pytest.raises(BsatnError, match="exceeds max_size 65536"):
        decode_server_frame(bomb, 2, max_size=65536)
    with pytest.raises(BsatnError, match="exceeds max_size"):
        decode_server_frame(b"\x00" + b"\x04" * 100, 2, max_size=50)


# --- v3 batching -------------------------------------------------------------------------------


def test_batch_v3() -> None:
    a, b, c = b"a" * 4, b"b" * 5, b"c" * 20
    assert batch_v3([a, b, c], soft_cap=10) == [a + b, c]
    assert batch_v3([c, a], soft_cap=10) == [c, a]
    assert batch_v3([a, a], soft_cap=8) == [a + a]
    assert batch_v3([]) == []
    with pytest.raises(LocalProtocolError):
        batch_v3([b""])


@given(st.lists(st.binary(min_size=1, max_size=30), max_size=20), st.integers(1, 60))
def test_batch_v3_properties(bodies: list[bytes], cap: int) -> None:
    out = batch_v3(bodies, soft_cap=cap)
    # recover which bodies went into each batch (order is kept, nothing split)
    groups: list[list[bytes]] = []
    it = iter(bodies)
    for batch in out:
        group: list[bytes] = []
        while b"".join(group) != batch:
            group.append(next(it))
        groups.append(group)
    assert next(it, None) is None
    for i, group in enumerate(groups):
        assert group  # never an empty body
        assert len(group) == 1 or sum(map(len, group)) <= cap
        if i + 1 < len(groups):  # greedy: the next message would have crossed the cap
            assert sum(map(len, group)) + len(groups[i + 1][0]) > cap


def test_server_frames_versions() -> None:
    msgs = [SubscriptionError(None, 1, "a"), SubscriptionError(None, 2, "b")]
    v2 = server_frames(msgs, 2, Compression.NONE)
    assert [decode_server_frame(f, 2) for f in v2] == [[m] for m in msgs]
    v3 = server_frames(msgs, 3, Compression.NONE)
    assert len(v3) == 1 and decode_server_frame(v3[0], 3) == msgs


# --- row lists ---------------------------------------------------------------------------------


def test_rowlist_builder_rule() -> None:
    assert RowList.of([]) == RowList(RowOffsets(()), b"")
    assert RowList.of([b"ab", b"cd"]) == RowList(FixedSize(2), b"abcd")
    assert RowList.of([b"ab", b"c"]) == RowList(RowOffsets((0, 2)), b"abc")
    assert RowList.of([b"", b""]) == RowList(RowOffsets((0, 0)), b"")
    big = b"x" * 65536
    assert RowList.of([big]) == RowList(RowOffsets((0,)), big)
    assert RowList.of([b"x" * 65535]).size_hint == FixedSize(65535)


@given(st.lists(st.binary(max_size=6), max_size=8))
def test_rowlist_round_trip(rows: list[bytes]) -> None:
    assert RowList.of(rows).rows() == rows


@pytest.mark.parametrize(("rl", "fragment"), [
    (RowList(FixedSize(0), b"a"), "FixedSize(0)"),
    (RowList(FixedSize(3), b"abcd"), "not a multiple"),
    (RowList(RowOffsets((0, 3, 2)), b"abcd"), "row offset 2"),
    (RowList(RowOffsets((0, 9)), b"abcd"), "row offset 1"),
    (RowList(RowOffsets((1,)), b"abcd"), "first row offset is 1"),
    (RowList(RowOffsets(()), b"abcd"), "no row offsets"),
])
def test_rowlist_invalid(rl: RowList, fragment: str) -> None:
    with pytest.raises(BsatnError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        rl.rows()
    # and a frame carrying it is rejected at decode time
    data = encode_server(SubscribeApplied(1, 1, QueryRows((SingleTableRows("t", rl),))))
    with pytest.raises(BsatnError):
        decode_server(data)


# --- translation -------------------------------------------------------------------------------


def test_to_wire_transaction_update() -> None:
    from spec.values import PresenceSignal
    sig = PresenceSignal("s", ID_HEX, "online", "r", 5)
    msg = sm.TransactionUpdate(3, (sm.QuerySetUpdate(7, (
        sm.TableRows("sync_event", (GOLDEN_EVENT,), (GOLDEN_EVENT,)),
        sm.TableRows("presence_signal", (sig,), event=True),
    )),))
    out = to_wire(msg)
    assert out == TransactionUpdate((QuerySetUpdate(7, (
        TableUpdate("sync_event", (PersistentTableRows(RowList(FixedSize(86), GOLDEN_EVENT_BYTES),
                                                       RowList(FixedSize(86), GOLDEN_EVENT_BYTES)),)),
        TableUpdate("presence_signal", (EventTableRows(RowList.of([encode_row(sig)])),)),
    )),))
    assert server_from_wire(decode_server(encode_server(out)), tx_offset=3) == msg


def test_encode_reducer_result_fast_path() -> None:
    """The packed reply of an append is the general encoder's bytes (a golden frame written by hand,
    then a table of edges); values the fast path does not take fall back, errors included."""
    assert wire.encode_reducer_result(sm.ReducerResult(4, 10, sm.ReducerOk(42, ())), 99) == h(
        "06", "04000000", "6300000000000000", "00", "08000000", "2a00000000000000", "00000000")
    row = sm.TableRows("sync_stream", (), ())
    cases: list[tuple[object, int, object]] = [
        (rid, ts, ret)
        for rid in (0, 1, 2**32 - 1)
        for ts in (-(2**63), -1, 0, 2**63 - 1)
        for ret in (None, 0, 7, 2**64 - 1)
    ]
    for rid, ts, ret in cases:
        msg = sm.ReducerResult(rid, 1, sm.ReducerOk(ret, ()))  # type: ignore[arg-type]
        assert wire.encode_reducer_result(msg, ts) == encode_server(to_wire(msg, timestamp=ts))  # type: ignore[arg-type]
    others = [sm.ReducerResult(4, 1, sm.ReducerErr("boom")), sm.ReducerResult(4, 1, sm.ReducerErr("x", internal=True)),
              sm.ReducerResult(4, 1, sm.ReducerOk(3, (sm.QuerySetUpdate(1, (row,)),)))]
    for msg in others:
        assert wire.encode_reducer_result(msg, 5) == encode_server(to_wire(msg, timestamp=5))
    for rid, ts, ret in ((2**32, 0, 1), (-1, 0, 1), (0, 2**63, 1), (0, 0, 2**64), (0, 0, -1), (0, 0, True)):
        msg = sm.ReducerResult(rid, 1, sm.ReducerOk(ret, ()))  # type: ignore[arg-type]
        try:
            expected: bytes | type[Exception] = encode_server(to_wire(msg, timestamp=ts))
        except Exception as exc:  # the general path refuses it: so must the fast one
            expected = type(exc)
        if isinstance(expected, bytes):
            assert wire.encode_reducer_result(msg, ts) == expected
        else:
            with pytest.raises(expected):
                wire.encode_reducer_result(msg, ts)


def test_to_wire_reducer_results() -> None:
    ok = to_wire(sm.ReducerResult(4, 10, sm.ReducerOk(42, ())), timestamp=99)
    assert encode_server(ok) == h("06", "04000000", "6300000000000000", "00", "08000000", "2a00000000000000",
                                  "00000000")
    none = to_wire(sm.ReducerResult(4, 10, sm.ReducerOk(None, ())))
    assert none == ReducerResult(4, 0, ReducerOk(b"", TransactionUpdate(())))
    err = to_wire(sm.ReducerResult(4, 10, sm.ReducerErr("boom")))
    assert err == ReducerResult(4, 0, ReducerErr(h("04000000") + b"boom"))
    assert server_from_wire(decode_server(encode_server(err)), tx_offset=10) == sm.ReducerResult(
        4, 10, sm.ReducerErr("boom"))


def test_to_wire_unsubscribe_and_errors() -> None:
    assert to_wire(sm.UnsubscribeApplied(1, 2)) == UnsubscribeApplied(1, 2, None)
    dropped = to_wire(sm.UnsubscribeApplied(1, 2, (sm.TableRows("sync_event", (GOLDEN_EVENT,)),)))
    assert dropped == UnsubscribeApplied(1, 2, QueryRows((SingleTableRows("sync_event", RowList(
        FixedSize(86), GOLDEN_EVENT_BYTES)),)))
    assert to_wire(sm.SubscriptionError(None, 2, "e")) == SubscriptionError(None, 2, "e")
    with pytest.raises(LocalProtocolError):
        to_wire("nope")  # type: ignore[arg-type]


def test_row_cache_encodes_each_row_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = encode_row

    def counting(row: object) -> bytes:
        calls.append(row)
        return real(row)  # type: ignore[arg-type]

    monkeypatch.setattr(wire, "encode_row", counting)
    cache = RowCache()
    # a fanout (TransactionUpdate) goes through the cache: the row is encoded once for every subscriber
    msg = sm.TransactionUpdate(3, (sm.QuerySetUpdate(7, (sm.TableRows("sync_event", (GOLDEN_EVENT,)),)),))
    first = to_wire(msg, cache=cache)
    second = to_wire(msg, cache=cache)
    assert first == second and len(calls) == 1 and len(cache) == 1
    # a snapshot's sync_event rows (a replay, each row met once) bypass it, to the same bytes
    calls.clear()
    applied = to_wire(sm.SubscribeApplied(1, 2, (sm.TableRows("sync_event", (GOLDEN_EVENT,)),)), cache=cache)
    assert isinstance(applied, SubscribeApplied) and calls == [] and len(cache) == 1
    assert applied.rows.tables[0].rows == RowList(FixedSize(86), GOLDEN_EVENT_BYTES)
    small = RowCache(max_entries=2)
    for seq in range(5):
        small.encode(SyncEvent("s", 0, seq, "k", "h", "{}", ID_HEX, 0, 0))
        assert len(small) <= 2


def test_from_wire() -> None:
    assert from_wire(Subscribe(1, 2, ("q",))) == sm.Subscribe(1, 2, ("q",))
    assert from_wire(Unsubscribe(1, 2, True)) == sm.Unsubscribe(1, 2, send_dropped=True)
    args = ("s", "k", "{}", None, None)
    assert from_wire(CallReducer(3, 0, "append_sync_event", encode_args("append_sync_event", args))) == \
        sm.CallReducer(3, "append_sync_event", args)
    assert from_wire(CallReducer(3, 0, "no_such", b"\x01")) == sm.CallReducer(3, "no_such", ())
    with pytest.raises(BsatnError, match="append_sync_event"):
        from_wire(CallReducer(3, 0, "append_sync_event", b"\x01"))
    with pytest.raises(LocalProtocolError):
        from_wire(OneOffQuery(1, "q"))
    with pytest.raises(LocalProtocolError):
        from_wire(CallProcedure(1, 0, "p", b""))


def test_decode_rows() -> None:
    rl = RowList.of([GOLDEN_EVENT_BYTES, GOLDEN_EVENT_BYTES])
    assert decode_rows("sync_event", rl) == [GOLDEN_EVENT, GOLDEN_EVENT]
    with pytest.raises(BsatnError, match="row of sync_event"):
        decode_rows("sync_event", RowList.of([GOLDEN_EVENT_BYTES[:-1]]))


# --- strategies --------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
text = st.text(max_size=12)
rowlists = st.lists(st.binary(max_size=12), max_size=4).map(RowList.of)
query_rows = st.builds(QueryRows, st.lists(st.builds(SingleTableRows, text, rowlists), max_size=3).map(tuple))
table_update_rows = st.one_of(st.builds(PersistentTableRows, rowlists, rowlists), st.builds(EventTableRows, rowlists))
tx_updates = st.builds(TransactionUpdate, st.lists(st.builds(
    QuerySetUpdate, u32, st.lists(st.builds(TableUpdate, text, st.lists(table_update_rows, max_size=3).map(tuple)),
                                  max_size=3).map(tuple)), max_size=3).map(tuple))

client_messages: st.SearchStrategy[ClientMessage] = st.one_of(
    st.builds(Subscribe, u32, u32, st.lists(text, max_size=3).map(tuple)),
    st.builds(Unsubscribe, u32, u32, st.booleans()),
    st.builds(OneOffQuery, u32, text),
    st.builds(CallReducer, u32, st.just(0), text, st.binary(max_size=20)),
    st.builds(CallProcedure, u32, st.just(0), text, st.binary(max_size=20)),
)
server_messages: st.SearchStrategy[ServerMessage] = st.one_of(
    st.builds(InitialConnection, st.binary(min_size=32, max_size=32).map(bytes.hex), st.integers(0, 2**128 - 1), text),
    st.builds(SubscribeApplied, u32, u32, query_rows),
    st.builds(UnsubscribeApplied, u32, u32, st.none() | query_rows),
    st.builds(SubscriptionError, st.none() | u32, u32, text),
    tx_updates,
    st.builds(OneOffQueryResult, u32, query_rows | text),
    st.builds(ReducerResult, u32, i64, st.one_of(
        st.builds(ReducerOk, st.binary(max_size=10), tx_updates), st.builds(ReducerOkEmpty),
        st.builds(ReducerErr, st.binary(max_size=10)), st.builds(ReducerInternalError, text))),
    st.builds(ProcedureResult, st.one_of(st.builds(ProcedureReturned, st.binary(max_size=10)),
                                         st.builds(ProcedureInternalError, text)), i64, i64, u32),
)


def table_rows_st(snapshot: bool) -> st.SearchStrategy[sm.TableRows]:
    def build(i: int) -> st.SearchStrategy[sm.TableRows]:
        t = TABLES[i]
        rows = st.lists(row_st_for(i, max_items=3, max_text=12), max_size=3).map(tuple)
        if snapshot:
            return st.builds(sm.TableRows, st.just(t.name), rows)
        if t.event:
            return st.builds(sm.TableRows, st.just(t.name), rows, st.just(()), st.just(True))
        return st.builds(sm.TableRows, st.just(t.name), rows, rows)
    return st.integers(0, len(TABLES) - 1).flatmap(build)


model_query_sets = st.lists(st.builds(sm.QuerySetUpdate, u32, st.lists(table_rows_st(False), max_size=3).map(tuple)),
                            max_size=3).map(tuple)
model_messages: st.SearchStrategy[sm.ServerMessage] = st.one_of(
    st.builds(sm.SubscribeApplied, u32, u32, st.lists(table_rows_st(True), max_size=3).map(tuple)),
    st.builds(sm.UnsubscribeApplied, u32, u32, st.none() | st.lists(table_rows_st(True), max_size=3).map(tuple)),
    st.builds(sm.SubscriptionError, st.none() | u32, u32, text),
    st.builds(sm.TransactionUpdate, st.just(5), model_query_sets),
    st.builds(sm.ReducerResult, u32, st.just(5), st.one_of(
        st.builds(sm.ReducerOk, st.none() | st.integers(0, 2**64 - 1), model_query_sets),
        st.builds(sm.ReducerErr, text))),
    st.builds(sm.OneOffQueryResult, u32, table_rows_st(True) | text),
)

# --- round trips -------------------------------------------------------------------------------


@given(client_messages)
def test_client_round_trip(msg: ClientMessage) -> None:
    assert decode_client(encode_client(msg)) == msg


@given(st.lists(client_messages, min_size=1, max_size=4))
def test_v3_client_round_trip(msgs: list[ClientMessage]) -> None:
    assert decode_client_frame(b"".join(encode_client(m) for m in msgs), 3) == msgs


@given(server_messages, st.sampled_from(list(Compression)))
def test_server_round_trip(msg: ServerMessage, comp: Compression) -> None:
    assert decode_server(encode_server(msg)) == msg
    assert decode_server_frame(frame_server(encode_server(msg), comp), 2) == [msg]


@given(st.lists(server_messages, min_size=1, max_size=4), st.integers(1, 400))
def test_v3_server_round_trip(msgs: list[ServerMessage], cap: int) -> None:
    frames = [frame_server(b, Compression.GZIP) for b in batch_v3([encode_server(m) for m in msgs], soft_cap=cap)]
    assert [m for f in frames for m in decode_server_frame(f, 3)] == msgs


@given(model_messages)
def test_model_round_trip(msg: sm.ServerMessage) -> None:
    wire_msg = to_wire(msg, timestamp=1, cache=RowCache())
    assert server_from_wire(decode_server(encode_server(wire_msg)), tx_offset=5) == msg


# --- fuzzing: only BsatnError, with a specific message ----------------------------------------


def _only_bsatn_error(fn: Callable[[], object]) -> None:
    try:
        fn()
    except BsatnError as exc:
        assert len(str(exc)) > 10


@given(st.binary(max_size=120), st.sampled_from([2, 3]))
def test_fuzz_random_bytes(data: bytes, version: int) -> None:
    _only_bsatn_error(lambda: decode_client(data))
    _only_bsatn_error(lambda: decode_client_frame(data, version))
    _only_bsatn_error(lambda: decode_server_frame(data, version))
    _only_bsatn_error(lambda: decode_server_frame(b"\x00" + data, version))


def _mutate(raw: bytearray, data: st.DataObject) -> bytes:
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        i = data.draw(st.integers(0, len(raw)))
        if op == "flip" and i < len(raw):
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif i + 4 <= len(raw):
            raw[i:i + 4] = data.draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\x10\x00\x00\x00"]))
    return bytes(raw)


@given(client_messages, st.data())
def test_fuzz_mutated_client_frames(msg: ClientMessage, data: st.DataObject) -> None:
    bad = _mutate(bytearray(encode_client(msg)), data)
    _only_bsatn_error(lambda: decode_client(bad))
    _only_bsatn_error(lambda: decode_client_frame(bad, 3))


@given(server_messages, st.sampled_from(list(Compression)), st.data())
def test_fuzz_mutated_server_frames(msg: ServerMessage, comp: Compression, data: st.DataObject) -> None:
    bad = _mutate(bytearray(frame_server(encode_server(msg), comp)), data)
    _only_bsatn_error(lambda: decode_server_frame(bad, 2))
    _only_bsatn_error(lambda: decode_server_frame(bad, 3))


@given(model_messages, st.data())
def test_fuzz_mutated_rows_in_frames(msg: sm.ServerMessage, data: st.DataObject) -> None:
    bad = _mutate(bytearray(encode_server(to_wire(msg))), data)

    def decode() -> object:
        return server_from_wire(decode_server(bad))
    try:
        decode()
    except LocalProtocolError:
        pass  # a mutated tag can turn it into a message with no model form (InitialConnection, ...)
    except BsatnError as exc:
        assert len(str(exc)) > 10
