"""Large (compressed off the loop, shared) and small updates fanned out together to many
subscribers -- v2 and v3, Gzip, Brotli and None, two different query-set families (so two
different large messages per commit) -- while the compressor is held at a gate the test opens
(a deterministic seam, no sleeps): small updates committed after a large one whose frame is still
being compressed must not overtake it on any connection; receivers that leave meanwhile lose
nothing for the others; every update reaches every receiver exactly once, in commit order; the
fanout latency is observed once per delivery (not twice for a deferred frame, not never); and
when everyone has left, no task of theirs is left behind."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.server import WireClient, call_http, running_server
from test_large_fanout import SETS, STREAM, payloads_of, subscriber

from adapters import wire

MIB = 1024 * 1024
OTHER = (1, 2, 3, 4, 6)  # another query-set id: another message, other bytes


class Gate:
    """``wire._compress`` of bodies over 1 MiB waits while the gate is shut; ``entered``: the keys of
    the updates it was given (read from their payloads' ``"<key>:"`` prefix)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        self.open.set()
        self.cond = threading.Condition()
        self.entered: set[str] = set()
        real = wire._compress

        def gated(body: bytes, how: wire.Compression) -> bytes:
            if len(body) > MIB:
                with self.cond:
                    self.entered.update(k.decode() for k in re.findall(rb'"(L\d+):', body))
                    self.cond.notify_all()
                assert self.open.wait(60)
            return real(body, how)

        monkeypatch.setattr(wire, "_compress", gated)

    def wait_entered(self, key: str) -> None:
        """Until a compression of ``key``'s update has started: a sender waits on it, its turn taken."""
        with self.cond:
            assert self.cond.wait_for(lambda: key in self.entered, 60), (key, self.entered)


def key_of(update: wire.TransactionUpdate) -> str:
    """The one event an update of the test inserts: its key (the same in every query set)."""
    payloads = {p for ps in payloads_of(update).values() for p in ps}
    assert len(payloads) == 1, payloads
    return str(json.loads(payloads.pop())).split(":", 1)[0]


def append(st: Any, tok: str, key: str, large: bool) -> None:
    filler = random.Random(key).randbytes(125_000).hex() if large else "x"
    assert call_http(st, tok, "append_sync_event", [STREAM, key, json.dumps(f"{key}:{filler}"),
                                                     {"none": []}, {"none": []}]).status == 200


def clients(st: Any, tok: str, n: int) -> list[WireClient]:
    kinds = [(v, how, sets) for sets in (SETS, OTHER) for v in (2, 3) for how in ("Gzip", "Brotli", "None")]
    return [subscriber(st, tok, *kinds[i % len(kinds)]) for i in range(n)]


def tasks(st: Any) -> int:
    import asyncio
    return st.call(lambda: len(asyncio.all_tasks(st.loop)))


def test_small_updates_never_overtake_a_large_one_being_compressed_and_leavers_lose_nothing_for_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261206)
    gate = Gate(monkeypatch)
    with running_server(tmp_path) as st:
        tok = st.token()
        before = tasks(st)
        observed: list[int] = []
        st.call(setattr, st.server.metrics.fanout_latency, "observe",
                lambda _value, n=1: observed.append(n))
        subs = clients(st, tok, 16)
        live = list(subs)
        keys: list[str] = []
        for r in range(4):
            gate.open.clear()
            append(st, tok, f"L{r}", large=True)
            keys.append(f"L{r}")
            gate.wait_entered(f"L{r}")
            for i in range(rng.randint(1, 3)):
                append(st, tok, f"s{r}.{i}", large=False)
                keys.append(f"s{r}.{i}")
            leaving = rng.sample(live, 2)  # they leave while their frames may still be compressed
            for c in leaving:
                c.close()
                live.remove(c)
            gate.open.set()
        for c in live:  # everything, once, in commit order (a compressed large one before the small after it)
            got = [key_of(c.recv_until(wire.TransactionUpdate, timeout=60)) for _ in keys]
            assert got == keys
        # a deferred frame observed once, when written (a frame that never went: never); the
        # receivers that left got some part, none more than everything
        assert len(live) * len(keys) <= sum(observed) <= len(subs) * len(keys)
        for c in live:
            c.close()
        deadline = time.monotonic() + 30
        while st.call(lambda: len(st.server.sessions)) or tasks(st) > before:
            assert time.monotonic() < deadline, (st.call(lambda: len(st.server.sessions)), tasks(st), before)
            time.sleep(0.05)
        jobs = st.call(lambda: [job.made.done() for big in st.server._large.values()
                                for job in big.jobs.values() if job.made is not None])
        assert jobs and all(jobs)  # the shared jobs kept for later receivers all ended


def test_every_delivery_of_a_deferred_frame_is_observed_exactly_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody leaves: the observations' weights add up to the updates the clients received."""
    gate = Gate(monkeypatch)
    with running_server(tmp_path) as st:
        tok = st.token()
        observed: list[int] = []
        st.call(setattr, st.server.metrics.fanout_latency, "observe",
                lambda _value, n=1: observed.append(n))
        subs = clients(st, tok, 12)
        keys: list[str] = []
        for r in range(3):
            gate.open.clear()
            append(st, tok, f"L{r}", large=True)
            keys.append(f"L{r}")
            gate.wait_entered(f"L{r}")
            append(st, tok, f"s{r}", large=False)
            keys.append(f"s{r}")
            gate.open.set()
        for c in subs:
            assert [key_of(c.recv_until(wire.TransactionUpdate, timeout=60)) for _ in keys] == keys
        assert sum(observed) == len(subs) * len(keys)
        for c in subs:
            c.close()


class Transport:
    """A socket that takes everything at once (nothing ever buffered): what it was handed, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.writes.append(b"".join(parts))


def test_a_turn_left_for_the_sender_to_compress_holds_back_the_direct_writes_behind_it() -> None:
    """The pass took a turn whose large frame must be compressed (left to the connection's sender,
    ``deferred``); until the sender has taken it, another pass -- a second ``_write_now`` before the
    sender ran -- writes nothing of the small update queued behind it (it would overtake)."""
    import types

    from test_large_share import ADMIN, rig
    from test_large_share import append as append_large

    from adapters import server as srv
    from spec.messages import CallReducer

    server, (s,) = rig(1, [wire.Compression.GZIP])
    transport = Transport()
    s.version, s.closing, s.deferred = 2, False, None
    s.ws = types.SimpleNamespace(closed=False)
    s.request = types.SimpleNamespace(transport=transport)
    append_large(server, "a")
    assert server._write_now(s) is False  # the large update's turn: left to the sender
    assert s.deferred is not None and isinstance(s.deferred[0][0], srv._Compress) and transport.writes == []
    writer = server.engine.connect(ADMIN, confirmed=False)  # a small update behind it
    server.engine.handle(writer, CallReducer(1, "append_sync_event", ("s", "b", json.dumps("b"), None, None)))
    server.engine.take(writer, 10, 1 << 30)
    assert server.engine.releasable(s.conn_id)
    assert server._write_now(s) is False
    assert transport.writes == [], "a later update was written ahead of the large one still to compress"
