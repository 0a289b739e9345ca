"""Frames kept as parts (ADR-0020 addendum): a large message's body, its compression tag and its
WebSocket header reach the socket as pieces whose concatenation is the frame the old code built
by copying -- the bytes must not change, and the large pieces must not be copied.

Second opinions: the WebSocket header against the ``websockets`` library's own frame writer (an
independent implementation of RFC 6455) and a table of headers written out by hand; the tag and
the compressed forms against ``frame_server`` of the joined body; v3 batching against
``batch_v3`` of the joined bodies; "uncopied" by object identity of what reaches the transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from websockets.frames import Frame, Opcode

from adapters import server as srv
from adapters import wire
from spec import messages as m
from spec.values import SyncEvent

# payload lengths around the 7-bit (125), 16-bit (65535) length boundaries, and empty
SIZES = (0, 1, 124, 125, 126, 127, 1023, 1024, 1025, 65534, 65535, 65536, 65537, 300_000)


def _payload(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


def _splits(data: bytes) -> list[list[bytes]]:
    """Ways to cut ``data`` into parts: whole, halves, a tiny head (as the writer leaves), empty pieces."""
    n = len(data)
    out = [[data], [data[: n // 2], data[n // 2:]], [data[:1], data[1:]], [data[:3], b"", data[3:], b""]]
    if n > 70_000:
        out.append([data[:9], data[9:65_545], data[65_545:]])
    return out


def _rfc_frame(payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])


HEADERS = {0: b"\x82\x00", 125: b"\x82\x7d", 126: b"\x82\x7e\x00\x7e", 65535: b"\x82\x7e\xff\xff",
           65536: b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
           300_000: b"\x82\x7f\x00\x00\x00\x00\x00\x04\x93\xe0"}


@pytest.mark.parametrize("n", SIZES)
def test_a_websocket_frame_as_parts_is_the_frame_byte_for_byte(n: int) -> None:
    data = _payload(n)
    whole = srv.ws_binary_frame(data)
    assert whole == _rfc_frame(data)
    if n in HEADERS:
        assert whole[: len(HEADERS[n])] == HEADERS[n] and len(whole) == len(HEADERS[n]) + n
    for parts in _splits(data):
        framed = srv.ws_binary_frame_parts(parts)
        assert b"".join(framed) == whole, (n, [len(p) for p in parts])
        assert all(a is b for a, b in zip(framed[1:], parts[1:], strict=True))  # passed through, not copied
    assert srv.ws_binary_frame_parts([]) == (b"\x82\x00",)


@pytest.mark.parametrize("compression", list(wire.Compression))
@pytest.mark.parametrize("n", SIZES)
def test_a_tagged_body_as_parts_is_frame_server_of_the_joined_body(n: int, compression: wire.Compression) -> None:
    data = _payload(n)
    whole = wire.frame_server(data, compression)
    for parts in _splits(data):
        tagged = wire.frame_server_parts(parts, compression)
        assert b"".join(tagged) == whole, (n, compression, [len(p) for p in parts])
        assert b"".join(srv.ws_binary_frame_parts(tagged)) == _rfc_frame(whole)
        if compression is wire.Compression.NONE or n <= wire.COMPRESS_THRESHOLD:
            assert tagged[0][:1] == b"\x00" and all(a is b for a, b in zip(tagged[1:], parts[1:], strict=True))
        else:
            assert len(tagged) == 2 and tagged[0] == bytes((compression.tag,))  # tag, compressed bytes
    empty = [wire.frame_server(b"", wire.Compression.GZIP)]
    assert wire.frame_server_parts([], wire.Compression.GZIP) == [b"\x00"] == empty


def _event(seq: int, payload: str) -> SyncEvent:
    return SyncEvent("s", 1, seq, f"k{seq}", "sha256:" + "0" * 64, payload, "a" * 64, 1_000, seq)


def _big_applied(n_rows: int = 40, pad: int = 30_000) -> m.SubscribeApplied:
    rows = tuple(_event(i, '"' + "x" * pad + '"') for i in range(1, n_rows + 1))
    return m.SubscribeApplied(7, 3, (m.TableRows("sync_event", rows),))


MESSAGES: list[wire.ServerMessage] = [
    wire.to_wire(_big_applied()),  # rows over 1 MiB: parts
    wire.to_wire(_big_applied(3, 30_000)),  # rows over 64 KiB: parts
    wire.to_wire(_big_applied(2, 10)),  # small: one part
    wire.to_wire(m.UnsubscribeApplied(1, 2, (m.TableRows("sync_event", (_event(1, '"' + "y" * 70_000 + '"'),)),))),
    wire.to_wire(m.SubscriptionError(5, 1, "boom")),
    wire.to_wire(m.TransactionUpdate(3, ())),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda x: type(x).__name__)
def test_a_message_as_parts_is_its_encoding(msg: wire.ServerMessage) -> None:
    parts = wire.encode_server_parts(msg)
    assert parts and b"".join(parts) == wire.encode_server(msg)
    if isinstance(msg, wire.SubscribeApplied) and len(msg.rows.tables[0].rows.rows_data) >= 65536:
        data = msg.rows.tables[0].rows.rows_data
        assert any(p is data for p in parts), "the row data was copied"
        assert len(parts[0]) < 1024  # the tag goes in front of a small head, not of the rows


def _bodies(*sizes: int) -> list[bytes | tuple[bytes, ...]]:
    out: list[bytes | tuple[bytes, ...]] = []
    for i, n in enumerate(sizes):
        data = bytes([i + 1]) * n
        out.append((data[:5], data[5:]) if n > wire.V3_SOFT_CAP else data)
    return out


@pytest.mark.parametrize("sizes", [(10,), (2_000_000,), (10, 2_000_000), (2_000_000, 10), (10, 2_000_000, 20, 30),
                                   (2_000_000, 1_500_000), (400_000, 200_000, 2_000_000, 400_000, 200_000)])
def test_v3_batches_with_parts_are_batch_v3_of_the_joined_bodies(sizes: tuple[int, ...]) -> None:
    bodies = _bodies(*sizes)
    got = srv._v3_batches(bodies)
    want = wire.batch_v3([b if isinstance(b, bytes) else b"".join(b) for b in bodies])
    assert [b if isinstance(b, bytes) else b"".join(b) for b in got] == want
    assert [b for b in got if isinstance(b, tuple)] == [b for b in bodies if isinstance(b, tuple)]


def test_v3_batches_refuse_a_part_body_under_the_soft_cap() -> None:
    with pytest.raises(Exception, match="over V3_SOFT_CAP"):
        srv._v3_batches([(b"ab", b"cd")])


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, data: list[bytes]) -> None:
        self.calls.append(("writelines", list(data)))


def test_write_frames_joins_whole_frames_and_passes_parts_through() -> None:
    t = Recorder()
    srv.write_frames(t, [b"ab"])  # type: ignore[arg-type]
    srv.write_frames(t, [b"ab", b"cd"])  # type: ignore[arg-type]
    big = b"z" * 100_000
    srv.write_frames(t, [b"ab", (b"h", big), b"cd"])  # type: ignore[arg-type]
    assert t.calls[:2] == [("write", b"ab"), ("write", b"abcd")]
    kind, pieces = t.calls[2]
    assert kind == "writelines" and b"".join(pieces) == b"abh" + big + b"cd" and any(p is big for p in pieces)


class _Out:
    def __init__(self, message: m.ServerMessage) -> None:
        self.message, self.offset = message, 0


class _Engine:
    def __init__(self, message: m.ServerMessage) -> None:
        self.message = message

    def take(self, *_: object) -> list[_Out]:
        return [_Out(self.message)]


class _Session:
    def __init__(self, version: int) -> None:
        self.side: list[bytes] = []
        self.compression = wire.Compression.NONE
        self.conn_id = 1
        self.version = version


@pytest.mark.parametrize("version", [2, 3])
def test_a_replay_turn_hands_the_row_data_to_the_socket_uncopied(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_turn`` of a session with a large replay to send, written by ``write_frames``: the frame
    is the old concatenation (tag, header) byte for byte, for v2 and v3, and the row data object
    itself is among the pieces the transport gets."""
    server = srv.SyncServer(srv.ServerConfig(data_dir=Path("unused")))
    applied = _big_applied()
    old = srv.ws_binary_frame(wire.frame_server(wire.encode_server(wire.to_wire(applied)), wire.Compression.NONE))
    server._engine = _Engine(applied)  # type: ignore[assignment]
    seen: list[bytes] = []
    original = wire._snapshot_rowlist  # the row list the server's encoder writes (ADR-0031)

    def spy(t: Any, cache: Any) -> Any:
        out = original(t, cache)
        seen.append(out.rows_data)
        return out

    monkeypatch.setattr(wire, "_snapshot_rowlist", spy)
    turn = server._turn(_Session(version))  # type: ignore[arg-type]
    assert turn is not None
    frames, payload = turn
    t = Recorder()
    srv.write_frames(t, frames)  # type: ignore[arg-type]
    ((kind, pieces),) = t.calls
    assert kind == "writelines" and b"".join(pieces) == old
    assert payload == len(old) - 10 and len(frames) == 1
    assert any(p is seen[0] for p in pieces), "the row data was copied on its way to the socket"


def test_the_parts_writer_keeps_large_values_as_parts_and_the_tail() -> None:
    """``_PartsWriter.parts`` against the bytes written out by hand (BSATN: u32 length prefixes,
    little-endian): large values are the objects given, small ones and the tail are copied in."""
    big, big2 = b"B" * 70_000, b"C" * 65_536
    w = wire._PartsWriter()
    w.u8(1)
    w.bytes_(big)
    w.u32(5)
    w.bytes_(b"small")
    w.bytes_(big2)
    w.u16(0xBEEF)
    want = (b"\x01" + (70_000).to_bytes(4, "little") + big + (5).to_bytes(4, "little") + (5).to_bytes(4, "little")
            + b"small" + (65_536).to_bytes(4, "little") + big2 + b"\xef\xbe")
    parts = w.parts()
    assert b"".join(parts) == want == w.getvalue() and len(w) == len(want)
    assert parts[1] is big and parts[3] is big2 and parts[-1] == b"\xef\xbe"
    plain = wire._PartsWriter()
    plain.bytes_(b"tiny")
    assert plain.parts() == [b"\x04\x00\x00\x00tiny"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_large_replay_arrives_whole_over_a_real_socket(loop: str, tmp_path: Path) -> None:
    """End to end, on both event loops (uvloop's ``writelines`` keeps unsent pieces by reference,
    asyncio's joins them): a snapshot over 2 MiB -- more than one socket write takes -- for v2 and
    v3, uncompressed and gzip, decodes to the rows appended, in order, one frame each."""

    from support.server import ServerThread, WireClient, call_http, rows_of

    stream = "parts.s1"
    query = f"SELECT * FROM sync_event WHERE stream_id = '{stream}'"
    config = srv.ServerConfig(data_dir=tmp_path, port=0)
    st = ServerThread(config, pytest.importorskip("uvloop").new_event_loop() if loop == "uvloop" else None)
    st.start()
    try:
        tok = st.token()
        pads = [chr(ord("a") + i % 26) * 60_000 for i in range(40)]
        for i, pad in enumerate(pads):
            assert call_http(st, tok, "append_sync_event", [stream, f"k{i}", json.dumps({"pad": pad}),
                                                             {"none": []}, {"none": []}]).status == 200
        for version, compression in ((2, "None"), (3, "None"), (2, "Gzip")):
            client = WireClient(st, tok, version=version, compression=compression)
            applied = client.subscribe(1, query)
            assert isinstance(applied, wire.SubscribeApplied), applied
            rows = rows_of("sync_event", applied.rows.tables[0].rows)
            assert [json.loads(r.payload)["pad"] for r in rows] == pads, (version, compression)
            assert len(client.frames) == 2  # the identity message, then the snapshot: one frame
            client.close()
    finally:
        st.stop()
