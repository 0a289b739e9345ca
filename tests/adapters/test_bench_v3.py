"""The bench's v3 subscriber: every event of a frame of several messages, marked once each.

Three second opinions: frames the server's own encoder built (``wire.server_frames`` at v3: the
encode, ``batch_v3`` and ``frame_server`` the delivery pass uses) read back with ``wire``'s full
decoder; a table of multi-message frames assembled here by hand with ``struct`` from the upstream
layout (no ``adapters`` code builds them; the full decoder is asked only to confirm they are
well formed); and the v2 path (``Subscriber.on_syncref``, one message per frame, event by event)
fed the same events, whose histograms, slices, order count and commit samples the v3 path must
reproduce exactly.  Planted bugs in the v3 path (``tests/support/edited.py``) must fail them.
"""

from __future__ import annotations

import json
import struct
import types
from collections.abc import Iterator
from typing import Any

import pytest
from support.edited import edited_module

from adapters import wire
from adapters.bench import client
from adapters.bench.hist import Hist
from spec import messages as m
from spec.values import SyncEvent

PRODUCER = "ab" * 32
T0 = 1_796_000_000_000_000  # µs


def event(k: int, size: int = 150) -> SyncEvent:
    return SyncEvent("fan", 1, k + 1, f"f-{k}", "sha256:" + "0" * 64, client.payload(k, size, T0 + 1000 * k),
                     PRODUCER, T0 + 1000 * k + 700, 9 + k)


def update(ks: list[int]) -> m.TransactionUpdate:
    return m.TransactionUpdate(9 + ks[0], (m.QuerySetUpdate(1, (m.TableRows("sync_event", tuple(map(event, ks))),)),))


# --- frames from the server's encoder ------------------------------------------------------------------


@pytest.mark.parametrize("groups", [[[0]], [[0], [1], [2]], [[0, 1], [2], [3, 4, 5]], [[k] for k in range(40)]])
def test_events_of_encoder_frames_match_a_full_decode(groups: list[list[int]]) -> None:
    frames = wire.server_frames([wire.to_wire(update(g)) for g in groups], 3, wire.Compression.NONE)
    assert len(frames) == 1  # the messages coalesced into one v3 frame
    frame = frames[0]
    decoded = wire.decode_server_frame(frame, 3)
    assert len(decoded) == len(groups)
    rows = []
    for msg in decoded:
        assert isinstance(msg, wire.TransactionUpdate)
        persistent = msg.query_sets[0].tables[0].rows[0]
        assert isinstance(persistent, wire.PersistentTableRows)
        rows += wire.decode_rows("sync_event", persistent.inserts)
    ids, ts = client.events(frame)
    assert ids == [json.loads(r.payload)["i"] for r in rows]  # type: ignore[attr-defined]
    assert ts == [json.loads(r.payload)["t"] for r in rows]  # type: ignore[attr-defined]
    assert [client.committed_at(frame, client.payload_end(frame, i)) for i in ids] == \
        [r.committed_at for r in rows]  # type: ignore[attr-defined]


# --- frames assembled by hand ---------------------------------------------------------------------------


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def hand_row(i: int, t: int | None, committed: int, pad: str = "xxxx") -> bytes:
    """A ``sync_event`` row: stream_id, epoch u64, seq u64, key, payload_hash, payload, producer
    (32 bytes), committed_at i64, tx_offset u64 -- the payload written as text, not by ``client.payload``."""
    tail = "" if t is None else f',"t":{t}'
    body = f'{{"i":{i},"pad":"{pad}"{tail}}}'
    return (_string("fan") + struct.pack("<QQ", 1, i + 1) + _string(f"k{i}") + _string("sha256:" + "0" * 64)
            + _string(body) + bytes(32) + struct.pack("<qQ", committed, 7))


def hand_update(rows: list[bytes]) -> bytes:
    """A ``TransactionUpdate`` (tag 4): one query set (id 1), table ``sync_event``, one
    ``PersistentTableRows`` (tag 0) whose inserts are a row list with ``RowOffsets`` (tag 1) and
    whose deletes are empty."""
    offsets, at = [], 0
    for r in rows:
        offsets.append(at)
        at += len(r)
    inserts = bytes([1]) + struct.pack("<I", len(rows)) + b"".join(struct.pack("<Q", o) for o in offsets) \
        + struct.pack("<I", at) + b"".join(rows)
    deletes = bytes([1]) + struct.pack("<II", 0, 0)
    return bytes([4]) + struct.pack("<III", 1, 1, 1) + _string("sync_event") + struct.pack("<I", 1) + bytes([0]) \
        + inserts + deletes


# (what, messages as lists of (i, t or None, committed_at), expected (ids, ts))
HAND_FRAMES: list[tuple[str, list[list[tuple[int, int | None, int]]], tuple[list[int], list[int]]]] = [
    ("one message, one event", [[(0, 100, 50)]], ([0], [100])),
    ("two messages", [[(0, 100, 50)], [(1, 200, 150)]], ([0, 1], [100, 200])),
    ("three messages, one of two rows", [[(4, 10, 1)], [(5, 20, 2), (6, 30, 3)], [(7, 40, 4)]],
     ([4, 5, 6, 7], [10, 20, 30, 40])),
    ("a payload without t is not a bench event", [[(0, 100, 50)], [(1, None, 60)], [(2, 300, 70)]],
     ([0, 2], [100, 300])),
    ("out of order kept as sent", [[(3, 30, 1)], [(1, 10, 2)], [(2, 20, 3)]], ([3, 1, 2], [30, 10, 20])),
    ("large numbers", [[(123456789, 1_796_000_000_123_456, 5)], [(123456790, 1_796_000_000_123_999, 6)]],
     ([123456789, 123456790], [1_796_000_000_123_456, 1_796_000_000_123_999])),
]


def hand_frame(messages: list[list[tuple[int, int | None, int]]]) -> bytes:
    return b"\x00" + b"".join(hand_update([hand_row(i, t, c) for i, t, c in msg]) for msg in messages)


@pytest.mark.parametrize(("what", "messages", "expected"), HAND_FRAMES, ids=[c[0] for c in HAND_FRAMES])
def test_events_of_hand_built_frames(what: str, messages: list[list[tuple[int, int | None, int]]],
                                     expected: tuple[list[int], list[int]]) -> None:
    frame = hand_frame(messages)
    assert len(wire.decode_server_frame(frame, 3)) == len(messages)  # well formed: the full decoder agrees
    assert client.events(frame) == expected, what
    committed = {i: c for msg in messages for i, t, c in msg if t is not None}
    assert {i: client.committed_at(frame, client.payload_end(frame, i)) for i in expected[0]} == committed


# --- the subscriber: v3 against v2, event for event --------------------------------------------------------


class Clock:
    """``time.time_ns`` for the client module: a fixed value per frame, moved by the test."""

    def __init__(self) -> None:
        self.now_ns = 0

    def time_ns(self) -> int:
        return self.now_ns


def run_of(mod: types.ModuleType, v3: bool) -> Any:
    task = {"target": "syncref", "stream": "fan", "subs": 1, "protocol": "v3" if v3 else "v2"}
    run = mod.FanoutSubs(task)
    run.t0_us = float(T0)
    run.slice_us = 10_000.0  # 10 events per fifth: batches straddle slices
    run.expect = None
    return run


def frames_of(batches: list[list[int]], v3: bool) -> Iterator[bytes]:
    """v3: one frame per batch (its messages coalesced); v2: one frame per message."""
    for batch in batches:
        msgs = [wire.to_wire(update([k])) for k in batch]
        if v3:
            yield from wire.server_frames(msgs, 3, wire.Compression.NONE)
        else:
            yield from wire.server_frames(msgs, 2, wire.Compression.NONE)


BATCHES = {
    "in order": [[0], [1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [18], [19, 20, 21, 22, 23, 24]],
    "a batch past the last fifth": [list(range(0, 30)), list(range(30, 61))],
    "a gap and a repeat": [[0, 1, 2], [4, 5], [5, 6, 7, 8], [3], [9, 10, 11, 12, 13, 14, 15, 16]],
    "one big batch": [list(range(0, 64))],
    "a gap inside a batch": [[0, 1, 2], [3, 5, 6], [4, 7, 8]],
}


def delivered_state(mod: types.ModuleType, batches: list[list[int]], v3: bool) -> dict[str, Any]:
    clock = Clock()
    real_time = mod.time
    mod.time = types.SimpleNamespace(time_ns=clock.time_ns, monotonic=real_time.monotonic)
    try:
        run = run_of(mod, v3)
        sub = run.subs[0]
        handler = sub.on_syncref_v3 if v3 else sub.on_syncref
        for n, batch in enumerate(batches):
            clock.now_ns = (T0 + 1000 * batch[-1] + 5_000 + 333 * n) * 1000
            for frame in frames_of([batch], v3):
                handler(frame)
    finally:
        mod.time = real_time

    def hist(h: Hist | None) -> tuple[int, dict[int, int]] | None:
        return None if h is None else (h.n, dict(sorted(h.counts.items())))
    return {"count": sub.count, "distinct": sub.distinct, "next_i": sub.next_i, "out_of_order": sub.out_of_order,
            "hist": hist(run.hist), "slices": [hist(h) for h in run.slices], "commit": hist(run.commit_hist),
            "total": round(run.hist.total, 3)}


@pytest.mark.parametrize("name", list(BATCHES))
def test_v3_subscriber_records_what_v2_records_event_by_event(name: str) -> None:
    batches = BATCHES[name]
    v3 = delivered_state(client, batches, True)
    v2 = delivered_state(client, batches, False)
    assert v3 == v2
    assert v3["count"] == sum(map(len, batches)) and v3["commit"] is not None and v3["commit"][0] > 0


def test_v3_subscriber_counts_frames_and_finishes_on_expect() -> None:
    run = run_of(client, True)
    sub = run.subs[0]
    import asyncio

    async def go() -> bool:
        run.expect = 10
        run.all_in = asyncio.get_running_loop().create_future()
        for frame in frames_of([[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]], True):
            sub.on_syncref_v3(frame)
        return bool(run.all_in.done())
    assert asyncio.run(go())
    assert sub.frames == 2 and sub.count == 10
    # a frame with no update (another message first) is not an event frame
    other = wire.frame_server(wire.encode_server(wire.to_wire(m.ReducerResult(1, 5, m.ReducerOk(3, ())))),
                              wire.Compression.NONE)
    sub.on_syncref_v3(other)
    assert sub.frames == 2 and sub.count == 10


PLANTED = {
    "order check trusts the first id only": ("ids[-1] == first + k - 1 and ids == list(range(first, first + k))",
                                             "True"),
    "in-order batch does not advance next_i": ("            self.next_i = first + k\n", "            pass\n"),
    "the batch put in the first slice always": ("        if lo == hi:  # the common case",
                                                "        if True:  # the common case"),
    "commit sample off by one": ("range(first + (-first) % 8, first + k, 8)",
                                 "range(first + 1 + (-first) % 8, first + k, 8)"),
    "count one per frame": ("        self.count += k\n", "        self.count += 1\n"),
    "the pattern takes one-digit ids only": ("""_EVENT = re.compile(rb'\\{"i":(\\d+),""",
                                             """_EVENT = re.compile(rb'\\{"i":(\\d),"""),
    "a lone event not sampled for commit": ("            if run.commit_hist is not None and i % 8 == 0:",
                                            "            if run.commit_hist is not None and i % 8 == 1:"),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_planted_bugs_in_the_v3_path_are_caught(name: str) -> None:
    planted = edited_module(client, [PLANTED[name]], name)
    caught = False
    for batches in BATCHES.values():
        try:
            assert delivered_state(planted, batches, True) == delivered_state(client, batches, False)
        except AssertionError:
            caught = True
    assert caught, f"planted bug not caught: {name}"


def test_hist_add_many_is_add_one_by_one() -> None:
    values = [0.0, 0.5, 1.0, 1.0001, 2.0, 17.3, 1e3, 123456.7, 9.9e7] * 3
    a, b = Hist(), Hist()
    a.add_many(values)
    for v in values:
        b.add(v)
    assert a.counts == b.counts and a.n == b.n and a.total == pytest.approx(b.total)
    c = Hist()
    c.add_many(iter(values))  # any iterable
    assert c.counts == b.counts
