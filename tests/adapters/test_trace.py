"""Reviewer trace decoder: capture parsing and readable decoding of hand-written frames."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.trace import CaptureError, decode_trace, parse_capture


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


def s(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(4, "little") + data


def b(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data


ID_HEX = "".join(f"{i:02x}" for i in range(1, 33))
ID_WIRE = bytes(range(32, 0, -1))
EVENT_BYTES = (s("s1") + h("0100000000000000", "0200000000000000") + s("k") + s("h") + s("{}")
               + ID_WIRE + h("0807060504030201", "0700000000000000"))
EVENT_DICT = {"stream_id": "s1", "epoch": 1, "seq": 2, "idempotency_key": "k", "payload_hash": "h", "payload": "{}",
              "producer": ID_HEX, "committed_at": 0x0102030405060708, "tx_offset": 7}
APPEND_ARGS = s("s") + s("k") + s("{}") + h("01", "00", "0300000000000000")

SUBSCRIBE = h("00", "01000000", "02000000", "01000000") + s("SELECT * FROM sync_event")
CALL = h("03", "05000000", "00") + s("append_sync_event") + b(APPEND_ARGS)
INITIAL = h("00", "00") + ID_WIRE + h("0201", "00" * 14) + s("tk")
RESULT_OK = (h("00", "06", "05000000", "0100000000000000", "00", "08000000", "2a00000000000000",
               "01000000", "02000000", "01000000") + s("sync_event")
             + h("01000000", "00", "00", "5600", "56000000") + EVENT_BYTES + h("01", "00000000", "00000000"))
ERR_TEXT = 'sequence_conflict: {"actual_next_seq":4}'
RESULT_ERR = h("00", "06", "06000000", "0100000000000000", "02") + b(s(ERR_TEXT))


def test_parse_capture() -> None:
    text = "\n".join([
        "# captured by hand",
        "",
        "c2s 00 01",
        "s2c 0A0b",
        "  ff  ",
        "C2S 02",
        "\tc2s\t03",
    ])
    assert parse_capture(text) == [("c2s", b"\x00\x01"), ("s2c", b"\x0a\x0b"), ("s2c", b"\xff"), ("c2s", b"\x02"),
                                   ("c2s", b"\x03")]


@pytest.mark.parametrize(("text", "fragment"), [
    ("00\nhello", "line 2: expected 'c2s <hex>'"),
    ("c2s 0g", "line 1: invalid hex"),
    ("x2s 00", "line 1: invalid hex"),
])
def test_parse_capture_errors(text: str, fragment: str) -> None:
    with pytest.raises(CaptureError, match=fragment):
        parse_capture(text)
    assert issubclass(CaptureError, ValueError)


def test_decode_session() -> None:
    out = decode_trace([("c2s", SUBSCRIBE), ("c2s", CALL), ("s2c", INITIAL), ("s2c", RESULT_OK),
                        ("s2c", RESULT_ERR)], 2)
    assert out[0] == {"frame": 0, "direction": "c2s", "type": "Subscribe", "request_id": 1, "query_set_id": 2,
                      "query_strings": ["SELECT * FROM sync_event"]}
    assert out[1] == {"frame": 1, "direction": "c2s", "type": "CallReducer", "request_id": 5, "flags": 0,
                      "reducer": "append_sync_event",
                      "args": {"stream_id": "s", "idempotency_key": "k", "payload_json": "{}",
                               "payload_hash": None, "expected_next_seq": 3}}
    assert out[2] == {"frame": 2, "direction": "s2c", "compression": "None", "type": "InitialConnection",
                      "identity": ID_HEX, "connection_id": "0" * 28 + "0102", "token": "<2 chars>"}
    assert out[3] == {"frame": 3, "direction": "s2c", "compression": "None", "type": "ReducerResult",
                      "request_id": 5, "timestamp": 1, "reducer": "append_sync_event",
                      "outcome": {"status": "ok", "ret_hex": "2a00000000000000", "ret": 42, "query_sets": [
                          {"query_set_id": 2, "tables": [{"table": "sync_event", "updates": [
                              {"kind": "persistent", "inserts": [EVENT_DICT], "deletes": []}]}]}]}}
    assert out[4]["reducer"] is None  # no CallReducer with request id 6 in the capture
    assert out[4]["outcome"] == {"status": "err", "error": ERR_TEXT, "error_code": "sequence_conflict",
                                 "error_details": {"actual_next_seq": 4}}
    json.dumps(out)


def test_show_tokens() -> None:
    assert decode_trace([("s2c", INITIAL)], 2, show_tokens=True)[0]["token"] == "tk"


def test_v3_frame_with_two_messages_and_gzip() -> None:
    err = h("03", "01", "05000000") + s("invalid_query: {}")
    unsub = h("02", "01000000", "02000000", "00", "01000000") + s("sync_event") + h("01", "00000000", "00000000")
    body = (err + unsub) * 40  # > 1024 bytes
    out = decode_trace([("s2c", b"\x02" + gzip.compress(body))], 3)
    assert len(out) == 80
    assert {o["frame"] for o in out} == {0}
    assert out[0] == {"frame": 0, "direction": "s2c", "compression": "Gzip", "type": "SubscriptionError",
                      "request_id": None, "query_set_id": 5, "error": "invalid_query: {}",
                      "error_code": "invalid_query", "error_details": {}}
    assert out[1] == {"frame": 0, "direction": "s2c", "compression": "Gzip", "type": "UnsubscribeApplied",
                      "request_id": 1, "query_set_id": 2, "tables": [{"table": "sync_event", "rows": []}]}


def test_malformed_frames_become_error_entries() -> None:
    out = decode_trace([("s2c", b"\x07\x00"), ("c2s", h("03", "05000000", "01")), ("sideways", b"\x00"),
                        ("s2c", b""), ("c2s", SUBSCRIBE)], 2)
    assert out[0] == {"frame": 0, "direction": "s2c", "error": "unknown compression tag 7 at offset 0", "hex": "0700"}
    assert "invalid call reducer flag 1" in out[1]["error"]
    assert "unknown direction 'sideways'" in out[2]["error"]
    assert "empty server frame" in out[3]["error"]
    assert out[4]["type"] == "Subscribe"


def test_bad_parts_are_shown_in_place() -> None:
    bad_row = EVENT_BYTES[:-1]
    frame = (h("00", "01", "01000000", "02000000", "01000000") + s("sync_event")
             + h("01", "02000000", "0000000000000000", f"{len(EVENT_BYTES):02x}00000000000000")
             + b(EVENT_BYTES + bad_row))
    out = decode_trace([("s2c", frame)], 2)[0]
    rows = out["tables"][0]["rows"]
    assert rows[0] == EVENT_DICT
    assert "tx_offset" in rows[1]["error"] and rows[1]["hex"] == bad_row.hex()
    call = h("03", "05000000", "00") + s("append_sync_event") + b(b"\x01")
    item = decode_trace([("c2s", call)], 2)[0]
    assert item["args_hex"] == "01" and "arguments of append_sync_event" in item["args_error"]
    unknown = h("03", "05000000", "00") + s("nope") + b(b"\x01")
    assert decode_trace([("c2s", unknown)], 2)[0]["args_error"] == "unknown reducer 'nope'"


def test_bad_version_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unsupported wire version"):
        decode_trace([], 1)


@given(st.lists(st.tuples(st.sampled_from(["c2s", "s2c"]), st.binary(max_size=80)), max_size=5),
       st.sampled_from([2, 3]))
def test_fuzz_never_raises(frames: list[tuple[str, bytes]], version: int) -> None:
    out = decode_trace(frames, version)
    assert len(out) >= len(frames)
    json.dumps(out)
    assert all("error" in o or "type" in o for o in out)


@given(st.sampled_from([SUBSCRIBE, CALL, INITIAL, RESULT_OK, RESULT_ERR]), st.integers(0, 200), st.integers(0, 255))
def test_fuzz_mutated_frames(frame: bytes, pos: int, byte: int) -> None:
    raw = bytearray(frame)
    raw[pos % len(raw)] = byte
    for direction in ("c2s", "s2c"):
        json.dumps(decode_trace([(direction, bytes(raw))], 3))
